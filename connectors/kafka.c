/* kafka.c -- the Kafka sink connector: each message becomes a record of
 * one topic, produced from the lane's loop.
 *
 * The producer is idempotent with acks=all, so "delivered" means the
 * brokers have the record durably and a retried send cannot duplicate it
 * within one producer session. librdkafka's delivery reports arrive
 * through its main queue's io-event pipe, watched on the loop; a send is
 * complete when its report is served. Memory is bounded by the
 * producer's own queue (queue.buffering.max.messages / .kbytes): a send
 * over it fails at once, as a transient failure, which the runtime (or
 * the publisher: 429) turns into back-pressure. */
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "connector.h"

#define POLL_TICK_MS 100
#define MESSAGE_ID_HEADER "message-id"

struct kafka_sink {
    /* options */
    char *brokers;
    char *topic;
    int64_t timeout_ms;
    struct opt_map properties;
    int forward_headers;
    /* state */
    const struct connector_host *host;
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    int pipe_fds[2];
    void *watch;
    void *tick;
    size_t pending;
};

static const struct opt_spec kafka_options[] = {
    {.name = "brokers", .type = OPT_STRING, .flags = OPT_REQUIRED,
     .offset = offsetof(struct kafka_sink, brokers),
     .doc = "Kafka bootstrap servers (`host:port,...`)."},
    {.name = "topic", .type = OPT_STRING, .flags = OPT_REQUIRED,
     .offset = offsetof(struct kafka_sink, topic),
     .doc = "The topic every record goes to. The record's key is the "
            "message's key (a publisher's key rule, docs/hot-keys.md); "
            "librdkafka's default partitioner places it."},
    {.name = "timeout", .type = OPT_DURATION, .def = "30s",
     .offset = offsetof(struct kafka_sink, timeout_ms), .min = 100,
     .max = 3600000,
     .doc = "How long a record may wait for the brokers' acknowledgement "
            "(`message.timeout.ms`) before its send counts as failed, "
            "transiently (it is retried, or a publisher answers 503)."},
    {.name = "forward_headers", .type = OPT_BOOL, .def = "true",
     .offset = offsetof(struct kafka_sink, forward_headers),
     .doc = "Copy the message's headers onto the record. A "
            "`message-id` header (the dedupe key) and the trace context "
            "(`traceparent`, `tracestate`) are always set."},
    {.name = "properties", .type = OPT_STRING_MAP,
     .offset = offsetof(struct kafka_sink, properties),
     .doc = "librdkafka producer properties (e.g. `compression.type`, "
            "`security.protocol`, `linger.ms`: librdkafka's 5 ms, the "
            "batching that costs the broker least per record). "
            "`enable.idempotence` and `acks=all` are sluice's and cannot be "
            "overridden: a delivered record is durable and never written "
            "twice by one producer."},
    {0},
};

static const char *const managed[] = {"enable.idempotence", "acks",
                                      "bootstrap.servers",
                                      "message.timeout.ms", NULL};

