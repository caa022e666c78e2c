/* strbuild.h -- string and table building that checks sizes first and
 * counts its work.
 *
 * string.rep, string.format, table.concat, table.move and table.sort with
 * the stock semantics, except that a result too large for the state
 * fails before anything is allocated, and every long loop charges the
 * running call's budget (script_charge), so the instruction budget and
 * lua.time_limit hold inside them as in Lua code. */
#ifndef SLUICE_STRBUILD_H
#define SLUICE_STRBUILD_H

struct lua_State;

/* Replaces rep and format in the string library table at index idx. */
void strbuild_open_string(struct lua_State *L, int idx);
/* Replaces concat, move and sort in the table library table at index idx. */
void strbuild_open_table(struct lua_State *L, int idx);

#endif
