/* httpd.c -- an HTTP/1.1 server on the lane's loop (httpd.h).
 *
 * A connection is read into one buffer shared by the whole server (the
 * loop runs one thing at a time) and parsed by http-parser; the parser
 * pauses at the end of each request, and what came after it (a client's
 * pipelined requests) is kept in the connection until the request is
 * answered. While a request waits for its answer its socket stays
 * watched (level-triggered, so a client that sends nothing costs
 * nothing): no epoll_ctl per request. An answer is written with one
 * send(); what does not fit waits for the socket to be writable.
 *
 * Handler calls never free a connection under the parser's feet: a
 * connection that must close from inside one (a failed send) is closed
 * by its kick timer, which runs on the next turn of the loop. */
#include "httpd.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "connector.h"
#include "log.h"

#define HEADERS_MAX 64
#define READ_CHUNK (64 * 1024)
/* What a client sends behind a request that waits is kept, up to
 * STASH_MAX a connection (more when one read brought it) and STASH_TOTAL
 * for them all; past that it stays in the socket, unread. */
#define STASH_MAX (16 * 1024)
#define STASH_TOTAL (16 * 1024 * 1024)
#define DRAIN_MAX (64 * 1024)  /* a refused body read to keep the connection */
#define LINGER_MS 2000         /* reading what a closed request still sends */
#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 100    /* out of descriptors: try again later */

#define container_of(ptr, type, member)                                        \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

struct header_at {
    uint32_t name, value, value_len; /* offsets into head */
};

struct httpd_conn {
    httpd_t *d;
    int fd;
    void *watch;
    void *idle;  /* idle timeout; lingering close */
    void *kick;  /* the next turn of the loop: closes, resumes */
    uint64_t last_ms;
    http_parser parser;
    void *req; /* the handler's, for the request being read */
    /* the request being read */
    unsigned in_message : 1;
    unsigned answered : 1;   /* no more handler calls for it */
    unsigned waiting : 1;    /* read: the handler owes its answer */
    unsigned keep_alive : 1;
    unsigned expect : 1;     /* Expect: 100-continue */
    unsigned head_only : 1;  /* a HEAD: its answer has no body */
    unsigned continued : 1;  /* 100 Continue sent */
    unsigned close_after : 1; /* close once the output is sent */
    unsigned peer_eof : 1;
    unsigned broken : 1;      /* a send failed: close at the kick */
    unsigned lingering : 1;   /* output shut: dropping input, then close */
    unsigned dead : 1;        /* closed while waiting: freed by the answer */
    unsigned status_err;      /* a limit the parser callbacks met */
    /* the head: request line and headers, NUL-separated */
    char *head;
    size_t head_len, head_cap;
    size_t url_len;
    struct header_at hdr[HEADERS_MAX];
    size_t nhdr;
    int in_value;
    /* input read behind a request that waits */
    char *in;
    size_t in_len, in_cap;
    int stash_full; /* no room: the socket is not read until the answer */
    /* output not sent yet */
    char *out;
    size_t out_len, out_off, out_cap;
    struct httpd_conn *prev, *next;
};

struct httpd {
    loop_t *loop;
    struct connector_host host; /* the loop's watches and timers */
    struct httpd_limits lim;
    struct httpd_handler h;
    int listen_fd;
    void *listen_watch;
    void *accept_pause;
    size_t nconns;
    struct httpd_conn *conns;
    size_t stashed; /* bytes of every connection's stash */
    http_parser_settings settings;
    time_t date_at;
    char date[48];
    char rbuf[READ_CHUNK];
};

static void conn_close(struct httpd_conn *c);
static void conn_watch(struct httpd_conn *c);

/* ---- output ---- */

static const char *reason(unsigned status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error"
                                                       : "Server Error";
    }
}

static const char *date_line(httpd_t *d)
{
    time_t now = time(NULL);

    if (now != d->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(d->date, sizeof(d->date),
                 "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        d->date_at = now;
    }
    return d->date;
}

/* Appends to the output. 0, or -1 out of memory. */
static int out_put(struct httpd_conn *c, const char *data, size_t len)
{
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
    }
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < c->out_len + len) {
            cap *= 2;
        }
        char *b = realloc(c->out, cap);
        if (b == NULL) {
            return -1;
        }
        c->out = b;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return 0;
}

