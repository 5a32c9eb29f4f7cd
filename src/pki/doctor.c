/* doctor: the article's whole setup in one folder, checked in one look:
 * keys against certificates, chains, roles, host names, CRLs, key file
 * modes. Everything found is a finding; only running out of memory (or no
 * folder at all) is an error. The port check lives with the sockets
 * (mtls_server_listen_check()); the CLI adds it. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "mtls/certinfo.h"
#include "mtls/lint.h"
#include "mtls/pki.h"

enum { F_SERVER, F_SERVERCA, F_CLIENTCA, F_CLIENT, N_FILES };

/* The article's file names, what each is for, and how to make it. */
static const struct cert_file {
    const char *name;
    const char *key; /* its private key's file, or NULL */
    int role;        /* of its first certificate; any others are CAs */
    int required;    /* the server cannot start without it */
    const char *make;
    const char *absent; /* what goes unchecked without an optional file */
} cert_files[N_FILES] = {
    {"server.crt", "server.key", MTLS_PROFILE_SERVER, 1,
     "make it with 'mtls init', or 'mtls cert issue --ca serverca --profile server --cn NAME "
     "--san NAME --out server'",
     NULL},
    {"serverca.crt", NULL, MTLS_PROFILE_SUBCA, 0,
     "put the CA certificate that signed server.crt here (clients trust it)",
     "the server certificate's chain was not checked"},
    {"clientca.crt", NULL, MTLS_PROFILE_SUBCA, 1,
     "make it with 'mtls init' or 'mtls ca create --out clientca --cn NAME', or copy the CA "
     "certificate of your clients here",
     NULL},
    {"client.crt", "client.key", MTLS_PROFILE_CLIENT, 0,
     "make one with 'mtls cert issue --ca clientca --profile client --cn NAME --out client'",
     "no client certificate was checked against clientca.crt"},
};

static const char *const default_hosts[] = {"localhost", "127.0.0.1"};

struct doctor {
    const mtls_doctor_opts *opts;
    const char *dir;
    mtls_findings *out;
    time_t now;
    char *path[N_FILES];                /* as shown: "server.crt" or "DIR/server.crt" */
    STACK_OF(X509) * certs[N_FILES];    /* NULL when missing or unreadable */
    int chain_ok[N_FILES];              /* the leaf verified against its CA file */
    time_t chain_at[N_FILES];           /* the time it was verified as of */
    STACK_OF(X509_CRL) * crls[N_FILES]; /* fresh CRLs of a CA file (F_SERVERCA, F_CLIENTCA) */
};

/* DIR/name, or name alone for ".": how files are named in findings. */
static char *in_dir(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);

    if (path == NULL)
        return NULL;
    if (strcmp(dir, ".") == 0)
        snprintf(path, n, "%s", name);
    else
        snprintf(path, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    return path;
}

static X509 *leaf_of(const struct doctor *d, int f)
{
    return d->certs[f] != NULL ? sk_X509_value(d->certs[f], 0) : NULL;
}

static const char *subject_of(X509 *cert, char *buf, size_t size)
{
    return mtls_name_oneline(X509_get_subject_name(cert), buf, size);
}

/* Reads and lints one certificate file. Returns 0, or MTLS_E_NOMEM. */
static int load_certs(struct doctor *d, int f)
{
    const struct cert_file *cf = &cert_files[f];
    const char *path = d->path[f];
    mtls_err e;
    int rc;

    if (!mtls_file_exists(path)) {
        if (cf->required)
            return mtls_findings_add(d->out, MTLS_SEV_ERROR, "missing-file", path, NULL, cf->make,
                                     "'%s' is missing: the server cannot start without it", path);
        return mtls_findings_add(d->out, MTLS_SEV_INFO, "not-checked", path, NULL, cf->make,
                                 "no '%s' here: %s", path, cf->absent);
    }
    if (mtls_cert_load_all(path, &d->certs[f], &e) != 0) {
        d->certs[f] = NULL;
        return mtls_findings_add(d->out, MTLS_SEV_ERROR, "unreadable", path, NULL, cf->make, "%s",
                                 e.msg);
    }
    for (int i = 0; i < sk_X509_num(d->certs[f]); i++) {
        int role = i == 0 ? cf->role : MTLS_PROFILE_SUBCA;

        rc = mtls_cert_lint(sk_X509_value(d->certs[f], i), path, role, d->now, d->out, &e);
        if (rc == MTLS_E_NOMEM)
            return rc;
        if (rc != 0)
            (void)mtls_findings_add(d->out, MTLS_SEV_ERROR, "unreadable", path, NULL, cf->make,
                                    "certificate %d of '%s' cannot be read: %s", i + 1, path,
                                    e.msg);
    }
    return 0;
}

