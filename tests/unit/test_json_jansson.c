/* test_json_jansson.c -- lua/json.c against jansson, a well-kept parser:
 * valid documents mutated at random get the same verdict from both, and
 * what both accept is the same value.
 *
 * sluice's functions are ljson_*: jansson owns the json_ names, and a
 * json_equal of ours once took the place of jansson's own in any binary
 * that linked both. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

static ljson_codec_t *codec(lua_State *L)
{
    return ljson_codec_of(L);
}

/* A differential test against jansson, a well-kept parser: valid
 * documents mutated at random (ASCII only: jansson also checks UTF-8,
 * which sluice passes through) must get the same verdict, and what both
 * accept must be the same value (ours encoded, then read by jansson). */
static void test_agrees_with_jansson(void **state)
{
    lua_State *L = luaL_newstate();

    (void)state;
    luaL_openlibs(L);
    luaL_requiref(L, "json", ljson_open, 1);
    lua_pop(L, 1);
    static const char *const seeds[] = {
        "{\"order_id\":\"ord-1\",\"amount\":1583.96,\"items\":[{\"sku\":"
        "\"S-1\",\"qty\":4,\"price\":177.14}],\"test\":false,\"n\":null}",
        "[1,-2,3.5e3,\"a\\n\\u00e9\\ud83d\\ude00\",true,[],{},[[0]],"
        "{\"k\":{}}]",
        "{\"a\":[1,2,{\"b\":\"\\\"q\\\"\"}],\"c\":-0.5,\"d\":1E-3}",
        "\"just a string\"",
        "-12.5e+2",
    };
    static const char alphabet[] = "{}[],:\"\\ntrufalse0123456789.eE+- ax";
    unsigned seed = 12345;
    long accepted = 0, rejected = 0;

    for (int round = 0; round < 200000; round++) {
        const char *base = seeds[round % 5];
        char text[256];
        size_t n = strlen(base);
        struct sl_error err;
        json_error_t jerr;

        memcpy(text, base, n);
        for (int m = 0, count = 1 + round % 3; m < count; m++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % (n + 1);
            char ch = alphabet[(seed >> 20) % (sizeof(alphabet) - 1)];
            switch ((seed >> 4) % 3) {
            case 0: /* delete */
                if (at < n) {
                    memmove(text + at, text + at + 1, n - at - 1);
                    n--;
                }
                break;
            case 1: /* insert */
                if (n + 1 < sizeof(text)) {
                    memmove(text + at + 1, text + at, n - at);
                    text[at] = ch;
                    n++;
                }
                break;
            default: /* replace */
                if (at < n) {
                    text[at] = ch;
                }
            }
        }
        text[n] = '\0';
        json_t *j = json_loadb(text, n, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                               &jerr);
        int ours = ljson_decode(codec(L), L, text, n, &err) == 0;
        if (j == NULL && strstr(jerr.text, "too big") != NULL) {
            /* jansson refuses integers past int64; sluice reads them
             * as floats, as documented. */
            if (ours) {
                lua_pop(L, 1);
            }
            continue;
        }
        if ((j != NULL) != ours) {
            fail_msg("verdicts differ on %s: sluice %s, jansson %s", text,
                     ours ? "accepts" : err.msg,
                     j != NULL ? "accepts" : jerr.text);
        }
        if (!ours) {
            rejected++;
            continue;
        }
        accepted++;
        size_t len;
        const char *out = ljson_encode(codec(L), L, -1, &len, &err);
        assert_non_null(out);
        json_t *back = json_loadb(out, len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                                  &jerr);
        if (back == NULL || !json_equal(j, back)) {
            fail_msg("values differ on %s: sluice wrote %s", text, out);
        }
        json_decref(back);
        json_decref(j);
        lua_pop(L, 1);
    }
    /* The mutations must have produced both kinds. */
    assert_true(accepted > 1000);
    assert_true(rejected > 1000);
    lua_close(L);
}


int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agrees_with_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
