/* mtls cert show: what `openssl x509 -text -noout` says, for a person or
 * as JSON; also for CSRs. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "pki_common.h"

static int json_opt;

static const struct cli_opt opts[] = {
    {"json", 0, CLI_FLAG, &json_opt, NULL, "print JSON (schema in the README) instead of text", 0,
     0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec spec = {
    .name = "cert show",
    .usage = "FILE [--json]",
    .summary = "show a certificate (or a chain, or a CSR) in plain words",
    .description = "FILE is PEM (or DER) and holds one or more certificates, or a certificate\n"
                   "signing request. Shown: subject, issuer, serial, validity with \"expires in N\n"
                   "days\", key type and size, SANs, key usages, CA or not, SHA-256 fingerprint.",
    .opts = opts,
    .min_args = 1,
    .max_args = 1,
    .exit_codes = NULL,
};

static void row(const char *label, const char *value)
{
    if (value != NULL && value[0] != '\0')
        printf("  %-12s %s\n", label, value);
}

/* "EC 256 bits (prime256v1)", "RSA 2048 bits". */
static void key_row(const mtls_cert_info *info)
{
    char buf[128];

    if (info->key_curve[0] != '\0')
        snprintf(buf, sizeof(buf), "%s %d bits (%s)", info->key_type, info->key_bits,
                 info->key_curve);
    else
        snprintf(buf, sizeof(buf), "%s %d bits", info->key_type, info->key_bits);
    row("key", buf);
}

/* Every SAN, however many: wrapped at about 100 columns, never cut. */
static void sans_rows(const mtls_cert_info *info)
{
    size_t width = 0;

    if (info->n_sans == 0) {
        row("SANs", "(none)");
        return;
    }
    printf("  %-12s", "SANs");
    for (size_t i = 0; i < info->n_sans; i++) {
        size_t n = strlen(info->sans[i].type) + strlen(info->sans[i].value) + 3;

        if (i > 0 && width + n > 85) {
            printf(",\n  %-12s", "");
            width = 0;
        } else if (i > 0) {
            putchar(',');
        }
        printf(" %s:%s", info->sans[i].type, info->sans[i].value);
        width += n;
    }
    putchar('\n');
}

static void print_cert(const mtls_cert_info *info, const char *title)
{
    char buf[1024], from[48], until[48], words[64];

    printf("%s%s%s\n", cli_bold(stdout), title, cli_reset(stdout));
    row("subject", info->subject);
    row("issuer", info->self_signed ? "(itself: self-signed)" : info->issuer);
    row("serial", info->serial_hex);
    snprintf(buf, sizeof(buf), "%s to %s (%s)",
             mtls_time_human(info->not_before, from, sizeof(from)),
             mtls_time_human(info->not_after, until, sizeof(until)),
             pki_expiry_words(info->not_after, words, sizeof(words)));
    if (info->not_before > time(NULL))
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), ", not valid yet");
    row("valid", buf);
    key_row(info);
    row("signature", info->sig_alg);
    sans_rows(info);
    row("key usage", info->key_usage[0] ? info->key_usage : "(any)");
    row("ext. usage", info->ext_key_usage[0] ? info->ext_key_usage : "(any)");
    if (info->is_ca && info->path_len >= 0)
        snprintf(buf, sizeof(buf), "yes, may sign certificates (path length %ld)", info->path_len);
    else
        snprintf(buf, sizeof(buf), "%s", info->is_ca ? "yes, may sign certificates" : "no");
    row("CA", buf);
    if (info->version != 3) {
        snprintf(buf, sizeof(buf), "%d (no extensions)", info->version);
        row("version", buf);
    }
    row("SHA-256", info->sha256);
}

static cJSON *cert_json(const mtls_cert_info *info)
{
    cJSON *o = mtls_cert_info_to_json(info);

    if (o != NULL) {
        cJSON_AddStringToObject(o, "type", "certificate");
        cJSON_AddNumberToObject(o, "expires_in_days",
                                (double)mtls_days_left(info->not_after, time(NULL)));
        cJSON_AddNumberToObject(o, "expires_in_seconds", (double)(info->not_after - time(NULL)));
        cJSON_AddBoolToObject(o, "expired", info->not_after < time(NULL));
    }
    return o;
}

