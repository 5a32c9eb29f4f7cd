/*
 * The server's SSL_CTX: files loaded and checked with messages that name
 * them, TLS 1.2+ only, client certificates verified at the TLS layer like
 * the article's Node server (requestCert + rejectUnauthorized).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtls/certinfo.h"
#include "mtls/pki.h"
#include "mtls/tls.h"
#include "server_internal.h"

#define PEM_MAX (4 * 1024 * 1024)
#define SESSION_MAX_AGE 300     /* seconds, nginx's default */
#define SESSION_CACHE_SIZE 4096 /* sessions per worker */
#define WEEK (7 * 24 * 3600)

/* OpenSSL's default TLS 1.3 suites with AES-128-GCM first (see prefer_aes128()). */
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

static int note_index = -1;
static pthread_once_t note_once = PTHREAD_ONCE_INIT;

static void note_index_init(void)
{
    note_index = SSL_get_ex_new_index(0, "mtls verify note", NULL, NULL, NULL);
}

int mtls__srv_note_index(void)
{
    pthread_once(&note_once, note_index_init);
    return note_index;
}

int mtls_tls_note_attach(SSL *ssl, mtls_tls_verify_note *note)
{
    int idx = mtls__srv_note_index();

    if (idx < 0 || !SSL_set_ex_data(ssl, idx, note))
        return MTLS_E_CRYPTO;
    return 0;
}

/*
 * Records the first failure with the certificate it concerns. In optional
 * mode (no FAIL_IF_NO_PEER_CERT) the handshake goes on, and the request is
 * answered 403 with this note's reason.
 */
static int verify_cb(int preverify_ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    mtls_tls_verify_note *note = NULL;
    int required;

    if (ssl == NULL)
        return preverify_ok;
    required = (SSL_get_verify_mode(ssl) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) != 0;
    note = SSL_get_ex_data(ssl, mtls__srv_note_index());
    if (!preverify_ok && note != NULL && note->error == 0) {
        X509 *cert = X509_STORE_CTX_get_current_cert(store);

        note->error = X509_STORE_CTX_get_error(store);
        note->depth = X509_STORE_CTX_get_error_depth(store);
        if (cert != NULL)
            mtls__srv_note_cert(note, cert);
        /* Worded now, while the store still knows the CRL involved (revocation date). */
        mtls_verify_reason(store, MTLS_PROFILE_CLIENT, NULL, "client", note->reason,
                           sizeof(note->reason));
    }
    return required ? preverify_ok : 1;
}

void mtls__srv_note_cert(mtls_tls_verify_note *note, X509 *cert)
{
    mtls_name_oneline(X509_get_subject_name(cert), note->subject, sizeof(note->subject));
    mtls_name_oneline(X509_get_issuer_name(cert), note->issuer, sizeof(note->issuer));
    mtls_serial_hex(X509_get0_serialNumber(cert), note->serial, sizeof(note->serial));
    note->not_before = mtls_asn1_time(X509_get0_notBefore(cert));
    note->not_after = mtls_asn1_time(X509_get0_notAfter(cert));
}

void mtls__srv_session_cap(SSL *ssl, SSL_SESSION *session)
{
    X509 *peer = SSL_SESSION_get0_peer(session);
    time_t now = time(NULL), until = now + SESSION_MAX_AGE;
    time_t crl_until = mtls__srv_verify_cache_crl_until(SSL_get_SSL_CTX(ssl));

    if (peer != NULL) {
        time_t na = mtls_asn1_time(X509_get0_notAfter(peer));

        if (na != 0 && na < until)
            until = na;
    }
    if (crl_until != 0 && crl_until < until)
        until = crl_until;
    SSL_SESSION_set_timeout(session, until > now ? (long)(until - now) : 1);
}

/*
 * A new session enters the cache: it may not outlive the client
 * certificate, nor the CRLs it was checked against.
 */
static int session_new(SSL *ssl, SSL_SESSION *session)
{
    mtls__srv_session_cap(ssl, session);
    /* To the shared cache when there is one, else OpenSSL keeps its own reference. */
    return mtls__srv_session_cache_put(ssl, session);
}

/*
 * ALPN: HTTP/2 when the client offers it, else HTTP/1.1; a client that
 * offers neither (or no ALPN at all) goes on without one and speaks
 * HTTP/1.1. The worker reads the choice after the handshake.
 */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x02h2\x08http/1.1";
    unsigned char *chosen = NULL;

    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&chosen, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

