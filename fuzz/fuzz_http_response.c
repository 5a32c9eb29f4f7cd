/*
 * libFuzzer target for src/http/response.c: the input is a server's stream,
 * parsed twice, whole and in pieces whose sizes come from a seeded generator;
 * both must agree (result, status, header count, body, bytes used), every
 * kept string must be NUL-terminated where its length says, and a pipelined
 * stream is parsed response after response until it is used up or broken.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mtls/http_response.h"

struct run {
    int rc[8];
    int status[8];
    size_t n_headers[8], used[8], body_len[8];
    uint64_t body_bytes[8];
    int n;
};

static void check(const mtls_http_response *r)
{
    if (!r->head_done)
        return;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (strlen(r->headers[i].name) != r->headers[i].name_len ||
            strlen(r->headers[i].value) != r->headers[i].value_len)
            abort();
    }
    if (r->body != NULL && r->body[r->body_len] != '\0')
        abort();
}

/* Parses data as responses back to back; piece > 0: feed at most that many bytes at a time. */
static void parse(const uint8_t *data, size_t len, unsigned seed, int pieces, struct run *out)
{
    mtls_http_response_opts opts = {.keep_body = 64, .max_head = 2048, .max_headers = 16};
    mtls_http_response r;
    size_t off = 0;

    memset(out, 0, sizeof(*out));
    mtls_http_response_init(&r, &opts);
    while (out->n < 8) {
        size_t start = off;
        int rc = MTLS_HTTP_RESPONSE_MORE;

        while (off < len && rc == MTLS_HTTP_RESPONSE_MORE) {
            size_t n = len - off, used = 0;

            if (pieces) {
                seed = seed * 1103515245u + 12345u;
                n = 1 + (seed >> 16) % 17;
                if (n > len - off)
                    n = len - off;
            }
            rc = mtls_http_response_feed(&r, (const char *)data + off, n, &used);
            if (used > n)
                abort();
            off += rc < 0 ? n : used;
        }
        if (rc == MTLS_HTTP_RESPONSE_MORE)
            rc = mtls_http_response_eof(&r);
        check(&r);
        out->rc[out->n] = rc;
        out->status[out->n] = r.status;
        out->n_headers[out->n] = r.n_headers;
        out->used[out->n] = rc < 0 ? 0 : off - start;
        out->body_len[out->n] = r.body_len;
        out->body_bytes[out->n] = r.body_bytes;
        out->n++;
        if (rc < 0 || off >= len || !r.keep_alive)
            break;
        mtls_http_response_reset(&r);
    }
    mtls_http_response_release(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    struct run whole, split;

    if (len < 1)
        return 0;
    parse(data + 1, len - 1, 0, 0, &whole);
    parse(data + 1, len - 1, data[0], 1, &split);
    if (whole.n != split.n)
        abort();
    for (int i = 0; i < whole.n; i++) {
        if (whole.rc[i] != split.rc[i] || whole.status[i] != split.status[i] ||
            whole.n_headers[i] != split.n_headers[i] || whole.used[i] != split.used[i] ||
            whole.body_len[i] != split.body_len[i] || whole.body_bytes[i] != split.body_bytes[i])
            abort();
    }
    return 0;
}
