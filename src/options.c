/* options.c: zendesk.new's options: one descriptor table {name, kind, limits, default} read by
 * one loop into the client, and the checks of the base URL (scheme, host, loopback, subdomain). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "client.h"

enum { OPT_STRING, OPT_NUMBER, OPT_FUNCTION, OPT_TABLE, OPT_TRUTH };

typedef struct {
    const char *name;
    int kind;
    double lo, hi, dflt;     /* OPT_NUMBER: the range and the value when absent */
} zd_option;

/* What the loop read of one option: set when present (an OPT_FUNCTION is referenced later, once
 * every option passed, so that a bad option raised after it leaves no reference behind). */
typedef struct {
    int set;
    const char *s;
    size_t len;
    double num;
} zd_optval;

enum {
    O_URL, O_SUBDOMAIN, O_INSECURE, O_EMAIL, O_TOKEN, O_PASSWORD, O_OAUTH, O_TIMEOUT,
    O_CONNECT_TIMEOUT, O_MAX_RETRIES, O_MAX_RETRY_WAIT, O_RETRY_BASE, O_MAX_ANSWER, O_CA_FILE,
    O_PROXY, O_USER_AGENT, O_ON_EVENT, O_N
};
static const zd_option options[O_N] = {
    [O_URL] = {"url", OPT_STRING, 0, 0, 0},
    [O_SUBDOMAIN] = {"subdomain", OPT_STRING, 0, 0, 0},
    [O_INSECURE] = {"allow_insecure_http", OPT_TRUTH, 0, 0, 0},
    [O_EMAIL] = {"email", OPT_STRING, 0, 0, 0},
    [O_TOKEN] = {"token", OPT_STRING, 0, 0, 0},
    [O_PASSWORD] = {"password", OPT_STRING, 0, 0, 0},
    [O_OAUTH] = {"oauth", OPT_TABLE, 0, 0, 0},
    [O_TIMEOUT] = {"timeout", OPT_NUMBER, 0.001, 86400, 30},
    [O_CONNECT_TIMEOUT] = {"connect_timeout", OPT_NUMBER, 0.001, 3600, 10},
    [O_MAX_RETRIES] = {"max_retries", OPT_NUMBER, 0, 100, 5},
    [O_MAX_RETRY_WAIT] = {"max_retry_wait", OPT_NUMBER, 0, 86400, 60},
    [O_RETRY_BASE] = {"retry_base_delay", OPT_NUMBER, 0, 3600, 0.5},
    [O_MAX_ANSWER] = {"max_answer_bytes", OPT_NUMBER, 1024, 1024.0 * 1024 * 1024, ZD_DEFAULT_MAX_ANSWER},
    [O_CA_FILE] = {"ca_file", OPT_STRING, 0, 0, 0},
    [O_PROXY] = {"proxy", OPT_STRING, 0, 0, 0},
    [O_USER_AGENT] = {"user_agent", OPT_STRING, 0, 0, 0},
    [O_ON_EVENT] = {"on_event", OPT_FUNCTION, 0, 0, 0},
};

enum { A_ACCESS, A_REFRESH, A_CLIENT_ID, A_CLIENT_SECRET, A_ON_REFRESH, A_N };
static const zd_option oauth_options[A_N] = {
    [A_ACCESS] = {"access_token", OPT_STRING, 0, 0, 0},
    [A_REFRESH] = {"refresh_token", OPT_STRING, 0, 0, 0},
    [A_CLIENT_ID] = {"client_id", OPT_STRING, 0, 0, 0},
    [A_CLIENT_SECRET] = {"client_secret", OPT_STRING, 0, 0, 0},
    [A_ON_REFRESH] = {"on_refresh", OPT_FUNCTION, 0, 0, 0},
};

