/* testcmd.c -- `sluice test PIPELINE.yaml [TESTS.yaml ...]`.
 *
 * Runs the pipeline's Lua transforms (lua/transform.h) on test cases, with
 * no Kafka and no network: each case feeds one message to the pipeline
 * transform, then hands every message that comes out to the sinks'
 * transforms, and compares what would be sent with what the case expects.
 * Without TESTS files it reads <dir>/<base>.test.yaml beside the pipeline
 * (pipelines/orders-fanout.yaml: pipelines/orders-fanout.test.yaml).
 *
 * The test file format:
 *
 *   tests:
 *     - name: an order is enriched and shaped per sink     # required
 *       input:                                             # required
 *         key: tenant-7        # optional; absent or null: no key
 *         value: {order_id: 1, amount: 284.85}
 *         headers: {message-id: abc, x-many: [a, b]}
 *         topic: orders        # default: the pipeline's first topic
 *         partition: 0         # default 0
 *         offset: 42           # default 0
 *         timestamp: 1700000000000   # ms; default: none (-1)
 *       expect:
 *         key: tenant-7        # null: no key
 *         value: {...}
 *         headers: {x-source: sluice}
 *         sinks:
 *           billing:
 *             body: {...}
 *             method: PUT
 *             path: /orders/1
 *             headers: {X-Tenant: t7}
 *           crm: skip
 *           search: {error: "substring of the error"}
 *     - name: test orders are dropped
 *       input: {value: {test: true}}
 *       expect: drop
 *     - name: a bad value fails
 *       input: {value: "not json"}
 *       expect: {error: "json"}
 *     - name: a batch splits
 *       input: {value: {items: [1, 2]}}
 *       expect:
 *         messages:
 *           - value: {item: 1}
 *             sinks: {billing: {body: {item: 1}}}
 *           - value: {item: 2}
 *
 * Scalars are typed as in YAML 1.2 (core schema) when plain (unquoted):
 * null, ~ and an empty value are null; true and false are booleans;
 * 12, -3, 0x1F, 0o17 are integers; 1.5, 1e3, .5 are floats. Anything
 * quoted is a string, so "42" and "true" are text.
 *
 * Values (input.value, expect.value, a sink's body):
 *   - a mapping or sequence is JSON. In an input it becomes JSON text in
 *     YAML order, numbers exactly as written (284.85 stays 284.85).
 *     Expected, it is compared with the actual bytes parsed as JSON:
 *     objects by key set (order-free; a key missing or unexpected is a
 *     difference), arrays in order, numbers by value (1 equals 1.0),
 *     strings by bytes. A plain number or boolean is JSON the same way.
 *   - a string is bytes as written: sent as they are, compared exactly.
 *   - null is no value (a tombstone; for a body: nothing to send).
 *   - input.value absent: no value. expect.value absent: not checked.
 *
 * expect is one of:
 *   - drop: the pipeline transform returns nothing.
 *   - {error: TEXT}: the pipeline transform fails with an error whose
 *     message contains TEXT.
 *   - {messages: [M, ...]}: it returns exactly these messages, in order.
 *   - M: exactly one message (the mapping itself describes it).
 * M has any of:
 *   key      the message's key (bytes; null: no key)
 *   value    its value, as above
 *   headers  a subset of its Kafka headers, by exact name: a scalar is
 *            the header's one value, a list its values in order, null
 *            that the header is absent
 *   sinks    for each listed sink (others are not checked):
 *              skip            the sink's transform filtered it out
 *              {error: TEXT}   the sink's transform failed (TEXT: substring)
 *              {body, method, path, headers}   it would send a request;
 *                each key optional. body: as values above (no transform:
 *                the message's value). method: default the sink's.
 *                path: appended to the sink's URL (null: none). headers:
 *                a subset of the request headers the transform added,
 *                names case-insensitive, values as for message headers.
 *
 * The input's dedupe key (msg.dedupe_key) is the engine's: what the
 * pipeline's dedupe.key picks (default: its last message-id header),
 * else "topic-partition-offset"; the parts of a split that set none get it
 * with "#1", "#2", ... as in the engine. Cases run in order on one Lua
 * state, as messages do in a worker: a script's globals carry over.
 *
 * Output: `ok   NAME (file:line)` or `FAIL NAME (file:line)` followed by
 * one indented line per difference (at most 50), each with the path where
 * it is:
 *
 *   FAIL an order is enriched (pipelines/orders-fanout.test.yaml:2)
 *       sinks.billing.body.total_cents: expected 28485, got 28484
 *       sinks.billing.body.customer: missing
 *       sinks.billing.body.cust_id: unexpected "c-1"
 *       sinks.crm: expected a request, got skip
 *       value: expected JSON, got `not json`
 *
 * then `N passed, M failed`. Values are shown as compact JSON, "strings"
 * and `raw bytes` escaped, cut at about 200 characters. --verbose also
 * shows, for passing cases, what each sink would be sent. */
#include "testcmd.h"
#include "utf8.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "cfg.h"
#include "cfgtransform.h"
#include "engine.h"
#include "keyrule.h"

#define DEPTH_MAX 100            /* nesting of a YAML value we walk */
#define VISITS_MAX 1000000       /* nodes one value may expand to (aliases) */
#define BUILT_MAX (16u << 20)    /* bytes of JSON one input value becomes */
#define SHOW_MAX 200             /* characters of a value in a difference */
#define DIFFS_SHOWN 50           /* difference lines printed per case */

/* ---- growable buffer ---- */

struct buf {
    char *data;
    size_t len, cap;
    int failed; /* out of memory or over BUILT_MAX: contents incomplete */
};

/* b NULL: a sink that keeps nothing, for walks that only check. */
static void buf_add(struct buf *b, const void *p, size_t n)
{
    if (b == NULL || b->failed) {
        return;
    }
    if (n > BUILT_MAX || b->len + n > BUILT_MAX) {
        b->failed = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *d;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        d = realloc(b->data, cap);
        if (d == NULL) {
            b->failed = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_adds(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0) {
        buf_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
    }
}

static void buf_reset(struct buf *b)
{
    b->len = 0;
    b->failed = 0;
    if (b->data != NULL) {
        b->data[0] = '\0';
    }
}

static void buf_free(struct buf *b)
{
    free(b->data);
    *b = (struct buf){0};
}

/* ---- key paths: "tests[0].expect.sinks.billing.body.items[2]" ---- */

struct path {
    char s[512];
    size_t len;
};

static void path_addn(struct path *p, const char *s, size_t n)
{
    size_t room = sizeof(p->s) - 1 - p->len;

    if (n > room) {
        n = room;
    }
    memcpy(p->s + p->len, s, n);
    p->len += n;
    p->s[p->len] = '\0';
}

static int plain_key(const char *k, size_t n)
{
    if (n == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (!isalnum(c) && c != '_' && c != '-') {
            return 0;
        }
    }
    return 1;
}

/* Appends a key (quoted when it is not a plain name); returns the length
 * to restore with path_pop. */
static size_t path_key(struct path *p, const char *k, size_t n)
{
    size_t mark = p->len;

    if (plain_key(k, n)) {
        if (p->len > 0) {
            path_addn(p, ".", 1);
        }
        path_addn(p, k, n);
        return mark;
    }
    path_addn(p, "[\"", 2);
    for (size_t i = 0; i < n && i < 64; i++) {
        unsigned char c = (unsigned char)k[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            path_addn(p, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            path_addn(p, esc, 4);
        } else {
            path_addn(p, (const char *)&k[i], 1);
        }
    }
    path_addn(p, n > 64 ? "...\"]" : "\"]", n > 64 ? 5 : 2);
    return mark;
}

static size_t path_keys(struct path *p, const char *k)
{
    return path_key(p, k, strlen(k));
}

static size_t path_index(struct path *p, size_t i)
{
    size_t mark = p->len;
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "[%zu]", i);

    path_addn(p, tmp, (size_t)n);
    return mark;
}

static void path_pop(struct path *p, size_t mark)
{
    p->len = mark;
    p->s[mark] = '\0';
}

/* ---- YAML scalars, typed as the 1.2 core schema types them ---- */

enum ykind { YK_NULL, YK_BOOL, YK_INT, YK_FLOAT, YK_STR, YK_SEQ, YK_MAP };

static const char *stext(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static int digits(const char **p, int (*is)(int))
{
    const char *s = *p;

    while (is((unsigned char)**p)) {
        (*p)++;
    }
    return *p > s;
}

static int is_octal(int c)
{
    return c >= '0' && c <= '7';
}

static int is_int_text(const char *s)
{
    if (s[0] == '0' && s[1] == 'o') {
        s += 2;
        return digits(&s, is_octal) && *s == '\0';
    }
    if (s[0] == '0' && s[1] == 'x') {
        s += 2;
        return digits(&s, isxdigit) && *s == '\0';
    }
    if (*s == '-' || *s == '+') {
        s++;
    }
    return digits(&s, isdigit) && *s == '\0';
}

static int is_nonfinite_text(const char *s)
{
    if (*s == '-' || *s == '+') {
        s++;
        return strcmp(s, ".inf") == 0 || strcmp(s, ".Inf") == 0 ||
               strcmp(s, ".INF") == 0;
    }
    return strcmp(s, ".inf") == 0 || strcmp(s, ".Inf") == 0 ||
           strcmp(s, ".INF") == 0 || strcmp(s, ".nan") == 0 ||
           strcmp(s, ".NaN") == 0 || strcmp(s, ".NAN") == 0;
}

static int is_float_text(const char *s)
{
    int whole, frac = 0;

    if (is_nonfinite_text(s)) {
        return 1;
    }
    if (*s == '-' || *s == '+') {
        s++;
    }
    whole = digits(&s, isdigit);
    if (*s == '.') {
        s++;
        frac = digits(&s, isdigit);
    }
    if (!whole && !frac) {
        return 0;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '-' || *s == '+') {
            s++;
        }
        if (!digits(&s, isdigit)) {
            return 0;
        }
    }
    return *s == '\0';
}

static enum ykind ykind(const yaml_node_t *n)
{
    const char *s;

    if (n == NULL) {
        return YK_NULL;
    }
    if (n->type == YAML_MAPPING_NODE) {
        return YK_MAP;
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        return YK_SEQ;
    }
    if (n->type != YAML_SCALAR_NODE ||
        n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return YK_STR;
    }
    s = stext(n);
    if (*s == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
        strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0) {
        return YK_NULL;
    }
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 ||
        strcmp(s, "TRUE") == 0 || strcmp(s, "false") == 0 ||
        strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
        return YK_BOOL;
    }
    if (is_int_text(s)) {
        return YK_INT;
    }
    if (is_float_text(s)) {
        return YK_FLOAT;
    }
    return YK_STR;
}

static int ybool(const yaml_node_t *n)
{
    return stext(n)[0] == 't' || stext(n)[0] == 'T';
}

static int is_scalar_word(const yaml_node_t *n, const char *word)
{
    return n->type == YAML_SCALAR_NODE &&
           n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           strcmp(stext(n), word) == 0;
}

/* Whether s is a JSON number as it is (RFC 8259's grammar). */
static int is_json_number(const char *s)
{
    if (*s == '-') {
        s++;
    }
    if (*s == '0') {
        s++;
    } else if (!digits(&s, isdigit)) {
        return 0;
    }
    if (*s == '.') {
        s++;
        if (!digits(&s, isdigit)) {
            return 0;
        }
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '-' || *s == '+') {
            s++;
        }
        if (!digits(&s, isdigit)) {
            return 0;
        }
    }
    return *s == '\0';
}

