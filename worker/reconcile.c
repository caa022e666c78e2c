/* reconcile.c -- `sluice reconcile [options] LEFT RIGHT`: which effects of
 * two outcome logs (docs/outcomes.md) differ, per sink and per UTC day.
 *
 * Each side (a file, or a Kafka topic spooled into an unlinked temp file,
 * one record value a line) is read on its own thread into a table of
 * fixed-size entries keyed by a 128-bit hash of (sink, key): the first
 * effect's digests, its day, sink and file offset. No line is kept; the
 * few lines an example needs are read again with pread. Then the left
 * table is walked in file order against the right one, and the right's
 * entries nobody matched are walked after it, so examples come out in
 * file order. Invariants: an entry is an effect (delivered, applied,
 * shadow) or, when its side has no effect for the pair, a dead-lettered
 * line; a later effect replaces a dead-lettered entry, later effects only
 * count as duplicates. */
#include "reconcile.h"
#include "jsonnum.h"
#include "utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dlqcmd.h"
#include "log.h"

enum { EXIT_OK = 0, EXIT_DIFF = 1, EXIT_USAGE = 2 };

/* How long the Kafka reader waits for a broker answer or a record. */
#define KAFKA_TIMEOUT_MS 10000
/* Distinct sinks per side (their index is 16 bits in an entry). */
#define MAX_SINKS 65535
/* Shown characters of a value in an example (then "..."). */
#define VALUE_MAX 80
#define DETAIL_MAX 512
#define READ_CHUNK (1u << 20)

/* ---- hashing: MurmurHash3 x64 128 (public domain, Austin Appleby) ---- */

static uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

static void hash128(const void *data, size_t len, uint64_t seed,
                    uint64_t out[2])
{
    const unsigned char *p = data;
    const size_t nblocks = len / 16;
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    uint64_t h1 = seed, h2 = seed, k1, k2;

    for (size_t i = 0; i < nblocks; i++) {
        memcpy(&k1, p + i * 16, 8);
        memcpy(&k2, p + i * 16 + 8, 8);
        k1 *= c1;
        k1 = rotl64(k1, 31);
        k1 *= c2;
        h1 ^= k1;
        h1 = rotl64(h1, 27);
        h1 += h2;
        h1 = h1 * 5 + 0x52dce729;
        k2 *= c2;
        k2 = rotl64(k2, 33);
        k2 *= c1;
        h2 ^= k2;
        h2 = rotl64(h2, 31);
        h2 += h1;
        h2 = h2 * 5 + 0x38495ab5;
    }
    const unsigned char *tail = p + nblocks * 16;
    k1 = k2 = 0;
    switch (len & 15) {
    case 15: k2 ^= (uint64_t)tail[14] << 48; /* fall through */
    case 14: k2 ^= (uint64_t)tail[13] << 40; /* fall through */
    case 13: k2 ^= (uint64_t)tail[12] << 32; /* fall through */
    case 12: k2 ^= (uint64_t)tail[11] << 24; /* fall through */
    case 11: k2 ^= (uint64_t)tail[10] << 16; /* fall through */
    case 10: k2 ^= (uint64_t)tail[9] << 8;   /* fall through */
    case 9:
        k2 ^= (uint64_t)tail[8];
        k2 *= c2;
        k2 = rotl64(k2, 33);
        k2 *= c1;
        h2 ^= k2;
        /* fall through */
    case 8: k1 ^= (uint64_t)tail[7] << 56; /* fall through */
    case 7: k1 ^= (uint64_t)tail[6] << 48; /* fall through */
    case 6: k1 ^= (uint64_t)tail[5] << 40; /* fall through */
    case 5: k1 ^= (uint64_t)tail[4] << 32; /* fall through */
    case 4: k1 ^= (uint64_t)tail[3] << 24; /* fall through */
    case 3: k1 ^= (uint64_t)tail[2] << 16; /* fall through */
    case 2: k1 ^= (uint64_t)tail[1] << 8;  /* fall through */
    case 1:
        k1 ^= (uint64_t)tail[0];
        k1 *= c1;
        k1 = rotl64(k1, 31);
        k1 *= c2;
        h1 ^= k1;
        break;
    default:
        break;
    }
    h1 ^= (uint64_t)len;
    h2 ^= (uint64_t)len;
    h1 += h2;
    h2 += h1;
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 += h2;
    h2 += h1;
    out[0] = h1;
    out[1] = h2;
}

/* ---- days ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    /* Howard Hinnant's algorithm: proleptic Gregorian. */
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)((int64_t)yoe + era * 400 + (*m <= 2));
}

/* n digits at s as a number, or -1. */
static int digits(const char *s, size_t n)
{
    int v = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int reconcile_parse_day(const char *s, size_t n, int32_t *day)
{
    static const unsigned char mdays[] = {31, 29, 31, 30, 31, 30,
                                          31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, off = 0;
    size_t i;

    if (s == NULL || n < 20 || s[4] != '-' || s[7] != '-' ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' ||
        s[16] != ':') {
        return -1;
    }
    y = digits(s, 4);
    mo = digits(s + 5, 2);
    d = digits(s + 8, 2);
    h = digits(s + 11, 2);
    mi = digits(s + 14, 2);
    sec = digits(s + 17, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
        (mo == 2 && d == 29 &&
         !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) ||
        h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60) {
        return -1;
    }
    i = 19;
    if (i < n && s[i] == '.') {
        size_t f = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        if (i == f) {
            return -1;
        }
    }
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') &&
               s[i + 3] == ':') {
        int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59) {
            return -1;
        }
        off = (oh * 60 + om) * 60 * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return -1;
    }
    if (i != n) {
        return -1;
    }
    /* A leap second belongs to the day it ends. */
    int64_t secs = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 +
                   h * 3600 + mi * 60 + (sec > 59 ? 59 : sec) - off;
    int64_t z = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    *day = (int32_t)z;
    return 0;
}

char *reconcile_format_day(char *out, size_t cap, int32_t day)
{
    int y;
    unsigned m, d;

    civil_from_days(day, &y, &m, &d);
    snprintf(out, cap, "%04d-%02u-%02u", y, m, d);
    return out;
}

/* ---- bodies ---- */

