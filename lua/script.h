/* script.h -- a sandboxed Lua 5.4 state for one lane's scripts.
 *
 * The foundation of transforms and retry policies: a state whose standard
 * library has no way out (no io, os.execute, debug, dofile/loadfile or
 * binary chunks), whose memory is capped by its allocator, and whose
 * every call runs under an instruction budget through one protected-call
 * wrapper. A script that breaks a limit gets an error for that call; the
 * state stays usable. `require` loads only from the pipeline's own
 * directory and from lua/lib. */
#ifndef SLUICE_SCRIPT_H
#define SLUICE_SCRIPT_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct script script_t;
struct lua_State;

struct script_limits {
    size_t memory_bytes;  /* the whole state; 0: 64 MiB */
    int64_t instructions; /* per call, in VM instructions; 0: 10 million */
    int64_t time_limit_ms; /* per call, wall clock; 0: 1000 */
};

/* Creates a state; search_dirs is a NULL-terminated list of directories
 * `require` may load from (copied). Returns NULL with err filled. */
script_t *script_new(const struct script_limits *limits,
                     const char *const *search_dirs, struct sl_error *err);

/* Loads and runs the file at path (text only) in an environment of its
 * own: the globals it defines stay there, and reads fall through to the
 * sandbox's globals, so files cannot clobber each other. Returns a
 * registry reference to that environment (>= 0), or -1 with err filled
 * ("path:line: message"). */
int script_load_env(script_t *s, const char *path, struct sl_error *err);

/* Calls the function on the stack below its nargs arguments, under the
 * instruction budget, the time limit and a call depth limit, leaving nresults results. On error, err holds the
 * message (with a traceback's first line) and nothing is left on the
 * stack. 0 or -1. */
int script_pcall(script_t *s, int nargs, int nresults, struct sl_error *err);

/* Gives the running call a fresh instruction budget and deadline: for a
 * protected call that runs several scripts one after another, each its
 * own. A call that already broke a limit stays failed. */
void script_budget_reset(script_t *s);

/* fn(arg) in protected mode under the budget, as script_pcall does with a
 * light userdata argument and no results: the transforms' entry points
 * into C code that calls the scripts. 0 or -1 with err. */
int script_call(script_t *s, int (*fn)(struct lua_State *), void *arg,
                struct sl_error *err);

/* Joins a C function's arguments as tostring() shows them, with sep
 * between: pushes the text and returns it (print, log.*). */
const char *script_join_args(struct lua_State *L, const char *sep);

/* For C functions that may run long on a script's behalf (json, string
 * building): charges `work` units (about one per byte or element handled)
 * to the running call's budget, and raises a Lua error ("budget
 * exceeded ...") once the budget or the call's deadline is spent. Call it
 * every few KiB of work, not per byte. A no-op outside a sandboxed call. */
void script_charge(struct lua_State *L, size_t work);
/* Memory a C function takes on a script's behalf, counted against the
 * state's cap like Lua's own (NULL when it would pass the cap: raise
 * "not enough memory"). script_c_free(L, p, n) gives back what
 * script_c_alloc(L, n) or script_c_realloc(L, p, old, n) returned. */
void *script_c_alloc(struct lua_State *L, size_t n);
void *script_c_realloc(struct lua_State *L, void *p, size_t old, size_t n);
void script_c_free(struct lua_State *L, void *p, size_t n);
/* The state, for pushing arguments and reading results. */
struct lua_State *script_state(script_t *s);

/* Bytes the state holds now. */
size_t script_memory(const script_t *s);

/* Frees the state; script_destroy(NULL) is a no-op. */
void script_destroy(script_t *s);

#endif
