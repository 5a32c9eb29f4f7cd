/* mtls init: the article's whole PKI (two CAs, a client and a server
 * certificate) in one step, written all at once or not at all. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "pki_common.h"

static const char *dir_opt;
static struct cli_list hosts;
static const char *key_type_opt;
static int force;
static struct pki_secret secret;

static const struct cli_opt opts[] = {
    {"dir", 'd', CLI_STRING, &dir_opt, "DIR",
     "folder to write into, created if missing (default .)", 0, 0},
    {"host", 0, CLI_LIST, &hosts, "NAME",
     "a name the server answers to, repeatable: the first is the server's CN, all are its SANs "
     "(DNS or IP, typed automatically; default localhost and 127.0.0.1)",
     0, 0},
    {"key-type", 't', CLI_STRING, &key_type_opt, "ec|rsa",
     "key algorithm: ec (ECDSA P-256, the default) or rsa (RSA-2048, the article's)", 0, 0},
    PKI_OPT_ENCRYPT(secret),
    PKI_OPT_PASSWORD_FILE_WRITE(secret),
    {"force", 'f', CLI_FLAG, &force, NULL, "overwrite files that already exist", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec spec = {
    .name = "init",
    .usage =
        "[DIR | --dir DIR] [--host NAME]... [--key-type ec|rsa] [--encrypt --password-file FILE] "
        "[--force]",
    .summary = "make the tutorial's PKI: client CA, server CA, a client and a server certificate",
    .description =
        "Writes into DIR:\n"
        "  clientca.crt clientca.key  the client CA (CN=client-example-ca, 10 years)\n"
        "  client.key client.csr client.crt   CN=localclient, client authentication, 365 days\n"
        "  serverca.crt serverca.key  the server CA (CN=server-example-ca, 10 years)\n"
        "  server.key server.csr server.crt   CN=first --host, SANs every --host, server "
        "authentication\n"
        "and each CA's inventory (clientca.index, clientca.certs/, ...), so that\n"
        "'mtls cert issue --ca DIR/clientca' issues more client certificates later.\n"
        "Keys are written 0600. Nothing is written unless everything is: an existing\n"
        "file stops the command (before anything is written) unless --force is given.",
    .opts = opts,
    .min_args = 0,
    .max_args = 1,
    .exit_codes = NULL,
};

static const char *const outputs[] = {
    "clientca.crt", "clientca.key",   "clientca.index",      "clientca.index.attr",
    "client.key",   "client.csr",     "client.crt",          "serverca.crt",
    "serverca.key", "serverca.index", "serverca.index.attr", "server.key",
    "server.csr",   "server.crt",
};

/* mkdir -p dir; returns 0 or -1 with errno set. */
static int make_dirs(const char *dir)
{
    char *copy = strdup(dir);
    int rc = 0;

    if (copy == NULL)
        return -1;
    for (char *p = copy + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;

            *p = '\0';
            if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
                rc = -1;
                break;
            }
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    free(copy);
    return rc;
}

/* One leaf: a key, a CSR for cn with sans, and a certificate from ca;
 * all three staged into txn under dir/name.{key,csr,crt}. */
