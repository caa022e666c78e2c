/* http.c -- deliver each message as one HTTP request to one endpoint.
 *
 * Two transports behind one set of options: plain http:// (without a
 * proxy in the environment) goes through http1.c, a lean keep-alive
 * HTTP/1.1 client on the lane's loop; https:// and proxied URLs go
 * through the lane's curl multi handle (TLS, HTTP/2, proxies). Each
 * in-flight request has a slot from a pool sized by max_in_flight whose
 * buffers are reused, so a steady stream allocates nothing here. The
 * connector only classifies outcomes; the engine retries. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "connector.h"
#include "http1.h"

#define HTTP_HEADER_NODES 48
#define HTTP_HEADER_BYTES 4096
#define HTTP_BODY_KEEP 200

static const char *const http_methods[] = {"POST", "PUT", "PATCH", NULL};

struct http_request {
    struct connector_transfer transfer; /* first: the loop hands it back */
    struct http1_request h1;
    struct http_sink *sink;
    CURL *easy;
    void *token;
    int busy;
    int64_t retry_after_ms;
    size_t body_kept;
    char body[HTTP_BODY_KEEP + 1];
    struct curl_slist nodes[HTTP_HEADER_NODES];
    char header_bytes[HTTP_HEADER_BYTES];
    struct http_request *next_free;
};

struct http_sink {
    /* options */
    char *url;
    int method;
    struct opt_map headers;
    int64_t timeout_ms;
    int64_t connect_timeout_ms;
    char *content_type;
    int forward_headers;
    /* state */
    const struct connector_host *host;
    http1_pool_t *lean; /* NULL: curl carries the requests */
    char *head;         /* lean: request line and static headers */
    size_t head_len;
    struct curl_slist *static_headers;
    struct http_request *requests;
    struct http_request *free_list;
    int pool_size;
};

static const struct opt_spec http_options[] = {
    {.name = "url", .type = OPT_STRING, .flags = OPT_REQUIRED,
     .offset = offsetof(struct http_sink, url),
     .doc = "Endpoint, e.g. `https://billing.internal/v1/charges`."},
    {.name = "method", .type = OPT_ENUM, .def = "POST",
     .offset = offsetof(struct http_sink, method), .choices = http_methods,
     .doc = "HTTP method; the body is the message value."},
    {.name = "headers", .type = OPT_STRING_MAP, .flags = OPT_SECRET,
     .offset = offsetof(struct http_sink, headers),
     .doc = "Extra request headers, e.g. `Authorization: Bearer "
            "${BILLING_TOKEN}`. Values are never logged."},
    {.name = "content_type", .type = OPT_STRING, .def = "application/json",
     .offset = offsetof(struct http_sink, content_type),
     .doc = "The Content-Type of every request."},
    {.name = "timeout", .type = OPT_DURATION, .def = "10s",
     .offset = offsetof(struct http_sink, timeout_ms), .min = 1,
     .max = 3600000, .doc = "Whole-request timeout; past it the attempt "
                            "failed and is retried."},
    {.name = "connect_timeout", .type = OPT_DURATION, .def = "3s",
     .offset = offsetof(struct http_sink, connect_timeout_ms), .min = 1,
     .max = 3600000, .doc = "Timeout to establish a connection."},
    {.name = "forward_headers", .type = OPT_BOOL, .def = "true",
     .offset = offsetof(struct http_sink, forward_headers),
     .doc = "Send each Kafka header as `Kafka-Header-<name>`."},
    {0},
};

/* ---- per-request header list, built in the slot's own storage ---- */

/* Lines go into the slot's buffer: "name: value\r\n" back to back for
 * the lean client, NUL-terminated and linked as a curl_slist for curl. */
struct header_builder {
    struct http_request *req;
    size_t nodes, used;
    int overflow;
    int crlf;
};

static int printable(const void *value, size_t len)
{
    const unsigned char *p = value;

    for (size_t i = 0; i < len; i++) {
        if (p[i] < 0x20 || p[i] > 0x7e) {
            return 0;
        }
    }
    return 1;
}

