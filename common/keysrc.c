/* keysrc.c -- `header:NAME` / `json:PATH` key sources (see keysrc.h).
 *
 * Lifted from cfg.c (parsing dedupe.key) and engine.c (picking the key)
 * so that the publisher's key rule reads a source exactly as dedupe does.
 * A key is usable when it is not empty, fits and holds no NUL byte. */
#include "keysrc.h"

#include <endian.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "jsonnum.h"
#include "utf8.h"

const char *keysrc_parse(const char *spec, int allow, int *from,
                         const char **arg)
{
    static const struct {
        const char *prefix;
        int from;
    } kinds[] = {{"header:", KEYSRC_HEADER},
                 {"json:", KEYSRC_JSON},
                 {"lua:", KEYSRC_LUA}};
    int all = (allow & KEYSRC_ALLOW_LUA_COORDINATES) != 0;
    const char *why = all ? "expected `header:NAME`, `json:PATH`, "
                            "`lua:FUNCTION` or `coordinates`"
                          : "expected `header:NAME` or `json:PATH`";

    if (spec == NULL) {
        return why;
    }
    if (all && strcmp(spec, "coordinates") == 0) {
        *from = KEYSRC_COORDINATES;
        *arg = spec;
        return NULL;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t n = strlen(kinds[i].prefix);
        if ((kinds[i].from != KEYSRC_LUA || all) &&
            strncmp(spec, kinds[i].prefix, n) == 0) {
            *from = kinds[i].from;
            *arg = spec + n;
            why = NULL;
            break;
        }
    }
    if (why != NULL) {
        return why;
    }
    if ((*arg)[0] == '\0') {
        return "the name after the colon is missing";
    }
    if (*from == KEYSRC_JSON) {
        for (const char *c = *arg; *c; c++) {
            if (*c == '.' && (c == *arg || c[1] == '.' || c[1] == '\0')) {
                return "a JSON path is field names joined by `.`, e.g. "
                       "`meta.id`";
            }
        }
    }
    return NULL;
}

/* A key of len bytes that can serve: not empty, fits, no NUL byte (cut
 * there, two keys could collide). */
static const char *usable_key(const void *key, size_t len, char *out,
                              size_t cap, int *miss)
{
    if (key == NULL) {
        *miss = KEYSRC_ABSENT;
    } else if (len == 0) {
        *miss = KEYSRC_EMPTY;
    } else if (len >= cap) {
        *miss = KEYSRC_TOO_LONG;
    } else if (memchr(key, '\0', len) != NULL) {
        *miss = KEYSRC_NUL;
    } else {
        memcpy(out, key, len);
        out[len] = '\0';
        return out;
    }
    return NULL;
}

/* The JSON scanner behind json: sources. It reads a value once, checks
 * it exactly as jansson 2.14's json_loadb(JSON_REJECT_DUPLICATES) does
 * (the verdict the keys picked before it had: tests/unit/test_keysrc.c
 * and tests/fuzz/fuzz_keysrc.c hold jansson as the oracle), and picks
 * the keys on the way, without building a tree or allocating: jansson
 * and its mallocs were 12% of the publisher's CPU per request. About
 * 27 KiB of stack (the open containers, the open objects' keys); the
 * heap only for a body whose open objects hold over SCAN_KEYS keys.
 *
 * jansson's rules kept here: the top level is an object or an array;
 * the whole value is valid UTF-8 (no overlong forms, surrogates or code
 * points past U+10FFFF); strings hold no byte below 0x20, only the
 * JSON escapes, \u surrogates only as a high-low pair, and no \u0000;
 * no object holds the same (decoded) key twice; an integer (no fraction
 * nor exponent) fits json_int_t, a real does not overflow a double;
 * every value, scalars included, is at most JSON_PARSER_MAX_DEPTH deep;
 * nothing but whitespace follows. And one quirk: a NUL byte right after
 * a number or true, false, null is skipped (see scan_value). */

#define SCAN_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH */
/* Keys of the open objects kept on the stack. fuzz.mk makes it 4, so
 * that fuzzing reaches the heap and its index with short inputs. */
#ifdef KEYSRC_SCAN_KEYS
#define SCAN_KEYS KEYSRC_SCAN_KEYS
#else
#define SCAN_KEYS 512
#endif
#define SCAN_PICKS 8    /* picks per pass over the value */
#define SCAN_NAME 256   /* json_key's name buffer: longer names miss */

