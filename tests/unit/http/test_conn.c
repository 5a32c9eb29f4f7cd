/* src/http: requests fed whole and split at every byte, limits, routes, log lines. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "http/http_conn.h"
#include "mtls/app.h"
#include "mtls/http.h"

/* A transport over memory: the first `avail` bytes of `in` can be read. */
struct mem {
    const char *in;
    size_t len, avail, off;
    int eof; /* after everything was read: EOF instead of WANT_READ */
    char out[1 << 18];
    size_t out_len;
    int block_writes; /* how many writes answer WANT_WRITE first */
    char log[1 << 16];
    size_t log_len;
};

static long mem_read(void *ctx, char *buf, size_t len)
{
    struct mem *m = ctx;
    size_t n;

    if (m->off >= m->avail)
        return m->eof && m->avail == m->len ? MTLS_IO_EOF : MTLS_IO_WANT_READ;
    n = m->avail - m->off;
    if (n > len)
        n = len;
    memcpy(buf, m->in + m->off, n);
    m->off += n;
    return (long)n;
}

static long mem_write(void *ctx, const char *buf, size_t len)
{
    struct mem *m = ctx;

    if (m->block_writes > 0) {
        m->block_writes--;
        return MTLS_IO_WANT_WRITE;
    }
    cr_assert(m->out_len + len <= sizeof(m->out));
    memcpy(m->out + m->out_len, buf, len);
    m->out_len += len;
    return (long)len;
}

static void mem_log(void *ctx, const char *line, size_t len)
{
    struct mem *m = ctx;

    if (m->log_len + len >= sizeof(m->log))
        return; /* long pipelines: only the first lines are looked at */
    memcpy(m->log + m->log_len, line, len);
    m->log_len += len;
    m->log[m->log_len] = '\0';
}

static const char *whoami(void *ctx, size_t *len)
{
    (void)ctx;
    *len = strlen("{\"who\":1}");
    return "{\"who\":1}";
}

/* What mtls_request_identity() gives /whoami (mtls/app.h). */
static const mtls_identity *identity(void *ctx)
{
    static const mtls_identity id = {.subject = "CN=localclient", .json = "{\"who\":1}"};

    (void)ctx;
    return &id;
}

static mtls_http_config cfg;
static mtls_http_peer peer = {.addr = "127.0.0.1",
                              .user = "CN=localclient",
                              .serial = "0A",
                              .whoami = whoami,
                              .identity = identity};

/* Runs a connection over input split once at `split`; returns the last run() result. */
static int feed(struct mem *m, const char *input, size_t split, const mtls_http_peer *p)
{
    mtls_http_io io = {mem_read, mem_write, NULL, m, NULL};
    mtls_http_conn c;
    int r;

    memset(m, 0, sizeof(*m));
    m->in = input;
    m->len = strlen(input);
    m->avail = split < m->len ? split : m->len;
    m->eof = 1;
    cfg.access_log = mem_log;
    cfg.access_log_ctx = m;
    cr_assert_eq(mtls_http_conn_init(&c, &cfg, p ? p : &peer, &io), 0);
    for (int rounds = 0; rounds < 100000; rounds++) {
        r = mtls_http_conn_run(&c);
        if (r == MTLS_HTTP_WANT_READ && m->off >= m->avail && m->avail < m->len) {
            m->avail = m->len; /* the rest arrives */
            continue;
        }
        if (r == MTLS_HTTP_WANT_READ && (m->off < m->avail || (m->eof && m->avail == m->len)))
            continue; /* one read per wake-up: the poll (data or EOF) would wake us again */
        if (r == MTLS_HTTP_WANT_WRITE)
            continue;
        break;
    }
    m->out[m->out_len] = '\0';
    mtls_http_conn_release(&c);
    return r;
}

static void setup(void)
{
    mtls_http_config_init(&cfg);
}

TestSuite(http, .init = setup);

