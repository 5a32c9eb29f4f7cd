/*
 * HTTP/2 on a connection whose handshake chose "h2" (ALPN), through
 * nghttp2. The session reads and writes through the connection's
 * mtls_http_io like conn.c does (no TLS here). Every stream gets its own
 * request state (an mtls_http_conn marked with h2_stream) so that it goes
 * to the same route table and handlers as an HTTP/1.1 request, with the
 * connection's peer (identity); conn.c's response functions forward to
 * this file for such requests, which turns them into HEADERS and DATA.
 *
 * Limits, besides nghttp2's own (HPACK table size, SETTINGS and PING
 * floods): at most MAX_STREAMS concurrent streams; a header list over
 * cfg->max_header_bytes or cfg->max_headers gets 431; a header block of
 * more than MAX_CONTINUATIONS CONTINUATION frames, or a header list many
 * times the limit, ends the session (CONTINUATION floods; nghttp2 1.61
 * fixed those, Debian 12 has 1.52); more than RESET_LIMIT RST_STREAMs
 * within RESET_WINDOW_MS gets GOAWAY ENHANCE_YOUR_CALM (rapid reset,
 * CVE-2023-44487; nghttp2 1.57 limits this itself). Request bodies are
 * acknowledged (WINDOW_UPDATE) only as handlers take them; a peer that
 * never opens its window stalls only itself until the idle timeout.
 */
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <llhttp.h>

#include "grow.h"
#include "http/http_conn.h"
#include "http_internal.h"
#include "mtls/http.h"

#define MAX_STREAMS 100
#define MAX_CONTINUATIONS 8   /* CONTINUATION frames in one header block */
#define RESET_LIMIT 200       /* RST_STREAM frames from the peer ... */
#define RESET_WINDOW_MS 1000  /* ... within this window, then GOAWAY */
#define HEADER_FAIL_FACTOR 4  /* a header list this many times the limit ends the session */
#define OUT_HIGH_WATER 65536  /* stop reading while this much waits for the socket */
#define BODY_HIGH_WATER 65536 /* a streamed response above this asks the handler to wait */
#define BODY_LOW_WATER 16384  /* ... and it may write again below this */
#define READ_CHUNK 16384

typedef struct mtls__h2_stream h2_stream;

struct mtls__h2_session {
    nghttp2_session *ng;
    mtls_http_conn *conn; /* the connection (its out buffer is the wire's) */
    h2_stream *streams;   /* every stream with a request, newest first */
    size_t n_streams;
    uint64_t reset_window_start; /* ms */
    uint64_t progress_ms;        /* when a stream last opened, or a body byte moved */
    unsigned resets;
    unsigned continuations;
    int running;
    int goaway; /* GOAWAY submitted: finish the open streams, then close */
    int failed; /* the session is beyond saving: flush and close */
    int peer_eof;
};

struct mtls__h2_stream {
    mtls_http_conn c; /* the request's state, as conn.c keeps it */
    struct mtls__h2_session *s;
    int32_t id;
    h2_stream *prev, *next;
    /* The header block as it arrives: "name\0value\0" pairs. */
    char *hbuf;
    size_t hlen, hcap;
    size_t header_bytes;
    unsigned n_fields;
    int refused;      /* 431: too many or too large header fields */
    int dispatched;   /* the request went to the route table */
    int eof_in;       /* the peer ended its side (END_STREAM) */
    int out_ended;    /* the response body is complete in c.out */
    int data_started; /* a data provider is attached */
    int deferred;     /* the data provider waits for bytes */
    char *pend;       /* body bytes received while the handler paused */
    size_t pend_len, pend_cap;
};

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- streams ------------------------------------------------------------ */

static void session_kick(struct mtls__h2_session *s)
{
    mtls_http_conn *c = s->conn;

    if (!s->running && c->io.kick != NULL)
        c->io.kick(c->io.ctx);
}

static void stream_kick(void *ctx)
{
    h2_stream *st = ctx;

    session_kick(st->s);
}

