/* cfg.h -- load and validate a pipeline YAML file.
 *
 * Every option is declared once in a table (struct opt_spec): the loader
 * parses and validates against it, and `sluice reference` prints the docs
 * from the same tables. All errors of a file are collected, each as
 * "file:line:col: key.path: message", before the caller gives up. */
#ifndef SLUICE_CFG_H
#define SLUICE_CFG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <yaml.h>

#include "common.h"
#include "keyrule.h"
#include "keysrc.h"

enum cfg_start { CFG_START_EARLIEST, CFG_START_LATEST };
enum cfg_ordering {
    CFG_ORDERING_KEY,
    CFG_ORDERING_PARTITION,
    CFG_ORDERING_NONE,
    CFG_ORDERING_KEY_BASE /* key without a hot-key shard suffix */
};

struct cfg_source {
    char *brokers; /* "embedded" or a bootstrap list */
    struct opt_list topics;
    char *group;
    int start; /* enum cfg_start */
    int64_t embedded_partitions;
    int64_t connect_timeout_ms; /* 0: keep trying */
    char *shard_separator; /* of the publisher's hot-key suffixes */
    struct opt_map properties; /* passed to librdkafka as they are */
    int properties_line, properties_col;
};

enum cfg_source_type {
    CFG_SOURCE_KAFKA, /* consume a topic as a consumer group */
    CFG_SOURCE_HTTP,  /* the publisher: requests become records */
};

/* source.type: http, the publisher (worker/publisher.c). */
struct cfg_http_source {
    char *listen;
    char *path;
    char *key;      /* json:PATH or header:NAME */
    char *shard_by; /* the same forms; NULL: none */
    char *shard_separator;
    struct opt_map hot_keys; /* key -> shards */
    int auto_shard;
    double auto_shard_share;
    int64_t auto_shard_shards, auto_shard_window, auto_shard_capacity,
        auto_shard_min_records, auto_shard_hold_ms;
    int64_t max_body;
    struct opt_list content_types;
    int64_t max_in_flight;
    int64_t max_in_flight_bytes;
    int64_t timeout_ms;
    int64_t drain_timeout_ms;
    int hot_keys_line, hot_keys_col;
};

struct cfg_delivery {
    int ordering; /* enum cfg_ordering */
    int64_t max_in_flight;
    int64_t max_in_flight_bytes;
    int64_t max_in_flight_per_partition;
    int64_t commit_interval_ms;
    int64_t drain_timeout_ms;
    int64_t retry_backoff_ms;
    int64_t retry_backoff_max_ms;
    int64_t retry_max_attempts; /* 0: no limit */
    int64_t retry_deadline_ms;  /* 0: no limit */
};

/* Where failures go (the `dlq:` section). */
struct cfg_dlq {
    char *topic;   /* default: <pipeline>.dlq */
    char *brokers; /* default: source.brokers */
    int64_t partitions; /* of a DLQ or retry topic sluice creates */
    int64_t max_replays;
    struct opt_map properties; /* librdkafka producer properties */
    int properties_line, properties_col;
};

struct cfg_tracing {
    char *otlp_endpoint; /* NULL: spans are not exported */
    double sample_ratio; /* of new traces */
    int new_traces;      /* a record without traceparent starts one */
    char *service_name;
    int64_t max_buffer_bytes, batch_size, batch_delay_ms, timeout_ms;
};

struct cfg_admin {
    char *listen; /* host:port of the admin server; NULL: off */
};

/* The outcome log (the `outcomes:` section; docs/outcomes.md). */
struct cfg_outcomes {
    char *path;    /* resolved against the pipeline's directory */
    char *topic;   /* or a Kafka topic; both NULL: no outcome log */
    char *brokers; /* of topic; default: the pipeline's Kafka */
    int bodies;    /* also record the body sent */
};

/* `mode:` how a run affects the world. */
enum cfg_mode {
    CFG_MODE_RUN,    /* deliveries, markers, DLQ writes, commits */
    CFG_MODE_SHADOW, /* its own group; nothing sent but to shadow_urls */
};

/* How a sink's answers are classed (sinks.*.retry_on, permanent_on,
 * done_on); a status listed nowhere is ok when 2xx, else permanent. */
