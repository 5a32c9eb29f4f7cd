/*
 * whoami.c - who is the client? Answers GET /whoami with the verified client
 * certificate and the TLS session as text, and GET /users/:name with a
 * greeting for that path parameter, allowed to CN=localclient alone.
 *
 *   cc whoami.c $(pkg-config --cflags --libs mtls) -o whoami
 *   ./whoami --listen 127.0.0.1:9443
 *   curl --cacert ca.crt --cert client.crt --key client.key https://localhost:9443/whoami
 */
#include <mtls/app.h>
#include <stdio.h>
#include <string.h>

static int whoami(mtls_request *req, mtls_response *res, void *ctx)
{
    const mtls_identity *id = mtls_request_identity(req);
    char body[4096];
    size_t n = 0;

    (void)ctx;
    if (id == NULL)
        return mtls_response_send_json(res, 403, "{\"error\":\"no verified client\"}");
    n += (size_t)snprintf(body + n, sizeof(body) - n,
                          "subject: %s\nissuer: %s\nserial: %s\nsha256: %s\n"
                          "valid: %s to %s\ntls: %s %s%s\n",
                          id->subject, id->issuer, id->serial, id->sha256, id->not_before,
                          id->not_after, id->tls_version, id->cipher,
                          id->resumed ? " (resumed)" : "");
    for (size_t i = 0; i < id->n_sans && n < sizeof(body); i++)
        n += (size_t)snprintf(body + n, sizeof(body) - n, "san: %s\n", id->sans[i]);
    if (n >= sizeof(body))
        n = sizeof(body) - 1;
    return mtls_response_send(res, body, n);
}

static int user(mtls_request *req, mtls_response *res, void *ctx)
{
    size_t len;
    const char *name = mtls_request_param(req, "name", &len);
    char body[300];
    int n;

    (void)ctx;
    n = snprintf(body, sizeof(body), "hello, %.*s\n", (int)(len > 200 ? 200 : len), name);
    return mtls_response_send(res, body, (size_t)n);
}

int main(int argc, char **argv)
{
    mtls_app *app = NULL;
    mtls_err err;
    int rc = 1, route;

    mtls_err_clear(&err);
    if (mtls_app_new(&app, &err) != 0)
        goto out;
    if (argc == 3 && strcmp(argv[1], "--listen") == 0) {
        if (mtls_app_set(app, "listen", argv[2], &err) != 0)
            goto out;
    } else if (argc != 1) {
        fprintf(stderr, "usage: %s [--listen ADDR:PORT]\n", argv[0]);
        goto out;
    }
    if (mtls_app_route(app, "GET", "/whoami", whoami, NULL, &err) < 0)
        goto out;
    route = mtls_app_route(app, "GET", "/users/:name", user, NULL, &err);
    if (route < 0 || mtls_app_route_allow(app, route, "cn=localclient", &err) != 0)
        goto out;
    if (mtls_app_start(app, &err) != 0)
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
