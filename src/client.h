/* client.h: the client userdata (zendesk.Client) as the binding's files share it: its transport
 * and credentials, the callbacks, and the state of the call in progress. */
#ifndef ZD_CLIENT_H
#define ZD_CLIENT_H

#include "transport.h"
#include "scrub.h"

#define ZD_CLIENT_MT "zendesk.Client"
#define ZD_ERROR_MT "zendesk.Error"
#define ZD_BOX_MT "zendesk.Buffer"

typedef struct {
    zd_transport t;            /* t.creds: the credentials, set by options.c, replaced by oauth.c */
    lua_State *L;              /* the state of the call in progress, for the hooks */
    int open;
    int busy;                  /* a call is in the transport loop: callbacks may not re-enter */
    int closing;               /* close() came from a callback: freed once the loop let go */
    int on_event, on_refresh;  /* registry refs, LUA_NOREF when absent */
    int parked;                /* registry ref of an error raised in a callback */
    int oauth;                 /* a 401 invalid_token may refresh the access token */
    char refresh_err[320];     /* why the last refresh failed, for the 401's message */
} zd_client;

/* client.c */
int zd_client_new(lua_State *L);
void zd_client_register(lua_State *L);
int zd_client_emit(zd_client *c);

/* options.c: reads zendesk.new's options table at idx into c (raises on a bad one) */
void zd_options_apply(lua_State *L, zd_client *c, int idx);

/* oauth.c: the transport's on_unauthorized hook (1 refreshed, 0 not, -1 abort) */
int zd_oauth_refresh(void *ud, zd_xfer *x);

/* lzendesk.c: pushes the set of array keys zendesk.api registered (core.json_config), or nil;
 * returns its stack index for zd_json_config.arrays */
int zd_json_arrays_push(lua_State *L);

/* files.c: the module's file functions (fsync, create_private, file_id, getcwd, digest) */
void zd_files_register(lua_State *L);

#endif
