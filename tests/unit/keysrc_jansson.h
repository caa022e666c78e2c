/* keysrc_jansson.h -- the json: picking keysrc.c did with jansson before
 * its scanner, kept as the oracle the scanner must match: same key, same
 * miss, for every value and path (test_keysrc.c, fuzz_keysrc.c).
 *
 * Included by one test file each: static, and links jansson. */
#ifndef SLUICE_KEYSRC_JANSSON_H
#define SLUICE_KEYSRC_JANSSON_H

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "keysrc.h"

static const char *oracle_usable_key(const void *key, size_t len, char *out,
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

static const char *oracle_json_key(const char *path, json_t *root, char *out,
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
        key = oracle_usable_key(json_string_value(at), json_string_length(at),
                                out, cap, miss);
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

/* keysrc_pick_json as it was. */
static void oracle_pick_json(const void *value, size_t value_len,
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
            p->key = oracle_json_key(p->path, root, p->out, p->cap, &p->miss);
        }
    }
    json_decref(root);
}

#endif
