/*
 * An HTTP/1.x connection: llhttp parses what the transport reads, each
 * complete request is routed and its response appended to one output buffer,
 * and that buffer is written once for everything parsed from one read
 * (pipelined requests share a write). No allocation happens per request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "http_internal.h"
#include "mtls/http.h"

#define IN_CAP 16384         /* one TLS record's worth of plaintext */
#define OUT_INITIAL 4096     /* grows on demand (pipelining, /whoami) */
#define OUT_HIGH_WATER 65536 /* stop parsing pipelined requests above this */

enum { FIELD_OTHER = 0, FIELD_USER_AGENT, FIELD_REFERER };

static const char BODY_TEST[] = "{\"message\":\"Hello mtls\"}";

void mtls_http_config_init(mtls_http_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_url = 8192;
    cfg->max_header_bytes = 16384;
    cfg->max_headers = 100;
    cfg->max_body = 1024 * 1024;
    cfg->log_format = MTLS_LOG_TEXT;
}

/* ---- output buffer ---------------------------------------------------- */

static int out_reserve(mtls_http_conn *c, size_t more)
{
    size_t need = c->out_len + more;
    size_t cap = c->out_cap ? c->out_cap : OUT_INITIAL;
    char *grown;

    if (need <= c->out_cap)
        return 0;
    while (cap < need)
        cap *= 2;
    grown = realloc(c->out, cap);
    if (grown == NULL)
        return -1;
    c->out = grown;
    c->out_cap = cap;
    return 0;
}

/* ---- responses -------------------------------------------------------- */

static const char *status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* Appends len bytes at s to out (room reserved by the caller). */
static char *put(char *out, const char *s, size_t len)
{
    memcpy(out, s, len);
    return out + len;
}

size_t mtls__http_u64(char *out, uint64_t v)
{
    char digits[20];
    size_t n = 0, len;

    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    len = n;
    while (n > 0)
        *out++ = digits[--n];
    return len;
}

#define PUT_LIT(out, lit) put((out), (lit), sizeof(lit) - 1)

/*
 * Appends one whole response. keep_alive decides the Connection header:
 * HTTP/1.1 keeps alive without saying so, HTTP/1.0 only when asked.
 * Formatted with plain copies, not printf: this runs once per request.
 */
static void respond(mtls_http_conn *c, int status, const char *body, size_t body_len,
                    const char *extra_headers, int head_only, int keep_alive, int http10)
{
    const char *text = status_text(status);
    size_t extra_len = extra_headers ? strlen(extra_headers) : 0;
    size_t text_len = strlen(text);
    const char *date;
    /* status line, Date, Content-Type, Content-Length, Connection: at most 200 bytes */
    size_t most = 200 + text_len + extra_len + (head_only ? 0 : body_len);
    char *o;

    if (out_reserve(c, most) != 0) {
        c->closing = 1;
        c->close_after_flush = 1;
        return;
    }
    o = c->out + c->out_len;
    o = PUT_LIT(o, "HTTP/1.1 ");
    o += mtls__http_u64(o, (uint64_t)status);
    *o++ = ' ';
    o = put(o, text, text_len);
    o = PUT_LIT(o, "\r\nDate: ");
    date = mtls__http_date();
    o = put(o, date, strlen(date));
    o = PUT_LIT(o, "\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ");
    o += mtls__http_u64(o, body_len);
    o = PUT_LIT(o, "\r\n");
    if (extra_len > 0)
        o = put(o, extra_headers, extra_len);
    if (!keep_alive)
        o = PUT_LIT(o, "Connection: close\r\n");
    else if (http10)
        o = PUT_LIT(o, "Connection: keep-alive\r\n");
    o = PUT_LIT(o, "\r\n");
    if (!head_only)
        o = put(o, body, body_len);
    c->out_len = (size_t)(o - c->out);
    c->bytes_out = head_only ? 0 : body_len;
}

