/*
 * HTML pages for people in browsers: content negotiation on Accept, the
 * identity page of / and /whoami, and the pages of refusals (403 in
 * verify-client optional mode and from --allow rules, 404, 405).
 *
 * The pages are small and self-contained: no script, no external asset, an
 * inline style that the Content-Security-Policy of MTLS__HTTP_HTML_HEADERS
 * allows and nothing else. Every value that comes from a certificate or a
 * request goes through html_text() first. Programs keep the JSON: a page is
 * only made when Accept prefers text/html to application/json.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "http_internal.h"

/* ---- Accept ------------------------------------------------------------ */

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* A qvalue (RFC 9110 12.4.2) in thousandths: "0", "0.5", "1", "1.000"; -1 when malformed. */
static int qvalue(const char *s, size_t n)
{
    int q, scale = 100;

    if (n == 0 || (s[0] != '0' && s[0] != '1'))
        return -1;
    q = (s[0] - '0') * 1000;
    if (n == 1)
        return q;
    if (s[1] != '.' || n > 5)
        return -1;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        q += (s[i] - '0') * scale;
    }
    return q <= 1000 ? q : -1;
}

/* How specifically range (type/subtype, len n) names type/sub: 3 exactly, 2 type/x, 1 x/x, 0 not.
 */
static int specificity(const char *range, size_t n, const char *type, const char *sub)
{
    size_t tlen = strlen(type), slen = strlen(sub);

    if (n == 3 && memcmp(range, "*/*", 3) == 0)
        return 1;
    if (n < tlen + 2 || strncasecmp(range, type, tlen) != 0 || range[tlen] != '/')
        return 0;
    if (n == tlen + 2 && range[tlen + 1] == '*')
        return 2;
    if (n == tlen + 1 + slen && strncasecmp(range + tlen + 1, sub, slen) == 0)
        return 3;
    return 0;
}

struct pref {
    int spec; /* of the most specific range that matched so far */
    int q;
};

static void note(struct pref *p, int spec, int q)
{
    if (spec > p->spec || (spec == p->spec && q > p->q)) {
        p->spec = spec;
        p->q = q;
    }
}

/* Reads one element of an Accept list, s[0, n): a media range and its q (1000 when none). */
static void accept_element(const char *s, size_t n, struct pref *html, struct pref *json)
{
    size_t i = 0, range_len;
    const char *range;
    int q = 1000;

    while (i < n && is_ows(s[i]))
        i++;
    range = s + i;
    while (i < n && s[i] != ';' && !is_ows(s[i]))
        i++;
    range_len = (size_t)(s + i - range);
    /* Parameters: the first q= ends the media type's own; what follows is ignored. */
    while (i < n) {
        size_t name, name_end, value;

        while (i < n && (is_ows(s[i]) || s[i] == ';'))
            i++;
        name = i;
        while (i < n && s[i] != '=' && s[i] != ';')
            i++;
        name_end = i;
        if (i < n && s[i] == '=')
            i++;
        value = i;
        while (i < n && s[i] != ';' && !is_ows(s[i]))
            i++;
        if (name_end - name == 1 && (s[name] == 'q' || s[name] == 'Q')) {
            q = qvalue(s + value, i - value);
            break;
        }
    }
    if (range_len == 0 || q < 0)
        return; /* an empty element, or a q that means nothing: ignored */
    note(html, specificity(range, range_len, "text", "html"), q);
    note(json, specificity(range, range_len, "application", "json"), q);
}

int mtls__http_prefers_html(const mtls_http_header *h, size_t n)
{
    struct pref html = {0, 0}, json = {0, 0};

    for (size_t k = 0; k < n; k++) {
        const char *v = h[k].value, *end = v + h[k].value_len;

        if (h[k].name_len != 6 || strncasecmp(h[k].name, "accept", 6) != 0)
            continue;
        while (v < end) {
            const char *comma = memchr(v, ',', (size_t)(end - v));
            const char *stop = comma ? comma : end;

            accept_element(v, (size_t)(stop - v), &html, &json);
            v = comma ? comma + 1 : end;
        }
    }
    /* A tie (no Accept, "*" + "/" + "*", both named alike) keeps the JSON. */
    return html.spec > 0 && html.q > 0 && html.q > (json.spec > 0 ? json.q : 0);
}

/* ---- HTML text ------------------------------------------------------------ */