/* The one loop: unknown keys first, then each described option by its kind. The table at t. */
static void read_options(lua_State *L, int t, const zd_option *d, int n, zd_optval *v, const char *what)
{
    int i;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int found = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (i = 0; i < n && !found; i++)
                found = strcmp(d[i].name, lua_tostring(L, -2)) == 0;
        if (!found) {
            if (lua_type(L, -2) == LUA_TSTRING)
                luaL_error(L, "zendesk.new: unknown %s '%s'", what, lua_tostring(L, -2));
            luaL_error(L, "zendesk.new: %s names must be strings, got a %s", what, luaL_typename(L, -2));
        }
        lua_pop(L, 1);
    }
    for (i = 0; i < n; i++) {
        const char *name = d[i].name;
        memset(&v[i], 0, sizeof v[i]);
        v[i].num = d[i].dflt;
        lua_getfield(L, t, name);
        v[i].set = !lua_isnil(L, -1);
        if (!v[i].set) {
            lua_pop(L, 1);
            continue;
        }
        switch (d[i].kind) {
        case OPT_STRING:
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "zendesk.new: option '%s' must be a string", name);
            v[i].s = lua_tolstring(L, -1, &v[i].len);   /* still referenced by the options table */
            if (zd_has_crlf(v[i].s, v[i].len))
                luaL_error(L, "zendesk.new: option '%s' contains CR, LF or NUL", name);
            break;
        case OPT_NUMBER:
            if (lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "zendesk.new: option '%s' must be a number", name);
            v[i].num = lua_tonumber(L, -1);
            if (!(v[i].num >= d[i].lo && v[i].num <= d[i].hi))
                luaL_error(L, "zendesk.new: option '%s' must be between %f and %f", name, d[i].lo, d[i].hi);
            break;
        case OPT_FUNCTION:
            if (!lua_isfunction(L, -1))
                luaL_error(L, "zendesk.new: option '%s' must be a function", name);
            break;
        case OPT_TABLE:
            if (!lua_istable(L, -1))
                luaL_error(L, "zendesk.new: option '%s' must be a table", name);
            break;
        case OPT_TRUTH:
            v[i].set = lua_toboolean(L, -1);
            break;
        }
        lua_pop(L, 1);
    }
}

