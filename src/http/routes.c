/*
 * The route table: path (exact or prefix) and method to a handler, and the
 * built-in handlers /test and /whoami, which are ordinary routes on it.
 */
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "http_internal.h"
#include "mtls/app.h"
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
    if (strstr(path, "/:") != NULL)
        flags |= MTLS_ROUTE_PARAMS;
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

int mtls__http_params_match(const char *pattern, size_t plen, const char *path, size_t len,
                            const char *name, const char **value, size_t *value_len)
{
    size_t i = 0, j = 0;

    while (i < plen && j < len) {
        if (pattern[i] == ':' && pattern[i - 1] == '/') {
            size_t ns = i + 1, ne = ns, vs = j;

            while (ne < plen && pattern[ne] != '/')
                ne++;
            while (j < len && path[j] != '/')
                j++;
            if (j == vs)
                return 0; /* a parameter is never empty */
            if (name != NULL && strlen(name) == ne - ns &&
                memcmp(name, pattern + ns, ne - ns) == 0) {
                *value = path + vs;
                *value_len = j - vs;
            }
            i = ne;
            continue;
        }
        if (pattern[i] != path[j])
            return 0;
        i++;
        j++;
    }
    return i == plen && j == len;
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

        if ((r->flags & (MTLS_ROUTE_PREFIX | MTLS_ROUTE_PARAMS)) || r->path_len != len ||
            memcmp(r->path, path, len) != 0)
            continue;
        if (r->methods == 0 || (r->methods & bit))
            return r;
        *allow |= r->methods;
    }
    /* Then paths with parameters, in the order added. */
    for (size_t i = 0; i < t->n; i++) {
        const mtls_http_route *r = &t->v[i];

        if (!(r->flags & MTLS_ROUTE_PARAMS) || (r->flags & MTLS_ROUTE_PREFIX) ||
            !mtls__http_params_match(r->path, r->path_len, path, len, NULL, NULL, NULL))
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

/*
 * /test and /whoami are written with the public API of mtls/app.h alone, as
 * an application's handlers would be; handle_* adapt them to the table.
 */

/* GET /test: the article's answer. */
static int api_test(mtls_request *req, mtls_response *res, void *ctx)
{
    (void)req;
    (void)ctx;
    return mtls_response_send_json(res, 200, "{\"message\":\"Hello mtls\"}");
}

/* Sets the header lines "Name: value\r\n..." on res. Returns 0 or -1. */
static int set_header_lines(mtls_response *res, const char *lines)
{
    char name[64], value[512];

    while (*lines != '\0') {
        const char *colon = strchr(lines, ':'), *end = strstr(lines, "\r\n");

        if (colon == NULL || end == NULL || colon > end ||
            (size_t)(colon - lines) >= sizeof(name) || (size_t)(end - colon) > sizeof(value))
            return -1;
        memcpy(name, lines, (size_t)(colon - lines));
        name[colon - lines] = '\0';
        memcpy(value, colon + 2, (size_t)(end - colon - 2));
        value[end - colon - 2] = '\0';
        if (mtls_response_set_header(res, name, value) != 0)
            return -1;
        lines = end + 2;
    }
    return 0;
}

/*
 * GET /whoami and GET /: the verified client certificate and the TLS
 * session, as JSON, or as a page for a browser (Accept prefers text/html;
 * the page is pages.c's).
 */
static int api_whoami(mtls_request *req, mtls_response *res, void *ctx)
{
    const mtls_identity *id = mtls_request_identity(req);

    (void)ctx;
    if (id == NULL || id->json == NULL)
        return mtls_response_send_json(res, 500, "{\"error\":\"no client identity\"}");
    if (mtls__http_prefers_html(req->headers, req->n_headers)) {
        mtls_strbuf page = {0};
        int rc = -1;

        if (mtls__http_page_whoami(&page, id->json, strlen(id->json)) == 0 &&
            mtls_response_set_header(res, "Content-Type", MTLS__HTTP_HTML_TYPE) == 0 &&
            set_header_lines(res, MTLS__HTTP_HTML_HEADERS) == 0)
            rc = mtls_response_send(res, page.p, page.len);
        mtls_strbuf_release(&page);
        return rc;
    }
    if (mtls_response_set_header(res, "Vary", "Accept") != 0)
        return -1;
    return mtls_response_send_json(res, 200, id->json);
}

static const struct mtls__api_route test_api = {api_test, NULL};
static const struct mtls__api_route whoami_api = {api_whoami, NULL};

static int handle_test(void *ctx, mtls_http_request *req)
{
    (void)ctx;
    return mtls__api_dispatch((void *)&test_api, req);
}

static int handle_whoami(void *ctx, mtls_http_request *req)
{
    (void)ctx;
    return mtls__api_dispatch((void *)&whoami_api, req);
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
