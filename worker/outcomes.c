/* outcomes.c -- the outcome log's writer (outcomes.h). */
#include "outcomes.h"
#include "utf8.h"

#include "cfg.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_AT ((size_t)64 << 10)

struct outcomes {
    int fd;
    int bodies;
    char *buf;
    size_t len, cap;
    uint64_t written, dropped;
    size_t pending_lines; /* in buf */
    char *path;
    rd_kafka_t *rk; /* a topic's log; NULL: a file's */
    char *topic;
};

outcomes_t *outcomes_open(const char *path, int bodies, struct sl_error *err)
{
    outcomes_t *o = calloc(1, sizeof(*o));

    if (o == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    o->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (o->fd < 0) {
        sl_error_set(err, "outcomes.path %s: %s", path, strerror(errno));
        free(o);
        return NULL;
    }
    o->bodies = bodies;
    o->path = strdup(path);
    if (o->path == NULL) {
        sl_error_set(err, "out of memory");
        outcomes_close(o);
        return NULL;
    }
    return o;
}

static int reserve(outcomes_t *o, size_t more)
{
    if (o->len + more <= o->cap) {
        return 0;
    }
    if (o->len + more > OUTCOMES_BUFFER_MAX) {
        return -1;
    }
    size_t cap = o->cap == 0 ? FLUSH_AT * 2 : o->cap;
    while (cap < o->len + more) {
        cap *= 2;
    }
    if (cap > OUTCOMES_BUFFER_MAX) {
        cap = OUTCOMES_BUFFER_MAX;
    }
    char *buf = realloc(o->buf, cap);
    if (buf == NULL) {
        return -1;
    }
    o->buf = buf;
    o->cap = cap;
    return 0;
}

/* A JSON string of s[0, n). A byte that is not valid UTF-8 is written as
 * the code point of the same number (\u00XX), so that distinct keys stay
 * distinct and the line stays valid JSON. Room: 6 * n + 2. */
static size_t put_string(char *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t w = 0;

    out[w++] = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        size_t len;
        if (c == '"' || c == '\\') {
            out[w++] = '\\';
            out[w++] = (char)c;
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            w += (size_t)sprintf(out + w, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            out[w++] = (char)c;
            i++;
        } else if ((len = utf8_decode(u + i, n - i, NULL)) != 0) {
            memcpy(out + w, u + i, len);
            w += len;
            i += len;
        } else {
            memcpy(out + w, "\\u00", 4);
            out[w + 4] = hex[c >> 4];
            out[w + 5] = hex[c & 15];
            w += 6;
            i++;
        }
    }
    out[w++] = '"';
    return w;
}

static void put_raw(outcomes_t *o, const char *s, size_t n)
{
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void put_field(outcomes_t *o, const char *name, const char *s,
                      size_t n)
{
    o->len += (size_t)sprintf(o->buf + o->len, ",\"%s\":", name);
    o->len += put_string(o->buf + o->len, s, n);
}

void outcomes_sha256_hex(const void *data, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;

    if (EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) != 1 ||
        md_len != 32) {
        memset(md, 0, sizeof(md));
    }
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static int produce_line(outcomes_t *o, const char *key, size_t key_len);

/* A JSON body goes in as sent, with its line breaks (only ever
 * whitespace between tokens in valid JSON) made spaces: one line. */
static int body_is_json(const void *body, size_t len)
{
    json_error_t jerr;
    json_t *v = json_loadb(body, len, JSON_DECODE_ANY, &jerr);

    if (v == NULL) {
        return 0;
    }
    json_decref(v);
    return 1;
}

int outcomes_write(outcomes_t *o, const struct outcome *l)
{
    size_t key_len = l->key != NULL ? l->key_len : 0;
    size_t need = 512 + 6 * (key_len + (l->sink ? strlen(l->sink) : 0) +
                             (l->pipeline ? strlen(l->pipeline) : 0) +
                             (l->method ? strlen(l->method) : 0) +
                             (l->path ? strlen(l->path) : 0) +
                             (l->topic ? strlen(l->topic) : 0) +
                             (l->error ? strlen(l->error) : 0));
    int json_body = 0;

    int with_body = l->body != NULL && o->bodies &&
                    l->body_len <= OUTCOMES_BODY_MAX;

    if (with_body) {
        json_body = body_is_json(l->body, l->body_len);
        need += json_body ? l->body_len + 16 : (l->body_len + 2) / 3 * 4 + 24;
    }
    if (o->len >= FLUSH_AT && o->rk == NULL) {
        outcomes_flush(o, NULL);
    }
    if (reserve(o, need) != 0) {
        o->dropped++;
        return -1;
    }

    time_t secs = (time_t)(l->wall_ms / 1000);
    struct tm tm;
    char ts[40];
    gmtime_r(&secs, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03uZ",
             (unsigned)(l->wall_ms % 1000));
    o->len += (size_t)sprintf(o->buf + o->len, "{\"v\":1,\"ts\":\"%s\"", ts);
    if (l->pipeline != NULL) {
        put_field(o, "pipeline", l->pipeline, strlen(l->pipeline));
    }
    put_field(o, "sink", l->sink, strlen(l->sink));
    put_field(o, "key", l->key != NULL ? l->key : "", key_len);
    put_field(o, "outcome", l->kind, strlen(l->kind));
    if (l->method != NULL) {
        put_field(o, "method", l->method, strlen(l->method));
    }
    if (l->path != NULL) {
        put_field(o, "path", l->path, strlen(l->path));
    }
    if (l->status >= 0) {
        o->len += (size_t)sprintf(o->buf + o->len, ",\"status\":%d",
                                  l->status);
    }
    if (l->attempts > 0) {
        o->len += (size_t)sprintf(o->buf + o->len, ",\"attempts\":%u",
                                  l->attempts);
    }
    if (l->body != NULL) {
        char hex[65];
        outcomes_sha256_hex(l->body, l->body_len, hex);
        o->len += (size_t)sprintf(o->buf + o->len, ",\"body_sha256\":\"%s\"",
                                  hex);
        if (with_body && json_body) {
            put_raw(o, ",\"body\":", 8);
            char *at = o->buf + o->len;
            put_raw(o, l->body, l->body_len);
            for (size_t i = 0; i < l->body_len; i++) {
                if (at[i] == '\n' || at[i] == '\r') {
                    at[i] = ' ';
                }
            }
        } else if (with_body) {
            put_raw(o, ",\"body_base64\":\"", 16);
            o->len += (size_t)EVP_EncodeBlock(
                (unsigned char *)o->buf + o->len, l->body, (int)l->body_len);
            put_raw(o, "\"", 1);
        }
    }
    if (l->topic != NULL) {
        put_raw(o, ",\"source\":{\"topic\":", 19);
        o->len += put_string(o->buf + o->len, l->topic, strlen(l->topic));
        o->len += (size_t)sprintf(o->buf + o->len,
                                  ",\"partition\":%d,\"offset\":%lld}",
                                  (int)l->partition, (long long)l->offset);
    }
    if (l->error != NULL) {
        put_field(o, "error", l->error, strlen(l->error));
    }
    put_raw(o, "}\n", 2);
    o->pending_lines++;
    if (o->rk != NULL) {
        return produce_line(o, l->key != NULL ? l->key : "", key_len);
    }
    return 0;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    outcomes_t *o = opaque;

    (void)rk;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        o->written++;
    } else {
        o->dropped++;
    }
}

outcomes_t *outcomes_open_topic(const char *brokers, const char *topic,
                                int bodies, struct sl_error *err)
{
    static const char *const conf_set[][2] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "20"},
        {"message.timeout.ms", "300000"},
        {"client.software.name", "sluice"},
    };
    outcomes_t *o = calloc(1, sizeof(*o));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];

    if (o == NULL) {
        rd_kafka_conf_destroy(conf);
        sl_error_set(err, "out of memory");
        return NULL;
    }
    o->fd = -1;
    o->bodies = bodies;
    o->topic = strdup(topic);
    if (asprintf(&o->path, "kafka topic %s", topic) < 0) {
        o->path = NULL;
    }
    if (o->topic == NULL || o->path == NULL ||
        rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        sl_error_set(err, "outcomes.brokers: %s",
                     o->topic == NULL || o->path == NULL ? "out of memory"
                                                         : errstr);
        rd_kafka_conf_destroy(conf);
        outcomes_close(o);
        return NULL;
    }
    for (size_t i = 0; i < sizeof(conf_set) / sizeof(conf_set[0]); i++) {
        rd_kafka_conf_set(conf, conf_set[i][0], conf_set[i][1], errstr,
                          sizeof(errstr));
    }
    rd_kafka_conf_set_opaque(conf, o);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    o->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (o->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        sl_error_set(err, "outcomes producer: %s", errstr);
        outcomes_close(o);
        return NULL;
    }
    return o;
}

