/* src/http/pages.c: Accept negotiation, HTML escaping, and the pages as a connection answers them.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "http/http_conn.h"
#include "http/http_internal.h"
#include "mtls/app.h"
#include "mtls/http.h"

static int html(const char *accept)
{
    mtls_http_header h = {"Accept", 6, accept, strlen(accept)};

    return mtls__http_prefers_html(&h, 1);
}

Test(pages, accept_prefers_html_only_when_q_values_say_so)
{
    /* Chromium's and Firefox's navigation Accept. */
    cr_assert(html("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
                   "image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"));
    cr_assert(html("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"));
    cr_assert(html("text/html"));
    cr_assert(html("TEXT/HTML ; Q=1"));
    cr_assert(html("text/*"));
    cr_assert(html("application/json;q=0.5, text/html;q=0.6"));
    cr_assert(html("text/html;level=1;q=0.9, */*;q=0.1"));
    /* Programs keep the JSON. */
    cr_assert_not(html("*/*"));
    cr_assert_not(html(""));
    cr_assert_not(html("application/json"));
    cr_assert_not(html("application/json, text/html")); /* a tie keeps JSON */
    cr_assert_not(html("text/html;q=0.5, application/json"));
    cr_assert_not(html("text/html;q=0, */*"));
    cr_assert_not(html("text/html;q=0.5, application/*;q=0.9"));
    cr_assert_not(html("text/htmlx"));
    cr_assert_not(html("text/plain"));
    /* The most specific range decides: text/html;q=0 beats text/ *. */
    cr_assert_not(html("text/*, text/html;q=0"));
    /* A malformed q means nothing: the range is ignored. */
    cr_assert_not(html("text/html;q=2"));
    cr_assert_not(html("text/html;q=0.5x"));
    cr_assert_not(html("text/html;q=1.0001"));
    cr_assert(html("text/html;q=0.001, application/json;q=0"));
}

Test(pages, accept_lines_combine_and_other_headers_do_not_count)
{
    mtls_http_header h[] = {
        {"Accept-Language", 15, "text/html", 9},
        {"accept", 6, "application/json;q=0.2", 22},
        {"Accept", 6, "text/html;q=0.3", 15},
    };

    cr_assert(mtls__http_prefers_html(h, 3));
    cr_assert_not(mtls__http_prefers_html(h, 2));
    cr_assert_not(mtls__http_prefers_html(h, 1));
    cr_assert_not(mtls__http_prefers_html(NULL, 0));
}

Test(pages, html_text_escapes_markup_quotes_and_control_bytes)
{
    mtls_strbuf b = {0};
    const char in[] = "<script>alert('x')</script> & \"q\"\x01\x7f é";

    mtls__html_text(&b, in, sizeof(in) - 1);
    cr_assert_str_eq(b.p, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; "
                          "&quot;q&quot;\\x01\\x7F é");
    mtls_strbuf_release(&b);
}

Test(pages, whoami_page_escapes_every_certificate_value)
{
    const char json[] =
        "{\"verified\":true,\"client\":{\"subject\":\"CN=<script>alert(1)</script>\","
        "\"issuer\":\"CN=ca&co\",\"serial\":\"0A\",\"sha256\":\"AB:CD\","
        "\"not_after\":\"2027-01-01T00:00:00Z\",\"expires\":\"expires in 30 days\","
        "\"sans\":[{\"type\":\"DNS\",\"value\":\"<b>x</b>\"}]},"
        "\"tls\":{\"version\":\"TLSv1.3\",\"cipher\":\"TLS_AES_128_GCM_SHA256\",\"resumed\":true}}";
    mtls_strbuf b = {0};

    cr_assert_eq(mtls__http_page_whoami(&b, json, sizeof(json) - 1), 0);
    cr_assert_null(strstr(b.p, "<script"), "%s", b.p);
    cr_assert_null(strstr(b.p, "<b>"), "%s", b.p);
    cr_assert(strstr(b.p, "CN=&lt;script&gt;alert(1)&lt;/script&gt;") != NULL, "%s", b.p);
    cr_assert(strstr(b.p, "CN=ca&amp;co") != NULL);
    cr_assert(strstr(b.p, "expires in 30 days (until 2027-01-01T00:00:00Z)") != NULL, "%s", b.p);
    cr_assert(strstr(b.p, "TLSv1.3") != NULL);
    cr_assert(strstr(b.p, "resumed") != NULL);
    cr_assert(strstr(b.p, "<html lang=\"en\">") != NULL);
    mtls_strbuf_release(&b);
    b = (mtls_strbuf){0};
    cr_assert_eq(mtls__http_page_whoami(&b, "not json", 8), -1);
    mtls_strbuf_release(&b);
}

/* ---- as a connection answers ---- */

