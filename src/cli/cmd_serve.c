/* mtls serve: the article's mTLS web server (Node/Express in the article), in C. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "mtls/identity.h"
#include "mtls/server.h"
#include "pki_common.h"

static const char *listen_addr, *cert, *key, *client_ca, *access_log, *system_log,
    *handshake_timeout, *header_timeout, *idle_timeout, *drain_timeout, *password_file, *user,
    *upstream, *identity_headers, *upstream_connect_timeout, *upstream_timeout, *config_file;
/* -1 until given: mtls_server_opts_init() holds the defaults. */
static int verify_client = -1, worker_model = -1, log_format = -1, proxy_protocol;

static const struct cli_choice verify_choices[] = {
    {"require", MTLS_VERIFY_REQUIRE}, {"optional", MTLS_VERIFY_OPTIONAL}, {NULL, 0}};
static const struct cli_choice model_choices[] = {
    {"process", MTLS_WORKERS_PROCESS}, {"thread", MTLS_WORKERS_THREAD}, {NULL, 0}};
static const struct cli_choice format_choices[] = {
    {"text", MTLS_LOG_TEXT}, {"json", MTLS_LOG_JSON}, {NULL, 0}};
static struct cli_choices verify_dest = {verify_choices, &verify_client};
static struct cli_choices model_dest = {model_choices, &worker_model};
static struct cli_choices format_dest = {format_choices, &log_format};
static long workers, max_connections;
static struct cli_list crls, ticket_keys, allow;
static int allow_dry_run, check_only, metrics_public;
static const char *metrics_listen;
static struct cli_config_routes routes;