/* " (it is the key of 'client.crt')" when key belongs to another certificate here. */
static void whose_key(const struct doctor *d, EVP_PKEY *key, char *buf, size_t size)
{
    buf[0] = '\0';
    for (int f = 0; f < N_FILES; f++) {
        for (int i = 0; d->certs[f] != NULL && i < sk_X509_num(d->certs[f]); i++) {
            if (mtls_key_matches_cert(key, sk_X509_value(d->certs[f], i))) {
                snprintf(buf, size, " (it is the key of %s'%s')",
                         i > 0 ? "a CA certificate in " : "", d->path[f]);
                return;
            }
        }
    }
}

/* The private key of a leaf file: there, readable, and the certificate's. */
static int check_key(struct doctor *d, int f)
{
    const struct cert_file *cf = &cert_files[f];
    char *path = in_dir(d->dir, cf->key);
    char subject[MTLS_NAME_MAX], whose[256], fix[512];
    EVP_PKEY *key = NULL;
    X509 *leaf = leaf_of(d, f);
    mtls_err e;
    int rc = 0;

    if (path == NULL)
        return MTLS_E_NOMEM;
    if (!mtls_file_exists(path)) {
        if (cf->required)
            rc = mtls_findings_add(d->out, MTLS_SEV_ERROR, "missing-file", path, NULL,
                                   "put the private key of server.crt here (it was made with it)",
                                   "'%s' is missing: the server cannot start without it", path);
        else if (leaf != NULL)
            rc = mtls_findings_add(d->out, MTLS_SEV_INFO, "not-checked", path, NULL, "",
                                   "no '%s' here: '%s' was not checked against its key", path,
                                   d->path[f]);
        goto out;
    }
    if (mtls_key_load(path, d->opts->key_password, &key, &e) != 0) {
        rc = mtls_findings_add(d->out, MTLS_SEV_ERROR, "key-unreadable", path, NULL,
                               "check the file; for an encrypted key pass --password-file", "%s",
                               e.msg);
        goto out;
    }
    if (leaf == NULL || mtls_key_matches_cert(key, leaf))
        goto out;
    whose_key(d, key, whose, sizeof(whose));
    snprintf(fix, sizeof(fix),
             "put the key that was made with '%s' in '%s', or reissue '%s' for this key",
             d->path[f], path, d->path[f]);
    rc = mtls_findings_add(
        d->out, MTLS_SEV_ERROR, "key-mismatch", path, subject_of(leaf, subject, sizeof(subject)),
        fix, "'%s' is not the private key of '%s' (%s)%s: %s", path, d->path[f], subject, whose,
        f == F_SERVER ? "the server cannot start" : "a client using them fails the handshake");
out:
    EVP_PKEY_free(key);
    free(path);
    return rc;
}

/* A time at which leaf, extras and the anchor were all valid: now when they
 * are, else the nearest such moment. Dates are findings of their own (lint),
 * so the chain is judged on its links alone. */
static time_t chain_time(X509 *leaf, STACK_OF(X509) * extras, STACK_OF(X509) * cas, time_t now)
{
    X509 *top = sk_X509_num(extras) > 0 ? sk_X509_value(extras, sk_X509_num(extras) - 1) : leaf;
    time_t lo = mtls_asn1_time(X509_get0_notBefore(leaf));
    time_t hi = mtls_asn1_time(X509_get0_notAfter(leaf));

    for (int i = 0; i < sk_X509_num(extras) + sk_X509_num(cas); i++) {
        X509 *c = i < sk_X509_num(extras) ? sk_X509_value(extras, i)
                                          : sk_X509_value(cas, i - sk_X509_num(extras));
        time_t b = mtls_asn1_time(X509_get0_notBefore(c)),
               a = mtls_asn1_time(X509_get0_notAfter(c));

        /* Of the CA file, only the anchor's dates count. */
        if (i >= sk_X509_num(extras) &&
            X509_NAME_cmp(X509_get_subject_name(c), X509_get_issuer_name(top)) != 0)
            continue;
        lo = b > lo ? b : lo;
        hi = a < hi ? a : hi;
    }
    if (hi - lo < 2 || (now > lo && now < hi))
        return now;
    return now <= lo ? lo + 1 : hi - 1;
}

