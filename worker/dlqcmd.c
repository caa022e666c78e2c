/* dlqcmd.c -- `sluice dlq stats|list|show|replay PIPELINE.yaml ...`.
 *
 * stats, list and show only read. They assign the DLQ partitions
 * explicitly under a throwaway group id (no membership, auto-commit off,
 * nothing ever committed) and read from the lowest offset that any
 * concerned sink's replay group <pipeline>.dlq.<sink> has committed up to
 * the high watermark seen at start. Those committed offsets, fetched with
 * one short-lived handle per group that never joins it, say which records
 * each sink has worked. Each partition is read from its own queue and one
 * record is held per partition, so records come out merged oldest first
 * and memory stays bounded whatever the DLQ's size; stats keeps capped
 * counters only. replay is parsed here and run by dlq_replay().
 *
 * Every byte of a DLQ record is untrusted: header values are length-
 * delimited, may hold NULs and be huge, so fields are cut and escaped
 * before they are printed, and a missing field shows as `?`. */
#include "dlqcmd.h"
#include "utf8.h"

#include <getopt.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "dlq.h"
#include "engine.h"
#include "log.h"
#include "units.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* How long one broker call (or one wait for a record) may take. */
#define TIMEOUT_MS 10000
/* Characters of a header shown in a column (then "..."). */
#define FIELD_MAX 64
#define FIELD_BUF (FIELD_MAX + 4)
/* Distinct reasons counted per table; the rest add up under "(other)". */
#define MAX_REASONS 1000
#define COUNT_SLOTS 2048 /* a power of two above 2 * MAX_REASONS */
/* Distinct sink names not in the pipeline; the rest add up together. */
#define MAX_ORPHANS 20
#define OTHER_KEY "(other)"
#define OTHER_SINKS "(other sinks)"
#define MISSING "?"

/* ---- pure pieces ---- */

static int all_digits(const char *s, size_t n)
{
    if (n == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }
    return 1;
}

int dlqcmd_parse_since(const char *text, int64_t now_ms, int64_t *since_ms)
{
    size_t n = text != NULL ? strlen(text) : 0;
    int64_t v, ago;

    if (n == 0) {
        return -1;
    }
    if (all_digits(text, n)) {
        /* Fewer digits would be before 2001: surely a missing unit. */
        if (n < 13 || units_parse_int(text, &v) != 0) {
            return -1;
        }
        *since_ms = v;
        return 0;
    }
    if (text[n - 1] == 'd' && all_digits(text, n - 1)) {
        char days[32];
        if (n > sizeof(days)) {
            return -1;
        }
        memcpy(days, text, n - 1);
        days[n - 1] = '\0';
        if (units_parse_int(days, &v) != 0 || v > INT64_MAX / 86400000) {
            return -1;
        }
        ago = v * 86400000;
    } else if (units_parse_duration(text, &ago) != 0) {
        return -1;
    }
    *since_ms = ago >= now_ms ? 0 : now_ms - ago;
    return 0;
}

int dlqcmd_parse_position(const char *text, int32_t *partition,
                          int64_t *offset)
{
    const char *colon;
    int64_t p = 0, o;

    if (text == NULL) {
        return -1;
    }
    colon = strchr(text, ':');
    if (colon != NULL) {
        char part[16];
        size_t n = (size_t)(colon - text);
        if (n == 0 || n >= sizeof(part) || !all_digits(text, n)) {
            return -1;
        }
        memcpy(part, text, n);
        part[n] = '\0';
        if (units_parse_int(part, &p) != 0 || p > INT32_MAX) {
            return -1;
        }
        text = colon + 1;
    }
    if (!all_digits(text, strlen(text)) || units_parse_int(text, &o) != 0) {
        return -1;
    }
    *partition = (int32_t)p;
    *offset = o;
    return 0;
}

int dlqcmd_parse_status(const void *text, size_t len)
{
    const char *s = text;
    int v = 0;

    if (s == NULL) {
        return DLQCMD_STATUS_NONE;
    }
    if (len == 0 || len > 3 || !all_digits(s, len)) {
        return DLQCMD_STATUS_BAD;
    }
    for (size_t i = 0; i < len; i++) {
        v = v * 10 + (s[i] - '0');
    }
    return v > 0 ? v : DLQCMD_STATUS_BAD;
}

char *dlqcmd_reason_key(char *out, size_t cap, const char *cls, int status)
{
    if (cls == NULL) {
        cls = MISSING;
    }
    if (status > 0) {
        snprintf(out, cap, "%s %d", cls, status);
    } else if (status == DLQCMD_STATUS_BAD) {
        snprintf(out, cap, "%s ?", cls);
    } else {
        snprintf(out, cap, "%s", cls);
    }
    return out;
}

int dlqcmd_reason_matches(const char *want, const char *cls, int status)
{
    char key[FIELD_BUF + 16];
    size_t n = strlen(want);

    if (cls != NULL && strcmp(want, cls) == 0) {
        return 1;
    }
    if (status > 0) {
        char code[8];
        snprintf(code, sizeof(code), "%d", status);
        if (strcmp(want, code) == 0) {
            return 1;
        }
        if (n == 3 && want[0] >= '1' && want[0] <= '9' &&
            (want[1] == 'x' || want[1] == 'X') &&
            (want[2] == 'x' || want[2] == 'X') &&
            status / 100 == want[0] - '0') {
            return 1;
        }
    }
    return strcmp(want, dlqcmd_reason_key(key, sizeof(key), cls, status)) ==
           0;
}

char *dlqcmd_format_age(char *out, size_t cap, int64_t ms)
{
    long long s = ms > 0 ? (long long)(ms / 1000) : 0;

    if (s < 60) {
        snprintf(out, cap, "%llds", s);
    } else if (s < 3600) {
        snprintf(out, cap, "%lldm%llds", s / 60, s % 60);
    } else if (s < 86400) {
        snprintf(out, cap, "%lldh%lldm", s / 3600, s % 3600 / 60);
    } else {
        snprintf(out, cap, "%lldd%lldh", s / 86400, s % 86400 / 3600);
    }
    return out;
}

/* The escaped form of the character at p (n >= 1 bytes left) into piece
 * (NUL-terminated, at most 8 bytes); returns the input bytes used. */
static size_t escape_piece(const unsigned char *p, size_t n, int flags,
                           char piece[16])
{
    uint32_t cp;
    size_t len;

    if (p[0] >= 0x20 && p[0] < 0x7f) {
        if (p[0] == '\\') {
            strcpy(piece, "\\\\");
        } else {
            piece[0] = (char)p[0];
            piece[1] = '\0';
        }
        return 1;
    }
    if (p[0] == '\n' || p[0] == '\t') {
        if (flags & DLQCMD_ESC_NEWLINES) {
            piece[0] = (char)p[0];
            piece[1] = '\0';
        } else {
            strcpy(piece, p[0] == '\n' ? "\\n" : "\\t");
        }
        return 1;
    }
    if (p[0] == '\r') {
        strcpy(piece, "\\r");
        return 1;
    }
    len = p[0] >= 0x80 ? utf8_decode(p, n, &cp) : 0;
    if (len > 0 && cp >= 0xa0) {
        /* Text that could reorder or break what follows it. */
        if ((cp >= 0x202a && cp <= 0x202e) ||
            (cp >= 0x2066 && cp <= 0x2069) || cp == 0x2028 ||
            cp == 0x2029 || cp == 0x200e || cp == 0x200f) {
            snprintf(piece, 16, "\\u%04x", (unsigned)cp);
        } else {
            memcpy(piece, p, len);
            piece[len] = '\0';
        }
        return len;
    }
    snprintf(piece, 16, "\\x%02x", (unsigned)p[0]);
    return 1;
}

static size_t escaped_length(const void *data, size_t len, int flags)
{
    const unsigned char *p = data;
    char piece[16];
    size_t total = 0;

    for (size_t i = 0; i < len;) {
        i += escape_piece(p + i, len - i, flags, piece);
        total += strlen(piece);
    }
    return total;
}

int dlqcmd_escape(char *out, size_t cap, const void *data, size_t len,
                  int flags)
{
    const unsigned char *p = data;
    int cut = escaped_length(data, len, flags) >= cap;
    size_t room = cut ? cap - 4 : cap - 1, o = 0;
    char piece[16];

    for (size_t i = 0; i < len;) {
        size_t used = escape_piece(p + i, len - i, flags, piece);
        size_t plen = strlen(piece);
        if (o + plen > room) {
            break;
        }
        memcpy(out + o, piece, plen);
        o += plen;
        i += used;
    }
    if (cut) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return cut;
}

/* ---- output helpers ---- */

static void escape_write(FILE *f, const void *data, size_t len, int flags)
{
    const unsigned char *p = data;
    char piece[16];

    for (size_t i = 0; i < len;) {
        i += escape_piece(p + i, len - i, flags, piece);
        fputs(piece, f);
    }
}

/* A JSON string of untrusted bytes: as they are when valid UTF-8, else
 * escaped like the text output; null for NULL. */
static json_t *json_bytes(const void *data, size_t len)
{
    json_t *j;
    char *buf;
    size_t n;

    if (data == NULL) {
        return json_null();
    }
    j = json_stringn(data, len);
    if (j != NULL) {
        return j;
    }
    n = escaped_length(data, len, 0) + 1;
    buf = malloc(n);
    if (buf == NULL) {
        return json_null();
    }
    dlqcmd_escape(buf, n, data, len, 0);
    j = json_string(buf);
    free(buf);
    return j != NULL ? j : json_null();
}

