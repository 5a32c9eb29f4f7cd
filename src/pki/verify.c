/* Verification: chain, signatures, dates, purpose, host name, and one plain
 * sentence that says which check failed. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "mtls/certinfo.h"
#include "mtls/pki.h"

/* "the certificate 'CN=x'" or "the CA certificate 'CN=x'". */
static void who(X509 *cert, int depth, char *buf, size_t size)
{
    char name[MTLS_NAME_MAX];

    mtls_name_oneline(X509_get_subject_name(cert), name, sizeof(name));
    snprintf(buf, size, "%s '%s'", depth > 0 ? "CA certificate" : "certificate", name);
}

static void eku_list(X509 *cert, char *buf, size_t size)
{
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(cert, NID_ext_key_usage, NULL, NULL);
    size_t used = 0;

    buf[0] = '\0';
    for (int i = 0; eku != NULL && i < sk_ASN1_OBJECT_num(eku) && used < size; i++) {
        int nid = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i));

        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "",
                                 nid != NID_undef ? OBJ_nid2ln(nid) : "an unknown usage");
    }
    EXTENDED_KEY_USAGE_free(eku);
}

static void sans_list(X509 *cert, char *buf, size_t size)
{
    mtls_cert_info info;

    buf[0] = '\0';
    if (mtls_cert_info_init(&info, cert, NULL) != 0)
        return;
    mtls_cert_info_sans_line(&info, buf, size);
    mtls_cert_info_release(&info);
}

/* 1 when host matches the subject's CN only: what curl (and OpenSSL's
 * default) would still accept, browsers and mtls_verify() do not. An address
 * is compared as text, as curl does. */
static int only_cn_matches(X509 *cert, const char *host)
{
    ASN1_OCTET_STRING *ip = host != NULL ? a2i_IPADDRESS(host) : NULL;
    char cn[256];
    int yes;

    if (host == NULL)
        return 0;
    if (ip != NULL)
        yes = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
                                        sizeof(cn)) > 0 &&
              strcasecmp(cn, host) == 0;
    else
        yes = X509_check_host(cert, host, 0,
                              X509_CHECK_FLAG_ALWAYS_CHECK_SUBJECT |
                                  X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                              NULL) == 1;
    ASN1_OCTET_STRING_free(ip);
    ERR_clear_error();
    return yes;
}

/* What to add to "host name 'x' is not in the SANs" when the CN is x. */
static const char *cn_note(X509 *cert, const char *host, int has_sans)
{
    if (!only_cn_matches(cert, host))
        return "";
    /* curl still falls back to the CN when there are no SANs at all. */
    if (!has_sans)
        return "; only its CN matches, which browsers ignore (curl still accepts it): reissue it "
               "with the name as a SAN";
    return "; only its CN matches, and clients read the CN only when there are no SANs: add the "
           "name as a SAN";
}

/* 1 when a trusted certificate has this subject name (but another key). */
static int trusted_namesake(X509_STORE_CTX *ctx, const X509_NAME *name)
{
    STACK_OF(X509) *same = X509_STORE_CTX_get1_certs(ctx, (X509_NAME *)name);
    int found = same != NULL && sk_X509_num(same) > 0;

    sk_X509_pop_free(same, X509_free);
    ERR_clear_error();
    return found;
}

/* "certificate 'CN=bob' (serial 5D66...) was revoked by its CA 'CN=My CA' on
 * DATE (keyCompromise)", from the CRL the context is checking against. */
static void revoked_sentence(X509_STORE_CTX *ctx, X509 *cert, const char *subj, const char *issuer,
                             char *buf, size_t size)
{
    X509_CRL *crl = X509_STORE_CTX_get0_current_crl(ctx);
    X509_REVOKED *rev = NULL;
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    char when[48];

    if (crl != NULL && X509_CRL_get0_by_cert(crl, &rev, cert) == 1 && rev != NULL)
        snprintf(buf, size, "%s (serial %s) was revoked by its CA '%s' on %s (%s)", subj,
                 hex ? hex : "?", issuer,
                 mtls_time_human(mtls_asn1_time(X509_REVOKED_get0_revocationDate(rev)), when,
                                 sizeof(when)),
                 mtls_crl_entry_reason(rev) ? mtls_crl_entry_reason(rev) : "no reason given");
    else
        snprintf(buf, size, "%s (serial %s) has been revoked by its CA '%s'", subj, hex ? hex : "?",
                 issuer);
    OPENSSL_free(hex);
    BN_free(bn);
}

