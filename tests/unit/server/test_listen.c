/*
 * The listening sockets (src/server/listen.c): port 0 on several addresses
 * when the kernel's pick for the first is taken on another. 127.0.0.1 and
 * 127.0.0.2 stand for a name's addresses (Linux answers the whole of
 * 127.0.0.0/8 on the loopback), so nothing depends on /etc/hosts.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/server_internal.h"

/* What the seam did: the ports it was given and the sockets it took them with. */
struct taker {
    int reuseport; /* take the port as a server of the same user would */
    unsigned take; /* how many picks to take */
    unsigned calls;
    int ports[16];
    int fds[16];
};

static void loopback(struct sockaddr_storage *ss, socklen_t *len, const char *ip, int port)
{
    struct sockaddr_in *in = (struct sockaddr_in *)ss;

    memset(ss, 0, sizeof(*ss));
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    cr_assert_eq(inet_pton(AF_INET, ip, &in->sin_addr), 1);
    *len = sizeof(*in);
}

/* A listening socket on ip:port (0: the kernel's pick); returns it, its port in *got. */
static int hold(const char *ip, int port, int reuseport, int *got)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0);
    if (reuseport)
        cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    loopback(&ss, &len, ip, port);
    cr_assert_eq(bind(fd, (struct sockaddr *)&ss, len), 0, "cannot bind %s:%d", ip, port);
    cr_assert_eq(listen(fd, 8), 0);
    len = sizeof(ss);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    if (got != NULL)
        *got = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

/* The seam: another program takes the picked port on the second address first. */
static void take_on_second(void *ctx, int port)
{
    struct taker *t = ctx;

    cr_assert_lt(t->calls, 16);
    t->ports[t->calls] = port;
    t->fds[t->calls] = t->calls < t->take ? hold("127.0.0.2", port, t->reuseport, NULL) : -1;
    t->calls++;
}

static void release_taker(struct taker *t)
{
    for (unsigned i = 0; i < t->calls; i++) {
        if (t->fds[i] >= 0)
            close(t->fds[i]);
    }
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;

    cr_assert_not_null(d);
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

/* Each socket of l listens on its address with l's port. */
static void expect_bound(const struct mtls__listeners *l, const char *const *ips)
{
    for (unsigned i = 0; i < l->n_fds; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char addr[64];
        int port;

        cr_assert_geq(l->fds[i], 0, "socket %u is not open", i);
        cr_assert_eq(getsockname(l->fds[i], (struct sockaddr *)&ss, &len), 0);
        mtls__addr_format(&ss, addr, sizeof(addr), &port);
        cr_assert_eq(port, l->port, "socket %u: port %d, not %d", i, port, l->port);
        if (ips != NULL)
            cr_assert_str_eq(addr, ips[i % l->n_addrs]);
    }
}

static int bind_two(struct mtls__listeners *l, int port, struct taker *t, mtls_err *err)
{
    struct sockaddr_storage ss[2];
    socklen_t len[2];

    loopback(&ss[0], &len[0], "127.0.0.1", port);
    loopback(&ss[1], &len[1], "127.0.0.2", port);
    mtls_err_clear(err);
    return mtls__listeners_bind_addrs(l, ss, len, 2, 0, 2, "a-name:0", take_on_second, t, err);
}

Test(listen, port0_starts_over_when_the_pick_is_taken_on_another_address)
{
    static const char *const ips[] = {"127.0.0.1", "127.0.0.2"};
    struct taker t = {.take = 1};
    struct mtls__listeners l;
    mtls_err err;
    char want[128];
    int rc = bind_two(&l, 0, &t, &err);

    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(t.calls, 2, "the kernel picked %u ports", t.calls);
    cr_assert_neq(l.port, t.ports[0]);
    cr_assert_eq(l.port, t.ports[1]);
    cr_assert_eq(l.n_fds, 4);
    expect_bound(&l, ips);
    snprintf(want, sizeof(want), "127.0.0.1:%d and 127.0.0.2:%d", l.port, l.port);
    cr_assert_str_eq(l.address, want);
    mtls__listeners_release(&l);
    cr_assert_null(l.fds);
    release_taker(&t);
}

Test(listen, port0_does_not_join_a_port_another_server_of_the_user_holds)
{
    /* SO_REUSEPORT on both sides would share the port without a word. */
    struct taker t = {.take = 1, .reuseport = 1};
    struct mtls__listeners l;
    mtls_err err;
    int rc = bind_two(&l, 0, &t, &err);

    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(t.calls, 2);
    cr_assert_neq(l.port, t.ports[0], "joined the other server's port");
    expect_bound(&l, NULL);
    mtls__listeners_release(&l);
    release_taker(&t);
}

Test(listen, port0_gives_up_after_its_tries_and_leaves_nothing_open)
{
    struct taker t = {.take = 16};
    struct mtls__listeners l;
    mtls_err err;
    int before = open_fds();
    int rc = bind_two(&l, 0, &t, &err);

    cr_assert_eq(rc, MTLS_E_BUSY, "rc %d: %s", rc, err.msg);
    cr_assert_eq(t.calls, MTLS__PORT0_TRIES);
    cr_assert_not_null(strstr(err.msg, "cannot listen on 'a-name:0': the port is in use"), "%s",
                       err.msg);
    cr_assert_null(l.fds);
    cr_assert_eq(open_fds(), before + (int)t.calls, "sockets left open");
    release_taker(&t);
}

Test(listen, a_port_given_is_never_swapped)
{
    struct taker t = {.take = 16};
    struct mtls__listeners l;
    mtls_err err;
    int port;
    int holder = hold("127.0.0.2", 0, 0, &port);
    int rc = bind_two(&l, port, &t, &err);

    cr_assert_eq(rc, MTLS_E_BUSY, "rc %d: %s", rc, err.msg);
    cr_assert_eq(t.calls, 0);
    cr_assert_null(l.fds);
    close(holder);
}

Test(listen, a_name_binds_each_of_its_addresses_on_one_port)
{
    struct mtls__listeners l;
    mtls_err err;
    int rc;

    mtls_err_clear(&err);
    rc = mtls__listeners_bind(&l, "localhost:0", 2, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_gt(l.port, 0);
    cr_assert_eq(l.n_fds, 2 * l.n_addrs);
    expect_bound(&l, NULL);
    mtls__listeners_release(&l);
}
