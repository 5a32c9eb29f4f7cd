/*
 * The one table of verification failures. For each X509 verify code (and
 * for a peer that sent no certificate at all): the sentence that says what
 * is wrong, and the TLS alert OpenSSL sends when it refuses a peer for it.
 * `cert verify`, the server's handshake log and 403 answers, and `probe`'s
 * report all put failures into words from here, each naming the
 * certificate its own way ({cert}); the server logs the alert from here,
 * by code, never by matching a sentence.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "mtls/pki.h"

/* What a row needs to be chosen over the next row of the same code. */
enum need {
    NEED_NOTHING = 0,
    NEED_NAMESAKE,   /* a trusted CA has the issuer's name (another key) */
    NEED_REVOKED_AT, /* the revocation date is known */
    NEED_USAGE,      /* the certificate lists extended key usages */
    NEED_USAGE_NONE, /* it is known to list none */
    NEED_SANS,       /* it has SANs */
    NEED_CRL_ISSUER, /* the CRL involved is known */
};

/*
 * Placeholders: {cert} the caller's name for the certificate, {issuer},
 * {serial}, {not_after}, {not_before}, {purpose}, {usage}, {host}, {sans},
 * {crl_issuer}, {crl_next}, {crl_last}, {revoked_at}, {revoked_why}, {hint}
 * (a remark the caller adds, or nothing), {openssl} (OpenSSL's own words).
 */
struct reason_row {
    int code;
    enum need need;
    const char *alert; /* the alert OpenSSL sends (ssl_x509err2alert) */
    const char *words;
    enum mtls_verify_reason reason; /* the short label (metrics) */
};

#define UNTRUSTED_WORDS                                                                            \
    "issuer not trusted: {cert} was issued by '{issuer}', which is not a trusted CA"
#define NAMESAKE_WORDS                                                                             \
    "issuer not trusted: {cert} was issued by a CA named '{issuer}', but not by the one trusted "  \
    "here (same name, another key)"

