/* consumer.c -- librdkafka high-level consumer driven by the lane's loop.
 *
 * The consumer queue signals a pipe when it turns non-empty; the loop
 * watches the pipe and we drain the queue with rd_kafka_consumer_poll(0)
 * in bounded batches, so the loop never blocks in librdkafka. Rebalance
 * callbacks run inside that poll: a revoke hands the partitions to the
 * engine, which drains them, and the returned offsets are committed
 * synchronously before the partitions are released. */
#include "consumer.h"

#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kconf.h"
#include "kprobe.h"
#include "log.h"

#define POLL_BATCH 512
#define POLL_TICK_MS 1000
/* How long timer commits wait for a rejoin to finish at most. */
#define REBALANCE_COMMIT_HOLD_MS 30000

struct topic_parts {
    char *name;
    void **parts; /* indexed by partition; NULL: not assigned */
    int32_t cap;
};

struct consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    loop_t *loop;
    struct source_callbacks cb;
    int pipe_fds[2];
    struct loop_io io;
    struct loop_timer kick;
    struct loop_timer tick; /* polls even when nothing arrives */
    int suspended, in_poll, pending, closed;
    /* A cooperative revoke is followed by two assigns: the end of this
     * round, then the end of the follow-up rejoin. During the rejoin the
     * member's generation goes stale; a commit then fails with
     * ILLEGAL_GENERATION, and librdkafka 2.0.2 answers that by declaring
     * the whole remaining assignment lost (librdkafka #4059), which
     * redelivers everything since the last commit. So timer commits wait
     * for both assigns (or REBALANCE_COMMIT_HOLD_MS at most). */
    int assigns_awaited;
    int assigned_once; /* an assignment ever came */
    int abandoned;     /* see await_first_assignment */
    uint64_t rebalancing_since;
    struct topic_parts *topics;
    size_t topic_count;
    /* Whether the cluster can be reached: one log line per change. */
    enum { LINK_STARTING, LINK_UP, LINK_DOWN, LINK_NO_TOPIC } link;
    int ever_up; /* reached once: later outages never stop the worker */
    kprobe_t *probe;
    struct loop_timer deadline; /* source.connect_timeout */
    int64_t connect_timeout_ms;
    uint64_t down_since;
    char *brokers;
    char *group;
    char **topic_names; /* the subscription, for the probe */
    size_t topic_name_count;
    char problem[640];    /* why the source is not usable; "" when it is */
    char last_reason[256]; /* librdkafka's last transport error */
    unsigned long commit_failures; /* in a row */
    struct source_stats stats;
    /* When the async commits not yet answered were sent, oldest first:
     * librdkafka answers them in order. */
    uint64_t commit_sent_ns[32];
    unsigned commit_sent_head, commit_sent_count;
    const char *last_name; /* librdkafka's pointer, for a fast lookup */
    struct topic_parts *last_topic;
};

/* Properties sluice manages itself: overriding them would break the
 * commit contract. */
static const char *const managed_properties[] = {
    "enable.auto.commit", "enable.auto.offset.store", "group.id",
    "bootstrap.servers", NULL};

static const struct kconf_default default_properties[] = {
    {"enable.auto.commit", "false"},
    {"enable.auto.offset.store", "false"},
    {"partition.assignment.strategy", "cooperative-sticky"},
    {"enable.partition.eof", "false"},
    /* Bound librdkafka's prefetch by bytes: with small messages the count
     * limit would hold far more than the bytes limit intends. */
    {"queued.max.messages.kbytes", "8192"},
    {"queued.min.messages", "100000"},
    /* Held records pin their fetched batch: smaller fetches per
     * partition keep that bounded (bench on Apache Kafka: peak RSS 71 MiB
     * with the 1 MiB default, 53 MiB with this, at the same rate). */
    {"max.partition.fetch.bytes", "262144"},
    {"log.connection.close", "false"},
    {"client.software.name", "sluice"},
    {NULL, NULL},
};

/* ---- partition table ---- */

