/* dlq.c -- the dead-letter producer, driven by the lane's loop.
 *
 * An idempotent producer (acks=all): a write counts only once Kafka
 * acknowledged it, and librdkafka's retries cannot duplicate or reorder
 * it. Delivery reports are served from the main queue, which signals a
 * pipe when it turns non-empty; the loop watches the pipe, so the lane
 * never blocks in librdkafka. A record too large for the broker is cut,
 * with a header saying how long it was, rather than lost. */
#include "dlq.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kconf.h"
#include "log.h"

/* What a too-large record's value is cut to, first; a second refusal
 * cuts it to nothing (the context headers still say what it was). */
#define TRUNCATE_TO (64 * 1024)
#define POLL_TICK_MS 1000

struct dlq {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    loop_t *loop;
    dlq_done_fn done;
    void *arg;
    int pipe_fds[2];
    struct loop_io io;
    struct loop_timer tick;
    size_t pending;
    size_t max_bytes; /* message.max.bytes */
    int partitions;   /* of the topics it creates */
    rd_kafka_queue_t *admin; /* the CreateTopics result, until it came */
    int down; /* every broker down: said once, until a write gets through */
};

/* One write in flight: what a retry with a cut value needs. */
struct job {
    void *token;
    int cuts; /* how often the value was cut */
};

/* Properties that would break "acknowledged means durable". */
static const char *const managed[] = {"enable.idempotence", "acks",
                                      "bootstrap.servers", NULL};

static const struct kconf_default defaults[] = {
    {"enable.idempotence", "true"},
    {"acks", "all"},
    /* A write that cannot be made in this time is reported failed and
     * the engine writes it again: the record stays uncommitted
     * meanwhile, so a long outage costs nothing but the wait. */
    {"message.timeout.ms", "30000"},
    {"linger.ms", "5"},
    {"log.connection.close", "false"},
    {"client.software.name", "sluice"},
    {NULL, NULL},
};

static rd_kafka_conf_t *build_conf(const struct cfg *cfg,
                                   const char *bootstrap,
                                   struct cfg_errors *errs,
                                   struct sl_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];

    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        sl_error_set(err, "dlq.brokers: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (kconf_apply(conf, defaults, managed, &cfg->dlq.properties, cfg,
                    "dlq.properties", cfg->dlq.properties_line,
                    cfg->dlq.properties_col, errs, err) > 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

int dlq_check_config(const struct cfg *cfg, struct cfg_errors *errs)
{
    rd_kafka_conf_t *conf = build_conf(cfg, "localhost:9092", errs, NULL);

    if (conf == NULL) {
        return -1;
    }
    rd_kafka_conf_destroy(conf);
    return 0;
}

static int produce(dlq_t *d, const char *topic, const void *key,
                   size_t key_len, const void *value, size_t value_len,
                   rd_kafka_headers_t *headers, int64_t timestamp,
                   struct job *job)
{
    return rd_kafka_producev(
        d->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_TIMESTAMP(timestamp),
        RD_KAFKA_V_KEY(key, key_len),
        RD_KAFKA_V_VALUE((void *)value, value_len),
        RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(job), RD_KAFKA_V_END);
}

/* A copy of h for a record cut to fit: all of it, or (context_only) only
 * the context headers, the last resort when the original headers alone
 * are too large; with DLQ_H_TRUNCATED saying the value's original length.
 * NULL when out of memory. */
static rd_kafka_headers_t *headers_cut(const rd_kafka_headers_t *h,
                                       int context_only, size_t original)
{
    const char *name;
    const void *value;
    size_t len;
    rd_kafka_headers_t *out =
        rd_kafka_headers_new(h != NULL ? rd_kafka_header_cnt(h) + 1 : 1);
    char text[32];

    for (size_t i = 0;
         h != NULL &&
         rd_kafka_header_get_all(h, i, &name, &value, &len) ==
             RD_KAFKA_RESP_ERR_NO_ERROR;
         i++) {
        if (strcmp(name, DLQ_H_TRUNCATED) == 0 ||
            (context_only && strncmp(name, DLQ_HEADER_PREFIX,
                                     sizeof(DLQ_HEADER_PREFIX) - 1) != 0)) {
            continue;
        }
        rd_kafka_header_add(out, name, -1, value, (ssize_t)len);
    }
    snprintf(text, sizeof(text), "%zu", original);
    rd_kafka_header_add(out, DLQ_H_TRUNCATED, -1, text, -1);
    return out;
}

