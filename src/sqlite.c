/* zendesk.sqlite: the small SQLite binding behind the sync's state store (lua/zendesk/state.lua).
 * Its own module, not linked into zendesk.core: a sync without a state needs no libsqlite3.
 * Prepared statements only: values reach SQL through sqlite3_bind_*, never through the text.
 *
 *   db, err = sqlite.open(path [, readonly [, immutable]])   (a file; readonly never creates it;
 *             immutable: a file nothing else writes meanwhile, read without its -wal and -shm
 *             files, so that reading it creates nothing, even in a read-only directory)
 *   ok, err = db:exec(sql)                        (fixed SQL only: schema, BEGIN, COMMIT)
 *   st, err = db:prepare(sql)
 *   db:close()                                    (idempotent; statements then refuse to run)
 *   v1, ... = st:run(...)  binds the arguments (nil, boolean, integer, number, string), steps
 *             once and answers the first row's columns; true when no row; nil, err on an error.
 *             The statement is reset after the step, so it can be run again.
 *   st:each(...) -> iterator over the rows' columns (the statement is reset at the end)
 *   st:close()
 *   h = sqlite.hash(s)  64-bit FNV-1a of s, as 16 hex digits
 *   s = sqlite.canonical(v [, null])   canonical JSON of a Lua value: object keys sorted by
 *       bytes, strings escaped (", \, control bytes), integral numbers below 2^53 as integers
 *       (the same text under Lua 5.4 and LuaJIT), `null` (e.g. core.null) written null
 *   h = sqlite.digest(v [, null])      hash(canonical(v)) without building the string
 */
#include <sqlite3.h>
#include <string.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <math.h>

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
    size_t plen;
    const char *path = luaL_checklstring(L, 1, &plen);
    int ro = lua_toboolean(L, 2), immutable = ro && lua_toboolean(L, 3);
    const char *name = path;
    int flags = ro ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (immutable) {
        /* file:<path, percent-encoded>?immutable=1 */
        static const char hex[] = "0123456789ABCDEF";
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addstring(&b, "file:");
        for (size_t i = 0; i < plen; i++) {
            unsigned char c = (unsigned char)path[i];
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' ||
                c == '-' || c == '_' || c == '.' || c == '~') {
                luaL_addchar(&b, (char)c);
            } else {
                luaL_addchar(&b, '%');
                luaL_addchar(&b, hex[c >> 4]);
                luaL_addchar(&b, hex[c & 15]);
            }
        }
        luaL_addstring(&b, "?immutable=1");
        luaL_pushresult(&b);
        name = lua_tostring(L, -1);
        flags |= SQLITE_OPEN_URI;
    }
    zdb *d = (zdb *)lua_newuserdata(L, sizeof *d);
    d->db = NULL;
    luaL_getmetatable(L, DB_MT);
    lua_setmetatable(L, -2);
    int rc = sqlite3_open_v2(name, &d->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
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

/* Canonical JSON, streamed into a sink: a 64-bit FNV-1a state, or a growing buffer. Never raises
 * (no leak on a Lua error): too deep a value or an allocation failure answers -1. */
typedef struct {
    uint64_t h;
    char *buf;    /* NULL: hash only */
    size_t len, cap;
    int null_idx; /* stack index of the null sentinel, 0 when none */
    int failed;
} sink;

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static void emit(sink *k, const char *p, size_t n)
{
    if (k->failed) return;
    if (!k->buf && k->cap == 0) {
        uint64_t h = k->h;
        for (size_t i = 0; i < n; i++) {
            h ^= (unsigned char)p[i];
            h *= FNV_PRIME;
        }
        k->h = h;
        return;
    }
    if (k->len + n > k->cap) {
        size_t cap = k->cap * 2;
        while (cap < k->len + n) cap *= 2;
        char *nb = (char *)realloc(k->buf, cap);
        if (!nb) {
            k->failed = 1;
            return;
        }
        k->buf = nb;
        k->cap = cap;
    }
    memcpy(k->buf + k->len, p, n);
    k->len += n;
}

static void emit_string(sink *k, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    emit(k, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c < 0x20) {
            emit(k, s + run, i - run);
            run = i + 1;
            if (c == '"') emit(k, "\\\"", 2);
            else if (c == '\\') emit(k, "\\\\", 2);
            else {
                char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                emit(k, u, 6);
            }
        }
    }
    emit(k, s + run, n - run);
    emit(k, "\"", 1);
}

static void emit_number(lua_State *L, sink *k, int idx)
{
    char b[40];
    int n;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        n = snprintf(b, sizeof b, "%lld", (long long)lua_tointeger(L, idx));
        emit(k, b, (size_t)n);
        return;
    }
#endif
    double x = (double)lua_tonumber(L, idx);
    /* not JSON, and never equal to a valid row's text (the encoder refuses them) */
    if (x != x) n = snprintf(b, sizeof b, "nan");
    else if (x == HUGE_VAL || x == -HUGE_VAL) n = snprintf(b, sizeof b, x > 0 ? "inf" : "-inf");
    else if (x == floor(x) && fabs(x) < 9007199254740992.0) n = snprintf(b, sizeof b, "%.0f", x);
    else n = snprintf(b, sizeof b, "%.17g", x);
    emit(k, b, (size_t)n);
}

typedef struct {
    const char *s;
    size_t n;
    char tmp[32];  /* a number key, written as text */
} ckey;

