/* mtls key create: a new private key, written 0600. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "pki_common.h"

static const char *out_opt, *key_type_opt;
static long bits_opt;
static int force;
static struct pki_secret secret;

static const struct cli_opt opts[] = {
    {"out", 'o', CLI_STRING, &out_opt, "FILE", "where to write the key (PEM, PKCS#8, mode 0600)", 0,
     0},
    {"key-type", 't', CLI_STRING, &key_type_opt, "ec|rsa|ed25519",
     "key algorithm (default ec: ECDSA P-256; rsa: RSA-2048, the article's; ed25519: TLS 1.3 only, "
     "not for browsers)",
     0, 0},
    {"bits", 'b', CLI_INT, &bits_opt, "N",
     "key size: RSA 2048 (default) to 16384; EC 256 (default), 384 or 521", 256, 16384},
    PKI_OPT_ENCRYPT(secret),
    PKI_OPT_PASSWORD_FILE_WRITE(secret),
    {"force", 'f', CLI_FLAG, &force, NULL, "overwrite FILE if it exists", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec spec = {
    .name = "key create",
    .usage = "--out FILE [--key-type ec|rsa|ed25519] [--bits N] [--encrypt --password-file FILE] "
             "[--force]",
    .summary = "make a private key",
    .description = NULL,
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = NULL,
};

int cmd_key_create(int argc, char **argv)
{
    struct cli_args args = {0};
    mtls_key_type type;
    EVP_PKEY *key = NULL;
    char *pem = NULL, desc[32];
    size_t len = 0;
    mtls_err err;
    int rc, code = EXIT_FAIL;

    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (out_opt == NULL) {
        code = cli_usage_error(&spec, "--out FILE is required");
        goto out;
    }
    if (pki_key_type_arg(&spec, key_type_opt, &type) != 0) {
        code = EXIT_USAGE;
        goto out;
    }
    if ((rc = pki_secret_load(&spec, &secret)) != 0) {
        code = rc;
        goto out;
    }
    if (pki_check_new(out_opt, force, &err) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    rc = mtls_key_generate(type, (int)bits_opt, &key, &err);
    if (rc == MTLS_E_INVALID) {
        code = cli_usage_error(&spec, "%s", err.msg);
        goto out;
    }
    if (rc != 0 ||
        (rc = mtls_key_to_pem(key, pki_secret_for_writing(&secret), &pem, &len, &err)) != 0 ||
        (rc = mtls_file_write_atomic(out_opt, pem, len, MTLS_MODE_SECRET, force, &err)) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    printf("wrote %s%s key to %s\n", secret.encrypt ? "encrypted " : "",
           mtls_key_describe(key, desc, sizeof(desc)), out_opt);
    code = EXIT_OK;
out:
    mtls_free_secret(pem, len);
    pki_secret_release(&secret);
    EVP_PKEY_free(key);
    cli_args_release(&args);
    return code;
}
