/* mtls cert verify: is this certificate valid for this CA, purpose and
 * host, and if not, which check failed and why, in one sentence. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "cli.h"
#include "pki_common.h"

static const char *ca_opt, *purpose_opt, *host_opt;
static struct cli_list crl_opt;

static const struct cli_opt opts[] = {
    {"ca", 0, CLI_STRING, &ca_opt, "FILE",
     "the trusted CA certificate(s), PEM (a CA PREFIX works too: clientca for clientca.crt)", 0, 0},
    {"purpose", 'p', CLI_STRING, &purpose_opt, "client|server",
     "also check the certificate may be used for TLS client or server authentication", 0, 0},
    {"host", 0, CLI_STRING, &host_opt, "NAME",
     "also check that NAME (a host name or IP address) is in its SANs (the CN does not count, "
     "as in browsers)",
     0, 0},
    {"crl", 0, CLI_LIST, &crl_opt, "FILE",
     "also check the certificate is not revoked, against a CRL (PEM or DER) of its issuer; "
     "repeatable (one per CA), the issuer's must be there and current",
     0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec spec = {
    .name = "cert verify",
    .usage = "FILE --ca FILE [--purpose client|server] [--host NAME] [--crl FILE]...",
    .summary = "check a certificate against a CA, a purpose, a host name and CRLs",
    .description =
        "Checks the chain up to a CA in --ca, every signature, the validity dates, and\n"
        "optionally the purpose, the host name and revocation (--crl). FILE may hold\n"
        "intermediate CA certificates after the certificate itself. When the certificate\n"
        "is not valid, one sentence on stderr says which check failed and why, e.g.\n"
        "\"certificate 'CN=bob' (serial 5D66...) was revoked by its CA 'CN=My CA' on\n"
        "2026-11-27 00:14:45 UTC (keyCompromise)\".",
    .opts = opts,
    .min_args = 1,
    .max_args = 1,
    .exit_codes = "  1  the certificate is not valid (the message says which check failed)\n"
                  "  2  also when FILE, --ca or a --crl cannot be read\n",
};

/* "--ca clientca" means clientca.crt when there is no file "clientca" (free()). */
static char *ca_file(const char *ca)
{
    size_t n = strlen(ca);
    char *path = malloc(n + 5);

    if (path == NULL)
        return NULL;
    snprintf(path, n + 5, "%s.crt", ca);
    if (mtls_file_exists(ca) || !mtls_file_exists(path))
        snprintf(path, n + 5, "%s", ca);
    return path;
}

/* Reads every --crl into *out (NULL when there is none). */
static int load_crls(const struct cli_list *files, STACK_OF(X509_CRL) * *out, mtls_err *err)
{
    X509_CRL *crl = NULL;
    int rc;

    *out = NULL;
    if (files->n == 0)
        return 0;
    *out = sk_X509_CRL_new_null();
    if (*out == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    for (size_t i = 0; i < files->n; i++) {
        if ((rc = mtls_crl_load(files->items[i], &crl, err)) != 0)
            return rc;
        if (sk_X509_CRL_push(*out, crl) <= 0) {
            X509_CRL_free(crl);
            return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        }
    }
    return 0;
}

static int print_valid(X509 *leaf, mtls_profile purpose, mtls_err *err)
{
    mtls_cert_info info;
    char until[48], words[64];
    int rc = mtls_cert_info_init(&info, leaf, err);

    if (rc != 0)
        return rc;
    printf("%svalid%s: '%s' issued by '%s'%s%s%s%s%s%s, until %s (%s)\n", cli_green(stdout),
           cli_reset(stdout), info.subject, info.issuer, purpose ? ", for TLS " : "",
           purpose ? mtls_profile_name(purpose) : "", purpose ? " authentication" : "",
           host_opt ? ", host " : "", host_opt ? host_opt : "",
           crl_opt.n > 0 ? ", not revoked" : "",
           mtls_time_human(info.not_after, until, sizeof(until)),
           pki_expiry_words(info.not_after, words, sizeof(words)));
    mtls_cert_info_release(&info);
    return 0;
}

static int print_invalid(const STACK_OF(X509) * intermediates, const mtls_err *err)
{
    /* The usual cause with intermediates: FILE holds only the leaf. */
    const char *hint =
        sk_X509_num(intermediates) == 0 && strstr(err->msg, "which is not a trusted CA") != NULL
            ? " (if that is an intermediate CA, verify the chain file: the "
              "certificate followed by its intermediates, e.g. NAME.chain.crt)"
            : "";

    fprintf(stderr, "%sinvalid%s: %s%s\n", cli_red(stderr), cli_reset(stderr), err->msg, hint);
    return EXIT_FAIL;
}

int cmd_cert_verify(int argc, char **argv)
{
    struct cli_args args = {0};
    STACK_OF(X509) *chain = NULL, *trusted = NULL;
    STACK_OF(X509_CRL) *crls = NULL;
    mtls_verify_opts vopts;
    mtls_profile purpose = 0;
    mtls_err err;
    char *ca_path = NULL;
    X509 *leaf = NULL;
    int rc, code = EXIT_USAGE;

    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (ca_opt == NULL) {
        code = cli_usage_error(&spec, "--ca FILE is required: the CA certificate to trust");
        goto out;
    }
    if (purpose_opt != NULL && mtls_profile_parse(purpose_opt, &purpose, &err) != 0) {
        code = cli_usage_error(&spec, "--purpose: %s", err.msg);
        goto out;
    }
    if ((ca_path = ca_file(ca_opt)) == NULL) {
        code = cli_failf("out of memory");
        goto out;
    }
    if (mtls_cert_load_all(args.v[0], &chain, &err) != 0 ||
        mtls_cert_load_all(ca_path, &trusted, &err) != 0 || load_crls(&crl_opt, &crls, &err) != 0) {
        cli_fail(&err);
        code = EXIT_USAGE;
        goto out;
    }
    leaf = sk_X509_shift(chain);
    memset(&vopts, 0, sizeof(vopts));
    vopts.purpose = (int)purpose;
    vopts.host = host_opt;
    vopts.crls = crls;
    if (mtls_verify(leaf, chain, trusted, &vopts, &err) == 0 &&
        print_valid(leaf, purpose, &err) == 0)
        code = EXIT_OK;
    else
        code = print_invalid(chain, &err);
out:
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(trusted, X509_free);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    free(ca_path);
    cli_list_release(&crl_opt);
    cli_args_release(&args);
    return code;
}