/* The original value length of a record cut before (its
 * DLQ_H_TRUNCATED), else len. */
static size_t original_length(const rd_kafka_headers_t *h, size_t len)
{
    const void *v;
    size_t n;
    char text[32];

    if (h == NULL ||
        rd_kafka_header_get_last(h, DLQ_H_TRUNCATED, &v, &n) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        n == 0 || n >= sizeof(text)) {
        return len;
    }
    memcpy(text, v, n);
    text[n] = '\0';
    return (size_t)strtoull(text, NULL, 10);
}

/* The broker refused a record as too large: writes it again cut, its value
 * to TRUNCATE_TO the first time, and then to nothing with only its
 * context headers and no key. 0 when queued. */
static int rewrite_cut(dlq_t *d, const rd_kafka_message_t *m, struct job *job)
{
    rd_kafka_headers_t *hdrs = NULL;
    int last = job->cuts > 0;
    size_t keep = !last && m->len > TRUNCATE_TO ? TRUNCATE_TO : 0;

    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        hdrs = NULL;
    }
    rd_kafka_headers_t *copy =
        headers_cut(hdrs, last, original_length(hdrs, m->len));
    job->cuts++;
    if (produce(d, rd_kafka_topic_name(m->rkt), last ? NULL : m->key,
                last ? 0 : m->key_len, m->payload, keep, copy,
                rd_kafka_message_timestamp(m, NULL) > 0
                    ? rd_kafka_message_timestamp(m, NULL)
                    : 0,
                job) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(copy);
        return -1;
    }
    log_warn("dlq: a record for %s was too large for the broker: its value "
             "(%zu bytes) is cut to %zu bytes%s",
             rd_kafka_topic_name(m->rkt), m->len, keep,
             last ? ", its key and its own headers left out" : "");
    return 0;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    dlq_t *d = opaque;
    struct job *job = m->_private;

    (void)rk;
    if (m->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE && job->cuts < 2 &&
        rewrite_cut(d, m, job) == 0) {
        return; /* still pending, under the same job */
    }
    d->pending--;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && d->down) {
        log_info("dlq: brokers reachable again");
        d->down = 0;
    }
    void *token = job->token;
    free(job);
    if (d->done == NULL) {
        return; /* being destroyed */
    }
    d->done(d->arg, token,
            m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? NULL
                                                 : rd_kafka_err2str(m->err),
            m->partition, m->offset);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    (void)rk;
    log_write(kconf_log_level(level, fac), "dlq kafka %s: %s", fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason,
                     void *opaque)
{
    dlq_t *d = opaque;

    (void)rk;
    /* Writes that fail are reported one by one and written again; a fatal
     * idempotence error leaves every later write failing, which keeps
     * the records uncommitted and says so in the log. Connection errors
     * are librdkafka retrying: one line when every broker is down. */
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT ||
        err == RD_KAFKA_RESP_ERR__RESOLVE) {
        log_debug("dlq kafka: %s: %s", rd_kafka_err2name(err), reason);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        if (!d->down) {
            log_warn("dlq: every broker is down; dead-letter writes wait "
                     "for them");
        }
        d->down = 1;
        return;
    }
    log_warn("dlq kafka: %s: %s", rd_kafka_err2name(err), reason);
}

static void admin_serve(dlq_t *d, int wait_ms);

static void serve(dlq_t *d)
{
    rd_kafka_poll(d->rk, 0);
    admin_serve(d, 0);
}

static void pipe_ready(struct loop_io *io, uint32_t events)
{
    dlq_t *d = (dlq_t *)(void *)((char *)io - offsetof(dlq_t, io));
    char buf[256];

    (void)events;
    while (read(io->fd, buf, sizeof(buf)) > 0) {
    }
    serve(d);
}

/* Reports can be queued before the pipe is armed; a clock catches them. */
static void tick_fired(struct loop_timer *t)
{
    dlq_t *d = (dlq_t *)(void *)((char *)t - offsetof(dlq_t, tick));

    serve(d);
    loop_timer_start(d->loop, t, POLL_TICK_MS);
}

