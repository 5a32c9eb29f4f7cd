/*
 * hello.c - the tutorial's server.js in C: an HTTPS server on port 8443
 * that requires a client certificate signed by clientca.crt and answers
 * GET /test with {"message":"Hello mtls"}; access.log and system.log.
 *
 *   cc hello.c $(pkg-config --cflags --libs mtls) -o hello
 *   ./hello                         # server.crt, server.key, clientca.crt here
 *   ./hello --listen 127.0.0.1:9443
 *   curl --cacert ca.crt --cert client.crt --key client.key https://localhost:8443/test
 */
#include <mtls/app.h>
#include <stdio.h>
#include <string.h>

static int hello(mtls_request *req, mtls_response *res, void *ctx)
{
    (void)req;
    (void)ctx;
    return mtls_response_send_json(res, 200, "{\"message\":\"Hello mtls\"}");
}

int main(int argc, char **argv)
{
    mtls_app *app = NULL;
    mtls_err err;
    int rc = 1;

    mtls_err_clear(&err);
    if (mtls_app_new(&app, &err) != 0)
        goto out;
    /* The defaults are the tutorial's: port 8443, server.crt, server.key,
       clientca.crt, client certificate required, access.log, system.log. */
    if (argc == 3 && strcmp(argv[1], "--listen") == 0) {
        if (mtls_app_set(app, "listen", argv[2], &err) != 0)
            goto out;
    } else if (argc != 1) {
        fprintf(stderr, "usage: %s [--listen ADDR:PORT]\n", argv[0]);
        goto out;
    }
    if (mtls_app_route(app, "GET", "/test", hello, NULL, &err) < 0 ||
        mtls_app_start(app, &err) != 0)
        goto out;
    printf("HTTPS listening on %d....\n", mtls_app_port(app));
    fflush(stdout);
    rc = mtls_app_run(app, &err) == 0 ? 0 : 1;
out:
    if (err.code != 0)
        fprintf(stderr, "error: %s\n", err.msg);
    mtls_app_free(app);
    return rc;
}
