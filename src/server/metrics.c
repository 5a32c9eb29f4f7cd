/*
 * The metrics' counters and their Prometheus text exposition (format 0.0.4).
 *
 * One anonymous MAP_SHARED mapping, made before the workers start: a header
 * (reload outcomes, the status table) and one slot of counters per worker
 * slot. Each slot has one writer (its worker, process or thread), which adds
 * with relaxed loads and stores, no locked instruction; a scrape sums the
 * slots with relaxed loads. A restarted worker, or the next generation under
 * --user, adds to the counters it finds: nothing is reset while the server runs.
 */
#include "metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "mtls/certinfo.h"
#include "mtls/pki.h"
#include "proxy/proxy.h"

#ifndef MTLS_VERSION
#define MTLS_VERSION "0.1.0"
#endif

/* Status labels: the common codes each, the rest by class (bounded cardinality). */
static const int status_codes[] = {200, 201, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403,
                                   404, 405, 408, 413, 414, 429, 431, 500, 501, 502, 503, 504};
#define N_CODES (sizeof(status_codes) / sizeof(status_codes[0]))
#define N_STATUS (N_CODES + 6) /* then 1xx, 2xx, 3xx, 4xx, 5xx, other */

/* Request durations: bucket upper bounds in nanoseconds, and as the label says them. */
static const uint64_t bucket_ns[] = {
    100000,   250000,    500000,    1000000,   2500000,    5000000,    10000000,   25000000,
    50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000};
static const char *const bucket_le[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                                        "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
                                        "1",      "2.5",     "5",      "10"};
#define N_BUCKETS (sizeof(bucket_ns) / sizeof(bucket_ns[0]))
/* Per route row: requests by status, then duration buckets (+Inf last), then the sum in ns. */
#define ROW_STATUS 0
#define ROW_BUCKETS N_STATUS
#define ROW_SUM (N_STATUS + N_BUCKETS + 1)
#define ROW_LEN (ROW_SUM + 1)

struct mtls__metrics_slot {
    atomic_ullong handshakes[MTLS__HS_RESULTS];
    atomic_ullong resumed;
    atomic_ullong refused[MTLS_VERIFY_REASONS];
    atomic_ullong upstream[2][MTLS_UPSTREAM_CAUSES]; /* [0] 502, [1] 504 */
    atomic_ullong denials;
    atomic_ullong rows[]; /* (n_routes + 1) * ROW_LEN; the last row: no route */
};

struct mtls__metrics {
    size_t map_size;
    size_t slot_size;
    unsigned n_slots;
    size_t n_routes;
    atomic_ullong reloads[2]; /* [0] failed, [1] ok */
    unsigned char status_index[600];
    _Alignas(64) unsigned char slots[];
};

int mtls__metrics_new(unsigned n_slots, size_t n_routes, struct mtls__metrics **out, mtls_err *err)
{
    size_t slot_size = sizeof(struct mtls__metrics_slot) + (n_routes + 1) * ROW_LEN * 8;
    size_t size;
    struct mtls__metrics *m;

    *out = NULL;
    slot_size = (slot_size + 63) & ~(size_t)63; /* one writer per cache line */
    size = sizeof(*m) + n_slots * slot_size;
    m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return mtls_err_sys(err, MTLS_E_NOMEM, errno, "cannot map the metrics' shared memory");
    /* Fresh anonymous memory is zero: every counter starts at 0. */
    m->map_size = size;
    m->slot_size = slot_size;
    m->n_slots = n_slots;
    m->n_routes = n_routes;
    for (int st = 0; st < 600; st++) {
        size_t i = st >= 100 ? N_CODES + (size_t)(st / 100) - 1 : N_STATUS - 1;

        for (size_t k = 0; k < N_CODES; k++)
            if (status_codes[k] == st)
                i = k;
        m->status_index[st] = (unsigned char)i;
    }
    *out = m;
    return 0;
}

void mtls__metrics_free(struct mtls__metrics *m)
{
    if (m != NULL)
        munmap(m, m->map_size);
}

struct mtls__metrics_slot *mtls__metrics_slot(struct mtls__metrics *m, unsigned slot)
{
    if (m == NULL || slot >= m->n_slots)
        return NULL;
    return (struct mtls__metrics_slot *)(void *)(m->slots + slot * m->slot_size);
}

static const struct mtls__metrics_slot *slot_at(const struct mtls__metrics *m, unsigned slot)
{
    return (const struct mtls__metrics_slot *)(const void *)(m->slots + slot * m->slot_size);
}

