/* http1.c -- keep-alive HTTP/1.1 connections to one endpoint.
 *
 * A connection is closed, connecting, idle, writing or reading; idle and
 * closed ones sit on two lists, so picking one is O(1). A request is
 * written with one sendmsg (head, per-request headers, body) and its
 * response parsed as it arrives. A request that finds its reused
 * connection closed by the server before any response byte (the
 * keep-alive race) is sent once more on a fresh connection, as curl does;
 * every other failure goes back to the caller, whose engine retries.
 * Headers and body of a response are kept only when its status is not
 * 2xx (http-parser knows the status before the first header), in the
 * connection's fixed scratch: the delivered path copies nothing. */
#include "http1.h"
#include "resolve.h"
#include <curl/curl.h>

#include <errno.h>
#include <http_parser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* RESOLVING: waiting on the pool's resolver, on the waiting list. */
enum conn_state {
    CONN_CLOSED,
    CONN_RESOLVING,
    CONN_CONNECTING,
    CONN_IDLE,
    CONN_BUSY
};

struct conn {
    http1_pool_t *pool;
    enum conn_state state;
    int fd;
    void *watch;
    void *timer;
    int reused;   /* served a request before: may meet a stale close */
    int got_data; /* response bytes arrived for the current request */
    int pending;  /* an errno found inside http1_send, for the timer */
    struct http1_request *req;
    struct iovec iov[3]; /* what is left to write */
    int iovcnt;
    http_parser parser;
    int complete, keep_alive;
    struct conn *prev, *next; /* on the idle, closed or waiting list */
    struct http1_response resp; /* last, as the largest and coldest */
};

struct http1_pool {
    const struct connector_host *host;
    resolve_t *dns;
    char where[300]; /* host:port, for errors */
    int64_t connect_timeout_ms, timeout_ms;
    struct conn *conns;
    int count;
    struct conn *idle, *closed, *waiting;
    http_parser_settings settings;
};

/* ---- lists ---- */

static void list_push(struct conn **head, struct conn *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head != NULL) {
        (*head)->prev = c;
    }
    *head = c;
}

