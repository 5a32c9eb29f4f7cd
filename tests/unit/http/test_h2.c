/* src/http/h2.c: HTTP/2 streams through the same routes and handlers, over memory, with an
 * nghttp2 client session on the other end. */
#include <criterion/criterion.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_conn.h"
#include "mtls/http.h"

/* Both directions over memory. */
struct pipe {
    char in[1 << 16]; /* client -> server */
    size_t in_len, in_off;
    char out[1 << 18]; /* server -> client */
    size_t out_len;
    char log[8192];
    size_t log_len;
    int kicks;
};

static long p_read(void *ctx, char *buf, size_t len)
{
    struct pipe *p = ctx;
    size_t n = p->in_len - p->in_off;

    if (n == 0)
        return MTLS_IO_WANT_READ;
    if (n > len)
        n = len;
    memcpy(buf, p->in + p->in_off, n);
    p->in_off += n;
    return (long)n;
}

static long p_write(void *ctx, const char *buf, size_t len)
{
    struct pipe *p = ctx;

    cr_assert(p->out_len + len <= sizeof(p->out));
    memcpy(p->out + p->out_len, buf, len);
    p->out_len += len;
    return (long)len;
}

static void p_kick(void *ctx)
{
    ((struct pipe *)ctx)->kicks++;
}

static void p_log(void *ctx, const char *line, size_t len)
{
    struct pipe *p = ctx;

    cr_assert(p->log_len + len < sizeof(p->log));
    memcpy(p->log + p->log_len, line, len);
    p->log_len += len;
    p->log[p->log_len] = '\0';
}

/* What the client saw on a stream. */
struct answer {
    int status;
    char headers[512];
    char body[4096];
    size_t body_len;
    int closed;
    uint32_t error;
};

static struct answer answers[16]; /* by stream id / 2 */

static struct answer *answer_of(int32_t id)
{
    cr_assert(id > 0 && id / 2 < 16);
    return &answers[id / 2];
}

static int c_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                    const uint8_t *value, size_t vl, uint8_t flags, void *u)
{
    struct answer *a = answer_of(f->hd.stream_id);

    (void)s, (void)flags, (void)u;
    if (nl == 7 && memcmp(name, ":status", 7) == 0)
        a->status = atoi((const char *)value);
    else
        snprintf(a->headers + strlen(a->headers), sizeof(a->headers) - strlen(a->headers),
                 "%.*s=%.*s;", (int)nl, name, (int)vl, value);
    return 0;
}

static int c_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                  void *u)
{
    struct answer *a = answer_of(id);

    (void)s, (void)flags, (void)u;
    cr_assert(a->body_len + len <= sizeof(a->body));
    memcpy(a->body + a->body_len, data, len);
    a->body_len += len;
    return 0;
}

static int c_close(nghttp2_session *s, int32_t id, uint32_t error, void *u)
{
    (void)s, (void)u;
    answer_of(id)->closed = 1;
    answer_of(id)->error = error;
    return 0;
}

/* A handler that answers later, and what it saw. */
struct late {
    mtls_http_request *req;
    char headers[256];
    int aborted;
};

static void late_abort(void *ctx)
{
    ((struct late *)ctx)->aborted = 1;
}

static int late_handler(void *ctx, mtls_http_request *req)
{
    struct late *l = ctx;

    for (size_t i = 0; i < req->n_headers; i++)
        snprintf(l->headers + strlen(l->headers), sizeof(l->headers) - strlen(l->headers),
                 "%.*s=%.*s;", (int)req->headers[i].name_len, req->headers[i].name,
                 (int)req->headers[i].value_len, req->headers[i].value);
    l->req = req;
    req->on_abort = late_abort;
    req->handler_ctx = l;
    return 0;
}

struct h2_fixture {
    struct pipe p;
    struct late late;
    mtls_http_routes t;
    mtls_http_config cfg;
    mtls_http_conn c;
    nghttp2_session *client;
};

static const mtls_http_peer peer = {.addr = "127.0.0.1", .user = "CN=localclient", .serial = "0A"};

