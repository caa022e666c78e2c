/* cfg.c -- pipeline YAML → struct cfg, validated against option tables.
 *
 * libyaml loads the document with a mark (line, column) on every node;
 * the walker checks each mapping against its table, so an unknown key,
 * a value of the wrong type or a missing required key is reported with
 * where it is and what was expected. Scalars get ${ENV} expansion first.
 * Values that may hold secrets are never echoed in errors. */
#include "cfg.h"
#include "connector.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "keyrule.h"
#include "store.h"
#include "units.h"

static const char *const start_choices[] = {"earliest", "latest", NULL};
static const char *const ordering_choices[] = {"key", "partition", "none",
                                               "key_base", NULL};

const struct opt_spec cfg_source_options[] = {
    {.name = "brokers", .type = OPT_STRING, .flags = OPT_REQUIRED,
     .offset = offsetof(struct cfg_source, brokers),
     .doc = "Kafka bootstrap servers (`host:port,...`), or `embedded` for "
            "an in-process, in-memory Kafka cluster (librdkafka's mock "
            "cluster) that is for development only: nothing survives the "
            "process."},
    {.name = "topics", .type = OPT_STRING_LIST, .flags = OPT_REQUIRED,
     .offset = offsetof(struct cfg_source, topics),
     .doc = "Topics to consume, as a list or one name."},
    {.name = "group", .type = OPT_STRING,
     .offset = offsetof(struct cfg_source, group),
     .doc = "Consumer group id. Default: the pipeline name. Every worker "
            "of a pipeline uses the same group and shares its partitions."},
    {.name = "start", .type = OPT_ENUM, .def = "earliest",
     .offset = offsetof(struct cfg_source, start), .choices = start_choices,
     .doc = "Where a group without committed offsets starts "
            "(`auto.offset.reset`)."},
    {.name = "embedded_partitions", .type = OPT_INT, .def = "8",
     .offset = offsetof(struct cfg_source, embedded_partitions),
     .min = 1, .max = 1024,
     .doc = "Partitions of each topic created on the embedded cluster."},
    {.name = "connect_timeout", .type = OPT_DURATION, .def = "60s",
     .offset = offsetof(struct cfg_source, connect_timeout_ms),
     .min = 0, .max = 86400000,
     .doc = "How long sluice tries at start-up to reach the brokers and "
            "find every topic before it gives up and exits with status 1, "
            "naming what failed. `0` keeps trying for ever. Later outages "
            "never stop it: it waits for the brokers to come back."},
    {.name = "shard_separator", .type = OPT_STRING, .def = "~",
     .offset = offsetof(struct cfg_source, shard_separator),
     .doc = "What the publisher's `source.shard_separator` is, for "
            "`msg.key_base` and `delivery.ordering: key_base`: a record "
            "key ending in it and 1 to 3 digits has a hot-key shard "
            "suffix (docs/hot-keys.md)."},
    {.name = "properties", .type = OPT_STRING_MAP,
     .offset = offsetof(struct cfg_source, properties),
     .doc = "librdkafka consumer properties passed through as they are "
            "(e.g. `session.timeout.ms`, `security.protocol`); they "
            "override sluice's defaults."},
    {0},
};

static const char *const source_type_choices[] = {"kafka", "http", NULL};

const struct opt_spec cfg_source_type_options[] = {
    {.name = "type", .type = OPT_ENUM, .def = "kafka",
     .offset = offsetof(struct cfg, source_type),
     .choices = source_type_choices,
     .doc = "`kafka` consumes topics as a consumer group. `http` is the "
            "publisher (docs/migration.md): each request to `listen` "
            "becomes a record produced by the pipeline's `kafka` sink, "
            "and is answered 202 once Kafka acknowledged it; its other "
            "sinks (e.g. the legacy endpoint) get the same request."},
    {0},
};

const struct opt_spec cfg_http_source_options[] = {
    {.name = "listen", .type = OPT_STRING, .flags = OPT_REQUIRED,
     .offset = offsetof(struct cfg_http_source, listen),
     .doc = "Where the publisher listens, `host:port` (`[v6]:port`; port "
            "0 picks a free one, which the log says)."},
    {.name = "path", .type = OPT_STRING, .def = "/",
     .offset = offsetof(struct cfg_http_source, path),
     .doc = "The endpoint: `POST` there publishes; any other path is 404, "
            "any other method 405."},
    {.name = "key", .type = OPT_STRING, .flags = OPT_REQUIRED,
     .offset = offsetof(struct cfg_http_source, key),
     .doc = "The record key: `json:PATH` (a string or integer field of the "
            "JSON body, e.g. `json:tenant_id`) or `header:NAME`. A request "
            "without it is answered 400. See docs/hot-keys.md."},
    {.name = "shard_by", .type = OPT_STRING,
     .offset = offsetof(struct cfg_http_source, shard_by),
     .doc = "For hot keys: the field (`json:PATH` or `header:NAME`, e.g. "
            "`json:order_id`) whose hash picks a hot key's shard, so each "
            "entity's records keep one partition and their order."},
    {.name = "shard_separator", .type = OPT_STRING, .def = "~",
     .offset = offsetof(struct cfg_http_source, shard_separator),
     .doc = "Between a hot key and its shard number (`tenant-42~3`). A "
            "key that holds it is refused (400) while hot keys are on, so "
            "that `msg.key_base` can always take the suffix off."},
    {.name = "hot_keys", .type = OPT_STRING_MAP,
     .offset = offsetof(struct cfg_http_source, hot_keys),
     .doc = "Keys sharded always, with their shard count (2 to 256): "
            "`{tenant-42: 8}`."},
    {.name = "auto_shard", .type = OPT_BOOL, .def = "false",
     .offset = offsetof(struct cfg_http_source, auto_shard),
     .doc = "Find hot keys by themselves: a key taking more than "
            "`auto_shard_share` of its partition's recent records (a "
            "bounded top-k sketch, not a map of every key) is sharded "
            "into `auto_shard_shards`."},
    {.name = "auto_shard_share", .type = OPT_RATIO, .def = "20%",
     .offset = offsetof(struct cfg_http_source, auto_shard_share),
     .doc = "The share of its partition's recent records that makes a "
            "key hot."},
    {.name = "auto_shard_shards", .type = OPT_INT, .def = "8",
     .offset = offsetof(struct cfg_http_source, auto_shard_shards),
     .min = 2, .max = 256,
     .doc = "Shards of a key found hot."},
    {.name = "auto_shard_window", .type = OPT_INT, .def = "10000",
     .offset = offsetof(struct cfg_http_source, auto_shard_window),
     .min = 100, .max = 1000000000,
     .doc = "Recent means: counts are halved every this many records."},
    {.name = "auto_shard_capacity", .type = OPT_INT, .def = "64",
     .offset = offsetof(struct cfg_http_source, auto_shard_capacity),
     .min = 1, .max = 4096,
     .doc = "Keys the sketch follows (and keys sharded at once) at most."},
    {.name = "auto_shard_min_records", .type = OPT_INT, .def = "1000",
     .offset = offsetof(struct cfg_http_source, auto_shard_min_records),
     .min = 1, .max = 1000000000,
     .doc = "Records in the window before any key is found hot, so that "
            "a cold start does not shard everything."},
    {.name = "auto_shard_hold", .type = OPT_DURATION, .def = "10m",
     .offset = offsetof(struct cfg_http_source, auto_shard_hold_ms),
     .min = 1, .max = 86400000,
     .doc = "A key found hot stays sharded this long after it was last "
            "hot, so that it does not flap between partitions."},
    {.name = "max_body", .type = OPT_SIZE, .def = "1MiB",
     .offset = offsetof(struct cfg_http_source, max_body),
     .min = 1, .max = (int64_t)64 << 20,
     .doc = "A larger request body is answered 413."},
    {.name = "content_types", .type = OPT_STRING_LIST,
     .def = "application/json",
     .offset = offsetof(struct cfg_http_source, content_types),
     .doc = "Media types a request may carry (parameters such as "
            "`charset` aside); others are answered 415."},
    {.name = "max_in_flight", .type = OPT_INT, .def = "10000",
     .offset = offsetof(struct cfg_http_source, max_in_flight),
     .min = 1, .max = 1000000,
     .doc = "Requests accepted but not yet answered. Past it a request is "
            "answered 429 with Retry-After at once: the publisher never "
            "queues without limit."},
    {.name = "max_in_flight_bytes", .type = OPT_SIZE, .def = "64MiB",
     .offset = offsetof(struct cfg_http_source, max_in_flight_bytes),
     .min = 64 * 1024, .max = (int64_t)1 << 40,
     .doc = "The bodies of the requests accepted and not yet done with, "
            "and of those being read. Past it a request is answered 429 "
            "with Retry-After (a body announced larger than what is left "
            "is not read into memory): with `max_in_flight`, the bound on "
            "the publisher's memory whatever its clients send."},
    {.name = "timeout", .type = OPT_DURATION, .def = "10s",
     .offset = offsetof(struct cfg_http_source, timeout_ms),
     .min = 100, .max = 600000,
     .doc = "A request not acknowledged by Kafka in this time is answered "
            "503 with Retry-After (the record may still land: a client "
            "retries with the same Idempotency-Key, which the consumers' "
            "dedupe key reads). Keep the kafka sink's `timeout` at most "
            "this."},
    {.name = "drain_timeout", .type = OPT_DURATION, .def = "10s",
     .offset = offsetof(struct cfg_http_source, drain_timeout_ms),
     .min = 0, .max = 600000,
     .doc = "At SIGTERM: how long requests under way may take to be "
            "answered, after the listener closed (with this source it is "
            "the pipeline's `delivery.drain_timeout`)."},
    {0},
};

const struct opt_spec cfg_delivery_options[] = {
    {.name = "ordering", .type = OPT_ENUM, .def = "key",
     .offset = offsetof(struct cfg_delivery, ordering),
     .choices = ordering_choices,
     .doc = "Per sink, requests for the same partition and key (`key`) "
            "or for the same partition (`partition`) go out one at a time "
            "in offset order, and a failing one holds back only those "
            "behind it; `none` sends everything at once. Under `key`, "
            "records without a key are not ordered. `key_base` is `key` "
            "with a publisher's hot-key shard suffix taken off "
            "(`tenant-42~3` orders with `tenant-42`; docs/hot-keys.md): "
            "within a partition a hot key's records keep the order they "
            "had before it was sharded, at the cost of parallelism, since "
            "its shards that share a partition go one at a time. Across "
            "partitions no order holds either way."},
    {.name = "max_in_flight", .type = OPT_INT, .def = "10000",
     .offset = offsetof(struct cfg_delivery, max_in_flight),
     .min = 1, .max = 10000000,
     .doc = "Messages consumed but not yet terminal at every sink, across "
            "all partitions. Above it, fetching pauses."},
    {.name = "max_in_flight_bytes", .type = OPT_SIZE, .def = "16MiB",
     .offset = offsetof(struct cfg_delivery, max_in_flight_bytes),
     .min = 1024, .max = (int64_t)1 << 40,
     .doc = "Bytes (key + value) of in-flight messages across all "
            "partitions. Above it, fetching pauses."},
    {.name = "max_in_flight_per_partition", .type = OPT_INT, .def = "2000",
     .offset = offsetof(struct cfg_delivery, max_in_flight_per_partition),
     .min = 1, .max = 10000000,
     .doc = "In-flight messages of one partition; above it, that "
            "partition pauses while others go on."},
    {.name = "commit_interval", .type = OPT_DURATION, .def = "1s",
     .offset = offsetof(struct cfg_delivery, commit_interval_ms),
     .min = 10, .max = 3600000,
     .doc = "How often the commit watermark of each partition is "
            "committed."},
    {.name = "drain_timeout", .type = OPT_DURATION, .def = "30s",
     .offset = offsetof(struct cfg_delivery, drain_timeout_ms),
     .min = 0, .max = 3600000,
     .doc = "On a revoke and on SIGTERM/SIGINT, how long in-flight "
            "messages may take to finish before sluice commits what is "
            "done and lets go; the rest is redelivered, never lost."},
    {.name = "retry_backoff", .type = OPT_DURATION, .def = "100ms",
     .offset = offsetof(struct cfg_delivery, retry_backoff_ms),
     .min = 1, .max = 3600000,
     .doc = "The default retry policy's first backoff: attempt n waits a "
            "random time up to `retry_backoff` × 2^(n-1) (full jitter), "
            "at most `retry_backoff_max`; a longer `Retry-After` from the "
            "server wins (up to 5 minutes)."},
    {.name = "retry_backoff_max", .type = OPT_DURATION, .def = "30s",
     .offset = offsetof(struct cfg_delivery, retry_backoff_max_ms),
     .min = 1, .max = 3600000,
     .doc = "The cap of the default policy's backoff."},
    {.name = "retry_max_attempts", .type = OPT_INT, .def = "0",
     .offset = offsetof(struct cfg_delivery, retry_max_attempts),
     .min = 0, .max = 1000000,
     .doc = "Attempts of one message at one sink after which the default "
            "policy gives up and the message goes to the sink's "
            "dead-letter queue; 0: no limit. A `retry` script decides for "
            "itself."},
    {.name = "retry_deadline", .type = OPT_DURATION, .def = "10m",
     .offset = offsetof(struct cfg_delivery, retry_deadline_ms),
     .min = 0, .max = (int64_t)7 * 24 * 3600000,
     .doc = "Time since a message's first attempt at a sink after which "
            "the default policy gives up at the next failed attempt (to "
            "the dead-letter queue); 0: no limit. Time spent waiting "
            "behind an open circuit breaker counts, but only a failed "
            "attempt is judged."},
    {0},
};

