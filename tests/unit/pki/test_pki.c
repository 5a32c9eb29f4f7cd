#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/x509v3.h>

#include "mtls/certinfo.h"
#include "mtls/pki.h"

static char dir[] = "/tmp/mtls-pki-test-XXXXXX";

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static char *in_dir(const char *name)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];

    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

TestSuite(pki, .init = setup, .fini = teardown);

Test(pki, sans_are_typed_and_checked)
{
    GENERAL_NAMES *gens = NULL;
    mtls_err err;

    cr_assert_eq(mtls_san_add(&gens, "localhost", &err), 0);
    cr_assert_eq(mtls_san_add(&gens, "127.0.0.1", &err), 0);
    cr_assert_eq(mtls_san_add(&gens, "::1", &err), 0);
    cr_assert_eq(mtls_san_add(&gens, "DNS:*.example.test", &err), 0);
    cr_assert_eq(mtls_san_add(&gens, "email:a@example.test", &err), 0);
    cr_assert_eq(mtls_san_add(&gens, "URI:spiffe://example/x", &err), 0);
    cr_assert_eq(mtls_san_add(&gens, "localhost", &err), 0); /* duplicate: kept once */
    cr_assert_eq(sk_GENERAL_NAME_num(gens), 6);
    cr_assert_eq(sk_GENERAL_NAME_value(gens, 0)->type, GEN_DNS);
    cr_assert_eq(sk_GENERAL_NAME_value(gens, 1)->type, GEN_IPADD);
    cr_assert_eq(sk_GENERAL_NAME_value(gens, 2)->type, GEN_IPADD);
    cr_assert_eq(mtls_san_add(&gens, "bad name", &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "'bad name'") != NULL, "%s", err.msg);
    cr_assert_eq(mtls_san_add(&gens, "IP:300.1.1.1", &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_san_add(&gens, "a.*.test", &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_san_add(&gens, "-a.test", &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_san_add(&gens, "a..test", &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_san_add(&gens, "email:nobody", &err), MTLS_E_INVALID);
    cr_assert_eq(sk_GENERAL_NAME_num(gens), 6);
    GENERAL_NAMES_free(gens);
}

Test(pki, common_names)
{
    mtls_err err;
    char long_cn[80];

    cr_assert_eq(mtls_cn_check("localclient", &err), 0);
    cr_assert_eq(mtls_cn_check("日本語の名前", &err), 0);
    cr_assert_eq(mtls_cn_check("", &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_cn_check("a\nb", &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_cn_check("\xff\xfe", &err), MTLS_E_INVALID);
    memset(long_cn, 'a', 65);
    long_cn[65] = '\0';
    cr_assert_eq(mtls_cn_check(long_cn, &err), MTLS_E_INVALID);
}

Test(pki, key_types_and_encrypted_pem_roundtrip)
{
    EVP_PKEY *key = NULL, *back = NULL;
    char *pem = NULL, desc[32];
    size_t len = 0;
    mtls_err err;
    mtls_key_type t;

    cr_assert_eq(mtls_key_type_parse("rsa", &t, &err), 0);
    cr_assert_eq(t, MTLS_KEY_RSA);
    cr_assert_eq(mtls_key_type_parse("dsa", &t, &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_key_generate(MTLS_KEY_EC, 1024, &key, &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_key_generate(MTLS_KEY_ED25519, 0, &key, &err), 0);
    cr_assert_str_eq(mtls_key_describe(key, desc, sizeof(desc)), "Ed25519");
    EVP_PKEY_free(key);
    cr_assert_eq(mtls_key_generate(MTLS_KEY_EC, 0, &key, &err), 0);
    cr_assert_str_eq(mtls_key_describe(key, desc, sizeof(desc)), "EC P-256");
    cr_assert_eq(mtls_key_to_pem(key, "s3cret", &pem, &len, &err), 0);
    cr_assert(strstr(pem, "ENCRYPTED PRIVATE KEY") != NULL);
    cr_assert_eq(mtls_file_write_atomic(in_dir("k.pem"), pem, len, 0600, 0, &err), 0);
    cr_assert_eq(mtls_key_load(in_dir("k.pem"), NULL, &back, &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "is encrypted") != NULL, "%s", err.msg);
    cr_assert_eq(mtls_key_load(in_dir("k.pem"), "wrong", &back, &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "wrong password") != NULL, "%s", err.msg);
    cr_assert_eq(mtls_key_load(in_dir("k.pem"), "s3cret", &back, &err), 0);
    cr_assert_eq(EVP_PKEY_eq(key, back), 1);
    mtls_free_secret(pem, len);
    EVP_PKEY_free(back);
    EVP_PKEY_free(key);
}

Test(pki, csr_roundtrip_and_signature_check)
{
    EVP_PKEY *key = NULL;
    X509_REQ *req = NULL;
    GENERAL_NAMES *sans = NULL, *back;
    mtls_err err;

    cr_assert_eq(mtls_key_generate(MTLS_KEY_EC, 0, &key, &err), 0);
    cr_assert_eq(mtls_san_add(&sans, "srv.test", &err), 0);
    cr_assert_eq(mtls_csr_create(key, "srv.test", sans, &req, &err), 0);
    cr_assert_eq(mtls_csr_check_signature(req, "x.csr", &err), 0);
    back = mtls_csr_sans(req);
    cr_assert_not_null(back);
    cr_assert_eq(sk_GENERAL_NAME_num(back), 1);
    GENERAL_NAMES_free(back);
    /* Changing the subject after signing breaks the signature. */
    X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "O", MBSTRING_ASC,
                               (const unsigned char *)"Evil", -1, -1, 0);
    X509_REQ_set_subject_name(req, X509_REQ_get_subject_name(req));
    cr_assert_eq(mtls_csr_check_signature(req, "x.csr", &err), MTLS_E_VERIFY);
    cr_assert(strstr(err.msg, "CSR 'x.csr' has a bad signature") != NULL, "%s", err.msg);
    X509_REQ_free(req);
    GENERAL_NAMES_free(sans);
    EVP_PKEY_free(key);
}

/* A CA written to disk under dir/ca and opened again. */
static mtls_ca *make_ca(int days)
{
    mtls_ca_opts opts = {.cn = "Unit CA", .days = days, .key_type = MTLS_KEY_EC, .bits = 0};
    mtls_ca *ca = NULL, *opened = NULL;
    mtls_txn txn;
    mtls_err err;

    mtls_txn_init(&txn);
    cr_assert_eq(mtls_ca_generate(in_dir("ca"), &opts, &ca, &err), 0, "%s", err.msg);
    cr_assert_eq(mtls_ca_stage(ca, &txn, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(mtls_txn_commit(&txn, 0, &err), 0, "%s", err.msg);
    mtls_txn_release(&txn);
    mtls_ca_free(ca);
    cr_assert_eq(mtls_ca_open(in_dir("ca.crt"), NULL, &opened, &err), 0, "%s", err.msg);
    return opened;
}

static X509 *issue_one(mtls_ca *ca, const char *cn, mtls_profile profile, const char *san)
{
    EVP_PKEY *key = NULL;
    X509_NAME *name = NULL;
    GENERAL_NAMES *sans = NULL;
    X509 *cert = NULL;
    mtls_issue issue;
    mtls_err err;

    cr_assert_eq(mtls_key_generate(MTLS_KEY_EC, 0, &key, &err), 0);
    cr_assert_eq(mtls_name_from_cn(cn, &name, &err), 0);
    if (san != NULL)
        cr_assert_eq(mtls_san_add(&sans, san, &err), 0);
    memset(&issue, 0, sizeof(issue));
    issue.profile = profile;
    issue.subject = name;
    issue.pubkey = key;
    issue.sans = sans;
    cr_assert_eq(mtls_ca_issue(ca, &issue, NULL, NULL, &cert, NULL, &err), 0, "%s", err.msg);
    GENERAL_NAMES_free(sans);
    X509_NAME_free(name);
    EVP_PKEY_free(key);
    return cert;
}

Test(pki, ca_issues_with_profile_extensions_and_records)
{
    mtls_ca *ca = make_ca(0);
    X509 *cert = issue_one(ca, "srv.test", MTLS_PROFILE_SERVER, NULL);
    const mtls_ca_record *recs;
    mtls_cert_info info;
    size_t n;
    mtls_err err;
    char copy[300];

    cr_assert_eq(mtls_cert_info_init(&info, cert, &err), 0);
    cr_assert_eq(info.is_ca, 0);
    cr_assert_str_eq(info.ext_key_usage, "TLS Web Server Authentication");
    cr_assert_str_eq(info.key_usage, "Digital Signature");
    cr_assert_eq(info.n_sans, 1, "a server certificate gets its CN as a SAN");
    cr_assert_str_eq(info.sans[0].value, "srv.test");
    cr_assert(info.not_before <= time(NULL) - MTLS_SKEW_SECONDS + 5);
    recs = mtls_ca_records(ca, &n);
    cr_assert_eq(n, 1);
    cr_assert_eq(recs[0].status, 'V');
    cr_assert_str_eq(recs[0].subject, "/CN=srv.test");
    cr_assert_eq(strlen(recs[0].expiry), 13);
    snprintf(copy, sizeof(copy), "%s/ca.certs/%s.pem", dir, recs[0].serial);
    cr_assert_eq(access(copy, F_OK), 0, "no copy at %s", copy);
    mtls_cert_info_release(&info);
    X509_free(cert);
    mtls_ca_free(ca);
}

static int refuse(void *arg, X509 *cert, mtls_err *err)
{
    (void)arg;
    (void)cert;
    return mtls_err_set(err, MTLS_E_EXISTS, "refused");
}

Test(pki, failed_delivery_leaves_the_old_inventory)
{
    mtls_ca *ca = make_ca(0);
    X509 *first = issue_one(ca, "a", MTLS_PROFILE_CLIENT, NULL), *cert = NULL;
    EVP_PKEY *key = NULL;
    X509_NAME *name = NULL;
    unsigned char *before = NULL, *after = NULL;
    size_t before_len, after_len, n;
    mtls_issue issue;
    mtls_err err;

    cr_assert_eq(mtls_file_read(in_dir("ca.index"), 1 << 20, &before, &before_len, &err), 0);
    cr_assert_eq(mtls_key_generate(MTLS_KEY_EC, 0, &key, &err), 0);
    cr_assert_eq(mtls_name_from_cn("b", &name, &err), 0);
    memset(&issue, 0, sizeof(issue));
    issue.profile = MTLS_PROFILE_CLIENT;
    issue.subject = name;
    issue.pubkey = key;
    cr_assert_eq(mtls_ca_issue(ca, &issue, refuse, NULL, &cert, NULL, &err), MTLS_E_EXISTS);
    cr_assert_null(cert);
    cr_assert_eq(mtls_file_read(in_dir("ca.index"), 1 << 20, &after, &after_len, &err), 0);
    cr_assert_eq(before_len, after_len);
    cr_assert_eq(memcmp(before, after, before_len), 0);
    (void)mtls_ca_records(ca, &n);
    cr_assert_eq(n, 1);
    free(before);
    free(after);
    X509_NAME_free(name);
    EVP_PKEY_free(key);
    X509_free(first);
    mtls_ca_free(ca);
}

Test(pki, leaf_is_clamped_to_the_ca)
{
    mtls_ca *ca = make_ca(3);
    EVP_PKEY *key = NULL;
    X509_NAME *name = NULL;
    X509 *cert = NULL;
    mtls_issue issue;
    mtls_err err;
    int clamped = 0;

    cr_assert_eq(mtls_key_generate(MTLS_KEY_EC, 0, &key, &err), 0);
    cr_assert_eq(mtls_name_from_cn("c", &name, &err), 0);
    memset(&issue, 0, sizeof(issue));
    issue.profile = MTLS_PROFILE_CLIENT;
    issue.subject = name;
    issue.pubkey = key;
    issue.days = 30;
    cr_assert_eq(mtls_ca_issue(ca, &issue, NULL, NULL, &cert, &clamped, &err), 0);
    cr_assert_eq(clamped, 1);
    cr_assert_eq(ASN1_TIME_compare(X509_get0_notAfter(cert), X509_get0_notAfter(mtls_ca_cert(ca))),
                 0);
    X509_free(cert);
    X509_NAME_free(name);
    EVP_PKEY_free(key);
    mtls_ca_free(ca);
}

Test(pki, verify_sentences)
{
    mtls_ca *ca = make_ca(0);
    X509 *srv = issue_one(ca, "srv", MTLS_PROFILE_SERVER, "srv.test");
    STACK_OF(X509) *trusted = sk_X509_new_null();
    mtls_verify_opts opts;
    mtls_err err;
    char when[48];

    sk_X509_push(trusted, mtls_ca_cert(ca));
    memset(&opts, 0, sizeof(opts));
    opts.purpose = MTLS_PROFILE_SERVER;
    opts.host = "srv.test";
    cr_assert_eq(mtls_verify(srv, NULL, trusted, &opts, &err), 0, "%s", err.msg);
    opts.purpose = MTLS_PROFILE_CLIENT;
    cr_assert_eq(mtls_verify(srv, NULL, trusted, &opts, &err), MTLS_E_VERIFY);
    cr_assert(strstr(err.msg, "wrong purpose") != NULL, "%s", err.msg);
    opts.purpose = 0;
    opts.host = "10.0.0.1";
    cr_assert_eq(mtls_verify(srv, NULL, trusted, &opts, &err), MTLS_E_VERIFY);
    cr_assert(strstr(err.msg, "host name '10.0.0.1' is not in the SANs") != NULL, "%s", err.msg);
    opts.host = NULL;
    opts.at = time(NULL) + 400L * 86400;
    cr_assert_eq(mtls_verify(srv, NULL, trusted, &opts, &err), MTLS_E_VERIFY);
    cr_assert(strstr(err.msg, "certificate 'CN=srv' expired on ") != NULL, "%s", err.msg);
    opts.at = time(NULL) - 86400;
    cr_assert_eq(mtls_verify(srv, NULL, trusted, &opts, &err), MTLS_E_VERIFY);
    cr_assert(strstr(err.msg, "is not valid yet") != NULL, "%s", err.msg);
    opts.at = 0;
    (void)sk_X509_pop(trusted);
    cr_assert_eq(mtls_verify(srv, NULL, trusted, &opts, &err), MTLS_E_VERIFY);
    cr_assert(strstr(err.msg, "issuer not trusted") != NULL, "%s", err.msg);
    cr_assert_str_eq(mtls_time_human(0, when, sizeof(when)), "1970-01-01 00:00:00 UTC");
    sk_X509_free(trusted);
    X509_free(srv);
    mtls_ca_free(ca);
}

Test(pki, pem_errors_say_what_the_file_holds)
{
    X509 *cert = NULL;
    X509_REQ *req = NULL;
    mtls_err err;
    char label[64];

    cr_assert_eq(
        mtls_file_write_atomic(in_dir("k"), "-----BEGIN PRIVATE KEY-----\nAA\n", 31, 0600, 0, &err),
        0);
    cr_assert_eq(mtls_cert_load(in_dir("k"), &cert, &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "holds a private key, not a certificate") != NULL, "%s", err.msg);
    cr_assert_eq(mtls_csr_load(in_dir("missing"), &req, &err), MTLS_E_NOTFOUND);
    cr_assert_str_eq(mtls_pem_label("x\n-----BEGIN X509 CRL-----\n", label, sizeof(label)),
                     "X509 CRL");
    cr_assert_str_eq(mtls_pem_label("nothing", label, sizeof(label)), "");
}

Test(pki, serials_are_normalised)
{
    char out[84];
    mtls_err err;

    cr_assert_eq(mtls_serial_normalize("serial=0a:1b:2c", out, sizeof(out), &err), 0);
    cr_assert_str_eq(out, "0A1B2C");
    cr_assert_eq(mtls_serial_normalize("a1b", out, sizeof(out), &err), 0);
    cr_assert_str_eq(out, "0A1B");
    cr_assert_eq(mtls_serial_normalize("xyz", out, sizeof(out), &err), MTLS_E_INVALID);
    cr_assert_eq(mtls_serial_normalize("", out, sizeof(out), &err), MTLS_E_INVALID);
}

Test(pki, revoke_then_crl_lists_it_with_reason_and_numbers_grow)
{
    mtls_ca *ca = make_ca(0);
    X509 *a = issue_one(ca, "a", MTLS_PROFILE_CLIENT, NULL);
    X509 *b = issue_one(ca, "b", MTLS_PROFILE_CLIENT, NULL);
    X509_CRL *crl = NULL;
    X509_REVOKED *found = NULL;
    mtls_ca_record rec;
    mtls_err err;
    long number = 0;
    int reason = 0;

    cr_assert_eq(mtls_crl_reason_parse("KEYCOMPROMISE", &reason, &err), 0);
    cr_assert_eq(reason, 1);
    cr_assert_eq(mtls_ca_revoke(ca, NULL, a, reason, &rec, &err), 0, "%s", err.msg);
    cr_assert_eq(rec.status, 'R');
    cr_assert(strstr(rec.revoked, ",keyCompromise") != NULL, "%s", rec.revoked);
    free(rec.subject);
    cr_assert_eq(mtls_ca_revoke(ca, NULL, a, reason, NULL, &err), MTLS_E_EXISTS);
    cr_assert_eq(mtls_ca_revoke(ca, "DEADBEEF", NULL, reason, NULL, &err), MTLS_E_NOTFOUND);
    cr_assert_eq(mtls_ca_crl(ca, 30, &crl, &number, &err), 0, "%s", err.msg);
    cr_assert_eq(number, 1);
    cr_assert_eq(X509_CRL_verify(crl, X509_get0_pubkey(mtls_ca_cert(ca))), 1);
    cr_assert_eq(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 1);
    cr_assert_eq(X509_CRL_get0_by_serial(crl, &found, X509_get0_serialNumber(a)), 1);
    cr_assert_eq(X509_CRL_get0_by_serial(crl, &found, X509_get0_serialNumber(b)), 0);
    X509_CRL_free(crl);
    cr_assert_eq(mtls_ca_crl(ca, 30, &crl, &number, &err), 0);
    cr_assert_eq(number, 2);
    X509_CRL_free(crl);
    cr_assert_eq(mtls_ca_crl(ca, 0, &crl, &number, &err), MTLS_E_INVALID);
    X509_free(a);
    X509_free(b);
    mtls_ca_free(ca);
}

Test(pki, p12_needs_a_password_and_a_matching_key)
{
    mtls_ca *ca = make_ca(0);
    X509 *a = issue_one(ca, "a", MTLS_PROFILE_CLIENT, NULL);
    unsigned char *der = NULL;
    size_t len = 0;
    mtls_err err;

    cr_assert_eq(mtls_p12_create(a, mtls_ca_key(ca), NULL, "pw", 0, &der, &len, &err),
                 MTLS_E_INVALID);
    cr_assert_eq(mtls_p12_create(mtls_ca_cert(ca), mtls_ca_key(ca), NULL, "", 0, &der, &len, &err),
                 MTLS_E_INVALID);
    cr_assert_eq(
        mtls_p12_create(mtls_ca_cert(ca), mtls_ca_key(ca), NULL, "pw", 1, &der, &len, &err), 0);
    cr_assert(len > 100);
    OPENSSL_free(der);
    X509_free(a);
    mtls_ca_free(ca);
}

Test(pki, verify_with_a_crl_names_the_revoked_serial_and_an_expired_crl)
{
    mtls_ca *ca = make_ca(0);
    X509 *a = issue_one(ca, "a", MTLS_PROFILE_CLIENT, NULL);
    X509 *b = issue_one(ca, "b", MTLS_PROFILE_CLIENT, NULL);
    STACK_OF(X509) *trusted = sk_X509_new_null();
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    X509_CRL *crl = NULL;
    mtls_verify_opts opts;
    mtls_cert_info info;
    mtls_err err;
    long number;

    sk_X509_push(trusted, mtls_ca_cert(ca));
    memset(&opts, 0, sizeof(opts));
    opts.crls = crls;
    cr_assert_eq(mtls_verify(b, NULL, trusted, &opts, &err), MTLS_E_VERIFY);
    cr_assert(strstr(err.msg, "no CRL of 'CN=Unit CA' is loaded") != NULL, "%s", err.msg);
    cr_assert_eq(mtls_ca_revoke(ca, NULL, a, MTLS_REASON_NONE, NULL, &err), 0);
    cr_assert_eq(mtls_ca_crl(ca, 1, &crl, &number, &err), 0);
    sk_X509_CRL_push(crls, crl);
    cr_assert_eq(mtls_verify(b, NULL, trusted, &opts, &err), 0, "%s", err.msg);
    cr_assert_eq(mtls_verify(a, NULL, trusted, &opts, &err), MTLS_E_VERIFY);
    cr_assert_eq(mtls_cert_info_init(&info, a, NULL), 0);
    cr_assert(strstr(err.msg, info.serial_hex) != NULL, "%s", err.msg);
    cr_assert(strstr(err.msg, "was revoked by its CA 'CN=Unit CA' on ") != NULL, "%s", err.msg);
    cr_assert(strstr(err.msg, " UTC (no reason given)") != NULL, "%s", err.msg);
    mtls_cert_info_release(&info);
    opts.at = time(NULL) + 3 * 86400;
    cr_assert_eq(mtls_verify(b, NULL, trusted, &opts, &err), MTLS_E_VERIFY);
    cr_assert(strstr(err.msg, "the CRL of 'CN=Unit CA' expired on ") != NULL, "%s", err.msg);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    sk_X509_free(trusted);
    X509_free(a);
    X509_free(b);
    mtls_ca_free(ca);
}

/* One table of reasons: the sentence and the alert come from the verify code. */
Test(pki, verify_words_from_the_table)
{
    mtls_verify_failure f;
    char buf[512];

    memset(&f, 0, sizeof(f));
    f.code = X509_V_ERR_CERT_REVOKED;
    f.depth = 1;
    f.cert = "CA certificate 'CN=inter'";
    f.issuer = "CN=root";
    f.serial = "08AB";
    mtls_verify_words(&f, buf, sizeof(buf));
    cr_assert_str_eq(buf, "CA certificate 'CN=inter' (serial 08AB) has been revoked by its CA "
                          "'CN=root'");
    f.revoked_at = 86400;
    f.revoked_why = "keyCompromise";
    mtls_verify_words(&f, buf, sizeof(buf));
    cr_assert_str_eq(buf, "CA certificate 'CN=inter' (serial 08AB) was revoked by its CA 'CN=root' "
                          "on 1970-01-02 00:00:00 UTC (keyCompromise)");
    cr_assert_str_eq(mtls_verify_alert(f.code, 1), "certificate_revoked");
    f.code = X509_V_ERR_HOSTNAME_MISMATCH;
    f.host = "other.test";
    f.sans = "";
    mtls_verify_words(&f, buf, sizeof(buf));
    cr_assert_str_eq(buf, "host name 'other.test' is not in the SANs of CA certificate 'CN=inter' "
                          "(it has none)");
    /* A code without a row: OpenSSL's words, never an empty sentence. */
    f.code = X509_V_ERR_KEYUSAGE_NO_CERTSIGN;
    mtls_verify_words(&f, buf, sizeof(buf));
    cr_assert_str_eq(buf, "CA certificate 'CN=inter' did not verify: key usage does not include "
                          "certificate signing");
    f.code = MTLS_VERIFY_NO_CERT;
    mtls_verify_words(&f, buf, sizeof(buf));
    cr_assert_str_eq(buf, "no client certificate was sent");
    /* Truncation keeps a terminated string. */
    f.code = X509_V_ERR_CERT_REVOKED;
    mtls_verify_words(&f, buf, 10);
    cr_assert_str_eq(buf, "CA certif");
}

/* Metrics group refusals by verify code from the same table: a small, fixed set of labels. */
Test(pki, verify_reason_labels_from_the_table)
{
    cr_assert_str_eq(mtls_verify_reason_label(mtls_verify_reason_of(MTLS_VERIFY_NO_CERT)),
                     "no_certificate");
    cr_assert_str_eq(mtls_verify_reason_label(mtls_verify_reason_of(X509_V_ERR_CERT_HAS_EXPIRED)),
                     "expired");
    cr_assert_str_eq(mtls_verify_reason_label(mtls_verify_reason_of(X509_V_ERR_CERT_REVOKED)),
                     "revoked");
    cr_assert_str_eq(mtls_verify_reason_label(mtls_verify_reason_of(X509_V_ERR_INVALID_PURPOSE)),
                     "wrong_purpose");
    cr_assert_str_eq(mtls_verify_reason_label(
                         mtls_verify_reason_of(X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY)),
                     "unknown_ca");
    cr_assert_str_eq(mtls_verify_reason_label(mtls_verify_reason_of(X509_V_ERR_EE_KEY_TOO_SMALL)),
                     "weak");
    cr_assert_str_eq(
        mtls_verify_reason_label(mtls_verify_reason_of(X509_V_ERR_KEYUSAGE_NO_CERTSIGN)), "other");
    /* Every label is distinct and a valid Prometheus label value without escaping. */
    for (int i = 0; i < MTLS_VERIFY_REASONS; i++) {
        const char *a = mtls_verify_reason_label((enum mtls_verify_reason)i);

        cr_assert(a[0] != '\0' && strspn(a, "abcdefghijklmnopqrstuvwxyz_") == strlen(a), "%s", a);
        for (int k = 0; k < i; k++)
            cr_assert_str_neq(a, mtls_verify_reason_label((enum mtls_verify_reason)k));
    }
}