struct buf {
    char *p;
    size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t more)
{
    if (b->len + more <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) {
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(struct buf *b, const void *data, size_t n)
{
    if (n == 0) {
        return 0; /* data may be NULL */
    }
    if (buf_reserve(b, n) != 0) {
        return -1;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

/* An ignored field: the components of its dot path. */
struct path {
    char **comp;
    size_t n;
};

static void remove_path(json_t *json, const struct path *path)
{
    for (size_t i = 0; i + 1 < path->n; i++) {
        json = json_object_get(json, path->comp[i]);
    }
    if (json_is_object(json)) {
        json_object_del(json, path->comp[path->n - 1]);
    }
}

/* The canonical form of json appended to b. 0 or -1 (out of memory). */
static int canonical_add(struct buf *b, const json_t *json)
{
    const size_t flags = JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY;
    size_t room = b->cap - b->len, n;

    n = json_dumpb(json, b->p != NULL ? b->p + b->len : NULL,
                   b->p != NULL ? room : 0, flags);
    if (n == 0) {
        return -1;
    }
    if (n > room) {
        if (buf_reserve(b, n) != 0 ||
            json_dumpb(json, b->p + b->len, n, flags) != n) {
            return -1;
        }
    }
    b->len += n;
    return 0;
}

static int split_paths(const char *const *ignore, size_t n,
                       struct path **out, struct sl_error *err)
{
    struct path *paths = calloc(n + 1, sizeof(*paths));

    *out = paths;
    if (paths == NULL) {
        return sl_error_set(err, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = ignore[i];
        size_t parts = 1;
        for (const char *q = s; *q != '\0'; q++) {
            parts += *q == '.';
        }
        paths[i].comp = calloc(parts, sizeof(char *));
        if (paths[i].comp == NULL) {
            return sl_error_set(err, "out of memory");
        }
        for (;;) {
            const char *dot = strchr(s, '.');
            size_t len = dot != NULL ? (size_t)(dot - s) : strlen(s);
            if (len == 0) {
                return sl_error_set(err,
                                    "--ignore-field `%s`: an empty "
                                    "component (write a.b.c)",
                                    ignore[i]);
            }
            paths[i].comp[paths[i].n] = strndup(s, len);
            if (paths[i].comp[paths[i].n++] == NULL) {
                return sl_error_set(err, "out of memory");
            }
            if (dot == NULL) {
                break;
            }
            s = dot + 1;
        }
    }
    return 0;
}

static void free_paths(struct path *paths, size_t n)
{
    if (paths == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < paths[i].n; k++) {
            free(paths[i].comp[k]);
        }
        free(paths[i].comp);
    }
    free(paths);
}

char *reconcile_canonical(json_t *json, const char *const *ignore,
                          size_t ignore_count)
{
    struct path *paths = NULL;
    struct buf b = {0};
    char *out = NULL;

    if (split_paths(ignore, ignore_count, &paths, NULL) == 0) {
        for (size_t i = 0; i < ignore_count; i++) {
            remove_path(json, &paths[i]);
        }
        if (canonical_add(&b, json) == 0 && buf_add(&b, "", 1) == 0) {
            out = b.p;
            b.p = NULL;
        }
    }
    free(b.p);
    free_paths(paths, ignore_count);
    return out;
}

/* Appends at most max bytes of s (n bytes) to out (cap, NUL-terminated),
 * control bytes as '?', cut at a UTF-8 boundary and then ending in
 * "...". */
static void append_shown(char *out, size_t cap, const char *s, size_t n,
                         size_t max)
{
    size_t o = strlen(out), i = 0;
    int cut = n > max;

    if (cut) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) {
            n--;
        }
    }
    for (; i < n && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        out[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (i < n || cut) {
        /* Never leave half a character before the "...". */
        while (o > 0 && ((unsigned char)out[o - 1] & 0xc0) == 0x80) {
            o--;
        }
        if (o > 0 && ((unsigned char)out[o - 1] & 0xc0) == 0xc0) {
            o--;
        }
        while (o + 4 > cap && o > 0) {
            o--;
        }
        if (o + 4 <= cap) {
            memcpy(out + o, "...", 3);
            o += 3;
        }
    }
    out[o] = '\0';
}

static void append_value(char *out, size_t cap, const json_t *v)
{
    char *text;

    if (v == NULL) {
        append_shown(out, cap, "(absent)", 8, VALUE_MAX);
        return;
    }
    text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (text == NULL) {
        append_shown(out, cap, "?", 1, VALUE_MAX);
        return;
    }
    append_shown(out, cap, text, strlen(text), VALUE_MAX);
    free(text);
}

static void report_diff(const char *path, const json_t *l, const json_t *r,
                        char *out, size_t cap)
{
    out[0] = '\0';
    append_shown(out, cap, path, strlen(path), cap);
    append_shown(out, cap, ": ", 2, 2);
    append_value(out, cap, l);
    append_shown(out, cap, " != ", 4, 4);
    append_value(out, cap, r);
}

struct key_ref {
    const char *k;
    size_t n;
};

static int key_order(const void *a, const void *b)
{
    const struct key_ref *x = a, *y = b;
    int c = memcmp(x->k, y->k, x->n < y->n ? x->n : y->n);

    return c != 0 ? c : (x->n > y->n) - (x->n < y->n);
}

static size_t path_push(char *path, size_t len, size_t cap, const char *s,
                        size_t n)
{
    path[len] = '\0';
    append_shown(path, cap, s, n, 64);
    return strlen(path);
}

static int diff_rec(const json_t *l, const json_t *r, char *path, size_t len,
                    size_t pcap, char *out, size_t cap)
{
    path[len] = '\0';
    if (json_typeof(l) != json_typeof(r)) {
        report_diff(path, l, r, out, cap);
        return 1;
    }
    if (json_is_object(l)) {
        size_t n = json_object_size(l) + json_object_size(r), k = 0;
        struct key_ref *keys = malloc((n + 1) * sizeof(*keys));
        const char *key;
        size_t klen;
        json_t *v;
        int found = 0;
        if (keys == NULL) {
            report_diff(path, l, r, out, cap);
            return 1;
        }
        json_object_keylen_foreach((json_t *)l, key, klen, v)
        {
            keys[k++] = (struct key_ref){key, klen};
        }
        json_object_keylen_foreach((json_t *)r, key, klen, v)
        {
            keys[k++] = (struct key_ref){key, klen};
        }
        qsort(keys, k, sizeof(*keys), key_order);
        for (size_t i = 0; i < k && !found; i++) {
            if (i > 0 && key_order(&keys[i], &keys[i - 1]) == 0) {
                continue;
            }
            const json_t *lv = json_object_getn(l, keys[i].k, keys[i].n);
            const json_t *rv = json_object_getn(r, keys[i].k, keys[i].n);
            size_t plen = path_push(path, len, pcap, ".", 1);
            plen = path_push(path, plen, pcap, keys[i].k, keys[i].n);
            if (lv == NULL || rv == NULL) {
                report_diff(path, lv, rv, out, cap);
                found = 1;
            } else {
                found = diff_rec(lv, rv, path, plen, pcap, out, cap);
            }
        }
        free(keys);
        path[len] = '\0';
        return found;
    }
    if (json_is_array(l)) {
        size_t nl = json_array_size(l), nr = json_array_size(r);
        for (size_t i = 0; i < nl || i < nr; i++) {
            char index[32];
            const json_t *lv = json_array_get(l, i);
            const json_t *rv = json_array_get(r, i);
            snprintf(index, sizeof(index), "[%zu]", i);
            size_t plen = path_push(path, len, pcap, index, strlen(index));
            int found = lv == NULL || rv == NULL;
            if (found) {
                report_diff(path, lv, rv, out, cap);
            } else {
                found = diff_rec(lv, rv, path, plen, pcap, out, cap);
            }
            if (found) {
                path[len] = '\0';
                return 1;
            }
        }
        return 0;
    }
    if (!json_equal(l, r)) {
        report_diff(path, l, r, out, cap);
        return 1;
    }
    return 0;
}

int reconcile_first_diff(const json_t *l, const json_t *r,
                         const char *prefix, char *out, size_t cap)
{
    char path[256];

    out[0] = '\0';
    path[0] = '\0';
    append_shown(path, sizeof(path), prefix, strlen(prefix), 64);
    if (l == NULL || r == NULL) {
        if (l == r) {
            return 0;
        }
        report_diff(path, l, r, out, cap);
        return 1;
    }
    return diff_rec(l, r, path, strlen(path), sizeof(path), out, cap);
}

/* ---- the line parser ----
 *
 * jansson builds a tree of every line (a malloc per value) and was 60% of
 * the time: lines are scanned here instead, in one pass that validates
 * the JSON as jansson would (UTF-8, escapes, surrogates, int64 integers,
 * finite reals, depth), decodes the envelope's string fields and writes
 * the body's canonical form straight into a buffer to hash: objects with
 * their members sorted by key (the last of duplicate keys kept, as
 * jansson keeps it) and ignored fields left out, integers as int64,
 * reals as "%.17g" of their double, strings decoded. That form is only
 * hashed; reconcile_canonical() gives the printable one. */

#define SCAN_MAX_DEPTH 2048
#define MAX_IGNORED 64

struct member {
    size_t key_off, key_len; /* in keys */
    size_t val_off, val_len; /* in out */
    size_t seq;
};

struct reconcile_parser {
    struct path *paths;
    size_t path_count;
    json_t *root;        /* the line of an example (jansson) */
    struct buf b;        /* what is hashed */
    struct buf body;     /* the body's canonical form */
    struct buf fields;   /* the envelope's decoded strings */
    struct buf keys;     /* decoded member keys */
    struct buf tmp;      /* members being reordered */
    struct member *m;    /* members of the open objects */
    size_t m_len, m_cap;
};

struct scan {
    reconcile_parser_t *p;
    const unsigned char *start, *at, *end;
    struct buf *out; /* NULL: validate only */
    const char *err;
    int depth;
    int nul; /* the last string held \u0000 */
};

reconcile_parser_t *reconcile_parser_new(const char *const *ignore,
                                         size_t ignore_count,
                                         struct sl_error *err)
{
    reconcile_parser_t *p;

    if (ignore_count > MAX_IGNORED) {
        sl_error_set(err, "more than %d --ignore-field", MAX_IGNORED);
        return NULL;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    p->path_count = ignore_count;
    if (split_paths(ignore, ignore_count, &p->paths, err) != 0) {
        reconcile_parser_destroy(p);
        return NULL;
    }
    return p;
}

void reconcile_parser_destroy(reconcile_parser_t *p)
{
    if (p == NULL) {
        return;
    }
    free_paths(p->paths, p->path_count);
    json_decref(p->root);
    free(p->b.p);
    free(p->body.p);
    free(p->fields.p);
    free(p->keys.p);
    free(p->tmp.p);
    free(p->m);
    free(p);
}

static int scan_fail(struct scan *s, const char *why)
{
    if (s->err == NULL) {
        s->err = why;
    }
    return -1;
}

static void skip_ws(struct scan *s)
{
    while (s->at < s->end && (*s->at == ' ' || *s->at == '\t' ||
                              *s->at == '\n' || *s->at == '\r')) {
        s->at++;
    }
}

static int emit(struct scan *s, const void *data, size_t n)
{
    if (s->out != NULL && buf_add(s->out, data, n) != 0) {
        return scan_fail(s, "out of memory");
    }
    return 0;
}

static int hex4(const unsigned char *h, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = h[i];
        *v <<= 4;
        if (c >= '0' && c <= '9') {
            *v |= c - '0';
        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            *v |= (c | 0x20) - 'a' + 10;
        } else {
            return -1;
        }
    }
    return 0;
}

/* The string at s->at (its opening quote) decoded into dst (NULL: only
 * validated). */
static int scan_string(struct scan *s, struct buf *dst)
{
    const unsigned char *p = s->at + 1, *end = s->end;

    for (;;) {
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' &&
               *p != '\\') {
            p++;
        }
        if (dst != NULL && p > run && buf_add(dst, run, (size_t)(p - run))) {
            return scan_fail(s, "out of memory");
        }
        if (p >= end) {
            s->at = p;
            return scan_fail(s, "unterminated string");
        }
        if (*p == '"') {
            s->at = p + 1;
            return 0;
        }
        if (*p < 0x20) {
            s->at = p;
            return scan_fail(s, "control character in a string");
        }
        if (*p >= 0x80) {
            size_t n = utf8_decode(p, (size_t)(end - p), NULL);
            if (n == 0) {
                s->at = p;
                return scan_fail(s, "invalid UTF-8");
            }
            if (dst != NULL && buf_add(dst, p, n) != 0) {
                return scan_fail(s, "out of memory");
            }
            p += n;
            continue;
        }
        /* A backslash. */
        unsigned char esc[4];
        size_t n = 1;
        uint32_t cp, lo;
        if (p + 1 >= end) {
            s->at = p;
            return scan_fail(s, "unterminated string");
        }
        switch (p[1]) {
        case '"': esc[0] = '"'; break;
        case '\\': esc[0] = '\\'; break;
        case '/': esc[0] = '/'; break;
        case 'b': esc[0] = '\b'; break;
        case 'f': esc[0] = '\f'; break;
        case 'n': esc[0] = '\n'; break;
        case 'r': esc[0] = '\r'; break;
        case 't': esc[0] = '\t'; break;
        case 'u':
            if (end - p < 6 || hex4(p + 2, &cp) != 0) {
                s->at = p;
                return scan_fail(s, "invalid \\u escape");
            }
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                s->at = p;
                return scan_fail(s, "invalid Unicode (a lone surrogate)");
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
                    hex4(p + 8, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff) {
                    s->at = p;
                    return scan_fail(s,
                                     "invalid Unicode (a lone surrogate)");
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            }
            s->nul |= cp == 0;
            if (cp < 0x80) {
                esc[0] = (unsigned char)cp;
            } else if (cp < 0x800) {
                esc[0] = (unsigned char)(0xc0 | cp >> 6);
                esc[1] = (unsigned char)(0x80 | (cp & 0x3f));
                n = 2;
            } else if (cp < 0x10000) {
                esc[0] = (unsigned char)(0xe0 | cp >> 12);
                esc[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
                esc[2] = (unsigned char)(0x80 | (cp & 0x3f));
                n = 3;
            } else {
                esc[0] = (unsigned char)(0xf0 | cp >> 18);
                esc[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
                esc[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
                esc[3] = (unsigned char)(0x80 | (cp & 0x3f));
                n = 4;
            }
            p += 4;
            break;
        default:
            s->at = p;
            return scan_fail(s, "invalid escape");
        }
        if (dst != NULL && buf_add(dst, esc, n) != 0) {
            return scan_fail(s, "out of memory");
        }
        p += 2;
    }
}

/* A number: "i" and the int64 in decimal, or "r" and "%.17g" of the
 * double, then ';'. *is_one is set when it is the integer 1. */
static int scan_number(struct scan *s, int *is_one)
{
    const unsigned char *p = s->at, *end = s->end, *begin = p, *digits;
    const char *why;
    int real;
    char text[64], out[40];

    if ((p = jsonnum_end(p, end, &real, &digits, &why)) == NULL) {
        return scan_fail(s, why);
    }
    size_t n = (size_t)(p - begin);
    s->at = p;
    if (is_one != NULL) {
        *is_one = !real && n == 1 && begin[0] == '1';
    }
    if (!real) {
        /* At most 19 digits and a sign fit; -0 is 0. */
        if (n >= sizeof(text) || n > 20) {
            return scan_fail(s, "too big integer");
        }
        memcpy(text, begin, n);
        text[n] = '\0';
        errno = 0;
        long long v = strtoll(text, NULL, 10);
        if (errno == ERANGE) {
            return scan_fail(s, "too big integer");
        }
        if (s->out == NULL) {
            return 0;
        }
        int len = snprintf(out, sizeof(out), "i%lld;", v);
        return emit(s, out, (size_t)len);
    }
    char *copy = n < sizeof(text) ? text : malloc(n + 1);
    if (copy == NULL) {
        return scan_fail(s, "out of memory");
    }
    memcpy(copy, begin, n);
    copy[n] = '\0';
    errno = 0;
    double d = strtod(copy, NULL);
    if (copy != text) {
        free(copy);
    }
    if (errno == ERANGE && (d > 1.0 || d < -1.0)) {
        return scan_fail(s, "real number overflow");
    }
    if (s->out == NULL) {
        return 0;
    }
    int len = snprintf(out, sizeof(out), "r%.17g;", d);
    return emit(s, out, (size_t)len);
}

static int scan_value(struct scan *s, uint64_t mask, size_t level);

static int member_order(const void *a, const void *b, void *arg)
{
    const struct member *x = a, *y = b;
    const char *keys = arg;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(keys + x->key_off, keys + y->key_off, n);

    if (c != 0) {
        return c;
    }
    if (x->key_len != y->key_len) {
        return x->key_len < y->key_len ? -1 : 1;
    }
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Which of mask's ignored paths go on below key at level (bits), and
 * whether one ends at it (*skip). */
static uint64_t paths_below(const reconcile_parser_t *p, uint64_t mask,
                            size_t level, const char *key, size_t n,
                            int *skip)
{
    uint64_t below = 0;

    *skip = 0;
    for (size_t i = 0; mask != 0 && i < p->path_count; i++) {
        const struct path *path = &p->paths[i];
        if (!(mask >> i & 1) || strlen(path->comp[level]) != n ||
            memcmp(path->comp[level], key, n) != 0) {
            continue;
        }
        if (level + 1 == path->n) {
            *skip = 1;
        } else {
            below |= (uint64_t)1 << i;
        }
    }
    return below;
}

/* Writes the members of the object that starts at out offset obj (after
 * its '{') in key order from p->m[base..]. */
static int reorder_members(struct scan *s, size_t obj, size_t base)
{
    reconcile_parser_t *p = s->p;
    /* No member read yet: p->m may still be NULL (no offset on NULL). */
    struct member *m = p->m != NULL ? p->m + base : NULL;
    size_t n = p->m_len - base, region = s->out->len - obj;

    if (n > 1) {
        qsort_r(m, n, sizeof(*m), member_order, p->keys.p);
    }
    p->tmp.len = 0;
    if (buf_add(&p->tmp, s->out->p + obj, region) != 0) {
        return scan_fail(s, "out of memory");
    }
    s->out->len = obj;
    for (size_t i = 0; i < n; i++) {
        uint32_t klen = (uint32_t)m[i].key_len;
        if (i + 1 < n && m[i + 1].key_len == m[i].key_len &&
            memcmp(p->keys.p + m[i + 1].key_off, p->keys.p + m[i].key_off,
                   m[i].key_len) == 0) {
            continue; /* the last of equal keys wins */
        }
        if (emit(s, "k", 1) || emit(s, &klen, sizeof(klen)) ||
            emit(s, p->keys.p + m[i].key_off, m[i].key_len) ||
            emit(s, p->tmp.p + (m[i].val_off - obj), m[i].val_len)) {
            return -1;
        }
    }
    return 0;
}

static int scan_object(struct scan *s, uint64_t mask, size_t level)
{
    reconcile_parser_t *p = s->p;
    size_t base = p->m_len, keys_base = p->keys.len, seq = 0, obj = 0;

    s->at++;
    if (emit(s, "{", 1) != 0) {
        return -1;
    }
    obj = s->out != NULL ? s->out->len : 0;
    skip_ws(s);
    if (s->at < s->end && *s->at == '}') {
        s->at++;
        return emit(s, "}", 1);
    }
    for (;;) {
        size_t koff = p->keys.len;
        uint64_t below = 0;
        int skip = 0;
        skip_ws(s);
        if (s->at >= s->end || *s->at != '"') {
            return scan_fail(s, "a string (an object key) expected");
        }
        s->nul = 0;
        if (scan_string(s, s->out != NULL ? &p->keys : NULL) != 0) {
            return -1;
        }
        if (s->nul) {
            return scan_fail(s, "NUL byte in object key not supported");
        }
        skip_ws(s);
        if (s->at >= s->end || *s->at != ':') {
            return scan_fail(s, "':' expected");
        }
        s->at++;
        if (s->out != NULL && mask != 0) {
            below = paths_below(p, mask, level, p->keys.p + koff,
                                p->keys.len - koff, &skip);
        }
        if (s->out == NULL || skip) {
            struct buf *out = s->out;
            s->out = NULL;
            int rc = scan_value(s, 0, level + 1);
            s->out = out;
            if (rc != 0) {
                return -1;
            }
            p->keys.len = koff;
        } else {
            size_t voff = s->out->len;
            if (scan_value(s, below, level + 1) != 0) {
                return -1;
            }
            if (p->m_len == p->m_cap) {
                size_t cap = p->m_cap ? p->m_cap * 2 : 64;
                struct member *v = realloc(p->m, cap * sizeof(*v));
                if (v == NULL) {
                    return scan_fail(s, "out of memory");
                }
                p->m = v;
                p->m_cap = cap;
            }
            p->m[p->m_len++] = (struct member){
                koff, p->keys.len - koff, voff, s->out->len - voff, seq++};
        }
        skip_ws(s);
        if (s->at < s->end && *s->at == ',') {
            s->at++;
            continue;
        }
        if (s->at < s->end && *s->at == '}') {
            s->at++;
            break;
        }
        return scan_fail(s, "',' or '}' expected");
    }
    if (s->out != NULL && reorder_members(s, obj, base) != 0) {
        return -1;
    }
    p->m_len = base;
    p->keys.len = keys_base;
    return emit(s, "}", 1);
}

static int scan_literal(struct scan *s, const char *word, const char *code)
{
    size_t n = strlen(word);

    if ((size_t)(s->end - s->at) < n || memcmp(s->at, word, n) != 0) {
        return scan_fail(s, "invalid token");
    }
    s->at += n;
    return emit(s, code, 1);
}

static int scan_value(struct scan *s, uint64_t mask, size_t level)
{
    int rc;

    skip_ws(s);
    if (s->at >= s->end) {
        return scan_fail(s, "unexpected end of the line");
    }
    switch (*s->at) {
    case '{':
    case '[':
        if (++s->depth > SCAN_MAX_DEPTH) {
            return scan_fail(s, "too deeply nested");
        }
        if (*s->at == '{') {
            rc = scan_object(s, mask, level);
        } else {
            s->at++;
            rc = emit(s, "[", 1);
            skip_ws(s);
            if (rc == 0 && s->at < s->end && *s->at == ']') {
                s->at++;
            } else {
                while (rc == 0) {
                    rc = scan_value(s, 0, level + 1);
                    skip_ws(s);
                    if (rc != 0) {
                        break;
                    }
                    if (s->at < s->end && *s->at == ',') {
                        s->at++;
                        continue;
                    }
                    if (s->at < s->end && *s->at == ']') {
                        s->at++;
                        break;
                    }
                    rc = scan_fail(s, "',' or ']' expected");
                }
            }
            if (rc == 0) {
                rc = emit(s, "]", 1);
            }
        }
        s->depth--;
        return rc;
    case '"': {
        if (s->out == NULL) {
            return scan_string(s, NULL);
        }
        size_t at = s->out->len;
        uint32_t n = 0;
        if (emit(s, "s", 1) || emit(s, &n, sizeof(n)) ||
            scan_string(s, s->out) != 0) {
            return -1;
        }
        n = (uint32_t)(s->out->len - at - 1 - sizeof(n));
        memcpy(s->out->p + at + 1, &n, sizeof(n));
        return 0;
    }
    case 't':
        return scan_literal(s, "true", "t");
    case 'f':
        return scan_literal(s, "false", "f");
    case 'n':
        return scan_literal(s, "null", "n");
    default:
        return scan_number(s, NULL);
    }
}

/* The envelope's fields. */
enum {
    F_V, F_TS, F_SINK, F_KEY, F_OUTCOME, F_METHOD, F_PATH, F_SHA, F_ERROR,
    F_BODY, F_COUNT
};
static const char *const field_names[F_COUNT] = {
    "v", "ts", "sink", "key", "outcome", "method", "path", "body_sha256",
    "error", "body"};

enum { T_ABSENT, T_NULL, T_STRING, T_ONE, T_OTHER };

struct field {
    int type;
    size_t off, len; /* T_STRING: in p->fields */
};

static int scan_envelope(struct scan *s, struct field *f)
{
    reconcile_parser_t *p = s->p;
    uint64_t all = p->path_count == 64 ? UINT64_MAX
                                       : ((uint64_t)1 << p->path_count) - 1;

    s->at++;
    skip_ws(s);
    if (s->at < s->end && *s->at == '}') {
        s->at++;
        return 0;
    }
    for (;;) {
        int k;
        skip_ws(s);
        if (s->at >= s->end || *s->at != '"') {
            return scan_fail(s, "a string (an object key) expected");
        }
        p->keys.len = 0;
        s->nul = 0;
        if (scan_string(s, &p->keys) != 0) {
            return -1;
        }
        if (s->nul) {
            return scan_fail(s, "NUL byte in object key not supported");
        }
        for (k = 0; k < F_COUNT; k++) {
            if (strlen(field_names[k]) == p->keys.len &&
                memcmp(field_names[k], p->keys.p, p->keys.len) == 0) {
                break;
            }
        }
        skip_ws(s);
        if (s->at >= s->end || *s->at != ':') {
            return scan_fail(s, "':' expected");
        }
        s->at++;
        skip_ws(s);
        s->out = NULL;
        if (k == F_BODY) {
            s->out = &p->body;
            p->body.len = 0;
            f[k].type = T_OTHER;
            if (scan_value(s, all, 0) != 0) {
                return -1;
            }
            s->out = NULL;
        } else if (k < F_COUNT && s->at < s->end && *s->at == '"') {
            f[k].type = T_STRING;
            f[k].off = p->fields.len;
            if (scan_string(s, &p->fields) != 0) {
                return -1;
            }
            f[k].len = p->fields.len - f[k].off;
        } else if (k == F_V && s->at < s->end &&
                   (*s->at == '-' || (*s->at >= '0' && *s->at <= '9'))) {
            int one = 0;
            if (scan_number(s, &one) != 0) {
                return -1;
            }
            f[k].type = one ? T_ONE : T_OTHER;
        } else {
            if (k < F_COUNT) {
                f[k].type = s->at < s->end && *s->at == 'n' ? T_NULL
                                                            : T_OTHER;
            }
            if (scan_value(s, 0, 1) != 0) {
                return -1;
            }
        }
        skip_ws(s);
        if (s->at < s->end && *s->at == ',') {
            s->at++;
            continue;
        }
        if (s->at < s->end && *s->at == '}') {
            s->at++;
            return 0;
        }
        return scan_fail(s, "',' or '}' expected");
    }
}

static const struct {
    const char *name;
    enum reconcile_outcome outcome;
} outcomes[] = {
    {"delivered", RECONCILE_DELIVERED},
    {"applied", RECONCILE_APPLIED},
    {"shadow", RECONCILE_SHADOW},
    {"already_handled", RECONCILE_ALREADY_HANDLED},
    {"dead_lettered", RECONCILE_DEAD_LETTERED},
};

/* A string field of a jansson object: 1 (*s, *n set), 0 absent or null,
 * -1 another type. */
static int get_string(json_t *obj, const char *name, const char **s,
                      size_t *n)
{
    json_t *v = json_object_get(obj, name);

    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v)) {
        return -1;
    }
    *s = json_string_value(v);
    *n = json_string_length(v);
    return 1;
}

/* A required non-empty string: 0 with *s, *n, or -1. */
static int need_string(reconcile_parser_t *p, const struct field *f, int k,
                       const char **s, size_t *n, struct sl_error *err)
{
    if (f[k].type == T_ABSENT || f[k].type == T_NULL) {
        return sl_error_set(err, "missing field `%s`", field_names[k]);
    }
    if (f[k].type != T_STRING || f[k].len == 0) {
        return sl_error_set(err, "`%s` is not a non-empty string",
                            field_names[k]);
    }
    *s = p->fields.p + f[k].off;
    *n = f[k].len;
    return 0;
}

/* An optional string: 0 with *s (NULL when absent or null), or -1. */
static int opt_string(reconcile_parser_t *p, const struct field *f, int k,
                      const char **s, size_t *n, struct sl_error *err)
{
    *s = NULL;
    *n = 0;
    if (f[k].type == T_STRING) {
        *s = p->fields.p + f[k].off;
        *n = f[k].len;
    } else if (f[k].type != T_ABSENT && f[k].type != T_NULL) {
        return sl_error_set(err, "`%s` is not a string", field_names[k]);
    }
    return 0;
}

/* method and path into the hashed buffer: each a length then its bytes;
 * absent is a length no string has. */
static int add_request(struct buf *b, const char *m, size_t mn,
                       const char *path, size_t pn)
{
    uint64_t ml = m != NULL ? mn : UINT64_MAX, pl = path != NULL ? pn
                                                                 : UINT64_MAX;

    b->len = 0;
    return buf_add(b, &ml, sizeof(ml)) || buf_add(b, m, mn) ||
                   buf_add(b, &pl, sizeof(pl)) || buf_add(b, path, pn)
               ? -1
               : 0;
}

static int parse_effect(reconcile_parser_t *p, const struct field *f,
                        struct reconcile_line *out, struct sl_error *err)
{
    const char *method, *path, *sha;
    size_t mn, pn, sn;
    char lower[64];
    uint64_t h[2];

    if (opt_string(p, f, F_METHOD, &method, &mn, err) != 0 ||
        opt_string(p, f, F_PATH, &path, &pn, err) != 0) {
        return -1;
    }
    if (f[F_SHA].type == T_ABSENT || f[F_SHA].type == T_NULL) {
        return sl_error_set(err,
                            "missing field `body_sha256` (required for a "
                            "%s line)",
                            outcomes[out->outcome].name);
    }
    if (f[F_SHA].type != T_STRING || f[F_SHA].len != 64) {
        return sl_error_set(err, "`body_sha256` is not 64 hex digits");
    }
    sha = p->fields.p + f[F_SHA].off;
    sn = f[F_SHA].len;
    for (size_t i = 0; i < sn; i++) {
        char c = sha[i];
        if (c >= 'A' && c <= 'F') {
            c = (char)(c - 'A' + 'a');
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return sl_error_set(err, "`body_sha256` is not 64 hex digits");
        }
        lower[i] = c;
    }
    if (add_request(&p->b, method, mn, path, pn) != 0 ||
        buf_add(&p->b, lower, sizeof(lower)) != 0) {
        return sl_error_set(err, "out of memory");
    }
    hash128(p->b.p, p->b.len, 2, h);
    out->sha_digest = h[0];
    out->has_body = f[F_BODY].type != T_ABSENT;
    if (out->has_body) {
        p->b.len -= sizeof(lower);
        if (buf_add(&p->b, p->body.p, p->body.len) != 0) {
            return sl_error_set(err, "out of memory");
        }
        hash128(p->b.p, p->b.len, 3, out->digest);
    }
    return 0;
}

int reconcile_parse_line(reconcile_parser_t *p, const char *line,
                         size_t len, struct reconcile_line *out,
                         struct sl_error *err)
{
    struct field f[F_COUNT];
    struct scan s = {p, (const unsigned char *)line,
                     (const unsigned char *)line,
                     (const unsigned char *)line + len, NULL, NULL, 0, 0};
    const char *ts, *outcome;
    size_t tsn, on, i;

    if (len > RECONCILE_LINE_MAX) {
        return sl_error_set(err, "line longer than %u MiB",
                            RECONCILE_LINE_MAX >> 20);
    }
    skip_ws(&s);
    if (s.at == s.end) {
        return 0;
    }
    if (*s.at != '{') {
        return sl_error_set(err, "not a JSON object");
    }
    memset(f, 0, sizeof(f));
    p->fields.len = 0;
    p->m_len = 0;
    if (scan_envelope(&s, f) == 0) {
        skip_ws(&s);
        if (s.at != s.end) {
            scan_fail(&s, "end of the line expected");
        }
    }
    if (s.err != NULL) {
        return sl_error_set(err, "not JSON: %s (column %zu)", s.err,
                            (size_t)(s.at - s.start) + 1);
    }
    memset(out, 0, sizeof(*out));
    if (f[F_V].type == T_ABSENT) {
        return sl_error_set(err, "missing field `v`");
    }
    if (f[F_V].type != T_ONE) {
        return sl_error_set(err, "`v` is not 1 (the only version known)");
    }
    if (need_string(p, f, F_TS, &ts, &tsn, err) != 0 ||
        need_string(p, f, F_SINK, &out->sink, &out->sink_len, err) != 0 ||
        need_string(p, f, F_KEY, &out->key, &out->key_len, err) != 0 ||
        need_string(p, f, F_OUTCOME, &outcome, &on, err) != 0) {
        return -1;
    }
    if (reconcile_parse_day(ts, tsn, &out->day) != 0) {
        return sl_error_set(err, "`ts` is not an RFC 3339 time "
                                 "(2026-12-05T12:00:00.123Z)");
    }
    for (i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++) {
        if (strlen(outcomes[i].name) == on &&
            memcmp(outcomes[i].name, outcome, on) == 0) {
            break;
        }
    }
    if (i == sizeof(outcomes) / sizeof(outcomes[0])) {
        return sl_error_set(err,
                            "unknown `outcome` (delivered, applied, shadow, "
                            "already_handled or dead_lettered)");
    }
    out->outcome = outcomes[i].outcome;
    out->effect = out->outcome <= RECONCILE_SHADOW;
    {
        uint64_t sl = out->sink_len;
        p->b.len = 0;
        if (buf_add(&p->b, &sl, sizeof(sl)) != 0 ||
            buf_add(&p->b, out->sink, out->sink_len) != 0 ||
            buf_add(&p->b, out->key, out->key_len) != 0) {
            return sl_error_set(err, "out of memory");
        }
        hash128(p->b.p, p->b.len, 1, out->pair);
    }
    if (out->effect) {
        return parse_effect(p, f, out, err) == 0 ? 1 : -1;
    }
    if (out->outcome == RECONCILE_DEAD_LETTERED &&
        opt_string(p, f, F_ERROR, &out->error, &out->error_len, err) != 0) {
        return -1;
    }
    return 1;
}

/* The line's object as jansson reads it, the ignored fields removed from
 * its body (owned by p, until the next call), or NULL. For examples. */
static json_t *parser_tree(reconcile_parser_t *p, const char *line,
                           size_t len)
{
    json_t *body;

    json_decref(p->root);
    p->root = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
    body = json_object_get(p->root, "body");
    for (size_t i = 0; body != NULL && i < p->path_count; i++) {
        remove_path(body, &p->paths[i]);
    }
    return p->root;
}

/* ---- reading lines ---- */

struct reader {
    int fd;
    char *buf;
    size_t cap, start, end, scan;
    int64_t base; /* file offset of buf[0] */
    int eof;
    int64_t lineno;
};

static int reader_init(struct reader *r, int fd)
{
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->cap = READ_CHUNK;
    r->buf = malloc(r->cap);
    return r->buf != NULL ? 0 : -1;
}

/* The next line into *line and *len (no newline) at file offset *off. Returns
 * 1, 0 at the end, or -1 with err set. */
static int reader_next(struct reader *r, const char **line, size_t *len,
                       int64_t *off, struct sl_error *err)
{
    for (;;) {
        char *nl = memchr(r->buf + r->scan, '\n', r->end - r->scan);
        if (nl != NULL || (r->eof && r->start < r->end)) {
            size_t stop = nl != NULL ? (size_t)(nl - r->buf) : r->end;
            *line = r->buf + r->start;
            *len = stop - r->start;
            *off = r->base + (int64_t)r->start;
            r->start = r->scan = nl != NULL ? stop + 1 : r->end;
            r->lineno++;
            if (*len > RECONCILE_LINE_MAX) {
                return sl_error_set(err, "line longer than %u MiB",
                                    RECONCILE_LINE_MAX >> 20);
            }
            return 1;
        }
        if (r->eof) {
            return 0;
        }
        r->scan = r->end;
        if (r->start > 0) {
            memmove(r->buf, r->buf + r->start, r->end - r->start);
            r->base += (int64_t)r->start;
            r->end -= r->start;
            r->scan -= r->start;
            r->start = 0;
        }
        if (r->end == r->cap) {
            if (r->end > RECONCILE_LINE_MAX) {
                r->lineno++;
                return sl_error_set(err, "line longer than %u MiB",
                                    RECONCILE_LINE_MAX >> 20);
            }
            char *p = realloc(r->buf, r->cap * 2);
            if (p == NULL) {
                return sl_error_set(err, "out of memory");
            }
            r->buf = p;
            r->cap *= 2;
        }
        ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return sl_error_set(err, "read: %s", strerror(errno));
        }
        if (n == 0) {
            r->eof = 1;
        }
        r->end += (size_t)n;
    }
}

/* The line at off into b (no newline); 0 or -1. */
static int read_line_at(int fd, int64_t off, struct buf *b)
{
    b->len = 0;
    for (;;) {
        if (buf_reserve(b, 4096) != 0) {
            return -1;
        }
        ssize_t n = pread(fd, b->p + b->len, b->cap - b->len,
                          (off_t)(off + (int64_t)b->len));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -1 : 0;
        }
        char *nl = memchr(b->p + b->len, '\n', (size_t)n);
        if (nl != NULL) {
            b->len = (size_t)(nl - b->p);
            return 0;
        }
        b->len += (size_t)n;
        if (b->len > RECONCILE_LINE_MAX) {
            return -1;
        }
    }
}

/* ---- one side's table ---- */

enum {
    E_EFFECT = 1,
    E_DEAD = 2,
    E_BODY = 4,
    E_SEEN = 8, /* the other side has the pair */
};

struct entry {
    uint64_t pair[2];
    uint64_t digest[2];
    uint64_t sha_digest;
    int64_t off;
    int32_t day;
    uint16_t sink;
    uint8_t flags;
};

struct table {
    struct entry *e;
    size_t len, cap;
    uint32_t *slot; /* entry index + 1; 0: free */
    size_t mask;
};

static int table_grow(struct table *t)
{
    size_t n = t->slot != NULL ? (t->mask + 1) * 2 : 1024;
    uint32_t *slot = calloc(n, sizeof(*slot));

    if (slot == NULL || n > UINT32_MAX) {
        free(slot);
        return -1;
    }
    for (size_t i = 0; i < t->len; i++) {
        size_t h = t->e[i].pair[0] & (n - 1);
        while (slot[h] != 0) {
            h = (h + 1) & (n - 1);
        }
        slot[h] = (uint32_t)i + 1;
    }
    free(t->slot);
    t->slot = slot;
    t->mask = n - 1;
    return 0;
}

/* The entry of pair, or NULL; *pos is where a new one goes. */
static struct entry *table_find(const struct table *t, const uint64_t pair[2],
                                size_t *pos)
{
    size_t h;

    if (t->slot == NULL) {
        return NULL;
    }
    for (h = pair[0] & t->mask; t->slot[h] != 0; h = (h + 1) & t->mask) {
        struct entry *e = &t->e[t->slot[h] - 1];
        if (e->pair[0] == pair[0] && e->pair[1] == pair[1]) {
            return e;
        }
    }
    if (pos != NULL) {
        *pos = h;
    }
    return NULL;
}

static struct entry *table_add(struct table *t, const uint64_t pair[2])
{
    size_t pos;

    if (t->slot == NULL || (t->len + 1) * 2 > t->mask + 1) {
        if (table_grow(t) != 0) {
            return NULL;
        }
    }
    if (t->len >= UINT32_MAX - 1) {
        return NULL;
    }
    if (t->len == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        struct entry *e = realloc(t->e, cap * sizeof(*e));
        if (e == NULL) {
            return NULL;
        }
        t->e = e;
        t->cap = cap;
    }
    table_find(t, pair, &pos);
    t->slot[pos] = (uint32_t)++t->len;
    return &t->e[t->len - 1];
}

static void table_free(struct table *t)
{
    free(t->e);
    free(t->slot);
    memset(t, 0, sizeof(*t));
}

/* Interned sink names. */
struct sink {
    char *name;
    size_t len;
    int64_t dups[2];
    /* Global sinks: counts, examples. */
    size_t ex_count[3];
};

struct names {
    struct sink *v;
    size_t len, cap;
    uint32_t *slot;
    size_t mask;
};

static uint64_t name_hash(const char *s, size_t n)
{
    uint64_t h[2];

    hash128(s, n, 7, h);
    return h[0];
}

/* The index of name (added when new), or -1 (out of memory, too many). */
static long names_intern(struct names *m, const char *s, size_t n)
{
    size_t h;

    if (m->slot == NULL || (m->len + 1) * 2 > m->mask + 1) {
        size_t ns = m->slot != NULL ? (m->mask + 1) * 2 : 64;
        uint32_t *slot = calloc(ns, sizeof(*slot));
        if (slot == NULL) {
            return -1;
        }
        for (size_t i = 0; i < m->len; i++) {
            h = name_hash(m->v[i].name, m->v[i].len) & (ns - 1);
            while (slot[h] != 0) {
                h = (h + 1) & (ns - 1);
            }
            slot[h] = (uint32_t)i + 1;
        }
        free(m->slot);
        m->slot = slot;
        m->mask = ns - 1;
    }
    for (h = name_hash(s, n) & m->mask; m->slot[h] != 0;
         h = (h + 1) & m->mask) {
        struct sink *e = &m->v[m->slot[h] - 1];
        if (e->len == n && memcmp(e->name, s, n) == 0) {
            return (long)(m->slot[h] - 1);
        }
    }
    if (m->len >= MAX_SINKS) {
        return -1;
    }
    if (m->len == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        struct sink *v = realloc(m->v, cap * sizeof(*v));
        if (v == NULL) {
            return -1;
        }
        m->v = v;
        m->cap = cap;
    }
    struct sink *e = &m->v[m->len];
    memset(e, 0, sizeof(*e));
    e->name = malloc(n + 1);
    if (e->name == NULL) {
        return -1;
    }
    memcpy(e->name, s, n);
    e->name[n] = '\0';
    e->len = n;
    m->slot[h] = (uint32_t)++m->len;
    return (long)(m->len - 1);
}

static void names_free(struct names *m)
{
    for (size_t i = 0; i < m->len; i++) {
        free(m->v[i].name);
    }
    free(m->v);
    free(m->slot);
    memset(m, 0, sizeof(*m));
}

/* ---- the command's state ---- */

struct opts {
    const char **ignore;
    size_t ignore_count;
    const char **sinks; /* --sink */
    size_t sink_count;
    long examples;
    int json;
};

struct side {
    const char *spec; /* as given */
    int index;        /* 0 left, 1 right */
    const struct opts *o;
    int fd;           /* the file, or the spool */
    FILE *spool, *positions; /* Kafka only: values, (partition, offset) */
    char *brokers, *topic;
    struct table t;
    struct names sinks;
    int64_t lines, dups;
    int rc;
    struct sl_error err;
};

struct count {
    int64_t matched, missing_left, missing_right, mismatched, no_effect;
};

struct cell {
    uint64_t k; /* sink << 32 | (uint32_t)day; 0 with used == 0: free */
    int used;
    struct count c;
};

struct cells {
    struct cell *v;
    size_t len, mask;
};

enum { CAT_MISSING_LEFT, CAT_MISSING_RIGHT, CAT_MISMATCHED };
static const char *const cat_names[] = {"missing_left", "missing_right",
                                        "mismatched"};

struct example {
    uint16_t sink;
    int cat;
    int32_t day;
    char *key;
    size_t key_len;
    char *detail;
};

struct run {
    struct opts o;
    struct side side[2];
    struct names g; /* every sink of both sides */
    uint16_t *map[2]; /* a side's sink index -> g's */
    struct cells cells;
    struct example *ex;
    size_t ex_len, ex_cap;
    int64_t compared_by_hash;
    reconcile_parser_t *ex_parser[2];
    struct buf ex_line[2];
};

static struct count *cell_get(struct cells *m, uint16_t sink, int32_t day)
{
    uint64_t k = (uint64_t)sink << 32 | (uint32_t)day;
    size_t h;

    if (m->v == NULL || (m->len + 1) * 2 > m->mask + 1) {
        size_t n = m->v != NULL ? (m->mask + 1) * 2 : 256;
        struct cell *v = calloc(n, sizeof(*v));
        if (v == NULL) {
            return NULL;
        }
        for (size_t i = 0; m->v != NULL && i <= m->mask; i++) {
            if (m->v[i].used) {
                h = fmix64(m->v[i].k) & (n - 1);
                while (v[h].used) {
                    h = (h + 1) & (n - 1);
                }
                v[h] = m->v[i];
            }
        }
        free(m->v);
        m->v = v;
        m->mask = n - 1;
    }
    for (h = fmix64(k) & m->mask; m->v[h].used; h = (h + 1) & m->mask) {
        if (m->v[h].k == k) {
            return &m->v[h].c;
        }
    }
    m->v[h].used = 1;
    m->v[h].k = k;
    m->len++;
    return &m->v[h].c;
}

/* ---- Kafka input: spooled into an unlinked temp file ---- */

static FILE *temp_file(struct sl_error *err)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    int fd;
    FILE *f;

    snprintf(path, sizeof(path), "%s/sluice-reconcile-XXXXXX",
             dir != NULL && dir[0] != '\0' ? dir : "/tmp");
    fd = mkstemp(path);
    if (fd < 0) {
        sl_error_set(err, "temp file in %s: %s",
                     dir != NULL && dir[0] != '\0' ? dir : "/tmp",
                     strerror(errno));
        return NULL;
    }
    unlink(path);
    f = fdopen(fd, "w+");
    if (f == NULL) {
        sl_error_set(err, "temp file: %s", strerror(errno));
        close(fd);
    }
    return f;
}

struct kafka_state {
    char last_error[256];
};

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason,
                           void *opaque)
{
    struct kafka_state *k = opaque;

    (void)rk;
    (void)err;
    snprintf(k->last_error, sizeof(k->last_error), "%s", reason);
}

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                         const char *buf)
{
    (void)rk;
    (void)level;
    log_debug("kafka %s: %s", fac, buf);
}

