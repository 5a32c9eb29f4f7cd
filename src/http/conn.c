/*
 * An HTTP/1.x connection: llhttp parses what the transport reads; once a
 * request's head is complete it goes through the route table to a handler,
 * which answers at once (appended to one output buffer: pipelined requests
 * parsed from one read share a write) or later (the proxy). Headers are
 * spans into the read buffer. A request that outlives that buffer (answered
 * later, or its body still coming) gets one allocation: the copy of its
 * target, User-Agent and Referer (c->kept), freed with its log line.
 *
 * A request's head is handed to llhttp only once it is whole in one buffer
 * (picohttpparser's rule), so that the header spans a handler sees are
 * contiguous and valid during its call; the parser pauses after every
 * message so that the next head is checked the same way.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <llhttp.h>

#include "grow.h"
#include "http/http_conn.h"
#include "http_internal.h"
#include "mtls/http.h"

#define IN_CAP 16384         /* one TLS record's worth of plaintext */
#define OUT_INITIAL 4096     /* grows on demand (pipelining, /whoami) */
#define OUT_HIGH_WATER 65536 /* stop parsing pipelined requests above this */
#define OUT_LOW_WATER 16384  /* a streaming handler may write again below this */

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

/* Moves the output from the lent buffer into one of c's own (offsets kept). */
static int out_own(mtls_http_conn *c, size_t need)
{
    size_t cap = OUT_INITIAL;
    char *own;

    while (cap < need)
        cap *= 2;
    own = malloc(cap);
    if (own == NULL)
        return -1;
    memcpy(own, c->out, c->out_len);
    c->out = own;
    c->out_cap = cap;
    c->out_lent = 0;
    return 0;
}

/*
 * Room for more output bytes. While c runs and has no buffer of its own,
 * the worker's lent buffer serves (a keep-alive connection then never
 * allocates one); run_done() hands back the lent buffer when run() returns.
 */
static int out_reserve(mtls_http_conn *c, size_t more)
{
    size_t need = c->out_len + more;

    if (c->out_lent)
        return need <= c->out_cap ? 0 : out_own(c, need);
    if (c->out == NULL && c->running && c->cfg->write_buf != NULL &&
        need <= c->cfg->write_buf_len) {
        c->out = c->cfg->write_buf;
        c->out_cap = c->cfg->write_buf_len;
        c->out_lent = 1;
        return 0;
    }
    return mtls__http_grow(&c->out, &c->out_cap, need, OUT_INITIAL, SIZE_MAX);
}

/* Asks the owner to run c again: at once when inside run (the loop goes on). */
static void kick(mtls_http_conn *c)
{
    if (!c->running && c->io.kick != NULL)
        c->io.kick(c->io.ctx);
}

/* ---- responses -------------------------------------------------------- */

const char *mtls__http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
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
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
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

static int is_http10(const mtls_http_conn *c)
{
    return c->parser.http_major == 1 && c->parser.http_minor == 0;
}

/* The status line and, unless with_date is 0, Date (room reserved by the caller: 80 + reason). */
static char *put_status(char *o, int status, const char *reason, size_t reason_len, int with_date)
{
    const char *date = mtls__http_date();

    o = PUT_LIT(o, "HTTP/1.1 ");
    o += mtls__http_u64(o, (uint64_t)status);
    *o++ = ' ';
    o = put(o, reason, reason_len);
    o = PUT_LIT(o, "\r\n");
    if (!with_date)
        return o;
    o = PUT_LIT(o, "Date: ");
    o = put(o, date, strlen(date));
    return PUT_LIT(o, "\r\n");
}

/* Whether header lines ("Name: v\r\n"...) hold a Date (a proxied response keeps the upstream's). */
static int has_date(const char *fields, size_t len)
{
    const char *p = fields, *end = fields + len;

    while (p != NULL && end - p >= 5) {
        if (strncasecmp(p, "date:", 5) == 0)
            return 1;
        p = memchr(p, '\n', (size_t)(end - p));
        if (p != NULL)
            p++;
    }
    return 0;
}

/* The Connection header this response needs (room reserved by the caller). */
static char *put_connection(mtls_http_conn *c, char *o)
{
    if (c->closing)
        c->keep_alive = 0; /* draining began while the request was answered */
    if (!c->keep_alive)
        return PUT_LIT(o, "Connection: close\r\n");
    if (is_http10(c))
        return PUT_LIT(o, "Connection: keep-alive\r\n");
    return o;
}

/*
 * Appends one whole response. c->keep_alive decides the Connection header:
 * HTTP/1.1 keeps alive without saying so, HTTP/1.0 only when asked.
 * Formatted with plain copies, not printf: this runs once per request.
 */
