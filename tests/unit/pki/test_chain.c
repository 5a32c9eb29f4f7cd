/* mtls_chain_check() and mtls_cert_issued_by(): a chain must link up. */
#include <criterion/criterion.h>
#include <string.h>

#include <openssl/x509_vfy.h>

#include "mtls/pki.h"

static mtls_ca *memory_ca(const char *cn)
{
    mtls_ca_opts opts = {.cn = cn, .days = 0, .key_type = MTLS_KEY_EC, .bits = 0};
    mtls_ca *ca = NULL;
    mtls_err err;

    cr_assert_eq(mtls_ca_generate("unused-prefix", &opts, &ca, &err), 0, "%s", err.msg);
    return ca;
}

static X509 *leaf_of(mtls_ca *ca, EVP_PKEY *key)
{
    X509_NAME *name = NULL;
    X509 *cert = NULL;
    mtls_issue issue;
    mtls_err err;

    cr_assert_eq(mtls_name_from_cn("leaf", &name, &err), 0);
    memset(&issue, 0, sizeof(issue));
    issue.profile = MTLS_PROFILE_CLIENT;
    issue.subject = name;
    issue.pubkey = key;
    cr_assert_eq(mtls_ca_sign(ca, &issue, &cert, NULL, &err), 0, "%s", err.msg);
    X509_NAME_free(name);
    return cert;
}

Test(chain, links_or_says_which_certificate_does_not)
{
    mtls_ca *ca = memory_ca("Chain CA"), *other = memory_ca("Other CA"),
            *twin = memory_ca("Chain CA");
    EVP_PKEY *key = NULL;
    X509 *leaf;
    STACK_OF(X509) *chain = sk_X509_new_null();
    unsigned char *der = NULL;
    size_t len = 0;
    mtls_err err;

    cr_assert_eq(mtls_key_generate(MTLS_KEY_EC, 0, &key, &err), 0);
    leaf = leaf_of(ca, key);
    cr_assert_eq(mtls_cert_issued_by(leaf, mtls_ca_cert(ca)), X509_V_OK);
    cr_assert_eq(mtls_cert_issued_by(leaf, mtls_ca_cert(other)),
                 X509_V_ERR_SUBJECT_ISSUER_MISMATCH);
    cr_assert_neq(mtls_cert_issued_by(leaf, mtls_ca_cert(twin)), X509_V_OK, "a namesake");
    cr_assert_eq(mtls_chain_check(leaf, NULL, &err), 0);
    cr_assert_eq(mtls_chain_check(leaf, chain, &err), 0);
    sk_X509_push(chain, mtls_ca_cert(other));
    cr_assert_eq(mtls_chain_check(leaf, chain, &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg,
                     "'CN=Other CA' (certificate 1 of the chain) did not issue 'CN=leaf'") != NULL,
              "%s", err.msg);
    cr_assert(strstr(err.msg, "its issuer is 'CN=Chain CA'") != NULL, "%s", err.msg);
    /* mtls_p12_create() refuses it too. */
    cr_assert_eq(mtls_p12_create(leaf, key, chain, "pw", 0, &der, &len, &err), MTLS_E_INVALID);
    cr_assert_null(der);
    (void)sk_X509_pop(chain);
    sk_X509_push(chain, mtls_ca_cert(twin));
    cr_assert_eq(mtls_chain_check(leaf, chain, &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "same name, another key") != NULL, "%s", err.msg);
    (void)sk_X509_pop(chain);
    sk_X509_push(chain, mtls_ca_cert(ca));
    cr_assert_eq(mtls_chain_check(leaf, chain, &err), 0, "%s", err.msg);
    /* The root, then anything after it, must link too. */
    sk_X509_push(chain, mtls_ca_cert(other));
    cr_assert_eq(mtls_chain_check(leaf, chain, &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "certificate 2 of the chain") != NULL, "%s", err.msg);
    sk_X509_free(chain);
    X509_free(leaf);
    EVP_PKEY_free(key);
    mtls_ca_free(ca);
    mtls_ca_free(other);
    mtls_ca_free(twin);
}
