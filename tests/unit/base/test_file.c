#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mtls/base.h"

static char dir[] = "/tmp/mtls-test-XXXXXX";

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static int count_entries(void)
{
    char cmd[160];
    FILE *p;
    int n = -1;

    snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    cr_assert_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

TestSuite(file, .init = setup, .fini = teardown);

Test(file, write_then_read_roundtrip_with_mode)
{
    char path[256];
    unsigned char *buf;
    size_t len;
    struct stat st;
    mtls_err err;

    snprintf(path, sizeof(path), "%s/key.pem", dir);
    cr_assert_eq(mtls_file_write_atomic(path, "secret\n", 7, MTLS_MODE_SECRET, 0, &err), 0);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    cr_assert_eq(mtls_file_read(path, 1024, &buf, &len, &err), 0);
    cr_assert_eq(len, 7);
    cr_assert_str_eq((char *)buf, "secret\n");
    free(buf);
    cr_assert_eq(count_entries(), 1, "a temporary file was left behind");
}

Test(file, refuses_overwrite_without_force)
{
    char path[256];
    unsigned char *buf;
    size_t len;
    mtls_err err;

    snprintf(path, sizeof(path), "%s/a", dir);
    cr_assert_eq(mtls_file_write_atomic(path, "one", 3, 0644, 0, &err), 0);
    cr_assert_eq(mtls_file_write_atomic(path, "two", 3, 0644, 0, &err), MTLS_E_EXISTS);
    cr_assert(strstr(err.msg, "--force") != NULL, "got '%s'", err.msg);
    cr_assert_eq(mtls_file_read(path, 1024, &buf, &len, &err), 0);
    cr_assert_str_eq((char *)buf, "one");
    free(buf);
    cr_assert_eq(mtls_file_write_atomic(path, "two", 3, 0644, 1, &err), 0);
    cr_assert_eq(mtls_file_read(path, 1024, &buf, &len, &err), 0);
    cr_assert_str_eq((char *)buf, "two");
    free(buf);
    cr_assert_eq(count_entries(), 1);
}

Test(file, txn_is_all_or_nothing)
{
    char a[256], b[256];
    mtls_txn txn;
    mtls_err err;

    snprintf(a, sizeof(a), "%s/a", dir);
    snprintf(b, sizeof(b), "%s/b", dir);
    cr_assert_eq(mtls_file_write_atomic(b, "old", 3, 0644, 0, &err), 0);
    mtls_txn_init(&txn);
    cr_assert_eq(mtls_txn_add(&txn, a, "A", 1, 0644, &err), 0);
    cr_assert_eq(mtls_txn_add(&txn, b, "B", 1, 0644, &err), 0);
    cr_assert_eq(mtls_txn_commit(&txn, 0, &err), MTLS_E_EXISTS);
    mtls_txn_release(&txn);
    cr_assert_eq(access(a, F_OK), -1, "a was written although b existed");
    cr_assert_eq(count_entries(), 1, "temporary files were left behind");
}

Test(file, read_errors_name_the_file)
{
    char path[256];
    unsigned char *buf;
    size_t len;
    mtls_err err;

    snprintf(path, sizeof(path), "%s/missing.pem", dir);
    cr_assert_eq(mtls_file_read(path, 1024, &buf, &len, &err), MTLS_E_NOTFOUND);
    cr_assert(strstr(err.msg, "missing.pem") != NULL);
    cr_assert_eq(mtls_file_read(dir, 1024, &buf, &len, &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "not a regular file") != NULL, "got '%s'", err.msg);
}

Test(file, read_refuses_oversized)
{
    char path[256];
    unsigned char *buf;
    size_t len;
    mtls_err err;

    snprintf(path, sizeof(path), "%s/big", dir);
    cr_assert_eq(mtls_file_write_atomic(path, "0123456789", 10, 0644, 0, &err), 0);
    cr_assert_eq(mtls_file_read(path, 5, &buf, &len, &err), MTLS_E_INVALID);
    cr_assert_null(buf);
}

Test(file, read_refuses_a_fifo_without_hanging)
{
    char path[256];
    unsigned char *buf;
    size_t len;
    mtls_err err;

    snprintf(path, sizeof(path), "%s/fifo", dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    cr_assert_eq(mtls_file_read(path, 1024, &buf, &len, &err), MTLS_E_INVALID);
    cr_assert(strstr(err.msg, "not a regular file") != NULL, "got '%s'", err.msg);
}

Test(file, system_errors_read_in_git_style)
{
    char path[256];
    mtls_err err;

    /* Writing into a folder that does not exist: strerror's capital goes. */
    snprintf(path, sizeof(path), "%s/no/such/folder/file", dir);
    cr_assert_neq(mtls_file_write_atomic(path, "x", 1, 0644, 0, &err), 0);
    cr_assert(strstr(err.msg, ": no such file or directory") != NULL, "got '%s'", err.msg);
}
