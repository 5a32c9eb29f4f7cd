/*
 * Stateless session tickets under keys read from files (`mtls serve
 * --ticket-keys`), so that replicas behind a load balancer resume each
 * other's sessions: a ticket issued by one decrypts on every server holding
 * its key.
 *
 * A key file holds one or more 80-byte keys, as nginx's
 * ssl_session_ticket_key: 16 bytes of name (sent in the clear in the
 * ticket), 32 bytes of HMAC-SHA256 key, 32 bytes of AES-256-CBC key. The
 * first key of the first file encrypts new tickets; every key decrypts, and
 * a ticket under any but the first is renewed under the first. Rotation:
 * put a new key first, keep the old one after it for a ticket lifetime (5
 * minutes), reload (SIGHUP).
 *
 * A ticket carries the whole session, client certificate included (OpenSSL
 * encodes it into every ticket it issues and parses it from every ticket it
 * accepts), so it stays valid wherever its key is, whatever that server
 * trusts. Two checks keep resumption from outliving trust: the session's
 * lifetime is capped as the cache's are (5 minutes, the client
 * certificate's notAfter, the CRLs' nextUpdate), and each ticket names the
 * trust it was verified under (SHA-256 over the client CAs, the CRLs, the
 * verify mode and depth, kept as the ticket's application data): a server
 * whose trust differs (a new CRL after a reload, another CA) ignores the
 * ticket, so the client makes a full handshake and is verified again.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "server_internal.h"

#define KEY_SIZE 80
#define MAX_KEYS 16

struct ticket_key {
    unsigned char name[16];
    unsigned char hmac[32];
    unsigned char aes[32];
};

struct ticket_keys {
    EVP_CIPHER *aes;
    unsigned char trust[32]; /* what the tickets this context issues were verified under */
    size_t n;
    struct ticket_key key[MAX_KEYS];
};

static int keys_index = -1;
static pthread_once_t keys_once = PTHREAD_ONCE_INIT;

static void keys_free(struct ticket_keys *tk)
{
    if (tk == NULL)
        return;
    EVP_CIPHER_free(tk->aes);
    OPENSSL_cleanse(tk, sizeof(*tk));
    free(tk);
}

static void keys_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    keys_free(ptr);
}

static void keys_index_init(void)
{
    keys_index = SSL_CTX_get_ex_new_index(0, "mtls ticket keys", NULL, NULL, keys_ex_free);
}

static struct ticket_keys *keys_of(SSL_CTX *ctx)
{
    return keys_index >= 0 ? SSL_CTX_get_ex_data(ctx, keys_index) : NULL;
}

/* Appends the keys of one file to tk. */
static int read_keys(struct ticket_keys *tk, const char *path, mtls_err *err)
{
    unsigned char *data = NULL;
    size_t len = 0;
    int rc = mtls_file_read(path, KEY_SIZE * MAX_KEYS, &data, &len, err);

    if (rc != 0) /* "larger than 1280 bytes": more than MAX_KEYS keys */
        goto out;
    if (len == 0 || len % KEY_SIZE != 0) {
        rc = mtls_err_set(err, MTLS_E_INVALID,
                          "ticket key file '%s' holds %zu bytes, not 80-byte keys (make one with "
                          "'openssl rand 80 > %s')",
                          path, len, path);
        goto out;
    }
    for (size_t off = 0; off < len; off += KEY_SIZE) {
        struct ticket_key *k;

        if (tk->n == MAX_KEYS) {
            rc = mtls_err_set(err, MTLS_E_INVALID, "more than %d ticket keys (in '%s')", MAX_KEYS,
                              path);
            goto out;
        }
        k = &tk->key[tk->n++];
        memcpy(k->name, data + off, 16);
        memcpy(k->hmac, data + off + 16, 32);
        memcpy(k->aes, data + off + 48, 32);
    }
    rc = 0;
out:
    if (data != NULL)
        mtls_free_secret(data, len);
    return rc;
}

/* SHA-256 over every CA certificate and CRL of ctx's store, the verify mode and depth. */
static int trust_digest(SSL_CTX *ctx, unsigned char out[32])
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
    EVP_MD *sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char one[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int policy[2] = {SSL_CTX_get_verify_mode(ctx), SSL_CTX_get_verify_depth(ctx)};
    int ok = 0;

    if (sha256 == NULL || md == NULL || EVP_DigestInit_ex(md, sha256, NULL) != 1 ||
        EVP_DigestUpdate(md, policy, sizeof(policy)) != 1)
        goto out;
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509_OBJECT *obj = sk_X509_OBJECT_value(objs, i);
        X509 *cert = X509_OBJECT_get0_X509(obj);
        X509_CRL *crl = X509_OBJECT_get0_X509_CRL(obj);

        if (cert != NULL && !X509_digest(cert, sha256, one, &len))
            goto out;
        if (crl != NULL && !X509_CRL_digest(crl, sha256, one, &len))
            goto out;
        if ((cert != NULL || crl != NULL) && EVP_DigestUpdate(md, one, len) != 1)
            goto out;
    }
    ok = EVP_DigestFinal_ex(md, out, &len) == 1 && len == 32;
