/* client.c: the Lua binding of the core (module zendesk.core): the client userdata, its
 * options, the upsert / bulk / job-status / request methods, error tables and events. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <curl/curl.h>
#include "transport.h"

#define CLIENT_MT "zendesk.Client"
#define ERROR_MT "zendesk.Error"
#define BOX_MT "zendesk.Buffer"

extern const char zd_array_mt_key;
extern const char zd_object_mt_key;

/* Tokens replaced by a refresh stay secrets: a server may still echo them. The last ones only,
 * so that memory stays bounded in a process that refreshes for months. */
#define ZD_RETIRED 8
#define ZD_NSEC (6 + ZD_RETIRED)
#define REDACTED "[redacted]"

typedef struct {
    zd_transport t;
    lua_State *L;            /* the state of the call in progress, for the hooks */
    int open;
    int busy;                  /* a call is in the transport loop: callbacks may not re-enter */
    int closing;               /* close() came from a callback: freed once the loop let go */
    int on_event, on_refresh;  /* registry refs, LUA_NOREF when absent */
    int parked;                /* registry ref of an error raised in a callback */
    int oauth;
    char *refresh_token, *client_id, *client_secret;
    char *basic_b64;           /* the Basic credentials as they travel, should a server echo them */
    char *retired[ZD_RETIRED]; /* access and refresh tokens a refresh replaced, newest last */
    int nretired;
    /* every secret of 4 characters or more, for the scrubbing: rebuilt when one changes */
    const char *sec[ZD_NSEC];
    size_t sec_len[ZD_NSEC];
    int nsec;
    size_t sec_max;            /* the longest */
    char refresh_err[320];
} zd_client;

/* ---- helpers ---- */

static int has_crlf(const char *s, size_t n)
{
    return memchr(s, '\r', n) || memchr(s, '\n', n) || memchr(s, '\0', n);
}

static void add_secret(zd_client *c, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 4 || c->nsec >= ZD_NSEC)
        return;
    c->sec[c->nsec] = s;
    c->sec_len[c->nsec++] = n;
    if (n > c->sec_max)
        c->sec_max = n;
}

static void update_secrets(zd_client *c)
{
    int i;
    c->nsec = 0;
    c->sec_max = 0;
    add_secret(c, c->t.password);
    add_secret(c, c->t.bearer);
    add_secret(c, c->refresh_token);
    add_secret(c, c->client_secret);
    add_secret(c, c->t.proxy);
    add_secret(c, c->basic_b64);
    for (i = 0; i < c->nretired; i++)
        add_secret(c, c->retired[i]);
}

/* Keeps a replaced token as a secret (the oldest one goes when the list is full). */
static void retire_secret(zd_client *c, char *s)
{
    if (!s)
        return;
    if (strlen(s) < 4) {
        zd_free_secret(&s);
        return;
    }
    if (c->nretired == ZD_RETIRED) {
        zd_free_secret(&c->retired[0]);
        memmove(c->retired, c->retired + 1, (ZD_RETIRED - 1) * sizeof *c->retired);
        c->nretired--;
    }
    c->retired[c->nretired++] = s;
}

static int holds_secret(zd_client *c, const char *s, size_t n)
{
    int k;
    for (k = 0; k < c->nsec; k++)
        if (c->sec_len[k] <= n && memmem(s, n, c->sec[k], c->sec_len[k]))
            return 1;
    return 0;
}

/* The length of the longest end of s[0..n) that begins a secret (4 characters or more), or 0:
 * what a cut through a secret leaves. */
static size_t secret_prefix_at_end(zd_client *c, const char *s, size_t n)
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
static size_t secret_at(zd_client *c, const char *s, size_t n)
{
    int k;
    for (k = 0; k < c->nsec; k++)
        if (c->sec_len[k] <= n && memcmp(s, c->sec[k], c->sec_len[k]) == 0)
            return c->sec_len[k];
    return 0;
}

/* Removes every secret the client holds from a message before it reaches Lua. */
static void push_scrubbed(lua_State *L, zd_client *c, const char *msg, size_t n)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    while (n > 0) {
        size_t skip = secret_at(c, msg, n);
        if (skip) {
            luaL_addstring(&b, REDACTED);
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
static size_t scrub_into(zd_client *c, const char *s, size_t n, char *out, size_t cap, int was_cut)
{
    size_t j = 0, k;
    while (n > 0) {
        size_t skip = secret_at(c, s, n);
        size_t add = skip ? sizeof REDACTED - 1 : 1;
        if (j + add > cap - 1) {
            was_cut = 1;
            break;
        }
        if (skip) {
            memcpy(out + j, REDACTED, add);
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
            if (j + sizeof REDACTED - 1 <= cap - 1) {
                memcpy(out + j, REDACTED, sizeof REDACTED - 1);
                j += sizeof REDACTED - 1;
            }
        }
    }
    out[j] = '\0';
    return j;
}

/* A header value kept in a fixed array (cut there when it was longer), scrubbed in place. */
static void scrub_fixed(zd_client *c, char *v, size_t cap)
{
    char tmp[600];
    size_t n = strlen(v);
    int cut = n == cap - 1;
    if (!cut && !holds_secret(c, v, n))
        return;
    if (cap > sizeof tmp)
        cap = sizeof tmp;
    scrub_into(c, v, n, tmp, cap, cut);
    memcpy(v, tmp, strlen(tmp) + 1);
}

/* The strings of an answer's headers that reach Lua, before anything reads them. */
static void scrub_resp(zd_client *c, zd_resp *r)
{
    scrub_fixed(c, r->request_id, sizeof r->request_id);
    scrub_fixed(c, r->location, sizeof r->location);
    scrub_fixed(c, r->warn, sizeof r->warn);
}

static void scrub_tree(lua_State *L, zd_client *c, int t, int depth);

/* The decoded answer at the top of the stack: a table is walked, a string replaced. */
static void scrub_value(lua_State *L, zd_client *c)
{
    if (lua_istable(L, -1)) {
        scrub_tree(L, c, -1, 0);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *v = lua_tolstring(L, -1, &n);
        if (holds_secret(c, v, n)) {
            push_scrubbed(L, c, v, n);
            lua_remove(L, -2);
        }
    }
}

/* Decodes an answer (as zd_json_decode_kept) with its strings scrubbed: the walk that scrubs
 * is only paid for when the raw text holds a secret or a string made from escapes does. */
static int decode_scrubbed(lua_State *L, zd_client *c, const char *s, size_t n, const zd_keep *keep)
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
static void scrub_tree(lua_State *L, zd_client *c, int t, int depth)
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
                push_scrubbed(L, c, v, n);
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
        push_scrubbed(L, c, k, n);          /* new key */
        lua_pushvalue(L, -2);
        lua_rawget(L, t);                   /* value */
        lua_rawset(L, t);                   /* t[new] = value */
        lua_pushnil(L);
        lua_rawset(L, t);                   /* t[old] = nil */
    }
    lua_pop(L, 1);
}

static zd_client *check_client(lua_State *L, const char *method)
{
    zd_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    if (!c->open)
        luaL_error(L, "attempt to use a closed zendesk client");
    /* a callback (on_event, on_refresh) runs in the middle of a call whose transfers, buffers
     * and state would be reused under it: refused; the callback may only close the client */
    if (c->busy)
        luaL_error(L, "zendesk: %s called from a callback (on_event, on_refresh) while a call on the same "
                   "client is in progress: refused (close() is the one method a callback may call)", method);
    c->L = L;
    return c;
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_num(lua_State *L, const char *k, long long v)
{
    zd_pushid(L, v);
    lua_setfield(L, -2, k);
}

/* ---- errors ---- */

typedef struct {
    zd_buf b;
} zd_box;

/* A buffer anchored in a userdata: a Lua error half-way through cannot leak it. luaL_Buffer
 * is not usable here because the code below reads fields between appends. */
static zd_buf *push_box(lua_State *L)
{
    zd_box *box = lua_newuserdata(L, sizeof *box);
    memset(box, 0, sizeof *box);
    luaL_getmetatable(L, BOX_MT);
    lua_setmetatable(L, -2);
    return &box->b;
}

/* Appends s[0..n) with line breaks and other control characters escaped (\n, \r, \t, \xHH, and
 * the C1 controls, U+2028 and U+2029 as \uXXXX): tostring(err) is one line whatever a server sent. */
static int add_text(zd_buf *b, const char *s, size_t n)
{
    size_t i, from = 0;
    char esc[8];
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        size_t skip = 1;
        if (ch >= 0x20 && ch != 0x7f && ch != 0xc2 && ch != 0xe2)
            continue;
        if (ch == '\n' || ch == '\r' || ch == '\t')
            snprintf(esc, sizeof esc, "\\%c", ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't');
        else if (ch < 0x20 || ch == 0x7f)
            snprintf(esc, sizeof esc, "\\x%02x", ch);
        else if (ch == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9f)
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned char)s[i + 1]), skip = 2;
        else if (ch == 0xe2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 &&
                 ((unsigned char)s[i + 2] == 0xa8 || (unsigned char)s[i + 2] == 0xa9))
            snprintf(esc, sizeof esc, "\\u%04x", 0x2000 + ((unsigned char)s[i + 2] - 0x80)), skip = 3;
        else
            continue;
        if (!zd_buf_add(b, s + from, i - from) || !zd_buf_adds(b, esc))
            return 0;
        i += skip - 1;
        from = i + 1;
    }
    return zd_buf_add(b, s + from, n - from);
}