const struct opt_spec cfg_dlq_options[] = {
    {.name = "topic", .type = OPT_STRING,
     .offset = offsetof(struct cfg_dlq, topic),
     .doc = "The dead-letter topic. Default: `<pipeline>.dlq`. A sink may "
            "name its own (`sinks.<name>.dlq_topic`)."},
    {.name = "brokers", .type = OPT_STRING,
     .offset = offsetof(struct cfg_dlq, brokers),
     .doc = "The cluster of the dead-letter and retry topics. Default: "
            "`source.brokers` (with `embedded`, the embedded cluster)."},
    {.name = "partitions", .type = OPT_INT, .def = "1",
     .offset = offsetof(struct cfg_dlq, partitions), .min = 1, .max = 1024,
     .doc = "Partitions of a dead-letter topic that sluice creates because "
            "it does not exist."},
    {.name = "max_replays", .type = OPT_INT, .def = "3",
     .offset = offsetof(struct cfg_dlq, max_replays), .min = 1,
     .max = 1000000,
     .doc = "`sluice dlq replay` skips a record that already failed this "
            "many replays (unless `--force`), so that a record cannot loop "
            "between the dead-letter queue and a broken sink."},
    {.name = "properties", .type = OPT_STRING_MAP,
     .offset = offsetof(struct cfg_dlq, properties),
     .doc = "librdkafka producer properties for the dead-letter producer "
            "(e.g. `security.protocol`). sluice sets "
            "`enable.idempotence` and `acks=all`, which cannot be "
            "overridden."},
    {0},
};

const struct opt_spec cfg_admin_options[] = {
    {.name = "listen", .type = OPT_STRING,
     .offset = offsetof(struct cfg_admin, listen),
     .doc = "Where the admin server listens, `host:port` (`[v6]:port`; "
            "port 0 picks a free one): `GET /metrics` (Prometheus), "
            "`/healthz`, `/readyz`, `/status` and `POST /pause`, "
            "`/resume` (docs/operations.md). Off when not set; "
            "`sluice run --admin ADDR` sets it too. It has no "
            "authentication: keep it on loopback or a private network."},
    {0},
};

const struct opt_spec cfg_tracing_options[] = {
    {.name = "otlp_endpoint", .type = OPT_STRING,
     .offset = offsetof(struct cfg_tracing, otlp_endpoint),
     .doc = "Where spans go: an OTLP/HTTP collector's traces URL, e.g. "
            "`http://127.0.0.1:4318/v1/traces` (JSON encoding). Without "
            "it no span is made, but a record's `traceparent` and "
            "`tracestate` still go on to every request unchanged."},
    {.name = "sample_ratio", .type = OPT_RATIO, .def = "1",
     .offset = offsetof(struct cfg_tracing, sample_ratio),
     .doc = "The share of new traces that are recorded. A record's own "
            "`traceparent` decides for itself (its sampled flag), so a "
            "trace is kept or dropped whole."},
    {.name = "new_traces", .type = OPT_BOOL, .def = "true",
     .offset = offsetof(struct cfg_tracing, new_traces),
     .doc = "A record without a valid `traceparent` starts a new trace "
            "(`true`), or is not traced at all (`false`: its requests "
            "carry no `traceparent`)."},
    {.name = "service_name", .type = OPT_STRING, .def = "sluice",
     .offset = offsetof(struct cfg_tracing, service_name),
     .doc = "The `service.name` resource attribute of the spans."},
    {.name = "max_buffer", .type = OPT_SIZE, .def = "4MiB",
     .offset = offsetof(struct cfg_tracing, max_buffer_bytes),
     .min = 4096, .max = (int64_t)1 << 30,
     .doc = "Encoded spans waiting for export at most; past it spans are "
            "dropped and counted (`sluice_spans_dropped_total`), so a "
            "slow or absent collector never slows the pipeline."},
    {.name = "batch_size", .type = OPT_INT, .def = "512",
     .offset = offsetof(struct cfg_tracing, batch_size), .min = 1,
     .max = 100000,
     .doc = "Spans of one export request at most."},
    {.name = "batch_delay", .type = OPT_DURATION, .def = "1s",
     .offset = offsetof(struct cfg_tracing, batch_delay_ms), .min = 1,
     .max = 60000,
     .doc = "How long a span waits for its batch to fill."},
    {.name = "timeout", .type = OPT_DURATION, .def = "5s",
     .offset = offsetof(struct cfg_tracing, timeout_ms), .min = 1,
     .max = 600000,
     .doc = "Of one export request; a failed export's spans are dropped "
            "(counted), not retried."},
    {0},
};

static const char *const store_choices[] = {"none", "sqlite", "redis",
                                            NULL};
static const char *const missing_choices[] = {"coordinates", "dead_letter",
                                              NULL};

const struct opt_spec cfg_dedupe_options[] = {
    {.name = "key", .type = OPT_STRING, .def = "header:message-id",
     .offset = offsetof(struct cfg_dedupe, key),
     .doc = "Where a message's dedupe key comes from: `header:NAME` (the "
            "record's last NAME header), `json:PATH` (a string or integer "
            "field of the JSON value, e.g. `order_id` or `meta.id`), "
            "`lua:FUNCTION` (a function of the pipeline's `transform` "
            "script: `FUNCTION(msg)` returns the key), or `coordinates` "
            "(`topic-partition-offset`). Sinks get it as the "
            "`Idempotency-Key` header, and markers are kept by it. A "
            "pipeline transform may still set `dedupe_key` on what it "
            "returns."},
    {.name = "missing", .type = OPT_ENUM, .def = "coordinates",
     .offset = offsetof(struct cfg_dedupe, missing),
     .choices = missing_choices,
     .doc = "A message without a usable key (no such header or field, an "
            "empty one, one over 300 bytes or holding a NUL byte, a value "
            "that is not JSON): `coordinates` uses "
            "`topic-partition-offset` instead (a producer's retry then "
            "counts as a new message), `dead_letter` sends it to the "
            "pipeline's dead-letter queue (stage `dedupe`) and to no "
            "sink."},
    {.name = "store", .type = OPT_ENUM, .def = "none",
     .offset = offsetof(struct cfg_dedupe, store_choice),
     .choices = store_choices,
     .doc = "Where \"already handled\" markers are kept: `none` (no "
            "markers: every redelivery reaches every sink again), `sqlite` "
            "(a file on this worker's disk) or `redis` (shared by every "
            "worker of the pipeline and by `sluice dlq replay`). With "
            "markers, a sink that already applied a message is skipped "
            "when the message comes again; see docs/dedupe.md."},
    {.name = "ttl", .type = OPT_DURATION, .def = "7d",
     .offset = offsetof(struct cfg_dedupe, ttl_ms),
     .min = 1000, .max = (int64_t)3650 * 24 * 3600000,
     .doc = "How long a marker lives after it was written: redeliveries "
            "and replays older than this reach the sink again. SQLite "
            "prunes older markers in the background; Redis expires "
            "them."},
    {0},
};

static const char *const mode_choices[] = {"run", "shadow", NULL};

const struct opt_spec cfg_root_options[] = {
    {.name = "transform", .type = OPT_STRING, .flags = OPT_FILE,
     .offset = offsetof(struct cfg, transform),
     .doc = "A Lua script (path relative to this file) whose "
            "`transform(msg)` runs on every message before the sinks: it "
            "returns the message, `nil` to drop it, or a list to split "
            "it. See docs/lua.md."},
    {.name = "mode", .type = OPT_ENUM, .def = "run", .choices = mode_choices,
     .offset = offsetof(struct cfg, mode),
     .doc = "`run` delivers. `shadow` checks the pipeline against "
            "production without side effects (docs/migration.md): it "
            "consumes in its own group (`source.group` + `-shadow`), "
            "runs every transform and shaping, sends nothing (a sink with "
            "a `shadow_url` gets its requests there instead), writes no "
            "marker and no DLQ record, and its outcome log says what "
            "would have been sent. `sluice run --shadow` sets it too."},
    {0},
};

const struct opt_spec cfg_outcomes_options[] = {
    {.name = "path", .type = OPT_STRING,
     .offset = offsetof(struct cfg_outcomes, path),
     .doc = "The NDJSON file (relative to this file) that gets one line "
            "per terminal per-sink outcome: delivered, applied, "
            "already handled, dead-lettered, or shadow "
            "(docs/outcomes.md). Appended to; lines reach it before the "
            "offset commit that passes their record. One of `path` and "
            "`topic`."},
    {.name = "topic", .type = OPT_STRING,
     .offset = offsetof(struct cfg_outcomes, topic),
     .doc = "Or a Kafka topic that gets the same lines, one a record keyed "
            "by the dedupe key (`sluice reconcile` reads "
            "`kafka://BROKERS/TOPIC`). Lines are produced as they come "
            "and not waited for before commits: a crash can lose the last "
            "ones, which reconcile then reports missing."},
    {.name = "brokers", .type = OPT_STRING,
     .offset = offsetof(struct cfg_outcomes, brokers),
     .doc = "The topic's Kafka. Default: `source.brokers` (a publisher's: "
            "its kafka sink's `brokers`)."},
    {.name = "bodies", .type = OPT_BOOL, .def = "true",
     .offset = offsetof(struct cfg_outcomes, bodies),
     .doc = "Also record the body sent (JSON as is, other bodies in "
            "base64; bodies over 1 MiB by their hash alone), which "
            "`sluice reconcile --ignore-field` needs. The SHA-256 of the "
            "body is always recorded."},
    {0},
};

const struct opt_spec cfg_lua_options[] = {
    {.name = "memory_limit", .type = OPT_SIZE, .def = "64MiB",
     .offset = offsetof(struct cfg_lua, memory_limit),
     .min = (int64_t)1 << 20, .max = (int64_t)1 << 34,
     .doc = "Memory of the lane's Lua state (every script together); a "
            "call that needs more fails, not the worker."},
    {.name = "instruction_limit", .type = OPT_INT, .def = "10000000",
     .offset = offsetof(struct cfg_lua, instruction_limit),
     .min = 1000, .max = (int64_t)1 << 40,
     .doc = "VM instructions one call (a transform or a retry decision) "
            "may run; a script that loops forever fails that message "
            "only."},
    {.name = "time_limit", .type = OPT_DURATION, .def = "1s",
     .offset = offsetof(struct cfg_lua, time_limit_ms),
     .min = 10, .max = 3600000,
     .doc = "Wall-clock time one call may take, whatever it spends it on "
            "(Lua code, pattern matching, string and table building, "
            "json); past it the call fails like one over its instruction "
            "limit."},
    {0},
};

