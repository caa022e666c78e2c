/* utf8.c -- the UTF-8 decoder, and JSON string escaping (utf8.h). */
#include "utf8.h"

#include <stdio.h>
#include <string.h>

size_t utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t v, min;

    if (p[0] < 0x80) {
        v = p[0];
        len = 1;
        goto out;
    }
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        len = 2, v = p[0] & 0x1f, min = 0x80;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        len = 3, v = p[0] & 0x0f, min = 0x800;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        len = 4, v = p[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        v = v << 6 | (p[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) {
        return 0;
    }
out:
    if (cp != NULL) {
        *cp = v;
    }
    return len;
}

size_t utf8_json_escape(char *out, size_t cap, const char *in)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t left = strlen(in), n = 0;

    while (left > 0) {
        char piece[8];
        size_t take = 1, put;
        if (*p == '"' || *p == '\\') {
            put = (size_t)snprintf(piece, sizeof(piece), "\\%c", *p);
        } else if (*p < 0x20 || *p == 0x7f) {
            put = (size_t)snprintf(piece, sizeof(piece), "\\u%04x", *p);
        } else if (*p < 0x80) {
            put = 1;
            piece[0] = (char)*p;
        } else if ((take = utf8_decode(p, left, NULL)) > 0) {
            put = take;
            memcpy(piece, p, take);
        } else {
            /* Not UTF-8 (a header value is bytes): the replacement
             * character, so that the text stays JSON. */
            take = 1;
            put = (size_t)snprintf(piece, sizeof(piece), "\\ufffd");
        }
        if (n + put >= cap) {
            break; /* cut at a whole piece */
        }
        memcpy(out + n, piece, put);
        n += put;
        p += take;
        left -= take;
    }
    out[n] = '\0';
    return n;
}
