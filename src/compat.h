/* compat.h: the handful of Lua C API differences between Lua 5.4 and LuaJIT (5.1 API)
 * that the core uses, so one source builds for both flavours without #ifdefs elsewhere. */
#ifndef ZD_COMPAT_H
#define ZD_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
#define zd_rawlen(L, i) lua_objlen((L), (i))
static inline int zd_absindex(lua_State *L, int i)
{
    return (i > 0 || i <= LUA_REGISTRYINDEX) ? i : lua_gettop(L) + i + 1;
}
static inline void zd_rawgetp(lua_State *L, int t, const void *p)
{
    t = zd_absindex(L, t);
    lua_pushlightuserdata(L, (void *)p);
    lua_rawget(L, t);
}
static inline void zd_rawsetp(lua_State *L, int t, const void *p)
{
    t = zd_absindex(L, t);
    lua_pushlightuserdata(L, (void *)p);
    lua_insert(L, -2);
    lua_rawset(L, t);
}
#else
#define zd_rawlen(L, i) lua_rawlen((L), (i))
#define zd_absindex(L, i) lua_absindex((L), (i))
#define zd_rawgetp(L, t, p) ((void)lua_rawgetp((L), (t), (p)))
#define zd_rawsetp(L, t, p) lua_rawsetp((L), (t), (p))
#endif

/* lualib.h names the io library's file metatable; LuaJIT's lauxlib.h does not */
#ifndef LUA_FILEHANDLE
#define LUA_FILEHANDLE "FILE*"
#endif

/* Whether an io file userdata is closed: Lua 5.2+ clears closef and leaves the FILE pointer
 * dangling; LuaJIT clears the pointer. */
#if LUA_VERSION_NUM >= 502
#define zd_file_closed(ud) (((luaL_Stream *)(ud))->closef == NULL)
#else
#define zd_file_closed(ud) (*(FILE **)(ud) == NULL)
#endif

/* Lua 5.3+ has a distinct integer subtype; on LuaJIT every number is a double. */
#if LUA_VERSION_NUM >= 503
#define ZD_HAS_INTEGERS 1
#define zd_isinteger(L, i) lua_isinteger((L), (i))
#define zd_pushid(L, v) lua_pushinteger((L), (lua_Integer)(v))
#else
#define ZD_HAS_INTEGERS 0
#define zd_isinteger(L, i) 0
#define zd_pushid(L, v) lua_pushnumber((L), (lua_Number)(v))
#endif

#endif
