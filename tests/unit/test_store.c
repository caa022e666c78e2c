/* test_store.c -- every marker store against the same cases, on a real
 * loop: unknown keys, a mark then its lookup, marks of three sinks in one
 * batch, 1,000 mixed ops in one batch answered in order and once each,
 * keys with awkward bytes, expiry, an outage and the recovery after it,
 * close() with ops in flight, submit() and close() from inside done().
 *
 * A store joins by a line in stores[]: how to make a fresh, empty store
 * (its options), how long after its ttl a marker is surely gone, and,
 * when it can have one, how to cause an outage. The Redis cases run a
 * redis-server of their own on a free loopback port (and a unix socket);
 * when it cannot start, they fail saying why. After the shared cases come
 * the Redis store's own: the data model and the default prefix, AUTH with
 * an ACL user and SELECT, a refused AUTH, the unix socket, a host name,
 * an IPv6 literal, an error reply, a refused connect and the backoff, and
 * the option checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#include "loop.h"
#include "store.h"
#include "units.h"

#define SINKS 4
static const char *const sink_names[SINKS] = {"billing", "crm", "search",
                                              "audit"};

/* An op as the engine holds one: the store's part first. */
struct op {
    struct store_op op;
    int done;     /* times done() ran for it */
    size_t order; /* the fixture's done count when it ran */
    int failed;
    char err[512];
};

struct fixture;

enum outage {
    OUTAGE_HANG,    /* the store stops answering */
    OUTAGE_REFUSED, /* the store is gone */
};

struct store_case {
    const char *name;
    const struct store *store;
    /* Sets the options of f->ctx (defaults are in) for a fresh, empty
     * store, and f->where, the start of its error messages. */
    void (*setup)(struct fixture *f);
    /* After ttl, a marker is surely gone this much later: Redis expires
     * exactly; a store that prunes sets its prune interval's worth. */
    int64_t ttl_slack_ms;
    /* An outage and its end; NULL: the outage case does not apply. */
    void (*outage)(struct fixture *f, enum outage how);
    void (*recover)(struct fixture *f);
};

struct fixture {
    const struct store_case *sc;
    loop_t *loop;
    struct store_host host;
    struct store_info info;
    void *ctx;
    int open;
    char where[128];
    size_t done_count;
    int in_submit;
    int done_in_submit; /* done() ran inside submit(): a bug */
    /* Runs at the end of done(), when set. */
    void (*on_done)(struct fixture *f, struct op *o);
};

/* ---- time ---- */

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- options, set as cfg would ---- */

static const struct opt_spec *opt_spec(const struct store *st,
                                       const char *name)
{
    for (const struct opt_spec *o = st->options; o->name != NULL; o++) {
        if (strcmp(o->name, name) == 0) {
            return o;
        }
    }
    fail_msg("%s has no option %s", st->name, name);
    return NULL;
}

/* Parses text into the option as cfg does (strings, numbers, booleans,
 * enums: what stores use). */
static void opt_set(const struct store *st, void *ctx, const char *name,
                    const char *text)
{
    const struct opt_spec *o = opt_spec(st, name);
    void *field = (char *)ctx + o->offset;

    switch (o->type) {
    case OPT_STRING:
        free(*(char **)field);
        *(char **)field = text != NULL ? strdup(text) : NULL;
        break;
    case OPT_INT:
        assert_int_equal(units_parse_int(text, field), 0);
        break;
    case OPT_DURATION:
        assert_int_equal(units_parse_duration(text, field), 0);
        break;
    case OPT_SIZE:
        assert_int_equal(units_parse_size(text, field), 0);
        break;
    case OPT_BOOL:
        *(int *)field = strcmp(text, "true") == 0;
        break;
    case OPT_ENUM:
        for (int i = 0; o->choices[i] != NULL; i++) {
            if (strcmp(o->choices[i], text) == 0) {
                *(int *)field = i;
            }
        }
        break;
    default:
        fail_msg("option %s: type %d not handled here", name, o->type);
    }
}

static void *opts_new(const struct store *st)
{
    void *ctx = calloc(1, st->ctx_size);

    for (const struct opt_spec *o = st->options; o->name != NULL; o++) {
        if (o->def != NULL) {
            opt_set(st, ctx, o->name, o->def);
        }
    }
    return ctx;
}

static void opts_free(const struct store *st, void *ctx)
{
    for (const struct opt_spec *o = st->options; o->name != NULL; o++) {
        if (o->type == OPT_STRING) {
            free(*(char **)((char *)ctx + o->offset));
        }
    }
    free(ctx);
}

/* ---- the engine's side ---- */

static void on_done(void *engine, struct store_op *op, const char *err)
{
    struct fixture *f = engine;
    struct op *o = (struct op *)op;

    if (f->in_submit) {
        f->done_in_submit++;
    }
    o->done++;
    o->order = f->done_count++;
    o->failed = err != NULL;
    snprintf(o->err, sizeof(o->err), "%s", err != NULL ? err : "");
    if (f->on_done != NULL) {
        f->on_done(f, o);
    }
}

static void op_lookup(struct op *o, const char *key)
{
    memset(o, 0, sizeof(*o));
    o->op.kind = STORE_LOOKUP;
    o->op.key = key;
    o->op.key_len = strlen(key);
    o->op.sinks = UINT64_MAX; /* must be overwritten */
}

static void op_mark(struct op *o, const char *key, uint32_t sink)
{
    memset(o, 0, sizeof(*o));
    o->op.kind = STORE_MARK;
    o->op.key = key;
    o->op.key_len = strlen(key);
    o->op.sinks = (uint64_t)1 << sink;
}

