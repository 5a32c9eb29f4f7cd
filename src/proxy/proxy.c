/*
 * The reverse proxy: a route handler that forwards a request to the
 * upstream over a pooled HTTP/1.1 connection and streams both bodies with
 * back-pressure (the client's body pauses while too much waits for the
 * upstream; the upstream is not read while too much waits for the client).
 *
 * One upstream connection serves one request at a time; it goes back to the
 * worker's pool when its response ended cleanly after the whole request was
 * sent, and is closed otherwise. Errors before the response head are 502
 * (refused, reset, closed, invalid) or 504 (timeout) with a reason; after
 * it, the client's connection is cut short. Each has a system-log line.
 *
 * The upstream's response is read with src/http's response parser
 * (mtls/http_response.h), the one probe and bench use.
 */
#include "proxy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "mtls/http_response.h"

/* Request bytes waiting for the upstream: above the high mark the client's body pauses. */
#define SEND_HIGH_WATER (256 * 1024)
#define SEND_LOW_WATER (64 * 1024)
#define READ_BUF 65536

enum up_state { UP_CONNECTING, UP_BUSY, UP_IDLE, UP_CLOSING };

struct upconn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_connect_t connect_req;
    uv_timer_t timer;
    mtls_proxy *px;
    struct upconn *prev, *next; /* every connection of the proxy */
    struct upconn *idle_next;   /* the pool */
    enum up_state state;
    int open_handles;
    mtls_http_response resp; /* the upstream's answer being read */

    /* The request it serves (NULL between requests or once the client left). */
    mtls_http_request *req;
    char what[160]; /* "GET /path" for log lines */
    uint64_t started;
    unsigned reused : 1;
    unsigned req_chunked : 1; /* the request body goes chunked */
    unsigned body_done : 1;   /* the whole request body is queued */
    unsigned body_paused : 1; /* the client's body waits for the upstream */
    unsigned head_request : 1;
    unsigned read_paused : 1; /* the client's output waits for the client */
    unsigned resp_started : 1;
    unsigned upgrade : 1; /* the client asked for an Upgrade (a WebSocket) */
    unsigned tunnel : 1;  /* after the upstream's 101: bytes both ways */
    size_t write_pending;
    mtls_strbuf replay; /* a pooled connection's bodiless request head, until answered */
};

struct mtls_proxy {
    uv_loop_t *loop;
    mtls_proxy_opts opts;
    struct upconn *all;
    struct upconn *idle;
    unsigned n_idle;
    int closing;
    char read_buf[READ_BUF];
};

struct wreq {
    uv_write_t w;
    struct upconn *up;
    size_t len;
    char data[];
};

static void up_close(struct upconn *up);
static void up_arm(struct upconn *up);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- logging and failures ---------------------------------------------------- */

