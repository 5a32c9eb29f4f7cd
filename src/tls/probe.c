/* The probe: connect to an https URL, record what the handshake shows and
 * why it failed, send GET PATH, read the answer.
 *
 * The socket is non-blocking and every wait goes through poll() with a
 * deadline, so no phase can hang. OpenSSL reads and writes the socket
 * itself; three callbacks watch it: the verify callback (the server's chain
 * and the first verification error), the cert callback (a CertificateRequest
 * and its CA names) and the info and message callbacks (alerts both ways,
 * the first record header, the -v trace).
 *
 * TLS 1.3 moves the server's verdict on our certificate after our side of
 * the handshake: SSL_connect() succeeds, and a rejection arrives as an alert
 * on the first read. So a failed read after a successful handshake is
 * classified with the same care as a failed handshake.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cjson/cJSON.h>

#include "mtls/client.h"
#include "mtls/http_response.h"
#include "tls/client_internal.h"

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_MAX_BODY (1024u * 1024u)
#define MAX_HEAD_BYTES (64u * 1024u)

struct probe {
    const mtls_probe_opts *opts;
    mtls_probe_result *res;
    int fd;
    int timeout_ms;
    unsigned char first_header[5]; /* the first record header read, raw */
    int have_header;
    int saw_server_hello;
    int chain_taken;
    int names_taken;
    mtls_http_response answer;
};

/* ---- names ----------------------------------------------------------- */

const char *mtls_alert_name(int code)
{
    /* RFC 8446 section 6 and RFC 5246 section 7.2: the names on the wire. */
    switch (code) {
    case 0:
        return "close_notify";
    case 10:
        return "unexpected_message";
    case 20:
        return "bad_record_mac";
    case 22:
        return "record_overflow";
    case 40:
        return "handshake_failure";
    case 42:
        return "bad_certificate";
    case 43:
        return "unsupported_certificate";
    case 44:
        return "certificate_revoked";
    case 45:
        return "certificate_expired";
    case 46:
        return "certificate_unknown";
    case 47:
        return "illegal_parameter";
    case 48:
        return "unknown_ca";
    case 49:
        return "access_denied";
    case 50:
        return "decode_error";
    case 51:
        return "decrypt_error";
    case 70:
        return "protocol_version";
    case 71:
        return "insufficient_security";
    case 80:
        return "internal_error";
    case 86:
        return "inappropriate_fallback";
    case 90:
        return "user_canceled";
    case 109:
        return "missing_extension";
    case 110:
        return "unsupported_extension";
    case 112:
        return "unrecognized_name";
    case 113:
        return "bad_certificate_status_response";
    case 115:
        return "unknown_psk_identity";
    case 116:
        return "certificate_required";
    case 120:
        return "no_application_protocol";
    default:
        return "unknown_alert";
    }
}

const char *mtls_probe_outcome_name(mtls_probe_outcome outcome)
{
    switch (outcome) {
    case MTLS_PROBE_OK:
        return "ok";
    case MTLS_PROBE_LOCAL:
        return "local_error";
    case MTLS_PROBE_DNS:
        return "dns_failure";
    case MTLS_PROBE_REFUSED:
        return "connection_refused";
    case MTLS_PROBE_TIMEOUT:
        return "timeout";
    case MTLS_PROBE_NETWORK:
        return "network_error";
    case MTLS_PROBE_NOT_TLS:
        return "not_tls";
    case MTLS_PROBE_WE_REFUSED:
        return "we_refused";
    case MTLS_PROBE_THEY_REFUSED:
        return "they_refused";
    case MTLS_PROBE_TLS_FAILED:
        return "tls_failed";
    case MTLS_PROBE_HTTP_REFUSED:
        return "http_refused";
    }
    return "unknown";
}

static const char *stage_name(mtls_probe_stage stage)
{
    switch (stage) {
    case MTLS_STAGE_RESOLVE:
        return "resolve";
    case MTLS_STAGE_CONNECT:
        return "connect";
    case MTLS_STAGE_HANDSHAKE:
        return "handshake";
    case MTLS_STAGE_REQUEST:
        return "request";
    case MTLS_STAGE_DONE:
        return "done";
    }
    return "unknown";
}

static const char *version_name(int version)
{
    switch (version) {
    case TLS1_VERSION:
        return "TLSv1.0";
    case TLS1_1_VERSION:
        return "TLSv1.1";
    case TLS1_2_VERSION:
        return "TLSv1.2";
    case TLS1_3_VERSION:
        return "TLSv1.3";
    default:
        return "TLS";
    }
}

