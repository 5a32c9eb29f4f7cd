/* Helpers shared by the PKI commands. */
#include "pki_common.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int pki_key_type_arg(const struct cli_spec *spec, const char *value, mtls_key_type *out)
{
    mtls_err err;

    *out = MTLS_KEY_EC;
    if (value == NULL)
        return 0;
    if (mtls_key_type_parse(value, out, &err) != 0)
        return cli_usage_error(spec, "%s", err.msg);
    return 0;
}

int pki_profile_arg(const struct cli_spec *spec, const char *value, mtls_profile *out)
{
    mtls_err err;

    if (value == NULL)
        return cli_usage_error(spec, "--profile is required: client or server");
    if (mtls_profile_parse(value, out, &err) != 0)
        return cli_usage_error(spec, "%s", err.msg);
    return 0;
}

int pki_sans_arg(const struct cli_spec *spec, const struct cli_list *sans, GENERAL_NAMES **gens)
{
    mtls_err err;

    for (size_t i = 0; i < sans->n; i++) {
        if (mtls_san_add(gens, sans->items[i], &err) != 0)
            return cli_usage_error(spec, "%s", err.msg);
    }
    return 0;
}

char *pki_path_join(const char *dir, const char *name)
{
    size_t n;
    char *p;

    if (dir == NULL || strcmp(dir, ".") == 0)
        return strdup(name);
    n = strlen(dir) + strlen(name) + 2;
    p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    return p;
}

/* The folder a path is written into: "." for "x.key" (free()). */
static char *parent_folder(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int pki_check_target(const char *path, int force, mtls_err *err)
{
    struct stat st;

    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return mtls_err_set(err, MTLS_E_INVALID, "cannot write '%s': it is a folder: name a file",
                            path);
    if (!force && mtls_file_exists(path))
        return mtls_err_set(err, MTLS_E_EXISTS, "'%s' already exists: pass --force to overwrite it",
                            path);
    return 0;
}

int pki_check_new(const char *path, int force, mtls_err *err)
{
    struct stat st;
    char *folder;
    int rc = pki_check_target(path, force, err);

    if (rc != 0)
        return rc;
    folder = parent_folder(path);
    if (folder == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    if (stat(folder, &st) != 0)
        rc = mtls_err_set(err, MTLS_E_NOTFOUND,
                          "cannot write '%s': the folder '%s' does not exist: create it first",
                          path, folder);
    else if (!S_ISDIR(st.st_mode))
        rc = mtls_err_set(err, MTLS_E_INVALID, "cannot write '%s': '%s' is not a folder", path,
                          folder);
    else if (access(folder, W_OK) != 0)
        rc = mtls_err_set(err, MTLS_E_IO,
                          "cannot write '%s': the folder '%s' is not writable for you", path,
                          folder);
    free(folder);
    return rc;
}

char *pki_expiry_words(time_t not_after, char *buf, size_t size)
{
    return mtls_expiry_words(not_after, time(NULL), buf, size);
}

char *pki_sans_line(const GENERAL_NAMES *gens, char *buf, size_t size)
{
    mtls_san *sans = NULL;
    size_t n = 0;

    buf[0] = '\0';
    if (mtls_sans_from_names(gens, &sans, &n, NULL) == 0)
        mtls_sans_line(sans, n, buf, size);
    mtls_sans_free(sans, n);
    return buf;
}

int pki_password(const char *path, char **out)
{
    unsigned char *data = NULL;
    size_t len = 0;
    const char *env;
    mtls_err err;

    *out = NULL;
    if (path == NULL) {
        env = getenv("MTLS_KEY_PASSWORD");
        if (env != NULL && env[0] != '\0' && (*out = strdup(env)) == NULL)
            return cli_failf("out of memory");
        return 0;
    }
    if (mtls_file_read(path, 4096, &data, &len, &err) != 0)
        return cli_fail(&err);
    /* The first line, without its line ending, is the password; the whole
     * file is wiped, not only what pki_password_free() will see. */
    *out = strndup((char *)data, strcspn((char *)data, "\r\n"));
    mtls_free_secret(data, len);
    if (*out == NULL)
        return cli_failf("out of memory");
    if ((*out)[0] == '\0') {
        pki_password_free(*out);
        *out = NULL;
        return cli_failf("password file '%s' is empty: put the password on its first line", path);
    }
    return 0;
}

void pki_password_free(char *password)
{
    if (password != NULL)
        mtls_free_secret(password, strlen(password));
}

int pki_secret_load(const struct cli_spec *spec, struct pki_secret *s)
{
    if (pki_password(s->password_file, &s->password) != 0)
        return EXIT_FAIL;
    if (s->encrypt && s->password == NULL)
        return cli_usage_error(spec, "--encrypt needs a password: --password-file FILE (or set "
                                     "MTLS_KEY_PASSWORD)");
    return 0;
}

const char *pki_secret_for_writing(const struct pki_secret *s)
{
    return s->encrypt ? s->password : NULL;
}

void pki_secret_release(struct pki_secret *s)
{
    pki_password_free(s->password);
    s->password = NULL;
}

void pki_hold_signals(struct pki_signals *s)
{
    sigset_t hold;

    if (s->held)
        return;
    sigemptyset(&hold);
    sigaddset(&hold, SIGINT);
    sigaddset(&hold, SIGTERM);
    sigaddset(&hold, SIGHUP);
    sigaddset(&hold, SIGQUIT);
    s->held = sigprocmask(SIG_BLOCK, &hold, &s->old) == 0;
}

void pki_release_signals(struct pki_signals *s)
{
    if (!s->held)
        return;
    s->held = 0;
    fflush(stdout);
    sigprocmask(SIG_SETMASK, &s->old, NULL);
}