/* The CA in cas that issued cert, or NULL. */
static X509 *issuer_in(X509 *cert, STACK_OF(X509) * cas)
{
    for (int i = 0; i < sk_X509_num(cas); i++) {
        if (mtls_cert_issued_by(cert, sk_X509_value(cas, i)) == X509_V_OK)
            return sk_X509_value(cas, i);
    }
    return NULL;
}

/* A CA that ends before what it signed: the leaf stops verifying early. */
static void check_ca_outlives(struct doctor *d, int f, int ca_f, X509 *top)
{
    X509 *ca = issuer_in(top, d->certs[ca_f]);
    X509 *leaf = leaf_of(d, f);
    time_t ca_end, leaf_end;
    char when[48], leaf_when[48], fix[256];

    if (ca == NULL)
        return;
    ca_end = mtls_asn1_time(X509_get0_notAfter(ca));
    leaf_end = mtls_asn1_time(X509_get0_notAfter(leaf));
    if (ca_end >= leaf_end || ca_end <= d->now)
        return;
    snprintf(fix, sizeof(fix), "make a new CA and reissue '%s' from it before %s", d->path[f],
             mtls_time_human(ca_end, when, sizeof(when)));
    (void)mtls_findings_add(d->out, MTLS_SEV_WARNING, "ca-expires-first", d->path[ca_f], NULL, fix,
                            "the CA in '%s' expires on %s, before '%s' (%s): from then on '%s' "
                            "no longer verifies",
                            d->path[ca_f], when, d->path[f],
                            mtls_time_human(leaf_end, leaf_when, sizeof(leaf_when)), d->path[f]);
}

/* The leaf of file f against the CA file ca_f: order, links, signatures. */
static int check_chain(struct doctor *d, int f, int ca_f)
{
    STACK_OF(X509) *extras = NULL;
    X509 *leaf = leaf_of(d, f);
    mtls_verify_opts vopts;
    char subject[MTLS_NAME_MAX];
    mtls_err e;
    int rc = 0;

    if (leaf == NULL || d->certs[ca_f] == NULL)
        return 0;
    if ((extras = sk_X509_dup(d->certs[f])) == NULL)
        return MTLS_E_NOMEM;
    (void)sk_X509_shift(extras);
    subject_of(leaf, subject, sizeof(subject));
    if (sk_X509_num(extras) > 0 && mtls_chain_check(leaf, extras, &e) != 0) {
        rc = mtls_findings_add(d->out, MTLS_SEV_ERROR, "chain-order", d->path[f], subject,
                               "put the certificate first, then the CA that issued it, and so on "
                               "up (the root may be left out)",
                               "'%s': %s", d->path[f], e.msg);
        goto out;
    }
    memset(&vopts, 0, sizeof(vopts));
    vopts.at = chain_time(leaf, extras, d->certs[ca_f], d->now);
    if (mtls_verify(leaf, extras, d->certs[ca_f], &vopts, &e) != 0) {
        rc = mtls_findings_add(
            d->out, MTLS_SEV_ERROR, f == F_SERVER ? "server-chain" : "client-chain", d->path[f],
            subject,
            f == F_SERVER ? "append the intermediate CAs to server.crt, or put the CA that signed "
                            "it in serverca.crt (what clients trust)"
                          : "issue the client certificate from the CA in clientca.crt, or add its "
                            "CA to clientca.crt (the server trusts only those)",
            "'%s' does not verify against '%s'%s: %s", d->path[f], d->path[ca_f],
            f == F_SERVER ? ", which clients trust" : ", which the server trusts", e.msg);
        goto out;
    }
    d->chain_ok[f] = 1;
    d->chain_at[f] = vopts.at;
    check_ca_outlives(d, f, ca_f,
                      sk_X509_num(extras) > 0 ? sk_X509_value(extras, sk_X509_num(extras) - 1)
                                              : leaf);
out:
    sk_X509_free(extras);
    return d->out->nomem ? MTLS_E_NOMEM : rc;
}

