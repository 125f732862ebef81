/* scrub.h: the credentials (zd_creds, in zd.h) as secrets: indexing them, retiring replaced
 * tokens, and removing every one of them from a string, a header or a Lua table. */
#ifndef ZD_SCRUB_H
#define ZD_SCRUB_H

#include "zd.h"

#define ZD_REDACTED "[redacted]"

void zd_creds_index(zd_creds *k);
void zd_creds_replace(zd_creds *k, int which, const char *v);
int zd_creds_set_basic(zd_creds *k);
void zd_creds_free(zd_creds *k);

void zd_scrub_push(lua_State *L, const zd_creds *k, const char *s, size_t n);
size_t zd_scrub_into(const zd_creds *k, const char *s, size_t n, char *out, size_t cap, int was_cut);
void zd_scrub_resp(const zd_creds *k, zd_resp *r);
void zd_scrub_table(lua_State *L, const zd_creds *k, int t);
int zd_scrub_decode(lua_State *L, const zd_creds *k, const char *s, size_t n, const zd_keep *keep);

#endif
