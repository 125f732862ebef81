/* lzendesk.c: the module zendesk.core: luaopen_zendesk_core, the module's functions (JSON,
 * errors, time, validation helpers) and the metatables; the client is client.c's. */
#include <curl/curl.h>
#include "response.h"

extern const char zd_array_mt_key;
extern const char zd_object_mt_key;
/* the registry key of the set of array keys (core.json_config) */
static const char json_arrays_key = 'k';

int zd_json_arrays_push(lua_State *L)
{
    zd_rawgetp(L, LUA_REGISTRYINDEX, &json_arrays_key);
    return lua_gettop(L);
}

/* json_config{arrays = {key = true, ...}}: the codec's configuration for this Lua state, as
 * lua-cjson's json_config_t: keys whose empty table is encoded as [] (zendesk.api sets the keys
 * Zendesk's payloads hold arrays under). Returns the previous set. */
static int core_json_config(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "arrays");
    if (!lua_istable(L, 2))
        return luaL_argerror(L, 1, "arrays must be a table {key = true, ...}");
    zd_json_arrays_push(L);
    lua_pushvalue(L, 2);
    zd_rawsetp(L, LUA_REGISTRYINDEX, &json_arrays_key);
    return 1;
}

/* encode(value [, root]) -> json | nil, err */
static int core_encode(lua_State *L)
{
    char err[256];
    zd_json_config cfg;
    zd_buf *b;
    cfg.root = luaL_optstring(L, 2, "value");
    luaL_checkany(L, 1);
    lua_settop(L, 2);
    cfg.arrays = zd_json_arrays_push(L);
    b = zd_box_push(L);
    if (!zd_json_encode(L, 1, b, &cfg, err, sizeof err)) {
        lua_pushnil(L);
        zd_error_push(L, "validation", err);
        return 2;
    }
    lua_pushlstring(L, b->p ? b->p : "", b->len);
    zd_buf_free(b);
    return 1;
}

/* decode(json) -> value | nil, err */
static int core_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (zd_json_decode(L, s, n) == 2) {
        const char *msg = lua_tostring(L, -1);
        lua_pop(L, 1);
        zd_error_push(L, "validation", msg);
        return 2;
    }
    return 1;
}

/* error{...} -> the same table with the error metatable: one error type for C and Lua */
static int core_error(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_getmetatable(L, ZD_ERROR_MT);
    lua_setmetatable(L, 1);
    return 1;
}

static int core_is_error(lua_State *L)
{
    int yes = 0;
    if (lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, ZD_ERROR_MT);
        yes = lua_rawequal(L, -1, -2);
    }
    lua_pushboolean(L, yes);
    return 1;
}

static int core_sleep(lua_State *L)
{
    zd_sleep(luaL_checknumber(L, 1));
    return 0;
}

static int core_now(lua_State *L)
{
    lua_pushnumber(L, zd_now());
    return 1;
}

/* valid_email(s) -> boolean: false for anything but a string (numbers included), like the
 * Lua check it replaced; the rules are in email.c */
static int core_valid_email(lua_State *L)
{
    size_t n;
    const char *s;
    if (lua_type(L, 1) != LUA_TSTRING) {
        lua_pushboolean(L, 0);
        return 1;
    }
    s = lua_tolstring(L, 1, &n);
    lua_pushboolean(L, zd_valid_email(s, n));
    return 1;
}

/* utf8_check(s [, i, j]) -> nil | byte: the first byte (1-based, in s) of s[i..j] that the JSON
 * encoder would refuse, so that validation refuses a row by the encoder's own rules, at the
 * cost of one scan (a range: a whole CSV line at once, without making it a string) */
static int core_utf8_check(lua_State *L)
{
    size_t n, i, k;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    lua_Integer a = luaL_optinteger(L, 2, 1), b = luaL_optinteger(L, 3, (lua_Integer)n);
    if (a < 1)
        a = 1;
    if (b > (lua_Integer)n)
        b = (lua_Integer)n;
    i = (size_t)a - 1;
    n = b < a ? i : (size_t)b;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        if (!(k = zd_utf8_len(s + i, n - i))) {
            lua_pushinteger(L, (lua_Integer)(i + 1));
            return 1;
        }
        i += k;
    }
    lua_pushnil(L);
    return 1;
}

static const luaL_Reg functions[] = {
    {"new", zd_client_new},
    {"encode", core_encode},
    {"json_config", core_json_config},
    {"decode", core_decode},
    {"error", core_error},
    {"is_error", core_is_error},
    {"sleep", core_sleep},
    {"now", core_now},
    {"valid_email", core_valid_email},
    {"utf8_check", core_utf8_check},
    {NULL, NULL}
};

static void shape_marker(lua_State *L, const char *name, const void *key)
{
    lua_newtable(L);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    zd_rawsetp(L, LUA_REGISTRYINDEX, key);
    lua_setfield(L, -2, name);
}

__attribute__((visibility("default"))) int luaopen_zendesk_core(lua_State *L)
{
    curl_version_info_data *cv;
    /* curl_global_init is not thread-safe before libcurl 7.84; this runs under the
     * loader's lock in nginx and once per process elsewhere */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return luaL_error(L, "zendesk.core: curl_global_init failed");
    cv = curl_version_info(CURLVERSION_NOW);

    zd_client_register(L);

    luaL_newmetatable(L, ZD_ERROR_MT);
    lua_pushcfunction(L, zd_error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newmetatable(L, ZD_BOX_MT);
    lua_pushcfunction(L, zd_box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    lua_newtable(L);
    luaL_setfuncs(L, functions, 0);
    zd_files_register(L);
    lua_pushlightuserdata(L, NULL);   /* the same value as cjson.null, so nulls round-trip */
    lua_setfield(L, -2, "null");
    shape_marker(L, "array_mt", &zd_array_mt_key);
    shape_marker(L, "object_mt", &zd_object_mt_key);
    lua_pushliteral(L, ZD_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, cv->version);
    lua_setfield(L, -2, "curl_version");
    lua_pushboolean(L, (cv->features & CURL_VERSION_LIBZ) != 0);
    lua_setfield(L, -2, "gzip");
    return 1;
}