void mtls__html_text(mtls_strbuf *b, const char *s, size_t n)
{
    size_t from = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *rep = NULL;
        char hex[8];

        switch (ch) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            if ((ch < 0x20 && ch != '\t' && ch != '\n') || ch == 0x7f) {
                /* No character reference may name these: show the byte. */
                snprintf(hex, sizeof(hex), "\\x%02X", ch);
                rep = hex;
            }
        }
        if (rep == NULL)
            continue;
        mtls_strbuf_add(b, s + from, i - from);
        mtls_strbuf_str(b, rep);
        from = i + 1;
    }
    mtls_strbuf_add(b, s + from, n - from);
}

static void text(mtls_strbuf *b, const char *s)
{
    mtls__html_text(b, s, strlen(s));
}

/* ---- the page's frame ------------------------------------------------------ */

static const char STYLE[] =
    ":root{color-scheme:light dark}"
    "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}"
    "h1{font-size:1.5rem}dt{font-weight:600;margin-top:.5rem}dd{margin-left:1rem;"
    "overflow-wrap:anywhere}code,pre{font-family:ui-monospace,monospace;font-size:.9em}"
    "pre{white-space:pre-wrap;overflow-wrap:anywhere;padding:.5rem;border:1px solid #8888}"
    ".bad{border-left:4px solid #c00;padding-left:.75rem}"
    ".ok{border-left:4px solid #080;padding-left:.75rem}";

static void page_begin(mtls_strbuf *b, const char *title)
{
    mtls_strbuf_str(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                       "<title>");
    text(b, title);
    mtls_strbuf_str(b, " - mtls</title>\n<style>");
    mtls_strbuf_str(b, STYLE);
    mtls_strbuf_str(b, "</style>\n</head>\n<body>\n<main>\n<h1>");
    text(b, title);
    mtls_strbuf_str(b, "</h1>\n");
}

static void page_end(mtls_strbuf *b)
{
    mtls_strbuf_str(b, "</main>\n</body>\n</html>\n");
}

static void term(mtls_strbuf *b, const char *name, const char *value)
{
    if (value == NULL || value[0] == '\0')
        return;
    mtls_strbuf_str(b, "<dt>");
    mtls_strbuf_str(b, name);
    mtls_strbuf_str(b, "</dt><dd>");
    text(b, value);
    mtls_strbuf_str(b, "</dd>\n");
}

/* ---- who you are ------------------------------------------------------------- */

static const char *str_at(const cJSON *o, const char *key)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));

    return s != NULL ? s : "";
}

static void sans_term(mtls_strbuf *b, const cJSON *sans)
{
    const cJSON *san;
    int first = 1;

    if (cJSON_GetArraySize(sans) == 0)
        return;
    mtls_strbuf_str(b, "<dt>Alternative names</dt><dd><ul>");
    cJSON_ArrayForEach(san, sans)
    {
        mtls_strbuf_str(b, first ? "<li>" : "</li><li>");
        text(b, str_at(san, "type"));
        mtls_strbuf_str(b, ": ");
        text(b, str_at(san, "value"));
        first = 0;
    }
    mtls_strbuf_str(b, "</li></ul></dd>\n");
}

int mtls__http_page_whoami(mtls_strbuf *b, const char *json, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *client = cJSON_GetObjectItemCaseSensitive(root, "client");
    const cJSON *tls = cJSON_GetObjectItemCaseSensitive(root, "tls");
    const cJSON *resumed = cJSON_GetObjectItemCaseSensitive(tls, "resumed");
    char valid[160], session[200];

    if (!cJSON_IsObject(client)) {
        cJSON_Delete(root);
        return -1;
    }
    page_begin(b, "Who you are");
    mtls_strbuf_str(b, "<p class=\"ok\">Your browser presented a client certificate that this "
                       "server verified. You are <strong>");
    text(b, str_at(client, "subject"));
    mtls_strbuf_str(b, "</strong>.</p>\n<h2>Your certificate</h2>\n<dl>\n");
    term(b, "Subject", str_at(client, "subject"));
    term(b, "Issued by", str_at(client, "issuer"));
    sans_term(b, cJSON_GetObjectItemCaseSensitive(client, "sans"));
    term(b, "Serial number", str_at(client, "serial"));
    snprintf(valid, sizeof(valid), "%s (until %s)", str_at(client, "expires"),
             str_at(client, "not_after"));
    term(b, "Valid", str_at(client, "expires")[0] ? valid : str_at(client, "not_after"));
    term(b, "SHA-256 fingerprint", str_at(client, "sha256"));
    mtls_strbuf_str(b, "</dl>\n<h2>This connection</h2>\n<dl>\n");
    snprintf(session, sizeof(session), "%s, %s", str_at(tls, "version"), str_at(tls, "cipher"));
    term(b, "Protocol", session);
    if (cJSON_IsBool(resumed))
        term(b, "Session",
             cJSON_IsTrue(resumed)
                 ? "resumed: the certificate was verified on an earlier connection"
                 : "new: the certificate was verified in this handshake");
    mtls_strbuf_str(b,
                    "</dl>\n<p>Programs get the same facts as JSON from <code>/whoami</code> "
                    "(any <code>Accept</code> that does not prefer <code>text/html</code>).</p>\n");
    page_end(b);
    cJSON_Delete(root);
    return b->failed ? -1 : 0;
}

