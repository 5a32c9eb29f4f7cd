/*
 * The mTLS load generator: one thread, one libuv loop, one client SSL_CTX,
 * many connections. Each connection is a small state machine
 *
 *   connect -> handshake -> write request -> read response -> (next request | close)
 *
 * on a non-blocking socket watched with uv_poll_t; OpenSSL reads and writes
 * the socket itself (no memory BIOs). A closed connection is replaced by a
 * new one, so that the number of connections stays constant for the run.
 * One 10 ms timer checks deadlines, restarts connections after an error and
 * ends the run.
 */
#include "mtls/loadgen.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <uv.h>

#include "mtls/client.h"
#include "mtls/http_response.h"

#define HEADER_MAX 8192            /* response heads larger than this are a protocol error */
#define SCRATCH_SIZE 16384         /* responses are read here, parsed, and dropped */
#define TICK_MS 10                 /* deadline and restart checks */
#define RETRY_DELAY_NS 10000000ull /* a failed connection is replaced after 10 ms */
#define IDLE_MAX_HANDSHAKING 128   /* idle mode: handshakes in flight at once */
#define NS 1000000000ull

/* ---- latency histogram ----------------------------------------------- */

/*
 * Log-linear buckets over microseconds: exact below 64 us, then 32 buckets
 * per power of two (about 3 % resolution), up to 2^37 us.
 */
#define HIST_LINEAR 64
#define HIST_SUB 32
#define HIST_MAX_EXP 37
#define HIST_BUCKETS (HIST_LINEAR + (HIST_MAX_EXP - 6 + 1) * HIST_SUB)

struct hist {
    uint64_t n[HIST_BUCKETS];
    uint64_t count;
    double sum;
    uint64_t max;
};

static size_t hist_index(uint64_t us)
{
    unsigned e;

    if (us < HIST_LINEAR)
        return (size_t)us;
    if (us >= (1ull << (HIST_MAX_EXP + 1)))
        us = (1ull << (HIST_MAX_EXP + 1)) - 1;
    e = 63u - (unsigned)__builtin_clzll(us);
    return HIST_LINEAR + (size_t)(e - 6) * HIST_SUB + (size_t)((us >> (e - 5)) - HIST_SUB);
}

/* The lowest value that falls into bucket i. */
static uint64_t hist_value(size_t i)
{
    size_t e, m;

    if (i < HIST_LINEAR)
        return i;
    e = (i - HIST_LINEAR) / HIST_SUB + 6;
    m = (i - HIST_LINEAR) % HIST_SUB + HIST_SUB;
    return (uint64_t)m << (e - 5);
}

static void hist_add(struct hist *h, uint64_t ns)
{
    uint64_t us = ns / 1000;

    h->n[hist_index(us)]++;
    h->count++;
    h->sum += (double)us;
    if (us > h->max)
        h->max = us;
}

/* Takes back a value added earlier (a handshake the server refused after all). */
static void hist_remove(struct hist *h, uint64_t ns)
{
    uint64_t us = ns / 1000;
    size_t i = hist_index(us);

    if (h->n[i] == 0)
        return;
    h->n[i]--;
    h->count--;
    h->sum -= (double)us;
}

static double hist_percentile(const struct hist *h, double p)
{
    uint64_t rank = (uint64_t)(p * (double)h->count + 0.999999), seen = 0;

    if (h->count == 0)
        return 0;
    if (rank < 1)
        rank = 1;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->n[i];
        if (seen >= rank) {
            double v = (double)hist_value(i);

            return v > (double)h->max ? (double)h->max : v;
        }
    }
    return (double)h->max;
}

static void hist_summary(const struct hist *h, mtls_loadgen_latency *out)
{
    out->count = h->count;
    out->mean = h->count ? h->sum / (double)h->count : 0;
    out->p50 = hist_percentile(h, 0.50);
    out->p99 = hist_percentile(h, 0.99);
    out->p999 = hist_percentile(h, 0.999);
    out->max = (double)h->max;
}

/* ---- state ------------------------------------------------------------ */

enum conn_state {
    C_FREE,       /* not in use: the run is ending or its request budget is spent */
    C_WAIT,       /* waiting for restart_at before connecting again */
    C_CONNECTING, /* TCP connect in progress */
    C_HANDSHAKE,  /* TLS handshake in progress */
    C_WRITING,    /* writing the request */
    C_READING,    /* reading the response */
    C_HOLD,       /* idle mode: established, sending nothing */
    C_CLOSING,    /* uv_close() called, waiting for its callback */
};

struct loadgen;

struct conn {
    struct loadgen *lg;
    uv_poll_t poll;
    int fd;
    SSL *ssl;
    enum conn_state state;
    int events;          /* what poll currently watches */
    int restart;         /* after closing: 1 start again, 0 stay free */
    uint64_t restart_at; /* C_WAIT: when to connect again (ns) */
    uint64_t t_connect;  /* when connect started (ns) */
    uint64_t t_request;  /* when the current request was started (ns) */
    uint64_t hs_ns;      /* how long the handshake took (ns) */
    uint64_t deadline;   /* ns; 0 when no deadline */
    uint64_t n_requests; /* responses received on this connection */
    uint64_t reserved;   /* request attempts reserved by this connection (--requests) */
    uint64_t started;    /* ... of which started */
    int handshake_counted;
    int resumed;
    int broken; /* OpenSSL reported a fatal error: no close_notify */
    int got_response_bytes;
    int alert; /* last alert received from the server, or -1 */
    /* request being written */
    const char *req;
    int req_len;
    /* response being read (the body is parsed and dropped) */
    mtls_http_response resp;
    /* HTTP/2: the session, its bytes to write, and a start time per stream in flight */
    nghttp2_session *h2;
    char *h2_out;
    size_t h2_out_len, h2_out_off, h2_out_cap;
    struct h2_slot *slots;
    unsigned inflight;
    uint64_t submitted;
    int h2_close; /* a callback asked for the close: 1 restart, 2 stay free */
};