static int ckey_cmp(const void *a, const void *b)
{
    const ckey *x = (const ckey *)a, *y = (const ckey *)b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

static int canon(lua_State *L, sink *k, int idx, int depth)
{
    if (depth > 64 || !lua_checkstack(L, 4)) return -1;
    idx = zd_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        emit_string(k, s, n);
        return 0;
    }
    case LUA_TNUMBER:
        emit_number(L, k, idx);
        return 0;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) emit(k, "true", 4);
        else emit(k, "false", 5);
        return 0;
    case LUA_TTABLE:
        break;
    default:
        /* nil, the null sentinel; anything else the encoder would have refused */
        if (k->null_idx && lua_rawequal(L, idx, k->null_idx)) emit(k, "null", 4);
        else if (lua_isnil(L, idx)) emit(k, "null", 4);
        else emit(k, "?", 1);
        return 0;
    }
    size_t len = zd_rawlen(L, idx), count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        lua_pop(L, 1);
    }
    if (len > 0 && count == len) {
        emit(k, "[", 1);
        for (size_t i = 1; i <= len; i++) {
            if (i > 1) emit(k, ",", 1);
            lua_rawgeti(L, idx, (int)i);
            int rc = canon(L, k, -1, depth + 1);
            lua_pop(L, 1);
            if (rc) return rc;
        }
        emit(k, "]", 1);
        return 0;
    }
    ckey *keys = count ? (ckey *)malloc(count * sizeof *keys) : NULL;
    if (count && !keys) return -1;
    size_t nk = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (nk >= count) continue;
        ckey *c = &keys[nk];
        if (lua_type(L, -1) == LUA_TSTRING) {
            c->s = lua_tolstring(L, -1, &c->n);   /* the table holds the key: the pointer stays valid */
        } else if (lua_type(L, -1) == LUA_TNUMBER) {
            double x = (double)lua_tonumber(L, -1);
            int n = (x == floor(x) && fabs(x) < 9007199254740992.0) ? snprintf(c->tmp, sizeof c->tmp, "%.0f", x)
                                                                       : snprintf(c->tmp, sizeof c->tmp, "%.17g", x);
            c->s = c->tmp;
            c->n = (size_t)n;
        } else {
            c->s = "?";
            c->n = 1;
        }
        nk++;
    }
    /* number keys point into their own struct: sort indexes, not structs */
    size_t *order = nk ? (size_t *)malloc(nk * sizeof *order) : NULL;
    if (nk && !order) {
        free(keys);
        return -1;
    }
    for (size_t i = 0; i < nk; i++) order[i] = i;
    /* insertion sort over indexes (users have tens of keys) */
    for (size_t i = 1; i < nk; i++) {
        size_t v = order[i], j = i;
        while (j > 0 && ckey_cmp(&keys[order[j - 1]], &keys[v]) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
    int rc = 0;
    emit(k, "{", 1);
    for (size_t i = 0; i < nk && !rc; i++) {
        ckey *c = &keys[order[i]];
        if (i > 0) emit(k, ",", 1);
        emit_string(k, c->s, c->n);
        emit(k, ":", 1);
        if (c->s == c->tmp) {
            /* a number key: look the value up by the number */
            lua_pushlstring(L, c->s, c->n);
            lua_Number x = lua_tonumber(L, -1);
            lua_pop(L, 1);
            lua_pushnumber(L, x);
            lua_rawget(L, idx);
        } else {
            lua_pushlstring(L, c->s, c->n);
            lua_rawget(L, idx);
        }
        rc = canon(L, k, -1, depth + 1);
        lua_pop(L, 1);
    }
    emit(k, "}", 1);
    free(order);
    free(keys);
    return rc;
}

static int l_canonical(lua_State *L)
{
    luaL_checkany(L, 1);
    sink k = {FNV_OFFSET, NULL, 0, 256, lua_isnoneornil(L, 2) ? 0 : 2, 0};
    k.buf = (char *)malloc(k.cap);
    if (!k.buf) return luaL_error(L, "sqlite.canonical: out of memory");
    int rc = canon(L, &k, 1, 0);
    if (rc || k.failed) {
        free(k.buf);
        return luaL_error(L, "sqlite.canonical: value nested too deep or out of memory");
    }
    lua_pushlstring(L, k.buf, k.len);
    free(k.buf);
    return 1;
}

static void push_hex(lua_State *L, uint64_t h)
{
    char out[17];
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[h & 15];
        h >>= 4;
    }
    lua_pushlstring(L, out, 16);
}

static int l_digest(lua_State *L)
{
    luaL_checkany(L, 1);
    sink k = {FNV_OFFSET, NULL, 0, 0, lua_isnoneornil(L, 2) ? 0 : 2, 0};
    if (canon(L, &k, 1, 0)) return luaL_error(L, "sqlite.digest: value nested too deep");
    push_hex(L, k.h);
    return 1;
}

/* 64-bit FNV-1a, as core.digest does for files */
static int l_hash(lua_State *L)
{
    size_t len;
    const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 1, &len);
    uint64_t h = FNV_OFFSET;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    push_hex(L, h);
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
    lua_pushcfunction(L, l_canonical);
    lua_setfield(L, -2, "canonical");
    lua_pushcfunction(L, l_digest);
    lua_setfield(L, -2, "digest");
    lua_pushstring(L, sqlite3_libversion());
    lua_setfield(L, -2, "sqlite_version");
    return 1;
}
