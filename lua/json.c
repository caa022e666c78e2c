/* json.c -- JSON <-> Lua values: one walk over the text validates and
 * builds, an encoder writes compact sorted JSON.
 *
 * The walk follows the JSON grammar (RFC 8259) over the text byte by
 * byte: strings are scanned 8 bytes at a time, numbers keep their exact
 * 64-bit integers and, for floats, the text they came with (see the
 * memo). A container's members wait on the Lua stack until its end, so
 * each table is made once at its exact size. ljson_equal runs the same
 * walk against a Lua value instead of building one.
 *
 * Lua may run code in the middle of a call: an allocation can start a
 * GC step that calls a __gc finalizer, which may use the same codec.
 * Every call bumps c->gen, and an encode that sees it changed fails
 * rather than return a clobbered buffer. The walk keeps nothing in the
 * codec across a Lua call that allocates (a string is copied into Lua
 * before the next one is read), so it needs no such check. */
#include "json.h"

#include <float.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Offsets are ints. */
#define MAX_TEXT ((size_t)INT_MAX - 8)

#define STR_(x) #x
#define STR(x) STR_(x)
#define TOO_DEEP "nesting deeper than " STR(JSON_MAX_DEPTH)
#define NOT_UTF8 "cannot encode a string that is not valid UTF-8"

/* Registry keys: their addresses are what matters. */
static char codec_key, array_mt_key, object_mt_key;

struct key_rec {
    const char *p; /* anchored: the key string sits in stack slot `slot` */
    size_t len;
    int slot;
};

enum lit { LIT_NULL, LIT_FALSE, LIT_TRUE, LIT_INT, LIT_FLOAT };

struct scalar {
    enum lit kind;
    lua_Integer i;
    double d;
    const char *text; /* LIT_FLOAT: as written */
    size_t text_len;
};

struct path_ent {
    const char *key; /* NULL: an array index */
    size_t n;        /* the key's length, or the index */
};

/* Number text memo: the text each float of the current message came
 * with, keyed by the double's bits, so that a number the script did not
 * change is written back as it came (71.20 stays 71.20, 1e2 stays 1e2)
 * rather than in shortest form. Fixed size: past it, floats are simply
 * written in shortest form. */
#define MEMO_SLOTS 512 /* a power of two, at most 3/4 used */
#define MEMO_TEXT 8192
#define MEMO_NUMBER_MAX 40

struct memo_ent {
    uint64_t bits;
    uint32_t epoch;
    uint16_t off;
    uint8_t len;
};

struct ljson_codec {
    struct memo_ent memo[MEMO_SLOTS];
    char memo_text[MEMO_TEXT];
    uint32_t memo_epoch;
    size_t memo_used, memo_count;
    char *scratch; /* unescaped strings, long numbers for strtod */
    size_t scratch_cap;
    char *out;
    size_t out_len, out_cap;
    /* A stack: each object being encoded or compared owns the segment
     * from where it started; nested objects push above it. */
    struct key_rec *keys;
    size_t nkeys, keys_cap;
    /* ljson_equal's hash indexes over large objects' keys: a stack too. */
    uint32_t *hidx;
    size_t nhidx, hidx_cap;
    unsigned gen; /* bumped by every call: see the top of the file */
    /* The Lua state's allocator, when the codec belongs to one: its
     * buffers then count against the state's memory cap (a json.encode
     * of a huge table fails with "out of memory" instead of growing the
     * process). NULL: malloc. */
    lua_Alloc alloc;
    void *alloc_ud;
    long root_count; /* the last decoded document's top-level entries */
    struct path_ent path[JSON_MAX_DEPTH + 1];
};

ljson_codec_t *ljson_codec_new(void)
{
    ljson_codec_t *c = calloc(1, sizeof(ljson_codec_t));

    if (c != NULL) {
        c->memo_epoch = 1; /* zeroed slots are empty */
    }
    return c;
}

long ljson_decoded_count(const ljson_codec_t *c)
{
    return c->root_count;
}

void ljson_codec_forget(ljson_codec_t *c)
{
    if (c->memo_count == 0) {
        return;
    }
    c->memo_epoch++;
    c->memo_count = 0;
    c->memo_used = 0;
}

static uint64_t double_bits(double d)
{
    uint64_t b;

    memcpy(&b, &d, sizeof(b));
    return b;
}

static struct memo_ent *memo_slot(ljson_codec_t *c, uint64_t bits)
{
    size_t i = (size_t)((bits * 0x9E3779B97F4A7C15ULL) >> 55) &
               (MEMO_SLOTS - 1);

    while (c->memo[i].epoch == c->memo_epoch && c->memo[i].bits != bits) {
        i = (i + 1) & (MEMO_SLOTS - 1);
    }
    return &c->memo[i];
}

/* Remembers the text a float came with; the first text of a value
 * wins. */
static void memo_put(ljson_codec_t *c, double d, const char *text, size_t n)
{
    uint64_t bits = double_bits(d);
    struct memo_ent *e;

    if (n > MEMO_NUMBER_MAX || c->memo_used + n > MEMO_TEXT ||
        c->memo_count >= MEMO_SLOTS * 3 / 4) {
        return;
    }
    e = memo_slot(c, bits);
    if (e->epoch == c->memo_epoch) {
        return;
    }
    *e = (struct memo_ent){.bits = bits, .epoch = c->memo_epoch,
                           .off = (uint16_t)c->memo_used, .len = (uint8_t)n};
    memcpy(c->memo_text + c->memo_used, text, n);
    c->memo_used += n;
    c->memo_count++;
}

static const char *memo_get(ljson_codec_t *c, double d, size_t *n)
{
    struct memo_ent *e;

    if (c->memo_count == 0) {
        return NULL;
    }
    e = memo_slot(c, double_bits(d));
    if (e->epoch != c->memo_epoch) {
        return NULL;
    }
    *n = e->len;
    return c->memo_text + e->off;
}

static void *buf_realloc(ljson_codec_t *c, void *p, size_t old, size_t n)
{
    if (c->alloc != NULL) {
        return c->alloc(c->alloc_ud, p, p != NULL ? old : 0, n);
    }
    if (n == 0) {
        free(p);
        return NULL;
    }
    return realloc(p, n);
}

/* Frees *p, cap elements of elem bytes. */
static void buf_free(ljson_codec_t *c, void **p, size_t *cap, size_t elem)
{
    if (*p != NULL) {
        buf_realloc(c, *p, *cap * elem, 0);
    }
    *p = NULL;
    *cap = 0;
}

void ljson_codec_free(ljson_codec_t *c)
{
    if (c == NULL) {
        return;
    }
    buf_free(c, (void **)&c->scratch, &c->scratch_cap, 1);
    buf_free(c, (void **)&c->out, &c->out_cap, 1);
    buf_free(c, (void **)&c->keys, &c->keys_cap, sizeof(*c->keys));
    buf_free(c, (void **)&c->hidx, &c->hidx_cap, sizeof(*c->hidx));
    free(c);
}

/* Buffers a big document grew are given back at the next call, so that
 * one big message does not hold memory (counted against the script's
 * cap) for the rest of the worker's life. */
#define KEEP_BYTES ((size_t)1 << 20)

static void trim(ljson_codec_t *c)
{
    if (c->out_cap > KEEP_BYTES) {
        buf_free(c, (void **)&c->out, &c->out_cap, 1);
        c->out_len = 0;
    }
}

static int grow(ljson_codec_t *c, void **p, size_t *cap, size_t need,
                   size_t elem, size_t min)
{
    size_t n = *cap ? *cap : min;
    void *q;

    while (n < need) {
        if (n > SIZE_MAX / 2 / elem) {
            return -1;
        }
        n *= 2;
    }
    q = buf_realloc(c, *p, *cap * elem, n * elem);
    if (q == NULL) {
        return -1;
    }
    *p = q;
    *cap = n;
    return 0;
}

