/* admin.c -- the admin HTTP server on libmicrohttpd. */
#include "admin.h"

#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "listener.h"
#include "log.h"

#define QUEUE_MAX 64           /* commands waiting for the lane */
#define APPLY_WAIT_MS 5000     /* a pause waits this long for the lane */
#define CONNECTIONS_MAX 32     /* admin traffic is a few scrapers */

struct admin {
    struct MHD_Daemon *daemon;
    int listen_fd;
    int port;
    int event_fd;
    metrics_board_t *board;
    const char *const *sink_names;
    size_t sink_count;
    pthread_mutex_t lock;
    pthread_cond_t applied_cond;
    struct admin_command queue[QUEUE_MAX];
    size_t head, count;
    uint64_t next_id, applied_up_to;
    int closing; /* waiters give up: the lane applies nothing more */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- answers ---- */

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status,
                              const char *type, char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result ret;

    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result answer_text(struct MHD_Connection *c, unsigned status,
                                   const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum MHD_Result answer_text(struct MHD_Connection *c, unsigned status,
                                   const char *fmt, ...)
{
    char *body = NULL;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&body, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return MHD_NO;
    }
    return answer(c, status, "text/plain; charset=utf-8", body, (size_t)n);
}

/* Renders the latest snapshot with write into a response. */
static enum MHD_Result answer_snapshot(struct admin *a,
                                       struct MHD_Connection *c,
                                       void (*write)(
                                           const struct metrics_snapshot *,
                                           FILE *),
                                       const char *type)
{
    struct metrics_snapshot *s = metrics_board_acquire(a->board);
    char *body = NULL;
    size_t len = 0;
    FILE *f;

    if (s == NULL) {
        return answer_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                           "starting: no figures yet\n");
    }
    f = open_memstream(&body, &len);
    if (f == NULL) {
        metrics_board_release(a->board, s);
        return MHD_NO;
    }
    write(s, f);
    metrics_board_release(a->board, s);
    if (fclose(f) != 0) {
        free(body);
        return MHD_NO;
    }
    return answer(c, MHD_HTTP_OK, type, body, len);
}

/* Why the lane is not alive, into why; 0 when it is. */
static int loop_stale(struct admin *a, char *why, size_t cap)
{
    uint64_t beat = metrics_board_last_beat(a->board);
    uint64_t now = mono_ms();

    if (beat == 0) {
        snprintf(why, cap, "starting: the loop has not run yet");
        return 1;
    }
    if (now > beat && now - beat > ADMIN_STALE_MS) {
        snprintf(why, cap, "the loop has not run for %llu ms",
                 (unsigned long long)(now - beat));
        return 1;
    }
    return 0;
}

static enum MHD_Result serve_readyz(struct admin *a, struct MHD_Connection *c)
{
    char why[160];
    struct metrics_snapshot *s;

    if (loop_stale(a, why, sizeof(why))) {
        return answer_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "%s\n", why);
    }
    s = metrics_board_acquire(a->board);
    if (s == NULL || s->ready <= 0) {
        snprintf(why, sizeof(why), "%s",
                 s == NULL || s->not_ready[0] == '\0' ? "starting"
                                                      : s->not_ready);
        metrics_board_release(a->board, s);
        return answer_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "%s\n", why);
    }
    metrics_board_release(a->board, s);
    return answer_text(c, MHD_HTTP_OK, "ready\n");
}

