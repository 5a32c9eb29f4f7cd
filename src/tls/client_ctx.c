/* A client SSL_CTX made from files: the CAs we trust, our certificate and
 * key, checked against each other before anything connects. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "mtls/client.h"
#include "mtls/pki.h"

int mtls_is_ip_literal(const char *text)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, text, buf) == 1 || inet_pton(AF_INET6, text, buf) == 1;
}

/* Trusts every certificate of path (PEM bundle or DER). */
static int load_cacert(SSL_CTX *ctx, const char *path, mtls_err *err)
{
    STACK_OF(X509) *certs = NULL;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int rc = mtls_cert_load_all(path, &certs, err);

    if (rc == MTLS_E_INVALID && err != NULL) {
        char what[MTLS_ERR_MSG_MAX];

        /* The usual mistake: a key, or the server's own certificate request. */
        snprintf(what, sizeof(what), "%s", err->msg);
        mtls_err_set(err, rc,
                     "%s: --cacert needs the certificate of the CA that signed the server's "
                     "certificate",
                     what);
        goto out;
    }
    for (int i = 0; rc == 0 && i < sk_X509_num(certs); i++) {
        if (X509_STORE_add_cert(store, sk_X509_value(certs, i)) != 1)
            rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot trust the certificates of '%s'", path);
    }
out:
    sk_X509_pop_free(certs, X509_free);
    ERR_clear_error();
    return rc;
}

/* Our certificate, and the ones after it in the file as the chain we send. */
static int load_cert(SSL_CTX *ctx, const char *path, mtls_err *err)
{
    STACK_OF(X509) *certs = NULL;
    X509 *leaf = NULL;
    int rc = mtls_cert_load_all(path, &certs, err);

    if (rc != 0)
        goto out;
    leaf = sk_X509_shift(certs);
    if (SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_set1_chain(ctx, certs) != 1)
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot use the certificate in '%s'", path);
out:
    X509_free(leaf);
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

static int load_key(SSL_CTX *ctx, const mtls_client_files *files, mtls_err *err)
{
    EVP_PKEY *key = NULL;
    int rc = mtls_key_load(files->key, files->password, &key, err);

    if (rc != 0)
        goto out;
    /* SSL_CTX_use_PrivateKey() already compares it with the certificate;
     * the explicit check gives the mistake its own plain sentence. */
    if (!mtls_key_matches_cert(key, SSL_CTX_get0_certificate(ctx))) {
        rc = mtls_err_set(err, MTLS_E_INVALID,
                          "your key '%s' does not match your certificate '%s': pass the key "
                          "the certificate was made for",
                          files->key, files->cert);
        goto out;
    }
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1)
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot use the key in '%s'", files->key);
out:
    EVP_PKEY_free(key);
    return rc;
}

SSL_CTX *mtls_client_ctx_new(const mtls_client_files *files, mtls_err *err)
{
    SSL_CTX *ctx = NULL;
    int ok = 0;

    if ((files->cert == NULL) != (files->key == NULL)) {
        mtls_err_set(err, MTLS_E_INVALID, "%s",
                     files->cert != NULL ? "a client certificate needs its key: pass --key too"
                                         : "a client key needs its certificate: pass --cert too");
        goto out;
    }
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        mtls_err_ssl(err, MTLS_E_CRYPTO, "SSL_CTX_new() failed");
        goto out;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot require TLS 1.2 or later");
        goto out;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (files->cacert != NULL) {
        if (load_cacert(ctx, files->cacert, err) != 0)
            goto out;
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        /* No system store is not fatal: every server is then unknown. */
        ERR_clear_error();
    }
    if (files->cert != NULL) {
        if (load_cert(ctx, files->cert, err) != 0)
            goto out;
        if (load_key(ctx, files, err) != 0)
            goto out;
    }
    ok = 1;
out:
    if (!ok) {
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

int mtls_client_set_peer_name(SSL *ssl, const char *name, mtls_err *err)
{
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);

    if (name == NULL || name[0] == '\0')
        return mtls_err_set(err, MTLS_E_INVALID, "the server name is empty");
    if (mtls_is_ip_literal(name)) {
        /* An address is checked against the IP SANs and never sent as SNI. */
        if (X509_VERIFY_PARAM_set1_ip_asc(param, name) != 1)
            return mtls_err_ssl(err, MTLS_E_INVALID, "cannot check the address '%s'", name);
        return 0;
    }
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (X509_VERIFY_PARAM_set1_host(param, name, 0) != 1)
        return mtls_err_ssl(err, MTLS_E_INVALID, "cannot check the host name '%s'", name);
    if (SSL_set_tlsext_host_name(ssl, name) != 1)
        return mtls_err_ssl(err, MTLS_E_INVALID, "cannot send the server name '%s'", name);
    return 0;
}