enum cfg_answer {
    CFG_ANSWER_DEFAULT = 0,
    CFG_ANSWER_RETRY,
    CFG_ANSWER_PERMANENT,
    CFG_ANSWER_DONE,
    CFG_ANSWER_APPLIED, /* the sink already has it: delivered, marked */
};
#define CFG_STATUS_MAX 600

/* Where a message's dedupe key comes from (dedupe.key). */
enum cfg_dedupe_from {
    CFG_DEDUPE_HEADER = KEYSRC_HEADER, /* header:NAME, the last such one */
    CFG_DEDUPE_JSON = KEYSRC_JSON, /* json:PATH, a string or integer field */
    CFG_DEDUPE_LUA = KEYSRC_LUA,   /* lua:FUNCTION of the pipeline's script */
    CFG_DEDUPE_COORDINATES = KEYSRC_COORDINATES, /* topic-partition-offset */
};
/* What a message without a usable key gets (dedupe.missing). */
enum cfg_dedupe_missing { CFG_MISSING_COORDINATES, CFG_MISSING_DEAD_LETTER };

struct store;

/* Dedupe keys and "already handled" markers (the `dedupe:` section). */
struct cfg_dedupe {
    char *key;     /* as written: header:NAME, json:PATH, lua:F, coordinates */
    int from;      /* enum cfg_dedupe_from, parsed from key */
    const char *arg; /* key's NAME, PATH or F: points into key */
    int missing;   /* enum cfg_dedupe_missing */
    int store_choice; /* index into the store choices; 0: none */
    int64_t ttl_ms;
    const struct store *store; /* NULL: no markers */
    void *ctx;                 /* store->ctx_size bytes, options filled */
    int key_line, key_col;     /* where key is written; 0: the default */
};

struct cfg_lua {
    int64_t memory_limit;
    int64_t instruction_limit;
    int64_t time_limit_ms;
};

struct cfg_sink {
    char *name;
    char *type;
    int64_t max_in_flight;
    char *transform; /* resolved path, or NULL */
    char *retry;     /* resolved path, or NULL */
    /* Where the YAML names transform and retry: script errors point here
     * as well as into the script. 0 when not set. */
    int transform_line, transform_col, retry_line, retry_col;
    char *dlq_topic; /* default: the pipeline's dlq.topic */
    struct opt_list applied_on, retry_on, permanent_on, done_on;
    /* The lists above, by status (index 0: transport errors); each entry
     * an enum cfg_answer. */
    unsigned char answers[CFG_STATUS_MAX];
    int64_t breaker_failures;        /* consecutive; 0: off */
    int64_t breaker_failure_percent; /* in breaker_window; 0: off */
    int64_t breaker_min_requests;
    int64_t breaker_window_ms;
    int64_t breaker_cooldown_ms;
    int64_t park_after_ms; /* 0: off */
    char *shadow_url; /* in shadow mode, the connector's url; NULL: none */
    const struct connector *connector;
    void *ctx; /* connector->ctx_size bytes, options filled in */
    int line, col;
};

/* Where the YAML names one key of a string map (opt_map). */
struct cfg_keypos {
    const struct opt_map *map;
    size_t index;
    int line, col;
};

struct cfg {
    char *path;
    char *dir; /* the YAML file's directory: relative paths start here */
    char *pipeline;
    char *transform; /* the pipeline transform's resolved path, or NULL */
    int transform_line, transform_col; /* its YAML value; 0: not set */
    int mode; /* enum cfg_mode */
    struct cfg_lua lua;
    int source_type; /* enum cfg_source_type */
    struct cfg_source source;      /* source.type: kafka */
    struct cfg_http_source http;   /* source.type: http */
    int publish_sink;    /* source.type http: the kafka sink's index */
    int64_t http_partitions; /* its topic's, once the publisher knows */
    struct cfg_delivery delivery;
    int delivery_ordering_set; /* delivery.ordering was written */
    struct cfg_dlq dlq;
    struct cfg_dedupe dedupe;
    struct cfg_admin admin;
    struct cfg_tracing tracing;
    struct cfg_outcomes outcomes;
    struct cfg_sink *sinks;
    size_t sink_count;
    struct cfg_keypos *keypos; /* of every map key read, for errors */
    size_t keypos_count;
};

