/* trace.c -- W3C trace context and OTLP/HTTP JSON span export.
 *
 * A span is encoded once, when it ends, as a JSON fragment followed by a
 * comma, into `pending`. An export takes up to max_batch_spans fragments
 * into its body between the resource's prefix and the closing brackets,
 * and posts it on the lane's curl multi; up to TRACE_EXPORTS run at once,
 * since a batch's round trip rides on the lane's loop iterations. The
 * byte bound (max_buffer_bytes) covers what waits and what is being
 * sent. A failed export is not retried: the collector being down must
 * cost the worker neither memory nor time. */
#include "trace.h"
#include "utf8.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "log.h"

#define EXPORT_LOG_INTERVAL_MS 10000
#define TRACE_EXPORTS 4
#define SPAN_MAX ((size_t)16 << 20) /* a span's encoding bound, at most */

struct buf {
    char *data;
    size_t len, cap;
};

struct export {
    tracer_t *t;
    CURL *easy; /* kept across exports: keep-alive */
    struct buf body;
    size_t spans;
    int busy;
    struct connector_transfer transfer;
};

struct tracer {
    const struct connector_host *host;
    char *endpoint;
    char where[512]; /* the endpoint without query or credentials, for logs */
    double sample_ratio;
    size_t max_buffer, max_batch;
    int64_t batch_delay_ms, timeout_ms;
    uint64_t rng;
    struct buf prefix;  /* {"resourceSpans":[{"resource":...,"spans":[ */
    struct buf pending; /* fragments, each followed by a comma */
    size_t pending_spans;
    struct buf span;    /* one span being encoded */
    struct export exports[TRACE_EXPORTS];
    int busy;             /* exports under way */
    size_t sending_bytes; /* their bodies */
    int flush_asked;
    struct curl_slist *headers;
    void *timer;
    int timer_armed;
    struct tracer_stats stats;
    uint64_t fail_logged_ms, fails_unlogged;
};

/* ---- trace context ---- */

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1; /* uppercase is invalid, as the spec says */
}

/* Reads n bytes from 2n lowercase hex digits; -1 on a bad digit. */
static int unhex(const unsigned char *in, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(in[2 * i]), lo = hex_value(in[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return -1;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return 0;
        }
    }
    return 1;
}

int trace_parse(const void *value, size_t len, struct trace_ctx *out)
{
    const unsigned char *v = value;
    uint8_t version;

    if (v == NULL || len < TRACEPARENT_LEN ||
        unhex(v, &version, 1) != 0 || version == 0xff) {
        return -1;
    }
    if (version == 0 ? len != TRACEPARENT_LEN
                     : len > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != '-') {
        return -1;
    }
    if (v[2] != '-' || v[35] != '-' || v[52] != '-' ||
        unhex(v + 3, out->trace_id, 16) != 0 ||
        unhex(v + 36, out->span_id, 8) != 0 ||
        unhex(v + 53, &out->flags, 1) != 0 ||
        all_zero(out->trace_id, 16) || all_zero(out->span_id, 8)) {
        return -1;
    }
    return 0;
}

static char *put_hex(char *out, const uint8_t *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        *out++ = digits[in[i] >> 4];
        *out++ = digits[in[i] & 15];
    }
    return out;
}

void trace_format(const struct trace_ctx *c, char out[TRACEPARENT_LEN + 1])
{
    char *p = out;

    *p++ = '0';
    *p++ = '0';
    *p++ = '-';
    p = put_hex(p, c->trace_id, 16);
    *p++ = '-';
    p = put_hex(p, c->span_id, 8);
    *p++ = '-';
    p = put_hex(p, &c->flags, 1);
    *p = '\0';
}

void trace_id_hex(const struct trace_ctx *c, char out[33])
{
    *put_hex(out, c->trace_id, 16) = '\0';
}

/* ---- ids ---- */

/* splitmix64: fast, and seeded from getrandom() so that two workers
 * never draw the same ids. */
static uint64_t next_random(tracer_t *t)
{
    uint64_t z = (t->rng += 0x9e3779b97f4a7c15u);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void random_id(tracer_t *t, uint8_t *out, size_t n)
{
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = next_random(t);
            memcpy(out + i, &r, n - i < 8 ? n - i : 8);
        }
    } while (all_zero(out, n));
}

