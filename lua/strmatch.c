/* strmatch.c -- Lua 5.4 pattern matching whose steps count against the
 * running call's budget.
 *
 * The stock matcher backtracks without bound: string.find(string.rep("a",
 * 3000), ".-.-.-b") takes billions of steps inside one C call, where the
 * count hook never runs. This is the same algorithm and the same
 * semantics as Lua 5.4's lstrlib.c (Copyright (C) 1994-2022 Lua.org,
 * PUC-Rio, MIT licence), re-expressed for sluice: every match step,
 * expansion and balance scan adds to a counter that is charged to the
 * budget (script_charge) every CHARGE_EVERY steps, which also checks the
 * call's deadline. Plain searches use memmem (linear). */
#include "strmatch.h"

#include <ctype.h>
#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <string.h>

#include "script.h"

#define MAX_CAPTURES 32
#define MAX_DEPTH 200 /* recursion of the matcher: "pattern too complex" */
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)
#define ESC '%'
#define SPECIALS "^$*+?.([%-"
#define CHARGE_EVERY 4096 /* steps between budget checks */

#define uchar(c) ((unsigned char)(c))

struct match_state {
    const char *src_init, *src_end, *p_end;
    lua_State *L;
    int depth; /* recursion left */
    int level; /* captures, finished or not */
    size_t steps; /* not yet charged */
    struct {
        const char *init;
        ptrdiff_t len;
    } capture[MAX_CAPTURES];
};

/* One unit of matcher work; charges the budget every CHARGE_EVERY. */
static inline void step(struct match_state *ms, size_t n)
{
    ms->steps += n;
    if (ms->steps >= CHARGE_EVERY) {
        size_t work = ms->steps;
        ms->steps = 0;
        script_charge(ms->L, work);
    }
}

static const char *match(struct match_state *ms, const char *s,
                         const char *p);

static int check_capture(struct match_state *ms, int l)
{
    l -= '1';
    if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_UNFINISHED) {
        return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
    }
    return l;
}

static int capture_to_close(struct match_state *ms)
{
    int level = ms->level;

    for (level--; level >= 0; level--) {
        if (ms->capture[level].len == CAP_UNFINISHED) {
            return level;
        }
    }
    return luaL_error(ms->L, "invalid pattern capture");
}

static const char *class_end(struct match_state *ms, const char *p)
{
    switch (*p++) {
    case ESC:
        if (p == ms->p_end) {
            luaL_error(ms->L, "malformed pattern (ends with '%%')");
        }
        return p + 1;
    case '[':
        if (*p == '^') {
            p++;
        }
        do { /* look for a ']' */
            if (p == ms->p_end) {
                luaL_error(ms->L, "malformed pattern (missing ']')");
            }
            if (*(p++) == ESC && p < ms->p_end) {
                p++; /* skip escapes (e.g. '%]') */
            }
        } while (*p != ']');
        return p + 1;
    default:
        return p;
    }
}

static int match_class(int c, int cl)
{
    int res;

    switch (tolower(cl)) {
    case 'a': res = isalpha(c); break;
    case 'c': res = iscntrl(c); break;
    case 'd': res = isdigit(c); break;
    case 'g': res = isgraph(c); break;
    case 'l': res = islower(c); break;
    case 'p': res = ispunct(c); break;
    case 's': res = isspace(c); break;
    case 'u': res = isupper(c); break;
    case 'w': res = isalnum(c); break;
    case 'x': res = isxdigit(c); break;
    case 'z': res = (c == 0); break; /* deprecated, still in 5.4 */
    default: return cl == c;
    }
    if (isupper(cl)) {
        res = !res;
    }
    return res;
}

static int match_bracket_class(int c, const char *p, const char *ec)
{
    int sig = 1;

    if (*(p + 1) == '^') {
        sig = 0;
        p++; /* skip the '^' */
    }
    while (++p < ec) {
        if (*p == ESC) {
            p++;
            if (match_class(c, uchar(*p))) {
                return sig;
            }
        } else if (*(p + 1) == '-' && p + 2 < ec) {
            p += 2;
            if (uchar(*(p - 2)) <= c && c <= uchar(*p)) {
                return sig;
            }
        } else if (uchar(*p) == c) {
            return sig;
        }
    }
    return !sig;
}

static int single_match(struct match_state *ms, const char *s, const char *p,
                        const char *ep)
{
    if (s >= ms->src_end) {
        return 0;
    }
    int c = uchar(*s);
    switch (*p) {
    case '.': return 1;
    case ESC: return match_class(c, uchar(*(p + 1)));
    case '[': return match_bracket_class(c, p, ep - 1);
    default: return uchar(*p) == c;
    }
}

