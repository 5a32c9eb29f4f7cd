/*
 * mtls/app.h - libmtls for C programmers: an mTLS HTTPS server with your own
 * handlers, the way the tutorial writes its Express app (docs/API.md).
 *
 *     mtls_app *app;
 *     mtls_app_new(&app, &err);
 *     mtls_app_set(app, "cert", "server.crt", &err);   // key, client-ca, listen, ...
 *     mtls_app_route(app, "GET", "/test", hello, NULL, &err);
 *     mtls_app_start(app, &err);                        // checks files, binds
 *     mtls_app_run(app, &err);                          // serves until SIGTERM/SIGINT
 *     mtls_app_free(app);
 *
 * Self-contained: it needs no OpenSSL, libuv or llhttp header. Link with
 * `pkg-config --cflags --libs mtls`. Only mtls_* symbols are exported.
 *
 * ## Workers, state and locking
 * mtls_app_run() starts `workers` event loops (default: one per CPU core),
 * each accepting on its own SO_REUSEPORT socket, and every handler runs on
 * the loop of the worker that accepted the connection, one call at a time
 * per worker:
 * - "process" workers (the default) are forked children: whatever a handler
 *   changes (globals, its ctx) is that process's copy. State shared by all
 *   workers belongs in a database, a file, or shared memory you set up
 *   before mtls_app_run(). mtls_app_run() never returns inside a worker
 *   child: the child exits (status 0 after draining, 1 when it could not
 *   start) without running atexit handlers of your program.
 * - "thread" workers are threads of your process: handlers of different
 *   workers run at the same time and share every global and ctx, so the
 *   state they change needs a lock (or atomics). Handlers must not block: a
 *   handler that waits (a lock held long, a synchronous call) stalls every
 *   connection of its worker.
 *
 * ## Signals, SIGPIPE and the loop
 * mtls_app_run() blocks SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGCHLD in the
 * calling thread and takes them with sigwait: SIGTERM/SIGINT stop (new
 * connections refused, in-flight requests get drain-timeout to finish, then
 * mtls_app_run() returns 0), SIGHUP reloads the certificate, key, client CA
 * and CRLs, SIGUSR1 reopens the log files. Block these signals in every
 * other thread of your program (pthread_sigmask() before creating it), or a
 * SIGTERM sent to the process may reach that thread instead;
 * mtls_app_stop() and mtls_app_reload() direct the signal at the running
 * thread. SIGPIPE: TLS writes to a client that went away would raise it,
 * so mtls_app_run() sets SIGPIPE to SIG_IGN when it is at its default (a
 * handler of your own stays); sockets of your own then get EPIPE. Each
 * worker's event loop is a libuv loop: mtls_worker_loop() hands it to code
 * that speaks libuv; mtls_timer_* need none.
 *
 * ## Lifetimes
 * Strings given to mtls_app_* are copied. A request's method, path, query,
 * parameters and headers are valid during the handler call only; its
 * identity and the response until the response is finished or its abort
 * callback ran.
 */
#ifndef MTLS_APP_H
#define MTLS_APP_H

#include <stddef.h>
#include <stdint.h>

#include "mtls/base.h"
#include "mtls/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the server ---------------------------------------------------------- */

/** A server being configured, started and run. */
typedef struct mtls_app mtls_app;

/** A request (valid until its response is finished). */
typedef struct mtls_http_request mtls_request;

/** The response to one request. */
typedef struct mtls_response mtls_response;

/**
 * A handler: answers with mtls_response_send*() now, or returns 0 without
 * answering and finishes later (a timer, another socket on the worker's
 * loop); then it should set mtls_response_on_abort(). A negative return
 * without an answer answers 500.
 */
typedef int (*mtls_handler_fn)(mtls_request *req, mtls_response *res, void *ctx);

/** Makes an app with the defaults of `mtls serve`. Returns 0 or MTLS_E_NOMEM. */
int mtls_app_new(mtls_app **out, mtls_err *err);

/**
 * Sets an option, named as in the configuration file of `mtls serve`
 * (value copied):
 *   listen           "8443", "ADDR:PORT", "[V6]:PORT", "127.0.0.1:0" (default "8443")
 *   cert, key        the server certificate (PEM, with intermediates) and its key
 *   key-password     the key's password
 *   client-ca        the CA certificates client certificates must chain to
 *   crl              a CRL file (again: one more)
 *   verify-client    "require" (default: no certificate, no handshake) or "optional"
 *   allow            a rule every route without its own obeys ("cn=alice"; again: one more)
 *   access-log, system-log   file paths (default: none)
 *   log-format       "text" or "json"
 *   workers          a number (default: one per CPU core)
 *   worker-model     "process" (default) or "thread"
 *   upstream         a reverse proxy for every path no handler takes
 * Returns 0, or MTLS_E_INVALID (unknown name, bad value) with err saying so.
 * Files are read by mtls_app_start().
 */
