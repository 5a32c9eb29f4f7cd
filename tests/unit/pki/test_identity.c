/* src/pki/identity.c: --allow rules as a pure function of a certificate. */
#include <criterion/criterion.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "mtls/identity.h"

static X509 *cert_with_uris(const char *sans)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    cr_assert_not_null(key);
    X509_set_version(x, X509_VERSION_3);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                               (const unsigned char *)"svc", -1, -1, 0);
    X509_set_pubkey(x, key);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, sans);
    cr_assert_not_null(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    EVP_PKEY_free(key);
    return x;
}

static int allows(const char *rule, const char *sans)
{
    mtls_allow_policy p = {0};
    mtls_err err;
    X509 *x = cert_with_uris(sans);
    int r;

    cr_assert_eq(mtls_allow_policy_add(&p, rule, &err), 0, "%s", err.msg);
    r = mtls_allow_policy_match(&p, x);
    mtls_allow_policy_release(&p);
    X509_free(x);
    return r;
}

Test(identity, a_star_is_one_whole_path_segment)
{
    const char *rule = "san-uri=spiffe://example.org/ns/prod/sa/*";

    cr_assert(allows(rule, "URI:spiffe://example.org/ns/prod/sa/web"));
    cr_assert_not(allows(rule, "URI:spiffe://example.org/ns/prod/sa/web/x"));
    cr_assert_not(allows(rule, "URI:spiffe://example.org/ns/prod/sa/"), "empty segment");
    cr_assert_not(allows(rule, "URI:spiffe://example.org/ns/prod/sa"));
    cr_assert(allows("san-uri=spiffe://x/*/sa/web", "URI:spiffe://x/prod/sa/web"));
    cr_assert(allows("san-uri=spiffe://x/a*b", "URI:spiffe://x/axbxb"), "backtracks");
    cr_assert_not(allows("san-uri=spiffe://x/a*b", "URI:spiffe://x/a/b"));
    cr_assert_not(allows(rule, "DNS:example.org"), "only URI SANs count");
}

Test(identity, no_certificate_matches_nothing_and_no_rules_allow_any)
{
    mtls_allow_policy none = {0}, one = {0};
    mtls_err err;
    X509 *x = cert_with_uris("DNS:a.example.org");
    char who[128];

    cr_assert(mtls_allow_policy_match(&none, x));
    cr_assert_not(mtls_allow_policy_match(&none, NULL));
    cr_assert_eq(mtls_allow_policy_add(&one, "SAN-DNS=A.example.org", &err), 0);
    cr_assert(mtls_allow_policy_match(&one, x), "type and DNS names ignore case");
    cr_assert_str_eq(one.text, "san-dns A.example.org");
    cr_assert_str_eq(mtls_identity_who(x, who, sizeof(who)), "CN=svc");
    cr_assert_str_eq(mtls_identity_who(NULL, who, sizeof(who)),
                     "a client without a verified certificate");
    mtls_allow_policy_release(&one);
    X509_free(x);
}

Test(identity, bad_rules_say_why)
{
    mtls_allow_policy p = {0};
    mtls_err err;

    cr_assert_eq(mtls_allow_policy_add(&p, "cn", &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "needs TYPE=VALUE") != NULL, "%s", err.msg);
    cr_assert_eq(mtls_allow_policy_add(&p, "cert-sha256=00", &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_allow_policy_add(&p,
                                       "cert-sha256="
                                       "00112233445566778899aabbccddeeff"
                                       "00112233445566778899AABBCCDDEEFF",
                                       &err),
                 0);
    cr_assert_eq(p.n, 1);
    mtls_allow_policy_release(&p);
}
