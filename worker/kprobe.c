/* kprobe.c -- a thread that asks librdkafka for metadata until the
 * cluster answers and every topic exists; answers reach the loop through
 * a pipe. */
#include "kprobe.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROBE_TIMEOUT_MS 1000 /* one metadata request */
#define PROBE_EVERY_MS 1000   /* between two answers that were no */

struct kprobe {
    rd_kafka_t *rk;
    loop_t *loop;
    kprobe_fn *fn;
    void *arg;
    char **topics;
    size_t topic_count;
    int pipe_fds[2];
    struct loop_io io;
    pthread_t thread;
    int started;
    /* Shared with the thread. */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stop;
    int posted; /* an answer the loop has not read yet */
    enum kprobe_state state;
    char text[512];
};

/* One round of questions: the state and, unless OK, why. */
static enum kprobe_state ask(kprobe_t *p, rd_kafka_topic_t **handles,
                             char *text, size_t cap)
{
    const struct rd_kafka_metadata *md = NULL;
    size_t n = 0, asked = 0;

    text[0] = '\0';
    for (size_t i = 0; i < p->topic_count; i++) {
        if (handles[i] == NULL) {
            continue;
        }
        asked++;
        rd_kafka_resp_err_t err =
            rd_kafka_metadata(p->rk, 0, handles[i], &md, PROBE_TIMEOUT_MS);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(text, cap, "%s", rd_kafka_err2str(err));
            return KPROBE_UNREACHABLE;
        }
        if (md->topic_cnt > 0 &&
            (md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
             md->topics[0].err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)) {
            n += (size_t)snprintf(text + n, n < cap ? cap - n : 0, "%s%s",
                                  n > 0 ? ", " : "", p->topics[i]);
        }
        rd_kafka_metadata_destroy(md);
    }
    if (asked == 0) {
        rd_kafka_resp_err_t err =
            rd_kafka_metadata(p->rk, 0, NULL, &md, PROBE_TIMEOUT_MS);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(text, cap, "%s", rd_kafka_err2str(err));
            return KPROBE_UNREACHABLE;
        }
        rd_kafka_metadata_destroy(md);
    }
    return n > 0 ? KPROBE_NO_TOPIC : KPROBE_OK;
}

static void post(kprobe_t *p, enum kprobe_state state, const char *text)
{
    pthread_mutex_lock(&p->lock);
    p->state = state;
    snprintf(p->text, sizeof(p->text), "%s", text);
    p->posted = 1;
    pthread_mutex_unlock(&p->lock);
    ssize_t w = write(p->pipe_fds[1], "!", 1);
    (void)w; /* a full pipe has a wake-up in it already */
}

static void *run(void *arg)
{
    kprobe_t *p = arg;
    rd_kafka_topic_t **handles = calloc(p->topic_count + 1, sizeof(*handles));
    enum kprobe_state last = KPROBE_OK;
    char text[512], last_text[512] = "";
    int first = 1;

    for (size_t i = 0; handles != NULL && i < p->topic_count; i++) {
        if (p->topics[i][0] != '^') {
            handles[i] = rd_kafka_topic_new(p->rk, p->topics[i], NULL);
        }
    }
    for (;;) {
        pthread_mutex_lock(&p->lock);
        int stop = p->stop;
        pthread_mutex_unlock(&p->lock);
        if (stop) {
            break;
        }
        enum kprobe_state state =
            handles != NULL ? ask(p, handles, text, sizeof(text))
                            : KPROBE_UNREACHABLE;
        if (handles == NULL) {
            snprintf(text, sizeof(text), "out of memory");
        }
        /* A new reason for the same state is not news: librdkafka's
         * wording changes from one retry to the next. A different set of
         * missing topics is. */
        if (first || state != last ||
            (state == KPROBE_NO_TOPIC && strcmp(text, last_text) != 0)) {
            post(p, state, text);
            first = 0;
            last = state;
            snprintf(last_text, sizeof(last_text), "%s", text);
        }
        if (state == KPROBE_OK) {
            break;
        }
        struct timespec due;
        clock_gettime(CLOCK_REALTIME, &due);
        due.tv_nsec += (long)PROBE_EVERY_MS * 1000000L;
        due.tv_sec += due.tv_nsec / 1000000000L;
        due.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&p->lock);
        while (!p->stop &&
               pthread_cond_timedwait(&p->wake, &p->lock, &due) == 0) {
        }
        pthread_mutex_unlock(&p->lock);
    }
    for (size_t i = 0; handles != NULL && i < p->topic_count; i++) {
        if (handles[i] != NULL) {
            rd_kafka_topic_destroy(handles[i]);
        }
    }
    free(handles);
    return NULL;
}

static void pipe_ready(struct loop_io *io, uint32_t events)
{
    kprobe_t *p = (kprobe_t *)((char *)io - offsetof(kprobe_t, io));
    char buf[64], text[sizeof(p->text)];

    (void)events;
    while (read(io->fd, buf, sizeof(buf)) > 0) {
    }
    pthread_mutex_lock(&p->lock);
    int posted = p->posted;
    enum kprobe_state state = p->state;
    memcpy(text, p->text, sizeof(text));
    p->posted = 0;
    pthread_mutex_unlock(&p->lock);
    if (posted) {
        p->fn(p->arg, state, text); /* may kprobe_stop(p): last use */
    }
}

kprobe_t *kprobe_start(rd_kafka_t *rk, loop_t *loop,
                       const char *const *topics, size_t topic_count,
                       kprobe_fn *fn, void *arg, struct sl_error *err)
{
    kprobe_t *p = calloc(1, sizeof(*p));

    if (p == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    p->rk = rk;
    p->loop = loop;
    p->fn = fn;
    p->arg = arg;
    p->pipe_fds[0] = p->pipe_fds[1] = -1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->topics = calloc(topic_count + 1, sizeof(*p->topics));
    if (p->topics == NULL) {
        goto oom;
    }
    for (size_t i = 0; i < topic_count; i++) {
        if ((p->topics[i] = strdup(topics[i])) == NULL) {
            goto oom;
        }
        p->topic_count++;
    }
    if (pipe2(p->pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        sl_error_set(err, "pipe: %s", strerror(errno));
        goto fail;
    }
    p->io.fd = p->pipe_fds[0];
    p->io.fn = pipe_ready;
    if (loop_io_add(loop, &p->io, LOOP_READABLE) != 0) {
        sl_error_set(err, "epoll: %s", strerror(errno));
        close(p->pipe_fds[0]);
        p->pipe_fds[0] = -1;
        goto fail;
    }
    if (pthread_create(&p->thread, NULL, run, p) != 0) {
        sl_error_set(err, "cannot start the broker probe thread");
        goto fail;
    }
    p->started = 1;
    return p;
oom:
    sl_error_set(err, "out of memory");
fail:
    kprobe_stop(p);
    return NULL;
}

void kprobe_stop(kprobe_t *p)
{
    if (p == NULL) {
        return;
    }
    if (p->started) {
        pthread_mutex_lock(&p->lock);
        p->stop = 1;
        pthread_cond_signal(&p->wake);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
    }
    if (p->pipe_fds[0] >= 0) {
        loop_io_del(p->loop, &p->io);
    }
    for (int i = 0; i < 2; i++) {
        if (p->pipe_fds[i] >= 0) {
            close(p->pipe_fds[i]);
        }
    }
    for (size_t i = 0; i < p->topic_count; i++) {
        free(p->topics[i]);
    }
    free(p->topics);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
