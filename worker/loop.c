/* loop.c -- epoll + a binary heap of timers + curl's multi socket API.
 *
 * curl tells us which sockets to watch (socket callback) and when to call
 * it back (timer callback); we never poll every connection. A finished
 * transfer is removed from the multi handle before its owner's done()
 * runs, so the owner may reuse the easy handle at once. */
#include "loop.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

/* An fd watched for someone else: curl's sockets and the connectors'.
 * Freed watches may still sit in the current iteration's events, so they
 * go to a dead list freed when the outermost iteration is done. */
struct watch {
    struct loop_io io;
    loop_t *loop;
    uint32_t events;
    int dead;
    struct watch *next; /* on the dead list */
    void (*fn)(void *arg, unsigned events);
    void *arg;
};

/* A timer for a connector: a loop_timer plus its callback. */
struct ext_timer {
    struct loop_timer timer;
    loop_t *loop;
    void (*fn)(void *arg);
    void *arg;
};

struct loop {
    int epfd;
    uint64_t now;
    struct loop_timer **heap;
    size_t heap_len, heap_cap;
    CURLM *multi;
    struct loop_timer curl_timer;
    int curl_running;
    struct watch *dead; /* may still sit in this iteration's events */
    int depth;              /* loop_run_once nesting (drains run nested) */
};

static uint64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t loop_now(const loop_t *loop)
{
    return loop->now;
}

/* ---- timers: a min-heap on due_ms ---- */

static void heap_place(loop_t *loop, size_t i, struct loop_timer *t)
{
    loop->heap[i] = t;
    t->heap_index = i;
}

static void heap_up(loop_t *loop, size_t i)
{
    struct loop_timer *t = loop->heap[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (loop->heap[parent]->due_ms <= t->due_ms) {
            break;
        }
        heap_place(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_place(loop, i, t);
}

static void heap_down(loop_t *loop, size_t i)
{
    struct loop_timer *t = loop->heap[i];

    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= loop->heap_len) {
            break;
        }
        if (child + 1 < loop->heap_len &&
            loop->heap[child + 1]->due_ms < loop->heap[child]->due_ms) {
            child++;
        }
        if (t->due_ms <= loop->heap[child]->due_ms) {
            break;
        }
        heap_place(loop, i, loop->heap[child]);
        i = child;
    }
    heap_place(loop, i, t);
}

void loop_timer_init(struct loop_timer *timer,
                     void (*fn)(struct loop_timer *timer))
{
    timer->due_ms = 0;
    timer->heap_index = SIZE_MAX;
    timer->fn = fn;
}

int loop_timer_armed(const struct loop_timer *timer)
{
    return timer->heap_index != SIZE_MAX;
}

void loop_timer_stop(loop_t *loop, struct loop_timer *timer)
{
    size_t i = timer->heap_index;
    struct loop_timer *last;

    if (i == SIZE_MAX) {
        return;
    }
    timer->heap_index = SIZE_MAX;
    last = loop->heap[--loop->heap_len];
    if (last == timer) {
        return;
    }
    heap_place(loop, i, last);
    heap_down(loop, i);
    heap_up(loop, last->heap_index);
}

void loop_timer_start(loop_t *loop, struct loop_timer *timer,
                      int64_t delay_ms)
{
    loop_timer_stop(loop, timer);
    if (loop->heap_len == loop->heap_cap) {
        size_t cap = loop->heap_cap ? 2 * loop->heap_cap : 256;
        struct loop_timer **heap = realloc(loop->heap, cap * sizeof(*heap));
        if (heap == NULL) {
            abort(); /* a timer that silently never fires loses messages */
        }
        loop->heap = heap;
        loop->heap_cap = cap;
    }
    timer->due_ms = loop->now + (uint64_t)(delay_ms < 0 ? 0 : delay_ms);
    heap_place(loop, loop->heap_len++, timer);
    heap_up(loop, timer->heap_index);
}

/* ---- io ---- */

int loop_io_add(loop_t *loop, struct loop_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};

    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev);
}

void loop_io_del(loop_t *loop, struct loop_io *io)
{
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

/* ---- curl multi ---- */

static void curl_check_done(loop_t *loop)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(loop->multi, &left)) != NULL) {
        struct connector_transfer *t = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode code = msg->data.result;

        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
        curl_multi_remove_handle(loop->multi, easy);
        if (t != NULL) {
            t->done(t, (int)code);
        }
    }
}

