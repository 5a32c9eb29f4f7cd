/* Does a list of CA certificates link up from a certificate: each one the
 * issuer of the one before it (names, key identifiers, key usage and the
 * signature). */
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "mtls/certinfo.h"
#include "mtls/pki.h"

int mtls_cert_issued_by(X509 *cert, X509 *issuer)
{
    int code = X509_check_issued(issuer, cert);
    EVP_PKEY *key = X509_get0_pubkey(issuer);

    if (code == X509_V_OK && (key == NULL || X509_verify(cert, key) != 1))
        code = X509_V_ERR_CERT_SIGNATURE_FAILURE;
    /* X509_verify() leaves errors on the queue for a bad signature. */
    ERR_clear_error();
    return code;
}

/* Why issuer did not issue cert, after its name: ": its issuer is 'CN=x'". */
static void why_not(X509 *cert, int code, char *buf, size_t size)
{
    char name[MTLS_NAME_MAX];

    switch (code) {
    case X509_V_ERR_SUBJECT_ISSUER_MISMATCH:
        mtls_name_oneline(X509_get_issuer_name(cert), name, sizeof(name));
        snprintf(buf, size, "its issuer is '%s'", name);
        break;
    case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
        snprintf(buf, size, "it may not sign certificates (no keyCertSign)");
        break;
    default:
        /* A key identifier or the signature differs: a namesake. */
        snprintf(buf, size, "same name, another key (the signature does not verify with it)");
        break;
    }
}

int mtls_chain_check(X509 *cert, STACK_OF(X509) * chain, mtls_err *err)
{
    char child[MTLS_NAME_MAX], parent[MTLS_NAME_MAX], why[MTLS_NAME_MAX + 32];

    for (int i = 0; i < sk_X509_num(chain); i++) {
        X509 *below = i == 0 ? cert : sk_X509_value(chain, i - 1);
        X509 *above = sk_X509_value(chain, i);
        int code = mtls_cert_issued_by(below, above);

        if (code == X509_V_OK)
            continue;
        mtls_name_oneline(X509_get_subject_name(below), child, sizeof(child));
        mtls_name_oneline(X509_get_subject_name(above), parent, sizeof(parent));
        why_not(below, code, why, sizeof(why));
        return mtls_err_set(err, MTLS_E_INVALID,
                            "the chain does not link: '%s' (certificate %d of the chain) did not "
                            "issue '%s': %s; give the CA certificates in order, from the issuer "
                            "of '%s' up",
                            parent, i + 1, child, why, child);
    }
    return 0;
}
