/* json_encode_fuzz.c: libFuzzer target for the Lua -> JSON encoder (zd_json_encode in
 * src/json.c). The input is a small program that builds Lua values: integers of every size,
 * doubles (NaN, infinities), strings with invalid UTF-8 and control bytes, null, nested tables,
 * arrays with holes, float / boolean / huge integer keys, mixed keys, cycles, the array / object
 * markers and values JSON cannot hold. Every value must encode or fail with a message, never
 * crash; whatever encodes must be JSON that cjson reads back, and an integer must come back
 * exactly through zd_json_decode. (Until 6ea3ad2 an integer key near 2^63 made put_table convert
 * a double out of the int64 range: undefined behaviour that UBSan reports.) */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "zd.h"

extern const char zd_array_mt_key;
extern const char zd_object_mt_key;

static lua_State *L;
/* tables stored at more than one place: JSON repeats them, so n such links can make 2^n of text
 * (a real property of JSON, not a finding); a few keep the run fast */
static int shares;
#define MAX_SHARES 10

static const char *const keys[] = {
    "tags", "identities", "users", "ids", "name", "email", "user_fields", "results", "a", "",
    "with space", "\xff\xfe", "\"quote\\", "k\n", "external_ids", "job_statuses"
};

typedef struct {
    const uint8_t *p, *end;
} rd;

static unsigned byte(rd *r)
{
    return r->p < r->end ? *r->p++ : 0;
}

static uint64_t u64(rd *r)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < 8; i++)
        v = (v << 8) | byte(r);
    return v;
}

static void push_key_string(lua_State *l, rd *r)
{
    unsigned b = byte(r);
    if (b & 0x80) {
        size_t n = b & 0x1f;
        if (n > (size_t)(r->end - r->p))
            n = (size_t)(r->end - r->p);
        lua_pushlstring(l, (const char *)r->p, n);
        r->p += n;
    } else {
        lua_pushstring(l, keys[b % (sizeof keys / sizeof keys[0])]);
    }
}

static void set_marker(lua_State *l, int t, const char *key)
{
    lua_pushlightuserdata(l, (void *)key);
    lua_rawget(l, LUA_REGISTRYINDEX);
    if (lua_istable(l, -1))
        lua_setmetatable(l, t);
    else
        lua_pop(l, 1);
}

static int build(lua_State *l)
{
    rd *r = lua_touserdata(l, 1);
    int base, ops = 0;
    lua_settop(l, 0);
    lua_newtable(l);   /* 1: the root, so that there is always a table to work on */
    base = 1;
    while (r->p < r->end && ops++ < 400) {
        unsigned op = byte(r) % 20;
        int top = lua_gettop(l);
        if (top > 60 && op < 9)
            op = 9 + op;   /* keep the stack bounded: turn pushes into stores */
        switch (op) {
        case 0: lua_pushinteger(l, (lua_Integer)u64(r)); break;
        case 1: lua_pushinteger(l, (lua_Integer)(int8_t)byte(r)); break;
        case 2: {
            uint64_t bits = u64(r);
            double d;
            memcpy(&d, &bits, sizeof d);
            lua_pushnumber(l, d);
            break;
        }
        case 3: {
            size_t n = byte(r);
            if (n > (size_t)(r->end - r->p))
                n = (size_t)(r->end - r->p);
            lua_pushlstring(l, (const char *)r->p, n);
            r->p += n;
            break;
        }
        case 4: lua_pushboolean(l, byte(r) & 1); break;
        case 5: lua_pushlightuserdata(l, NULL); break;   /* zendesk.null */
        case 6: lua_newtable(l); break;
        case 7: lua_pushnumber(l, (double)(int8_t)byte(r) + 0.5); break;
        case 8:
            switch (byte(r) % 4) {
            case 0: lua_pushcfunction(l, build); break;
            case 1: lua_newuserdata(l, 1); break;
            case 2: lua_pushlightuserdata(l, (void *)r); break;
            default: lua_pushnumber(l, (double)(lua_Integer)u64(r) * 1024.0); break;
            }
            break;
        default:
            if (top < 2 || !lua_istable(l, top - 1)) {
                if (top > base)
                    lua_pop(l, 1);   /* nothing to store into: drop the value */
                break;
            }
            switch (op) {
            case 9: case 10: case 11:   /* t[string] = v */
                push_key_string(l, r);
                lua_insert(l, -2);
                lua_rawset(l, top - 1);
                break;
            case 12: case 13:           /* t[#t + 1] = v */
                lua_rawseti(l, top - 1, (lua_Integer)zd_rawlen(l, top - 1) + 1);
                break;
            case 14:                    /* t[small or huge integer] = v */
                if (byte(r) & 1)
                    lua_rawseti(l, top - 1, (lua_Integer)(int8_t)byte(r));
                else
                    lua_rawseti(l, top - 1, (lua_Integer)u64(r));
                break;
            case 15: {                  /* t[float or boolean] = v */
                unsigned k = byte(r);
                if (k & 1)
                    lua_pushnumber(l, (double)(int8_t)byte(r) + 0.25);
                else
                    lua_pushboolean(l, k & 2);
                lua_insert(l, -2);
                lua_rawset(l, top - 1);
                break;
            }
            case 16: {                  /* a cycle: t stores itself or a table below it */
                int target = 1 + (int)(byte(r) % (unsigned)(top - 1));
                lua_pop(l, 1);
                if (lua_istable(l, target) && ++shares <= MAX_SHARES) {
                    push_key_string(l, r);
                    lua_pushvalue(l, byte(r) & 1 ? target : top - 1);
                    lua_rawset(l, target == top - 1 ? top - 1 : target);
                }
                break;
            }
            case 17:                    /* the array / object markers */
                if (lua_istable(l, top))
                    set_marker(l, top, byte(r) & 1 ? &zd_array_mt_key : &zd_object_mt_key);
                break;
            case 18:                    /* close a level: pop the value into its parent */
                lua_rawseti(l, top - 1, (lua_Integer)zd_rawlen(l, top - 1) + 1);
                break;
            default: {
                int at = 1 + (int)(byte(r) % (unsigned)top);
                if (lua_istable(l, at) && ++shares > MAX_SHARES)
                    lua_pushnil(l);
                else
                    lua_pushvalue(l, at);
                break;
            }
            }
        }
    }
    return lua_gettop(l);
}

