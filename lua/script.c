/* script.c -- the sandboxed Lua state: allocator cap, instruction budget,
 * a standard library with no way out, and `require` from known dirs.
 *
 * Limits are enforced by the VM itself: the allocator refuses memory past
 * the cap (Lua raises "not enough memory" and unwinds), and a count hook
 * raises an error once the call's instruction budget, its deadline
 * (lua.time_limit) or the call depth limit is passed. C functions that
 * may run long charge their work with script_charge, which checks the
 * same budget and deadline. All end the current call only. */
#include "script.h"

#include <ctype.h>
#include <stddef.h>
#include <sys/mman.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "strbuild.h"
#include "strmatch.h"

#define HOOK_EVERY 1000 /* instructions between budget checks */
/* Call depth (Lua and C frames) past which a call fails: Lua's own limit
 * (a million stack slots) takes seconds to reach, as the collector walks
 * the ever deeper stack again and again on the way. */
#define DEPTH_LIMIT 1000

/* Small blocks come from per-size free lists: a message's tables and
 * strings are mostly under 256 bytes and die young, and Lua tells the
 * allocator a block's size when it frees it, so a pooled block needs no
 * header. The blocks are carved from one arena of address space,
 * reserved at start and touched as it fills; a freed block goes back to
 * its size's list, never to the system. A state that has used the whole
 * arena gets malloc for the rest, so the pool holds at most POOL_ARENA
 * however a script mixes sizes, and a block is known for a pooled one by
 * its address. */
#define POOL_GRAIN 16
/* Under AddressSanitizer every block goes to malloc, so that a Lua
 * use-after-free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define POOL_MAX 0
#else
#define POOL_MAX 256 /* larger blocks go to malloc */
#endif
#define POOL_CLASSES (POOL_MAX / POOL_GRAIN + 1)
#define POOL_ARENA ((size_t)8 << 20)

struct pool_block {
    struct pool_block *next;
};

struct script {
    lua_State *L;
    struct pool_block *free_blocks[POOL_CLASSES];
    unsigned char *arena; /* NULL: no pool (MAP_FAILED at start) */
    size_t arena_used;
    size_t used, limit;
    int64_t budget, remaining;
    /* CLOCK_MONOTONIC; deadline 0: not yet read in this call. */
    int64_t time_limit_ns, deadline_ns;
    int active;  /* inside a budgeted call: script_charge counts */
    int tripped; /* 0, or the limit the running call broke (enum trip) */
    char **dirs;
    size_t dir_count;
    int sealed; /* the shared globals and libraries are read-only */
};

static script_t *from_state(lua_State *L)
{
    return *(script_t **)lua_getextraspace(L);
}

/* The pool class of a block of n bytes (n > 0), or -1: not pooled. */
static inline int pool_class(size_t n)
{
    return n <= POOL_MAX ? (int)((n - 1) / POOL_GRAIN) : -1;
}

static inline int in_pool(const script_t *s, const void *p)
{
    return s->arena != NULL && (const unsigned char *)p >= s->arena &&
           (const unsigned char *)p < s->arena + POOL_ARENA;
}

/* A block of class cls (its size rounded up): from the pool, else from
 * malloc once the arena is used up. */
static void *block_take(script_t *s, int cls, size_t n)
{
    struct pool_block *b = cls >= 0 ? s->free_blocks[cls] : NULL;
    size_t size = (size_t)(cls + 1) * POOL_GRAIN;

    if (b != NULL) {
        s->free_blocks[cls] = b->next;
        return b;
    }
    if (cls >= 0 && s->arena != NULL && POOL_ARENA - s->arena_used >= size) {
        b = (struct pool_block *)(s->arena + s->arena_used);
        s->arena_used += size;
        return b;
    }
    return malloc(n);
}

static void block_give(script_t *s, void *p, size_t n)
{
    if (in_pool(s, p)) {
        struct pool_block *b = p;
        int cls = pool_class(n);

        b->next = s->free_blocks[cls];
        s->free_blocks[cls] = b;
    } else {
        free(p);
    }
}

