/* cfg.c -- pipeline YAML → struct cfg, validated against option tables.
 *
 * libyaml loads the document with a mark (line, column) on every node;
 * the walker checks each mapping against its table, so an unknown key,
 * a value of the wrong type or a missing required key is reported with
 * where it is and what was expected. Scalars get ${ENV} expansion first.
 * Values that may hold secrets are never echoed in errors. */
#include "cfg.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "units.h"

static const char *const start_choices[] = {"earliest", "latest", NULL};
static const char *const ordering_choices[] = {"key", "partition", "none",
                                               NULL};

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
    {.name = "properties", .type = OPT_STRING_MAP,
     .offset = offsetof(struct cfg_source, properties),
     .doc = "librdkafka consumer properties passed through as they are "
            "(e.g. `session.timeout.ms`, `security.protocol`); they "
            "override sluice's defaults."},
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
            "records without a key are not ordered."},
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

const struct opt_spec cfg_root_options[] = {
    {.name = "transform", .type = OPT_STRING, .flags = OPT_FILE,
     .offset = offsetof(struct cfg, transform),
     .doc = "A Lua script (path relative to this file) whose "
            "`transform(msg)` runs on every message before the sinks: it "
            "returns the message, `nil` to drop it, or a list to split "
            "it. See docs/lua.md."},
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
     .doc = "The connector: `http`."},
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
    {.name = "retry_on", .type = OPT_STRING_LIST,
     .def = "transport, 408, 425, 429, 500, 502, 503, 504",
     .offset = offsetof(struct cfg_sink, retry_on),
     .doc = "Answers worth another attempt: statuses (`503`), classes "
            "(`5xx`) and `transport` (no answer: refused, reset, timed "
            "out). A status listed nowhere is delivered when 2xx and "
            "permanent otherwise: it goes to the dead-letter queue at once. "
            "A status beats its class when both are listed."},
    {.name = "permanent_on", .type = OPT_STRING_LIST, .def = "",
     .offset = offsetof(struct cfg_sink, permanent_on),
     .doc = "Answers that fail for good (to the dead-letter queue), e.g. "
            "`501` when `retry_on` lists `5xx`."},
    {.name = "done_on", .type = OPT_STRING_LIST, .def = "",
     .offset = offsetof(struct cfg_sink, done_on),
     .doc = "Answers that count as delivered, e.g. `409` from a sink that "
            "answers Conflict to a request it already has."},
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

const struct connector *const cfg_connectors[] = {&http_connector, NULL};

/* ---- errors ---- */