/* A topic's line goes out as it is written: the buffer holds one. */
static int produce_line(outcomes_t *o, const char *key, size_t key_len)
{
    rd_kafka_resp_err_t e = rd_kafka_producev(
        o->rk, RD_KAFKA_V_TOPIC(o->topic),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(key, key_len),
        RD_KAFKA_V_VALUE(o->buf, o->len - 1), /* without its newline */
        RD_KAFKA_V_END);

    o->len = 0;
    o->pending_lines = 0;
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        o->dropped++;
        return -1;
    }
    return 0;
}

int outcomes_flush(outcomes_t *o, struct sl_error *err)
{
    size_t off = 0;

    if (o->rk != NULL) {
        rd_kafka_poll(o->rk, 0);
        (void)err;
        return 0;
    }

    while (off < o->len) {
        ssize_t w = write(o->fd, o->buf + off, o->len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            /* Keep whole lines only: what was written stays written. */
            memmove(o->buf, o->buf + off, o->len - off);
            o->len -= off;
            return sl_error_set(err, "outcomes.path %s: %s", o->path,
                                strerror(e));
        }
        off += (size_t)w;
    }
    o->len = 0;
    o->written += o->pending_lines;
    o->pending_lines = 0;
    return 0;
}

outcomes_t *outcomes_new(const struct cfg *cfg, struct sl_error *err)
{
    const struct cfg_outcomes *c = &cfg->outcomes;

    if (c->topic != NULL) {
        if (c->brokers == NULL || c->brokers[0] == '\0') {
            sl_error_set(err, "outcomes.brokers: not set");
            return NULL;
        }
        return outcomes_open_topic(c->brokers, c->topic, c->bodies, err);
    }
    return outcomes_open(c->path, c->bodies, err);
}

const char *outcomes_where(const outcomes_t *o)
{
    return o->path;
}

uint64_t outcomes_written(const outcomes_t *o)
{
    return o->written;
}

uint64_t outcomes_dropped(const outcomes_t *o)
{
    return o->dropped;
}

void outcomes_close(outcomes_t *o)
{
    if (o == NULL) {
        return;
    }
    if (o->fd >= 0) {
        if (outcomes_flush(o, NULL) != 0) {
            o->dropped += o->pending_lines;
        }
        close(o->fd);
    }
    if (o->rk != NULL) {
        /* Lines still queued get a bounded moment to go out. */
        rd_kafka_flush(o->rk, 10000);
        o->dropped += (uint64_t)rd_kafka_outq_len(o->rk);
        rd_kafka_destroy(o->rk);
    }
    free(o->buf);
    free(o->topic);
    free(o->path);
    free(o);
}