/* Submits ops[0..n) as one batch. */
static void submit(struct fixture *f, struct op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ops[i].done = 0;
        ops[i].op.next = i + 1 < n ? &ops[i + 1].op : NULL;
    }
    f->in_submit = 1;
    f->sc->store->submit(f->ctx, &ops[0].op);
    f->in_submit = 0;
    assert_int_equal(f->done_in_submit, 0);
}

/* Runs the loop for ms. */
static void run_for(struct fixture *f, int64_t ms)
{
    int64_t end = mono_ms() + ms;

    for (int64_t now = mono_ms(); now < end; now = mono_ms()) {
        loop_run_once(f->loop, (int)(end - now));
    }
}

/* Runs the loop until done() ran count times in all, or for ms at most. */
static int run_until(struct fixture *f, size_t count, int64_t ms)
{
    int64_t end = mono_ms() + ms;

    while (f->done_count < count) {
        int64_t now = mono_ms();
        if (now >= end) {
            return 0;
        }
        loop_run_once(f->loop, (int)(end - now > 50 ? 50 : end - now));
    }
    return 1;
}

/* Submits ops as one batch and waits until each is answered once. */
static void submit_wait(struct fixture *f, struct op *ops, size_t n,
                        int64_t ms)
{
    size_t before = f->done_count;

    submit(f, ops, n);
    if (!run_until(f, before + n, ms)) {
        fail_msg("%zu of %zu ops answered after %lld ms",
                 f->done_count - before, n, (long long)ms);
    }
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ops[i].done, 1);
    }
}

static uint64_t lookup(struct fixture *f, const char *key)
{
    struct op o;

    op_lookup(&o, key);
    submit_wait(f, &o, 1, 3000);
    if (o.failed) {
        fail_msg("lookup of %s: %s", key, o.err);
    }
    return o.op.sinks;
}

static void mark(struct fixture *f, const char *key, uint32_t sink)
{
    struct op o;

    op_mark(&o, key, sink);
    submit_wait(f, &o, 1, 3000);
    if (o.failed) {
        fail_msg("mark of %s: %s", key, o.err);
    }
}

static void store_open(struct fixture *f)
{
    const char *option = NULL;
    struct sl_error err = {{0}};

    if (f->sc->store->check != NULL &&
        f->sc->store->check(f->ctx, &option, &err) != 0) {
        fail_msg("check: %s: %s", option, err.msg);
    }
    if (f->sc->store->open(f->ctx, &f->info, &f->host, &err) != 0) {
        fail_msg("open: %s", err.msg);
    }
    f->open = 1;
}

static void store_close(struct fixture *f)
{
    if (f->open) {
        f->open = 0;
        f->sc->store->close(f->ctx);
    }
}

/* cmocka's state starts as the store_case; it becomes the fixture. */
static int case_setup(void **state)
{
    const struct store_case *sc = *state;
    struct fixture *f = calloc(1, sizeof(*f));
    struct sl_error err;

    f->sc = sc;
    f->loop = loop_new(&err);
    assert_non_null(f->loop);
    loop_fill_host(f->loop, &f->host.loop);
    f->host.loop.sink_name = "store";
    f->host.done = on_done;
    f->host.engine = f;
    f->info.pipeline = "orders";
    f->info.sinks = sink_names;
    f->info.sink_count = SINKS;
    f->info.ttl_ms = 3600000;
    f->ctx = opts_new(sc->store);
    *state = f;
    sc->setup(f);
    return 0;
}

static int case_teardown(void **state)
{
    struct fixture *f = *state;

    store_close(f);
    for (int i = 0; i < 3; i++) {
        loop_run_once(f->loop, 0); /* frees dead watches */
    }
    opts_free(f->sc->store, f->ctx);
    loop_destroy(f->loop);
    free(f);
    return 0;
}

/* ---- the cases every store passes ---- */

static void test_lookup_unknown_key(void **state)
{
    struct fixture *f = *state;

    store_open(f);
    assert_int_equal(lookup(f, "never-seen"), 0);
}

static void test_mark_then_lookup(void **state)
{
    struct fixture *f = *state;

    store_open(f);
    mark(f, "order-1", 1);
    assert_int_equal(lookup(f, "order-1"), 1u << 1);
    assert_int_equal(lookup(f, "order-2"), 0);
}

static void test_marks_of_three_sinks_in_one_batch(void **state)
{
    struct fixture *f = *state;
    struct op ops[3];

    store_open(f);
    op_mark(&ops[0], "order-7", 0);
    op_mark(&ops[1], "order-7", 2);
    op_mark(&ops[2], "order-7", 3);
    submit_wait(f, ops, 3, 3000);
    for (int i = 0; i < 3; i++) {
        assert_false(ops[i].failed);
    }
    assert_int_equal(lookup(f, "order-7"), (1u << 0) | (1u << 2) | (1u << 3));
}

#define MIXED 1000
#define MARKED_BEFORE 100

/* 1,000 ops in one batch: marks of new keys between lookups of keys
 * marked by an earlier batch. Each is answered once, in order. */