/* 2^1024 - 2^970: halfway between DBL_MAX and 2^1024; strtod rounds a
 * real at or past it (ties to even) to infinity, which jansson refuses. */
static const char real_limit[] =
    "17976931348623158079372897140530341507993413271003782693617377898044"
    "49682927647509466490179775872070963302864166928879109465555478519404"
    "02630657488671505820681908902000708383676273854845817711531764475730"
    "27006985557136695962284291481986083493647529271907416844436551070434"
    "2711559699508093042880177904174497792";

enum { PICK_NEXT, PICK_SEARCH, PICK_FIELD, PICK_DONE };

/* Where one pick stands: the next value is where its path leads so far
 * (NEXT); looking for the field name[0, len) in the open object at depth
 * `depth` (SEARCH); reading the field, a string or an integer (FIELD);
 * done, its key and miss set (DONE). */
struct scan_pick {
    int state;
    size_t depth;
    const char *name; /* the path's component being looked for */
    size_t len;
    const char *rest; /* the path after it */
    struct keysrc_json_pick *p;
};

struct scan_key {
    uint32_t hash;
    uint16_t depth; /* of its object */
    size_t off;     /* the key's first byte after its quote */
};

struct scan {
    const unsigned char *s, *p, *end;
    size_t depth;                   /* open containers: base[1, depth] */
    size_t base[SCAN_DEPTH + 1];    /* where each one's keys start */
    unsigned char object[SCAN_DEPTH + 1]; /* an object, else an array */
    /* The open objects' keys, a stack: fixed[] first. Past SCAN_KEYS
     * (a body's objects rarely hold that many keys at once) they move
     * to the heap with a hash index over them, so that a body of many
     * keys costs time in proportion, as in jansson's hash tables. */
    struct scan_key *keys;
    size_t nkeys, cap;
    size_t *idx; /* NULL, or slots: keys' index + 1, 0 free, SIZE_MAX
                    deleted */
    size_t idx_size, idx_used;
    struct scan_key fixed[SCAN_KEYS];
    struct scan_pick picks[SCAN_PICKS];
    size_t npicks;
};

/* A key's decoded bytes hashed 8 at a time (keys are only hashed to
 * find repeats: equal hashes are compared in full). */
struct key_hash {
    uint64_t h, word;
    size_t n;
};

/* Drawn once per process: the bodies are the publisher's clients', and
 * keys crafted to share an unseeded hash would make finding repeats
 * quadratic (jansson seeds its hash tables for the same reason). */
static uint64_t hash_seed;
static pthread_once_t hash_seed_once = PTHREAD_ONCE_INIT;

static void hash_seed_draw(void)
{
    if (getrandom(&hash_seed, sizeof(hash_seed), GRND_NONBLOCK) !=
        (ssize_t)sizeof(hash_seed)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        hash_seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
                    ((uint64_t)getpid() << 40);
    }
}

static void hash_word(struct key_hash *kh)
{
    kh->h = (kh->h ^ kh->word) * 0x9E3779B97F4A7C15u;
    kh->h ^= kh->h >> 29;
    kh->word = 0;
}

static void hash_byte(struct key_hash *kh, unsigned char c)
{
    kh->word |= (uint64_t)c << (8 * (kh->n & 7));
    if ((++kh->n & 7) == 0) {
        hash_word(kh);
    }
}