static void start(struct h2_fixture *f)
{
    mtls_http_io io = {p_read, p_write, NULL, &f->p, p_kick};
    nghttp2_session_callbacks *cb;
    mtls_err err;

    memset(f, 0, sizeof(*f));
    memset(answers, 0, sizeof(answers));
    cr_assert_eq(mtls_http_routes_add_builtin(&f->t, &err), 0);
    cr_assert_eq(mtls_http_routes_add(&f->t, "/late", 0, 0, late_handler, &f->late, &err), 0);
    mtls_http_config_init(&f->cfg);
    f->cfg.routes = &f->t;
    f->cfg.access_log = p_log;
    f->cfg.access_log_ctx = &f->p;
    cr_assert_eq(mtls_http_conn_init(&f->c, &f->cfg, &peer, &io), 0);
    cr_assert_eq(mtls_http_conn_use_h2(&f->c), 0);
    cr_assert_eq(nghttp2_session_callbacks_new(&cb), 0);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
    cr_assert_eq(nghttp2_session_client_new(&f->client, cb, f), 0);
    nghttp2_session_callbacks_del(cb);
    cr_assert_eq(nghttp2_submit_settings(f->client, NGHTTP2_FLAG_NONE, NULL, 0), 0);
}

static void finish(struct h2_fixture *f)
{
    mtls_http_conn_release(&f->c);
    nghttp2_session_del(f->client);
    mtls_http_routes_release(&f->t);
}

/* Client frames to the server, one server run, server frames to the client. */
static int exchange(struct h2_fixture *f)
{
    const uint8_t *data;
    ssize_t n;
    int r;

    while ((n = nghttp2_session_mem_send(f->client, &data)) > 0) {
        cr_assert(f->p.in_len + (size_t)n <= sizeof(f->p.in));
        memcpy(f->p.in + f->p.in_len, data, (size_t)n);
        f->p.in_len += (size_t)n;
    }
    r = mtls_http_conn_run(&f->c);
    cr_assert_eq(nghttp2_session_mem_recv(f->client, (const uint8_t *)f->p.out, f->p.out_len),
                 (ssize_t)f->p.out_len);
    f->p.out_len = 0;
    return r;
}

static int32_t get(struct h2_fixture *f, const char *path)
{
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
        {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0},
        {(uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0},
        {(uint8_t *)"x-two", (uint8_t *)"2", 5, 1, 0},
    };
    int32_t id = nghttp2_submit_request(f->client, NULL, nv, 5, NULL, NULL);

    cr_assert(id > 0);
    return id;
}

Test(h2, streams_reach_the_routes_and_a_late_answer_streams_back)
{
    static struct h2_fixture f;
    int32_t test, late, none;

    start(&f);
    test = get(&f, "/test");
    late = get(&f, "/late");
    none = get(&f, "/none");
    for (int i = 0; i < 4; i++)
        cr_assert_eq(exchange(&f), MTLS_HTTP_WANT_READ);
    cr_assert_eq(answer_of(test)->status, 200);
    cr_assert_eq(answer_of(test)->body_len, 24);
    cr_assert(memcmp(answer_of(test)->body, "{\"message\":\"Hello mtls\"}", 24) == 0);
    cr_assert(strstr(answer_of(test)->headers, "content-length=24;") != NULL);
    cr_assert_eq(answer_of(none)->status, 404);
    /* The handler saw regular headers, :authority as host; it has not answered yet. */
    cr_assert_str_eq(f.late.headers, "x-two=2;host=localhost;");
    cr_assert_not_null(f.late.req);
    cr_assert_eq(answer_of(late)->status, 0);
    cr_assert(mtls_http_conn_busy(&f.c));
    f.p.kicks = 0;
    cr_assert_eq(mtls_http_stream_start(f.late.req, 201, NULL, "X-A: 1\r\nConnection: x\r\n", 24,
                                        MTLS_HTTP_LEN_UNKNOWN),
                 0);
    cr_assert_eq(mtls_http_stream_write(f.late.req, "hel", 3), 0);
    cr_assert(f.p.kicks > 0, "a late answer kicks the connection");
    cr_assert_eq(exchange(&f), MTLS_HTTP_WANT_READ);
    cr_assert_eq(answer_of(late)->status, 201);
    cr_assert(strstr(answer_of(late)->headers, "x-a=1;") != NULL);
    cr_assert_null(strstr(answer_of(late)->headers, "connection"));
    cr_assert_eq(answer_of(late)->closed, 0);
    cr_assert_eq(mtls_http_stream_write(f.late.req, "lo", 2), 0);
    mtls_http_stream_end(f.late.req);
    cr_assert_eq(exchange(&f), MTLS_HTTP_WANT_READ);
    cr_assert(answer_of(late)->closed);
    cr_assert_eq(answer_of(late)->body_len, 5);
    cr_assert(memcmp(answer_of(late)->body, "hello", 5) == 0);
    cr_assert_not(f.late.aborted);
    cr_assert(strstr(f.p.log, "\"GET /test HTTP/2.0\" 200 24") != NULL, "%s", f.p.log);
    cr_assert(strstr(f.p.log, "\"GET /none HTTP/2.0\" 404") != NULL, "%s", f.p.log);
    cr_assert(strstr(f.p.log, "\"GET /late HTTP/2.0\" 201 5") != NULL, "%s", f.p.log);
    cr_assert(strstr(f.p.log, "CN=localclient") != NULL);
    cr_assert_eq(f.c.requests, 3);
    finish(&f);
}

