/* keyrule.c -- the publisher's record key: base key, plus a shard suffix
 * for hot keys (see keyrule.h and docs/hot-keys.md).
 *
 * hot_keys.auto counts base keys in a Space-Saving sketch of `capacity`
 * counters (a min-heap by count, found through an open-addressing index)
 * and records per partition, every count halved each `window` records.
 * Sharded keys, static and auto, sit in one table with its own index.
 *
 * Invariants: the sketch holds at most capacity keys and the hot table at
 * most static_count + capacity; both indexes are at most half full, so a
 * probe always ends at an empty slot. Every array is allocated by
 * keyrule_new(); keyrule_apply() allocates nothing. */
#include "keyrule.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keysrc.h"

/* A key as both tables keep it; hash is mix(fnv1a64(key)). */
struct slot_key {
    uint64_t hash;
    uint32_t len;
    char key[KEYRULE_KEY_MAX + 1];
};

/* A Space-Saving counter: count over-estimates the key's records by at
 * most error. */
struct counter {
    struct slot_key k; /* first: an index slot points here */
    uint64_t count;
    uint64_t error;
    uint32_t heap; /* its position in the heap */
};

/* A sharded key. */
struct hot {
    struct slot_key k; /* first: an index slot points here */
    int64_t last_hot_ms;
    int shards;
    int is_static;
    int used;
};

/* Open addressing, linear probing; NULL is an empty slot. */
struct index {
    struct slot_key **slot;
    size_t mask;
};

struct keyrule {
    char *key_spec; /* as given, e.g. "json:tenant_id" */
    int key_from;
    const char *key_arg; /* points into key_spec */
    char *shard_spec;    /* NULL: no shard_by */
    int shard_from;
    const char *shard_arg;
    char sep[KEYRULE_SEP_MAX + 1];
    size_t sep_len;
    int hot_keys; /* static keys or auto: the separator is reserved */

    struct keyrule_auto a; /* defaults filled in */
    int partitions;
    keyrule_partition_fn *partition_of;
    void *partition_arg;
    uint64_t *part; /* records per partition, halved each window */
    uint64_t total; /* records, halved each window */
    uint64_t since_decay;

    struct counter *ctr;
    uint32_t *heap; /* counter indexes, a min-heap by count */
    size_t nctr;
    struct index cix;

    struct hot *hot;
    size_t hot_cap;
    size_t auto_hot;
    struct index hix;

    int64_t now_ms;
    struct keyrule_stats st;
};

/* ---- hashing ---- */

