/* response_fuzz.c: libFuzzer target for what the client makes of a whole answer: status line and
 * headers, then the body (JSON, text, HTML, anything), turned into (value, meta) or (nil, err)
 * by zd_response_push (src/response.c, linked with the core's other files), and err's tostring,
 * driven without a network. Input: byte 0 picks the status,
 * byte 1 the expected key and whether the transfer failed in libcurl, then header lines up to
 * an empty line, then the body. Checked: no crash, (value, meta) or (nil, err) with a kind and a
 * message, never a raise; the client holds recognisable secrets and none may appear in any string
 * of the error (message, code, details and their keys, request id, tostring). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "response.h"

int luaopen_zendesk_core(lua_State *L);

static lua_State *FL;
static zd_client FC;

static const long statuses[] = { 200, 201, 400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504 };
/* the request options zendesk.api gives: none, an upsert, a job, several jobs */
static const zd_ropts wanted[] = {
    { NULL, NULL, ZD_SHAPE_ANY, 1, 0, 0, {0}, {0}, {0} },
    { "user", "user", ZD_SHAPE_RECORD, 1, 0, 0, {0}, {0}, {0} },
    { NULL, "job_status", ZD_SHAPE_JOB, 1, 0, 0, {0}, {0}, {0} },
    { NULL, "job_statuses", ZD_SHAPE_JOB_LIST, 1, 0, 0, {0}, {0}, {0} },
};
static const char *const secrets[] = { "SECRETpassword1", "SECRETbearer22", "SECRETrefresh333", "SECRETclient4444" };

typedef struct {
    zd_xfer *x;
    const zd_ropts *ro;
} job;

static int drive(lua_State *L)
{
    job *j = lua_touserdata(L, 1);
    lua_settop(L, 0);
    FC.L = L;
    zd_response_push(L, &FC, j->x, j->ro);
    if (lua_istable(L, -1) && lua_getmetatable(L, -1)) {
        lua_pop(L, 1);
        luaL_tolstring(L, -1, NULL);   /* __tostring of an error table */
    }
    return lua_gettop(L);
}

/* every string of the value at idx, table keys included; with keys_only, only the keys */
static void collect_as(lua_State *L, int idx, zd_buf *all, int depth, int keys_only)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING && !keys_only) {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        zd_buf_add(all, s, n);
        zd_buf_addc(all, '\n');
    } else if (lua_type(L, idx) == LUA_TTABLE && depth < 50) {
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (keys_only && lua_type(L, -2) == LUA_TSTRING) {
                size_t n;
                const char *k = lua_tolstring(L, -2, &n);
                zd_buf_add(all, k, n);
                zd_buf_addc(all, '\n');
            }
            collect_as(L, -2, all, depth + 1, keys_only);
            collect_as(L, -1, all, depth + 1, keys_only);
            lua_pop(L, 1);
        }
    }
}

static int contains(const char *s, size_t n, const char *what)
{
    size_t k = strlen(what), i;
    for (i = 0; i + k <= n; i++)
        if (memcmp(s + i, what, k) == 0)
            return 1;
    return 0;
}

static void collect(lua_State *L, int idx, zd_buf *all, int depth)
{
    collect_as(L, idx, all, depth, 0);
}

/* The known open bug: a secret in a key of err.details (its field names reach tostring too). */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static zd_xfer x;
    job j;
    const char *p, *end;
    unsigned sel, flags;
    int top, i;
    if (!FL) {
        FL = luaL_newstate();
        luaL_openlibs(FL);
        luaL_requiref(FL, "zendesk.core", luaopen_zendesk_core, 0);
        lua_pop(FL, 1);
        FC.t.creds.v[ZD_CRED_PASSWORD] = strdup(secrets[0]);
        FC.t.creds.v[ZD_CRED_BEARER] = strdup(secrets[1]);
        FC.t.creds.v[ZD_CRED_REFRESH] = strdup(secrets[2]);
        FC.t.creds.v[ZD_CRED_CLIENT_SECRET] = strdup(secrets[3]);
        zd_creds_index(&FC.t.creds);   /* the scrubber reads the list built from them, as options.c does */
        FC.open = 1;
    }
    if (size < 2)
        return 0;
    sel = data[0];
    flags = data[1];
    p = (const char *)data + 2;
    end = (const char *)data + size;

    zd_buf_free(&x.body);
    zd_resp_reset(&x.resp);
    x.method = "POST";
    x.path = "/api/v2/users/create_or_update_many.json";
    x.attempts = 1 + (int)(flags >> 6);
    x.cc = CURLE_OK;
    x.errbuf[0] = '\0';
    x.waited_too_long = (flags >> 3) & 1;
    FC.refresh_err[0] = '\0';
    if (flags & 0x20)
        snprintf(FC.refresh_err, sizeof FC.refresh_err, "token refresh failed: HTTP 400");
    /* header lines up to an empty one */
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        if (len == 1 || (len == 2 && p[0] == '\r')) {
            p += len;
            break;
        }
        zd_resp_header(&x.resp, p, len);
        p += len;
    }
    x.resp.status = sel < 14 * 16 ? statuses[sel % 14] : (long)sel * 4;
    if (flags & 0x10) {
        /* a libcurl failure: its message lands in errbuf */
        size_t n = (size_t)(end - p) < CURL_ERROR_SIZE - 1 ? (size_t)(end - p) : CURL_ERROR_SIZE - 1;
        x.cc = (CURLcode)(1 + sel % 90);
        memcpy(x.errbuf, p, n);
        x.errbuf[n] = '\0';
    } else if (end > p) {
        zd_buf_add(&x.body, p, (size_t)(end - p));
    }
    j.x = &x;
    j.ro = &wanted[flags & 3];
    lua_settop(FL, 0);
    lua_pushcfunction(FL, drive);
    lua_pushlightuserdata(FL, &j);
    if (lua_pcall(FL, 1, LUA_MULTRET, 0) != 0) {
        const char *msg = lua_tostring(FL, -1);
        fprintf(stderr, "push_result raised: %s\n", msg ? msg : "?");
        abort();
    }
    top = lua_gettop(FL);
    if (top < 2)
        abort();
    if (!lua_istable(FL, 2))
        abort();
    lua_getfield(FL, 2, "kind");
    if (!lua_isnil(FL, -1)) {
        /* an error (value nil): a table with a kind and a message */
        lua_getfield(FL, 2, "message");
        if (!lua_isnil(FL, 1) || lua_type(FL, -2) != LUA_TSTRING || lua_type(FL, -1) != LUA_TSTRING)
            abort();
        lua_pop(FL, 1);
        {
            zd_buf all = {0};
            for (i = 2; i <= top; i++)
                collect(FL, i, &all, 0);
            for (i = 0; i < 4 && all.p; i++)
                if (contains(all.p, all.len, secrets[i])) {
                    fprintf(stderr, "secret %s reached the error:\n%s\n", secrets[i], all.p);
                    abort();
                }
            zd_buf_free(&all);
        }
    }
    lua_pop(FL, 1);
    lua_settop(FL, 0);
    /* every allocation of this input freed again: libFuzzer's leak check stays quiet and cheap */
    lua_gc(FL, LUA_GCCOLLECT, 0);
    return 0;
}