static uint32_t hash_end(struct key_hash *kh)
{
    if ((kh->n & 7) != 0) {
        hash_word(kh);
    }
    kh->word = kh->n;
    hash_word(kh);
    return (uint32_t)(kh->h >> 32);
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The code unit of the 4 hex digits at p[0, 4), or -1. */
static long hex4(const unsigned char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_value(p[i]);
        if (d < 0) {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

static size_t utf8_put(unsigned long cp, unsigned char *o)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the escape at p (its backslash) of a string already checked:
 * writes its bytes to o and returns the bytes of source it took. */
static size_t unescape(const unsigned char *p, unsigned char *o, size_t *n)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    unsigned long cp;

    if (p[1] != 'u') {
        o[0] = (unsigned char)to[strchr(from, p[1]) - from];
        *n = 1;
        return 2;
    }
    cp = (unsigned long)hex4(p + 2);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        cp = 0x10000 + ((cp - 0xD800) << 10) +
             ((unsigned long)hex4(p + 8) - 0xDC00);
        *n = utf8_put(cp, o);
        return 12;
    }
    *n = utf8_put(cp, o);
    return 6;
}

/* Reads a checked string's decoded bytes one by one. */
struct scan_dec {
    const unsigned char *p; /* the next byte of source */
    unsigned char buf[4];
    size_t n, i;
};

/* The next decoded byte, or -1 at the closing quote. */
static int dec_next(struct scan_dec *d)
{
    if (d->i < d->n) {
        return d->buf[d->i++];
    }
    if (*d->p == '"') {
        return -1;
    }
    if (*d->p != '\\') {
        return *d->p++;
    }
    d->p += unescape(d->p, d->buf, &d->n);
    d->i = 1;
    return d->buf[0];
}

/* Whether the checked strings at a and b (after their quotes) decode to
 * the same bytes. */
static int str_eq(const unsigned char *a, const unsigned char *b)
{
    struct scan_dec da = {.p = a}, db = {.p = b};
    int ca, cb;

    do {
        ca = dec_next(&da);
        cb = dec_next(&db);
    } while (ca == cb && ca >= 0);
    return ca == cb;
}

/* Whether the checked string at a (after its quote) decodes to b[0, n). */
static int str_eq_bytes(const unsigned char *a, const char *b, size_t n)
{
    struct scan_dec d = {.p = a};
    int c;

    for (size_t i = 0; i < n; i++) {
        if (dec_next(&d) != (unsigned char)b[i]) {
            return 0;
        }
    }
    c = dec_next(&d);
    return c < 0;
}

/* Checks the string at sc->p (just past its opening quote) and moves
 * past its closing quote: its decoded length into *len, whether its
 * source holds an escape into *escaped. -1: not JSON. */
static int scan_string(struct scan *sc, size_t *len, int *escaped)
{
    const unsigned char *p = sc->p, *end = sc->end;
    size_t n = 0;
    unsigned char tmp[4];

    *escaped = 0;
    for (;;) {
        const unsigned char *from = p;
        size_t k;
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' &&
               *p != '\\') {
            p++;
        }
        n += (size_t)(p - from);
        if (p == end || *p < 0x20) {
            return -1;
        }
        if (*p == '"') {
            break;
        }
        if (*p >= 0x80) {
            k = utf8_decode(p, (size_t)(end - p), NULL);
            if (k == 0) {
                return -1;
            }
            p += k;
        } else { /* a backslash */
            *escaped = 1;
            if (end - p < 2 || strchr("\"\\/bfnrtu", p[1]) == NULL ||
                p[1] == '\0') {
                return -1;
            }
            if (p[1] == 'u') {
                long cp = end - p >= 6 ? hex4(p + 2) : -1;
                if (cp <= 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) {
                    return -1; /* no hex, \u0000 or a lone low half */
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    long lo = end - p >= 12 && p[6] == '\\' && p[7] == 'u'
                                  ? hex4(p + 8)
                                  : -1;
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        return -1;
                    }
                }
            }
            p += unescape(p, tmp, &k);
        }
        n += k;
    }
    sc->p = p + 1;
    *len = n;
    return 0;
}

/* Whether the checked real s[0, e) overflows a double, as strtod rounds
 * it: compares its digits with real_limit once it is scaled alike. */
static int real_overflows(const unsigned char *s, const unsigned char *e)
{
    const long long big = 1000000000000000LL; /* beyond any body */
    const unsigned char *p = s + (*s == '-'), *first = NULL;
    long long exp = 0, at = 0, i;
    int neg = 0;

    /* at: the power of ten of the first nonzero digit, before exp. */
    for (; p < e && *p >= '0' && *p <= '9'; p++) {
        if (first == NULL && *p != '0') {
            first = p;
        }
    }
    if (first != NULL) {
        at = (long long)(p - first) - 1;
    }
    if (p < e && *p == '.') {
        const unsigned char *fp = ++p;
        for (; p < e && *p >= '0' && *p <= '9'; p++) {
            if (first == NULL && *p != '0') {
                first = p;
                at = -(long long)(p - fp) - 1;
            }
        }
    }
    if (p < e) { /* e or E */
        p++;
        if (*p == '+' || *p == '-') {
            neg = *p++ == '-';
        }
        for (; p < e; p++) {
            exp = exp < big ? exp * 10 + (*p - '0') : big;
        }
    }
    if (first == NULL) {
        return 0; /* zero */
    }
    if (at > big) {
        at = big;
    }
    at += neg ? -exp : exp;
    if (at != 308) {
        return at > 308;
    }
    p = first;
    for (i = 0; real_limit[i] != '\0'; i++) {
        int d = '0';
        while (p < e && *p == '.') {
            p++;
        }
        if (p < e && *p >= '0' && *p <= '9') {
            d = *p++;
        }
        if (d != real_limit[i]) {
            return d > real_limit[i];
        }
    }
    return 1; /* equal to the limit or past it: rounds to infinity */
}

