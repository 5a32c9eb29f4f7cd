/* `mtls serve --check`: every check of the start, each problem reported, nothing served. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server_internal.h"

struct checker {
    void (*problem)(void *ctx, const char *msg);
    void *ctx;
    int n;
};

static void report(struct checker *ck, const mtls_err *err)
{
    ck->n++;
    ck->problem(ck->ctx, err->msg);
}

/* A log file that exists must be writable; one that does not, its folder. */
static void check_log(struct checker *ck, const char *what, const char *path)
{
    mtls_err err;
    char *copy;

    if (path == NULL)
        return;
    mtls_err_clear(&err);
    if (access(path, F_OK) == 0) {
        if (access(path, W_OK) != 0)
            mtls_err_set(&err, MTLS_E_IO, "cannot write the %s '%s': %s", what, path,
                         strerror(errno));
    } else if ((copy = strdup(path)) != NULL) {
        const char *dir = dirname(copy);

        if (access(dir, W_OK) != 0)
            mtls_err_set(&err, MTLS_E_IO, "cannot create the %s '%s': %s", what, path,
                         strerror(errno));
        free(copy);
    }
    if (err.msg[0] != '\0')
        report(ck, &err);
}

int mtls_server_check(const mtls_server_opts *opts, void (*problem)(void *ctx, const char *msg),
                      void *ctx)
{
    struct checker ck = {problem, ctx, 0};
    mtls_server srv;
    mtls_err err;
    size_t i;

    memset(&srv, 0, sizeof(srv));
    srv.opts = *opts;
    ck.n += mtls_tls_server_check(&opts->tls, problem, ctx);
    mtls_err_clear(&err);
    if (mtls__listen_check(opts->listen, &err) != 0)
        report(&ck, &err);
    mtls_err_clear(&err);
    if (mtls__metrics_listen_check(opts->metrics_listen, opts->metrics_public, &err) != 0)
        report(&ck, &err);
    check_log(&ck, "access log", opts->access_log);
    check_log(&ck, "system log", opts->system_log);
    if (opts->handshake_timeout_ms == 0 || opts->header_timeout_ms == 0 ||
        opts->idle_timeout_ms == 0 || opts->max_connections == 0) {
        mtls_err_set(&err, MTLS_E_INVALID, "timeouts and --max-connections must be above 0");
        report(&ck, &err);
    }
    /* Each --allow rule on its own, so that every bad one is listed; then the rest. */
    for (i = 0; i < opts->n_allow; i++) {
        mtls_allow_policy one = {0};

        mtls_err_clear(&err);
        if (mtls_allow_policy_add(&one, opts->allow[i], &err) != 0)
            report(&ck, &err);
        mtls_allow_policy_release(&one);
    }
    srv.opts.allow = NULL;
    srv.opts.n_allow = 0;
    mtls_err_clear(&err);
    if (mtls__server_proxy_init(&srv, &err) != 0)
        report(&ck, &err);
    mtls__server_proxy_release(&srv);
    return ck.n;
}
