/* cert lint: what in one certificate clients refuse or is unsafe, as
 * findings (severity, code, sentence, fix). Decided from OpenSSL's parsed
 * extension flags, worded once here. */
#include "mtls/lint.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtls/certinfo.h"
#include "mtls/pki.h"

#define ROLE_DUAL 100 /* a leaf for both server and client authentication */

struct lint {
    X509 *cert;
    const char *file;
    mtls_findings *out;
    mtls_cert_info info;
    time_t now;
    int role;       /* resolved: 0 unknown leaf, an mtls_profile, or ROLE_DUAL */
    int role_given; /* the caller said what it is for */
    uint32_t flags, ku, xku;
    int v3;
};

/* Adds a finding about the certificate being linted. */
__attribute__((format(printf, 5, 6))) static void
add(struct lint *l, mtls_severity sev, const char *code, const char *fix, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* A lost finding sets out->nomem, which mtls_cert_lint() reports. */
    (void)mtls_findings_add(l->out, sev, code, l->file, l->info.subject, fix, "%s", msg);
}

/* What a CN names, typed as mtls_san_add() types a bare --san: GEN_IPADD for
 * an address, GEN_DNS for "localhost" or a dotted host name, else 0. */
static int cn_host_type(const char *cn)
{
    GENERAL_NAMES *gens = NULL;
    int type = 0;

    if (cn[0] != '\0' && mtls_san_add(&gens, cn, NULL) == 0 && sk_GENERAL_NAME_num(gens) == 1)
        type = sk_GENERAL_NAME_value(gens, 0)->type;
    GENERAL_NAMES_free(gens);
    ERR_clear_error();
    if (type == GEN_DNS && strchr(cn, '.') == NULL && strcasecmp(cn, "localhost") != 0)
        return 0;
    return type == GEN_DNS || type == GEN_IPADD ? type : 0;
}

static int is_server_role(const struct lint *l)
{
    return l->role == MTLS_PROFILE_SERVER || l->role == ROLE_DUAL ||
           (l->role == 0 && cn_host_type(l->info.subject_cn) != 0);
}

/* What the certificate is for, when the caller did not say. */
static int infer_role(const struct lint *l)
{
    int server, client;

    if ((l->flags & EXFLAG_CA) || (!l->v3 && l->info.self_signed))
        return MTLS_PROFILE_SUBCA;
    if (!(l->flags & EXFLAG_XKUSAGE) || (l->xku & XKU_ANYEKU))
        return 0;
    server = (l->xku & XKU_SSL_SERVER) != 0;
    client = (l->xku & XKU_SSL_CLIENT) != 0;
    if (server && client)
        return ROLE_DUAL;
    return server ? MTLS_PROFILE_SERVER : client ? MTLS_PROFILE_CLIENT : 0;
}

static void check_version(struct lint *l)
{
    if (l->v3)
        return;
    add(l, MTLS_SEV_ERROR, "v1-certificate",
        "reissue it as X.509 v3 with extensions: 'mtls cert sign --profile client|server' (or "
        "openssl x509 -req with -extfile giving basicConstraints, keyUsage, extendedKeyUsage and "
        "subjectAltName)",
        "an X.509 version %d certificate, as 'openssl x509 -req' without -extfile makes: it has "
        "no extensions, so no SANs, no key usage and no basicConstraints to say it is not a CA; "
        "browsers and strict verifiers refuse it",
        l->info.version);
}

static void check_signature(struct lint *l)
{
    int md = NID_undef, pk = NID_undef;

    if (OBJ_find_sigid_algs(X509_get_signature_nid(l->cert), &md, &pk) != 1)
        return;
    if (md != NID_sha1 && md != NID_md5 && md != NID_md4 && md != NID_md2 && md != NID_md5_sha1)
        return;
    /* A trust anchor's own signature is never checked; anything it signs is. */
    if (l->info.self_signed)
        add(l, MTLS_SEV_WARNING, "weak-signature",
            "make a new CA signed with SHA-256 ('mtls ca create') and reissue what it signed",
            "signed with %s, a broken hash; verifiers ignore a trusted root's own signature, "
            "but tools and stores that check it refuse the certificate",
            l->info.sig_alg);
    else
        add(l, MTLS_SEV_ERROR, "weak-signature",
            "reissue it signed with SHA-256 (what every mtls command uses)",
            "signed with %s, a broken hash that OpenSSL 3 and browsers refuse", l->info.sig_alg);
}