static struct topic_parts *topic_find(consumer_t *c, const char *name,
                                      int create)
{
    if (name == c->last_name) {
        return c->last_topic;
    }
    for (size_t i = 0; i < c->topic_count; i++) {
        if (strcmp(c->topics[i].name, name) == 0) {
            c->last_name = name;
            c->last_topic = &c->topics[i];
            return c->last_topic;
        }
    }
    if (!create) {
        return NULL;
    }
    struct topic_parts *t =
        realloc(c->topics, (c->topic_count + 1) * sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    c->topics = t;
    t = &c->topics[c->topic_count];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    if (t->name == NULL) {
        return NULL;
    }
    c->topic_count++;
    c->last_name = NULL; /* realloc moved the entries */
    c->last_topic = NULL;
    return t;
}

static int part_set(consumer_t *c, const char *topic, int32_t partition,
                    void *part)
{
    struct topic_parts *t = topic_find(c, topic, 1);

    if (t == NULL) {
        return -1;
    }
    if (partition >= t->cap) {
        int32_t cap = t->cap ? t->cap : 16;
        while (cap <= partition) {
            cap *= 2;
        }
        void **parts = realloc(t->parts, (size_t)cap * sizeof(*parts));
        if (parts == NULL) {
            return -1;
        }
        memset(parts + t->cap, 0, (size_t)(cap - t->cap) * sizeof(*parts));
        t->parts = parts;
        t->cap = cap;
    }
    t->parts[partition] = part;
    return 0;
}

static void *part_get(consumer_t *c, const char *topic, int32_t partition)
{
    struct topic_parts *t = topic_find(c, topic, 0);

    if (t == NULL || partition < 0 || partition >= t->cap) {
        return NULL;
    }
    return t->parts[partition];
}

/* ---- callbacks from librdkafka ---- */

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    (void)rk;
    log_write(kconf_log_level(level, fac), "kafka %s: %s", fac, buf);
}

static void probe_start(consumer_t *c);

static void link_up(consumer_t *c)
{
    unsigned long long waited =
        (unsigned long long)(loop_now(c->loop) - c->down_since) / 1000;
    if (c->link == LINK_DOWN) {
        log_info("source: brokers %s reachable again after %llu s",
                 c->brokers, waited);
    } else if (c->link == LINK_NO_TOPIC) {
        log_info("source: every topic exists on %s now, after %llu s",
                 c->brokers, waited);
    } else if (c->link == LINK_STARTING) {
        log_info("source: connected to %s", c->brokers);
    }
    c->link = LINK_UP;
    c->ever_up = 1;
    c->problem[0] = '\0';
    loop_timer_stop(c->loop, &c->deadline);
}

static void probe_answer(void *arg, enum kprobe_state state,
                         const char *text)
{
    consumer_t *c = arg;
    char until[96] = "";

    if (!c->ever_up) {
        if (c->connect_timeout_ms > 0) {
            snprintf(until, sizeof(until),
                     "; trying for up to %lld s (source.connect_timeout)",
                     (long long)(c->connect_timeout_ms / 1000));
        } else {
            snprintf(until, sizeof(until), "; trying until it is");
        }
    }
    switch (state) {
    case KPROBE_OK:
        kprobe_stop(c->probe);
        c->probe = NULL;
        link_up(c);
        return;
    case KPROBE_UNREACHABLE:
        /* librdkafka's own words for the last failure say more than the
         * metadata request's "Broker transport failure". */
        snprintf(c->problem, sizeof(c->problem),
                 "cannot reach the brokers %s: %s", c->brokers,
                 c->last_reason[0] ? c->last_reason : text);
        if (c->link != LINK_DOWN) {
            log_error("source: %s%s", c->problem, until);
            c->link = LINK_DOWN;
            c->down_since = loop_now(c->loop);
        }
        break;
    case KPROBE_NO_TOPIC:
        snprintf(c->problem, sizeof(c->problem),
                 "topic%s `%s` do%s not exist on %s",
                 strchr(text, ',') ? "s" : "", text,
                 strchr(text, ',') ? "" : "es", c->brokers);
        log_error("source: %s%s", c->problem, until);
        if (c->link != LINK_NO_TOPIC) {
            c->down_since = loop_now(c->loop);
        }
        c->link = LINK_NO_TOPIC;
        break;
    }
}

/* A start that never got through: the worker cannot do its job, and a
 * supervisor restarting it says so louder than a quiet retry loop. */
static void deadline_fired(struct loop_timer *t)
{
    consumer_t *c =
        (consumer_t *)((char *)t - offsetof(consumer_t, deadline));
    char reason[800];

    if (c->ever_up) {
        return;
    }
    snprintf(reason, sizeof(reason),
             "source: gave up after %lld s (source.connect_timeout): %s",
             (long long)(c->connect_timeout_ms / 1000),
             c->problem[0] ? c->problem : "no answer from the brokers");
    c->cb.on_fatal(c->cb.arg, reason);
}