dlq_t *dlq_new(const struct cfg *cfg, const char *bootstrap, loop_t *loop,
               dlq_done_fn done, void *arg, struct sl_error *err)
{
    dlq_t *d = calloc(1, sizeof(*d));
    rd_kafka_conf_t *conf;
    char errstr[512], value[32];
    size_t value_len = sizeof(value);

    if (d == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    d->loop = loop;
    d->done = done;
    d->arg = arg;
    d->pipe_fds[0] = d->pipe_fds[1] = -1;
    loop_timer_init(&d->tick, tick_fired);
    conf = build_conf(cfg, bootstrap, NULL, err);
    if (conf == NULL) {
        free(d);
        return NULL;
    }
    d->partitions = (int)cfg->dlq.partitions;
    d->max_bytes = 1000000;
    if (rd_kafka_conf_get(conf, "message.max.bytes", value, &value_len) ==
        RD_KAFKA_CONF_OK) {
        d->max_bytes = (size_t)strtoull(value, NULL, 10);
    }
    rd_kafka_conf_set_opaque(conf, d);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    d->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (d->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        free(d);
        sl_error_set(err, "dlq producer: %s", errstr);
        return NULL;
    }
    d->queue = rd_kafka_queue_get_main(d->rk);
    if (pipe2(d->pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        sl_error_set(err, "pipe: %s", strerror(errno));
        dlq_destroy(d);
        return NULL;
    }
    rd_kafka_queue_io_event_enable(d->queue, d->pipe_fds[1], "1", 1);
    d->io.fd = d->pipe_fds[0];
    d->io.fn = pipe_ready;
    if (loop_io_add(loop, &d->io, LOOP_READABLE) != 0) {
        sl_error_set(err, "epoll: %s", strerror(errno));
        close(d->pipe_fds[0]);
        d->pipe_fds[0] = -1;
        dlq_destroy(d);
        return NULL;
    }
    loop_timer_start(loop, &d->tick, POLL_TICK_MS);
    return d;
}

/* Logs the CreateTopics result once it is there (waiting up to wait_ms),
 * then forgets the request. */
static void admin_serve(dlq_t *d, int wait_ms)
{
    rd_kafka_event_t *ev;

    if (d->admin == NULL ||
        (ev = rd_kafka_queue_poll(d->admin, wait_ms)) == NULL) {
        return;
    }
    const rd_kafka_CreateTopics_result_t *res =
        rd_kafka_event_CreateTopics_result(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t **r =
        res != NULL ? rd_kafka_CreateTopics_result_topics(res, &n) : NULL;
    if (res == NULL || rd_kafka_event_error(ev)) {
        log_warn("dlq: cannot check the dead-letter topics: %s; writes are "
                 "retried until they succeed",
                 rd_kafka_event_error_string(ev));
    }
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(r[i]);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            log_info("dlq: created topic %s", rd_kafka_topic_result_name(r[i]));
        } else if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            log_warn("dlq: cannot create topic %s: %s; writes are retried "
                     "until they succeed",
                     rd_kafka_topic_result_name(r[i]),
                     rd_kafka_topic_result_error_string(r[i]));
        }
    }
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(d->admin);
    d->admin = NULL;
}

void dlq_ensure_topics(dlq_t *d, const char *const *topics, size_t count,
                       int timeout_ms, int wait)
{
    rd_kafka_NewTopic_t **nt = calloc(count ? count : 1, sizeof(*nt));
    rd_kafka_AdminOptions_t *opts =
        rd_kafka_AdminOptions_new(d->rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    char errstr[256];
    size_t n = 0;

    if (d->admin == NULL) {
        d->admin = rd_kafka_queue_new(d->rk);
    }
    if (nt == NULL || opts == NULL || d->admin == NULL) {
        goto out;
    }
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, errstr,
                                                sizeof(errstr));
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, errstr,
                                              sizeof(errstr));
    for (size_t i = 0; i < count; i++) {
        int seen = 0;
        for (size_t j = 0; j < i; j++) {
            seen |= strcmp(topics[i], topics[j]) == 0;
        }
        if (!seen) {
            nt[n] = rd_kafka_NewTopic_new(topics[i], d->partitions, -1,
                                          errstr, sizeof(errstr));
            if (nt[n] != NULL) {
                n++;
            }
        }
    }
    rd_kafka_CreateTopics(d->rk, nt, n, opts, d->admin);
    /* Else the answer is logged from the loop's clock: a cluster that
     * cannot create topics (librdkafka's mock) must not delay the start. */
    admin_serve(d, wait ? timeout_ms + 1000 : 0);
