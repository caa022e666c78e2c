/* test_script.c -- the Lua sandbox: every way out is closed, every limit
 * ends only the call that broke it, and errors name file and line. */
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
#include <sys/stat.h>
#include <unistd.h>

#include "script.h"

static char dir[64];

static void write_file(const char *name, const char *text)
{
    char path[256];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int setup(void **state)
{
    struct script_limits limits = {.memory_bytes = 8u << 20,
                                   .instructions = 1000000};
    const char *dirs[] = {dir, NULL};
    struct sl_error err;

    snprintf(dir, sizeof(dir), "/tmp/sluice-test-script-XXXXXX");
    assert_non_null(mkdtemp(dir));
    *state = script_new(&limits, dirs, &err);
    assert_non_null(*state);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];

    script_destroy(*state);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* Runs text as a chunk; returns 0 or -1 with err. */
static int run(script_t *s, const char *text, struct sl_error *err)
{
    lua_State *L = script_state(s);

    if (luaL_loadbufferx(L, text, strlen(text), "=test", "t") != LUA_OK) {
        sl_error_set(err, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return script_pcall(s, 0, 0, err);
}

static void assert_true_in_lua(script_t *s, const char *expr)
{
    char text[512];
    struct sl_error err;

    snprintf(text, sizeof(text), "assert(%s, [[%s]])", expr, expr);
    if (run(s, text, &err) != 0) {
        fail_msg("%s", err.msg);
    }
}

static void test_no_way_out(void **state)
{
    script_t *s = *state;

    assert_true_in_lua(s, "io == nil");
    assert_true_in_lua(s, "debug == nil");
    assert_true_in_lua(s, "package == nil");
    assert_true_in_lua(s, "os.execute == nil and os.remove == nil");
    assert_true_in_lua(s, "os.exit == nil and os.getenv == nil");
    assert_true_in_lua(s, "dofile == nil and loadfile == nil");
    assert_true_in_lua(s, "collectgarbage == nil");
    assert_true_in_lua(s, "string.dump == nil");
    assert_true_in_lua(s, "type(os.time()) == 'number'");
    assert_true_in_lua(s, "math.maxinteger == 9223372036854775807");
}

static void test_binary_chunks_refused(void **state)
{
    script_t *s = *state;

    /* "\27Lua" is the signature of a precompiled chunk. */
    assert_true_in_lua(s, "load('\\27Lua\\84\\0') == nil");
    assert_true_in_lua(s, "load('return 1 + 1')() == 2");
}

static void test_instruction_budget_ends_the_call_only(void **state)
{
    script_t *s = *state;
    struct sl_error err;

    assert_int_equal(run(s, "while true do end", &err), -1);
    assert_non_null(strstr(err.msg, "instruction budget exceeded"));
    /* A pcall inside the script cannot swallow it for good either: the
     * budget stays spent, so the loop ends the call again. */
    assert_int_equal(run(s, "while true do pcall(function() "
                            "while true do end end) end",
                         &err),
                     -1);
    if (strstr(err.msg, "instruction budget exceeded") == NULL) {
        fail_msg("unexpected: %s", err.msg);
    }
    assert_true_in_lua(s, "1 + 1 == 2");
}

static void test_memory_limit_ends_the_call_only(void **state)
{
    script_t *s = *state;
    struct sl_error err;

    assert_int_equal(run(s, "local t = {} for i = 1, 1e9 do "
                            "t[i] = string.rep('x', 1000) .. i end",
                         &err),
                     -1);
    assert_non_null(strstr(err.msg, "memory limit reached"));
    assert_true(script_memory(s) < (8u << 20));
    assert_true_in_lua(s, "#string.rep('y', 1000) == 1000");
}

static void test_require_only_from_search_dirs(void **state)
{
    script_t *s = *state;
    struct sl_error err;

    write_file("helper.lua", "return { twice = function(x) return 2 * x end }");
    assert_true_in_lua(s, "require('helper').twice(21) == 42");
    assert_true_in_lua(s, "require('helper') == require('helper')");
    assert_int_equal(run(s, "require('../../etc/passwd')", &err), -1);
    assert_non_null(strstr(err.msg, "bad module name"));
    assert_int_equal(run(s, "require('nowhere')", &err), -1);
    assert_non_null(strstr(err.msg, "not found"));
}

/* Whether the environment (registry reference env) defines name as a
 * function. */
static int env_has_function(script_t *s, int env, const char *name)
{
    lua_State *L = script_state(s);
    int is_function;

    lua_rawgeti(L, LUA_REGISTRYINDEX, env);
    is_function = lua_getfield(L, -1, name) == LUA_TFUNCTION;
    lua_pop(L, 2);
    return is_function;
}

static void test_load_errors_name_file_and_line(void **state)
{
    script_t *s = *state;
    struct sl_error err;
    char path[256];

    write_file("bad.lua", "local x = 1\nfunction f(\n");
    snprintf(path, sizeof(path), "%s/bad.lua", dir);
    assert_int_equal(script_load_env(s, path, &err), -1);
    char want[300];
    snprintf(want, sizeof(want), "%s/bad.lua:3:", dir);
    assert_non_null(strstr(err.msg, want));

    write_file("boom.lua", "local x = 1\nerror('boom')\n");
    snprintf(path, sizeof(path), "%s/boom.lua", dir);
    assert_int_equal(script_load_env(s, path, &err), -1);
    snprintf(want, sizeof(want), "%s/boom.lua:2: boom", dir);
    assert_non_null(strstr(err.msg, want));

    write_file("good.lua", "function transform(msg) return msg end\n");
    snprintf(path, sizeof(path), "%s/good.lua", dir);
    int env = script_load_env(s, path, &err);
    assert_true(env >= 0);
    assert_true(env_has_function(s, env, "transform"));
    assert_false(env_has_function(s, env, "retry"));
}

static void test_integers_stay_exact(void **state)
{
    script_t *s = *state;

    assert_true_in_lua(s, "math.type(9007199254740993) == 'integer'");
    assert_true_in_lua(s, "9007199254740993 + 1 == 9007199254740994");
}

/* The allocator's pool of small blocks is bounded: rounds of ~15 MiB of
 * small strings, a different size each round, go past the pool's arena
 * (then malloc serves), and every block reads back what was written. */
static void test_small_blocks_past_the_pool(void **state)
{
    struct script_limits limits = {.memory_bytes = 64u << 20,
                                   .instructions = 100000000};
    const char *dirs[] = {dir, NULL};
    struct sl_error err;
    script_t *s = script_new(&limits, dirs, &err);
    char text[512];

    (void)state;
    assert_non_null(s);
    for (int round = 1; round <= 4; round++) {
        snprintf(text, sizeof(text),
                 "local pad = string.rep('x', %d)\n"
                 "local t = {}\n"
                 "for i = 1, 150000 do t[i] = pad .. i end\n"
                 "for i = 1, 150000, 997 do\n"
                 "  assert(t[i] == pad .. i, 'block ' .. i)\n"
                 "end\n",
                 round * 40);
        if (run(s, text, &err) != 0) {
            fail_msg("round %d: %s", round, err.msg);
        }
        lua_gc(script_state(s), LUA_GCCOLLECT);
        assert_true(script_memory(s) < (4u << 20));
    }
    script_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_way_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_chunks_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_instruction_budget_ends_the_call_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_limit_ends_the_call_only,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_require_only_from_search_dirs,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors_name_file_and_line,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_blocks_past_the_pool,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_integers_stay_exact, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
