/* test_json.c -- JSON <-> Lua: exact numbers, nulls that survive, sorted
 * output, every rejection with its byte offset, encode errors that name
 * the path, equality that never says 1 wrongly, and a codec that stays
 * sound when Lua runs out of memory or a finalizer re-enters it.
 * test_json_jansson.c compares the decoder with jansson. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* ---- fixtures and helpers ---- */

static int setup(void **state)
{
    lua_State *L = luaL_newstate();

    assert_non_null(L);
    luaL_openlibs(L);
    luaL_requiref(L, "json", ljson_open, 1);
    lua_pop(L, 1);
    *state = L;
    return 0;
}

static int teardown(void **state)
{
    lua_close(*state);
    return 0;
}

static ljson_codec_t *codec(lua_State *L)
{
    return ljson_codec_of(L);
}

/* Decodes then encodes text; the result must be want. */
static void round_trip(lua_State *L, const char *text, const char *want)
{
    struct sl_error err;
    size_t len;
    const char *out;
    int top = lua_gettop(L);

    ljson_codec_forget(codec(L)); /* each case is a message of its own */
    if (ljson_decode(codec(L), L, text, strlen(text), &err) != 0) {
        fail_msg("decode %s: %s", text, err.msg);
    }
    assert_int_equal(lua_gettop(L), top + 1);
    out = ljson_encode(codec(L), L, -1, &len, &err);
    if (out == NULL) {
        fail_msg("encode %s: %s", text, err.msg);
    }
    assert_int_equal(len, strlen(want));
    assert_string_equal(out, want);
    assert_int_equal(lua_gettop(L), top + 1);
    lua_pop(L, 1);
}

/* Decodes text, forgets the number texts, then encodes. */
static void forget_round_trip(lua_State *L, const char *text,
                              const char *want)
{
    struct sl_error err;
    size_t len;
    const char *out;

    if (ljson_decode(codec(L), L, text, strlen(text), &err) != 0) {
        fail_msg("decode %s: %s", text, err.msg);
    }
    ljson_codec_forget(codec(L));
    out = ljson_encode(codec(L), L, -1, &len, &err);
    assert_non_null(out);
    assert_int_equal(len, strlen(want));
    assert_string_equal(out, want);
    lua_pop(L, 1);
}

static void same(lua_State *L, const char *text)
{
    round_trip(L, text, text);
}

/* Decoding text[0, len) fails with a message starting with want. */
static void rejects_n(lua_State *L, const char *text, size_t len,
                      const char *want)
{
    struct sl_error err;
    int top = lua_gettop(L);

    if (ljson_decode(codec(L), L, text, len, &err) == 0) {
        fail_msg("accepted: %s", text);
    }
    assert_int_equal(lua_gettop(L), top);
    if (strncmp(err.msg, want, strlen(want)) != 0) {
        fail_msg("for %s\n  got  %s\n  want %s...", text, err.msg, want);
    }
}

static void rejects(lua_State *L, const char *text, const char *want)
{
    rejects_n(L, text, strlen(text), want);
}

/* Decodes text, leaving the value on the stack: 0, or -1 (failed). */
static int decodes(lua_State *L, const char *text)
{
    struct sl_error err;

    if (ljson_decode(codec(L), L, text, strlen(text), &err) != 0) {
        fail_msg("rejected %s: %s", text, err.msg);
    }
    return 0;
}

/* Runs a chunk in the state; fails the test with its error. */
static void lua_ok(lua_State *L, const char *chunk)
{
    if (luaL_dostring(L, chunk) != LUA_OK) {
        fail_msg("%s\n  in: %s", lua_tostring(L, -1), chunk);
    }
    lua_settop(L, 0);
}

/* Encoding the value the chunk returns fails with a message containing
 * want. */
static void encode_fails(lua_State *L, const char *chunk, const char *want)
{
    struct sl_error err;
    size_t len;

    if (luaL_dostring(L, chunk) != LUA_OK) {
        fail_msg("%s", lua_tostring(L, -1));
    }
    assert_null(ljson_encode(codec(L), L, -1, &len, &err));
    if (strstr(err.msg, want) == NULL) {
        fail_msg("for %s\n  got  %s\n  want ...%s...", chunk, err.msg, want);
    }
    assert_int_equal(lua_gettop(L), 1);
    lua_settop(L, 0);
}

/* ljson_equal of the value the chunk returns against text. */
static int equal(lua_State *L, const char *chunk, const char *text)
{
    int r;

    if (luaL_dostring(L, chunk) != LUA_OK) {
        fail_msg("%s", lua_tostring(L, -1));
    }
    r = ljson_equal(codec(L), L, -1, text, strlen(text));
    assert_int_equal(lua_gettop(L), 1);
    lua_settop(L, 0);
    return r;
}

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* The float text the encoder promises, the slow and obvious way. */
static void reference_double(double v, char *buf, size_t size)
{
    if (v == 0) {
        snprintf(buf, size, "%s", signbit(v) ? "-0.0" : "0.0");
        return;
    }
    for (int prec = fabs(v) < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) {
            break;
        }
    }
    if (strpbrk(buf, ".eE") == NULL) {
        strcat(buf, ".0");
    }
}

static const char *encode_number(lua_State *L, double v, size_t *len)
{
    struct sl_error err;
    const char *out;

    lua_pushnumber(L, v);
    out = ljson_encode(codec(L), L, -1, len, &err);
    lua_pop(L, 1);
    if (out == NULL) {
        fail_msg("%s", err.msg);
    }
    return out;
}

/* ---- round trips ---- */

