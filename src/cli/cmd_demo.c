/* mtls demo: the tutorial from start to finish in one command.
 *
 * It runs this same binary as real subprocesses, the way a reader would:
 * `mtls init` makes the PKI, `mtls serve` is a separate server process
 * (waited for by polling its port, stopped with SIGTERM). The three checks
 * use the built-in probe client, and each prints the curl command that does
 * the same by hand. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "probe_report.h"

#define DEMO_PORT 8443
#define SERVER_START_MS 15000
#define SERVER_STOP_MS 10000
#define PROBE_TIMEOUT_MS 5000
#define EXPECTED_BODY "{\"message\":\"Hello mtls\"}"

static const char *dir_opt;
static long port_opt;
static int keep;

static const struct cli_opt opts[] = {
    {"dir", 'd', CLI_STRING, &dir_opt, "DIR",
     "work in DIR (created; a whole PKI there is reused, part of one refused); default: a "
     "temporary folder, removed at the end",
     0, 0},
    {"port", 'p', CLI_INT, &port_opt, "N",
     "server port on 127.0.0.1 (default: 8443 if free, else one the kernel picks)", 1, 65535},
    {"keep", 'k', CLI_FLAG, &keep, NULL,
     "keep the temporary folder, to try the curl commands by hand", 0, 0},
    {0},
};

static const struct cli_spec spec = {
    .name = "demo",
    .usage = "[--dir DIR] [--port N] [--keep]",
    .summary = "run the mTLS tutorial end to end: PKI, server, the three curl checks",
    .description =
        "1. makes the PKI with 'mtls init' (two CAs, a client and a server certificate);\n"
        "2. starts 'mtls serve' on 127.0.0.1 as a separate process;\n"
        "3. runs the tutorial's three checks with the built-in client, printing for each the\n"
        "   curl command that does the same: with CA, key and certificate (expects 200 and\n"
        "   {\"message\":\"Hello mtls\"}); without the server's CA (expects us to refuse the\n"
        "   server: unknown CA); without the client certificate (expects the server to\n"
        "   refuse us);\n"
        "4. shows the access-log and system-log lines the server wrote, and stops it.\n"
        "Ctrl-C stops the server and removes the temporary folder (unless --keep) first.",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = "  1  a check did not behave as the tutorial says, or the demo could not run\n"
                  "     (the PKI or the server failed, the --port is in use, --dir is not a\n"
                  "     folder or holds part of a PKI)\n",
};

/* The server's pid, for the signal handler: a demo that is interrupted
 * must not leave its server running, nor its temporary folder (with keys). */
static volatile sig_atomic_t server_pid_for_signal;
static volatile sig_atomic_t interrupted_by;

/* Stops the server at once and lets the demo unwind and clean up; the
 * signal is raised again once the temporary folder is gone. */
static void on_fatal_signal(int sig)
{
    pid_t pid = (pid_t)server_pid_for_signal;

    interrupted_by = sig;
    if (pid > 0)
        kill(pid, SIGTERM);
}

static void catch_fatal_signals(void)
{
    struct sigaction sa;
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP};

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
}

/* ---- small helpers --------------------------------------------------- */

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* 1 when nothing is bound to 127.0.0.1:port (we could bind it ourselves). */
static int port_is_free(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, ok;

    if (fd < 0)
        return 0;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/*
 * 1 when a socket listens on 127.0.0.1:port (or on every address). Read from
 * /proc/net/tcp rather than by connecting: a test connection would be a
 * "client closed the connection during the handshake" line in the server's
 * log. Without /proc, a plain connect() decides.
 */
static int port_listening(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    int found = 0;

    if (f == NULL) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
            return 0;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        found = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        return found;
    }
    /* "  0: 0100007F:20FB 00000000:0000 0A ...": local address, remote, state. */
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        unsigned addr, lport, state;

        if (sscanf(line, " %*d: %8X:%4X %*8X:%*4X %2X", &addr, &lport, &state) == 3 &&
            state == 0x0A && (int)lport == port && (addr == 0 || addr == htonl(INADDR_LOOPBACK)))
            found = 1;
    }
    fclose(f);
    return found;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* An unlinked temporary file for a child's output: read back on failure. */
static int output_file(void)
{
    char path[] = "/tmp/mtls-demo-out-XXXXXX";
    int fd = mkstemp(path);

    if (fd >= 0)
        unlink(path);
    return fd;
}

/* Prints what a child wrote to fd (from offset 0), indented, on f. */
static void print_output(FILE *f, int fd, const char *indent)
{
    char buf[4096];
    ssize_t n;
    off_t off = 0;
    int at_line_start = 1;

    while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (at_line_start)
                fputs(indent, f);
            fputc(buf[i], f);
            at_line_start = buf[i] == '\n';
        }
        off += n;
    }
    if (!at_line_start)
        fputc('\n', f);
}

