/* metrics.c -- the metric table, snapshots, their rendering and the
 * board between the lane and the admin thread. */
#include "metrics.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- histograms ---- */

#define MS 1000000ull
#define US 1000ull

static const uint64_t bounds_ns[2][METRICS_BUCKETS] = {
    [METRICS_REQUEST] = {5 * MS, 10 * MS, 25 * MS, 50 * MS, 100 * MS,
                         250 * MS, 500 * MS, 1000 * MS, 2500 * MS,
                         5000 * MS, 10000 * MS, 30000 * MS},
    [METRICS_TRANSFORM] = {10 * US, 25 * US, 50 * US, 100 * US, 250 * US,
                           500 * US, 1 * MS, 2500 * US, 5 * MS, 10 * MS,
                           100 * MS, 1000 * MS},
};

void metrics_observe(struct metrics_histogram *h, enum metrics_scale scale,
                     uint64_t ns)
{
    const uint64_t *b = bounds_ns[scale];
    size_t i = 0;

    while (i < METRICS_BUCKETS && ns > b[i]) {
        i++;
    }
    h->counts[i]++;
    h->sum_ns += ns;
    h->count++;
}

uint64_t metrics_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- the table ---- */

enum metric_type { M_COUNTER, M_GAUGE, M_HISTOGRAM };
enum metric_scope { M_PIPELINE, M_SINK, M_PARTITION };

struct metric_def {
    const char *name;
    enum metric_type type;
    enum metric_scope scope;
    const char *labels; /* constant labels of this series, or NULL */
    size_t offset;      /* of its double or histogram in the scope's struct */
    enum metrics_scale scale;
    const char *help;   /* NULL: a further series of the name above */
};

#define P(field) M_PIPELINE, NULL, offsetof(struct metrics_snapshot, field)
#define S(field) M_SINK, NULL, offsetof(struct metrics_sink, field)
#define T(field) M_PARTITION, NULL, offsetof(struct metrics_partition, field)

