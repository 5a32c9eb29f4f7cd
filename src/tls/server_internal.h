/* Internal helpers of the tls layer's server side (server_ctx.c, handshake_reason.c). */
#ifndef MTLS_TLS_SERVER_INTERNAL_H
#define MTLS_TLS_SERVER_INTERNAL_H

#include <stddef.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/x509.h>

#include "mtls/tls.h"

/** The SSL ex_data index that holds a connection's mtls_tls_verify_note. */
int mtls__srv_note_index(void);

/** Copies cert's subject, issuer, serial and dates into note. */
void mtls__srv_note_cert(mtls_tls_verify_note *note, X509 *cert);

/**
 * Gives ctx a cache of client chains that verified (see verify_cache.c),
 * freed with ctx. crl_until: the earliest nextUpdate of its CRLs, 0 for none.
 * Returns 0, or -1 when out of memory (ctx then verifies every time).
 */
int mtls__srv_verify_cache_attach(SSL_CTX *ctx, time_t crl_until);

/** The earliest CRL nextUpdate given to mtls__srv_verify_cache_attach(), or 0. */
time_t mtls__srv_verify_cache_crl_until(SSL_CTX *ctx);

/**
 * Caps session's lifetime: 5 minutes, the client certificate's notAfter and
 * the earliest nextUpdate of ssl's context's CRLs, whichever comes first.
 */
void mtls__srv_session_cap(SSL *ssl, SSL_SESSION *session);

/**
 * Makes ctx issue and accept stateless tickets under the keys of files
 * (80-byte keys, the first encrypts; see ticket_keys.c) instead of keeping
 * a session cache. Call it once ctx's trust store and verify policy are
 * set. Returns 0, or MTLS_E_* with err naming the file.
 */
int mtls__srv_ticket_keys_attach(SSL_CTX *ctx, const char *const *files, size_t n_files,
                                 mtls_err *err);

/**
 * Makes ctx keep its sessions in cache (shared memory) instead of its own:
 * sets the get and remove callbacks and SSL_SESS_CACHE_NO_INTERNAL.
 * Returns 0, or -1 when out of memory.
 */
int mtls__srv_session_cache_attach(SSL_CTX *ctx, mtls_tls_session_cache *cache);

/**
 * The new-session callback's end: stores session in the shared cache of
 * ssl's context, if it has one. Returns what the callback returns (0: the
 * caller keeps no extra reference).
 */
int mtls__srv_session_cache_put(SSL *ssl, SSL_SESSION *session);

#endif
