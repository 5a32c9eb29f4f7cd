/* mtls probe URL: curl -v for mutual TLS, plus a diagnosis. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "pki_common.h"
#include "probe_report.h"

static void trace_to_stderr(void *arg, const char *line)
{
    (void)arg;
    fprintf(stderr, "* %s\n", line);
}

static const char *cacert, *cert, *key, *password_file, *servername;
static int json, verbose;
static long timeout = 10;
static const struct cli_opt opts[] = {
    {"cacert", 0, CLI_STRING, &cacert, "FILE",
     "CA certificates (PEM or DER) to verify the server with (default: system's)", 0, 0},
    {"cert", 0, CLI_STRING, &cert, "FILE",
     "your client certificate (PEM or DER; a PEM file may carry its chain after it); needs --key",
     0, 0},
    {"key", 0, CLI_STRING, &key, "FILE", "the private key of --cert (PEM)", 0, 0},
    {"password-file", 0, CLI_STRING, &password_file, "FILE",
     "password of an encrypted --key, on the first line of FILE (default $MTLS_KEY_PASSWORD)", 0,
     0},
    {"servername", 0, CLI_STRING, &servername, "NAME",
     "SNI and the name the server's certificate must carry (default: host)", 0, 0},
    {"timeout", 0, CLI_INT, &timeout, "SECONDS",
     "limit for each of connect, handshake, answer (default 10)", 1, 3600},
    {"json", 0, CLI_FLAG, &json, NULL, "print the whole finding as one JSON object", 0, 0},
    {"verbose", 'v', CLI_FLAG, &verbose, NULL,
     "trace handshake messages and HTTP headers on stderr, like curl -v", 0, 0},
    {0},
};
static const struct cli_spec spec = {
    .name = "probe",
    .usage = "https://HOST[:PORT][/PATH] [--cacert FILE] [--cert FILE --key FILE] "
             "[--password-file FILE] [options]",
    .summary = "connect to an mTLS endpoint, show what the handshake shows, and say what "
               "failed and why",
    .description =
        "Connects to the URL, shows the TLS version and cipher, the server's chain (subject,\n"
        "issuer, validity, SANs), whether it verifies against --cacert and the host name\n"
        "matches, whether the server asks for a client certificate and which CA names it\n"
        "accepts, whether your certificate is issued by one of them; then sends GET PATH\n"
        "and prints the status and body. When something fails, the last line says which\n"
        "side refused what, and which flag would fix it, for example:\n"
        "  the server requires a client certificate and you sent none; it accepts\n"
        "  certificates issued by CN=client-example-ca: pass --cert FILE --key FILE\n"
        "Your key is checked against your certificate before anything connects.",
    .opts = opts,
    .min_args = 1,
    .max_args = 1,
    .exit_codes = "  1  the probe could not run: a file of yours is missing or wrong, or your\n"
                  "     key does not match your certificate (nothing was sent)\n"
                  "  3  we refused the server: its certificate does not verify against\n"
                  "     --cacert, or is not for the host name\n"
                  "  4  the server refused us: it rejected our certificate (or our lack of\n"
                  "     one), the handshake, or answered 401/403\n"
                  "  5  network error: DNS failure, connection refused, timeout, reset, or\n"
                  "     the peer does not speak TLS\n",
};
int cmd_probe(int argc, char **argv)
{
    struct cli_args args = {0};
    mtls_probe_opts popts = {0};
    mtls_probe_result res = {0};
    mtls_err err;
    char diagnosis[2048], *password = NULL;
    int rc;

    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        rc = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if ((cert == NULL) != (key == NULL)) {
        rc = cli_usage_error(&spec, "%s",
                             cert ? "--cert needs --key (the certificate's key)"
                                  : "--key needs --cert (its certificate)");
        goto out;
    }
    if (servername != NULL && servername[0] == '\0') {
        rc = cli_usage_error(&spec, "--servername needs a name (the host name the server's "
                                    "certificate must carry)");
        goto out;
    }
    if (pki_password(password_file, &password) != 0) {
        rc = EXIT_FAIL;
        goto out;
    }
    popts.url = args.v[0];
    popts.files.cacert = cacert;
    popts.files.cert = cert;
    popts.files.key = key;
    popts.files.password = password;
    popts.servername = servername;
    popts.timeout_ms = (int)timeout * 1000;
    if (verbose) {
        popts.trace = trace_to_stderr;
        popts.trace_arg = NULL;
    }
    mtls_err_clear(&err);
    if (mtls_probe(&popts, &res, &err) != 0) {
        rc = cli_usage_error(&spec, "%s", err.msg);
        goto out;
    }
    probe_diagnose(&res, &popts, diagnosis, sizeof(diagnosis));
    rc = probe_exit_code(&res);
    if (json) {
        cJSON *o = mtls_probe_result_to_json(&res);
        char *text;

        if (o == NULL) {
            rc = cli_failf("out of memory");
            goto out;
        }
        cJSON_AddStringToObject(o, "verdict", probe_verdict(&res));
        cJSON_AddStringToObject(o, "diagnosis", diagnosis);
        cJSON_AddNumberToObject(o, "exit_code", rc);
        text = cJSON_Print(o);
        cJSON_Delete(o);
        if (text == NULL) {
            rc = cli_failf("out of memory");
            goto out;
        }
        printf("%s\n", text);
        cJSON_free(text);
        goto out;
    }
    if (res.outcome == MTLS_PROBE_LOCAL) {
        /* Nothing was sent: a plain error, like any other command's. */
        fprintf(stderr, "error: %s\n", diagnosis);
        goto out;
    }
    probe_print_findings(stdout, &res, &popts);
    printf("%s%s%s: %s\n", rc == EXIT_OK ? cli_green(stdout) : cli_red(stdout),
           rc == EXIT_OK ? "ok" : probe_verdict(&res), cli_reset(stdout), diagnosis);
out:
    mtls_probe_result_release(&res);
    pki_password_free(password);
    cli_args_release(&args);
    return rc;
}