static void probe_start(consumer_t *c)
{
    struct sl_error err;

    if (c->probe != NULL || c->closed) {
        return;
    }
    c->probe = kprobe_start(c->rk, c->loop,
                            (const char *const *)c->topic_names,
                            c->topic_name_count, probe_answer, c, &err);
    if (c->probe == NULL) {
        log_warn("source: %s; broker outages are not reported", err.msg);
    }
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason,
                     void *opaque)
{
    consumer_t *c = opaque;
    char fatal[512];

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        log_error("kafka fatal error: %s", fatal);
        c->cb.on_fatal(c->cb.arg, fatal);
        return;
    }
    /* Transient: librdkafka retries by itself. The probe reports the
     * state once; each retry's reason only goes to the debug log. */
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT ||
        err == RD_KAFKA_RESP_ERR__RESOLVE ||
        err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        if (err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
            /* "host:port/id: Connect to ... failed: Connection refused
             * (after 0ms in state CONNECT, 1 identical error(s)
             * suppressed)": the tail changes with every retry. */
            const char *tail = strstr(reason, " (after ");
            int len = tail != NULL ? (int)(tail - reason) : (int)strlen(reason);
            snprintf(c->last_reason, sizeof(c->last_reason), "%.*s", len,
                     reason);
        }
        log_debug("kafka: %s: %s", rd_kafka_err2name(err), reason);
        /* librdkafka does not always say "all brokers down" (a broker
         * it has not connected to yet does not count as down): any lost
         * connection has the probe check quietly, and an unreachable
         * answer is reported by it. */
        if (err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN &&
            c->link == LINK_UP) {
            probe_start(c);
        }
        if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN &&
            c->link == LINK_UP) {
            log_warn("source: every broker of %s is down%s%s%s; waiting "
                     "for them",
                     c->brokers, c->last_reason[0] ? " (" : "",
                     c->last_reason, c->last_reason[0] ? ")" : "");
            c->link = LINK_DOWN;
            c->down_since = loop_now(c->loop);
            snprintf(c->problem, sizeof(c->problem),
                     "every broker of %s is down", c->brokers);
            probe_start(c);
        }
        return;
    }
    log_warn("kafka: %s: %s", rd_kafka_err2name(err), reason);
}

static void *part_get(consumer_t *c, const char *topic, int32_t partition);

/* Reports what the broker took, partition by partition: only those
 * offsets count as committed, so a failed commit is sent again. */
static void report_committed(consumer_t *c,
                             const rd_kafka_topic_partition_list_t *offsets)
{
    for (int i = 0; offsets != NULL && i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &offsets->elems[i];
        void *part = part_get(c, p->topic, p->partition);
        if (p->err == RD_KAFKA_RESP_ERR_NO_ERROR && p->offset >= 0 &&
            part != NULL) {
            c->cb.on_committed(c->cb.arg, part, p->offset);
        }
    }
}

/* A commit went out: its callback (which librdkafka queues for sync
 * commits too) will take this time back. 0: timed already. */
static void commit_sent(consumer_t *c, uint64_t sent_ns)
{
    if (c->commit_sent_count == 32) { /* unanswered for long: forget */
        c->commit_sent_head = (c->commit_sent_head + 1) % 32;
        c->commit_sent_count--;
    }
    c->commit_sent_ns[(c->commit_sent_head + c->commit_sent_count++) % 32] =
        sent_ns;
}

