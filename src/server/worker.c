/*
 * A worker: one libuv loop, one SO_REUSEPORT listener, and the connections
 * it accepted. Each connection is a non-blocking socket watched by one
 * uv_poll_t; OpenSSL reads and writes the socket itself (SSL_set_fd), and
 * after the handshake src/http reads and writes through SSL_read/SSL_write.
 *
 *   accept -> [PROXY] -> HANDSHAKE -> HTTP (read request -> write response)* -> LINGER -> closed
 *
 * PROXY (--proxy-protocol) reads a balancer's PROXY protocol v2 header
 * (proxy_protocol.c) under the handshake's deadline; the client address it
 * names becomes the connection's peer for every log line and request.
 *
 * Timeouts are deadlines on each connection with a libuv timer each, armed
 * for the deadline when it moves earlier; a deadline that moves later (a
 * keep-alive request answered) is only noted, and the timer, when it fires
 * early, re-arms for the rest. So timeouts fire on time (to the
 * millisecond) and a keep-alive request costs no timer operation.
 *
 * The connection cap (--max-connections) is one count for the server in
 * shared memory (struct mtls__shared): a worker accepts while the server
 * as a whole has room, and only at the cap do the workers stop accepting.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "http/http_conn.h"
#include "mtls/app.h"
#include "mtls/certinfo.h"
#include "mtls/http.h"
#include "mtls/pki.h"
#include "mtls/tls.h"
#include "proxy_protocol.h"
#include "server_internal.h"

#define ACCEPT_BATCH 64
#define LINGER_MS 2000
#define RETRY_MS 50 /* a paused listener (cap reached, no file descriptors) retries this often */
/*
 * OpenSSL's record buffers (about 34 kB: read and write) are freed after
 * every record (SSL_MODE_RELEASE_BUFFERS, as nginx), except on a busy
 * connection: one that answers a request within this long of its last
 * answer keeps them until it has had no I/O for this long. Freeing and
 * allocating them around every record cost a keep-alive request about 1,100
 * instructions of malloc and free (docs/PERFORMANCE.md); connections that
 * are idle, or make one request now and then, hold none.
 */
#define RELEASE_BUFFERS_MS 250
#define ACCESS_BUF 32768

enum conn_state { ST_PROXY, ST_HANDSHAKE, ST_HTTP, ST_LINGER };

struct worker;

/*
 * One connection, held while it waits for its next request too: what is
 * only needed for a moment lives elsewhere (strings at their exact size,
 * src/http's per-request copies), and the fields are ordered so that no
 * padding is left between them (docs/PERFORMANCE.md, idle memory).
 */
struct conn {
    uv_poll_t poll;
    uv_timer_t timer; /* fires at timer_due; the state's deadline may be later */
    struct worker *w;
    struct conn *prev, *next;
    int fd;
    int events; /* what poll watches now */
    enum conn_state state;
    int handles;          /* libuv handles still open (poll, timer) */
    uint64_t deadline;    /* loop time (ms) after which the state times out */
    uint64_t timer_due;   /* when the timer fires, 0: not armed */
    uint64_t active_at;   /* loop time of the last I/O, while buffers_held */
    uint64_t answered_at; /* loop time of the last answer (the busy test) */
    int request_deadline; /* deadline is the header timeout of a started request */
    int closing;          /* uv_close called */
    uint64_t answered;    /* requests answered when the deadline was last set */
    SSL *ssl;
    mtls_tls_verify_note *note;       /* during the handshake only */
    struct mtls__proxy_reader *proxy; /* --proxy-protocol: while its header is read */
    char *addr;                       /* "127.0.0.1", then peer in the same allocation */
    const char *peer;                 /* "127.0.0.1:54321" */
    mtls_http_peer http_peer;
    mtls_http_conn http;
    X509 *cert;           /* the verified client certificate (SSL's), or NULL */
    char *subject;        /* its subject, for the access log (exact size: idle memory) */
    const char *serial;   /* its serial, upper-case hex (in subject's allocation) */
    mtls_cert_info *info; /* everything else, made on the first /whoami */
    char *whoami;
    size_t whoami_len;
    char *denied;           /* verify-client optional: the 403's reason */
    struct conn *kick_next; /* in the worker's list of connections to run again */
    int http_ready;
    int kicked;
    int waiting;      /* a handler answers later: the first event while waiting stops the poll */
    int buffers_held; /* busy: keeps its record buffers (RELEASE_BUFFERS_MS) */
    unsigned identity_families; /* the families identity was made for */
    char *identity;             /* the upstream's identity header lines, made on first use */
    size_t identity_len;
    char *who;         /* "CN=bob", for a 403 of the --allow rules (only when they deny) */
    char *accepted_ca; /* the client CAs in words, for refused clients' pages */
    struct conn_identity *ident; /* mtls_request_identity(), made on first use */
};

/* What mtls_request_identity() returns, and the strings it points to. */
struct conn_identity {
    mtls_identity pub;
    char spki[65];
    char **sans;
    size_t n_sans;
};

/* One listening socket of the worker (one per address it listens on). */
struct listener {
    uv_poll_t poll;
    struct worker *w;
    int fd;
};

struct worker {
    struct mtls__worker *pub;
    mtls_server *srv;
    uv_loop_t *loop;
    struct listener listeners[MTLS__MAX_ADDRS];
    unsigned n_listeners;
    int listening; /* the listeners' polls are active */
    int listener_open;
    uv_timer_t retry;       /* resumes a paused listener */
    uv_timer_t drain_timer; /* the drain timeout */
    uv_check_t flush;
    uv_signal_t signals[4];
    int n_signals;
    struct conn *conns;
    unsigned n_conns;
    int draining;
    mtls_http_config http_cfg;
    char access_buf[ACCESS_BUF];
    size_t access_len;
    struct mtls__log_loss access_loss;
    char read_buf[16384];         /* lent to every connection for SSL_read: idle ones hold none */
    char write_buf[16384];        /* lent the same way for the responses made while one runs */
    mtls_http_header *header_buf; /* lent the same way */
    mtls_http_routes routes;
    uv_idle_t kicker; /* runs kicked connections (a handler answered later) */
    struct conn *kicked;
    mtls_proxy **proxies; /* one per upstream route: this worker's upstream connections */
    size_t n_proxies;
    const char *policy_text[MTLS__MAX_POLICIES];
    struct mtls__metrics_slot *metrics;      /* this worker's counters, or NULL: none kept */
    struct mtls__metrics_http *metrics_http; /* worker 0 serves /metrics */
    struct mtls__metrics_view metrics_view;
};

static void conn_io(uv_poll_t *h, int status, int events);
static void conn_timeout(struct conn *c);
static void on_conn_timer(uv_timer_t *h);
static void on_kick(uv_idle_t *h);
static void conn_close(struct conn *c);
static void conn_finish(struct conn *c);
static void worker_maybe_exit(struct worker *w);
static void close_proxies(struct worker *w);

/* ---- access log -------------------------------------------------------- */

static void access_flush(struct worker *w)
{
    if (w->access_len > 0) {
        mtls__access_log_write(w->srv, &w->access_loss, w->access_buf, w->access_len);
        w->access_len = 0;
    }
}

