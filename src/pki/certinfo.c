/* What a certificate says, as plain strings: the identity every other part
 * prints (logs, /whoami, cert show, probe, ca list). */
#include "mtls/certinfo.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "mtls/pki.h"

char *mtls_name_oneline(const X509_NAME *name, char *buf, size_t size)
{
    BIO *bio;
    int n;

    if (size == 0)
        return buf;
    buf[0] = '\0';
    if (name == NULL)
        return buf;
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return buf;
    /* "C=JP, O=Example, CN=x": openssl x509 -text's order, UTF-8 kept as is. */
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        n = BIO_read(bio, buf, (int)size - 1);
        buf[n > 0 ? n : 0] = '\0';
        /* XN_FLAG_ONELINE writes "CN = x"; the compact form reads better in logs. */
        char *w = buf;
        for (const char *r = buf; *r != '\0'; r++) {
            if (r[0] == ' ' && r[1] == '=' && r[2] == ' ') {
                *w++ = '=';
                r += 2;
                continue;
            }
            *w++ = *r;
        }
        *w = '\0';
    }
    BIO_free(bio);
    return buf;
}

static char *asn1_string_dup(const ASN1_STRING *s);

static void last_cn(const X509_NAME *name, char *buf, size_t size)
{
    int idx = -1, i;
    const ASN1_STRING *data;
    char *text;

    buf[0] = '\0';
    while ((i = X509_NAME_get_index_by_NID(name, NID_commonName, idx)) >= 0)
        idx = i;
    if (idx < 0)
        return;
    data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    text = asn1_string_dup(data);
    if (text != NULL)
        snprintf(buf, size, "%s", text);
    free(text);
}

char *mtls_serial_hex(const ASN1_INTEGER *serial, char *buf, size_t size)
{
    static const char digits[] = "0123456789ABCDEF";
    const unsigned char *data;
    size_t used = 0;
    int len;

    if (size == 0)
        return buf;
    buf[0] = '\0';
    if (serial == NULL) {
        snprintf(buf, size, "?");
        return buf;
    }
    data = ASN1_STRING_get0_data(serial);
    len = ASN1_STRING_length(serial);
    if (ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER && len > 0 && size > 1)
        buf[used++] = '-';
    if (len <= 0) {
        snprintf(buf, size, "00");
        return buf;
    }
    for (int i = 0; i < len && used + 2 < size; i++) {
        buf[used++] = digits[data[i] >> 4];
        buf[used++] = digits[data[i] & 0x0F];
    }
    buf[used] = '\0';
    return buf;
}

static int fill_serial(mtls_cert_info *info, X509 *cert)
{
    mtls_serial_hex(X509_get0_serialNumber(cert), info->serial_hex, sizeof(info->serial_hex));
    return 0;
}

static int fill_fingerprint(mtls_cert_info *info, X509 *cert)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    char *p = info->sha256;

    if (X509_digest(cert, EVP_sha256(), md, &len) != 1)
        return -1;
    for (unsigned int i = 0; i < len; i++) {
        snprintf(p, 4, i + 1 < len ? "%02X:" : "%02X", md[i]);
        p += i + 1 < len ? 3 : 2;
    }
    return 0;
}

static void fill_key(mtls_cert_info *info, X509 *cert)
{
    EVP_PKEY *pkey = X509_get0_pubkey(cert);
    char curve[32] = "";
    size_t curve_len = 0;

    snprintf(info->key_type, sizeof(info->key_type), "unknown");
    if (pkey == NULL)
        return;
    info->key_bits = EVP_PKEY_get_bits(pkey);
    if (EVP_PKEY_is_a(pkey, "EC")) {
        snprintf(info->key_type, sizeof(info->key_type), "EC");
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof(curve),
                                           &curve_len) == 1)
            snprintf(info->key_curve, sizeof(info->key_curve), "%s", curve);
    } else if (EVP_PKEY_is_a(pkey, "RSA")) {
        snprintf(info->key_type, sizeof(info->key_type), "RSA");
    } else if (EVP_PKEY_is_a(pkey, "ED25519")) {
        snprintf(info->key_type, sizeof(info->key_type), "ED25519");
    } else if (EVP_PKEY_is_a(pkey, "ED448")) {
        snprintf(info->key_type, sizeof(info->key_type), "ED448");
    }
}