static void respond(mtls_http_conn *c, int status, const char *content_type, const char *body,
                    size_t body_len, const char *extra_headers)
{
    const char *text = mtls__http_status_text(status);
    size_t extra_len = extra_headers ? strlen(extra_headers) : 0;
    size_t text_len = strlen(text);
    size_t type_len = content_type ? strlen(content_type) : 0;
    /* status line, Date, Content-Type, Content-Length, Connection: at most 200 bytes */
    size_t most = 200 + text_len + type_len + extra_len + (c->head_only ? 0 : body_len);
    char *o;

    if (c->h2_stream != NULL) {
        mtls__h2_respond(c, status, content_type, body, body_len, extra_headers);
        return;
    }
    c->status = status;
    if (out_reserve(c, most) != 0) {
        c->closing = 1;
        c->close_after_flush = 1;
        return;
    }
    c->resp_at = c->out_len;
    c->resp_unsent = 1;
    o = put_status(c->out + c->out_len, status, text, text_len, 1);
    if (status == 204) {
        /* No content: neither a type nor a length (RFC 9110 8.6). */
        body_len = 0;
    } else if (content_type == NULL) {
        o = PUT_LIT(o, "Content-Type: application/json; charset=utf-8\r\nContent-Length: ");
    } else {
        o = PUT_LIT(o, "Content-Type: ");
        o = put(o, content_type, type_len);
        o = PUT_LIT(o, "\r\nContent-Length: ");
    }
    if (status != 204) {
        o += mtls__http_u64(o, body_len);
        o = PUT_LIT(o, "\r\n");
    }
    if (extra_len > 0)
        o = put(o, extra_headers, extra_len);
    o = put_connection(c, o);
    o = PUT_LIT(o, "\r\n");
    if (!c->head_only)
        o = put(o, body, body_len);
    c->out_len = (size_t)(o - c->out);
    c->bytes_out = c->head_only ? 0 : body_len;
}

/* An error body: {"error":"...","reason":"..."} with the reason escaped. */
static size_t error_body(char *buf, size_t size, const char *error, const char *reason)
{
    char esc[1200];
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

static void respond_error(mtls_http_conn *c, int status, const char *error, const char *reason,
                          const char *extra_headers)
{
    char body[1400];
    size_t len = error_body(body, sizeof(body), error, reason);

    respond(c, status, NULL, body, len, extra_headers);
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

/* ---- the request's life ------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int mtls__http_keep_fields(mtls_http_conn *c)
{
    size_t u = c->url_len < MTLS_HTTP_URL_KEEP ? c->url_len : MTLS_HTTP_URL_KEEP;
    size_t a = c->user_agent_len, r = c->referer_len;
    char *p, *old = c->kept;

    if (c->url_at == NULL)
        u = 0;
    c->borrowed = 0;
    p = malloc(u + a + r + 3);
    if (p == NULL) {
        mtls__http_drop_fields(c);
        return -1;
    }
    /* Copied before the old copies are freed: the spans may lie in them. */
    if (u > 0)
        memcpy(p, c->url_at, u);
    p[u] = '\0';
    if (a > 0)
        memcpy(p + u + 1, c->user_agent, a);
    p[u + 1 + a] = '\0';
    if (r > 0)
        memcpy(p + u + 1 + a + 1, c->referer, r);
    p[u + 1 + a + 1 + r] = '\0';
    free(old);
    c->kept = p;
    if (c->url_at != NULL)
        c->url_at = p;
    c->user_agent = p + u + 1;
    c->referer = p + u + 1 + a + 1;
    /* The request object goes on with the copy of its target. */
    c->req.target = p;
    c->req.target_len = u;
    if (c->req.path_len > u)
        c->req.path_len = u;
    return 0;
}

void mtls__http_drop_fields(mtls_http_conn *c)
{
    free(c->kept);
    c->kept = NULL;
    c->borrowed = 0;
    c->url_at = NULL;
    c->url_len = 0;
    c->user_agent = c->referer = NULL;
    c->user_agent_len = c->referer_len = 0;
    c->req.target = "";
    c->req.target_len = c->req.path_len = 0;
}

/* Writes the request's log line (and metrics), then lets go of what was kept for it. */
static void log_request(mtls_http_conn *c, int status, int parsed)
{
    char line[16384];
    size_t len;

    if (c->cfg->request_done != NULL) {
        uint64_t now = now_ns();
        long route =
            c->matched != NULL && c->cfg->routes != NULL ? c->matched - c->cfg->routes->v : -1;

        c->cfg->request_done(c->cfg->request_done_ctx, route, status,
                             c->started_ns != 0 && now > c->started_ns ? now - c->started_ns : 0);
        c->started_ns = 0;
        c->matched = NULL;
    }
    if (c->cfg->access_log != NULL) {
        len = mtls__http_log_line(c, status, parsed, line, sizeof(line));
        if (len > 0)
            c->cfg->access_log(c->cfg->access_log_ctx, line, len);
    }
    /* Nothing of this request may show up in the log line of a later error. */
    mtls__http_drop_fields(c);
}

/* Takes the request away from its handler (which is told, if it asked). */
void mtls__http_handler_detach(mtls_http_conn *c, int abort)
{
    void (*on_abort)(void *) = c->req.on_abort;
    void *ctx = c->req.handler_ctx;

    if (!c->handler_active)
        return;
    c->handler_active = 0;
    c->body_paused = 0;
    c->write_high = 0;
    c->req.on_body = NULL;
    c->req.on_body_end = NULL;
    c->req.on_writable = NULL;
    c->req.on_abort = NULL;
    c->req.handler_ctx = NULL;
    if (abort && on_abort != NULL)
        on_abort(ctx);
}

/* Both the request and its response are complete: log it, ready the next. */
void mtls__http_finish_request(mtls_http_conn *c)
{
    log_request(c, c->status, 1);
    c->requests++;
    c->in_request = 0;
    c->msg_done = 0;
    c->resp_started = 0;
    c->resp_done = 0;
    c->route = NULL;
    c->upstream_status = 0;
    c->upstream_ms = 0;
    c->proxied = 0;
    if (!c->keep_alive)
        c->close_after_flush = 1; /* whatever follows is not ours to answer */
}

/* The response is complete (the handler is done with the request). */
void mtls__http_response_done(mtls_http_conn *c)
{
    c->resp_done = 1;
    mtls__http_handler_detach(c, 0);
    if (c->msg_done)
        mtls__http_finish_request(c);
    kick(c);
}

static int request_open(const mtls_http_request *req)
{
    const mtls_http_conn *c = req->conn;

    return c != NULL && !c->resp_done && !c->close_after_flush;
}

int mtls_http_respond(mtls_http_request *req, int status, const char *content_type,
                      const char *body, size_t len, const char *extra_headers)
{
    mtls_http_conn *c = req->conn;

    if (!request_open(req) || c->resp_started)
        return MTLS_E_INVALID;
    respond(c, status, content_type, body, len, extra_headers);
    mtls__http_response_done(c);
    return 0;
}

int mtls_http_respond_error(mtls_http_request *req, int status, const char *error,
                            const char *reason)
{
    char body[1400];
    size_t len = error_body(body, sizeof(body), error, reason);

    return mtls_http_respond(req, status, NULL, body, len, NULL);
}

void mtls_http_send_continue(mtls_http_request *req)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    mtls_http_conn *c = req->conn;

    if (!request_open(req) || c->resp_started || !req->expect_continue || is_http10(c))
        return;
    req->expect_continue = 0; /* once */
    if (c->h2_stream != NULL) {
        mtls__h2_send_continue(c);
        return;
    }
    if (out_reserve(c, sizeof(cont)) != 0)
        return;
    memcpy(c->out + c->out_len, cont, sizeof(cont) - 1);
    c->out_len += sizeof(cont) - 1;
    kick(c);
}