struct mem {
    const char *in;
    size_t len, off;
    char out[1 << 16];
    size_t out_len;
};

static long mem_read(void *ctx, char *buf, size_t len)
{
    struct mem *m = ctx;
    size_t n = m->len - m->off;

    if (n == 0)
        return MTLS_IO_EOF;
    if (n > len)
        n = len;
    memcpy(buf, m->in + m->off, n);
    m->off += n;
    return (long)n;
}

static long mem_write(void *ctx, const char *buf, size_t len)
{
    struct mem *m = ctx;

    cr_assert(m->out_len + len < sizeof(m->out));
    memcpy(m->out + m->out_len, buf, len);
    m->out_len += len;
    m->out[m->out_len] = '\0';
    return (long)len;
}

static const char WHOAMI[] = "{\"verified\":true,\"client\":{\"subject\":\"CN=<i>me</i>\"},"
                             "\"tls\":{\"version\":\"TLSv1.3\",\"resumed\":false}}";

static const char *whoami(void *ctx, size_t *len)
{
    (void)ctx;
    *len = sizeof(WHOAMI) - 1;
    return WHOAMI;
}

/* What mtls_request_identity() gives /whoami (mtls/app.h). */
static const mtls_identity *identity(void *ctx)
{
    static const mtls_identity id = {.subject = "CN=<i>me</i>", .json = WHOAMI};

    (void)ctx;
    return &id;
}

static void run_routes(struct mem *m, const char *input, const mtls_http_peer *peer,
                       const mtls_http_routes *routes)
{
    mtls_http_config cfg;
    mtls_http_io io = {mem_read, mem_write, NULL, m, NULL};
    mtls_http_conn c;

    mtls_http_config_init(&cfg);
    cfg.routes = routes;
    memset(m, 0, sizeof(*m));
    m->in = input;
    m->len = strlen(input);
    cr_assert_eq(mtls_http_conn_init(&c, &cfg, peer, &io), 0);
    for (int i = 0; i < 100 && mtls_http_conn_run(&c) == MTLS_HTTP_WANT_READ; i++)
        ;
    mtls_http_conn_release(&c);
}

static void run(struct mem *m, const char *input, const mtls_http_peer *peer)
{
    run_routes(m, input, peer, NULL);
}

#define BROWSER "Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n"

static void assert_html_headers(const char *out)
{
    cr_assert(strstr(out, "Content-Type: text/html; charset=utf-8\r\n") != NULL, "%s", out);
    cr_assert(strstr(out, "Content-Security-Policy: default-src 'none'; style-src "
                          "'unsafe-inline';") != NULL,
              "%s", out);
    cr_assert(strstr(out, "X-Content-Type-Options: nosniff\r\n") != NULL, "%s", out);
    cr_assert(strstr(out, "Vary: Accept\r\n") != NULL, "%s", out);
}

