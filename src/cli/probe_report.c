/* What a probe found, in words: findings, a diagnosis, an exit code. */
#include "probe_report.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

#include <openssl/x509_vfy.h>

#include "cli.h"
#include "mtls/pki.h"

int probe_exit_code(const mtls_probe_result *res)
{
    switch (res->outcome) {
    case MTLS_PROBE_OK:
        return EXIT_OK;
    case MTLS_PROBE_WE_REFUSED:
        return PROBE_EXIT_WE_REFUSED;
    case MTLS_PROBE_THEY_REFUSED:
    case MTLS_PROBE_HTTP_REFUSED:
        return PROBE_EXIT_THEY_REFUSED;
    case MTLS_PROBE_DNS:
    case MTLS_PROBE_REFUSED:
    case MTLS_PROBE_TIMEOUT:
    case MTLS_PROBE_NETWORK:
    case MTLS_PROBE_NOT_TLS:
        return PROBE_EXIT_NETWORK;
    case MTLS_PROBE_TLS_FAILED:
        /* We ended it with an alert: our refusal; otherwise a plain failure. */
        return res->alert_sent.seen && res->alert_sent.fatal ? PROBE_EXIT_WE_REFUSED : EXIT_FAIL;
    case MTLS_PROBE_LOCAL:
        return EXIT_FAIL;
    }
    return EXIT_FAIL;
}

const char *probe_verdict(const mtls_probe_result *res)
{
    switch (probe_exit_code(res)) {
    case EXIT_OK:
        return "ok";
    case PROBE_EXIT_WE_REFUSED:
        return "we refused the server";
    case PROBE_EXIT_THEY_REFUSED:
        return "the server refused us";
    case PROBE_EXIT_NETWORK:
        return "network error";
    default:
        return "failed";
    }
}

static void say(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

char *probe_one_line(const char *text, size_t max, char *buf, size_t size)
{
    size_t used = 0, i, len = text != NULL ? strlen(text) : 0;

    /* The line break that ends a body is not part of what it says. */
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    buf[0] = '\0';
    for (i = 0; i < len && i < max && used + 8 < size; i++) {
        unsigned char c = (unsigned char)text[i];

        used +=
            (size_t)snprintf(buf + used, size - used, c < 0x20 || c == 0x7F ? "\\x%02X" : "%c", c);
    }
    if (i < len && used + 4 <= size)
        snprintf(buf + used, size - used, "...");
    return buf;
}

/* The body as curl prints it, but with control bytes other than line
 * breaks and tabs as \xHH (no terminal escape sequences from a server). */
static void print_body(FILE *f, const char *body, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)body[i];

        if ((c < 0x20 && c != '\n' && c != '\r' && c != '\t') || c == 0x7F)
            fprintf(f, "\\x%02X", c);
        else
            fputc(c, f);
    }
}

/* "CN=a, CN=b" (or "no CA names") from the CertificateRequest. */
static void ca_names_line(const mtls_probe_result *res, char *buf, size_t size)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < res->n_ca_names && used + 1 < size; i++) {
        int n = snprintf(buf + used, size - used, "%s%s", i ? "; " : "", res->ca_names[i]);

        if (n < 0)
            break;
        used += (size_t)n;
    }
}

static void date_of(const char *iso, char *buf, size_t size)
{
    /* "2026-11-26T23:59:59Z" -> "2026-11-26 23:59:59 UTC" */
    if (strlen(iso) >= 19)
        snprintf(buf, size, "%.10s %.8s UTC", iso, iso + 11);
    else
        snprintf(buf, size, "%s", iso);
}

/*
 * What failed in our check of the server's chain, in the words of pki's one
 * table of verification failures (mtls_verify_words), as cert verify and
 * the server's log say it; the diagnosis below adds what to do about it.
 */
static char *refusal_words(const mtls_probe_result *res, char *buf, size_t size)
{
    const mtls_cert_info *at =
        (size_t)res->verify_depth < res->n_chain ? &res->chain[res->verify_depth] : NULL;
    mtls_verify_failure f;
    char who[MTLS_NAME_MAX + 64], sans[512] = "";

    snprintf(who, sizeof(who), "%s (%s)",
             res->verify_depth == 0 ? "the server's certificate"
                                    : "a CA certificate in the server's chain",
             res->verify_subject);
    memset(&f, 0, sizeof(f));
    f.code = (int)res->verify_code;
    f.depth = res->verify_depth;
    f.cert = who;
    f.issuer = res->verify_issuer;
    f.purpose = "TLS server authentication";
    f.host = res->peer_name;
    if (at != NULL) {
        f.serial = at->serial_hex;
        f.not_before = at->not_before;
        f.not_after = at->not_after;
        f.usage = at->ext_key_usage;
        mtls_cert_info_sans_line(at, sans, sizeof(sans));
        f.sans = sans;
    }
    return mtls_verify_words(&f, buf, size);
}