/* An error body: {"error":"...","reason":"..."} with the reason escaped. */
static size_t error_body(char *buf, size_t size, const char *error, const char *reason)
{
    char esc[600];
    int n;

    if (reason == NULL) {
        n = snprintf(buf, size, "{\"error\":\"%s\"}", error);
    } else {
        mtls_json_escape(esc, sizeof(esc), reason, strlen(reason));
        n = snprintf(buf, size, "{\"error\":\"%s\",\"reason\":\"%s\"}", error, esc);
    }
    if (n < 0)
        return 0;
    return (size_t)n < size ? (size_t)n : size - 1;
}

#define PLAIN_HTTP_BODY                                                                            \
    "{\"error\":\"bad request\",\"reason\":\"plain HTTP was sent to this HTTPS port: use "         \
    "https://\"}"

static const char PLAIN_HTTP_ANSWER[] = "HTTP/1.1 400 Bad Request\r\n"
                                        "Content-Type: application/json; charset=utf-8\r\n"
                                        "Content-Length: 87\r\n"
                                        "Connection: close\r\n"
                                        "\r\n" PLAIN_HTTP_BODY;

const char *mtls_http_plain_http_answer(size_t *len)
{
    /* Content-Length above is written by hand: a unit test checks it. */
    *len = sizeof(PLAIN_HTTP_ANSWER) - 1;
    return PLAIN_HTTP_ANSWER;
}

/* ---- routing ---------------------------------------------------------- */

/* The path of the request target, without the query string. */
static size_t path_len(const mtls_http_conn *c)
{
    size_t kept = c->url_len < MTLS_HTTP_URL_KEEP ? c->url_len : MTLS_HTTP_URL_KEEP;
    const char *q = memchr(c->url, '?', kept);

    if (q != NULL)
        return (size_t)(q - c->url);
    return c->url_len; /* may exceed what is kept: then it matches no route */
}

static int path_is(const mtls_http_conn *c, const char *route)
{
    size_t len = strlen(route);

    return path_len(c) == len && memcmp(c->url, route, len) == 0;
}

/* Answers the request that just completed; returns the status sent. */
static int route(mtls_http_conn *c, int keep_alive)
{
    int method = llhttp_get_method(&c->parser);
    int http10 = llhttp_get_http_major(&c->parser) == 1 && llhttp_get_http_minor(&c->parser) == 0;
    int head = method == HTTP_HEAD;
    int get_or_head = method == HTTP_GET || head;
    char body[1024];
    size_t len;

    if (c->peer != NULL && c->peer->denied != NULL) {
        len = error_body(body, sizeof(body), "client certificate required", c->peer->denied);
        respond(c, 403, body, len, NULL, head, keep_alive, http10);
        return 403;
    }
    if (path_is(c, "/test")) {
        if (!get_or_head)
            goto not_allowed;
        respond(c, 200, BODY_TEST, sizeof(BODY_TEST) - 1, NULL, head, keep_alive, http10);
        return 200;
    }
    if (path_is(c, "/whoami")) {
        const char *json = NULL;
        size_t json_len = 0;

        if (!get_or_head)
            goto not_allowed;
        if (c->peer != NULL && c->peer->whoami != NULL)
            json = c->peer->whoami(c->peer->whoami_ctx, &json_len);
        if (json == NULL) {
            len = error_body(body, sizeof(body), "no client identity", NULL);
            respond(c, 500, body, len, NULL, head, keep_alive, http10);
            return 500;
        }
        respond(c, 200, json, json_len, NULL, head, keep_alive, http10);
        return 200;
    }
    len = error_body(body, sizeof(body), "not found", NULL);
    respond(c, 404, body, len, NULL, head, keep_alive, http10);
    return 404;

not_allowed:
    len = error_body(body, sizeof(body), "method not allowed", NULL);
    respond(c, 405, body, len, "Allow: GET, HEAD\r\n", head, keep_alive, http10);
    return 405;
}

/* ---- llhttp callbacks -------------------------------------------------- */

static mtls_http_conn *conn_of(llhttp_t *p)
{
    return (mtls_http_conn *)p->data;
}

