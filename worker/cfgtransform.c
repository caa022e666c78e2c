/* cfgtransform.c -- struct cfg -> struct transform_spec (see
 * cfgtransform.h). The spec borrows cfg's strings only for the call:
 * transform_new copies what it keeps. */
#include "cfgtransform.h"

#include <stdlib.h>

/* Fills spec from cfg; spec->sinks is allocated (free it). 0, or -1
 * with err filled (no memory). */
static int spec_from_cfg(const struct cfg *cfg, struct transform_spec *spec,
                         struct sl_error *err)
{
    struct transform_sink_spec *sinks =
        calloc(cfg->sink_count + 1, sizeof(*sinks));

    if (sinks == NULL) {
        return sl_error_set(err, "out of memory");
    }
    for (size_t i = 0; i < cfg->sink_count; i++) {
        const struct cfg_sink *s = &cfg->sinks[i];
        sinks[i] = (struct transform_sink_spec){
            .name = s->name,
            .transform = s->transform,
            .retry = s->retry,
            .transform_line = s->transform_line,
            .transform_col = s->transform_col,
            .retry_line = s->retry_line,
            .retry_col = s->retry_col,
        };
    }
    *spec = (struct transform_spec){
        .path = cfg->path,
        .dir = cfg->dir,
        .transform = cfg->transform,
        .transform_line = cfg->transform_line,
        .transform_col = cfg->transform_col,
        .dedupe_fn =
            cfg->dedupe.from == CFG_DEDUPE_LUA ? cfg->dedupe.arg : NULL,
        .dedupe_line = cfg->dedupe.key_line,
        .dedupe_col = cfg->dedupe.key_col,
        .shard_separator = cfg->source.shard_separator,
        .retry_backoff_ms = cfg->delivery.retry_backoff_ms,
        .retry_backoff_max_ms = cfg->delivery.retry_backoff_max_ms,
        .limits =
            {
                .memory_bytes = (size_t)cfg->lua.memory_limit,
                .instructions = cfg->lua.instruction_limit,
                .time_limit_ms = cfg->lua.time_limit_ms,
            },
        .sinks = sinks,
        .sink_count = cfg->sink_count,
    };
    return 0;
}

transform_t *cfg_transform_new(const struct cfg *cfg, struct sl_error *err)
{
    struct transform_spec spec;

    if (spec_from_cfg(cfg, &spec, err) != 0) {
        return NULL;
    }
    transform_t *t = transform_new(&spec, err);
    free((void *)spec.sinks);
    return t;
}

/* transform_error_fn into a struct cfg_errors. */
static void add_error(void *arg, const char *file, int line, int col,
                      const char *key, const char *msg)
{
    cfg_errors_add(arg, file, line, col, key, "%s", msg);
}

int cfg_transform_check(const struct cfg *cfg, struct cfg_errors *errs)
{
    struct transform_spec spec;
    struct sl_error err;

    if (spec_from_cfg(cfg, &spec, &err) != 0) {
        cfg_errors_add(errs, cfg->path, 0, 0, "", "%s", err.msg);
        return -1;
    }
    int rc = transform_check(&spec, add_error, errs);
    free((void *)spec.sinks);
    return rc;
}