static void test_integers_stay_exact(void **state)
{
    lua_State *L = *state;

    same(L, "[9007199254740993,-9223372036854775808,9223372036854775807]");
    same(L, "[0,-1,1,42,-0.0]");
    round_trip(L, "-0", "0");
    lua_ok(L, "local v = json.decode('[9007199254740993,"
              "-9223372036854775808,9223372036854775808,1e2,1.0]')\n"
              "assert(math.type(v[1]) == 'integer' and v[1] == (1 << 53) + 1 "
              "and v[1] ~= 1 << 53)\n"
              "assert(v[2] == math.mininteger and math.type(v[2]) == "
              "'integer')\n"
              "assert(math.type(v[3]) == 'float' and v[3] == 2^63)\n"
              "assert(math.type(v[4]) == 'float' and v[4] == 100)\n"
              "assert(math.type(v[5]) == 'float')");
    /* Beyond int64 the literal becomes the nearest double. */
    /* Out of int64 range: floats, written back as they came... */
    same(L, "[18446744073709551616,-9223372036854775809]");
    /* ...and in shortest form once the codec forgot their text. */
    forget_round_trip(L, "[18446744073709551616,-9223372036854775809]",
                      "[1.8446744073709552e+19,-9.223372036854776e+18]");
}

static void test_floats_shortest_and_still_floats(void **state)
{
    lua_State *L = *state;

    same(L, "[284.85,0.1,1.0,1e+300,-0.0,5e-324,0.30000000000000004]");
    same(L, "[100000000000000.0,1e+15,123456789.125,-2.5,0.0001,1e-05]");
    same(L, "[1.7976931348623157e+308,2.2250738585072014e-308,1.5e-07]");
    /* Floats the script did not change keep their text (71.20 stays
     * 71.20); computed ones, and any once the codec forgot the
     * message's texts, are shortest. */
    same(L, "[1E2,1e-2,2.50,0.0,1.0e0,71.20]");
    forget_round_trip(L, "[1E2,1e-2,2.50,0.0,1.0e0,71.20]",
                      "[100.0,0.01,2.5,0.0,1.0,71.2]");
    lua_ok(L, "local v = json.decode('[71.20]')\n"
              "v[2] = v[1] * 2\n"
              "assert(json.encode(v) == '[71.20,142.4]')");
    lua_ok(L, "assert(json.encode(284.85) == '284.85')\n"
              "assert(json.encode(1/3) == '0.3333333333333333')\n"
              "assert(json.encode(2^53) == '9007199254740992.0')\n"
              "assert(json.encode(3) == '3' and json.encode(3.0) == '3.0')");
}

/* The fast float formatter agrees with the %.15g/%.16g/%.17g rule, and
 * every text reads back to the same double. */
static void test_float_text_matches_reference(void **state)
{
    lua_State *L = *state;
    char want[64];

    for (int i = 0; i < 200000; i++) {
        uint64_t r = next_random();
        double v;

        switch (i % 4) {
        case 0: /* any finite bit pattern */
            memcpy(&v, &r, sizeof(v));
            if (!isfinite(v)) {
                continue;
            }
            break;
        case 1: /* short decimals, the common case */
            v = (double)(r % 1000000000) / pow(10, (double)((r >> 40) % 13));
            break;
        case 2: /* money */
            v = (double)(int64_t)(r % 100000000) / 100.0;
            break;
        default: /* around the fast path's edges */
            v = ldexp((double)(r >> 11), (int)((r & 127) - 100));
            break;
        }
        if ((r >> 20) & 1) {
            v = -v;
        }
        size_t len;
        const char *got = encode_number(L, v, &len);
        reference_double(v, want, sizeof(want));
        if (strcmp(got, want) != 0) {
            fail_msg("%.17g: got %s, want %s", v, got, want);
        }
        double back = strtod(got, NULL);
        assert_memory_equal(&back, &v, sizeof(v));
    }
}

/* The exact fast path for decimal literals agrees with strtod. */
static void test_decoded_floats_match_strtod(void **state)
{
    lua_State *L = *state;
    struct sl_error err;
    char text[96];

    for (int i = 0; i < 100000; i++) {
        uint64_t r = next_random();
        int n = 0, digits = 1 + (int)(r % 19), frac = (int)((r >> 8) % 12);

        if ((r >> 30) & 1) {
            text[n++] = '-';
        }
        text[n++] = (char)('1' + (r >> 12) % 9);
        for (int d = 1; d < digits; d++) {
            text[n++] = (char)('0' + next_random() % 10);
        }
        if (frac > 0) {
            text[n++] = '.';
            for (int d = 0; d < frac; d++) {
                text[n++] = (char)('0' + next_random() % 10);
            }
        }
        if ((r >> 31) & 1) {
            n += snprintf(text + n, sizeof(text) - (size_t)n, "e%d",
                          (int)((r >> 40) % 60) - 30);
        }
        text[n] = '\0';
        if (ljson_decode(codec(L), L, text, (size_t)n, &err) != 0) {
            fail_msg("%s: %s", text, err.msg);
        }
        if (!lua_isinteger(L, -1)) {
            double got = lua_tonumber(L, -1), want = strtod(text, NULL);

            if (memcmp(&got, &want, sizeof(got)) != 0) {
                fail_msg("%s: got %.17g, want %.17g", text, got, want);
            }
        }
        lua_pop(L, 1);
    }
}

static void test_nulls_survive(void **state)
{
    lua_State *L = *state;

    same(L, "{\"a\":null,\"b\":[null,1,null],\"c\":{\"d\":null}}");
    same(L, "null");
    same(L, "[null]");
    lua_ok(L, "local v = json.decode('{\"a\":null,\"b\":[null]}')\n"
              "assert(v.a == json.null and json.is_null(v.a))\n"
              "assert(v.b[1] == json.null and #v.b == 1)\n"
              "assert(not json.is_null(nil) and not json.is_null(false))\n"
              "v.c = json.null\n"
              "assert(json.encode(v) == '{\"a\":null,\"b\":[null],"
              "\"c\":null}')");
}

static void test_empty_array_and_object_differ(void **state)
{
    lua_State *L = *state;

    same(L, "[]");
    same(L, "{}");
    same(L, "{\"a\":[],\"b\":{},\"c\":[[],{}]}");
    lua_ok(L, "assert(json.encode({}) == '{}')\n"
              "assert(json.encode(json.array()) == '[]')\n"
              "assert(json.encode(json.object()) == '{}')\n"
              "local t = {1, 2}\n"
              "assert(json.array(t) == t and json.encode(t) == '[1,2]')\n"
              "assert(json.encode({1, 2, 'x'}) == '[1,2,\"x\"]')\n"
              "local o = json.object({a = 1})\n"
              "assert(json.encode(o) == '{\"a\":1}')\n"
              "local e = json.decode('[]')\n"
              "e[1] = true\n"
              "assert(json.encode(e) == '[true]')\n"
              /* nil inside a marked array: null, as the array says */
              "assert(json.encode(json.array({1, nil, 3})) == '[1,null,3]')");
}