/* The port in the server's "HTTPS listening on 127.0.0.1:PORT...." line, read
 * from what it wrote to fd so far; 0 while the line is not there. */
static int printed_port(int fd)
{
    static const char marker[] = "HTTPS listening on 127.0.0.1:";
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    const char *at;
    long port;

    if (n <= 0)
        return 0;
    buf[n] = '\0';
    at = strstr(buf, marker);
    if (at == NULL)
        return 0;
    port = strtol(at + sizeof(marker) - 1, NULL, 10);
    return port > 0 && port <= 65535 ? (int)port : 0;
}

/* Starts `self args...` in dir with stdout and stderr to out_fd. */
static pid_t spawn(const char *self, char *const args[], const char *dir, int out_fd)
{
    pid_t pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid != 0)
        return pid;
    /* The child: only async-signal-safe calls until exec. */
    signal(SIGPIPE, SIG_DFL);
    if (chdir(dir) != 0)
        _exit(127);
    if (out_fd >= 0) {
        dup2(out_fd, STDOUT_FILENO);
        dup2(out_fd, STDERR_FILENO);
    }
    execv(self, args);
    _exit(127);
}

/* Waits for pid until deadline_ms; returns 1 and *status when it exited. */
static int wait_exit(pid_t pid, long long deadline_ms, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);

        if (r == pid)
            return 1;
        if (r < 0 && errno != EINTR)
            return 1;
        if (now_ms() >= deadline_ms)
            return 0;
        sleep_ms(20);
    }
}

