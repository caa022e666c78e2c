/* test_dlqcmd.c -- `sluice dlq`'s pure pieces: --since, positions,
 * statuses, reasons, ages and escaping of untrusted bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dlqcmd.h"

#define NOW 1700000000000LL

static void test_since(void **state)
{
    int64_t t = -1;

    (void)state;
    assert_int_equal(dlqcmd_parse_since("30m", NOW, &t), 0);
    assert_int_equal(t, NOW - 30 * 60000);
    assert_int_equal(dlqcmd_parse_since("2h", NOW, &t), 0);
    assert_int_equal(t, NOW - 2 * 3600000);
    assert_int_equal(dlqcmd_parse_since("90s", NOW, &t), 0);
    assert_int_equal(t, NOW - 90000);
    assert_int_equal(dlqcmd_parse_since("500ms", NOW, &t), 0);
    assert_int_equal(t, NOW - 500);
    assert_int_equal(dlqcmd_parse_since("7d", NOW, &t), 0);
    assert_int_equal(t, NOW - 7 * 86400000LL);
    assert_int_equal(dlqcmd_parse_since("0s", NOW, &t), 0);
    assert_int_equal(t, NOW);
    /* Epoch milliseconds: 13 digits or more. */
    assert_int_equal(dlqcmd_parse_since("1690000000000", NOW, &t), 0);
    assert_int_equal(t, 1690000000000LL);
    /* Further back than 1970: everything. */
    assert_int_equal(dlqcmd_parse_since("1000000d", NOW, &t), 0);
    assert_int_equal(t, 0);
    /* A bare small number is a missing unit, not 1970. */
    t = 42;
    assert_int_equal(dlqcmd_parse_since("30", NOW, &t), -1);
    assert_int_equal(dlqcmd_parse_since("0", NOW, &t), -1);
    assert_int_equal(dlqcmd_parse_since("169000000000", NOW, &t), -1);
    assert_int_equal(t, 42);
    assert_int_equal(dlqcmd_parse_since("", NOW, &t), -1);
    assert_int_equal(dlqcmd_parse_since("-5m", NOW, &t), -1);
    assert_int_equal(dlqcmd_parse_since("5 m", NOW, &t), -1);
    assert_int_equal(dlqcmd_parse_since("d", NOW, &t), -1);
    assert_int_equal(dlqcmd_parse_since("5w", NOW, &t), -1);
    assert_int_equal(dlqcmd_parse_since("yesterday", NOW, &t), -1);
    assert_int_equal(dlqcmd_parse_since("99999999999999999999d", NOW, &t),
                     -1);
    assert_int_equal(dlqcmd_parse_since("999999999999999d", NOW, &t), -1);
    assert_int_equal(dlqcmd_parse_since("99999999999999999999999", NOW, &t),
                     -1);
    assert_int_equal(dlqcmd_parse_since("2024-01-01", NOW, &t), -1);
    assert_int_equal(t, 42);
}

static void test_positions(void **state)
{
    int32_t p = -1;
    int64_t o = -1;

    (void)state;
    assert_int_equal(dlqcmd_parse_position("3:17", &p, &o), 0);
    assert_int_equal(p, 3);
    assert_int_equal(o, 17);
    assert_int_equal(dlqcmd_parse_position("42", &p, &o), 0);
    assert_int_equal(p, 0);
    assert_int_equal(o, 42);
    assert_int_equal(dlqcmd_parse_position("0:9223372036854775807", &p, &o),
                     0);
    assert_int_equal(o, INT64_MAX);
    assert_int_equal(dlqcmd_parse_position("", &p, &o), -1);
    assert_int_equal(dlqcmd_parse_position(":5", &p, &o), -1);
    assert_int_equal(dlqcmd_parse_position("5:", &p, &o), -1);
    assert_int_equal(dlqcmd_parse_position("-1:5", &p, &o), -1);
    assert_int_equal(dlqcmd_parse_position("1:-5", &p, &o), -1);
    assert_int_equal(dlqcmd_parse_position("1:2:3", &p, &o), -1);
    assert_int_equal(dlqcmd_parse_position("a:1", &p, &o), -1);
    assert_int_equal(dlqcmd_parse_position("2147483648:1", &p, &o), -1);
    assert_int_equal(dlqcmd_parse_position("0:9223372036854775808", &p, &o),
                     -1);
    assert_int_equal(dlqcmd_parse_position("+1", &p, &o), -1);
    assert_int_equal(dlqcmd_parse_position("1 ", &p, &o), -1);
}