static void test_nested_structures(void **state)
{
    lua_State *L = *state;

    same(L, "{\"customer\":{\"email\":\"jane@example.com\",\"id\":98765},"
            "\"items\":[{\"price\":19.99,\"qty\":2,\"sku\":\"A\"},"
            "{\"price\":245.5,\"qty\":1,\"sku\":\"B\",\"tags\":[\"x\","
            "[1,[2,[3,{}]]]]}],\"paid\":true,\"total\":284.85}");
    round_trip(L, " \t\r\n{ \"b\" : [ 1 , 2 ] , \"a\" : { } } \n",
               "{\"a\":{},\"b\":[1,2]}");
    /* Duplicate keys: the last one wins. */
    round_trip(L, "{\"a\":1,\"b\":2,\"a\":3}", "{\"a\":3,\"b\":2}");
}

static void test_strings_and_unicode(void **state)
{
    lua_State *L = *state;

    round_trip(L, "\"caf\\u00e9 \\u20ac \\ud83d\\ude00 \\u0041\"",
               "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 A\"");
    /* UTF-8 passes through both ways, as do DEL and '/'. */
    same(L, "\"caf\xc3\xa9 \xf0\x9f\x98\x80 \x7f a/b\"");
    round_trip(L, "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\\u0000\"",
               "\"\\\"\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\\u0000\"");
    same(L, "{\"k\\n\\\"ey\":\"v\"}");
    lua_ok(L, "local v = json.decode('\"a\\\\u0000b\"')\n"
              "assert(#v == 3 and v:byte(2) == 0)\n"
              "assert(json.encode('\\1\\31 ') == '\"\\\\u0001\\\\u001f \"')\n"
              "assert(json.decode('\"\\\\uD834\\\\uDD1E\"') == "
              "'\\u{1D11E}')");
}

/* Strings of every length up to 40 with a byte needing an escape at
 * every position: the 8-bytes-at-a-time paths against the obvious. */
static void test_string_scanning_at_every_offset(void **state)
{
    lua_State *L = *state;
    const char specials[] = {'"', '\\', '\n', 0x01, 0x1f, 'x'};
    char raw[48], want[400], text[400];
    struct sl_error err;

    for (size_t n = 0; n <= 40; n++) {
        for (size_t at = 0; at <= n; at++) {
            for (size_t k = 0; k < sizeof(specials); k++) {
                size_t w = 0, len;
                const char *out;

                for (size_t i = 0; i < n; i++) {
                    raw[i] = (char)('a' + i % 26);
                }
                if (at < n) {
                    raw[at] = specials[k];
                }
                want[w++] = '"';
                for (size_t i = 0; i < n; i++) {
                    unsigned char c = (unsigned char)raw[i];

                    if (c == '"' || c == '\\') {
                        w += (size_t)sprintf(want + w, "\\%c", c);
                    } else if (c == '\n') {
                        w += (size_t)sprintf(want + w, "\\n");
                    } else if (c < 0x20) {
                        w += (size_t)sprintf(want + w, "\\u%04x", c);
                    } else {
                        want[w++] = (char)c;
                    }
                }
                want[w++] = '"';
                want[w] = '\0';
                lua_pushlstring(L, raw, n);
                out = ljson_encode(codec(L), L, -1, &len, &err);
                assert_non_null(out);
                assert_string_equal(out, want);
                lua_pop(L, 1);
                /* ...and back, inside an array. */
                snprintf(text, sizeof(text), "[%s]", want);
                assert_int_equal(ljson_decode(codec(L), L, text,
                                             strlen(text), &err),
                                 0);
                lua_rawgeti(L, -1, 1);
                assert_int_equal(lua_rawlen(L, -1), n);
                assert_memory_equal(lua_tostring(L, -1), raw, n);
                lua_pop(L, 2);
            }
        }
    }
}

static void test_keys_sorted_bytewise(void **state)
{
    lua_State *L = *state;

    round_trip(L, "{\"b\":1,\"a\":2,\"c\":{\"z\":1,\"y\":2},\"ab\":3,\"\":0}",
               "{\"\":0,\"a\":2,\"ab\":3,\"b\":1,\"c\":{\"y\":2,\"z\":1}}");
    round_trip(L, "{\"\xc3\xa9\":1,\"a\":2,\"B\":3,\"_\":4,\"~\":5}",
               "{\"B\":3,\"_\":4,\"a\":2,\"~\":5,\"\xc3\xa9\":1}");
    /* More keys than the insertion sort handles. */
    lua_ok(L, "local t, keys = {}, {}\n"
              "for i = 1, 100 do local k = string.format('k%03d', "
              "(i * 37) % 100) t[k] = i keys[#keys + 1] = k end\n"
              "table.sort(keys)\n"
              "local want = {}\n"
              "for _, k in ipairs(keys) do want[#want + 1] = "
              "string.format('%q:%d', k, t[k]) end\n"
              "assert(json.encode(t) == '{' .. table.concat(want, ',') .. "
              "'}')");
}

/* ---- rejections ---- */