/* Lines are batched and written once per loop iteration (or when full). */
static void access_line(void *ctx, const char *line, size_t len)
{
    struct worker *w = ctx;

    if (w->access_len + len > sizeof(w->access_buf))
        access_flush(w);
    if (len > sizeof(w->access_buf)) {
        mtls__access_log_write(w->srv, &w->access_loss, line, len);
        return;
    }
    memcpy(w->access_buf + w->access_len, line, len);
    w->access_len += len;
}

static void on_flush(uv_check_t *h)
{
    access_flush(h->data);
}

/* ---- addresses --------------------------------------------------------- */

void mtls__addr_format(const struct sockaddr_storage *ss, char *addr, size_t size, int *port)
{
    *port = 0;
    snprintf(addr, size, "?");
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

        uv_inet_ntop(AF_INET, &in->sin_addr, addr, size);
        *port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            uv_inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], addr, size);
        else
            uv_inet_ntop(AF_INET6, &in6->sin6_addr, addr, size);
        *port = ntohs(in6->sin6_port);
    }
}

/* ---- polling ------------------------------------------------------------ */

/* Changes what poll watches only when it differs: uv_poll_start costs epoll_ctl. */
static void conn_want(struct conn *c, int events)
{
    if (c->events == events)
        return;
    if (events == 0) {
        uv_poll_stop(&c->poll);
        c->events = 0;
        return;
    }
    if (uv_poll_start(&c->poll, events, conn_io) != 0) {
        conn_close(c);
        return;
    }
    c->events = events;
}

/* The timer fires at the deadline, or earlier to free the record buffers of a quiet connection. */
static void conn_arm(struct conn *c, uint64_t now)
{
    uint64_t due = c->deadline;

    if (c->buffers_held && c->active_at + RELEASE_BUFFERS_MS < due)
        due = c->active_at + RELEASE_BUFFERS_MS;
    if (due <= now)
        due = now + 1;
    c->timer_due = due;
    uv_timer_start(&c->timer, on_conn_timer, due - now, 0);
}

/* A busy connection with no I/O for RELEASE_BUFFERS_MS gives OpenSSL's record buffers back. */
static void conn_release_buffers(struct conn *c, uint64_t now)
{
    if (!c->buffers_held || now < c->active_at + RELEASE_BUFFERS_MS)
        return;
    if (SSL_free_buffers(c->ssl) == 1) {
        SSL_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
        c->buffers_held = 0;
    } else {
        c->active_at = now; /* a record still pending: try again later */
    }
}

static void on_conn_timer(uv_timer_t *h)
{
    struct conn *c = h->data;
    uint64_t now = uv_now(c->w->loop);

    c->timer_due = 0;
    if (c->closing)
        return;
    conn_release_buffers(c, now);
    if (now < c->deadline) {
        /* The deadline moved later since the timer was armed, or the buffers were due. */
        conn_arm(c, now);
        return;
    }
    conn_timeout(c);
}

/* The state times out after_ms from now; the timer is touched only when that is earlier. */
static void conn_deadline(struct conn *c, uint64_t after_ms)
{
    uint64_t now = uv_now(c->w->loop);

    c->deadline = now + after_ms;
    if (c->timer_due == 0 || c->deadline < c->timer_due)
        conn_arm(c, now);
}

/* I/O on a busy connection moves the release of its record buffers later. */
static void conn_active(struct conn *c)
{
    if (c->buffers_held)
        c->active_at = uv_now(c->w->loop);
}

/*
 * A request was answered: a connection that answers again within
 * RELEASE_BUFFERS_MS of its last answer is busy, and keeps its record buffers
 * until it has been quiet that long.
 */
static void conn_answered(struct conn *c)
{
    uint64_t now = uv_now(c->w->loop);

    if (!c->buffers_held && c->answered_at != 0 && now - c->answered_at < RELEASE_BUFFERS_MS) {
        SSL_clear_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
        c->buffers_held = 1;
        c->active_at = now;
        if (c->timer_due == 0 || now + RELEASE_BUFFERS_MS < c->timer_due)
            conn_arm(c, now);
    }
    c->answered_at = now;
}

static void listener_pause(struct worker *w)
{
    if (w->listening) {
        for (unsigned i = 0; i < w->n_listeners; i++)
            uv_poll_stop(&w->listeners[i].poll);
        w->listening = 0;
    }
}

static void on_accept(uv_poll_t *h, int status, int events);

static void cap_reached(struct worker *w);

static int server_full(const struct worker *w)
{
    return atomic_load_explicit(&w->srv->shared->open_conns, memory_order_relaxed) >=
           w->srv->opts.max_connections;
}

static void listener_resume(struct worker *w)
{
    if (!w->listening && w->listener_open && !w->draining && !server_full(w)) {
        w->listening = 1;
        for (unsigned i = 0; i < w->n_listeners; i++) {
            if (uv_poll_start(&w->listeners[i].poll, UV_READABLE, on_accept) != 0)
                w->listening = 0;
        }
        if (w->listening)
            uv_timer_stop(&w->retry);
        else
            listener_pause(w);
    }
}

static void on_retry(uv_timer_t *h)
{
    struct worker *w = h->data;

    listener_resume(w);
    if (w->listening || w->draining)
        uv_timer_stop(&w->retry);
    else if (server_full(w))
        cap_reached(w);
}

/* Stops accepting until listener_resume() finds room; retried every RETRY_MS. */
static void listener_pause_retry(struct worker *w)
{
    listener_pause(w);
    if (!uv_is_active((uv_handle_t *)&w->retry))
        uv_timer_start(&w->retry, on_retry, RETRY_MS, RETRY_MS);
}

/* At the cap: says so once, when a client really waits (not when the last slot was just taken). */
static void cap_reached(struct worker *w)
{
    struct mtls__shared *sh = w->srv->shared;
    struct pollfd waiting[MTLS__MAX_ADDRS];

    for (unsigned i = 0; i < w->n_listeners; i++) {
        waiting[i].fd = w->listeners[i].fd;
        waiting[i].events = POLLIN;
        waiting[i].revents = 0;
    }
    if (!atomic_load_explicit(&sh->cap_said, memory_order_relaxed) &&
        poll(waiting, w->n_listeners, 0) > 0 && !atomic_exchange(&sh->cap_said, 1))
        mtls__syslogf(w->srv, "warn", "connection_cap",
                      "connection cap reached: %u connections open (--max-connections); new "
                      "connections wait in the kernel's queue until one closes",
                      w->srv->opts.max_connections);
}

/* One open connection more for the server; -1 at the cap. */
static int slot_take(struct worker *w)
{
    struct mtls__shared *sh = w->srv->shared;

    if (atomic_fetch_add(&sh->open_conns, 1) >= w->srv->opts.max_connections) {
        atomic_fetch_sub(&sh->open_conns, 1);
        cap_reached(w);
        return -1;
    }
    atomic_fetch_add_explicit(&sh->worker[w->pub->slot].conns, 1, memory_order_relaxed);
    return 0;
}

static void slot_give(struct worker *w)
{
    struct mtls__shared *sh = w->srv->shared;
    unsigned max = w->srv->opts.max_connections;
    unsigned open = atomic_fetch_sub(&sh->open_conns, 1) - 1;

    atomic_fetch_sub_explicit(&sh->worker[w->pub->slot].conns, 1, memory_order_relaxed);
    /* Said a tenth below the cap, so that a server at its cap does not log every close. */
    if (open + 1 + max / 10 <= max && atomic_load_explicit(&sh->cap_said, memory_order_relaxed) &&
        atomic_exchange(&sh->cap_said, 0))
        mtls__syslogf(w->srv, "info", "connection_cap_left",
                      "%u connections open, below the cap of %u again: accepting new connections",
                      open, max);
}

