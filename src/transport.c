/* transport.c: performs requests with libcurl's multi interface, several at once when
 * asked, and applies the one retry policy (Retry-After, full-jitter backoff, max_retries). */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "transport.h"

double zd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void zd_sleep(double seconds)
{
    struct timespec ts;
    if (!(seconds > 0))
        return;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static double rnd(zd_transport *t)
{
    /* xorshift64*: jitter only, no need for a strong generator */
    t->rng ^= t->rng >> 12;
    t->rng ^= t->rng << 25;
    t->rng ^= t->rng >> 27;
    return (double)((t->rng * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    zd_sink *sink = ud;
    size_t len = size * n;
    if (len > sink->limit - sink->buf->len) {
        /* decoded size, not download size: a small gzip answer can decode to gigabytes */
        sink->too_large = 1;
        sink->received = sink->buf->len + len;
        return 0;   /* libcurl aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (!zd_buf_add(sink->buf, p, len))
        return 0;
    return len;
}

static void sink_reset(zd_sink *sink, zd_buf *buf, size_t limit)
{
    sink->buf = buf;
    sink->limit = limit;
    sink->received = 0;
    sink->too_large = 0;
}

/* Gives back the buffers of a call that grew large (a big answer or body): memory held
 * between calls stays small, whatever one answer needed. */
void zd_xfer_release(zd_xfer *x)
{
    if (x->body.cap > ZD_KEEP_BYTES)
        zd_buf_free(&x->body);
    if (x->req.cap > ZD_KEEP_BYTES) {
        zd_wipe(x->req.p, x->req.cap);
        zd_buf_free(&x->req);
    }
    if (x->url.cap > ZD_KEEP_BYTES) {
        zd_buf_free(&x->url);
        x->path = NULL;
    }
}

size_t zd_xfer_held(const zd_xfer *x)
{
    return x->body.cap + x->req.cap + x->url.cap;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    zd_resp_header(ud, p, size * n);
    return size * n;
}

int zd_transport_init(zd_transport *t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    t->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
             (uint64_t)(uintptr_t)t;
    if (t->rng == 0)
        t->rng = 0x9E3779B97F4A7C15ULL;
    t->multi = curl_multi_init();
    if (!t->multi)
        return 0;
    /* no Expect: 100-continue round trip on larger bulk bodies */
    t->headers = curl_slist_append(NULL, "Accept: application/json");
    if (t->headers)
        t->headers = curl_slist_append(t->headers, "Content-Type: application/json");
    if (t->headers)
        t->headers = curl_slist_append(t->headers, "Expect:");
    return t->headers != NULL;
}

static void xfer_free(zd_xfer *x)
{
    if (!x)
        return;
    if (x->easy)
        curl_easy_cleanup(x->easy);
    zd_wipe(x->req.p, x->req.cap);
    zd_buf_free(&x->req);
    zd_buf_free(&x->body);
    zd_buf_free(&x->url);
    free(x);
}

void zd_transport_free(zd_transport *t)
{
    size_t i;
    for (i = 0; i < t->npool; i++) {
        if (t->pool[i] && t->pool[i]->state == ZD_X_RUNNING && t->multi)
            curl_multi_remove_handle(t->multi, t->pool[i]->easy);
        xfer_free(t->pool[i]);
    }
    free(t->pool);
    t->pool = NULL;
    t->npool = 0;
    if (t->multi)
        curl_multi_cleanup(t->multi);
    t->multi = NULL;
    curl_slist_free_all(t->headers);
    t->headers = NULL;
    free(t->base);
    free(t->user_agent);
    free(t->ca_file);
    t->base = t->user_agent = t->ca_file = NULL;
}

static void set_auth(zd_transport *t, CURL *e)
{
    const zd_creds *k = &t->creds;
    if (k->v[ZD_CRED_BEARER]) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, k->v[ZD_CRED_BEARER]);
    } else if (k->v[ZD_CRED_USERNAME]) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(e, CURLOPT_USERNAME, k->v[ZD_CRED_USERNAME]);
        curl_easy_setopt(e, CURLOPT_PASSWORD, k->v[ZD_CRED_PASSWORD]);
    }
}

/* The options every request shares; set once per easy handle. */
static void common_options(zd_transport *t, CURL *e, char *errbuf)
{
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, t->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, t->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_USERAGENT, t->user_agent);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    if (t->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, t->ca_file);
    if (t->creds.v[ZD_CRED_PROXY])
        curl_easy_setopt(e, CURLOPT_PROXY, t->creds.v[ZD_CRED_PROXY]);
}

zd_xfer *zd_transport_xfer(zd_transport *t, size_t i)
{
    zd_xfer *x;
    if (i >= ZD_MAX_CONCURRENT)
        return NULL;
    if (i >= t->npool) {
        zd_xfer **p = realloc(t->pool, (i + 1) * sizeof *p);
        if (!p)
            return NULL;
        memset(p + t->npool, 0, (i + 1 - t->npool) * sizeof *p);
        t->pool = p;
        t->npool = i + 1;
    }
    if (t->pool[i])
        return t->pool[i];
    x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->easy = curl_easy_init();
    if (!x->easy) {
        free(x);
        return NULL;
    }
    common_options(t, x->easy, x->errbuf);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_body);
    sink_reset(&x->sink, &x->body, t->max_answer);
    curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, &x->sink);
    curl_easy_setopt(x->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, &x->resp);
    x->auth_gen = t->auth_gen - 1;   /* credentials go on at the first start */
    t->pool[i] = x;
    return x;
}