static void px_log(struct upconn *up, const char *level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void px_log(struct upconn *up, const char *level, const char *event, const char *fmt, ...)
{
    mtls_proxy *px = up->px;
    const char *kv[] = {"request", up->what, "upstream", px->opts.upstream->shown, NULL};
    char msg[900];
    va_list ap;

    if (px->opts.log == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    px->opts.log(px->opts.log_ctx, up->req ? up->req->peer : NULL, level, event, msg, kv);
}

/* Takes the request away from up; the connection is then closed or pooled. */
static mtls_http_request *up_detach(struct upconn *up)
{
    mtls_http_request *req = up->req;

    if (req != NULL) {
        req->on_body = NULL;
        req->on_body_end = NULL;
        req->on_writable = NULL;
        req->on_abort = NULL;
        req->handler_ctx = NULL;
    }
    up->req = NULL;
    return req;
}

static int up_retry(struct upconn *up);

const char *mtls__upstream_cause_label(int cause)
{
    static const char *const labels[MTLS_UPSTREAM_CAUSES] = {
        "connect", "send", "closed", "reset", "invalid_response", "timeout", "internal"};

    return cause >= 0 && cause < MTLS_UPSTREAM_CAUSES ? labels[cause] : "internal";
}

/*
 * The upstream failed: 502 or 504 with the reason when nothing was answered
 * yet, else the client's response is cut short. Then the connection closes.
 */
static void up_fail(struct upconn *up, int status, int cause, const char *reason)
{
    mtls_http_request *req = up->req;

    /* A pooled connection the upstream closed just as it was reused: once more, on a new one. */
    if (req != NULL && status == 502 && up->replay.p != NULL && up_retry(up) == 0)
        return;
    if (req != NULL) {
        uint64_t ms = uv_now(up->px->loop) - up->started;

        if (up->px->opts.failed != NULL)
            up->px->opts.failed(up->px->opts.log_ctx, status, cause);

        px_log(up, "warn", status == 504 ? "upstream_timeout" : "upstream_error", "%s %s: %s",
               up->what,
               up->resp_started ? "cut short"
               : status == 504  ? "answered 504"
                                : "answered 502",
               reason);
        if (!up->resp_started)
            mtls_http_note_upstream(req, 0, ms);
        up_detach(up);
        if (up->resp_started)
            mtls_http_stream_abort(req);
        else
            mtls_http_respond_error(req, status, status == 504 ? "gateway timeout" : "bad gateway",
                                    reason);
    }
    up_close(up);
}

/* ---- handles ------------------------------------------------------------------- */

static void px_maybe_free(mtls_proxy *px)
{
    if (px->closing && px->all == NULL)
        free(px);
}

static void up_closed(uv_handle_t *h)
{
    struct upconn *up = h->data;
    mtls_proxy *px = up->px;

    if (--up->open_handles > 0)
        return;
    if (up->prev != NULL)
        up->prev->next = up->next;
    else
        px->all = up->next;
    if (up->next != NULL)
        up->next->prev = up->prev;
    mtls_http_response_release(&up->resp);
    mtls_strbuf_release(&up->replay);
    free(up);
    px_maybe_free(px);
}

static void pool_remove(struct upconn *up)
{
    mtls_proxy *px = up->px;

    for (struct upconn **pp = &px->idle; *pp != NULL; pp = &(*pp)->idle_next) {
        if (*pp == up) {
            *pp = up->idle_next;
            px->n_idle--;
            return;
        }
    }
}

static void up_close(struct upconn *up)
{
    if (up->state == UP_CLOSING)
        return;
    if (up->state == UP_IDLE)
        pool_remove(up);
    up_detach(up);
    up->state = UP_CLOSING;
    uv_close(&up->h.handle, up_closed);
    uv_close((uv_handle_t *)&up->timer, up_closed);
}

/* ---- writing the request ------------------------------------------------------ */

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct upconn *up = wr->up;

    up->write_pending -= wr->len;
    free(wr);
    if (up->state == UP_CLOSING)
        return;
    if (status < 0) {
        char why[640];

        snprintf(why, sizeof(why), "the upstream %s failed while the request was sent (%s)",
                 up->px->opts.upstream->shown, uv_strerror(status));
        up_fail(up, 502, MTLS_UPSTREAM_SEND, why);
        return;
    }
    if (up->body_paused && up->write_pending < SEND_LOW_WATER && up->req != NULL) {
        up->body_paused = 0;
        mtls_http_body_resume(up->req);
    }
    up_arm(up);
}

/*
 * Sends n pieces: what the socket takes at once is written directly, the
 * rest is copied and queued as one write. Returns 0 or -1 (the connection
 * failed).
 */
static int up_write(struct upconn *up, const uv_buf_t *pieces, int n)
{
    size_t len = 0, skip = 0;
    struct wreq *wr;
    uv_buf_t buf;
    int r;

    for (int i = 0; i < n; i++)
        len += pieces[i].len;
    if (up->write_pending == 0) {
        /*
         * Most writes go out at once: written here, they need no copy, and
         * none of the epoll_ctl that uv_write() costs even when it writes at
         * once. What is left (or an error) goes the uv_write() way.
         */
        int done = uv_try_write(&up->h.stream, pieces, (unsigned)n);

        if (done > 0 && (size_t)done == len)
            return 0;
        if (done > 0)
            skip = (size_t)done;
    }
    len -= skip;
    wr = malloc(sizeof(*wr) + len);
    if (wr == NULL) {
        up_fail(up, 502, MTLS_UPSTREAM_INTERNAL, "out of memory");
        return -1;
    }
    wr->up = up;
    wr->len = len;
    len = 0;
    for (int i = 0; i < n; i++) {
        size_t from = skip < pieces[i].len ? skip : pieces[i].len;

        skip -= from;
        memcpy(wr->data + len, pieces[i].base + from, pieces[i].len - from);
        len += pieces[i].len - from;
    }
    buf = uv_buf_init(wr->data, (unsigned)len);
    r = uv_write(&wr->w, &up->h.stream, &buf, 1, on_write);
    if (r != 0) {
        char why[640];

        free(wr);
        snprintf(why, sizeof(why), "cannot send to the upstream %s (%s)",
                 up->px->opts.upstream->shown, uv_strerror(r));
        up_fail(up, 502, MTLS_UPSTREAM_SEND, why);
        return -1;
    }
    up->write_pending += len;
    return 0;
}

/* The client's body, as it comes: passed on, chunked again when it came chunked. */
static int on_client_body(void *ctx, const char *data, size_t len)
{
    struct upconn *up = ctx;
    char size_line[24];
    uv_buf_t pieces[3];
    int n = 0;

    if (up->state == UP_CLOSING || len == 0)
        return MTLS_HTTP_BODY_MORE;
    if (up->req_chunked) {
        pieces[n++] = uv_buf_init(size_line,
                                  (unsigned)snprintf(size_line, sizeof(size_line), "%zx\r\n", len));
    }
    pieces[n++] = uv_buf_init((char *)data, (unsigned)len);
    if (up->req_chunked)
        pieces[n++] = uv_buf_init("\r\n", 2);
    if (up_write(up, pieces, n) != 0)
        return MTLS_HTTP_BODY_MORE; /* answered 502; the rest is discarded */
    up_arm(up);
    if (up->write_pending >= SEND_HIGH_WATER) {
        up->body_paused = 1;
        return MTLS_HTTP_BODY_PAUSE;
    }
    return MTLS_HTTP_BODY_MORE;
}

static void on_client_body_end(void *ctx)
{
    struct upconn *up = ctx;

    if (up->state == UP_CLOSING || up->body_done)
        return;
    up->body_done = 1;
    if (up->req_chunked) {
        uv_buf_t end = uv_buf_init("0\r\n\r\n", 5);

        if (up_write(up, &end, 1) != 0)
            return;
    }
    up_arm(up);
}

static void on_client_writable(void *ctx)
{
    struct upconn *up = ctx;

    if (up->read_paused && up->state == UP_BUSY) {
        up->read_paused = 0;
        if (uv_read_start(&up->h.stream, on_alloc, on_read) != 0) {
            up_fail(up, 502, MTLS_UPSTREAM_INTERNAL, "cannot read from the upstream");
            return;
        }
        up_arm(up);
    }
}

static void on_client_abort(void *ctx)
{
    struct upconn *up = ctx;

    /* The client is gone mid-request: this connection's state is unknown now. */
    up->req = NULL;
    up_close(up);
}

/* ---- the upstream's response (mtls_http_response) ---------------------------------- */

/* Whether name is in a comma-separated token list (Connection's). */
static int in_list(const char *list, const char *name, size_t name_len)
{
    const char *p = list;

    while (*p != '\0') {
        size_t n;

        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        n = strcspn(p, ", \t");
        if (n == name_len && n > 0 && strncasecmp(p, name, n) == 0)
            return 1;
        p += n;
    }
    return 0;
}

/* RFC 9110 7.6.1: meant for one connection only, never forwarded. */
static int hop_by_hop(const char *name, size_t len)
{
    static const char *const names[] = {"connection",        "proxy-connection", "keep-alive", "te",
                                        "transfer-encoding", "upgrade",          "trailer"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
            return 1;
    return 0;
}

/*
 * The upstream's head is complete: the client gets its status, reason and
 * headers, less the hop-by-hop ones, framed by us.
 */
static int resp_head(void *arg, const mtls_http_response *r)
{
    struct upconn *up = arg;
    mtls_http_request *req = up->req;
    const char *connection = mtls_http_response_header(r, "connection");
    char *fields = NULL;
    size_t fields_len = 0, cap = 64;
    int64_t length;

    if (connection == NULL)
        connection = "";
    if (r->status == 101 && up->upgrade)
        up->tunnel = 1;
    if (r->framing == MTLS_HTTP_FRAMING_NONE || up->tunnel)
        length = MTLS_HTTP_LEN_NONE;
    else if (r->framing == MTLS_HTTP_FRAMING_LENGTH)
        length = (int64_t)r->content_length;
    else
        length = MTLS_HTTP_LEN_UNKNOWN; /* chunked, or until the upstream closes */
    for (size_t i = 0; i < r->n_headers; i++)
        cap += r->headers[i].name_len + r->headers[i].value_len + 4;
    fields = malloc(cap);
    if (fields == NULL)
        return -1;
    for (size_t i = 0; i < r->n_headers; i++) {
        const mtls_http_header *h = &r->headers[i];

        /* Our framing replaces the upstream's, except where there is no body to frame
           (HEAD, 304): there its Content-Length describes the resource. */
        if (up->tunnel && strcasecmp(h->name, "upgrade") == 0)
            ; /* the 101's Upgrade is the client's answer */
        else if (hop_by_hop(h->name, h->name_len) || in_list(connection, h->name, h->name_len) ||
                 (strcasecmp(h->name, "content-length") == 0 && length != MTLS_HTTP_LEN_NONE))
            continue;
        memcpy(fields + fields_len, h->name, h->name_len);
        fields_len += h->name_len;
        memcpy(fields + fields_len, ": ", 2);
        fields_len += 2;
        memcpy(fields + fields_len, h->value, h->value_len);
        fields_len += h->value_len;
        memcpy(fields + fields_len, "\r\n", 2);
        fields_len += 2;
    }
    if (up->tunnel) {
        memcpy(fields + fields_len, "Connection: upgrade\r\n", 21);
        fields_len += 21;
    }
    up->resp_started = 1;
    mtls_strbuf_release(&up->replay); /* answered: never sent again */
    if (req != NULL) {
        mtls_http_note_upstream(req, r->status, uv_now(up->px->loop) - up->started);
        if (mtls_http_stream_start(req, r->status, r->reason[0] ? r->reason : NULL, fields,
                                   fields_len, length) != 0)
            up_detach(up);
    }
    free(fields);
    return 0;
}

static int resp_body(void *arg, const char *data, size_t len)
{
    struct upconn *up = arg;

    if (up->req != NULL && mtls_http_stream_write(up->req, data, len) == 1)
        up->read_paused = 1; /* the rest of this read is queued; then wait for the client */
    return 0;
}

static void up_release(struct upconn *up);

/* The whole response came: the client's ends too; the connection is pooled if it can be. */
static void resp_done(struct upconn *up, int extra_bytes)
{
    int reusable = up->resp.keep_alive && up->body_done && !extra_bytes;
    mtls_http_request *req = up_detach(up);

    if (req != NULL)
        mtls_http_stream_end(req);
    if (reusable)
        up_release(up);
    else
        up_close(up);
}

/* Bytes of a tunnel, from the upstream to the client. */
static void tunnel_out(struct upconn *up, const char *data, size_t len)
{
    if (len > 0 && up->req != NULL && mtls_http_stream_write(up->req, data, len) == 1) {
        up->read_paused = 1;
        uv_read_stop(&up->h.stream);
    }
}

/* ---- reading --------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct upconn *up = h->data;

    (void)suggested;
    /* Read callbacks run one at a time and consume the bytes at once. */
    *buf = uv_buf_init(up->px->read_buf, READ_BUF);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct upconn *up = s->data;
    const char *shown = up->px->opts.upstream->shown;
    char why[640];
    size_t used = 0;
    int rc;

    if (up->state == UP_CLOSING || nread == 0)
        return;
    if (up->state == UP_IDLE) {
        /* A pooled connection that closes (or talks out of turn) is dropped. */
        up_close(up);
        return;
    }
    if (up->tunnel) {
        mtls_http_request *req;

        if (nread > 0) {
            tunnel_out(up, buf->base, (size_t)nread);
            return;
        }
        /* The upstream ended the tunnel: so does the client's connection. */
        req = up_detach(up);
        if (req != NULL)
            mtls_http_stream_end(req);
        up_close(up);
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF && mtls_http_response_eof(&up->resp) == MTLS_HTTP_RESPONSE_DONE) {
            resp_done(up, 1); /* the end of the body was the close */
            return;
        }
        if (nread == UV_EOF)
            snprintf(why, sizeof(why), "the upstream %s closed the connection %s", shown,
                     up->resp_started ? "in the middle of its response" : "without answering");
        else
            snprintf(why, sizeof(why), "the upstream %s connection failed (%s)", shown,
                     uv_strerror((int)nread));
        up_fail(up, 502, nread == UV_EOF ? MTLS_UPSTREAM_CLOSED : MTLS_UPSTREAM_RESET, why);
        return;
    }
    rc = mtls_http_response_feed(&up->resp, buf->base, (size_t)nread, &used);
    if (up->state == UP_CLOSING)
        return;
    if (rc < 0) {
        snprintf(why, sizeof(why), "the upstream %s sent an invalid response (%s)", shown,
                 up->resp.error);
        up_fail(up, 502, MTLS_UPSTREAM_INVALID, why);
        return;
    }
    if (rc == MTLS_HTTP_RESPONSE_DONE && up->tunnel) {
        uv_timer_stop(&up->timer); /* a tunnel idles as long as its client allows */
        tunnel_out(up, buf->base + used, (size_t)nread - used);
        return;
    }
    if (rc == MTLS_HTTP_RESPONSE_DONE) {
        resp_done(up, used < (size_t)nread); /* nothing may follow an answer we did not ask for */
        return;
    }
    if (up->read_paused)
        uv_read_stop(&up->h.stream);
    up_arm(up);
}

