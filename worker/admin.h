/* admin.h -- the admin HTTP server: GET /metrics, /healthz, /readyz,
 * /status and POST /pause, /resume.
 *
 * It runs on libmicrohttpd's threads and reads only the metrics board
 * (snapshots and the heartbeat the lane publishes). Pause and resume
 * reach the lane as commands: a queue and an eventfd the lane watches on
 * its loop; the request waits until the lane applied the command. */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "metrics.h"

typedef struct admin admin_t;

/* The loop's heartbeat older than this: /healthz and /readyz say 503. */
#define ADMIN_STALE_MS 10000

struct admin_command {
    uint64_t id;
    int pause; /* 1: pause, 0: resume */
    int sink;  /* index into the sink names; -1: the whole pipeline */
};

/* Serves on listen ("host:port", "[v6]:port"; port 0 picks a free one).
 * board and sink_names (count of them, in the pipeline's order) must
 * outlive the server. NULL with err filled (address in use, bad
 * address). */
admin_t *admin_new(const char *listen, metrics_board_t *board,
                   const char *const *sink_names, size_t sink_count,
                   struct sl_error *err);

/* The port it listens on. */
int admin_port(const admin_t *a);

/* Readable while commands wait: the lane watches it on its loop. */
int admin_fd(const admin_t *a);

/* Takes the oldest waiting command into *out: 1, or 0 when none. The
 * lane applies it, then calls admin_applied with its id. */
int admin_take(admin_t *a, struct admin_command *out);
void admin_applied(admin_t *a, uint64_t id);

/* Stops serving (requests under way end first) and frees. NULL ok. */
void admin_free(admin_t *a);

#endif
