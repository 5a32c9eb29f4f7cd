/*
 * libFuzzer target for the request path of src/http: the bytes after a
 * 4-byte header are a client's stream, delivered in reads whose sizes come
 * from the header (so every way of splitting requests gets tried), with
 * writes that sometimes block. Both log formats and the 403 path are used.
 * With bit 8 of the header a handler like the proxy's takes every other
 * path: it pauses the body at random, answers at once or later, whole or
 * streamed (Content-Length, chunked, none), sometimes before the body is in.
 * Every response must start with a status line, and the connection must end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_io.h"
#include "http/http_conn.h"
#include "mtls/app.h"
#include "mtls/http.h"

struct stream {
    struct fuzz_io io;
    size_t out_total;
};

static uint32_t next(struct stream *s)
{
    return fuzz_io_next(&s->io);
}

static long fz_read(void *ctx, char *buf, size_t len)
{
    return fuzz_io_read(&((struct stream *)ctx)->io, buf, len, 64);
}

static long fz_write(void *ctx, const char *buf, size_t len)
{
    struct stream *s = ctx;

    if (fuzz_io_write_blocks(&s->io))
        return MTLS_IO_WANT_WRITE;
    if (s->out_total == 0 && (len < 9 || memcmp(buf, "HTTP/1.1 ", 9) != 0))
        abort(); /* every answer starts with a status line */
    s->out_total += len;
    return (long)len;
}

static void fz_log(void *ctx, const char *line, size_t len)
{
    (void)ctx;
    if (len == 0 || line[len - 1] != '\n')
        abort();
}

static const char *fz_whoami(void *ctx, size_t *len)
{
    (void)ctx;
    *len = 2;
    return "{}";
}

static const mtls_identity *fz_identity(void *ctx)
{
    static const mtls_identity id = {.subject = "CN=fuzz", .json = "{}"};

    (void)ctx;
    return &id;
}

/* A handler that answers later, driven by the harness between runs. */
struct late {
    struct stream *s;
    mtls_http_request *req; /* the request it owes an answer, or NULL */
    int body_end, started;
    int64_t left; /* streamed body bytes still to write (Content-Length) */
};

static int late_body(void *ctx, const char *data, size_t len)
{
    struct late *l = ctx;

    (void)data;
    (void)len;
    return next(l->s) % 3 == 0 ? MTLS_HTTP_BODY_PAUSE : MTLS_HTTP_BODY_MORE;
}

static void late_body_end(void *ctx)
{
    ((struct late *)ctx)->body_end = 1;
}

static void late_abort(void *ctx)
{
    ((struct late *)ctx)->req = NULL;
}

static int late_handle(void *ctx, mtls_http_request *req)
{
    struct late *l = ctx;

    if (next(l->s) % 4 == 0)
        return mtls_http_respond(req, 200, "text/plain", "now", 3, NULL);
    if (next(l->s) % 16 == 0)
        return -1; /* a failing handler: 500 */
    l->req = req;
    l->body_end = 0;
    l->started = 0;
    req->on_body = late_body;
    req->on_body_end = late_body_end;
    req->on_abort = late_abort;
    req->handler_ctx = l;
    return 0;
}

/* One step of the late answer: resume the body, start, write, end or answer whole. */
static void late_step(struct late *l)
{
    mtls_http_request *req = l->req;
    uint32_t pick = next(l->s) % 8;

    if (req == NULL)
        return;
    if (pick == 0) {
        mtls_http_body_resume(req);
    } else if (!l->started && (l->body_end || pick == 1)) {
        if (pick % 2 == 0) {
            l->req = NULL;
            (void)mtls_http_respond(req, 502, NULL, "{}", 2, NULL);
            return;
        }
        l->left = pick == 3 ? MTLS_HTTP_LEN_UNKNOWN : pick == 5 ? MTLS_HTTP_LEN_NONE : 10;
        (void)mtls_http_stream_start(req, 201, NULL, "X-A: 1\r\n", 8, l->left);
        l->started = 1;
    } else if (l->started && l->left != 0 && pick < 5 && l->left != MTLS_HTTP_LEN_NONE) {
        (void)mtls_http_stream_write(req, "01234", 5);
        if (l->left > 0)
            l->left -= 5;
    } else if (l->started) {
        l->req = NULL;
        if (pick == 7)
            mtls_http_stream_abort(req);
        else
            mtls_http_stream_end(req);
    } else {
        mtls_http_body_resume(req);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct stream s;
    mtls_http_config cfg;
    mtls_http_peer peer = {.addr = "127.0.0.1",
                           .user = "CN=fuzz, O=\"x\"",
                           .serial = "01",
                           .whoami = fz_whoami,
                           .identity = fz_identity};
    mtls_http_io io = {fz_read, fz_write, NULL, &s, NULL};
    mtls_http_conn c;
    mtls_http_routes routes = {0};
    struct late late = {0};
    mtls_err err;
    int r = MTLS_HTTP_WANT_READ;

    if (size < 4)
        return 0;
    memset(&s, 0, sizeof(s));
    fuzz_io_init(&s.io, data, size);
    mtls_http_config_init(&cfg);
    cfg.max_url = 256 + data[3];
    cfg.max_header_bytes = 512 + data[3] * 8;
    cfg.max_headers = 8 + data[3] % 16;
    cfg.max_body = data[3];
    cfg.log_format = (data[3] & 1) ? MTLS_LOG_JSON : MTLS_LOG_TEXT;
    cfg.access_log = fz_log;
    if (data[3] & 2)
        peer.denied = "no client certificate was sent";
    if (data[3] & 4) {
        static char lent[512];     /* small, so that leftovers move often */
        static char lent_out[256]; /* and output moves to the connection's own buffer */

        cfg.read_buf = lent;
        cfg.read_buf_len = sizeof(lent);
        cfg.write_buf = lent_out;
        cfg.write_buf_len = sizeof(lent_out);
    }
    late.s = &s;
    if (data[3] & 8) {
        if (mtls_http_routes_add_builtin(&routes, &err) != 0 ||
            mtls_http_routes_add(&routes, "/",
                                 MTLS_ROUTE_PREFIX | MTLS_ROUTE_BODY | MTLS_ROUTE_UNVERIFIED, 0,
                                 late_handle, &late, &err) != 0) {
            mtls_http_routes_release(&routes);
            return 0;
        }
        cfg.routes = &routes;
    }
    if (mtls_http_conn_init(&c, &cfg, &peer, &io) != 0) {
        mtls_http_routes_release(&routes);
        return 0;
    }
    /* Each run() makes progress or waits; the stream is finite, so this ends. */
    for (int rounds = 0; rounds < 100000; rounds++) {
        r = mtls_http_conn_run(&c);
        if (r == MTLS_HTTP_DONE || r == MTLS_HTTP_ABORT)
            break;
        late_step(&late);
        if (rounds % 64 == 63 && mtls_http_conn_busy(&c) && s.io.off >= s.io.len)
            mtls_http_conn_timeout(&c);
    }
    if (r != MTLS_HTTP_DONE && r != MTLS_HTTP_ABORT)
        abort(); /* a connection that never ends */
    mtls_http_conn_release(&c);
    if (late.req != NULL)
        abort(); /* release told the handler to let go */
    mtls_http_routes_release(&routes);
    return 0;
}
