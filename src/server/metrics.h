/*
 * Metrics (--metrics-listen): counters in shared memory that every worker
 * adds to, and the Prometheus text exposition of them (src/server/metrics.c).
 */
#ifndef MTLS_SERVER_METRICS_H
#define MTLS_SERVER_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include <uv.h>

#include "mtls/base.h"
#include "mtls/http.h"

/** How a handshake ended. */
enum {
    MTLS__HS_OK = 0,     /* verified (or resumed) */
    MTLS__HS_UNVERIFIED, /* verify-client optional: completed without an acceptable certificate */
    MTLS__HS_REJECTED,   /* the client certificate was refused (or none sent) */
    MTLS__HS_FAILED,     /* anything else: protocol error, client gone, timeout */
    MTLS__HS_RESULTS
};

struct mtls__metrics;      /* the shared mapping */
struct mtls__metrics_slot; /* one worker's counters: one writer, summed at scrape time */

/**
 * Maps the counters for n_slots workers and n_routes routes (MAP_SHARED,
 * before the first fork: every generation of workers adds to the same
 * memory, so the totals survive a worker's restart). Returns 0 or MTLS_E_NOMEM.
 */
int mtls__metrics_new(unsigned n_slots, size_t n_routes, struct mtls__metrics **out, mtls_err *err);

/** Unmaps m. NULL-safe. */
void mtls__metrics_free(struct mtls__metrics *m);

/** The counters of slot (the worker's shared slot). NULL when m is NULL. */
struct mtls__metrics_slot *mtls__metrics_slot(struct mtls__metrics *m, unsigned slot);

/* ---- counting: one call at each event point; s may not be NULL ----------- */

/** A handshake ended (MTLS__HS_*); code the verify code for REJECTED/UNVERIFIED. */
void mtls__metrics_handshake(struct mtls__metrics_slot *s, int result, int resumed, int code);

/** An answered request: route index (-1: none), status, duration. */
void mtls__metrics_request(struct mtls__metrics_slot *s, const struct mtls__metrics *m, long route,
                           int status, uint64_t ns);

/** The proxy answered 502/504 or cut a response short (cause MTLS_UPSTREAM_*). */
void mtls__metrics_upstream_error(struct mtls__metrics_slot *s, int status, int cause);

/** An --allow rule denied a request (also in dry-run mode). */
void mtls__metrics_denial(struct mtls__metrics_slot *s);

/** A reload (SIGHUP) by the main process: ok or refused. Atomic; any thread. */
void mtls__metrics_reload(struct mtls__metrics *m, int ok);

/* ---- exposition ---------------------------------------------------------- */

/** What the exposition reads besides the counters (all borrowed). */
struct mtls__metrics_view {
    const struct mtls__metrics *m;
    const atomic_uint *open_conns;  /* the connection cap's count */
    SSL_CTX *const *ssl_ctx;        /* the serving context (replaced on reload): cert, CAs, CRLs */
    const mtls_http_routes *routes; /* route i's label is its path */
    int dry_run;                    /* --allow-dry-run: denials are labelled so */
};

/**
 * Writes the Prometheus text format 0.0.4 of everything into a new buffer
 * (*out, owned by the caller, free()), *len bytes. Returns 0 or MTLS_E_NOMEM.
 */
int mtls__metrics_format(const struct mtls__metrics_view *v, char **out, size_t *len);

/** Content-Type of the exposition. */
#define MTLS__METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- the /metrics listener (metrics_http.c) -------------------------------- */

struct mtls__metrics_http;

/** The most addresses --metrics-listen binds ("localhost": ::1 and 127.0.0.1). */
#define MTLS__METRICS_MAX_FDS 4

/**
 * Serves GET /metrics in plain HTTP/1.1 on the listening sockets fds
 * (borrowed) from loop; view is read at each scrape (borrowed, outlives the
 * listener). Returns 0 or MTLS_E_NOMEM.
 */
int mtls__metrics_http_start(uv_loop_t *loop, const int *fds, unsigned n_fds,
                             const struct mtls__metrics_view *view,
                             struct mtls__metrics_http **out);

/** Stops accepting and closes its connections; freed once their handles closed. NULL-safe. */
void mtls__metrics_http_stop(struct mtls__metrics_http *h);

#endif
