/* publisher.c -- `source.type: http` (publisher.h). */
#include "publisher.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "connector.h"
#include "keyrule.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "outcomes.h"
#include "redact.h"

#define IDEMPOTENCY_KEY_MAX 200
#define HEADERS_MAX 64
#define RETRY_AFTER_BUSY "1"
#define RETRY_AFTER_DOWN "5"
#define LEGACY_RETRY_MS 200

#define container_of(ptr, type, member)                                        \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

struct publisher;
struct req;

/* One sink's delivery of one request. */
struct pub_delivery {
    struct req *r;
    size_t sink;
    uint32_t attempts;
    uint64_t first_ms;
    struct loop_timer retry;
};

/* A request, shared by libmicrohttpd's thread (which reads it and sends
 * the answer) and the loop (which produces it): refs counts the two; the
 * last to let go frees it. */
struct req {
    struct publisher *p;
    struct MHD_Connection *conn;
    atomic_int refs;
    /* read on MHD's thread */
    char *body;
    size_t len, cap;
    int too_large;
    unsigned early_status; /* refused before the body: answer this */
    char message_id[IDEMPOTENCY_KEY_MAX + 1];
    char traceparent[64];
    struct keyrule_decision key;
    /* the answer, set by the loop before it resumes the connection */
    unsigned status;
    const char *retry_after;
    char answer[512];
    int answered; /* under p->lock */
    /* loop side */
    struct req *next;
    struct req *live_prev, *live_next; /* p->live_head */
    unsigned pending; /* sinks not yet terminal */
    struct loop_timer deadline;
    struct pub_delivery *d; /* one per sink */
};

struct sink_state {
    const struct cfg_sink *cfg;
    struct connector_host host;
    struct connector_about about;
    int opened;
    uint64_t delivered, applied, failed;
};

struct publisher {
    const struct cfg *cfg;
    loop_t *loop;
    struct sink_state *sinks;
    size_t nsinks;
    size_t primary;
    keyrule_t *keys; /* MHD's thread only */
    outcomes_t *outcomes;
    redact_t *redact;
    struct MHD_Daemon *daemon;
    int listen_fd, port;
    /* MHD's thread -> the loop */
    pthread_mutex_t lock;
    struct req *queue_head, **queue_tail;
    int event_fd;
    struct loop_io event_io;
    int sigfd;
    struct loop_io sig_io;
    struct loop_timer flush_timer; /* the outcome log, each second */
    atomic_long inflight; /* accepted, not yet answered */
    atomic_long live;     /* requests the loop still holds */
    struct req *live_head;
    int stopping, forced;
    uint64_t drain_deadline;
    /* counters (atomics: both threads count) */
    atomic_ulong requests, accepted, bad, busy, unavailable, too_large;
    atomic_ulong sharded, turned_hot;
};

/* ---- ids ---- */