static void test_thousand_mixed_ops_in_order(void **state)
{
    struct fixture *f = *state;
    static char keys[MIXED][24], before[MARKED_BEFORE][24];
    static struct op ops[MIXED], prep[MARKED_BEFORE];
    size_t base;

    store_open(f);
    for (size_t i = 0; i < MARKED_BEFORE; i++) {
        snprintf(before[i], sizeof(before[i]), "p%zu", i);
        op_mark(&prep[i], before[i], (uint32_t)(i % SINKS));
    }
    submit_wait(f, prep, MARKED_BEFORE, 5000);
    for (size_t i = 0; i < MIXED; i++) {
        if (i % 2 == 0) {
            snprintf(keys[i], sizeof(keys[i]), "m%zu", i);
            op_mark(&ops[i], keys[i], (uint32_t)(i / 2 % SINKS));
        } else {
            op_lookup(&ops[i], before[i / 2 % MARKED_BEFORE]);
        }
    }
    base = f->done_count;
    submit_wait(f, ops, MIXED, 5000);
    for (size_t i = 0; i < MIXED; i++) {
        if (ops[i].failed) {
            fail_msg("op %zu: %s", i, ops[i].err);
        }
        assert_int_equal(ops[i].order, base + i);
        if (i % 2 == 1) {
            assert_int_equal(ops[i].op.sinks,
                             1u << (i / 2 % MARKED_BEFORE % SINKS));
        }
    }
    /* The marks of the big batch hold. */
    for (size_t i = 0; i < MIXED; i += 2) {
        op_lookup(&ops[i], keys[i]);
    }
    for (size_t i = 1; i < MIXED; i += 2) {
        op_lookup(&ops[i], "m-none");
    }
    submit_wait(f, ops, MIXED, 5000);
    for (size_t i = 0; i < MIXED; i++) {
        assert_false(ops[i].failed);
        assert_int_equal(ops[i].op.sinks,
                         i % 2 == 0 ? 1u << (i / 2 % SINKS) : 0);
    }
}

/* Keys that differ only in awkward bytes stay apart: each gets its own
 * set of sinks, and a lookup sees exactly that set. */
static void test_awkward_keys(void **state)
{
    struct fixture *f = *state;
    static char long_key[301];
    const char *keys[] = {
        "a b",          "a_b",
        "a:b",          "a:b:",
        "ключ-ü-🔑",    "line\r\nbreak",
        "\x1f\x7f\ttab", "*1\r\n$4\r\nPING\r\n", /* RESP in a key */
        long_key,
    };
    const size_t nkeys = sizeof(keys) / sizeof(keys[0]);
    struct op ops[64];
    size_t n = 0;

    /* 300 bytes of two-byte UTF-8, colons and spaces. */
    for (size_t i = 0; i < 50; i++) {
        memcpy(long_key + 6 * i, "é:ü ", 6);
    }
    assert_int_equal(strlen(long_key), 300);
    store_open(f);
    for (size_t k = 0; k < nkeys; k++) {
        for (uint32_t sink = 0; sink < SINKS; sink++) {
            if ((k + 1) & (1u << sink)) {
                op_mark(&ops[n++], keys[k], sink);
            }
        }
    }
    submit_wait(f, ops, n, 3000);
    for (size_t i = 0; i < n; i++) {
        assert_false(ops[i].failed);
    }
    for (size_t k = 0; k < nkeys; k++) {
        op_lookup(&ops[k], keys[k]);
    }
    submit_wait(f, ops, nkeys, 3000);
    for (size_t k = 0; k < nkeys; k++) {
        assert_false(ops[k].failed);
        assert_int_equal(ops[k].op.sinks, (k + 1) & 0xf);
    }
}

/* A marker outlives half its ttl and is gone after it (plus the store's
 * slack: Redis expires exactly, a pruning store at its interval). */
static void test_marker_expires_after_ttl(void **state)
{
    struct fixture *f = *state;
    int64_t marked_at;

    f->info.ttl_ms = 1000;
    store_open(f);
    marked_at = mono_ms();
    mark(f, "short-lived", 2);
    run_for(f, 500 - (mono_ms() - marked_at));
    assert_int_equal(lookup(f, "short-lived"), 1u << 2);
    run_for(f, f->info.ttl_ms + f->sc->ttl_slack_ms -
                   (mono_ms() - marked_at));
    assert_int_equal(lookup(f, "short-lived"), 0);
}

/* Looks key up until it answers, for ms at most; its answer. */
static uint64_t lookup_until_up(struct fixture *f, const char *key,
                                int64_t ms, int *attempts)
{
    int64_t end = mono_ms() + ms;
    struct op o;

    for (*attempts = 1;; (*attempts)++) {
        op_lookup(&o, key);
        submit_wait(f, &o, 1, 3000);
        if (!o.failed) {
            return o.op.sinks;
        }
        if (mono_ms() >= end) {
            fail_msg("still failing after %lld ms: %s", (long long)ms, o.err);
        }
        run_for(f, 50);
    }
}

/* Fails within the store's timeout (not hanging), with an error that
 * names the store. */
static void expect_failure(struct fixture *f, const char *key,
                           int64_t within_ms)
{
    struct op o;
    int64_t start = mono_ms();

    op_lookup(&o, key);
    submit_wait(f, &o, 1, within_ms);
    assert_true(o.failed);
    if (strncmp(o.err, f->where, strlen(f->where)) != 0) {
        fail_msg("error \"%s\" does not start with \"%s\"", o.err, f->where);
    }
    print_message("    failed after %lld ms: %s\n",
                  (long long)(mono_ms() - start), o.err);
}

static void test_outage_fails_ops_then_recovers(void **state)
{
    struct fixture *f = *state;
    int attempts;

    store_open(f);
    mark(f, "kept", 3);

    /* Stops answering: ops in flight fail on the timeout. */
    f->sc->outage(f, OUTAGE_HANG);
    expect_failure(f, "kept", 2000);
    f->sc->recover(f);
    (void)lookup_until_up(f, "kept", 6000, &attempts);

    /* Gone: refused at once; during the backoff too, never from inside
     * submit() (submit() checks). */
    f->sc->outage(f, OUTAGE_REFUSED);
    expect_failure(f, "kept", 2000);
    expect_failure(f, "kept", 2000);
    f->sc->recover(f);
    (void)lookup_until_up(f, "kept", 6000, &attempts);
    print_message("    back after %d attempts\n", attempts);
    mark(f, "after", 0);
    assert_int_equal(lookup(f, "after"), 1u << 0);
}

