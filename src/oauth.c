/* oauth.c: the OAuth refresh: after a 401 invalid_token, a new access token from /oauth/tokens,
 * put in place of the old one (kept as a secret) and handed to on_refresh. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include "response.h"

/* The transport's on_unauthorized hook, after a 401 invalid_token: a new access token from
 * /oauth/tokens (refresh_token grant, or client_credentials), the replaced tokens kept as
 * secrets, on_refresh told the new pair. 1 when fresh credentials are in place, 0 when not (the
 * reason in c->refresh_err), -1 when a callback raised or closed the client (the run ends). */
int zd_oauth_refresh(void *ud, zd_xfer *x)
{
    zd_client *c = ud;
    zd_creds *k = &c->t.creds;
    lua_State *L = c->L;
    zd_buf out = {0}, body = {0};
    zd_resp resp;
    char errbuf[CURL_ERROR_SIZE], err[160];
    zd_json_config cfg = {"oauth", 0};
    CURLcode cc;
    int top = lua_gettop(L), ok = 0;
    (void)x;

    c->refresh_err[0] = '\0';
    if (!c->oauth || !(k->v[ZD_CRED_REFRESH] || (k->v[ZD_CRED_CLIENT_ID] && k->v[ZD_CRED_CLIENT_SECRET])))
        return 0;
    lua_createtable(L, 0, 4);
    zd_field_str(L, "grant_type", k->v[ZD_CRED_REFRESH] ? "refresh_token" : "client_credentials");
    if (k->v[ZD_CRED_REFRESH])
        zd_field_str(L, "refresh_token", k->v[ZD_CRED_REFRESH]);
    if (k->v[ZD_CRED_CLIENT_ID])
        zd_field_str(L, "client_id", k->v[ZD_CRED_CLIENT_ID]);
    if (k->v[ZD_CRED_CLIENT_SECRET])
        zd_field_str(L, "client_secret", k->v[ZD_CRED_CLIENT_SECRET]);
    if (!zd_json_encode(L, -1, &body, &cfg, err, sizeof err)) {
        snprintf(c->refresh_err, sizeof c->refresh_err, "token refresh failed: %s", err);
        goto cleanup;
    }
    cc = zd_transport_post_plain(&c->t, "/oauth/tokens", body.p, body.len, &out, &resp, errbuf);
    if (cc != CURLE_OK) {
        char why[CURL_ERROR_SIZE];
        size_t wn = strnlen(errbuf, sizeof errbuf - 1);
        if (wn)   /* libcurl cuts its message: scrubbed, and a cut secret goes too */
            zd_scrub_into(k, errbuf, wn, why, sizeof why, wn >= CURL_ERROR_SIZE - 1);
        snprintf(c->refresh_err, sizeof c->refresh_err, "token refresh failed: %s",
                 wn ? why : curl_easy_strerror(cc));
        goto cleanup;
    }
    if (resp.status != 200 || zd_json_decode(L, out.p ? out.p : "", out.len) != 1 || !lua_istable(L, -1)) {
        snprintf(c->refresh_err, sizeof c->refresh_err, "token refresh failed: HTTP %ld", resp.status);
        goto cleanup;
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
        if (!access || an == 0 || zd_has_crlf(access, an) || (refresh && zd_has_crlf(refresh, rn))) {
            snprintf(c->refresh_err, sizeof c->refresh_err, "token refresh failed: no usable access_token");
            goto cleanup;
        }
        /* the replaced tokens stay secrets: a server may still echo them */
        zd_creds_replace(k, ZD_CRED_BEARER, access);
        if (refresh)
            zd_creds_replace(k, ZD_CRED_REFRESH, refresh);
        zd_creds_index(k);
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
                goto cleanup;
            }
            if (c->closing) {
                ok = -1;
                goto cleanup;
            }
        }
        lua_createtable(L, 0, 2);
        zd_field_str(L, "type", "token_refresh");
        if (zd_client_emit(c) < 0)
            ok = -1;
    }
cleanup:
    zd_wipe(body.p, body.cap);
    zd_wipe(out.p, out.cap);
    zd_buf_free(&body);
    zd_buf_free(&out);
    lua_settop(L, top);
    return ok;
}
