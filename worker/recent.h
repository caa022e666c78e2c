/* recent.h -- which sinks this process saw succeed for a dedupe key
 * lately: a fixed-size, four-way set-associative cache.
 *
 * The marker store answers whether a message was handled before it was
 * looked up; two records with the same key close together (a producer
 * that retried) are both looked up before either is marked. The engine
 * asks this cache again just before a send. It forgets (a newer key
 * takes the slot), and it never errs: keys are compared whole, and a key
 * too long to keep is not kept. */
#ifndef SLUICE_RECENT_H
#define SLUICE_RECENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct recent recent_t;

/* Keys up to this long are kept; longer ones are never found. */
#define RECENT_KEY_MAX 64

/* A cache of `slots` entries (rounded up to a power of two); NULL when
 * out of memory. Free with recent_free(). */
recent_t *recent_new(size_t slots);
void recent_free(recent_t *r);

/* Adds the sinks (a bitmask) to key's entry. */
void recent_add(recent_t *r, const char *key, size_t len, uint64_t sinks);

/* The sinks recorded for key, 0 when none (or forgotten). */
uint64_t recent_get(const recent_t *r, const char *key, size_t len);

#endif
