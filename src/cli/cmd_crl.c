/* mtls crl create / crl show: publish and read certificate revocation lists. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "pki_common.h"

/* ---- crl create -------------------------------------------------------- */

static const char *create_ca, *create_out;
static long create_days = 30;
static int create_force;
static struct pki_secret create_secret;

static const struct cli_opt create_opts[] = {
    {"ca", 0, CLI_STRING, &create_ca, "PREFIX", "the CA whose revocations to publish", 0, 0},
    {"out", 'o', CLI_STRING, &create_out, "FILE", "where to write the CRL (PEM)", 0, 0},
    {"days", 0, CLI_INT, &create_days, "N",
     "nextUpdate in N days (default 30): make a new CRL before then, or clients refuse", 1,
     MTLS_DAYS_MAX},
    PKI_OPT_PASSWORD_FILE_READ(create_secret),
    {"force", 'f', CLI_FLAG, &create_force, NULL,
     "replace FILE (the usual case when re-publishing)", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec create_spec = {
    .name = "crl create",
    .usage = "--ca PREFIX --out FILE [--days N] [--password-file FILE] [--force]",
    .summary = "publish a CRL of every certificate the CA revoked",
    .description = "The CRL (v2) lists each revoked serial with its date and reason, carries the\n"
                   "CA's key identifier and a CRL number one higher than the last\n"
                   "(PREFIX.crlnumber), and is signed with PREFIX.key.",
    .opts = create_opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = NULL,
};

int cmd_crl_create(int argc, char **argv)
{
    struct cli_args args = {0};
    mtls_ca *ca = NULL;
    X509_CRL *crl = NULL;
    char *pem = NULL, until[48], words[64];
    size_t len = 0;
    long number = 0;
    mtls_err err;
    int rc, code = EXIT_FAIL;

    rc = cli_parse(&create_spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (create_ca == NULL || create_out == NULL) {
        code = cli_usage_error(&create_spec, "--ca PREFIX and --out FILE are required");
        goto out;
    }
    if ((rc = pki_secret_load(&create_spec, &create_secret)) != 0) {
        code = rc;
        goto out;
    }
    if ((rc = pki_check_new(create_out, create_force, &err)) != 0 ||
        (rc = mtls_ca_open(create_ca, create_secret.password, &ca, &err)) != 0 ||
        (rc = mtls_ca_crl(ca, (int)create_days, &crl, &number, &err)) != 0 ||
        (rc = mtls_crl_to_pem(crl, &pem, &len, &err)) != 0 ||
        (rc = mtls_file_write_atomic(create_out, pem, len, MTLS_MODE_PUBLIC, create_force, &err)) !=
            0) {
        code = cli_fail(&err);
        goto out;
    }
    printf("wrote CRL number %ld to %s: %d revoked, next update %s (%s)\n", number, create_out,
           sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)),
           mtls_time_human(mtls_asn1_time(X509_CRL_get0_nextUpdate(crl)), until, sizeof(until)),
           pki_expiry_words(mtls_asn1_time(X509_CRL_get0_nextUpdate(crl)), words, sizeof(words)));
    code = EXIT_OK;
out:
    free(pem);
    pki_secret_release(&create_secret);
    X509_CRL_free(crl);
    mtls_ca_free(ca);
    cli_args_release(&args);
    return code;
}

/* ---- crl show ---------------------------------------------------------- */

static int show_json;

static const struct cli_opt show_opts[] = {
    {"json", 0, CLI_FLAG, &show_json, NULL, "print JSON (schema in the README)", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec show_spec = {
    .name = "crl show",
    .usage = "FILE [--json]",
    .summary = "show a CRL: issuer, number, this and next update, revoked serials",
    .description = NULL,
    .opts = show_opts,
    .min_args = 1,
    .max_args = 1,
    .exit_codes = NULL,
};

static char *bn_text(const ASN1_INTEGER *i, int decimal, char *buf, size_t size)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(i, NULL);
    char *hex = bn == NULL ? NULL : decimal ? BN_bn2dec(bn) : BN_bn2hex(bn);

    snprintf(buf, size, "%s", hex != NULL ? hex : "?");
    OPENSSL_free(hex);
    BN_free(bn);
    return buf;
}

int cmd_crl_show(int argc, char **argv)
{
    struct cli_args args = {0};
    X509_CRL *crl = NULL;
    ASN1_INTEGER *num = NULL;
    STACK_OF(X509_REVOKED) * revs;
    cJSON *root = NULL, *arr = NULL;
    char issuer[MTLS_NAME_MAX], number[84] = "", a[48], b[48], words[64];
    time_t this_update, next_update;
    mtls_err err;
    int rc, code = EXIT_FAIL, n;

    rc = cli_parse(&show_spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (mtls_crl_load(args.v[0], &crl, &err) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    mtls_name_oneline(X509_CRL_get_issuer(crl), issuer, sizeof(issuer));
    num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    if (num != NULL)
        bn_text(num, 1, number, sizeof(number));
    this_update = mtls_asn1_time(X509_CRL_get0_lastUpdate(crl));
    next_update = mtls_asn1_time(X509_CRL_get0_nextUpdate(crl));
    revs = X509_CRL_get_REVOKED(crl);
    n = sk_X509_REVOKED_num(revs);
    if (show_json) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "type", "crl");
        cJSON_AddStringToObject(root, "issuer", issuer);
        if (num != NULL)
            cJSON_AddNumberToObject(root, "crl_number", (double)ASN1_INTEGER_get(num));
        else
            cJSON_AddNullToObject(root, "crl_number");
        cJSON_AddStringToObject(root, "this_update", mtls_time_iso(this_update, a, sizeof(a)));
        if (next_update != 0) {
            time_t now = time(NULL);

            cJSON_AddStringToObject(root, "next_update", mtls_time_iso(next_update, b, sizeof(b)));
            cJSON_AddNumberToObject(root, "expires_in_days",
                                    (double)mtls_days_left(next_update, now));
            cJSON_AddBoolToObject(root, "expired", next_update < now);
        } else {
            cJSON_AddNullToObject(root, "next_update");
            cJSON_AddNullToObject(root, "expires_in_days");
            cJSON_AddBoolToObject(root, "expired", 0);
        }
        arr = cJSON_AddArrayToObject(root, "revoked");
    } else {
        printf("%sCRL %s%s\n", cli_bold(stdout), args.v[0], cli_reset(stdout));
        printf("  %-12s %s\n", "issuer", issuer);
        printf("  %-12s %s\n", "number", num != NULL ? number : "(none)");
        printf("  %-12s %s\n", "this update", mtls_time_human(this_update, a, sizeof(a)));
        if (next_update != 0)
            printf("  %-12s %s (%s)\n", "next update", mtls_time_human(next_update, b, sizeof(b)),
                   pki_expiry_words(next_update, words, sizeof(words)));
        printf("  %-12s %d\n", "revoked", n);
    }
    for (int i = 0; i < n; i++) {
        X509_REVOKED *rev = sk_X509_REVOKED_value(revs, i);
        const char *why = mtls_crl_entry_reason(rev);
        char serial[84], when[48];

        bn_text(X509_REVOKED_get0_serialNumber(rev), 0, serial, sizeof(serial));
        if (show_json) {
            cJSON *o = cJSON_CreateObject();

            cJSON_AddStringToObject(o, "serial", serial);
            cJSON_AddStringToObject(
                o, "date",
                mtls_time_iso(mtls_asn1_time(X509_REVOKED_get0_revocationDate(rev)), when,
                              sizeof(when)));
            if (why != NULL)
                cJSON_AddStringToObject(o, "reason", why);
            else
                cJSON_AddNullToObject(o, "reason");
            cJSON_AddItemToArray(arr, o);
        } else {
            printf("    %-34s %s%s%s\n", serial,
                   mtls_time_human(mtls_asn1_time(X509_REVOKED_get0_revocationDate(rev)), when,
                                   sizeof(when)),
                   why ? ", " : "", why ? why : "");
        }
    }
    if (root != NULL) {
        char *text = cJSON_Print(root);

        if (text != NULL)
            printf("%s\n", text);
        free(text);
    }
    code = EXIT_OK;
out:
    cJSON_Delete(root);
    ASN1_INTEGER_free(num);
    X509_CRL_free(crl);
    cli_args_release(&args);
    return code;
}