static void json_print_line(json_t *j)
{
    if (j != NULL) {
        json_dumpf(j, stdout, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(j);
    }
    putchar('\n');
}

/* ---- one record's context ---- */

struct field {
    const char *p; /* NULL: absent, null or empty */
    size_t len;
};

struct view {
    const rd_kafka_message_t *m;
    const char *topic;
    int64_t ts; /* the record's timestamp; -1: none */
    rd_kafka_headers_t *hdrs; /* the message's; NULL: none */
    struct field pipeline, sink, stage, cls, reason, status, attempts,
        src_topic, src_partition, src_offset, dedupe;
    int status_code;
    char cls_text[FIELD_BUF]; /* escaped and cut; empty when absent */
    char reason_key[FIELD_BUF + 16];
};

static struct field header(rd_kafka_headers_t *hdrs, const char *name)
{
    struct field f = {NULL, 0};
    const void *v = NULL;
    size_t n = 0;

    if (hdrs != NULL &&
        rd_kafka_header_get_last(hdrs, name, &v, &n) ==
            RD_KAFKA_RESP_ERR_NO_ERROR &&
        v != NULL && n > 0) {
        f.p = v;
        f.len = n;
    }
    return f;
}

static int field_is(const struct field *f, const char *s)
{
    size_t n = strlen(s);

    return f->p != NULL && f->len == n && memcmp(f->p, s, n) == 0;
}

/* The field escaped and cut for a column, "?" when absent. */
static const char *field_text(const struct field *f, char *buf, size_t cap)
{
    if (f->p == NULL) {
        return MISSING;
    }
    dlqcmd_escape(buf, cap, f->p, f->len, 0);
    return buf;
}

/* A whole decimal number of a field; 0 or -1. */
static int field_int(const struct field *f, int64_t *v)
{
    char text[24];
    size_t skip = f->p != NULL && f->len > 0 && f->p[0] == '-';

    if (f->p == NULL || f->len >= sizeof(text) ||
        !all_digits(f->p + skip, f->len - skip)) {
        return -1;
    }
    memcpy(text, f->p, f->len);
    text[f->len] = '\0';
    return units_parse_int(text, v);
}

/* A numeric field for JSON: a number, null when absent, else the text. */
static json_t *json_int_field(const struct field *f)
{
    int64_t v;

    if (f->p == NULL) {
        return json_null();
    }
    if (field_int(f, &v) == 0) {
        return json_integer(v);
    }
    return json_bytes(f->p, f->len);
}

static void view_parse(struct view *v, const rd_kafka_message_t *m)
{
    memset(v, 0, sizeof(*v));
    v->m = m;
    v->topic = rd_kafka_topic_name(m->rkt);
    v->ts = rd_kafka_message_timestamp(m, NULL);
    if (rd_kafka_message_headers(m, &v->hdrs) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
        v->hdrs = NULL;
    }
    v->pipeline = header(v->hdrs, DLQ_H_PIPELINE);
    v->sink = header(v->hdrs, DLQ_H_SINK);
    v->stage = header(v->hdrs, DLQ_H_STAGE);
    v->cls = header(v->hdrs, DLQ_H_CLASS);
    v->reason = header(v->hdrs, DLQ_H_REASON);
    v->status = header(v->hdrs, DLQ_H_STATUS);
    v->attempts = header(v->hdrs, DLQ_H_ATTEMPTS);
    v->src_topic = header(v->hdrs, DLQ_H_TOPIC);
    v->src_partition = header(v->hdrs, DLQ_H_PARTITION);
    v->src_offset = header(v->hdrs, DLQ_H_OFFSET);
    v->dedupe = header(v->hdrs, DLQ_H_DEDUPE);
    v->status_code = dlqcmd_parse_status(v->status.p, v->status.len);
    if (v->cls.p != NULL) {
        dlqcmd_escape(v->cls_text, sizeof(v->cls_text), v->cls.p,
                      v->cls.len, 0);
    }
    dlqcmd_reason_key(v->reason_key, sizeof(v->reason_key),
                      v->cls.p != NULL ? v->cls_text : NULL, v->status_code);
}

/* ---- counters of stats ---- */

struct count_entry {
    char *key;
    int64_t n;
};

/* key -> count for at most MAX_REASONS keys; the rest add up in other. */
struct counts {
    struct count_entry *e;
    size_t len, cap;
    uint32_t *slot; /* entry index + 1; 0: free */
    int64_t other;
};

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * 16777619u;
    }
    return h;
}

static int counts_add(struct counts *m, const char *key)
{
    uint32_t h;

    if (m->slot == NULL) {
        m->slot = calloc(COUNT_SLOTS, sizeof(*m->slot));
        if (m->slot == NULL) {
            return -1;
        }
    }
    for (h = hash(key) & (COUNT_SLOTS - 1); m->slot[h] != 0;
         h = (h + 1) & (COUNT_SLOTS - 1)) {
        struct count_entry *e = &m->e[m->slot[h] - 1];
        if (strcmp(e->key, key) == 0) {
            e->n++;
            return 0;
        }
    }
    if (m->len >= MAX_REASONS) {
        m->other++;
        return 0;
    }
    if (m->len == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        struct count_entry *e = realloc(m->e, cap * sizeof(*e));
        if (e == NULL) {
            return -1;
        }
        m->e = e;
        m->cap = cap;
    }
    m->e[m->len].key = strdup(key);
    if (m->e[m->len].key == NULL) {
        return -1;
    }
    m->e[m->len].n = 1;
    m->slot[h] = (uint32_t)++m->len;
    return 0;
}

static void counts_free(struct counts *m)
{
    for (size_t i = 0; i < m->len; i++) {
        free(m->e[i].key);
    }
    free(m->e);
    free(m->slot);
    memset(m, 0, sizeof(*m));
}

static int count_order(const void *a, const void *b)
{
    const struct count_entry *x = *(const struct count_entry *const *)a;
    const struct count_entry *y = *(const struct count_entry *const *)b;

    if (x->n != y->n) {
        return x->n > y->n ? -1 : 1;
    }
    return strcmp(x->key, y->key);
}

/* The entries by count (most first, then by key), "(other)" last, in a
 * new array of *n (the caller frees it; the entries stay m's). */
static const struct count_entry **counts_sorted(struct counts *m, size_t *n,
                                                struct count_entry *other)
{
    const struct count_entry **v = malloc((m->len + 1) * sizeof(*v));

    *n = 0;
    if (v == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < m->len; i++) {
        v[(*n)++] = &m->e[i];
    }
    qsort(v, *n, sizeof(*v), count_order);
    if (m->other > 0) {
        other->key = (char *)OTHER_KEY;
        other->n = m->other;
        v[(*n)++] = other;
    }
    return v;
}

struct sink_stats {
    char *name;
    int64_t depth;
    int64_t oldest, newest; /* record timestamps; -1: none */
    struct counts reasons;
};

/* ---- the command ---- */

struct part {
    const char *topic; /* one of cmd.topics */
    int32_t partition;
    int64_t low, high; /* the watermarks at start */
    int64_t start, next;
    rd_kafka_queue_t *queue; /* detached from the consumer queue */
    rd_kafka_message_t *head;
    int done;
};

struct cmd {
    const struct cfg *cfg;
    const char *bootstrap;
    int json, all;
    const char *sink;   /* --sink, or NULL */
    const char *reason; /* --reason, or NULL */
    int64_t since_ms;   /* 0: none */
    int64_t limit;      /* 0: none */
    int64_t now_ms;
    /* The sinks looked at (indexes into cfg->sinks) and their topics. */
    size_t *sel;
    size_t sel_count;
    const char **topics;
    size_t topic_count;
    /* Reading. */
    rd_kafka_t *rk;
    struct part *parts;
    size_t part_count;
    int64_t *committed; /* [k * part_count + i]; -1: none */
    unsigned char *pending; /* per selected sink, for the current record */
    int64_t other_pipelines;
    char last_error[256]; /* librdkafka's last error callback */
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void client_error_cb(rd_kafka_t *rk, int err, const char *reason,
                            void *opaque)
{
    struct cmd *c = opaque;

    (void)rk;
    (void)err;
    snprintf(c->last_error, sizeof(c->last_error), "%s", reason);
}

/* librdkafka retries connections by itself and logs every attempt: the
 * command reports the outcome in one line instead. */
static void client_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                          const char *buf)
{
    (void)rk;
    (void)level;
    log_debug("kafka %s: %s", fac, buf);
}

/* dlq.properties are producer properties; the connection ones (security,
 * SASL, SSL) apply to reading too, these do not or are ours. */
static const char *const reader_skipped[] = {
    "bootstrap.servers", "group.id", "enable.auto.commit",
    "enable.auto.offset.store", "enable.partition.eof", "auto.offset.reset",
    "enable.idempotence", "acks", "transactional.id", NULL};

static const struct {
    const char *name, *value;
} reader_defaults[] = {
    {"enable.auto.commit", "false"},
    {"enable.auto.offset.store", "false"},
    {"enable.partition.eof", "true"},
    {"auto.offset.reset", "earliest"},
    /* Prefetch per partition: bounds memory with many partitions. */
    {"queued.max.messages.kbytes", "1024"},
    {"max.partition.fetch.bytes", "262144"},
    {"log.connection.close", "false"},
    {"client.software.name", "sluice"},
    {NULL, NULL},
};