const struct opt_spec cfg_sink_options[] = {
    {.name = "type", .type = OPT_STRING, .flags = OPT_REQUIRED,
     .offset = offsetof(struct cfg_sink, type),
     .doc = "The connector: `http` or `kafka`."},
    {.name = "max_in_flight", .type = OPT_INT, .def = "64",
     .offset = offsetof(struct cfg_sink, max_in_flight),
     .min = 1, .max = 4096,
     .doc = "Concurrent requests to this sink, so that one slow sink "
            "cannot take every connection."},
    {.name = "transform", .type = OPT_STRING, .flags = OPT_FILE,
     .offset = offsetof(struct cfg_sink, transform),
     .doc = "A Lua script whose `transform(msg)` builds this sink's "
            "request (body, headers, path, method) or returns `nil` to "
            "skip the message for this sink. See docs/lua.md."},
    {.name = "retry", .type = OPT_STRING, .flags = OPT_FILE,
     .offset = offsetof(struct cfg_sink, retry),
     .doc = "A Lua script whose `retry(attempt)` decides, after each "
            "failed attempt, to retry after some milliseconds, give up, "
            "or count the message as done. Default: the built-in policy "
            "(see `retry_backoff`; lua/lib/sluice/retry.lua is the same "
            "policy in Lua)."},
    {.name = "dlq_topic", .type = OPT_STRING,
     .offset = offsetof(struct cfg_sink, dlq_topic),
     .doc = "This sink's dead-letter topic. Default: `dlq.topic`."},
    {.name = "shadow_url", .type = OPT_STRING,
     .offset = offsetof(struct cfg_sink, shadow_url),
     .doc = "In a shadow run (`mode: shadow`), where this sink's requests "
            "go instead of its `url`; without it a shadow run sends this "
            "sink nothing."},
    {.name = "retry_on", .type = OPT_STRING_LIST, .flags = OPT_EMPTY,
     .def = "transport, 408, 425, 429, 500, 502, 503, 504",
     .offset = offsetof(struct cfg_sink, retry_on),
     .doc = "Answers worth another attempt: statuses (`503`), classes "
            "(`5xx`) and `transport` (no answer: refused, reset, timed "
            "out). A status listed nowhere is delivered when 2xx and "
            "permanent otherwise: it goes to the dead-letter queue at once. "
            "A status beats its class when both are listed."},
    {.name = "permanent_on", .type = OPT_STRING_LIST, .flags = OPT_EMPTY, .def = "",
     .offset = offsetof(struct cfg_sink, permanent_on),
     .doc = "Answers that fail for good (to the dead-letter queue), e.g. "
            "`501` when `retry_on` lists `5xx`."},
    {.name = "done_on", .type = OPT_STRING_LIST, .flags = OPT_EMPTY, .def = "",
     .offset = offsetof(struct cfg_sink, done_on),
     .doc = "Answers that count as done, e.g. `404` from a sink that "
            "answers a DELETE of something already gone: not retried, not "
            "dead-lettered, and marked when markers are on."},
    {.name = "applied_on", .type = OPT_STRING_LIST, .flags = OPT_EMPTY, .def = "409",
     .offset = offsetof(struct cfg_sink, applied_on),
     .doc = "Answers that mean the sink already applied this message "
            "(e.g. its `Idempotency-Key` was seen): counted as delivered "
            "(and as `applied`), never retried nor dead-lettered, and "
            "marked when markers are on; a retry policy is not asked. The "
            "other lists win over this one (`permanent_on: [409]` makes "
            "409 permanent); `[]` turns it off."},
    {.name = "breaker_failures", .type = OPT_INT, .def = "5",
     .offset = offsetof(struct cfg_sink, breaker_failures), .min = 0,
     .max = 1000000,
     .doc = "The circuit breaker opens after this many consecutive "
            "transport or 5xx failures; 0: never on a count. While open, "
            "this sink's deliveries wait without using attempts (other "
            "sinks go on); after `breaker_cooldown` one probe request "
            "goes out, and its success closes the breaker."},
    {.name = "breaker_failure_percent", .type = OPT_INT, .def = "50",
     .offset = offsetof(struct cfg_sink, breaker_failure_percent),
     .min = 0, .max = 100,
     .doc = "The breaker also opens when at least this share of the "
            "requests of the last `breaker_window` failed (transport or "
            "5xx), once there were `breaker_min_requests`; 0: never on a "
            "ratio."},
    {.name = "breaker_min_requests", .type = OPT_INT, .def = "20",
     .offset = offsetof(struct cfg_sink, breaker_min_requests), .min = 1,
     .max = 1000000,
     .doc = "Requests in the window before the failure ratio counts."},
    {.name = "breaker_window", .type = OPT_DURATION, .def = "10s",
     .offset = offsetof(struct cfg_sink, breaker_window_ms), .min = 1000,
     .max = 3600000,
     .doc = "The window of the failure ratio."},
    {.name = "breaker_cooldown", .type = OPT_DURATION, .def = "5s",
     .offset = offsetof(struct cfg_sink, breaker_cooldown_ms), .min = 10,
     .max = 3600000,
     .doc = "How long an open breaker waits before its probe request."},
    {.name = "park_after", .type = OPT_DURATION, .def = "0",
     .offset = offsetof(struct cfg_sink, park_after_ms), .min = 0,
     .max = 24 * 3600000,
     .doc = "Off (0) by default. Once this sink, failing or behind an open "
            "breaker, has held partitions at the in-flight bound for this "
            "long, its pending deliveries are moved to its retry topic "
            "`<pipeline>.retry.<sink>` (acknowledged before they count as "
            "done), so the other sinks and the commits move on; sluice "
            "drains that topic back into this sink, in order per key, as it "
            "recovers. While a sink is parked, its new messages are parked "
            "behind the old ones."},
    {0},
};

const struct connector *const cfg_connectors[] = {&http_connector,
                                                  &kafka_connector, NULL};

/* ---- errors ---- */

/* Copies src into dst (cap bytes, NUL-terminated) with control characters
 * escaped, so that a newline in an echoed value cannot split an error line
 * (or forge one). Returns the length written. */
static size_t escape_controls(char *dst, size_t cap, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;

    for (const unsigned char *c = (const unsigned char *)src; *c; c++) {
        char esc[5];
        size_t len = 1;
        esc[0] = (char)*c;
        if (*c == '\n' || *c == '\r' || *c == '\t') {
            esc[0] = '\\';
            esc[1] = *c == '\n' ? 'n' : *c == '\r' ? 'r' : 't';
            len = 2;
        } else if (*c < 0x20 || *c == 0x7f) {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[*c >> 4];
            esc[3] = hex[*c & 15];
            len = 4;
        }
        if (n + len >= cap) {
            break;
        }
        memcpy(dst + n, esc, len);
        n += len;
    }
    dst[n] = '\0';
    return n;
}

void cfg_errors_add(struct cfg_errors *errs, const char *file, int line,
                    int col, const char *key, const char *fmt, ...)
{
    char raw[2048], where[1024];
    size_t room = sizeof(errs->text) - errs->len;
    va_list ap;
    int n;

    errs->count++;
    if (room < 2) {
        return;
    }
    /* No position (line 0): a file that cannot be opened has none. */
    if (line > 0) {
        n = snprintf(raw, sizeof(raw), "%s:%d:%d: %s%s", file, line, col,
                     key != NULL && *key ? key : "",
                     key != NULL && *key ? ": " : "");
    } else {
        n = snprintf(raw, sizeof(raw), "%s: %s%s", file,
                     key != NULL && *key ? key : "",
                     key != NULL && *key ? ": " : "");
    }
    if (n < 0) {
        return;
    }
    escape_controls(where, sizeof(where), raw);
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    n = snprintf(errs->text + errs->len, room, "%s", where);
    if (n < 0 || (size_t)n >= room - 1) {
        errs->len = sizeof(errs->text) - 1;
        errs->text[errs->len - 1] = '\n';
        errs->text[errs->len] = '\0';
        return;
    }
    errs->len += (size_t)n;
    room -= (size_t)n;
    errs->len += escape_controls(errs->text + errs->len, room - 1, raw);
    if (errs->len >= sizeof(errs->text) - 2) {
        errs->len = sizeof(errs->text) - 1;
        errs->text[errs->len - 1] = '\n';
        errs->text[errs->len] = '\0';
        return;
    }
    errs->text[errs->len++] = '\n';
    errs->text[errs->len] = '\0';
}

/* ---- ${ENV} expansion ---- */

struct strbuf {
    char *data;
    size_t len, cap;
};

static int sb_append(struct strbuf *sb, const char *s, size_t n)
{
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 64;
        while (cap < sb->len + n + 1) {
            cap *= 2;
        }
        char *d = realloc(sb->data, cap);
        if (d == NULL) {
            return -1;
        }
        sb->data = d;
        sb->cap = cap;
    }
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
    return 0;
}

static int env_name_char(char c, int first)
{
    return c == '_' || isalpha((unsigned char)c) ||
           (!first && isdigit((unsigned char)c));
}

char *cfg_expand_env(const char *text, struct sl_error *err)
{
    struct strbuf sb = {0};
    const char *p = text;

    if (sb_append(&sb, "", 0) != 0) {
        goto oom;
    }
    while (*p != '\0') {
        const char *dollar = strchr(p, '$');
        if (dollar == NULL) {
            if (sb_append(&sb, p, strlen(p)) != 0) {
                goto oom;
            }
            break;
        }
        if (sb_append(&sb, p, (size_t)(dollar - p)) != 0) {
            goto oom;
        }
        if (dollar[1] == '$') {
            if (sb_append(&sb, "$", 1) != 0) {
                goto oom;
            }
            p = dollar + 2;
            continue;
        }
        if (dollar[1] != '{') {
            if (sb_append(&sb, "$", 1) != 0) {
                goto oom;
            }
            p = dollar + 1;
            continue;
        }
        const char *name = dollar + 2, *q = name;
        while (env_name_char(*q, q == name)) {
            q++;
        }
        size_t name_len = (size_t)(q - name);
        char var[256];
        if (name_len == 0 || name_len >= sizeof(var)) {
            sl_error_set(err, "malformed ${...}: expected a variable name "
                              "of letters, digits and _");
            goto fail;
        }
        memcpy(var, name, name_len);
        var[name_len] = '\0';
        const char *def = NULL, *end;
        if (q[0] == ':' && q[1] == '-') {
            def = q + 2;
            end = strchr(def, '}');
        } else if (q[0] == '}') {
            end = q;
        } else {
            sl_error_set(err, "malformed ${%s...}: expected } or :-default",
                         var);
            goto fail;
        }
        if (end == NULL) {
            sl_error_set(err, "malformed ${%s: missing }", var);
            goto fail;
        }
        const char *value = getenv(var);
        if (value != NULL && (*value != '\0' || def == NULL)) {
            if (sb_append(&sb, value, strlen(value)) != 0) {
                goto oom;
            }
        } else if (def != NULL) {
            if (sb_append(&sb, def, (size_t)(end - def)) != 0) {
                goto oom;
            }
        } else {
            sl_error_set(err,
                         "environment variable %s is not set (write "
                         "${%s:-default} to give a default)",
                         var, var);
            goto fail;
        }
        p = end + 1;
    }
    return sb.data;
oom:
    sl_error_set(err, "out of memory");
fail:
    free(sb.data);
    return NULL;
}

/* ---- the walker ---- */

struct walker {
    const char *file;
    const char *dir; /* of file: OPT_FILE paths start here */
    yaml_document_t *doc;
    struct cfg_errors *errs;
    struct cfg *cfg;
};

