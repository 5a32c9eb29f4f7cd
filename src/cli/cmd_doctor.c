/* mtls doctor: the whole setup of one folder in one look (the pki layer's
 * mtls_doctor()), plus whether the server's port can be bound now. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "findings_out.h"
#include "mtls/lint.h"
#include "mtls/server.h"
#include "pki_common.h"

static struct cli_list host_opt, crl_opt;
static long port_opt = -1;
static const char *listen_opt;
static struct pki_secret secret;
static int json_opt;

static const struct cli_opt opts[] = {
    {"host", 0, CLI_LIST, &host_opt, "NAME",
     "a name clients connect to, which must be a SAN of server.crt; repeatable (default "
     "localhost and 127.0.0.1)",
     0, 0},
    {"port", 'p', CLI_INT, &port_opt, "N",
     "check that 'mtls serve' could listen on port N on every address (default 8443)", 0, 65535},
    {"listen", 0, CLI_STRING, &listen_opt, "ADDR:PORT",
     "check that address instead, as 'mtls serve --listen' takes it", 0, 0},
    {"crl", 0, CLI_LIST, &crl_opt, "FILE",
     "also check this CRL (besides every *.crl file in DIR); repeatable", 0, 0},
    PKI_OPT_PASSWORD_FILE_READ(secret),
    {"json", 0, CLI_FLAG, &json_opt, NULL, "print JSON (schema in the README)", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec spec = {
    .name = "doctor",
    .usage = "[DIR] [--host NAME]... [--port N | --listen ADDR:PORT] [--crl FILE]... [--json]",
    .summary = "check a whole mTLS setup in one look, and say what to do about each problem",
    .description =
        "Reads the article's files in DIR (default: the current folder): server.crt,\n"
        "server.key and clientca.crt (required), serverca.crt, client.crt and client.key\n"
        "(checked when present), and every *.crl file. It checks that each key matches its\n"
        "certificate; each certificate as 'mtls cert lint' does, for its role (server,\n"
        "client, CA); that server.crt chains to serverca.crt and client.crt to clientca.crt;\n"
        "that the server's SANs hold every --host; that no CA expires before what it signed;\n"
        "that each CRL comes from the client CA (or the server CA), is signed by it and is\n"
        "current, and whether it revokes the certificate here; that no private key can be\n"
        "read by its group or others; and that the port can be bound now. Every finding has\n"
        "a severity (error, warning, info), a code, a sentence and a fix.",
    .opts = opts,
    .min_args = 0,
    .max_args = 1,
    .exit_codes =
        FINDINGS_EXIT_ERRORS "  2  also when DIR is not a folder\n" FINDINGS_EXIT_WARNINGS,
};

/* The port, as a finding: in use, not allowed, or a bad address. */
static int check_port(const char *listen, mtls_findings *found)
{
    mtls_err err;
    int rc = mtls_server_listen_check(listen, &err);

    if (rc == 0)
        return 0;
    return mtls_findings_add(
        found, MTLS_SEV_ERROR, rc == MTLS_E_BUSY ? "port-in-use" : "port", "", "",
        rc == MTLS_E_BUSY ? "stop what listens there (see 'ss -ltnp'), or serve on another "
                            "port with 'mtls serve --listen'; if it is this very server, "
                            "all is well"
                          : "pick another address or port for 'mtls serve --listen'",
        "%s", err.msg);
}

static cJSON *json_root(const char *dir, const char *const *hosts, size_t n_hosts,
                        const char *listen)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *list = root != NULL ? cJSON_AddArrayToObject(root, "hosts") : NULL;

    for (size_t i = 0; list != NULL && i < n_hosts; i++) {
        cJSON *s = cJSON_CreateString(hosts[i]);

        if (s == NULL || !cJSON_AddItemToArray(list, s)) {
            cJSON_Delete(s);
            list = NULL;
        }
    }
    if (list == NULL || cJSON_AddStringToObject(root, "dir", dir) == NULL ||
        cJSON_AddStringToObject(root, "listen", listen) == NULL) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int cmd_doctor(int argc, char **argv)
{
    static const char *const default_hosts[] = {"localhost", "127.0.0.1"};
    struct cli_args args = {0};
    mtls_doctor_opts dopts;
    mtls_findings found;
    char listen[32], *password = NULL;
    const char *where;
    mtls_err err;
    int rc, code = EXIT_USAGE;

    mtls_findings_init(&found);
    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (listen_opt != NULL && port_opt >= 0) {
        code = cli_usage_error(&spec, "give --port or --listen, not both");
        goto out;
    }
    snprintf(listen, sizeof(listen), "%ld", port_opt >= 0 ? port_opt : 8443L);
    where = listen_opt != NULL ? listen_opt : listen;
    if ((rc = pki_password(secret.password_file, &password)) != 0) {
        code = rc;
        goto out;
    }
    memset(&dopts, 0, sizeof(dopts));
    dopts.dir = args.n > 0 ? args.v[0] : ".";
    dopts.hosts = host_opt.n > 0 ? host_opt.items : default_hosts;
    dopts.n_hosts = host_opt.n > 0 ? host_opt.n : 2;
    dopts.crl_files = crl_opt.items;
    dopts.n_crl_files = crl_opt.n;
    dopts.key_password = password;
    rc = mtls_doctor(&dopts, &found, &err);
    if (rc == 0 && check_port(where, &found) != 0)
        rc = mtls_err_set(&err, MTLS_E_NOMEM, "out of memory");
    if (rc != 0) {
        cli_fail(&err);
        code = rc == MTLS_E_NOTFOUND ? EXIT_USAGE : EXIT_FAIL;
        goto out;
    }
    if (json_opt)
        code = findings_print_json(&found, json_root(dopts.dir, dopts.hosts, dopts.n_hosts, where));
    else
        code = findings_print(&found, "in this setup");
out:
    pki_password_free(password);
    mtls_findings_release(&found);
    cli_list_release(&host_opt);
    cli_list_release(&crl_opt);
    cli_args_release(&args);
    return code;
}
