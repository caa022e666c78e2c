/* redact.c -- replace configured secrets in text. */
#include "redact.h"
#include "connector.h"

#include <stdlib.h>
#include <string.h>

struct redact {
    char **items;
    size_t count;
};

static int push(redact_t *r, const char *s, size_t len)
{
    char **items;

    for (size_t i = 0; i < r->count; i++) {
        if (strlen(r->items[i]) == len && memcmp(r->items[i], s, len) == 0) {
            return 0;
        }
    }
    items = realloc(r->items, (r->count + 1) * sizeof(*items));
    if (items == NULL) {
        return -1;
    }
    r->items = items;
    if ((items[r->count] = strndup(s, len)) == NULL) {
        return -1;
    }
    r->count++;
    return 0;
}

static int by_length_desc(const void *a, const void *b)
{
    size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);

    return la < lb ? 1 : la > lb ? -1 : 0;
}

int redact_add(redact_t *r, const char *secret)
{
    const char *p = secret;
    size_t len = strlen(secret);

    if (len == 0) {
        return 0;
    }
    if (push(r, secret, len) != 0) {
        return -1;
    }
    while (*p != '\0') {
        size_t word = strcspn(p, " \t");
        if (word >= REDACT_MIN_WORD && word < len && push(r, p, word) != 0) {
            return -1;
        }
        p += word;
        p += strspn(p, " \t");
    }
    /* Longest first, so a whole value goes before its words. */
    qsort(r->items, r->count, sizeof(*r->items), by_length_desc);
    return 0;
}

static int add_table(redact_t *r, const struct opt_spec *specs,
                     const void *base)
{
    for (const struct opt_spec *s = specs; s->name != NULL; s++) {
        const void *field = (const char *)base + s->offset;
        if (!(s->flags & OPT_SECRET)) {
            continue;
        }
        if (s->type == OPT_STRING && *(char *const *)field != NULL &&
            redact_add(r, *(char *const *)field) != 0) {
            return -1;
        }
        if (s->type == OPT_STRING_MAP) {
            const struct opt_map *m = field;
            for (size_t i = 0; i < m->count; i++) {
                if (redact_add(r, m->values[i]) != 0) {
                    return -1;
                }
            }
        }
        if (s->type == OPT_STRING_LIST) {
            const struct opt_list *l = field;
            for (size_t i = 0; i < l->count; i++) {
                if (redact_add(r, l->items[i]) != 0) {
                    return -1;
                }
            }
        }
    }
    return 0;
}

redact_t *redact_new(const struct cfg *cfg)
{
    redact_t *r = calloc(1, sizeof(*r));

    if (r == NULL) {
        return NULL;
    }
    for (size_t i = 0; cfg != NULL && i < cfg->sink_count; i++) {
        const struct cfg_sink *s = &cfg->sinks[i];
        if (add_table(r, cfg_sink_options, s) != 0 ||
            add_table(r, s->connector->options, s->ctx) != 0) {
            redact_free(r);
            return NULL;
        }
    }
    return r;
}

void redact_free(redact_t *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->count; i++) {
        free(r->items[i]);
    }
    free(r->items);
    free(r);
}

size_t redact_apply(const redact_t *r, char *text, size_t *len, size_t cap)
{
    const size_t mark_len = sizeof(REDACT_MARK) - 1;
    size_t n = 0;

    for (size_t i = 0; r != NULL && i < r->count; i++) {
        const char *secret = r->items[i];
        size_t slen = strlen(secret), at = 0;
        char *hit;
        while (at < *len &&
               (hit = memmem(text + at, *len - at, secret, slen)) != NULL) {
            size_t pos = (size_t)(hit - text);
            size_t tail = *len - pos - slen;
            size_t new_len = pos + mark_len + tail;
            if (new_len > cap) {
                /* No room for the tail: cut it, the secret with it. */
                tail = cap > pos + mark_len ? cap - pos - mark_len : 0;
                new_len = pos + mark_len + tail;
                if (new_len > cap) {
                    *len = pos; /* not even the mark fits */
                    n++;
                    break;
                }
            }
            memmove(text + pos + mark_len, text + pos + slen, tail);
            memcpy(text + pos, REDACT_MARK, mark_len);
            *len = new_len;
            at = pos + mark_len;
            n++;
        }
    }
    return n;
}
