/*
 * Authorization rules on a client certificate: parsed once from --allow,
 * matched once per connection. A pure function of the certificate.
 */
#include "mtls/identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "mtls/certinfo.h"

static const struct {
    const char *name;
    mtls_allow_kind kind;
} kinds[] = {
    {"cn", MTLS_ALLOW_CN},
    {"o", MTLS_ALLOW_O},
    {"ou", MTLS_ALLOW_OU},
    {"san-dns", MTLS_ALLOW_SAN_DNS},
    {"san-uri", MTLS_ALLOW_SAN_URI},
    {"san-email", MTLS_ALLOW_SAN_EMAIL},
    {"issuer", MTLS_ALLOW_ISSUER},
    {"spki-sha256", MTLS_ALLOW_SPKI_SHA256},
    {"cert-sha256", MTLS_ALLOW_CERT_SHA256},
};
#define N_KINDS (sizeof(kinds) / sizeof(kinds[0]))

static const char *kind_name(mtls_allow_kind kind)
{
    for (size_t i = 0; i < N_KINDS; i++)
        if (kinds[i].kind == kind)
            return kinds[i].name;
    return "?";
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* 64 hex digits (colons allowed between pairs) or 44 characters of base64. */
static int parse_digest(const char *s, unsigned char out[32])
{
    size_t n = 0;

    for (const char *p = s; *p != '\0'; p++) {
        int hi, lo;

        if (*p == ':')
            continue;
        hi = hexval(p[0]);
        lo = p[1] != '\0' ? hexval(p[1]) : -1;
        if (hi < 0 || lo < 0 || n == 32)
            goto base64;
        out[n++] = (unsigned char)(hi * 16 + lo);
        p++;
    }
    if (n == 32)
        return 0;
base64:
    if (strlen(s) == 44) {
        unsigned char buf[36];

        if (EVP_DecodeBlock(buf, (const unsigned char *)s, 44) == 33 && s[43] == '=') {
            memcpy(out, buf, 32);
            return 0;
        }
    }
    return -1;
}

static char *policy_text(const mtls_allow_policy *p)
{
    size_t len = 1;
    char *text, *o;

    for (size_t i = 0; i < p->n; i++)
        len += strlen(kind_name(p->rules[i].kind)) + strlen(p->rules[i].value) + 3;
    text = malloc(len);
    if (text == NULL)
        return NULL;
    o = text;
    *o = '\0';
    for (size_t i = 0; i < p->n; i++)
        o += sprintf(o, "%s%s %s", i ? ", " : "", kind_name(p->rules[i].kind), p->rules[i].value);
    return text;
}

int mtls_allow_policy_add(mtls_allow_policy *p, const char *text, mtls_err *err)
{
    const char *eq = strchr(text, '=');
    mtls_allow_rule rule, *grown;
    size_t name_len;
    char *new_text;
    int found = 0;

    memset(&rule, 0, sizeof(rule));
    if (eq == NULL)
        return mtls_err_set(err, MTLS_E_INVALID,
                            "rule '%s' needs TYPE=VALUE (types: cn, o, ou, san-dns, san-uri, "
                            "san-email, issuer, spki-sha256, cert-sha256)",
                            text);
    name_len = (size_t)(eq - text);
    for (size_t i = 0; i < N_KINDS; i++) {
        if (strlen(kinds[i].name) == name_len && strncasecmp(kinds[i].name, text, name_len) == 0) {
            rule.kind = kinds[i].kind;
            found = 1;
        }
    }
    if (!found)
        return mtls_err_set(err, MTLS_E_INVALID,
                            "rule '%s': unknown type '%.*s' (types: cn, o, ou, san-dns, san-uri, "
                            "san-email, issuer, spki-sha256, cert-sha256)",
                            text, (int)name_len, text);
    if (eq[1] == '\0')
        return mtls_err_set(err, MTLS_E_INVALID, "rule '%s' has an empty value", text);
    if ((rule.kind == MTLS_ALLOW_SPKI_SHA256 || rule.kind == MTLS_ALLOW_CERT_SHA256) &&
        parse_digest(eq + 1, rule.digest) != 0)
        return mtls_err_set(err, MTLS_E_INVALID,
                            "rule '%s': a SHA-256 must be 64 hex digits (colons allowed) or 44 "
                            "characters of base64",
                            text);
    rule.value = strdup(eq + 1);
    grown = rule.value ? realloc(p->rules, (p->n + 1) * sizeof(*p->rules)) : NULL;
    if (grown == NULL) {
        free(rule.value);
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    }
    p->rules = grown;
    p->rules[p->n++] = rule;
    new_text = policy_text(p);
    if (new_text == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    free(p->text);
    p->text = new_text;
    return 0;
}

void mtls_allow_policy_release(mtls_allow_policy *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->rules[i].value);
    free(p->rules);
    free(p->text);
    memset(p, 0, sizeof(*p));
}

/* Whether an ASN1 string equals value (UTF-8), exactly or ignoring ASCII case. */
static int asn1_equals(const ASN1_STRING *s, const char *value, int nocase)
{
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, s), eq;

    if (len < 0)
        return 0;
    eq =
        (size_t)len == strlen(value) && (nocase ? strncasecmp((char *)utf8, value, (size_t)len) == 0
                                                : memcmp(utf8, value, (size_t)len) == 0);
    OPENSSL_free(utf8);
    return eq;
}

static int name_has(const X509_NAME *name, int nid, const char *value)
{
    int idx = -1;

    while ((idx = X509_NAME_get_index_by_NID(name, nid, idx)) >= 0) {
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, idx);

        if (asn1_equals(X509_NAME_ENTRY_get_data(e), value, 0))
            return 1;
    }
    return 0;
}

