/* redis.c -- markers in Redis, through hiredis's async API on the lane's
 * loop.
 *
 * Data model. One hash per dedupe key, so that a lookup is one command:
 *
 *     key   <key_prefix><dedupe key>   (key_prefix defaults to
 *                                        "sluice:<pipeline>:")
 *     field <sink name>
 *     value the unix time in milliseconds the sink's marker was written
 *
 * A mark is `HSET key sink ms` then `PEXPIRE key ttl_ms`, pipelined
 * together: a key lives ttl_ms after its newest marker, and the mark is
 * done when both replies are in. A lookup is `HMGET key sink0 ... sinkN-1`:
 * bit i of the answer is set when field i is not nil. Keys and fields go
 * over the wire with their lengths, so any byte may appear in them.
 *
 * Batching. submit() formats every op's commands into hiredis's output
 * buffer; the loop writes them when the socket is writable, so a batch
 * costs one write and its replies come back in order. The ops in flight
 * sit in `sent`, in the order of their replies.
 *
 * Failure. No connection, a lost one, or no answer within `timeout`: the
 * connection is dropped and every op in flight completes with "redis
 * <address>: <why>". An error reply fails the op it answers (the others
 * get their own replies). The next submit() reconnects, no sooner than a
 * backoff after the previous attempt (100 ms doubling to 5 s, back to
 * 100 ms once a connection answered); ops submitted before then fail at
 * once. Answers, error replies included, complete ops from hiredis's
 * reply callbacks; every other failure is reported from a 0 ms timer,
 * so never from inside submit(). A mark for a sink index the store does
 * not have (the engine's bug) fails alone.
 *
 * hiredis 0.14 resolves a host name with a blocking getaddrinfo, so
 * names go through resolve.h (a thread of its own) and hiredis only ever
 * gets a literal address. It writes with write(2): the process must
 * ignore SIGPIPE, as the engine does. The password is sent, never
 * printed: errors name the address alone. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#include <async.h>
#include <hiredis.h>

#include "resolve.h"
#include "store.h"

#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 5000

/* The configured address, taken apart. */
struct redis_addr {
    char host[256];        /* name or literal, without brackets */
    char port[8];
    const char *unix_path; /* into the option's text; NULL for TCP */
};

/* Ops linked by their next, appended at the tail. */
struct op_list {
    struct store_op *head, *tail;
};

/* Lives on the stack of code that calls out (into hiredis or done()) and
 * must learn afterwards whether close() ran meanwhile: then the store may
 * be gone, and the caller touches nothing. */
struct redis_guard {
    int closed;
    struct redis_guard *outer;
};

struct redis_store {
    /* Options, filled before open(); never freed here. */
    char *address;
    char *username;
    char *password;
    int64_t db;
    char *key_prefix;
    int tls;
    int64_t timeout_ms;

    /* Everything below is open()'s, zeroed again by close(). */
    const struct store_info *info;
    const struct store_host *host;
    struct redis_addr addr;
    resolve_t *dns; /* NULL for a unix socket */

    /* Command parts formatted once: the key prefix, every sink's name as
     * a bulk string (back to back, which is HMGET's tail; fields_at[i]
     * is where sink i's begins) and PEXPIRE's ttl argument. */
    char *prefix;
    size_t prefix_len;
    char *fields;
    size_t *fields_at; /* sink_count + 1 offsets */
    char expire_arg[32];
    size_t expire_arg_len;
    char *buf; /* one op's commands, formatted */
    size_t buf_cap;

    /* The connection; ac NULL when there is none. */
    redisAsyncContext *ac;
    void *watch;
    unsigned events;        /* what the watch waits for */
    unsigned conn_id;       /* tells a connection from the next one */
    struct op_list sent;    /* in flight, in the order of their replies */
    unsigned head_replies;  /* replies the head of sent already got */
    char head_err[384];     /* the first error among them; "" if none */
    size_t awaiting;        /* replies not in yet, the handshake's too */
    int answered;           /* the connection answered something */
    uint64_t progress_ms;   /* the last answer, or the start of a wait */
    void *deadline;         /* timer: `timeout` without progress */
    int deadline_armed;

    /* Name lookups (TCP only): ops wait in `waiting` meanwhile. */
    int resolving;
    struct op_list waiting;

    /* Reconnecting. */
    uint64_t attempt_ms; /* start of the last connect attempt */
    int64_t backoff_ms;  /* the wait after the next failed attempt */
    uint64_t retry_ms;   /* no attempt before this */
    char last_err[384];  /* why the last attempt or connection failed */

