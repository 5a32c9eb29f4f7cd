/*
 * mtls/base.h - errors as values and safe file I/O, shared by every layer.
 *
 * Nothing here includes OpenSSL or libuv headers, so that every layer
 * (src/http included) may use it.
 */
#ifndef MTLS_BASE_H
#define MTLS_BASE_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: 0 is success, every failure is negative. */
enum {
    MTLS_OK = 0,
    MTLS_E_IO = -1,       /* a file or socket operation failed */
    MTLS_E_INVALID = -2,  /* bad input: a value, a file's content */
    MTLS_E_EXISTS = -3,   /* refusing to overwrite an existing file */
    MTLS_E_CRYPTO = -4,   /* an OpenSSL call failed */
    MTLS_E_NOMEM = -5,    /* out of memory */
    MTLS_E_VERIFY = -6,   /* a certificate did not verify */
    MTLS_E_NOTFOUND = -7, /* a named thing does not exist */
    MTLS_E_BUSY = -8,     /* a resource is in use (port, lock) */
};

#define MTLS_ERR_MSG_MAX 512

/**
 * An error as a value: a negative code and a one-line message meant for a
 * person, in git's style ("cannot read 'server.key': no such file").
 * Caller-owned; no cleanup needed.
 */
typedef struct mtls_err {
    int code;
    char msg[MTLS_ERR_MSG_MAX];
} mtls_err;

/** Resets err to "no error". NULL-safe. */
void mtls_err_clear(mtls_err *err);

/**
 * Records an error. err may be NULL (the message is then dropped).
 * Returns code, so that callers can write `return mtls_err_set(...)`.
 */
int mtls_err_set(mtls_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Like mtls_err_set(), then appends ": " and the reason of the most recent
 * OpenSSL error on this thread's queue (when there is one), and empties the
 * queue so that a later error is not blamed on this one.
 */
int mtls_err_ssl(mtls_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Like mtls_err_set(), then appends ": " and strerror(errnum).
 */
int mtls_err_sys(mtls_err *err, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Wipes len bytes at p in a way the compiler cannot remove. NULL-safe. */
void mtls_cleanse(void *p, size_t len);

/**
 * A growing byte string, always NUL-terminated once something was added.
 * Zero it, add to it, then take p (the caller frees it) or release it. An
 * allocation failure sets failed and makes later adds do nothing, so a
 * builder checks once at the end.
 */
typedef struct mtls_strbuf {
    char *p;
    size_t len, cap;
    int failed;
} mtls_strbuf;

/** Appends n bytes at s. */
void mtls_strbuf_add(mtls_strbuf *b, const char *s, size_t n);

/** Appends the string s. */
void mtls_strbuf_str(mtls_strbuf *b, const char *s);

/** Frees what b holds and zeroes it. NULL-safe. */
void mtls_strbuf_release(mtls_strbuf *b);

/** Wipes then frees a buffer of len bytes. NULL-safe. */
void mtls_free_secret(void *p, size_t len);

/* ---- files ---------------------------------------------------------- */

/** File modes used across the tool. */
#define MTLS_MODE_SECRET 0600 /* private keys, passwords */
#define MTLS_MODE_PUBLIC 0644 /* certificates, CSRs, CRLs */

/**
 * Reads a whole regular file of at most max bytes into a new buffer that
 * ends with a NUL byte (not counted in *len). The caller owns *out and frees
 * it with free() (or mtls_free_secret() for key material).
 * Returns 0, or MTLS_E_NOTFOUND / MTLS_E_IO / MTLS_E_INVALID (too large,
 * not a regular file) with a message naming the file.
 */
int mtls_file_read(const char *path, size_t max, unsigned char **out, size_t *len, mtls_err *err);

/** Returns 1 when something exists at path (file, link, folder), else 0. */
int mtls_file_exists(const char *path);

/**
 * A set of files written all at once or not at all.
 *
 * mtls_txn_add() writes each file's content to a temporary file beside its
 * destination (same folder, created with the final mode, fsynced).
 * mtls_txn_commit() then moves them into place: without force it first
 * checks that no destination exists, and links each temporary file to its
 * name (link(2) fails rather than overwrite, so a file created meanwhile is
 * never clobbered); if any step fails, the files already placed are removed
 * again. With force it renames over existing files (atomic for each file).
 * mtls_txn_release() removes whatever temporary files remain.
 *
 * Usage: mtls_txn t; mtls_txn_init(&t); add...; commit; mtls_txn_release(&t).
 */
typedef struct mtls_txn_file {
    char *path;
    char *tmp;
    int placed;
} mtls_txn_file;

typedef struct mtls_txn {
    mtls_txn_file *files;
    size_t n;
    size_t cap;
} mtls_txn;

void mtls_txn_init(mtls_txn *txn);

/**
 * Stages data (len bytes, borrowed) for path with the given mode.
 * Returns 0, MTLS_E_EXISTS when path is already staged in this set, or
 * MTLS_E_IO / MTLS_E_NOMEM with a message naming the file.
 */
int mtls_txn_add(mtls_txn *txn, const char *path, const void *data, size_t len, unsigned mode,
                 mtls_err *err);

/**
 * Puts every staged file in place. Returns 0; MTLS_E_EXISTS naming the first
 * destination that exists (without force, before anything is placed); or
 * MTLS_E_IO. On failure no destination is left half-written.
 */
int mtls_txn_commit(mtls_txn *txn, int force, mtls_err *err);

/** Removes leftover temporary files and frees the set. NULL-safe. */
void mtls_txn_release(mtls_txn *txn);

/**
 * Writes one file atomically: mtls_txn_add() + mtls_txn_commit() for a
 * single file. Returns as mtls_txn_commit().
 */
int mtls_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode, int force,
                           mtls_err *err);

#ifdef __cplusplus
}
#endif

#endif
