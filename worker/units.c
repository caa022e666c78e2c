/* units.c -- parse durations and sizes written in pipeline YAML.
 *
 * Strict: the whole text must be consumed, overflow is an error, and a
 * unit is required for durations so that "5" is never silently 5 ms. */
#include "units.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int units_parse_int(const char *text, int64_t *value)
{
    char *end;
    long long v;

    /* strtoll would skip leading space: " 5" is not an integer. */
    if (text == NULL || (*text != '-' && (*text < '0' || *text > '9'))) {
        return -1;
    }
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || end == text) {
        return -1;
    }
    *value = v;
    return 0;
}

struct unit {
    const char *suffix;
    int64_t factor;
};

static int parse_with_units(const char *text, const struct unit *units,
                            int bare_allowed, int64_t *out)
{
    char *end;
    long long v;

    if (text == NULL || *text < '0' || *text > '9') {
        return -1;
    }
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || end == text) {
        return -1;
    }
    if (*end == '\0') {
        if (!bare_allowed && v != 0) {
            return -1;
        }
        *out = v;
        return 0;
    }
    for (const struct unit *u = units; u->suffix != NULL; u++) {
        if (strcasecmp(end, u->suffix) == 0) {
            if (v > INT64_MAX / u->factor) {
                return -1;
            }
            *out = v * u->factor;
            return 0;
        }
    }
    return -1;
}

int units_parse_duration(const char *text, int64_t *ms)
{
    static const struct unit units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
        {NULL, 0},
    };
    return parse_with_units(text, units, 0, ms);
}

int units_parse_size(const char *text, int64_t *bytes)
{
    static const struct unit units[] = {
        {"B", 1},
        {"KB", 1000},
        {"MB", 1000 * 1000},
        {"GB", 1000 * 1000 * 1000},
        {"KiB", 1024},
        {"MiB", 1024 * 1024},
        {"GiB", 1024 * 1024 * 1024},
        {NULL, 0},
    };
    return parse_with_units(text, units, 1, bytes);
}
