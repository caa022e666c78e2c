/* retry.c -- the default retry policy. */
#include "retry.h"

#include <stdio.h>

int64_t retry_backoff(int64_t base_ms, int64_t max_ms, uint32_t attempt,
                      uint64_t random)
{
    int64_t ceiling = base_ms;

    for (uint32_t i = 1; i < attempt && ceiling < max_ms; i++) {
        ceiling *= 2;
    }
    if (ceiling > max_ms) {
        ceiling = max_ms;
    }
    /* Full jitter: workers that failed together do not retry together. */
    return (int64_t)(random % (uint64_t)(ceiling + 1));
}

void retry_default(int64_t base_ms, int64_t max_ms, uint32_t attempt,
                   const struct connector_result *r, uint64_t random,
                   struct sl_decision *d)
{
    if (r->status != CONNECTOR_RETRY) {
        d->verdict = SL_VERDICT_GIVE_UP;
        d->delay_ms = 0;
        snprintf(d->reason, sizeof(d->reason), "permanent: %s", r->error);
        return;
    }
    d->verdict = SL_VERDICT_RETRY;
    d->reason[0] = '\0';
    d->delay_ms = retry_backoff(base_ms, max_ms, attempt, random);
    if (r->retry_after_ms > d->delay_ms) {
        d->delay_ms = r->retry_after_ms < RETRY_AFTER_CAP_MS
                          ? r->retry_after_ms
                          : RETRY_AFTER_CAP_MS;
    }
}