void cfg_errors_add(struct cfg_errors *errs, const char *file, int line,
                    int col, const char *key, const char *fmt, ...)
{
    size_t room = sizeof(errs->text) - errs->len;
    va_list ap;
    int n;

    errs->count++;
    if (room < 2) {
        return;
    }
    n = snprintf(errs->text + errs->len, room, "%s:%d:%d: %s%s", file, line,
                 col, key != NULL && *key ? key : "",
                 key != NULL && *key ? ": " : "");
    if (n < 0 || (size_t)n >= room) {
        errs->len = sizeof(errs->text) - 1;
        return;
    }
    errs->len += (size_t)n;
    room -= (size_t)n;
    va_start(ap, fmt);
    n = vsnprintf(errs->text + errs->len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room - 1) {
        errs->len = sizeof(errs->text) - 1;
        errs->text[errs->len - 1] = '\n';
        return;
    }
    errs->len += (size_t)n;
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

static size_t levenshtein(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];

    if (lb >= 64) {
        return SIZE_MAX;
    }
    for (size_t j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = diag + cost;
            if (up + 1 < best) {
                best = up + 1;
            }
            if (row[j - 1] + 1 < best) {
                best = row[j - 1] + 1;
            }
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Appends "; did you mean `x`?" or the list of valid names to msg. */
static void suggest(char *msg, size_t cap, const char *key,
                    const struct opt_spec *const *tables, size_t ntables)
{
    const char *best = NULL;
    size_t best_dist = SIZE_MAX, len = strlen(msg);

    for (size_t t = 0; t < ntables; t++) {
        for (const struct opt_spec *s = tables[t]; s->name != NULL; s++) {
            size_t d = levenshtein(key, s->name);
            if (d < best_dist) {
                best_dist = d;
                best = s->name;
            }
        }
    }
    size_t limit = strlen(key) / 3 + 1;
    if (best != NULL && best_dist <= (limit > 3 ? 3 : limit)) {
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

/* Makes *text (a path relative to the pipeline file) a path from the
 * working directory and checks that it can be read. */
static int resolve_file(struct walker *w, const yaml_node_t *node,
                        const char *path, char **text)
{
    char *resolved = *text;

    if (**text != '/' &&
        asprintf(&resolved, "%s/%s", w->dir, *text) < 0) {
        node_error(w, node, path, "out of memory");
        free(*text);
        return -1;
    }
    if (access(resolved, R_OK) != 0) {
        node_error(w, node, path, "cannot read %s: %s", resolved,
                   strerror(errno));
        if (resolved != *text) {
            free(resolved);
        }
        free(*text);
        return -1;
    }
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
        if (l->count == 0) {
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
            node_error(w, k, path, "duplicate key (first at line %d)",
                       (int)seen_node[t][idx]->start_mark.line + 1);
            continue;
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
    static const char *const names[] = {"retry_on", "permanent_on",
                                        "done_on"};
    const struct opt_list *lists[] = {&sink->retry_on, &sink->permanent_on,
                                      &sink->done_on};
    const unsigned char answers[] = {CFG_ANSWER_RETRY, CFG_ANSWER_PERMANENT,
                                     CFG_ANSWER_DONE};

    memset(sink->answers, CFG_ANSWER_DEFAULT, sizeof(sink->answers));
    for (int exact = 0; exact < 2; exact++) {
        for (size_t l = 0; l < 3; l++) {
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
            node_error(w, k, prefix, "duplicate sink (first at line %d)",
                       cfg->sinks[i].line);
            return;
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
    const yaml_node_t *script = find_key(w, v, "transform");
    if (script != NULL) {
        sink->transform_line = (int)script->start_mark.line + 1;
        sink->transform_col = (int)script->start_mark.column + 1;
    }
    if ((script = find_key(w, v, "retry")) != NULL) {
        sink->retry_line = (int)script->start_mark.line + 1;
        sink->retry_col = (int)script->start_mark.column + 1;
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

static void walk_root(struct walker *w, struct cfg *cfg,
                      const yaml_node_t *root)
{
    int have_pipeline = 0, have_source = 0, have_sinks = 0;
    int have_delivery = 0, have_lua = 0, have_dlq = 0;

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
            cfg->pipeline = strdup(scalar_text(v));
        } else if (strcmp(key, "source") == 0 ||
                   strcmp(key, "delivery") == 0) {
            int is_source = key[0] == 's';
            const struct opt_spec *table[1] = {
                is_source ? cfg_source_options : cfg_delivery_options};
            void *base[1] = {is_source ? (void *)&cfg->source
                                       : (void *)&cfg->delivery};
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
            walk_mapping(w, v, key, table, base, 1);
            if (is_source) {
                const yaml_node_t *props = find_key(w, v, "properties");
                const yaml_node_t *at = props != NULL ? props : v;
                cfg->source.properties_line = (int)at->start_mark.line + 1;
                cfg->source.properties_col = (int)at->start_mark.column + 1;
            }
        } else if (strcmp(key, "transform") == 0) {
            apply_value(w, &cfg_root_options[0], v, cfg, key);
            cfg->transform_line = (int)v->start_mark.line + 1;
            cfg->transform_col = (int)v->start_mark.column + 1;
        } else if (strcmp(key, "lua") == 0 || strcmp(key, "dlq") == 0) {
            int is_lua = key[0] == 'l';
            const struct opt_spec *table[1] = {is_lua ? cfg_lua_options
                                                      : cfg_dlq_options};
            void *base[1] = {is_lua ? (void *)&cfg->lua : (void *)&cfg->dlq};
            if (is_lua) {
                have_lua = 1;
            } else {
                have_dlq = 1;
            }
            if (v->type != YAML_MAPPING_NODE) {
                node_error(w, v, key, "expected a mapping, found %s",
                           node_type_name(v));
                continue;
            }
            walk_mapping(w, v, key, table, base, 1);
            if (!is_lua) {
                const yaml_node_t *props = find_key(w, v, "properties");
                const yaml_node_t *at = props != NULL ? props : v;
                cfg->dlq.properties_line = (int)at->start_mark.line + 1;
                cfg->dlq.properties_col = (int)at->start_mark.column + 1;
            }
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
                {0}};
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
}

int cfg_parse_yaml(const char *file, FILE *fp, const char *text, size_t len,
                   yaml_document_t *doc, struct cfg_errors *errs)
{
    yaml_parser_t parser;

    if (!yaml_parser_initialize(&parser)) {
        cfg_errors_add(errs, file, 0, 0, "", "out of memory");
        return -1;
    }
    if (fp != NULL) {
        yaml_parser_set_input_file(&parser, fp);
    } else {
        yaml_parser_set_input_string(&parser, (const unsigned char *)text,
                                     len);
    }
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
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_parser_delete(&parser);
    return 0;
}

struct cfg *cfg_load(const char *path, struct cfg_errors *errs)
{
    yaml_document_t doc;
    struct cfg *cfg = NULL;
    FILE *fp;
    int errors_before = errs->count;

    fp = fopen(path, "rb");
    if (fp == NULL) {
        cfg_errors_add(errs, path, 0, 0, "", "cannot open: %s",
                       strerror(errno));
        return NULL;
    }
    if (cfg_parse_yaml(path, fp, NULL, 0, &doc, errs) != 0) {
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
                       .doc = &doc, .errs = errs};
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

void cfg_free(struct cfg *cfg)
{
    if (cfg == NULL) {
        return;
    }
    free_table(cfg_source_options, &cfg->source);
    free_table(cfg_delivery_options, &cfg->delivery);
    free_table(cfg_root_options, cfg);
    free_table(cfg_dlq_options, &cfg->dlq);
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
    free(cfg->pipeline);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
}