/* One writer per slot: a plain add, made visible to readers without a lock. */
static inline void add(atomic_ullong *a, unsigned long long n)
{
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

void mtls__metrics_handshake(struct mtls__metrics_slot *s, int result, int resumed, int code)
{
    add(&s->handshakes[result], 1);
    if (resumed)
        add(&s->resumed, 1);
    if (result == MTLS__HS_REJECTED || result == MTLS__HS_UNVERIFIED)
        add(&s->refused[mtls_verify_reason_of(code)], 1);
}

void mtls__metrics_request(struct mtls__metrics_slot *s, const struct mtls__metrics *m, long route,
                           int status, uint64_t ns)
{
    size_t r = route >= 0 && (size_t)route < m->n_routes ? (size_t)route : m->n_routes;
    atomic_ullong *row = s->rows + r * ROW_LEN;
    size_t b = 0;

    add(&row[ROW_STATUS + (status >= 0 && status < 600 ? m->status_index[status] : N_STATUS - 1)],
        1);
    while (b < N_BUCKETS && ns > bucket_ns[b])
        b++;
    add(&row[ROW_BUCKETS + b], 1);
    add(&row[ROW_SUM], ns);
}

void mtls__metrics_upstream_error(struct mtls__metrics_slot *s, int status, int cause)
{
    if (cause < 0 || cause >= MTLS_UPSTREAM_CAUSES)
        cause = MTLS_UPSTREAM_INTERNAL;
    add(&s->upstream[status == 504][cause], 1);
}

void mtls__metrics_denial(struct mtls__metrics_slot *s)
{
    add(&s->denials, 1);
}

void mtls__metrics_reload(struct mtls__metrics *m, int ok)
{
    if (m != NULL)
        atomic_fetch_add_explicit(&m->reloads[ok != 0], 1, memory_order_relaxed);
}

/* ---- exposition ---------------------------------------------------------- */

struct out {
    char *p;
    size_t len, cap;
    int failed;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (o->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        {
            size_t cap = o->cap * 2 + (size_t)n;
            char *grown = realloc(o->p, cap);

            if (grown == NULL) {
                o->failed = 1;
                return;
            }
            o->p = grown;
            o->cap = cap;
        }
    }
}

/* A label value: backslash, double quote and newline escaped (text format 0.0.4). */
static const char *label(const char *in, char *buf, size_t size)
{
    size_t used = 0;

    for (; *in != '\0' && used + 3 < size; in++) {
        if (*in == '\\' || *in == '"') {
            buf[used++] = '\\';
            buf[used++] = *in;
        } else if (*in == '\n') {
            buf[used++] = '\\';
            buf[used++] = 'n';
        } else {
            buf[used++] = *in;
        }
    }
    buf[used] = '\0';
    return buf;
}

static void help(struct out *o, const char *name, const char *type, const char *text)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* The sum over all slots of the counter at the same place as field in slot 0. */
static unsigned long long sum(const struct mtls__metrics *m, const atomic_ullong *field0)
{
    size_t off = (size_t)((const unsigned char *)field0 - m->slots);
    unsigned long long total = 0;

    for (unsigned i = 0; i < m->n_slots; i++)
        total += atomic_load_explicit(
            (const atomic_ullong *)(const void *)(m->slots + i * m->slot_size + off),
            memory_order_relaxed);
    return total;
}

static void status_label(size_t i, char *buf, size_t size)
{
    static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};

    if (i < N_CODES)
        snprintf(buf, size, "%d", status_codes[i]);
    else
        snprintf(buf, size, "%s", classes[i - N_CODES]);
}

static const char *route_label(const struct mtls__metrics_view *v, size_t r, char *buf, size_t size)
{
    const mtls_http_route *route;
    char path[600];

    if (v->routes == NULL || r >= v->routes->n || r >= v->m->n_routes)
        return label("none", buf, size);
    route = &v->routes->v[r];
    /* A prefix route is labelled as a pattern, so that "/api" exact and prefix stay apart. */
    snprintf(path, sizeof(path), "%s%s", route->path,
             (route->flags & MTLS_ROUTE_PREFIX) && strcmp(route->path, "/") != 0 ? "*" : "");
    if (route->flags & MTLS_ROUTE_PREFIX && strcmp(route->path, "/") == 0)
        snprintf(path, sizeof(path), "/*");
    return label(path, buf, size);
}

/*
 * Route rows by label: two routes may share one ("/x" in a file and built
 * in), and a label may appear once. canon[r] is the first row with r's label.
 */
struct route_rows {
    size_t n;
    char (*label)[700];
    size_t *canon;
};

