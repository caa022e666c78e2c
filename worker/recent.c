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

/* The tags (hash bits the set index does not use; 0: empty) of all sets
 * sit in one array apart from the entries: 16 bytes a set, 64 KiB for
 * the default 10,000 keys, which stays in the core's cache, so a lookup
 * of a key the cache does not hold touches no entry, and one that it
 * holds touches one. Entries compared in turn touched up to eight cold
 * lines per lookup: in a profile of the bench's SQLite case, the four
 * lookups and four adds per message were a fifth of what markers added
 * to the lane's thread, nearly all of it waiting on memory. */
struct entry {
    char key[RECENT_KEY_MAX];
    uint64_t sinks;
    uint8_t len;
};

struct recent {
    size_t mask; /* of sets */
    uint32_t (*tags)[WAYS];
    uint8_t *next; /* per set: the way the next new key takes */
    struct entry *entries; /* WAYS per set */
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

/* The entry of key (with hash h), or NULL. */
static struct entry *find(const recent_t *r, uint64_t h, const char *key,
                          size_t len)
{
    size_t set = h & r->mask;
    uint32_t tag = (uint32_t)(h >> 32) | 1;

    for (int w = 0; w < WAYS; w++) {
        if (r->tags[set][w] == tag) {
            struct entry *e = &r->entries[set * WAYS + (size_t)w];
            if (e->len == len && memcmp(e->key, key, len) == 0) {
                return e;
            }
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
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return NULL;
    }
    r->tags = calloc(sets, sizeof(*r->tags));
    r->next = calloc(sets, 1);
    r->entries = malloc(sets * WAYS * sizeof(*r->entries));
    if (r->tags == NULL || r->next == NULL || r->entries == NULL) {
        recent_free(r);
        return NULL;
    }
    r->mask = sets - 1;
    return r;
}

void recent_free(recent_t *r)
{
    if (r != NULL) {
        free(r->tags);
        free(r->next);
        free(r->entries);
        free(r);
    }
}

void recent_add(recent_t *r, const char *key, size_t len, uint64_t sinks)
{
    if (len > RECENT_KEY_MAX || sinks == 0) {
        return;
    }
    uint64_t h = hash(key, len);
    struct entry *e = find(r, h, key, len);
    if (e != NULL) {
        e->sinks |= sinks;
        return;
    }
    size_t set = h & r->mask;
    uint8_t w = r->next[set];
    r->next[set] = (uint8_t)((w + 1) % WAYS);
    r->tags[set][w] = (uint32_t)(h >> 32) | 1;
    e = &r->entries[set * WAYS + w];
    e->sinks = sinks;
    e->len = (uint8_t)len;
    memcpy(e->key, key, len);
}

uint64_t recent_get(const recent_t *r, const char *key, size_t len)
{
    if (len > RECENT_KEY_MAX) {
        return 0;
    }
    const struct entry *e = find(r, hash(key, len), key, len);
    return e != NULL ? e->sinks : 0;
}