/* Appends a YAML number (int or float text) as JSON: as written when it
 * is JSON already, else its nearest spelling (+1 → 1, 007 → 7, .5 → 0.5,
 * 1. → 1.0, 0x1F → 31). -1 when JSON has no such number (.inf, .nan) or a
 * hex/octal one is beyond 64 bits. */
static int number_json(const char *s, struct buf *b)
{
    const char *p = s, *q;

    if (is_json_number(s)) {
        buf_adds(b, s);
        return 0;
    }
    if (is_nonfinite_text(s)) {
        return -1;
    }
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
        unsigned long long v;
        errno = 0;
        v = strtoull(s + 2, NULL, s[1] == 'x' ? 16 : 8);
        if (errno != 0) {
            return -1;
        }
        buf_printf(b, "%llu", v);
        return 0;
    }
    if (*p == '-') {
        buf_add(b, "-", 1);
    }
    if (*p == '-' || *p == '+') {
        p++;
    }
    q = p;
    digits(&q, isdigit);
    while (q - p > 1 && *p == '0') {
        p++;
    }
    if (q == p) {
        buf_add(b, "0", 1);
    } else {
        buf_add(b, p, (size_t)(q - p));
    }
    p = q;
    if (*p == '.') {
        p++;
        q = p;
        digits(&q, isdigit);
        buf_add(b, ".", 1);
        if (q == p) {
            buf_add(b, "0", 1);
        } else {
            buf_add(b, p, (size_t)(q - p));
        }
        p = q;
    }
    buf_adds(b, p); /* the exponent, if any: JSON's grammar already */
    return 0;
}

/* A number's value, to compare numerically. */
struct num {
    int is_int;
    long long i;
    double d;
};

static void num_of_text(const char *s, struct num *n)
{
    char *end;

    *n = (struct num){0};
    errno = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
        unsigned long long v = strtoull(s + 2, NULL, s[1] == 'x' ? 16 : 8);
        if (errno == 0 && v <= LLONG_MAX) {
            n->is_int = 1;
            n->i = (long long)v;
        }
        n->d = (double)v;
        return;
    }
    if (is_int_text(s)) {
        n->i = strtoll(s, &end, 10);
        if (errno == 0) {
            n->is_int = 1;
            n->d = (double)n->i;
            return;
        }
    }
    n->d = strtod(s, NULL);
}

static int num_equal(const struct num *e, const json_t *a)
{
    if (json_is_integer(a)) {
        if (e->is_int) {
            return e->i == (long long)json_integer_value(a);
        }
        return e->d == (double)json_integer_value(a);
    }
    return (e->is_int ? (double)e->i : e->d) == json_real_value(a);
}

/* ---- showing values in differences: compact, escaped, cut ---- */

struct show {
    char s[SHOW_MAX + 8];
    size_t len;
    int cut;    /* text was left out */
    int marked; /* and "..." says so already */
};

static void show_add(struct show *sh, const char *p, size_t n)
{
    if (sh->cut) {
        return;
    }
    if (sh->len + n > SHOW_MAX) {
        n = SHOW_MAX - sh->len;
        sh->cut = 1;
    }
    memcpy(sh->s + sh->len, p, n);
    sh->len += n;
    sh->s[sh->len] = '\0';
}

static void show_adds(struct show *sh, const char *s)
{
    show_add(sh, s, strlen(s));
}

/* Past SHOW_MAX: "..." and then the closing quote, if any, so that a
 * cut string still reads as one (the buffer has room for both). */
static void show_mark_cut(struct show *sh, char quote)
{
    if (sh->marked) {
        return;
    }
    memcpy(sh->s + sh->len, "...", 3);
    sh->len += 3;
    if (quote) {
        sh->s[sh->len++] = quote;
    }
    sh->s[sh->len] = '\0';
    sh->marked = 1;
}

static const char *show_text(struct show *sh)
{
    if (sh->cut) {
        show_mark_cut(sh, 0);
    }
    return sh->s;
}

/* Bytes between quote characters (`"` or '`'), control characters and
 * invalid UTF-8 escaped; quote 0: none. */
static void show_bytes(struct show *sh, const void *data, size_t n, char quote)
{
    const unsigned char *p = data;
    char q[1] = {quote};

    if (quote) {
        show_add(sh, q, 1);
    }
    for (size_t i = 0; i < n && !sh->cut;) {
        unsigned char c = p[i];
        char esc[8];
        size_t l;
        if (c == '\n' || c == '\t' || c == '\r') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : 'r';
            show_add(sh, esc, 2);
            i++;
        } else if (quote == '"' && (c == '"' || c == '\\')) {
            esc[0] = '\\';
            esc[1] = (char)c;
            show_add(sh, esc, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f || (l = utf8_decode(p + i, n - i, NULL)) == 0) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            show_add(sh, esc, 4);
            i++;
        } else {
            show_add(sh, (const char *)p + i, l);
            i += l;
        }
    }
    if (quote && !sh->cut) {
        show_add(sh, q, 1);
    }
    if (sh->cut) {
        show_mark_cut(sh, quote);
    }
}

/* An expected YAML value as compact JSON (numbers as written). */
static void show_yaml(struct show *sh, yaml_document_t *doc,
                      const yaml_node_t *n, int depth)
{
    if (sh->cut) {
        return;
    }
    if (depth > DEPTH_MAX) {
        show_adds(sh, "...");
        return;
    }
    switch (ykind(n)) {
    case YK_MAP:
        show_add(sh, "{", 1);
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
             p < n->data.mapping.pairs.top && !sh->cut; p++) {
            const yaml_node_t *k = yaml_document_get_node(doc, p->key);
            if (p != n->data.mapping.pairs.start) {
                show_add(sh, ",", 1);
            }
            if (k->type == YAML_SCALAR_NODE) {
                show_bytes(sh, stext(k), k->data.scalar.length, '"');
            }
            show_add(sh, ":", 1);
            show_yaml(sh, doc, yaml_document_get_node(doc, p->value),
                      depth + 1);
        }
        show_add(sh, "}", 1);
        return;
    case YK_SEQ:
        show_add(sh, "[", 1);
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             it < n->data.sequence.items.top && !sh->cut; it++) {
            if (it != n->data.sequence.items.start) {
                show_add(sh, ",", 1);
            }
            show_yaml(sh, doc, yaml_document_get_node(doc, *it), depth + 1);
        }
        show_add(sh, "]", 1);
        return;
    case YK_NULL:
        show_adds(sh, "null");
        return;
    case YK_BOOL:
        show_adds(sh, ybool(n) ? "true" : "false");
        return;
    case YK_INT:
    case YK_FLOAT:
        show_adds(sh, stext(n));
        return;
    case YK_STR:
        show_bytes(sh, stext(n), n->data.scalar.length, '"');
        return;
    }
}

/* A real in the fewest digits that read back as the same double. */
static void show_real(struct show *sh, double d)
{
    char tmp[40];

    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
        if (strtod(tmp, NULL) == d) {
            break;
        }
    }
    show_adds(sh, tmp);
    if (strpbrk(tmp, ".eEni") == NULL) {
        show_adds(sh, ".0");
    }
}