static int route_rows_init(struct route_rows *rr, const struct mtls__metrics_view *v)
{
    rr->n = v->m->n_routes + 1;
    rr->label = calloc(rr->n, sizeof(*rr->label));
    rr->canon = calloc(rr->n, sizeof(*rr->canon));
    if (rr->label == NULL || rr->canon == NULL)
        return MTLS_E_NOMEM;
    for (size_t r = 0; r < rr->n; r++) {
        route_label(v, r, rr->label[r], sizeof(rr->label[r]));
        rr->canon[r] = r;
        for (size_t k = 0; k < r; k++) {
            if (strcmp(rr->label[k], rr->label[r]) == 0) {
                rr->canon[r] = k;
                break;
            }
        }
    }
    return 0;
}

static void route_rows_release(struct route_rows *rr)
{
    free(rr->label);
    free(rr->canon);
}

/* Column col summed over every slot and every row with row r's label. */
static unsigned long long label_sum(const struct mtls__metrics *m, const struct route_rows *rr,
                                    size_t r, size_t col)
{
    const struct mtls__metrics_slot *s0 = slot_at(m, 0);
    unsigned long long total = 0;

    for (size_t k = r; k < rr->n; k++)
        if (rr->canon[k] == r)
            total += sum(m, &s0->rows[k * ROW_LEN + col]);
    return total;
}

static void format_routes(const struct mtls__metrics_view *v, struct out *o)
{
    const struct mtls__metrics *m = v->m;
    struct route_rows rr = {0, NULL, NULL};
    char b[32];

    if (route_rows_init(&rr, v) != 0) {
        o->failed = 1;
        goto out;
    }
    help(o, "mtls_requests_total", "counter", "Answered requests by route pattern and status.");
    for (size_t r = 0; r < rr.n; r++) {
        if (rr.canon[r] != r)
            continue;
        for (size_t st = 0; st < N_STATUS; st++) {
            unsigned long long n = label_sum(m, &rr, r, ROW_STATUS + st);

            if (n == 0)
                continue;
            status_label(st, b, sizeof(b));
            put(o, "mtls_requests_total{route=\"%s\",status=\"%s\"} %llu\n", rr.label[r], b, n);
        }
    }
    help(o, "mtls_request_duration_seconds", "histogram",
         "Time from a request's first byte to its response being logged, by route pattern.");
    for (size_t r = 0; r < rr.n; r++) {
        unsigned long long cum = 0;

        if (rr.canon[r] != r)
            continue;
        for (size_t k = 0; k <= N_BUCKETS; k++) {
            cum += label_sum(m, &rr, r, ROW_BUCKETS + k);
            put(o, "mtls_request_duration_seconds_bucket{route=\"%s\",le=\"%s\"} %llu\n",
                rr.label[r], k < N_BUCKETS ? bucket_le[k] : "+Inf", cum);
        }
        put(o, "mtls_request_duration_seconds_sum{route=\"%s\"} %.9f\n", rr.label[r],
            (double)label_sum(m, &rr, r, ROW_SUM) / 1e9);
        put(o, "mtls_request_duration_seconds_count{route=\"%s\"} %llu\n", rr.label[r], cum);
    }
out:
    route_rows_release(&rr);
}