void publisher_uuid7(char out[37], uint64_t unix_ms, const uint8_t rnd[10])
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
    publisher_uuid7(out, wall_ms(), rnd);
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
        free(r->body);
        free(r->d);
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
    struct header_list headers = {.n = 0};
    struct sl_error err;
    char text[600];
    const char *v;

    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, &headers);
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
    v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "traceparent");
    if (v != NULL && strlen(v) == 55) {
        memcpy(r->traceparent, v, 56);
    }
    if (p->stopping) {
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
            if (cl != NULL && strtoull(cl, NULL, 10) >
                                  (unsigned long long)h->max_body) {
                r->too_large = 1;
            }
        }
        return MHD_YES;
    }
    if (*upload_size > 0) {
        /* Read (and drop, when refused) the body so that the connection
         * stays usable for the next request. */
        if (!r->early_status && !r->too_large) {
            if (r->len + *upload_size > (size_t)h->max_body) {
                r->too_large = 1;
            } else {
                if (r->len + *upload_size > r->cap) {
                    size_t cap = r->cap ? r->cap : 4096;
                    while (cap < r->len + *upload_size) {
                        cap *= 2;
                    }
                    char *b = realloc(r->body, cap);
                    if (b == NULL) {
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

static void on_mhd_log(void *arg, const char *fmt, va_list ap)
{
    char msg[512];

    (void)arg;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_warn("publisher: %s", msg);
}

/* ---- the loop: producing and answering ---- */

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

static void req_release(struct publisher *p, struct req *r)
{
    loop_timer_stop(p->loop, &r->deadline);
    for (size_t i = 0; r->d != NULL && i < p->nsinks; i++) {
        loop_timer_stop(p->loop, &r->d[i].retry);
    }
    if (r->live_prev != NULL) {
        r->live_prev->live_next = r->live_next;
    } else if (p->live_head == r) {
        p->live_head = r->live_next;
    }
    if (r->live_next != NULL) {
        r->live_next->live_prev = r->live_prev;
    }
    atomic_fetch_sub(&p->live, 1);
    req_unref(r);
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

static void outcome(struct publisher *p, struct pub_delivery *d,
                    const char *kind, const struct connector_result *res)
{
    struct req *r = d->r;
    struct sink_state *s = &p->sinks[d->sink];
    char target[1024];

    if (p->outcomes == NULL) {
        return;
    }
    struct connector_msg view = {.dedupe_key = r->message_id};
    struct outcome line = {
        .wall_ms = wall_ms(),
        .pipeline = p->cfg->pipeline,
        .sink = s->cfg->name,
        .key = r->message_id,
        .key_len = strlen(r->message_id),
        .kind = kind,
        .method = s->about.method,
        .status = res->http_status > 0 ? res->http_status : -1,
        .attempts = d->attempts,
        .body = r->body,
        .body_len = r->len,
        .error = res->status == CONNECTOR_OK ? NULL : res->error,
    };
    if (s->cfg->connector->target != NULL) {
        size_t len = s->cfg->connector->target(s->cfg->ctx, &view, target,
                                               sizeof(target));
        redact_apply(p->redact, target, &len, sizeof(target) - 1);
        target[len] = '\0';
        line.path = target;
    }
    outcomes_write(p->outcomes, &line);
}

static void send_one(struct publisher *p, struct pub_delivery *d);

static void retry_fired(struct loop_timer *t)
{
    struct pub_delivery *d = container_of(t, struct pub_delivery, retry);

    send_one(d->r->p, d);
}

static void delivery_done(struct publisher *p, struct pub_delivery *d)
{
    struct req *r = d->r;

    if (--r->pending == 0) {
        req_release(p, r);
    }
}

static void on_result(struct publisher *p, struct pub_delivery *d,
                      const struct connector_result *res, int at_send)
{
    struct req *r = d->r;
    struct sink_state *s = &p->sinks[d->sink];
    uint64_t now = loop_now(p->loop);

    d->attempts++;
    if (d->sink == p->primary) {
        if (res->status == CONNECTOR_OK) {
            /* Acknowledged after its deadline: in Kafka, though the
             * client was told 503 (and may retry: the same message id). */
            s->delivered++;
            char key[KEYRULE_RECORD_KEY_MAX * 6 + 1];
            if (req_answer(p, r, MHD_HTTP_ACCEPTED, NULL,
                           "{\"message_id\":\"%s\",\"key\":\"%s\"}",
                           r->message_id,
                           json_text(key, sizeof(key), r->key.key))) {
                atomic_fetch_add(&p->accepted, 1);
            }
            outcome(p, d, OUTCOME_DELIVERED, res);
        } else {
            s->failed++;
            /* A full producer queue is back-pressure: 429. Anything else
             * (no acknowledgement in time, brokers down) is 503. Either
             * way the record is not known to be in Kafka: never 202. */
            int busy = at_send && res->status == CONNECTOR_RETRY;
            unsigned status = busy ? MHD_HTTP_TOO_MANY_REQUESTS
                              : res->status == CONNECTOR_RETRY
                                  ? MHD_HTTP_SERVICE_UNAVAILABLE
                                  : MHD_HTTP_UNPROCESSABLE_CONTENT;
            const char *retry_after =
                res->status != CONNECTOR_RETRY ? NULL
                : busy                         ? RETRY_AFTER_BUSY
                                               : RETRY_AFTER_DOWN;
            char why[256]; /* fits r->answer with the id */
            int answered = req_answer(
                p, r, status, retry_after,
                "{\"error\":\"%s\",\"message_id\":\"%s\"}",
                json_text(why, sizeof(why), res->error), r->message_id);
            if (answered) {
                atomic_fetch_add(busy ? &p->busy : &p->unavailable, 1);
            }
        }
        delivery_done(p, d);
        return;
    }
    /* The other sinks (the legacy endpoint): retried while the request's
     * time lasts, then recorded as failed. */
    if (res->status == CONNECTOR_OK) {
        s->delivered++;
        outcome(p, d, OUTCOME_DELIVERED, res);
    } else if (res->status == CONNECTOR_RETRY && !p->stopping &&
               now - d->first_ms + LEGACY_RETRY_MS <
                   (uint64_t)p->cfg->http.timeout_ms) {
        loop_timer_start(p->loop, &d->retry, LEGACY_RETRY_MS);
        return;
    } else {
        s->failed++;
        outcome(p, d, OUTCOME_DEAD_LETTERED, res);
    }
    delivery_done(p, d);
}

static void on_complete(void *engine, void *token,
                        const struct connector_result *result)
{
    on_result(engine, token, result, 0);
}

static void send_one(struct publisher *p, struct pub_delivery *d)
{
    struct req *r = d->r;
    struct sink_state *s = &p->sinks[d->sink];
    struct sl_header content_type = {"content-type", "application/json",
                                     16};
    struct connector_msg msg = {
        .topic = p->cfg->http.path,
        .partition = -1,
        .offset = -1,
        .timestamp_ms = (int64_t)wall_ms(),
        .key = r->key.key,
        .key_len = r->key.key_len,
        .value = r->body,
        .value_len = r->len,
        .dedupe_key = r->message_id,
        .headers = &content_type,
        .header_count = 1,
        .traceparent = r->traceparent[0] != '\0' ? r->traceparent : NULL,
    };
    struct connector_result res;

    if (d->attempts == 0) {
        d->first_ms = loop_now(p->loop);
    }
    if (s->cfg->connector->send(s->cfg->ctx, &msg, d, &res) != 0) {
        on_result(p, d, &res, 1);
    }
}

static void event_ready(struct loop_io *io, uint32_t events)
{
    struct publisher *p = container_of(io, struct publisher, event_io);
    uint64_t n;
    struct req *r, *next;

    (void)events;
    if (read(p->event_fd, &n, sizeof(n)) < 0 && errno != EAGAIN) {
        log_warn("publisher: eventfd: %s", strerror(errno));
    }
    pthread_mutex_lock(&p->lock);
    r = p->queue_head;
    p->queue_head = NULL;
    p->queue_tail = &p->queue_head;
    pthread_mutex_unlock(&p->lock);
    for (; r != NULL; r = next) {
        next = r->next;
        atomic_fetch_add(&p->live, 1);
        r->live_prev = NULL;
        r->live_next = p->live_head;
        if (p->live_head != NULL) {
            p->live_head->live_prev = r;
        }
        p->live_head = r;
        r->d = calloc(p->nsinks, sizeof(*r->d));
        if (r->d == NULL) {
            atomic_fetch_add(&p->unavailable, 1);
            r->pending = 1;
            req_answer(p, r, MHD_HTTP_SERVICE_UNAVAILABLE, RETRY_AFTER_BUSY,
                       "{\"error\":\"out of memory\"}");
            req_release(p, r);
            continue;
        }
        loop_timer_init(&r->deadline, deadline_fired);
        loop_timer_start(p->loop, &r->deadline, p->cfg->http.timeout_ms);
        r->pending = (unsigned)p->nsinks;
        for (size_t i = 0; i < p->nsinks; i++) {
            r->d[i] = (struct pub_delivery){.r = r, .sink = i};
            loop_timer_init(&r->d[i].retry, retry_fired);
        }
        /* The primary first: its answer is the one the client waits for. */
        send_one(p, &r->d[p->primary]);
        for (size_t i = 0; i < p->nsinks; i++) {
            if (i != p->primary) {
                send_one(p, &r->d[i]);
            }
        }
    }
}

static void signal_ready(struct loop_io *io, uint32_t events)
{
    struct publisher *p = container_of(io, struct publisher, sig_io);
    struct signalfd_siginfo si;

    (void)events;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (p->stopping) {
            log_warn("second signal: stopping without waiting for requests "
                     "under way");
            p->forced = 1;
        } else {
            log_info("signal %s: no new requests; answering those under "
                     "way",
                     strsignal((int)si.ssi_signo));
            p->stopping = 1;
        }
    }
}

/* ---- start and stop ---- */

#define FLUSH_INTERVAL_MS 1000

static void flush_fired(struct loop_timer *t)
{
    struct publisher *p = container_of(t, struct publisher, flush_timer);
    struct sl_error err;

    if (outcomes_flush(p->outcomes, &err) != 0) {
        log_warn("publisher: %s", err.msg);
    }
    loop_timer_start(p->loop, t, FLUSH_INTERVAL_MS);
}

static int partition_of(void *arg, const char *key, size_t len)
{
    const struct publisher *p = arg;
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
    return (int)(crc % (uint32_t)p->cfg->http_partitions);
}

static void summary(const struct publisher *p)
{
    char line[2048];
    size_t n = (size_t)snprintf(
        line, sizeof(line),
        "summary requests=%lu accepted=%lu bad=%lu too_large=%lu busy=%lu "
        "unavailable=%lu sharded=%lu turned_hot=%lu",
        atomic_load(&p->requests), atomic_load(&p->accepted),
        atomic_load(&p->bad), atomic_load(&p->too_large),
        atomic_load(&p->busy), atomic_load(&p->unavailable),
        atomic_load(&p->sharded), atomic_load(&p->turned_hot));
    for (size_t i = 0; i < p->nsinks && n < sizeof(line); i++) {
        const struct sink_state *s = &p->sinks[i];
        n += (size_t)snprintf(line + n, sizeof(line) - n, " %s=%llu",
                              s->cfg->name,
                              (unsigned long long)s->delivered);
        if (s->failed > 0 && n < sizeof(line)) {
            n += (size_t)snprintf(line + n, sizeof(line) - n,
                                  " %s_failed=%llu", s->cfg->name,
                                  (unsigned long long)s->failed);
        }
    }
    log_info("%s", line);
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

int publisher_run(const struct cfg *cfg)
{
    struct publisher *p = calloc(1, sizeof(*p));
    struct sl_error err;
    sigset_t mask;
    int rc = 1;

    if (p == NULL) {
        log_error("cannot start: out of memory");
        return 1;
    }
    p->cfg = cfg;
    p->nsinks = cfg->sink_count;
    p->primary = (size_t)cfg->publish_sink;
    p->listen_fd = p->event_fd = p->sigfd = -1;
    p->queue_tail = &p->queue_head;
    pthread_mutex_init(&p->lock, NULL);
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    p->redact = redact_new(cfg);
    p->sinks = calloc(p->nsinks, sizeof(*p->sinks));
    p->loop = loop_new(&err);
    if (p->redact == NULL || p->sinks == NULL || p->loop == NULL) {
        log_error("cannot start: %s",
                  p->loop == NULL ? err.msg : "out of memory");
        goto out;
    }
    if (cfg->http.auto_shard) {
        ((struct cfg *)cfg)->http_partitions =
            topic_partitions(&cfg->sinks[p->primary]);
        if (cfg->http_partitions <= 0) {
            log_error("cannot start: source.auto_shard needs the kafka "
                      "sink's topic to exist (its partition count)");
            goto out;
        }
    }
    p->keys = cfg_http_keyrule(cfg, NULL,
                               cfg->http.auto_shard ? partition_of : NULL, p,
                               &err);
    if (p->keys == NULL) {
        log_error("cannot start: %s", err.msg);
        goto out;
    }
    if (cfg->outcomes.path != NULL || cfg->outcomes.topic != NULL) {
        p->outcomes = outcomes_new(cfg, &err);
        if (p->outcomes == NULL) {
            log_error("cannot start: %s", err.msg);
            goto out;
        }
        loop_timer_init(&p->flush_timer, flush_fired);
        loop_timer_start(p->loop, &p->flush_timer, FLUSH_INTERVAL_MS);
    }
    for (size_t i = 0; i < p->nsinks; i++) {
        struct sink_state *s = &p->sinks[i];
        s->cfg = &cfg->sinks[i];
        s->host = (struct connector_host){
            .sink_name = s->cfg->name,
            .max_in_flight = (int)s->cfg->max_in_flight,
            .complete = on_complete,
            .engine = p,
        };
        loop_fill_host(p->loop, &s->host);
        if (s->cfg->connector->open(s->cfg->ctx, &s->host, &err) != 0) {
            log_error("cannot start: sink %s: %s", s->cfg->name, err.msg);
            goto out;
        }
        s->opened = 1;
        if (s->cfg->connector->describe != NULL) {
            s->cfg->connector->describe(s->cfg->ctx, &s->about);
        }
    }
    p->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    p->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    p->event_io = (struct loop_io){.fd = p->event_fd, .fn = event_ready};
    p->sig_io = (struct loop_io){.fd = p->sigfd, .fn = signal_ready};
    if (p->event_fd < 0 || p->sigfd < 0 ||
        loop_io_add(p->loop, &p->event_io, LOOP_READABLE) != 0 ||
        loop_io_add(p->loop, &p->sig_io, LOOP_READABLE) != 0) {
        log_error("cannot start: %s", strerror(errno));
        goto out;
    }
    p->listen_fd = listener_open("source.listen", cfg->http.listen, &p->port,
                                 &err);
    if (p->listen_fd < 0) {
        log_error("cannot start: %s", err.msg);
        goto out;
    }
    p->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
            MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO,
        0, NULL, NULL, on_request, p, MHD_OPTION_LISTEN_SOCKET, p->listen_fd,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, p,
        MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_CONNECTION_TIMEOUT,
        60u, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, p, MHD_OPTION_END);
    if (p->daemon == NULL) {
        log_error("cannot start: source.listen %s: cannot start the server",
                  cfg->http.listen);
        goto out;
    }
    p->listen_fd = -1; /* the daemon's now */
    log_info("publisher %s: listening on %s (port %d), POST %s; records go "
             "to sink %s",
             cfg->pipeline, cfg->http.listen, p->port, cfg->http.path,
             cfg->sinks[p->primary].name);

    while (!p->forced) {
        if (p->stopping) {
            if (p->drain_deadline == 0) {
                MHD_socket fd = MHD_quiesce_daemon(p->daemon);
                if (fd != MHD_INVALID_SOCKET) {
                    close(fd);
                }
                p->drain_deadline = loop_now(p->loop) +
                                    (uint64_t)cfg->http.drain_timeout_ms;
            }
            if (atomic_load(&p->live) == 0 ||
                loop_now(p->loop) >= p->drain_deadline) {
                break;
            }
        }
        if (loop_run_once(p->loop, p->stopping ? 50 : 1000) != 0) {
            log_error("event loop: %s", strerror(errno));
            break;
        }
    }
    if (atomic_load(&p->live) > 0) {
        log_warn("%ld request(s) still under way at exit: those not "
                 "answered yet get 503 (their records may or may not be in "
                 "Kafka)",
                 atomic_load(&p->live));
    }
    rc = 0;
out:
    /* Every suspended connection is resumed (answered) before the stop,
     * as libmicrohttpd requires; a moment lets the answers go out. */
    for (struct req *r = p->live_head; r != NULL; r = r->live_next) {
        req_answer(p, r, MHD_HTTP_SERVICE_UNAVAILABLE, RETRY_AFTER_BUSY,
                   "{\"error\":\"stopping\",\"message_id\":\"%s\"}",
                   r->message_id);
    }
    pthread_mutex_lock(&p->lock);
    for (struct req *r = p->queue_head; r != NULL; r = r->next) {
        r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
        r->retry_after = RETRY_AFTER_BUSY;
        snprintf(r->answer, sizeof(r->answer), "{\"error\":\"stopping\"}");
        r->answered = 1;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&p->lock);
    if (p->daemon != NULL) {
        if (p->live_head != NULL || p->queue_head != NULL) {
            usleep(200 * 1000);
        }
        MHD_stop_daemon(p->daemon);
    }
    for (size_t i = 0; p->sinks != NULL && i < p->nsinks; i++) {
        if (p->sinks[i].opened) {
            p->sinks[i].cfg->connector->close(p->sinks[i].cfg->ctx);
        }
    }
    /* What the sinks will never report on now. */
    while (p->live_head != NULL) {
        req_release(p, p->live_head);
    }
    for (struct req *r = p->queue_head, *next; r != NULL; r = next) {
        next = r->next;
        req_unref(r);
    }
    if (rc == 0) {
        summary(p);
    }
    if (p->outcomes != NULL) {
        loop_timer_stop(p->loop, &p->flush_timer);
    }
    outcomes_close(p->outcomes);
    keyrule_destroy(p->keys);
    if (p->listen_fd >= 0) {
        close(p->listen_fd);
    }
    if (p->event_fd >= 0) {
        close(p->event_fd);
    }
    if (p->sigfd >= 0) {
        close(p->sigfd);
    }
    loop_destroy(p->loop);
    redact_free(p->redact);
    free(p->sinks);
    pthread_mutex_destroy(&p->lock);
    free(p);
    return rc;
}
