/* engine.c -- fan every consumed record out to every sink, then commit.
 *
 * A record becomes a msg with one delivery per sink. Per sink, deliveries
 * of the same partition and key form a chain and go out one at a time in
 * offset order (ordering: key); other chains proceed in parallel, bounded
 * by the sink's max_in_flight. A msg is complete when every delivery is
 * terminal; its slot in the partition's offsets tracker is then marked
 * done and the commit timer commits the watermark. Msgs, deliveries and
 * chains come from free lists: the steady state allocates nothing.
 *
 * Invariants: a delivery is in exactly one of: waiting in its chain,
 * on its sink's ready FIFO, in flight at the connector, waiting on its
 * retry timer, or terminal. A chain's key points into its head's record,
 * which lives at least as long as the head. */
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "consumer.h"
#include "source.h"
#include "dlq.h"
#include "dlqcmd.h"
#include "keysrc.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "offsets.h"
#include "recent.h"
#include "redact.h"
#include "retry.h"
#include "keyrule.h"
#include "outcomes.h"
#include "store.h"
#include "trace.h"
#include "cfgtransform.h"

#define HEADER_SCRATCH 64
#define FAIL_LOG_INTERVAL_MS 5000
/* Failure storms are logged as the first few lines of an interval, then
 * as a count on the next line that is logged. */
#define RATELOG_BURST 5
#define RATELOG_INTERVAL_MS 10000
/* A DLQ write that failed is tried again after this, doubling up to the
 * cap; meanwhile its record stays uncommitted. */
#define DLQ_RETRY_MS 500
#define DLQ_RETRY_MAX_MS 30000
#define BREAKER_BUCKETS 10
#define COPY_KEEP_MAX (64 * 1024) /* reused buffers above it are freed */
/* How long the lane only stops polling before it pauses its partitions:
 * long enough to ride out a burst (librdkafka 2.0.2 needs ~1 s to fetch
 * after a resume), far below max.poll.interval.ms. */
#define HOLD_BEFORE_PAUSE_MS 1000
/* A marker store op that failed is submitted again after this, doubling
 * up to the cap; meanwhile its msg waits (and counts in the bounds). */
#define STORE_RETRY_MS 200
#define STORE_RETRY_MAX_MS 5000

/* The admin server's figures are this fresh at most. */
#define METRICS_INTERVAL_MS 1000

/* A consumer the lane reads: the pipeline's source, or the retry topic of
 * a sink that parks (its drain). */
struct feed {
    engine_t *e;
    const struct source *src; /* kafka_source for a drain */
    void *h;                  /* src's handle; NULL: not open */
    struct sink *drain; /* NULL: the pipeline's source */
    struct cfg *cfg;    /* a drain's own: the retry topic as its source */
};

struct part {
    struct feed *from;
    char *topic;
    int32_t partition;
    offsets_t *offsets;
    int64_t committed;
    size_t inflight;
    size_t stuck; /* of inflight: msgs that will not complete (stopping) */
    size_t refs;  /* live msgs */
    int self_paused, paused, revoked;
    int draining; /* being revoked: markers are asked for at once */
    int64_t start, end; /* replay: the group's offset and the end */
    int64_t consumed;   /* the offset after the last record read; -1 */
    struct part *next, *prev; /* the engine's assigned list */
};

struct msg;

/* Bytes a msg or delivery owns once a script changed them: one buffer
 * and one header array, kept across reuse from the free lists. */
struct copy {
    char *buf;
    size_t cap, used;
    struct sl_header *headers;
    size_t header_cap, header_count;
};

/* A replayed DLQ record's origin, from its context headers: what the
 * sink is shown and what a new DLQ record says. */
struct replay_src {
    char topic[256];
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms;
    char dedupe[ENGINE_DEDUPE_MAX];
};

/* Where a delivery's record goes instead of its sink, and why: made when
 * it does (failures are rare, and a body per delivery would multiply the
 * lane's memory). */
enum dead_kind {
    DEAD_LETTER, /* to the DLQ, with its context */
    DEAD_PARK,   /* to its sink's retry topic, with its context */
    DEAD_KEEP,   /* replay: back to the DLQ as it is, for later */
};

struct dead {
    engine_t *e;
    enum dead_kind kind;
    const char *stage, *class;
    int status; /* 0: no answer */
    uint32_t attempts;
    uint64_t first_ms, last_ms; /* wall clock */
    uint32_t write_failures;
    char reason[256];
    size_t body_len;
    char body[DLQ_BODY_MAX];
};

/* A record's trace: the W3C context it carried, and the process span
 * sluice opened for it (tracing on) or that context as it came (off:
 * passed on unchanged). traced 0: none (no valid traceparent, and no new
 * trace). */
struct rec_trace {
    struct trace_ctx ctx; /* the process span, or the producer's */
    uint8_t parent[8];    /* own: the producer's span; has_parent */
    unsigned traced : 1, own : 1, has_parent : 1;
    uint64_t start_ns; /* own and sampled: when it was consumed (unix) */
    const void *state; /* tracestate in the record; NULL: none */
    size_t state_len;
};

struct delivery {
    struct msg *msg;
    struct delivery *chain_next;
    struct delivery *ready_next;
    struct chain *chain;
    struct loop_timer retry; /* the next attempt, or DLQ write */
    struct sink *sink;       /* NULL: the pipeline transform's DLQ record */
    uint32_t attempts;
    uint64_t first_ms; /* when the first attempt started */
    struct dead *dead; /* non-NULL: going to the DLQ */
    /* The request the sink's transform built (shaped), in req. */
    int shaped;
    const void *body; /* NULL: the msg's value */
    size_t body_len;
    const char *method, *path;
    struct copy req;
    /* Markers on: awaiting, it is queued once its msg's lookup answers;
     * settled, it succeeded or is terminal (counted in msg->unsettled
     * until then). */
    int awaiting, settled;
    int at_send; /* its send() failed before starting (on_result) */
    int failed;  /* it went the dead-letter way (dead_letter) */
    struct store_op mark; /* the op that marks it (maybe with others) */
    /* Its sink's pending list, oldest consumed first (the head's age is
     * how far behind the sink is); linked: on it. */
    struct delivery *pend_prev, *pend_next;
    int linked;
    uint64_t sent_ns; /* the request under way started (metrics on) */
    /* The request under way's span (its record's trace sampled, tracing
     * on); span_start_ns 0: none. */
    uint8_t span_id[8];
    uint64_t span_start_ns;
};

/* One message out of the pipeline transform (a record's only msg when
 * there is none). A record split into several msgs is complete when all
 * are; its first msg (the origin) holds the record until then. */
struct msg {
    void *handle; /* the record: on the origin only */
    struct part *part;
    struct msg *origin;
    unsigned outputs; /* origin: the record's msgs not yet complete */
    /* origin, a source that answers its producer: msgs not yet at the
     * acknowledging sink; acked: its verdict was given. */
    unsigned ack_left;
    int acked;
    int ack_wrote; /* one of its messages reached the ack sink */
    uint64_t slot;
    int64_t offset;
    int64_t timestamp_ms;
    uint64_t consumed_ms; /* loop time it was consumed */
    const void *key;
    size_t key_len;
    size_t order_len; /* of key, for ordering (key_base: the base's) */
    const void *value;
    size_t value_len;
    uint64_t key_hash;
    unsigned pending;
    int stuck;    /* a DLQ write failed while stopping: left uncommitted */
    unsigned replays; /* origin: failed replays of its DLQ record so far */
    struct replay_src *src; /* origin, replay: where the record came from */
    size_t bytes; /* counted in the lane's in-flight bytes */
    int transformed; /* key, value, headers and dedupe key are in own */
    const char *dedupe; /* in own, or in keybuf; never NULL once filled */
    size_t dedupe_len;
    uint64_t dedupe_hash; /* recent_hash(dedupe), with markers on */
    char *keybuf;       /* ENGINE_DEDUPE_MAX bytes, kept across reuse */
    struct store_op look; /* markers on: which sinks already have it */
    int looked;           /* its lookup answered */
    /* Sinks that succeeded, their marker not yet asked for: written
     * together once every delivery is settled, or at once when one of
     * them fails (so a sink that is down does not hold the markers of
     * the others back). */
    uint64_t mark_bits;
    unsigned unsettled;
    int troubled;
    struct msg *check_next; /* the engine's lookup FIFO */
    struct rec_trace trace; /* origin only */
    struct copy own;
    struct msg *next, *prev; /* live list, or free list (next) */
    struct delivery d[];
};

struct chain {
    struct chain *hnext;
    struct part *part;
    uint64_t hash;
    const void *key;
    size_t key_len;
    struct delivery *head, *tail;
};

struct ratelog {
    uint64_t window_start;
    unsigned in_window;
    uint64_t suppressed;
};

enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN };

struct sink {
    engine_t *e;
    size_t idx;
    struct loop_timer pump; /* sends what became ready, once per iteration */
    const struct cfg_sink *cfg;
    const char *dlq_topic;
    struct connector_host host;
    int inflight;
    struct delivery *ready_head, *ready_tail;
    struct chain **buckets;
    size_t mask;
    uint64_t delivered, failed, retried, skipped, gave_up, done_by_policy;
    uint64_t applied, already_handled;
    uint64_t dead_lettered;
    uint64_t fail_logged_ms, fails_unlogged, policy_errors;
    struct ratelog give_up_log;
    /* The circuit breaker: consecutive failures, and counts of the
     * window in BREAKER_BUCKETS slices (slot: the slice of `now`). */
    enum breaker_state breaker;
    struct loop_timer breaker_timer;
    struct delivery *probe;
    uint32_t consecutive;
    uint64_t slot, slot_end;
    unsigned slot_index;
    uint32_t window_total[BREAKER_BUCKETS], window_failed[BREAKER_BUCKETS];
    uint64_t breaker_opens;
    /* Parking (park_after): the sink's backlog goes to its retry topic
     * while it is down, and its drain brings it back. */
    int parking;
    uint64_t held_since; /* held the lane at its bound since; 0: not */
    size_t retry_waiting; /* main deliveries waiting on a retry timer */
    struct delivery *park_head, *park_tail;
    size_t park_pending; /* park writes not yet acknowledged */
    uint64_t parked;
    char *retry_topic;
    int64_t *park_max; /* per retry partition: the last parked offset */
    size_t park_max_cap;
    struct feed drain;
    int opened;
    /* Observability: paused through the admin API; the pending list;
     * request times; the last failure, as the connector said it. */
    int paused;
    struct delivery *pend_head, *pend_tail;
    size_t pending;
    struct metrics_histogram latency;
    char last_error[256];
    struct connector_about about; /* for spans */
};

struct engine {
    const struct cfg *cfg;
    struct engine_options opts;
    loop_t *loop;
    embedded_t *embedded;
    struct feed main; /* the pipeline's source */
    struct loop_timer park_timer;
    struct sink *sinks;
    size_t nsinks;
    struct part *parts; /* assigned */
    struct msg *live, *free_msgs;
    struct chain *free_chains;
    size_t msg_size;
    size_t inflight, inflight_bytes;
    int global_paused; /* over the lane's bound: not polling */
    int deep_paused;   /* ... for long: partitions paused, polling again */
    struct loop_timer hold_timer;
    uint64_t consumed, completed, dropped, transform_failed;
    uint64_t transform_dead_lettered, dlq_write_failures;
    size_t stuck; /* of inflight: left uncommitted while stopping */
    dlq_t *dlq;
    redact_t *redact;
    char worker_id[128];
    struct ratelog transform_log, dlq_log;
    struct sl_header *dlq_headers; /* a DLQ record's, reused */
    size_t dlq_headers_cap;
    /* Replay (opts.replay): its own cfg (the DLQ as source, one sink) and
     * what became of the records. */
    struct cfg *replay_cfg;
    struct loop_timer replay_timer;
    uint64_t replay_since, replay_selected, replay_kept, replay_guarded,
        replay_foreign;
    int replay_assigned, replay_limited;
    transform_t *tf; /* NULL: no scripts */
    int sink_transforms; /* some sink has a transform */
    uint64_t rng;
    int stopping, forced, fatal;
    uint64_t drain_deadline;
    int sigfd;
    struct loop_io sig_io;
    struct loop_timer commit_timer, progress_timer;
    /* The last msg viewed (see msg_view); cleared when it is freed. */
    struct msg *view_msg;
    struct connector_msg view;
    char dedupe[ENGINE_DEDUPE_MAX];
    struct sl_header headers[HEADER_SCRATCH];
    /* Markers (cfg->dedupe.store): ops wait in `queued` for the next
     * flush, failed ones in `failed` for the retry timer; msgs wait in
     * the lookup FIFO so that they reach their sinks in order. */
    const struct store *store;
    void *store_ctx;
    struct store_host store_host;
    struct store_info store_info;
    const char **sink_names;
    struct store_op *queued, **queued_tail, *failed, **failed_tail;
    struct loop_timer store_flush_timer, store_retry_timer;
    int64_t store_delay;
    uint64_t store_down_since, store_logged, store_errors;
    struct msg *check_head, *check_tail;
    recent_t *recent; /* keys sinks succeeded at lately, by this worker */
    uint64_t no_key_dead_lettered;
    /* The admin server (admin.listen): the lane publishes a snapshot on
     * the board each METRICS_INTERVAL_MS; commands come through admin_io. */
    metrics_board_t *board;
    admin_t *admin;
    struct loop_io admin_io;
    struct loop_timer metrics_timer;
    int paused; /* the whole pipeline, through the admin API */
    /* The last progress line (to print only changes), and when. */
    char *progress_last;
    uint64_t progress_at, progress_consumed;
    struct metrics_histogram transform_time;
    uint64_t dlq_written;
    tracer_t *tracer; /* tracing.otlp_endpoint; NULL: no spans */
    struct connector_host trace_host;
    outcomes_t *outcomes; /* outcomes: NULL: no outcome log */
    struct ratelog outcomes_log;
    int shadow; /* mode: shadow */
    int no_dlq; /* dead letters are outcome lines only: see engine_new */
    int ack_sink; /* the sink whose outcome settles a record; -1: none */
    char trace_hex[33]; /* the trace id of the view a script sees */
};

#define container_of(ptr, type, member)                                        \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* The structured fields of a log line about msg m at sink s (NULL: the
 * pipeline), with HTTP status st (0: none). */
#define MSG_FIELDS(m, s, st)                                                   \
    (&(struct log_fields){                                                     \
        .sink = (s) != NULL ? (s)->cfg->name : NULL,                           \
        .topic = (m)->part->topic,                                             \
        .partition = (int)(m)->part->partition,                                \
        .offset = (long long)(m)->offset,                                      \
        .status = (st),                                                        \
        .trace_id = trace_hex_of(&(m)->origin->trace, (char[33]){0})})

/* The trace id of t in out, or NULL when t has none. */
static const char *trace_hex_of(const struct rec_trace *t, char out[33])
{
    if (!t->traced) {
        return NULL;
    }
    trace_id_hex(&t->ctx, out);
    return out;
}

/* ---- tracing ---- */

#define TRACESTATE_MAX 512 /* W3C: a longer one may be dropped */
#define TRACE_STOP_WAIT_MS 2000

static uint64_t unix_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* 1 when t's spans are sluice's and go to the collector. */
static int trace_sampled(const struct rec_trace *t)
{
    return t->own && (t->ctx.flags & TRACE_SAMPLED);
}

/* A tracestate worth passing on: printable ASCII within the W3C bound
 * (a header value must not carry a line break; the rest is the
 * producer's business). */
static int tracestate_ok(const unsigned char *v, size_t len)
{
    if (len == 0 || len > TRACESTATE_MAX) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (v[i] < 0x20 || v[i] > 0x7e) {
            return 0;
        }
    }
    return 1;
}

/* Reads the record's traceparent and tracestate into *t and, tracing
 * on, opens its process span: a child of the producer's span, or the
 * root of a new trace when it has none (tracing.new_traces). */
static void trace_begin(engine_t *e, const struct source_record *rec,
                        struct rec_trace *t)
{
    const struct source *src = ((const struct part *)rec->part)->from->src;
    struct trace_ctx parent;
    size_t len = 0;
    const void *v = src->header_find(rec->handle, "traceparent", &len);
    int valid = v != NULL && trace_parse(v, len, &parent) == 0;

    memset(t, 0, sizeof(*t));
    if (e->tracer == NULL) {
        if (!valid) {
            return;
        }
        t->ctx = parent;
    } else {
        if (!valid && !e->cfg->tracing.new_traces) {
            return;
        }
        tracer_start(e->tracer, valid ? &parent : NULL, &t->ctx);
        t->own = 1;
        if (valid) {
            memcpy(t->parent, parent.span_id, sizeof(t->parent));
            t->has_parent = 1;
        }
        if (t->ctx.flags & TRACE_SAMPLED) {
            t->start_ns = unix_ns();
        }
    }
    t->traced = 1;
    if (valid &&
        (v = src->header_find(rec->handle, "tracestate", &len)) != NULL &&
        tracestate_ok(v, len)) {
        t->state = v;
        t->state_len = len;
    }
}

/* why, redacted and cut, in out: span status messages never carry a
 * configured secret a sink or a script echoed. */
static const char *trace_why(engine_t *e, const char *why, char *out,
                             size_t cap)
{
    if (why == NULL) {
        return NULL;
    }
    size_t len = strnlen(why, cap - 1);
    memcpy(out, why, len);
    out[len] = '\0';
    redact_apply(e->redact, out, &len, cap - 1);
    out[len] = '\0';
    return out;
}

#define TRACE_STRING(k, v, n) {.key = (k), .type = TRACE_STR, .str = (v), .str_len = (n)}
#define TRACE_INTEGER(k, v) {.key = (k), .type = TRACE_INT, .i = (v)}

/* The record's process span ends: every output is done at every sink,
 * or it went nowhere (dropped, dead-lettered); error: why it failed. */
static void trace_record_end(engine_t *e, const struct rec_trace *t,
                             const struct part *p, int64_t offset,
                             const char *error)
{
    if (!trace_sampled(t)) {
        return;
    }
    char partition[16], name[300], why[256];
    const char *group = e->cfg->source.group != NULL ? e->cfg->source.group
                                                     : "";
    int n = snprintf(partition, sizeof(partition), "%d", (int)p->partition);
    const char *system = p->from->src->name;
    /* The first ATTRS_ANY hold for every source; the rest only for a
     * consumer group's records (the http source's partition and offsets
     * are sluice's own count). */
    enum { ATTRS_ANY = 3 };
    struct trace_attr attrs[] = {
        TRACE_STRING("messaging.system", system, strlen(system)),
        TRACE_STRING("messaging.operation.type", "process", 7),
        TRACE_STRING("messaging.destination.name", p->topic,
                     strlen(p->topic)),
        /* ATTRS_ANY */
        TRACE_STRING("messaging.destination.partition.id", partition,
                     (size_t)n),
        TRACE_INTEGER("messaging.kafka.offset", offset),
        TRACE_STRING("messaging.consumer.group.name", group, strlen(group)),
    };
    snprintf(name, sizeof(name), "process %s", p->topic);
    struct trace_span span = {
        .ctx = t->ctx,
        .parent_span_id = t->has_parent ? t->parent : NULL,
        .name = name,
        .kind = TRACE_CONSUMER,
        .start_unix_ns = t->start_ns,
        .end_unix_ns = unix_ns(),
        .error = error != NULL,
        .status_message = trace_why(e, error, why, sizeof(why)),
        .attrs = attrs,
        .attr_count = p->from->src == &kafka_source
                          ? sizeof(attrs) / sizeof(attrs[0])
                          : ATTRS_ANY,
    };
    tracer_emit(e->tracer, &span);
}

/* The pipeline transform's span: started at start_ns, gave n outputs
 * (negative: failed, error says why). */
