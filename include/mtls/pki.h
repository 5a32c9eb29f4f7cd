/*
 * mtls/pki.h - keys, names, CSRs, certificates, the CA folder and
 * verification: the PKI half of libmtls.
 *
 * Every function returns 0 or a negative MTLS_E_* code and fills err with a
 * one-line message naming the file or value. Nothing here prints, exits or
 * touches a socket. OpenSSL objects handed out are owned by the caller
 * unless a comment says "borrowed".
 */
#ifndef MTLS_PKI_H
#define MTLS_PKI_H

#include <stddef.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtls/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- keys ------------------------------------------------------------ */

typedef enum mtls_key_type {
    MTLS_KEY_EC = 0, /* ECDSA; P-256 unless bits say 384 or 521 (the default) */
    MTLS_KEY_RSA,    /* RSA, 2048 bits unless bits say more (the article's) */
    MTLS_KEY_ED25519 /* Ed25519: TLS 1.3 only, not accepted by browsers */
} mtls_key_type;

#define MTLS_RSA_BITS_DEFAULT 2048
#define MTLS_PEM_MAX (1024 * 1024) /* the largest PEM file we read */

/** Parses "ec", "rsa" or "ed25519". Returns 0 or MTLS_E_INVALID. */
int mtls_key_type_parse(const char *name, mtls_key_type *out, mtls_err *err);

/** "ec", "rsa", "ed25519" (static). */
const char *mtls_key_type_name(mtls_key_type type);

/**
 * Generates a new private key. bits 0 means the default (P-256, RSA-2048);
 * EC takes 256, 384 or 521, RSA 2048 to 16384, Ed25519 only 0.
 * *out is owned by the caller. Returns 0, MTLS_E_INVALID (bad bits) or
 * MTLS_E_CRYPTO.
 */
int mtls_key_generate(mtls_key_type type, int bits, EVP_PKEY **out, mtls_err *err);

/**
 * Encodes key as PKCS#8 PEM, encrypted with AES-256-CBC when password is
 * not NULL. *pem (NUL-terminated, *len bytes) is owned by the caller, who
 * frees it with mtls_free_secret(*pem, *len).
 */
int mtls_key_to_pem(EVP_PKEY *key, const char *password, char **pem, size_t *len, mtls_err *err);

/**
 * Reads a PEM private key (PKCS#8, PKCS#1 or SEC1; encrypted ones need
 * password). Errors name the file: missing, not PEM, a certificate where a
 * key was expected, encrypted without a password, wrong password.
 */
int mtls_key_load(const char *path, const char *password, EVP_PKEY **out, mtls_err *err);

/** 1 when key is the private half of cert's public key, else 0. */
int mtls_key_matches_cert(EVP_PKEY *key, X509 *cert);

/** "EC P-256", "RSA 2048", "Ed25519" into buf; returns buf. */
char *mtls_key_describe(EVP_PKEY *key, char *buf, size_t size);

/**
 * Checks that TLS peers accept key (borrowed) in a certificate: RSA of 2048
 * bits or more (OpenSSL's default security level refuses less), EC on
 * P-256, P-384 or P-521, Ed25519 or Ed448. path names where it came from
 * in the message. Returns 0 or MTLS_E_INVALID.
 */
int mtls_key_check_tls(EVP_PKEY *key, const char *path, mtls_err *err);

/* ---- PEM files -------------------------------------------------------- */

/**
 * Reads the first certificate of a PEM (or DER) file. Errors name the file
 * and say what it holds instead (a key, a CSR, nothing PEM).
 */
int mtls_cert_load(const char *path, X509 **out, mtls_err *err);

/** Reads every certificate of a PEM bundle (at least one) into a new stack. */
int mtls_cert_load_all(const char *path, STACK_OF(X509) * *out, mtls_err *err);

/** Reads a PEM (or DER) certificate signing request. */
int mtls_csr_load(const char *path, X509_REQ **out, mtls_err *err);

/**
 * What a PEM file holds, from its first "-----BEGIN x-----" line:
 * "CERTIFICATE", "CERTIFICATE REQUEST", "PRIVATE KEY", ... into buf, or ""
 * when the data is not PEM. Returns buf.
 */
char *mtls_pem_label(const char *data, char *buf, size_t size);