    /* Ops to fail from fail_timer, all with fail_err. */
    struct op_list failed;
    char fail_err[384];
    void *fail_timer;

    struct redis_guard *guards;
};

static const struct opt_spec redis_options[] = {
    {.name = "address", .type = OPT_STRING, .def = "127.0.0.1:6379",
     .offset = offsetof(struct redis_store, address),
     .doc = "Where Redis listens: `host:port`, `[IPv6]:port` or "
            "`unix:/path/to.sock`."},
    {.name = "username", .type = OPT_STRING,
     .offset = offsetof(struct redis_store, username),
     .doc = "ACL user to authenticate as (Redis 6 or newer); needs "
            "`password`."},
    {.name = "password", .type = OPT_STRING, .flags = OPT_SECRET,
     .offset = offsetof(struct redis_store, password),
     .doc = "Sent with AUTH before any other command, usually "
            "`${REDIS_PASSWORD}`; never logged."},
    {.name = "db", .type = OPT_INT, .def = "0",
     .offset = offsetof(struct redis_store, db), .min = 0, .max = 15,
     .doc = "Database number, selected after AUTH when not 0."},
    {.name = "key_prefix", .type = OPT_STRING,
     .offset = offsetof(struct redis_store, key_prefix),
     .doc = "Prefix of every marker's key, `sluice:<pipeline>:` when not "
            "set."},
    {.name = "tls", .type = OPT_BOOL, .def = "false",
     .offset = offsetof(struct redis_store, tls),
     .doc = "TLS to the server: needs hiredis 1.0, so this build refuses "
            "it (put a TLS proxy such as stunnel in front)."},
    {.name = "timeout", .type = OPT_DURATION, .def = "5s",
     .offset = offsetof(struct redis_store, timeout_ms), .min = 1,
     .max = 3600000,
     .doc = "A connect, or a batch without an answer, fails after this "
            "and the connection is dropped."},
    {0},
};

/* ---- options ---- */

static int redis_parse_port(const char *text, struct redis_addr *a,
                            struct sl_error *err)
{
    long port = 0;

    if (*text == '\0' || strlen(text) > 5) {
        return sl_error_set(err, "expected a port from 1 to 65535 after "
                                 "the last ':'");
    }
    for (const char *p = text; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return sl_error_set(err, "expected a port from 1 to 65535 "
                                     "after the last ':'");
        }
        port = port * 10 + (*p - '0');
    }
    if (port < 1 || port > 65535) {
        return sl_error_set(err, "port %ld is not from 1 to 65535", port);
    }
    snprintf(a->port, sizeof(a->port), "%ld", port);
    return 0;
}

/* A host name's characters (RFC 1123, plus '_' seen in the wild). */
static int redis_host_name(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' ||
              ch == '_')) {
            return 0;
        }
    }
    return len > 0;
}

/* Parses `host:port`, `[IPv6]:port` or `unix:/path`. 0 or -1 with err. */
static int redis_parse_address(const char *text, struct redis_addr *a,
                               struct sl_error *err)
{
    const char *host, *end, *port;
    struct in6_addr v6;

    memset(a, 0, sizeof(*a));
    if (text == NULL || *text == '\0') {
        return sl_error_set(err, "expected host:port, [IPv6]:port or "
                                 "unix:/path/to.sock");
    }
    if (strncmp(text, "unix:", 5) == 0) {
        if (text[5] == '\0') {
            return sl_error_set(err, "expected a socket's path after "
                                     "unix:, e.g. unix:/run/redis.sock");
        }
        if (strlen(text + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            return sl_error_set(err, "the socket's path is longer than "
                                     "%zu bytes",
                                sizeof(((struct sockaddr_un *)0)->sun_path) -
                                    1);
        }
        a->unix_path = text + 5;
        return 0;
    }
    if (text[0] == '[') {
        host = text + 1;
        end = strchr(host, ']');
        if (end == NULL || end[1] != ':') {
            return sl_error_set(err, "expected [IPv6]:port, e.g. "
                                     "[::1]:6379");
        }
        port = end + 2;
        if ((size_t)(end - host) >= sizeof(a->host)) {
            return sl_error_set(err, "not an IPv6 address in brackets");
        }
        memcpy(a->host, host, (size_t)(end - host));
        if (inet_pton(AF_INET6, a->host, &v6) != 1) {
            return sl_error_set(err, "not an IPv6 address in brackets");
        }
        return redis_parse_port(port, a, err);
    }
    end = strrchr(text, ':');
    if (end == NULL) {
        return sl_error_set(err, "expected host:port, e.g. 127.0.0.1:6379 "
                                 "(or unix:/path/to.sock)");
    }
    if (memchr(text, ':', (size_t)(end - text)) != NULL) {
        return sl_error_set(err, "an IPv6 address goes in brackets, e.g. "
                                 "[::1]:6379");
    }
    if (!redis_host_name(text, (size_t)(end - text)) ||
        (size_t)(end - text) >= sizeof(a->host)) {
        return sl_error_set(err, "expected a host name or address before "
                                 "the ':'");
    }
    memcpy(a->host, text, (size_t)(end - text));
    return redis_parse_port(end + 1, a, err);
}

static int redis_check(const void *ctx, const char **option,
                       struct sl_error *err)
{
    const struct redis_store *s = ctx;
    struct redis_addr addr;