static void trace_transform(engine_t *e, const struct rec_trace *t,
                            uint64_t start_ns, int n, const char *error)
{
    struct trace_ctx c;
    char why[256];

    if (!trace_sampled(t)) {
        return;
    }
    tracer_start(e->tracer, &t->ctx, &c);
    struct trace_attr attrs[] = {
        TRACE_INTEGER("sluice.transform.outputs", n < 0 ? 0 : n),
    };
    struct trace_span span = {
        .ctx = c,
        .parent_span_id = t->ctx.span_id,
        .name = "transform",
        .kind = TRACE_INTERNAL,
        .start_unix_ns = start_ns,
        .end_unix_ns = unix_ns(),
        .error = n < 0,
        .status_message = n < 0 ? trace_why(e, error, why, sizeof(why))
                                : NULL,
        .attrs = attrs,
        .attr_count = 1,
    };
    tracer_emit(e->tracer, &span);
}

/* The span of d's request, which ended with res: OpenTelemetry's HTTP
 * client conventions, and which sink it was. */
static void trace_request_end(struct sink *s, struct delivery *d,
                              const struct connector_result *res)
{
    if (d->span_start_ns == 0) {
        return;
    }
    engine_t *e = s->e;
    const struct rec_trace *t = &d->msg->origin->trace;
    struct trace_ctx c = t->ctx;
    const char *method = d->method != NULL ? d->method : s->about.method;
    char error_type[16], why[256];
    struct trace_attr attrs[8] = {
        TRACE_STRING("http.request.method", method, strlen(method)),
        TRACE_STRING("sluice.sink", s->cfg->name, strlen(s->cfg->name)),
    };
    size_t n = 2;
    int failed = res->status != CONNECTOR_OK;

    uint64_t start_ns = d->span_start_ns;

    memcpy(c.span_id, d->span_id, sizeof(c.span_id));
    d->span_start_ns = 0;
    if (s->about.server_address[0] != '\0') {
        attrs[n++] = (struct trace_attr)TRACE_STRING(
            "server.address", s->about.server_address,
            strlen(s->about.server_address));
    }
    if (s->about.server_port > 0) {
        attrs[n++] = (struct trace_attr)TRACE_INTEGER("server.port",
                                                      s->about.server_port);
    }
    if (res->http_status > 0) {
        attrs[n++] = (struct trace_attr)TRACE_INTEGER(
            "http.response.status_code", res->http_status);
    }
    if (d->attempts > 0) {
        attrs[n++] = (struct trace_attr)TRACE_INTEGER(
            "http.request.resend_count", d->attempts);
    }
    if (failed) {
        /* The status code, as the conventions say, or _OTHER when no
         * answer came (refused, reset, timed out: the message says). */
        int len = res->http_status > 0
                      ? snprintf(error_type, sizeof(error_type), "%d",
                                 res->http_status)
                      : snprintf(error_type, sizeof(error_type), "_OTHER");
        attrs[n++] = (struct trace_attr)TRACE_STRING("error.type", error_type,
                                                     (size_t)len);
    }
    struct trace_span span = {
        .ctx = c,
        .parent_span_id = t->ctx.span_id,
        .name = method,
        .kind = TRACE_CLIENT,
        .start_unix_ns = start_ns,
        .end_unix_ns = unix_ns(),
        .error = failed,
        .status_message =
            failed && res->error[0] != '\0'
                ? trace_why(e, res->error, why, sizeof(why))
                : NULL,
        .attrs = attrs,
        .attr_count = n,
    };
    tracer_emit(e->tracer, &span);
}

static uint64_t hash_key(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */

    for (size_t i = 0; i < len; i++) {
        h = (h ^ p[i]) * 1099511628211ULL;
    }
    return h;
}

static void mark_flush(engine_t *e, struct msg *m);
static void marks_flush_all(engine_t *e, const struct part *part);
static void outcomes_sync(engine_t *e);

/* A retry topic's partition: its msgs go to from->drain alone. */
static int is_drain(const struct part *p)
{
    return p->from->drain != NULL;
}

/* The high watermark of p as its source last saw it; -1: unknown. */
static int64_t feed_high_watermark(struct feed *f, const struct part *p)
{
    return f->src->high_watermark != NULL
               ? f->src->high_watermark(f->h, p->topic, p->partition)
               : -1;
}

/* ---- pause and resume ---- */

static void part_apply_pause(engine_t *e, struct part *p)
{
    int want = p->self_paused ||
               ((e->deep_paused || e->paused) && !is_drain(p));

    if (want == p->paused || p->revoked) {
        return;
    }
    p->paused = want;
    if (want) {
        p->from->src->pause(p->from->h, p->topic, p->partition);
    } else {
        p->from->src->resume(p->from->h, p->topic, p->partition);
    }
}

static void check_bounds_after_add(engine_t *e, struct part *p)
{
    const struct cfg_delivery *d = &e->cfg->delivery;

    if (!p->self_paused &&
        p->inflight >= (size_t)d->max_in_flight_per_partition) {
        p->self_paused = 1;
        part_apply_pause(e, p);
    }
    /* A drain's msgs are not the lane's: they must not hold the source
     * back while their sink is down (that is what parking is for). */
    if (is_drain(p)) {
        return;
    }
    /* A partition assigned while the lane waits is paused at its first
     * record (it can only be paused once librdkafka has it). */
    if ((e->deep_paused || e->paused) && !p->paused) {
        part_apply_pause(e, p);
    }
    /* Over the lane's bound, stop taking records from librdkafka's queue
     * rather than pausing every partition: its queue is bounded too
     * (queued.max.messages.kbytes), and librdkafka 2.0.2 takes about a
     * second to fetch again after a resume, which stalled the lane once
     * per bound crossing (10,000 msgs/s in the benchmark). */
    if (!e->global_paused &&
        (e->inflight >= (size_t)d->max_in_flight ||
         e->inflight_bytes >= (size_t)d->max_in_flight_bytes)) {
        e->global_paused = 1;
        e->main.src->suspend(e->main.h, 1);
        loop_timer_start(e->loop, &e->hold_timer, HOLD_BEFORE_PAUSE_MS);
    }
}

/* Still over the bound after a while (a sink is down): pause every
 * partition and poll again, so that librdkafka's max.poll.interval.ms
 * does not expire and rebalances are served while we wait. */
static void hold_fired(struct loop_timer *t)
{
    engine_t *e = container_of(t, engine_t, hold_timer);

    if (!e->global_paused || e->stopping) {
        return;
    }
    e->deep_paused = 1;
    for (struct part *q = e->parts; q != NULL; q = q->next) {
        part_apply_pause(e, q);
    }
    e->main.src->suspend(e->main.h, 0);
}

/* Resume below three quarters of a bound, so a partition at the bound
 * does not flap between paused and fetching. */
static void check_bounds_after_remove(engine_t *e, struct part *p)
{
    const struct cfg_delivery *d = &e->cfg->delivery;

    if (p->self_paused &&
        p->inflight <= (size_t)d->max_in_flight_per_partition * 3 / 4) {
        p->self_paused = 0;
        part_apply_pause(e, p);
    }
    if (is_drain(p)) {
        return;
    }
    if (e->global_paused &&
        e->inflight <= (size_t)d->max_in_flight * 3 / 4 &&
        e->inflight_bytes <= (size_t)d->max_in_flight_bytes * 3 / 4) {
        e->global_paused = 0;
        loop_timer_stop(e->loop, &e->hold_timer);
        if (e->deep_paused) {
            e->deep_paused = 0;
            for (struct part *q = e->parts; q != NULL; q = q->next) {
                part_apply_pause(e, q);
            }
        }
        if (!e->stopping) {
            e->main.src->suspend(e->main.h, 0);
        }
    }
}

/* ---- partitions ---- */

static void part_free(struct part *p)
{
    offsets_destroy(p->offsets);
    free(p->topic);
    free(p);
}

static void *on_assign(void *arg, const char *topic, int32_t partition)
{
    struct feed *from = arg;
    engine_t *e = from->e;
    struct part *p = calloc(1, sizeof(*p));

    if (p == NULL) {
        return NULL;
    }
    p->topic = strdup(topic);
    p->offsets = offsets_new();
    if (p->topic == NULL || p->offsets == NULL) {
        part_free(p);
        return NULL;
    }
    p->partition = partition;
    p->committed = -1;
    p->consumed = -1;
    p->from = from;
    if (e->opts.replay != NULL) {
        e->replay_assigned = 1;
        if (from->src->range(from->h, topic, partition, &p->start,
                           &p->end) != 0) {
            p->start = p->end = -1; /* never at its end: waits for a read */
        }
    }

    p->next = e->parts;
    if (e->parts != NULL) {
        e->parts->prev = p;
    }
    e->parts = p;
    return p;
}

static void part_detach(engine_t *e, struct part *p)
{
    if (p->prev != NULL) {
        p->prev->next = p->next;
    } else {
        e->parts = p->next;
    }
    if (p->next != NULL) {
        p->next->prev = p->prev;
    }
    p->revoked = 1;
    if (p->inflight > 0 && e->ack_sink < 0) {
        log_warn("%zu message(s) of %s [%d] still in flight after the "
                 "drain: not committed, the next owner redelivers them",
                 p->inflight, p->topic, (int)p->partition);
    }
    if (p->refs == 0) {
        part_free(p);
    }
}

/* Runs the loop until the given partitions (all when count is 0) have
 * nothing in flight, or the drain deadline passes. */
static void drain(engine_t *e, struct part **parts, size_t count)
{
    for (;;) {
        size_t busy = 0;
        if (count == 0) {
            busy = e->inflight - e->stuck;
        }
        for (size_t i = 0; i < count; i++) {
            busy += parts[i]->inflight - parts[i]->stuck;
        }
        if (busy == 0 || e->forced || e->fatal ||
            loop_now(e->loop) >= e->drain_deadline) {
            return;
        }
        loop_run_once(e->loop, 100);
    }
}

static void on_revoke(void *arg, void **parts, size_t count, int lost,
                      int64_t *offsets)
{
    struct feed *from = arg;
    engine_t *e = from->e;
    struct part **ps = (struct part **)parts;

    /* A drain's work is not waited for: its sink may be down, and what is
     * not done comes back from the retry topic (at least once). */
    if (!lost && from->drain == NULL) {
        if (!e->stopping) {
            e->drain_deadline =
                loop_now(e->loop) + (uint64_t)e->cfg->delivery.drain_timeout_ms;
        }
        for (size_t i = 0; i < count; i++) {
            ps[i]->draining = 1;
            marks_flush_all(e, ps[i]);
        }
        drain(e, ps, count);
    }
    for (size_t i = 0; i < count; i++) {
        int64_t c = offsets_committable(ps[i]->offsets);
        offsets[i] = !lost && c > ps[i]->committed ? c : -1;
        part_detach(e, ps[i]);
    }
}

/* ---- commits ---- */

static void commit_all(engine_t *e, int sync)
{
    struct source_commit list[256];
    size_t n = 0;

    if (e->opts.replay != NULL && e->opts.replay->dry_run) {
        return; /* a dry run works nothing */
    }
    outcomes_sync(e);
    for (size_t k = 0; k <= e->nsinks; k++) {
        struct feed *from = k == 0 ? &e->main : &e->sinks[k - 1].drain;
        if (from->h == NULL) {
            continue;
        }
        for (struct part *p = e->parts; p != NULL; p = p->next) {
            int64_t c = offsets_committable(p->offsets);
            if (p->from != from || c <= p->committed) {
                continue;
            }
            /* p->committed moves only when the broker acknowledges (see
             * on_committed): until then the offset is sent again. */
            list[n++] = (struct source_commit){p->topic, p->partition, c};
            if (n == sizeof(list) / sizeof(list[0])) {
                from->src->commit(from->h, list, n, sync);
                n = 0;
            }
        }
        from->src->commit(from->h, list, n, sync);
        n = 0;
    }
}

static void on_committed(void *arg, void *part, int64_t offset)
{
    struct part *p = part;

    (void)arg;
    if (offset > p->committed) {
        p->committed = offset;
    }
}

/* Asks for the markers every live msg holds back (all, or those of
 * part): a slow sink must not keep the others' markers unwritten for
 * long, nor past a drain. */
static void marks_flush_all(engine_t *e, const struct part *part)
{
    if (e->store == NULL) {
        return;
    }
    for (struct msg *m = e->live; m != NULL; m = m->next) {
        if (m->mark_bits != 0 && (part == NULL || m->part == part)) {
            mark_flush(e, m);
        }
    }
}

static void commit_fired(struct loop_timer *t)
{
    engine_t *e = container_of(t, engine_t, commit_timer);

    marks_flush_all(e, NULL);
    commit_all(e, 0);
    loop_timer_start(e->loop, t, e->cfg->delivery.commit_interval_ms);
}

/* ---- owned copies ---- */

/* Makes room for bytes and header slots; c->used restarts at 0. */
static int copy_reserve(struct copy *c, size_t bytes, size_t headers)
{
    c->used = 0;
    c->header_count = 0;
    if (bytes > c->cap) {
        char *buf = realloc(c->buf, bytes);
        if (buf == NULL) {
            return -1;
        }
        c->buf = buf;
        c->cap = bytes;
    }
    if (headers > c->header_cap) {
        struct sl_header *h =
            realloc(c->headers, headers * sizeof(*h));
        if (h == NULL) {
            return -1;
        }
        c->headers = h;
        c->header_cap = headers;
    }
    return 0;
}

/* Appends len bytes (and a NUL when asked) reserved before. */
static const void *copy_put(struct copy *c, const void *src, size_t len,
                            int nul)
{
    char *at = c->buf + c->used;

    if (len > 0) {
        memcpy(at, src, len);
    }
    c->used += len;
    if (nul) {
        c->buf[c->used++] = '\0';
    }
    return at;
}

static size_t headers_size(const struct sl_header *h, size_t n)
{
    size_t bytes = 0;

    for (size_t i = 0; i < n; i++) {
        bytes += strlen(h[i].name) + 1 + h[i].value_len;
    }
    return bytes;
}

static void copy_headers(struct copy *c, const struct sl_header *h,
                         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        c->headers[i].name = copy_put(c, h[i].name, strlen(h[i].name), 1);
        c->headers[i].value = copy_put(c, h[i].value, h[i].value_len, 0);
        c->headers[i].value_len = h[i].value_len;
    }
    c->header_count = n;
}

/* A large message's buffers are not kept for the next one. */
static void copy_trim(struct copy *c)
{
    if (c->cap > COPY_KEEP_MAX) {
        free(c->buf);
        c->buf = NULL;
        c->cap = 0;
    }
    if (c->header_cap > 256) {
        free(c->headers);
        c->headers = NULL;
        c->header_cap = 0;
    }
}

static void copy_free(struct copy *c)
{
    free(c->buf);
    free(c->headers);
}

/* ---- msgs ---- */

static struct msg *msg_alloc(engine_t *e)
{
    struct msg *m = e->free_msgs;

    if (m != NULL) {
        e->free_msgs = m->next;
    } else {
        m = calloc(1, e->msg_size);
        if (m == NULL) {
            return NULL;
        }
        for (size_t i = 0; i < e->nsinks; i++) {
            loop_timer_init(&m->d[i].retry, NULL);
        }
    }
    m->stuck = 0;
    m->replays = 0;
    m->src = NULL;
    m->ack_left = 1;
    m->acked = 0;
    m->ack_wrote = 0;
    m->consumed_ms = loop_now(e->loop);
    m->prev = NULL;
    m->next = e->live;
    if (e->live != NULL) {
        e->live->prev = m;
    }
    e->live = m;
    return m;
}

/* Puts d at the tail of its sink's pending list: msgs are linked in
 * the order they were consumed, so the head is the oldest. */
static void pending_link(struct sink *s, struct delivery *d)
{
    d->pend_next = NULL;
    d->pend_prev = s->pend_tail;
    if (s->pend_tail != NULL) {
        s->pend_tail->pend_next = d;
    } else {
        s->pend_head = d;
    }
    s->pend_tail = d;
    d->linked = 1;
    s->pending++;
}

static void pending_unlink(struct sink *s, struct delivery *d)
{
    if (!d->linked) {
        return;
    }
    if (d->pend_prev != NULL) {
        d->pend_prev->pend_next = d->pend_next;
    } else {
        s->pend_head = d->pend_next;
    }
    if (d->pend_next != NULL) {
        d->pend_next->pend_prev = d->pend_prev;
    } else {
        s->pend_tail = d->pend_prev;
    }
    d->linked = 0;
    s->pending--;
}

/* Off the live list onto the free list; the view cache forgets it here,
 * where every msg leaves (done or not). */
static void msg_free(engine_t *e, struct msg *m)
{
    if (e->view_msg == m) {
        e->view_msg = NULL;
    }
    if (m->prev != NULL) {
        m->prev->next = m->next;
    } else {
        e->live = m->next;
    }
    if (m->next != NULL) {
        m->next->prev = m->prev;
    }
    copy_trim(&m->own);
    for (size_t i = 0; i < e->nsinks; i++) {
        copy_trim(&m->d[i].req);
        pending_unlink(&e->sinks[i], &m->d[i]);
    }
    free(m->src);
    m->src = NULL;
    m->next = e->free_msgs;
    e->free_msgs = m;
}

/* The record of origin is complete: mark its offset done. */
static void record_done(engine_t *e, struct msg *origin)
{
    struct part *p = origin->part;

    if (!p->revoked) {
        offsets_done(p->offsets, origin->slot);
    }
    p->inflight--;
    if (!is_drain(p)) {
        e->inflight--;
    }
    e->completed++;
    trace_record_end(e, &origin->trace, p, origin->offset, NULL);
    p->from->src->release(origin->handle);
    msg_free(e, origin);
    if (--p->refs == 0 && p->revoked) {
        part_free(p);
        return;
    }
    if (!p->revoked) {
        check_bounds_after_remove(e, p);
    }
}

static void msg_done(engine_t *e, struct msg *m)
{
    struct msg *origin = m->origin;

    if (!is_drain(m->part)) {
        e->inflight_bytes -= m->bytes;
    }
    if (m != origin) {
        m->part->refs--; /* the origin still holds the partition */
        msg_free(e, m);
    }
    if (--origin->outputs == 0) {
        record_done(e, origin);
    }
}

/* ---- chains ---- */

/* The chain of m's (partition, key) on sink s; under ordering: partition
 * the key plays no part. */
static struct chain **chain_slot(struct sink *s, const struct msg *m)
{
    int by_key = s->e->cfg->delivery.ordering == CFG_ORDERING_KEY ||
                 s->e->cfg->delivery.ordering == CFG_ORDERING_KEY_BASE;
    struct chain **slot = &s->buckets[(m->key_hash ^ (uintptr_t)m->part) &
                                      s->mask];

    for (; *slot != NULL; slot = &(*slot)->hnext) {
        struct chain *c = *slot;
        if (c->part == m->part &&
            (!by_key ||
             (c->hash == m->key_hash && c->key_len == m->order_len &&
              memcmp(c->key, m->key, m->order_len) == 0))) {
            break;
        }
    }
    return slot;
}

static void fifo_push(struct delivery **head, struct delivery **tail,
                      struct delivery *d)
{
    d->ready_next = NULL;
    if (*tail != NULL) {
        (*tail)->ready_next = d;
    } else {
        *head = d;
    }
    *tail = d;
}

static struct delivery *fifo_pop(struct delivery **head,
                                 struct delivery **tail)
{
    struct delivery *d = *head;

    *head = d->ready_next;
    if (*head == NULL) {
        *tail = NULL;
    }
    return d;
}

static void ready_push(struct sink *s, struct delivery *d)
{
    if (s->parking && !is_drain(d->msg->part)) {
        /* Parked: it goes to the retry topic, behind its key's others. */
        fifo_push(&s->park_head, &s->park_tail, d);
        if (!loop_timer_armed(&s->pump)) {
            loop_timer_start(s->e->loop, &s->pump, 0);
        }
        return;
    }
    fifo_push(&s->ready_head, &s->ready_tail, d);
}

