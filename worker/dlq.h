/* dlq.h -- the dead-letter queue: its record format and its producer.
 *
 * A DLQ record is the original record's key, value and headers, followed
 * by context headers whose names start with DLQ_HEADER_PREFIX (a record's
 * own headers with that prefix are dropped when it is dead-lettered, so
 * the context is never ambiguous). Every value is text; times are
 * milliseconds since the Unix epoch in decimal. docs/dlq.md documents the
 * same list for users.
 *
 * The producer is one more user of a lane's loop: librdkafka's delivery
 * reports arrive through its main queue's io-event fd, and each write's
 * outcome is handed back, on the loop thread, through dlq_done_fn. The
 * engine decides what a failed write means (retry later, never drop). */
#ifndef SLUICE_DLQ_H
#define SLUICE_DLQ_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "common.h"
#include "loop.h"

#define DLQ_HEADER_PREFIX "sluice."
#define DLQ_H_PIPELINE "sluice.pipeline"
#define DLQ_H_SINK "sluice.sink"   /* DLQ_SINK_ALL for the transform stage */
#define DLQ_H_STAGE "sluice.stage" /* transform, shape or sink */
#define DLQ_H_CLASS "sluice.error.class"   /* see DLQ_CLASS_* */
#define DLQ_H_REASON "sluice.error.reason" /* one line of text */
#define DLQ_H_STATUS "sluice.http.status"  /* absent: no answer */
#define DLQ_H_BODY "sluice.http.body" /* the answer's first 1 KiB */
#define DLQ_H_ATTEMPTS "sluice.attempts"
#define DLQ_H_FIRST_MS "sluice.attempt.first.ms"
#define DLQ_H_LAST_MS "sluice.attempt.last.ms"
#define DLQ_H_TOPIC "sluice.source.topic"
#define DLQ_H_PARTITION "sluice.source.partition"
#define DLQ_H_OFFSET "sluice.source.offset"
#define DLQ_H_TIMESTAMP "sluice.source.timestamp.ms" /* absent: none */
#define DLQ_H_DEDUPE "sluice.dedupe.key"
#define DLQ_H_WORKER "sluice.worker.id"
#define DLQ_H_REPLAYS "sluice.replay.count" /* failed replays so far */
/* Present when the value was cut to fit: "<original length in bytes>". */
#define DLQ_H_TRUNCATED "sluice.truncated"

#define DLQ_SINK_ALL "*"

#define DLQ_STAGE_TRANSFORM "transform" /* the pipeline transform raised */
#define DLQ_STAGE_SHAPE "shape"         /* a sink's transform raised */
#define DLQ_STAGE_SINK "sink"           /* the sink failed for good */
#define DLQ_STAGE_PARK "park" /* a retry topic's record: not a failure */
#define DLQ_STAGE_DEDUPE "dedupe" /* no dedupe key (dedupe.missing) */

#define DLQ_CLASS_REJECTED "rejected"     /* an answer classed permanent */
#define DLQ_CLASS_GAVE_UP "gave_up"       /* the retry script gave up */
#define DLQ_CLASS_MAX_ATTEMPTS "max_attempts" /* retry_max_attempts */
#define DLQ_CLASS_DEADLINE "deadline"     /* retry_deadline */
#define DLQ_CLASS_TRANSFORM "transform_error"
#define DLQ_CLASS_SHAPE "shape_error"
#define DLQ_CLASS_PARKED "parked"
#define DLQ_CLASS_NO_KEY "no_dedupe_key"
/* The acknowledging sink of a source that answers its producer (the http
 * source's kafka sink) failed transiently: the producer was told, and it
 * is the one that tries again. Only in outcome lines: no DLQ there. */
#define DLQ_CLASS_UNAVAILABLE "unavailable"
/* ... refused at once (the producer's queue is full): back-pressure. */
#define DLQ_CLASS_BUSY "busy"

#define DLQ_BODY_MAX 1024

/* ---- the producer ---- */

typedef struct dlq dlq_t;

/* A write's outcome: err is NULL when Kafka acknowledged it (at partition
 * and offset), else why it failed (the write is then the caller's to
 * retry). */
typedef void (*dlq_done_fn)(void *arg, void *token, const char *err,
                            int32_t partition, int64_t offset);

/* Creates the producer for cfg->dlq (bootstrap: the brokers to use, the
 * embedded cluster's when dlq.brokers is `embedded`) on loop. NULL with
 * err filled. */
dlq_t *dlq_new(const struct cfg *cfg, const char *bootstrap, loop_t *loop,
               dlq_done_fn done, void *arg, struct sl_error *err);

/* Checks cfg->dlq.properties against librdkafka without connecting;
 * reports into errs. Returns 0 or -1. */
int dlq_check_config(const struct cfg *cfg, struct cfg_errors *errs);

/* Creates the topics (each named once) that do not exist, with
 * cfg->dlq.partitions partitions. With wait, waits up to timeout_ms for
 * the answer (a consumer about to subscribe needs its topic); without,
 * the answer is logged when it comes. Failures are logged, not fatal: a
 * write to a missing topic fails and is retried. */
void dlq_ensure_topics(dlq_t *d, const char *const *topics, size_t count,
                       int timeout_ms, int wait);

struct dlq_record {
    const char *topic;
    const void *key; /* NULL: none */
    size_t key_len;
    const void *value; /* NULL: none */
    size_t value_len;
    const struct sl_header *headers; /* original, then context */
    size_t header_count;
    int64_t timestamp_ms; /* 0: now */
};

/* Starts a write; its outcome comes later through done(token). Copies
 * everything. A value too large for the producer is cut (with a
 * DLQ_H_TRUNCATED header) rather than lost. Returns 0, or -1 with err
 * filled when it could not even be queued (then no done() follows). */
int dlq_write(dlq_t *d, const struct dlq_record *r, void *token,
              struct sl_error *err);

/* Writes not yet reported. */
size_t dlq_pending(const dlq_t *d);

/* Frees the producer. Writes not yet reported are abandoned and their
 * done() never runs (the records stay uncommitted upstream: the engine
 * waits for dlq_pending() to reach 0 in its drain first).
 * dlq_destroy(NULL) is a no-op. */
void dlq_destroy(dlq_t *d);

/* ---- replay (worker/engine.c) ---- */

struct dlq_replay_options {
    const char *sink;   /* required: replays go to this sink only */
    const char *reason; /* NULL, or an error class or HTTP status */
    int64_t since_ms;   /* 0, or only records written at or after it */
    int64_t limit;      /* 0: no limit */
    int force;          /* replay records past dlq.max_replays too */
    int dry_run;        /* print what would be replayed; send nothing */
    int progress;       /* a progress line on stderr each second */
    const char *brokers; /* NULL: dlq.brokers */
};

/* Replays the selected DLQ records of sink o->sink (see docs/dlq.md).
 * Prints progress to stderr and a summary line ("replayed N, failed
 * again N, skipped N") to stdout. Returns 0 when every selected record
 * was replayed, 1 when some failed again or on a runtime error, 2 on bad
 * usage (unknown sink). */
int dlq_replay(const struct cfg *cfg, const struct dlq_replay_options *o);

#endif