/* Keeps OpenSSL from prompting on a terminal for an encrypted key. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int read_file(const char *path, BIO **out, char **text, mtls_err *err)
{
    unsigned char *data = NULL;
    size_t len = 0;
    int rc = mtls_file_read(path, PEM_MAX, &data, &len, err);

    *out = NULL;
    if (rc != 0)
        return rc;
    *out = BIO_new_mem_buf(data, (int)len);
    if (*out == NULL) {
        mtls_free_secret(data, len);
        return mtls_err_ssl(err, MTLS_E_NOMEM, "cannot read '%s'", path);
    }
    *text = (char *)data;
    return 0;
}

/*
 * Every certificate of a PEM file, at least one, with pki's reader (whose
 * errors say what the file holds instead); the error names the file's role.
 */
static int load_certs(const char *path, const char *what, STACK_OF(X509) * *out, mtls_err *err)
{
    int rc = mtls_cert_load_all(path, out, err);

    if (rc == MTLS_E_INVALID && err != NULL) {
        char msg[MTLS_ERR_MSG_MAX];

        snprintf(msg, sizeof(msg), "%s", err->msg);
        mtls_err_set(err, rc, "%s: %s", what, msg);
    }
    return rc;
}

static void warnf(mtls_tls_warn_fn warn, void *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void warnf(mtls_tls_warn_fn warn, void *ctx, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (warn == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    warn(ctx, msg);
}

/* Warnings about the server certificate that do not stop the server. */
static void check_server_cert(X509 *leaf, const char *path, mtls_tls_warn_fn warn, void *ctx)
{
    time_t now = time(NULL);
    time_t nb = mtls_asn1_time(X509_get0_notBefore(leaf));
    time_t na = mtls_asn1_time(X509_get0_notAfter(leaf));
    char when[40], subject[MTLS_NAME_MAX];

    mtls_name_oneline(X509_get_subject_name(leaf), subject, sizeof(subject));
    if (na != 0 && na < now)
        warnf(warn, ctx, "server certificate '%s' (%s) expired on %s; clients will refuse it", path,
              subject, mtls_time_human(na, when, sizeof(when)));
    else if (nb != 0 && nb > now)
        warnf(warn, ctx, "server certificate '%s' (%s) is not valid until %s", path, subject,
              mtls_time_human(nb, when, sizeof(when)));
    if (X509_check_purpose(leaf, X509_PURPOSE_SSL_SERVER, 0) != 1)
        warnf(warn, ctx,
              "server certificate '%s' (%s) is not meant for TLS servers (its key usage or "
              "extended key usage lacks serverAuth); clients may refuse it",
              path, subject);
}

static int use_cert_and_key(SSL_CTX *ctx, const mtls_tls_server_opts *opts, mtls_tls_warn_fn warn,
                            void *warn_ctx, mtls_err *err)
{
    STACK_OF(X509) *chain = NULL;
    EVP_PKEY *key = NULL;
    X509 *leaf;
    int rc;

    rc = load_certs(opts->cert_file, "server certificate", &chain, err);
    if (rc != 0)
        goto out;
    /* mtls_key_load: the same key reading (and messages) as every PKI command. */
    rc = mtls_key_load(opts->key_file, opts->key_password, &key, err);
    if (rc != 0)
        goto out;
    leaf = sk_X509_value(chain, 0);
    if (!X509_check_private_key(leaf, key)) {
        ERR_clear_error();
        rc = mtls_err_set(err, MTLS_E_INVALID,
                          "private key '%s' does not match the certificate in '%s'", opts->key_file,
                          opts->cert_file);
        goto out;
    }
    if (SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot use certificate '%s' with key '%s'",
                          opts->cert_file, opts->key_file);
        goto out;
    }
    for (int i = 1; i < sk_X509_num(chain); i++) {
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i)) != 1) {
            rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot use the chain in '%s'", opts->cert_file);
            goto out;
        }
    }
    check_server_cert(leaf, opts->cert_file, warn, warn_ctx);
    rc = 0;
out:
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
    return rc;
}