static int fail(mtls_http_conn *c, int status, const char *reason)
{
    c->error_status = status;
    c->error_reason = reason;
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    mtls_http_conn *c = conn_of(p);

    c->in_request = 1;
    c->url_len = 0;
    c->url[0] = '\0';
    c->user_agent_len = 0;
    c->referer_len = 0;
    c->field_len = 0;
    c->field_kind = FIELD_OTHER;
    c->header_bytes = 0;
    c->n_headers = 0;
    c->body_bytes = 0;
    c->bytes_out = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    mtls_http_conn *c = conn_of(p);

    if (c->url_len < MTLS_HTTP_URL_KEEP) {
        size_t room = MTLS_HTTP_URL_KEEP - c->url_len;
        size_t n = len < room ? len : room;

        memcpy(c->url + c->url_len, at, n);
        c->url[c->url_len + n] = '\0';
    }
    c->url_len += len;
    if (c->url_len > c->cfg->max_url)
        return fail(c, 414, "request target too long");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    mtls_http_conn *c = conn_of(p);
    size_t room = sizeof(c->field) - 1 - c->field_len;
    size_t n = len < room ? len : room;

    memcpy(c->field + c->field_len, at, n);
    c->field_len += n;
    c->field[c->field_len] = '\0';
    c->header_bytes += len;
    if (c->header_bytes > c->cfg->max_header_bytes)
        return fail(c, 431, "request headers too large");
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    mtls_http_conn *c = conn_of(p);

    c->n_headers++;
    c->header_bytes += 4; /* ": " and CRLF */
    if (c->n_headers > c->cfg->max_headers)
        return fail(c, 431, "too many request headers");
    if (c->field_len == 10 && strncasecmp(c->field, "user-agent", 10) == 0) {
        c->field_kind = FIELD_USER_AGENT;
        c->user_agent_len = 0;
    } else if (c->field_len == 7 && strncasecmp(c->field, "referer", 7) == 0) {
        c->field_kind = FIELD_REFERER;
        c->referer_len = 0;
    } else {
        c->field_kind = FIELD_OTHER;
    }
    c->field_len = 0;
    return 0;
}

static void keep(char *dst, size_t *dst_len, const char *at, size_t len)
{
    size_t room = MTLS_HTTP_FIELD_KEEP - *dst_len;
    size_t n = len < room ? len : room;

    memcpy(dst + *dst_len, at, n);
    *dst_len += n;
    dst[*dst_len] = '\0';
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    mtls_http_conn *c = conn_of(p);

    c->header_bytes += len;
    if (c->header_bytes > c->cfg->max_header_bytes)
        return fail(c, 431, "request headers too large");
    if (c->field_kind == FIELD_USER_AGENT)
        keep(c->user_agent, &c->user_agent_len, at, len);
    else if (c->field_kind == FIELD_REFERER)
        keep(c->referer, &c->referer_len, at, len);
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    mtls_http_conn *c = conn_of(p);

    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->cfg->max_body)
        return fail(c, 413, "request body too large");
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    mtls_http_conn *c = conn_of(p);

    (void)at;
    /* Bodies are read and discarded: no route takes one. */
    c->body_bytes += len;
    if (c->body_bytes > c->cfg->max_body)
        return fail(c, 413, "request body too large");
    return 0;
}

static void log_request(mtls_http_conn *c, int status, int parsed)
{
    char line[16384];
    size_t len;

    if (c->cfg->access_log == NULL)
        return;
    len = mtls__http_log_line(c, status, parsed, line, sizeof(line));
    if (len > 0)
        c->cfg->access_log(c->cfg->access_log_ctx, line, len);
}