    if (s->tls) {
        *option = "tls";
#if HIREDIS_MAJOR >= 1
        return sl_error_set(err, "tls is not built into this store yet: "
                                 "put a TLS proxy such as stunnel in front");
#else
        return sl_error_set(err, "tls needs hiredis 1.0 or newer; this "
                                 "build has %d.%d: put a TLS proxy such "
                                 "as stunnel in front, or build against "
                                 "hiredis >= 1.0",
                            HIREDIS_MAJOR, HIREDIS_MINOR);
#endif
    }
    *option = "address";
    if (redis_parse_address(s->address, &addr, err) != 0) {
        return -1;
    }
    if (s->username != NULL && s->password == NULL) {
        *option = "username";
        return sl_error_set(err, "a username needs a password");
    }
    return 0;
}

/* ---- op lists ---- */

/* Appends the list that starts at first (linked by next). */
static void list_append(struct op_list *l, struct store_op *first)
{
    struct store_op *last = first;

    if (first == NULL) {
        return;
    }
    while (last->next != NULL) {
        last = last->next;
    }
    if (l->tail != NULL) {
        l->tail->next = first;
    } else {
        l->head = first;
    }
    l->tail = last;
}

static struct store_op *list_take(struct op_list *l)
{
    struct store_op *head = l->head;

    l->head = l->tail = NULL;
    return head;
}

static struct store_op *list_pop(struct op_list *l)
{
    struct store_op *op = l->head;