/* curl -v's names for handshake messages, so the trace reads the same. */
/* RFC 8879's CompressedCertificate; OpenSSL names it (SSL3_MT_COMPRESSED_CERTIFICATE)
 * only from 3.2 on. */
#define MT_COMPRESSED_CERTIFICATE 25

static const char *handshake_name(int type)
{
    switch (type) {
    case 0:
        return "Hello request";
    case 1:
        return "Client hello";
    case 2:
        return "Server hello";
    case 4:
        return "Newsession Ticket";
    case 5:
        return "End of early data";
    case 8:
        return "Encrypted Extensions";
    case 11:
        return "Certificate";
    case MT_COMPRESSED_CERTIFICATE:
        return "Compressed certificate";
    case 12:
        return "Server key exchange";
    case 13:
        return "Request CERT";
    case 14:
        return "Server finished";
    case 15:
        return "CERT verify";
    case 16:
        return "Client key exchange";
    case 20:
        return "Finished";
    case 22:
        return "Certificate Status";
    case 24:
        return "Key update";
    case 254:
        return "Message hash";
    default:
        return "Unknown";
    }
}

/* ---- trace ----------------------------------------------------------- */

static void tracef(struct probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Hands the trace one line, control bytes (a server's header may carry
 * any) written \xHH. */
static void tracef(struct probe *p, const char *fmt, ...)
{
    char line[1024], shown[4 * sizeof(line)];
    size_t used = 0;
    va_list ap;

    if (p->opts->trace == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    for (const unsigned char *c = (const unsigned char *)line; *c != '\0'; c++)
        used += (size_t)snprintf(shown + used, sizeof(shown) - used,
                                 *c < 0x20 || *c == 0x7F ? "\\x%02X" : "%c", *c);
    p->opts->trace(p->opts->trace_arg, shown);
}

/* ---- OpenSSL callbacks ----------------------------------------------- */

static void record_alert(mtls_probe_alert *a, int ret, mtls_probe_stage stage)
{
    int level = (ret >> 8) & 0xff, code = ret & 0xff;

    /* Keep the first fatal alert; a warning only until a fatal one comes. */
    if (a->seen && (a->fatal || level != 2))
        return;
    a->seen = 1;
    a->fatal = level == 2;
    a->code = code;
    snprintf(a->name, sizeof(a->name), "%s", mtls_alert_name(code));
    a->stage = stage;
}

static void info_cb(const SSL *ssl, int where, int ret)
{
    struct probe *p = SSL_get_app_data(ssl);

    if (p == NULL || (where & SSL_CB_ALERT) == 0)
        return;
    /* A polite close_notify is not a verdict. */
    if ((ret & 0xff) == 0)
        return;
    if (where & SSL_CB_READ)
        record_alert(&p->res->alert_received, ret, p->res->stage);
    else
        record_alert(&p->res->alert_sent, ret, p->res->stage);
}

/* Did our Certificate message carry a certificate (it is empty when we have
 * none or cannot use ours)? buf is the whole handshake message. */
static int certificate_message_has_cert(const unsigned char *buf, size_t len, int tls13)
{
    size_t off = 4;

    if (tls13) {
        if (len < off + 1)
            return 0;
        off += 1 + buf[off]; /* certificate_request_context */
    }
    if (len < off + 3)
        return 0;
    return ((size_t)buf[off] << 16 | (size_t)buf[off + 1] << 8 | buf[off + 2]) > 0;
}

static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg)
{
    struct probe *p = arg;
    const unsigned char *b = buf;
    const char *dir = write_p ? "OUT" : "IN";

    (void)ssl;
    if (content_type == SSL3_RT_HEADER) {
        if (!write_p && !p->have_header && len >= 5) {
            memcpy(p->first_header, b, 5);
            p->have_header = 1;
        }
        return;
    }
    if (content_type == SSL3_RT_HANDSHAKE && len >= 1) {
        if (!write_p && b[0] == SSL3_MT_SERVER_HELLO)
            p->saw_server_hello = 1;
        if (!write_p && b[0] == SSL3_MT_CERTIFICATE_REQUEST)
            p->res->cert_requested = 1;
        if (write_p && b[0] == SSL3_MT_CERTIFICATE)
            p->res->ours_sent =
                certificate_message_has_cert(b, len, SSL_version(ssl) == TLS1_3_VERSION);
        /* OpenSSL 3.2 and later compress our certificate (RFC 8879) when the
         * server offers it; an empty list is never sent compressed. */
        if (write_p && b[0] == MT_COMPRESSED_CERTIFICATE)
            p->res->ours_sent = 1;
        tracef(p, "%s (%s), TLS handshake, %s (%d):", version_name(version), dir,
               handshake_name(b[0]), b[0]);
    } else if (content_type == SSL3_RT_ALERT && len >= 2) {
        tracef(p, "%s (%s), TLS alert, %s (%d), %s", version_name(version), dir,
               mtls_alert_name(b[1]), b[1], b[0] == 2 ? "fatal" : "warning");
    } else if (content_type == SSL3_RT_CHANGE_CIPHER_SPEC) {
        tracef(p, "%s (%s), TLS change cipher, Change cipher spec (1):", version_name(version),
               dir);
    }
}

static void take_chain(struct probe *p, STACK_OF(X509) * chain)
{
    int n = chain != NULL ? sk_X509_num(chain) : 0;
    mtls_probe_result *res = p->res;

    p->chain_taken = 1;
    if (n <= 0)
        return;
    res->chain = calloc((size_t)n, sizeof(*res->chain));
    if (res->chain == NULL)
        return;
    for (int i = 0; i < n; i++) {
        if (mtls_cert_info_init(&res->chain[res->n_chain], sk_X509_value(chain, i), NULL) == 0)
            res->n_chain++;
    }
}

static int verify_cb(int ok, X509_STORE_CTX *sctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct probe *p = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    mtls_probe_result *res;
    X509 *cert;

    if (p == NULL)
        return ok;
    res = p->res;
    /* The chain as the server sent it: OpenSSL keeps it only on success. */
    if (!p->chain_taken)
        take_chain(p, X509_STORE_CTX_get0_untrusted(sctx));
    res->verify_done = 1;
    if (!ok && res->verify_code == X509_V_OK) {
        res->verify_code = X509_STORE_CTX_get_error(sctx);
        res->verify_depth = X509_STORE_CTX_get_error_depth(sctx);
        snprintf(res->verify_reason, sizeof(res->verify_reason), "%s",
                 X509_verify_cert_error_string(res->verify_code));
        cert = X509_STORE_CTX_get_current_cert(sctx);
        if (cert != NULL) {
            const X509_NAME *issuer = X509_get_issuer_name(cert);
            int idx = X509_NAME_get_index_by_NID(issuer, NID_commonName, -1);

            mtls_name_oneline(X509_get_subject_name(cert), res->verify_subject,
                              sizeof(res->verify_subject));
            mtls_name_oneline(issuer, res->verify_issuer, sizeof(res->verify_issuer));
            if (idx >= 0) {
                unsigned char *utf8 = NULL;
                int len = ASN1_STRING_to_UTF8(
                    &utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(issuer, idx)));

                if (len >= 0)
                    snprintf(res->verify_issuer_cn, sizeof(res->verify_issuer_cn), "%.*s", len,
                             (char *)utf8);
                OPENSSL_free(utf8);
            }
        }
    }
    return ok;
}