void tracer_start(tracer_t *t, const struct trace_ctx *parent,
                  struct trace_ctx *out)
{
    if (parent != NULL) {
        memcpy(out->trace_id, parent->trace_id, sizeof(out->trace_id));
        out->flags = parent->flags;
    } else {
        random_id(t, out->trace_id, sizeof(out->trace_id));
        /* 53 random bits as a fraction in [0, 1): ratio 1 always samples,
         * 0 never does. */
        double draw = (double)(next_random(t) >> 11) * 0x1.0p-53;
        out->flags = draw < t->sample_ratio ? TRACE_SAMPLED : 0;
    }
    random_id(t, out->span_id, sizeof(out->span_id));
}

/* ---- encoding ---- */

static int buf_reserve(struct buf *b, size_t more)
{
    if (b->len + more <= b->cap) {
        return 0;
    }
    size_t cap = b->cap != 0 ? b->cap : 1024;
    while (cap < b->len + more) {
        cap *= 2;
    }
    char *data = realloc(b->data, cap);
    if (data == NULL) {
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

/* The callers reserve first: a span's worst case is known before it is
 * written (span_bound). */
static void put(struct buf *b, const char *s, size_t n)
{
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void put_str(struct buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* A JSON string of any bytes: quotes, backslashes and control bytes
 * escaped, a byte that is not valid UTF-8 replaced with U+FFFD. At most
 * 6 bytes per input byte plus 2. */
static void put_json_string(struct buf *b, const char *s, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    char *o = b->data + b->len;

    *o++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            /* The common case: a run of plain ASCII, copied at once. */
            size_t run = i + 1;
            while (run < n && p[run] >= 0x20 && p[run] < 0x7f &&
                   p[run] != '"' && p[run] != '\\') {
                run++;
            }
            memcpy(o, p + i, run - i);
            o += run - i;
            i = run;
        } else if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(o, "\\u00", 4);
            o[4] = digits[c >> 4];
            o[5] = digits[c & 15];
            o += 6;
            i++;
        } else {
            size_t len = utf8_decode(p + i, n - i, NULL);
            if (len == 0) {
                memcpy(o, "\xef\xbf\xbd", 3);
                o += 3;
                i++;
            } else {
                memcpy(o, p + i, len);
                o += len;
                i += len;
            }
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
}

/* Decimal digits of v, without snprintf (a span writes several). */
static void put_uint(struct buf *b, uint64_t v, int quoted)
{
    char text[24], *end = text + sizeof(text), *p = end;

    if (quoted) {
        *--p = '"';
    }
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    if (quoted) {
        *--p = '"';
    }
    put(b, p, (size_t)(end - p));
}

static void put_attr(struct buf *b, const struct trace_attr *a)
{
    put_str(b, "{\"key\":");
    put_json_string(b, a->key, strlen(a->key));
    if (a->type == TRACE_INT) {
        /* OTLP JSON writes 64-bit integers as strings. */
        put_str(b, ",\"value\":{\"intValue\":");
        if (a->i < 0) {
            put_str(b, "\"-");
            put_uint(b, (uint64_t)0 - (uint64_t)a->i, 0);
            put_str(b, "\"");
        } else {
            put_uint(b, (uint64_t)a->i, 1);
        }
    } else {
        put_str(b, ",\"value\":{\"stringValue\":");
        put_json_string(b, a->str != NULL ? a->str : "",
                        a->str != NULL ? a->str_len : 0);
    }
    put_str(b, "}}");
}

/* An upper bound of the bytes span s encodes to. */
static size_t span_bound(const struct trace_span *s)
{
    size_t n = 512 + 6 * strlen(s->name);

    if (s->status_message != NULL) {
        n += 6 * strlen(s->status_message);
    }
    for (size_t i = 0; i < s->attr_count; i++) {
        n += 96 + 6 * strlen(s->attrs[i].key);
        if (s->attrs[i].type == TRACE_STR && s->attrs[i].str != NULL) {
            n += 6 * s->attrs[i].str_len;
        }
    }
    return n;
}

static void encode_span(struct buf *b, const struct trace_span *s)
{
    char ids[33];

    put_str(b, "{\"traceId\":\"");
    put(b, ids, (size_t)(put_hex(ids, s->ctx.trace_id, 16) - ids));
    put_str(b, "\",\"spanId\":\"");
    put(b, ids, (size_t)(put_hex(ids, s->ctx.span_id, 8) - ids));
    if (s->parent_span_id != NULL) {
        put_str(b, "\",\"parentSpanId\":\"");
        put(b, ids, (size_t)(put_hex(ids, s->parent_span_id, 8) - ids));
    }
    put_str(b, "\",\"name\":");
    put_json_string(b, s->name, strlen(s->name));
    put_str(b, ",\"kind\":");
    put_uint(b, (uint64_t)s->kind, 0);
    put_str(b, ",\"startTimeUnixNano\":");
    put_uint(b, s->start_unix_ns, 1);
    put_str(b, ",\"endTimeUnixNano\":");
    put_uint(b, s->end_unix_ns, 1);
    put_str(b, ",\"attributes\":[");
    for (size_t i = 0; i < s->attr_count; i++) {
        if (i > 0) {
            put(b, ",", 1);
        }
        put_attr(b, &s->attrs[i]);
    }
    put_str(b, "]");
    if (s->error) {
        put_str(b, ",\"status\":{\"code\":2");
        if (s->status_message != NULL) {
            put_str(b, ",\"message\":");
            put_json_string(b, s->status_message, strlen(s->status_message));
        }
        put_str(b, "}");
    }
    put_str(b, "},");
}

/* ---- export ---- */

static void arm(tracer_t *t, int64_t delay_ms)
{
    t->host->timer_set(t->host->io, t->timer, delay_ms);
    t->timer_armed = delay_ms >= 0;
}

/* When the next export should start: at once for a full batch or a
 * flush, after batch_delay for the first waiting span. */
static void schedule(tracer_t *t)
{
    if (t->busy == TRACE_EXPORTS || t->pending_spans == 0) {
        return;
    }
    if (t->pending_spans >= t->max_batch || t->flush_asked) {
        arm(t, 0);
    } else if (!t->timer_armed) {
        arm(t, t->batch_delay_ms);
    }
}

static void export_failed(tracer_t *t, size_t spans, const char *why)
{
    uint64_t now = t->host->now_ms(t->host->io);

    t->stats.export_failures++;
    t->stats.dropped += spans;
    if (t->fail_logged_ms == 0 ||
        now - t->fail_logged_ms >= EXPORT_LOG_INTERVAL_MS) {
        char more[96] = "";
        if (t->fails_unlogged > 0) {
            snprintf(more, sizeof(more),
                     " (%" PRIu64 " more failed export(s) since the last "
                     "report)", t->fails_unlogged);
        }
        log_warn("tracing: export to %s failed: %s; %zu span(s) dropped%s",
                 t->where, why, spans, more);
        t->fail_logged_ms = now;
        t->fails_unlogged = 0;
    } else {
        t->fails_unlogged++;
    }
}

static void export_release(tracer_t *t, struct export *x)
{
    x->busy = 0;
    t->busy--;
    t->sending_bytes -= x->body.len;
    x->body.len = 0;
    x->spans = 0;
}

static void export_done(struct connector_transfer *transfer, int curl_code)
{
    struct export *x = (struct export *)(void *)((char *)transfer -
                                                 offsetof(struct export,
                                                          transfer));
    tracer_t *t = x->t;
    long status = 0;

    if (curl_code != CURLE_OK) {
        export_failed(t, x->spans, curl_easy_strerror((CURLcode)curl_code));
    } else {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && status < 300) {
            t->stats.exported += x->spans;
        } else {
            char why[64];
            snprintf(why, sizeof(why), "the collector answered %ld", status);
            export_failed(t, x->spans, why);
        }
    }
    export_release(t, x);
    schedule(t);
}

/* Where the first n of pending's fragments end. A fragment starts with
 * {"traceId":" and a string inside one has every quote escaped, so
 * },{"traceId" is always a boundary. */
static size_t fragments_end(const struct buf *b, size_t n)
{
    static const char next[] = "},{\"traceId\"";
    const char *p = b->data, *end = b->data + b->len;

    while (n-- > 0) {
        const char *at = memmem(p, (size_t)(end - p), next, sizeof(next) - 1);
        if (at == NULL) {
            return b->len;
        }
        p = at + 2; /* past the comma */
    }
    return (size_t)(p - b->data);
}

static struct export *export_free_slot(tracer_t *t)
{
    for (int i = 0; i < TRACE_EXPORTS; i++) {
        if (!t->exports[i].busy) {
            return &t->exports[i];
        }
    }
    return NULL;
}

/* Sends the first max_batch pending spans on x. */
static void export_start(tracer_t *t, struct export *x)
{
    static const char suffix[] = "]}]}]}";
    size_t n = t->pending_spans < t->max_batch ? t->pending_spans
                                                : t->max_batch;
    size_t bytes = n == t->pending_spans ? t->pending.len
                                         : fragments_end(&t->pending, n);
    int ok;

    /* The fragments' last comma gives way to the closing brackets. */
    x->body.len = 0;
    ok = buf_reserve(&x->body, t->prefix.len + bytes + sizeof(suffix)) == 0;
    if (ok) {
        put(&x->body, t->prefix.data, t->prefix.len);
        put(&x->body, t->pending.data, bytes - 1);
        put(&x->body, suffix, sizeof(suffix) - 1);
    }
    memmove(t->pending.data, t->pending.data + bytes, t->pending.len - bytes);
    t->pending.len -= bytes;
    t->pending_spans -= n;
    if (t->pending_spans == 0) {
        t->flush_asked = 0;
    }
    if (!ok) {
        x->body.len = 0;
        export_failed(t, n, "out of memory");
        return;
    }
    x->spans = n;
    x->busy = 1;
    t->busy++;
    t->sending_bytes += x->body.len;
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body.data);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)x->body.len);
    if (t->host->http_start(t->host->io, x->easy, &x->transfer) != 0) {
        export_failed(t, n, "the transfer did not start");
        export_release(t, x);
    }
}

