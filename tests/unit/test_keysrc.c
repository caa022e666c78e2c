/* test_keysrc.c -- json: key picking by keysrc.c's scanner against the
 * jansson picking it replaced (keysrc_jansson.h): each case must give
 * both the same key and miss, and the one written here; then random
 * mutations of valid bodies must too. Also header: sources and
 * keysrc_parse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keysrc.h"
#include "keysrc_jansson.h"

/* Picks path from value[0, len) with a cap-byte buffer by both, checks
 * they agree, and returns the scanner's key (in a static buffer) or
 * NULL, its miss in *miss. */
static const char *both(const char *value, size_t len, const char *path,
                        size_t cap, int *miss)
{
    static char out[2][4096];
    struct keysrc_json_pick a = {.path = path, .out = out[0], .cap = cap};
    struct keysrc_json_pick b = {.path = path, .out = out[1], .cap = cap};

    assert_true(cap <= sizeof(out[0]));
    keysrc_pick_json(value, len, &a, 1);
    oracle_pick_json(value, len, &b, 1);
    if (a.miss != b.miss || (a.key == NULL) != (b.key == NULL) ||
        (a.key != NULL && strcmp(a.key, b.key) != 0)) {
        print_error("disagree on %.*s (path %s, cap %zu): scanner %d %s, "
                    "jansson %d %s\n",
                    (int)(len > 300 ? 300 : len), value, path, cap, a.miss,
                    a.key ? a.key : "-", b.miss, b.key ? b.key : "-");
        fail();
    }
    *miss = a.miss;
    return a.key;
}

struct pick_case {
    const char *value;
    const char *path;
    int miss;
    const char *key; /* when miss is KEYSRC_OK */
    size_t len;      /* of value, when it holds a NUL; else 0 */
};

static void check_cases(const struct pick_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = c[i].len ? c[i].len : strlen(c[i].value);
        int miss;
        const char *key = both(c[i].value, len, c[i].path, 64, &miss);
        if (miss != c[i].miss) {
            print_error("case %zu: %s: miss %d, expected %d\n", i,
                        c[i].value, miss, c[i].miss);
            fail();
        }
        if (miss == KEYSRC_OK) {
            assert_string_equal(key, c[i].key);
        }
    }
}

static void test_basics(void **state)
{
    static const struct pick_case c[] = {
        {"{\"tenant_id\":\"t1\"}", "tenant_id", KEYSRC_OK, "t1", 0},
        {" {\"a\" : \"x\" } \n\t\r", "a", KEYSRC_OK, "x", 0},
        {"{\"a\":{\"b\":{\"c\":\"deep\"}}}", "a.b.c", KEYSRC_OK, "deep", 0},
        {"{\"a\":{\"b\":1}}", "a.c", KEYSRC_ABSENT, NULL, 0},
        {"{\"a\":\"s\"}", "a.b", KEYSRC_NOT_FOUND, NULL, 0},
        {"{\"a\":[1]}", "a.b", KEYSRC_NOT_FOUND, NULL, 0},
        {"{\"a\":null}", "a.b", KEYSRC_NOT_FOUND, NULL, 0},
        {"[{\"a\":1}]", "a", KEYSRC_NOT_FOUND, NULL, 0},
        {"{}", "a", KEYSRC_ABSENT, NULL, 0},
        {"{\"a\":true}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":false}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":null}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":{}}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":[]}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":\"\"}", "a", KEYSRC_EMPTY, NULL, 0},
        /* The path as json_key walked it: "" is the root itself, a
         * trailing dot nothing, an empty name the field "". */
        {"{\"a\":1}", "", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":1}", "a.", KEYSRC_OK, "1", 0},
        {"{\"\":{\"a\":\"k\"}}", ".a", KEYSRC_OK, "k", 0},
        {"{\"a\":{\"\":{\"b\":\"k\"}}}", "a..b", KEYSRC_OK, "k", 0},
        /* Fields after the one picked are still read and checked. */
        {"{\"a\":\"k\",\"b\":[1,{\"c\":2,\"c\":3}]}", "a", KEYSRC_NOT_JSON,
         NULL, 0},
        {"{\"a\":\"k\",\"b\":[1,{\"c\":2,\"d\":3}]}", "a", KEYSRC_OK, "k", 0},
    };

    (void)state;
    check_cases(c, sizeof(c) / sizeof(c[0]));
}

