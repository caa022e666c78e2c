/* outcomes.h -- the outcome log: one NDJSON line per terminal per-sink
 * outcome (docs/outcomes.md is the format).
 *
 * Lines are encoded into a buffer on the loop thread and written with
 * write(2) when it fills and by outcomes_flush(), which the engine calls
 * before every offset commit: a record's lines reach the file (the page
 * cache, so they survive a kill -9) before its offset is committed. A file
 * that cannot be written is not a reason to stop deliveries: the buffer is
 * kept up to OUTCOMES_BUFFER_MAX, then lines are dropped and counted. */
#ifndef SLUICE_OUTCOMES_H
#define SLUICE_OUTCOMES_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define OUTCOMES_BUFFER_MAX ((size_t)8 << 20)
/* A larger body is recorded by its hash alone. */
#define OUTCOMES_BODY_MAX ((size_t)1 << 20)

/* The outcome kinds of docs/outcomes.md. */
#define OUTCOME_DELIVERED "delivered"
#define OUTCOME_APPLIED "applied"
#define OUTCOME_ALREADY_HANDLED "already_handled"
#define OUTCOME_DEAD_LETTERED "dead_lettered"
#define OUTCOME_SHADOW "shadow"

typedef struct outcomes outcomes_t;

/* One line's fields; strings are NUL-terminated unless a length is given,
 * and NULL leaves the field out. Borrowed for the call only. */
struct outcome {
    uint64_t wall_ms; /* when it became terminal, ms since the epoch */
    const char *pipeline;
    const char *sink;
    const char *key; /* the dedupe key */
    size_t key_len;
    const char *kind; /* OUTCOME_* */
    const char *method;
    const char *path;
    int status; /* < 0: left out */
    uint32_t attempts; /* 0: left out */
    const void *body;  /* NULL: nothing was sent (no hash, no body) */
    size_t body_len;
    const char *topic; /* NULL: no source */
    int32_t partition;
    int64_t offset;
    const char *error;
};

/* Opens (creates, appends to) path; bodies: also write the body sent.
 * NULL with err filled. Free with outcomes_close(). */
outcomes_t *outcomes_open(const char *path, int bodies, struct sl_error *err);

/* The same log as records of topic on brokers (one line a record, keyed
 * by the dedupe key; idempotent producer, acks=all). Lines are produced
 * as they are written and not waited for: a line the brokers never
 * acknowledge counts as dropped, and one still queued at a crash is
 * lost (reconcile then reports the pair missing, never a false match).
 * NULL with err filled. */
outcomes_t *outcomes_open_topic(const char *brokers, const char *topic,
                                int bodies, struct sl_error *err);

/* Encodes one line into the buffer, writing the buffer out when it holds
 * 64 KiB or more. Returns 0, or -1 when the line was dropped (the buffer
 * is full because the file cannot be written). */
int outcomes_write(outcomes_t *o, const struct outcome *line);

/* The log cfg->outcomes asks for (a file, or a topic): NULL with err. */
struct cfg;
outcomes_t *outcomes_new(const struct cfg *cfg, struct sl_error *err);

/* Where the log goes, for messages: the file, or "kafka topic T". */
const char *outcomes_where(const outcomes_t *o);

/* Writes out everything buffered (a topic's: serves its delivery
 * reports). 0, or -1 with err filled (what is not written stays buffered
 * for the next call). */
int outcomes_flush(outcomes_t *o, struct sl_error *err);

/* Lines written to the file, and lines dropped. */
uint64_t outcomes_written(const outcomes_t *o);
uint64_t outcomes_dropped(const outcomes_t *o);

/* Flushes (errors are dropped lines then), closes and frees; NULL is a
 * no-op. */
void outcomes_close(outcomes_t *o);

/* Writes the 64 lowercase hex digits of SHA-256(data) and a NUL. */
void outcomes_sha256_hex(const void *data, size_t len, char out[65]);

#endif