static void node_error(struct walker *w, const yaml_node_t *node,
                       const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void node_error(struct walker *w, const yaml_node_t *node,
                       const char *key, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cfg_errors_add(w->errs, w->file, (int)node->start_mark.line + 1,
                   (int)node->start_mark.column + 1, key, "%s", msg);
}

static const char *node_type_name(const yaml_node_t *node)
{
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

static const char *scalar_text(const yaml_node_t *node)
{
    return (const char *)node->data.scalar.value;
}

/* Whether a name at distance dist from key is likely what was meant. */
static int close_enough(const char *key, size_t dist)
{
    size_t limit = strlen(key) / 3 + 1;

    return dist <= (limit > 3 ? 3 : limit);
}

const char *cfg_closest(const char *key, const char *const *names, size_t n)
{
    const char *best = NULL;
    size_t best_dist = SIZE_MAX;

    for (size_t i = 0; i < n; i++) {
        size_t d = sl_edit_distance(key, names[i]);
        if (d < best_dist) {
            best_dist = d;
            best = names[i];
        }
    }
    return best != NULL && close_enough(key, best_dist) ? best : NULL;
}

int cfg_map_key_position(const struct cfg *cfg, const struct opt_map *map,
                         size_t i, int *line, int *col)
{
    for (size_t k = 0; k < cfg->keypos_count; k++) {
        if (cfg->keypos[k].map == map && cfg->keypos[k].index == i) {
            *line = cfg->keypos[k].line;
            *col = cfg->keypos[k].col;
            return 0;
        }
    }
    return -1;
}

/* Remembers where key k of map m (its last entry) is; best effort. */
static void note_keypos(struct walker *w, const struct opt_map *m,
                        const yaml_node_t *k)
{
    struct cfg *cfg = w->cfg;
    struct cfg_keypos *kp;

    if (cfg == NULL) {
        return;
    }
    kp = realloc(cfg->keypos, (cfg->keypos_count + 1) * sizeof(*kp));
    if (kp == NULL) {
        return;
    }
    cfg->keypos = kp;
    kp[cfg->keypos_count++] = (struct cfg_keypos){
        .map = m,
        .index = m->count - 1,
        .line = (int)k->start_mark.line + 1,
        .col = (int)k->start_mark.column + 1,
    };
}

/* Appends "; did you mean `x`?" or the list of valid names to msg. */
static void suggest(char *msg, size_t cap, const char *key,
                    const struct opt_spec *const *tables, size_t ntables)
{
    const char *best = NULL;
    size_t best_dist = SIZE_MAX, len = strlen(msg);

    for (size_t t = 0; t < ntables; t++) {
        for (const struct opt_spec *s = tables[t]; s->name != NULL; s++) {
            size_t d = sl_edit_distance(key, s->name);
            if (d < best_dist) {
                best_dist = d;
                best = s->name;
            }
        }
    }
    if (best != NULL && close_enough(key, best_dist)) {
        snprintf(msg + len, cap - len, "; did you mean `%s`?", best);
        return;
    }
    len += (size_t)snprintf(msg + len, cap - len, "; expected one of:");
    for (size_t t = 0; t < ntables && len < cap; t++) {
        for (const struct opt_spec *s = tables[t]; s->name && len < cap;
             s++) {
            len += (size_t)snprintf(msg + len, cap - len, " %s", s->name);
        }
    }
}

/* Expands a scalar's text; reports and returns NULL on error. */
static char *expand_scalar(struct walker *w, const yaml_node_t *node,
                           const char *path)
{
    struct sl_error err;
    char *v = cfg_expand_env(scalar_text(node), &err);

    if (v == NULL) {
        node_error(w, node, path, "%s", err.msg);
    }
    return v;
}

static void free_value(const struct opt_spec *spec, void *base)
{
    void *field = (char *)base + spec->offset;

    switch (spec->type) {
    case OPT_STRING: {
        char **s = field;
        free(*s);
        *s = NULL;
        break;
    }
    case OPT_STRING_MAP: {
        struct opt_map *m = field;
        for (size_t i = 0; i < m->count; i++) {
            free(m->keys[i]);
            free(m->values[i]);
        }
        free(m->keys);
        free(m->values);
        memset(m, 0, sizeof(*m));
        break;
    }
    case OPT_STRING_LIST: {
        struct opt_list *l = field;
        for (size_t i = 0; i < l->count; i++) {
            free(l->items[i]);
        }
        free(l->items);
        memset(l, 0, sizeof(*l));
        break;
    }
    default:
        break;
    }
}

static int push_str(char ***arr, size_t *count, char *s)
{
    char **a = realloc(*arr, (*count + 1) * sizeof(**arr));

    if (a == NULL) {
        free(s);
        return -1;
    }
    a[(*count)++] = s;
    *arr = a;
    return 0;
}

/* Parses text (already expanded) for a scalar option. Returns 0, or -1
 * with a reason in why. */
static int parse_scalar(const struct opt_spec *spec, const char *text,
                        void *base, char *why, size_t why_cap)
{
    void *field = (char *)base + spec->offset;
    int64_t v = 0;
    const char *unit_hint = NULL;

    switch (spec->type) {
    case OPT_STRING: {
        char *copy = strdup(text);
        if (copy == NULL) {
            snprintf(why, why_cap, "out of memory");
            return -1;
        }
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case OPT_BOOL:
        if (strcmp(text, "true") == 0 || strcmp(text, "false") == 0) {
            *(int *)field = text[0] == 't';
            return 0;
        }
        snprintf(why, why_cap, "expected true or false");
        return -1;
    case OPT_ENUM:
        for (int i = 0; spec->choices[i] != NULL; i++) {
            if (strcmp(text, spec->choices[i]) == 0) {
                *(int *)field = i;
                return 0;
            }
        }
        {
            size_t n = (size_t)snprintf(why, why_cap, "expected one of:");
            for (int i = 0; spec->choices[i] != NULL && n < why_cap; i++) {
                n += (size_t)snprintf(why + n, why_cap - n, " %s",
                                      spec->choices[i]);
            }
        }
        return -1;
    case OPT_INT:
        if (units_parse_int(text, &v) != 0) {
            snprintf(why, why_cap, "expected an integer");
            return -1;
        }
        break;
    case OPT_DURATION:
        if (units_parse_duration(text, &v) != 0) {
            snprintf(why, why_cap,
                     "expected a duration such as 500ms, 5s, 2m or 1h");
            return -1;
        }
        unit_hint = "ms";
        break;
    case OPT_SIZE:
        if (units_parse_size(text, &v) != 0) {
            snprintf(why, why_cap,
                     "expected a size such as 4096, 512KiB or 64MiB");
            return -1;
        }
        unit_hint = " bytes";
        break;
    case OPT_RATIO: {
        char *end = NULL;
        double r;
        errno = 0;
        r = strtod(text, &end);
        if (end != text && *end == '%' && end[1] == '\0') {
            r /= 100;
            end++;
        }
        if (end == text || *end != '\0' || errno != 0 || !(r >= 0) ||
            r > 1) {
            snprintf(why, why_cap,
                     "expected a ratio from 0 to 1, such as 0.25 or 25%%");
            return -1;
        }
        *(double *)field = r;
        return 0;
    }
    case OPT_STRING_LIST: {
        /* Only a built-in default arrives here: "a, b, c" (or ""). */
        struct opt_list *l = field;
        const char *p = text;
        while (*p != '\0') {
            size_t n = strcspn(p, ", ");
            if (n > 0) {
                char *item = strndup(p, n);
                if (item == NULL || push_str(&l->items, &l->count, item)) {
                    snprintf(why, why_cap, "out of memory");
                    return -1;
                }
            }
            p += n;
            p += strspn(p, ", ");
        }
        return 0;
    }
    default:
        snprintf(why, why_cap, "expected a mapping");
        return -1;
    }
    if ((spec->min != 0 || spec->max != 0) &&
        (v < spec->min || v > spec->max)) {
        snprintf(why, why_cap, "must be between %lld%s and %lld%s",
                 (long long)spec->min, unit_hint ? unit_hint : "",
                 (long long)spec->max, unit_hint ? unit_hint : "");
        return -1;
    }
    *(int64_t *)field = v;
    return 0;
}

static int map_push(struct opt_map *m, char *key, char *value)
{
    char **keys = realloc(m->keys, (m->count + 1) * sizeof(*keys));

    if (keys != NULL) {
        m->keys = keys;
        char **values = realloc(m->values, (m->count + 1) * sizeof(*values));
        if (values != NULL) {
            m->values = values;
            m->keys[m->count] = key;
            m->values[m->count++] = value;
            return 0;
        }
    }
    free(key);
    free(value);
    return -1;
}

/* Opens path for reading if it is a regular file of at most max bytes.
 * O_NONBLOCK so that a FIFO cannot block the open; then fstat refuses
 * anything that is not a regular file. On failure returns NULL with a
 * static reason (strerror's, "is a directory", ...) in *why. */
static FILE *open_regular(const char *path, off_t max, const char **why)
{
    static char reason[256];
    struct stat st;
    int fd;
    FILE *fp;

    if (*path == '\0') {
        *why = "the path is empty";
        return NULL;
    }
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(reason, sizeof(reason), "%s", strerror(errno));
        *why = reason;
        return NULL;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(reason, sizeof(reason), "%s", strerror(errno));
        *why = reason;
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        *why = S_ISDIR(st.st_mode)    ? "is a directory"
               : S_ISFIFO(st.st_mode) ? "is a FIFO, not a regular file"
                                      : "not a regular file";
        close(fd);
        return NULL;
    }
    if (st.st_size > max) {
        snprintf(reason, sizeof(reason),
                 "too big (%lld bytes; at most %lld)",
                 (long long)st.st_size, (long long)max);
        *why = reason;
        close(fd);
        return NULL;
    }
    /* Reads of a regular file do not block: O_NONBLOCK may stay. */
    fp = fdopen(fd, "rb");
    if (fp == NULL) {
        snprintf(reason, sizeof(reason), "%s", strerror(errno));
        *why = reason;
        close(fd);
    }
    return fp;
}

/* Makes *text (a path relative to the pipeline file) a path from the
 * working directory and checks that it is a readable regular file of at
 * most CFG_SCRIPT_MAX bytes, so that every problem with it is reported at
 * its YAML key rather than later by the script loader without one. */
static int resolve_file(struct walker *w, const yaml_node_t *node,
                        const char *path, char **text)
{
    char *resolved = *text;
    const char *why;
    FILE *fp;

    if (**text == '\0') {
        node_error(w, node, path, "expected a file name, found an empty "
                                  "string");
        free(*text);
        return -1;
    }
    if (**text != '/' &&
        asprintf(&resolved, "%s/%s", w->dir, *text) < 0) {
        node_error(w, node, path, "out of memory");
        free(*text);
        return -1;
    }
    fp = open_regular(resolved, CFG_SCRIPT_MAX, &why);
    if (fp == NULL) {
        node_error(w, node, path, "cannot read %s: %s", resolved, why);
        if (resolved != *text) {
            free(resolved);
        }
        free(*text);
        return -1;
    }
    fclose(fp);
    if (resolved != *text) {
        free(*text);
        *text = resolved;
    }
    return 0;
}

static void apply_value(struct walker *w, const struct opt_spec *spec,
                        const yaml_node_t *node, void *base,
                        const char *path)
{
    char why[512];

    if (spec->type == OPT_STRING_MAP) {
        struct opt_map *m = (void *)((char *)base + spec->offset);
        if (node->type != YAML_MAPPING_NODE) {
            node_error(w, node, path, "expected a mapping, found %s",
                       node_type_name(node));
            return;
        }
        if (node->data.mapping.pairs.top - node->data.mapping.pairs.start >
            CFG_LIST_MAX) {
            node_error(w, node, path, "more than %d entries", CFG_LIST_MAX);
            return;
        }
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
             p < node->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
            yaml_node_t *v = yaml_document_get_node(w->doc, p->value);
            char sub[256];
            if (k->type != YAML_SCALAR_NODE || v->type != YAML_SCALAR_NODE) {
                node_error(w, k->type != YAML_SCALAR_NODE ? k : v, path,
                           "expected `name: value` with scalar values");
                continue;
            }
            snprintf(sub, sizeof(sub), "%s.%s", path, scalar_text(k));
            char *value = expand_scalar(w, v, sub);
            char *key = strdup(scalar_text(k));
            if (value == NULL || key == NULL) {
                free(value);
                free(key);
                continue;
            }
            if (map_push(m, key, value) != 0) {
                node_error(w, k, sub, "out of memory");
                return;
            }
            note_keypos(w, m, k);
        }
        return;
    }
    if (spec->type == OPT_STRING_LIST) {
        struct opt_list *l = (void *)((char *)base + spec->offset);
        if (node->type == YAML_SCALAR_NODE) {
            char *v = expand_scalar(w, node, path);
            if (v != NULL) {
                push_str(&l->items, &l->count, v);
            }
            return;
        }
        if (node->type != YAML_SEQUENCE_NODE) {
            node_error(w, node, path, "expected a list, found %s",
                       node_type_name(node));
            return;
        }
        /* Checked before any entry is copied: the cost stays bounded. */
        if (node->data.sequence.items.top - node->data.sequence.items.start >
            CFG_LIST_MAX) {
            node_error(w, node, path, "more than %d entries", CFG_LIST_MAX);
            return;
        }
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             it < node->data.sequence.items.top; it++) {
            yaml_node_t *item = yaml_document_get_node(w->doc, *it);
            if (item->type != YAML_SCALAR_NODE) {
                node_error(w, item, path, "expected a list of names");
                continue;
            }
            char *v = expand_scalar(w, item, path);
            if (v != NULL) {
                push_str(&l->items, &l->count, v);
            }
        }
        if (l->count == 0 && !(spec->flags & OPT_EMPTY)) {
            node_error(w, node, path, "expected at least one entry");
        }
        return;
    }
    if (node->type != YAML_SCALAR_NODE) {
        node_error(w, node, path, "expected a scalar, found %s",
                   node_type_name(node));
        return;
    }
    char *text = expand_scalar(w, node, path);
    if (text == NULL) {
        return;
    }
    if ((spec->flags & OPT_FILE) && resolve_file(w, node, path, &text) != 0) {
        return;
    }
    if (parse_scalar(spec, text, base, why, sizeof(why)) != 0) {
        int from_env = strchr(scalar_text(node), '$') != NULL;
        if ((spec->flags & OPT_SECRET) || from_env) {
            node_error(w, node, path, "%s", why);
        } else {
            node_error(w, node, path, "%s, found `%s`", why, text);
        }
    }
    free(text);
}

