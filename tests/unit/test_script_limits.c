/* test_script_limits.c -- the budget as C code sees it: script_charge
 * ends a C loop by the instruction budget or by lua.time_limit and keeps
 * the call failed once it has; it is a no-op outside a call; memory from
 * script_c_alloc counts against the cap; xpcall keeps its semantics while
 * its handler runs under the budget. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "script.h"

static script_t *make(int64_t instructions, int64_t time_limit_ms)
{
    struct script_limits limits = {.memory_bytes = 8u << 20,
                                   .instructions = instructions,
                                   .time_limit_ms = time_limit_ms};
    const char *dirs[] = {NULL};
    struct sl_error err;
    script_t *s = script_new(&limits, dirs, &err);

    assert_non_null(s);
    return s;
}

/* A C loop that only ever charges: without script_charge's error it
 * would never end. */
static int spin(lua_State *L)
{
    lua_Integer work = luaL_optinteger(L, 1, 64);

    for (;;) {
        script_charge(L, (size_t)work);
    }
    return 0;
}

static int run(script_t *s, const char *text, struct sl_error *err)
{
    lua_State *L = script_state(s);

    if (luaL_loadstring(L, text) != LUA_OK) {
        sl_error_set(err, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return script_pcall(s, 0, 0, err);
}

static void ok(script_t *s, const char *text)
{
    struct sl_error err;

    if (run(s, text, &err) != 0) {
        fail_msg("%s: %s", text, err.msg);
    }
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_charge_ends_a_c_loop_by_the_budget(void **state)
{
    script_t *s = make(1000000, 0);
    struct sl_error err;

    (void)state;
    lua_register(script_state(s), "spin", spin);
    assert_int_equal(run(s, "spin()", &err), -1);
    assert_non_null(strstr(err.msg, "instruction budget exceeded"));
    /* Caught by pcall, the call stays failed: the next instruction (or
     * charge) raises again. */
    assert_int_equal(run(s, "pcall(spin) pcall(spin) local x = 1", &err),
                     -1);
    assert_non_null(strstr(err.msg, "budget exceeded"));
    ok(s, "assert(1 + 1 == 2)"); /* the next call has a fresh budget */
    script_destroy(s);
}

static void test_charge_ends_a_c_loop_by_the_time_limit(void **state)
{
    script_t *s = make((int64_t)1 << 40, 100);
    struct sl_error err;
    double start = now_s();

    (void)state;
    lua_register(script_state(s), "spin", spin);
    assert_int_equal(run(s, "spin(0)", &err), -1);
    assert_non_null(strstr(err.msg, "time budget exceeded "
                                    "(lua.time_limit 100 ms)"));
    assert_true(now_s() - start < 5);
    /* Lua code as well: the hook reads the clock. */
    start = now_s();
    assert_int_equal(run(s, "while true do end", &err), -1);
    assert_non_null(strstr(err.msg, "time budget exceeded"));
    assert_true(now_s() - start < 5);
    ok(s, "assert(true)");
    script_destroy(s);
}

static void test_charge_outside_a_call_is_a_no_op(void **state)
{
    script_t *s = make(1000, 0);

    (void)state;
    script_charge(script_state(s), (size_t)1 << 40); /* must not raise */
    ok(s, "assert(true)");
    script_destroy(s);
}

static void test_c_memory_counts_against_the_cap(void **state)
{
    script_t *s = make(0, 0);
    lua_State *L = script_state(s);
    size_t before = script_memory(s);

    (void)state;
    void *p = script_c_alloc(L, 1u << 20);
    assert_non_null(p);
    memset(p, 1, 1u << 20);
    assert_true(script_memory(s) >= before + (1u << 20));
    p = script_c_realloc(L, p, 1u << 20, 2u << 20);
    assert_non_null(p);
    assert_true(script_memory(s) >= before + (2u << 20));
    /* Past the 8 MiB cap: refused, and the block is still ours. */
    assert_null(script_c_alloc(L, 16u << 20));
    assert_null(script_c_realloc(L, p, 2u << 20, 16u << 20));
    script_c_free(L, p, 2u << 20);
    assert_int_equal(script_memory(s), before);
    script_destroy(s);
}

static void test_xpcall_keeps_its_semantics(void **state)
{
    script_t *s = make(1000000, 0);
    struct sl_error err;

    (void)state;
    ok(s, "local ok, a, b = xpcall(function(x) return x, 2 end, error, 1)\n"
          "assert(ok == true and a == 1 and b == 2)");
    ok(s, "local ok, m = xpcall(error, function(e) return 'h:' .. e end,"
          " 'boom', 0)\n"
          "assert(ok == false and m == 'h:boom', m)");
    ok(s, "local ok, m = xpcall(error, function(e) error('again', 0) end,"
          " 'x')\n"
          "assert(ok == false and m == 'again', m)");
    ok(s, "assert(select('#', xpcall(function() end, error)) == 1)");
    /* Yields cross it, as with the stock xpcall. */
    ok(s, "local co = coroutine.wrap(function()\n"
          "  return xpcall(function() coroutine.yield(1) return 2 end,"
          " error)\n"
          "end)\n"
          "assert(co() == 1)\n"
          "local ok, v = co()\n"
          "assert(ok == true and v == 2)");
    /* A handler that loops is ended by the budget, not run hook-free. */
    assert_int_equal(run(s, "xpcall(function() while true do end end,"
                            " function() while true do end end)", &err),
                     -1);
    assert_non_null(strstr(err.msg, "instruction budget exceeded"));
    ok(s, "assert(true)");
    script_destroy(s);
}

static void test_runaway_recursion_ends_fast(void **state)
{
    script_t *s = make(0, 0);
    struct sl_error err;
    double start = now_s();

    (void)state;
    assert_int_equal(run(s, "local function f() return 1 + f() end f()",
                         &err),
                     -1);
    assert_non_null(strstr(err.msg, "stack overflow"));
    /* Lua's own stack limit took 11-13 s to reach. */
    assert_true(now_s() - start < 3);
    ok(s, "local function f(n) if n == 0 then return 0 end "
          "return 1 + f(n - 1) end assert(f(500) == 500)");
    script_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_charge_ends_a_c_loop_by_the_budget),
        cmocka_unit_test(test_charge_ends_a_c_loop_by_the_time_limit),
        cmocka_unit_test(test_charge_outside_a_call_is_a_no_op),
        cmocka_unit_test(test_c_memory_counts_against_the_cap),
        cmocka_unit_test(test_xpcall_keeps_its_semantics),
        cmocka_unit_test(test_runaway_recursion_ends_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