/* ---- connections and the pool ---------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    struct upconn *up = t->data;
    const mtls_proxy_opts *o = &up->px->opts;
    char why[640];

    if (up->state == UP_CONNECTING)
        snprintf(why, sizeof(why), "the upstream %s did not accept the connection within %.1f s",
                 o->upstream->shown, o->connect_timeout_ms / 1000.0);
    else if (!up->resp_started)
        snprintf(why, sizeof(why), "the upstream %s did not answer within %.1f s",
                 o->upstream->shown, o->response_timeout_ms / 1000.0);
    else
        snprintf(why, sizeof(why), "the upstream %s stopped sending its response for %.1f s",
                 o->upstream->shown, o->response_timeout_ms / 1000.0);
    up_fail(up, 504, MTLS_UPSTREAM_TIMEOUT, why);
}

/* The response timer runs while we wait on the upstream, not on the client. */
static void up_arm(struct upconn *up)
{
    if (up->state != UP_BUSY)
        return;
    if (up->tunnel) {
        uv_timer_stop(&up->timer);
        return;
    }
    if (up->read_paused || (!up->body_done && up->write_pending == 0 && !up->resp_started))
        uv_timer_stop(&up->timer);
    else
        uv_timer_start(&up->timer, on_timer, up->px->opts.response_timeout_ms, 0);
}

