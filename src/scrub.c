/* scrub.c: the credentials as secrets: which of them are secret, and their removal from every
 * string that reaches Lua (messages, headers, decoded answers, error tables), cut or whole. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include "scrub.h"

/* Which credentials are secrets (the username is an email; the client id is not secret). */
static const unsigned char secret_cred[ZD_CRED_N] = {
    [ZD_CRED_PASSWORD] = 1, [ZD_CRED_BEARER] = 1, [ZD_CRED_REFRESH] = 1,
    [ZD_CRED_CLIENT_SECRET] = 1, [ZD_CRED_PROXY] = 1, [ZD_CRED_BASIC] = 1,
};

static void index_one(zd_creds *k, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 4 || k->nsec >= ZD_NSEC)
        return;
    k->sec[k->nsec] = s;
    k->sec_len[k->nsec++] = n;
    if (n > k->sec_max)
        k->sec_max = n;
}

/* Rebuilds the list the scrubber reads, after any credential changed. */
void zd_creds_index(zd_creds *k)
{
    int i;
    k->nsec = 0;
    k->sec_max = 0;
    for (i = 0; i < ZD_CRED_N; i++)
        if (secret_cred[i])
            index_one(k, k->v[i]);
    for (i = 0; i < k->nretired; i++)
        index_one(k, k->retired[i]);
}

/* Keeps a replaced token as a secret (the oldest one goes when the list is full): a server may
 * still echo it. The last ones only, so that memory stays bounded in a process that refreshes
 * for months. */
static void retire(zd_creds *k, char *s)
{
    if (!s)
        return;
    if (strlen(s) < 4) {
        zd_free_secret(&s);
        return;
    }
    if (k->nretired == ZD_RETIRED) {
        zd_free_secret(&k->retired[0]);
        memmove(k->retired, k->retired + 1, (ZD_RETIRED - 1) * sizeof *k->retired);
        k->nretired--;
    }
    k->retired[k->nretired++] = s;
}

/* Replaces a token with a copy of v, the old one retired; the caller re-indexes. */
void zd_creds_replace(zd_creds *k, int which, const char *v)
{
    retire(k, k->v[which]);
    k->v[which] = zd_strdup_secret(v);
}

/* ZD_CRED_BASIC: base64 of "username:password", the form Basic credentials travel in (to scrub
 * it from echoes). 0 when out of memory. */