/* ---- the TLS transport for src/http -------------------------------------- */

static long io_result(struct conn *c, int r)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return MTLS_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return MTLS_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return MTLS_IO_EOF;
    default:
        ERR_clear_error();
        return MTLS_IO_ERROR;
    }
}

static long tls_read(void *ctx, char *buf, size_t len)
{
    struct conn *c = ctx;
    size_t n = 0;
    int r;

    conn_active(c);
    r = SSL_read_ex(c->ssl, buf, len, &n);

    return r == 1 ? (long)n : io_result(c, r);
}

static long tls_write(void *ctx, const char *buf, size_t len)
{
    struct conn *c = ctx;
    size_t n = 0;
    int r;

    conn_active(c);
    r = SSL_write_ex(c->ssl, buf, len, &n);

    return r == 1 ? (long)n : io_result(c, r);
}

static int tls_pending(void *ctx)
{
    struct conn *c = ctx;

    return SSL_has_pending(c->ssl);
}

/*
 * A handler answered later or wants more of the body: run the connection
 * from the loop (an idle handle), never from inside the handler's own call.
 */
static void conn_kick(void *ctx)
{
    struct conn *c = ctx;
    struct worker *w = c->w;

    if (c->kicked || c->closing)
        return;
    c->kicked = 1;
    c->kick_next = w->kicked;
    w->kicked = c;
    if (!uv_is_active((uv_handle_t *)&w->kicker))
        uv_idle_start(&w->kicker, on_kick);
}

/* ---- /whoami --------------------------------------------------------------- */

/* The CA names of the CertificateRequest, "CN=a; CN=b" (malloc'd), or NULL. */
static char *client_ca_words(SSL *ssl)
{
    STACK_OF(X509_NAME) *cas = SSL_get_client_CA_list(ssl);
    char names[2048] = "";
    size_t used = 0;

    for (int i = 0; i < sk_X509_NAME_num(cas) && used + 1 < sizeof(names); i++) {
        char one[MTLS_NAME_MAX];
        int n;

        mtls_name_oneline(sk_X509_NAME_value(cas, i), one, sizeof(one));
        n = snprintf(names + used, sizeof(names) - used, "%s%s", i > 0 ? "; " : "", one);
        used = n > 0 ? used + (size_t)n : used;
    }
    return names[0] != '\0' ? strdup(names) : NULL;
}

/* Built on the first /whoami of a connection and kept for the next ones. */
static const char *whoami_json(void *ctx, size_t *len)
{
    struct conn *c = ctx;
    cJSON *root = NULL, *tls = NULL, *client = NULL;
    char words[64];

    if (c->whoami != NULL)
        goto out;
    if (c->info == NULL) {
        mtls_err err;

        mtls_err_clear(&err);
        if (c->cert == NULL || (c->info = calloc(1, sizeof(*c->info))) == NULL)
            return NULL;
        if (mtls_cert_info_init(c->info, c->cert, &err) != 0) {
            free(c->info);
            c->info = NULL;
            return NULL;
        }
    }
    root = cJSON_CreateObject();
    tls = cJSON_CreateObject();
    client = mtls_cert_info_to_json(c->info);
    if (root == NULL || tls == NULL || client == NULL)
        goto fail;
    cJSON_AddBoolToObject(root, "verified", 1);
    cJSON_AddStringToObject(
        client, "expires", mtls_expiry_words(c->info->not_after, time(NULL), words, sizeof(words)));
    cJSON_AddItemToObject(root, "client", client);
    client = NULL;
    cJSON_AddStringToObject(tls, "version", SSL_get_version(c->ssl));
    cJSON_AddStringToObject(tls, "cipher", SSL_get_cipher_name(c->ssl));
    cJSON_AddBoolToObject(tls, "resumed", SSL_session_reused(c->ssl));
    cJSON_AddItemToObject(root, "tls", tls);
    tls = NULL;
    c->whoami = cJSON_PrintUnformatted(root);
    if (c->whoami == NULL)
        goto fail;
    c->whoami_len = strlen(c->whoami);
    cJSON_Delete(root);
out:
    *len = c->whoami_len;
    return c->whoami;
fail:
    cJSON_Delete(client);
    cJSON_Delete(tls);
    cJSON_Delete(root);
    return NULL;
}

/* ---- mtls_request_identity() ------------------------------------------------ */

static void identity_free(struct conn_identity *id)
{
    if (id == NULL)
        return;
    for (size_t i = 0; i < id->n_sans; i++)
        free(id->sans[i]);
    free(id->sans);
    free(id);
}

/* Built from the /whoami facts on first use, kept for the connection. */
static const mtls_identity *conn_identity(void *ctx)
{
    struct conn *c = ctx;
    struct conn_identity *id;
    const mtls_cert_info *info;
    unsigned char md[32];
    unsigned md_len = 0;
    size_t len;

    if (c->ident != NULL)
        return &c->ident->pub;
    if (whoami_json(c, &len) == NULL || (id = calloc(1, sizeof(*id))) == NULL)
        return NULL;
    info = c->info;
    id->sans = calloc(info->n_sans + 1, sizeof(*id->sans));
    if (id->sans == NULL)
        goto fail;
    for (size_t i = 0; i < info->n_sans; i++) {
        size_t n = strlen(info->sans[i].type) + strlen(info->sans[i].value) + 2;

        id->sans[i] = malloc(n);
        if (id->sans[i] == NULL)
            goto fail;
        snprintf(id->sans[i], n, "%s:%s", info->sans[i].type, info->sans[i].value);
        id->n_sans++;
    }
    if (X509_pubkey_digest(c->cert, EVP_sha256(), md, &md_len) == 1)
        for (unsigned i = 0; i < md_len && i < 32; i++)
            snprintf(id->spki + 2 * i, 3, "%02x", md[i]);
    id->pub.subject = info->subject;
    id->pub.issuer = info->issuer;
    id->pub.serial = info->serial_hex;
    id->pub.sans = (const char *const *)id->sans;
    id->pub.n_sans = id->n_sans;
    id->pub.sha256 = info->sha256;
    id->pub.spki_sha256 = id->spki;
    id->pub.not_before = info->not_before_iso;
    id->pub.not_after = info->not_after_iso;
    id->pub.tls_version = SSL_get_version(c->ssl);
    id->pub.cipher = SSL_get_cipher_name(c->ssl);
    id->pub.resumed = SSL_session_reused(c->ssl);
    id->pub.json = c->whoami;
    c->ident = id;
    return &id->pub;
fail:
    identity_free(id);
    return NULL;
}

/* ---- connections ---------------------------------------------------------- */

/* "a\0b\0" in one allocation of its size (the caller frees it), or NULL. */
static char *join2(const char *a, const char *b)
{
    size_t na = strlen(a) + 1, nb = strlen(b) + 1;
    char *p = malloc(na + nb);

    if (p != NULL) {
        memcpy(p, a, na);
        memcpy(p + na, b, nb);
    }
    return p;
}