struct h2_slot {
    uint64_t t; /* when the request was submitted (ns); 0: free */
    int status;
};

struct loadgen {
    const mtls_loadgen_opts *opts;
    mtls_loadgen_result *res;
    uv_loop_t loop;
    uv_timer_t timer;
    SSL_CTX *ctx;
    SSL_SESSION *session;  /* newest session ticket, for --resume */
    SSL_SESSION **tickets; /* unused tickets, newest last: each is offered once */
    size_t n_tickets, cap_tickets;
    X509 *verified; /* the server certificate that passed verification */
    mtls_url url;
    struct sockaddr_storage addr; /* the address every connection goes to */
    socklen_t addr_len;
    int spare_fd;    /* connected while choosing addr: the first connection's socket, or -1 */
    char *req_keep;  /* request text, keep-alive */
    char *req_close; /* request text with Connection: close */
    struct conn *conns;
    size_t n_conns;
    size_t open_conns;  /* connections not C_FREE */
    size_t handshaking; /* connections in C_CONNECTING or C_HANDSHAKE */
    uint64_t attempts;  /* request attempts started (for opts->requests) */
    uint64_t t_start, t_end, next_progress;
    int stopping;
    int finished_sampled;
    struct hist lat, hs_lat;
    struct rusage ru_start;
    double server_cpu_start;
    char scratch[SCRATCH_SIZE];
};

static void conn_start(struct conn *c);
static void conn_close(struct conn *c, int restart, uint64_t delay_ns);
static void conn_handshake(struct conn *c);
static void conn_fail(struct conn *c, int in_handshake);
static void conn_write(struct conn *c);
static void conn_read(struct conn *c);
static void loadgen_stop(struct loadgen *lg);
static void h2_begin(struct conn *c);
static void h2_io(struct conn *c);

void mtls_loadgen_opts_init(mtls_loadgen_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->connections = 16;
    opts->streams = 10;
    opts->duration = 10;
    opts->timeout = 10;
    opts->requests_per_conn = 0;
}

/* ---- /proc ------------------------------------------------------------ */

int mtls_loadgen_proc_usage(pid_t pid, double *cpu_seconds, long *rss_kb, mtls_err *err)
{
    char path[64], buf[2048], *p;
    FILE *f = NULL;
    size_t n;
    int rc = 0;

    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOTFOUND, "no process with pid %ld", (long)pid);
        goto out;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    f = NULL;
    /* The command name may hold spaces and parentheses: fields start after the last ')'. */
    p = strrchr(buf, ')');
    if (p == NULL) {
        rc = mtls_err_set(err, MTLS_E_IO, "cannot parse '%s'", path);
        goto out;
    }
    if (cpu_seconds != NULL) {
        unsigned long long utime = 0, stime = 0;

        /* After ')': field 3 (state) ... field 14 utime, field 15 stime. */
        if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                   &stime) != 2) {
            rc = mtls_err_set(err, MTLS_E_IO, "cannot parse '%s'", path);
            goto out;
        }
        *cpu_seconds = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
    }
    if (rss_kb != NULL) {
        char line[256];

        *rss_kb = 0;
        snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
        f = fopen(path, "r");
        if (f == NULL) {
            rc = mtls_err_set(err, MTLS_E_NOTFOUND, "no process with pid %ld", (long)pid);
            goto out;
        }
        while (fgets(line, sizeof(line), f) != NULL) {
            if (strncmp(line, "VmRSS:", 6) == 0) {
                *rss_kb = strtol(line + 6, NULL, 10);
                break;
            }
        }
    }
out:
    if (f != NULL)
        fclose(f);
    return rc;
}

/* Sums CPU seconds and RSS over the server pids; a pid that is gone counts 0. */
static void server_usage(const struct loadgen *lg, double *cpu, long *rss)
{
    *cpu = 0;
    *rss = 0;
    for (size_t i = 0; i < lg->opts->n_server_pids; i++) {
        double c = 0;
        long r = 0;

        if (mtls_loadgen_proc_usage(lg->opts->server_pids[i], &c, &r, NULL) == 0) {
            *cpu += c;
            *rss += r;
        }
    }
}

/* ---- results ---------------------------------------------------------- */

static void add_reason(mtls_loadgen_reason *table, size_t *n, const char *name)
{
    size_t i;

    for (i = 0; i < *n; i++) {
        if (strcmp(table[i].name, name) == 0) {
            table[i].count++;
            return;
        }
    }
    if (*n == MTLS_LOADGEN_MAX_REASONS) {
        /* The table is full: the last row collects the rest. */
        i = MTLS_LOADGEN_MAX_REASONS - 1;
        snprintf(table[i].name, sizeof(table[i].name), "other");
        table[i].count++;
        return;
    }
    snprintf(table[*n].name, sizeof(table[*n].name), "%s", name);
    table[*n].count = 1;
    (*n)++;
}