static void check_key(struct lint *l)
{
    EVP_PKEY *key = X509_get0_pubkey(l->cert);
    mtls_err e;
    const char *code = "weak-key";

    ERR_clear_error();
    if (key == NULL) {
        add(l, MTLS_SEV_ERROR, "weak-key", "reissue it for an EC P-256 or RSA 2048 key",
            "its public key cannot be read");
        return;
    }
    if (mtls_key_check_tls(key, l->file, &e) == 0)
        return;
    if (EVP_PKEY_is_a(key, "RSA"))
        code = "rsa-key-too-small";
    else if (EVP_PKEY_is_a(key, "EC"))
        code = "weak-curve";
    add(l, MTLS_SEV_ERROR, code,
        "make a new key ('mtls key create': EC P-256 by default, or --key-type rsa --bits 2048 or "
        "more) and reissue the certificate for it",
        "%s", e.msg);
}

static void check_dates(struct lint *l)
{
    char when[48], words[64];
    long days = mtls_days_left(l->info.not_after, l->now);
    double span = difftime(l->info.not_after, l->info.not_before) / 86400.0;

    mtls_time_human(l->info.not_after, when, sizeof(when));
    mtls_expiry_words(l->info.not_after, l->now, words, sizeof(words));
    if (l->info.not_before > l->now)
        add(l, MTLS_SEV_ERROR, "not-yet-valid",
            "check this machine's clock, or reissue it without a future start date",
            "not valid yet: not until %s", mtls_time_human(l->info.not_before, when, sizeof(when)));
    else if (days < 0)
        add(l, MTLS_SEV_ERROR, "expired",
            l->role == MTLS_PROFILE_SUBCA
                ? "make a new CA and reissue what it signed ('mtls ca create', 'mtls cert issue')"
                : "reissue it ('mtls cert issue' or 'mtls cert sign')",
            "%s (%s): every verifier refuses it", words, when);
    else if (days <= MTLS_LINT_EXPIRY_DAYS)
        add(l, MTLS_SEV_WARNING, "expires-soon",
            l->role == MTLS_PROFILE_SUBCA
                ? "make a new CA and reissue what it signed before then"
                : "reissue it before then ('mtls cert issue' or 'mtls cert sign')",
            "%s (%s)", words, when);
    if (is_server_role(l) && span > MTLS_LINT_SERVER_MAX_DAYS)
        add(l, MTLS_SEV_WARNING, "validity-too-long",
            "reissue it for at most 398 days (mtls: 365 by default, --days N)",
            "valid for %.0f days: browsers refuse a server certificate valid for more than %d "
            "days (Safari even from a private CA: more than 825)",
            span, MTLS_LINT_SERVER_MAX_DAYS);
}

static void check_serial(struct lint *l)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(l->cert), NULL);

    if (bn == NULL) {
        ERR_clear_error();
        return;
    }
    if (BN_is_negative(bn) || BN_is_zero(bn))
        add(l, MTLS_SEV_ERROR, "serial-not-positive",
            "reissue it with a random positive serial (mtls: 128 random bits)",
            "its serial %s is not positive, which RFC 5280 requires and strict verifiers check",
            l->info.serial_hex);
    else if (BN_num_bytes(bn) > 20)
        add(l, MTLS_SEV_ERROR, "serial-too-long",
            "reissue it with a serial of at most 20 octets (mtls: 128 random bits)",
            "its serial is %d octets long; RFC 5280 allows 20 and some verifiers refuse more",
            BN_num_bytes(bn));
    else if (BN_num_bytes(bn) < 8)
        add(l, MTLS_SEV_WARNING, "serial-short",
            "reissue it with a random serial of at least 64 bits (mtls: 128 random bits; openssl: "
            "-CAcreateserial or -set_serial 0x followed by 16 random hex digits)",
            "its serial %s is %d bits long: serials need at least 64 random bits, so that "
            "nobody can predict what a CA will sign next",
            l->info.serial_hex, BN_num_bits(bn));
    BN_free(bn);
}

