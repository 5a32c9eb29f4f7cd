/* sd_notify(3)'s datagram without libsystemd (src/server/sdnotify.c), and --user refusals. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/server_internal.h"

/* A datagram socket bound to name ('@': abstract); returns its fd. */
static int listener(const char *name)
{
    struct sockaddr_un sun;
    socklen_t len;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    cr_assert_geq(fd, 0);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, name);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name));
    if (name[0] == '@')
        sun.sun_path[0] = '\0';
    else
        len++;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sun, len), 0);
    return fd;
}

static void expect(int fd, const char *want_prefix)
{
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

    cr_assert_gt(n, 0, "no datagram");
    buf[n] = '\0';
    cr_assert_eq(strncmp(buf, want_prefix, strlen(want_prefix)), 0, "got '%s'", buf);
}

Test(sdnotify, no_socket_is_a_no_op)
{
    unsetenv("NOTIFY_SOCKET");
    cr_assert_eq(mtls__sd_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    cr_assert_eq(mtls__sd_notify("READY=1"), 0);
}

Test(sdnotify, abstract_name)
{
    char name[64];
    int fd;

    snprintf(name, sizeof(name), "@mtls-unit-notify-%ld", (long)getpid());
    fd = listener(name);
    setenv("NOTIFY_SOCKET", name, 1);
    cr_assert_eq(mtls__sd_notify("READY=1\nSTATUS=serving"), 0);
    expect(fd, "READY=1\nSTATUS=serving");
    cr_assert_eq(mtls__sd_notify_reloading(), 0);
    expect(fd, "RELOADING=1\nMONOTONIC_USEC=");
    close(fd);
}

Test(sdnotify, path)
{
    char dir[] = "/tmp/mtls-notify-XXXXXX", path[128];
    int fd;

    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/n", dir);
    fd = listener(path);
    setenv("NOTIFY_SOCKET", path, 1);
    cr_assert_eq(mtls__sd_notify("STOPPING=1"), 0);
    expect(fd, "STOPPING=1");
    close(fd);
    unlink(path);
    rmdir(dir);
    /* Nobody listening any more: an error value, never a crash. */
    cr_assert_neq(mtls__sd_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "relative", 1);
    cr_assert_neq(mtls__sd_notify("READY=1"), 0);
}

Test(privdrop, no_user_is_nothing_to_do)
{
    struct mtls__user u;
    mtls_err err;

    mtls_err_clear(&err);
    cr_assert_eq(mtls__user_lookup(NULL, &u, &err), 0);
    cr_assert_eq(u.set, 0);
    cr_assert_eq(mtls__user_become(&u, &err), 0);
}

Test(privdrop, unknown_user_and_root_are_refused)
{
    struct mtls__user u;
    mtls_err err;

    mtls_err_clear(&err);
    cr_assert_neq(mtls__user_lookup("no-such-user-mtls", &u, &err), 0);
    cr_assert(strstr(err.msg, geteuid() == 0 ? "no such user" : "needs root") != NULL, "%s",
              err.msg);
    mtls_err_clear(&err);
    cr_assert_neq(mtls__user_lookup("root", &u, &err), 0);
}