static inline int scratch_reserve(ljson_codec_t *c, size_t n)
{
    return n <= c->scratch_cap
               ? 0
               : grow(c, (void **)&c->scratch, &c->scratch_cap, n, 1, 256);
}

static inline int out_reserve(ljson_codec_t *c, size_t n)
{
    return c->out_cap - c->out_len >= n
               ? 0
               : grow(c, (void **)&c->out, &c->out_cap, c->out_len + n, 1, 1024);
}

static inline int keys_reserve(ljson_codec_t *c, size_t n)
{
    return c->keys_cap - c->nkeys >= n
               ? 0
               : grow(c, (void **)&c->keys, &c->keys_cap, c->nkeys + n,
                      sizeof(*c->keys), 32);
}

/* ---- the Lua side: null, marker metatables, table kinds ---- */

void ljson_push_null(lua_State *L)
{
    lua_pushlightuserdata(L, NULL);
}

int ljson_is_null(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA &&
           lua_touserdata(L, idx) == NULL;
}

/* Pushes the marker metatable registered under key, creating it. */
static void push_marker(lua_State *L, char *key, const char *name)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) {
        return;
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

enum kind { PLAIN, ARRAY, OBJECT };

/* What the table at idx is marked as; amt and omt are the stack slots of
 * the marker metatables (nil when never created). */
static enum kind table_kind(lua_State *L, int idx, int amt, int omt)
{
    enum kind k = PLAIN;

    if (lua_getmetatable(L, idx)) {
        k = lua_rawequal(L, -1, amt)   ? ARRAY
            : lua_rawequal(L, -1, omt) ? OBJECT
                                       : PLAIN;
        lua_pop(L, 1);
    }
    return k;
}

/* ---- the walk: the grammar over the text ---- */

struct walk {
    ljson_codec_t *c;
    lua_State *L; /* decode: push values here; NULL: validate only */
    const char *s;
    int len;
    int amt, omt;
    struct sl_error *err; /* NULL: no message wanted (ljson_equal) */
};

/* Bytes that end a run of plain string content: the quote, the
 * backslash, control characters, and every non-ASCII byte, whose UTF-8
 * sequence is checked on the slow path (RFC 8259 text is UTF-8). */
static const unsigned char str_stop[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 1,
};

/* The length of the well-formed UTF-8 sequence at p (RFC 3629: no
 * overlong forms, no surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];

    if (c >= 0xc2 && c <= 0xdf) {
        return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    }
    if (c >= 0xe0 && c <= 0xef) {
        unsigned lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return n >= 3 && p[1] >= lo && p[1] <= hi &&
                       (p[2] & 0xc0) == 0x80
                   ? 3
                   : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return n >= 4 && p[1] >= lo && p[1] <= hi &&
                       (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80
                   ? 4
                   : 0;
    }
    return 0;
}

/* Bytes that end a literal (and NUL, which no JSON text holds). */
static const unsigned char lit_stop[256] = {
    [0] = 1,    ['\t'] = 1, ['\n'] = 1, ['\r'] = 1,
    [' '] = 1,  [','] = 1,  [']'] = 1,  ['}'] = 1,
};

static const double pow10_tab[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* The 8-byte tricks find the first byte with the lowest set bit. */
#define LITTLE_ENDIAN_ (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)

/* The offset of the first '"', '\\', control character or non-ASCII
 * byte in p[0, n), or n. Strings are most of the bytes: this looks at 8 at a time (the
 * usual bit tricks: a byte's high bit is set in `t` when it is zero after
 * xor with the quote or the backslash, or below 0x20; the lowest such
 * byte is exact). */
static inline size_t plain_run(const unsigned char *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101u, highs = ones * 0x80;
    size_t i = 0;

    for (; LITTLE_ENDIAN_ && i + 8 <= n; i += 8) {
        uint64_t v, q, b, t;

        memcpy(&v, p + i, 8);
        q = v ^ (ones * '"');
        b = v ^ (ones * '\\');
        t = ((q - ones) & ~q) | ((b - ones) & ~b) |
            ((v - ones * 0x20) & ~v) | v;
        if ((t &= highs) != 0) {
            return i + (size_t)(__builtin_ctzll(t) >> 3);
        }
    }
    while (i < n && !str_stop[p[i]]) {
        i++;
    }
    return i;
}

/* memcmp(a, b, n) == 0 without the call, for the short keys and values
 * of most documents: overlapping loads, never past n. */
static inline int same_bytes(const char *a, const char *b, size_t n)
{
    uint64_t x, y, u, v;
    uint32_t x4, y4, u4, v4;

    if (n >= 8 && n <= 16) {
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        memcpy(&u, a + n - 8, 8);
        memcpy(&v, b + n - 8, 8);
        return ((x ^ y) | (u ^ v)) == 0;
    }
    if (n >= 4 && n < 8) {
        memcpy(&x4, a, 4);
        memcpy(&y4, b, 4);
        memcpy(&u4, a + n - 4, 4);
        memcpy(&v4, b + n - 4, 4);
        return ((x4 ^ y4) | (u4 ^ v4)) == 0;
    }
    if (n < 4) {
        for (size_t i = 0; i < n; i++) {
            if (a[i] != b[i]) {
                return 0;
            }
        }
        return 1;
    }
    return memcmp(a, b, n) == 0;
}

static inline int at(const struct walk *w, int p)
{
    return p < w->len ? (unsigned char)w->s[p] : -1;
}

static inline int skip_ws(const struct walk *w, int p)
{
    /* Compact JSON has none: one test in the common case. */
    if (p < w->len && (unsigned char)w->s[p] > ' ') {
        return p;
    }
    while (p < w->len && (w->s[p] == ' ' || w->s[p] == '\n' ||
                          w->s[p] == '\r' || w->s[p] == '\t')) {
        p++;
    }
    return p;
}

static inline int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int fail_at(const struct walk *w, int pos, const char *what)
{
    sl_error_set(w->err, "json: byte %d: %s", pos, what);
    return -1;
}

/* "..., found X": what stands at pos. */
static int fail(const struct walk *w, int pos, const char *what)
{
    char found[32];
    int c = at(w, pos);

    if (w->err == NULL) {
        return -1;
    }
    if (c < 0) {
        snprintf(found, sizeof(found), "the end of the text");
    } else if (c == 0) {
        snprintf(found, sizeof(found), "a NUL byte");
    } else if (c > ' ' && c < 0x7f) {
        snprintf(found, sizeof(found), "'%c'", c);
    } else {
        snprintf(found, sizeof(found), "byte 0x%02x", c);
    }
    sl_error_set(w->err, "json: byte %d: %s, found %s", pos, what, found);
    return -1;
}

static int hex4(const struct walk *w, int p, int limit, unsigned *cp)
{
    unsigned v = 0;

    for (int k = 0; k < 4; k++, p++) {
        int c = p < limit ? (unsigned char)w->s[p] : -1;

        if (is_digit(c)) {
            v = v * 16 + (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v = v * 16 + (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v = v * 16 + (unsigned)(c - 'A' + 10);
        } else {
            return fail(w, p, "expected 4 hex digits after \\u");
        }
    }
    *cp = v;
    return 0;
}

/* The slow half of read_string: the string at q has an escape or a
 * control character at r. Unescapes into the scratch buffer. */
static int unescape(struct walk *w, int q, int r, int limit, const char **out,
                    size_t *n)
{
    const unsigned char *s = (const unsigned char *)w->s;
    size_t k = (size_t)(r - q - 1);
    char *o;

    /* Unescaping never lengthens: \uXXXX is 6 bytes for at most 3. */
    if (scratch_reserve(w->c, (size_t)(limit - q)) != 0) {
        return fail_at(w, q, "out of memory");
    }
    o = w->c->scratch;
    memcpy(o, s + q + 1, k);
    while (r < limit) {
        unsigned c = s[r], cp;

        if (!str_stop[c]) {
            o[k++] = (char)c;
            r++;
            continue;
        }
        if (c >= 0x80) {
            size_t u = utf8_len(s + r, (size_t)(limit - r));
            if (u == 0) {
                return fail(w, r, "invalid UTF-8 in a string");
            }
            memcpy(o + k, s + r, u);
            k += u;
            r += (int)u;
            continue;
        }
        if (c == '"') {
            break;
        }
        if (c < 0x20) {
            return fail(w, r,
                        "control characters must be escaped in a string");
        }
        if (r + 1 >= limit) {
            return fail(w, limit, "unterminated string");
        }
        switch (s[r + 1]) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u':
            if (hex4(w, r + 2, limit, &cp) != 0) {
                return -1;
            }
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                return fail_at(w, r,
                               "unpaired UTF-16 surrogate in \\u escape");
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo;

                if (r + 7 >= limit || s[r + 6] != '\\' || s[r + 7] != 'u') {
                    return fail_at(w, r,
                                   "unpaired UTF-16 surrogate in \\u escape");
                }
                if (hex4(w, r + 8, limit, &lo) != 0) {
                    return -1;
                }
                if (lo < 0xdc00 || lo > 0xdfff) {
                    return fail_at(w, r,
                                   "unpaired UTF-16 surrogate in \\u escape");
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                r += 6;
            }
            if (cp < 0x80) {
                o[k++] = (char)cp;
            } else if (cp < 0x800) {
                o[k++] = (char)(0xc0 | cp >> 6);
                o[k++] = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                o[k++] = (char)(0xe0 | cp >> 12);
                o[k++] = (char)(0x80 | (cp >> 6 & 0x3f));
                o[k++] = (char)(0x80 | (cp & 0x3f));
            } else {
                o[k++] = (char)(0xf0 | cp >> 18);
                o[k++] = (char)(0x80 | (cp >> 12 & 0x3f));
                o[k++] = (char)(0x80 | (cp >> 6 & 0x3f));
                o[k++] = (char)(0x80 | (cp & 0x3f));
            }
            r += 4;
            break;
        default:
            return fail(w, r + 1, "invalid escape in a string");
        }
        r += 2;
    }
    if (r >= limit) {
        return fail(w, limit, "unterminated string");
    }
    *out = o;
    *n = k;
    return r + 1;
}

/* Reads the string whose opening quote is at q. *out is the text itself
 * when there is no escape (the common case: no copy), else the scratch
 * buffer, valid until the next string. Returns the offset after it. */
static int read_string(struct walk *w, int q, const char **out, size_t *n)
{
    const unsigned char *s = (const unsigned char *)w->s;
    int r = q + 1, limit = w->len;

    for (;;) {
        r += (int)plain_run(s + r, (size_t)(w->len - r));
        if (r < limit && s[r] == '"') {
            *out = w->s + q + 1;
            *n = (size_t)(r - q - 1);
            return r + 1;
        }
        if (r >= limit) {
            return fail(w, r, "unterminated string");
        }
        if (s[r] < 0x80) {
            return unescape(w, q, r, limit, out, n);
        }
        size_t u = utf8_len(s + r, (size_t)(limit - r));
        if (u == 0) {
            return fail(w, r, "invalid UTF-8 in a string");
        }
        r += (int)u;
    }
}

static double slow_strtod(struct walk *w, int q, int end)
{
    char local[64], *b = local;
    size_t n = (size_t)(end - q);

    if (n >= sizeof(local)) {
        if (scratch_reserve(w->c, n + 1) != 0) {
            return NAN;
        }
        b = w->c->scratch;
    }
    memcpy(b, w->s + q, n);
    b[n] = '\0';
    /* The grammar was checked, so strtod reads all of it (the C locale's
     * '.' is assumed, as Lua itself does). */
    return strtod(b, NULL);
}

/* A number in [q, end): integers that fit int64 stay integers. */
static int read_number(struct walk *w, int q, int end, struct scalar *v)
{
    const unsigned char *s = (const unsigned char *)w->s;
    uint64_t m = 0;
    int p = q, neg = 0, exact = 1, frac = 0, isint = 1, eneg = 0;
    long ex = 0;

    if (s[p] == '-') {
        neg = 1;
        p++;
    }
    if (p >= end || !is_digit(s[p])) {
        return fail(w, p, "expected a digit");
    }
    if (s[p] == '0') {
        p++;
        if (p < end && is_digit(s[p])) {
            return fail_at(w, p, "a number cannot have leading zeros");
        }
    } else {
        for (; p < end && is_digit(s[p]); p++) {
            if (m <= (UINT64_MAX - 9) / 10) {
                m = m * 10 + (uint64_t)(s[p] - '0');
            } else {
                exact = 0;
            }
        }
    }
    if (p < end && s[p] == '.') {
        isint = 0;
        p++;
        if (p >= end || !is_digit(s[p])) {
            return fail(w, p, "expected a digit after '.'");
        }
        for (; p < end && is_digit(s[p]); p++) {
            if (m <= (UINT64_MAX - 9) / 10) {
                m = m * 10 + (uint64_t)(s[p] - '0');
                frac++;
            } else {
                exact = 0;
            }
        }
    }
    if (p < end && (s[p] == 'e' || s[p] == 'E')) {
        isint = 0;
        p++;
        if (p < end && (s[p] == '+' || s[p] == '-')) {
            eneg = s[p] == '-';
            p++;
        }
        if (p >= end || !is_digit(s[p])) {
            return fail(w, p, "expected a digit in the exponent");
        }
        for (; p < end && is_digit(s[p]); p++) {
            if (ex < 100000) {
                ex = ex * 10 + (s[p] - '0');
            }
        }
    }
    /* Greedy: what follows must end the literal. */
    if (p < end && !lit_stop[s[p]]) {
        return fail(w, p, "unexpected character in a number");
    }
    if (isint && exact && m <= (uint64_t)INT64_MAX + (uint64_t)neg) {
        v->kind = LIT_INT;
        v->i = !neg                        ? (lua_Integer)m
               : m == (uint64_t)1 << 63 ? INT64_MIN
                                          : -(lua_Integer)m;
        return p;
    }
    v->kind = LIT_FLOAT;
    v->text = w->s + q;
    v->text_len = (size_t)(p - q);
    long e10 = (eneg ? -ex : ex) - frac;
    if (exact && m <= (uint64_t)1 << 53 && e10 >= -22 && e10 <= 22) {
        /* Both operands exact, one rounding: correctly rounded, as strtod
         * would be, at a fraction of the cost. */
        double d = (double)m;
        d = e10 < 0 ? d / pow10_tab[-e10] : d * pow10_tab[e10];
        v->d = neg ? -d : d;
    } else {
        v->d = slow_strtod(w, q, p);
        if (isnan(v->d)) {
            return fail_at(w, q, "out of memory");
        }
        /* Past DBL_MAX: no double holds it, and no JSON text could be
         * written back for it (RFC 8259 lets a parser limit the range). */
        if (isinf(v->d)) {
            return fail_at(w, q, "number out of range");
        }
    }
    return p;
}

static int read_word(struct walk *w, int q, int end, const char *word,
                     size_t n)
{
    const char *s = w->s;

    if ((size_t)(end - q) < n || memcmp(s + q, word, n) != 0 ||
        (q + (int)n < end && !lit_stop[(unsigned char)s[q + (int)n]])) {
        return fail_at(w, q, "invalid literal (expected true, false, null "
                             "or a number)");
    }
    return q + (int)n;
}

/* A literal at q: true, false, null or a number, which must end at
 * whitespace, ',', ']', '}' or the end of the text. */
static int read_literal(struct walk *w, int q, struct scalar *v)
{
    int end = w->len;

    switch (w->s[q]) {
    case 't':
        v->kind = LIT_TRUE;
        return read_word(w, q, end, "true", 4);
    case 'f':
        v->kind = LIT_FALSE;
        return read_word(w, q, end, "false", 5);
    case 'n':
        v->kind = LIT_NULL;
        return read_word(w, q, end, "null", 4);
    default:
        return read_number(w, q, end, v);
    }
}

static void push_scalar(lua_State *L, const struct scalar *v)
{
    switch (v->kind) {
    case LIT_NULL: ljson_push_null(L); break;
    case LIT_FALSE: lua_pushboolean(L, 0); break;
    case LIT_TRUE: lua_pushboolean(L, 1); break;
    case LIT_INT: lua_pushinteger(L, v->i); break;
    case LIT_FLOAT: lua_pushnumber(L, v->d); break;
    }
}

static int is_value_start(int c)
{
    return c == '{' || c == '[' || c == '"' || c == '-' || is_digit(c) ||
           c == 't' || c == 'f' || c == 'n';
}

static int walk_value(struct walk *w, int q, int depth);

/* A container being decoded. Its members wait on the Lua stack above
 * `slot` until its end, so the table is made once at its exact size;
 * past PENDING_MAX members the table is made and the rest go straight
 * in (the Lua stack is finite). */
#define PENDING_MAX 1024

struct container {
    int slot;  /* the stack top before the first member */
    int made;  /* the table exists, at slot + 1 */
    long n;    /* members so far */
};

static int open_container(struct walk *w, int q, int depth,
                          struct container *ct)
{
    if (depth > JSON_MAX_DEPTH) {
        return fail_at(w, q, TOO_DEEP);
    }
    *ct = (struct container){.slot = w->L != NULL ? lua_gettop(w->L) : 0};
    return 0;
}

/* Room on the stack for the members to come: checked every 16 members,
 * for 16 (a key and a value each at this level) and what making the
 * table pushes. */
static int member_room(struct walk *w, const struct container *ct, int q)
{
    if ((ct->n & 15) != 0 || lua_checkstack(w->L, 2 * 16 + 4)) {
        return 0;
    }
    return fail_at(w, q, "out of memory");
}

/* Makes the table of the members pending above ct->slot, at slot + 1. */
static void make_table(struct walk *w, struct container *ct, int array)
{
    lua_State *L = w->L;
    int pending = lua_gettop(L) - ct->slot;

    if (array) {
        lua_createtable(L, pending, 0);
        lua_pushvalue(L, w->amt);
        lua_setmetatable(L, -2);
    } else {
        lua_createtable(L, 0, pending / 2);
    }
    lua_rotate(L, ct->slot + 1, 1);
    if (array) {
        for (int i = pending; i >= 1; i--) {
            lua_rawseti(L, ct->slot + 1, i);
        }
    } else {
        /* In the text's order: with a repeated key the last one wins. */
        for (int i = ct->slot + 2; i <= ct->slot + pending; i += 2) {
            lua_pushvalue(L, i);
            lua_pushvalue(L, i + 1);
            lua_rawset(L, ct->slot + 1);
        }
        lua_settop(L, ct->slot + 1);
    }
    ct->made = 1;
}

/* After a member: into the table once it exists, else left pending. */
static void member_done(struct walk *w, struct container *ct, int array)
{
    lua_State *L = w->L;

    ct->n++;
    if (L == NULL) {
        return;
    }
    if (!ct->made) {
        if (ct->n == PENDING_MAX) {
            make_table(w, ct, array);
        }
    } else if (array) {
        lua_rawseti(L, ct->slot + 1, (lua_Integer)ct->n);
    } else {
        lua_rawset(L, ct->slot + 1); /* a repeated key: the last wins */
    }
}

/* At the container's closing byte q: its table, and the document's
 * top-level count. Returns the offset after q. */
static int close_container(struct walk *w, struct container *ct, int array,
                           int depth, int q)
{
    if (w->L != NULL && !ct->made) {
        make_table(w, ct, array);
    }
    if (depth == 1) {
        w->c->root_count = ct->n;
    }
    return q + 1;
}

static int walk_object(struct walk *w, int q, int depth)
{
    lua_State *L = w->L;
    struct container ct;
    int first = 1;

    if (open_container(w, q, depth, &ct) != 0) {
        return -1;
    }
    q = skip_ws(w, q + 1);
    if (at(w, q) != '}') {
        for (;;) {
            const char *k;
            size_t kn;

            if (at(w, q) != '"') {
                return fail(w, q, first ? "expected a string key or '}'"
                                        : "expected a string key");
            }
            q = read_string(w, q, &k, &kn);
            if (q < 0) {
                return -1;
            }
            if (L != NULL) {
                if (member_room(w, &ct, q) != 0) {
                    return -1;
                }
                lua_pushlstring(L, k, kn);
            }
            q = skip_ws(w, q);
            if (at(w, q) != ':') {
                return fail(w, q, "expected ':'");
            }
            q = walk_value(w, skip_ws(w, q + 1), depth);
            if (q < 0) {
                return -1;
            }
            member_done(w, &ct, 0);
            q = skip_ws(w, q);
            if (at(w, q) == ',') {
                q = skip_ws(w, q + 1);
                first = 0;
            } else if (at(w, q) == '}') {
                break;
            } else {
                return fail(w, q, "expected ',' or '}'");
            }
        }
    }
    return close_container(w, &ct, 0, depth, q);
}

static int walk_array(struct walk *w, int q, int depth)
{
    lua_State *L = w->L;
    struct container ct;

    if (open_container(w, q, depth, &ct) != 0) {
        return -1;
    }
    q = skip_ws(w, q + 1);
    if (at(w, q) != ']') {
        if (!is_value_start(at(w, q))) {
            return fail(w, q, "expected a value or ']'");
        }
        for (;;) {
            if (L != NULL && member_room(w, &ct, q) != 0) {
                return -1;
            }
            q = walk_value(w, q, depth);
            if (q < 0) {
                return -1;
            }
            member_done(w, &ct, 1);
            q = skip_ws(w, q);
            if (at(w, q) == ',') {
                q = skip_ws(w, q + 1);
            } else if (at(w, q) == ']') {
                break;
            } else {
                return fail(w, q, "expected ',' or ']'");
            }
        }
    }
    return close_container(w, &ct, 1, depth, q);
}

/* The value at q; returns the offset after it, or -1. */
static int walk_value(struct walk *w, int q, int depth)
{
    struct scalar v;
    const char *p;
    size_t n;

    switch (at(w, q)) {
    case '{':
        return walk_object(w, q, depth + 1);
    case '[':
        return walk_array(w, q, depth + 1);
    case '"':
        q = read_string(w, q, &p, &n);
        if (q >= 0 && w->L != NULL) {
            lua_pushlstring(w->L, p, n);
        }
        return q;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
    case 't': case 'f': case 'n':
        q = read_literal(w, q, &v);
        if (q >= 0 && w->L != NULL) {
            push_scalar(w->L, &v);
            if (v.kind == LIT_FLOAT) {
                memo_put(w->c, v.d, v.text, v.text_len);
            }
        }
        return q;
    default:
        return fail(w, q, "expected a value");
    }
}

/* Walks the whole text: one value, then only whitespace. */
static int walk_document(struct walk *w)
{
    int q = walk_value(w, skip_ws(w, 0), 0);

    if (q < 0) {
        return -1;
    }
    q = skip_ws(w, q);
    return q == w->len ? 0 : fail(w, q, "expected the end of the text");
}

int ljson_decode(ljson_codec_t *c, lua_State *L, const char *text,
                 size_t len, struct sl_error *err)
{
    struct walk w = {.c = c, .L = L, .s = text, .err = err};
    int base = lua_gettop(L), q;

    if (len > MAX_TEXT) {
        return sl_error_set(err, "json: text too long (%zu bytes)", len);
    }
    w.len = (int)len;
    if (!lua_checkstack(L, 4)) {
        return sl_error_set(err, "json: out of memory");
    }
    if (c->scratch_cap > KEEP_BYTES) {
        buf_free(c, (void **)&c->scratch, &c->scratch_cap, 1);
    }
    c->root_count = -1;
    q = skip_ws(&w, 0);
    if (at(&w, q) == '{' || at(&w, q) == '[') {
        push_marker(L, &array_mt_key, "json.array");
        w.amt = lua_gettop(L);
    }
    c->gen++;
    if (walk_document(&w) != 0) {
        lua_settop(L, base);
        return -1;
    }
    if (w.amt != 0) {
        lua_replace(L, w.amt);
    }
    return 0;
}

/* ---- equality: the walk against a Lua value ---- */

static int eq_value(struct walk *w, int q, int depth, int slot);

static uint32_t hash_key(const char *k, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++) {
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    }
    return h;
}

/* Objects with more than this many keys get a hash index for lookups;
 * smaller ones are searched linearly, which is faster. */
#define LINEAR_KEYS 16

/* Indexes the n key records from base: a table of record numbers + 1
 * (0: empty) with room to spare, at c->hidx + c->nhidx. */
static int index_keys(ljson_codec_t *c, size_t base, size_t n, size_t *hsize)
{
    size_t size = 32, hbase = c->nhidx;

    while (size < 2 * n) {
        size *= 2;
    }
    if (c->hidx_cap - c->nhidx < size &&
        grow(c, (void **)&c->hidx, &c->hidx_cap, c->nhidx + size,
             sizeof(*c->hidx), 256) != 0) {
        return -1;
    }
    memset(c->hidx + hbase, 0, size * sizeof(*c->hidx));
    c->nhidx += size;
    for (size_t j = 0; j < n; j++) {
        const struct key_rec *r = &c->keys[base + j];
        size_t h = hash_key(r->p, r->len) & (size - 1);

        while (c->hidx[hbase + h] != 0) {
            h = (h + 1) & (size - 1);
        }
        c->hidx[hbase + h] = (uint32_t)j + 1;
    }
    *hsize = size;
    return 0;
}

/* The record of the n from base whose key is k, or NULL. hsize: 0, or
 * the size of the hash index at hbase. */
static struct key_rec *find_key(ljson_codec_t *c, size_t base, size_t n,
                                size_t hbase, size_t hsize, const char *k,
                                size_t kn)
{
    if (hsize == 0) {
        for (size_t j = 0; j < n; j++) {
            struct key_rec *r = &c->keys[base + j];

            if (r->len == kn && same_bytes(r->p, k, kn)) {
                return r;
            }
        }
        return NULL;
    }
    for (size_t h = hash_key(k, kn) & (hsize - 1);;
         h = (h + 1) & (hsize - 1)) {
        uint32_t j = c->hidx[hbase + h];
        struct key_rec *r;

        if (j == 0) {
            return NULL;
        }
        r = &c->keys[base + j - 1];
        if (r->len == kn && same_bytes(r->p, k, kn)) {
            return r;
        }
    }
}

/* The table's entries first (lua_next; keys and values stay on the
 * stack, as when encoding), then the text's members in order, each
 * looked up among them and compared, so the text is walked once and no
 * key string is interned. A member naming an entry named already (a
 * duplicate key) or none differs; when every entry was named, the keys
 * are the same set. */
static int eq_object(struct walk *w, int q, int depth, int slot)
{
    lua_State *L = w->L;
    ljson_codec_t *c = w->c;
    size_t base = c->nkeys, hbase = c->nhidx, n, hsize = 0, named = 0;
    int top = lua_gettop(L), rc = -1;

    if (depth > JSON_MAX_DEPTH || lua_type(L, slot) != LUA_TTABLE ||
        table_kind(L, slot, w->amt, w->omt) == ARRAY ||
        !lua_checkstack(L, 3)) {
        return -1;
    }
    lua_pushnil(L);
    while (lua_next(L, slot)) {
        struct key_rec *r;

        n = c->nkeys - base;
        if (lua_type(L, -2) != LUA_TSTRING ||
            ((n & 7) == 0 && !lua_checkstack(L, 2 * 8 + 3)) ||
            keys_reserve(c, 1) != 0) {
            goto out;
        }
        r = &c->keys[c->nkeys++];
        r->p = lua_tolstring(L, -2, &r->len);
        r->slot = top + 2 * (int)n + 1; /* its value is in the next */
        lua_pushvalue(L, -2);
    }
    n = c->nkeys - base;
    if (n > LINEAR_KEYS && index_keys(c, base, n, &hsize) != 0) {
        goto out;
    }
    q = skip_ws(w, q + 1);
    if (at(w, q) != '}') {
        for (;;) {
            const char *k;
            size_t kn;
            struct key_rec *r;
            int vslot;

            if (at(w, q) != '"' || (q = read_string(w, q, &k, &kn)) < 0) {
                goto out;
            }
            r = find_key(c, base, n, hbase, hsize, k, kn);
            if (r == NULL || r->slot < 0) {
                goto out;
            }
            /* Taken before comparing: nested objects may move c->keys. */
            vslot = r->slot + 1;
            r->slot = -1;
            q = skip_ws(w, q);
            if (at(w, q) != ':') {
                goto out;
            }
            q = eq_value(w, skip_ws(w, q + 1), depth, vslot);
            if (q < 0) {
                goto out;
            }
            named++;
            q = skip_ws(w, q);
            if (at(w, q) == '}') {
                break;
            }
            if (at(w, q) != ',') {
                goto out;
            }
            q = skip_ws(w, q + 1);
        }
    }
    if (named == n) {
        rc = q + 1;
    }
out:
    c->nkeys = base;
    c->nhidx = hbase;
    lua_settop(L, top);
    return rc;
}

static size_t count_keys(lua_State *L, int slot)
{
    size_t n = 0;

    lua_pushnil(L);
    while (lua_next(L, slot)) {
        lua_pop(L, 1);
        n++;
    }
    return n;
}

static int eq_array(struct walk *w, int q, int depth, int slot)
{
    lua_State *L = w->L;
    enum kind kind;
    lua_Integer n = 0;

    if (depth > JSON_MAX_DEPTH || lua_type(L, slot) != LUA_TTABLE ||
        (kind = table_kind(L, slot, w->amt, w->omt)) == OBJECT ||
        !lua_checkstack(L, 3)) {
        return -1;
    }
    q = skip_ws(w, q + 1);
    if (at(w, q) == ']') {
        q++;
    } else {
        for (;;) {
            n++;
            /* nil in a marked array encodes as null: eq_value agrees. */
            if (lua_rawgeti(L, slot, n) == LUA_TNIL && kind != ARRAY) {
                lua_pop(L, 1);
                return -1;
            }
            q = eq_value(w, q, depth, lua_gettop(L));
            lua_pop(L, 1);
            if (q < 0) {
                return -1;
            }
            q = skip_ws(w, q);
            if (at(w, q) == ',') {
                q = skip_ws(w, q + 1);
            } else if (at(w, q) == ']') {
                q++;
                break;
            } else {
                return -1;
            }
        }
    }
    if (kind == ARRAY) {
        return (lua_Integer)lua_rawlen(L, slot) == n ? q : -1;
    }
    /* A plain table encodes as an array only when its keys are exactly
     * 1..n, n > 0 (empty is {}); 1..n are present, so count them. */
    return n > 0 && count_keys(L, slot) == (size_t)n ? q : -1;
}

static int scalar_equal(lua_State *L, int slot, const struct scalar *v)
{
    switch (v->kind) {
    case LIT_NULL:
        return lua_isnil(L, slot) || ljson_is_null(L, slot);
    case LIT_FALSE:
    case LIT_TRUE:
        return lua_type(L, slot) == LUA_TBOOLEAN &&
               lua_toboolean(L, slot) == (v->kind == LIT_TRUE);
    case LIT_INT:
        return lua_isinteger(L, slot) && lua_tointeger(L, slot) == v->i;
    case LIT_FLOAT:
        if (lua_type(L, slot) != LUA_TNUMBER || lua_isinteger(L, slot)) {
            return 0;
        }
        double d = lua_tonumber(L, slot);
        return d == v->d && !signbit(d) == !signbit(v->d);
    }
    return 0;
}

static int eq_value(struct walk *w, int q, int depth, int slot)
{
    lua_State *L = w->L;
    struct scalar v;
    const char *p, *ls;
    size_t n, ln;

    switch (at(w, q)) {
    case '{':
        return eq_object(w, q, depth + 1, slot);
    case '[':
        return eq_array(w, q, depth + 1, slot);
    case '"':
        if (lua_type(L, slot) != LUA_TSTRING) {
            return -1;
        }
        q = read_string(w, q, &p, &n);
        ls = lua_tolstring(L, slot, &ln);
        return q >= 0 && ln == n && same_bytes(ls, p, n) ? q : -1;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
    case 't': case 'f': case 'n':
        q = read_literal(w, q, &v);
        return q >= 0 && scalar_equal(L, slot, &v) ? q : -1;
    default:
        return -1;
    }
}

int ljson_equal(ljson_codec_t *c, lua_State *L, int idx, const char *text,
                size_t len)
{
    struct walk w = {.c = c, .L = L, .s = text};
    int top = lua_gettop(L), q;

    if (len > MAX_TEXT || !lua_checkstack(L, 4)) {
        return 0;
    }
    idx = lua_absindex(L, idx);
    w.len = (int)len;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
    w.amt = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &object_mt_key);
    w.omt = lua_gettop(L);
    c->gen++;
    q = eq_value(&w, skip_ws(&w, 0), 0, idx);
    if (q >= 0) {
        q = skip_ws(&w, q);
    }
    lua_settop(L, top);
    return q == w.len;
}

/* ---- encoding ---- */

struct enc {
    ljson_codec_t *c;
    lua_State *L;
    int amt, omt;
    struct sl_error *err;
    /* ljson_encode_changed: the text's top-level entry count (-1: none),
     * and whether the root turned out to have as many (then the encode
     * stops, for ljson_equal to decide). */
    long same_count;
    int maybe_same;
};

/* enc_value's result when the root has same_count entries. */
#define ENC_MAYBE_SAME 1

/* What follows a backslash for bytes that need escaping ('u': \u00XX). */
static const char esc_char[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    'u', 'u', 'u', 'u',
    ['"'] = '"', ['\\'] = '\\',
};

static const char digit_pairs[201] =
    "0001020304050607080910111213141516171819"
    "2021222324252627282930313233343536373839"
    "4041424344454647484950515253545556575859"
    "6061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Writes v's digits at o (room for 20); returns how many. */
static size_t fmt_u64(char *o, uint64_t v)
{
    char t[20];
    size_t n = sizeof(t);

    while (v >= 100) {
        unsigned d = (unsigned)(v % 100) * 2;
        v /= 100;
        t[--n] = digit_pairs[d + 1];
        t[--n] = digit_pairs[d];
    }
    if (v >= 10) {
        t[--n] = digit_pairs[v * 2 + 1];
        t[--n] = digit_pairs[v * 2];
    } else {
        t[--n] = (char)('0' + v);
    }
    memcpy(o, t + n, sizeof(t) - n);
    return sizeof(t) - n;
}

/* The fewest significant digits that read back to the same double, as
 * %.15g, %.16g or %.17g (for normal doubles the first of those that reads
 * back is the shortest such text), with ".0" added when the text would
 * read as an integer. Most values are short decimals in [1e-4, 1e15):
 * those are found without snprintf/strtod by trying m / 10^k for the
 * smallest k; m and 10^k are exact doubles, so the division rounds just
 * as strtod would, and the text is what %.15g prints. o has room for 32. */
static size_t fmt_double(char *o, double v)
{
    double a = fabs(v);
    char buf[40];
    size_t n;

    if (a == 0) {
        n = signbit(v) ? 4 : 3;
        memcpy(o, signbit(v) ? "-0.0" : "0.0", n);
        return n;
    }
    if (a >= 1e-4 && a < 1e15) {
        for (int k = 0; k < 20; k++) {
            double p = a * pow10_tab[k];
            uint64_t m;

            if (p >= 1e15) {
                break;
            }
            m = (uint64_t)(p + 0.5);
            if (m >= UINT64_C(1000000000000000)) {
                break;
            }
            if ((double)m / pow10_tab[k] != a) {
                continue;
            }
            while (k > 0 && m % 10 == 0) {
                m /= 10;
                k--;
            }
            char d[20];
            size_t nd = fmt_u64(d, m), i = 0;
            if (v < 0) {
                o[i++] = '-';
            }
            if (k == 0) {
                memcpy(o + i, d, nd);
                memcpy(o + i + nd, ".0", 2);
                return i + nd + 2;
            }
            if (nd > (size_t)k) {
                memcpy(o + i, d, nd - (size_t)k);
                i += nd - (size_t)k;
                o[i++] = '.';
                memcpy(o + i, d + nd - (size_t)k, (size_t)k);
                return i + (size_t)k;
            }
            o[i++] = '0';
            o[i++] = '.';
            memset(o + i, '0', (size_t)k - nd);
            i += (size_t)k - nd;
            memcpy(o + i, d, nd);
            return i + nd;
        }
    }
    /* Subnormals carry fewer digits: start from 1 to find the shortest. */
    for (int prec = a < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (prec == 17 || strtod(buf, NULL) == v) {
            break;
        }
    }
    n = strlen(buf);
    memcpy(o, buf, n);
    if (strpbrk(buf, ".eE") == NULL) {
        memcpy(o + n, ".0", 2);
        n += 2;
    }
    return n;
}

/* Copies p[0, n) to o up to the first byte that needs escaping; returns
 * how many. Writes 8 bytes at a time, so o needs 8 bytes of slack. */
static inline size_t plain_copy(const unsigned char *p, size_t n, char *o)
{
    const uint64_t ones = 0x0101010101010101u, highs = ones * 0x80;
    size_t i = 0;

    for (; LITTLE_ENDIAN_ && i + 8 <= n; i += 8) {
        uint64_t v, q, b, t;

        memcpy(&v, p + i, 8);
        memcpy(o + i, &v, 8);
        q = v ^ (ones * '"');
        b = v ^ (ones * '\\');
        t = ((q - ones) & ~q) | ((b - ones) & ~b) |
            ((v - ones * 0x20) & ~v) | v;
        if ((t &= highs) != 0) {
            return i + (size_t)(__builtin_ctzll(t) >> 3);
        }
    }
    for (; i < n && !str_stop[p[i]]; i++) {
        o[i] = (char)p[i];
    }
    return i;
}

#define PUT_NOT_UTF8 (-2)

/* Writes s as a JSON string: 0, -1 (no memory) or PUT_NOT_UTF8. */
static int put_string(ljson_codec_t *c, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    char *o;

    /* Quotes and plain_copy's slack; escapes reserve their growth. */
    if (out_reserve(c, n + 2 + 8) != 0) {
        return -1;
    }
    o = c->out + c->out_len;
    *o++ = '"';
    for (;;) {
        size_t k = plain_copy(p + i, n - i, o);

        i += k;
        o += k;
        if (i == n) {
            break;
        }
        if (p[i] >= 0x80) {
            /* Copied as it is, if it is UTF-8; the output is JSON text. */
            size_t u = utf8_len(p + i, n - i);
            if (u == 0) {
                c->out_len = (size_t)(o - c->out);
                return PUT_NOT_UTF8;
            }
            memcpy(o, p + i, u);
            o += u;
            i += u;
            continue;
        }
        c->out_len = (size_t)(o - c->out);
        if (out_reserve(c, n - i + 6 + 2 + 8) != 0) {
            return -1;
        }
        o = c->out + c->out_len;
        o[0] = '\\';
        o[1] = esc_char[p[i]];
        if (o[1] == 'u') {
            o[2] = '0';
            o[3] = '0';
            o[4] = "0123456789abcdef"[p[i] >> 4];
            o[5] = "0123456789abcdef"[p[i] & 15];
            o += 6;
        } else {
            o += 2;
        }
        i++;
    }
    *o++ = '"';
    c->out_len = (size_t)(o - c->out);
    return 0;
}

static inline int put(ljson_codec_t *c, const char *s, size_t n)
{
    if (out_reserve(c, n) != 0) {
        return -1;
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
    return 0;
}

static inline int put_char(ljson_codec_t *c, char ch)
{
    if (out_reserve(c, 1) != 0) {
        return -1;
    }
    c->out[c->out_len++] = ch;
    return 0;
}

/* The path of the value at depth, e.g. ".items[2].fn", for messages. */
static const char *format_path(const ljson_codec_t *c, int depth, char *b,
                               size_t size)
{
    size_t n = 0;

    if (depth == 0) {
        return "the top level";
    }
    b[0] = '\0';
    for (int i = 0; i < depth && n < size; i++) {
        const struct path_ent *p = &c->path[i];
        int r;

        /* A cycle's path repeats for 256 levels: the ends tell enough. */
        if (depth > 12 && i == 6) {
            r = snprintf(b + n, size - n, "...(%d levels)...", depth - 10);
            n += r > 0 ? (size_t)r : 0;
            i = depth - 5;
            continue;
        }
        r = p->key != NULL
                    ? snprintf(b + n, size - n, ".%.*s",
                               (int)(p->n < 200 ? p->n : 200), p->key)
                    : snprintf(b + n, size - n, "[%zu]", p->n);
        if (r < 0) {
            break;
        }
        n += (size_t)r;
    }
    return b;
}

static int enc_fail(struct enc *e, int depth, const char *what)
{
    char path[400];

    sl_error_set(e->err, "json: %s at %s", what,
                 format_path(e->c, depth, path, sizeof(path)));
    return -1;
}

static int oom(struct enc *e)
{
    sl_error_set(e->err, "json: out of memory");
    return -1;
}

static int enc_value(struct enc *e, int slot, int depth);

static int key_cmp(const void *a, const void *b)
{
    const struct key_rec *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int r;

    /* Most keys differ in their first byte: skip the call. */
    if (n > 0 && x->p[0] != y->p[0]) {
        return (unsigned char)x->p[0] < (unsigned char)y->p[0] ? -1 : 1;
    }
    r = memcmp(x->p, y->p, n);
    return r != 0 ? r : (x->len > y->len) - (x->len < y->len);
}

static void sort_keys(struct key_rec *k, size_t n)
{
    if (n > 16) {
        qsort(k, n, sizeof(*k), key_cmp);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        struct key_rec x = k[i];
        size_t j = i;

        for (; j > 0 && key_cmp(&k[j - 1], &x) > 0; j--) {
            k[j] = k[j - 1];
        }
        k[j] = x;
    }
}

static int enc_array(struct enc *e, int slot, int depth, size_t n)
{
    ljson_codec_t *c = e->c;

    if (put_char(c, '[') != 0) {
        return oom(e);
    }
    int top = lua_gettop(e->L);

    for (size_t i = 1; i <= n; i++) {
        if (i > 1 && put_char(c, ',') != 0) {
            return oom(e);
        }
        lua_rawgeti(e->L, slot, (lua_Integer)i);
        c->path[depth] = (struct path_ent){NULL, i};
        int rc = enc_value(e, top + 1, depth + 1);
        lua_settop(e->L, top);
        if (rc != 0) {
            return -1;
        }
    }
    return put_char(c, ']') != 0 ? oom(e) : 0;
}

/* The table at slot, `depth` levels down. Its string keys and values are
 * kept on the stack (key, value pairs) while sorting and writing. */
static int enc_table(struct enc *e, int slot, int depth)
{
    lua_State *L = e->L;
    ljson_codec_t *c = e->c;
    int top = lua_gettop(L), rc = -1, bad_key = LUA_TNONE, bad_float = 0;
    size_t base = c->nkeys, nint = 0, n;
    lua_Integer maxint = 0, minint = 1;
    enum kind kind;

    if (depth >= JSON_MAX_DEPTH) {
        return enc_fail(e, depth, TOO_DEEP " (a cycle?)");
    }
    if (!lua_checkstack(L, 4)) {
        return enc_fail(e, depth, "table too large (Lua stack)");
    }
    kind = table_kind(L, slot, e->amt, e->omt);
    if (kind == ARRAY) {
        n = lua_rawlen(L, slot);
        if (depth == 0 && e->same_count >= 0 &&
            n == (size_t)e->same_count) {
            e->maybe_same = 1;
            return ENC_MAYBE_SAME;
        }
        return enc_array(e, slot, depth, n);
    }
    lua_pushnil(L);
    while (lua_next(L, slot)) {
        int kt = lua_type(L, -2);

        if (kt == LUA_TSTRING) {
            struct key_rec *rec;

            n = c->nkeys - base;
            if ((n & 7) == 0 && !lua_checkstack(L, 2 * 8 + 3)) {
                enc_fail(e, depth, "table too large (Lua stack)");
                goto out;
            }
            if (keys_reserve(c, 1) != 0) {
                oom(e);
                goto out;
            }
            rec = &c->keys[c->nkeys++];
            rec->p = lua_tolstring(L, -2, &rec->len);
            rec->slot = top + 2 * (int)n + 1; /* its value is in the next */
            lua_pushvalue(L, -2); /* lua_next goes on from a copy */
        } else if (kt == LUA_TNUMBER && lua_isinteger(L, -2)) {
            lua_Integer k = lua_tointeger(L, -2);

            nint++;
            maxint = k > maxint ? k : maxint;
            minint = k < minint ? k : minint;
            lua_pop(L, 1);
        } else {
            bad_key = kt;
            bad_float = kt == LUA_TNUMBER;
            lua_pop(L, 1);
        }
    }
    n = c->nkeys - base;
    /* The root's entries are counted now: as many as the text had may
     * mean the same document; ljson_equal tells. */
    if (depth == 0 && e->same_count >= 0 && bad_key == LUA_TNONE &&
        n + nint == (size_t)e->same_count) {
        e->maybe_same = 1;
        rc = ENC_MAYBE_SAME;
        goto out;
    }
    if (bad_key != LUA_TNONE) {
        char what[64];

        snprintf(what, sizeof(what), "cannot encode a table with a %s key",
                 bad_float ? "float" : lua_typename(L, bad_key));
        enc_fail(e, depth, what);
        goto out;
    }
    if (nint > 0) {
        if (kind == OBJECT) {
            enc_fail(e, depth, "cannot encode a table marked as an object "
                               "with integer keys");
        } else if (n > 0) {
            enc_fail(e, depth, "cannot encode a table that mixes array and "
                               "object keys");
        } else if (minint < 1 || (size_t)maxint != nint) {
            enc_fail(e, depth, "cannot encode a table whose integer keys "
                               "are not 1..n (a sparse array?)");
        } else {
            rc = enc_array(e, slot, depth, nint);
        }
        goto out;
    }
    if (n > 1) { /* an empty object may have no key array at all */
        sort_keys(c->keys + base, n);
    }
    if (put_char(c, '{') != 0) {
        oom(e);
        goto out;
    }
    for (size_t j = 0; j < n; j++) {
        /* By value: nested tables may move the array. */
        struct key_rec k = c->keys[base + j];

        int put = j > 0 ? put_char(c, ',') : 0;
        if (put == 0) {
            put = put_string(c, k.p, k.len);
        }
        if (put == PUT_NOT_UTF8) {
            enc_fail(e, depth, NOT_UTF8 " (a key)");
            goto out;
        }
        if (put != 0 || put_char(c, ':') != 0) {
            oom(e);
            goto out;
        }
        c->path[depth] = (struct path_ent){k.p, k.len};
        if (enc_value(e, k.slot + 1, depth + 1) != 0) {
            goto out;
        }
    }
    rc = put_char(c, '}') != 0 ? oom(e) : 0;
out:
    c->nkeys = base;
    lua_settop(L, top);
    return rc;
}

static int enc_value(struct enc *e, int slot, int depth)
{
    lua_State *L = e->L;
    ljson_codec_t *c = e->c;
    char what[64];
    int t = lua_type(L, slot);

    switch (t) {
    case LUA_TNIL:
        return put(c, "null", 4) != 0 ? oom(e) : 0;
    case LUA_TBOOLEAN:
        return (lua_toboolean(L, slot) ? put(c, "true", 4)
                                       : put(c, "false", 5)) != 0
                   ? oom(e)
                   : 0;
    case LUA_TNUMBER:
        /* Room for the longest: a remembered number text or a %.17g. */
        if (out_reserve(c, MEMO_NUMBER_MAX > 32 ? MEMO_NUMBER_MAX : 32) !=
            0) {
            return oom(e);
        }
        if (lua_isinteger(L, slot)) {
            lua_Integer i = lua_tointeger(L, slot);
            uint64_t u = (uint64_t)i;

            if (i < 0) {
                c->out[c->out_len++] = '-';
                u = 0 - u;
            }
            c->out_len += fmt_u64(c->out + c->out_len, u);
        } else {
            double d = lua_tonumber(L, slot);

            size_t n;
            const char *text = memo_get(c, d, &n);

            if (!isfinite(d)) {
                return enc_fail(e, depth, "cannot encode NaN/inf");
            }
            if (text != NULL) {
                memcpy(c->out + c->out_len, text, n);
                c->out_len += n;
            } else {
                c->out_len += fmt_double(c->out + c->out_len, d);
            }
        }
        return 0;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, slot, &n);

        switch (put_string(c, s, n)) {
        case 0:
            return 0;
        case PUT_NOT_UTF8:
            return enc_fail(e, depth, NOT_UTF8);
        default:
            return oom(e);
        }
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, slot) == NULL) {
            return put(c, "null", 4) != 0 ? oom(e) : 0;
        }
        break;
    case LUA_TTABLE:
        return enc_table(e, slot, depth);
    default:
        break;
    }
    snprintf(what, sizeof(what), "cannot encode a %s", lua_typename(L, t));
    return enc_fail(e, depth, what);
}

