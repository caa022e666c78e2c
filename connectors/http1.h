/* http1.h -- a lean HTTP/1.1 keep-alive client for plain http:// sinks.
 *
 * One pool per sink: up to max_conns connections to one host:port, each
 * carrying one request at a time, driven by the lane's loop through the
 * connector_host. Responses are parsed by http-parser (Content-Length,
 * chunked, close-delimited). Why not libcurl here: see ARCHITECTURE.md. */
#ifndef SLUICE_HTTP1_H
#define SLUICE_HTTP1_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "connector.h"

typedef struct http1_pool http1_pool_t;

#define HTTP1_BODY_KEEP 200

struct http1_result {
    int error;              /* 0 when a whole response arrived, else errno */
    int status;             /* HTTP status when error == 0 */
    int64_t retry_after_ms; /* -1 when absent */
    size_t body_len;        /* bytes kept of the body, at most BODY_KEEP */
    char body[HTTP1_BODY_KEEP + 1];
};

struct http1_request {
    /* Set by the caller; the bytes must stay valid until done() runs. */
    struct iovec iov[3];
    int iovcnt;
    void (*done)(struct http1_request *req, const struct http1_result *res);
    /* Private to http1.c. */
    int resent;
};

/* Returns a pool for host:port or NULL with err filled. host is resolved
 * (getaddrinfo) when a connection opens; plain IPs cost nothing. */
http1_pool_t *http1_pool_new(const struct connector_host *host,
                             const char *hostname, const char *port,
                             int max_conns, int64_t connect_timeout_ms,
                             int64_t timeout_ms, struct sl_error *err);

/* Starts req on an idle or new connection. Returns 0 (done() follows,
 * never from inside this call), or a positive errno when it could not
 * start (no connection slot, socket or connect failure). */
int http1_send(http1_pool_t *pool, struct http1_request *req);

/* Closes every connection; requests under way end without done().
 * http1_pool_destroy(NULL) is a no-op. */
void http1_pool_destroy(http1_pool_t *pool);

#endif
