/* Names: common names, subjectAltNames, profiles, dates for people. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "mtls/pki.h"
#include "pki_internal.h"

static int valid_utf8(const unsigned char *s)
{
    while (*s != '\0') {
        int extra;

        if (*s < 0x80)
            extra = 0;
        else if ((*s & 0xE0) == 0xC0)
            extra = 1;
        else if ((*s & 0xF0) == 0xE0)
            extra = 2;
        else if ((*s & 0xF8) == 0xF0)
            extra = 3;
        else
            return 0;
        s++;
        for (int i = 0; i < extra; i++, s++) {
            if ((*s & 0xC0) != 0x80)
                return 0;
        }
    }
    return 1;
}

/* A value typed by a person, fit to quote in a one-line message: control
 * bytes (and, when it is not UTF-8, every byte above ASCII) as \xHH, cut
 * with "..." when long. Returns buf. */
static const char *shown(const char *value, char *buf, size_t size)
{
    int high = !valid_utf8((const unsigned char *)value);
    size_t used = 0;

    for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
        int escape = *p < 0x20 || *p == 0x7F || (high && *p >= 0x80);

        if (used + 8 >= size) {
            snprintf(buf + used, size - used, "...");
            return buf;
        }
        used += (size_t)snprintf(buf + used, size - used, escape ? "\\x%02X" : "%c", *p);
    }
    buf[used] = '\0';
    return buf;
}

int mtls_cn_check(const char *cn, mtls_err *err)
{
    size_t chars = 0;
    char quoted[160];
    const unsigned char *p;

    if (cn[0] == '\0')
        return mtls_err_set(err, MTLS_E_INVALID, "the common name is empty: pass --cn NAME");
    if (!valid_utf8((const unsigned char *)cn))
        return mtls_err_set(err, MTLS_E_INVALID, "common name '%s' is not valid UTF-8",
                            shown(cn, quoted, sizeof(quoted)));
    for (p = (const unsigned char *)cn; *p == ' '; p++)
        ;
    if (*p == '\0')
        return mtls_err_set(err, MTLS_E_INVALID, "the common name is blank: pass --cn NAME");
    for (p = (const unsigned char *)cn; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7F)
            return mtls_err_set(err, MTLS_E_INVALID,
                                "common name '%s' contains a control character",
                                shown(cn, quoted, sizeof(quoted)));
        if ((*p & 0xC0) != 0x80)
            chars++;
    }
    /* X.520's upper bound for a commonName (ub-common-name). */
    if (chars > 64)
        return mtls_err_set(err, MTLS_E_INVALID, "common name '%s' is longer than 64 characters",
                            shown(cn, quoted, sizeof(quoted)));
    return 0;
}

int mtls_name_from_cn(const char *cn, X509_NAME **out, mtls_err *err)
{
    X509_NAME *name;
    int rc;

    *out = NULL;
    rc = mtls_cn_check(cn, err);
    if (rc != 0)
        return rc;
    name = X509_NAME_new();
    if (name == NULL || X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                                   (const unsigned char *)cn, -1, -1, 0) != 1) {
        X509_NAME_free(name);
        return mtls_err_ssl(err, MTLS_E_INVALID, "cannot use '%s' as a common name", cn);
    }
    *out = name;
    return 0;
}

static int valid_dns(const char *s)
{
    size_t len = strlen(s), label = 0;

    if (len == 0 || len > 253)
        return 0;
    /* A wildcard is only allowed as the whole leftmost label. */
    if (s[0] == '*') {
        if (s[1] != '.' || s[2] == '\0')
            return 0;
        s += 2;
    }
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0 || p[-1] == '-')
                return 0;
            if (*p == '\0')
                return 1;
            label = 0;
            continue;
        }
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_'))
            return 0;
        if (label == 0 && *p == '-')
            return 0;
        if (++label > 63)
            return 0;
    }
}

static int prefix_is(const char *value, const char *prefix, const char **rest)
{
    size_t n = strlen(prefix);

    if (strncasecmp(value, prefix, n) != 0)
        return 0;
    *rest = value + n;
    return 1;
}

/* 1 when every byte of s is printable ASCII without blanks (an IA5 name). */
static int plain_ascii(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7F)
            return 0;
    }
    return 1;
}

/* Checks the value v of a SAN of type (ip: its parsed address, for IP);
 * value is what the person typed, quoted in the message. */
static int check_san(int type, const ASN1_OCTET_STRING *ip, const char *v, const char *value,
                     mtls_err *err)
{
    char quoted[160];

    switch (type) {
    case GEN_IPADD:
        if (ip == NULL)
            return mtls_err_set(err, MTLS_E_INVALID, "SAN '%s' is not an IPv4 or IPv6 address",
                                shown(value, quoted, sizeof(quoted)));
        return 0;
    case GEN_DNS:
        if (!valid_dns(v))
            return mtls_err_set(err, MTLS_E_INVALID,
                                "SAN '%s' is not a valid host name (letters, digits, '-' and '.'; "
                                "a leading '*.' for a wildcard; an international name in its "
                                "xn-- form)",
                                shown(value, quoted, sizeof(quoted)));
        return 0;
    case GEN_EMAIL:
        if (strchr(v, '@') == NULL || !plain_ascii(v))
            return mtls_err_set(err, MTLS_E_INVALID,
                                "SAN '%s' is not an e-mail address (ASCII, with an '@')",
                                shown(value, quoted, sizeof(quoted)));
        return 0;
    default:
        if (strchr(v, ':') == NULL || !plain_ascii(v))
            return mtls_err_set(err, MTLS_E_INVALID,
                                "SAN '%s' is not a URI (scheme:..., ASCII, no blanks)",
                                shown(value, quoted, sizeof(quoted)));
        return 0;
    }
}

