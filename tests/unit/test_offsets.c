/* test_offsets.c -- the commit watermark: gaps, out-of-order completion,
 * growth of the ring, and never passing an incomplete offset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "offsets.h"

static void test_empty_has_nothing_to_commit(void **state)
{
    offsets_t *t = offsets_new();

    (void)state;
    assert_int_equal(offsets_committable(t), -1);
    assert_int_equal(offsets_pending(t), 0);
    offsets_destroy(t);
    offsets_destroy(NULL);
}

static void test_in_order_completion(void **state)
{
    offsets_t *t = offsets_new();
    uint64_t s[3];

    (void)state;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(offsets_track(t, 10 + i, &s[i]), 0);
    }
    assert_int_equal(offsets_committable(t), 10);
    offsets_done(t, s[0]);
    assert_int_equal(offsets_committable(t), 11);
    offsets_done(t, s[1]);
    offsets_done(t, s[2]);
    assert_int_equal(offsets_committable(t), 13);
    assert_int_equal(offsets_pending(t), 0);
    offsets_destroy(t);
}

static void test_out_of_order_never_passes_incomplete(void **state)
{
    offsets_t *t = offsets_new();
    uint64_t s[5];

    (void)state;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(offsets_track(t, i, &s[i]), 0);
    }
    offsets_done(t, s[4]);
    offsets_done(t, s[2]);
    offsets_done(t, s[1]);
    assert_int_equal(offsets_committable(t), 0); /* 0 still incomplete */
    offsets_done(t, s[0]);
    assert_int_equal(offsets_committable(t), 3); /* 3 incomplete */
    offsets_done(t, s[3]);
    assert_int_equal(offsets_committable(t), 5);
    offsets_destroy(t);
}

static void test_gaps_in_offsets(void **state)
{
    offsets_t *t = offsets_new();
    uint64_t a, b, c;

    (void)state;
    /* Compaction and transaction markers leave gaps. */
    assert_int_equal(offsets_track(t, 5, &a), 0);
    assert_int_equal(offsets_track(t, 7, &b), 0);
    assert_int_equal(offsets_track(t, 10, &c), 0);
    offsets_done(t, b);
    offsets_done(t, c);
    assert_int_equal(offsets_committable(t), 5);
    offsets_done(t, a);
    assert_int_equal(offsets_committable(t), 11);
    offsets_destroy(t);
}

static void test_rejects_non_increasing(void **state)
{
    offsets_t *t = offsets_new();
    uint64_t s;

    (void)state;
    assert_int_equal(offsets_track(t, 5, &s), 0);
    assert_int_equal(offsets_track(t, 5, &s), -1);
    assert_int_equal(offsets_track(t, 4, &s), -1);
    assert_int_equal(offsets_committable(t), 5);
    offsets_destroy(t);
}

static void test_double_done_is_noop(void **state)
{
    offsets_t *t = offsets_new();
    uint64_t a, b;

    (void)state;
    offsets_track(t, 1, &a);
    offsets_track(t, 2, &b);
    offsets_done(t, a);
    offsets_done(t, a);
    assert_int_equal(offsets_committable(t), 2);
    offsets_done(t, b);
    offsets_done(t, b);
    assert_int_equal(offsets_committable(t), 3);
    offsets_destroy(t);
}

/* Many slots, completed in a scrambled order while the ring grows and
 * wraps: the watermark always equals the lowest incomplete offset. */
static void test_growth_and_wrap_against_model(void **state)
{
    enum { N = 5000 };
    offsets_t *t = offsets_new();
    uint64_t *slots = calloc(N, sizeof(*slots));
    int *done = calloc(N, sizeof(*done));
    int tracked = 0, lowest = 0;
    unsigned rng = 12345;

    (void)state;
    while (lowest < N) {
        /* Track a few more, complete a random pending one. */
        for (int k = 0; k < 3 && tracked < N; k++, tracked++) {
            assert_int_equal(offsets_track(t, 2 * tracked, &slots[tracked]),
                             0);
        }
        rng = rng * 1103515245u + 12345u;
        int span = tracked - lowest;
        if (span > 0) {
            int pick = lowest + (int)((rng >> 8) % (unsigned)span);
            offsets_done(t, slots[pick]);
            done[pick] = 1;
        }
        while (lowest < tracked && done[lowest]) {
            lowest++;
        }
        int64_t expect = lowest < tracked ? 2 * lowest : 2 * (tracked - 1) + 1;
        assert_int_equal(offsets_committable(t), expect);
        if (tracked == N && lowest < N) {
            offsets_done(t, slots[lowest]);
            done[lowest] = 1;
        }
    }
    assert_int_equal(offsets_committable(t), 2 * (N - 1) + 1);
    free(slots);
    free(done);
    offsets_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_has_nothing_to_commit),
        cmocka_unit_test(test_in_order_completion),
        cmocka_unit_test(test_out_of_order_never_passes_incomplete),
        cmocka_unit_test(test_gaps_in_offsets),
        cmocka_unit_test(test_rejects_non_increasing),
        cmocka_unit_test(test_double_done_is_noop),
        cmocka_unit_test(test_growth_and_wrap_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
