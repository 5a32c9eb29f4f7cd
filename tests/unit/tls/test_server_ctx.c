/* src/tls server side: configuration errors name the file; alerts and reasons in words. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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
