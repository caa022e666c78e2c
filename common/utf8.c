/* utf8.c -- the UTF-8 decoder, and JSON string escaping (utf8.h). */
#include "utf8.h"

#include <stdio.h>

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
    size_t n = 0;

    for (; *in != '\0' && n + 7 < cap; in++) {
        unsigned char c = (unsigned char)*in;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return n;
}
