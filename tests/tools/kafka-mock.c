/*
 * kafka-mock -- a throwaway Kafka cluster for tests, the demo and the bench.
 * Wraps librdkafka's mock cluster, which speaks the real Kafka protocol over
 * TCP on 127.0.0.1, so the worker and python clients need no JVM or Docker;
 * faults (broker down, RTT, request errors) are injected via stdin or a TCP
 * control socket, one command per line, one `ok` / `error: ...` per line.
 *
 * Mock limits worth knowing: each partition keeps only ~5 MiB (as sent, so
 * after compression) or 100,000 record batches and silently drops the
 * oldest batches beyond that -- about 60k lz4 gen_orders orders or 16k
 * uncompressed ones per partition. Topics auto-created by a client get the
 * mock's default of 4 partitions (not configurable in librdkafka 2.0.2), so
 * use --topic or `topic create` when the count matters. A consumer group's
 * first join takes ~3 s on the mock.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BROKERS 32
#define MAX_PARTITIONS 10000
#define MAX_ERROR_COUNT 100000
#define MAX_CLIENTS 16
#define LINE_MAX_LEN 1024
#define REPLY_MAX_LEN 512

/* A line-oriented input: stdin or one control-socket client. */
struct line_in {
    int fd;
    size_t len;
    bool overflow; /* current line exceeded the buffer; drop until '\n' */
    char buf[LINE_MAX_LEN];
};

struct topic_spec {
    char *name;
    int partitions;
};

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *out)
{
    fputs("usage: kafka-mock [--brokers N] [--topic NAME:PARTITIONS]...\n"
          "                  [--bootstrap-file FILE] [--control-port PORT]\n"
          "commands (stdin or control socket, one per line):\n"
          "  broker down|up ID      (ID -1 or 'all' = every broker)\n"
          "  broker rtt ID MS\n"
          "  error APIKEY ERRCODE [COUNT]\n"
          "  clear APIKEY\n"
          "  topic create NAME PARTITIONS\n"
          "  quit\n",
          out);
}

/* Strict integer parse: the whole token must be a number within range. */
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

static bool valid_topic_name(const char *name)
{
    size_t n = strlen(name);

    /* Kafka's own rule: 1..249 chars of [A-Za-z0-9._-], not "." or "..". */
    if (n == 0 || n > 249 || !strcmp(name, ".") || !strcmp(name, ".."))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-')
            return false;
    }
    return true;
}

static const struct {
    const char *name;
    int16_t key;
} api_names[] = {
    {"Produce", 0},          {"Fetch", 1},
    {"ListOffsets", 2},      {"Metadata", 3},
    {"OffsetCommit", 8},     {"OffsetFetch", 9},
    {"FindCoordinator", 10}, {"JoinGroup", 11},
    {"Heartbeat", 12},       {"LeaveGroup", 13},
    {"SyncGroup", 14},       {"DescribeGroups", 15},
    {"ListGroups", 16},      {"SaslHandshake", 17},
    {"ApiVersions", 18},     {"CreateTopics", 19},
    {"DeleteTopics", 20},    {"InitProducerId", 22},
    {"OffsetForLeaderEpoch", 23}, {"AddPartitionsToTxn", 24},
    {"AddOffsetsToTxn", 25}, {"EndTxn", 26},
    {"TxnOffsetCommit", 28},
};

static bool parse_api_key(const char *s, int16_t *out)
{
    long v;

    if (parse_long(s, 0, INT16_MAX, &v)) {
        *out = (int16_t)v;
        return true;
    }
    for (size_t i = 0; i < sizeof(api_names) / sizeof(api_names[0]); i++) {
        if (!strcasecmp(s, api_names[i].name)) {
            *out = api_names[i].key;
            return true;
        }
    }
    return false;
}

/* Accept a numeric code or a librdkafka name (NOT_COORDINATOR, _TRANSPORT,
 * optionally prefixed RD_KAFKA_RESP_ERR_); either must be a known code so a
 * typo is rejected instead of silently injecting garbage. */