static h2_stream *stream_new(struct mtls__h2_session *s, int32_t id)
{
    h2_stream *st = calloc(1, sizeof(*st));

    if (st == NULL)
        return NULL;
    st->s = s;
    st->id = id;
    st->c.cfg = s->conn->cfg;
    st->c.peer = s->conn->peer;
    st->c.io.ctx = st;
    st->c.io.kick = stream_kick;
    st->c.h2_stream = st;
    st->c.in_request = 1;
    st->c.keep_alive = 1;
    st->c.parser.http_major = 2; /* the access log says HTTP/2.0 */
    st->c.parser.http_minor = 0;
    st->next = s->streams;
    if (s->streams != NULL)
        s->streams->prev = st;
    s->streams = st;
    s->n_streams++;
    s->conn->in_request = 1;
    return st;
}

/* The stream is gone (closed, or the session ends): tell its handler, log, free. */
static void stream_free(h2_stream *st, uint32_t error_code)
{
    struct mtls__h2_session *s = st->s;

    mtls__http_handler_detach(&st->c, 1);
    (void)error_code;
    if (st->c.in_request && st->dispatched) {
        if (!st->c.resp_started)
            st->c.status = 499; /* the client went away first (nginx's word) */
        st->c.resp_done = 1;
        mtls__http_finish_request(&st->c);
    }
    if (st->dispatched)
        s->conn->requests++;
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    s->n_streams--;
    s->conn->in_request = s->n_streams > 0;
    mtls__http_drop_fields(&st->c);
    free(st->c.out);
    free(st->hbuf);
    free(st->pend);
    free(st);
}

static h2_stream *stream_of(struct mtls__h2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s->ng, id);
}

/* Both sides are done with the request: log it (once). */
static void stream_maybe_finish(h2_stream *st)
{
    if (st->c.resp_done && st->c.msg_done && st->c.in_request)
        mtls__http_finish_request(&st->c);
}

/* ---- responses: conn.c forwards here ---------------------------------------- */

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user)
{
    h2_stream *st = source->ptr;
    mtls_http_conn *c = &st->c;
    size_t have = c->out_len - c->out_off;
    size_t n = have < length ? have : length;

    (void)ng;
    (void)id;
    (void)user;
    if (n > 0) {
        st->s->progress_ms = now_ms();
        memcpy(buf, c->out + c->out_off, n);
        c->out_off += n;
        if (c->out_off == c->out_len)
            c->out_off = c->out_len = 0;
    }
    if (c->out_off == c->out_len && st->out_ended) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (n == 0) {
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* Whether a response header must not travel over HTTP/2 (RFC 9113 8.2.2). */
static int connection_specific(const char *name, size_t len)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == len && strncasecmp(name, names[i], len) == 0)
            return 1;
    return 0;
}

#define MAX_NV 64

typedef struct nv_list {
    nghttp2_nv v[MAX_NV];
    size_t n;
    char lower[8192]; /* lower-cased names */
    size_t lower_len;
} nv_list;

static void nv_add(nv_list *l, const char *name, size_t name_len, const char *value,
                   size_t value_len)
{
    char *lname;

    if (l->n >= MAX_NV || l->lower_len + name_len > sizeof(l->lower))
        return;
    lname = l->lower + l->lower_len;
    for (size_t i = 0; i < name_len; i++) {
        char ch = name[i];

        lname[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
    }
    l->lower_len += name_len;
    l->v[l->n++] =
        (nghttp2_nv){(uint8_t *)lname, (uint8_t *)value, name_len, value_len, NGHTTP2_NV_FLAG_NONE};
}

/* Adds header lines "Name: value\r\n"... (conn.c's form), dropping connection-specific ones. */
static void nv_add_lines(nv_list *l, const char *fields, size_t len)
{
    const char *p = fields, *end = fields + len;

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));

        if (colon != NULL) {
            const char *v = colon + 1, *ve = line_end;

            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (!connection_specific(p, (size_t)(colon - p)))
                nv_add(l, p, (size_t)(colon - p), v, (size_t)(ve - v));
        }
        p = eol ? eol + 1 : end;
    }
}

static int has_field(const nv_list *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].namelen == strlen(name) && memcmp(l->v[i].name, name, l->v[i].namelen) == 0)
            return 1;
    return 0;
}