Test(pages, root_and_whoami_answer_a_page_to_browsers_and_json_to_programs)
{
    mtls_http_peer peer = {
        .addr = "127.0.0.1", .user = "CN=me", .whoami = whoami, .identity = identity};
    struct mem m;

    run(&m, "GET / HTTP/1.1\r\n" BROWSER "\r\n", &peer);
    cr_assert(strncmp(m.out, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", m.out);
    assert_html_headers(m.out);
    cr_assert(strstr(m.out, "You are <strong>CN=&lt;i&gt;me&lt;/i&gt;</strong>") != NULL, "%s",
              m.out);
    cr_assert(strstr(m.out, "new: the certificate was verified in this handshake") != NULL);

    run(&m, "GET /whoami HTTP/1.1\r\nAccept: */*\r\n\r\n", &peer);
    cr_assert(strstr(m.out, "Content-Type: application/json; charset=utf-8\r\n") != NULL, "%s",
              m.out);
    cr_assert(strstr(m.out, "Vary: Accept\r\n") != NULL, "%s", m.out);
    cr_assert(strstr(m.out, "\r\n\r\n{\"verified\":true,") != NULL, "%s", m.out);

    run(&m, "GET /test HTTP/1.1\r\n" BROWSER "\r\n", &peer);
    cr_assert(strstr(m.out, "\r\n\r\n{\"message\":\"Hello mtls\"}") != NULL, "%s", m.out);
}

Test(pages, refusal_page_says_what_was_wrong_and_which_ca)
{
    mtls_http_peer peer = {.addr = "127.0.0.1",
                           .denied = "no client certificate was sent",
                           .accepted_ca = "CN=<client-ca>"};
    struct mem m;

    run(&m, "GET /whoami HTTP/1.1\r\n" BROWSER "\r\n", &peer);
    cr_assert(strncmp(m.out, "HTTP/1.1 403 Forbidden\r\n", 24) == 0, "%s", m.out);
    assert_html_headers(m.out);
    cr_assert(strstr(m.out, "no client certificate was sent") != NULL, "%s", m.out);
    cr_assert(strstr(m.out, "issued by <strong>CN=&lt;client-ca&gt;</strong>") != NULL, "%s",
              m.out);
    cr_assert(strstr(m.out, "mtls cert p12") != NULL);

    run(&m, "GET /whoami HTTP/1.1\r\n\r\n", &peer);
    cr_assert(strstr(m.out, "\r\n\r\n{\"error\":\"client certificate required\",\"reason\":"
                            "\"no client certificate was sent\"}") != NULL,
              "%s", m.out);
    cr_assert(strstr(m.out, "Vary: Accept\r\n") != NULL, "%s", m.out);
}

Test(pages, not_found_and_method_pages_escape_the_path)
{
    mtls_http_peer peer = {
        .addr = "127.0.0.1", .user = "CN=me", .whoami = whoami, .identity = identity};
    struct mem m;

    run(&m, "GET /<script>'\" HTTP/1.1\r\n" BROWSER "\r\n", &peer);
    cr_assert(strstr(m.out, "<script>") == NULL, "%s", m.out);
    run(&m, "GET /nope%22%3E?q=<b> HTTP/1.1\r\n" BROWSER "\r\n", &peer);
    cr_assert(strncmp(m.out, "HTTP/1.1 404 Not Found\r\n", 24) == 0, "%s", m.out);
    assert_html_headers(m.out);
    cr_assert(strstr(m.out, "<code>/nope%22%3E</code>") != NULL, "%s", m.out);

    run(&m, "DELETE /test HTTP/1.1\r\n" BROWSER "\r\n", &peer);
    cr_assert(strncmp(m.out, "HTTP/1.1 405 Method Not Allowed\r\n", 33) == 0, "%s", m.out);
    cr_assert(strstr(m.out, "Allow: GET, HEAD\r\n") != NULL, "%s", m.out);
    assert_html_headers(m.out);
    cr_assert(strstr(m.out, "DELETE is not allowed on <code>/test</code>. Allowed: GET, HEAD.") !=
                  NULL,
              "%s", m.out);
}

Test(pages, favicon_is_204_even_for_a_refused_client)
{
    mtls_http_peer ok = {.addr = "127.0.0.1", .user = "CN=me", .whoami = whoami};
    mtls_http_peer refused = {.addr = "127.0.0.1", .denied = "no client certificate was sent"};
    struct mem m;

    run(&m, "GET /favicon.ico HTTP/1.1\r\n\r\n", &ok);
    cr_assert(strncmp(m.out, "HTTP/1.1 204 No Content\r\n", 25) == 0, "%s", m.out);
    cr_assert_null(strstr(m.out, "Content-Length"), "%s", m.out);
    cr_assert_null(strstr(m.out, "Content-Type"), "%s", m.out);
    run(&m, "GET /favicon.ico HTTP/1.1\r\n\r\nGET /test HTTP/1.1\r\n\r\n", &refused);
    cr_assert(strncmp(m.out, "HTTP/1.1 204 No Content\r\n", 25) == 0, "%s", m.out);
    cr_assert(strstr(m.out, "HTTP/1.1 403 Forbidden\r\n") != NULL, "%s", m.out);
}

static int answer_ok(void *ctx, mtls_http_request *req)
{
    (void)ctx;
    return mtls_http_respond(req, 200, NULL, "{}", 2, NULL);
}

Test(pages, a_long_allow_line_keeps_every_html_header)
{
    mtls_http_peer peer = {
        .addr = "127.0.0.1", .user = "CN=me", .whoami = whoami, .identity = identity};
    mtls_http_routes routes = {0};
    uint64_t many = 0;
    struct mem m;

    for (int method = HTTP_GET; method <= HTTP_UNLOCK; method++)
        many |= MTLS_METHOD(method);
    many &= ~MTLS_METHOD(HTTP_DELETE);
    cr_assert_eq(mtls_http_routes_add(&routes, "/x", 0, many, answer_ok, NULL, NULL), 0);
    run_routes(&m, "DELETE /x HTTP/1.1\r\n" BROWSER "\r\n", &peer, &routes);
    cr_assert(strncmp(m.out, "HTTP/1.1 405 Method Not Allowed\r\n", 33) == 0, "%s", m.out);
    cr_assert(strstr(m.out, "Allow: GET, HEAD, POST, PUT, CONNECT, OPTIONS, TRACE, COPY, LOCK, ") !=
                  NULL,
              "%s", m.out);
    assert_html_headers(m.out);
    cr_assert(strstr(m.out, "\r\n\r\n<!DOCTYPE html>") != NULL, "%s", m.out);
    mtls_http_routes_release(&routes);
}