static void test_not_json(void **state)
{
    static const struct pick_case c[] = {
        {"", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"  \n", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"1", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"\"s\"", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"null", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{} x", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{}{}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{}\0", "a", KEYSRC_NOT_JSON, NULL, 3},
        {"{\"a\":1}\f", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":1,}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"[1,]", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\" 1}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":1", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{a:1}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":tru}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":truex}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"[true1]", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"[1true]", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"k\",\"a\":\"k\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":1,\"\\u0061\":2}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"[{\"b\":1,\"b\":2}]", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\\u0000\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"k\",\"b\":\"\\u0000\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\\u0000\":1}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\\x\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\\u12\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\\ud83d\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\\ude00\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\\ud83d\\u0041\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\\ud83d\\ud83d\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\\ud83d\\n\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\\ud83dx\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"x\ty\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"x\ny\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"x\0y\"}", "a", KEYSRC_NOT_JSON, NULL, 11},
        {"{\"a\":\"\xff\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\xc0\xaf\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\xe0\x80\xaf\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\xed\xa0\x80\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\xf4\x90\x80\x80\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"\xe2\x82\"}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"k\"}\xe2\x82", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":\"k\"}\xc2\xa0", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":01}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":-01}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":-}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":1.}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":.5}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":+1}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":1e}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":1e+}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":0x1}", "a", KEYSRC_NOT_JSON, NULL, 0},
        /* jansson skips one NUL byte after a number or a literal (it
         * puts back the byte after them, and a NUL put back is lost),
         * nowhere else. Found by fuzz_keysrc. */
        {"{\"a\":5\0}", "a", KEYSRC_OK, "5", 8},
        {"{\"a\":-0\0 }", "a", KEYSRC_OK, "0", 10},
        {"[1\0,true\0,null\0,false\0]", "a", KEYSRC_NOT_FOUND, NULL, 23},
        {"{\"b\":2932.05\0}", "a", KEYSRC_ABSENT, NULL, 14},
        {"[1\0\0]", "a", KEYSRC_NOT_JSON, NULL, 5},
        {"[1 \0]", "a", KEYSRC_NOT_JSON, NULL, 5},
        {"[\"s\"\0]", "a", KEYSRC_NOT_JSON, NULL, 6},
        {"[[]\0]", "a", KEYSRC_NOT_JSON, NULL, 5},
        {"{\"a\"\0:1}", "a", KEYSRC_NOT_JSON, NULL, 8},
        {"[1.\0]", "a", KEYSRC_NOT_JSON, NULL, 5},
    };

    (void)state;
    check_cases(c, sizeof(c) / sizeof(c[0]));
}

static void test_strings(void **state)
{
    static const struct pick_case c[] = {
        {"{\"a\":\"x\\n\\t\\\"\\\\\\/\\b\\f\\r\"}", "a", KEYSRC_OK,
         "x\n\t\"\\/\b\f\r", 0},
        {"{\"a\":\"\\u00e9\\u20AC\"}", "a", KEYSRC_OK, "\xc3\xa9\xe2\x82\xac",
         0},
        {"{\"a\":\"\\ud83d\\ude00\"}", "a", KEYSRC_OK, "\xf0\x9f\x98\x80", 0},
        {"{\"a\":\"\xe2\x82\xac\x7f\"}", "a", KEYSRC_OK, "\xe2\x82\xac\x7f",
         0},
        {"{\"\\u00e9\":\"k\"}", "\xc3\xa9", KEYSRC_OK, "k", 0},
        {"{\"\xc3\xa9\":\"k\"}", "\xc3\xa9", KEYSRC_OK, "k", 0},
        {"{\"\\u0061\":\"k\"}", "a", KEYSRC_OK, "k", 0},
        {"{\"\\u00e9\":1,\"\xc3\xa9\":2}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"ab\":1,\"a\":2,\"abc\":3}", "a", KEYSRC_OK, "2", 0},
    };

    (void)state;
    check_cases(c, sizeof(c) / sizeof(c[0]));
}