static void timer_fired(void *arg)
{
    tracer_t *t = arg;
    struct export *x;

    t->timer_armed = 0;
    if (t->pending_spans > 0 && (x = export_free_slot(t)) != NULL) {
        export_start(t, x);
    }
    schedule(t);
}

void tracer_emit(tracer_t *t, const struct trace_span *s)
{
    if (!(s->ctx.flags & TRACE_SAMPLED)) {
        return;
    }
    t->span.len = 0;
    /* The scratch grows to the largest span seen: the lane's spans carry
     * short, bounded strings (a few KB at most). */
    size_t bound = span_bound(s);
    if (bound > SPAN_MAX || buf_reserve(&t->span, bound) != 0) {
        t->stats.dropped++;
        return;
    }
    encode_span(&t->span, s);
    if (t->pending.len + t->sending_bytes + t->span.len > t->max_buffer ||
        buf_reserve(&t->pending, t->span.len) != 0) {
        t->stats.dropped++;
        return;
    }
    put(&t->pending, t->span.data, t->span.len);
    t->pending_spans++;
    t->stats.emitted++;
    schedule(t);
}

void tracer_flush(tracer_t *t)
{
    if (t->pending_spans == 0) {
        return;
    }
    struct export *x;

    t->flush_asked = 1;
    while (t->pending_spans > 0 && (x = export_free_slot(t)) != NULL) {
        export_start(t, x);
    }
}