/* Queues a pause or resume and waits until the lane applied it. */
static enum MHD_Result serve_command(struct admin *a, struct MHD_Connection *c,
                                     int pause)
{
    const char *sink = NULL;
    size_t sink_len = 0;
    struct admin_command cmd = {.pause = pause, .sink = -1};
    uint64_t one = 1, deadline;
    int applied = 0;
    char *body = NULL;
    int n;

    /* With its length: "a%00" decodes to "a" and a NUL, which is not a. */
    if (MHD_lookup_connection_value_n(c, MHD_GET_ARGUMENT_KIND, "sink", 4,
                                      &sink, &sink_len) == MHD_YES) {
        for (size_t i = 0; sink != NULL && i < a->sink_count; i++) {
            if (strlen(a->sink_names[i]) == sink_len &&
                memcmp(a->sink_names[i], sink, sink_len) == 0) {
                cmd.sink = (int)i;
            }
        }
        if (cmd.sink < 0) {
            /* The name is the caller's: not echoed (it could be anything). */
            return answer_text(c, MHD_HTTP_NOT_FOUND,
                               "no such sink in this pipeline\n");
        }
    }
    pthread_mutex_lock(&a->lock);
    if (a->count == QUEUE_MAX) {
        pthread_mutex_unlock(&a->lock);
        return answer_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                           "too many commands waiting for the worker\n");
    }
    cmd.id = ++a->next_id;
    a->queue[(a->head + a->count++) % QUEUE_MAX] = cmd;
    if (write(a->event_fd, &one, sizeof(one)) < 0) {
        /* The counter is only a wake-up: it is non-zero already. */
    }
    deadline = mono_ms() + APPLY_WAIT_MS;
    while (!(applied = a->applied_up_to >= cmd.id) && !a->closing) {
        struct timespec ts;
        uint64_t now = mono_ms();
        if (now >= deadline) {
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)((deadline - now) / 1000);
        ts.tv_nsec += (long)((deadline - now) % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&a->applied_cond, &a->lock, &ts);
    }
    pthread_mutex_unlock(&a->lock);
    if (!applied) {
        return answer_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                           "the worker did not take the command within "
                           "%d ms; it is queued\n", APPLY_WAIT_MS);
    }
    json_t *doc = cmd.sink >= 0
                      ? json_pack("{s:s,s:b}", "sink", a->sink_names[cmd.sink],
                                  "paused", pause)
                      : json_pack("{s:b,s:b}", "pipeline", 1, "paused", pause);
    body = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (body == NULL) {
        return MHD_NO;
    }
    n = (int)strlen(body);
    return answer(c, MHD_HTTP_OK, "application/json", body, (size_t)n);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **state)
{
    struct admin *a = cls;
    static int seen;
    int is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                 strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    int is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    int is_command = strcmp(url, "/pause") == 0 || strcmp(url, "/resume") == 0;

    (void)version;
    (void)upload;
    if (*state == NULL) {
        *state = &seen; /* headers only: the body (if any) follows */
        return MHD_YES;
    }
    if (*upload_size != 0) {
        *upload_size = 0; /* a body is not needed: ignored */
        return MHD_YES;
    }
    if (is_command) {
        if (!is_post) {
            return answer_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                               "use POST\n");
        }
        return serve_command(a, c, url[1] == 'p');
    }
    if (!is_get) {
        return answer_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET\n");
    }
    if (strcmp(url, "/metrics") == 0) {
        return answer_snapshot(a, c, metrics_write_prometheus,
                               "text/plain; version=0.0.4; charset=utf-8");
    }
    if (strcmp(url, "/status") == 0) {
        return answer_snapshot(a, c, metrics_write_status,
                               "application/json");
    }
    if (strcmp(url, "/healthz") == 0) {
        char why[160];
        if (loop_stale(a, why, sizeof(why))) {
            return answer_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "%s\n", why);
        }
        return answer_text(c, MHD_HTTP_OK, "ok\n");
    }
    if (strcmp(url, "/readyz") == 0) {
        return serve_readyz(a, c);
    }
    return answer_text(c, MHD_HTTP_NOT_FOUND,
                       "not found: GET /metrics, /healthz, /readyz, "
                       "/status; POST /pause, /resume [?sink=NAME]\n");
}

admin_t *admin_new(const char *listen_at, metrics_board_t *board,
                   const char *const *sink_names, size_t sink_count,
                   struct sl_error *err)
{
    admin_t *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    a->listen_fd = a->event_fd = -1;
    a->board = board;
    a->sink_names = sink_names;
    a->sink_count = sink_count;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->applied_cond, NULL);
    {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_destroy(&a->applied_cond);
        pthread_cond_init(&a->applied_cond, &attr);
        pthread_condattr_destroy(&attr);
    }
    a->listen_fd = listener_open("admin.listen", listen_at, &a->port, err);
    if (a->listen_fd < 0) {
        admin_free(a);
        return NULL;
    }
    a->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->event_fd < 0) {
        sl_error_set(err, "eventfd: %s", strerror(errno));
        admin_free(a);
        return NULL;
    }
    /* A thread per connection: a pause waits for the lane without
     * holding up a scrape or a probe. poll(), not libmicrohttpd's default
     * select(): a publisher's clients take the descriptors below 1024,
     * and select() refuses a connection past FD_SETSIZE. */
    a->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD, 0,
        NULL, NULL, on_request, a, MHD_OPTION_LISTEN_SOCKET, a->listen_fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTIONS_MAX,
        MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_EXTERNAL_LOGGER,
        listener_mhd_log, "admin", MHD_OPTION_END);
    if (a->daemon == NULL) {
        sl_error_set(err, "admin.listen %s: cannot start the server",
                     listen_at);
        admin_free(a);
        return NULL;
    }
    a->listen_fd = -1; /* the daemon's now: it closes it when it stops */
    return a;
}

int admin_port(const admin_t *a)
{
    return a->port;
}

int admin_fd(const admin_t *a)
{
    return a->event_fd;
}

int admin_take(admin_t *a, struct admin_command *out)
{
    uint64_t v;
    int got = 0;

    pthread_mutex_lock(&a->lock);
    if (a->count > 0) {
        *out = a->queue[a->head];
        a->head = (a->head + 1) % QUEUE_MAX;
        a->count--;
        got = 1;
    }
    if (a->count == 0 && read(a->event_fd, &v, sizeof(v)) < 0) {
        /* EAGAIN: already drained. */
    }
    pthread_mutex_unlock(&a->lock);
    return got;
}

void admin_applied(admin_t *a, uint64_t id)
{
    pthread_mutex_lock(&a->lock);
    if (id > a->applied_up_to) {
        a->applied_up_to = id;
    }
    pthread_cond_broadcast(&a->applied_cond);
    pthread_mutex_unlock(&a->lock);
}

void admin_free(admin_t *a)
{
    if (a == NULL) {
        return;
    }
    pthread_mutex_lock(&a->lock);
    a->closing = 1;
    pthread_cond_broadcast(&a->applied_cond);
    pthread_mutex_unlock(&a->lock);
    if (a->daemon != NULL) {
        MHD_stop_daemon(a->daemon);
    }
    if (a->listen_fd >= 0) {
        close(a->listen_fd);
    }
    if (a->event_fd >= 0) {
        close(a->event_fd);
    }
    pthread_cond_destroy(&a->applied_cond);
    pthread_mutex_destroy(&a->lock);
    free(a);
}