/* Checks the number at sc->p and moves past it: 1 an integer (fits
 * json_int_t), 2 a real, -1 not JSON (jansson's lex_scan_number). */
static int scan_number(struct scan *sc)
{
    const unsigned char *s = sc->p, *p, *ds;
    const char *why;
    int real;

    if ((p = jsonnum_end(sc->p, sc->end, &real, &ds, &why)) == NULL) {
        return -1;
    }
    sc->p = p;
    if (real) {
        return real_overflows(s, p) ? -1 : 2;
    } else {
        /* strtoll's range: 19 digits at most, then by value. */
        size_t n = (size_t)(p - ds);
        const char *max = *s == '-' ? "9223372036854775808"
                                    : "9223372036854775807";
        if (n > 19 || (n == 19 && memcmp(ds, max, 19) > 0)) {
            return -1;
        }
    }
    return 1;
}

/* Past whitespace from p. */
static const unsigned char *past_ws(const unsigned char *p,
                                    const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
    }
    return p;
}

/* The hash of the checked string at a (after its quote); raw is the
 * length of its source when it holds no escape, else SIZE_MAX. */
static uint32_t str_hash(const unsigned char *a, size_t raw)
{
    struct key_hash kh = {0, 0, 0};
    struct scan_dec d = {.p = a};

    pthread_once(&hash_seed_once, hash_seed_draw);
    kh.h = hash_seed;
    int c;

    if (raw != SIZE_MAX) { /* the bytes are the source: words at once */
        for (; kh.n + 8 <= raw; kh.n += 8) {
            uint64_t w;
            memcpy(&w, a + kh.n, 8);
            kh.word = le64toh(w); /* as hash_byte packs an escaped key's */
            hash_word(&kh);
        }
        for (size_t i = kh.n; i < raw; i++) {
            hash_byte(&kh, a[i]);
        }
        return hash_end(&kh);
    }
    while ((c = dec_next(&d)) >= 0) {
        hash_byte(&kh, (unsigned char)c);
    }
    return hash_end(&kh);
}

/* The value about to be read is the one pick sp walks to: decides what
 * follows from its kind (the first byte) before it is read. */
static void pick_at(struct scan_pick *sp, unsigned char kind, size_t depth)
{
    struct keysrc_json_pick *p = sp->p;
    size_t n;

    sp->state = PICK_DONE;
    if (*sp->rest == '\0') {
        /* The field itself: strings and integers wait for their bytes. */
        if (kind == '"' || kind == '-' || (kind >= '0' && kind <= '9')) {
            sp->state = PICK_FIELD;
        } else {
            p->miss = KEYSRC_TYPE;
        }
        return;
    }
    n = strcspn(sp->rest, ".");
    if (n >= SCAN_NAME) {
        p->miss = KEYSRC_ABSENT;
    } else if (kind != '{') {
        p->miss = KEYSRC_NOT_FOUND;
    } else {
        sp->state = PICK_SEARCH;
        sp->depth = depth + 1;
        sp->name = sp->rest;
        sp->len = n;
        sp->rest += n + (sp->rest[n] == '.');
    }
}

/* A pick's field is the string at s (after its quote), of len decoded
 * bytes. */
static void pick_string(struct scan_pick *sp, const unsigned char *s,
                        size_t len)
{
    struct keysrc_json_pick *p = sp->p;
    struct scan_dec d = {.p = s};

    sp->state = PICK_DONE;
    if (len == 0) {
        p->miss = KEYSRC_EMPTY;
    } else if (len >= p->cap) {
        p->miss = KEYSRC_TOO_LONG;
    } else {
        for (size_t i = 0; i < len; i++) {
            p->out[i] = (char)dec_next(&d);
        }
        p->out[len] = '\0';
        p->key = p->out;
        p->miss = KEYSRC_OK;
    }
}