static size_t base64(char *out, size_t cap, const void *in, size_t len)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = in;
    size_t n = 0;

    if ((len + 2) / 3 * 4 + 1 > cap) {
        return SIZE_MAX;
    }
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= p[i + 2];
        }
        out[n++] = tbl[(v >> 18) & 63];
        out[n++] = tbl[(v >> 12) & 63];
        out[n++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[n++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[n] = '\0';
    return n;
}

/* Adds "name: value" (value base64 with name suffix -Base64 when it is not
 * printable). A header that does not fit is dropped and counted. */
static void header_add(struct header_builder *b, const char *prefix,
                       const char *name, const void *value, size_t len)
{
    struct http_request *r = b->req;
    char *line = r->header_bytes + b->used;
    /* Keeps room for the lean request's Content-Length line. */
    size_t room = HTTP_HEADER_BYTES - 64 - b->used;
    int n;

    if (b->nodes == HTTP_HEADER_NODES) {
        b->overflow++;
        return;
    }
    if (printable(value, len)) {
        n = snprintf(line, room, "%s%s: %.*s", prefix, name, (int)len,
                     (const char *)value);
    } else {
        n = snprintf(line, room, "%s%s-Base64: ", prefix, name);
        if (n >= 0 && (size_t)n < room &&
            base64(line + n, room - (size_t)n, value, len) == SIZE_MAX) {
            n = (int)room;
        } else if (n >= 0 && (size_t)n < room) {
            n += (int)strlen(line + n);
        }
    }
    if (n < 0 || (size_t)n + 2 >= room) {
        b->overflow++;
        return;
    }
    if (b->crlf) {
        memcpy(line + n, "\r\n", 2);
        b->used += (size_t)n + 2;
        b->nodes++;
        return;
    }
    r->nodes[b->nodes].data = line;
    r->nodes[b->nodes].next = NULL;
    if (b->nodes > 0) {
        r->nodes[b->nodes - 1].next = &r->nodes[b->nodes];
    }
    b->nodes++;
    b->used += (size_t)n + 1;
}

/* ---- curl callbacks ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_request *r = arg;
    size_t len = size * nmemb;
    size_t keep = HTTP_BODY_KEEP - r->body_kept;

    if (keep > len) {
        keep = len;
    }
    memcpy(r->body + r->body_kept, data, keep);
    r->body_kept += keep;
    return len;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_request *r = arg;
    size_t len = size * nmemb;
    static const char name[] = "retry-after:";

    if (len > sizeof(name) && strncasecmp(data, name, sizeof(name) - 1) == 0) {
        char value[64];
        size_t vlen = len - (sizeof(name) - 1);
        if (vlen >= sizeof(value)) {
            vlen = sizeof(value) - 1;
        }
        memcpy(value, data + sizeof(name) - 1, vlen);
        value[vlen] = '\0';
        char *end;
        long secs = strtol(value, &end, 10);
        /* Only delta-seconds; an HTTP-date falls back to the backoff. */
        if (end != value && secs >= 0) {
            r->retry_after_ms = (int64_t)secs * 1000;
        }
    }
    return len;
}

/* Classifies a response: 2xx delivered; 408, 425, 429 and 5xx worth
 * another attempt; every other status permanent. */
static void classify_status(long status, int64_t retry_after_ms, char *body,
                            size_t body_len, struct connector_result *res)
{
    res->retry_after_ms = retry_after_ms;
    res->http_status = (int)status;
    res->error[0] = '\0';
    if (status >= 200 && status < 300) {
        res->status = CONNECTOR_OK;
        return;
    }
    body[body_len] = '\0';
    for (size_t i = 0; i < body_len; i++) {
        if ((unsigned char)body[i] < 0x20) {
            body[i] = ' ';
        }
    }
    snprintf(res->error, sizeof(res->error), "HTTP %ld%s%s", status,
             body_len ? ": " : "", body);
    if (status == 408 || status == 425 || status == 429 || status >= 500) {
        res->status = CONNECTOR_RETRY;
    } else {
        res->status = CONNECTOR_REJECT;
    }
}