static void add_field(lua_State *L, zd_buf *b, int t, const char *name, const char *before, const char *after)
{
    lua_getfield(L, t, name);
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        size_t n;
        const char *v;
        char num[32];
        if (lua_type(L, -1) == LUA_TNUMBER) {
            snprintf(num, sizeof num, "%.0f", (double)lua_tonumber(L, -1));
            v = num;
            n = strlen(num);
        } else {
            v = lua_tolstring(L, -1, &n);
        }
        if (!zd_buf_adds(b, before) || !add_text(b, v, n) || !zd_buf_adds(b, after))
            luaL_error(L, "zendesk: out of memory");
    }
    lua_pop(L, 1);
}

static int error_tostring(lua_State *L)
{
    zd_buf *b;
    int first = 1;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    b = push_box(L);
    zd_buf_adds(b, "zendesk: ");
    lua_getfield(L, 1, "kind");
    if (lua_type(L, -1) == LUA_TSTRING)
        add_text(b, lua_tostring(L, -1), zd_rawlen(L, -1));
    else
        zd_buf_adds(b, "error");
    lua_pop(L, 1);
    add_field(L, b, 1, "status", " ", "");
    add_field(L, b, 1, "code", " ", "");
    add_field(L, b, 1, "message", ": ", "");
    /* "(email: Email: x is not properly formatted; name: ...)" */
    lua_getfield(L, 1, "details");
    if (lua_istable(L, -1)) {
        int d = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, d)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {
                lua_rawgeti(L, -1, 1);
                if (lua_istable(L, -1)) {
                    int entry = lua_gettop(L);
                    lua_getfield(L, entry, "description");
                    if (lua_type(L, -1) == LUA_TSTRING) {
                        zd_buf_adds(b, first ? " (" : "; ");
                        first = 0;
                        add_text(b, lua_tostring(L, entry - 2), zd_rawlen(L, entry - 2));
                        zd_buf_adds(b, ": ");
                        add_text(b, lua_tostring(L, -1), zd_rawlen(L, -1));
                    }
                    lua_pop(L, 1);
                }
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        if (!first)
            zd_buf_addc(b, ')');
    }
    lua_pop(L, 1);
    add_field(L, b, 1, "retry_after", " (retry after ", " s)");
    add_field(L, b, 1, "request_id", " [request_id ", "]");
    if (!b->p)
        return luaL_error(L, "zendesk: out of memory");
    lua_pushlstring(L, b->p, b->len);
    zd_buf_free(b);
    return 1;
}

/* Pushes a new error table {kind = kind, message = msg} with the shared metatable. */
static void push_error(lua_State *L, const char *kind, const char *msg)
{
    lua_createtable(L, 0, 8);
    set_str(L, "kind", kind);
    if (msg)
        set_str(L, "message", msg);
    luaL_getmetatable(L, ERROR_MT);
    lua_setmetatable(L, -2);
}

static int fail_validation(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    push_error(L, "validation", msg);
    return 2;
}

/* Fills meta (or error) fields shared by successes and failures. */
static void add_response_fields(lua_State *L, zd_xfer *x)
{
    const zd_resp *r = &x->resp;
    if (r->request_id[0])
        set_str(L, "request_id", r->request_id);
    lua_pushinteger(L, x->attempts);
    lua_setfield(L, -2, "attempts");
}

/* rate_limit = {limit, remaining, reset} and endpoint_limit = {total, remaining, resets}, on
 * successes and errors alike: a shared budget learns from every answer, and a 429 tells the
 * per-user limit (endpoint_limit.remaining == 0) from the account's. */
static void add_limits(lua_State *L, const zd_resp *r)
{
    if (r->rl_limit >= 0 || r->rl_remaining >= 0) {
        lua_createtable(L, 0, 3);
        if (r->rl_limit >= 0)
            set_num(L, "limit", r->rl_limit);
        if (r->rl_remaining >= 0)
            set_num(L, "remaining", r->rl_remaining);
        if (r->rl_reset >= 0)
            set_num(L, "reset", r->rl_reset);
        lua_setfield(L, -2, "rate_limit");
    }
    if (r->ep_total >= 0 || r->ep_remaining >= 0) {
        lua_createtable(L, 0, 3);
        if (r->ep_total >= 0)
            set_num(L, "total", r->ep_total);
        if (r->ep_remaining >= 0)
            set_num(L, "remaining", r->ep_remaining);
        if (r->ep_resets >= 0)
            set_num(L, "resets", r->ep_resets);
        lua_setfield(L, -2, "endpoint_limit");
    }
}

static void push_meta(lua_State *L, zd_xfer *x)
{
    const zd_resp *r = &x->resp;
    lua_createtable(L, 0, 8);
    set_num(L, "status", r->status);
    lua_pushboolean(L, r->status == 201);
    lua_setfield(L, -2, "created");
    if (r->location[0])
        set_str(L, "location", r->location);
    if (r->warn[0])
        set_str(L, "warn", r->warn);
    add_limits(L, r);
    add_response_fields(L, x);
}

/* The meta of a success holds three strings from the answer's headers, scrubbed in place
 * (scrub_resp) before they get here. */
static void push_meta_scrubbed(lua_State *L, zd_client *c, zd_xfer *x)
{
    (void)c;
    push_meta(L, x);
}

static int is_json(const zd_xfer *x)
{
    const char *p = x->body.p;
    if (strstr(x->resp.content_type, "json"))
        return 1;
    while (p && *p && isspace((unsigned char)*p))
        p++;
    return p && (*p == '{' || *p == '[');
}

/* First line of a text or HTML body, tags dropped, trimmed to a readable length: read with
 * room for a secret past the cut, scrubbed, then cut (scrub_into). */
static void push_text_excerpt(lua_State *L, zd_client *c, const char *s, size_t n)
{
    char raw[200 + 1024 + 1], out[201];
    size_t i, j = 0, room = 200 + (c->sec_max < 1024 ? c->sec_max : 1024);
    int in_tag = 0, space = 1;
    for (i = 0; i < n && j < room; i++) {
        char ch = s[i];
        if (ch == '<') {
            in_tag = 1;
            continue;
        }
        if (in_tag) {
            in_tag = ch != '>';
            if (!in_tag && !space)
                raw[j++] = ' ', space = 1;
            continue;
        }
        if (isspace((unsigned char)ch)) {
            if (!space)
                raw[j++] = ' ', space = 1;
            continue;
        }
        raw[j++] = ch;
        space = 0;
    }
    while (j > 0 && raw[j - 1] == ' ')
        j--;
    while (i < n && isspace((unsigned char)s[i]))
        i++;
    j = scrub_into(c, raw, j, out, sizeof out, i < n);
    while (j > 0 && out[j - 1] == ' ')
        j--;
    lua_pushlstring(L, out, j);
}

