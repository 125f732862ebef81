/* headers_fuzz.c: libFuzzer target for the response-header reader (src/headers.c). The input
 * is a header block, one line per '\n'; every line goes through zd_resp_header as libcurl would
 * hand it over, and the whole input through zd_parse_retry_after. Checks what the rest of the
 * core relies on: a status of 0..999, a Retry-After that is absent (-1) or 0..365 days, counts
 * that are -1 or >= 0, and kept values that are NUL-terminated, printable and on one line.
 * (An HTTP-date Retry-After escaped the 365-day cap until 6ea3ad2.) A Retry-After that starts
 * with a digit is delay-seconds (RFC 9110: digits only) or not a delay: "1.5" and "0x10" were
 * read as 1.5 and 16 s until issue 12. */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "zd.h"

static void check_text(const char *what, const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    size_t i;
    if (n == cap) {
        fprintf(stderr, "%s is not NUL-terminated\n", what);
        abort();
    }
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f) {
            fprintf(stderr, "%s holds control byte 0x%02x\n", what, (unsigned char)s[i]);
            abort();
        }
}

static void check_count(const char *what, long long v)
{
    if (v < -1) {
        fprintf(stderr, "%s = %lld\n", what, v);
        abort();
    }
}

static void check_wait(double w)
{
    if (!(w == -1 || (w >= 0 && w <= 86400.0 * 365))) {
        fprintf(stderr, "retry_after = %g\n", w);
        abort();
    }
}

/* Input that starts (after blanks) with a digit: all digits gives their value (capped), anything
 * else gives -1. */
static void check_delay_seconds(const char *v, size_t n, double w)
{
    size_t i = 0;
    double want = 0;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    while (n > i && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (i == n || v[i] < '0' || v[i] > '9' || n - i >= 64)
        return;
    for (; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') {
            want = -1;
            break;
        }
        if (want < 86400.0 * 365)
            want = want * 10 + (v[i] - '0');
    }
    if (want > 86400.0 * 365)
        want = 86400.0 * 365;
    if (w != want) {
        fprintf(stderr, "Retry-After %.*s read as %g, want %g\n", (int)n, v, w, want);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    zd_resp r;
    const char *p = (const char *)data, *end = p + size;
    /* each line in its own heap block, so ASan sees any read past its end */
    zd_resp_reset(&r);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        char *line = malloc(len ? len : 1);
        memcpy(line, p, len);
        zd_resp_header(&r, line, len);
        free(line);
        p += len;
    }
    if (r.status < 0 || r.status > 999)
        abort();
    check_wait(r.retry_after);
    check_count("rl_limit", r.rl_limit);
    check_count("rl_remaining", r.rl_remaining);
    check_count("rl_reset", r.rl_reset);
    check_count("ep_total", r.ep_total);
    check_count("ep_remaining", r.ep_remaining);
    check_count("ep_resets", r.ep_resets);
    check_text("request_id", r.request_id, sizeof r.request_id);
    check_text("location", r.location, sizeof r.location);
    check_text("content_type", r.content_type, sizeof r.content_type);
    check_text("warn", r.warn, sizeof r.warn);
    {
        char *copy = malloc(size ? size : 1);
        memcpy(copy, data, size);
        double w = zd_parse_retry_after(copy, size);
        check_wait(w);
        check_delay_seconds(copy, size, w);
        free(copy);
    }
    return 0;
}