int tracer_idle(const tracer_t *t)
{
    return t->busy == 0 && t->pending_spans == 0;
}

void tracer_get_stats(const tracer_t *t, struct tracer_stats *out)
{
    *out = t->stats;
}

/* ---- life ---- */

static size_t discard(char *data, size_t size, size_t n, void *arg)
{
    (void)data;
    (void)arg;
    return size * n;
}

/* The endpoint as a log line may show it: scheme, host, port and path. */
static void endpoint_shown(const char *url, char *out, size_t cap)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;

    snprintf(out, cap, "the collector");
    if (u != NULL && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) ==
            CURLUE_OK &&
        curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK) {
        snprintf(out, cap, "%s://%s:%s%s", scheme, host, port, path);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
}

/* {"resourceSpans":[{"resource":{"attributes":[...]},"scopeSpans":[
 * {"scope":{"name":"sluice"},"spans":[ */
static int make_prefix(tracer_t *t, const struct tracer_options *o)
{
    const char *service = o->service_name != NULL ? o->service_name : "sluice";
    const char *pipeline = o->pipeline != NULL ? o->pipeline : "";
    struct trace_attr attrs[] = {
        {.key = "service.name", .type = TRACE_STR, .str = service,
         .str_len = strlen(service)},
        {.key = "sluice.pipeline", .type = TRACE_STR, .str = pipeline,
         .str_len = strlen(pipeline)},
    };

    if (buf_reserve(&t->prefix, 512 + 6 * (strlen(service) +
                                           strlen(pipeline))) != 0) {
        return -1;
    }
    put_str(&t->prefix, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    put_attr(&t->prefix, &attrs[0]);
    put(&t->prefix, ",", 1);
    put_attr(&t->prefix, &attrs[1]);
    put_str(&t->prefix, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"sluice\"},"
                        "\"spans\":[");
    return 0;
}

tracer_t *tracer_new(const struct tracer_options *o,
                     const struct connector_host *host, struct sl_error *err)
{
    tracer_t *t = calloc(1, sizeof(*t));

    if (t == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    t->host = host;
    t->sample_ratio = o->sample_ratio;
    t->max_buffer = o->max_buffer_bytes;
    t->max_batch = o->max_batch_spans > 0 ? o->max_batch_spans : 1;
    t->batch_delay_ms = o->batch_delay_ms;
    t->timeout_ms = o->timeout_ms;
    endpoint_shown(o->endpoint, t->where, sizeof(t->where));
    if (getrandom(&t->rng, sizeof(t->rng), 0) != sizeof(t->rng)) {
        t->rng = (uint64_t)(uintptr_t)t ^ host->now_ms(host->io);
    }
    t->endpoint = strdup(o->endpoint);
    t->headers = curl_slist_append(NULL, "Content-Type: application/json");
    /* No 100-continue round trip before a large batch. */
    struct curl_slist *h =
        t->headers != NULL ? curl_slist_append(t->headers, "Expect:") : NULL;
    if (h != NULL) {
        t->headers = h;
    }
    t->timer = host->timer_new(host->io, timer_fired, t);
    int easy_ok = 1;
    for (int i = 0; i < TRACE_EXPORTS; i++) {
        struct export *x = &t->exports[i];
        x->t = t;
        x->transfer.done = export_done;
        x->easy = curl_easy_init();
        easy_ok &= x->easy != NULL;
    }
    if (t->endpoint == NULL || !easy_ok || h == NULL || t->timer == NULL ||
        make_prefix(t, o) != 0) {
        tracer_free(t);
        sl_error_set(err, "tracing: out of memory");
        return NULL;
    }
    for (int i = 0; i < TRACE_EXPORTS; i++) {
        CURL *easy = t->exports[i].easy;
        curl_easy_setopt(easy, CURLOPT_URL, t->endpoint);
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t->headers);
        curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)t->timeout_ms);
        curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    }
    return t;
}

void tracer_free(tracer_t *t)
{
    if (t == NULL) {
        return;
    }
    for (int i = 0; i < TRACE_EXPORTS; i++) {
        struct export *x = &t->exports[i];
        if (x->busy) {
            t->host->http_stop(t->host->io, x->easy);
            t->stats.dropped += x->spans;
        }
        if (x->easy != NULL) {
            curl_easy_cleanup(x->easy);
        }
        free(x->body.data);
    }
    if (t->timer != NULL) {
        t->host->timer_free(t->host->io, t->timer);
    }
    curl_slist_free_all(t->headers);
    free(t->endpoint);
    free(t->prefix.data);
    free(t->pending.data);
    free(t->span.data);
    free(t);
}
