/* PKCS#12 bundles for browsers, macOS, Windows and Java. */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>

#include "mtls/pki.h"

int mtls_p12_create(X509 *cert, EVP_PKEY *key, STACK_OF(X509) * chain, const char *password,
                    int legacy, unsigned char **der, size_t *len, mtls_err *err)
{
    /* Modern: PBES2 (PBKDF2, AES-256-CBC) and an HMAC-SHA-256 MAC, OpenSSL 3's
     * default. Legacy: 3DES and SHA-1, which old macOS and Windows and Java 8
     * need (RC2, the other legacy choice, needs OpenSSL's legacy provider). */
    int nid = legacy ? NID_pbe_WithSHA1And3_Key_TripleDES_CBC : 0;
    char name[256] = "";
    int idx = X509_NAME_get_index_by_NID(X509_get_subject_name(cert), NID_commonName, -1);
    PKCS12 *p12 = NULL;
    unsigned char *buf = NULL;
    int n, rc;

    *der = NULL;
    *len = 0;
    if (password == NULL || password[0] == '\0')
        return mtls_err_set(err, MTLS_E_INVALID, "a PKCS#12 file needs a password");
    if (!mtls_key_matches_cert(key, cert))
        return mtls_err_set(err, MTLS_E_INVALID, "the key does not match the certificate");
    if ((rc = mtls_chain_check(cert, chain, err)) != 0)
        return rc;
    if (idx >= 0) {
        unsigned char *utf8 = NULL;
        int l = ASN1_STRING_to_UTF8(
            &utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(X509_get_subject_name(cert), idx)));

        if (l > 0 && (size_t)l < sizeof(name))
            memcpy(name, utf8, (size_t)l);
        OPENSSL_free(utf8);
    }
    p12 = PKCS12_create_ex(password, name[0] ? name : NULL, key, cert, chain, nid, nid,
                           PKCS12_DEFAULT_ITER, -1, 0, NULL, NULL);
    if (p12 == NULL || PKCS12_set_mac(p12, password, -1, NULL, 0, PKCS12_DEFAULT_ITER,
                                      legacy ? EVP_sha1() : EVP_sha256()) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot make the PKCS#12 file");
        goto out;
    }
    n = i2d_PKCS12(p12, &buf);
    if (n <= 0) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot encode the PKCS#12 file");
        goto out;
    }
    *der = buf;
    *len = (size_t)n;
    rc = 0;
out:
    PKCS12_free(p12);
    return rc;
}
