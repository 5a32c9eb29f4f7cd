/* mtls_cert_lint() and the findings list: which codes a certificate gets. */
#include <criterion/criterion.h>
#include <string.h>

#include <openssl/x509.h>

#include "mtls/lint.h"
#include "mtls/pki.h"

static mtls_ca *memory_ca(void)
{
    mtls_ca_opts opts = {.cn = "Lint CA", .days = 0, .key_type = MTLS_KEY_EC, .bits = 0};
    mtls_ca *ca = NULL;
    mtls_err err;

    cr_assert_eq(mtls_ca_generate("unused-prefix", &opts, &ca, &err), 0, "%s", err.msg);
    return ca;
}

static X509 *server_of(mtls_ca *ca, EVP_PKEY *key)
{
    X509_NAME *name = NULL;
    GENERAL_NAMES *sans = NULL;
    X509 *cert = NULL;
    mtls_issue issue;
    mtls_err err;

    cr_assert_eq(mtls_name_from_cn("localhost", &name, &err), 0);
    cr_assert_eq(mtls_san_add(&sans, "localhost", &err), 0);
    memset(&issue, 0, sizeof(issue));
    issue.profile = MTLS_PROFILE_SERVER;
    issue.subject = name;
    issue.pubkey = key;
    issue.sans = sans;
    cr_assert_eq(mtls_ca_sign(ca, &issue, &cert, NULL, &err), 0, "%s", err.msg);
    GENERAL_NAMES_free(sans);
    X509_NAME_free(name);
    return cert;
}

/* What `openssl x509 -req` without -extfile makes: version 1, serial 1, from
 * another name (the key does not matter to lint). */
static X509 *v1_cert(const char *cn, EVP_PKEY *key)
{
    X509 *cert = X509_new();
    X509_NAME *name = NULL, *issuer = NULL;
    mtls_err err;

    cr_assert_eq(mtls_name_from_cn(cn, &name, &err), 0);
    cr_assert_eq(mtls_name_from_cn("v1 issuer", &issuer, &err), 0);
    cr_assert_eq(X509_set_version(cert, X509_VERSION_1), 1);
    cr_assert_eq(ASN1_INTEGER_set(X509_get_serialNumber(cert), 1), 1);
    cr_assert_eq(X509_set_subject_name(cert, name), 1);
    cr_assert_eq(X509_set_issuer_name(cert, issuer), 1);
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notBefore(cert), -60));
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notAfter(cert), 86400L * 365));
    cr_assert_eq(X509_set_pubkey(cert, key), 1);
    cr_assert_gt(X509_sign(cert, key, EVP_sha256()), 0);
    X509_NAME_free(name);
    X509_NAME_free(issuer);
    return cert;
}

/* The codes found, space-separated, in the order found. */
static const char *lint_codes(X509 *cert, int role, time_t now, char *buf, size_t size)
{
    mtls_findings found;
    mtls_err err;
    size_t used = 0;

    mtls_findings_init(&found);
    cr_assert_eq(mtls_cert_lint(cert, "x.crt", role, now, &found, &err), 0, "%s", err.msg);
    buf[0] = '\0';
    for (size_t i = 0; i < found.n; i++) {
        cr_assert_str_eq(found.items[i].file, "x.crt");
        cr_assert_neq(found.items[i].message[0], '\0');
        used +=
            (size_t)snprintf(buf + used, size - used, "%s%s", i ? " " : "", found.items[i].code);
    }
    mtls_findings_release(&found);
    return buf;
}

Test(lint, findings_list)
{
    mtls_findings found;

    mtls_findings_init(&found);
    for (int i = 0; i < 40; i++)
        cr_assert_eq(mtls_findings_add(&found, i % 3, "code", NULL, "CN=x", NULL, "n %d", i), 0);
    cr_assert_eq(found.n, 40);
    cr_assert_eq(mtls_findings_count(&found, MTLS_SEV_INFO), 14);
    cr_assert_eq(mtls_findings_count(&found, MTLS_SEV_ERROR), 13);
    cr_assert_str_eq(found.items[39].message, "n 39");
    cr_assert_str_eq(found.items[0].file, "");
    cr_assert_str_eq(found.items[0].fix, "");
    cr_assert_str_eq(mtls_severity_name(MTLS_SEV_WARNING), "warning");
    mtls_findings_release(&found);
    cr_assert_eq(found.n, 0);
    mtls_findings_release(NULL);
}

Test(lint, mtls_certificates_are_clean_and_dates_count)
{
    mtls_ca *ca = memory_ca();
    EVP_PKEY *key = NULL;
    X509 *cert;
    mtls_err err;
    char codes[512];
    time_t end;

    cr_assert_eq(mtls_key_generate(MTLS_KEY_EC, 0, &key, &err), 0);
    cert = server_of(ca, key);
    end = mtls_asn1_time(X509_get0_notAfter(cert));
    cr_assert_str_eq(lint_codes(cert, 0, 0, codes, sizeof(codes)), "");
    cr_assert_str_eq(lint_codes(cert, MTLS_PROFILE_SERVER, 0, codes, sizeof(codes)), "");
    cr_assert_str_eq(lint_codes(mtls_ca_cert(ca), 0, 0, codes, sizeof(codes)), "");
    cr_assert_str_eq(lint_codes(mtls_ca_cert(ca), MTLS_PROFILE_SUBCA, 0, codes, sizeof(codes)), "");
    cr_assert_str_eq(lint_codes(cert, MTLS_PROFILE_CLIENT, 0, codes, sizeof(codes)),
                     "wrong-purpose");
    cr_assert_str_eq(lint_codes(cert, MTLS_PROFILE_SUBCA, 0, codes, sizeof(codes)), "not-a-ca");
    cr_assert_str_eq(lint_codes(cert, 0, end - 10 * 86400, codes, sizeof(codes)), "expires-soon");
    cr_assert_str_eq(lint_codes(cert, 0, end + 86400, codes, sizeof(codes)), "expired");
    cr_assert_str_eq(lint_codes(cert, 0, end - 400 * 86400, codes, sizeof(codes)), "not-yet-valid");
    X509_free(cert);
    EVP_PKEY_free(key);
    mtls_ca_free(ca);
}

Test(lint, version_1_certificates)
{
    EVP_PKEY *key = NULL;
    mtls_err err;
    char codes[512];
    X509 *cert;

    cr_assert_eq(mtls_key_generate(MTLS_KEY_EC, 0, &key, &err), 0);
    /* A CN that is an address or a dotted name makes it a server: no SAN is an error. */
    cert = v1_cert("127.0.0.1", key);
    cr_assert_str_eq(lint_codes(cert, 0, 0, codes, sizeof(codes)),
                     "v1-certificate serial-short no-san");
    X509_free(cert);
    cert = v1_cert("www.example.com", key);
    cr_assert_str_eq(lint_codes(cert, MTLS_PROFILE_CLIENT, 0, codes, sizeof(codes)),
                     "v1-certificate serial-short");
    X509_free(cert);
    /* A name that is no host: nothing says it is a server. */
    cert = v1_cert("localclient", key);
    cr_assert_str_eq(lint_codes(cert, 0, 0, codes, sizeof(codes)), "v1-certificate serial-short");
    cr_assert_str_eq(lint_codes(cert, MTLS_PROFILE_SERVER, 0, codes, sizeof(codes)),
                     "v1-certificate serial-short no-san");
    X509_free(cert);
    EVP_PKEY_free(key);
}