static const struct reason_row rows[] = {
    {MTLS_VERIFY_NO_CERT, NEED_NOTHING, "certificate_required", "no client certificate was sent",
     MTLS_VERIFY_R_NO_CERTIFICATE},
    {X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, NEED_NAMESAKE, "unknown_ca", NAMESAKE_WORDS,
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, NEED_NOTHING, "unknown_ca", UNTRUSTED_WORDS,
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, NEED_NAMESAKE, "unknown_ca", NAMESAKE_WORDS,
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, NEED_NOTHING, "unknown_ca", UNTRUSTED_WORDS,
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, NEED_NAMESAKE, "unknown_ca", NAMESAKE_WORDS,
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, NEED_NOTHING, "unknown_ca", UNTRUSTED_WORDS,
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_CERT_UNTRUSTED, NEED_NOTHING, "bad_certificate", UNTRUSTED_WORDS,
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, NEED_NOTHING, "unknown_ca",
     "issuer not trusted: {cert} is self-signed and not a trusted CA (a name alone proves "
     "nothing)",
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, NEED_NOTHING, "unknown_ca",
     "issuer not trusted: the chain ends at {cert}, which is not a trusted CA",
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_INVALID_CA, NEED_NOTHING, "unknown_ca",
     "issuer not trusted: {cert} is not a CA (no basicConstraints CA:TRUE)",
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_PATH_LENGTH_EXCEEDED, NEED_NOTHING, "unknown_ca",
     "issuer not trusted: the chain is longer than the path length {cert} allows",
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_CERT_CHAIN_TOO_LONG, NEED_NOTHING, "unknown_ca",
     "issuer not trusted: the chain to {cert} is longer than the allowed depth",
     MTLS_VERIFY_R_UNKNOWN_CA},
    {X509_V_ERR_CERT_HAS_EXPIRED, NEED_NOTHING, "certificate_expired",
     "{cert} expired on {not_after}", MTLS_VERIFY_R_EXPIRED},
    {X509_V_ERR_CERT_NOT_YET_VALID, NEED_NOTHING, "bad_certificate",
     "{cert} is not valid yet: not until {not_before}", MTLS_VERIFY_R_NOT_YET_VALID},
    {X509_V_ERR_INVALID_PURPOSE, NEED_USAGE, "unsupported_certificate",
     "wrong purpose: {cert} is not for {purpose} (its extended key usage: {usage})",
     MTLS_VERIFY_R_WRONG_PURPOSE},
    {X509_V_ERR_INVALID_PURPOSE, NEED_USAGE_NONE, "unsupported_certificate",
     "wrong purpose: {cert} is not for {purpose} (its key usage forbids it)",
     MTLS_VERIFY_R_WRONG_PURPOSE},
    {X509_V_ERR_INVALID_PURPOSE, NEED_NOTHING, "unsupported_certificate",
     "wrong purpose: {cert} is not for {purpose}", MTLS_VERIFY_R_WRONG_PURPOSE},
    {X509_V_ERR_HOSTNAME_MISMATCH, NEED_SANS, "bad_certificate",
     "host name '{host}' is not in the SANs of {cert} ({sans}){hint}", MTLS_VERIFY_R_NAME_MISMATCH},
    {X509_V_ERR_HOSTNAME_MISMATCH, NEED_NOTHING, "bad_certificate",
     "host name '{host}' is not in the SANs of {cert} (it has none){hint}",
     MTLS_VERIFY_R_NAME_MISMATCH},
    {X509_V_ERR_IP_ADDRESS_MISMATCH, NEED_SANS, "bad_certificate",
     "host name '{host}' is not in the SANs of {cert} ({sans}){hint}", MTLS_VERIFY_R_NAME_MISMATCH},
    {X509_V_ERR_IP_ADDRESS_MISMATCH, NEED_NOTHING, "bad_certificate",
     "host name '{host}' is not in the SANs of {cert} (it has none){hint}",
     MTLS_VERIFY_R_NAME_MISMATCH},
    {X509_V_ERR_CERT_SIGNATURE_FAILURE, NEED_NOTHING, "decrypt_error",
     "signature invalid: {cert} is not signed by the key of its issuer '{issuer}' (altered, or "
     "issued by another CA of the same name)",
     MTLS_VERIFY_R_BAD_SIGNATURE},
    {X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE, NEED_NOTHING, "bad_certificate",
     "signature invalid: {cert} is not signed by the key of its issuer '{issuer}' (altered, or "
     "issued by another CA of the same name)",
     MTLS_VERIFY_R_BAD_SIGNATURE},
    {X509_V_ERR_CERT_REVOKED, NEED_REVOKED_AT, "certificate_revoked",
     "{cert} (serial {serial}) was revoked by its CA '{issuer}' on {revoked_at} ({revoked_why})",
     MTLS_VERIFY_R_REVOKED},
    {X509_V_ERR_CERT_REVOKED, NEED_NOTHING, "certificate_revoked",
     "{cert} (serial {serial}) has been revoked by its CA '{issuer}'", MTLS_VERIFY_R_REVOKED},
    {X509_V_ERR_UNABLE_TO_GET_CRL, NEED_NOTHING, "unknown_ca",
     "no CRL of '{issuer}' is loaded, so {cert} cannot be checked for revocation: pass that CA's "
     "CRL too",
     MTLS_VERIFY_R_CRL_MISSING},
    {X509_V_ERR_CRL_HAS_EXPIRED, NEED_CRL_ISSUER, "certificate_expired",
     "the CRL of '{crl_issuer}' expired on {crl_next} (its next update), so {cert} cannot be "
     "checked: publish a new one with 'mtls crl create'",
     MTLS_VERIFY_R_CRL_EXPIRED},
    {X509_V_ERR_CRL_HAS_EXPIRED, NEED_NOTHING, "certificate_expired",
     "the CRL of '{issuer}' has expired, so {cert} cannot be checked: publish a new one with "
     "'mtls crl create'",
     MTLS_VERIFY_R_CRL_EXPIRED},
    {X509_V_ERR_CRL_NOT_YET_VALID, NEED_CRL_ISSUER, "bad_certificate",
     "the CRL of '{crl_issuer}' is not valid yet: not until {crl_last}",
     MTLS_VERIFY_R_CRL_NOT_YET_VALID},
    {X509_V_ERR_CRL_NOT_YET_VALID, NEED_NOTHING, "bad_certificate",
     "the CRL of '{issuer}' is not valid yet", MTLS_VERIFY_R_CRL_NOT_YET_VALID},
    {X509_V_ERR_CRL_SIGNATURE_FAILURE, NEED_NOTHING, "decrypt_error",
     "the CRL of '{issuer}' has a bad signature: it was altered or not made by that CA",
     MTLS_VERIFY_R_CRL_INVALID},
    {X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER, NEED_NOTHING, "unknown_ca",
     "the CRL for {cert} cannot be checked: its issuer is not a trusted CA",
     MTLS_VERIFY_R_CRL_INVALID},
    {X509_V_ERR_APPLICATION_VERIFICATION, NEED_NOTHING, "handshake_failure",
     "{cert} was refused by the application's own check", MTLS_VERIFY_R_REJECTED},
    {X509_V_ERR_OUT_OF_MEM, NEED_NOTHING, "internal_error",
     "{cert} could not be checked: out of memory", MTLS_VERIFY_R_INTERNAL},
};

