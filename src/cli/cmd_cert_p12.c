/* mtls cert p12: a certificate, its key and chain as one PKCS#12 file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "cli.h"
#include "pki_common.h"

static const char *cert_opt, *key_opt, *chain_opt, *out_opt, *password_file;
static int legacy_opt, force;

static const struct cli_opt opts[] = {
    {"cert", 0, CLI_STRING, &cert_opt, "FILE", "the certificate (PEM)", 0, 0},
    {"key", 'k', CLI_STRING, &key_opt, "FILE", "its private key (PEM)", 0, 0},
    {"chain", 0, CLI_STRING, &chain_opt, "FILE",
     "intermediate CA certificates to include, from the certificate's issuer up (a .chain.crt "
     "file; the certificate itself in it is skipped); each must have issued the one before it",
     0, 0},
    {"out", 'o', CLI_STRING, &out_opt, "FILE", "where to write the .p12 (mode 0600)", 0, 0},
    {"password-file", 0, CLI_STRING, &password_file, "FILE",
     "the export password, on the first line of FILE (or $MTLS_KEY_PASSWORD); also decrypts an "
     "encrypted --key",
     0, 0},
    {"legacy", 0, CLI_FLAG, &legacy_opt, NULL,
     "3DES and a SHA-1 MAC, for importers that need the old algorithms (older macOS and "
     "Windows, Java 8)",
     0, 0},
    {"force", 'f', CLI_FLAG, &force, NULL, "overwrite FILE if it exists", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec spec = {
    .name = "cert p12",
    .usage = "--cert FILE --key FILE [--chain FILE] --out FILE --password-file FILE [--legacy] "
             "[--force]",
    .summary = "bundle a certificate, its key and chain as PKCS#12 for browsers and OS stores",
    .description = "Encrypted with PBKDF2 and AES-256-CBC and an HMAC-SHA-256 MAC (OpenSSL 3's\n"
                   "default), or with --legacy 3DES and SHA-1. There is no built-in password.",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = NULL,
};

int cmd_cert_p12(int argc, char **argv)
{
    struct cli_args args = {0};
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    STACK_OF(X509) *chain = NULL;
    unsigned char *der = NULL;
    size_t len = 0;
    char *password = NULL, what[64];
    mtls_err err;
    int rc, code = EXIT_FAIL, n_chain, with_root;

    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (cert_opt == NULL || key_opt == NULL || out_opt == NULL) {
        code = cli_usage_error(&spec, "--cert FILE, --key FILE and --out FILE are required");
        goto out;
    }
    if (pki_password(password_file, &password) != 0)
        goto out;
    if (password == NULL) {
        code = cli_usage_error(&spec, "--password-file FILE is required (or set "
                                      "MTLS_KEY_PASSWORD): a .p12 is never written without a "
                                      "password");
        goto out;
    }
    if ((rc = pki_check_new(out_opt, force, &err)) != 0 ||
        (rc = mtls_cert_load(cert_opt, &cert, &err)) != 0 ||
        (rc = mtls_key_load(key_opt, password, &key, &err)) != 0 ||
        (chain_opt != NULL && (rc = mtls_cert_load_all(chain_opt, &chain, &err)) != 0)) {
        code = cli_fail(&err);
        goto out;
    }
    if (!mtls_key_matches_cert(key, cert)) {
        code = cli_failf("'%s' does not match '%s': the key belongs to another certificate",
                         key_opt, cert_opt);
        goto out;
    }
    /* A chain file made by mtls starts with the certificate itself. */
    for (int i = sk_X509_num(chain) - 1; i >= 0; i--) {
        if (X509_cmp(sk_X509_value(chain, i), cert) == 0)
            X509_free(sk_X509_delete(chain, i));
    }
    if (mtls_chain_check(cert, chain, &err) != 0) {
        code = cli_failf("'%s' is not the chain of '%s': %s", chain_opt, cert_opt, err.msg);
        goto out;
    }
    if ((rc = mtls_p12_create(cert, key, chain, password, legacy_opt, &der, &len, &err)) != 0 ||
        (rc = mtls_file_write_atomic(out_opt, der, len, MTLS_MODE_SECRET, force, &err)) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    /* The chain links, so a self-signed last certificate is the root. */
    n_chain = chain != NULL ? sk_X509_num(chain) : 0;
    with_root = n_chain > 0 && X509_self_signed(sk_X509_value(chain, n_chain - 1), 0) == 1;
    snprintf(what, sizeof(what), "%d intermediate%s%s", n_chain - with_root,
             n_chain - with_root == 1 ? "" : "s", with_root ? " and the root" : "");
    printf("wrote %s (%s, %s, %s)\n", out_opt, cert_opt,
           n_chain == 1 && with_root ? "the root, no intermediate" : what,
           legacy_opt ? "legacy 3DES/SHA-1" : "AES-256-CBC/PBKDF2, HMAC-SHA-256");
    code = EXIT_OK;
out:
    if (der != NULL) {
        mtls_cleanse(der, len);
        OPENSSL_free(der);
    }
    pki_password_free(password);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
    X509_free(cert);
    cli_args_release(&args);
    return code;
}
