/* Certificate signing requests: make one, check its signature, read its SANs. */
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtls/pki.h"
#include "pki_internal.h"

int mtls_csr_create(EVP_PKEY *key, const char *cn, const GENERAL_NAMES *sans, X509_REQ **out,
                    mtls_err *err)
{
    X509_REQ *req = NULL;
    X509_NAME *name = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    X509_EXTENSION *ext = NULL;
    int rc;

    *out = NULL;
    rc = mtls_name_from_cn(cn, &name, err);
    if (rc != 0)
        return rc;
    req = X509_REQ_new();
    if (req == NULL || X509_REQ_set_version(req, 0) != 1 ||
        X509_REQ_set_subject_name(req, name) != 1 || X509_REQ_set_pubkey(req, key) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot build the certificate request");
        goto out;
    }
    if (sans != NULL && sk_GENERAL_NAME_num(sans) > 0) {
        exts = sk_X509_EXTENSION_new_null();
        ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, (void *)sans);
        if (exts == NULL || ext == NULL || sk_X509_EXTENSION_push(exts, ext) <= 0) {
            rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot add the SANs to the request");
            goto out;
        }
        ext = NULL;
        if (X509_REQ_add_extensions(req, exts) != 1) {
            rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot add the SANs to the request");
            goto out;
        }
    }
    if (X509_REQ_sign(req, key, mtls__sign_md(key)) <= 0) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot sign the certificate request");
        goto out;
    }
    *out = req;
    req = NULL;
    rc = 0;
out:
    X509_EXTENSION_free(ext);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_NAME_free(name);
    X509_REQ_free(req);
    return rc;
}

int mtls_csr_check_signature(X509_REQ *req, const char *path, mtls_err *err)
{
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    int ok = pub != NULL && X509_REQ_verify(req, pub) == 1;

    ERR_clear_error();
    if (!ok)
        return mtls_err_set(err, MTLS_E_VERIFY,
                            "CSR '%s' has a bad signature: it was altered or not made with its "
                            "own key; make it again with 'mtls csr create'",
                            path);
    return 0;
}

GENERAL_NAMES *mtls_csr_sans(X509_REQ *req)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *sans = NULL;

    if (exts != NULL) {
        sans = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }
    ERR_clear_error();
    return sans;
}
