/* fuzz_http1.c -- libFuzzer target for the lean HTTP/1.1 client's response
 * parser (connectors/http1.c over http-parser).
 *
 * The input is a response as the server would send it. It is parsed
 * twice through http1_parse_response, as a connection reads it: once in
 * one read, once split into reads whose sizes come from the input's own
 * bytes (so the fuzzer explores the splits). Both must report the same
 * outcome, and what is kept of a failed response must stay within its
 * documented bounds. The first byte also picks a HEAD request. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#define SPLITS_MAX 64

/* What done() reported, copied while it is valid. */
struct seen {
    int called;
    struct http1_result res;
    size_t header_bytes; /* sum of name and value lengths */
    char body[CONNECTOR_BODY_MAX + 1];
    char headers[2 * HTTP1_HEADER_BYTES];
};

struct probe {
    struct http1_request req;
    struct seen seen;
};

static void done(struct http1_request *req, const struct http1_result *res)
{
    struct seen *s = &((struct probe *)req)->seen;
    size_t at = 0;

    s->called++;
    s->res = *res;
    if (res->error != 0) {
        if (res->headers != NULL || res->body != NULL) {
            abort(); /* an error hands over nothing */
        }
        return;
    }
    if (res->status >= 200 && res->status <= 299 &&
        (res->headers != NULL || res->body != NULL)) {
        abort(); /* a 2xx hands over nothing */
    }
    if (res->header_count > HTTP1_HEADERS_MAX ||
        res->body_len > CONNECTOR_BODY_MAX) {
        abort();
    }
    if (res->body != NULL) {
        if (res->body[res->body_len] != '\0') {
            abort(); /* documented NUL-terminated */
        }
        memcpy(s->body, res->body, res->body_len + 1);
    }
    for (size_t i = 0; i < res->header_count; i++) {
        const struct sl_header *h = &res->headers[i];
        size_t nlen = strlen(h->name);
        for (size_t k = 0; k < nlen; k++) {
            if (h->name[k] >= 'A' && h->name[k] <= 'Z') {
                abort(); /* names are kept lowercased */
            }
        }
        s->header_bytes += nlen + h->value_len;
        if (s->header_bytes > HTTP1_HEADER_BYTES) {
            abort();
        }
        /* Read every byte, so ASan checks the pointers. */
        memcpy(s->headers + at, h->name, nlen);
        at += nlen;
        memcpy(s->headers + at, h->value, h->value_len);
        at += h->value_len;
    }
    if (res->retry_after_ms < -1) {
        abort();
    }
}

static void parse(const char *data, size_t size, int head,
                  const size_t *chunks, size_t nchunks, struct probe *p)
{
    memset(p, 0, sizeof(*p));
    p->req.head = head;
    p->req.done = done;
    if (http1_parse_response(&p->req, data, chunks, nchunks) != 0) {
        abort();
    }
    (void)size;
    if (p->seen.called != 1) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct probe whole, split;
    size_t chunks[SPLITS_MAX + 1], nchunks = 0, left = size, pos = 0;
    char *text;
    int head = 0;

    /* A leading 'H' (not the start of "HTTP/") asks for a HEAD. */
    if (size >= 2 && data[0] == 'H' && data[1] != 'T') {
        head = 1;
        data++;
        size--;
        left = size;
    }
    text = malloc(size ? size : 1); /* exact size: ASan sees overreads */
    if (text == NULL) {
        return 0;
    }
    memcpy(text, data, size);

    parse(text, size, head, &size, 1, &whole);

    /* Reads of 1..16 bytes, sizes taken from the bytes being read. */
    while (left > 0 && nchunks < SPLITS_MAX) {
        size_t n = 1 + (size_t)((unsigned char)text[pos] % 16);
        n = n > left ? left : n;
        chunks[nchunks++] = n;
        pos += n;
        left -= n;
    }
    if (left > 0) {
        chunks[nchunks++] = left;
    }
    parse(text, size, head, chunks, nchunks, &split);

    if (whole.seen.res.error != split.seen.res.error ||
        whole.seen.res.status != split.seen.res.status ||
        whole.seen.res.header_count != split.seen.res.header_count ||
        whole.seen.res.body_len != split.seen.res.body_len ||
        whole.seen.header_bytes != split.seen.header_bytes ||
        memcmp(whole.seen.body, split.seen.body, whole.seen.res.body_len) !=
            0) {
        fprintf(stderr,
                "fuzz_http1: one read and %zu reads differ: error %d/%d "
                "status %d/%d headers %zu/%zu body %zu/%zu\n",
                nchunks, whole.seen.res.error, split.seen.res.error,
                whole.seen.res.status, split.seen.res.status,
                whole.seen.res.header_count, split.seen.res.header_count,
                whole.seen.res.body_len, split.seen.res.body_len);
        abort();
    }
    free(text);
    return 0;
}
