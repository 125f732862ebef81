#define _GNU_SOURCE
/* json.c: Lua values <-> JSON text, both ways here so that integers stay exact, empty arrays
 * stay arrays (by marker or by the caller's array keys) and a bad value is named by its path. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "zd.h"

#define ZD_MAX_DEPTH 64
#define ZD_MAX_JSON (64u * 1024u * 1024u)

/* Metatables a caller can set to force an empty table's shape (zendesk.array / zendesk.object). */
const char zd_array_mt_key = 'a';
const char zd_object_mt_key = 'o';

typedef struct {
    const char *key;   /* NULL for an array index */
    size_t keylen;
    lua_Integer index;
} seg;

typedef struct {
    lua_State *L;
    zd_buf *out;
    char *err;
    size_t errlen;
    const char *root;
    int arrays;        /* stack index of the caller's set of array keys, or 0 */
    int depth;
    const void *seen[ZD_MAX_DEPTH];
    seg path[ZD_MAX_DEPTH + 1];
    int oom;
} enc;

static int is_ident(const char *k, size_t n)
{
    size_t i;
    if (n == 0 || n > 64)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

static int fail(enc *e, const char *fmt, const char *what)
{
    size_t used;
    int i;
    used = (size_t)snprintf(e->err, e->errlen, "%s", e->root);
    for (i = 1; i <= e->depth && used < e->errlen; i++) {
        const seg *s = &e->path[i];
        if (s->key == NULL)
            used += (size_t)snprintf(e->err + used, e->errlen - used, "[%lld]", (long long)s->index);
        else if (is_ident(s->key, s->keylen))
            used += (size_t)snprintf(e->err + used, e->errlen - used, ".%.*s", (int)s->keylen, s->key);
        else
            used += (size_t)snprintf(e->err + used, e->errlen - used, "[\"%.*s\"]",
                                     (int)(s->keylen > 40 ? 40 : s->keylen), s->key);
    }
    if (used < e->errlen) {
        used += (size_t)snprintf(e->err + used, e->errlen - used, ": ");
        if (used < e->errlen)
            snprintf(e->err + used, e->errlen - used, fmt, what);
    }
    return 0;
}

/* Returns the length of the valid UTF-8 sequence at s, or 0 (also for validation, in client.c). */
size_t zd_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && s[1] < 0xA0)
            return 0;   /* overlong */
        if (c == 0xED && s[1] >= 0xA0)
            return 0;   /* UTF-16 surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90)
            return 0;
        if (c == 0xF4 && s[1] >= 0x90)
            return 0;   /* above U+10FFFF */
        return 4;
    }
    return 0;
}

static int put_string(enc *e, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    zd_buf *b = e->out;
    size_t i = 0, run;
    if (!zd_buf_reserve(b, n + 2))
        return e->oom = 1, 0;
    b->p[b->len++] = '"';
    while (i < n) {
        /* copy plain stretches in one go */
        run = i;
        while (run < n && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > i) {
            if (!zd_buf_add(b, s + i, run - i))
                return e->oom = 1, 0;
            i = run;
            continue;
        }
        if (s[i] >= 0x80) {
            size_t k = zd_utf8_len(s + i, n - i);
            if (k == 0) {
                char where[32];
                snprintf(where, sizeof where, "%zu", i);
                return fail(e, "invalid UTF-8 in string (byte %s)", where);
            }
            if (!zd_buf_add(b, s + i, k))
                return e->oom = 1, 0;
            i += k;
            continue;
        }
        {
            char esc[6] = {'\\', 0, 0, 0, 0, 0};
            size_t len = 2;
            switch (s[i]) {
            case '"': esc[1] = '"'; break;
            case '\\': esc[1] = '\\'; break;
            case '\n': esc[1] = 'n'; break;
            case '\r': esc[1] = 'r'; break;
            case '\t': esc[1] = 't'; break;
            case '\b': esc[1] = 'b'; break;
            case '\f': esc[1] = 'f'; break;
            default:
                esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
                esc[4] = hex[s[i] >> 4]; esc[5] = hex[s[i] & 15];
                len = 6;
            }
            if (!zd_buf_add(b, esc, len))
                return e->oom = 1, 0;
            i++;
        }
    }
    if (!zd_buf_addc(b, '"'))
        return e->oom = 1, 0;
    return 1;
}

