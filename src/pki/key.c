/* Private keys: generate, encode, load, describe. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include "mtls/pki.h"
#include "pki_internal.h"

int mtls_key_type_parse(const char *name, mtls_key_type *out, mtls_err *err)
{
    if (strcmp(name, "ec") == 0)
        *out = MTLS_KEY_EC;
    else if (strcmp(name, "rsa") == 0)
        *out = MTLS_KEY_RSA;
    else if (strcmp(name, "ed25519") == 0)
        *out = MTLS_KEY_ED25519;
    else
        return mtls_err_set(err, MTLS_E_INVALID, "unknown key type '%s': use ec, rsa or ed25519",
                            name);
    return 0;
}

const char *mtls_key_type_name(mtls_key_type type)
{
    switch (type) {
    case MTLS_KEY_EC:
        return "ec";
    case MTLS_KEY_RSA:
        return "rsa";
    case MTLS_KEY_ED25519:
        return "ed25519";
    }
    return "unknown";
}

int mtls_key_generate(mtls_key_type type, int bits, EVP_PKEY **out, mtls_err *err)
{
    EVP_PKEY *key = NULL;

    *out = NULL;
    switch (type) {
    case MTLS_KEY_EC: {
        const char *curve = bits == 0 || bits == 256 ? "P-256"
                            : bits == 384            ? "P-384"
                            : bits == 521            ? "P-521"
                                                     : NULL;

        if (curve == NULL)
            return mtls_err_set(err, MTLS_E_INVALID, "EC keys have 256, 384 or 521 bits, not %d",
                                bits);
        key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
        break;
    }
    case MTLS_KEY_RSA:
        if (bits == 0)
            bits = MTLS_RSA_BITS_DEFAULT;
        if (bits < 2048 || bits > 16384)
            return mtls_err_set(err, MTLS_E_INVALID, "RSA keys need 2048 to 16384 bits, not %d",
                                bits);
        key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
        break;
    case MTLS_KEY_ED25519:
        if (bits != 0 && bits != 256)
            return mtls_err_set(err, MTLS_E_INVALID, "Ed25519 keys have no --bits choice");
        key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        break;
    }
    if (key == NULL)
        return mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot generate a %s key",
                            mtls_key_type_name(type));
    *out = key;
    return 0;
}

/* Copies a memory BIO's content into a new NUL-terminated buffer. */
int mtls__bio_to_buf(BIO *bio, char **out, size_t *len, mtls_err *err)
{
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *copy;

    if (n < 0)
        n = 0;
    copy = malloc((size_t)n + 1);
    if (copy == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    memcpy(copy, data, (size_t)n);
    copy[n] = '\0';
    *out = copy;
    *len = (size_t)n;
    return 0;
}

int mtls_key_to_pem(EVP_PKEY *key, const char *password, char **pem, size_t *len, mtls_err *err)
{
    BIO *bio = BIO_new(BIO_s_secmem());
    const EVP_CIPHER *cipher = password != NULL ? EVP_aes_256_cbc() : NULL;
    int rc;

    *pem = NULL;
    *len = 0;
    if (bio == NULL)
        return mtls_err_ssl(err, MTLS_E_NOMEM, "cannot encode the key");
    if (PEM_write_bio_PKCS8PrivateKey(bio, key, cipher, NULL, 0, NULL, (void *)password) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot encode the key");
        goto out;
    }
    rc = mtls__bio_to_buf(bio, pem, len, err);
out:
    BIO_free(bio);
    return rc;
}

/* Hands OpenSSL the password, or fails the decode when there is none. */
static int password_cb(char *buf, int size, int rwflag, void *u)
{
    const char *password = u;
    size_t n;

    (void)rwflag;
    if (password == NULL)
        return -1;
    n = strlen(password);
    if (n > (size_t)size)
        n = (size_t)size;
    memcpy(buf, password, n);
    return (int)n;
}

int mtls_key_load(const char *path, const char *password, EVP_PKEY **out, mtls_err *err)
{
    unsigned char *data = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    EVP_PKEY *key = NULL;
    char label[64];
    int rc, encrypted;

    *out = NULL;
    rc = mtls_file_read(path, MTLS_PEM_MAX, &data, &len, err);
    if (rc != 0)
        return rc;
    if (strstr((char *)data, "PRIVATE KEY-----") == NULL) {
        mtls_pem_label((char *)data, label, sizeof(label));
        if (label[0] == '\0')
            rc = mtls_err_set(err, MTLS_E_INVALID,
                              "'%s' is not a PEM private key (no '-----BEGIN PRIVATE KEY-----' "
                              "line)",
                              path);
        else
            rc = mtls_err_set(err, MTLS_E_INVALID,
                              "'%s' holds a %s, not a private key: pass the .key file", path,
                              mtls__label_noun(label));
        goto out;
    }
    encrypted = strstr((char *)data, "ENCRYPTED PRIVATE KEY-----") != NULL ||
                strstr((char *)data, "Proc-Type: 4,ENCRYPTED") != NULL;
    if (encrypted && password == NULL) {
        rc = mtls_err_set(err, MTLS_E_INVALID,
                          "'%s' is encrypted: pass its password with --password-file FILE", path);
        goto out;
    }
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot read '%s'", path);
        goto out;
    }
    key = PEM_read_bio_PrivateKey(bio, NULL, password_cb, (void *)(encrypted ? password : NULL));
    if (key == NULL) {
        if (encrypted) {
            ERR_clear_error();
            rc = mtls_err_set(err, MTLS_E_INVALID,
                              "cannot decrypt '%s': wrong password (or the file is damaged)", path);
        } else {
            rc = mtls_err_ssl(err, MTLS_E_INVALID, "'%s' holds a malformed private key", path);
        }
        goto out;
    }
    *out = key;
    rc = 0;
out:
    BIO_free(bio);
    mtls_free_secret(data, len);
    return rc;
}