/* Queues d behind earlier deliveries of its chain, or makes it ready. */
static int delivery_enqueue(struct sink *s, struct delivery *d)
{
    engine_t *e = s->e;
    struct msg *m = d->msg;

    d->chain = NULL;
    d->chain_next = NULL;
    if (e->cfg->delivery.ordering == CFG_ORDERING_NONE ||
        (e->cfg->delivery.ordering != CFG_ORDERING_PARTITION &&
         m->key == NULL)) {
        ready_push(s, d);
        return 0;
    }
    struct chain **slot = chain_slot(s, m);
    struct chain *c = *slot;
    if (c != NULL) {
        c->tail->chain_next = d;
        c->tail = d;
        d->chain = c;
        return 0;
    }
    c = e->free_chains;
    if (c != NULL) {
        e->free_chains = c->hnext;
    } else if ((c = malloc(sizeof(*c))) == NULL) {
        return -1;
    }
    *c = (struct chain){.part = m->part, .hash = m->key_hash, .key = m->key,
                        .key_len = m->order_len, .head = d, .tail = d};
    *slot = c;
    d->chain = c;
    ready_push(s, d);
    return 0;
}

static void chain_advance(struct sink *s, struct delivery *d)
{
    struct chain *c = d->chain;

    d->chain = NULL;
    c->head = d->chain_next;
    if (c->head != NULL) {
        c->key = c->head->msg->key;
        ready_push(s, c->head);
        return;
    }
    struct chain **slot = chain_slot(s, d->msg);
    *slot = c->hnext;
    c->hnext = s->e->free_chains;
    s->e->free_chains = c;
}

static void delivery_settle(engine_t *e, struct delivery *d);

/* Hands a record the engine will not keep back to its source. */
static void record_release(const struct source_record *rec)
{
    ((struct part *)rec->part)->from->src->release(rec->handle);
}

/* Tells the source what became of origin's record (once). */
static void settle(struct msg *origin, enum source_fate fate,
                   const char *reason)
{
    const struct source *src = origin->part->from->src;

    if (origin->acked || src->settle == NULL || origin->handle == NULL) {
        return;
    }
    origin->acked = 1;
    src->settle(origin->handle,
                &(struct source_verdict){.fate = fate, .reason = reason});
}

/* d, of the acknowledging sink, succeeded: its record is delivered once
 * all its msgs are. Failures settle in dead_letter, which every one of
 * them passes through. */
static void ack_delivered(engine_t *e, struct delivery *d, int wrote)
{
    struct msg *origin = d->msg->origin;

    if ((int)d->sink->idx != e->ack_sink || origin->ack_left == 0) {
        return;
    }
    origin->ack_wrote |= wrote;
    /* Every message skipped by the ack sink's transform: nothing was
     * written, as when the pipeline transform drops the record. */
    if (--origin->ack_left == 0) {
        settle(origin, origin->ack_wrote ? SOURCE_DELIVERED : SOURCE_DROPPED,
               NULL);
    }
}

/* d reached a terminal state: delivered, dead-lettered (failed), or
 * abandoned with its revoked partition. */
static void delivery_finish(struct sink *s, struct delivery *d)
{
    struct msg *m = d->msg;

    if (!d->failed && !m->part->revoked) {
        ack_delivered(s->e, d, 1);
    }
    pending_unlink(s, d);
    if (!d->settled) {
        delivery_settle(s->e, d);
    }
    if (d->chain != NULL) {
        chain_advance(s, d);
    }
    if (--m->pending == 0) {
        msg_done(s->e, m);
    }
}

/* d reached a terminal state; d->sink is NULL for the DLQ record of a
 * pipeline transform's failure, which has no chain. */
static void delivery_finish_any(engine_t *e, struct delivery *d)
{
    if (d->sink != NULL) {
        delivery_finish(d->sink, d);
    } else if (--d->msg->pending == 0) {
        msg_done(e, d->msg);
    }
}

/* ---- the outcome log ---- */

static int ratelog_allow(struct ratelog *r, uint64_t now, uint64_t *suppressed);
static uint64_t wall_ms(void);
static const struct connector_msg *msg_view(engine_t *e, struct msg *m);

/* Writes d's terminal outcome (kind: OUTCOME_*) to the outcome log; the
 * request's method, target and body when one was (or, in a shadow run,
 * would have been) sent (sent). status < 0 and attempts 0 are left out. s NULL: every sink gets the line (a
 * record that failed before reaching any). */
static void outcome_note(engine_t *e, struct sink *s, struct delivery *d,
                         const char *kind, int sent, int status,
                         uint32_t attempts, const char *error)
{
    struct msg *m = d->msg;
    const struct connector_msg *view;
    char target[2048];
    uint64_t suppressed;

    if (e->outcomes == NULL) {
        return;
    }
    if (s == NULL) {
        for (size_t i = 0; i < e->nsinks; i++) {
            outcome_note(e, &e->sinks[i], d, kind, 0, status, attempts,
                         error);
        }
        return;
    }
    view = msg_view(e, m);
    struct outcome line = {
        .wall_ms = wall_ms(),
        .pipeline = e->cfg->pipeline,
        .sink = s->cfg->name,
        .key = m->dedupe,
        .key_len = m->dedupe_len,
        .kind = kind,
        .status = status,
        .attempts = attempts,
        .topic = view->topic,
        .partition = view->partition,
        .offset = view->offset,
        .error = error,
    };
    if (sent) {
        struct connector_msg shaped = *view;
        shaped.method = d->method;
        shaped.path = d->path;
        line.method = d->method != NULL ? d->method : s->about.method;
        if (s->cfg->connector->target != NULL) {
            size_t len = s->cfg->connector->target(s->cfg->ctx, &shaped,
                                                   target, sizeof(target));
            redact_apply(e->redact, target, &len, sizeof(target) - 1);
            target[len] = '\0';
            line.path = target;
        }
        line.body = d->body != NULL ? d->body : m->value;
        line.body_len = d->body != NULL ? d->body_len : m->value_len;
        if (line.body == NULL) {
            line.body = "";
        }
    }
    if (outcomes_write(e->outcomes, &line) != 0 &&
        ratelog_allow(&e->outcomes_log, loop_now(e->loop), &suppressed)) {
        log_warn("outcomes: the log %s cannot keep up (its file cannot be "
                 "written): lines are dropped (%llu so far)",
                 outcomes_where(e->outcomes),
                 (unsigned long long)outcomes_dropped(e->outcomes));
    }
}

/* Before a commit: the outcomes of what it passes reach the file. */
static void outcomes_sync(engine_t *e)
{
    struct sl_error err;
    uint64_t suppressed;

    if (e->outcomes != NULL && outcomes_flush(e->outcomes, &err) != 0 &&
        ratelog_allow(&e->outcomes_log, loop_now(e->loop), &suppressed)) {
        log_warn("outcomes: %s; the lines stay buffered (up to %zu MiB)",
                 err.msg, OUTCOMES_BUFFER_MAX >> 20);
    }
}

/* ---- sending ---- */

static void on_result(struct sink *s, struct delivery *d,
                      const struct connector_result *res);
static void delivery_success(struct sink *s, struct delivery *d);

const char *engine_dedupe_key(char *out, size_t cap, const void *id,
                              size_t id_len, const char *topic,
                              int32_t partition, int64_t offset)
{
    if (id != NULL && id_len > 0 && id_len < cap &&
        memchr(id, '\0', id_len) == NULL) {
        memcpy(out, id, id_len);
        out[id_len] = '\0';
    } else {
        snprintf(out, cap, "%s-%d-%lld", topic, (int)partition,
                 (long long)offset);
    }
    return out;
}

static size_t record_headers(engine_t *e, const struct part *p,
                             void *handle);

/* rec as a script sees it, its headers in e->headers (so e's cached
 * view is no longer any msg's). */
static void record_view(engine_t *e, const struct source_record *rec,
                        const char *dedupe, struct connector_msg *in)
{
    const struct part *p = rec->part;

    *in = (struct connector_msg){
        .topic = p->topic,
        .partition = p->partition,
        .offset = rec->offset,
        .timestamp_ms = rec->timestamp_ms,
        .key = rec->key,
        .key_len = rec->key != NULL ? rec->key_len : 0,
        .value = rec->value,
        .value_len = rec->value_len,
        .dedupe_key = dedupe,
        .headers = e->headers,
        .header_count = record_headers(e, p, rec->handle),
    };
    e->view_msg = NULL;
}

const char *engine_pick_key(const struct cfg_dedupe *d, const void *header,
                            size_t header_len, const void *value,
                            size_t value_len, char *out, size_t cap)
{
    return keysrc_pick(d->from, d->arg, header, header_len, value, value_len,
                       out, cap, NULL);
}

/* The dedupe key of a record as it came, in e->dedupe: dedupe.key's, or
 * its coordinates. NULL when it has no usable key and dedupe.missing
 * says dead_letter. */
static const char *record_dedupe(engine_t *e, const struct source_record *rec)
{
    const struct cfg_dedupe *d = &e->cfg->dedupe;
    const struct part *p = rec->part;
    const char *key = NULL;

    if (d->from == CFG_DEDUPE_HEADER || d->from == CFG_DEDUPE_JSON) {
        size_t id_len = 0;
        const void *id = d->from == CFG_DEDUPE_HEADER
                             ? p->from->src->header_find(rec->handle, d->arg,
                                                         &id_len)
                             : NULL;
        key = engine_pick_key(d, id, id_len, rec->value, rec->value_len,
                              e->dedupe, sizeof(e->dedupe));
    } else if (d->from == CFG_DEDUPE_LUA && e->tf != NULL) {
        struct connector_msg in;
        struct sl_error err;
        record_view(e, rec, "", &in);
        key = transform_dedupe_key(e->tf, &in, e->dedupe, sizeof(e->dedupe),
                                   &err);
        if (key == NULL && err.msg[0] != '\0') {
            log_debug("%s [%d] offset %lld: dedupe key function: %s",
                      p->topic, (int)p->partition, (long long)rec->offset,
                      err.msg);
        }
    }
    if (key != NULL) {
        return key;
    }
    if (d->from != CFG_DEDUPE_COORDINATES &&
        d->missing == CFG_MISSING_DEAD_LETTER) {
        return NULL;
    }
    return engine_dedupe_key(e->dedupe, sizeof(e->dedupe), NULL, 0, p->topic,
                             p->partition, rec->offset);
}

/* The record's headers in e->headers; a replayed DLQ record's context
 * headers are not the message's and are left out. */
static size_t record_headers(engine_t *e, const struct part *p,
                             void *handle)
{
    size_t n = p->from->src->headers(handle, e->headers, HEADER_SCRATCH);
    size_t k = 0;

    if (e->opts.replay == NULL && !is_drain(p)) {
        return n;
    }
    for (size_t i = 0; i < n; i++) {
        if (strncmp(e->headers[i].name, DLQ_HEADER_PREFIX,
                    sizeof(DLQ_HEADER_PREFIX) - 1) != 0) {
            e->headers[k++] = e->headers[i];
        }
    }
    return k;
}

/* Fills the engine's view of m: its dedupe key and headers are looked up
 * once per msg, not once per sink (a msg's deliveries usually go out
 * back to back). */
static const struct connector_msg *msg_view(engine_t *e, struct msg *m)
{
    struct connector_msg *v = &e->view;

    if (e->view_msg == m) {
        return v;
    }
    *v = (struct connector_msg){
        .topic = m->part->topic,
        .partition = m->part->partition,
        .offset = m->offset,
        .timestamp_ms = m->timestamp_ms,
        .key = m->key,
        .key_len = m->key_len,
        .value = m->value,
        .value_len = m->value_len,
    };
    const struct replay_src *src = m->origin->src;
    if (src != NULL) {
        v->topic = src->topic;
        v->partition = src->partition;
        v->offset = src->offset;
        v->timestamp_ms = src->timestamp_ms;
    }
    v->dedupe_key = m->dedupe;
    v->trace_id = trace_hex_of(&m->origin->trace, e->trace_hex);
    if (m->transformed) {
        v->headers = m->own.headers;
        v->header_count = m->own.header_count;
    } else {
        v->headers = e->headers;
        v->header_count = record_headers(e, m->part, m->origin->handle);
    }
    e->view_msg = m;
    return v;
}

static void send_one(struct sink *s, struct delivery *d)
{
    struct connector_result res;
    const struct connector_msg *view = msg_view(s->e, d->msg);
    struct connector_msg shaped;
    const struct rec_trace *t = &d->msg->origin->trace;
    char traceparent[TRACEPARENT_LEN + 1];

    d->span_start_ns = 0;
    if (t->traced) {
        /* Tracing on: the request's own span, a child of the record's;
         * off: the producer's context, passed on as it came. */
        struct trace_ctx c = t->ctx;
        if (t->own) {
            tracer_start(s->e->tracer, &t->ctx, &c);
            if (c.flags & TRACE_SAMPLED) {
                memcpy(d->span_id, c.span_id, sizeof(d->span_id));
                d->span_start_ns = unix_ns();
            }
        }
        trace_format(&c, traceparent);
        shaped = *view;
        shaped.traceparent = traceparent;
        shaped.tracestate = t->state;
        shaped.tracestate_len = t->state_len;
        view = &shaped;
    }
    if (d->shaped) {
        if (view != &shaped) {
            shaped = *view;
        }
        if (d->body != NULL) {
            shaped.value = d->body;
            shaped.value_len = d->body_len;
        }
        shaped.method = d->method;
        shaped.path = d->path;
        shaped.request_headers = d->req.headers;
        shaped.request_header_count = d->req.header_count;
        view = &shaped;
    }
    if (d->attempts == 0) {
        d->first_ms = loop_now(s->e->loop);
    }
    if (s->e->shadow && s->cfg->shadow_url == NULL) {
        res = (struct connector_result){.status = CONNECTOR_OK,
                                        .retry_after_ms = -1};
        on_result(s, d, &res);
        return;
    }
    s->inflight++;
    if (s->e->board != NULL) {
        d->sent_ns = metrics_now_ns();
    }
    if (s->cfg->connector->send(s->cfg->ctx, view, d, &res) != 0) {
        s->inflight--;
        trace_request_end(s, d, &res);
        d->at_send = 1; /* read (and cleared) by on_result */
        on_result(s, d, &res);
    }
}

/* ---- logging under a failure storm ---- */

/* 1: log this event; *suppressed is how many were not logged before it. */
static int ratelog_allow(struct ratelog *r, uint64_t now, uint64_t *suppressed)
{
    if (r->window_start == 0 || now - r->window_start >= RATELOG_INTERVAL_MS) {
        r->window_start = now == 0 ? 1 : now;
        r->in_window = 0;
    }
    if (r->in_window < RATELOG_BURST) {
        r->in_window++;
        *suppressed = r->suppressed;
        r->suppressed = 0;
        return 1;
    }
    r->suppressed++;
    return 0;
}

/* ---- the circuit breaker ---- */

static void sink_pump(struct sink *s);

static void breaker_open(struct sink *s, const char *why)
{
    engine_t *e = s->e;

    if (s->breaker != BREAKER_HALF_OPEN) {
        log_warn("sink %s: circuit breaker open (%s); one probe request "
                 "every %lld ms until it succeeds, other sinks go on",
                 s->cfg->name, why, (long long)s->cfg->breaker_cooldown_ms);
    }
    s->breaker = BREAKER_OPEN;
    s->breaker_opens++;
    s->consecutive = 0;
    memset(s->window_total, 0, sizeof(s->window_total));
    memset(s->window_failed, 0, sizeof(s->window_failed));
    loop_timer_start(e->loop, &s->breaker_timer, s->cfg->breaker_cooldown_ms);
}

static void breaker_fired(struct loop_timer *t)
{
    struct sink *s = container_of(t, struct sink, breaker_timer);

    s->breaker = BREAKER_HALF_OPEN;
    sink_pump(s);
}

/* Counts an answer of s. failure: a transport error or a 5xx worth
 * retrying (the sink is unwell); neutral: no word from the sink at all
 * (a request that could not be built). */
static void breaker_record(struct sink *s, struct delivery *d, int failure,
                           int neutral, uint64_t now)
{
    const struct cfg_sink *c = s->cfg;

    if (d == s->probe) {
        s->probe = NULL;
        if (neutral) {
            return; /* the next ready delivery probes */
        }
        if (failure) {
            breaker_open(s, "the probe failed");
            return;
        }
        s->breaker = BREAKER_CLOSED;
        log_info("sink %s: circuit breaker closed: the probe succeeded",
                 c->name);
        if (s->ready_head != NULL && !loop_timer_armed(&s->pump)) {
            loop_timer_start(s->e->loop, &s->pump, 0);
        }
        return;
    }
    if (neutral || s->breaker != BREAKER_CLOSED) {
        return; /* answers to requests sent before it opened */
    }
    if (now >= s->slot_end) {
        /* A new slice (rare: the division stays off the hot path). */
        uint64_t width = (uint64_t)c->breaker_window_ms / BREAKER_BUCKETS;
        uint64_t slot = now / (width ? width : 1);
        for (uint64_t i = s->slot + 1;
             i <= slot && i <= s->slot + BREAKER_BUCKETS; i++) {
            s->window_total[i % BREAKER_BUCKETS] = 0;
            s->window_failed[i % BREAKER_BUCKETS] = 0;
        }
        s->slot = slot;
        s->slot_index = (unsigned)(slot % BREAKER_BUCKETS);
        s->slot_end = (slot + 1) * (width ? width : 1);
    }
    s->window_total[s->slot_index]++;
    if (!failure) {
        s->consecutive = 0;
        return;
    }
    s->window_failed[s->slot_index]++;
    s->consecutive++;
    if (c->breaker_failures > 0 &&
        s->consecutive >= (uint64_t)c->breaker_failures) {
        char why[96];
        snprintf(why, sizeof(why), "%u consecutive failures",
                 s->consecutive);
        breaker_open(s, why);
        return;
    }
    if (c->breaker_failure_percent > 0) {
        uint64_t total = 0, failed = 0;
        for (size_t i = 0; i < BREAKER_BUCKETS; i++) {
            total += s->window_total[i];
            failed += s->window_failed[i];
        }
        if (total >= (uint64_t)c->breaker_min_requests &&
            failed * 100 >= total * (uint64_t)c->breaker_failure_percent) {
            char why[96];
            snprintf(why, sizeof(why), "%llu of %llu requests failed",
                     (unsigned long long)failed, (unsigned long long)total);
            breaker_open(s, why);
        }
    }
}

static void park_one(struct sink *s, struct delivery *d);

/* Whether this worker saw s succeed with d's dedupe key since d's lookup
 * (a producer wrote the message twice, close together): then d is done
 * as already handled. */
static int already_sent(struct sink *s, struct delivery *d)
{
    struct msg *m = d->msg;
    size_t len = m->dedupe_len;

    if (!(recent_get(s->e->recent, m->dedupe, len, m->dedupe_hash) &
          ((uint64_t)1 << s->idx))) {
        return 0;
    }
    s->already_handled++;
    log_event(LOG_DEBUG, MSG_FIELDS(m, s, 0),
              "sink %s: skipped %s [%d] offset %lld (dedupe key %s): "
              "already handled, this worker delivered the key moments ago",
              s->cfg->name, m->part->topic, (int)m->part->partition,
              (long long)m->offset, m->dedupe);
    outcome_note(s->e, s, d, OUTCOME_ALREADY_HANDLED, 0, -1, 0, NULL);
    delivery_finish(s, d);
    return 1;
}

static void dead_letter(engine_t *e, struct delivery *d, enum dead_kind kind,
                        const char *stage, const char *class,
                        const char *reason,
                        const struct connector_result *res);

/* d of the acknowledging sink fails without an attempt (why). */
static void fail_now(struct sink *s, struct delivery *d, const char *why)
{
    s->failed++;
    s->gave_up++;
    dead_letter(s->e, d, DEAD_LETTER, DLQ_STAGE_SINK, DLQ_CLASS_UNAVAILABLE,
                why, NULL);
}

