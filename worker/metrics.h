/* metrics.h -- the lane's numbers, published for the admin thread.
 *
 * The lane counts in its own structs, shared with no one. Once per
 * interval (and when readiness changes) it copies them into a snapshot
 * and publishes that on a board; the admin thread renders the latest
 * snapshot as Prometheus text or /status JSON and never reads lane
 * state. One table (metric_defs) names every metric, its type, labels
 * and help: it drives the exposition and the generated reference.
 *
 * Histograms are per lane and unlocked: the lane observes into its own
 * and copies them whole into the snapshot. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- histograms ---- */

#define METRICS_BUCKETS 12 /* finite upper bounds; +Inf is implied */

enum metrics_scale {
    METRICS_REQUEST,  /* 5 ms .. 30 s: HTTP requests, rebalances, commits */
    METRICS_TRANSFORM /* 10 µs .. 1 s: a Lua transform's call */
};

struct metrics_histogram {
    uint64_t counts[METRICS_BUCKETS + 1]; /* per bucket, not cumulative;
                                             the last: over every bound */
    uint64_t sum_ns;
    uint64_t count;
};

/* Counts one observation of ns nanoseconds. */
void metrics_observe(struct metrics_histogram *h, enum metrics_scale scale,
                     uint64_t ns);

/* Monotonic nanoseconds, for timing what metrics_observe counts. */
uint64_t metrics_now_ns(void);

/* ---- a snapshot ---- */

enum metrics_sink_state {
    METRICS_SINK_OK,
    METRICS_SINK_RETRYING, /* failures since its last success */
    METRICS_SINK_BREAKER_OPEN,
    METRICS_SINK_PAUSED,
    METRICS_SINK_PARKING
};

struct metrics_sink {
    const char *name; /* the pipeline's; outlives every snapshot */
    double delivered, failed, retried, dead_lettered, skipped_dedupe,
        skipped_transform, applied, parked;
    double in_flight, pending, oldest_age_s;
    double breaker;    /* 0 closed, 1 half-open, 2 open */
    double paused;     /* 0 or 1 */
    enum metrics_sink_state state;
    struct metrics_histogram latency;
    char last_error[256]; /* /status only; never a secret */
};

struct metrics_partition {
    char topic[250];
    int32_t partition;
    double committed, consumed, high_watermark, lag; /* -1: unknown */
};

struct metrics_snapshot {
    /* Pipeline-wide. */
    double consumed, transform_errors, in_flight, paused, dlq_written,
        rebalances_assign, rebalances_revoke, commits, commit_failures,
        store_errors, spans_exported, spans_dropped, ready;
    struct metrics_histogram transform, rebalance, commit;
    uint64_t taken_unix_ms;
    const char *pipeline; /* outlives every snapshot */
    const char *group;
    char not_ready[128]; /* why /readyz says 503; "" when ready */
    int stopping;
    size_t sink_count;
    struct metrics_sink *sinks;
    size_t partition_count;
    struct metrics_partition *partitions;
};

/* A snapshot with room for sinks and partitions, zeroed; NULL when out of
 * memory. Freed by metrics_board_publish's board, or metrics_free. */
struct metrics_snapshot *metrics_new(size_t sinks, size_t partitions);
void metrics_free(struct metrics_snapshot *s);

/* ---- rendering (any thread) ---- */

/* The Prometheus text exposition (version 0.0.4) of s. */
void metrics_write_prometheus(const struct metrics_snapshot *s, FILE *out);
/* The /status document of s: JSON, one object. */
void metrics_write_status(const struct metrics_snapshot *s, FILE *out);
/* The metrics reference (Markdown), from the same table. */
void metrics_write_reference(FILE *out);

/* ---- the board: the lane publishes, the admin thread reads ---- */

typedef struct metrics_board metrics_board_t;

metrics_board_t *metrics_board_new(void);
/* Frees the board and its latest snapshot; readers must have released
 * theirs. NULL is a no-op. */
void metrics_board_free(metrics_board_t *b);
/* Makes s (owned by the board from now) the latest; the previous one is
 * freed when its last reader releases it. */
void metrics_board_publish(metrics_board_t *b, struct metrics_snapshot *s);
/* The latest snapshot, held until metrics_board_release; NULL before
 * the first publish. */
struct metrics_snapshot *metrics_board_acquire(metrics_board_t *b);
void metrics_board_release(metrics_board_t *b, struct metrics_snapshot *s);
/* The lane's heartbeat: a monotonic ms it stores each tick, that the
 * admin thread reads (/healthz). */
void metrics_board_beat(metrics_board_t *b, uint64_t now_ms);
uint64_t metrics_board_last_beat(const metrics_board_t *b);

#endif