/* Splits kafka://BROKERS/TOPIC into s->brokers and s->topic. 1 when spec
 * is such a URL, 0 when it is not one (a file), -1 when malformed. */
static int kafka_spec(struct side *s)
{
    const char *rest, *slash;

    if (strncmp(s->spec, "kafka://", 8) != 0) {
        return 0;
    }
    rest = s->spec + 8;
    slash = strchr(rest, '/');
    if (slash == NULL || slash == rest || slash[1] == '\0' ||
        strchr(slash + 1, '/') != NULL) {
        return -1;
    }
    s->brokers = strndup(rest, (size_t)(slash - rest));
    s->topic = strdup(slash + 1);
    if (s->brokers == NULL || s->topic == NULL) {
        return -1;
    }
    return 1;
}

struct kpart {
    int32_t id;
    int64_t low, high;
    int done;
};

static int kafka_write(struct side *s, const rd_kafka_message_t *m)
{
    const char *p = m->payload;
    struct {
        int32_t partition;
        int32_t pad;
        int64_t offset;
    } pos = {m->partition, 0, m->offset};

    for (size_t i = 0; p != NULL && i < m->len; i++) {
        /* A raw newline: invalid in a JSON string, blank outside one, as
         * a carriage return is; the line then stays one line. */
        if (putc(p[i] == '\n' ? '\r' : p[i], s->spool) == EOF) {
            return -1;
        }
    }
    if (putc('\n', s->spool) == EOF ||
        fwrite(&pos, sizeof(pos), 1, s->positions) != 1) {
        return -1;
    }
    return 0;
}