static void sink_pump(struct sink *s)
{
    while (s->park_head != NULL) {
        struct delivery *d = fifo_pop(&s->park_head, &s->park_tail);
        if (d->msg->part->revoked) {
            delivery_finish(s, d);
        } else {
            park_one(s, d); /* advances its chain: the next joins the queue */
        }
    }
    if (s->paused || s->e->paused) {
        return; /* the ready queue waits for a resume */
    }
    while (s->inflight < (int)s->cfg->max_in_flight && s->ready_head) {
        if (s->breaker == BREAKER_OPEN ||
            (s->breaker == BREAKER_HALF_OPEN && s->probe != NULL)) {
            if ((int)s->idx != s->e->ack_sink) {
                return; /* they wait: no attempt is used */
            }
            /* A producer waiting for its answer is told now, not at its
             * timeout: it is the one that tries again. */
            struct delivery *d = fifo_pop(&s->ready_head, &s->ready_tail);
            fail_now(s, d, "the sink's circuit breaker is open");
            continue;
        }
        struct delivery *d = fifo_pop(&s->ready_head, &s->ready_tail);
        if (d->msg->part->revoked) {
            delivery_finish(s, d);
            continue;
        }
        if (s->e->recent != NULL && already_sent(s, d)) {
            continue;
        }
        if (s->breaker == BREAKER_HALF_OPEN) {
            s->probe = d;
        }
        send_one(s, d);
    }
}

static void retry_fired(struct loop_timer *t)
{
    struct delivery *d = container_of(t, struct delivery, retry);

    if (!is_drain(d->msg->part)) {
        d->sink->retry_waiting--;
    }
    ready_push(d->sink, d);
    sink_pump(d->sink);
}

static uint64_t next_random(engine_t *e)
{
    /* xorshift64*: jitter needs spread, not secrecy. */
    e->rng ^= e->rng >> 12;
    e->rng ^= e->rng << 25;
    e->rng ^= e->rng >> 27;
    return e->rng * 2685821657736338717ULL;
}

/* ---- the dead-letter queue ---- */

static uint64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A monotonic loop time as wall-clock milliseconds. */
static uint64_t loop_to_wall(engine_t *e, uint64_t mono)
{
    uint64_t now = loop_now(e->loop), wall = wall_ms();

    return mono <= now && now - mono < wall ? wall - (now - mono) : wall;
}

/* The sink a record that leaves d goes on behalf of: d's, else the one a
 * replay or a drain serves; NULL for a pipeline transform's failure in the
 * pipeline itself (sink `*`). */
static struct sink *dead_sink(engine_t *e, const struct delivery *d)
{
    if (d->sink != NULL) {
        return d->sink;
    }
    return e->opts.replay != NULL ? &e->sinks[0] : d->msg->part->from->drain;
}

/* The topic d's record goes to. */
static const char *dead_topic(engine_t *e, const struct delivery *d)
{
    const struct sink *s = dead_sink(e, d);

    if (d->dead->kind == DEAD_PARK) {
        return s->retry_topic;
    }
    return s != NULL ? s->dlq_topic : e->cfg->dlq.topic;
}

/* Every header of the record behind handle, plus room for extra more, in
 * the engine's reused scratch. Returns the count, or -1 when out of
 * memory. */
static ssize_t dead_headers(engine_t *e, const struct msg *origin,
                            size_t extra)
{
    const struct source *src = origin->part->from->src;
    void *handle = origin->handle;

    for (;;) {
        size_t n = e->dlq_headers_cap > extra
                       ? src->headers(handle, e->dlq_headers,
                                          e->dlq_headers_cap - extra)
                       : 0;
        if (e->dlq_headers_cap > extra && n < e->dlq_headers_cap - extra) {
            return (ssize_t)n;
        }
        size_t cap = e->dlq_headers_cap ? e->dlq_headers_cap * 2
                                        : HEADER_SCRATCH + extra;
        struct sl_header *h =
            realloc(e->dlq_headers, cap * sizeof(*h));
        if (h == NULL) {
            return -1;
        }
        e->dlq_headers = h;
        e->dlq_headers_cap = cap;
    }
}

static void dlq_retry_fired(struct loop_timer *t);
static void dead_failed(engine_t *e, struct delivery *d, const char *why);
static void on_dlq_done(void *arg, void *token, const char *err,
                        int32_t partition, int64_t offset);

/* The context headers a DLQ record carries (see dlq.h). */
#define DEAD_CONTEXT_HEADERS 20

/* Writes d's record: the original record (its key, value and headers but
 * for any of ours) and the context headers of d->dead, or, kept by a
 * replay, the record as it is. A write that cannot even be queued is
 * tried again later. */
/* Without a DLQ (a shadow run, a source that answers its producer) no
 * record is written: the outcome line says it all. */
static void shadow_dead_fired(struct loop_timer *t)
{
    struct delivery *d = container_of(t, struct delivery, retry);

    on_dlq_done(d->dead->e, d, NULL, -1, -1);
}

static void dead_write(engine_t *e, struct delivery *d)
{
    struct msg *m = d->msg, *origin = m->origin;
    struct dead *x = d->dead;
    struct sink *s = dead_sink(e, d);
    const struct connector_msg *v = msg_view(e, m);
    ssize_t count = dead_headers(e, origin, DEAD_CONTEXT_HEADERS);
    struct sl_header *h = e->dlq_headers;
    char status[16], attempts[16], first[24], last[24], part[16], offset[24],
        ts[24], replays[16];
    struct dlq_record r = {.topic = dead_topic(e, d)};
    struct sl_error err;
    size_t n = 0;

    if (e->no_dlq) {
        d->retry.fn = shadow_dead_fired;
        loop_timer_start(e->loop, &d->retry, 0);
        return;
    }
    if (count < 0) {
        dead_failed(e, d, "out of memory");
        return;
    }
    if (x->kind == DEAD_KEEP) {
        /* Kept for a later replay: as it is, but for this sink only. */
        for (ssize_t i = 0; i < count; i++) {
            if (strcmp(h[i].name, DLQ_H_SINK) == 0) {
                h[i].value = s->cfg->name;
                h[i].value_len = strlen(s->cfg->name);
            }
        }
        n = (size_t)count;
        r.timestamp_ms = origin->timestamp_ms > 0 ? origin->timestamp_ms : 0;
        goto write;
    }
    for (ssize_t i = 0; i < count; i++) {
        if (strncmp(h[i].name, DLQ_HEADER_PREFIX,
                    sizeof(DLQ_HEADER_PREFIX) - 1) != 0) {
            h[n++] = h[i];
        }
    }
#define PUT(name_, text_, len_)                                                \
    h[n++] = (struct sl_header){(name_), (text_), (len_)}
#define PUTS(name_, text_) PUT(name_, text_, strlen(text_))
    PUTS(DLQ_H_PIPELINE, e->cfg->pipeline);
    PUTS(DLQ_H_SINK, s != NULL ? s->cfg->name : DLQ_SINK_ALL);
    PUTS(DLQ_H_STAGE, x->stage);
    PUTS(DLQ_H_CLASS, x->class);
    PUTS(DLQ_H_REASON, x->reason);
    if (x->status > 0) {
        snprintf(status, sizeof(status), "%d", x->status);
        PUTS(DLQ_H_STATUS, status);
        PUT(DLQ_H_BODY, x->body, x->body_len);
    }
    snprintf(attempts, sizeof(attempts), "%u", x->attempts);
    PUTS(DLQ_H_ATTEMPTS, attempts);
    if (x->attempts > 0) {
        snprintf(first, sizeof(first), "%llu",
                 (unsigned long long)x->first_ms);
        snprintf(last, sizeof(last), "%llu", (unsigned long long)x->last_ms);
        PUTS(DLQ_H_FIRST_MS, first);
        PUTS(DLQ_H_LAST_MS, last);
    }
    PUTS(DLQ_H_TOPIC, v->topic);
    snprintf(part, sizeof(part), "%d", (int)v->partition);
    PUTS(DLQ_H_PARTITION, part);
    snprintf(offset, sizeof(offset), "%lld", (long long)v->offset);
    PUTS(DLQ_H_OFFSET, offset);
    if (v->timestamp_ms >= 0) {
        snprintf(ts, sizeof(ts), "%lld", (long long)v->timestamp_ms);
        PUTS(DLQ_H_TIMESTAMP, ts);
    }
    PUTS(DLQ_H_DEDUPE, v->dedupe_key);
    PUTS(DLQ_H_WORKER, e->worker_id);
    snprintf(replays, sizeof(replays), "%u", origin->replays);
    PUTS(DLQ_H_REPLAYS, replays);
#undef PUTS
#undef PUT
write:
    origin->part->from->src->payload(origin->handle, &r.key, &r.key_len, &r.value,
                     &r.value_len);
    r.headers = h;
    r.header_count = n;
    if (dlq_write(e->dlq, &r, d, &err) != 0) {
        dead_failed(e, d, err.msg);
    }
}

/* A DLQ write failed: the record stays uncommitted and is written again
 * later, never dropped; while stopping it is left for the next owner. */
static void dead_failed(engine_t *e, struct delivery *d, const char *why)
{
    struct msg *m = d->msg, *origin = m->origin;
    struct dead *x = d->dead;
    uint64_t suppressed;
    int64_t delay = DLQ_RETRY_MS;

    x->write_failures++;
    e->dlq_write_failures++;
    for (uint32_t i = 1; i < x->write_failures && delay < DLQ_RETRY_MAX_MS;
         i++) {
        delay *= 2;
    }
    if (delay > DLQ_RETRY_MAX_MS) {
        delay = DLQ_RETRY_MAX_MS;
    }
    if (ratelog_allow(&e->dlq_log, loop_now(e->loop), &suppressed)) {
        const struct sink *s = dead_sink(e, d);
        log_event(LOG_ERROR, MSG_FIELDS(d->msg, s, 0),
                  "dlq: cannot write %s [%d] offset %lld (%s) to %s: %s; it "
                  "stays uncommitted%s (%llu more not logged before)",
                  m->part->topic, (int)m->part->partition,
                  (long long)m->offset, s != NULL ? s->cfg->name : "*",
                  dead_topic(e, d), why,
                  e->stopping ? " (stopping: not tried again)" : "",
                  (unsigned long long)suppressed);
    }
    if (m->part->revoked) {
        free(d->dead);
        d->dead = NULL;
        delivery_finish_any(e, d); /* the next owner has it */
        return;
    }
    if (e->stopping) {
        if (!origin->stuck) {
            origin->stuck = 1;
            origin->part->stuck++;
            e->stuck++;
        }
        return;
    }
    d->retry.fn = dlq_retry_fired;
    loop_timer_start(e->loop, &d->retry, delay);
}

static void dlq_retry_fired(struct loop_timer *t)
{
    struct delivery *d = container_of(t, struct delivery, retry);

    dead_write(d->dead->e, d);
}

static void on_dlq_done(void *arg, void *token, const char *err,
                        int32_t partition, int64_t offset)
{
    engine_t *e = arg;
    struct delivery *d = token;
    struct sink *s = d->sink;

    if (err != NULL) {
        dead_failed(e, d, err);
        return;
    }
    if (d->dead->kind == DEAD_PARK) {
        s->parked++;
        s->park_pending--;
        if (partition >= 0 && (size_t)partition < s->park_max_cap &&
            offset > s->park_max[partition]) {
            s->park_max[partition] = offset;
        }
    } else if (d->dead->kind == DEAD_KEEP) {
        /* counted when kept */
    } else if (d->sink != NULL) {
        d->sink->dead_lettered++;
        e->dlq_written++;
    } else {
        e->transform_dead_lettered++;
        e->dlq_written++;
    }
    free(d->dead);
    d->dead = NULL;
    delivery_finish_any(e, d);
}

/* Sends d's record to its DLQ (or, kind DEAD_PARK, to its sink's retry
 * topic): stage and class say why, res (NULL: no answer) what the sink
 * said. Secrets the sink echoed are redacted first. */
static void dead_letter(engine_t *e, struct delivery *d, enum dead_kind kind,
                        const char *stage, const char *class,
                        const char *reason,
                        const struct connector_result *res)
{
    struct dead *x = calloc(1, sizeof(*x));
    struct msg *m = d->msg;
    uint64_t suppressed;

    if (x == NULL) {
        e->fatal = 1;
        log_error("out of memory dead-lettering %s [%d] offset %lld: "
                  "stopping, it is not committed",
                  m->part->topic, (int)m->part->partition,
                  (long long)m->offset);
        return;
    }
    x->e = e;
    x->kind = kind;
    x->stage = stage;
    x->class = class;
    x->attempts = d->attempts;
    if (d->attempts > 0) {
        x->first_ms = loop_to_wall(e, d->first_ms);
        x->last_ms = wall_ms();
    }
    size_t len = strlen(reason);
    if (len >= sizeof(x->reason)) {
        len = sizeof(x->reason) - 1;
    }
    memcpy(x->reason, reason, len);
    redact_apply(e->redact, x->reason, &len, sizeof(x->reason) - 1);
    x->reason[len] = '\0';
    if (res != NULL && res->http_status > 0) {
        x->status = res->http_status;
        x->body_len = res->body_len < DLQ_BODY_MAX ? res->body_len
                                                   : DLQ_BODY_MAX;
        if (x->body_len > 0) {
            memcpy(x->body, res->body, x->body_len);
        }
        redact_apply(e->redact, x->body, &x->body_len, DLQ_BODY_MAX);
    }
    d->dead = x;
    if (kind == DEAD_LETTER) {
        d->failed = 1;
        /* A pipeline failure (no sink) or the acknowledging sink's
         * settles the record: its producer is told, redacted. */
        if (d->sink == NULL || (int)d->sink->idx == e->ack_sink) {
            settle(m->origin,
                   class == NULL                       ? SOURCE_REJECTED
                   : strcmp(class, DLQ_CLASS_BUSY) == 0 ? SOURCE_BUSY
                   : strcmp(class, DLQ_CLASS_UNAVAILABLE) == 0
                       ? SOURCE_UNAVAILABLE
                       : SOURCE_REJECTED,
                   x->reason);
        }
        outcome_note(e, d->sink, d, OUTCOME_DEAD_LETTERED, d->attempts > 0,
                     x->status > 0 ? x->status : -1, d->attempts, class);
    }
    if (d->chain != NULL) {
        /* Out of the sink's order: the key's next message may go. */
        chain_advance(d->sink, d);
    }
    struct ratelog *rl = d->sink != NULL ? &d->sink->give_up_log
                                         : &e->transform_log;
    if (kind == DEAD_LETTER &&
        ratelog_allow(rl, loop_now(e->loop), &suppressed)) {
        const char *dedupe = msg_view(e, m)->dedupe_key;
        char more[64] = "";
        const char *whither =
            e->shadow   ? "a shadow run: no DLQ record, the outcome log has it"
            : e->no_dlq ? "no DLQ with this source: the outcome log has it"
                        : "to the dead-letter queue";
        if (suppressed > 0) {
            snprintf(more, sizeof(more), " (%llu more not logged)",
                     (unsigned long long)suppressed);
        }
        if (strcmp(stage, DLQ_STAGE_DEDUPE) == 0) {
            log_event(LOG_ERROR, MSG_FIELDS(m, d->sink, x->status),
                      "%s [%d] offset %lld: %s; %s%s",
                      m->part->topic, (int)m->part->partition,
                      (long long)m->offset, x->reason, whither, more);
        } else if (d->sink == NULL || strcmp(stage, DLQ_STAGE_SHAPE) == 0) {
            log_event(LOG_ERROR, MSG_FIELDS(m, d->sink, 0),
                      "%s%s%stransform failed on %s [%d] offset %lld: %s; "
                      "%s (dedupe key %s)%s",
                      d->sink != NULL ? "sink " : "",
                      d->sink != NULL ? d->sink->cfg->name : "",
                      d->sink != NULL ? ": " : "", m->part->topic,
                      (int)m->part->partition, (long long)m->offset,
                      x->reason, whither, dedupe, more);
        } else {
            log_event(LOG_ERROR, MSG_FIELDS(m, d->sink, x->status),
                      "sink %s: gave up on %s [%d] offset %lld (dedupe key "
                      "%s) after %u attempt(s): %s; %s as %s%s",
                      d->sink->cfg->name, m->part->topic,
                      (int)m->part->partition, (long long)m->offset, dedupe,
                      d->attempts, x->reason, whither, class, more);
        }
    }
    dead_write(e, d);
}

/* What the sink's policy (its script, else the default with the
 * pipeline's limits) says about a failed attempt of d; *class names why
 * it gave up. */
static void decide(struct sink *s, struct delivery *d,
                   const struct connector_result *res,
                   struct sl_decision *dec, const char **class)
{
    engine_t *e = s->e;
    const struct cfg_delivery *cd = &e->cfg->delivery;
    int64_t elapsed = (int64_t)(loop_now(e->loop) - d->first_ms);

    dec->verdict = SL_VERDICT_DEFAULT;
    *class = DLQ_CLASS_GAVE_UP;
    if (e->tf != NULL && transform_has_retry(e->tf, s->idx)) {
        struct transform_attempt a = {
            .sink = s->cfg->name,
            .msg = msg_view(e, d->msg),
            .attempt = d->attempts,
            .elapsed_ms = elapsed,
            .result = res,
        };
        struct sl_error err;
        if (transform_retry(e->tf, s->idx, &a, dec, &err) != 0) {
            if (s->policy_errors++ % 1000 == 0) {
                log_event(LOG_ERROR, MSG_FIELDS(d->msg, s, 0),
                          "sink %s: retry policy failed on %s [%d] offset "
                          "%lld: %s; the default policy decides (%llu "
                          "failure(s) so far)",
                          s->cfg->name, d->msg->part->topic,
                          (int)d->msg->part->partition,
                          (long long)d->msg->offset, err.msg,
                          (unsigned long long)s->policy_errors);
            }
            dec->verdict = SL_VERDICT_DEFAULT;
        }
    }
    if (dec->verdict == SL_VERDICT_DEFAULT) {
        retry_default(cd->retry_backoff_ms, cd->retry_backoff_max_ms,
                      d->attempts, res, next_random(e), dec);
        *class = DLQ_CLASS_REJECTED;
        if (dec->verdict == SL_VERDICT_RETRY && cd->retry_max_attempts > 0 &&
            d->attempts >= (uint64_t)cd->retry_max_attempts) {
            dec->verdict = SL_VERDICT_GIVE_UP;
            *class = DLQ_CLASS_MAX_ATTEMPTS;
            snprintf(dec->reason, sizeof(dec->reason),
                     "%u attempts (retry_max_attempts), the last: %s",
                     d->attempts, res->error);
        } else if (dec->verdict == SL_VERDICT_RETRY &&
                   cd->retry_deadline_ms > 0 &&
                   elapsed >= cd->retry_deadline_ms) {
            dec->verdict = SL_VERDICT_GIVE_UP;
            *class = DLQ_CLASS_DEADLINE;
            snprintf(dec->reason, sizeof(dec->reason),
                     "failing for %lld ms (retry_deadline), the last: %s",
                     (long long)elapsed, res->error);
        }
    } else if (dec->verdict == SL_VERDICT_RETRY && dec->delay_ms < 0) {
        dec->delay_ms = retry_backoff(cd->retry_backoff_ms,
                                      cd->retry_backoff_max_ms, d->attempts,
                                      next_random(e));
    }
}

/* The sink's configured class of an answer (retry_on, permanent_on,
 * done_on, applied_on), as a connector status; done: 1 counts as done,
 * 2 as already applied. */
static enum connector_status classify(const struct sink *s,
                                      const struct connector_result *res,
                                      int *done)
{
    int status = res->http_status;
    unsigned char a;

    *done = 0;
    if (status <= 0) {
        if (res->status != CONNECTOR_RETRY) {
            return res->status; /* not from the sink: the request itself */
        }
        a = s->cfg->answers[0];
    } else {
        /* A status past 599 is no HTTP status: listed nowhere, permanent
         * (never the transport errors' class at index 0). */
        a = status < CFG_STATUS_MAX ? s->cfg->answers[status]
                                    : CFG_ANSWER_DEFAULT;
        if (a == CFG_ANSWER_DEFAULT) {
            return status >= 200 && status < 300 ? CONNECTOR_OK
                                                 : CONNECTOR_REJECT;
        }
    }
    switch (a) {
    case CFG_ANSWER_RETRY:
        return CONNECTOR_RETRY;
    case CFG_ANSWER_DONE:
        *done = 1;
        return CONNECTOR_OK;
    case CFG_ANSWER_APPLIED:
        *done = 2;
        return CONNECTOR_OK;
    default:
        return CONNECTOR_REJECT;
    }
}