static double seconds_of(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* Connections established now (handshake done, not closing). */
static uint64_t count_established(const struct loadgen *lg)
{
    uint64_t n = 0;

    for (size_t i = 0; i < lg->n_conns; i++) {
        enum conn_state s = lg->conns[i].state;

        n += s == C_HOLD || s == C_WRITING || s == C_READING;
    }
    return n;
}

static void fill_running(struct loadgen *lg, uint64_t now)
{
    lg->res->established = count_established(lg);
    lg->res->elapsed = (double)(now - lg->t_start) / 1e9;
    hist_summary(&lg->lat, &lg->res->latency);
    hist_summary(&lg->hs_lat, &lg->res->handshake_latency);
}

/* ---- connections ------------------------------------------------------ */

static void watch(struct conn *c, int events);

static void on_poll(uv_poll_t *handle, int status, int events)
{
    struct conn *c = handle->data;

    (void)events;
    if (status < 0) {
        if (c->state == C_CONNECTING) {
            c->lg->res->err_connect++;
            conn_close(c, 1, RETRY_DELAY_NS);
        } else if (c->state != C_CLOSING && c->state != C_FREE && c->state != C_WAIT) {
            conn_fail(c, c->state == C_HANDSHAKE);
        }
        return;
    }
    switch (c->state) {
    case C_CONNECTING: {
        int so_err = 0;
        socklen_t len = sizeof(so_err);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &so_err, &len) != 0 || so_err != 0) {
            c->lg->res->err_connect++;
            conn_close(c, 1, RETRY_DELAY_NS);
            return;
        }
        c->state = C_HANDSHAKE;
        conn_handshake(c);
        return;
    }
    case C_HANDSHAKE:
        conn_handshake(c);
        return;
    case C_WRITING:
        if (c->h2 != NULL)
            h2_io(c);
        else
            conn_write(c);
        return;
    case C_READING:
    case C_HOLD:
        if (c->h2 != NULL)
            h2_io(c);
        else
            conn_read(c);
        return;
    default:
        return;
    }
}

static void watch(struct conn *c, int events)
{
    if (c->events == events)
        return;
    c->events = events;
    uv_poll_start(&c->poll, events, on_poll);
}

/*
 * After an SSL call returned r: when OpenSSL only waits for the socket, watch
 * for what it needs and return SSL_ERROR_NONE; otherwise return its error.
 */
static int wait_for_ssl(struct conn *c, int r)
{
    int e = SSL_get_error(c->ssl, r);

    if (e == SSL_ERROR_WANT_READ)
        watch(c, UV_READABLE);
    else if (e == SSL_ERROR_WANT_WRITE)
        watch(c, UV_WRITABLE);
    else
        return e;
    return SSL_ERROR_NONE;
}

/* The handshake counted earlier was refused after all (TLS 1.3 sends the
 * client's verdict after the client's side of the handshake is done). */
static void uncount_handshake(struct conn *c)
{
    mtls_loadgen_result *res = c->lg->res;

    if (!c->handshake_counted)
        return;
    c->handshake_counted = 0;
    hist_remove(&c->lg->hs_lat, c->hs_ns);
    res->handshakes--;
    if (c->resumed)
        res->resumed--;
}

/*
 * Classifies a failed connection. Before the first response byte, an alert
 * from the server (or a handshake that never finished) is a handshake
 * error; afterwards it is a closed connection.
 */
static void conn_fail(struct conn *c, int in_handshake)
{
    mtls_loadgen_result *res = c->lg->res;
    char reason[160];

    if (c->alert >= 0 && !c->got_response_bytes && (in_handshake || c->handshake_counted)) {
        uncount_handshake(c);
        res->err_handshake++;
        add_reason(res->handshake_reasons, &res->n_handshake_reasons,
                   SSL_alert_desc_string_long(c->alert));
    } else if (in_handshake) {
        unsigned long e = ERR_peek_last_error();
        long v = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;

        if (v != X509_V_OK)
            snprintf(reason, sizeof(reason), "local: server certificate: %s",
                     X509_verify_cert_error_string(v));
        else if (e != 0 && ERR_reason_error_string(e) != NULL)
            snprintf(reason, sizeof(reason), "local: %s", ERR_reason_error_string(e));
        else
            snprintf(reason, sizeof(reason), "connection closed by server");
        res->err_handshake++;
        add_reason(res->handshake_reasons, &res->n_handshake_reasons, reason);
    } else {
        uncount_handshake(c);
        res->err_closed++;
    }
    ERR_clear_error();
    c->broken = 1;
    conn_close(c, 1, RETRY_DELAY_NS);
}

static int setup_ssl(struct conn *c)
{
    struct loadgen *lg = c->lg;

    c->ssl = SSL_new(lg->ctx);
    if (c->ssl == NULL)
        return -1;
    SSL_set_app_data(c->ssl, c);
    if (SSL_set_fd(c->ssl, c->fd) != 1)
        return -1;
    if (mtls_client_set_peer_name(c->ssl, lg->url.host, NULL) != 0)
        return -1;
    if (lg->opts->resume) {
        /*
         * Like a real client, offer each ticket once (servers may keep
         * single-use tickets); when none is left, offer the newest again.
         */
        SSL_SESSION *s = lg->n_tickets > 0 ? lg->tickets[--lg->n_tickets] : NULL;
        int ok = 1;

        if (s != NULL) {
            ok = SSL_set_session(c->ssl, s);
            SSL_SESSION_free(s);
        } else if (lg->session != NULL) {
            ok = SSL_set_session(c->ssl, lg->session);
        }
        if (ok != 1)
            return -1;
    }
    return 0;
}

static void start_request(struct conn *c, int first)
{
    struct loadgen *lg = c->lg;
    const mtls_loadgen_opts *o = lg->opts;
    int last;

    /*
     * With --requests, a connection reserves its requests when it connects:
     * all of them when they are bounded per connection (so that N requests
     * make exactly ceil(N / requests-per-conn) connections), else one at a
     * time; the first is reserved there, the rest here.
     */
    if (!first) {
        if (lg->stopping) {
            conn_close(c, 0, 0);
            return;
        }
        if (o->requests && o->requests_per_conn == 0) {
            if (lg->attempts >= o->requests) {
                conn_close(c, 0, 0);
                return;
            }
            lg->attempts++;
            c->reserved++;
        } else if (o->requests && c->started >= c->reserved) {
            conn_close(c, 1, 0);
            return;
        }
    }
    if (!first)
        c->started++;
    last = o->requests_per_conn != 0 && (c->n_requests + 1 >= o->requests_per_conn ||
                                         (o->requests && c->started >= c->reserved));
    c->req = last ? lg->req_close : lg->req_keep;
    c->req_len = (int)strlen(c->req);
    c->t_request = uv_hrtime();
    c->deadline = c->t_request + (uint64_t)(o->timeout * 1e9);
    mtls_http_response_reset(&c->resp);
    c->state = C_WRITING;
    conn_write(c);
}

