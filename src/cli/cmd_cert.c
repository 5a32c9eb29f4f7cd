/* mtls cert sign / cert issue: a CA makes a client or server certificate,
 * from a CSR or from a key it makes on the spot. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pki_common.h"

/* ---- writing the outputs under the CA's lock -------------------------- */

struct outputs {
    const char *crt_path;
    const char *chain_path; /* written when chain has certificates */
    STACK_OF(X509) * chain; /* the CA's own chain (borrowed), NULL for a root */
    const char *key_path;   /* NULL: no key to write */
    const char *key_pem;
    size_t key_len;
    int force;
};

static int deliver(void *arg, X509 *cert, mtls_err *err)
{
    struct outputs *o = arg;
    char *pem = NULL;
    size_t len = 0;
    mtls_txn txn;
    int rc;

    mtls_txn_init(&txn);
    if ((rc = mtls_cert_to_pem(cert, &pem, &len, err)) != 0 ||
        (o->key_path != NULL && (rc = mtls_txn_add(&txn, o->key_path, o->key_pem, o->key_len,
                                                   MTLS_MODE_SECRET, err)) != 0) ||
        (rc = mtls_txn_add(&txn, o->crt_path, pem, len, MTLS_MODE_PUBLIC, err)) != 0)
        goto out;
    if (o->chain != NULL && sk_X509_num(o->chain) > 0) {
        /* The leaf and the intermediates above it: what a peer must be sent. */
        char *chain_pem = NULL;
        size_t chain_len = 0;
        STACK_OF(X509) *full = sk_X509_dup(o->chain);

        if (full == NULL || sk_X509_unshift(full, cert) <= 0)
            rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        else
            rc = mtls_chain_to_pem(full, &chain_pem, &chain_len, err);
        if (rc == 0)
            rc = mtls_txn_add(&txn, o->chain_path, chain_pem, chain_len, MTLS_MODE_PUBLIC, err);
        free(chain_pem);
        sk_X509_free(full);
        if (rc != 0)
            goto out;
    }
    if ((rc = mtls_txn_commit(&txn, o->force, err)) != 0)
        goto out;
    rc = 0;
out:
    mtls_txn_release(&txn);
    free(pem);
    return rc;
}

static void print_issued(X509 *cert, mtls_profile profile, const mtls_ca *ca, const char *files,
                         int clamped)
{
    mtls_cert_info info;
    mtls_err err;
    char sans[512], until[48], words[64];

    if (mtls_cert_info_init(&info, cert, &err) != 0)
        return;
    mtls_cert_info_sans_line(&info, sans, sizeof(sans));
    printf("issued %s certificate '%s' by '%s'\n  serial %s, until %s (%s)\n",
           mtls_profile_name(profile), info.subject, info.issuer, info.serial_hex,
           mtls_time_human(info.not_after, until, sizeof(until)),
           pki_expiry_words(info.not_after, words, sizeof(words)));
    if (sans[0] != '\0')
        printf("  SANs %s\n", sans);
    printf("  wrote %s; recorded in %s.index\n", files, mtls_ca_prefix(ca));
    if (clamped)
        cli_warnf("the certificate ends when its CA '%s.crt' does, earlier than --days asked",
                  mtls_ca_prefix(ca));
    mtls_cert_info_release(&info);
}

/* "x.crt" -> "x.chain.crt"; anything else gets ".chain.crt" appended (free()). */
static char *chain_path_for(const char *crt_path)
{
    size_t n = strlen(crt_path);
    char *p = malloc(n + 16);

    if (p == NULL)
        return NULL;
    if (n > 4 && strcmp(crt_path + n - 4, ".crt") == 0)
        snprintf(p, n + 16, "%.*s.chain.crt", (int)(n - 4), crt_path);
    else
        snprintf(p, n + 16, "%s.chain.crt", crt_path);
    return p;
}

/* When the CA is an intermediate, o gets its chain and a chain file that
 * must not exist yet (unless force). */