/* Every name clients use must be a SAN of the server certificate. */
static void check_hosts(struct doctor *d)
{
    const char *const *hosts = d->opts->n_hosts > 0 ? d->opts->hosts : default_hosts;
    size_t n = d->opts->n_hosts > 0 ? d->opts->n_hosts : 2;
    STACK_OF(X509) *extras = NULL;
    X509 *leaf = leaf_of(d, F_SERVER);
    mtls_verify_opts vopts;
    char subject[MTLS_NAME_MAX], fix[512];
    mtls_err e;

    /* Without SANs at all, lint's no-san finding says it for every name. */
    if (!d->chain_ok[F_SERVER] || X509_get_ext_by_NID(leaf, NID_subject_alt_name, -1) < 0 ||
        (extras = sk_X509_dup(d->certs[F_SERVER])) == NULL)
        return;
    (void)sk_X509_shift(extras);
    subject_of(leaf, subject, sizeof(subject));
    for (size_t i = 0; i < n; i++) {
        memset(&vopts, 0, sizeof(vopts));
        vopts.at = d->chain_at[F_SERVER];
        vopts.host = hosts[i];
        if (mtls_verify(leaf, extras, d->certs[F_SERVERCA], &vopts, &e) == 0)
            continue;
        snprintf(fix, sizeof(fix),
                 "reissue '%s' with --san %s (and every other name clients use), or pass --host "
                 "with the names clients really use",
                 d->path[F_SERVER], hosts[i]);
        (void)mtls_findings_add(d->out, MTLS_SEV_ERROR, "host-not-covered", d->path[F_SERVER],
                                subject, fix, "clients connecting to '%s' refuse the server: %s",
                                hosts[i], e.msg);
    }
    sk_X509_free(extras);
}

/* Which CA file's CA signed crl: F_CLIENTCA, F_SERVERCA, or -1; *namesake
 * is set when a CA there has the CRL's issuer name but not its key. */
static int crl_issuer(const struct doctor *d, X509_CRL *crl, int *namesake)
{
    static const int order[] = {F_CLIENTCA, F_SERVERCA};

    *namesake = 0;
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        STACK_OF(X509) *cas = d->certs[order[k]];

        for (int i = 0; cas != NULL && i < sk_X509_num(cas); i++) {
            X509 *ca = sk_X509_value(cas, i);
            EVP_PKEY *key = X509_get0_pubkey(ca);

            if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) != 0)
                continue;
            if (key != NULL && X509_CRL_verify(crl, key) == 1) {
                ERR_clear_error();
                return order[k];
            }
            ERR_clear_error();
            *namesake = 1;
        }
    }
    return -1;
}

/* The dates of a CRL. Returns 1 when it is current. */
static int check_crl_dates(struct doctor *d, const char *path, X509_CRL *crl, const char *prefix)
{
    time_t last = mtls_asn1_time(X509_CRL_get0_lastUpdate(crl));
    const ASN1_TIME *next_t = X509_CRL_get0_nextUpdate(crl);
    time_t next = next_t != NULL ? mtls_asn1_time(next_t) : 0;
    char when[48], words[64], fix[256];

    snprintf(fix, sizeof(fix), "publish a fresh one: 'mtls crl create --ca %s --out %s --force'",
             prefix, path);
    if (last > d->now) {
        (void)mtls_findings_add(d->out, MTLS_SEV_ERROR, "crl-not-yet-valid", path, NULL,
                                "check this machine's clock, or publish it again",
                                "'%s' is not valid yet: not until %s", path,
                                mtls_time_human(last, when, sizeof(when)));
        return 0;
    }
    if (next == 0)
        return 1;
    mtls_time_human(next, when, sizeof(when));
    mtls_expiry_words(next, d->now, words, sizeof(words));
    if (next <= d->now) {
        (void)mtls_findings_add(d->out, MTLS_SEV_ERROR, "crl-expired", path, NULL, fix,
                                "'%s' %s (%s, its next update): 'mtls serve' refuses to start "
                                "with it, and verifiers refuse every certificate of its CA",
                                path, words, when);
        return 0;
    }
    if (mtls_days_left(next, d->now) <= MTLS_DOCTOR_CRL_DAYS)
        (void)mtls_findings_add(d->out, MTLS_SEV_WARNING, "crl-expires-soon", path, NULL, fix,
                                "'%s' %s (%s, its next update): then every certificate of its "
                                "CA is refused until a fresh one is loaded",
                                path, words, when);
    return 1;
}

/* 'mtls serve --crl' reads PEM only (mtls_crl_load() takes DER too). */
static void check_crl_pem(struct doctor *d, const char *path)
{
    unsigned char *data = NULL;
    size_t len = 0;
    char label[64], fix[512];
    mtls_err e;

    if (mtls_file_read(path, MTLS_PEM_MAX, &data, &len, &e) != 0)
        return;
    if (mtls_pem_label((char *)data, label, sizeof(label))[0] == '\0') {
        snprintf(fix, sizeof(fix), "convert it: openssl crl -inform DER -in %s -out %s.pem", path,
                 path);
        (void)mtls_findings_add(d->out, MTLS_SEV_ERROR, "crl-not-pem", path, NULL, fix,
                                "'%s' is a DER CRL: 'mtls serve --crl' reads PEM only and "
                                "refuses to start with it",
                                path);
    }
    free(data);
}

