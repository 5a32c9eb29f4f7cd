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
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_MAX_BODY (1024u * 1024u)
#define MAX_HEADER_BYTES (64u * 1024u)

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
    char *in; /* the raw HTTP answer */
    size_t in_len, in_cap;
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

/* ---- URLs ------------------------------------------------------------ */

static int url_parse(const char *p, const char *text, mtls_url *url, mtls_err *err);

/* 1 when the authority of p (after the scheme) carries "user[:password]@". */
static int has_userinfo(const char *p)
{
    size_t authority = strcspn(p, "/?#");
    const char *at = memchr(p, '@', authority);

    return at != NULL;
}

int mtls_url_parse(const char *text, mtls_url *url, mtls_err *err)
{
    char *copy = NULL;
    int rc;

    /* A fragment (#...) is the browser's, never sent to a server. */
    copy = strndup(text, strcspn(text, "#"));
    if (copy == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    rc = url_parse(copy, text, url, err);
    free(copy);
    return rc;
}

/* Parses p (text without its fragment; text is what messages quote). */
static int url_parse(const char *p, const char *text, mtls_url *url, mtls_err *err)
{
    const char *host, *host_end, *rest;
    size_t host_len;

    memset(url, 0, sizeof(*url));
    if (strncasecmp(p, "http://", 7) == 0)
        return mtls_err_set(err, MTLS_E_INVALID,
                            "'%s' is plain http: the probe speaks TLS, use https://", text);
    if (strncasecmp(p, "https://", 8) == 0)
        p += 8;
    else if (strstr(p, "://") != NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "'%s' is not an https:// URL", text);
    /* Never quoted: the part before '@' may be a password. */
    if (has_userinfo(p))
        return mtls_err_set(err, MTLS_E_INVALID,
                            "the URL carries a user name or password before '@': mutual TLS "
                            "identifies you by --cert; leave them out of the URL");
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (host_end == NULL)
            return mtls_err_set(err, MTLS_E_INVALID, "'%s' has an unclosed '[' in its host", text);
        rest = host_end + 1;
    } else {
        host = p;
        host_end = host + strcspn(host, ":/?#");
        rest = host_end;
    }
    host_len = (size_t)(host_end - host);
    if (host_len == 0 || host_len >= sizeof(url->host))
        return mtls_err_set(err, MTLS_E_INVALID, "'%s' has %s host", text,
                            host_len == 0 ? "no" : "too long a");
    memcpy(url->host, host, host_len);
    url->host[host_len] = '\0';
    url->port = 443;
    if (*rest == ':') {
        char *end;
        long port;

        errno = 0;
        port = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || errno != 0 || port < 1 || port > 65535 ||
            (*end != '\0' && *end != '/' && *end != '?'))
            return mtls_err_set(err, MTLS_E_INVALID,
                                "'%s' has a bad port: it must be a number from 1 to 65535", text);
        url->port = (int)port;
        rest = end;
    } else if (*rest != '\0' && *rest != '/' && *rest != '?') {
        return mtls_err_set(err, MTLS_E_INVALID, "'%s' is not a URL I can read", text);
    }
    if (*rest == '\0') {
        snprintf(url->path, sizeof(url->path), "/");
    } else {
        for (const char *c = rest; *c != '\0'; c++) {
            if ((unsigned char)*c <= ' ' || *c == 0x7f)
                return mtls_err_set(err, MTLS_E_INVALID,
                                    "'%s' has a space or control character in its path", text);
        }
        if (snprintf(url->path, sizeof(url->path), "%s%s", *rest == '/' ? "" : "/", rest) >=
            (int)sizeof(url->path))
            return mtls_err_set(err, MTLS_E_INVALID, "'%s' has too long a path", text);
    }
    return 0;
}

/* ---- time and waiting ------------------------------------------------ */

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline. Returns 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        struct pollfd pfd = {.fd = fd, .events = events};
        int n;

        if (left <= 0)
            return 0;
        n = poll(&pfd, 1, left > 1000000 ? 1000000 : (int)left);
        if (n > 0)
            return 1;
        if (n == 0)
            continue;
        if (errno != EINTR)
            return -1;
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

static void format_address(const struct sockaddr *sa, char *buf, size_t size)
{
    char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";
    socklen_t len =
        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);

    getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
    if (sa->sa_family == AF_INET6)
        snprintf(buf, size, "[%s]:%s", host, serv);
    else
        snprintf(buf, size, "%s:%s", host, serv);
}

