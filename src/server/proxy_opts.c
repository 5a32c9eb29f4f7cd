/*
 * The server's reverse-proxy, route and authorization options, checked at
 * start like every other: upstream URLs resolved, identity header families
 * and --allow rules parsed, one authorization policy per rule set.
 */
#include <stdlib.h>
#include <string.h>

#include "mtls/http.h"
#include "server_internal.h"

/* Parses rules into the next policy; returns its index, or a negative MTLS_E_*. */
static int add_policy(mtls_server *srv, const char *const *rules, size_t n, mtls_err *err)
{
    mtls_allow_policy *p;
    int rc;

    if (srv->n_policies == MTLS__MAX_POLICIES)
        return mtls_err_set(err, MTLS_E_INVALID, "at most %d rule sets (routes with allow)",
                            MTLS__MAX_POLICIES);
    p = &srv->policies[srv->n_policies];
    for (size_t i = 0; i < n; i++) {
        rc = mtls_allow_policy_add(p, rules[i], err);
        if (rc != 0) {
            mtls_allow_policy_release(p);
            return rc;
        }
    }
    return (int)srv->n_policies++;
}

static int route_init(mtls_server *srv, const mtls_route_opts *ro, struct mtls__route *r,
                      mtls_err *err)
{
    int rc;

    r->opts = ro;
    r->policy = srv->server_policy;
    if (ro->path == NULL || ro->path[0] != '/')
        return mtls_err_set(err, MTLS_E_INVALID, "route '%s': a path must start with '/'",
                            ro->path ? ro->path : "");
    if (ro->fn != NULL) {
        r->builtin = 1;
    } else if (ro->handler != NULL) {
        if (mtls_http_builtin_handler(ro->handler) == NULL)
            return mtls_err_set(err, MTLS_E_INVALID,
                                "route '%s': unknown handler '%s' (built-in: test, whoami)",
                                ro->path, ro->handler);
        if (ro->upstream != NULL)
            return mtls_err_set(err, MTLS_E_INVALID,
                                "route '%s': a handler and an upstream, choose one", ro->path);
        r->builtin = 1;
    } else if (ro->upstream != NULL) {
        rc = mtls__upstream_parse(ro->upstream, &r->upstream, err);
        if (rc != 0)
            return rc;
    } else if (srv->has_upstream) {
        r->upstream = srv->upstream;
    } else {
        return mtls_err_set(err, MTLS_E_INVALID,
                            "route '%s' needs an upstream (or a handler: test, whoami)", ro->path);
    }
    r->families = srv->identity_families;
    if (ro->identity_headers != NULL) {
        rc = mtls__identity_families_parse(ro->identity_headers, &r->families, err);
        if (rc != 0)
            return rc;
    }
    if (ro->allow != NULL) {
        rc = add_policy(srv, ro->allow, ro->n_allow, err);
        if (rc < 0)
            return rc;
        r->policy = ro->n_allow > 0 ? rc : -1;
    }
    return 0;
}

int mtls__server_proxy_init(mtls_server *srv, mtls_err *err)
{
    const mtls_server_opts *o = &srv->opts;
    int rc;

    srv->server_policy = -1;
    srv->identity_families = MTLS_IDH_DEFAULT;
    if (o->identity_headers != NULL) {
        rc = mtls__identity_families_parse(o->identity_headers, &srv->identity_families, err);
        if (rc != 0)
            return rc;
    }
    if (o->upstream != NULL) {
        rc = mtls__upstream_parse(o->upstream, &srv->upstream, err);
        if (rc != 0)
            return rc;
        srv->has_upstream = 1;
    }
    if (o->upstream_connect_timeout_ms == 0 || o->upstream_timeout_ms == 0)
        return mtls_err_set(err, MTLS_E_INVALID, "upstream timeouts must be above 0");
    if (o->n_allow > 0) {
        rc = add_policy(srv, o->allow, o->n_allow, err);
        if (rc < 0)
            return rc;
        srv->server_policy = rc;
    }
    if (o->n_routes > 0) {
        srv->routes = calloc(o->n_routes, sizeof(*srv->routes));
        if (srv->routes == NULL)
            return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        for (size_t i = 0; i < o->n_routes; i++) {
            rc = route_init(srv, &o->routes[i], &srv->routes[i], err);
            if (rc != 0)
                return rc;
            srv->n_routes++;
        }
    }
    return 0;
}

void mtls__server_proxy_release(mtls_server *srv)
{
    for (unsigned i = 0; i < srv->n_policies; i++)
        mtls_allow_policy_release(&srv->policies[i]);
    srv->n_policies = 0;
    free(srv->routes);
    srv->routes = NULL;
    srv->n_routes = 0;
}