    l->head = op->next;
    if (l->head == NULL) {
        l->tail = NULL;
    }
    op->next = NULL;
    return op;
}

/* ---- guards and timers ---- */

static void guard_enter(struct redis_store *s, struct redis_guard *g)
{
    g->closed = 0;
    g->outer = s->guards;
    s->guards = g;
}

/* Only when !g->closed: close() has already let go of every guard. */
static void guard_leave(struct redis_store *s, struct redis_guard *g)
{
    s->guards = g->outer;
}

static uint64_t redis_now(const struct redis_store *s)
{
    return s->host->loop.now_ms(s->host->loop.io);
}

static void deadline_arm(struct redis_store *s, int64_t delay_ms)
{
    s->host->loop.timer_set(s->host->loop.io, s->deadline, delay_ms);
    s->deadline_armed = 1;
}

static void deadline_stop(struct redis_store *s)
{
    if (s->deadline_armed) {
        s->host->loop.timer_set(s->host->loop.io, s->deadline, -1);
        s->deadline_armed = 0;
    }
}

/* The clock of `timeout` starts when something is awaited after nothing
 * was; each answer restarts it (redis_on_deadline looks at progress_ms,
 * so an answer costs no timer operation). */
static void wait_start(struct redis_store *s)
{
    s->progress_ms = redis_now(s);
    if (!s->deadline_armed) {
        deadline_arm(s, s->timeout_ms);
    }
}

/* Ops fail from fail_timer, never inside the caller: submit() and hiredis
 * callbacks both get here. The first reason queued is the one given. */
static void fail_later(struct redis_store *s, struct store_op *first,
                       const char *why)
{
    if (first == NULL) {
        return;
    }
    if (s->failed.head == NULL) {
        snprintf(s->fail_err, sizeof(s->fail_err), "%s", why);
        s->host->loop.timer_set(s->host->loop.io, s->fail_timer, 0);
    }
    list_append(&s->failed, first);
}

static void redis_on_fail_timer(void *arg)
{
    struct redis_store *s = arg;
    struct store_op *op = list_take(&s->failed);
    struct redis_guard guard;
    char why[sizeof(s->fail_err)];

    memcpy(why, s->fail_err, sizeof(why)); /* done() may queue more */
    guard_enter(s, &guard);
    while (op != NULL) {
        struct store_op *next = op->next;
        op->next = NULL;
        s->host->done(s->host->engine, op, why);
        if (guard.closed) {
            return;
        }
        op = next;
    }
    guard_leave(s, &guard);
}

/* ---- the connection ---- */

/* The attempt begun at attempt_ms failed, or its connection ended: why
 * becomes last_err, and the next attempt waits for the backoff. */
static void redis_down(struct redis_store *s, const char *why)
{
    snprintf(s->last_err, sizeof(s->last_err), "redis %s: %s", s->address,
             why);
    s->retry_ms = s->attempt_ms + (uint64_t)s->backoff_ms;
    if (!s->answered) {
        s->backoff_ms = s->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS
                            ? REDIS_BACKOFF_MAX_MS
                            : s->backoff_ms * 2;
        if (s->dns != NULL) {
            resolve_failed(s->dns); /* the next attempt tries another */
        }
    }
    s->answered = 0;
}

/* Lets go of the connection: no hook or callback of it reaches the store
 * any more, and its ops in flight fail with last_err. The caller frees
 * ac, unless hiredis is freeing it already. */
static void redis_detach(struct redis_store *s)
{
    redisAsyncContext *ac = s->ac;

    s->host->loop.watch_free(s->host->loop.io, s->watch);
    s->watch = NULL;
    s->events = 0;
    ac->data = NULL;
    ac->ev.data = NULL;
    ac->ev.addRead = NULL;
    ac->ev.delRead = NULL;
    ac->ev.addWrite = NULL;
    ac->ev.delWrite = NULL;
    ac->ev.cleanup = NULL;
    s->ac = NULL;
    s->awaiting = 0;
    s->head_replies = 0;
    s->head_err[0] = '\0';
    deadline_stop(s);
    fail_later(s, list_take(&s->sent), s->last_err);
}

/* Ends the connection for why (a timeout, a failed handshake). Inside a
 * hiredis callback, hiredis frees ac once the callback returned. */
static void redis_drop(struct redis_store *s, const char *why)
{
    redisAsyncContext *ac = s->ac;

    redis_down(s, why);
    redis_detach(s);
    redisAsyncFree(ac);
}

static void redis_watch(struct redis_store *s, unsigned events)
{
    if (s->events != events) {
        s->events = events;
        /* Cannot fail for a watched fd; if it did, the deadline would
         * end the connection. */
        s->host->loop.watch_set(s->host->loop.io, s->watch, events);
    }
}

static void redis_add_read(void *privdata)
{
    struct redis_store *s = privdata;

    redis_watch(s, s->events | CONNECTOR_READABLE);
}

static void redis_del_read(void *privdata)
{
    struct redis_store *s = privdata;

    redis_watch(s, s->events & ~(unsigned)CONNECTOR_READABLE);
}

static void redis_add_write(void *privdata)
{
    struct redis_store *s = privdata;

    redis_watch(s, s->events | CONNECTOR_WRITABLE);
}

static void redis_del_write(void *privdata)
{
    struct redis_store *s = privdata;

    redis_watch(s, s->events & ~(unsigned)CONNECTOR_WRITABLE);
}

/* hiredis frees the context on its own (refused, reset, closed by the
 * server, a protocol error): this hook runs after it called every reply
 * callback with NULL, before it closes the socket. Our own drops unhook
 * first, so they never get here. */
static void redis_on_cleanup(void *privdata)
{
    struct redis_store *s = privdata;
    redisContext *c;

    if (s == NULL || s->ac == NULL) {
        return;
    }
    c = &s->ac->c;
    redis_down(s, c->err != 0 && c->errstr[0] != '\0'
                      ? c->errstr
                      : "the server closed the connection");
    redis_detach(s);
}

static void redis_on_io(void *arg, unsigned events)
{
    struct redis_store *s = arg;
    redisAsyncContext *ac = s->ac;
    unsigned id = s->conn_id;
    struct redis_guard guard;

    if (ac == NULL) {
        return;
    }
    guard_enter(s, &guard);
    /* Writable first: a connect completes there. */
    if (events & CONNECTOR_WRITABLE) {
        redisAsyncHandleWrite(ac);
    }
    if (guard.closed) {
        return;
    }
    if ((events & CONNECTOR_READABLE) && s->ac == ac && s->conn_id == id) {
        redisAsyncHandleRead(ac);
        if (guard.closed) {
            return;
        }
    }
    guard_leave(s, &guard);
}

/* An answer arrived: the connection works. */
static void redis_answered(struct redis_store *s)
{
    s->awaiting--;
    s->progress_ms = redis_now(s);
    if (!s->answered) {
        s->answered = 1;
        s->backoff_ms = REDIS_BACKOFF_MIN_MS;
    }
}

static void redis_on_handshake(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_store *s = ac->data;
    redisReply *reply = r;
    char why[300];

    if (s == NULL || reply == NULL) {
        return; /* closing, or redis_on_cleanup follows */
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        /* Redis never echoes the password in AUTH's errors. */
        snprintf(why, sizeof(why), "%s: %s", (const char *)privdata,
                 reply->str);
        redis_drop(s, why);
        return;
    }
    redis_answered(s);
}

/* Queues AUTH and SELECT, which run before anything sent after them. */
static int redis_handshake(struct redis_store *s)
{
    const char *argv[3];
    char db[24];
    int argc = 0;

    if (s->password != NULL) {
        argv[argc++] = "AUTH";
        if (s->username != NULL) {
            argv[argc++] = s->username;
        }
        argv[argc++] = s->password;
        if (redisAsyncCommandArgv(s->ac, redis_on_handshake, "AUTH", argc,
                                  argv, NULL) != REDIS_OK) {
            return -1;
        }
        s->awaiting++;
    }
    if (s->db != 0) {
        snprintf(db, sizeof(db), "%lld", (long long)s->db);
        argv[0] = "SELECT";
        argv[1] = db;
        if (redisAsyncCommandArgv(s->ac, redis_on_handshake, "SELECT", 2,
                                  argv, NULL) != REDIS_OK) {
            return -1;
        }
        s->awaiting++;
    }
    return 0;
}

/* Starts connecting to addr (NULL: the unix socket). 0, or -1 with the
 * attempt marked down. */
static int redis_connect_to(struct redis_store *s,
                            const struct resolve_addr *addr)
{
    redisAsyncContext *ac;
    char ip[INET6_ADDRSTRLEN] = "";
    int port = 0;

    if (addr == NULL) {
        ac = redisAsyncConnectUnix(s->addr.unix_path);
    } else {
        /* A literal, so that hiredis's getaddrinfo cannot block. */
        if (addr->family == AF_INET6) {
            const struct sockaddr_in6 *a6 = (const void *)&addr->addr;
            inet_ntop(AF_INET6, &a6->sin6_addr, ip, sizeof(ip));
            port = ntohs(a6->sin6_port);
        } else {
            const struct sockaddr_in *a4 = (const void *)&addr->addr;
            inet_ntop(AF_INET, &a4->sin_addr, ip, sizeof(ip));
            port = ntohs(a4->sin_port);
        }
        ac = redisAsyncConnect(ip, port);
    }
    if (ac == NULL) {
        redis_down(s, "out of memory");
        return -1;
    }
    if (ac->err != 0) {
        redis_down(s, ac->errstr);
        redisAsyncFree(ac);
        return -1;
    }
    s->watch = s->host->loop.watch_new(s->host->loop.io, ac->c.fd,
                                       redis_on_io, s);
    if (s->watch == NULL) {
        redis_down(s, "out of memory");
        redisAsyncFree(ac);
        return -1;
    }
    s->events = 0;
    ac->data = s;
    ac->ev.data = s;
    ac->ev.addRead = redis_add_read;
    ac->ev.delRead = redis_del_read;
    ac->ev.addWrite = redis_add_write;
    ac->ev.delWrite = redis_del_write;
    ac->ev.cleanup = redis_on_cleanup;
    s->ac = ac;
    s->conn_id++;
    s->answered = 0;
    s->awaiting = 0;
    s->head_replies = 0;
    s->head_err[0] = '\0';
    if (redis_handshake(s) != 0) {
        redis_drop(s, "out of memory");
        return -1;
    }
    if (s->awaiting > 0) {
        wait_start(s);
    }
    return 0;
}

/* ---- commands ---- */

static size_t put_uint(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++) {
        p[i] = tmp[n - 1 - i];
    }
    return n;
}