static void transport_error(const char *what, struct connector_result *res)
{
    res->status = CONNECTOR_RETRY;
    res->http_status = 0;
    res->retry_after_ms = -1;
    snprintf(res->error, sizeof(res->error), "%s", what);
}

static void classify(struct http_request *r, int curl_code,
                     struct connector_result *res)
{
    long status = 0;

    if (curl_code != CURLE_OK) {
        transport_error(curl_easy_strerror((CURLcode)curl_code), res);
        return;
    }
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    classify_status(status, r->retry_after_ms, r->body, r->body_kept, res);
}

static void request_release(struct http_request *r,
                            const struct connector_result *res)
{
    struct http_sink *sink = r->sink;
    void *token = r->token;

    r->busy = 0;
    r->next_free = sink->free_list;
    sink->free_list = r;
    sink->host->complete(sink->host->engine, token, res);
}

static void lean_done(struct http1_request *h1, const struct http1_result *h)
{
    struct http_request *r =
        (struct http_request *)((char *)h1 - offsetof(struct http_request, h1));
    struct connector_result res;
    char body[HTTP1_BODY_KEEP + 1];

    if (h->error != 0) {
        transport_error(h->error == EPROTO ? "invalid HTTP response"
                                           : strerror(h->error),
                        &res);
    } else {
        memcpy(body, h->body, h->body_len);
        classify_status(h->status, h->retry_after_ms, body, h->body_len,
                        &res);
    }
    request_release(r, &res);
}

static void request_done(struct connector_transfer *t, int curl_code)
{
    struct http_request *r = (struct http_request *)t;
    struct connector_result res;

    classify(r, curl_code, &res);
    request_release(r, &res);
}

/* ---- connector callbacks ---- */

static void http_close(void *ctx);

/* curl honours proxy variables; the lean client does not speak to
 * proxies, so their presence hands plain http:// to curl. */
static int proxy_configured(void)
{
    static const char *const vars[] = {"http_proxy", "HTTP_PROXY",
                                       "all_proxy", "ALL_PROXY", NULL};

    for (size_t i = 0; vars[i] != NULL; i++) {
        const char *v = getenv(vars[i]);
        if (v != NULL && *v != '\0') {
            return 1;
        }
    }
    return 0;
}

/* Parses the URL with curl's parser and builds the lean client's request
 * head: request line, Host and the sink's static headers. */
