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

#endif