/* lua_Alloc: the memory limit counts the bytes Lua asked for. */
static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    script_t *s = ud;
    size_t old = ptr != NULL ? osize : 0;
    void *p;

    if (nsize == 0) {
        s->used -= old;
        if (ptr != NULL) {
            block_give(s, ptr, old);
        }
        return NULL;
    }
    if (nsize > old && s->used + (nsize - old) > s->limit) {
        return NULL;
    }
    if (old > 0 && in_pool(s, ptr)) {
        if (pool_class(nsize) == pool_class(old)) {
            p = ptr; /* the block has room already */
        } else {
            p = block_take(s, pool_class(nsize), nsize);
            if (p != NULL) {
                memcpy(p, ptr, old < nsize ? old : nsize);
                block_give(s, ptr, old);
            }
        }
    } else if (pool_class(nsize) < 0 || old > 0) {
        /* A large block, or a malloc'd one growing: realloc keeps it
         * where it can. */
        p = realloc(ptr, nsize);
    } else {
        p = block_take(s, pool_class(nsize), nsize);
    }
    if (p != NULL) {
        s->used = s->used - old + nsize;
    }
    return p;
}

enum trip { TRIP_NONE, TRIP_BUDGET, TRIP_TIME, TRIP_DEPTH };

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void budget_hook(lua_State *L, lua_Debug *ar);

/* Past the call's deadline? The clock is first read at the call's first
 * check (its 1,000th instruction or first charge of C work, microseconds
 * in), not at its start: most calls end before that and never pay for a
 * clock read (some 40 ns each on this kind of VM). */
static int past_deadline(script_t *s)
{
    int64_t now = now_ns();

    if (s->deadline_ns == 0) {
        s->deadline_ns = now + s->time_limit_ns;
        return 0;
    }
    return now >= s->deadline_ns;
}

/* Ends the running call. The state stays tripped until the call returns:
 * the hook then fires at every instruction and script_charge at every
 * call, so a pcall in the script may catch the error, but the next
 * instruction or long C function outside it raises it again, and the
 * limit cannot be swallowed. */
_Noreturn static void trip(lua_State *L, script_t *s, enum trip why)
{
    if (s->tripped == TRIP_NONE) {
        s->tripped = why;
    }
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    switch (s->tripped) {
    case TRIP_TIME:
        luaL_error(L, "time budget exceeded (lua.time_limit %I ms)",
                   (lua_Integer)(s->time_limit_ns / 1000000));
        break;
    case TRIP_DEPTH:
        luaL_error(L, "stack overflow (call depth budget exceeded: over %d "
                      "levels)", DEPTH_LIMIT);
        break;
    default:
        luaL_error(L, "instruction budget exceeded (%I instructions)",
                   (lua_Integer)s->budget);
        break;
    }
    abort(); /* luaL_error does not return */
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    script_t *s = from_state(L);
    lua_Debug deep;

    (void)ar;
    if (s->tripped != TRIP_NONE) {
        trip(L, s, (enum trip)s->tripped);
    }
    /* A coroutine keeps the count it was created with: one made in a
     * call that broke a limit fires at every instruction until set
     * back. */
    s->remaining -= lua_gethookcount(L);
    if (lua_gethookcount(L) != HOOK_EVERY) {
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
    }
    if (s->remaining <= 0) {
        trip(L, s, TRIP_BUDGET);
    }
    if (past_deadline(s)) {
        trip(L, s, TRIP_TIME);
    }
    /* Walks at most DEPTH_LIMIT frames, and only as many as there are. */
    if (lua_getstack(L, DEPTH_LIMIT, &deep)) {
        trip(L, s, TRIP_DEPTH);
    }
}

void script_charge(lua_State *L, size_t work)
{
    script_t *s = from_state(L);

    if (!s->active) {
        return;
    }
    if (s->tripped != TRIP_NONE) {
        trip(L, s, (enum trip)s->tripped);
    }
    s->remaining -= work > INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)work;
    if (s->remaining <= 0) {
        trip(L, s, TRIP_BUDGET);
    }
    if (past_deadline(s)) {
        trip(L, s, TRIP_TIME);
    }
}

/* ---- the library scripts get ---- */

/* ---- isolation ----
 *
 * Every script file runs in an environment of its own whose unknown names
 * come from the shared globals. Those globals and every library table in
 * them are sealed once the scripts start loading: a script sees read-only
 * proxies, so nothing one script does to `string`, `json` or `_G` reaches
 * another script or the next message. `require` loads a module once per
 * script, into that script's own cache. */