static bool parse_err_code(const char *s, rd_kafka_resp_err_t *out)
{
    const struct rd_kafka_err_desc *descs;
    size_t cnt;
    long v;
    bool numeric = parse_long(s, INT_MIN, INT_MAX, &v);

    if (!strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18))
        s += 18;
    rd_kafka_get_err_descs(&descs, &cnt);
    for (size_t i = 0; i < cnt; i++) {
        if (!descs[i].name)
            continue;
        if ((numeric && (long)descs[i].code == v) ||
            (!numeric && !strcasecmp(s, descs[i].name))) {
            *out = descs[i].code;
            return true;
        }
    }
    return false;
}

static bool parse_broker_id(const char *s, int32_t *out)
{
    long v;

    if (s && !strcasecmp(s, "all")) {
        *out = -1;
        return true;
    }
    if (!parse_long(s, -1, INT32_MAX, &v))
        return false;
    *out = (int32_t)v;
    return true;
}

static void reply_err(char *reply, size_t len, rd_kafka_resp_err_t err)
{
    if (err)
        snprintf(reply, len, "error: %s", rd_kafka_err2str(err));
    else
        snprintf(reply, len, "ok");
}

static void cmd_broker(rd_kafka_mock_cluster_t *mc, char **argv, int argc,
                       char *reply, size_t len)
{
    int32_t id;
    long rtt;

    if (argc < 3 || !parse_broker_id(argv[2], &id)) {
        snprintf(reply, len, "error: usage: broker down|up|rtt ID [MS]");
        return;
    }
    if (!strcmp(argv[1], "down") && argc == 3)
        reply_err(reply, len, rd_kafka_mock_broker_set_down(mc, id));
    else if (!strcmp(argv[1], "up") && argc == 3)
        reply_err(reply, len, rd_kafka_mock_broker_set_up(mc, id));
    else if (!strcmp(argv[1], "rtt") && argc == 4 &&
             parse_long(argv[3], 0, INT_MAX, &rtt))
        reply_err(reply, len, rd_kafka_mock_broker_set_rtt(mc, id, (int)rtt));
    else
        snprintf(reply, len, "error: usage: broker down|up|rtt ID [MS]");
}

static void cmd_error(rd_kafka_mock_cluster_t *mc, char **argv, int argc,
                      char *reply, size_t len)
{
    int16_t key;
    rd_kafka_resp_err_t code;
    long cnt = 1;
    rd_kafka_resp_err_t *errs;

    if (argc < 3 || argc > 4) {
        snprintf(reply, len, "error: usage: error APIKEY ERRCODE [COUNT]");
        return;
    }
    if (!parse_api_key(argv[1], &key)) {
        snprintf(reply, len, "error: unknown api key '%s'", argv[1]);
        return;
    }
    if (!parse_err_code(argv[2], &code)) {
        snprintf(reply, len, "error: unknown error code '%s'", argv[2]);
        return;
    }
    if (argc == 4 && !parse_long(argv[3], 1, MAX_ERROR_COUNT, &cnt)) {
        snprintf(reply, len, "error: COUNT must be 1..%d", MAX_ERROR_COUNT);
        return;
    }
    errs = malloc((size_t)cnt * sizeof(*errs));
    if (!errs) {
        snprintf(reply, len, "error: out of memory");
        return;
    }
    for (long i = 0; i < cnt; i++)
        errs[i] = code;
    rd_kafka_mock_push_request_errors_array(mc, key, (size_t)cnt, errs);
    free(errs);
    snprintf(reply, len, "ok");
}

static rd_kafka_resp_err_t create_topic(rd_kafka_mock_cluster_t *mc,
                                        const char *name, int partitions)
{
    return rd_kafka_mock_topic_create(mc, name, partitions, 1);
}