/* Sends what it can of the output: 0, or -1 when the connection failed. */
static int out_flush(struct httpd_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

static int out_pending(const struct httpd_conn *c)
{
    return c->out_off < c->out_len;
}

/* Runs c's kick on the next turn of the loop. */
static void conn_kick(struct httpd_conn *c)
{
    c->d->host.timer_set(c->d->host.io, c->kick, 0);
}

/* ---- the head ---- */

static int head_put(struct httpd_conn *c, const char *at, size_t len)
{
    /* The head is kept as C strings: a NUL inside one (http-parser lets
     * it through in a header value) would cut it short for one reader
     * and not for another. RFC 9110 has such a request refused. */
    if (memchr(at, '\0', len) != NULL) {
        c->status_err = 400;
        return -1;
    }
    if (c->head_len + len + 1 > c->d->lim.max_head) {
        c->status_err = 431;
        return -1;
    }
    if (c->head_len + len + 1 > c->head_cap) {
        size_t cap = c->head_cap ? c->head_cap : 1024;
        while (cap < c->head_len + len + 1) {
            cap *= 2;
        }
        char *b = realloc(c->head, cap);
        if (b == NULL) {
            c->status_err = 500;
            return -1;
        }
        c->head = b;
        c->head_cap = cap;
    }
    memcpy(c->head + c->head_len, at, len);
    c->head_len += len;
    return 0;
}

static int head_end_string(struct httpd_conn *c)
{
    if (head_put(c, "", 0) != 0) {
        return -1;
    }
    c->head[c->head_len++] = '\0';
    return 0;
}

const char *httpd_header(const httpd_conn_t *c, const char *name)
{
    for (size_t i = 0; i < c->nhdr; i++) {
        if (strcasecmp(c->head + c->hdr[i].name, name) == 0) {
            return c->head + c->hdr[i].value;
        }
    }
    return NULL;
}

size_t httpd_headers(const httpd_conn_t *c, struct sl_header *out,
                     size_t cap)
{
    size_t n = c->nhdr < cap ? c->nhdr : cap;

    for (size_t i = 0; i < n; i++) {
        out[i] = (struct sl_header){c->head + c->hdr[i].name,
                                    c->head + c->hdr[i].value,
                                    c->hdr[i].value_len};
    }
    return n;
}

/* ---- parser callbacks ---- */

static int on_message_begin(http_parser *hp)
{
    struct httpd_conn *c = hp->data;

    c->in_message = 1;
    c->answered = c->waiting = c->expect = c->continued = 0;
    c->req = NULL;
    c->head_len = c->url_len = c->nhdr = 0;
    c->in_value = 0;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    struct httpd_conn *c = hp->data;

    if (head_put(c, at, len) != 0) {
        if (c->status_err == 431) {
            c->status_err = 414;
        }
        return -1;
    }
    c->url_len += len;
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct httpd_conn *c = hp->data;

    if (c->nhdr == 0 && !c->in_value && c->head_len == c->url_len) {
        /* the first header: end the URL */
        if (head_end_string(c) != 0) {
            return -1;
        }
    }
    if (c->in_value || c->nhdr == 0) {
        if (c->in_value) {
            c->hdr[c->nhdr - 1].value_len =
                (uint32_t)(c->head_len - c->hdr[c->nhdr - 1].value);
            if (head_end_string(c) != 0) {
                return -1;
            }
        }
        if (c->nhdr == HEADERS_MAX) {
            c->status_err = 431;
            return -1;
        }
        c->hdr[c->nhdr++] = (struct header_at){(uint32_t)c->head_len, 0, 0};
        c->in_value = 0;
    }
    return head_put(c, at, len);
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct httpd_conn *c = hp->data;

    if (!c->in_value) {
        if (head_end_string(c) != 0) {
            return -1;
        }
        c->hdr[c->nhdr - 1].value = (uint32_t)c->head_len;
        c->in_value = 1;
    }
    return head_put(c, at, len);
}

static int on_headers_complete(http_parser *hp)
{
    struct httpd_conn *c = hp->data;
    httpd_t *d = c->d;

    if (c->nhdr == 0) {
        if (head_end_string(c) != 0) { /* the URL's end */
            return -1;
        }
    } else if (c->in_value) {
        c->hdr[c->nhdr - 1].value_len =
            (uint32_t)(c->head_len - c->hdr[c->nhdr - 1].value);
        if (head_end_string(c) != 0) {
            return -1;
        }
    } else {
        /* a header without a value */
        if (head_end_string(c) != 0) {
            return -1;
        }
        c->hdr[c->nhdr - 1].value = (uint32_t)(c->head_len - 1);
        c->hdr[c->nhdr - 1].value_len = 0;
    }
    c->head[strcspn(c->head, "?#")] = '\0'; /* the path alone */
    c->keep_alive = http_should_keep_alive(hp) != 0;
    c->head_only = hp->method == HTTP_HEAD;
    const char *expect = httpd_header(c, "Expect");
    c->expect = expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
                hp->http_minor >= 1;
    struct httpd_head head = {
        .method = http_method_str((enum http_method)hp->method),
        .path = c->head,
        .content_length = (hp->flags & F_CHUNKED) ||
                                  hp->content_length == ULLONG_MAX
                              ? -1
                          : hp->content_length > INT64_MAX
                              ? INT64_MAX
                              : (int64_t)hp->content_length,
    };
    c->req = d->h.on_head(d->h.arg, c, &head);
    if (!c->answered && c->expect && head.content_length != 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (out_put(c, cont, sizeof(cont) - 1) != 0 || out_flush(c) != 0) {
            c->broken = 1;
            conn_kick(c);
            return -1;
        }
        c->continued = 1;
    }
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    struct httpd_conn *c = hp->data;

    if (!c->answered) {
        c->d->h.on_body(c->req, at, len);
    }
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    http_parser_pause(hp, 1);
    return 0;
}

/* ---- reading ---- */

/* Answers a request the parser refused, and closes. */
static void conn_refuse(struct httpd_conn *c, unsigned status)
{
    char body[128];
    int n;

    if (c->in_message && c->answered) {
        /* Answered before its body went wrong: one answer is all a
         * request gets, so the connection just closes after it. */
        c->close_after = 1;
        if (!out_pending(c)) {
            conn_kick(c);
        }
        return;
    }
    if (c->in_message && c->req != NULL) {
        c->answered = 1;
        c->d->h.on_abort(c->req);
    }
    c->answered = 0; /* the answer below is httpd's own */
    c->waiting = 1;
    c->keep_alive = 0;
    n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", reason(status));
    httpd_answer(c, status, NULL, body, (size_t)n);
}

/* Makes room for need bytes in c's stash: 0, or -1 past the bounds. */
static int stash_reserve(struct httpd_conn *c, size_t need)
{
    httpd_t *d = c->d;

    if (c->in_cap >= need) {
        return 0;
    }
    if (d->stashed - c->in_cap + need > STASH_TOTAL) {
        return -1;
    }
    char *b = realloc(c->in, need);
    if (b == NULL) {
        return -1;
    }
    d->stashed = d->stashed - c->in_cap + need;
    c->in = b;
    c->in_cap = need;
    return 0;
}

static void stash_free(struct httpd_conn *c)
{
    c->d->stashed -= c->in_cap;
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
}

/* Parses data (not c->in): stops at the end of a request, whose rest is
 * kept in c->in until it is answered, or (no room for it) dropped, and
 * the connection closes after the answer. */
static void conn_feed(struct httpd_conn *c, const char *data, size_t len)
{
    httpd_t *d = c->d;

    while (len > 0 && !c->waiting && !c->lingering && !c->broken &&
           !c->close_after) {
        size_t n = http_parser_execute(&c->parser, &d->settings, data, len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);

        data += n;
        len -= n;
        if (c->broken) {
            return;
        }
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            c->in_message = 0;
            if (c->answered) {
                continue; /* answered early: on to the next */
            }
            if (len > 0) {
                if (stash_reserve(c, len > STASH_MAX ? len : STASH_MAX) ==
                    0) {
                    memcpy(c->in, data, len);
                    c->in_len = len;
                } else {
                    c->close_after = 1;
                }
            }
            c->waiting = 1;
            d->h.on_complete(c->req);
            return;
        }
        if (e != HPE_OK) {
            conn_refuse(c, c->status_err ? c->status_err
                           : e == HPE_HEADER_OVERFLOW ? 431
                                                      : 400);
            return;
        }
    }
}