/* Registry keys (addresses: unique, not strings a script could name). */
static const char sealed_key = 0;  /* weak set of read-only tables */
static const char caches_key = 0;  /* env -> its require cache (weak) */

static int read_only(lua_State *L)
{
    return luaL_error(L, "attempt to modify a read-only table (%s)",
                      lua_isstring(L, 2) ? lua_tostring(L, 2) : "?");
}

/* __pairs of a proxy: iterate the table behind it. */
static int proxy_pairs(lua_State *L)
{
    lua_getglobal(L, "next");
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__index");
    lua_remove(L, -2);
    lua_pushnil(L);
    return 3;
}

/* Pushes the weak-keyed registry table at key, creating it. */
static void weak_table(lua_State *L, const void *key)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) {
        return;
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

static int is_sealed(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    weak_table(L, &sealed_key);
    lua_pushvalue(L, idx);
    int sealed = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return sealed;
}

static void mark_sealed(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    weak_table(L, &sealed_key);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Replaces the table at the top of the stack with a read-only proxy. */
static void push_proxy(lua_State *L)
{
    lua_newtable(L);           /* proxy */
    lua_createtable(L, 0, 4);  /* its metatable */
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, read_only);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, proxy_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable"); /* setmetatable refuses it */
    lua_setmetatable(L, -2);
    lua_remove(L, -2);
    mark_sealed(L, -1);
}

/* Every table field of the table at idx becomes a proxy of itself; the
 * table at made maps each table to its proxy, so that a library has one
 * proxy wherever it is found (require('json') == json). */
static void proxy_fields(lua_State *L, int idx, int made)
{
    idx = lua_absindex(L, idx);
    made = lua_absindex(L, made);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -1) == LUA_TTABLE && lua_type(L, -2) == LUA_TSTRING &&
            !is_sealed(L, -1) && lua_rawequal(L, -1, idx) == 0) {
            lua_pushvalue(L, -1);
            if (lua_rawget(L, made) == LUA_TNIL) {
                lua_pop(L, 1);
                lua_pushvalue(L, -1);
                push_proxy(L);       /* key, table, proxy */
                lua_pushvalue(L, -2);
                lua_pushvalue(L, -2);
                lua_rawset(L, made);
            }
            lua_remove(L, -2);       /* key, proxy */
            lua_pushvalue(L, -2);
            lua_insert(L, -2);       /* key, key, proxy */
            lua_rawset(L, idx); /* an existing key: next() stays valid */
        } else {
            lua_pop(L, 1);
        }
    }
}

/* Seals the shared globals: library tables become proxies, the globals
 * table refuses new names, and the string metatable is hidden. */
