/* http.c -- deliver each message as one HTTP request to one endpoint.
 *
 * Two transports behind one set of options: plain http:// (without a
 * proxy in the environment) goes through http1.c, a lean keep-alive
 * HTTP/1.1 client on the lane's loop; https:// and proxied URLs go
 * through the lane's curl multi handle (TLS, HTTP/2, proxies). Each
 * in-flight request has a slot from a pool sized by max_in_flight whose
 * buffers are reused, so a steady stream allocates nothing here. The
 * connector only classifies outcomes; the engine retries.
 *
 * A message's transform may override the method, append to the URL's
 * path and add headers. A message without overrides takes the fast path
 * (the lean client sends the sink's prebuilt head as is); one with them
 * gets its request line and headers written into its slot. */
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
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
#define HTTP_ERROR_BODY 200 /* bytes of a failed response's body in error */

static const char *const http_methods[] = {"POST", "PUT", "PATCH", NULL};

struct http_request {
    struct connector_transfer transfer; /* first: the loop hands it back */
    struct http1_request h1;
    struct http_sink *sink;
    CURL *easy;
    void *token;
    int busy;
    int custom; /* curl: the last request changed the method or URL */
    int response_status;            /* curl: from the last status line */
    struct http1_response *response; /* curl: its failed response */
    char curl_error[CURL_ERROR_SIZE]; /* curl: its detailed error */
    struct curl_slist *nodes; /* inline_nodes or a heap array */
    size_t node_cap;
    char *header_bytes; /* inline_bytes or a heap buffer */
    size_t byte_cap;
    struct curl_slist inline_nodes[HTTP_HEADER_NODES];
    char inline_bytes[HTTP_HEADER_BYTES];
    struct http_request *next_free;
};

struct line {
    size_t off, len;
};

struct http_sink {
    /* options */
    char *url;
    int method;
    struct opt_list methods;
    char *ca_file;
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
    struct line *fixed; /* lean: head's header lines, for replacing */
    size_t fixed_count;
    /* What a message's path is appended to: the URL's path (lean) or the
     * URL without its query (curl); the URL's query, NULL when none. */
    char *base;
    char *query;
    char *where; /* curl: the URL's host:port, for errors */
    struct curl_slist *static_headers;
    size_t static_count;
    struct http1_response *responses; /* curl: one per request slot */
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
    {.name = "methods", .type = OPT_STRING_LIST, .def = "POST, PUT, PATCH",
     .offset = offsetof(struct http_sink, methods),
     .doc = "Methods a transform may set (`method` is always allowed); "
            "another one fails the message permanently. Methods are "
            "case-sensitive HTTP tokens, e.g. `[POST, DELETE]`."},
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
    {.name = "ca_file", .type = OPT_STRING, .flags = OPT_FILE,
     .offset = offsetof(struct http_sink, ca_file),
     .doc = "PEM file of the CA certificates that `https://` servers are "
            "verified against, instead of the system's."},
    {0},
};

/* ---- per-request header list, built in the slot's own storage ---- */

/* Lines go into the slot's buffer: "name: value\r\n" back to back for
 * the lean client, NUL-terminated and linked as a curl_slist for curl.
 * The buffer is made large enough first (header_reserve), so a header is
 * never dropped. */
struct header_builder {
    struct http_request *req;
    size_t nodes, used; /* nodes: curl's list only */
    int crlf;
};

enum header_encoding {
    ENC_AUTO,    /* as is when printable, else base64 under <name>-Base64 */
    ENC_PERCENT, /* bytes outside 0x21-0x7e and '%' as %XX */
    ENC_RAW,     /* as is: checked to hold no CR, LF or NUL */
};

/* A byte of an HTTP token (RFC 9110 tchar). */
static int tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
           (ch >= 'A' && ch <= 'Z') ||
           (ch != '\0' && strchr("!#$&'*+-.^_`|~", ch) != NULL);
}

