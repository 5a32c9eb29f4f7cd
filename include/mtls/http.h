/*
 * mtls/http.h - the HTTP/1.x side of the server: request parsing (llhttp),
 * routing, responses and access-log lines.
 *
 * This layer knows nothing of TLS or sockets: it reads and writes through the
 * function pointers in mtls_http_io (the server plugs SSL_read/SSL_write in
 * after the handshake, tests plug in memory buffers), and it receives the
 * client's verified identity as plain strings. It includes no OpenSSL header,
 * and no llhttp header either: the parser lives in the connection
 * (src/http/http_conn.h, internal).
 */
#ifndef MTLS_HTTP_H
#define MTLS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "mtls/base.h"
#include "mtls/http_header.h"

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
    /* Asks the caller to run the connection again soon, from its loop and
       not from inside this call (a handler answered later, or wants more of
       the body). NULL: only for transports whose handlers all answer at once. */
    void (*kick)(void *ctx);
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

struct mtls_http_routes;
struct mtls_http_peer;

/**
 * Receives one event for the server's system log (a denied request, say):
 * peer is the connection's, event a short key, message one sentence. All
 * borrowed, valid during the call.
 */
typedef void (*mtls_http_event_fn)(void *ctx, const struct mtls_http_peer *peer, const char *event,
                                   const char *message);

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
    /* An output buffer lent the same way (NULL: each connection allocates
       its own): responses made while a connection runs are written from it,
       and only what the socket does not take at once, or what a handler
       answers later, goes to a buffer of the connection's own. */
    char *write_buf;
    size_t write_buf_len;
    /* A header array lent the same way (at least max_headers entries; NULL:
       each connection allocates its own on its first request). */
    struct mtls_http_header *header_buf;
    size_t header_buf_len;
    /* Where requests go (borrowed); NULL: the built-in /test, /whoami and /. */
    const struct mtls_http_routes *routes;
    /* System-log lines for denied requests; NULL: none. */
    mtls_http_event_fn event;
    void *event_ctx;
    /* HTTP/2: a connection whose open streams make no progress (no stream
       opened, no body byte in or out) for this long ends with GOAWAY, even
       while the client keeps it busy with PINGs (0: never). */
    uint64_t h2_stall_ms;
    /* Each answered request, for metrics: route is the index into routes->v
       of the route that took it, or -1 (none did: 404, a bad request); ns the
       CLOCK_MONOTONIC nanoseconds from its first byte to its logging. NULL: none. */
    void (*request_done)(void *ctx, long route, int status, uint64_t ns);
    void *request_done_ctx;
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
    /* Authorization, decided once per connection by the server: bit i set
       when the route table's policy i does not allow this client. */
    uint32_t policy_denied;
    /* The client as an authorization reason names it ("CN=bob"), or NULL. */
    const char *who;
    /* Any other fact a handler needs from the connection (the proxy's
       identity headers): the server's ctx, given back to handlers. */
    void *conn_ctx;
    /* For the refusal pages of clients that are refused (denied, or a
       policy bit set): the CAs whose client certificates this server
       accepts, in words ("CN=client-example-ca"; several joined by "; "),
       or NULL. */
    const char *accepted_ca;
    /* The verified client for mtls_request_identity() (mtls/app.h), built
       on first use and cached by the server (borrowed); NULL when none. */
    const struct mtls_identity *(*identity)(void *ctx);
} mtls_http_peer;

/* ---- requests, routes and handlers --------------------------------------- */

/* mtls_http_header (one header line) is shared with the response parser:
   for a request, its name and value are spans into the read buffer, valid
   during the handler call. */

/** What a body callback returns: go on, or stop until mtls_http_body_resume(). */
enum { MTLS_HTTP_BODY_MORE = 0, MTLS_HTTP_BODY_PAUSE = 1 };

/**
 * A request as a handler sees it. The target and headers are spans into the
 * read buffer: valid during the handler call only (copy what is needed
 * later). The rest lives until the response is finished or on_abort ran.
 */