static void up_release(struct upconn *up)
{
    mtls_proxy *px = up->px;

    uv_timer_stop(&up->timer);
    if (px->closing || px->n_idle >= px->opts.max_idle || up->read_paused) {
        up_close(up);
        return;
    }
    up->state = UP_IDLE;
    up->idle_next = px->idle;
    px->idle = up;
    px->n_idle++;
    /* Still read: a pooled connection that the upstream closes is noticed. */
}

static void on_connect(uv_connect_t *creq, int status)
{
    struct upconn *up = creq->data;
    char why[640];

    if (up->state == UP_CLOSING)
        return;
    if (status < 0) {
        snprintf(why, sizeof(why), "cannot connect to the upstream %s (%s)",
                 up->px->opts.upstream->shown, uv_strerror(status));
        up_fail(up, 502, MTLS_UPSTREAM_CONNECT, why);
        return;
    }
    up->state = UP_BUSY;
    if (uv_read_start(&up->h.stream, on_alloc, on_read) != 0) {
        up_fail(up, 502, MTLS_UPSTREAM_INTERNAL, "cannot read from the upstream");
        return;
    }
    up_arm(up);
}

static struct upconn *up_new(mtls_proxy *px)
{
    const mtls_upstream_addr *a = px->opts.upstream;
    struct upconn *up = calloc(1, sizeof(*up));
    int r;

