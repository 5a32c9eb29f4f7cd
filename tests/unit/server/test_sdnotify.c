/* sd_notify(3)'s datagram without libsystemd (src/server/sdnotify.c); --user (privdrop.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
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

/* In a child: after mtls__landlock_no_writes() no file can be made, one can still be read. */
Test(privdrop, landlock_forbids_writing_by_path)
{
    char dir[] = "/tmp/mtls-landlock-XXXXXX", path[128], made[128];
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    int status;
    pid_t pid;
    FILE *f;

    if (abi < 1)
        cr_skip_test("no Landlock in this kernel");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/old", dir);
    snprintf(made, sizeof(made), "%s/new", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("x", f);
    fclose(f);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd;

        /* Landlock needs no_new_privs (or CAP_SYS_ADMIN). */
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || mtls__landlock_no_writes() != 0)
            _exit(10);
        fd = open(made, O_WRONLY | O_CREAT, 0600);
        if (fd >= 0 || errno != EACCES)
            _exit(11);
        fd = open(path, O_WRONLY | O_APPEND);
        if (fd >= 0 || errno != EACCES)
            _exit(12);
        fd = open(path, O_RDONLY);
        _exit(fd >= 0 ? 0 : 13);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    unlink(made);
    unlink(path);
    rmdir(dir);
    cr_assert(WIFEXITED(status));
    cr_assert_eq(WEXITSTATUS(status), 0, "child step %d failed", WEXITSTATUS(status));
}
