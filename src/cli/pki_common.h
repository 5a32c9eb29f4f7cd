/*
 * pki_common.h - what the PKI commands (init, ca, key, csr, cert) share:
 * parsing of key types, profiles and SANs, and printing a certificate.
 */
#ifndef MTLS_CLI_PKI_COMMON_H
#define MTLS_CLI_PKI_COMMON_H

#include <signal.h>
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

/**
 * Checks that path can be written: not a folder, not existing unless force,
 * in a folder that exists and is writable. Returns 0 or an error naming it.
 */
int pki_check_new(const char *path, int force, mtls_err *err);

/** pki_check_new() without the folder checks (for a folder made later). */
int pki_check_target(const char *path, int force, mtls_err *err);

/** mtls_expiry_words() as of now: "expires in 365 days", "expired 3 days ago". */
char *pki_expiry_words(time_t not_after, char *buf, size_t size);

/** --password-file and --encrypt, for the commands that read or write keys. */
struct pki_secret {
    const char *password_file;
    int encrypt;
    char *password; /* set by pki_secret_load(), freed by pki_secret_release() */
};

/* The option-table entries below are kept out of clang-format: versions 14
 * and 19 lay out a brace initializer inside a macro differently. */
// clang-format off
/* --password-file, worded for what the command does with keys. */
#define PKI_OPT_PASSWORD_FILE_AS(s, help_text)                                                     \
    {                                                                                              \
        "password-file", 0, CLI_STRING, &(s).password_file, "FILE", help_text, 0, 0                \
    }
/* Commands that read and write keys (cert issue, ca create --parent). */
#define PKI_OPT_PASSWORD_FILE(s)                                                                   \
    PKI_OPT_PASSWORD_FILE_AS(s, "password for encrypted keys, on the first line of FILE (default " \
                                "$MTLS_KEY_PASSWORD): decrypts the keys read; with --encrypt "     \
                                "also encrypts the key written")
/* Commands that only read a key (csr create, cert sign, crl create, ca revoke). */
#define PKI_OPT_PASSWORD_FILE_READ(s)                                                              \
    PKI_OPT_PASSWORD_FILE_AS(s, "password of an encrypted key, on the first line of FILE "         \
                                "(default $MTLS_KEY_PASSWORD)")
/* Commands that only write keys (key create, init). */
#define PKI_OPT_PASSWORD_FILE_WRITE(s)                                                             \
    PKI_OPT_PASSWORD_FILE_AS(s, "with --encrypt: the password, on the first line of FILE "         \
                                "(default $MTLS_KEY_PASSWORD)")
#define PKI_OPT_ENCRYPT(s)                                                                         \
    {                                                                                              \
        "encrypt", 0, CLI_FLAG, &(s).encrypt, NULL,                                                \
            "encrypt the private key written (AES-256-CBC, PKCS#8) with the password", 0, 0        \
    }
// clang-format on

/**
 * Reads the password (pki_password()). Returns 0, EXIT_FAIL (printed), or
 * EXIT_USAGE when --encrypt has no password.
 */
int pki_secret_load(const struct cli_spec *spec, struct pki_secret *s);

/** The password to encrypt written keys with: NULL without --encrypt. */
const char *pki_secret_for_writing(const struct pki_secret *s);

/** Wipes and frees the password. */
void pki_secret_release(struct pki_secret *s);

/**
 * The password for private keys: the first line of --password-file FILE
 * when path is not NULL, else $MTLS_KEY_PASSWORD when set, else NULL.
 * *out is freed with pki_password_free(). Returns 0, or prints the error
 * and returns EXIT_FAIL (unreadable or empty file).
 */
int pki_password(const char *path, char **out);

/** Wipes and frees a password from pki_password(). NULL-safe. */
void pki_password_free(char *password);

/**
 * Holds off SIGINT, SIGTERM, SIGHUP and SIGQUIT (Ctrl-C, kill, a closed
 * terminal) while a command writes files that belong together (an index and
 * the files it records, the ten files of init): an interruption then acts
 * once they are whole, or cleaned up. pki_release_signals() lets a held
 * signal act, ending the process as it would have. Safe to call when
 * nothing is held.
 */
struct pki_signals {
    sigset_t old;
    int held;
};
void pki_hold_signals(struct pki_signals *s);
void pki_release_signals(struct pki_signals *s);

#endif
