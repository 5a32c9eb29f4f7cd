#include <criterion/criterion.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "mtls/certinfo.h"

/* A small certificate built in memory: no files, no CLI. */
static X509 *make_cert(EVP_PKEY *key, const char *subject_cn, const char *issuer_cn,
                       const char *sans, const char *eku, int ca)
{
    X509 *x = X509_new();
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    cr_assert_not_null(x);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 0x0123AB);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                               (const unsigned char *)subject_cn, -1, -1, 0);
    X509_NAME_add_entry_by_txt(X509_get_issuer_name(x), "CN", MBSTRING_UTF8,
                               (const unsigned char *)issuer_cn, -1, -1, 0);
    X509_set_pubkey(x, key);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    if (sans != NULL) {
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, sans);
        cr_assert_not_null(ext);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (eku != NULL) {
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_ext_key_usage, eku);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
                              ca ? "critical,CA:TRUE,pathlen:0" : "critical,CA:FALSE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage,
                              ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    cr_assert_gt(X509_sign(x, key, EVP_sha256()), 0);
    return x;
}

Test(certinfo, leaf_fields)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = make_cert(key, "localclient", "client-example-ca",
                        "DNS:localhost,IP:127.0.0.1,IP:::1,email:a@example.com", "clientAuth", 0);
    mtls_cert_info info;
    mtls_err err;
    char line[256];

    cr_assert_eq(mtls_cert_info_init(&info, x, &err), 0, "%s", err.msg);
    cr_assert_str_eq(info.subject, "CN=localclient");
    cr_assert_str_eq(info.issuer, "CN=client-example-ca");
    cr_assert_str_eq(info.subject_cn, "localclient");
    cr_assert_str_eq(info.issuer_cn, "client-example-ca");
    cr_assert_str_eq(info.serial_hex, "0123AB");
    cr_assert_eq(strlen(info.sha256), 95);
    cr_assert_str_eq(info.key_type, "EC");
    cr_assert_eq(info.key_bits, 256);
    cr_assert_str_eq(info.key_curve, "prime256v1");
    cr_assert_str_eq(info.sig_alg, "ecdsa-with-SHA256");
    cr_assert_eq(info.version, 3);
    cr_assert_eq(info.is_ca, 0);
    cr_assert_eq(info.path_len, -1);
    cr_assert_eq(info.self_signed, 0);
    cr_assert_str_eq(info.key_usage, "Digital Signature");
    cr_assert_str_eq(info.ext_key_usage, "TLS Web Client Authentication");
    cr_assert_eq(info.n_sans, 4);
    cr_assert_str_eq(mtls_cert_info_sans_line(&info, line, sizeof(line)),
                     "DNS:localhost, IP:127.0.0.1, IP:::1, email:a@example.com");
    cr_assert_eq(info.not_after - info.not_before, 86400L * 30);
    cr_assert_eq(strlen(info.not_after_iso), 20);

    cJSON *j = mtls_cert_info_to_json(&info);
    char *text = cJSON_PrintUnformatted(j);
    cr_assert(strstr(text, "\"subject\":\"CN=localclient\"") != NULL, "%s", text);
    cr_assert(strstr(text, "{\"type\":\"IP\",\"value\":\"127.0.0.1\"}") != NULL, "%s", text);
    cr_assert(strstr(text, "\"extended_key_usage\":[\"TLS Web Client Authentication\"]") != NULL,
              "%s", text);
    cJSON_free(text);
    cJSON_Delete(j);
    mtls_cert_info_release(&info);
    X509_free(x);
    EVP_PKEY_free(key);
}

Test(certinfo, self_signed_ca)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    X509 *x = make_cert(key, "client-example-ca", "client-example-ca", NULL, NULL, 1);
    mtls_cert_info info;

    cr_assert_eq(mtls_cert_info_init(&info, x, NULL), 0);
    cr_assert_eq(info.is_ca, 1);
    cr_assert_eq(info.path_len, 0);
    cr_assert_eq(info.self_signed, 1);
    cr_assert_str_eq(info.key_type, "RSA");
    cr_assert_eq(info.key_bits, 2048);
    cr_assert_str_eq(info.key_usage, "Certificate Sign, CRL Sign");
    cr_assert_eq(info.n_sans, 0);
    mtls_cert_info_release(&info);
    X509_free(x);
    EVP_PKEY_free(key);
}