/* Pushes nil, err for a transfer that did not succeed. */
static int push_failure(lua_State *L, zd_client *c, zd_xfer *x)
{
    long status = x->resp.status;
    const char *kind;
    int decoded = 0;
    scrub_resp(c, &x->resp);
    lua_pushnil(L);
    if (x->sink.too_large) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s %s: answer too large (%zu bytes received, limit %zu)", x->method,
                 x->path, x->sink.received, x->sink.limit);
        push_error(L, "invalid_response", NULL);
        push_scrubbed(L, c, msg, strlen(msg));
        lua_setfield(L, -2, "message");
        set_str(L, "code", "AnswerTooLarge");
        if (status)
            set_num(L, "status", status);
        add_response_fields(L, x);
        scrub_tree(L, c, -1, 0);
        return 2;
    }
    if (x->cc != CURLE_OK) {
        /* libcurl cuts its message at CURL_ERROR_SIZE: a secret it cut is scrubbed too */
        char why[CURL_ERROR_SIZE];
        size_t wn = strlen(x->errbuf);
        if (wn)
            scrub_into(c, x->errbuf, wn, why, sizeof why, wn >= CURL_ERROR_SIZE - 1);
        push_error(L, x->cc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "network", NULL);
        lua_pushfstring(L, "%s %s: %s%s", x->method, x->path, wn ? why : curl_easy_strerror(x->cc),
                        x->held_back ? " (not resent: the server may have received it)" : "");
        push_scrubbed(L, c, lua_tostring(L, -1), zd_rawlen(L, -1));
        lua_remove(L, -2);
        lua_setfield(L, -2, "message");
        set_num(L, "curl_code", x->cc);
        if (x->held_back) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "not_resent");
        }
        lua_pushinteger(L, x->attempts);
        lua_setfield(L, -2, "attempts");
        return 2;
    }
    kind = status == 401 || status == 403 ? "auth" : status == 429 ? "rate_limited" : "http";
    push_error(L, kind, NULL);
    set_num(L, "status", status);
    if (x->resp.retry_after >= 0) {
        lua_pushnumber(L, x->resp.retry_after);
        lua_setfield(L, -2, "retry_after");
    }
    add_response_fields(L, x);
    add_limits(L, &x->resp);
    if (x->body.len > 0 && is_json(x)) {
        /* only an object can carry Zendesk's error fields; anything else is read as text */
        if (zd_json_decode(L, x->body.p, x->body.len) != 1)
            lua_pop(L, 2);
        else if (lua_istable(L, -1))
            decoded = 1;
        else
            lua_pop(L, 1);
    }
    if (decoded) {
        int body = lua_gettop(L);
        lua_getfield(L, body, "error");
        if (lua_type(L, -1) == LUA_TSTRING) {
            lua_setfield(L, body - 1, "code");
            lua_getfield(L, body, "description");
            if (!lua_isstring(L, -1)) {
                lua_pop(L, 1);
                lua_getfield(L, body, "error_description");
            }
        } else if (lua_istable(L, -1)) {
            /* {"error": {"title": "Forbidden", "message": "..."}} */
            lua_getfield(L, -1, "title");
            lua_setfield(L, body - 1, "code");
            lua_getfield(L, -1, "message");
            lua_remove(L, -2);
        }
        if (lua_isstring(L, -1)) {
            size_t n;
            const char *m = lua_tolstring(L, -1, &n);
            push_scrubbed(L, c, m, n);
            lua_setfield(L, body - 1, "message");
        }
        lua_pop(L, 1);
        lua_getfield(L, body, "details");
        if (lua_istable(L, -1))
            lua_setfield(L, body - 1, "details");
        else
            lua_pop(L, 1);
        lua_pop(L, 1);
    } else if (x->body.len > 0) {
        push_text_excerpt(L, c, x->body.p, x->body.len);
        lua_setfield(L, -2, "message");
    }
    lua_getfield(L, -1, "message");
    if (lua_isnil(L, -1)) {
        lua_pushfstring(L, "%s %s answered HTTP %d", x->method, x->path, (int)status);
        lua_setfield(L, -3, "message");
    }
    lua_pop(L, 1);
    if (status == 401 && c->refresh_err[0]) {
        lua_getfield(L, -1, "message");
        lua_pushfstring(L, "%s; %s", lua_tostring(L, -1), c->refresh_err);
        lua_setfield(L, -3, "message");
        lua_pop(L, 1);
    }
    if (x->waited_too_long) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "retry_after_too_long");
    }
    scrub_tree(L, c, -1, 0);
    return 2;
}

/* A positive integer id (Lua 5.4: an integer; LuaJIT: an integral double up to 2^53). */
static int is_id(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
#if ZD_HAS_INTEGERS
    return lua_isinteger(L, idx) && lua_tointeger(L, idx) > 0;
#else
    {
        lua_Number v = lua_tonumber(L, idx);
        return v >= 1 && v <= 9007199254740992.0 && v == floor(v);
    }
#endif
}

static const char *lua_kind(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER)
        return zd_isinteger(L, idx) || lua_tonumber(L, idx) == floor(lua_tonumber(L, idx))
                   ? "a number that is not a positive integer" : "a fraction";
    return lua_isnil(L, idx) || zd_is_null(L, idx) ? "missing" : lua_typename(L, lua_type(L, idx));
}

/* Whether a job_status at idx has a string id and status; names the field in what if not. */
static int job_shape(lua_State *L, int idx, const char *name, char *what, size_t n)
{
    const char *f = NULL;
    idx = zd_absindex(L, idx);
    if (!lua_istable(L, idx)) {
        snprintf(what, n, "%s is %s, not an object", name, lua_kind(L, idx));
        return 0;
    }
    lua_getfield(L, idx, "id");
    lua_getfield(L, idx, "status");
    if (lua_type(L, -2) != LUA_TSTRING)
        f = "id";
    else if (lua_type(L, -1) != LUA_TSTRING)
        f = "status";
    if (f)
        snprintf(what, n, "%s.%s is %s, not a string", name, f, lua_kind(L, f[0] == 'i' ? -2 : -1));
    lua_pop(L, 2);
    return f == NULL;
}

/* The answer's object under key (on top of the stack) has the shape callers rely on: a user
 * with a positive integer id, a job_status with a string id and status. A 200 without them is
 * no success (issue 12: a string id came back as a user). */
static int answer_shape(lua_State *L, const char *key, char *what, size_t n)
{
    if (!lua_istable(L, -1)) {
        snprintf(what, n, "\"%s\" is %s, not an object", key, lua_kind(L, -1));
        return 0;
    }
    if (strcmp(key, "user") == 0) {
        int ok;
        lua_getfield(L, -1, "id");
        ok = is_id(L, -1);
        if (!ok)
            snprintf(what, n, "user.id is %s, not a positive integer", lua_kind(L, -1));
        lua_pop(L, 1);
        return ok;
    }
    if (strcmp(key, "job_status") == 0)
        return job_shape(L, -1, "job_status", what, n);
    if (strcmp(key, "job_statuses") == 0) {
        size_t i, len = zd_rawlen(L, -1);
        for (i = 1; i <= len; i++) {
            char name[40];
            int ok;
            snprintf(name, sizeof name, "job_statuses[%d]", (int)i);
            lua_rawgeti(L, -1, (int)i);
            ok = job_shape(L, -1, name, what, n);
            lua_pop(L, 1);
            if (!ok)
                return 0;
        }
    }
    return 1;
}

/* Pushes value, meta for a successful transfer (value = body[key] when key is given),
 * or nil, err. */
static int push_result_kept(lua_State *L, zd_client *c, zd_xfer *x, const char *key,
                            const zd_keep *keep);

static int push_result(lua_State *L, zd_client *c, zd_xfer *x, const char *key)
{
    return push_result_kept(L, c, x, key, NULL);
}

