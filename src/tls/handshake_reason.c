/*
 * Why a handshake failed, in words a person reads in the system log: which
 * certificate, issued by whom, and what was wrong with it (worded by pki's
 * one table of verification failures, mtls_verify_words()); or what the
 * client did (no certificate, plain HTTP, an alert about our certificate).
 * The alert this server sent comes from the same table, by verify code.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "mtls/pki.h"
#include "mtls/tls.h"
#include "server_internal.h"

/*
 * The sentence for what the verify callback saw: worded there, while the
 * CRL involved was still known; else (a failure known only by its code)
 * from the certificate's facts, with the same table.
 */
static char *describe_verify(const mtls_tls_verify_note *note, char *buf, size_t size)
{
    mtls_verify_failure f;
    char who[MTLS_NAME_MAX + 64];
    const char *subject = note->subject[0] ? note->subject : "(no subject)";

    if (note->reason[0] != '\0') {
        snprintf(buf, size, "%s", note->reason);
        return buf;
    }
    if (note->depth == 0)
        snprintf(who, sizeof(who), "client certificate '%s'", subject);
    else
        snprintf(who, sizeof(who), "CA certificate '%s' in the client's chain", subject);
    memset(&f, 0, sizeof(f));
    f.code = note->error;
    f.depth = note->depth;
    f.cert = who;
    f.issuer = note->issuer;
    f.serial = note->serial;
    f.not_before = note->not_before;
    f.not_after = note->not_after;
    f.purpose = "TLS client authentication";
    return mtls_verify_words(&f, buf, size);
}

static int is_tls13(SSL *ssl)
{
    return ssl != NULL && SSL_version(ssl) == TLS1_3_VERSION;
}

/* An alert the client sent about our certificate (or anything else). */
static char *describe_alert(int alert, char *buf, size_t size)
{
    const char *name = SSL_alert_desc_string_long(alert);

    switch (alert) {
    case SSL_AD_UNKNOWN_CA:
        snprintf(buf, size,
                 "the client does not trust the server certificate (it sent alert unknown_ca): "
                 "give the client the CA that signed the server certificate (curl --cacert)");
        break;
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_EXPIRED:
        snprintf(buf, size, "the client refused the server certificate (it sent alert %s)", name);
        break;
    default:
        snprintf(buf, size, "the client ended the handshake with alert %s", name);
        break;
    }
    return buf;
}

char *mtls_tls_handshake_reason(SSL *ssl, const mtls_tls_verify_note *note, int ssl_error,
                                int sys_errno, const char **alert, char *buf, size_t size)
{
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_REASON(e);
    const char *sent = NULL;

    if (size == 0)
        goto out;
    if (note != NULL && note->error != 0) {
        describe_verify(note, buf, size);
        sent = mtls_verify_alert(note->error, is_tls13(ssl));
        goto out;
    }
    if (ssl_error == SSL_ERROR_ZERO_RETURN ||
        (ssl_error == SSL_ERROR_SYSCALL && e == 0 && sys_errno == 0)) {
        snprintf(buf, size, "the client closed the connection during the handshake");
        goto out;
    }
    if (ssl_error == SSL_ERROR_SYSCALL && e == 0) {
        snprintf(buf, size, "the connection failed during the handshake: %s",
                 sys_errno == ECONNRESET ? "reset by the client" : strerror(sys_errno));
        goto out;
    }
    if (e == 0) {
        snprintf(buf, size, "the TLS handshake failed");
        goto out;
    }
    if (ERR_GET_LIB(e) == ERR_LIB_SSL) {
        if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
            describe_alert(reason - SSL_AD_REASON_OFFSET, buf, size);
            goto out;
        }
        switch (reason) {
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE: {
            mtls_verify_failure none;

            memset(&none, 0, sizeof(none));
            none.code = MTLS_VERIFY_NO_CERT;
            mtls_verify_words(&none, buf, size);
            sent = mtls_verify_alert(MTLS_VERIFY_NO_CERT, is_tls13(ssl));
            goto out;
        }
        case SSL_R_CERTIFICATE_VERIFY_FAILED: {
            mtls_tls_verify_note tmp;
            X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;

            memset(&tmp, 0, sizeof(tmp));
            tmp.error = ssl ? (int)SSL_get_verify_result(ssl) : 0;
            if (peer != NULL)
                mtls__srv_note_cert(&tmp, peer);
            describe_verify(&tmp, buf, size);
            sent = mtls_verify_alert(tmp.error, is_tls13(ssl));
            goto out;
        }
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST:
            snprintf(buf, size, "the client sent plain HTTP to the HTTPS port");
            goto out;
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_UNKNOWN_PROTOCOL:
            snprintf(buf, size,
                     "the client offers only protocol versions this server refuses (TLS 1.2 "
                     "and 1.3 only)");
            goto out;
        case SSL_R_WRONG_VERSION_NUMBER:
        case SSL_R_PACKET_LENGTH_TOO_LONG:
        case SSL_R_RECORD_LENGTH_MISMATCH:
            snprintf(buf, size, "the client did not speak TLS (%s)", ERR_reason_error_string(e));
            goto out;
        case SSL_R_NO_SHARED_CIPHER:
            snprintf(buf, size, "the client offers no cipher this server accepts");
            goto out;
        default:
            break;
        }
    }
    snprintf(buf, size, "the TLS handshake failed: %s",
             ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "unknown error");
out:
    if (alert != NULL)
        *alert = sent;
    ERR_clear_error();
    return buf;
}

const char *mtls_tls_denied_reason(SSL *ssl, const mtls_tls_verify_note *note, char *buf,
                                   size_t size)
{
    long result;

    if (SSL_get0_peer_certificate(ssl) == NULL) {
        mtls_verify_failure none;

        memset(&none, 0, sizeof(none));
        none.code = MTLS_VERIFY_NO_CERT;
        return mtls_verify_words(&none, buf, size);
    }
    if (note != NULL && note->error != 0)
        return describe_verify(note, buf, size);
    result = SSL_get_verify_result(ssl);
    if (result != X509_V_OK) {
        mtls_tls_verify_note tmp;

        memset(&tmp, 0, sizeof(tmp));
        tmp.error = (int)result;
        mtls__srv_note_cert(&tmp, SSL_get0_peer_certificate(ssl));
        return describe_verify(&tmp, buf, size);
    }
    return NULL;
}

int mtls_tls_refused_code(SSL *ssl, const mtls_tls_verify_note *note)
{
    long result;

    if (note != NULL && note->error != 0)
        return note->error;
    if (ssl == NULL || SSL_get0_peer_certificate(ssl) == NULL)
        return MTLS_VERIFY_NO_CERT;
    result = SSL_get_verify_result(ssl);
    return result != X509_V_OK ? (int)result : X509_V_ERR_UNSPECIFIED;
}
