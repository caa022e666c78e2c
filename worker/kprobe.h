/* kprobe.h -- is a Kafka cluster reachable, and do these topics exist?
 *
 * librdkafka retries connections on its own and only says when something
 * fails, never when it works again; its metadata request is the one
 * question with a yes. It blocks, so a probe thread asks it, once a
 * second, until the brokers answer and every topic exists, and reports
 * each change of answer on the loop thread. */
#ifndef SLUICE_KPROBE_H
#define SLUICE_KPROBE_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "common.h"
#include "loop.h"

typedef struct kprobe kprobe_t;

enum kprobe_state {
    KPROBE_UNREACHABLE, /* the metadata request failed: text says why */
    KPROBE_NO_TOPIC,    /* text: the missing topics, comma separated */
    KPROBE_OK,          /* the last report: the thread has ended */
};

/* Called on the loop thread for the first answer and every change. */
typedef void kprobe_fn(void *arg, enum kprobe_state state, const char *text);

/* Starts probing rk (which must outlive the probe) for topics (copied;
 * names starting with ^ are patterns and only need the brokers).
 * Returns NULL with err filled. */
kprobe_t *kprobe_start(rd_kafka_t *rk, loop_t *loop,
                       const char *const *topics, size_t topic_count,
                       kprobe_fn *fn, void *arg, struct sl_error *err);

/* Stops the thread (waiting up to one metadata timeout) and frees the
 * probe; no callback runs after it. NULL is a no-op. */
void kprobe_stop(kprobe_t *p);

#endif
