/* client.c: the client userdata (zendesk.Client): request and request_many with their per-request
 * options, the call around the transport loop, the retry event, close. No endpoint is known here. */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include "response.h"

/* The client at 1, open and not in a call already. The refusal names the call: method, or the
 * request option name of the ropts table at stack index ropts (0: none). */
static zd_client *check_client(lua_State *L, const char *method, int ropts)
{
    zd_client *c = luaL_checkudata(L, 1, ZD_CLIENT_MT);
    if (!c->open)
        luaL_error(L, "attempt to use a closed zendesk client");
    /* a callback (on_event, on_refresh) runs in the middle of a call whose transfers, buffers
     * and state would be reused under it: refused; the callback may only close the client */
    if (c->busy && ropts && lua_istable(L, ropts)) {
        lua_getfield(L, ropts, "name");
        if (lua_type(L, -1) == LUA_TSTRING)
            method = lua_tostring(L, -1);
    }
    if (c->busy)
        luaL_error(L, "zendesk: %s called from a callback (on_event, on_refresh) while a call on the same "
                   "client is in progress: refused (close() is the one method a callback may call)", method);
    c->L = L;
    return c;
}


/* ---- hooks called from the transport loop ---- */

/* Hands the event table on top of the stack (popped) to on_event. 0 goes on; -1 ends the run:
 * the callback raised (the error is parked) or closed the client. */
int zd_client_emit(zd_client *c)
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
    return zd_client_emit(c);
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

/* Encodes the value at idx as {"<wrap>": value} (or bare when wrap is NULL) into x->req, with
 * the array keys zendesk.api registered (core.json_config). */