static int lean_open(struct http_sink *sink, struct sl_error *err)
{
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *path = NULL, *query = NULL;
    int rc = -1;

    if (u == NULL ||
        curl_url_set(u, CURLUPART_URL, sink->url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
            CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
        sl_error_set(err, "url: cannot parse `%s`", sink->url);
        goto out;
    }
    curl_url_get(u, CURLUPART_QUERY, &query, 0);
    size_t cap = 1024 + strlen(sink->url) + strlen(sink->content_type);
    for (size_t i = 0; i < sink->headers.count; i++) {
        cap += strlen(sink->headers.keys[i]) +
               strlen(sink->headers.values[i]) + 4;
    }
    sink->head = malloc(cap);
    if (sink->head == NULL) {
        sl_error_set(err, "out of memory");
        goto out;
    }
    /* An IPv6 literal needs its brackets back in Host. */
    int v6 = strchr(host, ':') != NULL;
    int n = snprintf(sink->head, cap,
                     "%s %s%s%s HTTP/1.1\r\nHost: %s%s%s:%s\r\n"
                     "User-Agent: sluice\r\nContent-Type: %s\r\n",
                     http_methods[sink->method], path, query ? "?" : "",
                     query ? query : "", v6 ? "[" : "", host, v6 ? "]" : "",
                     port, sink->content_type);
    for (size_t i = 0; i < sink->headers.count && n > 0; i++) {
        n += snprintf(sink->head + n, cap - (size_t)n, "%s: %s\r\n",
                      sink->headers.keys[i], sink->headers.values[i]);
    }
    sink->head_len = (size_t)n;
    sink->lean = http1_pool_new(sink->host, host, port,
                                sink->host->max_in_flight,
                                sink->connect_timeout_ms, sink->timeout_ms,
                                err);
    rc = sink->lean != NULL ? 0 : -1;
out:
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_url_cleanup(u);
    return rc;
}

static int http_open(void *ctx, const struct connector_host *host,
                     struct sl_error *err)
{
    struct http_sink *sink = ctx;
    char line[8192];

    sink->host = host;
    if (strncmp(sink->url, "http://", 7) != 0 &&
        strncmp(sink->url, "https://", 8) != 0) {
        return sl_error_set(err, "url must start with http:// or https://");
    }
    if (strncmp(sink->url, "http://", 7) == 0 && !proxy_configured() &&
        lean_open(sink, err) != 0) {
        http_close(sink);
        return -1;
    }
    snprintf(line, sizeof(line), "Content-Type: %s", sink->content_type);
    sink->static_headers = curl_slist_append(NULL, line);
    /* curl would send "Expect: 100-continue" for large bodies and wait a
     * round trip for it. */
    sink->static_headers = curl_slist_append(sink->static_headers, "Expect:");
    for (size_t i = 0; i < sink->headers.count; i++) {
        snprintf(line, sizeof(line), "%s: %s", sink->headers.keys[i],
                 sink->headers.values[i]);
        sink->static_headers = curl_slist_append(sink->static_headers, line);
    }
    if (sink->static_headers == NULL) {
        http_close(sink);
        return sl_error_set(err, "out of memory");
    }
    sink->pool_size = host->max_in_flight;
    sink->requests = calloc((size_t)sink->pool_size, sizeof(*sink->requests));
    if (sink->requests == NULL) {
        http_close(sink);
        return sl_error_set(err, "out of memory");
    }
    for (int i = sink->pool_size - 1; i >= 0; i--) {
        struct http_request *r = &sink->requests[i];
        r->sink = sink;
        r->transfer.done = request_done;
        r->h1.done = lean_done;
        r->next_free = sink->free_list;
        sink->free_list = r;
        if (sink->lean != NULL) {
            continue;
        }
        r->easy = curl_easy_init();
        if (r->easy == NULL) {
            http_close(sink);
            return sl_error_set(err, "curl_easy_init failed");
        }
        curl_easy_setopt(r->easy, CURLOPT_URL, sink->url);
        curl_easy_setopt(r->easy, CURLOPT_POST, 1L);
        if (sink->method != 0) {
            curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST,
                             http_methods[sink->method]);
        }
        curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)sink->timeout_ms);
        curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)sink->connect_timeout_ms);
        curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(r->easy, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
    }
    return 0;
}

static int http_send(void *ctx, const struct connector_msg *msg, void *token,
                     struct connector_result *result)
{
    struct http_sink *sink = ctx;
    struct http_request *r = sink->free_list;
    struct header_builder b;
    char num[32];

