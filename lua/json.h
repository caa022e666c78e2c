/* json.h -- JSON <-> Lua 5.4 values for transforms, on the hot path.
 *
 * Decoding walks the text once, following the grammar byte by byte, so
 * only RFC 8259 JSON is accepted. Values map as:
 *
 *   object  <-> table (string keys; marked with json.object() or not)
 *   array   <-> table with the array metatable (json.array()), or a
 *               plain table whose keys are exactly 1..n
 *   string  <-> string (bytes; \uXXXX becomes UTF-8, other bytes pass)
 *   integer <-> integer, exact over all of int64 (a literal beyond int64
 *               decodes to a float)
 *   number with a fraction or exponent <-> float (encoded in the fewest
 *               digits that read back to the same double, always with a
 *               '.' or an exponent so it stays a float)
 *   null    <-> json.null, a light userdata NULL, so a key whose value is
 *               null survives a round trip (nil would delete it)
 *
 * Encoding is compact and deterministic: object keys are sorted bytewise,
 * because Lua's table order changes from process to process.
 *
 * A codec holds the buffers the calls reuse (tokens, scratch, output), so
 * the steady state allocates nothing in C. It is not thread-safe: one per
 * Lua state, which ljson_codec_of() provides. */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <stddef.h>

#include "common.h"

struct lua_State;

typedef struct ljson_codec ljson_codec_t;

/* Deepest nesting decode accepts and encode produces: bounds the C
 * recursion, and catches reference cycles when encoding. */
#define JSON_MAX_DEPTH 256

/* A codec with empty buffers; NULL when out of memory. */
ljson_codec_t *ljson_codec_new(void);

/* Frees the codec and its buffers; NULL is a no-op. */
void ljson_codec_free(ljson_codec_t *c);

/* Decodes text[0, len) and pushes one Lua value. Returns 0, or -1 with
 * err reading "json: byte N: what was expected, found what" (N counts from
 * 0) and nothing pushed. May raise a Lua memory error (the state's
 * allocator is capped): call it in protected mode; the codec stays usable
 * either way. The text need not be NUL-terminated. */
int ljson_decode(ljson_codec_t *c, struct lua_State *L, const char *text,
                 size_t len, struct sl_error *err);

/* Encodes the value at idx. Returns the text and its length in *len; the
 * text is owned by c and valid until the next ljson_encode() on c. Returns
 * NULL with err filled when the value cannot be encoded (a function, NaN,
 * a table mixing array and object keys, nesting past JSON_MAX_DEPTH...);
 * the message names where, e.g. "at .items[2].fn" (indexes as in Lua).
 * Raises no Lua error and leaves the stack as it was. */
const char *ljson_encode(ljson_codec_t *c, struct lua_State *L, int idx,
                         size_t *len, struct sl_error *err);

/* ljson_encode for the value decoded from text, which had text_count
 * top-level entries (ljson_decoded_count; -1: unknown). When the value
 * still equals text, sets *same and returns NULL: its bytes can go on as
 * they came. The root's entries are counted while encoding, so a table
 * that gained or lost one is known to differ at no extra cost; with as
 * many as text had, ljson_equal decides. */
const char *ljson_encode_changed(ljson_codec_t *c, struct lua_State *L,
                                 int idx, const char *text, size_t text_len,
                                 long text_count, int *same, size_t *len,
                                 struct sl_error *err);

/* 1 when the value at idx would encode to a document equal to text
 * decoded: same structure, keys and key count, strings byte-equal,
 * integers equal and still integers, floats equal and still floats, null
 * as json.null. 0 otherwise, and 0 when text is not valid JSON or has a
 * duplicate key: it never errs toward 1, so the runtime can forward the
 * original bytes when it says 1. Walks the text once against the table
 * (its keys are not interned), allocates nothing in Lua and raises no
 * Lua error. */
int ljson_equal(ljson_codec_t *c, struct lua_State *L, int idx,
                const char *text, size_t len);

/* Pushes json.null. */
void ljson_push_null(struct lua_State *L);

/* Whether the value at idx is json.null. */
int ljson_is_null(struct lua_State *L, int idx);

/* luaopen-style: pushes the `json` module table (decode, encode, null,
 * array, object, is_null), whose functions use ljson_codec_of(L). Use with
 * luaL_requiref(L, "json", ljson_open, 1). */
int ljson_open(struct lua_State *L);

/* The state's codec, created on first use and freed with the state (a
 * userdata in the registry), so C code shares the module's buffers. May
 * raise a Lua memory error when creating it. */
ljson_codec_t *ljson_codec_of(struct lua_State *L);

/* The entries of the object or array the last successful ljson_decode
 * returned, as its text has them (a repeated key counts each time), or
 * -1 when that was not an object or an array. */
long ljson_decoded_count(const ljson_codec_t *c);

/* Forgets the number texts remembered since the last call: decoding
 * remembers the text of every float, and encoding writes a float of the
 * same value with that text, so numbers a script did not change go out
 * as they came in. Call it between messages. */
void ljson_codec_forget(ljson_codec_t *c);

#endif