static int put_integer(enc *e, long long v)
{
    char tmp[24], *p = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    if (!zd_buf_add(e->out, p, (size_t)(tmp + sizeof tmp - p)))
        return e->oom = 1, 0;
    return 1;
}

static int put_number(enc *e, int idx)
{
    double d;
#if ZD_HAS_INTEGERS
    if (lua_isinteger(e->L, idx))
        return put_integer(e, (long long)lua_tointeger(e->L, idx));
#endif
    d = (double)lua_tonumber(e->L, idx);
    if (d != d)
        return fail(e, "%s is not a valid JSON number", "NaN");
    if (isinf(d))
        return fail(e, "%s is not a valid JSON number", d > 0 ? "inf" : "-inf");
    /* an id that went through a float (cjson, LuaJIT) must still go out as an integer */
    if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
        return put_integer(e, (long long)d);
    {
        char tmp[32];
        int prec;
        for (prec = 15; prec <= 17; prec++) {
            snprintf(tmp, sizeof tmp, "%.*g", prec, d);
            if (strtod(tmp, NULL) == d)
                break;
        }
        if (!zd_buf_adds(e->out, tmp))
            return e->oom = 1, 0;
    }
    return 1;
}

static int has_marker(lua_State *L, int idx, const char *key)
{
    int yes;
    if (!lua_getmetatable(L, idx))
        return 0;
    zd_rawgetp(L, LUA_REGISTRYINDEX, key);
    yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

static int empty_is_array(enc *e, int idx)
{
    const seg *s = &e->path[e->depth];
    int yes;
    if (has_marker(e->L, idx, &zd_array_mt_key))
        return 1;
    if (has_marker(e->L, idx, &zd_object_mt_key))
        return 0;
    if (e->depth == 0 || s->key == NULL || !e->arrays)
        return 0;
    lua_pushlstring(e->L, s->key, s->keylen);
    lua_rawget(e->L, e->arrays);
    yes = lua_toboolean(e->L, -1);
    lua_pop(e->L, 1);
    return yes;
}

static int put_value(enc *e, int idx);

static int put_table(enc *e, int idx)
{
    lua_State *L = e->L;
    const void *self = lua_topointer(L, idx);
    lua_Integer n = 0, maxkey = 0;
    int has_str = 0, has_int = 0, i, ok = 1;

    for (i = 0; i < e->depth; i++)
        if (e->seen[i] == self)
            return fail(e, "%s", "cycle (a table contains itself)");
    if (e->depth >= ZD_MAX_DEPTH)
        return fail(e, "%s", "nested too deeply");
    if (!lua_checkstack(L, 6))
        return fail(e, "%s", "out of Lua stack");

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        n++;
        if (kt == LUA_TSTRING) {
            has_str = 1;
        } else if (kt == LUA_TNUMBER) {
            lua_Number k = lua_tonumber(L, -2);
            /* beyond 2^53 a double key cannot be an array index, and casting one past 2^63 is UB */
            if (k != floor(k) || k < 1 || k > 9007199254740992.0) {
                char what[48];
                snprintf(what, sizeof what, "%.14g", (double)k);
                lua_pop(L, 2);
                return fail(e, "non-string key %s in an object", what);
            }
            has_int = 1;
            if ((lua_Integer)k > maxkey)
                maxkey = (lua_Integer)k;
        } else {
            const char *tn = lua_typename(L, kt);
            lua_pop(L, 2);
            return fail(e, "key of type %s (keys must be strings)", tn);
        }
        lua_pop(L, 1);
    }
    if (has_str && has_int)
        return fail(e, "%s", "mixes array items and named fields");

    e->seen[e->depth] = self;
    if (n == 0) {
        ok = zd_buf_adds(e->out, empty_is_array(e, idx) ? "[]" : "{}");
        if (!ok)
            e->oom = 1;
        return ok;
    }
    if (has_int) {
        lua_Integer k;
        if (maxkey != n) {
            char what[32];
            snprintf(what, sizeof what, "%lld", (long long)maxkey);
            return fail(e, "sparse array (highest index %s, with holes)", what);
        }
        if (!zd_buf_addc(e->out, '['))
            return e->oom = 1, 0;
        e->depth++;
        for (k = 1; k <= n && ok; k++) {
            e->path[e->depth].key = NULL;
            e->path[e->depth].index = k;
            if (k > 1 && !zd_buf_addc(e->out, ','))
                return e->oom = 1, 0;
            lua_rawgeti(L, idx, (int)k);
            ok = put_value(e, lua_gettop(L));
            lua_pop(L, 1);
        }
        if (!ok)
            return 0;
        e->depth--;
        if (!zd_buf_addc(e->out, ']'))
            return e->oom = 1, 0;
        return 1;
    }
    if (!zd_buf_addc(e->out, '{'))
        return e->oom = 1, 0;
    e->depth++;
    lua_pushnil(L);
    i = 0;
    while (lua_next(L, idx)) {
        size_t kl;
        const char *k = lua_tolstring(L, -2, &kl);
        e->path[e->depth].key = k;
        e->path[e->depth].keylen = kl;
        if ((i++ > 0 && !zd_buf_addc(e->out, ',')) || !put_string(e, k, kl) || !zd_buf_addc(e->out, ':') ||
            !put_value(e, lua_gettop(L))) {
            lua_pop(L, 2);
            if (!e->err[0])
                e->oom = 1;
            return 0;
        }
        lua_pop(L, 1);
    }
    e->depth--;
    if (!zd_buf_addc(e->out, '}'))
        return e->oom = 1, 0;
    return 1;
}

