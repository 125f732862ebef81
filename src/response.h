/* response.h: a finished transfer to Lua values: (value, meta) or (nil, err) with every string
 * scrubbed; the error tables (zendesk.Error) and the buffers anchored in userdata. */
#ifndef ZD_RESPONSE_H
#define ZD_RESPONSE_H

#include "client.h"

/* A request's options, the core's side of the protocol line: zendesk.api says what each endpoint
 * wants; the core knows no endpoint. From the Lua table ropts of client:request / request_many:
 *   wrap   = "name"     a table body is sent as {"name": body} (error paths start at name)
 *   answer = "name"     the answer must be an object holding name; the value is answer[name]
 *   shape  = "record"   answer[name] is an object with a positive integer id
 *            "job"      an object with a string id and a string status
 *            "job_list" an array of those; "any" (the default): not checked
 *   keep   = {"f", ...} only these fields of answer[name] become Lua values (1 to 64)
 *   resend = boolean    whether a transport failure after which the request may have arrived is
 *                       retried (default: true for GET, PUT, DELETE; false for POST, PATCH)
 *   name   = "upsert"   what the call is named in a refusal (a call from a callback)
 * Error kinds, decided in response.c (push_failure) and nowhere else: "network" and "timeout"
 * (err.sent: false when the request cannot have left, resolve, connect or TLS set-up; true when it
 * may have arrived; err.not_resent when resend = false held it back), "auth" (401, 403),
 * "rate_limited" (429), "http" (any other status, an empty or unreadable answer),
 * "invalid_response" (an answer without the promised shape, or too large), and before anything is
 * sent "validation" (a bad body or path); "closed" when a callback closed the client. */
#define ZD_MAX_KEEP 64
enum { ZD_SHAPE_ANY, ZD_SHAPE_RECORD, ZD_SHAPE_JOB, ZD_SHAPE_JOB_LIST };
typedef struct {
    const char *wrap, *answer;
    int shape;
    int resend;
    int kept, drop_id;           /* keep given; its id was added for the shape check only */
    zd_keep keep;
    const char *names[ZD_MAX_KEEP + 1];
    size_t lens[ZD_MAX_KEEP + 1];
} zd_ropts;

/* value, meta or nil, err for a finished transfer; ro may be NULL (no options) */
int zd_response_push(lua_State *L, zd_client *c, zd_xfer *x, const zd_ropts *ro);

void zd_error_push(lua_State *L, const char *kind, const char *msg);
int zd_error_validation(lua_State *L, const char *msg);
int zd_error_tostring(lua_State *L);

zd_buf *zd_box_push(lua_State *L);
int zd_box_gc(lua_State *L);

void zd_field_str(lua_State *L, const char *k, const char *v);
void zd_field_num(lua_State *L, const char *k, long long v);

#endif
