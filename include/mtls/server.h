/*
 * mtls/server.h - the mTLS web server behind `mtls serve`: listeners,
 * workers (processes or threads, each with its own libuv loop and
 * SO_REUSEPORT listener), the connection state machine (handshake -> read
 * request -> write response -> keep-alive or close), timeouts, signals and
 * log files.
 *
 * Part of the server layer (src/server/); it ties src/tls and src/http
 * together.
 */
#ifndef MTLS_SERVER_H
#define MTLS_SERVER_H

#include <stddef.h>

#include "mtls/base.h"
#include "mtls/http.h"
#include "mtls/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

/** How workers run. Processes are the default: see docs/ARCHITECTURE.md for the numbers. */
typedef enum mtls_worker_model {
    MTLS_WORKERS_PROCESS = 0,
    MTLS_WORKERS_THREAD = 1,
} mtls_worker_model;

/** Receives one line for the person starting the server (msg borrowed, no newline). */
typedef void (*mtls_server_notice_fn)(void *ctx, const char *msg);

/**
 * A route of the configuration file: a path to a built-in handler or to an
 * upstream, with its own rules and identity headers. Strings are borrowed.
 */
typedef struct mtls_route_opts {
    const char *path;             /* "/admin": a prefix at a '/' boundary */
    int exact;                    /* 1: the path alone */
    const char *handler;          /* "test" or "whoami" (a built-in); NULL: the proxy */
    const char *upstream;         /* the proxy's upstream; NULL: the server's upstream */
    const char *identity_headers; /* NULL: the server's */
    const char *const *allow;     /* this route's rules; NULL: the server's */
    size_t n_allow;
    /* A handler of its own (mtls/app.h) instead of handler and upstream:
       called with fn_ctx for the methods given (MTLS_METHOD bits, 0: all);
       "/users/:id" paths have parameters. */
    mtls_http_handler_fn fn;
    void *fn_ctx;
    uint64_t methods;
} mtls_route_opts;

/** Everything a server is made of. Fill with mtls_server_opts_init(); strings are borrowed. */
typedef struct mtls_server_opts {
    const char *listen;       /* "8443", ":8443", "ADDR:PORT", "[V6]:PORT"; default "8443" */
    mtls_tls_server_opts tls; /* certificate, key, client CA, CRLs, verify mode */
    unsigned workers;         /* 0: one per CPU core */
    mtls_worker_model model;
    const char *user;              /* NULL; or workers run as it (root, process model) */
    const char *access_log;        /* path, or NULL for none */
    const char *system_log;        /* path, or NULL for none */
    mtls_log_format log_format;    /* both logs */
    unsigned handshake_timeout_ms; /* default 10000 */
    unsigned header_timeout_ms;    /* a started request must be complete within; default 10000 */
    unsigned idle_timeout_ms;      /* keep-alive between requests; default 60000 */
    unsigned drain_timeout_ms;     /* SIGTERM: in-flight requests get this long; default 10000 */
    unsigned max_connections;      /* all workers together; default 10000 */
    int proxy_protocol;            /* 1: every connection starts with a PROXY protocol v2 header */
    mtls_http_config http;         /* limits (its log fields are set by the server) */
    /* The reverse proxy: every request no built-in route takes goes to
       "http://HOST:PORT[/PREFIX]" or "unix:/PATH"; NULL: none (404). */
    const char *upstream;
    const char *identity_headers;         /* families sent upstream: "rfc9440,xfcc,plain" (default),
                                             any of them, or "none" */
    unsigned upstream_connect_timeout_ms; /* default 5000 */
    unsigned upstream_timeout_ms;         /* the upstream's silence while awaited; default 60000 */
    /* Authorization: rules on the verified client certificate ("cn=alice",
       "san-uri=spiffe://example.org/ns/prod/sa/web"); any match allows; none:
       any verified client. allow_dry_run logs a denial and lets it through. */
    const char *const *allow;
    size_t n_allow;
    int allow_dry_run;
    /* Routes of their own (the configuration file), before the built-in
       ones and the catch-all upstream; exact paths, then the longest prefix. */
    const mtls_route_opts *routes;
    size_t n_routes;
    /* Metrics: "ADDR:PORT" for Prometheus text at http://ADDR:PORT/metrics (plain
       HTTP, served by worker 0); NULL: none. A non-loopback address is refused
       unless metrics_public is set. */
    const char *metrics_listen;
    int metrics_public;
    mtls_server_notice_fn warn; /* configuration warnings (also written to the system log) */
    void *warn_ctx;
    /* Why a worker process could not start, called in that child just
       before it exits (mtls_server_run() never returns there); NULL: none. */
    mtls_server_notice_fn worker_error;
    void *worker_error_ctx;
    /* SIGHUP, process model: reads the configuration again (a file) into
       *next, a copy of the options in force to change (upstream, identity
       headers, allow rules, dry run, routes); returns the number of problems,
       each passed to problem ("FILE:LINE:COLUMN: ..."). The server then checks
       next as at start; reload_done says whether it took next (1) or kept the
       old options (0), so that the caller frees the strings no longer in use.
       NULL: SIGHUP reloads the certificates only. */
    int (*reload_config)(void *ctx, struct mtls_server_opts *next, mtls_server_notice_fn problem,
                         void *problem_ctx);
    void (*reload_done)(void *ctx, int taken);
    void *reload_ctx;
} mtls_server_opts;