typedef struct mtls_http_request {
    int method;              /* llhttp_method_t: HTTP_GET, HTTP_POST, ... (<llhttp.h>) */
    const char *method_name; /* "GET" (static) */
    const char *target;      /* as sent: "/path?query" (call only) */
    size_t target_len;
    size_t path_len; /* target[0, path_len) is the path */
    unsigned http_minor;
    const mtls_http_header *headers; /* every header line, in order (call only) */
    size_t n_headers;
    int64_t content_length; /* -1 when the request has none */
    int chunked;            /* the body comes chunked */
    int expect_continue;    /* Expect: 100-continue */
    int keep_alive;         /* the connection stays open after this request */
    int upgrade;            /* Upgrade (a WebSocket): answering 101 makes the connection a
                               tunnel (bytes both ways through on_body / stream_write) */
    const struct mtls_http_peer *peer;
    const char *route_path; /* the route that took it (its path, borrowed) */

    /* Set by a handler that reads the body or answers later (all optional). */
    int (*on_body)(void *ctx, const char *data, size_t len); /* MTLS_HTTP_BODY_* */
    void (*on_body_end)(void *ctx);                          /* the whole body came */
    void (*on_writable)(void *ctx); /* queued output fell below the high-water mark */
    void (*on_abort)(void *ctx);    /* the connection is going away: stop using this request */
    void *handler_ctx;

    struct mtls_http_conn *conn; /* private */
} mtls_http_request;

/**
 * A handler: called once the request headers are complete. It answers now
 * (mtls_http_respond()) or later (return 0 without answering, and finish
 * with mtls_http_respond() or mtls_http_stream_*()). A negative return
 * answers 500.
 */
typedef int (*mtls_http_handler_fn)(void *ctx, mtls_http_request *req);

/** Route flags. */
enum {
    MTLS_ROUTE_PREFIX = 1,     /* the path is a prefix (at a '/' boundary): "/api" takes "/api/x" */
    MTLS_ROUTE_BODY = 2,       /* the handler reads the body (no max_body limit) */
    MTLS_ROUTE_UNVERIFIED = 4, /* verify-client optional: clients without a verified
                                  certificate reach the handler instead of a 403 */
    MTLS_ROUTE_PARAMS = 8,     /* the path has ":name" segments ("/users/:id"); set by add */
};

/** A method set for routes: MTLS_METHOD(HTTP_GET) | MTLS_METHOD(HTTP_HEAD); 0: every method. */
#define MTLS_METHOD(m) ((uint64_t)1 << (m))

/** One route: path and methods to a handler. */
typedef struct mtls_http_route {
    char *path; /* owned */
    size_t path_len;
    unsigned flags;
    uint64_t methods;
    mtls_http_handler_fn handler;
    void *ctx;
    int policy; /* the authorization policy index (bit of peer->policy_denied), or -1 */
} mtls_http_route;

/**
 * The route table of a server: exact paths first, then paths with
 * parameters ("/users/:id", one segment each; the first added wins), then
 * the longest prefix;
 * a path that matches but not its method is 405 with Allow; nothing is 404.
 * Caller-owned storage: zero it, add, then mtls_http_routes_release().
 */
typedef struct mtls_http_routes {
    mtls_http_route *v;
    size_t n;
    const char *const *policy_text; /* policy i in words, for 403 reasons ("cn alice") */
    size_t n_policies;
    int dry_run; /* a denial is logged and the request goes on */
} mtls_http_routes;

/** Adds a route (path copied). Returns 0, MTLS_E_NOMEM, or MTLS_E_INVALID (path not '/...'). */
int mtls_http_routes_add(mtls_http_routes *t, const char *path, unsigned flags, uint64_t methods,
                         mtls_http_handler_fn handler, void *ctx, mtls_err *err);

/** Adds the built-in GET/HEAD /test and /whoami. Returns 0 or MTLS_E_NOMEM. */
int mtls_http_routes_add_builtin(mtls_http_routes *t, mtls_err *err);

/** The built-in handler called name ("test", "whoami"), or NULL. */
mtls_http_handler_fn mtls_http_builtin_handler(const char *name);