/* ---- watches ---- */

static uint32_t to_epoll(unsigned events)
{
    return (events & CONNECTOR_READABLE ? EPOLLIN : 0) |
           (events & CONNECTOR_WRITABLE ? EPOLLOUT : 0);
}

static void watch_event(struct loop_io *io, uint32_t epoll_events)
{
    struct watch *w = (struct watch *)io;
    unsigned events = 0;

    if (w->dead) {
        return;
    }
    if (epoll_events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        events |= CONNECTOR_READABLE;
    }
    if (epoll_events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
        events |= CONNECTOR_WRITABLE;
    }
    w->fn(w->arg, events);
}

static void *loop_watch_new(void *io, int fd,
                            void (*fn)(void *arg, unsigned events), void *arg)
{
    loop_t *loop = io;
    struct watch *w = calloc(1, sizeof(*w));
    struct epoll_event ev = {.events = 0};

    if (w == NULL) {
        return NULL;
    }
    w->io.fd = fd;
    w->io.fn = watch_event;
    w->loop = loop;
    w->fn = fn;
    w->arg = arg;
    ev.data.ptr = w;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        free(w);
        return NULL;
    }
    return w;
}

static int loop_watch_set(void *io, void *watch, unsigned events)
{
    loop_t *loop = io;
    struct watch *w = watch;
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = w};

    if (w->events == ev.events) {
        return 0;
    }
    w->events = ev.events;
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, w->io.fd, &ev);
}

static void loop_watch_free(void *io, void *watch)
{
    loop_t *loop = io;
    struct watch *w = watch;

    if (w == NULL) {
        return;
    }
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->io.fd, NULL);
    w->dead = 1;
    w->next = loop->dead;
    loop->dead = w;
}

static void ext_timer_fired(struct loop_timer *timer)
{
    struct ext_timer *t = (struct ext_timer *)timer;

    t->fn(t->arg);
}

static void *loop_timer_new(void *io, void (*fn)(void *arg), void *arg)
{
    struct ext_timer *t = calloc(1, sizeof(*t));

    if (t == NULL) {
        return NULL;
    }
    loop_timer_init(&t->timer, ext_timer_fired);
    t->loop = io;
    t->fn = fn;
    t->arg = arg;
    return t;
}

static void loop_timer_set(void *io, void *timer, int64_t delay_ms)
{
    struct ext_timer *t = timer;

    (void)io;
    if (delay_ms < 0) {
        loop_timer_stop(t->loop, &t->timer);
    } else {
        loop_timer_start(t->loop, &t->timer, delay_ms);
    }
}

static void loop_timer_free(void *io, void *timer)
{
    struct ext_timer *t = timer;

    (void)io;
    if (t != NULL) {
        loop_timer_stop(t->loop, &t->timer);
        free(t);
    }
}

static uint64_t loop_now_ms(void *io)
{
    return loop_now(io);
}

/* ---- curl multi ---- */

static void curl_sock_event(void *arg, unsigned events)
{
    struct watch *w = arg;
    loop_t *loop = w->loop;
    int mask = 0;

    if (events & CONNECTOR_READABLE) {
        mask |= CURL_CSELECT_IN;
    }
    if (events & CONNECTOR_WRITABLE) {
        mask |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(loop->multi, w->io.fd, mask, &loop->curl_running);
    curl_check_done(loop);
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what,
                          void *userp, void *socketp)
{
    loop_t *loop = userp;
    struct watch *w = socketp;
    unsigned events = 0;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (w != NULL) {
            curl_multi_assign(loop->multi, fd, NULL);
            loop_watch_free(loop, w);
        }
        return 0;
    }
    if (what & CURL_POLL_IN) {
        events |= CONNECTOR_READABLE;
    }
    if (what & CURL_POLL_OUT) {
        events |= CONNECTOR_WRITABLE;
    }
    if (w == NULL) {
        w = loop_watch_new(loop, fd, curl_sock_event, NULL);
        if (w == NULL) {
            return -1;
        }
        w->arg = w;
        curl_multi_assign(loop->multi, fd, w);
    }
    return loop_watch_set(loop, w, events) == 0 ? 0 : -1;
}

