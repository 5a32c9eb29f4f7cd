/*
 * The systemd readiness protocol (sd_notify(3)), without libsystemd: one
 * datagram of "NAME=VALUE" lines sent to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or an abstract name when it starts with '@').
 * Without $NOTIFY_SOCKET it does nothing: the server was not started by
 * systemd with Type=notify.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "server_internal.h"

int mtls__sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun;
    size_t len;
    socklen_t sun_len;
    ssize_t n;
    int fd, e;

    if (path == NULL || path[0] == '\0')
        return 0;
    len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sun.sun_path))
        return EINVAL;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, len);
    sun_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (path[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract: the name is not NUL-terminated */
    else
        sun_len++;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, sun_len);
    e = n < 0 ? errno : 0;
    close(fd);
    return e;
}

int mtls__sd_notify_reloading(void)
{
    struct timespec ts;
    char msg[96];

    /* Type=notify-reload wants the CLOCK_MONOTONIC time the reload began. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    return mtls__sd_notify(msg);
}
