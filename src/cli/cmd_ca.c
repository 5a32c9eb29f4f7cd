/* mtls ca ...: create a CA (root or intermediate), list its inventory, revoke. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "pki_common.h"

static const char *create_out, *create_cn, *create_key_type, *create_parent;
static long create_days = MTLS_CA_DAYS_DEFAULT;
static int create_force;
static struct pki_secret create_secret;

static const struct cli_opt create_opts[] = {
    {"out", 'o', CLI_STRING, &create_out, "PREFIX",
     "write PREFIX.crt, PREFIX.key and the CA's inventory (PREFIX.index, PREFIX.certs/)", 0, 0},
    {"cn", 0, CLI_STRING, &create_cn, "CN", "the CA's common name, e.g. client-example-ca", 0, 0},
    {"days", 0, CLI_INT, &create_days, "N", "validity in days (default 3650, ten years)", 1,
     MTLS_DAYS_MAX},
    {"key-type", 't', CLI_STRING, &create_key_type, "ec|rsa|ed25519",
     "key algorithm (default ec: ECDSA P-256; rsa: RSA-2048, the article's)", 0, 0},
    {"parent", 0, CLI_STRING, &create_parent, "PREFIX",
     "make an intermediate CA signed by the CA at PREFIX (pathlen 0: it issues leaves only), "
     "recorded in the parent's inventory; writes PREFIX.chain.crt too",
     0, 0},
    PKI_OPT_ENCRYPT(create_secret),
    PKI_OPT_PASSWORD_FILE(create_secret),
    {"force", 'f', CLI_FLAG, &create_force, NULL, "overwrite an existing CA (and its inventory)", 0,
     0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec create_spec = {
    .name = "ca create",
    .usage = "--out PREFIX --cn CN [--days N] [--key-type ec|rsa|ed25519] [--parent PREFIX] "
             "[--encrypt] [--password-file FILE] [--force]",
    .summary = "make a certificate authority: a self-signed root, or an intermediate",
    .description =
        "The CA certificate has basicConstraints critical CA:TRUE, key usage keyCertSign\n"
        "and cRLSign, and a subject key identifier. Next to PREFIX.crt and PREFIX.key\n"
        "(0600) it gets an empty inventory that 'openssl ca' can also read:\n"
        "PREFIX.index (index.txt format), PREFIX.index.attr and the folder\n"
        "PREFIX.certs/ for a copy of each certificate it issues.\n"
        "With --parent the CA is an intermediate: signed by the parent (never past the\n"
        "parent's end), basicConstraints CA:TRUE with pathlen 0, and PREFIX.chain.crt\n"
        "holds it and the intermediates above it, which 'cert issue' appends to the\n"
        "chain files it writes.",
    .opts = create_opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = NULL,
};

static const char *const ca_suffixes[] = {".crt", ".key", ".index", ".index.attr", ".chain.crt"};

struct sub_ca {
    const char *prefix;
    EVP_PKEY *key;
    STACK_OF(X509) * parent_chain; /* borrowed */
    int force;
    mtls_ca *made;
};

/* Writes the intermediate's files once the parent has recorded it. */
static int deliver_sub_ca(void *arg, X509 *cert, mtls_err *err)
{
    struct sub_ca *sub = arg;
    STACK_OF(X509) *chain = sk_X509_new_null();
    mtls_txn txn;
    int rc;

    mtls_txn_init(&txn);
    if (chain == NULL || sk_X509_push(chain, cert) <= 0) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < sk_X509_num(sub->parent_chain); i++) {
        if (sk_X509_push(chain, sk_X509_value(sub->parent_chain, i)) <= 0) {
            rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
            goto out;
        }
    }
    if ((rc = mtls_ca_from(sub->prefix, cert, sub->key, chain, &sub->made, err)) != 0 ||
        (rc = mtls_ca_stage(sub->made, &txn, pki_secret_for_writing(&create_secret), err)) != 0 ||
        (rc = mtls_txn_commit(&txn, sub->force, err)) != 0) {
        mtls_txn_release(&txn);
        mtls_ca_unstage(sub->made);
        goto out;
    }
    rc = 0;
out:
    mtls_txn_release(&txn);
    sk_X509_free(chain); /* the certificates were borrowed */
    return rc;
}

