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

static int revoked_count(const X509_CRL *crl);

int cmd_crl_create(int argc, char **argv)
{
    struct pki_signals held = {0};
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
    /* A CRL number taken is a CRL written: an interruption waits for both. */
    pki_hold_signals(&held);
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
           revoked_count(crl),
           mtls_time_human(mtls_asn1_time(X509_CRL_get0_nextUpdate(crl)), until, sizeof(until)),
           pki_expiry_words(mtls_asn1_time(X509_CRL_get0_nextUpdate(crl)), words, sizeof(words)));
    code = EXIT_OK;
out:
    free(pem);
    pki_secret_release(&create_secret);
    X509_CRL_free(crl);
    mtls_ca_free(ca);
    cli_args_release(&args);
    pki_release_signals(&held);
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

/* The CRL number in decimal, as `openssl crl -text` prints it. */
static char *decimal_text(const ASN1_INTEGER *i, char *buf, size_t size)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(i, NULL);
    char *dec = bn == NULL ? NULL : BN_bn2dec(bn);

    snprintf(buf, size, "%s", dec != NULL ? dec : "?");
    OPENSSL_free(dec);
    BN_free(bn);
    return buf;
}

/* The revoked entries; OpenSSL says -1 for a CRL without any. */
static int revoked_count(const X509_CRL *crl)
{
    int n = sk_X509_REVOKED_num(X509_CRL_get_REVOKED((X509_CRL *)crl));

    return n > 0 ? n : 0;
}

/* What crl show prints, read once from the CRL. */
struct crl_facts {
    char issuer[MTLS_NAME_MAX];
    char number[84]; /* decimal, "" when the CRL has no number */
    time_t this_update, next_update;
};

static void crl_facts(X509_CRL *crl, struct crl_facts *f)
{
    ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);

    memset(f, 0, sizeof(*f));
    mtls_name_oneline(X509_CRL_get_issuer(crl), f->issuer, sizeof(f->issuer));
    if (num != NULL)
        decimal_text(num, f->number, sizeof(f->number));
    ASN1_INTEGER_free(num);
    f->this_update = mtls_asn1_time(X509_CRL_get0_lastUpdate(crl));
    f->next_update = mtls_asn1_time(X509_CRL_get0_nextUpdate(crl));
}

static cJSON *revoked_json(const X509_REVOKED *rev)
{
    cJSON *o = cJSON_CreateObject();
    const char *why = mtls_crl_entry_reason(rev);
    char serial[84], when[48];

    mtls_serial_hex(X509_REVOKED_get0_serialNumber(rev), serial, sizeof(serial));
    cJSON_AddStringToObject(o, "serial", serial);
    cJSON_AddStringToObject(
        o, "date",
        mtls_time_iso(mtls_asn1_time(X509_REVOKED_get0_revocationDate(rev)), when, sizeof(when)));
    if (why != NULL)
        cJSON_AddStringToObject(o, "reason", why);
    else
        cJSON_AddNullToObject(o, "reason");
    return o;
}

static int print_crl_json(X509_CRL *crl, const struct crl_facts *f)
{
    cJSON *root = cJSON_CreateObject(), *arr;
    time_t now = time(NULL);
    char buf[48], *text;

    cJSON_AddStringToObject(root, "type", "crl");
    cJSON_AddStringToObject(root, "issuer", f->issuer);
    if (f->number[0] != '\0')
        cJSON_AddRawToObject(root, "crl_number", f->number);
    else
        cJSON_AddNullToObject(root, "crl_number");
    cJSON_AddStringToObject(root, "this_update", mtls_time_iso(f->this_update, buf, sizeof(buf)));
    if (f->next_update != 0) {
        cJSON_AddStringToObject(root, "next_update",
                                mtls_time_iso(f->next_update, buf, sizeof(buf)));
        cJSON_AddNumberToObject(root, "expires_in_days",
                                (double)mtls_days_left(f->next_update, now));
        cJSON_AddNumberToObject(root, "expires_in_seconds", (double)(f->next_update - now));
        cJSON_AddBoolToObject(root, "expired", f->next_update < now);
    } else {
        cJSON_AddNullToObject(root, "next_update");
        cJSON_AddNullToObject(root, "expires_in_days");
        cJSON_AddNullToObject(root, "expires_in_seconds");
        cJSON_AddBoolToObject(root, "expired", 0);
    }
    arr = cJSON_AddArrayToObject(root, "revoked");
    for (int i = 0; i < revoked_count(crl); i++)
        cJSON_AddItemToArray(arr,
                             revoked_json(sk_X509_REVOKED_value(X509_CRL_get_REVOKED(crl), i)));
    text = cJSON_Print(root);
    cJSON_Delete(root);
    if (text == NULL)
        return cli_failf("out of memory");
    printf("%s\n", text);
    free(text);
    return EXIT_OK;
}

static int print_crl(X509_CRL *crl, const struct crl_facts *f, const char *path)
{
    char a[48], words[64];

    printf("%sCRL %s%s\n", cli_bold(stdout), path, cli_reset(stdout));
    printf("  %-12s %s\n", "issuer", f->issuer);
    printf("  %-12s %s\n", "number", f->number[0] != '\0' ? f->number : "(none)");
    printf("  %-12s %s\n", "this update", mtls_time_human(f->this_update, a, sizeof(a)));
    if (f->next_update != 0)
        printf("  %-12s %s (%s)\n", "next update", mtls_time_human(f->next_update, a, sizeof(a)),
               pki_expiry_words(f->next_update, words, sizeof(words)));
    printf("  %-12s %d\n", "revoked", revoked_count(crl));
    for (int i = 0; i < revoked_count(crl); i++) {
        X509_REVOKED *rev = sk_X509_REVOKED_value(X509_CRL_get_REVOKED(crl), i);
        const char *why = mtls_crl_entry_reason(rev);
        char serial[84];

        mtls_serial_hex(X509_REVOKED_get0_serialNumber(rev), serial, sizeof(serial));
        printf("    %-34s %s%s%s\n", serial,
               mtls_time_human(mtls_asn1_time(X509_REVOKED_get0_revocationDate(rev)), a, sizeof(a)),
               why ? ", " : "", why ? why : "");
    }
    return EXIT_OK;
}

int cmd_crl_show(int argc, char **argv)
{
    struct cli_args args = {0};
    struct crl_facts facts;
    X509_CRL *crl = NULL;
    mtls_err err;
    int rc, code = EXIT_FAIL;

    rc = cli_parse(&show_spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (mtls_crl_load(args.v[0], &crl, &err) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    crl_facts(crl, &facts);
    code = show_json ? print_crl_json(crl, &facts) : print_crl(crl, &facts, args.v[0]);
out:
    X509_CRL_free(crl);
    cli_args_release(&args);
    return code;
}
