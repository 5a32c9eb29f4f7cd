/*
 * Log files: opened for appending, written with one write(2) per line (or
 * per batch of access-log lines), reopened under the same descriptor on
 * SIGUSR1 so that every worker writes to the new file at once. Access-log
 * lines that cannot be written (full disk) are counted and said in the
 * system log, rate limited, and so is the moment writing works again.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mtls/http.h"
#include "server_internal.h"

int mtls__log_open(struct mtls__log *log, const char *path, mtls_err *err)
{
    log->fd = -1;
    log->path = path;
    if (path == NULL)
        return 0;
    log->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log->fd < 0)
        return mtls_err_sys(err, MTLS_E_IO, errno, "cannot open log file '%s'", path);
    return 0;
}

int mtls__log_reopen(const struct mtls__log *log, mtls_err *err)
{
    int fd;

    if (log->path == NULL || log->fd < 0)
        return 0;
    fd = open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return mtls_err_sys(err, MTLS_E_IO, errno, "cannot reopen log file '%s'", log->path);
    /* dup3 swaps the file under the descriptor every writer uses. */
    if (dup3(fd, log->fd, O_CLOEXEC) < 0) {
        int e = errno;

        close(fd);
        return mtls_err_sys(err, MTLS_E_IO, e, "cannot reopen log file '%s'", log->path);
    }
    close(fd);
    return 0;
}

int mtls__server_reopen_logs(const mtls_server *srv)
{
    mtls_err err;

    mtls_err_clear(&err);
    if (mtls__log_reopen(&srv->access_log, &err) != 0 ||
        mtls__log_reopen(&srv->system_log, &err) != 0) {
        mtls__syslog(srv, "error", NULL, "log_reopen_failed", err.msg, NULL);
        return -1;
    }
    return 0;
}

void mtls__log_close(struct mtls__log *log)
{
    if (log->fd >= 0)
        close(log->fd);
    log->fd = -1;
}

int mtls__log_write(const struct mtls__log *log, const char *buf, size_t len, size_t *written)
{
    size_t done = 0;
    int e = 0;

    while (log->fd >= 0 && done < len) {
        ssize_t n = write(log->fd, buf + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            e = n < 0 ? errno : ENOSPC; /* a full disk must not stop the server */
            break;
        }
        done += (size_t)n;
    }
    if (written != NULL)
        *written = done;
    return e;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t count_lines(const char *buf, size_t len)
{
    uint64_t n = 0;

    for (const char *p = buf; (p = memchr(p, '\n', len - (size_t)(p - buf))) != NULL; p++)
        n++;
    return n;
}

void mtls__access_log_write(const mtls_server *srv, struct mtls__log_loss *loss, const char *buf,
                            size_t len)
{
    size_t written = 0;
    int e = mtls__log_write(&srv->access_log, buf, len, &written);
    uint64_t now;

    if (e == 0) {
        if (loss->lines > 0)
            mtls__syslogf(srv, "info", "access_log_resumed",
                          "the access log '%s' is written again; %llu line(s) were lost while "
                          "it could not be written",
                          srv->access_log.path, (unsigned long long)loss->lines);
        loss->lines = 0;
        return;
    }
    /* A line cut short counts as lost: only whole lines were written. */
    loss->lines += count_lines(buf + written, len - written);
    loss->total += count_lines(buf + written, len - written);
    now = now_ms();
    if (loss->last_said != 0 && now - loss->last_said < MTLS__LOG_LOSS_EVERY_MS)
        return;
    loss->last_said = now;
    mtls__syslogf(srv, "error", "access_log_failed",
                  "cannot write the access log '%s': %s; %llu line(s) lost so far (said at most "
                  "once a minute until writing works again)",
                  srv->access_log.path, strerror(e), (unsigned long long)loss->lines);
}

static void now_iso(char *buf, size_t size)
{
    struct timespec ts;
    struct tm tm;
    char sec[24];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(sec, sizeof(sec), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, size, "%s.%03dZ", sec, (int)(ts.tv_nsec / 1000000) % 1000);
}

void mtls__syslog(const mtls_server *srv, const char *level, const char *peer, const char *event,
                  const char *message, const char *const *kv)
{
    char line[4096], when[40];
    size_t o = 0;
    int n;

    if (srv == NULL || srv->system_log.fd < 0)
        return;
    now_iso(when, sizeof(when));
    if (srv->opts.log_format == MTLS_LOG_JSON) {
        char esc[2048];

        n = snprintf(line, sizeof(line), "{\"time\":\"%s\",\"level\":\"%s\",\"pid\":%ld", when,
                     level, (long)getpid());
        o = n > 0 ? (size_t)n : 0;
        if (peer != NULL && o < sizeof(line)) {
            mtls_json_escape(esc, sizeof(esc), peer, strlen(peer));
            n = snprintf(line + o, sizeof(line) - o, ",\"peer\":\"%s\"", esc);
            o += n > 0 ? (size_t)n : 0;
        }
        if (o < sizeof(line)) {
            n = snprintf(line + o, sizeof(line) - o, ",\"event\":\"%s\"", event);
            o += n > 0 ? (size_t)n : 0;
        }
        if (o < sizeof(line)) {
            mtls_json_escape(esc, sizeof(esc), message, strlen(message));
            n = snprintf(line + o, sizeof(line) - o, ",\"message\":\"%s\"", esc);
            o += n > 0 ? (size_t)n : 0;
        }
        for (size_t i = 0; kv != NULL && kv[i] != NULL && o < sizeof(line); i += 2) {
            if (kv[i + 1] == NULL)
                continue;
            mtls_json_escape(esc, sizeof(esc), kv[i + 1], strlen(kv[i + 1]));
            n = snprintf(line + o, sizeof(line) - o, ",\"%s\":\"%s\"", kv[i], esc);
            o += n > 0 ? (size_t)n : 0;
        }
        if (o + 3 > sizeof(line))
            o = sizeof(line) - 3;
        line[o++] = '}';
    } else {
        char upper[8];
        size_t i;

        for (i = 0; level[i] != '\0' && i < sizeof(upper) - 1; i++)
            upper[i] = (char)(level[i] >= 'a' && level[i] <= 'z' ? level[i] - 32 : level[i]);
        upper[i] = '\0';
        n = snprintf(line, sizeof(line), "[%s] [%s] %s - %s", when, upper,
                     peer != NULL ? peer : "server", message);
        o = n > 0 ? (size_t)n : 0;
        if (o > sizeof(line) - 2)
            o = sizeof(line) - 2;
        /* One line per event, whatever the message holds. */
        for (size_t j = 0; j < o; j++) {
            if (line[j] == '\n' || line[j] == '\r')
                line[j] = ' ';
        }
    }
    line[o++] = '\n';
    (void)mtls__log_write(&srv->system_log, line, o, NULL); /* nowhere left to say it */
}

void mtls__syslogf(const mtls_server *srv, const char *level, const char *event, const char *fmt,
                   ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mtls__syslog(srv, level, NULL, event, msg, NULL);
}