static void conn_free(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct worker *w = c->w;

    if (--c->handles > 0)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    w->n_conns--;
    slot_give(w);
    if (c->kicked) {
        struct conn **pp = &w->kicked;

        while (*pp != c)
            pp = &(*pp)->kick_next;
        *pp = c->kick_next;
    }
    SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    mtls_http_conn_release(&c->http);
    mtls_cert_info_release(c->info);
    free(c->info);
    free(c->note);
    free(c->proxy);
    free(c->addr);
    free(c->subject);
    free(c->denied);
    free(c->identity);
    free(c->who);
    free(c->accepted_ca);
    cJSON_free(c->whoami);
    identity_free(c->ident);
    free(c);
    listener_resume(w);
    worker_maybe_exit(w);
}

/* Closes at once, without a TLS goodbye (broken transport, rejected handshake). */
static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->poll, conn_free);
    uv_close((uv_handle_t *)&c->timer, conn_free);
}

/*
 * Closes politely: close_notify, then FIN, then read and drop whatever the
 * client still sends until it closes too (or LINGER_MS pass), so that our
 * last response or alert is not destroyed by a reset (nginx's lingering
 * close).
 */
static void conn_finish(struct conn *c)
{
    if (c->closing)
        return;
    if (c->ssl != NULL && c->state == ST_HTTP) {
        (void)SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
    if (shutdown(c->fd, SHUT_WR) != 0) {
        conn_close(c);
        return;
    }
    c->state = ST_LINGER;
    conn_deadline(c, LINGER_MS);
    conn_want(c, UV_READABLE);
}

static void conn_linger(struct conn *c)
{
    char scratch[4096];

    for (;;) {
        ssize_t n = read(c->fd, scratch, sizeof(scratch));

        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_close(c);
        return;
    }
}

/* alert: the one this server sent, chosen by verify code (mtls_tls_handshake_reason). */
static void log_rejected(struct conn *c, const char *reason, const char *alert, int ssl_error)
{
    static const mtls_tls_verify_note none;
    const mtls_tls_verify_note *n = c->note != NULL ? c->note : &none;
    char message[1200], depth[16];
    /* Which certificate of the client's chain failed: depth 0 is the client's own. */
    const char *kv[] = {"subject", n->error ? n->subject : NULL,
                        "issuer",  n->error ? n->issuer : NULL,
                        "serial",  n->error ? n->serial : NULL,
                        "depth",   n->error ? depth : NULL,
                        "alert",   alert,
                        NULL};
    /* Clients that vanish are routine; certificate problems are what operators look for. */
    const char *level = ssl_error == SSL_ERROR_SSL ? "warn" : "info";

    snprintf(depth, sizeof(depth), "%d", n->depth);
    if (alert != NULL)
        snprintf(message, sizeof(message), "handshake rejected: %s (alert %s)", reason, alert);
    else
        snprintf(message, sizeof(message), "handshake rejected: %s", reason);
    mtls__syslog(c->w->srv, level, c->peer, "handshake_rejected", message, kv);
}

static void conn_http(struct conn *c);

/* The handshake's ALPN chose HTTP/2. */
static int alpn_is_h2(const SSL *ssl)
{
    const unsigned char *proto = NULL;
    unsigned int len = 0;

    SSL_get0_alpn_selected(ssl, &proto, &len);
    return len == 2 && memcmp(proto, "h2", 2) == 0;
}

static void handshake_done(struct conn *c)
{
    struct worker *w = c->w;
    mtls_http_io io = {tls_read, tls_write, tls_pending, c, conn_kick};
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    char reason[768];
    const char *denied = mtls_tls_denied_reason(c->ssl, c->note, reason, sizeof(reason));
    char subject[MTLS_NAME_MAX], serial[84];

    c->http_peer.addr = c->addr;
    if (w->metrics != NULL)
        mtls__metrics_handshake(w->metrics, denied ? MTLS__HS_UNVERIFIED : MTLS__HS_OK,
                                SSL_session_reused(c->ssl),
                                denied ? mtls_tls_refused_code(c->ssl, c->note) : 0);
    if (denied != NULL) {
        const char *kv[] = {"subject", c->note->error ? c->note->subject : NULL, "issuer",
                            c->note->error ? c->note->issuer : NULL, NULL};
        char message[1024];

        snprintf(message, sizeof(message),
                 "client not verified (verify-client optional, requests get 403): %s", denied);
        mtls__syslog(w->srv, "info", c->peer, "client_not_verified", message, kv);
        c->denied = strdup(denied);
        if (c->denied == NULL) {
            conn_close(c);
            return;
        }
        c->http_peer.denied = c->denied;
    } else if (cert != NULL) {
        /*
         * The identity every request needs (subject, serial) costs about
         * 1 us; the full certificate facts (fingerprint, SANs, key) about
         * 11 us, so they wait for the first /whoami.
         */
        c->cert = cert;
        mtls_name_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
        mtls_serial_hex(X509_get0_serialNumber(cert), serial, sizeof(serial));
        /* Both for as long as the connection lasts, in one allocation of their size. */
        c->subject = join2(subject, serial);
        if (c->subject == NULL) {
            conn_close(c);
            return;
        }
        c->serial = c->subject + strlen(c->subject) + 1;
        c->http_peer.user = c->subject;
        c->http_peer.serial = c->serial;
    }
    /* Decided once per connection, a bit per policy; src/http applies it to each route. */
    for (unsigned i = 0; i < w->srv->n_policies; i++)
        if (!mtls_allow_policy_match(&w->srv->policies[i], c->http_peer.denied ? NULL : cert))
            c->http_peer.policy_denied |= (uint32_t)1 << i;
    if (c->http_peer.policy_denied != 0) {
        char who[MTLS_NAME_MAX];

        c->who = strdup(mtls_identity_who(c->http_peer.denied ? NULL : cert, who, sizeof(who)));
        if (c->who == NULL) {
            conn_close(c);
            return;
        }
        c->http_peer.who = c->who;
    }
    /* Refused clients get a page that names the CAs they need a certificate from. */
    if (c->http_peer.denied != NULL || c->http_peer.policy_denied != 0) {
        c->accepted_ca = client_ca_words(c->ssl);
        c->http_peer.accepted_ca = c->accepted_ca;
    }
    /* The verify note has served its purpose. */
    (void)mtls_tls_note_attach(c->ssl, NULL);
    free(c->note);
    c->note = NULL;
    c->http_peer.whoami = whoami_json;
    c->http_peer.whoami_ctx = c;
    c->http_peer.conn_ctx = c;
    c->http_peer.identity = conn_identity;
    if (mtls_http_conn_init(&c->http, &w->http_cfg, &c->http_peer, &io) != 0) {
        conn_close(c);
        return;
    }
    if (alpn_is_h2(c->ssl) && mtls_http_conn_use_h2(&c->http) != 0) {
        conn_close(c);
        return;
    }
    c->http_ready = 1;
    c->state = ST_HTTP;
    c->request_deadline = 0;
    conn_deadline(c, w->srv->opts.idle_timeout_ms);
    if (w->draining)
        c->http.closing = 1; /* draining: its first request is answered, with Connection: close */
    /* The first request may already sit in OpenSSL's read-ahead buffer. */
    conn_http(c);
}

/* OpenSSL recognises an HTTP request where a ClientHello should be. */
static int is_plain_http(unsigned long err)
{
    return ERR_GET_LIB(err) == ERR_LIB_SSL && (ERR_GET_REASON(err) == SSL_R_HTTP_REQUEST ||
                                               ERR_GET_REASON(err) == SSL_R_HTTPS_PROXY_REQUEST);
}

/*
 * A browser or curl pointed at http:// gets a page that says what is wrong
 * instead of an empty reply. One non-blocking send, best effort: the
 * connection is closed after it either way.
 */
static void answer_plain_http(struct conn *c)
{
    size_t len;
    const char *answer = mtls_http_plain_http_answer(&len);

    (void)send(c->fd, answer, len, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void conn_handshake(struct conn *c)
{
    char reason[1024];
    const char *alert = NULL;
    int r, e, sys_errno, plain_http;

    ERR_clear_error();
    errno = 0;
    r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        handshake_done(c);
        return;
    }
    sys_errno = errno;
    e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        conn_want(c, UV_READABLE);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        conn_want(c, UV_WRITABLE);
        return;
    }
    plain_http = e == SSL_ERROR_SSL && is_plain_http(ERR_peek_last_error());
    mtls_tls_handshake_reason(c->ssl, c->note, e, sys_errno, &alert, reason, sizeof(reason));
    if (c->w->metrics != NULL)
        mtls__metrics_handshake(c->w->metrics, alert ? MTLS__HS_REJECTED : MTLS__HS_FAILED, 0,
                                alert ? mtls_tls_refused_code(c->ssl, c->note) : 0);
    log_rejected(c, reason, alert, e);
    if (plain_http)
        answer_plain_http(c);
    /* OpenSSL has sent its alert; let it reach the client before a reset could. */
    if (e == SSL_ERROR_SSL)
        conn_finish(c);
    else
        conn_close(c);
}

static void conn_http(struct conn *c)
{
    struct worker *w = c->w;
    int r = mtls_http_conn_run(&c->http);

    if (c->closing)
        return;
    c->waiting = 0;
    switch (r) {
    case MTLS_HTTP_WAIT:
        /*
         * A handler answers later and keeps its own time (the proxy's
         * timeouts). The poll stays as it is: the client rarely sends
         * anything while it waits, and stopping it now and starting it
         * again with the answer would cost two or three epoll_ctl calls per
         * proxied request. conn_io() stops it at the first event instead.
         */
        uv_timer_stop(&c->timer);
        c->timer_due = 0;
        c->deadline = UINT64_MAX;
        c->request_deadline = 0;
        c->waiting = 1;
        return;
    case MTLS_HTTP_WANT_READ:
    case MTLS_HTTP_WANT_WRITE:
        if (r == MTLS_HTTP_WANT_WRITE ||
            (c->http.in_request && !mtls_http_conn_in_head(&c->http))) {
            /* A client that does not read its responses, or sends a body, gets the idle timeout. */
            conn_deadline(c, w->srv->opts.idle_timeout_ms);
            c->request_deadline = 0;
        } else if (mtls_http_conn_in_head(&c->http)) {
            /* Slowloris: a started request must be complete in header_timeout. */
            if (!c->request_deadline) {
                conn_deadline(c, w->srv->opts.header_timeout_ms);
                c->request_deadline = 1;
            }
        } else if (c->request_deadline || c->http.requests != c->answered) {
            /* Between requests: the keep-alive idle timeout, from the last answer. */
            if (c->http.requests != c->answered)
                conn_answered(c);
            conn_deadline(c, w->srv->opts.idle_timeout_ms);
            c->request_deadline = 0;
            c->answered = c->http.requests;
        }
        /* Draining: a connection that has not had its one request yet may still send it. */
        if (w->draining && !mtls_http_conn_busy(&c->http) && c->http.requests > 0) {
            conn_finish(c);
            return;
        }
        conn_want(c, r == MTLS_HTTP_WANT_READ ? UV_READABLE : UV_WRITABLE);
        return;
    case MTLS_HTTP_DONE:
        conn_finish(c);
        return;
    default:
        conn_close(c);
        return;
    }
}

/*
 * The peer as logs and requests show it: c->addr ("127.0.0.1") and c->peer
 * ("127.0.0.1:54321"), in one allocation. Returns 0, or -1 when out of
 * memory (c keeps what it had).
 */
static int conn_set_peer(struct conn *c, const struct sockaddr_storage *ss)
{
    char addr[64], peer[80], *both;
    int port;

    mtls__addr_format(ss, addr, sizeof(addr), &port);
    snprintf(peer, sizeof(peer), strchr(addr, ':') ? "[%s]:%d" : "%s:%d", addr, port);
    both = join2(addr, peer);
    if (both == NULL)
        return -1;
    free(c->addr);
    c->addr = both;
    c->peer = both + strlen(both) + 1;
    return 0;
}

/*
 * --proxy-protocol: reads the balancer's header, a piece at a time if it
 * comes so, then hands the socket to the TLS handshake. A connection
 * without a valid header is refused (closed), named by the address that
 * connected.
 */
static void conn_proxy_header(struct conn *c)
{
    struct mtls__proxy_header hdr;
    char why[256], message[400];
    int r = mtls__proxy_read(c->proxy, c->fd, &hdr, why, sizeof(why));

    if (r == MTLS__PROXY_AGAIN) {
        conn_want(c, UV_READABLE);
        return;
    }
    if (r != MTLS__PROXY_DONE) {
        /* Like a handshake: a peer that leaves is routine; a wrong header is what to look at. */
        snprintf(message, sizeof(message), "connection refused (--proxy-protocol): %s", why);
        mtls__syslog(c->w->srv, r == MTLS__PROXY_INVALID ? "warn" : "info", c->peer,
                     "proxy_header_rejected", message, NULL);
        conn_close(c);
        return;
    }
    free(c->proxy);
    c->proxy = NULL;
    if (!hdr.local && conn_set_peer(c, &hdr.source) != 0) {
        conn_close(c);
        return;
    }
    c->state = ST_HANDSHAKE;
    conn_handshake(c);
}

static void conn_io(uv_poll_t *h, int status, int events)
{
    struct conn *c = h->data;

    (void)events;
    if (c->closing)
        return;
    if (status < 0) {
        /*
         * libuv stopped the poll (POLLERR: usually a reset). What the
         * client sent before it, an alert say, can still be read, and the
         * read that follows reports the reset: let the state machine see
         * both, so that the handshake's end is logged with its reason.
         */
        c->events = 0;
        if (c->state == ST_LINGER) {
            conn_close(c);
            return;
        }
    }
    if (c->waiting) {
        /* Nothing to do until the handler answers (on_kick runs it then). */
        conn_want(c, 0);
        return;
    }
    switch (c->state) {
    case ST_PROXY:
        conn_proxy_header(c);
        break;
    case ST_HANDSHAKE:
        conn_handshake(c);
        break;
    case ST_HTTP:
        conn_http(c);
        break;
    case ST_LINGER:
        conn_linger(c);
        break;
    }
}

static void conn_new(struct worker *w, int fd, const struct sockaddr_storage *ss)
{
    struct conn *c = calloc(1, sizeof(*c));
    int one = 1;

    if (c == NULL) {
        close(fd);
        slot_give(w);
        return;
    }
    c->w = w;
    c->fd = fd;
    c->state = w->srv->opts.proxy_protocol ? ST_PROXY : ST_HANDSHAKE;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->ssl = SSL_new(w->pub->ssl_ctx);
    if (conn_set_peer(c, ss) != 0 || c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1 ||
        (c->note = calloc(1, sizeof(*c->note))) == NULL ||
        mtls_tls_note_attach(c->ssl, c->note) != 0 ||
        (c->state == ST_PROXY && (c->proxy = calloc(1, sizeof(*c->proxy))) == NULL) ||
        uv_poll_init_socket(w->loop, &c->poll, fd) != 0) {
        ERR_clear_error();
        SSL_free(c->ssl);
        close(fd);
        free(c->note);
        free(c->proxy);
        free(c->addr);
        free(c);
        slot_give(w);
        return;
    }
    uv_timer_init(w->loop, &c->timer); /* cannot fail */
    c->handles = 2;
    SSL_set_accept_state(c->ssl);
    c->poll.data = c;
    c->timer.data = c;
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    /* With --proxy-protocol the header and the handshake share this deadline. */
    conn_deadline(c, w->srv->opts.handshake_timeout_ms);
    /* The ClientHello (or the PROXY header) often arrives with the connection: try at once. */
    if (c->state == ST_PROXY)
        conn_proxy_header(c);
    else
        conn_handshake(c);
}

static void on_accept(uv_poll_t *h, int status, int events)
{
    struct listener *l = h->data;
    struct worker *w = l->w;

    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd;

        if (slot_take(w) != 0) {
            /* The server is full: the kernel's backlog holds the rest until one closes. */
            listener_pause_retry(w);
            return;
        }
        fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;

            slot_give(w);
            errno = e;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                mtls__syslogf(w->srv, "error", "accept_failed",
                              "cannot accept connections: out of file descriptors (%u open)",
                              w->n_conns);
                listener_pause_retry(w);
            }
            return;
        }
        conn_new(w, fd, &ss);
    }
}

