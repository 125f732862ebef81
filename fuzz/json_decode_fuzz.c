/* json_decode_fuzz.c: libFuzzer target for the JSON -> Lua conversion (zd_json_decode in
 * src/json.c, our one-pass decoder). Any input must give a value or (nil, message) without a
 * crash; no integral number within the int64 range may stay a float; for a flat array of
 * integer literals every element must come back exactly (integers above 2^53 included: before
 * 6ea3ad2 two that rounded alike both got the first). And it must agree with lua-cjson 2.1.0
 * (decode_invalid_numbers off), the decoder it replaced, used here as the oracle: the same
 * texts accepted and the same values, except where cjson is known to be laxer or rounder
 * (see differ() and oracle()). */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <errno.h>
#include <lualib.h>
#include "zd.h"

static lua_State *L;
static int cjson_ref = LUA_NOREF;   /* the oracle's decode function, in the registry */

typedef struct {
    const char *s;
    size_t n;
} input;

static int decode(lua_State *l)
{
    input *in = lua_touserdata(l, 1);
    lua_settop(l, 0);
    return zd_json_decode(l, in->s, in->n);
}

static void walk(lua_State *l, int idx, int depth)
{
    idx = lua_absindex(l, idx);
    if (lua_type(l, idx) == LUA_TNUMBER && !lua_isinteger(l, idx)) {
        double d = lua_tonumber(l, idx);
        if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
            fprintf(stderr, "integral number %.17g stayed a float\n", d);
            abort();
        }
    }
    if (lua_type(l, idx) != LUA_TTABLE || depth > 2000 || !lua_checkstack(l, 4))
        return;
    lua_pushnil(l);
    while (lua_next(l, idx)) {
        walk(l, -1, depth + 1);
        lua_pop(l, 1);
    }
}

/* "[lit,lit,...]" with only optionally signed decimal integer literals, no spaces */
static void check_flat_ints(lua_State *l, const char *s, size_t n)
{
    size_t i = 1;
    lua_Integer k = 0;
    if (n < 3 || s[0] != '[' || s[n - 1] != ']' || lua_type(l, -1) != LUA_TTABLE)
        return;
    while (i < n - 1) {
        char lit[32];
        size_t st = i, len;
        char *end;
        long long want;
        if (s[i] == '-')
            i++;
        if (i >= n - 1 || s[i] < '0' || s[i] > '9')
            return;
        while (i < n - 1 && s[i] >= '0' && s[i] <= '9')
            i++;
        len = i - st;
        if (len >= sizeof lit || (s[st] == '0' && len > 1) || (s[st] == '-' && (len == 1 || s[st + 1] == '0')))
            return;
        if (i < n - 1 && s[i] != ',')
            return;
        memcpy(lit, s + st, len);
        lit[len] = '\0';
        k++;
        errno = 0;
        want = strtoll(lit, &end, 10);
        if (errno == 0) {
            lua_rawgeti(l, -1, k);
            if (!lua_isinteger(l, -1) || lua_tointeger(l, -1) != want) {
                fprintf(stderr, "element %lld: literal %s decoded as %s\n", (long long)k, lit,
                        luaL_tolstring(l, -1, NULL));
                abort();
            }
            lua_pop(l, 1);
        }
        if (i < n - 1)
            i++;
    }
}

/* 1 when the values at a and b (ours, cjson's) differ beyond what cjson's doubles explain */
static int differ(lua_State *l, int a, int b, int depth)
{
    a = lua_absindex(l, a);
    b = lua_absindex(l, b);
    if (lua_type(l, a) != lua_type(l, b))
        return 1;
    switch (lua_type(l, a)) {
    case LUA_TNUMBER: {
        double x = lua_tonumber(l, a), y = lua_tonumber(l, b);
        if (x == y)
            return 0;
        /* cjson reads every number as a double: above 2^53 ours is exact and cjson's rounded */
        if (lua_isinteger(l, a) && fabs(y) >= 9007199254740992.0)
            return (double)lua_tointeger(l, a) != y;
        return !(x != x && y != y);
    }
    case LUA_TTABLE: {
        int na = 0, nb = 0;
        /* Lua promises 20 free slots, not one per level: unchecked, a deep document wrote past
         * the stack here, and ASan saw the heap corrupted long after */
        if (depth > 1100 || !lua_checkstack(l, 4))
            return 0;
        lua_pushnil(l);
        while (lua_next(l, a)) {
            na++;
            lua_pushvalue(l, -2);
            lua_rawget(l, b);
            if (differ(l, -2, -1, depth + 1)) {
                lua_pop(l, 3);
                return 1;
            }
            lua_pop(l, 2);
        }
        lua_pushnil(l);
        while (lua_next(l, b)) {
            nb++;
            lua_pop(l, 1);
        }
        return na != nb;
    }
    default:
        return !lua_rawequal(l, a, b);
    }
}

/* cjson hands numbers to strtod, which reads "1.", "-.5" and "1.e5" where JSON, and we, do
 * not (it refuses leading zeros, hex, inf and nan, as we do) */
static int cjson_laxer(const char *msg)
{
    return strstr(msg, "invalid number: expected a digit") != NULL;
}

