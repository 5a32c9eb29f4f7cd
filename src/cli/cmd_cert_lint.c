/* mtls cert lint: what in these certificates clients refuse or is unsafe,
 * each finding with what to do; the exit code by the worst one. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "findings_out.h"
#include "mtls/lint.h"
#include "mtls/pki.h"

static const char *profile_opt;
static int json_opt;

static const struct cli_opt opts[] = {
    {"profile", 'p', CLI_STRING, &profile_opt, "client|server|ca",
     "what the (first) certificate of each FILE is for; default: read from the certificate "
     "(CA:TRUE, its extended key usage, a host name as CN)",
     0, 0},
    {"json", 0, CLI_FLAG, &json_opt, NULL, "print JSON (schema in the README)", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec spec = {
    .name = "cert lint",
    .usage = "FILE... [--profile client|server|ca] [--json]",
    .summary = "find what clients refuse or is unsafe in certificates, and say what to do",
    .description =
        "Checks each certificate of each FILE (PEM or DER; a chain file's certificates after\n"
        "the first are checked as CAs): X.509 v1 (what 'openssl x509 -req' makes without\n"
        "-extfile), SHA-1 or MD5 signatures, RSA under 2048 bits or an unusual curve, no SAN\n"
        "on a server certificate (or a host name only in the CN), missing, dual-use or wrong\n"
        "extended key usage, missing key usage, a CA without basicConstraints (critical),\n"
        "keyCertSign or a key identifier, expired or not yet valid, expiring within 30 days,\n"
        "a server certificate valid for more than 398 days, serials that are not positive,\n"
        "too long or shorter than 64 bits. Every finding has a severity (error, warning,\n"
        "info), a code, a sentence and a fix; the codes are listed in the README.",
    .opts = opts,
    .min_args = 1,
    .max_args = -1,
    .exit_codes = FINDINGS_EXIT_ERRORS
    "  2  also when a FILE cannot be read or holds no certificate\n" FINDINGS_EXIT_WARNINGS,
};

static int parse_profile(int *role)
{
    mtls_profile profile;
    mtls_err err;

    *role = 0;
    if (profile_opt == NULL)
        return 0;
    if (strcmp(profile_opt, "ca") == 0) {
        *role = MTLS_PROFILE_SUBCA;
        return 0;
    }
    if (mtls_profile_parse(profile_opt, &profile, &err) != 0)
        return cli_usage_error(&spec, "--profile must be client, server or ca, not '%s'",
                               profile_opt);
    *role = (int)profile;
    return 0;
}

/* Lints every certificate of path into out; *count grows by how many. */
static int lint_file(const char *path, int role, time_t now, mtls_findings *out, int *count,
                     mtls_err *err)
{
    STACK_OF(X509) *certs = NULL;
    int rc = mtls_cert_load_all(path, &certs, err);

    for (int i = 0; rc == 0 && i < sk_X509_num(certs); i++) {
        rc = mtls_cert_lint(sk_X509_value(certs, i), path, i == 0 ? role : MTLS_PROFILE_SUBCA, now,
                            out, err);
        (*count)++;
    }
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

int cmd_cert_lint(int argc, char **argv)
{
    struct cli_args args = {0};
    mtls_findings found;
    char what[64];
    time_t now = time(NULL);
    int rc, role, count = 0, code = EXIT_USAGE;
    mtls_err err;

    mtls_findings_init(&found);
    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (parse_profile(&role) != 0)
        goto out;
    for (int i = 0; i < args.n; i++) {
        rc = lint_file(args.v[i], role, now, &found, &count, &err);
        if (rc != 0) {
            cli_fail(&err);
            /* Out of memory is a failure; a file we cannot read is the caller's. */
            code = rc == MTLS_E_NOMEM ? EXIT_FAIL : EXIT_USAGE;
            goto out;
        }
    }
    if (json_opt) {
        cJSON *root = cJSON_CreateObject();

        if (root != NULL && cJSON_AddNumberToObject(root, "certificates", count) == NULL) {
            cJSON_Delete(root);
            root = NULL;
        }
        code = findings_print_json(&found, root);
    } else {
        snprintf(what, sizeof(what), "in %d certificate%s", count, count == 1 ? "" : "s");
        code = findings_print(&found, what);
    }
out:
    mtls_findings_release(&found);
    cli_args_release(&args);
    return code;
}
