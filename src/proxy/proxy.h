/*
 * The reverse proxy behind `mtls serve --upstream`: the upstream's address,
 * a pool of keep-alive HTTP/1.1 connections per worker (libuv, on the
 * worker's loop), and the route handler that forwards a request and streams
 * both bodies. Beside src/server, which owns the loop and the identity.
 */
#ifndef MTLS_PROXY_H
#define MTLS_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/x509.h>

#include <uv.h>

#include "mtls/base.h"
#include "mtls/http.h"

/** Where requests go: "http://HOST:PORT[/PREFIX]" or "unix:/PATH", resolved once. */
typedef struct mtls_upstream_addr {
    int is_unix;
    char path[108]; /* unix socket */
    struct sockaddr_storage ss;
    socklen_t ss_len;
    char host_header[300]; /* "HOST:PORT", sent when a client sent no Host */
    char prefix[1024];     /* "" or "/app" (no trailing '/') */
    size_t prefix_len;
    char shown[400]; /* "127.0.0.1:8080" or "unix:/run/app.sock", for messages */
} mtls_upstream_addr;

/**
 * Parses and resolves url into out. Returns 0, or MTLS_E_INVALID with err
 * saying what is wrong ("upstream 'x': ...").
 */
int mtls__upstream_parse(const char *url, mtls_upstream_addr *out, mtls_err *err);

/* Identity header families (--identity-headers). */
enum { MTLS_IDH_RFC9440 = 1, MTLS_IDH_XFCC = 2, MTLS_IDH_PLAIN = 4 };
#define MTLS_IDH_DEFAULT (MTLS_IDH_RFC9440 | MTLS_IDH_XFCC | MTLS_IDH_PLAIN)

/** "rfc9440,xfcc,plain" or "none" -> MTLS_IDH_* bits. Returns 0 or MTLS_E_INVALID. */
int mtls__identity_families_parse(const char *list, unsigned *out, mtls_err *err);

/**
 * The identity header lines ("Name: value\r\n"...) of a connection's client
 * certificate cert (NULL: none came) and the chain it sent (may be NULL);
 * failed is the verification failure in --verify-client optional (NULL:
 * verified). *out is owned by the caller (free()). Returns 0 or MTLS_E_NOMEM.
 */
int mtls__identity_headers(X509 *cert, STACK_OF(X509) * chain, const char *failed,
                           unsigned families, char **out, size_t *len);

/** 1 when name (len bytes) is one of the identity headers of any family. */
int mtls__identity_header_name(const char *name, size_t len);

/** What the proxy needs from the server. */
/** Why an upstream failed (a metrics label each: mtls__upstream_cause_label()). */
enum {
    MTLS_UPSTREAM_CONNECT = 0, /* cannot connect (refused, unreachable) */
    MTLS_UPSTREAM_SEND,        /* the request could not be sent */
    MTLS_UPSTREAM_CLOSED,      /* closed without (the rest of) its answer */
    MTLS_UPSTREAM_RESET,       /* the connection failed while reading */
    MTLS_UPSTREAM_INVALID,     /* an invalid response */
    MTLS_UPSTREAM_TIMEOUT,     /* 504: no answer in time */
    MTLS_UPSTREAM_INTERNAL,    /* out of memory, a failed read start */
    MTLS_UPSTREAM_CAUSES
};

/** "connect", "send", ... for a MTLS_UPSTREAM_* cause. */
const char *mtls__upstream_cause_label(int cause);

typedef struct mtls_proxy_opts {
    const mtls_upstream_addr *upstream;
    unsigned connect_timeout_ms;  /* to connect to the upstream */
    unsigned response_timeout_ms; /* the upstream's silence while we wait on it */
    unsigned max_idle;            /* pooled connections kept per worker */
    unsigned families;            /* MTLS_IDH_*: which identity headers to send */
    /* The identity header lines (families) of the request's connection (borrowed). */
    const char *(*identity)(const mtls_http_peer *peer, unsigned families, size_t *len);
    /* One system-log line (level "warn"/"error"/"info", an event key, a sentence, and
       name/value pairs for JSON lines: a NULL-terminated list). */
    void (*log)(void *ctx, const mtls_http_peer *peer, const char *level, const char *event,
                const char *message, const char *const *kv);
    void *log_ctx;
    /* An upstream failure answered 502/504 or cut short (status, MTLS_UPSTREAM_*), for
       metrics; log_ctx is its ctx. NULL: not counted. */
    void (*failed)(void *ctx, int status, int cause);
} mtls_proxy_opts;

typedef struct mtls_proxy mtls_proxy;

/** A proxy on loop (one per worker). Returns 0 or MTLS_E_NOMEM. opts is copied. */
int mtls__proxy_new(uv_loop_t *loop, const mtls_proxy_opts *opts, mtls_proxy **out);

/**
 * Closes the pooled connections; px is freed once every upstream handle
 * has closed (call after the client connections are gone). NULL-safe.
 */
void mtls__proxy_close(mtls_proxy *px);

/** The route handler (ctx: the mtls_proxy). */
int mtls__proxy_handle(void *ctx, mtls_http_request *req);

#endif
