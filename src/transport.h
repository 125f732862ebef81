/* transport.h: the libcurl side of the core: a multi handle whose connection cache keeps
 * connections alive across calls, a pool of easy handles, and the one retry policy. */
#ifndef ZD_TRANSPORT_H
#define ZD_TRANSPORT_H

#include <curl/curl.h>
#include "zd.h"

enum { ZD_X_IDLE, ZD_X_WAITING, ZD_X_RUNNING, ZD_X_DONE };

/* Where an answer's body goes: at most limit decoded bytes, then the transfer is cut. */
typedef struct {
    zd_buf *buf;
    size_t limit;
    size_t received;         /* when too_large: the bytes that had arrived when it was cut */
    int too_large;
} zd_sink;

typedef struct zd_xfer {
    CURL *easy;
    zd_buf req;              /* request body, encoded in place by the binding */
    zd_buf body;             /* response body (decoded from gzip by libcurl) */
    zd_buf url;
    zd_resp resp;
    zd_sink sink;            /* into body, at most the transport's max_answer */
    const char *method;      /* static string */
    const char *path;        /* points into url */
    int has_body;
    int state;
    int attempts;
    int refreshed;
    int waited_too_long;     /* Retry-After longer than max_retry_wait: not retried */
    int no_resend;           /* a transport failure after the request may have arrived ends it:
                                a non-idempotent request (a POST) may have taken effect */
    int held_back;           /* ended by no_resend: the error says it was not resent */
    double wake_at;
    unsigned auth_gen;
    CURLcode cc;
    char errbuf[CURL_ERROR_SIZE];
} zd_xfer;

typedef struct {
    void *ud;
    /* before a retry; 0 goes on, -1 aborts the run (the caller parked an error) */
    int (*on_retry)(void *ud, zd_xfer *x, const char *reason, double wait);
    /* a 401 invalid_token; 1 when fresh credentials are in place, 0 when not, -1 aborts */
    int (*on_unauthorized)(void *ud, zd_xfer *x);
} zd_hooks;

typedef struct {
    CURLM *multi;
    zd_xfer **pool;
    size_t npool;
    char *base;              /* scheme://host[:port], no trailing slash */
    struct curl_slist *headers;
    char *user_agent, *ca_file;
    zd_creds creds;          /* auth and proxy; freed by the owner (zd_creds_free), not here */
    long timeout_ms, connect_timeout_ms;
    size_t max_answer;       /* decoded bytes an answer may have (max_answer_bytes) */
    int max_retries;
    double max_retry_wait, retry_base;
    unsigned auth_gen;
    uint64_t rng;
    zd_hooks hooks;
} zd_transport;

#define ZD_MAX_CONCURRENT 64
#define ZD_DEFAULT_MAX_ANSWER (8u * 1024u * 1024u)   /* 100 users of ~2 KB, job results: ample */
#define ZD_KEEP_BYTES (64u * 1024u)   /* buffers above this are released after each call */

int zd_transport_init(zd_transport *t);
void zd_transport_free(zd_transport *t);
zd_xfer *zd_transport_xfer(zd_transport *t, size_t i);
int zd_xfer_prepare(zd_transport *t, zd_xfer *x, const char *method, const char *path, size_t pathlen);
int zd_transport_run(zd_transport *t, zd_xfer **xs, size_t n);
CURLcode zd_transport_post_plain(zd_transport *t, const char *path, const char *body, size_t n,
                                 zd_buf *out, zd_resp *resp, char *errbuf);
void zd_xfer_release(zd_xfer *x);
size_t zd_xfer_held(const zd_xfer *x);
double zd_now(void);
void zd_sleep(double seconds);
int zd_cc_retryable(CURLcode cc);
int zd_cc_sent(CURLcode cc);

#endif