out:
    EVP_MD_CTX_free(md);
    EVP_MD_free(sha256);
    return ok;
}

/* OpenSSL asks for the key to encrypt a new ticket (enc) or to decrypt one a client offers. */
static int key_cb(SSL *ssl, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                  EVP_CIPHER_CTX *cipher, EVP_MAC_CTX *mac, int enc)
{
    struct ticket_keys *tk = keys_of(SSL_get_SSL_CTX(ssl));
    const struct ticket_key *k = NULL;
    OSSL_PARAM params[3];

    if (tk == NULL || tk->n == 0)
        return -1;
    if (enc) {
        k = &tk->key[0];
        memcpy(name, k->name, sizeof(k->name));
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(tk->aes)) != 1 ||
            EVP_EncryptInit_ex(cipher, tk->aes, NULL, k->aes, iv) != 1)
            return -1;
    } else {
        for (size_t i = 0; i < tk->n && k == NULL; i++) {
            if (memcmp(name, tk->key[i].name, sizeof(tk->key[i].name)) == 0)
                k = &tk->key[i];
        }
        if (k == NULL)
            return 0; /* a key this server does not hold: a full handshake */
        if (EVP_DecryptInit_ex(cipher, tk->aes, NULL, k->aes, iv) != 1)
            return -1;
    }
    params[0] =
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (EVP_MAC_CTX_set_params(mac, params) != 1)
        return -1;
    return enc || k == &tk->key[0] ? 1 : 2; /* 2: renew it under the first key */
}

/* A ticket is about to be made: cap the session's life, name the trust it was verified under. */
static int ticket_gen(SSL *ssl, void *arg)
{
    struct ticket_keys *tk = arg;
    SSL_SESSION *session = SSL_get_session(ssl);

    if (session == NULL)
        return 0;
    mtls__srv_session_cap(ssl, session);
    return SSL_SESSION_set1_ticket_appdata(session, tk->trust, sizeof(tk->trust));
}

/* A ticket was decrypted (or not): used only when verified under the trust in force here. */
static SSL_TICKET_RETURN ticket_dec(SSL *ssl, SSL_SESSION *session, const unsigned char *name,
                                    size_t name_len, SSL_TICKET_STATUS status, void *arg)
{
    struct ticket_keys *tk = arg;
    void *data = NULL;
    size_t len = 0;

    (void)name;
    (void)name_len;
    if (status == SSL_TICKET_FATAL_ERR_MALLOC || status == SSL_TICKET_FATAL_ERR_OTHER)
        return SSL_TICKET_RETURN_ABORT;
    if (status != SSL_TICKET_SUCCESS && status != SSL_TICKET_SUCCESS_RENEW)
        return SSL_TICKET_RETURN_IGNORE_RENEW; /* none, empty, an unknown key or a bad ticket */
    if (SSL_SESSION_get0_ticket_appdata(session, &data, &len) != 1 || len != sizeof(tk->trust) ||
        memcmp(data, tk->trust, len) != 0)
        return SSL_TICKET_RETURN_IGNORE_RENEW; /* verified under other CAs or CRLs */
    /*
     * TLS 1.3 clients use each ticket once and expect a new one after every
     * resumption (OpenSSL's default); a TLS 1.2 ticket is renewed only when
     * it is under an older key.
     */
    if (status == SSL_TICKET_SUCCESS_RENEW || SSL_version(ssl) >= TLS1_3_VERSION)
        return SSL_TICKET_RETURN_USE_RENEW;
    return SSL_TICKET_RETURN_USE;
}

int mtls__srv_ticket_keys_attach(SSL_CTX *ctx, const char *const *files, size_t n_files,
                                 mtls_err *err)
{
    struct ticket_keys *tk = NULL;
    int rc;

    pthread_once(&keys_once, keys_index_init);
    if (keys_index < 0)
        return mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot set up session tickets");
    tk = calloc(1, sizeof(*tk));
    if (tk == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n_files; i++) {
        rc = read_keys(tk, files[i], err);
        if (rc != 0)
            goto out;
    }
    tk->aes = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    if (tk->aes == NULL || !trust_digest(ctx, tk->trust)) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot set up session tickets");
        goto out;
    }
    if (!SSL_CTX_set_ex_data(ctx, keys_index, tk)) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot set up session tickets");
        goto out;
    }
    /* Tickets instead of the session cache: the session travels in the ticket. */
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, key_cb) != 1 ||
        SSL_CTX_set_session_ticket_cb(ctx, ticket_gen, ticket_dec, tk) != 1) {
        SSL_CTX_set_ex_data(ctx, keys_index, NULL);
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot set up session tickets");
        goto out;
    }
    tk = NULL;
    rc = 0;
out:
    keys_free(tk);
    return rc;
}
