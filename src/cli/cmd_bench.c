/* mtls bench: an mTLS load generator (src/loadgen) with human and JSON reports. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "mtls/loadgen.h"
#include "pki_common.h"

static const char *cacert, *cert, *key, *password_file, *duration_s, *timeout_s;
static long connections = 16, requests_per_conn = 0, requests = 0, streams = 10;
static int resume, idle, json, http2;
static struct cli_list server_pids;

static const struct cli_opt opts[] = {
    {"cacert", 0, CLI_STRING, &cacert, "FILE", "CA certificate(s) that signed the server's (PEM)",
     0, 0},
    {"cert", 0, CLI_STRING, &cert, "FILE", "client certificate to present (PEM)", 0, 0},
    {"key", 0, CLI_STRING, &key, "FILE", "the client certificate's private key (PEM)", 0, 0},
    {"password-file", 0, CLI_STRING, &password_file, "FILE",
     "password of an encrypted --key, on the first line of FILE (default $MTLS_KEY_PASSWORD)", 0,
     0},
    {"connections", 'c', CLI_INT, &connections, "N", "concurrent connections (default 16)", 1,
     100000},
    {"duration", 'd', CLI_STRING, &duration_s, "S",
     "seconds to run, may be fractional (default 10)", 0, 0},
    {"requests-per-conn", 0, CLI_INT, &requests_per_conn, "N",
     "1: a full handshake per request; 0: keep-alive, unlimited (default)", 0, 1000000000},
    {"resume", 0, CLI_FLAG, &resume, NULL,
     "resume sessions with the TLS 1.3 tickets of earlier handshakes", 0, 0},
    {"server-pid", 'p', CLI_LIST, &server_pids, "PID",
     "server process whose CPU and memory to read; repeat per worker", 0, 0},
    {"json", 0, CLI_FLAG, &json, NULL, "print the report as JSON on stdout", 0, 0},
    {"requests", 'n', CLI_INT, &requests, "N",
     "stop after N request attempts, answered or failed (default: none)", 0, 1000000000000},
    {"idle", 0, CLI_FLAG, &idle, NULL, "handshake, then hold the connections open, sending nothing",
     0, 0},
    {"http2", 0, CLI_FLAG, &http2, NULL,
     "HTTP/2 (ALPN h2): --streams requests in flight on each connection", 0, 0},
    {"streams", 0, CLI_INT, &streams, "N",
     "with --http2: requests in flight per connection "
     "(default 10)",
     1, 1000},
    {"timeout", 0, CLI_STRING, &timeout_s, "S",
     "seconds for a connect, a handshake or a response (default 10)", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec spec = {
    .name = "bench",
    .usage = "URL --cacert FILE --cert FILE --key FILE [--password-file FILE]\n"
             "       [--connections N] [--duration S]\n"
             "       [--requests-per-conn N] [--resume] [--http2 [--streams N]]\n"
             "       [--server-pid PID]... [--json]",
    .summary = "load an HTTPS server with mutual-TLS clients and measure it",
    .description =
        "Opens --connections connections to URL (https://HOST[:PORT][/PATH]), each presenting\n"
        "the client certificate, and sends GET PATH over each as fast as the server answers,\n"
        "for --duration seconds. With --requests-per-conn 1 every request costs a full\n"
        "handshake; with 0 the connections are kept alive. A connection that closes is\n"
        "replaced at once. One thread and one event loop drive every connection.\n"
        "HOST is resolved once, and the first of its addresses that accepts a connection\n"
        "(tried in order, as curl does) serves the whole run.\n"
        "\n"
        "Reports handshakes/s, requests/s (status 200), errors by kind (connect, handshake\n"
        "with the alert name, HTTP status other than 200, timeout, closed, protocol),\n"
        "latency percentiles, and this process's own CPU time. With --server-pid it also\n"
        "reads the server's CPU time (user + system, all threads, summed over the PIDs)\n"
        "and resident memory from /proc, and divides the CPU by handshakes and requests.\n"
        "With --http2 each connection speaks HTTP/2 and keeps --streams requests in flight\n"
        "(a new stream as soon as one is answered).\n"
        "With --idle the connections send nothing after the handshake: the server's memory\n"
        "growth divided by the connections held is its memory per idle connection.\n"
        "A progress line is shown on stderr when it is a terminal.",
    .opts = opts,
    .min_args = 1,
    .max_args = 1,
    .exit_codes = "  1  the run could not start (bad file, host, pid), or no request succeeded\n",
};

static int parse_seconds(const char *text, const char *name, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(v > 0) || v > 1e6)
        return cli_usage_error(&spec, "--%s needs a positive number of seconds, not '%s'", name,
                               text);
    *out = v;
    return 0;
}

static void on_progress(const mtls_loadgen_result *r, void *arg)
{
    uint64_t errors = r->err_connect + r->err_handshake + r->err_status + r->err_timeout +
                      r->err_closed + r->err_protocol;

    (void)arg;
    fprintf(stderr,
            "\r%6.1fs  %10llu req  %9.0f req/s  %8llu hs  %7.0f hs/s  %6llu open  %6llu errors ",
            r->elapsed, (unsigned long long)r->requests,
            r->elapsed > 0 ? (double)r->requests / r->elapsed : 0,
            (unsigned long long)r->handshakes,
            r->elapsed > 0 ? (double)r->handshakes / r->elapsed : 0,
            (unsigned long long)r->established, (unsigned long long)errors);
    fflush(stderr);
}

static uint64_t total_errors(const mtls_loadgen_result *r)
{
    return r->err_connect + r->err_handshake + r->err_status + r->err_timeout + r->err_closed +
           r->err_protocol;
}

static double per_s(uint64_t n, double s)
{
    return s > 0 ? (double)n / s : 0;
}

/* Server CPU microseconds per unit, or -1 when there is nothing to divide by. */
static double cpu_per(const mtls_loadgen_result *r, uint64_t n)
{
    return r->have_server && n > 0 ? r->server_cpu * 1e6 / (double)n : -1;
}