/* An actual JSON value, compact. */
static void show_json(struct show *sh, const json_t *j)
{
    char tmp[32];

    if (sh->cut) {
        return;
    }
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        void *it = json_object_iter((json_t *)j);
        show_add(sh, "{", 1);
        for (int first = 1; it != NULL && !sh->cut;
             it = json_object_iter_next((json_t *)j, it), first = 0) {
            if (!first) {
                show_add(sh, ",", 1);
            }
            show_bytes(sh, json_object_iter_key(it),
                       json_object_iter_key_len(it), '"');
            show_add(sh, ":", 1);
            show_json(sh, json_object_iter_value(it));
        }
        show_add(sh, "}", 1);
        return;
    }
    case JSON_ARRAY:
        show_add(sh, "[", 1);
        for (size_t i = 0; i < json_array_size(j) && !sh->cut; i++) {
            if (i > 0) {
                show_add(sh, ",", 1);
            }
            show_json(sh, json_array_get(j, i));
        }
        show_add(sh, "]", 1);
        return;
    case JSON_STRING:
        show_bytes(sh, json_string_value(j), json_string_length(j), '"');
        return;
    case JSON_INTEGER:
        snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(j));
        show_adds(sh, tmp);
        return;
    case JSON_REAL:
        show_real(sh, json_real_value(j));
        return;
    case JSON_TRUE:
        show_adds(sh, "true");
        return;
    case JSON_FALSE:
        show_adds(sh, "false");
        return;
    case JSON_NULL:
        show_adds(sh, "null");
        return;
    }
}

/* ---- the loader: test files, validated completely before running ---- */

struct loader {
    const char *file;
    yaml_document_t *doc;
    struct cfg_errors *errs;
    const struct cfg *cfg; /* NULL: sink names are not checked */
    struct path path;
    long visits; /* nodes walked for the current value */
};

static int lerr(struct loader *l, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int lerr(struct loader *l, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cfg_errors_add(l->errs, l->file, (int)n->start_mark.line + 1,
                   (int)n->start_mark.column + 1, l->path.s, "%s", msg);
    return -1;
}

static yaml_node_t *lnode(struct loader *l, int index)
{
    return yaml_document_get_node(l->doc, index);
}

static const char *kind_name(const yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE    ? "a mapping"
           : n->type == YAML_SEQUENCE_NODE ? "a list"
                                           : "a scalar";
}

/* The scalar key before p in map that equals p's (a scalar), or NULL. */
static const yaml_node_t *earlier_key(struct loader *l,
                                      const yaml_node_t *map,
                                      const yaml_node_pair_t *p)
{
    const yaml_node_t *k = lnode(l, p->key);

    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
        const yaml_node_t *k2 = lnode(l, q->key);
        if (k2->type == YAML_SCALAR_NODE &&
            k2->data.scalar.length == k->data.scalar.length &&
            memcmp(stext(k2), stext(k), k->data.scalar.length) == 0) {
            return k2;
        }
    }
    return NULL;
}

/* Checks map's keys against names (NULL-terminated): unknown and
 * duplicate keys are errors; found[i] gets names[i]'s value or NULL. */
static int check_keys(struct loader *l, const yaml_node_t *map,
                      const char *const *names, const yaml_node_t **found)
{
    int rc = 0;
    size_t count = 0;

    while (names[count] != NULL) {
        found[count++] = NULL;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
         p < map->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = lnode(l, p->key);
        size_t i, mark;
        if (k->type != YAML_SCALAR_NODE) {
            rc = lerr(l, k, "expected a key name");
            continue;
        }
        for (i = 0; i < count && strcmp(names[i], stext(k)) != 0; i++) {
        }
        mark = path_key(&l->path, stext(k), k->data.scalar.length);
        if (i == count) {
            char list[256] = "";
            for (size_t j = 0; j < count; j++) {
                snprintf(list + strlen(list), sizeof(list) - strlen(list),
                         "%s%s", j ? ", " : "", names[j]);
            }
            rc = lerr(l, k, "unknown key; expected one of: %s", list);
        } else if (found[i] != NULL) {
            rc = lerr(l, k, "duplicate key");
        } else {
            found[i] = lnode(l, p->value);
        }
        path_pop(&l->path, mark);
    }
    return rc;
}

/* A JSON string literal for keys and values alike: `"` and `\` escaped,
 * controls as \n, \t, \r or \u00XX, other bytes as they are (libyaml
 * has checked they are UTF-8). */
static void buf_json_string(struct buf *b, const char *s, size_t len)
{
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_add(b, e, 2);
        } else if (c == '\n') {
            buf_add(b, "\\n", 2);
        } else if (c == '\t') {
            buf_add(b, "\\t", 2);
        } else if (c == '\r') {
            buf_add(b, "\\r", 2);
        } else if (c < 0x20) {
            buf_printf(b, "\\u%04x", c);
        } else {
            buf_add(b, s + i, 1);
        }
    }
    buf_add(b, "\"", 1);
}

static int yaml_json(struct loader *l, const yaml_node_t *n, int depth,
                     struct buf *b);

/* Walks one member or item (its path element pushed at mark), then pops
 * it. 0 when the walk goes on, -1 when the visit budget is spent. */
static int yaml_json_child(struct loader *l, const yaml_node_t *n, int depth,
                           struct buf *b, size_t mark, int *rc)
{
    if (yaml_json(l, n, depth, b) != 0) {
        *rc = -1;
    }
    path_pop(&l->path, mark);
    return l->visits > VISITS_MAX ? -1 : 0;
}

/* Writes the JSON form of n to b (b NULL: only checks that it has one),
 * reporting at the node what JSON cannot hold. 0 or -1. */
static int yaml_json(struct loader *l, const yaml_node_t *n, int depth,
                     struct buf *b)
{
    int rc = 0;

    if (++l->visits > VISITS_MAX) {
        return l->visits == VISITS_MAX + 1
                   ? lerr(l, n, "expands to more than %d values", VISITS_MAX)
                   : -1;
    }
    if (depth > DEPTH_MAX) {
        return lerr(l, n, "nested deeper than %d levels", DEPTH_MAX);
    }
    switch (ykind(n)) {
    case YK_MAP:
        buf_add(b, "{", 1);
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
             p < n->data.mapping.pairs.top; p++) {
            const yaml_node_t *k = lnode(l, p->key), *first;
            size_t mark;
            if (k->type != YAML_SCALAR_NODE) {
                rc = lerr(l, k, "a JSON key must be a scalar");
                continue;
            }
            mark = path_key(&l->path, stext(k), k->data.scalar.length);
            if ((first = earlier_key(l, n, p)) != NULL) {
                rc = lerr(l, k, "duplicate key (first at line %d)",
                          (int)first->start_mark.line + 1);
            }
            if (p != n->data.mapping.pairs.start) {
                buf_add(b, ",", 1);
            }
            buf_json_string(b, stext(k), k->data.scalar.length);
            buf_add(b, ":", 1);
            if (yaml_json_child(l, lnode(l, p->value), depth + 1, b, mark,
                                &rc) != 0) {
                return -1;
            }
        }
        buf_add(b, "}", 1);
        return rc;
    case YK_SEQ:
        buf_add(b, "[", 1);
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             it < n->data.sequence.items.top; it++) {
            size_t i = (size_t)(it - n->data.sequence.items.start);
            if (i > 0) {
                buf_add(b, ",", 1);
            }
            if (yaml_json_child(l, lnode(l, *it), depth + 1, b,
                                path_index(&l->path, i), &rc) != 0) {
                return -1;
            }
        }
        buf_add(b, "]", 1);
        return rc;
    case YK_NULL:
        buf_adds(b, "null");
        return 0;
    case YK_BOOL:
        buf_adds(b, ybool(n) ? "true" : "false");
        return 0;
    case YK_INT:
    case YK_FLOAT:
        if (number_json(stext(n), b) != 0) {
            return lerr(l, n,
                        "`%s` is not a JSON number (quote it for a string)",
                        stext(n));
        }
        return 0;
    case YK_STR:
        buf_json_string(b, stext(n), n->data.scalar.length);
        return 0;
    }
    return 0;
}

/* Checks an expected value (expect.value, a body): any YAML JSON can hold. */
static int check_value(struct loader *l, const yaml_node_t *n)
{
    l->visits = 0;
    return yaml_json(l, n, 0, NULL);
}

/* A headers mapping: name → scalar, list of scalars, or null. */
static int check_headers(struct loader *l, const yaml_node_t *n)
{
    int rc = 0;

    if (n->type != YAML_MAPPING_NODE) {
        return lerr(l, n, "expected a mapping of header names, found %s",
                    kind_name(n));
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
         p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = lnode(l, p->key), *v = lnode(l, p->value);
        size_t mark;
        if (k->type != YAML_SCALAR_NODE || k->data.scalar.length == 0 ||
            memchr(stext(k), '\0', k->data.scalar.length) != NULL) {
            rc = lerr(l, k, "expected a header name");
            continue;
        }
        mark = path_key(&l->path, stext(k), k->data.scalar.length);
        if (earlier_key(l, n, p) != NULL) {
            rc = lerr(l, k, "duplicate header; a list gives it several "
                            "values");
        }
        if (v->type == YAML_MAPPING_NODE) {
            rc = lerr(l, v, "expected a value or a list of values");
        } else if (v->type == YAML_SEQUENCE_NODE) {
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++) {
                if (lnode(l, *it)->type != YAML_SCALAR_NODE) {
                    rc = lerr(l, lnode(l, *it), "expected a value");
                }
            }
        }
        path_pop(&l->path, mark);
    }
    return rc;
}

static int check_scalar(struct loader *l, const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE) {
        return lerr(l, n, "expected a scalar, found %s", kind_name(n));
    }
    return 0;
}

/* {error: TEXT}: TEXT a non-empty scalar. */
static int check_error_expect(struct loader *l, const yaml_node_t *map,
                              const yaml_node_t *text)
{
    size_t mark;
    int rc;

    if (map->data.mapping.pairs.top - map->data.mapping.pairs.start != 1) {
        return lerr(l, map, "`error` goes alone: an error means nothing "
                            "else came out");
    }
    mark = path_keys(&l->path, "error");
    rc = check_scalar(l, text);
    if (rc == 0 && ykind(text) == YK_NULL) {
        rc = lerr(l, text, "expected the text the error contains");
    }
    path_pop(&l->path, mark);
    return rc;
}