static void test_rejections_name_the_byte(void **state)
{
    lua_State *L = *state;

    rejects(L, "[1 2]", "json: byte 3: expected ',' or ']', found '2'");
    rejects(L, "{\"a\" 1}", "json: byte 5: expected ':', found '1'");
    rejects(L, "{\"a\":1,}", "json: byte 7: expected a string key, found '}'");
    rejects(L, "[1,]", "json: byte 3: expected a value, found ']'");
    rejects(L, "[1,,2]", "json: byte 3: expected a value, found ','");
    rejects(L, "tru", "json: byte 0: invalid literal");
    rejects(L, "[nulls]", "json: byte 1: invalid literal");
    rejects(L, "[true false]", "json: byte 6: expected ',' or ']'");
    rejects(L, "01", "json: byte 1: a number cannot have leading zeros");
    rejects(L, "[-01]", "json: byte 3: a number cannot have leading zeros");
    rejects(L, "1.", "json: byte 2: expected a digit after '.', found the "
                     "end of the text");
    rejects(L, "[1.]", "json: byte 3: expected a digit after '.', found ']'");
    rejects(L, "-", "json: byte 1: expected a digit");
    rejects(L, "[-a]", "json: byte 2: expected a digit, found 'a'");
    rejects(L, "[1e]", "json: byte 3: expected a digit in the exponent");
    rejects(L, "[1.5x]", "json: byte 4: unexpected character in a number");
    rejects(L, "[1e400]", "json: byte 1: number out of range");
    rejects(L, "-12.5e728", "json: byte 0: number out of range");
    rejects(L, "[.5]", "json: byte 1: expected a value or ']', found '.'");
    rejects(L, "[+1]", "json: byte 1: expected a value or ']', found '+'");
    rejects(L, "\"\\x\"", "json: byte 2: invalid escape in a string");
    rejects(L, "[\"\\u12G4\"]", "json: byte 6: expected 4 hex digits");
    rejects(L, "\"a\x01\"", "json: byte 2: control characters must be "
                            "escaped in a string, found byte 0x01");
    rejects(L, "[\"a\tb\"]", "json: byte 3: control characters must be "
                             "escaped");
    rejects(L, "\"\\ud800\"", "json: byte 1: unpaired UTF-16 surrogate");
    rejects(L, "[\"\\udc00x\"]", "json: byte 2: unpaired UTF-16 surrogate");
    rejects(L, "[\"\\ud800\\u0041\"]", "json: byte 2: unpaired UTF-16");
    rejects(L, "\"abc", "json: byte 4: unterminated string");
    rejects(L, "[1] x", "json: byte 4: expected the end of the text, "
                        "found 'x'");
    rejects(L, "{\"a\":1}}", "json: byte 7: expected the end of the text");
    rejects(L, "{}{}", "json: byte 2: expected the end of the text");
    rejects(L, "[1}", "json: byte 2: expected ',' or ']', found '}'");
    rejects(L, "{1:2}", "json: byte 1: expected a string key or '}'");
    rejects(L, "[1", "json: byte 2: expected ',' or ']', found the end");
    rejects(L, "", "json: byte 0: expected a value, found the end of the "
                   "text");
    rejects(L, "  ", "json: byte 2: expected a value");
    rejects(L, "x", "json: byte 0: expected a value, found 'x'");
    rejects(L, "[\xc3\xa9]", "json: byte 1: expected a value or ']', found "
                             "byte 0xc3");
    /* NUL bytes, where a C-string parser would stop reading. */
    rejects_n(L, "[1,\0 2]", 7, "json: byte 3: expected a value, found a "
                                "NUL byte");
    rejects_n(L, "\"a\0b\"", 5, "json: byte 2: control characters must be "
                                "escaped in a string, found a NUL byte");
    rejects_n(L, "[1]\0", 4, "json: byte 3: expected the end of the text, "
                             "found a NUL byte");
    rejects_n(L, "1\0", 2, "json: byte 1: expected the end of the text");
}

/* RFC 8259 text is UTF-8: a string holds well-formed sequences only. */
static void test_strings_must_be_utf8(void **state)
{
    lua_State *L = *state;
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"\"\x80\"", "json: byte 1: invalid UTF-8"}, /* continuation alone */
        {"\"a\xc3\"", "json: byte 2: invalid UTF-8"},            /* cut */
        {"\"\xc0\xaf\"", "json: byte 1: invalid UTF-8"},  /* overlong '/' */
        {"\"\xe0\x80\xaf\"", "json: byte 1: invalid UTF-8"}, /* overlong */
        {"\"\xed\xa0\x80\"", "json: byte 1: invalid UTF-8"}, /* U+D800 */
        {"\"\xf4\x90\x80\x80\"", "json: byte 1: invalid UTF-8"}, /* big */
        {"\"\xf5\x80\x80\x80\"", "json: byte 1: invalid UTF-8"},
        {"\"\xff\"", "json: byte 1: invalid UTF-8"},
        /* after an escape: the slow path */
        {"\"\\n\xe2\x82\"", "json: byte 3: invalid UTF-8"},
        /* past the 8-byte scan */
        {"\"abcdefgh\xc3(abcdefgh\"", "json: byte 9: invalid UTF-8"},
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rejects(L, bad[i].text, bad[i].want);
    }
    rejects(L, "{\"k\xff\":1}", "json: byte 3: invalid UTF-8 in a string, "
                                "found byte 0xff");
    /* Well-formed: 2, 3 and 4 bytes, also after an escape, kept as is. */
    assert_int_equal(decodes(L, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""),
                     0);
    assert_string_equal(lua_tostring(L, -1),
                        "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    lua_pop(L, 1);
    assert_int_equal(decodes(L, "\"\\t\xc3\xa9x\""), 0);
    assert_string_equal(lua_tostring(L, -1), "\t\xc3\xa9x");
    lua_pop(L, 1);
    /* The encoder writes JSON text: a string that is not UTF-8 is an
     * error naming where it is, not bytes no parser accepts. */
    encode_fails(L, "return {name = 'caf\\xe9'}",
                 "cannot encode a string that is not valid UTF-8 at .name");
    encode_fails(L, "return {['\\xff'] = 1}",
                 "not valid UTF-8 (a key) at the top level");
    encode_fails(L, "return {'ok', 'abcdefgh\\xed\\xa0\\x80'}",
                 "not valid UTF-8 at [2]");
}

static void test_depth_limit(void **state)
{
    lua_State *L = *state;
    char text[700];

    memset(text, '[', 300);
    memset(text + 300, ']', 300);
    rejects_n(L, text, 600, "json: byte 256: nesting deeper than 256");
    /* 256 levels are fine, and encode back the same. */
    memset(text, '[', 256);
    memset(text + 256, ']', 256);
    text[512] = '\0';
    same(L, text);
    lua_ok(L, "local s = string.rep('{\"a\":', 257) .. '1' .. "
              "string.rep('}', 257)\n"
              "local ok, err = pcall(json.decode, s)\n"
              "assert(not ok and err == 'json: byte 1280: nesting deeper "
              "than 256', err)\n"
              "assert(json.decode(s:sub(6, -2)))");
}