static void seal(script_t *s)
{
    lua_State *L = s->L;

    if (s->sealed) {
        return;
    }
    s->sealed = 1;
    lua_newtable(L); /* table -> its proxy, for this function only */
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    proxy_fields(L, -1, -2);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, read_only);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    mark_sealed(L, -1);
    lua_pop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    proxy_fields(L, -1, -2);
    lua_pop(L, 2);
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) {
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* Pushes a new environment: own globals, unknown names from the sealed
 * globals, and _G naming itself (a script's `_G.x = 1` is its own x). */
static void push_env(lua_State *L)
{
    lua_newtable(L);
    lua_newtable(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
}

/* Pushes the environment of the Lua function that called the running C
 * function (its _ENV upvalue); a new environment when it has none. */
static void push_caller_env(lua_State *L)
{
    lua_Debug ar;

    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "f", &ar)) {
        const char *name;
        for (int i = 1; (name = lua_getupvalue(L, -1, i)) != NULL; i++) {
            if (strcmp(name, "_ENV") == 0 && lua_type(L, -1) == LUA_TTABLE) {
                lua_remove(L, -2);
                return;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    push_env(L);
}

/* rawset that cannot write into a sealed table. */
static int safe_rawset(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (is_sealed(L, 1)) {
        return read_only(L);
    }
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

/* load() for text only: a binary chunk could break the VM's invariants.
 * Without an environment the chunk gets its caller's, never the shared
 * globals. */
static int safe_load(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "=(load)");
    int env = lua_gettop(L) >= 4 ? 4 : 0;

    if (luaL_loadbufferx(L, text, len, name, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (env != 0) {
        lua_pushvalue(L, env);
    } else {
        push_caller_env(L);
    }
    if (lua_setupvalue(L, -2, 1) == NULL) {
        lua_pop(L, 1);
    }
    return 1;
}

/* setmetatable without __gc: Lua runs finalizers with hooks off, so a
 * finalizer would escape the instruction budget. */
static int safe_setmetatable(lua_State *L)
{
    /* Raw, as Lua itself looks for __gc when it marks the object. */
    if (lua_type(L, 2) == LUA_TTABLE &&
        (lua_pushliteral(L, "__gc"), lua_rawget(L, 2)) != LUA_TNIL) {
        return luaL_error(L, "setmetatable: __gc finalizers are not "
                             "allowed in sluice scripts");
    }
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

/* xpcall(f, h, ...) whose handler runs as ordinary code, under the
 * budget and the deadline: Lua runs a message handler for an error raised
 * by the count hook with hooks off, so a handler that loops would never
 * be stopped. Here f runs in a plain protected call and h, if f fails,
 * runs after the stack has unwound (scripts have no debug library, so
 * the handler loses nothing it could see), itself protected: an error in
 * h (the budget's among them) is what xpcall returns. */
static int xpcall_finish(lua_State *L, int status, lua_KContext extra)
{
    if (status == LUA_OK || status == LUA_YIELD) {
        return lua_gettop(L) - (int)extra; /* true and f's results */
    }
    /* Stack: f, h, true, err. */
    lua_pushvalue(L, 2);
    lua_insert(L, -2);
    lua_pcall(L, 1, 1, 0);
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
}

static int safe_xpcall(lua_State *L)
{
    int n = lua_gettop(L);

    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* f, h, true, f, args... */
    return xpcall_finish(
        L, lua_pcallk(L, n - 2, LUA_MULTRET, 0, 2, xpcall_finish), 2);
}

const char *script_join_args(lua_State *L, const char *sep)
{
    luaL_Buffer b;
    int n = lua_gettop(L);

    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) {
            luaL_addstring(&b, sep);
        }
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

static int safe_print(lua_State *L)
{
    log_info("lua: %s", script_join_args(L, "\t"));
    return 0;
}

/* require(name): name.lua (dots as slashes) from the search dirs only,
 * as text, cached like the standard require. */
static int safe_require(lua_State *L)
{
    script_t *s = from_state(L);
    const char *name = luaL_checkstring(L, 1);
    char rel[256], path[4096];
    size_t n = 0;

    for (const char *c = name; *c != '\0'; c++) {
        if (n + 5 >= sizeof(rel) ||
            !(isalnum((unsigned char)*c) || *c == '_' || *c == '.')) {
            return luaL_error(L, "require: bad module name '%s'", name);
        }
        rel[n++] = *c == '.' ? '/' : *c;
    }
    if (n == 0) {
        return luaL_error(L, "require: empty module name");
    }
    memcpy(rel + n, ".lua", 5);
    lua_settop(L, 1);
    /* The built-in modules (json, log, sluice, string...): sealed. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, name) != LUA_TNIL) {
        return 1;
    }
    lua_pop(L, 2);
    /* Modules from files: one copy per script, in the cache of the
     * calling script's environment (a module's own environment shares
     * its requirer's cache). */
    weak_table(L, &caches_key); /* 2 */
    push_caller_env(L);         /* 3 */
    lua_pushvalue(L, 3);
    if (lua_rawget(L, 2) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, 3);
        lua_pushvalue(L, -2);
        lua_rawset(L, 2);
    }                           /* 4: the cache */
    if (lua_getfield(L, 4, name) != LUA_TNIL) {
        return 1;
    }
    lua_pop(L, 1);
    for (size_t i = 0; i < s->dir_count; i++) {
        snprintf(path, sizeof(path), "%s/%s", s->dirs[i], rel);
        if (access(path, R_OK) != 0) {
            continue;
        }
        if (luaL_loadfilex(L, path, "t") != LUA_OK) {
            return lua_error(L);
        }
        push_env(L);
        lua_pushvalue(L, -1);
        lua_pushvalue(L, 4);
        lua_rawset(L, 2); /* the module's requires share the cache */
        lua_setupvalue(L, -2, 1);
        lua_pushstring(L, name);
        lua_call(L, 1, 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 1);
        }
        lua_pushvalue(L, -1);
        lua_setfield(L, 4, name);
        return 1;
    }
    return luaL_error(L, "require: module '%s' not found in the pipeline's "
                         "directory or lua/lib", name);
}

/* Keeps only the named fields of the table at the top of the stack. */
static void keep_fields(lua_State *L, const char *const *keep)
{
    lua_newtable(L);
    for (size_t i = 0; keep[i] != NULL; i++) {
        lua_getfield(L, -2, keep[i]);
        lua_setfield(L, -2, keep[i]);
    }
    lua_remove(L, -2);
}

static void open_sandbox(lua_State *L)
{
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},       {LUA_TABLIBNAME, luaopen_table},
        {LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {LUA_COLIBNAME, luaopen_coroutine},
        {NULL, NULL},
    };
    static const char *const removed[] = {"dofile", "loadfile",
                                          "collectgarbage", NULL};
    static const char *const os_keep[] = {"time", "clock", "date",
                                          "difftime", NULL};

    for (const luaL_Reg *lib = libs; lib->func != NULL; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
    keep_fields(L, os_keep);
    lua_setglobal(L, LUA_OSLIBNAME);
    for (size_t i = 0; removed[i] != NULL; i++) {
        lua_pushnil(L);
        lua_setglobal(L, removed[i]);
    }
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    lua_getglobal(L, "setmetatable");
    lua_pushcclosure(L, safe_setmetatable, 1);
    lua_setglobal(L, "setmetatable");
    lua_register(L, "load", safe_load);
    lua_register(L, "print", safe_print);
    lua_register(L, "require", safe_require);
    lua_register(L, "rawset", safe_rawset);
    lua_register(L, "xpcall", safe_xpcall);
    /* Pattern matching and string/table building that count their work
     * against the budget and check sizes before allocating. */
    lua_getglobal(L, LUA_STRLIBNAME);
    strmatch_open(L, lua_gettop(L));
    strbuild_open_string(L, lua_gettop(L));
    lua_pop(L, 1);
    lua_getglobal(L, LUA_TABLIBNAME);
    strbuild_open_table(L, lua_gettop(L));
    lua_pop(L, 1);
}

/* ---- lifecycle and calls ---- */

script_t *script_new(const struct script_limits *limits,
                     const char *const *search_dirs, struct sl_error *err)
{
    script_t *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    s->limit = limits->memory_bytes ? limits->memory_bytes : 64u << 20;
    s->budget = limits->instructions ? limits->instructions : 10000000;
    s->time_limit_ns =
        (limits->time_limit_ms ? limits->time_limit_ms : 1000) * 1000000;
    for (; search_dirs != NULL && search_dirs[s->dir_count] != NULL;
         s->dir_count++) {
    }
    s->dirs = calloc(s->dir_count + 1, sizeof(*s->dirs));
    for (size_t i = 0; s->dirs != NULL && i < s->dir_count; i++) {
        s->dirs[i] = strdup(search_dirs[i]);
        if (s->dirs[i] == NULL) {
            script_destroy(s);
            sl_error_set(err, "out of memory");
            return NULL;
        }
    }
    if (POOL_MAX > 0) {
        /* Address space only: pages are touched as the pool fills. */
        void *arena = mmap(NULL, POOL_ARENA, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                           0);
        s->arena = arena != MAP_FAILED ? arena : NULL;
    }
    s->L = lua_newstate(capped_alloc, s);
    if (s->dirs == NULL || s->L == NULL) {
        script_destroy(s);
        sl_error_set(err, "out of memory");
        return NULL;
    }
    *(script_t **)lua_getextraspace(s->L) = s;
    open_sandbox(s->L);
    /* Per message, scripts make many small tables that die young: the
     * generational collector handles them for less than the incremental
     * one, and a minor collection after 50% growth (Lua's default: 20%)
     * for less again, 2-3% of the example transform (measured with
     * bin/transform-bench, A/B; 100% was worse). */
    lua_gc(s->L, LUA_GCGEN, 50, 0);
    return s;
}

/* Message handler: an error raised in C (a library function's "bad
 * argument", sluice's own checks) carries no position; give it the
 * script's file:line that led there. */
static int add_position(lua_State *L)
{
    lua_Debug ar;
    const char *msg = lua_tostring(L, 1);

    if (msg == NULL) {
        return 1;
    }
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        lua_getinfo(L, "Sl", &ar);
        if (ar.currentline <= 0) {
            continue;
        }
        size_t n = strlen(ar.short_src);
        /* Lua's own runtime errors already start with it. */
        if (strncmp(msg, ar.short_src, n) != 0 || msg[n] != ':') {
            lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline,
                            msg);
        }
        break;
    }
    return 1;
}

/* lua_pcall under the budget, with the handler at msgh. On error, err
 * holds the message and the error object is popped. */
static int budgeted_pcall(script_t *s, int nargs, int nresults, int msgh,
                          struct sl_error *err)
{
    lua_State *L = s->L;
    int rc;

    s->remaining = s->budget;
    s->deadline_ns = 0;
    s->tripped = TRIP_NONE;
    s->active = 1;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
    rc = lua_pcall(L, nargs, nresults, msgh);
    lua_sethook(L, NULL, 0, 0);
    s->active = 0;
    s->tripped = TRIP_NONE;
    if (rc == LUA_OK) {
        return 0;
    }
    if (rc == LUA_ERRMEM) {
        sl_error_set(err, "memory limit reached (%zu bytes)", s->limit);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        sl_error_set(err, "%s", lua_tostring(L, -1));
    } else {
        sl_error_set(err, "(error object is a %s value)",
                     luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    /* What the failed call left behind should not count against the
     * next one. */
    lua_gc(L, LUA_GCCOLLECT);
    return -1;
}

void script_budget_reset(script_t *s)
{
    s->remaining = s->budget;
    s->deadline_ns = 0;
    /* A tripped call stays tripped: its next instruction raises. */
}

int script_pcall(script_t *s, int nargs, int nresults, struct sl_error *err)
{
    lua_State *L = s->L;
    int base = lua_gettop(L) - nargs; /* the function's slot */
    int rc;

    lua_pushcfunction(L, add_position);
    lua_insert(L, base);
    rc = budgeted_pcall(s, nargs, nresults, base, err);
    lua_remove(L, base);
    return rc;
}

int script_call(script_t *s, lua_CFunction fn, void *arg,
                struct sl_error *err)
{
    lua_State *L = s->L;
    int rc;

    /* The handler goes first, so nothing needs moving (the per-message
     * path: lua_insert and lua_remove were 1% of it). */
    lua_pushcfunction(L, add_position);
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, arg);
    rc = budgeted_pcall(s, 1, 0, lua_gettop(L) - 2, err);
    lua_pop(L, 1);
    return rc;
}

int script_load_env(script_t *s, const char *path, struct sl_error *err)
{
    lua_State *L = s->L;
    int ref;

    seal(s); /* every module is registered by now */
    if (luaL_loadfilex(L, path, "t") != LUA_OK) {
        sl_error_set(err, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    push_env(L); /* the file's _ENV */
    lua_pushvalue(L, -1);
    ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* A main chunk's only upvalue is its _ENV. */
    lua_setupvalue(L, -2, 1);
    if (script_pcall(s, 0, 0, err) != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return -1;
    }
    return ref;
}

struct lua_State *script_state(script_t *s)
{
    return s->L;
}

size_t script_memory(const script_t *s)
{
    return s->used;
}

void script_destroy(script_t *s)
{
    if (s == NULL) {
        return;
    }
    if (s->L != NULL) {
        lua_close(s->L);
    }
    if (s->arena != NULL) {
        munmap(s->arena, POOL_ARENA);
    }
    for (size_t i = 0; s->dirs != NULL && i < s->dir_count; i++) {
        free(s->dirs[i]);
    }
    free(s->dirs);
    free(s);
}

/* Memory C functions take for a script goes through the state's own
 * allocator, so the cap counts it. */
void *script_c_alloc(lua_State *L, size_t n)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    return f(ud, NULL, 0, n);
}

void *script_c_realloc(lua_State *L, void *p, size_t old, size_t n)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    return f(ud, p, old, n);
}

void script_c_free(lua_State *L, void *p, size_t n)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    if (p != NULL) {
        f(ud, p, n, 0);
    }
}