/* a registry reference to the function t[name] (checked by read_options), or LUA_NOREF */
static int function_ref(lua_State *L, int t, const char *name)
{
    lua_getfield(L, t, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return LUA_NOREF;
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static char *secret_copy(const zd_optval *v)
{
    return v->set ? zd_strdup_secret(v->s) : NULL;
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


/* Reads zendesk.new's options (the table at idx) into c: base URL, credentials, transport
 * settings, callbacks. Raises "zendesk.new: ..." on the first bad option; what was set on c
 * before is freed by its __gc. */
void zd_options_apply(lua_State *L, zd_client *c, int idx)
{
    zd_optval v[O_N], a[A_N];
    zd_creds *k = &c->t.creds;
    char ua[160];

    read_options(L, idx, options, O_N, v, "option");
    if (v[O_URL].set == v[O_SUBDOMAIN].set)
        luaL_error(L, "zendesk.new: give exactly one of 'url' and 'subdomain'");
    if (v[O_SUBDOMAIN].set) {
        char base[128];
        if (!valid_subdomain(v[O_SUBDOMAIN].s, v[O_SUBDOMAIN].len))
            luaL_error(L, "zendesk.new: option 'subdomain' must match ^[a-z0-9][a-z0-9-]*$");
        snprintf(base, sizeof base, "https://%s.zendesk.com", v[O_SUBDOMAIN].s);
        c->t.base = strdup(base);
    } else {
        set_base_url(L, c, v[O_URL].s, v[O_INSECURE].set);
    }

    if (v[O_OAUTH].set) {
        int o;
        lua_getfield(L, idx, "oauth");
        o = lua_gettop(L);
        read_options(L, o, oauth_options, A_N, a, "oauth field");
        if (!a[A_ACCESS].set && !(a[A_CLIENT_ID].set && a[A_CLIENT_SECRET].set))
            luaL_error(L, "zendesk.new: oauth needs access_token (or client_id and client_secret)");
        if (a[A_REFRESH].set && !(a[A_CLIENT_ID].set && a[A_CLIENT_SECRET].set))
            luaL_error(L, "zendesk.new: oauth refresh_token needs client_id and client_secret");
        if (v[O_EMAIL].set || v[O_TOKEN].set || v[O_PASSWORD].set)
            luaL_error(L, "zendesk.new: give either oauth or email with token, not both");
        k->v[ZD_CRED_REFRESH] = secret_copy(&a[A_REFRESH]);
        k->v[ZD_CRED_CLIENT_ID] = secret_copy(&a[A_CLIENT_ID]);
        k->v[ZD_CRED_CLIENT_SECRET] = secret_copy(&a[A_CLIENT_SECRET]);
        c->on_refresh = function_ref(L, o, "on_refresh");
        c->oauth = 1;
        /* without an access token yet, the first request's 401 fetches one */
        k->v[ZD_CRED_BEARER] = zd_strdup_secret(a[A_ACCESS].set ? a[A_ACCESS].s : "-");
        if (!k->v[ZD_CRED_BEARER])
            luaL_error(L, "zendesk.new: out of memory");
        lua_pop(L, 1);
    } else if (v[O_EMAIL].set && (v[O_TOKEN].set || v[O_PASSWORD].set)) {
        if (v[O_TOKEN].set && v[O_PASSWORD].set)
            luaL_error(L, "zendesk.new: give 'token' or 'password', not both");
        if (v[O_TOKEN].set) {
            zd_buf u = {0};
            if (!zd_buf_adds(&u, v[O_EMAIL].s) || !zd_buf_adds(&u, "/token"))
                luaL_error(L, "zendesk.new: out of memory");
            k->v[ZD_CRED_USERNAME] = u.p;
            k->v[ZD_CRED_PASSWORD] = secret_copy(&v[O_TOKEN]);
        } else {
            k->v[ZD_CRED_USERNAME] = secret_copy(&v[O_EMAIL]);
            k->v[ZD_CRED_PASSWORD] = secret_copy(&v[O_PASSWORD]);
        }
        if (!k->v[ZD_CRED_USERNAME] || !k->v[ZD_CRED_PASSWORD] || !zd_creds_set_basic(k))
            luaL_error(L, "zendesk.new: out of memory");
    } else {
        luaL_error(L, "zendesk.new: no credentials: give email and token, or oauth");
    }

    c->t.timeout_ms = (long)(v[O_TIMEOUT].num * 1000);
    c->t.connect_timeout_ms = (long)(v[O_CONNECT_TIMEOUT].num * 1000);
    c->t.max_retries = (int)v[O_MAX_RETRIES].num;
    c->t.max_retry_wait = v[O_MAX_RETRY_WAIT].num;
    c->t.retry_base = v[O_RETRY_BASE].num;
    c->t.max_answer = (size_t)v[O_MAX_ANSWER].num;
    if (v[O_CA_FILE].set)
        c->t.ca_file = strdup(v[O_CA_FILE].s);
    k->v[ZD_CRED_PROXY] = secret_copy(&v[O_PROXY]);
    if (v[O_USER_AGENT].set) {
        c->t.user_agent = strdup(v[O_USER_AGENT].s);
    } else {
        snprintf(ua, sizeof ua, "lua-zendesk/%s libcurl/%s %s", ZD_VERSION,
                 curl_version_info(CURLVERSION_NOW)->version, LUA_VERSION);
        c->t.user_agent = strdup(ua);
    }
    c->on_event = function_ref(L, idx, "on_event");
    if (!c->t.base || !c->t.user_agent || (v[O_CA_FILE].set && !c->t.ca_file) ||
        (v[O_PROXY].set && !k->v[ZD_CRED_PROXY]))
        luaL_error(L, "zendesk.new: out of memory");
    zd_creds_index(k);
}
