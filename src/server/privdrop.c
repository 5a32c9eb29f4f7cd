/*
 * --user NAME: the main process stays root (it binds the listening sockets,
 * reads the key files and reopens the logs, and does so again on SIGHUP and
 * SIGUSR1); each worker process gives up root right after fork, before it
 * touches a connection: supplementary groups, then the group, then the user,
 * each checked, then PR_SET_NO_NEW_PRIVS so that nothing it could execute
 * regains privileges. Where the kernel has Landlock (5.13+), the worker then
 * also gives up writing, creating, removing and executing any file by path:
 * it writes only to the log descriptors it inherited.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/landlock.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#include "server_internal.h"

int mtls__user_lookup(const char *name, struct mtls__user *u, mtls_err *err)
{
    struct passwd pw, *found = NULL;
    char buf[4096];
    int e;

    memset(u, 0, sizeof(*u));
    if (name == NULL)
        return 0;
    if (name[0] == '\0' || strlen(name) >= sizeof(u->name))
        return mtls_err_set(err, MTLS_E_INVALID, "bad --user '%s'", name);
    if (geteuid() != 0)
        return mtls_err_set(err, MTLS_E_INVALID,
                            "--user %s needs root: the server starts as root to bind the port "
                            "and read the key, then its workers run as %s (run it as root, or "
                            "leave out --user)",
                            name, name);
    e = getpwnam_r(name, &pw, buf, sizeof(buf), &found);
    if (e != 0)
        return mtls_err_sys(err, MTLS_E_INVALID, e, "cannot look up user '%s'", name);
    if (found == NULL)
        return mtls_err_set(err, MTLS_E_INVALID,
                            "--user %s: no such user (create it, e.g. 'useradd --system %s')", name,
                            name);
    if (pw.pw_uid == 0)
        return mtls_err_set(err, MTLS_E_INVALID,
                            "--user %s: that is root (uid 0); name an unprivileged user", name);
    strcpy(u->name, name);
    u->uid = pw.pw_uid;
    u->gid = pw.pw_gid;
    u->set = 1;
    return 0;
}

int mtls__landlock_no_writes(void)
{
#if defined(__linux__) && defined(SYS_landlock_create_ruleset) &&                                  \
    defined(SYS_landlock_restrict_self)
    struct landlock_ruleset_attr attr;
    long abi;
    int fd, e = 0;

    abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 1)
        return 0; /* no Landlock here (old kernel, or off): the uid change stays the confinement */
    memset(&attr, 0, sizeof(attr));
    /* Handled and allowed nowhere: reading stays as the user's permissions say. */
    attr.handled_access_fs =
        LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR |
        LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
        LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
        LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM;
#ifdef LANDLOCK_ACCESS_FS_REFER
    if (abi >= 2)
        attr.handled_access_fs |= LANDLOCK_ACCESS_FS_REFER;
#endif
#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
    if (abi >= 3)
        attr.handled_access_fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
#endif
    fd = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
    if (fd < 0)
        return errno;
    if (syscall(SYS_landlock_restrict_self, fd, 0) != 0)
        e = errno;
    close(fd);
    return e;
#else
    return 0;
#endif
}

int mtls__user_become(const struct mtls__user *u, mtls_err *err)
{
    int e;

    if (!u->set)
        return 0;
    if (initgroups(u->name, u->gid) != 0)
        return mtls_err_sys(err, MTLS_E_IO, errno, "cannot set the groups of user '%s'", u->name);
    if (setgid(u->gid) != 0)
        return mtls_err_sys(err, MTLS_E_IO, errno, "cannot change to group %ld of user '%s'",
                            (long)u->gid, u->name);
    if (setuid(u->uid) != 0)
        return mtls_err_sys(err, MTLS_E_IO, errno, "cannot change to user '%s'", u->name);
    /* Checked: a setuid that left a way back to root would be no drop at all. */
    if (getuid() != u->uid || geteuid() != u->uid || getgid() != u->gid || getegid() != u->gid ||
        setuid(0) == 0)
        return mtls_err_set(err, MTLS_E_IO, "cannot drop root for user '%s'", u->name);
#ifdef __linux__
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return mtls_err_sys(err, MTLS_E_IO, errno, "cannot set no_new_privs");
#endif
    e = mtls__landlock_no_writes();
    if (e != 0)
        return mtls_err_sys(err, MTLS_E_IO, e, "cannot confine the worker with Landlock");
    return 0;
}