static void on_kick(uv_idle_t *h)
{
    struct worker *w = h->data;

    uv_idle_stop(&w->kicker);
    while (w->kicked != NULL) {
        struct conn *c = w->kicked;

        w->kicked = c->kick_next;
        c->kicked = 0;
        if (!c->closing && c->state == ST_HTTP)
            conn_http(c);
    }
}

/* ---- timeouts, drain, signals ---------------------------------------------- */

static void conn_timeout(struct conn *c)
{
    struct worker *w = c->w;

    switch (c->state) {
    case ST_PROXY:
        mtls__syslog(w->srv, "info", c->peer, "proxy_header_timeout",
                     "connection refused: no whole PROXY protocol header in time "
                     "(--proxy-protocol; the handshake timeout)",
                     NULL);
        conn_close(c);
        break;
    case ST_HANDSHAKE:
        mtls__syslog(w->srv, "info", c->peer, "handshake_timeout",
                     "handshake rejected: the client did not complete the handshake in time", NULL);
        if (w->metrics != NULL)
            mtls__metrics_handshake(w->metrics, MTLS__HS_FAILED, 0, 0);
        conn_close(c);
        break;
    case ST_HTTP:
        if (mtls_http_conn_busy(&c->http)) {
            mtls__syslog(w->srv, "info", c->peer, "request_timeout",
                         mtls_http_conn_in_head(&c->http)
                             ? "request headers not received in time; answered 408"
                             : "request stalled (the client stopped sending or reading); closed",
                         NULL);
            mtls_http_conn_timeout(&c->http);
            (void)mtls_http_conn_run(&c->http); /* one try at the 408 */
        }
        conn_finish(c);
        break;
    case ST_LINGER:
        conn_close(c);
        break;
    }
}

