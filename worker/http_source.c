/* http_source.c -- `source.type: http`: the publisher of the migration
 * (http_source in source.h).
 *
 * Each POST to the source's endpoint becomes one record: the body is its
 * value, the key rule (keyrule.h) gives its key, the request's
 * Idempotency-Key (or a new UUIDv7) its `message-id` header, which is the
 * dedupe key the consuming pipelines read. The engine takes it like any
 * record (transforms, every sink, outcome log, metrics); the pipeline's
 * kafka sink is its acknowledging sink, and the request is answered from
 * that sink's verdict: 202 only once Kafka acknowledged the record
 * (idempotent producer, acks=all), 429 when source.max_in_flight requests
 * are under way or the producer's queue is full, 503 when Kafka did not
 * acknowledge in source.timeout, both with Retry-After, 422 when the
 * record can never be written. The other sinks (the legacy endpoint,
 * during a dual-write) get the same record; their outcome goes to the
 * outcome log, not into the answer.
 *
 * libmicrohttpd parses requests on its own thread and suspends each one;
 * the lane's loop takes them in batches (one eventfd wake per batch) and
 * resumes each connection with its answer. The records form one partition
 * (topic: the endpoint's path) whose offsets count the requests taken. */
#include "source.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "connector.h"
#include "keyrule.h"
#include "listener.h"
#include "log.h"
#include "loop.h"

#define IDEMPOTENCY_KEY_MAX 200
#define HEADERS_MAX 64
#define CONTENT_TYPE_MAX 128
/* libmicrohttpd's per-connection pool (headers, read buffer; the body is
 * copied out as it comes): it zeroes the pool for every request, and its
 * 32 KiB default cost 5% of the publisher's CPU. 16 KiB still holds the
 * 8 KiB of headers a proxy usually allows. */
#define CONNECTION_POOL (16 * 1024)
#define RETRY_AFTER_BUSY "1"
#define RETRY_AFTER_DOWN "5"
#define SWEEP_MS 100

#define container_of(ptr, type, member)                                        \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

struct publisher;

/* A request, shared by libmicrohttpd's thread (which reads it and sends
 * the answer) and the loop (which hands it to the engine): refs counts
 * the two; the last to let go frees it. */
struct req {
    struct publisher *p;
    struct MHD_Connection *conn;
    atomic_int refs;
    /* read on MHD's thread */
    char *body;
    size_t len, cap;
    int too_large;
    int over_bytes; /* the bodies held would pass max_in_flight_bytes */
    size_t hint;    /* Content-Length, when it came and fits max_body */
    unsigned early_status; /* refused before the body: answer this */
    char message_id[IDEMPOTENCY_KEY_MAX + 1];
    char traceparent[64];
    char tracestate[512];
    char content_type[CONTENT_TYPE_MAX];
    struct keyrule_decision key;
    uint64_t arrived_ms; /* monotonic: its time runs from here */
    struct sl_header headers[4]; /* the record's */
    size_t header_count;
    /* the answer, set by the loop before it resumes the connection */
    unsigned status;
    const char *retry_after;
    char answer[512];
    int answered; /* under p->lock */
    /* loop side */
    struct req *next;
    struct req *live_prev, *live_next; /* p->live_head: the engine's */
    struct loop_timer deadline;
};

struct publisher {
    const struct cfg *cfg;
    loop_t *loop;
    struct source_callbacks cb;
    void *part; /* the engine's, for the one partition */
    int64_t next_offset;
    keyrule_t *keys; /* MHD's thread only */
    int key_reads_headers; /* source.key or shard_by is header:NAME */
    struct MHD_Daemon *daemon;
    int listen_fd, port;
    /* MHD's thread -> the loop */
    pthread_mutex_t lock;
    struct req *queue_head, **queue_tail;
    int event_fd;
    struct loop_io event_io;
    struct loop_timer kick;  /* takes the queue after a resume */
    struct loop_timer sweep; /* while held: answers the expired */
    int suspended, paused;
    atomic_int stopping;
    atomic_long inflight; /* accepted, not yet answered */
    atomic_llong held_bytes; /* body buffers of every request alive */
    struct req *live_head;
    struct source_stats stats;
    /* counters (atomics: both threads count) */
    atomic_ulong requests, accepted, bad, busy, unavailable, rejected,
        too_large;
    atomic_ulong sharded, turned_hot;
};

/* ---- ids ---- */

static void uuid7(char out[37], uint64_t unix_ms, const uint8_t rnd[10])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    size_t w = 0;

    for (int i = 0; i < 6; i++) {
        b[i] = (uint8_t)(unix_ms >> (40 - 8 * i));
    }
    memcpy(b + 6, rnd, 10);
    b[6] = (uint8_t)(0x70 | (b[6] & 0x0f)); /* version 7 */
    b[8] = (uint8_t)(0x80 | (b[8] & 0x3f)); /* variant 10 */
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[w++] = '-';
        }
        out[w++] = hex[b[i] >> 4];
        out[w++] = hex[b[i] & 15];
    }
    out[w] = '\0';
}