/* ljson_encode, or (same_count >= 0) ljson_encode_changed's first try. */
static const char *encode(ljson_codec_t *c, lua_State *L, int idx,
                          long same_count, int *maybe_same, size_t *len,
                          struct sl_error *err)
{
    struct enc e = {.c = c, .L = L, .err = err, .same_count = same_count};
    int top = lua_gettop(L), rc;
    unsigned gen = ++c->gen;

    if (!lua_checkstack(L, 4)) {
        sl_error_set(err, "json: out of memory");
        return NULL;
    }
    trim(c); /* the last result is no longer wanted */
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
    e.amt = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &object_mt_key);
    e.omt = lua_gettop(L);
    c->out_len = 0;
    rc = enc_value(&e, idx, 0);
    lua_settop(L, top);
    *maybe_same = e.maybe_same;
    if (e.maybe_same) {
        return NULL;
    }
    /* Encoding calls nothing that can run a finalizer; should that ever
     * change, a call from one would have clobbered c->out. */
    if (rc == 0 && c->gen != gen) {
        rc = sl_error_set(err, "json: codec re-entered while encoding");
    }
    if (rc == 0 && put_char(c, '\0') != 0) {
        rc = oom(&e);
    }
    if (rc != 0) {
        trim(c);
        return NULL;
    }
    *len = --c->out_len;
    return c->out;
}

