/* reconcile.h -- `sluice reconcile LEFT RIGHT`: compare two outcome logs
 * (docs/outcomes.md), files or Kafka topics, pair by pair.
 *
 * Lines are matched on (sink, key); a pair is matched, missing on one side
 * or mismatched (method, path or body differ), counted per sink and per
 * UTC day. No line is kept in memory: each side becomes a table of fixed
 * size entries (128-bit hashes and the line's offset, to re-read it for
 * examples), so memory grows with the number of pairs, not their bytes.
 * Every input byte is untrusted. */
#ifndef SLUICE_RECONCILE_H
#define SLUICE_RECONCILE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "connector.h"

/* Runs `sluice reconcile ...`; argv[0] is "reconcile". Returns the exit
 * code: 0 no diff, 1 a diff, 2 bad usage or an input that cannot be
 * read or parsed. */
int reconcile_main(int argc, char **argv);

/* ---- the pieces, for unit tests ---- */

/* The longest line read, in bytes (without its newline). */
#define RECONCILE_LINE_MAX (16u * 1024 * 1024)

enum reconcile_outcome {
    RECONCILE_DELIVERED,
    RECONCILE_APPLIED,
    RECONCILE_SHADOW,
    RECONCILE_ALREADY_HANDLED,
    RECONCILE_DEAD_LETTERED,
};

/* One parsed line. The pointers (sink, key, error: decoded, not
 * NUL-terminated) are owned by the parser and stay valid until the next
 * reconcile_parse_line() or reconcile_parser_destroy(). */
struct reconcile_line {
    enum reconcile_outcome outcome;
    int effect;           /* delivered, applied or shadow */
    const char *sink;
    size_t sink_len;
    const char *key;
    size_t key_len;
    int32_t day;          /* the UTC date of ts, in days since 1970-01-01 */
    uint64_t pair[2];     /* hash of (sink, key) */
    /* Effects only: hash of (method, path, canonical body without the
     * ignored fields), valid when has_body; and of (method, path,
     * body_sha256). */
    int has_body;
    uint64_t digest[2];
    uint64_t sha_digest;
    const char *error;    /* dead_lettered: the error class, or NULL */
    size_t error_len;
};

typedef struct reconcile_parser reconcile_parser_t;

/* A line parser that removes the ignored fields (dot paths from the
 * body's root, e.g. "meta.sent_at"; the array and its strings are copied)
 * before hashing bodies. Returns NULL when out of memory or when a path
 * is empty or has an empty component (err says which). Free it with
 * reconcile_parser_destroy (NULL is a no-op). */
reconcile_parser_t *reconcile_parser_new(const char *const *ignore,
                                         size_t ignore_count,
                                         struct sl_error *err);
void reconcile_parser_destroy(reconcile_parser_t *p);

/* Parses one line (len bytes, untrusted, no newline). Returns 1 and fills
 * *out, 0 when the line is empty or only whitespace (*out untouched), or
 * -1 with the reason in err (not JSON, not an object, a required field
 * missing or of the wrong type, an unknown outcome or version, a bad ts,
 * over RECONCILE_LINE_MAX). */
int reconcile_parse_line(reconcile_parser_t *p, const char *line,
                         size_t len, struct reconcile_line *out,
                         struct sl_error *err);

/* The UTC date of an RFC 3339 time (len bytes: "2026-12-05T12:00:00Z",
 * fractions and a numeric offset allowed) in days since 1970-01-01 into
 * *day. Returns 0, or -1 when text is not such a time. */
int reconcile_parse_day(const char *text, size_t len, int32_t *day);

/* "YYYY-MM-DD" of a day into out (cap >= 11). Returns out. */
char *reconcile_format_day(char *out, size_t cap, int32_t day);

/* Removes each dot path of ignore from json (absent paths are fine) and
 * writes its canonical form into a new string: object keys sorted,
 * compact, numbers as jansson prints them (1 and 1.0 differ). Returns the
 * string (the caller frees it) or NULL when out of memory. json is
 * changed. */
char *reconcile_canonical(json_t *json, const char *const *ignore,
                          size_t ignore_count);

/* The first field in which bodies l and r differ, keys in sorted order,
 * as "PREFIX.a.b[2]: LEFT != RIGHT" (values compact JSON, cut) into out
 * (cap bytes). Returns 1 when they differ, 0 when equal (out empty). */
int reconcile_first_diff(const json_t *l, const json_t *r,
                         const char *prefix, char *out, size_t cap);

#endif