/* ---- encode errors ---- */

static void test_encode_errors_name_the_path(void **state)
{
    lua_State *L = *state;

    encode_fails(L, "return {items = {1, {fn = print}}}",
                 "json: cannot encode a function at .items[2].fn");
    encode_fails(L, "return {a = {0/0}}", "json: cannot encode NaN/inf at "
                                          ".a[1]");
    encode_fails(L, "return {x = math.huge}", "cannot encode NaN/inf at .x");
    encode_fails(L, "return -math.huge", "cannot encode NaN/inf at the top");
    encode_fails(L, "return {1, 2, a = 3}",
                 "json: cannot encode a table that mixes array and object "
                 "keys at the top level");
    encode_fails(L, "return {a = {[1] = 1, [3] = 3}}", "not 1..n (a sparse "
                                                        "array?) at .a");
    encode_fails(L, "return {[0] = 1}", "not 1..n");
    encode_fails(L, "return {[1.5] = 1}", "with a float key");
    encode_fails(L, "return {[true] = 1}", "with a boolean key");
    encode_fails(L, "return json.object({1})", "marked as an object");
    encode_fails(L, "return {co = coroutine.create(print)}",
                 "cannot encode a thread at .co");
    encode_fails(L, "return {f = io.stdout}",
                 "cannot encode a userdata at .f");
    encode_fails(L, "local t = {} t.t = t return t",
                 "json: nesting deeper than 256 (a cycle?) at .t.t.t");
    encode_fails(L, "local t = json.array() t[1] = t return {a = t}",
                 "(a cycle?) at .a[1][1]");
    /* Errors leave the codec usable. */
    lua_ok(L, "assert(json.encode({a = 1}) == '{\"a\":1}')\n"
              "assert(json.encode(nil) == 'null')\n"
              "local ok, err = pcall(json.encode, {f = print})\n"
              "assert(not ok and err == 'json: cannot encode a function at "
              ".f', err)\n"
              "local deep = {}\n"
              "local t = deep\n"
              "for i = 1, 255 do t[1] = {} t = t[1] end\n"
              "assert(#json.encode(deep) == 2 * 256)\n"
              "t[1] = {}\n"
              "assert(not pcall(json.encode, deep))");
}

/* ---- equality ---- */

static const char order[] =
    "{\"order_id\":\"ord-1\",\"customer\":{\"id\":98765,\"email\":"
    "\"jane@example.com\"},\"items\":[{\"sku\":\"A\",\"qty\":2,\"price\":"
    "19.99},{\"sku\":\"B\",\"qty\":1,\"price\":245.5}],\"total\":284.85,"
    "\"paid\":true,\"coupon\":null,\"note\":\"caf\\u00e9\"}";

static void test_equal_says_unchanged(void **state)
{
    lua_State *L = *state;
    char chunk[1024];
    struct sl_error err;

    snprintf(chunk, sizeof(chunk), "return json.decode([[%s]])", order);
    assert_int_equal(equal(L, chunk, order), 1);
    /* Same document, other spelling: still equal. */
    assert_int_equal(
        equal(L, chunk,
              " { \"note\" : \"caf\xc3\xa9\", \"paid\":true,\"coupon\":null,"
              "\"total\":284.850,\"items\":[{\"price\":1.999e1,\"qty\":2,"
              "\"sku\":\"\\u0041\"},{\"sku\":\"B\",\"qty\":1,\"price\":"
              "245.5}],\"customer\":{\"email\":\"jane@example.com\","
              "\"id\":98765},\"order_id\":\"ord-1\"} "),
        1);
    assert_int_equal(equal(L, "return {1, 2}", "[1,2]"), 1);
    assert_int_equal(equal(L, "return {}", "{}"), 1);
    assert_int_equal(equal(L, "return json.array()", "[]"), 1);
    assert_int_equal(equal(L, "return json.array({1, nil, 3})",
                           "[1,null,3]"),
                     1);
    assert_int_equal(equal(L, "return {['a\\nb'] = 'x'}",
                           "{\"a\\nb\":\"x\"}"),
                     1);
    assert_int_equal(equal(L, "return 'x'", "\"x\""), 1);
    assert_int_equal(equal(L, "return 2^63", "9223372036854775808"), 1);
    assert_int_equal(equal(L, "return json.null", "null"), 1);
    /* More keys than the linear search takes. */
    assert_int_equal(equal(L, "local t = {} for i = 1, 50 do t['k' .. i] = i "
                              "end return t",
                           "{\"k50\":50,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,"
                           "\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,"
                           "\"k10\":10,\"k11\":11,\"k12\":12,\"k13\":13,"
                           "\"k14\":14,\"k15\":15,\"k16\":16,\"k17\":17,"
                           "\"k18\":18,\"k19\":19,\"k20\":20,\"k21\":21,"
                           "\"k22\":22,\"k23\":23,\"k24\":24,\"k25\":25,"
                           "\"k26\":26,\"k27\":27,\"k28\":28,\"k29\":29,"
                           "\"k30\":30,\"k31\":31,\"k32\":32,\"k33\":33,"
                           "\"k34\":34,\"k35\":35,\"k36\":36,\"k37\":37,"
                           "\"k38\":38,\"k39\":39,\"k40\":40,\"k41\":41,"
                           "\"k42\":42,\"k43\":43,\"k44\":44,\"k45\":45,"
                           "\"k46\":46,\"k47\":47,\"k48\":48,\"k49\":49}"),
                     1);
    /* Whatever equal says 1 to encodes to the same document. */
    assert_int_equal(luaL_dostring(L, chunk), LUA_OK);
    size_t len;
    const char *out = ljson_encode(codec(L), L, -1, &len, &err);
    assert_non_null(out);
    assert_int_equal(ljson_equal(codec(L), L, -1, out, len), 1);
    lua_settop(L, 0);
}