static void diagnose_we_refused(const mtls_probe_result *res, const mtls_probe_opts *opts,
                                char *buf, size_t size)
{
    const mtls_cert_info *leaf = res->n_chain > 0 ? &res->chain[0] : NULL;
    const char *issuer = res->verify_issuer[0] ? res->verify_issuer : "an unknown CA";
    char sans[512] = "", words[MTLS_ERR_MSG_MAX];

    switch (res->verify_code) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        if (res->verify_depth > 0 && res->verify_code != X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN)
            /* The leaf chains to an intermediate we have, whose issuer we lack. */
            say(buf, size,
                "the server's chain leads through %s to %s, which you do not trust: pass "
                "--cacert with the certificate of %s",
                res->verify_subject, issuer, issuer);
        else if (opts->files.cacert != NULL)
            say(buf, size,
                "the server's certificate is signed by %s, which is not in your --cacert '%s': "
                "pass --cacert with the certificate of %s instead",
                issuer, opts->files.cacert, issuer);
        else if (strcmp(res->verify_issuer_cn, "server-example-ca") == 0)
            say(buf, size,
                "the server's certificate is signed by %s, which you do not trust: pass "
                "--cacert serverca.crt",
                issuer);
        else
            say(buf, size,
                "the server's certificate is signed by %s, which you do not trust: pass "
                "--cacert with the certificate of %s",
                issuer, issuer);
        return;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        say(buf, size,
            "the server's certificate (%s) is self-signed and you do not trust it: pass "
            "--cacert with that certificate itself, or have it signed by a CA you trust",
            res->verify_subject);
        return;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        if (leaf != NULL)
            mtls_cert_info_sans_line(leaf, sans, sizeof(sans));
        say(buf, size,
            "the server's certificate is for %s, not '%s': use one of those names in the URL, "
            "or pass --servername NAME",
            sans[0] ? sans : "no name at all (it has no subjectAltName)", res->peer_name);
        return;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        say(buf, size, "%s: the server must renew it", refusal_words(res, words, sizeof(words)));
        return;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        say(buf, size, "%s: check the clocks of both machines",
            refusal_words(res, words, sizeof(words)));
        return;
    case X509_V_ERR_INVALID_PURPOSE:
        say(buf, size, "%s: the server must use a certificate issued with the server profile",
            refusal_words(res, words, sizeof(words)));
        return;
    default:
        say(buf, size, "we refused the server's certificate: %s",
            refusal_words(res, words, sizeof(words)));
        return;
    }
}

/*
 * What an answer's body says, on one line: the <title> of an HTML page
 * (nginx's "400 No required SSL certificate was sent"), else its start.
 */
static const char *body_words(const mtls_probe_result *res, char *buf, size_t size)
{
    const char *title = res->body != NULL ? strcasestr(res->body, "<title>") : NULL;
    const char *end = title != NULL ? strcasestr(title, "</title>") : NULL;

    if (res->body == NULL || res->body[0] == '\0')
        return "(no body)";
    if (end != NULL) {
        char text[256];

        snprintf(text, sizeof(text), "%.*s", (int)(end - title - 7), title + 7);
        return probe_one_line(text, 200, buf, size);
    }
    return probe_one_line(res->body, 200, buf, size);
}

