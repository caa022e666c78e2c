/* redact.h -- keeps configured secrets out of what sluice writes down.
 *
 * A sink's error body or reason can echo what it was sent (an
 * Authorization header, a token in a URL). Before such text reaches the
 * DLQ or a log it passes through a redactor that knows the pipeline's
 * secret values (contract 8) and replaces each occurrence with
 * REDACT_MARK. */
#ifndef SLUICE_REDACT_H
#define SLUICE_REDACT_H

#include <stddef.h>

#include "cfg.h"

#define REDACT_MARK "[redacted]"

typedef struct redact redact_t;

/* Collects the secrets of cfg: every value of an option flagged
 * OPT_SECRET (a sink's headers, ...), whole and each of its words of at
 * least REDACT_MIN_WORD bytes (the token of "Bearer TOKEN"). NULL when
 * out of memory. Free with redact_free(); NULL is a no-op. */
#define REDACT_MIN_WORD 6
redact_t *redact_new(const struct cfg *cfg);
void redact_free(redact_t *r);

/* Adds one secret (copied); words are added too. 0 or -1. */
int redact_add(redact_t *r, const char *secret);

/* Rewrites text[0, *len) in place (cap bytes of room), replacing every
 * secret with REDACT_MARK, longest secrets first; the result is cut at
 * cap. Returns the number of replacements. */
size_t redact_apply(const redact_t *r, char *text, size_t *len, size_t cap);

#endif