static void test_equal_sees_every_change(void **state)
{
    lua_State *L = *state;
    static const char *const changes[] = {
        "v.total = 284.86",           /* changed value */
        "v.total = nil",              /* removed key */
        "v.coupon = nil",             /* null removed */
        "v.extra = 1",                /* added key */
        "v[1] = 1",                   /* added integer key */
        "v.customer.id = 98765.0",    /* int -> float */
        "v.total = 285",              /* float -> int */
        "v.paid = false",
        "v.paid = 'true'",
        "v.note = 'cafe'",
        "v.order_id = 42",
        "v.items[2].qty = 2",
        "v.items[3] = {}",            /* appended */
        "v.items[2] = nil",           /* shortened */
        "v.items = {v.items[1], v.items[2]}", /* unmarked: same */
        "setmetatable(v.items, nil) v.items.x = 1",
        "v.customer = json.array()",
        "v.customer.email = json.null",
        "v.coupon = false",
        "json.object(v.items)",
    };

    for (size_t i = 0; i < sizeof(changes) / sizeof(*changes); i++) {
        char chunk[1024];

        snprintf(chunk, sizeof(chunk),
                 "local v = json.decode([[%s]]) %s return v", order,
                 changes[i]);
        /* One change above keeps the document: an unmarked sequence
         * encodes as the same array. */
        int want = strcmp(changes[i],
                          "v.items = {v.items[1], v.items[2]}") == 0;
        if (equal(L, chunk, order) != want) {
            fail_msg("equal() wrong after: %s", changes[i]);
        }
    }
    /* Not equal: invalid text, duplicate keys, kinds that differ. */
    assert_int_equal(equal(L, "return {a = 1}", "{\"a\":1,}"), 0);
    assert_int_equal(equal(L, "return {a = 1}", "{\"a\":1} x"), 0);
    assert_int_equal(equal(L, "return {a = 1}", "{\"a\":01}"), 0);
    assert_int_equal(equal(L, "return {a = 1, b = 2}",
                           "{\"a\":1,\"a\":1}"),
                     0);
    assert_int_equal(equal(L, "return {a = 1}", "{\"a\":1,\"a\":1}"), 0);
    assert_int_equal(equal(L, "return {}", "[]"), 0);
    assert_int_equal(equal(L, "return json.array()", "{}"), 0);
    assert_int_equal(equal(L, "return {1, 2}", "[1,2,3]"), 0);
    assert_int_equal(equal(L, "return {1, 2, x = 1}", "[1,2]"), 0);
    assert_int_equal(equal(L, "return {[1] = 1, [3] = 3}", "[1,null,3]"), 0);
    assert_int_equal(equal(L, "return nil", "{}"), 0);
    assert_int_equal(equal(L, "return 0.0", "-0.0"), 0);
    assert_int_equal(equal(L, "return '1'", "1"), 0);
    assert_int_equal(equal(L, "return {a = print}", "{\"a\":null}"), 0);
    assert_int_equal(equal(L, "return {a = 1}", ""), 0);
    assert_int_equal(equal(L, "return {}", "{\"\\ud800\":1}"), 0);
    /* 257 levels: invalid, so not equal even to itself. */
    assert_int_equal(equal(L, "local t = {} local u = t for i = 1, 256 do "
                              "u[1] = {} u = u[1] end return t",
                           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]"
                           "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
                           "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
                           "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
                           "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
                           "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
                           "]]]]]]]]]]]]]]]]]]]]]]]"),
                     0);
}

/* ---- the module, as scripts see it ---- */

static void test_module_round_trips_canonical_text(void **state)
{
    lua_State *L = *state;

    lua_ok(L, "local docs = {\n"
              "  '{\"a\":1,\"b\":[true,false,null],\"c\":\"x\"}',\n"
              "  '[1,2.5,-3,1e+300,\"\\\\u0001\",{\"k\":[]}]',\n"
              "  '{\"big\":9007199254740993,\"f\":0.1,\"n\":null}',\n"
              "  '\"just a string\"', '42', '-0.0', 'true', 'null',\n"
              "  '[]', '{}', '[[],[{}],{\"\":\"\"}]',\n"
              "}\n"
              "for _, s in ipairs(docs) do\n"
              "  local got = json.encode(json.decode(s))\n"
              "  assert(got == s, s .. ' -> ' .. got)\n"
              "end\n"
              "local ok, err = pcall(json.decode, '[1,]')\n"
              "assert(not ok and err == 'json: byte 3: expected a value, "
              "found \\']\\'', err)\n"
              "assert(not pcall(json.decode))\n"
              "assert(not pcall(json.encode))\n"
              "assert(json.decode(42) == 42)\n"
              "assert(type(json.null) == 'userdata' and json.null == "
              "json.decode('null'))\n"
              "assert(getmetatable(json.decode('[]')) == "
              "getmetatable(json.array()))\n"
              "assert(getmetatable(json.object()) ~= "
              "getmetatable(json.array()))\n"
              "assert(not pcall(json.array, 1))\n"
              "local t = json.decode('{\"n\":null}') t.n = nil\n"
              "assert(json.encode(t) == '{}')");
}