/* One CRL: who made it, is it current; a current one is kept for its CA. */
static int check_crl(struct doctor *d, const char *path)
{
    X509_CRL *crl = NULL;
    char issuer[MTLS_NAME_MAX];
    int from, namesake, rc = 0;
    mtls_err e;

    if (mtls_crl_load(path, &crl, &e) != 0)
        return mtls_findings_add(d->out, MTLS_SEV_ERROR, "unreadable", path, NULL,
                                 "publish it again with 'mtls crl create'", "%s", e.msg);
    check_crl_pem(d, path);
    mtls_name_oneline(X509_CRL_get_issuer(crl), issuer, sizeof(issuer));
    from = crl_issuer(d, crl, &namesake);
    if (from < 0 && namesake)
        rc = mtls_findings_add(d->out, MTLS_SEV_ERROR, "crl-bad-signature", path, NULL,
                               "publish it again with the CA's own key: 'mtls crl create --ca "
                               "PREFIX'",
                               "'%s' names '%s' as its issuer, but that CA's key did not sign "
                               "it (altered, or made by another CA of the same name): verifiers "
                               "refuse it",
                               path, issuer);
    else if (from < 0)
        rc = mtls_findings_add(
            d->out, MTLS_SEV_ERROR, "crl-wrong-issuer", path, NULL,
            "use the client CA's CRL: 'mtls crl create --ca clientca --out clientca.crl'",
            "'%s' is from '%s', neither the client CA nor the server CA here: given to 'mtls "
            "serve --crl' it revokes nothing, and without the client CA's own CRL every client "
            "is refused",
            path, issuer);
    else if (from == F_SERVERCA)
        rc = mtls_findings_add(d->out, MTLS_SEV_WARNING, "crl-server-ca", path, NULL,
                               "give it to the clients; give 'mtls serve --crl' the client CA's "
                               "CRL",
                               "'%s' is the server CA's CRL ('%s'): 'mtls serve --crl' checks "
                               "client certificates, so there it revokes nothing",
                               path, issuer);
    if (rc == 0 && check_crl_dates(d, path, crl, from == F_SERVERCA ? "serverca" : "clientca") &&
        from >= 0) {
        if (d->crls[from] == NULL && (d->crls[from] = sk_X509_CRL_new_null()) == NULL)
            rc = MTLS_E_NOMEM;
        else if (sk_X509_CRL_push(d->crls[from], crl) > 0)
            crl = NULL;
        else
            rc = MTLS_E_NOMEM;
    }
    X509_CRL_free(crl);
    return rc;
}

/* The current CRLs of a CA file revoke the leaf that chains to it? */
static void check_revoked(struct doctor *d, int f, int ca_f)
{
    STACK_OF(X509) * extras;
    mtls_verify_opts vopts;
    char subject[MTLS_NAME_MAX];
    mtls_err e;

    /* Only as of now: a chain judged at another time says nothing of today's CRL. */
    if (!d->chain_ok[f] || d->crls[ca_f] == NULL || d->chain_at[f] != d->now ||
        (extras = sk_X509_dup(d->certs[f])) == NULL)
        return;
    (void)sk_X509_shift(extras);
    memset(&vopts, 0, sizeof(vopts));
    vopts.at = d->now;
    vopts.crls = d->crls[ca_f];
    if (mtls_verify(leaf_of(d, f), extras, d->certs[ca_f], &vopts, &e) != 0)
        (void)mtls_findings_add(d->out, MTLS_SEV_ERROR, "revoked", d->path[f],
                                subject_of(leaf_of(d, f), subject, sizeof(subject)),
                                "issue a new certificate ('mtls cert issue') and use it instead",
                                "'%s' fails its CA's CRL: %s", d->path[f], e.msg);
    sk_X509_free(extras);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n > m && strcmp(s + n - m, suffix) == 0;
}

/* The names in dir ending with suffix, sorted (a new list, free each and it). */
static int names_ending(const char *dir, const char *suffix, struct dirent ***list)
{
    struct dirent **all = NULL;
    int n = scandir(dir, &all, NULL, alphasort), kept = 0;

    for (int i = 0; i < n; i++) {
        if (ends_with(all[i]->d_name, suffix))
            all[kept++] = all[i];
        else
            free(all[i]);
    }
    *list = all;
    return n < 0 ? 0 : kept;
}