int mtls_http_stream_start(mtls_http_request *req, int status, const char *reason,
                           const char *fields, size_t fields_len, int64_t length)
{
    mtls_http_conn *c = req->conn;
    size_t reason_len;
    char *o;

    if (!request_open(req) || c->resp_started)
        return MTLS_E_INVALID;
    if (c->h2_stream != NULL)
        return mtls__h2_stream_start(c, status, fields, fields_len, length);
    if (reason == NULL)
        reason = mtls__http_status_text(status);
    reason_len = strlen(reason);
    if (out_reserve(c, 160 + reason_len + fields_len) != 0) {
        mtls_http_stream_abort(req);
        return MTLS_E_NOMEM;
    }
    c->status = status;
    c->resp_started = 1;
    c->resp_at = c->out_len;
    c->resp_unsent = 1;
    if (status == 101 && req->upgrade) {
        o = put_status(c->out + c->out_len, status, reason, reason_len, 1);
        o = put(o, fields, fields_len);
        o = PUT_LIT(o, "\r\n");
        c->out_len = (size_t)(o - c->out);
        c->tunnel = 1;
        c->keep_alive = 0;
        kick(c);
        return 0;
    }
    if (c->head_only || status == 204 || status == 304)
        length = MTLS_HTTP_LEN_NONE;
    if (length == MTLS_HTTP_LEN_UNKNOWN && is_http10(c))
        c->keep_alive = 0; /* the end of the body is the end of the connection */
    o = put_status(c->out + c->out_len, status, reason, reason_len, !has_date(fields, fields_len));
    o = put(o, fields, fields_len);
    if (length >= 0) {
        o = PUT_LIT(o, "Content-Length: ");
        o += mtls__http_u64(o, (uint64_t)length);
        o = PUT_LIT(o, "\r\n");
    } else if (length == MTLS_HTTP_LEN_UNKNOWN && !is_http10(c)) {
        o = PUT_LIT(o, "Transfer-Encoding: chunked\r\n");
        c->chunked_out = 1;
    }
    o = put_connection(c, o);
    o = PUT_LIT(o, "\r\n");
    c->out_len = (size_t)(o - c->out);
    kick(c);
    return 0;
}

int mtls_http_stream_write(mtls_http_request *req, const char *data, size_t len)
{
    mtls_http_conn *c = req->conn;
    char *o;

    if (!request_open(req) || !c->resp_started || c->head_only)
        return 0;
    if (c->h2_stream != NULL)
        return mtls__h2_stream_write(c, data, len);
    if (len > 0) {
        if (out_reserve(c, len + 32) != 0) {
            mtls_http_stream_abort(req);
            return 0;
        }
        o = c->out + c->out_len;
        if (c->chunked_out) {
            static const char hex[] = "0123456789abcdef";
            char digits[16];
            size_t n = 0, v = len;

            do {
                digits[n++] = hex[v & 15];
                v >>= 4;
            } while (v != 0);
            while (n > 0)
                *o++ = digits[--n];
            o = PUT_LIT(o, "\r\n");
        }
        o = put(o, data, len);
        if (c->chunked_out)
            o = PUT_LIT(o, "\r\n");
        c->out_len = (size_t)(o - c->out);
        c->bytes_out += len;
        kick(c);
    }
    if (c->out_len - c->out_off >= OUT_HIGH_WATER) {
        c->write_high = 1;
        return 1;
    }
    return 0;
}

