/* test_redact.c -- secrets out of text that goes to the DLQ and logs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "redact.h"

static void apply(const redact_t *r, const char *in, size_t cap,
                  const char *want, size_t want_n)
{
    char buf[256];
    size_t len = strlen(in);

    memcpy(buf, in, len);
    assert_int_equal(redact_apply(r, buf, &len, cap), want_n);
    assert_true(len <= cap);
    buf[len] = '\0';
    assert_string_equal(buf, want);
}

static void test_whole_values_and_words(void **state)
{
    redact_t *r = redact_new(NULL);

    (void)state;
    assert_non_null(r);
    assert_int_equal(redact_add(r, "Bearer sk-live-123456"), 0);
    assert_int_equal(redact_add(r, ""), 0); /* nothing to hide */
    apply(r, "{\"authorization\":\"Bearer sk-live-123456\"}", 200,
          "{\"authorization\":\"[redacted]\"}", 1);
    /* The token alone, as a sink may echo it. */
    apply(r, "bad token sk-live-123456 and sk-live-123456", 200,
          "bad token [redacted] and [redacted]", 2);
    /* Short words ("Bearer" is 6 bytes, kept as a word: harmless) and
     * text without secrets pass as they are. */
    apply(r, "nothing here", 200, "nothing here", 0);
    redact_free(r);
    redact_free(NULL);
}

static void test_cut_to_cap(void **state)
{
    redact_t *r = redact_new(NULL);

    (void)state;
    assert_int_equal(redact_add(r, "tok"), 0);
    /* The mark is longer than the secret: what does not fit is cut, and
     * never a part of the secret is left. */
    apply(r, "aaaa tok bbbb", 16, "aaaa [redacted] ", 1);
    apply(r, "aaaaaaaaaaa tok", 14, "aaaaaaaaaaa ", 1);
    redact_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_values_and_words),
        cmocka_unit_test(test_cut_to_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
