/*
 * async.c - a handler that answers later: GET /slow?ms=N answers after a
 * timer of N milliseconds (default 100) on the worker's event loop, without
 * holding up the worker's other connections meanwhile. A client that goes
 * away first cancels the timer.
 *
 *   cc async.c $(pkg-config --cflags --libs mtls) -o async
 *   ./async --listen 127.0.0.1:9443
 *   curl --cacert ca.crt --cert client.crt --key client.key 'https://localhost:9443/slow?ms=300'
 */
#include <mtls/app.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one waiting request needs once the timer fires. */
struct pending {
    mtls_response *res;
    mtls_timer *timer;
    unsigned long ms;
};

static void fire(void *ctx)
{
    struct pending *p = ctx;
    char body[100];

    snprintf(body, sizeof(body), "{\"message\":\"Hello mtls\",\"waited_ms\":%lu}", p->ms);
    mtls_response_send_json(p->res, 200, body);
    free(p);
}

/* The client went away first: the timer must not answer. */
static void gone(void *ctx)
{
    struct pending *p = ctx;

    mtls_timer_cancel(p->timer);
    free(p);
}

static int slow(mtls_request *req, mtls_response *res, void *ctx)
{
    struct pending *p = calloc(1, sizeof(*p));
    size_t len;
    const char *q = mtls_request_query(req, &len);

    (void)ctx;
    if (p == NULL)
        return -1; /* 500 */
    p->res = res;
    p->ms = 100;
    if (q != NULL && len > 3 && len < 12 && strncmp(q, "ms=", 3) == 0) {
        char digits[12];

        memcpy(digits, q + 3, len - 3); /* a span of the request, not a C string */
        digits[len - 3] = '\0';
        p->ms = strtoul(digits, NULL, 10);
    }
    p->timer = mtls_timer_start(p->ms, fire, p);
    if (p->timer == NULL) {
        free(p);
        return -1;
    }
    mtls_response_on_abort(res, gone, p);
    return 0; /* answered later */
}

int main(int argc, char **argv)
{
    mtls_app *app = NULL;
    mtls_err err;
    int rc = 1;

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
    if (mtls_app_route(app, "GET", "/slow", slow, NULL, &err) < 0 || mtls_app_start(app, &err) != 0)
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