static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    consumer_t *c = opaque;

    (void)rk;
    if (c->commit_sent_count > 0) {
        uint64_t sent = c->commit_sent_ns[c->commit_sent_head];
        c->commit_sent_head = (c->commit_sent_head + 1) % 32;
        c->commit_sent_count--;
        if (sent != 0) {
            metrics_observe(&c->stats.commit_time, METRICS_REQUEST,
                            metrics_now_ns() - sent);
        }
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        c->stats.commits++;
    } else if (err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        c->stats.commit_failures++;
    }
    /* One line when commits start failing and one when they get through
     * again: every commit interval would repeat the same failure. */
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR &&
        err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        if (c->commit_failures++ == 0) {
            log_warn("offset commit failed (%d partitions): %s; the next "
                     "commits retry",
                     offsets ? offsets->cnt : 0, rd_kafka_err2str(err));
        } else {
            log_debug("offset commit failed again: %s",
                      rd_kafka_err2str(err));
        }
    } else if (err == RD_KAFKA_RESP_ERR_NO_ERROR && c->commit_failures > 0) {
        log_info("offset commits succeed again, after %lu failed",
                 c->commit_failures);
        c->commit_failures = 0;
    }
    report_committed(c, offsets);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *list, void *opaque)
{
    consumer_t *c = opaque;
    int cooperative =
        strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS &&
        c->link != LINK_UP && c->link != LINK_NO_TOPIC) {
        link_up(c); /* the group coordinator answered (a revoke may be
                       librdkafka's own, on a session timeout) */
    }
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < list->cnt; i++) {
            rd_kafka_topic_partition_t *p = &list->elems[i];
            void *part = c->cb.on_assign(c->cb.arg, p->topic, p->partition);
            if (part == NULL || part_set(c, p->topic, p->partition, part)) {
                c->cb.on_fatal(c->cb.arg, "out of memory on assign");
                return;
            }
        }
        if (c->assigns_awaited > 0) {
            c->assigns_awaited--;
        }
        c->assigned_once = 1;
        c->stats.assigns++;
        c->stats.assigned = 1;
        log_info("assigned %d partition(s)%s", list->cnt,
                 cooperative ? " (cooperative)" : "");
        if (cooperative) {
            error = rd_kafka_incremental_assign(rk, list);
        } else {
            aerr = rd_kafka_assign(rk, list);
        }
    } else {
        size_t n = (size_t)list->cnt;
        void **parts = calloc(n ? n : 1, sizeof(*parts));
        int64_t *offsets = calloc(n ? n : 1, sizeof(*offsets));
        size_t known = 0;
        int lost = rd_kafka_assignment_lost(rk);
        uint64_t started = metrics_now_ns();

        if (parts == NULL || offsets == NULL) {
            free(parts);
            free(offsets);
            c->cb.on_fatal(c->cb.arg, "out of memory on revoke");
            return;
        }
        for (int i = 0; i < list->cnt; i++) {
            void *part = part_get(c, list->elems[i].topic,
                                  list->elems[i].partition);
            if (part != NULL) {
                parts[known++] = part;
            }
        }
        c->cb.on_revoke(c->cb.arg, parts, known, lost, offsets);
        rd_kafka_topic_partition_list_t *commit =
            rd_kafka_topic_partition_list_new(list->cnt);
        known = 0;
        for (int i = 0; i < list->cnt; i++) {
            rd_kafka_topic_partition_t *p = &list->elems[i];
            if (part_get(c, p->topic, p->partition) == NULL) {
                continue;
            }
            if (!lost && offsets[known] >= 0) {
                rd_kafka_topic_partition_list_add(commit, p->topic,
                                                  p->partition)
                    ->offset = offsets[known];
            }
            part_set(c, p->topic, p->partition, NULL);
            known++;
        }
        if (commit->cnt > 0) {
            rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, commit, 0);
            if (cerr == RD_KAFKA_RESP_ERR_NO_ERROR) {
                commit_sent(c, 0); /* timed with the revoke */
            } else {
                c->stats.commit_failures++;
            }
            if (cerr != RD_KAFKA_RESP_ERR_NO_ERROR &&
                cerr != RD_KAFKA_RESP_ERR__NO_OFFSET) {
                log_warn("commit on revoke failed: %s; the next owner "
                         "redelivers from the last commit",
                         rd_kafka_err2str(cerr));
            }
        }
        rd_kafka_topic_partition_list_destroy(commit);
        free(parts);
        free(offsets);
        c->stats.revokes++;
        metrics_observe(&c->stats.revoke_time, METRICS_REQUEST,
                        metrics_now_ns() - started);
        log_info("revoked %d partition(s)%s", list->cnt,
                 lost ? " (lost)" : "");
        c->assigns_awaited = cooperative && !lost ? 2 : 0;
        c->rebalancing_since = loop_now(c->loop);
        if (cooperative) {
            error = rd_kafka_incremental_unassign(rk, list);
        } else {
            aerr = rd_kafka_assign(rk, NULL);
        }
    }
    if (error != NULL) {
        log_error("rebalance: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_error("rebalance: %s", rd_kafka_err2str(aerr));
    }
}

/* ---- polling ---- */

