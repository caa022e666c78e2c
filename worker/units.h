/* units.h -- parse durations ("500ms", "5s") and sizes ("64MiB").
 *
 * Kept apart from the config loader so the fuzz targets can reach them. */
#ifndef SLUICE_UNITS_H
#define SLUICE_UNITS_H

#include <stdint.h>

/* Parses "<integer><unit>" with unit ms, s, m, h, d (or a bare 0) into
 * milliseconds. Returns 0, or -1 when text is not a duration. */
int units_parse_duration(const char *text, int64_t *ms);

/* Parses "<integer>[unit]" with unit B, KB, MB, GB (powers of 1000) or
 * KiB, MiB, GiB (powers of 1024); a bare integer is bytes. 0 or -1. */
int units_parse_size(const char *text, int64_t *bytes);

/* Parses a whole decimal int64 (optional sign). 0 or -1. */
int units_parse_int(const char *text, int64_t *value);

#endif
