/*
 * mtls/lint.h - findings about certificates and about a whole mTLS setup:
 * what `mtls cert lint` and `mtls doctor` report.
 *
 * Part of the pki layer (src/pki/findings.c, lint.c, doctor.c). The checks
 * are functions of files and certificates: they read, never write, print or
 * touch a socket, and return what they found as values (a list of findings),
 * each with a severity, a stable code, a sentence and what to do.
 */
#ifndef MTLS_LINT_H
#define MTLS_LINT_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#include "mtls/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/** How bad a finding is. The order matters: worse is larger. */
typedef enum mtls_severity {
    MTLS_SEV_INFO = 0,    /* worth knowing; nothing to fix */
    MTLS_SEV_WARNING = 1, /* works today, but some clients refuse it or it is unsafe */
    MTLS_SEV_ERROR = 2,   /* clients or the server will refuse it, or it is plainly unsafe */
} mtls_severity;

/** "info", "warning", "error" (static). */
const char *mtls_severity_name(mtls_severity sev);

/** One thing found. Strings are owned by the list that holds it. */
typedef struct mtls_finding {
    mtls_severity severity;
    const char *code; /* stable, for scripts: "v1-certificate" (static) */
    char *file;       /* the file it is about, or "" (a port, the folder) */
    char *subject;    /* the certificate's subject ("CN=localhost"), or "" */
    char *message;    /* one sentence: what is wrong and what follows from it */
    char *fix;        /* what to do about it, or "" */
} mtls_finding;

/** A growing list of findings. Zero it with mtls_findings_init(). */
typedef struct mtls_findings {
    mtls_finding *items;
    size_t n, cap;
    int nomem; /* set when an add ran out of memory (the finding is lost) */
} mtls_findings;

void mtls_findings_init(mtls_findings *list);

/** Frees every finding. NULL-safe; the list can be used again after. */
void mtls_findings_release(mtls_findings *list);

/**
 * Appends a finding: code is static, file, subject and fix are copied (NULL
 * is ""), the message is formatted from fmt. Returns 0, or MTLS_E_NOMEM (and
 * sets list->nomem).
 */
int mtls_findings_add(mtls_findings *list, mtls_severity sev, const char *code, const char *file,
                      const char *subject, const char *fix, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/** How many findings of severity sev the list holds. */
size_t mtls_findings_count(const mtls_findings *list, mtls_severity sev);

/* ---- cert lint ----------------------------------------------------------- */

#define MTLS_LINT_EXPIRY_DAYS 30      /* "expires-soon" within this many days */
#define MTLS_LINT_SERVER_MAX_DAYS 398 /* browsers' limit on a server certificate's validity */

/**
 * Checks one certificate (borrowed) for what clients refuse or what is
 * unsafe: version 1, SHA-1/MD5 signatures, weak keys, no SAN on a server
 * certificate, key usage and extended key usage against its role, CA
 * extensions, validity (expired, not yet valid, expiring within
 * MTLS_LINT_EXPIRY_DAYS, a server certificate over
 * MTLS_LINT_SERVER_MAX_DAYS), serials. role is an mtls_profile
 * (MTLS_PROFILE_SUBCA meaning any CA) or 0 to infer it from the certificate
 * (CA:TRUE, its EKU, a host name as CN). file names it in the findings; now
 * is the time to judge dates by (0: the current time). Appends to out.
 * Returns 0, or MTLS_E_NOMEM / MTLS_E_CRYPTO with err set.
 */
int mtls_cert_lint(X509 *cert, const char *file, int role, time_t now, mtls_findings *out,
                   mtls_err *err);

/* ---- doctor -------------------------------------------------------------- */

#define MTLS_DOCTOR_CRL_DAYS 7 /* "crl-expires-soon" within this many days */

/** What mtls_doctor() looks at. Strings are borrowed. */
typedef struct mtls_doctor_opts {
    const char *dir;          /* the folder; NULL or "" is "." */
    const char *const *hosts; /* names clients connect to; none: localhost, 127.0.0.1 */
    size_t n_hosts;
    const char *const *crl_files; /* CRLs besides the *.crl files of dir (paths as given) */
    size_t n_crl_files;
    const char *key_password; /* for encrypted keys, or NULL */
    time_t now;               /* 0: the current time */
} mtls_doctor_opts;

/**
 * Checks the article's setup in one folder: server.crt/server.key,
 * clientca.crt (required), serverca.crt and client.crt/client.key
 * (checked when present) and CRLs. Each key against its certificate, each
 * certificate linted for its role, the server chain to serverca.crt and the
 * client's to clientca.crt (mtls_verify), the server's SANs against the
 * host names, CAs that outlive what they signed, each CRL's issuer,
 * signature and dates (and whether it revokes the certificate here), and
 * private keys readable by group or others. A missing or unreadable file is
 * a finding, not an error. Appends to out. Returns 0, or MTLS_E_NOMEM with
 * err set, or MTLS_E_NOTFOUND when dir is not a folder.
 */
int mtls_doctor(const mtls_doctor_opts *opts, mtls_findings *out, mtls_err *err);

#ifdef __cplusplus
}
#endif

#endif