void mtls_http_stream_end(mtls_http_request *req)
{
    mtls_http_conn *c = req->conn;

    if (!request_open(req) || !c->resp_started)
        return;
    if (c->h2_stream != NULL) {
        mtls__h2_stream_end(c);
        return;
    }
    if (c->tunnel) {
        /* A tunnel ends with its connection. */
        c->msg_done = 1;
        mtls__http_response_done(c);
        c->close_after_flush = 1;
        return;
    }
    if (c->chunked_out && out_reserve(c, 5) == 0) {
        memcpy(c->out + c->out_len, "0\r\n\r\n", 5);
        c->out_len += 5;
    }
    c->chunked_out = 0;
    mtls__http_response_done(c);
}

void mtls_http_stream_abort(mtls_http_request *req)
{
    mtls_http_conn *c = req->conn;

    if (!request_open(req))
        return;
    if (c->h2_stream != NULL) {
        mtls__h2_stream_abort(c);
        return;
    }
    c->chunked_out = 0;
    c->keep_alive = 0;
    c->closing = 1;
    if (!c->resp_started)
        c->status = 502;
    /* Log it now: the rest of the request will not be read. */
    c->msg_done = 1;
    mtls__http_response_done(c);
    c->close_after_flush = 1;
}

void mtls_http_body_resume(mtls_http_request *req)
{
    mtls_http_conn *c = req->conn;

    if (c == NULL || !c->body_paused)
        return;
    if (c->h2_stream != NULL) {
        mtls__h2_body_resume(c);
        return;
    }
    c->body_paused = 0;
    kick(c);
}

void mtls_http_note_upstream(mtls_http_request *req, int status, uint64_t ms)
{
    if (req->conn == NULL)
        return;
    req->conn->upstream_status = status;
    req->conn->upstream_ms = ms;
    req->conn->proxied = 1;
}

const mtls_http_peer *mtls_http_request_peer(const mtls_http_request *req)
{
    return req->peer;
}

/* ---- routing ---------------------------------------------------------- */

static size_t allow_header(uint64_t methods, char *buf, size_t size)
{
    size_t o = 0;
    int n;

    n = snprintf(buf, size, "Allow: ");
    o = n > 0 ? (size_t)n : 0;
    for (int m = 0; m < 64 && o < size; m++) {
        const char *name;

        if (!(methods & MTLS_METHOD(m)))
            continue;
        name = llhttp_method_name((llhttp_method_t)m);
        n = snprintf(buf + o, size - o, "%s%s", o > 7 ? ", " : "", name);
        o = n > 0 ? o + (size_t)n : size;
    }
    if (o + 3 > size)
        return 0;
    memcpy(buf + o, "\r\n", 3);
    return o + 2;
}

/* GET or HEAD /favicon.ico: browsers ask on every page. */
static int is_favicon(const mtls_http_request *req)
{
    return (req->method == HTTP_GET || req->method == HTTP_HEAD) && req->path_len == 12 &&
           memcmp(req->target, "/favicon.ico", 12) == 0;
}

/*
 * Answers a refusal of the route table (403, 404, 405): an HTML page when
 * Accept prefers it (pages.c), the JSON error otherwise; both vary on
 * Accept. A favicon that would be refused is 204 instead, so that a page
 * load costs no error line. allow is the 405's "Allow: ...\r\n" line or NULL.
 */
static void refuse_answer(mtls_http_conn *c, int status, const char *error, const char *reason,
                          const char *allow)
{
    const mtls_http_request *req = &c->req;
    size_t allow_len = allow ? strlen(allow) : 0;
    /* the Allow line (at most 200 bytes, allow_header) and the HTML headers */
    char extra[200 + sizeof(MTLS__HTTP_HTML_HEADERS)];
    mtls_strbuf page = {0};

    if (is_favicon(req)) {
        respond(c, 204, NULL, "", 0, "Cache-Control: max-age=86400\r\n");
        return;
    }
    if (allow_len >= 200) { /* cannot happen: allow_header() writes less */
        allow = NULL;
        allow_len = 0;
    }
    if (mtls__http_prefers_html(req->headers, req->n_headers)) {
        char methods[200] = "";

        if (allow_len > 9) /* "Allow: " ... "\r\n" */
            snprintf(methods, sizeof(methods), "%.*s", (int)(allow_len - 9), allow + 7);
        snprintf(extra, sizeof(extra), "%s%s", allow ? allow : "", MTLS__HTTP_HTML_HEADERS);
        if (mtls__http_page_refusal(&page, status, error, reason, req, allow ? methods : NULL) ==
            0) {
            respond(c, status, MTLS__HTTP_HTML_TYPE, page.p, page.len, extra);
            mtls_strbuf_release(&page);
            return;
        }
        mtls_strbuf_release(&page); /* out of memory: the JSON then */
    }
    snprintf(extra, sizeof(extra), "%sVary: Accept\r\n", allow ? allow : "");
    respond_error(c, status, error, reason, extra);
}