/** Encodes cert (or req) as PEM into a new buffer (*pem, free()). */
int mtls_cert_to_pem(X509 *cert, char **pem, size_t *len, mtls_err *err);
int mtls_csr_to_pem(X509_REQ *req, char **pem, size_t *len, mtls_err *err);

/** Encodes every certificate of certs, in order, as one PEM text (*pem, free()). */
int mtls_chain_to_pem(STACK_OF(X509) * certs, char **pem, size_t *len, mtls_err *err);

/* ---- names ------------------------------------------------------------ */

/**
 * Parses one subjectAltName: "DNS:name", "IP:addr", "email:addr", "URI:uri",
 * or a bare value typed automatically (an IPv4/IPv6 address is IP, anything
 * else a DNS name, checked for letters, digits, '-', '.', a leading "*.").
 * Appends it to *gens (created when NULL). Returns 0 or MTLS_E_INVALID.
 */
int mtls_san_add(GENERAL_NAMES **gens, const char *value, mtls_err *err);

/** Checks a common name: 1 to 64 characters, printable UTF-8. */
int mtls_cn_check(const char *cn, mtls_err *err);

/** A new X509_NAME "CN=cn" (caller frees). */
int mtls_name_from_cn(const char *cn, X509_NAME **out, mtls_err *err);

/* ---- CSRs ------------------------------------------------------------- */

/**
 * Makes a CSR for key with subject CN=cn and, when sans is not NULL
 * (borrowed), a subjectAltName extension. Signed with SHA-256 (EC, RSA) or
 * pure Ed25519. *out owned by the caller.
 */
int mtls_csr_create(EVP_PKEY *key, const char *cn, const GENERAL_NAMES *sans, X509_REQ **out,
                    mtls_err *err);

/**
 * Checks that req is signed by its own key. path names it in the message:
 * "CSR 'x.csr' has a bad signature". Returns 0 or MTLS_E_VERIFY.
 */
int mtls_csr_check_signature(X509_REQ *req, const char *path, mtls_err *err);

/** The SANs requested in req (a new stack, or NULL when it asks for none). */
GENERAL_NAMES *mtls_csr_sans(X509_REQ *req);

/* ---- profiles and issuing --------------------------------------------- */

typedef enum mtls_profile {
    MTLS_PROFILE_CLIENT = 1, /* EKU clientAuth */
    MTLS_PROFILE_SERVER = 2, /* EKU serverAuth */
    MTLS_PROFILE_SUBCA = 3,  /* an intermediate CA: CA:TRUE, pathlen:0, no EKU */
} mtls_profile;

/** Parses "client" or "server". Returns 0 or MTLS_E_INVALID. */
int mtls_profile_parse(const char *name, mtls_profile *out, mtls_err *err);

/** "client", "server" or "ca" (static). */
const char *mtls_profile_name(mtls_profile profile);

#define MTLS_CA_DAYS_DEFAULT 3650
#define MTLS_LEAF_DAYS_DEFAULT 365
#define MTLS_DAYS_MAX 36500
#define MTLS_SKEW_SECONDS 300 /* notBefore this far back, for clock skew */

/** What to put in a leaf certificate. Pointers are borrowed. */
typedef struct mtls_issue {
    mtls_profile profile;
    const X509_NAME *subject;  /* the whole subject, e.g. from a CSR */
    EVP_PKEY *pubkey;          /* the certified key (only its public half is used) */
    const GENERAL_NAMES *sans; /* NULL or empty: none (server: the CN, when it is a host name
                                  or an address; mtls_ca_sign() refuses a server without SANs) */
    int days;                  /* 0: MTLS_LEAF_DAYS_DEFAULT; never past the CA's notAfter */
} mtls_issue;

/* ---- the CA folder ----------------------------------------------------
 *
 * A CA named by PREFIX lives in these files:
 *   PREFIX.crt          the CA certificate (PEM)
 *   PREFIX.key          its private key (PEM, 0600)
 *   PREFIX.index        what it issued, in `openssl ca`'s index.txt format:
 *                       V|R|E TAB notAfter TAB revoked[,reason] TAB SERIAL TAB unknown TAB /CN=..
 *   PREFIX.index.attr   "unique_subject = no" (for `openssl ca`)
 *   PREFIX.certs/       a copy of each issued certificate, SERIAL.pem
 *   PREFIX.lock         taken with flock(2) while the inventory changes
 *   PREFIX.crlnumber    the number of the next CRL, in hex (openssl ca's crlnumber)
 *   PREFIX.chain.crt    an intermediate CA only: its certificate and those above it,
 *                       up to but without the root
 * Serials are 128 random bits, positive (DER adds a zero octet when the top
 * bit is set), unique in the index.
 */