static void diagnose_they_refused(const mtls_probe_result *res, char *buf, size_t size)
{
    char names[1024], date[40] = "";
    const char *alert = res->alert_received.seen ? res->alert_received.name : NULL;

    ca_names_line(res, names, sizeof(names));
    if (res->outcome == MTLS_PROBE_HTTP_REFUSED) {
        char reason[160], body[1024], answer[1400];

        say(answer, sizeof(answer), "%d %s: %s", res->http_status,
            probe_one_line(res->http_reason, 100, reason, sizeof(reason)),
            body_words(res, body, sizeof(body)));
        if (!res->http_refuses_certificate)
            say(buf, size, "the handshake succeeded, but the server answered %s", answer);
        else if (!res->ours_sent && names[0])
            say(buf, size,
                "the server requires a client certificate and you sent none (it answered %s); it "
                "accepts certificates issued by %s: pass --cert FILE --key FILE",
                answer, names);
        else if (!res->ours_sent)
            say(buf, size,
                "the server requires a client certificate and you sent none (it answered %s): "
                "pass --cert FILE --key FILE",
                answer);
        else if (res->ours_matches == 0 && names[0])
            say(buf, size,
                "the server rejected your certificate: it is issued by %s, which this server does "
                "not accept (it accepts %s); it answered %s",
                res->ours.issuer, names, answer);
        else
            say(buf, size,
                "the server rejected your certificate (%s, issued by %s) after the handshake: it "
                "answered %s; its log says why",
                res->ours.subject, res->ours.issuer, answer);
        return;
    }
    if (res->cert_requested && !res->ours_sent) {
        if (res->have_ours)
            say(buf, size,
                "the server requires a client certificate, and yours (%s) could not be sent: "
                "its key type does not fit what the server accepts",
                res->ours.subject);
        else if (names[0])
            say(buf, size,
                "the server requires a client certificate and you sent none; it accepts "
                "certificates issued by %s: pass --cert FILE --key FILE",
                names);
        else
            say(buf, size,
                "the server requires a client certificate and you sent none (it did not say "
                "which CAs it accepts): pass --cert FILE --key FILE");
        return;
    }
    if (res->ours_sent) {
        if (alert != NULL && res->alert_received.code == 45) {
            date_of(res->ours.not_after_iso, date, sizeof(date));
            say(buf, size,
                "the server rejected your certificate: certificate_expired (yours %s %s)",
                res->ours.not_after < time(NULL) ? "ended on" : "ends on", date);
            return;
        }
        if (alert != NULL && res->alert_received.code == 44) {
            say(buf, size,
                "the server rejected your certificate: certificate_revoked (serial %s was "
                "revoked by %s)",
                res->ours.serial_hex, res->ours.issuer);
            return;
        }
        if (res->ours_matches == 0 && names[0]) {
            say(buf, size,
                "your certificate is issued by %s, which this server does not accept (it "
                "accepts %s)%s%s",
                res->ours.issuer, names, alert ? "; it answered " : "", alert ? alert : "");
            return;
        }
        if (alert != NULL && res->alert_received.code == 43) {
            say(buf, size,
                "the server rejected your certificate: unsupported_certificate (is it a client "
                "certificate? its extended key usage is %s)",
                res->ours.ext_key_usage[0] ? res->ours.ext_key_usage : "empty");
            return;
        }
        if (alert != NULL) {
            say(buf, size, "the server rejected your certificate (%s, issued by %s): %s",
                res->ours.subject, res->ours.issuer, alert);
            return;
        }
        say(buf, size,
            "the server closed the connection right after receiving your certificate (%s), "
            "without an alert: it most likely rejected it; its log says why",
            res->ours.subject);
        return;
    }
    if (alert != NULL && res->alert_received.code == 112) {
        say(buf, size,
            "the server does not know the name '%s' you asked for (unrecognized_name): pass "
            "--servername with a name it serves",
            res->peer_name);
        return;
    }
    if (alert != NULL && res->alert_received.code == 70) {
        say(buf, size,
            "the server refused the handshake: protocol_version (it speaks neither TLS 1.2 "
            "nor TLS 1.3)");
        return;
    }
    say(buf, size, "the server refused the handshake: %s", alert ? alert : res->message);
}

char *probe_diagnose(const mtls_probe_result *res, const mtls_probe_opts *opts, char *buf,
                     size_t size)
{
    const char *name = res->peer_name[0] ? res->peer_name : res->url.host;

    buf[0] = '\0';
    switch (res->outcome) {
    case MTLS_PROBE_OK:
        if (res->cert_requested && res->ours_sent)
            say(buf, size,
                "mutual TLS works: the server proved it is %s with a certificate from %s, and "
                "accepted yours (%s, issued by %s)",
                name, res->n_chain ? res->chain[0].issuer : "a CA you trust", res->ours.subject,
                res->ours.issuer);
        else if (res->have_ours)
            say(buf, size,
                "TLS works, but the server did not ask for a client certificate, so yours was "
                "not sent: this server does not do mutual TLS");
        else
            say(buf, size,
                "TLS works: the server proved it is %s; it did not ask for a client certificate",
                name);
        break;
    case MTLS_PROBE_LOCAL:
        say(buf, size, "%s", res->message);
        break;
    case MTLS_PROBE_DNS:
        say(buf, size, "DNS failure: %s; check the host name in the URL", res->message);
        break;
    case MTLS_PROBE_REFUSED:
        say(buf, size,
            "connection refused: nothing listens on %s:%d; is the server running, on that port?",
            res->url.host, res->url.port);
        break;
    case MTLS_PROBE_TIMEOUT:
        say(buf, size, "timeout: %s; a firewall, or a server that does not answer", res->message);
        break;
    case MTLS_PROBE_NETWORK:
        say(buf, size, "network error: %s", res->message);
        break;
    case MTLS_PROBE_NOT_TLS:
        say(buf, size, "%s:%d does not speak TLS: it answered '%s'%s", res->url.host, res->url.port,
            res->plain_text,
            strncmp(res->plain_text, "HTTP/", 5) == 0 ? " (a plain HTTP server: use http://)" : "");
        break;
    case MTLS_PROBE_WE_REFUSED:
        diagnose_we_refused(res, opts, buf, size);
        break;
    case MTLS_PROBE_THEY_REFUSED:
    case MTLS_PROBE_HTTP_REFUSED:
        diagnose_they_refused(res, buf, size);
        break;
    case MTLS_PROBE_TLS_FAILED:
        say(buf, size, "the TLS handshake failed: %s", res->message);
        break;
    }
    return buf;
}