static void describe_status(int status, char *buf, size_t size)
{
    if (WIFEXITED(status))
        snprintf(buf, size, "exit code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, size, "signal %d", WTERMSIG(status));
    else
        snprintf(buf, size, "status %d", status);
}

/* ---- the three checks ------------------------------------------------ */

struct check {
    const char *title;
    const char *curl_flags; /* what precedes the URL on curl's command line */
    mtls_client_files files;
    const char *expect; /* what the article says happens */
};

static int check_passed(int index, const mtls_probe_result *res)
{
    switch (index) {
    case 0:
        return res->outcome == MTLS_PROBE_OK && res->http_status == 200 && res->body != NULL &&
               strncmp(res->body, EXPECTED_BODY, strlen(EXPECTED_BODY)) == 0 &&
               strspn(res->body + strlen(EXPECTED_BODY), " \r\n") ==
                   strlen(res->body + strlen(EXPECTED_BODY));
    case 1:
        /* The article: curl sends the alert "unknown CA" and stops. */
        return res->outcome == MTLS_PROBE_WE_REFUSED && res->alert_sent.seen &&
               res->alert_sent.code == 48;
    default:
        /* The article: the server ends the handshake; we sent no certificate. */
        return res->outcome == MTLS_PROBE_THEY_REFUSED && res->cert_requested && !res->ours_sent;
    }
}

static void what_happened(const mtls_probe_result *res, char *buf, size_t size)
{
    switch (res->outcome) {
    case MTLS_PROBE_OK:
    case MTLS_PROBE_HTTP_REFUSED: {
        char text[1024];

        snprintf(buf, size, "%d %s", res->http_status,
                 probe_one_line(res->body ? res->body : res->http_reason, 200, text, sizeof(text)));
        break;
    }
    case MTLS_PROBE_WE_REFUSED:
        snprintf(buf, size, "we refused the server: sent the alert %s (%s)",
                 res->alert_sent.seen ? res->alert_sent.name : "none", res->verify_reason);
        break;
    case MTLS_PROBE_THEY_REFUSED:
        if (res->alert_received.seen)
            snprintf(buf, size, "the server refused us: it sent the alert %s%s",
                     res->alert_received.name,
                     res->alert_received.stage >= MTLS_STAGE_REQUEST
                         ? " (TLS 1.3: after our side of the handshake)"
                         : "");
        else
            snprintf(buf, size, "the server refused us: %s", res->message);
        break;
    default:
        snprintf(buf, size, "%s: %s", probe_verdict(res), res->message);
        break;
    }
}

static int run_check(int index, const struct check *c, const char *dir, int port)
{
    mtls_probe_opts popts = {0};
    mtls_probe_result res = {0};
    mtls_err err;
    char url[64], got[1024], why[2048], cwd[PATH_MAX];
    int passed = 0;

    /* The probe reads the files relative to the PKI folder, as curl would there. */
    if (getcwd(cwd, sizeof(cwd)) == NULL || chdir(dir) != 0) {
        cli_failf("cannot enter '%s': %s", dir, strerror(errno));
        return 0;
    }
    snprintf(url, sizeof(url), "https://localhost:%d/test", port);
    popts.url = url;
    popts.files = c->files;
    popts.timeout_ms = PROBE_TIMEOUT_MS;
    mtls_err_clear(&err);
    if (mtls_probe(&popts, &res, &err) != 0) {
        snprintf(got, sizeof(got), "the probe could not start: %s", err.msg);
        why[0] = '\0';
    } else {
        what_happened(&res, got, sizeof(got));
        probe_diagnose(&res, &popts, why, sizeof(why));
        passed = check_passed(index, &res);
    }
    if (chdir(cwd) != 0)
        cli_warnf("cannot return to '%s': %s", cwd, strerror(errno));
    printf("%s%d/3  %s%s\n", cli_bold(stdout), index + 1, c->title, cli_reset(stdout));
    printf("     $ curl %s%s%s\n", c->curl_flags, c->curl_flags[0] ? " " : "", url);
    printf("     got   %s\n", got);
    if (why[0])
        printf("     why   %s\n", why);
    printf("     %s%s%s  the tutorial expects %s\n\n", passed ? cli_green(stdout) : cli_red(stdout),
           passed ? "PASS" : "FAIL", cli_reset(stdout), c->expect);
    mtls_probe_result_release(&res);
    return passed;
}

/* ---- logs ------------------------------------------------------------ */

static off_t file_size(const char *dir, const char *name)
{
    char path[PATH_MAX];
    struct stat st;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return stat(path, &st) == 0 ? st.st_size : 0;
}

/* Prints the lines name gained since offset from. */
static void print_log(const char *dir, const char *name, off_t from)
{
    char path[PATH_MAX], line[4096];
    FILE *f;
    int any = 0;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    printf("  %s%s%s\n", cli_bold(stdout), name, cli_reset(stdout));
    f = fopen(path, "r");
    if (f != NULL && fseeko(f, from, SEEK_SET) == 0) {
        while (fgets(line, sizeof(line), f) != NULL) {
            printf("    %s%s", line, strchr(line, '\n') ? "" : "\n");
            any = 1;
        }
    }
    if (f != NULL)
        fclose(f);
    if (!any)
        printf("    (nothing written)\n");
}

/* ---- the demo -------------------------------------------------------- */

/* What one run of the demo holds, so that every step can fail into one
 * clean-up. */
struct demo {
    char self[PATH_MAX];
    const char *dir;
    int made_tmp;
    int port;
    char listen[32];
    pid_t server;
    int out_fd; /* the server's stdout and stderr */
    off_t access_from, system_from;
    int started; /* the server was started (it may have stopped since) */
};

static const char *const pki_files[] = {"serverca.crt", "clientca.crt", "server.crt",
                                        "server.key",   "client.crt",   "client.key"};

/* How many of the files the demo needs are in dir. */
static size_t pki_files_present(const char *dir)
{
    char path[PATH_MAX];
    size_t n = 0;

    for (size_t i = 0; i < sizeof(pki_files) / sizeof(pki_files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, pki_files[i]);
        n += access(path, F_OK) == 0;
    }
    return n;
}

static int make_pki(const char *self, const char *dir)
{
    char *args[] = {(char *)"mtls", (char *)"init", (char *)"--dir", (char *)".", NULL};
    int out = output_file(), status = 0, ok;
    pid_t pid;

    pid = spawn(self, args, dir, out);
    if (pid < 0) {
        if (out >= 0)
            close(out);
        return cli_failf("cannot start 'mtls init': %s", strerror(errno));
    }
    wait_exit(pid, LLONG_MAX, &status);
    ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) {
        char how[64];

        describe_status(status, how, sizeof(how));
        cli_failf("'mtls init --dir %s' failed (%s); it said:", dir, how);
        if (out >= 0)
            print_output(stderr, out, "  ");
    }
    if (out >= 0)
        close(out);
    return ok ? 0 : EXIT_FAIL;
}

/* The port first: a busy --port must fail before anything is made. */
static int pick_port(struct demo *d)
{
    if (port_opt != 0) {
        d->port = (int)port_opt;
        if (!port_is_free(d->port))
            return cli_failf("port %d on 127.0.0.1 is in use: pick another with --port, or leave "
                             "it out to use any free port",
                             d->port);
    } else {
        /* The tutorial's port when it is free; else port 0, and the server
         * says which port the kernel gave it (no race with another process
         * taking a port we picked). */
        d->port = port_is_free(DEMO_PORT) ? DEMO_PORT : 0;
    }
    snprintf(d->listen, sizeof(d->listen), "127.0.0.1:%d", d->port);
    return 0;
}