static const struct metric_def metric_defs[] = {
    {"sluice_records_consumed_total", M_COUNTER, P(consumed), 0,
     "Records read from the source topics (not counting retry topics)."},
    {"sluice_transform_errors_total", M_COUNTER, P(transform_errors), 0,
     "Records the pipeline transform failed on (sent to the dead-letter "
     "queue)."},
    {"sluice_transform_duration_seconds", M_HISTOGRAM, P(transform),
     METRICS_TRANSFORM, "Time of one call of the pipeline transform."},
    {"sluice_in_flight_messages", M_GAUGE, P(in_flight), 0,
     "Records consumed and not yet terminal at every sink."},
    {"sluice_paused", M_GAUGE, P(paused), 0,
     "1 while the whole pipeline is paused through the admin API."},
    {"sluice_ready", M_GAUGE, P(ready), 0,
     "1 while /readyz answers 200."},
    {"sluice_dlq_records_written_total", M_COUNTER, P(dlq_written), 0,
     "Records written to dead-letter topics (acknowledged by Kafka)."},
    {"sluice_rebalances_total", M_COUNTER, M_PIPELINE, "kind=\"assign\"",
     offsetof(struct metrics_snapshot, rebalances_assign), 0,
     "Partition assignments and revocations this worker went through."},
    {"sluice_rebalances_total", M_COUNTER, M_PIPELINE, "kind=\"revoke\"",
     offsetof(struct metrics_snapshot, rebalances_revoke), 0, NULL},
    {"sluice_rebalance_duration_seconds", M_HISTOGRAM, P(rebalance),
     METRICS_REQUEST,
     "Time a revocation took: draining what was in flight, then the "
     "commit."},
    {"sluice_commits_total", M_COUNTER, P(commits), 0,
     "Offset commits the broker acknowledged."},
    {"sluice_commit_failures_total", M_COUNTER, P(commit_failures), 0,
     "Offset commits that failed (they are sent again)."},
    {"sluice_commit_duration_seconds", M_HISTOGRAM, P(commit),
     METRICS_REQUEST, "Time from an offset commit to its acknowledgement."},
    {"sluice_marker_store_errors_total", M_COUNTER, P(store_errors), 0,
     "Failed operations of the dedupe marker store (retried)."},
    {"sluice_spans_exported_total", M_COUNTER, P(spans_exported), 0,
     "Spans the OTLP collector accepted."},
    {"sluice_spans_dropped_total", M_COUNTER, P(spans_dropped), 0,
     "Spans dropped: the export buffer was full, or an export failed."},

    {"sluice_sink_delivered_total", M_COUNTER, S(delivered), 0,
     "Messages a sink took (a success, or an answer meaning already "
     "applied)."},
    {"sluice_sink_failed_total", M_COUNTER, S(failed), 0,
     "Failed attempts at a sink."},
    {"sluice_sink_retried_total", M_COUNTER, S(retried), 0,
     "Attempts that were retries."},
    {"sluice_sink_dead_lettered_total", M_COUNTER, S(dead_lettered), 0,
     "Messages a sink's dead-letter queue took."},
    {"sluice_sink_skipped_total", M_COUNTER, M_SINK, "reason=\"dedupe\"",
     offsetof(struct metrics_sink, skipped_dedupe), 0,
     "Messages not sent to a sink: reason=\"dedupe\", its marker says it "
     "was handled already; reason=\"transform\", its transform skipped "
     "it."},
    {"sluice_sink_skipped_total", M_COUNTER, M_SINK, "reason=\"transform\"",
     offsetof(struct metrics_sink, skipped_transform), 0, NULL},
    {"sluice_sink_applied_total", M_COUNTER, S(applied), 0,
     "Answers meaning already applied (applied_on, default 409), counted "
     "as delivered."},
    {"sluice_sink_parked_total", M_COUNTER, S(parked), 0,
     "Messages parked in the sink's retry topic."},
    {"sluice_sink_in_flight_requests", M_GAUGE, S(in_flight), 0,
     "Requests a sink has open."},
    {"sluice_sink_pending_messages", M_GAUGE, S(pending), 0,
     "Messages consumed and not yet terminal at a sink."},
    {"sluice_sink_oldest_pending_age_seconds", M_GAUGE, S(oldest_age_s), 0,
     "Time since the oldest message not yet terminal at a sink was "
     "consumed; 0 when there is none. How far behind the sink is."},
    {"sluice_sink_breaker_state", M_GAUGE, S(breaker), 0,
     "A sink's circuit breaker: 0 closed, 1 half-open, 2 open."},
    {"sluice_sink_paused", M_GAUGE, S(paused), 0,
     "1 while a sink is paused through the admin API."},
    {"sluice_sink_request_duration_seconds", M_HISTOGRAM, S(latency),
     METRICS_REQUEST, "Time of one request to a sink, until its answer."},

    {"sluice_partition_committed_offset", M_GAUGE, T(committed), 0,
     "The last offset committed for a partition (the next to read)."},
    {"sluice_partition_consumed_offset", M_GAUGE, T(consumed), 0,
     "The offset after the last record read from a partition."},
    {"sluice_partition_high_watermark_offset", M_GAUGE, T(high_watermark),
     0, "A partition's high watermark, as of the last fetch."},
    {"sluice_partition_lag_records", M_GAUGE, T(lag), 0,
     "Records of a partition not yet committed: high watermark minus "
     "committed offset."},
};

#define DEF_COUNT (sizeof(metric_defs) / sizeof(metric_defs[0]))

static const char *const type_names[] = {"counter", "gauge", "histogram"};

/* ---- snapshots ---- */

struct held {
    int refs; /* under the board's lock */
    struct metrics_snapshot s;
};

#define HELD(snap)                                                             \
    ((struct held *)(void *)((char *)(snap) - offsetof(struct held, s)))