/* Submits the response HEADERS, with a data provider unless there is no body. */
static int submit(h2_stream *st, nv_list *l, int with_body)
{
    nghttp2_data_provider prov = {.source.ptr = st, .read_callback = data_read};
    int rv;

    st->data_started = with_body;
    rv = nghttp2_submit_response(st->s->ng, st->id, l->v, l->n, with_body ? &prov : NULL);
    session_kick(st->s);
    return rv == 0 ? 0 : MTLS_E_INVALID;
}

static int no_body(const mtls_http_conn *c, int status)
{
    return c->head_only || status == 204 || status == 304 || (status >= 100 && status < 200);
}

void mtls__h2_respond(mtls_http_conn *c, int status, const char *content_type, const char *body,
                      size_t body_len, const char *extra_headers)
{
    h2_stream *st = c->h2_stream;
    nv_list l;
    char code[4], len[24];
    const char *date = mtls__http_date();

    c->status = status;
    code[0] = (char)('0' + status / 100 % 10);
    code[1] = (char)('0' + status / 10 % 10);
    code[2] = (char)('0' + status % 10);
    l.n = l.lower_len = 0;
    nv_add(&l, ":status", 7, code, 3);
    nv_add(&l, "date", 4, date, strlen(date));
    if (content_type == NULL)
        content_type = "application/json; charset=utf-8";
    nv_add(&l, "content-type", 12, content_type, strlen(content_type));
    len[mtls__http_u64(len, body_len)] = '\0';
    nv_add(&l, "content-length", 14, len, strlen(len));
    if (extra_headers != NULL)
        nv_add_lines(&l, extra_headers, strlen(extra_headers));
    c->resp_started = 1;
    c->bytes_out = 0;
    st->out_ended = 1;
    if (!no_body(c, status) && body_len > 0) {
        if (mtls__http_grow(&c->out, &c->out_cap, c->out_len + body_len, 1024, SIZE_MAX) != 0) {
            nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
            return;
        }
        memcpy(c->out + c->out_len, body, body_len);
        c->out_len += body_len;
        c->bytes_out = body_len;
    }
    (void)submit(st, &l, c->out_len > c->out_off);
}

int mtls__h2_stream_start(mtls_http_conn *c, int status, const char *fields, size_t fields_len,
                          int64_t length)
{
    h2_stream *st = c->h2_stream;
    nv_list l;
    char code[4], len[24];

    if (status < 200 || status > 999)
        return MTLS_E_INVALID; /* no 101 tunnels over HTTP/2 (req->upgrade is never set) */
    code[0] = (char)('0' + status / 100 % 10);
    code[1] = (char)('0' + status / 10 % 10);
    code[2] = (char)('0' + status % 10);
    l.n = l.lower_len = 0;
    nv_add(&l, ":status", 7, code, 3);
    nv_add_lines(&l, fields, fields_len);
    if (!has_field(&l, "date")) {
        const char *date = mtls__http_date();

        nv_add(&l, "date", 4, date, strlen(date));
    }
    if (length >= 0) {
        len[mtls__http_u64(len, (uint64_t)length)] = '\0';
        nv_add(&l, "content-length", 14, len, strlen(len));
    }
    c->status = status;
    c->resp_started = 1;
    if (no_body(c, status) || length == MTLS_HTTP_LEN_NONE || length == 0) {
        st->out_ended = 1;
        return submit(st, &l, 0);
    }
    return submit(st, &l, 1);
}

int mtls__h2_stream_write(mtls_http_conn *c, const char *data, size_t len)
{
    h2_stream *st = c->h2_stream;

    if (!st->data_started || st->out_ended)
        return 0;
    if (len > 0) {
        if (mtls__http_grow(&c->out, &c->out_cap, c->out_len + len, 1024, SIZE_MAX) != 0) {
            mtls__h2_stream_abort(c);
            return 0;
        }
        memcpy(c->out + c->out_len, data, len);
        c->out_len += len;
        c->bytes_out += len;
        if (st->deferred) {
            st->deferred = 0;
            nghttp2_session_resume_data(st->s->ng, st->id);
        }
        session_kick(st->s);
    }
    if (c->out_len - c->out_off >= BODY_HIGH_WATER) {
        c->write_high = 1;
        return 1;
    }
    return 0;
}