int mtls_san_add(GENERAL_NAMES **gens, const char *value, mtls_err *err)
{
    GENERAL_NAME *gen = NULL;
    ASN1_IA5STRING *ia5 = NULL;
    ASN1_OCTET_STRING *ip = NULL;
    const char *v = value;
    int type, rc;

    if (prefix_is(value, "DNS:", &v)) {
        type = GEN_DNS;
    } else if (prefix_is(value, "IP:", &v)) {
        type = GEN_IPADD;
    } else if (prefix_is(value, "email:", &v)) {
        type = GEN_EMAIL;
    } else if (prefix_is(value, "URI:", &v)) {
        type = GEN_URI;
    } else {
        /* A bare value: an address is an IP SAN, anything else a host name. */
        ip = a2i_IPADDRESS(value);
        ERR_clear_error();
        type = ip != NULL ? GEN_IPADD : GEN_DNS;
    }
    if (type == GEN_IPADD && ip == NULL)
        ip = a2i_IPADDRESS(v);
    ERR_clear_error();
    if ((rc = check_san(type, ip, v, value, err)) != 0)
        goto out;
    gen = GENERAL_NAME_new();
    if (gen == NULL)
        goto nomem;
    if (type == GEN_IPADD) {
        GENERAL_NAME_set0_value(gen, GEN_IPADD, ip);
        ip = NULL;
    } else {
        ia5 = ASN1_IA5STRING_new();
        if (ia5 == NULL || ASN1_STRING_set(ia5, v, (int)strlen(v)) != 1)
            goto nomem;
        GENERAL_NAME_set0_value(gen, type, ia5);
        ia5 = NULL;
    }
    if (*gens == NULL && (*gens = GENERAL_NAMES_new()) == NULL)
        goto nomem;
    /* The same name twice (from a CSR and --san) is listed once. */
    for (int i = 0; i < sk_GENERAL_NAME_num(*gens); i++) {
        if (GENERAL_NAME_cmp(sk_GENERAL_NAME_value(*gens, i), gen) == 0) {
            rc = 0;
            goto out;
        }
    }
    if (sk_GENERAL_NAME_push(*gens, gen) <= 0)
        goto nomem;
    gen = NULL;
    rc = 0;
    goto out;
nomem:
    rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
out:
    GENERAL_NAME_free(gen);
    ASN1_IA5STRING_free(ia5);
    ASN1_OCTET_STRING_free(ip);
    return rc;
}

int mtls_profile_parse(const char *name, mtls_profile *out, mtls_err *err)
{
    if (strcmp(name, "client") == 0)
        *out = MTLS_PROFILE_CLIENT;
    else if (strcmp(name, "server") == 0)
        *out = MTLS_PROFILE_SERVER;
    else
        return mtls_err_set(err, MTLS_E_INVALID, "unknown profile '%s': use client or server",
                            name);
    return 0;
}

const char *mtls_profile_name(mtls_profile profile)
{
    switch (profile) {
    case MTLS_PROFILE_SERVER:
        return "server";
    case MTLS_PROFILE_SUBCA:
        return "ca";
    case MTLS_PROFILE_CLIENT:
        break;
    }
    return "client";
}

char *mtls_time_human(time_t t, char *buf, size_t size)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buf;
}

char *mtls_time_iso(time_t t, char *buf, size_t size)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

time_t mtls_asn1_time(const ASN1_TIME *t)
{
    struct tm tm;

    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

long mtls_days_left(time_t t, time_t now)
{
    /* The nearest whole day, as a person reads it: a certificate made for
     * 365 days some minutes ago has 365 left, not 364. Never 0 on either
     * side of t, so the sign alone tells valid from expired. */
    long gap = (long)(t >= now ? t - now : now - t);
    long days = (gap + 43200) / 86400;

    if (gap == 0)
        return 0;
    if (days == 0)
        days = 1;
    return t > now ? days : -days;
}

char *mtls_expiry_words(time_t t, time_t now, char *buf, size_t size)
{
    long days = mtls_days_left(t, now);
    long gap = (long)(t >= now ? t - now : now - t);

    if (t > now && gap < 86400)
        snprintf(buf, size, "expires in less than a day");
    else if (t > now)
        snprintf(buf, size, "expires in %ld day%s", days, days == 1 ? "" : "s");
    else if (gap < 86400)
        snprintf(buf, size, "expired less than a day ago");
    else
        snprintf(buf, size, "expired %ld day%s ago", -days, days == -1 ? "" : "s");
    return buf;
}

int mtls__days_check(int days, mtls_err *err)
{
    if (days < 1 || days > MTLS_DAYS_MAX)
        return mtls_err_set(err, MTLS_E_INVALID, "--days must be between 1 and %d, not %d",
                            MTLS_DAYS_MAX, days);
    return 0;
}