static int put_value(enc *e, int idx)
{
    lua_State *L = e->L;
    /* a table reused at many places doubles the text at each level: stop well before memory
     * runs out (Zendesk refuses bodies far smaller anyway) */
    if (e->out->len > ZD_MAX_JSON)
        return fail(e, "%s", "encodes to more than 64 MiB of JSON");
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        if (!zd_buf_adds(e->out, "null"))
            return e->oom = 1, 0;
        return 1;
    case LUA_TBOOLEAN:
        if (!zd_buf_adds(e->out, lua_toboolean(L, idx) ? "true" : "false"))
            return e->oom = 1, 0;
        return 1;
    case LUA_TNUMBER:
        return put_number(e, idx);
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return put_string(e, s, n);
    }
    case LUA_TTABLE:
        return put_table(e, idx);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            if (!zd_buf_adds(e->out, "null"))
                return e->oom = 1, 0;
            return 1;
        }
        /* fallthrough */
    default:
        return fail(e, "cannot encode a %s", luaL_typename(L, idx));
    }
}

int zd_json_encode(lua_State *L, int idx, zd_buf *out, const zd_json_config *cfg, char *err, size_t errlen)
{
    enc e;
    const char *root = cfg->root;
    memset(&e, 0, sizeof e);
    e.arrays = cfg->arrays && lua_istable(L, cfg->arrays) ? zd_absindex(L, cfg->arrays) : 0;
    e.L = L;
    e.out = out;
    e.err = err;
    e.errlen = errlen;
    e.root = root;
    err[0] = '\0';
    if (put_value(&e, zd_absindex(L, idx)))
        return 1;
    if (e.oom && !err[0])
        snprintf(err, errlen, "%s: out of memory", root);
    return 0;
}

/* ---- decoding ----
 *
 * One pass from the text to Lua values: no copy of the text, no second walk. Integers are read
 * exactly (to 2^63-1 on Lua 5.3+; doubles on LuaJIT), strings without escapes are pushed
 * straight from the text, and each table is made once at its final size where it is small.
 * What it accepts is what lua-cjson 2.1.0 accepted with decode_invalid_numbers off (the
 * decoder this one replaced; bench/FINDINGS.md says why): RFC 8259 JSON, any value at the top,
 * the last of repeated keys wins, null is zendesk.null, 1,000 levels at most, and raw control
 * bytes inside strings are kept (Zendesk escapes them; a raw NUL is refused, as cjson did).
 * Integral numbers become Lua integers (1.0 and 1e3 too) when they fit. */

#define ZD_MAX_DECODE_DEPTH 1000
/* pairs (and elements) gathered on the Lua stack before the table is made at its final size;
 * a larger object or array goes on in a table that grows */
#define ZD_GATHER 64
#define ZD_WALK static inline __attribute__((always_inline))

typedef struct {
    lua_State *L;
    const char *p, *end, *start;
    int depth;
    const char *err;
    const zd_keep *keep;   /* decode only some fields of one object (zd_json_decode_kept) */
    zd_watch *watch;       /* strings looked for in strings that had escapes, or NULL */
} dec;