/* Walks a mapping against up to two tables (bases[i] for tables[i]),
 * then applies defaults and reports missing required keys. */
static void walk_mapping(struct walker *w, const yaml_node_t *map,
                         const char *prefix,
                         const struct opt_spec *const *tables, void **bases,
                         size_t ntables)
{
    const yaml_node_t *seen_node[2][64] = {{0}};

    for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
         p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(w->doc, p->value);
        char path[256];
        const struct opt_spec *spec = NULL;
        size_t t = 0, idx = 0;

        if (k->type != YAML_SCALAR_NODE) {
            node_error(w, k, prefix, "expected a key name");
            continue;
        }
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "",
                 scalar_text(k));
        for (t = 0; t < ntables && spec == NULL; t++) {
            idx = 0;
            for (const struct opt_spec *s = tables[t]; s->name; s++, idx++) {
                if (strcmp(s->name, scalar_text(k)) == 0) {
                    spec = s;
                    break;
                }
            }
        }
        if (spec == NULL) {
            char msg[1024];
            snprintf(msg, sizeof(msg), "unknown key");
            suggest(msg, sizeof(msg), scalar_text(k), tables, ntables);
            node_error(w, k, path, "%s", msg);
            continue;
        }
        t--;
        if (seen_node[t][idx] != NULL) {
            continue; /* a repeat: parse_yaml reported it */
        }
        seen_node[t][idx] = k;
        apply_value(w, spec, v, bases[t], path);
    }
    for (size_t t = 0; t < ntables; t++) {
        size_t idx = 0;
        for (const struct opt_spec *s = tables[t]; s->name; s++, idx++) {
            char path[256], why[256];
            if (seen_node[t][idx] != NULL) {
                continue;
            }
            snprintf(path, sizeof(path), "%s%s%s", prefix,
                     *prefix ? "." : "", s->name);
            if (s->flags & OPT_REQUIRED) {
                node_error(w, map, path, "missing required key `%s`",
                           s->name);
            } else if (s->def != NULL &&
                       parse_scalar(s, s->def, bases[t], why,
                                    sizeof(why)) != 0) {
                node_error(w, map, path, "bad built-in default: %s", why);
            }
        }
    }
}

static void free_table(const struct opt_spec *table, void *base)
{
    for (const struct opt_spec *s = table; s->name != NULL; s++) {
        free_value(s, base);
    }
}

static int valid_sink_name(const char *name)
{
    if (*name == '\0') {
        return 0;
    }
    for (const char *c = name; *c; c++) {
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-') {
            return 0;
        }
    }
    return 1;
}

/* Why url cannot serve as the OTLP endpoint, or NULL (NULL url too):
 * http or https, a host, nothing a header line could not carry, and no
 * credentials (they would end up in a log line about a failed export). */
static const char *endpoint_problem(const char *url)
{
    if (url == NULL) {
        return NULL;
    }
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        return "expected an http:// or https:// URL, e.g. "
               "http://127.0.0.1:4318/v1/traces";
    }
    const char *host = strstr(url, "://") + 3;
    size_t authority = strcspn(host, "/?#");
    if (authority == 0) {
        return "the URL has no host";
    }
    if (memchr(host, '@', authority) != NULL) {
        return "credentials in the URL are not supported (they would be "
               "logged with a failed export): run the collector without "
               "them on loopback, or behind a local proxy";
    }
    for (const unsigned char *c = (const unsigned char *)url; *c; c++) {
        if (*c <= 0x20 || *c == 0x7f) {
            return "the URL has a space or a control byte";
        }
    }
    return NULL;
}

static const yaml_node_t *find_key(struct walker *w, const yaml_node_t *map,
                                   const char *name)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
         p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
        if (k->type == YAML_SCALAR_NODE && strcmp(scalar_text(k), name) == 0) {
            return yaml_document_get_node(w->doc, p->value);
        }
    }
    return NULL;
}

/* Fills sink->answers from retry_on, permanent_on and done_on: a status
 * beats its class, and for the same entry done_on beats permanent_on
 * beats retry_on (so `permanent_on: [503]` needs no change to the default
 * retry_on). Reports entries that are neither. */
static void build_answers(struct walker *w, const yaml_node_t *map,
                          const char *prefix, struct cfg_sink *sink)
{
    /* Later lists win: applied_on's default yields to any other. */
    static const char *const names[] = {"applied_on", "retry_on",
                                        "permanent_on", "done_on"};
    const struct opt_list *lists[] = {&sink->applied_on, &sink->retry_on,
                                      &sink->permanent_on, &sink->done_on};
    const unsigned char answers[] = {CFG_ANSWER_APPLIED, CFG_ANSWER_RETRY,
                                     CFG_ANSWER_PERMANENT, CFG_ANSWER_DONE};

    memset(sink->answers, CFG_ANSWER_DEFAULT, sizeof(sink->answers));
    for (int exact = 0; exact < 2; exact++) {
        for (size_t l = 0; l < 4; l++) {
            for (size_t i = 0; i < lists[l]->count; i++) {
                const char *t = lists[l]->items[i];
                size_t len = strlen(t);
                int is_class = len == 3 && t[0] >= '1' && t[0] <= '5' &&
                               t[1] == 'x' && t[2] == 'x';
                int is_status = len == 3 && t[0] >= '1' && t[0] <= '5' &&
                                isdigit((unsigned char)t[1]) &&
                                isdigit((unsigned char)t[2]);
                if (!exact && is_class) {
                    int base = (t[0] - '0') * 100;
                    memset(sink->answers + base, answers[l], 100);
                } else if (exact && is_status) {
                    sink->answers[atoi(t)] = answers[l];
                } else if (exact && strcmp(t, "transport") == 0) {
                    sink->answers[0] = answers[l];
                } else if (exact && !is_class) {
                    char path[300];
                    const yaml_node_t *at = find_key(w, map, names[l]);
                    snprintf(path, sizeof(path), "%s.%s", prefix, names[l]);
                    node_error(w, at != NULL ? at : map, path,
                               "expected a status (100-599), a class such "
                               "as 5xx, or `transport`, found `%s`",
                               t);
                }
            }
        }
    }
}

const char *cfg_sink_dlq_topic(const struct cfg *cfg, size_t i)
{
    return cfg->sinks[i].dlq_topic != NULL ? cfg->sinks[i].dlq_topic
                                           : cfg->dlq.topic;
}

/* Kafka's own rule for a topic name; NULL when valid, else why not. */
static const char *topic_name_problem(const char *t)
{
    size_t n = strlen(t);

    if (n == 0) {
        return "a topic name cannot be empty";
    }
    if (n > 249) {
        return "a topic name is at most 249 characters";
    }
    if (strcmp(t, ".") == 0 || strcmp(t, "..") == 0) {
        return "a topic name cannot be `.` or `..`";
    }
    for (const char *c = t; *c; c++) {
        if (!isalnum((unsigned char)*c) && *c != '.' && *c != '_' &&
            *c != '-') {
            return "a topic name is letters, digits, `.`, `_` and `-` only";
        }
    }
    return NULL;
}

/* Checks a topic option's value(s) where key names them in map (a list
 * or a scalar); each bad name is reported at its own item. */
static void check_topics(struct walker *w, const yaml_node_t *map,
                         const char *key, const char *prefix,
                         const char *const *names, size_t count)
{
    const yaml_node_t *v = find_key(w, map, key);
    char path[300];

    if (v == NULL) {
        return;
    }
    snprintf(path, sizeof(path), "%s.%s", prefix, key);
    for (size_t i = 0; i < count; i++) {
        const char *why = topic_name_problem(names[i]);
        const yaml_node_t *at = v;
        if (why == NULL) {
            continue;
        }
        if (v->type == YAML_SEQUENCE_NODE &&
            (size_t)(v->data.sequence.items.top -
                     v->data.sequence.items.start) == count) {
            at = yaml_document_get_node(w->doc,
                                        v->data.sequence.items.start[i]);
        }
        node_error(w, at, path, "%s", why);
    }
}

static void walk_sink(struct walker *w, struct cfg *cfg, const yaml_node_t *k,
                      const yaml_node_t *v)
{
    const char *name = scalar_text(k);
    struct cfg_sink *sink;
    char prefix[256];

    snprintf(prefix, sizeof(prefix), "sinks.%s", name);
    if (!valid_sink_name(name)) {
        node_error(w, k, prefix,
                   "a sink name is letters, digits, _ and - only");
        return;
    }
    if (v->type != YAML_MAPPING_NODE) {
        node_error(w, v, prefix, "expected a mapping, found %s",
                   node_type_name(v));
        return;
    }
    for (size_t i = 0; i < cfg->sink_count; i++) {
        if (strcmp(cfg->sinks[i].name, name) == 0) {
            return; /* a repeat: parse_yaml reported it */
        }
    }
    const yaml_node_t *type = find_key(w, v, "type");
    const struct connector *conn = NULL;
    if (type == NULL) {
        node_error(w, v, prefix, "missing required key `type`");
        return;
    }
    if (type->type == YAML_SCALAR_NODE) {
        for (size_t i = 0; cfg_connectors[i] != NULL; i++) {
            if (strcmp(cfg_connectors[i]->name, scalar_text(type)) == 0) {
                conn = cfg_connectors[i];
            }
        }
    }
    if (conn == NULL) {
        char msg[512];
        size_t n = (size_t)snprintf(msg, sizeof(msg),
                                    "unknown sink type; expected one of:");
        for (size_t i = 0; cfg_connectors[i] && n < sizeof(msg); i++) {
            n += (size_t)snprintf(msg + n, sizeof(msg) - n, " %s",
                                  cfg_connectors[i]->name);
        }
        char tpath[300];
        snprintf(tpath, sizeof(tpath), "%s.type", prefix);
        node_error(w, type, tpath, "%s", msg);
        return;
    }
    struct cfg_sink *sinks =
        realloc(cfg->sinks, (cfg->sink_count + 1) * sizeof(*sinks));
    if (sinks == NULL) {
        node_error(w, v, prefix, "out of memory");
        return;
    }
    cfg->sinks = sinks;
    sink = &sinks[cfg->sink_count++];
    memset(sink, 0, sizeof(*sink));
    sink->name = strdup(name);
    sink->connector = conn;
    sink->ctx = calloc(1, conn->ctx_size);
    sink->line = (int)k->start_mark.line + 1;
    sink->col = (int)k->start_mark.column + 1;
    if (sink->name == NULL || sink->ctx == NULL) {
        node_error(w, v, prefix, "out of memory");
        return;
    }
    const struct opt_spec *tables[2] = {cfg_sink_options, conn->options};
    void *bases[2] = {sink, sink->ctx};
    int errors_before = w->errs->count;
    walk_mapping(w, v, prefix, tables, bases, 2);
    build_answers(w, v, prefix, sink);
    if (conn->max_in_flight_default > 0 &&
        find_key(w, v, "max_in_flight") == NULL) {
        sink->max_in_flight = conn->max_in_flight_default;
    }
    const yaml_node_t *script = find_key(w, v, "transform");
    if (script != NULL) {
        sink->transform_line = (int)script->start_mark.line + 1;
        sink->transform_col = (int)script->start_mark.column + 1;
    }
    if ((script = find_key(w, v, "retry")) != NULL) {
        sink->retry_line = (int)script->start_mark.line + 1;
        sink->retry_col = (int)script->start_mark.column + 1;
    }
    if (sink->dlq_topic != NULL) {
        const char *names[1] = {sink->dlq_topic};
        check_topics(w, v, "dlq_topic", prefix, names, 1);
    }
    const char *option = NULL;
    struct sl_error err;
    if (w->errs->count == errors_before && conn->check != NULL &&
        conn->check(sink->ctx, &option, &err) != 0) {
        const yaml_node_t *at = option != NULL ? find_key(w, v, option) : NULL;
        char path[300];
        snprintf(path, sizeof(path), "%s.%s", prefix,
                 option != NULL ? option : "");
        node_error(w, at != NULL ? at : v, option != NULL ? path : prefix,
                   "%s", err.msg);
    }
}