static void conn_handshake(struct conn *c)
{
    struct loadgen *lg = c->lg;
    int r;

    if (c->ssl == NULL && setup_ssl(c) != 0) {
        conn_fail(c, 1);
        return;
    }
    r = SSL_connect(c->ssl);
    if (r == 1) {
        uint64_t now = uv_hrtime();

        c->hs_ns = now - c->t_connect;
        hist_add(&lg->hs_lat, c->hs_ns);
        lg->handshaking--;
        c->handshake_counted = 1;
        c->resumed = SSL_session_reused(c->ssl);
        lg->res->handshakes++;
        if (c->resumed)
            lg->res->resumed++;
        if (lg->opts->idle) {
            c->state = C_HOLD;
            c->deadline = 0;
            /* Read what the server sends: TLS 1.3 session tickets, or its alert. */
            conn_read(c);
            return;
        }
        if (lg->opts->http2) {
            h2_begin(c);
            return;
        }
        start_request(c, 1);
        return;
    }
    if (wait_for_ssl(c, r) != SSL_ERROR_NONE)
        conn_fail(c, 1);
}

static void conn_write(struct conn *c)
{
    int r = SSL_write(c->ssl, c->req, c->req_len);

    if (r > 0) {
        /* The answer cannot be there yet: wait for it rather than try a read. */
        c->state = C_READING;
        if (SSL_has_pending(c->ssl))
            conn_read(c);
        else
            watch(c, UV_READABLE);
        return;
    }
    if (wait_for_ssl(c, r) == SSL_ERROR_NONE)
        return;
    /* The server may have refused us and closed: read its alert if it is there. */
    if (!c->got_response_bytes && c->alert < 0) {
        char b[64];

        ERR_clear_error();
        (void)SSL_read(c->ssl, b, sizeof(b));
    }
    conn_fail(c, 0);
}

/* ---- responses -------------------------------------------------------- */

static void response_done(struct conn *c)
{
    struct loadgen *lg = c->lg;
    const mtls_loadgen_opts *o = lg->opts;
    mtls_loadgen_result *res = lg->res;

    hist_add(&lg->lat, uv_hrtime() - c->t_request);
    res->responses++;
    c->n_requests++;
    if (c->resp.status == 200) {
        res->requests++;
    } else {
        char code[16];

        snprintf(code, sizeof(code), "%d", c->resp.status);
        res->err_status++;
        add_reason(res->status_reasons, &res->n_status_reasons, code);
    }
    c->deadline = 0;
    if (!c->resp.keep_alive || (o->requests_per_conn && c->n_requests >= o->requests_per_conn)) {
        conn_close(c, 1, 0);
        return;
    }
    start_request(c, 0);
}

static void conn_read(struct conn *c)
{
    struct loadgen *lg = c->lg;

    for (;;) {
        int r = SSL_read(c->ssl, lg->scratch, (int)sizeof(lg->scratch));
        int e, done;

        if (r > 0) {
            if (c->state != C_READING)
                continue; /* idle mode: nothing is expected; drop it */
            c->got_response_bytes = 1;
            done = mtls_http_response_feed(&c->resp, lg->scratch, (size_t)r, NULL);
            if (done < 0) {
                lg->res->err_protocol++;
                conn_close(c, 1, RETRY_DELAY_NS);
                return;
            }
            if (done == MTLS_HTTP_RESPONSE_DONE) {
                response_done(c);
                return;
            }
            continue;
        }
        e = wait_for_ssl(c, r);
        if (e == SSL_ERROR_NONE)
            return;
        /* A body that runs until the server closes ends with the close. */
        if ((e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL) && c->state == C_READING &&
            c->resp.framing == MTLS_HTTP_FRAMING_CLOSE &&
            mtls_http_response_eof(&c->resp) == MTLS_HTTP_RESPONSE_DONE) {
            ERR_clear_error();
            response_done(c);
            return;
        }
        conn_fail(c, 0);
        return;
    }
}

static void on_closed(uv_handle_t *handle)
{
    struct conn *c = handle->data;
    struct loadgen *lg = c->lg;

    if (!c->restart || lg->stopping) {
        c->state = C_FREE;
        lg->open_conns--;
        if (lg->open_conns == 0)
            loadgen_stop(lg);
        return;
    }
    if (c->restart_at > uv_hrtime()) {
        c->state = C_WAIT;
        return;
    }
    conn_start(c);
}

/*
 * Closes the connection's socket and handle. restart: connect again when the
 * close is done (after delay_ns), or stay free.
 */
static void conn_close(struct conn *c, int restart, uint64_t delay_ns)
{
    struct loadgen *lg = c->lg;

    if (c->state == C_CONNECTING || c->state == C_HANDSHAKE)
        lg->handshaking--;
    /* Attempts reserved but never started go back to the pool. */
    if (c->reserved > c->started)
        lg->attempts -= c->reserved - c->started;
    c->reserved = c->started = 0;
    if (c->h2 != NULL) {
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
    }
    free(c->slots);
    free(c->h2_out);
    c->slots = NULL;
    c->h2_out = NULL;
    c->h2_out_len = c->h2_out_off = c->h2_out_cap = 0;
    c->inflight = 0;
    c->h2_close = 0;
    if (c->ssl != NULL) {
        /* A healthy connection says goodbye; the result does not matter. */
        if (!c->broken && (c->state == C_READING || c->state == C_WRITING || c->state == C_HOLD))
            (void)SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
        ERR_clear_error();
    }
    uv_poll_stop(&c->poll);
    close(c->fd);
    c->fd = -1;
    c->state = C_CLOSING;
    c->restart = restart;
    c->restart_at = uv_hrtime() + delay_ns;
    uv_close((uv_handle_t *)&c->poll, on_closed);
}