static int show_certs(const char *path)
{
    STACK_OF(X509) *certs = NULL;
    cJSON *arr = NULL;
    mtls_err err;
    int code = EXIT_FAIL, n;

    if (mtls_cert_load_all(path, &certs, &err) != 0)
        return cli_fail(&err);
    n = sk_X509_num(certs);
    if (json_opt && n > 1)
        arr = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        mtls_cert_info info;
        char title[4200];

        if (mtls_cert_info_init(&info, sk_X509_value(certs, i), &err) != 0) {
            code = cli_fail(&err);
            goto out;
        }
        if (json_opt) {
            cJSON *o = cert_json(&info);

            if (arr != NULL) {
                cJSON_AddItemToArray(arr, o);
            } else {
                char *text = cJSON_Print(o);

                if (text != NULL)
                    printf("%s\n", text);
                free(text);
                cJSON_Delete(o);
            }
        } else {
            if (n > 1)
                snprintf(title, sizeof(title), "%s%scertificate %d of %d in %s", i ? "\n" : "", "",
                         i + 1, n, path);
            else
                snprintf(title, sizeof(title), "certificate %s", path);
            print_cert(&info, title);
        }
        mtls_cert_info_release(&info);
    }
    if (arr != NULL) {
        char *text = cJSON_Print(arr);

        if (text != NULL)
            printf("%s\n", text);
        free(text);
    }
    code = EXIT_OK;
out:
    cJSON_Delete(arr);
    sk_X509_pop_free(certs, X509_free);
    return code;
}

/* What a CSR says about itself beyond what mtls_cert_info reads. */
struct csr_facts {
    int sig_ok;
    const char *sig_alg;
    char sha256[100];
};

/* A CSR is shown through a stand-in certificate carrying its subject, key
 * and requested extensions, so that mtls_cert_info reads it like any
 * certificate. *out is freed by the caller. */
static int csr_stand_in(X509_REQ *req, const char *path, X509 **out)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    X509 *stand_in = X509_new();
    EVP_PKEY *throwaway = NULL;
    mtls_err err;
    int code = EXIT_FAIL;

    if (stand_in == NULL || X509_set_version(stand_in, X509_VERSION_3) != 1 ||
        X509_set_subject_name(stand_in, X509_REQ_get_subject_name(req)) != 1 ||
        X509_set_issuer_name(stand_in, X509_REQ_get_subject_name(req)) != 1 ||
        X509_REQ_get0_pubkey(req) == NULL ||
        X509_set_pubkey(stand_in, X509_REQ_get0_pubkey(req)) != 1) {
        code = cli_failf("cannot read the request in '%s': its key is malformed", path);
        goto out;
    }
    for (int i = 0; i < sk_X509_EXTENSION_num(exts); i++)
        X509_add_ext(stand_in, sk_X509_EXTENSION_value(exts, i), -1);
    /* A complete certificate (serial, dates, a signature by a throwaway
     * key) so that it encodes; only the CSR's own fields are shown. */
    if (ASN1_INTEGER_set(X509_get_serialNumber(stand_in), 1) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(stand_in), 0) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(stand_in), 0) == NULL ||
        mtls_key_generate(MTLS_KEY_EC, 0, &throwaway, &err) != 0 ||
        X509_sign(stand_in, throwaway, EVP_sha256()) <= 0) {
        code = cli_failf("cannot read the request in '%s'", path);
        goto out;
    }
    *out = stand_in;
    stand_in = NULL;
    code = EXIT_OK;
out:
    ERR_clear_error();
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_free(stand_in);
    EVP_PKEY_free(throwaway);
    return code;
}

static void csr_facts(X509_REQ *req, const char *path, struct csr_facts *f)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    int nid = X509_REQ_get_signature_nid(req);

    memset(f, 0, sizeof(*f));
    f->sig_ok = mtls_csr_check_signature(req, path, NULL) == 0;
    f->sig_alg = nid != NID_undef ? OBJ_nid2ln(nid) : "unknown";
    if (X509_REQ_digest(req, EVP_sha256(), md, &md_len) == 1) {
        for (unsigned int i = 0; i < md_len; i++)
            snprintf(f->sha256 + 3 * i, sizeof(f->sha256) - 3 * i,
                     i + 1 < md_len ? "%02X:" : "%02X", md[i]);
    }
}

