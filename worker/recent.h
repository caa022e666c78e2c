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

/* Keys of 1 to this many bytes are kept; others are never found. */
#define RECENT_KEY_MAX 64

/* A cache of `slots` entries (rounded up to a power of two); NULL when
 * out of memory. Free with recent_free(). */
recent_t *recent_new(size_t slots);
void recent_free(recent_t *r);

/* The hash of key in r that recent_add and recent_get take: computed
 * once per key, where the key was just written, not at every call. It is
 * seeded per cache, so that a producer cannot choose keys that evict
 * others' from one set. */
uint64_t recent_hash(const recent_t *r, const char *key, size_t len);

/* Adds the sinks (a bitmask) to key's entry; hash is recent_hash(key). */
void recent_add(recent_t *r, const char *key, size_t len, uint64_t hash,
                uint64_t sinks);

/* The sinks recorded for key, 0 when none (or forgotten); hash is
 * recent_hash(key). */
uint64_t recent_get(const recent_t *r, const char *key, size_t len,
                    uint64_t hash);

#endif
