/* buf.c: the growable buffer used for request and response bodies, and helpers that
 * keep secrets (tokens, passwords) from lingering in freed memory. */
#define _DEFAULT_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "zd.h"

int zd_buf_reserve(zd_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;
    if (extra > SIZE_MAX - b->len - 1)
        return 0;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 1;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = realloc(b->p, cap);
    if (!p)
        return 0;
    b->p = p;
    b->cap = cap;
    return 1;
}

int zd_buf_add(zd_buf *b, const void *s, size_t n)
{
    if (!zd_buf_reserve(b, n))
        return 0;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 1;
}

int zd_buf_addc(zd_buf *b, char c)
{
    if (b->len + 1 >= b->cap && !zd_buf_reserve(b, 1))
        return 0;
    b->p[b->len++] = c;
    b->p[b->len] = '\0';
    return 1;
}

int zd_buf_adds(zd_buf *b, const char *s)
{
    return zd_buf_add(b, s, strlen(s));
}

int zd_buf_addf(zd_buf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return 0;
    return zd_buf_add(b, tmp, (size_t)n);
}

void zd_buf_free(zd_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void zd_wipe(void *p, size_t n)
{
    if (p)
        explicit_bzero(p, n);
}

char *zd_strdup_secret(const char *s)
{
    return s ? strdup(s) : NULL;
}

void zd_free_secret(char **s)
{
    if (*s) {
        zd_wipe(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

int zd_has_crlf(const char *s, size_t n)
{
    return memchr(s, '\r', n) || memchr(s, '\n', n) || memchr(s, '\0', n);
}