int mtls_app_set(mtls_app *app, const char *name, const char *value, mtls_err *err);

/**
 * Registers handler for method ("GET", "POST", ...; "GET" also takes HEAD;
 * NULL or "*": every method) and path: "/test" (exactly), "/static/" "*"
 * (that is, ending in a slash and a star: the prefix "/static" at a '/'
 * boundary), "/users/:id" (":id" stands for one
 * non-empty segment: mtls_request_param()). Exact paths win, then paths
 * with parameters (first registered first), then the longest prefix; a path
 * that matches with another method answers 405, none 404. Routes come
 * before the built-in /test and /whoami. Returns the route's number (>= 0)
 * for mtls_app_route_allow(), or MTLS_E_INVALID / MTLS_E_NOMEM.
 */
int mtls_app_route(mtls_app *app, const char *method, const char *path, mtls_handler_fn handler,
                   void *ctx, mtls_err *err);

/**
 * Adds an authorization rule ("cn=alice", "san-uri=spiffe://x/ns/a",
 * "issuer=CN=ca", "spki-sha256=..."; see `mtls serve --allow`) to route:
 * any of its rules allows, others get 403. A route with rules ignores the
 * "allow" option. Returns 0 or MTLS_E_INVALID.
 */
int mtls_app_route_allow(mtls_app *app, int route, const char *rule, mtls_err *err);

/**
 * Checks everything and prepares to serve: reads the certificate, key,
 * client CA and CRLs, opens the logs, binds the listening sockets. Nothing
 * is accepted until mtls_app_run(). Returns 0, or MTLS_E_BUSY (port in
 * use), MTLS_E_INVALID (a bad file or value) with err naming it.
 */
int mtls_app_start(mtls_app *app, mtls_err *err);

/** The TCP port it listens on, once started (the one the kernel chose for port 0). */
int mtls_app_port(const mtls_app *app);

/**
 * Starts the workers and serves until SIGTERM or SIGINT (or mtls_app_stop()),
 * drains, and returns 0; MTLS_E_* with err set when the workers cannot start.
 * See "Workers" and "Signals" above.
 */
int mtls_app_run(mtls_app *app, mtls_err *err);

/**
 * Asks a running mtls_app_run() to stop, as SIGTERM does: from another
 * thread, a signal handler (async-signal-safe) or a handler in any worker.
 * Returns 0 or MTLS_E_INVALID (not running).
 */
int mtls_app_stop(mtls_app *app);

/**
 * Asks a running mtls_app_run() to reload the certificate, key, client CA
 * and CRLs, as SIGHUP does (from where mtls_app_stop() may be called).
 * Returns 0 or MTLS_E_INVALID.
 */
int mtls_app_reload(mtls_app *app);

/** Closes the sockets and logs and frees app (after mtls_app_run() returned). NULL-safe. */
void mtls_app_free(mtls_app *app);

/* ---- requests ------------------------------------------------------------ */

/** The method, "GET". */
const char *mtls_request_method(const mtls_request *req);

/** The path ("/users/42"; not NUL-terminated: *len bytes), as sent. */
const char *mtls_request_path(const mtls_request *req, size_t *len);

/** The query after '?' (*len bytes, not NUL-terminated), or NULL when none. */
const char *mtls_request_query(const mtls_request *req, size_t *len);

/** The value of path parameter name ("id" of "/users/:id"; *len bytes), or NULL. */
const char *mtls_request_param(const mtls_request *req, const char *name, size_t *len);

/** The first header called name (any case; *len bytes, not NUL-terminated), or NULL. */
const char *mtls_request_header(const mtls_request *req, const char *name, size_t *len);

/** How many header lines the request has. */
size_t mtls_request_header_count(const mtls_request *req);

/** Header line i (< count): its name and value spans. Returns 0 or MTLS_E_INVALID. */
int mtls_request_header_at(const mtls_request *req, size_t i, const char **name, size_t *name_len,
                           const char **value, size_t *value_len);

/** The Content-Length, or -1 (none, or chunked). */
int64_t mtls_request_content_length(const mtls_request *req);

/** The client's address, "127.0.0.1" (valid as long as the request). */
const char *mtls_request_remote_addr(const mtls_request *req);

/**
 * Reads the body: on_data gets each piece as it comes (borrowed for the
 * call), on_end once it is complete (then answer, if not yet). Call from the
 * handler. A request whose body is not read has it discarded. Returns 0.
 */