static size_t put(char *p, const char *text, size_t len)
{
    memcpy(p, text, len);
    return len;
}

/* "$<len>\r\n<prefix><key>\r\n" */
static size_t put_key(const struct redis_store *s, char *p,
                      const struct store_op *op)
{
    size_t n = 0;

    p[n++] = '$';
    n += put_uint(p + n, s->prefix_len + op->key_len);
    n += put(p + n, "\r\n", 2);
    n += put(p + n, s->prefix, s->prefix_len);
    n += put(p + n, op->key, op->key_len);
    n += put(p + n, "\r\n", 2);
    return n;
}

/* Room for an op's commands in buf. 0 or -1. */
static int buf_reserve(struct redis_store *s, const struct store_op *op)
{
    size_t fields_len = s->fields_at[s->info->sink_count];
    /* A mark repeats the time after each field: 48 bytes at most. */
    size_t need = 2 * (64 + s->prefix_len + op->key_len) + fields_len +
                  48 * s->info->sink_count + 128;
    char *buf;

    if (need <= s->buf_cap) {
        return 0;
    }
    buf = realloc(s->buf, need);
    if (buf == NULL) {
        return -1;
    }
    s->buf = buf;
    s->buf_cap = need;
    return 0;
}

/* The unix time in milliseconds, as a bulk string. */
static size_t put_wall_ms(char *p)
{
    struct timespec ts;
    char digits[24];
    size_t len, n = 0;

    clock_gettime(CLOCK_REALTIME, &ts);
    len = put_uint(digits, (uint64_t)ts.tv_sec * 1000 +
                               (uint64_t)ts.tv_nsec / 1000000);
    p[n++] = '$';
    n += put_uint(p + n, len);
    n += put(p + n, "\r\n", 2);
    n += put(p + n, digits, len);
    n += put(p + n, "\r\n", 2);
    return n;
}

