/* headers.c: reads the response header lines libcurl hands over (status, Retry-After,
 * every rate-limit spelling, request ids, Location). Pure C: a fuzz target drives it. */
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <curl/curl.h>
#include "zd.h"

void zd_resp_reset(zd_resp *r)
{
    memset(r, 0, sizeof *r);
    r->retry_after = -1;
    r->rl_limit = r->rl_remaining = r->rl_reset = -1;
    r->ep_total = r->ep_remaining = r->ep_resets = -1;
}

static int name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* At most cap - 1 bytes and a NUL. memcpy, then a scan: cheaper than building it byte by byte. */
static void copy_value(char *dst, size_t cap, const char *v, size_t n)
{
    size_t i;
    if (n > cap - 1)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)dst[i];
        /* keep what reaches errors and logs printable and on one line */
        if (c < 0x20 || c == 0x7f)
            dst[i] = '?';
    }
}

/* A non-negative decimal integer, saturating; -1 when the text is not one. */
static long long parse_count(const char *v, size_t n)
{
    long long x = 0;
    size_t i = 0;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    if (i == n || !isdigit((unsigned char)v[i]))
        return -1;
    for (; i < n && isdigit((unsigned char)v[i]); i++)
        x = x > (LLONG_MAX - 9) / 10 ? LLONG_MAX : x * 10 + (v[i] - '0');
    return x;
}

/* Retry-After is delta-seconds, or (rarely) an HTTP date; anything else counts as absent. */
double zd_parse_retry_after(const char *v, size_t n)
{
    char tmp[64];
    size_t i = 0, j;
    double d;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    while (n > i && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (i == n || n - i >= sizeof tmp)
        return -1;
    for (j = 0; i < n; i++, j++)
        tmp[j] = v[i];
    tmp[j] = '\0';
    if (isdigit((unsigned char)tmp[0])) {
        /* RFC 9110 delay-seconds = 1*DIGIT: "1.5", "0x10", "1e1" are not a delay (strtod read
         * them as 1.5, 16 and 10) */
        size_t k;
        d = 0;
        for (k = 0; k < j; k++) {   /* j, not the NUL: a NUL inside is not a digit either */
            if (!isdigit((unsigned char)tmp[k]))
                return -1;
            if (d < 86400.0 * 365)
                d = d * 10 + (tmp[k] - '0');
        }
        return d > 86400.0 * 365 ? 86400.0 * 365 : d;
    }
    {
        time_t when = curl_getdate(tmp, NULL), now = time(NULL);
        double d2;
        if (when == (time_t)-1)
            return -1;
        d2 = when > now ? (double)(when - now) : 0;
        return d2 > 86400.0 * 365 ? 86400.0 * 365 : d2;
    }
}

/* "total=100; remaining=99; resets=43" */
static void parse_endpoint_limit(zd_resp *r, const char *v, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t ks, ke, vs;
        while (i < n && (v[i] == ' ' || v[i] == ';' || v[i] == ','))
            i++;
        ks = i;
        while (i < n && v[i] != '=' && v[i] != ';')
            i++;
        ke = i;
        if (i >= n || v[i] != '=')
            continue;
        vs = ++i;
        while (i < n && v[i] != ';' && v[i] != ',')
            i++;
        if (name_is(v + ks, ke - ks, "total"))
            r->ep_total = parse_count(v + vs, i - vs);
        else if (name_is(v + ks, ke - ks, "remaining"))
            r->ep_remaining = parse_count(v + vs, i - vs);
        else if (name_is(v + ks, ke - ks, "resets"))
            r->ep_resets = parse_count(v + vs, i - vs);
    }
}

/* The headers kept, by the first letter of their name (any case). A line is matched without
 * looking for its colon first: name_at checks the byte after a candidate name, so the
 * common lines that matter to nobody (Date, Server, Connection, ETag, most X-...) cost a
 * few comparisons, and only a match pays for trimming the value. */
enum { H_RETRY_AFTER = 1, H_LIMIT, H_REMAINING, H_RESET, H_REQUEST_ID, H_WARN, H_LOCATION,
       H_CONTENT_TYPE, H_ENDPOINT };

typedef struct {
    unsigned char len, what;
    const char *name;
} zd_header_name;
#define HN(name, what) {sizeof name - 1, what, name}