static const char *mode_name(const mtls_loadgen_opts *o)
{
    if (o->idle)
        return "idle";
    if (o->requests_per_conn == 1)
        return o->resume ? "resumed handshake per request" : "full handshake per request";
    if (o->http2 && o->requests_per_conn == 0)
        return "HTTP/2 streams";
    if (o->requests_per_conn == 0)
        return "keep-alive";
    return o->resume ? "requests per connection, resumed" : "requests per connection";
}

static void print_latency(const char *name, const mtls_loadgen_latency *l)
{
    if (l->count == 0)
        return;
    printf("  %-14s p50 %.0f us  p99 %.0f us  p99.9 %.0f us  max %.0f us  mean %.0f us\n", name,
           l->p50, l->p99, l->p999, l->max, l->mean);
}

static void print_human(const mtls_loadgen_opts *o, const mtls_loadgen_result *r)
{
    printf("mtls bench %s: %u connections, %.1f s, %s\n", o->url, o->connections, r->elapsed,
           mode_name(o));
    printf("  %-14s %llu (%.1f/s, %llu resumed)\n", "handshakes", (unsigned long long)r->handshakes,
           per_s(r->handshakes, r->elapsed), (unsigned long long)r->resumed);
    printf("  %-14s %llu (%.1f/s)\n", "requests", (unsigned long long)r->requests,
           per_s(r->requests, r->elapsed));
    printf("  %-14s %llu (connect %llu, handshake %llu, status %llu, timeout %llu, closed %llu, "
           "protocol %llu)\n",
           "errors", (unsigned long long)total_errors(r), (unsigned long long)r->err_connect,
           (unsigned long long)r->err_handshake, (unsigned long long)r->err_status,
           (unsigned long long)r->err_timeout, (unsigned long long)r->err_closed,
           (unsigned long long)r->err_protocol);
    for (size_t i = 0; i < r->n_handshake_reasons; i++)
        printf("    handshake: %s: %llu\n", r->handshake_reasons[i].name,
               (unsigned long long)r->handshake_reasons[i].count);
    for (size_t i = 0; i < r->n_status_reasons; i++)
        printf("    status %s: %llu\n", r->status_reasons[i].name,
               (unsigned long long)r->status_reasons[i].count);
    print_latency("latency", &r->latency);
    print_latency("handshake time", &r->handshake_latency);
    if (o->idle)
        printf("  %-14s %llu\n", "held open", (unsigned long long)r->established);
    printf("  %-14s %.2f s (%.0f %% of one core)\n", "client CPU", r->client_cpu,
           r->elapsed > 0 ? 100 * r->client_cpu / r->elapsed : 0);
    if (r->have_server) {
        printf("  %-14s %.2f s (%.0f %% of one core)", "server CPU", r->server_cpu,
               r->elapsed > 0 ? 100 * r->server_cpu / r->elapsed : 0);
        if (r->handshakes > 0)
            printf(", %.0f us per handshake", cpu_per(r, r->handshakes));
        if (r->responses > 0)
            printf(", %.1f us per request", cpu_per(r, r->responses));
        printf("\n  %-14s %ld kB -> %ld kB", "server RSS", r->server_rss_start_kb,
               r->server_rss_end_kb);
        if (o->idle && r->established > 0)
            printf(" (%.1f kB per held connection)",
                   (double)(r->server_rss_end_kb - r->server_rss_start_kb) /
                       (double)r->established);
        printf("\n");
    }
}

