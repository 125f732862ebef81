/* response.h: a finished transfer to Lua values: (value, meta) or (nil, err) with every string
 * scrubbed; the error tables (zendesk.Error) and the buffers anchored in userdata. */
#ifndef ZD_RESPONSE_H
#define ZD_RESPONSE_H

#include "client.h"

int zd_response_push(lua_State *L, zd_client *c, zd_xfer *x, const char *key, const zd_keep *keep);

void zd_error_push(lua_State *L, const char *kind, const char *msg);
int zd_error_validation(lua_State *L, const char *msg);
int zd_error_tostring(lua_State *L);

zd_buf *zd_box_push(lua_State *L);
int zd_box_gc(lua_State *L);

void zd_field_str(lua_State *L, const char *k, const char *v);
void zd_field_num(lua_State *L, const char *k, long long v);

#endif
