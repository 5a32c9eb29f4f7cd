/*
 * libFuzzer target for src/http/h2.c: the bytes after a 4-byte header are a
 * client's HTTP/2 frames (the connection preface is sent first by the
 * target), delivered in reads of random sizes, with writes that sometimes
 * block. Requests go to the built-in routes and to a handler that answers
 * later the way the proxy does: it pauses the body at random and answers
 * whole, streamed (with or without a length), or cuts the stream short, at
 * random moments between runs. The connection must end, and releasing it
 * must leave no handler holding a request.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_io.h"
#include "http/http_conn.h"
#include "mtls/http.h"

#define MAX_LATE 32

struct stream {
    struct fuzz_io io;
    int preface_sent;
};

struct late {
    mtls_http_request *req;
    int started;
    int live;
};

static struct late lates[MAX_LATE];
static struct stream *cur;

static uint32_t next(struct stream *s)
{
    return fuzz_io_next(&s->io);
}

static long fz_read(void *ctx, char *buf, size_t len)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    struct stream *s = ctx;

    if (!s->preface_sent) {
        s->preface_sent = 1;
        memcpy(buf, preface, sizeof(preface) - 1); /* len is a whole buffer */
        return (long)(sizeof(preface) - 1);
    }
    return fuzz_io_read(&s->io, buf, len, 256);
}

static long fz_write(void *ctx, const char *buf, size_t len)
{
    struct stream *s = ctx;

    (void)buf;
    if (fuzz_io_write_blocks(&s->io))
        return MTLS_IO_WANT_WRITE;
    return (long)len;
}

static void late_abort(void *ctx)
{
    struct late *l = ctx;

    l->live = 0;
    l->req = NULL;
}

static int late_body(void *ctx, const char *data, size_t len)
{
    (void)ctx, (void)data, (void)len;
    return next(cur) % 3 == 0 ? MTLS_HTTP_BODY_PAUSE : MTLS_HTTP_BODY_MORE;
}

static int late_handler(void *ctx, mtls_http_request *req)
{
    (void)ctx;
    if (next(cur) % 4 == 0)
        return mtls_http_respond(req, 200, NULL, "{}", 2, "X-A: 1\r\nConnection: x\r\n");
    if (next(cur) % 8 == 0)
        return -1; /* a 500 */
    for (int i = 0; i < MAX_LATE; i++) {
        if (!lates[i].live) {
            lates[i] = (struct late){req, 0, 1};
            req->on_body = late_body;
            req->on_abort = late_abort;
            req->handler_ctx = &lates[i];
            return 0;
        }
    }
    return mtls_http_respond_error(req, 503, "busy", NULL);
}

/* One step of one late answer, chosen at random. */
static void late_step(struct stream *s)
{
    struct late *l = &lates[next(s) % MAX_LATE];
    mtls_http_request *req = l->req;

    if (!l->live)
        return;
    switch (next(s) % 6) {
    case 0:
        mtls_http_body_resume(req);
        break;
    case 1:
        if (!l->started) {
            l->live = 0;
            (void)mtls_http_respond(req, 201, "text/plain", "late", 4, NULL);
        }
        break;
    case 2:
        if (!l->started) {
            l->started = 1;
            (void)mtls_http_stream_start(req, 200, NULL, "X-B: 2\r\n", 8,
                                         next(s) % 2 ? MTLS_HTTP_LEN_UNKNOWN : 10);
        }
        break;
    case 3:
        if (l->started)
            (void)mtls_http_stream_write(req, "0123456789", 1 + next(s) % 10);
        break;
    case 4:
        if (l->started) {
            l->live = 0;
            mtls_http_stream_end(req);
        }
        break;
    default:
        if (next(s) % 4 == 0) {
            l->live = 0;
            mtls_http_stream_abort(req);
        }
        break;
    }
}

static void sink(void *ctx, const char *line, size_t len)
{
    (void)ctx;
    if (len == 0 || line[len - 1] != '\n')
        abort(); /* every access-log line is whole */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const mtls_http_peer peer = {.addr = "127.0.0.1", .user = "CN=fuzz", .serial = "01"};
    struct stream s = {0};
    mtls_http_routes t = {0};
    mtls_http_config cfg;
    mtls_http_io io = {fz_read, fz_write, NULL, &s, NULL};
    mtls_http_conn c;
    mtls_err err;
    int r = MTLS_HTTP_WANT_READ;

    if (size < 4)
        return 0;
    memset(lates, 0, sizeof(lates));
    fuzz_io_init(&s.io, data, size);
    cur = &s;
    mtls_http_config_init(&cfg);
    cfg.access_log = sink;
    cfg.log_format = data[3] & 1 ? MTLS_LOG_JSON : MTLS_LOG_TEXT;
    cfg.max_body = 4096;
    if (mtls_http_routes_add_builtin(&t, &err) != 0 ||
        mtls_http_routes_add(&t, "/", MTLS_ROUTE_PREFIX | (data[3] & 2 ? MTLS_ROUTE_BODY : 0), 0,
                             late_handler, NULL, &err) != 0)
        abort();
    cfg.routes = &t;
    if (mtls_http_conn_init(&c, &cfg, &peer, &io) != 0 || mtls_http_conn_use_h2(&c) != 0)
        abort();
    for (int i = 0; i < 100000; i++) {
        r = mtls_http_conn_run(&c);
        if (r == MTLS_HTTP_DONE || r == MTLS_HTTP_ABORT)
            break;
        late_step(&s);
        if (i == 1000 && data[3] & 4)
            mtls_http_conn_drain(&c);
    }
    if (r != MTLS_HTTP_DONE && r != MTLS_HTTP_ABORT) {
        /* Every byte was read and every answer given: only a timeout is left. */
        mtls_http_conn_timeout(&c);
        (void)mtls_http_conn_run(&c);
    }
    mtls_http_conn_release(&c);
    for (int i = 0; i < MAX_LATE; i++)
        if (lates[i].live)
            abort(); /* releasing the connection told every handler */
    mtls_http_routes_release(&t);
    return 0;
}