static void test_codec_api(void **state)
{
    lua_State *L = *state;
    ljson_codec_t *c = ljson_codec_new(), *shared = ljson_codec_of(L);
    struct sl_error err;
    size_t len;

    assert_non_null(c);
    assert_ptr_equal(ljson_codec_of(L), shared);
    ljson_codec_free(NULL);
    /* A codec of its own works on the same state, and the returned text
     * lives in the codec. */
    assert_int_equal(ljson_decode(c, L, "{\"x\":[1]}", 9, &err), 0);
    const char *a = ljson_encode(c, L, -1, &len, &err);
    assert_string_equal(a, "{\"x\":[1]}");
    assert_int_equal(ljson_equal(c, L, -1, a, len), 1);
    assert_int_equal(ljson_equal(shared, L, -1, a, len), 1);
    lua_pop(L, 1);
    ljson_push_null(L);
    assert_true(ljson_is_null(L, -1));
    lua_pushboolean(L, 0);
    assert_false(ljson_is_null(L, -1));
    lua_pop(L, 2);
    /* Token buffer growth: many tokens, then few again. */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '[');
    for (int i = 0; i < 20000; i++) {
        lua_pushfstring(L, "%s{\"i\":%d}", i ? "," : "", i);
        luaL_addvalue(&b);
    }
    luaL_addchar(&b, ']');
    luaL_pushresult(&b);
    size_t n;
    const char *big = lua_tolstring(L, -1, &n);
    assert_int_equal(ljson_decode(c, L, big, n, &err), 0);
    assert_int_equal(lua_rawlen(L, -1), 20000);
    a = ljson_encode(c, L, -1, &len, &err);
    assert_int_equal(len, n);
    assert_memory_equal(a, big, n);
    assert_int_equal(ljson_equal(c, L, -1, big, n), 1);
    lua_pop(L, 2);
    same(L, "[1]");
    ljson_codec_free(c);
}

/* ---- robustness ---- */

struct capped {
    size_t used, limit;
};

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct capped *a = ud;
    size_t old = ptr != NULL ? osize : 0;

    if (nsize == 0) {
        a->used -= old;
        free(ptr);
        return NULL;
    }
    if (nsize > old && a->used + (nsize - old) > a->limit) {
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p != NULL) {
        a->used = a->used - old + nsize;
    }
    return p;
}

/* decode(pointer, length), so that the caller pushes nothing that
 * allocates outside the protected call. */
static int decode_arg(lua_State *L)
{
    struct sl_error err;
    const char *s = lua_touserdata(L, 1);
    size_t n = (size_t)lua_tointeger(L, 2);

    if (ljson_decode(ljson_codec_of(L), L, s, n, &err) != 0) {
        return luaL_error(L, "%s", err.msg);
    }
    return 1;
}

/* Running out of Lua memory mid-decode unwinds through ljson_decode; the
 * codec (and ASan's leak check) must not mind. */
static void test_memory_errors_leave_the_codec_sound(void **state)
{
    struct capped a = {0, 256u << 10};
    lua_State *L = lua_newstate(capped_alloc, &a);
    char *doc = malloc(200000);
    size_t n = 0;
    int errmem = 0;

    (void)state;
    assert_non_null(L);
    luaL_requiref(L, "json", ljson_open, 1);
    lua_pop(L, 1);
    n += (size_t)sprintf(doc, "[");
    for (int i = 0; i < 5000; i++) {
        n += (size_t)sprintf(doc + n, "%s{\"k%d\":\"%0*d\"}", i ? "," : "",
                             i, 20, i);
    }
    n += (size_t)sprintf(doc + n, "]");
    for (size_t limit = 64u << 10; limit <= (4u << 20); limit *= 2) {
        a.limit = limit;
        lua_pushcfunction(L, decode_arg);
        lua_pushlightuserdata(L, doc);
        lua_pushinteger(L, (lua_Integer)n);
        int rc = lua_pcall(L, 2, 1, 0);
        errmem += rc == LUA_ERRMEM;
        if (rc == LUA_OK) {
            assert_int_equal(lua_rawlen(L, -1), 5000);
            assert_int_equal(ljson_equal(ljson_codec_of(L), L, -1, doc, n), 1);
        }
        lua_pop(L, 1);
        lua_gc(L, LUA_GCCOLLECT);
    }
    assert_true(errmem > 0);
    a.limit = 64u << 20;
    lua_pushcfunction(L, decode_arg);
    lua_pushlightuserdata(L, (void *)"{\"ok\":[1,2]}");
    lua_pushinteger(L, 12);
    assert_int_equal(lua_pcall(L, 2, 1, 0), LUA_OK);
    assert_int_equal(lua_rawlen(L, -1), 0);
    lua_close(L);
    free(doc);
}

/* A __gc finalizer may run in the middle of a decode (when Lua allocates)
 * and call json itself, reusing the codec's buffers under the outer
 * call. The outer result must come out right regardless. */
static void test_finalizers_reentering_the_codec(void **state)
{
    lua_State *L = *state;

    lua_ok(L,
           "local doc = '{\"a\":[' .. "
           "string.rep('{\"k\":\"v\\\\n\",\"n\":1.5},', 300) .. "
           "'{}],\"z\":\"end\"}'\n"
           "local want = json.encode(json.decode(doc))\n"
           "local calls = 0\n"
           "local mt = {__gc = function()\n"
           "  calls = calls + 1\n"
           "  json.decode('[[1,2,3],{\"x\":\"\\\\u00e9\",\"y\":[4,5]}]')\n"
           "  json.encode({q = {1, 2, 3}})\n"
           "end}\n"
           "collectgarbage('incremental', 1, 1000)\n"
           "for i = 1, 200 do\n"
           "  for j = 1, 20 do setmetatable({}, mt) end\n"
           "  local got = json.encode(json.decode(doc))\n"
           "  assert(got == want, 'decode corrupted by a finalizer')\n"
           "end\n"
           "collectgarbage('incremental', 200, 100)\n"
           "assert(calls > 0, 'no finalizer ran during the test')");
}

/* ljson_decoded_count: what the engine compares a script's table against
 * to tell an added or removed field without walking the document. */
static void test_decoded_count(void **state)
{
    lua_State *L = *state;
    static const struct {
        const char *text;
        long count;
    } cases[] = {
        {"{}", 0},
        {"[]", 0},
        {"{\"a\":1,\"b\":{\"c\":2,\"d\":3,\"e\":4}}", 2},
        {" [1, [2, 3, 4], {\"x\": 5}] ", 3},
        {"{\"a\":1,\"a\":2}", 2}, /* as the text has it */
        {"\"text\"", -1},
        {"42", -1},
    };
    struct sl_error err;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *text = cases[i].text;
        if (ljson_decode(codec(L), L, text, strlen(text), &err) != 0) {
            fail_msg("decode %s: %s", text, err.msg);
        }
        if (ljson_decoded_count(codec(L)) != cases[i].count) {
            fail_msg("%s: count %ld, want %ld", text,
                     ljson_decoded_count(codec(L)), cases[i].count);
        }
        lua_pop(L, 1);
    }
}