static void on_result(struct sink *s, struct delivery *d,
                      const struct connector_result *given)
{
    engine_t *e = s->e;
    struct msg *m = d->msg;
    uint64_t now = loop_now(e->loop);
    struct sl_decision dec = {.verdict = SL_VERDICT_RETRY};
    struct connector_result res;
    const char *class;
    int done;
    enum connector_status status = classify(s, given, &done);
    int at_send = d->at_send;

    d->at_send = 0;
    breaker_record(s, d,
                   status == CONNECTOR_RETRY &&
                       (given->http_status <= 0 || given->http_status >= 500),
                   given->http_status <= 0 && given->status != CONNECTOR_RETRY,
                   now);
    /* A shadow run's sink without a shadow_url was sent nothing: its
     * line has the request but no answer. */
    int sent = !e->shadow || s->cfg->shadow_url != NULL;
    if (status == CONNECTOR_OK && done != 1) {
        s->delivered++;
        outcome_note(e, s, d,
                     e->shadow    ? OUTCOME_SHADOW
                     : done == 2 ? OUTCOME_APPLIED
                                 : OUTCOME_DELIVERED,
                     1, sent ? given->http_status : -1,
                     sent ? d->attempts + 1 : 0, NULL);
        if (done == 2) {
            s->applied++;
            log_event(LOG_DEBUG, MSG_FIELDS(m, s, given->http_status),
                      "sink %s: %s [%d] offset %lld (dedupe key %s): HTTP "
                      "%d, already applied: counted as delivered",
                      s->cfg->name, m->part->topic, (int)m->part->partition,
                      (long long)m->offset, m->dedupe, given->http_status);
        }
        delivery_success(s, d);
        return;
    }
    d->attempts++;
    if (m->part->revoked) {
        delivery_finish(s, d);
        return;
    }
    if (done) {
        s->done_by_policy++;
        outcome_note(e, s, d, e->shadow ? OUTCOME_SHADOW : OUTCOME_APPLIED,
                     1, given->http_status, d->attempts, NULL);
        delivery_success(s, d);
        return;
    }
    s->failed++;
    if (e->board != NULL) {
        if (given->http_status > 0) {
            snprintf(s->last_error, sizeof(s->last_error), "HTTP %d: %s",
                     given->http_status, given->error);
        } else {
            snprintf(s->last_error, sizeof(s->last_error), "%s",
                     given->error);
        }
    }
    if (e->store != NULL && !m->troubled) {
        m->troubled = 1;
        if (m->mark_bits != 0) {
            mark_flush(e, m);
        }
    }
    res = *given;
    res.status = status;
    decide(s, d, &res, &dec, &class);
    if ((int)s->idx == e->ack_sink && dec.verdict == SL_VERDICT_RETRY) {
        /* The producer is told, and it tries again (with the same message
         * id): a retry here too would only add a duplicate. */
        dec.verdict = SL_VERDICT_GIVE_UP;
        snprintf(dec.reason, sizeof(dec.reason), "%s", res.error);
        class = at_send ? DLQ_CLASS_BUSY : DLQ_CLASS_UNAVAILABLE;
    }
    if (dec.verdict == SL_VERDICT_DONE) {
        s->done_by_policy++;
        outcome_note(e, s, d, e->shadow ? OUTCOME_SHADOW : OUTCOME_APPLIED,
                     1, res.http_status, d->attempts, NULL);
        log_event(LOG_DEBUG, MSG_FIELDS(m, s, res.http_status),
                  "sink %s: %s [%d] offset %lld counted as done by the "
                  "retry policy after: %s",
                  s->cfg->name, m->part->topic, (int)m->part->partition,
                  (long long)m->offset, res.error);
        delivery_success(s, d);
        return;
    }
    if (dec.verdict == SL_VERDICT_GIVE_UP) {
        s->gave_up++;
        dead_letter(e, d, DEAD_LETTER, DLQ_STAGE_SINK, class, dec.reason,
                    &res);
        return;
    }
    s->fails_unlogged++;
    if (now - s->fail_logged_ms >= FAIL_LOG_INTERVAL_MS ||
        s->fail_logged_ms == 0) {
        char error[sizeof(res.error)];
        size_t len = strlen(res.error);
        memcpy(error, res.error, len + 1);
        redact_apply(e->redact, error, &len, sizeof(error) - 1);
        error[len] = '\0';
        log_event(LOG_WARN, MSG_FIELDS(m, s, res.http_status),
                  "sink %s: %s [%d] offset %lld attempt %u failed: %s "
                 "(%llu failure(s) since the last report); retrying in "
                 "%lld ms",
                 s->cfg->name, m->part->topic, (int)m->part->partition,
                 (long long)m->offset, d->attempts, error,
                 (unsigned long long)s->fails_unlogged,
                 (long long)dec.delay_ms);
        s->fail_logged_ms = now;
        s->fails_unlogged = 0;
    }
    s->retried++;
    if (s->parking && !is_drain(m->part)) {
        park_one(s, d);
        return;
    }
    if (!is_drain(m->part)) {
        s->retry_waiting++;
    }
    d->retry.fn = retry_fired;
    loop_timer_start(e->loop, &d->retry, dec.delay_ms);
}

/* ---- parking ---- */

/* Moves d to its sink's retry topic: terminal once Kafka has it. */
static void park_one(struct sink *s, struct delivery *d)
{
    s->park_pending++;
    dead_letter(s->e, d, DEAD_PARK, DLQ_STAGE_PARK, DLQ_CLASS_PARKED,
                "parked while the sink was down", NULL);
}

/* Parks everything of s that is not at the sink right now: the ready
 * queue and the deliveries waiting to be retried. What is in flight is
 * parked when it fails; chains follow as their heads leave. */
static void park_start(struct sink *s, const char *why)
{
    engine_t *e = s->e;
    struct delivery *d = s->ready_head, *keep_head = NULL, *keep_tail = NULL;
    struct delivery *next;

    log_warn("sink %s: parking its backlog in %s (%s); the other sinks and "
             "the commits go on, and it is drained back as the sink "
             "recovers",
             s->cfg->name, s->retry_topic, why);
    s->parking = 1;
    s->ready_head = s->ready_tail = NULL;
    for (; d != NULL; d = next) {
        next = d->ready_next;
        if (is_drain(d->msg->part)) {
            fifo_push(&keep_head, &keep_tail, d);
        } else {
            ready_push(s, d); /* onto the park queue */
        }
    }
    s->ready_head = keep_head;
    s->ready_tail = keep_tail;
    for (struct msg *m = e->live; m != NULL; m = m->next) {
        struct delivery *w = &m->d[s->idx];
        if (!is_drain(m->part) && w->sink == s && w->dead == NULL &&
            loop_timer_armed(&w->retry) && w->retry.fn == retry_fired) {
            loop_timer_stop(e->loop, &w->retry);
            s->retry_waiting--;
            ready_push(s, w);
        }
    }
}

/* Whether everything s parked has come back through its drain. */
static int park_drained(struct sink *s)
{
    if (s->park_pending > 0 || s->park_head != NULL) {
        return 0;
    }
    for (size_t r = 0; r < s->park_max_cap; r++) {
        if (s->park_max[r] < 0) {
            continue;
        }
        struct part *p = s->e->parts;
        while (p != NULL && !(p->from == &s->drain && p->partition == (int32_t)r)) {
            p = p->next;
        }
        if (p == NULL || offsets_committable(p->offsets) <= s->park_max[r]) {
            return 0; /* not drained (or drained by another worker) */
        }
    }
    return 1;
}

/* Whether the lane, or one of its partitions, is held at its bound. */
static int lane_held(const engine_t *e)
{
    if (e->global_paused) {
        return 1;
    }
    for (const struct part *p = e->parts; p != NULL; p = p->next) {
        if (p->self_paused && !is_drain(p)) {
            return 1;
        }
    }
    return 0;
}

static void park_fired(struct loop_timer *t)
{
    engine_t *e = container_of(t, engine_t, park_timer);
    uint64_t now = loop_now(e->loop);

    for (size_t i = 0; i < e->nsinks; i++) {
        struct sink *s = &e->sinks[i];
        if (s->cfg->park_after_ms <= 0 || s->retry_topic == NULL || e->stopping) {
            continue;
        }
        if (s->parking) {
            if (park_drained(s)) {
                s->parking = 0;
                for (size_t r = 0; r < s->park_max_cap; r++) {
                    s->park_max[r] = -1;
                }
                log_info("sink %s: its retry topic is drained: messages go "
                         "to it directly again (%llu parked so far)",
                         s->cfg->name, (unsigned long long)s->parked);
            }
            continue;
        }
        int failing = s->breaker != BREAKER_CLOSED || s->retry_waiting > 0;
        if (!failing || !lane_held(e)) {
            s->held_since = 0;
        } else if (s->held_since == 0) {
            s->held_since = now;
        } else if (now - s->held_since >= (uint64_t)s->cfg->park_after_ms) {
            s->held_since = 0;
            park_start(s, "it held the in-flight bound too long");
        }
    }
    loop_timer_start(e->loop, t, 200);
}

static void on_complete(void *engine, void *token,
                        const struct connector_result *res)
{
    struct delivery *d = token;
    struct sink *s = d->sink;

    (void)engine;
    s->inflight--;
    if (s->e->board != NULL) {
        metrics_observe(&s->latency, METRICS_REQUEST,
                        metrics_now_ns() - d->sent_ns);
    }
    trace_request_end(s, d, res);
    on_result(s, d, res);
    /* Start the next requests after this iteration's events, all at
     * once: the transports then write them in one burst, not one request
     * per response, which halves the wake-ups on both ends. */
    if (s->ready_head != NULL && !loop_timer_armed(&s->pump)) {
        loop_timer_start(s->e->loop, &s->pump, 0);
    }
}

static void pump_fired(struct loop_timer *t)
{
    sink_pump(container_of(t, struct sink, pump));
}

/* ---- markers ---- */

/* Queues op for the next flush: every op of one loop iteration goes to
 * the store as one batch. */
static void store_queue(engine_t *e, struct store_op *op)
{
    op->next = NULL;
    *e->queued_tail = op;
    e->queued_tail = &op->next;
    if (!loop_timer_armed(&e->store_flush_timer)) {
        loop_timer_start(e->loop, &e->store_flush_timer, 0);
    }
}

static void store_flush_fired(struct loop_timer *t)
{
    engine_t *e = container_of(t, engine_t, store_flush_timer);
    struct store_op *batch = e->queued;

    e->queued = NULL;
    e->queued_tail = &e->queued;
    if (batch != NULL) {
        e->store->submit(e->store_ctx, batch);
    }
}

static void store_retry_fired(struct loop_timer *t)
{
    engine_t *e = container_of(t, engine_t, store_retry_timer);
    struct store_op *op = e->failed;

    e->failed = NULL;
    e->failed_tail = &e->failed;
    while (op != NULL) {
        struct store_op *next = op->next;
        store_queue(e, op);
        op = next;
    }
    if (e->store_delay < STORE_RETRY_MAX_MS) {
        e->store_delay *= 2;
    }
}

/* A successful delivery of d (delivered, already applied, or done): the
 * key's next message may go to the sink now, but d is terminal, and its
 * msg committable, only once its marker is durable. */
static void delivery_success(struct sink *s, struct delivery *d)
{
    engine_t *e = s->e;

    if (e->store == NULL) {
        delivery_finish(s, d);
        return;
    }
    if (d->chain != NULL) {
        chain_advance(s, d);
    }
    d->msg->mark_bits |= (uint64_t)1 << s->idx;
    recent_add(e->recent, d->msg->dedupe, d->msg->dedupe_len,
               d->msg->dedupe_hash, (uint64_t)1 << s->idx);
    delivery_settle(e, d);
}

/* Asks for the markers of m's sinks that succeeded, in one op (that of
 * one of them: each delivery's op serves once). */
static void mark_flush(engine_t *e, struct msg *m)
{
    struct store_op *op = &m->d[__builtin_ctzll(m->mark_bits)].mark;

    *op = (struct store_op){
        .kind = STORE_MARK,
        .key = m->dedupe,
        .key_len = m->dedupe_len,
        .sinks = m->mark_bits,
    };
    m->mark_bits = 0;
    store_queue(e, op);
}

static void delivery_settle(engine_t *e, struct delivery *d)
{
    struct msg *m = d->msg;

    d->settled = 1;
    m->unsettled--;
    if (m->mark_bits != 0 && (m->unsettled == 0 || m->troubled ||
                              m->part->draining || e->stopping)) {
        mark_flush(e, m);
    }
}

/* The deliveries an answered mark op covered are terminal: the last may
 * complete their msg, which must not be read after. */
static void marks_done(engine_t *e, struct msg *m, uint64_t sinks)
{
    struct delivery *finish[STORE_MAX_SINKS];
    size_t n = 0;

    for (size_t k = 0; k < e->nsinks; k++) {
        if (sinks & ((uint64_t)1 << k)) {
            finish[n++] = &m->d[k];
        }
    }
    for (size_t i = 0; i < n; i++) {
        delivery_finish(finish[i]->sink, finish[i]);
    }
}

/* m's lookup answered: its sinks that have a marker are done with it
 * ("already handled"); the others get it now, in the order the records
 * came (the lookup FIFO), so that each key stays in order. */
static void msg_release(engine_t *e, struct msg *m)
{
    struct delivery *finish[STORE_MAX_SINKS];
    size_t nfinish = 0;

    m->mark_bits = 0;
    m->unsettled = 0;
    m->troubled = 0;
    for (size_t k = 0; k < e->nsinks; k++) {
        struct delivery *d = &m->d[k];
        struct sink *s = &e->sinks[k];
        if (!d->awaiting) {
            continue;
        }
        d->awaiting = 0;
        d->settled = 0;
        m->unsettled++;
        if (m->part->revoked) {
            finish[nfinish++] = d; /* the next owner has it */
        } else if (m->look.sinks & ((uint64_t)1 << k)) {
            s->already_handled++;
            log_event(LOG_DEBUG, MSG_FIELDS(m, s, 0),
                      "sink %s: skipped %s [%d] offset %lld (dedupe key %s): "
                      "already handled, its marker is in the store",
                      s->cfg->name, m->part->topic, (int)m->part->partition,
                      (long long)m->offset, m->dedupe);
            outcome_note(e, s, d, OUTCOME_ALREADY_HANDLED, 0, -1, 0, NULL);
            finish[nfinish++] = d;
        } else if (delivery_enqueue(s, d) != 0) {
            e->fatal = 1;
            log_error("out of memory queueing %s [%d] offset %lld",
                      m->part->topic, (int)m->part->partition,
                      (long long)m->offset);
            return;
        } else if (!loop_timer_armed(&s->pump)) {
            loop_timer_start(e->loop, &s->pump, 0);
        }
    }
    /* Last: the last one may complete m, and m must not be read after. */
    for (size_t i = 0; i < nfinish; i++) {
        delivery_finish(finish[i]->sink, finish[i]);
    }
}

static void check_advance(engine_t *e)
{
    while (e->check_head != NULL && e->check_head->looked) {
        struct msg *m = e->check_head;
        e->check_head = m->check_next;
        if (e->check_head == NULL) {
            e->check_tail = NULL;
        }
        msg_release(e, m);
    }
}

/* Puts m's deliveries that wait for its lookup behind the earlier
 * msgs' and asks the store. */
static void msg_lookup(engine_t *e, struct msg *m)
{
    m->looked = 0;
    m->check_next = NULL;
    if (e->check_tail != NULL) {
        e->check_tail->check_next = m;
    } else {
        e->check_head = m;
    }
    e->check_tail = m;
    m->look = (struct store_op){
        .kind = STORE_LOOKUP,
        .key = m->dedupe,
        .key_len = m->dedupe_len,
    };
    store_queue(e, &m->look);
}

static void on_store_done(void *engine, struct store_op *op, const char *err)
{
    engine_t *e = engine;
    struct msg *m = op->kind == STORE_LOOKUP
                        ? container_of(op, struct msg, look)
                        : container_of(op, struct delivery, mark)->msg;
    uint64_t now = loop_now(e->loop);

    if (err != NULL && !m->part->revoked) {
        /* Tried again later, for ever: what waits holds its offset back
         * and counts in the in-flight bounds, so the source pauses. */
        e->store_errors++;
        if (e->store_down_since == 0) {
            e->store_down_since = now == 0 ? 1 : now;
            e->store_logged = now;
            log_warn("markers: %s; deliveries wait for the marker store "
                     "(nothing is committed past them) and go on when it "
                     "answers", err);
        } else if (now - e->store_logged >= RATELOG_INTERVAL_MS) {
            e->store_logged = now;
            log_warn("markers: still failing after %llu ms: %s",
                     (unsigned long long)(now - e->store_down_since), err);
        }
        op->next = NULL;
        *e->failed_tail = op;
        e->failed_tail = &op->next;
        if (!loop_timer_armed(&e->store_retry_timer)) {
            loop_timer_start(e->loop, &e->store_retry_timer, e->store_delay);
        }
        return;
    }
    if (err == NULL && e->store_down_since != 0) {
        log_info("markers: the store answers again after %llu ms",
                 (unsigned long long)(now - e->store_down_since));
        e->store_down_since = 0;
        e->store_delay = STORE_RETRY_MS;
    }
    if (op->kind == STORE_LOOKUP) {
        if (err != NULL) {
            op->sinks = 0; /* revoked: msg_release lets go of it */
        }
        m->looked = 1;
        check_advance(e);
    } else {
        marks_done(e, m, op->sinks);
    }
}

/* ---- records in ---- */

/* Fills m from output o of record rec. A changed output is copied: the
 * script's strings live only until its next call. */
static int msg_fill(engine_t *e, struct msg *m, const struct source_record *rec,
                    const struct transform_out *o, const char *dedupe)
{
    m->part = rec->part;
    m->offset = rec->offset;
    m->timestamp_ms = rec->timestamp_ms;
    m->transformed = !o->unchanged;
    if (!m->transformed) {
        m->key = rec->key;
        m->key_len = rec->key != NULL ? rec->key_len : 0;
        m->value = rec->value;
        m->value_len = rec->value_len;
        if (m->keybuf == NULL &&
            (m->keybuf = malloc(ENGINE_DEDUPE_MAX)) == NULL) {
            return -1;
        }
        if (dedupe == NULL) {
            dedupe = engine_dedupe_key(m->keybuf, ENGINE_DEDUPE_MAX, NULL, 0,
                                       rec->topic, rec->partition,
                                       rec->offset);
        }
        /* Every key fits: engine_dedupe_key and the key sources cap it. */
        m->dedupe_len = strnlen(dedupe, ENGINE_DEDUPE_MAX - 1);
        if (dedupe != m->keybuf) {
            memcpy(m->keybuf, dedupe, m->dedupe_len);
            m->keybuf[m->dedupe_len] = '\0';
        }
        m->dedupe = m->keybuf;
    } else {
        const char *key = o->dedupe_key != NULL ? o->dedupe_key : dedupe;
        size_t key_len = o->key != NULL ? o->key_len : 0;
        size_t dedupe_len = strlen(key);
        if (copy_reserve(&m->own,
                         key_len + o->value_len + dedupe_len + 1 +
                             headers_size(o->headers, o->header_count),
                         o->header_count) != 0) {
            return -1;
        }
        m->key = o->key != NULL ? copy_put(&m->own, o->key, key_len, 0) : NULL;
        m->key_len = key_len;
        m->value = o->value != NULL
                       ? copy_put(&m->own, o->value, o->value_len, 0)
                       : NULL;
        m->value_len = o->value_len;
        m->dedupe = copy_put(&m->own, key, dedupe_len, 1);
        m->dedupe_len = dedupe_len;
        copy_headers(&m->own, o->headers, o->header_count);
    }
    if (e->recent != NULL) {
        m->dedupe_hash = recent_hash(e->recent, m->dedupe, m->dedupe_len);
    }
    m->bytes = m->key_len + m->value_len;
    m->order_len = m->key_len;
    if (m->key != NULL &&
        e->cfg->delivery.ordering == CFG_ORDERING_KEY_BASE) {
        keyrule_key_base(m->key, m->key_len, e->cfg->source.shard_separator,
                         &m->order_len);
    }
    m->key_hash = m->key != NULL &&
                          (e->cfg->delivery.ordering == CFG_ORDERING_KEY ||
                           e->cfg->delivery.ordering ==
                               CFG_ORDERING_KEY_BASE)
                      ? hash_key(m->key, m->order_len)
                      : 0;
    return 0;
}