/* A CRL past its nextUpdate, or before its thisUpdate. */
static void crl_dates_sentence(X509_CRL *crl, int code, char *buf, size_t size)
{
    char crl_issuer[MTLS_NAME_MAX] = "?", when[48];

    if (crl != NULL)
        mtls_name_oneline(X509_CRL_get_issuer(crl), crl_issuer, sizeof(crl_issuer));
    if (code == X509_V_ERR_CRL_HAS_EXPIRED)
        snprintf(buf, size,
                 "the CRL of '%s' expired on %s (its next update): publish a new one with "
                 "'mtls crl create'",
                 crl_issuer,
                 mtls_time_human(crl ? mtls_asn1_time(X509_CRL_get0_nextUpdate(crl)) : 0, when,
                                 sizeof(when)));
    else
        snprintf(buf, size, "the CRL of '%s' is not valid yet: not until %s", crl_issuer,
                 mtls_time_human(crl ? mtls_asn1_time(X509_CRL_get0_lastUpdate(crl)) : 0, when,
                                 sizeof(when)));
}

char *mtls_verify_reason(X509_STORE_CTX *ctx, int purpose, const char *host, char *buf, size_t size)
{
    int code = X509_STORE_CTX_get_error(ctx);
    int depth = X509_STORE_CTX_get_error_depth(ctx);
    X509 *cert = X509_STORE_CTX_get_current_cert(ctx);
    char subj[MTLS_NAME_MAX + 32], issuer[MTLS_NAME_MAX], when[48], list[512];

    if (cert == NULL) {
        snprintf(buf, size, "verification failed: %s", X509_verify_cert_error_string(code));
        return buf;
    }
    who(cert, depth, subj, sizeof(subj));
    mtls_name_oneline(X509_get_issuer_name(cert), issuer, sizeof(issuer));
    switch (code) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        if (trusted_namesake(ctx, X509_get_issuer_name(cert)))
            snprintf(buf, size,
                     "issuer not trusted: %s was issued by a CA named '%s', but not by the one "
                     "trusted here (same name, another key)",
                     subj, issuer);
        else
            snprintf(buf, size,
                     "issuer not trusted: %s was issued by '%s', which is not a trusted CA", subj,
                     issuer);
        break;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        snprintf(buf, size, "issuer not trusted: %s is self-signed and not a trusted CA", subj);
        break;
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        snprintf(buf, size, "issuer not trusted: the chain ends at %s, which is not a trusted CA",
                 subj);
        break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        snprintf(buf, size, "%s expired on %s", subj,
                 mtls_time_human(mtls_asn1_time(X509_get0_notAfter(cert)), when, sizeof(when)));
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        snprintf(buf, size, "%s is not valid yet: not until %s", subj,
                 mtls_time_human(mtls_asn1_time(X509_get0_notBefore(cert)), when, sizeof(when)));
        break;
    case X509_V_ERR_INVALID_PURPOSE: {
        const char *want = purpose == MTLS_PROFILE_SERVER   ? "TLS server authentication"
                           : purpose == MTLS_PROFILE_CLIENT ? "TLS client authentication"
                                                            : "this purpose";

        eku_list(cert, list, sizeof(list));
        if (list[0] != '\0')
            snprintf(buf, size, "wrong purpose: %s is not for %s (its extended key usage: %s)",
                     subj, want, list);
        else
            snprintf(buf, size, "wrong purpose: %s is not for %s (its key usage forbids it)", subj,
                     want);
        break;
    }
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        sans_list(cert, list, sizeof(list));
        snprintf(buf, size, "host name '%s' is not in the SANs of %s (%s)%s", host ? host : "?",
                 subj, list[0] ? list : "it has none", cn_note(cert, host, list[0] != '\0'));
        break;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
        snprintf(buf, size,
                 "signature invalid: %s is not signed by the key of its issuer '%s' (altered, or "
                 "issued by another CA of the same name)",
                 subj, issuer);
        break;
    case X509_V_ERR_CERT_REVOKED:
        revoked_sentence(ctx, cert, subj, issuer, buf, size);
        break;
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
        crl_dates_sentence(X509_STORE_CTX_get0_current_crl(ctx), code, buf, size);
        break;
    case X509_V_ERR_UNABLE_TO_GET_CRL:
        snprintf(buf, size,
                 "no CRL of '%s' is loaded, so %s cannot be checked for revocation: pass that "
                 "CA's CRL too",
                 issuer, subj);
        break;
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
        snprintf(buf, size,
                 "the CRL of '%s' has a bad signature: it was altered or not made by "
                 "that CA",
                 issuer);
        break;
    case X509_V_ERR_INVALID_CA:
        snprintf(buf, size, "issuer not trusted: %s is not a CA (no basicConstraints CA:TRUE)",
                 subj);
        break;
    case X509_V_ERR_PATH_LENGTH_EXCEEDED:
        snprintf(buf, size,
                 "issuer not trusted: the chain is longer than the path length %s allows", subj);
        break;
    default:
        snprintf(buf, size, "%s did not verify: %s", subj, X509_verify_cert_error_string(code));
        break;
    }
    return buf;
}

