/* The CA folder: a CA's certificate and key, the inventory of what it
 * issued (openssl ca's index.txt format), and signing under a file lock. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtls/certinfo.h"
#include "mtls/pki.h"
#include "pki_internal.h"

#define INDEX_MAX (64 * 1024 * 1024)

struct mtls_ca {
    char *prefix;
    X509 *cert;
    EVP_PKEY *key;
    mtls_ca_record *records;
    size_t n_records, cap_records;
    STACK_OF(X509) * unsaved; /* signed by mtls_ca_sign(), copies not written yet */
    STACK_OF(X509) * chain;   /* an intermediate: itself and those above, without the root */
    int created_certs_dir;
};

/* PREFIX + suffix in a new string, or NULL. */
char *mtls__ca_path(const mtls_ca *ca, const char *suffix)
{
    size_t n = strlen(ca->prefix) + strlen(suffix) + 1;
    char *p = malloc(n);

    if (p != NULL)
        snprintf(p, n, "%s%s", ca->prefix, suffix);
    return p;
}

static mtls_ca *ca_new(const char *prefix)
{
    mtls_ca *ca = calloc(1, sizeof(*ca));
    size_t len = strlen(prefix);

    if (ca == NULL)
        return NULL;
    ca->prefix = strdup(prefix);
    ca->unsaved = sk_X509_new_null();
    if (ca->prefix == NULL || ca->unsaved == NULL) {
        mtls_ca_free(ca);
        return NULL;
    }
    /* "clientca.crt" names the CA "clientca": forgive the extension. */
    if (len > 4 && (strcmp(prefix + len - 4, ".crt") == 0 || strcmp(prefix + len - 4, ".key") == 0))
        ca->prefix[len - 4] = '\0';
    return ca;
}

static void records_clear(mtls_ca *ca)
{
    for (size_t i = 0; i < ca->n_records; i++)
        free(ca->records[i].subject);
    ca->n_records = 0;
}

void mtls_ca_free(mtls_ca *ca)
{
    if (ca == NULL)
        return;
    records_clear(ca);
    free(ca->records);
    sk_X509_pop_free(ca->unsaved, X509_free);
    sk_X509_pop_free(ca->chain, X509_free);
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    free(ca->prefix);
    free(ca);
}

X509 *mtls_ca_cert(const mtls_ca *ca)
{
    return ca->cert;
}

EVP_PKEY *mtls_ca_key(const mtls_ca *ca)
{
    return ca->key;
}

const char *mtls_ca_prefix(const mtls_ca *ca)
{
    return ca->prefix;
}

const mtls_ca_record *mtls_ca_records(const mtls_ca *ca, size_t *n)
{
    *n = ca->n_records;
    return ca->records;
}

/* ---- inventory -------------------------------------------------------- */

static int record_push(mtls_ca *ca, const mtls_ca_record *rec, mtls_err *err)
{
    if (ca->n_records == ca->cap_records) {
        size_t cap = ca->cap_records ? ca->cap_records * 2 : 16;
        mtls_ca_record *grown = realloc(ca->records, cap * sizeof(*grown));

        if (grown == NULL)
            return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        ca->records = grown;
        ca->cap_records = cap;
    }
    ca->records[ca->n_records++] = *rec;
    return 0;
}

/* Splits one index line into its six tab-separated fields (in place). */
static int split_fields(char *line, char **field, int n)
{
    int i = 0;

    field[i++] = line;
    for (char *p = line; *p != '\0' && i < n; p++) {
        if (*p == '\t') {
            *p = '\0';
            field[i++] = p + 1;
        }
    }
    return i;
}

/* Replaces ca's records with PREFIX.index (a missing file is an empty one). */
int mtls__ca_index_parse(mtls_ca *ca, char *text, const char *path, mtls_err *err)
{
    size_t lineno = 0;
    char *line, *next;
    int rc;

    records_clear(ca);
    for (line = text; line != NULL && *line != '\0'; line = next) {
        char *field[6];
        mtls_ca_record rec;
        size_t len;

        lineno++;
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        len = strlen(line);
        if (len > 0 && line[len - 1] == '\r')
            line[len - 1] = '\0';
        if (line[0] == '\0')
            continue;
        memset(&rec, 0, sizeof(rec));
        if (split_fields(line, field, 6) != 6 || strlen(field[0]) != 1 ||
            strchr("VRE", field[0][0]) == NULL || field[3][0] == '\0' ||
            strlen(field[1]) >= sizeof(rec.expiry) || strlen(field[2]) >= sizeof(rec.revoked) ||
            strlen(field[3]) >= sizeof(rec.serial)) {
            rc = mtls_err_set(err, MTLS_E_INVALID,
                              "'%s' line %zu is not an index line (STATUS TAB EXPIRY TAB "
                              "REVOKED TAB SERIAL TAB FILE TAB SUBJECT): fix or restore it",
                              path, lineno);
            records_clear(ca);
            return rc;
        }
        rec.status = field[0][0];
        snprintf(rec.expiry, sizeof(rec.expiry), "%s", field[1]);
        snprintf(rec.revoked, sizeof(rec.revoked), "%s", field[2]);
        snprintf(rec.serial, sizeof(rec.serial), "%s", field[3]);
        rec.subject = strdup(field[5]);
        if (rec.subject == NULL) {
            records_clear(ca);
            return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        }
        rc = record_push(ca, &rec, err);
        if (rc != 0) {
            free(rec.subject);
            records_clear(ca);
            return rc;
        }
    }
    return 0;
}