static uint64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t splitmix64(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A new UUIDv7. Its random bits come from a seed drawn once from the
 * kernel, stepped per id through splitmix64 (a bijection: no two ids of a
 * process share them), not from a getrandom() call per request. */
static void new_message_id(char out[37])
{
    static _Thread_local uint64_t seed[2];
    static _Thread_local int seeded;
    uint8_t rnd[10];

    if (!seeded) {
        if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed)) {
            seed[0] = wall_ms() ^ ((uint64_t)getpid() << 32);
            seed[1] = (uint64_t)(uintptr_t)&seed ^ (uint64_t)clock();
        }
        seeded = 1;
    }
    seed[0] += 0x9e3779b97f4a7c15ULL;
    uint64_t a = splitmix64(seed[0]), b = splitmix64(seed[1] ^ a);
    memcpy(rnd, &a, 8);
    memcpy(rnd + 8, &b, 2);
    uuid7(out, wall_ms(), rnd);
}

/* An Idempotency-Key a record can carry: printable ASCII, no space. */
static int usable_id(const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n > IDEMPOTENCY_KEY_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i] <= ' ' || v[i] > '~') {
            return 0;
        }
    }
    return 1;
}

/* ---- requests ---- */

static void req_unref(struct req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1) {
        atomic_fetch_sub(&r->p->held_bytes, (long long)r->cap);
        free(r->body);
        free(r);
    }
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status,
                              const char *retry_after, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status,
                              const char *retry_after, const char *fmt, ...)
{
    char body[768];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(body, sizeof(body) - 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
    } else if ((size_t)n >= sizeof(body) - 1) {
        n = (int)sizeof(body) - 2;
    }
    body[n++] = '\n';
    struct MHD_Response *res = MHD_create_response_from_buffer(
        (size_t)n, body, MHD_RESPMEM_MUST_COPY);
    if (res == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(res, "Content-Type", "application/json");
    if (retry_after != NULL) {
        MHD_add_response_header(res, "Retry-After", retry_after);
    }
    enum MHD_Result rc = MHD_queue_response(c, status, res);
    MHD_destroy_response(res);
    return rc;
}

/* A JSON string's contents (no quotes) of s, cut to fit. */
static const char *json_text(char *out, size_t cap, const char *s)
{
    size_t w = 0;

    for (; *s != '\0' && w + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[w++] = '\\';
            out[w++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            w += (size_t)snprintf(out + w, cap - w, "\\u%04x", c);
        } else {
            out[w++] = (char)c;
        }
    }
    out[w] = '\0';
    return out;
}

static int type_allowed(const struct cfg_http_source *h, const char *type)
{
    size_t n;

    if (type == NULL) {
        return 0;
    }
    n = strcspn(type, "; \t");
    for (size_t i = 0; i < h->content_types.count; i++) {
        const char *want = h->content_types.items[i];
        if (strlen(want) == n && strncasecmp(want, type, n) == 0) {
            return 1;
        }
    }
    return 0;
}

struct header_list {
    struct sl_header h[HEADERS_MAX];
    size_t n;
};

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind,
                                      const char *key, const char *value)
{
    struct header_list *l = cls;

    (void)kind;
    if (l->n < HEADERS_MAX && value != NULL) {
        l->h[l->n++] = (struct sl_header){key, value, strlen(value)};
    }
    return MHD_YES;
}

/* The request is read: decide its key and id, then hand it to the loop
 * (suspended until its answer), or answer now. */
static enum MHD_Result take(struct publisher *p, struct MHD_Connection *c,
                            struct req *r)
{
    const struct cfg_http_source *h = &p->cfg->http;
    struct header_list headers; /* not zeroed: n counts what is set */
    struct sl_error err;
    char text[600];
    const char *v;

