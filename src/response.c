/* response.c: a finished transfer as Lua sees it: (value, meta) for a success, (nil, err) for
 * anything else, every string scrubbed; the error tables and their one-line __tostring. */
#define _GNU_SOURCE
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "response.h"

void zd_field_str(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

void zd_field_num(lua_State *L, const char *k, long long v)
{
    zd_pushid(L, v);
    lua_setfield(L, -2, k);
}

static int is_null(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

/* ---- error tables ---- */

/* A buffer anchored in a userdata: a Lua error half-way through cannot leak it. luaL_Buffer
 * is not usable here because the code below reads fields between appends. */
zd_buf *zd_box_push(lua_State *L)
{
    zd_buf *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, ZD_BOX_MT);
    lua_setmetatable(L, -2);
    return b;
}

int zd_box_gc(lua_State *L)
{
    zd_buf_free(luaL_checkudata(L, 1, ZD_BOX_MT));
    return 0;
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

int zd_error_tostring(lua_State *L)
{
    zd_buf *b;
    int first = 1;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    b = zd_box_push(L);
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
void zd_error_push(lua_State *L, const char *kind, const char *msg)
{
    lua_createtable(L, 0, 8);
    zd_field_str(L, "kind", kind);
    if (msg)
        zd_field_str(L, "message", msg);
    luaL_getmetatable(L, ZD_ERROR_MT);
    lua_setmetatable(L, -2);
}

/* nil, {kind = "validation", message = msg}: a call refused before anything was sent */
int zd_error_validation(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    zd_error_push(L, "validation", msg);
    return 2;
}

/* Fills meta (or error) fields shared by successes and failures. */
static void add_response_fields(lua_State *L, zd_xfer *x)
{
    const zd_resp *r = &x->resp;
    if (r->request_id[0])
        zd_field_str(L, "request_id", r->request_id);
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
            zd_field_num(L, "limit", r->rl_limit);
        if (r->rl_remaining >= 0)
            zd_field_num(L, "remaining", r->rl_remaining);
        if (r->rl_reset >= 0)
            zd_field_num(L, "reset", r->rl_reset);
        lua_setfield(L, -2, "rate_limit");
    }
    if (r->ep_total >= 0 || r->ep_remaining >= 0) {
        lua_createtable(L, 0, 3);
        if (r->ep_total >= 0)
            zd_field_num(L, "total", r->ep_total);
        if (r->ep_remaining >= 0)
            zd_field_num(L, "remaining", r->ep_remaining);
        if (r->ep_resets >= 0)
            zd_field_num(L, "resets", r->ep_resets);
        lua_setfield(L, -2, "endpoint_limit");
    }
}

static void push_meta(lua_State *L, zd_xfer *x)
{
    const zd_resp *r = &x->resp;
    lua_createtable(L, 0, 8);
    zd_field_num(L, "status", r->status);
    lua_pushboolean(L, r->status == 201);
    lua_setfield(L, -2, "created");
    if (r->location[0])
        zd_field_str(L, "location", r->location);
    if (r->warn[0])
        zd_field_str(L, "warn", r->warn);
    add_limits(L, r);
    add_response_fields(L, x);
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
    size_t i, j = 0, room = 200 + (c->t.creds.sec_max < 1024 ? c->t.creds.sec_max : 1024);
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
    j = zd_scrub_into(&c->t.creds, raw, j, out, sizeof out, i < n);
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
    zd_scrub_resp(&c->t.creds, &x->resp);
    lua_pushnil(L);
    if (x->sink.too_large) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s %s: answer too large (%zu bytes received, limit %zu)", x->method,
                 x->path, x->sink.received, x->sink.limit);
        zd_error_push(L, "invalid_response", NULL);
        zd_scrub_push(L, &c->t.creds, msg, strlen(msg));
        lua_setfield(L, -2, "message");
        zd_field_str(L, "code", "AnswerTooLarge");
        if (status)
            zd_field_num(L, "status", status);
        add_response_fields(L, x);
        zd_scrub_table(L, &c->t.creds, -1);
        return 2;
    }
    if (x->cc != CURLE_OK) {
        /* libcurl cuts its message at CURL_ERROR_SIZE: a secret it cut is scrubbed too */
        char why[CURL_ERROR_SIZE];
        size_t wn = strlen(x->errbuf);
        if (wn)
            zd_scrub_into(&c->t.creds, x->errbuf, wn, why, sizeof why, wn >= CURL_ERROR_SIZE - 1);
        zd_error_push(L, x->cc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "network", NULL);
        lua_pushfstring(L, "%s %s: %s%s", x->method, x->path, wn ? why : curl_easy_strerror(x->cc),
                        x->held_back ? " (not resent: the server may have received it)" : "");
        zd_scrub_push(L, &c->t.creds, lua_tostring(L, -1), zd_rawlen(L, -1));
        lua_remove(L, -2);
        lua_setfield(L, -2, "message");
        zd_field_num(L, "curl_code", x->cc);
        lua_pushboolean(L, zd_cc_sent(x->cc));
        lua_setfield(L, -2, "sent");
        if (x->held_back) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "not_resent");
        }
        lua_pushinteger(L, x->attempts);
        lua_setfield(L, -2, "attempts");
        return 2;
    }
    kind = status == 401 || status == 403 ? "auth" : status == 429 ? "rate_limited" : "http";
    zd_error_push(L, kind, NULL);
    zd_field_num(L, "status", status);
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
            zd_scrub_push(L, &c->t.creds, m, n);
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
    zd_scrub_table(L, &c->t.creds, -1);
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
    return lua_isnil(L, idx) || is_null(L, idx) ? "missing" : lua_typename(L, lua_type(L, idx));
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

