/* consumer.h -- the Kafka consumer-group member of one lane (librdkafka).
 *
 * The kafka source (kafka_source in source.h; this header adds what only
 * a Kafka consumer offers, which the engine's retry-topic drains use).
 * Wraps the high-level consumer so that the rest of the runtime never
 * sees librdkafka: records arrive through a callback on the loop thread,
 * partitions are paused and resumed by the engine's bounds, and commits
 * carry explicit offsets (auto commit and auto offset store are off). */
#ifndef SLUICE_CONSUMER_H
#define SLUICE_CONSUMER_H

#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "common.h"
#include "loop.h"
#include "metrics.h"
#include "source.h"

typedef struct consumer consumer_t;

/* Creates the consumer from cfg->source (bootstrap: the brokers to use,
 * e.g. the embedded cluster's), subscribes, and watches its queue on
 * loop. Returns NULL with err filled. Free with consumer_destroy(). */
consumer_t *consumer_new(const struct cfg *cfg, const char *bootstrap,
                         loop_t *loop, const struct source_callbacks *cb,
                         struct sl_error *err);

/* Checks cfg->source.properties against librdkafka's names and values
 * without connecting; reports into errs. Returns 0 or -1. */
int consumer_check_config(const struct cfg *cfg, struct cfg_errors *errs);

/* Stops (1) or restarts (0) handing out records; while suspended,
 * librdkafka keeps the session alive and queues what it fetched. */
void consumer_suspend(consumer_t *c, int suspended);

void consumer_pause(consumer_t *c, const char *topic, int32_t partition);
void consumer_resume(consumer_t *c, const char *topic, int32_t partition);

/* Commits offsets; sync waits for the broker. Acknowledged offsets are
 * reported through on_committed (for async commits, from a later poll).
 * Returns 0 or -1 (logged). */
int consumer_commit(consumer_t *c, const struct source_commit *offsets,
                    size_t count, int sync);

/* Fills out with up to cap headers of the record behind handle; returns
 * how many. Pointers stay valid until consumer_release(handle). */
size_t consumer_headers(void *handle, struct sl_header *out,
                        size_t cap);

/* Looks up one header's value by name; NULL when absent. */
const void *consumer_header_find(void *handle, const char *name,
                                 size_t *len);

/* The key (NULL: none) and value of the record behind handle; valid until
 * consumer_release(handle). */
void consumer_payload(void *handle, const void **key, size_t *key_len,
                      const void **value, size_t *value_len);

/* Where partition stands for the group: *start the committed offset (the
 * low watermark when none), *end the high watermark. Blocks (up to 10 s):
 * for bounded runs such as a DLQ replay, which stop at the end. 0 or -1. */
int consumer_range(consumer_t *c, const char *topic, int32_t partition,
                   int64_t *start, int64_t *end);

/* For each partition of topic (at most cap), what the group has not
 * consumed: ends[i] the high watermark, starts[i] the committed offset (the
 * low watermark when none). Blocks up to timeout_ms: for start-up. Returns
 * the partition count, 0 when the topic does not exist, -1 on an error. */
int consumer_backlog(consumer_t *c, const char *topic, int64_t *starts,
                     int64_t *ends, int cap, int timeout_ms);

/* Frees a record that on_record handed out. */
void consumer_release(void *handle);

/* Leaves the group: revokes everything through on_revoke, then closes.
 * Call once, with the loop still alive. */
void consumer_close(consumer_t *c);

/* Frees the consumer (closing it first if needed); NULL is a no-op.
 * Every record must have been released. */
void consumer_destroy(consumer_t *c);

/* Whether the cluster has ever answered (the probe, an assignment or a
 * record): a worker that never got that far failed to start. */
int consumer_reached(const consumer_t *c);

/* Why the source is not usable now ("cannot reach the brokers ...",
 * "topic ... does not exist ..."), or NULL when it is. */
const char *consumer_problem(const consumer_t *c);

const struct source_stats *consumer_get_stats(const consumer_t *c);

/* The high watermark of a partition as of the last fetch (no request:
 * librdkafka's cached value); -1 when not known yet. */
int64_t consumer_high_watermark(consumer_t *c, const char *topic,
                                int32_t partition);

/* librdkafka's version string, for --version. */
const char *consumer_library_version(void);

/* ---- embedded cluster (worker/embedded.c) ---- */

typedef struct embedded embedded_t;

/* Starts an in-memory Kafka cluster of one broker on loopback, creating
 * each topic of cfg->source with embedded_partitions partitions. */
embedded_t *embedded_start(const struct cfg *cfg, struct sl_error *err);
const char *embedded_bootstrap(const embedded_t *e);
void embedded_stop(embedded_t *e);

#endif
