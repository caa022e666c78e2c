/* kconf.c -- librdkafka properties from a pipeline file. */
#include "kconf.h"

#include <string.h>

#include "log.h"

static int listed(const char *const *names, const char *name)
{
    for (size_t i = 0; names[i] != NULL; i++) {
        if (strcmp(names[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

int kconf_apply(rd_kafka_conf_t *conf, const struct kconf_default *defaults,
                const char *const *managed, const struct opt_map *props,
                const struct cfg *cfg, const char *section, int line,
                int col, struct cfg_errors *errs, struct sl_error *err)
{
    char errstr[512];
    int bad = 0;

    for (size_t i = 0; defaults[i].name != NULL; i++) {
        rd_kafka_conf_set(conf, defaults[i].name, defaults[i].value, NULL, 0);
    }
    for (size_t i = 0; i < props->count; i++) {
        const char *why = NULL;
        if (listed(managed, props->keys[i])) {
            why = "is managed by sluice and cannot be set";
        } else if (rd_kafka_conf_set(conf, props->keys[i], props->values[i],
                                     errstr, sizeof(errstr)) !=
                   RD_KAFKA_CONF_OK) {
            /* Some of librdkafka's messages end in a newline. */
            errstr[strcspn(errstr, "\n")] = '\0';
            why = errstr;
        }
        if (why == NULL) {
            continue;
        }
        bad++;
        if (errs != NULL) {
            cfg_errors_add(errs, cfg->path, line, col, section, "`%s` %s",
                           props->keys[i], why);
        } else {
            sl_error_set(err, "%s: `%s` %s", section, props->keys[i], why);
        }
    }
    return bad;
}

int kconf_log_level(int syslog_level, const char *facility)
{
    if (strcmp(facility, "FAIL") == 0) {
        return LOG_DEBUG;
    }
    return syslog_level <= 3 ? LOG_ERROR
           : syslog_level <= 5 ? LOG_WARN
                               : LOG_DEBUG;
}