static void list_remove(struct conn **head, struct conn *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        *head = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

/* ---- failed responses' headers and body ---- */

void http1_response_reset(struct http1_response *r)
{
    r->header_count = 0;
    r->body_len = 0;
    r->used = 0;
    r->in_field = r->in_value = r->dropping = 0;
}

void http1_response_end(struct http1_response *r)
{
    if (r->in_field && !r->dropping) {
        r->buf[r->used++] = '\0'; /* a name without a value */
        r->value_at = r->used;
    }
    if ((r->in_field || r->in_value) && !r->dropping) {
        /* Optional whitespace after a value is not part of it. */
        while (r->used > r->value_at &&
               (r->buf[r->used - 1] == ' ' || r->buf[r->used - 1] == '\t')) {
            r->used--;
        }
        r->headers[r->header_count++] = (struct sl_header){
            .name = r->buf + r->start,
            .value = r->buf + r->value_at,
            .value_len = r->used - r->value_at,
        };
        r->buf[r->used++] = '\0';
    }
    r->in_field = r->in_value = r->dropping = 0;
    r->body[r->body_len] = '\0';
}

/* A header that does not fit is dropped whole (used goes back to its
 * start); the later ones may still fit. */
void http1_response_field(struct http1_response *r, const char *at,
                          size_t len)
{
    if (!r->in_field) {
        http1_response_end(r);
        r->in_field = 1;
        r->dropping = r->header_count == HTTP1_HEADERS_MAX;
        r->start = r->used;
    }
    if (r->dropping) {
        return;
    }
    /* Room for this piece and both terminators. */
    if (len + 2 > sizeof(r->buf) - r->used) {
        r->used = r->start;
        r->dropping = 1;
        return;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = at[i];
        r->buf[r->used++] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
    }
}

void http1_response_value(struct http1_response *r, const char *at,
                          size_t len)
{
    if (r->in_field) {
        r->in_field = 0;
        r->in_value = 1;
        if (!r->dropping) {
            r->buf[r->used++] = '\0';
            r->value_at = r->used;
        }
    }
    if (r->dropping || !r->in_value) {
        return;
    }
    if (len + 1 > sizeof(r->buf) - r->used) {
        r->used = r->start;
        r->dropping = 1;
        return;
    }
    memcpy(r->buf + r->used, at, len);
    r->used += len;
}

void http1_response_body(struct http1_response *r, const char *at,
                         size_t len)
{
    size_t keep = CONNECTOR_BODY_MAX - r->body_len;

    if (keep > len) {
        keep = len;
    }
    memcpy(r->body + r->body_len, at, keep);
    r->body_len += keep;
}

/* ---- response parsing ---- */

static int failed(unsigned status)
{
    return status < 200 || status > 299;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    if (failed(p->status_code)) {
        http1_response_field(&c->resp, at, len);
    }
    return 0;
}

int64_t http1_retry_after_ms(const char *value, size_t len, time_t now)
{
    char text[64];
    size_t i = 0;
    int64_t secs = 0;

    while (len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        len--;
    }
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t' ||
                       value[len - 1] == '\r' || value[len - 1] == '\n')) {
        len--;
    }
    if (len == 0 || len >= sizeof(text)) {
        return -1;
    }
    for (; i < len && value[i] >= '0' && value[i] <= '9'; i++) {
        if (secs < 1000000000) { /* past 30 years: capped by the policy */
            secs = secs * 10 + (value[i] - '0');
        }
    }
    if (i == len) {
        return secs * 1000;
    }
    memcpy(text, value, len);
    text[len] = '\0';
    time_t at = curl_getdate(text, NULL);
    if (at == (time_t)-1) {
        return -1;
    }
    if (at <= now) {
        return 0;
    }
    /* A date centuries ahead must not overflow: cap it like the
     * delay-seconds form. */
    secs = (int64_t)(at - now);
    return (secs > 1000000000 ? 1000000000 : secs) * 1000;
}

/* Retry-After matters only to a failed response, whose headers are kept
 * anyway: read from them once it ended (the last readable one wins). */