static int is_managed(const char *name)
{
    for (size_t i = 0; managed[i] != NULL; i++) {
        if (strcmp(managed[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The producer's configuration; NULL with err (and *option) filled. */
static rd_kafka_conf_t *build_conf(const struct kafka_sink *k,
                                   const char **option, struct sl_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512], timeout[32];
    static const char *const defaults[][2] = {
        {"log.connection.close", "false"},
        {"client.software.name", "sluice"},
    };

    snprintf(timeout, sizeof(timeout), "%lld", (long long)k->timeout_ms);
    const char *const set[][2] = {
        {"bootstrap.servers", k->brokers},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"message.timeout.ms", timeout},
    };
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        rd_kafka_conf_set(conf, defaults[i][0], defaults[i][1], errstr,
                          sizeof(errstr));
    }
    for (size_t i = 0; i < k->properties.count; i++) {
        const char *name = k->properties.keys[i];
        if (is_managed(name)) {
            *option = "properties";
            sl_error_set(err, "properties.%s is set by sluice (and by "
                              "`brokers`/`timeout`)", name);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
        if (rd_kafka_conf_set(conf, name, k->properties.values[i], errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK) {
            *option = "properties";
            sl_error_set(err, "properties.%s: %s", name, errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++) {
        if (rd_kafka_conf_set(conf, set[i][0], set[i][1], errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK) {
            *option = i == 0 ? "brokers" : "timeout";
            sl_error_set(err, "%s", errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    return conf;
}

static int kafka_check(const void *ctx, const char **option,
                       struct sl_error *err)
{
    const struct kafka_sink *k = ctx;
    rd_kafka_conf_t *conf = build_conf(k, option, err);

    if (conf == NULL) {
        return -1;
    }
    rd_kafka_conf_destroy(conf);
    if (k->topic[0] == '\0' || strlen(k->topic) > 249) {
        *option = "topic";
        return sl_error_set(err, "a topic name is 1 to 249 characters");
    }
    return 0;
}

static void fill_result(struct connector_result *r, rd_kafka_resp_err_t e)
{
    memset(r, 0, sizeof(*r));
    r->retry_after_ms = -1;
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        r->status = CONNECTOR_OK;
        return;
    }
    snprintf(r->error, sizeof(r->error), "kafka: %s", rd_kafka_err2str(e));
    switch (e) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
        r->status = CONNECTOR_REJECT;
        break;
    default:
        /* Timeouts, a full queue, brokers down, leader changes, and a
         * topic that does not exist yet: another try may succeed. */
        r->status = CONNECTOR_RETRY;
        break;
    }
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct kafka_sink *k = opaque;
    struct connector_result r;

    (void)rk;
    k->pending--;
    if (k->host == NULL) {
        return; /* closing: nobody to tell */
    }
    fill_result(&r, m->err);
    k->host->complete(k->host->engine, m->_private, &r);
}

static void serve(struct kafka_sink *k)
{
    rd_kafka_poll(k->rk, 0);
}

static void pipe_ready(void *arg, unsigned events)
{
    struct kafka_sink *k = arg;
    char buf[256];

    (void)events;
    while (read(k->pipe_fds[0], buf, sizeof(buf)) > 0) {
    }
    serve(k);
}

/* Reports can be queued before the pipe is armed; a clock catches them. */
static void tick_fired(void *arg)
{
    struct kafka_sink *k = arg;

    serve(k);
    k->host->timer_set(k->host->io, k->tick, POLL_TICK_MS);
}

static void kafka_close(void *ctx);

static int kafka_open(void *ctx, const struct connector_host *host,
                      struct sl_error *err)
{
    struct kafka_sink *k = ctx;
    const char *option = NULL;
    char errstr[512];
    rd_kafka_conf_t *conf = build_conf(k, &option, err);

    k->pipe_fds[0] = k->pipe_fds[1] = -1;
    if (conf == NULL) {
        return -1;
    }
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (k->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return sl_error_set(err, "kafka producer: %s", errstr);
    }
    k->host = host;
    k->queue = rd_kafka_queue_get_main(k->rk);
    if (pipe2(k->pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        sl_error_set(err, "pipe: %s", strerror(errno));
        kafka_close(k);
        return -1;
    }
    rd_kafka_queue_io_event_enable(k->queue, k->pipe_fds[1], "1", 1);
    k->watch = host->watch_new(host->io, k->pipe_fds[0], pipe_ready, k);
    k->tick = host->timer_new(host->io, tick_fired, k);
    if (k->watch == NULL || k->tick == NULL ||
        host->watch_set(host->io, k->watch, CONNECTOR_READABLE) != 0) {
        sl_error_set(err, "cannot watch the producer's queue");
        kafka_close(k);
        return -1;
    }
    host->timer_set(host->io, k->tick, POLL_TICK_MS);
    return 0;
}

static int has_header(const struct connector_msg *msg, const char *name)
{
    for (size_t i = 0; i < msg->header_count; i++) {
        if (strcasecmp(msg->headers[i].name, name) == 0) {
            return 1;
        }
    }
    return 0;
}

static int kafka_send(void *ctx, const struct connector_msg *msg, void *token,
                      struct connector_result *result)
{
    struct kafka_sink *k = ctx;
    rd_kafka_headers_t *h =
        rd_kafka_headers_new(msg->header_count + msg->request_header_count +
                             3);
    rd_kafka_resp_err_t e;

    if (h == NULL) {
        fill_result(result, RD_KAFKA_RESP_ERR__FAIL);
        snprintf(result->error, sizeof(result->error), "out of memory");
        return -1;
    }
    if (k->forward_headers) {
        for (size_t i = 0; i < msg->header_count; i++) {
            const char *n = msg->headers[i].name;
            if (strcasecmp(n, "traceparent") == 0 ||
                strcasecmp(n, "tracestate") == 0) {
                continue; /* this request's own come below */
            }
            rd_kafka_header_add(h, n, -1, msg->headers[i].value,
                                (ssize_t)msg->headers[i].value_len);
        }
    }
    for (size_t i = 0; i < msg->request_header_count; i++) {
        rd_kafka_header_add(h, msg->request_headers[i].name, -1,
                            msg->request_headers[i].value,
                            (ssize_t)msg->request_headers[i].value_len);
    }
    if (!k->forward_headers || !has_header(msg, MESSAGE_ID_HEADER)) {
        rd_kafka_header_add(h, MESSAGE_ID_HEADER, -1, msg->dedupe_key, -1);
    }
    if (msg->traceparent != NULL) {
        rd_kafka_header_add(h, "traceparent", -1, msg->traceparent, -1);
        if (msg->tracestate_len > 0) {
            rd_kafka_header_add(h, "tracestate", -1, msg->tracestate,
                                (ssize_t)msg->tracestate_len);
        }
    }
    const void *key = msg->key;
    size_t key_len = key != NULL ? msg->key_len : 0;
    e = rd_kafka_producev(
        k->rk, RD_KAFKA_V_TOPIC(k->topic),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(key, key_len),
        RD_KAFKA_V_VALUE((void *)msg->value, msg->value_len),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(token), RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(h);
        fill_result(result, e);
        return -1;
    }
    k->pending++;
    return 0;
}

static void kafka_close(void *ctx)
{
    struct kafka_sink *k = ctx;
    const struct connector_host *host = k->host;

    if (host != NULL) {
        if (k->watch != NULL) {
            host->watch_free(host->io, k->watch);
        }
        if (k->tick != NULL) {
            host->timer_free(host->io, k->tick);
        }
    }
    k->watch = NULL;
    k->tick = NULL;
    k->host = NULL; /* reports still due go nowhere (close's contract) */
    if (k->rk != NULL) {
        rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE |
                                  RD_KAFKA_PURGE_F_INFLIGHT |
                                  RD_KAFKA_PURGE_F_NON_BLOCKING);
        rd_kafka_flush(k->rk, 1000);
        rd_kafka_poll(k->rk, 0);
        if (k->queue != NULL) {
            rd_kafka_queue_io_event_enable(k->queue, -1, NULL, 0);
            rd_kafka_queue_destroy(k->queue);
        }
        rd_kafka_destroy(k->rk);
    }
    k->rk = NULL;
    k->queue = NULL;
    for (int i = 0; i < 2; i++) {
        if (k->pipe_fds[i] >= 0) {
            close(k->pipe_fds[i]);
        }
        k->pipe_fds[i] = -1;
    }
}

static void kafka_describe(const void *ctx, struct connector_about *out)
{
    const struct kafka_sink *k = ctx;

    memset(out, 0, sizeof(*out));
    snprintf(out->method, sizeof(out->method), "PRODUCE");
    /* The first bootstrap server, for traces. */
    size_t n = strcspn(k->brokers, ",");
    const char *colon = memchr(k->brokers, ':', n);
    if (colon != NULL) {
        snprintf(out->server_address, sizeof(out->server_address), "%.*s",
                 (int)(colon - k->brokers), k->brokers);
        out->server_port = atoi(colon + 1);
    }
}

static size_t kafka_target(const void *ctx, const struct connector_msg *msg,
                           char *out, size_t cap)
{
    const struct kafka_sink *k = ctx;
    int n;

    (void)msg;
    n = snprintf(out, cap, "%s", k->topic);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

const struct connector kafka_connector = {
    .name = "kafka",
    .doc = "Produces each message as a record of one Kafka topic, "
           "idempotently with acks=all: a send is delivered once the "
           "brokers acknowledged it. The publisher's sink "
           "(docs/migration.md); a Kafka-to-Kafka pipeline can use it too. "
           "Its `max_in_flight` defaults to 4096 records under way (the "
           "producer batches them into few requests).",
    .options = kafka_options,
    .ctx_size = sizeof(struct kafka_sink),
    .max_in_flight_default = 4096,
    .check = kafka_check,
    .open = kafka_open,
    .send = kafka_send,
    .close = kafka_close,
    .describe = kafka_describe,
    .target = kafka_target,
};