static int count(const char *hay, const char *needle)
{
    int n = 0;

    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

Test(http, get_test_answers_the_article_json)
{
    struct mem m;
    int r = feed(&m, "GET /test HTTP/1.1\r\nHost: x\r\n\r\n", 1 << 20, NULL);

    cr_assert_eq(r, MTLS_HTTP_DONE); /* EOF after the request */
    cr_assert(strncmp(m.out, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", m.out);
    cr_assert(strstr(m.out, "Content-Type: application/json; charset=utf-8\r\n") != NULL);
    cr_assert(strstr(m.out, "Content-Length: 24\r\n") != NULL);
    cr_assert(strstr(m.out, "\r\n\r\n{\"message\":\"Hello mtls\"}") != NULL);
    cr_assert_null(strstr(m.out, "Connection:"), "HTTP/1.1 keeps alive silently");
}

Test(http, pipelined_requests_split_at_every_byte)
{
    const char *req = "GET /test HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n"
                      "GET /nope?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
                      "HEAD /whoami HTTP/1.1\r\nHost: a\r\n\r\n"
                      "POST /test HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                      "GET /whoami HTTP/1.1\r\nHost: a\r\n\r\n";
    struct mem whole;
    static struct mem part;

    feed(&whole, req, 1 << 20, NULL);
    cr_assert_eq(count(whole.out, "HTTP/1.1 "), 5, "%s", whole.out);
    cr_assert_eq(count(whole.out, "HTTP/1.1 200 OK"), 3);
    cr_assert_eq(count(whole.out, "HTTP/1.1 404 Not Found"), 1);
    cr_assert_eq(count(whole.out, "HTTP/1.1 405 Method Not Allowed"), 1);
    cr_assert(strstr(whole.out, "Allow: GET, HEAD\r\n") != NULL);
    cr_assert(strstr(whole.out, "{\"who\":1}") != NULL);
    cr_assert_eq(count(whole.log, "\n"), 5);
    for (size_t split = 0; split <= strlen(req); split++) {
        feed(&part, req, split, NULL);
        /* Date may tick between runs; compare without it. */
        cr_assert_eq(part.out_len, whole.out_len, "split %zu", split);
        cr_assert_eq(count(part.out, "HTTP/1.1 200 OK"), 3, "split %zu", split);
        cr_assert_eq(count(part.out, "{\"who\":1}"), 1, "split %zu", split);
    }
}

Test(http, http10_and_connection_close_end_the_connection)
{
    struct mem m;

    m.eof = 0;
    cr_assert_eq(feed(&m, "GET /test HTTP/1.0\r\n\r\nGET /test HTTP/1.0\r\n\r\n", 1 << 20, NULL),
                 MTLS_HTTP_DONE);
    cr_assert_eq(count(m.out, "HTTP/1.1 200"), 1, "nothing after a closing response");
    cr_assert(strstr(m.out, "Connection: close\r\n") != NULL);
    feed(&m, "GET /test HTTP/1.1\r\nConnection: close\r\n\r\nGET /test HTTP/1.1\r\n\r\n", 1 << 20,
         NULL);
    cr_assert_eq(count(m.out, "HTTP/1.1 200"), 1);
    feed(&m, "GET /test HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /test HTTP/1.0\r\n\r\n",
         1 << 20, NULL);
    cr_assert_eq(count(m.out, "HTTP/1.1 200"), 2);
    cr_assert(strstr(m.out, "Connection: keep-alive\r\n") != NULL);
}

Test(http, limits_have_clear_answers)
{
    static char big[40000];
    struct mem m;

    /* 414: a request target above max_url */
    strcpy(big, "GET /");
    memset(big + 5, 'a', 9000);
    strcpy(big + 9005, " HTTP/1.1\r\n\r\n");
    cr_assert_eq(feed(&m, big, 1 << 20, NULL), MTLS_HTTP_DONE);
    cr_assert(strncmp(m.out, "HTTP/1.1 414 URI Too Long\r\n", 27) == 0, "%s", m.out);
    cr_assert(strstr(m.out, "Connection: close") != NULL);
    cr_assert(strstr(m.log, "\" 414 ") != NULL, "%s", m.log);

    /* 431: one huge header */
    strcpy(big, "GET /test HTTP/1.1\r\nX-Big: ");
    memset(big + strlen(big), 'b', 20000);
    strcpy(big + 27 + 20000, "\r\n\r\n");
    feed(&m, big, 1 << 20, NULL);
    cr_assert(strncmp(m.out, "HTTP/1.1 431 ", 13) == 0, "%s", m.out);

    /* 431: too many headers */
    strcpy(big, "GET /test HTTP/1.1\r\n");
    for (int i = 0; i < 150; i++)
        strcat(big, "X-A: 1\r\n");
    strcat(big, "\r\n");
    feed(&m, big, 1 << 20, NULL);
    cr_assert(strncmp(m.out, "HTTP/1.1 431 ", 13) == 0, "%s", m.out);

    /* 413: a declared body above max_body */
    feed(&m, "GET /test HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 1 << 20, NULL);
    cr_assert(strncmp(m.out, "HTTP/1.1 413 ", 13) == 0, "%s", m.out);

    /* 400: not HTTP */
    feed(&m, "\x16\x03\x01garbage\r\n\r\n", 1 << 20, NULL);
    cr_assert(strncmp(m.out, "HTTP/1.1 400 Bad Request\r\n", 26) == 0, "%s", m.out);
    feed(&m, "GET /test HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 1 << 20, NULL);
    cr_assert(strncmp(m.out, "HTTP/1.1 400 ", 13) == 0, "smuggling: %s", m.out);
}

Test(http, small_bodies_are_read_and_discarded)
{
    struct mem m;

    feed(&m,
         "GET /test HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
         "GET /test HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n"
         "GET /test HTTP/1.1\r\n\r\n",
         1 << 20, NULL);
    cr_assert_eq(count(m.out, "HTTP/1.1 200 OK"), 3, "%s", m.out);
}

Test(http, denied_clients_get_403_with_the_reason)
{
    mtls_http_peer denied = {.addr = "10.0.0.1", .denied = "no client certificate was sent"};
    struct mem m;

    feed(&m, "GET /test HTTP/1.1\r\n\r\n", 1 << 20, &denied);
    cr_assert(strncmp(m.out, "HTTP/1.1 403 Forbidden\r\n", 24) == 0, "%s", m.out);
    cr_assert(strstr(m.out, "\"reason\":\"no client certificate was sent\"") != NULL, "%s", m.out);
    cr_assert(strstr(m.log, "10.0.0.1 - - [") == m.log, "%s", m.log);
}

Test(http, blocked_writes_are_retried)
{
    mtls_http_io io;
    mtls_http_conn c;
    static struct mem m;
    int r;

    memset(&m, 0, sizeof(m));
    m.in = "GET /test HTTP/1.1\r\n\r\n";
    m.len = m.avail = strlen(m.in);
    m.block_writes = 2;
    io = (mtls_http_io){mem_read, mem_write, NULL, &m, NULL};
    cr_assert_eq(mtls_http_conn_init(&c, &cfg, &peer, &io), 0);
    cr_assert_eq(mtls_http_conn_run(&c), MTLS_HTTP_WANT_WRITE);
    cr_assert(mtls_http_conn_busy(&c));
    cr_assert_eq(mtls_http_conn_run(&c), MTLS_HTTP_WANT_WRITE);
    r = mtls_http_conn_run(&c);
    cr_assert_eq(r, MTLS_HTTP_WANT_READ);
    cr_assert_eq(count(m.out, "HTTP/1.1 200 OK"), 1);
    cr_assert_not(mtls_http_conn_busy(&c));
    mtls_http_conn_release(&c);
}

Test(http, timeout_mid_request_answers_408)
{
    mtls_http_io io;
    mtls_http_conn c;
    static struct mem m;

    memset(&m, 0, sizeof(m));
    m.in = "GET /test HTTP/1.1\r\nHost: slow";
    m.len = m.avail = strlen(m.in);
    io = (mtls_http_io){mem_read, mem_write, NULL, &m, NULL};
    cr_assert_eq(mtls_http_conn_init(&c, &cfg, &peer, &io), 0);
    cr_assert_eq(mtls_http_conn_run(&c), MTLS_HTTP_WANT_READ);
    cr_assert(mtls_http_conn_busy(&c));
    mtls_http_conn_timeout(&c);
    cr_assert_eq(mtls_http_conn_run(&c), MTLS_HTTP_DONE);
    m.out[m.out_len] = '\0';
    cr_assert(strncmp(m.out, "HTTP/1.1 408 ", 13) == 0, "%s", m.out);
    mtls_http_conn_release(&c);
}

Test(http, access_log_combined_and_json)
{
    mtls_http_peer p = {
        .addr = "127.0.0.1", .user = "C=JP, O=Ex \"Co\", CN=localclient", .serial = "1F"};
    struct mem m;

    feed(&m, "GET /test?a=\"b\" HTTP/1.1\r\nReferer: r\r\nUser-Agent: curl/7.88.1\r\n\r\n", 1 << 20,
         &p);
    cr_assert(strstr(m.log, "127.0.0.1 - C=JP,O=Ex\\x20\\x22Co\\x22,CN=localclient [") == m.log,
              "%s", m.log);
    cr_assert(
        strstr(m.log, "] \"GET /test?a=\\x22b\\x22 HTTP/1.1\" 200 24 \"r\" \"curl/7.88.1\"\n") !=
            NULL,
        "%s", m.log);
    cfg.log_format = MTLS_LOG_JSON;
    feed(&m, "GET /test HTTP/1.1\r\nUser-Agent: \"q\"\r\n\r\n", 1 << 20, &p);
    cr_assert(strstr(m.log, "\"client\":\"C=JP, O=Ex \\\"Co\\\", CN=localclient\"") != NULL, "%s",
              m.log);
    cr_assert(strstr(m.log, "\"status\":200,\"bytes\":24") != NULL, "%s", m.log);
    cr_assert(strstr(m.log, "\"user_agent\":\"\\\"q\\\"\"}\n") != NULL, "%s", m.log);
}

Test(http, json_escape_never_splits_an_escape)
{
    char buf[8];

    cr_assert_eq(mtls_json_escape(buf, sizeof(buf), "ab\x01", 3), 2);
    cr_assert_str_eq(buf, "ab");
    cr_assert_eq(mtls_json_escape(buf, sizeof(buf), "\"\\", 2), 4);
    cr_assert_str_eq(buf, "\\\"\\\\");
}

Test(http, http2_prior_knowledge_gets_a_reason_a_person_understands)
{
    static struct mem m;

    feed(&m, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 1 << 20, NULL);
    cr_assert(strncmp(m.out, "HTTP/1.1 400 ", 13) == 0, "%s", m.out);
    cr_assert(strstr(m.out, "chosen with ALPN") != NULL, "%s", m.out);
    cr_assert(strstr(m.out, "ALPN") != NULL, "%s", m.out);
    cr_assert_null(strstr(m.out, "Pause"), "%s", m.out);
}

/* Whatever llhttp refuses, the body names the problem in our words, never llhttp's. */
Test(http, no_llhttp_text_reaches_a_response)
{
    static const char *const bad[] = {
        "GE(T / HTTP/1.1\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\n\r\n",
        "GET / HTTP/7.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHo\x01st: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: \x01\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "GET / HTTP/1.1\rX\n\r\n",
        "GET / HTTP/1.1\nHost: x\n\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    };
    /* Words llhttp uses in its error texts; ours are lower case. */
    static const char *const theirs[] = {"Invalid",
                                         "Expected",
                                         "Pause",
                                         "Span",
                                         "callback",
                                         "Missing",
                                         "Unexpected",
                                         "Duplicate",
                                         "Content-Length can't",
                                         "Request has invalid",
                                         "Data after"};
    static struct mem m;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *body;

        feed(&m, bad[i], 1 << 20, NULL);
        cr_assert(strncmp(m.out, "HTTP/1.1 400 ", 13) == 0, "%zu: %s", i, m.out);
        body = strstr(m.out, "\r\n\r\n");
        cr_assert_not_null(body);
        cr_assert_not_null(strstr(body, "\"reason\":\""), "%zu: %s", i, body);
        for (size_t j = 0; j < sizeof(theirs) / sizeof(theirs[0]); j++)
            cr_assert_null(strstr(body, theirs[j]), "%zu: %s", i, body);
    }
}

Test(http, json_escape_keeps_utf8_and_escapes_bad_bytes)
{
    char buf[64];

    /* "Ünï" is U+00DC U+006E U+00EF: it stays as its UTF-8 bytes. */
    cr_assert_eq(mtls_json_escape(buf, sizeof(buf), "\xc3\x9cn\xc3\xaf", 5), 5);
    cr_assert_str_eq(buf, "\xc3\x9cn\xc3\xaf");
    /* Three- and four-byte characters too. */
    cr_assert_str_eq((mtls_json_escape(buf, sizeof(buf), "\xe2\x82\xac\xf0\x9f\x94\x92", 7), buf),
                     "\xe2\x82\xac\xf0\x9f\x94\x92");
    /* A lone continuation byte, a cut sequence, an overlong '/', a surrogate, > U+10FFFF. */
    mtls_json_escape(buf, sizeof(buf),
                     "a\x80"
                     "b\xc3",
                     4);
    cr_assert_str_eq(buf, "a\\u0080"
                          "b\\u00c3");
    mtls_json_escape(buf, sizeof(buf), "\xc0\xaf", 2);
    cr_assert_str_eq(buf, "\\u00c0\\u00af");
    mtls_json_escape(buf, sizeof(buf), "\xed\xa0\x80", 3);
    cr_assert_str_eq(buf, "\\u00ed\\u00a0\\u0080");
    mtls_json_escape(buf, sizeof(buf), "\xf4\x90\x80\x80", 4);
    cr_assert_str_eq(buf, "\\u00f4\\u0090\\u0080\\u0080");
    /* Never half a character when the buffer is short. */
    cr_assert_eq(mtls_json_escape(buf, 3, "a\xc3\x9c", 3), 1);
    cr_assert_str_eq(buf, "a");
}

Test(http, pipelining_back_pressure_with_a_lent_read_buffer)
{
    static char req[40000], lent[32768];
    static struct mem m;
    const char *one = "GET /test HTTP/1.1\r\nHost: a\r\n\r\n";

    req[0] = '\0';
    for (int i = 0; i < 1000; i++)
        strcat(req, one);
    cfg.read_buf = lent;
    cfg.read_buf_len = sizeof(lent);
    /* ~150 KB of answers: the parser pauses at 64 KB, keeps the rest, goes on. */
    feed(&m, req, 1 << 20, NULL);
    cr_assert_eq(count(m.out, "HTTP/1.1 200 OK"), 1000);
    feed(&m, req, 777, NULL);
    cr_assert_eq(count(m.out, "HTTP/1.1 200 OK"), 1000);
    cfg.read_buf = NULL;
}

Test(http, plain_http_answer_is_a_complete_400)
{
    size_t len;
    const char *answer = mtls_http_plain_http_answer(&len);
    const char *body = strstr(answer, "\r\n\r\n");
    const char *cl = strstr(answer, "Content-Length: ");
    long declared;

    cr_assert_eq(strlen(answer), len);
    cr_assert(strncmp(answer, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    cr_assert_not_null(strstr(answer, "Connection: close\r\n"));
    cr_assert_not_null(body);
    cr_assert_not_null(cl);
    cr_assert_eq(sscanf(cl, "Content-Length: %ld", &declared), 1);
    body += 4;
    cr_assert_eq((size_t)declared, strlen(body), "Content-Length %ld, body %zu bytes", declared,
                 strlen(body));
    cr_assert_eq(body[0], '{');
    cr_assert_eq(body[strlen(body) - 1], '}');
}

/* ---- the route table and handlers ---------------------------------------- */

struct seen {
    char headers[1024];
    size_t n_headers;
    char body[256];
    size_t body_len;
    int body_end, pauses, aborted;
    mtls_http_request *later; /* a request to answer after the call */
};

static void seen_body_end(void *ctx)
{
    ((struct seen *)ctx)->body_end = 1;
}

static int seen_body(void *ctx, const char *data, size_t len)
{
    struct seen *s = ctx;

    cr_assert(s->body_len + len < sizeof(s->body));
    memcpy(s->body + s->body_len, data, len);
    s->body_len += len;
    s->pauses++;
    return MTLS_HTTP_BODY_PAUSE; /* one piece at a time */
}

static void seen_abort(void *ctx)
{
    ((struct seen *)ctx)->aborted = 1;
}

/* Records every header as "name=value;" and answers later. */
static int record(void *ctx, mtls_http_request *req)
{
    struct seen *s = ctx;
    size_t o = 0;

    for (size_t i = 0; i < req->n_headers; i++)
        o += (size_t)snprintf(s->headers + o, sizeof(s->headers) - o, "%.*s=%.*s;",
                              (int)req->headers[i].name_len, req->headers[i].name,
                              (int)req->headers[i].value_len, req->headers[i].value);
    s->n_headers = req->n_headers;
    req->on_body = seen_body;
    req->on_body_end = seen_body_end;
    req->on_abort = seen_abort;
    req->handler_ctx = s;
    s->later = req;
    return 0;
}

static int kicks;
static void count_kick(void *ctx)
{
    (void)ctx;
    kicks++;
}

Test(http, route_table_prefix_exact_and_405)
{
    mtls_http_routes t = {0};
    mtls_err err;
    uint64_t allow;

    cr_assert_eq(mtls_http_routes_add_builtin(&t, &err), 0);
    cr_assert_eq(mtls_http_routes_add(&t, "/api", MTLS_ROUTE_PREFIX, MTLS_METHOD(HTTP_POST), record,
                                      NULL, &err),
                 0);
    cr_assert_eq(mtls_http_routes_add(&t, "/", MTLS_ROUTE_PREFIX, 0, record, &t, &err), 0);
    cr_assert_eq(mtls_http_routes_add(&t, "nope", 0, 0, record, NULL, &err), MTLS_E_INVALID);
    cr_assert_str_eq(mtls_http_routes_match(&t, HTTP_GET, "/test", 5, &allow)->path, "/test");
    cr_assert_str_eq(mtls_http_routes_match(&t, HTTP_POST, "/api/x", 6, &allow)->path, "/api");
    cr_assert_str_eq(mtls_http_routes_match(&t, HTTP_POST, "/apix", 5, &allow)->path, "/");
    /* Another method on /test goes to the catch-all, not a 405. */
    cr_assert_str_eq(mtls_http_routes_match(&t, HTTP_POST, "/test", 5, &allow)->path, "/");
    mtls_http_routes_release(&t);
    cr_assert_eq(mtls_http_routes_add_builtin(&t, &err), 0);
    cr_assert_null(mtls_http_routes_match(&t, HTTP_POST, "/test", 5, &allow));
    cr_assert_eq(allow, MTLS_METHOD(HTTP_GET) | MTLS_METHOD(HTTP_HEAD));
    cr_assert_null(mtls_http_routes_match(&t, HTTP_GET, "/x", 2, &allow));
    cr_assert_eq(allow, 0);
    mtls_http_routes_release(&t);
}

/* A connection over input whose route table has the built-ins and record() at path. */
struct late_conn {
    struct mem m;
    struct seen s;
    mtls_http_routes t;
    mtls_http_config cfg;
    mtls_http_io io;
    mtls_http_conn c;
};

static void late_conn_start(struct late_conn *l, const char *input, const char *path,
                            unsigned flags)
{
    mtls_err err;

    memset(l, 0, sizeof(*l));
    l->m.in = input;
    l->m.len = l->m.avail = strlen(input);
    cr_assert_eq(mtls_http_routes_add_builtin(&l->t, &err), 0);
    cr_assert_eq(mtls_http_routes_add(&l->t, path, flags, 0, record, &l->s, &err), 0);
    l->cfg = cfg;
    l->cfg.routes = &l->t;
    l->io = (mtls_http_io){mem_read, mem_write, NULL, &l->m, count_kick};
    cr_assert_eq(mtls_http_conn_init(&l->c, &l->cfg, &peer, &l->io), 0);
    kicks = 0;
}

Test(http, handler_sees_headers_streams_the_body_and_answers_later)
{
    static struct late_conn l;
    struct mem *const m = &l.m;
    struct seen *const s = &l.s;
    int r;

    late_conn_start(&l,
                    "POST /app/x?y=1 HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Two: 2\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                    "GET /test HTTP/1.1\r\n\r\n",
                    "/app", MTLS_ROUTE_PREFIX | MTLS_ROUTE_BODY);
    r = mtls_http_conn_run(&l.c);
    cr_assert_eq(r, MTLS_HTTP_WAIT, "the body was paused: %d", r);
    cr_assert_str_eq(s->headers, "Host=a;X-Empty=;X-Two=2;Transfer-Encoding=chunked;");
    cr_assert_eq(s->body_len, 3);
    for (int i = 0; i < 10 && !s->body_end; i++) {
        mtls_http_body_resume(s->later);
        r = mtls_http_conn_run(&l.c);
    }
    cr_assert(kicks > 0);
    cr_assert(s->body_end);
    cr_assert_eq(s->body_len, 5);
    cr_assert(memcmp(s->body, "abcde", 5) == 0);
    /* The pipelined GET waits for this answer. */
    cr_assert_eq(r, MTLS_HTTP_WAIT);
    cr_assert_eq(m->out_len, 0);
    cr_assert_eq(
        mtls_http_stream_start(s->later, 201, NULL, "X-A: 1\r\n", 8, MTLS_HTTP_LEN_UNKNOWN), 0);
    cr_assert_eq(mtls_http_stream_write(s->later, "hello", 5), 0);
    mtls_http_stream_end(s->later);
    for (int i = 0; i < 10 && r != MTLS_HTTP_WANT_READ; i++)
        r = mtls_http_conn_run(&l.c);
    m->out[m->out_len] = '\0';
    cr_assert(strncmp(m->out, "HTTP/1.1 201 Created\r\n", 22) == 0, "%s", m->out);
    cr_assert(strstr(m->out,
                     "X-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n") != NULL,
              "%s", m->out);
    cr_assert_eq(count(m->out, "HTTP/1.1 200 OK"), 1, "then the pipelined GET: %s", m->out);
    cr_assert_not(s->aborted);
    mtls_http_conn_release(&l.c);
    mtls_http_routes_release(&l.t);
}

Test(http, a_closed_connection_aborts_its_handler)
{
    static struct late_conn l;

    late_conn_start(&l, "GET /app HTTP/1.1\r\n\r\n", "/", MTLS_ROUTE_PREFIX);
    cr_assert_eq(mtls_http_conn_run(&l.c), MTLS_HTTP_WAIT);
    mtls_http_conn_release(&l.c);
    cr_assert(l.s.aborted);
    mtls_http_routes_release(&l.t);
}

/*
 * A connection that waits for its next request holds this struct (inside
 * the server's own, per connection): the target, User-Agent and Referer
 * are kept per request, not in it (docs/PERFORMANCE.md, idle memory). It
 * was 2,112 bytes with them inside.
 */
Test(http, an_idle_connection_holds_no_request_copies)
{
    cr_assert_leq(sizeof(mtls_http_conn), 640, "%zu bytes", sizeof(mtls_http_conn));
}

Test(http, a_late_answer_logs_its_request_after_the_read_buffer_was_reused)
{
    static struct late_conn l;
    static char lent[16384];
    struct seen *const s = &l.s;
    const char *line;
    int r;

    late_conn_start(&l,
                    "GET /app/x?q=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: ua/1\r\n"
                    "Referer: https://r/\r\n\r\n",
                    "/app", MTLS_ROUTE_PREFIX);
    l.cfg.read_buf = lent;
    l.cfg.read_buf_len = sizeof(lent);
    l.cfg.access_log = mem_log;
    l.cfg.access_log_ctx = &l.m;
    r = mtls_http_conn_run(&l.c);
    cr_assert_eq(r, MTLS_HTTP_WAIT, "%d", r);
    cr_assert_not_null(s->later);
    cr_assert_not_null(l.c.kept, "a request in flight keeps copies");
    cr_assert_eq(l.c.url_at, l.c.kept);
    /* Another connection of the worker reads into the same buffer meanwhile. */
    memset(lent, 'Z', sizeof(lent));
    cr_assert_eq(s->later->target_len, 10);
    cr_assert(memcmp(s->later->target, "/app/x?q=1", 10) == 0);
    cr_assert_eq(s->later->path_len, 6);
    cr_assert_eq(mtls_http_respond(s->later, 200, "text/plain", "ok", 2, NULL), 0);
    for (int i = 0; i < 10 && r != MTLS_HTTP_WANT_READ; i++)
        r = mtls_http_conn_run(&l.c);
    line = strstr(l.m.log, "] \"GET ");
    cr_assert_not_null(line, "%s", l.m.log);
    cr_assert_str_eq(line, "] \"GET /app/x?q=1 HTTP/1.1\" 200 2 \"https://r/\" \"ua/1\"\n");
    /* Waiting for the next request, the connection holds none of them. */
    cr_assert_null(l.c.kept);
    cr_assert_null(l.c.url_at);
    cr_assert_null(l.c.user_agent);
    mtls_http_conn_release(&l.c);
    mtls_http_routes_release(&l.t);
}

Test(http, long_fields_are_cut_in_the_log_and_json_keeps_them)
{
    static char req[4096];
    static char ua[400];
    struct mem m;

    memset(ua, 'u', 300);
    ua[300] = '\0';
    snprintf(req, sizeof(req),
             "GET /test HTTP/1.1\r\nUser-Agent: %s\r\nReferer: r\r\n\r\n"
             "GET /test?second HTTP/1.1\r\n\r\n",
             ua);
    cfg.log_format = MTLS_LOG_JSON;
    feed(&m, req, 1 << 20, NULL);
    /* User-Agent cut to 256 bytes; nothing of the first request in the second line. */
    ua[256] = '\0';
    cr_assert(strstr(m.log, ua) != NULL, "%s", m.log);
    cr_assert(strstr(m.log, "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu\",") == NULL, "%s",
              m.log);
    cr_assert(strstr(m.log, "\"path\":\"/test?second\",\"protocol\":\"HTTP/1.1\",\"status\":200,"
                            "\"bytes\":24,\"referer\":null,\"user_agent\":null}") != NULL,
              "%s", m.log);
    cr_assert_eq(count(m.log, "\"referer\":\"r\""), 1, "%s", m.log);
}

Test(http, a_refused_target_is_logged_cut_to_1024_bytes)
{
    static char big[12000], want[1200];
    struct mem m;

    strcpy(big, "GET /");
    memset(big + 5, 'a', 9000);
    strcpy(big + 9005, " HTTP/1.1\r\n\r\n");
    feed(&m, big, 1 << 20, NULL);
    cr_assert(strncmp(m.out, "HTTP/1.1 414 ", 13) == 0, "%s", m.out);
    /* Kept from the buffer being parsed: its head never completed. */
    strcpy(want, "\"GET /");
    memset(want + 6, 'a', 1023);
    strcpy(want + 6 + 1023, "...\" 414 ");
    cr_assert(strstr(m.log, want) != NULL, "%s", m.log);
}

/* A connection of a worker that lends its read and write buffers. */
static char lent_in[16384], lent_out[16384];

static void lend_buffers(mtls_http_config *c)
{
    c->read_buf = lent_in;
    c->read_buf_len = sizeof(lent_in);
    c->write_buf = lent_out;
    c->write_buf_len = sizeof(lent_out);
}

Test(http, a_connection_between_requests_holds_no_buffers)
{
    static struct mem m;
    const char *req = "GET /test HTTP/1.1\r\nHost: a\r\n\r\n";
    mtls_http_io io = {mem_read, mem_write, NULL, &m, NULL};
    mtls_http_config lc = cfg;
    mtls_http_conn c;

    lend_buffers(&lc);
    memset(&m, 0, sizeof(m));
    m.in = req;
    m.len = strlen(req);
    m.avail = 10; /* the head comes in two pieces: the first waits in a buffer of c's own */
    cr_assert_eq(mtls_http_conn_init(&c, &lc, &peer, &io), 0);
    cr_assert_eq(mtls_http_conn_run(&c), MTLS_HTTP_WANT_READ);
    cr_assert_not_null(c.in);
    cr_assert_eq(m.out_len, 0);
    m.avail = m.len;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(mtls_http_conn_run(&c), MTLS_HTTP_WANT_READ);
    m.out[m.out_len] = '\0';
    cr_assert(strncmp(m.out, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", m.out);
    cr_assert_eq(c.requests, 1);
    /* Waiting for the next request: neither an input nor an output buffer. */
    cr_assert_null(c.in);
    cr_assert_null(c.out);
    cr_assert_eq(c.in_cap + c.out_cap, 0);
    mtls_http_conn_release(&c);
}

Test(http, output_the_socket_does_not_take_leaves_the_lent_buffer)
{
    static struct mem m;
    const char *req = "GET /test HTTP/1.1\r\nHost: a\r\n\r\n";
    mtls_http_io io = {mem_read, mem_write, NULL, &m, NULL};
    mtls_http_config lc = cfg;
    mtls_http_conn c;

    lend_buffers(&lc);
    memset(&m, 0, sizeof(m));
    m.in = req;
    m.len = m.avail = strlen(req);
    m.block_writes = 1;
    cr_assert_eq(mtls_http_conn_init(&c, &lc, &peer, &io), 0);
    cr_assert_eq(mtls_http_conn_run(&c), MTLS_HTTP_WANT_WRITE);
    cr_assert_not_null(c.out);
    cr_assert(c.out != lent_out, "the response waits in c's own buffer");
    /* Another connection of the worker runs meanwhile. */
    memset(lent_out, 'Z', sizeof(lent_out));
    for (int i = 0; i < 3; i++)
        mtls_http_conn_run(&c);
    m.out[m.out_len] = '\0';
    cr_assert(strncmp(m.out, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", m.out);
    cr_assert(strstr(m.out, "\r\n\r\n{\"message\":\"Hello mtls\"}") != NULL, "%s", m.out);
    cr_assert_null(strchr(m.out, 'Z'));
    mtls_http_conn_release(&c);
}

Test(http, pipelining_past_the_lent_output_buffer)
{
    static char req[40000];
    static struct mem m;
    const char *one = "GET /test HTTP/1.1\r\nHost: a\r\n\r\n";

    req[0] = '\0';
    for (int i = 0; i < 1000; i++)
        strcat(req, one);
    lend_buffers(&cfg);
    /* ~150 KB of answers: past the lent 16 KB the output moves to c's own buffer. */
    feed(&m, req, 1 << 20, NULL);
    cr_assert_eq(count(m.out, "HTTP/1.1 200 OK"), 1000);
    feed(&m, req, 777, NULL);
    cr_assert_eq(count(m.out, "HTTP/1.1 200 OK"), 1000);
    cfg.read_buf = cfg.write_buf = NULL;
}
