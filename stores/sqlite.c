/* sqlite.c -- markers in an SQLite file, one per pipeline (the default).
 *
 * The file is readable with the sqlite3 tool:
 *
 *   sluice_markers(key TEXT PRIMARY KEY, sinks INTEGER, marked_ms INTEGER)
 *   sluice_sinks(bit INTEGER PRIMARY KEY, name TEXT UNIQUE)
 *   sluice_meta(name TEXT PRIMARY KEY, value TEXT)  -- pipeline, schema
 *   VIEW sluice_marker_sinks(key, sink, marked_ms)   -- one row per marker
 *
 * One row per dedupe key: `sinks` has bit b set for each sink that
 * applied it (b from sluice_sinks, assigned to a sink name the first
 * time the file sees it, so that reordering or adding sinks in the YAML
 * keeps old markers right); marked_ms is the Unix time in milliseconds of
 * the row's last write. One row, not one per sink: a message's lookup
 * and its marks are then one B-tree access each, which is most of the
 * cost. A row older than the ttl counts as absent even before the pruner
 * deletes it. There is no index on marked_ms (every mark would move an
 * entry in it): the pruner walks the table by key in chunks instead.
 *
 * SQLite calls block (a commit waits for fsync), so they run on a thread
 * of their own: submit() queues a batch and wakes it; the thread answers
 * each batch in one transaction (journal_mode WAL, synchronous FULL: a
 * commit is on disk when it returns) and hands it back through an
 * eventfd the loop watches. Batches that queue while a commit runs are
 * taken together next time: a group commit whose size follows the load.
 * Any error closes the connection; the next batch opens it again, so a
 * file made writable again, or a disk with room again, is used again
 * without a restart. */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

/* A prune deletes at most this many expired markers per transaction, so
 * that batches waiting behind it wait little. */
#define PRUNE_CHUNK 5000
/* Busy, transactions start at least this far apart: what queues meanwhile
 * shares one fsync and one write of each page it changes. Idle, a batch
 * goes at once. Measured on the store alone (sequential keys, lookup and
 * mark per message): 3.6 CPU-µs per message in transactions of 70
 * messages (5 ms at 14,000/s), 2.4 in transactions of 280 (20 ms). The
 * delay is paid in latency (up to twice: lookup, mark), not throughput:
 * the messages waiting count in the in-flight bounds. */
#define COMMIT_GAP_MS 20

struct sqlite_ctx {
    char *path; /* option */
    /* From here on: open() state. */
    const struct store_info *info;
    const struct store_host *host;
    int efd;
    void *watch;
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t gap; /* never signalled but by close: a timed sleep */
    struct batch *todo, **todo_tail; /* submitted, not yet taken */
    struct batch *done, **done_tail; /* answered, for the loop */
    struct store_op *unqueued; /* no memory for their batch: failed */
    int stopping;
    int closed; /* by close(), maybe from inside done(): answer no more */
    /* The thread's own. */
    sqlite3 *db;
    sqlite3_stmt *lookup, *mark, *prune;
    uint64_t bits[STORE_MAX_SINKS]; /* sink index -> its bit in the file */
    uint64_t next_prune_ms;  /* monotonic */
    uint64_t last_commit_ms; /* monotonic: when the last transaction
                                started */
    char *prune_after; /* the key the pruner's walk goes on after */
};

struct batch {
    struct store_op *ops;
    struct batch *next;
    char err[256]; /* "" when answered */
};

static const struct opt_spec sqlite_options[] = {
    {.name = "path", .type = OPT_STRING,
     .offset = offsetof(struct sqlite_ctx, path),
     .doc = "`store: sqlite`: the marker file (created with its schema "
            "when missing; relative paths start at the working directory). "
            "Default: `<pipeline>.markers.db`. One file per pipeline: a "
            "file of another pipeline is refused."},
    {0},
};

static uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Markers carry wall-clock times (another process reads them); the
 * thread's own schedule runs on the monotonic clock, so that a clock
 * set back cannot stall it. */
