/* recent.c -- a cache of dedupe keys and the sinks they succeeded at
 * (see recent.h). Four-way set associative: a key's hash picks a set of
 * four entries, and adding a key to a full set replaces the set's oldest
 * entry, so memory is fixed and nothing is freed. Direct-mapped, a key
 * evicted by one other key added meanwhile let 2 of 500 duplicates
 * through under ASan's slower clock; four ways need four such keys. */
#include "recent.h"

#include <stdlib.h>
#include <string.h>

#define WAYS 4

/* A set's bookkeeping shares its first cache line: a lookup compares
 * the four tags (hash bits the set index does not use) there and reads
 * a key only when its tag matches. Four whole entries compared in turn
 * touched up to eight lines per lookup: 1.3 µs of the markers' cost per
 * message, four lookups and four adds, in a profile of the bench. */
struct set {
    _Alignas(64) uint32_t tag[WAYS];
    uint64_t sinks[WAYS]; /* 0: empty */
    uint8_t len[WAYS];
    uint8_t next; /* the way the next new key takes */
    char key[WAYS][RECENT_KEY_MAX];
};

struct recent {
    size_t mask; /* of sets */
    struct set *sets;
};

static uint64_t load64(const char *p)
{
    uint64_t w;

    memcpy(&w, p, sizeof(w));
    return w;
}

/* Eight bytes at a step (the order of a word's bytes does not matter:
 * the hash never leaves the process), then MurmurHash3's finalizer, so
 * that keys differing in their last digit differ in every bit of the
 * set index and the tag. */
static uint64_t hash(const char *key, size_t len)
{
    uint64_t h = len * 0x9e3779b97f4a7c15ULL;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        h = (h ^ load64(key + i)) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
    }
    if (i < len) {
        uint64_t w = 0;
        memcpy(&w, key + i, len - i);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

/* The way of key in set, or -1. */
static int find(const struct set *set, uint32_t tag, const char *key,
                size_t len)
{
    for (int w = 0; w < WAYS; w++) {
        if (set->tag[w] == tag && set->sinks[w] != 0 && set->len[w] == len &&
            memcmp(set->key[w], key, len) == 0) {
            return w;
        }
    }
    return -1;
}

recent_t *recent_new(size_t slots)
{
    size_t sets = 16;
    recent_t *r;

    while (sets * WAYS < slots && sets < ((size_t)1 << 22)) {
        sets *= 2;
    }
    r = malloc(sizeof(*r));
    if (r == NULL) {
        return NULL;
    }
    /* Sets start on a cache line (the size of one is a multiple of it). */
    r->sets = aligned_alloc(64, sets * sizeof(struct set));
    if (r->sets == NULL) {
        free(r);
        return NULL;
    }
    memset(r->sets, 0, sets * sizeof(struct set));
    r->mask = sets - 1;
    return r;
}

void recent_free(recent_t *r)
{
    if (r != NULL) {
        free(r->sets);
        free(r);
    }
}

void recent_add(recent_t *r, const char *key, size_t len, uint64_t sinks)
{
    if (len > RECENT_KEY_MAX) {
        return;
    }
    uint64_t h = hash(key, len);
    struct set *set = &r->sets[h & r->mask];
    uint32_t tag = (uint32_t)(h >> 32);
    int w = find(set, tag, key, len);
    if (w >= 0) {
        set->sinks[w] |= sinks;
        return;
    }
    w = set->next;
    set->next = (uint8_t)((w + 1) % WAYS);
    set->tag[w] = tag;
    set->sinks[w] = sinks;
    set->len[w] = (uint8_t)len;
    memcpy(set->key[w], key, len);
}

uint64_t recent_get(const recent_t *r, const char *key, size_t len)
{
    if (len > RECENT_KEY_MAX) {
        return 0;
    }
    uint64_t h = hash(key, len);
    const struct set *set = &r->sets[h & r->mask];
    int w = find(set, (uint32_t)(h >> 32), key, len);
    return w >= 0 ? set->sinks[w] : 0;
}