/* ---- HTTP/2 ------------------------------------------------------------- */

/* Whether another stream may start on c (--requests, --requests-per-conn, the end). */
static int h2_may_submit(struct conn *c)
{
    struct loadgen *lg = c->lg;
    const mtls_loadgen_opts *o = lg->opts;

    if (lg->stopping || c->inflight >= o->streams)
        return 0;
    if (o->requests_per_conn != 0 && c->submitted >= o->requests_per_conn)
        return 0;
    if (c->submitted == 0)
        return 1; /* conn_start reserved the first */
    if (o->requests) {
        if (lg->attempts >= o->requests)
            return 0;
        lg->attempts++;
        c->reserved++;
        c->started++;
    }
    return 1;
}

/* Starts streams until o->streams are in flight. */
static void h2_submit(struct conn *c)
{
    struct loadgen *lg = c->lg;
    const mtls_url *u = &lg->url;
    char authority[300];
    int v6 = strchr(u->host, ':') != NULL;
    int n = snprintf(authority, sizeof(authority), "%s%s%s:%d", v6 ? "[" : "", u->host,
                     v6 ? "]" : "", u->port);

    while (h2_may_submit(c)) {
        nghttp2_nv nv[] = {
            {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, NGHTTP2_NV_FLAG_NO_COPY_NAME},
            {(uint8_t *)":path", (uint8_t *)u->path, 5, strlen(u->path), 0},
            {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0},
            {(uint8_t *)":authority", (uint8_t *)authority, 10, (size_t)n, 0},
            {(uint8_t *)"user-agent", (uint8_t *)"mtls-bench", 10, 10, 0},
        };
        unsigned i = 0;
        int32_t id;

        while (c->slots[i].t != 0)
            i++;
        c->slots[i].t = uv_hrtime();
        c->slots[i].status = 0;
        id =
            nghttp2_submit_request(c->h2, NULL, nv, sizeof(nv) / sizeof(nv[0]), NULL, &c->slots[i]);
        if (id < 0) {
            c->slots[i].t = 0;
            break;
        }
        c->inflight++;
        c->submitted++;
    }
    if (c->inflight == 0)
        c->h2_close = lg->stopping || lg->opts->requests_per_conn == 0 ? 2 : 1;
}

static int h2_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user)
{
    struct h2_slot *slot;

    (void)flags, (void)user;
    if (f->hd.type != NGHTTP2_HEADERS || namelen != 7 || memcmp(name, ":status", 7) != 0)
        return 0;
    slot = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (slot != NULL && valuelen == 3)
        slot->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    return 0;
}

static int h2_on_close(nghttp2_session *s, int32_t id, uint32_t error, void *user)
{
    struct conn *c = user;
    struct loadgen *lg = c->lg;
    mtls_loadgen_result *res = lg->res;
    struct h2_slot *slot = nghttp2_session_get_stream_user_data(s, id);

    if (slot == NULL || slot->t == 0)
        return 0;
    c->inflight--;
    if (error != NGHTTP2_NO_ERROR || slot->status == 0) {
        res->err_closed++;
    } else {
        hist_add(&lg->lat, uv_hrtime() - slot->t);
        res->responses++;
        c->n_requests++;
        c->got_response_bytes = 1;
        if (slot->status == 200) {
            res->requests++;
        } else {
            char code[16];

            snprintf(code, sizeof(code), "%d", slot->status);
            res->err_status++;
            add_reason(res->status_reasons, &res->n_status_reasons, code);
        }
    }
    slot->t = 0;
    c->deadline = uv_hrtime() + (uint64_t)(lg->opts->timeout * 1e9);
    h2_submit(c);
    return 0;
}

static nghttp2_session_callbacks *h2_callbacks(void)
{
    nghttp2_session_callbacks *cb;

    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    nghttp2_session_callbacks_set_on_header_callback(cb, h2_on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2_on_close);
    return cb;
}

/* The handshake is done: check that h2 was chosen, then start the streams. */
static void h2_begin(struct conn *c)
{
    struct loadgen *lg = c->lg;
    const unsigned char *proto = NULL;
    unsigned int len = 0;
    nghttp2_session_callbacks *cb;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};

    SSL_get0_alpn_selected(c->ssl, &proto, &len);
    if (len != 2 || memcmp(proto, "h2", 2) != 0) {
        lg->res->err_protocol++;
        add_reason(lg->res->status_reasons, &lg->res->n_status_reasons,
                   "the server did not choose h2 (ALPN)");
        conn_close(c, 1, RETRY_DELAY_NS);
        return;
    }
    cb = h2_callbacks();
    c->slots = calloc(lg->opts->streams, sizeof(*c->slots));
    if (cb == NULL || c->slots == NULL || nghttp2_session_client_new(&c->h2, cb, c) != 0 ||
        nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 1) != 0) {
        nghttp2_session_callbacks_del(cb);
        conn_fail(c, 0);
        return;
    }
    nghttp2_session_callbacks_del(cb);
    c->submitted = 0;
    c->deadline = uv_hrtime() + (uint64_t)(lg->opts->timeout * 1e9);
    c->state = C_READING;
    h2_submit(c);
    h2_io(c);
}