/* Sets method, URL and body (already encoded into x->req when has_body). */
int zd_xfer_prepare(zd_transport *t, zd_xfer *x, const char *method, const char *path, size_t pathlen)
{
    CURL *e = x->easy;
    size_t baselen = strlen(t->base);
    x->url.len = 0;
    if (!zd_buf_add(&x->url, t->base, baselen) || !zd_buf_add(&x->url, path, pathlen))
        return 0;
    x->path = x->url.p + baselen;
    x->method = method;
    curl_easy_setopt(e, CURLOPT_URL, x->url.p);
    if (x->has_body) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->req.p);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->req.len);
    } else {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST,
                     (strcmp(method, "GET") == 0 || strcmp(method, "POST") == 0) ? NULL : method);
    return 1;
}

/* Whether a transfer that failed with cc may have delivered its request: not when it failed
 * resolving, connecting or setting up TLS (the request never left); otherwise it may have. */
int zd_cc_sent(CURLcode cc)
{
    switch ((int)cc) {
    case 5:    /* CURLE_COULDNT_RESOLVE_PROXY */
    case 6:    /* CURLE_COULDNT_RESOLVE_HOST */
    case 7:    /* CURLE_COULDNT_CONNECT */
    case 35:   /* CURLE_SSL_CONNECT_ERROR: the handshake */
    case 51:   /* the peer's certificate (older libcurl) */
    case 58:   /* CURLE_SSL_CERTPROBLEM: our client certificate */
    case 60:   /* CURLE_PEER_FAILED_VERIFICATION */
    case 77:   /* CURLE_SSL_CACERT_BADFILE */
        return 0;
    default:
        return 1;
    }
}

int zd_cc_retryable(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
        return 1;
    default:
        return 0;   /* certificate problems, our own aborts, malformed URLs: retrying won't help */
    }
}

static double backoff(zd_transport *t, int attempt)
{
    double cap = t->retry_base * pow(2.0, attempt - 1);
    if (cap > t->max_retry_wait)
        cap = t->max_retry_wait;
    return cap * rnd(t);
}

static void start_attempt(zd_transport *t, zd_xfer *x)
{
    if (x->auth_gen != t->auth_gen) {
        set_auth(t, x->easy);
        x->auth_gen = t->auth_gen;
    }
    x->body.len = 0;
    if (x->body.p)
        x->body.p[0] = '\0';
    x->errbuf[0] = '\0';
    x->waited_too_long = 0;
    x->held_back = 0;
    sink_reset(&x->sink, &x->body, t->max_answer);
    zd_resp_reset(&x->resp);
    if (curl_multi_add_handle(t->multi, x->easy) != CURLM_OK) {
        x->cc = CURLE_OUT_OF_MEMORY;
        x->state = ZD_X_DONE;
        return;
    }
    x->state = ZD_X_RUNNING;
}

