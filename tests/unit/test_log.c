/* test_log.c -- the per-call-site rate limit of warnings and errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* Runs fn with stderr going to a file; returns what it wrote (free it). */
static char *captured(void (*fn)(void))
{
    char path[] = "/tmp/test_log.XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(STDERR_FILENO);
    char *out = calloc(1, 1 << 20);

    assert_true(fd >= 0 && saved >= 0 && out != NULL);
    unlink(path);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, out, (1 << 20) - 1);
    assert_true(n >= 0);
    close(fd);
    return out;
}

static size_t count(const char *text, const char *needle)
{
    size_t n = 0;

    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++) {
        n++;
    }
    return n;
}

static void flood(void)
{
    for (int i = 0; i < 1000; i++) {
        log_warn("record %d failed", i);
        log_error("another site %d", i);
    }
    log_info("info is %s", "not limited");
    for (int i = 0; i < 30; i++) {
        log_info("info line %d", i);
    }
}

static void test_a_flood_is_cut_per_call_site(void **state)
{
    (void)state;
    log_set_format("text");
    log_set_rate_limit(0, 0);
    char *out = captured(flood);
    assert_int_equal(count(out, "failed\n"), LOG_BURST);
    assert_int_equal(count(out, "another site"), LOG_BURST);
    assert_int_equal(count(out, "info line"), 30);
    assert_int_equal(count(out, "suppressed"), 0);
    free(out);
}

static void after_the_window(void)
{
    struct timespec pause = {0, 60 * 1000 * 1000};

    for (int i = 0; i < 5; i++) {
        log_warn("retry %d", i);
    }
    nanosleep(&pause, NULL);
    log_warn("retry %d", 99);
}

static void test_the_next_line_counts_what_was_left_out(void **state)
{
    (void)state;
    log_set_format("text");
    log_set_rate_limit(2, 50);
    char *out = captured(after_the_window);
    assert_int_equal(count(out, "retry "), 3);
    assert_non_null(strstr(out, "retry 99 (3 similar line(s) suppressed)\n"));
    free(out);

    log_set_format("json");
    log_set_rate_limit(2, 50);
    out = captured(after_the_window);
    assert_non_null(strstr(out, "\"msg\":\"retry 99\",\"suppressed\":3}\n"));
    free(out);
    log_set_format("text");
    log_set_rate_limit(0, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_flood_is_cut_per_call_site),
        cmocka_unit_test(test_the_next_line_counts_what_was_left_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