/* Containers larger than the decoder keeps pending on the Lua stack:
 * members past that go straight into the table, and a repeated key
 * still leaves its last value, on either side of that point. */
static void test_large_containers(void **state)
{
    lua_State *L = *state;
    enum { N = 5000 };
    size_t cap = (size_t)N * 24 + 64, n = 0, len;
    char *text = malloc(cap), *want = malloc(cap);
    struct sl_error err;
    const char *out;

    assert_non_null(text);
    assert_non_null(want);
    /* [1,2,...,N] */
    n = (size_t)snprintf(text, cap, "[");
    for (int i = 1; i <= N; i++) {
        n += (size_t)snprintf(text + n, cap - n, "%s%d", i > 1 ? "," : "",
                              i);
    }
    snprintf(text + n, cap - n, "]");
    round_trip(L, text, text);

    /* {"a":0,"k0001":1,...,"a":N}: "a" again after the switch. */
    n = (size_t)snprintf(text, cap, "{\"a\":0");
    for (int i = 1; i < N; i++) {
        n += (size_t)snprintf(text + n, cap - n, ",\"k%04d\":%d", i, i);
    }
    snprintf(text + n, cap - n, ",\"a\":%d}", N);
    assert_int_equal(ljson_decode(codec(L), L, text, strlen(text), &err), 0);
    assert_int_equal(ljson_decoded_count(codec(L)), N + 1);
    lua_getfield(L, -1, "a");
    assert_int_equal(lua_tointeger(L, -1), N);
    lua_pop(L, 1);
    lua_getfield(L, -1, "k4999");
    assert_int_equal(lua_tointeger(L, -1), 4999);
    lua_pop(L, 1);
    /* Sorted on the way out: "a" first, then k0001...k4999. */
    out = ljson_encode(codec(L), L, -1, &len, &err);
    assert_non_null(out);
    n = (size_t)snprintf(want, cap, "{\"a\":%d", N);
    for (int i = 1; i < N; i++) {
        n += (size_t)snprintf(want + n, cap - n, ",\"k%04d\":%d", i, i);
    }
    snprintf(want + n, cap - n, "}");
    assert_string_equal(out, want);
    lua_pop(L, 1);

    /* A repeated key among the pending members: the last one wins. */
    round_trip(L, "{\"x\":1,\"y\":2,\"x\":3}", "{\"x\":3,\"y\":2}");
    free(text);
    free(want);
}

/* ljson_encode_changed: the root's entries counted while encoding tell an
 * added or removed field at once; with as many, the text is compared. */
static void test_encode_changed(void **state)
{
    lua_State *L = *state;
    static const struct {
        const char *text, *lua, *want; /* want NULL: the same */
        int count_known;
    } cases[] = {
        {"{\"b\":2,\"a\":1}", "", NULL, 1},
        {"{\"b\":2,\"a\":1}", "", NULL, 0},
        {"{\"b\":2,\"a\":1}", "d.c = 3", "{\"a\":1,\"b\":2,\"c\":3}", 1},
        {"{\"b\":2,\"a\":1}", "d.a = nil", "{\"b\":2}", 1},
        {"{\"b\":2,\"a\":1}", "d.a = 5", "{\"a\":5,\"b\":2}", 1},
        {"{\"b\":2,\"a\":1}", "d.a = nil d.z = 1", "{\"b\":2,\"z\":1}",
         1},
        {"{\"b\":2,\"a\":1}", "d.a = 5", "{\"a\":5,\"b\":2}", 0},
        {"[1, 2]", "", NULL, 1},
        {"[1, 2]", "d[3] = 3", "[1,2,3]", 1},
        {"[1, 2]", "d[2] = 7", "[1,7]", 1},
        {"{\"x\":{\"y\":1}}", "d.x.y = 2", "{\"x\":{\"y\":2}}", 1},
    };
    struct sl_error err;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *text = cases[i].text;
        char chunk[128];
        size_t len = 0;
        int same = -1;
        const char *out;

        if (ljson_decode(codec(L), L, text, strlen(text), &err) != 0) {
            fail_msg("decode %s: %s", text, err.msg);
        }
        long count = cases[i].count_known ? ljson_decoded_count(codec(L))
                                          : -1;
        snprintf(chunk, sizeof(chunk), "local d = ... %s", cases[i].lua);
        assert_int_equal(luaL_loadstring(L, chunk), LUA_OK);
        lua_pushvalue(L, -2);
        assert_int_equal(lua_pcall(L, 1, 0, 0), LUA_OK);
        out = ljson_encode_changed(codec(L), L, -1, text, strlen(text), count,
                                   &same, &len, &err);
        if (cases[i].want == NULL) {
            if (!same) {
                fail_msg("case %zu: %s wrongly changed: %s", i, text, out);
            }
            assert_null(out);
        } else {
            if (same || out == NULL) {
                fail_msg("case %zu: %s (%s) wrongly the same", i, text,
                         cases[i].lua);
            }
            assert_int_equal(len, strlen(cases[i].want));
            assert_string_equal(out, cases[i].want);
        }
        lua_pop(L, 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_integers_stay_exact),
        T(test_floats_shortest_and_still_floats),
        T(test_float_text_matches_reference),
        T(test_decoded_floats_match_strtod),
        T(test_nulls_survive),
        T(test_empty_array_and_object_differ),
        T(test_nested_structures),
        T(test_strings_and_unicode),
        T(test_string_scanning_at_every_offset),
        T(test_keys_sorted_bytewise),
        T(test_rejections_name_the_byte),
        T(test_strings_must_be_utf8),
        T(test_depth_limit),
        T(test_encode_errors_name_the_path),
        T(test_equal_says_unchanged),
        T(test_equal_sees_every_change),
        T(test_module_round_trips_canonical_text),
        T(test_codec_api),
        T(test_decoded_count),
        T(test_encode_changed),
        T(test_large_containers),
        T(test_memory_errors_leave_the_codec_sound),
        T(test_finalizers_reentering_the_codec),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
