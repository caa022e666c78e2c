/* dlqcmd.h -- `sluice dlq`: inspect a pipeline's dead-letter topics
 * (stats, list, show) and start a replay (dlq_replay, worker/dlq.h).
 *
 * The read commands never join a group and never commit: which records a
 * sink has worked comes from the committed offsets of its replay group
 * <pipeline>.dlq.<sink>, read without membership. */
#ifndef SLUICE_DLQCMD_H
#define SLUICE_DLQCMD_H

#include <stddef.h>
#include <stdint.h>

/* Runs `sluice dlq ...`; argv[0] is "dlq". Returns the exit code: 0 ok,
 * 1 runtime failure, 2 bad usage or configuration. */
int dlqcmd_main(int argc, char **argv);

/* ---- the pieces, for unit tests (and for replay to share) ---- */

/* Parses --since: a duration ago ("90s", "30m", "2h", "7d"; units ms, s,
 * m, h, d) or a time in epoch milliseconds (a bare integer of 13 digits
 * or more, so that "30" is never read as 1970). Writes the earliest
 * record time to keep (0 when the duration reaches back before 1970).
 * Returns 0, or -1 when text is neither. */
int dlqcmd_parse_since(const char *text, int64_t now_ms, int64_t *since_ms);

/* Parses "PARTITION:OFFSET", or a bare "OFFSET" (partition 0); decimal
 * digits only. Returns 0 or -1. */
int dlqcmd_parse_position(const char *text, int32_t *partition,
                          int64_t *offset);

/* A record's HTTP status: absent, or present but not a number. */
#define DLQCMD_STATUS_NONE (-1)
#define DLQCMD_STATUS_BAD (-2)

/* Parses a DLQ_H_STATUS value (len bytes, untrusted): 1 to 3 digits, at
 * least 1. Returns it, DLQCMD_STATUS_NONE when text is NULL, else
 * DLQCMD_STATUS_BAD. */
int dlqcmd_parse_status(const void *text, size_t len);

/* A record's reason for grouping into out (cap bytes, NUL-terminated):
 * the error class (NULL: "?") followed by the status when there is one
 * ("rejected 400", "deadline 503", "transform_error"; a malformed status
 * is "?": "rejected ?"). Returns out. */
char *dlqcmd_reason_key(char *out, size_t cap, const char *cls, int status);

/* Whether --reason want selects a record of class cls (NULL: missing)
 * and status: want equals the class, the status ("400"), the status
 * class ("4xx", any case) or the whole reason key ("rejected 400"). */
int dlqcmd_reason_matches(const char *want, const char *cls, int status);

/* Formats an age in milliseconds as its two largest units: "0s", "45s",
 * "3m12s", "2h5m", "3d4h" (a negative age, a clock skew, is "0s").
 * Returns out. */
char *dlqcmd_format_age(char *out, size_t cap, int64_t ms);

/* Escapes len untrusted bytes for a terminal into out (cap >= 4 bytes,
 * NUL-terminated): printable ASCII and valid UTF-8 from U+00A0 on stay as
 * they are; a backslash becomes "\\", tab, newline and carriage return
 * "\t", "\n", "\r", bidirectional controls and line separators "\uXXXX",
 * and every other byte (controls, DEL, C1, invalid UTF-8) "\xHH". With
 * DLQCMD_ESC_NEWLINES, tabs and newlines stay as they are. When the
 * result does not fit it is cut at a character boundary and ends with
 * "...". Returns 1 when cut, else 0. */
#define DLQCMD_ESC_NEWLINES 1
int dlqcmd_escape(char *out, size_t cap, const void *data, size_t len,
                  int flags);

#endif