/* 1 for the bytes a string's fast scan stops at: '"', '\\' and NUL */
static const unsigned char str_stop[256] = { [0] = 1, ['"'] = 1, ['\\'] = 1 };

static int dec_fail(dec *d, const char *msg)
{
    if (!d->err)
        d->err = msg;
    return 0;
}

static inline void skip_ws(dec *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

static void add_utf8(luaL_Buffer *b, unsigned cp)
{
    char s[4];
    size_t n;
    if (cp < 0x80) {
        s[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        s[0] = (char)(0xC0 | (cp >> 6));
        s[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        s[0] = (char)(0xE0 | (cp >> 12));
        s[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        s[0] = (char)(0xF0 | (cp >> 18));
        s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        s[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    luaL_addlstring(b, s, n);
}

/* The escape at q (a backslash): its length in the text (2, 6 or 12 for a surrogate pair) and
 * in *cp what it stands for; 0 when it is invalid (d->p and the error set). */
static int read_escape(dec *d, const char *q, unsigned *cp)
{
    unsigned lo;
    d->p = q;
    if (d->end - q < 2)
        return dec_fail(d, "unterminated string");
    switch (q[1]) {
    case '"': *cp = '"'; return 2;
    case '\\': *cp = '\\'; return 2;
    case '/': *cp = '/'; return 2;
    case 'b': *cp = '\b'; return 2;
    case 'f': *cp = '\f'; return 2;
    case 'n': *cp = '\n'; return 2;
    case 'r': *cp = '\r'; return 2;
    case 't': *cp = '\t'; return 2;
    case 'u':
        if (d->end - q < 6 || !hex4(q + 2, cp))
            return dec_fail(d, "invalid \\u escape");
        if (*cp >= 0xDC00 && *cp <= 0xDFFF)
            return dec_fail(d, "unpaired surrogate in a \\u escape");
        if (*cp < 0xD800 || *cp > 0xDBFF)
            return 6;
        if (d->end - q < 12 || q[6] != '\\' || q[7] != 'u' || !hex4(q + 8, &lo) || lo < 0xDC00 ||
            lo > 0xDFFF)
            return dec_fail(d, "unpaired surrogate in a \\u escape");
        *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
        return 12;
    default:
        return dec_fail(d, "invalid escape in a string");
    }
}

/* The string just made from escapes: does it hold one of the watched strings? */
static void watch_string(dec *d)
{
    size_t n;
    int i;
    const char *v = lua_tolstring(d->L, -1, &n);
    for (i = 0; i < d->watch->n; i++)
        if (d->watch->len[i] <= n && memmem(v, n, d->watch->s[i], d->watch->len[i])) {
            d->watch->hit = 1;
            return;
        }
}

/* d->p is just past the opening quote; reads the string, checked the same way whether it is
 * built (pushed) or not */
/* not inlined into the walks: its luaL_Buffer (8 KB on LuaJIT) would sit in every level of a
 * 1,000-level document's C stack */
static __attribute__((noinline)) int dec_string(dec *d, int build)
{
    const char *s = d->p, *q = s;
    luaL_Buffer b;
    while (q < d->end && !str_stop[(unsigned char)*q])
        q++;
    if (q < d->end && *q == '"') {   /* the common case: no escape */
        if (build)
            lua_pushlstring(d->L, s, (size_t)(q - s));
        d->p = q + 1;
        return 1;
    }
    if (build) {
        luaL_buffinit(d->L, &b);
        luaL_addlstring(&b, s, (size_t)(q - s));
    }
    while (q < d->end) {
        unsigned cp;
        int n;
        if (*q == '"') {
            d->p = q + 1;
            if (build) {
                luaL_pushresult(&b);
                if (d->watch && !d->watch->hit)
                    watch_string(d);
            }
            return 1;
        }
        if (*q == '\0') {
            d->p = q;
            return dec_fail(d, "NUL byte in a string");
        }
        if (*q != '\\') {
            const char *r = q;
            while (r < d->end && !str_stop[(unsigned char)*r])
                r++;
            if (build)
                luaL_addlstring(&b, q, (size_t)(r - q));
            q = r;
            continue;
        }
        if (!(n = read_escape(d, q, &cp)))
            return 0;
        if (build)
            add_utf8(&b, cp);
        q += n;
    }
    d->p = d->end;
    return dec_fail(d, "unterminated string");
}

/* reads the number at d->p, pushed when build */
static __attribute__((noinline)) int dec_number(dec *d, int build)
{
    const char *s = d->p, *q = s;
    int neg = 0, integral = 1, digits = 0;
    unsigned long long v = 0;
    if (*q == '-') {
        neg = 1;
        q++;
        if (q >= d->end || *q < '0' || *q > '9')
            return dec_fail(d, "invalid number: expected a digit after '-'");
    }
    if (q >= d->end || *q < '0' || *q > '9')
        return dec_fail(d, "expected a value");
    if (*q == '0' && q + 1 < d->end && q[1] >= '0' && q[1] <= '9')
        return dec_fail(d, "invalid number: a leading zero");
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
            if (q >= d->end || *q < '0' || *q > '9') {
                d->p = q;
                return dec_fail(d, "invalid number: expected a digit after '.'");
            }
            while (q < d->end && *q >= '0' && *q <= '9')
                q++;
        }
        if (q < d->end && (*q == 'e' || *q == 'E')) {
            q++;
            if (q < d->end && (*q == '+' || *q == '-'))
                q++;
            if (q >= d->end || *q < '0' || *q > '9') {
                d->p = q;
                return dec_fail(d, "invalid number: expected a digit in the exponent");
            }
            while (q < d->end && *q >= '0' && *q <= '9')
                q++;
        }
    }
    d->p = q;
    if (!build)
        return 1;
#if ZD_HAS_INTEGERS
    if (integral && digits <= 18) {   /* below 10^18: exact in an int64 */
        lua_pushinteger(d->L, neg ? -(lua_Integer)v : (lua_Integer)v);
        return 1;
    }
#else
    if (integral && digits <= 15) {   /* below 10^15: exact in a double */
        lua_pushnumber(d->L, neg ? -(lua_Number)v : (lua_Number)v);
        return 1;
    }
#endif
    {
        /* the rest goes through strtoll / strtod on a NUL-terminated copy */
        char small[64], *tmp = small, *e;
        size_t n = (size_t)(q - s);
        int boxed = n >= sizeof small;   /* rare: a number of 64+ characters */
        double x;
        if (boxed)
            tmp = lua_newuserdata(d->L, n + 1);   /* on the stack until the value is pushed */
        memcpy(tmp, s, n);
        tmp[n] = '\0';
#if ZD_HAS_INTEGERS
        if (integral && digits == 19) {
            long long i;
            errno = 0;
            i = strtoll(tmp, &e, 10);
            if (errno == 0) {
                lua_pushinteger(d->L, (lua_Integer)i);
                return 1;
            }
        }
#endif
        x = strtod(tmp, &e);
#if ZD_HAS_INTEGERS
        /* an integral value that fits is an integer, as the ids and counts are meant */
        if (x >= -9223372036854775808.0 && x < 9223372036854775808.0 && x == floor(x))
            lua_pushinteger(d->L, (lua_Integer)x);
        else
#endif
            lua_pushnumber(d->L, (lua_Number)x);
        if (boxed)
            lua_remove(d->L, -2);
        return 1;
    }
}

/* The walks take build as a constant: each is made twice by the compiler, once that builds
 * values and once that only checks them (build_* and check_*, at the end), so that the one walk
 * in the source costs no branch on build at run time. dec_value / dec_object / dec_array pick. */
static int build_value(dec *d);
static int check_value(dec *d);
static int build_object(dec *d, int filter);
static int check_object(dec *d);
static int build_array(dec *d);
static int check_array(dec *d);

ZD_WALK int dec_value(dec *d, int build)
{
    return build ? build_value(d) : check_value(d);
}

ZD_WALK int dec_object(dec *d, int filter, int build)
{
    return build ? build_object(d, filter) : check_object(d);
}

ZD_WALK int dec_array(dec *d, int build)
{
    return build ? build_array(d) : check_array(d);
}

/* Whether the key s[0..n) is one the caller keeps. */
static int kept_key(const zd_keep *k, const char *s, size_t n)
{
    int i;
    for (i = 0; i < k->n; i++)
        if (k->lens[i] == n && memcmp(k->names[i], s, n) == 0)
            return 1;
    return 0;
}

static int expect_colon(dec *d)
{
    skip_ws(d);
    if (d->p >= d->end || *d->p != ':')
        return dec_fail(d, "expected ':' after a key");
    d->p++;
    return 1;
}

/* d->p is at an object's key, just past its quote. Whether the key is kept (pushed then): with
 * filter, compared on the raw text and made into a Lua string only when kept; without, always. */
static int dec_key(dec *d, int filter, int *want)
{
    const char *key = d->p;
    size_t kn;
    if (!filter) {
        *want = 1;
        return dec_string(d, 1);
    }
    if (!dec_string(d, 0))
        return 0;
    kn = (size_t)(d->p - 1 - key);
    if (!memchr(key, '\\', kn)) {
        *want = kept_key(d->keep, key, kn);
        if (*want)
            lua_pushlstring(d->L, key, kn);
    } else {   /* escapes: read it (it was checked just now), then compare */
        const char *after = d->p, *k;
        d->p = key;
        dec_string(d, 1);
        d->p = after;
        k = lua_tolstring(d->L, -1, &kn);
        *want = kept_key(d->keep, k, kn);
        if (!*want)
            lua_pop(d->L, 1);
    }
    return 1;
}


/* The value of a key at d->p: when it is keep->key's object, read with only the kept fields. */
static int dec_member(dec *d, int kept_object)
{
    int ok;
    if (!kept_object)
        return dec_value(d, 1);
    skip_ws(d);
    if (d->p >= d->end || *d->p != '{')
        return dec_value(d, 1);
    if (++d->depth > ZD_MAX_DECODE_DEPTH)
        return dec_fail(d, "nested more than 1000 levels deep");
    d->p++;
    ok = dec_object(d, 1, 1);
    d->depth--;
    return ok;
}

/* d->p is just past '{'; with build, pushes the table. With filter (this object is the value of
 * keep->key), only the kept fields are made into Lua values; the others are checked only. */
ZD_WALK int walk_object(dec *d, int filter, int build)
{
    lua_State *L = d->L;
    int base = lua_gettop(L), n = 0, t = 0, i, sub, want;
    /* the key and its value, or the table: each level of nesting takes slots of its own */
    if (build)
        luaL_checkstack(L, 4, "JSON nested too deeply");
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        if (build)
            lua_createtable(L, 0, 0);
        return 1;
    }
    for (;;) {
        if (d->p >= d->end || *d->p != '"')
            return dec_fail(d, "expected a string key");
        d->p++;
        if (!build) {
            if (!dec_string(d, 0) || !expect_colon(d) || !dec_value(d, 0))
                return 0;
            goto next;
        }
        if (!dec_key(d, filter, &want) || !expect_colon(d))
            return 0;
        if (!want) {
            if (!dec_value(d, 0))
                return 0;
            goto next;
        }
        sub = 0;
        if (!filter && d->keep && d->depth == 1) {
            size_t kn;
            const char *k = lua_tolstring(L, -1, &kn);
            sub = kn == d->keep->keylen && memcmp(k, d->keep->key, kn) == 0;
        }
        if (!dec_member(d, sub))
            return 0;
        if (t) {
            lua_rawset(L, t);
        } else if (++n == ZD_GATHER) {
            /* a large object: make the table now and go on setting into it */
            lua_createtable(L, 0, 2 * n);
            t = base + 1;
            lua_insert(L, t);
            for (i = 0; i < n; i++) {
                lua_pushvalue(L, t + 1 + 2 * i);
                lua_pushvalue(L, t + 2 + 2 * i);
                lua_rawset(L, t);
            }
            lua_settop(L, t);
        } else {
            luaL_checkstack(L, 4, "JSON object too large");
        }
    next:
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            skip_ws(d);
            continue;
        }
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            break;
        }
        return dec_fail(d, "expected ',' or '}' in an object");
    }
    if (t || !build)
        return 1;
    /* one table of the right size, filled in document order (a repeated key: the last wins) */
    lua_createtable(L, 0, n);
    if (n == 0)   /* every field skipped (fields) */
        return 1;
    t = lua_gettop(L);
    for (i = 0; i < n; i++) {
        lua_pushvalue(L, base + 1 + 2 * i);
        lua_pushvalue(L, base + 2 + 2 * i);
        lua_rawset(L, t);
    }
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
    return 1;
}

/* d->p is just past '['; with build, pushes the table */
ZD_WALK int walk_array(dec *d, int build)
{
    lua_State *L = d->L;
    int base = lua_gettop(L), n = 0, t = 0, i;
    if (build)
        luaL_checkstack(L, 3, "JSON nested too deeply");
    skip_ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        if (build)
            lua_createtable(L, 0, 0);
        return 1;
    }
    for (;;) {
        if (!dec_value(d, build))
            return 0;
        n++;
        if (!build) {
            /* checked only */
        } else if (t) {
            lua_rawseti(L, t, n);
        } else if (n == ZD_GATHER) {
            lua_createtable(L, 2 * n, 0);
            t = base + 1;
            lua_insert(L, t);
            for (i = n; i >= 1; i--)
                lua_rawseti(L, t, i);
        } else {
            luaL_checkstack(L, 3, "JSON array too large");
        }
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            break;
        }
        return dec_fail(d, "expected ',' or ']' in an array");
    }
    if (t || !build)
        return 1;
    lua_createtable(L, n, 0);
    lua_insert(L, base + 1);
    for (i = n; i >= 1; i--)
        lua_rawseti(L, base + 1, i);
    return 1;
}

