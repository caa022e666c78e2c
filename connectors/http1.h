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
#include <time.h>

#include "connector.h"

typedef struct http1_pool http1_pool_t;

/* What is kept of a response that failed (status not 2xx): up to
 * HTTP1_HEADERS_MAX headers whose names (lowercased) and values fit in
 * HTTP1_HEADER_BYTES, more dropped silently, and the body's first
 * CONNECTOR_BODY_MAX bytes. Fixed size, so collecting never allocates;
 * the curl transport of http.c fills one too. */
#define HTTP1_HEADERS_MAX 32
#define HTTP1_HEADER_BYTES 4096

struct http1_response {
    size_t header_count;
    size_t body_len;
    /* Private: the header being read, as a name then a value in buf. The
     * counters come first: a 2xx touches nothing else. */
    size_t used, start, value_at;
    int in_field, in_value, dropping;
    struct sl_header headers[HTTP1_HEADERS_MAX];
    char buf[HTTP1_HEADER_BYTES];
    char body[CONNECTOR_BODY_MAX + 1]; /* NUL-terminated by _end */
};

void http1_response_reset(struct http1_response *r);
/* A header's name and value, each possibly in several pieces; a name
 * after a value starts the next header. */
void http1_response_field(struct http1_response *r, const char *at,
                          size_t len);
void http1_response_value(struct http1_response *r, const char *at,
                          size_t len);
void http1_response_body(struct http1_response *r, const char *at,
                         size_t len);
/* Stores the header being read; call once the headers (or trailers) end. */
void http1_response_end(struct http1_response *r);

/* A Retry-After value (RFC 9110: delay-seconds or an HTTP-date, read by
 * curl_getdate, against now) in ms from now; -1 when it is neither. A
 * date in the past is 0. */
int64_t http1_retry_after_ms(const char *value, size_t len, time_t now);
/* The Retry-After among r's headers (after _end), -1 when none is read. */
int64_t http1_response_retry_after(const struct http1_response *r,
                                   time_t now);

struct http1_result {
    int error;              /* 0 when a whole response arrived, else errno */
    /* When error != 0: what failed, e.g. "cannot resolve HOST: reason",
     * "connect timeout: ...", "response timeout: ...", "HOST:PORT:
     * Connection reset by peer". Valid during done() only. */
    const char *message;
    int status;             /* HTTP status when error == 0 */
    int64_t retry_after_ms; /* a failed response's; -1 when absent */
    /* A failed response's headers and body (NULL/0 on 2xx and errors).
     * They live in the connection: valid during done() only. */
    const struct sl_header *headers;
    size_t header_count;
    const char *body;
    size_t body_len;
};

struct http1_request {
    /* Set by the caller; the bytes must stay valid until done() runs. */
    struct iovec iov[3];
    int iovcnt;
    int head; /* a HEAD request: its response has no body */
    void (*done)(struct http1_request *req, const struct http1_result *res);
    /* Private to http1.c. */
    int resent;
};

/* Returns a pool for host:port or NULL with err filled. A host name is
 * resolved off the loop (resolve.h) when a connection must open and the
 * last answer is older than RESOLVE_TTL_MS or failed to connect; plain
 * IPs cost nothing. A request waits for the lookup at most
 * connect_timeout_ms. */
http1_pool_t *http1_pool_new(const struct connector_host *host,
                             const char *hostname, const char *port,
                             int max_conns, int64_t connect_timeout_ms,
                             int64_t timeout_ms, struct sl_error *err);

/* Starts req on an idle or new connection. Returns 0 (done() follows,
 * never from inside this call; every failure to resolve or connect comes
 * that way), or EAGAIN when every connection is busy. */
int http1_send(http1_pool_t *pool, struct http1_request *req);

/* Closes every connection; requests under way end without done().
 * http1_pool_destroy(NULL) is a no-op. */
void http1_pool_destroy(http1_pool_t *pool);

/* For fuzzing: parses data as the response to req, read in nchunks pieces
 * of chunks[i] bytes each, then EOF, exactly as a connection parses what
 * it reads, and calls req->done once with what it would report (no socket,
 * no pool; req->iov is not sent). Returns 0, or ENOMEM and done() does not
 * run. */
int http1_parse_response(struct http1_request *req, const char *data,
                         const size_t *chunks, size_t nchunks);

#endif