/* The same, with only the fields in keep of the object under key (upsert's `fields`). */
static int push_result_kept(lua_State *L, zd_client *c, zd_xfer *x, const char *key,
                            const zd_keep *keep)
{
    long s = x->resp.status;
    if (x->cc != CURLE_OK || s < 200 || s > 299)
        return push_failure(L, c, x);
    scrub_resp(c, &x->resp);
    if (x->body.len == 0) {
        if (key) {
            lua_pushnil(L);
            push_error(L, "http", "empty answer where a JSON body was expected");
            set_num(L, "status", s);
            add_response_fields(L, x);
            scrub_tree(L, c, -1, 0);
            return 2;
        }
        lua_pushnil(L);
    } else if (decode_scrubbed(L, c, x->body.p, x->body.len, keep) != 1) {
        lua_remove(L, -2);
        lua_pushnil(L);
        push_error(L, "http", NULL);
        lua_pushvalue(L, -3);
        lua_setfield(L, -2, "message");
        set_str(L, "code", "InvalidJSON");
        set_num(L, "status", s);
        add_response_fields(L, x);
        scrub_tree(L, c, -1, 0);
        lua_remove(L, -3);
        return 2;
    }
    if (key) {
        /* a proxy's "null" or any other JSON that is not the expected object is an error,
         * never a raise */
        if (lua_istable(L, -1))
            lua_getfield(L, -1, key);
        else
            lua_pushnil(L);
        {
            char what[96];
            if (!answer_shape(L, key, what, sizeof what)) {
                lua_pop(L, 2);
                lua_pushnil(L);
                push_error(L, "invalid_response", NULL);
                lua_pushfstring(L, "%s %s answered HTTP %d, but %s", x->method, x->path, (int)s, what);
                lua_setfield(L, -2, "message");
                set_str(L, "code", "InvalidResponse");
                set_num(L, "status", s);
                add_response_fields(L, x);
                scrub_tree(L, c, -1, 0);
                return 2;
            }
        }
        lua_remove(L, -2);
    }
    push_meta_scrubbed(L, c, x);
    return 2;
}

/* ---- hooks called from the transport loop ---- */

static int call_event(zd_client *c, int ev)
{
    lua_State *L = c->L;
    if (c->on_event == LUA_NOREF) {
        lua_pop(L, 1);
        return 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->on_event);
    lua_insert(L, -2);
    (void)ev;
    if (lua_pcall(L, 1, 0, 0) != 0) {
        c->parked = luaL_ref(L, LUA_REGISTRYINDEX);
        return -1;
    }
    return c->closing ? -1 : 0;   /* closed by the callback: the run ends here */
}

static int hook_retry(void *ud, zd_xfer *x, const char *reason, double wait)
{
    zd_client *c = ud;
    lua_State *L = c->L;
    lua_createtable(L, 0, 8);
    set_str(L, "type", "retry");
    set_str(L, "method", x->method);
    set_str(L, "path", x->path);
    lua_pushinteger(L, x->attempts);
    lua_setfield(L, -2, "attempt");
    lua_pushnumber(L, wait);
    lua_setfield(L, -2, "wait");
    set_str(L, "reason", reason);
    if (x->cc == CURLE_OK)
        set_num(L, "status", x->resp.status);
    scrub_resp(c, &x->resp);
    if (x->resp.request_id[0])
        set_str(L, "request_id", x->resp.request_id);
    scrub_tree(L, c, -1, 0);   /* every string of an event, as of an error */
    return call_event(c, 0);
}

static int hook_unauthorized(void *ud, zd_xfer *x)
{
    zd_client *c = ud;
    lua_State *L = c->L;
    zd_buf out = {0}, body = {0};
    zd_resp resp;
    char errbuf[CURL_ERROR_SIZE], err[160];
    CURLcode cc;
    int top = lua_gettop(L), ok = 0;
    (void)x;

    c->refresh_err[0] = '\0';
    if (!c->oauth || !(c->refresh_token || (c->client_id && c->client_secret)))
        return 0;
    lua_createtable(L, 0, 4);
    set_str(L, "grant_type", c->refresh_token ? "refresh_token" : "client_credentials");
    if (c->refresh_token)
        set_str(L, "refresh_token", c->refresh_token);
    if (c->client_id)
        set_str(L, "client_id", c->client_id);
    if (c->client_secret)
        set_str(L, "client_secret", c->client_secret);
    if (!zd_json_encode(L, -1, &body, "oauth", err, sizeof err)) {
        snprintf(c->refresh_err, sizeof c->refresh_err, "token refresh failed: %s", err);
        goto done;
    }
    cc = zd_transport_post_plain(&c->t, "/oauth/tokens", body.p, body.len, &out, &resp, errbuf);
    if (cc != CURLE_OK) {
        char why[CURL_ERROR_SIZE];
        size_t wn = strnlen(errbuf, sizeof errbuf - 1);
        if (wn)   /* libcurl cuts its message: scrubbed, and a cut secret goes too */
            scrub_into(c, errbuf, wn, why, sizeof why, wn >= CURL_ERROR_SIZE - 1);
        snprintf(c->refresh_err, sizeof c->refresh_err, "token refresh failed: %s",
                 wn ? why : curl_easy_strerror(cc));
        goto done;
    }
    if (resp.status != 200 || zd_json_decode(L, out.p ? out.p : "", out.len) != 1 || !lua_istable(L, -1)) {
        snprintf(c->refresh_err, sizeof c->refresh_err, "token refresh failed: HTTP %ld", resp.status);
        if (resp.status != 200 || out.len == 0)
            goto done;
        goto done;
    }
    {
        int t = lua_gettop(L);
        size_t an, rn = 0;
        const char *access, *refresh = NULL;
        lua_getfield(L, t, "access_token");
        lua_getfield(L, t, "refresh_token");
        access = lua_tolstring(L, -2, &an);
        if (lua_isstring(L, -1))
            refresh = lua_tolstring(L, -1, &rn);
        if (!access || an == 0 || has_crlf(access, an) || (refresh && has_crlf(refresh, rn))) {
            snprintf(c->refresh_err, sizeof c->refresh_err, "token refresh failed: no usable access_token");
            goto done;
        }
        /* the replaced tokens stay secrets: a server may still echo them */
        retire_secret(c, c->t.bearer);
        c->t.bearer = zd_strdup_secret(access);
        if (refresh) {
            retire_secret(c, c->refresh_token);
            c->refresh_token = zd_strdup_secret(refresh);
        }
        update_secrets(c);
        c->t.auth_gen++;
        ok = 1;
        lua_pop(L, 2);
        /* hand the new pair to the caller: the old refresh token is dead from now on */
        if (c->on_refresh != LUA_NOREF) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, c->on_refresh);
            lua_createtable(L, 0, 4);
            lua_getfield(L, t, "access_token");
            lua_setfield(L, -2, "access_token");
            lua_getfield(L, t, "refresh_token");
            lua_setfield(L, -2, "refresh_token");
            lua_getfield(L, t, "expires_in");
            lua_setfield(L, -2, "expires_in");
            lua_getfield(L, t, "token_type");
            lua_setfield(L, -2, "token_type");
            lua_getfield(L, t, "scope");
            lua_setfield(L, -2, "scope");
            if (lua_pcall(L, 1, 0, 0) != 0) {
                c->parked = luaL_ref(L, LUA_REGISTRYINDEX);
                ok = -1;
                goto done;
            }
            if (c->closing) {
                ok = -1;
                goto done;
            }
        }
        lua_createtable(L, 0, 2);
        set_str(L, "type", "token_refresh");
        if (call_event(c, 0) < 0)
            ok = -1;
    }
done:
    zd_wipe(body.p, body.cap);
    zd_wipe(out.p, out.cap);
    zd_buf_free(&body);
    zd_buf_free(&out);
    lua_settop(L, top);
    return ok;
}

/* Ends a call: buffers that grew past ZD_KEEP_BYTES go back (issue 12: 60 answers of a gzip
 * bomb kept 3.9 GB after request_many returned). Returns r, the results already pushed. */
static int done(zd_client *c, int r)
{
    size_t i;
    for (i = 0; i < c->t.npool; i++)
        if (c->t.pool[i])
            zd_xfer_release(c->t.pool[i]);
    return r;
}

static void free_client(lua_State *L, zd_client *c);

/* Runs n prepared transfers. An error a callback raised is parked and raised here, once
 * libcurl let go of every transfer. A close() from a callback is done here too, after the
 * loop: returns 1 then (the transfers are gone; the caller answers with push_closed). */
static int run(lua_State *L, zd_client *c, zd_xfer **xs, size_t n)
{
    int r;
    c->refresh_err[0] = '\0';
    c->parked = LUA_NOREF;
    c->busy = 1;
    r = zd_transport_run(&c->t, xs, n);
    c->busy = 0;
    if (r < 0 && c->parked != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->parked);
        luaL_unref(L, LUA_REGISTRYINDEX, c->parked);
        c->parked = LUA_NOREF;
        if (c->closing)
            free_client(L, c);
        else
            done(c, 0);
        lua_error(L);
    }
    if (c->closing) {
        free_client(L, c);
        return 1;
    }
    return 0;
}