/* Notes the CA names of the server's CertificateRequest, and whether ours
 * is issued by one of them. */
static void take_ca_names(struct probe *p, SSL *ssl)
{
    mtls_probe_result *res = p->res;
    const STACK_OF(X509_NAME) *names = SSL_get0_peer_CA_list(ssl);
    int n = names != NULL ? sk_X509_NAME_num(names) : 0;
    X509 *ours = SSL_get_certificate(ssl);

    if (p->names_taken)
        return; /* a second request (post-handshake auth) says the same */
    p->names_taken = 1;
    res->ours_matches = -1;
    if (n <= 0)
        return;
    res->ca_names = calloc((size_t)n, sizeof(char *));
    if (res->ca_names == NULL)
        return;
    if (ours != NULL)
        res->ours_matches = 0;
    for (int i = 0; i < n; i++) {
        const X509_NAME *name = sk_X509_NAME_value(names, i);
        char line[MTLS_NAME_MAX];

        res->ca_names[res->n_ca_names] = strdup(mtls_name_oneline(name, line, sizeof(line)));
        if (res->ca_names[res->n_ca_names] != NULL)
            res->n_ca_names++;
        if (ours != NULL && X509_NAME_cmp(name, X509_get_issuer_name(ours)) == 0)
            res->ours_matches = 1;
    }
}