static void test_status(void **state)
{
    (void)state;
    assert_int_equal(dlqcmd_parse_status("400", 3), 400);
    assert_int_equal(dlqcmd_parse_status("503xyz", 3), 503);
    assert_int_equal(dlqcmd_parse_status(NULL, 0), DLQCMD_STATUS_NONE);
    assert_int_equal(dlqcmd_parse_status("", 0), DLQCMD_STATUS_BAD);
    assert_int_equal(dlqcmd_parse_status("0", 1), DLQCMD_STATUS_BAD);
    assert_int_equal(dlqcmd_parse_status("4000", 4), DLQCMD_STATUS_BAD);
    assert_int_equal(dlqcmd_parse_status("4\0000", 3), DLQCMD_STATUS_BAD);
    assert_int_equal(dlqcmd_parse_status("-40", 3), DLQCMD_STATUS_BAD);
    assert_int_equal(dlqcmd_parse_status("40 ", 3), DLQCMD_STATUS_BAD);
}

static void test_reason_key(void **state)
{
    char out[64];

    (void)state;
    assert_string_equal(dlqcmd_reason_key(out, sizeof(out), "rejected", 400),
                        "rejected 400");
    assert_string_equal(
        dlqcmd_reason_key(out, sizeof(out), "transform_error",
                          DLQCMD_STATUS_NONE),
        "transform_error");
    assert_string_equal(
        dlqcmd_reason_key(out, sizeof(out), "deadline", DLQCMD_STATUS_BAD),
        "deadline ?");
    assert_string_equal(
        dlqcmd_reason_key(out, sizeof(out), NULL, DLQCMD_STATUS_NONE), "?");
    assert_string_equal(dlqcmd_reason_key(out, sizeof(out), NULL, 502),
                        "? 502");
    /* Cut, never overrun. */
    assert_string_equal(dlqcmd_reason_key(out, 6, "rejected", 400), "rejec");
}

static void test_reason_matches(void **state)
{
    (void)state;
    assert_true(dlqcmd_reason_matches("rejected", "rejected", 400));
    assert_true(dlqcmd_reason_matches("400", "rejected", 400));
    assert_true(dlqcmd_reason_matches("4xx", "rejected", 400));
    assert_true(dlqcmd_reason_matches("4XX", "rejected", 422));
    assert_true(dlqcmd_reason_matches("rejected 400", "rejected", 400));
    assert_true(dlqcmd_reason_matches("5xx", "deadline", 503));
    assert_true(dlqcmd_reason_matches("transform_error", "transform_error",
                                      DLQCMD_STATUS_NONE));
    assert_true(dlqcmd_reason_matches("?", NULL, DLQCMD_STATUS_NONE));

    assert_false(dlqcmd_reason_matches("rejected", "deadline", 503));
    assert_false(dlqcmd_reason_matches("400", "rejected", 422));
    assert_false(dlqcmd_reason_matches("5xx", "rejected", 400));
    assert_false(dlqcmd_reason_matches("rejected 422", "rejected", 400));
    assert_false(dlqcmd_reason_matches("4xx", "transform_error",
                                       DLQCMD_STATUS_NONE));
    assert_false(dlqcmd_reason_matches("4xx", "rejected", DLQCMD_STATUS_BAD));
    assert_false(dlqcmd_reason_matches("0xx", "rejected", 40));
    assert_false(dlqcmd_reason_matches("xx", "rejected", 400));
    assert_false(dlqcmd_reason_matches("4x", "rejected", 400));
    assert_false(dlqcmd_reason_matches("reject", "rejected", 400));
    assert_false(dlqcmd_reason_matches("rejected", NULL, 400));
    assert_false(dlqcmd_reason_matches("0400", "rejected", 400));
}

static void test_age(void **state)
{
    char out[32];

    (void)state;
    assert_string_equal(dlqcmd_format_age(out, sizeof(out), 0), "0s");
    assert_string_equal(dlqcmd_format_age(out, sizeof(out), 999), "0s");
    assert_string_equal(dlqcmd_format_age(out, sizeof(out), -5000), "0s");
    assert_string_equal(dlqcmd_format_age(out, sizeof(out), 45000), "45s");
    assert_string_equal(dlqcmd_format_age(out, sizeof(out), 192000),
                        "3m12s");
    assert_string_equal(dlqcmd_format_age(out, sizeof(out), 3600000), "1h0m");
    assert_string_equal(dlqcmd_format_age(out, sizeof(out), 7500000),
                        "2h5m");
    assert_string_equal(dlqcmd_format_age(out, sizeof(out),
                                          3 * 86400000LL + 4 * 3600000),
                        "3d4h");
    assert_string_equal(dlqcmd_format_age(out, sizeof(out), INT64_MAX),
                        "106751991167d7h");
}

static void test_escape(void **state)
{
    char out[64];

    (void)state;
    assert_int_equal(dlqcmd_escape(out, sizeof(out), "plain text", 10, 0), 0);
    assert_string_equal(out, "plain text");
    dlqcmd_escape(out, sizeof(out), "a\0b\x1b[31m\x7f", 9, 0);
    assert_string_equal(out, "a\\x00b\\x1b[31m\\x7f");
    dlqcmd_escape(out, sizeof(out), "back\\slash", 10, 0);
    assert_string_equal(out, "back\\\\slash");
    dlqcmd_escape(out, sizeof(out), "l1\nl2\tx\r", 8, 0);
    assert_string_equal(out, "l1\\nl2\\tx\\r");
    dlqcmd_escape(out, sizeof(out), "l1\nl2\tx\r", 8, DLQCMD_ESC_NEWLINES);
    assert_string_equal(out, "l1\nl2\tx\\r");
    /* UTF-8 text stays; invalid, overlong, surrogates and C1 do not. */
    dlqcmd_escape(out, sizeof(out), "caf\xc3\xa9 \xe2\x82\xac", 9, 0);
    assert_string_equal(out, "caf\xc3\xa9 \xe2\x82\xac");
    dlqcmd_escape(out, sizeof(out), "\xff\xc3", 2, 0);
    assert_string_equal(out, "\\xff\\xc3");
    dlqcmd_escape(out, sizeof(out), "\xc0\xaf", 2, 0);
    assert_string_equal(out, "\\xc0\\xaf");
    dlqcmd_escape(out, sizeof(out), "\xed\xa0\x80", 3, 0);
    assert_string_equal(out, "\\xed\\xa0\\x80");
    dlqcmd_escape(out, sizeof(out), "\xc2\x9b", 2, 0);
    assert_string_equal(out, "\\xc2\\x9b");
    /* Text that would reorder what follows it on a terminal. */
    dlqcmd_escape(out, sizeof(out), "\xe2\x80\xae" "abc", 6, 0);
    assert_string_equal(out, "\\u202eabc");
    dlqcmd_escape(out, sizeof(out), "", 0, 0);
    assert_string_equal(out, "");
}

static void test_escape_cuts(void **state)
{
    char out[8];
    char big[4096];

    (void)state;
    /* Exactly fits: not cut. */
    assert_int_equal(dlqcmd_escape(out, sizeof(out), "1234567", 7, 0), 0);
    assert_string_equal(out, "1234567");
    assert_int_equal(dlqcmd_escape(out, sizeof(out), "12345678", 8, 0), 1);
    assert_string_equal(out, "1234...");
    /* An escape is never split. */
    assert_int_equal(dlqcmd_escape(out, sizeof(out), "ab\x01\x02", 4, 0), 1);
    assert_string_equal(out, "ab...");
    /* Nor is a UTF-8 character. */
    assert_int_equal(
        dlqcmd_escape(out, sizeof(out), "abc\xe2\x82\xac\xe2\x82\xac", 9, 0),
        1);
    assert_string_equal(out, "abc...");
    memset(big, 0, sizeof(big));
    assert_int_equal(dlqcmd_escape(out, 4, big, sizeof(big), 0), 1);
    assert_string_equal(out, "...");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_since),
        cmocka_unit_test(test_positions),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_reason_key),
        cmocka_unit_test(test_reason_matches),
        cmocka_unit_test(test_age),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_escape_cuts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
