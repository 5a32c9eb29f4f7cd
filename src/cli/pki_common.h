/*
 * pki_common.h - what the PKI commands (init, ca, key, csr, cert) share:
 * parsing of key types, profiles and SANs, and printing a certificate.
 */
#ifndef MTLS_CLI_PKI_COMMON_H
#define MTLS_CLI_PKI_COMMON_H

#include <stdio.h>

#include "cli.h"
#include "mtls/certinfo.h"
#include "mtls/pki.h"

/** Parses --key-type (NULL: ec); a bad value is a usage error (returns EXIT_USAGE). */
int pki_key_type_arg(const struct cli_spec *spec, const char *value, mtls_key_type *out);

/** Parses --profile (required); a bad value is a usage error. */
int pki_profile_arg(const struct cli_spec *spec, const char *value, mtls_profile *out);

/** Adds each --san to *gens; a bad value is a usage error. */
int pki_sans_arg(const struct cli_spec *spec, const struct cli_list *sans, GENERAL_NAMES **gens);

/** "DNS:localhost, IP:127.0.0.1" for gens (may be NULL) into buf; returns buf. */
char *pki_sans_line(const GENERAL_NAMES *gens, char *buf, size_t size);

/** dir/name in a new string ("name" alone when dir is "."), or NULL. */
char *pki_path_join(const char *dir, const char *name);

/** Fails with the txn message when path exists and force is not set. */
int pki_check_new(const char *path, int force, mtls_err *err);

/** "expires in 364 days", "expired 3 days ago", "expires today" into buf. */
char *pki_expiry_words(time_t not_after, char *buf, size_t size);

#endif
