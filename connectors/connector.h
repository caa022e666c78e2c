/* connector.h -- the one interface between the sluice runtime and a sink.
 *
 * A connector is a table of callbacks plus a table of its options. The
 * runtime parses and validates a sink's YAML block against the options
 * table, writes the values into the connector's context struct, and owns
 * every policy decision: a connector only starts a request and classifies
 * its outcome (ok, retry, reject); it never sleeps, loops or retries.
 * Connectors include nothing of the runtime but this header (and the
 * common types it includes). */
#ifndef SLUICE_CONNECTOR_H
#define SLUICE_CONNECTOR_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* ---- Messages, as a connector sees them ---- */

/* Valid only during the send() call: a connector copies what it keeps. */
struct connector_msg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* -1 when the record has none */
    const void *key;      /* NULL when the record has no key */
    size_t key_len;
    const void *value;
    size_t value_len;
    const char *dedupe_key; /* NUL-terminated, never NULL */
    const struct sl_header *headers;
    size_t header_count;
    /* Set by the sink's transform; NULL/0 when it set none. */
    const char *method; /* replaces the sink's method */
    const char *path;   /* appended to the sink's URL */
    const struct sl_header *request_headers; /* added; a name */
    size_t request_header_count; /* also configured replaces that one */
    /* W3C trace context: the trace id (32 hex digits) for scripts, and
     * the traceparent/tracestate a request carries; NULL: none. */
    const char *trace_id;
    const char *traceparent;
    const void *tracestate;
    size_t tracestate_len;
};

enum connector_status {
    CONNECTOR_OK,     /* delivered */
    CONNECTOR_RETRY,  /* transient: worth another attempt */
    CONNECTOR_REJECT, /* permanent: another attempt will fail the same way */
};

#define CONNECTOR_BODY_MAX 1024 /* response body kept for retry policies */

struct connector_result {
    enum connector_status status;
    int http_status;        /* 0 when no response arrived */
    int64_t retry_after_ms; /* from Retry-After; -1 when absent */
    char error[256];        /* short reason; may hold a truncated body */
    /* For retry policies, when a failed response arrived (NULL/0
     * otherwise); valid only during complete(). Header names are
     * lowercase; the body is at most CONNECTOR_BODY_MAX bytes. */
    const struct sl_header *response_headers;
    size_t response_header_count;
    const char *body;
    size_t body_len;
};

/* ---- What the runtime offers a connector ---- */

/* Embedded in a connector's request state; `done` runs on the loop thread
 * when the transfer ends, with the CURLcode of the transfer. */
struct connector_transfer {
    void (*done)(struct connector_transfer *transfer, int curl_code);
};

enum { CONNECTOR_READABLE = 1, CONNECTOR_WRITABLE = 2 };

struct connector_host {
    const char *sink_name;
    int max_in_flight; /* the runtime never exceeds it */
    /* Adds a configured CURL easy handle to the lane's multi handle. The
     * handle stays owned by the connector. Returns 0 or -1. */
    int (*http_start)(void *io, void *easy, struct connector_transfer *t);
    /* Removes a started handle before its end; its done() never runs. */
    void (*http_stop)(void *io, void *easy);
    /* Watches fd on the lane's loop (level-triggered); fn gets
     * CONNECTOR_READABLE/WRITABLE (errors and hang-ups as both). A new
     * watch waits for nothing until watch_set. watch_free before close(fd);
     * fn never runs after it. */
    void *(*watch_new)(void *io, int fd,
                       void (*fn)(void *arg, unsigned events), void *arg);
    int (*watch_set)(void *io, void *watch, unsigned events);
    void (*watch_free)(void *io, void *watch);
    /* One-shot timers on the lane's loop: timer_set re-arms, a negative
     * delay stops; fn never runs after timer_free. */
    void *(*timer_new)(void *io, void (*fn)(void *arg), void *arg);
    void (*timer_set)(void *io, void *timer, int64_t delay_ms);
    void (*timer_free)(void *io, void *timer);
    uint64_t (*now_ms)(void *io); /* monotonic, per loop iteration */
    void *io;
    /* Reports the outcome of a send() that returned 0. Called exactly once
     * per started send, on the loop thread, never from inside send(). */
    void (*complete)(void *engine, void *token,
                     const struct connector_result *result);
    void *engine;
};

/* What a trace says about a sink's requests: OpenTelemetry's HTTP client
 * attributes. Never a secret: no userinfo, path or query. */
struct connector_about {
    char method[16];          /* the default; a transform may change it */
    char server_address[256]; /* host name or address; "" when unknown */
    int server_port;          /* 0 when unknown */
};

struct connector {
    const char *name;
    const char *doc;
    const struct opt_spec *options;
    size_t ctx_size; /* zeroed, filled from options before open() */
    /* The sink's max_in_flight when its file says none; 0: the
     * runtime's (64, for a remote service's sake). A producer batches
     * records into few requests, so its bound is its own queue's. */
    int max_in_flight_default;
    /* Optional: checks the option values together when the file is
     * loaded (sluice validate too), without touching the network.
     * Returns 0, or -1 with err filled and *option naming the culprit. */
    int (*check)(const void *ctx, const char **option, struct sl_error *err);
    /* Prepares the sink. host stays valid until close(). 0 or -1. */
    int (*open)(void *ctx, const struct connector_host *host,
                struct sl_error *err);
    /* Starts delivering msg. Returns 0 when started (the outcome comes
     * through host->complete with token), or -1 with *result filled when
     * it failed before starting (no complete() call follows). */
    int (*send)(void *ctx, const struct connector_msg *msg, void *token,
                struct connector_result *result);
    /* Releases what open() made, stopping transfers still under way
     * (their complete() never runs). Does not free option values. */
    void (*close)(void *ctx);
    /* Optional: fills *out for traces (called once, after open). */
    void (*describe)(const void *ctx, struct connector_about *out);
    /* Optional: writes the request-target (path and query, never the
     * scheme, host or userinfo) a send() of msg uses, NUL-terminated and
     * cut to cap, for the outcome log; returns its length. After open. */
    size_t (*target)(const void *ctx, const struct connector_msg *msg,
                     char *out, size_t cap);
};

extern const struct connector http_connector;
extern const struct connector kafka_connector;

#endif
