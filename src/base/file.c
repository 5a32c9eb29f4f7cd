/* Whole-file reads and all-or-nothing writes. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mtls/base.h"

int mtls_file_exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

int mtls_file_read(const char *path, size_t max, unsigned char **out, size_t *len, mtls_err *err)
{
    struct stat st;
    unsigned char *buf = NULL;
    size_t used = 0;
    int fd, rc = MTLS_E_IO;

    *out = NULL;
    *len = 0;
    /* O_NONBLOCK: opening a FIFO nobody writes to must not hang; it is
     * refused below as not a regular file (regular files ignore the flag). */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return mtls_err_set(err, MTLS_E_NOTFOUND, "cannot read '%s': no such file", path);
        return mtls_err_sys(err, MTLS_E_IO, errno, "cannot read '%s'", path);
    }
    if (fstat(fd, &st) != 0) {
        rc = mtls_err_sys(err, MTLS_E_IO, errno, "cannot read '%s'", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = mtls_err_set(err, MTLS_E_INVALID, "cannot read '%s': not a regular file", path);
        goto out;
    }
    if ((size_t)st.st_size > max) {
        rc =
            mtls_err_set(err, MTLS_E_INVALID, "cannot read '%s': larger than %zu bytes", path, max);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "cannot read '%s': out of memory", path);
        goto out;
    }
    /* Read until EOF rather than trusting st_size: the file may change. */
    for (;;) {
        ssize_t n;

        if (used == (size_t)st.st_size) {
            char probe;

            n = read(fd, &probe, 1);
            if (n == 0)
                break;
            if (n > 0) {
                rc =
                    mtls_err_set(err, MTLS_E_IO, "cannot read '%s': file grew while reading", path);
                goto out;
            }
        } else {
            n = read(fd, buf + used, (size_t)st.st_size - used);
            if (n == 0)
                break;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = mtls_err_sys(err, MTLS_E_IO, errno, "cannot read '%s'", path);
            goto out;
        }
        used += (size_t)n;
    }
    buf[used] = '\0';
    *out = buf;
    *len = used;
    buf = NULL;
    rc = 0;
out:
    if (buf != NULL)
        mtls_free_secret(buf, (size_t)st.st_size + 1);
    close(fd);
    return rc;
}

/* ---- all-or-nothing file sets ---------------------------------------- */

void mtls_txn_init(mtls_txn *txn)
{
    memset(txn, 0, sizeof(*txn));
}

static int write_all(int fd, const unsigned char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* fsyncs the folder holding path, so that a rename or link survives a crash. */
static void sync_parent(const char *path)
{
    char *copy = strdup(path);
    int fd;

    if (copy == NULL)
        return;
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(copy);
}

static char *temp_name_for(const char *path)
{
    char *copy_dir = strdup(path), *copy_base = strdup(path), *tmp = NULL;
    size_t n;

    if (copy_dir == NULL || copy_base == NULL)
        goto out;
    n = strlen(path) + 32;
    tmp = malloc(n);
    if (tmp != NULL)
        snprintf(tmp, n, "%s/.%s.tmp-XXXXXX", dirname(copy_dir), basename(copy_base));
out:
    free(copy_dir);
    free(copy_base);
    return tmp;
}

int mtls_txn_add(mtls_txn *txn, const char *path, const void *data, size_t len, unsigned mode,
                 mtls_err *err)
{
    mtls_txn_file *f;
    int fd = -1, rc;

    for (size_t i = 0; i < txn->n; i++) {
        if (strcmp(txn->files[i].path, path) == 0)
            return mtls_err_set(err, MTLS_E_EXISTS, "'%s' is named twice", path);
    }
    if (txn->n == txn->cap) {
        size_t cap = txn->cap ? txn->cap * 2 : 8;
        mtls_txn_file *grown = realloc(txn->files, cap * sizeof(*grown));

        if (grown == NULL)
            return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        txn->files = grown;
        txn->cap = cap;
    }
    f = &txn->files[txn->n];
    memset(f, 0, sizeof(*f));
    f->path = strdup(path);
    f->tmp = temp_name_for(path);
    if (f->path == NULL || f->tmp == NULL) {
        free(f->path);
        free(f->tmp);
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    }
    fd = mkostemp(f->tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = mtls_err_sys(err, MTLS_E_IO, errno, "cannot write '%s'", path);
        free(f->path);
        free(f->tmp);
        return rc;
    }
    txn->n++;
    /* Set the final mode before any byte of a secret lands in the file. */
    if (fchmod(fd, (mode_t)mode) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        rc = mtls_err_sys(err, MTLS_E_IO, errno, "cannot write '%s'", path);
        close(fd);
        return rc;
    }
    if (close(fd) != 0)
        return mtls_err_sys(err, MTLS_E_IO, errno, "cannot write '%s'", path);
    return 0;
}

static void txn_unplace(mtls_txn *txn)
{
    for (size_t i = 0; i < txn->n; i++) {
        if (txn->files[i].placed) {
            unlink(txn->files[i].path);
            txn->files[i].placed = 0;
        }
    }
}

int mtls_txn_commit(mtls_txn *txn, int force, mtls_err *err)
{
    int rc;

    if (!force) {
        for (size_t i = 0; i < txn->n; i++) {
            if (mtls_file_exists(txn->files[i].path))
                return mtls_err_set(err, MTLS_E_EXISTS,
                                    "'%s' already exists: pass --force to overwrite it",
                                    txn->files[i].path);
        }
    }
    for (size_t i = 0; i < txn->n; i++) {
        mtls_txn_file *f = &txn->files[i];

        if (force) {
            if (rename(f->tmp, f->path) != 0)
                goto fail;
        } else {
            /* link(2) refuses to replace a file that appeared meanwhile. */
            if (link(f->tmp, f->path) != 0)
                goto fail;
            f->placed = 1;
            unlink(f->tmp);
        }
        free(f->tmp);
        f->tmp = NULL;
        sync_parent(f->path);
        continue;
    fail:
        if (errno == EEXIST)
            rc = mtls_err_set(err, MTLS_E_EXISTS,
                              "'%s' already exists: pass --force to overwrite it", f->path);
        else
            rc = mtls_err_sys(err, MTLS_E_IO, errno, "cannot write '%s'", f->path);
        txn_unplace(txn);
        return rc;
    }
    /* Everything is in place: nothing to undo any more. */
    for (size_t i = 0; i < txn->n; i++)
        txn->files[i].placed = 0;
    return 0;
}

void mtls_txn_release(mtls_txn *txn)
{
    if (txn == NULL)
        return;
    for (size_t i = 0; i < txn->n; i++) {
        if (txn->files[i].tmp != NULL)
            unlink(txn->files[i].tmp);
        free(txn->files[i].tmp);
        free(txn->files[i].path);
    }
    free(txn->files);
    mtls_txn_init(txn);
}

int mtls_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode, int force,
                           mtls_err *err)
{
    mtls_txn txn;
    int rc;

    mtls_txn_init(&txn);
    rc = mtls_txn_add(&txn, path, data, len, mode, err);
    if (rc == 0)
        rc = mtls_txn_commit(&txn, force, err);
    mtls_txn_release(&txn);
    return rc;
}
