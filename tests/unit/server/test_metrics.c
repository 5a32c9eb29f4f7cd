/* The metrics' counters and exposition (src/server/metrics.c): slots summed, labels bounded. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "mtls/pki.h"
#include "proxy/proxy.h"
#include "server/metrics.h"

static int noop(void *ctx, mtls_http_request *req)
{
    (void)ctx;
    (void)req;
    return 0;
}

/* The value of the sample line that starts with key ("name{labels}"), or -1. */
static double sample(const char *text, const char *key)
{
    size_t n = strlen(key);

    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, key, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return -1;
}

Test(metrics, counts_of_every_slot_are_summed)
{
    struct mtls__metrics *m = NULL;
    mtls_http_routes routes;
    atomic_uint open_conns = 3;
    struct mtls__metrics_view v;
    mtls_err err;
    char *text = NULL;
    size_t len = 0;

    memset(&routes, 0, sizeof(routes));
    cr_assert_eq(mtls_http_routes_add(&routes, "/test", 0, 0, noop, NULL, &err), 0);
    cr_assert_eq(mtls_http_routes_add(&routes, "/api", MTLS_ROUTE_PREFIX, 0, noop, NULL, &err), 0);
    cr_assert_eq(mtls__metrics_new(2, routes.n, &m, &err), 0);
    /* Worker slots 0 and 1 each count; a scrape shows the sums. */
    mtls__metrics_request(mtls__metrics_slot(m, 0), m, 0, 200, 50000);
    mtls__metrics_request(mtls__metrics_slot(m, 1), m, 0, 200, 2000000);
    mtls__metrics_request(mtls__metrics_slot(m, 1), m, 1, 418, 1000);
    mtls__metrics_request(mtls__metrics_slot(m, 0), m, -1, 404, 1000);
    mtls__metrics_handshake(mtls__metrics_slot(m, 0), MTLS__HS_REJECTED, 0, MTLS_VERIFY_NO_CERT);
    mtls__metrics_handshake(mtls__metrics_slot(m, 1), MTLS__HS_OK, 1, 0);
    mtls__metrics_upstream_error(mtls__metrics_slot(m, 1), 504, MTLS_UPSTREAM_TIMEOUT);
    mtls__metrics_reload(m, 1);
    cr_assert_null(mtls__metrics_slot(m, 2));

    memset(&v, 0, sizeof(v));
    v.m = m;
    v.open_conns = &open_conns;
    v.routes = &routes;
    cr_assert_eq(mtls__metrics_format(&v, &text, &len), 0);
    cr_assert_eq(strlen(text), len);
    cr_assert_eq(sample(text, "mtls_requests_total{route=\"/test\",status=\"200\"}"), 2);
    /* A code without a label of its own is counted by its class. */
    cr_assert_eq(sample(text, "mtls_requests_total{route=\"/api*\",status=\"4xx\"}"), 1);
    cr_assert_eq(sample(text, "mtls_requests_total{route=\"none\",status=\"404\"}"), 1);
    cr_assert_eq(
        sample(text, "mtls_request_duration_seconds_bucket{route=\"/test\",le=\"0.0001\"}"), 1);
    cr_assert_eq(
        sample(text, "mtls_request_duration_seconds_bucket{route=\"/test\",le=\"0.0025\"}"), 2);
    cr_assert_eq(sample(text, "mtls_request_duration_seconds_count{route=\"/test\"}"), 2);
    cr_assert_float_eq(sample(text, "mtls_request_duration_seconds_sum{route=\"/test\"}"), 0.00205,
                       1e-9);
    cr_assert_eq(sample(text, "mtls_handshake_rejections_total{reason=\"no_certificate\"}"), 1);
    cr_assert_eq(sample(text, "mtls_handshakes_total{result=\"rejected\"}"), 1);
    cr_assert_eq(sample(text, "mtls_handshakes_resumed_total"), 1);
    cr_assert_eq(sample(text, "mtls_upstream_errors_total{status=\"504\",cause=\"timeout\"}"), 1);
    cr_assert_eq(sample(text, "mtls_reloads_total{outcome=\"ok\"}"), 1);
    cr_assert_eq(sample(text, "mtls_connections_open"), 3);
    /* Nothing counted, nothing listed (bounded output); fixed label sets always are. */
    cr_assert_eq(sample(text, "mtls_requests_total{route=\"/test\",status=\"500\"}"), -1);
    cr_assert_eq(sample(text, "mtls_handshake_rejections_total{reason=\"revoked\"}"), 0);
    free(text);
    mtls__metrics_free(m);
    mtls_http_routes_release(&routes);
}
