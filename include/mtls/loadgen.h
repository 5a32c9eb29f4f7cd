/*
 * mtls/loadgen.h - an mTLS load generator: many client connections on one
 * event loop, each presenting a client certificate, counting handshakes,
 * requests, errors by kind and latencies, and reading the measured server's
 * CPU time and memory from /proc.
 *
 * One thread, one libuv loop, one SSL_CTX; every connection is a
 * non-blocking socket watched with uv_poll_t, read and written by OpenSSL
 * itself. The load generator therefore costs far less CPU than the server it
 * measures (see docs/PERFORMANCE.md).
 */
#ifndef MTLS_LOADGEN_H
#define MTLS_LOADGEN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mtls/base.h"

#ifdef __cplusplus
extern "C" {
#endif

struct mtls_loadgen_result;

/** Most distinct reasons kept per error kind (alert names, status codes). */
#define MTLS_LOADGEN_MAX_REASONS 16

/** What a run does; fill it with mtls_loadgen_opts_init() first. Strings are borrowed. */
typedef struct mtls_loadgen_opts {
    const char *url;            /* https://HOST[:PORT][/PATH]; required */
    const char *cacert;         /* trusted CA(s) for the server certificate, PEM or DER; required */
    const char *cert;           /* client certificate (chain), PEM or DER; required */
    const char *key;            /* client private key, PEM; required */
    const char *password;       /* password of an encrypted key, or NULL (never prompted for) */
    unsigned connections;       /* concurrent connections; default 16 */
    double duration;            /* seconds; default 10 */
    double timeout;             /* seconds for connect, handshake or one response; default 10 */
    uint64_t requests_per_conn; /* 1: a full handshake per request; 0: unlimited (keep-alive) */
    uint64_t requests;          /* stop after this many request attempts; 0: no limit */
    int resume;                 /* reuse the session (TLS 1.3 ticket) of an earlier handshake */
    int idle;                   /* handshake, then hold the connection open and send nothing */
    int http2;                  /* HTTP/2 (ALPN h2): streams requests at once per connection */
    unsigned streams;           /* HTTP/2: requests in flight per connection; default 10 */
    const pid_t *server_pids;   /* processes whose CPU time and RSS are read; may be NULL */
    size_t n_server_pids;
    /* Called about once a second from the loop with the figures so far; may be NULL. */
    void (*progress)(const struct mtls_loadgen_result *so_far, void *arg);
    void *progress_arg;
} mtls_loadgen_opts;

/** Latency percentiles in microseconds (0 when nothing was measured). */
typedef struct mtls_loadgen_latency {
    uint64_t count;
    double mean, p50, p99, p999, max;
} mtls_loadgen_latency;

/** A reason (alert name, HTTP status) and how often it was seen. */
typedef struct mtls_loadgen_reason {
    char name[64];
    uint64_t count;
} mtls_loadgen_reason;

/** The figures of a run. */
typedef struct mtls_loadgen_result {
    double elapsed;       /* seconds from the first connect to the end */
    uint64_t handshakes;  /* completed TLS handshakes the server accepted */
    uint64_t resumed;     /* of which resumed sessions */
    uint64_t requests;    /* responses with status 200 */
    uint64_t responses;   /* all complete responses (200 and others) */
    uint64_t established; /* connections open at the end (idle mode: held) */
    /* errors by kind */
    uint64_t err_connect;   /* TCP connect failed (refused, unreachable) */
    uint64_t err_handshake; /* TLS handshake failed (alert received or local check) */
    uint64_t err_status;    /* a response whose status was not 200 */
    uint64_t err_timeout;   /* connect, handshake or response took longer than timeout */
    uint64_t err_closed;    /* connection closed or reset before a response was complete */
    uint64_t err_protocol;  /* a response that is not HTTP/1.x we understand */
    mtls_loadgen_reason handshake_reasons[MTLS_LOADGEN_MAX_REASONS];
    size_t n_handshake_reasons;
    mtls_loadgen_reason status_reasons[MTLS_LOADGEN_MAX_REASONS];
    size_t n_status_reasons;
    mtls_loadgen_latency latency;           /* request written -> response complete */
    mtls_loadgen_latency handshake_latency; /* connect started -> handshake complete */
    double client_cpu;                      /* seconds of CPU this process used during the run */
    int have_server;                        /* 1 when server_pids were given and readable */
    double server_cpu;        /* seconds of CPU (user + system) the server pids used */
    long server_rss_start_kb; /* summed VmRSS of the server pids before the run */
    long server_rss_end_kb;   /* ... at the end, before the connections were closed */
} mtls_loadgen_result;

/** Sets the defaults (see mtls_loadgen_opts). */
void mtls_loadgen_opts_init(mtls_loadgen_opts *opts);

/**
 * Runs the load described by opts on a new libuv loop in this thread and
 * fills *result (caller-owned). Errors of single connections are counted in
 * the result, not returned.
 * The client context is mtls_client_ctx_new()'s (an encrypted key needs
 * opts->password; nothing prompts), the URL is read by mtls_url_parse(), and
 * the host is resolved once: the first of its addresses that accepts a
 * connection (mtls_client_connect()) serves the whole run.
 * Returns 0 when the run took place; MTLS_E_INVALID (bad URL, option, or a
 * certificate or key file that cannot be used), MTLS_E_NOTFOUND (host, a
 * file or a server pid does not exist), MTLS_E_IO, MTLS_E_CRYPTO or
 * MTLS_E_NOMEM with a message in err.
 */
int mtls_loadgen_run(const mtls_loadgen_opts *opts, mtls_loadgen_result *result, mtls_err *err);

/**
 * Reads the CPU time (utime + stime of every thread, in seconds) and the
 * resident set size (kB) of process pid from /proc. Either output may be NULL.
 * Returns 0, or MTLS_E_NOTFOUND when the process does not exist.
 */
int mtls_loadgen_proc_usage(pid_t pid, double *cpu_seconds, long *rss_kb, mtls_err *err);

#ifdef __cplusplus
}
#endif

#endif
