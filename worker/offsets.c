/* offsets.c -- per-partition ring of consumed offsets and their states.
 *
 * Invariants: slots [head, tail) hold tracked offsets in increasing order;
 * the slot at head is incomplete whenever head != tail (complete slots at
 * the head are popped at once), so the watermark is O(1) to read and each
 * slot is pushed and popped once: amortised O(1) per message. The ring
 * doubles when full and never shrinks; it is bounded by the partition's
 * in-flight limit. */
#include "offsets.h"

#include <stdlib.h>
#include <string.h>

struct slot {
    int64_t offset;
    int done;
};

struct offsets {
    struct slot *ring;
    size_t mask;       /* capacity - 1; capacity is a power of two */
    uint64_t head;     /* oldest pending slot */
    uint64_t tail;     /* next slot to fill */
    int64_t last;      /* last tracked offset, -1 before the first */
};

offsets_t *offsets_new(void)
{
    offsets_t *t = calloc(1, sizeof(*t));

    if (t == NULL) {
        return NULL;
    }
    t->mask = 63;
    t->ring = calloc(t->mask + 1, sizeof(*t->ring));
    if (t->ring == NULL) {
        free(t);
        return NULL;
    }
    t->last = -1;
    return t;
}

void offsets_destroy(offsets_t *t)
{
    if (t == NULL) {
        return;
    }
    free(t->ring);
    free(t);
}

static int grow(offsets_t *t)
{
    size_t cap = t->mask + 1;
    struct slot *ring = malloc(2 * cap * sizeof(*ring));

    if (ring == NULL) {
        return -1;
    }
    /* Slots keep their sequence numbers: re-place each under the new mask
     * so that slot ids handed out earlier stay valid. */
    for (uint64_t s = t->head; s != t->tail; s++) {
        ring[s & (2 * cap - 1)] = t->ring[s & t->mask];
    }
    free(t->ring);
    t->ring = ring;
    t->mask = 2 * cap - 1;
    return 0;
}

int offsets_track(offsets_t *t, int64_t offset, uint64_t *slot)
{
    if (offset <= t->last) {
        return -1;
    }
    if (t->tail - t->head > t->mask && grow(t) != 0) {
        return -2;
    }
    t->ring[t->tail & t->mask] = (struct slot){.offset = offset, .done = 0};
    *slot = t->tail++;
    t->last = offset;
    return 0;
}

void offsets_done(offsets_t *t, uint64_t slot)
{
    if (slot < t->head || slot >= t->tail) {
        return;
    }
    t->ring[slot & t->mask].done = 1;
    while (t->head != t->tail && t->ring[t->head & t->mask].done) {
        t->head++;
    }
}

int64_t offsets_committable(const offsets_t *t)
{
    if (t->head != t->tail) {
        return t->ring[t->head & t->mask].offset;
    }
    return t->last < 0 ? -1 : t->last + 1;
}

size_t offsets_pending(const offsets_t *t)
{
    return (size_t)(t->tail - t->head);
}