int64_t http1_response_retry_after(const struct http1_response *r,
                                   time_t now)
{
    int64_t ms = -1;

    for (size_t i = 0; i < r->header_count; i++) {
        if (strcmp(r->headers[i].name, "retry-after") == 0) {
            int64_t v = http1_retry_after_ms(r->headers[i].value,
                                             r->headers[i].value_len, now);
            ms = v >= 0 ? v : ms;
        }
    }
    return ms;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    if (failed(p->status_code)) {
        http1_response_value(&c->resp, at, len);
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;

    /* 1: the response to a HEAD has no body, whatever its headers say. */
    return c->req->head;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    if (failed(p->status_code)) {
        http1_response_body(&c->resp, at, len);
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;

    if (p->status_code >= 100 && p->status_code < 200 &&
        p->status_code != 101) {
        /* An interim response (100 Continue, 103 Early Hints): the
         * final one follows on the same connection, as curl reads it. */
        http1_response_reset(&c->resp);
        return 0;
    }
    c->complete = 1;
    c->keep_alive = http_should_keep_alive(p);
    if (failed(p->status_code)) {
        http1_response_end(&c->resp);
    }
    /* One response per request: stop here. */
    http_parser_pause(p, 1);
    return 0;
}

/* ---- connections ---- */

static void conn_close(struct conn *c)
{
    http1_pool_t *pool = c->pool;

    if (c->state == CONN_CLOSED) {
        return;
    }
    pool->host->timer_set(pool->host->io, c->timer, -1);
    if (c->state == CONN_RESOLVING) {
        /* No socket yet. */
        list_remove(&pool->waiting, c);
        c->state = CONN_CLOSED;
        list_push(&pool->closed, c);
        return;
    }
    if (c->state == CONN_IDLE) {
        list_remove(&pool->idle, c);
    }
    pool->host->watch_free(pool->host->io, c->watch);
    c->watch = NULL;
    close(c->fd);
    c->fd = -1;
    c->state = CONN_CLOSED;
    c->reused = 0;
    list_push(&pool->closed, c);
}

static int conn_start(http1_pool_t *pool, struct conn *c,
                      struct http1_request *req);

/* The parsed response of c as a result: its status, and for a failure
 * the headers, body and Retry-After the retry policy reads. */
static void result_from(const struct conn *c, struct http1_result *res)
{
    res->status = (int)c->parser.status_code;
    if (failed(c->parser.status_code)) {
        res->retry_after_ms = http1_response_retry_after(&c->resp,
                                                         time(NULL));
        res->headers = c->resp.headers;
        res->header_count = c->resp.header_count;
        res->body = c->resp.body;
        res->body_len = c->resp.body_len;
    }
}

/* Ends c's request with error err (0: the parsed response); why, when not
 * NULL, says what failed (else "host:port: strerror(err)"). */
static void conn_finish(struct conn *c, int err, const char *why)
{
    http1_pool_t *pool = c->pool;
    struct http1_request *req = c->req;
    struct http1_result res = {.error = err, .retry_after_ms = -1};
    int stale = err != 0 && c->reused && !c->got_data;
    char text[400];

    c->req = NULL;
    if (err == 0) {
        /* Still c's own until its next response is parsed, which never
         * happens before done() returns, even if done() sends on c. */
        result_from(c, &res);
    } else if (why == NULL) {
        snprintf(text, sizeof(text), "%s: %s", pool->where,
                 err == EPROTO ? "invalid HTTP response" : strerror(err));
        why = text;
    }
    res.message = why;
    if (err != 0 || !c->keep_alive) {
        conn_close(c);
    } else {
        c->state = CONN_IDLE;
        c->reused = 1;
        pool->host->timer_set(pool->host->io, c->timer, -1);
        pool->host->watch_set(pool->host->io, c->watch, CONNECTOR_READABLE);
        list_push(&pool->idle, c);
    }
    if (stale && !req->resent) {
        /* The server closed the idle connection as we wrote: nothing of
         * this request was answered, so it is safe to send again. */
        req->resent = 1;
        struct conn *fresh = pool->closed;
        if (fresh != NULL) {
            list_remove(&pool->closed, fresh);
            int rc = conn_start(pool, fresh, req);
            if (rc == 0) {
                return;
            }
            res.error = rc;
            snprintf(text, sizeof(text), "connect to %s: %s", pool->where,
                     strerror(rc));
            res.message = text;
        }
    }
    req->done(req, &res);
}

/* Writes what is left of the request. From inside http1_send (in_send) a
 * failure is left for the loop to find, so done() never runs there. */
static void conn_write(struct conn *c, int in_send)
{
    http1_pool_t *pool = c->pool;

    while (c->iovcnt > 0) {
        /* sendmsg rather than writev: MSG_NOSIGNAL, so a peer that went
         * away is an EPIPE here, not a SIGPIPE for the process. */
        struct msghdr mh = {.msg_iov = c->iov, .msg_iovlen = (size_t)c->iovcnt};
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR || in_send) {
                pool->host->watch_set(pool->host->io, c->watch,
                                      CONNECTOR_WRITABLE);
                return;
            }
            conn_finish(c, errno, NULL);
            return;
        }
        while (c->iovcnt > 0 && (size_t)n >= c->iov[0].iov_len) {
            n -= (ssize_t)c->iov[0].iov_len;
            memmove(c->iov, c->iov + 1,
                    (size_t)(c->iovcnt - 1) * sizeof(c->iov[0]));
            c->iovcnt--;
        }
        if (c->iovcnt > 0) {
            c->iov[0].iov_base = (char *)c->iov[0].iov_base + n;
            c->iov[0].iov_len -= (size_t)n;
        }
    }
    pool->host->watch_set(pool->host->io, c->watch, CONNECTOR_READABLE);
}