/* v (not negative) rounded to 1/scale, without pulling in libm. */
static double rounded(double v, double scale)
{
    return (double)(long long)(v * scale + 0.5) / scale;
}

static cJSON *latency_json(const mtls_loadgen_latency *l)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddNumberToObject(o, "count", (double)l->count);
    cJSON_AddNumberToObject(o, "p50", l->p50);
    cJSON_AddNumberToObject(o, "p99", l->p99);
    cJSON_AddNumberToObject(o, "p99_9", l->p999);
    cJSON_AddNumberToObject(o, "max", l->max);
    cJSON_AddNumberToObject(o, "mean", rounded(l->mean, 10));
    return o;
}

static cJSON *reasons_json(const mtls_loadgen_reason *t, size_t n)
{
    cJSON *o = cJSON_CreateObject();

    for (size_t i = 0; i < n; i++)
        cJSON_AddNumberToObject(o, t[i].name, (double)t[i].count);
    return o;
}

static int print_json(const mtls_loadgen_opts *o, const mtls_loadgen_result *r)
{
    cJSON *root = cJSON_CreateObject(), *e, *s, *pids;
    char *text;
    int rc = 0;

    cJSON_AddStringToObject(root, "url", o->url);
    cJSON_AddStringToObject(root, "mode", mode_name(o));
    cJSON_AddNumberToObject(root, "connections", o->connections);
    cJSON_AddNumberToObject(root, "requests_per_conn", (double)o->requests_per_conn);
    cJSON_AddBoolToObject(root, "resume", o->resume);
    cJSON_AddBoolToObject(root, "http2", o->http2);
    if (o->http2)
        cJSON_AddNumberToObject(root, "streams", o->streams);
    cJSON_AddNumberToObject(root, "elapsed_s", rounded(r->elapsed, 1000));
    cJSON_AddNumberToObject(root, "handshakes", (double)r->handshakes);
    cJSON_AddNumberToObject(root, "handshakes_resumed", (double)r->resumed);
    cJSON_AddNumberToObject(root, "requests", (double)r->requests);
    cJSON_AddNumberToObject(root, "responses", (double)r->responses);
    cJSON_AddNumberToObject(root, "handshakes_per_s",
                            rounded(per_s(r->handshakes, r->elapsed), 10));
    cJSON_AddNumberToObject(root, "requests_per_s", rounded(per_s(r->requests, r->elapsed), 10));
    cJSON_AddNumberToObject(root, "established", (double)r->established);
    e = cJSON_AddObjectToObject(root, "errors");
    cJSON_AddNumberToObject(e, "total", (double)total_errors(r));
    cJSON_AddNumberToObject(e, "connect", (double)r->err_connect);
    cJSON_AddNumberToObject(e, "handshake", (double)r->err_handshake);
    cJSON_AddNumberToObject(e, "status", (double)r->err_status);
    cJSON_AddNumberToObject(e, "timeout", (double)r->err_timeout);
    cJSON_AddNumberToObject(e, "closed", (double)r->err_closed);
    cJSON_AddNumberToObject(e, "protocol", (double)r->err_protocol);
    cJSON_AddItemToObject(e, "handshake_reasons",
                          reasons_json(r->handshake_reasons, r->n_handshake_reasons));
    cJSON_AddItemToObject(e, "statuses", reasons_json(r->status_reasons, r->n_status_reasons));
    cJSON_AddItemToObject(root, "latency_us", latency_json(&r->latency));
    cJSON_AddItemToObject(root, "handshake_latency_us", latency_json(&r->handshake_latency));
    cJSON_AddNumberToObject(root, "client_cpu_s", rounded(r->client_cpu, 1000));
    if (r->have_server) {
        s = cJSON_AddObjectToObject(root, "server");
        pids = cJSON_AddArrayToObject(s, "pids");
        for (size_t i = 0; i < o->n_server_pids; i++)
            cJSON_AddItemToArray(pids, cJSON_CreateNumber((double)o->server_pids[i]));
        cJSON_AddNumberToObject(s, "cpu_s", rounded(r->server_cpu, 1000));
        if (r->handshakes > 0)
            cJSON_AddNumberToObject(s, "cpu_us_per_handshake",
                                    rounded(cpu_per(r, r->handshakes), 10));
        else
            cJSON_AddNullToObject(s, "cpu_us_per_handshake");
        if (r->responses > 0)
            cJSON_AddNumberToObject(s, "cpu_us_per_request", rounded(cpu_per(r, r->responses), 10));
        else
            cJSON_AddNullToObject(s, "cpu_us_per_request");
        cJSON_AddNumberToObject(s, "rss_kb_start", (double)r->server_rss_start_kb);
        cJSON_AddNumberToObject(s, "rss_kb_end", (double)r->server_rss_end_kb);
    }
    text = cJSON_Print(root);
    if (text == NULL)
        rc = cli_failf("out of memory");
    else
        printf("%s\n", text);
    free(text);
    cJSON_Delete(root);
    return rc;
}