/* The drain timeout: whatever is still open (but lingering) is closed. */
static void on_drain_timeout(uv_timer_t *h)
{
    struct worker *w = h->data;
    struct conn *c, *next;

    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        if (!c->closing && c->state != ST_LINGER)
            conn_close(c);
    }
    worker_maybe_exit(w);
}

static void worker_drain(struct worker *w)
{
    struct conn *c, *next;

    if (w->draining)
        return;
    w->draining = 1;
    uv_timer_start(&w->drain_timer, on_drain_timeout, w->srv->opts.drain_timeout_ms, 0);
    uv_timer_stop(&w->retry);
    mtls__metrics_http_stop(w->metrics_http);
    w->metrics_http = NULL;
    listener_pause(w);
    if (w->listener_open) {
        for (unsigned i = 0; i < w->n_listeners; i++)
            uv_close((uv_handle_t *)&w->listeners[i].poll, NULL);
        w->listener_open = 0;
    }
    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        if (c->closing)
            continue;
        /*
         * A handshake in progress may finish (its request is then answered
         * with Connection: close), and so may a connection that has not
         * sent its first request yet; all within the drain timeout.
         */
        if (c->state == ST_HTTP && c->http.requests == 0 && !c->http.in_request)
            c->http.closing = 1;
        else if (c->state == ST_HTTP && !mtls_http_conn_busy(&c->http))
            conn_finish(c);
        else if (c->state == ST_HTTP)
            mtls_http_conn_drain(&c->http);
    }
    worker_maybe_exit(w);
}

/* Closes every handle but the async one, which the owner of the worker closes. */
static void worker_close_handles(uv_handle_t *h, void *arg)
{
    struct mtls__worker *pub = arg;

    if (h != (uv_handle_t *)&pub->async && !uv_is_closing(h))
        uv_close(h, NULL);
}

static void worker_maybe_exit(struct worker *w)
{
    if (!w->draining || w->n_conns > 0)
        return;
    access_flush(w);
    close_proxies(w);
    uv_walk(w->loop, worker_close_handles, w->pub);
    uv_stop(w->loop);
}

static void worker_reopen(struct worker *w)
{
    access_flush(w);
    (void)mtls__server_reopen_logs(w->srv); /* a failure is in the system log */
}

/*
 * Process model: the main process has checked the new files; this worker
 * loads them again into its own SSL_CTX (another address space). If that
 * fails now, the worker keeps the set it has and says so.
 */
static void worker_reload_files(struct worker *w)
{
    SSL_CTX *ctx = NULL;
    mtls_err err;

    mtls_err_clear(&err);
    if (mtls_tls_server_ctx_new(&w->srv->opts.tls, NULL, NULL, &ctx, &err) != 0) {
        char msg[700];

        snprintf(msg, sizeof(msg), "worker %u keeps its old certificates: %s", w->pub->id, err.msg);
        mtls__syslog(w->srv, "error", NULL, "reload_failed", msg, NULL);
        return;
    }
    SSL_CTX_free(w->pub->ssl_ctx);
    w->pub->ssl_ctx = ctx;
    /* The main process said "reloaded" when it had checked the files; this
     * is when this worker's new handshakes use them. */
    mtls__syslogf(w->srv, "info", "worker_reload", "worker %u now uses the new certificates",
                  w->pub->id);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct worker *w = h->data;

    if (signum == SIGUSR1)
        worker_reopen(w);
    else if (signum == SIGHUP)
        worker_reload_files(w);
    else
        worker_drain(w);
}

