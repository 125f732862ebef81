/* client.c: the client userdata (zendesk.Client): its methods (upsert, bulk, job status,
 * request, request_many), the call around the transport loop, the retry event, close. */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include "response.h"

static zd_client *check_client(lua_State *L, const char *method)
{
    zd_client *c = luaL_checkudata(L, 1, ZD_CLIENT_MT);
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


/* ---- hooks called from the transport loop ---- */

int zd_client_event(zd_client *c)
{
    lua_State *L = c->L;
    if (c->on_event == LUA_NOREF) {
        lua_pop(L, 1);
        return 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->on_event);
    lua_insert(L, -2);
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
    zd_field_str(L, "type", "retry");
    zd_field_str(L, "method", x->method);
    zd_field_str(L, "path", x->path);
    lua_pushinteger(L, x->attempts);
    lua_setfield(L, -2, "attempt");
    lua_pushnumber(L, wait);
    lua_setfield(L, -2, "wait");
    zd_field_str(L, "reason", reason);
    if (x->cc == CURLE_OK)
        zd_field_num(L, "status", x->resp.status);
    zd_scrub_resp(&c->t.creds, &x->resp);
    if (x->resp.request_id[0])
        zd_field_str(L, "request_id", x->resp.request_id);
    zd_scrub_table(L, &c->t.creds, -1);   /* every string of an event, as of an error */
    return zd_client_event(c);
}

/* Ends a call: buffers that grew past ZD_KEEP_BYTES go back (issue 12: 60 answers of a gzip
 * bomb kept 3.9 GB after request_many returned). Returns r, the results already pushed. */
static int release_buffers(zd_client *c, int r)
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
static int run_transfers(lua_State *L, zd_client *c, zd_xfer **xs, size_t n)
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
            release_buffers(c, 0);
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
    zd_error_push(L, "closed", "the client was closed by a callback during the call; the call was abandoned");
    return 2;
}

static zd_xfer *transfer_at(lua_State *L, zd_client *c, size_t i)
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
        zd_error_push(L, "validation", err);
        return 0;
    }
    if (wrap && !zd_buf_addc(&x->req, '}'))
        return luaL_error(L, "zendesk: out of memory");
    x->has_body = 1;
    return 1;
}

static void aim_transfer(lua_State *L, zd_client *c, zd_xfer *x, const char *method, const char *path, size_t n)
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
    x = transfer_at(L, c, 0);
    if (!encode_body(L, x, 2, "user", "user"))
        return 2;
    aim_transfer(L, c, x, "POST", path, sizeof path - 1);
    if (run_transfers(L, c, &x, 1))
        return push_closed(L);
    r = zd_response_push(L, c, x, "user", kept ? &keep : NULL);
    if (kept == 2 && lua_istable(L, -2)) {
        lua_pushnil(L);
        lua_setfield(L, -3, "id");
    }
    return release_buffers(c, r);
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
    x = transfer_at(L, c, 0);
    if (!encode_body(L, x, 2, "users", "users"))
        return 2;
    aim_transfer(L, c, x, "POST", path, sizeof path - 1);
    x->no_resend = 1;
    if (run_transfers(L, c, &x, 1))
        return push_closed(L);
    return release_buffers(c, zd_response_push(L, c, x, "job_status", NULL));
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
        return zd_error_validation(L, "job id: must be letters, digits, '-' or '_'");
    x = transfer_at(L, c, 0);
    u = &x->req;   /* borrow the idle request buffer for the path */
    if (!zd_buf_adds(u, "/api/v2/job_statuses/") || !zd_buf_add(u, id, n) || !zd_buf_adds(u, ".json"))
        return luaL_error(L, "zendesk: out of memory");
    aim_transfer(L, c, x, "GET", u->p, u->len);
    if (run_transfers(L, c, &x, 1))
        return push_closed(L);
    return release_buffers(c, zd_response_push(L, c, x, "job_status", NULL));
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
    x = transfer_at(L, c, 0);
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
            zd_error_push(L, "validation", NULL);
            lua_pushfstring(L, "ids[%d]: job ids are strings of letters, digits, '-' or '_'", (int)i);
            lua_setfield(L, -2, "message");
            return 2;
        }
        if ((i > 1 && !zd_buf_addc(u, ',')) || !zd_buf_add(u, id, len))
            return luaL_error(L, "zendesk: out of memory");
        lua_pop(L, 1);
    }
    aim_transfer(L, c, x, "GET", u->p, u->len);
    if (run_transfers(L, c, &x, 1))
        return push_closed(L);
    return release_buffers(c, zd_response_push(L, c, x, "job_statuses", NULL));
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
        zd_error_validation(L, "path: must be under /api/v2/ and hold only printable characters, no '.' or '..' "
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
    aim_transfer(L, c, x, method, path, pn);
    x->no_resend = !idempotent(method, path, pn);
    return 1;
}