static void cmd_topic(rd_kafka_mock_cluster_t *mc, char **argv, int argc,
                      char *reply, size_t len)
{
    long parts;

    if (argc != 4 || strcmp(argv[1], "create")) {
        snprintf(reply, len, "error: usage: topic create NAME PARTITIONS");
        return;
    }
    if (!valid_topic_name(argv[2])) {
        snprintf(reply, len, "error: invalid topic name");
        return;
    }
    if (!parse_long(argv[3], 1, MAX_PARTITIONS, &parts)) {
        snprintf(reply, len, "error: PARTITIONS must be 1..%d",
                 MAX_PARTITIONS);
        return;
    }
    reply_err(reply, len, create_topic(mc, argv[2], (int)parts));
}

/* Runs one command line; fills reply (empty = no answer, for blank and
 * comment lines) and returns true when the command was `quit`. */
static bool run_command(rd_kafka_mock_cluster_t *mc, char *line, char *reply,
                        size_t len)
{
    char *argv[8];
    int argc = 0;
    char *save = NULL;

    reply[0] = '\0';
    for (char *tok = strtok_r(line, " \t\r", &save); tok;
         tok = strtok_r(NULL, " \t\r", &save)) {
        if (argc == (int)(sizeof(argv) / sizeof(argv[0]))) {
            snprintf(reply, len, "error: too many arguments");
            return false;
        }
        argv[argc++] = tok;
    }
    if (argc == 0 || argv[0][0] == '#')
        return false;

    if (!strcmp(argv[0], "quit") && argc == 1) {
        snprintf(reply, len, "ok");
        return true;
    }
    if (!strcmp(argv[0], "broker"))
        cmd_broker(mc, argv, argc, reply, len);
    else if (!strcmp(argv[0], "error"))
        cmd_error(mc, argv, argc, reply, len);
    else if (!strcmp(argv[0], "clear") && argc == 2) {
        int16_t key;
        if (parse_api_key(argv[1], &key)) {
            rd_kafka_mock_clear_request_errors(mc, key);
            snprintf(reply, len, "ok");
        } else {
            snprintf(reply, len, "error: unknown api key '%s'", argv[1]);
        }
    } else if (!strcmp(argv[0], "topic"))
        cmd_topic(mc, argv, argc, reply, len);
    else
        snprintf(reply, len, "error: unknown command '%s'", argv[0]);
    return false;
}

static bool send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/* Answers go to stdout for stdin commands and back down the socket for
 * control clients. Returns false if a socket peer went away. */
static bool answer(const struct line_in *in, const char *reply)
{
    char out[REPLY_MAX_LEN + 2];
    int n;

    if (!reply[0])
        return true;
    if (in->fd == STDIN_FILENO) {
        printf("%s\n", reply);
        fflush(stdout);
        return true;
    }
    n = snprintf(out, sizeof(out), "%s\n", reply);
    if (n < 0 || (size_t)n >= sizeof(out))
        n = (int)sizeof(out) - 1;
    return send_all(in->fd, out, (size_t)n);
}

/* Reads what is available and runs every complete line. Returns false on
 * EOF or error (caller closes/ignores the input); sets *quit on `quit`. */
static bool pump_input(struct line_in *in, rd_kafka_mock_cluster_t *mc,
                       bool *quit)
{
    char reply[REPLY_MAX_LEN];
    ssize_t n;

    n = read(in->fd, in->buf + in->len, sizeof(in->buf) - in->len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0)
        return false;
    in->len += (size_t)n;

    for (;;) {
        char *nl = memchr(in->buf, '\n', in->len);
        size_t used;

        if (!nl) {
            if (in->len == sizeof(in->buf)) {
                /* Too long to be a command: drop it, answer at its end. */
                in->overflow = true;
                in->len = 0;
            }
            return true;
        }
        *nl = '\0';
        used = (size_t)(nl - in->buf) + 1;
        if (in->overflow) {
            in->overflow = false;
            snprintf(reply, sizeof(reply), "error: line too long");
        } else if (run_command(mc, in->buf, reply, sizeof(reply))) {
            *quit = true;
        }
        if (!answer(in, reply))
            return false;
        memmove(in->buf, in->buf + used, in->len - used);
        in->len -= used;
        if (*quit)
            return true;
    }
}