/** Checks an --upstream URL as the start would (resolved). Returns 0 or MTLS_E_INVALID. */
int mtls_server_upstream_check(const char *url, mtls_err *err);

/** Checks an --identity-headers list. Returns 0 or MTLS_E_INVALID. */
int mtls_server_identity_headers_check(const char *list, mtls_err *err);

/** Fills opts with the defaults of `mtls serve`. */
void mtls_server_opts_init(mtls_server_opts *opts);

typedef struct mtls_server mtls_server;

/**
 * Checks the whole configuration and prepares to serve: loads and checks the
 * certificate, key, client CA and CRLs (an SSL_CTX), opens the log files,
 * and binds the listening sockets (one per worker, SO_REUSEPORT). Nothing is
 * accepted until mtls_server_run().
 * Returns 0 and a new server in *out (free with mtls_server_free()), or a
 * negative MTLS_E_* with err naming the file or address: MTLS_E_BUSY for a
 * port in use, MTLS_E_INVALID for a bad value or file.
 */
int mtls_server_new(const mtls_server_opts *opts, mtls_server **out, mtls_err *err);

/**
 * Checks opts as mtls_server_new() would (certificate, key and their match,
 * client CAs, CRLs, the listen address, the upstream URL, identity header
 * families, --allow rules, timeouts, that the log files can be written)
 * without opening logs, binding or serving, like `nginx -t`. Every problem
 * found is passed to problem (msg borrowed for the call). Returns the number
 * of problems.
 */
int mtls_server_check(const mtls_server_opts *opts, void (*problem)(void *ctx, const char *msg),
                      void *ctx);

/** The TCP port the server listens on (useful with port 0). */
int mtls_server_port(const mtls_server *srv);

/** The listening address as "[::]:8443" or "127.0.0.1:8443" (borrowed). */
const char *mtls_server_address(const mtls_server *srv);

/**
 * Where --metrics-listen serves, as "http://127.0.0.1:9100/metrics" (the
 * port the kernel picked for port 0; ", "-separated when a name stands for
 * several addresses), or NULL without metrics (borrowed).
 */
const char *mtls_server_metrics_address(const mtls_server *srv);

/** 1 when the server listens on every address (the default). */
int mtls_server_listens_everywhere(const mtls_server *srv);

/**
 * Starts the workers and serves until SIGTERM or SIGINT, then lets
 * in-flight requests finish (up to drain_timeout_ms) and returns 0. In a
 * forked worker it never returns: the child _exit()s (0 after draining, 1
 * when it could not start, after opts.worker_error).
 * SIGUSR1 reopens the log files. Blocks those signals in the calling
 * thread. Returns MTLS_E_* with err set when the workers cannot start.
 */
int mtls_server_run(mtls_server *srv, mtls_err *err);

/**
 * Blocks, in the calling thread, the signals mtls_server_run() takes
 * (SIGTERM, SIGINT, SIGUSR1, SIGHUP and SIGCHLD), as it does itself when it
 * starts. Call it before saying that the server listens: whoever reads that
 * may signal at once, and a signal sent before mtls_server_run() then waits
 * for it instead of killing the process. Nothing to undo: the mask stays
 * blocked after mtls_server_run() returns, as the caller left it.
 */
void mtls_server_hold_signals(void);

/** Closes sockets and logs and frees srv. NULL-safe. */
void mtls_server_free(mtls_server *srv);

/**
 * Whether `mtls serve --listen listen` could bind now (NULL: "8443", every
 * address): the same parse and plain bind as mtls_server_new(), then the
 * socket is closed again. Returns 0, MTLS_E_BUSY (the port is in use),
 * MTLS_E_INVALID (a bad address) or MTLS_E_IO (e.g. a port below 1024
 * without the right), with err saying so. For `mtls doctor`.
 */
int mtls_server_listen_check(const char *listen, mtls_err *err);

#ifdef __cplusplus
}
#endif

#endif
