/* strmatch.h -- Lua 5.4's pattern matching, with its work counted.
 *
 * string.find, string.match, string.gmatch and string.gsub with the stock
 * semantics, but the matcher charges its steps to the running call's
 * budget (script_charge), so a pathological pattern ends with the call's
 * "budget exceeded" error instead of running for minutes. */
#ifndef SLUICE_STRMATCH_H
#define SLUICE_STRMATCH_H

struct lua_State;

/* Replaces find, match, gmatch and gsub in the string library table at
 * index idx (the string metatable's __index is that table, so s:find()
 * gets them too). */
void strmatch_open(struct lua_State *L, int idx);

#endif
