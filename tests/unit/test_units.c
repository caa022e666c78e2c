/* test_units.c -- durations and sizes: units, bare numbers, overflow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "units.h"

static void test_durations(void **state)
{
    int64_t ms;

    (void)state;
    assert_int_equal(units_parse_duration("500ms", &ms), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(units_parse_duration("5s", &ms), 0);
    assert_int_equal(ms, 5000);
    assert_int_equal(units_parse_duration("2m", &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(units_parse_duration("1h", &ms), 0);
    assert_int_equal(ms, 3600000);
    assert_int_equal(units_parse_duration("0", &ms), 0);
    assert_int_equal(ms, 0);
    /* A bare number is ambiguous: a unit is required. */
    assert_int_equal(units_parse_duration("5", &ms), -1);
    assert_int_equal(units_parse_duration("5q", &ms), -1);
    assert_int_equal(units_parse_duration("-5s", &ms), -1);
    assert_int_equal(units_parse_duration("", &ms), -1);
    assert_int_equal(units_parse_duration("s", &ms), -1);
    assert_int_equal(units_parse_duration("99999999999999999h", &ms), -1);
}

static void test_sizes(void **state)
{
    int64_t b;

    (void)state;
    assert_int_equal(units_parse_size("4096", &b), 0);
    assert_int_equal(b, 4096);
    assert_int_equal(units_parse_size("512KiB", &b), 0);
    assert_int_equal(b, 512 * 1024);
    assert_int_equal(units_parse_size("64MiB", &b), 0);
    assert_int_equal(b, 64 * 1024 * 1024);
    assert_int_equal(units_parse_size("1GB", &b), 0);
    assert_int_equal(b, 1000000000);
    assert_int_equal(units_parse_size("1 MiB", &b), -1);
    assert_int_equal(units_parse_size("MiB", &b), -1);
    assert_int_equal(units_parse_size("99999999999GiB", &b), -1);
}

static void test_ints(void **state)
{
    int64_t v;

    (void)state;
    assert_int_equal(units_parse_int("-42", &v), 0);
    assert_int_equal(v, -42);
    assert_int_equal(units_parse_int("9223372036854775807", &v), 0);
    assert_int_equal(units_parse_int("9223372036854775808", &v), -1);
    assert_int_equal(units_parse_int("12x", &v), -1);
    assert_int_equal(units_parse_int("", &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_ints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