static void curl_timer_fired(struct loop_timer *timer)
{
    loop_t *loop = (loop_t *)((char *)timer - offsetof(loop_t, curl_timer));

    curl_multi_socket_action(loop->multi, CURL_SOCKET_TIMEOUT, 0,
                             &loop->curl_running);
    curl_check_done(loop);
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    loop_t *loop = userp;

    (void)multi;
    if (timeout_ms < 0) {
        loop_timer_stop(loop, &loop->curl_timer);
    } else {
        loop_timer_start(loop, &loop->curl_timer, timeout_ms);
    }
    return 0;
}

static int loop_http_start(void *io, void *easy, struct connector_transfer *t)
{
    loop_t *loop = io;

    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    return curl_multi_add_handle(loop->multi, easy) == CURLM_OK ? 0 : -1;
}

static void loop_http_stop(void *io, void *easy)
{
    loop_t *loop = io;

    curl_multi_remove_handle(loop->multi, easy);
}

void loop_fill_host(loop_t *loop, struct connector_host *host)
{
    host->http_start = loop_http_start;
    host->http_stop = loop_http_stop;
    host->watch_new = loop_watch_new;
    host->watch_set = loop_watch_set;
    host->watch_free = loop_watch_free;
    host->timer_new = loop_timer_new;
    host->timer_set = loop_timer_set;
    host->timer_free = loop_timer_free;
    host->now_ms = loop_now_ms;
    host->io = loop;
}

/* ---- lifecycle ---- */

loop_t *loop_new(struct sl_error *err)
{
    loop_t *loop = calloc(1, sizeof(*loop));

    if (loop == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        sl_error_set(err, "epoll_create1: %s", strerror(errno));
        free(loop);
        return NULL;
    }
    loop->now = monotonic_ms();
    loop_timer_init(&loop->curl_timer, curl_timer_fired);
    loop->multi = curl_multi_init();
    if (loop->multi == NULL) {
        sl_error_set(err, "curl_multi_init failed");
        close(loop->epfd);
        free(loop);
        return NULL;
    }
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    curl_multi_setopt(loop->multi, CURLMOPT_SOCKETDATA, loop);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(loop->multi, CURLMOPT_TIMERDATA, loop);
    /* Keep a connection per possible in-flight request: the engine bounds
     * requests per sink, so the pool never thrashes. */
    curl_multi_setopt(loop->multi, CURLMOPT_MAXCONNECTS, 1024L);
    return loop;
}

void loop_destroy(loop_t *loop)
{
    if (loop == NULL) {
        return;
    }
    curl_multi_cleanup(loop->multi);
    while (loop->dead != NULL) {
        struct watch *cs = loop->dead;
        loop->dead = cs->next;
        free(cs);
    }
    close(loop->epfd);
    free(loop->heap);
    free(loop);
}

int loop_run_once(loop_t *loop, int max_wait_ms)
{
    struct epoll_event events[128];
    int timeout = max_wait_ms;
    int n;
    size_t budget;

    if (loop->heap_len > 0) {
        uint64_t due = loop->heap[0]->due_ms;
        int until = due <= loop->now ? 0 : (int)(due - loop->now);
        if (timeout < 0 || until < timeout) {
            timeout = until;
        }
    }
    n = epoll_wait(loop->epfd, events, 128, timeout);
    if (n < 0 && errno != EINTR) {
        return -1;
    }
    loop->now = monotonic_ms();
    loop->depth++;
    for (int i = 0; i < n; i++) {
        struct loop_io *io = events[i].data.ptr;
        io->fn(io, events[i].events);
    }
    loop->depth--;
    /* An outer iteration may still hold events of closed sockets. */
    while (loop->depth == 0 && loop->dead != NULL) {
        struct watch *cs = loop->dead;
        loop->dead = cs->next;
        free(cs);
    }
    /* Timers armed by a callback wait for the next iteration, so a timer
     * that re-arms itself with 0 cannot starve io. */
    budget = loop->heap_len;
    while (budget-- > 0 && loop->heap_len > 0 &&
           loop->heap[0]->due_ms <= loop->now) {
        struct loop_timer *t = loop->heap[0];
        loop_timer_stop(loop, t);
        t->fn(t);
    }
    return 0;
}