typedef struct mtls_ca mtls_ca;

/** One line of the inventory. */
typedef struct mtls_ca_record {
    char status;      /* 'V' valid, 'R' revoked, 'E' expired */
    char expiry[20];  /* notAfter as in the index: YYMMDDHHMMSSZ (or 4-digit year) */
    char revoked[64]; /* "YYMMDDHHMMSSZ[,reason]" or "" */
    char serial[84];  /* mtls_serial_hex() (as the openssl ca index writes it) */
    char *subject;    /* "/CN=localclient" (owned) */
} mtls_ca_record;

/** What a new CA looks like. */
typedef struct mtls_ca_opts {
    const char *cn;
    int days; /* 0: MTLS_CA_DAYS_DEFAULT */
    mtls_key_type key_type;
    int bits; /* 0: the key type's default */
} mtls_ca_opts;

/**
 * Makes a new self-signed CA in memory (key, certificate, empty
 * inventory) for the files at prefix; nothing is written until
 * mtls_ca_stage(). *out is freed with mtls_ca_free().
 */
int mtls_ca_generate(const char *prefix, const mtls_ca_opts *opts, mtls_ca **out, mtls_err *err);

/**
 * Stages every file of a CA made by mtls_ca_generate() (certificate, key,
 * index, index.attr, copies of what it signed since) into txn, and creates
 * the PREFIX.certs folder. The key is encrypted when key_password is not
 * NULL. The caller commits txn. Returns 0 or an error.
 */
int mtls_ca_stage(mtls_ca *ca, mtls_txn *txn, const char *key_password, mtls_err *err);

/**
 * After a failed commit of what mtls_ca_stage() staged: removes the
 * PREFIX.certs folder again when mtls_ca_stage() created it and it is
 * still empty. NULL-safe.
 */
void mtls_ca_unstage(mtls_ca *ca);

/**
 * Opens the CA at prefix: reads PREFIX.crt and PREFIX.key (decrypted with
 * key_password when encrypted) and checks that they belong together and
 * that the certificate is a CA. Errors name the file and what to do.
 */
int mtls_ca_open(const char *prefix, const char *key_password, mtls_ca **out, mtls_err *err);

/**
 * Like mtls_ca_open() without the key: certificate, inventory and chain
 * only, for reading (ca list). mtls_ca_key() is NULL; signing fails.
 */
int mtls_ca_open_public(const char *prefix, mtls_ca **out, mtls_err *err);

/** Frees ca (wiping its key). NULL-safe. */
void mtls_ca_free(mtls_ca *ca);

/** The CA certificate and key (borrowed, valid until mtls_ca_free()). */
X509 *mtls_ca_cert(const mtls_ca *ca);
EVP_PKEY *mtls_ca_key(const mtls_ca *ca);
const char *mtls_ca_prefix(const mtls_ca *ca);

/**
 * Signs a leaf certificate in memory: a fresh serial unique in the
 * inventory ca holds, the profile's extensions, validity from
 * MTLS_SKEW_SECONDS ago for issue->days (clamped to the CA's notAfter;
 * *clamped set to 1 then, when clamped is not NULL). The record is added to
 * ca's in-memory inventory only: use this for a CA that mtls_ca_stage()
 * writes, or go through mtls_ca_issue().
 */
int mtls_ca_sign(mtls_ca *ca, const mtls_issue *issue, X509 **out, int *clamped, mtls_err *err);

/**
 * Called by mtls_ca_issue() with the inventory lock held, after the
 * certificate is recorded: write the outputs here. A negative return undoes
 * the record (the previous inventory is put back).
 */
typedef int (*mtls_ca_deliver_fn)(void *arg, X509 *cert, mtls_err *err);

/**
 * Issues a certificate from an opened CA, safely under concurrency: takes
 * an exclusive flock on PREFIX.lock, re-reads PREFIX.index, signs
 * (mtls_ca_sign), writes PREFIX.certs/SERIAL.pem and the new index
 * atomically (temp + rename), then calls deliver (may be NULL). *out (may
 * be NULL) receives the certificate, owned by the caller.
 */