static void redis_on_reply(redisAsyncContext *ac, void *r, void *privdata);

/* Queues op's commands on the connection. 0, or -1 (out of memory). */
static int redis_queue(struct redis_store *s, struct store_op *op,
                       const char *now_arg, size_t now_len)
{
    char *p;
    size_t n = 0, first;

    if (buf_reserve(s, op) != 0) {
        return -1;
    }
    p = s->buf;
    if (op->kind == STORE_LOOKUP) {
        p[n++] = '*';
        n += put_uint(p + n, 2 + s->info->sink_count);
        n += put(p + n, "\r\n$5\r\nHMGET\r\n", 13);
        n += put_key(s, p + n, op);
        n += put(p + n, s->fields, s->fields_at[s->info->sink_count]);
        if (redisAsyncFormattedCommand(s->ac, redis_on_reply, op, p, n) !=
            REDIS_OK) {
            return -1;
        }
        s->awaiting++;
        return 0;
    }
    /* HSET key sink time [sink time ...]: every sink of the op. */
    p[n++] = '*';
    n += put_uint(p + n, 2 + 2 * (size_t)__builtin_popcountll(op->sinks));
    n += put(p + n, "\r\n$4\r\nHSET\r\n", 12);
    n += put_key(s, p + n, op);
    for (size_t i = 0; i < s->info->sink_count; i++) {
        if (op->sinks & ((uint64_t)1 << i)) {
            n += put(p + n, s->fields + s->fields_at[i],
                     s->fields_at[i + 1] - s->fields_at[i]);
            n += put(p + n, now_arg, now_len);
        }
    }
    first = n;
    n += put(p + n, "*3\r\n$7\r\nPEXPIRE\r\n", 17);
    n += put_key(s, p + n, op);
    n += put(p + n, s->expire_arg, s->expire_arg_len);
    if (redisAsyncFormattedCommand(s->ac, redis_on_reply, op, p, first) !=
        REDIS_OK) {
        return -1;
    }
    s->awaiting++;
    if (redisAsyncFormattedCommand(s->ac, redis_on_reply, op, p + first,
                                   n - first) != REDIS_OK) {
        return -1;
    }
    s->awaiting++;
    return 0;
}

static void redis_send(struct redis_store *s, struct store_op *batch);

/* Starts a connect attempt for batch, or fails it at once. */
static void redis_attempt(struct redis_store *s, struct store_op *batch)
{
    const struct resolve_addr *addr = NULL;
    int rc;

    if (s->dns != NULL) {
        rc = resolve_get(s->dns, &addr);
        if (rc == 1) {
            s->resolving = 1;
            list_append(&s->waiting, batch);
            wait_start(s);
            return;
        }
        if (rc < 0) {
            redis_down(s, resolve_error(s->dns));
            fail_later(s, batch, s->last_err);
            return;
        }
    }
    if (redis_connect_to(s, addr) != 0) {
        fail_later(s, batch, s->last_err);
        return;
    }
    redis_send(s, batch);
}

/* A name lookup ended: the ops waiting for it go on. */
static void redis_on_resolved(void *arg)
{
    struct redis_store *s = arg;

    if (!s->resolving) {
        return; /* timed out before: the answer is cached for the next */
    }
    s->resolving = 0;
    deadline_stop(s);
    redis_attempt(s, list_take(&s->waiting));
}