static int find_sink(const struct cfg *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->sink_count; i++) {
        if (strcmp(cfg->sinks[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* One sink's expectation: skip, {error: TEXT} or a request. */
static int check_sink_expect(struct loader *l, const yaml_node_t *n)
{
    static const char *const names[] = {"body", "method", "path", "headers",
                                        "error", NULL};
    const yaml_node_t *f[5];
    int rc;

    if (is_scalar_word(n, "skip")) {
        return 0;
    }
    if (n->type != YAML_MAPPING_NODE) {
        return lerr(l, n, "expected skip, {error: TEXT} or a request "
                          "({body, method, path, headers})");
    }
    rc = check_keys(l, n, names, f);
    if (f[4] != NULL) {
        return check_error_expect(l, n, f[4]) != 0 ? -1 : rc;
    }
    for (int i = 0; i < 4; i++) {
        size_t mark;
        if (f[i] == NULL) {
            continue;
        }
        mark = path_keys(&l->path, names[i]);
        if (i == 0) {
            rc |= check_value(l, f[i]);
        } else if (i == 3) {
            rc |= check_headers(l, f[i]);
        } else if (check_scalar(l, f[i]) != 0) {
            rc = -1;
        } else if (i == 1 && ykind(f[i]) == YK_NULL) {
            rc = lerr(l, f[i], "expected a method");
        }
        path_pop(&l->path, mark);
    }
    return rc;
}

/* One message's expectation: {key, value, headers, sinks}. */
static int check_message_expect(struct loader *l, const yaml_node_t *n)
{
    static const char *const names[] = {"key", "value", "headers", "sinks",
                                        NULL};
    const yaml_node_t *f[4];
    size_t mark;
    int rc;

    if (n->type != YAML_MAPPING_NODE) {
        return lerr(l, n, "expected a message ({key, value, headers, "
                          "sinks}), found %s", kind_name(n));
    }
    rc = check_keys(l, n, names, f);
    if (f[0] != NULL) {
        mark = path_keys(&l->path, "key");
        rc |= check_scalar(l, f[0]);
        path_pop(&l->path, mark);
    }
    if (f[1] != NULL) {
        mark = path_keys(&l->path, "value");
        rc |= check_value(l, f[1]);
        path_pop(&l->path, mark);
    }
    if (f[2] != NULL) {
        mark = path_keys(&l->path, "headers");
        rc |= check_headers(l, f[2]);
        path_pop(&l->path, mark);
    }
    if (f[3] == NULL) {
        return rc;
    }
    mark = path_keys(&l->path, "sinks");
    if (f[3]->type != YAML_MAPPING_NODE) {
        rc = lerr(l, f[3], "expected a mapping of sink names, found %s",
                  kind_name(f[3]));
        path_pop(&l->path, mark);
        return rc;
    }
    for (yaml_node_pair_t *p = f[3]->data.mapping.pairs.start;
         p < f[3]->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = lnode(l, p->key);
        size_t m2;
        if (k->type != YAML_SCALAR_NODE) {
            rc = lerr(l, k, "expected a sink name");
            continue;
        }
        m2 = path_key(&l->path, stext(k), k->data.scalar.length);
        if (earlier_key(l, f[3], p) != NULL) {
            rc = lerr(l, k, "duplicate key");
        }
        if (l->cfg != NULL && find_sink(l->cfg, stext(k)) < 0) {
            char list[512] = "";
            for (size_t i = 0; i < l->cfg->sink_count; i++) {
                snprintf(list + strlen(list), sizeof(list) - strlen(list),
                         "%s%s", i ? ", " : "", l->cfg->sinks[i].name);
            }
            rc = lerr(l, k, "no such sink in %s (its sinks: %s)",
                      l->cfg->path, list);
        }
        rc |= check_sink_expect(l, lnode(l, p->value));
        path_pop(&l->path, m2);
    }
    path_pop(&l->path, mark);
    return rc;
}

static int check_expect(struct loader *l, const yaml_node_t *n)
{
    const yaml_node_t *msgs = NULL, *error = NULL;
    int rc = 0;

    if (is_scalar_word(n, "drop")) {
        return 0;
    }
    if (n->type != YAML_MAPPING_NODE) {
        return lerr(l, n, "expected drop, {error: TEXT}, {messages: [...]} "
                          "or a message ({key, value, headers, sinks})");
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
         p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = lnode(l, p->key);
        if (is_scalar_word(k, "messages")) {
            msgs = lnode(l, p->value);
        } else if (is_scalar_word(k, "error")) {
            error = lnode(l, p->value);
        }
    }
    if (error != NULL) {
        return check_error_expect(l, n, error);
    }
    if (msgs == NULL) {
        return check_message_expect(l, n);
    }
    if (n->data.mapping.pairs.top - n->data.mapping.pairs.start != 1) {
        return lerr(l, n, "`messages` goes alone: it lists every message "
                          "that comes out");
    }
    size_t mark = path_keys(&l->path, "messages");
    if (msgs->type != YAML_SEQUENCE_NODE) {
        rc = lerr(l, msgs, "expected a list of messages, found %s",
                  kind_name(msgs));
    } else {
        for (yaml_node_item_t *it = msgs->data.sequence.items.start;
             it < msgs->data.sequence.items.top; it++) {
            size_t m2 = path_index(
                &l->path, (size_t)(it - msgs->data.sequence.items.start));
            rc |= check_message_expect(l, lnode(l, *it));
            path_pop(&l->path, m2);
        }
    }
    path_pop(&l->path, mark);
    return rc;
}

/* ---- test cases ---- */

struct tcase {
    int line;
    const char *name;
    const yaml_node_t *expect;
    struct connector_msg in; /* points into the document and below */
    char *value;             /* the input value when built as JSON */
    struct sl_header *headers;
    char dedupe[ENGINE_DEDUPE_MAX];
};

struct tfile {
    char *path;
    yaml_document_t doc;
    int has_doc;
    struct tcase *cases;
    size_t count;
};

/* An integer scalar in [min, max]. */
static int load_int(struct loader *l, const yaml_node_t *n, long long min,
                    long long max, long long *out)
{
    struct num v = {0};

    if (ykind(n) == YK_INT) {
        num_of_text(stext(n), &v);
    }
    if (!v.is_int || v.i < min || v.i > max) {
        return lerr(l, n, "expected an integer from %lld to %lld", min, max);
    }
    *out = v.i;
    return 0;
}

static int load_input_headers(struct loader *l, struct tcase *c,
                              const yaml_node_t *n)
{
    size_t count = 0;

    if (check_headers(l, n) != 0) {
        return -1;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
         p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *v = lnode(l, p->value);
        count += v->type == YAML_SEQUENCE_NODE
                     ? (size_t)(v->data.sequence.items.top -
                                v->data.sequence.items.start)
                     : 1;
    }
    c->headers = calloc(count ? count : 1, sizeof(*c->headers));
    if (c->headers == NULL) {
        return lerr(l, n, "out of memory");
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
         p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = lnode(l, p->key), *v = lnode(l, p->value);
        int seq = v->type == YAML_SEQUENCE_NODE;
        size_t nv = seq ? (size_t)(v->data.sequence.items.top -
                                   v->data.sequence.items.start)
                        : 1;
        for (size_t j = 0; j < nv; j++) {
            const yaml_node_t *one =
                seq ? lnode(l, v->data.sequence.items.start[j]) : v;
            struct sl_header *h = &c->headers[c->in.header_count++];
            h->name = stext(k);
            if (ykind(one) != YK_NULL) { /* null: a header with no value */
                h->value = stext(one);
                h->value_len = one->data.scalar.length;
            }
        }
    }
    c->in.headers = c->headers;
    return 0;
}

static int load_input(struct loader *l, struct tcase *c, const yaml_node_t *n)
{
    static const char *const names[] = {"key",       "value",  "headers",
                                        "topic",     "partition", "offset",
                                        "timestamp", NULL};
    const yaml_node_t *f[7];
    long long v;
    int rc;
    size_t mark;

    if (n->type != YAML_MAPPING_NODE) {
        return lerr(l, n, "expected a mapping ({key, value, headers, ...}), "
                          "found %s", kind_name(n));
    }
    rc = check_keys(l, n, names, f);
    c->in.topic = l->cfg->source.topics.count > 0
                      ? l->cfg->source.topics.items[0]
                      : "";
    c->in.timestamp_ms = -1;
    for (int i = 0; i < 7; i++) {
        if (f[i] == NULL) {
            continue;
        }
        mark = path_keys(&l->path, names[i]);
        switch (i) {
        case 0:
            if (check_scalar(l, f[i]) != 0) {
                rc = -1;
            } else if (ykind(f[i]) != YK_NULL) {
                c->in.key = stext(f[i]);
                c->in.key_len = f[i]->data.scalar.length;
            }
            break;
        case 1:
            if (ykind(f[i]) == YK_STR) {
                c->in.value = stext(f[i]);
                c->in.value_len = f[i]->data.scalar.length;
            } else if (ykind(f[i]) != YK_NULL) {
                struct buf b = {0};
                l->visits = 0;
                if (yaml_json(l, f[i], 0, &b) != 0) {
                    rc = -1;
                } else if (b.failed) {
                    rc = lerr(l, f[i], "larger than %u bytes as JSON, or "
                                       "out of memory", BUILT_MAX);
                } else {
                    c->value = b.data;
                    b.data = NULL;
                    c->in.value = c->value;
                    c->in.value_len = b.len;
                }
                buf_free(&b);
            }
            break;
        case 2:
            rc |= load_input_headers(l, c, f[i]);
            break;
        case 3:
            if (check_scalar(l, f[i]) != 0) {
                rc = -1;
            } else if (ykind(f[i]) == YK_NULL ||
                       strlen(stext(f[i])) != f[i]->data.scalar.length) {
                rc = lerr(l, f[i], "expected a topic name");
            } else {
                c->in.topic = stext(f[i]);
            }
            break;
        case 4:
            if (load_int(l, f[i], 0, INT32_MAX, &v) == 0) {
                c->in.partition = (int32_t)v;
            } else {
                rc = -1;
            }
            break;
        case 5:
            if (load_int(l, f[i], 0, INT64_MAX, &v) == 0) {
                c->in.offset = (int64_t)v;
            } else {
                rc = -1;
            }
            break;
        case 6:
            if (load_int(l, f[i], -1, INT64_MAX, &v) == 0) {
                c->in.timestamp_ms = (int64_t)v;
            } else {
                rc = -1;
            }
            break;
        }
        path_pop(&l->path, mark);
    }
    /* As the engine: dedupe.key's (the last such header, as librdkafka
     * finds it), else the coordinates; lua:F runs with the case. */
    static const struct cfg_dedupe by_default = {
        .from = CFG_DEDUPE_HEADER, .arg = ENGINE_DEDUPE_HEADER};
    const struct cfg_dedupe *d =
        l->cfg != NULL ? &l->cfg->dedupe : &by_default;
    const struct sl_header *id = NULL;
    for (size_t i = 0; d->from == CFG_DEDUPE_HEADER &&
                       i < c->in.header_count; i++) {
        if (strcmp(c->in.headers[i].name, d->arg) == 0) {
            id = &c->in.headers[i];
        }
    }
    c->in.dedupe_key = engine_pick_key(
        d, id != NULL ? id->value : NULL, id != NULL ? id->value_len : 0,
        c->in.value, c->in.value_len, c->dedupe, sizeof(c->dedupe));
    if (c->in.dedupe_key == NULL) {
        c->in.dedupe_key = engine_dedupe_key(
            c->dedupe, sizeof(c->dedupe), NULL, 0, c->in.topic,
            c->in.partition, c->in.offset);
    }
    return rc;
}

static int load_case(struct loader *l, struct tcase *c, const yaml_node_t *n)
{
    static const char *const names[] = {"name", "input", "expect", NULL};
    const yaml_node_t *f[3];
    int rc;

    c->line = (int)n->start_mark.line + 1;
    if (n->type != YAML_MAPPING_NODE) {
        return lerr(l, n, "expected a test ({name, input, expect}), found %s",
                    kind_name(n));
    }
    rc = check_keys(l, n, names, f);
    for (int i = 0; i < 3; i++) {
        size_t mark = path_keys(&l->path, names[i]);
        if (f[i] == NULL) {
            rc = lerr(l, n, "missing required key `%s`", names[i]);
        } else if (i == 0) {
            if (f[0]->type != YAML_SCALAR_NODE || ykind(f[0]) == YK_NULL) {
                rc = lerr(l, f[0], "expected the test's name");
            } else {
                c->name = stext(f[0]);
            }
        } else if (i == 1) {
            rc |= load_input(l, c, f[1]);
        } else {
            rc |= check_expect(l, f[2]);
            c->expect = f[2];
        }
        path_pop(&l->path, mark);
    }
    return rc;
}

static void tfile_free(struct tfile *f)
{
    for (size_t i = 0; i < f->count; i++) {
        free(f->cases[i].value);
        free(f->cases[i].headers);
    }
    free(f->cases);
    if (f->has_doc) {
        yaml_document_delete(&f->doc);
    }
    free(f->path);
}

static int tfile_load(struct tfile *f, const struct cfg *cfg,
                      struct cfg_errors *errs)
{
    static const char *const names[] = {"tests", NULL};
    struct loader l = {.file = f->path, .doc = &f->doc, .errs = errs,
                       .cfg = cfg};
    const yaml_node_t *root, *tests;
    FILE *fp = fopen(f->path, "rb");
    int rc;

    if (fp == NULL) {
        cfg_errors_add(errs, f->path, 0, 0, "", "cannot open: %s",
                       strerror(errno));
        return -1;
    }
    rc = cfg_parse_yaml(f->path, fp, NULL, 0, &f->doc, errs);
    fclose(fp);
    if (rc != 0) {
        return -1;
    }
    f->has_doc = 1;
    root = yaml_document_get_root_node(&f->doc);
    if (root == NULL || root->type != YAML_MAPPING_NODE) {
        cfg_errors_add(errs, f->path, root ? (int)root->start_mark.line + 1 : 1,
                       root ? (int)root->start_mark.column + 1 : 1, "",
                       "expected a mapping with `tests:`");
        return -1;
    }
    rc = check_keys(&l, root, names, &tests);
    if (tests == NULL) {
        return lerr(&l, root, "missing required key `tests`");
    }
    path_keys(&l.path, "tests");
    if (tests->type != YAML_SEQUENCE_NODE) {
        return lerr(&l, tests, "expected a list of tests, found %s",
                    kind_name(tests));
    }
    if (tests->data.sequence.items.top == tests->data.sequence.items.start) {
        return lerr(&l, tests, "expected at least one test");
    }
    f->cases = calloc((size_t)(tests->data.sequence.items.top -
                               tests->data.sequence.items.start),
                      sizeof(*f->cases));
    if (f->cases == NULL) {
        return lerr(&l, tests, "out of memory");
    }
    for (yaml_node_item_t *it = tests->data.sequence.items.start;
         it < tests->data.sequence.items.top; it++) {
        struct tcase *c = &f->cases[f->count++];
        size_t mark = path_index(
            &l.path, (size_t)(it - tests->data.sequence.items.start));
        rc |= load_case(&l, c, lnode(&l, *it));
        path_pop(&l.path, mark);
    }
    return rc;
}

/* ---- comparing ---- */

struct cmp {
    yaml_document_t *doc;
    struct path path;
    struct buf lines; /* "path: difference\n" each */
    int count;
};

static void diff(struct cmp *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void diff(struct cmp *c, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;

    if (c->count++ >= DIFFS_SHOWN) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->path.len > 0) {
        buf_printf(&c->lines, "%s: %s\n", c->path.s, msg);
    } else {
        buf_printf(&c->lines, "%s\n", msg);
    }
}

/* Parses actual bytes as JSON (any value; an integer beyond 64 bits
 * rather as a double than not at all). NULL if it is not JSON. */
static json_t *parse_json(const void *p, size_t len)
{
    json_error_t e;
    json_t *j = json_loadb(p, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);

    if (j == NULL && json_error_code(&e) == json_error_numeric_overflow) {
        j = json_loadb(p, len,
                       JSON_DECODE_ANY | JSON_ALLOW_NUL |
                           JSON_DECODE_INT_AS_REAL,
                       &e);
    }
    return j;
}

static const yaml_node_t *cnode(struct cmp *c, int index)
{
    return yaml_document_get_node(c->doc, index);
}

static void cmp_json(struct cmp *c, const yaml_node_t *e, const json_t *a);

static void cmp_object(struct cmp *c, const yaml_node_t *e, const json_t *a)
{
    size_t found = 0;

    for (yaml_node_pair_t *p = e->data.mapping.pairs.start;
         p < e->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = cnode(c, p->key);
        const json_t *v = json_object_getn(a, stext(k), k->data.scalar.length);
        size_t mark = path_key(&c->path, stext(k), k->data.scalar.length);
        if (v == NULL) {
            diff(c, "missing");
        } else {
            found++;
            cmp_json(c, cnode(c, p->value), v);
        }
        path_pop(&c->path, mark);
    }
    if (found == json_object_size(a)) {
        return;
    }
    for (void *it = json_object_iter((json_t *)a); it != NULL;
         it = json_object_iter_next((json_t *)a, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it), mark;
        int known = 0;
        for (yaml_node_pair_t *p = e->data.mapping.pairs.start;
             p < e->data.mapping.pairs.top && !known; p++) {
            const yaml_node_t *k = cnode(c, p->key);
            known = k->data.scalar.length == klen &&
                    memcmp(stext(k), key, klen) == 0;
        }
        if (!known) {
            struct show sh = {0};
            show_json(&sh, json_object_iter_value(it));
            mark = path_key(&c->path, key, klen);
            diff(c, "unexpected %s", show_text(&sh));
            path_pop(&c->path, mark);
        }
    }
}

static void cmp_array(struct cmp *c, const yaml_node_t *e, const json_t *a)
{
    size_t n = (size_t)(e->data.sequence.items.top -
                        e->data.sequence.items.start);
    size_t i;

    for (i = 0; i < n || i < json_array_size(a); i++) {
        size_t mark = path_index(&c->path, i);
        if (i >= json_array_size(a)) {
            diff(c, "missing");
        } else if (i >= n) {
            struct show sh = {0};
            show_json(&sh, json_array_get(a, i));
            diff(c, "unexpected %s", show_text(&sh));
        } else {
            cmp_json(c, cnode(c, e->data.sequence.items.start[i]),
                     json_array_get(a, i));
        }
        path_pop(&c->path, mark);
        if (c->count > DIFFS_SHOWN && i >= n) {
            c->count += (int)(json_array_size(a) - i - 1);
            break;
        }
    }
}

static void cmp_json(struct cmp *c, const yaml_node_t *e, const json_t *a)
{
    struct show se = {0}, sa = {0};
    struct num num;

    switch (ykind(e)) {
    case YK_MAP:
        if (json_is_object(a)) {
            cmp_object(c, e, a);
            return;
        }
        break;
    case YK_SEQ:
        if (json_is_array(a)) {
            cmp_array(c, e, a);
            return;
        }
        break;
    case YK_NULL:
        if (json_is_null(a)) {
            return;
        }
        break;
    case YK_BOOL:
        if (json_is_boolean(a) && json_is_true(a) == ybool(e)) {
            return;
        }
        break;
    case YK_INT:
    case YK_FLOAT:
        num_of_text(stext(e), &num);
        if (json_is_number(a) && num_equal(&num, a)) {
            return;
        }
        break;
    case YK_STR:
        if (json_is_string(a) &&
            json_string_length(a) == e->data.scalar.length &&
            memcmp(json_string_value(a), stext(e), e->data.scalar.length) ==
                0) {
            return;
        }
        break;
    }
    show_yaml(&se, c->doc, e, 0);
    show_json(&sa, a);
    diff(c, "expected %s, got %s", show_text(&se), show_text(&sa));
}

/* Compares bytes (NULL: none) with an expected value: null, a string
 * (bytes) or JSON. what names the absence ("no value", "no body"). */
static void cmp_value(struct cmp *c, const yaml_node_t *e, const void *p,
                      size_t len, const char *none)
{
    struct show se = {0}, sa = {0};
    enum ykind k = ykind(e);
    json_t *j;

    if (p == NULL) {
        show_adds(&sa, none);
    } else {
        show_bytes(&sa, p, len, k == YK_STR ? '"' : '`');
    }
    if (k == YK_NULL) {
        if (p != NULL) {
            diff(c, "expected %s, got %s", none, show_text(&sa));
        }
        return;
    }
    if (k == YK_STR) {
        if (p == NULL || len != e->data.scalar.length ||
            memcmp(p, stext(e), len) != 0) {
            show_bytes(&se, stext(e), e->data.scalar.length, '"');
            diff(c, "expected %s, got %s", show_text(&se), show_text(&sa));
        }
        return;
    }
    j = p != NULL ? parse_json(p, len) : NULL;
    if (j == NULL) {
        diff(c, "expected JSON, got %s", show_text(&sa));
        return;
    }
    cmp_json(c, e, j);
    json_decref(j);
}

/* Bytes with NULL meaning absent, as a string for differences. */
static const char *show_opt(struct show *sh, const void *p, size_t len,
                            const char *none)
{
    if (p == NULL) {
        show_adds(sh, none);
    } else {
        show_bytes(sh, p, len, '"');
    }
    return show_text(sh);
}

/* A scalar that must equal bytes (null: absent). */
static void cmp_bytes(struct cmp *c, const yaml_node_t *e, const void *p,
                      size_t len, const char *none)
{
    struct show se = {0}, sa = {0};

    if (ykind(e) == YK_NULL) {
        if (p != NULL) {
            diff(c, "expected %s, got %s", none,
                 show_opt(&sa, p, len, none));
        }
        return;
    }
    if (p == NULL || len != e->data.scalar.length ||
        memcmp(p, stext(e), len) != 0) {
        diff(c, "expected %s, got %s",
             show_opt(&se, stext(e), e->data.scalar.length, none),
             show_opt(&sa, p, len, none));
    }
}

static int name_eq(const char *a, const char *b, int nocase)
{
    return nocase ? strcasecmp(a, b) == 0 : strcmp(a, b) == 0;
}

/* A headers expectation: a subset, each name's values in order. */
static void cmp_headers(struct cmp *c, const yaml_node_t *e,
                        const struct sl_header *h, size_t n,
                        int nocase)
{
    for (yaml_node_pair_t *p = e->data.mapping.pairs.start;
         p < e->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = cnode(c, p->key), *v = cnode(c, p->value);
        const yaml_node_item_t *items = &p->value, *end = &p->value + 1;
        struct show se = {0}, sa = {0};
        size_t got = 0, want, mark;
        int same = 1;

        if (v->type == YAML_SEQUENCE_NODE) {
            items = v->data.sequence.items.start;
            end = v->data.sequence.items.top;
        }
        want = ykind(v) == YK_NULL ? 0 : (size_t)(end - items);
        for (size_t i = 0; i < n; i++) {
            if (!name_eq(h[i].name, stext(k), nocase)) {
                continue;
            }
            if (got < want) {
                const yaml_node_t *one = cnode(c, items[got]);
                same &= ykind(one) == YK_NULL
                            ? h[i].value == NULL
                            : h[i].value != NULL &&
                                  h[i].value_len == one->data.scalar.length &&
                                  memcmp(h[i].value, stext(one),
                                         h[i].value_len) == 0;
            }
            show_add(&sa, got ? "," : "", got ? 1 : 0);
            if (h[i].value == NULL) {
                show_adds(&sa, "null");
            } else {
                show_bytes(&sa, h[i].value, h[i].value_len, '"');
            }
            got++;
        }
        if (same && got == want) {
            continue;
        }
        mark = path_key(&c->path, stext(k), k->data.scalar.length);
        if (want == 0) {
            diff(c, "unexpected %s", show_text(&sa));
        } else if (got == 0) {
            diff(c, "missing");
        } else {
            if (v->type == YAML_SEQUENCE_NODE) {
                show_yaml(&se, c->doc, v, 0);
            } else {
                show_bytes(&se, stext(v), v->data.scalar.length, '"');
            }
            if (got > 1 || v->type == YAML_SEQUENCE_NODE) {
                /* several values: show them as the list they are */
                struct show list = {0};
                show_add(&list, "[", 1);
                show_adds(&list, show_text(&sa));
                show_add(&list, "]", 1);
                diff(c, "expected %s, got %s", show_text(&se),
                     show_text(&list));
            } else {
                diff(c, "expected %s, got %s", show_text(&se),
                     show_text(&sa));
            }
        }
        path_pop(&c->path, mark);
    }
}

/* ---- running ---- */

struct runner {
    const struct cfg *cfg;
    transform_t *t;
    keyrule_t *keys; /* source.type http: the publisher's key rule */
    int verbose;
    struct cmp cmp;
    struct buf shown; /* --verbose: what the sinks got */
};

/* An error message on one line: newlines and controls escaped. */
static const char *one_line(const char *msg, char *out, size_t size)
{
    size_t j = 0;

    for (const char *p = msg; *p != '\0' && j + 5 < size; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '\n') {
            out[j++] = '\\';
            out[j++] = 'n';
        } else if (ch < 0x20 || ch == 0x7f) {
            j += (size_t)snprintf(out + j, size - j, "\\x%02x", ch);
        } else {
            out[j++] = (char)ch;
        }
    }
    out[j] = '\0';
    return out;
}

/* The sink's configured method, read through its option table. */
static const char *sink_method(const struct cfg_sink *s)
{
    for (const struct opt_spec *o = s->connector->options;
         o != NULL && o->name != NULL; o++) {
        if (strcmp(o->name, "method") != 0) {
            continue;
        }
        if (o->type == OPT_ENUM && o->choices != NULL) {
            return o->choices[*(const int *)((const char *)s->ctx +
                                             o->offset)];
        }
        if (o->type == OPT_STRING) {
            return *(char *const *)((const char *)s->ctx + o->offset);
        }
    }
    return NULL;
}

static void show_request(struct runner *r, size_t sink, int rc,
                         const struct connector_msg *view,
                         const struct transform_request *req,
                         const struct sl_error *err)
{
    const struct cfg_sink *s = &r->cfg->sinks[sink];
    struct show body = {0};
    char line[1100];
    size_t mark = path_keys(&r->cmp.path, "sinks");

    path_keys(&r->cmp.path, s->name);
    if (rc < 0) {
        buf_printf(&r->shown, "%s: error: %s\n", r->cmp.path.s,
                   one_line(err->msg, line, sizeof(line)));
    } else if (rc == TRANSFORM_SKIP) {
        buf_printf(&r->shown, "%s: skip\n", r->cmp.path.s);
    } else {
        const char *method = req->method ? req->method : sink_method(s);
        if (req->body != NULL) {
            show_bytes(&body, req->body, req->body_len, '`');
        } else if (view->value != NULL) {
            show_bytes(&body, view->value, view->value_len, '`');
        } else {
            show_adds(&body, "(no body)");
        }
        buf_printf(&r->shown, "%s: %s%s%s %s\n", r->cmp.path.s,
                   method ? method : "(the sink's method)",
                   req->path ? " " : "", req->path ? req->path : "",
                   show_text(&body));
        for (size_t i = 0; i < req->header_count; i++) {
            struct show hv = {0};
            const struct sl_header *h = &req->headers[i];
            if (h->value != NULL) {
                show_bytes(&hv, h->value, h->value_len, 0);
            }
            buf_printf(&r->shown, "    %s: %s\n", h->name, show_text(&hv));
        }
    }
    path_pop(&r->cmp.path, mark);
}

/* map's value at key, or NULL (the loader has checked map's keys). */
static const yaml_node_t *map_get(struct cmp *c, const yaml_node_t *map,
                                  const char *key)
{
    if (map == NULL || map->type != YAML_MAPPING_NODE) {
        return NULL;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
         p < map->data.mapping.pairs.top; p++) {
        if (strcmp(stext(cnode(c, p->key)), key) == 0) {
            return cnode(c, p->value);
        }
    }
    return NULL;
}

/* An {error: TEXT} expectation: msg (NULL: it did not fail, got says
 * what came out instead) must contain TEXT; line is msg on one line. */
static void cmp_error(struct cmp *c, const yaml_node_t *text, const char *msg,
                      const char *line, const char *got)
{
    struct show se = {0};

    show_bytes(&se, stext(text), text->data.scalar.length, '"');
    if (msg == NULL) {
        diff(c, "expected an error containing %s, got %s", show_text(&se),
             got);
    } else if (strstr(msg, stext(text)) == NULL) {
        diff(c, "expected an error containing %s, got an error: %s",
             show_text(&se), line);
    }
}

/* One sink's outcome against its expectation. */
static void cmp_sink(struct runner *r, const yaml_node_t *e, size_t sink,
                     int rc, const struct connector_msg *view,
                     const struct transform_request *req,
                     const struct sl_error *err)
{
    struct cmp *c = &r->cmp;
    const yaml_node_t *error, *body, *method, *path, *headers;
    char line[1100];
    const char *got = rc < 0 ? "an error: " : rc == TRANSFORM_SKIP
                                                 ? "skip"
                                                 : "a request";

    if (rc < 0) {
        one_line(err->msg, line, sizeof(line));
    } else {
        line[0] = '\0';
    }
    if (is_scalar_word(e, "skip")) {
        if (rc != TRANSFORM_SKIP) {
            diff(c, "expected skip, got %s%s", got, line);
        }
        return;
    }
    if ((error = map_get(c, e, "error")) != NULL) {
        cmp_error(c, error, rc < 0 ? err->msg : NULL, line, got);
        return;
    }
    if (rc != TRANSFORM_SEND) {
        diff(c, "expected a request, got %s%s", got, line);
        return;
    }
    if ((body = map_get(c, e, "body")) != NULL) {
        size_t mark = path_keys(&c->path, "body");
        if (req->body != NULL) {
            cmp_value(c, body, req->body, req->body_len, "no body");
        } else {
            cmp_value(c, body, view->value, view->value_len, "no body");
        }
        path_pop(&c->path, mark);
    }
    if ((method = map_get(c, e, "method")) != NULL) {
        const char *m = req->method ? req->method : sink_method(
                                                        &r->cfg->sinks[sink]);
        size_t mark = path_keys(&c->path, "method");
        cmp_bytes(c, method, m, m ? strlen(m) : 0, "none");
        path_pop(&c->path, mark);
    }
    if ((path = map_get(c, e, "path")) != NULL) {
        size_t mark = path_keys(&c->path, "path");
        cmp_bytes(c, path, req->path, req->path ? strlen(req->path) : 0,
                  "none");
        path_pop(&c->path, mark);
    }
    if ((headers = map_get(c, e, "headers")) != NULL) {
        size_t mark = path_keys(&c->path, "headers");
        cmp_headers(c, headers, req->headers, req->header_count, 1);
        path_pop(&c->path, mark);
    }
}

/* Checks output i against e, a message expectation. */
static void cmp_message(struct runner *r, const struct connector_msg *in,
                        size_t i, const yaml_node_t *e)
{
    struct cmp *c = &r->cmp;
    const yaml_node_t *key = map_get(c, e, "key");
    const yaml_node_t *value = map_get(c, e, "value");
    const yaml_node_t *headers = map_get(c, e, "headers");
    const yaml_node_t *sinks = map_get(c, e, "sinks");
    struct connector_msg view;
    size_t mark;

    transform_output_view(r->t, i, in, &view);
    if (key != NULL) {
        mark = path_keys(&c->path, "key");
        cmp_bytes(c, key, view.key, view.key_len, "no key");
        path_pop(&c->path, mark);
    }
    if (value != NULL) {
        mark = path_keys(&c->path, "value");
        cmp_value(c, value, view.value, view.value_len, "no value");
        path_pop(&c->path, mark);
    }
    if (headers != NULL) {
        mark = path_keys(&c->path, "headers");
        cmp_headers(c, headers, view.headers, view.header_count, 0);
        path_pop(&c->path, mark);
    }
    if (sinks == NULL && !r->verbose) {
        return;
    }
    /* Every sink's transform runs, as in the engine, whichever the case
     * names: they share the output's JSON table. */
    const struct transform_shaped *sh = transform_shape_all(r->t, i, &view);
    for (size_t s = 0; s < r->cfg->sink_count; s++) {
        const yaml_node_t *se = map_get(c, sinks, r->cfg->sinks[s].name);
        if (r->verbose) {
            show_request(r, s, sh[s].result, &view, &sh[s].req, &sh[s].err);
        }
        if (se != NULL) {
            mark = path_keys(&c->path, "sinks");
            path_keys(&c->path, r->cfg->sinks[s].name);
            cmp_sink(r, se, s, sh[s].result, &view, &sh[s].req, &sh[s].err);
            path_pop(&c->path, mark);
        }
    }
}

static const char *count_text(int n, char *out, size_t size)
{
    if (n == 0) {
        snprintf(out, size, "drop");
    } else {
        snprintf(out, size, "%d message%s", n, n == 1 ? "" : "s");
    }
    return out;
}

/* A publisher's case: the key its request gets (expect: key), or why it
 * gets none (expect: error), by the function the publisher calls. The
 * input's value is the request body and its headers the request's. With
 * a transform, a request that gets a key goes on as a consumed record
 * would (*d: its key; returns 1), since the engine takes it the same. */
static int run_publish_case(struct runner *r, const struct tcase *tc,
                            struct keyrule_decision *dp)
{
    struct cmp *c = &r->cmp;
    const yaml_node_t *e = tc->expect, *error, *key;
    struct keyrule_decision d;
    struct sl_error err = {{0}};
    char line[1100];
    struct keyrule_input in = {
        .headers = tc->in.headers,
        .header_count = tc->in.header_count,
        .body = tc->in.value != NULL ? tc->in.value : "",
        .body_len = tc->in.value_len,
    };
    int rc = keyrule_apply(r->keys, &in, 0, &d, &err);

    if (rc == 0 && transform_active(r->t)) {
        *dp = d;
        return 1;
    }
    if (rc != 0) {
        one_line(err.msg, line, sizeof(line));
    }
    if ((error = map_get(c, e, "error")) != NULL) {
        cmp_error(c, error, rc != 0 ? err.msg : NULL, line, "a key");
        return 0;
    }
    if (rc != 0) {
        diff(c, "expected a key, got an error: %s", line);
        return 0;
    }
    if ((key = map_get(c, e, "key")) != NULL &&
        (key->type != YAML_SCALAR_NODE ||
         key->data.scalar.length != d.key_len ||
         memcmp(stext(key), d.key, d.key_len) != 0)) {
        struct show want = {0}, got = {0};
        show_bytes(&want, stext(key), key->data.scalar.length, '"');
        show_bytes(&got, d.key, d.key_len, '"');
        diff(c, "key: expected %s, got %s", show_text(&want),
             show_text(&got));
    }
    if (r->verbose) {
        buf_printf(&r->shown, "key: %s\n", d.key);
    }
    return 0;
}

static void run_case(struct runner *r, const struct tcase *tc)
{
    struct cmp *c = &r->cmp;
    const yaml_node_t *e = tc->expect, *error, *msgs;
    struct sl_error err = {{0}};
    char line[1100], got[64], key[ENGINE_DEDUPE_MAX];
    struct connector_msg in = tc->in;
    struct keyrule_decision pub;
    int n;

    if (r->keys != NULL) {
        if (!run_publish_case(r, tc, &pub)) {
            return;
        }
        in.key = pub.key;
        in.key_len = pub.key_len;
        in.topic = r->cfg->http.path;
    }
    if (r->cfg->dedupe.from == CFG_DEDUPE_LUA &&
        transform_dedupe_key(r->t, &in, key, sizeof(key), &err) != NULL) {
        in.dedupe_key = key;
    }
    n = transform_run(r->t, &in, &err);
    if (n < 0) {
        one_line(err.msg, line, sizeof(line));
    }
    if (is_scalar_word(e, "drop")) {
        if (n < 0) {
            diff(c, "expected drop, got an error: %s", line);
        } else if (n > 0) {
            diff(c, "expected drop, got %s", count_text(n, got, sizeof(got)));
        }
        return;
    }
    if ((error = map_get(c, e, "error")) != NULL) {
        cmp_error(c, error, n < 0 ? err.msg : NULL, line,
                  n < 0 ? "" : count_text(n, got, sizeof(got)));
        return;
    }
    if ((msgs = map_get(c, e, "messages")) != NULL) {
        size_t want = (size_t)(msgs->data.sequence.items.top -
                               msgs->data.sequence.items.start);
        size_t mark = path_keys(&c->path, "messages");
        char exp[64];
        if (n < 0) {
            diff(c, "expected %s, got an error: %s",
                 count_text((int)want, exp, sizeof(exp)), line);
        } else if ((size_t)n != want) {
            diff(c, "expected %s, got %s",
                 count_text((int)want, exp, sizeof(exp)),
                 count_text(n, got, sizeof(got)));
        }
        for (size_t i = 0; n > 0 && i < want && i < (size_t)n; i++) {
            size_t m2 = path_index(&c->path, i);
            cmp_message(r, &in, i,
                        cnode(c, msgs->data.sequence.items.start[i]));
            path_pop(&c->path, m2);
        }
        path_pop(&c->path, mark);
        return;
    }
    if (n < 0) {
        diff(c, "expected 1 message, got an error: %s", line);
    } else if (n != 1) {
        diff(c, "expected 1 message, got %s", count_text(n, got, sizeof(got)));
    } else {
        cmp_message(r, &in, 0, e);
    }
}

/* Prints text's lines, each indented. */
static void print_indented(FILE *out, const char *text)
{
    while (text != NULL && *text != '\0') {
        const char *nl = strchr(text, '\n');
        size_t len = nl ? (size_t)(nl - text) : strlen(text);
        fprintf(out, "    %.*s\n", (int)len, text);
        text += len + (nl ? 1 : 0);
    }
}

/* Where the tests are when none are named: beside the pipeline, with
 * .yaml/.yml replaced by .test.yaml. */
static char *default_tests(const char *pipeline)
{
    size_t len = strlen(pipeline);
    char *path = malloc(len + sizeof(".test.yaml"));

    if (path == NULL) {
        return NULL;
    }
    if (len > 5 && strcmp(pipeline + len - 5, ".yaml") == 0) {
        len -= 5;
    } else if (len > 4 && strcmp(pipeline + len - 4, ".yml") == 0) {
        len -= 4;
    }
    memcpy(path, pipeline, len);
    memcpy(path + len, ".test.yaml", sizeof(".test.yaml"));
    return path;
}

/* Error lines in file order: the loader checks a mapping's keys before
 * its values, so its lines come out of order. */
struct errline {
    const char *text;
    size_t len;
    long line, col;
    size_t seq;
};

static int errline_cmp(const void *a, const void *b)
{
    const struct errline *x = a, *y = b;

    if (x->line != y->line) {
        return x->line < y->line ? -1 : 1;
    }
    if (x->col != y->col) {
        return x->col < y->col ? -1 : 1;
    }
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void print_errors(FILE *errf, const char *file, const char *text)
{
    size_t n = 0, flen = strlen(file);
    struct errline *lines;
    const char *p;

    for (p = text; *p != '\0'; p++) {
        n += *p == '\n';
    }
    lines = calloc(n ? n : 1, sizeof(*lines));
    if (lines == NULL) {
        fputs(text, errf); /* unsorted beats nothing */
        return;
    }
    n = 0;
    for (p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        struct errline *e = &lines[n];
        char *end;
        if (nl == NULL) {
            break;
        }
        *e = (struct errline){.text = p, .len = (size_t)(nl - p) + 1,
                              .seq = n};
        if (strncmp(p, file, flen) == 0 && p[flen] == ':') {
            e->line = strtol(p + flen + 1, &end, 10);
            if (*end == ':') {
                e->col = strtol(end + 1, NULL, 10);
            }
        }
        n++;
        p = nl + 1;
    }
    qsort(lines, n, sizeof(*lines), errline_cmp);
    for (size_t i = 0; i < n; i++) {
        fwrite(lines[i].text, 1, lines[i].len, errf);
    }
    free(lines);
}

/* Loads every test file, printing every error. 0 or -1. */
static int load_tests(const struct testcmd_options *o, const struct cfg *cfg,
                      struct tfile *files, size_t nfiles, FILE *errf)
{
    struct cfg_errors *errs = calloc(1, sizeof(*errs));
    int rc = 0;

    if (errs == NULL) {
        fprintf(errf, "sluice: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < nfiles; i++) {
        files[i].path = o->test_count > 0 ? strdup(o->tests[i])
                                          : default_tests(o->pipeline);
        if (files[i].path == NULL) {
            fprintf(errf, "sluice: out of memory\n");
            rc = -1;
            break;
        }
        if (o->test_count == 0) {
            FILE *fp = fopen(files[i].path, "rb");
            if (fp == NULL && errno == ENOENT) {
                fprintf(errf, "sluice: no tests: write %s\n", files[i].path);
                rc = -1;
                break;
            }
            if (fp != NULL) {
                fclose(fp);
            }
        }
        memset(errs, 0, sizeof(*errs));
        if (tfile_load(&files[i], cfg, errs) != 0 || errs->count > 0) {
            print_errors(errf, files[i].path, errs->text);
            fprintf(errf, "sluice: %d error(s) in %s\n",
                    errs->count ? errs->count : 1, files[i].path);
            rc = -1;
        }
    }
    free(errs);
    return rc;
}

int testcmd_run(const struct testcmd_options *o)
{
    FILE *out = o->out != NULL ? o->out : stdout;
    FILE *errf = o->err != NULL ? o->err : stderr;
    size_t nfiles = o->test_count > 0 ? o->test_count : 1;
    struct runner r = {.verbose = o->verbose};
    struct tfile *files = NULL;
    struct cfg *cfg;
    struct sl_error err = {{0}};
    int passed = 0, failed = 0, rc = TESTCMD_INVALID;

    cfg = engine_load_config(o->pipeline, errf);
    if (cfg == NULL) {
        return TESTCMD_INVALID;
    }
    files = calloc(nfiles, sizeof(*files));
    if (files == NULL) {
        fprintf(errf, "sluice: out of memory\n");
        goto done;
    }
    if (load_tests(o, cfg, files, nfiles, errf) != 0) {
        goto done;
    }
    r.cfg = cfg;
    if (cfg->source_type == CFG_SOURCE_HTTP) {
        /* Static hot keys only: auto_shard depends on the traffic. */
        r.keys = cfg_http_keyrule(cfg, NULL, NULL, NULL, &err);
        if (r.keys == NULL) {
            fprintf(errf, "%s: %s\n", o->pipeline, err.msg);
            goto done;
        }
    }
    r.t = cfg_transform_new(cfg, &err);
    if (r.t == NULL) {
        /* as sluice validate reports it */
        fprintf(errf, "%s\nsluice: 1 error(s) in %s\n", err.msg,
                o->pipeline);
        goto done;
    }
    for (size_t f = 0; f < nfiles; f++) {
        r.cmp.doc = &files[f].doc;
        for (size_t i = 0; i < files[f].count; i++) {
            const struct tcase *tc = &files[f].cases[i];
            r.cmp.count = 0;
            buf_reset(&r.cmp.lines);
            buf_reset(&r.shown);
            path_pop(&r.cmp.path, 0);
            run_case(&r, tc);
            fprintf(out, "%s %s (%s:%d)\n", r.cmp.count ? "FAIL" : "ok  ",
                    tc->name, files[f].path, tc->line);
            if (r.cmp.count > 0) {
                failed++;
                print_indented(out, r.cmp.lines.data);
                if (r.cmp.count > DIFFS_SHOWN) {
                    fprintf(out, "    ... and %d more difference(s)\n",
                            r.cmp.count - DIFFS_SHOWN);
                }
            } else {
                passed++;
                if (r.verbose) {
                    print_indented(out, r.shown.data);
                }
            }
        }
    }
    fprintf(out, "%d passed, %d failed\n", passed, failed);
    rc = failed > 0 ? TESTCMD_FAILED : TESTCMD_PASSED;
done:
    keyrule_destroy(r.keys);
    transform_destroy(r.t);
    buf_free(&r.cmp.lines);
    buf_free(&r.shown);
    for (size_t f = 0; files != NULL && f < nfiles; f++) {
        tfile_free(&files[f]);
    }
    free(files);
    cfg_free(cfg);
    return rc;
}

/* ---- the pieces, on text, for unit tests ---- */

/* Copies the first error line into err without its empty file name. */
static void first_error(const struct cfg_errors *errs, struct sl_error *err)
{
    const char *text = errs->text[0] == ':' ? errs->text + 1 : errs->text;
    size_t len = strcspn(text, "\n");

    sl_error_set(err, "%.*s", (int)len, text);
}

char *testcmd_value_from_yaml(const char *yaml, size_t yaml_len, size_t *len,
                              struct sl_error *err)
{
    struct cfg_errors *errs = calloc(1, sizeof(*errs));
    yaml_document_t doc;
    const yaml_node_t *root;
    struct buf b = {0};
    char *out = NULL;

    err->msg[0] = '\0';
    if (errs == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    if (cfg_parse_yaml("", NULL, yaml, yaml_len, &doc, errs) != 0) {
        first_error(errs, err);
        free(errs);
        return NULL;
    }
    root = yaml_document_get_root_node(&doc);
    if (ykind(root) != YK_NULL) {
        struct loader l = {.file = "", .doc = &doc, .errs = errs};
        buf_add(&b, "", 0); /* "" still gets a buffer */
        if (ykind(root) == YK_STR) {
            buf_add(&b, stext(root), root->data.scalar.length);
        } else if (yaml_json(&l, root, 0, &b) != 0) {
            first_error(errs, err);
        }
        if (err->msg[0] == '\0' && b.failed) {
            sl_error_set(err, "larger than %u bytes, or out of memory",
                         BUILT_MAX);
        }
        if (err->msg[0] == '\0') {
            out = b.data;
            *len = b.len;
            b.data = NULL;
        }
        buf_free(&b);
    }
    yaml_document_delete(&doc);
    free(errs);
    return out;
}

int testcmd_compare_value(const char *expected_yaml, const void *actual,
                          size_t actual_len, const char *path, char *out,
                          size_t out_size, struct sl_error *err)
{
    struct cfg_errors *errs = calloc(1, sizeof(*errs));
    struct cmp c = {0};
    yaml_document_t doc;
    const yaml_node_t *root;
    int rc = -1;

    if (errs == NULL) {
        return sl_error_set(err, "out of memory");
    }
    if (cfg_parse_yaml("", NULL, expected_yaml, strlen(expected_yaml), &doc,
                  errs) != 0) {
        first_error(errs, err);
        free(errs);
        return -1;
    }
    root = yaml_document_get_root_node(&doc);
    struct loader l = {.file = "", .doc = &doc, .errs = errs};
    if (root != NULL && check_value(&l, root) != 0) {
        first_error(errs, err);
        goto done;
    }
    c.doc = &doc;
    path_addn(&c.path, path, strlen(path));
    /* an empty document (root NULL) is null: no value, as ykind says */
    cmp_value(&c, root, actual, actual_len, "no value");
    snprintf(out, out_size, "%s", c.lines.data ? c.lines.data : "");
    rc = c.count;
done:
    buf_free(&c.lines);
    yaml_document_delete(&doc);
    free(errs);
    return rc;
}
