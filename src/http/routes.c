/*
 * The route table: path (exact or prefix) and method to a handler, and the
 * built-in handlers /test and /whoami, which are ordinary routes on it.
 */
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "http_internal.h"
#include "mtls/http.h"

int mtls_http_routes_add(mtls_http_routes *t, const char *path, unsigned flags, uint64_t methods,
                         mtls_http_handler_fn handler, void *ctx, mtls_err *err)
{
    mtls_http_route *grown, *r;

    if (path == NULL || path[0] != '/')
        return mtls_err_set(err, MTLS_E_INVALID, "route '%s' must start with '/'",
                            path ? path : "");
    grown = realloc(t->v, (t->n + 1) * sizeof(*t->v));
    if (grown == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    t->v = grown;
    r = &t->v[t->n];
    memset(r, 0, sizeof(*r));
    r->path = strdup(path);
    if (r->path == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    r->path_len = strlen(path);
    r->flags = flags;
    r->methods = methods;
    r->handler = handler;
    r->ctx = ctx;
    r->policy = -1;
    t->n++;
    return 0;
}

void mtls_http_routes_set_policy(mtls_http_routes *t, int policy)
{
    for (size_t i = 0; i < t->n; i++)
        t->v[i].policy = policy;
}

void mtls_http_routes_release(mtls_http_routes *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].path);
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

/* A prefix matches at a path-segment boundary: "/api" takes "/api" and "/api/x", not "/apix". */
static int prefix_matches(const mtls_http_route *r, const char *path, size_t len)
{
    if (len < r->path_len || memcmp(path, r->path, r->path_len) != 0)
        return 0;
    return len == r->path_len || r->path[r->path_len - 1] == '/' || path[r->path_len] == '/';
}

const mtls_http_route *mtls_http_routes_match(const mtls_http_routes *t, int method,
                                              const char *path, size_t len, uint64_t *allow)
{
    const mtls_http_route *best = NULL;
    uint64_t bit = MTLS_METHOD(method);

    *allow = 0;
    /* Exact paths first. */
    for (size_t i = 0; i < t->n; i++) {
        const mtls_http_route *r = &t->v[i];

        if ((r->flags & MTLS_ROUTE_PREFIX) || r->path_len != len || memcmp(r->path, path, len) != 0)
            continue;
        if (r->methods == 0 || (r->methods & bit))
            return r;
        *allow |= r->methods;
    }
    /* Then the longest prefix that takes this method. */
    for (size_t i = 0; i < t->n; i++) {
        const mtls_http_route *r = &t->v[i];

        if (!(r->flags & MTLS_ROUTE_PREFIX) || !prefix_matches(r, path, len))
            continue;
        if (r->methods != 0 && !(r->methods & bit)) {
            *allow |= r->methods;
            continue;
        }
        if (best == NULL || r->path_len > best->path_len)
            best = r;
    }
    return best;
}

/* ---- built-in handlers -------------------------------------------------- */

static const char BODY_TEST[] = "{\"message\":\"Hello mtls\"}";

/* GET /test: the article's answer. */
static int handle_test(void *ctx, mtls_http_request *req)
{
    (void)ctx;
    return mtls_http_respond(req, 200, NULL, BODY_TEST, sizeof(BODY_TEST) - 1, NULL);
}

/*
 * GET /whoami and GET /: the verified client certificate and the TLS
 * session, as JSON, or as a page for a browser (Accept prefers text/html).
 */
static int handle_whoami(void *ctx, mtls_http_request *req)
{
    const mtls_http_peer *peer = req->peer;
    const char *json = NULL;
    size_t len = 0;

    (void)ctx;
    if (peer != NULL && peer->whoami != NULL)
        json = peer->whoami(peer->whoami_ctx, &len);
    if (json == NULL)
        return mtls_http_respond_error(req, 500, "no client identity", NULL);
    if (mtls__http_prefers_html(req->headers, req->n_headers)) {
        mtls_strbuf page = {0};
        int rc = -1;

        if (mtls__http_page_whoami(&page, json, len) == 0)
            rc = mtls_http_respond(req, 200, MTLS__HTTP_HTML_TYPE, page.p, page.len,
                                   MTLS__HTTP_HTML_HEADERS);
        mtls_strbuf_release(&page);
        return rc;
    }
    return mtls_http_respond(req, 200, NULL, json, len, "Vary: Accept\r\n");
}

#define GET_HEAD (MTLS_METHOD(HTTP_GET) | MTLS_METHOD(HTTP_HEAD))

mtls_http_handler_fn mtls_http_builtin_handler(const char *name)
{
    if (strcmp(name, "test") == 0)
        return handle_test;
    if (strcmp(name, "whoami") == 0)
        return handle_whoami;
    return NULL;
}

int mtls_http_routes_add_builtin(mtls_http_routes *t, mtls_err *err)
{
    int rc = mtls_http_routes_add(t, "/test", 0, GET_HEAD, handle_test, NULL, err);

    if (rc == 0)
        rc = mtls_http_routes_add(t, "/whoami", 0, GET_HEAD, handle_whoami, NULL, err);
    return rc;
}

static char test_path[] = "/test", whoami_path[] = "/whoami", root_path[] = "/";
static mtls_http_route builtin[] = {
    {test_path, 5, 0, GET_HEAD, handle_test, NULL, -1},
    {whoami_path, 7, 0, GET_HEAD, handle_whoami, NULL, -1},
    {root_path, 1, 0, GET_HEAD, handle_whoami, NULL, -1},
};
static const mtls_http_routes builtin_routes = {builtin, 3, NULL, 0, 0};

const mtls_http_routes *mtls__http_builtin_routes(void)
{
    return &builtin_routes;
}