    if (up == NULL)
        return NULL;
    up->px = px;
    if (a->is_unix)
        r = uv_pipe_init(px->loop, &up->h.pipe, 0);
    else
        r = uv_tcp_init(px->loop, &up->h.tcp);
    if (r != 0) {
        free(up);
        return NULL;
    }
    uv_timer_init(px->loop, &up->timer);
    up->h.handle.data = up;
    up->timer.data = up;
    up->open_handles = 2;
    up->state = UP_CONNECTING;
    up->next = px->all;
    if (px->all != NULL)
        px->all->prev = up;
    px->all = up;
    up->connect_req.data = up;
    if (a->is_unix) {
        uv_pipe_connect(&up->connect_req, &up->h.pipe, a->path, on_connect);
        r = 0;
    } else {
        (void)uv_tcp_nodelay(&up->h.tcp, 1);
        r = uv_tcp_connect(&up->connect_req, &up->h.tcp, (const struct sockaddr *)&a->ss,
                           on_connect);
    }
    if (r != 0) {
        up->state = UP_CLOSING;
        uv_close(&up->h.handle, up_closed);
        uv_close((uv_handle_t *)&up->timer, up_closed);
        return NULL;
    }
    uv_timer_start(&up->timer, on_timer, px->opts.connect_timeout_ms, 0);
    return up;
}

