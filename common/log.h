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

/* Warnings and errors are rate-limited per call site (per format
 * string): at most LOG_BURST lines in each LOG_WINDOW_MS, then the rest
 * are counted, and the site's next line says how many were left out
 * (` (N similar line(s) suppressed)`; "suppressed": N under JSON). A
 * failure that repeats for every message cannot flood the log. */
#define LOG_BURST 20
#define LOG_WINDOW_MS 10000
/* For tests: another burst and window (0, 0: the defaults). */
void log_set_rate_limit(unsigned burst, unsigned window_ms);

/* What a line is about. Under --log-format json each set field becomes a
 * key of the line's object (a text line has them in its message). */
struct log_fields {
    const char *sink;  /* NULL: none */
    const char *topic; /* NULL: none (then partition and offset too) */
    int partition;
    long long offset;
    int status;       /* an HTTP status; 0: none */
    const char *trace_id, *span_id; /* NULL: none */
};

void log_event(enum log_level level, const struct log_fields *f,
               const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* 1 under --log-format json. */
int log_json(void);

/* A JSON line whose keys are ts, level, msg and then fields: the members
 * of one JSON object, without its braces (e.g. "\"a\":1,\"b\":2"), that
 * the caller wrote. */
void log_write_object(enum log_level level, const char *msg,
                      const char *fields);

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
