/* source.h -- the one interface between the engine and where its records
 * come from: `source.type` picks a struct source.
 *
 * A source is a table of callbacks plus the table of its options (the
 * keys of its `source:` section, from which the reference is generated),
 * as a sink connector is. The engine is the same whichever source feeds
 * it: records come in through source_callbacks on the loop thread,
 * grouped in partitions; the engine bounds them (suspend, pause), fans
 * them out to every sink, and hands back what it is done with: commits
 * of a partition's watermark (a Kafka consumer group), and a verdict per
 * record for a source that answers someone (the HTTP publisher answers
 * each request 202 only once its record is in Kafka).
 *
 * Sources: kafka (worker/consumer.c, a consumer group member) and http
 * (worker/http_source.c, the publisher's endpoint). */
#ifndef SLUICE_SOURCE_H
#define SLUICE_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "common.h"
#include "loop.h"
#include "metrics.h"

/* A record. Pointers stay valid until the source's release(handle). */
struct source_record {
    void *handle;
    void *part; /* what on_assign returned for its partition */
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* -1 when none */
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
};

struct source_commit {
    const char *topic;
    int32_t partition;
    int64_t offset; /* the next offset to consume */
};

struct source_callbacks {
    void *arg;
    /* A partition was assigned; returns the engine's state for it (must
     * not be NULL) which every record of it carries. */
    void *(*on_assign)(void *arg, const char *topic, int32_t partition);
    /* Partitions are being taken away. The engine lets their in-flight
     * work finish (bounded), then fills offsets[i] with what to commit
     * (-1: nothing) and forgets them. lost: another member may own them
     * already, so nothing will be committed. */
    void (*on_revoke)(void *arg, void **parts, size_t count, int lost,
                      int64_t *offsets);
    void (*on_record)(void *arg, const struct source_record *record);
    /* The source acknowledged a commit of offset for part. */
    void (*on_committed)(void *arg, void *part, int64_t offset);
    /* A fatal source error: the worker must stop. */
    void (*on_fatal)(void *arg, const char *reason);
};

/* What became of a record at the pipeline's acknowledging sink (see
 * ack_sink), for a source that answers its producer. */
enum source_fate {
    SOURCE_DELIVERED, /* every message of it reached the sink */
    SOURCE_DROPPED,   /* the pipeline transform dropped it */
    SOURCE_BUSY,      /* the sink refused it at once: back-pressure */
    SOURCE_UNAVAILABLE, /* the sink failed transiently: try again */
    SOURCE_REJECTED,  /* permanent: the same record fails the same way */
};

struct source_verdict {
    enum source_fate fate;
    const char *reason; /* why it failed; NULL when it did not */
};

/* What a source went through, for metrics. Counts only grow. */
struct source_stats {
    uint64_t assigns, revokes; /* rebalance events of each kind */
    uint64_t commits, commit_failures; /* acknowledged, failed requests */
    struct metrics_histogram commit_time;  /* commit to acknowledgement */
    struct metrics_histogram revoke_time;  /* a revoke's drain and commit */
    int assigned;                          /* an assignment ever came */
};

struct source {
    const char *name; /* the value of source.type */
    const char *doc;
    const struct opt_spec *options; /* its keys of the source section */
    /* Optional: checks cfg's source section further for `validate`,
     * without connecting anywhere. 0 or -1 (errors in errs). */
    int (*check)(const struct cfg *cfg, struct cfg_errors *errs);
    /* Starts the source on loop; records come through cb. bootstrap: the
     * Kafka brokers to use (the embedded cluster's); NULL for sources
     * without. Returns its handle, or NULL with err filled. */
    void *(*open)(const struct cfg *cfg, const char *bootstrap, loop_t *loop,
                  const struct source_callbacks *cb, struct sl_error *err);
    /* Stops (1) or restarts (0) handing out records: the lane is at its
     * bound. What arrives meanwhile waits, within the source's bounds. */
    void (*suspend)(void *src, int suspended);
    void (*pause)(void *src, const char *topic, int32_t partition);
    void (*resume)(void *src, const char *topic, int32_t partition);
    /* Commits offsets (sync: waits); acknowledged ones are reported
     * through on_committed. 0 or -1 (logged). */
    int (*commit)(void *src, const struct source_commit *offsets,
                  size_t count, int sync);
    /* A record's headers (up to cap; returns how many), one header by
     * name (NULL: absent), its key and value: valid until release. */
    size_t (*headers)(void *handle, struct sl_header *out, size_t cap);
    const void *(*header_find)(void *handle, const char *name, size_t *len);
    void (*payload)(void *handle, const void **key, size_t *key_len,
                    const void **value, size_t *value_len);
    /* Optional: the record's fate at the acknowledging sink, at most once
     * per record and before its release. */
    void (*settle)(void *handle, const struct source_verdict *verdict);
    /* The engine is done with the record (a record never settled: it
     * was abandoned, by a stop or a revoke). */
    void (*release)(void *handle);
    /* Optional: the worker is stopping: take no new records. */
    void (*stopping)(void *src);
    /* Gives up every partition through on_revoke, then stops. Once, with
     * the loop alive. */
    void (*close)(void *src);
    /* Frees it (closing first if needed); every record released. */
    void (*destroy)(void *src);
    /* Whether it ever worked (reached its cluster, listened), and why it
     * is not usable now (NULL: it is). */
    int (*reached)(const void *src);
    const char *(*problem)(const void *src);
    const struct source_stats *(*stats)(const void *src);
    /* Optional: a partition's high watermark as last seen (-1: unknown). */
    int64_t (*high_watermark)(void *src, const char *topic,
                              int32_t partition);
    /* Optional: the group's offset and the end of a partition (blocking,
     * for bounded runs: a DLQ replay). 0 or -1. */
    int (*range)(void *src, const char *topic, int32_t partition,
                 int64_t *start, int64_t *end);
    /* Optional: the sink whose outcome settles a record (see settle):
     * its index in cfg->sinks, or -1. That sink's failures are final at
     * once: the producer, told so, is the one that tries again. */
    int (*ack_sink)(const struct cfg *cfg);
    /* Optional: where it is fed from, for the start-up log line. */
    void (*describe)(const void *src, char *out, size_t cap);
};

extern const struct source kafka_source;
extern const struct source http_source;

/* Every source, NULL-terminated (the reference is generated from it). */
extern const struct source *const source_types[];

/* The source of cfg->source_type. */
const struct source *source_of(const struct cfg *cfg);

#endif