static void oracle(lua_State *l, const char *s, size_t n, int ours_ok)
{
    int ok;
    lua_rawgeti(l, LUA_REGISTRYINDEX, cjson_ref);
    lua_pushlstring(l, s, n);
    ok = lua_pcall(l, 1, 1, 0) == 0;
    if (ok && !ours_ok && memchr(s, '\0', n)) {
        /* cjson reads a C string: a NUL byte ends its text, so it takes "[1]\0junk" as [1];
         * ours must then read the text up to the NUL as the same value */
        input pre = { s, (size_t)((const char *)memchr(s, '\0', n) - s) };
        lua_pushcfunction(l, decode);
        lua_pushlightuserdata(l, &pre);
        if (lua_pcall(l, 1, 2, 0) != 0 ||
            (lua_isnil(l, -2) ? !cjson_laxer(lua_tostring(l, -1)) : differ(l, -2, -3, 0))) {
            fprintf(stderr, "cjson reads the text up to its NUL byte, we do not read it alike\n");
            abort();
        }
        lua_pop(l, 3);
        return;
    }
    if (ok != ours_ok) {
        if (ok && !ours_ok && cjson_laxer(lua_tostring(l, 2))) {
            lua_pop(l, 1);
            return;
        }
        fprintf(stderr, "cjson %s what we %s (ours: %s; cjson: %s)\n", ok ? "accepts" : "refuses",
                ours_ok ? "accept" : "refuse", ours_ok ? "a value" : lua_tostring(l, 2),
                ok ? "a value" : lua_tostring(l, -1));
        abort();
    }
    if (ok && differ(l, 1, -1, 0)) {
        fprintf(stderr, "cjson and we decode the text to different values\n");
        abort();
    }
    lua_pop(l, 1);
}

/* zd_json_decode_kept (upsert's `fields`) must accept exactly what zd_json_decode accepts and
 * give the same value, with the object under "user" cut to the kept names. */
static const char *const kept_names[] = { "id", "name", "tags" };
static const size_t kept_lens[] = { 2, 4, 4 };

static int decode_kept(lua_State *l)
{
    input *in = lua_touserdata(l, 1);
    zd_keep keep = { "user", 4, 3, kept_names, kept_lens };
    lua_settop(l, 0);
    return zd_json_decode_kept(l, in->s, in->n, &keep);
}

static void check_kept(lua_State *l, input *in, int full_ok)
{
    int top = lua_gettop(l), ok;
    lua_pushcfunction(l, decode_kept);
    lua_pushlightuserdata(l, in);
    if (lua_pcall(l, 1, 2, 0) != 0) {
        fprintf(stderr, "zd_json_decode_kept raised: %s\n", lua_tostring(l, -1));
        abort();
    }
    ok = !lua_isnil(l, -2) || lua_isnil(l, -1);   /* a value (JSON null included), not nil + msg */
    if (ok != full_ok) {
        fprintf(stderr, "zd_json_decode_kept %s what zd_json_decode %s\n", ok ? "accepts" : "refuses",
                full_ok ? "accepts" : "refuses");
        abort();
    }
    if (ok) {
        /* the full value, its "user" object cut to the kept names, must equal the kept one */
        lua_pop(l, 1);
        if (lua_istable(l, 1)) {
            lua_getfield(l, 1, "user");
            /* an object: only string keys; an array (integer keys 1..n) is not cut */
            if (lua_istable(l, -1) && lua_rawlen(l, -1) == 0) {
                int u = lua_gettop(l);
                size_t i;
                lua_newtable(l);
                for (i = 0; i < 3; i++) {
                    lua_getfield(l, u, kept_names[i]);
                    lua_setfield(l, -2, kept_names[i]);
                }
                lua_setfield(l, 1, "user");   /* the full value is not needed any more */
            }
            lua_pop(l, 1);
        }
        if (differ(l, 1, -1, 0)) {
            fprintf(stderr, "zd_json_decode_kept gives another value than zd_json_decode\n");
            abort();
        }
    }
    lua_settop(l, top);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in;
    char *copy;
    if (!L) {
        L = luaL_newstate();
        luaL_openlibs(L);
        lua_getglobal(L, "require");
        lua_pushliteral(L, "cjson");
        lua_call(L, 1, 1);
        lua_getfield(L, -1, "new");
        lua_call(L, 0, 1);
        lua_getfield(L, -1, "decode_invalid_numbers");
        lua_pushboolean(L, 0);
        lua_call(L, 1, 0);
        lua_getfield(L, -1, "decode");
        cjson_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_pop(L, 2);
    }
    copy = malloc(size ? size : 1);   /* exact-size block: ASan sees a read past the end */
    memcpy(copy, data, size);
    in.s = copy;
    in.n = size;
    lua_settop(L, 0);
    lua_pushcfunction(L, decode);
    lua_pushlightuserdata(L, &in);
    if (lua_pcall(L, 1, LUA_MULTRET, 0) != 0) {
        fprintf(stderr, "zd_json_decode raised: %s\n", lua_tostring(L, -1));
        abort();
    }
    if (lua_gettop(L) == 2) {
        if (!lua_isnil(L, 1) || lua_type(L, 2) != LUA_TSTRING)
            abort();
        oracle(L, copy, size, 0);
        lua_settop(L, 0);
        check_kept(L, &in, 0);
    } else if (lua_gettop(L) == 1) {
        walk(L, 1, 0);
        check_flat_ints(L, copy, size);
        oracle(L, copy, size, 1);
        check_kept(L, &in, 1);
    } else {
        abort();
    }
    lua_settop(L, 0);
    free(copy);
    /* every allocation of this input freed again: libFuzzer's leak check stays quiet and cheap */
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