static void refuse(mtls_http_conn *c, int status, const char *error, const char *reason,
                   const char *allow)
{
    refuse_answer(c, status, error, reason, allow);
    c->resp_done = 1;
}

/* The route table's word on this request, or a refusal it answers itself. */
int mtls__http_dispatch(mtls_http_conn *c)
{
    mtls_http_request *req = &c->req;
    const mtls_http_routes *t = c->cfg->routes ? c->cfg->routes : mtls__http_builtin_routes();
    const mtls_http_peer *peer = c->peer;
    const mtls_http_route *route;
    uint64_t allow = 0;
    char extra[200];

    route = mtls_http_routes_match(t, req->method, req->target, req->path_len, &allow);
    c->matched = route;
    if (peer != NULL && peer->denied != NULL &&
        (route == NULL || !(route->flags & MTLS_ROUTE_UNVERIFIED))) {
        refuse(c, 403, "client certificate required", peer->denied, NULL);
        return 0;
    }
    if ((route == NULL || !(route->flags & MTLS_ROUTE_BODY)) &&
        req->content_length > (int64_t)c->cfg->max_body)
        return -1; /* 413 before anything is answered */
    if (route == NULL) {
        if (allow != 0 && allow_header(allow, extra, sizeof(extra)) > 0)
            refuse(c, 405, "method not allowed", NULL, extra);
        else
            refuse(c, 404, "not found", NULL, NULL);
        return 0;
    }
    if (route->policy >= 0 && peer != NULL && (peer->policy_denied >> route->policy) & 1) {
        char reason[1024];
        const char *rules = (size_t)route->policy < t->n_policies && t->policy_text != NULL
                                ? t->policy_text[route->policy]
                                : "none";
        int plen = req->path_len > 200 ? 200 : (int)req->path_len;

        if (is_favicon(req) && !t->dry_run) {
            refuse(c, 403, "forbidden", NULL, NULL); /* 204, and no system-log line */
            return 0;
        }

        snprintf(reason, sizeof(reason), "%s is not allowed on %.*s; allowed: %s",
                 peer->who ? peer->who : "this client", plen, req->target, rules);
        if (c->cfg->event != NULL) {
            char msg[1100];

            snprintf(msg, sizeof(msg), "%s%s", t->dry_run ? "dry run, let through: " : "", reason);
            c->cfg->event(c->cfg->event_ctx, peer, "request_denied", msg);
        }
        if (!t->dry_run) {
            refuse(c, 403, "forbidden", reason, NULL);
            return 0;
        }
    }
    c->route = route;
    req->route_path = route->path;
    c->handler_active = 1;
    if (route->handler(route->ctx, req) < 0 && !c->resp_started && !c->resp_done) {
        mtls__http_handler_detach(c, 1);
        respond_error(c, 500, "internal error", NULL, NULL);
        c->resp_done = 1;
    }
    return 0;
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

static mtls_http_header *header_array(mtls_http_conn *c)
{
    if (c->cfg->header_buf != NULL && c->cfg->header_buf_len >= c->cfg->max_headers)
        return c->cfg->header_buf;
    return c->own_headers;
}

static int on_message_begin(llhttp_t *p)
{
    mtls_http_conn *c = conn_of(p);

    if (c->own_headers == NULL && header_array(c) == NULL) {
        c->own_headers = calloc(c->cfg->max_headers + 1, sizeof(*c->own_headers));
        if (c->own_headers == NULL)
            return fail(c, 500, "out of memory");
    }
    c->in_request = 1;
    c->in_head = 1;
    c->msg_started = 1;
    c->msg_done = 0;
    c->resp_started = c->resp_done = 0;
    c->tunnel = 0;
    c->exec_begin = c->exec_count;
    if (c->url_at != NULL || c->kept != NULL)
        mtls__http_drop_fields(c); /* cannot happen: a request's log line drops them */
    c->borrowed = 1;
    c->in_field = 0;
    c->header_bytes = 0;
    c->n_headers = 0;
    c->body_bytes = 0;
    c->bytes_out = 0;
    c->status = 0;
    c->upstream_status = 0;
    c->upstream_ms = 0;
    c->proxied = 0;
    c->matched = NULL;
    if (c->cfg->request_done != NULL)
        c->started_ns = now_ns();
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    mtls_http_conn *c = conn_of(p);

    /* A span in the buffer being parsed (borrowed: see consume()). */
    if (c->url_at == NULL)
        c->url_at = at;
    c->url_len += len;
    if (c->url_len > c->cfg->max_url)
        return fail(c, 414, "request target too long");
    return 0;
}

/*
 * Header names and values are spans into the buffer being parsed: the whole
 * head is in it (see consume()), so a span that llhttp reports in pieces is
 * still contiguous and only its end moves.
 */
static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    mtls_http_conn *c = conn_of(p);
    mtls_http_header *h;

    c->header_bytes += len;
    if (c->header_bytes > c->cfg->max_header_bytes)
        return fail(c, 431, "request headers too large");
    if (!c->in_field) {
        if (c->n_headers >= c->cfg->max_headers)
            return fail(c, 431, "too many request headers");
        h = &header_array(c)[c->n_headers];
        h->name = at;
        h->value = "";
        h->value_len = 0;
        c->in_field = 1;
    } else {
        h = &header_array(c)[c->n_headers];
    }
    h->name_len = (size_t)(at + len - h->name);
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    mtls_http_conn *c = conn_of(p);

    c->in_field = 0;
    c->n_headers++;
    c->header_bytes += 4; /* ": " and CRLF */
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    mtls_http_conn *c = conn_of(p);
    mtls_http_header *h = &header_array(c)[c->n_headers - 1];

    c->header_bytes += len;
    if (c->header_bytes > c->cfg->max_header_bytes)
        return fail(c, 431, "request headers too large");
    if (h->value_len == 0)
        h->value = at;
    h->value_len = (size_t)(at + len - h->value);
    return 0;
}