    if (r == NULL) {
        /* The engine bounds in-flight requests by the pool size. */
        result->status = CONNECTOR_RETRY;
        result->http_status = 0;
        result->retry_after_ms = -1;
        snprintf(result->error, sizeof(result->error), "no request slot");
        return -1;
    }
    sink->free_list = r->next_free;
    b = (struct header_builder){.req = r, .crlf = sink->lean != NULL};
    header_add(&b, "", "Idempotency-Key", msg->dedupe_key,
               strlen(msg->dedupe_key));
    header_add(&b, "", "Kafka-Topic", msg->topic, strlen(msg->topic));
    snprintf(num, sizeof(num), "%d", (int)msg->partition);
    header_add(&b, "", "Kafka-Partition", num, strlen(num));
    snprintf(num, sizeof(num), "%lld", (long long)msg->offset);
    header_add(&b, "", "Kafka-Offset", num, strlen(num));
    if (msg->timestamp_ms >= 0) {
        snprintf(num, sizeof(num), "%lld", (long long)msg->timestamp_ms);
        header_add(&b, "", "Kafka-Timestamp", num, strlen(num));
    }
    if (msg->key != NULL) {
        header_add(&b, "", "Kafka-Key", msg->key, msg->key_len);
    }
    if (sink->forward_headers) {
        for (size_t i = 0; i < msg->header_count; i++) {
            const struct connector_header *h = &msg->headers[i];
            if (printable(h->name, strlen(h->name)) && *h->name != '\0' &&
                strchr(h->name, ':') == NULL && strchr(h->name, ' ') == NULL) {
                header_add(&b, "Kafka-Header-", h->name,
                           h->value ? h->value : "", h->value_len);
            }
        }
    }
    r->token = token;
    if (sink->lean != NULL) {
        int n = snprintf(r->header_bytes + b.used, HTTP_HEADER_BYTES - b.used,
                         "Content-Length: %zu\r\n\r\n", msg->value_len);
        r->h1.iov[0] = (struct iovec){sink->head, sink->head_len};
        r->h1.iov[1] = (struct iovec){r->header_bytes, b.used + (size_t)n};
        r->h1.iov[2] = (struct iovec){(void *)msg->value, msg->value_len};
        r->h1.iovcnt = msg->value_len > 0 ? 3 : 2;
        r->busy = 1;
        int rc = http1_send(sink->lean, &r->h1);
        if (rc != 0) {
            r->busy = 0;
            r->next_free = sink->free_list;
            sink->free_list = r;
            transport_error(strerror(rc), result);
            return -1;
        }
        return 0;
    }
    if (b.nodes > 0) {
        r->nodes[b.nodes - 1].next = sink->static_headers;
    }
    r->busy = 1;
    r->retry_after_ms = -1;
    r->body_kept = 0;
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER,
                     b.nodes > 0 ? r->nodes : sink->static_headers);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)msg->value_len);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS,
                     msg->value ? msg->value : "");
    if (sink->host->http_start(sink->host->io, r->easy, &r->transfer) != 0) {
        r->busy = 0;
        r->next_free = sink->free_list;
        sink->free_list = r;
        result->status = CONNECTOR_RETRY;
        result->http_status = 0;
        result->retry_after_ms = -1;
        snprintf(result->error, sizeof(result->error),
                 "could not start the transfer");
        return -1;
    }
    return 0;
}

static void http_close(void *ctx)
{
    struct http_sink *sink = ctx;

    http1_pool_destroy(sink->lean);
    sink->lean = NULL;
    free(sink->head);
    sink->head = NULL;
    for (int i = 0; sink->requests != NULL && i < sink->pool_size; i++) {
        struct http_request *r = &sink->requests[i];
        if (r->busy && r->easy != NULL) {
            sink->host->http_stop(sink->host->io, r->easy);
        }
        if (r->easy != NULL) {
            curl_easy_cleanup(r->easy);
        }
    }
    free(sink->requests);
    curl_slist_free_all(sink->static_headers);
    sink->requests = NULL;
    sink->static_headers = NULL;
}

const struct connector http_connector = {
    .name = "http",
    .doc = "POST (or PUT, PATCH) each message's value to one URL. The "
           "request carries `Idempotency-Key` (the message-id header of "
           "the record, else `topic-partition-offset`), `Kafka-Topic`, "
           "`Kafka-Partition`, `Kafka-Offset`, `Kafka-Timestamp`, "
           "`Kafka-Key` and `Kafka-Header-<name>` (values that are not "
           "printable ASCII are sent base64-encoded under `<name>-Base64`). "
           "2xx is delivered; transport errors, 408, 425, 429 and 5xx are "
           "retried; other statuses are permanent failures.",
    .options = http_options,
    .ctx_size = sizeof(struct http_sink),
    .open = http_open,
    .send = http_send,
    .close = http_close,
};
