/* src/http/response.c: every answer fed whole, at every split point and byte by byte. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtls/http_response.h"

/* What one parse produced, to compare the ways of feeding the same bytes. */
struct outcome {
    int rc;
    size_t used; /* bytes of the input that belonged to the response */
    int status;
    char reason[64];
    char headers[1024]; /* "name=value;" for each header */
    size_t n_headers;
    mtls_http_framing framing;
    unsigned long long content_length;
    char body[4096];
    size_t body_len;
    int body_truncated;
    char streamed[4096]; /* what on_body saw */
    size_t streamed_len;
    int keep_alive;
    int heads; /* on_head calls */
    char error[160];
};

static int on_head(void *arg, const mtls_http_response *r)
{
    struct outcome *o = arg;

    cr_assert(r->head_done);
    o->heads++;
    return 0;
}

static int on_body(void *arg, const char *data, size_t len)
{
    struct outcome *o = arg;

    cr_assert(o->streamed_len + len <= sizeof(o->streamed));
    memcpy(o->streamed + o->streamed_len, data, len);
    o->streamed_len += len;
    return 0;
}

static void record(struct outcome *o, const mtls_http_response *r)
{
    size_t used = 0;

    o->status = r->status;
    snprintf(o->reason, sizeof(o->reason), "%s", r->head_done ? r->reason : "");
    o->n_headers = r->n_headers;
    for (size_t i = 0; r->head_done && i < r->n_headers; i++) {
        cr_assert_eq(strlen(r->headers[i].name), r->headers[i].name_len);
        cr_assert_eq(strlen(r->headers[i].value), r->headers[i].value_len);
        used += (size_t)snprintf(o->headers + used, sizeof(o->headers) - used, "%s=%s;",
                                 r->headers[i].name, r->headers[i].value);
    }
    o->framing = r->framing;
    o->content_length = (unsigned long long)r->content_length;
    if (r->body != NULL) {
        cr_assert_eq(r->body[r->body_len], '\0');
        memcpy(o->body, r->body, r->body_len + 1);
    }
    o->body_len = r->body_len;
    o->body_truncated = r->body_truncated;
    o->keep_alive = r->keep_alive;
    snprintf(o->error, sizeof(o->error), "%s", r->error);
}

/*
 * Feeds in[0, len) in pieces cut at the offsets in cuts (ascending), each
 * piece copied into its own heap buffer of exactly its size (so that a read
 * past it shows under the sanitizer), then EOF when eof is set.
 */
static void parse_cut(const char *in, size_t len, const size_t *cuts, size_t n_cuts, int eof,
                      const mtls_http_response_opts *base, struct outcome *o)
{
    mtls_http_response r;
    mtls_http_response_opts opts = *base;
    size_t start = 0;

    memset(o, 0, sizeof(*o));
    opts.on_head = on_head;
    opts.on_body = on_body;
    opts.arg = o;
    mtls_http_response_init(&r, &opts);
    o->rc = MTLS_HTTP_RESPONSE_MORE;
    for (size_t i = 0; i <= n_cuts && o->rc == MTLS_HTTP_RESPONSE_MORE; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        size_t used = 0;
        char *piece = malloc(end - start + 1);

        cr_assert_not_null(piece);
        memcpy(piece, in + start, end - start);
        o->rc = mtls_http_response_feed(&r, piece, end - start, &used);
        free(piece);
        cr_assert(used <= end - start);
        if (o->rc == MTLS_HTTP_RESPONSE_MORE)
            cr_assert_eq(used, end - start);
        o->used = start + used;
        start = end;
    }
    if (o->rc == MTLS_HTTP_RESPONSE_MORE && eof)
        o->rc = mtls_http_response_eof(&r);
    if (o->rc < 0)
        o->used = 0; /* where an error stops depends on the pieces */
    record(o, &r);
    mtls_http_response_release(&r);
}