static void conn_read(struct conn *c)
{
    char buf[16384];

    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return;
            }
            conn_finish(c, errno, NULL);
            return;
        }
        if (n == 0) {
            /* EOF ends a close-delimited body; otherwise it is an error. */
            http_parser_execute(&c->parser, &c->pool->settings, NULL, 0);
            conn_finish(c, c->complete ? 0 : ECONNRESET, NULL);
            return;
        }
        c->got_data = 1;
        http_parser_execute(&c->parser, &c->pool->settings, buf, (size_t)n);
        if (c->complete) {
            conn_finish(c, 0, NULL);
            return;
        }
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
            conn_finish(c, EPROTO, NULL);
            return;
        }
    }
}

static void conn_event(void *arg, unsigned events)
{
    struct conn *c = arg;

    switch (c->state) {
    case CONN_IDLE: {
        /* Readable while idle: the server closed (or broke protocol). */
        char b;
        if (recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
            (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        conn_close(c);
        return;
    }
    case CONN_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            char why[400];
            /* Another address, or a fresh answer, for the next attempt. */
            resolve_failed(c->pool->dns);
            snprintf(why, sizeof(why), "connect to %s: %s", c->pool->where,
                     strerror(err));
            conn_finish(c, err, why);
            return;
        }
        c->state = CONN_BUSY;
        c->pool->host->timer_set(c->pool->host->io, c->timer,
                                 c->pool->timeout_ms);
        conn_write(c, 0);
        return;
    }
    case CONN_BUSY:
        if (c->iovcnt > 0) {
            if (events & CONNECTOR_WRITABLE) {
                conn_write(c, 0);
            }
        } else if (events & CONNECTOR_READABLE) {
            conn_read(c);
        }
        return;
    case CONN_RESOLVING:
    case CONN_CLOSED:
        return;
    }
}

/* The connection's one timer: a connect or response deadline, or (at 0
 * ms) a failure found inside http1_send, reported from the loop. */
static void conn_timeout(void *arg)
{
    struct conn *c = arg;
    http1_pool_t *pool = c->pool;
    char why[400];
    int err = ETIMEDOUT;

    if (c->req == NULL) {
        return;
    }
    c->got_data = 1; /* a timeout is never resent transparently */
    if (c->pending != 0) {
        err = c->pending;
        c->pending = 0;
        snprintf(why, sizeof(why), "connect to %s: %s", pool->where,
                 strerror(err));
    } else if (c->state == CONN_RESOLVING) {
        snprintf(why, sizeof(why),
                 "cannot resolve %s: no answer within %lld ms (connect "
                 "timeout)",
                 resolve_name(pool->dns), (long long)pool->connect_timeout_ms);
    } else if (c->state == CONN_CONNECTING) {
        resolve_failed(pool->dns);
        snprintf(why, sizeof(why),
                 "connect timeout: no connection to %s within %lld ms",
                 pool->where, (long long)pool->connect_timeout_ms);
    } else if (c->iovcnt > 0) {
        snprintf(why, sizeof(why),
                 "response timeout: %s did not take the whole request "
                 "within %lld ms",
                 pool->where, (long long)pool->timeout_ms);
    } else {
        snprintf(why, sizeof(why),
                 "response timeout: no %sresponse from %s within %lld ms",
                 HTTP_PARSER_ERRNO(&c->parser) == HPE_OK &&
                         c->parser.status_code != 0
                     ? "complete "
                     : "",
                 pool->where, (long long)pool->timeout_ms);
    }
    conn_finish(c, err, why);
}

/* Opens c's socket to addr and starts connecting. 0, or an errno with c
 * left without a socket. */