static void redis_on_deadline(void *arg)
{
    struct redis_store *s = arg;
    uint64_t now = redis_now(s);
    uint64_t quiet = now - s->progress_ms;
    char why[96];

    s->deadline_armed = 0;
    if (!s->resolving && (s->ac == NULL || s->awaiting == 0)) {
        return;
    }
    if (quiet < (uint64_t)s->timeout_ms) {
        deadline_arm(s, s->timeout_ms - (int64_t)quiet);
        return;
    }
    if (s->resolving) {
        s->resolving = 0;
        snprintf(why, sizeof(why), "cannot resolve %s within %lld ms",
                 s->addr.host, (long long)s->timeout_ms);
        redis_down(s, why);
        fail_later(s, list_take(&s->waiting), s->last_err);
        return;
    }
    snprintf(why, sizeof(why), "no answer within %lld ms",
             (long long)s->timeout_ms);
    redis_drop(s, why);
}

/* Completes the head of sent, which reply answers. */
static void redis_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_store *s = ac->data;
    redisReply *reply = r;
    struct store_op *op;
    char why[sizeof(s->head_err)];
    const char *err = NULL;

    if (s == NULL || reply == NULL) {
        return; /* closing, or redis_on_cleanup fails what is in flight */
    }
    redis_answered(s);
    op = s->sent.head;
    if (op == NULL || op != privdata) {
        redis_drop(s, "replies out of step with the commands");
        return;
    }
    if (op->kind == STORE_MARK && s->head_replies++ == 0) {
        /* HSET's reply: the op is done with PEXPIRE's. */
        if (reply->type == REDIS_REPLY_ERROR) {
            snprintf(s->head_err, sizeof(s->head_err), "redis %s: HSET: %s",
                     s->address, reply->str);
        } else if (reply->type != REDIS_REPLY_INTEGER) {
            snprintf(s->head_err, sizeof(s->head_err),
                     "redis %s: HSET: unexpected reply type %d", s->address,
                     reply->type);
        }
        return;
    }
    if (op->kind == STORE_MARK) {
        if (s->head_err[0] != '\0') {
            memcpy(why, s->head_err, sizeof(why));
            err = why;
        } else if (reply->type == REDIS_REPLY_ERROR) {
            snprintf(why, sizeof(why), "redis %s: PEXPIRE: %s", s->address,
                     reply->str);
            err = why;
        } else if (reply->type != REDIS_REPLY_INTEGER || reply->integer != 1) {
            /* Deleted between the two: the marker is not there. */
            snprintf(why, sizeof(why), "redis %s: PEXPIRE found no key",
                     s->address);
            err = why;
        }
    } else if (reply->type == REDIS_REPLY_ARRAY &&
               reply->elements == s->info->sink_count) {
        uint64_t marked = 0;
        for (size_t i = 0; i < reply->elements; i++) {
            if (reply->element[i]->type != REDIS_REPLY_NIL) {
                marked |= (uint64_t)1 << i;
            }
        }
        op->sinks = marked;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof(why), "redis %s: HMGET: %s", s->address,
                 reply->str);
        err = why;
    } else {
        snprintf(why, sizeof(why), "redis %s: HMGET: unexpected reply type %d",
                 s->address, reply->type);
        err = why;
    }
    s->head_replies = 0;
    s->head_err[0] = '\0';
    list_pop(&s->sent);
    /* Last: done() may submit, or close the store. */
    s->host->done(s->host->engine, op, err);
}

/* Queues batch on the open connection, in order. */
static void redis_send(struct redis_store *s, struct store_op *batch)
{
    char now_arg[48];
    size_t now_len = 0;
    int idle = s->awaiting == 0;

    while (batch != NULL) {
        struct store_op *op = batch;
        batch = op->next;
        op->next = NULL;
        if (op->kind == STORE_MARK &&
            (op->sinks == 0 ||
             (s->info->sink_count < 64 &&
              op->sinks >> s->info->sink_count != 0))) {
            char why[128];
            /* The engine's bug: this op alone cannot be answered. */
            snprintf(why, sizeof(why), "redis %s: no such sinks %#llx",
                     s->address, (unsigned long long)op->sinks);
            fail_later(s, op, why);
            continue;
        }
        if (op->kind == STORE_MARK && now_len == 0) {
            now_len = put_wall_ms(now_arg); /* once a batch */
        }
        /* In sent first: a failure below fails it with the rest. */
        list_append(&s->sent, op);
        if (redis_queue(s, op, now_arg, now_len) != 0) {
            redis_drop(s, "out of memory");
            fail_later(s, batch, s->last_err);
            return;
        }
    }
    if (idle && s->awaiting > 0) {
        wait_start(s);
    }
}

/* ---- the store ---- */

static void redis_close(void *ctx);

