/*
 * mtls/http_response.h - an incremental HTTP/1.x response parser on llhttp,
 * for every client side of mtls: the probe, the load generator, the demo and
 * a reverse proxy's upstream connections.
 *
 * Bytes are fed in pieces of any size as they arrive; the parser copies the
 * status line and the headers (so they stay valid whatever happens to the
 * caller's read buffer), says how the body is framed (Content-Length,
 * chunked, or until the server closes), hands decoded body bytes to a
 * callback and/or keeps the first of them, and says where a response ends,
 * so that a keep-alive connection can parse the next one from the bytes
 * after it. Interim 1xx responses (100 Continue) are skipped.
 *
 * Part of src/http (src/http/response.c); like the rest of that layer it
 * knows nothing of TLS or sockets.
 */
#ifndef MTLS_HTTP_RESPONSE_H
#define MTLS_HTTP_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "mtls/base.h"
#include "mtls/http_header.h"

#ifdef __cplusplus
extern "C" {
#endif

/** What mtls_http_response_feed() and mtls_http_response_eof() return besides errors. */
enum {
    MTLS_HTTP_RESPONSE_MORE = 0, /* incomplete: feed more bytes (all given were used) */
    MTLS_HTTP_RESPONSE_DONE = 1, /* one whole response was read */
};

/** How the body of a response is delimited (RFC 9112 section 6.3). */
typedef enum mtls_http_framing {
    MTLS_HTTP_FRAMING_NONE = 0, /* no body: 1xx, 204, 304, a HEAD request's answer */
    MTLS_HTTP_FRAMING_LENGTH,   /* Content-Length bytes (content_length, may be 0) */
    MTLS_HTTP_FRAMING_CHUNKED,  /* Transfer-Encoding: chunked */
    MTLS_HTTP_FRAMING_CLOSE,    /* everything until the server closes */
} mtls_http_framing;

typedef struct mtls_http_response mtls_http_response;

/** Limits and callbacks. Caller-owned, copied by mtls_http_response_init(). */
typedef struct mtls_http_response_opts {
    size_t max_head;      /* bytes of the reason and the header names and values; 0: 64 KiB */
    unsigned max_headers; /* header lines; 0: 100 */
    size_t keep_body;     /* body bytes kept in body (more sets body_truncated); 0: none */
    int head_request;     /* the request was HEAD: the answer has no body, whatever it says */
    /*
     * Called once the head is complete (status, reason, headers, framing
     * are set). A nonzero return stops the parser with an error. May be NULL.
     */
    int (*on_head)(void *arg, const mtls_http_response *r);
    /*
     * Called with decoded body bytes (chunk framing removed); data is
     * borrowed for the call. A nonzero return stops the parser. May be NULL.
     */
    int (*on_body)(void *arg, const char *data, size_t len);
    void *arg;
} mtls_http_response_opts;

/**
 * A response being parsed. Caller-owned storage: mtls_http_response_init(),
 * then _feed() and _eof(), _reset() between responses on one connection,
 * _release() at the end. Every field is read-only for the caller.
 */
struct mtls_http_response {
    /* valid once head_done */
    int status; /* 200 */
    int http_major, http_minor;
    const char *reason;        /* "OK" (may be ""); owned by the parser */
    mtls_http_header *headers; /* in the order sent; owned by the parser */
    size_t n_headers;
    mtls_http_framing framing;
    uint64_t content_length; /* when framing is MTLS_HTTP_FRAMING_LENGTH */
    int head_done;

    /* the body */
    uint64_t body_bytes; /* decoded body bytes seen so far */
    char *body;          /* the first keep_body bytes, NUL-terminated, or NULL */
    size_t body_len;
    int body_truncated; /* more than keep_body bytes came */

    /* the end */
    int done;        /* the whole response was read */
    int keep_alive;  /* once done: the connection may carry the next request */
    char error[160]; /* why the response is broken, once an error was returned */

    /* private */
    mtls_http_response_opts opts;
    llhttp_t parser;
    char *buf; /* the reason and the header copies, NUL-separated */
    size_t buf_len, buf_cap;
    size_t reason_off;
    size_t (*spans)[4]; /* name offset and length, value offset and length */
    size_t n_spans, spans_cap, headers_cap;
    size_t field_off, value_off;
    size_t body_cap;
    int in_field, in_value;
    int started; /* a byte was fed */
    int failed;  /* an error was returned (MTLS_E_*) */
};

/** Prepares r for a first response. opts may be NULL (defaults, no callbacks). */
void mtls_http_response_init(mtls_http_response *r, const mtls_http_response_opts *opts);

/**
 * Parses len bytes at data (any piece of the stream; data is borrowed).
 * Returns MTLS_HTTP_RESPONSE_MORE when every byte was used and the response
 * is not complete yet; MTLS_HTTP_RESPONSE_DONE when it is complete, with
 * *used (may be NULL) the bytes that belong to it (what follows is the next
 * response's: call mtls_http_response_reset() and feed it); MTLS_E_INVALID
 * with r->error saying what is wrong (not HTTP, a bad header, a limit
 * exceeded, a callback refused) or MTLS_E_NOMEM. After DONE or an error,
 * further feeds return the same without reading anything.
 */
int mtls_http_response_feed(mtls_http_response *r, const char *data, size_t len, size_t *used);

/**
 * Tells the parser the server closed the connection. Returns
 * MTLS_HTTP_RESPONSE_DONE when that completes the response (a body framed by
 * the close, or a response already done), MTLS_E_INVALID with r->error set
 * when the response was cut short or none began.
 */
int mtls_http_response_eof(mtls_http_response *r);

/** Forgets the last response (keeping its buffers) to parse the next one on a connection. */
void mtls_http_response_reset(mtls_http_response *r);

/** Frees what r owns. Safe on a zeroed struct and twice. */
void mtls_http_response_release(mtls_http_response *r);

/**
 * The value of the first header called name (any case), NUL-terminated and
 * owned by r, or NULL when the head is not complete or has none.
 */
const char *mtls_http_response_header(const mtls_http_response *r, const char *name);

#ifdef __cplusplus
}
#endif

#endif
