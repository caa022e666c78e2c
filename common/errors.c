/* errors.c -- the caller-supplied error buffer of common.h. */
#include <stdarg.h>
#include <stdio.h>

#include "common.h"

int sl_error_set(struct sl_error *err, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL) {
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return -1;
}