/* What came behind the request just answered. */
static void conn_resume(struct httpd_conn *c)
{
    httpd_t *d = c->d;
    size_t len = c->in_len;

    if (len == 0) {
        return;
    }
    memcpy(d->rbuf, c->in, len);
    stash_free(c);
    conn_feed(c, d->rbuf, len);
}

/* The peer closed, or the connection failed, with no answer owed. */
static void conn_gone(struct httpd_conn *c)
{
    if (c->in_message && !c->answered && c->req != NULL) {
        c->answered = 1;
        c->d->h.on_abort(c->req);
    }
    conn_close(c);
}

static void conn_readable(struct httpd_conn *c)
{
    httpd_t *d = c->d;
    ssize_t n;

    if (c->lingering || (c->close_after && !c->waiting)) {
        /* Closing: what the client still sends is dropped. */
        n = recv(c->fd, d->rbuf, sizeof(d->rbuf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                       errno != EINTR)) {
            if (out_pending(c) && n == 0) {
                c->peer_eof = 1;
                conn_watch(c);
            } else {
                conn_close(c);
            }
        }
        return;
    }
    if (c->waiting) {
        /* Behind a request that waits: keep what comes, bounded. */
        if ((c->in_cap == 0 && stash_reserve(c, STASH_MAX) != 0) ||
            c->in_len == c->in_cap) {
            c->stash_full = 1; /* the rest waits in the socket */
            conn_watch(c);
            return;
        }
        n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
        } else if (n == 0) {
            c->peer_eof = 1;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK &&
                   errno != EINTR) {
            conn_close(c); /* dead: freed by its answer */
            return;
        }
        conn_watch(c);
        return;
    }
    n = recv(c->fd, d->rbuf, sizeof(d->rbuf), 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_gone(c);
        }
        return;
    }
    if (n == 0) {
        conn_gone(c);
        return;
    }
    c->last_ms = d->host.now_ms(d->host.io);
    conn_feed(c, d->rbuf, (size_t)n);
    if (!c->broken) {
        conn_watch(c);
    }
}

