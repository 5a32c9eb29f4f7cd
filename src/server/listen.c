/*
 * Listening sockets: --listen parsed into addresses and bound once per
 * worker and address with SO_REUSEPORT (before any worker starts, so that a
 * port in use is a start-up error), --metrics-listen's sockets, and the
 * checks of both for `serve --check` and `mtls doctor`.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mtls/server.h"
#include "server_internal.h"

#define BACKLOG 511

/*
 * Parses "8443", ":8443", "*:8443", "127.0.0.1:8443", "[::1]:8443",
 * "localhost:8443" into up to MTLS__MAX_ADDRS addresses: a name stands for
 * every address it resolves to (localhost: ::1 and 127.0.0.1), as a client
 * such as curl tries each of them.
 */
static int parse_listen(const char *text, struct sockaddr_storage *ss, socklen_t *len,
                        unsigned *n_addrs, int *everywhere, mtls_err *err)
{
    char host[256] = "";
    const char *port_s = text;
    const char *colon;
    struct addrinfo hints, *res = NULL;
    char *end;
    long port;
    int r;

    *everywhere = 0;
    *n_addrs = 1;
    if (text == NULL || *text == '\0')
        text = port_s = "8443";
    if (text[0] == '[') {
        const char *close = strchr(text, ']');

        if (close == NULL || close[1] != ':' || (size_t)(close - text - 1) >= sizeof(host))
            goto bad;
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        port_s = close + 2;
    } else if ((colon = strrchr(text, ':')) != NULL) {
        if ((size_t)(colon - text) >= sizeof(host))
            goto bad;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        port_s = colon + 1;
    }
    errno = 0;
    port = strtol(port_s, &end, 10);
    if (*port_s == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535)
        goto bad;
    memset(ss, 0, sizeof(*ss));
    if (host[0] == '\0' || strcmp(host, "*") == 0) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

        /* All addresses: IPv6 and IPv4 on one dual-stack socket (like Node). */
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_any;
        in6->sin6_port = htons((uint16_t)port);
        len[0] = sizeof(*in6);
        *everywhere = 1;
        return 0;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    r = getaddrinfo(host, port_s, &hints, &res);
    if (r != 0 || res == NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "cannot listen on '%s': %s", text,
                            r != 0 ? gai_strerror(r) : "no address");
    *n_addrs = 0;
    for (const struct addrinfo *ai = res; ai != NULL && *n_addrs < MTLS__MAX_ADDRS;
         ai = ai->ai_next) {
        unsigned k;

        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        for (k = 0; k < *n_addrs; k++) {
            if (len[k] == ai->ai_addrlen && memcmp(&ss[k], ai->ai_addr, ai->ai_addrlen) == 0)
                break; /* getaddrinfo repeats an address per protocol */
        }
        if (k < *n_addrs)
            continue;
        memset(&ss[*n_addrs], 0, sizeof(ss[0]));
        memcpy(&ss[*n_addrs], ai->ai_addr, ai->ai_addrlen);
        len[*n_addrs] = ai->ai_addrlen;
        (*n_addrs)++;
    }
    freeaddrinfo(res);
    if (*n_addrs == 0)
        return mtls_err_set(err, MTLS_E_INVALID, "cannot listen on '%s': no IP address", text);
    return 0;
bad:
    return mtls_err_set(err, MTLS_E_INVALID,
                        "bad --listen '%s': use PORT, ADDR:PORT or [IPV6]:PORT (port 0-65535)",
                        text);
}

/*
 * --check parses the address only: unlike mtls_server_listen_check() (for
 * `mtls doctor`) it does not bind, so that checking a configuration while
 * the server runs on that port is not "the port is in use", as nginx -t.
 */
int mtls__listen_check(const char *text, mtls_err *err)
{
    struct sockaddr_storage ss[MTLS__MAX_ADDRS];
    socklen_t len[MTLS__MAX_ADDRS];
    unsigned n_addrs = 0;
    int everywhere;

    return parse_listen(text, ss, len, &n_addrs, &everywhere, err);
}

static int open_socket(const struct sockaddr_storage *ss, socklen_t len, int everywhere,
                       int reuseport, const char *shown, int *out, mtls_err *err)
{
    int one = 1, zero = 0;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int e;

    *out = -1;
    if (fd < 0)
        return mtls_err_sys(err, MTLS_E_IO, errno, "cannot listen on '%s'", shown);
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        e = errno;
        close(fd);
        return mtls_err_sys(err, MTLS_E_IO, e, "cannot listen on '%s': SO_REUSEPORT", shown);
    }
    if (everywhere && ss->ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, BACKLOG) != 0) {
        e = errno;
        close(fd);
        if (e == EADDRINUSE)
            return mtls_err_set(err, MTLS_E_BUSY,
                                "cannot listen on '%s': the port is in use (another server is "
                                "running there; stop it or pick another --listen)",
                                shown);
        if (e == EACCES)
            return mtls_err_set(err, MTLS_E_IO,
                                "cannot listen on '%s': permission denied (ports below 1024 "
                                "need root or CAP_NET_BIND_SERVICE)",
                                shown);
        if (e == EADDRNOTAVAIL)
            return mtls_err_set(err, MTLS_E_INVALID,
                                "cannot listen on '%s': no such address on this machine", shown);
        return mtls_err_sys(err, MTLS_E_IO, e, "cannot listen on '%s'", shown);
    }
    *out = fd;
    return 0;
}