/* ---- findings -------------------------------------------------------- */

static void row(FILE *f, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void row(FILE *f, const char *label, const char *fmt, ...)
{
    va_list ap;

    fprintf(f, "%-12s ", label);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
}

static void print_cert(FILE *f, size_t index, const mtls_cert_info *c)
{
    char sans[512];

    fprintf(f, "  %zu subject   %s\n", index, c->subject);
    fprintf(f, "    issuer    %s\n", c->issuer);
    fprintf(f, "    valid     %s to %s\n", c->not_before_iso, c->not_after_iso);
    mtls_cert_info_sans_line(c, sans, sizeof(sans));
    if (sans[0])
        fprintf(f, "    SANs      %s\n", sans);
    fprintf(f, "    key       %s %d%s%s%s\n", c->key_type, c->key_bits, c->key_curve[0] ? " (" : "",
            c->key_curve, c->key_curve[0] ? ")" : "");
}

void probe_print_findings(FILE *f, const mtls_probe_result *res, const mtls_probe_opts *opts)
{
    const char *ok = cli_green(f), *bad = cli_red(f), *off = cli_reset(f);
    char names[1024], words[MTLS_ERR_MSG_MAX];

    if (res->address[0])
        row(f, "connected", "%s (%s)", res->address, res->url.host);
    if (res->protocol[0])
        row(f, "tls", "%s, %s", res->protocol, res->cipher);
    if (res->n_chain > 0) {
        fprintf(f, "server chain (%zu certificate%s, as sent)\n", res->n_chain,
                res->n_chain == 1 ? "" : "s");
        for (size_t i = 0; i < res->n_chain; i++)
            print_cert(f, i, &res->chain[i]);
    }
    if (res->verify_done) {
        if (res->verify_code == 0)
            row(f, "verify", "%sok%s: the chain verifies against %s and the name '%s' matches", ok,
                off, opts->files.cacert ? opts->files.cacert : "the system's CAs", res->peer_name);
        else
            row(f, "verify", "%sfailed%s: %s (depth %d)", bad, off,
                refusal_words(res, words, sizeof(words)), res->verify_depth);
    }
    if (res->stage >= MTLS_STAGE_REQUEST || res->cert_requested) {
        ca_names_line(res, names, sizeof(names));
        if (!res->cert_requested)
            row(f, "client cert", "not requested by the server");
        else if (names[0])
            row(f, "client cert", "requested; the server accepts certificates issued by %s", names);
        else
            row(f, "client cert", "requested; the server names no CA it accepts");
    }
    if (res->have_ours && (res->cert_requested || res->stage >= MTLS_STAGE_REQUEST)) {
        const char *m = !res->cert_requested     ? "not sent"
                        : !res->ours_sent        ? "not sent"
                        : res->ours_matches == 1 ? "sent; its issuer is one the server accepts"
                        : res->ours_matches == 0 ? "sent; its issuer is NOT one the server accepts"
                                                 : "sent";
        row(f, "yours", "%s (issued by %s, valid to %s): %s", res->ours.subject, res->ours.issuer,
            res->ours.not_after_iso, m);
    }
    if (res->alert_sent.seen)
        row(f, "alert sent", "%s (%d)", res->alert_sent.name, res->alert_sent.code);
    if (res->alert_received.seen)
        row(f, "alert recv", "%s (%d)%s", res->alert_received.name, res->alert_received.code,
            res->alert_received.stage >= MTLS_STAGE_REQUEST ? ", after our handshake completed"
                                                            : "");
    if (res->stage >= MTLS_STAGE_REQUEST)
        row(f, "request", "GET %s", res->url.path);
    if (res->http_status != 0) {
        char reason[160];

        row(f, "response", "%d %s", res->http_status,
            probe_one_line(res->http_reason, 100, reason, sizeof(reason)));
        if (res->body != NULL && res->body_len > 0) {
            print_body(f, res->body, res->body_len);
            fprintf(f, "%s%s", res->body[res->body_len - 1] == '\n' ? "" : "\n",
                    res->body_truncated ? "(body truncated)\n" : "");
        }
    }
}
