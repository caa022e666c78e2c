/* httpd.h -- an HTTP/1.1 server on the lane's loop, for the publisher.
 *
 * Keep-alive connections, parsed by http-parser, served by the thread
 * that runs the loop: a request is read, handed to its handler, and
 * answered whenever the handler has its answer (later, from a delivery
 * report), with no thread between the socket and the engine. One
 * request per connection is under way at a time; what a client
 * pipelines behind it waits, bounded, in the connection. Why sluice has
 * its own rather than libmicrohttpd's: docs/ARCHITECTURE.md, "The
 * publisher's speed". */
#ifndef SLUICE_HTTPD_H
#define SLUICE_HTTPD_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "loop.h"

typedef struct httpd httpd_t;
typedef struct httpd_conn httpd_conn_t;

struct httpd_limits {
    size_t max_connections;  /* past it, a new connection is closed */
    size_t max_head;         /* request line and headers, bytes: 431 */
    int64_t idle_timeout_ms; /* no byte in or out for this long: closed */
};

/* A request's head. Strings are valid until the request is answered. */
struct httpd_head {
    const char *method;
    const char *path; /* without the query */
    int64_t content_length; /* -1: none announced (chunked, or no body) */
};

/* The handler of every request. Each request gets on_head; then, unless
 * it was answered, on_body for each piece of its body and on_complete
 * once it is read, or on_abort when its connection went away first.
 * After on_complete the handler must answer it exactly once (now or
 * later) with httpd_answer; before that it may answer at any time, and
 * the rest of the request is then read and dropped. */
struct httpd_handler {
    void *arg;
    /* Returns the request's state for the other calls (may be NULL). */
    void *(*on_head)(void *arg, httpd_conn_t *conn,
                     const struct httpd_head *head);
    void (*on_body)(void *req, const char *data, size_t len);
    void (*on_complete)(void *req);
    void (*on_abort)(void *req);
};

/* Serves on listen_fd (taken: closed by httpd_destroy or httpd_quiesce).
 * Returns NULL with err filled. */
httpd_t *httpd_new(loop_t *loop, int listen_fd,
                   const struct httpd_limits *limits,
                   const struct httpd_handler *handler, struct sl_error *err);
/* Stops accepting: the listening socket is closed; the connections stay. */
void httpd_quiesce(httpd_t *httpd);
/* Closes every connection. Requests still waiting for an answer are
 * dropped (the handler must not answer them after this). NULL: no-op. */
void httpd_destroy(httpd_t *httpd);

/* The value of a request header (name: any case), or NULL; valid until
 * the request is answered. */
const char *httpd_header(const httpd_conn_t *conn, const char *name);
/* The request's headers, at most cap, into out (strings as above). */
size_t httpd_headers(const httpd_conn_t *conn, struct sl_header *out,
                     size_t cap);

/* Answers the connection's request: status, extra header lines (each
 * ending in CRLF, or NULL), a JSON body. The connection may be gone (the
 * answer is then dropped); conn is not to be used after this call. */
void httpd_answer(httpd_conn_t *conn, unsigned status, const char *extra,
                  const char *body, size_t len);

#endif
