/* Internal structures of src/server, shared between its files. */
#ifndef MTLS_SERVER_INTERNAL_H
#define MTLS_SERVER_INTERNAL_H

#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include <openssl/ssl.h>

#include <uv.h>

#include "metrics.h"
#include "mtls/identity.h"
#include "mtls/server.h"
#include "proxy/proxy.h"

/* ---- log files -------------------------------------------------------- */

/** A log file opened for appending; reopened in place (dup2) on SIGUSR1. */
struct mtls__log {
    int fd; /* -1 when there is no such log */
    const char *path;
};

/** Opens path for appending (created 0644). path NULL: fd -1, no log. */
int mtls__log_open(struct mtls__log *log, const char *path, mtls_err *err);

/** Opens the path again and puts the new file under the same fd (logrotate). */
int mtls__log_reopen(const struct mtls__log *log, mtls_err *err);

void mtls__log_close(struct mtls__log *log);

/**
 * Writes len bytes with as few write(2) calls as possible. Returns 0, or the
 * errno of the write that failed (ENOSPC for a write of 0 bytes); *written
 * (may be NULL) gets how many bytes went out.
 */
int mtls__log_write(const struct mtls__log *log, const char *buf, size_t len, size_t *written);

/** How often a failing access log is said in the system log, at most. */
#define MTLS__LOG_LOSS_EVERY_MS 60000

/** One writer's access-log lines lost to failed writes (each worker has one). */
struct mtls__log_loss {
    unsigned long long lines; /* lost since the last write that worked */
    unsigned long long total; /* lost since start */
    uint64_t last_said;       /* CLOCK_MONOTONIC ms of the last warning, 0: none yet */
};

/**
 * Writes a batch of whole access-log lines. A failed write is counted in
 * loss and said in the system log (the first time, then at most every
 * MTLS__LOG_LOSS_EVERY_MS); the first write that works after failures says
 * how many lines were lost.
 */
void mtls__access_log_write(const mtls_server *srv, struct mtls__log_loss *loss, const char *buf,
                            size_t len);

/**
 * Reopens the access log and the system log under their descriptors
 * (SIGUSR1, logrotate). Returns 0, or -1 after saying why in the system log.
 */
int mtls__server_reopen_logs(const mtls_server *srv);

/**
 * One system-log line: level ("info", "warn", "error"), peer ("ip:port" or
 * NULL), event (a short key for JSON), message; kv are extra name/value
 * pairs for JSON lines (NULL-terminated list, values may be NULL).
 */
void mtls__syslog(const mtls_server *srv, const char *level, const char *peer, const char *event,
                  const char *message, const char *const *kv);

/** Like mtls__syslog() with a printf-style message and no extra fields. */
void mtls__syslogf(const mtls_server *srv, const char *level, const char *event, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));

/* ---- least privilege and systemd (privdrop.c, sdnotify.c) --------------- */

/** The user the workers run as (--user); set 0: they stay who started the server. */
struct mtls__user {
    int set;
    char name[64];
    uid_t uid;
    gid_t gid;
};

/** Resolves name (NULL: u->set 0). Refuses when not root, an unknown user, or root itself. */
int mtls__user_lookup(const char *name, struct mtls__user *u, mtls_err *err);

/** In a worker: initgroups, setgid, setuid (checked), PR_SET_NO_NEW_PRIVS, Landlock. */
int mtls__user_become(const struct mtls__user *u, mtls_err *err);

/**
 * Landlock, where the kernel has it: no file may be written, created,
 * removed or executed by path from now on (open descriptors keep working).
 * Returns 0 (also without Landlock) or an errno.
 */
int mtls__landlock_no_writes(void);

/** Sends state to $NOTIFY_SOCKET (sd_notify(3)). 0: sent or no socket; else an errno. */
int mtls__sd_notify(const char *state);

/** "RELOADING=1" with MONOTONIC_USEC, as Type=notify-reload requires. */
int mtls__sd_notify_reloading(void);

/* ---- the server --------------------------------------------------------- */

/** The most addresses one --listen name is bound to (the first ones it resolves to). */
#define MTLS__MAX_ADDRS 4

/** Port 0 on a name: how many fresh ports are tried before "the port is in use". */
#define MTLS__PORT0_TRIES 8