/* --dir (made when missing, refused when it is a file) or a new temporary folder. */
static int make_dir(struct demo *d)
{
    static char tmp_path[PATH_MAX];
    const char *base = getenv("TMPDIR");
    struct stat st;

    if (dir_opt != NULL) {
        d->dir = dir_opt;
        if (mkdir(d->dir, 0755) != 0 && errno != EEXIST)
            return cli_failf("cannot create the folder '%s': %s", d->dir,
                             errno == ENOENT ? "the folder above it does not exist"
                                             : strerror(errno));
        if (stat(d->dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return cli_failf("--dir '%s' is not a folder: name a folder (it is made when missing)",
                             d->dir);
        return 0;
    }
    snprintf(tmp_path, sizeof(tmp_path), "%s/%s", base && base[0] ? base : "/tmp",
             "mtls-demo-XXXXXX");
    d->dir = mkdtemp(tmp_path);
    if (d->dir == NULL)
        return cli_failf("cannot create a temporary folder in '%s': %s",
                         base && base[0] ? base : "/tmp", strerror(errno));
    d->made_tmp = 1;
    return 0;
}

/* 1. The PKI: reused when --dir holds it whole, made by 'mtls init' when
 * the folder holds none of it, refused when it holds part of it. */
static int setup_pki(const struct demo *d)
{
    size_t present = d->made_tmp ? 0 : pki_files_present(d->dir);

    if (present == sizeof(pki_files) / sizeof(pki_files[0])) {
        printf("pki      reusing the certificates already in %s\n", d->dir);
        return 0;
    }
    if (present > 0)
        return cli_failf("'%s' holds part of a PKI (%zu of serverca.crt, clientca.crt, server.crt, "
                         "server.key, client.crt, client.key): complete it with 'mtls init --dir "
                         "%s --force', or use another --dir",
                         d->dir, present, d->dir);
    if (make_pki(d->self, d->dir) != 0)
        return EXIT_FAIL;
    printf("pki      'mtls init' made two CAs and two certificates in %s\n", d->dir);
    printf("         serverca.crt (CN=server-example-ca) signed server.crt (CN=localhost)\n");
    printf("         clientca.crt (CN=client-example-ca) signed client.crt (CN=localclient)\n");
    return 0;
}

/* 1 once the server listens; with port 0 its port is the one it printed. */
static int server_listening(struct demo *d)
{
    if (d->port == 0)
        d->port = printed_port(d->out_fd);
    return d->port != 0 && port_listening(d->port);
}

/* 2. The server, a real separate process, waited for by polling its port. */
static int start_server(struct demo *d)
{
    char *serve_args[] = {(char *)"mtls",
                          (char *)"serve",
                          (char *)"--listen",
                          d->listen,
                          (char *)"--workers",
                          (char *)"1",
                          NULL};
    long long deadline = now_ms() + SERVER_START_MS;
    int status = 0;

    d->access_from = file_size(d->dir, "access.log");
    d->system_from = file_size(d->dir, "system.log");
    d->out_fd = output_file();
    d->server = spawn(d->self, serve_args, d->dir, d->out_fd);
    if (d->server < 0)
        return cli_failf("cannot start 'mtls serve': %s", strerror(errno));
    server_pid_for_signal = d->server;
    d->started = 1;
    while (!server_listening(d)) {
        if (waitpid(d->server, &status, WNOHANG) == d->server) {
            char how[64];

            describe_status(status, how, sizeof(how));
            d->server = -1;
            server_pid_for_signal = 0;
            cli_failf("'mtls serve --listen %s' stopped at once (%s); it said:", d->listen, how);
            if (d->out_fd >= 0)
                print_output(stderr, d->out_fd, "  ");
            return EXIT_FAIL;
        }
        if (interrupted_by != 0)
            return EXIT_FAIL;
        if (now_ms() >= deadline)
            return cli_failf("'mtls serve' does not listen on %s after %d s", d->listen,
                             SERVER_START_MS / 1000);
        sleep_ms(20);
    }
    printf("server   'mtls serve' (pid %d) listens on https://localhost:%d and requires a\n"
           "         client certificate issued by CN=client-example-ca\n\n",
           (int)d->server, d->port);
    return 0;
}

/* 3. The article's three checks; returns how many behaved as it says. */
static int run_checks(const struct demo *d)
{
    const struct check checks[3] = {
        {"with the server's CA, the client's key and certificate",
         "--cacert serverca.crt --key client.key --cert client.crt",
         {.cacert = "serverca.crt", .cert = "client.crt", .key = "client.key"},
         "200 and " EXPECTED_BODY},
        {"without the server's CA (the client cannot check who the server is)",
         "--key client.key --cert client.crt",
         {.cacert = NULL, .cert = "client.crt", .key = "client.key"},
         "the client to refuse the server: unknown CA"},
        {"without the client's certificate (the server cannot check who we are)",
         "--cacert serverca.crt",
         {.cacert = "serverca.crt", .cert = NULL, .key = NULL},
         "the server to refuse the client: handshake failure"},
    };
    int passed = 0;

    for (int i = 0; i < 3 && interrupted_by == 0; i++)
        passed += run_check(i, &checks[i], d->dir, d->port);
    return passed;
}

/* SIGTERM, then SIGKILL after SERVER_STOP_MS; 1 when it stopped cleanly. */
static int stop_server(struct demo *d, int *status)
{
    int stopped = 0;

    if (d->server <= 0)
        return 0;
    kill(d->server, SIGTERM);
    if (!wait_exit(d->server, now_ms() + SERVER_STOP_MS, status)) {
        cli_warnf("'mtls serve' did not stop within %d s of SIGTERM; killing it",
                  SERVER_STOP_MS / 1000);
        kill(d->server, SIGKILL);
        wait_exit(d->server, LLONG_MAX, status);
    } else {
        stopped = (WIFEXITED(*status) && WEXITSTATUS(*status) == 0) ||
                  (WIFSIGNALED(*status) && WTERMSIG(*status) == SIGTERM);
    }
    d->server = -1;
    server_pid_for_signal = 0;
    return stopped;
}

/* 4. What the server logged, and the verdict. */
static int report(const struct demo *d, int passed, int stopped, int status)
{
    printf("server logs (in %s)\n", d->dir);
    print_log(d->dir, "access.log", d->access_from);
    print_log(d->dir, "system.log", d->system_from);
    if (!stopped) {
        char how[64];

        describe_status(status, how, sizeof(how));
        printf("\n%sFAIL%s  'mtls serve' did not stop cleanly on SIGTERM (%s); it said:\n",
               cli_red(stdout), cli_reset(stdout), how);
        if (d->out_fd >= 0)
            print_output(stdout, d->out_fd, "  ");
    }
    printf("\n%s%d of 3 checks behaved as the tutorial says%s; the server %s\n",
           passed == 3 ? cli_green(stdout) : cli_red(stdout), passed, cli_reset(stdout),
           stopped ? "stopped cleanly" : "did not stop cleanly");
    if (d->made_tmp && keep)
        printf("kept %s: cd there and try the curl commands above (start 'mtls serve "
               "--listen %s' first)\n",
               d->dir, d->listen);
    return passed == 3 && stopped ? EXIT_OK : EXIT_FAIL;
}

static int find_self(struct demo *d)
{
    ssize_t n = readlink("/proc/self/exe", d->self, sizeof(d->self) - 1);

    if (n <= 0)
        return cli_failf("cannot find this program's own path in /proc/self/exe: %s",
                         strerror(errno));
    d->self[n] = '\0';
    return 0;
}

int cmd_demo(int argc, char **argv)
{
    struct cli_args args = {0};
    struct demo d = {.server = -1, .out_fd = -1};
    int rc, passed, stopped, status = 0;

    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        rc = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    rc = EXIT_FAIL;
    /* Line by line, so that progress and stderr's errors interleave in order. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    catch_fatal_signals();
    if (find_self(&d) != 0 || pick_port(&d) != 0)
        goto out;
    printf("%smtls demo%s: the mutual TLS tutorial, end to end\n\n", cli_bold(stdout),
           cli_reset(stdout));
    if (make_dir(&d) != 0 || setup_pki(&d) != 0 || interrupted_by != 0 || start_server(&d) != 0)
        goto out;
    passed = run_checks(&d);
    stopped = stop_server(&d, &status);
    if (interrupted_by == 0)
        rc = report(&d, passed, stopped, status);
out:
    stop_server(&d, &status);
    if (d.out_fd >= 0)
        close(d.out_fd);
    if (d.made_tmp && !keep)
        nftw(d.dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    cli_args_release(&args);
    if (interrupted_by != 0) {
        fprintf(stderr, "interrupted%s%s\n", d.started ? ": the server is stopped" : "",
                d.made_tmp && !keep ? (d.started ? " and the temporary folder removed"
                                                 : ": the temporary folder is removed")
                                    : "");
        signal(interrupted_by, SIG_DFL);
        raise(interrupted_by);
    }
    return rc;
}
