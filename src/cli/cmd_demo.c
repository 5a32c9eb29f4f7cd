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
     "work in DIR (created; a PKI there is reused); default: a temp folder", 0, 0},
    {"port", 'p', CLI_INT, &port_opt, "N",
     "server port on 127.0.0.1 (default: 8443 if free, else any free port)", 1, 65535},
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
        "4. shows the access-log and system-log lines the server wrote, and stops it.",
    .opts = opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = "  1  a check did not behave as the tutorial says, or the demo could not run\n"
                  "     (the PKI or the server failed, the --port is in use)\n",
};

/* The server's pid, for the signal handler: a demo that is interrupted
 * must not leave its server running. */
static volatile sig_atomic_t server_pid_for_signal;

static void on_fatal_signal(int sig)
{
    pid_t pid = (pid_t)server_pid_for_signal;

    if (pid > 0)
        kill(pid, SIGTERM);
    signal(sig, SIG_DFL);
    raise(sig);
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

/* A port the kernel considers free right now. */
static int any_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

    if (fd < 0)
        return -1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
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
    case MTLS_PROBE_HTTP_REFUSED:
        snprintf(buf, size, "%d %s%.200s", res->http_status, res->body ? "" : res->http_reason,
                 res->body ? res->body : "");
        buf[strcspn(buf, "\r\n")] = '\0';
        break;
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

static int have_pki(const char *dir)
{
    static const char *const files[] = {"serverca.crt", "clientca.crt", "server.crt",
                                        "server.key",   "client.crt",   "client.key"};
    char path[PATH_MAX];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        if (access(path, R_OK) != 0)
            return 0;
    }
    return 1;
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

int cmd_demo(int argc, char **argv)
{
    struct cli_args args = {0};
    char self[PATH_MAX], listen[32];
    const char *dir = NULL;
    int rc, made_tmp = 0, port, out_fd = -1, passed = 0, status = 0, stopped = 0;
    pid_t server = -1;
    off_t access_from, system_from;
    ssize_t n;

    rc = cli_parse(&spec, argc, argv, &args);
    if (rc != CLI_PARSED) {
        rc = rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
        goto out;
    }
    rc = EXIT_FAIL;
    /* Line by line, so that progress and stderr's errors interleave in order. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        cli_failf("cannot find this program's own path in /proc/self/exe: %s", strerror(errno));
        goto out;
    }
    self[n] = '\0';

    /* The port first: a busy --port must fail before anything is made. */
    if (port_opt != 0) {
        port = (int)port_opt;
        if (!port_is_free(port)) {
            cli_failf("port %d on 127.0.0.1 is in use: pick another with --port, or leave it out "
                      "to use any free port",
                      port);
            goto out;
        }
    } else {
        port = port_is_free(DEMO_PORT) ? DEMO_PORT : any_free_port();
        if (port < 0) {
            cli_failf("cannot find a free port on 127.0.0.1: %s", strerror(errno));
            goto out;
        }
    }

    printf("%smtls demo%s: the mutual TLS tutorial, end to end\n\n", cli_bold(stdout),
           cli_reset(stdout));
    if (dir_opt != NULL) {
        dir = dir_opt;
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            cli_failf("cannot create '%s': %s", dir, strerror(errno));
            goto out;
        }
    } else {
        const char *base = getenv("TMPDIR");
        static char tmp_path[PATH_MAX];

        snprintf(tmp_path, sizeof(tmp_path), "%s/%s", base && base[0] ? base : "/tmp",
                 "mtls-demo-XXXXXX");
        dir = mkdtemp(tmp_path);
        if (dir == NULL) {
            cli_failf("cannot create a temporary folder in '%s': %s",
                      base && base[0] ? base : "/tmp", strerror(errno));
            goto out;
        }
        made_tmp = 1;
    }

    /* 1. The PKI. */
    if (dir_opt != NULL && have_pki(dir)) {
        printf("pki      reusing the certificates already in %s\n", dir);
    } else {
        if (make_pki(self, dir) != 0)
            goto out;
        printf("pki      'mtls init' made two CAs and two certificates in %s\n", dir);
        printf("         serverca.crt (CN=server-example-ca) signed server.crt (CN=localhost)\n");
        printf("         clientca.crt (CN=client-example-ca) signed client.crt (CN=localclient)\n");
    }

    /* 2. The server, a real separate process. */
    access_from = file_size(dir, "access.log");
    system_from = file_size(dir, "system.log");
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    {
        char *serve_args[] = {(char *)"mtls",
                              (char *)"serve",
                              (char *)"--listen",
                              listen,
                              (char *)"--workers",
                              (char *)"1",
                              NULL};

        out_fd = output_file();
        signal(SIGINT, on_fatal_signal);
        signal(SIGTERM, on_fatal_signal);
        signal(SIGHUP, on_fatal_signal);
        server = spawn(self, serve_args, dir, out_fd);
        if (server < 0) {
            cli_failf("cannot start 'mtls serve': %s", strerror(errno));
            goto out;
        }
        server_pid_for_signal = server;
    }
    {
        long long deadline = now_ms() + SERVER_START_MS;
        int up = 0;

        while (!up && now_ms() < deadline) {
            if (waitpid(server, &status, WNOHANG) == server) {
                char how[64];

                describe_status(status, how, sizeof(how));
                server = -1;
                server_pid_for_signal = 0;
                cli_failf("'mtls serve --listen %s' stopped at once (%s); it said:", listen, how);
                if (out_fd >= 0)
                    print_output(stderr, out_fd, "  ");
                goto out;
            }
            up = port_listening(port);
            if (!up)
                sleep_ms(20);
        }
        if (!up) {
            cli_failf("'mtls serve' does not listen on %s after %d s", listen,
                      SERVER_START_MS / 1000);
            goto out;
        }
    }
    printf("server   'mtls serve' (pid %d) listens on https://localhost:%d and requires a\n"
           "         client certificate issued by CN=client-example-ca\n\n",
           (int)server, port);

    /* 3. The article's three checks. */
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

        for (int i = 0; i < 3; i++)
            passed += run_check(i, &checks[i], dir, port);
    }

    /* 4. Stop the server, then show what it logged. */
    kill(server, SIGTERM);
    if (!wait_exit(server, now_ms() + SERVER_STOP_MS, &status)) {
        cli_warnf("'mtls serve' did not stop within %d s of SIGTERM; killing it",
                  SERVER_STOP_MS / 1000);
        kill(server, SIGKILL);
        wait_exit(server, LLONG_MAX, &status);
    } else {
        stopped = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                  (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
    }
    server = -1;
    server_pid_for_signal = 0;
    printf("server logs (in %s)\n", dir);
    print_log(dir, "access.log", access_from);
    print_log(dir, "system.log", system_from);
    if (!stopped) {
        char how[64];

        describe_status(status, how, sizeof(how));
        printf("\n%sFAIL%s  'mtls serve' did not stop cleanly on SIGTERM (%s); it said:\n",
               cli_red(stdout), cli_reset(stdout), how);
        if (out_fd >= 0)
            print_output(stdout, out_fd, "  ");
    }
    printf("\n%s%d of 3 checks behaved as the tutorial says%s; the server %s\n",
           passed == 3 ? cli_green(stdout) : cli_red(stdout), passed, cli_reset(stdout),
           stopped ? "stopped cleanly" : "did not stop cleanly");
    if (made_tmp && keep)
        printf("kept %s: cd there and try the curl commands above (start 'mtls serve "
               "--listen %s' first)\n",
               dir, listen);
    rc = passed == 3 && stopped ? EXIT_OK : EXIT_FAIL;
out:
    if (server > 0) {
        kill(server, SIGTERM);
        if (!wait_exit(server, now_ms() + SERVER_STOP_MS, &status)) {
            kill(server, SIGKILL);
            wait_exit(server, LLONG_MAX, &status);
        }
        server_pid_for_signal = 0;
    }
    if (out_fd >= 0)
        close(out_fd);
    if (made_tmp && !keep && dir != NULL)
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    cli_args_release(&args);
    return rc;
}