/* A pick's field is the integer s[0, len): its decimal text, as
 * printf gives it ("-0" is 0). */
static void pick_integer(struct scan_pick *sp, const unsigned char *s,
                         size_t len)
{
    struct keysrc_json_pick *p = sp->p;

    sp->state = PICK_DONE;
    if (len == 2 && s[0] == '-' && s[1] == '0') {
        s++, len--;
    }
    if (len >= p->cap) {
        p->miss = KEYSRC_TOO_LONG;
    } else {
        memcpy(p->out, s, len);
        p->out[len] = '\0';
        p->key = p->out;
        p->miss = KEYSRC_OK;
    }
}

static size_t idx_slot(const struct scan *sc, uint32_t hash, size_t depth)
{
    uint64_t h = (hash ^ ((uint64_t)depth << 32)) * 0x9E3779B97F4A7C15u;
    return (size_t)(h ^ (h >> 29)) & (sc->idx_size - 1);
}

static void idx_put(struct scan *sc, size_t i)
{
    size_t s = idx_slot(sc, sc->keys[i].hash, sc->keys[i].depth);

    while (sc->idx[s] != 0) {
        s = (s + 1) & (sc->idx_size - 1);
    }
    sc->idx[s] = i + 1;
    sc->idx_used++;
}

/* (Re)builds the index over keys[0, nkeys), at most a quarter full
 * with room for cap keys. -1: out of memory (where jansson fails too). */
static int idx_build(struct scan *sc)
{
    size_t size = 2 * SCAN_KEYS;

    while (size < 4 * sc->cap) {
        size *= 2;
    }
    free(sc->idx);
    sc->idx = calloc(size, sizeof(*sc->idx));
    if (sc->idx == NULL) {
        return -1;
    }
    sc->idx_size = size;
    sc->idx_used = 0;
    for (size_t i = 0; i < sc->nkeys; i++) {
        idx_put(sc, i);
    }
    return 0;
}

/* Room for one more key. -1: out of memory. */
static int keys_grow(struct scan *sc)
{
    if (sc->nkeys == sc->cap) {
        struct scan_key *k;
        if (sc->cap > SIZE_MAX / 2 / sizeof(*k)) {
            return -1;
        }
        k = malloc(2 * sc->cap * sizeof(*k));
        if (k == NULL) {
            return -1;
        }
        memcpy(k, sc->keys, sc->nkeys * sizeof(*k));
        if (sc->keys != sc->fixed) {
            free(sc->keys);
        }
        sc->keys = k;
        sc->cap *= 2;
        return idx_build(sc);
    }
    if (sc->idx != NULL && sc->idx_used + 1 > sc->idx_size / 2) {
        return idx_build(sc); /* too many deleted slots */
    }
    return 0;
}

/* Forgets the keys of the object at the top, which closes. */
static void keys_pop(struct scan *sc)
{
    size_t base = sc->base[sc->depth];

    for (size_t i = base; sc->idx != NULL && i < sc->nkeys; i++) {
        size_t s = idx_slot(sc, sc->keys[i].hash, sc->keys[i].depth);
        while (sc->idx[s] != i + 1) {
            s = (s + 1) & (sc->idx_size - 1);
        }
        sc->idx[s] = SIZE_MAX;
    }
    sc->nkeys = base;
}

/* Reads an object's key at sc->p (its quote): checks it is new to the
 * object, and moves the picks that look for it to its value. */
static int scan_key(struct scan *sc)
{
    const unsigned char *k = sc->p + 1;
    uint32_t h;
    size_t len;
    int escaped;

    sc->p++;
    if (scan_string(sc, &len, &escaped) < 0) {
        return -1;
    }
    h = str_hash(k, escaped ? SIZE_MAX : len);
    if (sc->idx == NULL) {
        for (size_t i = sc->base[sc->depth]; i < sc->nkeys; i++) {
            if (sc->keys[i].hash == h &&
                str_eq(sc->s + sc->keys[i].off, k)) {
                return -1;
            }
        }
    } else {
        for (size_t s = idx_slot(sc, h, sc->depth); sc->idx[s] != 0;
             s = (s + 1) & (sc->idx_size - 1)) {
            const struct scan_key *e;
            if (sc->idx[s] == SIZE_MAX) {
                continue; /* deleted */
            }
            e = &sc->keys[sc->idx[s] - 1];
            if (e->hash == h && e->depth == sc->depth &&
                str_eq(sc->s + e->off, k)) {
                return -1;
            }
        }
    }
    if (keys_grow(sc) < 0) {
        return -1;
    }
    sc->keys[sc->nkeys] = (struct scan_key){
        .hash = h, .depth = (uint16_t)sc->depth, .off = (size_t)(k - sc->s)};
    if (sc->idx != NULL) {
        idx_put(sc, sc->nkeys);
    }
    sc->nkeys++;
    for (size_t i = 0; i < sc->npicks; i++) {
        struct scan_pick *sp = &sc->picks[i];
        if (sp->state == PICK_SEARCH && sp->depth == sc->depth &&
            sp->len == len &&
            (escaped ? str_eq_bytes(k, sp->name, len)
                     : memcmp(k, sp->name, len) == 0)) {
            sp->state = PICK_NEXT; /* its value */
        }
    }
    return 0;
}

/* Reads the value sc->s[0, sc->end) once, moving sc->picks on the way;
 * -1 when it is not JSON (as jansson would say). */
static int scan_value(struct scan *sc)
{
    const unsigned char *v;
    int kind;

    sc->p = past_ws(sc->p, sc->end);
    if (sc->p == sc->end || (*sc->p != '{' && *sc->p != '[')) {
        return -1;
    }
    sc->depth = 0;
value: /* a value at sc->p (past whitespace), at depth sc->depth + 1 */
    if (sc->p == sc->end || sc->depth >= SCAN_DEPTH) {
        return -1;
    }
    kind = *sc->p;
    for (size_t i = 0; i < sc->npicks; i++) {
        if (sc->picks[i].state == PICK_NEXT) {
            pick_at(&sc->picks[i], (unsigned char)kind, sc->depth);
        }
    }
    v = sc->p;
    if (kind == '{' || kind == '[') {
        sc->depth++;
        sc->base[sc->depth] = sc->nkeys;
        sc->object[sc->depth] = kind == '{';
        sc->p = past_ws(sc->p + 1, sc->end);
        if (sc->p < sc->end && *sc->p == (kind == '{' ? '}' : ']')) {
            sc->p++;
            goto close;
        }
        if (kind == '[') {
            goto value;
        }
        goto key;
    }
    if (kind == '"') {
        size_t len;
        int escaped;
        sc->p++;
        if (scan_string(sc, &len, &escaped) < 0) {
            return -1;
        }
        for (size_t i = 0; i < sc->npicks; i++) {
            if (sc->picks[i].state == PICK_FIELD) {
                pick_string(&sc->picks[i], v + 1, len);
            }
        }
        goto next;
    } else if (kind == '-' || (kind >= '0' && kind <= '9')) {
        int num = scan_number(sc);
        if (num < 0) {
            return -1;
        }
        for (size_t i = 0; i < sc->npicks; i++) {
            if (sc->picks[i].state != PICK_FIELD) {
                continue;
            }
            if (num == 1) {
                pick_integer(&sc->picks[i], v, (size_t)(sc->p - v));
            } else {
                sc->picks[i].state = PICK_DONE;
                sc->picks[i].p->miss = KEYSRC_TYPE;
            }
        }
    } else {
        static const char *const words[] = {"true", "false", "null"};
        size_t i = 0, n;
        while (i < 3 && words[i][0] != kind) {
            i++;
        }
        if (i == 3) {
            return -1;
        }
        n = strlen(words[i]);
        if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, words[i], n)) {
            return -1;
        }
        sc->p += n;
    }
    /* jansson reads one byte past a number or a literal and puts it back;
     * a NUL byte put back reads as an empty buffer, and the byte after it
     * comes next: one NUL there is skipped. */
    if (sc->p < sc->end && *sc->p == '\0') {
        sc->p++;
    }
    goto next;

key: /* an object's key at sc->p (past whitespace) */
    if (sc->p == sc->end || *sc->p != '"' || scan_key(sc) < 0) {
        return -1;
    }
    sc->p = past_ws(sc->p, sc->end);
    if (sc->p == sc->end || *sc->p != ':') {
        return -1;
    }
    sc->p = past_ws(sc->p + 1, sc->end);
    goto value;

