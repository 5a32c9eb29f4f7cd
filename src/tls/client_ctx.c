/* A client SSL_CTX made from files: the CAs we trust, our certificate and
 * key, checked against each other before anything connects. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "mtls/client.h"

/* PEM files larger than this are not certificates or keys. */
#define PEM_FILE_MAX (4u * 1024 * 1024)

int mtls_is_ip_literal(const char *text)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, text, buf) == 1 || inet_pton(AF_INET6, text, buf) == 1;
}

/* Never prompts: an encrypted key is reported, not asked about. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int load_cacert(SSL_CTX *ctx, const char *path, mtls_err *err)
{
    unsigned char *data = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    STACK_OF(X509_INFO) *infos = NULL;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int rc, added = 0;

    rc = mtls_file_read(path, PEM_FILE_MAX, &data, &len, err);
    if (rc != 0)
        goto out;
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot read '%s'", path);
        goto out;
    }
    infos = PEM_X509_INFO_read_bio(bio, NULL, no_password, NULL);
    if (infos == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_INVALID, "cannot read '%s' as PEM certificates", path);
        goto out;
    }
    for (int i = 0; i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *info = sk_X509_INFO_value(infos, i);

        if (info->x509 == NULL)
            continue;
        if (X509_STORE_add_cert(store, info->x509) != 1) {
            rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot trust the certificates of '%s'", path);
            goto out;
        }
        added++;
    }
    if (added == 0)
        rc = mtls_err_set(err, MTLS_E_INVALID,
                          "'%s' holds no certificate: --cacert needs the PEM certificate of the "
                          "CA that signed the server's certificate",
                          path);
out:
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    BIO_free(bio);
    free(data);
    ERR_clear_error();
    return rc;
}

static int load_cert(SSL_CTX *ctx, const char *path, mtls_err *err)
{
    unsigned char *data = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    X509 *leaf = NULL, *extra = NULL;
    int rc;

    rc = mtls_file_read(path, PEM_FILE_MAX, &data, &len, err);
    if (rc != 0)
        goto out;
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot read '%s'", path);
        goto out;
    }
    leaf = PEM_read_bio_X509(bio, NULL, no_password, NULL);
    if (leaf == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_INVALID, "cannot read '%s' as a PEM certificate", path);
        goto out;
    }
    if (SSL_CTX_use_certificate(ctx, leaf) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot use the certificate in '%s'", path);
        goto out;
    }
    /* Certificates after the first one are the chain we send with it. */
    while ((extra = PEM_read_bio_X509(bio, NULL, no_password, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
            rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot use the chain in '%s'", path);
            goto out;
        }
        extra = NULL; /* consumed */
    }
    ERR_clear_error(); /* the end of the file is not an error */
    rc = 0;
out:
    X509_free(extra);
    X509_free(leaf);
    BIO_free(bio);
    free(data);
    return rc;
}

static int load_key(SSL_CTX *ctx, const char *path, const char *cert_path, mtls_err *err)
{
    unsigned char *data = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    EVP_PKEY *key = NULL;
    int rc;

    rc = mtls_file_read(path, PEM_FILE_MAX, &data, &len, err);
    if (rc != 0)
        goto out;
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot read '%s'", path);
        goto out;
    }
    key = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
    if (key == NULL) {
        if (len > 0 && strstr((const char *)data, "ENCRYPTED") != NULL)
            rc = mtls_err_set(err, MTLS_E_INVALID,
                              "'%s' is encrypted: decrypt it first (openssl pkey -in %s -out "
                              "plain.key)",
                              path, path);
        else
            rc = mtls_err_ssl(err, MTLS_E_INVALID, "cannot read '%s' as a PEM private key", path);
        ERR_clear_error();
        goto out;
    }
    /* SSL_CTX_use_PrivateKey() already compares it with the certificate;
     * the explicit check gives the mistake its own plain sentence. */
    if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), key) != 1) {
        ERR_clear_error();
        rc = mtls_err_set(err, MTLS_E_INVALID,
                          "your key '%s' does not match your certificate '%s': pass the key "
                          "the certificate was made for",
                          path, cert_path);
        goto out;
    }
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot use the key in '%s'", path);
        goto out;
    }
    rc = 0;
out:
    EVP_PKEY_free(key);
    BIO_free(bio);
    mtls_free_secret(data, len);
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
        if (load_key(ctx, files->key, files->cert, err) != 0)
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
