/*
 * The verified client identity as request headers for the upstream:
 * RFC 9440 (Client-Cert, Client-Cert-Chain), Envoy's X-Forwarded-Client-Cert,
 * and plain X-Client-* lines. Built once per connection by the server; the
 * proxy removes every inbound copy of all of them, whatever is selected
 * (proxy.c), so that a client can never claim an identity itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "mtls/certinfo.h"
#include "proxy.h"

/*
 * A header value from certificate text: bytes outside printable ASCII
 * become %XX, so that no name can end a header line or smuggle another.
 */
static void put_value(mtls_strbuf *b, const char *s, size_t n, const char *also_escape)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch < 0x20 || ch >= 0x7f || ch == '%' || (also_escape && strchr(also_escape, ch))) {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};

            mtls_strbuf_add(b, e, 3);
        } else {
            mtls_strbuf_add(b, (const char *)&ch, 1);
        }
    }
}

/* ":BASE64:" of cert's DER (an RFC 8941 byte sequence). */
static void put_der(mtls_strbuf *b, X509 *cert)
{
    unsigned char *der = NULL, *b64;
    int len = i2d_X509(cert, &der);

    if (len <= 0) {
        b->failed = 1;
        return;
    }
    b64 = malloc(((size_t)len + 2) / 3 * 4 + 1);
    if (b64 == NULL) {
        OPENSSL_free(der);
        b->failed = 1;
        return;
    }
    EVP_EncodeBlock(b64, der, len);
    mtls_strbuf_add(b, ":", 1);
    mtls_strbuf_str(b, (const char *)b64);
    mtls_strbuf_add(b, ":", 1);
    free(b64);
    OPENSSL_free(der);
}

/* RFC 2253 ("CN=x,O=y"): what nginx's $ssl_client_s_dn and Envoy's Subject show. */
static void rfc2253(const X509_NAME *name, char *buf, size_t size)
{
    BIO *bio = BIO_new(BIO_s_mem());
    int n = -1;

    buf[0] = '\0';
    if (bio != NULL && X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0)
        n = BIO_read(bio, buf, (int)size - 1);
    buf[n > 0 ? n : 0] = '\0';
    BIO_free(bio);
}

/* "AB:CD:..." -> "abcd..." */
static void plain_hex(const char *colons, char *out, size_t size)
{
    size_t o = 0;

    for (const char *p = colons; *p != '\0' && o + 1 < size; p++)
        if (*p != ':')
            out[o++] = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
    out[o] = '\0';
}

static void sans_of(mtls_strbuf *b, const mtls_cert_info *info, const char *type)
{
    int first = 1;

    for (size_t i = 0; i < info->n_sans; i++) {
        if (strcmp(info->sans[i].type, type) != 0)
            continue;
        if (!first)
            mtls_strbuf_str(b, ", ");
        put_value(b, info->sans[i].value, strlen(info->sans[i].value), ",");
        first = 0;
    }
}

static int has_san(const mtls_cert_info *info, const char *type)
{
    for (size_t i = 0; i < info->n_sans; i++)
        if (strcmp(info->sans[i].type, type) == 0)
            return 1;
    return 0;
}

/* An XFCC value: quoted when it holds one of , ; = " (Envoy's rule), '"' escaped. */
static void xfcc_value(mtls_strbuf *b, const char *s)
{
    if (strpbrk(s, ",;=\"") == NULL) {
        put_value(b, s, strlen(s), NULL);
        return;
    }
    mtls_strbuf_add(b, "\"", 1);
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            mtls_strbuf_add(b, "\\", 1);
        put_value(b, p, 1, NULL);
    }
    mtls_strbuf_add(b, "\"", 1);
}