static const char *match_balance(struct match_state *ms, const char *s,
                                 const char *p)
{
    if (p >= ms->p_end - 1) {
        luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
    }
    if (*s != *p) {
        return NULL;
    }
    int b = *p, e = *(p + 1), cont = 1;
    while (++s < ms->src_end) {
        step(ms, 1);
        if (*s == e) {
            if (--cont == 0) {
                return s + 1;
            }
        } else if (*s == b) {
            cont++;
        }
    }
    return NULL; /* the string ends out of balance */
}

static const char *max_expand(struct match_state *ms, const char *s,
                              const char *p, const char *ep)
{
    ptrdiff_t i = 0; /* the most repetitions of the item */

    while (single_match(ms, s + i, p, ep)) {
        i++;
        step(ms, 1);
    }
    /* Tries the rest with the most repetitions, then one fewer... */
    while (i >= 0) {
        const char *res = match(ms, s + i, ep + 1);
        if (res != NULL) {
            return res;
        }
        i--;
    }
    return NULL;
}

static const char *min_expand(struct match_state *ms, const char *s,
                              const char *p, const char *ep)
{
    for (;;) {
        const char *res = match(ms, s, ep + 1);
        if (res != NULL) {
            return res;
        }
        if (!single_match(ms, s, p, ep)) {
            return NULL;
        }
        s++; /* one more repetition */
    }
}

static const char *start_capture(struct match_state *ms, const char *s,
                                 const char *p, ptrdiff_t what)
{
    const char *res;
    int level = ms->level;

    if (level >= MAX_CAPTURES) {
        luaL_error(ms->L, "too many captures");
    }
    ms->capture[level].init = s;
    ms->capture[level].len = what;
    ms->level = level + 1;
    if ((res = match(ms, s, p)) == NULL) {
        ms->level--; /* undo the capture */
    }
    return res;
}

static const char *end_capture(struct match_state *ms, const char *s,
                               const char *p)
{
    int l = capture_to_close(ms);
    const char *res;

    ms->capture[l].len = s - ms->capture[l].init;
    if ((res = match(ms, s, p)) == NULL) {
        ms->capture[l].len = CAP_UNFINISHED; /* undo the capture */
    }
    return res;
}

static const char *match_capture(struct match_state *ms, const char *s,
                                 int l)
{
    l = check_capture(ms, l);
    size_t len = (size_t)ms->capture[l].len;
    step(ms, len / 16);
    if ((size_t)(ms->src_end - s) >= len &&
        memcmp(ms->capture[l].init, s, len) == 0) {
        return s + len;
    }
    return NULL;
}

static const char *match(struct match_state *ms, const char *s,
                         const char *p)
{
    const char *ep;

    if (ms->depth-- == 0) {
        luaL_error(ms->L, "pattern too complex");
    }
    step(ms, 1);
init: /* goto for the tail calls */
    if (p != ms->p_end) {
        switch (*p) {
        case '(':
            if (*(p + 1) == ')') {
                s = start_capture(ms, s, p + 2, CAP_POSITION);
            } else {
                s = start_capture(ms, s, p + 1, CAP_UNFINISHED);
            }
            break;
        case ')':
            s = end_capture(ms, s, p + 1);
            break;
        case '$':
            if (p + 1 != ms->p_end) {
                goto dflt; /* not the pattern's end: a plain '$' */
            }
            s = s == ms->src_end ? s : NULL;
            break;
        case ESC:
            switch (*(p + 1)) {
            case 'b':
                s = match_balance(ms, s, p + 2);
                if (s != NULL) {
                    p += 4;
                    goto init;
                }
                break;
            case 'f': {
                p += 2;
                if (*p != '[') {
                    luaL_error(ms->L, "missing '[' after '%%f' in pattern");
                }
                ep = class_end(ms, p);
                char prev = s == ms->src_init ? '\0' : *(s - 1);
                if (!match_bracket_class(uchar(prev), p, ep - 1) &&
                    match_bracket_class(uchar(*s), p, ep - 1)) {
                    p = ep;
                    goto init;
                }
                s = NULL;
                break;
            }
            case '0': case '1': case '2': case '3': case '4':
            case '5': case '6': case '7': case '8': case '9':
                s = match_capture(ms, s, uchar(*(p + 1)));
                if (s != NULL) {
                    p += 2;
                    goto init;
                }
                break;
            default:
                goto dflt;
            }
            break;
        default:
        dflt:
            ep = class_end(ms, p);
            if (!single_match(ms, s, p, ep)) {
                if (*ep == '*' || *ep == '?' || *ep == '-') {
                    p = ep + 1; /* the empty match is allowed */
                    goto init;
                }
                s = NULL;
            } else {
                switch (*ep) {
                case '?': {
                    const char *res = match(ms, s + 1, ep + 1);
                    if (res != NULL) {
                        s = res;
                    } else {
                        p = ep + 1;
                        goto init;
                    }
                    break;
                }
                case '+':
                    s = max_expand(ms, s + 1, p, ep);
                    break;
                case '*':
                    s = max_expand(ms, s, p, ep);
                    break;
                case '-':
                    s = min_expand(ms, s, p, ep);
                    break;
                default:
                    s++;
                    p = ep;
                    step(ms, 1);
                    goto init;
                }
            }
            break;
        }
    }
    ms->depth++;
    return s;
}

