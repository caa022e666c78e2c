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

/* Per-request header storage kept inline in each slot; a message whose
 * headers need more gets a larger heap buffer that its slot keeps. */
#define HTTP_HEADER_NODES 24
#define HTTP_HEADER_BYTES 2048
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
    struct curl_slist *nodes; /* inline_nodes or a heap array */
    size_t node_cap;
    char *header_bytes; /* inline_bytes or a heap buffer */
    size_t byte_cap;
    struct curl_slist inline_nodes[HTTP_HEADER_NODES];
    char inline_bytes[HTTP_HEADER_BYTES];
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
 * the lean client, NUL-terminated and linked as a curl_slist for curl.
 * The buffer is made large enough first (header_reserve), so a header is
 * never dropped. */
struct header_builder {
    struct http_request *req;
    size_t nodes, used;
    int crlf;
};

enum header_encoding {
    ENC_AUTO,    /* as is when printable, else base64 under <name>-Base64 */
    ENC_PERCENT, /* bytes outside 0x21-0x7e and '%' as %XX */
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

static size_t base64(char *out, const void *in, size_t len)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = in;
    size_t n = 0;

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
    return n;
}

static size_t percent_encode(char *out, const void *in, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = in;
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        if (p[i] > 0x20 && p[i] < 0x7f && p[i] != '%') {
            out[n++] = (char)p[i];
        } else {
            out[n++] = '%';
            out[n++] = hex[p[i] >> 4];
            out[n++] = hex[p[i] & 15];
        }
    }
    return n;
}

/* Writes a Kafka header name as an HTTP token: bytes that a token may
 * not hold become %XX ('%' is a token character). 0, or -1 when the name
 * is empty or too long. */
static int token_encode(char *out, size_t cap, const char *name)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    if (*name == '\0') {
        return -1;
    }
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (n + 4 > cap) {
            return -1;
        }
        if ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
            (*p >= 'A' && *p <= 'Z') || strchr("!#$&'*+-.^_`|~", *p)) {
            out[n++] = (char)*p;
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
    return 0;
}

/* Bytes one header may take at most, terminator included. */
static size_t header_need(const char *name, size_t len)
{
    return 32 + strlen(name) + 3 * len;
}

/* Makes the slot's buffers hold the headers of msg. 0 or -1. */
static int header_reserve(struct http_request *r,
                          const struct connector_msg *msg)
{
    size_t bytes = 256 + header_need(msg->topic, strlen(msg->topic)) +
                   header_need("", strlen(msg->dedupe_key)) +
                   header_need("", msg->key_len);
    size_t nodes = 8 + msg->header_count;

    for (size_t i = 0; i < msg->header_count; i++) {
        /* The name may grow threefold when encoded as a token. */
        bytes += header_need(msg->headers[i].name, msg->headers[i].value_len) +
                 2 * strlen(msg->headers[i].name);
    }
    if (bytes > r->byte_cap) {
        char *buf = malloc(bytes);
        if (buf == NULL) {
            return -1;
        }
        if (r->header_bytes != r->inline_bytes) {
            free(r->header_bytes);
        }
        r->header_bytes = buf;
        r->byte_cap = bytes;
    }
    if (nodes > r->node_cap) {
        struct curl_slist *n = malloc(nodes * sizeof(*n));
        if (n == NULL) {
            return -1;
        }
        if (r->nodes != r->inline_nodes) {
            free(r->nodes);
        }
        r->nodes = n;
        r->node_cap = nodes;
    }
    return 0;
}

/* Adds "<prefix><name>: <value>" encoded as asked. curl drops a header
 * written "name:" with an empty value; "name;" is its way to send one. */
static void header_add(struct header_builder *b, const char *prefix,
                       const char *name, const void *value, size_t len,
                       enum header_encoding enc)
{
    struct http_request *r = b->req;
    char *line = r->header_bytes + b->used;
    size_t n = strlen(prefix) + strlen(name);

    memcpy(line, prefix, strlen(prefix));
    memcpy(line + strlen(prefix), name, strlen(name));
    if (enc == ENC_PERCENT) {
        memcpy(line + n, ": ", 2);
        n += 2 + percent_encode(line + n + 2, value, len);
    } else if (printable(value, len)) {
        if (len == 0 && !b->crlf) {
            line[n++] = ';';
        } else {
            memcpy(line + n, ": ", 2);
            memcpy(line + n + 2, value, len);
            n += 2 + len;
        }
    } else {
        memcpy(line + n, "-Base64: ", 9);
        n += 9 + base64(line + n + 9, value, len);
    }
    if (b->crlf) {
        memcpy(line + n, "\r\n", 2);
        b->used += n + 2;
        b->nodes++;
        return;
    }
    line[n] = '\0';
    r->nodes[b->nodes].data = line;
    r->nodes[b->nodes].next = NULL;
    if (b->nodes > 0) {
        r->nodes[b->nodes - 1].next = &r->nodes[b->nodes];
    }
    b->nodes++;
    b->used += n + 1;
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

static int http_check(const void *ctx, const char **option,
                      struct sl_error *err)
{
    const struct http_sink *sink = ctx;
    CURLU *u;
    char *host = NULL;
    int ok;