/* Fills the request object from the parsed head; notes what the log needs. */
static void request_fill(mtls_http_conn *c)
{
    llhttp_t *p = &c->parser;
    mtls_http_request *req = &c->req;
    const mtls_http_header *h = header_array(c);
    const char *q;

    memset(req, 0, sizeof(*req));
    req->conn = c;
    req->peer = c->peer;
    req->method = p->method;
    req->method_name = llhttp_method_name((llhttp_method_t)p->method);
    req->target = c->url_at ? c->url_at : "";
    req->target_len = c->url_at ? c->url_len : 0;
    q = memchr(req->target, '?', req->target_len);
    req->path_len = q ? (size_t)(q - req->target) : req->target_len;
    req->http_minor = p->http_minor;
    req->headers = h;
    req->n_headers = c->n_headers;
    req->content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    req->chunked = (p->flags & F_CHUNKED) != 0;
    for (size_t i = 0; i < c->n_headers; i++) {
        if (h[i].name_len == 10 && strncasecmp(h[i].name, "user-agent", 10) == 0)
            mtls__http_keep_span(&c->user_agent, &c->user_agent_len, h[i].value, h[i].value_len);
        else if (h[i].name_len == 7 && strncasecmp(h[i].name, "referer", 7) == 0)
            mtls__http_keep_span(&c->referer, &c->referer_len, h[i].value, h[i].value_len);
        else if (h[i].name_len == 6 && strncasecmp(h[i].name, "expect", 6) == 0 &&
                 h[i].value_len == 12 && strncasecmp(h[i].value, "100-continue", 12) == 0)
            req->expect_continue = 1;
    }
    c->keep_alive = llhttp_should_keep_alive(p) && !c->closing && !p->upgrade;
    req->keep_alive = c->keep_alive;
    req->upgrade = p->upgrade && p->method != HTTP_CONNECT;
    c->head_only = p->method == HTTP_HEAD;
    c->chunked_out = 0;
}