static int make_leaf(mtls_ca *ca, const char *dir, const char *name, mtls_key_type type,
                     const char *cn, const GENERAL_NAMES *sans, mtls_profile profile, mtls_txn *txn,
                     mtls_err *err)
{
    EVP_PKEY *key = NULL;
    X509_REQ *req = NULL;
    X509 *cert = NULL;
    char *key_pem = NULL, *csr_pem = NULL, *crt_pem = NULL;
    size_t key_len = 0, csr_len = 0, crt_len = 0;
    char file[64], *path = NULL;
    mtls_issue issue;
    int rc;

    if ((rc = mtls_key_generate(type, 0, &key, err)) != 0 ||
        (rc = mtls_csr_create(key, cn, sans, &req, err)) != 0)
        goto out;
    memset(&issue, 0, sizeof(issue));
    issue.profile = profile;
    issue.subject = X509_REQ_get_subject_name(req);
    issue.pubkey = key;
    issue.sans = sans;
    if ((rc = mtls_ca_sign(ca, &issue, &cert, NULL, err)) != 0 ||
        (rc = mtls_key_to_pem(key, pki_secret_for_writing(&secret), &key_pem, &key_len, err)) !=
            0 ||
        (rc = mtls_csr_to_pem(req, &csr_pem, &csr_len, err)) != 0 ||
        (rc = mtls_cert_to_pem(cert, &crt_pem, &crt_len, err)) != 0)
        goto out;
    const struct {
        const char *ext;
        const char *data;
        size_t len;
        unsigned mode;
    } files[] = {
        {"key", key_pem, key_len, MTLS_MODE_SECRET},
        {"csr", csr_pem, csr_len, MTLS_MODE_PUBLIC},
        {"crt", crt_pem, crt_len, MTLS_MODE_PUBLIC},
    };
    for (size_t i = 0; i < 3; i++) {
        snprintf(file, sizeof(file), "%s.%s", name, files[i].ext);
        free(path);
        path = pki_path_join(dir, file);
        if (path == NULL) {
            rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
            goto out;
        }
        rc = mtls_txn_add(txn, path, files[i].data, files[i].len, files[i].mode, err);
        if (rc != 0)
            goto out;
    }
    rc = 0;
out:
    free(path);
    mtls_free_secret(key_pem, key_len);
    free(csr_pem);
    free(crt_pem);
    X509_free(cert);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    return rc;
}

static void print_summary(const char *dir, mtls_key_type type, const char *host,
                          const GENERAL_NAMES *sans, X509 *clientca)
{
    mtls_cert_info info;
    char sans_line[512], until[48] = "?";
    int bracket = strchr(host, ':') != NULL; /* an IPv6 address in a URL */

    pki_sans_line(sans, sans_line, sizeof(sans_line));
    if (mtls_cert_info_init(&info, clientca, NULL) == 0) {
        mtls_time_human(info.not_after, until, sizeof(until));
        mtls_cert_info_release(&info);
    }
    printf("wrote the tutorial's PKI to %s (%s keys):\n", dir,
           type == MTLS_KEY_RSA ? "RSA-2048" : "ECDSA P-256");
    printf("  clientca.crt clientca.key         client CA  CN=client-example-ca (until %s)\n",
           until);
    printf("  client.key client.csr client.crt  client     CN=localclient\n");
    printf("  serverca.crt serverca.key         server CA  CN=server-example-ca\n");
    printf("  server.key server.csr server.crt  server     CN=%s, SANs %s\n", host, sans_line);
    printf("\ntry it:\n");
    if (strcmp(dir, ".") != 0)
        printf("  cd %s\n", dir);
    printf("  mtls serve\n");
    printf("  curl --cacert serverca.crt --key client.key --cert client.crt "
           "https://%s%s%s:8443/test\n",
           bracket ? "[" : "", host, bracket ? "]" : "");
}

/* Every destination is checked first: a refusal must leave nothing behind. */
static int check_outputs(const char *dir, mtls_err *err)
{
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < sizeof(outputs) / sizeof(outputs[0]); i++) {
        char *path = pki_path_join(dir, outputs[i]);

        rc = path == NULL ? mtls_err_set(err, MTLS_E_NOMEM, "out of memory")
                          : pki_check_target(path, force, err);
        free(path);
    }
    return rc;
}

/* The folder: --dir DIR or the argument DIR (not both, unless the same), else ".". */
static int dir_arg(const struct cli_args *args, const char **dir)
{
    if (args->n == 1 && dir_opt != NULL && strcmp(dir_opt, args->v[0]) != 0)
        return cli_usage_error(&spec, "give the folder once: --dir %s or %s", dir_opt, args->v[0]);
    *dir = dir_opt != NULL ? dir_opt : args->n == 1 ? args->v[0] : ".";
    if ((*dir)[0] == '\0')
        return cli_usage_error(&spec, "--dir needs a folder name");
    return 0;
}

