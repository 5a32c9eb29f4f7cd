/*
 * The /metrics listener: plain HTTP/1.1 on its own socket, served from one
 * worker's loop by the same request pipeline as HTTPS (src/http, a route
 * table with the one route), on plain read(2)/write(2). A connection idle
 * for IDLE_MS is closed; at most MAX_CONNS are open at once (a scraper
 * needs one).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/http_conn.h"
#include "metrics.h"

#define IDLE_MS 10000
#define MAX_CONNS 8

struct mconn {
    struct mtls__metrics_http *h;
    int fd;
    int handles; /* poll, timer */
    int closing;
    uv_poll_t poll;
    uv_timer_t timer;
    mtls_http_peer peer;
    mtls_http_conn http;
    struct mconn *next, *prev;
};

struct mtls__metrics_http {
    uv_loop_t *loop;
    int fds[MTLS__METRICS_MAX_FDS];
    uv_poll_t listen[MTLS__METRICS_MAX_FDS];
    unsigned n_fds;
    int handles; /* the listeners' polls, while open */
    const struct mtls__metrics_view *view;
    mtls_http_routes routes;
    mtls_http_config cfg;
    struct mconn *conns;
    unsigned n_conns;
    int stopped;
};

static void maybe_free(struct mtls__metrics_http *h)
{
    if (!h->stopped || h->handles > 0 || h->conns != NULL)
        return;
    mtls_http_routes_release(&h->routes);
    free(h);
}

static void mconn_free(uv_handle_t *handle)
{
    struct mconn *c = handle->data;
    struct mtls__metrics_http *h = c->h;

    if (--c->handles > 0)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    h->n_conns--;
    close(c->fd);
    mtls_http_conn_release(&c->http);
    free(c);
    maybe_free(h);
}

static void mconn_close(struct mconn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->poll, mconn_free);
    uv_close((uv_handle_t *)&c->timer, mconn_free);
}

static long plain_result(ssize_t n)
{
    if (n > 0)
        return (long)n;
    if (n == 0)
        return MTLS_IO_EOF;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? MTLS_IO_WANT_READ
                                                                     : MTLS_IO_ERROR;
}

static long plain_read(void *ctx, char *buf, size_t len)
{
    struct mconn *c = ctx;

    return plain_result(read(c->fd, buf, len));
}

static long plain_write(void *ctx, const char *buf, size_t len)
{
    struct mconn *c = ctx;
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return MTLS_IO_WANT_WRITE;
    return n < 0 ? MTLS_IO_ERROR : (long)n;
}

static void mconn_io(uv_poll_t *p, int status, int events);

static void mconn_run(struct mconn *c)
{
    int r = mtls_http_conn_run(&c->http);

    switch (r) {
    case MTLS_HTTP_WANT_READ:
    case MTLS_HTTP_WANT_WRITE:
        uv_timer_again(&c->timer);
        (void)uv_poll_start(&c->poll, r == MTLS_HTTP_WANT_READ ? UV_READABLE : UV_WRITABLE,
                            mconn_io);
        return;
    default:
        /* DONE, ABORT; WAIT cannot happen: the one handler answers at once. */
        (void)shutdown(c->fd, SHUT_WR);
        mconn_close(c);
        return;
    }
}

static void mconn_io(uv_poll_t *p, int status, int events)
{
    struct mconn *c = p->data;

    (void)events;
    if (c->closing)
        return;
    if (status < 0) {
        mconn_close(c);
        return;
    }
    mconn_run(c);
}

static void mconn_timeout(uv_timer_t *t)
{
    mconn_close(t->data);
}

static int metrics_handler(void *ctx, mtls_http_request *req)
{
    struct mtls__metrics_http *h = ctx;
    char *body = NULL;
    size_t len = 0;
    int rc;

    if (mtls__metrics_format(h->view, &body, &len) != 0)
        return mtls_http_respond_error(req, 500, "internal error", "out of memory");
    rc = mtls_http_respond(req, 200, MTLS__METRICS_CONTENT_TYPE, body, len, NULL);
    free(body);
    return rc;
}

static void on_metrics_accept(uv_poll_t *p, int status, int events)
{
    struct mtls__metrics_http *h = p->data;
    int listen_fd = h->fds[p - h->listen];
    mtls_http_io io = {plain_read, plain_write, NULL, NULL, NULL};
    struct mconn *c;
    int fd;

    (void)events;
    if (status < 0 || h->stopped)
        return;
    fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (h->n_conns >= MAX_CONNS || (c = calloc(1, sizeof(*c))) == NULL) {
        close(fd);
        return;
    }
    c->h = h;
    c->fd = fd;
    c->peer.addr = "metrics";
    io.ctx = c;
    if (uv_poll_init_socket(h->loop, &c->poll, fd) != 0 ||
        mtls_http_conn_init(&c->http, &h->cfg, &c->peer, &io) != 0) {
        close(fd);
        free(c);
        return;
    }
    uv_timer_init(h->loop, &c->timer);
    c->handles = 2;
    c->poll.data = c;
    c->timer.data = c;
    c->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = c;
    h->conns = c;
    h->n_conns++;
    uv_timer_start(&c->timer, mconn_timeout, IDLE_MS, IDLE_MS);
    (void)uv_poll_start(&c->poll, UV_READABLE, mconn_io);
}

int mtls__metrics_http_start(uv_loop_t *loop, const int *fds, unsigned n_fds,
                             const struct mtls__metrics_view *view, struct mtls__metrics_http **out)
{
    struct mtls__metrics_http *h = calloc(1, sizeof(*h));
    mtls_err err;

    *out = NULL;
    if (h == NULL)
        return MTLS_E_NOMEM;
    mtls_err_clear(&err);
    h->loop = loop;
    h->view = view;
    if (mtls_http_routes_add(&h->routes, "/metrics", 0,
                             MTLS_METHOD(HTTP_GET) | MTLS_METHOD(HTTP_HEAD), metrics_handler, h,
                             &err) != 0) {
        free(h);
        return MTLS_E_NOMEM;
    }
    mtls_http_config_init(&h->cfg);
    h->cfg.routes = &h->routes;
    for (unsigned i = 0; i < n_fds && i < MTLS__METRICS_MAX_FDS; i++) {
        if (uv_poll_init_socket(loop, &h->listen[h->n_fds], fds[i]) != 0)
            continue;
        h->fds[h->n_fds] = fds[i];
        h->listen[h->n_fds].data = h;
        (void)uv_poll_start(&h->listen[h->n_fds], UV_READABLE, on_metrics_accept);
        h->n_fds++;
    }
    h->handles = (int)h->n_fds;
    *out = h;
    return 0;
}

static void listen_closed(uv_handle_t *handle)
{
    struct mtls__metrics_http *h = handle->data;

    h->handles--;
    maybe_free(h);
}

void mtls__metrics_http_stop(struct mtls__metrics_http *h)
{
    struct mconn *c, *next;

    if (h == NULL || h->stopped)
        return;
    h->stopped = 1;
    for (unsigned i = 0; i < h->n_fds; i++)
        uv_close((uv_handle_t *)&h->listen[i], listen_closed);
    for (c = h->conns; c != NULL; c = next) {
        next = c->next;
        mconn_close(c);
    }
    maybe_free(h); /* nothing was open */
}