static uint64_t wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

static uint64_t mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

/* Waits on cond until the monotonic time `at` (conds use that clock). */
static void wait_until_ms(pthread_cond_t *cond, pthread_mutex_t *lock,
                          uint64_t at)
{
    struct timespec until = {
        .tv_sec = (time_t)(at / 1000),
        .tv_nsec = (long)(at % 1000) * 1000000,
    };

    pthread_cond_timedwait(cond, lock, &until);
}

/* ---- the thread's side ---- */

/* Closing rolls back a transaction left open by a failure. */
static void db_close(struct sqlite_ctx *c)
{
    sqlite3_finalize(c->lookup);
    sqlite3_finalize(c->mark);
    sqlite3_finalize(c->prune);
    c->lookup = c->mark = c->prune = NULL;
    sqlite3_close_v2(c->db);
    c->db = NULL;
}

static int db_fail(struct sqlite_ctx *c, char *err, size_t cap,
                   const char *what)
{
    snprintf(err, cap, "sqlite %s: %s: %s", c->path, what,
             c->db != NULL ? sqlite3_errmsg(c->db) : "out of memory");
    db_close(c);
    return -1;
}

static int exec(struct sqlite_ctx *c, const char *sql, char *err, size_t cap)
{
    if (sqlite3_exec(c->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        return db_fail(c, err, cap, sql);
    }
    return 0;
}

/* The bit of each of this pipeline's sinks in the file, assigning the
 * next free one to a sink it has not seen. -2 when all 64 are taken. */
static int sink_bits(struct sqlite_ctx *c, char *err, size_t cap)
{
    sqlite3_stmt *find = NULL, *add = NULL;
    int rc = 0;

    if (sqlite3_prepare_v2(c->db, "SELECT bit FROM sluice_sinks WHERE "
                                  "name = ?1", -1, &find, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(c->db,
                           "INSERT INTO sluice_sinks SELECT "
                           "coalesce(max(bit) + 1, 0), ?1 FROM sluice_sinks "
                           "RETURNING bit",
                           -1, &add, NULL) != SQLITE_OK) {
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < c->info->sink_count; i++) {
        sqlite3_stmt *st = find;
        for (int pass = 0; pass < 2; pass++, st = add) {
            sqlite3_reset(st);
            sqlite3_bind_text(st, 1, c->info->sinks[i], -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW) {
                break;
            }
            if (pass == 1) {
                rc = -1;
            }
        }
        if (rc == 0) {
            sqlite3_int64 bit = sqlite3_column_int64(st, 0);
            if (bit < 0 || bit >= STORE_MAX_SINKS) {
                snprintf(err, cap,
                         "sqlite %s: has seen %d sink names, the most one "
                         "file keeps: use a new file",
                         c->path, STORE_MAX_SINKS);
                rc = -2;
            } else {
                c->bits[i] = (uint64_t)1 << bit;
            }
        }
        sqlite3_reset(st);
    }
    sqlite3_finalize(find);
    sqlite3_finalize(add);
    if (rc == -1) {
        return db_fail(c, err, cap, "sink names");
    }
    if (rc == -2) {
        db_close(c);
    }
    return rc;
}

/* Opens the file, creating the schema, and checks it is this
 * pipeline's. */
static int db_open(struct sqlite_ctx *c, char *err, size_t cap)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (c->db != NULL) {
        return 0;
    }
    rc = sqlite3_open_v2(c->path, &c->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_NOMUTEX,
                         NULL);
    if (rc != SQLITE_OK) {
        return db_fail(c, err, cap, "cannot open");
    }
    if (sqlite3_db_readonly(c->db, "main") == 1) {
        snprintf(err, cap, "sqlite %s: the file is read-only", c->path);
        db_close(c);
        return -1;
    }
    /* Another process (a replay) may hold the write lock a moment. */
    sqlite3_busy_timeout(c->db, 5000);
    if (exec(c, "PRAGMA journal_mode=WAL", err, cap) != 0 ||
        exec(c, "PRAGMA synchronous=FULL", err, cap) != 0 ||
        exec(c,
             "CREATE TABLE IF NOT EXISTS sluice_meta ("
             " name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
             "CREATE TABLE IF NOT EXISTS sluice_markers ("
             " key TEXT PRIMARY KEY, sinks INTEGER NOT NULL,"
             " marked_ms INTEGER NOT NULL) WITHOUT ROWID;"
             "CREATE TABLE IF NOT EXISTS sluice_sinks ("
             " bit INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
             "CREATE VIEW IF NOT EXISTS sluice_marker_sinks AS"
             " SELECT m.key AS key, s.name AS sink, m.marked_ms AS marked_ms"
             " FROM sluice_markers m JOIN sluice_sinks s"
             " ON (m.sinks >> s.bit) & 1;"
             "INSERT OR IGNORE INTO sluice_meta VALUES ('schema', '1');",
             err, cap) != 0) {
        return -1;
    }
    if (sqlite3_prepare_v2(c->db,
                           "INSERT OR IGNORE INTO sluice_meta "
                           "VALUES ('pipeline', ?1)",
                           -1, &st, NULL) != SQLITE_OK) {
        return db_fail(c, err, cap, "schema");
    }
    sqlite3_bind_text(st, 1, c->info->pipeline, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        return db_fail(c, err, cap, "schema");
    }
    if (sqlite3_prepare_v2(c->db,
                           "SELECT value FROM sluice_meta "
                           "WHERE name = 'pipeline'",
                           -1, &st, NULL) != SQLITE_OK) {
        return db_fail(c, err, cap, "schema");
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW &&
        strcmp((const char *)sqlite3_column_text(st, 0),
               c->info->pipeline) != 0) {
        snprintf(err, cap,
                 "sqlite %s: holds the markers of pipeline `%s`, not `%s`",
                 c->path, (const char *)sqlite3_column_text(st, 0),
                 c->info->pipeline);
        sqlite3_finalize(st);
        db_close(c);
        return -2; /* never works: not a passing trouble */
    }
    sqlite3_finalize(st);
    if ((rc = sink_bits(c, err, cap)) != 0) {
        return rc;
    }
    if (sqlite3_prepare_v2(c->db,
                           "SELECT sinks FROM sluice_markers "
                           "WHERE key = ?1 AND marked_ms >= ?2",
                           -1, &c->lookup, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(c->db,
                           "INSERT INTO sluice_markers VALUES (?1, ?2, ?3) "
                           "ON CONFLICT (key) DO UPDATE SET "
                           "sinks = CASE WHEN marked_ms >= ?4 "
                           "THEN sinks | excluded.sinks "
                           "ELSE excluded.sinks END, "
                           "marked_ms = excluded.marked_ms",
                           -1, &c->mark, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(c->db,
                           "DELETE FROM sluice_markers WHERE key IN "
                           "(SELECT key FROM sluice_markers WHERE key > ?1 "
                           "ORDER BY key LIMIT ?2) AND marked_ms < ?3",
                           -1, &c->prune, NULL) != SQLITE_OK) {
        return db_fail(c, err, cap, "prepare");
    }
    return 0;
}

static int op_lookup(struct sqlite_ctx *c, struct store_op *op,
                     uint64_t oldest)
{
    int rc;
    uint64_t in_file = 0;

    op->sinks = 0;
    sqlite3_reset(c->lookup);
    sqlite3_bind_text(c->lookup, 1, op->key, (int)op->key_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(c->lookup, 2, (sqlite3_int64)oldest);
    while ((rc = sqlite3_step(c->lookup)) == SQLITE_ROW) {
        in_file = (uint64_t)sqlite3_column_int64(c->lookup, 0);
    }
    for (size_t i = 0; in_file != 0 && i < c->info->sink_count; i++) {
        if (in_file & c->bits[i]) {
            op->sinks |= (uint64_t)1 << i;
        }
    }
    return rc == SQLITE_DONE ? 0 : -1;
}

static int op_mark(struct sqlite_ctx *c, struct store_op *op, uint64_t now,
                   uint64_t oldest)
{
    uint64_t in_file = 0;

    for (size_t i = 0; i < c->info->sink_count; i++) {
        if (op->sinks & ((uint64_t)1 << i)) {
            in_file |= c->bits[i];
        }
    }
    sqlite3_reset(c->mark);
    sqlite3_bind_text(c->mark, 1, op->key, (int)op->key_len, SQLITE_STATIC);
    sqlite3_bind_int64(c->mark, 2, (sqlite3_int64)in_file);
    sqlite3_bind_int64(c->mark, 3, (sqlite3_int64)now);
    sqlite3_bind_int64(c->mark, 4, (sqlite3_int64)oldest);
    return sqlite3_step(c->mark) == SQLITE_DONE ? 0 : -1;
}

/* Answers every op of the batches in one transaction. */
static void run_batches(struct sqlite_ctx *c, struct batch *list)
{
    char err[256] = "";
    uint64_t now = wall_ms();
    uint64_t oldest = now > (uint64_t)c->info->ttl_ms
                          ? now - (uint64_t)c->info->ttl_ms
                          : 0;

    if (db_open(c, err, sizeof(err)) != 0 ||
        exec(c, "BEGIN IMMEDIATE", err, sizeof(err)) != 0) {
        goto out;
    }
    for (struct batch *b = list; b != NULL; b = b->next) {
        for (struct store_op *op = b->ops; op != NULL; op = op->next) {
            int rc = op->kind == STORE_LOOKUP
                         ? op_lookup(c, op, oldest)
                         : op_mark(c, op, now, oldest);
            if (rc != 0) {
                db_fail(c, err, sizeof(err),
                        op->kind == STORE_LOOKUP ? "lookup" : "mark");
                goto out;
            }
        }
    }
    if (sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        db_fail(c, err, sizeof(err), "commit");
    }
out:
    for (struct batch *b = list; b != NULL; b = b->next) {
        memcpy(b->err, err, sizeof(b->err));
    }
}

/* Deletes the expired rows of the next PRUNE_CHUNK keys of the walk;
 * returns whether the walk goes on (0: it is back at the start). Errors
 * only postpone it. */
static int prune_once(struct sqlite_ctx *c)
{
    char err[256];
    uint64_t now = wall_ms();
    sqlite3_stmt *next = NULL;
    char *last = NULL;
    int rc;

    if (db_open(c, err, sizeof(err)) != 0) {
        return 0;
    }
    /* The chunk's last key: where the next chunk starts. */
    if (sqlite3_prepare_v2(c->db,
                           "SELECT max(key) FROM (SELECT key FROM "
                           "sluice_markers WHERE key > ?1 ORDER BY key "
                           "LIMIT ?2)",
                           -1, &next, NULL) != SQLITE_OK) {
        db_fail(c, err, sizeof(err), "prune");
        return 0;
    }
    sqlite3_bind_text(next, 1, c->prune_after ? c->prune_after : "", -1,
                      SQLITE_STATIC);
    sqlite3_bind_int(next, 2, PRUNE_CHUNK);
    if (sqlite3_step(next) == SQLITE_ROW &&
        sqlite3_column_type(next, 0) == SQLITE_TEXT) {
        last = strdup((const char *)sqlite3_column_text(next, 0));
    }
    sqlite3_finalize(next);
    sqlite3_reset(c->prune);
    sqlite3_bind_text(c->prune, 1, c->prune_after ? c->prune_after : "", -1,
                      SQLITE_STATIC);
    sqlite3_bind_int(c->prune, 2, PRUNE_CHUNK);
    sqlite3_bind_int64(c->prune, 3,
                       (sqlite3_int64)(now - (uint64_t)c->info->ttl_ms));
    rc = sqlite3_step(c->prune);
    sqlite3_reset(c->prune);
    free(c->prune_after);
    c->prune_after = last;
    if (rc != SQLITE_DONE) {
        db_fail(c, err, sizeof(err), "prune");
        return 0;
    }
    return last != NULL;
}

/* How often expired markers are pruned: a tenth of the ttl, between 1 s
 * and 10 minutes. */
static uint64_t prune_interval(const struct sqlite_ctx *c)
{
    uint64_t t = (uint64_t)c->info->ttl_ms / 10;

    return t < 1000 ? 1000 : t > 600000 ? 600000 : t;
}

static void *thread_main(void *arg)
{
    struct sqlite_ctx *c = arg;

    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (c->todo == NULL && !c->stopping &&
               mono_ms() < c->next_prune_ms) {
            wait_until_ms(&c->wake, &c->lock, c->next_prune_ms);
        }
        if (c->stopping) {
            break;
        }
        /* One chunk of the prune between batches, so that a busy store
         * prunes too, and a batch waits for one chunk at most. */
        uint64_t now = mono_ms();
        if (now >= c->next_prune_ms) {
            pthread_mutex_unlock(&c->lock);
            int more = prune_once(c);
            pthread_mutex_lock(&c->lock);
            c->next_prune_ms = more ? now : now + prune_interval(c);
        }
        if (c->todo == NULL) {
            continue;
        }
        /* Let more queue, up to COMMIT_GAP_MS after the last start. */
        uint64_t start = c->last_commit_ms + COMMIT_GAP_MS;
        while (!c->stopping && (now = mono_ms()) < start) {
            wait_until_ms(&c->gap, &c->lock, start);
        }
        if (c->stopping) {
            break;
        }
        c->last_commit_ms = now;
        struct batch *list = c->todo;
        c->todo = NULL;
        c->todo_tail = &c->todo;
        pthread_mutex_unlock(&c->lock);

        run_batches(c, list);

        pthread_mutex_lock(&c->lock);
        *c->done_tail = list;
        while (*c->done_tail != NULL) {
            c->done_tail = &(*c->done_tail)->next;
        }
        pthread_mutex_unlock(&c->lock);
        uint64_t one = 1;
        ssize_t n = write(c->efd, &one, sizeof(one));
        (void)n; /* a full counter is still readable: nothing is lost */
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    db_close(c);
    free(c->prune_after);
    c->prune_after = NULL;
    return NULL;
}

/* ---- the loop's side ---- */

static void answered(void *arg, unsigned events)
{
    struct sqlite_ctx *c = arg;
    uint64_t count;
    struct batch *list;

    (void)events;
    if (read(c->efd, &count, sizeof(count)) < 0 && errno != EAGAIN) {
        return;
    }
    struct store_op *unqueued;

    pthread_mutex_lock(&c->lock);
    list = c->done;
    c->done = NULL;
    c->done_tail = &c->done;
    unqueued = c->unqueued;
    c->unqueued = NULL;
    pthread_mutex_unlock(&c->lock);
    while (unqueued != NULL && !c->closed) {
        struct store_op *next = unqueued->next;
        c->host->done(c->host->engine, unqueued, "out of memory");
        unqueued = next;
    }
    while (list != NULL) {
        struct batch *b = list;
        list = b->next;
        struct store_op *op = b->ops;
        /* done() may submit more, or close the store. */
        while (op != NULL && !c->closed) {
            struct store_op *next = op->next;
            c->host->done(c->host->engine, op, b->err[0] ? b->err : NULL);
            op = next;
        }
        free(b);
    }
}

static int sqlite_check(const void *ctx, const char **option,
                        struct sl_error *err)
{
    const struct sqlite_ctx *c = ctx;

    if (c->path != NULL && c->path[0] == '\0') {
        *option = "path";
        return sl_error_set(err, "expected a file name");
    }
    return 0;
}

static int sqlite_open(void *ctx, const struct store_info *info,
                       const struct store_host *host, struct sl_error *err)
{
    struct sqlite_ctx *c = ctx;
    char why[256];

    c->info = info;
    c->host = host;
    c->efd = -1;
    c->closed = 0;
    c->stopping = 0;
    if (c->path == NULL &&
        asprintf(&c->path, "%s.markers.db", info->pipeline) < 0) {
        c->path = NULL;
        return sl_error_set(err, "out of memory");
    }
    /* Tried once now so that a file that can never serve (another
     * pipeline's, a directory that does not exist) stops the start; a
     * passing trouble (read-only, disk full) only makes deliveries wait. */
    int rc = db_open(c, why, sizeof(why));
    if (rc == -2 || (rc != 0 && access(c->path, F_OK) != 0 &&
                     errno == ENOENT)) {
        return sl_error_set(err, "%s", why);
    }
    c->next_prune_ms = mono_ms() + prune_interval(c);
    c->todo_tail = &c->todo;
    c->done_tail = &c->done;
    c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->efd < 0) {
        return sl_error_set(err, "eventfd: %s", strerror(errno));
    }
    c->watch = host->loop.watch_new(host->loop.io, c->efd, answered, c);
    if (c->watch == NULL ||
        host->loop.watch_set(host->loop.io, c->watch, CONNECTOR_READABLE)) {
        return sl_error_set(err, "out of memory");
    }
    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->wake, &monotonic);
    pthread_cond_init(&c->gap, &monotonic);
    pthread_condattr_destroy(&monotonic);
    if (pthread_create(&c->thread, NULL, thread_main, c) != 0) {
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->wake);
        pthread_cond_destroy(&c->gap);
        return sl_error_set(err, "cannot start the sqlite thread");
    }
    pthread_setname_np(c->thread, "sluice-sqlite"); /* for top, perf */
    c->started = 1;
    return 0;
}

static void sqlite_submit(void *ctx, struct store_op *ops)
{
    struct sqlite_ctx *c = ctx;
    struct batch *b = calloc(1, sizeof(*b));

    if (b == NULL) {
        /* Failed from the loop's next iteration, never inside submit(). */
        struct store_op *last = ops;
        while (last->next != NULL) {
            last = last->next;
        }
        pthread_mutex_lock(&c->lock);
        last->next = c->unqueued;
        c->unqueued = ops;
        pthread_mutex_unlock(&c->lock);
        uint64_t one = 1;
        ssize_t n = write(c->efd, &one, sizeof(one));
        (void)n;
        return;
    }
    b->ops = ops;
    pthread_mutex_lock(&c->lock);
    *c->todo_tail = b;
    c->todo_tail = &b->next;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->lock);
}

