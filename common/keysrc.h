/* keysrc.h -- where a key comes from: `header:NAME` or `json:PATH`.
 *
 * dedupe.key and the publisher's key rule (keyrule.h) name a key's source
 * the same way; this module parses such a source once and picks the key
 * from a message, so both read a source and a message alike. */
#ifndef SLUICE_KEYSRC_H
#define SLUICE_KEYSRC_H

#include <stddef.h>

enum keysrc_from {
    KEYSRC_HEADER,      /* header:NAME */
    KEYSRC_JSON,        /* json:PATH, field names joined by '.' */
    KEYSRC_LUA,         /* lua:FUNCTION (only where allowed) */
    KEYSRC_COORDINATES, /* coordinates (only where allowed) */
};

/* What keysrc_parse accepts beyond header: and json:. */
#define KEYSRC_ALLOW_LUA_COORDINATES 1

/* Parses spec ("header:NAME", "json:PATH", and with
 * KEYSRC_ALLOW_LUA_COORDINATES "lua:FUNCTION" and "coordinates") into
 * *from and *arg (NAME, PATH or FUNCTION: points into spec). Returns NULL,
 * or why spec is refused (a static string). */
const char *keysrc_parse(const char *spec, int allow, int *from,
                         const char **arg);

/* Why keysrc_pick found no usable key. */
enum keysrc_miss {
    KEYSRC_OK,
    KEYSRC_ABSENT,    /* no such header or field */
    KEYSRC_NOT_JSON,  /* json: and the value is not JSON (or is empty) */
    KEYSRC_NOT_FOUND, /* json: and the path crosses a non-object */
    KEYSRC_TYPE,      /* json: and the field is not a string or integer */
    KEYSRC_EMPTY,     /* an empty string */
    KEYSRC_TOO_LONG,  /* does not fit cap (with its NUL) */
    KEYSRC_NUL,       /* holds a NUL byte: cut there, keys could collide */
};

/* The key from (header: or json:, arg as keysrc_parse gave it) picks
 * from a message: header[0, header_len) is the configured header's value
 * (NULL when the message has none), value[0, value_len) the message's
 * JSON value. Writes the key to out (cap bytes, NUL-terminated) and
 * returns out; NULL when there is no usable key, and then *miss (when
 * miss is not NULL) says why. Other kinds of source give NULL with
 * KEYSRC_ABSENT: the caller handles them. json: reads value once with
 * a scanner that allocates nothing unless the open objects hold more
 * than 512 keys (then a heap index, bounded by the value's size), and
 * finds it JSON exactly when jansson's json_loadb(JSON_REJECT_DUPLICATES)
 * would. */
const char *keysrc_pick(int from, const char *arg, const void *header,
                        size_t header_len, const void *value,
                        size_t value_len, char *out, size_t cap, int *miss);

/* One json: path to pick for keysrc_pick_json(). */
struct keysrc_json_pick {
    const char *path; /* in: field names joined by '.' */
    char *out;        /* in: where the key goes, cap bytes */
    size_t cap;
    const char *key;  /* out: out, or NULL when there is no usable key */
    int miss;         /* out: enum keysrc_miss */
};

/* As keysrc_pick for each of picks[0, n), all json: sources of the same
 * value, which is parsed once. */
void keysrc_pick_json(const void *value, size_t value_len,
                      struct keysrc_json_pick *picks, size_t n);

/* A short phrase for a keysrc_miss of a source of kind from, e.g. "field
 * missing", "no such header"; never NULL. */
const char *keysrc_miss_str(int from, int miss);

#endif