int mtls_ca_issue(mtls_ca *ca, const mtls_issue *issue, mtls_ca_deliver_fn deliver, void *arg,
                  X509 **out, int *clamped, mtls_err *err);

/** The records of ca's inventory as last read or changed (borrowed). */
const mtls_ca_record *mtls_ca_records(const mtls_ca *ca, size_t *n);

/** Re-reads PREFIX.index (another process may have changed it). */
int mtls_ca_reload(mtls_ca *ca, mtls_err *err);

/**
 * A CA object for a certificate and key already in memory (both up-ref'd,
 * not consumed), e.g. an intermediate just signed, so that mtls_ca_stage()
 * can write it. chain (borrowed, may be NULL) is the intermediates above
 * it without the root; it is copied.
 */
int mtls_ca_from(const char *prefix, X509 *cert, EVP_PKEY *key, STACK_OF(X509) * chain,
                 mtls_ca **out, mtls_err *err);

/**
 * The CA's own chain: for an intermediate its certificate followed by the
 * intermediates above it (from PREFIX.chain.crt), for a root NULL.
 * Borrowed.
 */
STACK_OF(X509) * mtls_ca_chain(const mtls_ca *ca);

/** The copy of rec's certificate in PREFIX.certs/ (caller frees), if there is one. */
int mtls_ca_record_cert(const mtls_ca *ca, const mtls_ca_record *rec, X509 **out, mtls_err *err);

/** Parses an index or ASN.1 time ("YYMMDDHHMMSSZ" or "YYYYMMDDHHMMSSZ"). Returns 0 or -1. */
int mtls_index_time(const char *text, time_t *out);

/**
 * Normalises a serial typed by a person ("serial=0a:1b", "0A1B", "a1b")
 * to the index's form (upper-case hex, whole bytes). Returns 0 or
 * MTLS_E_INVALID.
 */
int mtls_serial_normalize(const char *in, char *out, size_t size, mtls_err *err);

/* CRL reason codes (RFC 5280), as `openssl ca -crl_reason` names them. */
#define MTLS_REASON_NONE (-1) /* no reason given: no reasonCode in the CRL */

/** Parses "keyCompromise", "superseded", ... (any case). Returns 0 or MTLS_E_INVALID. */
int mtls_crl_reason_parse(const char *name, int *code, mtls_err *err);

/** "keyCompromise" for 1, ...; "unspecified" for unknown codes (static). */
const char *mtls_crl_reason_name(int code);

/** The reason of a CRL entry (borrowed) by name (static), or NULL when it has none. */
const char *mtls_crl_entry_reason(const X509_REVOKED *rev);

/**
 * Marks a certificate revoked in the inventory (under the lock, index
 * rewritten atomically): the one with serial (normalised), or cert's
 * (borrowed; then it must have been issued by this CA, and is added to the
 * inventory first when it is not in it, e.g. made by openssl before).
 * reason is a CRL reason code or MTLS_REASON_NONE. *rec_out (may be NULL)
 * receives a copy of the record (subject owned by the caller: free()).
 * Errors: MTLS_E_NOTFOUND (not in the index), MTLS_E_EXISTS (already
 * revoked), MTLS_E_INVALID (cert from another CA).
 */
int mtls_ca_revoke(mtls_ca *ca, const char *serial, X509 *cert, int reason, mtls_ca_record *rec_out,
                   mtls_err *err);

/**
 * Makes a CRL (v2) of every revoked certificate in the inventory, signed by
 * the CA: lastUpdate now, nextUpdate in days, reason codes, AKI, and a CRL
 * number from PREFIX.crlnumber, which is increased first (under the lock,
 * so numbers only grow; a failure later leaves a gap, never a repeat).
 * *out is owned by the caller; *number receives its number.
 */
int mtls_ca_crl(mtls_ca *ca, int days, X509_CRL **out, long *number, mtls_err *err);

/** Reads a PEM (or DER) CRL. */
int mtls_crl_load(const char *path, X509_CRL **out, mtls_err *err);

/** Encodes a CRL as PEM (*pem, free()). */
int mtls_crl_to_pem(X509_CRL *crl, char **pem, size_t *len, mtls_err *err);

/* ---- chains ------------------------------------------------------------ */