/* The client CA file: the trust store and the names sent in CertificateRequest. */
static int use_client_cas(SSL_CTX *ctx, const mtls_tls_server_opts *opts, mtls_tls_warn_fn warn,
                          void *warn_ctx, mtls_err *err)
{
    STACK_OF(X509) *cas = NULL;
    STACK_OF(X509_NAME) *names = NULL;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int rc;

    rc = load_certs(opts->client_ca_file, "client CA file", &cas, err);
    if (rc != 0)
        goto out;
    names = sk_X509_NAME_new_null();
    if (names == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot use '%s'", opts->client_ca_file);
        goto out;
    }
    for (int i = 0; i < sk_X509_num(cas); i++) {
        X509 *ca = sk_X509_value(cas, i);
        X509_NAME *name = X509_NAME_dup(X509_get_subject_name(ca));
        char subject[MTLS_NAME_MAX];

        if (name == NULL || !sk_X509_NAME_push(names, name)) {
            X509_NAME_free(name);
            rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot use '%s'", opts->client_ca_file);
            goto out;
        }
        if (X509_STORE_add_cert(store, ca) != 1) {
            rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot trust the CAs in '%s'",
                              opts->client_ca_file);
            goto out;
        }
        if (X509_check_ca(ca) == 0) {
            mtls_name_oneline(X509_get_subject_name(ca), subject, sizeof(subject));
            warnf(warn, warn_ctx, "client CA file '%s' holds %s, which is not a CA certificate",
                  opts->client_ca_file, subject);
        }
    }
    SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
    names = NULL;
    rc = 0;
out:
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    sk_X509_pop_free(cas, X509_free);
    return rc;
}

time_t mtls_tls_crl_next_update(SSL_CTX *ctx, char *issuer, size_t size)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
    time_t earliest = 0;

    if (issuer != NULL && size > 0)
        issuer[0] = '\0';
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, i));
        time_t next = crl != NULL ? mtls_asn1_time(X509_CRL_get0_nextUpdate(crl)) : 0;

        if (next != 0 && (earliest == 0 || next < earliest)) {
            earliest = next;
            if (issuer != NULL && size > 0)
                mtls_name_oneline(X509_CRL_get_issuer(crl), issuer, size);
        }
    }
    return earliest;
}

/* The client CA (in store) that issued crl: same name, and its key signed the CRL. */
static X509 *crl_issuer_ca(X509_STORE *store, X509_CRL *crl, int *bad_signature)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);

    *bad_signature = 0;
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

        if (ca == NULL || X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) != 0)
            continue;
        if (X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1)
            return ca;
        *bad_signature = 1;
    }
    ERR_clear_error();
    return NULL;
}

/* 1 when the store holds a CRL issued by ca. */
static int has_crl_of(X509_STORE *store, X509 *ca)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);

    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, i));

        if (crl != NULL && X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) == 0)
            return 1;
    }
    return 0;
}

/*
 * With CRLs, every client CA must have one: the whole chain is checked
 * (X509_V_FLAG_CRL_CHECK_ALL), so a CA without its CRL would refuse every
 * client under it; better said at start (or reload) than per handshake.
 */
static int every_ca_has_a_crl(X509_STORE *store, const mtls_tls_server_opts *opts, mtls_err *err)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);

    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        char subject[MTLS_NAME_MAX];

        if (ca == NULL || has_crl_of(store, ca))
            continue;
        mtls_name_oneline(X509_get_subject_name(ca), subject, sizeof(subject));
        return mtls_err_set(err, MTLS_E_INVALID,
                            "client CA %s in '%s' has no CRL among the --crl files: with CRLs, "
                            "every certificate of a client's chain is checked, so pass that CA's "
                            "CRL too ('mtls crl create'), or no --crl at all",
                            subject, opts->client_ca_file);
    }
    return 0;
}

/*
 * CRLs: every certificate of the client's chain is checked against its
 * issuer's CRL (X509_V_FLAG_CRL_CHECK_ALL), so a revoked intermediate is
 * refused too. Each CRL must come from one of the client CAs (same name,
 * signed by its key), and each client CA must have its CRL.
 */
