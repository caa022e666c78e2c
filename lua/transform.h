/* transform.h -- a lane's scripts: the pipeline transform, each sink's
 * transform and each sink's retry policy, in one sandboxed Lua state.
 *
 * Every script file gets its own environment (its globals do not clash
 * with another file's) over the shared sandbox, and the modules json,
 * log and sluice. Calls are synchronous on the lane's thread, each under
 * the instruction budget; an error ends that call only.
 *
 * Ownership: everything a call returns (outputs, requests) is owned by
 * the transform_t and valid until the next call of the same kind
 * (transform_run, transform_shape) or transform_destroy; callers copy
 * what they keep. */
#ifndef SLUICE_TRANSFORM_H
#define SLUICE_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "connector.h"
#include "script.h"

typedef struct transform transform_t;

/* One sink's scripts. */
struct transform_sink_spec {
    const char *name;      /* in errors' keys: sinks.NAME.transform */
    const char *transform; /* a path, or NULL */
    const char *retry;     /* a path, or NULL */
    /* Where the pipeline file names transform and retry (errors point
     * there as well as into the script); 0: not known. */
    int transform_line, transform_col, retry_line, retry_col;
};

/* What a lane's scripts are and what they are shown: all lua/ knows of
 * a pipeline. The worker fills it from its configuration
 * (worker/cfgtransform.c), a test or a tool by hand. */
struct transform_spec {
    const char *path; /* the pipeline file, where errors point */
    const char *dir;  /* its directory: require() looks here first */
    const char *transform; /* the pipeline transform's path, or NULL */
    int transform_line, transform_col;
    /* dedupe.key's lua:FUNCTION, a function of the pipeline transform's
     * file; NULL: dedupe does not ask Lua. */
    const char *dedupe_fn;
    int dedupe_line, dedupe_col;
    /* msg.key_base cuts hot-key shard suffixes after this (keyrule.h);
     * NULL: the default. */
    const char *shard_separator;
    /* The default policy's backoff, shown to retry scripts. */
    int64_t retry_backoff_ms, retry_backoff_max_ms;
    struct script_limits limits;
    const struct transform_sink_spec *sinks;
    size_t sink_count;
};

/* Where transform_check reports each error: at the pipeline file's
 * line:col (0: none) and YAML key ("" for none). */
typedef void transform_error_fn(void *arg, const char *file, int line,
                                int col, const char *key, const char *msg);

/* Loads every script spec names: the pipeline transform, and each
 * sink's transform and retry. spec is copied, strings and all: it may go
 * once this returns. Fails with "file:line:col: key: path:line:
 * message" (at the YAML key that named the script) on a syntax error,
 * and with "...: path: defines no function NAME" when the expected
 * function (transform, retry, dedupe_fn) is missing. Succeeds with no
 * scripts at all (then every call is a pass-through). NULL with err
 * filled. */
transform_t *transform_new(const struct transform_spec *spec,
                           struct sl_error *err);

/* Loads every script as transform_new does, for `validate`: each error
 * (all of them, not only the first) goes to report(arg, ...), which
 * runs at least once when this fails. 0 or -1. */
int transform_check(const struct transform_spec *spec,
                    transform_error_fn *report, void *arg);

/* Frees the state; transform_destroy(NULL) is a no-op. */
void transform_destroy(transform_t *t);

/* Whether any script is configured (else every call is a pass-through). */
int transform_active(const transform_t *t);
int transform_has_pipeline(const transform_t *t);
int transform_has_sink(const transform_t *t, size_t sink);
int transform_has_retry(const transform_t *t, size_t sink);

/* ---- the pipeline transform ---- */

struct transform_out {
    int unchanged;        /* 1: exactly the input message (zero copy) */
    const void *key;      /* NULL: no key */
    size_t key_len;
    const void *value;    /* NULL: no value (a tombstone) */
    size_t value_len;
    const struct sl_header *headers;
    size_t header_count;
    /* NUL-terminated; NULL: the input's. Each part of a split has one
     * (the script's, else the input's with #1, #2, ...). */
    const char *dedupe_key;
};

/* Runs the pipeline transform on in. Returns the number of messages out
 * (0: dropped; more than 1: split), or -1 with err holding the script's
 * error ("path:line: message"). Without a pipeline transform: 1, the
 * input unchanged. */
int transform_run(transform_t *t, const struct connector_msg *in,
                  struct sl_error *err);

/* Output i (< the count transform_run returned). */
const struct transform_out *transform_output(const transform_t *t,
                                             size_t i);

/* Output i as a sink sees it: in (the input transform_run was given)
 * with the output's key, value, headers and dedupe key. Valid as long
 * as both are. */
void transform_output_view(const transform_t *t, size_t i,
                           const struct connector_msg *in,
                           struct connector_msg *view);

/* Runs dedupe.key's function (lua:FUNCTION of the pipeline's script) on
 * in, read-only. Returns its key, written to out (cap bytes), or NULL:
 * none usable (nil, empty, too long, a NUL byte; err->msg "") or the
 * call failed (err says why). */
const char *transform_dedupe_key(transform_t *t,
                                 const struct connector_msg *in, char *out,
                                 size_t cap, struct sl_error *err);

/* ---- per-sink transforms ---- */

enum { TRANSFORM_SEND = 0, TRANSFORM_SKIP = 1 };

struct transform_request {
    const void *body; /* NULL: the message's value as it is */
    size_t body_len;
    const char *method; /* NULL: the sink's */
    const char *path;   /* NULL: none, the sink's URL as it is */
    const struct sl_header *headers; /* request headers to add */
    size_t header_count;
};

/* Runs sink's transform on output `output` of the last transform_run
 * (msg is that output's view, as the sink would send it: its JSON view
 * decoded by the pipeline transform is reused, not decoded again).
 * Returns TRANSFORM_SEND with req filled, TRANSFORM_SKIP (the sink
 * filtered the message out), or -1 with err. Without a transform for
 * sink: TRANSFORM_SEND with req all NULL. */
int transform_shape(transform_t *t, size_t sink, size_t output,
                    const struct connector_msg *msg,
                    struct transform_request *req, struct sl_error *err);

struct transform_shaped {
    int result; /* TRANSFORM_SEND, TRANSFORM_SKIP, or -1: err says why */
    struct transform_request req;
    struct sl_error err;
};

/* transform_shape for every sink at once, in one protected call (each
 * script still has its own instruction budget, and an error fails only
 * its own sink). Returns an array of one entry per sink, owned by t and
 * valid, with what it points to, until the next transform_shape* call;
 * a sink without a transform gets TRANSFORM_SEND with req all NULL. */
const struct transform_shaped *transform_shape_all(
    transform_t *t, size_t output, const struct connector_msg *msg);

/* ---- retry policies ---- */


struct transform_attempt {
    const char *sink;
    const struct connector_msg *msg;
    uint32_t attempt;   /* failed attempts so far, counting this one */
    int64_t elapsed_ms; /* since the first attempt started */
    const struct connector_result *result;
};


/* Asks sink's retry script about a failed attempt. 0 with d filled, or
 * -1 with err (a script error or a result it cannot read); the caller
 * then applies the default policy. */
int transform_retry(transform_t *t, size_t sink,
                    const struct transform_attempt *a,
                    struct sl_decision *d, struct sl_error *err);

/* Bytes the Lua state holds, for metrics and the benchmark. */
size_t transform_memory(const transform_t *t);

#endif