static int looks_like_ip(const char *host)
{
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);
    int yes = ip != NULL;

    ASN1_OCTET_STRING_free(ip);
    ERR_clear_error();
    return yes;
}

/* What the verify callback needs to word the first failure while the
 * context still knows the CRL involved. */
struct verify_note {
    int purpose;
    const char *host;
    int have;
    char reason[MTLS_ERR_MSG_MAX];
};

static int note_first_failure(int ok, X509_STORE_CTX *ctx)
{
    struct verify_note *note = X509_STORE_CTX_get_app_data(ctx);

    if (!ok && note != NULL && !note->have) {
        mtls_verify_reason(ctx, note->purpose, note->host, note->reason, sizeof(note->reason));
        note->have = 1;
    }
    return ok;
}

int mtls_verify(X509 *leaf, STACK_OF(X509) * untrusted, STACK_OF(X509) * trusted,
                const mtls_verify_opts *opts, mtls_err *err)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_VERIFY_PARAM *param;
    struct verify_note note;
    int rc;

    memset(&note, 0, sizeof(note));

    if (store == NULL || ctx == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot set up verification");
        goto out;
    }
    for (int i = 0; i < sk_X509_num(trusted); i++) {
        if (X509_STORE_add_cert(store, sk_X509_value(trusted, i)) != 1) {
            /* The same CA twice in a bundle is harmless. */
            ERR_clear_error();
        }
    }
    if (X509_STORE_CTX_init(ctx, store, leaf, untrusted) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot set up verification");
        goto out;
    }
    param = X509_STORE_CTX_get0_param(ctx);
    if (opts != NULL && opts->purpose != 0 &&
        X509_STORE_CTX_set_purpose(ctx, opts->purpose == MTLS_PROFILE_SERVER
                                            ? X509_PURPOSE_SSL_SERVER
                                            : X509_PURPOSE_SSL_CLIENT) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot set the purpose to check");
        goto out;
    }
    if (opts != NULL && opts->host != NULL) {
        int ok = looks_like_ip(opts->host) ? X509_VERIFY_PARAM_set1_ip_asc(param, opts->host)
                                           : X509_VERIFY_PARAM_set1_host(param, opts->host, 0);

        if (ok != 1) {
            rc = mtls_err_ssl(err, MTLS_E_INVALID, "cannot check host name '%s'", opts->host);
            goto out;
        }
        /* As browsers do: the name must be a SAN; the CN is never read. */
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
                                                   X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    }
    if (opts != NULL && opts->at != 0)
        X509_VERIFY_PARAM_set_time(param, opts->at);
    if (opts != NULL && opts->crls != NULL) {
        X509_STORE_CTX_set0_crls(ctx, opts->crls);
        X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_CRL_CHECK);
    }
    note.purpose = opts != NULL ? opts->purpose : 0;
    note.host = opts != NULL ? opts->host : NULL;
    X509_STORE_CTX_set_app_data(ctx, &note);
    X509_STORE_CTX_set_verify_cb(ctx, note_first_failure);
    if (X509_verify_cert(ctx) == 1) {
        rc = 0;
        goto out;
    }
    if (!note.have)
        mtls_verify_reason(ctx, note.purpose, note.host, note.reason, sizeof(note.reason));
    rc = mtls_err_set(err, MTLS_E_VERIFY, "%s", note.reason);
out:
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return rc;
}