    *option = "url";
    if (strncmp(sink->url, "http://", 7) != 0 &&
        strncmp(sink->url, "https://", 8) != 0) {
        return sl_error_set(err, "expected an http:// or https:// URL");
    }
    u = curl_url();
    ok = u != NULL && curl_url_set(u, CURLUPART_URL, sink->url, 0) == CURLUE_OK &&
         curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
         *host != '\0';
    curl_free(host);
    curl_url_cleanup(u);
    if (!ok) {
        return sl_error_set(err, "not a valid URL");
    }
    return 0;
}

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

/* The sink's fixed headers as a curl_slist, for the curl transport. */
static int curl_headers_open(struct http_sink *sink)
{
    char line[8192];
    struct curl_slist *list = NULL, *more;

    for (size_t i = 0; i < sink->headers.count + 2; i++) {
        if (i == 0) {
            snprintf(line, sizeof(line), "Content-Type: %s",
                     sink->content_type);
        } else if (i == 1) {
            /* curl would send "Expect: 100-continue" for large bodies and
             * wait a round trip for it. */
            snprintf(line, sizeof(line), "Expect:");
        } else {
            snprintf(line, sizeof(line), "%s: %s",
                     sink->headers.keys[i - 2], sink->headers.values[i - 2]);
        }
        more = curl_slist_append(list, line);
        if (more == NULL) {
            curl_slist_free_all(list);
            return -1;
        }
        list = more;
    }
    sink->static_headers = list;
    return 0;
}

static int http_open(void *ctx, const struct connector_host *host,
                     struct sl_error *err)
{
    struct http_sink *sink = ctx;

    sink->host = host;
    /* The url was checked when the file was loaded (http_check). */
    if (strncmp(sink->url, "http://", 7) == 0 && !proxy_configured() &&
        lean_open(sink, err) != 0) {
        http_close(sink);
        return -1;
    }
    if (sink->lean == NULL && curl_headers_open(sink) != 0) {
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
        r->nodes = r->inline_nodes;
        r->node_cap = HTTP_HEADER_NODES;
        r->header_bytes = r->inline_bytes;
        r->byte_cap = HTTP_HEADER_BYTES;
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
    if (header_reserve(r, msg) != 0) {
        transport_error("out of memory for request headers", result);
        return -1;
    }
    sink->free_list = r->next_free;
    b = (struct header_builder){.req = r, .crlf = sink->lean != NULL};
    header_add(&b, "", "Idempotency-Key", msg->dedupe_key,
               strlen(msg->dedupe_key), ENC_PERCENT);
    header_add(&b, "", "Kafka-Topic", msg->topic, strlen(msg->topic),
               ENC_AUTO);
    snprintf(num, sizeof(num), "%d", (int)msg->partition);
    header_add(&b, "", "Kafka-Partition", num, strlen(num), ENC_AUTO);
    snprintf(num, sizeof(num), "%lld", (long long)msg->offset);
    header_add(&b, "", "Kafka-Offset", num, strlen(num), ENC_AUTO);
    if (msg->timestamp_ms >= 0) {
        snprintf(num, sizeof(num), "%lld", (long long)msg->timestamp_ms);
        header_add(&b, "", "Kafka-Timestamp", num, strlen(num), ENC_AUTO);
    }
    if (msg->key != NULL) {
        header_add(&b, "", "Kafka-Key", msg->key, msg->key_len, ENC_AUTO);
    }
    if (sink->forward_headers) {
        for (size_t i = 0; i < msg->header_count; i++) {
            const struct connector_header *h = &msg->headers[i];
            char name[1024];
            if (token_encode(name, sizeof(name), h->name) == 0) {
                header_add(&b, "Kafka-Header-", name,
                           h->value ? h->value : "", h->value_len, ENC_AUTO);
            }
        }
    }
    r->token = token;
    if (sink->lean != NULL) {
        int n = snprintf(r->header_bytes + b.used, r->byte_cap - b.used,
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
        if (r->header_bytes != r->inline_bytes) {
            free(r->header_bytes);
        }
        if (r->nodes != r->inline_nodes) {
            free(r->nodes);
        }
    }
    free(sink->requests);
    curl_slist_free_all(sink->static_headers);
    sink->requests = NULL;
    sink->static_headers = NULL;
}

const struct connector http_connector = {
    .name = "http",
    .doc = "POST (or PUT, PATCH) each message's value to one URL. Each "
           "request carries `Idempotency-Key` (the record's `message-id` "
           "header, else `topic-partition-offset`; bytes outside visible "
           "ASCII, and `%`, are percent-encoded), `Kafka-Topic`, "
           "`Kafka-Partition`, `Kafka-Offset`, `Kafka-Timestamp`, "
           "`Kafka-Key` and one `Kafka-Header-<name>` per Kafka header "
           "(a value that is not printable ASCII is sent base64-encoded "
           "as `Kafka-Header-<name>-Base64`; a name's bytes that HTTP does "
           "not allow in a header name are percent-encoded). 2xx is "
           "delivered; transport errors, 408, 425, 429 and 5xx are worth "
           "another attempt; other statuses are permanent. Plain `http://` "
           "uses sluice's keep-alive HTTP/1.1 client; `https://`, or any "
           "URL while `http_proxy`/`all_proxy` is set, uses libcurl.",
    .options = http_options,
    .ctx_size = sizeof(struct http_sink),
    .check = http_check,
    .open = http_open,
    .send = http_send,
    .close = http_close,
};