/* The `dedupe:` section: its own keys, then those of the store it
 * names (like a sink's type). */
static void walk_dedupe(struct walker *w, struct cfg *cfg,
                        const yaml_node_t *v)
{
    struct cfg_dedupe *d = &cfg->dedupe;
    const yaml_node_t *store = find_key(w, v, "store");
    const struct store *impl = NULL;

    if (store != NULL && store->type == YAML_SCALAR_NODE &&
        strcmp(scalar_text(store), "none") != 0) {
        impl = store_find(scalar_text(store));
    }
    if (impl != NULL) {
        d->ctx = calloc(1, impl->ctx_size);
        if (d->ctx == NULL) {
            node_error(w, v, "dedupe", "out of memory");
            return;
        }
        d->store = impl;
    }
    const struct opt_spec *tables[2] = {cfg_dedupe_options,
                                        impl != NULL ? impl->options : NULL};
    void *bases[2] = {d, d->ctx};
    int errors_before = w->errs->count;
    walk_mapping(w, v, "dedupe", tables, bases, impl != NULL ? 2 : 1);
    const yaml_node_t *key = find_key(w, v, "key");
    if (key != NULL) {
        d->key_line = (int)key->start_mark.line + 1;
        d->key_col = (int)key->start_mark.column + 1;
    }
    const char *option = NULL;
    struct sl_error err;
    if (w->errs->count == errors_before && impl != NULL &&
        impl->check != NULL && impl->check(d->ctx, &option, &err) != 0) {
        const yaml_node_t *at = option != NULL ? find_key(w, v, option) : NULL;
        char path[300];
        snprintf(path, sizeof(path), "dedupe.%s",
                 option != NULL ? option : "");
        node_error(w, at != NULL ? at : v, option != NULL ? path : "dedupe",
                   "%s", err.msg);
    }
}

/* Parses dedupe.key into from and arg; reports a bad one at its value. */
static void check_dedupe_key(struct walker *w, struct cfg *cfg,
                             const yaml_node_t *root)
{
    struct cfg_dedupe *d = &cfg->dedupe;
    const char *why;

    if (d->key == NULL) {
        return;
    }
    why = keysrc_parse(d->key, KEYSRC_ALLOW_LUA_COORDINATES, &d->from,
                       &d->arg);
    if (why == NULL && d->from == CFG_DEDUPE_LUA && cfg->transform == NULL) {
        why = "`lua:` names a function of the pipeline's `transform` "
              "script, and there is none";
    }
    if (why == NULL && d->store_choice != 0 && d->store == NULL) {
        why = "this build has no such store";
    }
    if (why == NULL && d->store != NULL &&
        cfg->sink_count > STORE_MAX_SINKS) {
        why = "markers are kept for at most 64 sinks";
    }
    if (why != NULL) {
        const yaml_node_t *sec = find_key(w, root, "dedupe");
        const yaml_node_t *at = sec != NULL ? find_key(w, sec, "key") : NULL;
        node_error(w, at != NULL ? at : sec != NULL ? sec : root,
                   "dedupe.key", "%s", why);
    }
}

static void check_publisher(struct cfg *cfg, const char *path,
                            struct cfg_errors *errs);

/* The publisher's key rule is built once here (and thrown away) so that
 * a bad key form, separator or hot key is reported at load time, at its
 * YAML key. */
static void check_http_source(struct walker *w, struct cfg *cfg,
                              const yaml_node_t *v)
{
    const struct cfg_http_source *h = &cfg->http;
    struct keyrule_static statics[64];
    struct sl_error err;
    keyrule_t *kr;

    if (h->key == NULL || h->listen == NULL) {
        return; /* reported as missing */
    }
    if (h->hot_keys.count > sizeof(statics) / sizeof(statics[0])) {
        node_error(w, find_key(w, v, "hot_keys"), "source.hot_keys",
                   "at most %zu keys", sizeof(statics) / sizeof(statics[0]));
        return;
    }
    for (size_t i = 0; i < h->hot_keys.count; i++) {
        char *end;
        long long n = strtoll(h->hot_keys.values[i], &end, 10);
        if (*h->hot_keys.values[i] == '\0' || *end != '\0' ||
            n < KEYRULE_SHARDS_MIN || n > KEYRULE_SHARDS_MAX) {
            char key[300];
            snprintf(key, sizeof(key), "source.hot_keys.%s",
                     h->hot_keys.keys[i]);
            node_error(w, find_key(w, v, "hot_keys"), key,
                       "expected a shard count from %d to %d, found `%s`",
                       KEYRULE_SHARDS_MIN, KEYRULE_SHARDS_MAX,
                       h->hot_keys.values[i]);
            return;
        }
        statics[i] = (struct keyrule_static){h->hot_keys.keys[i], n};
    }
    if ((h->hot_keys.count > 0 || h->auto_shard) && h->shard_by == NULL) {
        node_error(w, v, "source.shard_by",
                   "hot keys need `shard_by` (e.g. json:order_id): it "
                   "keeps each entity's records on one shard, in order");
        return;
    }
    kr = cfg_http_keyrule(cfg, statics, NULL, NULL, &err);
    if (kr == NULL) {
        const char *at = strncmp(err.msg, "shard_by", 8) == 0 ? "shard_by"
                         : strncmp(err.msg, "hot_keys", 8) == 0 ? "hot_keys"
                         : strncmp(err.msg, "separator", 9) == 0
                             ? "shard_separator"
                             : "key";
        char key[64];
        snprintf(key, sizeof(key), "source.%s", at);
        const yaml_node_t *n = find_key(w, v, at);
        node_error(w, n != NULL ? n : v, key, "%s", err.msg);
        return;
    }
    keyrule_destroy(kr);
}

keyrule_t *cfg_http_keyrule(const struct cfg *cfg,
                            struct keyrule_static *statics,
                            keyrule_partition_fn *partition_of, void *arg,
                            struct sl_error *err)
{
    const struct cfg_http_source *h = &cfg->http;
    struct keyrule_static local[64];
    size_t n = h->hot_keys.count < 64 ? h->hot_keys.count : 64;

    if (statics == NULL) {
        statics = local;
        for (size_t i = 0; i < n; i++) {
            statics[i] = (struct keyrule_static){
                h->hot_keys.keys[i], strtoll(h->hot_keys.values[i], NULL, 10)};
        }
    }
    struct keyrule_options o = {
        .key = h->key,
        .shard_by = h->shard_by,
        .separator = h->shard_separator,
        .statics = statics,
        .static_count = n,
        .autos = {.enabled = h->auto_shard,
                  .share = h->auto_shard_share,
                  .capacity = h->auto_shard_capacity,
                  .window = h->auto_shard_window,
                  .min_records = h->auto_shard_min_records,
                  .shards = h->auto_shard_shards,
                  .hold_ms = h->auto_shard_hold_ms},
        /* Load-time checks know no partitions: any count will do. */
        .partitions = partition_of != NULL ? cfg->http_partitions : 1,
        .partition_of = partition_of,
        .partition_arg = arg,
    };
    if (partition_of == NULL) {
        o.autos.enabled = 0;
    }
    return keyrule_new(&o, err);
}

static void walk_root(struct walker *w, struct cfg *cfg,
                      const yaml_node_t *root)
{
    int have_pipeline = 0, have_source = 0, have_sinks = 0;
    int have_delivery = 0, have_lua = 0, have_dlq = 0, have_dedupe = 0;
    int have_tracing = 0;

    if (root == NULL || root->type != YAML_MAPPING_NODE) {
        cfg_errors_add(w->errs, w->file, 1, 1, "",
                       "expected a mapping with pipeline, source and sinks");
        return;
    }
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start;
         p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(w->doc, p->value);
        const char *key = k->type == YAML_SCALAR_NODE ? scalar_text(k) : "";

        if (strcmp(key, "pipeline") == 0) {
            have_pipeline = 1;
            if (v->type != YAML_SCALAR_NODE || !valid_sink_name(
                                                   scalar_text(v))) {
                node_error(w, v, "pipeline",
                           "expected a name of letters, digits, _ and -");
                continue;
            }
            free(cfg->pipeline); /* the prescan refuses a repeat; still */
            cfg->pipeline = strdup(scalar_text(v));
        } else if (strcmp(key, "source") == 0 ||
                   strcmp(key, "delivery") == 0) {
            int is_source = key[0] == 's';
            const struct opt_spec *table[2] = {
                is_source ? cfg_source_type_options : cfg_delivery_options,
                cfg_source_options};
            void *base[2] = {is_source ? (void *)cfg
                                       : (void *)&cfg->delivery,
                             &cfg->source};
            if (is_source) {
                have_source = 1;
            } else {
                have_delivery = 1;
            }
            if (v->type != YAML_MAPPING_NODE) {
                node_error(w, v, key, "expected a mapping, found %s",
                           node_type_name(v));
                continue;
            }
            const yaml_node_t *type = is_source ? find_key(w, v, "type")
                                                : NULL;
            if (type != NULL && type->type == YAML_SCALAR_NODE &&
                strcmp(scalar_text(type), "http") == 0) {
                table[1] = cfg_http_source_options;
                base[1] = &cfg->http;
            }
            walk_mapping(w, v, key, table, base, is_source ? 2 : 1);
            if (is_source && cfg->source_type == CFG_SOURCE_HTTP) {
                const yaml_node_t *hk = find_key(w, v, "hot_keys");
                const yaml_node_t *at = hk != NULL ? hk : v;
                cfg->http.hot_keys_line = (int)at->start_mark.line + 1;
                cfg->http.hot_keys_col = (int)at->start_mark.column + 1;
                check_http_source(w, cfg, v);
            } else if (!is_source) {
                cfg->delivery_ordering_set =
                    find_key(w, v, "ordering") != NULL;
            } else {
                check_topics(w, v, "topics", "source",
                             (const char *const *)cfg->source.topics.items,
                             cfg->source.topics.count);
                const yaml_node_t *props = find_key(w, v, "properties");
                const yaml_node_t *at = props != NULL ? props : v;
                cfg->source.properties_line = (int)at->start_mark.line + 1;
                cfg->source.properties_col = (int)at->start_mark.column + 1;
            }
        } else if (strcmp(key, "mode") == 0) {
            apply_value(w, &cfg_root_options[1], v, cfg, key);
        } else if (strcmp(key, "transform") == 0) {
            apply_value(w, &cfg_root_options[0], v, cfg, key);
            cfg->transform_line = (int)v->start_mark.line + 1;
            cfg->transform_col = (int)v->start_mark.column + 1;
        } else if (strcmp(key, "lua") == 0 || strcmp(key, "dlq") == 0 ||
                   strcmp(key, "admin") == 0 ||
                   strcmp(key, "tracing") == 0 ||
                   strcmp(key, "outcomes") == 0) {
            int is_lua = key[0] == 'l', is_admin = key[0] == 'a',
                is_tracing = key[0] == 't', is_outcomes = key[0] == 'o';
            const struct opt_spec *table[1] = {
                is_lua        ? cfg_lua_options
                : is_admin    ? cfg_admin_options
                : is_tracing  ? cfg_tracing_options
                : is_outcomes ? cfg_outcomes_options
                              : cfg_dlq_options};
            void *base[1] = {is_lua        ? (void *)&cfg->lua
                             : is_admin    ? (void *)&cfg->admin
                             : is_tracing  ? (void *)&cfg->tracing
                             : is_outcomes ? (void *)&cfg->outcomes
                                           : (void *)&cfg->dlq};
            if (is_lua) {
                have_lua = 1;
            } else if (is_tracing) {
                have_tracing = 1;
            } else if (!is_admin && !is_outcomes) {
                have_dlq = 1;
            }
            if (v->type != YAML_MAPPING_NODE) {
                node_error(w, v, key, "expected a mapping, found %s",
                           node_type_name(v));
                continue;
            }
            walk_mapping(w, v, key, table, base, 1);
            const char *why;
            if (is_tracing &&
                (why = endpoint_problem(cfg->tracing.otlp_endpoint)) != NULL) {
                node_error(w, find_key(w, v, "otlp_endpoint"),
                           "tracing.otlp_endpoint", "%s", why);
            }
            char *full;
            if (is_outcomes && cfg->outcomes.path != NULL &&
                cfg->outcomes.path[0] == '\0') {
                node_error(w, find_key(w, v, "path"), "outcomes.path",
                           "expected a file name, found an empty string");
            } else if (is_outcomes && cfg->outcomes.path != NULL &&
                       cfg->outcomes.path[0] != '/' &&
                       asprintf(&full, "%s/%s", w->dir,
                                cfg->outcomes.path) >= 0) {
                free(cfg->outcomes.path);
                cfg->outcomes.path = full;
            }
            if (is_outcomes && (cfg->outcomes.path == NULL) ==
                                   (cfg->outcomes.topic == NULL)) {
                node_error(w, v, "outcomes",
                           "expected one of `path` (a file) and `topic`");
            }
            if (is_admin || is_tracing || is_outcomes) {
                continue;
            }
            if (!is_lua && cfg->dlq.topic != NULL) {
                const char *names[1] = {cfg->dlq.topic};
                check_topics(w, v, "topic", "dlq", names, 1);
            }
            if (!is_lua) {
                const yaml_node_t *props = find_key(w, v, "properties");
                const yaml_node_t *at = props != NULL ? props : v;
                cfg->dlq.properties_line = (int)at->start_mark.line + 1;
                cfg->dlq.properties_col = (int)at->start_mark.column + 1;
            }
        } else if (strcmp(key, "dedupe") == 0) {
            if (have_dedupe++) {
                continue; /* a repeat: the prescan reported it */
            }
            if (v->type != YAML_MAPPING_NODE) {
                node_error(w, v, key, "expected a mapping, found %s",
                           node_type_name(v));
                continue;
            }
            walk_dedupe(w, cfg, v);
        } else if (strcmp(key, "sinks") == 0) {
            have_sinks = 1;
            if (v->type != YAML_MAPPING_NODE ||
                v->data.mapping.pairs.start == v->data.mapping.pairs.top) {
                node_error(w, v, "sinks",
                           "expected a mapping of sink names to sinks");
                continue;
            }
            for (yaml_node_pair_t *sp = v->data.mapping.pairs.start;
                 sp < v->data.mapping.pairs.top; sp++) {
                yaml_node_t *sk = yaml_document_get_node(w->doc, sp->key);
                yaml_node_t *sv = yaml_document_get_node(w->doc, sp->value);
                if (sk->type != YAML_SCALAR_NODE) {
                    node_error(w, sk, "sinks", "expected a sink name");
                    continue;
                }
                walk_sink(w, cfg, sk, sv);
            }
        } else {
            static const struct opt_spec root_keys[] = {
                {.name = "pipeline"}, {.name = "source"},
                {.name = "delivery"}, {.name = "sinks"},
                {.name = "transform"}, {.name = "lua"}, {.name = "dlq"},
                {.name = "dedupe"}, {.name = "admin"},
                {.name = "tracing"}, {.name = "outcomes"},
                {.name = "mode"}, {0}};
            const struct opt_spec *tables[1] = {root_keys};
            char msg[512];
            snprintf(msg, sizeof(msg), "unknown key");
            suggest(msg, sizeof(msg), key, tables, 1);
            node_error(w, k, key, "%s", msg);
        }
    }
    if (!have_pipeline) {
        node_error(w, root, "pipeline", "missing required key `pipeline`");
    }
    if (!have_source) {
        node_error(w, root, "source", "missing required key `source`");
    }
    if (!have_sinks) {
        node_error(w, root, "sinks", "missing required key `sinks`");
    }
    /* Every delivery and lua option has a default: apply them. */
    char why[256];
    for (const struct opt_spec *s = cfg_delivery_options;
         !have_delivery && s->name; s++) {
        parse_scalar(s, s->def, &cfg->delivery, why, sizeof(why));
    }
    for (const struct opt_spec *s = cfg_lua_options; !have_lua && s->name;
         s++) {
        parse_scalar(s, s->def, &cfg->lua, why, sizeof(why));
    }
    for (const struct opt_spec *s = cfg_dlq_options; !have_dlq && s->name;
         s++) {
        if (s->def != NULL) {
            parse_scalar(s, s->def, &cfg->dlq, why, sizeof(why));
        }
    }
    for (const struct opt_spec *s = cfg_tracing_options;
         !have_tracing && s->name; s++) {
        if (s->def != NULL) {
            parse_scalar(s, s->def, &cfg->tracing, why, sizeof(why));
        }
    }
    for (const struct opt_spec *s = cfg_dedupe_options;
         !have_dedupe && s->name; s++) {
        parse_scalar(s, s->def, &cfg->dedupe, why, sizeof(why));
    }
    check_dedupe_key(w, cfg, root);
}