static void on_async(uv_async_t *h)
{
    struct worker *w = h->data;
    int cmds;

    if (w == NULL)
        return;
    cmds = atomic_exchange(&w->pub->commands, 0);

    if (cmds & WORKER_CMD_REOPEN)
        access_flush(w); /* the main thread reopened the files; write the rest there */
    if (cmds & WORKER_CMD_RELOAD) {
        SSL_CTX *ctx = atomic_exchange(&w->pub->new_ctx, NULL);

        /* Connections hold their own reference to the SSL_CTX they began with. */
        if (ctx != NULL) {
            SSL_CTX_free(w->pub->ssl_ctx);
            w->pub->ssl_ctx = ctx;
        }
    }
    if (cmds & WORKER_CMD_DRAIN)
        worker_drain(w);
}

/* ---- the worker --------------------------------------------------------------- */

int mtls__worker_init(struct mtls__worker *pub, mtls_server *srv, unsigned id, SSL_CTX *ctx,
                      const int *listen_fds, unsigned n_listen_fds, int own_signals, mtls_err *err)
{
    int r;

    memset(pub, 0, sizeof(*pub));
    pub->srv = srv;
    pub->id = id;
    pub->slot = id;
    if (SSL_CTX_up_ref(ctx) != 1)
        return mtls_err_set(err, MTLS_E_CRYPTO, "cannot start worker %u", id);
    pub->ssl_ctx = ctx;
    atomic_init(&pub->new_ctx, NULL);
    pub->listen_fds = listen_fds;
    pub->n_listen_fds = n_listen_fds;
    pub->own_signals = own_signals;
    atomic_init(&pub->commands, 0);
    r = uv_loop_init(&pub->loop);
    if (r != 0) {
        SSL_CTX_free(pub->ssl_ctx);
        pub->ssl_ctx = NULL;
        return mtls_err_set(err, MTLS_E_IO, "cannot start worker %u: %s", id, uv_strerror(r));
    }
    r = uv_async_init(&pub->loop, &pub->async, on_async);
    if (r != 0) {
        uv_loop_close(&pub->loop);
        SSL_CTX_free(pub->ssl_ctx);
        pub->ssl_ctx = NULL;
        return mtls_err_set(err, MTLS_E_IO, "cannot start worker %u: %s", id, uv_strerror(r));
    }
    pub->loop_ready = 1;
    return 0;
}

void mtls__worker_reload(struct mtls__worker *pub, SSL_CTX *ctx)
{
    SSL_CTX_free(atomic_exchange(&pub->new_ctx, ctx)); /* one not yet taken is replaced */
    mtls__worker_notify(pub, WORKER_CMD_RELOAD);
}

void mtls__worker_notify(struct mtls__worker *pub, int command)
{
    atomic_fetch_or(&pub->commands, command);
    uv_async_send(&pub->async);
}

/* A system-log line from src/http (a denied request). */
static void http_event(void *ctx, const mtls_http_peer *peer, const char *event,
                       const char *message)
{
    struct worker *w = ctx;
    const struct conn *c = peer ? peer->conn_ctx : NULL;

    if (w->metrics != NULL && strcmp(event, "request_denied") == 0)
        mtls__metrics_denial(w->metrics);
    mtls__syslog(w->srv, "warn", c ? c->peer : NULL, event, message, NULL);
}

static void request_done(void *ctx, long route, int status, uint64_t ns)
{
    struct worker *w = ctx;

    mtls__metrics_request(w->metrics, w->srv->metrics, route, status, ns);
}

static void upstream_failed(void *ctx, int status, int cause)
{
    struct worker *w = ctx;

    if (w->metrics != NULL)
        mtls__metrics_upstream_error(w->metrics, status, cause);
}

/* The upstream's identity header lines for a connection, made once (per family set). */
static const char *proxy_identity(const mtls_http_peer *peer, unsigned families, size_t *len)
{
    struct conn *c = peer->conn_ctx;

    *len = 0;
    if (c == NULL)
        return NULL;
    if (c->identity != NULL && c->identity_families != families) {
        free(c->identity);
        c->identity = NULL;
    }
    if (c->identity == NULL) {
        X509 *cert = c->cert ? c->cert : SSL_get0_peer_certificate(c->ssl);

        if (mtls__identity_headers(cert, SSL_get_peer_cert_chain(c->ssl), c->denied, families,
                                   &c->identity, &c->identity_len) != 0)
            return NULL;
        c->identity_families = families;
    }
    *len = c->identity_len;
    return c->identity;
}

static void proxy_log(void *ctx, const mtls_http_peer *peer, const char *level, const char *event,
                      const char *message, const char *const *kv)
{
    struct worker *w = ctx;
    const struct conn *c = peer ? peer->conn_ctx : NULL;

    mtls__syslog(w->srv, level, c ? c->peer : NULL, event, message, kv);
}

/* A proxy on this worker's loop for upstream, added to the route table at path. */
static int add_proxy(struct worker *w, const mtls_upstream_addr *upstream, unsigned families,
                     const char *path, unsigned flags, int policy, mtls_err *err)
{
    mtls_server *srv = w->srv;
    mtls_proxy_opts po = {
        .upstream = upstream,
        .families = families,
        .connect_timeout_ms = srv->opts.upstream_connect_timeout_ms,
        .response_timeout_ms = srv->opts.upstream_timeout_ms,
        .identity = proxy_identity,
        .log = proxy_log,
        .log_ctx = w,
        .failed = upstream_failed,
    };
    mtls_proxy **grown = realloc(w->proxies, (w->n_proxies + 1) * sizeof(*w->proxies));
    int rc;

    if (grown == NULL)
        return MTLS_E_NOMEM;
    w->proxies = grown;
    rc = mtls__proxy_new(w->loop, &po, &w->proxies[w->n_proxies]);
    if (rc != 0)
        return rc;
    w->n_proxies++;
    rc = mtls_http_routes_add(&w->routes, path, flags | MTLS_ROUTE_BODY | MTLS_ROUTE_UNVERIFIED, 0,
                              mtls__proxy_handle, w->proxies[w->n_proxies - 1], err);
    if (rc == 0)
        w->routes.v[w->routes.n - 1].policy = policy;
    return rc;
}

static void close_proxies(struct worker *w)
{
    for (size_t i = 0; i < w->n_proxies; i++)
        mtls__proxy_close(w->proxies[i]);
    free(w->proxies);
    w->proxies = NULL;
    w->n_proxies = 0;
}

/*
 * GET / is who you are (the /whoami handler: a page for browsers), unless a
 * route already takes "/" (a prefix to an upstream, a config route).
 */
static int add_root(struct worker *w, int policy, mtls_err *err)
{
    uint64_t allow = 0;
    int rc;

    if (mtls_http_routes_match(&w->routes, HTTP_GET, "/", 1, &allow) != NULL || allow != 0)
        return 0;
    rc = mtls_http_routes_add(&w->routes, "/", 0, MTLS_METHOD(HTTP_GET) | MTLS_METHOD(HTTP_HEAD),
                              mtls_http_builtin_handler("whoami"), NULL, err);
    if (rc == 0)
        w->routes.v[w->routes.n - 1].policy = policy;
    return rc;
}

size_t mtls__worker_routes_count(const mtls_server *srv)
{
    /* Keep in step with worker_routes(): the file's, the 2 built-in, the catch-all
     * proxy, and "/" (add_root(), unless a route already takes it: at most). */
    return srv->n_routes + 2 + (srv->has_upstream ? 1 : 0) + 1;
}