/* Capture i as a string (or a position); the whole match when there are
 * no captures. Returns its length, or CAP_POSITION with the position
 * pushed. */
static ptrdiff_t get_capture(struct match_state *ms, int i, const char *s,
                             const char *e, const char **cap)
{
    if (i >= ms->level) {
        if (i != 0) {
            luaL_error(ms->L, "invalid capture index %%%d", i + 1);
        }
        *cap = s;
        return e - s;
    }
    ptrdiff_t len = ms->capture[i].len;
    *cap = ms->capture[i].init;
    if (len == CAP_UNFINISHED) {
        luaL_error(ms->L, "unfinished capture");
    } else if (len == CAP_POSITION) {
        lua_pushinteger(ms->L, (ms->capture[i].init - ms->src_init) + 1);
    }
    return len;
}

static void push_capture(struct match_state *ms, int i, const char *s,
                         const char *e)
{
    const char *cap;
    ptrdiff_t len = get_capture(ms, i, s, e, &cap);

    if (len != CAP_POSITION) {
        lua_pushlstring(ms->L, cap, (size_t)len);
    }
}

static int push_captures(struct match_state *ms, const char *s,
                         const char *e)
{
    int n = ms->level == 0 && s != NULL ? 1 : ms->level;

    luaL_checkstack(ms->L, n, "too many captures");
    for (int i = 0; i < n; i++) {
        push_capture(ms, i, s, e);
    }
    return n;
}

/* No special characters in p (which may hold zeros)? */
static int no_specials(const char *p, size_t l)
{
    size_t upto = 0;

    do {
        if (strpbrk(p + upto, SPECIALS) != NULL) {
            return 0;
        }
        upto += strlen(p + upto) + 1; /* past the next zero */
    } while (upto <= l);
    return 1;
}

static void prep_state(struct match_state *ms, lua_State *L, const char *s,
                       size_t ls, const char *p, size_t lp)
{
    ms->L = L;
    ms->src_init = s;
    ms->src_end = s + ls;
    ms->p_end = p + lp;
    ms->steps = 0;
}

static void reprep_state(struct match_state *ms)
{
    ms->level = 0;
    ms->depth = MAX_DEPTH;
}

/* A relative initial position made absolute, in [1, inf). */
static size_t pos_rel(lua_Integer pos, size_t len)
{
    if (pos > 0) {
        return (size_t)pos;
    }
    if (pos == 0 || pos < -(lua_Integer)len) {
        return 1;
    }
    return len + (size_t)pos + 1;
}

static int find_aux(lua_State *L, int find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = pos_rel(luaL_optinteger(L, 3, 1), ls) - 1;

    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || no_specials(p, lp))) {
        const char *s2 = memmem(s + init, ls - init, p, lp);
        if (s2 != NULL) {
            lua_pushinteger(L, (s2 - s) + 1);
            lua_pushinteger(L, (lua_Integer)((size_t)(s2 - s) + lp));
            return 2;
        }
    } else {
        struct match_state ms;
        const char *s1 = s + init;
        int anchor = *p == '^';
        if (anchor) {
            p++;
            lp--;
        }
        prep_state(&ms, L, s, ls, p, lp);
        do {
            const char *res;
            reprep_state(&ms);
            if ((res = match(&ms, s1, p)) != NULL) {
                if (find) {
                    lua_pushinteger(L, (s1 - s) + 1);
                    lua_pushinteger(L, res - s);
                    return push_captures(&ms, NULL, NULL) + 2;
                }
                return push_captures(&ms, s1, res);
            }
        } while (s1++ < ms.src_end && !anchor);
    }
    luaL_pushfail(L);
    return 1;
}

static int str_find(lua_State *L)
{
    return find_aux(L, 1);
}

static int str_match(lua_State *L)
{
    return find_aux(L, 0);
}

