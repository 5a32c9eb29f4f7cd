/* src/tls server side: configuration errors name the file; alerts and reasons in words. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

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
    cr_assert_str_eq(mtls_tls_alert_for_verify_error(X509_V_ERR_CERT_HAS_EXPIRED),
                     "certificate_expired");
    cr_assert_str_eq(mtls_tls_alert_for_verify_error(X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
                     "unknown_ca");
    cr_assert_str_eq(mtls_tls_alert_for_verify_error(X509_V_ERR_INVALID_PURPOSE),
                     "unsupported_certificate");
    cr_assert_str_eq(mtls_tls_alert_for_verify_error(X509_V_ERR_CERT_REVOKED),
                     "certificate_revoked");
}

Test(tls_server, reasons_from_the_verify_note)
{
    mtls_tls_verify_note note;
    char buf[1024];

    memset(&note, 0, sizeof(note));
    note.error = X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;
    strcpy(note.subject, "CN=mallory");
    strcpy(note.issuer, "CN=other-ca");
    mtls_tls_handshake_reason(NULL, &note, SSL_ERROR_SSL, 0, buf, sizeof(buf));
    cr_assert_str_eq(buf, "client certificate CN=mallory issued by CN=other-ca is not signed by "
                          "a trusted CA");
    note.error = X509_V_ERR_CERT_REVOKED;
    strcpy(note.serial, "1F");
    mtls_tls_handshake_reason(NULL, &note, SSL_ERROR_SSL, 0, buf, sizeof(buf));
    cr_assert(strstr(buf, "is revoked (serial 1F)") != NULL, "%s", buf);
    note.error = X509_V_ERR_CERT_HAS_EXPIRED;
    note.not_after = 0;
    mtls_tls_handshake_reason(NULL, &note, SSL_ERROR_SSL, 0, buf, sizeof(buf));
    cr_assert(strstr(buf, "expired on 1970-01-01 00:00:00 UTC") != NULL, "%s", buf);
    mtls_tls_handshake_reason(NULL, NULL, SSL_ERROR_SYSCALL, 0, buf, sizeof(buf));
    cr_assert_str_eq(buf, "the client closed the connection during the handshake");
}