/** The listening sockets of --listen: per worker, one SO_REUSEPORT socket per address. */
struct mtls__listeners {
    int *fds;         /* fds[worker * n_addrs + address]; all open once bound */
    unsigned n_fds;   /* workers * n_addrs */
    unsigned n_addrs; /* addresses (a name may stand for ::1 and 127.0.0.1) */
    int port;         /* the one port of every address (the kernel's pick for port 0) */
    int everywhere;   /* one dual-stack socket per worker for every address */
    char address[MTLS__MAX_ADDRS * 56]; /* "[::1]:8443 and 127.0.0.1:8443", "*:8443" */
};

/**
 * Binds the listening sockets of --listen text (NULL: "8443") for workers
 * workers into l (filled; release with mtls__listeners_release()). Each
 * address is first bound plainly, so that a port held by anyone, even a
 * server of the same user, is MTLS_E_BUSY. Port 0: every address gets the
 * port the kernel picks for the first; when another address has it taken,
 * everything is closed and a fresh port tried, MTLS__PORT0_TRIES times in
 * all. Returns 0, or MTLS_E_BUSY, MTLS_E_INVALID, MTLS_E_IO, MTLS_E_NOMEM
 * with err set and nothing left open.
 */
int mtls__listeners_bind(struct mtls__listeners *l, const char *text, unsigned workers,
                         mtls_err *err);

/** Called with the port the kernel picked for port 0, before the other addresses are bound. */
typedef void mtls__port_picked_fn(void *ctx, int port);

/**
 * mtls__listeners_bind() on addresses already parsed (n_addrs of them, all
 * with the same port; shown names them in messages). picked (may be NULL)
 * is the tests' seam: it may take the picked port on another address first.
 */
int mtls__listeners_bind_addrs(struct mtls__listeners *l, const struct sockaddr_storage *addrs,
                               const socklen_t *len, unsigned n_addrs, int everywhere,
                               unsigned workers, const char *shown, mtls__port_picked_fn *picked,
                               void *picked_ctx, mtls_err *err);

/** Closes every socket of l (each becomes -1); l can be bound again. */
void mtls__listeners_close(struct mtls__listeners *l);

/** Closes and frees what l holds and zeroes it. Safe on a zeroed l. */
void mtls__listeners_release(struct mtls__listeners *l);

/*
 * --user: a reload or a log reopen starts a new generation of workers while
 * the old one drains; this many generations may run at once.
 */
#define MTLS__GENERATIONS 4

/**
 * What the workers share, processes or threads alike: anonymous shared
 * memory made before the first fork. The connection cap is one count for
 * the whole server, so that a worker the kernel gives more connections than
 * the others (SO_REUSEPORT spreads by a hash) keeps accepting while the
 * server as a whole has room.
 */
struct mtls__shared_worker {
    atomic_uint conns;  /* its share of open_conns (the main process gives a dead one's back) */
    atomic_int running; /* set once its loop is ready: a worker that exits before cannot start */
};

struct mtls__shared {
    atomic_uint open_conns; /* open connections, all workers together */
    atomic_int cap_said;    /* 1: "connection cap reached" said, "below" not yet */
    struct mtls__shared_worker worker[];
};

#define MTLS__MAX_POLICIES 32

/** A route of opts.routes, checked at start. */
struct mtls__route {
    const mtls_route_opts *opts;
    int builtin; /* 0: the proxy; else a built-in handler */
    mtls_upstream_addr upstream;
    unsigned families; /* MTLS_IDH_* */
    int policy;        /* index into policies, or -1 */
};

struct mtls_server {
    mtls_server_opts opts; /* a copy; its strings stay borrowed */
    SSL_CTX *ssl_ctx;      /* checked at start; workers share or copy it */
    SSL_CTX **thread_ctxs; /* thread model: one per worker, built at start; run takes them */
    struct mtls__listeners listeners; /* --listen */
    unsigned workers;
    struct mtls__log access_log;
    struct mtls__log system_log;
    struct mtls__user user; /* --user: workers drop root to it */
    unsigned n_slots;       /* shared worker slots: workers, times MTLS__GENERATIONS with --user */
    struct mtls__shared *shared;      /* mmap'd, MAP_SHARED */
    mtls_tls_session_cache *sessions; /* shared by every worker; opts.tls.session_cache */
    size_t shared_size;
    time_t crl_next_update; /* earliest nextUpdate of the loaded CRLs, 0: none */
    char crl_issuer[512];
    int crl_warned; /* 1: "expires within a week" said; 2: "expired" said */
    int has_upstream;
    mtls_upstream_addr upstream; /* --upstream, resolved */
    unsigned identity_families;  /* MTLS_IDH_* */
    /* Authorization policies: --allow (the server's, for every route without
       rules of its own) and each route's; a connection gets one bit each. */
    mtls_allow_policy policies[MTLS__MAX_POLICIES];
    unsigned n_policies;
    int server_policy;          /* index of --allow's, or -1 when it has no rules */
    struct mtls__route *routes; /* opts.routes, checked */
    size_t n_routes;
    struct mtls__metrics *metrics; /* --metrics-listen: the counters (MAP_SHARED), else NULL */
    int metrics_fds[MTLS__METRICS_MAX_FDS];
    unsigned n_metrics_fds;
    char metrics_address[MTLS__METRICS_MAX_FDS * 56];
};

