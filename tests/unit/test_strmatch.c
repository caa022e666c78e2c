/* test_strmatch.c -- sluice's step-counted matcher (lua/strmatch.c) gives
 * what Lua 5.4's own gives: the same script runs string.find, match,
 * gmatch and gsub over many subjects and patterns (errors included) in a
 * stock state and in the sandbox, and the transcripts must be equal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "script.h"

static const char transcript[] =
    "local subjects = {'', 'a', 'hello world', 'aaa', '  key = value  ',\n"
    "  'THE (quick) fox', 'f(a(b)c) x', 'a.b-c%d', 'x\\0y\\0z', '123abc456',\n"
    "  'one two  three', 'aXbXXc', '[x]'}\n"
    "local patterns = {'', 'a', '.', 'a*', 'a-', 'a+', 'a?', '^a', 'a$',\n"
    "  '^$', '(a)', '()', '(%w+)', '%s*', '%a+', '[%a_][%w_]*', '[^%s]+',\n"
    "  '%d+', '%b()', '%f[%a]%a+', '(o)(.-)%1', '(.)%1', '[a-c]+', '[%]]',\n"
    "  '%x+', '[]', '[^]', '%', '(', ')', '%1', '(()', '.-b', '^(.-)%s*$',\n"
    "  '\\0', 'y%z?', '%g+', '%p', '%u%l*', '[%-%.]+', '%S+$', 'X*', '%f[%z]',\n"
    "  '%bxy', '%b', '()a()', '[a-]', '[%w-]+', '%f', 'a%', '$', '^'}\n"
    "local out = {}\n"
    "local function add(...)\n"
    "  local t = {}\n"
    "  for i = 1, select('#', ...) do t[i] = tostring((select(i, ...))) end\n"
    "  out[#out + 1] = table.concat(t, ',')\n"
    "end\n"
    "local function prot(f, ...)\n"
    "  local r = table.pack(pcall(f, ...))\n"
    "  if not r[1] then add('ERR', (tostring(r[2]):gsub('^[^:]*:%d+: ', '')))\n"
    "  else add(table.unpack(r, 2, r.n)) end\n"
    "end\n"
    "local function gm(s, p, i)\n"
    "  local r = {}\n"
    "  for a, b in string.gmatch(s, p, i) do\n"
    "    r[#r + 1] = tostring(a) .. '/' .. tostring(b)\n"
    "  end\n"
    "  return table.concat(r, ';')\n"
    "end\n"
    "for _, s in ipairs(subjects) do\n"
    "  for _, p in ipairs(patterns) do\n"
    "    prot(string.find, s, p)\n"
    "    prot(string.find, s, p, 2)\n"
    "    prot(string.find, s, p, -3, true)\n"
    "    prot(string.match, s, p)\n"
    "    prot(string.match, s, p, -4)\n"
    "    prot(gm, s, p)\n"
    "    prot(gm, s, p, 3)\n"
    "    prot(string.gsub, s, p, '<%0>')\n"
    "    prot(string.gsub, s, p, '%1', 2)\n"
    "    prot(string.gsub, s, p, '%%%2')\n"
    "    prot(string.gsub, s, p, {a = 'A', hello = false, ['1'] = 9})\n"
    "    prot(string.gsub, s, p, function(x, y) return y and x end)\n"
    "  end\n"
    "end\n"
    "return table.concat(out, '\\n')\n";

/* The results hold zeros: texts are compared with their lengths. */
static size_t want_len;

static char *stock_result(void)
{
    lua_State *L = luaL_newstate();
    const char *res;
    char *text;

    luaL_openlibs(L);
    assert_int_equal(luaL_loadstring(L, transcript), LUA_OK);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
        fail_msg("stock: %s", lua_tostring(L, -1));
    }
    res = lua_tolstring(L, -1, &want_len);
    text = malloc(want_len + 1);
    assert_non_null(text);
    memcpy(text, res, want_len + 1);
    lua_close(L);
    return text;
}

static void test_same_results_as_stock_lua(void **state)
{
    struct script_limits limits = {.memory_bytes = 64u << 20,
                                   .instructions = (int64_t)1 << 40,
                                   .time_limit_ms = 60000};
    const char *dirs[] = {NULL};
    struct sl_error err;
    script_t *s = script_new(&limits, dirs, &err);
    char *want = stock_result();

    (void)state;
    assert_non_null(s);
    lua_State *L = script_state(s);
    assert_int_equal(luaL_loadstring(L, transcript), LUA_OK);
    if (script_pcall(s, 0, 1, &err) != 0) {
        fail_msg("sandbox: %s", err.msg);
    }
    size_t got_len;
    const char *got = lua_tolstring(L, -1, &got_len);
    if (got_len != want_len || memcmp(got, want, got_len) != 0) {
        /* Name the first line that differs. */
        size_t i = 0, start = 0, line = 1;
        while (i < got_len && i < want_len && got[i] == want[i]) {
            if (got[i++] == '\n') {
                line++;
                start = i;
            }
        }
        fail_msg("line %zu differs: got \"%.60s\", want \"%.60s\"", line,
                 got + start, want + start);
    }
    assert_true(want_len > 10000);
    free(want);
    script_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_results_as_stock_lua),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