/* nil, err for a call whose client a callback closed */
static int push_closed(lua_State *L)
{
    lua_pushnil(L);
    push_error(L, "closed", "the client was closed by a callback during the call; the call was abandoned");
    return 2;
}

static zd_xfer *slot(lua_State *L, zd_client *c, size_t i)
{
    zd_xfer *x = zd_transport_xfer(&c->t, i);
    if (!x)
        luaL_error(L, "zendesk: cannot set up a transfer (out of memory)");
    x->req.len = 0;
    x->has_body = 0;
    x->no_resend = 0;
    return x;
}

/* Encodes the value at idx as {"<wrap>": value} (or bare when wrap is NULL) into x->req. */
static int encode_body(lua_State *L, zd_xfer *x, int idx, const char *wrap, const char *root)
{
    char err[256];
    int ok = 1;
    if (wrap)
        ok = zd_buf_adds(&x->req, "{\"") && zd_buf_adds(&x->req, wrap) && zd_buf_adds(&x->req, "\":");
    if (!ok)
        return luaL_error(L, "zendesk: out of memory");
    if (!zd_json_encode(L, idx, &x->req, root, err, sizeof err)) {
        lua_pushnil(L);
        push_error(L, "validation", err);
        return 0;
    }
    if (wrap && !zd_buf_addc(&x->req, '}'))
        return luaL_error(L, "zendesk: out of memory");
    x->has_body = 1;
    return 1;
}

static void prepare(lua_State *L, zd_client *c, zd_xfer *x, const char *method, const char *path, size_t n)
{
    if (!zd_xfer_prepare(&c->t, x, method, path, n))
        luaL_error(L, "zendesk: out of memory");
}

/* ---- methods ---- */

#define ZD_MAX_FIELDS 64

/* upsert's options: {fields = {"id", ...}} -> keep (names anchored by the table at idx) */
static int upsert_options(lua_State *L, int idx, zd_keep *keep, const char **names, size_t *lens)
{
    lua_Integer i, n;
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "fields") != 0)
            return luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s' (upsert takes fields)",
                                                        lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                        : luaL_typename(L, -1)));
    }
    lua_getfield(L, idx, "fields");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    n = lua_istable(L, -1) ? (lua_Integer)zd_rawlen(L, -1) : 0;
    if (n < 1 || n > ZD_MAX_FIELDS)
        return luaL_argerror(L, idx, "option 'fields' must be an array of 1 to 64 user field names");
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING || zd_rawlen(L, -1) == 0)
            return luaL_argerror(L, idx, lua_pushfstring(L, "option 'fields': element %d must be a field name",
                                                        (int)i));
        names[i - 1] = lua_tolstring(L, -1, &lens[i - 1]);
        lua_pop(L, 1);   /* still held by the fields table */
    }
    lua_pop(L, 1);   /* the fields table: still held by the options table */
    keep->key = "user";
    keep->keylen = 4;
    keep->names = names;
    keep->lens = lens;
    for (i = 0; i < n; i++)
        if (lens[i] == 2 && memcmp(names[i], "id", 2) == 0)
            break;
    keep->n = (int)n;
    if (i < n)
        return 1;
    /* the id is read whatever the fields, to check the answer, and dropped after */
    names[n] = "id";
    lens[n] = 2;
    keep->n = (int)n + 1;
    return 2;
}

/* client:upsert(user [, {fields = {...}}]): with fields, the user comes back with only those
 * (the rest of the answer is checked but not made into Lua values: a cheaper call) */
static int c_upsert(lua_State *L)
{
    zd_client *c = check_client(L, "upsert");
    zd_xfer *x;
    zd_keep keep;
    const char *names[ZD_MAX_FIELDS + 1];
    size_t lens[ZD_MAX_FIELDS + 1];
    int kept, r;
    static const char path[] = "/api/v2/users/create_or_update.json";
    luaL_checktype(L, 2, LUA_TTABLE);
    kept = upsert_options(L, 3, &keep, names, lens);
    x = slot(L, c, 0);
    if (!encode_body(L, x, 2, "user", "user"))
        return 2;
    prepare(L, c, x, "POST", path, sizeof path - 1);
    if (run(L, c, &x, 1))
        return push_closed(L);
    r = push_result_kept(L, c, x, "user", kept ? &keep : NULL);
    if (kept == 2 && lua_istable(L, -2)) {
        lua_pushnil(L);
        lua_setfield(L, -3, "id");
    }
    return done(c, r);
}

static int c_bulk_upsert(lua_State *L)
{
    zd_client *c = check_client(L, "bulk_upsert");
    zd_xfer *x;
    size_t n;
    static const char path[] = "/api/v2/users/create_or_update_many.json";
    luaL_checktype(L, 2, LUA_TTABLE);
    n = zd_rawlen(L, 2);
    if (n < 1 || n > 100)
        return luaL_argerror(L, 2, lua_pushfstring(L, "expected 1 to 100 users, got %d", (int)n));
    x = slot(L, c, 0);
    if (!encode_body(L, x, 2, "users", "users"))
        return 2;
    prepare(L, c, x, "POST", path, sizeof path - 1);
    x->no_resend = 1;
    if (run(L, c, &x, 1))
        return push_closed(L);
    return done(c, push_result(L, c, x, "job_status"));
}

