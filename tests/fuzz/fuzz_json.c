/* fuzz_json.c -- libFuzzer target for the JSON codec (lua/json.c).
 *
 * Decodes arbitrary bytes into a plain Lua state with the json module.
 * When they decode, the value must survive a round trip: encoding it
 * gives text that ljson_equal finds equal to the value, that decodes
 * again, and whose value encodes to the same bytes (encoding is
 * deterministic). ljson_equal and ljson_encode_changed run against the
 * original text too, for coverage; they must agree with each other.
 * Each input gets a codec of its own (ljson_codec_new), checked twice. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static lua_State *state;

/* Aborts with the texts involved, so the crash report shows them. */
static void fail(const char *what, const char *a, size_t alen, const char *b,
                 size_t blen)
{
    fprintf(stderr, "fuzz_json: %s\n  first:  %.*s\n  second: %.*s\n", what,
            (int)(alen > 400 ? 400 : alen), a, (int)(blen > 400 ? 400 : blen),
            b);
    abort();
}

struct decode_call {
    ljson_codec_t *c;
    const char *text;
    size_t len;
    struct sl_error *err;
    int rc;
};

/* ljson_decode may raise a Lua memory error: run it protected. */
static int decode_protected(lua_State *L)
{
    struct decode_call *d = lua_touserdata(L, 1);

    lua_pop(L, 1);
    d->rc = ljson_decode(d->c, L, d->text, d->len, d->err);
    return d->rc == 0 ? 1 : 0;
}

/* Pushes the decoded value and returns 0, or returns -1 (nothing pushed). */
static int decode(ljson_codec_t *c, const char *text, size_t len)
{
    struct sl_error err = {{0}};
    struct decode_call d = {.c = c, .text = text, .len = len, .err = &err,
                            .rc = -1};

    lua_pushcfunction(state, decode_protected);
    lua_pushlightuserdata(state, &d);
    if (lua_pcall(state, 1, 1, 0) != LUA_OK) {
        lua_pop(state, 1);
        return -1;
    }
    if (d.rc != 0) {
        lua_pop(state, 1); /* pcall's nil result */
        if (strncmp(err.msg, "json: byte ", 11) != 0) {
            fail("decode error without its byte offset", err.msg,
                 strlen(err.msg), text, len);
        }
        return -1;
    }
    return 0;
}

/* Encodes the value at idx into a new buffer (the caller frees), NULL when
 * it does not encode. */
static char *encode(ljson_codec_t *c, int idx, size_t *len)
{
    struct sl_error err = {{0}};
    const char *out = ljson_encode(c, state, idx, len, &err);
    char *copy;

    if (out == NULL) {
        return NULL;
    }
    copy = malloc(*len + 1);
    if (copy == NULL) {
        abort();
    }
    memcpy(copy, out, *len);
    copy[*len] = '\0';
    return copy;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    state = luaL_newstate();
    if (state == NULL) {
        abort();
    }
    luaL_openlibs(state);
    luaL_requiref(state, "json", ljson_open, 1);
    lua_pop(state, 1);
    return 0;
}

static void check(ljson_codec_t *c, const char *text, size_t size)
{
    int top = lua_gettop(state);
    char *once = NULL, *twice = NULL;
    size_t once_len = 0, twice_len = 0;

    ljson_codec_forget(c); /* each input is a message of its own */
    if (decode(c, text, size) != 0) {
        /* ljson_equal walks the text itself: invalid text is never equal
         * to anything. */
        lua_newtable(state);
        if (ljson_equal(c, state, -1, text, size)) {
            fail("ljson_equal accepts text that does not decode", text, size,
                 "{}", 2);
        }
        goto done;
    }
    long count = ljson_decoded_count(c);
    int value = lua_gettop(state);
    int equal_input = ljson_equal(c, state, value, text, size);

    once = encode(c, value, &once_len);
    if (once == NULL) {
        /* Decoded values are finite numbers, strings, null, and tables
         * at most JSON_MAX_DEPTH deep: all encodable. */
        fail("a decoded value does not encode", text, size, "", 0);
    }
    if (!ljson_equal(c, state, value, once, once_len)) {
        fail("a value is not equal to its own encoding", text, size, once,
             once_len);
    }
    {
        int same = 0;
        size_t changed_len = 0;
        struct sl_error err = {{0}};
        const char *changed = ljson_encode_changed(
            c, state, value, text, size, count, &same, &changed_len, &err);
        if (same && !equal_input) {
            fail("encode_changed says same, ljson_equal says different",
                 text, size, once, once_len);
        }
        if (!same && (changed == NULL || changed_len != once_len ||
                      memcmp(changed, once, once_len) != 0)) {
            fail("encode_changed differs from encode", once, once_len,
                 changed ? changed : err.msg,
                 changed ? changed_len : strlen(err.msg));
        }
    }
    if (decode(c, once, once_len) != 0) {
        fail("an encoding does not decode", text, size, once, once_len);
    }
    twice = encode(c, lua_gettop(state), &twice_len);
    if (twice == NULL || twice_len != once_len ||
        memcmp(once, twice, once_len) != 0) {
        fail("decode(encode(x)) encodes differently", once, once_len,
             twice ? twice : "(does not encode)",
             twice ? twice_len : 18);
    }
    if (!ljson_equal(c, state, lua_gettop(state), once, once_len) ||
        !ljson_equal(c, state, value, twice, twice_len)) {
        fail("decode(encode(x)) != x", text, size, once, once_len);
    }
done:
    free(once);
    free(twice);
    lua_settop(state, top);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A heap copy of exactly size bytes: ASan sees any read past the end,
     * as the decoder must not rely on a NUL. */
    char *text = malloc(size ? size : 1);
    ljson_codec_t *c = ljson_codec_new();

    if (text == NULL || c == NULL) {
        abort();
    }
    memcpy(text, data, size);
    /* A new codec, so that a run does not depend on the inputs before it;
     * then again on the same one, as a worker reuses its buffers. */
    check(c, text, size);
    check(c, text, size);
    ljson_codec_free(c);
    free(text);
    return 0;
}