static void append_item(char *buf, size_t size, const char *item)
{
    size_t used = strlen(buf);

    if (used + 1 >= size)
        return;
    snprintf(buf + used, size - used, "%s%s", used ? ", " : "", item);
}

static void fill_usages(mtls_cert_info *info, X509 *cert)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } ku[] = {
        {KU_DIGITAL_SIGNATURE, "Digital Signature"},
        {KU_NON_REPUDIATION, "Non Repudiation"},
        {KU_KEY_ENCIPHERMENT, "Key Encipherment"},
        {KU_DATA_ENCIPHERMENT, "Data Encipherment"},
        {KU_KEY_AGREEMENT, "Key Agreement"},
        {KU_KEY_CERT_SIGN, "Certificate Sign"},
        {KU_CRL_SIGN, "CRL Sign"},
        {KU_ENCIPHER_ONLY, "Encipher Only"},
        {KU_DECIPHER_ONLY, "Decipher Only"},
    };
    EXTENDED_KEY_USAGE *eku;
    uint32_t bits = X509_get_key_usage(cert);

    if ((X509_get_extension_flags(cert) & EXFLAG_KUSAGE) != 0) {
        for (size_t i = 0; i < sizeof(ku) / sizeof(ku[0]); i++) {
            if (bits & ku[i].bit)
                append_item(info->key_usage, sizeof(info->key_usage), ku[i].name);
        }
    }
    eku = X509_get_ext_d2i(cert, NID_ext_key_usage, NULL, NULL);
    if (eku != NULL) {
        for (int i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
            char name[80];
            ASN1_OBJECT *obj = sk_ASN1_OBJECT_value(eku, i);
            int nid = OBJ_obj2nid(obj);

            if (nid != NID_undef)
                snprintf(name, sizeof(name), "%s", OBJ_nid2ln(nid));
            else
                OBJ_obj2txt(name, sizeof(name), obj, 1);
            append_item(info->ext_key_usage, sizeof(info->ext_key_usage), name);
        }
        sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    }
}

static char *ip_to_string(const ASN1_OCTET_STRING *ip)
{
    const unsigned char *p = ASN1_STRING_get0_data(ip);
    int len = ASN1_STRING_length(ip);
    char buf[INET6_ADDRSTRLEN + 32];

    if (len == 4)
        inet_ntop(AF_INET, p, buf, sizeof(buf));
    else if (len == 16)
        inet_ntop(AF_INET6, p, buf, sizeof(buf));
    else
        snprintf(buf, sizeof(buf), "(invalid %d-byte address)", len);
    return strdup(buf);
}

/* The UTF-8 text of s, its control bytes (a NUL too) written \xHH: names
 * come from peers, and a hostile one must not reach a terminal raw. */
static char *asn1_string_dup(const ASN1_STRING *s)
{
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, s);
    char *out;
    size_t used = 0;

    if (len < 0)
        return strdup("");
    out = malloc((size_t)len * 4 + 1);
    for (int i = 0; out != NULL && i < len; i++) {
        if (utf8[i] < 0x20 || utf8[i] == 0x7F)
            used += (size_t)sprintf(out + used, "\\x%02X", utf8[i]);
        else
            out[used++] = (char)utf8[i];
    }
    if (out != NULL)
        out[used] = '\0';
    OPENSSL_free(utf8);
    return out;
}