static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;

        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

/*
 * --metrics-listen: plain HTTP, so loopback only unless --metrics-listen-public
 * says otherwise (the counts tell who is refused and why). One socket per
 * address, made here (before --user drops root); worker 0 serves them.
 */
static int metrics_addrs(const char *text, int public, struct sockaddr_storage *ss, socklen_t *len,
                         unsigned *n_addrs, int *everywhere, mtls_err *err)
{
    int rc = parse_listen(text, ss, len, n_addrs, everywhere, err);

    if (rc != 0)
        return mtls_err_set(err, MTLS_E_INVALID, "bad --metrics-listen: %s", err->msg);
    for (unsigned i = 0; i < *n_addrs && !public; i++) {
        if (*everywhere || !is_loopback(&ss[i]))
            return mtls_err_set(err, MTLS_E_INVALID,
                                "--metrics-listen '%s' is not a loopback address: metrics are "
                                "plain HTTP; add --metrics-listen-public to serve them there",
                                text);
    }
    return 0;
}

int mtls__metrics_listen_check(const char *text, int public, mtls_err *err)
{
    struct sockaddr_storage ss[MTLS__MAX_ADDRS];
    socklen_t len[MTLS__MAX_ADDRS];
    unsigned n_addrs = 0;
    int everywhere;

    return text == NULL ? 0 : metrics_addrs(text, public, ss, len, &n_addrs, &everywhere, err);
}

int mtls__metrics_bind(mtls_server *srv, mtls_err *err)
{
    struct sockaddr_storage ss[MTLS__MAX_ADDRS];
    socklen_t len[MTLS__MAX_ADDRS];
    unsigned n_addrs = 0;
    int everywhere, rc;
    const char *text = srv->opts.metrics_listen;

    rc = metrics_addrs(text, srv->opts.metrics_public, ss, len, &n_addrs, &everywhere, err);
    if (rc != 0)
        return rc;
    for (unsigned i = 0; i < n_addrs && i < MTLS__METRICS_MAX_FDS; i++) {
        char addr[64];
        int port;
        size_t used = strlen(srv->metrics_address);

        rc = open_socket(&ss[i], len[i], everywhere, 0, text, &srv->metrics_fds[i], err);
        if (rc != 0)
            return rc;
        srv->n_metrics_fds++;
        {
            struct sockaddr_storage bound;
            socklen_t blen = sizeof(bound);

            if (getsockname(srv->metrics_fds[i], (struct sockaddr *)&bound, &blen) != 0)
                bound = ss[i];
            mtls__addr_format(&bound, addr, sizeof(addr), &port);
        }
        snprintf(srv->metrics_address + used, sizeof(srv->metrics_address) - used,
                 strchr(addr, ':') ? "%shttp://[%s]:%d/metrics" : "%shttp://%s:%d/metrics",
                 used > 0 ? ", " : "", addr, port);
    }
    return 0;
}

static int port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

/*
 * A plain bind (no SO_REUSEPORT) of addresses from..n-1, closed again:
 * SO_REUSEPORT would let us share a port with another server of the same
 * user without a word; a plain bind finds anyone who holds it.
 */
static int check_free(const struct sockaddr_storage *ss, const socklen_t *len, unsigned from,
                      unsigned n, int everywhere, const char *shown, mtls_err *err)
{
    for (unsigned a = from; a < n; a++) {
        int fd;
        int rc = open_socket(&ss[a], len[a], everywhere, 0, shown, &fd, err);

        if (rc != 0)
            return rc;
        close(fd);
    }
    return 0;
}

/*
 * One try at binding every socket of l on the addresses ss (whose ports may
 * be 0). Port 0: the first socket takes the port the kernel picks, every
 * address gets it in ss, and only then are the others checked and bound.
 * Returns 0 or the first error (MTLS_E_BUSY: a port in use); l->fds keeps
 * what was opened either way.
 */
static int bind_once(struct mtls__listeners *l, struct sockaddr_storage *ss, const socklen_t *len,
                     const char *shown, mtls__port_picked_fn *picked, void *picked_ctx,
                     mtls_err *err)
{
    int port0 = port_of(&ss[0]) == 0;
    int rc = port0 ? 0 : check_free(ss, len, 0, l->n_addrs, l->everywhere, shown, err);

    for (unsigned i = 0; rc == 0 && i < l->n_fds; i++) {
        unsigned a = i % l->n_addrs;

        rc = open_socket(&ss[a], len[a], l->everywhere, 1, shown, &l->fds[i], err);
        if (rc == 0 && i == 0 && port0) {
            struct sockaddr_storage got;
            socklen_t got_len = sizeof(got);

            if (getsockname(l->fds[0], (struct sockaddr *)&got, &got_len) != 0)
                return mtls_err_sys(err, MTLS_E_IO, errno, "cannot listen on '%s': getsockname",
                                    shown);
            for (unsigned k = 0; k < l->n_addrs; k++)
                set_port(&ss[k], port_of(&got));
            if (picked != NULL)
                picked(picked_ctx, port_of(&got));
            rc = check_free(ss, len, 1, l->n_addrs, l->everywhere, shown, err);
        }
    }
    return rc;
}