/* Output sent, and the connection to close: shut our side, and drop
 * what the client still sends until it closes (or LINGER_MS): closing
 * with unread input would reset the connection and could lose the
 * answer before the client read it. */
static void conn_linger(struct httpd_conn *c)
{
    httpd_t *d = c->d;

    if (c->peer_eof) {
        conn_close(c);
        return;
    }
    c->lingering = 1;
    stash_free(c);
    shutdown(c->fd, SHUT_WR);
    d->host.timer_set(d->host.io, c->idle, LINGER_MS);
    conn_watch(c);
}

static void conn_event(void *arg, unsigned events)
{
    struct httpd_conn *c = arg;

    if (events & CONNECTOR_WRITABLE && out_pending(c)) {
        if (out_flush(c) != 0) {
            c->out_off = c->out_len = 0;
            if (c->waiting) {
                conn_close(c);
            } else {
                conn_gone(c);
            }
            return;
        }
        if (!out_pending(c)) {
            if (c->close_after) {
                conn_linger(c);
                return;
            }
            if (!c->waiting && (c->in_len > 0 || c->peer_eof)) {
                conn_kick(c);
            }
        }
        conn_watch(c);
    }
    if (events & CONNECTOR_READABLE) {
        conn_readable(c);
    }
}

static void conn_watch(struct httpd_conn *c)
{
    unsigned events = 0;

    if (c->fd < 0) {
        return;
    }
    if (out_pending(c)) {
        events |= CONNECTOR_WRITABLE;
    }
    if (c->lingering ||
        (!c->peer_eof && (!c->waiting || !c->stash_full))) {
        events |= CONNECTOR_READABLE;
    }
    c->d->host.watch_set(c->d->host.io, c->watch, events);
}

static void kick_fired(void *arg)
{
    struct httpd_conn *c = arg;

    if (c->broken) {
        if (c->waiting) {
            conn_close(c);
        } else {
            conn_gone(c);
        }
        return;
    }
    if (c->waiting || c->dead || out_pending(c)) {
        return;
    }
    if (c->close_after) {
        conn_linger(c);
        return;
    }
    conn_resume(c);
    if (c->broken) {
        return; /* its kick is armed again */
    }
    if (!c->waiting && c->peer_eof && !out_pending(c)) {
        conn_gone(c);
        return;
    }
    conn_watch(c);
}