static void test_numbers(void **state)
{
    static const struct pick_case c[] = {
        {"{\"a\":42}", "a", KEYSRC_OK, "42", 0},
        {"{\"a\":0}", "a", KEYSRC_OK, "0", 0},
        {"{\"a\":-0}", "a", KEYSRC_OK, "0", 0},
        {"{\"a\":-7}", "a", KEYSRC_OK, "-7", 0},
        {"{\"a\":9223372036854775807}", "a", KEYSRC_OK,
         "9223372036854775807", 0},
        {"{\"a\":-9223372036854775808}", "a", KEYSRC_OK,
         "-9223372036854775808", 0},
        {"{\"a\":9223372036854775808}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":-9223372036854775809}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":10000000000000000000}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":1.5}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":-0.0}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":1E+2}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":1e308}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":1e309}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":-1e309}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":1.7976931348623157e308}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":1.7976931348623159e308}", "a", KEYSRC_NOT_JSON, NULL, 0},
        /* Either side of 2^1024 - 2^970, where strtod starts to round
         * to infinity. */
        {"{\"a\":1.797693134862315807937289714053034150799341327100378269"
         "36173778980444968292764750946649017977587207096330286416692887"
         "91094655554785194040263065748867150582068190890200070838367627"
         "38548458177115317644757302700698555713669596228429148198608349"
         "36475292719074168444365510704342711559699508093042880177904174"
         "497791e308}",
         "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":1.797693134862315807937289714053034150799341327100378269"
         "36173778980444968292764750946649017977587207096330286416692887"
         "91094655554785194040263065748867150582068190890200070838367627"
         "38548458177115317644757302700698555713669596228429148198608349"
         "36475292719074168444365510704342711559699508093042880177904174"
         "497792e308}",
         "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":17976931348623158079372897140530341507993413271003782693"
         "61737789804449682927647509466490179775872070963302864166928879"
         "10946555547851940402630657488671505820681908902000708383676273"
         "85484581771153176447573027006985557136695962284291481986083493"
         "64752927190741684443655107043427115596995080930428801779041744"
         "97791.99999}",
         "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":0.0001e312}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":0.001e312}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":1000e306}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":1e-400}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":0e99999999999999999999999}", "a", KEYSRC_TYPE, NULL, 0},
        {"{\"a\":1e99999999999999999999999}", "a", KEYSRC_NOT_JSON, NULL, 0},
        {"{\"a\":1e-99999999999999999999999}", "a", KEYSRC_TYPE, NULL, 0},
    };

    (void)state;
    check_cases(c, sizeof(c) / sizeof(c[0]));
}

/* The cap: a key needs room for its NUL; 0 bytes is too long even for
 * nothing, after the value is found JSON. */
static void test_cap(void **state)
{
    static const struct {
        const char *value;
        size_t cap;
        int miss;
    } c[] = {
        {"{\"a\":\"abc\"}", 3, KEYSRC_TOO_LONG},
        {"{\"a\":\"abc\"}", 4, KEYSRC_OK},
        {"{\"a\":\"\\u00e9\"}", 2, KEYSRC_TOO_LONG},
        {"{\"a\":\"\\u00e9\"}", 3, KEYSRC_OK},
        {"{\"a\":123}", 3, KEYSRC_TOO_LONG},
        {"{\"a\":-0}", 2, KEYSRC_OK},
        {"{\"a\":\"\"}", 1, KEYSRC_EMPTY},
        {"{\"a\":1}", 0, KEYSRC_TOO_LONG},
        {"{\"b\":1}", 0, KEYSRC_TOO_LONG},
        {"{\"a\":1", 0, KEYSRC_NOT_JSON},
        {"{\"a\":1.5}", 1, KEYSRC_TYPE},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        int miss;
        both(c[i].value, strlen(c[i].value), "a", c[i].cap, &miss);
        assert_int_equal(miss, c[i].miss);
    }
}

/* A name of 256 bytes or more is never found (json_key's buffer), even
 * where the path crosses a non-object. */
static void test_long_names(void **state)
{
    char name[300], path[300], value[700];
    int miss;

    (void)state;
    memset(name, 'n', sizeof(name));
    for (size_t n = 254; n <= 257; n++) {
        snprintf(value, sizeof(value), "{\"%.*s\":\"k\"}", (int)n, name);
        snprintf(path, sizeof(path), "%.*s", (int)n, name);
        both(value, strlen(value), path, 64, &miss);
        assert_int_equal(miss, n < 256 ? KEYSRC_OK : KEYSRC_ABSENT);
        both("[1]", 3, path, 64, &miss);
        assert_int_equal(miss, n < 256 ? KEYSRC_NOT_FOUND : KEYSRC_ABSENT);
        snprintf(path, sizeof(path), "a.%.*s", (int)n, name);
        both("{\"a\":1}", 7, path, 64, &miss);
        assert_int_equal(miss, n < 256 ? KEYSRC_NOT_FOUND : KEYSRC_ABSENT);
    }
}