static const zd_header_name r_names[] = {
    HN("retry-after", H_RETRY_AFTER),
    HN("ratelimit-limit", H_LIMIT),
    HN("rate-limit", H_LIMIT),
    HN("ratelimit-remaining", H_REMAINING),
    HN("rate-limit-remaining", H_REMAINING),
    HN("ratelimit-reset", H_RESET),
    HN("rate-limit-reset", H_RESET),
    {0, 0, NULL},
};
static const zd_header_name x_names[] = {
    HN("x-rate-limit", H_LIMIT),
    HN("x-rate-limit-remaining", H_REMAINING),
    HN("x-request-id", H_REQUEST_ID),
    HN("x-zendesk-request-id", H_REQUEST_ID),
    HN("x-zendesk-api-warn", H_WARN),
    {0, 0, NULL},
};
static const zd_header_name l_names[] = {HN("location", H_LOCATION), {0, 0, NULL}};
static const zd_header_name c_names[] = {HN("content-type", H_CONTENT_TYPE), {0, 0, NULL}};

/* the entry whose name, followed by ':', starts the line; the name is the text before the
 * line's first colon exactly when it is followed by one, since no name holds a colon */
static const zd_header_name *name_at(const zd_header_name *t, const char *line, size_t len)
{
    for (; t->len; t++)
        if (len > t->len && line[t->len] == ':' && strncasecmp(line, t->name, t->len) == 0)
            return t;
    return NULL;
}

void zd_resp_header(zd_resp *r, const char *line, size_t len)
{
    const zd_header_name *h;
    const char *v;
    size_t n, vn;
    int what;

    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    if (len == 0)
        return;
    if (line[0] == 'H' && len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        /* a new status line (100 Continue, a retried request): forget the last one */
        const char *sp = memchr(line, ' ', len);
        zd_resp_reset(r);
        if (sp) {
            long long s = parse_count(sp + 1, len - (size_t)(sp + 1 - line));
            r->status = (s >= 0 && s < 1000) ? (long)s : 0;
        }
        return;
    }

    /* | 0x20 folds exactly 'R' onto 'r' (and so on): the cases are all lower-case letters */
    switch ((unsigned char)line[0] | 0x20) {
    case 'r':
        h = name_at(r_names, line, len);
        break;
    case 'x':
        h = name_at(x_names, line, len);
        break;
    case 'l':
        h = name_at(l_names, line, len);
        break;
    case 'c':
        h = name_at(c_names, line, len);
        break;
    case 'z': {
        /* zendesk-ratelimit-<endpoint> / zendesk-rate-limit-<endpoint> */
        const char *colon = memchr(line, ':', len);
        if (!colon)
            return;
        n = (size_t)(colon - line);
        if ((n > 19 && strncasecmp(line, "zendesk-ratelimit-", 18) == 0) ||
            (n > 20 && strncasecmp(line, "zendesk-rate-limit-", 19) == 0)) {
            what = H_ENDPOINT;
            goto value;
        }
        return;
    }
    default:
        return;
    }
    if (!h)
        return;
    what = h->what;
    n = h->len;

value:
    v = line + n + 1;
    vn = len - n - 1;
    while (vn > 0 && (*v == ' ' || *v == '\t'))
        v++, vn--;
    while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
        vn--;

    switch (what) {
    case H_RETRY_AFTER:
        r->retry_after = zd_parse_retry_after(v, vn);
        break;
    case H_LIMIT:
        r->rl_limit = parse_count(v, vn);
        break;
    case H_REMAINING:
        r->rl_remaining = parse_count(v, vn);
        break;
    case H_RESET:
        r->rl_reset = parse_count(v, vn);
        break;
    case H_REQUEST_ID:
        if (r->request_id[0] == '\0')
            copy_value(r->request_id, sizeof r->request_id, v, vn);
        break;
    case H_WARN:
        copy_value(r->warn, sizeof r->warn, v, vn);
        break;
    case H_LOCATION:
        copy_value(r->location, sizeof r->location, v, vn);
        break;
    case H_CONTENT_TYPE:
        copy_value(r->content_type, sizeof r->content_type, v, vn);
        break;
    case H_ENDPOINT:
        parse_endpoint_limit(r, v, vn);
        break;
    default:
        break;
    }
}