static void handle_message(consumer_t *c, rd_kafka_message_t *m)
{
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
            m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
            /* The probe says which topics are missing, once. */
            log_debug("consume error: %s", rd_kafka_message_errstr(m));
            if (c->link == LINK_UP) {
                c->down_since = loop_now(c->loop);
                probe_start(c);
            }
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            log_warn("consume error %s [%d]: %s",
                     m->rkt ? rd_kafka_topic_name(m->rkt) : "-",
                     (int)m->partition, rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
        return;
    }
    const char *topic = rd_kafka_topic_name(m->rkt);
    void *part = part_get(c, topic, m->partition);
    if (part == NULL) {
        /* Fetched before a revoke: the next owner consumes it. */
        rd_kafka_message_destroy(m);
        return;
    }
    struct source_record rec = {
        .handle = m,
        .part = part,
        .topic = topic,
        .partition = m->partition,
        .offset = m->offset,
        .timestamp_ms = rd_kafka_message_timestamp(m, NULL),
        .key = m->key,
        .key_len = m->key_len,
        .value = m->payload,
        .value_len = m->len,
    };
    if (c->link == LINK_DOWN) {
        link_up(c);
    }
    c->cb.on_record(c->cb.arg, &rec);
}

static void consumer_drain(consumer_t *c)
{
    int n = 0;

    if (c->suspended || c->in_poll || c->closed) {
        c->pending = 1;
        return;
    }
    c->pending = 0;
    c->in_poll = 1;
    for (; n < POLL_BATCH && !c->suspended; n++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 0);
        if (m == NULL) {
            break;
        }
        handle_message(c, m);
    }
    c->in_poll = 0;
    /* A full batch may have left records queued without a new pipe
     * signal; so may a signal that arrived while we were busy. */
    if ((n == POLL_BATCH || c->pending) && !c->suspended) {
        loop_timer_start(c->loop, &c->kick, 0);
    }
}

static void pipe_ready(struct loop_io *io, uint32_t events)
{
    consumer_t *c = (consumer_t *)((char *)io - offsetof(consumer_t, io));
    char buf[256];

    (void)events;
    while (read(io->fd, buf, sizeof(buf)) > 0) {
    }
    consumer_drain(c);
}

static void kick_fired(struct loop_timer *t)
{
    consumer_drain((consumer_t *)((char *)t - offsetof(consumer_t, kick)));
}

/* librdkafka counts max.poll.interval.ms from the last poll, and a queue
 * with every partition paused never signals: poll on a clock too. */
static void tick_fired(struct loop_timer *t)
{
    consumer_t *c = (consumer_t *)((char *)t - offsetof(consumer_t, tick));

    consumer_drain(c);
    loop_timer_start(c->loop, t, POLL_TICK_MS);
}

/* ---- configuration ---- */

/* Builds a conf from cfg; reports bad properties into errs (if given) or
 * err. Returns NULL on any error. */