/* jansson counts every value's depth, scalars too, up to 2048. */
static void test_depth(void **state)
{
    static char value[3 * 4100 + 16];
    static const struct {
        size_t n;
        const char *inner;
        int miss;
    } c[] = {
        {2048, "", KEYSRC_NOT_FOUND},  {2049, "", KEYSRC_NOT_JSON},
        {2047, "1", KEYSRC_NOT_FOUND}, {2048, "1", KEYSRC_NOT_JSON},
        {2047, "{}", KEYSRC_NOT_FOUND},
    };
    int miss;

    (void)state;
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        size_t n = c[i].n, len = 0;
        memset(value, '[', n);
        len = n;
        len += (size_t)sprintf(value + len, "%s", c[i].inner);
        memset(value + len, ']', n);
        len += n;
        both(value, len, "a", 64, &miss);
        assert_int_equal(miss, c[i].miss);
    }
    for (size_t n = 2046; n <= 2049; n++) { /* {"a":{"a":...{}}} */
        size_t len = 0;
        for (size_t i = 0; i < n - 1; i++) {
            len += (size_t)sprintf(value + len, "{\"a\":");
        }
        len += (size_t)sprintf(value + len, "{}");
        memset(value + len, '}', n - 1);
        len += n - 1;
        both(value, len, "a.a.a", 64, &miss);
        assert_int_equal(miss, n <= 2048 ? KEYSRC_TYPE : KEYSRC_NOT_JSON);
    }
}

/* Open objects with more keys than the scanner keeps on the stack (then
 * on the heap, with an index). */
static void test_many_keys(void **state)
{
    static char value[200000];
    int miss;

    (void)state;
    for (int dup = -1; dup < 3000; dup += 997) {
        for (int nested = 0; nested < 2; nested++) {
            size_t len = 0;
            len += (size_t)sprintf(value, "{\"o\":%s{", nested ? "[1," : "");
            for (int i = 0; i < 3000; i++) {
                len += (size_t)sprintf(value + len, "\"k%d\":{\"x\":%d},", i,
                                       i);
            }
            /* The last key repeats an earlier one (or none). */
            len += (size_t)sprintf(value + len, "\"k%d\":0}%s,\"a\":\"k\"}",
                                   dup < 0 ? 99999 : dup, nested ? "]" : "");
            both(value, len, "a", 64, &miss);
            assert_int_equal(miss, dup < 0 ? KEYSRC_OK : KEYSRC_NOT_JSON);
            both(value, len, "o.k2999.x", 64, &miss);
        }
    }
    /* The same keys in an object and the object inside it: no repeat;
     * a repeat after the inner object closed is one. */
    for (int dup = 0; dup < 2; dup++) {
        size_t len = (size_t)sprintf(value, "{");
        for (int i = 0; i < 700; i++) {
            len += (size_t)sprintf(value + len, "\"k%d\":1,", i);
        }
        len += (size_t)sprintf(value + len, "\"in\":{");
        for (int i = 0; i < 700; i++) {
            len += (size_t)sprintf(value + len, "\"k%d\":{\"k1\":2},", i);
        }
        len += (size_t)sprintf(value + len, "\"a\":\"in\"},\"k%d\":3,"
                                            "\"a\":\"out\"}",
                               dup ? 5 : 700);
        both(value, len, "in.a", 64, &miss);
        assert_int_equal(miss, dup ? KEYSRC_NOT_JSON : KEYSRC_OK);
        both(value, len, "in.k699.k1", 64, &miss);
        assert_int_equal(miss, dup ? KEYSRC_NOT_JSON : KEYSRC_OK);
    }
    /* One repeat among many escaped keys. */
    {
        size_t len = (size_t)sprintf(value, "{");
        for (int i = 0; i < 2000; i++) {
            len += (size_t)sprintf(value + len, "\"\\u%04x\":1,", 0x100 + i);
        }
        len += (size_t)sprintf(value + len, "\"\\u0100\":1}");
        both(value, len, "a", 64, &miss);
        assert_int_equal(miss, KEYSRC_NOT_JSON);
    }
}