/**
 * Whether issuer issued cert: the names, key identifiers and key usage
 * (X509_check_issued()) and the signature. Returns X509_V_OK (0), or the
 * X509_V_ERR_ code of the first check that fails
 * (X509_V_ERR_CERT_SIGNATURE_FAILURE for the signature).
 */
int mtls_cert_issued_by(X509 *cert, X509 *issuer);

/**
 * Checks that chain (borrowed; may be NULL or empty) links up from cert:
 * its first certificate issued cert, each next one the one before it (a
 * root may end it). Returns 0, or MTLS_E_INVALID with a sentence naming the
 * certificate that did not issue the one below it and why (another issuer
 * name; the same name with another key; no keyCertSign).
 */
int mtls_chain_check(X509 *cert, STACK_OF(X509) * chain, mtls_err *err);

/* ---- PKCS#12 ----------------------------------------------------------- */

/**
 * Bundles cert, key (borrowed; must match) and chain (borrowed, may be
 * NULL: intermediates to include, in order from cert's issuer up; refused
 * unless they link, see mtls_chain_check()) as PKCS#12 DER protected by
 * password (required, non-empty). Modern: PBES2/PBKDF2/AES-256-CBC, HMAC-SHA-256;
 * legacy: pbeWithSHA1And3-KeyTripleDES-CBC and a SHA-1 MAC for old
 * importers. The friendly name is the subject's CN. *der is freed with
 * OPENSSL_free() (after mtls_cleanse()).
 */
int mtls_p12_create(X509 *cert, EVP_PKEY *key, STACK_OF(X509) * chain, const char *password,
                    int legacy, unsigned char **der, size_t *len, mtls_err *err);

/* ---- verification ----------------------------------------------------- */

/** What mtls_verify() checks beyond the chain, signatures and dates. */
typedef struct mtls_verify_opts {
    int purpose;               /* 0 any, or an mtls_profile: client or server authentication */
    STACK_OF(X509_CRL) * crls; /* NULL, or CRLs (borrowed): then every certificate of the
                                  chain is checked against its issuer's CRL, which must be
                                  there and current */
    const char *host;          /* NULL, or a host name / IP address that must be in the SANs */
    time_t at;                 /* 0: now; else verify as of this time */
} mtls_verify_opts;

/**
 * Verifies leaf (borrowed) against the trusted certificates (borrowed;
 * every one a trust anchor), with untrusted (may be NULL) as intermediates.
 * Returns 0 when valid, or MTLS_E_VERIFY with err->msg one plain sentence
 * naming the failed check (issuer not trusted, expired on DATE, not valid
 * until DATE, wrong purpose, host not in SANs, signature invalid, revoked
 * with serial and date, CRL missing or expired), or
 * another error code when verification could not run.
 */
int mtls_verify(X509 *leaf, STACK_OF(X509) * untrusted, STACK_OF(X509) * trusted,
                const mtls_verify_opts *opts, mtls_err *err);

/** Not an X509_V_ERR_* code: the peer sent no certificate at all. */
#define MTLS_VERIFY_NO_CERT (-1)

/**
 * What is known about one verification failure, for mtls_verify_words().
 * Zero it, then fill what you know; strings are borrowed, NULL or "" where
 * unknown.
 */
typedef struct mtls_verify_failure {
    int code;           /* X509_V_ERR_*, or MTLS_VERIFY_NO_CERT */
    int depth;          /* where in the chain: 0 the leaf */
    const char *cert;   /* the caller's name for it: "certificate 'CN=bob'" */
    const char *issuer; /* its issuer's name, "CN=My CA" */
    const char *serial; /* mtls_serial_hex() */
    time_t not_before;  /* its validity, 0: unknown */
    time_t not_after;
    const char *purpose;    /* the purpose checked: "TLS client authentication" */
    const char *usage;      /* its extended key usages; "" when it has none, NULL: unknown */
    const char *host;       /* the host name that was asked for */
    const char *sans;       /* its SANs as one line, "" when it has none */
    const char *crl_issuer; /* the CRL involved (expired, not yet valid), if known */
    time_t crl_next;        /* that CRL's nextUpdate and lastUpdate */
    time_t crl_last;
    time_t revoked_at;       /* the revocation date, 0: unknown */
    const char *revoked_why; /* the CRL entry's reason, NULL: none given */
    int namesake;            /* 1: a trusted CA has the issuer's name, but another key */
    const char *hint;        /* appended to a host name mismatch ("; only its CN matches..") */
} mtls_verify_failure;