/* Decides what an attempt that just ended leads to: done, or another attempt later. */
static int end_attempt(zd_transport *t, zd_xfer *x)
{
    char reason[64];
    double wait;
    long status = 0;

    x->attempts++;
    x->state = ZD_X_DONE;
    if (x->cc == CURLE_OK || x->sink.too_large) {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        x->resp.status = status;
    }
    if (x->cc != CURLE_OK) {
        if (!zd_cc_retryable(x->cc))
            return 0;
        /* before the connection stood, nothing was sent; after, the server may have it */
        if (x->no_resend && zd_cc_sent(x->cc)) {
            x->held_back = 1;
            return 0;
        }
        snprintf(reason, sizeof reason, "%s",
                 x->cc == CURLE_OPERATION_TIMEDOUT ? "timeout" : curl_easy_strerror(x->cc));
        wait = backoff(t, x->attempts);
    } else if (status == 401 && t->hooks.on_unauthorized && !x->refreshed && x->body.p &&
               strstr(x->body.p, "invalid_token")) {
        int r;
        x->refreshed = 1;
        /* another transfer of this run may have refreshed already */
        r = x->auth_gen != t->auth_gen ? 1 : t->hooks.on_unauthorized(t->hooks.ud, x);
        if (r < 0)
            return -1;
        if (r == 0)
            return 0;
        x->attempts--;   /* a refresh is not a retry */
        x->state = ZD_X_WAITING;
        x->wake_at = 0;
        return 0;
    } else if (status == 429 || status == 503) {
        if (x->resp.retry_after >= 0) {
            if (x->resp.retry_after > t->max_retry_wait) {
                x->waited_too_long = 1;
                return 0;
            }
            wait = x->resp.retry_after;
        } else {
            wait = backoff(t, x->attempts);
        }
        snprintf(reason, sizeof reason, "HTTP %ld", status);
    } else if (status == 409 || status == 500 || status == 502 || status == 504) {
        wait = backoff(t, x->attempts);
        snprintf(reason, sizeof reason, "HTTP %ld", status);
    } else {
        return 0;
    }
    if (x->attempts > t->max_retries)
        return 0;
    if (t->hooks.on_retry && t->hooks.on_retry(t->hooks.ud, x, reason, wait) < 0)
        return -1;
    x->state = ZD_X_WAITING;
    x->wake_at = zd_now() + wait;
    return 0;
}

static void abort_all(zd_transport *t, zd_xfer **xs, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (xs[i]->state == ZD_X_RUNNING)
            curl_multi_remove_handle(t->multi, xs[i]->easy);
        xs[i]->state = ZD_X_DONE;
    }
}

int zd_transport_run(zd_transport *t, zd_xfer **xs, size_t n)
{
    size_t i, left = n;

    for (i = 0; i < n; i++) {
        xs[i]->state = ZD_X_WAITING;
        xs[i]->attempts = 0;
        xs[i]->refreshed = 0;
        xs[i]->wake_at = 0;
        xs[i]->cc = CURLE_OK;
    }
    while (left > 0) {
        double now = zd_now(), next = now + 1.0;
        int running = 0, msgs, busy = 0;
        CURLMsg *m;

        for (i = 0; i < n; i++)
            if (xs[i]->state == ZD_X_WAITING && xs[i]->wake_at <= now) {
                start_attempt(t, xs[i]);
                if (xs[i]->state == ZD_X_DONE)
                    left--;
            }
        curl_multi_perform(t->multi, &running);
        while ((m = curl_multi_info_read(t->multi, &msgs)) != NULL) {
            zd_xfer *x = NULL;
            CURL *e = m->easy_handle;
            if (m->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
            x->cc = m->data.result;
            curl_multi_remove_handle(t->multi, e);   /* m is invalid from here */
            if (end_attempt(t, x) < 0) {
                abort_all(t, xs, n);
                return -1;
            }
            if (x->state == ZD_X_DONE)
                left--;
        }
        if (left == 0)
            break;
        now = zd_now();
        for (i = 0; i < n; i++) {
            if (xs[i]->state == ZD_X_RUNNING)
                busy = 1;
            else if (xs[i]->state == ZD_X_WAITING && xs[i]->wake_at < next)
                next = xs[i]->wake_at;
        }
        {
            double ms = (next - now) * 1000.0;
            int timeout = ms <= 0 ? 0 : (ms > 1000 ? 1000 : (int)ceil(ms));
            if (busy || timeout > 0)
                curl_multi_poll(t->multi, NULL, 0, timeout, NULL);
        }
    }
    return 0;
}

/* One request outside the pool and without credentials: the OAuth token endpoint. */
CURLcode zd_transport_post_plain(zd_transport *t, const char *path, const char *body, size_t n,
                                 zd_buf *out, zd_resp *resp, char *errbuf)
{
    zd_buf url = {0};
    zd_sink sink;
    CURLcode cc;
    long status = 0;
    CURL *e = curl_easy_init();
    if (!e)
        return CURLE_OUT_OF_MEMORY;
    if (!zd_buf_adds(&url, t->base) || !zd_buf_adds(&url, path)) {
        curl_easy_cleanup(e);
        zd_buf_free(&url);
        return CURLE_OUT_OF_MEMORY;
    }
    common_options(t, e, errbuf);
    errbuf[0] = '\0';
    zd_resp_reset(resp);
    curl_easy_setopt(e, CURLOPT_URL, url.p);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    sink_reset(&sink, out, t->max_answer);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, resp);
    cc = curl_easy_perform(e);
    if (sink.too_large)
        snprintf(errbuf, CURL_ERROR_SIZE, "answer too large (%zu bytes received, limit %zu)", sink.received,
                 sink.limit);
    if (cc == CURLE_OK) {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        resp->status = status;
    }
    curl_easy_cleanup(e);
    zd_buf_free(&url);
    return cc;
}
