/* retry.h -- the default retry policy, the one lua/lib/sluice/retry.lua
 * spells out in Lua.
 *
 * Transport errors and 408, 425, 429, 500, 502, 503 and 504 are retried
 * with exponential backoff and full jitter, capped; a longer Retry-After
 * from the server wins (up to RETRY_AFTER_CAP_MS). Any other status is
 * permanent: the policy gives up. */
#ifndef SLUICE_RETRY_H
#define SLUICE_RETRY_H

#include <stdint.h>

#include "connector.h"

#define RETRY_AFTER_CAP_MS 300000

/* The backoff before attempt+1: uniform in [0, min(max, base*2^(attempt-1))]
 * drawn from random (any 64-bit value; callers pass a PRNG's output). */
int64_t retry_backoff(int64_t base_ms, int64_t max_ms, uint32_t attempt,
                      uint64_t random);

/* Decides about a failed attempt (attempt counts it) by the default
 * policy; d->reason is filled when it gives up. */
void retry_default(int64_t base_ms, int64_t max_ms, uint32_t attempt,
                   const struct connector_result *r, uint64_t random,
                   struct sl_decision *d);

#endif