/* Keeps the request a sink's transform built in d. */
static int delivery_shape(struct delivery *d, const struct transform_request *r)
{
    size_t method_len = r->method != NULL ? strlen(r->method) + 1 : 0;
    size_t path_len = r->path != NULL ? strlen(r->path) + 1 : 0;

    if (copy_reserve(&d->req,
                     r->body_len + method_len + path_len +
                         headers_size(r->headers, r->header_count),
                     r->header_count) != 0) {
        return -1;
    }
    d->shaped = 1;
    d->body = r->body != NULL ? copy_put(&d->req, r->body, r->body_len, 0)
                              : NULL;
    d->body_len = r->body_len;
    d->method = r->method != NULL
                    ? copy_put(&d->req, r->method, method_len - 1, 1)
                    : NULL;
    d->path = r->path != NULL ? copy_put(&d->req, r->path, path_len - 1, 1)
                              : NULL;
    copy_headers(&d->req, r->headers, r->header_count);
    return 0;
}

/* Runs the sinks' transforms on m (output i) and queues its deliveries
 * (with markers on: asks which sinks have it first); a delivery a
 * transform skipped or failed is terminal at once. */
static int msg_enqueue(engine_t *e, struct msg *m, size_t i)
{
    int awaiting = 0;
    const struct transform_shaped *shaped =
        e->sink_transforms ? transform_shape_all(e->tf, i, msg_view(e, m))
                           : NULL;

    for (size_t k = 0; k < e->nsinks; k++) {
        struct delivery *d = &m->d[k];
        struct sink *s = &e->sinks[k];
        if (is_drain(m->part) && m->part->from->drain != s) {
            m->pending--; /* the other sinks had it before it was parked */
            continue;
        }
        d->msg = m;
        d->sink = s;
        d->linked = 0;
        d->attempts = 0;
        d->chain = NULL;
        d->dead = NULL;
        d->failed = 0;
        d->shaped = 0;
        d->awaiting = 0;
        d->settled = 1;
        d->retry.fn = retry_fired;
        if (shaped != NULL && transform_has_sink(e->tf, k)) {
            const struct transform_request *req = &shaped[k].req;
            int rc = shaped[k].result;
            if (rc == TRANSFORM_SKIP) {
                s->skipped++;
                ack_delivered(e, d, 0); /* nothing to write */
                m->pending--;
                continue;
            }
            if (rc != TRANSFORM_SEND) {
                s->failed++;
                dead_letter(e, d, DEAD_LETTER, DLQ_STAGE_SHAPE,
                            DLQ_CLASS_SHAPE, shaped[k].err.msg, NULL);
                continue;
            }
            if (delivery_shape(d, req) != 0) {
                return -1;
            }
            m->bytes += req->body_len;
        }
        pending_link(s, d);
        if (e->store != NULL) {
            d->awaiting = 1;
            awaiting = 1;
        } else if (delivery_enqueue(s, d) != 0) {
            return -1;
        }
    }
    if (awaiting) {
        msg_lookup(e, m);
    }
    return 0;
}

/* A msg of rec with one delivery and no sink, for a record that goes
 * to a DLQ topic as it is: terminal once that write is acknowledged.
 * NULL when out of memory (then the lane stops: rec stays uncommitted). */
static struct delivery *carrier_new(engine_t *e,
                                    const struct source_record *rec,
                                    uint64_t slot, const char *dedupe)
{
    struct part *p = rec->part;
    struct transform_out plain = {.unchanged = 1, .dedupe_key = dedupe};
    struct msg *m = msg_alloc(e);

    if (m == NULL || msg_fill(e, m, rec, &plain, dedupe) != 0) {
        e->fatal = 1;
        log_error("out of memory dead-lettering %s [%d] offset %lld: "
                  "stopping, it is not committed",
                  rec->topic, (int)rec->partition, (long long)rec->offset);
        if (m != NULL) {
            msg_free(e, m);
        }
        record_release(rec);
        return NULL;
    }
    m->handle = rec->handle;
    m->origin = m;
    m->slot = slot;
    m->outputs = 1;
    m->pending = 1;
    p->refs++;
    p->inflight++;
    if (!is_drain(p)) {
        e->inflight++;
        e->inflight_bytes += m->bytes;
    }
    struct delivery *d = &m->d[0];
    *d = (struct delivery){.msg = m, .retry = d->retry, .req = d->req};
    return d;
}

/* ---- replay ---- */

/* A context header's value as a NUL-terminated string in out; "" when
 * absent. */
static const char *ctx_header(void *handle, const char *name, char *out,
                              size_t cap)
{
    size_t len = 0;
    const void *v = consumer_header_find(handle, name, &len);

    if (v == NULL || len >= cap) {
        len = 0;
    }
    if (len > 0) {
        memcpy(out, v, len);
    }
    out[len] = '\0';
    return out;
}

static int64_t ctx_number(void *handle, const char *name, int64_t def)
{
    char text[32], *end;
    long long v;

    ctx_header(handle, name, text, sizeof(text));
    if (text[0] == '\0') {
        return def;
    }
    v = strtoll(text, &end, 10);
    return *end == '\0' ? v : def;
}

static unsigned replays_of(void *handle)
{
    int64_t n = ctx_number(handle, DLQ_H_REPLAYS, 0);

    return n > 0 && n < 1000000 ? (unsigned)n : 0;
}

/* Writes rec back to the DLQ as it is (for this sink): it stays to be
 * worked, and the group may pass its old place. */
static void replay_keep(engine_t *e, const struct source_record *rec,
                        uint64_t slot)
{
    struct delivery *d = carrier_new(e, rec, slot, NULL);
    struct dead *x = d != NULL ? calloc(1, sizeof(*x)) : NULL;

    if (x == NULL) {
        if (d != NULL) {
            e->fatal = 1; /* stopping: the record stays uncommitted */
            log_error("out of memory keeping %s [%d] offset %lld",
                      rec->topic, (int)rec->partition,
                      (long long)rec->offset);
        }
        return;
    }
    x->e = e;
    x->kind = DEAD_KEEP;
    d->dead = x;
    dead_write(e, d);
    check_bounds_after_add(e, rec->part);
}

static struct replay_src *record_src(engine_t *e,
                                     const struct source_record *rec);

/* Decides what becomes of DLQ record rec in a replay. Returns 0 when it
 * is replayed (*src filled, the caller's to free), 1 when it was dealt
 * with here: not this sink's (done), not selected or past max_replays
 * (kept for later), or shown by --dry-run. */
static int replay_select(engine_t *e, const struct source_record *rec,
                         uint64_t slot, struct replay_src **src)
{
    const struct dlq_replay_options *o = e->opts.replay;
    const char *sink_name = e->cfg->sinks[0].name;
    char sink[256], class[64], status[16], stage[32];
    struct part *p = rec->part;
    void *h = rec->handle;
    int selected;

    ctx_header(h, DLQ_H_SINK, sink, sizeof(sink));
    if (strcmp(sink, sink_name) != 0 && strcmp(sink, DLQ_SINK_ALL) != 0) {
        e->replay_foreign++;
        offsets_done(p->offsets, slot);
        p->from->src->release(h);
        return 1;
    }
    ctx_header(h, DLQ_H_CLASS, class, sizeof(class));
    ctx_header(h, DLQ_H_STATUS, status, sizeof(status));
    ctx_header(h, DLQ_H_STAGE, stage, sizeof(stage));
    selected = (o->reason == NULL ||
                dlqcmd_reason_matches(o->reason, class[0] ? class : NULL,
                                      dlqcmd_parse_status(
                                          status[0] ? status : NULL,
                                          strlen(status)))) &&
               (o->since_ms == 0 || rec->timestamp_ms >= o->since_ms);
    if (selected && replays_of(h) >= (unsigned)e->cfg->dlq.max_replays &&
        !o->force) {
        e->replay_guarded++;
        selected = -1;
    } else if (!selected) {
        e->replay_kept++;
    }
    if (selected == 1) {
        e->replay_selected++;
        if (o->limit > 0 && e->replay_selected >= (uint64_t)o->limit) {
            e->replay_limited = 1;
            e->main.src->suspend(e->main.h, 1);
        }
    }
    if (o->dry_run) {
        char topic[256];
        printf("%s %d:%lld stage=%s class=%s status=%s replays=%u source=%s/"
               "%lld/%lld\n",
               selected == 1 ? "replay" : selected < 0 ? "skip  " : "keep  ",
               (int)rec->partition, (long long)rec->offset, stage, class,
               status[0] ? status : "-", replays_of(h),
               ctx_header(h, DLQ_H_TOPIC, topic, sizeof(topic)),
               (long long)ctx_number(h, DLQ_H_PARTITION, -1),
               (long long)ctx_number(h, DLQ_H_OFFSET, -1));
        offsets_done(p->offsets, slot);
        p->from->src->release(h);
        return 1;
    }
    if (selected != 1) {
        replay_keep(e, rec, slot);
        return 1;
    }
    struct replay_src *r = record_src(e, rec);
    if (r == NULL) {
        e->fatal = 1;
        p->from->src->release(h);
        return 1;
    }
    *src = r;
    return 0;
}

/* Where a DLQ or retry-topic record came from (its context headers);
 * NULL when out of memory. */
static struct replay_src *record_src(engine_t *e, const struct source_record *rec)
{
    struct replay_src *r = calloc(1, sizeof(*r));
    void *h = rec->handle;

    (void)e;
    if (r == NULL) {
        return NULL;
    }
    ctx_header(h, DLQ_H_TOPIC, r->topic, sizeof(r->topic));
    r->partition = (int32_t)ctx_number(h, DLQ_H_PARTITION, -1);
    r->offset = ctx_number(h, DLQ_H_OFFSET, -1);
    r->timestamp_ms = ctx_number(h, DLQ_H_TIMESTAMP, -1);
    ctx_header(h, DLQ_H_DEDUPE, r->dedupe, sizeof(r->dedupe));
    if (r->dedupe[0] == '\0') {
        engine_dedupe_key(r->dedupe, sizeof(r->dedupe), NULL, 0, r->topic,
                          r->partition, r->offset);
    }
    return r;
}

/* The output of a replayed or drained record that goes out: the one
 * whose dedupe key is the failed one's (a split part), or -1 for all of
 * them (the record failed before the split, or the fixed transform names
 * its parts anew). */
static int replay_pick(engine_t *e, int n, const struct replay_src *src)
{
    for (int i = 0; i < n; i++) {
        const struct transform_out *o = transform_output(e->tf, (size_t)i);
        const char *key = o->dedupe_key != NULL ? o->dedupe_key : src->dedupe;
        if (strcmp(key, src->dedupe) == 0) {
            return i;
        }
    }
    return -1;
}

/* The pipeline transform raised on rec (or rec has no dedupe key and
 * dedupe.missing says dead_letter): the record goes to the pipeline's
 * DLQ (sink *, the given stage and class) and to no sink; it counts as
 * handled once the DLQ has it. */
static void record_dead_letter(engine_t *e, const struct source_record *rec,
                               uint64_t slot, const char *dedupe,
                               const char *stage, const char *class,
                               const char *why, struct replay_src *src)
{
    struct delivery *d = carrier_new(e, rec, slot, dedupe);

    if (d == NULL) {
        free(src);
        return;
    }
    if (src != NULL) {
        d->msg->src = src;
        d->msg->replays = replays_of(rec->handle) +
                           !is_drain((struct part *)rec->part);
    }
    dead_letter(e, d, DEAD_LETTER, stage, class, why, NULL);
    check_bounds_after_add(e, rec->part);
}

static void on_record(void *arg, const struct source_record *rec)
{
    engine_t *e = ((struct feed *)arg)->e;
    struct part *p = rec->part;
    struct msg *msgs[64], **out = msgs;
    uint64_t slot;
    int n = 1, rc;
    const char *dedupe = NULL;
    struct transform_out plain = {.unchanged = 1};
    struct replay_src *src = NULL;
    int only = -1; /* replay or drain: the one output that goes out */
    struct rec_trace trace;

    if (e->replay_limited ||
        (e->opts.replay != NULL && p->end >= 0 && rec->offset >= p->end)) {
        /* Past --limit, or past the end the replay started with (records
         * it keeps for later land there): not taken, not committed. */
        if (!e->replay_limited && !p->self_paused) {
            p->self_paused = 1;
            part_apply_pause(e, p);
        }
        record_release(rec);
        return;
    }
    p->consumed = rec->offset + 1;
    rc = offsets_track(p->offsets, rec->offset, &slot);
    if (rc != 0) {
        /* Below what this partition already tracks: a duplicate of a
         * record in flight or done, which must not move the watermark. */
        if (rc == -1) {
            log_warn("%s [%d] offset %lld arrived again: skipped",
                     rec->topic, (int)rec->partition,
                     (long long)rec->offset);
        } else {
            e->fatal = 1;
            log_error("out of memory tracking %s [%d] offset %lld",
                      rec->topic, (int)rec->partition,
                      (long long)rec->offset);
        }
        record_release(rec);
        return;
    }
    if (is_drain(p)) {
        /* A parked message back from its sink's retry topic. */
        src = record_src(e, rec);
        if (src == NULL) {
            e->fatal = 1;
            log_error("out of memory draining %s [%d] offset %lld",
                      rec->topic, (int)rec->partition, (long long)rec->offset);
            record_release(rec);
            return;
        }
    } else {
        e->consumed++;
    }
    if (e->opts.replay != NULL &&
        replay_select(e, rec, slot, &src) != 0) {
        return; /* not replayed: done with, or kept for later */
    }
    trace_begin(e, rec, &trace);
    if (src != NULL) {
        dedupe = src->dedupe;
    } else if ((dedupe = record_dedupe(e, rec)) == NULL) {
        char why[300];
        snprintf(why, sizeof(why), "no dedupe key: `%s` gives none "
                 "(dedupe.missing: dead_letter)", e->cfg->dedupe.key);
        e->no_key_dead_lettered++;
        trace_record_end(e, &trace, p, rec->offset, why);
        record_dead_letter(e, rec, slot, NULL, DLQ_STAGE_DEDUPE,
                           DLQ_CLASS_NO_KEY, why, NULL);
        return;
    }
    if (e->tf != NULL) {
        struct sl_error err;
        struct connector_msg *in = &e->view;

        record_view(e, rec, dedupe, in);
        if (src != NULL) {
            in->topic = src->topic;
            in->partition = src->partition;
            in->offset = src->offset;
            in->timestamp_ms = src->timestamp_ms;
        }
        in->trace_id = trace_hex_of(&trace, e->trace_hex);
        uint64_t t0 = e->board != NULL ? metrics_now_ns() : 0;
        uint64_t span_t0 = trace_sampled(&trace) ? unix_ns() : 0;
        n = transform_run(e->tf, in, &err);
        if (e->board != NULL) {
            metrics_observe(&e->transform_time, METRICS_TRANSFORM,
                            metrics_now_ns() - t0);
        }
        if (span_t0 != 0) {
            trace_transform(e, &trace, span_t0, n, err.msg);
        }
        if (n <= 0) {
            trace_record_end(e, &trace, p, rec->offset,
                             n < 0 ? "transform failed" : NULL);
        }
        if (n < 0) {
            e->transform_failed++;
            record_dead_letter(e, rec, slot, dedupe, DLQ_STAGE_TRANSFORM,
                               DLQ_CLASS_TRANSFORM, err.msg, src);
            return;
        }
        if (n == 0) {
            e->dropped++;
            free(src);
            if (p->from->src->settle != NULL) {
                p->from->src->settle(rec->handle,
                                     &(struct source_verdict){
                                         .fate = SOURCE_DROPPED});
            }
            offsets_done(p->offsets, slot);
            record_release(rec);
            return;
        }
        if (src != NULL && (only = replay_pick(e, n, src)) >= 0) {
            n = 1;
        }
        if ((size_t)n > sizeof(msgs) / sizeof(msgs[0]) &&
            (out = malloc((size_t)n * sizeof(*out))) == NULL) {
            goto oom;
        }
    }
    /* Take every output in first: the sinks' transforms reuse the
     * scratch the outputs still point into. */
    for (int i = 0; i < n; i++) {
        const struct transform_out *o =
            e->tf != NULL
                ? transform_output(e->tf, (size_t)(only >= 0 ? only : i))
                : &plain;
        struct msg *m = msg_alloc(e);
        if (m == NULL) {
            n = i;
            goto oom;
        }
        out[i] = m;
        m->handle = i == 0 ? rec->handle : NULL;
        m->origin = out[0];
        if (i == 0) {
            m->trace = trace;
        }
        if (i == 0 && src != NULL) {
            m->src = src;
            m->replays = replays_of(rec->handle) + !is_drain(p);
            src = NULL; /* the origin owns it */
        }
        m->slot = slot;
        m->pending = (unsigned)e->nsinks;
        if (msg_fill(e, m, rec, o, dedupe) != 0) {
            n = i + 1;
            goto oom;
        }
    }
    for (int i = 0; i < n; i++) {
        p->refs++;
        if (!is_drain(p)) {
            e->inflight_bytes += out[i]->bytes;
        }
    }
    if (e->tf != NULL && !out[0]->transformed) {
        /* The view the transform saw is this msg's: the sinks'
         * transforms and the first sends need not look it up again. */
        e->view.dedupe_key = out[0]->dedupe;
        e->view_msg = out[0];
    }
    out[0]->outputs = (unsigned)n;
    out[0]->ack_left = (unsigned)n;
    p->inflight++;
    if (!is_drain(p)) {
        e->inflight++;
    }
    for (int i = 0; i < n; i++) {
        struct msg *m = out[i];
        size_t before = m->bytes;
        if (msg_enqueue(e, m, (size_t)(only >= 0 ? only : i)) != 0) {
            e->fatal = 1;
            log_error("out of memory queueing %s [%d] offset %lld",
                      rec->topic, (int)rec->partition,
                      (long long)rec->offset);
            break;
        }
        if (!is_drain(p)) {
            e->inflight_bytes += m->bytes - before;
        }
        if (m->pending == 0) {
            msg_done(e, m);
        }
    }
    if (out != msgs) {
        free(out);
    }
    for (size_t i = 0; i < e->nsinks; i++) {
        sink_pump(&e->sinks[i]);
    }
    check_bounds_after_add(e, p);
    return;
oom:
    e->fatal = 1;
    free(src);
    log_error("out of memory: stopping; %s [%d] offset %lld is not "
              "committed and will be redelivered",
              rec->topic, (int)rec->partition, (long long)rec->offset);
    for (int i = 0; i < n; i++) {
        msg_free(e, out[i]);
    }
    if (out != msgs) {
        free(out);
    }
    record_release(rec);
}

static void on_fatal(void *arg, const char *reason)
{
    engine_t *e = ((struct feed *)arg)->e;

    log_error("fatal: %s", reason);
    e->fatal = 1;
}

/* ---- signals and progress ---- */

static void signal_ready(struct loop_io *io, uint32_t events)
{
    engine_t *e = container_of(io, engine_t, sig_io);
    struct signalfd_siginfo si;

    (void)events;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (e->stopping) {
            log_warn("second signal: stopping without waiting for "
                     "in-flight messages");
            e->forced = 1;
        } else {
            log_info("signal %s: draining in-flight messages",
                     strsignal((int)si.ssi_signo));
            e->stopping = 1;
        }
    }
}

/* Appends " <name><suffix>=<value>" to line when value is not 0. */
static enum metrics_sink_state sink_state(const struct sink *s);

static const char *const sink_state_names[] = {"ok", "retrying",
                                               "breaker_open", "paused",
                                               "parking"};

/* Records of the assigned partitions not yet committed (high watermark
 * minus committed offset), where both are known. */
static uint64_t lag_of(engine_t *e)
{
    uint64_t lag = 0;

    for (struct part *p = e->parts; p != NULL; p = p->next) {
        int64_t high;
        if (is_drain(p) || p->committed < 0) {
            continue;
        }
        high = feed_high_watermark(&e->main, p);
        if (high > p->committed) {
            lag += (uint64_t)(high - p->committed);
        }
    }
    return lag;
}