/* FNV-1a, 64 bits: only for the indexes. */
static uint64_t fnv1a64(const void *p, size_t len)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint32_t keyrule_murmur2(const void *p, size_t len)
{
    const unsigned char *d = p;
    const uint32_t m = 0x5bd1e995;
    uint32_t h = 0x9747b28c ^ (uint32_t)len;
    size_t i = 0;

    for (; i + 4 <= len; i += 4) {
        uint32_t k = (uint32_t)d[i] | (uint32_t)d[i + 1] << 8 |
                     (uint32_t)d[i + 2] << 16 | (uint32_t)d[i + 3] << 24;
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)d[i + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)d[i + 1] << 8;
        /* fall through */
    case 1:
        h ^= d[i];
        h *= m;
        break;
    default:
        break;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

int keyrule_shard_of(const void *value, size_t len, int shards)
{
    return (int)((keyrule_murmur2(value, len) & 0x7fffffff) %
                 (uint32_t)shards);
}

/* FNV-1a's low bits depend on the low bits of the bytes only: mixed
 * (murmur3's finalizer) before they pick an index slot. */
static uint64_t key_hash(const char *key, size_t len)
{
    uint64_t h = fnv1a64(key, len);

    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* ---- the indexes ---- */

static int index_init(struct index *ix, size_t entries)
{
    size_t n = 8;

    while (n < 2 * entries) {
        n *= 2;
    }
    ix->slot = calloc(n, sizeof(*ix->slot));
    ix->mask = n - 1;
    return ix->slot != NULL ? 0 : -1;
}

/* key's slot: the one holding it, else the empty one it would take. */
static size_t index_find(const struct index *ix, uint64_t h, const char *key,
                         size_t len)
{
    size_t i = h & ix->mask;

    for (;;) {
        const struct slot_key *s = ix->slot[i];
        if (s == NULL || (s->hash == h && s->len == len &&
                          memcmp(s->key, key, len) == 0)) {
            return i;
        }
        i = (i + 1) & ix->mask;
    }
}

/* Empties slot i, moving later entries of its run back so that every
 * entry stays reachable from its home slot. */
static void index_remove(struct index *ix, size_t i)
{
    size_t j = i;

    ix->slot[i] = NULL;
    for (;;) {
        j = (j + 1) & ix->mask;
        if (ix->slot[j] == NULL) {
            return;
        }
        size_t k = ix->slot[j]->hash & ix->mask;
        /* The entry at j stays unless its home k lies cyclically in
         * (i, j]. */
        if (i <= j ? (k <= i || k > j) : (k <= i && k > j)) {
            ix->slot[i] = ix->slot[j];
            ix->slot[j] = NULL;
            i = j;
        }
    }
}

static void slot_key_set(struct slot_key *k, uint64_t h, const char *key,
                         size_t len)
{
    k->hash = h;
    k->len = (uint32_t)len;
    memcpy(k->key, key, len);
    k->key[len] = '\0';
}

/* ---- the Space-Saving sketch ---- */

static void heap_swap(struct keyrule *kr, size_t a, size_t b)
{
    uint32_t t = kr->heap[a];

    kr->heap[a] = kr->heap[b];
    kr->heap[b] = t;
    kr->ctr[kr->heap[a]].heap = (uint32_t)a;
    kr->ctr[kr->heap[b]].heap = (uint32_t)b;
}

static uint64_t heap_count(const struct keyrule *kr, size_t pos)
{
    return kr->ctr[kr->heap[pos]].count;
}

static void heap_down(struct keyrule *kr, size_t pos)
{
    for (;;) {
        size_t l = 2 * pos + 1, r = l + 1, min = pos;
        if (l < kr->nctr && heap_count(kr, l) < heap_count(kr, min)) {
            min = l;
        }
        if (r < kr->nctr && heap_count(kr, r) < heap_count(kr, min)) {
            min = r;
        }
        if (min == pos) {
            return;
        }
        heap_swap(kr, pos, min);
        pos = min;
    }
}

static void heap_up(struct keyrule *kr, size_t pos)
{
    while (pos > 0 && heap_count(kr, (pos - 1) / 2) > heap_count(kr, pos)) {
        heap_swap(kr, pos, (pos - 1) / 2);
        pos = (pos - 1) / 2;
    }
}

/* Counts one record of key; returns the records it surely had (count
 * minus error). A new key takes a free counter, else the smallest one's
 * (Space-Saving: it inherits that count as its error). */
static uint64_t sketch_add(struct keyrule *kr, uint64_t h, const char *key,
                           size_t len)
{
    size_t i = index_find(&kr->cix, h, key, len);
    struct counter *c;

    if (kr->cix.slot[i] != NULL) {
        c = (struct counter *)kr->cix.slot[i];
        c->count++;
        heap_down(kr, c->heap);
        return c->count - c->error;
    }
    if (kr->nctr < (size_t)kr->a.capacity) {
        c = &kr->ctr[kr->nctr];
        c->count = 1;
        c->error = 0;
        c->heap = (uint32_t)kr->nctr;
        kr->heap[kr->nctr] = (uint32_t)kr->nctr;
        kr->nctr++;
        slot_key_set(&c->k, h, key, len);
        kr->cix.slot[i] = &c->k;
        heap_up(kr, c->heap);
        return 1;
    }
    c = &kr->ctr[kr->heap[0]];
    index_remove(&kr->cix, index_find(&kr->cix, c->k.hash, c->k.key,
                                      c->k.len));
    c->error = c->count;
    c->count++;
    slot_key_set(&c->k, h, key, len);
    kr->cix.slot[index_find(&kr->cix, h, key, len)] = &c->k;
    heap_down(kr, 0);
    return c->count - c->error;
}

/* ---- the hot table ---- */

static struct hot *hot_find(const struct keyrule *kr, uint64_t h,
                            const char *key, size_t len)
{
    size_t i = index_find(&kr->hix, h, key, len);

    return (struct hot *)kr->hix.slot[i];
}

static void hot_remove(struct keyrule *kr, struct hot *e)
{
    index_remove(&kr->hix,
                 index_find(&kr->hix, e->k.hash, e->k.key, e->k.len));
    e->used = 0;
    if (!e->is_static) {
        kr->auto_hot--;
    }
}

/* Unshards the auto keys whose hold ran out at now; returns how many. */
static size_t hot_expire(struct keyrule *kr, int64_t now)
{
    size_t n = 0;

    for (size_t i = 0; i < kr->hot_cap && kr->auto_hot > 0; i++) {
        struct hot *e = &kr->hot[i];
        if (e->used && !e->is_static && now - e->last_hot_ms >= kr->a.hold_ms) {
            hot_remove(kr, e);
            kr->st.turned_cold++;
            n++;
        }
    }
    return n;
}

/* A new entry for key; NULL when the table is full. */
static struct hot *hot_add(struct keyrule *kr, uint64_t h, const char *key,
                           size_t len, int shards, int is_static)
{
    for (size_t i = 0; i < kr->hot_cap; i++) {
        struct hot *e = &kr->hot[i];
        if (!e->used) {
            slot_key_set(&e->k, h, key, len);
            e->shards = shards;
            e->is_static = is_static;
            e->used = 1;
            e->last_hot_ms = 0;
            kr->hix.slot[index_find(&kr->hix, h, key, len)] = &e->k;
            if (!is_static) {
                kr->auto_hot++;
            }
            return e;
        }
    }
    return NULL;
}

/* Halves every count: what happened `window` records ago weighs half. */
static void decay(struct keyrule *kr)
{
    for (size_t i = 0; i < kr->nctr; i++) {
        kr->ctr[i].count >>= 1;
        kr->ctr[i].error >>= 1;
    }
    /* floor(x / 2) keeps x <= y: the heap stays a heap. */
    for (int p = 0; p < kr->partitions; p++) {
        kr->part[p] >>= 1;
    }
    kr->total >>= 1;
    kr->since_decay = 0;
    hot_expire(kr, kr->now_ms);
}

/* ---- new, destroy ---- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);

    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

static int check_int(struct sl_error *err, const char *name, int64_t *v,
                     int64_t def, int64_t min, int64_t max)
{
    if (*v == 0) {
        *v = def;
    }
    if (*v < min || *v > max) {
        return sl_error_set(err, "hot_keys.auto.%s: %lld is not in %lld..%lld",
                            name, (long long)*v, (long long)min,
                            (long long)max);
    }
    return 0;
}

/* The auto settings with their defaults; -1 with err when one is off. */
static int check_auto(struct keyrule *kr, const struct keyrule_options *o,
                      struct sl_error *err)
{
    struct keyrule_auto *a = &kr->a;

    *a = o->autos;
    if (a->share == 0) {
        a->share = KEYRULE_SHARE_DEFAULT;
    }
    if (!(a->share > 0 && a->share <= 1)) {
        return sl_error_set(err, "hot_keys.auto.share: expected a ratio "
                                 "above 0 and at most 1");
    }
    if (check_int(err, "capacity", &a->capacity, KEYRULE_CAPACITY_DEFAULT, 1,
                  KEYRULE_CAPACITY_MAX) < 0 ||
        check_int(err, "window", &a->window, KEYRULE_WINDOW_DEFAULT, 100,
                  1000000000) < 0 ||
        check_int(err, "min_records", &a->min_records,
                  KEYRULE_MIN_RECORDS_DEFAULT, 1, a->window) < 0 ||
        check_int(err, "shards", &a->shards, KEYRULE_AUTO_SHARDS_DEFAULT,
                  KEYRULE_SHARDS_MIN, KEYRULE_SHARDS_MAX) < 0 ||
        check_int(err, "hold", &a->hold_ms, KEYRULE_HOLD_MS_DEFAULT, 1,
                  (int64_t)24 * 3600 * 1000) < 0) {
        return -1;
    }
    if (o->partition_of == NULL) {
        return sl_error_set(err, "hot_keys.auto needs the caller's "
                                 "partition_of");
    }
    if (o->partitions < 1 || o->partitions > KEYRULE_PARTITIONS_MAX) {
        return sl_error_set(err, "hot_keys.auto: %lld partitions is not in "
                                 "1..%d",
                            (long long)o->partitions, KEYRULE_PARTITIONS_MAX);
    }
    kr->partitions = (int)o->partitions;
    kr->partition_of = o->partition_of;
    kr->partition_arg = o->partition_arg;
    return 0;
}

static int check_separator(struct keyrule *kr, const char *sep,
                           struct sl_error *err)
{
    if (sep == NULL || sep[0] == '\0') {
        sep = KEYRULE_SEP_DEFAULT;
    }
    kr->sep_len = strlen(sep);
    if (kr->sep_len > KEYRULE_SEP_MAX) {
        return sl_error_set(err, "separator: longer than %d bytes",
                            KEYRULE_SEP_MAX);
    }
    if (strpbrk(sep, "0123456789") != NULL) {
        return sl_error_set(err, "separator: `%s` holds a digit, so a shard "
                                 "number could not be split off",
                            sep);
    }
    memcpy(kr->sep, sep, kr->sep_len + 1);
    return 0;
}

static int add_statics(struct keyrule *kr, const struct keyrule_options *o,
                       struct sl_error *err)
{
    for (size_t i = 0; i < o->static_count; i++) {
        const struct keyrule_static *s = &o->statics[i];
        size_t len = s->key != NULL ? strlen(s->key) : 0;
        uint64_t h;

        if (len == 0 || len > KEYRULE_KEY_MAX) {
            return sl_error_set(err, "hot_keys.static: entry %zu: a key is "
                                     "1 to %d bytes",
                                i + 1, KEYRULE_KEY_MAX);
        }
        if (memmem(s->key, len, kr->sep, kr->sep_len) != NULL) {
            return sl_error_set(err, "hot_keys.static: `%s`: holds the "
                                     "separator `%s`",
                                s->key, kr->sep);
        }
        if (s->shards < KEYRULE_SHARDS_MIN || s->shards > KEYRULE_SHARDS_MAX) {
            return sl_error_set(err, "hot_keys.static: `%s`: %lld shards is "
                                     "not in %d..%d",
                                s->key, (long long)s->shards,
                                KEYRULE_SHARDS_MIN, KEYRULE_SHARDS_MAX);
        }
        h = key_hash(s->key, len);
        if (hot_find(kr, h, s->key, len) != NULL) {
            return sl_error_set(err, "hot_keys.static: `%s` is listed twice",
                                s->key);
        }
        hot_add(kr, h, s->key, len, (int)s->shards, 1);
    }
    return 0;
}

keyrule_t *keyrule_new(const struct keyrule_options *o, struct sl_error *err)
{
    struct keyrule *kr = calloc(1, sizeof(*kr));
    const char *why;

    if (kr == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    if (o->static_count > KEYRULE_STATIC_MAX) {
        sl_error_set(err, "hot_keys.static: more than %d keys",
                     KEYRULE_STATIC_MAX);
        goto err;
    }
    kr->hot_keys = o->static_count > 0 || o->autos.enabled;
    if (check_separator(kr, o->separator, err) < 0) {
        goto err;
    }
    kr->key_spec = dup_str(o->key != NULL ? o->key : "");
    if (kr->key_spec == NULL) {
        sl_error_set(err, "out of memory");
        goto err;
    }
    why = keysrc_parse(o->key, 0, &kr->key_from, &kr->key_arg);
    if (why != NULL) {
        sl_error_set(err, "key: %s", why);
        goto err;
    }
    /* key_arg points into o->key: point it into the copy. */
    kr->key_arg = kr->key_spec + (kr->key_arg - o->key);
    if (o->shard_by != NULL) {
        kr->shard_spec = dup_str(o->shard_by);
        if (kr->shard_spec == NULL) {
            sl_error_set(err, "out of memory");
            goto err;
        }
        why = keysrc_parse(kr->shard_spec, 0, &kr->shard_from,
                           &kr->shard_arg);
        if (why != NULL) {
            sl_error_set(err, "shard_by: %s", why);
            goto err;
        }
    } else if (kr->hot_keys) {
        sl_error_set(err, "shard_by: hot keys need it: the field that "
                          "spreads a hot key's records over its shards, "
                          "each entity's always to the same one");
        goto err;
    }
    if (o->autos.enabled) {
        if (check_auto(kr, o, err) < 0) {
            goto err;
        }
        kr->part = calloc((size_t)kr->partitions, sizeof(*kr->part));
        kr->ctr = calloc((size_t)kr->a.capacity, sizeof(*kr->ctr));
        kr->heap = calloc((size_t)kr->a.capacity, sizeof(*kr->heap));
        if (kr->part == NULL || kr->ctr == NULL || kr->heap == NULL ||
            index_init(&kr->cix, (size_t)kr->a.capacity) < 0) {
            sl_error_set(err, "out of memory");
            goto err;
        }
    }
    kr->hot_cap = o->static_count +
                  (o->autos.enabled ? (size_t)kr->a.capacity : 0);
    if (kr->hot_cap > 0) {
        kr->hot = calloc(kr->hot_cap, sizeof(*kr->hot));
        if (kr->hot == NULL || index_init(&kr->hix, kr->hot_cap) < 0) {
            sl_error_set(err, "out of memory");
            goto err;
        }
    }
    if (add_statics(kr, o, err) < 0) {
        goto err;
    }
    return kr;
err:
    keyrule_destroy(kr);
    return NULL;
}

void keyrule_destroy(keyrule_t *kr)
{
    if (kr == NULL) {
        return;
    }
    free(kr->key_spec);
    free(kr->shard_spec);
    free(kr->part);
    free(kr->ctr);
    free(kr->heap);
    free(kr->cix.slot);
    free(kr->hot);
    free(kr->hix.slot);
    free(kr);
}

/* ---- apply ---- */

/* The value a source (header: or json:) picks from in, in out (cap
 * bytes); NULL with *miss. */
static const char *pick(const struct keyrule_input *in, int from,
                        const char *arg, char *out, size_t cap, int *miss)
{
    const struct sl_header *hdr = NULL;

    if (from == KEYSRC_HEADER) {
        for (size_t i = 0; i < in->header_count; i++) {
            if (in->headers[i].name != NULL &&
                strcasecmp(in->headers[i].name, arg) == 0) {
                hdr = &in->headers[i];
            }
        }
    }
    return keysrc_pick(from, arg, hdr != NULL ? hdr->value : NULL,
                       hdr != NULL ? hdr->value_len : 0, in->body,
                       in->body_len, out, cap, miss);
}

static int refuse(struct keyrule *kr, struct sl_error *err, int miss)
{
    kr->st.refused++;
    if (miss == KEYSRC_TOO_LONG) {
        return sl_error_set(err, "key %s: longer than %d bytes",
                            kr->key_spec, KEYRULE_KEY_MAX);
    }
    return sl_error_set(err, "key %s: %s", kr->key_spec,
                        keysrc_miss_str(kr->key_from, miss));
}

/* Whether a key with `lower` sure records is hot in partition p now. */
static int is_hot(const struct keyrule *kr, uint64_t lower, int p)
{
    double share = kr->a.share;

    return kr->total >= (uint64_t)kr->a.min_records &&
           lower >= KEYRULE_KEY_RECORDS_MIN &&
           (double)lower > share * (double)kr->part[p] &&
           (double)lower * kr->partitions >= share * (double)kr->total;
}

/* Counts the record of base key key toward hot_keys.auto and returns its
 * hot entry (e as it was, or a new or no entry). */
static struct hot *count_auto(struct keyrule *kr, struct hot *e, uint64_t h,
                              const char *key, size_t len,
                              struct keyrule_decision *d)
{
    int p = d->partition;
    int64_t now = kr->now_ms;

    kr->part[p]++;
    kr->total++;
    if (e == NULL || !e->is_static) {
        uint64_t lower = sketch_add(kr, h, key, len);
        if (is_hot(kr, lower, p)) {
            if (e == NULL && kr->auto_hot >= (size_t)kr->a.capacity) {
                hot_expire(kr, now);
            }
            if (e == NULL && kr->auto_hot < (size_t)kr->a.capacity) {
                e = hot_add(kr, h, key, len, (int)kr->a.shards, 0);
                d->turned_hot = 1;
                kr->st.turned_hot++;
            } else if (e == NULL) {
                kr->st.hot_full++;
            }
            if (e != NULL) {
                e->last_hot_ms = now;
            }
        } else if (e != NULL && now - e->last_hot_ms >= kr->a.hold_ms) {
            hot_remove(kr, e);
            e = NULL;
            d->turned_cold = 1;
            kr->st.turned_cold++;
        }
    }
    if (++kr->since_decay >= (uint64_t)kr->a.window) {
        decay(kr); /* may unshard e's key if its hold ran out */
        if (e != NULL && !e->used) {
            e = NULL;
            d->turned_cold = 1;
        }
    }
    return e;
}

/* Appends the separator and shard to d->key. */
static void put_shard(const struct keyrule *kr, struct keyrule_decision *d,
                      int shard)
{
    char *at = d->key + d->base_len;
    char digits[3];
    int n = 0;

    memcpy(at, kr->sep, kr->sep_len);
    at += kr->sep_len;
    do {
        digits[n++] = (char)('0' + shard % 10);
        shard /= 10;
    } while (shard > 0 && n < 3);
    while (n > 0) {
        *at++ = digits[--n];
    }
    *at = '\0';
    d->key_len = (size_t)(at - d->key);
}

int keyrule_apply(keyrule_t *kr, const struct keyrule_input *in,
                  int64_t now_ms, struct keyrule_decision *d,
                  struct sl_error *err)
{
    char value[KEYRULE_KEY_MAX + 1];
    const char *base, *shard_value = NULL;
    struct hot *e = NULL;
    uint64_t h;
    size_t len;
    int miss, shard_miss = KEYSRC_ABSENT, shard_picked = 0;

    d->key_len = d->base_len = 0;
    d->shard = -1;
    d->shards = 0;
    d->hot = KEYRULE_COLD;
    d->turned_hot = d->turned_cold = 0;
    d->partition = -1;
    d->shard_by_missing = NULL;
    d->key[0] = '\0';
    if (now_ms > kr->now_ms) {
        kr->now_ms = now_ms;
    }
    if (kr->hot_keys && kr->key_from == KEYSRC_JSON &&
        kr->shard_from == KEYSRC_JSON) {
        /* Both from the body: parse it once. */
        struct keysrc_json_pick p[2] = {
            {.path = kr->key_arg, .out = d->key, .cap = KEYRULE_KEY_MAX + 1},
            {.path = kr->shard_arg, .out = value, .cap = sizeof(value)},
        };
        keysrc_pick_json(in->body, in->body_len, p, 2);
        base = p[0].key;
        miss = p[0].miss;
        shard_value = p[1].key;
        shard_miss = p[1].miss;
        shard_picked = 1;
    } else {
        base = pick(in, kr->key_from, kr->key_arg, d->key,
                    KEYRULE_KEY_MAX + 1, &miss);
    }
    if (base == NULL) {
        return refuse(kr, err, miss);
    }
    len = strlen(d->key);
    if (kr->hot_keys && memmem(d->key, len, kr->sep, kr->sep_len) != NULL) {
        kr->st.refused++;
        return sl_error_set(err, "key %s: holds `%s`, the separator of hot "
                                 "keys' shard suffixes",
                            kr->key_spec, kr->sep);
    }
    d->key_len = d->base_len = len;
    if (!kr->hot_keys) {
        kr->st.records++;
        return 0;
    }
    h = key_hash(d->key, len);
    e = hot_find(kr, h, d->key, len);
    if (kr->part != NULL) {
        int p = kr->partition_of(kr->partition_arg, d->key, len);
        if (p < 0 || p >= kr->partitions) {
            kr->st.refused++;
            return sl_error_set(err, "partition_of gave %d for a topic of %d "
                                     "partitions",
                                p, kr->partitions);
        }
        d->partition = p;
        e = count_auto(kr, e, h, d->key, len, d);
    }
    kr->st.records++;
    if (e == NULL) {
        return 0;
    }
    d->hot = e->is_static ? KEYRULE_STATIC : KEYRULE_AUTO;
    d->shards = e->shards;
    if (!shard_picked) {
        shard_value = pick(in, kr->shard_from, kr->shard_arg, value,
                           sizeof(value), &shard_miss);
    }
    if (shard_value != NULL) {
        d->shard = keyrule_shard_of(shard_value, strlen(shard_value),
                                    e->shards);
    } else {
        d->shard = 0;
        d->shard_by_missing = keysrc_miss_str(kr->shard_from, shard_miss);
        kr->st.missing_shard_by++;
    }
    put_shard(kr, d, d->shard);
    kr->st.sharded++;
    return 0;
}

void keyrule_stats(const keyrule_t *kr, struct keyrule_stats *st)
{
    *st = kr->st;
    st->auto_hot_keys = kr->auto_hot;
}

const char *keyrule_key_base(const char *key, size_t len, const char *sep,
                             size_t *base_len)
{
    size_t sl, digits = 0;

    if (key == NULL) {
        *base_len = 0;
        return NULL;
    }
    *base_len = len;
    if (sep == NULL) {
        sep = KEYRULE_SEP_DEFAULT;
    }
    sl = strlen(sep);
    while (digits < 4 && digits < len && key[len - 1 - digits] >= '0' &&
           key[len - 1 - digits] <= '9') {
        digits++;
    }
    if (sl > 0 && digits >= 1 && digits <= 3 && len > digits + sl &&
        memcmp(key + len - digits - sl, sep, sl) == 0) {
        *base_len = len - digits - sl;
    }
    return key;
}
