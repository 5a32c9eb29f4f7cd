/* mtls_ca_sign(): what every leaf gets, whatever the command that asked. */
#include <criterion/criterion.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/x509v3.h>

#include "mtls/pki.h"

static mtls_ca *memory_ca(void)
{
    mtls_ca_opts opts = {.cn = "Serial CA", .days = 0, .key_type = MTLS_KEY_EC, .bits = 0};
    mtls_ca *ca = NULL;
    mtls_err err;

    /* Never staged: mtls_ca_sign() works on the in-memory inventory. */
    cr_assert_eq(mtls_ca_generate("unused-prefix", &opts, &ca, &err), 0, "%s", err.msg);
    return ca;
}

/* README: "random 128-bit serials". Over many serials every one of the 128
 * bits must take both values (the top one included), none may go past 128
 * bits, and each must stay a positive INTEGER within RFC 5280's 20 octets. */
Test(ca_sign, serials_have_128_random_bits)
{
    enum { N = 600 };
    mtls_ca *ca = memory_ca();
    EVP_PKEY *key = NULL;
    X509_NAME *name = NULL;
    BIGNUM *all_or = BN_new(), *all_and = NULL, *ones = BN_new();
    mtls_issue issue;
    mtls_err err;
    int top_set = 0;

    cr_assert_eq(mtls_key_generate(MTLS_KEY_EC, 0, &key, &err), 0);
    cr_assert_eq(mtls_name_from_cn("serials", &name, &err), 0);
    memset(&issue, 0, sizeof(issue));
    issue.profile = MTLS_PROFILE_CLIENT;
    issue.subject = name;
    issue.pubkey = key;
    cr_assert(all_or != NULL && ones != NULL);
    BN_zero(all_or);
    cr_assert_eq(BN_set_word(ones, 1), 1);
    cr_assert_eq(BN_lshift(ones, ones, 128), 1);
    cr_assert_eq(BN_sub_word(ones, 1), 1); /* 2^128 - 1 */
    for (int i = 0; i < N; i++) {
        X509 *cert = NULL;
        const ASN1_INTEGER *serial;
        BIGNUM *bn;
        unsigned char *der = NULL;
        int der_len;

        cr_assert_eq(mtls_ca_sign(ca, &issue, &cert, NULL, &err), 0, "%s", err.msg);
        serial = X509_get0_serialNumber(cert);
        cr_assert_eq(ASN1_STRING_type(serial), V_ASN1_INTEGER, "serials are positive");
        bn = ASN1_INTEGER_to_BN(serial, NULL);
        cr_assert_not_null(bn);
        cr_assert(!BN_is_zero(bn));
        cr_assert(BN_num_bits(bn) <= 128, "serial of %d bits", BN_num_bits(bn));
        top_set += BN_num_bits(bn) == 128;
        /* Tag, length, at most 17 content octets (a leading zero when the top bit is set). */
        der_len = i2d_ASN1_INTEGER(serial, &der);
        cr_assert(der_len > 2 && der_len <= 2 + 17, "DER serial of %d octets", der_len);
        cr_assert(der[2] != 0x00 || (der[3] & 0x80), "no needless leading zero octet");
        OPENSSL_free(der);
        for (int b = 0; b < 128; b++) {
            if (BN_is_bit_set(bn, b))
                cr_assert_eq(BN_set_bit(all_or, b), 1);
        }
        if (all_and == NULL) {
            all_and = BN_dup(bn);
        } else {
            for (int b = 0; b < 128; b++) {
                if (!BN_is_bit_set(bn, b) && BN_is_bit_set(all_and, b))
                    cr_assert_eq(BN_clear_bit(all_and, b), 1);
            }
        }
        BN_free(bn);
        X509_free(cert);
    }
    /* With fair bits the chance of any of these failing is below 2^-100. */
    cr_assert_eq(BN_cmp(all_or, ones), 0, "some bit of the serial is never set");
    cr_assert(BN_is_zero(all_and), "some bit of the serial is always set");
    cr_assert(top_set > N / 4 && top_set < 3 * N / 4, "top bit set in %d of %d serials", top_set,
              N);
    BN_free(all_or);
    BN_free(all_and);
    BN_free(ones);
    X509_NAME_free(name);
    EVP_PKEY_free(key);
    mtls_ca_free(ca);
}