/* Called when the server asks for our certificate. */
static int cert_cb(SSL *ssl, void *arg)
{
    struct probe *p = arg;

    p->res->cert_requested = 1;
    take_ca_names(p, ssl);
    return 1;
}

/* ---- connecting ------------------------------------------------------ */

static void set_failure(mtls_probe_result *res, mtls_probe_outcome outcome, int errnum,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void set_failure(mtls_probe_result *res, mtls_probe_outcome outcome, int errnum,
                        const char *fmt, ...)
{
    va_list ap;

    res->outcome = outcome;
    res->sys_errno = errnum;
    va_start(ap, fmt);
    vsnprintf(res->message, sizeof(res->message), fmt, ap);
    va_end(ap);
}

static void trace_line(void *arg, const char *line)
{
    tracef(arg, "%s", line);
}

static int connect_url(struct probe *p)
{
    mtls_probe_result *res = p->res;
    mtls_client_conn conn;
    mtls_err err;
    int rc;

    res->stage = MTLS_STAGE_RESOLVE;
    mtls_err_clear(&err);
    rc = mtls_client_connect(res->url.host, res->url.port, p->timeout_ms, trace_line, p, &conn,
                             &err);
    if (rc == 0) {
        res->stage = MTLS_STAGE_CONNECT;
        p->fd = conn.fd;
        snprintf(res->address, sizeof(res->address), "%s", conn.address);
        return 0;
    }
    if (rc == MTLS_E_NOTFOUND) {
        set_failure(res, MTLS_PROBE_DNS, conn.sys_errno, "%s", err.msg);
        return -1;
    }
    res->stage = MTLS_STAGE_CONNECT;
    if (conn.sys_errno == ECONNREFUSED)
        set_failure(res, MTLS_PROBE_REFUSED, conn.sys_errno, "%s", err.msg);
    else if (conn.sys_errno == ETIMEDOUT)
        set_failure(res, MTLS_PROBE_TIMEOUT, conn.sys_errno, "%s", err.msg);
    else
        set_failure(res, MTLS_PROBE_NETWORK, conn.sys_errno, "%s", err.msg);
    return -1;
}

/* ---- the handshake --------------------------------------------------- */

/* A TLS record starts with a content type 20..24 and major version 3. */
static int header_is_tls(const unsigned char *h)
{
    return h[0] >= 20 && h[0] <= 24 && h[1] == 3;
}

/* The peer spoke something else: quote its first line, printable. */
static void quote_plain_text(struct probe *p)
{
    unsigned char more[96];
    ssize_t n;
    size_t out = 0;
    char *dst = p->res->plain_text;
    size_t cap = sizeof(p->res->plain_text);

    /* OpenSSL read only the 5 bytes of a record header; the rest of the
     * line is still in the socket. */
    n = recv(p->fd, more, sizeof(more), MSG_DONTWAIT);
    for (int i = 0; i < 5 + (n > 0 ? (int)n : 0) && out + 1 < cap; i++) {
        unsigned char c = i < 5 ? p->first_header[i] : more[i - 5];

        if (c == '\r' || c == '\n')
            break;
        dst[out++] = (c >= 0x20 && c < 0x7f) ? (char)c : '.';
    }
    dst[out] = '\0';
}

/* Decides what a failed handshake means, from what the callbacks saw. */
static void classify_handshake_failure(struct probe *p, SSL *ssl, int ssl_error, int errnum)
{
    mtls_probe_result *res = p->res;
    unsigned long e = ERR_peek_last_error();
    char reason[256] = "";

    /* A CertificateRequest read before the failure still tells its CA names. */
    if (res->cert_requested)
        take_ca_names(p, ssl);

    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    if (res->verify_code != X509_V_OK) {
        set_failure(res, MTLS_PROBE_WE_REFUSED, 0, "certificate verify failed: %s",
                    res->verify_reason);
    } else if (res->alert_received.seen && res->alert_received.fatal) {
        set_failure(res, MTLS_PROBE_THEY_REFUSED, 0, "the server sent the alert %s (%d)",
                    res->alert_received.name, res->alert_received.code);
    } else if (res->alert_sent.seen && res->alert_sent.fatal) {
        set_failure(res, MTLS_PROBE_TLS_FAILED, 0, "we ended the handshake with the alert %s: %s",
                    res->alert_sent.name, reason[0] ? reason : "no details");
    } else if (p->have_header && !header_is_tls(p->first_header)) {
        quote_plain_text(p);
        set_failure(res, MTLS_PROBE_NOT_TLS, 0, "the peer does not speak TLS: it sent '%s'",
                    res->plain_text);
    } else if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
        const char *what = errnum != 0 ? strerror(errnum) : "end of stream";

        if (res->cert_requested)
            set_failure(res, MTLS_PROBE_THEY_REFUSED, errnum,
                        "the server closed the connection after asking for a certificate (%s)",
                        what);
        else
            set_failure(res, MTLS_PROBE_NETWORK, errnum,
                        "the connection closed during the handshake (%s)%s", what,
                        p->saw_server_hello ? "" : ", before any TLS answer");
    } else {
        set_failure(res, MTLS_PROBE_TLS_FAILED, 0, "the handshake failed: %s",
                    reason[0] ? reason : "no details");
    }
}