int mtls_request_read_body(mtls_request *req,
                           void (*on_data)(void *ctx, const char *data, size_t len),
                           void (*on_end)(void *ctx), void *ctx);

/** The verified client certificate and TLS session, as strings. */
typedef struct mtls_identity {
    const char *subject;     /* "CN=localclient" (one line, like openssl x509 -subject) */
    const char *issuer;      /* "CN=ca" */
    const char *serial;      /* upper-case hex */
    const char *const *sans; /* "DNS:localhost", "IP:127.0.0.1", "URI:spiffe://...", "email:..." */
    size_t n_sans;
    const char *sha256;      /* the certificate's SHA-256, "AB:CD:..." */
    const char *spki_sha256; /* its public key's SHA-256 (for spki-sha256= pins), hex */
    const char *not_before;  /* "2026-11-26T23:59:59Z" */
    const char *not_after;
    const char *tls_version; /* "TLSv1.3" */
    const char *cipher;      /* "TLS_AES_256_GCM_SHA384" */
    int resumed;             /* 1: the TLS session was resumed */
    const char *json;        /* all of it as the /whoami JSON document */
} mtls_identity;

/**
 * The client's verified identity (built on first use, cached for the
 * connection), or NULL when it cannot be built (out of memory). Handlers
 * only see verified clients: with verify-client optional, a client without
 * a verified certificate gets 403 before any handler runs.
 */
const mtls_identity *mtls_request_identity(const mtls_request *req);

/* ---- responses ----------------------------------------------------------- */

/** Sets the status (default 200). Returns 0, or MTLS_E_INVALID once answered. */
int mtls_response_set_status(mtls_response *res, int status);

/**
 * Adds a header line (no CR or LF in either; Content-Length, Connection and
 * Transfer-Encoding are the library's). "Content-Type" replaces the
 * default. Returns 0, MTLS_E_INVALID or MTLS_E_NOMEM.
 */
int mtls_response_set_header(mtls_response *res, const char *name, const char *value);

/**
 * Answers with len bytes of body (copied), Content-Type as set (default
 * "text/plain; charset=utf-8"). Finishes the response: res is gone
 * afterwards. Returns 0 or MTLS_E_INVALID (answered already).
 */
int mtls_response_send(mtls_response *res, const void *body, size_t len);

/** Answers status with a JSON document (text as given, application/json). Like _send(). */
int mtls_response_send_json(mtls_response *res, int status, const char *json);

/**
 * Starts a streamed body of length bytes (-1: unknown, chunked). Status and
 * headers as set. Returns 0 or MTLS_E_INVALID.
 */
int mtls_response_start(mtls_response *res, int64_t length);

/**
 * Queues bytes of a started body (copied). Returns 0, 1 when the queue is
 * above its high-water mark (write more after on_writable), MTLS_E_INVALID.
 */
int mtls_response_write(mtls_response *res, const void *data, size_t len);

/** Ends a started body; res is gone afterwards. Returns 0 or MTLS_E_INVALID. */
int mtls_response_end(mtls_response *res);

/**
 * For a response finished later: fn(ctx) runs when the connection goes away
 * first (client closed, timeout, server stopping). Cancel what would answer
 * (mtls_timer_cancel()); res and req are gone once fn returns.
 */
void mtls_response_on_abort(mtls_response *res, void (*fn)(void *ctx), void *ctx);

/** For a streamed body: fn(ctx) runs when the queue fell below its high-water mark. */
void mtls_response_on_writable(mtls_response *res, void (*fn)(void *ctx), void *ctx);

/** The request res answers. */
mtls_request *mtls_response_request(mtls_response *res);

/* ---- the worker's loop --------------------------------------------------- */

/**
 * The event loop of the worker running the calling handler: a `uv_loop_t *`
 * of libuv (include <uv.h> and cast to use it: uv_tcp_t, uv_poll_t, ... on
 * it run between requests, on this worker). NULL outside a worker.
 */
void *mtls_worker_loop(void);

/** A one-shot timer on the worker's loop. */
typedef struct mtls_timer mtls_timer;

/**
 * Calls fn(ctx) once, ms milliseconds from now, on the calling worker's
 * loop (call from a handler or a callback of that loop). The timer frees
 * itself after fn returns. Returns NULL outside a worker or out of memory.
 */
mtls_timer *mtls_timer_start(uint64_t ms, void (*fn)(void *ctx), void *ctx);

/** Cancels a timer that has not fired yet (fn never runs; t is freed). NULL-safe. */
void mtls_timer_cancel(mtls_timer *t);

#ifdef __cplusplus
}
#endif

#endif