static int on_message_complete(llhttp_t *p)
{
    mtls_http_conn *c = conn_of(p);
    int keep_alive = llhttp_should_keep_alive(p) && !c->closing && !p->upgrade;
    int status = route(c, keep_alive);

    log_request(c, status, 1);
    c->requests++;
    c->in_request = 0;
    /* Nothing of this request may show up in the log line of a later error. */
    c->url_len = 0;
    c->url[0] = '\0';
    c->user_agent_len = c->referer_len = 0;
    if (!keep_alive) {
        c->close_after_flush = 1;
        return HPE_PAUSED; /* whatever follows is not ours to answer */
    }
    if (c->out_len >= OUT_HIGH_WATER)
        return HPE_PAUSED; /* write what is queued before parsing more */
    return 0;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- the connection ---------------------------------------------------- */

int mtls_http_conn_init(mtls_http_conn *c, const mtls_http_config *cfg, const mtls_http_peer *peer,
                        const mtls_http_io *io)
{
    memset(c, 0, sizeof(*c));
    c->cfg = cfg;
    c->peer = peer;
    c->io = *io;
    /*
     * Buffers come on first use: a connection that waits between requests
     * holds none of its own when the worker lends a read buffer (cfg).
     */
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    return 0;
}

void mtls_http_conn_release(mtls_http_conn *c)
{
    if (c == NULL)
        return;
    free(c->in);
    free(c->out);
    c->in = NULL;
    c->out = NULL;
    c->in_cap = c->out_cap = 0;
}

/*
 * Why a request could not be parsed, in words for the person who sent it.
 * llhttp's own texts ("Pause on PRI/Upgrade", "Span callback error ...")
 * describe its internals, so none of them reaches a response.
 */
static const char *parse_error_reason(llhttp_errno_t e)
{
    switch (e) {
    case HPE_PAUSED_H2_UPGRADE:
        return "HTTP/2 with prior knowledge (PRI * HTTP/2.0) is not spoken here: this server "
               "speaks HTTP/1.1 over TLS; let the client choose the protocol with ALPN (curl "
               "without --http2-prior-knowledge)";
    case HPE_INVALID_METHOD:
        return "invalid request method";
    case HPE_INVALID_URL:
        return "invalid request target";
    case HPE_INVALID_VERSION:
        return "invalid or unsupported HTTP version";
    case HPE_INVALID_HEADER_TOKEN:
        return "invalid character in a header";
    case HPE_INVALID_CONTENT_LENGTH:
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        return "invalid Content-Length";
    case HPE_INVALID_TRANSFER_ENCODING:
        return "invalid Transfer-Encoding";
    case HPE_INVALID_CHUNK_SIZE:
        return "invalid chunk size in a chunked body";
    case HPE_CR_EXPECTED:
    case HPE_LF_EXPECTED:
    case HPE_STRICT:
        return "lines must end in CRLF";
    default:
        return "the request is not valid HTTP/1.1";
    }
}

/* A request that cannot be parsed or exceeds a limit: answer and close. */
static void parse_error(mtls_http_conn *c, llhttp_errno_t e)
{
    int status = c->error_status ? c->error_status : 400;
    const char *reason = c->error_reason ? c->error_reason : parse_error_reason(e);
    const char *error = status == 400   ? "bad request"
                        : status == 413 ? "request body too large"
                        : status == 414 ? "request target too long"
                                        : "request headers too large";
    char body[1024];
    size_t len;

    len = error_body(body, sizeof(body), error, status == 400 ? reason : NULL);
    respond(c, status, body, len, NULL, 0, 0, 0);
    log_request(c, status, 0);
    c->requests++;
    c->in_request = 0;
    c->closing = 1;
    c->close_after_flush = 1;
}

/*
 * Parses len bytes at data and returns how many were consumed: all of them,
 * unless the parser paused for back-pressure (pipelining).
 */
static size_t parse(mtls_http_conn *c, const char *data, size_t len)
{
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);

    if (e == HPE_OK)
        return len;
    if (e == HPE_PAUSED && !c->close_after_flush) {
        const char *pos = llhttp_get_error_pos(&c->parser);

        llhttp_resume(&c->parser);
        if (pos != NULL && pos >= data && pos <= data + len)
            return (size_t)(pos - data);
        return len;
    }
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
        /* Answered; the connection closes after this response. */
        c->close_after_flush = 1;
        return len;
    }
    parse_error(c, e);
    return len;
}