/* Several picks of one value, more than one pass's worth. */
static void test_many_picks(void **state)
{
    static const char value[] =
        "{\"a\":\"1\",\"b\":{\"c\":2,\"d\":[3]},\"e\":\"\",\"f\":1.5}";
    static const char *const paths[] = {"a",   "b.c", "b.d", "b.d.x", "e",
                                        "f",   "g",   "",    "b",     "a.b",
                                        "b.c", "a"};
    struct keysrc_json_pick p[12], q[12];
    char out[2][12][16];

    (void)state;
    for (size_t i = 0; i < 12; i++) {
        p[i] = (struct keysrc_json_pick){.path = paths[i], .out = out[0][i],
                                         .cap = i == 11 ? 0 : 16};
        q[i] = p[i];
        q[i].out = out[1][i];
    }
    keysrc_pick_json(value, strlen(value), p, 12);
    oracle_pick_json(value, strlen(value), q, 12);
    for (size_t i = 0; i < 12; i++) {
        assert_int_equal(p[i].miss, q[i].miss);
        assert_int_equal(p[i].key == NULL, q[i].key == NULL);
        if (p[i].key != NULL) {
            assert_string_equal(p[i].key, q[i].key);
        }
    }
    keysrc_pick_json(value, strlen(value), p, 0); /* nothing to do */
}

/* Valid bodies mutated at random: the scanner and jansson agree. */
static void test_random_mutations(void **state)
{
    static const char *const seeds[] = {
        "{\"order_id\":\"ord-1\",\"tenant_id\":\"t\\u00e9\",\"n\":-12,"
        "\"amount\":1.01e2,\"items\":[{\"sku\":\"S\",\"qty\":2}],"
        "\"meta\":{\"tenant\":{\"id\":7}},\"ok\":true,\"x\":null}",
        "[{\"a\":{\"b\":\"\\ud83d\\ude00\"}},[],{},\"\xe2\x82\xac\"]",
        "{\"a\":{\"a\":{\"a\":\"\"}},\"\":0,\"b\":[1,2,[3,{\"c\":\"d\"}]]}",
    };
    static const char *const paths[] = {"tenant_id", "meta.tenant.id", "n",
                                        "a.a.a",     "a",              "",
                                        "amount",    "items.sku",      "b"};
    static const char alphabet[] = "{}[]:,\"\\u0aeE.-+19 truefalsn\xc3\xa9\xff";
    char buf[512];
    unsigned seed = 12345;
    int miss;

    (void)state;
    for (int round = 0; round < 60000; round++) {
        const char *s = seeds[round % 3];
        size_t len = strlen(s);
        memcpy(buf, s, len);
        for (int m = 0; m < 1 + round % 4; m++) {
            size_t at;
            seed = seed * 1103515245u + 12345u;
            at = (seed >> 8) % len;
            switch ((seed >> 4) % 3) {
            case 0: /* replace */
                buf[at] = alphabet[(seed >> 20) % (sizeof(alphabet) - 1)];
                break;
            case 1: /* delete */
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
                break;
            default: /* insert */
                if (len + 1 < sizeof(buf)) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = alphabet[(seed >> 20) % (sizeof(alphabet) - 1)];
                    len++;
                }
            }
        }
        both(buf, len, paths[round % 9], 1 + round % 24, &miss);
    }
}

static void test_header(void **state)
{
    char out[8];
    int miss;

    (void)state;
    assert_string_equal(keysrc_pick(KEYSRC_HEADER, "h", "abc", 3, NULL, 0,
                                    out, sizeof(out), &miss),
                        "abc");
    assert_int_equal(miss, KEYSRC_OK);
    assert_null(keysrc_pick(KEYSRC_HEADER, "h", NULL, 0, NULL, 0, out,
                            sizeof(out), &miss));
    assert_int_equal(miss, KEYSRC_ABSENT);
    assert_null(keysrc_pick(KEYSRC_HEADER, "h", "a\0b", 3, NULL, 0, out,
                            sizeof(out), &miss));
    assert_int_equal(miss, KEYSRC_NUL);
    assert_string_equal(keysrc_pick(KEYSRC_JSON, "a.b", NULL, 0,
                                    "{\"a\":{\"b\":5}}", 13, out, sizeof(out),
                                    &miss),
                        "5");
    assert_null(keysrc_pick(KEYSRC_JSON, "a", NULL, 0, "{\"a\":5}", 7, out, 0,
                            &miss));
    assert_int_equal(miss, KEYSRC_TOO_LONG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_long_names),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_many_picks),
        cmocka_unit_test(test_random_mutations),
        cmocka_unit_test(test_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