static int valid_job_id(const char *s, size_t n)
{
    size_t i;
    if (n == 0 || n > 100)
        return 0;
    for (i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_'))
            return 0;
    return 1;
}

static int c_job_status(lua_State *L)
{
    zd_client *c = check_client(L, "job_status");
    size_t n;
    const char *id = luaL_checklstring(L, 2, &n);
    zd_buf *u;
    zd_xfer *x;
    if (!valid_job_id(id, n))
        return fail_validation(L, "job id: must be letters, digits, '-' or '_'");
    x = slot(L, c, 0);
    u = &x->req;   /* borrow the idle request buffer for the path */
    if (!zd_buf_adds(u, "/api/v2/job_statuses/") || !zd_buf_add(u, id, n) || !zd_buf_adds(u, ".json"))
        return luaL_error(L, "zendesk: out of memory");
    prepare(L, c, x, "GET", u->p, u->len);
    if (run(L, c, &x, 1))
        return push_closed(L);
    return done(c, push_result(L, c, x, "job_status"));
}

static int c_job_statuses(lua_State *L)
{
    zd_client *c = check_client(L, "job_statuses");
    size_t i, n;
    zd_buf *u;
    zd_xfer *x;
    luaL_checktype(L, 2, LUA_TTABLE);
    n = zd_rawlen(L, 2);
    if (n < 1 || n > 100)
        return luaL_argerror(L, 2, lua_pushfstring(L, "expected 1 to 100 job ids, got %d", (int)n));
    x = slot(L, c, 0);
    u = &x->req;
    if (!zd_buf_adds(u, "/api/v2/job_statuses/show_many.json?ids="))
        return luaL_error(L, "zendesk: out of memory");
    for (i = 1; i <= n; i++) {
        size_t len;
        const char *id;
        lua_rawgeti(L, 2, (int)i);
        id = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (!id || !valid_job_id(id, len)) {
            lua_pushnil(L);
            push_error(L, "validation", NULL);
            lua_pushfstring(L, "ids[%d]: job ids are strings of letters, digits, '-' or '_'", (int)i);
            lua_setfield(L, -2, "message");
            return 2;
        }
        if ((i > 1 && !zd_buf_addc(u, ',')) || !zd_buf_add(u, id, len))
            return luaL_error(L, "zendesk: out of memory");
        lua_pop(L, 1);
    }
    prepare(L, c, x, "GET", u->p, u->len);
    if (run(L, c, &x, 1))
        return push_closed(L);
    return done(c, push_result(L, c, x, "job_statuses"));
}

static const char *check_method(lua_State *L, int idx)
{
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", NULL};
    return methods[luaL_checkoption(L, idx, NULL, methods)];
}

static int hex_digit(unsigned char ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
         : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* Paths are the caller's, so nothing in them may reach another host, a header or another part
 * of the server. The path part (before '?') is read as a server would after decoding: an escape
 * of '.', '/', '\\', '%' or a control byte is refused (%2e%2e passed the '..' check and reached
 * the stand-in's /__admin), so are "." and ".." segments, and it must be under /api/v2/. */
static int valid_path(const char *p, size_t n)
{
    size_t i, seg = 1, q = n;
    static const char api[] = "/api/v2/";
    if (n == 0 || n > 2048 || p[0] != '/' || (n > 1 && p[1] == '/'))
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '#' || ch == '\\' || ch == '"' || ch == '<' || ch == '>')
            return 0;
        if (ch == '?' && q == n)
            q = i;
    }
    for (i = 0; i <= q; i++) {
        if (i < q && p[i] == '%') {
            int hi = i + 2 < q ? hex_digit((unsigned char)p[i + 1]) : -1;
            int lo = hi >= 0 ? hex_digit((unsigned char)p[i + 2]) : -1;
            int ch = hi * 16 + lo;
            if (lo < 0 || ch == '.' || ch == '/' || ch == '\\' || ch == '%' || ch < 0x20 || ch == 0x7f)
                return 0;
        }
        if (i == q || p[i] == '/') {
            size_t len = i - seg;   /* the segment p[seg..i) */
            if ((len == 1 && p[seg] == '.') || (len == 2 && p[seg] == '.' && p[seg + 1] == '.'))
                return 0;
            seg = i + 1;
        }
    }
    return q >= sizeof api - 1 && memcmp(p, api, sizeof api - 1) == 0 && strstr(p, "/..") == NULL;
}

/* Whether sending the request twice does what sending it once does: GET, PUT, DELETE, and the
 * create_or_update endpoints (they match on email / external_id). Any other POST (create_many,
 * create_or_update_many: a job; POST /users: a second user) and PATCH is not resent once it may
 * have reached the server. */
static int idempotent(const char *method, const char *path, size_t n)
{
    static const char tail[] = "/create_or_update";
    const char *q = memchr(path, '?', n);
    if (q)
        n = (size_t)(q - path);
    if (strcmp(method, "POST") != 0 && strcmp(method, "PATCH") != 0)
        return 1;
    if (strcmp(method, "PATCH") == 0)
        return 0;
    if (n > 5 && memcmp(path + n - 5, ".json", 5) == 0)
        n -= 5;
    return n >= sizeof tail - 1 && memcmp(path + n - (sizeof tail - 1), tail, sizeof tail - 1) == 0;
}

/* Prepares transfer x from (method, path, body) at stack positions m, m+1, m+2;
 * returns 0 with nil, err pushed when the input is not acceptable. */
static int prepare_request(lua_State *L, zd_client *c, zd_xfer *x, int m)
{
    size_t pn;
    const char *method = check_method(L, m);
    const char *path = luaL_checklstring(L, m + 1, &pn);
    if (!valid_path(path, pn)) {
        fail_validation(L, "path: must be under /api/v2/ and hold only printable characters, no '.' or '..' "
                           "segment, no escaped '.', '/', '\\', '%' or control byte");
        return 0;
    }
    switch (lua_type(L, m + 2)) {
    case LUA_TNONE:
    case LUA_TNIL:
        break;
    case LUA_TSTRING: {
        size_t bn;
        const char *b = lua_tolstring(L, m + 2, &bn);
        if (!zd_buf_add(&x->req, b, bn))
            return luaL_error(L, "zendesk: out of memory");
        x->has_body = 1;
        break;
    }
    case LUA_TTABLE:
        if (!encode_body(L, x, m + 2, NULL, "body"))
            return 0;
        break;
    default:
        return luaL_argerror(L, m + 2, "body must be a table, a JSON string or nil");
    }
    prepare(L, c, x, method, path, pn);
    x->no_resend = !idempotent(method, path, pn);
    return 1;
}

static int c_request(lua_State *L)
{
    zd_client *c = check_client(L, "request");
    zd_xfer *x = slot(L, c, 0);
    if (!prepare_request(L, c, x, 2))
        return 2;
    if (run(L, c, &x, 1))
        return push_closed(L);
    return done(c, push_result(L, c, x, NULL));
}

/* request_many{ {method, path, body}, ... }: concurrent, over the multi handle.
 * Returns an array of {value = ..., meta = ...} or {err = ...}, in request order. */
static int c_request_many(lua_State *L)
{
    zd_client *c = check_client(L, "request_many");
    zd_xfer *xs[ZD_MAX_CONCURRENT];
    int ok[ZD_MAX_CONCURRENT], closed = 0;
    size_t i, n, live = 0;
    luaL_checktype(L, 2, LUA_TTABLE);
    n = zd_rawlen(L, 2);
    if (n > ZD_MAX_CONCURRENT)
        return luaL_argerror(L, 2, "at most 64 requests at once");
    lua_settop(L, 2);
    lua_createtable(L, (int)n, 0);   /* 3: results */
    for (i = 0; i < n; i++) {
        int top;
        lua_rawgeti(L, 2, (int)i + 1);
        if (!lua_istable(L, -1))
            return luaL_argerror(L, 2, "each request is a table {method, path, body}");
        top = lua_gettop(L);
        lua_rawgeti(L, top, 1);
        lua_rawgeti(L, top, 2);
        lua_rawgeti(L, top, 3);
        xs[i] = slot(L, c, i);
        ok[i] = prepare_request(L, c, xs[i], top + 1);
        if (!ok[i]) {
            lua_createtable(L, 0, 1);
            lua_insert(L, -2);
            lua_setfield(L, -2, "err");
            lua_rawseti(L, 3, (int)i + 1);
            lua_pop(L, 1);
        }
        lua_settop(L, 3);
    }
    {
        zd_xfer *torun[ZD_MAX_CONCURRENT];
        for (i = 0; i < n; i++)
            if (ok[i])
                torun[live++] = xs[i];
        if (live && run(L, c, torun, live))
            closed = 1;
    }
    for (i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        lua_createtable(L, 0, 2);
        if (closed)
            push_closed(L);
        else
            push_result(L, c, xs[i], NULL);
        lua_getfield(L, -1, "kind");   /* errors have a kind, metas don't */
        if (!lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_setfield(L, -3, "err");
            lua_pop(L, 1);
        } else {
            lua_pop(L, 1);
            lua_setfield(L, -3, "meta");
            lua_setfield(L, -2, "value");
        }
        lua_rawseti(L, 3, (int)i + 1);
    }
    return closed ? 1 : done(c, 1);
}

static int c_close(lua_State *L)
{
    zd_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    if (c->busy) {
        /* from a callback: libcurl still holds the transfers; run() frees them after the loop */
        c->open = 0;
        c->closing = 1;
        return 0;
    }
    free_client(L, c);
    return 0;
}

static void free_client(lua_State *L, zd_client *c)
{
    c->closing = 0;
    if (!c->open && !c->t.multi && !c->t.base && c->on_event == LUA_NOREF)
        return;
    c->open = 0;
    zd_transport_free(&c->t);
    zd_free_secret(&c->refresh_token);
    zd_free_secret(&c->client_id);
    zd_free_secret(&c->client_secret);
    zd_free_secret(&c->basic_b64);
    while (c->nretired > 0)
        zd_free_secret(&c->retired[--c->nretired]);
    c->nsec = 0;
    luaL_unref(L, LUA_REGISTRYINDEX, c->on_event);
    luaL_unref(L, LUA_REGISTRYINDEX, c->on_refresh);
    c->on_event = c->on_refresh = LUA_NOREF;
}

static int c_tostring(lua_State *L)
{
    zd_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    if (c->open)
        lua_pushfstring(L, "zendesk.Client (%s)", c->t.base);
    else
        lua_pushliteral(L, "zendesk.Client (closed)");
    return 1;
}

/* held_bytes() -> bytes the client's transfer buffers hold between calls (a diagnostic) */
static int c_held_bytes(lua_State *L)
{
    zd_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    size_t i, n = 0;
    for (i = 0; i < c->t.npool; i++)
        if (c->t.pool[i])
            n += zd_xfer_held(c->t.pool[i]);
    lua_pushnumber(L, (lua_Number)n);
    return 1;
}

/* base_url() -> "scheme://host[:port]" the client talks to (nil once closed) */
static int c_base_url(lua_State *L)
{
    zd_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    if (c->open && c->t.base)
        lua_pushstring(L, c->t.base);
    else
        lua_pushnil(L);
    return 1;
}

static int c_is_open(lua_State *L)
{
    zd_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    lua_pushboolean(L, c->open);
    return 1;
}

/* ---- construction ---- */

/* base64 of "user:password", the form Basic credentials travel in (to scrub it from echoes) */
static char *basic_credentials_b64(const char *user, const char *pass)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t ul = strlen(user), pl = strlen(pass), n = ul + 1 + pl, i, j = 0;
    unsigned char *raw = malloc(n);
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!raw || !out) {
        free(raw);
        free(out);
        return NULL;
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
    return out;
}