static const struct cli_opt opts[] = {
    {"listen", 0, CLI_STRING, &listen_addr, "ADDR:PORT",
     "where to listen: PORT, ADDR:PORT or [IPV6]:PORT (default 8443 on every address)", 0, 0},
    {"cert", 0, CLI_STRING, &cert, "FILE",
     "server certificate, PEM, followed by any intermediates (default server.crt)", 0, 0},
    {"key", 0, CLI_STRING, &key, "FILE", "its private key, PEM (default server.key)", 0, 0},
    {"password-file", 0, CLI_STRING, &password_file, "FILE",
     "password of an encrypted --key, on the first line of FILE (default $MTLS_KEY_PASSWORD); "
     "kept in memory for reloads",
     0, 0},
    {"client-ca", 0, CLI_STRING, &client_ca, "FILE",
     "CA certificate(s) that client certificates must chain to (default clientca.crt)", 0, 0},
    {"verify-client", 0, CLI_CHOICE, &verify_dest, "MODE",
     "require: no or bad client certificate fails the handshake (default); optional: the "
     "handshake completes and requests get 403 with the reason",
     0, 0},
    {"crl", 0, CLI_LIST, &crls, "FILE",
     "a CRL (PEM) of the client CA; revoked clients are refused; repeatable", 0, 0},
    {"ticket-keys", 0, CLI_LIST, &ticket_keys, "FILE",
     "80-byte session ticket keys (openssl rand 80 > FILE), the first encrypts, all decrypt: "
     "replicas with the same keys resume each other's sessions; repeatable",
     0, 0},
    {"proxy-protocol", 0, CLI_FLAG, &proxy_protocol, NULL,
     "behind a TCP balancer (HAProxy send-proxy-v2): every connection must start with a PROXY "
     "protocol v2 header, whose client address the logs and the proxy show; others are refused",
     0, 0},
    {"workers", 0, CLI_INT, &workers, "N", "worker count (default: one per CPU core)", 1, 1024},
    {"worker-model", 0, CLI_CHOICE, &model_dest, "MODEL",
     "process (default, measured faster with OpenSSL 3) or thread", 0, 0},
    {"user", 0, CLI_STRING, &user, "NAME",
     "run the workers as NAME (needs root; process model): the port, key and logs are opened "
     "as root first, reloads keep working",
     0, 0},
    {"access-log", 0, CLI_STRING, &access_log, "FILE",
     "one line per request, combined format (default access.log)", 0, 0},
    {"system-log", 0, CLI_STRING, &system_log, "FILE",
     "start, stop, rejected handshakes and why (default system.log)", 0, 0},
    {"log-format", 0, CLI_CHOICE, &format_dest, "FORMAT",
     "text (default: combined access log) or json (one object per line, both logs)", 0, 0},
    {"handshake-timeout", 0, CLI_STRING, &handshake_timeout, "SECONDS",
     "time for the TLS handshake (default 10)", 0, 0},
    {"header-timeout", 0, CLI_STRING, &header_timeout, "SECONDS",
     "time for a started request's headers to arrive, against slow clients (default 10)", 0, 0},
    {"idle-timeout", 0, CLI_STRING, &idle_timeout, "SECONDS",
     "keep-alive time between requests (default 60)", 0, 0},
    {"drain-timeout", 0, CLI_STRING, &drain_timeout, "SECONDS",
     "on SIGTERM, time for in-flight requests to finish (default 10)", 0, 0},
    {"max-connections", 0, CLI_INT, &max_connections, "N",
     "open connections, all workers together; more wait in the kernel's queue (default 10000)", 1,
     10000000},
    {"upstream", 0, CLI_STRING, &upstream, "URL",
     "reverse proxy: every request no built-in route takes goes to http://HOST:PORT[/PREFIX] or "
     "unix:/PATH over HTTP/1.1, with the verified identity in headers",
     0, 0},
    {"identity-headers", 0, CLI_STRING, &identity_headers, "LIST",
     "identity headers for the upstream: rfc9440 (Client-Cert), xfcc (X-Forwarded-Client-Cert), "
     "plain (X-Client-*), comma-separated, or none (default rfc9440,xfcc,plain); inbound copies "
     "are always removed",
     0, 0},
    {"upstream-connect-timeout", 0, CLI_STRING, &upstream_connect_timeout, "SECONDS",
     "time to connect to the upstream, then 504 (default 5)", 0, 0},
    {"upstream-timeout", 0, CLI_STRING, &upstream_timeout, "SECONDS",
     "the upstream's silence while a response is awaited, then 504 (default 60)", 0, 0},
    {"allow", 0, CLI_LIST, &allow, "RULE",
     "allow clients whose certificate matches: cn=, o=, ou=, san-dns=, san-uri= ('*' is one path "
     "segment), san-email=, issuer=, spki-sha256=, cert-sha256=; repeatable, any match allows "
     "(default: any verified client); others get 403",
     0, 0},
    {"allow-dry-run", 0, CLI_FLAG, &allow_dry_run, NULL,
     "log what --allow would deny, and let it through (to roll out a policy)", 0, 0},
    {"metrics-listen", 0, CLI_STRING, &metrics_listen, "ADDR:PORT",
     "serve Prometheus metrics at http://ADDR:PORT/metrics (plain HTTP; loopback addresses "
     "only unless --metrics-listen-public)",
     0, 0},
    {"metrics-listen-public", 0, CLI_FLAG, &metrics_public, NULL,
     "allow --metrics-listen on an address other hosts can reach (protect it yourself)", 0, 0},
    {"config", 0, CLI_STRING, &config_file, "FILE",
     "read options from a YAML file (keys are these long options: 'upstream: http://...', "
     "'allow: [cn=alice]'); flags given as well win",
     0, 0},
    {"check", 0, CLI_FLAG, &check_only, NULL,
     "check the configuration (files, key and certificate, CAs, CRLs, address, upstream, rules) "
     "like nginx -t: exit 0, or 2 listing every problem; nothing is served",
     0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec spec = {
    .name = "serve",
    .usage = "[--listen ADDR:PORT] [--cert F] [--key F] [--client-ca F] "
             "[--verify-client require|optional] [--workers N] [--access-log F] "
             "[--system-log F] [--log-format text|json] [OPTIONS]",
    .summary = "serve HTTPS with client certificates required, like the article's server",
    .description =
        "With no options it behaves like the article's Node server: it listens on port 8443\n"
        "on every address, reads server.crt, server.key and clientca.crt from the current\n"
        "folder, requires a client certificate signed by a CA in clientca.crt, prints\n"
        "'HTTPS listening on 8443....', and logs to system.log and access.log.\n"
        "\n"
        "routes:\n"
        "  GET /test    200 {\"message\":\"Hello mtls\"}\n"
        "  GET /whoami  200 the verified client certificate (subject, issuer, serial,\n"
        "               sha256, SANs, dates) and the TLS version, cipher and resumption,\n"
        "               as JSON\n"
        "  GET /        the same as /whoami (without --upstream)\n"
        "  GET /favicon.ico  204\n"
        "  other paths  404; other methods on /test and /whoami 405 (JSON);\n"
        "               with --upstream, the upstream's answer instead\n"
        "browsers (Accept prefers text/html): /, /whoami, 403, 404 and 405 are HTML\n"
        "pages that say who you are, or what was wrong and how to install a .p12\n"
        "\n"
        "limits: request target 8 KiB (414), headers 16 KiB or 100 lines (431), body\n"
        "1 MiB, read and discarded (413; a proxied body is streamed, unlimited),\n"
        "malformed requests 400, slow headers 408.\n"
        "\n"
        "--upstream: 502 when the application refuses, resets or dies, 504 when it\n"
        "is too slow, each with a reason; the access log gains upstream=STATUS\n"
        "upstream_time=S. A --config file may add routes of their own (a path to a\n"
        "built-in handler or another upstream, with its own allow and identity\n"
        "headers); see the README.\n"
        "\n"
        "signals: SIGTERM and SIGINT finish in-flight requests and exit 0 (the exit\n"
        "code of a stop); SIGUSR1 reopens the log files (for logrotate); SIGHUP reloads\n"
        "the certificate, key, client CA, CRLs and ticket keys, checked first: on any\n"
        "problem the old set stays and the system log says why; open connections go on.\n"
        "With --config, SIGHUP also reads the file again (upstream, identity_headers,\n"
        "allow, allow_dry_run, routes; checked first, each problem logged with its line\n"
        "and column, the old configuration kept on any); a new generation of workers\n"
        "takes it and the old one drains (process model only).\n"
        "\n"
        "resumption: every worker resumes every worker's TLS sessions (a cache in shared\n"
        "memory, emptied by SIGHUP); with --ticket-keys, stateless tickets instead, which\n"
        "every server holding the same keys accepts (replicas behind a load balancer).\n"
        "\n"
        "--proxy-protocol: a balancer's PROXY protocol v2 header (binary; v1 text is\n"
        "refused) comes before the TLS handshake, within --handshake-timeout; its client\n"
        "address replaces the balancer's wherever the peer is shown (both logs, and the\n"
        "X-Forwarded-For and Forwarded headers of --upstream).\n"
        "A LOCAL header (health checks) keeps the balancer's address. Connections without\n"
        "a valid header are closed and the system log says why.\n"
        "\n"
        "--user NAME: the main process stays root to reload and reopen; the workers run\n"
        "as NAME with no_new_privs. A reload or log reopen then starts new workers that\n"
        "inherit the new key and logs, while the old ones drain.\n"
        "\n"
        "systemd: with $NOTIFY_SOCKET set (Type=notify) it sends READY=1 when serving,\n"
        "RELOADING=1 and READY=1 around a SIGHUP, STOPPING=1 when draining.",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = "  1  the server failed while running (the system log says why)\n"
                  "  2  bad configuration: a missing or unreadable file, a key that does not\n"
                  "     match the certificate, a CA file without a certificate, the port in\n"
                  "     use, a bad value\n",
};

/* "10", "2.5", "500ms", "3s" -> milliseconds (at least 1). */
static int parse_seconds(const char *name, const char *text, unsigned *ms)
{
    char *end;
    double v;

    if (text == NULL)
        return 0;
    errno = 0;
    v = strtod(text, &end);
    if (end != text && strcmp(end, "ms") == 0)
        v /= 1000.0;
    else if (end != text && strcmp(end, "s") == 0)
        ;
    else if (end == text || *end != '\0')
        return cli_usage_error(&spec, "--%s needs a number of seconds, not '%s'", name, text);
    if (errno != 0 || !(v > 0) || v > 86400)
        return cli_usage_error(&spec, "--%s must be above 0 and at most 86400 seconds, not '%s'",
                               name, text);
    *ms = (unsigned)(v * 1000.0 + 0.999);
    return 0;
}

static void print_warning(void *ctx, const char *msg)
{
    (void)ctx;
    cli_warnf("%s", msg);
}

/* In a worker process that could not start, just before it exits. */
static void print_worker_error(void *ctx, const char *msg)
{
    mtls_err err;

    (void)ctx;
    mtls_err_set(&err, MTLS_E_IO, "%s", msg);
    (void)cli_fail(&err);
}

static void print_problem(void *ctx, const char *msg)
{
    (void)ctx;
    (void)cli_failf("%s", msg);
}

/* The problems of values said with their line and column, not to be said again by --check. */
static char **said;
static size_t n_said;

static void remember(const char *msg)
{
    char **grown = realloc(said, (n_said + 1) * sizeof(*said));

    if (grown == NULL)
        return;
    said = grown;
    if ((said[n_said] = strdup(msg)) != NULL)
        n_said++;
}

static void forget_said(void)
{
    for (size_t i = 0; i < n_said; i++)
        free(said[i]);
    free(said);
    said = NULL;
    n_said = 0;
}

/* --check after a file with problems: what the file's lines said already is not repeated. */
static void print_new_problem(void *ctx, const char *msg)
{
    int *repeated = ctx;

    for (size_t i = 0; i < n_said; i++) {
        if (strcmp(said[i], msg) == 0) {
            ++*repeated;
            return;
        }
    }
    (void)cli_failf("%s", msg);
}

/* A value of the configuration file checked where it stands (line and column). */
static int check_value(void *ctx, const char *name, const char *value, char *why, size_t size)
{
    mtls_allow_policy one = {0};
    mtls_err err;
    int rc = 0;

    (void)ctx;
    mtls_err_clear(&err);
    if (strcmp(name, "allow") == 0) {
        rc = mtls_allow_policy_add(&one, value, &err);
        mtls_allow_policy_release(&one);
    } else if (strcmp(name, "upstream") == 0) {
        rc = mtls_server_upstream_check(value, &err);
    } else if (strcmp(name, "identity-headers") == 0) {
        rc = mtls_server_identity_headers_check(value, &err);
    } else if (strcmp(name, "handler") == 0 && mtls_http_builtin_handler(value) == NULL) {
        rc = mtls_err_set(&err, MTLS_E_INVALID, "unknown handler '%s' (built-in: test, whoami)",
                          value);
    }
    if (rc != 0) {
        snprintf(why, size, "%s", err.msg);
        remember(err.msg);
    }
    return rc;
}

/*
 * SIGHUP: the file again. What the command line said still wins; the
 * options the file set at start are read anew where they can change while
 * running (upstream, identity headers, allow rules, dry run, routes), and
 * kept as they were otherwise (a restart applies them).
 */
static const char *const not_in_file[] = {"config", "check", NULL};
static const char *cmdline_upstream, *cmdline_identity_headers;
static int cmdline_allow, cmdline_dry_run;
static struct cli_list old_allow;
static struct cli_config_routes old_routes;
static size_t file_mark, reload_mark;

static int reload_config(void *ctx, mtls_server_opts *next, mtls_server_notice_fn problem,
                         void *problem_ctx)
{
    int problems;

    (void)ctx;
    forget_said();
    reload_mark = cli_config_mark();
    old_routes = routes;
    memset(&routes, 0, sizeof(routes));
    upstream = cmdline_upstream;
    identity_headers = cmdline_identity_headers;
    allow_dry_run = cmdline_dry_run;
    old_allow = allow;
    if (!cmdline_allow)
        memset(&allow, 0, sizeof(allow));
    problems =
        cli_config_load(config_file, opts, not_in_file, &routes, problem, check_value, problem_ctx);
    next->upstream = upstream;
    next->identity_headers = identity_headers;
    next->allow = allow.items;
    next->n_allow = allow.n;
    next->allow_dry_run = allow_dry_run;
    next->routes = routes.v;
    next->n_routes = routes.n;
    return problems;
}

static void reload_done(void *ctx, int taken)
{
    size_t now = cli_config_mark();

    (void)ctx;
    if (taken) {
        cli_config_forget(file_mark, reload_mark); /* the older file's values */
        if (!cmdline_allow)
            cli_list_release(&old_allow);
        return;
    }
    cli_config_forget(reload_mark, now);
    if (!cmdline_allow) {
        cli_list_release(&allow);
        allow = old_allow;
    }
    routes = old_routes;
}

int cmd_serve(int argc, char **argv)
{
    struct cli_args args = {0};
    mtls_server_opts o;
    mtls_server *srv = NULL;
    char *password = NULL;
    mtls_err err;
    int rc, file_problems = 0;

    mtls_server_opts_init(&o);
    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        rc = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    rc = EXIT_USAGE;
    if (config_file != NULL) {
        cmdline_upstream = upstream;
        cmdline_identity_headers = identity_headers;
        cmdline_allow = allow.n > 0;
        cmdline_dry_run = allow_dry_run;
        file_mark = cli_config_mark();
        file_problems = cli_config_load(config_file, opts, not_in_file, &routes, print_problem,
                                        check_value, NULL);
        if (file_problems != 0 && !check_only)
            goto out;
    }
    if (listen_addr != NULL)
        o.listen = listen_addr;
    if (cert != NULL)
        o.tls.cert_file = cert;
    if (key != NULL)
        o.tls.key_file = key;
    if (client_ca != NULL)
        o.tls.client_ca_file = client_ca;
    o.tls.crl_files = crls.items;
    o.tls.n_crl_files = crls.n;
    o.tls.ticket_key_files = ticket_keys.items;
    o.tls.n_ticket_key_files = ticket_keys.n;
    if (verify_client >= 0)
        o.tls.verify = verify_client;
    if (worker_model >= 0)
        o.model = worker_model;
    if (log_format >= 0)
        o.log_format = log_format;
    if (workers > 0)
        o.workers = (unsigned)workers;
    if (max_connections > 0)
        o.max_connections = (unsigned)max_connections;
    o.user = user;
    o.proxy_protocol = proxy_protocol;
    if (access_log != NULL)
        o.access_log = access_log;
    if (system_log != NULL)
        o.system_log = system_log;
    if (parse_seconds("handshake-timeout", handshake_timeout, &o.handshake_timeout_ms) != 0 ||
        parse_seconds("header-timeout", header_timeout, &o.header_timeout_ms) != 0 ||
        parse_seconds("idle-timeout", idle_timeout, &o.idle_timeout_ms) != 0 ||
        parse_seconds("drain-timeout", drain_timeout, &o.drain_timeout_ms) != 0 ||
        parse_seconds("upstream-connect-timeout", upstream_connect_timeout,
                      &o.upstream_connect_timeout_ms) != 0 ||
        parse_seconds("upstream-timeout", upstream_timeout, &o.upstream_timeout_ms) != 0)
        goto out;
    o.upstream = upstream;
    o.identity_headers = identity_headers;
    o.allow = allow.items;
    o.n_allow = allow.n;
    o.allow_dry_run = allow_dry_run;
    o.metrics_listen = metrics_listen;
    o.metrics_public = metrics_public;
    o.routes = routes.v;
    o.n_routes = routes.n;
    o.warn = print_warning;
    o.worker_error = print_worker_error;
    if (config_file != NULL) {
        o.reload_config = reload_config;
        o.reload_done = reload_done;
    }
    if (pki_password(password_file, &password) != 0) {
        rc = EXIT_USAGE; /* an unreadable password file is bad configuration */
        goto out;
    }
    o.tls.key_password = password;
    if (check_only) {
        int repeated = 0;
        int problems = mtls_server_check(&o, print_new_problem, &repeated);

        problems += file_problems - repeated;
        if (problems == 0)
            printf("configuration OK: %s, %s, %s\n", o.tls.cert_file, o.tls.client_ca_file,
                   o.upstream ? o.upstream : "no upstream");
        rc = problems == 0 ? EXIT_OK : EXIT_USAGE;
        goto out;
    }

    mtls_err_clear(&err);
    if (mtls_server_new(&o, &srv, &err) != 0) {
        /* Every start-up failure is a configuration the server cannot run with. */
        cli_fail(&err);
        rc = EXIT_USAGE;
        goto out;
    }
    /* Whoever reads the line below may signal at once (a test, systemd's
     * reload): hold the server's signals from now on, so that one sent before
     * mtls_server_run() takes them waits instead of killing the process. */
    mtls_server_hold_signals();
    if (mtls_server_listens_everywhere(srv))
        printf("HTTPS listening on %d....\n", mtls_server_port(srv));
    else
        printf("HTTPS listening on %s....\n", mtls_server_address(srv));
    if (mtls_server_metrics_address(srv) != NULL)
        printf("metrics on %s\n", mtls_server_metrics_address(srv));
    fflush(stdout);
    mtls_err_clear(&err);
    rc = mtls_server_run(srv, &err) == 0 ? EXIT_OK : cli_fail(&err);
out:
    mtls_server_free(srv);
    pki_password_free(password);
    cli_list_release(&crls);
    cli_list_release(&ticket_keys);
    cli_list_release(&allow);
    cli_config_release();
    forget_said();
    cli_args_release(&args);
    return rc;
}