int mtls__identity_headers(X509 *cert, STACK_OF(X509) * chain, const char *failed,
                           unsigned families, char **out, size_t *out_len)
{
    mtls_strbuf b = {0};
    mtls_cert_info info;
    mtls_err err;
    char subject[MTLS_NAME_MAX], issuer[MTLS_NAME_MAX], hash[80];
    int have_info = 0;

    *out = NULL;
    *out_len = 0;
    memset(&info, 0, sizeof(info));
    if (cert != NULL && mtls_cert_info_init(&info, cert, &err) == 0)
        have_info = 1;
    if (have_info) {
        rfc2253(X509_get_subject_name(cert), subject, sizeof(subject));
        rfc2253(X509_get_issuer_name(cert), issuer, sizeof(issuer));
        plain_hex(info.sha256, hash, sizeof(hash));
    }
    /* RFC 9440 and XFCC speak of verified certificates only. */
    if ((families & MTLS_IDH_RFC9440) && have_info && failed == NULL) {
        int n = chain ? sk_X509_num(chain) : 0, first = 1;

        mtls_strbuf_str(&b, "Client-Cert: ");
        put_der(&b, cert);
        mtls_strbuf_str(&b, "\r\n");
        for (int i = 0; i < n; i++) {
            X509 *x = sk_X509_value(chain, i);

            if (X509_cmp(x, cert) == 0)
                continue; /* the leaf is Client-Cert's */
            mtls_strbuf_str(&b, first ? "Client-Cert-Chain: " : ", ");
            put_der(&b, x);
            first = 0;
        }
        if (!first)
            mtls_strbuf_str(&b, "\r\n");
    }
    if ((families & MTLS_IDH_XFCC) && have_info && failed == NULL) {
        mtls_strbuf_str(&b, "X-Forwarded-Client-Cert: Hash=");
        mtls_strbuf_str(&b, hash);
        mtls_strbuf_str(&b, ";Subject=\"");
        for (const char *p = subject; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\')
                mtls_strbuf_add(&b, "\\", 1);
            put_value(&b, p, 1, NULL);
        }
        mtls_strbuf_str(&b, "\"");
        /* Envoy's order: Hash, Subject, every URI, then every DNS. */
        for (int pass = 0; pass < 2; pass++) {
            const char *type = pass == 0 ? "URI" : "DNS";

            for (size_t i = 0; i < info.n_sans; i++) {
                if (strcmp(info.sans[i].type, type) != 0)
                    continue;
                mtls_strbuf_str(&b, pass == 0 ? ";URI=" : ";DNS=");
                xfcc_value(&b, info.sans[i].value);
            }
        }
        mtls_strbuf_str(&b, "\r\n");
    }
    if (families & MTLS_IDH_PLAIN) {
        mtls_strbuf_str(&b, "X-Client-Verify: ");
        if (failed != NULL) {
            mtls_strbuf_str(&b, cert != NULL ? "FAILED:" : "NONE");
            if (cert != NULL)
                put_value(&b, failed, strlen(failed), NULL);
        } else {
            mtls_strbuf_str(&b, have_info ? "SUCCESS" : "NONE");
        }
        mtls_strbuf_str(&b, "\r\n");
        if (have_info) {
            mtls_strbuf_str(&b, "X-Client-Subject: ");
            put_value(&b, subject, strlen(subject), NULL);
            mtls_strbuf_str(&b, "\r\nX-Client-Issuer: ");
            put_value(&b, issuer, strlen(issuer), NULL);
            mtls_strbuf_str(&b, "\r\nX-Client-Serial: ");
            mtls_strbuf_str(&b, info.serial_hex);
            mtls_strbuf_str(&b, "\r\nX-Client-SHA256: ");
            mtls_strbuf_str(&b, hash);
            mtls_strbuf_str(&b, "\r\nX-Client-Not-After: ");
            mtls_strbuf_str(&b, info.not_after_iso);
            mtls_strbuf_str(&b, "\r\n");
            if (has_san(&info, "URI")) {
                mtls_strbuf_str(&b, "X-Client-SAN-URI: ");
                sans_of(&b, &info, "URI");
                mtls_strbuf_str(&b, "\r\n");
            }
            if (has_san(&info, "DNS")) {
                mtls_strbuf_str(&b, "X-Client-SAN-DNS: ");
                sans_of(&b, &info, "DNS");
                mtls_strbuf_str(&b, "\r\n");
            }
        }
    }
    if (have_info)
        mtls_cert_info_release(&info);
    if (b.failed) {
        free(b.p);
        return MTLS_E_NOMEM;
    }
    if (b.p == NULL) {
        b.p = strdup("");
        if (b.p == NULL)
            return MTLS_E_NOMEM;
    }
    *out = b.p;
    *out_len = b.len;
    return 0;
}

/* Every name of every family, lower-case: removed from inbound requests. */
static const char *const identity_names[] = {
    "client-cert",      "client-cert-chain",  "x-forwarded-client-cert", "x-client-subject",
    "x-client-issuer",  "x-client-serial",    "x-client-sha256",         "x-client-san-uri",
    "x-client-san-dns", "x-client-not-after", "x-client-verify",
};

int mtls__identity_header_name(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(identity_names) / sizeof(identity_names[0]); i++)
        if (strlen(identity_names[i]) == len && strncasecmp(identity_names[i], name, len) == 0)
            return 1;
    return 0;
}

int mtls__identity_families_parse(const char *list, unsigned *out, mtls_err *err)
{
    const char *p = list;

    *out = 0;
    while (*p != '\0') {
        size_t n = strcspn(p, ",");

        if (n == 7 && strncasecmp(p, "rfc9440", 7) == 0)
            *out |= MTLS_IDH_RFC9440;
        else if (n == 4 && strncasecmp(p, "xfcc", 4) == 0)
            *out |= MTLS_IDH_XFCC;
        else if (n == 5 && strncasecmp(p, "plain", 5) == 0)
            *out |= MTLS_IDH_PLAIN;
        else if (n == 4 && strncasecmp(p, "none", 4) == 0)
            ;
        else
            return mtls_err_set(err, MTLS_E_INVALID,
                                "identity header family '%.*s' is unknown (known: rfc9440, xfcc, "
                                "plain, none)",
                                (int)n, p);
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}