static int use_crls(SSL_CTX *ctx, const mtls_tls_server_opts *opts, mtls_tls_warn_fn warn,
                    void *warn_ctx, mtls_err *err)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    time_t now = time(NULL);
    BIO *bio = NULL;
    char *text = NULL;
    int rc = 0;

    for (size_t i = 0; i < opts->n_crl_files; i++) {
        const char *path = opts->crl_files[i];
        X509_CRL *crl;
        int count = 0;

        rc = read_file(path, &bio, &text, err);
        if (rc != 0)
            goto out;
        while ((crl = PEM_read_bio_X509_CRL(bio, NULL, no_password, NULL)) != NULL) {
            time_t next = mtls_asn1_time(X509_CRL_get0_nextUpdate(crl));
            char issuer[MTLS_NAME_MAX], when[40];
            int bad_signature;

            mtls_name_oneline(X509_CRL_get_issuer(crl), issuer, sizeof(issuer));
            if (crl_issuer_ca(store, crl, &bad_signature) == NULL) {
                X509_CRL_free(crl);
                rc = bad_signature
                         ? mtls_err_set(err, MTLS_E_INVALID,
                                        "CRL '%s' from %s has a bad signature: it was not made "
                                        "by the key of the client CA of that name in '%s'",
                                        path, issuer, opts->client_ca_file)
                         : mtls_err_set(err, MTLS_E_INVALID,
                                        "CRL '%s' is from %s, which is none of the client CAs "
                                        "in '%s': pass the CRLs of the client CAs (or add that "
                                        "CA to the client CA file)",
                                        path, issuer, opts->client_ca_file);
                goto out;
            }
            if (next != 0 && next < now) {
                X509_CRL_free(crl);
                rc = mtls_err_set(err, MTLS_E_INVALID,
                                  "CRL '%s' from %s expired on %s (its next update); make a "
                                  "fresh one with 'mtls crl create'",
                                  path, issuer, mtls_time_human(next, when, sizeof(when)));
                goto out;
            }
            if (next != 0 && next - now < WEEK)
                warnf(warn, warn_ctx,
                      "CRL '%s' from %s expires on %s; make a fresh one before then or every "
                      "client of that CA will be refused",
                      path, issuer, mtls_time_human(next, when, sizeof(when)));
            if (X509_STORE_add_crl(store, crl) != 1) {
                X509_CRL_free(crl);
                rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot use CRL '%s'", path);
                goto out;
            }
            X509_CRL_free(crl);
            count++;
        }
        ERR_clear_error();
        if (count == 0) {
            rc = mtls_err_set(err, MTLS_E_INVALID, "'%s' holds no PEM CRL", path);
            goto out;
        }
        BIO_free(bio);
        free(text);
        bio = NULL;
        text = NULL;
    }
    if (opts->n_crl_files > 0) {
        rc = every_ca_has_a_crl(store, opts, err);
        if (rc != 0)
            goto out;
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    }
out:
    BIO_free(bio);
    free(text);
    return rc;
}

/*
 * Puts AES-128-GCM first among the TLS 1.3 suites when ctx has OpenSSL's
 * default ones (AES-256-GCM first); suites chosen in the OpenSSL
 * configuration (CipherSuites in OPENSSL_CONF) are left as they are. It is
 * the suite every TLS 1.3 peer implements (RFC 8446, 9.1) and Mozilla's
 * first choice; with P-256 or X25519 key exchange and P-256 or RSA-2048
 * signatures a handshake is at the 128-bit level whichever suite protects
 * it, and SHA-256 in the key schedule and 10 AES rounds instead of 14 cost
 * less (docs/PERFORMANCE.md: about 90 k instructions per full handshake,
 * 100 k per resumed one). No suite is dropped: a client that offers only
 * AES-256 or ChaCha20 gets it. Returns 1, or 0 when OpenSSL failed.
 */
static int prefer_aes128(SSL_CTX *ctx)
{
    STACK_OF(SSL_CIPHER) *ciphers = SSL_CTX_get_ciphers(ctx);
    char have[256] = "";
    size_t len = 0;

    for (int i = 0; i < sk_SSL_CIPHER_num(ciphers); i++) {
        const SSL_CIPHER *c = sk_SSL_CIPHER_value(ciphers, i);
        const char *name = SSL_CIPHER_get_name(c);
        int n;

        if (strcmp(SSL_CIPHER_get_version(c), "TLSv1.3") != 0)
            continue;
        n = snprintf(have + len, sizeof(have) - len, "%s%s", len > 0 ? ":" : "", name);
        if (n < 0 || (size_t)n >= sizeof(have) - len)
            return 1; /* not the default list, which fits */
        len += (size_t)n;
    }
    if (strcmp(have, OSSL_default_ciphersuites()) != 0)
        return 1;
    return SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES);
}