static int encode_body(lua_State *L, zd_xfer *x, int idx, const char *wrap)
{
    char err[256];
    zd_json_config cfg;
    int ok = 1, top = lua_gettop(L);
    idx = zd_absindex(L, idx);
    if (wrap)
        ok = zd_buf_adds(&x->req, "{\"") && zd_buf_adds(&x->req, wrap) && zd_buf_adds(&x->req, "\":");
    if (!ok)
        return luaL_error(L, "zendesk: out of memory");
    cfg.root = wrap ? wrap : "body";
    cfg.arrays = zd_json_arrays_push(L);
    ok = zd_json_encode(L, idx, &x->req, &cfg, err, sizeof err);
    lua_settop(L, top);
    if (!ok) {
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

/* ---- requests ---- */

/* a key written into the body as is ({"<wrap>": ...}): letters, digits and '_', 1 to 64 */
static int is_name(const char *s, size_t n)
{
    size_t i;
    if (n == 0 || n > 64)
        return 0;
    for (i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

static const char *ropt_string(lua_State *L, int idx, const char *name)
{
    const char *v;
    lua_getfield(L, idx, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING || !is_name(lua_tostring(L, -1), zd_rawlen(L, -1)))
        luaL_error(L, "zendesk: request option '%s' must be a name (letters, digits, '_')", name);
    v = lua_tostring(L, -1);
    lua_pop(L, 1);   /* still held by the options table */
    return v;
}

/* keep = {"name", ...}: only those fields of the answer's object under ro->answer become Lua
 * values; its id is read whatever the fields (the shape check needs it) and dropped after. */
static int ropt_keep(lua_State *L, int idx, zd_ropts *ro)
{
    lua_Integer i, n;
    lua_getfield(L, idx, "keep");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    n = lua_istable(L, -1) ? (lua_Integer)zd_rawlen(L, -1) : 0;
    if (n < 1 || n > ZD_MAX_KEEP || !ro->answer)
        luaL_error(L, "zendesk: request option 'keep' must be an array of 1 to 64 field names, with 'answer'");
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING || zd_rawlen(L, -1) == 0)
            luaL_error(L, "zendesk: request option 'keep': element %d must be a field name", (int)i);
        ro->names[i - 1] = lua_tolstring(L, -1, &ro->lens[i - 1]);
        lua_pop(L, 1);   /* still held by the keep table */
    }
    lua_pop(L, 1);       /* the keep table: still held by the options table */
    ro->keep.key = ro->answer;
    ro->keep.keylen = strlen(ro->answer);
    ro->keep.names = ro->names;
    ro->keep.lens = ro->lens;
    ro->keep.n = (int)n;
    ro->kept = 1;
    for (i = 0; i < n; i++)
        if (ro->lens[i] == 2 && memcmp(ro->names[i], "id", 2) == 0)
            return 1;
    ro->names[n] = "id";
    ro->lens[n] = 2;
    ro->keep.n = (int)n + 1;
    ro->drop_id = 1;
    return 1;
}

/* Reads a request's options (see response.h, zd_ropts) from the table at idx (nil: none). */
static void read_ropts(lua_State *L, int idx, const char *method, zd_ropts *ro)
{
    static const char *const known[] = {"wrap", "answer", "shape", "keep", "resend", "name", NULL};
    static const char *const shapes[] = {"any", "record", "job", "job_list", NULL};
    int nkeys = 0, nknown = 0;
    /* the names and lens arrays are only read up to keep.n: not cleared */
    ro->wrap = ro->answer = NULL;
    ro->shape = ZD_SHAPE_ANY;
    ro->kept = ro->drop_id = 0;
    /* a request that may have taken effect is resent only when sending it twice does what
     * sending it once does: by default GET, PUT and DELETE */
    ro->resend = strcmp(method, "POST") != 0 && strcmp(method, "PATCH") != 0;
    if (lua_isnoneornil(L, idx))
        return;
    if (!lua_istable(L, idx))
        luaL_error(L, "zendesk: request options must be a table");
    idx = zd_absindex(L, idx);
    ro->wrap = ropt_string(L, idx, "wrap");
    ro->answer = ropt_string(L, idx, "answer");
    nknown = (ro->wrap != NULL) + (ro->answer != NULL);
    lua_getfield(L, idx, "shape");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING || !ro->answer)
            luaL_error(L, "zendesk: request option 'shape' must be a string, with 'answer'");
        for (ro->shape = 0; shapes[ro->shape] && strcmp(shapes[ro->shape], lua_tostring(L, -1)) != 0; ro->shape++)
            ;
        if (!shapes[ro->shape])
            luaL_error(L, "zendesk: request option 'shape' must be one of any, record, job, job_list");
        nknown++;
    }
    lua_getfield(L, idx, "resend");
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1))
            luaL_error(L, "zendesk: request option 'resend' must be a boolean");
        ro->resend = lua_toboolean(L, -1);
        nknown++;
    }
    lua_getfield(L, idx, "name");
    nknown += !lua_isnil(L, -1);
    lua_pop(L, 3);
    nknown += ropt_keep(L, idx, ro);
    /* any other key is a mistake: counted first, named only when there is one */
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        nkeys++;
    }
    if (nkeys != nknown) {
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            int i, found = 0;
            lua_pop(L, 1);
            for (i = 0; known[i] && lua_type(L, -1) == LUA_TSTRING; i++)
                found |= strcmp(known[i], lua_tostring(L, -1)) == 0;
            if (!found)
                luaL_error(L, "zendesk: unknown request option '%s'", lua_type(L, -1) == LUA_TSTRING
                           ? lua_tostring(L, -1) : luaL_typename(L, -1));
        }
    }
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
 * the stand-in's /__admin), so are "." and ".." segments. Which paths an API has is the Lua
 * layer's (zendesk.api). */
static int valid_path(const char *p, size_t n)
{
    size_t i, seg = 1;
    int query = 0;
    if (n == 0 || n > 2048 || p[0] != '/' || (n > 1 && p[1] == '/'))
        return 0;
    for (i = 0; i <= n; i++) {
        unsigned char ch = i < n ? (unsigned char)p[i] : '?';
        if (ch <= 0x20 || ch >= 0x7f || ch == '#' || ch == '\\' || ch == '"' || ch == '<' || ch == '>')
            return 0;
        if (query)
            continue;
        if (ch == '%') {
            int hi = i + 2 < n ? hex_digit((unsigned char)p[i + 1]) : -1;
            int lo = hi >= 0 ? hex_digit((unsigned char)p[i + 2]) : -1;
            int e = hi * 16 + lo;
            if (lo < 0 || e == '.' || e == '/' || e == '\\' || e == '%' || e < 0x20 || e == 0x7f)
                return 0;
        } else if (ch == '/' || ch == '?') {
            size_t len = i - seg;   /* the segment p[seg..i) */
            if ((len == 1 && p[seg] == '.') || (len == 2 && p[seg] == '.' && p[seg + 1] == '.'))
                return 0;
            seg = i + 1;
            query = ch == '?';
        }
    }
    return strstr(p, "/..") == NULL;
}