static int token(const char *s)
{
    if (s == NULL || *s == '\0') {
        return 0;
    }
    for (; *s != '\0'; s++) {
        if (!tchar((unsigned char)*s)) {
            return 0;
        }
    }
    return 1;
}

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
        if (tchar(*p)) {
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

static int has_overrides(const struct connector_msg *msg)
{
    return msg->method != NULL || msg->path != NULL ||
           msg->request_header_count > 0;
}

/* Makes the slot's buffers hold the headers of msg, and with overrides
 * its request line (lean), or its URL and the sink's headers (curl). */
static int header_reserve(const struct http_sink *sink,
                          struct http_request *r,
                          const struct connector_msg *msg)
{
    size_t bytes = 256 + header_need(msg->topic, strlen(msg->topic)) +
                   header_need("", strlen(msg->dedupe_key)) +
                   header_need("", msg->key_len);
    size_t nodes = 10 + msg->header_count;

    if (msg->traceparent != NULL) {
        bytes += header_need("traceparent", strlen(msg->traceparent)) +
                 header_need("tracestate", msg->tracestate_len);
    }
    for (size_t i = 0; i < msg->header_count; i++) {
        /* The name may grow threefold when encoded as a token. */
        bytes += header_need(msg->headers[i].name, msg->headers[i].value_len) +
                 2 * strlen(msg->headers[i].name);
    }
    if (has_overrides(msg)) {
        bytes += 64 + strlen(sink->base) +
                 (sink->query != NULL ? strlen(sink->query) : 0) +
                 (msg->method != NULL ? strlen(msg->method) : 0) +
                 (msg->path != NULL ? strlen(msg->path) : 0) + sink->head_len;
        nodes += sink->static_count + msg->request_header_count;
        for (size_t i = 0; i < msg->request_header_count; i++) {
            bytes += header_need(msg->request_headers[i].name,
                                 msg->request_headers[i].value_len);
        }
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

/* Appends line to the slot's curl_slist. */
static void header_link(struct header_builder *b, char *line)
{
    struct http_request *r = b->req;

    r->nodes[b->nodes].data = line;
    r->nodes[b->nodes].next = NULL;
    if (b->nodes > 0) {
        r->nodes[b->nodes - 1].next = &r->nodes[b->nodes];
    }
    b->nodes++;
}

/* Adds "<prefix><name>: <value>" encoded as asked. curl drops a header
 * written "name:" with an empty value; "name;" is its way to send one. */
static void header_add(struct header_builder *b, const char *prefix,
                       const char *name, const void *value, size_t len,
                       enum header_encoding enc)
{
    struct http_request *r = b->req;
    char *line = r->header_bytes + b->used;
    size_t plen = strlen(prefix), n = plen + strlen(name);

    memcpy(line, prefix, plen);
    memcpy(line + plen, name, n - plen);
    if (enc == ENC_PERCENT) {
        memcpy(line + n, ": ", 2);
        n += 2 + percent_encode(line + n + 2, value, len);
    } else if (enc == ENC_RAW || printable(value, len)) {
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
        return;
    }
    line[n] = '\0';
    header_link(b, line);
    b->used += n + 1;
}

/* ---- per-message overrides ---- */

/* Every field but the error text, which the caller writes: not a whole
 * struct literal, which would zero error[] on every delivery. */
static void result_set(struct connector_result *res,
                       enum connector_status status, long http_status,
                       int64_t retry_after_ms)
{
    res->status = status;
    res->http_status = (int)http_status;
    res->retry_after_ms = retry_after_ms;
    res->error[0] = '\0';
    res->response_headers = NULL;
    res->response_header_count = 0;
    res->body = NULL;
    res->body_len = 0;
}

/* Fills res as a permanent failure found before any request went out. */
static int reject(struct connector_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int reject(struct connector_result *res, const char *fmt, ...)
{
    va_list ap;

    result_set(res, CONNECTOR_REJECT, 0, -1);
    va_start(ap, fmt);
    vsnprintf(res->error, sizeof(res->error), fmt, ap);
    va_end(ap);
    return -1;
}

/* A bad name or path for an error message: '?' for bytes that are not
 * printable, cut at 64. */
static const char *shown(char *out, size_t cap, const char *text)
{
    size_t n = 0;

    if (text == NULL) {
        return "(null)";
    }
    for (; *text != '\0' && n + 1 < cap && n < 64; text++) {
        unsigned char ch = (unsigned char)*text;
        out[n++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[n] = '\0';
    return out;
}

/* Where text holds a byte that no header line may carry (a control byte
 * but HTAB, or DEL): its position counted from 1, else 0; *what names
 * its kind, for an error that must not show the text itself. */
static size_t bad_byte(const void *text, size_t len, const char **what)
{
    const unsigned char *p = text;

    for (size_t i = 0; i < len; i++) {
        if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f) {
            *what = p[i] == '\r' || p[i] == '\n' ? "a line break"
                    : p[i] == '\0'              ? "a NUL byte"
                                                : "a control character";
            return i + 1;
        }
    }
    return 0;
}

/* Request headers that decide how a request is framed or routed, or ask
 * for an interim response or a protocol switch: the connector's alone,
 * never a transform's (nor, but Host, the configuration's). */
static int reserved_header(const char *name, int allow_host)
{
    static const char *const names[] = {
        "Host",  "Content-Length", "Transfer-Encoding", "Connection",
        "Upgrade", "TE",           "Trailer",           "Keep-Alive",
        "Expect", NULL};

    if (strncasecmp(name, "Proxy-", 6) == 0) {
        return 1;
    }
    for (size_t k = allow_host ? 1 : 0; names[k] != NULL; k++) {
        if (strcasecmp(name, names[k]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The byte a %XX escape stands for, or -1 when p is not one. */
static int pct_byte(const char *p)
{
    int v = 0;

    if (p[0] != '%') {
        return -1;
    }
    for (int i = 1; i <= 2; i++) {
        char ch = p[i];
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (d < 0) {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

/* Whether the path part of a transform's path (before '?' or '#') holds
 * a "." or ".." segment: one that would climb out of the sink's base
 * path. Servers decode %2e, and many %2f and '\\' as '/', so those count
 * as written out. */
static int dot_segment(const char *path)
{
    size_t dots = 0, other = 0;

    for (const char *p = path;;) {
        int ch = (unsigned char)*p, step = 1, dec = pct_byte(p);
        if (dec == '.' || dec == '/' || dec == '\\') {
            ch = dec;
            step = 3;
        }
        if (ch == '\0' || ch == '?' || ch == '#' || ch == '/' ||
            ch == '\\') {
            if (other == 0 && (dots == 1 || dots == 2)) {
                return 1;
            }
            if (ch != '/' && ch != '\\') {
                return 0;
            }
            dots = other = 0;
        } else if (ch == '.') {
            dots++;
        } else {
            other++;
        }
        p += step;
    }
}

/* Whether a transform may send method on this sink. A short list of
 * short names: compared in place, nothing is built per message. */
static int method_allowed(const struct http_sink *sink, const char *method)
{
    if (strcmp(method, http_methods[sink->method]) == 0) {
        return 1;
    }
    for (size_t i = 0; i < sink->methods.count; i++) {
        if (strcmp(method, sink->methods.items[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The transform's overrides go into the request as they are, so they are
 * checked first: what could split the request, smuggle another one into
 * a shared keep-alive connection, reroute it or leave what the sink is
 * configured for is refused, the same way on both transports. 0, or -1
 * with res filled (a permanent failure: the dead-letter path). */
static int overrides_check(const struct http_sink *sink,
                           const struct connector_msg *msg,
                           struct connector_result *res)
{
    char show[72];
    const char *what;

    if (msg->method != NULL && !token(msg->method)) {
        return reject(res, "invalid method `%s`: not an HTTP token",
                      shown(show, sizeof(show), msg->method));
    }
    if (msg->method != NULL && !method_allowed(sink, msg->method)) {
        int n = reject(res, "method `%s` is not allowed on this sink "
                            "(allowed: %s",
                       msg->method, http_methods[sink->method]);
        for (size_t i = 0; i < sink->methods.count; i++) {
            if (strcmp(sink->methods.items[i], http_methods[sink->method]) ==
                0) {
                continue;
            }
            size_t used = strlen(res->error);
            snprintf(res->error + used, sizeof(res->error) - used, ", %s",
                     sink->methods.items[i]);
        }
        size_t used = strlen(res->error);
        snprintf(res->error + used, sizeof(res->error) - used,
                 "; see the sink's `methods`)");
        return n;
    }
    for (const char *p = msg->path; p != NULL && *p != '\0'; p++) {
        if ((unsigned char)*p < 0x21 || *p == 0x7f) {
            return reject(res, "invalid path `%s`: byte 0x%02x at %zu",
                          shown(show, sizeof(show), msg->path),
                          (unsigned char)*p, (size_t)(p - msg->path));
        }
    }
    if (msg->path != NULL && dot_segment(msg->path)) {
        return reject(res, "invalid path `%s`: a `.` or `..` segment "
                           "(also as %%2e) would leave the sink's URL path",
                      shown(show, sizeof(show), msg->path));
    }
    for (size_t i = 0; i < msg->request_header_count; i++) {
        const struct sl_header *h = &msg->request_headers[i];
        size_t at;
        if (!token(h->name)) {
            return reject(res, "invalid request header name `%s`",
                          shown(show, sizeof(show), h->name));
        }
        if (reserved_header(h->name, 0)) {
            return reject(res, "request header `%s` is the connector's "
                               "to set", h->name);
        }
        if (h->value == NULL && h->value_len > 0) {
            return reject(res, "request header `%s` has no value bytes",
                          h->name);
        }
        if ((at = bad_byte(h->value, h->value_len, &what)) != 0) {
            /* The value itself may be a secret: never shown. */
            return reject(res, "request header `%s` value contains %s "
                               "(byte %zu)", h->name, what, at);
        }
    }
    return 0;
}

/* Whether a header line ("Name: value", "Name;" or "Name:") is one that
 * msg's request headers replace. */
static int replaced(const char *line, const struct connector_msg *msg)
{
    for (size_t i = 0; i < msg->request_header_count; i++) {
        const char *name = msg->request_headers[i].name;
        size_t len = strlen(name);
        if (strncasecmp(line, name, len) == 0 &&
            (line[len] == ':' || line[len] == ';')) {
            return 1;
        }
    }
    return 0;
}

/* Writes the sink's base (URL path, or URL) with the message's path
 * appended: its path part after one '/', its query after the URL's
 * query ('&' between them). A fragment ('#') is not sent, as curl would
 * not. No terminator; returns the length. */
static size_t url_join(char *out, const struct http_sink *sink,
                       const char *path)
{
    size_t n = strlen(sink->base);
    size_t len = path != NULL ? strcspn(path, "#") : 0;
    const char *q = len > 0 ? memchr(path, '?', len) : NULL;
    size_t path_len = q != NULL ? (size_t)(q - path) : len;
    size_t query_len = q != NULL ? len - path_len - 1 : 0;

    memcpy(out, sink->base, n);
    if (path_len > 0) {
        /* "/api" or "/api/" with "/x" or "x": "/api/x", never "//". */
        if (n > 0 && out[n - 1] == '/') {
            n--;
        }
        if (*path == '/') {
            path++;
            path_len--;
        }
        out[n++] = '/';
        memcpy(out + n, path, path_len);
        n += path_len;
    }
    if (sink->query != NULL || q != NULL) {
        out[n++] = '?';
        if (sink->query != NULL) {
            memcpy(out + n, sink->query, strlen(sink->query));
            n += strlen(sink->query);
            if (query_len > 0) {
                out[n++] = '&';
            }
        }
        if (query_len > 0) {
            memcpy(out + n, q + 1, query_len);
            n += query_len;
        }
    }
    return n;
}

/* Lean: the request line and the sink's header lines that msg does not
 * replace, then msg's request headers, at the start of the slot's
 * buffer; the per-message headers follow. */
static void lean_head(const struct http_sink *sink, struct header_builder *b,
                      const struct connector_msg *msg)
{
    char *out = b->req->header_bytes;
    const char *method =
        msg->method != NULL ? msg->method : http_methods[sink->method];
    size_t n = strlen(method);

    memcpy(out, method, n);
    out[n++] = ' ';
    n += url_join(out + n, sink, msg->path);
    memcpy(out + n, " HTTP/1.1\r\n", 11);
    n += 11;
    for (size_t i = 0; i < sink->fixed_count; i++) {
        const char *line = sink->head + sink->fixed[i].off;
        if (!replaced(line, msg)) {
            memcpy(out + n, line, sink->fixed[i].len);
            n += sink->fixed[i].len;
        }
    }
    b->used = n;
}

/* ---- curl callbacks ---- */

static int failed(long status)
{
    return status < 200 || status > 299;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_request *r = arg;
    size_t len = size * nmemb;

    if (failed(r->response_status)) {
        http1_response_body(r->response, data, len);
    }
    return len;
}

/* curl hands over whole lines: each response's status line (interim and
 * proxy ones too: the last one wins), its headers, an empty line. */
static void collect_header(struct http_request *r, const char *data,
                           size_t len)
{
    const char *colon;

    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r')) {
        len--;
    }
    if (len > 5 && strncmp(data, "HTTP/", 5) == 0) {
        const char *sp = memchr(data, ' ', len);
        r->response_status = sp != NULL ? atoi(sp + 1) : 0;
        http1_response_reset(r->response);
        return;
    }
    if (!failed(r->response_status)) {
        return;
    }
    if (len == 0) {
        http1_response_end(r->response);
        return;
    }
    colon = memchr(data, ':', len);
    if (colon == NULL || colon == data || *data == ' ' || *data == '\t') {
        return; /* not a header, or an obsolete folded line */
    }
    const char *value = colon + 1;
    while (value < data + len && (*value == ' ' || *value == '\t')) {
        value++;
    }
    http1_response_field(r->response, data, (size_t)(colon - data));
    http1_response_value(r->response, value, (size_t)(data + len - value));
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    collect_header(arg, data, size * nmemb);
    return size * nmemb;
}

/* 2xx delivered; 408, 425, 429, 500, 502, 503 and 504 worth another
 * attempt; every other status (501, 505 and the rest of 4xx too) fails
 * the same way next time. */
static enum connector_status status_class(long status)
{
    if (!failed(status)) {
        return CONNECTOR_OK;
    }
    switch (status) {
    case 408: case 425: case 429: case 500: case 502: case 503: case 504:
        return CONNECTOR_RETRY;
    default:
        return CONNECTOR_REJECT;
    }
}

/* Classifies a response. A failed one's headers and body (the
 * transport kept them only then) go into res as they are, and the body's
 * start, made printable, into its error. */
static void classify_status(long status, int64_t retry_after_ms,
                            const struct sl_header *headers,
                            size_t header_count, const char *body,
                            size_t body_len, struct connector_result *res)
{
    char text[HTTP_ERROR_BODY + 1];
    size_t len = 0;

    result_set(res, status_class(status), status, retry_after_ms);
    if (res->status == CONNECTOR_OK) {
        return;
    }
    res->response_headers = headers;
    res->response_header_count = header_count;
    res->body = body;
    res->body_len = body_len;
    for (; len < res->body_len && len < HTTP_ERROR_BODY; len++) {
        unsigned char ch = (unsigned char)res->body[len];
        text[len] = ch < 0x20 ? ' ' : (char)ch;
    }
    text[len] = '\0';
    snprintf(res->error, sizeof(res->error), "HTTP %ld%s%s", status,
             len ? ": " : "", text);
}

static void transport_error(const char *what, struct connector_result *res)
{
    result_set(res, CONNECTOR_RETRY, 0, -1);
    snprintf(res->error, sizeof(res->error), "%s", what);
}

/* What an OpenSSL verification result (X509_V_ERR_*, as curl reports it
 * in CURLINFO_SSL_VERIFYRESULT) means to whoever runs the sink; NULL for
 * the rarer ones. The numbers are OpenSSL's stable ABI. */
static const char *tls_verify_reason(long verify)
{
    switch (verify) {
    case 9:  /* CERT_NOT_YET_VALID */
        return "certificate not yet valid";
    case 10: /* CERT_HAS_EXPIRED */
        return "certificate expired";
    case 18: /* DEPTH_ZERO_SELF_SIGNED_CERT */
        return "self-signed certificate";
    case 19: /* SELF_SIGNED_CERT_IN_CHAIN */
        return "unknown CA (a self-signed certificate in the chain)";
    case 2:  /* UNABLE_TO_GET_ISSUER_CERT */
    case 20: /* UNABLE_TO_GET_ISSUER_CERT_LOCALLY */
    case 21: /* UNABLE_TO_VERIFY_LEAF_SIGNATURE */
        return "unknown CA";
    case 23: /* CERT_REVOKED */
        return "certificate revoked";
    case 62: /* HOSTNAME_MISMATCH */
        return "hostname mismatch";
    default:
        return NULL;
    }
}

/* A curl failure in the words of the lean client's: which host, which
 * phase (resolve, connect, TLS, response), then curl's own detail. */
static void curl_failure(struct http_request *r, int curl_code,
                         struct connector_result *res)
{
    const struct http_sink *sink = r->sink;
    const char *detail = r->curl_error[0] != '\0'
                             ? r->curl_error
                             : curl_easy_strerror((CURLcode)curl_code);
    curl_off_t connected = 0;
    long verify = 0;

    result_set(res, CONNECTOR_RETRY, 0, -1);
    switch (curl_code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        /* The host alone, as the lean client names it. */
        snprintf(res->error, sizeof(res->error), "cannot resolve %.*s: %s",
                 curl_code == CURLE_COULDNT_RESOLVE_PROXY
                     ? 9
                     : (int)(strrchr(sink->where, ':') - sink->where),
                 curl_code == CURLE_COULDNT_RESOLVE_PROXY ? "the proxy"
                                                          : sink->where,
                 detail);
        return;
    case CURLE_OPERATION_TIMEDOUT:
        curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &connected);
        if (connected == 0) {
            snprintf(res->error, sizeof(res->error),
                     "connect timeout: no connection to %s within %lld ms "
                     "(%s)",
                     sink->where, (long long)sink->connect_timeout_ms, detail);
        } else {
            snprintf(res->error, sizeof(res->error),
                     "response timeout: no complete response from %s "
                     "within %lld ms (%s)",
                     sink->where, (long long)sink->timeout_ms, detail);
        }
        return;
    case CURLE_PEER_FAILED_VERIFICATION: {
        curl_easy_getinfo(r->easy, CURLINFO_SSL_VERIFYRESULT, &verify);
        const char *why = tls_verify_reason(verify);
        /* OpenSSL passed the chain; curl checked the name itself, and
         * says so only in its words. */
        if (why == NULL && strstr(detail, "host name") != NULL) {
            why = "hostname mismatch";
        }
        snprintf(res->error, sizeof(res->error),
                 "TLS: certificate of %s not trusted: %s (%s)", sink->where,
                 why != NULL ? why : "verification failed", detail);
        return;
    }
    default:
        snprintf(res->error, sizeof(res->error), "%s: %s", sink->where,
                 detail);
        return;
    }
}

static void classify(struct http_request *r, int curl_code,
                     struct connector_result *res)
{
    long status = 0;

    if (curl_code != CURLE_OK) {
        curl_failure(r, curl_code, res);
        return;
    }
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    /* Trailers, if any, came after the empty line that ended the rest. */
    http1_response_end(r->response);
    if (!failed(r->response_status)) {
        http1_response_reset(r->response);
    }
    const struct http1_response *k = r->response;
    classify_status(status, http1_response_retry_after(k, time(NULL)),
                    k->headers, k->header_count, k->body, k->body_len, res);
}

/* Puts the slot back on the free list. */
static void slot_free(struct http_request *r)
{
    struct http_sink *sink = r->sink;

    r->busy = 0;
    r->next_free = sink->free_list;
    sink->free_list = r;
}

static void request_release(struct http_request *r,
                            const struct connector_result *res)
{
    void *token = r->token;

    slot_free(r);
    r->sink->host->complete(r->sink->host->engine, token, res);
}

static void lean_done(struct http1_request *h1, const struct http1_result *h)
{
    struct http_request *r =
        (struct http_request *)((char *)h1 - offsetof(struct http_request, h1));
    struct connector_result res;

    if (h->error != 0) {
        transport_error(h->message != NULL ? h->message
                                           : strerror(h->error),
                        &res);
    } else {
        classify_status(h->status, h->retry_after_ms, h->headers,
                        h->header_count, h->body, h->body_len, &res);
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

/* Configured headers and content_type go into every request as they
 * are (${ENV} values too): a line break there would add headers or a
 * request of its own. Values are never shown, they may be secrets. */
static int options_check(const struct http_sink *sink, const char **option,
                         struct sl_error *err)
{
    char show[72];
    const char *what;
    size_t at;

    *option = "content_type";
    if ((at = bad_byte(sink->content_type, strlen(sink->content_type),
                       &what)) != 0) {
        return sl_error_set(err, "content_type contains %s (byte %zu)", what,
                            at);
    }
    *option = "headers";
    for (size_t i = 0; i < sink->headers.count; i++) {
        const char *name = sink->headers.keys[i];
        const char *value = sink->headers.values[i];
        if (!token(name)) {
            return sl_error_set(err, "header name `%s` is not an HTTP token "
                                     "(letters, digits and !#$%%&'*+-.^_`|~)",
                                shown(show, sizeof(show), name));
        }
        if (reserved_header(name, 1)) {
            return sl_error_set(err, "header `%s` is the connector's to set",
                                name);
        }
        if ((at = bad_byte(value, strlen(value), &what)) != 0) {
            return sl_error_set(err, "header `%s` value contains %s (byte %zu)",
                                name, what, at);
        }
    }
    *option = "methods";
    for (size_t i = 0; i < sink->methods.count; i++) {
        if (!token(sink->methods.items[i])) {
            return sl_error_set(err, "`%s` is not an HTTP method",
                                shown(show, sizeof(show),
                                      sink->methods.items[i]));
        }
    }
    return 0;
}

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
    return options_check(sink, option, err);
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

/* Whether the sink's configuration sets header name. */
static int configured(const struct http_sink *sink, const char *name)
{
    for (size_t i = 0; i < sink->headers.count; i++) {
        if (strcasecmp(sink->headers.keys[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Parses the URL with curl's parser and builds the lean client's request
 * head: request line, Host and the sink's static headers, each header
 * line noted so that a message's request header can replace it. A URL
 * with credentials is left to curl (0 with sink->lean NULL). */
static int lean_open(struct http_sink *sink, struct sl_error *err)
{
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *path = NULL, *query = NULL, *user = NULL;
    int rc = -1;

    if (u == NULL ||
        curl_url_set(u, CURLUPART_URL, sink->url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
            CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
        /* Not echoed: a URL may carry a password (see http_check). */
        sl_error_set(err, "url: cannot parse");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
        /* curl sends a URL's credentials as Basic auth; the lean client
         * would drop them, and every request would fail as 401. */
        rc = 0;
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
    sink->fixed_count = 3 + sink->headers.count;
    sink->fixed = calloc(sink->fixed_count, sizeof(*sink->fixed));
    sink->base = strdup(path);
    sink->query = query != NULL ? strdup(query) : NULL;
    if (sink->fixed == NULL || sink->base == NULL ||
        (query != NULL && sink->query == NULL)) {
        sl_error_set(err, "out of memory");
        goto out;
    }
    /* An IPv6 literal needs its brackets back in Host. */
    int v6 = strchr(host, ':') != NULL;
    size_t n = (size_t)snprintf(sink->head, cap, "%s %s%s%s HTTP/1.1\r\n",
                                http_methods[sink->method], path,
                                query ? "?" : "", query ? query : "");
    for (size_t i = 0; i < sink->fixed_count && n < cap; i++) {
        char *line = sink->head + n;
        size_t room = cap - n;
        int len;
        if (i == 0 && configured(sink, "Host")) {
            len = 0; /* the configured one goes out instead, as with curl */
        } else if (i == 0) {
            len = snprintf(line, room, "Host: %s%s%s:%s\r\n", v6 ? "[" : "",
                           host, v6 ? "]" : "", port);
        } else if (i == 1) {
            len = snprintf(line, room, "User-Agent: sluice\r\n");
        } else if (i == 2) {
            len = snprintf(line, room, "Content-Type: %s\r\n",
                           sink->content_type);
        } else {
            len = snprintf(line, room, "%s: %s\r\n", sink->headers.keys[i - 3],
                           sink->headers.values[i - 3]);
        }
        sink->fixed[i] = (struct line){n, (size_t)len};
        n += (size_t)len;
    }
    sink->head_len = n;
    sink->lean = http1_pool_new(sink->host, host, port,
                                sink->host->max_in_flight,
                                sink->connect_timeout_ms, sink->timeout_ms,
                                err);
    rc = sink->lean != NULL ? 0 : -1;
out:
    curl_free(user);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_url_cleanup(u);
    return rc;
}

/* The sink's fixed headers as a curl_slist, for the curl transport, and
 * the URL without its query, which a message's path goes after. */
static int curl_headers_open(struct http_sink *sink)
{
    char line[8192];
    struct curl_slist *list = NULL, *more;
    CURLU *u = curl_url();
    char *base = NULL, *query = NULL, *host = NULL, *port = NULL;
    int ok;

    ok = u != NULL &&
         curl_url_set(u, CURLUPART_URL, sink->url, 0) == CURLUE_OK &&
         curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) == CURLUE_OK &&
         (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
          query == NULL) &&
         curl_url_set(u, CURLUPART_QUERY, NULL, 0) == CURLUE_OK &&
         curl_url_get(u, CURLUPART_URL, &base, 0) == CURLUE_OK &&
         curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
         curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) ==
             CURLUE_OK;
    if (ok) {
        sink->base = strdup(base);
        sink->query = query != NULL ? strdup(query) : NULL;
        size_t len = strlen(host) + strlen(port) + 2;
        sink->where = malloc(len);
        if (sink->where != NULL) {
            snprintf(sink->where, len, "%s:%s", host, port);
        }
    }
    ok = ok && sink->base != NULL && sink->where != NULL &&
         (query == NULL || sink->query != NULL);
    curl_free(base);
    curl_free(query);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    if (!ok) {
        return -1;
    }

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
    sink->static_count = sink->headers.count + 2;
    return 0;
}

static size_t http_target(const void *ctx, const struct connector_msg *msg,
                          char *out, size_t cap)
{
    const struct http_sink *sink = ctx;
    size_t need = strlen(sink->base) + 3 +
                  (sink->query != NULL ? strlen(sink->query) : 0) +
                  (msg->path != NULL ? strlen(msg->path) : 0);
    char stack[2048], *buf = need <= sizeof(stack) ? stack : malloc(need);
    size_t n, skip = 0, len;

    if (cap == 0) {
        return 0;
    }
    if (buf == NULL) {
        out[0] = '\0';
        return 0;
    }
    n = url_join(buf, sink, msg->path);
    buf[n] = '\0';
    /* curl's base is the whole URL: the target starts after the host. */
    const char *scheme = strstr(buf, "://");
    if (sink->lean == NULL && scheme != NULL) {
        skip = (size_t)(scheme + 3 - buf) + strcspn(scheme + 3, "/?");
    }
    len = 0;
    if (buf[skip] != '/') {
        out[len++] = '/';
    }
    size_t copy = n - skip < cap - 1 - len ? n - skip : cap - 1 - len;
    memcpy(out + len, buf + skip, copy);
    len += copy;
    out[len] = '\0';
    if (buf != stack) {
        free(buf);
    }
    return len;
}

static void http_describe(const void *ctx, struct connector_about *out)
{
    const struct http_sink *sink = ctx;
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL;

    memset(out, 0, sizeof(*out));
    snprintf(out->method, sizeof(out->method), "%s",
             http_methods[sink->method]);
    if (u != NULL && curl_url_set(u, CURLUPART_URL, sink->url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) ==
            CURLUE_OK) {
        /* [::1] is written bare, as OpenTelemetry's server.address is. */
        size_t n = strlen(host);
        if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
            snprintf(out->server_address, sizeof(out->server_address), "%.*s",
                     (int)(n - 2), host + 1);
        } else {
            snprintf(out->server_address, sizeof(out->server_address), "%s",
                     host);
        }
        out->server_port = atoi(port);
    }
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
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
    if (sink->lean == NULL) {
        /* The lean client keeps failed responses in its connections. */
        sink->responses =
            calloc((size_t)sink->pool_size, sizeof(*sink->responses));
    }
    if (sink->requests == NULL ||
        (sink->lean == NULL && sink->responses == NULL)) {
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
        r->response = &sink->responses[i];
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
        curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->curl_error);
        if (sink->ca_file != NULL) {
            curl_easy_setopt(r->easy, CURLOPT_CAINFO, sink->ca_file);
        }
        curl_easy_setopt(r->easy, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
    }
    return 0;
}

/* Curl: the overrides of msg (the sink's method and URL again when it
 * has none but the slot's last request had); after POSTFIELDS, which
 * makes the request a POST again. The URL goes through the slot's buffer
 * at used (curl copies it). */
static void curl_overrides(struct http_sink *sink, struct http_request *r,
                           const struct connector_msg *msg, size_t used)
{
    const char *method = msg->method;
    int head = method != NULL && strcmp(method, "HEAD") == 0;

    if (method == NULL && sink->method != 0) {
        method = http_methods[sink->method];
    }
    if (head) {
        /* curl reads no body after a HEAD only when told with NOBODY,
         * which also leaves the request body out. */
        curl_easy_setopt(r->easy, CURLOPT_NOBODY, 1L);
        method = NULL;
    } else if (r->custom) {
        curl_easy_setopt(r->easy, CURLOPT_NOBODY, 0L);
        curl_easy_setopt(r->easy, CURLOPT_POST, 1L);
    }
    curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST,
                     method != NULL && strcmp(method, "POST") != 0 ? method
                                                                   : NULL);
    if (msg->path != NULL && *msg->path != '\0') {
        char *url = r->header_bytes + used;
        url[url_join(url, sink, msg->path)] = '\0';
        curl_easy_setopt(r->easy, CURLOPT_URL, url);
    } else if (r->custom) {
        curl_easy_setopt(r->easy, CURLOPT_URL, sink->url);
    }
    r->custom = has_overrides(msg);
}

/* A header sluice adds itself (Idempotency-Key, Kafka-*), unless the
 * sink's transform set one of that name: then it goes out once, as the
 * transform set it. */
static void auto_add(struct header_builder *b, const struct connector_msg *msg,
                     const char *name, const void *value, size_t len,
                     enum header_encoding enc)
{
    for (size_t i = 0; i < msg->request_header_count; i++) {
        if (strcasecmp(msg->request_headers[i].name, name) == 0) {
            return;
        }
    }
    header_add(b, "", name, value, len, enc);
}

static int http_send(void *ctx, const struct connector_msg *msg, void *token,
                     struct connector_result *result)
{
    struct http_sink *sink = ctx;
    struct http_request *r = sink->free_list;
    struct header_builder b;
    char num[32];
    int custom = has_overrides(msg);
    int head = msg->method != NULL && strcmp(msg->method, "HEAD") == 0;

    if (custom && overrides_check(sink, msg, result) != 0) {
        return -1;
    }
    if (r == NULL) {
        /* The engine bounds in-flight requests by the pool size. */
        transport_error("no request slot", result);
        return -1;
    }
    if (header_reserve(sink, r, msg) != 0) {
        transport_error("out of memory for request headers", result);
        return -1;
    }
    sink->free_list = r->next_free;
    b = (struct header_builder){.req = r, .crlf = sink->lean != NULL};
    if (custom && sink->lean != NULL) {
        lean_head(sink, &b, msg);
    }
    for (size_t i = 0; i < msg->request_header_count; i++) {
        const struct sl_header *h = &msg->request_headers[i];
        header_add(&b, "", h->name, h->value ? h->value : "", h->value_len,
                   ENC_RAW);
    }
    auto_add(&b, msg, "Idempotency-Key", msg->dedupe_key,
             strlen(msg->dedupe_key), ENC_PERCENT);
    if (msg->traceparent != NULL) {
        auto_add(&b, msg, "traceparent", msg->traceparent,
                 strlen(msg->traceparent), ENC_RAW);
        if (msg->tracestate_len > 0) {
            auto_add(&b, msg, "tracestate", msg->tracestate,
                     msg->tracestate_len, ENC_AUTO);
        }
    }
    auto_add(&b, msg, "Kafka-Topic", msg->topic, strlen(msg->topic),
             ENC_AUTO);
    snprintf(num, sizeof(num), "%d", (int)msg->partition);
    auto_add(&b, msg, "Kafka-Partition", num, strlen(num), ENC_AUTO);
    snprintf(num, sizeof(num), "%lld", (long long)msg->offset);
    auto_add(&b, msg, "Kafka-Offset", num, strlen(num), ENC_AUTO);
    if (msg->timestamp_ms >= 0) {
        snprintf(num, sizeof(num), "%lld", (long long)msg->timestamp_ms);
        auto_add(&b, msg, "Kafka-Timestamp", num, strlen(num), ENC_AUTO);
    }
    if (msg->key != NULL) {
        auto_add(&b, msg, "Kafka-Key", msg->key, msg->key_len, ENC_AUTO);
    }
    if (sink->forward_headers) {
        for (size_t i = 0; i < msg->header_count; i++) {
            const struct sl_header *h = &msg->headers[i];
            char name[1024];
            if (token_encode(name, sizeof(name), h->name) == 0) {
                header_add(&b, "Kafka-Header-", name,
                           h->value ? h->value : "", h->value_len, ENC_AUTO);
            }
        }
    }
    r->token = token;
    if (sink->lean != NULL) {
        size_t n = b.used;
        if (!head) {
            n += (size_t)snprintf(r->header_bytes + n, r->byte_cap - n,
                                  "Content-Length: %zu\r\n", msg->value_len);
        }
        memcpy(r->header_bytes + n, "\r\n", 2);
        n += 2;
        /* With overrides the whole head is in the slot's buffer. */
        int i = 0;
        if (!custom) {
            r->h1.iov[i++] = (struct iovec){sink->head, sink->head_len};
        }
        r->h1.iov[i++] = (struct iovec){r->header_bytes, n};
        if (msg->value_len > 0 && !head) {
            r->h1.iov[i++] =
                (struct iovec){(void *)msg->value, msg->value_len};
        }
        r->h1.iovcnt = i;
        r->h1.head = head;
        r->busy = 1;
        int rc = http1_send(sink->lean, &r->h1);
        if (rc != 0) {
            slot_free(r);
            transport_error(strerror(rc), result);
            return -1;
        }
        return 0;
    }
    if (msg->request_header_count > 0) {
        /* The sink's headers that msg does not replace, as nodes of the
         * slot's own list pointing to the shared lines. */
        for (struct curl_slist *l = sink->static_headers; l; l = l->next) {
            if (!replaced(l->data, msg)) {
                header_link(&b, l->data);
            }
        }
    } else if (b.nodes > 0) {
        r->nodes[b.nodes - 1].next = sink->static_headers;
    }
    r->busy = 1;
    r->response_status = 0;
    r->curl_error[0] = '\0'; /* curl writes it only on failure */
    http1_response_reset(r->response);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER,
                     b.nodes > 0 ? r->nodes : sink->static_headers);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)msg->value_len);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS,
                     msg->value ? msg->value : "");
    if (custom || r->custom) {
        curl_overrides(sink, r, msg, b.used);
    }
    if (sink->host->http_start(sink->host->io, r->easy, &r->transfer) != 0) {
        slot_free(r);
        transport_error("could not start the transfer", result);
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
    free(sink->fixed);
    sink->fixed = NULL;
    free(sink->base);
    sink->base = NULL;
    free(sink->query);
    sink->query = NULL;
    free(sink->where);
    sink->where = NULL;
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
    free(sink->responses);
    curl_slist_free_all(sink->static_headers);
    sink->requests = NULL;
    sink->responses = NULL;
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
           "delivered; transport errors, 408, 425, 429, 500, 502, 503 and "
           "504 are worth another attempt; other statuses are permanent. "
           "A transform may replace the method (with one of `methods`), "
           "append a path (and query) to the URL and add headers "
           "(replacing a configured one, or one of those above, of the "
           "same name); a message whose method, path or headers are not "
           "valid HTTP, not allowed, climb out of the URL's path (`..`) "
           "or set a header that frames or routes the request (`Host`, "
           "`Content-Length`, ...) is rejected without a request (see "
           "docs/sinks.md). Configured headers and `content_type` with "
           "control bytes are refused at load. Host names are resolved "
           "off the loop and cached for 30 s. Plain `http://` "
           "uses sluice's keep-alive HTTP/1.1 client; `https://`, a URL "
           "with credentials (`user:pass@`, sent as Basic auth), or any "
           "URL while `http_proxy`/`all_proxy` is set, uses libcurl.",
    .options = http_options,
    .ctx_size = sizeof(struct http_sink),
    .check = http_check,
    .open = http_open,
    .describe = http_describe,
    .target = http_target,
    .send = http_send,
    .close = http_close,
};