out:
    for (size_t i = 0; i < n; i++) {
        rd_kafka_NewTopic_destroy(nt[i]);
    }
    free(nt);
    if (opts != NULL) {
        rd_kafka_AdminOptions_destroy(opts);
    }
}

int dlq_write(dlq_t *d, const struct dlq_record *r, void *token,
              struct sl_error *err)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(r->header_count + 1);
    struct job *job = malloc(sizeof(*job));
    size_t key_len = r->key != NULL ? r->key_len : 0;
    size_t meta = key_len + 512; /* key, headers and the record's framing */
    size_t value_len = r->value_len;
    rd_kafka_resp_err_t e;

    if (hdrs == NULL || job == NULL) {
        if (hdrs != NULL) {
            rd_kafka_headers_destroy(hdrs);
        }
        free(job);
        return sl_error_set(err, "out of memory");
    }
    job->token = token;
    job->cuts = 0;
    for (size_t i = 0; i < r->header_count; i++) {
        const struct sl_header *h = &r->headers[i];
        rd_kafka_header_add(hdrs, h->name, -1, h->value,
                            (ssize_t)h->value_len);
        meta += strlen(h->name) + h->value_len + 8;
    }
    /* Cut up front what the producer would refuse outright: the value,
     * and when the key and headers alone are too large, those too. */
    if (meta + value_len > d->max_bytes) {
        int last = meta + 1024 > d->max_bytes;
        rd_kafka_headers_t *cut = headers_cut(hdrs, last, r->value_len);
        rd_kafka_headers_destroy(hdrs);
        hdrs = cut;
        value_len = last ? 0 : d->max_bytes - meta;
        if (value_len > TRUNCATE_TO) {
            value_len = TRUNCATE_TO;
        }
        if (last) {
            key_len = 0;
        }
        job->cuts = last ? 2 : 1;
        log_warn("dlq: a record for %s is too large (%zu bytes): its value "
                 "is cut to %zu bytes%s",
                 r->topic, meta + r->value_len, value_len,
                 last ? ", its key and its own headers left out" : "");
    }
    e = produce(d, r->topic, key_len > 0 ? r->key : NULL, key_len, r->value,
                value_len, hdrs, r->timestamp_ms, job);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(hdrs);
        free(job);
        return sl_error_set(err, "%s", rd_kafka_err2str(e));
    }
    d->pending++;
    return 0;
}

size_t dlq_pending(const dlq_t *d)
{
    return d != NULL ? d->pending : 0;
}

void dlq_destroy(dlq_t *d)
{
    if (d == NULL) {
        return;
    }
    loop_timer_stop(d->loop, &d->tick);
    if (d->pipe_fds[0] >= 0) {
        loop_io_del(d->loop, &d->io);
    }
    if (d->rk != NULL) {
        /* Reports still due must not reach a caller that is gone; they
         * are served only to free their jobs. */
        d->done = NULL;
        if (d->admin != NULL) {
            rd_kafka_queue_destroy(d->admin);
        }
        rd_kafka_purge(d->rk, RD_KAFKA_PURGE_F_QUEUE |
                                  RD_KAFKA_PURGE_F_INFLIGHT |
                                  RD_KAFKA_PURGE_F_NON_BLOCKING);
        rd_kafka_flush(d->rk, 1000);
        rd_kafka_poll(d->rk, 0);
        if (d->queue != NULL) {
            rd_kafka_queue_io_event_enable(d->queue, -1, NULL, 0);
            rd_kafka_queue_destroy(d->queue);
        }
        rd_kafka_destroy(d->rk);
    }
    for (int i = 0; i < 2; i++) {
        if (d->pipe_fds[i] >= 0) {
            close(d->pipe_fds[i]);
        }
    }
    free(d);
}