static int on_headers_complete(llhttp_t *p)
{
    mtls_http_conn *c = conn_of(p);

    if (c->exec_begin != c->exec_count)
        return fail(c, 400, "the request head did not arrive whole"); /* cannot happen */
    c->in_head = 0;
    request_fill(c);
    if (mtls__http_dispatch(c) != 0)
        return fail(c, 413, "request body too large");
    /* Header spans are valid during the handler call only (the target: see consume()). */
    c->req.headers = NULL;
    c->req.n_headers = 0;
    if (c->close_after_flush)
        return HPE_PAUSED;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    mtls_http_conn *c = conn_of(p);

    c->body_bytes += len;
    if (c->handler_active && c->req.on_body != NULL) {
        if (c->req.on_body(c->req.handler_ctx, at, len) == MTLS_HTTP_BODY_PAUSE) {
            c->body_paused = c->handler_active; /* unless it finished meanwhile */
            return HPE_PAUSED;
        }
        return 0;
    }
    /* Nobody reads this body: it is discarded, up to max_body. */
    if (c->body_bytes > c->cfg->max_body && !(c->route && (c->route->flags & MTLS_ROUTE_BODY))) {
        if (!c->resp_started && !c->resp_done)
            return fail(c, 413, "request body too large");
        c->keep_alive = 0;
        c->msg_done = 1;
        mtls__http_finish_request(c); /* answered already: log it and close */
        return HPE_PAUSED;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    mtls_http_conn *c = conn_of(p);

    c->msg_started = 0;
    c->msg_done = 1;
    if (c->handler_active && c->req.on_body_end != NULL)
        c->req.on_body_end(c->req.handler_ctx); /* it may answer now */
    if (c->resp_done && c->in_request)
        mtls__http_finish_request(c);
    /* Pause after every message: the next head is checked for wholeness first. */
    return HPE_PAUSED;
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
    if (c->h2 != NULL)
        mtls__h2_release(c);
    mtls__http_handler_detach(c, 1);
    free(c->in);
    if (!c->out_lent)
        free(c->out);
    free(c->own_headers);
    mtls__http_drop_fields(c);
    c->in = NULL;
    c->out = NULL;
    c->out_lent = 0;
    c->own_headers = NULL;
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
        return "HTTP/2 with prior knowledge (PRI * HTTP/2.0) is not spoken here: HTTP/2 is "
               "chosen with ALPN in the TLS handshake (curl --http2, without "
               "--http2-prior-knowledge)";
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
                        : status == 500 ? "internal error"
                                        : "request headers too large";

    mtls__http_handler_detach(c, 1);
    c->keep_alive = 0;
    c->head_only = 0;
    if ((c->resp_started || c->resp_done) && c->resp_unsent && c->in_request) {
        /* Answered from the head, but nothing of it was sent: the 400 takes its place. */
        c->out_len = c->resp_at;
        c->resp_started = c->resp_done = 0;
        c->chunked_out = 0;
        c->bytes_out = 0;
    }
    if (c->resp_started || c->resp_done) {
        /* A response is on its way: it cannot be replaced; cut it short. */
        c->status = c->status ? c->status : status;
    } else {
        respond_error(c, status, error, status == 400 ? reason : NULL, NULL);
    }
    log_request(c, c->status, 0);
    c->requests++;
    c->in_request = 0;
    c->in_head = 0;
    c->closing = 1;
    c->close_after_flush = 1;
}

/* The bytes of data before the point where llhttp paused (all when it does not say). */
static size_t paused_at(const mtls_http_conn *c, const char *data, size_t len)
{
    const char *pos = llhttp_get_error_pos(&c->parser);

    if (pos != NULL && pos >= data && pos <= data + len)
        return (size_t)(pos - data);
    return len;
}

/*
 * Parses len bytes at data and returns how many were consumed: up to the end
 * of a message (the parser pauses after each), or all of them.
 */
static size_t parse(mtls_http_conn *c, const char *data, size_t len)
{
    llhttp_errno_t e;

    c->exec_count++;
    e = llhttp_execute(&c->parser, data, len);
    if (e == HPE_OK)
        return len;
    if (e == HPE_PAUSED && !c->close_after_flush) {
        size_t used = paused_at(c, data, len);

        llhttp_resume(&c->parser);
        return used;
    }
    if (e == HPE_PAUSED_UPGRADE && c->handler_active && c->req.upgrade)
        return paused_at(c, data, len); /* the rest is the tunnel's, if the handler opens one */
    if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
        /* Answered; the connection closes after this response. */
        c->close_after_flush = 1;
        return len;
    }
    parse_error(c, e);
    return len;
}

/* Whether a whole request head (up to its blank line) is in data. */
static int head_complete(const char *data, size_t len)
{
    const char *end = data + len, *p = data;

    while (p < end && (*p == '\r' || *p == '\n'))
        p++; /* blank lines before a request are allowed (RFC 9112 2.2) */
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        p++;
        if (p < end && *p == '\n')
            return 1;
        if (p + 1 < end && p[0] == '\r' && p[1] == '\n')
            return 1;
    }
    return 0;
}

/* Bytes of a request head wait in c->in for the rest of it. */
static int head_pending(const mtls_http_conn *c)
{
    return !c->msg_started && c->in_off < c->in_len;
}

/* The most a head may take before it is refused (431) without its end. */
static size_t head_limit(const mtls_http_conn *c)
{
    return c->cfg->max_url + c->cfg->max_header_bytes + 2 * (size_t)c->cfg->max_headers + 1024;
}

/* Whether parsing must wait: a handler answers, or wants no body for now. */
static int parse_blocked(const mtls_http_conn *c)
{
    return c->close_after_flush || c->body_paused || (c->msg_done && c->in_request && !c->tunnel);
}

/* A tunnel's bytes go to the handler as they are; all are taken. */
static size_t tunnel_in(mtls_http_conn *c, const char *data, size_t len)
{
    if (c->handler_active && c->req.on_body != NULL &&
        c->req.on_body(c->req.handler_ctx, data, len) == MTLS_HTTP_BODY_PAUSE)
        c->body_paused = c->handler_active;
    return len;
}

/*
 * Parses what can be parsed of data now and returns the bytes consumed: it
 * stops at a head that is not whole yet, and while parsing is blocked.
 */
