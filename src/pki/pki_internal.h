/* pki_internal.h - helpers shared by the files of src/pki, not exported. */
#ifndef MTLS_PKI_INTERNAL_H
#define MTLS_PKI_INTERNAL_H

#include <openssl/bio.h>
#include <openssl/evp.h>

#include "mtls/base.h"

/** Copies a memory BIO's content into a new NUL-terminated buffer (free()). */
int mtls__bio_to_buf(BIO *bio, char **out, size_t *len, mtls_err *err);

/** "certificate", "private key", "certificate request", ... for a PEM label. */
const char *mtls__label_noun(const char *label);

/** SHA-256 for EC and RSA keys, NULL (the key's own hash) for Ed25519. */
const EVP_MD *mtls__sign_md(EVP_PKEY *key);

/** 0 when days is 1 to MTLS_DAYS_MAX, else MTLS_E_INVALID ("--days must be between ..."). */
int mtls__days_check(int days, mtls_err *err);

/* ---- the CA folder, shared by ca.c and crl.c ---- */
struct mtls_ca;

/** PREFIX + suffix in a new string (free()), or NULL. */
char *mtls__ca_path(const struct mtls_ca *ca, const char *suffix);

/** Takes PREFIX.lock exclusively (flock); returns the descriptor to close(), or -1. */
int mtls__ca_lock(const struct mtls_ca *ca, mtls_err *err);

/** Replaces the in-memory records with those of text (index.txt format,
 * changed in place); path names it in errors. Used by the fuzz target. */
int mtls__ca_index_parse(struct mtls_ca *ca, char *text, const char *path, mtls_err *err);

/** Replaces the in-memory records with PREFIX.index (missing: empty). */
int mtls__ca_index_read(struct mtls_ca *ca, mtls_err *err);

/** The records as index.txt text (free()). */
int mtls__ca_index_format(const struct mtls_ca *ca, char **out, size_t *len, mtls_err *err);

/** Writes PREFIX+suffix atomically, replacing the old file. */
int mtls__ca_write_state(const struct mtls_ca *ca, const char *suffix, const char *text, size_t len,
                         mtls_err *err);

#endif