/* Keeps the unparsed tail of a read in the connection's own buffer. */
static int keep_input(mtls_http_conn *c, const char *data, size_t len)
{
    if (c->in == NULL || c->in_cap < len) {
        /* The lent buffer may be larger than ours; data may lie in ours. */
        size_t cap = len > IN_CAP ? len : IN_CAP;
        char *grown = malloc(cap);

        if (grown == NULL)
            return -1;
        memcpy(grown, data, len);
        free(c->in);
        c->in = grown;
        c->in_cap = cap;
    } else {
        memmove(c->in, data, len);
    }
    c->in_off = 0;
    c->in_len = len;
    return 0;
}

int mtls_http_conn_run(mtls_http_conn *c)
{
    for (;;) {
        char *buf;
        size_t cap;
        long n;

        if (c->out_off < c->out_len) {
            n = c->io.write(c->io.ctx, c->out + c->out_off, c->out_len - c->out_off);
            if (n > 0) {
                c->out_off += (size_t)n;
                if (c->out_off == c->out_len)
                    c->out_off = c->out_len = 0;
                continue;
            }
            if (n == MTLS_IO_WANT_READ)
                return MTLS_HTTP_WANT_READ;
            if (n == MTLS_IO_WANT_WRITE)
                return MTLS_HTTP_WANT_WRITE;
            return MTLS_HTTP_ABORT;
        }
        if (c->close_after_flush)
            return MTLS_HTTP_DONE;
        if (c->in_off < c->in_len) {
            c->in_off += parse(c, c->in + c->in_off, c->in_len - c->in_off);
            if (c->in_off >= c->in_len || c->close_after_flush)
                c->in_off = c->in_len = 0;
            continue;
        }
        /*
         * One read per wake-up: after a read whose requests are answered,
         * wait for the socket again instead of reading until EAGAIN, unless
         * the transport holds bytes the poll would not announce.
         */
        if (c->read_done && (c->io.pending == NULL || !c->io.pending(c->io.ctx))) {
            c->read_done = 0;
            return MTLS_HTTP_WANT_READ;
        }
        if (c->cfg->read_buf != NULL) {
            buf = c->cfg->read_buf;
            cap = c->cfg->read_buf_len;
        } else {
            if (c->in == NULL && keep_input(c, "", 0) != 0)
                return MTLS_HTTP_ABORT;
            buf = c->in;
            cap = c->in_cap;
        }
        n = c->io.read(c->io.ctx, buf, cap);
        if (n > 0) {
            size_t used = parse(c, buf, (size_t)n);

            c->read_done = 1;
            if (used < (size_t)n && !c->close_after_flush &&
                keep_input(c, buf + used, (size_t)n - used) != 0)
                return MTLS_HTTP_ABORT;
            continue;
        }
        c->read_done = 0;
        if (n == MTLS_IO_EOF)
            return MTLS_HTTP_DONE; /* a half-received request is dropped */
        if (n == MTLS_IO_WANT_READ)
            return MTLS_HTTP_WANT_READ;
        if (n == MTLS_IO_WANT_WRITE)
            return MTLS_HTTP_WANT_WRITE;
        return MTLS_HTTP_ABORT;
    }
}

void mtls_http_conn_drain(mtls_http_conn *c)
{
    c->closing = 1;
    if (!c->in_request)
        c->close_after_flush = 1;
}

void mtls_http_conn_timeout(mtls_http_conn *c)
{
    if (c->in_request && !c->close_after_flush) {
        char body[128];
        size_t len = error_body(body, sizeof(body), "request timeout", NULL);

        respond(c, 408, body, len, NULL, 0, 0, 0);
        log_request(c, 408, 0);
        c->in_request = 0;
    }
    c->in_off = c->in_len = 0;
    c->closing = 1;
    c->close_after_flush = 1;
}

int mtls_http_conn_busy(const mtls_http_conn *c)
{
    return c->in_request || c->out_off < c->out_len;
}