/*
 * A URI against a pattern where '*' stands for one path segment: one or more
 * characters, none of them '/'. Each way of splitting the segment is tried,
 * so "a*b" matches "axbxb".
 */
static int uri_glob(const char *pat, const char *s, const char *end)
{
    for (; *pat != '\0'; pat++, s++) {
        if (*pat == '*') {
            for (const char *p = s + 1; p <= end && p[-1] != '/'; p++)
                if (uri_glob(pat + 1, p, end))
                    return 1;
            return 0;
        }
        if (s == end || *s != *pat)
            return 0;
    }
    return s == end;
}

static int san_has(X509 *cert, int type, const mtls_allow_rule *rule)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int found = 0;

    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        const ASN1_IA5STRING *s;

        if (g->type != type)
            continue;
        s = g->d.ia5;
        if (type == GEN_URI)
            found = uri_glob(rule->value, (const char *)ASN1_STRING_get0_data(s),
                             (const char *)ASN1_STRING_get0_data(s) + ASN1_STRING_length(s));
        else
            found = asn1_equals(s, rule->value, 1);
    }
    GENERAL_NAMES_free(gens);
    return found;
}

/* Trims spaces after commas so "CN=ca, O=x" and "CN=ca,O=x" compare equal. */
static void squeeze(char *s)
{
    char *w = s;

    for (const char *r = s; *r != '\0'; r++) {
        if (*r == ' ' && r > s && (r[-1] == ',' || r[-1] == '+'))
            continue;
        *w++ = *r;
    }
    *w = '\0';
}

static int issuer_is(X509 *cert, const char *value)
{
    const X509_NAME *issuer = X509_get_issuer_name(cert);
    char one[MTLS_NAME_MAX], want[MTLS_NAME_MAX], rfc[MTLS_NAME_MAX];
    BIO *bio = BIO_new(BIO_s_mem());
    int n, eq;

    snprintf(want, sizeof(want), "%s", value);
    squeeze(want);
    mtls_name_oneline(issuer, one, sizeof(one));
    squeeze(one);
    eq = strcmp(one, want) == 0;
    if (!eq && bio != NULL && X509_NAME_print_ex(bio, issuer, 0, XN_FLAG_RFC2253) >= 0) {
        n = BIO_read(bio, rfc, (int)sizeof(rfc) - 1);
        rfc[n > 0 ? n : 0] = '\0';
        squeeze(rfc);
        eq = strcmp(rfc, want) == 0;
    }
    BIO_free(bio);
    return eq;
}

static int digest_is(X509 *cert, const mtls_allow_rule *rule)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int ok;

    if (rule->kind == MTLS_ALLOW_CERT_SHA256) {
        ok = X509_digest(cert, EVP_sha256(), md, &len);
    } else {
        /* The DER SubjectPublicKeyInfo, as HPKP and `openssl pkey -pubin -outform DER` hash
           it (X509_pubkey_digest() would hash the key bits alone). */
        unsigned char *der = NULL;
        int der_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);

        ok = der_len > 0 && EVP_Digest(der, (size_t)der_len, md, &len, EVP_sha256(), NULL);
        OPENSSL_free(der);
    }
    return ok == 1 && len == 32 && memcmp(md, rule->digest, 32) == 0;
}

static int rule_matches(const mtls_allow_rule *rule, X509 *cert)
{
    const X509_NAME *subject = X509_get_subject_name(cert);

    switch (rule->kind) {
    case MTLS_ALLOW_CN:
        return name_has(subject, NID_commonName, rule->value);
    case MTLS_ALLOW_O:
        return name_has(subject, NID_organizationName, rule->value);
    case MTLS_ALLOW_OU:
        return name_has(subject, NID_organizationalUnitName, rule->value);
    case MTLS_ALLOW_SAN_DNS:
        return san_has(cert, GEN_DNS, rule);
    case MTLS_ALLOW_SAN_URI:
        return san_has(cert, GEN_URI, rule);
    case MTLS_ALLOW_SAN_EMAIL:
        return san_has(cert, GEN_EMAIL, rule);
    case MTLS_ALLOW_ISSUER:
        return issuer_is(cert, rule->value);
    case MTLS_ALLOW_SPKI_SHA256:
    case MTLS_ALLOW_CERT_SHA256:
        return digest_is(cert, rule);
    }
    return 0;
}

int mtls_allow_policy_match(const mtls_allow_policy *p, X509 *cert)
{
    if (cert == NULL)
        return 0;
    if (p == NULL || p->n == 0)
        return 1;
    for (size_t i = 0; i < p->n; i++)
        if (rule_matches(&p->rules[i], cert))
            return 1;
    return 0;
}

char *mtls_identity_who(X509 *cert, char *buf, size_t size)
{
    const X509_NAME *subject;
    int idx;

    if (cert == NULL) {
        snprintf(buf, size, "a client without a verified certificate");
        return buf;
    }
    subject = X509_get_subject_name(cert);
    idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (idx >= 0) {
        int last = idx;
        unsigned char *utf8 = NULL;
        int len;

        while ((idx = X509_NAME_get_index_by_NID(subject, NID_commonName, idx)) >= 0)
            last = idx;
        len = ASN1_STRING_to_UTF8(&utf8,
                                  X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, last)));
        if (len >= 0) {
            snprintf(buf, size, "CN=%.*s", len, (char *)utf8);
            OPENSSL_free(utf8);
            return buf;
        }
    }
    return mtls_name_oneline(subject, buf, size);
}
