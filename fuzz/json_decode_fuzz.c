/* json_decode_fuzz.c: libFuzzer target for the JSON -> Lua conversion (zd_json_decode in
 * src/json.c: lua-cjson, then integral numbers back to exact Lua integers). Any input must give
 * a value or (nil, message) without a crash, and no integral number within the int64 range may
 * stay a float, and for a flat array of integer literals every element must come back exactly
 * (integers above 2^53 included: before 6ea3ad2 two that rounded alike both got the first). */
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
    if (lua_type(l, idx) != LUA_TTABLE || depth > 2000)
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in;
    char *copy;
    if (!L) {
        L = luaL_newstate();
        luaL_openlibs(L);
        zd_json_setup(L);
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
    } else if (lua_gettop(L) == 1) {
        walk(L, 1, 0);
        check_flat_ints(L, copy, size);
    } else {
        abort();
    }
    lua_settop(L, 0);
    free(copy);
    /* every allocation of this input freed again: libFuzzer's leak check stays quiet and cheap */
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