struct metrics_snapshot *metrics_new(size_t sinks, size_t partitions)
{
    struct held *h = calloc(1, sizeof(*h));

    if (h == NULL) {
        return NULL;
    }
    h->s.sinks = calloc(sinks ? sinks : 1, sizeof(*h->s.sinks));
    h->s.partitions =
        calloc(partitions ? partitions : 1, sizeof(*h->s.partitions));
    if (h->s.sinks == NULL || h->s.partitions == NULL) {
        metrics_free(&h->s);
        return NULL;
    }
    h->s.sink_count = sinks;
    h->s.partition_count = partitions;
    return &h->s;
}

void metrics_free(struct metrics_snapshot *s)
{
    if (s == NULL) {
        return;
    }
    free(s->sinks);
    free(s->partitions);
    free(HELD(s));
}

/* ---- Prometheus text ---- */

static void put_label_value(FILE *out, const char *v)
{
    for (; *v != '\0'; v++) {
        if (*v == '\\' || *v == '"') {
            fputc('\\', out);
            fputc(*v, out);
        } else if (*v == '\n') {
            fputs("\\n", out);
        } else {
            fputc(*v, out);
        }
    }
}

static void put_help(FILE *out, const char *help)
{
    for (; *help != '\0'; help++) {
        if (*help == '\\') {
            fputs("\\\\", out);
        } else if (*help == '\n') {
            fputs("\\n", out);
        } else {
            fputc(*help, out);
        }
    }
}

static void put_number(FILE *out, double v)
{
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        fprintf(out, "%.0f", v);
    } else {
        fprintf(out, "%.9g", v);
    }
}

/* The labels of one series, without braces: pipeline first. */
static void put_labels(FILE *out, const struct metrics_snapshot *s,
                       const struct metric_def *d, const void *scope_obj)
{
    fputs("pipeline=\"", out);
    put_label_value(out, s->pipeline);
    fputc('"', out);
    if (d->scope == M_SINK) {
        fputs(",sink=\"", out);
        put_label_value(out, ((const struct metrics_sink *)scope_obj)->name);
        fputc('"', out);
    } else if (d->scope == M_PARTITION) {
        const struct metrics_partition *p = scope_obj;
        fputs(",topic=\"", out);
        put_label_value(out, p->topic);
        fprintf(out, "\",partition=\"%d\"", (int)p->partition);
    }
    if (d->labels != NULL) {
        fprintf(out, ",%s", d->labels);
    }
}

static void put_series(FILE *out, const struct metrics_snapshot *s,
                       const struct metric_def *d, const void *scope_obj)
{
    const char *base = scope_obj;

    if (d->type == M_HISTOGRAM) {
        const struct metrics_histogram *h =
            (const void *)(base + d->offset);
        uint64_t cumulative = 0;
        for (size_t i = 0; i <= METRICS_BUCKETS; i++) {
            cumulative += h->counts[i];
            fprintf(out, "%s_bucket{", d->name);
            put_labels(out, s, d, scope_obj);
            if (i < METRICS_BUCKETS) {
                fprintf(out, ",le=\"%g\"} %llu\n",
                        (double)bounds_ns[d->scale][i] / 1e9,
                        (unsigned long long)cumulative);
            } else {
                fprintf(out, ",le=\"+Inf\"} %llu\n",
                        (unsigned long long)cumulative);
            }
        }
        fprintf(out, "%s_sum{", d->name);
        put_labels(out, s, d, scope_obj);
        fprintf(out, "} %.9g\n", (double)h->sum_ns / 1e9);
        fprintf(out, "%s_count{", d->name);
        put_labels(out, s, d, scope_obj);
        fprintf(out, "} %llu\n", (unsigned long long)h->count);
        return;
    }
    double v = *(const double *)(const void *)(base + d->offset);
    if (d->scope == M_PARTITION && v < 0) {
        return; /* not known yet: no series rather than a made-up one */
    }
    fprintf(out, "%s{", d->name);
    put_labels(out, s, d, scope_obj);
    fputs("} ", out);
    put_number(out, v);
    fputc('\n', out);
}