static const char *opt_string(lua_State *L, int t, const char *name, size_t *len)
{
    const char *s;
    size_t n;
    lua_getfield(L, t, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "zendesk.new: option '%s' must be a string", name);
    s = lua_tolstring(L, -1, &n);
    if (has_crlf(s, n))
        luaL_error(L, "zendesk.new: option '%s' contains CR, LF or NUL", name);
    lua_pop(L, 1);   /* still referenced by the options table */
    if (len)
        *len = n;
    return s;
}

static double opt_number(lua_State *L, int t, const char *name, double dflt, double lo, double hi)
{
    double v;
    lua_getfield(L, t, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return dflt;
    }
    if (lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "zendesk.new: option '%s' must be a number", name);
    v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!(v >= lo && v <= hi))
        luaL_error(L, "zendesk.new: option '%s' must be between %f and %f", name, lo, hi);
    return v;
}

static int opt_function(lua_State *L, int t, const char *name)
{
    lua_getfield(L, t, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return LUA_NOREF;
    }
    if (!lua_isfunction(L, -1))
        luaL_error(L, "zendesk.new: option '%s' must be a function", name);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static int valid_subdomain(const char *s, size_t n)
{
    size_t i;
    if (n == 0 || n > 63 || s[0] == '-')
        return 0;
    for (i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return 0;
    return 1;
}

/* Loopback is the literal addresses 127.0.0.0/8 (a dotted quad, each part 0-255) and [::1], and
 * the name localhost: parsed as a whole, never a prefix ("127.attacker.example" is a name). */
static int is_loopback(const char *host)
{
    int part, digits;
    unsigned value;
    const char *p = host;
    if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0 || strcmp(host, "::1") == 0)
        return 1;
    for (part = 0; part < 4; part++) {
        value = 0;
        for (digits = 0; *p >= '0' && *p <= '9'; p++, digits++) {
            value = value * 10 + (unsigned)(*p - '0');
            if (digits >= 3 || value > 255)
                return 0;
        }
        if (digits == 0 || (part == 0 && value != 127))
            return 0;
        if (part < 3 && *p++ != '.')
            return 0;
    }
    return *p == '\0';
}

/* base URL from url = "scheme://host[:port]" (no path, credentials, query or fragment) */
static void set_base_url(lua_State *L, zd_client *c, const char *url, int insecure_ok)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *user = NULL, *query = NULL,
         *frag = NULL;
    char msg[200];
    zd_buf b = {0};
    msg[0] = '\0';
    if (!u)
        luaL_error(L, "zendesk.new: out of memory");
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
        snprintf(msg, sizeof msg, "option 'url' is not a valid URL");
    else {
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
        curl_url_get(u, CURLUPART_HOST, &host, 0);
        curl_url_get(u, CURLUPART_PORT, &port, 0);
        curl_url_get(u, CURLUPART_PATH, &path, 0);
        curl_url_get(u, CURLUPART_USER, &user, 0);
        curl_url_get(u, CURLUPART_QUERY, &query, 0);
        curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0);
        if (!scheme || (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0))
            snprintf(msg, sizeof msg, "option 'url' must be http:// or https://");
        else if (!host || !*host)
            snprintf(msg, sizeof msg, "option 'url' has no host");
        else if (user || query || frag || (path && strcmp(path, "/") != 0))
            snprintf(msg, sizeof msg, "option 'url' must be scheme://host[:port] only (no path, user, query)");
        else if (strcmp(scheme, "http") == 0 && !is_loopback(host) && !insecure_ok)
            snprintf(msg, sizeof msg,
                     "refusing plain http to %.80s: use https (or allow_insecure_http = true)", host);
        else if (!zd_buf_adds(&b, scheme) || !zd_buf_adds(&b, "://") || !zd_buf_adds(&b, host) ||
                 (port && (!zd_buf_addc(&b, ':') || !zd_buf_adds(&b, port))))
            snprintf(msg, sizeof msg, "out of memory");
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(user);
    curl_free(query);
    curl_free(frag);
    curl_url_cleanup(u);
    if (msg[0]) {
        zd_buf_free(&b);
        luaL_error(L, "zendesk.new: %s", msg);
    }
    c->t.base = b.p;
}

static const char *const known_options[] = {
    "url", "subdomain", "email", "token", "password", "oauth", "timeout", "connect_timeout",
    "ca_file", "proxy", "user_agent", "max_retries", "max_retry_wait", "retry_base_delay",
    "on_event", "allow_insecure_http", "max_answer_bytes", NULL
};
static const char *const known_oauth[] = {
    "access_token", "refresh_token", "client_id", "client_secret", "on_refresh", NULL
};

static void check_keys(lua_State *L, int t, const char *const *known, const char *what)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int i, found = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (i = 0; known[i]; i++)
                if (strcmp(known[i], lua_tostring(L, -2)) == 0)
                    found = 1;
        if (!found) {
            if (lua_type(L, -2) == LUA_TSTRING)
                luaL_error(L, "zendesk.new: unknown %s '%s'", what, lua_tostring(L, -2));
            luaL_error(L, "zendesk.new: %s names must be strings, got a %s", what, luaL_typename(L, -2));
        }
        lua_pop(L, 1);
    }
}

