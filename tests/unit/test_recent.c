/* test_recent.c -- the cache of keys sinks succeeded at lately. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "recent.h"

static void add(recent_t *r, const char *key, size_t len, uint64_t sinks)
{
    recent_add(r, key, len, recent_hash(r, key, len), sinks);
}

static uint64_t get(const recent_t *r, const char *key, size_t len)
{
    return recent_get(r, key, len, recent_hash(r, key, len));
}

static void test_add_get(void **state)
{
    recent_t *r = recent_new(100);

    (void)state;
    assert_non_null(r);
    assert_int_equal(get(r, "order-1", 7), 0);
    add(r, "order-1", 7, 1u << 2);
    add(r, "order-1", 7, 1u << 0);
    assert_int_equal(get(r, "order-1", 7), (1u << 2) | (1u << 0));
    /* A prefix, a longer key, another key: never the entry's sinks. */
    assert_int_equal(get(r, "order-", 6), 0);
    assert_int_equal(get(r, "order-10", 8), 0);
    assert_int_equal(get(r, "order-2", 7), 0);
    recent_free(r);
}

/* Full of other keys, the cache forgets, and never answers for a key it
 * does not hold: a wrong yes would skip a message. */
static void test_forgets_never_errs(void **state)
{
    recent_t *r = recent_new(64);
    char key[32];
    int found = 0;

    (void)state;
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(key, sizeof(key), "k%d", i);
        add(r, key, (size_t)n, (uint64_t)1 << (i % 64));
    }
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(key, sizeof(key), "k%d", i);
        uint64_t got = get(r, key, (size_t)n);
        assert_true(got == 0 || got == (uint64_t)1 << (i % 64));
        found += got != 0;
    }
    assert_true(found > 0 && found <= 64);
    /* The last keys added are all still there: a set keeps its four
     * newest. */
    for (int i = 10000 - 4; i < 10000; i++) {
        int n = snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(get(r, key, (size_t)n), (uint64_t)1 << (i % 64));
    }
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(key, sizeof(key), "x%d", i);
        assert_int_equal(get(r, key, (size_t)n), 0);
    }
    recent_free(r);
}

/* Two order ids that shared the one slot of a direct-mapped cache of
 * this size: the second evicted the first, and a producer's duplicate of
 * the first went out again (seen under ASan). */
static void test_one_other_key_does_not_evict(void **state)
{
    recent_t *r = recent_new(10000);

    (void)state;
    add(r, "ord-000000413", 13, 1);
    add(r, "ord-000000039", 13, 1);
    add(r, "ord-000000418", 13, 2);
    add(r, "ord-000000032", 13, 2);
    assert_int_equal(get(r, "ord-000000413", 13), 1);
    assert_int_equal(get(r, "ord-000000418", 13), 2);
    recent_free(r);
}

static void test_long_keys_not_kept(void **state)
{
    recent_t *r = recent_new(64);
    char key[RECENT_KEY_MAX + 2];

    (void)state;
    memset(key, 'a', sizeof(key));
    add(r, key, RECENT_KEY_MAX, 1);
    assert_int_equal(get(r, key, RECENT_KEY_MAX), 1);
    add(r, key, RECENT_KEY_MAX + 1, 2);
    assert_int_equal(get(r, key, RECENT_KEY_MAX + 1), 0);
    recent_free(r);
}

/* Keys whose hashes agree in every bit (the caller passes the hash):
 * the tag matches, the key does not, and the answer is no. */
static void test_equal_hashes_are_told_apart(void **state)
{
    recent_t *r = recent_new(64);

    (void)state;
    recent_add(r, "order-1", 7, 42, 1);
    assert_int_equal(recent_get(r, "order-2", 7, 42), 0);
    assert_int_equal(recent_get(r, "order-1", 7, 42), 1);
    recent_add(r, "order-2", 7, 42, 2);
    assert_int_equal(recent_get(r, "order-1", 7, 42), 1);
    assert_int_equal(recent_get(r, "order-2", 7, 42), 2);
    /* An empty key is never kept (an empty slot's tag reads as its). */
    add(r, "", 0, 4);
    assert_int_equal(get(r, "", 0), 0);
    recent_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_get),
        cmocka_unit_test(test_forgets_never_errs),
        cmocka_unit_test(test_one_other_key_does_not_evict),
        cmocka_unit_test(test_long_keys_not_kept),
        cmocka_unit_test(test_equal_hashes_are_told_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
