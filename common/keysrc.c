/* keysrc.c -- `header:NAME` / `json:PATH` key sources (see keysrc.h).
 *
 * Lifted from cfg.c (parsing dedupe.key) and engine.c (picking the key)
 * so that the publisher's key rule reads a source exactly as dedupe does.
 * A key is usable when it is not empty, fits and holds no NUL byte. */
#include "keysrc.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

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

/* The string or integer at path (field names joined by '.') of a parsed
 * JSON value. */
static const char *json_key(const char *path, json_t *root, char *out,
                            size_t cap, int *miss)
{
    json_t *at = root;
    const char *key = NULL;
    char name[256];

    *miss = KEYSRC_ABSENT;
    while (at != NULL && *path != '\0') {
        size_t n = strcspn(path, ".");
        if (n >= sizeof(name) || !json_is_object(at)) {
            *miss = n >= sizeof(name) ? KEYSRC_ABSENT : KEYSRC_NOT_FOUND;
            at = NULL;
            break;
        }
        memcpy(name, path, n);
        name[n] = '\0';
        at = json_object_get(at, name);
        path += n + (path[n] == '.');
    }
    if (json_is_string(at)) {
        key = usable_key(json_string_value(at), json_string_length(at), out,
                         cap, miss);
    } else if (json_is_integer(at)) {
        int n = snprintf(out, cap, "%" JSON_INTEGER_FORMAT,
                         json_integer_value(at));
        if (n >= 0 && (size_t)n < cap) {
            key = out;
        } else {
            *miss = KEYSRC_TOO_LONG;
        }
    } else if (at != NULL) {
        *miss = KEYSRC_TYPE;
    }
    if (key != NULL) {
        *miss = KEYSRC_OK;
    }
    return key;
}

void keysrc_pick_json(const void *value, size_t value_len,
                      struct keysrc_json_pick *picks, size_t n)
{
    json_error_t jerr;
    json_t *root = NULL;

    if (value != NULL && value_len > 0) {
        root = json_loadb(value, value_len, JSON_REJECT_DUPLICATES, &jerr);
    }
    for (size_t i = 0; i < n; i++) {
        struct keysrc_json_pick *p = &picks[i];
        p->key = NULL;
        if (root == NULL) {
            p->miss = KEYSRC_NOT_JSON;
        } else if (p->cap == 0) {
            p->miss = KEYSRC_TOO_LONG;
        } else {
            p->key = json_key(p->path, root, p->out, p->cap, &p->miss);
        }
    }
    json_decref(root);
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
