/* log.c -- timestamped single-line logging to stderr.
 *
 * Each event is formatted into one buffer and written with one write(2),
 * so lines from librdkafka's threads never interleave with ours. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_INFO;
static int json_format;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

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

static size_t json_escape(char *out, size_t cap, const char *in)
{
    size_t n = 0;

    for (; *in != '\0' && n + 7 < cap; in++) {
        unsigned char c = (unsigned char)*in;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return n;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    char msg[2048], line[4200];
    struct timespec ts;
    struct tm tm;
    char when[32];
    va_list ap;
    int n;

    if (level < min_level) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);

    if (json_format) {
        char escaped[4096];
        json_escape(escaped, sizeof(escaped), msg);
        n = snprintf(line, sizeof(line),
                     "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":\"%s\"}\n",
                     when, ts.tv_nsec / 1000000, level_names[level], escaped);
    } else {
        n = snprintf(line, sizeof(line), "%s.%03ldZ %-5s %s\n", when,
                     ts.tv_nsec / 1000000, level_names[level], msg);
    }
    if (n > (int)sizeof(line) - 1) {
        n = (int)sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* Nowhere left to report it. */
    }
}