/* Writes what the session has to send, reads what came, until the socket would block. */
static void h2_io(struct conn *c)
{
    struct loadgen *lg = c->lg;

    for (;;) {
        const uint8_t *data;
        ssize_t n;
        int r;

        while (c->h2_out_len - c->h2_out_off < SCRATCH_SIZE &&
               (n = nghttp2_session_mem_send(c->h2, &data)) != 0) {
            if (n < 0) {
                lg->res->err_protocol++;
                conn_close(c, 1, RETRY_DELAY_NS);
                return;
            }
            if (c->h2_out_len + (size_t)n > c->h2_out_cap) {
                size_t cap = c->h2_out_cap ? c->h2_out_cap * 2 : SCRATCH_SIZE;
                char *grown;

                while (cap < c->h2_out_len + (size_t)n)
                    cap *= 2;
                grown = realloc(c->h2_out, cap);
                if (grown == NULL) {
                    conn_fail(c, 0);
                    return;
                }
                c->h2_out = grown;
                c->h2_out_cap = cap;
            }
            memcpy(c->h2_out + c->h2_out_len, data, (size_t)n);
            c->h2_out_len += (size_t)n;
        }
        if (c->h2_out_off < c->h2_out_len) {
            r = SSL_write(c->ssl, c->h2_out + c->h2_out_off, (int)(c->h2_out_len - c->h2_out_off));
            if (r <= 0) {
                if (wait_for_ssl(c, r) != SSL_ERROR_NONE)
                    conn_fail(c, 0);
                return;
            }
            c->h2_out_off += (size_t)r;
            if (c->h2_out_off == c->h2_out_len)
                c->h2_out_off = c->h2_out_len = 0;
            continue;
        }
        if (c->h2_close) {
            conn_close(c, c->h2_close == 1, 0);
            return;
        }
        if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
            conn_close(c, 1, 0); /* the server sent GOAWAY */
            return;
        }
        r = SSL_read(c->ssl, lg->scratch, (int)sizeof(lg->scratch));
        if (r <= 0) {
            if (wait_for_ssl(c, r) != SSL_ERROR_NONE)
                conn_fail(c, 0);
            return;
        }
        if (nghttp2_session_mem_recv(c->h2, (const uint8_t *)lg->scratch, (size_t)r) < 0) {
            lg->res->err_protocol++;
            conn_close(c, 1, RETRY_DELAY_NS);
            return;
        }
    }
}

/* Starts a new connection in slot c (reserving its first request attempt). */
static void conn_start(struct conn *c)
{
    struct loadgen *lg = c->lg;
    const mtls_loadgen_opts *o = lg->opts;
    int fd, one = 1;

    if (lg->stopping || (o->requests && lg->attempts >= o->requests)) {
        c->state = C_FREE;
        lg->open_conns--;
        if (lg->open_conns == 0)
            loadgen_stop(lg);
        return;
    }
    if (o->idle && lg->handshaking >= IDLE_MAX_HANDSHAKING) {
        c->state = C_WAIT;
        c->restart_at = 0;
        return;
    }
    /* The first attempt starts with the connect: a failed handshake uses it up. */
    c->started = 1;
    c->reserved = 0;
    if (!o->idle && o->requests) {
        uint64_t left = o->requests - lg->attempts;

        c->reserved = o->requests_per_conn != 0 && o->requests_per_conn < left
                          ? o->requests_per_conn
                          : (o->requests_per_conn != 0 ? left : 1);
        lg->attempts += c->reserved;
    }
    c->events = 0;
    c->handshake_counted = 0;
    c->resumed = 0;
    c->broken = 0;
    c->got_response_bytes = 0;
    c->alert = -1;
    c->n_requests = 0;
    mtls_http_response_reset(&c->resp);
    c->t_connect = uv_hrtime();
    c->deadline = c->t_connect + (uint64_t)(o->timeout * 1e9);
    lg->handshaking++;
    c->state = C_CONNECTING;
    /* The socket that chose the address is already connected: use it first. */
    fd = lg->spare_fd >= 0
             ? lg->spare_fd
             : socket(lg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        /* Out of file descriptors or memory: count it and try again later. */
        lg->handshaking--;
        lg->res->err_connect++;
        lg->attempts -= c->reserved - c->started;
        c->reserved = c->started = 0;
        c->state = C_WAIT;
        c->restart_at = uv_hrtime() + RETRY_DELAY_NS;
        return;
    }
    c->fd = fd;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uv_poll_init_socket(&lg->loop, &c->poll, fd);
    c->poll.data = c;
    if (fd == lg->spare_fd) {
        lg->spare_fd = -1;
    } else if (connect(fd, (struct sockaddr *)&lg->addr, lg->addr_len) != 0 &&
               errno != EINPROGRESS) {
        lg->res->err_connect++;
        conn_close(c, 1, RETRY_DELAY_NS);
        return;
    }
    watch(c, UV_WRITABLE);
}

/* ---- the run ---------------------------------------------------------- */

static void sample_end(struct loadgen *lg)
{
    struct rusage ru;

    if (lg->finished_sampled)
        return;
    lg->finished_sampled = 1;
    lg->t_end = uv_hrtime();
    lg->res->established = count_established(lg);
    if (lg->opts->n_server_pids > 0) {
        double cpu;
        long rss;

        server_usage(lg, &cpu, &rss);
        lg->res->server_cpu = cpu - lg->server_cpu_start;
        lg->res->server_rss_end_kb = rss;
    }
    getrusage(RUSAGE_SELF, &ru);
    lg->res->client_cpu = seconds_of(&ru.ru_utime) + seconds_of(&ru.ru_stime) -
                          seconds_of(&lg->ru_start.ru_utime) - seconds_of(&lg->ru_start.ru_stime);
}

/* Ends the run: measures, then closes every connection; the loop ends when
 * the last handle is closed. */
