/*
 * bare-consumer -- the benchmark's ceiling: a plain librdkafka high-level
 * consumer that reads a topic as fast as it can until it has seen --count
 * messages, then prints one JSON line of throughput and CPU figures.
 * Whatever sluice does on top of consuming is measured against this.
 */
#include <librdkafka/rdkafka.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *out)
{
    fputs("usage: bare-consumer --bootstrap B --topic T --count N "
          "[--group G] [--timeout-s S]\n",
          out);
}

static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    if (!s || !*s)
        return false;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void print_report(long messages, uint64_t bytes, double wall_s)
{
    struct rusage ru;
    double user, sys;

    getrusage(RUSAGE_SELF, &ru);
    user = tv_s(ru.ru_utime);
    sys = tv_s(ru.ru_stime);
    printf("{\"messages\":%ld,\"bytes\":%" PRIu64 ",\"wall_s\":%.6f,"
           "\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f,\"cpu_us_per_msg\":%.3f,"
           "\"msgs_per_s\":%.1f,\"max_rss_kb\":%ld}\n",
           messages, bytes, wall_s, user, sys,
           messages > 0 ? (user + sys) * 1e6 / (double)messages : 0.0,
           wall_s > 0 ? (double)messages / wall_s : 0.0, ru.ru_maxrss);
    fflush(stdout);
}

static bool conf_set(rd_kafka_conf_t *conf, const char *key, const char *val)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, key, val, errstr, sizeof(errstr)) ==
        RD_KAFKA_CONF_OK)
        return true;
    fprintf(stderr, "bare-consumer: %s=%s: %s\n", key, val, errstr);
    return false;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"bootstrap", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'n'},
        {"group", required_argument, NULL, 'g'},
        {"timeout-s", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *bootstrap = NULL, *topic = NULL, *group = NULL;
    char group_buf[64], errstr[512];
    long count = -1, timeout_s = 120, messages = 0;
    uint64_t bytes = 0;
    double deadline, first = 0, last = 0;
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *subs;
    rd_kafka_resp_err_t err;
    struct sigaction sa;
    int opt;

    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'b':
            bootstrap = optarg;
            break;
        case 't':
            topic = optarg;
            break;
        case 'g':
            group = optarg;
            break;
        case 'n':
            if (!parse_long(optarg, 1, LONG_MAX, &count)) {
                fprintf(stderr, "bare-consumer: bad --count\n");
                return 2;
            }
            break;
        case 's':
            if (!parse_long(optarg, 1, 86400, &timeout_s)) {
                fprintf(stderr, "bare-consumer: bad --timeout-s\n");
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!bootstrap || !topic || count < 1 || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (!group) {
        snprintf(group_buf, sizeof(group_buf), "bare-consumer-%ld",
                 (long)getpid());
        group = group_buf;
    }

    /* Ctrl-C behaves like the timeout: report what we have, exit 1. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    conf = rd_kafka_conf_new();
    if (!conf_set(conf, "bootstrap.servers", bootstrap) ||
        !conf_set(conf, "group.id", group) ||
        !conf_set(conf, "client.id", "bare-consumer") ||
        !conf_set(conf, "auto.offset.reset", "earliest") ||
        !conf_set(conf, "enable.auto.commit", "false") ||
        !conf_set(conf, "session.timeout.ms", "6000") ||
        !conf_set(conf, "heartbeat.interval.ms", "500")) {
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bare-consumer: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    /* Route the main queue into the consumer queue so one poll loop sees
     * errors and messages alike. */
    rd_kafka_poll_set_consumer(rk);

    subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (err) {
        fprintf(stderr, "bare-consumer: subscribe %s: %s\n", topic,
                rd_kafka_err2str(err));
        rd_kafka_destroy(rk);
        return 2;
    }

    deadline = now_s() + (double)timeout_s;
    while (messages < count && !g_stop && now_s() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);

        if (!m)
            continue;
        if (m->err) {
            /* Errors and partition EOFs are events, not messages. */
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "bare-consumer: %s\n",
                        rd_kafka_message_errstr(m));
        } else {
            last = now_s();
            if (messages == 0)
                first = last;
            messages++;
            bytes += m->len; /* value bytes; keys and headers excluded */
        }
        rd_kafka_message_destroy(m);
    }

    print_report(messages, bytes, messages > 0 ? last - first : 0.0);

    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return messages >= count ? 0 : 1;
}