/* A pooled connection, or a new one. */
static struct upconn *up_take(mtls_proxy *px)
{
    struct upconn *up = px->idle;

    if (up != NULL) {
        px->idle = up->idle_next;
        px->n_idle--;
        up->state = UP_BUSY;
        up->reused = 1;
        return up;
    }
    return up_new(px);
}

int mtls__proxy_new(uv_loop_t *loop, const mtls_proxy_opts *opts, mtls_proxy **out)
{
    mtls_proxy *px = calloc(1, sizeof(*px));

    *out = NULL;
    if (px == NULL)
        return MTLS_E_NOMEM;
    px->loop = loop;
    px->opts = *opts;
    if (px->opts.max_idle == 0)
        px->opts.max_idle = 32;
    *out = px;
    return 0;
}

void mtls__proxy_close(mtls_proxy *px)
{
    struct upconn *up, *next;

    if (px == NULL)
        return;
    px->closing = 1;
    for (up = px->all; up != NULL; up = next) {
        next = up->next;
        up_close(up);
    }
    px_maybe_free(px);
}

/* ---- the handler -------------------------------------------------------------------- */

static int name_is(const mtls_http_header *hd, const char *name)
{
    return hd->name_len == strlen(name) && strncasecmp(hd->name, name, hd->name_len) == 0;
}