/* Codes without a row of their own: OpenSSL's words, and the alert it sends for them. */
static const struct {
    int code;
    const char *alert;
} other_alerts[] = {
    /* Counted as MTLS_VERIFY_R_OTHER, except the weak keys and digests. */
    {X509_V_ERR_CA_KEY_TOO_SMALL, "bad_certificate"},
    {X509_V_ERR_CA_MD_TOO_WEAK, "bad_certificate"},
    {X509_V_ERR_CERT_REJECTED, "bad_certificate"},
    {X509_V_ERR_EE_KEY_TOO_SMALL, "bad_certificate"},
    {X509_V_ERR_EC_KEY_EXPLICIT_PARAMS, "bad_certificate"},
    {X509_V_ERR_EMAIL_MISMATCH, "bad_certificate"},
    {X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD, "bad_certificate"},
    {X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD, "bad_certificate"},
    {X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD, "bad_certificate"},
    {X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD, "bad_certificate"},
    {X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY, "bad_certificate"},
    {X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE, "bad_certificate"},
    {X509_V_ERR_INVALID_CALL, "internal_error"},
    {X509_V_ERR_STORE_LOOKUP, "internal_error"},
    {X509_V_ERR_UNSPECIFIED, "internal_error"},
};

static int has(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static int row_fits(const struct reason_row *row, const mtls_verify_failure *f)
{
    switch (row->need) {
    case NEED_NAMESAKE:
        return f->namesake;
    case NEED_REVOKED_AT:
        return f->revoked_at != 0;
    case NEED_USAGE:
        return has(f->usage);
    case NEED_USAGE_NONE:
        return f->usage != NULL && f->usage[0] == '\0';
    case NEED_SANS:
        return has(f->sans);
    case NEED_CRL_ISSUER:
        return has(f->crl_issuer);
    default:
        return 1;
    }
}

static const struct reason_row *find_row(const mtls_verify_failure *f)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        if (rows[i].code == f->code && row_fits(&rows[i], f))
            return &rows[i];
    }
    return NULL;
}

/* The text for one {placeholder} (name is not NUL-terminated: len bytes). */
static const char *fill(const mtls_verify_failure *f, const char *name, size_t len, char *tmp,
                        size_t tmp_size)
{
#define IS(word) (len == sizeof(word) - 1 && memcmp(name, word, len) == 0)
    if (IS("cert"))
        return has(f->cert) ? f->cert : "the certificate";
    if (IS("issuer"))
        return has(f->issuer) ? f->issuer : "(unknown issuer)";
    if (IS("serial"))
        return has(f->serial) ? f->serial : "?";
    if (IS("not_after"))
        return f->not_after ? mtls_time_human(f->not_after, tmp, tmp_size) : "an earlier date";
    if (IS("not_before"))
        return f->not_before ? mtls_time_human(f->not_before, tmp, tmp_size) : "a later date";
    if (IS("purpose"))
        return has(f->purpose) ? f->purpose : "this purpose";
    if (IS("usage"))
        return has(f->usage) ? f->usage : "none";
    if (IS("host"))
        return has(f->host) ? f->host : "?";
    if (IS("sans"))
        return has(f->sans) ? f->sans : "it has none";
    if (IS("crl_issuer"))
        return has(f->crl_issuer) ? f->crl_issuer : "?";
    if (IS("crl_next"))
        return mtls_time_human(f->crl_next, tmp, tmp_size);
    if (IS("crl_last"))
        return mtls_time_human(f->crl_last, tmp, tmp_size);
    if (IS("revoked_at"))
        return mtls_time_human(f->revoked_at, tmp, tmp_size);
    if (IS("revoked_why"))
        return has(f->revoked_why) ? f->revoked_why : "no reason given";
    if (IS("hint"))
        return f->hint != NULL ? f->hint : "";
    if (IS("openssl"))
        return X509_verify_cert_error_string(f->code);
#undef IS
    return "?";
}