static int conn_connect(http1_pool_t *pool, struct conn *c,
                        const struct resolve_addr *addr)
{
    int one = 1, rc, err;

    c->fd = socket(addr->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   0);
    if (c->fd < 0) {
        return errno;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    rc = connect(c->fd, (const struct sockaddr *)&addr->addr, addr->len);
    err = rc == 0 ? 0 : errno;
    if (rc != 0 && err != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        resolve_failed(pool->dns);
        return err;
    }
    c->watch = pool->host->watch_new(pool->host->io, c->fd, conn_event, c);
    if (c->watch == NULL) {
        close(c->fd);
        c->fd = -1;
        return ENOMEM;
    }
    c->state = CONN_CONNECTING;
    pool->host->watch_set(pool->host->io, c->watch, CONNECTOR_WRITABLE);
    pool->host->timer_set(pool->host->io, c->timer, pool->connect_timeout_ms);
    return 0;
}

static void conn_prepare(struct conn *c, struct http1_request *req)
{
    c->req = req;
    memcpy(c->iov, req->iov, sizeof(c->iov));
    c->iovcnt = req->iovcnt;
    c->got_data = 0;
    c->complete = 0;
    c->pending = 0;
    http1_response_reset(&c->resp);
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
}

/* Waits on the resolver: ready() connects c, or its deadline fails it. */
static void conn_wait(http1_pool_t *pool, struct conn *c)
{
    c->state = CONN_RESOLVING;
    list_push(&pool->waiting, c);
    pool->host->timer_set(pool->host->io, c->timer, pool->connect_timeout_ms);
}

/* Connects the closed connection c and sends req once connected. Always
 * 0: a failure is reported through done(), from the loop. */
static int conn_start(http1_pool_t *pool, struct conn *c,
                      struct http1_request *req)
{
    const struct resolve_addr *addr;
    int rc;

    conn_prepare(c, req);
    rc = resolve_get(pool->dns, &addr);
    if (rc == 1) {
        conn_wait(pool, c);
        return 0;
    }
    if (rc == 0) {
        rc = conn_connect(pool, c, addr);
        if (rc == 0) {
            return 0;
        }
    }
    /* Not from inside the caller: the timer reports it at once. A
     * failed lookup is never this: resolve_get reports one from ready()
     * alone, and one started here cannot have ended yet. */
    c->pending = rc > 0 ? rc : EHOSTUNREACH;
    c->state = CONN_RESOLVING; /* no socket: closes like a waiting one */
    list_push(&pool->waiting, c);
    pool->host->timer_set(pool->host->io, c->timer, 0);
    return 0;
}

/* The resolver's lookup ended: the connections waiting on it connect to
 * its answer, or fail with its reason. */
static void pool_resolved(void *arg)
{
    http1_pool_t *pool = arg;
    const struct resolve_addr *found;
    struct resolve_addr addr;
    int rc = resolve_get(pool->dns, &found);
    char why[400];

    if (rc == 0) {
        addr = *found; /* resolve_failed below may move on */
    }
    for (struct conn *c = pool->waiting, *next; c != NULL; c = next) {
        next = c->next;
        if (c->pending != 0) {
            continue; /* its own failure is on its way */
        }
        list_remove(&pool->waiting, c);
        c->state = CONN_CLOSED;
        pool->host->timer_set(pool->host->io, c->timer, -1);
        if (rc == 1) {
            conn_wait(pool, c); /* a new lookup, after a failed connect */
            continue;
        }
        int err = rc == 0 ? conn_connect(pool, c, &addr) : EHOSTUNREACH;
        if (err == 0) {
            continue;
        }
        list_push(&pool->closed, c);
        if (rc == 0) {
            snprintf(why, sizeof(why), "connect to %s: %s", pool->where,
                     strerror(err));
        } else {
            snprintf(why, sizeof(why), "%s", resolve_error(pool->dns));
        }
        /* conn_finish on a closed connection: it only reports. */
        conn_finish(c, err, why);
    }
}

int http1_send(http1_pool_t *pool, struct http1_request *req)
{
    struct conn *c = pool->idle;

    req->resent = 0;
    if (c == NULL) {
        c = pool->closed;
        if (c == NULL) {
            return EAGAIN;
        }
        list_remove(&pool->closed, c);
        return conn_start(pool, c, req);
    }
    list_remove(&pool->idle, c);
    conn_prepare(c, req);
    c->state = CONN_BUSY;
    pool->host->timer_set(pool->host->io, c->timer, pool->timeout_ms);
    conn_write(c, 1);
    return 0;
}

http1_pool_t *http1_pool_new(const struct connector_host *host,
                             const char *hostname, const char *port,
                             int max_conns, int64_t connect_timeout_ms,
                             int64_t timeout_ms, struct sl_error *err)
{
    http1_pool_t *pool = calloc(1, sizeof(*pool));

    if (pool == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    pool->host = host;
    /* An IPv6 literal in brackets, as in a URL. */
    snprintf(pool->where, sizeof(pool->where), "%s%s%s:%s",
             strchr(hostname, ':') != NULL ? "[" : "", hostname,
             strchr(hostname, ':') != NULL ? "]" : "", port);
    pool->connect_timeout_ms = connect_timeout_ms;
    pool->timeout_ms = timeout_ms;
    pool->count = max_conns;
    pool->conns = calloc((size_t)max_conns, sizeof(*pool->conns));
    if (pool->conns == NULL) {
        http1_pool_destroy(pool);
        sl_error_set(err, "out of memory");
        return NULL;
    }
    pool->dns = resolve_new(host, hostname, port, pool_resolved, pool, err);
    if (pool->dns == NULL) {
        http1_pool_destroy(pool);
        return NULL;
    }
    pool->settings.on_header_field = on_header_field;
    pool->settings.on_header_value = on_header_value;
    pool->settings.on_headers_complete = on_headers_complete;
    pool->settings.on_body = on_body;
    pool->settings.on_message_complete = on_message_complete;
    for (int i = max_conns - 1; i >= 0; i--) {
        struct conn *c = &pool->conns[i];
        c->pool = pool;
        c->fd = -1;
        c->state = CONN_CLOSED;
        c->timer = host->timer_new(host->io, conn_timeout, c);
        if (c->timer == NULL) {
            http1_pool_destroy(pool);
            sl_error_set(err, "out of memory");
            return NULL;
        }
        list_push(&pool->closed, c);
    }
    return pool;
}

void http1_pool_destroy(http1_pool_t *pool)
{
    if (pool == NULL) {
        return;
    }
    for (int i = 0; pool->conns != NULL && i < pool->count; i++) {
        struct conn *c = &pool->conns[i];
        if (c->state != CONN_CLOSED && c->state != CONN_RESOLVING) {
            pool->host->watch_free(pool->host->io, c->watch);
            close(c->fd);
        }
        if (c->timer != NULL) {
            pool->host->timer_free(pool->host->io, c->timer);
        }
    }
    resolve_destroy(pool->dns);
    free(pool->conns);
    free(pool);
}

/* ---- the response parser without a socket, for fuzzing ---- */

int http1_parse_response(struct http1_request *req, const char *data,
                         const size_t *chunks, size_t nchunks)
{
    /* As http1_pool_new sets them, and fed as conn_read feeds them. */
    static const http_parser_settings settings = {
        .on_header_field = on_header_field,
        .on_header_value = on_header_value,
        .on_headers_complete = on_headers_complete,
        .on_body = on_body,
        .on_message_complete = on_message_complete,
    };
    struct conn *c = calloc(1, sizeof(*c));
    struct http1_result res = {.retry_after_ms = -1};

    if (c == NULL) {
        return ENOMEM;
    }
    c->fd = -1;
    conn_prepare(c, req);
    for (size_t i = 0; i < nchunks && !c->complete; i++) {
        if (chunks[i] == 0) {
            continue; /* read() never returns 0 bytes but at EOF */
        }
        http_parser_execute(&c->parser, &settings, data, chunks[i]);
        data += chunks[i];
        if (!c->complete && HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
            res.error = EPROTO;
            break;
        }
    }
    if (!c->complete && res.error == 0) {
        http_parser_execute(&c->parser, &settings, NULL, 0); /* EOF */
        res.error = c->complete ? 0 : ECONNRESET;
    }
    if (res.error == 0) {
        result_from(c, &res);
    }
    req->done(req, &res);
    free(c);
    return 0;
}