/* Whether a request header stays out of the upstream request (we add our own). */
static int drop_header(const mtls_http_header *hd, const char *const *tokens, size_t n_tokens)
{
    if (hop_by_hop(hd->name, hd->name_len) || name_is(hd, "content-length") ||
        name_is(hd, "expect") || name_is(hd, "x-forwarded-for") || name_is(hd, "forwarded") ||
        name_is(hd, "x-forwarded-proto") || mtls__identity_header_name(hd->name, hd->name_len))
        return 1;
    for (size_t i = 0; i < n_tokens; i++)
        if (strlen(tokens[i]) == hd->name_len &&
            strncasecmp(tokens[i], hd->name, hd->name_len) == 0)
            return 1;
    return 0;
}

/* Appends the values of every header named name, joined by ", ", then extra. */
static void joined(mtls_strbuf *h, const mtls_http_request *req, const char *name,
                   const char *extra)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (!name_is(&req->headers[i], name) || req->headers[i].value_len == 0)
            continue;
        mtls_strbuf_add(h, req->headers[i].value, req->headers[i].value_len);
        mtls_strbuf_str(h, ", ");
    }
    mtls_strbuf_str(h, extra);
}

/* The request line and headers for the upstream. */
static void build_head(mtls_proxy *px, const mtls_http_request *req, mtls_strbuf *h)
{
    const mtls_upstream_addr *a = px->opts.upstream;
    const char *addr = req->peer && req->peer->addr ? req->peer->addr : "unknown";
    char tokens_buf[512], forwarded[128];
    const char *tokens[16];
    size_t n_tokens = 0, id_len = 0;
    const char *id;
    int has_host = 0;

    /* Headers the client's Connection header names are hop-by-hop too. */
    tokens_buf[0] = '\0';
    for (size_t i = 0, o = 0; i < req->n_headers; i++) {
        if (name_is(&req->headers[i], "connection") &&
            o + req->headers[i].value_len + 2 < sizeof(tokens_buf)) {
            memcpy(tokens_buf + o, req->headers[i].value, req->headers[i].value_len);
            o += req->headers[i].value_len;
            tokens_buf[o++] = ',';
            tokens_buf[o] = '\0';
        }
    }
    for (char *save = NULL, *t = strtok_r(tokens_buf, ", \t", &save); t != NULL && n_tokens < 16;
         t = strtok_r(NULL, ", \t", &save))
        tokens[n_tokens++] = t;

    mtls_strbuf_str(h, req->method_name);
    mtls_strbuf_str(h, " ");
    if (req->target_len > 0 && req->target[0] == '/')
        mtls_strbuf_add(h, a->prefix, a->prefix_len);
    mtls_strbuf_add(h, req->target, req->target_len);
    mtls_strbuf_str(h, " HTTP/1.1\r\n");
    for (size_t i = 0; i < req->n_headers; i++) {
        const mtls_http_header *hd = &req->headers[i];

        if (drop_header(hd, tokens, n_tokens))
            continue;
        if (name_is(hd, "host"))
            has_host = 1;
        mtls_strbuf_add(h, hd->name, hd->name_len);
        mtls_strbuf_str(h, ": ");
        mtls_strbuf_add(h, hd->value, hd->value_len);
        mtls_strbuf_str(h, "\r\n");
    }
    if (req->upgrade) {
        /* The one hop-by-hop request the upstream must see: it answers 101 or not. */
        for (size_t i = 0; i < req->n_headers; i++) {
            if (!name_is(&req->headers[i], "upgrade"))
                continue;
            mtls_strbuf_str(h, "Connection: upgrade\r\nUpgrade: ");
            mtls_strbuf_add(h, req->headers[i].value, req->headers[i].value_len);
            mtls_strbuf_str(h, "\r\n");
            break;
        }
    }
    if (!has_host) {
        mtls_strbuf_str(h, "Host: ");
        mtls_strbuf_str(h, a->host_header);
        mtls_strbuf_str(h, "\r\n");
    }
    mtls_strbuf_str(h, "X-Forwarded-For: ");
    joined(h, req, "x-forwarded-for", addr);
    mtls_strbuf_str(h, "\r\nX-Forwarded-Proto: https\r\nForwarded: ");
    snprintf(forwarded, sizeof(forwarded),
             strchr(addr, ':') ? "for=\"[%s]\";proto=https" : "for=%s;proto=https", addr);
    joined(h, req, "forwarded", forwarded);
    mtls_strbuf_str(h, "\r\n");
    id = px->opts.identity ? px->opts.identity(req->peer, px->opts.families, &id_len) : NULL;
    if (id != NULL)
        mtls_strbuf_add(h, id, id_len);
    if (req->chunked) {
        mtls_strbuf_str(h, "Transfer-Encoding: chunked\r\n");
    } else if (req->content_length >= 0) {
        char n[40];

        snprintf(n, sizeof(n), "Content-Length: %lld\r\n", (long long)req->content_length);
        mtls_strbuf_str(h, n);
    }
    mtls_strbuf_str(h, "\r\n");
}

