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
 * The requests are served on the lane's own loop (httpd.h): read, handed
 * to the engine and answered by the one thread. The records form one
 * partition (topic: the endpoint's path) whose offsets count the requests
 * taken. */
#include "source.h"

#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "connector.h"
#include "httpd.h"
#include "keyrule.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "utf8.h"

#define IDEMPOTENCY_KEY_MAX 200
#define HEADERS_MAX 64
#define CONTENT_TYPE_MAX 128
/* The request line and headers: 16 KiB holds the 8 KiB of headers a
 * proxy usually allows. */
#define HEAD_MAX (16 * 1024)
#define CONNECTIONS_MAX 4096
/* Descriptors left to the rest of the process (the producer's brokers,
 * the other sinks' connections, the outcome log): clients must not be
 * able to take them all. */
#define FDS_RESERVED 128
#define IDLE_TIMEOUT_MS (60 * 1000)
#define RETRY_AFTER_BUSY "Retry-After: 1\r\n"
#define RETRY_AFTER_DOWN "Retry-After: 5\r\n"
#define SWEEP_MS 100

#define container_of(ptr, type, member)                                        \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

struct publisher;

/* A request: read from its connection, then (once taken) a record of the
 * engine's until it releases it. */
struct req {
    struct publisher *p;
    httpd_conn_t *conn; /* NULL once answered */
    char *body;
    size_t len, cap;
    size_t hint; /* Content-Length, when it came and fits max_body */
    char message_id[IDEMPOTENCY_KEY_MAX + 1];
    char traceparent[64];
    char tracestate[512];
    char content_type[CONTENT_TYPE_MAX];
    struct keyrule_decision key;
    uint64_t arrived_ms; /* the loop's clock: its time runs from here */
    struct sl_header headers[4]; /* the record's */
    size_t header_count;
    struct req *next; /* on the queue */
    struct req *live_prev, *live_next; /* p->live_head: the engine's */
    struct loop_timer deadline;
};

struct publisher {
    const struct cfg *cfg;
    loop_t *loop;
    struct source_callbacks cb;
    void *part; /* the engine's, for the one partition */
    int64_t next_offset;
    keyrule_t *keys;
    int key_reads_headers; /* source.key or shard_by is header:NAME */
    httpd_t *server;
    int port;
    /* taken, not handed to the engine yet (it is suspended or paused) */
    struct req *queue_head, **queue_tail;
    struct loop_timer kick;  /* takes the queue after a resume */
    struct loop_timer sweep; /* while held: answers the expired */
    int suspended, paused, stopping;
    int64_t inflight;   /* taken, not yet answered */
    int64_t held_bytes; /* body buffers of every request alive */
    struct req *live_head;
    struct source_stats stats;
    unsigned long requests, accepted, bad, busy, unavailable, rejected,
        too_large, sharded, turned_hot;
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

/* ---- answers ---- */

static void req_free(struct req *r)
{
    r->p->held_bytes -= (int64_t)r->cap;
    free(r->body);
    free(r);
}

static void vanswer(httpd_conn_t *conn, unsigned status, const char *extra,
                    const char *fmt, va_list ap)
{
    char body[768];
    int n = vsnprintf(body, sizeof(body) - 1, fmt, ap);

    if (n < 0) {
        n = 0;
    } else if ((size_t)n >= sizeof(body) - 1) {
        n = (int)sizeof(body) - 2;
    }
    body[n++] = '\n';
    httpd_answer(conn, status, extra, body, (size_t)n);
}

/* Answers a request the engine never saw, and lets it go. */
static void refuse(struct req *r, unsigned long *count, unsigned status,
                   const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void refuse(struct req *r, unsigned long *count, unsigned status,
                   const char *extra, const char *fmt, ...)
{
    va_list ap;

    (*count)++;
    va_start(ap, fmt);
    vanswer(r->conn, status, extra, fmt, ap);
    va_end(ap);
    req_free(r);
}

/* Answers a taken request: 1, or 0 when it was answered before (its
 * deadline passed). */
static int req_answer(struct publisher *p, struct req *r, unsigned status,
                      const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int req_answer(struct publisher *p, struct req *r, unsigned status,
                      const char *extra, const char *fmt, ...)
{
    va_list ap;

    if (r->conn == NULL) {
        return 0;
    }
    va_start(ap, fmt);
    vanswer(r->conn, status, extra, fmt, ap);
    va_end(ap);
    r->conn = NULL;
    loop_timer_stop(p->loop, &r->deadline);
    p->inflight--;
    return 1;
}

/* ---- requests ---- */

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

/* A request's head: refused at once (its body is never kept), or a new
 * request that reads its body. */
static void *on_head(void *arg, httpd_conn_t *conn,
                     const struct httpd_head *head)
{
    struct publisher *p = arg;
    const struct cfg_http_source *h = &p->cfg->http;
    struct req *r = malloc(sizeof(*r));

    p->requests++;
    if (r == NULL) {
        static const char oom[] = "{\"error\":\"out of memory\"}\n";
        httpd_answer(conn, 503, RETRY_AFTER_BUSY, oom, sizeof(oom) - 1);
        return NULL;
    }
    /* Not zeroed whole: the buffers are filled before they are read. */
    r->p = p;
    r->conn = conn;
    r->body = NULL;
    r->len = r->cap = r->hint = 0;
    r->header_count = 0;
    r->next = r->live_prev = r->live_next = NULL;
    if (strcmp(head->path, h->path) != 0) {
        refuse(r, &p->bad, 404, NULL, "{\"error\":\"no such endpoint\"}");
    } else if (strcmp(head->method, "POST") != 0) {
        refuse(r, &p->bad, 405, "Allow: POST\r\n",
               "{\"error\":\"POST only\"}");
    } else if (!type_allowed(h, httpd_header(conn, "Content-Type"))) {
        refuse(r, &p->bad, 415, NULL,
               "{\"error\":\"unsupported Content-Type\"}");
    } else if (head->content_length > h->max_body) {
        refuse(r, &p->too_large, 413, NULL,
               "{\"error\":\"the body is over %lld bytes\"}",
               (long long)h->max_body);
    } else if (head->content_length > 0 &&
               p->held_bytes + head->content_length > h->max_in_flight_bytes) {
        refuse(r, &p->busy, 429, RETRY_AFTER_BUSY,
               "{\"error\":\"%lld bytes of requests under way: try "
               "again\"}",
               (long long)h->max_in_flight_bytes);
    } else {
        r->hint = head->content_length > 0 ? (size_t)head->content_length : 0;
        return r;
    }
    return NULL;
}

static void on_body(void *req, const char *data, size_t len)
{
    struct req *r = req;
    struct publisher *p = r->p;
    const struct cfg_http_source *h = &p->cfg->http;

    if (r->len + len > (size_t)h->max_body) {
        refuse(r, &p->too_large, 413, NULL,
               "{\"error\":\"the body is over %lld bytes\"}",
               (long long)h->max_body);
        return;
    }
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : r->hint > 0 ? r->hint : 4096;
        while (cap < r->len + len) {
            cap *= 2;
        }
        /* Memory stays bounded whatever the connections send. */
        if (p->held_bytes + (int64_t)(cap - r->cap) > h->max_in_flight_bytes) {
            refuse(r, &p->busy, 429, RETRY_AFTER_BUSY,
                   "{\"error\":\"%lld bytes of requests under way: try "
                   "again\"}",
                   (long long)h->max_in_flight_bytes);
            return;
        }
        char *b = realloc(r->body, cap);
        if (b == NULL) {
            refuse(r, &p->busy, 503, RETRY_AFTER_BUSY,
                   "{\"error\":\"out of memory\"}");
            return;
        }
        p->held_bytes += (int64_t)(cap - r->cap);
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, len);
    r->len += len;
}

static void on_abort(void *req)
{
    req_free(req);
}

static void hand_over(struct publisher *p, struct req *r);

/* The request is read: decide its key and id, then hand it to the engine
 * (or queue it while the engine takes none), or answer now. */
static void on_complete(void *req)
{
    struct req *r = req;
    struct publisher *p = r->p;
    const struct cfg_http_source *h = &p->cfg->http;
    struct sl_header headers[HEADERS_MAX];
    size_t header_count = 0;
    struct sl_error err;
    char text[600];
    const char *v;

    if (r->len == 0) {
        refuse(r, &p->bad, 400, NULL, "{\"error\":\"an empty body\"}");
        return;
    }
    if (p->key_reads_headers) {
        header_count = httpd_headers(r->conn, headers, HEADERS_MAX);
    }
    struct keyrule_input in = {
        .headers = headers,
        .header_count = header_count,
        .body = r->body,
        .body_len = r->len,
    };
    if (keyrule_apply(p->keys, &in, (int64_t)wall_ms(), &r->key, &err) != 0) {
        utf8_json_escape(text, sizeof(text), err.msg);
        refuse(r, &p->bad, 400, NULL, "{\"error\":\"%s\"}", text);
        return;
    }
    if (r->key.shard >= 0) {
        p->sharded++;
    }
    if (r->key.turned_hot) {
        p->turned_hot++;
        log_info("publisher: key %.*s is hot (partition %d): sharded into "
                 "%d",
                 (int)r->key.base_len, r->key.key, r->key.partition,
                 r->key.shards);
    } else if (r->key.turned_cold) {
        log_info("publisher: key %.*s is no longer hot: not sharded",
                 (int)r->key.base_len, r->key.key);
    }
    v = httpd_header(r->conn, "Idempotency-Key");
    if (v != NULL && !usable_id(v)) {
        refuse(r, &p->bad, 400, NULL,
               "{\"error\":\"Idempotency-Key: 1 to %d printable ASCII "
               "characters without spaces\"}",
               IDEMPOTENCY_KEY_MAX);
        return;
    }
    if (v != NULL) {
        snprintf(r->message_id, sizeof(r->message_id), "%s", v);
    } else {
        new_message_id(r->message_id);
    }
    r->headers[r->header_count++] = (struct sl_header){
        "message-id", r->message_id, strlen(r->message_id)};
    v = httpd_header(r->conn, "Content-Type");
    if (v != NULL && strlen(v) < sizeof(r->content_type)) {
        memcpy(r->content_type, v, strlen(v) + 1);
        r->headers[r->header_count++] = (struct sl_header){
            "content-type", r->content_type, strlen(r->content_type)};
    }
    /* The trace context goes on as the record's headers: the engine
     * checks it as it does a consumed record's. */
    v = httpd_header(r->conn, "traceparent");
    if (v != NULL && strlen(v) == 55) {
        memcpy(r->traceparent, v, 56);
        r->headers[r->header_count++] = (struct sl_header){
            "traceparent", r->traceparent, 55};
        v = httpd_header(r->conn, "tracestate");
        if (v != NULL && strlen(v) < sizeof(r->tracestate)) {
            memcpy(r->tracestate, v, strlen(v) + 1);
            r->headers[r->header_count++] = (struct sl_header){
                "tracestate", r->tracestate, strlen(r->tracestate)};
        }
    }
    if (p->stopping) {
        refuse(r, &p->unavailable, 503, RETRY_AFTER_BUSY,
               "{\"error\":\"stopping\"}");
        return;
    }
    if (p->inflight >= h->max_in_flight) {
        refuse(r, &p->busy, 429, RETRY_AFTER_BUSY,
               "{\"error\":\"%lld requests under way: try again\"}",
               (long long)h->max_in_flight);
        return;
    }
    p->inflight++;
    r->arrived_ms = loop_now(p->loop);
    loop_timer_init(&r->deadline, NULL);
    if (p->suspended || p->paused || p->queue_head != NULL) {
        *p->queue_tail = r;
        p->queue_tail = &r->next;
        if (!loop_timer_armed(&p->sweep)) {
            loop_timer_start(p->loop, &p->sweep, SWEEP_MS);
        }
        return;
    }
    hand_over(p, r);
}

/* ---- the engine's side: handing records over, and answering ---- */

static void deadline_fired(struct loop_timer *t)
{
    struct req *r = container_of(t, struct req, deadline);

    if (req_answer(r->p, r, 503, RETRY_AFTER_DOWN,
                   "{\"error\":\"Kafka did not acknowledge the record in "
                   "time\",\"message_id\":\"%s\"}",
                   r->message_id)) {
        r->p->unavailable++;
    }
}

/* Answers 503 a request the engine never took: never in Kafka, so the
 * client may try again; count says which figure it goes to. */
static void answer_unqueued(struct publisher *p, struct req *r,
                            const char *why, unsigned long *count)
{
    if (req_answer(p, r, 503, RETRY_AFTER_BUSY,
                   "{\"error\":\"%s\",\"message_id\":\"%s\"}", why,
                   r->message_id)) {
        (*count)++;
    }
    req_free(r);
}

/* A request whose time ran out before the engine took it: the lane was
 * at its bound all along. */
static void answer_late(struct publisher *p, struct req *r)
{
    answer_unqueued(p, r, "the pipeline is at its bound: not taken in time",
                    &p->busy);
}

/* Hands r to the engine: one record of the source's partition. Its
 * timeout counts from its arrival: the time it waited in the queue while
 * the lane was at its bound is part of it. */
static void hand_over(struct publisher *p, struct req *r)
{
    uint64_t age = loop_now(p->loop) - r->arrived_ms;

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

/* Hands the queued requests to the engine, oldest first, until it asks
 * for none (suspended or paused: the rest waits, within max_in_flight,
 * and the sweep answers those whose time runs out). */
static void take_queue(struct publisher *p)
{
    while (!p->suspended && !p->paused && p->queue_head != NULL) {
        struct req *r = p->queue_head;
        p->queue_head = r->next;
        if (p->queue_head == NULL) {
            p->queue_tail = &p->queue_head;
        }
        r->next = NULL;
        hand_over(p, r);
    }
    if (p->queue_head != NULL && !loop_timer_armed(&p->sweep)) {
        loop_timer_start(p->loop, &p->sweep, SWEEP_MS);
    }
}

static void kick_fired(struct loop_timer *t)
{
    take_queue(container_of(t, struct publisher, kick));
}

/* Answers every request not handed to the engine yet. */
static void answer_queued(struct publisher *p, const char *why)
{
    struct req *r = p->queue_head;

    p->queue_head = NULL;
    p->queue_tail = &p->queue_head;
    while (r != NULL) {
        struct req *next = r->next;
        answer_unqueued(p, r, why, &p->unavailable);
        r = next;
    }
}

/* While the queue is held, its expired requests are answered: a held
 * lane must not keep a client waiting past source.timeout. */
static void sweep_fired(struct loop_timer *t)
{
    struct publisher *p = container_of(t, struct publisher, sweep);
    uint64_t now = loop_now(p->loop);
    struct req **at = &p->queue_head;

    while (*at != NULL) {
        struct req *r = *at;
        if (now - r->arrived_ms >= (uint64_t)p->cfg->http.timeout_ms) {
            *at = r->next;
            answer_late(p, r);
        } else {
            at = &r->next;
        }
    }
    p->queue_tail = at;
    if (p->queue_head != NULL) {
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
    int busy = v->fate == SOURCE_BUSY, down = v->fate == SOURCE_UNAVAILABLE;

    if (v->fate == SOURCE_DELIVERED || v->fate == SOURCE_DROPPED) {
        utf8_json_escape(key, sizeof(key), r->key.key);
        if (req_answer(p, r, 202, NULL,
                       "{\"message_id\":\"%s\",\"key\":\"%s\"%s}",
                       r->message_id, key,
                       v->fate == SOURCE_DROPPED ? ",\"dropped\":true" : "")) {
            p->accepted++;
        }
        return;
    }
    utf8_json_escape(why, sizeof(why), v->reason != NULL ? v->reason : "");
    if (req_answer(p, r, busy ? 429 : down ? 503 : 422,
                   busy ? RETRY_AFTER_BUSY : down ? RETRY_AFTER_DOWN : NULL,
                   "{\"error\":\"%s\",\"message_id\":\"%s\"}", why,
                   r->message_id)) {
        (*(busy ? &p->busy : down ? &p->unavailable : &p->rejected))++;
    }
}

static void http_release(void *handle)
{
    struct req *r = handle;
    struct publisher *p = r->p;

    /* Abandoned (a stop that did not wait for it): whether it is in
     * Kafka is not known, so the client must try again. */
    if (req_answer(p, r, 503, RETRY_AFTER_BUSY,
                   "{\"error\":\"stopping\",\"message_id\":\"%s\"}",
                   r->message_id)) {
        p->unavailable++;
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
    req_free(r);
}

/* No new request from now: the listener closes (a balancer sends the
 * next ones elsewhere), and those not taken yet are answered 503. */
static void http_stopping(void *src)
{
    struct publisher *p = src;

    if (p->stopping) {
        return;
    }
    p->stopping = 1;
    httpd_quiesce(p->server);
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
             p->requests, p->accepted, p->bad, p->too_large, p->busy,
             p->unavailable, p->rejected, p->sharded, p->turned_hot);
}

static void http_destroy(void *src)
{
    struct publisher *p = src;

    if (p == NULL) {
        return;
    }
    answer_queued(p, "stopping");
    for (struct req *r = p->live_head; r != NULL; r = r->live_next) {
        if (req_answer(p, r, 503, RETRY_AFTER_BUSY,
                       "{\"error\":\"stopping\",\"message_id\":\"%s\"}",
                       r->message_id)) {
            p->unavailable++;
        }
    }
    if (p->server != NULL) {
        httpd_destroy(p->server);
        summary(p);
    }
    while (p->live_head != NULL) {
        http_release(p->live_head);
    }
    if (p->loop != NULL) {
        loop_timer_stop(p->loop, &p->kick);
        loop_timer_stop(p->loop, &p->sweep);
    }
    keyrule_destroy(p->keys);
    free(p);
}

static int http_reached(const void *src)
{
    return ((const struct publisher *)src)->server != NULL;
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

/* How many client connections the server may hold, as Redis sizes its
 * maxclients: CONNECTIONS_MAX when the descriptor limit can be raised to
 * hold them and FDS_RESERVED more, fewer (and said) when it cannot. */
static size_t connection_limit(void)
{
    const rlim_t want = CONNECTIONS_MAX + FDS_RESERVED;
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return CONNECTIONS_MAX;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        struct rlimit up = rl;
        up.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want
                          ? want
                          : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) {
            rl = up;
        }
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want) {
        return CONNECTIONS_MAX;
    }
    size_t n = rl.rlim_cur > 2 * FDS_RESERVED
                   ? (size_t)(rl.rlim_cur - FDS_RESERVED)
                   : (size_t)rl.rlim_cur / 2;
    log_warn("source: at most %zu client connections: the descriptor "
             "limit (ulimit -n) is %llu",
             n, (unsigned long long)rl.rlim_cur);
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
    p->queue_tail = &p->queue_head;
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
    int listen_fd = listener_open("source.listen", cfg->http.listen,
                                  &p->port, err);
    if (listen_fd < 0) {
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
    struct httpd_limits limits = {
        .max_connections = connection_limit(),
        .max_head = HEAD_MAX,
        .idle_timeout_ms = IDLE_TIMEOUT_MS,
    };
    struct httpd_handler handler = {
        .arg = p,
        .on_head = on_head,
        .on_body = on_body,
        .on_complete = on_complete,
        .on_abort = on_abort,
    };
    p->server = httpd_new(loop, listen_fd, &limits, &handler, err);
    if (p->server == NULL) {
        close(listen_fd);
        goto fail;
    }
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