/* Limits of what cfg_load reads: a pipeline file's size (larger is
 * refused before parsing), the size of a script it names, the nesting
 * depth of any YAML cfg_parse_yaml reads, and entries of a list. */
#define CFG_FILE_MAX ((off_t)1 << 20)
#define CFG_SCRIPT_MAX ((off_t)1 << 20)
#define CFG_YAML_MAX_DEPTH 64
#define CFG_LIST_MAX 1024

/* Caller-supplied; error lines accumulate in text (truncated when full). */
struct cfg_errors {
    char text[16384];
    size_t len;
    int count;
};

/* Loads path into a new cfg. Returns NULL when the file has any error,
 * with every error in errs. The result is freed with cfg_free(). */
struct cfg *cfg_load(const char *path, struct cfg_errors *errs);

/* Parses one YAML document from fp, or else from text (len bytes),
 * into doc (freed with yaml_document_delete). On invalid YAML adds
 * "file:line:col: invalid YAML: ..." to errs and returns -1; so it does
 * for a NUL byte or invalid UTF-8, nesting deeper than
 * CFG_YAML_MAX_DEPTH, a second document, and a key repeated in a
 * mapping (at the repeat, naming the first's line). */
int cfg_parse_yaml(const char *file, FILE *fp, const char *text, size_t len,
                   yaml_document_t *doc, struct cfg_errors *errs);

/* Adds one error line ("file:line:col: key: message", or "file: key:
 * message" when line is 0: no position). Control characters are escaped
 * (\n, \x01) so that every error stays one line. */
void cfg_errors_add(struct cfg_errors *errs, const char *file, int line,
                    int col, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Frees cfg and every value in it; cfg_free(NULL) is a no-op. */
void cfg_free(struct cfg *cfg);

/* Expands ${VAR} and ${VAR:-default} (and $$ for a literal $) in text.
 * Returns a new string the caller frees, or NULL with err filled naming
 * the unset variable or the malformed reference. */
char *cfg_expand_env(const char *text, struct sl_error *err);

/* The option tables, for docs. */
extern const struct opt_spec cfg_source_options[];
extern const struct opt_spec cfg_source_type_options[];
extern const struct opt_spec cfg_http_source_options[];
extern const struct opt_spec cfg_delivery_options[];
extern const struct opt_spec cfg_sink_options[];
extern const struct opt_spec cfg_root_options[];
extern const struct opt_spec cfg_lua_options[];
extern const struct opt_spec cfg_dlq_options[];
extern const struct opt_spec cfg_dedupe_options[];
extern const struct opt_spec cfg_admin_options[];
extern const struct opt_spec cfg_tracing_options[];
extern const struct opt_spec cfg_outcomes_options[];

/* Turns cfg into a shadow run's (`mode: shadow`, `run --shadow`): the
 * consumer group gets CFG_SHADOW_GROUP_SUFFIX, and a sink with a
 * shadow_url gets it as its connector's `url`. 0, or -1 with err. */
#define CFG_SHADOW_GROUP_SUFFIX "-shadow"
int cfg_make_shadow(struct cfg *cfg, struct sl_error *err);

/* The publisher's key rule from cfg->http (keyrule.h); statics: room for
 * the hot keys, or NULL. Without partition_of, hot_keys.auto is left off
 * (load-time checks). NULL with err. */
keyrule_t *cfg_http_keyrule(const struct cfg *cfg,
                            struct keyrule_static *statics,
                            keyrule_partition_fn *partition_of, void *arg,
                            struct sl_error *err);

/* Sets *line and *col to where the YAML names key i of map (a map in
 * cfg) and returns 0; -1 when not known. */
int cfg_map_key_position(const struct cfg *cfg, const struct opt_map *map,
                         size_t i, int *line, int *col);

/* The name in names (n of them) closest to key by edit distance, when
 * close enough to be a likely typo (the rule of the "did you mean"
 * hints for option names); else NULL. */
const char *cfg_closest(const char *key, const char *const *names, size_t n);

/* The DLQ topic of sink i (its own, else the pipeline's). */
const char *cfg_sink_dlq_topic(const struct cfg *cfg, size_t i);

/* The connectors a sink's `type` may name, NULL-terminated. */
extern const struct connector *const cfg_connectors[];

#endif