void mtls__listeners_close(struct mtls__listeners *l)
{
    for (unsigned i = 0; l->fds != NULL && i < l->n_fds; i++) {
        if (l->fds[i] >= 0)
            close(l->fds[i]);
        l->fds[i] = -1;
    }
}

void mtls__listeners_release(struct mtls__listeners *l)
{
    mtls__listeners_close(l);
    free(l->fds);
    memset(l, 0, sizeof(*l));
}

int mtls__listeners_bind_addrs(struct mtls__listeners *l, const struct sockaddr_storage *addrs,
                               const socklen_t *len, unsigned n_addrs, int everywhere,
                               unsigned workers, const char *shown, mtls__port_picked_fn *picked,
                               void *picked_ctx, mtls_err *err)
{
    struct sockaddr_storage ss[MTLS__MAX_ADDRS];
    int port0 = port_of(&addrs[0]) == 0;
    int rc;

    memset(l, 0, sizeof(*l));
    if (n_addrs == 0 || n_addrs > MTLS__MAX_ADDRS || workers == 0)
        return mtls_err_set(err, MTLS_E_INVALID, "cannot listen on '%s': no address", shown);
    l->fds = malloc((size_t)workers * n_addrs * sizeof(int));
    if (l->fds == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    l->n_fds = workers * n_addrs;
    l->n_addrs = n_addrs;
    l->everywhere = everywhere;
    for (unsigned i = 0; i < l->n_fds; i++)
        l->fds[i] = -1;
    for (unsigned tries = 1;; tries++) {
        memcpy(ss, addrs, n_addrs * sizeof(ss[0]));
        rc = bind_once(l, ss, len, shown, picked, picked_ctx, err);
        /*
         * Port 0 on a name: the port the kernel picked on the first address
         * may be taken on another (by a program on 127.0.0.1 alone, say).
         * Start over with a fresh pick rather than fail; only a port that
         * is busy try after try is an error.
         */
        if (rc != MTLS_E_BUSY || !port0 || tries == MTLS__PORT0_TRIES)
            break;
        mtls__listeners_close(l);
    }
    if (rc != 0) {
        mtls__listeners_release(l);
        return rc;
    }
    mtls_err_clear(err); /* a try that failed before is no error */
    l->port = port_of(&ss[0]);
    if (everywhere)
        snprintf(l->address, sizeof(l->address), "*:%d", l->port);
    for (unsigned a = 0; !everywhere && a < n_addrs; a++) {
        size_t used = strlen(l->address);
        char addr[64];
        int p;

        mtls__addr_format(&ss[a], addr, sizeof(addr), &p);
        snprintf(l->address + used, sizeof(l->address) - used,
                 strchr(addr, ':') ? "%s[%s]:%d" : "%s%s:%d", a == 0 ? "" : " and ", addr, p);
    }
    return 0;
}

int mtls__listeners_bind(struct mtls__listeners *l, const char *text, unsigned workers,
                         mtls_err *err)
{
    struct sockaddr_storage ss[MTLS__MAX_ADDRS];
    socklen_t len[MTLS__MAX_ADDRS];
    unsigned n_addrs = 0;
    int everywhere, rc;
    const char *shown = text != NULL && text[0] != '\0' ? text : "8443";

    memset(l, 0, sizeof(*l));
    rc = parse_listen(text, ss, len, &n_addrs, &everywhere, err);
    if (rc != 0)
        return rc;
    if (everywhere) {
        /* No IPv6 on this machine: every IPv4 address instead. */
        int v6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (v6 >= 0) {
            close(v6);
        } else if (errno == EAFNOSUPPORT) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss[0];
            int port = port_of(&ss[0]);

            memset(&ss[0], 0, sizeof(ss[0]));
            in->sin_family = AF_INET;
            in->sin_addr.s_addr = htonl(INADDR_ANY);
            set_port(&ss[0], port);
            len[0] = sizeof(*in);
        }
    }
    return mtls__listeners_bind_addrs(l, ss, len, n_addrs, everywhere, workers, shown, NULL, NULL,
                                      err);
}

/* `mtls doctor`: the plain bind of the start, each socket closed again. */
int mtls_server_listen_check(const char *listen, mtls_err *err)
{
    struct sockaddr_storage ss[MTLS__MAX_ADDRS];
    socklen_t len[MTLS__MAX_ADDRS];
    unsigned n_addrs = 0;
    int everywhere, rc;
    const char *shown = listen != NULL && listen[0] != '\0' ? listen : "8443";

    rc = parse_listen(listen, ss, len, &n_addrs, &everywhere, err);
    if (rc != 0)
        return rc;
    /* A port held by anyone is in use. */
    return check_free(ss, len, 0, n_addrs, everywhere, shown, err);
}
