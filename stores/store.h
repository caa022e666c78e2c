/* store.h -- the interface between the engine and a marker store.
 *
 * A marker says "sink S of pipeline P already applied the message whose
 * dedupe key is K". The engine looks a message's markers up before its
 * deliveries start (a marked sink is skipped) and writes a sink's marker
 * after that sink's success, before the offset commit that passes the
 * message. A store is a table of callbacks plus a table of its options,
 * like a connector (connector.h): a new store is a new file and one line
 * in store_find(), not a change to the engine.
 *
 * The engine hands a store batches of ops; the store answers each op
 * exactly once, on the loop thread, never from inside submit(), in the
 * order of submission. A lookup sees every mark answered before it and
 * the marks before it in its own batch. A store never retries and never
 * gives up: an op it cannot answer completes with an error, and the
 * engine decides (it submits it again later). done() may call submit()
 * and close(). The process ignores SIGPIPE (the engine sets it), so a
 * store may write to sockets with write(). */
#ifndef SLUICE_STORE_H
#define SLUICE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "connector.h"

/* Sinks of one pipeline a store tracks: a lookup answers with a bit per
 * sink. cfg refuses more sinks when markers are on. */
#define STORE_MAX_SINKS 64

enum store_op_kind {
    STORE_LOOKUP, /* which sinks have a marker for key: fills `marked` */
    STORE_MARK,   /* writes the markers of `sinks` for key; done once
                     durable */
};

/* Owned by the engine (embedded in its msgs and deliveries); the store
 * holds it from submit() until it calls done(). */
struct store_op {
    enum store_op_kind kind;
    const char *key; /* NUL-terminated dedupe key, valid until done() */
    size_t key_len;
    /* STORE_MARK: the sinks to mark, bit i = sink i of store_info (the
     * engine gathers a message's sinks that succeeded close together
     * into one op). STORE_LOOKUP: the answer, bit i set = sink i has a
     * marker. */
    uint64_t sinks;
    struct store_op *next; /* a batch's link; the store's while it holds it */
};

struct store_info {
    const char *pipeline;
    const char *const *sinks; /* names, by index */
    size_t sink_count;        /* 1 to STORE_MAX_SINKS */
    int64_t ttl_ms;           /* how long a marker lives; > 0 */
};

struct store_host {
    /* The lane's loop: watch_*, timer_*, now_ms and io as a connector
     * gets them (the rest of it is unused). */
    struct connector_host loop;
    /* Called once per submitted op, on the loop thread, never inside
     * submit(). err NULL: answered (a lookup's `sinks` is filled; a
     * mark is durable: committed with fsync, or acknowledged by the
     * server). Else the store could not, err says why (valid during the
     * call only), and a lookup's `sinks` means nothing. */
    void (*done)(void *engine, struct store_op *op, const char *err);
    void *engine;
};

struct store {
    const char *name;
    const char *doc;
    const struct opt_spec *options; /* the keys it adds to `dedupe:` */
    size_t ctx_size; /* zeroed, filled from options before open() */
    /* Optional: checks the option values together at load time (also
     * `sluice validate`), touching nothing. 0, or -1 with err filled and
     * *option naming the culprit. */
    int (*check)(const void *ctx, const char **option, struct sl_error *err);
    /* Prepares the store; info and host stay valid until close(). It
     * may connect lazily: a store that is down now answers ops with
     * errors until it is back. -1 with err only when it can never work
     * (bad options, out of memory). */
    int (*open)(void *ctx, const struct store_info *info,
                const struct store_host *host, struct sl_error *err);
    /* Takes the ops of the list batch (linked by next) in order. Lookups
     * and marks may be mixed; ops of one batch should cost one round
     * trip or one transaction, not one each. */
    void (*submit)(void *ctx, struct store_op *batch);
    /* Frees everything open() made. Ops not answered yet are abandoned:
     * done() never runs after close(). Option values are not freed
     * (cfg_free does). */
    void (*close)(void *ctx);
};

extern const struct store sqlite_store;
extern const struct store redis_store;

/* Every store, NULL-terminated (for docs); the store called name, or
 * NULL. */
extern const struct store *const store_all[];
const struct store *store_find(const char *name);

#endif
