/* The server's reverse-proxy and authorization options, checked at start like every other. */
#include <string.h>

#include "server_internal.h"

int mtls__server_proxy_init(mtls_server *srv, mtls_err *err)
{
    const mtls_server_opts *o = &srv->opts;
    int rc;

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
    for (size_t i = 0; i < o->n_allow; i++) {
        rc = mtls_allow_policy_add(&srv->policy, o->allow[i], err);
        if (rc != 0)
            return rc;
    }
    return 0;
}
