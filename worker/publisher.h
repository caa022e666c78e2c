/* publisher.h -- `source.type: http`: the publisher of the migration.
 *
 * Each POST to the source's endpoint becomes one record: the body is its
 * value, the key rule (keyrule.h) gives its key, the request's
 * Idempotency-Key (or a new UUIDv7) its `message-id` header, which is the
 * dedupe key the consuming pipelines read. The record goes to the
 * pipeline's kafka sink; the request is answered 202 only once Kafka
 * acknowledged it (idempotent producer, acks=all), 429 when
 * source.max_in_flight requests are under way or the producer's queue is
 * full, 503 when Kafka did not acknowledge in source.timeout, both with
 * Retry-After. The pipeline's other sinks (the legacy endpoint, during a
 * dual-write) get the same request; their outcome goes to the outcome log,
 * not into the answer.
 *
 * libmicrohttpd parses requests on its own thread and suspends each one;
 * the lane's loop produces, and resumes the connection with its answer. */
#ifndef SLUICE_PUBLISHER_H
#define SLUICE_PUBLISHER_H

#include "cfg.h"

/* Runs the publisher of cfg (source_type CFG_SOURCE_HTTP) until SIGINT or
 * SIGTERM; then the listener closes, requests under way get their
 * answers (up to source.drain_timeout) and the outcome log is flushed.
 * Returns an exit status: 0, or 1 when it could not start. */
int publisher_run(const struct cfg *cfg);

/* A UUIDv7 (RFC 9562) for unix_ms, random bits from rnd: 36 characters
 * and a NUL. */
void publisher_uuid7(char out[37], uint64_t unix_ms, const uint8_t rnd[10]);

#endif
