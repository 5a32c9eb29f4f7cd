/*
 * http_conn.h - one HTTP/1.x connection of src/http: the llhttp parser, the
 * buffers and the current request (internal: it carries llhttp's types,
 * which include/mtls/http.h keeps out of its users' way).
 */
#ifndef MTLS_HTTP_CONN_H
#define MTLS_HTTP_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "mtls/http.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MTLS_HTTP_URL_KEEP 1024  /* bytes of the request target kept for routing and logs */
#define MTLS_HTTP_FIELD_KEEP 256 /* bytes of User-Agent and Referer kept for logs */

/**
 * One HTTP connection: parser state, input and output buffers, and the
 * current request. Caller-owned storage: mtls_http_conn_init() then
 * mtls_http_conn_release(). Buffers are allocated once per connection and
 * reused for every request on it (and a request answered later keeps its
 * target, User-Agent and Referer until its log line is written).
 */
typedef struct mtls_http_conn {
    llhttp_t parser;
    const mtls_http_config *cfg;
    const mtls_http_peer *peer;
    mtls_http_io io;

    char *in; /* bytes read and not parsed yet: in[in_off, in_len) (lazy) */
    size_t in_cap, in_off, in_len;
    char *out; /* bytes to write: out[out_off, out_len) (lazy, grows; or lent: out_lent) */
    size_t out_cap, out_off, out_len;
    mtls_http_header *own_headers; /* when cfg lends no header array */

    /* The request being parsed, and the handler answering it. */
    mtls_http_request req;
    const mtls_http_route *route;
    const mtls_http_route *matched; /* the route its path matched, even when refused (metrics) */
    /*
     * The request's target, User-Agent and Referer, for the request object
     * and the log line: spans in the buffer being parsed while it is being
     * parsed (a keep-alive GET is answered and logged then, and never
     * copied); a request still in flight when the parse returns gets copies
     * in kept ("target\0user-agent\0referer\0", cut to MTLS_HTTP_URL_KEEP and
     * MTLS_HTTP_FIELD_KEEP), one allocation freed when its log line is
     * written. A connection that waits for its next request holds none.
     */
    const char *url_at; /* NULL: none */
    size_t url_len;     /* bytes seen, may exceed what is kept */
    const char *user_agent, *referer;
    char *kept;
    size_t header_bytes;
    uint64_t body_bytes;
    const char *error_reason;
    size_t resp_at; /* where in out the current response began */
    uint64_t upstream_ms;
    uint64_t started_ns; /* CLOCK_MONOTONIC at its first byte (only with cfg->request_done) */
    uint64_t requests;   /* requests answered on this connection */
    uint64_t bytes_out;  /* response body bytes handed to write() */
    unsigned n_headers;
    int error_status;                     /* 413/414/431 decided inside a parser callback */
    int status;                           /* of the current response */
    int upstream_status;                  /* for the access log (0: none answered) */
    uint16_t user_agent_len, referer_len; /* cut to MTLS_HTTP_FIELD_KEEP */
    /* llhttp_execute calls, to check that the head came in one (compared, never ordered) */
    uint16_t exec_count, exec_begin;

    unsigned in_request : 1; /* bytes of an unfinished request were parsed, or it is answered */
    unsigned in_head : 1;    /* the request's head is being parsed */
    unsigned msg_started : 1;
    unsigned msg_done : 1;       /* the whole request (body too) was parsed */
    unsigned in_field : 1;       /* a header name is being parsed */
    unsigned handler_active : 1; /* a handler owns the request and has not finished */
    unsigned resp_started : 1;   /* the response head is queued */
    unsigned resp_done : 1;
    unsigned body_paused : 1; /* the handler asked for no more body for now */
    unsigned write_high : 1;  /* output passed the high-water mark with a handler waiting */
    unsigned chunked_out : 1; /* the streamed response is chunked */
    unsigned tunnel : 1;      /* after a 101: raw bytes both ways */
    unsigned resp_unsent : 1; /* no byte of the current response was written yet */
    unsigned head_only : 1;   /* HEAD: no response body */
    unsigned keep_alive : 1;
    unsigned running : 1; /* inside mtls_http_conn_run() */
    unsigned closing : 1; /* answer with Connection: close from now on */
    unsigned close_after_flush : 1;
    unsigned read_done : 1; /* read once since the last wait; wait unless pending */
    unsigned proxied : 1;   /* the request went to an upstream (access log) */
    unsigned borrowed : 1;  /* url_at, user_agent, referer point into the parsed buffer */
    unsigned out_lent : 1;  /* out is cfg->write_buf (only while running) */
    /* HTTP/2 (private): on the connection, its session (src/http/h2.c); on
       the per-stream request state h2 makes, the stream it belongs to. */
    struct mtls__h2_session *h2;
    struct mtls__h2_stream *h2_stream;
} mtls_http_conn;

/**
 * Prepares c for a new connection. cfg and peer are borrowed and must
 * outlive c; io is copied. Returns 0 or MTLS_E_NOMEM.
 */
int mtls_http_conn_init(mtls_http_conn *c, const mtls_http_config *cfg, const mtls_http_peer *peer,
                        const mtls_http_io *io);

/** Frees the buffers of c. NULL-safe, and safe on a zeroed struct. */
void mtls_http_conn_release(mtls_http_conn *c);

/**
 * Makes c speak HTTP/2 (the handshake's ALPN chose "h2"), before its first
 * run: every stream becomes a request for the same routes and handlers, and
 * the functions below act on the whole session. Returns 0 or MTLS_E_NOMEM.
 */
int mtls_http_conn_use_h2(mtls_http_conn *c);

/**
 * Makes progress: writes what is pending, reads, parses every complete
 * request in what was read (pipelining), appends their responses and writes
 * them, as far as the transport allows without blocking. Returns one of
 * MTLS_HTTP_WANT_READ, MTLS_HTTP_WANT_WRITE, MTLS_HTTP_DONE, MTLS_HTTP_ABORT.
 */
int mtls_http_conn_run(mtls_http_conn *c);

/**
 * From now on, finish the current request (if any) with Connection: close
 * and then report MTLS_HTTP_DONE (used for a graceful shutdown).
 */
void mtls_http_conn_drain(mtls_http_conn *c);

/**
 * The request headers did not arrive in time: queues a 408 answer (when
 * part of a request was received) and makes the connection close after it.
 * The caller then runs the connection once more (best effort) and closes it.
 */
void mtls_http_conn_timeout(mtls_http_conn *c);

/** 1 while part of a request has been received, or output is waiting. */
int mtls_http_conn_busy(const mtls_http_conn *c);

/** 1 while the head of a request is arriving (the header timeout applies). */
int mtls_http_conn_in_head(const mtls_http_conn *c);

#ifdef __cplusplus
}
#endif

#endif