int zd_creds_set_basic(zd_creds *k)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *user = k->v[ZD_CRED_USERNAME], *pass = k->v[ZD_CRED_PASSWORD];
    size_t ul, pl, n, i, j = 0;
    unsigned char *raw;
    char *out;
    if (!user || !pass)
        return 1;
    ul = strlen(user);
    pl = strlen(pass);
    n = ul + 1 + pl;
    raw = malloc(n);
    out = malloc(4 * ((n + 2) / 3) + 1);
    if (!raw || !out) {
        free(raw);
        free(out);
        return 0;
    }
    memcpy(raw, user, ul);
    raw[ul] = ':';
    memcpy(raw + ul + 1, pass, pl);
    for (i = 0; i < n; i += 3) {
        unsigned v = (unsigned)raw[i] << 16 | (i + 1 < n ? (unsigned)raw[i + 1] << 8 : 0) |
                     (i + 2 < n ? raw[i + 2] : 0);
        out[j++] = tab[v >> 18 & 63];
        out[j++] = tab[v >> 12 & 63];
        out[j++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[j++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[j] = '\0';
    zd_wipe(raw, n);
    free(raw);
    zd_free_secret(&k->v[ZD_CRED_BASIC]);
    k->v[ZD_CRED_BASIC] = out;
    return 1;
}

/* Every credential wiped and freed. */
void zd_creds_free(zd_creds *k)
{
    int i;
    for (i = 0; i < ZD_CRED_N; i++)
        zd_free_secret(&k->v[i]);
    while (k->nretired > 0)
        zd_free_secret(&k->retired[--k->nretired]);
    k->nsec = 0;
}

/* ---- scrubbing ---- */

/* Whether s[0..n) holds a secret. */
static int holds_secret(const zd_creds *c, const char *s, size_t n)
{
    int k;
    for (k = 0; k < c->nsec; k++)
        if (c->sec_len[k] <= n && memmem(s, n, c->sec[k], c->sec_len[k]))
            return 1;
    return 0;
}

/* The length of the longest end of s[0..n) that begins a secret (4 characters or more), or 0:
 * what a cut through a secret leaves. */
static size_t secret_prefix_at_end(const zd_creds *c, const char *s, size_t n)
{
    size_t best = 0;
    int k;
    for (k = 0; k < c->nsec; k++) {
        size_t j = c->sec_len[k] - 1 < n ? c->sec_len[k] - 1 : n;
        for (; j >= 4 && j > best; j--)
            if (memcmp(s + n - j, c->sec[k], j) == 0) {
                best = j;
                break;
            }
    }
    return best;
}

/* The secret that starts at s[0..n), its length, or 0. */
static size_t secret_at(const zd_creds *c, const char *s, size_t n)
{
    int k;
    for (k = 0; k < c->nsec; k++)
        if (c->sec_len[k] <= n && memcmp(s, c->sec[k], c->sec_len[k]) == 0)
            return c->sec_len[k];
    return 0;
}

/* Removes every secret the client holds from a message before it reaches Lua. */
void zd_scrub_push(lua_State *L, const zd_creds *c, const char *msg, size_t n)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    while (n > 0) {
        size_t skip = secret_at(c, msg, n);
        if (skip) {
            luaL_addstring(&b, ZD_REDACTED);
            msg += skip;
            n -= skip;
        } else {
            luaL_addchar(&b, (unsigned char)*msg < 0x20 ? ' ' : *msg);
            msg++;
            n--;
        }
    }
    luaL_pushresult(&b);
}

/* Scrub first, then cut: s[0..n) without its secrets into out (at most cap - 1 bytes and a NUL,
 * cut on a UTF-8 boundary). When the text was cut, here or before (was_cut), whatever begins a
 * secret at its end goes too. Returns the length. */
size_t zd_scrub_into(const zd_creds *c, const char *s, size_t n, char *out, size_t cap, int was_cut)
{
    size_t j = 0, k;
    while (n > 0) {
        size_t skip = secret_at(c, s, n);
        size_t add = skip ? sizeof ZD_REDACTED - 1 : 1;
        if (j + add > cap - 1) {
            was_cut = 1;
            break;
        }
        if (skip) {
            memcpy(out + j, ZD_REDACTED, add);
            s += skip;
            n -= skip;
        } else {
            out[j] = (unsigned char)*s < 0x20 ? ' ' : *s;
            s++;
            n--;
        }
        j += add;
    }
    if (was_cut) {
        while (j > 0 && ((unsigned char)out[j - 1] & 0xC0) == 0x80)
            j--;
        if (j > 0 && (unsigned char)out[j - 1] >= 0xC0)
            j--;
        if ((k = secret_prefix_at_end(c, out, j)) > 0) {
            j -= k;
            if (j + sizeof ZD_REDACTED - 1 <= cap - 1) {
                memcpy(out + j, ZD_REDACTED, sizeof ZD_REDACTED - 1);
                j += sizeof ZD_REDACTED - 1;
            }
        }
    }
    out[j] = '\0';
    return j;
}

/* A header value kept in a fixed array (cut there when it was longer), scrubbed in place. */
static void scrub_fixed(const zd_creds *c, char *v, size_t cap)
{
    char tmp[600];
    size_t n = strlen(v);
    int cut = n == cap - 1;
    if (!cut && !holds_secret(c, v, n))
        return;
    if (cap > sizeof tmp)
        cap = sizeof tmp;
    zd_scrub_into(c, v, n, tmp, cap, cut);
    memcpy(v, tmp, strlen(tmp) + 1);
}

/* The strings of an answer's headers that reach Lua, before anything reads them. */
void zd_scrub_resp(const zd_creds *c, zd_resp *r)
{
    scrub_fixed(c, r->request_id, sizeof r->request_id);
    scrub_fixed(c, r->location, sizeof r->location);
    scrub_fixed(c, r->warn, sizeof r->warn);
}

static void scrub_tree(lua_State *L, const zd_creds *c, int t, int depth);

/* The decoded answer at the top of the stack: a table is walked, a string replaced. */
static void scrub_value(lua_State *L, const zd_creds *c)
{
    if (lua_istable(L, -1)) {
        scrub_tree(L, c, -1, 0);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *v = lua_tolstring(L, -1, &n);
        if (holds_secret(c, v, n)) {
            zd_scrub_push(L, c, v, n);
            lua_remove(L, -2);
        }
    }
}

/* Decodes an answer (as zd_json_decode_kept) with its strings scrubbed: the walk that scrubs
 * is only paid for when the raw text holds a secret or a string made from escapes does. */
int zd_scrub_decode(lua_State *L, const zd_creds *c, const char *s, size_t n, const zd_keep *keep)
{
    zd_watch w;
    int k, rc;
    w.n = c->nsec;
    w.s = c->sec;
    w.len = c->sec_len;
    w.hit = 0;
    rc = zd_json_decode_watched(L, s, n, keep, &w);
    if (rc != 1)
        return rc;
    for (k = 0; !w.hit && k < c->nsec; k++)
        w.hit = c->sec_len[k] <= n && memmem(s, n, c->sec[k], c->sec_len[k]) != NULL;
    if (w.hit)
        scrub_value(L, c);
    return 1;
}

/* Scrubs every string reachable from the table at t (an error: its code, message, request id,
 * 422 details, keys included): a server that echoes a credential must not hand it to logs. */
static void scrub_tree(lua_State *L, const zd_creds *c, int t, int depth)
{
    int renames = 0, i;
    t = zd_absindex(L, t);
    /* the decoder stops at 1,000 levels, so this is not reached by decoded bodies; a subtree
     * that cannot be walked is dropped rather than left unscrubbed */
    if (depth > 1000 || !lua_checkstack(L, 8)) {
        lua_pushnil(L);
        while (lua_next(L, t)) {
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, t);
        }
        return;
    }
    lua_newtable(L);   /* keys to rename: table keys cannot change during lua_next */
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            size_t n;
            const char *k = lua_tolstring(L, -2, &n);
            if (holds_secret(c, k, n)) {
                lua_pushvalue(L, -2);
                lua_rawseti(L, -4, ++renames);
            }
        }
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t n;
            const char *v = lua_tolstring(L, -1, &n);
            if (holds_secret(c, v, n)) {
                lua_pushvalue(L, -2);
                zd_scrub_push(L, c, v, n);
                lua_rawset(L, t);
            }
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            scrub_tree(L, c, -1, depth + 1);
        }
        lua_pop(L, 1);
    }
    for (i = 1; i <= renames; i++) {
        size_t n;
        const char *k;
        lua_rawgeti(L, -1, i);              /* old key */
        k = lua_tolstring(L, -1, &n);
        zd_scrub_push(L, c, k, n);          /* new key */
        lua_pushvalue(L, -2);
        lua_rawget(L, t);                   /* value */
        lua_rawset(L, t);                   /* t[new] = value */
        lua_pushnil(L);
        lua_rawset(L, t);                   /* t[old] = nil */
    }
    lua_pop(L, 1);
}

/* Scrubs every string reachable from the table at t, keys included. */
void zd_scrub_table(lua_State *L, const zd_creds *k, int t)
{
    scrub_tree(L, k, t, 0);
}
