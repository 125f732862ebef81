/* bench/proto/json_decode.c: NOT part of the module. A one-pass JSON -> Lua decoder written to
 * measure the fix proposed in bench/FINDINGS.md for zd_json_decode (src/json.c): no lua-cjson, no
 * copy of the body into a Lua string, no pcall, integers exact in the same pass, tables sized once.
 *   gcc -O2 -fPIC -shared $(pkg-config --cflags lua5.4) -o build/bench/proto/jdec.so bench/proto/json_decode.c
 *   valgrind --tool=callgrind lua5.4 bench/cost_parts.lua proto 2000   (and 4000; see cost_parts.lua) */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>

typedef struct {
    lua_State *L;
    const char *p, *end;
    int depth;
    const char *err;
} dec;

#define MAX_DEPTH 1000

static void ws(dec *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static int fail(dec *d, const char *msg)
{
    if (!d->err)
        d->err = msg;
    return 0;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static void utf8(luaL_Buffer *b, unsigned cp)
{
    char s[4];
    int n;
    if (cp < 0x80) { s[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { s[0] = (char)(0xC0 | (cp >> 6)); s[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) { s[0] = (char)(0xE0 | (cp >> 12)); s[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                             s[2] = (char)(0x80 | (cp & 0x3F)); n = 3; }
    else { s[0] = (char)(0xF0 | (cp >> 18)); s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
           s[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); s[3] = (char)(0x80 | (cp & 0x3F)); n = 4; }
    luaL_addlstring(b, s, (size_t)n);
}

/* d->p is just past the opening quote */
static int string(dec *d)
{
    const char *s = d->p, *q = s;
    while (q < d->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20)
        q++;
    if (q < d->end && *q == '"') {   /* the common case: no escapes, pushed straight from the text */
        lua_pushlstring(d->L, s, (size_t)(q - s));
        d->p = q + 1;
        return 1;
    }
    luaL_Buffer b;
    luaL_buffinit(d->L, &b);
    luaL_addlstring(&b, s, (size_t)(q - s));
    while (q < d->end) {
        unsigned char c = (unsigned char)*q;
        if (c == '"') {
            luaL_pushresult(&b);
            d->p = q + 1;
            return 1;
        }
        if (c < 0x20) {
            luaL_pushresult(&b);
            lua_pop(d->L, 1);
            return fail(d, "control character in string");
        }
        if (c != '\\') {
            const char *r = q;
            while (r < d->end && *r != '"' && *r != '\\' && (unsigned char)*r >= 0x20)
                r++;
            luaL_addlstring(&b, q, (size_t)(r - q));
            q = r;
            continue;
        }
        if (q + 1 >= d->end)
            break;
        switch (q[1]) {
        case '"': luaL_addchar(&b, '"'); q += 2; break;
        case '\\': luaL_addchar(&b, '\\'); q += 2; break;
        case '/': luaL_addchar(&b, '/'); q += 2; break;
        case 'b': luaL_addchar(&b, '\b'); q += 2; break;
        case 'f': luaL_addchar(&b, '\f'); q += 2; break;
        case 'n': luaL_addchar(&b, '\n'); q += 2; break;
        case 'r': luaL_addchar(&b, '\r'); q += 2; break;
        case 't': luaL_addchar(&b, '\t'); q += 2; break;
        case 'u': {
            unsigned cp, lo;
            if (q + 6 > d->end || !hex4(q + 2, &cp))
                goto bad;
            q += 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (q + 6 > d->end || q[0] != '\\' || q[1] != 'u' || !hex4(q + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    goto bad;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                q += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                goto bad;
            }
            utf8(&b, cp);
            break;
        }
        default:
            goto bad;
        }
    }
    luaL_pushresult(&b);
    lua_pop(d->L, 1);
    return fail(d, "unterminated string");
bad:
    luaL_pushresult(&b);
    lua_pop(d->L, 1);
    return fail(d, "invalid escape in string");
}

static int number(dec *d)
{
    const char *s = d->p, *q = s;
    int neg = 0, integral = 1;
    unsigned long long v = 0;
    int digits = 0;
    if (q < d->end && *q == '-') { neg = 1; q++; }
    if (q >= d->end || *q < '0' || *q > '9')
        return fail(d, "invalid number");
    if (*q == '0' && q + 1 < d->end && q[1] >= '0' && q[1] <= '9')
        return fail(d, "invalid number (leading zero)");
    while (q < d->end && *q >= '0' && *q <= '9') {
        if (digits < 19)
            v = v * 10 + (unsigned)(*q - '0');
        digits++;
        q++;
    }
    if (q < d->end && (*q == '.' || *q == 'e' || *q == 'E')) {
        integral = 0;
        if (*q == '.') {
            q++;
            if (q >= d->end || *q < '0' || *q > '9') return fail(d, "invalid number");
            while (q < d->end && *q >= '0' && *q <= '9') q++;
        }
        if (q < d->end && (*q == 'e' || *q == 'E')) {
            q++;
            if (q < d->end && (*q == '+' || *q == '-')) q++;
            if (q >= d->end || *q < '0' || *q > '9') return fail(d, "invalid number");
            while (q < d->end && *q >= '0' && *q <= '9') q++;
        }
    }
    d->p = q;
#if LUA_VERSION_NUM >= 503
    if (integral && digits <= 18) {
        lua_pushinteger(d->L, neg ? -(lua_Integer)v : (lua_Integer)v);
        return 1;
    }
    if (integral && digits == 19) {
        char tmp[24];
        char *e;
        long long x;
        memcpy(tmp, s, (size_t)(q - s));
        tmp[q - s] = '\0';
        errno = 0;
        x = strtoll(tmp, &e, 10);
        if (errno == 0) {
            lua_pushinteger(d->L, (lua_Integer)x);
            return 1;
        }
    }
#else
    if (integral && digits <= 15) {
        lua_pushnumber(d->L, neg ? -(lua_Number)v : (lua_Number)v);
        return 1;
    }
#endif
    {
        char tmp[64];
        size_t n = (size_t)(q - s);
        char *e;
        if (n >= sizeof tmp)
            return fail(d, "number too long");
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        double x = strtod(tmp, &e);
#if LUA_VERSION_NUM >= 503
        /* as the current decoder: an integral value is a Lua integer (1e3 -> 1000) */
        if (x >= -9223372036854775808.0 && x < 9223372036854775808.0 && x == (double)(long long)x) {
            lua_pushinteger(d->L, (lua_Integer)x);
            return 1;
        }
#endif
        lua_pushnumber(d->L, (lua_Number)x);
        return 1;
    }
}

static int value(dec *d);

static int object(dec *d)
{
    lua_State *L = d->L;
    int base = lua_gettop(L), n = 0, t;
    ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        lua_createtable(L, 0, 0);
        return 1;
    }
    for (;;) {
        luaL_checkstack(L, 3, "JSON object too large");
        ws(d);
        if (d->p >= d->end || *d->p != '"')
            return fail(d, "expected a string key");
        d->p++;
        if (!string(d))
            return 0;
        ws(d);
        if (d->p >= d->end || *d->p != ':')
            return fail(d, "expected ':'");
        d->p++;
        if (!value(d))
            return 0;
        n++;
        ws(d);
        if (d->p < d->end && *d->p == ',') { d->p++; continue; }
        if (d->p < d->end && *d->p == '}') { d->p++; break; }
        return fail(d, "expected ',' or '}'");
    }
    /* one table of the right size, filled in document order (a repeated key: the last wins) */
    lua_createtable(L, 0, n);
    t = lua_gettop(L);
    for (int i = 0; i < n; i++) {
        lua_pushvalue(L, base + 1 + 2 * i);
        lua_pushvalue(L, base + 2 + 2 * i);
        lua_rawset(L, t);
    }
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
    return 1;
}

static int array(dec *d)
{
    lua_State *L = d->L;
    int base = lua_gettop(L), n = 0;
    ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        lua_createtable(L, 0, 0);
        return 1;
    }
    for (;;) {
        luaL_checkstack(L, 2, "JSON array too large");
        if (!value(d))
            return 0;
        n++;
        ws(d);
        if (d->p < d->end && *d->p == ',') { d->p++; continue; }
        if (d->p < d->end && *d->p == ']') { d->p++; break; }
        return fail(d, "expected ',' or ']'");
    }
    lua_createtable(L, n, 0);
    lua_insert(L, base + 1);
    for (int i = n; i >= 1; i--)
        lua_rawseti(L, base + 1, i);
    return 1;
}

static int literal(dec *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return fail(d, "invalid literal");
    d->p += n;
    return 1;
}

static int value(dec *d)
{
    int ok;
    ws(d);
    if (d->p >= d->end)
        return fail(d, "unexpected end");
    switch (*d->p) {
    case '{':
        if (++d->depth > MAX_DEPTH) return fail(d, "nested too deeply");
        d->p++;
        ok = object(d);
        d->depth--;
        return ok;
    case '[':
        if (++d->depth > MAX_DEPTH) return fail(d, "nested too deeply");
        d->p++;
        ok = array(d);
        d->depth--;
        return ok;
    case '"':
        d->p++;
        return string(d);
    case 't':
        if (!literal(d, "true", 4)) return 0;
        lua_pushboolean(d->L, 1);
        return 1;
    case 'f':
        if (!literal(d, "false", 5)) return 0;
        lua_pushboolean(d->L, 0);
        return 1;
    case 'n':
        if (!literal(d, "null", 4)) return 0;
        lua_pushlightuserdata(d->L, NULL);
        return 1;
    default:
        return number(d);
    }
}

static int l_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    dec d = { L, s, s + n, 0, NULL };
    int top = lua_gettop(L);
    if (value(&d)) {
        ws(&d);
        if (d.p == d.end)
            return 1;
        fail(&d, "trailing text");
    }
    lua_settop(L, top);
    lua_pushnil(L);
    lua_pushfstring(L, "invalid JSON: %s at character %d", d.err, (int)(d.p - s) + 1);
    return 2;
}

int luaopen_jdec(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
    return 1;
}