void metrics_write_prometheus(const struct metrics_snapshot *s, FILE *out)
{
    for (size_t i = 0; i < DEF_COUNT; i++) {
        const struct metric_def *d = &metric_defs[i];
        if (d->help != NULL) {
            fprintf(out, "# HELP %s ", d->name);
            put_help(out, d->help);
            fprintf(out, "\n# TYPE %s %s\n", d->name, type_names[d->type]);
        }
        switch (d->scope) {
        case M_PIPELINE:
            put_series(out, s, d, s);
            break;
        case M_SINK:
            for (size_t k = 0; k < s->sink_count; k++) {
                put_series(out, s, d, &s->sinks[k]);
            }
            break;
        case M_PARTITION:
            for (size_t k = 0; k < s->partition_count; k++) {
                put_series(out, s, d, &s->partitions[k]);
            }
            break;
        }
    }
}

/* ---- /status ---- */

static const char *const state_names[] = {"ok", "retrying", "breaker_open",
                                          "paused", "parking"};
static const char *const breaker_names[] = {"closed", "half-open", "open"};

static json_t *offset_json(double v)
{
    return v < 0 ? json_null() : json_integer((json_int_t)v);
}

void metrics_write_status(const struct metrics_snapshot *s, FILE *out)
{
    json_t *root = json_object(), *parts = json_array(), *sinks = json_array();
    char when[32];
    time_t t = (time_t)(s->taken_unix_ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + strlen(when), sizeof(when) - strlen(when), ".%03uZ",
             (unsigned)(s->taken_unix_ms % 1000));
    json_object_set_new(root, "pipeline", json_string(s->pipeline));
    json_object_set_new(root, "group",
                        s->group != NULL ? json_string(s->group) : json_null());
    json_object_set_new(root, "as_of", json_string(when));
    json_object_set_new(root, "ready", json_boolean(s->ready > 0));
    if (s->not_ready[0] != '\0') {
        json_object_set_new(root, "not_ready", json_string(s->not_ready));
    }
    json_object_set_new(root, "paused", json_boolean(s->paused > 0));
    json_object_set_new(root, "stopping", json_boolean(s->stopping));
    json_object_set_new(root, "consumed", json_integer((json_int_t)s->consumed));
    json_object_set_new(root, "in_flight",
                        json_integer((json_int_t)s->in_flight));
    for (size_t i = 0; i < s->partition_count; i++) {
        const struct metrics_partition *p = &s->partitions[i];
        json_t *o = json_object();
        json_object_set_new(o, "topic", json_string(p->topic));
        json_object_set_new(o, "partition", json_integer(p->partition));
        json_object_set_new(o, "committed", offset_json(p->committed));
        json_object_set_new(o, "consumed", offset_json(p->consumed));
        json_object_set_new(o, "high_watermark",
                            offset_json(p->high_watermark));
        json_object_set_new(o, "lag", offset_json(p->lag));
        json_array_append_new(parts, o);
    }
    json_object_set_new(root, "partitions", parts);
    for (size_t i = 0; i < s->sink_count; i++) {
        const struct metrics_sink *k = &s->sinks[i];
        json_t *o = json_object();
        int b = (int)k->breaker;
        json_object_set_new(o, "name", json_string(k->name));
        json_object_set_new(o, "state", json_string(state_names[k->state]));
        json_object_set_new(o, "paused", json_boolean(k->paused > 0));
        json_object_set_new(o, "breaker",
                            json_string(breaker_names[b >= 0 && b <= 2 ? b
                                                                       : 0]));
        json_object_set_new(o, "in_flight",
                            json_integer((json_int_t)k->in_flight));
        json_object_set_new(o, "pending", json_integer((json_int_t)k->pending));
        json_object_set_new(o, "oldest_pending_age_s",
                            json_real(k->oldest_age_s));
        json_object_set_new(o, "delivered",
                            json_integer((json_int_t)k->delivered));
        json_object_set_new(o, "failed", json_integer((json_int_t)k->failed));
        json_object_set_new(o, "retried", json_integer((json_int_t)k->retried));
        json_object_set_new(o, "dead_lettered",
                            json_integer((json_int_t)k->dead_lettered));
        json_object_set_new(o, "skipped_dedupe",
                            json_integer((json_int_t)k->skipped_dedupe));
        json_object_set_new(o, "skipped_transform",
                            json_integer((json_int_t)k->skipped_transform));
        json_object_set_new(o, "last_error",
                            k->last_error[0] != '\0'
                                ? json_string(k->last_error)
                                : json_null());
        json_array_append_new(sinks, o);
    }
    json_object_set_new(root, "sinks", sinks);
    json_dumpf(root, out, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    fputc('\n', out);
    json_decref(root);
}

/* ---- the reference ---- */

void metrics_write_reference(FILE *out)
{
    static const char *const scope_labels[] = {
        "pipeline", "pipeline, sink", "pipeline, topic, partition"};

    fputs("| metric | type | labels | meaning |\n"
          "| --- | --- | --- | --- |\n",
          out);
    for (size_t i = 0; i < DEF_COUNT; i++) {
        const struct metric_def *d = &metric_defs[i];
        const char *help = d->help;
        if (help == NULL) {
            continue;
        }
        fprintf(out, "| `%s` | %s | %s", d->name, type_names[d->type],
                scope_labels[d->scope]);
        /* The constant labels of every series of this name. */
        for (size_t j = i; j < DEF_COUNT && strcmp(metric_defs[j].name,
                                                   d->name) == 0; j++) {
            if (metric_defs[j].labels != NULL) {
                fprintf(out, "%s`%s`", j == i ? ", " : " or ",
                        metric_defs[j].labels);
            }
        }
        fprintf(out, " | %s |\n", help);
    }
}

/* ---- the board ---- */

struct metrics_board {
    pthread_mutex_t lock;
    struct metrics_snapshot *latest;
    _Atomic uint64_t beat_ms;
};

metrics_board_t *metrics_board_new(void)
{
    metrics_board_t *b = calloc(1, sizeof(*b));

    if (b != NULL) {
        pthread_mutex_init(&b->lock, NULL);
    }
    return b;
}

void metrics_board_free(metrics_board_t *b)
{
    if (b == NULL) {
        return;
    }
    metrics_free(b->latest);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

void metrics_board_publish(metrics_board_t *b, struct metrics_snapshot *s)
{
    struct metrics_snapshot *old;

    HELD(s)->refs = 1; /* the board's */
    pthread_mutex_lock(&b->lock);
    old = b->latest;
    b->latest = s;
    if (old != NULL && --HELD(old)->refs > 0) {
        old = NULL; /* a reader frees it */
    }
    pthread_mutex_unlock(&b->lock);
    metrics_free(old);
}

struct metrics_snapshot *metrics_board_acquire(metrics_board_t *b)
{
    struct metrics_snapshot *s;

    pthread_mutex_lock(&b->lock);
    s = b->latest;
    if (s != NULL) {
        HELD(s)->refs++;
    }
    pthread_mutex_unlock(&b->lock);
    return s;
}

void metrics_board_release(metrics_board_t *b, struct metrics_snapshot *s)
{
    int last;

    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&b->lock);
    last = --HELD(s)->refs == 0;
    pthread_mutex_unlock(&b->lock);
    if (last) {
        metrics_free(s);
    }
}

void metrics_board_beat(metrics_board_t *b, uint64_t now_ms)
{
    atomic_store_explicit(&b->beat_ms, now_ms, memory_order_relaxed);
}

uint64_t metrics_board_last_beat(const metrics_board_t *b)
{
    return atomic_load_explicit(&((metrics_board_t *)b)->beat_ms,
                                memory_order_relaxed);
}