static int create_sub_ca(const mtls_ca_opts *opts, mtls_ca **out, mtls_err *err)
{
    mtls_ca *parent = NULL;
    X509_NAME *subject = NULL;
    struct sub_ca sub;
    mtls_issue issue;
    int rc, clamped = 0;

    memset(&sub, 0, sizeof(sub));
    *out = NULL;
    if ((rc = mtls_ca_open(create_parent, create_secret.password, &parent, err)) != 0 ||
        (rc = mtls_name_from_cn(opts->cn, &subject, err)) != 0 ||
        (rc = mtls_key_generate(opts->key_type, opts->bits, &sub.key, err)) != 0)
        goto out;
    sub.prefix = create_out;
    sub.parent_chain = mtls_ca_chain(parent);
    sub.force = create_force;
    memset(&issue, 0, sizeof(issue));
    issue.profile = MTLS_PROFILE_SUBCA;
    issue.subject = subject;
    issue.pubkey = sub.key;
    issue.days = opts->days;
    rc = mtls_ca_issue(parent, &issue, deliver_sub_ca, &sub, NULL, &clamped, err);
    if (rc != 0)
        goto out;
    if (clamped)
        cli_warnf("the intermediate ends when its parent '%s.crt' does, earlier than --days asked",
                  mtls_ca_prefix(parent));
    *out = sub.made;
    sub.made = NULL;
out:
    mtls_ca_free(sub.made);
    EVP_PKEY_free(sub.key);
    X509_NAME_free(subject);
    mtls_ca_free(parent);
    return rc;
}