static void assert_same(const struct outcome *a, const struct outcome *b, size_t split)
{
    cr_assert_eq(a->rc, b->rc, "rc at split %zu: %d vs %d (%s)", split, a->rc, b->rc, b->error);
    cr_assert_eq(a->used, b->used, "used at split %zu", split);
    cr_assert_eq(a->status, b->status, "status at split %zu", split);
    cr_assert_str_eq(a->reason, b->reason, "reason at split %zu", split);
    cr_assert_str_eq(a->headers, b->headers, "headers at split %zu", split);
    cr_assert_eq(a->framing, b->framing, "framing at split %zu", split);
    cr_assert_eq(a->body_len, b->body_len, "body at split %zu", split);
    cr_assert(memcmp(a->body, b->body, a->body_len) == 0, "body at split %zu", split);
    cr_assert_eq(a->streamed_len, b->streamed_len, "streamed at split %zu", split);
    cr_assert(memcmp(a->streamed, b->streamed, a->streamed_len) == 0);
    cr_assert_eq(a->keep_alive, b->keep_alive);
    cr_assert_eq(a->heads, b->heads);
    cr_assert_str_eq(a->error, b->error, "error at split %zu", split);
}

/* Parses in whole, then cut at every offset, then byte by byte: all must agree. */
static void parse_all_ways(const char *in, int eof, const mtls_http_response_opts *opts,
                           struct outcome *whole)
{
    size_t len = strlen(in);
    struct outcome *o = malloc(sizeof(*o));
    size_t *cuts = malloc((len + 1) * sizeof(*cuts));

    cr_assert(o != NULL && cuts != NULL);
    parse_cut(in, len, NULL, 0, eof, opts, whole);
    for (size_t split = 0; split <= len; split++) {
        cuts[0] = split;
        parse_cut(in, len, cuts, 1, eof, opts, o);
        assert_same(whole, o, split);
    }
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    parse_cut(in, len, cuts, len, eof, opts, o);
    assert_same(whole, o, (size_t)-1);
    free(cuts);
    free(o);
}

static const mtls_http_response_opts keep = {.keep_body = 4096};

Test(response, content_length)
{
    struct outcome o;
    const char *in = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                     "X-Spaces:   padded  \t\r\n\r\nhello";

    parse_all_ways(in, 0, &keep, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE);
    cr_assert_eq(o.used, strlen(in));
    cr_assert_eq(o.status, 200);
    cr_assert_str_eq(o.reason, "OK");
    cr_assert_str_eq(o.headers, "Content-Type=text/plain;Content-Length=5;X-Spaces=padded;");
    cr_assert_eq(o.framing, MTLS_HTTP_FRAMING_LENGTH);
    cr_assert_eq(o.content_length, 5);
    cr_assert_str_eq(o.body, "hello");
    cr_assert_eq(o.streamed_len, 5);
    cr_assert_eq(o.keep_alive, 1);
    cr_assert_eq(o.heads, 1);
}

Test(response, chunked_with_trailer)
{
    struct outcome o;
    const char *in = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";

    parse_all_ways(in, 0, &keep, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE, "%s", o.error);
    cr_assert_eq(o.used, strlen(in));
    cr_assert_eq(o.framing, MTLS_HTTP_FRAMING_CHUNKED);
    cr_assert_str_eq(o.body, "hello world");
    cr_assert_str_eq(o.headers, "Transfer-Encoding=chunked;", "trailers are not headers");
    cr_assert_eq(o.keep_alive, 1);
}

Test(response, until_close)
{
    struct outcome o;
    const char *in = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc";

    parse_all_ways(in, 0, &keep, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_MORE, "the body ends only when the server closes");
    parse_all_ways(in, 1, &keep, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE, "%s", o.error);
    cr_assert_eq(o.framing, MTLS_HTTP_FRAMING_CLOSE);
    cr_assert_str_eq(o.body, "abc");
    cr_assert_eq(o.keep_alive, 0);
}

Test(response, http10_without_length)
{
    struct outcome o;

    parse_all_ways("HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody", 1, &keep, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE);
    cr_assert_eq(o.framing, MTLS_HTTP_FRAMING_CLOSE);
    cr_assert_str_eq(o.body, "body");
    cr_assert_eq(o.keep_alive, 0);
}