    headers.n = 0;
    if (p->key_reads_headers) {
        MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header,
                                  &headers);
    }
    struct keyrule_input in = {
        .headers = headers.h,
        .header_count = headers.n,
        .body = r->body != NULL ? r->body : "",
        .body_len = r->len,
    };
    /* One thread runs this (MHD's), so the key rule needs no lock. */
    if (keyrule_apply(p->keys, &in, (int64_t)wall_ms(), &r->key, &err) != 0) {
        atomic_fetch_add(&p->bad, 1);
        return answer(c, MHD_HTTP_BAD_REQUEST, NULL, "{\"error\":\"%s\"}",
                      json_text(text, sizeof(text), err.msg));
    }
    if (r->key.shard >= 0) {
        atomic_fetch_add(&p->sharded, 1);
    }
    if (r->key.turned_hot) {
        atomic_fetch_add(&p->turned_hot, 1);
        log_info("publisher: key %.*s is hot (partition %d): sharded into "
                 "%d",
                 (int)r->key.base_len, r->key.key, r->key.partition,
                 r->key.shards);
    } else if (r->key.turned_cold) {
        log_info("publisher: key %.*s is no longer hot: not sharded",
                 (int)r->key.base_len, r->key.key);
    }
    v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
    if (v != NULL && !usable_id(v)) {
        atomic_fetch_add(&p->bad, 1);
        return answer(c, MHD_HTTP_BAD_REQUEST, NULL,
                      "{\"error\":\"Idempotency-Key: 1 to %d printable "
                      "ASCII characters without spaces\"}",
                      IDEMPOTENCY_KEY_MAX);
    }
    if (v != NULL) {
        snprintf(r->message_id, sizeof(r->message_id), "%s", v);
    } else {
        new_message_id(r->message_id);
    }
    r->headers[r->header_count++] = (struct sl_header){
        "message-id", r->message_id, strlen(r->message_id)};
    v = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_CONTENT_TYPE);
    if (v != NULL && strlen(v) < sizeof(r->content_type)) {
        memcpy(r->content_type, v, strlen(v) + 1);
        r->headers[r->header_count++] = (struct sl_header){
            "content-type", r->content_type, strlen(r->content_type)};
    }
    /* The trace context goes on as the record's headers: the engine
     * checks it as it does a consumed record's. */
    v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "traceparent");
    if (v != NULL && strlen(v) == 55) {
        memcpy(r->traceparent, v, 56);
        r->headers[r->header_count++] = (struct sl_header){
            "traceparent", r->traceparent, 55};
        v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "tracestate");
        if (v != NULL && strlen(v) < sizeof(r->tracestate)) {
            memcpy(r->tracestate, v, strlen(v) + 1);
            r->headers[r->header_count++] = (struct sl_header){
                "tracestate", r->tracestate, strlen(r->tracestate)};
        }
    }
    if (atomic_load(&p->stopping)) {
        atomic_fetch_add(&p->unavailable, 1);
        return answer(c, MHD_HTTP_SERVICE_UNAVAILABLE, RETRY_AFTER_BUSY,
                      "{\"error\":\"stopping\"}");
    }
    if (atomic_fetch_add(&p->inflight, 1) >= h->max_in_flight) {
        atomic_fetch_sub(&p->inflight, 1);
        atomic_fetch_add(&p->busy, 1);
        return answer(c, MHD_HTTP_TOO_MANY_REQUESTS, RETRY_AFTER_BUSY,
                      "{\"error\":\"%lld requests under way: try again\"}",
                      (long long)h->max_in_flight);
    }
    atomic_fetch_add(&r->refs, 1); /* the loop's */
    r->arrived_ms = mono_ms();
    MHD_suspend_connection(c);
    pthread_mutex_lock(&p->lock);
    int was_empty = p->queue_head == NULL;
    *p->queue_tail = r;
    p->queue_tail = &r->next;
    pthread_mutex_unlock(&p->lock);
    /* One wake-up per batch: the loop takes the whole queue at once. */
    uint64_t one = 1;
    if (was_empty && write(p->event_fd, &one, sizeof(one)) < 0 &&
        errno != EAGAIN) {
        log_warn("publisher: eventfd: %s", strerror(errno));
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct publisher *p = cls;
    const struct cfg_http_source *h = &p->cfg->http;
    struct req *r = *con_cls;

    (void)version;
    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL) {
            return MHD_NO;
        }
        atomic_init(&r->refs, 1);
        r->p = p;
        r->conn = c;
        *con_cls = r;
        atomic_fetch_add(&p->requests, 1);
        if (strcmp(url, h->path) != 0) {
            r->early_status = MHD_HTTP_NOT_FOUND;
        } else if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
            r->early_status = MHD_HTTP_METHOD_NOT_ALLOWED;
        } else if (!type_allowed(h, MHD_lookup_connection_value(
                                        c, MHD_HEADER_KIND,
                                        MHD_HTTP_HEADER_CONTENT_TYPE))) {
            r->early_status = MHD_HTTP_UNSUPPORTED_MEDIA_TYPE;
        } else {
            /* A body announced too large is refused without keeping any
             * of it. */
            const char *cl = MHD_lookup_connection_value(
                c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            unsigned long long n = cl != NULL ? strtoull(cl, NULL, 10) : 0;
            if (n > (unsigned long long)h->max_body) {
                r->too_large = 1;
            } else if (n > 0 && atomic_load(&p->held_bytes) + (long long)n >
                                    h->max_in_flight_bytes) {
                r->over_bytes = 1; /* nothing of it is kept */
            } else {
                r->hint = (size_t)n;
            }
        }
        return MHD_YES;
    }
    if (*upload_size > 0) {
        /* Read (and drop, when refused) the body so that the connection
         * stays usable for the next request. */
        if (!r->early_status && !r->too_large && !r->over_bytes) {
            if (r->len + *upload_size > (size_t)h->max_body) {
                r->too_large = 1;
            } else {
                if (r->len + *upload_size > r->cap) {
                    size_t cap = r->cap ? r->cap * 2
                                 : r->hint > 0 ? r->hint : 4096;
                    while (cap < r->len + *upload_size) {
                        cap *= 2;
                    }
                    /* Memory stays bounded whatever the connections
                     * send: past the bound, the rest is read and
                     * dropped, and the answer is 429. */
                    if (atomic_fetch_add(&p->held_bytes,
                                         (long long)(cap - r->cap)) +
                            (long long)(cap - r->cap) >
                        h->max_in_flight_bytes) {
                        atomic_fetch_sub(&p->held_bytes,
                                         (long long)(cap - r->cap));
                        r->over_bytes = 1;
                        *upload_size = 0;
                        return MHD_YES;
                    }
                    char *b = realloc(r->body, cap);
                    if (b == NULL) {
                        atomic_fetch_sub(&p->held_bytes,
                                         (long long)(cap - r->cap));
                        return MHD_NO;
                    }
                    r->body = b;
                    r->cap = cap;
                }
                memcpy(r->body + r->len, upload, *upload_size);
                r->len += *upload_size;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&p->lock);
    int answered = r->answered;
    pthread_mutex_unlock(&p->lock);
    if (answered) {
        return answer(c, r->status, r->retry_after, "%s", r->answer);
    }
    if (r->early_status) {
        atomic_fetch_add(&p->bad, 1);
        return answer(c, r->early_status, NULL, "{\"error\":\"%s\"}",
                      r->early_status == MHD_HTTP_NOT_FOUND ? "no such "
                      "endpoint"
                      : r->early_status == MHD_HTTP_METHOD_NOT_ALLOWED
                          ? "POST only"
                          : "unsupported Content-Type");
    }
    if (r->too_large) {
        atomic_fetch_add(&p->too_large, 1);
        return answer(c, 413, NULL,
                      "{\"error\":\"the body is over %lld bytes\"}",
                      (long long)h->max_body);
    }
    if (r->over_bytes) {
        atomic_fetch_add(&p->busy, 1);
        return answer(c, MHD_HTTP_TOO_MANY_REQUESTS, RETRY_AFTER_BUSY,
                      "{\"error\":\"%lld bytes of requests under way: try "
                      "again\"}",
                      (long long)h->max_in_flight_bytes);
    }
    if (r->len == 0) {
        atomic_fetch_add(&p->bad, 1);
        return answer(c, MHD_HTTP_BAD_REQUEST, NULL,
                      "{\"error\":\"an empty body\"}");
    }
    return take(p, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    struct req *r = *con_cls;

    (void)cls;
    (void)c;
    (void)code;
    if (r != NULL) {
        *con_cls = NULL;
        req_unref(r);
    }
}


/* ---- the loop: handing records to the engine, and answering ---- */

/* Sets r's answer and wakes its connection: 1, or 0 when it was
 * answered before (its deadline passed). */
static int req_answer(struct publisher *p, struct req *r, unsigned status,
                      const char *retry_after, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int req_answer(struct publisher *p, struct req *r, unsigned status,
                      const char *retry_after, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&p->lock);
    if (r->answered) {
        pthread_mutex_unlock(&p->lock);
        return 0;
    }
    r->status = status;
    r->retry_after = retry_after;
    va_start(ap, fmt);
    vsnprintf(r->answer, sizeof(r->answer), fmt, ap);
    va_end(ap);
    r->answered = 1;
    pthread_mutex_unlock(&p->lock);
    loop_timer_stop(p->loop, &r->deadline);
    atomic_fetch_sub(&p->inflight, 1);
    MHD_resume_connection(r->conn);
    return 1;
}

static void deadline_fired(struct loop_timer *t)
{
    struct req *r = container_of(t, struct req, deadline);

    if (req_answer(r->p, r, MHD_HTTP_SERVICE_UNAVAILABLE, RETRY_AFTER_DOWN,
                   "{\"error\":\"Kafka did not acknowledge the record in "
                   "time\",\"message_id\":\"%s\"}",
                   r->message_id)) {
        atomic_fetch_add(&r->p->unavailable, 1);
    }
}

static void answer_late(struct publisher *p, struct req *r);

/* Hands r to the engine: one record of the source's partition. Its
 * timeout counts from its arrival: the time it waited in the queue while
 * the lane was at its bound is part of it. */
static void hand_over(struct publisher *p, struct req *r)
{
    uint64_t age = mono_ms() - r->arrived_ms;

    if (age >= (uint64_t)p->cfg->http.timeout_ms) {
        answer_late(p, r);
        return;
    }
    r->live_prev = NULL;
    r->live_next = p->live_head;
    if (p->live_head != NULL) {
        p->live_head->live_prev = r;
    }
    p->live_head = r;
    loop_timer_init(&r->deadline, deadline_fired);
    loop_timer_start(p->loop, &r->deadline,
                     p->cfg->http.timeout_ms - (int64_t)age);
    struct source_record rec = {
        .handle = r,
        .part = p->part,
        .topic = p->cfg->http.path,
        .partition = 0,
        .offset = p->next_offset++,
        .timestamp_ms = (int64_t)wall_ms(),
        .key = r->key.key,
        .key_len = r->key.key_len,
        .value = r->body,
        .value_len = r->len,
    };
    p->cb.on_record(p->cb.arg, &rec);
}

/* Hands the queued requests to the engine, oldest first, the whole queue
 * at once (one lock per batch), unless it asked for none (suspended or
 * paused: the rest goes back to the head of the queue and waits, within
 * max_in_flight). */
static void take_queue(struct publisher *p)
{
    if ((p->suspended || p->paused) && !loop_timer_armed(&p->sweep)) {
        loop_timer_start(p->loop, &p->sweep, SWEEP_MS);
    }
    while (!p->suspended && !p->paused) {
        pthread_mutex_lock(&p->lock);
        struct req *batch = p->queue_head;
        p->queue_head = NULL;
        p->queue_tail = &p->queue_head;
        pthread_mutex_unlock(&p->lock);
        if (batch == NULL) {
            return;
        }
        while (batch != NULL) {
            if (p->suspended || p->paused) {
                struct req *last = batch;
                while (last->next != NULL) {
                    last = last->next;
                }
                pthread_mutex_lock(&p->lock);
                last->next = p->queue_head;
                if (p->queue_head == NULL) {
                    p->queue_tail = &last->next;
                }
                p->queue_head = batch;
                pthread_mutex_unlock(&p->lock);
                if (!loop_timer_armed(&p->sweep)) {
                    loop_timer_start(p->loop, &p->sweep, SWEEP_MS);
                }
                return;
            }
            struct req *r = batch;
            batch = r->next;
            r->next = NULL;
            hand_over(p, r);
        }
    }
}

static void event_ready(struct loop_io *io, uint32_t events)
{
    struct publisher *p = container_of(io, struct publisher, event_io);
    uint64_t n;

    (void)events;
    if (read(p->event_fd, &n, sizeof(n)) < 0 && errno != EAGAIN) {
        log_warn("source: eventfd: %s", strerror(errno));
    }
    take_queue(p);
}

static void kick_fired(struct loop_timer *t)
{
    take_queue(container_of(t, struct publisher, kick));
}

static void answer_unqueued(struct publisher *p, struct req *r,
                            const char *why, atomic_ulong *count);

/* Answers every request not handed to the engine yet. */
static void answer_queued(struct publisher *p, const char *why)
{
    pthread_mutex_lock(&p->lock);
    struct req *r = p->queue_head;
    p->queue_head = NULL;
    p->queue_tail = &p->queue_head;
    pthread_mutex_unlock(&p->lock);
    while (r != NULL) {
        struct req *next = r->next;
        answer_unqueued(p, r, why, &p->unavailable);
        r = next;
    }
}

/* Answers 503 a request the engine never took (taken off the queue by
 * the caller): never in Kafka, so the client may try again; count says
 * which figure it goes to. */
static void answer_unqueued(struct publisher *p, struct req *r,
                            const char *why, atomic_ulong *count)
{
    pthread_mutex_lock(&p->lock);
    r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
    r->retry_after = RETRY_AFTER_BUSY;
    snprintf(r->answer, sizeof(r->answer),
             "{\"error\":\"%s\",\"message_id\":\"%s\"}", why,
             r->message_id);
    r->answered = 1;
    pthread_mutex_unlock(&p->lock);
    atomic_fetch_sub(&p->inflight, 1);
    atomic_fetch_add(count, 1);
    MHD_resume_connection(r->conn);
    req_unref(r); /* the loop's */
}

/* A request whose time ran out before the engine took it: the lane was
 * at its bound all along. */
static void answer_late(struct publisher *p, struct req *r)
{
    answer_unqueued(p, r, "the pipeline is at its bound: not taken in time",
                    &p->busy);
}

/* While the queue is held, its expired requests are answered: a held
 * lane must not keep a client waiting past source.timeout. */
static void sweep_fired(struct loop_timer *t)
{
    struct publisher *p = container_of(t, struct publisher, sweep);
    uint64_t now = mono_ms();
    struct req *late = NULL, **at;

    pthread_mutex_lock(&p->lock);
    at = &p->queue_head;
    while (*at != NULL) {
        struct req *r = *at;
        if (now - r->arrived_ms >= (uint64_t)p->cfg->http.timeout_ms) {
            *at = r->next;
            r->next = late;
            late = r;
        } else {
            at = &r->next;
        }
    }
    p->queue_tail = at;
    int waiting = p->queue_head != NULL;
    pthread_mutex_unlock(&p->lock);
    while (late != NULL) {
        struct req *r = late;
        late = r->next;
        answer_late(p, r);
    }
    if (waiting && (p->suspended || p->paused)) {
        loop_timer_start(p->loop, t, SWEEP_MS);
    }
}

/* ---- the interface (source.h) ---- */

static void http_suspend(void *src, int suspended)
{
    struct publisher *p = src;

    p->suspended = suspended;
    if (!suspended) {
        loop_timer_start(p->loop, &p->kick, 0);
    }
}

static void http_pause(void *src, const char *topic, int32_t partition)
{
    (void)topic;
    (void)partition;
    ((struct publisher *)src)->paused = 1;
}

static void http_resume(void *src, const char *topic, int32_t partition)
{
    struct publisher *p = src;

    (void)topic;
    (void)partition;
    p->paused = 0;
    loop_timer_start(p->loop, &p->kick, 0);
}

/* Nothing to commit to: each request has its answer. The watermark is
 * still reported, so the engine's figures (committed, lag) hold. */
static int http_commit(void *src, const struct source_commit *offsets,
                       size_t count, int sync)
{
    struct publisher *p = src;

    (void)sync;
    for (size_t i = 0; i < count; i++) {
        p->cb.on_committed(p->cb.arg, p->part, offsets[i].offset);
    }
    return 0;
}

static size_t http_headers(void *handle, struct sl_header *out, size_t cap)
{
    const struct req *r = handle;
    size_t n = r->header_count < cap ? r->header_count : cap;

    memcpy(out, r->headers, n * sizeof(*out));
    return n;
}

static const void *http_header_find(void *handle, const char *name,
                                    size_t *len)
{
    const struct req *r = handle;

    for (size_t i = r->header_count; i-- > 0;) {
        if (strcmp(r->headers[i].name, name) == 0) {
            *len = r->headers[i].value_len;
            return r->headers[i].value;
        }
    }
    return NULL;
}

static void http_payload(void *handle, const void **key, size_t *key_len,
                         const void **value, size_t *value_len)
{
    const struct req *r = handle;

    *key = r->key.key;
    *key_len = r->key.key_len;
    *value = r->body;
    *value_len = r->len;
}

/* The verdict is the answer: never 202 for a record that could be lost. */
static void http_settle(void *handle, const struct source_verdict *v)
{
    struct req *r = handle;
    struct publisher *p = r->p;
    char key[KEYRULE_RECORD_KEY_MAX * 6 + 1], why[256];
    const char *reason = v->reason != NULL ? v->reason : "";

    switch (v->fate) {
    case SOURCE_DELIVERED:
    case SOURCE_DROPPED:
        if (req_answer(p, r, MHD_HTTP_ACCEPTED, NULL,
                       "{\"message_id\":\"%s\",\"key\":\"%s\"%s}",
                       r->message_id,
                       json_text(key, sizeof(key), r->key.key),
                       v->fate == SOURCE_DROPPED ? ",\"dropped\":true"
                                                 : "")) {
            atomic_fetch_add(&p->accepted, 1);
        }
        return;
    case SOURCE_BUSY:
    case SOURCE_UNAVAILABLE:
        if (req_answer(p, r,
                       v->fate == SOURCE_BUSY ? MHD_HTTP_TOO_MANY_REQUESTS
                                              : MHD_HTTP_SERVICE_UNAVAILABLE,
                       v->fate == SOURCE_BUSY ? RETRY_AFTER_BUSY
                                              : RETRY_AFTER_DOWN,
                       "{\"error\":\"%s\",\"message_id\":\"%s\"}",
                       json_text(why, sizeof(why), reason), r->message_id)) {
            atomic_fetch_add(v->fate == SOURCE_BUSY ? &p->busy
                                                    : &p->unavailable,
                             1);
        }
        return;
    case SOURCE_REJECTED:
        if (req_answer(p, r, MHD_HTTP_UNPROCESSABLE_CONTENT, NULL,
                       "{\"error\":\"%s\",\"message_id\":\"%s\"}",
                       json_text(why, sizeof(why), reason), r->message_id)) {
            atomic_fetch_add(&p->rejected, 1);
        }
        return;
    }
}

static void http_release(void *handle)
{
    struct req *r = handle;
    struct publisher *p = r->p;

    /* Abandoned (a stop that did not wait for it): whether it is in
     * Kafka is not known, so the client must try again. */
    if (req_answer(p, r, MHD_HTTP_SERVICE_UNAVAILABLE, RETRY_AFTER_BUSY,
                   "{\"error\":\"stopping\",\"message_id\":\"%s\"}",
                   r->message_id)) {
        atomic_fetch_add(&p->unavailable, 1);
    }
    loop_timer_stop(p->loop, &r->deadline);
    if (r->live_prev != NULL) {
        r->live_prev->live_next = r->live_next;
    } else if (p->live_head == r) {
        p->live_head = r->live_next;
    }
    if (r->live_next != NULL) {
        r->live_next->live_prev = r->live_prev;
    }
    req_unref(r);
}

/* No new request from now: the listener closes (a balancer sends the
 * next ones elsewhere), and those not taken yet are answered 503. */
static void http_stopping(void *src)
{
    struct publisher *p = src;

    if (atomic_exchange(&p->stopping, 1)) {
        return;
    }
    if (p->daemon != NULL) {
        MHD_socket fd = MHD_quiesce_daemon(p->daemon);
        if (fd != MHD_INVALID_SOCKET) {
            close(fd);
        }
    }
    answer_queued(p, "stopping");
}

static void http_close(void *src)
{
    struct publisher *p = src;
    int64_t offset = -1;

    http_stopping(p);
    if (p->part != NULL) {
        void *parts[1] = {p->part};
        p->cb.on_revoke(p->cb.arg, parts, 1, 0, &offset);
        p->part = NULL;
    }
}

static void summary(const struct publisher *p)
{
    log_info("summary requests=%lu accepted=%lu bad=%lu too_large=%lu "
             "busy=%lu unavailable=%lu rejected=%lu sharded=%lu "
             "turned_hot=%lu",
             atomic_load(&p->requests), atomic_load(&p->accepted),
             atomic_load(&p->bad), atomic_load(&p->too_large),
             atomic_load(&p->busy), atomic_load(&p->unavailable),
             atomic_load(&p->rejected), atomic_load(&p->sharded),
             atomic_load(&p->turned_hot));
}

static void http_destroy(void *src)
{
    struct publisher *p = src;

    if (p == NULL) {
        return;
    }
    answer_queued(p, "stopping");
    /* libmicrohttpd must resume every suspended connection before its
     * stop; a moment lets the last answers go out. */
    for (struct req *r = p->live_head; r != NULL; r = r->live_next) {
        req_answer(p, r, MHD_HTTP_SERVICE_UNAVAILABLE, RETRY_AFTER_BUSY,
                   "{\"error\":\"stopping\",\"message_id\":\"%s\"}",
                   r->message_id);
    }
    if (p->daemon != NULL) {
        if (atomic_load(&p->requests) > 0) {
            usleep(100 * 1000);
        }
        MHD_stop_daemon(p->daemon);
        summary(p);
    }
    while (p->live_head != NULL) {
        http_release(p->live_head);
    }
    if (p->loop != NULL) {
        loop_timer_stop(p->loop, &p->kick);
        loop_timer_stop(p->loop, &p->sweep);
        if (p->event_fd >= 0) {
            loop_io_del(p->loop, &p->event_io);
        }
    }
    keyrule_destroy(p->keys);
    if (p->listen_fd >= 0) {
        close(p->listen_fd);
    }
    if (p->event_fd >= 0) {
        close(p->event_fd);
    }
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static int http_reached(const void *src)
{
    return ((const struct publisher *)src)->daemon != NULL;
}

static const char *http_problem(const void *src)
{
    (void)src;
    return NULL;
}

static const struct source_stats *http_stats(const void *src)
{
    return &((const struct publisher *)src)->stats;
}

static int http_ack_sink(const struct cfg *cfg)
{
    return cfg->publish_sink;
}

static void http_describe(const void *src, char *out, size_t cap)
{
    const struct publisher *p = src;

    snprintf(out, cap,
             "listening on %s (port %d), POST %s; records go to sink %s",
             p->cfg->http.listen, p->port, p->cfg->http.path,
             p->cfg->sinks[p->cfg->publish_sink].name);
}

/* ---- start ---- */

static int partition_of(void *arg, const char *key, size_t len)
{
    const struct cfg *cfg = arg;
    /* librdkafka's default partitioner for a keyed record
     * (consistent_random): CRC32 of the key. */
    uint32_t crc = 0xffffffffu;

    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned char)key[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
        }
    }
    crc ^= 0xffffffffu;
    return (int)(crc % (uint32_t)cfg->http_partitions);
}

/* A string option of a sink's connector, by name (NULL: none). */
static const char *sink_option(const struct cfg_sink *s, const char *name)
{
    for (const struct opt_spec *o = s->connector->options; o->name; o++) {
        if (strcmp(o->name, name) == 0 && o->type == OPT_STRING) {
            return *(char **)((char *)s->ctx + o->offset);
        }
    }
    return NULL;
}

/* The kafka sink's topic's partitions, for hot_keys.auto's shares; -1
 * when they cannot be read. */
static int64_t topic_partitions(const struct cfg_sink *s)
{
    const char *brokers = sink_option(s, "brokers");
    const char *topic = sink_option(s, "topic");
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const struct rd_kafka_metadata *md = NULL;
    char errstr[256];
    int64_t n = -1;

    if (brokers == NULL || topic == NULL ||
        rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr,
                                  sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rkt != NULL &&
        rd_kafka_metadata(rk, 0, rkt, &md, 10000) ==
            RD_KAFKA_RESP_ERR_NO_ERROR &&
        md->topic_cnt == 1 && md->topics[0].err == 0) {
        n = md->topics[0].partition_cnt;
    }
    if (md != NULL) {
        rd_kafka_metadata_destroy(md);
    }
    if (rkt != NULL) {
        rd_kafka_topic_destroy(rkt);
    }
    rd_kafka_destroy(rk);
    return n;
}

static void *http_open(const struct cfg *cfg, const char *bootstrap,
                       loop_t *loop, const struct source_callbacks *cb,
                       struct sl_error *err)
{
    struct publisher *p = calloc(1, sizeof(*p));

    (void)bootstrap;
    if (p == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    p->cfg = cfg;
    p->loop = loop;
    p->cb = *cb;
    p->listen_fd = p->event_fd = -1;
    p->queue_tail = &p->queue_head;
    pthread_mutex_init(&p->lock, NULL);
    loop_timer_init(&p->kick, kick_fired);
    loop_timer_init(&p->sweep, sweep_fired);
    if (cfg->http.auto_shard) {
        ((struct cfg *)cfg)->http_partitions =
            topic_partitions(&cfg->sinks[cfg->publish_sink]);
        if (cfg->http_partitions <= 0) {
            sl_error_set(err, "source.auto_shard needs the kafka sink's "
                              "topic to exist (its partition count)");
            goto fail;
        }
    }
    p->key_reads_headers =
        strncmp(cfg->http.key, "header:", 7) == 0 ||
        (cfg->http.shard_by != NULL &&
         strncmp(cfg->http.shard_by, "header:", 7) == 0);
    p->keys = cfg_http_keyrule(cfg, NULL,
                               cfg->http.auto_shard ? partition_of : NULL,
                               (void *)cfg, err);
    if (p->keys == NULL) {
        goto fail;
    }
    p->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    p->event_io = (struct loop_io){.fd = p->event_fd, .fn = event_ready};
    if (p->event_fd < 0 ||
        loop_io_add(loop, &p->event_io, LOOP_READABLE) != 0) {
        sl_error_set(err, "eventfd: %s", strerror(errno));
        if (p->event_fd >= 0) {
            close(p->event_fd);
            p->event_fd = -1;
        }
        goto fail;
    }
    p->listen_fd = listener_open("source.listen", cfg->http.listen, &p->port,
                                 err);
    if (p->listen_fd < 0) {
        goto fail;
    }
    /* The one partition: assigned before the first request can come. */
    p->part = cb->on_assign(cb->arg, cfg->http.path, 0);
    if (p->part == NULL) {
        sl_error_set(err, "out of memory");
        goto fail;
    }
    p->stats.assigns = 1;
    p->stats.assigned = 1;
    /* poll(), not epoll: every request is suspended and resumed, which
     * with epoll costs two epoll_ctl calls; poll's scan of the
     * connections is shared by all that are ready at once, and it cost
     * 13% less CPU per request at 256 connections (docs/ARCHITECTURE.md,
     * "The publisher's speed"). */
    p->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO,
        0, NULL, NULL, on_request, p, MHD_OPTION_LISTEN_SOCKET, p->listen_fd,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, p,
        MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_CONNECTION_TIMEOUT,
        60u, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_POOL,
        MHD_OPTION_EXTERNAL_LOGGER, listener_mhd_log, "source",
        MHD_OPTION_END);
    if (p->daemon == NULL) {
        sl_error_set(err, "source.listen %s: cannot start the server",
                     cfg->http.listen);
        goto fail;
    }
    p->listen_fd = -1; /* the daemon's now */
    return p;
fail:
    if (p->part != NULL) {
        int64_t offset;
        void *parts[1] = {p->part};
        cb->on_revoke(cb->arg, parts, 1, 1, &offset);
    }
    http_destroy(p);
    return NULL;
}

const struct source http_source = {
    .name = "http",
    .doc = "The publisher (docs/migration.md): each `POST` to `listen` "
           "and `path` becomes one record, which the pipeline handles as "
           "it would a consumed one (transforms, every sink, the outcome "
           "log, metrics). The request is answered 202 once the first "
           "`kafka` sink has the record in Kafka; its other sinks (the "
           "legacy endpoint, in a dual-write) do not change the answer. "
           "Its key follows `key` and the hot-key options "
           "(docs/hot-keys.md). With this source, `delivery.ordering` "
           "defaults to `none` and `delivery.retry_deadline` to "
           "`timeout`; there is no DLQ (the answer, and the outcome log, "
           "say what failed).",
    .options = cfg_http_source_options,
    .open = http_open,
    .suspend = http_suspend,
    .pause = http_pause,
    .resume = http_resume,
    .commit = http_commit,
    .headers = http_headers,
    .header_find = http_header_find,
    .payload = http_payload,
    .settle = http_settle,
    .release = http_release,
    .stopping = http_stopping,
    .close = http_close,
    .destroy = http_destroy,
    .reached = http_reached,
    .problem = http_problem,
    .stats = http_stats,
    .ack_sink = http_ack_sink,
    .describe = http_describe,
};