/* Ops in flight when close() runs are never answered. */
static void test_close_with_ops_in_flight(void **state)
{
    struct fixture *f = *state;
    static struct op ops[200];

    store_open(f);
    mark(f, "warm", 0); /* connected, or whatever the store does first */
    for (size_t i = 0; i < 200; i++) {
        if (i % 2) {
            op_lookup(&ops[i], "warm");
        } else {
            op_mark(&ops[i], "warm", (uint32_t)(i / 2 % SINKS));
        }
    }
    submit(f, ops, 200);
    loop_run_once(f->loop, 0); /* some may be written, none answered */
    size_t seen = f->done_count;
    store_close(f);
    run_for(f, 200);
    assert_int_equal(f->done_count, seen);

    /* And submitted but not even started. */
    store_open(f);
    seen = f->done_count;
    submit(f, ops, 200);
    store_close(f);
    run_for(f, 200);
    assert_int_equal(f->done_count, seen);
}

static void close_on_third(struct fixture *f, struct op *o)
{
    (void)o;
    if (f->done_count == 3) {
        store_close(f);
    }
}

/* store.h does not forbid it, and a shutting-down engine may do it: no
 * done() after close(), even when close() runs inside one. */
static void test_close_inside_done(void **state)
{
    struct fixture *f = *state;
    struct op ops[10];

    store_open(f);
    mark(f, "warm", 0);
    f->done_count = 0;
    for (size_t i = 0; i < 10; i++) {
        op_lookup(&ops[i], "warm");
    }
    f->on_done = close_on_third;
    submit(f, ops, 10);
    run_for(f, 200);
    assert_int_equal(f->done_count, 3);
    assert_false(f->open);
}

/* The engine resubmits from done(): the next op goes out at once. */
static void resubmit(struct fixture *f, struct op *o)
{
    if (f->done_count < 50) {
        assert_false(o->failed);
        op_mark(o, "chain", (uint32_t)(f->done_count % SINKS));
        o->op.next = NULL;
        f->sc->store->submit(f->ctx, &o->op);
    }
}

static void test_submit_inside_done(void **state)
{
    struct fixture *f = *state;
    struct op o;

    store_open(f);
    f->on_done = resubmit;
    op_lookup(&o, "chain");
    submit(f, &o, 1);
    assert_true(run_until(f, 50, 5000));
    f->on_done = NULL;
    run_for(f, 50);
    assert_int_equal(f->done_count, 50);
    assert_int_equal(lookup(f, "chain"), 0xf);
}

/* The engine marks a message's sinks that succeeded together in one op. */
static void test_one_op_marks_several_sinks(void **state)
{
    struct fixture *f = *state;
    struct op o;

    store_open(f);
    op_mark(&o, "order-9", 0);
    o.op.sinks = (1u << 0) | (1u << 2) | (1u << 3);
    submit_wait(f, &o, 1, 3000);
    assert_false(o.failed);
    assert_int_equal(lookup(f, "order-9"), (1u << 0) | (1u << 2) | (1u << 3));
    mark(f, "order-9", 1);
    assert_int_equal(lookup(f, "order-9"), 0xf);
}

/* ---- the SQLite store's own ---- */

/* A file keeps one pipeline's markers: another pipeline is refused at
 * open, not mixed in. */
static void test_sqlite_other_pipeline(void **state)
{
    struct fixture *f = *state;
    struct sl_error err = {{0}};

    store_open(f);
    mark(f, "order-1", 0);
    store_close(f);
    f->info.pipeline = "billing";
    assert_int_equal(f->sc->store->open(f->ctx, &f->info, &f->host, &err),
                     -1);
    assert_non_null(strstr(err.msg, "holds the markers of pipeline "
                                    "`orders`, not `billing`"));
    f->sc->store->close(f->ctx);
}

/* Sinks are kept by name: reordered, renamed around or added in the
 * YAML, each keeps its own markers. */
static void test_sqlite_sinks_by_name(void **state)
{
    struct fixture *f = *state;
    static const char *const reordered[] = {"audit", "extra", "billing"};

    store_open(f);
    mark(f, "order-2", 0); /* billing */
    mark(f, "order-2", 3); /* audit */
    store_close(f);
    f->info.sinks = reordered;
    f->info.sink_count = 3;
    store_open(f);
    assert_int_equal(lookup(f, "order-2"), (1u << 0) | (1u << 2));
    mark(f, "order-2", 1); /* extra: a new bit in the file */
    assert_int_equal(lookup(f, "order-2"), 0x7);
}

static const struct CMUnitTest sqlite_tests[] = {
    {"sqlite: a file of another pipeline is refused",
     test_sqlite_other_pipeline, NULL, NULL, NULL},
    {"sqlite: sinks are kept by name", test_sqlite_sinks_by_name, NULL,
     NULL, NULL},
};
#define NSQLITE_TESTS (sizeof(sqlite_tests) / sizeof(sqlite_tests[0]))

/* ---- the Redis fixture: a redis-server of the test's own ---- */

#define REDIS_USER "sluice"
#define REDIS_USER_PASSWORD "s3cret-Pa55"

static struct {
    char path[256]; /* the redis-server binary */
    pid_t pid;
    int port;
    int stopped; /* SIGSTOP'd */
    char sock[108];
    char error[512]; /* why it is not running */
    unsigned stores; /* fresh key prefixes handed out */
} server;

