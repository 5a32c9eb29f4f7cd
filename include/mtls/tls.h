/*
 * mtls/tls.h - the TLS server side of libmtls: an SSL_CTX made from files
 * and a verification policy, and the plain-words reason for a handshake that
 * failed.
 *
 * Part of the tls layer (src/tls/server_ctx.c, src/tls/handshake_reason.c).
 * The client side is in mtls/client.h.
 */
#ifndef MTLS_TLS_H
#define MTLS_TLS_H

#include <stddef.h>
#include <time.h>

#include <openssl/ssl.h>

#include "mtls/base.h"
#include "mtls/certinfo.h"

#ifdef __cplusplus
extern "C" {
#endif

/** How the server treats client certificates. */
typedef enum mtls_verify_client {
    MTLS_VERIFY_REQUIRE = 0, /* no or bad certificate: the handshake fails (the article's server) */
    MTLS_VERIFY_OPTIONAL = 1, /* the handshake completes; the request is answered 403 */
} mtls_verify_client;

/** The default maximum number of intermediate CAs in a client's chain. */
#define MTLS_VERIFY_DEPTH_DEFAULT 4

/**
 * A TLS session cache in shared memory (src/tls/session_cache.c): made
 * before the workers are forked or started, every server SSL_CTX given it
 * stores and finds sessions there, so any worker resumes any worker's
 * sessions.
 */
typedef struct mtls_tls_session_cache mtls_tls_session_cache;

/** What the shared session cache has done since it was made. */
typedef struct mtls_tls_session_cache_stats {
    unsigned long long stored;     /* sessions written */
    unsigned long long hits;       /* lookups answered from shared memory (parsed again) */
    unsigned long long local_hits; /* lookups answered from the context's own parsed sessions */
    unsigned long long misses;  /* lookups that found none (unknown, expired, older generation) */
    unsigned long long evicted; /* live sessions overwritten for room */
    unsigned long long removed; /* sessions OpenSSL asked to drop (a fatal alert) */
    unsigned long long too_big; /* sessions over 4 KB, not cached */
    unsigned long long flushes; /* mtls_tls_session_cache_flush() calls */
    unsigned generation;        /* the current generation */
} mtls_tls_session_cache_stats;

/**
 * Maps a session cache of about bytes bytes (sessions of a P-256 client
 * certificate take ~600) as anonymous MAP_SHARED memory, with one
 * process-shared lock: processes forked afterwards and threads share it.
 * Pages take memory only once used. Returns 0 and *out (free it with
 * mtls_tls_session_cache_free()), or MTLS_E_NOMEM with err set.
 */
int mtls_tls_session_cache_new(size_t bytes, mtls_tls_session_cache **out, mtls_err *err);

/** Unmaps cache (in this process). NULL-safe. */
void mtls_tls_session_cache_free(mtls_tls_session_cache *cache);

/**
 * Empties cache for a reload: from now on no session stored before resumes,
 * in any process, and contexts made before this call neither find nor store
 * sessions any more. ctx (may be NULL), a context made for the reload, and
 * contexts made after the call use the emptied cache.
 */
void mtls_tls_session_cache_flush(mtls_tls_session_cache *cache, SSL_CTX *ctx);

/** Copies cache's counters into out (zeros for a NULL cache). */
void mtls_tls_session_cache_stats_get(mtls_tls_session_cache *cache,
                                      mtls_tls_session_cache_stats *out);

/** What a server SSL_CTX is made of. Strings are borrowed file names. */
typedef struct mtls_tls_server_opts {
    const char *cert_file;        /* PEM: the server certificate, then any intermediates */
    const char *key_file;         /* PEM: its private key */
    const char *key_password;     /* its password when it is encrypted, or NULL */
    const char *client_ca_file;   /* PEM: the CA certificates client certificates must chain to */
    const char *const *crl_files; /* PEM CRLs (n_crl_files of them), may be NULL */
    size_t n_crl_files;
    mtls_verify_client verify;
    int verify_depth; /* 0: MTLS_VERIFY_DEPTH_DEFAULT */
    /* borrowed: sessions go to this shared cache; NULL: the SSL_CTX's own cache in memory */
    mtls_tls_session_cache *session_cache;
    /*
     * Files of 80-byte ticket keys (nginx's ssl_session_ticket_key format;
     * the first key encrypts, all decrypt): when given, stateless tickets
     * replace the session cache, so servers holding the same keys resume
     * each other's sessions. A ticket resumes only where the client CAs,
     * CRLs and verify policy are the ones it was verified under.
     */
    const char *const *ticket_key_files;
    size_t n_ticket_key_files;
} mtls_tls_server_opts;

/** Receives one warning about the configuration (msg borrowed, no newline). */
typedef void (*mtls_tls_warn_fn)(void *ctx, const char *msg);

/**
 * Makes a server SSL_CTX from opts: TLS 1.2 and 1.3 only, the certificate
 * chain and key (checked to match), the client CA file as trust store and as
 * the CA names sent in the CertificateRequest, client certificates checked
 * for the clientAuth purpose, SSL_VERIFY_PEER (plus FAIL_IF_NO_PEER_CERT when
 * required), CRLs (when given) checked for every certificate of the chain
 * (X509_V_FLAG_CRL_CHECK_ALL), a server-side session cache
 * (opts->session_cache when given, else one of the SSL_CTX's own; resumed
 * sessions keep the verified client certificate; entries live 5 minutes at
 * most, never past the client certificate's notAfter or the CRLs'
 * nextUpdate), or stateless tickets instead when opts->ticket_key_files are
 * given, read-ahead on.
 *
 * Problems that would still let the server run (server certificate expired
 * or not yet valid, not meant for serverAuth, a CRL that expires within a
 * week) go to warn (may be NULL). Problems that stop it (a missing or
 * unreadable file, no certificate in a file, a key that does not match, an
 * expired CRL, a CRL whose issuer is none of the client CAs or whose
 * signature is not theirs, a client CA without a CRL when CRLs are given)
 * return an error that names the file.
 *
 * Returns 0 and a new SSL_CTX in *out (the caller frees it with
 * SSL_CTX_free()), or MTLS_E_NOTFOUND / MTLS_E_IO / MTLS_E_INVALID /
 * MTLS_E_CRYPTO with err set.
 */
int mtls_tls_server_ctx_new(const mtls_tls_server_opts *opts, mtls_tls_warn_fn warn, void *warn_ctx,
                            SSL_CTX **out, mtls_err *err);

/**
 * What mtls_tls_server_ctx_new() would refuse in opts, every problem at
 * once: the certificate and key, the client CAs, the CRLs (when the CAs
 * load) and the ticket keys are each checked on their own, each problem
 * passed to problem() as one sentence naming the file (borrowed, valid
 * during the call); when all load, the whole context is built once for the
 * checks that need all of them. Warnings are not reported. Returns the
 * number of problems (0: the server would start with these files).
 */
int mtls_tls_server_check(const mtls_tls_server_opts *opts,
                          void (*problem)(void *ctx, const char *msg), void *problem_ctx);

/**
 * The earliest nextUpdate of the CRLs in ctx's trust store, or 0 when it
 * holds none; issuer (may be NULL) receives that CRL's issuer name. The one
 * place this is computed: the server's CRL watch and the session and
 * verification caches' limits use it.
 */
time_t mtls_tls_crl_next_update(SSL_CTX *ctx, char *issuer, size_t size);

/**
 * What the verify callback saw about the first client certificate that
 * failed, kept per connection. Caller-owned storage (zero it, then attach).
 */
typedef struct mtls_tls_verify_note {
    int error; /* X509_V_ERR_*; 0 when nothing failed */
    int depth; /* 0: the client's own certificate */
    char subject[MTLS_NAME_MAX];
    char issuer[MTLS_NAME_MAX];
    char serial[MTLS_SERIAL_HEX_MAX]; /* mtls_serial_hex() */
    time_t not_before, not_after;
    char reason[MTLS_ERR_MSG_MAX]; /* mtls_verify_reason(), worded in the verify callback */
} mtls_tls_verify_note;

/**
 * Makes ssl record verification failures in note (borrowed; it must outlive
 * ssl's handshake; NULL detaches it). Returns 0, or MTLS_E_CRYPTO when
 * OpenSSL refuses.
 */
int mtls_tls_note_attach(SSL *ssl, mtls_tls_verify_note *note);

/**
 * Why the handshake on ssl failed, in plain words, for the system log:
 * "issuer not trusted: client certificate 'CN=mallory' was issued by
 * 'CN=other-ca', which is not a trusted CA", "no client certificate was
 * sent", "the client does not trust the server certificate (it sent alert
 * unknown_ca)". ssl_error is SSL_get_error()'s answer and sys_errno the
 * errno after the failed call. *alert (when alert is not NULL) is set to
 * the alert this server sent for a refused client certificate, chosen by
 * verify code from the same table as the words (mtls_verify_alert()), or
 * NULL when the failure was not a refused certificate. Reads (and empties)
 * this thread's OpenSSL error queue. Writes into buf and returns it.
 */
char *mtls_tls_handshake_reason(SSL *ssl, const mtls_tls_verify_note *note, int ssl_error,
                                int sys_errno, const char **alert, char *buf, size_t size);

/**
 * The verify code of a refused client certificate (a failed handshake for
 * which mtls_tls_handshake_reason() gave an alert, or a denied one):
 * note's, else MTLS_VERIFY_NO_CERT when none was sent, else the SSL's
 * verify result. Decide by it (mtls_verify_reason_of()), never by words.
 */
int mtls_tls_refused_code(SSL *ssl, const mtls_tls_verify_note *note);

/**
 * For MTLS_VERIFY_OPTIONAL: why a completed handshake has no acceptable
 * client certificate (into buf), or NULL when the client is verified.
 */
const char *mtls_tls_denied_reason(SSL *ssl, const mtls_tls_verify_note *note, char *buf,
                                   size_t size);

#ifdef __cplusplus
}
#endif

#endif
