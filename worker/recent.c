/* recent.c -- a cache of dedupe keys and the sinks they succeeded at
 * (see recent.h). Four-way set associative: a key's hash picks a set of
 * four entries, and adding a key to a full set replaces the set's oldest
 * entry, so memory is fixed and nothing is freed. Direct-mapped, a key
 * evicted by one other key added meanwhile let 2 of 500 duplicates
 * through under ASan's slower clock; four ways need four such keys. */
#include "recent.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define WAYS 4

/* The tags of all sets sit in one array apart from the entries: 16
 * bytes a set, 64 KiB for the default 10,000 keys. A tag is 24 bits of
 * the hash the set index does not use and the key's length (0: empty),
 * so an entry is read only for its key, and a lookup of a key the cache
 * does not hold (nearly every lookup) reads the tags alone. Entries
 * compared in turn read up to eight cold lines per lookup: in a profile
 * of the bench's SQLite case, the four lookups and four adds per message
 * were a fifth of what markers added to the lane's thread, nearly all of
 * it waiting on memory. An entry's sinks come before its key, on the
 * line where the key starts. */
struct entry {
    uint64_t sinks;
    char key[RECENT_KEY_MAX];
};

struct recent {
    uint64_t seed; /* random: keys cannot be chosen to share a set */
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
uint64_t recent_hash(const recent_t *r, const char *key, size_t len)
{
    uint64_t h = r->seed ^ len * 0x9e3779b97f4a7c15ULL;
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

static uint32_t tag_of(uint64_t h, size_t len)
{
    return (uint32_t)(h >> 40) << 8 | (uint32_t)len;
}

/* The entry of key (with hash h), or NULL. */
static struct entry *find(const recent_t *r, uint64_t h, const char *key,
                          size_t len)
{
    size_t set = h & r->mask;
    uint32_t tag = tag_of(h, len);

    for (int w = 0; w < WAYS; w++) {
        if (r->tags[set][w] == tag) {
            struct entry *e = &r->entries[set * WAYS + (size_t)w];
            if (memcmp(e->key, key, len) == 0) {
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
    if (getrandom(&r->seed, sizeof(r->seed), 0) != (ssize_t)sizeof(r->seed)) {
        r->seed = (uint64_t)(uintptr_t)r; /* no worse than unseeded */
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

void recent_add(recent_t *r, const char *key, size_t len, uint64_t hash,
                uint64_t sinks)
{
    /* Empty keys are not kept either: their tag would read as empty. */
    if (len == 0 || len > RECENT_KEY_MAX || sinks == 0) {
        return;
    }
    struct entry *e = find(r, hash, key, len);
    if (e != NULL) {
        e->sinks |= sinks;
        return;
    }
    size_t set = hash & r->mask;
    uint8_t w = r->next[set];
    r->next[set] = (uint8_t)((w + 1) % WAYS);
    r->tags[set][w] = tag_of(hash, len);
    e = &r->entries[set * WAYS + w];
    e->sinks = sinks;
    memcpy(e->key, key, len);
}

uint64_t recent_get(const recent_t *r, const char *key, size_t len,
                    uint64_t hash)
{
    if (len == 0 || len > RECENT_KEY_MAX) {
        return 0;
    }
    const struct entry *e = find(r, hash, key, len);
    return e != NULL ? e->sinks : 0;
}
