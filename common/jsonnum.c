/* jsonnum.c -- the JSON number grammar (jsonnum.h). */
#include "jsonnum.h"

#include <stddef.h>

static int is_digit(const unsigned char *p, const unsigned char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}

/* Past a run of digits; NULL when there is none. */
static const unsigned char *digits_end(const unsigned char *p,
                                       const unsigned char *end)
{
    if (!is_digit(p, end)) {
        return NULL;
    }
    while (is_digit(p, end)) {
        p++;
    }
    return p;
}

const unsigned char *jsonnum_end(const unsigned char *p,
                                 const unsigned char *end, int *real,
                                 const unsigned char **digits,
                                 const char **why)
{
    *real = 0;
    *why = "invalid number";
    if (p < end && *p == '-') {
        p++;
    }
    *digits = p;
    if (!is_digit(p, end)) {
        return NULL;
    }
    if (*p == '0') {
        if (is_digit(++p, end)) {
            *why = "invalid number (a leading zero)";
            return NULL;
        }
    } else if ((p = digits_end(p, end)) == NULL) {
        return NULL;
    }
    if (p < end && *p == '.') {
        *real = 1;
        if ((p = digits_end(p + 1, end)) == NULL) {
            return NULL;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *real = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        if ((p = digits_end(p, end)) == NULL) {
            return NULL;
        }
    }
    return p;
}