static void loadgen_stop(struct loadgen *lg)
{
    if (!lg->stopping) {
        lg->stopping = 1;
        sample_end(lg);
        for (size_t i = 0; i < lg->n_conns; i++) {
            struct conn *c = &lg->conns[i];

            if (c->state == C_WAIT) {
                c->state = C_FREE;
                lg->open_conns--;
            } else if (c->state != C_FREE && c->state != C_CLOSING) {
                conn_close(c, 0, 0);
            }
        }
    }
    if (lg->open_conns == 0 && !uv_is_closing((uv_handle_t *)&lg->timer))
        uv_close((uv_handle_t *)&lg->timer, NULL);
}

static void on_tick(uv_timer_t *timer)
{
    struct loadgen *lg = timer->data;
    uint64_t now = uv_hrtime();

    if (lg->stopping)
        return;
    if (now >= lg->t_start + (uint64_t)(lg->opts->duration * 1e9)) {
        loadgen_stop(lg);
        return;
    }
    for (size_t i = 0; i < lg->n_conns; i++) {
        struct conn *c = &lg->conns[i];

        if (c->state == C_WAIT && now >= c->restart_at) {
            conn_start(c);
        } else if (c->deadline != 0 && now > c->deadline &&
                   (c->state == C_CONNECTING || c->state == C_HANDSHAKE || c->state == C_WRITING ||
                    c->state == C_READING)) {
            lg->res->err_timeout++;
            conn_close(c, 1, 0);
        }
        if (lg->stopping)
            return;
    }
    if (lg->opts->progress != NULL && now >= lg->next_progress) {
        lg->next_progress = now + NS;
        fill_running(lg, now);
        lg->opts->progress(lg->res, lg->opts->progress_arg);
    }
}

/* TLS 1.3 tickets arrive after the handshake; keep the newest for --resume. */
static int on_new_session(SSL *ssl, SSL_SESSION *session)
{
    struct conn *c = SSL_get_app_data(ssl);
    struct loadgen *lg = c->lg;

    if (!lg->opts->resume)
        return 0;
    if (lg->n_tickets == lg->cap_tickets) {
        /* The pool is full: drop the oldest ticket. */
        SSL_SESSION_free(lg->tickets[0]);
        memmove(lg->tickets, lg->tickets + 1, (lg->n_tickets - 1) * sizeof(*lg->tickets));
        lg->n_tickets--;
    }
    if (SSL_SESSION_up_ref(session) != 1)
        return 0;
    lg->tickets[lg->n_tickets++] = session;
    SSL_SESSION_free(lg->session);
    lg->session = session;
    return 1; /* we keep the reference (and took a second one for the pool) */
}

static void on_info(const SSL *ssl, int where, int ret)
{
    struct conn *c = SSL_get_app_data(ssl);

    /* ret holds the alert: level in the high byte, description in the low one. */
    if (c != NULL && (where & SSL_CB_READ_ALERT) == SSL_CB_READ_ALERT && (ret & 0xff) != 0)
        c->alert = ret & 0xff;
}

/*
 * Verifies the server's certificate chain (and name) once; later handshakes
 * that present the very same certificate are accepted without building and
 * checking the chain again, so that the client spends its CPU on load rather
 * than on checks whose answer it knows.
 */
static int verify_server(X509_STORE_CTX *store, void *arg)
{
    struct loadgen *lg = arg;
    X509 *leaf = X509_STORE_CTX_get0_cert(store);
    int ok;

    if (lg->verified != NULL && leaf != NULL && X509_cmp(leaf, lg->verified) == 0)
        return 1;
    ok = X509_verify_cert(store);
    if (ok == 1 && leaf != NULL && lg->verified == NULL && X509_up_ref(leaf) == 1)
        lg->verified = leaf;
    return ok;
}

