/* Verification: chain, signatures, dates, purpose, host name, revocation of
 * every certificate of the chain, and one plain sentence (from the table in
 * verify_words.c) that says which check failed for which certificate. */
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

/* "certificate 'CN=x'", or with peer "client": "client certificate 'CN=x'". */
static void who(X509 *cert, int depth, const char *peer, char *buf, size_t size)
{
    char name[MTLS_NAME_MAX];

    mtls_name_oneline(X509_get_subject_name(cert), name, sizeof(name));
    if (peer == NULL)
        snprintf(buf, size, "%s '%s'", depth > 0 ? "CA certificate" : "certificate", name);
    else if (depth > 0)
        snprintf(buf, size, "CA certificate '%s' in the %s's chain", name, peer);
    else
        snprintf(buf, size, "%s certificate '%s'", peer, name);
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
    ERR_clear_error();
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

char *mtls_verify_reason(X509_STORE_CTX *ctx, int purpose, const char *host, const char *peer,
                         char *buf, size_t size)
{
    X509 *cert = X509_STORE_CTX_get_current_cert(ctx);
    X509_CRL *crl = X509_STORE_CTX_get0_current_crl(ctx);
    X509_REVOKED *rev = NULL;
    mtls_verify_failure f;
    char subj[MTLS_NAME_MAX + 64], issuer[MTLS_NAME_MAX], crl_issuer[MTLS_NAME_MAX];
    char serial[MTLS_SERIAL_HEX_MAX], usage[512], sans[512];

    memset(&f, 0, sizeof(f));
    f.code = X509_STORE_CTX_get_error(ctx);
    f.depth = X509_STORE_CTX_get_error_depth(ctx);
    f.host = host;
    f.purpose = purpose == MTLS_PROFILE_SERVER   ? "TLS server authentication"
                : purpose == MTLS_PROFILE_CLIENT ? "TLS client authentication"
                                                 : NULL;
    if (cert == NULL) /* the table's words, naming no certificate */
        return mtls_verify_words(&f, buf, size);
    who(cert, f.depth, peer, subj, sizeof(subj));
    mtls_name_oneline(X509_get_issuer_name(cert), issuer, sizeof(issuer));
    f.cert = subj;
    f.issuer = issuer;
    f.serial = mtls_serial_hex(X509_get0_serialNumber(cert), serial, sizeof(serial));
    f.not_before = mtls_asn1_time(X509_get0_notBefore(cert));
    f.not_after = mtls_asn1_time(X509_get0_notAfter(cert));
    switch (f.code) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        f.namesake = trusted_namesake(ctx, X509_get_issuer_name(cert));
        break;
    case X509_V_ERR_INVALID_PURPOSE:
        eku_list(cert, usage, sizeof(usage));
        f.usage = usage;
        break;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        sans_list(cert, sans, sizeof(sans));
        f.sans = sans;
        f.hint = cn_note(cert, host, sans[0] != '\0');
        break;
    case X509_V_ERR_CERT_REVOKED:
        /* The CRL the context is checking against knows the date and reason. */
        if (crl != NULL && X509_CRL_get0_by_cert(crl, &rev, cert) == 1 && rev != NULL) {
            f.revoked_at = mtls_asn1_time(X509_REVOKED_get0_revocationDate(rev));
            f.revoked_why = mtls_crl_entry_reason(rev);
        }
        break;
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
        if (crl != NULL) {
            mtls_name_oneline(X509_CRL_get_issuer(crl), crl_issuer, sizeof(crl_issuer));
            f.crl_issuer = crl_issuer;
            f.crl_next = mtls_asn1_time(X509_CRL_get0_nextUpdate(crl));
            f.crl_last = mtls_asn1_time(X509_CRL_get0_lastUpdate(crl));
        }
        break;
    default:
        break;
    }
    return mtls_verify_words(&f, buf, size);
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
        mtls_verify_reason(ctx, note->purpose, note->host, NULL, note->reason,
                           sizeof(note->reason));
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
        /* Every certificate of the chain, not only the leaf: a revoked intermediate fails. */
        X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
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
        mtls_verify_reason(ctx, note.purpose, note.host, NULL, note.reason, sizeof(note.reason));
    rc = mtls_err_set(err, MTLS_E_VERIFY, "%s", note.reason);
out:
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return rc;
}
