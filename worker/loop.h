/* loop.h -- the lane's event loop: epoll, timers and a curl multi handle.
 *
 * One loop per lane, run by one thread. It knows nothing of Kafka or of
 * messages: file descriptors, timers and HTTP transfers are all it
 * serves. Timers and io watchers are embedded in their owners' structs,
 * so arming one never allocates. */
#ifndef SLUICE_LOOP_H
#define SLUICE_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "connector.h"

typedef struct loop loop_t;

struct loop_timer {
    uint64_t due_ms;
    size_t heap_index; /* SIZE_MAX while not armed */
    void (*fn)(struct loop_timer *timer);
};

struct loop_io {
    int fd;
    void (*fn)(struct loop_io *io, uint32_t epoll_events);
};

/* Returns a loop or NULL with err filled. Free with loop_destroy(). */
loop_t *loop_new(struct sl_error *err);
/* Frees the loop. Transfers still running are abandoned: their owners
 * must have stopped them. loop_destroy(NULL) is a no-op. */
void loop_destroy(loop_t *loop);

/* Monotonic milliseconds, read once per iteration. */
uint64_t loop_now(const loop_t *loop);

void loop_timer_init(struct loop_timer *timer,
                     void (*fn)(struct loop_timer *timer));
/* (Re)arms timer to run once after delay_ms (0: next iteration). */
void loop_timer_start(loop_t *loop, struct loop_timer *timer,
                      int64_t delay_ms);
void loop_timer_stop(loop_t *loop, struct loop_timer *timer);
int loop_timer_armed(const struct loop_timer *timer);

#define LOOP_READABLE 0x001u /* EPOLLIN */

/* Watches io->fd for epoll events (level-triggered). 0 or -1. */
int loop_io_add(loop_t *loop, struct loop_io *io, uint32_t events);
void loop_io_del(loop_t *loop, struct loop_io *io);

/* Fills host's loop services (http_*, watch_*, timer_*, now_ms, io) with
 * this loop's, the only way they are reached; the caller sets the rest. */
void loop_fill_host(loop_t *loop, struct connector_host *host);

/* Waits at most max_wait_ms (-1: until something happens) and runs what
 * is ready. Returns 0, or -1 on an epoll failure. */
int loop_run_once(loop_t *loop, int max_wait_ms);

#endif