static int open_control_socket(long port, uint16_t *bound_port)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        close(fd);
        return -1;
    }
    *bound_port = ntohs(sa.sin_port);
    return fd;
}

/* Temp file + rename so a watcher never reads a half-written file. */
static bool write_bootstrap_file(const char *path, const char *bootstrap)
{
    char tmp[PATH_MAX];
    FILE *f;
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    bool ok;

    if (n < 0 || (size_t)n >= sizeof(tmp))
        return false;
    f = fopen(tmp, "w");
    if (!f)
        return false;
    ok = fprintf(f, "%s\n", bootstrap) > 0;
    ok = (fflush(f) == 0) && ok;
    ok = (fsync(fileno(f)) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (ok && rename(tmp, path) == 0)
        return true;
    unlink(tmp);
    return false;
}

static bool add_topic_spec(struct topic_spec **specs, size_t *cnt,
                           const char *arg)
{
    const char *colon = strrchr(arg, ':');
    struct topic_spec *grown;
    long parts;
    size_t name_len;
    char *name;

    if (!colon || !parse_long(colon + 1, 1, MAX_PARTITIONS, &parts))
        return false;
    name_len = (size_t)(colon - arg);
    name = malloc(name_len + 1);
    if (!name)
        return false;
    memcpy(name, arg, name_len);
    name[name_len] = '\0';
    if (!valid_topic_name(name)) {
        free(name);
        return false;
    }
    grown = realloc(*specs, (*cnt + 1) * sizeof(**specs));
    if (!grown) {
        free(name);
        return false;
    }
    *specs = grown;
    (*specs)[*cnt].name = name;
    (*specs)[*cnt].partitions = (int)parts;
    (*cnt)++;
    return true;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"bootstrap-file", required_argument, NULL, 'f'},
        {"control-port", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long brokers = 1, control_port = -1;
    const char *bootstrap_file = NULL;
    struct topic_spec *topics = NULL;
    size_t topic_cnt = 0;
    struct line_in stdin_in = {.fd = STDIN_FILENO};
    struct line_in *clients[MAX_CLIENTS] = {0};
    int listen_fd = -1, rc = 1, opt;
    uint16_t bound_port = 0;
    bool quit = false, stdin_open = true;
    char errstr[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    sigset_t block, orig;
    struct sigaction sa;
    const char *bootstrap;

    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'b':
            if (!parse_long(optarg, 1, MAX_BROKERS, &brokers)) {
                fprintf(stderr, "kafka-mock: --brokers must be 1..%d\n",
                        MAX_BROKERS);
                return 2;
            }
            break;
        case 't':
            if (!add_topic_spec(&topics, &topic_cnt, optarg)) {
                fprintf(stderr, "kafka-mock: bad --topic '%s' "
                        "(want NAME:PARTITIONS)\n", optarg);
                return 2;
            }
            break;
        case 'f':
            bootstrap_file = optarg;
            break;
        case 'c':
            if (!parse_long(optarg, 0, 65535, &control_port)) {
                fprintf(stderr, "kafka-mock: bad --control-port\n");
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
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    /* Block the stop signals before librdkafka starts threads (they inherit
     * the mask), and only take them inside ppoll(): no lost wakeups. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &orig);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The mock needs a host rd_kafka_t; an idle producer with no
     * bootstrap.servers never connects anywhere itself. */
    conf = rd_kafka_conf_new();
    /* log_level 4 hides the "No bootstrap.servers configured" notice. */
    if (rd_kafka_conf_set(conf, "client.id", "kafka-mock", errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka-mock: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kafka-mock: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    mc = rd_kafka_mock_cluster_new(rk, (int)brokers);
    if (!mc) {
        fprintf(stderr, "kafka-mock: cannot create mock cluster\n");
        goto out;
    }
    for (size_t i = 0; i < topic_cnt; i++) {
        rd_kafka_resp_err_t err =
            create_topic(mc, topics[i].name, topics[i].partitions);
        if (err) {
            fprintf(stderr, "kafka-mock: topic %s: %s\n", topics[i].name,
                    rd_kafka_err2str(err));
            goto out;
        }
    }
    if (control_port >= 0) {
        listen_fd = open_control_socket(control_port, &bound_port);
        if (listen_fd < 0) {
            fprintf(stderr, "kafka-mock: control port %ld: %s\n",
                    control_port, strerror(errno));
            goto out;
        }
    }

    bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    if (bootstrap_file && !write_bootstrap_file(bootstrap_file, bootstrap)) {
        fprintf(stderr, "kafka-mock: cannot write %s: %s\n", bootstrap_file,
                strerror(errno));
        goto out;
    }
    printf("bootstrap=%s\n", bootstrap);
    if (listen_fd >= 0)
        printf("control=127.0.0.1:%u\n", (unsigned)bound_port);
    fflush(stdout);

    while (!g_stop && !quit) {
        struct pollfd pfds[2 + MAX_CLIENTS];
        struct line_in *owners[2 + MAX_CLIENTS];
        struct timespec tick = {.tv_sec = 0, .tv_nsec = 500 * 1000 * 1000};
        nfds_t nfds = 0;
        int free_slot = -1;

        if (stdin_open) {
            pfds[nfds] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
            owners[nfds++] = &stdin_in;
        }
        for (int i = 0; i < MAX_CLIENTS; i++) {
            if (!clients[i]) {
                if (free_slot < 0)
                    free_slot = i;
                continue;
            }
            pfds[nfds] =
                (struct pollfd){.fd = clients[i]->fd, .events = POLLIN};
            owners[nfds++] = clients[i];
        }
        /* Stop accepting while full; pending peers wait in the backlog. */
        if (listen_fd >= 0 && free_slot >= 0) {
            pfds[nfds] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
            owners[nfds++] = NULL;
        }

        if (ppoll(pfds, nfds, &tick, &orig) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "kafka-mock: poll: %s\n", strerror(errno));
            goto out;
        }
        /* Serve the host handle's queue so nothing piles up there. */
        rd_kafka_poll(rk, 0);

        for (nfds_t i = 0; i < nfds && !quit; i++) {
            struct line_in *in = owners[i];

            if (!pfds[i].revents)
                continue;
            if (!in) {
                int cfd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (cfd < 0)
                    continue;
                clients[free_slot] = calloc(1, sizeof(struct line_in));
                if (!clients[free_slot]) {
                    close(cfd);
                    continue;
                }
                clients[free_slot]->fd = cfd;
                continue;
            }
            if (pump_input(in, mc, &quit))
                continue;
            if (in == &stdin_in) {
                /* EOF on stdin is normal under CI: keep serving. */
                stdin_open = false;
                continue;
            }
            for (int c = 0; c < MAX_CLIENTS; c++) {
                if (clients[c] == in) {
                    close(in->fd);
                    free(in);
                    clients[c] = NULL;
                }
            }
        }
    }
    rc = 0;

out:
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (clients[i]) {
            close(clients[i]->fd);
            free(clients[i]);
        }
    }
    if (listen_fd >= 0)
        close(listen_fd);
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    if (rk) {
        rd_kafka_destroy(rk);
        /* Let librdkafka's threads finish so exit (and LSan) sees a clean
         * state. */
        rd_kafka_wait_destroyed(5000);
    }
    for (size_t i = 0; i < topic_cnt; i++)
        free(topics[i].name);
    free(topics);
    return rc;
}