static int core_new(lua_State *L)
{
    zd_client *c;
    const char *url, *sub, *email, *token, *password, *s;
    size_t n;
    int insecure;
    char ua[160];
    curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    /* created closed: if setting up fails half-way, __gc frees whatever was acquired */
    c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    c->on_event = c->on_refresh = c->parked = LUA_NOREF;
    luaL_getmetatable(L, CLIENT_MT);
    lua_setmetatable(L, -2);

    check_keys(L, 1, known_options, "option");
    url = opt_string(L, 1, "url", NULL);
    sub = opt_string(L, 1, "subdomain", &n);
    lua_getfield(L, 1, "allow_insecure_http");
    insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if ((url == NULL) == (sub == NULL))
        return luaL_error(L, "zendesk.new: give exactly one of 'url' and 'subdomain'");
    if (sub) {
        char base[128];
        if (!valid_subdomain(sub, n))
            return luaL_error(L, "zendesk.new: option 'subdomain' must match ^[a-z0-9][a-z0-9-]*$");
        snprintf(base, sizeof base, "https://%s.zendesk.com", sub);
        c->t.base = strdup(base);
    } else {
        set_base_url(L, c, url, insecure);
    }

    email = opt_string(L, 1, "email", NULL);
    token = opt_string(L, 1, "token", NULL);
    password = opt_string(L, 1, "password", NULL);
    lua_getfield(L, 1, "oauth");
    if (!lua_isnil(L, -1)) {
        int o = lua_gettop(L);
        const char *at;
        if (!lua_istable(L, o))
            return luaL_error(L, "zendesk.new: option 'oauth' must be a table");
        check_keys(L, o, known_oauth, "oauth field");
        at = opt_string(L, o, "access_token", NULL);
        c->refresh_token = zd_strdup_secret(opt_string(L, o, "refresh_token", NULL));
        c->client_id = zd_strdup_secret(opt_string(L, o, "client_id", NULL));
        c->client_secret = zd_strdup_secret(opt_string(L, o, "client_secret", NULL));
        c->on_refresh = opt_function(L, o, "on_refresh");
        if (!at && !(c->client_id && c->client_secret))
            return luaL_error(L, "zendesk.new: oauth needs access_token (or client_id and client_secret)");
        if (c->refresh_token && !(c->client_id && c->client_secret))
            return luaL_error(L, "zendesk.new: oauth refresh_token needs client_id and client_secret");
        if (email || token || password)
            return luaL_error(L, "zendesk.new: give either oauth or email with token, not both");
        c->oauth = 1;
        /* without an access token yet, the first request's 401 fetches one */
        c->t.bearer = zd_strdup_secret(at ? at : "-");
    } else if (email && (token || password)) {
        if (token && password)
            return luaL_error(L, "zendesk.new: give 'token' or 'password', not both");
        if (token) {
            zd_buf u = {0};
            if (!zd_buf_adds(&u, email) || !zd_buf_adds(&u, "/token"))
                return luaL_error(L, "zendesk.new: out of memory");
            c->t.username = u.p;
            c->t.password = zd_strdup_secret(token);
        } else {
            c->t.username = zd_strdup_secret(email);
            c->t.password = zd_strdup_secret(password);
        }
    } else {
        return luaL_error(L, "zendesk.new: no credentials: give email and token, or oauth");
    }
    lua_pop(L, 1);

    c->t.timeout_ms = (long)(opt_number(L, 1, "timeout", 30, 0.001, 86400) * 1000);
    c->t.connect_timeout_ms = (long)(opt_number(L, 1, "connect_timeout", 10, 0.001, 3600) * 1000);
    c->t.max_retries = (int)opt_number(L, 1, "max_retries", 5, 0, 100);
    c->t.max_retry_wait = opt_number(L, 1, "max_retry_wait", 60, 0, 86400);
    c->t.retry_base = opt_number(L, 1, "retry_base_delay", 0.5, 0, 3600);
    c->t.max_answer = (size_t)opt_number(L, 1, "max_answer_bytes", ZD_DEFAULT_MAX_ANSWER, 1024, 1024.0 * 1024 * 1024);
    if ((s = opt_string(L, 1, "ca_file", NULL)) != NULL)
        c->t.ca_file = strdup(s);
    if ((s = opt_string(L, 1, "proxy", NULL)) != NULL)
        c->t.proxy = zd_strdup_secret(s);
    if ((s = opt_string(L, 1, "user_agent", NULL)) != NULL) {
        c->t.user_agent = strdup(s);
    } else {
        snprintf(ua, sizeof ua, "lua-zendesk/%s libcurl/%s %s", ZD_VERSION, cv->version, LUA_VERSION);
        c->t.user_agent = strdup(ua);
    }
    c->on_event = opt_function(L, 1, "on_event");
    if (c->t.username && c->t.password && !(c->basic_b64 = basic_credentials_b64(c->t.username, c->t.password)))
        return luaL_error(L, "zendesk.new: out of memory");
    if (!c->t.base || !c->t.user_agent || (c->oauth && !c->t.bearer) || (c->t.username && !c->t.password))
        return luaL_error(L, "zendesk.new: out of memory");
    update_secrets(c);
    c->t.hooks.ud = c;
    c->t.hooks.on_retry = hook_retry;
    c->t.hooks.on_unauthorized = hook_unauthorized;
    if (!zd_transport_init(&c->t))
        return luaL_error(L, "zendesk.new: cannot initialise libcurl");
    c->open = 1;
    return 1;
}

/* ---- module functions ---- */

static int box_gc(lua_State *L)
{
    zd_box *box = luaL_checkudata(L, 1, BOX_MT);
    zd_buf_free(&box->b);
    return 0;
}

/* encode(value [, root]) -> json | nil, err */
static int core_encode(lua_State *L)
{
    char err[256];
    const char *root = luaL_optstring(L, 2, "value");
    zd_buf *b;
    luaL_checkany(L, 1);
    lua_settop(L, 2);
    b = push_box(L);
    if (!zd_json_encode(L, 1, b, root, err, sizeof err)) {
        lua_pushnil(L);
        push_error(L, "validation", err);
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
        push_error(L, "validation", msg);
        return 2;
    }
    return 1;
}

/* error{...} -> the same table with the error metatable: one error type for C and Lua */
static int core_error(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_getmetatable(L, ERROR_MT);
    lua_setmetatable(L, 1);
    return 1;
}

static int core_is_error(lua_State *L)
{
    int yes = 0;
    if (lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, ERROR_MT);
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

/* fsync(file) -> true | nil, err: a journal line is only durable once it is on disk. Lua 5.4's
 * luaL_Stream and LuaJIT's file userdata both start with the FILE pointer. */
static int core_fsync(lua_State *L)
{
    FILE **fp = luaL_checkudata(L, 1, LUA_FILEHANDLE);
    if (!*fp)
        return luaL_argerror(L, 1, "file is closed");
    if (fflush(*fp) != 0 || fsync(fileno(*fp)) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* create_private(path [, truncate]) -> true | nil, err: makes the file (journal, report)
 * with mode 0600 whatever the umask, so rows of personal data are not world-readable. */
static int core_create_private(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (lua_toboolean(L, 2) ? O_TRUNC : 0);
    int fd = open(path, flags, 0600);
    if (fd < 0 || fchmod(fd, 0600) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(e));
        return 2;
    }
    close(fd);
    lua_pushboolean(L, 1);
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

/* file_id(path | file) -> "dev:ino", kind | nil, err: tells whether two names are one file
 * (a report or journal that is the input), following symlinks; kind is "file", "directory",
 * "fifo" or "other". */
static int core_file_id(lua_State *L)
{
    struct stat st;
    int r;
    char id[48];
    const char *kind;
    if (lua_type(L, 1) == LUA_TSTRING) {
        r = stat(lua_tostring(L, 1), &st);
    } else {
        FILE **fp = luaL_checkudata(L, 1, LUA_FILEHANDLE);
        if (zd_file_closed(fp))
            return luaL_argerror(L, 1, "file is closed");
        r = fstat(fileno(*fp), &st);
    }
    if (r != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    snprintf(id, sizeof id, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    kind = S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : S_ISFIFO(st.st_mode) ? "fifo" : "other";
    lua_pushstring(L, id);
    lua_pushstring(L, kind);
    return 2;
}

/* getcwd() -> path | nil, err: the real working directory ($PWD may be a parent's, stale). */
static int core_getcwd(lua_State *L)
{
    char buf[4096];
    if (!getcwd(buf, sizeof buf)) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushstring(L, buf);
    return 1;
}

/* digest(path) -> hex, size | nil, err: 64-bit FNV-1a of the whole file, read in 64 KiB
 * chunks, so that a resume can tell the input it was written for from another one. */
static int core_digest(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    unsigned char buf[65536];
    unsigned long long h = 0xcbf29ce484222325ULL, size = 0;
    size_t n, i;
    char hex[17];
    FILE *f = fopen(path, "rb");
    if (!f) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        for (i = 0; i < n; i++)
            h = (h ^ buf[i]) * 0x100000001b3ULL;
        size += n;
    }
    if (ferror(f)) {
        int e = errno;
        fclose(f);
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(e));
        return 2;
    }
    fclose(f);
    snprintf(hex, sizeof hex, "%016llx", h);
    lua_pushstring(L, hex);
    zd_pushid(L, size);
    return 2;
}

static const luaL_Reg client_methods[] = {
    {"upsert", c_upsert},
    {"bulk_upsert", c_bulk_upsert},
    {"job_status", c_job_status},
    {"job_statuses", c_job_statuses},
    {"request", c_request},
    {"request_many", c_request_many},
    {"close", c_close},
    {"is_open", c_is_open},
    {"base_url", c_base_url},
    {"held_bytes", c_held_bytes},
    {NULL, NULL}
};

static const luaL_Reg client_meta[] = {
    {"__gc", c_close},
    {"__close", c_close},
    {"__tostring", c_tostring},
    {NULL, NULL}
};

static const luaL_Reg functions[] = {
    {"new", core_new},
    {"encode", core_encode},
    {"decode", core_decode},
    {"error", core_error},
    {"is_error", core_is_error},
    {"sleep", core_sleep},
    {"now", core_now},
    {"valid_email", core_valid_email},
    {"fsync", core_fsync},
    {"create_private", core_create_private},
    {"utf8_check", core_utf8_check},
    {"file_id", core_file_id},
    {"getcwd", core_getcwd},
    {"digest", core_digest},
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

    luaL_newmetatable(L, CLIENT_MT);
    luaL_setfuncs(L, client_meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, client_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    luaL_newmetatable(L, ERROR_MT);
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newmetatable(L, BOX_MT);
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    lua_newtable(L);
    luaL_setfuncs(L, functions, 0);
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