int mtls__ca_index_read(mtls_ca *ca, mtls_err *err)
{
    char *path = mtls__ca_path(ca, ".index");
    unsigned char *data = NULL;
    size_t len = 0;
    int rc;

    records_clear(ca);
    if (path == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    rc = mtls_file_read(path, INDEX_MAX, &data, &len, err);
    if (rc == MTLS_E_NOTFOUND) {
        mtls_err_clear(err);
        rc = 0;
    } else if (rc == 0) {
        rc = mtls__ca_index_parse(ca, (char *)data, path, err);
    }
    free(data);
    free(path);
    return rc;
}

/* The index as text, in openssl ca's format. *out is freed with free(). */
int mtls__ca_index_format(const mtls_ca *ca, char **out, size_t *len, mtls_err *err)
{
    size_t cap = 1, used = 0;
    char *buf;

    for (size_t i = 0; i < ca->n_records; i++)
        cap += strlen(ca->records[i].subject) + 200;
    buf = malloc(cap);
    if (buf == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    buf[0] = '\0';
    for (size_t i = 0; i < ca->n_records; i++) {
        const mtls_ca_record *r = &ca->records[i];

        used += (size_t)snprintf(buf + used, cap - used, "%c\t%s\t%s\t%s\tunknown\t%s\n", r->status,
                                 r->expiry, r->revoked, r->serial, r->subject);
    }
    *out = buf;
    *len = used;
    return 0;
}

static const char index_attr[] = "unique_subject = no\n";

/* ---- building certificates -------------------------------------------- */

static int serial_in_use(const mtls_ca *ca, const char *hex)
{
    for (size_t i = 0; i < ca->n_records; i++) {
        if (strcmp(ca->records[i].serial, hex) == 0)
            return 1;
    }
    return 0;
}

/* A fresh random serial: 128 random bits, never zero, unused in the
 * inventory. The INTEGER stays positive: when the top bit is set its DER
 * form has a leading zero octet (17 octets, within RFC 5280's 20). */
static int new_serial(const mtls_ca *ca, ASN1_INTEGER **out, char *hex_out, size_t hex_size,
                      mtls_err *err)
{
    unsigned char bytes[16];
    BIGNUM *bn = NULL;
    char hex[MTLS_SERIAL_HEX_MAX] = "";
    int rc = MTLS_E_CRYPTO;

    *out = NULL;
    for (int attempt = 0; attempt < 8; attempt++) {
        if (RAND_bytes(bytes, sizeof(bytes)) != 1)
            return mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot draw a random serial number");
        BN_free(bn);
        ASN1_INTEGER_free(*out);
        *out = NULL;
        bn = BN_bin2bn(bytes, sizeof(bytes), NULL);
        if (bn == NULL || (*out = BN_to_ASN1_INTEGER(bn, NULL)) == NULL) {
            rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot make a serial number");
            goto out;
        }
        mtls_serial_hex(*out, hex, sizeof(hex));
        if (BN_is_zero(bn) || ca == NULL || !serial_in_use(ca, hex))
            break;
        hex[0] = '\0';
    }
    if (hex[0] == '\0' || BN_is_zero(bn)) {
        rc = mtls_err_set(err, MTLS_E_CRYPTO, "cannot find an unused serial number");
        goto out;
    }
    snprintf(hex_out, hex_size, "%s", hex);
    rc = 0;
out:
    if (rc != 0) {
        ASN1_INTEGER_free(*out);
        *out = NULL;
    }
    BN_free(bn);
    return rc;
}

/* Adds one extension from openssl's config syntax ("critical,CA:TRUE"). */
static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value, mtls_err *err)
{
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
    int ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1;

    X509_EXTENSION_free(ext);
    if (!ok)
        return mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot add the %s extension", OBJ_nid2sn(nid));
    return 0;
}

/* Sets notBefore (MTLS_SKEW_SECONDS back) and notAfter (days on, capped at
 * limit when limit is not NULL). */
static int set_validity(X509 *cert, int days, const ASN1_TIME *limit, int *clamped, mtls_err *err)
{
    time_t now = time(NULL);

    if (clamped != NULL)
        *clamped = 0;
    if (X509_time_adj_ex(X509_getm_notBefore(cert), 0, -MTLS_SKEW_SECONDS, &now) == NULL ||
        X509_time_adj_ex(X509_getm_notAfter(cert), days, 0, &now) == NULL)
        return mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot set the validity dates");
    if (limit != NULL && ASN1_TIME_compare(X509_get0_notAfter(cert), limit) > 0) {
        if (X509_set1_notAfter(cert, limit) != 1)
            return mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot set the validity dates");
        if (clamped != NULL)
            *clamped = 1;
    }
    return 0;
}

int mtls_ca_generate(const char *prefix, const mtls_ca_opts *opts, mtls_ca **out, mtls_err *err)
{
    mtls_ca *ca = NULL;
    X509 *cert = NULL;
    X509_NAME *name = NULL;
    ASN1_INTEGER *serial = NULL;
    X509V3_CTX v3;
    char hex[84];
    int days = opts->days ? opts->days : MTLS_CA_DAYS_DEFAULT;
    int rc;

    *out = NULL;
    if (mtls__days_check(days, err) != 0)
        return MTLS_E_INVALID;
    rc = mtls_name_from_cn(opts->cn, &name, err);
    if (rc != 0)
        return rc;
    ca = ca_new(prefix);
    if (ca == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    rc = mtls_key_generate(opts->key_type, opts->bits, &ca->key, err);
    if (rc != 0)
        goto out;
    rc = new_serial(NULL, &serial, hex, sizeof(hex), err);
    if (rc != 0)
        goto out;
    cert = X509_new();
    if (cert == NULL || X509_set_version(cert, X509_VERSION_3) != 1 ||
        X509_set_serialNumber(cert, serial) != 1 || X509_set_subject_name(cert, name) != 1 ||
        X509_set_issuer_name(cert, name) != 1 || X509_set_pubkey(cert, ca->key) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot build the CA certificate");
        goto out;
    }
    rc = set_validity(cert, days, NULL, NULL, err);
    if (rc != 0)
        goto out;
    X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
    if ((rc = add_ext(cert, &v3, NID_basic_constraints, "critical,CA:TRUE", err)) != 0 ||
        (rc = add_ext(cert, &v3, NID_key_usage, "critical,keyCertSign,cRLSign", err)) != 0 ||
        (rc = add_ext(cert, &v3, NID_subject_key_identifier, "hash", err)) != 0 ||
        (rc = add_ext(cert, &v3, NID_authority_key_identifier, "keyid:always", err)) != 0)
        goto out;
    if (X509_sign(cert, ca->key, mtls__sign_md(ca->key)) <= 0) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot sign the CA certificate");
        goto out;
    }
    ca->cert = cert;
    cert = NULL;
    *out = ca;
    ca = NULL;
    rc = 0;
out:
    ASN1_INTEGER_free(serial);
    X509_NAME_free(name);
    X509_free(cert);
    mtls_ca_free(ca);
    return rc;
}

/* Adds the record of a just-signed certificate to ca's inventory. */
static int record_cert(mtls_ca *ca, X509 *cert, const char *serial_hex, mtls_err *err)
{
    const ASN1_TIME *na = X509_get0_notAfter(cert);
    mtls_ca_record rec;
    char *subject;
    int rc;

    memset(&rec, 0, sizeof(rec));
    rec.status = 'V';
    snprintf(rec.expiry, sizeof(rec.expiry), "%.*s", ASN1_STRING_length(na),
             (const char *)ASN1_STRING_get0_data(na));
    snprintf(rec.serial, sizeof(rec.serial), "%s", serial_hex);
    /* openssl ca writes X509_NAME_oneline()'s "/CN=x" form. */
    subject = X509_NAME_oneline(X509_get_subject_name(cert), NULL, 0);
    if (subject == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    rec.subject = strdup(subject);
    OPENSSL_free(subject);
    if (rec.subject == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    rc = record_push(ca, &rec, err);
    if (rc != 0)
        free(rec.subject);
    return rc;
}

/* The SANs a server certificate gets when none were asked for: its CN,
 * when that is a host name or an address (modern clients ignore the CN). */
static GENERAL_NAMES *sans_from_cn(const X509_NAME *subject)
{
    int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    GENERAL_NAMES *gens = NULL;
    unsigned char *utf8 = NULL;
    int len;

    if (idx < 0)
        return NULL;
    len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
    if (len > 0 && strlen((char *)utf8) == (size_t)len)
        (void)mtls_san_add(&gens, (char *)utf8, NULL);
    OPENSSL_free(utf8);
    return gens;
}

/* What must hold before ca signs anything for issue. */
static int sign_checks(const mtls_ca *ca, const mtls_issue *issue, int days, mtls_err *err)
{
    if (mtls__days_check(days, err) != 0)
        return MTLS_E_INVALID;
    if (ca->key == NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "CA '%s' was opened without its key", ca->prefix);
    if (X509_cmp_time(X509_get0_notAfter(ca->cert), NULL) <= 0)
        return mtls_err_set(err, MTLS_E_INVALID,
                            "CA '%s.crt' has expired: make a new CA with 'mtls ca create'",
                            ca->prefix);
    if (issue->profile == MTLS_PROFILE_SUBCA && X509_get_pathlen(ca->cert) == 0)
        return mtls_err_set(err, MTLS_E_INVALID,
                            "CA '%s' is an intermediate with path length 0: it issues leaf "
                            "certificates only; make intermediates from the root",
                            ca->prefix);
    return 0;
}

/* An intermediate may sign leaves only: pathlen 0, deliberately. */
static int add_subca_exts(X509 *cert, X509V3_CTX *v3, mtls_err *err)
{
    int rc;

    if ((rc = add_ext(cert, v3, NID_basic_constraints, "critical,CA:TRUE,pathlen:0", err)) != 0 ||
        (rc = add_ext(cert, v3, NID_key_usage, "critical,keyCertSign,cRLSign", err)) != 0 ||
        (rc = add_ext(cert, v3, NID_subject_key_identifier, "hash", err)) != 0 ||
        (rc = add_ext(cert, v3, NID_authority_key_identifier, "keyid:always", err)) != 0)
        return rc;
    return 0;
}

/* The SANs (a server without any gets its CN, when that is a host name or
 * an address); refuses a certificate that would name nobody, and a server
 * certificate without SANs, which no TLS client accepts (browsers, Go and
 * Python's ssl ignore the CN). */
static int add_sans(X509 *cert, const mtls_issue *issue, mtls_err *err)
{
    const GENERAL_NAMES *sans = issue->sans;
    GENERAL_NAMES *cn_sans = NULL;
    X509_EXTENSION *san_ext = NULL;
    char subject[MTLS_NAME_MAX];
    int rc = 0;

    if ((sans == NULL || sk_GENERAL_NAME_num(sans) == 0) && issue->profile == MTLS_PROFILE_SERVER) {
        cn_sans = sans_from_cn(issue->subject);
        sans = cn_sans;
    }
    if (X509_NAME_entry_count(issue->subject) == 0 &&
        (sans == NULL || sk_GENERAL_NAME_num(sans) == 0)) {
        rc = mtls_err_set(err, MTLS_E_INVALID,
                          "the certificate would name nobody: the subject is empty and there are "
                          "no SANs (pass --san)");
    } else if (issue->profile == MTLS_PROFILE_SERVER &&
               (sans == NULL || sk_GENERAL_NAME_num(sans) == 0)) {
        mtls_name_oneline(issue->subject, subject, sizeof(subject));
        rc = mtls_err_set(err, MTLS_E_INVALID,
                          "a server certificate needs a SAN, and the subject '%s' has no host "
                          "name or address to take as one (clients check only the SANs): pass "
                          "--san HOST, e.g. --san www.example.com or --san 192.0.2.1",
                          subject);
    } else if (sans != NULL && sk_GENERAL_NAME_num(sans) > 0) {
        /* RFC 5280: the SANs are critical when the subject is empty. */
        int critical = X509_NAME_entry_count(issue->subject) == 0;

        san_ext = X509V3_EXT_i2d(NID_subject_alt_name, critical, (void *)sans);
        if (san_ext == NULL || X509_add_ext(cert, san_ext, -1) != 1)
            rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot add the SANs");
    }
    X509_EXTENSION_free(san_ext);
    GENERAL_NAMES_free(cn_sans);
    return rc;
}

/* A client or server leaf: the profile's extensions, never the CSR's. */
static int add_leaf_exts(X509 *cert, X509V3_CTX *v3, const mtls_issue *issue, mtls_err *err)
{
    char ku[64];
    int rc;

    /* Key encipherment only means something for RSA key exchange. */
    snprintf(ku, sizeof(ku), "critical,digitalSignature%s",
             EVP_PKEY_is_a(issue->pubkey, "RSA") ? ",keyEncipherment" : "");
    if ((rc = add_ext(cert, v3, NID_basic_constraints, "critical,CA:FALSE", err)) != 0 ||
        (rc = add_ext(cert, v3, NID_key_usage, ku, err)) != 0 ||
        (rc = add_ext(cert, v3, NID_ext_key_usage,
                      issue->profile == MTLS_PROFILE_SERVER ? "serverAuth" : "clientAuth", err)) !=
            0 ||
        (rc = add_ext(cert, v3, NID_subject_key_identifier, "hash", err)) != 0 ||
        (rc = add_ext(cert, v3, NID_authority_key_identifier, "keyid,issuer", err)) != 0)
        return rc;
    return add_sans(cert, issue, err);
}

int mtls_ca_sign(mtls_ca *ca, const mtls_issue *issue, X509 **out, int *clamped, mtls_err *err)
{
    X509 *cert = NULL;
    ASN1_INTEGER *serial = NULL;
    X509V3_CTX v3;
    char hex[84];
    int days = issue->days ? issue->days : MTLS_LEAF_DAYS_DEFAULT;
    int rc;

    *out = NULL;
    if ((rc = sign_checks(ca, issue, days, err)) != 0 ||
        (rc = new_serial(ca, &serial, hex, sizeof(hex), err)) != 0)
        return rc;
    cert = X509_new();
    if (cert == NULL || X509_set_version(cert, X509_VERSION_3) != 1 ||
        X509_set_serialNumber(cert, serial) != 1 ||
        X509_set_subject_name(cert, issue->subject) != 1 ||
        X509_set_issuer_name(cert, X509_get_subject_name(ca->cert)) != 1 ||
        X509_set_pubkey(cert, issue->pubkey) != 1) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot build the certificate");
        goto out;
    }
    if ((rc = set_validity(cert, days, X509_get0_notAfter(ca->cert), clamped, err)) != 0)
        goto out;
    X509V3_set_ctx(&v3, ca->cert, cert, NULL, NULL, 0);
    rc = issue->profile == MTLS_PROFILE_SUBCA ? add_subca_exts(cert, &v3, err)
                                              : add_leaf_exts(cert, &v3, issue, err);
    if (rc != 0)
        goto out;
    if (X509_sign(cert, ca->key, mtls__sign_md(ca->key)) <= 0) {
        rc = mtls_err_ssl(err, MTLS_E_CRYPTO, "cannot sign the certificate with '%s.key'",
                          ca->prefix);
        goto out;
    }
    if ((rc = record_cert(ca, cert, hex, err)) != 0)
        goto out;
    if (X509_up_ref(cert) != 1 || sk_X509_push(ca->unsaved, cert) <= 0) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    *out = cert;
    cert = NULL;
    rc = 0;
out:
    ASN1_INTEGER_free(serial);
    X509_free(cert);
    return rc;
}

/* ---- files ------------------------------------------------------------ */

static int make_certs_dir(mtls_ca *ca, mtls_err *err)
{
    char *dir = mtls__ca_path(ca, ".certs");
    int rc = 0;

    if (dir == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    if (mkdir(dir, 0755) == 0)
        ca->created_certs_dir = 1;
    else if (errno != EEXIST)
        rc = mtls_err_sys(err, MTLS_E_IO, errno, "cannot create the folder '%s'", dir);
    free(dir);
    return rc;
}

/* The path of the copy of cert in PREFIX.certs/ (free()). */
static char *copy_path(const mtls_ca *ca, X509 *cert)
{
    char hex[MTLS_SERIAL_HEX_MAX];
    char *path;
    size_t n;

    mtls_serial_hex(X509_get0_serialNumber(cert), hex, sizeof(hex));
    n = strlen(ca->prefix) + strlen(hex) + 16;
    path = malloc(n);
    if (path != NULL)
        snprintf(path, n, "%s.certs/%s.pem", ca->prefix, hex);
    return path;
}

static int stage_copies(mtls_ca *ca, mtls_txn *txn, mtls_err *err)
{
    int rc = 0;

    for (int i = 0; rc == 0 && i < sk_X509_num(ca->unsaved); i++) {
        X509 *cert = sk_X509_value(ca->unsaved, i);
        char *path = copy_path(ca, cert), *pem = NULL;
        size_t len;

        if (path == NULL)
            rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        if (rc == 0)
            rc = mtls_cert_to_pem(cert, &pem, &len, err);
        if (rc == 0)
            rc = mtls_txn_add(txn, path, pem, len, MTLS_MODE_PUBLIC, err);
        free(pem);
        free(path);
    }
    return rc;
}

int mtls_ca_stage(mtls_ca *ca, mtls_txn *txn, const char *key_password, mtls_err *err)
{
    char *crt = mtls__ca_path(ca, ".crt"), *key = mtls__ca_path(ca, ".key");
    char *idx = mtls__ca_path(ca, ".index"), *attr = mtls__ca_path(ca, ".index.attr");
    char *pem = NULL, *key_pem = NULL, *index = NULL;
    size_t len = 0, key_len = 0, index_len = 0;
    int rc;

    if (crt == NULL || key == NULL || idx == NULL || attr == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = mtls_cert_to_pem(ca->cert, &pem, &len, err)) != 0 ||
        (rc = mtls_key_to_pem(ca->key, key_password, &key_pem, &key_len, err)) != 0 ||
        (rc = mtls__ca_index_format(ca, &index, &index_len, err)) != 0 ||
        (rc = make_certs_dir(ca, err)) != 0)
        goto out;
    if ((rc = mtls_txn_add(txn, crt, pem, len, MTLS_MODE_PUBLIC, err)) != 0 ||
        (rc = mtls_txn_add(txn, key, key_pem, key_len, MTLS_MODE_SECRET, err)) != 0 ||
        (rc = mtls_txn_add(txn, idx, index, index_len, MTLS_MODE_PUBLIC, err)) != 0 ||
        (rc = mtls_txn_add(txn, attr, index_attr, strlen(index_attr), MTLS_MODE_PUBLIC, err)) !=
            0 ||
        (rc = stage_copies(ca, txn, err)) != 0)
        goto out;
    if (ca->chain != NULL && sk_X509_num(ca->chain) > 0) {
        char *chain_path = mtls__ca_path(ca, ".chain.crt"), *chain_pem = NULL;
        size_t chain_len = 0;

        rc = chain_path == NULL ? mtls_err_set(err, MTLS_E_NOMEM, "out of memory")
                                : mtls_chain_to_pem(ca->chain, &chain_pem, &chain_len, err);
        if (rc == 0)
            rc = mtls_txn_add(txn, chain_path, chain_pem, chain_len, MTLS_MODE_PUBLIC, err);
        free(chain_pem);
        free(chain_path);
        if (rc != 0)
            goto out;
    }
    rc = 0;
out:
    mtls_free_secret(key_pem, key_len);
    free(pem);
    free(index);
    free(crt);
    free(key);
    free(idx);
    free(attr);
    return rc;
}

void mtls_ca_unstage(mtls_ca *ca)
{
    char *dir;

    if (ca == NULL || !ca->created_certs_dir)
        return;
    dir = mtls__ca_path(ca, ".certs");
    if (dir != NULL)
        (void)rmdir(dir); /* only when still empty */
    free(dir);
    ca->created_certs_dir = 0;
}

static int ca_open(const char *prefix, int with_key, const char *key_password, mtls_ca **out,
                   mtls_err *err);

int mtls_ca_open(const char *prefix, const char *key_password, mtls_ca **out, mtls_err *err)
{
    return ca_open(prefix, 1, key_password, out, err);
}

int mtls_ca_open_public(const char *prefix, mtls_ca **out, mtls_err *err)
{
    return ca_open(prefix, 0, NULL, out, err);
}

static int ca_open(const char *prefix, int with_key, const char *key_password, mtls_ca **out,
                   mtls_err *err)
{
    mtls_ca *ca = ca_new(prefix);
    char *crt = NULL, *key = NULL, *chain = NULL;
    int rc;

    *out = NULL;
    if (ca == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    crt = mtls__ca_path(ca, ".crt");
    key = mtls__ca_path(ca, ".key");
    if (crt == NULL || key == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    rc = mtls_cert_load(crt, &ca->cert, err);
    if (rc == MTLS_E_NOTFOUND) {
        rc = mtls_err_set(err, rc,
                          "cannot read '%s': no such file (--ca takes the CA's PREFIX, e.g. "
                          "'clientca' for clientca.crt and clientca.key)",
                          crt);
        goto out;
    }
    if (rc != 0)
        goto out;
    if (X509_check_ca(ca->cert) < 1) {
        rc = mtls_err_set(err, MTLS_E_INVALID,
                          "'%s' is not a CA certificate (no basicConstraints CA:TRUE): make a CA "
                          "with 'mtls ca create'",
                          crt);
        goto out;
    }
    if (with_key) {
        rc = mtls_key_load(key, key_password, &ca->key, err);
        if (rc != 0)
            goto out;
        if (!mtls_key_matches_cert(ca->key, ca->cert)) {
            rc = mtls_err_set(err, MTLS_E_INVALID,
                              "'%s' does not match '%s': the key belongs to another certificate",
                              key, crt);
            goto out;
        }
    }
    rc = mtls__ca_index_read(ca, err);
    if (rc != 0)
        goto out;
    chain = mtls__ca_path(ca, ".chain.crt");
    if (chain == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    if (mtls_file_exists(chain) && (rc = mtls_cert_load_all(chain, &ca->chain, err)) != 0)
        goto out;
    *out = ca;
    ca = NULL;
out:
    free(chain);
    free(crt);
    free(key);
    mtls_ca_free(ca);
    return rc;
}

/* Takes PREFIX.lock exclusively; returns the descriptor or -1. */
int mtls__ca_lock(const mtls_ca *ca, mtls_err *err)
{
    char *path = mtls__ca_path(ca, ".lock");
    int fd;

    if (path == NULL) {
        mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        return -1;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        mtls_err_sys(err, MTLS_E_IO, errno, "cannot open the lock file '%s'", path);
    } else {
        while (flock(fd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                mtls_err_sys(err, MTLS_E_IO, errno, "cannot lock '%s'", path);
                close(fd);
                fd = -1;
                break;
            }
        }
    }
    free(path);
    return fd;
}

/* Writes text to PREFIX.suffix atomically, replacing what was there. */
int mtls__ca_write_state(const mtls_ca *ca, const char *suffix, const char *text, size_t len,
                         mtls_err *err)
{
    char *path = mtls__ca_path(ca, suffix);
    int rc;

    if (path == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    rc = mtls_file_write_atomic(path, text, len, MTLS_MODE_PUBLIC, 1, err);
    free(path);
    return rc;
}

int mtls_ca_issue(mtls_ca *ca, const mtls_issue *issue, mtls_ca_deliver_fn deliver, void *arg,
                  X509 **out, int *clamped, mtls_err *err)
{
    X509 *cert = NULL;
    char *old_index = NULL, *new_index = NULL, *copy = NULL, *pem = NULL, *idx_path = NULL,
         *attr_path = NULL;
    size_t old_len = 0, new_len = 0, pem_len = 0;
    int lock_fd, rc, had_index;

    if (out != NULL)
        *out = NULL;
    lock_fd = mtls__ca_lock(ca, err);
    if (lock_fd < 0)
        return err != NULL ? err->code : MTLS_E_IO;
    idx_path = mtls__ca_path(ca, ".index");
    attr_path = mtls__ca_path(ca, ".index.attr");
    if (idx_path == NULL || attr_path == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    /* Another process may have issued since mtls_ca_open(): read again. */
    had_index = mtls_file_exists(idx_path);
    if ((rc = mtls__ca_index_read(ca, err)) != 0 ||
        (rc = mtls__ca_index_format(ca, &old_index, &old_len, err)) != 0)
        goto out;
    rc = mtls_ca_sign(ca, issue, &cert, clamped, err);
    if (rc != 0)
        goto out;
    (void)sk_X509_pop(ca->unsaved);
    X509_free(cert); /* the stack's reference; ours remains */
    copy = copy_path(ca, cert);
    if (copy == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = make_certs_dir(ca, err)) != 0 ||
        (rc = mtls_cert_to_pem(cert, &pem, &pem_len, err)) != 0 ||
        (rc = mtls_file_write_atomic(copy, pem, pem_len, MTLS_MODE_PUBLIC, 0, err)) != 0)
        goto out;
    if (!mtls_file_exists(attr_path) &&
        (rc = mtls__ca_write_state(ca, ".index.attr", index_attr, strlen(index_attr), err)) != 0)
        goto undo_copy;
    if ((rc = mtls__ca_index_format(ca, &new_index, &new_len, err)) != 0 ||
        (rc = mtls__ca_write_state(ca, ".index", new_index, new_len, err)) != 0)
        goto undo_copy;
    if (deliver != NULL) {
        rc = deliver(arg, cert, err);
        if (rc != 0) {
            /* Put the previous inventory back: the certificate never left. */
            if (had_index)
                (void)mtls__ca_write_state(ca, ".index", old_index, old_len, NULL);
            else
                (void)unlink(idx_path);
            (void)mtls__ca_index_read(ca, NULL);
            goto undo_copy;
        }
    }
    if (out != NULL) {
        *out = cert;
        cert = NULL;
    }
    rc = 0;
    goto out;
undo_copy:
    (void)unlink(copy);
out:
    close(lock_fd);
    X509_free(cert);
    free(old_index);
    free(new_index);
    free(copy);
    free(pem);
    free(idx_path);
    free(attr_path);
    return rc;
}

/* ---- intermediates, inventory queries, revocation --------------------- */

int mtls_ca_from(const char *prefix, X509 *cert, EVP_PKEY *key, STACK_OF(X509) * chain,
                 mtls_ca **out, mtls_err *err)
{
    mtls_ca *ca = ca_new(prefix);

    *out = NULL;
    if (ca == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    if (X509_up_ref(cert) != 1 || (ca->cert = cert, EVP_PKEY_up_ref(key) != 1)) {
        mtls_ca_free(ca);
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    }
    ca->key = key;
    if (chain != NULL && (ca->chain = X509_chain_up_ref(chain)) == NULL) {
        mtls_ca_free(ca);
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    }
    *out = ca;
    return 0;
}

STACK_OF(X509) * mtls_ca_chain(const mtls_ca *ca)
{
    return ca->chain;
}

int mtls_ca_reload(mtls_ca *ca, mtls_err *err)
{
    return mtls__ca_index_read(ca, err);
}

int mtls_ca_record_cert(const mtls_ca *ca, const mtls_ca_record *rec, X509 **out, mtls_err *err)
{
    size_t n = strlen(ca->prefix) + strlen(rec->serial) + 16;
    char *path = malloc(n);
    int rc;

    *out = NULL;
    if (path == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    snprintf(path, n, "%s.certs/%s.pem", ca->prefix, rec->serial);
    rc = mtls_cert_load(path, out, err);
    free(path);
    return rc;
}

int mtls_index_time(const char *text, time_t *out)
{
    ASN1_TIME *t = ASN1_TIME_new();
    struct tm tm;
    int rc = -1;

    if (t != NULL && ASN1_TIME_set_string(t, text) == 1 && ASN1_TIME_to_tm(t, &tm) == 1) {
        *out = timegm(&tm);
        rc = 0;
    }
    ASN1_TIME_free(t);
    ERR_clear_error();
    return rc;
}

int mtls_serial_normalize(const char *in, char *out, size_t size, mtls_err *err)
{
    char digits[128];
    size_t n = 0;
    BIGNUM *bn = NULL;
    ASN1_INTEGER *serial;

    if (strncasecmp(in, "serial=", 7) == 0)
        in += 7;
    if (strncasecmp(in, "0x", 2) == 0)
        in += 2;
    for (const char *p = in; *p != '\0'; p++) {
        if (*p == ':' || *p == ' ')
            continue;
        if (!isxdigit((unsigned char)*p) || n + 1 >= sizeof(digits))
            return mtls_err_set(err, MTLS_E_INVALID,
                                "'%s' is not a serial number (hexadecimal, as 'mtls cert show' "
                                "prints it)",
                                in);
        digits[n++] = *p;
    }
    digits[n] = '\0';
    if (n == 0 || BN_hex2bn(&bn, digits) == 0)
        return mtls_err_set(err, MTLS_E_INVALID, "'%s' is not a serial number", in);
    serial = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    if (serial == NULL)
        return mtls_err_ssl(err, MTLS_E_NOMEM, "cannot read serial '%s'", in);
    mtls_serial_hex(serial, out, size);
    ASN1_INTEGER_free(serial);
    return 0;
}

static const struct {
    const char *name;
    int code;
} crl_reasons[] = {
    {"unspecified", 0},        {"keyCompromise", 1}, {"CACompromise", 2},
    {"affiliationChanged", 3}, {"superseded", 4},    {"cessationOfOperation", 5},
};

int mtls_crl_reason_parse(const char *name, int *code, mtls_err *err)
{
    for (size_t i = 0; i < sizeof(crl_reasons) / sizeof(crl_reasons[0]); i++) {
        if (strcasecmp(name, crl_reasons[i].name) == 0) {
            *code = crl_reasons[i].code;
            return 0;
        }
    }
    return mtls_err_set(err, MTLS_E_INVALID,
                        "unknown reason '%s': use unspecified, keyCompromise, CACompromise, "
                        "affiliationChanged, superseded or cessationOfOperation",
                        name);
}

const char *mtls_crl_reason_name(int code)
{
    for (size_t i = 0; i < sizeof(crl_reasons) / sizeof(crl_reasons[0]); i++) {
        if (crl_reasons[i].code == code)
            return crl_reasons[i].name;
    }
    return "unspecified";
}

/* The record with this (normalised) serial, or NULL. */
static mtls_ca_record *find_record(mtls_ca *ca, const char *serial)
{
    char norm[84];

    for (size_t i = 0; i < ca->n_records; i++) {
        if (mtls_serial_normalize(ca->records[i].serial, norm, sizeof(norm), NULL) == 0 &&
            strcmp(norm, serial) == 0)
            return &ca->records[i];
    }
    return NULL;
}

int mtls_ca_revoke(mtls_ca *ca, const char *serial, X509 *cert, int reason, mtls_ca_record *rec_out,
                   mtls_err *err)
{
    char want[84], *index = NULL;
    size_t index_len = 0;
    mtls_ca_record *rec;
    ASN1_TIME *now = NULL;
    int lock_fd, rc;

    if (rec_out != NULL)
        memset(rec_out, 0, sizeof(*rec_out));
    if (cert != NULL) {
        mtls_serial_hex(X509_get0_serialNumber(cert), want, sizeof(want));
        if (mtls_cert_issued_by(cert, ca->cert) != X509_V_OK)
            return mtls_err_set(err, MTLS_E_INVALID,
                                "the certificate was not issued by CA '%s': pass the CA that "
                                "signed it",
                                ca->prefix);
    } else {
        rc = mtls_serial_normalize(serial, want, sizeof(want), err);
        if (rc != 0)
            return rc;
    }
    lock_fd = mtls__ca_lock(ca, err);
    if (lock_fd < 0)
        return err != NULL ? err->code : MTLS_E_IO;
    if ((rc = mtls__ca_index_read(ca, err)) != 0)
        goto out;
    rec = find_record(ca, want);
    if (rec == NULL && cert != NULL) {
        /* Issued before the inventory existed (e.g. by openssl): record it now. */
        if ((rc = record_cert(ca, cert, want, err)) != 0)
            goto out;
        rec = &ca->records[ca->n_records - 1];
    }
    if (rec == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOTFOUND,
                          "serial %s is not in '%s.index': this CA did not issue it (pass the "
                          "certificate file instead if it did, before its inventory existed)",
                          want, ca->prefix);
        goto out;
    }
    if (rec->status == 'R') {
        char when[48] = "?";
        time_t t;
        char date[20];

        snprintf(date, sizeof(date), "%.*s", (int)strcspn(rec->revoked, ","), rec->revoked);
        if (mtls_index_time(date, &t) == 0)
            mtls_time_human(t, when, sizeof(when));
        rc = mtls_err_set(err, MTLS_E_EXISTS, "serial %s (%s) was already revoked on %s", want,
                          rec->subject, when);
        goto out;
    }
    now = X509_gmtime_adj(NULL, 0);
    if (now == NULL) {
        rc = mtls_err_ssl(err, MTLS_E_NOMEM, "cannot read the time");
        goto out;
    }
    rec->status = 'R';
    if (reason == MTLS_REASON_NONE)
        snprintf(rec->revoked, sizeof(rec->revoked), "%.*s", ASN1_STRING_length(now),
                 (const char *)ASN1_STRING_get0_data(now));
    else
        snprintf(rec->revoked, sizeof(rec->revoked), "%.*s,%s", ASN1_STRING_length(now),
                 (const char *)ASN1_STRING_get0_data(now), mtls_crl_reason_name(reason));
    if ((rc = mtls__ca_index_format(ca, &index, &index_len, err)) != 0 ||
        (rc = mtls__ca_write_state(ca, ".index", index, index_len, err)) != 0) {
        (void)mtls__ca_index_read(ca, NULL);
        goto out;
    }
    if (rec_out != NULL) {
        *rec_out = *rec;
        rec_out->subject = strdup(rec->subject);
    }
    rc = 0;
out:
    ASN1_TIME_free(now);
    free(index);
    close(lock_fd);
    return rc;
}
