/*
 * mtls/certinfo.h - what a certificate says, as plain C strings: the
 * identity that logs, /whoami, `cert show`, `probe` and `ca list` print.
 *
 * Part of the pki layer (src/pki/certinfo.c). Needs OpenSSL types.
 */
#ifndef MTLS_CERTINFO_H
#define MTLS_CERTINFO_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cjson/cJSON.h>

#include "mtls/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MTLS_NAME_MAX 512

/** Room for any serial mtls_serial_hex() writes in full (41 bytes; RFC 5280 allows 20). */
#define MTLS_SERIAL_HEX_MAX 84

/**
 * The one way serial numbers are written, everywhere (cert show, /whoami,
 * the access log, the system log, the CA's index and file names, CRL
 * listings, verification sentences): upper-case hex, two digits per byte of
 * the number, the leading zero kept, no colons: what `openssl x509 -serial`
 * prints ("08882C9F...", "00" for zero, "-" before a negative one).
 * Writes into buf (at least MTLS_SERIAL_HEX_MAX bytes for any serial; a
 * shorter buffer gets whole bytes only) and returns it; NULL serial: "?".
 */
char *mtls_serial_hex(const ASN1_INTEGER *serial, char *buf, size_t size);

/** One subjectAltName entry, typed the way OpenSSL prints it. */
typedef struct mtls_san {
    const char *type; /* "DNS", "IP", "email", "URI", "other" (static string) */
    char *value;      /* "localhost", "127.0.0.1", "::1" (owned) */
} mtls_san;

/**
 * The facts of one certificate. Filled by mtls_cert_info_init(), released
 * by mtls_cert_info_release(). All strings are owned by the struct.
 */
typedef struct mtls_cert_info {
    char subject[MTLS_NAME_MAX]; /* one line, RFC 2253 order reversed like openssl: "CN=localclient"
                                    or "C=JP, O=Example, CN=x" */
    char issuer[MTLS_NAME_MAX];
    char subject_cn[256]; /* the last CN of the subject, or "" */
    char issuer_cn[256];
    char serial_hex[MTLS_SERIAL_HEX_MAX]; /* mtls_serial_hex(): "08882C..." */
    char sha256[96];                      /* SHA-256 of the DER, "AB:CD:..." (32 pairs) */
    time_t not_before;
    time_t not_after;
    char not_before_iso[32]; /* "2026-11-26T23:59:59Z" */
    char not_after_iso[32];
    char key_type[16];       /* "EC", "RSA", "ED25519", "ED448", or "unknown" */
    int key_bits;            /* 256, 2048, ... */
    char key_curve[32];      /* "prime256v1" for EC, else "" */
    char sig_alg[64];        /* "ecdsa-with-SHA256", "sha256WithRSAEncryption" */
    int version;             /* 1 or 3 */
    int is_ca;               /* basicConstraints CA:TRUE */
    long path_len;           /* pathLenConstraint, or -1 when absent */
    int self_signed;         /* issuer == subject and the signature verifies with its own key */
    char key_usage[160];     /* "Digital Signature, Key Encipherment" or "" */
    char ext_key_usage[160]; /* "TLS Web Client Authentication" or "" */
    mtls_san *sans;
    size_t n_sans;
} mtls_cert_info;

/**
 * Fills info from cert (borrowed; not kept). Returns 0, or MTLS_E_NOMEM /
 * MTLS_E_CRYPTO with err set. On failure info needs no release.
 */
int mtls_cert_info_init(mtls_cert_info *info, X509 *cert, mtls_err *err);

/** Frees what info owns. NULL-safe, and safe on a zeroed struct. */
void mtls_cert_info_release(mtls_cert_info *info);

/**
 * The SANs as one line: "DNS:localhost, IP:127.0.0.1" into buf (always
 * NUL-terminated, truncated with "..." when too small). Returns buf.
 */
char *mtls_cert_info_sans_line(const mtls_cert_info *info, char *buf, size_t size);

/** mtls_cert_info_sans_line() for any list of SANs. */
char *mtls_sans_line(const mtls_san *sans, size_t n, char *buf, size_t size);

/**
 * The names of gens (borrowed; NULL or empty gives none) as a new array
 * *sans of *n entries, freed with mtls_sans_free(). Returns 0 or
 * MTLS_E_NOMEM.
 */
int mtls_sans_from_names(const GENERAL_NAMES *gens, mtls_san **sans, size_t *n, mtls_err *err);

/** Frees what mtls_sans_from_names() made. NULL-safe. */
void mtls_sans_free(mtls_san *sans, size_t n);

/**
 * A new cJSON object with every field above (stable names: subject, issuer,
 * subject_cn, issuer_cn, serial, sha256, not_before, not_after, key_type,
 * key_bits, key_curve, signature_algorithm, version, is_ca, path_len,
 * self_signed, key_usage[], extended_key_usage[], sans[{type,value}]).
 * The caller owns it (cJSON_Delete). NULL when out of memory.
 */
cJSON *mtls_cert_info_to_json(const mtls_cert_info *info);

/**
 * Writes a one-line name (as in info->subject) of name into buf. Returns buf.
 */
char *mtls_name_oneline(const X509_NAME *name, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif
