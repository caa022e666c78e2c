/* transform.c -- runs a lane's Lua scripts on messages.
 *
 * The message a script sees is one reused full userdata: its fields are
 * read from the C view on demand, so a transform that never touches the
 * value allocates nothing. What the script sets is kept in the
 * userdata's user values (key, value, json, headers, dedupe_key) and
 * read back after the call. msg.json is decoded on first access; after
 * the call it is re-encoded only when it differs from the bytes it came
 * from (ljson_equal), so a script that only reads it forwards the
 * original bytes.
 *
 * Each call runs inside one protected C function: the script's own code
 * and reading its results back (which may raise, e.g. an unencodable
 * value) fail the same way, as an error for that message. Strings the
 * results point into are anchored in a registry table until the next
 * call of the same kind. */
#include "transform.h"

#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "keyrule.h"
#include "log.h"
#include "script.h"

enum {
    UV_JSON = 1,
    UV_HEADERS,
    UV_KEY,
    UV_VALUE,
    UV_DEDUPE,
    UV_COUNT = UV_DEDUPE,
};

enum {
    SET_KEY = 1 << 0,
    SET_VALUE = 1 << 1,
    SET_JSON = 1 << 2, /* decoded or assigned: uv JSON is current */
    SET_HEADERS = 1 << 3,
    SET_DEDUPE = 1 << 4,
};

#define NO_HEADERS ((size_t)-1) /* an output keeps the input's headers */
#define MSG_TYPE "sluice.msg"

struct lmsg {
    transform_t *t;
    const struct connector_msg *in; /* NULL outside a call */
    unsigned set;
    int readonly; /* a sink transform's view */
    /* Entries of the table msg.json was decoded into, so that a script
     * that added or removed a field is seen as changed without comparing
     * the whole document; -1: unknown (not decoded, or assigned). */
    long json_entries;
};

/* An output, and where its headers start in hdrs (which may move while
 * the script's results are read; pointers are set at the end). */
struct out_slot {
    struct transform_out out;
    size_t hdr_first; /* NO_HEADERS: the input's */
};

struct text_buf {
    char *p;
    size_t cap;
};

struct anchor {
    int ref;  /* registry table of strings kept alive */
    int slot; /* the table's stack slot in the protected call */
    int used, high;
};

struct transform {
    struct transform_spec spec; /* a copy: its strings live in spec_mem */
    void *spec_mem;
    script_t *script;
    lua_State *L;
    ljson_codec_t *codec;
    int pipeline_fn; /* registry refs, LUA_NOREF when absent */
    int key_fn;      /* dedupe.key: lua:FUNCTION */
    char *key_out;   /* its answer, for transform_dedupe_key */
    size_t key_cap;
    int *sink_fn, *retry_fn;
    size_t nsinks;
    struct lmsg *msg;
    int msg_ref;
    int outjson_ref; /* outjson[i+1]: output i's JSON table */
    size_t outjson_high;
    struct anchor run_anchor, shape_anchor;
    const char *script_path; /* the running script, for log lines */

    /* transform_run's results */
    struct out_slot *outs;
    size_t nouts, outs_cap;
    struct sl_header *hdrs;
    size_t nhdrs, hdrs_cap;

    /* Encoded JSON: output i's in out_text[i], sink k's request's in
     * req_text[k] (C buffers, reused: no Lua string to allocate, anchor
     * and collect per message). */
    struct text_buf *out_text;
    size_t out_text_cap;
    struct text_buf *req_text;

    /* the sinks' transforms' results: shaped[k], its headers from
     * req_hdrs[req_hdr_first[k]] (pointers set at the end) */
    struct transform_shaped *shaped;
    size_t *req_hdr_first;
    struct sl_header *req_hdrs;
    size_t req_nhdrs, req_hdrs_cap;

    /* arguments of the protected calls */
    size_t call_sink, call_end, call_output;
    const struct connector_msg *call_msg;
    const struct transform_attempt *call_attempt;
    struct sl_decision *call_decision;
};

static transform_t *from_upvalue(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash != NULL ? slash + 1 : path;
}

/* ---- anchors: strings a result points into stay alive ---- */

static void anchor_begin(lua_State *L, struct anchor *a)
{
    (void)L;
    a->used = 0;
}

/* Pushes the anchor table for this protected call: anchor_string needs
 * it on the stack. */
static void anchor_push(lua_State *L, struct anchor *a)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->ref);
    a->slot = lua_gettop(L);
}

/* Anchors the value at idx; returns its bytes. */
static const char *anchor_string(lua_State *L, struct anchor *a, int idx,
                                 size_t *len)
{
    idx = lua_absindex(L, idx);
    lua_pushvalue(L, idx);
    lua_rawseti(L, a->slot, ++a->used);
    return lua_tolstring(L, idx, len);
}

/* Lets go of what the previous, larger call anchored. */
static void anchor_end(lua_State *L, struct anchor *a)
{
    if (a->high <= a->used) {
        a->high = a->used;
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->ref);
    for (int i = a->used + 1; i <= a->high; i++) {
        lua_pushnil(L);
        lua_rawseti(L, -2, i);
    }
    lua_pop(L, 1);
    a->high = a->used;
}

/* ---- growable arrays ---- */

/* p with room for need elements, or NULL (p untouched). */
static void *grow(void *p, size_t *cap, size_t need, size_t size)
{
    size_t n = *cap ? *cap : 8;

    if (need <= *cap) {
        return p;
    }
    while (n < need) {
        n *= 2;
    }
    p = realloc(p, n * size);
    if (p != NULL) {
        *cap = n;
    }
    return p;
}

static void *grow_or_raise(lua_State *L, void *p, size_t *cap, size_t need,
                           size_t size)
{
    p = grow(p, cap, need, size);
    if (p == NULL) {
        luaL_error(L, "out of memory");
    }
    return p;
}

static struct sl_header *push_header(lua_State *L,
                                            struct sl_header **arr,
                                            size_t *n, size_t *cap)
{
    *arr = grow_or_raise(L, *arr, cap, *n + 1, sizeof(**arr));
    return &(*arr)[(*n)++];
}

/* ---- the msg object ---- */

/* The msg methods' upvalue is t, and t->msg the only userdata of their
 * metatable: a pointer comparison checks the argument. */
static struct lmsg *check_msg(lua_State *L)
{
    struct lmsg *m = lua_touserdata(L, 1);

    if (m == NULL || m != from_upvalue(L)->msg) {
        luaL_typeerror(L, 1, MSG_TYPE);
    }

    if (m->in == NULL) {
        luaL_error(L, "msg used after its transform returned");
    }
    return m;
}

/* Pushes msg's current value bytes; returns NULL for no value. */
static const char *msg_value(lua_State *L, struct lmsg *m, size_t *len)
{
    if (m->set & SET_VALUE) {
        lua_getiuservalue(L, 1, UV_VALUE);
        const char *v = lua_type(L, -1) == LUA_TSTRING
                            ? lua_tolstring(L, -1, len)
                            : NULL;
        lua_pop(L, 1); /* the user value keeps the string alive */
        return v;
    }
    *len = m->in->value_len;
    return m->in->value;
}

static void push_headers_table(lua_State *L, const struct connector_msg *in)
{
    /* Room for a couple of added headers without a rehash. */
    lua_createtable(L, 0, (int)in->header_count + 2);
    for (size_t i = 0; i < in->header_count; i++) {
        const struct sl_header *h = &in->headers[i];
        size_t j = 0;
        while (j < i && strcmp(in->headers[j].name, h->name) != 0) {
            j++;
        }
        int t = j == i ? LUA_TNIL : lua_getfield(L, -1, h->name);
        if (j < i) {
            lua_pop(L, 1);
        }
        if (t == LUA_TNIL) {
            lua_pushlstring(L, h->value ? h->value : "", h->value_len);
            lua_setfield(L, -2, h->name);
            continue;
        }
        /* Repeated: the value becomes a list, in record order. */
        if (t == LUA_TSTRING) {
            lua_createtable(L, 2, 0);
            lua_getfield(L, -2, h->name);
            lua_rawseti(L, -2, 1);
            lua_setfield(L, -2, h->name);
        }
        lua_getfield(L, -1, h->name);
        lua_pushlstring(L, h->value ? h->value : "", h->value_len);
        lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
        lua_pop(L, 1);
    }
}

/* msg.key: as set by the transform, else the record's; nil for none. */
static void push_key(lua_State *L, struct lmsg *m)
{
    if (m->set & SET_KEY) {
        lua_getiuservalue(L, 1, UV_KEY);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            lua_pushnil(L);
        }
    } else if (m->in->key != NULL) {
        lua_pushlstring(L, m->in->key, m->in->key_len);
    } else {
        lua_pushnil(L);
    }
}

static int msg_index(lua_State *L)
{
    struct lmsg *m = check_msg(L);
    const struct connector_msg *in = m->in;
    size_t len;
    const char *k = luaL_checklstring(L, 2, &len);

    switch (len) {
    case 3:
        if (memcmp(k, "key", 3) == 0) {
            push_key(L, m);
            return 1;
        }
        break;
    case 4:
        if (memcmp(k, "json", 4) == 0) {
            if (lua_getiuservalue(L, 1, UV_JSON) != LUA_TNIL) {
                return 1;
            }
            lua_pop(L, 1);
            const char *v = msg_value(L, m, &len);
            struct sl_error err;
            if (v == NULL) {
                return luaL_error(L, "msg.json: the message has no value");
            }
            if (ljson_decode(m->t->codec, L, v, len, &err) != 0) {
                return luaL_error(L, "msg.json: the value is not JSON: %s",
                                  err.msg);
            }
            m->json_entries = ljson_decoded_count(m->t->codec);
            lua_pushvalue(L, -1);
            lua_setiuservalue(L, 1, UV_JSON);
            m->set |= SET_JSON;
            return 1;
        }
        break;
    case 5:
        if (memcmp(k, "value", 5) == 0) {
            if ((m->set & SET_JSON) && !m->readonly) {
                /* Reading the value after changing the JSON view sees
                 * the change. */
                lua_getiuservalue(L, 1, UV_JSON);
                const char *text = ljson_encode(m->t->codec, L, -1, &len,
                                               &(struct sl_error){{0}});
                if (text != NULL) {
                    lua_pushlstring(L, text, len);
                    return 1;
                }
                lua_pop(L, 1);
            }
            const char *v = msg_value(L, m, &len);
            if (v != NULL) {
                lua_pushlstring(L, v, len);
            } else {
                lua_pushnil(L);
            }
            return 1;
        }
        if (memcmp(k, "topic", 5) == 0) {
            lua_pushstring(L, in->topic);
            return 1;
        }
        break;
    case 6:
        if (memcmp(k, "offset", 6) == 0) {
            lua_pushinteger(L, in->offset);
            return 1;
        }
        break;
    case 7:
        if (memcmp(k, "headers", 7) == 0) {
            if (lua_getiuservalue(L, 1, UV_HEADERS) != LUA_TNIL) {
                return 1;
            }
            lua_pop(L, 1);
            push_headers_table(L, in);
            lua_pushvalue(L, -1);
            lua_setiuservalue(L, 1, UV_HEADERS);
            /* A sink's transform may change the table too: the next one
             * gets a fresh one. */
            m->set |= SET_HEADERS;
            return 1;
        }
        break;
    case 8:
        if (memcmp(k, "key_base", 8) == 0) {
            /* The key without a publisher's hot-key shard suffix
             * (docs/hot-keys.md): msg.key read, then cut. */
            push_key(L, m);
            if (lua_type(L, -1) == LUA_TSTRING) {
                size_t klen, base;
                const char *key = lua_tolstring(L, -1, &klen);
                keyrule_key_base(key, klen, m->t->spec.shard_separator,
                                 &base);
                lua_pushlstring(L, key, base);
            }
            return 1;
        }
        if (memcmp(k, "trace_id", 8) == 0) {
            if (in->trace_id != NULL) {
                lua_pushstring(L, in->trace_id);
            } else {
                lua_pushnil(L);
            }
            return 1;
        }
        break;
    case 9:
        if (memcmp(k, "partition", 9) == 0) {
            lua_pushinteger(L, in->partition);
            return 1;
        }
        if (memcmp(k, "timestamp", 9) == 0) {
            if (in->timestamp_ms >= 0) {
                lua_pushinteger(L, in->timestamp_ms);
            } else {
                lua_pushnil(L);
            }
            return 1;
        }
        break;
    case 10:
        if (memcmp(k, "dedupe_key", 10) == 0) {
            if (m->set & SET_DEDUPE) {
                lua_getiuservalue(L, 1, UV_DEDUPE);
            } else {
                lua_pushstring(L, in->dedupe_key);
            }
            return 1;
        }
        break;
    }
    lua_pushnil(L);
    return 1;
}

static int msg_newindex(lua_State *L)
{
    struct lmsg *m = check_msg(L);
    const char *k = luaL_checkstring(L, 2);
    int t = lua_type(L, 3);

    if (m->readonly) {
        return luaL_error(L, "msg.%s: the message is read-only in a sink's "
                             "transform (return the request instead)",
                          k);
    }
    lua_settop(L, 3);
    if (strcmp(k, "key") == 0) {
        if (t != LUA_TSTRING && t != LUA_TNIL) {
            return luaL_error(L, "msg.key: expected a string or nil, got "
                                 "a %s", luaL_typename(L, 3));
        }
        if (t == LUA_TNIL) {
            lua_pushboolean(L, 0);
            lua_replace(L, 3);
        }
        lua_setiuservalue(L, 1, UV_KEY);
        m->set |= SET_KEY;
    } else if (strcmp(k, "value") == 0) {
        if (t != LUA_TSTRING && t != LUA_TNIL) {
            return luaL_error(L, "msg.value: expected a string or nil, got "
                                 "a %s (set msg.json for a table)",
                              luaL_typename(L, 3));
        }
        lua_setiuservalue(L, 1, UV_VALUE);
        lua_pushnil(L);
        lua_setiuservalue(L, 1, UV_JSON);
        m->set = (m->set | SET_VALUE) & ~(unsigned)SET_JSON;
    } else if (strcmp(k, "json") == 0) {
        if (t == LUA_TNIL) {
            return luaL_error(L, "msg.json: cannot be nil (use json.null "
                                 "for a JSON null, msg.value = nil for no "
                                 "value)");
        }
        lua_setiuservalue(L, 1, UV_JSON);
        m->set = (m->set | SET_JSON) & ~(unsigned)SET_VALUE;
        m->json_entries = -1;
    } else if (strcmp(k, "headers") == 0) {
        if (t != LUA_TTABLE) {
            return luaL_error(L, "msg.headers: expected a table, got a %s",
                              luaL_typename(L, 3));
        }
        lua_setiuservalue(L, 1, UV_HEADERS);
        m->set |= SET_HEADERS;
    } else if (strcmp(k, "dedupe_key") == 0) {
        if (t != LUA_TSTRING || lua_rawlen(L, 3) == 0) {
            return luaL_error(L, "msg.dedupe_key: expected a non-empty "
                                 "string");
        }
        lua_setiuservalue(L, 1, UV_DEDUPE);
        m->set |= SET_DEDUPE;
    } else {
        return luaL_error(L, "msg.%s cannot be set (key, value, json, "
                             "headers and dedupe_key can)",
                          k);
    }
    return 0;
}

static int msg_tostring(lua_State *L)
{
    struct lmsg *m = lua_touserdata(L, 1);

    if (m == NULL || m != from_upvalue(L)->msg) {
        return luaL_typeerror(L, 1, MSG_TYPE);
    }

    if (m->in == NULL) {
        lua_pushstring(L, "msg (expired)");
    } else {
        lua_pushfstring(L, "msg %s [%d] offset %I", m->in->topic,
                        (int)m->in->partition, (lua_Integer)m->in->offset);
    }
    return 1;
}

/* Points the msg at in, forgetting what the last call set. */
static void msg_reset(transform_t *t, const struct connector_msg *in,
                      int readonly)
{
    lua_State *L = t->L;

    lua_rawgeti(L, LUA_REGISTRYINDEX, t->msg_ref);
    if (t->msg->set != 0 || t->msg->readonly) {
        /* JSON and headers are cached on read even when nothing was
         * set; key, value and dedupe_key only when set. */
        unsigned set = t->msg->set | SET_JSON | SET_HEADERS;
        static const unsigned uv_flag[UV_COUNT + 1] = {
            0, SET_JSON, SET_HEADERS, SET_KEY, SET_VALUE, SET_DEDUPE,
        };
        for (int i = 1; i <= UV_COUNT; i++) {
            if (set & uv_flag[i]) {
                lua_pushnil(L);
                lua_setiuservalue(L, -2, i);
            }
        }
    }
    t->msg->in = in;
    t->msg->set = 0;
    t->msg->readonly = readonly;
    t->msg->json_entries = -1;
}

/* ---- reading results back ---- */

/* Appends the header(s) of the name and value on top of the stack (a
 * string, or a list of strings), popping both. orig: the input's header
 * of that name, whose bytes are reused where they are the same (nothing
 * to anchor), or NULL. */
static void emit_header(lua_State *L, struct anchor *a,
                        const struct sl_header *orig,
                        struct sl_header **arr, size_t *n,
                        size_t *cap)
{
    const char *name = orig != NULL ? orig->name
                                    : anchor_string(L, a, -2, NULL);
    int is_list = lua_type(L, -1) == LUA_TTABLE;
    lua_Integer count = is_list ? (lua_Integer)lua_rawlen(L, -1) : 1;

    for (lua_Integer v = 1; v <= count; v++) {
        if (is_list) {
            lua_rawgeti(L, -1, v);
        } else {
            lua_pushvalue(L, -1);
        }
        if (lua_type(L, -1) != LUA_TSTRING &&
            lua_type(L, -1) != LUA_TNUMBER) {
            luaL_error(L, "headers[\"%s\"]: expected a string or a list of "
                          "strings, found a %s",
                       name, luaL_typename(L, -1));
        }
        size_t len;
        const char *text = lua_tolstring(L, -1, &len); /* numbers too */
        struct sl_header *h = push_header(L, arr, n, cap);
        h->name = name;
        if (orig != NULL && !is_list && len == orig->value_len &&
            (len == 0 || memcmp(text, orig->value, len) == 0)) {
            h->value = orig->value;
            h->value_len = len;
        } else {
            h->value = anchor_string(L, a, -1, &h->value_len);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
}

/* Appends the headers of the table at idx: names the input has first, in
 * its order, then new names sorted (a stable order for the same script
 * and input). */
static void headers_from_table(transform_t *t, struct anchor *a, int idx,
                               const struct connector_msg *in,
                               struct sl_header **arr, size_t *n,
                               size_t *cap)
{
    lua_State *L = t->L;
    const char *names[64];
    size_t nnames = 0;

    idx = lua_absindex(L, idx);
    for (size_t i = 0; i < in->header_count; i++) {
        size_t j = 0;
        while (j < i && strcmp(in->headers[j].name, in->headers[i].name)) {
            j++;
        }
        if (j < i) {
            continue; /* a repeated name goes out with its first */
        }
        lua_pushstring(L, in->headers[i].name);
        if (lua_rawget(L, idx) == LUA_TNIL) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushstring(L, in->headers[i].name);
        lua_insert(L, -2);
        emit_header(L, a, &in->headers[i], arr, n, cap);
    }
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            luaL_error(L, "headers: names must be strings, found a %s",
                       luaL_typename(L, -1));
        }
        const char *name = lua_tostring(L, -1);
        size_t i = 0;
        while (i < in->header_count && strcmp(in->headers[i].name, name)) {
            i++;
        }
        if (i < in->header_count) {
            continue;
        }
        if (nnames == sizeof(names) / sizeof(names[0])) {
            luaL_error(L, "headers: more than %d new names",
                       (int)(sizeof(names) / sizeof(names[0])));
        }
        size_t at = nnames++;
        while (at > 0 && strcmp(names[at - 1], name) > 0) {
            names[at] = names[at - 1];
            at--;
        }
        names[at] = name; /* a key of the table: alive while it is */
    }
    for (size_t i = 0; i < nnames; i++) {
        lua_pushstring(L, names[i]);
        lua_pushvalue(L, -1);
        lua_rawget(L, idx);
        emit_header(L, a, NULL, arr, n, cap);
    }
}

static int value_is(lua_State *L, int idx, const struct sl_header *h)
{
    size_t len;
    const char *v;

    if (lua_type(L, idx) != LUA_TSTRING) {
        return 0;
    }
    v = lua_tolstring(L, idx, &len);
    return len == h->value_len && (len == 0 || memcmp(v, h->value, len) == 0);
}

/* Whether h[0, n) are in's headers, in order. */
static int headers_same(const struct sl_header *h, size_t n,
                        const struct connector_msg *in)
{
    if (n != in->header_count) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const struct sl_header *g = &in->headers[i];
        if (h[i].value_len != g->value_len || strcmp(h[i].name, g->name) ||
            (g->value_len > 0 && memcmp(h[i].value, g->value, g->value_len))) {
            return 0;
        }
    }
    return 1;
}

/* Whether a header name appears more than once in in. */
static int has_repeat(const struct connector_msg *in)
{
    for (size_t i = 1; i < in->header_count; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(in->headers[i].name, in->headers[j].name) == 0) {
                return 1;
            }
        }
    }
    return 0;
}

/* Whether the headers table at idx still says what in's headers say (a
 * script that only read them), so they go out as they came, in order. */
static int headers_table_equal(lua_State *L, int idx,
                               const struct connector_msg *in)
{
    size_t names = 0;

    idx = lua_absindex(L, idx);
    for (size_t i = 0; i < in->header_count; i++) {
        const struct sl_header *h = &in->headers[i];
        size_t before = 0, total = 0;
        int ok;

        for (size_t j = 0; j < in->header_count; j++) {
            if (strcmp(in->headers[j].name, h->name) == 0) {
                total++;
                before += j < i;
            }
        }
        /* A repeated name reads as a list of its values, in order. */
        if (lua_getfield(L, idx, h->name) == LUA_TTABLE && total > 1) {
            lua_rawgeti(L, -1, (lua_Integer)before + 1);
            ok = lua_rawlen(L, -2) == total && value_is(L, -1, h);
            lua_pop(L, 1);
        } else {
            ok = total == 1 && value_is(L, -1, h);
        }
        lua_pop(L, 1);
        if (!ok) {
            return 0;
        }
        names += before == 0;
    }
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (names-- == 0) {
            lua_pop(L, 1);
            return 0; /* a name the input does not have */
        }
    }
    return 1;
}

/* text[0, len] (with its NUL) copied into b. */
static const char *copy_text(transform_t *t, struct text_buf *b,
                             const char *text, size_t len)
{
    b->p = grow_or_raise(t->L, b->p, &b->cap, len + 1, 1);
    memcpy(b->p, text, len + 1);
    return b->p;
}

/* Encodes the value at idx into b; raises on what JSON cannot hold. */
static const char *encode_into(transform_t *t, int idx, struct text_buf *b,
                               size_t *len, const char *what)
{
    struct sl_error err;
    const char *text = ljson_encode(t->codec, t->L, idx, len, &err);

    if (text == NULL) {
        luaL_error(t->L, "%s: %s", what, err.msg);
    }
    return copy_text(t, b, text, *len);
}

/* Output i's text buffer. */
static struct text_buf *out_text(transform_t *t, size_t i)
{
    size_t had = t->out_text_cap;

    if (i >= had) {
        t->out_text = grow_or_raise(t->L, t->out_text, &t->out_text_cap,
                                    i + 1, sizeof(*t->out_text));
        memset(t->out_text + had, 0,
               (t->out_text_cap - had) * sizeof(*t->out_text));
    }
    return &t->out_text[i];
}

static struct transform_out *new_output(transform_t *t)
{
    struct out_slot *slot;

    t->outs = grow_or_raise(t->L, t->outs, &t->outs_cap, t->nouts + 1,
                            sizeof(*t->outs));
    slot = &t->outs[t->nouts++];
    *slot = (struct out_slot){.hdr_first = NO_HEADERS};
    return &slot->out;
}

/* Remembers output i's JSON table (the value at idx, or none) for the
 * sinks' transforms. */
static void set_outjson(transform_t *t, size_t i, int idx)
{
    lua_State *L = t->L;

    if (idx != 0) {
        idx = lua_absindex(L, idx);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->outjson_ref);
    if (idx != 0) {
        lua_pushvalue(L, idx);
    } else {
        lua_pushnil(L);
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
    lua_pop(L, 1);
    if (idx != 0 && i + 1 > t->outjson_high) {
        t->outjson_high = i + 1;
    }
}

/* Forgets the last message's JSON views, before the next message. */
static void forget_outjson(transform_t *t)
{
    lua_State *L = t->L;

    if (t->outjson_high == 0) {
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->outjson_ref);
    for (size_t i = 0; i < t->outjson_high; i++) {
        lua_pushnil(L);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pop(L, 1);
    t->outjson_high = 0;
}

/* The message as the script left it: output o (msg at stack index 1 of
 * the protected call's frame is at msg_idx). */
static void output_from_msg(transform_t *t, int msg_idx,
                            struct transform_out *o, size_t oi)
{
    lua_State *L = t->L;
    struct lmsg *m = t->msg;
    const struct connector_msg *in = m->in;
    struct anchor *a = &t->run_anchor;
    int changed = 0;

    o->key = in->key;
    o->key_len = in->key_len;
    o->value = in->value;
    o->value_len = in->value_len;
    o->headers = in->headers;
    o->header_count = in->header_count;
    set_outjson(t, oi, 0);
    if (m->set & SET_KEY) {
        lua_getiuservalue(L, msg_idx, UV_KEY);
        if (lua_type(L, -1) == LUA_TSTRING) {
            o->key = anchor_string(L, a, -1, &o->key_len);
        } else {
            o->key = NULL;
            o->key_len = 0;
        }
        lua_pop(L, 1);
        changed = 1;
    }
    if (m->set & SET_VALUE) {
        lua_getiuservalue(L, msg_idx, UV_VALUE);
        if (lua_type(L, -1) == LUA_TSTRING) {
            o->value = anchor_string(L, a, -1, &o->value_len);
        } else {
            o->value = NULL;
            o->value_len = 0;
        }
        lua_pop(L, 1);
        changed = 1;
    }
    if (m->set & SET_JSON) {
        /* The JSON view wins over the text it was decoded from, unless
         * it still says the same (then the text goes as it is). */
        lua_getiuservalue(L, msg_idx, UV_JSON);
        set_outjson(t, oi, -1);
        if (o->value == NULL) {
            o->value = encode_into(t, -1, out_text(t, oi), &o->value_len,
                                   "msg.json");
            changed = 1;
        } else {
            struct sl_error err;
            int same;
            size_t len;
            const char *text = ljson_encode_changed(
                t->codec, L, -1, o->value, o->value_len, m->json_entries,
                &same, &len, &err);
            if (!same) {
                if (text == NULL) {
                    luaL_error(L, "msg.json: %s", err.msg);
                }
                o->value = copy_text(t, out_text(t, oi), text, len);
                o->value_len = len;
                changed = 1;
            }
        }
        lua_pop(L, 1);
    }
    if (m->set & SET_HEADERS) {
        size_t first = t->nhdrs;
        lua_getiuservalue(L, msg_idx, UV_HEADERS);
        headers_from_table(t, a, -1, in, &t->hdrs, &t->nhdrs, &t->hdrs_cap);
        /* The headers as they came go out as they came; with a repeated
         * name in them, the list reads the same in another order. */
        if (headers_same(t->hdrs != NULL ? t->hdrs + first : NULL,
                         t->nhdrs - first, in) ||
            (has_repeat(in) && headers_table_equal(L, -1, in))) {
            t->nhdrs = first;
        } else {
            t->outs[oi].hdr_first = first;
            o->header_count = t->nhdrs - first;
            changed = 1;
        }
        lua_pop(L, 1);
    }
    if (m->set & SET_DEDUPE) {
        lua_getiuservalue(L, msg_idx, UV_DEDUPE);
        o->dedupe_key = anchor_string(L, a, -1, NULL);
        lua_pop(L, 1);
        changed = 1;
    }
    o->unchanged = !changed;
}

/* A message table {key=, value=, json=, headers=, dedupe_key=}: fields
 * left out are the message's as the script left it. */
static void output_from_table(transform_t *t, int msg_idx, int idx,
                              struct transform_out *o, size_t oi)
{
    lua_State *L = t->L;
    struct anchor *a = &t->run_anchor;

    idx = lua_absindex(L, idx);
    output_from_msg(t, msg_idx, o, oi);
    o->unchanged = 0;
    switch (lua_getfield(L, idx, "key")) {
    case LUA_TNIL:
        break;
    case LUA_TSTRING:
        o->key = anchor_string(L, a, -1, &o->key_len);
        break;
    case LUA_TBOOLEAN:
        if (!lua_toboolean(L, -1)) {
            o->key = NULL;
            o->key_len = 0;
            break;
        }
        /* fallthrough */
    default:
        luaL_error(L, "message %d: key: expected a string or false, got a %s",
                   (int)oi + 1, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    int has_value = lua_getfield(L, idx, "value") != LUA_TNIL;
    int has_json = lua_getfield(L, idx, "json") != LUA_TNIL;
    if (has_value && has_json) {
        luaL_error(L, "message %d: set value or json, not both", (int)oi + 1);
    }
    if (has_json) {
        set_outjson(t, oi, -1);
        o->value = encode_into(t, -1, out_text(t, oi), &o->value_len,
                               "json");
    } else if (has_value) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            o->value = anchor_string(L, a, -2, &o->value_len);
        } else if (lua_type(L, -2) == LUA_TBOOLEAN && !lua_toboolean(L, -2)) {
            o->value = NULL;
            o->value_len = 0;
        } else {
            luaL_error(L, "message %d: value: expected a string, got a %s",
                       (int)oi + 1, luaL_typename(L, -2));
        }
        set_outjson(t, oi, 0);
    }
    lua_pop(L, 2);
    if (lua_getfield(L, idx, "headers") != LUA_TNIL) {
        if (!lua_istable(L, -1)) {
            luaL_error(L, "message %d: headers: expected a table, got a %s",
                       (int)oi + 1, luaL_typename(L, -1));
        }
        size_t first = t->nhdrs;
        headers_from_table(t, a, -1, t->msg->in, &t->hdrs, &t->nhdrs,
                           &t->hdrs_cap);
        t->outs[oi].hdr_first = first;
        o->header_count = t->nhdrs - first;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "dedupe_key") != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TSTRING) {
            luaL_error(L, "message %d: dedupe_key: expected a string",
                       (int)oi + 1);
        }
        o->dedupe_key = anchor_string(L, a, -1, NULL);
    }
    lua_pop(L, 1);
}

/* Each part of a split needs a dedupe key of its own, or a sink would
 * take the second part for a duplicate of the first: <input's>#n for
 * the parts whose script chose none. */
static void name_split_parts(transform_t *t)
{
    lua_State *L = t->L;

    for (size_t i = 0; t->nouts > 1 && i < t->nouts; i++) {
        struct transform_out *o = &t->outs[i].out;
        if (o->dedupe_key == NULL) {
            lua_pushfstring(L, "%s#%d", t->msg->in->dedupe_key, (int)i + 1);
            o->dedupe_key = anchor_string(L, &t->run_anchor, -1, NULL);
            o->unchanged = 0;
            lua_pop(L, 1);
        }
    }
}

/* The pipeline transform, in protected mode: upvalue 1 is t. */
static int run_protected(lua_State *L)
{
    transform_t *t = lua_touserdata(L, 1);

    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->msg_ref); /* 1: msg */
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->pipeline_fn);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1); /* 2: the result */
    anchor_push(L, &t->run_anchor); /* 3 */
    switch (lua_type(L, 2)) {
    case LUA_TNIL:
        return 0;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, 2)) {
            break;
        }
        return 0;
    case LUA_TUSERDATA:
        if (lua_rawequal(L, 1, 2)) {
            output_from_msg(t, 1, new_output(t), 0);
            return 0;
        }
        break;
    case LUA_TTABLE:
        if (lua_rawgeti(L, 2, 1) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushnil(L);
            if (lua_next(L, 2) == 0) {
                return 0; /* {}: nothing out */
            }
            lua_pop(L, 2);
            output_from_table(t, 1, 2, new_output(t), 0);
            return 0;
        }
        lua_pop(L, 1);
        lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, 2, i);
            size_t oi = t->nouts;
            if (lua_touserdata(L, -1) == t->msg) {
                output_from_msg(t, 1, new_output(t), oi);
            } else if (lua_istable(L, -1)) {
                output_from_table(t, 1, -1, new_output(t), oi);
            } else {
                return luaL_error(L, "%s: transform returned a list whose "
                                     "item %d is a %s (expected a message "
                                     "or a table)",
                                  base_name(t->spec.transform), (int)i,
                                  luaL_typename(L, -1));
            }
            lua_pop(L, 1);
        }
        name_split_parts(t);
        return 0;
    }
    return luaL_error(L, "%s: transform must return the message, nil (to "
                         "drop it) or a list of messages, not a %s",
                      base_name(t->spec.transform), luaL_typename(L, 2));
}

int transform_run(transform_t *t, const struct connector_msg *in,
                  struct sl_error *err)
{
    lua_State *L;
    int rc;

    t->nouts = 0;
    t->nhdrs = 0;
    if (t->L != NULL) {
        forget_outjson(t);
        ljson_codec_forget(t->codec);
    }
    if (t->pipeline_fn == LUA_NOREF) {
        struct out_slot *outs = grow(t->outs, &t->outs_cap, 1,
                                     sizeof(*t->outs));
        if (outs == NULL) {
            return sl_error_set(err, "out of memory");
        }
        t->outs = outs;
        outs[0] = (struct out_slot){
            .out = {.unchanged = 1,
                    .key = in->key,
                    .key_len = in->key_len,
                    .value = in->value,
                    .value_len = in->value_len,
                    .headers = in->headers,
                    .header_count = in->header_count},
            .hdr_first = NO_HEADERS,
        };
        t->nouts = 1;
        return 1;
    }
    L = t->L;
    t->script_path = t->spec.transform;
    msg_reset(t, in, 0);
    lua_pop(L, 1);
    anchor_begin(L, &t->run_anchor);
    rc = script_call(t->script, run_protected, t, err);
    t->msg->in = NULL;
    anchor_end(L, &t->run_anchor);
    if (rc != 0) {
        t->nouts = 0;
        return -1;
    }
    for (size_t i = 0; i < t->nouts; i++) {
        if (t->outs[i].hdr_first != NO_HEADERS) {
            t->outs[i].out.headers = t->hdrs + t->outs[i].hdr_first;
        }
    }
    return (int)t->nouts;
}

/* dedupe.key's function, in protected mode: upvalue 1 is t. */
static int key_protected(lua_State *L)
{
    transform_t *t = lua_touserdata(L, 1);
    size_t len = 0;
    const char *key = NULL;
    char num[32];

    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->key_fn);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->msg_ref);
    lua_call(L, 1, 1);
    if (lua_isinteger(L, 1)) {
        snprintf(num, sizeof(num), "%lld", (long long)lua_tointeger(L, 1));
        key = num;
        len = strlen(num);
    } else if (lua_type(L, 1) == LUA_TSTRING) {
        key = lua_tolstring(L, 1, &len);
    } else if (!lua_isnil(L, 1)) {
        return luaL_error(L, "%s: %s must return a string, an integer or "
                             "nil, not a %s",
                          base_name(t->spec.transform), t->spec.dedupe_fn,
                          luaL_typename(L, 1));
    }
    if (key != NULL && len > 0 && len < t->key_cap &&
        memchr(key, '\0', len) == NULL) {
        memcpy(t->key_out, key, len);
        t->key_out[len] = '\0';
    } else {
        t->key_out[0] = '\0';
    }
    return 0;
}

const char *transform_dedupe_key(transform_t *t,
                                 const struct connector_msg *in, char *out,
                                 size_t cap, struct sl_error *err)
{
    err->msg[0] = '\0';
    if (t->key_fn == LUA_NOREF || cap == 0) {
        return NULL;
    }
    t->script_path = t->spec.transform;
    t->key_out = out;
    t->key_cap = cap;
    out[0] = '\0';
    msg_reset(t, in, 1);
    lua_pop(t->L, 1);
    int rc = script_call(t->script, key_protected, t, err);
    t->msg->in = NULL;
    return rc == 0 && out[0] != '\0' ? out : NULL;
}

const struct transform_out *transform_output(const transform_t *t, size_t i)
{
    return i < t->nouts ? &t->outs[i].out : NULL;
}

void transform_output_view(const transform_t *t, size_t i,
                           const struct connector_msg *in,
                           struct connector_msg *view)
{
    const struct transform_out *o = &t->outs[i].out;

    *view = *in;
    if (o->unchanged) {
        return;
    }
    view->key = o->key;
    view->key_len = o->key_len;
    view->value = o->value;
    view->value_len = o->value_len;
    view->headers = o->headers;
    view->header_count = o->header_count;
    if (o->dedupe_key != NULL) {
        view->dedupe_key = o->dedupe_key;
    }
}

/* ---- sink transforms ---- */

enum request_field { RQ_BODY, RQ_JSON, RQ_METHOD, RQ_PATH, RQ_HEADERS,
                     RQ_UNKNOWN };

static enum request_field request_field(lua_State *L, int idx)
{
    static const char *const names[] = {"body", "json", "method", "path",
                                        "headers"};
    size_t len;
    const char *k;

    if (lua_type(L, idx) != LUA_TSTRING) {
        return RQ_UNKNOWN;
    }
    k = lua_tolstring(L, idx, &len);
    for (int i = 0; i < RQ_UNKNOWN; i++) {
        if (names[i][0] == k[0] && strlen(names[i]) == len &&
            memcmp(names[i], k, len) == 0) {
            return (enum request_field)i;
        }
    }
    return RQ_UNKNOWN;
}

/* The request table at idx, in one pass over its fields. */
static void request_from_table(transform_t *t, int idx)
{
    static const struct connector_msg none = {0};
    lua_State *L = t->L;
    const char *script = t->script_path;
    struct transform_request *req = &t->shaped[t->call_sink].req;
    struct anchor *a = &t->shape_anchor;
    int has_body = 0;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        enum request_field f = request_field(L, -2);
        int type = lua_type(L, -1);

        switch (f) {
        case RQ_BODY:
        case RQ_JSON:
            if (has_body++) {
                luaL_error(L, "%s: set body or json, not both",
                           base_name(script));
            }
            if (f == RQ_JSON) {
                req->body = encode_into(t, -1, &t->req_text[t->call_sink],
                                        &req->body_len, "json");
            } else if (type == LUA_TSTRING) {
                req->body = anchor_string(L, a, -1, &req->body_len);
            } else {
                luaL_error(L, "%s: body: expected a string, got a %s (use "
                              "json = ... for a table)",
                           base_name(script), luaL_typename(L, -1));
            }
            break;
        case RQ_METHOD:
        case RQ_PATH:
            if (type != LUA_TSTRING) {
                luaL_error(L, "%s: %s: expected a string, got a %s",
                           base_name(script),
                           f == RQ_METHOD ? "method" : "path",
                           luaL_typename(L, -1));
            }
            *(f == RQ_METHOD ? &req->method : &req->path) =
                anchor_string(L, a, -1, NULL);
            break;
        case RQ_HEADERS:
            if (type != LUA_TTABLE) {
                luaL_error(L, "%s: headers: expected a table, got a %s",
                           base_name(script), luaL_typename(L, -1));
            }
            headers_from_table(t, a, -1, &none, &t->req_hdrs, &t->req_nhdrs,
                               &t->req_hdrs_cap);
            break;
        default:
            if (lua_type(L, -2) == LUA_TSTRING) {
                luaL_error(L, "%s: unknown request field \"%s\" (body, "
                              "json, method, path and headers are)",
                           base_name(script), lua_tostring(L, -2));
            }
            luaL_error(L, "%s: a request's fields are named by strings, "
                          "not a %s",
                       base_name(script), luaL_typename(L, -2));
        }
        lua_pop(L, 1);
    }
}

/* Sink t->call_sink's transform on the msg at stack slot msg, in the
 * protected call whose anchor table is at slot 2; leaves the stack as
 * it found it. */
static void shape_one(transform_t *t, int msg)
{
    lua_State *L = t->L;
    size_t k = t->call_sink;
    struct transform_shaped *sh = &t->shaped[k];
    struct transform_request *req = &sh->req;
    struct anchor *a = &t->shape_anchor;
    int base = lua_gettop(L), res, had_json = t->msg->set & SET_JSON;

    *req = (struct transform_request){0};
    sh->result = TRANSFORM_SEND;
    t->req_hdr_first[k] = t->req_nhdrs;
    if (t->msg->set & SET_HEADERS) {
        lua_pushnil(L);
        lua_setiuservalue(L, msg, UV_HEADERS);
        t->msg->set &= ~(unsigned)SET_HEADERS;
    }
    if (!had_json) {
        /* The output's JSON table, when the pipeline transform (or an
         * earlier sink's) decoded it. */
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->outjson_ref);
        if (lua_rawgeti(L, -1, (lua_Integer)t->call_output + 1) !=
            LUA_TNIL) {
            lua_setiuservalue(L, msg, UV_JSON);
            t->msg->set |= SET_JSON;
            had_json = 1;
        } else {
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->sink_fn[k]);
    lua_pushvalue(L, msg);
    lua_call(L, 1, 1);
    res = lua_gettop(L);
    /* A JSON view this call decoded serves the next sinks too. */
    if (!had_json && lua_getiuservalue(L, msg, UV_JSON) != LUA_TNIL) {
        set_outjson(t, t->call_output, -1);
    }
    lua_settop(L, res);
    switch (lua_type(L, res)) {
    case LUA_TNIL:
        sh->result = TRANSFORM_SKIP;
        break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, res)) {
            goto bad;
        }
        sh->result = TRANSFORM_SKIP;
        break;
    case LUA_TSTRING:
        req->body = anchor_string(L, a, res, &req->body_len);
        break;
    case LUA_TUSERDATA:
        if (!lua_rawequal(L, msg, res)) {
            goto bad;
        }
        break;
    case LUA_TTABLE:
        request_from_table(t, res);
        break;
    default:
        goto bad;
    }
    req->header_count = t->req_nhdrs - t->req_hdr_first[k];
    lua_settop(L, base);
    return;
bad:
    luaL_error(L, "%s: transform must return a request table, a body "
                  "string, the message, or nil (to skip), not a %s",
               base_name(t->script_path), luaL_typename(L, res));
}

/* The sinks' transforms from t->call_sink up to t->call_end, each with a
 * budget of its own; an error stops the call at the sink that raised it
 * (t->call_sink). */
static int shape_protected(lua_State *L)
{
    transform_t *t = lua_touserdata(L, 1);

    anchor_push(L, &t->shape_anchor); /* 2 */
    msg_reset(t, t->call_msg, 1);     /* 3: msg */
    for (; t->call_sink < t->call_end; t->call_sink++) {
        size_t k = t->call_sink;
        if (t->sink_fn[k] == LUA_NOREF) {
            t->shaped[k] = (struct transform_shaped){0};
            continue;
        }
        t->script_path = t->spec.sinks[k].transform;
        script_budget_reset(t->script);
        shape_one(t, 3);
    }
    return 0;
}

/* Runs the sinks' transforms [first, end) on output `output`, one
 * protected call for all of them unless one fails. */
static void shape_range(transform_t *t, size_t first, size_t end,
                        size_t output, const struct connector_msg *msg)
{
    lua_State *L = t->L;
    size_t k = first;

    while (k < end && t->sink_fn[k] == LUA_NOREF) {
        t->shaped[k++] = (struct transform_shaped){0};
    }
    if (k == end) {
        return; /* no script to run (or no Lua state at all) */
    }
    t->req_nhdrs = 0;
    t->call_sink = k;
    t->call_end = end;
    t->call_output = output;
    t->call_msg = msg;
    anchor_begin(L, &t->shape_anchor);
    while (t->call_sink < t->call_end) {
        struct sl_error err;
        if (script_call(t->script, shape_protected, t, &err) == 0) {
            break;
        }
        struct transform_shaped *sh = &t->shaped[t->call_sink];
        sh->result = -1;
        sh->req = (struct transform_request){0};
        sh->err = err;
        t->call_sink++;
    }
    t->msg->in = NULL;
    anchor_end(L, &t->shape_anchor);
    /* The header array may have moved while it grew. */
    for (k = first; k < end; k++) {
        struct transform_shaped *sh = &t->shaped[k];
        if (sh->result != -1 && sh->req.header_count > 0) {
            sh->req.headers = t->req_hdrs + t->req_hdr_first[k];
        }
    }
}

int transform_shape(transform_t *t, size_t sink, size_t output,
                    const struct connector_msg *msg,
                    struct transform_request *req, struct sl_error *err)
{
    const struct transform_shaped *sh;

    *req = (struct transform_request){0};
    if (t->sink_fn[sink] == LUA_NOREF) {
        return TRANSFORM_SEND;
    }
    shape_range(t, sink, sink + 1, output, msg);
    sh = &t->shaped[sink];
    if (sh->result == -1) {
        *err = sh->err;
        return -1;
    }
    *req = sh->req;
    return sh->result;
}

const struct transform_shaped *transform_shape_all(transform_t *t,
                                                   size_t output,
                                                   const struct connector_msg
                                                       *msg)
{
    shape_range(t, 0, t->nsinks, output, msg);
    return t->shaped;
}

/* ---- retry policies ---- */

static void set_string(lua_State *L, const char *field, const char *v,
                       size_t len)
{
    lua_pushlstring(L, v, len);
    lua_setfield(L, -2, field);
}

static void set_integer(lua_State *L, const char *field, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, field);
}

/* The retry delay at idx into d; raises on anything but 0..1 day in ms. */
static int retry_delay(lua_State *L, int idx, struct sl_decision *d,
                       const char *name)
{
    int ok;
    lua_Number ms = lua_tonumberx(L, idx, &ok);

    if (!ok || !(ms >= 0 && ms <= 86400000.0)) {
        return luaL_error(L, "%s: retry: the delay must be a number of "
                             "milliseconds from 0 to 86400000",
                          name);
    }
    d->delay_ms = (int64_t)ms;
    return 0;
}

static int retry_protected(lua_State *L)
{
    transform_t *t = lua_touserdata(L, 1);
    const struct transform_attempt *a = t->call_attempt;
    const struct connector_result *r = a->result;
    const struct connector_msg *m = a->msg;
    struct sl_decision *d = t->call_decision;
    const char *name = base_name(t->spec.sinks[t->call_sink].retry);

    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->retry_fn[t->call_sink]);
    lua_createtable(L, 0, 20);
    set_string(L, "sink", a->sink, strlen(a->sink));
    set_integer(L, "attempt", a->attempt);
    set_integer(L, "elapsed_ms", a->elapsed_ms);
    if (r->http_status > 0) {
        set_integer(L, "status", r->http_status);
    } else {
        set_string(L, "error", r->error, strlen(r->error));
    }
    if (r->retry_after_ms >= 0) {
        set_integer(L, "retry_after_ms", r->retry_after_ms);
    }
    lua_pushboolean(L, r->status == CONNECTOR_RETRY);
    lua_setfield(L, -2, "retryable");
    lua_createtable(L, 0, (int)r->response_header_count);
    for (size_t i = 0; i < r->response_header_count; i++) {
        set_string(L, r->response_headers[i].name,
                   r->response_headers[i].value,
                   r->response_headers[i].value_len);
    }
    lua_setfield(L, -2, "headers");
    if (r->body != NULL) {
        set_string(L, "body", r->body, r->body_len);
    }
    set_integer(L, "backoff_ms", t->spec.retry_backoff_ms);
    set_integer(L, "backoff_max_ms", t->spec.retry_backoff_max_ms);
    set_string(L, "topic", m->topic, strlen(m->topic));
    set_integer(L, "partition", m->partition);
    set_integer(L, "offset", m->offset);
    if (m->key != NULL) {
        set_string(L, "key", m->key, m->key_len);
    }
    set_string(L, "dedupe_key", m->dedupe_key, strlen(m->dedupe_key));
    lua_call(L, 1, 2);

    d->delay_ms = -1;
    d->reason[0] = '\0';
    if (lua_isnil(L, 1)) {
        d->verdict = SL_VERDICT_DEFAULT;
        return 0;
    }
    if (lua_type(L, 1) == LUA_TNUMBER) { /* a delay alone: retry */
        d->verdict = SL_VERDICT_RETRY;
        return retry_delay(L, 1, d, name);
    }
    const char *verdict =
        lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : "";
    if (strcmp(verdict, "retry") == 0) {
        d->verdict = SL_VERDICT_RETRY;
        return lua_isnil(L, 2) ? 0 : retry_delay(L, 2, d, name);
    } else if (strcmp(verdict, "give_up") == 0) {
        d->verdict = SL_VERDICT_GIVE_UP;
        snprintf(d->reason, sizeof(d->reason), "%s",
                 lua_isstring(L, 2) ? lua_tostring(L, 2)
                                    : "the retry policy gave up");
    } else if (strcmp(verdict, "done") == 0) {
        d->verdict = SL_VERDICT_DONE;
    } else {
        return luaL_error(L, "%s: retry must return a delay in ms, \"retry\" "
                             "[, ms], \"give_up\" [, reason], \"done\" or nil",
                          name);
    }
    return 0;
}

int transform_retry(transform_t *t, size_t sink,
                    const struct transform_attempt *a,
                    struct sl_decision *d, struct sl_error *err)
{
    lua_State *L = t->L;

    if (t->retry_fn[sink] == LUA_NOREF) {
        d->verdict = SL_VERDICT_DEFAULT;
        return 0;
    }
    t->script_path = t->spec.sinks[sink].retry;
    t->call_sink = sink;
    t->call_attempt = a;
    t->call_decision = d;
    msg_reset(t, a->msg, 1); /* for log lines' tags */
    lua_pop(L, 1);
    int rc = script_call(t->script, retry_protected, t, err);
    t->msg->in = NULL;
    return rc;
}

/* ---- the log and sluice modules ---- */

static int log_at(lua_State *L, enum log_level level)
{
    transform_t *t = from_upvalue(L);
    const struct connector_msg *in = t->msg != NULL ? t->msg->in : NULL;
    const char *text = script_join_args(L, " ");
    const char *script = t->script_path ? base_name(t->script_path) : "?";

    if (in != NULL) {
        log_write(level, "lua %s: %s [%d] offset %lld: %s", script,
                  in->topic, (int)in->partition, (long long)in->offset,
                  text);
    } else {
        log_write(level, "lua %s: %s", script, text);
    }
    return 0;
}

static int log_debug_fn(lua_State *L) { return log_at(L, LOG_DEBUG); }
static int log_info_fn(lua_State *L) { return log_at(L, LOG_INFO); }
static int log_warn_fn(lua_State *L) { return log_at(L, LOG_WARN); }
static int log_error_fn(lua_State *L) { return log_at(L, LOG_ERROR); }

static uint64_t fnv1a(const char *s, size_t len)
{
    uint64_t h = 14695981039346656037ULL;

    for (size_t i = 0; i < len; i++) {
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    }
    return h;
}

/* sluice.hash(s): FNV-1a 64 as an integer. */
static int sluice_hash(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);

    lua_pushinteger(L, (lua_Integer)fnv1a(s, len));
    return 1;
}

/* sluice.shard(key, n): a stable bucket 0..n-1 for key. */
static int sluice_shard(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer n = luaL_checkinteger(L, 2);

    luaL_argcheck(L, n > 0, 2, "expected a positive count");
    lua_pushinteger(L, (lua_Integer)(fnv1a(s, len) % (uint64_t)n));
    return 1;
}

static int push_clock_ms(lua_State *L, clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    return 1;
}

static int sluice_now_ms(lua_State *L)
{
    return push_clock_ms(L, CLOCK_REALTIME);
}

static int sluice_monotonic_ms(lua_State *L)
{
    return push_clock_ms(L, CLOCK_MONOTONIC);
}

/* sluice.iso8601(ms): "2026-11-29T20:48:02.123Z" (UTC). */
static int sluice_iso8601(lua_State *L)
{
    lua_Integer ms = luaL_checkinteger(L, 1);

    /* Years 0 to 9999, so the arithmetic below cannot overflow. */
    luaL_argcheck(L, ms >= -62167219200000 && ms <= 253402300799999, 1,
                  "time out of range");
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    char text[64];

    if (gmtime_r(&secs, &tm) == NULL) {
        return luaL_error(L, "sluice.iso8601: time out of range");
    }
    size_t n = strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(text + n, sizeof(text) - n, ".%03dZ",
             (int)(ms - (lua_Integer)secs * 1000));
    lua_pushstring(L, text);
    return 1;
}

static void register_module(lua_State *L, const char *name)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
    lua_setglobal(L, name);
}

static int open_modules(lua_State *L)
{
    transform_t *t = lua_touserdata(L, 1);
    static const luaL_Reg log_fns[] = {
        {"debug", log_debug_fn}, {"info", log_info_fn},
        {"warn", log_warn_fn},   {"error", log_error_fn},
        {NULL, NULL},
    };
    static const luaL_Reg sluice_fns[] = {
        {"hash", sluice_hash},
        {"shard", sluice_shard},
        {"now_ms", sluice_now_ms},
        {"monotonic_ms", sluice_monotonic_ms},
        {"iso8601", sluice_iso8601},
        {NULL, NULL},
    };
    static const luaL_Reg msg_meta[] = {
        {"__index", msg_index},
        {"__newindex", msg_newindex},
        {"__tostring", msg_tostring},
        {NULL, NULL},
    };

    ljson_open(L);
    register_module(L, "json");
    luaL_newlibtable(L, log_fns);
    lua_pushlightuserdata(L, t);
    luaL_setfuncs(L, log_fns, 1);
    lua_getfield(L, -1, "info");
    lua_setglobal(L, "print"); /* print is log.info: tagged the same */
    register_module(L, "log");
    luaL_newlib(L, sluice_fns);
    register_module(L, "sluice");

    luaL_newmetatable(L, MSG_TYPE);
    lua_pushlightuserdata(L, t);
    luaL_setfuncs(L, msg_meta, 1); /* __name is MSG_TYPE already */
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable"); /* scripts cannot swap it */
    lua_pop(L, 1);
    t->msg = lua_newuserdatauv(L, sizeof(*t->msg), UV_COUNT);
    memset(t->msg, 0, sizeof(*t->msg));
    t->msg->t = t;
    luaL_setmetatable(L, MSG_TYPE);
    t->msg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    t->outjson_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    t->run_anchor.ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    t->shape_anchor.ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->codec = ljson_codec_of(L);
    return 0;
}

/* ---- lifecycle ---- */

/* Where lua/lib is: SLUICE_LUA_LIB, else beside the binary
 * (bin/../lua/lib), else the source tree the binary was built from. */
static void lib_dir(char *out, size_t cap)
{
    const char *env = getenv("SLUICE_LUA_LIB");
    char exe[4096];
    ssize_t n;

    if (env != NULL && *env != '\0') {
        snprintf(out, cap, "%s", env);
        return;
    }
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash != NULL) {
            *slash = '\0';
        }
        snprintf(out, cap, "%s/../lua/lib", exe);
        if (access(out, R_OK | X_OK) == 0) {
            return;
        }
    }
#ifdef SLUICE_LUA_LIB_DEFAULT
    snprintf(out, cap, "%s", SLUICE_LUA_LIB_DEFAULT);
#else
    snprintf(out, cap, "lua/lib");
#endif
}

/* Loads path in its own environment and takes its function `fn`. */
static int load_function(transform_t *t, const char *path, const char *fn,
                         int *ref, struct sl_error *err)
{
    lua_State *L = t->L;
    int env;

    t->script_path = path;
    env = script_load_env(t->script, path, err);
    if (env < 0) {
        return -1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, env);
    luaL_unref(L, LUA_REGISTRYINDEX, env);
    if (lua_getfield(L, -1, fn) != LUA_TFUNCTION) {
        lua_pop(L, 1);
        /* The nearest function name the file does define: `transfrom`. */
        const char *best = NULL;
        size_t best_dist = 3;
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            if (lua_type(L, -2) == LUA_TSTRING &&
                lua_type(L, -1) == LUA_TFUNCTION) {
                size_t d = sl_edit_distance(fn, lua_tostring(L, -2));
                if (d < best_dist) {
                    best_dist = d;
                    best = lua_tostring(L, -2); /* anchored by the env */
                }
            }
            lua_pop(L, 1);
        }
        sl_error_set(err, "%s: defines no function `%s`%s%s%s", path, fn,
                     best != NULL ? " (did you mean `" : "",
                     best != NULL ? best : "", best != NULL ? "`?)" : "");
        lua_pop(L, 1);
        return -1;
    }
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return 0;
}

/* Where transform_check's errors go; fn NULL: transform_new's build,
 * which stops at the first error. */
struct reporter {
    transform_error_fn *fn;
    void *arg;
    int count;
};

/* "file:line:col: key: msg", or "file: key: msg" without a position. */
static int error_at(struct sl_error *err, const char *file, int line,
                    int col, const char *key, const char *msg)
{
    if (line > 0) {
        return sl_error_set(err, "%s:%d:%d: %s: %s", file, line, col, key,
                            msg);
    }
    return sl_error_set(err, "%s: %s: %s", file, key, msg);
}

/* load_function, with the error also placed at the YAML key that named
 * the script: "pipe.yaml:12:16: sinks.crm.transform: crm.lua:3: ...".
 * To rep when it has a function (every script is tried), and into err. */
static int load_named(transform_t *t, const char *path, const char *fn,
                      int *ref, const char *key, int line, int col,
                      struct reporter *rep, struct sl_error *err)
{
    struct sl_error e;

    if (load_function(t, path, fn, ref, &e) == 0) {
        return 0;
    }
    if (rep->fn != NULL) {
        rep->fn(rep->arg, t->spec.path, line, col, key, e.msg);
        rep->count++;
    }
    return error_at(err, t->spec.path, line, col, key, e.msg);
}

/* Bytes of s with its NUL, in spec_copy's block; 0 for NULL. */
static size_t str_room(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

/* Copies s to *at and moves *at past it; NULL stays NULL. */
static const char *str_keep(char **at, const char *s)
{
    char *p = *at;

    if (s == NULL) {
        return NULL;
    }
    size_t n = strlen(s) + 1;
    memcpy(p, s, n);
    *at += n;
    return p;
}

/* spec into t->spec, its sinks and strings into one block (t->spec_mem,
 * the sinks first so that they are aligned): the caller's spec may go
 * once transform_new returns. 0 or -1 (no memory). */
static int spec_copy(transform_t *t, const struct transform_spec *spec)
{
    size_t sinks = spec->sink_count * sizeof(*spec->sinks);
    size_t room = sinks + str_room(spec->path) + str_room(spec->dir) +
                  str_room(spec->transform) + str_room(spec->dedupe_fn) +
                  str_room(spec->shard_separator);

    for (size_t i = 0; i < spec->sink_count; i++) {
        room += str_room(spec->sinks[i].name) +
                str_room(spec->sinks[i].transform) +
                str_room(spec->sinks[i].retry);
    }
    t->spec_mem = malloc(room > 0 ? room : 1);
    if (t->spec_mem == NULL) {
        return -1;
    }
    struct transform_sink_spec *copy = t->spec_mem;
    char *at = (char *)t->spec_mem + sinks;
    t->spec = *spec;
    t->spec.path = str_keep(&at, spec->path);
    t->spec.dir = str_keep(&at, spec->dir);
    t->spec.transform = str_keep(&at, spec->transform);
    t->spec.dedupe_fn = str_keep(&at, spec->dedupe_fn);
    t->spec.shard_separator = str_keep(&at, spec->shard_separator);
    for (size_t i = 0; i < spec->sink_count; i++) {
        copy[i] = spec->sinks[i];
        copy[i].name = str_keep(&at, spec->sinks[i].name);
        copy[i].transform = str_keep(&at, spec->sinks[i].transform);
        copy[i].retry = str_keep(&at, spec->sinks[i].retry);
    }
    t->spec.sinks = copy;
    return 0;
}

static transform_t *build(const struct transform_spec *spec,
                          struct reporter *rep, struct sl_error *err);

transform_t *transform_new(const struct transform_spec *spec,
                           struct sl_error *err)
{
    struct reporter none = {0};

    return build(spec, &none, err);
}

int transform_check(const struct transform_spec *spec,
                    transform_error_fn *report, void *arg)
{
    struct sl_error err;
    struct reporter rep = {.fn = report, .arg = arg};
    transform_t *t = build(spec, &rep, &err);

    /* A failure before any script (no memory): one error for the file. */
    if (t == NULL && rep.count == 0) {
        report(arg, spec->path, 0, 0, "", err.msg);
    }
    int rc = t != NULL ? 0 : -1;
    transform_destroy(t);
    return rc;
}

static transform_t *build(const struct transform_spec *spec,
                          struct reporter *rep, struct sl_error *err)
{
    transform_t *t = calloc(1, sizeof(*t));
    char lib[4096];

    if (t == NULL) {
        sl_error_set(err, "out of memory");
        return NULL;
    }
    t->pipeline_fn = LUA_NOREF;
    t->key_fn = LUA_NOREF;
    if (spec_copy(t, spec) != 0) {
        sl_error_set(err, "out of memory");
        goto fail;
    }
    spec = &t->spec;
    t->nsinks = spec->sink_count;
    t->sink_fn = malloc((t->nsinks + 1) * sizeof(int));
    t->retry_fn = malloc((t->nsinks + 1) * sizeof(int));
    t->req_text = calloc(t->nsinks + 1, sizeof(*t->req_text));
    t->shaped = calloc(t->nsinks + 1, sizeof(*t->shaped));
    t->req_hdr_first = calloc(t->nsinks + 1, sizeof(*t->req_hdr_first));
    if (t->sink_fn == NULL || t->retry_fn == NULL || t->req_text == NULL ||
        t->shaped == NULL || t->req_hdr_first == NULL) {
        sl_error_set(err, "out of memory");
        goto fail;
    }
    int any = spec->transform != NULL;
    for (size_t i = 0; i < t->nsinks; i++) {
        t->sink_fn[i] = t->retry_fn[i] = LUA_NOREF;
        any |= spec->sinks[i].transform != NULL ||
               spec->sinks[i].retry != NULL;
    }
    if (!any) {
        return t;
    }
    lib_dir(lib, sizeof(lib));
    const char *dirs[3], **dir = dirs;
    if (spec->dir != NULL) {
        *dir++ = spec->dir;
    }
    *dir++ = lib;
    *dir = NULL;
    t->script = script_new(&spec->limits, dirs, err);
    if (t->script == NULL) {
        goto fail;
    }
    t->L = script_state(t->script);
    lua_pushcfunction(t->L, open_modules);
    lua_pushlightuserdata(t->L, t);
    if (script_pcall(t->script, 1, 0, err) != 0 || t->codec == NULL) {
        if (t->codec == NULL) {
            sl_error_set(err, "out of memory");
        }
        goto fail;
    }
    /* When reporting, every script is loaded and every error reported. */
    int all = rep->fn != NULL;
    int failed = 0;
    if (spec->transform != NULL) {
        failed += load_named(t, spec->transform, "transform", &t->pipeline_fn,
                             "transform", spec->transform_line,
                             spec->transform_col, rep, err) != 0;
    }
    if (spec->transform != NULL && spec->dedupe_fn != NULL &&
        (failed == 0 || all)) {
        failed += load_named(t, spec->transform, spec->dedupe_fn, &t->key_fn,
                             "dedupe.key", spec->dedupe_line,
                             spec->dedupe_col, rep, err) != 0;
    }
    for (size_t i = 0; i < t->nsinks && (failed == 0 || all); i++) {
        const struct transform_sink_spec *s = &spec->sinks[i];
        char key[300];
        if (s->transform != NULL) {
            snprintf(key, sizeof(key), "sinks.%s.transform", s->name);
            failed += load_named(t, s->transform, "transform",
                                 &t->sink_fn[i], key, s->transform_line,
                                 s->transform_col, rep, err) != 0;
        }
        if (s->retry != NULL && (failed == 0 || all)) {
            snprintf(key, sizeof(key), "sinks.%s.retry", s->name);
            failed += load_named(t, s->retry, "retry", &t->retry_fn[i], key,
                                 s->retry_line, s->retry_col, rep,
                                 err) != 0;
        }
    }
    if (failed > 0) {
        goto fail;
    }
    t->script_path = NULL;
    return t;
fail:
    transform_destroy(t);
    return NULL;
}

void transform_destroy(transform_t *t)
{
    if (t == NULL) {
        return;
    }
    script_destroy(t->script); /* frees the codec with the state */
    free(t->sink_fn);
    free(t->retry_fn);
    free(t->outs);
    free(t->hdrs);
    free(t->req_hdrs);
    for (size_t i = 0; i < t->out_text_cap; i++) {
        free(t->out_text[i].p);
    }
    free(t->out_text);
    for (size_t k = 0; t->req_text != NULL && k < t->nsinks; k++) {
        free(t->req_text[k].p);
    }
    free(t->req_text);
    free(t->shaped);
    free(t->req_hdr_first);
    free(t->spec_mem);
    free(t);
}

int transform_active(const transform_t *t)
{
    return t->L != NULL;
}

int transform_has_pipeline(const transform_t *t)
{
    return t->pipeline_fn != LUA_NOREF;
}

int transform_has_sink(const transform_t *t, size_t sink)
{
    return t->sink_fn[sink] != LUA_NOREF;
}

int transform_has_retry(const transform_t *t, size_t sink)
{
    return t->retry_fn[sink] != LUA_NOREF;
}

size_t transform_memory(const transform_t *t)
{
    return t->script != NULL ? script_memory(t->script) : 0;
}