static int do_handshake(struct probe *p, SSL *ssl)
{
    long long deadline = mtls__now_ms() + p->timeout_ms;

    p->res->stage = MTLS_STAGE_HANDSHAKE;
    for (;;) {
        int rc, err, w;

        errno = 0;
        ERR_clear_error();
        rc = SSL_connect(ssl);
        if (rc == 1)
            return 0;
        err = SSL_get_error(ssl, rc);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            w = mtls__wait_fd(p->fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
            if (w > 0)
                continue;
            if (w == 0)
                set_failure(p->res, MTLS_PROBE_TIMEOUT, ETIMEDOUT,
                            "the TLS handshake with %s did not finish within %d ms",
                            p->res->address, p->timeout_ms);
            else
                set_failure(p->res, MTLS_PROBE_NETWORK, errno, "poll() failed: %s",
                            strerror(errno));
            return -1;
        }
        classify_handshake_failure(p, ssl, err, errno);
        return -1;
    }
}

/* ---- HTTP ------------------------------------------------------------ */

static int write_all(struct probe *p, SSL *ssl, const char *data, size_t len)
{
    long long deadline = mtls__now_ms() + p->timeout_ms;
    size_t done = 0;

    while (done < len) {
        size_t n = 0;
        int err;

        ERR_clear_error();
        if (SSL_write_ex(ssl, data + done, len - done, &n) == 1) {
            done += n;
            continue;
        }
        err = SSL_get_error(ssl, 0);
        if ((err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) &&
            mtls__wait_fd(p->fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) > 0)
            continue;
        return -1;
    }
    return 0;
}

/* Traces the head as curl -v does ("< HTTP/1.1 200 OK", "< Name: value"). */
static int trace_head(void *arg, const mtls_http_response *r)
{
    struct probe *p = arg;

    tracef(p, "< HTTP/%d.%d %d %s", r->http_major, r->http_minor, r->status, r->reason);
    for (size_t i = 0; i < r->n_headers; i++)
        tracef(p, "< %s: %s", r->headers[i].name, r->headers[i].value);
    return 0;
}

/*
 * Reads the answer into p->answer until it is complete, the server closes,
 * or max_body bytes of body are kept. Returns 0 once a response head was
 * read (its body may be cut short); -1 with *ssl_error and *errnum for
 * classify_read_failure(); -2 when the answer is not HTTP (failure set).
 */
static int read_answer(struct probe *p, SSL *ssl, int *ssl_error, int *errnum)
{
    long long deadline = mtls__now_ms() + p->timeout_ms;
    char buf[16384];

    for (;;) {
        size_t n = 0;
        int err, rc;

        errno = 0;
        ERR_clear_error();
        if (SSL_read_ex(ssl, buf, sizeof(buf), &n) == 1) {
            rc = mtls_http_response_feed(&p->answer, buf, n, NULL);
            if (rc == MTLS_HTTP_RESPONSE_DONE || p->answer.body_truncated)
                return 0;
            if (rc < 0) {
                set_failure(p->res, MTLS_PROBE_NETWORK, 0, "the server's answer is not HTTP: %s",
                            p->answer.error);
                return -2;
            }
            continue;
        }
        err = SSL_get_error(ssl, 0);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            int w = mtls__wait_fd(p->fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);

            if (w > 0)
                continue;
            *ssl_error = w == 0 ? -1 : SSL_ERROR_SYSCALL;
            *errnum = w == 0 ? ETIMEDOUT : errno;
            return p->answer.head_done ? 0 : -1;
        }
        /* close_notify, or a close without it (HTTP/1.0 style): a body
         * framed by the close ends here. */
        if ((err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && errno == 0)) &&
            mtls_http_response_eof(&p->answer) == MTLS_HTTP_RESPONSE_DONE)
            return 0;
        *ssl_error = err;
        *errnum = errno;
        return p->answer.head_done ? 0 : -1;
    }
}

