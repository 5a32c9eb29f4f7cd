/*
 * Why a handshake failed, in words a person reads in the system log: which
 * certificate, issued by whom, and what was wrong with it; or what the
 * client did (no certificate, plain HTTP, an alert about our certificate).
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

const char *mtls_tls_alert_for_verify_error(int e)
{
    switch (e) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CRL_HAS_EXPIRED:
        return "certificate_expired";
    case X509_V_ERR_CERT_REVOKED:
        return "certificate_revoked";
    case X509_V_ERR_INVALID_PURPOSE:
        return "unsupported_certificate";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_INVALID_CA:
        return "unknown_ca";
    case X509_V_ERR_CERT_NOT_YET_VALID:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
        return "bad_certificate";
    default:
        return "certificate_unknown";
    }
}

/* "client certificate CN=x issued by CN=y is ..." from what the verify callback saw. */
static char *describe_verify(const mtls_tls_verify_note *note, char *buf, size_t size)
{
    char who[MTLS_NAME_MAX * 2 + 64];
    char when[40];
    const char *subject = note->subject[0] ? note->subject : "(no subject)";
    const char *issuer = note->issuer[0] ? note->issuer : "(no issuer)";

    if (note->depth == 0)
        snprintf(who, sizeof(who), "client certificate %s issued by %s", subject, issuer);
    else
        snprintf(who, sizeof(who), "CA certificate %s (issued by %s) in the client's chain",
                 subject, issuer);
    switch (note->error) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
        snprintf(buf, size, "%s is not signed by a trusted CA", who);
        break;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        snprintf(buf, size,
                 "client certificate %s is self-signed and is not a trusted CA (a name alone "
                 "proves nothing)",
                 subject);
        break;
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        snprintf(buf, size, "%s chains to the self-signed %s, which is not a trusted CA", who,
                 subject);
        break;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        snprintf(buf, size,
                 "%s has a signature that does not verify with that CA's key (forged, or "
                 "signed by another CA with the same name)",
                 who);
        break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        snprintf(buf, size, "%s expired on %s", who,
                 mtls_time_human(note->not_after, when, sizeof(when)));
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        snprintf(buf, size, "%s is not valid until %s", who,
                 mtls_time_human(note->not_before, when, sizeof(when)));
        break;
    case X509_V_ERR_INVALID_PURPOSE:
        snprintf(buf, size,
                 "%s is not meant for client authentication (its extended key usage lacks "
                 "clientAuth)",
                 who);
        break;
    case X509_V_ERR_CERT_REVOKED:
        snprintf(buf, size, "%s is revoked (serial %s)", who, note->serial);
        break;
    case X509_V_ERR_UNABLE_TO_GET_CRL:
        snprintf(buf, size, "%s cannot be checked: no CRL from %s is loaded", who, issuer);
        break;
    case X509_V_ERR_CRL_HAS_EXPIRED:
        snprintf(buf, size, "%s cannot be checked: the CRL from %s has expired", who, issuer);
        break;
    case X509_V_ERR_CERT_CHAIN_TOO_LONG:
        snprintf(buf, size, "%s: the client's chain is longer than the allowed depth", who);
        break;
    case X509_V_ERR_INVALID_CA:
        snprintf(buf, size, "%s: a certificate in the chain is not a CA", who);
        break;
    default:
        snprintf(buf, size, "%s failed verification: %s", who,
                 X509_verify_cert_error_string(note->error));
        break;
    }
    return buf;
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
                                int sys_errno, char *buf, size_t size)
{
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_REASON(e);

    if (size == 0)
        return buf;
    if (note != NULL && note->error != 0) {
        describe_verify(note, buf, size);
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
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            snprintf(buf, size, "no client certificate was sent");
            goto out;
        case SSL_R_CERTIFICATE_VERIFY_FAILED: {
            mtls_tls_verify_note tmp;
            X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;

            memset(&tmp, 0, sizeof(tmp));
            tmp.error = ssl ? (int)SSL_get_verify_result(ssl) : 0;
            if (peer != NULL)
                mtls__srv_note_cert(&tmp, peer);
            describe_verify(&tmp, buf, size);
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
    ERR_clear_error();
    return buf;
}

const char *mtls_tls_denied_reason(SSL *ssl, const mtls_tls_verify_note *note, char *buf,
                                   size_t size)
{
    long result;

    if (SSL_get0_peer_certificate(ssl) == NULL) {
        snprintf(buf, size, "no client certificate was sent");
        return buf;
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