static int print_csr_json(const mtls_cert_info *info, const struct csr_facts *f)
{
    static const char *const keep[] = {"subject",   "subject_cn",         "key_type",
                                       "key_bits",  "key_curve",          "is_ca",
                                       "key_usage", "extended_key_usage", "sans"};
    cJSON *o = cJSON_CreateObject(), *full = mtls_cert_info_to_json(info), *item;
    char *text;

    cJSON_AddStringToObject(o, "type", "csr");
    for (size_t i = 0; full != NULL && i < sizeof(keep) / sizeof(keep[0]); i++) {
        item = cJSON_DetachItemFromObject(full, keep[i]);
        if (item != NULL)
            cJSON_AddItemToObject(o, keep[i], item);
    }
    cJSON_AddStringToObject(o, "signature_algorithm", f->sig_alg);
    cJSON_AddBoolToObject(o, "signature_valid", f->sig_ok);
    cJSON_AddStringToObject(o, "sha256", f->sha256);
    text = cJSON_Print(o);
    cJSON_Delete(full);
    cJSON_Delete(o);
    if (text == NULL)
        return cli_failf("out of memory");
    printf("%s\n", text);
    free(text);
    return EXIT_OK;
}

static int print_csr(const mtls_cert_info *info, const struct csr_facts *f, const char *path)
{
    char buf[160];

    printf("%scertificate request %s%s\n", cli_bold(stdout), path, cli_reset(stdout));
    row("subject", info->subject[0] ? info->subject : "(empty)");
    key_row(info);
    snprintf(buf, sizeof(buf), "%s, %s", f->sig_alg,
             f->sig_ok ? "valid (made with its own key)" : "INVALID (altered or forged)");
    row("signature", buf);
    sans_rows(info);
    row("key usage", info->key_usage[0] ? info->key_usage : "(not asked)");
    row("ext. usage", info->ext_key_usage[0] ? info->ext_key_usage : "(not asked)");
    row("CA", info->is_ca ? "asks for CA:TRUE (mtls cert sign never grants it)" : "no");
    row("SHA-256", f->sha256);
    return EXIT_OK;
}

static int show_csr(const char *path)
{
    X509_REQ *req = NULL;
    X509 *stand_in = NULL;
    struct csr_facts facts;
    mtls_cert_info info;
    mtls_err err;
    int code;

    if (mtls_csr_load(path, &req, &err) != 0)
        return cli_fail(&err);
    code = csr_stand_in(req, path, &stand_in);
    if (code == EXIT_OK && mtls_cert_info_init(&info, stand_in, &err) != 0)
        code = cli_fail(&err);
    else if (code == EXIT_OK) {
        csr_facts(req, path, &facts);
        code = json_opt ? print_csr_json(&info, &facts) : print_csr(&info, &facts, path);
        mtls_cert_info_release(&info);
    }
    X509_free(stand_in);
    X509_REQ_free(req);
    return code;
}

/* 1 when data is a DER certificate request (and not a certificate). */
static int is_der_csr(const unsigned char *data, size_t len)
{
    const unsigned char *p = data;
    X509_REQ *req = len <= LONG_MAX ? d2i_X509_REQ(NULL, &p, (long)len) : NULL;
    int yes = req != NULL;

    X509_REQ_free(req);
    ERR_clear_error();
    return yes;
}

int cmd_cert_show(int argc, char **argv)
{
    struct cli_args args = {0};
    unsigned char *data = NULL;
    size_t len = 0;
    char label[64];
    mtls_err err;
    int rc, code;

    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    /* Peek at the first PEM label to tell a CSR from certificates. */
    if (mtls_file_read(args.v[0], MTLS_PEM_MAX, &data, &len, &err) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    mtls_pem_label((char *)data, label, sizeof(label));
    if ((strstr((char *)data, "-----BEGIN CERTIFICATE-----") == NULL &&
         strstr(label, "CERTIFICATE REQUEST") != NULL) ||
        (label[0] == '\0' && is_der_csr(data, len)))
        code = show_csr(args.v[0]);
    else
        code = show_certs(args.v[0]);
out:
    free(data);
    cli_args_release(&args);
    return code;
}
