/* mtls ca ...: create a CA (the inventory commands come with revocation). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pki_common.h"

static const char *create_out, *create_cn, *create_key_type;
static long create_days = MTLS_CA_DAYS_DEFAULT;
static int create_force;

static const struct cli_opt create_opts[] = {
    {"out", 'o', CLI_STRING, &create_out, "PREFIX",
     "write PREFIX.crt, PREFIX.key and the CA's inventory (PREFIX.index, PREFIX.certs/)", 0, 0},
    {"cn", 0, CLI_STRING, &create_cn, "CN", "the CA's common name, e.g. client-example-ca", 0, 0},
    {"days", 0, CLI_INT, &create_days, "N", "validity in days (default 3650, ten years)", 1,
     MTLS_DAYS_MAX},
    {"key-type", 't', CLI_STRING, &create_key_type, "ec|rsa|ed25519",
     "key algorithm (default ec: ECDSA P-256; rsa: RSA-2048, the article's)", 0, 0},
    {"force", 'f', CLI_FLAG, &create_force, NULL, "overwrite an existing CA (and its inventory)", 0,
     0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec create_spec = {
    .name = "ca create",
    .usage = "--out PREFIX --cn CN [--days N] [--key-type ec|rsa|ed25519] [--force]",
    .summary = "make a self-signed certificate authority",
    .description =
        "The CA certificate has basicConstraints critical CA:TRUE, key usage keyCertSign\n"
        "and cRLSign, and a subject key identifier. Next to PREFIX.crt and PREFIX.key\n"
        "(0600) it gets an empty inventory that 'openssl ca' can also read:\n"
        "PREFIX.index (index.txt format), PREFIX.index.attr and the folder\n"
        "PREFIX.certs/ for a copy of each certificate it issues.",
    .opts = create_opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = NULL,
};

static const char *const ca_suffixes[] = {".crt", ".key", ".index", ".index.attr"};

int cmd_ca_create(int argc, char **argv)
{
    struct cli_args args = {0};
    mtls_ca_opts opts;
    mtls_ca *ca = NULL;
    mtls_txn txn;
    mtls_err err;
    mtls_cert_info info;
    char until[48], prefix[4096];
    int rc, code = EXIT_FAIL;

    mtls_txn_init(&txn);
    rc = cli_parse(&create_spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    memset(&opts, 0, sizeof(opts));
    if (create_out == NULL || create_cn == NULL) {
        code = cli_usage_error(&create_spec, "--out PREFIX and --cn CN are required");
        goto out;
    }
    if (pki_key_type_arg(&create_spec, create_key_type, &opts.key_type) != 0) {
        code = EXIT_USAGE;
        goto out;
    }
    if (mtls_cn_check(create_cn, &err) != 0) {
        code = cli_usage_error(&create_spec, "--cn: %s", err.msg);
        goto out;
    }
    opts.cn = create_cn;
    opts.days = (int)create_days;
    rc = mtls_ca_generate(create_out, &opts, &ca, &err);
    if (rc != 0) {
        code = cli_fail(&err);
        goto out;
    }
    snprintf(prefix, sizeof(prefix), "%s", mtls_ca_prefix(ca));
    for (size_t i = 0; i < sizeof(ca_suffixes) / sizeof(ca_suffixes[0]); i++) {
        char path[4200];

        snprintf(path, sizeof(path), "%s%s", prefix, ca_suffixes[i]);
        if (pki_check_new(path, create_force, &err) != 0) {
            code = cli_fail(&err);
            goto out;
        }
    }
    if ((rc = mtls_ca_stage(ca, &txn, NULL, &err)) != 0 ||
        (rc = mtls_txn_commit(&txn, create_force, &err)) != 0) {
        mtls_txn_release(&txn);
        mtls_ca_unstage(ca);
        code = cli_fail(&err);
        goto out;
    }
    if (mtls_cert_info_init(&info, mtls_ca_cert(ca), &err) == 0) {
        char key[32];

        printf("created CA 'CN=%s' (%s key, until %s):\n  %s.crt  %s.key  %s.index  %s.certs/\n",
               create_cn, mtls_key_describe(mtls_ca_key(ca), key, sizeof(key)),
               mtls_time_human(info.not_after, until, sizeof(until)), prefix, prefix, prefix,
               prefix);
        printf("issue with: mtls cert issue --ca %s --profile client --cn NAME --out NAME\n",
               prefix);
        mtls_cert_info_release(&info);
    }
    code = EXIT_OK;
out:
    mtls_txn_release(&txn);
    mtls_ca_free(ca);
    cli_args_release(&args);
    return code;
}