const char *ljson_encode(ljson_codec_t *c, lua_State *L, int idx,
                         size_t *len, struct sl_error *err)
{
    int maybe_same;

    return encode(c, L, idx, -1, &maybe_same, len, err);
}

const char *ljson_encode_changed(ljson_codec_t *c, lua_State *L, int idx,
                                 const char *text, size_t text_len,
                                 long text_count, int *same, size_t *len,
                                 struct sl_error *err)
{
    int maybe_same = 1;
    const char *out = NULL;

    *same = 0;
    if (text_count >= 0) {
        out = encode(c, L, idx, text_count, &maybe_same, len, err);
    }
    if (!maybe_same) {
        return out;
    }
    if (ljson_equal(c, L, idx, text, text_len)) {
        *same = 1;
        return NULL;
    }
    return encode(c, L, idx, -1, &maybe_same, len, err);
}

/* ---- the `json` module ---- */

static int codec_gc(lua_State *L)
{
    ljson_codec_t **p = lua_touserdata(L, 1);

    ljson_codec_free(*p);
    *p = NULL;
    return 0;
}

/* Pushes the state's codec userdata, creating it. */
static ljson_codec_t **push_codec(lua_State *L)
{
    ljson_codec_t **p;

    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &codec_key) == LUA_TUSERDATA) {
        return lua_touserdata(L, -1);
    }
    lua_pop(L, 1);
    p = lua_newuserdatauv(L, sizeof(*p), 0);
    *p = NULL;
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, codec_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushstring(L, "json.codec");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
    *p = ljson_codec_new();
    if (*p == NULL) {
        luaL_error(L, "json: out of memory");
    }
    (*p)->alloc = lua_getallocf(L, &(*p)->alloc_ud);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &codec_key);
    return p;
}

