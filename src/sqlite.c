/* zendesk.sqlite: the small SQLite binding behind the sync's state store (lua/zendesk/state.lua).
 * Its own module, not linked into zendesk.core: a sync without a state needs no libsqlite3.
 * Prepared statements only: values reach SQL through sqlite3_bind_*, never through the text.
 *
 *   db, err = sqlite.open(path [, readonly])     (a file; readonly never creates it)
 *   ok, err = db:exec(sql)                        (fixed SQL only: schema, BEGIN, COMMIT)
 *   st, err = db:prepare(sql)
 *   db:close()                                    (idempotent; statements then refuse to run)
 *   v1, ... = st:run(...)  binds the arguments (nil, boolean, integer, number, string), steps
 *             once and answers the first row's columns; true when no row; nil, err on an error.
 *             The statement is reset after the step, so it can be run again.
 *   st:each(...) -> iterator over the rows' columns (the statement is reset at the end)
 *   st:close()
 *   h = sqlite.hash(s)  64-bit FNV-1a of s, as 16 hex digits
 */
#include <sqlite3.h>
#include <string.h>
#include <stdint.h>

#include "compat.h"

#define DB_MT "zendesk.sqlite.db"
#define ST_MT "zendesk.sqlite.stmt"

typedef struct {
    sqlite3 *db;
} zdb;

typedef struct {
    sqlite3_stmt *st;
    zdb *owner;
    int ref;      /* registry reference that keeps the owner alive */
} zst;

static int push_err(lua_State *L, sqlite3 *db, int rc)
{
    lua_pushnil(L);
    lua_pushfstring(L, "sqlite: %s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return 2;
}

static zdb *check_db(lua_State *L)
{
    zdb *d = (zdb *)luaL_checkudata(L, 1, DB_MT);
    if (!d->db) luaL_error(L, "sqlite: database is closed");
    return d;
}

static int l_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int ro = lua_toboolean(L, 2);
    zdb *d = (zdb *)lua_newuserdata(L, sizeof *d);
    d->db = NULL;
    luaL_getmetatable(L, DB_MT);
    lua_setmetatable(L, -2);
    int flags = ro ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int rc = sqlite3_open_v2(path, &d->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        lua_pushnil(L);
        lua_pushfstring(L, "sqlite: %s: %s", path, d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc));
        sqlite3_close_v2(d->db);
        d->db = NULL;
        return 2;
    }
    sqlite3_busy_timeout(d->db, 5000);
    return 1;
}

static int l_exec(lua_State *L)
{
    zdb *d = check_db(L);
    const char *sql = luaL_checkstring(L, 2);
    int rc = sqlite3_exec(d->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) return push_err(L, d->db, rc);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_prepare(lua_State *L)
{
    zdb *d = check_db(L);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    zst *s = (zst *)lua_newuserdata(L, sizeof *s);
    s->st = NULL;
    s->owner = d;
    s->ref = LUA_NOREF;
    luaL_getmetatable(L, ST_MT);
    lua_setmetatable(L, -2);
    int rc = sqlite3_prepare_v2(d->db, sql, (int)len + 1, &s->st, NULL);
    if (rc != SQLITE_OK) return push_err(L, d->db, rc);
    lua_pushvalue(L, 1);
    s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int l_db_close(lua_State *L)
{
    zdb *d = (zdb *)luaL_checkudata(L, 1, DB_MT);
    if (d->db) {
        /* v2: with statements not finalized yet, the connection closes when the last one is */
        sqlite3_close_v2(d->db);
        d->db = NULL;
    }
    return 0;
}

static int l_changes(lua_State *L)
{
    zdb *d = check_db(L);
    lua_pushinteger(L, sqlite3_changes(d->db));
    return 1;
}

static zst *check_st(lua_State *L)
{
    zst *s = (zst *)luaL_checkudata(L, 1, ST_MT);
    if (!s->st) luaL_error(L, "sqlite: statement is closed");
    if (!s->owner->db) luaL_error(L, "sqlite: database is closed");
    return s;
}

static int bind_args(lua_State *L, zst *s, int from)
{
    int n = lua_gettop(L) - from + 1;
    int want = sqlite3_bind_parameter_count(s->st);
    if (n > want) return luaL_error(L, "sqlite: %d values for %d parameters", n, want);
    sqlite3_clear_bindings(s->st);
    for (int i = 1; i <= n; i++) {
        int idx = from + i - 1, rc;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            rc = sqlite3_bind_null(s->st, i);
            break;
        case LUA_TBOOLEAN:
            rc = sqlite3_bind_int(s->st, i, lua_toboolean(L, idx));
            break;
        case LUA_TNUMBER: {
#if LUA_VERSION_NUM >= 503
            if (lua_isinteger(L, idx)) {
                rc = sqlite3_bind_int64(s->st, i, (sqlite3_int64)lua_tointeger(L, idx));
                break;
            }
#endif
            lua_Number x = lua_tonumber(L, idx);
            if (x == (lua_Number)(sqlite3_int64)x && x > -9007199254740992.0 && x < 9007199254740992.0)
                rc = sqlite3_bind_int64(s->st, i, (sqlite3_int64)x);
            else
                rc = sqlite3_bind_double(s->st, i, (double)x);
            break;
        }
        case LUA_TSTRING: {
            size_t len;
            const char *v = lua_tolstring(L, idx, &len);
            rc = sqlite3_bind_text(s->st, i, v, (int)len, SQLITE_TRANSIENT);
            break;
        }
        default:
            return luaL_error(L, "sqlite: cannot bind a %s (parameter %d)", luaL_typename(L, idx), i);
        }
        if (rc != SQLITE_OK) return luaL_error(L, "sqlite: bind %d: %s", i, sqlite3_errstr(rc));
    }
    return 0;
}

static void push_column(lua_State *L, sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER: {
        sqlite3_int64 v = sqlite3_column_int64(st, i);
#if LUA_VERSION_NUM >= 503
        lua_pushinteger(L, (lua_Integer)v);
#else
        lua_pushnumber(L, (lua_Number)v);
#endif
        break;
    }
    case SQLITE_FLOAT:
        lua_pushnumber(L, sqlite3_column_double(st, i));
        break;
    case SQLITE_NULL:
        lua_pushnil(L);
        break;
    default:
        lua_pushlstring(L, (const char *)sqlite3_column_text(st, i), (size_t)sqlite3_column_bytes(st, i));
        break;
    }
}

