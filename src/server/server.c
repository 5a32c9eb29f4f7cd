/*
 * The server: configuration checked up front, one SO_REUSEPORT listening
 * socket per worker bound before any worker starts (so that a port in use is
 * a start-up error), then workers as processes (the default, like nginx) or
 * threads, and a main process or thread that only waits for signals.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "mtls/certinfo.h"
#include "mtls/server.h"
#include "server_internal.h"

#define RESPAWN_WINDOW 10 /* seconds */
#define RESPAWN_MAX 10    /* worker deaths per window before giving up */
/* The shared session cache: ~28,000 sessions of a P-256 client (nginx's 10m: ~40,000). */
#define SESSION_CACHE_BYTES (16u << 20)

void mtls_server_opts_init(mtls_server_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->listen = "8443";
    opts->tls.cert_file = "server.crt";
    opts->tls.key_file = "server.key";
    opts->tls.client_ca_file = "clientca.crt";
    opts->tls.verify = MTLS_VERIFY_REQUIRE;
    opts->workers = 0;
    opts->model = MTLS_WORKERS_PROCESS;
    opts->access_log = "access.log";
    opts->system_log = "system.log";
    opts->log_format = MTLS_LOG_TEXT;
    opts->handshake_timeout_ms = 10000;
    opts->header_timeout_ms = 10000;
    opts->idle_timeout_ms = 60000;
    opts->drain_timeout_ms = 10000;
    opts->upstream_connect_timeout_ms = 5000;
    opts->upstream_timeout_ms = 60000;
    opts->max_connections = 10000;
    mtls_http_config_init(&opts->http);
}

/* ---- new / free ------------------------------------------------------------ */

static void tls_warning(void *ctx, const char *msg)
{
    mtls_server *srv = ctx;

    if (srv->opts.warn != NULL)
        srv->opts.warn(srv->opts.warn_ctx, msg);
    mtls__syslog(srv, "warn", NULL, "config_warning", msg, NULL);
}

/*
 * Thread model: one SSL_CTX per worker (no sharing of its locks between
 * threads), each loaded from the files like the first. They are built here,
 * before the caller says that the server listens: built in run, after that
 * line, they read files that whoever read it may already be replacing (a
 * reload's new key, say), and a worker that then failed to start took the
 * whole server down, and with it the SIGHUP that announced the new files.
 */