ljson_codec_t *ljson_codec_of(lua_State *L)
{
    ljson_codec_t *c = *push_codec(L);

    lua_pop(L, 1);
    if (c == NULL) {
        luaL_error(L, "json: the codec was freed with the state");
    }
    return c;
}

static ljson_codec_t *up_codec(lua_State *L)
{
    ljson_codec_t *c =
        *(ljson_codec_t **)lua_touserdata(L, lua_upvalueindex(1));

    if (c == NULL) {
        luaL_error(L, "json: the codec was freed with the state");
    }
    return c;
}

static int l_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    struct sl_error err;

    if (ljson_decode(up_codec(L), L, s, len, &err) != 0) {
        lua_pushstring(L, err.msg);
        return lua_error(L);
    }
    return 1;
}

static int l_encode(lua_State *L)
{
    struct sl_error err;
    size_t len;
    const char *s;

    luaL_checkany(L, 1);
    s = ljson_encode(up_codec(L), L, 1, &len, &err);
    if (s == NULL) {
        lua_pushstring(L, err.msg);
        return lua_error(L);
    }
    lua_pushlstring(L, s, len);
    return 1;
}

static int mark(lua_State *L, char *key, const char *name)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    push_marker(L, key, name);
    lua_setmetatable(L, 1);
    return 1;
}

static int l_array(lua_State *L)
{
    return mark(L, &array_mt_key, "json.array");
}

static int l_object(lua_State *L)
{
    return mark(L, &object_mt_key, "json.object");
}

static int l_is_null(lua_State *L)
{
    lua_pushboolean(L, ljson_is_null(L, 1));
    return 1;
}

int ljson_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"decode", l_decode}, {"encode", l_encode},   {"array", l_array},
        {"object", l_object}, {"is_null", l_is_null}, {NULL, NULL},
    };

    /* The marker metatables exist from here on, so that encoding and
     * equality (which must not allocate) always find them. */
    push_marker(L, &array_mt_key, "json.array");
    push_marker(L, &object_mt_key, "json.object");
    lua_pop(L, 2);
    luaL_newlibtable(L, fns);
    push_codec(L);
    luaL_setfuncs(L, fns, 1);
    ljson_push_null(L);
    lua_setfield(L, -2, "null");
    return 1;
}