Test(response, interim_100_skipped)
{
    struct outcome o;
    const char *in = "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                     "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";

    parse_all_ways(in, 0, &keep, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE, "%s", o.error);
    cr_assert_eq(o.status, 201);
    cr_assert_str_eq(o.reason, "Created");
    cr_assert_str_eq(o.headers, "Content-Length=2;");
    cr_assert_str_eq(o.body, "ok");
    cr_assert_eq(o.heads, 1);
}

Test(response, no_body_statuses_and_head)
{
    struct outcome o;
    mtls_http_response_opts head = keep;
    const char *in = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nNEXT";

    parse_all_ways("HTTP/1.1 204 No Content\r\n\r\nNEXT", 0, &keep, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE);
    cr_assert_eq(o.used, strlen("HTTP/1.1 204 No Content\r\n\r\n"));
    cr_assert_eq(o.framing, MTLS_HTTP_FRAMING_NONE);
    cr_assert_eq(o.body_len, 0);
    cr_assert_str_eq(o.body, "");

    head.head_request = 1;
    parse_all_ways(in, 0, &head, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE, "%s", o.error);
    cr_assert_eq(o.used, strlen(in) - 4, "the answer to HEAD ends after its head");
    cr_assert_eq(o.framing, MTLS_HTTP_FRAMING_NONE);
}

Test(response, empty_reason_and_value)
{
    struct outcome o;

    parse_all_ways("HTTP/1.1 200 \r\nX-Empty:\r\nContent-Length: 0\r\n\r\n", 0, &keep, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE, "%s", o.error);
    cr_assert_str_eq(o.reason, "");
    cr_assert_str_eq(o.headers, "X-Empty=;Content-Length=0;");
    parse_all_ways("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", 0, &keep, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE, "%s", o.error);
    cr_assert_eq(o.status, 404);
    cr_assert_str_eq(o.reason, "");
}