static int make_ctx(struct loadgen *lg, mtls_err *err)
{
    const mtls_loadgen_opts *o = lg->opts;
    mtls_client_files files = {
        .cacert = o->cacert, .cert = o->cert, .key = o->key, .password = o->password};

    /* The client context every client of mtls uses; the load generator adds
     * its verification shortcut, ticket pool and alert watch. */
    lg->ctx = mtls_client_ctx_new(&files, err);
    if (lg->ctx == NULL)
        return err != NULL && err->code != 0 ? err->code : MTLS_E_INVALID;
    SSL_CTX_set_cert_verify_callback(lg->ctx, verify_server, lg);
    /* Thousands of idle connections need little memory on our side too. */
    if (o->idle)
        SSL_CTX_set_mode(lg->ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(lg->ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(lg->ctx, on_new_session);
    SSL_CTX_set_info_callback(lg->ctx, on_info);
    if (o->http2 && SSL_CTX_set_alpn_protos(lg->ctx, (const unsigned char *)"\x02h2", 3) != 0)
        return mtls_err_set(err, MTLS_E_NOMEM, "cannot offer h2 (ALPN)");
    return 0;
}

/*
 * Resolves the URL's host once and keeps the first of its addresses that
 * accepts a connection (as curl does), for every connection of the run;
 * when none does, the first one, so that the run counts connect errors.
 */
static int choose_address(struct loadgen *lg, mtls_err *err)
{
    mtls_client_conn conn;
    double ms = lg->opts->timeout * 1000;
    int rc = mtls_client_connect(lg->url.host, lg->url.port, ms >= 1 ? (int)ms : 1, NULL, NULL,
                                 &conn, err);

    if (rc == MTLS_E_NOTFOUND)
        return rc;
    if (conn.addr_len == 0)
        return mtls_err_set(err, MTLS_E_NOTFOUND, "'%s' has no address to connect to",
                            lg->url.host);
    memcpy(&lg->addr, &conn.addr, conn.addr_len);
    lg->addr_len = conn.addr_len;
    lg->spare_fd = conn.fd;
    mtls_err_clear(err);
    return 0;
}

#define REQUEST_FMT "GET %s HTTP/1.1\r\nHost: %s%s%s%s\r\nUser-Agent: mtls-bench\r\n%s\r\n"

static char *make_request(const struct loadgen *lg, int close_it)
{
    const mtls_url *u = &lg->url;
    int v6 = strchr(u->host, ':') != NULL;
    char port[8] = "";
    const char *conn = close_it ? "Connection: close\r\n" : "";
    int n;
    char *s;

    if (u->port != 443)
        snprintf(port, sizeof(port), ":%d", u->port);
    n = snprintf(NULL, 0, REQUEST_FMT, u->path, v6 ? "[" : "", u->host, v6 ? "]" : "", port, conn);
    s = malloc((size_t)n + 1);
    if (s != NULL)
        snprintf(s, (size_t)n + 1, REQUEST_FMT, u->path, v6 ? "[" : "", u->host, v6 ? "]" : "",
                 port, conn);
    return s;
}

static int check_opts(const mtls_loadgen_opts *o, mtls_err *err)
{
    if (o->url == NULL || o->cacert == NULL || o->cert == NULL || o->key == NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "a URL, a CA, a certificate and a key are needed");
    if (o->connections == 0 || o->connections > 1000000)
        return mtls_err_set(err, MTLS_E_INVALID, "connections must be between 1 and 1000000");
    if (!(o->duration > 0) || !(o->timeout > 0))
        return mtls_err_set(err, MTLS_E_INVALID, "duration and timeout must be positive");
    if (o->idle && (o->requests || o->requests_per_conn))
        return mtls_err_set(err, MTLS_E_INVALID,
                            "idle connections send no requests: drop the request limits");
    if (o->http2 && (o->streams == 0 || o->streams > 1000))
        return mtls_err_set(err, MTLS_E_INVALID, "streams must be between 1 and 1000");
    return 0;
}

int mtls_loadgen_run(const mtls_loadgen_opts *opts, mtls_loadgen_result *result, mtls_err *err)
{
    struct loadgen *lg = NULL;
    mtls_http_response_opts resp_opts = {.max_head = HEADER_MAX};
    int rc, loop_open = 0;

    memset(result, 0, sizeof(*result));
    rc = check_opts(opts, err);
    if (rc != 0)
        goto out;
    lg = calloc(1, sizeof(*lg));
    if (lg == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    lg->opts = opts;
    lg->res = result;
    lg->spare_fd = -1;
    rc = mtls_url_parse(opts->url, &lg->url, err);
    if (rc != 0)
        goto out;
    for (size_t i = 0; i < opts->n_server_pids; i++) {
        rc = mtls_loadgen_proc_usage(opts->server_pids[i], NULL, NULL, err);
        if (rc != 0)
            goto out;
    }
    /* Our files first: a wrong key is found before anything connects. */
    rc = make_ctx(lg, err);
    if (rc != 0)
        goto out;
    rc = choose_address(lg, err);
    if (rc != 0)
        goto out;
    lg->req_keep = make_request(lg, 0);
    lg->req_close = make_request(lg, 1);
    lg->n_conns = opts->connections;
    lg->conns = calloc(lg->n_conns, sizeof(*lg->conns));
    lg->cap_tickets = 2 * (size_t)opts->connections + 8;
    lg->tickets = calloc(lg->cap_tickets, sizeof(*lg->tickets));
    if (lg->req_keep == NULL || lg->req_close == NULL || lg->conns == NULL || lg->tickets == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    if (uv_loop_init(&lg->loop) != 0) {
        rc = mtls_err_set(err, MTLS_E_IO, "cannot start the event loop");
        goto out;
    }
    loop_open = 1;
    uv_timer_init(&lg->loop, &lg->timer);
    lg->timer.data = lg;

    if (opts->n_server_pids > 0) {
        server_usage(lg, &lg->server_cpu_start, &result->server_rss_start_kb);
        result->have_server = 1;
    }
    getrusage(RUSAGE_SELF, &lg->ru_start);
    lg->t_start = uv_hrtime();
    lg->next_progress = lg->t_start + NS;
    uv_timer_start(&lg->timer, on_tick, TICK_MS, TICK_MS);
    lg->open_conns = lg->n_conns;
    for (size_t i = 0; i < lg->n_conns; i++) {
        mtls_http_response_init(&lg->conns[i].resp, &resp_opts);
        lg->conns[i].lg = lg;
        lg->conns[i].fd = -1;
        lg->conns[i].state = C_WAIT;
        lg->conns[i].restart_at = 0;
    }
    /* Connect the first ones now; the timer brings in the rest (idle mode) quickly. */
    for (size_t i = 0; i < lg->n_conns && !lg->stopping; i++)
        conn_start(&lg->conns[i]);
    uv_run(&lg->loop, UV_RUN_DEFAULT);

    sample_end(lg);
    result->elapsed = (double)(lg->t_end - lg->t_start) / 1e9;
    hist_summary(&lg->lat, &result->latency);
    hist_summary(&lg->hs_lat, &result->handshake_latency);
out:
    if (lg != NULL) {
        if (loop_open) {
            uv_run(&lg->loop, UV_RUN_DEFAULT);
            (void)uv_loop_close(&lg->loop);
        }
        SSL_SESSION_free(lg->session);
        for (size_t i = 0; i < lg->n_tickets; i++)
            SSL_SESSION_free(lg->tickets[i]);
        free(lg->tickets);
        X509_free(lg->verified);
        SSL_CTX_free(lg->ctx);
        free(lg->req_keep);
        free(lg->req_close);
        for (size_t i = 0; lg->conns != NULL && i < lg->n_conns; i++)
            mtls_http_response_release(&lg->conns[i].resp);
        free(lg->conns);
        if (lg->spare_fd >= 0)
            close(lg->spare_fd);
        free(lg);
    }
    return rc;
}
