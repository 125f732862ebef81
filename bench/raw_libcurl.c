/* raw_libcurl.c: the limit for single upserts. N create_or_update requests over one kept-alive
 * easy handle, bodies prebuilt before the clock starts, with the work the module cannot skip:
 * the same request headers (Basic auth, Accept, Content-Type, no Expect, Accept-Encoding, a
 * User-Agent), every response header handed to a callback and the whole body read into memory.
 * No JSON is decoded: that is the module's own cost, which the comparison is meant to show.
 *
 *   gcc -O2 -o build/bench/raw_libcurl bench/raw_libcurl.c -lcurl
 *   build/bench/raw_libcurl URL N [PREFIX]     (prints "requests N seconds S rps R")
 */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct buf {
    char *p;
    size_t len, cap;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    size_t len = size * n;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *q;
        while (cap < b->len + len + 1)
            cap *= 2;
        q = realloc(b->p, cap);
        if (!q)
            return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, len);
    b->len += len;
    b->p[b->len] = '\0';
    return len;
}

/* The module looks at a few response headers (request id, rate limits); a callback that sees
 * every header line is the least a client does. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    size_t *count = ud;
    (void)p;
    *count += size * n;
    return size * n;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *base, *prefix;
    char url[512], ua[128];
    long n, i, status = 0, failed = 0;
    char **bodies;
    size_t *lens, header_bytes = 0;
    struct buf body = {0};
    struct curl_slist *headers = NULL;
    CURL *e;
    double t0, t1;

    if (argc < 3 || (n = strtol(argv[2], NULL, 10)) <= 0) {
        fprintf(stderr, "usage: raw_libcurl URL N [PREFIX]\n");
        return 2;
    }
    base = argv[1];
    prefix = argc > 3 ? argv[3] : "raw";
    snprintf(url, sizeof url, "%s/api/v2/users/create_or_update.json", base);

    bodies = malloc((size_t)n * sizeof *bodies);
    lens = malloc((size_t)n * sizeof *lens);
    if (!bodies || !lens)
        return 1;
    for (i = 0; i < n; i++) {
        char tmp[256];
        int len = snprintf(tmp, sizeof tmp, "{\"user\":{\"email\":\"%s-%ld@example.com\",\"name\":\"Bench User %ld\"}}",
                           prefix, i + 1, i + 1);
        bodies[i] = strdup(tmp);
        lens[i] = (size_t)len;
    }

    curl_global_init(CURL_GLOBAL_DEFAULT);
    e = curl_easy_init();
    if (!e)
        return 1;
    headers = curl_slist_append(headers, "Accept: application/json");
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    snprintf(ua, sizeof ua, "raw-libcurl/%s", curl_version_info(CURLVERSION_NOW)->version);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, ua);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(e, CURLOPT_USERNAME, "admin@example.com/token");
    curl_easy_setopt(e, CURLOPT_PASSWORD, "stand-in-token");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &header_bytes);

    t0 = now();
    for (i = 0; i < n; i++) {
        CURLcode cc;
        body.len = 0;
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, bodies[i]);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)lens[i]);
        cc = curl_easy_perform(e);
        if (cc == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (cc != CURLE_OK || (status != 200 && status != 201) || body.len == 0) {
            if (failed++ == 0)
                fprintf(stderr, "raw_libcurl: request %ld: %s, HTTP %ld\n", i + 1,
                        curl_easy_strerror(cc), status);
        }
    }
    t1 = now();

    printf("requests %ld seconds %.6f rps %.1f failed %ld\n", n, t1 - t0, (double)n / (t1 - t0), failed);
    curl_easy_cleanup(e);
    curl_slist_free_all(headers);
    curl_global_cleanup();
    for (i = 0; i < n; i++)
        free(bodies[i]);
    free(bodies);
    free(lens);
    free(body.p);
    return failed ? 1 : 0;
}