/* No SAN on a server certificate, or a host name in the CN but not the SANs. */
static void check_sans(struct lint *l)
{
    const char *cn = l->info.subject_cn;
    char sans[512];
    int type, ok;

    if (!is_server_role(l))
        return;
    if (l->info.n_sans == 0) {
        add(l, MTLS_SEV_ERROR, "no-san",
            "reissue it with the host names and addresses clients use as SANs: 'mtls cert sign "
            "--profile server --san NAME' (openssl: -extfile with subjectAltName=DNS:NAME)",
            "no subjectAltName: the server's name is only in the CN ('%s'), which browsers, Go, "
            "Python's ssl and mtls ignore (curl still reads it); clients refuse the certificate",
            cn[0] ? cn : "none");
        return;
    }
    if ((type = cn_host_type(cn)) == 0)
        return;
    ok = type == GEN_IPADD ? X509_check_ip_asc(l->cert, cn, 0) == 1
                           : X509_check_host(l->cert, cn, 0,
                                             X509_CHECK_FLAG_NEVER_CHECK_SUBJECT |
                                                 X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                                             NULL) == 1;
    ERR_clear_error();
    if (!ok)
        add(l, MTLS_SEV_WARNING, "cn-not-in-san",
            "reissue it with the CN among the SANs, or with a CN clients do not connect to",
            "its CN '%s' is not among its SANs (%s): clients read only the SANs when there are "
            "any, so a connection to '%s' fails",
            cn, mtls_cert_info_sans_line(&l->info, sans, sizeof(sans)), cn);
}

/* Key usage and extended key usage of a certificate that is not a CA. */
static void check_leaf_usage(struct lint *l)
{
    int want = l->role == MTLS_PROFILE_SERVER   ? X509_PURPOSE_SSL_SERVER
               : l->role == MTLS_PROFILE_CLIENT ? X509_PURPOSE_SSL_CLIENT
                                                : 0;
    const char *profile = l->role == MTLS_PROFILE_SERVER ? "server" : "client";

    if (l->role_given && (l->flags & EXFLAG_CA))
        add(l, MTLS_SEV_ERROR, "ca-as-leaf",
            "issue a separate certificate for the server or client from this CA",
            "a CA certificate (basicConstraints CA:TRUE) used as a %s certificate", profile);
    if (l->role_given && want != 0 && X509_check_purpose(l->cert, want, 0) != 1)
        add(l, MTLS_SEV_ERROR, "wrong-purpose",
            l->role == MTLS_PROFILE_SERVER
                ? "reissue it with --profile server (extendedKeyUsage serverAuth)"
                : "reissue it with --profile client (extendedKeyUsage clientAuth)",
            "not for TLS %s authentication (extended key usage: %s; key usage: %s): %s refuse "
            "it",
            profile, l->info.ext_key_usage[0] ? l->info.ext_key_usage : "none",
            l->info.key_usage[0] ? l->info.key_usage : "none",
            l->role == MTLS_PROFILE_SERVER ? "clients" : "servers");
    ERR_clear_error();
    if (!(l->flags & EXFLAG_XKUSAGE))
        add(l, MTLS_SEV_WARNING, "no-eku",
            "reissue it with --profile client or --profile server (one extendedKeyUsage)",
            "no extended key usage: nothing limits the key to client or server authentication, "
            "so it is good for anything its CA is trusted for");
    else if (l->xku & XKU_ANYEKU)
        add(l, MTLS_SEV_WARNING, "any-eku",
            "reissue it with --profile client or --profile server (one extendedKeyUsage)",
            "extended key usage anyExtendedKeyUsage: the key may be used for anything");
    else if ((l->xku & XKU_SSL_SERVER) && (l->xku & XKU_SSL_CLIENT))
        add(l, MTLS_SEV_WARNING, "dual-use-eku",
            "issue one certificate and key per role: --profile server and --profile client",
            "both serverAuth and clientAuth: one key acts as a server and as a client, so "
            "whoever takes it from the server also has a client identity");
    if (!(l->flags & EXFLAG_KUSAGE))
        add(l, MTLS_SEV_WARNING, "no-key-usage",
            "reissue it with keyUsage digitalSignature (what --profile client|server sets)",
            "no key usage extension: nothing limits what the key may sign");
    else if (!(l->ku & KU_DIGITAL_SIGNATURE))
        add(l, MTLS_SEV_ERROR, "key-usage-no-signature",
            "reissue it with keyUsage digitalSignature (what --profile client|server sets)",
            "its key usage (%s) lacks digitalSignature, which TLS 1.3 needs to sign the "
            "handshake: peers refuse it",
            l->info.key_usage);
    if ((l->flags & EXFLAG_KUSAGE) && (l->ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)))
        add(l, MTLS_SEV_WARNING, "leaf-can-sign", "reissue it with keyUsage digitalSignature only",
            "a certificate that is not a CA, with keyCertSign or cRLSign in its key usage (%s)",
            l->info.key_usage);
}