static int redis_open(void *ctx, const struct store_info *info,
                      const struct store_host *host, struct sl_error *err)
{
    struct redis_store *s = ctx;
    const char *option = NULL;
    size_t len = 0;

    if (redis_check(s, &option, err) != 0) {
        return -1;
    }
    if (info->sink_count == 0 || info->sink_count > STORE_MAX_SINKS) {
        return sl_error_set(err, "a store tracks 1 to %d sinks, not %zu",
                            STORE_MAX_SINKS, info->sink_count);
    }
    s->info = info;
    s->host = host;
    redis_parse_address(s->address, &s->addr, err);
    s->backoff_ms = REDIS_BACKOFF_MIN_MS;
    if (s->key_prefix != NULL) {
        s->prefix = strdup(s->key_prefix);
    } else {
        size_t n = strlen("sluice::") + strlen(info->pipeline) + 1;
        s->prefix = malloc(n);
        if (s->prefix != NULL) {
            snprintf(s->prefix, n, "sluice:%s:", info->pipeline);
        }
    }
    if (s->prefix == NULL) {
        goto oom;
    }
    s->prefix_len = strlen(s->prefix);
    for (size_t i = 0; i < info->sink_count; i++) {
        len += 32 + strlen(info->sinks[i]);
    }
    s->fields = malloc(len);
    s->fields_at = malloc((info->sink_count + 1) * sizeof(*s->fields_at));
    if (s->fields == NULL || s->fields_at == NULL) {
        goto oom;
    }
    len = 0;
    for (size_t i = 0; i < info->sink_count; i++) {
        size_t name_len = strlen(info->sinks[i]);
        s->fields_at[i] = len;
        s->fields[len++] = '$';
        len += put_uint(s->fields + len, name_len);
        len += put(s->fields + len, "\r\n", 2);
        len += put(s->fields + len, info->sinks[i], name_len);
        len += put(s->fields + len, "\r\n", 2);
    }
    s->fields_at[info->sink_count] = len;
    {
        char digits[24];
        size_t n = put_uint(digits, (uint64_t)info->ttl_ms);
        s->expire_arg_len = (size_t)snprintf(
            s->expire_arg, sizeof(s->expire_arg), "$%zu\r\n%.*s\r\n", n,
            (int)n, digits);
    }
    s->deadline = host->loop.timer_new(host->loop.io, redis_on_deadline, s);
    s->fail_timer =
        host->loop.timer_new(host->loop.io, redis_on_fail_timer, s);
    if (s->deadline == NULL || s->fail_timer == NULL) {
        goto oom;
    }
    if (s->addr.unix_path == NULL) {
        s->dns = resolve_new(&host->loop, s->addr.host, s->addr.port,
                             redis_on_resolved, s, err);
        if (s->dns == NULL) {
            redis_close(s);
            return -1;
        }
    }
    return 0;
oom:
    redis_close(s);
    return sl_error_set(err, "out of memory");
}

static void redis_submit(void *ctx, struct store_op *batch)
{
    struct redis_store *s = ctx;

    if (batch == NULL) {
        return;
    }
    if (s->ac != NULL) {
        redis_send(s, batch);
    } else if (s->resolving) {
        list_append(&s->waiting, batch);
    } else if (redis_now(s) < s->retry_ms) {
        fail_later(s, batch, s->last_err);
    } else {
        s->attempt_ms = redis_now(s);
        redis_attempt(s, batch);
    }
}

static void redis_close(void *ctx)
{
    struct redis_store *s = ctx;
    const struct store_host *host = s->host;

    for (struct redis_guard *g = s->guards; g != NULL; g = g->outer) {
        g->closed = 1;
    }
    if (s->ac != NULL) {
        redisAsyncContext *ac = s->ac;
        list_take(&s->sent); /* abandoned: no done() after close() */
        redis_detach(s);
        redisAsyncFree(ac);
    }
    if (host != NULL) {
        if (s->deadline != NULL) {
            host->loop.timer_free(host->loop.io, s->deadline);
        }
        if (s->fail_timer != NULL) {
            host->loop.timer_free(host->loop.io, s->fail_timer);
        }
    }
    resolve_destroy(s->dns);
    free(s->prefix);
    free(s->fields);
    free(s->fields_at);
    free(s->buf);
    memset(&s->info, 0,
           sizeof(*s) - offsetof(struct redis_store, info));
}

const struct store redis_store = {
    .name = "redis",
    .doc = "Markers in Redis: a hash per dedupe key with a field per "
           "sink, expiring `ttl` after the key's newest marker.",
    .options = redis_options,
    .ctx_size = sizeof(struct redis_store),
    .check = redis_check,
    .open = redis_open,
    .submit = redis_submit,
    .close = redis_close,
};