static int thread_ctxs_new(mtls_server *srv, mtls_err *err)
{
    srv->thread_ctxs = calloc(srv->workers, sizeof(SSL_CTX *));
    if (srv->thread_ctxs == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    SSL_CTX_up_ref(srv->ssl_ctx);
    srv->thread_ctxs[0] = srv->ssl_ctx;
    for (unsigned i = 1; i < srv->workers; i++) {
        int rc = mtls_tls_server_ctx_new(&srv->opts.tls, NULL, NULL, &srv->thread_ctxs[i], err);

        if (rc != 0)
            return rc;
    }
    return 0;
}

static void thread_ctxs_free(mtls_server *srv)
{
    for (unsigned i = 0; srv->thread_ctxs != NULL && i < srv->workers; i++)
        SSL_CTX_free(srv->thread_ctxs[i]);
    free(srv->thread_ctxs);
    srv->thread_ctxs = NULL;
}

int mtls_server_new(const mtls_server_opts *opts, mtls_server **out, mtls_err *err)
{
    mtls_server *srv = calloc(1, sizeof(*srv));
    long cores;
    int rc;

    *out = NULL;
    if (srv == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    srv->opts = *opts;
    srv->access_log.fd = srv->system_log.fd = -1;
    cores = sysconf(_SC_NPROCESSORS_ONLN);
    srv->workers = opts->workers > 0 ? opts->workers : (unsigned)(cores > 0 ? cores : 1);
    if (srv->opts.handshake_timeout_ms == 0 || srv->opts.header_timeout_ms == 0 ||
        srv->opts.idle_timeout_ms == 0 || srv->opts.max_connections == 0) {
        rc = mtls_err_set(err, MTLS_E_INVALID, "timeouts and --max-connections must be above 0");
        goto out;
    }
    rc = mtls__user_lookup(opts->user, &srv->user, err);
    if (rc != 0)
        goto out;
    if (srv->user.set && opts->model == MTLS_WORKERS_THREAD) {
        /* Threads share the main process's credentials: it would lose root for reloads. */
        rc = mtls_err_set(err, MTLS_E_INVALID,
                          "--user needs --worker-model process: worker threads cannot run as "
                          "another user than the process that reloads the key");
        goto out;
    }
    srv->n_slots =
        srv->user.set || (opts->reload_config != NULL && opts->model == MTLS_WORKERS_PROCESS)
            ? srv->workers * MTLS__GENERATIONS
            : srv->workers;
    srv->shared_size = sizeof(*srv->shared) + srv->n_slots * sizeof(srv->shared->worker[0]);
    srv->shared =
        mmap(NULL, srv->shared_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (srv->shared == MAP_FAILED) {
        srv->shared = NULL;
        rc = mtls_err_sys(err, MTLS_E_NOMEM, errno, "cannot map the workers' shared memory");
        goto out;
    }
    atomic_init(&srv->shared->open_conns, 0);
    atomic_init(&srv->shared->cap_said, 0);
    for (unsigned i = 0; i < srv->n_slots; i++) {
        atomic_init(&srv->shared->worker[i].conns, 0);
        atomic_init(&srv->shared->worker[i].running, 0);
    }
    /*
     * Before the SSL_CTX and the fork: every worker resumes every worker's
     * sessions. With ticket keys the session travels in the ticket instead.
     */
    if (opts->tls.n_ticket_key_files == 0) {
        rc = mtls_tls_session_cache_new(SESSION_CACHE_BYTES, &srv->sessions, err);
        if (rc != 0)
            goto out;
    }
    srv->opts.tls.session_cache = srv->sessions;
    /* The system log first, so that configuration warnings land in it too. */
    rc = mtls__log_open(&srv->system_log, opts->system_log, err);
    if (rc != 0)
        goto out;
    rc = mtls__log_open(&srv->access_log, opts->access_log, err);
    if (rc != 0)
        goto out;
    rc = mtls_tls_server_ctx_new(&srv->opts.tls, tls_warning, srv, &srv->ssl_ctx, err);
    if (rc != 0)
        goto out;
    if (opts->model == MTLS_WORKERS_THREAD) {
        rc = thread_ctxs_new(srv, err);
        if (rc != 0)
            goto out;
    }
    rc = mtls__server_proxy_init(srv, err);
    if (rc != 0)
        goto out;
    rc = mtls__listeners_bind(&srv->listeners, srv->opts.listen, srv->workers, err);
    if (rc != 0)
        goto out;
    if (opts->metrics_listen != NULL) {
        /* Route rows: the worker's table (mtls__worker_routes_count()), then "none". */
        rc = mtls__metrics_new(srv->n_slots, mtls__worker_routes_count(srv), &srv->metrics, err);
        if (rc == 0)
            rc = mtls__metrics_bind(srv, err);
        if (rc != 0)
            goto out;
    }
    *out = srv;
    srv = NULL;
out:
    if (srv != NULL && srv->system_log.fd >= 0 && rc != 0)
        mtls__syslog(srv, "error", NULL, "start_failed", err->msg, NULL);
    mtls_server_free(srv);
    return rc;
}

void mtls_server_free(mtls_server *srv)
{
    if (srv == NULL)
        return;
    mtls__listeners_release(&srv->listeners);
    for (unsigned i = 0; i < srv->n_metrics_fds; i++)
        close(srv->metrics_fds[i]);
    mtls__metrics_free(srv->metrics);
    thread_ctxs_free(srv);
    SSL_CTX_free(srv->ssl_ctx);
    mtls__server_proxy_release(srv);
    mtls__log_close(&srv->access_log);
    mtls__log_close(&srv->system_log);
    if (srv->shared != NULL)
        munmap(srv->shared, srv->shared_size);
    mtls_tls_session_cache_free(srv->sessions);
    free(srv);
}

int mtls_server_port(const mtls_server *srv)
{
    return srv->listeners.port;
}

const char *mtls_server_address(const mtls_server *srv)
{
    return srv->listeners.address;
}

const char *mtls_server_metrics_address(const mtls_server *srv)
{
    return srv->n_metrics_fds > 0 ? srv->metrics_address : NULL;
}

int mtls_server_listens_everywhere(const mtls_server *srv)
{
    return srv->listeners.everywhere;
}

/* ---- running ----------------------------------------------------------------- */

static void crl_note(mtls_server *srv)
{
    time_t now = time(NULL);

    srv->crl_next_update =
        mtls_tls_crl_next_update(srv->ssl_ctx, srv->crl_issuer, sizeof(srv->crl_issuer));
    /* Loading already warned about a CRL that expires within a week. */
    srv->crl_warned = srv->crl_next_update > now && srv->crl_next_update - now < 7 * 24 * 3600;
}

/* Called about once a second: says it when a loaded CRL nears or passes its nextUpdate. */
static void crl_watch(mtls_server *srv)
{
    time_t now = time(NULL), next = srv->crl_next_update;
    char when[40];
    struct tm tm;

    if (next == 0 || srv->crl_warned == 2)
        return;
    gmtime_r(&next, &tm);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
    if (next <= now) {
        mtls__syslogf(srv, "error", "crl_expired",
                      "the CRL from %s expired on %s: every client certificate of that CA is "
                      "refused until a fresh CRL is loaded ('mtls crl create', then SIGHUP)",
                      srv->crl_issuer, when);
        srv->crl_warned = 2;
    } else if (next - now < 7 * 24 * 3600 && srv->crl_warned == 0) {
        mtls__syslogf(srv, "warn", "crl_expires_soon",
                      "the CRL from %s expires on %s; make a fresh one ('mtls crl create') and "
                      "reload (SIGHUP) before then, or its clients will be refused",
                      srv->crl_issuer, when);
        srv->crl_warned = 1;
    }
}

static void reload_warning(void *ctx, const char *msg)
{
    mtls__syslog(ctx, "warn", NULL, "config_warning", msg, NULL);
}

/*
 * SIGHUP: the certificate, key, client CA and CRLs are loaded and checked
 * into a new SSL_CTX first; only when all is well does it replace the old
 * one (which in-flight connections keep using). Returns the new context
 * (owned by srv), or NULL when the old set stays.
 */
static SSL_CTX *reload(mtls_server *srv)
{
    SSL_CTX *ctx = NULL;
    mtls_err err;

    mtls_err_clear(&err);
    if (mtls_tls_server_ctx_new(&srv->opts.tls, reload_warning, srv, &ctx, &err) != 0) {
        mtls__syslogf(srv, "error", "reload_refused",
                      "SIGHUP: reload refused, the old certificates stay in force: %s", err.msg);
        mtls__metrics_reload(srv->metrics, 0);
        return NULL;
    }
    SSL_CTX_free(srv->ssl_ctx);
    srv->ssl_ctx = ctx;
    /*
     * Nothing from before resumes, on any worker, from now on (a revoked
     * client's session included); ctx and the workers' new contexts use the
     * emptied cache.
     */
    mtls_tls_session_cache_flush(srv->sessions, ctx);
    crl_note(srv);
    mtls__syslogf(srv, "info", "reload",
                  "SIGHUP: reloaded '%s', '%s', '%s' and %zu CRL file(s); new handshakes use "
                  "them, open connections go on",
                  srv->opts.tls.cert_file, srv->opts.tls.key_file, srv->opts.tls.client_ca_file,
                  srv->opts.tls.n_crl_files);
    crl_watch(srv);
    mtls__metrics_reload(srv->metrics, 1);
    return ctx;
}

/* The signals the server holds and takes with sigtimedwait(): the one list. */
static void signal_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGUSR1);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGCHLD);
}