int mtls_tls_server_ctx_new(const mtls_tls_server_opts *opts, mtls_tls_warn_fn warn, void *warn_ctx,
                            SSL_CTX **out, mtls_err *err)
{
    static const unsigned char sid_ctx[] = "mtls";
    SSL_CTX *ctx = NULL;
    int mode, rc;

    *out = NULL;
    if (mtls__srv_note_index() < 0)
        return mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot set up TLS");
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "SSL_CTX_new() failed");
        goto out;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot require TLS 1.2");
        goto out;
    }
    if (prefer_aes128(ctx) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot set the TLS 1.3 cipher suites");
        goto out;
    }
    /*
     * Resumption from a session cache in memory, not stateless tickets: a
     * ticket carries the client certificate, which OpenSSL encodes when it
     * issues the ticket and decodes again when it accepts it, costing about
     * what the full handshake's certificate work costs (measured in
     * docs/PERFORMANCE.md: full handshakes 6.06 M -> 7.84 M instructions
     * with tickets). A cached session keeps the parsed certificate, so a
     * returning client skips all certificate work and its identity is the
     * same. Without opts->session_cache each SSL_CTX has its own cache and a
     * reload makes a new SSL_CTX, so no session from before it resumes; with
     * it, every worker's context shares one cache in shared memory
     * (session_cache.c), emptied by mtls_tls_session_cache_flush().
     */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_timeout(ctx, SESSION_MAX_AGE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, SESSION_CACHE_SIZE);
    SSL_CTX_sess_set_new_cb(ctx, session_new);
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    /* One read(2) per TLS record instead of header + body. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    /* The server keeps a busy connection's buffers a while (src/server/worker.c). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);

    rc = use_cert_and_key(ctx, opts, warn, warn_ctx, err);
    if (rc != 0)
        goto out;
    rc = use_client_cas(ctx, opts, warn, warn_ctx, err);
    if (rc != 0)
        goto out;
    rc = use_crls(ctx, opts, warn, warn_ctx, err);
    if (rc != 0)
        goto out;
    /* Client certificates must allow clientAuth (else: unsupported_certificate). */
    if (SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot require the clientAuth purpose");
        goto out;
    }
    SSL_CTX_set_verify_depth(ctx, opts->verify_depth > 0 ? opts->verify_depth
                                                         : MTLS_VERIFY_DEPTH_DEFAULT);
    mode = SSL_VERIFY_PEER;
    if (opts->verify == MTLS_VERIFY_REQUIRE)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, verify_cb);
    if (mtls__srv_verify_cache_attach(ctx, mtls_tls_crl_next_update(ctx, NULL, 0)) != 0) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot set up the verification cache");
        goto out;
    }
    if (opts->n_ticket_key_files > 0) {
        /* After the CAs, CRLs and verify policy: each ticket names the trust it was made under. */
        rc = mtls__srv_ticket_keys_attach(ctx, opts->ticket_key_files, opts->n_ticket_key_files,
                                          err);
        if (rc != 0)
            goto out;
    } else if (opts->session_cache != NULL &&
               mtls__srv_session_cache_attach(ctx, opts->session_cache) != 0) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot set up the shared session cache");
        goto out;
    }
    *out = ctx;
    ctx = NULL;
    rc = 0;
out:
    SSL_CTX_free(ctx);
    return rc;
}

/*
 * Each input on its own, so that --check lists every bad file at once:
 * certificate and key in one scratch context; client CAs, then (only when
 * those loaded, since a CRL is checked against them) the CRLs in another;
 * the ticket keys in a third. When each part loads alone, the whole context
 * is built once more for what only the whole can say.
 */
int mtls_tls_server_check(const mtls_tls_server_opts *opts,
                          void (*problem)(void *ctx, const char *msg), void *problem_ctx)
{
    SSL_CTX *cert_ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX *ca_ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX *whole = NULL;
    mtls_err err;
    int n = 0;

    if (cert_ctx == NULL || ca_ctx == NULL) {
        mtls_err_ssl(&err, MTLS_E_CRYPTO, "SSL_CTX_new() failed");
        problem(problem_ctx, err.msg);
        n = 1;
        goto out;
    }
    mtls_err_clear(&err);
    if (use_cert_and_key(cert_ctx, opts, NULL, NULL, &err) != 0) {
        problem(problem_ctx, err.msg);
        n++;
    }
    mtls_err_clear(&err);
    if (use_client_cas(ca_ctx, opts, NULL, NULL, &err) != 0) {
        problem(problem_ctx, err.msg);
        n++;
    } else {
        mtls_err_clear(&err);
        if (use_crls(ca_ctx, opts, NULL, NULL, &err) != 0) {
            problem(problem_ctx, err.msg);
            n++;
        }
    }
    if (opts->n_ticket_key_files > 0) {
        mtls_err_clear(&err);
        if (mtls__srv_ticket_keys_attach(cert_ctx, opts->ticket_key_files, opts->n_ticket_key_files,
                                         &err) != 0) {
            problem(problem_ctx, err.msg);
            n++;
        }
    }
    if (n == 0) {
        mtls_err_clear(&err);
        if (mtls_tls_server_ctx_new(opts, NULL, NULL, &whole, &err) != 0) {
            problem(problem_ctx, err.msg);
            n++;
        }
    }
out:
    SSL_CTX_free(whole);
    SSL_CTX_free(ca_ctx);
    SSL_CTX_free(cert_ctx);
    return n;
}