/**
 * The one sentence for a verification failure, from the one table of
 * reasons keyed by verify code (src/pki/verify_words.c): "issuer not
 * trusted: certificate 'CN=x' was issued by 'CN=y', which is not a trusted
 * CA", "{cert} expired on DATE", "{cert} (serial 08AB..) was revoked by its
 * CA 'CN=y' on DATE (keyCompromise)". Writes into buf and returns it.
 */
char *mtls_verify_words(const mtls_verify_failure *f, char *buf, size_t size);

/**
 * The TLS alert OpenSSL sends when it refuses a peer for code, from the
 * same table ("certificate_revoked", "unknown_ca"); for
 * MTLS_VERIFY_NO_CERT "certificate_required" under TLS 1.3 (tls13 != 0),
 * else "handshake_failure". NULL for X509_V_OK. Static strings.
 */
const char *mtls_verify_alert(int code, int tls13);

/** Verification failures grouped for counting (metrics): a small, fixed set. */
enum mtls_verify_reason {
    MTLS_VERIFY_R_NO_CERTIFICATE = 0,
    MTLS_VERIFY_R_UNKNOWN_CA,
    MTLS_VERIFY_R_EXPIRED,
    MTLS_VERIFY_R_NOT_YET_VALID,
    MTLS_VERIFY_R_WRONG_PURPOSE,
    MTLS_VERIFY_R_REVOKED,
    MTLS_VERIFY_R_BAD_SIGNATURE,
    MTLS_VERIFY_R_NAME_MISMATCH,
    MTLS_VERIFY_R_CRL_MISSING,
    MTLS_VERIFY_R_CRL_EXPIRED,
    MTLS_VERIFY_R_CRL_NOT_YET_VALID,
    MTLS_VERIFY_R_CRL_INVALID,
    MTLS_VERIFY_R_WEAK,
    MTLS_VERIFY_R_REJECTED,
    MTLS_VERIFY_R_INTERNAL,
    MTLS_VERIFY_R_OTHER,
    MTLS_VERIFY_REASONS
};

/**
 * The group of a verify code (X509_V_ERR_*, MTLS_VERIFY_NO_CERT), from the
 * same table as the words and the alert.
 */
enum mtls_verify_reason mtls_verify_reason_of(int code);

/** The group's label: "no_certificate", "unknown_ca", "expired", "revoked", ... Static. */
const char *mtls_verify_reason_label(enum mtls_verify_reason reason);

/**
 * The plain sentence for a failed X509_STORE_CTX (best called from a
 * verify callback, where the CRL involved is still known: the revoked
 * serial's date, an expired CRL's issuer; after X509_verify_cert() those
 * details are gone): which certificate (subject, its place in the chain),
 * which check, why, worded by mtls_verify_words(). purpose is the
 * mtls_profile that was checked (0: none), host the expected host name or
 * NULL, peer whose chain it is ("client": "client certificate 'CN=x'",
 * "CA certificate 'CN=y' in the client's chain"; NULL: "certificate
 * 'CN=x'"). Writes into buf and returns it. The tls layer uses this for
 * its handshake logs.
 */
char *mtls_verify_reason(X509_STORE_CTX *ctx, int purpose, const char *host, const char *peer,
                         char *buf, size_t size);

/** Formats t as "2027-11-26 23:59:59 UTC" into buf; returns buf. */
char *mtls_time_human(time_t t, char *buf, size_t size);

/** Formats t as ISO 8601 UTC, "2027-11-26T23:59:59Z", into buf; returns buf. */
char *mtls_time_iso(time_t t, char *buf, size_t size);

/** An ASN.1 time as a time_t; 0 when t is NULL or unreadable. */
time_t mtls_asn1_time(const ASN1_TIME *t);

/**
 * Days from now until t, rounded to the nearest day (364.6 days: 365),
 * negative once t has passed; never 0 except at t itself (1 hour left: 1;
 * 1 hour ago: -1). Exact times belong in ISO timestamps or seconds.
 */
long mtls_days_left(time_t t, time_t now);

/**
 * "expires in 365 days", "expires in less than a day", "expired less than a
 * day ago", "expired 3 days ago" (days as mtls_days_left() counts them) into
 * buf; returns buf.
 */
char *mtls_expiry_words(time_t t, time_t now, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif
