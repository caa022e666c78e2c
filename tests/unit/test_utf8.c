/* test_utf8.c -- the JSON string escape of the texts sluice writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "utf8.h"

static void test_escapes(void **state)
{
    char out[64];

    (void)state;
    assert_int_equal(utf8_json_escape(out, sizeof(out), "a\"b\\c\n\x7f"),
                     strlen("a\\\"b\\\\c\\u000a\\u007f"));
    assert_string_equal(out, "a\\\"b\\\\c\\u000a\\u007f");
    /* UTF-8 as it is; bytes that are not UTF-8 (a stray continuation, a
     * lead byte cut short, 0xff, a surrogate) each become \ufffd. */
    utf8_json_escape(out, sizeof(out),
                     "\xe2\x82\xac|\x80|\xc3(|\xff|\xed\xa0\x80");
    assert_string_equal(out, "\xe2\x82\xac|\\ufffd|\\ufffd(|\\ufffd|"
                             "\\ufffd\\ufffd\\ufffd");
}

/* Cut to fit: never inside an escape or a character. */
static void test_cut_at_a_whole_piece(void **state)
{
    char out[8];

    (void)state;
    assert_int_equal(utf8_json_escape(out, sizeof(out), "abcde\xe2\x82\xac"),
                     5);
    assert_string_equal(out, "abcde");
    assert_int_equal(utf8_json_escape(out, sizeof(out), "ab\n"), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(utf8_json_escape(out, 1, "abc"), 0);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_cut_at_a_whole_piece),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