int cmd_ca_create(int argc, char **argv)
{
    struct pki_signals held = {0};
    struct cli_args args = {0};
    mtls_ca_opts opts;
    mtls_ca *ca = NULL;
    mtls_txn txn;
    mtls_err err;
    mtls_cert_info info;
    char until[48], prefix[4096];
    int rc, code = EXIT_FAIL;

    mtls_txn_init(&txn);
    rc = cli_parse(&create_spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    memset(&opts, 0, sizeof(opts));
    if (create_out == NULL || create_cn == NULL) {
        code = cli_usage_error(&create_spec, "--out PREFIX and --cn CN are required");
        goto out;
    }
    if ((rc = pki_secret_load(&create_spec, &create_secret)) != 0) {
        code = rc;
        goto out;
    }
    if (pki_key_type_arg(&create_spec, create_key_type, &opts.key_type) != 0) {
        code = EXIT_USAGE;
        goto out;
    }
    if (mtls_cn_check(create_cn, &err) != 0) {
        code = cli_usage_error(&create_spec, "--cn: %s", err.msg);
        goto out;
    }
    opts.cn = create_cn;
    opts.days = (int)create_days;
    /* Check the destinations first: a refusal must not touch a parent's inventory. */
    snprintf(prefix, sizeof(prefix), "%s", create_out);
    if (strlen(prefix) > 4 && strcmp(prefix + strlen(prefix) - 4, ".crt") == 0)
        prefix[strlen(prefix) - 4] = '\0';
    for (size_t i = 0; i < sizeof(ca_suffixes) / sizeof(ca_suffixes[0]); i++) {
        char path[4200];

        snprintf(path, sizeof(path), "%s%s", prefix, ca_suffixes[i]);
        if (pki_check_new(path, create_force, &err) != 0) {
            code = cli_fail(&err);
            goto out;
        }
    }
    /* Staged files, the parent's record and the new CA's files: whole, or not at all. */
    pki_hold_signals(&held);
    if (create_parent != NULL) {
        rc = create_sub_ca(&opts, &ca, &err);
        if (rc != 0) {
            code = cli_fail(&err);
            goto out;
        }
        goto done;
    }
    rc = mtls_ca_generate(create_out, &opts, &ca, &err);
    if (rc != 0) {
        code = cli_fail(&err);
        goto out;
    }
    if ((rc = mtls_ca_stage(ca, &txn, pki_secret_for_writing(&create_secret), &err)) != 0 ||
        (rc = mtls_txn_commit(&txn, create_force, &err)) != 0) {
        mtls_txn_release(&txn);
        mtls_ca_unstage(ca);
        code = cli_fail(&err);
        goto out;
    }
done:
    if (mtls_cert_info_init(&info, mtls_ca_cert(ca), &err) == 0) {
        char key[32];

        printf(
            "created %s 'CN=%s' (%s key, until %s):\n  %s.crt  %s.key  %s.index  %s.certs/%s%s%s\n",
            create_parent ? "intermediate CA" : "CA", create_cn,
            mtls_key_describe(mtls_ca_key(ca), key, sizeof(key)),
            mtls_time_human(info.not_after, until, sizeof(until)), prefix, prefix, prefix, prefix,
            create_parent ? "  " : "", create_parent ? prefix : "",
            create_parent ? ".chain.crt" : "");
        if (create_parent)
            printf("  signed by '%s', recorded in %s.index\n", info.issuer, create_parent);
        printf("issue with: mtls cert issue --ca %s --profile client --cn NAME --out NAME\n",
               prefix);
        mtls_cert_info_release(&info);
    }
    code = EXIT_OK;
out:
    pki_secret_release(&create_secret);
    mtls_txn_release(&txn);
    mtls_ca_free(ca);
    cli_args_release(&args);
    pki_release_signals(&held);
    return code;
}

/* ---- ca list ----------------------------------------------------------- */

static const char *list_ca, *list_expiring;
static int list_json;

static const struct cli_opt list_opts[] = {
    {"ca", 0, CLI_STRING, &list_ca, "PREFIX", "the CA whose inventory to show (PREFIX.index)", 0,
     0},
    {"json", 0, CLI_FLAG, &list_json, NULL, "print JSON (schema in the README)", 0, 0},
    {"expiring", 0, CLI_STRING, &list_expiring, "WINDOW",
     "only what needs renewing: certificates that expire within WINDOW (30d, 12h, or days), "
     "those already expired, and the CA itself; exit 3 if any",
     0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec list_spec = {
    .name = "ca list",
    .usage = "--ca PREFIX [--json] [--expiring WINDOW]",
    .summary = "list what a CA issued: serial, subject, profile, SANs, expiry, revoked or not",
    .description = "Reads PREFIX.index (and the copies in PREFIX.certs/ for profile and SANs).\n"
                   "With --expiring, for cron: lists only what needs renewing, and exits 3 when\n"
                   "there is something: the CA certificate itself when it expires within the\n"
                   "window (or has expired), certificates that expire within it (status\n"
                   "expiring), and certificates that have expired (status expired). Revoked\n"
                   "certificates are left out, and so is one renewed since: a later certificate\n"
                   "with the same subject, profile and SANs is valid beyond the window.",
    .opts = list_opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = "  1  the operation failed (the message says why)\n"
                  "  3  with --expiring: a certificate or the CA expires within the window, or "
                  "has expired\n",
};

/* "30d", "12h", "30" (days) in seconds; -1 when malformed. */
static long parse_window(const char *text)
{
    char *end;
    long n = strtol(text, &end, 10);

    if (end == text || n < 0 || n > 36500L * 24)
        return -1;
    if (*end == '\0' || strcmp(end, "d") == 0)
        return n * 86400;
    if (strcmp(end, "h") == 0)
        return n * 3600;
    return -1;
}

struct listed {
    const mtls_ca_record *rec;
    const char *status; /* "valid", "revoked", "expired" */
    time_t not_after, revoked_at;
    char reason[32];
    char subject[MTLS_NAME_MAX];
    char profile[16];
    mtls_cert_info info;
    int have_info;
    int renewed; /* a later certificate of the same identity outlives the window */
};

static void fill_listed(const mtls_ca *ca, const mtls_ca_record *rec, struct listed *l)
{
    X509 *cert = NULL;
    mtls_err err;
    char date[20];
    const char *comma = strchr(rec->revoked, ',');

    memset(l, 0, sizeof(*l));
    l->rec = rec;
    (void)mtls_index_time(rec->expiry, &l->not_after);
    snprintf(date, sizeof(date), "%.*s", (int)strcspn(rec->revoked, ","), rec->revoked);
    if (date[0] != '\0')
        (void)mtls_index_time(date, &l->revoked_at);
    if (comma != NULL)
        snprintf(l->reason, sizeof(l->reason), "%s", comma + 1);
    l->status = rec->status == 'R'                                ? "revoked"
                : rec->status == 'E' || l->not_after < time(NULL) ? "expired"
                                                                  : "valid";
    /* "/CN=x/O=y" from the index, unless the copy gives the nicer form. */
    snprintf(l->subject, sizeof(l->subject), "%s",
             rec->subject[0] == '/' ? rec->subject + 1 : rec->subject);
    snprintf(l->profile, sizeof(l->profile), "?");
    if (mtls_ca_record_cert(ca, rec, &cert, &err) == 0 &&
        mtls_cert_info_init(&l->info, cert, &err) == 0) {
        l->have_info = 1;
        snprintf(l->subject, sizeof(l->subject), "%s", l->info.subject);
        if (l->info.is_ca)
            snprintf(l->profile, sizeof(l->profile), "ca");
        else if (strstr(l->info.ext_key_usage, "Server") && strstr(l->info.ext_key_usage, "Client"))
            snprintf(l->profile, sizeof(l->profile), "both");
        else if (strstr(l->info.ext_key_usage, "Server"))
            snprintf(l->profile, sizeof(l->profile), "server");
        else if (strstr(l->info.ext_key_usage, "Client"))
            snprintf(l->profile, sizeof(l->profile), "client");
    }
    X509_free(cert);
}

static cJSON *listed_json(const struct listed *l)
{
    cJSON *o = cJSON_CreateObject(), *sans;
    char buf[32];
    time_t now = time(NULL);

    cJSON_AddStringToObject(o, "serial", l->rec->serial);
    cJSON_AddStringToObject(o, "subject", l->subject);
    cJSON_AddStringToObject(o, "status", l->status);
    cJSON_AddStringToObject(o, "profile", l->profile);
    cJSON_AddStringToObject(o, "not_after", mtls_time_iso(l->not_after, buf, sizeof(buf)));
    cJSON_AddNumberToObject(o, "expires_in_days", (double)mtls_days_left(l->not_after, now));
    cJSON_AddNumberToObject(o, "expires_in_seconds", (double)(l->not_after - now));
    if (l->revoked_at != 0)
        cJSON_AddStringToObject(o, "revoked_at", mtls_time_iso(l->revoked_at, buf, sizeof(buf)));
    else
        cJSON_AddNullToObject(o, "revoked_at");
    if (l->reason[0] != '\0')
        cJSON_AddStringToObject(o, "reason", l->reason);
    else
        cJSON_AddNullToObject(o, "reason");
    sans = cJSON_AddArrayToObject(o, "sans");
    for (size_t i = 0; l->have_info && i < l->info.n_sans; i++) {
        cJSON *s = cJSON_CreateObject();

        cJSON_AddStringToObject(s, "type", l->info.sans[i].type);
        cJSON_AddStringToObject(s, "value", l->info.sans[i].value);
        cJSON_AddItemToArray(sans, s);
    }
    return o;
}

/* 1 when --expiring WINDOW (window >= 0) leaves this row out: revoked,
 * renewed, or valid beyond the window. */
static int filtered_out(const struct listed *l, long window)
{
    if (window < 0)
        return 0;
    if (strcmp(l->status, "revoked") == 0 || l->renewed)
        return 1;
    return strcmp(l->status, "valid") == 0 && l->not_after > time(NULL) + window;
}

/* "valid", or "expiring" for a valid row within --expiring's window. */
static const char *status_word(const struct listed *l, long window)
{
    return window >= 0 && strcmp(l->status, "valid") == 0 ? "expiring" : l->status;
}

/* The same identity to a TLS peer: subject, profile and SANs. */
static int same_identity(const struct listed *a, const struct listed *b)
{
    char sans_a[512], sans_b[512];

    if (!a->have_info || !b->have_info || strcmp(a->subject, b->subject) != 0 ||
        strcmp(a->profile, b->profile) != 0)
        return 0;
    mtls_cert_info_sans_line(&a->info, sans_a, sizeof(sans_a));
    mtls_cert_info_sans_line(&b->info, sans_b, sizeof(sans_b));
    return strcmp(sans_a, sans_b) == 0;
}

/* Marks the rows --expiring would list that were renewed since: another
 * valid certificate of the same identity lasts beyond the window. */
static void mark_renewed(struct listed *rows, size_t n, long window)
{
    time_t horizon = time(NULL) + window;

    for (size_t i = 0; i < n; i++) {
        if (strcmp(rows[i].status, "revoked") == 0 ||
            (strcmp(rows[i].status, "valid") == 0 && rows[i].not_after > horizon))
            continue;
        for (size_t j = 0; j < n && !rows[i].renewed; j++) {
            rows[i].renewed = j != i && strcmp(rows[j].status, "valid") == 0 &&
                              rows[j].not_after > horizon && same_identity(&rows[i], &rows[j]);
        }
    }
}

/* "2027-11-27 (expires in 364 days)" or "2027-11-27 (revoked 2026-11-27, keyCompromise)". */
static char *expiry_cell(const struct listed *l, char *buf, size_t size)
{
    char day[16], words[64];
    struct tm tm;

    gmtime_r(&l->not_after, &tm);
    strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    if (strcmp(l->status, "revoked") == 0) {
        char rday[16];

        gmtime_r(&l->revoked_at, &tm);
        strftime(rday, sizeof(rday), "%Y-%m-%d", &tm);
        snprintf(words, sizeof(words), "revoked %s%s%s", rday, l->reason[0] ? ", " : "", l->reason);
    } else {
        pki_expiry_words(l->not_after, words, sizeof(words));
    }
    snprintf(buf, size, "%s (%s)", day, words);
    return buf;
}

/* The table, its columns as wide as their widest cell; returns the rows shown. */
static size_t print_table(const struct listed *rows, size_t n, long window)
{
    int serial_w = 32, expiry_w = 7;
    size_t shown = 0;
    char cell[128];

    for (size_t i = 0; i < n; i++) {
        if (filtered_out(&rows[i], window))
            continue;
        if ((int)strlen(rows[i].rec->serial) > serial_w)
            serial_w = (int)strlen(rows[i].rec->serial);
        if ((int)strlen(expiry_cell(&rows[i], cell, sizeof(cell))) > expiry_w)
            expiry_w = (int)strlen(cell);
    }
    for (size_t i = 0; i < n; i++) {
        const struct listed *l = &rows[i];
        char sans[256] = "";

        if (filtered_out(l, window))
            continue;
        if (shown++ == 0)
            printf("  %-*s  %-8s %-7s %-*s  %s\n", serial_w, "SERIAL", "STATUS", "PROFILE",
                   expiry_w, "EXPIRES", "SUBJECT");
        if (l->have_info)
            mtls_cert_info_sans_line(&l->info, sans, sizeof(sans));
        printf("  %-*s  %s%-8s%s %-7s %-*s  %s%s%s\n", serial_w, l->rec->serial,
               strcmp(status_word(l, window), "valid") == 0 ? cli_green(stdout) : cli_red(stdout),
               status_word(l, window), cli_reset(stdout), l->profile, expiry_w,
               expiry_cell(l, cell, sizeof(cell)), l->subject, sans[0] ? "  " : "", sans);
    }
    return shown;
}

/* The CA's own certificate: {"subject", "not_after", "expires_in_days",
 * "expires_in_seconds", "status": "valid"|"expired"}. */
static cJSON *ca_json(const mtls_ca *ca, const char *ca_name)
{
    cJSON *o = cJSON_CreateObject();
    time_t now = time(NULL), end = mtls_asn1_time(X509_get0_notAfter(mtls_ca_cert(ca)));
    char buf[32];

    cJSON_AddStringToObject(o, "subject", ca_name);
    cJSON_AddStringToObject(o, "not_after", mtls_time_iso(end, buf, sizeof(buf)));
    cJSON_AddNumberToObject(o, "expires_in_days", (double)mtls_days_left(end, now));
    cJSON_AddNumberToObject(o, "expires_in_seconds", (double)(end - now));
    cJSON_AddStringToObject(o, "status", end < now ? "expired" : "valid");
    return o;
}

/* With --expiring: the CA's own end, when it falls within the window (or
 * has passed); returns 1 then. */
static int print_ca_expiry(const mtls_ca *ca, const char *ca_name, long window)
{
    time_t end = mtls_asn1_time(X509_get0_notAfter(mtls_ca_cert(ca)));
    char day[48], words[64];

    if (end > time(NULL) + window)
        return 0;
    printf("  %sthe CA certificate '%s' itself %s%s (%s)%s\n", cli_red(stdout), ca_name,
           mtls_expiry_words(end, time(NULL), words, sizeof(words)), cli_reset(stdout),
           mtls_time_human(end, day, sizeof(day)),
           end < time(NULL) ? ": nothing it issued verifies any more; make a new CA"
                            : ": make a new CA and move its certificates over in time");
    return 1;
}

static size_t print_json(const mtls_ca *ca, const char *ca_name, const struct listed *rows,
                         size_t n, long window)
{
    cJSON *root = cJSON_CreateObject(), *arr;
    size_t shown = 0;
    char *text;

    cJSON_AddStringToObject(root, "ca", ca_name);
    cJSON_AddStringToObject(root, "prefix", mtls_ca_prefix(ca));
    cJSON_AddItemToObject(root, "ca_certificate", ca_json(ca, ca_name));
    arr = cJSON_AddArrayToObject(root, "certificates");
    for (size_t i = 0; i < n; i++) {
        if (!filtered_out(&rows[i], window)) {
            cJSON_AddItemToArray(arr, listed_json(&rows[i]));
            shown++;
        }
    }
    text = cJSON_Print(root);
    if (text != NULL)
        printf("%s\n", text);
    free(text);
    cJSON_Delete(root);
    return shown;
}

/* After --expiring's table: how many are expiring and expired, and how
 * many renewed ones were left out; or that nothing needs doing. */
static void print_expiring_summary(const struct listed *rows, size_t n, long window, size_t renewed,
                                   int ca_due)
{
    size_t expiring = 0, expired = 0;

    for (size_t i = 0; i < n; i++) {
        if (filtered_out(&rows[i], window))
            continue;
        expiring += strcmp(rows[i].status, "valid") == 0;
        expired += strcmp(rows[i].status, "expired") == 0;
    }
    if (expiring + expired == 0 && !ca_due)
        printf("  nothing expires within %s", list_expiring);
    else if (expiring + expired > 0)
        printf("  %zu expiring within %s, %zu expired", expiring, list_expiring, expired);
    if (renewed > 0)
        printf("%s%zu renewed since, left out", expiring + expired == 0 && ca_due ? "  " : "; ",
               renewed);
    if (expiring + expired > 0 || renewed > 0 || !ca_due)
        printf("\n");
}

int cmd_ca_list(int argc, char **argv)
{
    struct cli_args args = {0};
    mtls_ca *ca = NULL;
    struct listed *rows = NULL;
    const mtls_ca_record *recs;
    size_t n = 0, shown, revoked = 0, expired = 0, renewed = 0;
    long window = -1;
    time_t ca_end;
    int ca_due;
    char words[64];
    mtls_err err;
    char ca_name[MTLS_NAME_MAX];
    int rc, code = EXIT_FAIL;

    rc = cli_parse(&list_spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (list_ca == NULL) {
        code = cli_usage_error(&list_spec, "--ca PREFIX is required");
        goto out;
    }
    if (list_expiring != NULL && (window = parse_window(list_expiring)) < 0) {
        code = cli_usage_error(&list_spec, "--expiring takes a window like 30d or 12h, not '%s'",
                               list_expiring);
        goto out;
    }
    if (mtls_ca_open_public(list_ca, &ca, &err) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    recs = mtls_ca_records(ca, &n);
    rows = calloc(n + 1, sizeof(*rows));
    if (rows == NULL) {
        code = cli_failf("out of memory");
        goto out;
    }
    mtls_name_oneline(X509_get_subject_name(mtls_ca_cert(ca)), ca_name, sizeof(ca_name));
    for (size_t i = 0; i < n; i++) {
        fill_listed(ca, &recs[i], &rows[i]);
        revoked += strcmp(rows[i].status, "revoked") == 0;
        expired += strcmp(rows[i].status, "expired") == 0;
    }
    if (window >= 0)
        mark_renewed(rows, n, window);
    for (size_t i = 0; window >= 0 && i < n; i++)
        renewed += rows[i].renewed;
    ca_end = mtls_asn1_time(X509_get0_notAfter(mtls_ca_cert(ca)));
    ca_due = window >= 0 && ca_end <= time(NULL) + window;
    if (list_json) {
        shown = print_json(ca, ca_name, rows, n, window);
    } else {
        printf("CA '%s' (%s, %s): %zu certificate%s, %zu revoked, %zu expired\n", ca_name,
               mtls_ca_prefix(ca), mtls_expiry_words(ca_end, time(NULL), words, sizeof(words)), n,
               n == 1 ? "" : "s", revoked, expired);
        if (window >= 0)
            (void)print_ca_expiry(ca, ca_name, window);
        shown = print_table(rows, n, window);
        if (window >= 0)
            print_expiring_summary(rows, n, window, renewed, ca_due);
    }
    code = window >= 0 && (shown > 0 || ca_due) ? 3 : EXIT_OK;
out:
    for (size_t i = 0; rows != NULL && i < n; i++) {
        if (rows[i].have_info)
            mtls_cert_info_release(&rows[i].info);
    }
    free(rows);
    mtls_ca_free(ca);
    cli_args_release(&args);
    return code;
}

/* ---- ca revoke --------------------------------------------------------- */

static const char *revoke_ca, *revoke_serial, *revoke_reason;
static struct pki_secret revoke_secret;

static const struct cli_opt revoke_opts[] = {
    {"ca", 0, CLI_STRING, &revoke_ca, "PREFIX", "the CA that issued the certificate", 0, 0},
    {"serial", 0, CLI_STRING, &revoke_serial, "HEX",
     "the serial to revoke (as 'mtls ca list' or 'mtls cert show' print it), instead of CERTFILE",
     0, 0},
    {"reason", 0, CLI_STRING, &revoke_reason, "REASON",
     "unspecified, keyCompromise, CACompromise, affiliationChanged, superseded or "
     "cessationOfOperation (default: none given)",
     0, 0},
    PKI_OPT_PASSWORD_FILE_READ(revoke_secret),
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec revoke_spec = {
    .name = "ca revoke",
    .usage = "--ca PREFIX (CERTFILE | --serial HEX) [--reason REASON] [--password-file FILE]",
    .summary = "mark a certificate revoked in its CA's inventory",
    .description = "Marks the certificate R in PREFIX.index with today's date (and the reason).\n"
                   "Publish it with 'mtls crl create', then reload the servers that use the CRL.",
    .opts = revoke_opts,
    .min_args = 0,
    .max_args = 1,
    .exit_codes = NULL,
};

int cmd_ca_revoke(int argc, char **argv)
{
    struct pki_signals held = {0};
    struct cli_args args = {0};
    mtls_ca *ca = NULL;
    X509 *cert = NULL;
    mtls_ca_record rec;
    mtls_err err;
    int rc, code = EXIT_FAIL, reason = MTLS_REASON_NONE;

    memset(&rec, 0, sizeof(rec));
    rc = cli_parse(&revoke_spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        code = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    if (revoke_ca == NULL) {
        code = cli_usage_error(&revoke_spec, "--ca PREFIX is required");
        goto out;
    }
    if ((args.n == 1) == (revoke_serial != NULL)) {
        code = cli_usage_error(&revoke_spec, "give either a certificate file or --serial HEX");
        goto out;
    }
    if (revoke_reason != NULL && mtls_crl_reason_parse(revoke_reason, &reason, &err) != 0) {
        code = cli_usage_error(&revoke_spec, "%s", err.msg);
        goto out;
    }
    if ((rc = pki_secret_load(&revoke_spec, &revoke_secret)) != 0) {
        code = rc;
        goto out;
    }
    if (revoke_serial != NULL) {
        char norm[84];

        if (mtls_serial_normalize(revoke_serial, norm, sizeof(norm), &err) != 0) {
            code = cli_usage_error(&revoke_spec, "--serial: %s", err.msg);
            goto out;
        }
    }
    /* The index is rewritten: an interruption waits for it. */
    pki_hold_signals(&held);
    if ((args.n == 1 && (rc = mtls_cert_load(args.v[0], &cert, &err)) != 0) ||
        (rc = mtls_ca_open(revoke_ca, revoke_secret.password, &ca, &err)) != 0 ||
        (rc = mtls_ca_revoke(ca, revoke_serial, cert, reason, &rec, &err)) != 0) {
        code = cli_fail(&err);
        goto out;
    }
    printf("revoked serial %s (%s)%s%s\npublish it: mtls crl create --ca %s --out %s.crl --force\n",
           rec.serial, rec.subject, reason != MTLS_REASON_NONE ? ", reason " : "",
           reason != MTLS_REASON_NONE ? mtls_crl_reason_name(reason) : "", mtls_ca_prefix(ca),
           mtls_ca_prefix(ca));
    code = EXIT_OK;
out:
    free(rec.subject);
    pki_secret_release(&revoke_secret);
    X509_free(cert);
    mtls_ca_free(ca);
    cli_args_release(&args);
    pki_release_signals(&held);
    return code;
}