static int l_run(lua_State *L)
{
    zst *s = check_st(L);
    sqlite3_reset(s->st);
    bind_args(L, s, 2);
    int rc = sqlite3_step(s->st);
    if (rc == SQLITE_ROW) {
        int n = sqlite3_column_count(s->st);
        luaL_checkstack(L, n, "sqlite: too many columns");
        for (int i = 0; i < n; i++) push_column(L, s->st, i);
        sqlite3_reset(s->st);
        return n;
    }
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s->st);
        lua_pushboolean(L, 1);
        return 1;
    }
    sqlite3_reset(s->st);
    return push_err(L, s->owner->db, rc);
}

static int each_next(lua_State *L)
{
    zst *s = check_st(L);
    int rc = sqlite3_step(s->st);
    if (rc == SQLITE_ROW) {
        int n = sqlite3_column_count(s->st);
        luaL_checkstack(L, n, "sqlite: too many columns");
        for (int i = 0; i < n; i++) push_column(L, s->st, i);
        return n;
    }
    sqlite3_reset(s->st);
    if (rc == SQLITE_DONE) return 0;
    return luaL_error(L, "sqlite: %s", sqlite3_errmsg(s->owner->db));
}

static int l_each(lua_State *L)
{
    zst *s = check_st(L);
    sqlite3_reset(s->st);
    bind_args(L, s, 2);
    lua_pushcfunction(L, each_next);
    lua_pushvalue(L, 1);
    return 2;
}

static int l_st_close(lua_State *L)
{
    zst *s = (zst *)luaL_checkudata(L, 1, ST_MT);
    if (s->st) {
        sqlite3_finalize(s->st);
        s->st = NULL;
    }
    if (s->ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
        s->ref = LUA_NOREF;
    }
    return 0;
}

/* 64-bit FNV-1a, as core.digest does for files */
static int l_hash(lua_State *L)
{
    size_t len;
    const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 1, &len);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    char out[17];
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[h & 15];
        h >>= 4;
    }
    lua_pushlstring(L, out, 16);
    return 1;
}

static void new_mt(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    for (; methods->name; methods++) {
        lua_pushcfunction(L, methods->func);
        lua_setfield(L, -2, methods->name);
    }
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

__attribute__((visibility("default"))) int luaopen_zendesk_sqlite(lua_State *L)
{
    static const luaL_Reg db_methods[] = {
        {"exec", l_exec}, {"prepare", l_prepare}, {"close", l_db_close}, {"changes", l_changes},
        {NULL, NULL}};
    static const luaL_Reg st_methods[] = {
        {"run", l_run}, {"each", l_each}, {"close", l_st_close}, {NULL, NULL}};
    new_mt(L, DB_MT, db_methods, l_db_close);
    new_mt(L, ST_MT, st_methods, l_st_close);
    lua_newtable(L);
    lua_pushcfunction(L, l_open);
    lua_setfield(L, -2, "open");
    lua_pushcfunction(L, l_hash);
    lua_setfield(L, -2, "hash");
    lua_pushstring(L, sqlite3_libversion());
    lua_setfield(L, -2, "sqlite_version");
    return 1;
}
