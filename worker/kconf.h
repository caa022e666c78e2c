/* kconf.h -- librdkafka properties from a pipeline file, checked once.
 *
 * The consumer and the DLQ producer both take a map of properties from
 * the YAML, refuse the names sluice manages itself, and report every bad
 * one at its key's position in the file; an unknown name gets a "did you
 * mean" from librdkafka's own property list. */
#ifndef SLUICE_KCONF_H
#define SLUICE_KCONF_H

#include <librdkafka/rdkafka.h>

#include "cfg.h"

struct kconf_default {
    const char *name, *value;
};

/* Sets defaults (NULL-name terminated), then props over them, into conf.
 * A name in managed (NULL-terminated) or a value librdkafka refuses is
 * reported into errs as "path:line:col: section: `name` why" when errs is
 * given (at the key when cfg knows where it is, else at line:col), else
 * into err. Returns the number of bad properties. */
int kconf_apply(rd_kafka_conf_t *conf, const struct kconf_default *defaults,
                const char *const *managed, const struct opt_map *props,
                const struct cfg *cfg, const char *section, int line,
                int col, struct cfg_errors *errs, struct sl_error *err);

/* The sluice log level of a librdkafka log line (syslog level, facility).
 * A failed connection is logged by librdkafka and reported to the error
 * callback as well: the callback's report is the one that is kept. */
int kconf_log_level(int syslog_level, const char *facility);

#endif