/** Sets the policy of every route (authorization for all, from --allow). */
void mtls_http_routes_set_policy(mtls_http_routes *t, int policy);

/** Frees what t owns. NULL-safe. */
void mtls_http_routes_release(mtls_http_routes *t);

/**
 * The route for method and path (len bytes), or NULL; *allow gets the
 * methods of a route whose path matched when the method did not (405).
 */
const mtls_http_route *mtls_http_routes_match(const mtls_http_routes *t, int method,
                                              const char *path, size_t len, uint64_t *allow);

/**
 * Answers req with one whole response: status, content_type (NULL: JSON),
 * body (copied), extra header lines ("Name: value\r\n...", or NULL).
 * Returns 0, or MTLS_E_INVALID when req was already answered.
 */
int mtls_http_respond(mtls_http_request *req, int status, const char *content_type,
                      const char *body, size_t len, const char *extra_headers);

/** Answers {"error":error,"reason":reason} (reason may be NULL) with status. */
int mtls_http_respond_error(mtls_http_request *req, int status, const char *error,
                            const char *reason);

/** Sends "100 Continue" (HTTP/1.1 requests that asked for it; otherwise nothing). */
void mtls_http_send_continue(mtls_http_request *req);

/** Body lengths for mtls_http_stream_start(). */
#define MTLS_HTTP_LEN_UNKNOWN (-1) /* chunked to HTTP/1.1 clients, until close for HTTP/1.0 */
#define MTLS_HTTP_LEN_NONE (-2)    /* no body (HEAD, 204, 304) */

/**
 * Starts a streamed response: the status line (reason NULL: the standard
 * one), fields (header lines "Name: value\r\n", fields_len bytes, copied;
 * no Content-Length, Transfer-Encoding or Connection), then the framing for
 * length (bytes, or MTLS_HTTP_LEN_*). A 101 to a request with upgrade set
 * is written as given (fields bring Connection and Upgrade) and turns the
 * connection into a tunnel: the client's bytes go to on_body as they come,
 * stream_write() sends bytes as they are, stream_end() closes. Returns 0 or
 * MTLS_E_INVALID.
 */
int mtls_http_stream_start(mtls_http_request *req, int status, const char *reason,
                           const char *fields, size_t fields_len, int64_t length);

/**
 * Queues body bytes (framed as the start said). Returns 0, or 1 when the
 * queue is above its high-water mark: write more after on_writable.
 */
int mtls_http_stream_write(mtls_http_request *req, const char *data, size_t len);

/** Ends a streamed response; the connection goes on with the next request. */
void mtls_http_stream_end(mtls_http_request *req);

/**
 * Ends a response that cannot be finished (the upstream died mid-body): the
 * connection closes after what is queued, so the client sees it cut short.
 */
void mtls_http_stream_abort(mtls_http_request *req);

/** Delivers the body again after on_body returned MTLS_HTTP_BODY_PAUSE. */
void mtls_http_body_resume(mtls_http_request *req);

/** For the access log: the upstream's status (0: none answered) and time in ms. */
void mtls_http_note_upstream(mtls_http_request *req, int status, uint64_t ms);

/** The connection's peer (for handlers that answer later). */
const struct mtls_http_peer *mtls_http_request_peer(const mtls_http_request *req);

/* What mtls_http_conn_run() asks the caller to do next. */
enum {
    MTLS_HTTP_WANT_READ = 1,  /* wait until the socket is readable, then run again */
    MTLS_HTTP_WANT_WRITE = 2, /* wait until the socket is writable, then run again */
    MTLS_HTTP_DONE = 3,       /* every response is written: close (with a TLS goodbye) */
    MTLS_HTTP_ABORT = 4,      /* the transport failed: close without a goodbye */
    MTLS_HTTP_WAIT = 5,       /* a handler answers later: watch nothing until io.kick */
};

/* One connection (mtls_http_conn, its llhttp parser and its functions):
   src/http/http_conn.h, internal to the library. */
struct mtls_http_conn;

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