/** Checks --metrics-listen (NULL: none) as the start would: parsed, loopback unless public. */
int mtls__metrics_listen_check(const char *text, int public, mtls_err *err);

/** Binds --metrics-listen's sockets (one per address, no SO_REUSEPORT) into srv. */
int mtls__metrics_bind(mtls_server *srv, mtls_err *err);

/** Checks a --listen value as the start would parse it (nothing is bound). */
int mtls__listen_check(const char *text, mtls_err *err);

/**
 * Parses the proxy, route and authorization options into srv (at start).
 * Returns 0 or MTLS_E_INVALID; what it made is freed by
 * mtls__server_proxy_release() either way.
 */
int mtls__server_proxy_init(mtls_server *srv, mtls_err *err);

void mtls__server_proxy_release(mtls_server *srv);

/**
 * SIGHUP: reads the configuration again (opts.reload_config) and checks it
 * as at start; when all is well its proxy part (upstream, identity headers,
 * rules, routes) takes the old one's place in srv, for workers started from
 * now on. Returns 1 (taken), 0 (no reload_config) or -1 (refused, the old
 * one stays; the system log says why, naming lines and columns).
 */
int mtls__server_reload_config(mtls_server *srv);

/* ---- workers ------------------------------------------------------------ */

/** The loop mtls_worker_loop() returns on this thread (app.c); NULL: none. */
void mtls__worker_loop_set(uv_loop_t *loop);

enum { WORKER_CMD_DRAIN = 1, WORKER_CMD_REOPEN = 2, WORKER_CMD_RELOAD = 4 };

/** One worker: an event loop with its own listener. */
struct mtls__worker {
    mtls_server *srv;
    unsigned id;
    unsigned slot;              /* its counters in srv->shared->worker[] (id, unless --user) */
    SSL_CTX *ssl_ctx;           /* a reference the worker owns; new handshakes use it */
    _Atomic(SSL_CTX *) new_ctx; /* thread model: a reloaded SSL_CTX waiting to be taken */
    const int *listen_fds;      /* borrowed: one per address */
    unsigned n_listen_fds;
    int own_signals; /* process model: the worker handles SIGTERM/SIGINT/SIGUSR1/SIGHUP itself */
    uv_loop_t loop;
    uv_async_t async; /* thread model: the main thread's commands */
    atomic_int commands;
    int loop_ready;
};

/**
 * Prepares w's loop (and its async handle, so another thread can notify it
 * before it runs). Takes a reference to ctx. Returns 0 or MTLS_E_* with err set.
 */
int mtls__worker_init(struct mtls__worker *w, mtls_server *srv, unsigned id, SSL_CTX *ctx,
                      const int *listen_fds, unsigned n_listen_fds, int own_signals, mtls_err *err);

/** How many routes a worker's table has (the counters' route rows). */
size_t mtls__worker_routes_count(const mtls_server *srv);

/** Runs w until it has drained (every connection closed). Returns 0 or MTLS_E_NOMEM. */
int mtls__worker_run(struct mtls__worker *w);

/** Closes w's async handle and loop (after its thread ended). NULL-safe on a zeroed w. */
void mtls__worker_release(struct mtls__worker *w);

/** From another thread: asks w to drain (WORKER_CMD_DRAIN) or reopen logs. */
void mtls__worker_notify(struct mtls__worker *w, int command);

/** From another thread: hands w a new SSL_CTX (consumed) for its next handshakes. */
void mtls__worker_reload(struct mtls__worker *w, SSL_CTX *ctx);

/** "127.0.0.1" or "::1" (v4-mapped addresses shown as IPv4) and the port. */
void mtls__addr_format(const struct sockaddr_storage *ss, char *addr, size_t size, int *port);

#endif
