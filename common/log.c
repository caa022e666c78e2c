/* log.c -- timestamped single-line logging to stderr.
 *
 * Each event is formatted into one buffer and written with one write(2),
 * so lines from librdkafka's threads never interleave with ours. */
#include "log.h"
#include "utf8.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_INFO;
static int json_format;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* The rate limit's call sites, direct-mapped by format pointer: two
 * sites sharing a slot take turns, which only resets their counts. */
#define LOG_SITES 128
struct log_site {
    const char *fmt;
    uint64_t window_start;
    unsigned lines;
    unsigned long long suppressed;
};
static struct log_site sites[LOG_SITES];
static pthread_mutex_t sites_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned burst = LOG_BURST, window_ms = LOG_WINDOW_MS;

void log_set_rate_limit(unsigned b, unsigned w)
{
    pthread_mutex_lock(&sites_lock);
    burst = b != 0 ? b : LOG_BURST;
    window_ms = w != 0 ? w : LOG_WINDOW_MS;
    memset(sites, 0, sizeof(sites));
    pthread_mutex_unlock(&sites_lock);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* 1 when fmt's line may go out; *suppressed: lines of its site left out
 * since the last one that did. */
static int site_allow(const char *fmt, unsigned long long *suppressed)
{
    uintptr_t h = (uintptr_t)fmt;
    struct log_site *site;
    uint64_t now = mono_ms();
    int allow;

    h ^= h >> 17;
    h *= 0x9e3779b97f4a7c15u;
    site = &sites[(h >> 32) % LOG_SITES];
    pthread_mutex_lock(&sites_lock);
    if (site->fmt != fmt) {
        *site = (struct log_site){.fmt = fmt, .window_start = now};
    } else if (now - site->window_start >= window_ms) {
        site->window_start = now;
        site->lines = 0;
    }
    allow = site->lines < burst;
    if (allow) {
        site->lines++;
        *suppressed = site->suppressed;
        site->suppressed = 0;
    } else {
        site->suppressed++;
    }
    pthread_mutex_unlock(&sites_lock);
    return allow;
}

int log_set_level(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            min_level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_set_format(const char *name)
{
    if (strcmp(name, "text") == 0 || strcmp(name, "json") == 0) {
        json_format = name[0] == 'j';
        return 0;
    }
    return -1;
}

int log_json(void)
{
    return json_format;
}

static void emit(char *line, int n, size_t cap)
{
    if (n < 0) {
        return;
    }
    if (n > (int)cap - 1) {
        n = (int)cap - 1;
        line[n - 1] = '\n';
    }
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* Nowhere left to report it. */
    }
}

static void timestamp(char when[40])
{
    struct timespec ts;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(when, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, 40 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* The fields of f as JSON members, each with a leading comma. */
static size_t put_fields(char *out, size_t cap, const struct log_fields *f)
{
    char esc[600];
    size_t n = 0;

    if (f == NULL) {
        out[0] = '\0';
        return 0;
    }
#define PUT(...)                                                               \
    do {                                                                       \
        int k_ = snprintf(out + n, cap - n, __VA_ARGS__);                      \
        if (k_ > 0 && (size_t)k_ < cap - n) {                                  \
            n += (size_t)k_;                                                   \
        }                                                                      \
    } while (0)
    if (f->sink != NULL) {
        utf8_json_escape(esc, sizeof(esc), f->sink);
        PUT(",\"sink\":\"%s\"", esc);
    }
    if (f->topic != NULL) {
        utf8_json_escape(esc, sizeof(esc), f->topic);
        PUT(",\"topic\":\"%s\",\"partition\":%d,\"offset\":%lld", esc,
            f->partition, f->offset);
    }
    if (f->status != 0) {
        PUT(",\"status\":%d", f->status);
    }
    if (f->trace_id != NULL) {
        PUT(",\"trace_id\":\"%.32s\"", f->trace_id);
    }
    if (f->span_id != NULL) {
        PUT(",\"span_id\":\"%.16s\"", f->span_id);
    }
#undef PUT
    return n;
}

static void vlog(enum log_level level, const struct log_fields *f,
                 const char *fmt, va_list ap)
{
    char msg[2048], line[4800], when[40], more[64] = "";
    unsigned long long suppressed = 0;
    int n;

    if (level < min_level ||
        (level >= LOG_WARN && !site_allow(fmt, &suppressed))) {
        return;
    }
    vsnprintf(msg, sizeof(msg), fmt, ap);
    timestamp(when);
    if (json_format) {
        char escaped[4096], fields[700];
        utf8_json_escape(escaped, sizeof(escaped), msg);
        put_fields(fields, sizeof(fields), f);
        if (suppressed > 0) {
            snprintf(more, sizeof(more), ",\"suppressed\":%llu", suppressed);
        }
        n = snprintf(line, sizeof(line),
                     "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"%s%s}\n",
                     when, level_names[level], escaped, fields, more);
    } else {
        if (suppressed > 0) {
            snprintf(more, sizeof(more), " (%llu similar line(s) suppressed)",
                     suppressed);
        }
        n = snprintf(line, sizeof(line), "%s %-5s %s%s\n", when,
                     level_names[level], msg, more);
    }
    emit(line, n, sizeof(line));
}

void log_write(enum log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, NULL, fmt, ap);
    va_end(ap);
}

void log_event(enum log_level level, const struct log_fields *f,
               const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, f, fmt, ap);
    va_end(ap);
}

void log_write_object(enum log_level level, const char *msg,
                      const char *fields)
{
    char escaped[512], when[40], *line;
    size_t cap;
    int n;

    if (level < min_level) {
        return;
    }
    timestamp(when);
    utf8_json_escape(escaped, sizeof(escaped), msg);
    cap = strlen(fields) + sizeof(escaped) + 128;
    line = malloc(cap);
    if (line == NULL) {
        return;
    }
    n = snprintf(line, cap, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"%s%s}\n",
                 when, level_names[level], escaped, fields[0] ? "," : "",
                 fields);
    emit(line, n, cap);
    free(line);
}