/*
 * The worker's route table: the configuration file's routes, the built-in
 * handlers, then (--upstream) the proxy for every other path and method.
 * Each route carries its policy: its own rules, or --allow's.
 */
static int worker_routes(struct worker *w)
{
    mtls_server *srv = w->srv;
    mtls_err err;
    int rc = 0;

    mtls_err_clear(&err);
    for (size_t i = 0; i < srv->n_routes && rc == 0; i++) {
        const struct mtls__route *r = &srv->routes[i];
        unsigned flags = r->opts->exact ? 0 : MTLS_ROUTE_PREFIX;

        if (r->opts->fn != NULL) {
            rc = mtls_http_routes_add(&w->routes, r->opts->path, flags, r->opts->methods,
                                      r->opts->fn, r->opts->fn_ctx, &err);
            if (rc == 0)
                w->routes.v[w->routes.n - 1].policy = r->policy;
        } else if (r->builtin) {
            rc = mtls_http_routes_add(&w->routes, r->opts->path, flags,
                                      MTLS_METHOD(HTTP_GET) | MTLS_METHOD(HTTP_HEAD),
                                      mtls_http_builtin_handler(r->opts->handler), NULL, &err);
            if (rc == 0)
                w->routes.v[w->routes.n - 1].policy = r->policy;
        } else {
            rc = add_proxy(w, &r->upstream, r->families, r->opts->path, flags, r->policy, &err);
        }
    }
    if (rc == 0) {
        size_t first = w->routes.n;

        rc = mtls_http_routes_add_builtin(&w->routes, &err);
        for (size_t i = first; rc == 0 && i < w->routes.n; i++)
            w->routes.v[i].policy = srv->server_policy;
    }
    if (rc == 0 && srv->has_upstream)
        rc = add_proxy(w, &srv->upstream, srv->identity_families, "/", MTLS_ROUTE_PREFIX,
                       srv->server_policy, &err);
    if (rc == 0 && !srv->has_upstream)
        rc = add_root(w, srv->server_policy, &err);
    for (unsigned i = 0; i < srv->n_policies; i++)
        w->policy_text[i] = srv->policies[i].text;
    w->routes.policy_text = w->policy_text;
    w->routes.n_policies = srv->n_policies;
    w->routes.dry_run = srv->opts.allow_dry_run;
    return rc;
}

int mtls__worker_run(struct mtls__worker *pub)
{
    mtls_server *srv = pub->srv;
    struct worker *w = calloc(1, sizeof(*w));
    int rc = 0;

    if (w == NULL)
        return MTLS_E_NOMEM;
    w->pub = pub;
    w->srv = srv;
    w->loop = &pub->loop;
    pub->async.data = w;
    w->http_cfg = srv->opts.http;
    w->http_cfg.log_format = srv->opts.log_format;
    w->http_cfg.access_log = srv->access_log.fd >= 0 ? access_line : NULL;
    w->http_cfg.access_log_ctx = w;
    w->http_cfg.read_buf = w->read_buf;
    w->http_cfg.read_buf_len = sizeof(w->read_buf);
    w->http_cfg.write_buf = w->write_buf;
    w->http_cfg.write_buf_len = sizeof(w->write_buf);
    w->header_buf = calloc(w->http_cfg.max_headers + 1, sizeof(*w->header_buf));
    if (w->header_buf == NULL || worker_routes(w) != 0) {
        free(w->header_buf);
        mtls_http_routes_release(&w->routes);
        free(w);
        return MTLS_E_NOMEM;
    }
    w->http_cfg.header_buf = w->header_buf;
    w->http_cfg.header_buf_len = w->http_cfg.max_headers + 1;
    w->http_cfg.routes = &w->routes;
    w->http_cfg.h2_stall_ms = srv->opts.idle_timeout_ms;
    w->http_cfg.event = http_event;
    w->http_cfg.event_ctx = w;
    w->metrics = mtls__metrics_slot(srv->metrics, pub->slot);
    if (w->metrics != NULL) {
        w->http_cfg.request_done = request_done;
        w->http_cfg.request_done_ctx = w;
    }
    uv_idle_init(w->loop, &w->kicker);
    w->kicker.data = w;
    for (unsigned i = 0; i < pub->n_listen_fds && i < MTLS__MAX_ADDRS; i++) {
        struct listener *l = &w->listeners[w->n_listeners];

        if (uv_poll_init_socket(w->loop, &l->poll, pub->listen_fds[i]) != 0)
            continue;
        l->w = w;
        l->fd = pub->listen_fds[i];
        l->poll.data = l;
        w->n_listeners++;
    }
    w->listener_open = 1;
    uv_timer_init(w->loop, &w->retry);
    w->retry.data = w;
    uv_unref((uv_handle_t *)&w->retry);
    uv_timer_init(w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    uv_unref((uv_handle_t *)&w->drain_timer);
    listener_resume(w);
    if (pub->id == 0 && srv->n_metrics_fds > 0) {
        w->metrics_view.m = srv->metrics;
        w->metrics_view.open_conns = &srv->shared->open_conns;
        w->metrics_view.ssl_ctx = &pub->ssl_ctx;
        w->metrics_view.routes = &w->routes;
        w->metrics_view.dry_run = srv->opts.allow_dry_run;
        if (mtls__metrics_http_start(w->loop, srv->metrics_fds, srv->n_metrics_fds,
                                     &w->metrics_view, &w->metrics_http) != 0)
            mtls__syslogf(srv, "error", "metrics_failed",
                          "worker 0 cannot serve /metrics: out of memory");
    }
    uv_check_init(w->loop, &w->flush);
    w->flush.data = w;
    uv_check_start(&w->flush, on_flush);
    uv_unref((uv_handle_t *)&w->flush);

    if (pub->own_signals) {
        /* What the main process forwards to a worker process (SIGCHLD is its own). */
        static const int sigs[] = {SIGTERM, SIGINT, SIGUSR1, SIGHUP};
        sigset_t set;

        sigemptyset(&set);
        for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
            uv_signal_init(w->loop, &w->signals[i]);
            w->signals[i].data = w;
            uv_signal_start(&w->signals[i], on_signal, sigs[i]);
            uv_unref((uv_handle_t *)&w->signals[i]);
            sigaddset(&set, sigs[i]);
        }
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    }

    mtls__worker_loop_set(w->loop); /* mtls_worker_loop(), mtls_timer_start() */
    uv_run(w->loop, UV_RUN_DEFAULT);
    access_flush(w);
    /* Let the closed handles' callbacks run; the async handle stays for release. */
    uv_walk(w->loop, worker_close_handles, pub);
    close_proxies(w);
    uv_run(w->loop, UV_RUN_NOWAIT);
    mtls__worker_loop_set(NULL);
    mtls_http_routes_release(&w->routes);
    free(w->header_buf);
    free(w);
    pub->async.data = NULL;
    return rc;
}

void mtls__worker_release(struct mtls__worker *pub)
{
    if (!pub->loop_ready)
        return;
    uv_close((uv_handle_t *)&pub->async, NULL);
    uv_run(&pub->loop, UV_RUN_DEFAULT);
    uv_loop_close(&pub->loop);
    SSL_CTX_free(atomic_exchange(&pub->new_ctx, NULL));
    SSL_CTX_free(pub->ssl_ctx);
    pub->ssl_ctx = NULL;
    pub->loop_ready = 0;
}