/* Reads every partition of s->topic from its low to its high watermark
 * (taken at start) into s->spool, assigned without a group membership
 * and without commits. 0 or -1 (s->err). */
static int kafka_read(struct side *s)
{
    struct kafka_state ks = {{0}};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_partition_list_t *l = NULL;
    struct kpart *parts = NULL;
    rd_kafka_topic_t *rkt;
    rd_kafka_resp_err_t e;
    rd_kafka_t *rk;
    char errstr[512], group[64];
    size_t nparts = 0, left = 0;
    int rc = -1;

    snprintf(group, sizeof(group), "sluice-reconcile-%ld", (long)getpid());
    static const char *const props[][2] = {
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"enable.partition.eof", "true"},
        {"auto.offset.reset", "earliest"},
        {"queued.max.messages.kbytes", "16384"},
        {"log.connection.close", "false"},
        {"client.software.name", "sluice"},
    };
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
        rd_kafka_conf_set(conf, props[i][0], props[i][1], NULL, 0);
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", s->brokers, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return sl_error_set(&s->err, "%s: %s", s->spec, errstr);
    }
    rd_kafka_conf_set_opaque(conf, &ks);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return sl_error_set(&s->err, "%s: %s", s->spec, errstr);
    }
    rd_kafka_poll_set_consumer(rk);
    rkt = rd_kafka_topic_new(rk, s->topic, NULL);
    e = rkt != NULL ? rd_kafka_metadata(rk, 0, rkt, &md, KAFKA_TIMEOUT_MS)
                    : rd_kafka_last_error();
    if (rkt != NULL) {
        rd_kafka_topic_destroy(rkt);
    }
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_poll(rk, 0);
        sl_error_set(&s->err, "%s: reading the metadata: %s%s%s", s->spec,
                     rd_kafka_err2str(e), ks.last_error[0] ? ": " : "",
                     ks.last_error);
        goto out;
    }
    if (md->topic_cnt != 1 || md->topics[0].err != 0 ||
        md->topics[0].partition_cnt == 0) {
        sl_error_set(&s->err, "%s: topic `%s` does not exist%s%s", s->spec,
                     s->topic, md->topic_cnt == 1 && md->topics[0].err
                                   ? ": "
                                   : "",
                     md->topic_cnt == 1 && md->topics[0].err
                         ? rd_kafka_err2str(md->topics[0].err)
                         : "");
        goto out;
    }
    nparts = (size_t)md->topics[0].partition_cnt;
    parts = calloc(nparts, sizeof(*parts));
    l = rd_kafka_topic_partition_list_new((int)nparts);
    if (parts == NULL || l == NULL) {
        sl_error_set(&s->err, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nparts; i++) {
        struct kpart *p = &parts[i];
        p->id = md->topics[0].partitions[i].id;
        e = rd_kafka_query_watermark_offsets(rk, s->topic, p->id, &p->low,
                                             &p->high, KAFKA_TIMEOUT_MS);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            sl_error_set(&s->err, "%s: the offsets of partition %d: %s",
                         s->spec, (int)p->id, rd_kafka_err2str(e));
            goto out;
        }
        if (p->low >= p->high) {
            p->done = 1;
            continue;
        }
        left++;
        rd_kafka_topic_partition_list_add(l, s->topic, p->id)->offset =
            p->low;
    }
    if (l->cnt > 0 && (e = rd_kafka_assign(rk, l)) != 0) {
        sl_error_set(&s->err, "%s: assign: %s", s->spec, rd_kafka_err2str(e));
        goto out;
    }
    while (left > 0) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, KAFKA_TIMEOUT_MS);
        struct kpart *p = NULL;
        if (m == NULL) {
            sl_error_set(&s->err, "%s: no record within %d s%s%s", s->spec,
                         KAFKA_TIMEOUT_MS / 1000,
                         ks.last_error[0] ? ": " : "", ks.last_error);
            goto out;
        }
        for (size_t i = 0; i < nparts; i++) {
            if (parts[i].id == m->partition) {
                p = &parts[i];
            }
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (p != NULL && !p->done) {
                p->done = 1;
                left--;
            }
        } else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            sl_error_set(&s->err, "%s: partition %d: %s", s->spec,
                         (int)m->partition, rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            goto out;
        } else if (p != NULL && !p->done && m->offset < p->high) {
            if (kafka_write(s, m) != 0) {
                sl_error_set(&s->err, "%s: writing the spool: %s", s->spec,
                             strerror(errno));
                rd_kafka_message_destroy(m);
                goto out;
            }
            if (m->offset + 1 >= p->high) {
                p->done = 1;
                left--;
            }
        }
        rd_kafka_message_destroy(m);
    }
    if (fflush(s->spool) != 0 || fflush(s->positions) != 0) {
        sl_error_set(&s->err, "%s: writing the spool: %s", s->spec,
                     strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (l != NULL) {
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (md != NULL) {
        rd_kafka_metadata_destroy(md);
    }
    free(parts);
    /* No close: there is no membership to leave, nothing to commit. */
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return rc;
}

/* Opens a side: the file, or the topic read into a spool. 0 or -1. */
static int side_open(struct side *s)
{
    int k = kafka_spec(s);

    s->fd = -1;
    if (k < 0) {
        return sl_error_set(&s->err,
                            "%s: not kafka://HOST:PORT[,HOST:PORT...]/TOPIC",
                            s->spec);
    }
    if (k == 0) {
        struct stat st;
        s->fd = open(s->spec, O_RDONLY | O_CLOEXEC);
        if (s->fd < 0) {
            return sl_error_set(&s->err, "%s: %s", s->spec, strerror(errno));
        }
        if (fstat(s->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            return sl_error_set(&s->err, "%s: is a directory", s->spec);
        }
        return 0;
    }
    s->spool = temp_file(&s->err);
    s->positions = s->spool != NULL ? temp_file(&s->err) : NULL;
    if (s->positions == NULL || kafka_read(s) != 0) {
        return -1;
    }
    s->fd = fileno(s->spool);
    if (lseek(s->fd, 0, SEEK_SET) != 0) {
        return sl_error_set(&s->err, "%s: spool: %s", s->spec,
                            strerror(errno));
    }
    return 0;
}

static void side_close(struct side *s)
{
    if (s->spool != NULL) {
        fclose(s->spool);
    } else if (s->fd >= 0) {
        close(s->fd);
    }
    if (s->positions != NULL) {
        fclose(s->positions);
    }
    free(s->brokers);
    free(s->topic);
    table_free(&s->t);
    names_free(&s->sinks);
}

/* Prefixes s->err with where line lineno is: FILE:LINE, or the topic,
 * partition and offset of a spooled record. */
static void side_error_at(struct side *s, int64_t lineno)
{
    char msg[sizeof(s->err.msg)];

    snprintf(msg, sizeof(msg), "%s", s->err.msg);
    if (s->positions != NULL) {
        struct {
            int32_t partition;
            int32_t pad;
            int64_t offset;
        } pos;
        if (pread(fileno(s->positions), &pos, sizeof(pos),
                  (off_t)((lineno - 1) * (int64_t)sizeof(pos))) ==
            (ssize_t)sizeof(pos)) {
            sl_error_set(&s->err, "%s partition %d offset %lld: %s", s->spec,
                         (int)pos.partition, (long long)pos.offset, msg);
            return;
        }
    }
    sl_error_set(&s->err, "%s:%lld: %s", s->spec, (long long)lineno, msg);
}

static int sink_selected(const struct opts *o, const char *s, size_t n)
{
    if (o->sink_count == 0) {
        return 1;
    }
    for (size_t i = 0; i < o->sink_count; i++) {
        if (strlen(o->sinks[i]) == n && memcmp(o->sinks[i], s, n) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Reads a side's lines into its table. 0 or -1 (s->err). */
static int side_load(struct side *s)
{
    reconcile_parser_t *p;
    struct reader r;
    struct reconcile_line line;
    const char *text = NULL;
    size_t len = 0;
    int64_t off = 0;
    int rc = 0;

    p = reconcile_parser_new(s->o->ignore, s->o->ignore_count, &s->err);
    if (p == NULL) {
        return -1;
    }
    if (reader_init(&r, s->fd) != 0) {
        reconcile_parser_destroy(p);
        return sl_error_set(&s->err, "out of memory");
    }
    for (;;) {
        rc = reader_next(&r, &text, &len, &off, &s->err);
        if (rc <= 0) {
            if (rc < 0) {
                side_error_at(s, r.lineno);
            }
            break;
        }
        rc = reconcile_parse_line(p, text, len, &line, &s->err);
        if (rc < 0) {
            side_error_at(s, r.lineno);
            break;
        }
        if (rc == 0) {
            continue;
        }
        s->lines++;
        if (line.outcome == RECONCILE_ALREADY_HANDLED ||
            !sink_selected(s->o, line.sink, line.sink_len)) {
            continue;
        }
        long sink = names_intern(&s->sinks, line.sink, line.sink_len);
        if (sink < 0) {
            rc = sl_error_set(&s->err, "more than %d sinks, or out of memory",
                              MAX_SINKS);
            side_error_at(s, r.lineno);
            break;
        }
        struct entry *e = table_find(&s->t, line.pair, NULL);
        if (e != NULL) {
            if (!line.effect || !(e->flags & E_DEAD)) {
                if (line.effect) {
                    s->sinks.v[sink].dups[s->index]++;
                    s->dups++;
                }
                continue;
            }
            /* An effect after a dead letter: the pair was applied. */
        } else {
            e = table_add(&s->t, line.pair);
            if (e == NULL) {
                rc = sl_error_set(&s->err, "out of memory");
                break;
            }
            e->pair[0] = line.pair[0];
            e->pair[1] = line.pair[1];
        }
        e->off = off;
        e->day = line.day;
        e->sink = (uint16_t)sink;
        e->flags = line.effect ? E_EFFECT : E_DEAD;
        if (line.effect) {
            e->sha_digest = line.sha_digest;
            if (line.has_body) {
                e->flags |= E_BODY;
                e->digest[0] = line.digest[0];
                e->digest[1] = line.digest[1];
            }
        }
    }
    free(r.buf);
    reconcile_parser_destroy(p);
    return rc < 0 ? -1 : 0;
}

static void *side_thread(void *arg)
{
    struct side *s = arg;

    s->rc = side_load(s);
    return NULL;
}

/* ---- comparing ---- */

static int add_example_entry(struct run *run, struct example *x)
{
    if (run->ex_len == run->ex_cap) {
        size_t cap = run->ex_cap ? run->ex_cap * 2 : 16;
        struct example *v = realloc(run->ex, cap * sizeof(*v));
        if (v == NULL) {
            return -1;
        }
        run->ex = v;
        run->ex_cap = cap;
    }
    run->ex[run->ex_len++] = *x;
    return 0;
}


/* Reads side i's line at off again with its example parser: the line's
 * object (owned by the parser, with the ignored fields removed from its
 * body), or NULL when it cannot be read or parsed again. */
static json_t *example_line(struct run *run, int i, int64_t off,
                            struct reconcile_line *line)
{
    struct sl_error err;

    if (read_line_at(run->side[i].fd, off, &run->ex_line[i]) != 0 ||
        reconcile_parse_line(run->ex_parser[i], run->ex_line[i].p,
                             run->ex_line[i].len, line, &err) != 1) {
        return NULL;
    }
    return parser_tree(run->ex_parser[i], run->ex_line[i].p,
                       run->ex_line[i].len);
}

static void string_diff(char *out, size_t cap, const char *field, json_t *l,
                        json_t *r)
{
    const char *s;
    size_t n;

    snprintf(out, cap, "%s: ", field);
    if (get_string(l, field, &s, &n) == 1) {
        append_shown(out, cap, s, n, VALUE_MAX);
    } else {
        append_shown(out, cap, "(absent)", 8, 8);
    }
    append_shown(out, cap, " != ", 4, 4);
    if (get_string(r, field, &s, &n) == 1) {
        append_shown(out, cap, s, n, VALUE_MAX);
    } else {
        append_shown(out, cap, "(absent)", 8, 8);
    }
}

static int same_string(json_t *l, json_t *r, const char *field)
{
    const char *ls = NULL, *rs = NULL;
    size_t ln = 0, rn = 0;
    int lrc = get_string(l, field, &ls, &ln),
        rrc = get_string(r, field, &rs, &rn);

    return lrc == rrc && ln == rn && (lrc != 1 || memcmp(ls, rs, ln) == 0);
}

/* "dead_lettered (CLASS) on the SIDE" or "absent on the SIDE". */
static void missing_detail(char *out, size_t cap, const char *side,
                           json_t *root, const struct reconcile_line *line)
{
    if (root == NULL) {
        snprintf(out, cap, "absent on the %s", side);
        return;
    }
    snprintf(out, cap, "dead_lettered (");
    if (line->error != NULL) {
        append_shown(out, cap, line->error, line->error_len, VALUE_MAX);
    } else {
        append_shown(out, cap, "?", 1, 1);
    }
    size_t n = strlen(out);
    snprintf(out + n, cap - n, ") on the %s", side);
}

/* Keeps an example of category cat for global sink g while it has fewer
 * than --examples; l and r are the two sides' entries (NULL: absent).
 * 0 or -1 (out of memory). */
static int example(struct run *run, uint16_t g, int cat, int32_t day,
                   const struct entry *l, const struct entry *r)
{
    struct reconcile_line ll, rl;
    json_t *lroot = NULL, *rroot = NULL;
    const struct reconcile_line *kl;
    char detail[DETAIL_MAX];
    struct example x = {.sink = g, .cat = cat, .day = day};

    if ((long)run->g.v[g].ex_count[cat] >= run->o.examples) {
        return 0;
    }
    run->g.v[g].ex_count[cat]++;
    if (l != NULL) {
        lroot = example_line(run, 0, l->off, &ll);
    }
    if (r != NULL) {
        rroot = example_line(run, 1, r->off, &rl);
    }
    kl = l != NULL ? &ll : &rl;
    if ((l != NULL && lroot == NULL) || (r != NULL && rroot == NULL)) {
        snprintf(detail, sizeof(detail), "(a line could not be read again)");
        kl = NULL;
    } else if (cat == CAT_MISSING_RIGHT) {
        missing_detail(detail, sizeof(detail), "right", rroot, &rl);
    } else if (cat == CAT_MISSING_LEFT) {
        missing_detail(detail, sizeof(detail), "left", lroot, &ll);
    } else if (!same_string(lroot, rroot, "method")) {
        string_diff(detail, sizeof(detail), "method", lroot, rroot);
    } else if (!same_string(lroot, rroot, "path")) {
        string_diff(detail, sizeof(detail), "path", lroot, rroot);
    } else if ((l->flags & r->flags & E_BODY) != 0) {
        if (!reconcile_first_diff(json_object_get(lroot, "body"),
                                  json_object_get(rroot, "body"), "body",
                                  detail, sizeof(detail))) {
            snprintf(detail, sizeof(detail), "body: differs");
        }
    } else {
        const char *ls = "", *rs = "";
        size_t n;
        get_string(lroot, "body_sha256", &ls, &n);
        get_string(rroot, "body_sha256", &rs, &n);
        snprintf(detail, sizeof(detail), "body_sha256: %.16s... != %.16s...",
                 ls, rs);
    }
    if (kl != NULL) {
        x.key = malloc(kl->key_len + 1);
        if (x.key == NULL) {
            return -1;
        }
        memcpy(x.key, kl->key, kl->key_len);
        x.key[kl->key_len] = '\0';
        x.key_len = kl->key_len;
    }
    x.detail = strdup(detail);
    if (x.detail == NULL || add_example_entry(run, &x) != 0) {
        free(x.key);
        free(x.detail);
        return -1;
    }
    return 0;
}

/* Maps each side's sinks to the global table. 0 or -1. */
static int map_sinks(struct run *run)
{
    for (int i = 0; i < 2; i++) {
        struct names *m = &run->side[i].sinks;
        run->map[i] = calloc(m->len + 1, sizeof(uint16_t));
        if (run->map[i] == NULL) {
            return -1;
        }
        for (size_t k = 0; k < m->len; k++) {
            long g = names_intern(&run->g, m->v[k].name, m->v[k].len);
            if (g < 0) {
                return -1;
            }
            run->map[i][k] = (uint16_t)g;
            run->g.v[g].dups[i] += m->v[k].dups[i];
        }
    }
    return 0;
}

/* Walks the left table in file order against the right one, then the
 * right's unmatched entries. 0 or -1 (out of memory). */
static int compare(struct run *run)
{
    struct table *lt = &run->side[0].t, *rt = &run->side[1].t;

    for (size_t i = 0; i < lt->len; i++) {
        struct entry *l = &lt->e[i];
        struct entry *r = table_find(rt, l->pair, NULL);
        uint16_t g = run->map[0][l->sink];
        struct count *c = cell_get(&run->cells, g, l->day);
        int rc = 0;
        if (c == NULL) {
            return -1;
        }
        if (r != NULL) {
            r->flags |= E_SEEN;
        }
        if (l->flags & E_EFFECT) {
            if (r != NULL && (r->flags & E_EFFECT)) {
                int same;
                if (l->flags & r->flags & E_BODY) {
                    same = l->digest[0] == r->digest[0] &&
                           l->digest[1] == r->digest[1];
                } else {
                    same = l->sha_digest == r->sha_digest;
                    run->compared_by_hash++;
                }
                if (same) {
                    c->matched++;
                } else {
                    c->mismatched++;
                    rc = example(run, g, CAT_MISMATCHED, l->day, l, r);
                }
            } else {
                c->missing_right++;
                rc = example(run, g, CAT_MISSING_RIGHT, l->day, l, r);
            }
        } else if (r != NULL && (r->flags & E_EFFECT)) {
            c->missing_left++;
            rc = example(run, g, CAT_MISSING_LEFT, l->day, l, r);
        } else {
            c->no_effect++;
        }
        if (rc != 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < rt->len; i++) {
        struct entry *r = &rt->e[i];
        uint16_t g = run->map[1][r->sink];
        struct count *c;
        if (r->flags & E_SEEN) {
            continue;
        }
        c = cell_get(&run->cells, g, r->day);
        if (c == NULL) {
            return -1;
        }
        if (r->flags & E_EFFECT) {
            c->missing_left++;
            if (example(run, g, CAT_MISSING_LEFT, r->day, NULL, r) != 0) {
                return -1;
            }
        } else {
            c->no_effect++;
        }
    }
    return 0;
}

/* ---- the report ---- */

static void count_add(struct count *t, const struct count *c)
{
    t->matched += c->matched;
    t->missing_left += c->missing_left;
    t->missing_right += c->missing_right;
    t->mismatched += c->mismatched;
    t->no_effect += c->no_effect;
}

static int has_diff(const struct count *c)
{
    return c->missing_left + c->missing_right + c->mismatched > 0;
}

struct row {
    uint16_t sink;
    int32_t day;
    struct count c;
};

static const struct names *sort_names; /* for qsort */
static uint32_t *sort_rank;

static int sink_order(const void *a, const void *b)
{
    const struct sink *x = &sort_names->v[*(const uint16_t *)a];
    const struct sink *y = &sort_names->v[*(const uint16_t *)b];
    int c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);

    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

static int row_order(const void *a, const void *b)
{
    const struct row *x = a, *y = b;

    if (x->sink != y->sink) {
        return sort_rank[x->sink] < sort_rank[y->sink] ? -1 : 1;
    }
    return (x->day > y->day) - (x->day < y->day);
}

static int day_order(const void *a, const void *b)
{
    const struct row *x = a, *y = b;

    return (x->day < y->day) - (x->day > y->day); /* latest first */
}

struct report {
    struct row *rows; /* by sink, then day */
    size_t nrows;
    uint16_t *order; /* global sinks by name */
    uint32_t *rank;
    struct count *sink_total; /* per global sink */
    struct count total;
    int64_t streak;
};

static int report_build(struct run *run, struct report *rep)
{
    size_t n = 0, ng = run->g.len;

    memset(rep, 0, sizeof(*rep));
    rep->rows = malloc((run->cells.len + 1) * sizeof(*rep->rows));
    rep->order = malloc((ng + 1) * sizeof(*rep->order));
    rep->rank = malloc((ng + 1) * sizeof(*rep->rank));
    rep->sink_total = calloc(ng + 1, sizeof(*rep->sink_total));
    if (rep->rows == NULL || rep->order == NULL || rep->rank == NULL ||
        rep->sink_total == NULL) {
        return -1;
    }
    for (size_t i = 0; run->cells.v != NULL && i <= run->cells.mask; i++) {
        struct cell *c = &run->cells.v[i];
        if (c->used) {
            rep->rows[n].sink = (uint16_t)(c->k >> 32);
            rep->rows[n].day = (int32_t)(uint32_t)c->k;
            rep->rows[n].c = c->c;
            count_add(&rep->sink_total[rep->rows[n].sink], &c->c);
            count_add(&rep->total, &c->c);
            n++;
        }
    }
    rep->nrows = n;
    for (size_t i = 0; i < ng; i++) {
        rep->order[i] = (uint16_t)i;
    }
    sort_names = &run->g;
    qsort(rep->order, ng, sizeof(*rep->order), sink_order);
    for (size_t i = 0; i < ng; i++) {
        rep->rank[rep->order[i]] = (uint32_t)i;
    }
    sort_rank = rep->rank;
    /* The streak: days summed over sinks, latest first. */
    struct row *days = malloc((n + 1) * sizeof(*days));
    if (days == NULL) {
        return -1;
    }
    memcpy(days, rep->rows, n * sizeof(*days));
    qsort(days, n, sizeof(*days), day_order);
    for (size_t i = 0; i < n;) {
        int32_t d = days[i].day;
        int diff = 0;
        for (; i < n && days[i].day == d; i++) {
            diff |= has_diff(&days[i].c);
        }
        if (diff || (rep->streak > 0 && d != days[0].day - rep->streak)) {
            break;
        }
        rep->streak++;
    }
    free(days);
    qsort(rep->rows, n, sizeof(*rep->rows), row_order);
    return 0;
}

static void report_free(struct report *rep)
{
    free(rep->rows);
    free(rep->order);
    free(rep->rank);
    free(rep->sink_total);
}

static json_t *count_json(const struct count *c)
{
    return json_pack("{sIsIsIsIsI}", "matched", (json_int_t)c->matched,
                     "missing_left", (json_int_t)c->missing_left,
                     "missing_right", (json_int_t)c->missing_right,
                     "mismatched", (json_int_t)c->mismatched, "no_effect",
                     (json_int_t)c->no_effect);
}

static int print_json(struct run *run, const struct report *rep)
{
    json_t *root = json_object(), *sinks = json_object(), *ign = json_array();
    char day[16];
    int rc;

    for (size_t i = 0; i < run->g.len; i++) {
        const struct sink *s = &run->g.v[rep->order[i]];
        json_t *ex = json_object();
        for (int c = 0; c < 3; c++) {
            json_object_set_new(ex, cat_names[c], json_array());
        }
        json_object_setn_new(
            sinks, s->name, s->len,
            json_pack("{s:o,s:o,s:{s:I,s:I},s:o}", "days", json_object(), "totals",
                      count_json(&rep->sink_total[rep->order[i]]),
                      "duplicates", "left", (json_int_t)s->dups[0], "right",
                      (json_int_t)s->dups[1], "examples", ex));
    }
    for (size_t i = 0; i < rep->nrows; i++) {
        const struct row *r = &rep->rows[i];
        const struct sink *s = &run->g.v[r->sink];
        json_t *days = json_object_get(
            json_object_getn(sinks, s->name, s->len), "days");
        json_object_set_new(days,
                            reconcile_format_day(day, sizeof(day), r->day),
                            count_json(&r->c));
    }
    for (size_t i = 0; i < run->ex_len; i++) {
        const struct example *x = &run->ex[i];
        const struct sink *s = &run->g.v[x->sink];
        json_t *ex = json_object_get(
            json_object_get(json_object_getn(sinks, s->name, s->len),
                            "examples"),
            cat_names[x->cat]);
        json_array_append_new(
            ex, json_pack("{s:o,s:s,s:s}", "key",
                          x->key != NULL ? json_stringn(x->key, x->key_len)
                                         : json_null(),
                          "day", reconcile_format_day(day, sizeof(day),
                                                      x->day),
                          "detail", x->detail));
    }
    for (size_t i = 0; i < run->o.ignore_count; i++) {
        json_array_append_new(ign, json_string(run->o.ignore[i]));
    }
    json_object_set_new(root, "left",
                        json_pack("{sssIsI}", "input", run->side[0].spec,
                                  "lines", (json_int_t)run->side[0].lines,
                                  "duplicates",
                                  (json_int_t)run->side[0].dups));
    json_object_set_new(root, "right",
                        json_pack("{sssIsI}", "input", run->side[1].spec,
                                  "lines", (json_int_t)run->side[1].lines,
                                  "duplicates",
                                  (json_int_t)run->side[1].dups));
    json_object_set_new(root, "sinks", sinks);
    json_object_set_new(root, "totals", count_json(&rep->total));
    json_object_set_new(root, "duplicates",
                        json_pack("{sIsI}", "left",
                                  (json_int_t)run->side[0].dups, "right",
                                  (json_int_t)run->side[1].dups));
    json_object_set_new(root, "compared_by_hash",
                        json_integer(run->compared_by_hash));
    json_object_set_new(root, "ignored_fields", ign);
    json_object_set_new(root, "streak_days", json_integer(rep->streak));
    json_object_set_new(root, "diff", json_boolean(has_diff(&rep->total)));
    rc = json_dumpf(root, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
    putchar('\n');
    json_decref(root);
    return rc;
}

static void print_counts(const char *sink, const char *day,
                         const struct count *c)
{
    printf("%-20s  %-10s  %10lld  %12lld  %13lld  %10lld  %9lld\n", sink, day,
           (long long)c->matched, (long long)c->missing_left,
           (long long)c->missing_right, (long long)c->mismatched,
           (long long)c->no_effect);
}

static void print_text(struct run *run, const struct report *rep)
{
    char name[24], day[16], key[256], detail[DETAIL_MAX * 2];

    for (int i = 0; i < 2; i++) {
        dlqcmd_escape(detail, sizeof(detail), run->side[i].spec,
                      strlen(run->side[i].spec), 0);
        printf("%-5s %s: %lld line(s), %lld duplicate(s)\n",
               i == 0 ? "LEFT" : "RIGHT", detail,
               (long long)run->side[i].lines, (long long)run->side[i].dups);
    }
    printf("\n%-20s  %-10s  %10s  %12s  %13s  %10s  %9s\n", "SINK", "DAY",
           "MATCHED", "MISSING_LEFT", "MISSING_RIGHT", "MISMATCHED",
           "NO_EFFECT");
    for (size_t i = 0; i < rep->nrows; i++) {
        const struct row *r = &rep->rows[i];
        const struct sink *s = &run->g.v[r->sink];
        dlqcmd_escape(name, sizeof(name), s->name, s->len, 0);
        print_counts(name, reconcile_format_day(day, sizeof(day), r->day),
                     &r->c);
        if (i + 1 == rep->nrows || rep->rows[i + 1].sink != r->sink) {
            print_counts(name, "(all)", &rep->sink_total[r->sink]);
        }
    }
    print_counts("(all sinks)", "(all)", &rep->total);
    if (run->ex_len > 0) {
        printf("\nexamples:\n");
    }
    for (size_t k = 0; k < run->g.len; k++) {
        for (int c = 0; c < 3; c++) {
            for (size_t i = 0; i < run->ex_len; i++) {
                const struct example *x = &run->ex[i];
                if (x->sink != rep->order[k] || x->cat != c) {
                    continue;
                }
                const struct sink *s = &run->g.v[x->sink];
                dlqcmd_escape(name, sizeof(name), s->name, s->len, 0);
                dlqcmd_escape(key, sizeof(key), x->key ? x->key : "?",
                              x->key ? x->key_len : 1, 0);
                dlqcmd_escape(detail, sizeof(detail), x->detail,
                              strlen(x->detail), 0);
                printf("  %-20s  %-13s  %s  %s: %s\n", name, cat_names[c],
                       reconcile_format_day(day, sizeof(day), x->day), key,
                       detail);
            }
        }
    }
    printf("\n");
    if (run->side[0].dups + run->side[1].dups > 0) {
        printf("duplicates (repeated effects, not a diff): left %lld, "
               "right %lld\n",
               (long long)run->side[0].dups, (long long)run->side[1].dups);
    }
    if (run->o.ignore_count > 0 && run->compared_by_hash > 0) {
        printf("note: %lld pair(s) compared by body_sha256 (a side had no "
               "body), --ignore-field did not apply to them\n",
               (long long)run->compared_by_hash);
    }
    printf("zero-diff streak: %lld day(s)\n", (long long)rep->streak);
    if (has_diff(&rep->total)) {
        printf("DIFF: %lld missing on the left, %lld missing on the right, "
               "%lld mismatched\n",
               (long long)rep->total.missing_left,
               (long long)rep->total.missing_right,
               (long long)rep->total.mismatched);
    } else {
        printf("no diff\n");
    }
}

/* ---- the command line ---- */

static const char usage[] =
    "usage: sluice reconcile [options] LEFT RIGHT\n"
    "\n"
    "Compares two outcome logs (docs/outcomes.md) pair by pair: each of LEFT\n"
    "and RIGHT is an NDJSON file or kafka://HOST:PORT[,HOST:PORT...]/TOPIC\n"
    "(every partition read from the beginning up to its end at start,\n"
    "without a consumer group). Effects (delivered, applied, shadow) are\n"
    "matched on (sink, key) and counted per sink and UTC day: matched,\n"
    "missing_left (only in RIGHT), missing_right (only in LEFT), mismatched\n"
    "(method, path or body differ) and no_effect (dead-lettered, and no\n"
    "effect on either side). Bodies are compared as canonical JSON when both\n"
    "lines carry `body`, else by body_sha256.\n"
    "\n"
    "options:\n"
    "  --ignore-field PATH      leave body field PATH (a.b.c from the body's\n"
    "                           root) out of the comparison; repeatable\n"
    "  --sink NAME              only sink NAME; repeatable\n"
    "  --examples N             up to N examples per sink and category\n"
    "                           (default 3)\n"
    "  --output FORMAT          text (default) or json (one object)\n"
    "  -h, --help               show this help\n"
    "\n"
    "exit status: 0 no diff, 1 a diff (missing or mismatched pairs), 2 bad\n"
    "usage or an input that cannot be read or parsed\n";

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "sluice reconcile: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n%s", usage);
    return EXIT_USAGE;
}

static int parse_args(int argc, char **argv, struct run *run)
{
    static const struct option longopts[] = {
        {"ignore-field", required_argument, NULL, 'i'},
        {"sink", required_argument, NULL, 's'},
        {"examples", required_argument, NULL, 'e'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct opts *o = &run->o;
    int c;

    o->examples = 3;
    o->ignore = calloc((size_t)argc + 1, sizeof(char *));
    o->sinks = calloc((size_t)argc + 1, sizeof(char *));
    if (o->ignore == NULL || o->sinks == NULL) {
        fprintf(stderr, "sluice: out of memory\n");
        return EXIT_USAGE;
    }
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'i':
            if (optarg[0] == '\0') {
                return usage_error("--ignore-field: empty");
            }
            o->ignore[o->ignore_count++] = optarg;
            break;
        case 's':
            o->sinks[o->sink_count++] = optarg;
            break;
        case 'e': {
            char *end;
            errno = 0;
            long n = strtol(optarg, &end, 10);
            if (optarg[0] < '0' || optarg[0] > '9' || *end != '\0' ||
                errno != 0 || n > 1000000) {
                return usage_error("--examples: `%s` is not a number from "
                                   "0 to 1000000",
                                   optarg);
            }
            o->examples = n;
            break;
        }
        case 'o':
            if (strcmp(optarg, "json") == 0) {
                o->json = 1;
            } else if (strcmp(optarg, "text") != 0) {
                return usage_error("--output: `%s` is not text or json",
                                   optarg);
            }
            break;
        case 'h':
            fputs(usage, stdout);
            return -1;
        default:
            fputs(usage, stderr);
            return EXIT_USAGE;
        }
    }
    if (argc - optind != 2) {
        return usage_error("%s", argc - optind < 2
                                     ? "LEFT and RIGHT are required"
                                     : "only LEFT and RIGHT are expected");
    }
    run->side[0].spec = argv[optind];
    run->side[1].spec = argv[optind + 1];
    return 0;
}

static void run_free(struct run *run)
{
    for (int i = 0; i < 2; i++) {
        side_close(&run->side[i]);
        free(run->map[i]);
        reconcile_parser_destroy(run->ex_parser[i]);
        free(run->ex_line[i].p);
    }
    for (size_t i = 0; i < run->ex_len; i++) {
        free(run->ex[i].key);
        free(run->ex[i].detail);
    }
    free(run->ex);
    free(run->cells.v);
    names_free(&run->g);
    free(run->o.ignore);
    free(run->o.sinks);
}

int reconcile_main(int argc, char **argv)
{
    struct run run;
    struct report rep = {0};
    struct sl_error err = {{0}};
    pthread_t th[2];
    int rc, started[2] = {0, 0};

    memset(&run, 0, sizeof(run));
    run.side[0].fd = run.side[1].fd = -1;
    rc = parse_args(argc, argv, &run);
    if (rc != 0) {
        run_free(&run);
        return rc < 0 ? EXIT_OK : rc;
    }
    /* Checks the paths before reading anything. */
    run.ex_parser[0] = reconcile_parser_new(run.o.ignore,
                                            run.o.ignore_count, &err);
    if (run.ex_parser[0] == NULL) {
        run_free(&run);
        return usage_error("%s", err.msg);
    }
    run.ex_parser[1] = reconcile_parser_new(run.o.ignore,
                                            run.o.ignore_count, &err);
    rc = EXIT_USAGE;
    for (int i = 0; i < 2; i++) {
        run.side[i].index = i;
        run.side[i].o = &run.o;
        if (side_open(&run.side[i]) != 0) {
            fprintf(stderr, "sluice reconcile: %s\n", run.side[i].err.msg);
            goto out;
        }
    }
    json_object_seed(0); /* before the threads make objects */
    for (int i = 0; i < 2; i++) {
        started[i] = pthread_create(&th[i], NULL, side_thread,
                                    &run.side[i]) == 0;
        if (!started[i]) {
            side_thread(&run.side[i]);
        }
    }
    for (int i = 0; i < 2; i++) {
        if (started[i]) {
            pthread_join(th[i], NULL);
        }
    }
    for (int i = 0; i < 2; i++) {
        if (run.side[i].rc != 0) {
            fprintf(stderr, "sluice reconcile: %s\n", run.side[i].err.msg);
            goto out;
        }
    }
    if (map_sinks(&run) != 0) {
        fprintf(stderr, "sluice reconcile: more than %d sinks in all, or "
                        "out of memory\n",
                MAX_SINKS);
        goto out;
    }
    if (run.ex_parser[1] == NULL || compare(&run) != 0 ||
        report_build(&run, &rep) != 0) {
        fprintf(stderr, "sluice reconcile: out of memory\n");
        goto out;
    }
    if (run.o.json) {
        print_json(&run, &rep);
    } else {
        print_text(&run, &rep);
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "sluice reconcile: writing the report: %s\n",
                strerror(errno));
        goto out;
    }
    rc = has_diff(&rep.total) ? EXIT_DIFF : EXIT_OK;
out:
    report_free(&rep);
    run_free(&run);
    return rc;
}
