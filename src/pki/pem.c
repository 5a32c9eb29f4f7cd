/* Reading and writing certificates and CSRs, with errors that say what a
 * file holds when it is not what was expected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "mtls/pki.h"
#include "pki_internal.h"

char *mtls_pem_label(const char *data, char *buf, size_t size)
{
    const char *begin = strstr(data, "-----BEGIN ");
    const char *end;

    buf[0] = '\0';
    if (begin == NULL)
        return buf;
    begin += strlen("-----BEGIN ");
    end = strstr(begin, "-----");
    if (end == NULL || memchr(begin, '\n', (size_t)(end - begin)) != NULL)
        return buf;
    snprintf(buf, size, "%.*s", (int)(end - begin), begin);
    return buf;
}

const char *mtls__label_noun(const char *label)
{
    if (strcmp(label, "CERTIFICATE") == 0 || strcmp(label, "TRUSTED CERTIFICATE") == 0)
        return "certificate";
    if (strcmp(label, "CERTIFICATE REQUEST") == 0 || strcmp(label, "NEW CERTIFICATE REQUEST") == 0)
        return "certificate request (CSR)";
    if (strstr(label, "PRIVATE KEY") != NULL)
        return "private key";
    if (strstr(label, "PUBLIC KEY") != NULL)
        return "public key";
    if (strcmp(label, "X509 CRL") == 0)
        return "certificate revocation list (CRL)";
    if (strcmp(label, "PKCS7") == 0)
        return "PKCS#7 bundle";
    return "PEM block of another kind";
}

/* Reads path and checks that it holds a PEM block labelled want (or, when
 * it holds no PEM at all, accepts it as DER when der_ok). *is_der says
 * which. what names the expected thing in messages. */
static int read_pem_file(const char *path, const char *want, const char *want2, const char *what,
                         unsigned char **data, size_t *len, int *is_der, mtls_err *err)
{
    char marker[80], marker2[80], label[64];
    int rc;

    *is_der = 0;
    rc = mtls_file_read(path, MTLS_PEM_MAX, data, len, err);
    if (rc != 0)
        return rc;
    snprintf(marker, sizeof(marker), "-----BEGIN %s-----", want);
    snprintf(marker2, sizeof(marker2), "-----BEGIN %s-----", want2 ? want2 : want);
    if (strstr((char *)*data, marker) != NULL || strstr((char *)*data, marker2) != NULL)
        return 0;
    mtls_pem_label((char *)*data, label, sizeof(label));
    if (label[0] == '\0' && *len > 0 && (*data)[0] == 0x30) {
        *is_der = 1;
        return 0;
    }
    if (*len == 0)
        rc = mtls_err_set(err, MTLS_E_INVALID, "'%s' is empty: expected a %s (PEM or DER)", path,
                          what);
    else if (label[0] == '\0')
        rc = mtls_err_set(err, MTLS_E_INVALID, "'%s' is not a PEM %s (no '%s' line)", path, what,
                          marker);
    else
        rc = mtls_err_set(err, MTLS_E_INVALID, "'%s' holds a %s, not a %s", path,
                          mtls__label_noun(label), what);
    free(*data);
    *data = NULL;
    return rc;
}

int mtls_cert_load_all(const char *path, STACK_OF(X509) * *out, mtls_err *err)
{
    unsigned char *data = NULL;
    size_t len = 0;
    int is_der, rc;
    BIO *bio = NULL;
    STACK_OF(X509) *certs = NULL;
    X509 *cert = NULL;

    *out = NULL;
    rc = read_pem_file(path, "CERTIFICATE", NULL, "certificate", &data, &len, &is_der, err);
    if (rc != 0)
        return rc;
    certs = sk_X509_new_null();
    bio = BIO_new_mem_buf(data, (int)len);
    if (certs == NULL || bio == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot read '%s'", path);
        goto out;
    }
    if (is_der) {
        cert = d2i_X509_bio(bio, NULL);
        if (cert == NULL || sk_X509_push(certs, cert) <= 0) {
            rc = mtls_err_ssl(err, MTLS_E_INVALID, "'%s' is neither a PEM nor a DER certificate",
                              path);
            goto out;
        }
        cert = NULL;
    } else {
        /* Every CERTIFICATE block in order; other blocks (a key) are skipped. */
        while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
            if (sk_X509_push(certs, cert) <= 0) {
                rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
                goto out;
            }
            cert = NULL;
        }
        if (ERR_GET_REASON(ERR_peek_last_error()) == PEM_R_NO_START_LINE)
            ERR_clear_error();
        if (sk_X509_num(certs) == 0 || ERR_peek_error() != 0) {
            rc = mtls_err_ssl(err, MTLS_E_INVALID, "'%s' holds a malformed certificate", path);
            goto out;
        }
    }
    *out = certs;
    certs = NULL;
    rc = 0;
