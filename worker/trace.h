/* trace.h -- W3C trace context, spans, and their OTLP/HTTP JSON export.
 *
 * The lane makes spans of what it does with a record (worker/engine.c);
 * this module parses and formats `traceparent`, draws ids, and exports
 * finished spans in batches on the lane's loop. Nothing here blocks:
 * spans wait in a buffer with a byte bound, one export request runs at
 * a time, and what does not fit or fails to export is dropped and
 * counted. Everything runs on the loop thread. */
#ifndef SLUICE_TRACE_H
#define SLUICE_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "connector.h"

struct trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags; /* TRACE_SAMPLED, and what else a producer set */
};

#define TRACE_SAMPLED 0x01
#define TRACEPARENT_LEN 55

/* Parses a traceparent header value as the W3C spec says: version 00 is
 * exactly "00-<32 hex>-<16 hex>-<2 hex>"; a later version (not ff) is
 * read as 00 when its first 55 bytes parse and byte 55, if any, is '-'.
 * Lowercase hex only; an all-zero trace or span id is invalid. 0 with
 * *out filled, or -1. */
int trace_parse(const void *value, size_t len, struct trace_ctx *out);
/* "00-<trace id>-<span id>-<flags>" and a NUL. */
void trace_format(const struct trace_ctx *c, char out[TRACEPARENT_LEN + 1]);
/* The trace id in lowercase hex and a NUL, for logs and scripts. */
void trace_id_hex(const struct trace_ctx *c, char out[33]);

enum trace_kind {
    TRACE_INTERNAL = 1,
    TRACE_SERVER = 2,
    TRACE_CLIENT = 3,
    TRACE_PRODUCER = 4,
    TRACE_CONSUMER = 5
};

enum trace_attr_type { TRACE_STR, TRACE_INT };

struct trace_attr {
    const char *key;
    enum trace_attr_type type;
    const char *str; /* TRACE_STR: any bytes (escaped, bad UTF-8 replaced) */
    size_t str_len;
    int64_t i;
};

struct trace_span {
    struct trace_ctx ctx;          /* the span's trace, own id and flags */
    const uint8_t *parent_span_id; /* 8 bytes; NULL: a root */
    const char *name;
    enum trace_kind kind;
    uint64_t start_unix_ns, end_unix_ns;
    int error;                  /* status ERROR; else UNSET */
    const char *status_message; /* NULL: none */
    const struct trace_attr *attrs;
    size_t attr_count;
};

typedef struct tracer tracer_t;

struct tracer_options {
    const char *endpoint;     /* the collector's URL, .../v1/traces */
    double sample_ratio;      /* of new traces, 0..1 */
    const char *service_name; /* resource attribute service.name */
    const char *pipeline;     /* resource attribute sluice.pipeline */
    size_t max_buffer_bytes;  /* encoded spans waiting, at most */
    size_t max_batch_spans;   /* spans of one export request, at most */
    int64_t batch_delay_ms;   /* a span waits this long for its batch */
    int64_t timeout_ms;       /* of one export request */
};

/* host: the loop's services (http_start/http_stop, timers, now_ms), as
 * loop_fill_host fills them; it must outlive the tracer. The options'
 * strings are copied. NULL with err filled on failure. */
tracer_t *tracer_new(const struct tracer_options *o,
                     const struct connector_host *host, struct sl_error *err);

/* A new span's context in *out: a child of parent (its trace id and
 * flags, a new span id) or, parent NULL, the root of a new trace whose
 * sampled flag is drawn with sample_ratio. Ids are never all zero. */
void tracer_start(tracer_t *t, const struct trace_ctx *parent,
                  struct trace_ctx *out);

/* A finished span, when sampled, is encoded at once into the buffer
 * (s and what it points to may go after the call); one that does not
 * fit is dropped and counted. Never does I/O: exports start from a
 * timer. An unsampled span is ignored. */
void tracer_emit(tracer_t *t, const struct trace_span *s);

struct tracer_stats {
    uint64_t emitted;         /* sampled spans taken into the buffer */
    uint64_t exported;        /* in batches the collector took (2xx) */
    uint64_t dropped;         /* over the bound, or in a failed export */
    uint64_t export_failures; /* export requests that failed */
};
void tracer_get_stats(const tracer_t *t, struct tracer_stats *out);

/* Starts exporting what is buffered now (after the export under way,
 * if one is). */
void tracer_flush(tracer_t *t);
/* 1 when nothing is buffered and no export runs. */
int tracer_idle(const tracer_t *t);
/* Stops an export under way (its spans count as dropped) and frees t.
 * NULL is a no-op. */
void tracer_free(tracer_t *t);

#endif