static int is_reader_skipped(const char *name)
{
    for (size_t i = 0; reader_skipped[i] != NULL; i++) {
        if (strcmp(reader_skipped[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* A consumer handle with group id group that never joins it. */
static rd_kafka_t *client_new(struct cmd *c, const char *group,
                              struct sl_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const struct opt_map *props = &c->cfg->dlq.properties;
    char errstr[512];
    rd_kafka_t *rk;

    for (size_t i = 0; i < props->count; i++) {
        if (!is_reader_skipped(props->keys[i]) &&
            rd_kafka_conf_set(conf, props->keys[i], props->values[i], errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK) {
            sl_error_set(err, "dlq.properties: `%s`: %s", props->keys[i],
                         errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    for (size_t i = 0; reader_defaults[i].name != NULL; i++) {
        rd_kafka_conf_set(conf, reader_defaults[i].name,
                          reader_defaults[i].value, NULL, 0);
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", c->bootstrap, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
        sl_error_set(err, "%s", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_error_cb(conf, client_error_cb);
    rd_kafka_conf_set_log_cb(conf, client_log_cb);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        sl_error_set(err, "kafka client: %s", errstr);
    }
    return rk;
}

static void client_free(rd_kafka_t *rk)
{
    if (rk != NULL) {
        /* No close: there is no membership to leave, nothing to commit. */
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
}

/* Reports a failed broker call as one line, with the last connection
 * error when the brokers did not answer. Returns -1. */
static int kafka_failed(struct cmd *c, rd_kafka_t *rk, struct sl_error *err,
                        const char *what, rd_kafka_resp_err_t e)
{
    c->last_error[0] = '\0';
    rd_kafka_poll(rk, 0); /* serves the queued error callbacks */
    if (e == RD_KAFKA_RESP_ERR__TIMED_OUT ||
        e == RD_KAFKA_RESP_ERR__TRANSPORT ||
        e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        return sl_error_set(err, "%s: no answer from %s within %ds%s%s",
                            what, c->bootstrap, TIMEOUT_MS / 1000,
                            c->last_error[0] != '\0' ? ": " : "",
                            c->last_error);
    }
    return sl_error_set(err, "%s: %s", what, rd_kafka_err2str(e));
}

static int part_order(const void *a, const void *b)
{
    const struct part *x = a, *y = b;
    int t = strcmp(x->topic, y->topic);

    return t != 0 ? t : (x->partition > y->partition) - (x->partition <
                                                         y->partition);
}

/* Appends the partitions of topic (from the metadata) to c->parts. */
static int add_topic_parts(struct cmd *c, rd_kafka_t *rk, const char *topic,
                           struct sl_error *err)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    const struct rd_kafka_metadata_topic *t;
    rd_kafka_resp_err_t e;
    char what[300];
    int rc = 0;

    if (rkt == NULL) {
        return sl_error_set(err, "topic `%s`: %s", topic,
                            rd_kafka_err2str(rd_kafka_last_error()));
    }
    e = rd_kafka_metadata(rk, 0, rkt, &md, TIMEOUT_MS);
    rd_kafka_topic_destroy(rkt);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(what, sizeof(what), "reading the metadata of `%s`", topic);
        return kafka_failed(c, rk, err, what, e);
    }
    t = md->topic_cnt == 1 ? &md->topics[0] : NULL;
    if (t == NULL || t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        (t->err == RD_KAFKA_RESP_ERR_NO_ERROR && t->partition_cnt == 0)) {
        rc = sl_error_set(err, "DLQ topic `%s` does not exist on %s", topic,
                          c->bootstrap);
    } else if (t->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc = sl_error_set(err, "DLQ topic `%s`: %s", topic,
                          rd_kafka_err2str(t->err));
    } else {
        struct part *p = realloc(c->parts, (c->part_count +
                                            (size_t)t->partition_cnt) *
                                               sizeof(*p));
        if (p == NULL) {
            rc = sl_error_set(err, "out of memory");
        } else {
            c->parts = p;
            for (int i = 0; i < t->partition_cnt; i++) {
                p = &c->parts[c->part_count++];
                memset(p, 0, sizeof(*p));
                p->topic = topic;
                p->partition = t->partitions[i].id;
            }
        }
    }
    rd_kafka_metadata_destroy(md);
    return rc;
}

/* The committed offsets of every selected sink's replay group on every
 * partition, each read with its own handle: rd_kafka_committed asks the
 * group's coordinator without joining the group. */
static int read_committed(struct cmd *c, struct sl_error *err)
{
    size_t n = c->part_count;

    c->committed = malloc((c->sel_count * n + 1) * sizeof(*c->committed));
    if (c->committed == NULL) {
        return sl_error_set(err, "out of memory");
    }
    for (size_t k = 0; k < c->sel_count; k++) {
        const char *sink = c->cfg->sinks[c->sel[k]].name;
        rd_kafka_topic_partition_list_t *l;
        rd_kafka_resp_err_t e;
        rd_kafka_t *rk;
        char *group;
        int rc = 0;

        if (asprintf(&group, "%s.dlq.%s", c->cfg->pipeline, sink) < 0) {
            return sl_error_set(err, "out of memory");
        }
        rk = client_new(c, group, err);
        if (rk == NULL) {
            free(group);
            return -1;
        }
        l = rd_kafka_topic_partition_list_new((int)n);
        for (size_t i = 0; i < n; i++) {
            rd_kafka_topic_partition_list_add(l, c->parts[i].topic,
                                              c->parts[i].partition);
        }
        e = rd_kafka_committed(rk, l, TIMEOUT_MS);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            char what[600];
            snprintf(what, sizeof(what),
                     "reading the committed offsets of group `%s`", group);
            rc = kafka_failed(c, rk, err, what, e);
        }
        for (size_t i = 0; rc == 0 && i < n; i++) {
            const rd_kafka_topic_partition_t *tp =
                rd_kafka_topic_partition_list_find(l, c->parts[i].topic,
                                                   c->parts[i].partition);
            if (tp == NULL || tp->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                rc = sl_error_set(err, "group `%s` on %s [%d]: %s", group,
                                  c->parts[i].topic,
                                  (int)c->parts[i].partition,
                                  tp != NULL ? rd_kafka_err2str(tp->err)
                                             : "no answer");
                break;
            }
            c->committed[k * n + i] = tp->offset >= 0 ? tp->offset : -1;
        }
        rd_kafka_topic_partition_list_destroy(l);
        client_free(rk);
        free(group);
        if (rc != 0) {
            return -1;
        }
    }
    return 0;
}

/* A sink's records are in its DLQ topic; the pipeline's DLQ topic holds
 * the transform stage's (`*`) records, which concern every sink, as
 * replay reads them. */
static int sink_in_topic(const struct cmd *c, size_t k, const char *topic)
{
    return strcmp(cfg_sink_dlq_topic(c->cfg, c->sel[k]), topic) == 0 ||
           strcmp(c->cfg->dlq.topic, topic) == 0;
}

/* Where each partition's reading starts: the lowest offset a concerned
 * sink has committed (every record below it is worked by all of them),
 * the low watermark with --all; then no earlier than --since. */
static void plan_starts(struct cmd *c)
{
    for (size_t i = 0; i < c->part_count; i++) {
        struct part *p = &c->parts[i];
        int64_t start = -1;
        for (size_t k = 0; !c->all && k < c->sel_count; k++) {
            int64_t off = c->committed[k * c->part_count + i];
            if (!sink_in_topic(c, k, p->topic)) {
                continue;
            }
            if (off < 0) {
                off = p->low;
            }
            if (start < 0 || off < start) {
                start = off;
            }
        }
        p->start = start < p->low ? p->low : start;
    }
    if (c->since_ms <= 0) {
        return;
    }
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new((int)c->part_count);
    for (size_t i = 0; i < c->part_count; i++) {
        if (c->parts[i].start < c->parts[i].high) {
            rd_kafka_topic_partition_list_add(l, c->parts[i].topic,
                                              c->parts[i].partition)
                ->offset = c->since_ms;
        }
    }
    /* On failure every record is read and filtered one by one. */
    if (l->cnt > 0 && rd_kafka_offsets_for_times(c->rk, l, TIMEOUT_MS) ==
                          RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (size_t i = 0; i < c->part_count; i++) {
            struct part *p = &c->parts[i];
            const rd_kafka_topic_partition_t *tp =
                rd_kafka_topic_partition_list_find(l, p->topic,
                                                   p->partition);
            if (tp == NULL || tp->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                continue;
            }
            if (tp->offset < 0) {
                p->start = p->high; /* nothing that recent */
            } else if (tp->offset > p->start) {
                p->start = tp->offset;
            }
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Finds the partitions and watermarks of every topic and the committed
 * offsets, then assigns each partition from where reading starts. */
static int reader_open(struct cmd *c, struct sl_error *err)
{
    char group[64];
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_resp_err_t e;

    /* Needed by rd_kafka_assign; never joined, never committed to. */
    snprintf(group, sizeof(group), "sluice-dlq-cli-%ld", (long)getpid());
    c->rk = client_new(c, group, err);
    if (c->rk == NULL) {
        return -1;
    }
    for (size_t t = 0; t < c->topic_count; t++) {
        if (add_topic_parts(c, c->rk, c->topics[t], err) != 0) {
            return -1;
        }
    }
    qsort(c->parts, c->part_count, sizeof(*c->parts), part_order);
    for (size_t i = 0; i < c->part_count; i++) {
        struct part *p = &c->parts[i];
        e = rd_kafka_query_watermark_offsets(c->rk, p->topic, p->partition,
                                             &p->low, &p->high, TIMEOUT_MS);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            char what[300];
            snprintf(what, sizeof(what), "reading the offsets of %s [%d]",
                     p->topic, (int)p->partition);
            return kafka_failed(c, c->rk, err, what, e);
        }
    }
    if (read_committed(c, err) != 0) {
        return -1;
    }
    plan_starts(c);
    l = rd_kafka_topic_partition_list_new((int)c->part_count);
    for (size_t i = 0; i < c->part_count; i++) {
        struct part *p = &c->parts[i];
        if (p->start >= p->high) {
            p->done = 1;
            continue;
        }
        /* Detached before the assignment so that no record of it goes
         * to the consumer queue: each partition is read on its own. */
        p->queue = rd_kafka_queue_get_partition(c->rk, p->topic,
                                                p->partition);
        if (p->queue == NULL) {
            rd_kafka_topic_partition_list_destroy(l);
            return sl_error_set(err, "%s [%d]: no such partition", p->topic,
                                (int)p->partition);
        }
        rd_kafka_queue_forward(p->queue, NULL);
        p->next = p->start;
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)
            ->offset = p->start;
    }
    e = l->cnt > 0 ? rd_kafka_assign(c->rk, l) : RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_topic_partition_list_destroy(l);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return sl_error_set(err, "assign: %s", rd_kafka_err2str(e));
    }
    return 0;
}

static void reader_close(struct cmd *c)
{
    for (size_t i = 0; i < c->part_count; i++) {
        if (c->parts[i].head != NULL) {
            rd_kafka_message_destroy(c->parts[i].head);
        }
        if (c->parts[i].queue != NULL) {
            rd_kafka_queue_destroy(c->parts[i].queue);
        }
    }
    free(c->parts);
    c->parts = NULL;
    c->part_count = 0;
    client_free(c->rk);
    c->rk = NULL;
}

/* Waits for partition p's next record below its high watermark. */
static int part_fill(struct cmd *c, struct part *p, struct sl_error *err)
{
    while (p->head == NULL && !p->done) {
        rd_kafka_message_t *m = rd_kafka_consume_queue(p->queue, TIMEOUT_MS);
        if (m == NULL) {
            c->last_error[0] = '\0';
            rd_kafka_poll(c->rk, 0);
            return sl_error_set(
                err, "reading %s [%d]: no record within %ds at offset %lld "
                     "(high watermark %lld)%s%s",
                p->topic, (int)p->partition, TIMEOUT_MS / 1000,
                (long long)p->next, (long long)p->high,
                c->last_error[0] != '\0' ? ": " : "", c->last_error);
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            p->done = 1; /* the rest are compacted away or markers */
        } else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            sl_error_set(err, "reading %s [%d]: %s", p->topic,
                         (int)p->partition, rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            return -1;
        } else if (m->offset >= p->high) {
            p->done = 1;
        } else if (m->offset >= p->next) {
            p->next = m->offset + 1;
            p->head = m;
            continue;
        }
        rd_kafka_message_destroy(m);
    }
    return 0;
}

/* The next record, oldest first across partitions (each partition in
 * offset order), into *out with its partition's index; *out is NULL at
 * the end. Returns 0 or -1. */
static int reader_next(struct cmd *c, rd_kafka_message_t **out, size_t *pi,
                       struct sl_error *err)
{
    struct part *best = NULL;
    int64_t best_ts = 0;

    *out = NULL;
    for (size_t i = 0; i < c->part_count; i++) {
        struct part *p = &c->parts[i];
        if (part_fill(c, p, err) != 0) {
            return -1;
        }
        if (p->head != NULL) {
            int64_t ts = rd_kafka_message_timestamp(p->head, NULL);
            if (best == NULL || ts < best_ts) {
                best = p;
                best_ts = ts;
                *pi = i;
            }
        }
    }
    if (best != NULL) {
        *out = best->head;
        best->head = NULL;
        if ((*out)->offset + 1 >= best->high) {
            best->done = 1;
        }
    }
    return 0;
}

enum { SCOPE_SKIP, SCOPE_SINKS, SCOPE_ORPHAN };

/* Which looked-at sinks record v (of partition pi) concerns: its own
 * sink, or for the transform stage (`*`) every sink whose DLQ topic holds
 * it. c->pending[k] is set for each that has not worked it (its group's
 * committed offset is not past it). A record of a sink the pipeline does
 * not have (or with no sink) is an orphan: no group works it. */
static int record_scope(struct cmd *c, const struct view *v, size_t pi,
                        size_t *concerned, size_t *pending)
{
    int star = field_is(&v->sink, DLQ_SINK_ALL);

    *concerned = *pending = 0;
    memset(c->pending, 0, c->sel_count);
    if (v->pipeline.p != NULL && !field_is(&v->pipeline, c->cfg->pipeline)) {
        c->other_pipelines++;
        return SCOPE_SKIP;
    }
    for (size_t k = 0; k < c->sel_count; k++) {
        int64_t co = c->committed[k * c->part_count + pi];
        if (star ? !sink_in_topic(c, k, v->topic)
                 : !field_is(&v->sink, c->cfg->sinks[c->sel[k]].name)) {
            continue;
        }
        (*concerned)++;
        if (co < 0 || v->m->offset >= co) {
            c->pending[k] = 1;
            (*pending)++;
        }
    }
    if (*concerned > 0) {
        return SCOPE_SINKS;
    }
    /* Without --sink every sink is looked at: what is left is not one. */
    if (star || c->sink != NULL) {
        return SCOPE_SKIP; /* another topic's, or another sink's */
    }
    return SCOPE_ORPHAN;
}

/* ---- list ---- */

static const char *age_text(const struct cmd *c, int64_t ts, char *buf,
                            size_t cap)
{
    return ts < 0 ? MISSING : dlqcmd_format_age(buf, cap, c->now_ms - ts);
}

static void list_header(const struct cmd *c)
{
    if (c->topic_count > 1) {
        printf("%-24s  ", "TOPIC");
    }
    printf("%-10s  ", "POSITION");
    if (c->all) {
        printf("%-6s  ", "WORKED");
    }
    printf("%-12s  %-9s  %-15s  %-6s  %-8s  %-7s  %-24s  %s\n", "SINK",
           "STAGE", "CLASS", "STATUS", "ATTEMPTS", "AGE", "SOURCE",
           "DEDUPE KEY");
}

static void list_text(const struct cmd *c, const struct view *v, int scope,
                      size_t concerned, size_t pending)
{
    char pos[48], sink[FIELD_BUF], stage[FIELD_BUF], status[16],
        attempts[FIELD_BUF], age[32], st[FIELD_BUF], sp[FIELD_BUF],
        so[FIELD_BUF], source[FIELD_BUF * 3 + 4],
        dedupe[ENGINE_DEDUPE_MAX * 4 + 4];

    snprintf(pos, sizeof(pos), "%d:%lld", (int)v->m->partition,
             (long long)v->m->offset);
    if (v->status_code > 0) {
        snprintf(status, sizeof(status), "%d", v->status_code);
    } else {
        snprintf(status, sizeof(status), "%s",
                 v->status_code == DLQCMD_STATUS_NONE ? "-" : MISSING);
    }
    snprintf(source, sizeof(source), "%s/%s/%s",
             field_text(&v->src_topic, st, sizeof(st)),
             field_text(&v->src_partition, sp, sizeof(sp)),
             field_text(&v->src_offset, so, sizeof(so)));
    if (c->topic_count > 1) {
        printf("%-24s  ", v->topic);
    }
    printf("%-10s  ", pos);
    if (c->all) {
        printf("%-6s  ", scope == SCOPE_ORPHAN || pending == concerned ? "no"
                         : pending == 0 ? "yes"
                                        : "partly");
    }
    printf("%-12s  %-9s  %-15s  %-6s  %-8s  %-7s  %-24s  %s\n",
           field_text(&v->sink, sink, sizeof(sink)),
           field_text(&v->stage, stage, sizeof(stage)),
           v->cls.p != NULL ? v->cls_text : MISSING, status,
           field_text(&v->attempts, attempts, sizeof(attempts)),
           age_text(c, v->ts, age, sizeof(age)), source,
           field_text(&v->dedupe, dedupe, sizeof(dedupe)));
}

static json_t *json_field(const struct field *f)
{
    return f->p != NULL ? json_bytes(f->p, f->len) : json_null();
}

static void list_json(const struct cmd *c, const struct view *v, int scope,
                      size_t pending)
{
    json_t *o = json_object(), *src = json_object(), *pend = json_array();
    char pos[48];

    snprintf(pos, sizeof(pos), "%d:%lld", (int)v->m->partition,
             (long long)v->m->offset);
    json_object_set_new(o, "topic", json_string(v->topic));
    json_object_set_new(o, "partition", json_integer(v->m->partition));
    json_object_set_new(o, "offset", json_integer(v->m->offset));
    json_object_set_new(o, "position", json_string(pos));
    json_object_set_new(o, "sink", json_field(&v->sink));
    json_object_set_new(o, "stage", json_field(&v->stage));
    json_object_set_new(o, "class", json_field(&v->cls));
    json_object_set_new(o, "status", json_int_field(&v->status));
    json_object_set_new(o, "reason", json_field(&v->reason));
    json_object_set_new(o, "reason_key", json_string(v->reason_key));
    json_object_set_new(o, "attempts", json_int_field(&v->attempts));
    json_object_set_new(o, "timestamp_ms",
                        v->ts >= 0 ? json_integer(v->ts) : json_null());
    json_object_set_new(o, "age_ms", v->ts >= 0
                                         ? json_integer(c->now_ms - v->ts)
                                         : json_null());
    json_object_set_new(src, "topic", json_field(&v->src_topic));
    json_object_set_new(src, "partition", json_int_field(&v->src_partition));
    json_object_set_new(src, "offset", json_int_field(&v->src_offset));
    json_object_set_new(o, "source", src);
    json_object_set_new(o, "dedupe_key", json_field(&v->dedupe));
    if (scope == SCOPE_ORPHAN) {
        json_array_append_new(pend, v->sink.p != NULL
                                        ? json_bytes(v->sink.p, v->sink.len)
                                        : json_string(MISSING));
    }
    for (size_t k = 0; k < c->sel_count; k++) {
        if (c->pending[k]) {
            json_array_append_new(
                pend, json_string(c->cfg->sinks[c->sel[k]].name));
        }
    }
    json_object_set_new(o, "worked",
                        json_boolean(scope == SCOPE_SINKS && pending == 0));
    json_object_set_new(o, "pending_sinks", pend);
    json_print_line(o);
}

static int run_list(struct cmd *c, struct sl_error *err)
{
    int64_t shown = 0;
    int header_done = 0;

    for (;;) {
        rd_kafka_message_t *m;
        size_t pi = 0, concerned, pending;
        struct view v;
        int scope;

        if (reader_next(c, &m, &pi, err) != 0) {
            return -1;
        }
        if (m == NULL) {
            break;
        }
        view_parse(&v, m);
        scope = record_scope(c, &v, pi, &concerned, &pending);
        if (scope == SCOPE_SKIP ||
            (!c->all && scope == SCOPE_SINKS && pending == 0) ||
            (c->since_ms > 0 && v.ts < c->since_ms) ||
            (c->reason != NULL &&
             !dlqcmd_reason_matches(c->reason,
                                    v.cls.p != NULL ? v.cls_text : NULL,
                                    v.status_code))) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (c->json) {
            list_json(c, &v, scope, pending);
        } else {
            if (!header_done) {
                list_header(c);
                header_done = 1;
            }
            list_text(c, &v, scope, concerned, pending);
        }
        rd_kafka_message_destroy(m);
        if (c->limit > 0 && ++shown >= c->limit) {
            break;
        }
    }
    if (!c->json && !header_done) {
        printf("no matching records\n");
    }
    return 0;
}

/* ---- stats ---- */

struct stats {
    struct sink_stats *sinks; /* the selected sinks, then orphans */
    size_t count, orphans;
    struct counts reasons; /* per record */
    int64_t depth, oldest, newest;
};

static void span_add(int64_t *oldest, int64_t *newest, int64_t ts)
{
    if (ts < 0) {
        return;
    }
    if (*oldest < 0 || ts < *oldest) {
        *oldest = ts;
    }
    if (*newest < 0 || ts > *newest) {
        *newest = ts;
    }
}

static int sink_stats_add(struct sink_stats *s, const struct view *v)
{
    s->depth++;
    span_add(&s->oldest, &s->newest, v->ts);
    return counts_add(&s->reasons, v->reason_key);
}

static struct sink_stats *stats_append(struct stats *st, const char *name)
{
    struct sink_stats *s =
        realloc(st->sinks, (st->count + 1) * sizeof(*st->sinks));

    if (s == NULL) {
        return NULL;
    }
    st->sinks = s;
    s = &st->sinks[st->count];
    memset(s, 0, sizeof(*s));
    s->oldest = s->newest = -1;
    s->name = strdup(name);
    if (s->name == NULL) {
        return NULL;
    }
    st->count++;
    return s;
}

/* The entry of an orphan sink name, at most MAX_ORPHANS of them. */
static struct sink_stats *stats_orphan(struct stats *st, size_t known,
                                       const struct field *sink)
{
    char buf[FIELD_BUF];
    const char *name = field_text(sink, buf, sizeof(buf));

    if (st->orphans >= MAX_ORPHANS) {
        name = OTHER_SINKS;
    }
    for (size_t i = known; i < st->count; i++) {
        if (strcmp(st->sinks[i].name, name) == 0) {
            return &st->sinks[i];
        }
    }
    if (st->orphans < MAX_ORPHANS) {
        st->orphans++;
    }
    return stats_append(st, name);
}

static void stats_free(struct stats *st)
{
    for (size_t i = 0; i < st->count; i++) {
        free(st->sinks[i].name);
        counts_free(&st->sinks[i].reasons);
    }
    free(st->sinks);
    counts_free(&st->reasons);
}

static json_t *json_counts(struct counts *m)
{
    struct count_entry other;
    size_t n;
    const struct count_entry **v = counts_sorted(m, &n, &other);
    json_t *o = json_object();

    for (size_t i = 0; v != NULL && i < n; i++) {
        json_object_set_new(o, v[i]->key, json_integer(v[i]->n));
    }
    free(v);
    return o;
}

static json_t *json_age(const struct cmd *c, int64_t ts)
{
    return ts >= 0 ? json_integer(c->now_ms - ts) : json_null();
}

static void stats_json(const struct cmd *c, struct stats *st)
{
    json_t *o = json_object(), *topics = json_array(), *sinks = json_object();

    for (size_t t = 0; t < c->topic_count; t++) {
        json_array_append_new(topics, json_string(c->topics[t]));
    }
    json_object_set_new(o, "pipeline", json_string(c->cfg->pipeline));
    json_object_set_new(o, "topics", topics);
    json_object_set_new(o, "depth", json_integer(st->depth));
    json_object_set_new(o, "oldest_timestamp_ms",
                        st->oldest >= 0 ? json_integer(st->oldest)
                                        : json_null());
    json_object_set_new(o, "newest_timestamp_ms",
                        st->newest >= 0 ? json_integer(st->newest)
                                        : json_null());
    json_object_set_new(o, "oldest_age_ms", json_age(c, st->oldest));
    json_object_set_new(o, "newest_age_ms", json_age(c, st->newest));
    for (size_t i = 0; i < st->count; i++) {
        struct sink_stats *s = &st->sinks[i];
        json_t *j = json_object();
        json_object_set_new(j, "depth", json_integer(s->depth));
        json_object_set_new(j, "oldest_age_ms", json_age(c, s->oldest));
        json_object_set_new(j, "newest_age_ms", json_age(c, s->newest));
        json_object_set_new(j, "reasons", json_counts(&s->reasons));
        json_object_set_new(sinks, s->name, j);
    }
    json_object_set_new(o, "sinks", sinks);
    json_object_set_new(o, "reasons", json_counts(&st->reasons));
    json_object_set_new(o, "other_pipelines",
                        json_integer(c->other_pipelines));
    json_print_line(o);
}

static void stats_text(const struct cmd *c, struct stats *st)
{
    char a[32], b[32];
    int wname = 4, wreason = 6;
    struct count_entry other;
    size_t n;
    const struct count_entry **v;

    printf("DLQ ");
    for (size_t t = 0; t < c->topic_count; t++) {
        printf("%s%s", t > 0 ? ", " : "", c->topics[t]);
    }
    printf(": %lld record(s) not yet worked", (long long)st->depth);
    if (st->depth > 0) {
        printf(", oldest %s, newest %s", age_text(c, st->oldest, a, sizeof(a)),
               age_text(c, st->newest, b, sizeof(b)));
    }
    printf("\n");
    if (c->other_pipelines > 0) {
        printf("(%lld record(s) of other pipelines not counted)\n",
               (long long)c->other_pipelines);
    }
    for (size_t i = 0; i < st->count; i++) {
        int len = (int)strlen(st->sinks[i].name);
        wname = len > wname ? len : wname;
    }
    printf("\n%-*s  %7s  %-7s  %-7s  %s\n", wname, "SINK", "DEPTH", "OLDEST",
           "NEWEST", "REASONS");
    for (size_t i = 0; i < st->count; i++) {
        struct sink_stats *s = &st->sinks[i];
        printf("%-*s  %7lld  %-7s  %-7s  ", wname, s->name,
               (long long)s->depth,
               s->depth > 0 ? age_text(c, s->oldest, a, sizeof(a)) : "-",
               s->depth > 0 ? age_text(c, s->newest, b, sizeof(b)) : "-");
        v = counts_sorted(&s->reasons, &n, &other);
        for (size_t r = 0; v != NULL && r < n && r < 5; r++) {
            printf("%s%s (%lld)", r > 0 ? ", " : "", v[r]->key,
                   (long long)v[r]->n);
        }
        if (v != NULL && n > 5) {
            printf(", ... (%zu more)", n - 5);
        }
        printf("%s\n", n == 0 ? "-" : "");
        free(v);
    }
    v = counts_sorted(&st->reasons, &n, &other);
    if (v == NULL || n == 0) {
        free(v);
        return;
    }
    for (size_t r = 0; r < n; r++) {
        int len = (int)strlen(v[r]->key);
        wreason = len > wreason ? len : wreason;
    }
    printf("\n%-*s  %7s\n", wreason, "REASON", "RECORDS");
    for (size_t r = 0; r < n; r++) {
        printf("%-*s  %7lld\n", wreason, v[r]->key, (long long)v[r]->n);
    }
    free(v);
}

static int run_stats(struct cmd *c, struct sl_error *err)
{
    struct stats st = {.oldest = -1, .newest = -1};
    int rc = 0;

    for (size_t k = 0; k < c->sel_count; k++) {
        if (stats_append(&st, c->cfg->sinks[c->sel[k]].name) == NULL) {
            stats_free(&st);
            return sl_error_set(err, "out of memory");
        }
    }
    for (;;) {
        rd_kafka_message_t *m;
        size_t pi = 0, concerned, pending;
        struct view v;
        int scope;

        if (reader_next(c, &m, &pi, err) != 0) {
            rc = -1;
            break;
        }
        if (m == NULL) {
            break;
        }
        view_parse(&v, m);
        scope = record_scope(c, &v, pi, &concerned, &pending);
        if (scope == SCOPE_SKIP || (scope == SCOPE_SINKS && pending == 0)) {
            rd_kafka_message_destroy(m);
            continue;
        }
        st.depth++;
        span_add(&st.oldest, &st.newest, v.ts);
        rc = counts_add(&st.reasons, v.reason_key);
        for (size_t k = 0; rc == 0 && k < c->sel_count; k++) {
            if (c->pending[k]) {
                rc = sink_stats_add(&st.sinks[k], &v);
            }
        }
        if (rc == 0 && scope == SCOPE_ORPHAN) {
            struct sink_stats *s = stats_orphan(&st, c->sel_count, &v.sink);
            rc = s != NULL ? sink_stats_add(s, &v) : -1;
        }
        rd_kafka_message_destroy(m);
        if (rc != 0) {
            sl_error_set(err, "out of memory");
            break;
        }
    }
    if (rc == 0) {
        if (c->json) {
            stats_json(c, &st);
        } else {
            stats_text(c, &st);
        }
    }
    stats_free(&st);
    return rc;
}

/* ---- show ---- */

static int is_context(const char *name)
{
    return strncmp(name, DLQ_HEADER_PREFIX, sizeof(DLQ_HEADER_PREFIX) - 1) ==
           0;
}

static json_t *parse_json_value(const rd_kafka_message_t *m)
{
    json_error_t jerr;

    if (m->payload == NULL) {
        return NULL;
    }
    /* No JSON_DECODE_INT_AS_REAL: 64-bit integers stay exact. */
    return json_loadb(m->payload, m->len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                      &jerr);
}

static void show_json(const char *topic, const rd_kafka_message_t *m)
{
    json_t *o = json_object(), *ctx = json_object(), *orig = json_array();
    rd_kafka_headers_t *hdrs = NULL;
    int64_t ts = rd_kafka_message_timestamp(m, NULL);
    json_t *value = parse_json_value(m);
    char pos[48];

    snprintf(pos, sizeof(pos), "%d:%lld", (int)m->partition,
             (long long)m->offset);
    json_object_set_new(o, "topic", json_string(topic));
    json_object_set_new(o, "partition", json_integer(m->partition));
    json_object_set_new(o, "offset", json_integer(m->offset));
    json_object_set_new(o, "position", json_string(pos));
    json_object_set_new(o, "timestamp_ms",
                        ts >= 0 ? json_integer(ts) : json_null());
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val,
                                                   &size) ==
                           RD_KAFKA_RESP_ERR_NO_ERROR;
             i++) {
            json_t *jv = json_bytes(val, size);
            if (is_context(name)) {
                /* Names that are not UTF-8 cannot be keys: escaped. */
                char key[256];
                dlqcmd_escape(key, sizeof(key), name, strlen(name), 0);
                json_object_set_new(ctx, key, jv);
            } else {
                json_t *h = json_object();
                json_object_set_new(h, "name",
                                    json_bytes(name, strlen(name)));
                json_object_set_new(h, "value", jv);
                json_array_append_new(orig, h);
            }
        }
    }
    json_object_set_new(o, "headers", ctx);
    json_object_set_new(o, "original_headers", orig);
    json_object_set_new(o, "key", json_bytes(m->key, m->key_len));
    json_object_set_new(o, "value_is_json", json_boolean(value != NULL));
    json_object_set_new(o, "value", value != NULL
                                        ? value
                                        : json_bytes(m->payload, m->len));
    json_print_line(o);
}

static void show_headers(rd_kafka_headers_t *hdrs, int context)
{
    const char *name;
    const void *val;
    size_t size;
    int any = 0;

    printf("%s headers:", context ? "context" : "original");
    for (size_t i = 0;
         hdrs != NULL && rd_kafka_header_get_all(hdrs, i, &name, &val,
                                                 &size) ==
                             RD_KAFKA_RESP_ERR_NO_ERROR;
         i++) {
        if (is_context(name) != context) {
            continue;
        }
        printf("\n  ");
        escape_write(stdout, name, strlen(name), 0);
        printf(": ");
        if (val == NULL) {
            printf("(null)");
        } else {
            escape_write(stdout, val, size, 0);
        }
        any = 1;
    }
    printf("%s\n", any ? "" : " (none)");
}

static void show_text(const struct cmd *c, const char *topic,
                      const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs = NULL;
    int64_t ts = rd_kafka_message_timestamp(m, NULL);
    json_t *value;
    char age[32];

    printf("== %s %d:%lld\n", topic, (int)m->partition,
           (long long)m->offset);
    if (ts >= 0) {
        printf("timestamp: %lld (%s ago)\n", (long long)ts,
               dlqcmd_format_age(age, sizeof(age), c->now_ms - ts));
    } else {
        printf("timestamp: none\n");
    }
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        hdrs = NULL;
    }
    show_headers(hdrs, 1);
    show_headers(hdrs, 0);
    printf("key: ");
    if (m->key == NULL) {
        printf("(none)\n");
    } else {
        escape_write(stdout, m->key, m->key_len, 0);
        printf("\n");
    }
    if (m->payload == NULL) {
        printf("value: (none)\n");
        return;
    }
    value = parse_json_value(m);
    if (value != NULL) {
        printf("value (JSON, %zu bytes):\n", m->len);
        /* For people: 15 digits print 284.85 as written, not as
         * 284.85000000000002 (integers are exact either way). */
        json_dumpf(value, stdout,
                   JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
        printf("\n");
        json_decref(value);
        return;
    }
    printf("value (text, %zu bytes):\n", m->len);
    escape_write(stdout, m->payload, m->len, DLQCMD_ESC_NEWLINES);
    if (m->len == 0 || ((const char *)m->payload)[m->len - 1] != '\n') {
        printf("\n");
    }
}

/* Reads the record at partition:offset of topic; *out NULL (with why
 * filled) when there is none. Returns 0, or -1 on a runtime error. */
static int fetch_one(struct cmd *c, const char *topic, int32_t partition,
                     int64_t offset, rd_kafka_message_t **out, char *why,
                     size_t why_cap, struct sl_error *err)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    int64_t low, high, deadline = now_ms() + TIMEOUT_MS;
    rd_kafka_resp_err_t e;
    int rc = 0;

    *out = NULL;
    e = rd_kafka_query_watermark_offsets(c->rk, topic, partition, &low,
                                         &high, TIMEOUT_MS);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        char what[300];
        rd_kafka_topic_partition_list_destroy(l);
        snprintf(what, sizeof(what), "reading the offsets of %s [%d]", topic,
                 (int)partition);
        return kafka_failed(c, c->rk, err, what, e);
    }
    if (offset < low || offset >= high) {
        if (low >= high) {
            snprintf(why, why_cap, "partition %d is empty", (int)partition);
        } else {
            snprintf(why, why_cap, "partition %d holds offsets %lld to %lld",
                     (int)partition, (long long)low, (long long)high - 1);
        }
        rd_kafka_topic_partition_list_destroy(l);
        return 0;
    }
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
    e = rd_kafka_assign(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return sl_error_set(err, "assign: %s", rd_kafka_err2str(e));
    }
    while (*out == NULL) {
        int64_t left = deadline - now_ms();
        rd_kafka_message_t *m;
        if (left <= 0) {
            rc = sl_error_set(err, "reading %s %d:%lld: no answer within %ds",
                              topic, (int)partition, (long long)offset,
                              TIMEOUT_MS / 1000);
            break;
        }
        m = rd_kafka_consumer_poll(c->rk, (int)left);
        if (m == NULL) {
            continue;
        }
        /* Anything of an earlier assignment is left behind. */
        if (m->partition != partition || m->rkt == NULL ||
            strcmp(rd_kafka_topic_name(m->rkt), topic) != 0) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            snprintf(why, why_cap, "no record at or after it");
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rc = sl_error_set(err, "reading %s [%d]: %s", topic,
                              (int)partition, rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->offset == offset) {
            *out = m;
        } else if (m->offset > offset) {
            /* Compacted away, or a transaction marker. */
            snprintf(why, why_cap, "the next record is at %d:%lld",
                     (int)partition, (long long)m->offset);
            rd_kafka_message_destroy(m);
            break;
        } else {
            rd_kafka_message_destroy(m);
        }
    }
    rd_kafka_assign(c->rk, NULL);
    return rc;
}

static int run_show(struct cmd *c, const char *topic, char **positions,
                    size_t count, struct sl_error *err)
{
    char group[64];
    int missing = 0, printed = 0;

    snprintf(group, sizeof(group), "sluice-dlq-cli-%ld", (long)getpid());
    c->rk = client_new(c, group, err);
    if (c->rk == NULL || add_topic_parts(c, c->rk, topic, err) != 0) {
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        rd_kafka_message_t *m = NULL;
        char why[160] = "";
        int32_t partition;
        int64_t offset;
        int exists = 0;

        dlqcmd_parse_position(positions[i], &partition, &offset);
        for (size_t p = 0; p < c->part_count; p++) {
            exists |= c->parts[p].partition == partition;
        }
        if (!exists) {
            snprintf(why, sizeof(why), "partition %d does not exist",
                     (int)partition);
        } else if (fetch_one(c, topic, partition, offset, &m, why,
                             sizeof(why), err) != 0) {
            return -1;
        }
        if (m == NULL) {
            fprintf(stderr, "sluice: no record at %d:%lld in %s: %s\n",
                    (int)partition, (long long)offset, topic, why);
            missing = 1;
            continue;
        }
        if (c->json) {
            show_json(topic, m);
        } else {
            printf("%s", printed ? "\n" : "");
            show_text(c, topic, m);
        }
        printed = 1;
        rd_kafka_message_destroy(m);
        fflush(stdout);
    }
    return missing ? 1 : 0;
}

/* ---- command line ---- */

static const char dlq_usage[] =
    "usage: sluice dlq <command> PIPELINE.yaml [options]\n"
    "\n"
    "Looks into a pipeline's dead-letter topics (dlq.topic, and each sink's\n"
    "dlq_topic) and replays their records. A record counts as worked for a\n"
    "sink once the sink's replay group <pipeline>.dlq.<sink> has committed\n"
    "past it; a transform-stage record (sink `*`) concerns every sink whose\n"
    "DLQ topic holds it. stats, list and show only read: they join no group\n"
    "and commit nothing.\n"
    "\n"
    "commands:\n"
    "  stats PIPELINE.yaml      records not yet worked, by sink and by reason\n"
    "  list PIPELINE.yaml       one line per record not yet worked, oldest\n"
    "                           first\n"
    "  show PIPELINE.yaml POSITION...\n"
    "                           whole records by PARTITION:OFFSET\n"
    "  replay PIPELINE.yaml --sink SINK\n"
    "                           send a sink's records to it again\n"
    "\n"
    "options of every command:\n"
    "  --brokers HOST:PORT      the DLQ's brokers instead of dlq.brokers;\n"
    "                           required when those are `embedded` (use the\n"
    "                           bootstrap address a running `sluice run` logs)\n"
    "  -h, --help               show help (also: sluice dlq COMMAND --help)\n"
    "\n"
    "exit status: 0 ok, 1 runtime failure (brokers unreachable within 10s,\n"
    "topic missing, no record at a position, replays failed), 2 bad usage or\n"
    "configuration\n";

#define REASON_HELP                                                            \
    "  --reason R               only records whose reason matches R: an\n"     \
    "                           error class (rejected, deadline, gave_up,\n"   \
    "                           max_attempts, transform_error, shape_error),\n" \
    "                           an HTTP status (400), a status class (4xx),\n"  \
    "                           or both as stats prints them (\"rejected 400\")\n"
#define SINCE_HELP                                                             \
    "  --since T                only records written since T (by the Kafka\n" \
    "                           record timestamp): a duration ago (90s, 30m,\n" \
    "                           2h, 7d; units ms s m h d) or a time in epoch\n" \
    "                           milliseconds (13 digits or more)\n"
#define COMMON_HELP                                                            \
    "  --brokers HOST:PORT      the DLQ's brokers instead of dlq.brokers\n"    \
    "                           (required when those are `embedded`)\n"        \
    "  -h, --help               show this help\n"

static const char stats_usage[] =
    "usage: sluice dlq stats PIPELINE.yaml [options]\n"
    "\n"
    "Counts the records not yet worked (the depth) in the pipeline's DLQ\n"
    "topics: in all, by sink (a `*` record counts for each sink it concerns\n"
    "that has not worked it) and by reason (the error class and the HTTP\n"
    "status, e.g. `rejected 400`; past 1000 distinct reasons the rest count\n"
    "as `(other)`), with the age of the oldest and the newest.\n"
    "\n"
    "options:\n"
    "  --sink S                 only sink S (and the `*` records it sees)\n"
    "  --output FORMAT          text (default) or json (one object)\n" COMMON_HELP;

static const char list_usage[] =
    "usage: sluice dlq list PIPELINE.yaml [options]\n"
    "\n"
    "Lists the records not yet worked, oldest first, one per line: POSITION\n"
    "(PARTITION:OFFSET in the DLQ topic, for `sluice dlq show`), SINK (`*`:\n"
    "the pipeline transform's), STAGE, CLASS, STATUS (HTTP; `-` without an\n"
    "answer), ATTEMPTS, AGE, SOURCE (topic/partition/offset) and DEDUPE KEY.\n"
    "A missing field shows as `?`. With several DLQ topics a TOPIC column\n"
    "comes first.\n"
    "\n"
    "options:\n"
    "  --sink S                 only records of sink S (and `*` records)\n"
    REASON_HELP SINCE_HELP
    "  --limit N                at most N records\n"
    "  --all                    also records already worked (column WORKED:\n"
    "                           yes, no, or partly for a `*` record that some\n"
    "                           of its sinks worked)\n"
    "  --output FORMAT          text (default) or json (one object per line)\n"
    COMMON_HELP;

static const char show_usage[] =
    "usage: sluice dlq show PIPELINE.yaml POSITION... [options]\n"
    "\n"
    "Prints whole DLQ records; POSITION is PARTITION:OFFSET (as `list`\n"
    "prints it) or a bare OFFSET of partition 0. Shows the context headers\n"
    "(sluice.*), the original headers, the key and the value, pretty-printed\n"
    "when it is JSON. Bytes that are not printable are escaped (\\xHH).\n"
    "Exits 1 when a position holds no record (after printing the others).\n"
    "\n"
    "options:\n"
    "  --topic T                read DLQ topic T (default: dlq.topic), e.g. a\n"
    "                           sink's own dlq_topic\n"
    "  --output FORMAT          text (default) or json (one object per line:\n"
    "                           headers, original_headers, key, value)\n"
    COMMON_HELP;

static const char replay_usage[] =
    "usage: sluice dlq replay PIPELINE.yaml --sink S [options]\n"
    "\n"
    "Sends sink S's records not yet worked (and the `*` records it has not\n"
    "worked) to S again, oldest first, and commits them in S's replay group\n"
    "<pipeline>.dlq.S, through S's transform and retry policy as they are\n"
    "now; no other sink is sent anything. A record that fails again goes\n"
    "back to the DLQ with its replay count raised. Records past\n"
    "dlq.max_replays, and those --reason/--since do not select, are\n"
    "skipped: written back to the DLQ for S as they are, so they stay to\n"
    "be worked. Exits 0 when nothing failed again, 1 otherwise.\n"
    "\n"
    "options:\n"
    "  --sink S                 the sink to replay to (required)\n"
    "  --reason R               only records whose error class, HTTP status\n"
    "                           (400), status class (4xx) or reason\n"
    "                           (\"rejected 400\") is R\n"
    SINCE_HELP
    "  --limit N                at most N records; the rest stay pending\n"
    "  --force                  also records past dlq.max_replays\n"
    "  --dry-run                print what would be replayed, send nothing\n"
    "  --progress               a progress line on stderr each second\n"
    COMMON_HELP;

enum {
    ARG_SINK = 1 << 0,
    ARG_REASON = 1 << 1,
    ARG_SINCE = 1 << 2,
    ARG_LIMIT = 1 << 3,
    ARG_ALL = 1 << 4,
    ARG_OUTPUT = 1 << 5,
    ARG_TOPIC = 1 << 6,
    ARG_FORCE = 1 << 7,
    ARG_DRY_RUN = 1 << 8,
    ARG_PROGRESS = 1 << 9,
    ARG_ALWAYS = 1 << 10,
};

static const struct {
    struct option opt;
    unsigned flag;
} arg_table[] = {
    {{"sink", required_argument, NULL, 's'}, ARG_SINK},
    {{"reason", required_argument, NULL, 'r'}, ARG_REASON},
    {{"since", required_argument, NULL, 'S'}, ARG_SINCE},
    {{"limit", required_argument, NULL, 'n'}, ARG_LIMIT},
    {{"all", no_argument, NULL, 'a'}, ARG_ALL},
    {{"output", required_argument, NULL, 'o'}, ARG_OUTPUT},
    {{"topic", required_argument, NULL, 't'}, ARG_TOPIC},
    {{"force", no_argument, NULL, 'f'}, ARG_FORCE},
    {{"dry-run", no_argument, NULL, 'd'}, ARG_DRY_RUN},
    {{"progress", no_argument, NULL, 'p'}, ARG_PROGRESS},
    {{"brokers", required_argument, NULL, 'b'}, ARG_ALWAYS},
    {{"help", no_argument, NULL, 'h'}, ARG_ALWAYS},
};
#define ARG_COUNT (sizeof(arg_table) / sizeof(arg_table[0]))

enum { CMD_STATS, CMD_LIST, CMD_SHOW, CMD_REPLAY };

static const struct command {
    const char *name, *prog, *usage;
    unsigned args;
    int id;
} commands[] = {
    {"stats", "sluice dlq stats", stats_usage, ARG_SINK | ARG_OUTPUT,
     CMD_STATS},
    {"list", "sluice dlq list", list_usage,
     ARG_SINK | ARG_REASON | ARG_SINCE | ARG_LIMIT | ARG_ALL | ARG_OUTPUT,
     CMD_LIST},
    {"show", "sluice dlq show", show_usage, ARG_TOPIC | ARG_OUTPUT, CMD_SHOW},
    {"replay", "sluice dlq replay", replay_usage,
     ARG_SINK | ARG_REASON | ARG_SINCE | ARG_LIMIT | ARG_FORCE |
         ARG_DRY_RUN | ARG_PROGRESS,
     CMD_REPLAY},
};

struct args {
    const char *sink, *reason, *since, *limit, *output, *topic, *brokers;
    int all, force, dry_run, progress, help;
    char **rest; /* the pipeline, then the positions */
    int rest_count;
};

/* Parses argv (argv[0]: the command's name) into a. Returns 0, or -1
 * on an unknown option or a missing value (getopt said why). */
static int parse_args(const struct command *cmd, int argc, char **argv,
                      char **copy, struct args *a)
{
    struct option longopts[ARG_COUNT + 1];
    size_t n = 0;
    int ch;

    for (size_t i = 0; i < ARG_COUNT; i++) {
        if (arg_table[i].flag & (cmd->args | ARG_ALWAYS)) {
            longopts[n++] = arg_table[i].opt;
        }
    }
    memset(&longopts[n], 0, sizeof(longopts[n]));
    /* getopt names the program in its messages and permutes the array. */
    copy[0] = (char *)cmd->prog;
    for (int i = 1; i < argc; i++) {
        copy[i] = argv[i];
    }
    copy[argc] = NULL;
    optind = 1;
    while ((ch = getopt_long(argc, copy, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 's': a->sink = optarg; break;
        case 'r': a->reason = optarg; break;
        case 'S': a->since = optarg; break;
        case 'n': a->limit = optarg; break;
        case 'a': a->all = 1; break;
        case 'o': a->output = optarg; break;
        case 't': a->topic = optarg; break;
        case 'f': a->force = 1; break;
        case 'd': a->dry_run = 1; break;
        case 'p': a->progress = 1; break;
        case 'b': a->brokers = optarg; break;
        case 'h': a->help = 1; break;
        default: return -1;
        }
    }
    a->rest = copy + optind;
    a->rest_count = argc - optind;
    return 0;
}

/* Prints a usage error and the usage on stderr; returns EXIT_USAGE. */
static int usage_error(const struct command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const struct command *cmd, const char *fmt, ...)
{
    va_list ap;

    if (fmt != NULL) {
        fprintf(stderr, "%s: ", cmd->prog);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\n\n");
    }
    fputs(cmd->usage, stderr);
    return EXIT_USAGE;
}

/* Checks the option values that need no configuration into c. */
static int check_values(const struct command *cmd, const struct args *a,
                        struct cmd *c)
{
    if (a->output != NULL) {
        if (strcmp(a->output, "json") == 0) {
            c->json = 1;
        } else if (strcmp(a->output, "text") != 0) {
            return usage_error(cmd, "--output: `%s` is not text or json",
                               a->output);
        }
    }
    if (a->since != NULL &&
        dlqcmd_parse_since(a->since, c->now_ms, &c->since_ms) != 0) {
        return usage_error(cmd,
                           "--since: `%s` is neither a duration (90s, 30m, "
                           "2h, 7d) nor epoch milliseconds (13 digits)",
                           a->since);
    }
    if (a->limit != NULL && (!all_digits(a->limit, strlen(a->limit)) ||
                             units_parse_int(a->limit, &c->limit) != 0 ||
                             c->limit < 1)) {
        return usage_error(cmd, "--limit: `%s` is not a positive integer",
                           a->limit);
    }
    if (a->reason != NULL && a->reason[0] == '\0') {
        return usage_error(cmd, "--reason: empty");
    }
    if (a->brokers != NULL && a->brokers[0] == '\0') {
        return usage_error(cmd, "--brokers: empty");
    }
    if (cmd->id == CMD_REPLAY && a->sink == NULL) {
        return usage_error(cmd, "--sink is required");
    }
    if (cmd->id == CMD_SHOW) {
        if (a->rest_count < 2) {
            return usage_error(cmd, "no POSITION given");
        }
        for (int i = 1; i < a->rest_count; i++) {
            int32_t p;
            int64_t o;
            if (dlqcmd_parse_position(a->rest[i], &p, &o) != 0) {
                return usage_error(cmd,
                                   "`%s` is not a position (PARTITION:OFFSET "
                                   "or OFFSET)",
                                   a->rest[i]);
            }
        }
    } else if (a->rest_count > 1) {
        return usage_error(cmd, "unexpected argument `%s`", a->rest[1]);
    }
    if (a->rest_count == 0) {
        return usage_error(cmd, "no PIPELINE.yaml given");
    }
    c->reason = a->reason;
    c->all = a->all;
    return EXIT_OK;
}

/* Picks the sinks and topics to look at from cfg. */
static int select_sinks(const struct command *cmd, const struct args *a,
                        struct cmd *c)
{
    c->sel = calloc(c->cfg->sink_count + 1, sizeof(*c->sel));
    c->topics = calloc(c->cfg->sink_count + 1, sizeof(*c->topics));
    c->pending = calloc(c->cfg->sink_count + 1, 1);
    if (c->sel == NULL || c->topics == NULL || c->pending == NULL) {
        fprintf(stderr, "sluice: out of memory\n");
        return EXIT_RUNTIME;
    }
    for (size_t i = 0; i < c->cfg->sink_count; i++) {
        const char *topic = cfg_sink_dlq_topic(c->cfg, i);
        size_t t = 0;
        if (a->sink != NULL && strcmp(a->sink, c->cfg->sinks[i].name) != 0) {
            continue;
        }
        c->sel[c->sel_count++] = i;
        while (t < c->topic_count && strcmp(c->topics[t], topic) != 0) {
            t++;
        }
        if (t == c->topic_count) {
            c->topics[c->topic_count++] = topic;
        }
    }
    if (c->sel_count > 0) {
        size_t t = 0;
        while (t < c->topic_count &&
               strcmp(c->topics[t], c->cfg->dlq.topic) != 0) {
            t++;
        }
        if (t == c->topic_count) {
            c->topics[c->topic_count++] = c->cfg->dlq.topic;
        }
    }
    if (a->sink != NULL && c->sel_count == 0) {
        fprintf(stderr, "%s: unknown sink `%s`; the sinks of %s are:",
                cmd->prog, a->sink, c->cfg->path);
        for (size_t i = 0; i < c->cfg->sink_count; i++) {
            fprintf(stderr, " %s", c->cfg->sinks[i].name);
        }
        fprintf(stderr, "\n");
        return EXIT_USAGE;
    }
    c->sink = a->sink;
    return EXIT_OK;
}

static int run_command(const struct command *cmd, const struct args *a,
                       struct cmd *c)
{
    struct sl_error err = {{0}};
    int rc;

    if (cmd->id == CMD_REPLAY) {
        struct dlq_replay_options o = {
            .sink = a->sink,
            .reason = a->reason,
            .since_ms = c->since_ms,
            .limit = c->limit,
            .force = a->force,
            .dry_run = a->dry_run,
            .progress = a->progress,
            .brokers = a->brokers,
        };
        return dlq_replay(c->cfg, &o);
    }
    if (cmd->id == CMD_SHOW) {
        const char *topic = a->topic != NULL ? a->topic : c->cfg->dlq.topic;
        rc = run_show(c, topic, a->rest + 1, (size_t)a->rest_count - 1, &err);
    } else {
        rc = reader_open(c, &err);
        if (rc == 0) {
            rc = cmd->id == CMD_STATS ? run_stats(c, &err)
                                      : run_list(c, &err);
        }
    }
    fflush(stdout);
    if (rc < 0) {
        fprintf(stderr, "sluice: %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    return rc;
}

static int command_main(const struct command *cmd, int argc, char **argv)
{
    struct args a = {0};
    struct cmd c = {0};
    char **copy = calloc((size_t)argc + 1, sizeof(*copy));
    int rc;

    if (copy == NULL) {
        fprintf(stderr, "sluice: out of memory\n");
        return EXIT_RUNTIME;
    }
    c.now_ms = now_ms();
    if (parse_args(cmd, argc, argv, copy, &a) != 0) {
        free(copy);
        return usage_error(cmd, NULL);
    }
    if (a.help) {
        fputs(cmd->usage, stdout);
        free(copy);
        return EXIT_OK;
    }
    rc = check_values(cmd, &a, &c);
    if (rc != EXIT_OK) {
        free(copy);
        return rc;
    }
    struct cfg *cfg = engine_load_config(a.rest[0], stderr);
    if (cfg == NULL) {
        free(copy);
        return EXIT_USAGE;
    }
    c.cfg = cfg;
    c.bootstrap = a.brokers != NULL ? a.brokers : cfg->dlq.brokers;
    if (strcmp(c.bootstrap, "embedded") == 0) {
        fprintf(stderr,
                "%s: dlq.brokers is `embedded`: that cluster lives inside a "
                "running `sluice run` (which logs its bootstrap address at "
                "start); pass it with --brokers HOST:PORT\n",
                cmd->prog);
        rc = EXIT_USAGE;
    } else {
        rc = select_sinks(cmd, &a, &c);
    }
    if (rc == EXIT_OK) {
        rc = run_command(cmd, &a, &c);
    }
    reader_close(&c);
    free(c.committed);
    free(c.sel);
    free(c.topics);
    free(c.pending);
    cfg_free(cfg);
    free(copy);
    return rc;
}

int dlqcmd_main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(dlq_usage, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(dlq_usage, stdout);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            return command_main(&commands[i], argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "sluice dlq: unknown command `%s`\n\n%s", argv[1],
            dlq_usage);
    return EXIT_USAGE;
}