/*
 * Gives up the request req and sends its head (len bytes at head). Returns 0,
 * or -1 when the write failed (req was answered 502).
 */
static int up_start(struct upconn *up, mtls_http_request *req, const char *head, size_t len,
                    uint64_t started)
{
    mtls_http_response_opts ro = {.head_request = req->method == HTTP_HEAD,
                                  .on_head = resp_head,
                                  .on_body = resp_body,
                                  .arg = up};
    int plen = req->path_len > 120 ? 120 : (int)req->path_len;
    uv_buf_t buf;

    up->req = req;
    up->started = started;
    up->resp_started = 0;
    up->upgrade = req->upgrade;
    up->tunnel = 0;
    up->read_paused = 0;
    up->body_paused = 0;
    up->head_request = req->method == HTTP_HEAD;
    up->req_chunked = req->chunked;
    up->body_done = !req->chunked && req->content_length <= 0;
    snprintf(up->what, sizeof(up->what), "%s %.*s", req->method_name, plen, req->target);
    mtls_http_response_release(&up->resp);
    mtls_http_response_init(&up->resp, &ro);
    mtls_strbuf_release(&up->replay);
    /* Without a body the request can be sent again, should a pooled connection turn out dead. */
    if (up->reused && up->body_done && !up->upgrade)
        mtls_strbuf_add(&up->replay, head, len);
    req->on_body = on_client_body;
    req->on_body_end = on_client_body_end;
    req->on_writable = on_client_writable;
    req->on_abort = on_client_abort;
    req->handler_ctx = up;
    buf = uv_buf_init((char *)head, (unsigned)len);
    if (up_write(up, &buf, 1) != 0)
        return -1;
    up_arm(up);
    return 0;
}

static int up_retry(struct upconn *up)
{
    mtls_http_request *req = up->req;
    struct upconn *fresh = up_new(up->px);
    mtls_strbuf head = up->replay;

    if (fresh == NULL)
        return -1;
    px_log(up, "info", "upstream_retry",
           "%s: the upstream %s had closed a pooled connection; sent again on a new one", up->what,
           up->px->opts.upstream->shown);
    memset(&up->replay, 0, sizeof(up->replay));
    up_detach(up);
    up_close(up);
    (void)up_start(fresh, req, head.p, head.len, up->started);
    mtls_strbuf_release(&head);
    return 0;
}

int mtls__proxy_handle(void *ctx, mtls_http_request *req)
{
    mtls_proxy *px = ctx;
    mtls_strbuf h = {0};
    struct upconn *up;

    build_head(px, req, &h);
    if (h.failed) {
        mtls_strbuf_release(&h);
        return mtls_http_respond_error(req, 502, "bad gateway", "out of memory");
    }
    up = up_take(px);
    if (up == NULL) {
        mtls_strbuf_release(&h);
        return mtls_http_respond_error(req, 502, "bad gateway",
                                       "cannot open a connection to the upstream");
    }
    if (up_start(up, req, h.p, h.len, uv_now(px->loop)) == 0 && req->expect_continue)
        mtls_http_send_continue(req); /* the body can come: it is streamed as it arrives */
    mtls_strbuf_release(&h);
    return 0;
}