static int dec_literal(dec *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return dec_fail(d, "expected a value");
    d->p += n;
    return 1;
}

/* Reads the value at d->p, as strictly whether it is built or not; with build, pushes it. */
ZD_WALK int walk_value(dec *d, int build)
{
    int ok;
    skip_ws(d);
    if (d->p >= d->end)
        return dec_fail(d, "unexpected end of the text");
    switch (*d->p) {
    case '"':
        d->p++;
        return dec_string(d, build);
    case '{':
    case '[':
        if (++d->depth > ZD_MAX_DECODE_DEPTH)
            return dec_fail(d, "nested more than 1000 levels deep");
        ok = *d->p++ == '{' ? dec_object(d, 0, build) : dec_array(d, build);
        d->depth--;
        return ok;
    case 't':
        if (!dec_literal(d, "true", 4))
            return 0;
        if (build)
            lua_pushboolean(d->L, 1);
        return 1;
    case 'f':
        if (!dec_literal(d, "false", 5))
            return 0;
        if (build)
            lua_pushboolean(d->L, 0);
        return 1;
    case 'n':
        if (!dec_literal(d, "null", 4))
            return 0;
        if (build)
            lua_pushlightuserdata(d->L, NULL);   /* zendesk.null, the same value as cjson.null */
        return 1;
    default:
        return dec_number(d, build);
    }
}