static void expand(const char *words, const mtls_verify_failure *f, char *buf, size_t size)
{
    size_t used = 0;

    for (const char *p = words; *p != '\0' && used + 1 < size;) {
        const char *end = *p == '{' ? strchr(p, '}') : NULL;
        char tmp[64];
        int n;

        if (end == NULL) {
            buf[used++] = *p++;
            continue;
        }
        n = snprintf(buf + used, size - used, "%s",
                     fill(f, p + 1, (size_t)(end - p - 1), tmp, sizeof(tmp)));
        used = n < 0 ? used : used + (size_t)n >= size ? size - 1 : used + (size_t)n;
        p = end + 1;
    }
    buf[used] = '\0';
}

char *mtls_verify_words(const mtls_verify_failure *f, char *buf, size_t size)
{
    const struct reason_row *row;

    if (size == 0)
        return buf;
    row = find_row(f);
    expand(row != NULL ? row->words : "{cert} did not verify: {openssl}", f, buf, size);
    return buf;
}

const char *mtls_verify_alert(int code, int tls13)
{
    if (code == X509_V_OK)
        return NULL;
    if (code == MTLS_VERIFY_NO_CERT)
        return tls13 ? "certificate_required" : "handshake_failure";
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        if (rows[i].code == code)
            return rows[i].alert;
    }
    for (size_t i = 0; i < sizeof(other_alerts) / sizeof(other_alerts[0]); i++) {
        if (other_alerts[i].code == code)
            return other_alerts[i].alert;
    }
    return "certificate_unknown";
}

static const char *const reason_labels[MTLS_VERIFY_REASONS] = {
    [MTLS_VERIFY_R_NO_CERTIFICATE] = "no_certificate",
    [MTLS_VERIFY_R_UNKNOWN_CA] = "unknown_ca",
    [MTLS_VERIFY_R_EXPIRED] = "expired",
    [MTLS_VERIFY_R_NOT_YET_VALID] = "not_yet_valid",
    [MTLS_VERIFY_R_WRONG_PURPOSE] = "wrong_purpose",
    [MTLS_VERIFY_R_REVOKED] = "revoked",
    [MTLS_VERIFY_R_BAD_SIGNATURE] = "bad_signature",
    [MTLS_VERIFY_R_NAME_MISMATCH] = "name_mismatch",
    [MTLS_VERIFY_R_CRL_MISSING] = "crl_missing",
    [MTLS_VERIFY_R_CRL_EXPIRED] = "crl_expired",
    [MTLS_VERIFY_R_CRL_NOT_YET_VALID] = "crl_not_yet_valid",
    [MTLS_VERIFY_R_CRL_INVALID] = "crl_invalid",
    [MTLS_VERIFY_R_WEAK] = "weak",
    [MTLS_VERIFY_R_REJECTED] = "rejected",
    [MTLS_VERIFY_R_INTERNAL] = "internal",
    [MTLS_VERIFY_R_OTHER] = "other",
};

enum mtls_verify_reason mtls_verify_reason_of(int code)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        if (rows[i].code == code)
            return rows[i].reason;
    }
    switch (code) {
    case X509_V_ERR_CA_KEY_TOO_SMALL:
    case X509_V_ERR_CA_MD_TOO_WEAK:
    case X509_V_ERR_EE_KEY_TOO_SMALL:
        return MTLS_VERIFY_R_WEAK;
    default:
        return MTLS_VERIFY_R_OTHER;
    }
}

const char *mtls_verify_reason_label(enum mtls_verify_reason reason)
{
    return (unsigned)reason < MTLS_VERIFY_REASONS ? reason_labels[reason] : "other";
}
