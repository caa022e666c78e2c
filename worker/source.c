/* source.c -- which source feeds a pipeline (source.h). */
#include "source.h"

/* The first is the default. */
const struct source *const source_types[] = {&kafka_source, &http_source,
                                             NULL};

const struct source *source_of(const struct cfg *cfg)
{
    return cfg->source_type == CFG_SOURCE_HTTP ? &http_source
                                               : &kafka_source;
}