/* The counters of a progress or summary line, as text (" k=v" each) or
 * as JSON members; 0 counters are left out. */
static size_t progress_counters(engine_t *e, int json, int final, char *line,
                                size_t n, size_t cap)
{
#define PUT(...)                                                               \
    do {                                                                       \
        if (n < cap) {                                                         \
            n += (size_t)snprintf(line + n, cap - n, __VA_ARGS__);             \
        }                                                                      \
    } while (0)
    const uint64_t pipeline[] = {e->dropped, e->transform_failed,
                                 e->transform_dead_lettered,
                                 e->dlq_write_failures,
                                 e->no_key_dead_lettered, e->store_errors,
                                 final ? e->inflight : 0};
    static const char *const pipeline_names[] = {
        "dropped", "transform_failed", "transform_dead_lettered",
        "dlq_write_failures", "no_key_dead_lettered", "store_errors",
        "uncommitted"};

    for (size_t i = 0; i < sizeof(pipeline) / sizeof(pipeline[0]); i++) {
        if (pipeline[i] != 0) {
            PUT(json ? ",\"%s\":%llu" : " %s=%llu", pipeline_names[i],
                (unsigned long long)pipeline[i]);
        }
    }
    if (json) {
        PUT(",\"sinks\":{");
    }
    for (size_t i = 0; i < e->nsinks; i++) {
        const struct sink *s = &e->sinks[i];
        const uint64_t v[] = {s->failed, s->skipped, s->already_handled,
                              s->applied, s->gave_up, s->done_by_policy,
                              s->dead_lettered, s->breaker_opens, s->parked};
        static const char *const names[] = {
            "failed", "skipped", "already_handled", "applied", "gave_up",
            "done_by_policy", "dead_lettered", "breaker_opens", "parked"};
        if (json) {
            /* Sink names are [A-Za-z0-9_-]: nothing to escape. */
            PUT("%s\"%s\":{\"delivered\":%llu,\"state\":\"%s\"", i ? "," : "",
                s->cfg->name, (unsigned long long)s->delivered,
                sink_state_names[sink_state(s)]);
        }
        for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++) {
            if (v[k] == 0) {
                continue;
            }
            if (json) {
                PUT(",\"%s\":%llu", names[k], (unsigned long long)v[k]);
            } else {
                PUT(" %s_%s=%llu", s->cfg->name, names[k],
                    (unsigned long long)v[k]);
            }
        }
        if (json) {
            PUT("}");
        } else if (!final && sink_state(s) != METRICS_SINK_OK) {
            PUT(" %s_state=%s", s->cfg->name,
                sink_state_names[sink_state(s)]);
        }
    }
    if (json) {
        PUT("}");
    }
#undef PUT
    return n < cap ? n : cap - 1;
}

/* The progress line (final: the summary). A progress line is printed
 * only when something other than the rate changed since the last one. */
static void print_progress(engine_t *e, int final)
{
    char line[2048], rate_text[48];
    uint64_t now = loop_now(e->loop);
    uint64_t elapsed = now - e->progress_at;
    double rate = elapsed > 0 ? (double)(e->consumed - e->progress_consumed) *
                                    1000.0 / (double)elapsed
                              : 0;
    int json = log_json();
    size_t n = 0, rate_at;

    if (json) {
        n = (size_t)snprintf(line, sizeof(line),
                             "\"consumed\":%llu,\"in_flight\":%zu",
                             (unsigned long long)e->consumed, e->inflight);
    } else {
        n = (size_t)snprintf(line, sizeof(line),
                             "%sconsumed=%llu in_flight=%zu",
                             final ? "summary " : "",
                             (unsigned long long)e->consumed, e->inflight);
    }
    rate_at = n;
    n += (size_t)snprintf(line + n, sizeof(line) - n,
                          json ? ",\"lag\":%llu" : " lag=%llu",
                          (unsigned long long)lag_of(e));
    for (size_t i = 0; !json && i < e->nsinks; i++) {
        n += (size_t)snprintf(line + n, sizeof(line) - n, " %s=%llu",
                              e->sinks[i].cfg->name,
                              (unsigned long long)e->sinks[i].delivered);
    }
    n = progress_counters(e, json, final, line, n, sizeof(line) - 48);
    if (!final) {
        if (e->progress_last != NULL && strcmp(e->progress_last, line) == 0) {
            e->progress_at = now;
            e->progress_consumed = e->consumed;
            return;
        }
        free(e->progress_last);
        e->progress_last = strdup(line);
    }
    e->progress_at = now;
    e->progress_consumed = e->consumed;
    /* The rate goes in after the comparison, beside in_flight. */
    snprintf(rate_text, sizeof(rate_text),
             json ? ",\"rate\":%.0f" : " rate=%.0f/s", rate);
    memmove(line + rate_at + strlen(rate_text), line + rate_at,
            n - rate_at + 1);
    memcpy(line + rate_at, rate_text, strlen(rate_text));
    if (json) {
        log_write_object(LOG_INFO, final ? "summary" : "progress", line);
    } else if (final) {
        log_info("%s", line);
    } else if (isatty(STDERR_FILENO)) {
        fprintf(stderr, "\r%s\033[K", line);
    } else {
        fprintf(stderr, "progress %s\n", line);
    }
}

static void progress_fired(struct loop_timer *t)
{
    engine_t *e = container_of(t, engine_t, progress_timer);

    print_progress(e, 0);
    loop_timer_start(e->loop, t, 1000);
}

/* ---- lifecycle ---- */

/* Names this worker in DLQ records: its static membership id when it has
 * one, else host and pid. */
static void worker_id(const struct cfg *cfg, char *out, size_t cap)
{
    char host[64] = "?";

    for (size_t i = 0; i < cfg->source.properties.count; i++) {
        if (strcmp(cfg->source.properties.keys[i], "group.instance.id") ==
            0) {
            snprintf(out, cap, "%s", cfg->source.properties.values[i]);
            return;
        }
    }
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(out, cap, "%s-%d", host, (int)getpid());
}

struct cfg *engine_load_config(const char *path, FILE *errf)
{
    struct cfg_errors *errs = calloc(1, sizeof(*errs));
    struct cfg *cfg;

    if (errs == NULL) {
        fprintf(errf, "sluice: out of memory\n");
        return NULL;
    }
    cfg = cfg_load(path, errs);
    /* Both checks run, so that every bad property is reported at once. */
    if (cfg != NULL &&
        (source_of(cfg)->check != NULL &&
         source_of(cfg)->check(cfg, errs) != 0) +
                (cfg->source_type == CFG_SOURCE_KAFKA &&
                 dlq_check_config(cfg, errs) != 0) >
            0) {
        cfg_free(cfg);
        cfg = NULL;
    }
    if (cfg != NULL) {
        /* Load the scripts once: every syntax error or missing function
         * fails here, at start, at the YAML key and the script's line. */
        if (cfg_transform_check(cfg, errs) != 0) {
            cfg_free(cfg);
            cfg = NULL;
        }
    }
    if (cfg == NULL) {
        fputs(errs->text, errf);
        fprintf(errf, "sluice: %d error(s) in %s\n", errs->count, path);
    }
    free(errs);
    return cfg;
}

/* A copy of cfg whose source is topics on the DLQ's cluster (brokers),
 * read from the start as group: what a drain and a replay consume. The
 * copy shares cfg's values and owns none; free() it. NULL: no memory. */
static struct cfg *dlq_source_cfg(const struct cfg *cfg, char **topics,
                                  size_t count, char *group,
                                  const char *brokers)
{
    struct cfg *c = malloc(sizeof(*c));

    if (c == NULL) {
        return NULL;
    }
    *c = *cfg;
    c->source.topics.items = topics;
    c->source.topics.count = count;
    c->source.group = group;
    c->source.start = CFG_START_EARLIEST;
    c->source.brokers = (char *)brokers;
    c->dlq.brokers = (char *)brokers;
    /* The source's client settings hold only on the source's cluster. */
    if (strcmp(cfg->dlq.brokers, cfg->source.brokers) != 0) {
        c->source.properties = cfg->dlq.properties;
    }
    return c;
}

/* Starts the drain of s's retry topic: a consumer of its own group
 * (`<group>.retry.<sink>`) on the DLQ's cluster. What it finds not yet
 * drained makes s start parked, so its keys stay in order. */
static int drain_open(engine_t *e, struct sink *s, const char *bootstrap,
                      const struct source_callbacks *cb,
                      struct sl_error *err)
{
    const struct cfg *cfg = e->cfg;
    struct cfg *dc;
    char *group = NULL;
    int64_t starts[1024], ends[1024];
    struct source_callbacks dcb = *cb;

    if (asprintf(&group, "%s.retry.%s", cfg->source.group, s->cfg->name) <
        0) {
        return sl_error_set(err, "out of memory");
    }
    dc = dlq_source_cfg(cfg, &s->retry_topic, 1, group, cfg->dlq.brokers);
    if (dc == NULL) {
        free(group);
        return sl_error_set(err, "out of memory");
    }
    s->drain = (struct feed){
        .e = e, .src = &kafka_source, .drain = s, .cfg = dc};
    dcb.arg = &s->drain;
    s->drain.h = consumer_new(dc, bootstrap, e->loop, &dcb, err);
    if (s->drain.h == NULL) {
        return -1;
    }
    s->park_max_cap = 1024;
    s->park_max = malloc(s->park_max_cap * sizeof(*s->park_max));
    if (s->park_max == NULL) {
        return sl_error_set(err, "out of memory");
    }
    for (size_t r = 0; r < s->park_max_cap; r++) {
        s->park_max[r] = -1;
    }
    int n = consumer_backlog(s->drain.h, s->retry_topic, starts, ends,
                             1024, 10000);
    int64_t left = 0;
    for (int r = 0; r < n; r++) {
        if (starts[r] < ends[r]) {
            s->park_max[r] = ends[r] - 1;
            left += ends[r] - starts[r];
        }
    }
    if (left > 0) {
        s->parking = 1;
        log_warn("sink %s: %lld message(s) wait in %s: it starts parked, "
                 "so that each key stays in order, until they are drained",
                 s->cfg->name, (long long)left, s->retry_topic);
    }
    return 0;
}

/* ---- the admin server ---- */

static double breaker_number(enum breaker_state b)
{
    return b == BREAKER_OPEN ? 2 : b == BREAKER_HALF_OPEN ? 1 : 0;
}

static enum metrics_sink_state sink_state(const struct sink *s)
{
    if (s->paused || s->e->paused) {
        return METRICS_SINK_PAUSED;
    }
    if (s->parking) {
        return METRICS_SINK_PARKING;
    }
    if (s->breaker != BREAKER_CLOSED) {
        return METRICS_SINK_BREAKER_OPEN;
    }
    if (s->consecutive > 0 || s->retry_waiting > 0) {
        return METRICS_SINK_RETRYING;
    }
    return METRICS_SINK_OK;
}

static void fill_sink(engine_t *e, const struct sink *s,
                      struct metrics_sink *out, uint64_t now)
{
    size_t len;

    out->name = s->cfg->name;
    out->delivered = (double)s->delivered;
    out->failed = (double)s->failed;
    out->retried = (double)s->retried;
    out->dead_lettered = (double)s->dead_lettered;
    out->skipped_dedupe = (double)s->already_handled;
    out->skipped_transform = (double)s->skipped;
    out->applied = (double)s->applied;
    out->parked = (double)s->parked;
    out->in_flight = (double)s->inflight;
    out->pending = (double)s->pending;
    out->oldest_age_s =
        s->pend_head != NULL && now > s->pend_head->msg->consumed_ms
            ? (double)(now - s->pend_head->msg->consumed_ms) / 1000.0
            : 0;
    out->breaker = breaker_number(s->breaker);
    out->paused = s->paused || e->paused;
    out->state = sink_state(s);
    out->latency = s->latency;
    /* A sink may echo what it was sent: secrets go before it leaves. */
    len = strlen(s->last_error);
    memcpy(out->last_error, s->last_error, len + 1);
    redact_apply(e->redact, out->last_error, &len,
                 sizeof(out->last_error) - 1);
    out->last_error[len] = '\0';
}

/* Copies the lane's figures into a new snapshot for the admin thread. */
static void metrics_publish(engine_t *e)
{
    const struct source_stats *cs =
        e->main.h != NULL ? e->main.src->stats(e->main.h) : NULL;
    struct metrics_snapshot *m;
    size_t nparts = 0, k = 0;
    uint64_t now = loop_now(e->loop);

    for (struct part *p = e->parts; p != NULL; p = p->next) {
        nparts += !is_drain(p);
    }
    m = metrics_new(e->nsinks, nparts);
    if (m == NULL) {
        return; /* the previous figures stay up; the next tick tries */
    }
    m->pipeline = e->cfg->pipeline;
    m->group = e->cfg->source.group;
    m->taken_unix_ms = wall_ms();
    m->consumed = (double)e->consumed;
    m->transform_errors = (double)e->transform_failed;
    m->in_flight = (double)e->inflight;
    m->paused = e->paused;
    m->dlq_written = (double)e->dlq_written;
    m->store_errors = (double)e->store_errors;
    if (e->tracer != NULL) {
        struct tracer_stats ts;
        tracer_get_stats(e->tracer, &ts);
        m->spans_exported = (double)ts.exported;
        m->spans_dropped = (double)ts.dropped;
    }
    m->transform = e->transform_time;
    m->stopping = e->stopping;
    if (cs != NULL) {
        m->rebalances_assign = (double)cs->assigns;
        m->rebalances_revoke = (double)cs->revokes;
        m->commits = (double)cs->commits;
        m->commit_failures = (double)cs->commit_failures;
        m->commit = cs->commit_time;
        m->rebalance = cs->revoke_time;
    }
    if (e->fatal) {
        snprintf(m->not_ready, sizeof(m->not_ready), "stopping on an error");
    } else if (e->stopping) {
        snprintf(m->not_ready, sizeof(m->not_ready), "stopping");
    } else if (cs == NULL || !cs->assigned) {
        snprintf(m->not_ready, sizeof(m->not_ready),
                 "waiting for the group's assignment");
    }
    m->ready = m->not_ready[0] == '\0';
    for (size_t i = 0; i < e->nsinks; i++) {
        fill_sink(e, &e->sinks[i], &m->sinks[i], now);
    }
    for (struct part *p = e->parts; p != NULL; p = p->next) {
        struct metrics_partition *mp;
        int64_t high;
        if (is_drain(p)) {
            continue;
        }
        mp = &m->partitions[k++];
        snprintf(mp->topic, sizeof(mp->topic), "%s", p->topic);
        mp->partition = p->partition;
        mp->committed = (double)p->committed;
        mp->consumed = (double)p->consumed;
        high = feed_high_watermark(&e->main, p);
        mp->high_watermark = (double)high;
        mp->lag = high >= 0 && p->committed >= 0 && high >= p->committed
                      ? (double)(high - p->committed)
                      : -1;
    }
    metrics_board_publish(e->board, m);
    metrics_board_beat(e->board, now);
}

static void metrics_fired(struct loop_timer *t)
{
    engine_t *e = container_of(t, engine_t, metrics_timer);

    metrics_publish(e);
    loop_timer_start(e->loop, t, METRICS_INTERVAL_MS);
}

static void admin_apply(engine_t *e, const struct admin_command *c)
{
    if (c->sink >= 0) {
        struct sink *s = &e->sinks[c->sink];
        if (s->paused != c->pause) {
            s->paused = c->pause;
            log_info("sink %s %s through the admin API", s->cfg->name,
                     c->pause ? "paused" : "resumed");
        }
    } else if (e->paused != c->pause) {
        e->paused = c->pause;
        log_info("pipeline %s %s through the admin API", e->cfg->pipeline,
                 c->pause ? "paused" : "resumed");
        for (struct part *p = e->parts; p != NULL; p = p->next) {
            part_apply_pause(e, p);
        }
    }
    if (!c->pause) {
        for (size_t i = 0; i < e->nsinks; i++) {
            if (!loop_timer_armed(&e->sinks[i].pump)) {
                loop_timer_start(e->loop, &e->sinks[i].pump, 0);
            }
        }
    }
}

static void admin_ready(struct loop_io *io, uint32_t events)
{
    engine_t *e = container_of(io, engine_t, admin_io);
    struct admin_command c;

    (void)events;
    while (admin_take(e->admin, &c)) {
        admin_apply(e, &c);
        metrics_publish(e); /* /status shows it at once */
        admin_applied(e->admin, c.id);
    }
}

/* Starts the span exporter (tracing.otlp_endpoint). 0 or -1. */
static int tracer_open(engine_t *e, struct sl_error *err)
{
    const struct cfg_tracing *t = &e->cfg->tracing;
    struct tracer_options o = {
        .endpoint = t->otlp_endpoint,
        .sample_ratio = t->sample_ratio,
        .service_name = t->service_name,
        .pipeline = e->cfg->pipeline,
        .max_buffer_bytes = (size_t)t->max_buffer_bytes,
        .max_batch_spans = (size_t)t->batch_size,
        .batch_delay_ms = t->batch_delay_ms,
        .timeout_ms = t->timeout_ms,
    };

    e->trace_host = (struct connector_host){
        .sink_name = "tracing",
        .max_in_flight = 1,
        .engine = e,
    };
    loop_fill_host(e->loop, &e->trace_host);
    e->tracer = tracer_new(&o, &e->trace_host, err);
    return e->tracer != NULL ? 0 : -1;
}

/* Starts the admin server on listen (NULL: none). 0 or -1. */
static int admin_open(engine_t *e, const char *listen, struct sl_error *err)
{
    if (listen == NULL) {
        return 0;
    }
    e->board = metrics_board_new();
    if (e->board == NULL) {
        return sl_error_set(err, "out of memory");
    }
    e->admin = admin_new(listen, e->board,
                         (const char *const *)e->sink_names, e->nsinks, err);
    if (e->admin == NULL) {
        return -1;
    }
    e->admin_io.fd = admin_fd(e->admin);
    e->admin_io.fn = admin_ready;
    if (loop_io_add(e->loop, &e->admin_io, LOOP_READABLE) != 0) {
        return sl_error_set(err, "admin: cannot watch its queue");
    }
    metrics_publish(e);
    loop_timer_start(e->loop, &e->metrics_timer, METRICS_INTERVAL_MS);
    log_info("admin server on port %d (listening on %s)",
             admin_port(e->admin), listen);
    return 0;
}

/* Opens the marker store the pipeline names, for this engine's sinks. */
static int store_open(engine_t *e, struct sl_error *err)
{
    const struct cfg *cfg = e->cfg;
    struct sl_error serr;

    e->store_info = (struct store_info){
        .pipeline = cfg->pipeline,
        .sinks = e->sink_names,
        .sink_count = e->nsinks,
        .ttl_ms = cfg->dedupe.ttl_ms,
    };
    e->store_host.done = on_store_done;
    e->store_host.engine = e;
    loop_fill_host(e->loop, &e->store_host.loop);
    if (cfg->dedupe.store->open(cfg->dedupe.ctx, &e->store_info,
                                &e->store_host, &serr) != 0) {
        cfg->dedupe.store->close(cfg->dedupe.ctx);
        return sl_error_set(err, "markers (dedupe.store %s): %s",
                            cfg->dedupe.store->name, serr.msg);
    }
    e->store = cfg->dedupe.store;
    e->store_ctx = cfg->dedupe.ctx;
    /* About one in-flight window of keys: a duplicate further apart is
     * looked up after the first's marker is written. */
    e->recent = recent_new(cfg->delivery.max_in_flight < 1024
                               ? 1024
                               : (size_t)cfg->delivery.max_in_flight);
    if (e->recent == NULL) {
        return sl_error_set(err, "out of memory");
    }
    return 0;
}

engine_t *engine_new(const struct cfg *cfg, const struct engine_options *o,
                     struct sl_error *err)
{
    engine_t *e = calloc(1, sizeof(*e));
    sigset_t mask;
    const char *bootstrap = cfg->source.brokers;
    size_t buckets = 1024;

