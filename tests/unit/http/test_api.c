/* Path parameters on the route table (mtls/app.h's "/users/:id"). */
#include <criterion/criterion.h>
#include <string.h>

#include <llhttp.h>

#include "http/http_internal.h"
#include "mtls/http.h"

static int nothing(void *ctx, mtls_http_request *req)
{
    (void)ctx;
    (void)req;
    return 0;
}

static const char *match(const mtls_http_routes *t, int method, const char *path, uint64_t *allow)
{
    const mtls_http_route *r = mtls_http_routes_match(t, method, path, strlen(path), allow);

    return r ? r->path : NULL;
}

Test(http_api, params_match_one_nonempty_segment_each)
{
    const char *pat = "/users/:id/keys/:key";
    const char *v = NULL;
    size_t len = 0;

#define M(path) mtls__http_params_match(pat, strlen(pat), path, strlen(path), NULL, NULL, NULL)
    cr_assert(M("/users/42/keys/a"));
    cr_assert(!M("/users//keys/a"));
    cr_assert(!M("/users/42/keys/"));
    cr_assert(!M("/users/42/keys/a/b"));
    cr_assert(!M("/users/42/key/a"));
    cr_assert(!M("/users/42"));
#undef M
    cr_assert(mtls__http_params_match(pat, strlen(pat), "/users/42/keys/ab", 17, "key", &v, &len));
    cr_assert_eq(len, 2);
    cr_assert(memcmp(v, "ab", 2) == 0);
    cr_assert(mtls__http_params_match(pat, strlen(pat), "/users/42/keys/ab", 17, "id", &v, &len));
    cr_assert_eq(len, 2);
    cr_assert(memcmp(v, "42", 2) == 0);
}

Test(http_api, exact_then_params_then_prefix)
{
    mtls_http_routes t = {0};
    mtls_err err;
    uint64_t allow;

    cr_assert_eq(mtls_http_routes_add(&t, "/users", MTLS_ROUTE_PREFIX, 0, nothing, NULL, &err), 0);
    cr_assert_eq(
        mtls_http_routes_add(&t, "/users/:id", 0, MTLS_METHOD(HTTP_GET), nothing, NULL, &err), 0);
    cr_assert(t.v[1].flags & MTLS_ROUTE_PARAMS);
    cr_assert_eq(mtls_http_routes_add(&t, "/users/me", 0, 0, nothing, NULL, &err), 0);
    cr_assert_str_eq(match(&t, HTTP_GET, "/users/me", &allow), "/users/me");
    cr_assert_str_eq(match(&t, HTTP_GET, "/users/42", &allow), "/users/:id");
    cr_assert_str_eq(match(&t, HTTP_GET, "/users/42/x", &allow), "/users");
    cr_assert_str_eq(match(&t, HTTP_POST, "/users/42", &allow), "/users"); /* prefix: all methods */
    mtls_http_routes_release(&t);
    /* A parameter path that matches with another method alone: 405 with its methods. */
    cr_assert_eq(
        mtls_http_routes_add(&t, "/users/:id", 0, MTLS_METHOD(HTTP_GET), nothing, NULL, &err), 0);
    cr_assert_null(match(&t, HTTP_DELETE, "/users/42", &allow));
    cr_assert_eq(allow, MTLS_METHOD(HTTP_GET));
    /* Not a parameter path: the literal ":id" matches only itself. */
    cr_assert_eq(mtls_http_routes_add(&t, "/a:b", 0, 0, nothing, NULL, &err), 0);
    cr_assert_eq(t.v[1].flags & MTLS_ROUTE_PARAMS, 0);
    cr_assert_null(match(&t, HTTP_GET, "/ab", &allow));
    mtls_http_routes_release(&t);
}
