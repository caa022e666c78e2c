/* recent.c -- a cache of dedupe keys and the sinks they succeeded at
 * (see recent.h). Four-way set associative: a key's hash picks a set of
 * four entries, and adding a key to a full set replaces the set's oldest
 * entry, so memory is fixed and nothing is freed. Direct-mapped, a key
 * evicted by one other key added meanwhile let 2 of 500 duplicates
 * through under ASan's slower clock; four ways need four such keys. */
#include "recent.h"

#include <stdlib.h>
#include <string.h>

struct entry {
    uint64_t sinks; /* 0: empty */
    uint8_t len;
    char key[RECENT_KEY_MAX];
};

#define WAYS 4

struct recent {
    size_t mask; /* of sets */
    uint8_t *next; /* per set: the way the next new key takes */
    struct entry slots[];
};

static uint64_t hash(const char *key, size_t len)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */

    for (size_t i = 0; i < len; i++) {
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    }
    /* MurmurHash3's finalizer: keys that differ in their last digit
     * differ in every bit the set index takes. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

/* The entry of key in its set, or NULL. */
static struct entry *find(const recent_t *r, size_t set, const char *key,
                          size_t len)
{
    struct entry *e = (struct entry *)&r->slots[set * WAYS];

    for (int w = 0; w < WAYS; w++) {
        if (e[w].sinks != 0 && e[w].len == len &&
            memcmp(e[w].key, key, len) == 0) {
            return &e[w];
        }
    }
    return NULL;
}

recent_t *recent_new(size_t slots)
{
    size_t sets = 16;
    recent_t *r;

    while (sets * WAYS < slots && sets < ((size_t)1 << 22)) {
        sets *= 2;
    }
    r = calloc(1, sizeof(*r) + sets * WAYS * sizeof(struct entry));
    if (r == NULL) {
        return NULL;
    }
    r->next = calloc(sets, 1);
    if (r->next == NULL) {
        free(r);
        return NULL;
    }
    r->mask = sets - 1;
    return r;
}

void recent_free(recent_t *r)
{
    if (r != NULL) {
        free(r->next);
        free(r);
    }
}

void recent_add(recent_t *r, const char *key, size_t len, uint64_t sinks)
{
    struct entry *e;
    size_t set;

    if (len > RECENT_KEY_MAX) {
        return;
    }
    set = hash(key, len) & r->mask;
    e = find(r, set, key, len);
    if (e != NULL) {
        e->sinks |= sinks;
        return;
    }
    e = &r->slots[set * WAYS + r->next[set]];
    r->next[set] = (uint8_t)((r->next[set] + 1) % WAYS);
    e->sinks = sinks;
    e->len = (uint8_t)len;
    memcpy(e->key, key, len);
}

uint64_t recent_get(const recent_t *r, const char *key, size_t len)
{
    const struct entry *e;

    if (len > RECENT_KEY_MAX) {
        return 0;
    }
    e = find(r, hash(key, len) & r->mask, key, len);
    return e != NULL ? e->sinks : 0;
}