out:
    X509_free(cert);
    sk_X509_pop_free(certs, X509_free);
    BIO_free(bio);
    free(data);
    return rc;
}

int mtls_cert_load(const char *path, X509 **out, mtls_err *err)
{
    STACK_OF(X509) *certs = NULL;
    int rc;

    *out = NULL;
    rc = mtls_cert_load_all(path, &certs, err);
    if (rc != 0)
        return rc;
    *out = sk_X509_shift(certs);
    sk_X509_pop_free(certs, X509_free);
    return 0;
}

/* Turns the bytes of a file into one object, PEM or DER; NULL when malformed. */
typedef void *(*decode_fn)(BIO *bio, int is_der);

static void *decode_req(BIO *bio, int is_der)
{
    return is_der ? d2i_X509_REQ_bio(bio, NULL) : PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
}

static void *decode_crl(BIO *bio, int is_der)
{
    return is_der ? d2i_X509_CRL_bio(bio, NULL) : PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
}

/* Reads the one object of path (read_pem_file() checks the label); short
 * names it in "holds a malformed SHORT". */
static int load_one(const char *path, const char *want, const char *want2, const char *what,
                    const char *short_name, decode_fn decode, void **out, mtls_err *err)
{
    unsigned char *data = NULL;
    size_t len = 0;
    int is_der, rc;
    BIO *bio = NULL;

    *out = NULL;
    rc = read_pem_file(path, want, want2, what, &data, &len, &is_der, err);
    if (rc != 0)
        return rc;
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot read '%s'", path);
        goto out;
    }
    *out = decode(bio, is_der);
    if (*out == NULL)
        rc = mtls_err_ssl(err, MTLS_E_INVALID, "'%s' holds a malformed %s", path, short_name);
out:
    BIO_free(bio);
    free(data);
    return rc;
}

int mtls_csr_load(const char *path, X509_REQ **out, mtls_err *err)
{
    void *req = NULL;
    int rc = load_one(path, "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST",
                      "certificate request (CSR)", "certificate request", decode_req, &req, err);

    *out = req;
    return rc;
}

/* Encodes obj as PEM with write into a new buffer (*pem, free()). */
typedef int (*encode_fn)(BIO *bio, const void *obj);

static int encode_cert(BIO *bio, const void *obj)
{
    return PEM_write_bio_X509(bio, obj);
}

static int encode_req(BIO *bio, const void *obj)
{
    return PEM_write_bio_X509_REQ(bio, obj);
}

static int encode_crl(BIO *bio, const void *obj)
{
    return PEM_write_bio_X509_CRL(bio, obj);
}

static int to_pem(encode_fn encode, const void *obj, const char *what, char **pem, size_t *len,
                  mtls_err *err)
{
    BIO *bio = BIO_new(BIO_s_mem());
    int rc;

    *pem = NULL;
    *len = 0;
    if (bio == NULL || encode(bio, obj) != 1)
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot encode the %s", what);
    else
        rc = mtls__bio_to_buf(bio, pem, len, err);
    BIO_free(bio);
    return rc;
}

int mtls_cert_to_pem(X509 *cert, char **pem, size_t *len, mtls_err *err)
{
    return to_pem(encode_cert, cert, "certificate", pem, len, err);
}

int mtls_csr_to_pem(X509_REQ *req, char **pem, size_t *len, mtls_err *err)
{
    return to_pem(encode_req, req, "certificate request", pem, len, err);
}

int mtls_chain_to_pem(STACK_OF(X509) * certs, char **pem, size_t *len, mtls_err *err)
{
    BIO *bio = BIO_new(BIO_s_mem());
    int rc = 0;

    *pem = NULL;
    *len = 0;
    if (bio == NULL)
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot encode the chain");
    for (int i = 0; rc == 0 && i < sk_X509_num(certs); i++) {
        if (PEM_write_bio_X509(bio, sk_X509_value(certs, i)) != 1)
            rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot encode the chain");
    }
    if (rc == 0)
        rc = mtls__bio_to_buf(bio, pem, len, err);
    BIO_free(bio);
    return rc;
}

int mtls_crl_load(const char *path, X509_CRL **out, mtls_err *err)
{
    void *crl = NULL;
    int rc = load_one(path, "X509 CRL", NULL, "certificate revocation list (CRL)", "CRL",
                      decode_crl, &crl, err);

    *out = crl;
    return rc;
}

int mtls_crl_to_pem(X509_CRL *crl, char **pem, size_t *len, mtls_err *err)
{
    return to_pem(encode_crl, crl, "CRL", pem, len, err);
}