static void format_counters(const struct mtls__metrics_view *v, struct out *o)
{
    const struct mtls__metrics *m = v->m;
    const struct mtls__metrics_slot *s0 = slot_at(m, 0);
    static const char *const results[MTLS__HS_RESULTS] = {"ok", "unverified", "rejected", "failed"};

    help(o, "mtls_handshakes_total", "counter",
         "TLS handshakes by result (ok, unverified, rejected, failed).");
    for (int i = 0; i < MTLS__HS_RESULTS; i++)
        put(o, "mtls_handshakes_total{result=\"%s\"} %llu\n", results[i],
            sum(m, &s0->handshakes[i]));
    help(o, "mtls_handshakes_resumed_total", "counter", "TLS handshakes that resumed a session.");
    put(o, "mtls_handshakes_resumed_total %llu\n", sum(m, &s0->resumed));
    help(o, "mtls_handshake_rejections_total", "counter",
         "Client certificates refused (or not sent), by reason.");
    for (int i = 0; i < MTLS_VERIFY_REASONS; i++)
        put(o, "mtls_handshake_rejections_total{reason=\"%s\"} %llu\n",
            mtls_verify_reason_label((enum mtls_verify_reason)i), sum(m, &s0->refused[i]));
    help(o, "mtls_connections_open", "gauge", "Open client connections, all workers together.");
    put(o, "mtls_connections_open %u\n",
        v->open_conns ? atomic_load_explicit(v->open_conns, memory_order_relaxed) : 0u);

    format_routes(v, o);
    help(o, "mtls_upstream_errors_total", "counter",
         "Reverse-proxy failures answered 502/504 (or cut short), by status and cause.");
    for (int st = 0; st < 2; st++)
        for (int c = 0; c < MTLS_UPSTREAM_CAUSES; c++) {
            unsigned long long n = sum(m, &s0->upstream[st][c]);

            /* Every cause is possible with 502; only the timeout gives 504. */
            if (n == 0 && st == 1 && c != MTLS_UPSTREAM_TIMEOUT)
                continue;
            if (n == 0 && st == 0 && c == MTLS_UPSTREAM_TIMEOUT)
                continue;
            put(o, "mtls_upstream_errors_total{status=\"%d\",cause=\"%s\"} %llu\n", st ? 504 : 502,
                mtls__upstream_cause_label(c), n);
        }
    help(o, "mtls_authz_denials_total", "counter",
         "Requests an --allow rule denied (mode dry_run: logged and let through).");
    put(o, "mtls_authz_denials_total{mode=\"%s\"} %llu\n", v->dry_run ? "dry_run" : "enforced",
        sum(m, &s0->denials));
    help(o, "mtls_reloads_total", "counter", "Reloads (SIGHUP) by outcome.");
    put(o, "mtls_reloads_total{outcome=\"ok\"} %llu\n",
        atomic_load_explicit(&m->reloads[1], memory_order_relaxed));
    put(o, "mtls_reloads_total{outcome=\"failed\"} %llu\n",
        atomic_load_explicit(&m->reloads[0], memory_order_relaxed));
}

static void format_gauges(SSL_CTX *ctx, struct out *o)
{
    X509 *cert = ctx != NULL ? SSL_CTX_get0_certificate(ctx) : NULL;
    X509_STORE *store = ctx != NULL ? SSL_CTX_get_cert_store(ctx) : NULL;
    STACK_OF(X509_OBJECT) * objs;
    char name[MTLS_NAME_MAX], esc[2 * MTLS_NAME_MAX];

    help(o, "mtls_server_certificate_not_after_seconds", "gauge",
         "notAfter of the server certificate (Unix time).");
    if (cert != NULL) {
        mtls_name_oneline(X509_get_subject_name(cert), name, sizeof(name));
        put(o, "mtls_server_certificate_not_after_seconds{subject=\"%s\"} %lld\n",
            label(name, esc, sizeof(esc)), (long long)mtls_asn1_time(X509_get0_notAfter(cert)));
    }
    if (store == NULL)
        return;
    X509_STORE_lock(store);
    objs = X509_STORE_get0_objects(store);
    help(o, "mtls_client_ca_not_after_seconds", "gauge",
         "notAfter of each trusted client CA certificate (Unix time).");
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

        if (ca == NULL)
            continue;
        mtls_name_oneline(X509_get_subject_name(ca), name, sizeof(name));
        put(o, "mtls_client_ca_not_after_seconds{subject=\"%s\"} %lld\n",
            label(name, esc, sizeof(esc)), (long long)mtls_asn1_time(X509_get0_notAfter(ca)));
    }
    help(o, "mtls_crl_next_update_seconds", "gauge",
         "nextUpdate of each loaded CRL (Unix time), by issuer.");
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, i));

        if (crl == NULL || X509_CRL_get0_nextUpdate(crl) == NULL)
            continue;
        mtls_name_oneline(X509_CRL_get_issuer(crl), name, sizeof(name));
        put(o, "mtls_crl_next_update_seconds{issuer=\"%s\"} %lld\n", label(name, esc, sizeof(esc)),
            (long long)mtls_asn1_time(X509_CRL_get0_nextUpdate(crl)));
    }
    X509_STORE_unlock(store);
}

int mtls__metrics_format(const struct mtls__metrics_view *v, char **out, size_t *len)
{
    struct out o = {malloc(16384), 0, 16384, 0};

    *out = NULL;
    *len = 0;
    if (o.p == NULL)
        return MTLS_E_NOMEM;
    help(&o, "mtls_build_info", "gauge", "The mtls version and the OpenSSL it runs with.");
    put(&o, "mtls_build_info{version=\"%s\",openssl=\"%s\"} 1\n", MTLS_VERSION,
        OpenSSL_version(OPENSSL_VERSION_STRING));
    format_counters(v, &o);
    format_gauges(v->ssl_ctx != NULL ? *v->ssl_ctx : NULL, &o);
    if (o.failed) {
        free(o.p);
        return MTLS_E_NOMEM;
    }
    *out = o.p;
    *len = o.len;
    return 0;
}
