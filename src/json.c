#define _GNU_SOURCE
/* json.c: Lua values <-> JSON text. Encoding is done here so that integers stay exact,
 * empty arrays stay arrays and a bad value is named by its path; decoding is lua-cjson's,
 * followed by a pass that turns every integral number back into a Lua integer. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "zd.h"

#define ZD_MAX_DEPTH 64
#define ZD_MAX_JSON (64u * 1024u * 1024u)

static const char zd_decode_key = 'd';

/* Keys whose value is a JSON array in Zendesk's user and job payloads: an empty Lua table
 * under one of them is sent as [] rather than {}. */
static const char *const array_keys[] = {
    "tags", "identities", "agent_brand_ids", "users", "ids", "external_ids",
    "organization_ids", "group_ids", "brand_ids", "results", "job_statuses", NULL
};

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

/* Returns the length of the valid UTF-8 sequence at s, or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
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
            size_t k = utf8_len(s + i, n - i);
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
    int i;
    if (has_marker(e->L, idx, &zd_array_mt_key))
        return 1;
    if (has_marker(e->L, idx, &zd_object_mt_key))
        return 0;
    if (e->depth == 0 || s->key == NULL)
        return 0;
    for (i = 0; array_keys[i]; i++)
        if (strlen(array_keys[i]) == s->keylen && memcmp(array_keys[i], s->key, s->keylen) == 0)
            return 1;
    return 0;
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

int zd_json_encode(lua_State *L, int idx, zd_buf *out, const char *root, char *err, size_t errlen)
{
    enc e;
    memset(&e, 0, sizeof e);
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

int zd_is_null(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

/* ---- decoding ---- */

void zd_json_setup(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    /* a private instance: a script's own cjson settings must not change what we decode */
    lua_getfield(L, -1, "new");
    lua_call(L, 0, 1);
    lua_getfield(L, -1, "decode_invalid_numbers");
    if (lua_isfunction(L, -1)) {
        lua_pushboolean(L, 0);
        lua_call(L, 1, 0);
    } else {
        lua_pop(L, 1);
    }
    lua_getfield(L, -1, "decode");
    zd_rawsetp(L, LUA_REGISTRYINDEX, &zd_decode_key);
    lua_pop(L, 2);
}

#if ZD_HAS_INTEGERS
/* cjson reads every number as a double, which rounds above 2^53. Before decoding, integer
 * literals too long to be exact as doubles are turned into strings carrying this marker, and
 * turned back into exact integers afterwards. A NUL byte cannot appear raw in JSON text, so
 * only a document holding this very escape could collide; then nothing is rewritten. */
#define BIG_MARK "\\u0000zdint:"
#define BIG_MARK_DECODED "\0zdint:"
#define BIG_MARK_DECODED_LEN (sizeof BIG_MARK_DECODED - 1)

/* Writes s with its 16+ digit integer literals quoted and marked into out; returns the number
 * rewritten, or -1 on allocation failure. */
static int mark_bigints(const char *s, size_t n, zd_buf *out)
{
    size_t i = 0, from = 0;
    int found = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t st = i, digits = 0;
            int integral = 1;
            if (c == '-')
                i++;
            while (i < n && s[i] >= '0' && s[i] <= '9')
                i++, digits++;
            while (i < n && (s[i] == '.' || s[i] == 'e' || s[i] == 'E' || s[i] == '+' || s[i] == '-' ||
                             (s[i] >= '0' && s[i] <= '9')))
                integral = 0, i++;
            if (integral && digits >= 16 && digits <= 19) {
                if (!zd_buf_add(out, s + from, st - from) || !zd_buf_adds(out, "\"" BIG_MARK) ||
                    !zd_buf_add(out, s + st, i - st) || !zd_buf_addc(out, '"'))
                    return -1;
                from = i;
                found++;
            }
        } else {
            i++;
        }
    }
    if (found && !zd_buf_add(out, s + from, n - from))
        return -1;
    return found;
}

/* Replaces the value at idx (a marked string or an integral float) by a Lua integer; returns 1
 * when it pushed the replacement, 0 when the value stays as it is. */
static int push_integral(lua_State *L, int idx, int marked)
{
    lua_Number d;
    if (marked && lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *v = lua_tolstring(L, idx, &len);
        if (len > BIG_MARK_DECODED_LEN && memcmp(v, BIG_MARK_DECODED, BIG_MARK_DECODED_LEN) == 0) {
            char *end;
            long long x;
            errno = 0;
            x = strtoll(v + BIG_MARK_DECODED_LEN, &end, 10);
            if (errno == 0 && *end == '\0')
                lua_pushinteger(L, (lua_Integer)x);
            else   /* out of the int64 range: a float, as cjson would have read it */
                lua_pushnumber(L, (lua_Number)strtod(v + BIG_MARK_DECODED_LEN, NULL));
            return 1;
        }
        return 0;
    }
    if (lua_type(L, idx) != LUA_TNUMBER || lua_isinteger(L, idx))
        return 0;
    d = lua_tonumber(L, idx);
    if (d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
        return 0;
    lua_pushinteger(L, (lua_Integer)d);
    return 1;
}

static void fix_numbers(lua_State *L, int t, int marked)
{
    luaL_checkstack(L, 4, "JSON nested too deeply");
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -1) == LUA_TTABLE) {
            fix_numbers(L, lua_gettop(L), marked);
        } else if (push_integral(L, -1, marked)) {
            lua_pushvalue(L, -3);
            lua_insert(L, -2);
            lua_rawset(L, t);
        }
        lua_pop(L, 1);
    }
}
#endif

int zd_json_decode(lua_State *L, const char *s, size_t n)
{
#if ZD_HAS_INTEGERS
    zd_buf marked = {0};
    int nmarked = 0;
    size_t i;
    /* only a text with a run of 16+ digits can hold an integer cjson would round */
    for (i = 0; i < n; i++)
        if (s[i] >= '0' && s[i] <= '9') {
            size_t j = i;
            while (j < n && s[j] >= '0' && s[j] <= '9')
                j++;
            if (j - i >= 16) {
                if (!memmem(s, n, "u0000zdint:", 11))
                    nmarked = mark_bigints(s, n, &marked);
                break;
            }
            i = j;
        }
    if (nmarked < 0) {
        zd_buf_free(&marked);
        lua_pushnil(L);
        lua_pushliteral(L, "invalid JSON: out of memory");
        return 2;
    }
#endif
    zd_rawgetp(L, LUA_REGISTRYINDEX, &zd_decode_key);
#if ZD_HAS_INTEGERS
    if (nmarked > 0)
        lua_pushlstring(L, marked.p, marked.len);
    else
        lua_pushlstring(L, s, n);
    zd_buf_free(&marked);
#else
    lua_pushlstring(L, s, n);
#endif
    if (lua_pcall(L, 1, 1, 0) != 0) {
        const char *msg = lua_tostring(L, -1);
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON: %s", msg ? msg : "?");
        lua_remove(L, -3);
        return 2;
    }
#if ZD_HAS_INTEGERS
    if (lua_type(L, -1) == LUA_TTABLE)
        fix_numbers(L, lua_gettop(L), nmarked > 0);
    else if (push_integral(L, -1, nmarked > 0))
        lua_remove(L, -2);
#endif
    return 1;
}