static void idle_fired(void *arg)
{
    struct httpd_conn *c = arg;
    httpd_t *d = c->d;
    uint64_t now = d->host.now_ms(d->host.io);
    int64_t idle = d->lim.idle_timeout_ms;

    if (c->lingering) {
        conn_close(c);
        return;
    }
    if (c->waiting || now - c->last_ms < (uint64_t)idle) {
        d->host.timer_set(d->host.io, c->idle,
                          c->waiting ? idle
                                     : idle - (int64_t)(now - c->last_ms));
        return;
    }
    conn_gone(c);
}

/* ---- connections ---- */

static void conn_free(struct httpd_conn *c)
{
    httpd_t *d = c->d;

    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        d->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    d->host.timer_free(d->host.io, c->idle);
    d->host.timer_free(d->host.io, c->kick);
    free(c->head);
    stash_free(c);
    free(c->out);
    free(c);
}

/* Closes the socket; the connection is freed now, or by its answer when
 * the handler owes one. */
static void conn_close(struct httpd_conn *c)
{
    httpd_t *d = c->d;

    if (c->fd >= 0) {
        d->host.watch_free(d->host.io, c->watch);
        c->watch = NULL;
        close(c->fd);
        c->fd = -1;
        d->nconns--;
    }
    if (c->waiting) {
        c->dead = 1;
        d->host.timer_set(d->host.io, c->kick, -1);
        d->host.timer_set(d->host.io, c->idle, -1);
        return;
    }
    conn_free(c);
}

static void conn_new(httpd_t *d, int fd)
{
    struct httpd_conn *c = calloc(1, sizeof(*c));
    int one = 1;

    if (c == NULL) {
        close(fd);
        return;
    }
    c->d = d;
    c->fd = fd;
    /* Every answer is one send: Nagle would only hold the one that
     * follows a 100 Continue. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->watch = d->host.watch_new(d->host.io, fd, conn_event, c);
    c->idle = d->host.timer_new(d->host.io, idle_fired, c);
    c->kick = d->host.timer_new(d->host.io, kick_fired, c);
    if (c->watch == NULL || c->idle == NULL || c->kick == NULL) {
        if (c->watch != NULL) {
            d->host.watch_free(d->host.io, c->watch);
        }
        if (c->idle != NULL) {
            d->host.timer_free(d->host.io, c->idle);
        }
        if (c->kick != NULL) {
            d->host.timer_free(d->host.io, c->kick);
        }
        close(fd);
        free(c);
        return;
    }
    c->next = d->conns;
    if (d->conns != NULL) {
        d->conns->prev = c;
    }
    d->conns = c;
    d->nconns++;
    c->last_ms = d->host.now_ms(d->host.io);
    d->host.timer_set(d->host.io, c->idle, d->lim.idle_timeout_ms);
    d->host.watch_set(d->host.io, c->watch, CONNECTOR_READABLE);
}

static void accept_ready(void *arg, unsigned events)
{
    httpd_t *d = arg;

    (void)events;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(d->listen_fd, NULL, NULL,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                /* Level-triggered: the listener stays ready; rest. */
                log_warn("source: accept: %s", strerror(errno));
                d->host.watch_set(d->host.io, d->listen_watch, 0);
                d->host.timer_set(d->host.io, d->accept_pause,
                                  ACCEPT_PAUSE_MS);
            }
            return;
        }
        if (d->nconns >= d->lim.max_connections) {
            close(fd);
            continue;
        }
        conn_new(d, fd);
    }
}

static void accept_resume(void *arg)
{
    httpd_t *d = arg;

    if (d->listen_fd >= 0) {
        d->host.watch_set(d->host.io, d->listen_watch, CONNECTOR_READABLE);
    }
}

/* ---- answers ---- */