void mtls__h2_stream_end(mtls_http_conn *c)
{
    h2_stream *st = c->h2_stream;

    st->out_ended = 1;
    if (st->data_started && st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(st->s->ng, st->id);
    }
    mtls__http_response_done(c);
    session_kick(st->s);
}

void mtls__h2_stream_abort(mtls_http_conn *c)
{
    h2_stream *st = c->h2_stream;

    if (!c->resp_started)
        c->status = 502;
    nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    c->msg_done = 1;
    mtls__http_response_done(c);
    session_kick(st->s);
}

void mtls__h2_send_continue(mtls_http_conn *c)
{
    h2_stream *st = c->h2_stream;
    nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE};

    nghttp2_submit_headers(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NULL, &nv, 1, NULL);
    session_kick(st->s);
}

/* ---- request bodies ---------------------------------------------------------- */

/* Tells the peer it may send n more bytes (on the stream and the connection). */
static void consume(struct mtls__h2_session *s, int32_t id, size_t n)
{
    if (n == 0)
        return;
    if (nghttp2_session_consume(s->ng, id, n) != 0)
        nghttp2_session_consume_connection(s->ng, n);
}

/* The peer's side is complete and the handler has every byte. */
static void body_end(h2_stream *st)
{
    mtls_http_conn *c = &st->c;

    if (c->msg_done)
        return;
    c->msg_done = 1;
    if (c->handler_active && c->req.on_body_end != NULL)
        c->req.on_body_end(c->req.handler_ctx);
    stream_maybe_finish(st);
}

/* Hands body bytes to the handler, or keeps them while it pauses. */
static void body_in(h2_stream *st, const uint8_t *data, size_t len)
{
    mtls_http_conn *c = &st->c;
    struct mtls__h2_session *s = st->s;

    c->body_bytes += len;
    if (c->handler_active && c->req.on_body != NULL) {
        if (c->body_paused || st->pend_len > 0) {
            /* Bounded by the stream's window: nothing is consumed until delivered. */
            if (mtls__http_grow(&st->pend, &st->pend_cap, st->pend_len + len, 1024, SIZE_MAX) !=
                0) {
                nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
                return;
            }
            memcpy(st->pend + st->pend_len, data, len);
            st->pend_len += len;
            return;
        }
        consume(s, st->id, len);
        if (c->req.on_body(c->req.handler_ctx, (const char *)data, len) == MTLS_HTTP_BODY_PAUSE)
            c->body_paused = c->handler_active;
        return;
    }
    consume(s, st->id, len);
    if (c->body_bytes > c->cfg->max_body && !(c->route && (c->route->flags & MTLS_ROUTE_BODY)) &&
        !st->refused) {
        st->refused = 1;
        if (!c->resp_started && !c->resp_done)
            mtls_http_respond_error(&c->req, 413, "request body too large", NULL);
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    }
}

void mtls__h2_body_resume(mtls_http_conn *c)
{
    h2_stream *st = c->h2_stream;

    c->body_paused = 0;
    if (st->pend_len > 0 && c->handler_active && c->req.on_body != NULL) {
        size_t n = st->pend_len;

        st->pend_len = 0;
        consume(st->s, st->id, n);
        if (c->req.on_body(c->req.handler_ctx, st->pend, n) == MTLS_HTTP_BODY_PAUSE)
            c->body_paused = c->handler_active;
    }
    if (st->eof_in && st->pend_len == 0 && !c->body_paused)
        body_end(st);
    session_kick(st->s);
}

/* ---- requests ------------------------------------------------------------------- */

static int method_of(const char *name)
{
#define MTLS_H2_METHOD(num, id, text)                                                              \
    if (strcmp(name, #text) == 0)                                                                  \
        return num;
    HTTP_METHOD_MAP(MTLS_H2_METHOD)
#undef MTLS_H2_METHOD
    return -1;
}

/*
 * HTTP/2 may split Cookie into one field per crumb; HTTP/1.1 (an upstream)
 * wants one line joined with "; " (RFC 9113 8.2.3). Joins them into *joined
 * (the caller frees it) in the first cookie field's place; returns the new count.
 */
static size_t join_cookies(mtls_http_header *h, size_t n, char **joined)
{
    size_t total = 0, count = 0, first = 0, o = 0, w = 0;

    for (size_t i = 0; i < n; i++) {
        if (h[i].name_len == 6 && memcmp(h[i].name, "cookie", 6) == 0) {
            if (count++ == 0)
                first = i;
            total += h[i].value_len + 2;
        }
    }
    if (count < 2 || (*joined = malloc(total)) == NULL)
        return n;
    for (size_t i = 0; i < n; i++) {
        if (!(h[i].name_len == 6 && memcmp(h[i].name, "cookie", 6) == 0)) {
            h[w++] = h[i];
            continue;
        }
        if (o > 0) {
            memcpy(*joined + o, "; ", 2);
            o += 2;
        }
        memcpy(*joined + o, h[i].value, h[i].value_len);
        o += h[i].value_len;
        if (i == first)
            h[w++] = h[i];
    }
    for (size_t i = 0; i < w; i++) {
        if (h[i].name_len == 6 && memcmp(h[i].name, "cookie", 6) == 0) {
            h[i].value = *joined;
            h[i].value_len = o;
            break;
        }
    }
    return w;
}

/* The header block is complete: fill the request object and route it. */
static void request_begin(h2_stream *st, int end_stream)
{
    mtls_http_conn *c = &st->c;
    mtls_http_request *req = &c->req;
    mtls_http_header *h = NULL;
    char *cookie = NULL;
    const char *method = NULL, *path = NULL, *authority = NULL;
    size_t path_len = 0, authority_len = 0, n = 0, i;
    int has_host = 0, m;
    const char *q;

    st->eof_in = end_stream;
    st->dispatched = 1;
    h = calloc(st->n_fields + 1, sizeof(*h));
    if (h == NULL) {
        nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    memset(req, 0, sizeof(*req));
    req->content_length = -1;
    for (i = 0; i < st->hlen;) {
        const char *name = st->hbuf + i, *value = name + strlen(name) + 1;
        size_t name_len = strlen(name), value_len = strlen(value);

        i += name_len + value_len + 2;
        if (strcmp(name, ":method") == 0) {
            method = value;
        } else if (strcmp(name, ":path") == 0) {
            path = value;
            path_len = value_len;
        } else if (strcmp(name, ":authority") == 0) {
            authority = value;
            authority_len = value_len;
        } else if (name[0] != ':') {
            if (strcmp(name, "host") == 0)
                has_host = 1;
            else if (strcmp(name, "user-agent") == 0)
                mtls__http_keep_span(&c->user_agent, &c->user_agent_len, value, value_len);
            else if (strcmp(name, "referer") == 0)
                mtls__http_keep_span(&c->referer, &c->referer_len, value, value_len);
            else if (strcmp(name, "content-length") == 0)
                req->content_length = strtoll(value, NULL, 10); /* nghttp2 checked it */
            else if (strcmp(name, "expect") == 0 && strcasecmp(value, "100-continue") == 0)
                req->expect_continue = 1;
            h[n++] = (mtls_http_header){name, name_len, value, value_len};
        }
    }
    if (!has_host && authority != NULL) /* handlers and upstreams look for Host */
        h[n++] = (mtls_http_header){"host", 4, authority, authority_len};
    n = join_cookies(h, n, &cookie);
    if (path == NULL)
        path = "/", path_len = 1; /* CONNECT: nghttp2 checked the pseudo-headers */
    m = method ? method_of(method) : -1;
    c->parser.method = (uint8_t)(m >= 0 ? m : HTTP_GET);
    c->url_at = path;
    c->url_len = path_len;
    req->conn = c;
    req->peer = c->peer;
    req->method = c->parser.method;
    req->method_name = llhttp_method_name((llhttp_method_t)c->parser.method);
    req->target = path;
    req->target_len = path_len;
    q = memchr(path, '?', path_len);
    req->path_len = q ? (size_t)(q - path) : path_len;
    req->http_minor = 1; /* handlers see it as HTTP/1.1: the proxy speaks that upstream */
    req->headers = h;
    req->n_headers = n;
    /* A body without a length reaches an HTTP/1.1 upstream chunked. */
    req->chunked = !end_stream && req->content_length < 0;
    req->keep_alive = 1;
    c->keep_alive = 1;
    c->head_only = c->parser.method == HTTP_HEAD;
    if (m < 0 || m == HTTP_CONNECT) {
        mtls_http_respond_error(req, 501, "not implemented",
                                m < 0 ? "unknown method" : "CONNECT is not supported");
    } else if (path_len > c->cfg->max_url) {
        mtls_http_respond_error(req, 414, "request target too long", NULL);
    } else if (st->refused) {
        mtls_http_respond_error(req, 431, "request headers too large", NULL);
    } else if (mtls__http_dispatch(c) != 0) {
        st->refused = 1;
        mtls_http_respond_error(req, 413, "request body too large", NULL);
    } else if (c->resp_done && !c->resp_started) {
        c->resp_started = 1; /* dispatch answered a refusal itself */
    }
    /* The spans are valid during the handler call only; the request goes on with copies. */
    req->headers = NULL;
    req->n_headers = 0;
    if (c->url_at == path)
        mtls__http_keep_fields(c); /* unless it is over already (logged) */
    free(h);
    free(cookie);
    free(st->hbuf);
    st->hbuf = NULL;
    st->hlen = st->hcap = 0;
    if (end_stream)
        body_end(st);
    else if (st->refused)
        nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
}

/* ---- nghttp2 callbacks ------------------------------------------------------------ */

static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *user)
{
    struct mtls__h2_session *s = user;

    (void)ng;
    if (hd->type == NGHTTP2_HEADERS)
        s->continuations = 0;
    else if (hd->type == NGHTTP2_CONTINUATION && ++s->continuations > MAX_CONTINUATIONS)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* a CONTINUATION flood: end the session */
    return 0;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct mtls__h2_session *s = user;
    h2_stream *st;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (s->goaway)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    st = stream_new(s, frame->hd.stream_id);
    s->progress_ms = now_ms();
    if (st == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct mtls__h2_session *s = user;
    h2_stream *st;
    const mtls_http_config *cfg = s->conn->cfg;

    (void)flags;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    st = stream_of(s, frame->hd.stream_id);
    if (st == NULL || st->dispatched)
        return 0; /* trailers are not kept */
    (void)ng;
    st->header_bytes += namelen + valuelen;
    st->n_fields++;
    if (st->header_bytes > cfg->max_header_bytes * HEADER_FAIL_FACTOR)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* an HPACK bomb: end the session */
    if (st->header_bytes > cfg->max_header_bytes || st->n_fields > cfg->max_headers + 4)
        st->refused = 1;
    if (st->refused) {
        /* Keep the pseudo-headers only, for the 431 and its log line. */
        if (namelen == 0 || name[0] != ':')
            return 0;
    }
    if (mtls__http_grow(&st->hbuf, &st->hcap, st->hlen + namelen + valuelen + 2, 1024, SIZE_MAX) !=
        0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    memcpy(st->hbuf + st->hlen, name, namelen);
    st->hlen += namelen;
    st->hbuf[st->hlen++] = '\0';
    memcpy(st->hbuf + st->hlen, value, valuelen);
    st->hlen += valuelen;
    st->hbuf[st->hlen++] = '\0';
    return 0;
}

/* The peer's RST_STREAMs, counted per window (rapid reset, CVE-2023-44487). */
static int count_reset(struct mtls__h2_session *s)
{
    uint64_t now = now_ms();

    if (now - s->reset_window_start >= RESET_WINDOW_MS) {
        s->reset_window_start = now;
        s->resets = 0;
    }
    if (++s->resets <= RESET_LIMIT)
        return 0;
    s->failed = 1;
    s->goaway = 1;
    nghttp2_session_terminate_session(s->ng, NGHTTP2_ENHANCE_YOUR_CALM);
    return -1;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct mtls__h2_session *s = user;
    h2_stream *st;

    (void)ng;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        st = stream_of(s, frame->hd.stream_id);
        if (st == NULL)
            return 0;
        if (!st->dispatched)
            request_begin(st, (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
        else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) { /* trailers */
            st->eof_in = 1;
            if (st->pend_len == 0 && !st->c.body_paused)
                body_end(st);
        }
        break;
    case NGHTTP2_DATA:
        st = stream_of(s, frame->hd.stream_id);
        if (st != NULL && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            st->eof_in = 1;
            if (st->pend_len == 0 && !st->c.body_paused)
                body_end(st);
        }
        break;
    case NGHTTP2_RST_STREAM:
        (void)count_reset(s);
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    struct mtls__h2_session *s = user;
    h2_stream *st = stream_of(s, id);

    (void)ng;
    (void)flags;
    s->progress_ms = now_ms();
    if (st == NULL || !st->dispatched) {
        consume(s, id, len);
        return 0;
    }
    body_in(st, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *user)
{
    struct mtls__h2_session *s = user;
    h2_stream *st = stream_of(s, id);

    if (st == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    /* A stream the peer reset before it was answered counts towards rapid reset too. */
    stream_free(st, error_code);
    return 0;
}

/* ---- the session ------------------------------------------------------------------ */

int mtls_http_conn_use_h2(mtls_http_conn *c)
{
    struct mtls__h2_session *s = calloc(1, sizeof(*s));
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)c->cfg->max_header_bytes + 1024},
    };
    int rc = MTLS_E_NOMEM;

    if (s == NULL || nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
        goto out;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    /* Request bodies are acknowledged as handlers take them (flow control). */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    if (nghttp2_session_server_new2(&s->ng, cb, s, opt) != 0)
        goto out;
    s->conn = c;
    s->reset_window_start = s->progress_ms = now_ms();
    if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0) {
        nghttp2_session_del(s->ng);
        goto out;
    }
    c->h2 = s;
    s = NULL;
    rc = 0;
out:
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    free(s);
    return rc;
}

void mtls__h2_release(mtls_http_conn *c)
{
    struct mtls__h2_session *s = c->h2;

    while (s->streams != NULL)
        stream_free(s->streams, NGHTTP2_CANCEL);
    nghttp2_session_del(s->ng);
    free(s);
    c->h2 = NULL;
}

/* Moves what nghttp2 has to send into the connection's output buffer. */
static int gather(struct mtls__h2_session *s)
{
    mtls_http_conn *c = s->conn;

    while (c->out_len - c->out_off < OUT_HIGH_WATER) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(s->ng, &data);

        if (n < 0)
            return -1;
        if (n == 0)
            break;
        if (c->out_off > 0 && c->out_off == c->out_len)
            c->out_off = c->out_len = 0;
        if (mtls__http_grow(&c->out, &c->out_cap, c->out_len + (size_t)n, 1024, SIZE_MAX) != 0)
            return -1;
        memcpy(c->out + c->out_len, data, (size_t)n);
        c->out_len += (size_t)n;
    }
    return 0;
}

/* Writes the output buffer. Returns 0 (all written), MTLS_IO_WANT_* or MTLS_IO_ERROR. */
static long flush(mtls_http_conn *c)
{
    while (c->out_off < c->out_len) {
        long n = c->io.write(c->io.ctx, c->out + c->out_off, c->out_len - c->out_off);

        if (n <= 0)
            return n == 0 ? MTLS_IO_ERROR : n;
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

/* Streamed responses that were asked to wait may write again. */
static void writable(struct mtls__h2_session *s)
{
    for (h2_stream *st = s->streams, *next; st != NULL; st = next) {
        next = st->next;
        if (st->c.write_high && st->c.out_len - st->c.out_off < BODY_LOW_WATER) {
            st->c.write_high = 0;
            if (st->c.handler_active && st->c.req.on_writable != NULL)
                st->c.req.on_writable(st->c.req.handler_ctx);
        }
    }
}

/*
 * Open streams that made no progress for cfg->h2_stall_ms (a window that
 * never opens, a client that only PINGs): GOAWAY and close. The worker's
 * idle timeout catches a silent client; this catches a chatty one.
 */
static int stalled(struct mtls__h2_session *s)
{
    uint64_t limit = s->conn->cfg->h2_stall_ms;

    if (limit == 0 || s->n_streams == 0 || s->failed || now_ms() - s->progress_ms < limit)
        return 0;
    s->failed = 1;
    s->goaway = 1;
    nghttp2_session_terminate_session(s->ng, NGHTTP2_NO_ERROR);
    return 1;
}

static int run(struct mtls__h2_session *s)
{
    mtls_http_conn *c = s->conn;
    char local[READ_CHUNK];
    char *buf = c->cfg->read_buf ? c->cfg->read_buf : local;
    size_t cap = c->cfg->read_buf ? c->cfg->read_buf_len : sizeof(local);
    long w;

    if (c->closing && !s->goaway) {
        s->goaway = 1;
        nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(s->ng), NGHTTP2_NO_ERROR,
                              NULL, 0);
    }
    for (;;) {
        if (gather(s) != 0)
            return MTLS_HTTP_ABORT;
        w = flush(c);
        if (w == MTLS_IO_ERROR)
            return MTLS_HTTP_ABORT;
        if (w != 0)
            return w == MTLS_IO_WANT_READ ? MTLS_HTTP_WANT_READ : MTLS_HTTP_WANT_WRITE;
        writable(s);
        if (gather(s) != 0)
            return MTLS_HTTP_ABORT;
        if (c->out_len > c->out_off)
            continue;
        if (s->failed || s->peer_eof)
            return MTLS_HTTP_DONE;
        if (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng))
            return MTLS_HTTP_DONE;
        if (s->goaway && s->n_streams == 0)
            return MTLS_HTTP_DONE;
        if (stalled(s))
            continue; /* GOAWAY queued: flush it, then done */
        {
            long n = c->io.read(c->io.ctx, buf, cap);
            ssize_t used;

            if (n == MTLS_IO_WANT_READ || n == MTLS_IO_WANT_WRITE)
                return n == MTLS_IO_WANT_READ ? MTLS_HTTP_WANT_READ : MTLS_HTTP_WANT_WRITE;
            if (n == MTLS_IO_EOF) {
                s->peer_eof = 1;
                continue;
            }
            if (n < 0)
                return MTLS_HTTP_ABORT;
            used = nghttp2_session_mem_recv(s->ng, (const uint8_t *)buf, (size_t)n);
            if (used < 0) {
                /* A protocol error or a flood: nghttp2 queued GOAWAY; send it, then close. */
                s->failed = 1;
                if (!s->goaway && used != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
                    nghttp2_session_terminate_session(s->ng, used == NGHTTP2_ERR_CALLBACK_FAILURE
                                                                 ? NGHTTP2_ENHANCE_YOUR_CALM
                                                                 : NGHTTP2_PROTOCOL_ERROR);
                s->goaway = 1;
            }
        }
    }
}

int mtls__h2_run(mtls_http_conn *c)
{
    struct mtls__h2_session *s = c->h2;
    int r;

    s->running = 1;
    c->running = 1;
    r = run(s);
    s->running = 0;
    c->running = 0;
    return r;
}

void mtls__h2_drain(mtls_http_conn *c)
{
    c->closing = 1; /* run() sends GOAWAY; open streams finish */
}

void mtls__h2_timeout(mtls_http_conn *c)
{
    struct mtls__h2_session *s = c->h2;

    c->closing = 1;
    s->failed = 1;
    if (!s->goaway) {
        s->goaway = 1;
        nghttp2_session_terminate_session(s->ng, NGHTTP2_NO_ERROR);
    }
}

int mtls__h2_busy(const mtls_http_conn *c)
{
    const struct mtls__h2_session *s = c->h2;

    return s->n_streams > 0 || c->out_off < c->out_len || nghttp2_session_want_write(s->ng);
}