static rd_kafka_conf_t *build_conf(const struct cfg *cfg,
                                   const char *bootstrap,
                                   struct cfg_errors *errs,
                                   struct sl_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];

    rd_kafka_conf_set(conf, "auto.offset.reset",
                      cfg->source.start == CFG_START_LATEST ? "latest"
                                                            : "earliest",
                      NULL, 0);
    if (rd_kafka_conf_set(conf, "group.id", cfg->source.group, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        sl_error_set(err, "%s", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (kconf_apply(conf, default_properties, managed_properties,
                    &cfg->source.properties, cfg, "source.properties",
                    cfg->source.properties_line, cfg->source.properties_col,
                    errs, err) > 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

int consumer_check_config(const struct cfg *cfg, struct cfg_errors *errs)
{
    rd_kafka_conf_t *conf = build_conf(cfg, "localhost:9092", errs, NULL);

    if (conf == NULL) {
        return -1;
    }
    rd_kafka_conf_destroy(conf);
    return 0;
}

consumer_t *consumer_new(const struct cfg *cfg, const char *bootstrap,
                         loop_t *loop, const struct source_callbacks *cb,
                         struct sl_error *err)
{
    consumer_t *c = calloc(1, sizeof(*c));
    rd_kafka_conf_t *conf;
    char errstr[512];

    if (c == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    c->loop = loop;
    c->cb = *cb;
    c->pipe_fds[0] = c->pipe_fds[1] = -1;
    loop_timer_init(&c->kick, kick_fired);
    loop_timer_init(&c->tick, tick_fired);
    loop_timer_init(&c->deadline, deadline_fired);
    c->connect_timeout_ms = cfg->source.connect_timeout_ms;
    c->brokers = strdup(bootstrap != NULL ? bootstrap : cfg->source.brokers);
    c->group = strdup(cfg->source.group != NULL ? cfg->source.group : "");
    c->topic_names = calloc(cfg->source.topics.count + 1, sizeof(char *));
    if (c->brokers == NULL || c->group == NULL || c->topic_names == NULL) {
        sl_error_set(err, "out of memory");
        consumer_destroy(c);
        return NULL;
    }
    for (size_t i = 0; i < cfg->source.topics.count; i++) {
        c->topic_names[i] = strdup(cfg->source.topics.items[i]);
        if (c->topic_names[i] == NULL) {
            sl_error_set(err, "out of memory");
            consumer_destroy(c);
            return NULL;
        }
        c->topic_name_count++;
    }
    conf = build_conf(cfg, bootstrap, NULL, err);
    if (conf == NULL) {
        consumer_destroy(c);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, commit_cb);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (c->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        sl_error_set(err, "kafka consumer: %s", errstr);
        consumer_destroy(c);
        return NULL;
    }
    rd_kafka_poll_set_consumer(c->rk);
    c->queue = rd_kafka_queue_get_consumer(c->rk);
    if (pipe2(c->pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        sl_error_set(err, "pipe: %s", strerror(errno));
        goto fail;
    }
    rd_kafka_queue_io_event_enable(c->queue, c->pipe_fds[1], "1", 1);
    c->io.fd = c->pipe_fds[0];
    c->io.fn = pipe_ready;
    if (loop_io_add(loop, &c->io, LOOP_READABLE) != 0) {
        sl_error_set(err, "epoll: %s", strerror(errno));
        goto fail;
    }

    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new((int)cfg->source.topics.count);
    for (size_t i = 0; i < cfg->source.topics.count; i++) {
        rd_kafka_topic_partition_list_add(topics, cfg->source.topics.items[i],
                                          RD_KAFKA_PARTITION_UA);
    }
    rd_kafka_resp_err_t serr = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (serr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sl_error_set(err, "subscribe: %s", rd_kafka_err2str(serr));
        goto fail;
    }
    /* Records may already be queued before the first pipe signal. */
    loop_timer_start(loop, &c->kick, 0);
    loop_timer_start(loop, &c->tick, POLL_TICK_MS);
    probe_start(c);
    if (c->connect_timeout_ms > 0) {
        loop_timer_start(loop, &c->deadline, (uint64_t)c->connect_timeout_ms);
    }
    return c;
fail:
    consumer_destroy(c);
    return NULL;
}

void consumer_suspend(consumer_t *c, int suspended)
{
    c->suspended = suspended;
    if (!suspended) {
        loop_timer_start(c->loop, &c->kick, 0);
    }
}

static void pause_resume(consumer_t *c, const char *topic, int32_t partition,
                         int pause)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);

    rd_kafka_topic_partition_list_add(l, topic, partition);
    if (pause) {
        rd_kafka_pause_partitions(c->rk, l);
    } else {
        rd_kafka_resume_partitions(c->rk, l);
        loop_timer_start(c->loop, &c->kick, 0);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

void consumer_pause(consumer_t *c, const char *topic, int32_t partition)
{
    pause_resume(c, topic, partition, 1);
}

void consumer_resume(consumer_t *c, const char *topic, int32_t partition)
{
    pause_resume(c, topic, partition, 0);
}

int consumer_commit(consumer_t *c, const struct source_commit *offsets,
                    size_t count, int sync)
{
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_resp_err_t err;

    if (count == 0) {
        return 0;
    }
    if (!sync && c->assigns_awaited > 0 &&
        loop_now(c->loop) - c->rebalancing_since < REBALANCE_COMMIT_HOLD_MS) {
        /* Nothing is marked committed: the next interval sends it. */
        return 0;
    }
    l = rd_kafka_topic_partition_list_new((int)count);
    for (size_t i = 0; i < count; i++) {
        rd_kafka_topic_partition_list_add(l, offsets[i].topic,
                                          offsets[i].partition)
            ->offset = offsets[i].offset;
    }
    uint64_t sent = metrics_now_ns();
    err = rd_kafka_commit(c->rk, l, !sync);
    if (sync) {
        metrics_observe(&c->stats.commit_time, METRICS_REQUEST,
                        metrics_now_ns() - sent);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            report_committed(c, l);
        }
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        commit_sent(c, sync ? 0 : sent);
    } else {
        c->stats.commit_failures++; /* no callback follows */
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_warn("offset commit failed: %s; the next commit retries",
                 rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

const struct source_stats *consumer_get_stats(const consumer_t *c)
{
    return &c->stats;
}

int64_t consumer_high_watermark(consumer_t *c, const char *topic,
                                int32_t partition)
{
    int64_t low = -1, high = -1;

    if (rd_kafka_get_watermark_offsets(c->rk, topic, partition, &low,
                                       &high) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        high < 0) {
        return -1;
    }
    return high;
}

size_t consumer_headers(void *handle, struct sl_header *out,
                        size_t cap)
{
    rd_kafka_headers_t *hdrs;
    size_t n = 0;

    if (rd_kafka_message_headers(handle, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        return 0;
    }
    for (; n < cap; n++) {
        if (rd_kafka_header_get_all(hdrs, n, &out[n].name, &out[n].value,
                                    &out[n].value_len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            break;
        }
    }
    return n;
}

const void *consumer_header_find(void *handle, const char *name, size_t *len)
{
    rd_kafka_headers_t *hdrs;
    const void *value;

    if (rd_kafka_message_headers(handle, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, name, &value, len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
        return NULL;
    }
    return value;
}

void consumer_payload(void *handle, const void **key, size_t *key_len,
                      const void **value, size_t *value_len)
{
    const rd_kafka_message_t *m = handle;

    *key = m->key;
    *key_len = m->key != NULL ? m->key_len : 0;
    *value = m->payload;
    *value_len = m->payload != NULL ? m->len : 0;
}

int consumer_range(consumer_t *c, const char *topic, int32_t partition,
                   int64_t *start, int64_t *end)
{
    int64_t low, high;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_resp_err_t err;

    rd_kafka_topic_partition_list_add(l, topic, partition);
    err = rd_kafka_query_watermark_offsets(c->rk, topic, partition, &low,
                                           &high, 10000);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        err = rd_kafka_committed(c->rk, l, 10000);
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        int64_t committed = l->elems[0].offset;
        *start = committed >= low ? committed : low;
        *end = high;
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_warn("%s [%d]: cannot read its offsets: %s", topic,
                 (int)partition, rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

int consumer_backlog(consumer_t *c, const char *topic, int64_t *starts,
                     int64_t *ends, int cap, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c->rk, topic, NULL);
    rd_kafka_resp_err_t err;
    int n = 0;

    if (rkt == NULL) {
        return -1;
    }
    err = rd_kafka_metadata(c->rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_warn("%s: cannot read its metadata: %s", topic,
                 rd_kafka_err2str(err));
        return -1;
    }
    if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        n = md->topics[0].partition_cnt < cap ? md->topics[0].partition_cnt
                                               : cap;
    }
    rd_kafka_metadata_destroy(md);
    for (int i = 0; i < n; i++) {
        if (consumer_range(c, topic, i, &starts[i], &ends[i]) != 0) {
            return -1;
        }
    }
    return n;
}

void consumer_release(void *handle)
{
    rd_kafka_message_destroy(handle);
}

/* librdkafka before 2.3.0 aborts (an assertion in the cooperative-sticky
 * assignor) when a member is destroyed after it joined its group and
 * before its first assignment (confluentinc/librdkafka#4312): a SIGINT in
 * that window killed sluice. So close waits for that assignment, 10 s at
 * most, dropping what records it brings (uncommitted: they come again).
 * If it does not come (the group keeps failing its SyncGroup), the handle
 * is neither closed nor destroyed but left to the process's exit, which
 * follows: the member holds no partition, and its session times out. */
/* volatile: a store the compiler may not drop, though nothing reads it */
static rd_kafka_t *volatile abandoned_handle; /* reachable: not a leak */
static rd_kafka_queue_t *volatile abandoned_queue;

static void await_first_assignment(consumer_t *c)
{
    struct timespec ts;
    uint64_t until;

    if (rd_kafka_version() >= 0x020300ff || c->assigned_once) {
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    until = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 +
            10000;
    while (!c->assigned_once &&
           strcmp(rd_kafka_rebalance_protocol(c->rk), "COOPERATIVE") == 0) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 >=
            until) {
            log_warn("source: no partition assigned yet and librdkafka %s "
                     "cannot leave a group in that state "
                     "(confluentinc/librdkafka#4312): leaving it to the "
                     "process exit",
                     rd_kafka_version_str());
            c->abandoned = 1;
            abandoned_handle = c->rk;
            abandoned_queue = c->queue;
            return;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 100);
        if (m != NULL) {
            rd_kafka_message_destroy(m);
        }
    }
}

void consumer_close(consumer_t *c)
{
    if (c->closed) {
        return;
    }
    await_first_assignment(c);
    if (c->abandoned) {
        c->closed = 1;
        return;
    }
    c->in_poll = 1; /* nested loop runs during close must not poll */
    rd_kafka_consumer_close(c->rk);
    c->in_poll = 0;
    c->closed = 1;
}

void consumer_destroy(consumer_t *c)
{
    if (c == NULL) {
        return;
    }
    loop_timer_stop(c->loop, &c->kick);
    loop_timer_stop(c->loop, &c->tick);
    loop_timer_stop(c->loop, &c->deadline);
    kprobe_stop(c->probe); /* before rd_kafka_destroy: it uses the handle */
    c->probe = NULL;
    if (c->pipe_fds[0] >= 0) {
        loop_io_del(c->loop, &c->io);
    }
    if (c->rk != NULL) {
        if (!c->closed && c->topic_count > 0) {
            consumer_close(c);
        }
        if (c->queue != NULL) {
            rd_kafka_queue_io_event_enable(c->queue, -1, NULL, 0);
            if (!c->abandoned) {
                rd_kafka_queue_destroy(c->queue);
            }
        }
        if (!c->abandoned) {
            rd_kafka_destroy(c->rk);
        }
    }
    for (int i = 0; i < 2; i++) {
        if (c->pipe_fds[i] >= 0) {
            close(c->pipe_fds[i]);
        }
    }
    for (size_t i = 0; i < c->topic_count; i++) {
        free(c->topics[i].name);
        free(c->topics[i].parts);
    }
    free(c->topics);
    for (size_t i = 0; i < c->topic_name_count; i++) {
        free(c->topic_names[i]);
    }
    free(c->topic_names);
    free(c->brokers);
    free(c->group);
    free(c);
}

int consumer_reached(const consumer_t *c)
{
    return c->ever_up;
}

const char *consumer_problem(const consumer_t *c)
{
    return c->problem[0] != '\0' ? c->problem : NULL;
}

const char *consumer_library_version(void)
{
    return rd_kafka_version_str();
}

/* ---- the kafka source (source.h) ---- */

static void *kafka_open(const struct cfg *cfg, const char *bootstrap,
                        loop_t *loop, const struct source_callbacks *cb,
                        struct sl_error *err)
{
    return consumer_new(cfg, bootstrap, loop, cb, err);
}

static void kafka_suspend(void *src, int suspended)
{
    consumer_suspend(src, suspended);
}

static void kafka_pause(void *src, const char *topic, int32_t partition)
{
    consumer_pause(src, topic, partition);
}

static void kafka_resume(void *src, const char *topic, int32_t partition)
{
    consumer_resume(src, topic, partition);
}

static int kafka_commit(void *src, const struct source_commit *offsets,
                        size_t count, int sync)
{
    return consumer_commit(src, offsets, count, sync);
}

static void kafka_close(void *src)
{
    consumer_close(src);
}

static void kafka_destroy(void *src)
{
    consumer_destroy(src);
}

static int kafka_reached(const void *src)
{
    return consumer_reached(src);
}

static const char *kafka_problem(const void *src)
{
    return consumer_problem(src);
}

static const struct source_stats *kafka_stats(const void *src)
{
    return consumer_get_stats(src);
}

static int64_t kafka_high_watermark(void *src, const char *topic,
                                    int32_t partition)
{
    return consumer_high_watermark(src, topic, partition);
}

static int kafka_range(void *src, const char *topic, int32_t partition,
                       int64_t *start, int64_t *end)
{
    return consumer_range(src, topic, partition, start, end);
}

static void kafka_describe(const void *src, char *out, size_t cap)
{
    const consumer_t *c = src;

    snprintf(out, cap, "consuming %zu topic(s) as group %s",
             c->topic_name_count, c->group);
}

const struct source kafka_source = {
    .name = "kafka",
    .doc = "Consumes `topics` as a member of the consumer group `group`: "
           "records are committed once every sink is done with them (at "
           "least once), and more workers of the pipeline share the "
           "partitions.",
    .options = cfg_source_options,
    .check = consumer_check_config,
    .open = kafka_open,
    .suspend = kafka_suspend,
    .pause = kafka_pause,
    .resume = kafka_resume,
    .commit = kafka_commit,
    .headers = consumer_headers,
    .header_find = consumer_header_find,
    .payload = consumer_payload,
    .release = consumer_release,
    .close = kafka_close,
    .destroy = kafka_destroy,
    .reached = kafka_reached,
    .problem = kafka_problem,
    .stats = kafka_stats,
    .high_watermark = kafka_high_watermark,
    .range = kafka_range,
    .describe = kafka_describe,
};