/* Tries one address: 0 connected (p->fd set), else an errno (ETIMEDOUT on our timeout). */
static int connect_one(struct probe *p, const struct addrinfo *ai)
{
    int fd, rc = 0, soerr = 0, one = 1;
    socklen_t len = sizeof(soerr);

    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return errno;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            rc = errno;
            goto out;
        }
        switch (wait_fd(fd, POLLOUT, now_ms() + p->timeout_ms)) {
        case 0:
            rc = ETIMEDOUT;
            goto out;
        case -1:
            rc = errno;
            goto out;
        default:
            break;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
            rc = errno;
        else
            rc = soerr;
    }
out:
    if (rc != 0)
        close(fd);
    else
        p->fd = fd;
    return rc;
}

static int connect_url(struct probe *p)
{
    mtls_probe_result *res = p->res;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *list = NULL;
    char port[16], tried[64] = "";
    int gai, last = 0;

    res->stage = MTLS_STAGE_RESOLVE;
    snprintf(port, sizeof(port), "%d", res->url.port);
    tracef(p, "Resolving %s", res->url.host);
    gai = getaddrinfo(res->url.host, port, &hints, &list);
    if (gai != 0) {
        set_failure(res, MTLS_PROBE_DNS, gai == EAI_SYSTEM ? errno : 0, "cannot resolve '%s': %s",
                    res->url.host, gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
        return -1;
    }
    res->stage = MTLS_STAGE_CONNECT;
    for (const struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
        format_address(ai->ai_addr, tried, sizeof(tried));
        tracef(p, "Trying %s...", tried);
        last = connect_one(p, ai);
        if (last == 0) {
            snprintf(res->address, sizeof(res->address), "%s", tried);
            tracef(p, "Connected to %s (%s) port %d", res->url.host, tried, res->url.port);
            break;
        }
    }
    freeaddrinfo(list);
    if (last == 0)
        return 0;
    if (last == ECONNREFUSED)
        set_failure(res, MTLS_PROBE_REFUSED, last, "connection refused by %s", tried);
    else if (last == ETIMEDOUT)
        set_failure(res, MTLS_PROBE_TIMEOUT, last, "connecting to %s timed out after %d ms", tried,
                    p->timeout_ms);
    else
        set_failure(res, MTLS_PROBE_NETWORK, last, "cannot connect to %s: %s", tried,
                    strerror(last));
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
    long long deadline = now_ms() + p->timeout_ms;

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
            w = wait_fd(p->fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
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
    long long deadline = now_ms() + p->timeout_ms;
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
            wait_fd(p->fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) > 0)
            continue;
        return -1;
    }
    return 0;
}

static int in_reserve(struct probe *p, size_t more)
{
    size_t cap = p->in_cap ? p->in_cap : 16384;
    char *grown;

    if (p->in_len + more + 1 <= p->in_cap)
        return 0;
    while (cap < p->in_len + more + 1)
        cap *= 2;
    grown = realloc(p->in, cap);
    if (grown == NULL)
        return -1;
    p->in = grown;
    p->in_cap = cap;
    return 0;
}

/* Where the body starts, or 0 while the header is incomplete. */
static size_t header_end(const struct probe *p)
{
    for (size_t i = 0; i + 3 < p->in_len; i++) {
        if (memcmp(p->in + i, "\r\n\r\n", 4) == 0)
            return i + 4;
    }
    return 0;
}

/* Content-Length of the header in p->in (ending at hend), or -1. */
static long long content_length(const struct probe *p, size_t hend)
{
    const char *h = p->in;

    for (size_t i = 0; i < hend; i++) {
        if ((i == 0 || h[i - 1] == '\n') && hend - i > 15 &&
            strncasecmp(h + i, "Content-Length:", 15) == 0)
            return strtoll(h + i + 15, NULL, 10);
    }
    return -1;
}

static int is_chunked(const struct probe *p, size_t hend)
{
    const char *h = p->in;

    for (size_t i = 0; i < hend; i++) {
        if ((i == 0 || h[i - 1] == '\n') && hend - i > 18 &&
            strncasecmp(h + i, "Transfer-Encoding:", 18) == 0) {
            const char *eol = memchr(h + i, '\n', hend - i);
            size_t len = eol ? (size_t)(eol - (h + i)) : hend - i;

            for (size_t j = 18; j + 7 <= len; j++) {
                if (strncasecmp(h + i + j, "chunked", 7) == 0)
                    return 1;
            }
        }
    }
    return 0;
}

