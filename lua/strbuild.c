/* strbuild.c -- string.rep, string.format, table.concat, table.move and
 * table.sort that check sizes before allocating and charge their loops
 * to the budget.
 *
 * The stock versions loop in C where the count hook cannot see:
 * string.rep("", math.maxinteger) copies nothing math.maxinteger times,
 * table.move({}, 1, math.maxinteger - 1, 1) moves that many nils, and
 * table.concat over a table whose __index is a C function never returns.
 * These keep the stock semantics and error messages; their loops charge
 * script_charge every CHARGE_EVERY elements (which also checks the
 * deadline), and a result larger than the state may hold fails at once
 * with "not enough memory", before anything is allocated. */
#include "strbuild.h"

#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "script.h"

#define CHARGE_EVERY 1024 /* elements between budget checks */
/* Copying bytes is cheap beside a VM instruction: a byte costs 1/16. */
#define BYTES_PER_UNIT 16
/* The largest string string.rep makes (lstrlib.c's MAXSIZE). */
#define MAX_STRING ((size_t)INT_MAX)

/* string.rep(s, n [, sep]): the size is known up front, so it is
 * checked and charged before the one allocation, and the copy doubles
 * what is written (a few memcpy however large n is). */
static int strbuild_rep(lua_State *L)
{
    size_t l, lsep;
    const char *s = luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &lsep);

    if (n <= 0 || l + lsep == 0) {
        /* Nothing, or n copies of nothing: no loop at all. */
        lua_pushliteral(L, "");
        return 1;
    }
    if (l + lsep < l || l + lsep > MAX_STRING / (size_t)n) {
        return luaL_error(L, "resulting string too large");
    }
    size_t total = (size_t)n * l + (size_t)(n - 1) * lsep;
    size_t unit = l + lsep;
    luaL_Buffer b;

    /* The state's allocator refuses what passes the memory cap: "not
     * enough memory" before a byte is copied. */
    char *p = luaL_buffinitsize(L, &b, total);
    script_charge(L, total / BYTES_PER_UNIT);
    memcpy(p, s, l);
    if (lsep > 0 && n > 1) {
        memcpy(p + l, sep, lsep);
    }
    size_t done = n > 1 ? unit : l; /* bytes of p that are final */
    while (done < total) {
        size_t chunk = done <= total - done ? done : total - done;
        memcpy(p + done, p, chunk);
        done += chunk;
    }
    luaL_pushresultsize(&b, total);
    return 1;
}

/* string.format: the stock one, charged first for what it will read
 * (its output grows with the format and the string arguments; widths
 * are at most 99). */
static int strbuild_format(lua_State *L)
{
    lua_CFunction stock = lua_tocfunction(L, lua_upvalueindex(1));
    int top = lua_gettop(L);
    size_t work = (size_t)top;

    for (int i = 1; i <= top; i++) {
        if (lua_type(L, i) == LUA_TSTRING) {
            size_t len;
            lua_tolstring(L, i, &len);
            work += len / BYTES_PER_UNIT;
        }
    }
    script_charge(L, work);
    return stock(L);
}

/* The table library's check: a table, or a value with the metamethods
 * the operation uses (__index to read, __newindex to write, __len for
 * the length). */
#define TAB_R 1
#define TAB_W 2
#define TAB_L 4

static int has_meta(lua_State *L, int arg, const char *field)
{
    if (luaL_getmetafield(L, arg, field) == LUA_TNIL) {
        return 0;
    }
    lua_pop(L, 1);
    return 1;
}

static void check_tab(lua_State *L, int arg, int what)
{
    if (lua_type(L, arg) == LUA_TTABLE) {
        return;
    }
    if (!((what & TAB_R) && !has_meta(L, arg, "__index")) &&
        !((what & TAB_W) && !has_meta(L, arg, "__newindex")) &&
        !((what & TAB_L) && !has_meta(L, arg, "__len"))) {
        return;
    }
    luaL_checktype(L, arg, LUA_TTABLE); /* raises the usual error */
}

/* table.concat(list [, sep [, i [, j]]]) */
static int strbuild_concat(lua_State *L)
{
    luaL_Buffer b;
    size_t lsep;
    const char *sep;
    lua_Integer i, last;
    size_t since = 0, bytes = 0;

    check_tab(L, 1, TAB_R | TAB_L);
    sep = luaL_optlstring(L, 2, "", &lsep);
    i = luaL_optinteger(L, 3, 1);
    last = lua_isnoneornil(L, 4) ? luaL_len(L, 1) : luaL_checkinteger(L, 4);
    luaL_buffinit(L, &b);
    for (; i <= last; i++) {
        size_t len;
        lua_geti(L, 1, i);
        if (!lua_isstring(L, -1)) {
            return luaL_error(L, "invalid value (at index %I) in table for "
                                 "'concat'", (lua_Integer)i);
        }
        lua_tolstring(L, -1, &len);
        luaL_addvalue(&b);
        bytes += len;
        if (i != last) {
            luaL_addlstring(&b, sep, lsep);
            bytes += lsep;
        }
        if (++since == CHARGE_EVERY) {
            script_charge(L, since + bytes / BYTES_PER_UNIT);
            since = bytes = 0;
        }
        if (i == last) {
            break; /* i++ would overflow at math.maxinteger */
        }
    }
    luaL_pushresult(&b);
    return 1;
}

/* table.move(a1, f, e, t [, a2]) */
static int strbuild_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int tt = !lua_isnoneornil(L, 5) ? 5 : 1; /* the destination */

    check_tab(L, 1, TAB_R);
    check_tab(L, tt, TAB_W);
    if (e >= f) {
        lua_Integer n, i;
        size_t since = 0;
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3,
                      "too many elements to move");
        n = e - f + 1;
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4,
                      "destination wrap around");
        if (t > e || t > f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
            for (i = 0; i < n; i++) {
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
                if (++since == CHARGE_EVERY) {
                    script_charge(L, since);
                    since = 0;
                }
            }
        } else {
            for (i = n - 1; i >= 0; i--) {
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
                if (++since == CHARGE_EVERY) {
                    script_charge(L, since);
                    since = 0;
                }
            }
        }
    }
    lua_pushvalue(L, tt);
    return 1;
}

/* table.sort: the stock one, charged first for the comparisons it may
 * make (n log2 n). Its loop is in C; a Lua comparator runs under the
 * hook anyway, the default one does not, and a sort of millions of
 * elements would take seconds unseen. */
static int strbuild_sort(lua_State *L)
{
    lua_CFunction stock = lua_tocfunction(L, lua_upvalueindex(1));

    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
        size_t work = 0;
        for (lua_Integer m = n; m > 1; m >>= 1) {
            work += (size_t)n;
        }
        script_charge(L, work);
    }
    return stock(L);
}

void strbuild_open_string(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_pushcfunction(L, strbuild_rep);
    lua_setfield(L, idx, "rep");
    lua_getfield(L, idx, "format");
    lua_pushcclosure(L, strbuild_format, 1);
    lua_setfield(L, idx, "format");
}

void strbuild_open_table(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_pushcfunction(L, strbuild_concat);
    lua_setfield(L, idx, "concat");
    lua_pushcfunction(L, strbuild_move);
    lua_setfield(L, idx, "move");
    lua_getfield(L, idx, "sort");
    lua_pushcclosure(L, strbuild_sort, 1);
    lua_setfield(L, idx, "sort");
}