    if (e == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    e->cfg = cfg;
    e->opts = *o;
    e->shadow = cfg->mode == CFG_MODE_SHADOW;
    e->main = (struct feed){.e = e, .src = source_of(cfg)};
    e->ack_sink = e->main.src->ack_sink != NULL ? e->main.src->ack_sink(cfg)
                                                 : -1;
    /* Without a DLQ: a shadow run (its outcome lines say it all) and a
     * source that answers its producer (the answer does). */
    e->no_dlq = e->shadow || e->ack_sink >= 0;
    e->sigfd = -1;
    e->nsinks = cfg->sink_count;
    e->msg_size = sizeof(struct msg) + e->nsinks * sizeof(struct delivery);
    e->rng = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid();
    e->rng |= 1;
    loop_timer_init(&e->commit_timer, commit_fired);
    loop_timer_init(&e->park_timer, park_fired);
    loop_timer_init(&e->hold_timer, hold_fired);
    loop_timer_init(&e->progress_timer, progress_fired);
    loop_timer_init(&e->metrics_timer, metrics_fired);
    loop_timer_init(&e->store_flush_timer, store_flush_fired);
    loop_timer_init(&e->store_retry_timer, store_retry_fired);
    e->queued_tail = &e->queued;
    e->failed_tail = &e->failed;
    e->store_delay = STORE_RETRY_MS;

    /* Block the signals before librdkafka starts threads, so they all
     * reach our signalfd. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    e->redact = redact_new(cfg);
    if (e->redact == NULL) {
        sl_error_set(err, "out of memory");
        goto fail;
    }
    worker_id(cfg, e->worker_id, sizeof(e->worker_id));
    e->tf = cfg_transform_new(cfg, err);
    if (e->tf == NULL) {
        goto fail;
    }
    if (!transform_active(e->tf)) {
        /* No scripts: records go straight to the sinks, zero copy. */
        transform_destroy(e->tf);
        e->tf = NULL;
    }
    for (size_t k = 0; e->tf != NULL && k < cfg->sink_count; k++) {
        e->sink_transforms |= transform_has_sink(e->tf, k);
    }
    e->loop = loop_new(err);
    if (e->loop == NULL) {
        goto fail;
    }
    e->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    e->sig_io.fd = e->sigfd;
    e->sig_io.fn = signal_ready;
    if (e->sigfd < 0 || loop_io_add(e->loop, &e->sig_io, LOOP_READABLE)) {
        sl_error_set(err, "signalfd: %s", strerror(errno));
        goto fail;
    }

    while (buckets < (size_t)cfg->delivery.max_in_flight &&
           buckets < ((size_t)1 << 20)) {
        buckets *= 2;
    }
    e->sinks = calloc(e->nsinks, sizeof(*e->sinks));
    if (e->sinks == NULL) {
        sl_error_set(err, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < e->nsinks; i++) {
        loop_timer_init(&e->sinks[i].pump, pump_fired);
        loop_timer_init(&e->sinks[i].breaker_timer, breaker_fired);
    }
    for (size_t i = 0; i < e->nsinks; i++) {
        struct sink *s = &e->sinks[i];
        s->e = e;
        s->idx = i;
        s->cfg = &cfg->sinks[i];
        s->dlq_topic = cfg_sink_dlq_topic(cfg, i);
        /* Parking writes to a retry topic: none without a DLQ. */
        if (s->cfg->park_after_ms > 0 && o->replay == NULL && !e->no_dlq &&
            asprintf(&s->retry_topic, "%s.retry.%s", cfg->pipeline,
                     s->cfg->name) < 0) {
            s->retry_topic = NULL;
            sl_error_set(err, "out of memory");
            goto fail;
        }
        s->mask = buckets - 1;
        s->buckets = calloc(buckets, sizeof(*s->buckets));
        if (s->buckets == NULL) {
            sl_error_set(err, "out of memory");
            goto fail;
        }
        s->host = (struct connector_host){
            .sink_name = s->cfg->name,
            .max_in_flight = (int)s->cfg->max_in_flight,
            .complete = on_complete,
            .engine = e,
        };
        loop_fill_host(e->loop, &s->host);
        struct sl_error cerr;
        if (s->cfg->connector->open(s->cfg->ctx, &s->host, &cerr) != 0) {
            sl_error_set(err, "sink %s: %s", s->cfg->name, cerr.msg);
            goto fail;
        }
        s->opened = 1;
        if (s->cfg->connector->describe != NULL) {
            s->cfg->connector->describe(s->cfg->ctx, &s->about);
        }
    }

    e->sink_names = calloc(e->nsinks, sizeof(*e->sink_names));
    if (e->sink_names == NULL) {
        sl_error_set(err, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < e->nsinks; i++) {
        e->sink_names[i] = e->sinks[i].cfg->name;
    }
    /* Before the consumer: /healthz answers while the group forms. */
    if (admin_open(e, o->admin_listen != NULL ? o->admin_listen
                                              : cfg->admin.listen,
                   err) != 0) {
        goto fail;
    }
    /* A shadow run leaves production's markers alone. */
    if (cfg->dedupe.store != NULL && !e->shadow && store_open(e, err) != 0) {
        goto fail;
    }
    if ((cfg->outcomes.path != NULL || cfg->outcomes.topic != NULL) &&
        o->replay == NULL) {
        e->outcomes = outcomes_new(cfg, err);
        if (e->outcomes == NULL) {
            goto fail;
        }
    }
    if (cfg->tracing.otlp_endpoint != NULL && tracer_open(e, err) != 0) {
        goto fail;
    }
    const char *dlq_bootstrap = cfg->dlq.brokers != NULL ? cfg->dlq.brokers
                                                         : "";
    if (bootstrap == NULL) {
        bootstrap = ""; /* a source without Kafka */
    }
    if (strcmp(bootstrap, "embedded") == 0 ||
        strcmp(dlq_bootstrap, "embedded") == 0) {
        e->embedded = embedded_start(cfg, err);
        if (e->embedded == NULL) {
            goto fail;
        }
        if (strcmp(bootstrap, "embedded") == 0) {
            bootstrap = embedded_bootstrap(e->embedded);
        }
        if (strcmp(dlq_bootstrap, "embedded") == 0) {
            dlq_bootstrap = embedded_bootstrap(e->embedded);
        }
    }
    e->dlq = e->no_dlq ? NULL
                       : dlq_new(cfg, dlq_bootstrap, e->loop, on_dlq_done,
                                 e, err);
    if (e->dlq == NULL && !e->no_dlq) {
        goto fail;
    }
    if (strcmp(dlq_bootstrap, "embedded") != 0 && !e->no_dlq) {
        const char **topics = calloc(2 * e->nsinks + 1, sizeof(*topics));
        size_t n = 0;
        if (topics == NULL) {
            sl_error_set(err, "out of memory");
            goto fail;
        }
        int parks = 0;
        topics[n++] = cfg->dlq.topic;
        for (size_t i = 0; i < e->nsinks; i++) {
            topics[n++] = e->sinks[i].dlq_topic;
            if (e->sinks[i].retry_topic != NULL) {
                topics[n++] = e->sinks[i].retry_topic;
                parks = 1;
            }
        }
        /* A drain subscribes to its retry topic next: it must exist. */
        dlq_ensure_topics(e->dlq, topics, n, 10000, parks);
        free(topics);
    }
    struct source_callbacks cb = {
        .arg = &e->main,
        .on_assign = on_assign,
        .on_revoke = on_revoke,
        .on_record = on_record,
        .on_committed = on_committed,
        .on_fatal = on_fatal,
    };
    /* Drains first: a sink with a backlog in its retry topic starts
     * parked, before the source hands out anything of its keys. */
    for (size_t i = 0; i < e->nsinks; i++) {
        if (e->sinks[i].retry_topic != NULL &&
            drain_open(e, &e->sinks[i], dlq_bootstrap, &cb, err) != 0) {
            goto fail;
        }
    }
    e->main.h = e->main.src->open(cfg, bootstrap, e->loop, &cb, err);
    if (e->main.h == NULL) {
        goto fail;
    }
    loop_timer_start(e->loop, &e->park_timer, 200);
    loop_timer_start(e->loop, &e->commit_timer,
                     cfg->delivery.commit_interval_ms);
    if (o->progress) {
        loop_timer_start(e->loop, &e->progress_timer, 1000);
    }
    char fed[512] = "";
    if (e->main.src->describe != NULL) {
        e->main.src->describe(e->main.h, fed, sizeof(fed));
    }
    log_info("pipeline %s: %s, %zu sink(s)%s", cfg->pipeline, fed,
             e->nsinks,
             e->shadow ? "; a shadow run: nothing is sent but to shadow_urls, "
                         "no marker or DLQ record is written"
                       : "");
    return e;
fail:
    engine_destroy(e);
    return NULL;
}

/* Sends the spans still buffered when stopping, waiting a bounded time
 * (a collector that is down must not hold a restart up). */
static void trace_drain(engine_t *e)
{
    if (e->tracer == NULL || e->forced) {
        return;
    }
    int64_t wait = e->cfg->tracing.timeout_ms;
    uint64_t deadline = loop_now(e->loop) +
                        (uint64_t)(wait < TRACE_STOP_WAIT_MS ? wait
                                                             : TRACE_STOP_WAIT_MS);
    tracer_flush(e->tracer);
    while (!tracer_idle(e->tracer) && !e->forced &&
           loop_now(e->loop) < deadline) {
        if (loop_run_once(e->loop, 50) != 0) {
            break;
        }
    }
}

int engine_run(engine_t *e)
{
    while (!e->stopping && !e->fatal) {
        if (loop_run_once(e->loop, 1000) != 0) {
            log_error("event loop: %s", strerror(errno));
            e->fatal = 1;
        }
    }
    /* Stop taking records, let what is in flight finish (bounded), commit
     * what is done, then leave the group (which revokes everything). */
    if (e->main.src->stopping != NULL) {
        e->main.src->stopping(e->main.h);
    }
    e->main.src->suspend(e->main.h, 1);
    for (size_t i = 0; i < e->nsinks; i++) {
        if (e->sinks[i].drain.h != NULL) {
            e->sinks[i].drain.src->suspend(e->sinks[i].drain.h, 1);
        }
    }
    e->stopping = 1;
    if (e->board != NULL) {
        metrics_publish(e); /* /readyz says 503 from now */
    }
    e->drain_deadline =
        loop_now(e->loop) + (uint64_t)e->cfg->delivery.drain_timeout_ms;
    marks_flush_all(e, NULL);
    if (!e->fatal) {
        drain(e, NULL, 0);
    }
    size_t left = e->inflight;
    if (left > 0 && e->ack_sink >= 0) {
        /* Nothing is redelivered to a source that answers its producer:
         * each of these was (or is now) answered 503, and its producer
         * tries again. Not a stop that left work behind. */
        log_warn("%zu request(s) still under way at exit: those not "
                 "answered yet get 503 (their records may or may not be in "
                 "Kafka)",
                 left);
        left = 0;
    } else if (left > 0) {
        log_warn("%zu message(s) still in flight at exit (%zu of them "
                 "waiting for the dead-letter queue): not committed, they "
                 "will be redelivered",
                 left, e->stuck + dlq_pending(e->dlq));
    }
    commit_all(e, 1);
    trace_drain(e);
    for (size_t i = 0; i < e->nsinks; i++) {
        if (e->sinks[i].drain.h != NULL) {
            kafka_source.close(e->sinks[i].drain.h);
        }
    }
    e->main.src->close(e->main.h);
    loop_timer_stop(e->loop, &e->progress_timer);
    if (e->opts.progress && isatty(STDERR_FILENO)) {
        fputc('\n', stderr);
    }
    print_progress(e, 1);
    /* Stopped before the source ever answered: a failed start, whatever
     * stopped it, so that a supervisor or a script sees the failure. */
    if (!e->fatal && !e->main.src->reached(e->main.h) &&
        e->main.src->problem(e->main.h) != NULL) {
        log_error("stopped without ever consuming: %s",
                  e->main.src->problem(e->main.h));
        e->fatal = 1;
    }
    return e->fatal ? ENGINE_FATAL : left > 0 ? ENGINE_LEFT : ENGINE_OK;
}

/* Frees m, live or free (a free msg's retry timers are stopped). */
static void msg_destroy(engine_t *e, struct msg *m)
{
    for (size_t i = 0; i < e->nsinks; i++) {
        loop_timer_stop(e->loop, &m->d[i].retry);
        copy_free(&m->d[i].req);
        free(m->d[i].dead);
    }
    copy_free(&m->own);
    free(m->src);
    free(m->keybuf);
    free(m);
}

void engine_destroy(engine_t *e)
{
    if (e == NULL) {
        return;
    }
    /* Timers first (the heap must not point into freed memory), then
     * transfers (their completions would touch msgs), then the records
     * librdkafka lent us, then the consumer and the cluster. */
    /* The admin threads first: they read the board, never the lane. */
    if (e->admin != NULL) {
        loop_io_del(e->loop, &e->admin_io);
        admin_free(e->admin);
    }
    metrics_board_free(e->board);
    free(e->progress_last);
    if (e->loop != NULL) {
        loop_timer_stop(e->loop, &e->commit_timer);
        loop_timer_stop(e->loop, &e->progress_timer);
        loop_timer_stop(e->loop, &e->metrics_timer);
        loop_timer_stop(e->loop, &e->hold_timer);
        loop_timer_stop(e->loop, &e->park_timer);
        loop_timer_stop(e->loop, &e->store_flush_timer);
        loop_timer_stop(e->loop, &e->store_retry_timer);
        for (size_t i = 0; e->sinks != NULL && i < e->nsinks; i++) {
            loop_timer_stop(e->loop, &e->sinks[i].pump);
            loop_timer_stop(e->loop, &e->sinks[i].breaker_timer);
        }
    }
    /* Before the msgs: its reports point at their deliveries, and so do
     * the store's answers. */
    dlq_destroy(e->dlq);
    outcomes_close(e->outcomes);
    if (e->store != NULL) {
        e->store->close(e->store_ctx);
    }
    free(e->sink_names);
    recent_free(e->recent);
    tracer_free(e->tracer);
    for (size_t i = 0; i < e->nsinks; i++) {
        if (e->sinks[i].opened) {
            e->sinks[i].cfg->connector->close(e->sinks[i].cfg->ctx);
        }
    }
    while (e->live != NULL) {
        struct msg *m = e->live;
        e->live = m->next;
        if (m->handle != NULL) {
            m->part->from->src->release(m->handle);
        }
        if (--m->part->refs == 0 && m->part->revoked) {
            part_free(m->part);
        }
        msg_destroy(e, m);
    }
    if (e->main.h != NULL) {
        e->main.src->destroy(e->main.h);
    }
    for (size_t i = 0; e->sinks != NULL && i < e->nsinks; i++) {
        struct sink *s = &e->sinks[i];
        consumer_destroy(s->drain.h);
        if (s->drain.cfg != NULL) {
            free(s->drain.cfg->source.group);
            free(s->drain.cfg);
        }
        free(s->retry_topic);
        free(s->park_max);
    }
    while (e->parts != NULL) {
        struct part *p = e->parts;
        e->parts = p->next;
        if (p->refs == 0) {
            part_free(p);
        }
    }
    embedded_stop(e->embedded);
    while (e->free_msgs != NULL) {
        struct msg *m = e->free_msgs;
        e->free_msgs = m->next;
        msg_destroy(e, m);
    }
    transform_destroy(e->tf);
    while (e->free_chains != NULL) {
        struct chain *c = e->free_chains;
        e->free_chains = c->hnext;
        free(c);
    }
    for (size_t i = 0; i < e->nsinks; i++) {
        struct sink *s = &e->sinks[i];
        if (s->buckets == NULL) {
            continue;
        }
        for (size_t b = 0; b <= s->mask; b++) {
            while (s->buckets[b] != NULL) {
                struct chain *c = s->buckets[b];
                s->buckets[b] = c->hnext;
                free(c);
            }
        }
        free(s->buckets);
    }
    free(e->sinks);
    free(e->dlq_headers);
    redact_free(e->redact);
    if (e->sigfd >= 0) {
        close(e->sigfd);
    }
    loop_destroy(e->loop);
    free(e);
}

/* ---- replay: the command ---- */

/* Whether every assigned partition of a replay reached the end it had
 * when it was assigned. */
static int replay_at_end(engine_t *e)
{
    for (struct part *p = e->parts; p != NULL; p = p->next) {
        int64_t c = offsets_committable(p->offsets);
        if (p->end < 0 || (c >= 0 ? c : p->start) < p->end) {
            return 0;
        }
    }
    return 1;
}

static void replay_fired(struct loop_timer *t)
{
    engine_t *e = container_of(t, engine_t, replay_timer);
    uint64_t waited = loop_now(e->loop) - e->replay_since;

    if (!e->replay_assigned && waited >= 30000) {
        log_error("replay: no partition of the dead-letter topic was "
                  "assigned in 30 s; is another replay of this sink "
                  "running?");
        e->fatal = 1;
        return;
    }
    if (e->replay_assigned && e->inflight == 0 &&
        (e->replay_limited || replay_at_end(e))) {
        e->stopping = 1;
        return;
    }
    loop_timer_start(e->loop, t, 200);
}

int dlq_replay(const struct cfg *cfg, const struct dlq_replay_options *o)
{
    struct engine_options opts = {.progress = o->progress, .replay = o};
    struct cfg *rc;
    struct sl_error err;
    const char *topics[2];
    char group[512];
    size_t idx = cfg->sink_count;
    engine_t *e;
    int status;

    for (size_t i = 0; i < cfg->sink_count; i++) {
        if (strcmp(cfg->sinks[i].name, o->sink) == 0) {
            idx = i;
        }
    }
    if (idx == cfg->sink_count) {
        fprintf(stderr, "sluice: pipeline %s has no sink `%s`\n",
                cfg->pipeline, o->sink);
        return 2;
    }
    /* The same pipeline, read from the sink's DLQ (and the pipeline's,
     * where transform failures for every sink are), to this sink alone,
     * as the group that marks its records worked. */
    topics[0] = cfg_sink_dlq_topic(cfg, idx);
    topics[1] = cfg->dlq.topic;
    snprintf(group, sizeof(group), "%s.dlq.%s", cfg->pipeline, o->sink);
    rc = dlq_source_cfg(cfg, (char **)topics,
                        strcmp(topics[0], topics[1]) == 0 ? 1 : 2, group,
                        o->brokers != NULL ? o->brokers : cfg->dlq.brokers);
    if (rc == NULL) {
        return 1;
    }
    rc->sinks = &cfg->sinks[idx];
    rc->sink_count = 1;
    e = engine_new(rc, &opts, &err);
    if (e == NULL) {
        log_error("cannot start the replay: %s", err.msg);
        free(rc);
        return 1;
    }
    e->replay_cfg = rc;
    e->replay_since = loop_now(e->loop);
    loop_timer_init(&e->replay_timer, replay_fired);
    loop_timer_start(e->loop, &e->replay_timer, 200);
    status = engine_run(e);
    const struct sink *s = &e->sinks[0];
    uint64_t failed = s->dead_lettered + e->transform_dead_lettered;
    if (o->dry_run) {
        printf("dry run: would replay %llu record(s) to %s; %llu kept "
               "(not selected), %llu skipped (max_replays %lld reached)\n",
               (unsigned long long)e->replay_selected, o->sink,
               (unsigned long long)e->replay_kept,
               (unsigned long long)e->replay_guarded,
               (long long)cfg->dlq.max_replays);
    } else {
        printf("replayed %llu, failed again %llu, skipped %llu (max_replays "
               "%lld reached), kept %llu (not selected), already handled "
               "%llu (of those replayed: the sink has them marked)\n",
               (unsigned long long)(s->delivered + s->done_by_policy +
                                    s->skipped + s->already_handled +
                                    e->dropped),
               (unsigned long long)failed,
               (unsigned long long)e->replay_guarded,
               (long long)cfg->dlq.max_replays,
               (unsigned long long)e->replay_kept,
               (unsigned long long)s->already_handled);
    }
    fflush(stdout);
    loop_timer_stop(e->loop, &e->replay_timer);
    engine_destroy(e);
    free(rc);
    return status == ENGINE_OK && failed == 0 ? 0 : 1;
}
