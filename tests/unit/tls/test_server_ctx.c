/* src/tls server side: configuration errors name the file; alerts and reasons in words. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "mtls/pki.h"
#include "mtls/tls.h"

static mtls_tls_server_opts opts_for(const char *cert, const char *key, const char *ca)
{
    mtls_tls_server_opts o;

    memset(&o, 0, sizeof(o));
    o.cert_file = cert;
    o.key_file = key;
    o.client_ca_file = ca;
    return o;
}

Test(tls_server, missing_files_are_named)
{
    mtls_tls_server_opts o = opts_for("/nonexistent/server.crt", "k", "c");
    SSL_CTX *ctx = (SSL_CTX *)1;
    mtls_err err;

    mtls_err_clear(&err);
    cr_assert_eq(mtls_tls_server_ctx_new(&o, NULL, NULL, &ctx, &err), MTLS_E_NOTFOUND);
    cr_assert_null(ctx);
    cr_assert_str_eq(err.msg, "cannot read '/nonexistent/server.crt': no such file");
}

Test(tls_server, a_file_without_certificates_is_refused)
{
    char path[] = "/tmp/mtls-unit-XXXXXX";
    int fd = mkstemp(path);
    mtls_tls_server_opts o = opts_for(path, path, path);
    SSL_CTX *ctx = NULL;
    mtls_err err;

    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, "hello\n", 6), 6);
    close(fd);
    mtls_err_clear(&err);
    cr_assert_eq(mtls_tls_server_ctx_new(&o, NULL, NULL, &ctx, &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "server certificate: ") == err.msg, "%s", err.msg);
    cr_assert(strstr(err.msg, "is not a PEM certificate") != NULL, "%s", err.msg);
    cr_assert(strstr(err.msg, path) != NULL, "%s", err.msg);
    unlink(path);
}

Test(tls_server, verify_errors_map_to_the_alerts_openssl_sends)
{
    cr_assert_str_eq(mtls_verify_alert(X509_V_ERR_CERT_HAS_EXPIRED, 1), "certificate_expired");
    cr_assert_str_eq(mtls_verify_alert(X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, 1),
                     "unknown_ca");
    cr_assert_str_eq(mtls_verify_alert(X509_V_ERR_INVALID_PURPOSE, 1), "unsupported_certificate");
    cr_assert_str_eq(mtls_verify_alert(X509_V_ERR_CERT_REVOKED, 1), "certificate_revoked");
    /* OpenSSL sends unknown_ca when no CRL of the issuer is loaded, decrypt_error for a bad
     * signature. */
    cr_assert_str_eq(mtls_verify_alert(X509_V_ERR_UNABLE_TO_GET_CRL, 1), "unknown_ca");
    cr_assert_str_eq(mtls_verify_alert(X509_V_ERR_CERT_SIGNATURE_FAILURE, 1), "decrypt_error");
    cr_assert_str_eq(mtls_verify_alert(X509_V_ERR_KEYUSAGE_NO_CERTSIGN, 1), "certificate_unknown");
    cr_assert_str_eq(mtls_verify_alert(MTLS_VERIFY_NO_CERT, 1), "certificate_required");
    cr_assert_str_eq(mtls_verify_alert(MTLS_VERIFY_NO_CERT, 0), "handshake_failure");
    cr_assert_null(mtls_verify_alert(X509_V_OK, 1));
}

Test(tls_server, reasons_from_the_verify_note)
{
    mtls_tls_verify_note note;
    const char *alert = "unset";
    char buf[1024];

    memset(&note, 0, sizeof(note));
    note.error = X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;
    strcpy(note.subject, "CN=mallory");
    strcpy(note.issuer, "CN=other-ca");
    mtls_tls_handshake_reason(NULL, &note, SSL_ERROR_SSL, 0, &alert, buf, sizeof(buf));
    cr_assert_str_eq(buf, "issuer not trusted: client certificate 'CN=mallory' was issued by "
                          "'CN=other-ca', which is not a trusted CA");
    cr_assert_str_eq(alert, "unknown_ca");
    note.error = X509_V_ERR_CERT_REVOKED;
    note.depth = 1;
    strcpy(note.serial, "1F");
    mtls_tls_handshake_reason(NULL, &note, SSL_ERROR_SSL, 0, &alert, buf, sizeof(buf));
    cr_assert_str_eq(buf, "CA certificate 'CN=mallory' in the client's chain (serial 1F) has been "
                          "revoked by its CA 'CN=other-ca'");
    cr_assert_str_eq(alert, "certificate_revoked");
    note.depth = 0;
    note.error = X509_V_ERR_CERT_HAS_EXPIRED;
    note.not_after = 86400;
    mtls_tls_handshake_reason(NULL, &note, SSL_ERROR_SSL, 0, &alert, buf, sizeof(buf));
    cr_assert(strstr(buf, "expired on 1970-01-02 00:00:00 UTC") != NULL, "%s", buf);
    /* The sentence worded in the verify callback wins. */
    strcpy(note.reason, "worded while the CRL was known");
    mtls_tls_handshake_reason(NULL, &note, SSL_ERROR_SSL, 0, &alert, buf, sizeof(buf));
    cr_assert_str_eq(buf, "worded while the CRL was known");
    cr_assert_str_eq(alert, "certificate_expired");
    mtls_tls_handshake_reason(NULL, NULL, SSL_ERROR_SYSCALL, 0, &alert, buf, sizeof(buf));
    cr_assert_str_eq(buf, "the client closed the connection during the handshake");
    cr_assert_null(alert);
}

/* ---- the alert on the wire is the one mtls_verify_alert() names ---------------- */

