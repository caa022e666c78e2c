/* offsets.h -- the commit watermark of one partition.
 *
 * Messages are tracked in the order they were consumed (offsets increase,
 * gaps allowed) and completed in any order; the committable offset is the
 * lowest incomplete offset, or one past the last tracked offset when all
 * are complete. This is contract 1: a commit never passes a message that
 * has not reached a terminal state at every sink. */
#ifndef SLUICE_OFFSETS_H
#define SLUICE_OFFSETS_H

#include <stddef.h>
#include <stdint.h>

typedef struct offsets offsets_t;

/* Returns a tracker that owns its ring, or NULL on allocation failure.
 * Free it with offsets_destroy(); offsets_destroy(NULL) is a no-op. */
offsets_t *offsets_new(void);
void offsets_destroy(offsets_t *t);

/* Tracks offset as consumed and incomplete; *slot identifies it for
 * offsets_done(). Returns 0, -1 when offset is not above the last one
 * tracked, or -2 on allocation failure. */
int offsets_track(offsets_t *t, int64_t offset, uint64_t *slot);

/* Marks a tracked slot complete. Completing a slot twice is a no-op. */
void offsets_done(offsets_t *t, uint64_t slot);

/* The offset to commit (the next one to consume), or -1 when nothing was
 * ever tracked. */
int64_t offsets_committable(const offsets_t *t);

/* Tracked slots not yet complete, or complete but behind an incomplete
 * one. */
size_t offsets_pending(const offsets_t *t);

#endif