int cmd_init(int argc, char **argv)
{
    struct pki_signals held = {0};
    struct cli_args args = {0};
    static const char *const default_hosts[] = {"localhost", "127.0.0.1"};
    struct cli_list names = {0};
    mtls_key_type type;
    GENERAL_NAMES *sans = NULL;
    mtls_ca *clientca = NULL, *serverca = NULL;
    mtls_ca_opts ca_opts;
    mtls_txn txn;
    mtls_err err;
    const char *dir = ".";
    char *clientca_prefix = NULL, *serverca_prefix = NULL;
    int rc, code = EXIT_FAIL, made_dir = 0;

    mtls_txn_init(&txn);
    mtls_err_clear(&err);
    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if ((code = dir_arg(&args, &dir)) != 0)
        goto out;
    code = EXIT_FAIL;
    if (key_type_opt != NULL && strcmp(key_type_opt, "ed25519") == 0) {
        code = cli_usage_error(&spec, "init makes ec or rsa keys (curl and browsers need them)");
        goto out;
    }
    if ((rc = pki_secret_load(&spec, &secret)) != 0) {
        code = rc;
        goto out;
    }
    if (pki_key_type_arg(&spec, key_type_opt, &type) != 0) {
        code = EXIT_USAGE;
        goto out;
    }
    names = hosts.n > 0 ? hosts : (struct cli_list){(const char **)default_hosts, 2};
    if (pki_sans_arg(&spec, &names, &sans) != 0) {
        code = EXIT_USAGE;
        goto out;
    }
    if (mtls_cn_check(names.items[0], &err) != 0) {
        code = cli_usage_error(&spec, "--host: %s", err.msg);
        goto out;
    }
    if (check_outputs(dir, &err) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    made_dir = !mtls_file_exists(dir);
    if (make_dirs(dir) != 0) {
        mtls_err_sys(&err, MTLS_E_IO, errno, "cannot create the folder '%s'", dir);
        code = cli_fail(&err);
        goto out;
    }
    clientca_prefix = pki_path_join(dir, "clientca");
    serverca_prefix = pki_path_join(dir, "serverca");
    if (clientca_prefix == NULL || serverca_prefix == NULL) {
        code = cli_failf("out of memory");
        goto out;
    }
    memset(&ca_opts, 0, sizeof(ca_opts));
    ca_opts.key_type = type;
    ca_opts.cn = "client-example-ca";
    if ((rc = mtls_ca_generate(clientca_prefix, &ca_opts, &clientca, &err)) != 0)
        goto fail;
    ca_opts.cn = "server-example-ca";
    /* From the first staged file on, an interruption waits for the set. */
    pki_hold_signals(&held);
    if ((rc = mtls_ca_generate(serverca_prefix, &ca_opts, &serverca, &err)) != 0 ||
        (rc = make_leaf(clientca, dir, "client", type, "localclient", NULL, MTLS_PROFILE_CLIENT,
                        &txn, &err)) != 0 ||
        (rc = make_leaf(serverca, dir, "server", type, names.items[0], sans, MTLS_PROFILE_SERVER,
                        &txn, &err)) != 0 ||
        (rc = mtls_ca_stage(clientca, &txn, pki_secret_for_writing(&secret), &err)) != 0 ||
        (rc = mtls_ca_stage(serverca, &txn, pki_secret_for_writing(&secret), &err)) != 0 ||
        (rc = mtls_txn_commit(&txn, force, &err)) != 0)
        goto fail;
    print_summary(dir, type, names.items[0], sans, mtls_ca_cert(clientca));
    code = EXIT_OK;
    goto out;
fail:
    mtls_txn_release(&txn);
    mtls_ca_unstage(clientca);
    mtls_ca_unstage(serverca);
    if (made_dir)
        (void)rmdir(dir);
    code = cli_fail(&err);
out:
    mtls_txn_release(&txn);
    mtls_ca_free(clientca);
    mtls_ca_free(serverca);
    free(clientca_prefix);
    free(serverca_prefix);
    GENERAL_NAMES_free(sans);
    pki_secret_release(&secret);
    cli_list_release(&hosts);
    cli_args_release(&args);
    pki_release_signals(&held);
    return code;
}
