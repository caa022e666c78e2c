/* recent.c -- a direct-mapped cache of dedupe keys and the sinks they
 * succeeded at (see recent.h). One slot per hash: adding a key whose slot
 * holds another replaces it, so memory is fixed and nothing is freed. */
#include "recent.h"

#include <stdlib.h>
#include <string.h>

struct entry {
    uint64_t sinks; /* 0: empty */
    uint8_t len;
    char key[RECENT_KEY_MAX];
};

struct recent {
    size_t mask;
    struct entry slots[];
};

static uint64_t hash(const char *key, size_t len)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */

    for (size_t i = 0; i < len; i++) {
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

recent_t *recent_new(size_t slots)
{
    size_t n = 64;
    recent_t *r;

    while (n < slots && n < ((size_t)1 << 24)) {
        n *= 2;
    }
    r = calloc(1, sizeof(*r) + n * sizeof(struct entry));
    if (r != NULL) {
        r->mask = n - 1;
    }
    return r;
}

void recent_free(recent_t *r)
{
    free(r);
}

void recent_add(recent_t *r, const char *key, size_t len, uint64_t sinks)
{
    struct entry *e;

    if (len > RECENT_KEY_MAX) {
        return;
    }
    e = &r->slots[hash(key, len) & r->mask];
    if (e->sinks != 0 && e->len == len && memcmp(e->key, key, len) == 0) {
        e->sinks |= sinks;
        return;
    }
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
    e = &r->slots[hash(key, len) & r->mask];
    if (e->sinks != 0 && e->len == len && memcmp(e->key, key, len) == 0) {
        return e->sinks;
    }
    return 0;
}