/* What a CA certificate needs: basicConstraints (critical), key usage, SKI. */
static void check_ca(struct lint *l)
{
    int ca = X509_check_ca(l->cert);
    int bc = X509_get_ext_by_NID(l->cert, NID_basic_constraints, -1);

    int no_cert_sign = (l->flags & EXFLAG_KUSAGE) && !(l->ku & KU_KEY_CERT_SIGN);

    /* OpenSSL calls a CA:TRUE certificate without keyCertSign no CA; say why. */
    if (no_cert_sign && (l->flags & EXFLAG_CA)) {
        add(l, MTLS_SEV_ERROR, "ca-no-key-cert-sign",
            "make the CA again with keyUsage keyCertSign, cRLSign ('mtls ca create')",
            "a CA whose key usage (%s) lacks keyCertSign: certificates it signed do not verify",
            l->info.key_usage);
    } else if (ca == 0) {
        add(l, MTLS_SEV_ERROR, "not-a-ca",
            "use the CA's own certificate here, or make a CA with 'mtls ca create'",
            "not a CA (no basicConstraints CA:TRUE): certificates it signed do not verify");
        return;
    }
    /* A version 1 CA has no extensions to check; check_version() said so. */
    if (!l->v3)
        return;
    if (!(l->flags & EXFLAG_BCONS))
        add(l, MTLS_SEV_WARNING, "ca-no-basic-constraints",
            "make the CA again with basicConstraints critical, CA:TRUE ('mtls ca create')",
            "a CA without basicConstraints (OpenSSL accepts it for its keyCertSign key usage; "
            "RFC 5280 and strict verifiers do not)");
    else if (bc >= 0 && !X509_EXTENSION_get_critical(X509_get_ext(l->cert, bc)))
        add(l, MTLS_SEV_WARNING, "ca-basic-constraints-not-critical",
            "make the CA again with basicConstraints critical, CA:TRUE ('mtls ca create')",
            "basicConstraints is not marked critical: RFC 5280 requires it on a CA, and strict "
            "verifiers (Python 3.13's ssl by default) refuse the chain");
    if (!(l->flags & EXFLAG_KUSAGE))
        add(l, MTLS_SEV_WARNING, "ca-no-key-usage",
            "make the CA again with keyUsage critical, keyCertSign, cRLSign ('mtls ca create')",
            "a CA without a key usage extension: RFC 5280 requires one, and strict verifiers "
            "(Python 3.13's ssl by default) refuse the chain");
    else if (!no_cert_sign && !(l->ku & KU_CRL_SIGN))
        add(l, MTLS_SEV_INFO, "ca-no-crl-sign",
            "make the CA with cRLSign too if it is to publish CRLs ('mtls ca create')",
            "its key usage (%s) lacks cRLSign: CRLs it signs are refused", l->info.key_usage);
    if (X509_get0_subject_key_id(l->cert) == NULL)
        add(l, MTLS_SEV_WARNING, "no-ski",
            "make the CA again with a subjectKeyIdentifier ('mtls ca create')",
            "a CA without a subject key identifier: strict verifiers (Python 3.13's ssl by "
            "default) refuse the chain");
}

static void check_extensions(struct lint *l)
{
    if (l->role == MTLS_PROFILE_SUBCA)
        check_ca(l);
    if (!l->v3)
        return;
    if (l->role != MTLS_PROFILE_SUBCA)
        check_leaf_usage(l);
    if (!l->info.self_signed && X509_get0_authority_key_id(l->cert) == NULL)
        add(l, MTLS_SEV_WARNING, "no-aki",
            "reissue it with an authorityKeyIdentifier (every mtls command adds one)",
            "no authority key identifier: strict verifiers (Python 3.13's ssl by default) "
            "refuse it");
}

int mtls_cert_lint(X509 *cert, const char *file, int role, time_t now, mtls_findings *out,
                   mtls_err *err)
{
    struct lint l;
    int rc;

    memset(&l, 0, sizeof(l));
    l.cert = cert;
    l.file = file;
    l.out = out;
    l.now = now != 0 ? now : time(NULL);
    rc = mtls_cert_info_init(&l.info, cert, err);
    if (rc != 0)
        return rc;
    l.flags = X509_get_extension_flags(cert);
    l.ku = X509_get_key_usage(cert);
    l.xku = X509_get_extended_key_usage(cert);
    l.v3 = X509_get_version(cert) == X509_VERSION_3;
    l.role_given = role != 0;
    l.role = role != 0 ? role : infer_role(&l);
    check_version(&l);
    check_signature(&l);
    check_key(&l);
    check_dates(&l);
    check_serial(&l);
    check_sans(&l);
    check_extensions(&l);
    mtls_cert_info_release(&l.info);
    ERR_clear_error();
    if (out->nomem)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    return 0;
}