static int check_decode(lua_State *l)
{
    size_t n;
    const char *s = lua_tolstring(l, 1, &n);
    return zd_json_decode(l, s, n);
}

static void encode_one(int idx)
{
    zd_buf out = {0};
    char err[256];
    zd_json_config cfg = {"value", 0};
    memset(err, 'x', sizeof err);
    if (zd_json_encode(L, idx, &out, &cfg, err, sizeof err)) {
        int top = lua_gettop(L);
        if (!out.p)
            abort();
        lua_pushcfunction(L, check_decode);
        lua_pushlstring(L, out.p, out.len);
        if (lua_pcall(L, 1, LUA_MULTRET, 0) != 0 || lua_gettop(L) != top + 1) {
            fprintf(stderr, "encoded text does not decode: %.*s\n", (int)(out.len > 300 ? 300 : out.len), out.p);
            abort();
        }
        if (lua_isinteger(L, idx) &&
            (!lua_isinteger(L, -1) || lua_tointeger(L, -1) != lua_tointeger(L, idx))) {
            fprintf(stderr, "integer %lld came back as %s\n", (long long)lua_tointeger(L, idx),
                    luaL_tolstring(L, -1, NULL));
            abort();
        }
        lua_settop(L, top);
    } else {
        if (memchr(err, '\0', sizeof err) == NULL || err[0] == '\0') {
            fprintf(stderr, "encode failed without a message\n");
            abort();
        }
    }
    zd_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rd r;
    int n, i;
    if (!L) {
        L = luaL_newstate();
        luaL_openlibs(L);
        lua_newtable(L);
        lua_pushlightuserdata(L, (void *)&zd_array_mt_key);
        lua_insert(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
        lua_newtable(L);
        lua_pushlightuserdata(L, (void *)&zd_object_mt_key);
        lua_insert(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    r.p = data;
    r.end = data + size;
    shares = 0;
    lua_settop(L, 0);
    lua_pushcfunction(L, build);
    lua_pushlightuserdata(L, &r);
    if (lua_pcall(L, 1, LUA_MULTRET, 0) != 0) {
        lua_settop(L, 0);
        return 0;
    }
    n = lua_gettop(L);
    for (i = 1; i <= n; i++)
        encode_one(i);
    lua_settop(L, 0);
    /* every allocation of this input freed again: libFuzzer's leak check stays quiet and cheap */
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