/* ---- refusals ------------------------------------------------------------------ */

static void accepted_ca(mtls_strbuf *b, const mtls_http_peer *peer)
{
    if (peer == NULL || peer->accepted_ca == NULL || peer->accepted_ca[0] == '\0')
        return;
    mtls_strbuf_str(b, "<p>This server accepts client certificates issued by <strong>");
    text(b, peer->accepted_ca);
    mtls_strbuf_str(b, "</strong>.</p>\n");
}

static void how_to_get_one(mtls_strbuf *b)
{
    mtls_strbuf_str(
        b,
        "<h2>How to get and install a client certificate</h2>\n<ol>\n"
        "<li>Ask whoever runs this server for a client certificate from that CA. With mtls they "
        "issue one with <code>mtls cert issue --ca CA --profile client --cn NAME --out NAME</code> "
        "and bundle it with its key for browsers with <code>mtls cert p12 --cert NAME.crt --key "
        "NAME.key --out NAME.p12 --password-file FILE</code>.</li>\n"
        "<li>Import the <code>.p12</code> file with its password: in Chrome or Edge, Settings, "
        "Privacy and security, Security, Manage certificates, Import; in Firefox, Settings, "
        "Privacy &amp; Security, Certificates, View Certificates, Your Certificates, Import; on "
        "Linux, Chromium reads <code>pk12util -d sql:$HOME/.pki/nssdb -i NAME.p12</code>; on "
        "macOS, open the file in Keychain Access.</li>\n"
        "<li>Restart the browser, open this page again and choose the certificate when the "
        "browser asks.</li>\n</ol>\n");
}

static void path_text(mtls_strbuf *b, const mtls_http_request *req)
{
    mtls_strbuf_str(b, "<code>");
    mtls__html_text(b, req->target, req->path_len);
    mtls_strbuf_str(b, "</code>");
}

int mtls__http_page_refusal(mtls_strbuf *b, int status, const char *error, const char *reason,
                            const mtls_http_request *req, const char *allow)
{
    const mtls_http_peer *peer = req->peer;

    switch (status) {
    case 403:
        if (peer != NULL && peer->denied != NULL) {
            page_begin(b, "A client certificate is needed");
            mtls_strbuf_str(b, "<p>This server lets in only clients whose browser presents a "
                               "client certificate that it trusts.</p>\n<p class=\"bad\">");
            text(b, reason ? reason : error);
            mtls_strbuf_str(b, "</p>\n");
        } else {
            page_begin(b, "Your certificate is not allowed here");
            mtls_strbuf_str(b, "<p>Your certificate was verified, but the rules of this server "
                               "do not let it reach this page.</p>\n<p class=\"bad\">");
            text(b, reason ? reason : error);
            mtls_strbuf_str(b, "</p>\n<p>Ask whoever runs this server to allow you, or use a "
                               "certificate that the rules name.</p>\n");
        }
        accepted_ca(b, peer);
        how_to_get_one(b);
        break;
    case 404:
        page_begin(b, "Not found");
        mtls_strbuf_str(b, "<p>There is nothing at ");
        path_text(b, req);
        mtls_strbuf_str(b, " on this server. <a href=\"/\">Who you are</a> is at "
                           "<code>/</code>.</p>\n");
        break;
    case 405:
        page_begin(b, "Method not allowed");
        mtls_strbuf_str(b, "<p>");
        text(b, req->method_name ? req->method_name : "This method");
        mtls_strbuf_str(b, " is not allowed on ");
        path_text(b, req);
        mtls_strbuf_str(b, ".");
        if (allow != NULL) {
            mtls_strbuf_str(b, " Allowed: ");
            text(b, allow);
            mtls_strbuf_str(b, ".");
        }
        mtls_strbuf_str(b, "</p>\n");
        break;
    default:
        page_begin(b, error);
        if (reason != NULL) {
            mtls_strbuf_str(b, "<p>");
            text(b, reason);
            mtls_strbuf_str(b, "</p>\n");
        }
    }
    page_end(b);
    return b->failed ? -1 : 0;
}