static void free_batches(struct batch *b)
{
    while (b != NULL) {
        struct batch *next = b->next;
        free(b);
        b = next;
    }
}

static void sqlite_close(void *ctx)
{
    struct sqlite_ctx *c = ctx;

    c->closed = 1;
    if (c->started) {
        pthread_mutex_lock(&c->lock);
        c->stopping = 1;
        pthread_cond_signal(&c->wake);
        pthread_cond_signal(&c->gap);
        pthread_mutex_unlock(&c->lock);
        pthread_join(c->thread, NULL);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->wake);
        pthread_cond_destroy(&c->gap);
        c->started = 0;
        free_batches(c->todo);
        free_batches(c->done);
        c->todo = c->done = NULL;
    } else {
        db_close(c);
    }
    if (c->watch != NULL) {
        c->host->loop.watch_free(c->host->loop.io, c->watch);
        c->watch = NULL;
    }
    if (c->efd >= 0) {
        close(c->efd);
        c->efd = -1;
    }
}

const struct store sqlite_store = {
    .name = "sqlite",
    .doc = "An SQLite file on the worker's disk (WAL, every commit "
           "fsynced): for one worker per pipeline, or workers that each "
           "keep their own partitions' markers.",
    .options = sqlite_options,
    .ctx_size = sizeof(struct sqlite_ctx),
    .check = sqlite_check,
    .open = sqlite_open,
    .submit = sqlite_submit,
    .close = sqlite_close,
};