/*
 * 1 when an HTTP answer refuses the client for its certificate: nginx's
 * 495 (the certificate did not verify) and 496 (none was sent), or any
 * other 4xx whose reason or body names a certificate (nginx's "400 No
 * required SSL certificate was sent", "400 The SSL certificate error").
 */
static int refuses_certificate(const mtls_probe_result *res)
{
    if (res->http_status == 495 || res->http_status == 496)
        return 1;
    if (res->http_status < 400 || res->http_status > 499)
        return 0;
    return strcasestr(res->http_reason, "certificate") != NULL ||
           (res->body != NULL && (strcasestr(res->body, "certificate") != NULL ||
                                  strcasestr(res->body, "client cert") != NULL));
}

/* Copies the answer into the result and decides whether it refuses us. */
static void take_answer(struct probe *p)
{
    mtls_probe_result *res = p->res;
    const mtls_http_response *a = &p->answer;

    res->http_status = a->status;
    snprintf(res->http_reason, sizeof(res->http_reason), "%s", a->reason);
    res->body = malloc(a->body_len + 1);
    if (res->body == NULL) {
        set_failure(res, MTLS_PROBE_LOCAL, ENOMEM, "out of memory");
        return;
    }
    memcpy(res->body, a->body != NULL ? a->body : "", a->body_len);
    res->body[a->body_len] = '\0';
    res->body_len = a->body_len;
    /* Cut short: more than max_body, or the server stopped sending. */
    res->body_truncated = a->body_truncated || !a->done;
    res->http_refuses_certificate = refuses_certificate(res);
    if (res->http_status == 401 || res->http_status == 403 || res->http_refuses_certificate)
        set_failure(res, MTLS_PROBE_HTTP_REFUSED, 0, "the server answered %d %s", res->http_status,
                    res->http_reason);
}

static void classify_read_failure(struct probe *p, int ssl_error, int errnum)
{
    mtls_probe_result *res = p->res;
    unsigned long e = ERR_peek_last_error();
    char reason[256] = "";

    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    if (ssl_error == -1) {
        set_failure(res, MTLS_PROBE_TIMEOUT, ETIMEDOUT, "no answer from %s within %d ms",
                    res->address, p->timeout_ms);
    } else if (res->alert_received.seen && res->alert_received.fatal) {
        set_failure(res, MTLS_PROBE_THEY_REFUSED, 0,
                    "the server sent the alert %s (%d) after the handshake",
                    res->alert_received.name, res->alert_received.code);
    } else if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
        const char *what = errnum != 0 ? strerror(errnum) : "end of stream";

        /* A TLS 1.3 server that dislikes our certificate may just close. */
        if (res->cert_requested)
            set_failure(res, MTLS_PROBE_THEY_REFUSED, errnum,
                        "the server closed the connection after the handshake without an "
                        "answer (%s)",
                        what);
        else
            set_failure(res, MTLS_PROBE_NETWORK, errnum,
                        "the server closed the connection without an answer (%s)", what);
    } else {
        set_failure(res, MTLS_PROBE_TLS_FAILED, 0, "reading the answer failed: %s",
                    reason[0] ? reason : "no details");
    }
}

static void request(struct probe *p, SSL *ssl)
{
    mtls_probe_result *res = p->res;
    char req[2048], host[300];
    int len, ssl_error = 0, errnum = 0;
    mtls_http_response_opts answer_opts = {
        .max_head = MAX_HEAD_BYTES,
        .keep_body = p->opts->max_body ? p->opts->max_body : DEFAULT_MAX_BODY,
        .on_head = trace_head,
        .arg = p,
    };

    res->stage = MTLS_STAGE_REQUEST;
    if (strchr(res->url.host, ':') != NULL)
        snprintf(host, sizeof(host), "[%s]", res->url.host);
    else
        snprintf(host, sizeof(host), "%s", res->url.host);
    len = snprintf(req, sizeof(req),
                   "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: mtls-probe\r\n"
                   "Accept: */*\r\nConnection: close\r\n\r\n",
                   res->url.path, host, res->url.port);
    tracef(p, "> GET %s HTTP/1.1", res->url.path);
    tracef(p, "> Host: %s:%d", host, res->url.port);
    /* A failed write is not the verdict yet: the reason (an alert) waits to be read. */
    (void)write_all(p, ssl, req, (size_t)len);
    mtls_http_response_init(&p->answer, &answer_opts);
    switch (read_answer(p, ssl, &ssl_error, &errnum)) {
    case 0:
        take_answer(p);
        break;
    case -1:
        classify_read_failure(p, ssl_error, errnum);
        return;
    default:
        return;
    }
    if (res->outcome == MTLS_PROBE_OK || res->outcome == MTLS_PROBE_HTTP_REFUSED)
        res->stage = MTLS_STAGE_DONE;
}

