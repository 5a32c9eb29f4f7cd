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

int mtls_server_upstream_check(const char *url, mtls_err *err)
{
    mtls_upstream_addr addr;

    return mtls__upstream_parse(url, &addr, err);
}

int mtls_server_identity_headers_check(const char *list, mtls_err *err)
{
    unsigned families;

    return mtls__identity_families_parse(list, &families, err);
}

/* The proxy part of next, checked as at start, takes the place of srv's. */
static int proxy_swap(mtls_server *srv, const mtls_server_opts *next, mtls_err *err)
{
    mtls_server *tmp = calloc(1, sizeof(*tmp));
    int rc;

    if (tmp == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    tmp->opts = *next;
    rc = mtls__server_proxy_init(tmp, err);
    if (rc != 0) {
        mtls__server_proxy_release(tmp);
        free(tmp);
        return rc;
    }
    mtls__server_proxy_release(srv);
    srv->opts.upstream = next->upstream;
    srv->opts.identity_headers = next->identity_headers;
    srv->opts.allow = next->allow;
    srv->opts.n_allow = next->n_allow;
    srv->opts.allow_dry_run = next->allow_dry_run;
    srv->opts.routes = next->routes;
    srv->opts.n_routes = next->n_routes;
    srv->has_upstream = tmp->has_upstream;
    srv->upstream = tmp->upstream;
    srv->identity_families = tmp->identity_families;
    memcpy(srv->policies, tmp->policies, sizeof(srv->policies));
    srv->n_policies = tmp->n_policies;
    srv->server_policy = tmp->server_policy;
    srv->routes = tmp->routes;
    srv->n_routes = tmp->n_routes;
    for (size_t i = 0; i < srv->n_routes; i++)
        srv->routes[i].opts = &next->routes[i];
    free(tmp);
    return 0;
}

static void reload_problem(void *ctx, const char *msg)
{
    mtls__syslogf(ctx, "error", "reload_refused", "SIGHUP: %s", msg);
}

int mtls__server_reload_config(mtls_server *srv)
{
    mtls_server_opts next = srv->opts;
    mtls_err err;
    int problems;

    if (srv->opts.reload_config == NULL)
        return 0;
    problems = srv->opts.reload_config(srv->opts.reload_ctx, &next, reload_problem, srv);
    mtls_err_clear(&err);
    if (problems == 0 && proxy_swap(srv, &next, &err) != 0) {
        reload_problem(srv, err.msg);
        problems = 1;
    }
    if (srv->opts.reload_done != NULL)
        srv->opts.reload_done(srv->opts.reload_ctx, problems == 0);
    if (problems > 0) {
        mtls__syslogf(srv, "error", "reload_refused",
                      "SIGHUP: the configuration file has %d problem(s) (above); the old routes, "
                      "upstreams and rules stay in force",
                      problems);
        return -1;
    }
    mtls__syslogf(srv, "info", "reload_config",
                  "SIGHUP: configuration reloaded (%zu route(s), upstream %s, %zu allow rule(s)); "
                  "new connections use it, open ones finish on the old",
                  srv->n_routes, srv->opts.upstream ? srv->opts.upstream : "none",
                  srv->opts.n_allow);
    return 1;
}