void mtls_server_hold_signals(void)
{
    sigset_t set;

    signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void log_start(mtls_server *srv)
{
    char names[1024] = "";
    STACK_OF(X509_NAME) *cas = SSL_CTX_get_client_CA_list(srv->ssl_ctx);

    for (int i = 0; i < sk_X509_NAME_num(cas); i++) {
        char one[MTLS_NAME_MAX];
        size_t used = strlen(names);

        mtls_name_oneline(sk_X509_NAME_value(cas, i), one, sizeof(one));
        snprintf(names + used, sizeof(names) - used, "%s%s", i > 0 ? "; " : "", one);
    }
    mtls__syslogf(
        srv, "info", "start",
        "HTTPS start: listening on %s%s, workers: %u (%s), verify-client %s, client CAs: %s",
        srv->listeners.address, srv->opts.proxy_protocol ? " (PROXY protocol v2 required)" : "",
        srv->workers, srv->opts.model == MTLS_WORKERS_THREAD ? "threads" : "processes",
        srv->opts.tls.verify == MTLS_VERIFY_OPTIONAL ? "optional" : "require", names);
    if (srv->n_metrics_fds > 0)
        mtls__syslogf(srv, "info", "metrics_start", "metrics: %s (plain HTTP, Prometheus text)",
                      srv->metrics_address);
}

/*
 * The worker side of a forked child; returns when it has drained. A worker
 * that cannot start says why in err, which the caller of mtls_server_run()
 * in the child shows (stderr), as well as in the system log.
 */
static int child_main(mtls_server *srv, unsigned id, unsigned slot, pid_t parent, mtls_err *err)
{
    struct mtls__worker w;
    int rc;

    signal(SIGCHLD, SIG_DFL);
    /* --user: root is given up before the worker touches a connection. */
    rc = mtls__user_become(&srv->user, err);
    if (rc != 0) {
        mtls__syslog(srv, "error", NULL, "worker_failed", err->msg, NULL);
        return rc;
    }
#ifdef __linux__
    /* Do not outlive the main process (set after setuid, which clears it). */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
    if (getppid() != parent)
        return 0;
    rc = mtls__worker_init(&w, srv, id, srv->ssl_ctx,
                           srv->listeners.fds + id * srv->listeners.n_addrs, srv->listeners.n_addrs,
                           1, err);
    if (rc != 0) {
        mtls__syslog(srv, "error", NULL, "worker_failed", err->msg, NULL);
        return rc;
    }
    w.slot = slot;
    atomic_store(&srv->shared->worker[slot].running, 1);
    rc = mtls__worker_run(&w);
    mtls__worker_release(&w);
    if (rc != 0) {
        mtls_err_set(err, rc, "worker %u stopped: out of memory", id);
        mtls__syslog(srv, "error", NULL, "worker_failed", err->msg, NULL);
    }
    return rc;
}

/*
 * The worker processes: slot s of srv->shared holds the counters of the
 * process pid[s], which serves listening sockets id[s]. Without --user there
 * is one slot per worker. With --user, a reload or a log reopen starts a new
 * generation in free slots (the main process, still root, has read the new
 * files or reopened the logs; the new workers inherit them) and asks the old
 * one to drain: current[id] is the slot of the worker that serves id now.
 */
struct procs {
    pid_t *pid;        /* per slot; 0: free */
    unsigned *id;      /* per slot */
    unsigned *current; /* per worker id: its slot */
    int in_child, child_rc;
};

/*
 * Forks worker id into slot. Returns the child's pid in the parent; in the
 * child it runs the worker and sets p->in_child (the caller then returns
 * from run()).
 */
static pid_t spawn(mtls_server *srv, struct procs *p, unsigned id, unsigned slot, mtls_err *err)
{
    pid_t parent = getpid();
    pid_t pid;

    fflush(NULL); /* nothing buffered may be written twice */
    atomic_store(&srv->shared->worker[slot].running, 0);
    atomic_store(&srv->shared->worker[slot].conns, 0);
    pid = fork();
    if (pid == 0) {
        p->in_child = 1;
        mtls_err_clear(err);
        p->child_rc = child_main(srv, id, slot, parent, err);
    } else if (pid < 0) {
        mtls__syslogf(srv, "error", "fork_failed", "cannot start worker %u: %s", id,
                      strerror(errno));
    } else {
        p->pid[slot] = pid;
        p->id[slot] = id;
        p->current[id] = slot;
    }
    return pid;
}

static void kill_all(const mtls_server *srv, const struct procs *p, int sig)
{
    for (unsigned s = 0; s < srv->n_slots; s++) {
        if (p->pid[s] > 0)
            kill(p->pid[s], sig);
    }
}

/*
 * --user: 1 when there are free slots for a new generation of workers;
 * otherwise says so (what: "SIGHUP", "SIGUSR1") and returns 0.
 */
static int generation_room(mtls_server *srv, const struct procs *p, const char *what)
{
    unsigned free_slots = 0;

    for (unsigned k = 0; k < srv->n_slots; k++)
        free_slots += p->pid[k] == 0;
    if (free_slots >= srv->workers)
        return 1;
    mtls__syslogf(srv, "error", "generation_refused",
                  "%s refused: the workers of earlier reloads are still draining; try again "
                  "after --drain-timeout",
                  what);
    return 0;
}

/*
 * --user (after generation_room()): starts a new generation of workers, which inherit the main
 * process's SSL_CTX and log descriptors, and lets the old one drain.
 */
static void new_generation(mtls_server *srv, struct procs *p, mtls_err *err)
{
    unsigned s = 0;

    for (unsigned id = 0; id < srv->workers; id++) {
        unsigned old = p->current[id];

        while (p->pid[s] != 0)
            s++;
        if (spawn(srv, p, id, s, err) < 0)
            continue; /* the old worker goes on serving */
        if (p->in_child)
            return;
        if (p->pid[old] > 0)
            kill(p->pid[old], SIGTERM);
    }
}

/* A worker died unexpectedly in slot s: restarts it there, or stops. Returns 1 to stop. */
static int worker_died(mtls_server *srv, struct procs *p, unsigned s, pid_t pid, int status,
                       time_t *window_start, int *deaths, mtls_err *err, int *rc)
{
    unsigned i = p->id[s];

    if (!atomic_load(&srv->shared->worker[s].running) && WIFEXITED(status)) {
        /* It exited before its loop ran and said why (stderr, system log):
         * restarting would say it again. One killed by a signal before it
         * was ready (the OOM killer, an operator) is restarted below, within
         * the crash-loop limit. */
        mtls__syslogf(srv, "error", "worker_start_failed",
                      "worker %u could not start; stopping the server", i);
        *rc = mtls_err_set(err, MTLS_E_IO,
                           "worker %u could not start (the reason is above and in the system log)",
                           i);
        return 1;
    }
    if (WIFSIGNALED(status))
        mtls__syslogf(srv, "error", "worker_died",
                      "worker %u (pid %ld) was killed by signal %d; restarting", i, (long)pid,
                      WTERMSIG(status));
    else
        mtls__syslogf(srv, "error", "worker_died",
                      "worker %u (pid %ld) exited with code %d; restarting", i, (long)pid,
                      WEXITSTATUS(status));
    if (time(NULL) - *window_start > RESPAWN_WINDOW) {
        *window_start = time(NULL);
        *deaths = 0;
    }
    if (++*deaths > RESPAWN_MAX) {
        mtls__syslogf(srv, "error", "worker_crash_loop", "workers keep dying; stopping the server");
        *rc = mtls_err_set(err, MTLS_E_IO,
                           "workers keep dying (the last: worker %u, %s %d); see the system log", i,
                           WIFSIGNALED(status) ? "signal" : "exit code",
                           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        return 1;
    }
    (void)spawn(srv, p, i, s, err);
    return 0;
}

static int run_processes(mtls_server *srv, mtls_err *err)
{
    struct procs p = {calloc(srv->n_slots, sizeof(pid_t)), calloc(srv->n_slots, sizeof(unsigned)),
                      calloc(srv->workers, sizeof(unsigned)), 0, 0};
    time_t window_start = time(NULL);
    int deaths = 0, stopping = 0, rc = 0;
    struct timespec tick = {1, 0};
    time_t stop_deadline = 0;
    sigset_t set;

    if (p.pid == NULL || p.id == NULL || p.current == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    signal_set(&set);
    for (unsigned i = 0; i < srv->workers; i++) {
        pid_t pid = spawn(srv, &p, i, i, err);

        if (p.in_child)
            goto out;
        if (pid < 0) {
            rc = mtls_err_sys(err, MTLS_E_IO, errno, "cannot start worker %u", i);
            stopping = 1;
            stop_deadline = time(NULL) + 2;
            kill_all(srv, &p, SIGTERM);
            break;
        }
    }
    if (!stopping)
        (void)mtls__sd_notify("READY=1\nSTATUS=serving");
    for (;;) {
        siginfo_t info;
        int sig, alive = 0;

        for (unsigned s = 0; s < srv->n_slots; s++)
            alive += p.pid[s] > 0;
        if (stopping && alive == 0)
            break;
        sig = sigtimedwait(&set, &info, &tick);
        crl_watch(srv);
        if (sig < 0) {
            if (stopping && time(NULL) > stop_deadline)
                kill_all(srv, &p, SIGKILL);
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            if (!stopping) {
                (void)mtls__sd_notify("STOPPING=1\nSTATUS=draining");
                mtls__syslogf(srv, "info", "stop", "%s: draining in-flight requests, then exit",
                              sig == SIGTERM ? "SIGTERM" : "SIGINT");
            }
            stopping = 1;
            stop_deadline = time(NULL) + srv->opts.drain_timeout_ms / 1000 + 3;
            kill_all(srv, &p, SIGTERM);
        } else if (sig == SIGUSR1) {
            /*
             * The main process reopens both logs too: a worker it starts
             * later inherits its descriptors, and must not write to the
             * rotated file. With --user the workers may not open the files:
             * a new generation inherits the reopened ones instead.
             */
            if (srv->user.set && !stopping && generation_room(srv, &p, "SIGUSR1")) {
                if (mtls__server_reopen_logs(srv) == 0)
                    mtls__syslogf(srv, "info", "log_reopen", "SIGUSR1: log files reopened");
                new_generation(srv, &p, err);
                if (p.in_child)
                    goto out;
            } else if (!srv->user.set) {
                if (mtls__server_reopen_logs(srv) == 0)
                    mtls__syslogf(srv, "info", "log_reopen", "SIGUSR1: log files reopened");
                kill_all(srv, &p, SIGUSR1);
            }
        } else if (sig == SIGHUP && !stopping) {
            /* --user, or a configuration file: workers of a new generation take the reload. */
            int by_generation = srv->user.set || srv->opts.reload_config != NULL;

            (void)mtls__sd_notify_reloading();
            /*
             * Checked here first. The workers then load the same certificate
             * files, unless they may not (--user) or the configuration file
             * changed (routes live in every worker's table): then a new
             * generation inherits the new SSL_CTX and routes, and the old
             * one drains.
             */
            if (by_generation && !generation_room(srv, &p, "SIGHUP")) {
                /* The old set stays: nothing was loaded. */
                mtls__metrics_reload(srv->metrics, 0);
            } else {
                /* A configuration file with a problem: nothing is reloaded. */
                int config = mtls__server_reload_config(srv);
                SSL_CTX *ctx = config < 0 ? NULL : reload(srv);

                if (config < 0)
                    mtls__metrics_reload(srv->metrics, 0);
                if (config > 0 || (srv->user.set && ctx != NULL)) {
                    new_generation(srv, &p, err);
                    if (p.in_child)
                        goto out;
                } else if (ctx != NULL) {
                    for (unsigned id = 0; id < srv->workers; id++) {
                        if (p.pid[p.current[id]] > 0)
                            kill(p.pid[p.current[id]], SIGHUP);
                    }
                }
            }
            (void)mtls__sd_notify("READY=1\nSTATUS=serving");
        } else if (sig == SIGCHLD) {
            pid_t pid;
            int status;

            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                for (unsigned s = 0; s < srv->n_slots; s++) {
                    if (p.pid[s] != pid)
                        continue;
                    p.pid[s] = 0;
                    /* The kernel closed its connections: give its share of the cap back. */
                    atomic_fetch_sub(&srv->shared->open_conns,
                                     atomic_exchange(&srv->shared->worker[s].conns, 0));
                    /* Stopping, or an old generation that has drained. */
                    if (stopping || p.current[p.id[s]] != s)
                        break;
                    if (worker_died(srv, &p, s, pid, status, &window_start, &deaths, err, &rc)) {
                        stopping = 1;
                        stop_deadline = time(NULL) + 2;
                        kill_all(srv, &p, SIGTERM);
                    }
                    if (p.in_child)
                        goto out;
                    break;
                }
            }
        }
    }
    if (rc == 0)
        mtls__syslogf(srv, "info", "stopped", "HTTPS stop: every worker has drained");
out:
    free(p.pid);
    free(p.id);
    free(p.current);
    if (p.in_child) {
        /* A worker child never returns into the caller's program. */
        if (p.child_rc != 0 && srv->opts.worker_error != NULL)
            srv->opts.worker_error(srv->opts.worker_error_ctx, err->msg);
        _exit(p.child_rc == 0 ? 0 : 1);
    }
    return rc;
}

static void *thread_main(void *arg)
{
    struct mtls__worker *w = arg;

    mtls__worker_run(w);
    return NULL;
}

/* Thread model: one SSL_CTX per worker thread, as at start. */
static void reload_threads(mtls_server *srv, struct mtls__worker *ws, unsigned started)
{
    for (unsigned i = 0; i < started; i++) {
        SSL_CTX *ctx = srv->ssl_ctx;
        mtls_err e;

        if (i > 0) {
            mtls_err_clear(&e);
            if (mtls_tls_server_ctx_new(&srv->opts.tls, NULL, NULL, &ctx, &e) != 0) {
                mtls__syslog(srv, "error", NULL, "reload_failed", e.msg, NULL);
                continue;
            }
        } else {
            SSL_CTX_up_ref(ctx);
        }
        mtls__worker_reload(&ws[i], ctx);
    }
}

static int run_threads(mtls_server *srv, mtls_err *err)
{
    struct mtls__worker *ws = calloc(srv->workers, sizeof(*ws));
    /* The workers' SSL_CTXs, made by mtls_server_new(): ours to free now. */
    SSL_CTX **ctxs = srv->thread_ctxs;
    pthread_t *threads = calloc(srv->workers, sizeof(pthread_t));
    unsigned started = 0;
    int rc = 0, stopping = 0;
    sigset_t set;

    srv->thread_ctxs = NULL;
    if (ws == NULL || ctxs == NULL || threads == NULL) {
        rc = mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
        goto out;
    }
    signal_set(&set);
    for (unsigned i = 0; i < srv->workers; i++) {
        rc = mtls__worker_init(&ws[i], srv, i, ctxs[i],
                               srv->listeners.fds + i * srv->listeners.n_addrs,
                               srv->listeners.n_addrs, 0, err);
        if (rc != 0)
            goto stop;
        if (pthread_create(&threads[i], NULL, thread_main, &ws[i]) != 0) {
            mtls__worker_release(&ws[i]);
            rc = mtls_err_set(err, MTLS_E_IO, "cannot start worker thread %u", i);
            goto stop;
        }
        started = i + 1;
    }
    (void)mtls__sd_notify("READY=1\nSTATUS=serving");
    while (!stopping) {
        struct timespec tick = {1, 0};
        siginfo_t info;
        int sig = sigtimedwait(&set, &info, &tick);

        crl_watch(srv);
        if (sig == SIGTERM || sig == SIGINT) {
            (void)mtls__sd_notify("STOPPING=1\nSTATUS=draining");
            mtls__syslogf(srv, "info", "stop", "%s: draining in-flight requests, then exit",
                          sig == SIGTERM ? "SIGTERM" : "SIGINT");
            stopping = 1;
        } else if (sig == SIGUSR1) {
            if (mtls__server_reopen_logs(srv) == 0)
                mtls__syslogf(srv, "info", "log_reopen", "SIGUSR1: log files reopened");
            for (unsigned i = 0; i < started; i++)
                mtls__worker_notify(&ws[i], WORKER_CMD_REOPEN);
        } else if (sig == SIGHUP) {
            (void)mtls__sd_notify_reloading();
            if (srv->opts.reload_config != NULL)
                mtls__syslogf(srv, "warn", "reload_config_skipped",
                              "SIGHUP: the configuration file is reloaded with --worker-model "
                              "process only; its changes need a restart");
            if (reload(srv) != NULL)
                reload_threads(srv, ws, started);
            (void)mtls__sd_notify("READY=1\nSTATUS=serving");
        }
    }
stop:
    for (unsigned i = 0; i < started; i++)
        mtls__worker_notify(&ws[i], WORKER_CMD_DRAIN);
    for (unsigned i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
        mtls__worker_release(&ws[i]);
    }
    if (rc == 0)
        mtls__syslogf(srv, "info", "stopped", "HTTPS stop: every worker has drained");
out:
    for (unsigned i = 0; ctxs != NULL && i < srv->workers; i++)
        SSL_CTX_free(ctxs[i]);
    free(ctxs);
    free(threads);
    free(ws);
    return rc;
}

int mtls_server_run(mtls_server *srv, mtls_err *err)
{
    sigset_t set, old;
    int rc;

    /* Signals are taken synchronously by the main thread (sigwait), never async. */
    signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    log_start(srv);
    crl_note(srv);
    crl_watch(srv);
    if (srv->opts.model == MTLS_WORKERS_THREAD)
        rc = run_threads(srv, err);
    else
        rc = run_processes(srv, err);
    /* A second SIGTERM that came while draining must not kill us on unblocking. */
    {
        struct timespec zero = {0, 0};

        while (sigtimedwait(&set, NULL, &zero) > 0)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