/* Decodes a chunked body in place; returns its length (what decoded so far). */
static size_t dechunk(char *body, size_t len)
{
    size_t r = 0, w = 0;

    while (r < len) {
        char *end;
        unsigned long long size = strtoull(body + r, &end, 16);
        char *eol = memchr(body + r, '\n', len - r);

        if (eol == NULL || end == body + r)
            break;
        r = (size_t)(eol - body) + 1;
        if (size == 0 || size > len - r)
            break;
        memmove(body + w, body + r, (size_t)size);
        w += (size_t)size;
        r += (size_t)size;
        if (r < len && body[r] == '\r')
            r++;
        if (r < len && body[r] == '\n')
            r++;
    }
    return w;
}

/* Reads the answer until the server closes, or Content-Length is reached. */
static int read_answer(struct probe *p, SSL *ssl, int *ssl_error, int *errnum)
{
    long long deadline = now_ms() + p->timeout_ms;
    size_t limit = MAX_HEADER_BYTES + (p->opts->max_body ? p->opts->max_body : DEFAULT_MAX_BODY);

    for (;;) {
        size_t n = 0, hend;
        int err;

        if (in_reserve(p, 16384) != 0)
            return -1;
        errno = 0;
        ERR_clear_error();
        if (SSL_read_ex(ssl, p->in + p->in_len, 16384, &n) == 1) {
            long long cl;

            p->in_len += n;
            hend = header_end(p);
            if (hend != 0 && (cl = content_length(p, hend)) >= 0 && p->in_len >= hend + (size_t)cl)
                return 0;
            if (p->in_len >= limit) {
                p->res->body_truncated = 1;
                return 0;
            }
            continue;
        }
        err = SSL_get_error(ssl, 0);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            int w = wait_fd(p->fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);

            if (w > 0)
                continue;
            *ssl_error = w == 0 ? -1 : SSL_ERROR_SYSCALL;
            *errnum = w == 0 ? ETIMEDOUT : errno;
            return p->in_len > 0 ? 0 : -1;
        }
        if (err == SSL_ERROR_ZERO_RETURN)
            return 0; /* close_notify: the answer is complete */
        *ssl_error = err;
        *errnum = errno;
        /* A server that closes without close_notify after a whole answer
         * (HTTP/1.0 style) still answered. */
        return p->in_len > 0 && header_end(p) != 0 ? 0 : -1;
    }
}

static void parse_answer(struct probe *p)
{
    mtls_probe_result *res = p->res;
    size_t hend = header_end(p);
    size_t body_len, max_body = p->opts->max_body ? p->opts->max_body : DEFAULT_MAX_BODY;
    int status = 0, consumed = 0;
    const char *body;

    p->in[p->in_len] = '\0';
    if (sscanf(p->in, "HTTP/%*d.%*d %3d %n", &status, &consumed) < 1 || status < 100) {
        set_failure(res, MTLS_PROBE_NETWORK, 0, "the server's answer is not HTTP");
        return;
    }
    res->http_status = status;
    if (consumed > 0) {
        size_t len = strcspn(p->in + consumed, "\r\n");

        snprintf(res->http_reason, sizeof(res->http_reason), "%.*s", (int)len, p->in + consumed);
    }
    for (const char *line = p->in; hend != 0 && line < p->in + hend - 2;) {
        const char *eol = strstr(line, "\r\n");

        if (eol == NULL || eol == line)
            break;
        tracef(p, "< %.*s", (int)(eol - line), line);
        line = eol + 2;
    }
    if (hend == 0)
        hend = p->in_len;
    body = p->in + hend;
    body_len = p->in_len - hend;
    res->body = malloc(body_len + 1);
    if (res->body == NULL)
        return;
    memcpy(res->body, body, body_len);
    if (is_chunked(p, hend))
        body_len = dechunk(res->body, body_len);
    if (body_len > max_body) {
        body_len = max_body;
        res->body_truncated = 1;
    }
    res->body[body_len] = '\0';
    res->body_len = body_len;
    if (status == 401 || status == 403)
        set_failure(res, MTLS_PROBE_HTTP_REFUSED, 0, "the server answered %d %s", status,
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
    if (read_answer(p, ssl, &ssl_error, &errnum) != 0) {
        classify_read_failure(p, ssl_error, errnum);
        return;
    }
    parse_answer(p);
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
    free(p.in);
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
        }
    } else {
        cJSON_AddNullToObject(o, "http");
    }
    return o;
}