next: /* a value read: what follows it */
    sc->p = past_ws(sc->p, sc->end);
    if (sc->depth == 0) {
        return sc->p == sc->end ? 0 : -1;
    }
    if (sc->p == sc->end) {
        return -1;
    }
    if (*sc->p == ',') {
        sc->p = past_ws(sc->p + 1, sc->end);
        if (sc->object[sc->depth]) {
            goto key;
        }
        goto value;
    }
    if (*sc->p != (sc->object[sc->depth] ? '}' : ']')) {
        return -1;
    }
    sc->p++;

close: /* the container at sc->depth has just closed */
    if (sc->object[sc->depth]) {
        for (size_t i = 0; i < sc->npicks; i++) {
            if (sc->picks[i].state == PICK_SEARCH &&
                sc->picks[i].depth == sc->depth) {
                sc->picks[i].state = PICK_DONE;
                sc->picks[i].p->miss = KEYSRC_ABSENT;
            }
        }
        keys_pop(sc);
    }
    sc->depth--;
    goto next;
}

void keysrc_pick_json(const void *value, size_t value_len,
                      struct keysrc_json_pick *picks, size_t n)
{
    struct scan sc;

    /* A few picks per pass (callers have one or two): their state lives
     * on the stack. */
    for (size_t i = 0; i < n || i == 0; i += SCAN_PICKS) {
        size_t m = n - i < SCAN_PICKS ? n - i : SCAN_PICKS;
        int rc = -1;

        sc.npicks = 0;
        for (size_t j = i; j < i + m; j++) {
            struct keysrc_json_pick *p = &picks[j];
            p->key = NULL;
            p->miss = KEYSRC_TOO_LONG;
            if (p->cap > 0) {
                sc.picks[sc.npicks++] = (struct scan_pick){
                    .state = PICK_NEXT, .rest = p->path, .p = p};
            }
        }
        if (value != NULL && value_len > 0) {
            sc.s = value;
            sc.p = sc.s;
            sc.end = sc.s + value_len;
            sc.keys = sc.fixed;
            sc.nkeys = 0;
            sc.cap = SCAN_KEYS;
            sc.idx = NULL;
            rc = scan_value(&sc);
            if (sc.keys != sc.fixed) {
                free(sc.keys);
            }
            free(sc.idx);
        }
        for (size_t j = i; j < i + m; j++) {
            if (rc < 0) {
                picks[j].key = NULL;
                picks[j].miss = KEYSRC_NOT_JSON;
            }
        }
        if (n == 0) {
            break;
        }
    }
}

const char *keysrc_pick(int from, const char *arg, const void *header,
                        size_t header_len, const void *value,
                        size_t value_len, char *out, size_t cap, int *miss)
{
    int scratch;
    const char *key = NULL;

    if (miss == NULL) {
        miss = &scratch;
    }
    *miss = KEYSRC_ABSENT;
    if (cap == 0) {
        *miss = KEYSRC_TOO_LONG;
        return NULL;
    }
    switch (from) {
    case KEYSRC_HEADER:
        key = usable_key(header, header_len, out, cap, miss);
        break;
    case KEYSRC_JSON: {
        struct keysrc_json_pick p = {.path = arg, .out = out, .cap = cap};
        keysrc_pick_json(value, value_len, &p, 1);
        key = p.key;
        *miss = p.miss;
        break;
    }
    default:
        break;
    }
    if (key != NULL) {
        *miss = KEYSRC_OK;
    }
    return key;
}

const char *keysrc_miss_str(int from, int miss)
{
    switch (miss) {
    case KEYSRC_OK:
        return "ok";
    case KEYSRC_ABSENT:
        return from == KEYSRC_HEADER ? "no such header" : "field missing";
    case KEYSRC_NOT_JSON:
        return "the body is not JSON";
    case KEYSRC_NOT_FOUND:
        return "field missing (the path crosses a value that is not an "
               "object)";
    case KEYSRC_TYPE:
        return "not a string or integer";
    case KEYSRC_EMPTY:
        return "empty";
    case KEYSRC_TOO_LONG:
        return "too long";
    case KEYSRC_NUL:
        return "holds a NUL byte";
    default:
        return "unusable";
    }
}