static int plan_chain(const mtls_ca *ca, struct outputs *o, char **chain_path, mtls_err *err)
{
    STACK_OF(X509) *chain = mtls_ca_chain(ca);

    if (chain == NULL || sk_X509_num(chain) == 0)
        return 0;
    *chain_path = chain_path_for(o->crt_path);
    if (*chain_path == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    o->chain = chain;
    o->chain_path = *chain_path;
    return pki_check_new(*chain_path, o->force, err);
}

/* ---- cert sign --------------------------------------------------------- */

static const char *sign_csr, *sign_ca, *sign_profile, *sign_out;
static long sign_days = MTLS_LEAF_DAYS_DEFAULT;
static struct cli_list sign_san;
static int sign_force;
static struct pki_secret sign_secret;

static const struct cli_opt sign_opts[] = {
    {"csr", 0, CLI_STRING, &sign_csr, "FILE", "the certificate signing request", 0, 0},
    {"ca", 0, CLI_STRING, &sign_ca, "PREFIX", "the CA: PREFIX.crt and PREFIX.key (e.g. clientca)",
     0, 0},
    {"profile", 'p', CLI_STRING, &sign_profile, "client|server",
     "client: TLS client authentication; server: TLS server authentication", 0, 0},
    {"days", 0, CLI_INT, &sign_days, "N",
     "validity in days (default 365; never past the CA's own end)", 1, MTLS_DAYS_MAX},
    {"san", 0, CLI_LIST, &sign_san, "VALUE",
     "a subjectAltName to add to the CSR's own, repeatable (DNS:, IP:, email:, URI:, or bare)", 0,
     0},
    {"out", 'o', CLI_STRING, &sign_out, "FILE", "where to write the certificate (PEM)", 0, 0},
    PKI_OPT_PASSWORD_FILE_READ(sign_secret),
    {"force", 'f', CLI_FLAG, &sign_force, NULL, "overwrite FILE if it exists", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec sign_spec = {
    .name = "cert sign",
    .usage = "--csr FILE --ca PREFIX --profile client|server [--days N] [--san VALUE]... --out "
             "FILE [--password-file FILE] [--force]",
    .summary = "sign a CSR with a CA, as a client or server certificate",
    .description =
        "The CSR's signature is checked first, and its key (TLS clients refuse RSA\n"
        "below 2048 bits and EC curves other than P-256, P-384 and P-521, so does this).\n"
        "The certificate keeps the CSR's subject and SANs (plus --san); its other\n"
        "extensions come from the profile only, never from the CSR: CA:FALSE,\n"
        "digitalSignature (+keyEncipherment for RSA keys), and\n"
        "the extended key usage clientAuth or serverAuth. A server certificate without\n"
        "SANs gets its CN as one when the CN is a host name or an address, and is refused\n"
        "otherwise: clients check only the SANs. The serial is 128 random bits; the\n"
        "certificate is recorded in PREFIX.index and copied to PREFIX.certs/SERIAL.pem.",
    .opts = sign_opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = NULL,
};

int cmd_cert_sign(int argc, char **argv)
{
    struct pki_signals held = {0};
    struct cli_args args = {0};
    mtls_profile profile;
    X509_REQ *req = NULL;
    GENERAL_NAMES *sans = NULL;
    mtls_ca *ca = NULL;
    X509 *cert = NULL;
    mtls_issue issue;
    struct outputs o;
    mtls_err err;
    char *chain_path = NULL, files[8300];
    int rc, code = EXIT_FAIL, clamped = 0;

    rc = cli_parse(&sign_spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (sign_csr == NULL || sign_ca == NULL || sign_out == NULL) {
        code = cli_usage_error(&sign_spec, "--csr FILE, --ca PREFIX and --out FILE are required");
        goto out;
    }
    if (pki_profile_arg(&sign_spec, sign_profile, &profile) != 0) {
        code = EXIT_USAGE;
        goto out;
    }
    if ((rc = pki_secret_load(&sign_spec, &sign_secret)) != 0) {
        code = rc;
        goto out;
    }
    if ((rc = pki_check_new(sign_out, sign_force, &err)) != 0 ||
        (rc = mtls_csr_load(sign_csr, &req, &err)) != 0 ||
        (rc = mtls_csr_check_signature(req, sign_csr, &err)) != 0 ||
        (rc = mtls_key_check_tls(X509_REQ_get0_pubkey(req), sign_csr, &err)) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    /* The CSR's SANs first, then --san; nothing else is taken from it. */
    sans = mtls_csr_sans(req);
    if (pki_sans_arg(&sign_spec, &sign_san, &sans) != 0) {
        code = EXIT_USAGE;
        goto out;
    }
    memset(&o, 0, sizeof(o));
    o.crt_path = sign_out;
    o.force = sign_force;
    if ((rc = mtls_ca_open(sign_ca, sign_secret.password, &ca, &err)) != 0 ||
        (rc = plan_chain(ca, &o, &chain_path, &err)) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    memset(&issue, 0, sizeof(issue));
    issue.profile = profile;
    issue.subject = X509_REQ_get_subject_name(req);
    issue.pubkey = X509_REQ_get0_pubkey(req);
    issue.sans = sans;
    issue.days = (int)sign_days;
    /* The record in the index and the files it records: whole, or not at all. */
    pki_hold_signals(&held);
    rc = mtls_ca_issue(ca, &issue, deliver, &o, &cert, &clamped, &err);
    if (rc != 0) {
        code = cli_fail(&err);
        goto out;
    }
    snprintf(files, sizeof(files), "%s%s%s", sign_out, chain_path ? " and " : "",
             chain_path ? chain_path : "");
    print_issued(cert, profile, ca, files, clamped);
    code = EXIT_OK;
out:
    free(chain_path);
    pki_secret_release(&sign_secret);
    X509_free(cert);
    mtls_ca_free(ca);
    GENERAL_NAMES_free(sans);
    X509_REQ_free(req);
    cli_list_release(&sign_san);
    cli_args_release(&args);
    pki_release_signals(&held);
    return code;
}

/* ---- cert issue -------------------------------------------------------- */

static const char *issue_ca, *issue_profile, *issue_cn, *issue_out, *issue_key_type;
static long issue_days = MTLS_LEAF_DAYS_DEFAULT;
static struct cli_list issue_san;
static int issue_force;
static struct pki_secret issue_secret;

static const struct cli_opt issue_opts[] = {
    {"ca", 0, CLI_STRING, &issue_ca, "PREFIX", "the CA: PREFIX.crt and PREFIX.key (e.g. clientca)",
     0, 0},
    {"profile", 'p', CLI_STRING, &issue_profile, "client|server",
     "client: TLS client authentication; server: TLS server authentication", 0, 0},
    {"cn", 0, CLI_STRING, &issue_cn, "CN", "the subject's common name", 0, 0},
    {"san", 0, CLI_LIST, &issue_san, "VALUE",
     "a subjectAltName, repeatable (DNS:, IP:, email:, URI:, or a bare host name or address; a "
     "server certificate without any gets its CN when that is a host name or address, and is "
     "refused otherwise)",
     0, 0},
    {"out", 'o', CLI_STRING, &issue_out, "PREFIX",
     "write PREFIX.key (0600) and PREFIX.crt (and PREFIX.chain.crt, the certificate and the "
     "intermediates above it, when the CA is an intermediate)",
     0, 0},
    {"days", 0, CLI_INT, &issue_days, "N",
     "validity in days (default 365; never past the CA's own end)", 1, MTLS_DAYS_MAX},
    {"key-type", 't', CLI_STRING, &issue_key_type, "ec|rsa|ed25519",
     "key algorithm (default ec: ECDSA P-256; rsa: RSA-2048)", 0, 0},
    PKI_OPT_ENCRYPT(issue_secret),
    PKI_OPT_PASSWORD_FILE(issue_secret),
    {"force", 'f', CLI_FLAG, &issue_force, NULL, "overwrite PREFIX.key and PREFIX.crt", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec issue_spec = {
    .name = "cert issue",
    .usage = "--ca PREFIX --profile client|server --cn CN [--san VALUE]... --out PREFIX [--days "
             "N] [--key-type ec|rsa|ed25519] [--encrypt] [--password-file FILE] [--force]",
    .summary = "make a key and a certificate for it in one step",
    .description = "The same certificate as 'mtls key create' + 'mtls csr create' + 'mtls cert\n"
                   "sign' would make. The key and the certificate are written together or not\n"
                   "at all.",
    .opts = issue_opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = NULL,
};

int cmd_cert_issue(int argc, char **argv)
{
    struct pki_signals held = {0};
    struct cli_args args = {0};
    mtls_profile profile;
    mtls_key_type type;
    GENERAL_NAMES *sans = NULL;
    X509_NAME *subject = NULL;
    EVP_PKEY *key = NULL;
    mtls_ca *ca = NULL;
    X509 *cert = NULL;
    char *key_path = NULL, *crt_path = NULL, *key_pem = NULL, *chain_path = NULL, files[12400];
    size_t key_len = 0;
    mtls_issue issue;
    struct outputs o;
    mtls_err err;
    int rc, code = EXIT_FAIL, clamped = 0;

    rc = cli_parse(&issue_spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (issue_ca == NULL || issue_cn == NULL || issue_out == NULL) {
        code = cli_usage_error(&issue_spec, "--ca PREFIX, --cn CN and --out PREFIX are required");
        goto out;
    }
    if (pki_profile_arg(&issue_spec, issue_profile, &profile) != 0 ||
        pki_key_type_arg(&issue_spec, issue_key_type, &type) != 0 ||
        pki_sans_arg(&issue_spec, &issue_san, &sans) != 0) {
        code = EXIT_USAGE;
        goto out;
    }
    if (mtls_name_from_cn(issue_cn, &subject, &err) != 0) {
        code = cli_usage_error(&issue_spec, "--cn: %s", err.msg);
        goto out;
    }
    if ((rc = pki_secret_load(&issue_spec, &issue_secret)) != 0) {
        code = rc;
        goto out;
    }
    key_path = malloc(strlen(issue_out) + 5);
    crt_path = malloc(strlen(issue_out) + 5);
    if (key_path == NULL || crt_path == NULL) {
        code = cli_failf("out of memory");
        goto out;
    }
    sprintf(key_path, "%s.key", issue_out);
    sprintf(crt_path, "%s.crt", issue_out);
    memset(&o, 0, sizeof(o));
    o.crt_path = crt_path;
    o.key_path = key_path;
    o.force = issue_force;
    if ((rc = pki_check_new(key_path, issue_force, &err)) != 0 ||
        (rc = pki_check_new(crt_path, issue_force, &err)) != 0 ||
        (rc = mtls_ca_open(issue_ca, issue_secret.password, &ca, &err)) != 0 ||
        (rc = plan_chain(ca, &o, &chain_path, &err)) != 0 ||
        (rc = mtls_key_generate(type, 0, &key, &err)) != 0 ||
        (rc = mtls_key_to_pem(key, pki_secret_for_writing(&issue_secret), &key_pem, &key_len,
                              &err)) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    memset(&issue, 0, sizeof(issue));
    issue.profile = profile;
    issue.subject = subject;
    issue.pubkey = key;
    issue.sans = sans;
    issue.days = (int)issue_days;
    o.key_pem = key_pem;
    o.key_len = key_len;
    /* The record in the index and the files it records: whole, or not at all. */
    pki_hold_signals(&held);
    rc = mtls_ca_issue(ca, &issue, deliver, &o, &cert, &clamped, &err);
    if (rc != 0) {
        code = cli_fail(&err);
        goto out;
    }
    snprintf(files, sizeof(files), "%s, %s%s%s", key_path, crt_path, chain_path ? " and " : "",
             chain_path ? chain_path : "");
    print_issued(cert, profile, ca, files, clamped);
    code = EXIT_OK;
out:
    X509_free(cert);
    mtls_ca_free(ca);
    mtls_free_secret(key_pem, key_len);
    EVP_PKEY_free(key);
    X509_NAME_free(subject);
    GENERAL_NAMES_free(sans);
    free(key_path);
    free(crt_path);
    free(chain_path);
    pki_secret_release(&issue_secret);
    cli_list_release(&issue_san);
    cli_args_release(&args);
    pki_release_signals(&held);
    return code;
}
