/* zd.h: declarations shared by the C core's files (buffers, response headers, JSON,
 * transport). Everything here is internal; only luaopen_zendesk_core is exported. */
#ifndef ZD_H
#define ZD_H

#include <stddef.h>
#include <stdint.h>
#include "compat.h"

#define ZD_VERSION "0.1.0"

/* A growable byte buffer. It is owned by a longer-lived object (a client, a transfer or a
 * boxed userdata) so that a Lua error raised half-way never leaks it. */
typedef struct {
    char *p;
    size_t len, cap;
} zd_buf;

int zd_buf_reserve(zd_buf *b, size_t extra);
int zd_buf_add(zd_buf *b, const void *s, size_t n);
int zd_buf_addc(zd_buf *b, char c);
int zd_buf_adds(zd_buf *b, const char *s);
int zd_buf_addf(zd_buf *b, const char *fmt, ...);
void zd_buf_free(zd_buf *b);
void zd_wipe(void *p, size_t n);
char *zd_strdup_secret(const char *s);
void zd_free_secret(char **s);
/* whether s[0..n) holds CR, LF or NUL (a value that would break a header) */
int zd_has_crlf(const char *s, size_t n);

/* What the core keeps of a response's headers. Zendesk spells its rate-limit headers
 * several ways and repeats some; every spelling lands in the same fields. */
typedef struct {
    long status;
    double retry_after;          /* seconds; < 0 when absent */
    long long rl_limit;          /* account-wide; -1 when absent */
    long long rl_remaining;
    long long rl_reset;
    long long ep_total;          /* zendesk-ratelimit-<endpoint>: total/remaining/resets */
    long long ep_remaining;
    long long ep_resets;
    char request_id[96];
    char location[512];
    char content_type[96];
    char warn[512];
} zd_resp;

void zd_resp_reset(zd_resp *r);
void zd_resp_header(zd_resp *r, const char *line, size_t len);
double zd_parse_retry_after(const char *v, size_t n);

/* The email address check behind core.valid_email (email.c): 1 when s[0..n) passes. */
int zd_valid_email(const char *s, size_t n);

/* JSON: Lua -> text (exact integers, arrays vs objects, paths in errors) and text -> Lua (one
 * pass, integral numbers as integers, exact to 2^63-1). */
/* the length of the UTF-8 sequence at s that the encoder takes (no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 */
size_t zd_utf8_len(const unsigned char *s, size_t n);
/* What the caller tells the codec (as lua-cjson's json_config_t): the name of the value in error
 * paths, and the stack index of a set {key = true} of keys whose empty table is a JSON array
 * (0: none; the core passes the set zendesk.api registered with core.json_config). */
typedef struct {
    const char *root;
    int arrays;
} zd_json_config;
int zd_json_encode(lua_State *L, int idx, zd_buf *out, const zd_json_config *cfg, char *err, size_t errlen);
int zd_json_decode(lua_State *L, const char *s, size_t n);  /* pushes value or nil, msg */
/* Only some fields of one object: in the top-level object, the object under `key` keeps only
 * the members named in names (the rest is checked but not made into Lua values). */
typedef struct {
    const char *key;
    size_t keylen;
    int n;
    const char *const *names;
    const size_t *lens;
} zd_keep;
int zd_json_decode_kept(lua_State *L, const char *s, size_t n, const zd_keep *keep);
/* Strings to look for in the strings the decoder makes from escapes (the raw text cannot show
 * what "\u0073ecret" spells): hit is set when one of them holds any of the n strings. */
typedef struct {
    int n;
    const char *const *s;
    const size_t *len;
    int hit;
} zd_watch;
int zd_json_decode_watched(lua_State *L, const char *s, size_t n, const zd_keep *keep, zd_watch *w);

/* A client's credentials, the one list of them: the transport authenticates with username and
 * password or bearer, and scrub.c removes every one marked secret (zd_cred_secret) from what
 * reaches Lua, with the tokens a refresh replaced (retired). Freed by zd_creds_free. */
enum {
    ZD_CRED_USERNAME,        /* email, or email/token */
    ZD_CRED_PASSWORD,        /* the API token or password */
    ZD_CRED_BEARER,          /* the OAuth access token */
    ZD_CRED_REFRESH,         /* the OAuth refresh token */
    ZD_CRED_CLIENT_ID,
    ZD_CRED_CLIENT_SECRET,
    ZD_CRED_PROXY,           /* may carry user:password */
    ZD_CRED_BASIC,           /* base64 of username:password, as Basic credentials travel */
    ZD_CRED_N
};
#define ZD_RETIRED 8         /* replaced tokens kept as secrets: the last ones only */
#define ZD_NSEC (ZD_CRED_N + ZD_RETIRED)
typedef struct {
    char *v[ZD_CRED_N];
    char *retired[ZD_RETIRED];   /* newest last */
    int nretired;
    /* every secret of 4 characters or more, for the scrubbing: rebuilt by zd_creds_index */
    const char *sec[ZD_NSEC];
    size_t sec_len[ZD_NSEC];
    int nsec;
    size_t sec_max;              /* the longest */
} zd_creds;

#endif