/* ---- reading YAML safely ---- */

/* Reports the first NUL byte or invalid UTF-8 sequence in text with its
 * line and column (libyaml says 1:1 for these). Returns -1 when found. */
static int check_encoding(const char *file, const unsigned char *text,
                          size_t len, struct cfg_errors *errs)
{
    int line = 1, col = 1;

    for (size_t i = 0; i < len;) {
        unsigned char c = text[i];
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2
                                : (c & 0xf0) == 0xe0 ? 3
                                : (c & 0xf8) == 0xf0 ? 4 : 0;
        uint32_t cp = n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
        if (c == '\0') {
            cfg_errors_add(errs, file, line, col, "",
                           "a NUL byte: the file must be UTF-8 text");
            return -1;
        }
        for (size_t k = 1; n > 1 && k < n; k++) {
            if (i + k >= len || (text[i + k] & 0xc0) != 0x80) {
                n = 0;
                break;
            }
            cp = cp << 6 | (text[i + k] & 0x3f);
        }
        /* Overlong forms, surrogates and beyond U+10FFFF are invalid. */
        if (n == 0 || (n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
            (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff)) {
            cfg_errors_add(errs, file, line, col, "",
                           "invalid UTF-8 (byte 0x%02x): the file must be "
                           "UTF-8 text", c);
            return -1;
        }
        if (c == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
        i += n;
    }
    return 0;
}

/* One open mapping or sequence while scanning events. */
struct scan_key {
    char *text;
    int line, col;
    size_t order;
};

struct scan_frame {
    int is_map;
    int want_key;  /* mapping: the next node is a key */
    char *key;     /* mapping: the key whose value is being read */
    struct scan_key *keys;
    size_t nkeys, cap;
};

static int key_cmp(const void *a, const void *b)
{
    const struct scan_key *x = a, *y = b;
    int c = strcmp(x->text, y->text);

    return c != 0 ? c : x->order < y->order ? -1 : x->order > y->order;
}

/* "a.b.c" of the open mappings (frames[0..depth)) and then last. */
static void scan_path(const struct scan_frame *frames, size_t depth,
                      const char *last, char *out, size_t cap)
{
    size_t n = 0;

    out[0] = '\0';
    for (size_t i = 0; i <= depth && n < cap; i++) {
        const char *k = i < depth ? (frames[i].is_map ? frames[i].key : NULL)
                                  : last;
        if (k != NULL) {
            n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? "." : "", k);
        }
    }
}

/* A repeated key, reported once the scan is over (in file order). */
struct dup_report {
    int line, col, first_line;
    char path[256];
};

struct dup_reports {
    struct dup_report *items;
    size_t count;
};

static int report_cmp(const void *a, const void *b)
{
    const struct dup_report *x = a, *y = b;

    return x->line != y->line ? (x->line > y->line) - (x->line < y->line)
                              : (x->col > y->col) - (x->col < y->col);
}

/* Collects every key of the closing mapping that repeats one before it,
 * at the repeat, naming the first one's line. Returns -1 without memory. */
static int find_duplicates(struct scan_frame *frames, size_t depth,
                           struct dup_reports *out)
{
    struct scan_frame *f = &frames[depth];

    if (f->nkeys < 2) {
        return 0;
    }
    qsort(f->keys, f->nkeys, sizeof(*f->keys), key_cmp);
    for (size_t i = 1; i < f->nkeys; i++) {
        const struct scan_key *first = &f->keys[i];
        if (strcmp(f->keys[i].text, f->keys[i - 1].text) != 0) {
            continue;
        }
        while (first > f->keys && strcmp(first[-1].text, first->text) == 0) {
            first--;
        }
        struct dup_report *r =
            realloc(out->items, (out->count + 1) * sizeof(*r));
        if (r == NULL) {
            return -1;
        }
        out->items = r;
        r = &r[out->count++];
        r->line = f->keys[i].line;
        r->col = f->keys[i].col;
        r->first_line = first->line;
        scan_path(frames, depth, f->keys[i].text, r->path, sizeof(r->path));
    }
    return 0;
}

static void free_frame(struct scan_frame *f)
{
    for (size_t i = 0; i < f->nkeys; i++) {
        free(f->keys[i].text);
    }
    free(f->keys);
    free(f->key);
    memset(f, 0, sizeof(*f));
}

/* Notes a scalar (or alias) node in the innermost frame: a key is
 * remembered for the duplicate check and the error path. */
static int scan_node(struct scan_frame *f, const char *key_text,
                     const yaml_mark_t *mark, size_t order)
{
    if (f == NULL || !f->is_map) {
        return 0;
    }
    if (!f->want_key) {
        f->want_key = 1;
        return 0;
    }
    f->want_key = 0;
    free(f->key);
    f->key = NULL;
    if (key_text == NULL) {
        return 0; /* a complex key: the walker reports it */
    }
    if (f->nkeys == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct scan_key *k = realloc(f->keys, cap * sizeof(*k));
        if (k == NULL) {
            return -1;
        }
        f->keys = k;
        f->cap = cap;
    }
    f->key = strdup(key_text);
    f->keys[f->nkeys].text = strdup(key_text);
    if (f->key == NULL || f->keys[f->nkeys].text == NULL) {
        return -1;
    }
    f->keys[f->nkeys].line = (int)mark->line + 1;
    f->keys[f->nkeys].col = (int)mark->column + 1;
    f->keys[f->nkeys++].order = order;
    return 0;
}

/* Runs libyaml's event parser over text before the document loader sees
 * it: refuses nesting deeper than CFG_YAML_MAX_DEPTH (the loader's time
 * grows with the square of the depth), a second document (it would be
 * ignored) and duplicate keys in any mapping (the loader keeps both).
 * Returns 0 when the loader may run. */
static int prescan(const char *file, const unsigned char *text, size_t len,
                   struct cfg_errors *errs, int *dups)
{
    struct scan_frame frames[CFG_YAML_MAX_DEPTH + 1];
    yaml_parser_t parser;
    yaml_event_t ev;
    struct dup_reports reports = {0};
    size_t depth = 0, order = 0;
    int docs = 0, errors_before = errs->count, done = 0;

    memset(frames, 0, sizeof(frames));
    if (!yaml_parser_initialize(&parser)) {
        cfg_errors_add(errs, file, 0, 0, "", "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&parser, text, len);
    while (!done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            const yaml_mark_t *m =
                parser.problem_mark.line || parser.problem_mark.column
                    ? &parser.problem_mark
                    : &parser.context_mark;
            cfg_errors_add(errs, file, (int)m->line + 1, (int)m->column + 1,
                           "", "invalid YAML: %s%s%s",
                           parser.problem ? parser.problem : "parse error",
                           parser.context ? " " : "",
                           parser.context ? parser.context : "");
            break;
        }
        struct scan_frame *top = depth > 0 ? &frames[depth - 1] : NULL;
        const yaml_mark_t *at = &ev.start_mark;
        int bad = 0;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                cfg_errors_add(errs, file, (int)at->line + 1,
                               (int)at->column + 1, "",
                               "a second YAML document: a pipeline file "
                               "holds one (remove the `---` or split the "
                               "file)");
                bad = done = 1;
            }
            break;
        case YAML_SCALAR_EVENT:
            bad = scan_node(top, (const char *)ev.data.scalar.value, at,
                            order++);
            break;
        case YAML_ALIAS_EVENT:
            bad = scan_node(top, NULL, at, order++);
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (top != NULL && top->is_map && top->want_key) {
                bad = scan_node(top, NULL, at, order++);
            } else {
                bad = scan_node(top, "", at, order++);
            }
            if (depth == CFG_YAML_MAX_DEPTH) {
                cfg_errors_add(errs, file, (int)at->line + 1,
                               (int)at->column + 1, "",
                               "nested deeper than %d levels",
                               CFG_YAML_MAX_DEPTH);
                bad = done = 1;
                break;
            }
            frames[depth].is_map = ev.type == YAML_MAPPING_START_EVENT;
            frames[depth].want_key = 1;
            depth++;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth > 0) {
                depth--;
                bad = find_duplicates(frames, depth, &reports);
                free_frame(&frames[depth]);
            }
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
        if (bad && !done) {
            cfg_errors_add(errs, file, 0, 0, "", "out of memory");
            done = 1;
        }
    }
    for (size_t i = 0; i <= depth && i <= CFG_YAML_MAX_DEPTH; i++) {
        free_frame(&frames[i]);
    }
    yaml_parser_delete(&parser);
    if (reports.count > 0) {
        qsort(reports.items, reports.count, sizeof(*reports.items),
              report_cmp);
    }
    for (size_t i = 0; i < reports.count; i++) {
        const struct dup_report *r = &reports.items[i];
        cfg_errors_add(errs, file, r->line, r->col, r->path,
                       "duplicate key (first at line %d)", r->first_line);
    }
    *dups = (int)reports.count;
    free(reports.items);
    return errs->count - *dups != errors_before ? -1 : 0;
}