static int check_crls(struct doctor *d)
{
    struct dirent **names = NULL;
    int n = names_ending(d->dir, ".crl", &names), rc = 0;

    for (size_t i = 0; rc == 0 && i < d->opts->n_crl_files; i++)
        rc = check_crl(d, d->opts->crl_files[i]);
    for (int i = 0; i < n; i++) {
        char *path = rc == 0 ? in_dir(d->dir, names[i]->d_name) : NULL;

        if (rc == 0)
            rc = path != NULL ? check_crl(d, path) : MTLS_E_NOMEM;
        free(path);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* Private keys readable by anyone but their owner; CA keys beside the server. */
static int check_key_modes(struct doctor *d)
{
    struct dirent **names = NULL;
    int n = names_ending(d->dir, ".key", &names), rc = 0;

    for (int i = 0; i < n; i++) {
        char *path = in_dir(d->dir, names[i]->d_name);
        char fix[512];
        struct stat st;

        if (path == NULL) {
            rc = MTLS_E_NOMEM;
        } else if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            snprintf(fix, sizeof(fix), "chmod 600 %s", path);
            if (st.st_mode & (S_IROTH | S_IWOTH))
                (void)mtls_findings_add(d->out, MTLS_SEV_ERROR, "key-readable", path, NULL, fix,
                                        "'%s' can be read by every user of this machine (mode "
                                        "%04o): treat the key as leaked if others had access",
                                        path, (unsigned)(st.st_mode & 07777));
            else if (st.st_mode & (S_IRGRP | S_IWGRP))
                (void)mtls_findings_add(d->out, MTLS_SEV_WARNING, "key-group-readable", path, NULL,
                                        fix,
                                        "'%s' can be read by its group (mode %04o), not only "
                                        "by its owner",
                                        path, (unsigned)(st.st_mode & 07777));
            if (strcmp(names[i]->d_name, "clientca.key") == 0 ||
                strcmp(names[i]->d_name, "serverca.key") == 0)
                (void)mtls_findings_add(d->out, MTLS_SEV_INFO, "ca-key-here", path, NULL,
                                        "keep CA keys on another machine, or at least outside "
                                        "the server's folder",
                                        "the CA key '%s' lies beside the server's files: whoever "
                                        "can read this folder can issue certificates",
                                        path);
        }
        free(path);
        free(names[i]);
    }
    free(names);
    return rc != 0 ? rc : d->out->nomem ? MTLS_E_NOMEM : 0;
}

/* Every check in turn. Returns 0, or MTLS_E_NOMEM (the only way one fails). */
static int run(struct doctor *d)
{
    int rc = 0;

    for (int f = 0; rc == 0 && f < N_FILES; f++) {
        if ((d->path[f] = in_dir(d->dir, cert_files[f].name)) == NULL)
            return MTLS_E_NOMEM;
        rc = load_certs(d, f);
    }
    if (rc != 0 || (rc = check_key(d, F_SERVER)) != 0 || (rc = check_key(d, F_CLIENT)) != 0 ||
        (rc = check_chain(d, F_SERVER, F_SERVERCA)) != 0 ||
        (rc = check_chain(d, F_CLIENT, F_CLIENTCA)) != 0)
        return rc;
    check_hosts(d);
    if ((rc = check_crls(d)) != 0)
        return rc;
    check_revoked(d, F_SERVER, F_SERVERCA);
    check_revoked(d, F_CLIENT, F_CLIENTCA);
    return check_key_modes(d);
}

int mtls_doctor(const mtls_doctor_opts *opts, mtls_findings *out, mtls_err *err)
{
    struct doctor d;
    struct stat st;
    int rc;

    memset(&d, 0, sizeof(d));
    d.opts = opts;
    d.dir = opts->dir != NULL && opts->dir[0] != '\0' ? opts->dir : ".";
    d.out = out;
    d.now = opts->now != 0 ? opts->now : time(NULL);
    if (stat(d.dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return mtls_err_set(err, MTLS_E_NOTFOUND, "'%s' is not a folder", d.dir);
    rc = run(&d);
    if (rc != 0 || out->nomem)
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    for (int f = 0; f < N_FILES; f++) {
        free(d.path[f]);
        sk_X509_pop_free(d.certs[f], X509_free);
        sk_X509_CRL_pop_free(d.crls[f], X509_CRL_free);
    }
    ERR_clear_error();
    return rc;
}