Test(h2, a_reset_stream_aborts_its_handler_and_is_logged_499)
{
    static struct h2_fixture f;
    int32_t late;

    start(&f);
    late = get(&f, "/late");
    cr_assert_eq(exchange(&f), MTLS_HTTP_WANT_READ);
    cr_assert_not_null(f.late.req);
    cr_assert_eq(nghttp2_submit_rst_stream(f.client, NGHTTP2_FLAG_NONE, late, NGHTTP2_CANCEL), 0);
    cr_assert_eq(exchange(&f), MTLS_HTTP_WANT_READ);
    cr_assert(f.late.aborted);
    cr_assert(strstr(f.p.log, "\"GET /late HTTP/2.0\" 499") != NULL, "%s", f.p.log);
    cr_assert_not(mtls_http_conn_busy(&f.c));
    finish(&f);
}

Test(h2, drain_sends_goaway_and_finishes_open_streams)
{
    static struct h2_fixture f;
    int32_t late;

    start(&f);
    late = get(&f, "/late");
    cr_assert_eq(exchange(&f), MTLS_HTTP_WANT_READ);
    mtls_http_conn_drain(&f.c);
    cr_assert_eq(exchange(&f), MTLS_HTTP_WANT_READ, "the open stream is still answered");
    cr_assert_eq(mtls_http_respond(f.late.req, 200, NULL, "{}", 2, NULL), 0);
    cr_assert_eq(exchange(&f), MTLS_HTTP_DONE);
    cr_assert_eq(answer_of(late)->status, 200);
    cr_assert(answer_of(late)->closed);
    finish(&f);
}

Test(h2, a_late_answer_logs_its_path_user_agent_and_referer)
{
    static struct h2_fixture f;
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0},
        {(uint8_t *)":path", (uint8_t *)"/late?q=1", 5, 9, 0},
        {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0},
        {(uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0},
        {(uint8_t *)"user-agent", (uint8_t *)"ua/2", 10, 4, 0},
        {(uint8_t *)"referer", (uint8_t *)"https://r/", 7, 10, 0},
    };
    int32_t id;

    start(&f);
    id = nghttp2_submit_request(f.client, NULL, nv, 6, NULL, NULL);
    cr_assert(id > 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(exchange(&f), MTLS_HTTP_WANT_READ);
    /* The header block is freed: the request goes on with the kept copy. */
    cr_assert_not_null(f.late.req);
    cr_assert_eq(f.late.req->target_len, 9);
    cr_assert(memcmp(f.late.req->target, "/late?q=1", 9) == 0);
    cr_assert_eq(f.late.req->path_len, 5);
    cr_assert_eq(mtls_http_respond(f.late.req, 200, "text/plain", "ok", 2, NULL), 0);
    cr_assert_eq(exchange(&f), MTLS_HTTP_WANT_READ);
    cr_assert_eq(answer_of(id)->status, 200);
    cr_assert(strstr(f.p.log, "\"GET /late?q=1 HTTP/2.0\" 200 2 \"https://r/\" \"ua/2\"\n") != NULL,
              "%s", f.p.log);
    finish(&f);
}