/* ---- the probe ------------------------------------------------------- */

/* Writing to a socket the server has closed raises SIGPIPE. A library must
 * not kill its caller for that: block it for the probe's duration, and
 * swallow one we caused (as curl does). */
struct sigpipe_guard {
    sigset_t old;
    int was_pending;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
    sigset_t set, pending;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    g->was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void sigpipe_restore(struct sigpipe_guard *g)
{
    sigset_t set, pending;
    struct timespec zero = {0, 0};

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (!g->was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE))
        (void)sigtimedwait(&set, NULL, &zero);
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

int mtls_probe(const mtls_probe_opts *opts, mtls_probe_result *res, mtls_err *err)
{
    struct probe p = {.opts = opts, .res = res, .fd = -1};
    struct sigpipe_guard guard;
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    mtls_err local;
    int rc = 0;

    memset(res, 0, sizeof(*res));
    sigpipe_block(&guard);
    p.timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    rc = mtls_url_parse(opts->url, &res->url, err);
    if (rc != 0)
        goto out;
    snprintf(res->peer_name, sizeof(res->peer_name), "%s",
             opts->servername != NULL ? opts->servername : res->url.host);
    mtls_err_clear(&local);
    ctx = mtls_client_ctx_new(&opts->files, &local);
    if (ctx == NULL) {
        set_failure(res, MTLS_PROBE_LOCAL, 0, "%s", local.msg);
        goto out;
    }
    if (SSL_CTX_get0_certificate(ctx) != NULL &&
        mtls_cert_info_init(&res->ours, SSL_CTX_get0_certificate(ctx), NULL) == 0)
        res->have_ours = 1;
    ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_app_data(ssl, &p) != 1) {
        set_failure(res, MTLS_PROBE_LOCAL, 0, "SSL_new() failed");
        goto out;
    }
    SSL_set_verify(ssl, SSL_VERIFY_PEER, verify_cb);
    SSL_set_info_callback(ssl, info_cb);
    SSL_set_msg_callback(ssl, msg_cb);
    SSL_set_msg_callback_arg(ssl, &p);
    SSL_set_cert_cb(ssl, cert_cb, &p);
    if (mtls_client_set_peer_name(ssl, res->peer_name, &local) != 0) {
        set_failure(res, MTLS_PROBE_LOCAL, 0, "%s", local.msg);
        goto out;
    }
    if (connect_url(&p) != 0)
        goto out;
    if (SSL_set_fd(ssl, p.fd) != 1) {
        set_failure(res, MTLS_PROBE_LOCAL, 0, "SSL_set_fd() failed");
        goto out;
    }
    if (do_handshake(&p, ssl) != 0)
        goto out;
    snprintf(res->protocol, sizeof(res->protocol), "%s", SSL_get_version(ssl));
    snprintf(res->cipher, sizeof(res->cipher), "%s", SSL_get_cipher_name(ssl));
    tracef(&p, "SSL connection using %s / %s", res->protocol, res->cipher);
    if (!p.chain_taken)
        take_chain(&p, SSL_get_peer_cert_chain(ssl));
    request(&p, ssl);
    if (res->outcome == MTLS_PROBE_OK || res->outcome == MTLS_PROBE_HTTP_REFUSED)
        (void)SSL_shutdown(ssl);
out:
    if (res->outcome != MTLS_PROBE_OK && res->message[0] != '\0')
        tracef(&p, "%s", res->message);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (p.fd >= 0)
        close(p.fd);
    mtls_http_response_release(&p.answer);
    ERR_clear_error();
    sigpipe_restore(&guard);
    return rc;
}

void mtls_probe_result_release(mtls_probe_result *res)
{
    if (res == NULL)
        return;
    for (size_t i = 0; i < res->n_chain; i++)
        mtls_cert_info_release(&res->chain[i]);
    free(res->chain);
    res->chain = NULL;
    res->n_chain = 0;
    for (size_t i = 0; i < res->n_ca_names; i++)
        free(res->ca_names[i]);
    free(res->ca_names);
    res->ca_names = NULL;
    res->n_ca_names = 0;
    mtls_cert_info_release(&res->ours);
    free(res->body);
    res->body = NULL;
    res->body_len = 0;
}

