/*
 * mtls/http.h - the HTTP/1.x side of the server: request parsing (llhttp),
 * routing, responses and access-log lines.
 *
 * This layer knows nothing of TLS or sockets: it reads and writes through the
 * function pointers in mtls_http_io (the server plugs SSL_read/SSL_write in
 * after the handshake, tests plug in memory buffers), and it receives the
 * client's verified identity as plain strings. It includes no OpenSSL header.
 */
#ifndef MTLS_HTTP_H
#define MTLS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "mtls/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What an I/O function returns besides a positive byte count. */
enum {
    MTLS_IO_EOF = 0,         /* the peer closed its side (orderly) */
    MTLS_IO_WANT_READ = -1,  /* try again once the socket is readable */
    MTLS_IO_WANT_WRITE = -2, /* try again once the socket is writable */
    MTLS_IO_ERROR = -3,      /* the connection is broken; close it without a goodbye */
};

/**
 * How the HTTP layer reaches the wire. read() and write() return a byte
 * count (> 0) or one of MTLS_IO_*; pending() (may be NULL) returns 1 when
 * read() has bytes buffered that a poll on the socket would not announce
 * (OpenSSL's decrypted or read-ahead data).
 */
typedef struct mtls_http_io {
    long (*read)(void *ctx, char *buf, size_t len);
    long (*write)(void *ctx, const char *buf, size_t len);
    int (*pending)(void *ctx);
    void *ctx;
} mtls_http_io;

/** Access-log formats. */
typedef enum mtls_log_format {
    MTLS_LOG_TEXT = 0, /* Apache/nginx "combined" */
    MTLS_LOG_JSON = 1, /* one JSON object per line */
} mtls_log_format;

/**
 * Receives one finished access-log line (ending in '\n'; line is borrowed
 * and valid during the call only).
 */
typedef void (*mtls_http_log_fn)(void *ctx, const char *line, size_t len);

/** Limits and logging, shared by every connection of a worker (borrowed). */
typedef struct mtls_http_config {
    size_t max_url;          /* request target bytes; more -> 414 (default 8192) */
    size_t max_header_bytes; /* names + values of all header lines; more -> 431 (default 16384) */
    unsigned max_headers;    /* header lines; more -> 431 (default 100) */
    uint64_t max_body;       /* body bytes read and discarded; more -> 413 (default 1 MiB) */
    mtls_log_format log_format;
    mtls_http_log_fn access_log; /* NULL: no access log */
    void *access_log_ctx;
    /* A read buffer lent to every connection of one thread (NULL: each
       connection allocates its own). Bytes a paused parser has not taken
       move to the connection's own buffer, so idle connections hold none. */
    char *read_buf;
    size_t read_buf_len;
} mtls_http_config;

/** Fills cfg with the defaults above and no access log. */
void mtls_http_config_init(mtls_http_config *cfg);

/**
 * Who is on the other end, as plain strings set by the server once per
 * connection (all borrowed; they must outlive the connection).
 */
typedef struct mtls_http_peer {
    const char *addr;   /* "127.0.0.1", "::1" */
    const char *user;   /* the client certificate's subject for the logs, or NULL */
    const char *serial; /* the client certificate's serial (hex), or NULL (JSON log only) */
    const char *denied; /* non-NULL: answer every request 403 with this reason
                           (verify-client optional, certificate missing or bad) */
    /* The /whoami body: a JSON document, built on first use and cached by the
       server (borrowed; *len set to its length). NULL when unavailable. */
    const char *(*whoami)(void *ctx, size_t *len);
    void *whoami_ctx;
} mtls_http_peer;

/* What mtls_http_conn_run() asks the caller to do next. */
enum {
    MTLS_HTTP_WANT_READ = 1,  /* wait until the socket is readable, then run again */
    MTLS_HTTP_WANT_WRITE = 2, /* wait until the socket is writable, then run again */
    MTLS_HTTP_DONE = 3,       /* every response is written: close (with a TLS goodbye) */
    MTLS_HTTP_ABORT = 4,      /* the transport failed: close without a goodbye */
};

#define MTLS_HTTP_URL_KEEP 1024  /* bytes of the request target kept for routing and logs */
#define MTLS_HTTP_FIELD_KEEP 256 /* bytes of User-Agent and Referer kept for logs */

/**
 * One HTTP connection: parser state, input and output buffers, and the
 * current request. Caller-owned storage: mtls_http_conn_init() then
 * mtls_http_conn_release(). Buffers are allocated once per connection and
 * reused for every request on it.
 */
typedef struct mtls_http_conn {
    llhttp_t parser;
    const mtls_http_config *cfg;
    const mtls_http_peer *peer;
    mtls_http_io io;

    char *in; /* bytes read and not parsed yet: in[in_off, in_len) (lazy) */
    size_t in_cap, in_off, in_len;
    char *out; /* bytes to write: out[out_off, out_len) (lazy, grows) */
    size_t out_cap, out_off, out_len;

    /* The request being parsed. */
    char url[MTLS_HTTP_URL_KEEP + 1];
    size_t url_len; /* bytes seen, may exceed what url keeps */
    char user_agent[MTLS_HTTP_FIELD_KEEP + 1];
    size_t user_agent_len;
    char referer[MTLS_HTTP_FIELD_KEEP + 1];
    size_t referer_len;
    char field[24]; /* the current header name (lower-case prefix) */
    size_t field_len;
    int field_kind; /* which kept header the current value belongs to */
    size_t header_bytes;
    unsigned n_headers;
    uint64_t body_bytes;
    int error_status; /* 413/414/431 decided inside a parser callback */
    const char *error_reason;

    unsigned in_request : 1; /* bytes of an unfinished request were parsed */
    unsigned closing : 1;    /* answer with Connection: close from now on */
    unsigned close_after_flush : 1;
    unsigned read_done : 1; /* read once since the last wait; wait unless pending */
    uint64_t requests;      /* requests answered on this connection */
    uint64_t bytes_out;     /* response bytes handed to write() */
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

/**
 * The whole answer for a client that sent plain HTTP to the HTTPS port, as
 * nginx gives one: 400, a JSON reason, Connection: close. The server writes
 * it on the raw socket in place of a TLS handshake. Returns a static string
 * (borrowed) and stores its length in *len.
 */
const char *mtls_http_plain_http_answer(size_t *len);

/**
 * Escapes s (len bytes) as the inside of a JSON string into buf (always
 * NUL-terminated; cut short, never mid-escape or mid-character, when buf
 * is too small). Well-formed UTF-8 is copied as it is; control characters,
 * DEL and bytes that are not part of well-formed UTF-8 become \u00XX (the
 * byte's value), so the result is always valid JSON in valid UTF-8.
 * Returns the length written.
 */
size_t mtls_json_escape(char *buf, size_t size, const char *s, size_t len);

#ifdef __cplusplus
}
#endif

#endif