static int forced_code;
static int alert_seen;

/* Stands in for X509_verify_cert: fails with forced_code, as a real check would. */
static int fail_with_forced_code(X509_STORE_CTX *store, void *arg)
{
    (void)arg;
    X509_STORE_CTX_set_error(store, forced_code);
    return 0;
}

static void note_alert(const SSL *ssl, int where, int ret)
{
    (void)ssl;
    if (where & SSL_CB_READ_ALERT)
        alert_seen = ret & 0xff;
}

static void self_signed(EVP_PKEY **key, X509 **cert, const char *cn)
{
    *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    *cert = X509_new();
    cr_assert(*key != NULL && *cert != NULL);
    ASN1_INTEGER_set(X509_get_serialNumber(*cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(*cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(*cert), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(*cert), "CN", MBSTRING_UTF8,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(*cert, X509_get_subject_name(*cert));
    X509_set_pubkey(*cert, *key);
    cr_assert_gt(X509_sign(*cert, *key, EVP_sha256()), 0);
}

/* "unknown CA" -> "unknown_ca": OpenSSL's long alert name in the form the logs use. */
static void alert_name(int alert, char *buf, size_t size)
{
    /* OpenSSL 3.0 has no long name for TLS 1.3's certificate_required (116). */
    const char *s = alert == 116 ? "certificate required" : SSL_alert_desc_string_long(alert);
    size_t i = 0;

    for (; s[i] != '\0' && i + 1 < size; i++)
        buf[i] = s[i] == ' ' ? '_' : (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    buf[i] = '\0';
}

/* One handshake in memory (client with a certificate unless !with_cert); the alert the client got.
 */
static int handshake_alert(SSL_CTX *server_ctx, SSL_CTX *client_ctx, int version)
{
    SSL *server = SSL_new(server_ctx), *client = SSL_new(client_ctx);
    BIO *a = NULL, *b = NULL;
    char byte;

    cr_assert(server != NULL && client != NULL && BIO_new_bio_pair(&a, 0, &b, 0) == 1);
    SSL_set_bio(client, a, a);
    SSL_set_bio(server, b, b);
    SSL_set_min_proto_version(client, version);
    SSL_set_max_proto_version(client, version);
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);
    alert_seen = -1;
    for (int i = 0; i < 20 && alert_seen < 0; i++) {
        if (!SSL_is_init_finished(client))
            (void)SSL_do_handshake(client);
        else
            (void)SSL_read(client, &byte, 1);
        (void)SSL_do_handshake(server);
    }
    ERR_clear_error();
    SSL_free(client);
    SSL_free(server);
    return alert_seen;
}

Test(tls_server, the_logged_alert_is_the_one_openssl_sends_for_each_verify_code)
{
    static const int codes[] = {
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
        X509_V_ERR_CERT_UNTRUSTED,
        X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
        X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
        X509_V_ERR_INVALID_CA,
        X509_V_ERR_PATH_LENGTH_EXCEEDED,
        X509_V_ERR_CERT_CHAIN_TOO_LONG,
        X509_V_ERR_CERT_HAS_EXPIRED,
        X509_V_ERR_CERT_NOT_YET_VALID,
        X509_V_ERR_INVALID_PURPOSE,
        X509_V_ERR_HOSTNAME_MISMATCH,
        X509_V_ERR_IP_ADDRESS_MISMATCH,
        X509_V_ERR_CERT_SIGNATURE_FAILURE,
        X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE,
        X509_V_ERR_CERT_REVOKED,
        X509_V_ERR_UNABLE_TO_GET_CRL,
        X509_V_ERR_CRL_HAS_EXPIRED,
        X509_V_ERR_CRL_NOT_YET_VALID,
        X509_V_ERR_CRL_SIGNATURE_FAILURE,
        X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER,
        X509_V_ERR_KEYUSAGE_NO_CERTSIGN,
        X509_V_ERR_CERT_REJECTED,
        X509_V_ERR_EE_KEY_TOO_SMALL,
        X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE,
    };
    EVP_PKEY *skey, *ckey;
    X509 *scert, *ccert;
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
    char got[64];

    self_signed(&skey, &scert, "server");
    self_signed(&ckey, &ccert, "client");
    cr_assert(SSL_CTX_use_certificate(sctx, scert) == 1 && SSL_CTX_use_PrivateKey(sctx, skey) == 1);
    cr_assert(SSL_CTX_use_certificate(cctx, ccert) == 1 && SSL_CTX_use_PrivateKey(cctx, ckey) == 1);
    SSL_CTX_set_verify(sctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_cert_verify_callback(sctx, fail_with_forced_code, NULL);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_info_callback(cctx, note_alert);
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        forced_code = codes[i];
        alert_name(handshake_alert(sctx, cctx, TLS1_2_VERSION), got, sizeof(got));
        cr_assert_str_eq(got, mtls_verify_alert(codes[i], 0), "verify code %d", codes[i]);
    }
    /* No certificate at all: the alert depends on the version. */
    SSL_CTX_free(cctx);
    cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_info_callback(cctx, note_alert);
    alert_name(handshake_alert(sctx, cctx, TLS1_2_VERSION), got, sizeof(got));
    cr_assert_str_eq(got, mtls_verify_alert(MTLS_VERIFY_NO_CERT, 0));
    alert_name(handshake_alert(sctx, cctx, TLS1_3_VERSION), got, sizeof(got));
    cr_assert_str_eq(got, mtls_verify_alert(MTLS_VERIFY_NO_CERT, 1));
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    X509_free(scert);
    X509_free(ccert);
    EVP_PKEY_free(skey);
    EVP_PKEY_free(ckey);
}
