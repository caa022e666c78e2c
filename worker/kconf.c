/* kconf.c -- librdkafka properties from a pipeline file. */
#include "kconf.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
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

/* librdkafka's own property names, read once from the table
 * rd_kafka_conf_properties_show prints (so that they match the linked
 * version): "name | C/P | range | default | importance | description". */
static char **known_names;
static size_t known_count;
static pthread_once_t known_once = PTHREAD_ONCE_INIT;

static void load_known_names(void)
{
    char *text = NULL, *save = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);

    if (mem == NULL) {
        return;
    }
    rd_kafka_conf_properties_show(mem);
    if (fclose(mem) != 0 || text == NULL) {
        free(text);
        return;
    }
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        size_t n = strcspn(line, " |");
        /* Skips the header, the ---- rule and section titles. */
        if (n == 0 || strchr(line, '|') == NULL || line[0] == '-' ||
            strncmp(line, "Property ", 9) == 0) {
            continue;
        }
        char **names = realloc(known_names,
                               (known_count + 1) * sizeof(*names));
        if (names == NULL) {
            break;
        }
        known_names = names;
        if ((known_names[known_count] = strndup(line, n)) != NULL) {
            known_count++;
        }
    }
    free(text);
}

int kconf_apply(rd_kafka_conf_t *conf, const struct kconf_default *defaults,
                const char *const *managed, const struct opt_map *props,
                const struct cfg *cfg, const char *section, int line,
                int col, struct cfg_errors *errs, struct sl_error *err)
{
    char errstr[512], hint[640];
    int bad = 0;

    for (size_t i = 0; defaults[i].name != NULL; i++) {
        rd_kafka_conf_set(conf, defaults[i].name, defaults[i].value, NULL, 0);
    }
    for (size_t i = 0; i < props->count; i++) {
        const char *why = NULL;
        rd_kafka_conf_res_t res = RD_KAFKA_CONF_OK;
        if (listed(managed, props->keys[i])) {
            why = "is managed by sluice and cannot be set";
        } else if ((res = rd_kafka_conf_set(conf, props->keys[i],
                                            props->values[i], errstr,
                                            sizeof(errstr))) !=
                   RD_KAFKA_CONF_OK) {
            /* Some of librdkafka's messages end in a newline. */
            errstr[strcspn(errstr, "\n")] = '\0';
            why = errstr;
        }
        if (why == NULL) {
            continue;
        }
        if (res == RD_KAFKA_CONF_UNKNOWN) {
            pthread_once(&known_once, load_known_names);
            const char *near =
                cfg_closest(props->keys[i], (const char *const *)known_names,
                            known_count);
            if (near != NULL) {
                snprintf(hint, sizeof(hint), "%s; did you mean `%s`?", why,
                         near);
                why = hint;
            }
        }
        bad++;
        if (errs != NULL) {
            /* At the key itself when the loader saw where it is. */
            int kl = line, kc = col;
            cfg_map_key_position(cfg, props, i, &kl, &kc);
            cfg_errors_add(errs, cfg->path, kl, kc, section, "`%s` %s",
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
