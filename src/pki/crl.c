/* CRLs: made from the CA's inventory, numbered from PREFIX.crlnumber. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtls/pki.h"
#include "pki_internal.h"

/* Reads PREFIX.crlnumber (missing: 1) and writes it back increased. */
static int take_crl_number(mtls_ca *ca, BIGNUM **number, mtls_err *err)
{
    char *path = mtls__ca_path(ca, ".crlnumber"), *hex = NULL, text[100];
    unsigned char *data = NULL;
    size_t len = 0;
    BIGNUM *next = NULL;
    int rc;

    *number = NULL;
    if (path == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    rc = mtls_file_read(path, 4096, &data, &len, err);
    if (rc == MTLS_E_NOTFOUND) {
        rc = 0;
        *number = BN_new();
        if (*number == NULL || BN_set_word(*number, 1) != 1)
            rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    } else if (rc == 0) {
        data[strcspn((char *)data, "\r\n")] = '\0';
        if (data[0] == '\0' || BN_hex2bn(number, (char *)data) != (int)strlen((char *)data) ||
            BN_is_negative(*number))
            rc = mtls_err_set(err, MTLS_E_INVALID,
                              "'%s' does not hold a CRL number in hex: fix or remove it", path);
    }
    if (rc != 0)
        goto out;
    next = BN_dup(*number);
    if (next == NULL || BN_add_word(next, 1) != 1 || (hex = BN_bn2hex(next)) == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    snprintf(text, sizeof(text), "%s\n", hex);
    rc = mtls__ca_write_state(ca, ".crlnumber", text, strlen(text), err);
out:
    if (rc != 0) {
        BN_free(*number);
        *number = NULL;
    }
    OPENSSL_free(hex);
    BN_free(next);
    free(data);
    free(path);
    return rc;
}

/* One revoked entry from an index record ("R" with "date[,reason]"). */
static int add_revoked(X509_CRL *crl, const mtls_ca_record *rec, mtls_err *err)
{
    X509_REVOKED *rev = X509_REVOKED_new();
    ASN1_TIME *when = ASN1_TIME_new();
    ASN1_ENUMERATED *code = NULL;
    BIGNUM *bn = NULL;
    ASN1_INTEGER *serial = NULL;
    char date[20];
    const char *comma = strchr(rec->revoked, ',');
    int rc, reason = MTLS_REASON_NONE;

    snprintf(date, sizeof(date), "%.*s", (int)strcspn(rec->revoked, ","), rec->revoked);
    if (comma != NULL && mtls_crl_reason_parse(comma + 1, &reason, NULL) != 0)
        reason = 0;
    if (rev == NULL || when == NULL || BN_hex2bn(&bn, rec->serial) == 0 ||
        (serial = BN_to_ASN1_INTEGER(bn, NULL)) == NULL) {
        rc =
            mtls_err_set(err, MTLS_E_INVALID, "serial '%s' in the index is malformed", rec->serial);
        goto out;
    }
    if (ASN1_TIME_set_string(when, date) != 1) {
        rc = mtls_err_set(err, MTLS_E_INVALID,
                          "the revocation date of serial %s in the index is malformed ('%s')",
                          rec->serial, rec->revoked);
        goto out;
    }
    if (X509_REVOKED_set_serialNumber(rev, serial) != 1 ||
        X509_REVOKED_set_revocationDate(rev, when) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot add serial %s to the CRL", rec->serial);
        goto out;
    }
    /* RFC 5280: leave the reason out rather than say "unspecified". */
    if (reason > 0) {
        code = ASN1_ENUMERATED_new();
        if (code == NULL || ASN1_ENUMERATED_set(code, reason) != 1 ||
            X509_REVOKED_add1_ext_i2d(rev, NID_crl_reason, code, 0, 0) != 1) {
            rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot add a reason to the CRL");
            goto out;
        }
    }
    if (X509_CRL_add0_revoked(crl, rev) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot add serial %s to the CRL", rec->serial);
        goto out;
    }
    rev = NULL;
    rc = 0;
out:
    ASN1_ENUMERATED_free(code);
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    ASN1_TIME_free(when);
    X509_REVOKED_free(rev);
    return rc;
}

int mtls_ca_crl(mtls_ca *ca, int days, X509_CRL **out, long *number, mtls_err *err)
{
    X509 *cacert = mtls_ca_cert(ca);
    EVP_PKEY *key = mtls_ca_key(ca);
    X509_CRL *crl = NULL;
    BIGNUM *num = NULL;
    ASN1_INTEGER *num_asn1 = NULL;
    ASN1_TIME *last = NULL, *next = NULL;
    X509_EXTENSION *aki = NULL;
    const mtls_ca_record *recs;
    X509V3_CTX v3;
    size_t n;
    int lock_fd, rc;

    *out = NULL;
    if (mtls__days_check(days, err) != 0)
        return MTLS_E_INVALID;
    lock_fd = mtls__ca_lock(ca, err);
    if (lock_fd < 0)
        return err != NULL ? err->code : MTLS_E_IO;
    if ((rc = mtls__ca_index_read(ca, err)) != 0 || (rc = take_crl_number(ca, &num, err)) != 0)
        goto out;
    crl = X509_CRL_new();
    last = X509_gmtime_adj(NULL, 0);
    next = X509_time_adj_ex(NULL, days, 0, NULL);
    num_asn1 = BN_to_ASN1_INTEGER(num, NULL);
    if (crl == NULL || last == NULL || next == NULL || num_asn1 == NULL ||
        X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
        X509_CRL_set_issuer_name(crl, X509_get_subject_name(cacert)) != 1 ||
        X509_CRL_set1_lastUpdate(crl, last) != 1 || X509_CRL_set1_nextUpdate(crl, next) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot build the CRL");
        goto out;
    }
    recs = mtls_ca_records(ca, &n);
    for (size_t i = 0; i < n; i++) {
        if (recs[i].status == 'R' && (rc = add_revoked(crl, &recs[i], err)) != 0)
            goto out;
    }
    X509V3_set_ctx(&v3, cacert, NULL, NULL, crl, 0);
    aki = X509V3_EXT_nconf_nid(NULL, &v3, NID_authority_key_identifier, "keyid:always");
    if (aki == NULL || X509_CRL_add_ext(crl, aki, -1) != 1 ||
        X509_CRL_add1_ext_i2d(crl, NID_crl_number, num_asn1, 0, 0) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot add the CRL's extensions");
        goto out;
    }
    if (X509_CRL_sort(crl) != 1 || X509_CRL_sign(crl, key, mtls__sign_md(key)) <= 0) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot sign the CRL");
        goto out;
    }
    *number = (long)BN_get_word(num);
    *out = crl;
    crl = NULL;
    rc = 0;
out:
    close(lock_fd);
    X509_EXTENSION_free(aki);
    ASN1_INTEGER_free(num_asn1);
    ASN1_TIME_free(last);
    ASN1_TIME_free(next);
    BN_free(num);
    X509_CRL_free(crl);
    return rc;
}

const char *mtls_crl_entry_reason(const X509_REVOKED *rev)
{
    ASN1_ENUMERATED *code = X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, NULL, NULL);
    const char *name = code != NULL ? mtls_crl_reason_name((int)ASN1_ENUMERATED_get(code)) : NULL;

    ASN1_ENUMERATED_free(code);
    ERR_clear_error();
    return name;
}
