/* engine.h -- one lane's pipeline: consumed records → every sink → commit.
 *
 * The engine owns every policy: ordering per key, in-flight bounds with
 * pause/resume, retries, the commit watermark of each partition, and the
 * drain on revoke and shutdown. Connectors only send and classify. */
#ifndef SLUICE_ENGINE_H
#define SLUICE_ENGINE_H

#include <stdint.h>
#include <stdio.h>

#include "cfg.h"
#include "connector.h"

typedef struct engine engine_t;

/* Loads path and checks everything a run checks at start without
 * connecting anywhere: the file, the librdkafka properties and the Lua
 * scripts. On any error prints each one, then "sluice: N error(s) in
 * PATH", to errf and returns NULL; else a cfg for cfg_free(). */
struct cfg *engine_load_config(const char *path, FILE *errf);

/* A record's dedupe key, written to out (cap bytes, NUL-terminated) and
 * returned: the producer's message id (the last ENGINE_DEDUPE_HEADER
 * header's value, id[0, id_len), NULL when there is none), else
 * topic-partition-offset. An id that is empty, does not fit or holds a
 * NUL byte falls back too: cut at the NUL, two ids could collide. */
#define ENGINE_DEDUPE_HEADER "message-id"
#define ENGINE_DEDUPE_MAX 320
const char *engine_dedupe_key(char *out, size_t cap, const void *id,
                              size_t id_len, const char *topic,
                              int32_t partition, int64_t offset);

/* The key dedupe.key (header: or json:) picks from a record's header
 * (the configured one's last value, NULL when absent) or JSON value,
 * written to out and returned; NULL when there is none usable: empty,
 * not fitting cap, holding a NUL byte, or not a string or integer. Other
 * kinds of dedupe.key give NULL: the caller handles them. */
const char *engine_pick_key(const struct cfg_dedupe *d, const void *header,
                            size_t header_len, const void *value,
                            size_t value_len, char *out, size_t cap);

struct dlq_replay_options;

struct engine_options {
    int progress; /* print a live progress line on stderr each second */
    const char *admin_listen; /* overrides admin.listen; NULL: the cfg's */
    /* Set: the engine replays the DLQ records of one sink (see
     * dlq_replay in dlq.h) and stops once it reached their end. */
    const struct dlq_replay_options *replay;
};

/* Builds the lane for cfg (which must outlive the engine): loop, sinks,
 * the embedded cluster when asked for, and the consumer. Returns NULL
 * with err filled. */
engine_t *engine_new(const struct cfg *cfg, const struct engine_options *o,
                     struct sl_error *err);

/* Runs until SIGINT/SIGTERM (then drains, commits, leaves the group) or a
 * fatal error. Returns ENGINE_OK after a clean stop with everything
 * consumed committed, ENGINE_LEFT after a stop that left messages
 * uncommitted (the drain timed out, or the DLQ could not be written: the
 * next owner redelivers them), ENGINE_FATAL after a fatal error. */
enum { ENGINE_OK = 0, ENGINE_FATAL = 1, ENGINE_LEFT = 3 };
int engine_run(engine_t *e);

/* Frees everything; engine_destroy(NULL) is a no-op. */
void engine_destroy(engine_t *e);

#endif
