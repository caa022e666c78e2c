/* log.h -- one line per event on stderr, as text or JSON.
 *
 * Messages never carry secrets: callers pass names, never values that
 * came from ${ENV} expansion or auth headers. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Returns 0, or -1 for an unknown name ("debug", "info", "warn", "error"
 * or "text", "json"); the settings are process-wide. */
int log_set_level(const char *name);
int log_set_format(const char *name);

void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
