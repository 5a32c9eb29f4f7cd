/* mtls cert verify: is this certificate valid for this CA, purpose and
 * host, and if not, which check failed and why, in one sentence. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pki_common.h"

static const char *ca_opt, *purpose_opt, *host_opt;

static const struct cli_opt opts[] = {
    {"ca", 0, CLI_STRING, &ca_opt, "FILE",
     "the trusted CA certificate(s), PEM (a CA PREFIX works too: clientca for clientca.crt)", 0, 0},
    {"purpose", 'p', CLI_STRING, &purpose_opt, "client|server",
     "also check the certificate may be used for TLS client or server authentication", 0, 0},
    {"host", 0, CLI_STRING, &host_opt, "NAME",
     "also check that NAME (a host name or IP address) is in its SANs", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec spec = {
    .name = "cert verify",
    .usage = "FILE --ca FILE [--purpose client|server] [--host NAME]",
    .summary = "check a certificate against a CA, a purpose and a host name",
    .description =
        "Checks the chain up to a CA in --ca, every signature, the validity dates, and\n"
        "optionally the purpose and host name. FILE may hold intermediate CA certificates\n"
        "after the certificate itself. When the certificate is not valid, one sentence\n"
        "on stderr says which check failed and why.",
    .opts = opts,
    .min_args = 1,
    .max_args = 1,
    .exit_codes = "  1  the certificate is not valid (the message says which check failed)\n"
                  "  2  usage error, or FILE or --ca cannot be read as certificates\n",
};

int cmd_cert_verify(int argc, char **argv)
{
    struct cli_args args = {0};
    STACK_OF(X509) *chain = NULL, *trusted = NULL;
    mtls_verify_opts vopts;
    mtls_profile purpose = 0;
    mtls_cert_info info;
    mtls_err err;
    char *ca_path = NULL, until[48], words[64];
    X509 *leaf;
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
    /* "--ca clientca" means clientca.crt when there is no file "clientca". */
    ca_path = malloc(strlen(ca_opt) + 5);
    if (ca_path == NULL) {
        code = cli_failf("out of memory");
        goto out;
    }
    sprintf(ca_path, "%s.crt", ca_opt);
    if (mtls_file_exists(ca_opt) || !mtls_file_exists(ca_path))
        sprintf(ca_path, "%s", ca_opt);
    if (mtls_cert_load_all(args.v[0], &chain, &err) != 0 ||
        mtls_cert_load_all(ca_path, &trusted, &err) != 0) {
        cli_fail(&err);
        code = EXIT_USAGE;
        goto out;
    }
    leaf = sk_X509_shift(chain);
    memset(&vopts, 0, sizeof(vopts));
    vopts.purpose = (int)purpose;
    vopts.host = host_opt;
    rc = mtls_verify(leaf, chain, trusted, &vopts, &err);
    if (rc == 0 && mtls_cert_info_init(&info, leaf, &err) == 0) {
        printf("%svalid%s: '%s' issued by '%s'%s%s%s%s%s, until %s (%s)\n", cli_green(stdout),
               cli_reset(stdout), info.subject, info.issuer, purpose ? ", for TLS " : "",
               purpose ? mtls_profile_name(purpose) : "", purpose ? " authentication" : "",
               host_opt ? ", host " : "", host_opt ? host_opt : "",
               mtls_time_human(info.not_after, until, sizeof(until)),
               pki_expiry_words(info.not_after, words, sizeof(words)));
        mtls_cert_info_release(&info);
        code = EXIT_OK;
    } else {
        /* The usual cause with intermediates: FILE holds only the leaf. */
        const char *hint = sk_X509_num(chain) == 0 && strstr(err.msg, "which is not a trusted CA")
                               ? " (if that is an intermediate CA, verify the chain file: the "
                                 "certificate followed by its intermediates, e.g. NAME.chain.crt)"
                               : "";

        fprintf(stderr, "%sinvalid%s: %s%s\n", cli_red(stderr), cli_reset(stderr), err.msg, hint);
        code = EXIT_FAIL;
    }
    X509_free(leaf);
out:
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(trusted, X509_free);
    free(ca_path);
    cli_args_release(&args);
    return code;
}