Test(certinfo, name_with_several_parts_and_utf8)
{
    X509_NAME *n = X509_NAME_new();
    char buf[128];

    X509_NAME_add_entry_by_txt(n, "C", MBSTRING_UTF8, (const unsigned char *)"JP", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"例, Inc", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"x", -1, -1, 0);
    mtls_name_oneline(n, buf, sizeof(buf));
    cr_assert_str_eq(buf, "C=JP, O=\"例, Inc\", CN=x");
    X509_NAME_free(n);
}

Test(certinfo, control_bytes_in_names_are_escaped)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = make_cert(key, "evil\x1b[2Jcn", "ca", NULL, NULL, 0);
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    GENERAL_NAME *gen = GENERAL_NAME_new();
    ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
    mtls_cert_info info;
    mtls_err err;
    char line[256];

    /* A SAN a hostile server could send: an escape sequence and a newline. */
    ASN1_STRING_set(dns, "a\x1b]0;owned\x07\nb.example", -1);
    GENERAL_NAME_set0_value(gen, GEN_DNS, dns);
    sk_GENERAL_NAME_push(gens, gen);
    X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0);
    cr_assert_eq(mtls_cert_info_init(&info, x, &err), 0, "%s", err.msg);
    cr_assert_str_eq(info.subject_cn, "evil\\x1B[2Jcn");
    cr_assert_eq(info.n_sans, 1);
    cr_assert_str_eq(info.sans[0].value, "a\\x1B]0;owned\\x07\\x0Ab.example");
    mtls_cert_info_sans_line(&info, line, sizeof(line));
    cr_assert(strchr(line, 0x1b) == NULL && strchr(line, '\n') == NULL, "%s", line);
    cr_assert(strchr(info.subject, 0x1b) == NULL, "%s", info.subject);
    mtls_cert_info_release(&info);
    GENERAL_NAMES_free(gens);
    X509_free(x);
    EVP_PKEY_free(key);
}

/* One format for every serial: even-length upper-case hex, leading zero kept (openssl x509
 * -serial). */
Test(certinfo, serial_hex_keeps_the_leading_zero)
{
    ASN1_INTEGER *i = ASN1_INTEGER_new();
    BIGNUM *bn = NULL;
    char buf[MTLS_SERIAL_HEX_MAX], small[5];

    cr_assert_not_null(i);
    cr_assert_str_eq(mtls_serial_hex(NULL, buf, sizeof(buf)), "?");
    ASN1_INTEGER_set(i, 0);
    cr_assert_str_eq(mtls_serial_hex(i, buf, sizeof(buf)), "00");
    ASN1_INTEGER_set(i, 0x08882C);
    cr_assert_str_eq(mtls_serial_hex(i, buf, sizeof(buf)), "08882C");
    ASN1_INTEGER_set(i, 0xFF);
    cr_assert_str_eq(mtls_serial_hex(i, buf, sizeof(buf)), "FF");
    ASN1_INTEGER_set(i, -0x0A);
    cr_assert_str_eq(mtls_serial_hex(i, buf, sizeof(buf)), "-0A");
    /* 16 bytes with a small top byte, as `mtls ca` draws them. */
    cr_assert_gt(BN_hex2bn(&bn, "0102030405060708090A0B0C0D0E0F10"), 0);
    cr_assert_not_null(BN_to_ASN1_INTEGER(bn, i));
    cr_assert_str_eq(mtls_serial_hex(i, buf, sizeof(buf)), "0102030405060708090A0B0C0D0E0F10");
    /* A short buffer gets whole bytes only. */
    cr_assert_str_eq(mtls_serial_hex(i, small, sizeof(small)), "0102");
    BN_free(bn);
    ASN1_INTEGER_free(i);
}