/* A port nothing listens on now: bound to 127.0.0.1:0, then freed. */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = -1;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
        port = ntohs(a.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static int find_in_path(const char *name, char *out, size_t size)
{
    const char *path = getenv("PATH");
    char dirs[4096];

    snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/usr/bin",
             path != NULL ? path : "");
    for (char *save = NULL, *dir = strtok_r(dirs, ":", &save); dir != NULL;
         dir = strtok_r(NULL, ":", &save)) {
        snprintf(out, size, "%s/%s", dir, name);
        if (access(out, X_OK) == 0) {
            return 0;
        }
    }
    return -1;
}

/* Whether the server answers PING. */
static int server_answers(void)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", server.port, tv);
    redisReply *r = NULL;
    int ok = 0;

    if (c != NULL && c->err == 0) {
        redisSetTimeout(c, tv);
        r = redisCommand(c, "PING");
        ok = r != NULL && r->type == REDIS_REPLY_STATUS &&
             strcmp(r->str, "PONG") == 0;
    }
    if (r != NULL) {
        freeReplyObject(r);
    }
    if (c != NULL) {
        redisFree(c);
    }
    return ok;
}

/* Starts redis-server on server.port and waits until it answers. 0, or
 * -1 with server.error set. */
static int server_spawn(void)
{
    char port[16];
    int report[2];
    int child_errno = 0;

    snprintf(port, sizeof(port), "%d", server.port);
    char *argv[] = {server.path, "--port", port,
                    "--bind", "127.0.0.1", "-::1",
                    "--save", "", "--appendonly", "no",
                    "--daemonize", "no",
                    "--unixsocket", server.sock, "--unixsocketperm", "700",
                    "--user", REDIS_USER, "on", ">" REDIS_USER_PASSWORD,
                    "~*", "&*", "+@all",
                    "--loglevel", "warning", NULL};
    if (pipe2(report, O_CLOEXEC) != 0) {
        snprintf(server.error, sizeof(server.error), "pipe: %s",
                 strerror(errno));
        return -1;
    }
    server.pid = fork();
    if (server.pid == 0) {
        int null = open("/dev/null", O_RDWR);
        /* Dies with the test, however the test ends. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        execv(server.path, argv);
        child_errno = errno;
        if (write(report[1], &child_errno, sizeof(child_errno)) < 0) {
            _exit(127);
        }
        _exit(127);
    }
    close(report[1]);
    if (server.pid < 0 ||
        read(report[0], &child_errno, sizeof(child_errno)) > 0) {
        snprintf(server.error, sizeof(server.error), "cannot run %s: %s",
                 server.path,
                 strerror(server.pid < 0 ? errno : child_errno));
        close(report[0]);
        server.pid = 0;
        return -1;
    }
    close(report[0]);
    for (int i = 0; i < 250; i++) {
        int status;
        if (server_answers()) {
            return 0;
        }
        if (waitpid(server.pid, &status, WNOHANG) == server.pid) {
            snprintf(server.error, sizeof(server.error),
                     "redis-server on port %d exited at start (status %d)",
                     server.port, status);
            server.pid = 0;
            return -1;
        }
        usleep(20000);
    }
    snprintf(server.error, sizeof(server.error),
             "redis-server on port %d did not answer PING within 5 s",
             server.port);
    return -1;
}

static void server_kill(void)
{
    if (server.pid > 0) {
        kill(server.pid, SIGKILL);
        waitpid(server.pid, NULL, 0);
        server.pid = 0;
        server.stopped = 0;
    }
}

static int group_setup(void **state)
{
    (void)state;
    /* hiredis writes with write(2); sluice's engine ignores it too. */
    signal(SIGPIPE, SIG_IGN);
    snprintf(server.sock, sizeof(server.sock), "/tmp/sluice-test-%d.sock",
             (int)getpid());
    if (find_in_path("redis-server", server.path, sizeof(server.path)) != 0) {
        snprintf(server.error, sizeof(server.error),
                 "redis-server is not installed (scripts/install-deps.sh "
                 "installs it)");
        return 0;
    }
    server.port = free_port();
    if (server.port < 0) {
        snprintf(server.error, sizeof(server.error),
                 "no free loopback port");
        return 0;
    }
    server_spawn();
    return 0; /* without a server, the Redis cases fail saying why */
}

static int group_teardown(void **state)
{
    (void)state;
    server_kill();
    unlink(server.sock);
    return 0;
}

static void setup_redis(struct fixture *f)
{
    char text[128];

    if (server.pid <= 0) {
        fail_msg("no redis-server for the Redis cases: %s", server.error);
    }
    if (server.stopped) {
        kill(server.pid, SIGCONT);
        server.stopped = 0;
    }
    snprintf(text, sizeof(text), "127.0.0.1:%d", server.port);
    opt_set(f->sc->store, f->ctx, "address", text);
    snprintf(f->where, sizeof(f->where), "redis %s: ", text);
    /* A fresh store: keys of no other case. */
    snprintf(text, sizeof(text), "test:%d:%u:", (int)getpid(),
             ++server.stores);
    opt_set(f->sc->store, f->ctx, "key_prefix", text);
    opt_set(f->sc->store, f->ctx, "timeout", "300ms");
}

static void redis_outage(struct fixture *f, enum outage how)
{
    (void)f;
    if (how == OUTAGE_HANG) {
        kill(server.pid, SIGSTOP);
        server.stopped = 1;
    } else {
        server_kill();
    }
}

static void redis_recover(struct fixture *f)
{
    (void)f;
    if (server.stopped) {
        kill(server.pid, SIGCONT);
        server.stopped = 0;
    } else if (server.pid <= 0 && server_spawn() != 0) {
        fail_msg("restarting redis-server: %s", server.error);
    }
}

/* A fresh file in a fresh directory per case. */
static void setup_sqlite(struct fixture *f)
{
    static char dir[64];
    static unsigned n;
    char path[128];

    if (dir[0] == '\0') {
        snprintf(dir, sizeof(dir), "/tmp/test_store.XXXXXX");
        assert_non_null(mkdtemp(dir));
    }
    snprintf(path, sizeof(path), "%s/markers-%u.db", dir, ++n);
    opt_set(f->sc->store, f->ctx, "path", path);
    snprintf(f->where, sizeof(f->where), "sqlite %s: ", path);
}

static const struct store_case stores[] = {
    /* A lookup ignores a row past its ttl even before the prune. */
    {.name = "sqlite", .store = &sqlite_store, .setup = setup_sqlite,
     .ttl_slack_ms = 200},
    {.name = "redis", .store = &redis_store, .setup = setup_redis,
     .ttl_slack_ms = 500, .outage = redis_outage, .recover = redis_recover},
};

/* ---- the Redis store's own ---- */

static void check_option(const char *option, const char *value,
                         const char *culprit, const char *message)
{
    void *ctx = opts_new(&redis_store);
    const char *got = NULL;
    struct sl_error err = {{0}};
    int rc;

    if (option != NULL) {
        opt_set(&redis_store, ctx, option, value);
    }
    rc = redis_store.check(ctx, &got, &err);
    if (culprit == NULL) {
        if (rc != 0) {
            fail_msg("%s: %s refused: %s", option, value, err.msg);
        }
    } else {
        if (rc == 0) {
            fail_msg("%s: %s accepted", option, value);
        }
        assert_string_equal(got, culprit);
        if (strstr(err.msg, message) == NULL) {
            fail_msg("%s: %s: \"%s\" lacks \"%s\"", option, value, err.msg,
                     message);
        }
    }
    opts_free(&redis_store, ctx);
}

static void test_redis_check(void **state)
{
    (void)state;
    check_option(NULL, NULL, NULL, NULL); /* the defaults */
    check_option("address", "10.0.0.7:6380", NULL, NULL);
    check_option("address", "redis.internal:6379", NULL, NULL);
    check_option("address", "[::1]:6379", NULL, NULL);
    check_option("address", "[2001:db8::1]:1", NULL, NULL);
    check_option("address", "unix:/run/redis/redis.sock", NULL, NULL);
    check_option("address", "redis.internal", "address", "host:port");
    check_option("address", "h:0", "address", "1 to 65535");
    check_option("address", "h:65536", "address", "1 to 65535");
    check_option("address", "h:63a", "address", "1 to 65535");
    check_option("address", "h:", "address", "1 to 65535");
    check_option("address", ":6379", "address", "host name");
    check_option("address", "::1:6379", "address", "brackets");
    check_option("address", "[::1]6379", "address", "[IPv6]:port");
    check_option("address", "[not-v6]:6379", "address", "IPv6");
    check_option("address", "a b:6379", "address", "host name");
    check_option("address", "unix:", "address", "path");
    check_option("tls", "true", "tls",
                 "tls needs hiredis 1.0 or newer; this build has 0.14: put "
                 "a TLS proxy such as stunnel in front, or build against "
                 "hiredis >= 1.0");
    check_option("username", "bob", "username", "password");
    /* cfg enforces db's range from the table. */
    assert_int_equal(opt_spec(&redis_store, "db")->min, 0);
    assert_int_equal(opt_spec(&redis_store, "db")->max, 15);
    assert_true(opt_spec(&redis_store, "password")->flags & OPT_SECRET);
    for (const struct opt_spec *o = redis_store.options; o->name; o++) {
        assert_non_null(o->doc);
    }
}

/* A command on the test's own connection, for looking behind the store. */
static redisReply *server_command(int db, const char *fmt, ...)
{
    redisContext *c = redisConnect("127.0.0.1", server.port);
    redisReply *r;
    va_list ap;

    assert_non_null(c);
    assert_int_equal(c->err, 0);
    r = redisCommand(c, "SELECT %d", db);
    assert_non_null(r);
    freeReplyObject(r);
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    redisFree(c);
    return r;
}

/* What the docs promise: a hash per key, a field per sink holding the
 * time of the mark, expiring ttl after the newest mark. */
static void test_redis_data_model(void **state)
{
    struct fixture *f = *state;
    struct timespec ts;
    redisReply *r;
    long long now_ms, at;
    char key[64];
    int n;

    f->info.ttl_ms = 60000;
    store_open(f);
    mark(f, "order 9", 2);
    clock_gettime(CLOCK_REALTIME, &ts);
    now_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    /* %b: the key holds a space, where hiredis's format would split. */
    n = snprintf(key, sizeof(key), "test:%d:%u:order 9", (int)getpid(),
                 server.stores);
    r = server_command(0, "HGETALL %b", key, (size_t)n);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    assert_string_equal(r->element[0]->str, "search");
    at = strtoll(r->element[1]->str, NULL, 10);
    assert_true(at <= now_ms && at > now_ms - 5000);
    freeReplyObject(r);
    r = server_command(0, "PTTL %b", key, (size_t)n);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_true(r->integer > 55000 && r->integer <= 60000);
    freeReplyObject(r);
}

/* The default prefix is sluice:<pipeline>:. */
static void test_redis_default_prefix(void **state)
{
    struct fixture *f = *state;
    char key[64], full[96];
    redisReply *r;
    int n;

    opt_set(&redis_store, f->ctx, "key_prefix", NULL);
    f->info.pipeline = "prefix-test";
    store_open(f);
    snprintf(key, sizeof(key), "k%d", (int)getpid());
    mark(f, key, 0);
    n = snprintf(full, sizeof(full), "sluice:prefix-test:%s", key);
    r = server_command(0, "HEXISTS %b billing", full, (size_t)n);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
}

/* AUTH as an ACL user, then SELECT: the markers land in that db. */
static void test_redis_auth_and_db(void **state)
{
    struct fixture *f = *state;
    char key[64];
    redisReply *r;
    int n;

    opt_set(&redis_store, f->ctx, "username", REDIS_USER);
    opt_set(&redis_store, f->ctx, "password", REDIS_USER_PASSWORD);
    opt_set(&redis_store, f->ctx, "db", "5");
    store_open(f);
    mark(f, "in-db-5", 1);
    assert_int_equal(lookup(f, "in-db-5"), 1u << 1);
    n = snprintf(key, sizeof(key), "test:%d:%u:in-db-5", (int)getpid(),
                 server.stores);
    r = server_command(5, "EXISTS %b", key, (size_t)n);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    r = server_command(0, "EXISTS %b", key, (size_t)n);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

/* A refused AUTH fails the ops; the error never holds the password. */
static void test_redis_bad_password(void **state)
{
    struct fixture *f = *state;
    struct op o;

    opt_set(&redis_store, f->ctx, "username", REDIS_USER);
    opt_set(&redis_store, f->ctx, "password", "wrong-Pa55word");
    store_open(f);
    for (int i = 0; i < 2; i++) {
        op_lookup(&o, "k");
        submit_wait(f, &o, 1, 2000);
        assert_true(o.failed);
        print_message("    %s\n", o.err);
        assert_non_null(strstr(o.err, f->where));
        assert_null(strstr(o.err, "wrong-Pa55word"));
    }
}

static void test_redis_unix_socket(void **state)
{
    struct fixture *f = *state;
    char text[128];

    snprintf(text, sizeof(text), "unix:%s", server.sock);
    opt_set(&redis_store, f->ctx, "address", text);
    store_open(f);
    mark(f, "over-unix", 3);
    assert_int_equal(lookup(f, "over-unix"), 1u << 3);
}

/* A name goes through the resolver thread, not a blocking lookup; an
 * address of it that refuses is left for the next. */
static void test_redis_host_name(void **state)
{
    struct fixture *f = *state;
    char text[128];
    int attempts;
    struct op o;

    snprintf(text, sizeof(text), "localhost:%d", server.port);
    opt_set(&redis_store, f->ctx, "address", text);
    /* Closed while the name is looked up: no done(). */
    store_open(f);
    op_lookup(&o, "by-name");
    submit(f, &o, 1);
    store_close(f);
    run_for(f, 200);
    assert_int_equal(o.done, 0);
    store_open(f);
    assert_int_equal(lookup_until_up(f, "by-name", 3000, &attempts), 0);
    mark(f, "by-name", 0);
    assert_int_equal(lookup(f, "by-name"), 1u << 0);
}

/* An IPv6 literal, where the host has IPv6 (the server binds ::1 when
 * it can). */
static void test_redis_ipv6_literal(void **state)
{
    struct fixture *f = *state;
    char text[128];
    redisContext *c = redisConnect("::1", server.port);
    int up = c != NULL && c->err == 0;

    redisFree(c);
    if (!up) {
        print_message("    no IPv6 loopback here: not tried\n");
        return;
    }
    snprintf(text, sizeof(text), "[::1]:%d", server.port);
    opt_set(&redis_store, f->ctx, "address", text);
    store_open(f);
    mark(f, "over-v6", 1);
    assert_int_equal(lookup(f, "over-v6"), 1u << 1);
}

/* An error reply fails the op it answers, and only that op: the
 * connection stays. So does a mark for a sink the store does not have. */
static void test_redis_error_reply_fails_its_op(void **state)
{
    struct fixture *f = *state;
    struct op ops[5];
    char key[64];
    redisReply *r;
    long long before, after;
    int n;

    store_open(f);
    mark(f, "ok", 0); /* connected */
    n = snprintf(key, sizeof(key), "test:%d:%u:text", (int)getpid(),
                 server.stores);
    freeReplyObject(server_command(0, "SET %b plain", key, (size_t)n));
    r = server_command(0, "INFO stats");
    before = strtoll(strstr(r->str, "total_connections_received:") + 27,
                     NULL, 10);
    freeReplyObject(r);
    op_mark(&ops[0], "text", 0);
    op_lookup(&ops[1], "ok");
    op_lookup(&ops[2], "text");
    op_mark(&ops[3], "ok", 7);
    op_mark(&ops[4], "ok", 1);
    submit_wait(f, ops, 5, 3000);
    assert_true(ops[0].failed);
    assert_non_null(strstr(ops[0].err, "HSET: WRONGTYPE"));
    assert_false(ops[1].failed);
    assert_int_equal(ops[1].op.sinks, 1u << 0);
    assert_true(ops[2].failed);
    assert_non_null(strstr(ops[2].err, "HMGET: WRONGTYPE"));
    assert_true(ops[3].failed);
    assert_non_null(strstr(ops[3].err, "no such sinks"));
    assert_false(ops[4].failed);
    assert_int_equal(lookup(f, "ok"), (1u << 0) | (1u << 1));
    r = server_command(0, "INFO stats");
    after = strtoll(strstr(r->str, "total_connections_received:") + 27, NULL,
                    10);
    freeReplyObject(r);
    assert_int_equal(after - before, 1); /* INFO's own: no reconnect */
}

/* Nothing listens: refused, reported from the loop; ops submitted during
 * the backoff fail at once, and close() inside one of their done() ends
 * them. Then a listener that accepts and hangs up: connect attempts come
 * 100, 200 and 400 ms apart while ops keep coming. */
static void test_redis_refused_and_backoff(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    struct op ops[10];
    char text[64];
    int64_t accepted[8], start;
    size_t naccepted = 0;
    int listener;

    snprintf(text, sizeof(text), "127.0.0.1:%d", free_port());
    opt_set(&redis_store, f->ctx, "address", text);
    snprintf(f->where, sizeof(f->where), "redis %s: ", text);
    store_open(f);
    op_lookup(&ops[0], "k");
    submit_wait(f, ops, 1, 1000);
    assert_true(ops[0].failed);
    assert_true(strncmp(ops[0].err, f->where, strlen(f->where)) == 0);
    assert_non_null(strstr(ops[0].err, "Connection refused"));
    f->done_count = 0;
    for (size_t i = 0; i < 10; i++) {
        op_lookup(&ops[i], "k");
    }
    f->on_done = close_on_third;
    submit(f, ops, 10);
    run_for(f, 150);
    assert_int_equal(f->done_count, 3);
    f->on_done = NULL;

    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(listener, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(listener, 16), 0);
    getsockname(listener, (struct sockaddr *)&a, &len);
    snprintf(text, sizeof(text), "127.0.0.1:%d", ntohs(a.sin_port));
    opt_set(&redis_store, f->ctx, "address", text);
    store_open(f);
    start = mono_ms();
    op_lookup(&ops[0], "k");
    ops[0].done = 1;
    while (mono_ms() - start < 850 && naccepted < 8) {
        int fd;
        if (ops[0].done) {
            op_lookup(&ops[0], "k");
            submit(f, ops, 1);
        }
        loop_run_once(f->loop, 5);
        while ((fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
            accepted[naccepted++] = mono_ms();
            close(fd);
        }
    }
    store_close(f);
    close(listener);
    assert_int_equal(naccepted, 4); /* at 0, 100, 300 and 700 ms */
    for (size_t i = 1; i < naccepted; i++) {
        int64_t gap = accepted[i] - accepted[i - 1];
        int64_t want = 100 << (i - 1);
        print_message("    attempt %zu after %lld ms\n", i + 1,
                      (long long)gap);
        assert_true(gap >= want - 10 && gap <= want + 80);
    }
}

/* ---- the table of tests ---- */

struct store_test {
    const char *name;
    CMUnitTestFunction fn;
    int outage; /* needs the store's outage hooks */
};

static const struct store_test store_tests[] = {
    {"lookup of an unknown key", test_lookup_unknown_key, 0},
    {"one op marks several sinks", test_one_op_marks_several_sinks, 0},
    {"mark then lookup", test_mark_then_lookup, 0},
    {"marks of three sinks in one batch",
     test_marks_of_three_sinks_in_one_batch, 0},
    {"1,000 mixed ops in one batch, in order",
     test_thousand_mixed_ops_in_order, 0},
    {"awkward keys", test_awkward_keys, 0},
    {"a marker expires after its ttl", test_marker_expires_after_ttl, 0},
    {"an outage fails ops, then the store recovers",
     test_outage_fails_ops_then_recovers, 1},
    {"close() with ops in flight", test_close_with_ops_in_flight, 0},
    {"close() inside done()", test_close_inside_done, 0},
    {"submit() inside done()", test_submit_inside_done, 0},
};

static const struct store_test redis_tests[] = {
    {"data model", test_redis_data_model, 0},
    {"default key prefix", test_redis_default_prefix, 0},
    {"AUTH as an ACL user and SELECT", test_redis_auth_and_db, 0},
    {"a refused AUTH", test_redis_bad_password, 0},
    {"unix socket", test_redis_unix_socket, 0},
    {"host name", test_redis_host_name, 0},
    {"IPv6 literal", test_redis_ipv6_literal, 0},
    {"an error reply fails its op only",
     test_redis_error_reply_fails_its_op, 0},
    {"refused, then backoff", test_redis_refused_and_backoff, 0},
};

#define NSTORES (sizeof(stores) / sizeof(stores[0]))
#define NSTORE_TESTS (sizeof(store_tests) / sizeof(store_tests[0]))
#define NREDIS_TESTS (sizeof(redis_tests) / sizeof(redis_tests[0]))

int main(void)
{
    static struct CMUnitTest
        tests[NSTORES * NSTORE_TESTS + NREDIS_TESTS + NSQLITE_TESTS + 1];
    static char names[NSTORES * NSTORE_TESTS + NREDIS_TESTS][128];
    size_t n = 0;

    for (size_t s = 0; s < NSTORES; s++) {
        for (size_t t = 0; t < NSTORE_TESTS; t++) {
            if (store_tests[t].outage && stores[s].outage == NULL) {
                continue;
            }
            snprintf(names[n], sizeof(names[n]), "%s: %s", stores[s].name,
                     store_tests[t].name);
            tests[n] = (struct CMUnitTest){names[n], store_tests[t].fn,
                                           case_setup, case_teardown,
                                           (void *)&stores[s]};
            n++;
        }
    }
    for (size_t s = 0; s < NSTORES; s++) {
        if (stores[s].store != &redis_store) {
            continue;
        }
        for (size_t t = 0; t < NREDIS_TESTS; t++) {
            snprintf(names[n], sizeof(names[n]), "redis: %s",
                     redis_tests[t].name);
            tests[n] = (struct CMUnitTest){names[n], redis_tests[t].fn,
                                           case_setup, case_teardown,
                                           (void *)&stores[s]};
            n++;
        }
    }
    for (size_t t = 0; t < NSQLITE_TESTS; t++) {
        tests[n] = sqlite_tests[t];
        tests[n].setup_func = case_setup;
        tests[n].teardown_func = case_teardown;
        tests[n].initial_state = (void *)&stores[0];
        n++;
    }
    tests[n++] = (struct CMUnitTest){"redis: option checks",
                                     test_redis_check, NULL, NULL, NULL};
    return _cmocka_run_group_tests("store", tests, n, group_setup,
                                   group_teardown);
}