/* Prepares transfer x from (method, path, body, ropts) at stack positions m .. m+3 into ro;
 * returns 0 with nil, err pushed when the input is not acceptable. */
static int prepare_request(lua_State *L, zd_client *c, zd_xfer *x, int m, zd_ropts *ro)
{
    size_t pn;
    const char *method = check_method(L, m);
    const char *path = luaL_checklstring(L, m + 1, &pn);
    read_ropts(L, m + 3, method, ro);
    if (!valid_path(path, pn)) {
        zd_error_validation(L, "path: must hold only printable characters, no '.' or '..' segment, no escaped "
                               "'.', '/', '\\', '%' or control byte");
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
        if (!encode_body(L, x, m + 2, ro->wrap))
            return 0;
        break;
    default:
        return luaL_argerror(L, m + 2, "body must be a table, a JSON string or nil");
    }
    aim_transfer(L, c, x, method, path, pn);
    x->no_resend = !ro->resend;
    return 1;
}

/* client:request(method, path [, body [, ropts]]) -> value, meta | nil, err */
static int c_request(lua_State *L)
{
    zd_client *c;
    zd_xfer *x;
    zd_ropts ro;
    lua_settop(L, 5);
    c = check_client(L, "request", 5);
    x = transfer_at(L, c, 0);
    if (!prepare_request(L, c, x, 2, &ro))
        return 2;
    if (run_transfers(L, c, &x, 1))
        return push_closed(L);
    return release_buffers(c, zd_response_push(L, c, x, &ro));
}

/* request_many{ {method, path, body, ropts}, ... }: concurrent, over the multi handle.
 * Returns an array of {value = ..., meta = ...} or {err = ...}, in request order. */
static int c_request_many(lua_State *L)
{
    zd_client *c = check_client(L, "request_many", 0);
    zd_xfer *xs[ZD_MAX_CONCURRENT];
    zd_ropts *ros;
    int ok[ZD_MAX_CONCURRENT], closed = 0;
    size_t i, n, live = 0;
    luaL_checktype(L, 2, LUA_TTABLE);
    n = zd_rawlen(L, 2);
    if (n > ZD_MAX_CONCURRENT)
        return luaL_argerror(L, 2, "at most 64 requests at once");
    lua_settop(L, 2);
    lua_createtable(L, (int)n, 0);   /* 3: results */
    ros = lua_newuserdata(L, (n ? n : 1) * sizeof *ros);   /* 4: every request's options */
    lua_createtable(L, (int)n, 0);   /* 5: their tables, whose strings ros points to, held here */
    for (i = 0; i < n; i++) {
        int top;
        lua_rawgeti(L, 2, (int)i + 1);
        if (!lua_istable(L, -1))
            return luaL_argerror(L, 2, "each request is a table {method, path, body, ropts}");
        top = lua_gettop(L);
        lua_rawgeti(L, top, 1);
        lua_rawgeti(L, top, 2);
        lua_rawgeti(L, top, 3);
        lua_rawgeti(L, top, 4);
        lua_pushvalue(L, -1);
        lua_rawseti(L, 5, (int)i + 1);
        xs[i] = transfer_at(L, c, i);
        ok[i] = prepare_request(L, c, xs[i], top + 1, &ros[i]);
        if (!ok[i]) {
            lua_createtable(L, 0, 1);
            lua_insert(L, -2);
            lua_setfield(L, -2, "err");
            lua_rawseti(L, 3, (int)i + 1);
        }
        lua_settop(L, 5);
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
            zd_response_push(L, c, xs[i], &ros[i]);
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
    lua_settop(L, 3);
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