static int c_request(lua_State *L)
{
    zd_client *c = check_client(L, "request");
    zd_xfer *x = transfer_at(L, c, 0);
    if (!prepare_request(L, c, x, 2))
        return 2;
    if (run_transfers(L, c, &x, 1))
        return push_closed(L);
    return release_buffers(c, zd_response_push(L, c, x, NULL, NULL));
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
        xs[i] = transfer_at(L, c, i);
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
        if (live && run_transfers(L, c, torun, live))
            closed = 1;
    }
    for (i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        lua_createtable(L, 0, 2);
        if (closed)
            push_closed(L);
        else
            zd_response_push(L, c, xs[i], NULL, NULL);
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
    return closed ? 1 : release_buffers(c, 1);
}

static int c_close(lua_State *L)
{
    zd_client *c = luaL_checkudata(L, 1, ZD_CLIENT_MT);
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
    zd_creds_free(&c->t.creds);
    luaL_unref(L, LUA_REGISTRYINDEX, c->on_event);
    luaL_unref(L, LUA_REGISTRYINDEX, c->on_refresh);
    c->on_event = c->on_refresh = LUA_NOREF;
}

static int c_tostring(lua_State *L)
{
    zd_client *c = luaL_checkudata(L, 1, ZD_CLIENT_MT);
    if (c->open)
        lua_pushfstring(L, "zendesk.Client (%s)", c->t.base);
    else
        lua_pushliteral(L, "zendesk.Client (closed)");
    return 1;
}

/* held_bytes() -> bytes the client's transfer buffers hold between calls (a diagnostic) */
static int c_held_bytes(lua_State *L)
{
    zd_client *c = luaL_checkudata(L, 1, ZD_CLIENT_MT);
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
    zd_client *c = luaL_checkudata(L, 1, ZD_CLIENT_MT);
    if (c->open && c->t.base)
        lua_pushstring(L, c->t.base);
    else
        lua_pushnil(L);
    return 1;
}

static int c_is_open(lua_State *L)
{
    zd_client *c = luaL_checkudata(L, 1, ZD_CLIENT_MT);
    lua_pushboolean(L, c->open);
    return 1;
}

/* zendesk.core.new(options) -> client; raises on a bad option */
int zd_client_new(lua_State *L)
{
    zd_client *c;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    /* created closed: if setting up fails half-way, __gc frees whatever was acquired */
    c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    c->on_event = c->on_refresh = c->parked = LUA_NOREF;
    luaL_getmetatable(L, ZD_CLIENT_MT);
    lua_setmetatable(L, -2);
    zd_options_apply(L, c, 1);
    c->t.hooks.ud = c;
    c->t.hooks.on_retry = hook_retry;
    c->t.hooks.on_unauthorized = zd_oauth_refresh;
    if (!zd_transport_init(&c->t))
        return luaL_error(L, "zendesk.new: cannot initialise libcurl");
    c->open = 1;
    return 1;
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

/* The client's metatable, in the registry under ZD_CLIENT_MT. */
void zd_client_register(lua_State *L)
{
    luaL_newmetatable(L, ZD_CLIENT_MT);
    luaL_setfuncs(L, client_meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, client_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