/* cfg_parse_yaml, except that with dups_ok a document whose only fault
 * is a repeated key is loaded (returning 0, the repeats reported), so
 * that the walker can report the rest of the file's errors too. */
static int parse_yaml(const char *file, FILE *fp, const char *text,
                      size_t len, yaml_document_t *doc,
                      struct cfg_errors *errs, int dups_ok)
{
    yaml_parser_t parser;
    char *buf = NULL;
    int rc = -1;

    if (fp != NULL) {
        /* Read it whole: the text is scanned twice. */
        size_t cap = 0, n;
        len = 0;
        do {
            if (len == cap) {
                cap = cap ? cap * 2 : 65536;
                char *b = realloc(buf, cap);
                if (b == NULL) {
                    free(buf);
                    cfg_errors_add(errs, file, 0, 0, "", "out of memory");
                    return -1;
                }
                buf = b;
            }
            n = fread(buf + len, 1, cap - len, fp);
            len += n;
        } while (n > 0);
        if (ferror(fp)) {
            cfg_errors_add(errs, file, 0, 0, "", "cannot read: %s",
                           strerror(errno));
            free(buf);
            return -1;
        }
        text = buf;
    }
    int dups = 0;
    if (check_encoding(file, (const unsigned char *)text, len, errs) != 0 ||
        prescan(file, (const unsigned char *)text, len, errs, &dups) != 0 ||
        (dups > 0 && !dups_ok)) {
        free(buf);
        return -1;
    }
    if (!yaml_parser_initialize(&parser)) {
        cfg_errors_add(errs, file, 0, 0, "", "out of memory");
        free(buf);
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, doc)) {
        const yaml_mark_t *m =
            parser.problem_mark.line || parser.problem_mark.column
                ? &parser.problem_mark
                : &parser.context_mark;
        cfg_errors_add(errs, file, (int)m->line + 1, (int)m->column + 1, "",
                       "invalid YAML: %s%s%s",
                       parser.problem ? parser.problem : "parse error",
                       parser.context ? " " : "",
                       parser.context ? parser.context : "");
    } else {
        rc = 0;
    }
    yaml_parser_delete(&parser);
    free(buf);
    return rc;
}

int cfg_parse_yaml(const char *file, FILE *fp, const char *text, size_t len,
                   yaml_document_t *doc, struct cfg_errors *errs)
{
    return parse_yaml(file, fp, text, len, doc, errs, 0);
}

struct cfg *cfg_load(const char *path, struct cfg_errors *errs)
{
    yaml_document_t doc;
    struct cfg *cfg = NULL;
    FILE *fp;
    const char *why;
    int errors_before = errs->count;

    fp = open_regular(path, CFG_FILE_MAX, &why);
    if (fp == NULL) {
        cfg_errors_add(errs, path, 0, 0, "", "cannot open: %s", why);
        return NULL;
    }
    if (parse_yaml(path, fp, NULL, 0, &doc, errs, 1) != 0) {
        fclose(fp);
        return NULL;
    }
    fclose(fp);

    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        yaml_document_delete(&doc);
        cfg_errors_add(errs, path, 0, 0, "", "out of memory");
        return NULL;
    }
    cfg->path = strdup(path);
    char *tmp = strdup(path);
    cfg->dir = tmp ? strdup(dirname(tmp)) : NULL;
    free(tmp);

    struct walker w = {.file = path, .dir = cfg->dir ? cfg->dir : ".",
                       .doc = &doc, .errs = errs, .cfg = cfg};
    walk_root(&w, cfg, yaml_document_get_root_node(&doc));
    if (cfg->source.group == NULL && cfg->pipeline != NULL) {
        cfg->source.group = strdup(cfg->pipeline);
    }
    if (cfg->dlq.topic == NULL && cfg->pipeline != NULL &&
        asprintf(&cfg->dlq.topic, "%s.dlq", cfg->pipeline) < 0) {
        cfg->dlq.topic = NULL;
    }
    if (cfg->dlq.brokers == NULL && cfg->source.brokers != NULL) {
        cfg->dlq.brokers = strdup(cfg->source.brokers);
    }
    if (cfg->outcomes.topic != NULL && cfg->outcomes.brokers == NULL &&
        cfg->source.brokers != NULL) {
        cfg->outcomes.brokers = strdup(cfg->source.brokers);
    }
    if (cfg->source_type == CFG_SOURCE_HTTP) {
        check_publisher(cfg, path, errs);
        if (cfg->dlq.brokers == NULL) {
            cfg->dlq.brokers = strdup(""); /* the publisher has no DLQ */
        }
    }
    /* A DLQ topic that is also a source would feed failures back into the
     * pipeline, for ever. */
    for (size_t i = 0; cfg->dlq.topic != NULL && i < cfg->source.topics.count;
         i++) {
        const char *t = cfg->source.topics.items[i];
        if (strcmp(t, cfg->dlq.topic) == 0) {
            cfg_errors_add(errs, path, cfg->dlq.properties_line,
                           cfg->dlq.properties_col, "dlq.topic",
                           "`%s` is a source topic: failures would be "
                           "consumed again",
                           t);
        }
        for (size_t k = 0; k < cfg->sink_count; k++) {
            if (cfg->sinks[k].dlq_topic != NULL &&
                strcmp(t, cfg->sinks[k].dlq_topic) == 0) {
                char key[300];
                snprintf(key, sizeof(key), "sinks.%s.dlq_topic",
                         cfg->sinks[k].name);
                cfg_errors_add(errs, path, cfg->sinks[k].line,
                               cfg->sinks[k].col, key,
                               "`%s` is a source topic: failures would be "
                               "consumed again",
                               t);
            }
        }
    }
    yaml_document_delete(&doc);
    struct sl_error serr;
    if (errs->count == errors_before && cfg->mode == CFG_MODE_SHADOW &&
        cfg->source.group != NULL && cfg_make_shadow(cfg, &serr) != 0) {
        cfg_errors_add(errs, path, 0, 0, "mode", "%s", serr.msg);
    }
    if (errs->count != errors_before || cfg->path == NULL ||
        cfg->dir == NULL || cfg->source.group == NULL ||
        cfg->dlq.topic == NULL || cfg->dlq.brokers == NULL) {
        if (errs->count == errors_before) {
            cfg_errors_add(errs, path, 0, 0, "", "out of memory");
        }
        cfg_free(cfg);
        return NULL;
    }
    return cfg;
}

/* What a publisher pipeline needs besides its source section: a kafka
 * sink (the first is where records go), and none of what only a consumer
 * has. */
static void check_publisher(struct cfg *cfg, const char *path,
                            struct cfg_errors *errs)
{
    cfg->publish_sink = -1;
    for (size_t i = 0; i < cfg->sink_count; i++) {
        if (strcmp(cfg->sinks[i].type, "kafka") == 0) {
            cfg->publish_sink = (int)i;
            break;
        }
    }
    if (cfg->publish_sink >= 0 && cfg->outcomes.topic != NULL &&
        cfg->outcomes.brokers == NULL) {
        const struct cfg_sink *k = &cfg->sinks[cfg->publish_sink];
        for (const struct opt_spec *o = k->connector->options; o->name; o++) {
            if (strcmp(o->name, "brokers") == 0) {
                const char *b = *(char **)((char *)k->ctx + o->offset);
                cfg->outcomes.brokers = b != NULL ? strdup(b) : NULL;
            }
        }
    }
    /* Concurrent requests have no order to keep, and a client that waits
     * for each answer keeps its own; per-key chains would only make a hot
     * tenant's requests wait for each other. */
    if (!cfg->delivery_ordering_set) {
        cfg->delivery.ordering = CFG_ORDERING_NONE;
    }
    /* A sink that stays down must not hold the requests up: the other
     * sinks' retries end with the request's time unless told otherwise. */
    if (cfg->delivery.retry_deadline_ms == 0 &&
        cfg->delivery.retry_max_attempts == 0) {
        cfg->delivery.retry_deadline_ms = cfg->http.timeout_ms;
    }
    cfg->delivery.drain_timeout_ms = cfg->http.drain_timeout_ms;
    if (cfg->publish_sink < 0 && cfg->sink_count > 0) {
        cfg_errors_add(errs, path, 0, 0, "sinks",
                       "source.type http needs a sink of type kafka: where "
                       "its records go");
    }
    if (cfg->dedupe.store != NULL) {
        cfg_errors_add(errs, path, cfg->dedupe.key_line, cfg->dedupe.key_col,
                       "dedupe.store",
                       "not supported with source.type http: the consumers "
                       "of the topic dedupe by the record's message-id");
    }
    if (cfg->mode == CFG_MODE_SHADOW) {
        cfg_errors_add(errs, path, 0, 0, "mode",
                       "a shadow run is a consumer's: not supported with "
                       "source.type http");
    }
    for (size_t i = 0; i < cfg->sink_count; i++) {
        if (cfg->sinks[i].park_after_ms > 0) {
            cfg_errors_add(errs, path, cfg->sinks[i].line, cfg->sinks[i].col,
                           "park_after",
                           "not supported with source.type http: a parked "
                           "record waits in a retry topic, and a request is "
                           "answered within source.timeout");
        }
    }
}

int cfg_make_shadow(struct cfg *cfg, struct sl_error *err)
{
    char *group;

    if (asprintf(&group, "%s%s", cfg->source.group,
                 CFG_SHADOW_GROUP_SUFFIX) < 0) {
        return sl_error_set(err, "out of memory");
    }
    free(cfg->source.group);
    cfg->source.group = group;
    cfg->mode = CFG_MODE_SHADOW;
    for (size_t i = 0; i < cfg->sink_count; i++) {
        struct cfg_sink *s = &cfg->sinks[i];
        const struct opt_spec *url = NULL;
        if (s->shadow_url == NULL || s->connector == NULL) {
            continue;
        }
        for (const struct opt_spec *o = s->connector->options; o->name; o++) {
            if (strcmp(o->name, "url") == 0 && o->type == OPT_STRING) {
                url = o;
            }
        }
        if (url == NULL) {
            return sl_error_set(err, "sinks.%s.shadow_url: a %s sink has no "
                                "url to replace", s->name, s->type);
        }
        char **slot = (char **)((char *)s->ctx + url->offset);
        char *copy = strdup(s->shadow_url);
        if (copy == NULL) {
            return sl_error_set(err, "out of memory");
        }
        free(*slot);
        *slot = copy;
    }
    return 0;
}

void cfg_free(struct cfg *cfg)
{
    if (cfg == NULL) {
        return;
    }
    free_table(cfg_source_options, &cfg->source);
    free_table(cfg_http_source_options, &cfg->http);
    free_table(cfg_delivery_options, &cfg->delivery);
    free_table(cfg_root_options, cfg);
    free_table(cfg_dlq_options, &cfg->dlq);
    if (cfg->dedupe.ctx != NULL) {
        free_table(cfg->dedupe.store->options, cfg->dedupe.ctx);
        free(cfg->dedupe.ctx);
    }
    free_table(cfg_dedupe_options, &cfg->dedupe);
    free_table(cfg_admin_options, &cfg->admin);
    free_table(cfg_tracing_options, &cfg->tracing);
    free_table(cfg_outcomes_options, &cfg->outcomes);
    for (size_t i = 0; i < cfg->sink_count; i++) {
        struct cfg_sink *s = &cfg->sinks[i];
        if (s->ctx != NULL) {
            free_table(s->connector->options, s->ctx);
            free(s->ctx);
        }
        free_table(cfg_sink_options, s);
        free(s->name);
    }
    free(cfg->sinks);
    free(cfg->keypos);
    free(cfg->pipeline);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
}