/* ---- JSON ------------------------------------------------------------ */

static cJSON *alert_json(const mtls_probe_alert *a)
{
    cJSON *o;

    if (!a->seen)
        return cJSON_CreateNull();
    o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "name", a->name);
    cJSON_AddNumberToObject(o, "code", a->code);
    cJSON_AddBoolToObject(o, "fatal", a->fatal);
    cJSON_AddStringToObject(o, "stage", stage_name(a->stage));
    return o;
}

cJSON *mtls_probe_result_to_json(const mtls_probe_result *res)
{
    cJSON *o = cJSON_CreateObject(), *chain, *v, *req, *names, *ours, *http;

    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "outcome", mtls_probe_outcome_name(res->outcome));
    cJSON_AddStringToObject(o, "stage", stage_name(res->stage));
    cJSON_AddStringToObject(o, "message", res->message);
    cJSON_AddStringToObject(o, "host", res->url.host);
    cJSON_AddNumberToObject(o, "port", res->url.port);
    cJSON_AddStringToObject(o, "path", res->url.path);
    cJSON_AddStringToObject(o, "servername", res->peer_name);
    cJSON_AddStringToObject(o, "address", res->address);
    cJSON_AddStringToObject(o, "protocol", res->protocol);
    cJSON_AddStringToObject(o, "cipher", res->cipher);
    if (res->plain_text[0] != '\0')
        cJSON_AddStringToObject(o, "plain_text", res->plain_text);
    chain = cJSON_AddArrayToObject(o, "chain");
    for (size_t i = 0; chain != NULL && i < res->n_chain; i++)
        cJSON_AddItemToArray(chain, mtls_cert_info_to_json(&res->chain[i]));
    v = cJSON_AddObjectToObject(o, "verify");
    if (v != NULL) {
        cJSON_AddBoolToObject(v, "checked", res->verify_done);
        cJSON_AddBoolToObject(v, "ok", res->verify_done && res->verify_code == X509_V_OK);
        cJSON_AddNumberToObject(v, "code", (double)res->verify_code);
        cJSON_AddStringToObject(v, "reason",
                                res->verify_code != X509_V_OK ? res->verify_reason
                                                              : (res->verify_done ? "ok" : ""));
        cJSON_AddNumberToObject(v, "depth", res->verify_depth);
        cJSON_AddStringToObject(v, "subject", res->verify_subject);
        cJSON_AddStringToObject(v, "issuer", res->verify_issuer);
    }
    req = cJSON_AddObjectToObject(o, "certificate_request");
    if (req != NULL) {
        cJSON_AddBoolToObject(req, "received", res->cert_requested);
        names = cJSON_AddArrayToObject(req, "ca_names");
        for (size_t i = 0; names != NULL && i < res->n_ca_names; i++)
            cJSON_AddItemToArray(names, cJSON_CreateString(res->ca_names[i]));
    }
    if (res->have_ours) {
        ours = cJSON_AddObjectToObject(o, "client_certificate");
        if (ours != NULL) {
            cJSON_AddItemToObject(ours, "certificate", mtls_cert_info_to_json(&res->ours));
            cJSON_AddBoolToObject(ours, "sent", res->ours_sent);
            if (res->cert_requested && res->ours_matches >= 0)
                cJSON_AddBoolToObject(ours, "issuer_accepted", res->ours_matches);
            else
                cJSON_AddNullToObject(ours, "issuer_accepted");
        }
    } else {
        cJSON_AddNullToObject(o, "client_certificate");
    }
    cJSON_AddItemToObject(o, "alert_received", alert_json(&res->alert_received));
    cJSON_AddItemToObject(o, "alert_sent", alert_json(&res->alert_sent));
    if (res->http_status != 0) {
        http = cJSON_AddObjectToObject(o, "http");
        if (http != NULL) {
            cJSON_AddNumberToObject(http, "status", res->http_status);
            cJSON_AddStringToObject(http, "reason", res->http_reason);
            cJSON_AddStringToObject(http, "body", res->body != NULL ? res->body : "");
            cJSON_AddBoolToObject(http, "body_truncated", res->body_truncated);
            cJSON_AddBoolToObject(http, "refuses_certificate", res->http_refuses_certificate);
        }
    } else {
        cJSON_AddNullToObject(o, "http");
    }
    return o;
}