/* Thousands of connections need thousands of descriptors: raise the soft limit. */
static void raise_fd_limit(unsigned long want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
        cli_warnf("only %lu file descriptors allowed: fewer connections will open",
                  (unsigned long)rl.rlim_cur);
}

int cmd_bench(int argc, char **argv)
{
    struct cli_args args = {0};
    mtls_loadgen_opts o;
    mtls_loadgen_result r;
    mtls_err err = {0};
    pid_t *pids = NULL;
    char *password = NULL;
    int rc, progress;

    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        rc = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    mtls_loadgen_opts_init(&o);
    o.url = args.v[0];
    if (cacert == NULL || cert == NULL || key == NULL) {
        rc = cli_usage_error(&spec, "--cacert, --cert and --key are required");
        goto out;
    }
    o.cacert = cacert;
    o.cert = cert;
    o.key = key;
    /* Never OpenSSL's terminal prompt: the password comes from a file or the environment. */
    if (pki_password(password_file, &password) != 0) {
        rc = EXIT_FAIL;
        goto out;
    }
    o.password = password;
    o.connections = (unsigned)connections;
    o.requests_per_conn = (uint64_t)requests_per_conn;
    o.requests = (uint64_t)requests;
    o.resume = resume;
    o.idle = idle;
    o.http2 = http2;
    o.streams = (unsigned)streams;
    if ((duration_s != NULL && parse_seconds(duration_s, "duration", &o.duration) != 0) ||
        (timeout_s != NULL && parse_seconds(timeout_s, "timeout", &o.timeout) != 0)) {
        rc = EXIT_USAGE;
        goto out;
    }
    if (idle && (requests != 0 || requests_per_conn != 0 || resume)) {
        rc = cli_usage_error(&spec, "--idle sends no requests: it takes no --requests, "
                                    "--requests-per-conn or --resume");
        goto out;
    }
    if (server_pids.n > 0) {
        pids = calloc(server_pids.n, sizeof(*pids));
        if (pids == NULL) {
            rc = cli_failf("out of memory");
            goto out;
        }
        for (size_t i = 0; i < server_pids.n; i++) {
            char *end;
            long v;

            errno = 0;
            v = strtol(server_pids.items[i], &end, 10);
            if (errno != 0 || end == server_pids.items[i] || *end != '\0' || v <= 0 ||
                v > 0x7fffffff) {
                rc = cli_usage_error(&spec, "--server-pid needs a process id, not '%s'",
                                     server_pids.items[i]);
                goto out;
            }
            pids[i] = (pid_t)v;
        }
        o.server_pids = pids;
        o.n_server_pids = server_pids.n;
    }
    progress = isatty(STDERR_FILENO);
    if (progress) {
        o.progress = on_progress;
        o.progress_arg = NULL;
    }
    raise_fd_limit((unsigned long)connections + 64);
    rc = mtls_loadgen_run(&o, &r, &err);
    if (progress)
        fprintf(stderr, "\r\033[K");
    if (rc != 0) {
        rc = cli_fail(&err);
        goto out;
    }
    if (json)
        rc = print_json(&o, &r);
    else
        print_human(&o, &r);
    if (rc == 0 && (idle ? r.established == 0 : r.requests == 0)) {
        if (!json)
            cli_failf(idle ? "no connection could be established" : "no request succeeded");
        rc = EXIT_FAIL;
    }
out:
    pki_password_free(password);
    free(pids);
    cli_args_release(&args);
    cli_list_release(&server_pids);
    return rc;
}