/* The answer's object under key (on top of the stack) has the shape the caller promised (the
 * request option shape): a record with a positive integer id, a job with a string id and
 * status, or an array of jobs. A 200 without it is no success (issue 12: a string id came back
 * as a user). */
static int answer_shape(lua_State *L, const char *key, int shape, char *what, size_t n)
{
    if (!lua_istable(L, -1)) {
        snprintf(what, n, "\"%s\" is %s, not an object", key, lua_kind(L, -1));
        return 0;
    }
    if (shape == ZD_SHAPE_RECORD) {
        int ok;
        lua_getfield(L, -1, "id");
        ok = is_id(L, -1);
        if (!ok)
            snprintf(what, n, "%s.id is %s, not a positive integer", key, lua_kind(L, -1));
        lua_pop(L, 1);
        return ok;
    }
    if (shape == ZD_SHAPE_JOB)
        return job_shape(L, -1, key, what, n);
    if (shape == ZD_SHAPE_JOB_LIST) {
        size_t i, len = zd_rawlen(L, -1);
        for (i = 1; i <= len; i++) {
            char name[96];
            int ok;
            snprintf(name, sizeof name, "%s[%d]", key, (int)i);
            lua_rawgeti(L, -1, (int)i);
            ok = job_shape(L, -1, name, what, n);
            lua_pop(L, 1);
            if (!ok)
                return 0;
        }
    }
    return 1;
}

/* Pushes value, meta for a successful transfer (value = body[ro->answer] when an answer key is
 * given, with only the kept fields of it when ro->keep is), or nil, err. */
int zd_response_push(lua_State *L, zd_client *c, zd_xfer *x, const zd_ropts *ro)
{
    long s = x->resp.status;
    const char *key = ro ? ro->answer : NULL;
    const zd_keep *keep = ro && ro->kept ? &ro->keep : NULL;
    if (x->cc != CURLE_OK || s < 200 || s > 299)
        return push_failure(L, c, x);
    zd_scrub_resp(&c->t.creds, &x->resp);
    if (x->body.len == 0) {
        if (key) {
            lua_pushnil(L);
            zd_error_push(L, "http", "empty answer where a JSON body was expected");
            zd_field_num(L, "status", s);
            add_response_fields(L, x);
            zd_scrub_table(L, &c->t.creds, -1);
            return 2;
        }
        lua_pushnil(L);
    } else if (zd_scrub_decode(L, &c->t.creds, x->body.p, x->body.len, keep) != 1) {
        lua_remove(L, -2);
        lua_pushnil(L);
        zd_error_push(L, "http", NULL);
        lua_pushvalue(L, -3);
        lua_setfield(L, -2, "message");
        zd_field_str(L, "code", "InvalidJSON");
        zd_field_num(L, "status", s);
        add_response_fields(L, x);
        zd_scrub_table(L, &c->t.creds, -1);
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
            char what[200];
            if (!answer_shape(L, key, ro->shape, what, sizeof what)) {
                lua_pop(L, 2);
                lua_pushnil(L);
                zd_error_push(L, "invalid_response", NULL);
                lua_pushfstring(L, "%s %s answered HTTP %d, but %s", x->method, x->path, (int)s, what);
                lua_setfield(L, -2, "message");
                zd_field_str(L, "code", "InvalidResponse");
                zd_field_num(L, "status", s);
                add_response_fields(L, x);
                zd_scrub_table(L, &c->t.creds, -1);
                return 2;
            }
        }
        lua_remove(L, -2);
        if (ro->drop_id && lua_istable(L, -1)) {   /* read for the check only */
            lua_pushnil(L);
            lua_setfield(L, -2, "id");
        }
    }
    push_meta(L, x);   /* its header strings were scrubbed in place (zd_scrub_resp) */
    return 2;
}

