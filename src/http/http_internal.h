/* Internal helpers of src/http, shared between its files. */
#ifndef MTLS_HTTP_INTERNAL_H
#define MTLS_HTTP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "http/http_conn.h"
#include "mtls/app.h"
#include "mtls/http.h"

/** Writes v in decimal (at most 20 digits, no NUL) at out; returns the digit count. */
size_t mtls__http_u64(char *out, uint64_t v);

/** The IMF-fixdate of this second ("Thu, 26 Nov 2026 23:59:59 GMT"), cached per thread. */
const char *mtls__http_date(void);

/**
 * Formats the access-log line of c's current request (combined or JSON, as
 * c->cfg says) into buf, ending in '\n'. parsed is 0 when the request was
 * refused before it was complete. Returns the length, 0 when buf is too small.
 */
size_t mtls__http_log_line(const mtls_http_conn *c, int status, int parsed, char *buf, size_t size);

/** The built-in route table (/test, /whoami, and / as /whoami) for configs that name none. */
const mtls_http_routes *mtls__http_builtin_routes(void);

/* ---- shared by conn.c (HTTP/1.x) and h2.c (HTTP/2) ---- */

/** Routes c->req (filled by the caller) to its handler, or answers a refusal. -1: 413. */
int mtls__http_dispatch(mtls_http_conn *c);

/**
 * Copies c's target, User-Agent and Referer out of the buffer they were
 * parsed from (c->url_at and the others, cut to MTLS_HTTP_URL_KEEP and
 * MTLS_HTTP_FIELD_KEEP) into c->kept and points them and the request
 * object there, for a request that outlives that buffer. Returns 0, or -1
 * when out of memory (the request then goes on without them).
 */
int mtls__http_keep_fields(mtls_http_conn *c);

/** Forgets c's target, User-Agent and Referer and frees their copies (after the log line). */
void mtls__http_drop_fields(mtls_http_conn *c);

/** Notes a header's value for the log line (a span, borrowed), cut to MTLS_HTTP_FIELD_KEEP. */
static inline void mtls__http_keep_span(const char **at, uint16_t *len, const char *value,
                                        size_t value_len)
{
    *at = value;
    *len = (uint16_t)(value_len < MTLS_HTTP_FIELD_KEEP ? value_len : MTLS_HTTP_FIELD_KEEP);
}

/** Logs c's request and readies c for the next one (request and response complete). */
void mtls__http_finish_request(mtls_http_conn *c);

/** Takes the request away from its handler (on_abort called when abort is set). */
void mtls__http_handler_detach(mtls_http_conn *c, int abort);

/** The response is complete: detach the handler, log when the request is complete too. */
void mtls__http_response_done(mtls_http_conn *c);

/** The standard reason phrase of status ("Not Found"). */
const char *mtls__http_status_text(int status);

/* h2.c: what conn.c forwards when c->h2 (a session) or c->h2_stream (a stream) is set. */
int mtls__h2_run(mtls_http_conn *c);
void mtls__h2_drain(mtls_http_conn *c);
void mtls__h2_timeout(mtls_http_conn *c);
int mtls__h2_busy(const mtls_http_conn *c);
void mtls__h2_release(mtls_http_conn *c);
void mtls__h2_respond(mtls_http_conn *c, int status, const char *content_type, const char *body,
                      size_t body_len, const char *extra_headers);
int mtls__h2_stream_start(mtls_http_conn *c, int status, const char *fields, size_t fields_len,
                          int64_t length);
int mtls__h2_stream_write(mtls_http_conn *c, const char *data, size_t len);
void mtls__h2_stream_end(mtls_http_conn *c);
void mtls__h2_stream_abort(mtls_http_conn *c);
void mtls__h2_body_resume(mtls_http_conn *c);
void mtls__h2_send_continue(mtls_http_conn *c);
/* ---- pages.c: HTML for people in browsers ---- */

/* The header lines of every HTML answer: a strict Content-Security-Policy
   (no script, no external asset, the inline style only), nosniff, no
   caching of identity pages, Vary: Accept. */
#define MTLS__HTTP_HTML_TYPE "text/html; charset=utf-8"
#define MTLS__HTTP_HTML_HEADERS                                                                    \
    "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "    \
    "form-action 'none'; frame-ancestors 'none'\r\n"                                               \
    "X-Content-Type-Options: nosniff\r\n"                                                          \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "Cache-Control: no-store\r\n"                                                                  \
    "Vary: Accept\r\n"

/**
 * 1 when the Accept header lines among h[0, n) prefer text/html to
 * application/json (q-values, the most specific range deciding for each);
 * no Accept, a tie or "*" "/" "*" alone: 0 (JSON).
 */
int mtls__http_prefers_html(const mtls_http_header *h, size_t n);

/** Appends s (n bytes) to b as HTML text: & < > " ' as references, control bytes as \xNN. */
void mtls__html_text(mtls_strbuf *b, const char *s, size_t n);

/** Appends the identity page made from the /whoami JSON to b. Returns 0 or -1. */
int mtls__http_page_whoami(mtls_strbuf *b, const char *json, size_t len);

/**
 * Appends the page of a refusal (403, 404, 405, or another status with its
 * error and reason) for req to b; allow is the 405's method list or NULL.
 * Returns 0 or -1 (out of memory).
 */
int mtls__http_page_refusal(mtls_strbuf *b, int status, const char *error, const char *reason,
                            const mtls_http_request *req, const char *allow);

/**
 * 1 when path (len bytes) matches pattern (plen bytes, with ":name"
 * segments); then, when name is one of them, *value and *value_len get its
 * span in path.
 */
int mtls__http_params_match(const char *pattern, size_t plen, const char *path, size_t len,
                            const char *name, const char **value, size_t *value_len);

/* An mtls/app.h handler on the route table: the ctx of mtls__api_dispatch(). */
struct mtls__api_route {
    mtls_handler_fn fn;
    void *ctx;
};

/** The route table's handler for every mtls/app.h handler (ctx: a struct mtls__api_route). */
int mtls__api_dispatch(void *ctx, mtls_http_request *req);

#endif