static int build_value(dec *d)
{
    return walk_value(d, 1);
}

static int check_value(dec *d)
{
    return walk_value(d, 0);
}

static int build_object(dec *d, int filter)
{
    return walk_object(d, filter, 1);
}

static int check_object(dec *d)
{
    return walk_object(d, 0, 0);
}

static int build_array(dec *d)
{
    return walk_array(d, 1);
}

static int check_array(dec *d)
{
    return walk_array(d, 0);
}

/* Runs under lua_pcall, so that running out of memory half-way is an error, not a longjmp
 * through the caller's transfer. Pushes the value, or leaves d->err set. */
static int dec_protected(lua_State *L)
{
    dec *d = lua_touserdata(L, 1);
    lua_settop(L, 0);
    d->L = L;
    if (dec_value(d, 1)) {
        skip_ws(d);
        if (d->p == d->end)
            return 1;
        dec_fail(d, "text after the value");
    }
    return 0;
}

int zd_json_decode(lua_State *L, const char *s, size_t n)
{
    return zd_json_decode_kept(L, s, n, NULL);
}

int zd_json_decode_kept(lua_State *L, const char *s, size_t n, const zd_keep *keep)
{
    return zd_json_decode_watched(L, s, n, keep, NULL);
}

int zd_json_decode_watched(lua_State *L, const char *s, size_t n, const zd_keep *keep, zd_watch *w)
{
    dec d;
    int rc;
    memset(&d, 0, sizeof d);
    d.p = d.start = s;
    d.end = s + n;
    d.keep = keep;
    d.watch = w;
    lua_pushcfunction(L, dec_protected);
    lua_pushlightuserdata(L, &d);
    rc = lua_pcall(L, 1, 1, 0);
    if (rc == 0 && !d.err)
        return 1;
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        lua_pushfstring(L, "invalid JSON: %s", msg ? msg : "error while decoding");
        lua_remove(L, -2);
    } else {
        lua_pop(L, 1);
        lua_pushfstring(L, "invalid JSON: %s at character %d", d.err ? d.err : "no value",
                        (int)(d.p - d.start) + 1);
    }
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}