struct gmatch_state {
    const char *src, *p, *lastmatch;
    struct match_state ms;
};

static int gmatch_aux(lua_State *L)
{
    struct gmatch_state *gm = lua_touserdata(L, lua_upvalueindex(3));

    gm->ms.L = L; /* the iterator may run in another coroutine */
    for (const char *src = gm->src; src <= gm->ms.src_end; src++) {
        const char *e;
        reprep_state(&gm->ms);
        if ((e = match(&gm->ms, src, gm->p)) != NULL && e != gm->lastmatch) {
            gm->src = gm->lastmatch = e;
            return push_captures(&gm->ms, src, e);
        }
    }
    return 0;
}

static int str_gmatch(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = pos_rel(luaL_optinteger(L, 3, 1), ls) - 1;
    struct gmatch_state *gm;

    lua_settop(L, 2); /* the closure keeps the strings alive */
    gm = lua_newuserdatauv(L, sizeof(*gm), 0);
    if (init > ls) {
        init = ls + 1; /* start past the end: no matches */
    }
    prep_state(&gm->ms, L, s, ls, p, lp);
    gm->src = s + init;
    gm->p = p;
    gm->lastmatch = NULL;
    lua_pushcclosure(L, gmatch_aux, 3);
    return 1;
}

static void add_s(struct match_state *ms, luaL_Buffer *b, const char *s,
                  const char *e)
{
    size_t l;
    lua_State *L = ms->L;
    const char *news = lua_tolstring(L, 3, &l);
    const char *p;

    step(ms, l / 16);
    while ((p = memchr(news, ESC, l)) != NULL) {
        luaL_addlstring(b, news, (size_t)(p - news));
        p++; /* skip the ESC */
        if (*p == ESC) {
            luaL_addchar(b, *p);
        } else if (*p == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
            step(ms, (size_t)(e - s) / 16);
        } else if (isdigit(uchar(*p))) {
            const char *cap;
            ptrdiff_t len = get_capture(ms, *p - '1', s, e, &cap);
            if (len == CAP_POSITION) {
                luaL_addvalue(b);
            } else {
                luaL_addlstring(b, cap, (size_t)len);
                step(ms, (size_t)len / 16);
            }
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", ESC);
        }
        l -= (size_t)(p + 1 - news);
        news = p + 1;
    }
    luaL_addlstring(b, news, l);
}

/* Adds the replacement of one match; 0 when it kept the original. */
static int add_value(struct match_state *ms, luaL_Buffer *b, const char *s,
                     const char *e, int tr)
{
    lua_State *L = ms->L;

    switch (tr) {
    case LUA_TFUNCTION: {
        lua_pushvalue(L, 3);
        int n = push_captures(ms, s, e);
        lua_call(L, n, 1);
        break;
    }
    case LUA_TTABLE:
        push_capture(ms, 0, s, e);
        lua_gettable(L, 3);
        break;
    default:
        add_s(ms, b, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) { /* nil or false: keep the original */
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1)) {
        return luaL_error(L, "invalid replacement value (a %s)",
                          luaL_typename(L, -1));
    }
    luaL_addvalue(b);
    return 1;
}

static int str_gsub(lua_State *L)
{
    size_t srcl, lp;
    const char *src = luaL_checklstring(L, 1, &srcl);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *lastmatch = NULL;
    int tr = lua_type(L, 3);
    lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1);
    int anchor = *p == '^';
    lua_Integer n = 0;
    int changed = 0;
    struct match_state ms;
    luaL_Buffer b;

    luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING ||
                            tr == LUA_TFUNCTION || tr == LUA_TTABLE,
                     3, "string/function/table");
    luaL_buffinit(L, &b);
    if (anchor) {
        p++;
        lp--;
    }
    prep_state(&ms, L, src, srcl, p, lp);
    while (n < max_s) {
        const char *e;
        reprep_state(&ms);
        if ((e = match(&ms, src, p)) != NULL && e != lastmatch) {
            n++;
            changed = add_value(&ms, &b, src, e, tr) | changed;
            src = lastmatch = e;
        } else if (src < ms.src_end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor) {
            break;
        }
    }
    if (!changed) {
        lua_pushvalue(L, 1); /* the original string */
    } else {
        luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

void strmatch_open(lua_State *L, int idx)
{
    static const luaL_Reg fns[] = {
        {"find", str_find},
        {"match", str_match},
        {"gmatch", str_gmatch},
        {"gsub", str_gsub},
        {NULL, NULL},
    };

    idx = lua_absindex(L, idx);
    for (const luaL_Reg *f = fns; f->name != NULL; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, idx, f->name);
    }
}
