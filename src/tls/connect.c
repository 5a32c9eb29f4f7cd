/* Connecting a client: resolve a name, try each of its addresses in order
 * until one accepts (as curl does), each within a timeout. Every client of
 * mtls (probe, bench, demo) connects through here, so that a "localhost"
 * that resolves to ::1 first still reaches a server on 127.0.0.1. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mtls/client.h"
#include "tls/client_internal.h"

long long mtls__now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int mtls__wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - mtls__now_ms();
        struct pollfd pfd = {.fd = fd, .events = events};
        int n;

        if (left <= 0)
            return 0;
        n = poll(&pfd, 1, left > 1000000 ? 1000000 : (int)left);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

static void tracef(mtls_client_trace_fn trace, void *arg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void tracef(mtls_client_trace_fn trace, void *arg, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (trace == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    trace(arg, line);
}

/* "127.0.0.1:8443" or "[::1]:8443". */
static void format_address(const struct sockaddr *sa, socklen_t len, char *buf, size_t size)
{
    char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";

    getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(buf, size, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

/* Tries one address: 0 with *fd_out connected, else an errno (ETIMEDOUT on our timeout). */
static int connect_one(const struct addrinfo *ai, int timeout_ms, int *fd_out)
{
    int fd, rc = 0, soerr = 0, one = 1;
    socklen_t len = sizeof(soerr);

    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return errno;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            rc = errno;
            goto out;
        }
        switch (mtls__wait_fd(fd, POLLOUT, mtls__now_ms() + timeout_ms)) {
        case 0:
            rc = ETIMEDOUT;
            goto out;
        case -1:
            rc = errno;
            goto out;
        default:
            break;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
            rc = errno;
        else
            rc = soerr;
    }
out:
    if (rc != 0)
        close(fd);
    else
        *fd_out = fd;
    return rc;
}

int mtls_client_connect(const char *host, int port, int timeout_ms, mtls_client_trace_fn trace,
                        void *trace_arg, mtls_client_conn *out, mtls_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *list = NULL;
    char service[16], tried[512] = "";
    size_t tried_len = 0;
    int gai, rc = MTLS_E_IO;

    memset(out, 0, sizeof(*out));
    out->fd = -1;
    snprintf(service, sizeof(service), "%d", port);
    tracef(trace, trace_arg, "Resolving %s", host);
    gai = getaddrinfo(host, service, &hints, &list);
    if (gai != 0) {
        out->sys_errno = gai == EAI_SYSTEM ? errno : 0;
        rc = mtls_err_set(err, MTLS_E_NOTFOUND, "cannot resolve '%s': %s", host,
                          gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
        goto out;
    }
    for (const struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
        char address[sizeof(out->address)];
        int e;

        if (ai->ai_addrlen > sizeof(out->addr))
            continue;
        format_address(ai->ai_addr, ai->ai_addrlen, address, sizeof(address));
        tracef(trace, trace_arg, "Trying %s...", address);
        e = connect_one(ai, timeout_ms, &out->fd);
        if (e == 0 || out->addr_len == 0) {
            /* The one connected to, or else the first one tried. */
            memcpy(&out->addr, ai->ai_addr, ai->ai_addrlen);
            out->addr_len = ai->ai_addrlen;
            snprintf(out->address, sizeof(out->address), "%s", address);
        }
        if (e == 0) {
            out->sys_errno = 0;
            tracef(trace, trace_arg, "Connected to %s (%s) port %d", host, address, port);
            rc = 0;
            goto out;
        }
        out->sys_errno = e;
        tracef(trace, trace_arg, "connect to %s failed: %s", address,
               e == ETIMEDOUT ? "timed out" : strerror(e));
        if (tried_len < sizeof(tried))
            tried_len += (size_t)snprintf(
                tried + tried_len, sizeof(tried) - tried_len, "%s%s: %s", tried_len ? "; " : "",
                address, e == ETIMEDOUT ? "no answer within the timeout" : strerror(e));
    }
    rc = mtls_err_set(err, MTLS_E_IO, "cannot connect to '%s' port %d: %s", host, port,
                      tried[0] != '\0' ? tried : "no usable address");
out:
    if (list != NULL)
        freeaddrinfo(list);
    return rc;
}