int mtls_key_matches_cert(EVP_PKEY *key, X509 *cert)
{
    EVP_PKEY *pub = X509_get0_pubkey(cert);
    int ok = pub != NULL && key != NULL && EVP_PKEY_eq(pub, key) == 1;

    ERR_clear_error();
    return ok;
}

char *mtls_key_describe(EVP_PKEY *key, char *buf, size_t size)
{
    char curve[32] = "";
    size_t curve_len = 0;
    const char *nist;

    if (key == NULL) {
        snprintf(buf, size, "unknown");
    } else if (EVP_PKEY_is_a(key, "EC")) {
        if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof(curve),
                                           &curve_len) != 1)
            snprintf(curve, sizeof(curve), "%d-bit", EVP_PKEY_get_bits(key));
        nist = EC_curve_nid2nist(OBJ_sn2nid(curve));
        snprintf(buf, size, "EC %s", nist != NULL ? nist : curve);
    } else if (EVP_PKEY_is_a(key, "RSA")) {
        snprintf(buf, size, "RSA %d", EVP_PKEY_get_bits(key));
    } else if (EVP_PKEY_is_a(key, "ED25519")) {
        snprintf(buf, size, "Ed25519");
    } else {
        snprintf(buf, size, "%s", EVP_PKEY_get0_type_name(key));
    }
    return buf;
}

int mtls_key_check_tls(EVP_PKEY *key, const char *path, mtls_err *err)
{
    char desc[64], curve[32] = "";
    size_t curve_len = 0;

    mtls_key_describe(key, desc, sizeof(desc));
    if (EVP_PKEY_is_a(key, "RSA")) {
        if (EVP_PKEY_get_bits(key) >= 2048)
            return 0;
        return mtls_err_set(err, MTLS_E_INVALID,
                            "the key of '%s' is %s bits, which TLS clients refuse (2048 at least): "
                            "make a new key with 'mtls key create'",
                            path, desc);
    }
    if (EVP_PKEY_is_a(key, "EC")) {
        if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof(curve),
                                           &curve_len) == 1 &&
            (strcmp(curve, "prime256v1") == 0 || strcmp(curve, "secp384r1") == 0 ||
             strcmp(curve, "secp521r1") == 0))
            return 0;
        ERR_clear_error();
        return mtls_err_set(err, MTLS_E_INVALID,
                            "the key of '%s' is on the curve %s, which TLS does not use for "
                            "certificates (P-256, P-384 or P-521): make a new key with 'mtls key "
                            "create'",
                            path, curve[0] ? curve : "(unknown)");
    }
    if (EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448"))
        return 0;
    return mtls_err_set(err, MTLS_E_INVALID,
                        "the key of '%s' is %s, which TLS certificates do not use (EC, RSA or "
                        "Ed25519): make a new key with 'mtls key create'",
                        path, desc);
}

/* The digest to sign with: SHA-256, or none for Ed25519 (it hashes itself). */
const EVP_MD *mtls__sign_md(EVP_PKEY *key)
{
    if (EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448"))
        return NULL;
    return EVP_sha256();
}