/* One GENERAL_NAME as a type and a new string; 0, or -1 out of memory. */
static int san_from_name(const GENERAL_NAME *g, mtls_san *san)
{
    switch (g->type) {
    case GEN_DNS:
        san->type = "DNS";
        san->value = asn1_string_dup(g->d.dNSName);
        break;
    case GEN_IPADD:
        san->type = "IP";
        san->value = ip_to_string(g->d.iPAddress);
        break;
    case GEN_EMAIL:
        san->type = "email";
        san->value = asn1_string_dup(g->d.rfc822Name);
        break;
    case GEN_URI:
        san->type = "URI";
        san->value = asn1_string_dup(g->d.uniformResourceIdentifier);
        break;
    default:
        san->type = "other";
        san->value = strdup("(unsupported name type)");
        break;
    }
    return san->value != NULL ? 0 : -1;
}

int mtls_sans_from_names(const GENERAL_NAMES *gens, mtls_san **sans, size_t *n, mtls_err *err)
{
    int count = sk_GENERAL_NAME_num(gens);

    *sans = NULL;
    *n = 0;
    if (count <= 0)
        return 0;
    *sans = calloc((size_t)count, sizeof(**sans));
    if (*sans == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    for (int i = 0; i < count; i++) {
        if (san_from_name(sk_GENERAL_NAME_value(gens, i), &(*sans)[*n]) != 0) {
            mtls_sans_free(*sans, *n);
            *sans = NULL;
            *n = 0;
            return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        }
        (*n)++;
    }
    return 0;
}

void mtls_sans_free(mtls_san *sans, size_t n)
{
    for (size_t i = 0; sans != NULL && i < n; i++)
        free(sans[i].value);
    free(sans);
}

static int fill_sans(mtls_cert_info *info, X509 *cert)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int rc = mtls_sans_from_names(gens, &info->sans, &info->n_sans, NULL);

    GENERAL_NAMES_free(gens);
    return rc != 0 ? -1 : 0;
}

static int check_self_signed(X509 *cert)
{
    EVP_PKEY *pkey = X509_get0_pubkey(cert);

    if (X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)) != 0)
        return 0;
    if (pkey == NULL)
        return 0;
    /* X509_verify() may leave errors on the queue for a bad signature. */
    int ok = X509_verify(cert, pkey) == 1;
    ERR_clear_error();
    return ok;
}

int mtls_cert_info_init(mtls_cert_info *info, X509 *cert, mtls_err *err)
{
    BASIC_CONSTRAINTS *bc;
    int sig_nid;

    memset(info, 0, sizeof(*info));
    info->path_len = -1;
    mtls_name_oneline(X509_get_subject_name(cert), info->subject, sizeof(info->subject));
    mtls_name_oneline(X509_get_issuer_name(cert), info->issuer, sizeof(info->issuer));
    last_cn(X509_get_subject_name(cert), info->subject_cn, sizeof(info->subject_cn));
    last_cn(X509_get_issuer_name(cert), info->issuer_cn, sizeof(info->issuer_cn));
    if (fill_serial(info, cert) != 0 || fill_fingerprint(info, cert) != 0) {
        mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot read the certificate's serial or fingerprint");
        goto fail;
    }
    info->not_before = mtls_asn1_time(X509_get0_notBefore(cert));
    info->not_after = mtls_asn1_time(X509_get0_notAfter(cert));
    if (ASN1_TIME_check(X509_get0_notBefore(cert)) != 1 ||
        ASN1_TIME_check(X509_get0_notAfter(cert)) != 1) {
        mtls_err_set(err, MTLS_E_INVALID, "the certificate's validity dates are malformed");
        goto fail;
    }
    mtls_time_iso(info->not_before, info->not_before_iso, sizeof(info->not_before_iso));
    mtls_time_iso(info->not_after, info->not_after_iso, sizeof(info->not_after_iso));
    fill_key(info, cert);
    sig_nid = X509_get_signature_nid(cert);
    snprintf(info->sig_alg, sizeof(info->sig_alg), "%s",
             sig_nid != NID_undef ? OBJ_nid2ln(sig_nid) : "unknown");
    info->version = (int)X509_get_version(cert) + 1;
    bc = X509_get_ext_d2i(cert, NID_basic_constraints, NULL, NULL);
    if (bc != NULL) {
        info->is_ca = bc->ca != 0;
        if (bc->pathlen != NULL)
            info->path_len = ASN1_INTEGER_get(bc->pathlen);
        BASIC_CONSTRAINTS_free(bc);
    }
    info->self_signed = check_self_signed(cert);
    fill_usages(info, cert);
    if (fill_sans(info, cert) != 0) {
        mtls_err_set(err, MTLS_E_NOMEM, "out of memory reading the certificate's SANs");
        goto fail;
    }
    return 0;
fail:
    mtls_cert_info_release(info);
    return err != NULL ? err->code : MTLS_E_CRYPTO;
}