Test(response, nginx_certificate_refusal)
{
    struct outcome o;
    const char *body = "<html>\r\n<head><title>400 No required SSL certificate was sent</title>"
                       "</head>\r\n</html>\r\n";
    char in[1024];

    snprintf(in, sizeof(in),
             "HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(body), body);
    parse_all_ways(in, 0, &keep, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE);
    cr_assert_eq(o.status, 400);
    cr_assert_str_eq(o.body, body);
    cr_assert_eq(o.keep_alive, 0, "Connection: close");
}

Test(response, pipelined_responses)
{
    const char *in = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"
                     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"
                     "HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nthree";
    const char *want[] = {"one", "two", "three"};
    mtls_http_response r;
    size_t len = strlen(in);

    /* Every split of the stream into two reads, each response parsed in turn. */
    for (size_t split = 0; split <= len; split++) {
        size_t off = 0, end = split, n_done = 0;

        mtls_http_response_init(&r, &keep);
        while (off < len) {
            size_t used = 0;
            int rc = mtls_http_response_feed(&r, in + off, end - off, &used);

            cr_assert(rc >= 0, "%s", r.error);
            off += used;
            if (rc == MTLS_HTTP_RESPONSE_DONE) {
                cr_assert_lt(n_done, 3);
                cr_assert_str_eq(r.body, want[n_done], "split %zu", split);
                cr_assert_eq(r.status, n_done == 2 ? 404 : 200);
                n_done++;
                mtls_http_response_reset(&r);
            } else if (off == end) {
                end = len;
            }
        }
        cr_assert_eq(n_done, 3, "split %zu", split);
        mtls_http_response_release(&r);
    }
}

Test(response, body_kept_up_to_limit_but_streamed_whole)
{
    struct outcome o;
    mtls_http_response_opts small = {.keep_body = 4};

    parse_all_ways("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", 0, &small, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE);
    cr_assert_str_eq(o.body, "0123");
    cr_assert_eq(o.body_truncated, 1);
    cr_assert_eq(o.streamed_len, 10);
}

Test(response, no_body_kept_without_keep_body)
{
    struct outcome o;
    mtls_http_response_opts none = {0};

    parse_all_ways("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 0, &none, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE);
    cr_assert_eq(o.body_len, 0);
    cr_assert_eq(o.streamed_len, 3);
}

Test(response, not_http)
{
    struct outcome o;

    parse_all_ways("SSH-2.0-OpenSSH_9.2\r\n", 0, &keep, &o);
    cr_assert_eq(o.rc, MTLS_E_INVALID);
    cr_assert(strstr(o.error, "not valid HTTP/1.1") != NULL, "%s", o.error);
    parse_all_ways("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 0, &keep, &o);
    cr_assert_eq(o.rc, MTLS_E_INVALID);
    parse_all_ways("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 0, &keep,
                   &o);
    cr_assert_eq(o.rc, MTLS_E_INVALID, "two lengths: a smuggling attempt");
}

Test(response, cut_short)
{
    struct outcome o;

    parse_all_ways("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 1, &keep, &o);
    cr_assert_eq(o.rc, MTLS_E_INVALID);
    cr_assert_str_eq(o.error,
                     "the server closed the connection before the end of the body (3 bytes read)");
    parse_all_ways("HTTP/1.1 200 OK\r\nContent-Le", 1, &keep, &o);
    cr_assert_eq(o.rc, MTLS_E_INVALID);
    cr_assert_str_eq(o.error,
                     "the server closed the connection in the middle of the response head");
    parse_all_ways("", 1, &keep, &o);
    cr_assert_eq(o.rc, MTLS_E_INVALID);
    cr_assert_str_eq(o.error, "the server closed the connection without an answer");
}

Test(response, limits)
{
    struct outcome o;
    mtls_http_response_opts two = {.max_headers = 2};
    mtls_http_response_opts tiny = {.max_head = 32};

    parse_all_ways("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 0, &two, &o);
    cr_assert_eq(o.rc, MTLS_E_INVALID);
    cr_assert_str_eq(o.error, "the response has more than 2 header lines");
    parse_all_ways("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", 1, &two, &o);
    cr_assert_eq(o.rc, MTLS_HTTP_RESPONSE_DONE, "%s", o.error);
    parse_all_ways("HTTP/1.1 200 OK\r\nX-Long: 0123456789012345678901234567890123456789\r\n\r\n", 0,
                   &tiny, &o);
    cr_assert_eq(o.rc, MTLS_E_INVALID);
    cr_assert_str_eq(o.error, "the response head is larger than 32 bytes");
}

static int refuse_head(void *arg, const mtls_http_response *r)
{
    (void)arg;
    return r->status != 200;
}

Test(response, callback_refusal_and_header_lookup)
{
    mtls_http_response r;
    mtls_http_response_opts opts = {.on_head = refuse_head};
    const char *ok =
        "HTTP/1.1 200 OK\r\ncontent-TYPE: application/json\r\nContent-Length: 0\r\n\r\n";
    const char *bad = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";

    mtls_http_response_init(&r, &opts);
    cr_assert_null(mtls_http_response_header(&r, "Content-Type"));
    cr_assert_eq(mtls_http_response_feed(&r, ok, strlen(ok), NULL), MTLS_HTTP_RESPONSE_DONE);
    cr_assert_str_eq(mtls_http_response_header(&r, "Content-Type"), "application/json");
    cr_assert_null(mtls_http_response_header(&r, "X-None"));
    cr_assert_eq(mtls_http_response_feed(&r, ok, strlen(ok), NULL), MTLS_HTTP_RESPONSE_DONE,
                 "a done response reads nothing more");
    mtls_http_response_reset(&r);
    cr_assert_eq(r.done, 0);
    cr_assert_eq(mtls_http_response_feed(&r, bad, strlen(bad), NULL), MTLS_E_INVALID);
    cr_assert_str_eq(r.error, "the response was refused after its head");
    cr_assert_eq(mtls_http_response_eof(&r), MTLS_E_INVALID, "errors stick");
    mtls_http_response_release(&r);
    mtls_http_response_release(&r);
}
