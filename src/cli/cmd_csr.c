/* mtls csr create: a certificate signing request for an existing key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pki_common.h"

static const char *key_opt, *cn_opt, *out_opt;
static struct cli_list san_opt;
static int force;
static struct pki_secret secret;

static const struct cli_opt opts[] = {
    {"key", 'k', CLI_STRING, &key_opt, "FILE", "the private key the request is for", 0, 0},
    {"cn", 0, CLI_STRING, &cn_opt, "CN", "the subject's common name, e.g. localclient", 0, 0},
    {"san", 0, CLI_LIST, &san_opt, "VALUE",
     "a subjectAltName, repeatable: DNS:name, IP:addr, email:addr, URI:uri, or a bare host name "
     "or address (typed automatically)",
     0, 0},
    {"out", 'o', CLI_STRING, &out_opt, "FILE", "where to write the request (PEM)", 0, 0},
    PKI_OPT_PASSWORD_FILE_READ(secret),
    {"force", 'f', CLI_FLAG, &force, NULL, "overwrite FILE if it exists", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec spec = {
    .name = "csr create",
    .usage = "--key FILE --cn CN [--san VALUE]... --out FILE [--password-file FILE] [--force]",
    .summary = "make a certificate signing request (CSR) for a key",
    .description = "The request carries the subject CN=CN and the SANs, signed with the key.\n"
                   "A CA signs it with 'mtls cert sign'.",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = NULL,
};

int cmd_csr_create(int argc, char **argv)
{
    struct cli_args args = {0};
    GENERAL_NAMES *sans = NULL;
    EVP_PKEY *key = NULL;
    X509_REQ *req = NULL;
    char *pem = NULL;
    size_t len = 0;
    mtls_err err;
    int rc, code = EXIT_FAIL;

    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (key_opt == NULL || cn_opt == NULL || out_opt == NULL) {
        code = cli_usage_error(&spec, "--key FILE, --cn CN and --out FILE are required");
        goto out;
    }
    if (mtls_cn_check(cn_opt, &err) != 0) {
        code = cli_usage_error(&spec, "--cn: %s", err.msg);
        goto out;
    }
    if (pki_sans_arg(&spec, &san_opt, &sans) != 0) {
        code = EXIT_USAGE;
        goto out;
    }
    if ((rc = pki_secret_load(&spec, &secret)) != 0) {
        code = rc;
        goto out;
    }
    if ((rc = pki_check_new(out_opt, force, &err)) != 0 ||
        (rc = mtls_key_load(key_opt, secret.password, &key, &err)) != 0 ||
        (rc = mtls_key_check_tls(key, key_opt, &err)) != 0 ||
        (rc = mtls_csr_create(key, cn_opt, sans, &req, &err)) != 0 ||
        (rc = mtls_csr_to_pem(req, &pem, &len, &err)) != 0 ||
        (rc = mtls_file_write_atomic(out_opt, pem, len, MTLS_MODE_PUBLIC, force, &err)) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    printf("wrote a request for CN=%s to %s\nsign it with: mtls cert sign --csr %s --ca PREFIX "
           "--profile client|server --out FILE\n",
           cn_opt, out_opt, out_opt);
    code = EXIT_OK;
out:
    free(pem);
    pki_secret_release(&secret);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    GENERAL_NAMES_free(sans);
    cli_list_release(&san_opt);
    cli_args_release(&args);
    return code;
}