void mtls_cert_info_release(mtls_cert_info *info)
{
    if (info == NULL)
        return;
    mtls_sans_free(info->sans, info->n_sans);
    info->sans = NULL;
    info->n_sans = 0;
}

char *mtls_cert_info_sans_line(const mtls_cert_info *info, char *buf, size_t size)
{
    return mtls_sans_line(info->sans, info->n_sans, buf, size);
}

char *mtls_sans_line(const mtls_san *sans, size_t n_sans, char *buf, size_t size)
{
    size_t used = 0;

    if (size == 0)
        return buf;
    buf[0] = '\0';
    for (size_t i = 0; i < n_sans; i++) {
        int n = snprintf(buf + used, size - used, "%s%s:%s", i ? ", " : "", sans[i].type,
                         sans[i].value);
        if (n < 0 || (size_t)n >= size - used) {
            if (size > 4)
                memcpy(buf + size - 4, "...", 4);
            break;
        }
        used += (size_t)n;
    }
    return buf;
}

static cJSON *split_list(const char *line)
{
    cJSON *arr = cJSON_CreateArray();
    const char *p = line;

    if (arr == NULL)
        return NULL;
    while (*p != '\0') {
        const char *end = strstr(p, ", ");
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[128];

        snprintf(item, sizeof(item), "%.*s", (int)len, p);
        cJSON_AddItemToArray(arr, cJSON_CreateString(item));
        p += len;
        if (*p != '\0')
            p += 2;
    }
    return arr;
}

cJSON *mtls_cert_info_to_json(const mtls_cert_info *info)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *sans;

    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "subject", info->subject);
    cJSON_AddStringToObject(o, "issuer", info->issuer);
    cJSON_AddStringToObject(o, "subject_cn", info->subject_cn);
    cJSON_AddStringToObject(o, "issuer_cn", info->issuer_cn);
    cJSON_AddStringToObject(o, "serial", info->serial_hex);
    cJSON_AddStringToObject(o, "sha256", info->sha256);
    cJSON_AddStringToObject(o, "not_before", info->not_before_iso);
    cJSON_AddStringToObject(o, "not_after", info->not_after_iso);
    cJSON_AddStringToObject(o, "key_type", info->key_type);
    cJSON_AddNumberToObject(o, "key_bits", info->key_bits);
    cJSON_AddStringToObject(o, "key_curve", info->key_curve);
    cJSON_AddStringToObject(o, "signature_algorithm", info->sig_alg);
    cJSON_AddNumberToObject(o, "version", info->version);
    cJSON_AddBoolToObject(o, "is_ca", info->is_ca);
    if (info->path_len >= 0)
        cJSON_AddNumberToObject(o, "path_len", (double)info->path_len);
    else
        cJSON_AddNullToObject(o, "path_len");
    cJSON_AddBoolToObject(o, "self_signed", info->self_signed);
    cJSON_AddItemToObject(o, "key_usage", split_list(info->key_usage));
    cJSON_AddItemToObject(o, "extended_key_usage", split_list(info->ext_key_usage));
    sans = cJSON_AddArrayToObject(o, "sans");
    for (size_t i = 0; sans != NULL && i < info->n_sans; i++) {
        cJSON *s = cJSON_CreateObject();

        cJSON_AddStringToObject(s, "type", info->sans[i].type);
        cJSON_AddStringToObject(s, "value", info->sans[i].value);
        cJSON_AddItemToArray(sans, s);
    }
    return o;
}