void httpd_answer(httpd_conn_t *c, unsigned status, const char *extra,
                  const char *body, size_t len)
{
    httpd_t *d = c->d;
    char head[512];
    int n;

    if (c->dead) {
        c->waiting = 0;
        conn_free(c);
        return;
    }
    if (c->answered && !c->waiting) {
        return; /* answered before */
    }
    int early = !c->waiting; /* before the request was read */
    c->answered = 1;
    c->waiting = 0;
    c->stash_full = 0;
    if (early && c->in_message) {
        /* The rest of the body is read and dropped when it is small and
         * its size known; otherwise the connection closes after this.
         * (content_length: what is left of the body.) */
        uint64_t left = c->parser.content_length;
        int chunked = (c->parser.flags & F_CHUNKED) != 0;
        int body_left = chunked || (left != ULLONG_MAX && left > 0);
        if (body_left && (chunked || left > DRAIN_MAX ||
                          (c->expect && !c->continued))) {
            c->close_after = 1;
        }
    }
    if (!c->keep_alive || c->peer_eof) {
        c->close_after = 1;
    }
    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 %u %s\r\n%sContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\n%s%s\r\n",
                 status, reason(status), date_line(d), len,
                 extra != NULL ? extra : "",
                 c->close_after ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head) ||
        out_put(c, head, (size_t)n) != 0 ||
        (!c->head_only && out_put(c, body, len) != 0) ||
        out_flush(c) != 0) {
        c->broken = 1;
        conn_kick(c);
        return;
    }
    if (out_pending(c)) {
        conn_watch(c);
        return;
    }
    if (c->close_after || c->in_len > 0 || c->peer_eof) {
        conn_kick(c); /* closes, or parses what came behind */
    } else {
        conn_watch(c); /* reads again, if a full stash had stopped it */
    }
}

/* ---- the server ---- */

httpd_t *httpd_new(loop_t *loop, int listen_fd,
                   const struct httpd_limits *limits,
                   const struct httpd_handler *handler, struct sl_error *err)
{
    httpd_t *d = calloc(1, sizeof(*d));

    if (d == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    d->loop = loop;
    loop_fill_host(loop, &d->host);
    d->lim = *limits;
    d->h = *handler;
    d->listen_fd = listen_fd;
    /* accept4 in a loop until EAGAIN: the socket must not block. */
    int fl = fcntl(listen_fd, F_GETFL);
    if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        sl_error_set(err, "listening socket: %s", strerror(errno));
        free(d);
        return NULL;
    }
    http_parser_settings_init(&d->settings);
    d->settings.on_message_begin = on_message_begin;
    d->settings.on_url = on_url;
    d->settings.on_header_field = on_header_field;
    d->settings.on_header_value = on_header_value;
    d->settings.on_headers_complete = on_headers_complete;
    d->settings.on_body = on_body;
    d->settings.on_message_complete = on_message_complete;
    d->listen_watch =
        d->host.watch_new(d->host.io, listen_fd, accept_ready, d);
    d->accept_pause = d->host.timer_new(d->host.io, accept_resume, d);
    if (d->listen_watch == NULL || d->accept_pause == NULL ||
        d->host.watch_set(d->host.io, d->listen_watch, CONNECTOR_READABLE) !=
            0) {
        sl_error_set(err, "cannot watch the listening socket: %s",
                     strerror(errno));
        httpd_destroy(d);
        return NULL;
    }
    return d;
}

void httpd_quiesce(httpd_t *d)
{
    if (d == NULL || d->listen_fd < 0) {
        return;
    }
    if (d->listen_watch != NULL) {
        d->host.watch_free(d->host.io, d->listen_watch);
        d->listen_watch = NULL;
    }
    close(d->listen_fd);
    d->listen_fd = -1;
}

void httpd_destroy(httpd_t *d)
{
    if (d == NULL) {
        return;
    }
    httpd_quiesce(d);
    if (d->accept_pause != NULL) {
        d->host.timer_free(d->host.io, d->accept_pause);
    }
    while (d->conns != NULL) {
        struct httpd_conn *c = d->conns;
        if (c->fd >= 0) {
            d->host.watch_free(d->host.io, c->watch);
            close(c->fd);
            c->fd = -1;
        }
        if (c->in_message && !c->answered && !c->waiting &&
            c->req != NULL) {
            c->answered = 1;
            d->h.on_abort(c->req);
        }
        conn_free(c);
    }
    free(d);
}