static size_t consume(mtls_http_conn *c, const char *data, size_t len)
{
    size_t used = 0;

    if (c->tunnel)
        return parse_blocked(c) ? 0 : tunnel_in(c, data, len);
    while (used < len && !parse_blocked(c)) {
        if (!c->msg_started && !head_complete(data + used, len - used)) {
            if (len - used > head_limit(c)) {
                c->error_status = 431;
                c->error_reason = "request headers too large";
                c->in_request = 1;
                parse_error(c, HPE_USER);
                return len;
            }
            break;
        }
        used += parse(c, data + used, len - used);
        /*
         * A request still in flight outlives the buffer it was parsed from
         * (the worker's read buffer serves every connection): its target,
         * User-Agent and Referer are copied now, not for every request.
         */
        if (c->borrowed && c->in_request)
            mtls__http_keep_fields(c);
    }
    return used;
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

/* Room after in_len for a read that completes a head held in c->in. */
static int in_make_room(mtls_http_conn *c)
{
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    return mtls__http_grow(&c->in, &c->in_cap, c->in_len + 1, IN_CAP, SIZE_MAX);
}

/* After a write: a streaming handler that waited for room may go on. */
static void maybe_writable(mtls_http_conn *c)
{
    if (c->write_high && c->out_len - c->out_off < OUT_LOW_WATER) {
        c->write_high = 0;
        if (c->handler_active && c->req.on_writable != NULL)
            c->req.on_writable(c->req.handler_ctx);
    }
}

static int run(mtls_http_conn *c)
{
    for (;;) {
        char *buf;
        size_t cap;
        long n;

        if (c->out_off < c->out_len) {
            n = c->io.write(c->io.ctx, c->out + c->out_off, c->out_len - c->out_off);
            if (n > 0) {
                c->resp_unsent = 0;
                c->out_off += (size_t)n;
                if (c->out_off == c->out_len)
                    c->out_off = c->out_len = 0;
                maybe_writable(c);
                continue;
            }
            if (n == MTLS_IO_WANT_READ)
                return MTLS_HTTP_WANT_READ;
            if (n == MTLS_IO_WANT_WRITE)
                return MTLS_HTTP_WANT_WRITE;
            return MTLS_HTTP_ABORT;
        }
        maybe_writable(c);
        if (c->close_after_flush)
            return MTLS_HTTP_DONE;
        if (parse_blocked(c))
            return MTLS_HTTP_WAIT;
        if (c->in_off < c->in_len) {
            size_t used = consume(c, c->in + c->in_off, c->in_len - c->in_off);

            c->in_off += used;
            if (c->in_off >= c->in_len || c->close_after_flush)
                c->in_off = c->in_len = 0;
            if (used > 0 || parse_blocked(c) || c->out_off < c->out_len)
                continue;
            /* A head that is not whole: read more behind it. */
            if (c->read_done && (c->io.pending == NULL || !c->io.pending(c->io.ctx))) {
                c->read_done = 0;
                return MTLS_HTTP_WANT_READ;
            }
            if (in_make_room(c) != 0)
                return MTLS_HTTP_ABORT;
            n = c->io.read(c->io.ctx, c->in + c->in_len, c->in_cap - c->in_len);
            if (n > 0) {
                c->in_len += (size_t)n;
                c->read_done = 1;
                continue;
            }
            goto read_failed;
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
            size_t used = consume(c, buf, (size_t)n);

            c->read_done = 1;
            if (used < (size_t)n && !c->close_after_flush &&
                keep_input(c, buf + used, (size_t)n - used) != 0)
                return MTLS_HTTP_ABORT;
            continue;
        }
    read_failed:
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

/*
 * run() returned: the lent output buffer goes back to the worker (what the
 * socket did not take moves to c's own), and a connection that waits for
 * its next request frees the input buffer a split head made it take.
 */
static int run_done(mtls_http_conn *c, int r)
{
    if (c->out_lent) {
        if (c->out_off < c->out_len) {
            if (out_own(c, c->out_len) != 0)
                return MTLS_HTTP_ABORT;
        } else {
            c->out = NULL;
            c->out_cap = c->out_off = c->out_len = 0;
            c->out_lent = 0;
        }
    }
    if (c->in != NULL && c->in_off >= c->in_len && c->cfg->read_buf != NULL) {
        free(c->in);
        c->in = NULL;
        c->in_cap = c->in_off = c->in_len = 0;
    }
    return r;
}

int mtls_http_conn_run(mtls_http_conn *c)
{
    int r;

    if (c->h2 != NULL)
        return mtls__h2_run(c);
    c->running = 1;
    r = run(c);
    c->running = 0;
    return run_done(c, r);
}

void mtls_http_conn_drain(mtls_http_conn *c)
{
    c->closing = 1;
    if (c->h2 != NULL) {
        mtls__h2_drain(c);
        return;
    }
    if (!c->in_request && !head_pending(c))
        c->close_after_flush = 1;
}

void mtls_http_conn_timeout(mtls_http_conn *c)
{
    if (c->h2 != NULL) {
        mtls__h2_timeout(c);
        return;
    }
    if ((c->in_request || head_pending(c)) && !c->close_after_flush && !c->resp_started) {
        mtls__http_handler_detach(c, 1);
        c->keep_alive = 0;
        c->head_only = 0;
        respond_error(c, 408, "request timeout", NULL, NULL);
        log_request(c, 408, 0);
        c->in_request = 0;
    }
    mtls__http_handler_detach(c, 1);
    c->in_off = c->in_len = 0;
    c->closing = 1;
    c->close_after_flush = 1;
}

int mtls_http_conn_busy(const mtls_http_conn *c)
{
    if (c->h2 != NULL)
        return mtls__h2_busy(c);
    return c->in_request || head_pending(c) || c->out_off < c->out_len;
}

int mtls_http_conn_in_head(const mtls_http_conn *c)
{
    if (c->h2 != NULL)
        return 0; /* frames, not a head: the idle timeout covers a stalled peer */
    return (c->in_request && c->in_head) || head_pending(c);
}
