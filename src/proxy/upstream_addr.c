/* The upstream's address: "http://HOST:PORT[/PREFIX]" or "unix:/PATH", resolved once at start. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "proxy.h"

static int bad(mtls_err *err, const char *url, const char *why)
{
    return mtls_err_set(err, MTLS_E_INVALID,
                        "upstream '%s': %s (use http://HOST:PORT[/PREFIX] or unix:/PATH)", url,
                        why);
}

int mtls__upstream_parse(const char *url, mtls_upstream_addr *out, mtls_err *err)
{
    struct addrinfo hints, *res = NULL;
    char host[256], port[8];
    const char *p, *host_end, *slash;
    size_t host_len;
    int rc;

    memset(out, 0, sizeof(*out));
    if (strncmp(url, "unix:", 5) == 0) {
        p = url + 5;
        if (p[0] != '/')
            return bad(err, url, "a unix socket needs an absolute path");
        if (strlen(p) >= sizeof(out->path))
            return bad(err, url, "the socket path is too long");
        out->is_unix = 1;
        snprintf(out->path, sizeof(out->path), "%s", p);
        snprintf(out->host_header, sizeof(out->host_header), "localhost");
        snprintf(out->shown, sizeof(out->shown), "unix:%s", p);
        return 0;
    }
    if (strncmp(url, "http://", 7) != 0)
        return bad(err, url,
                   strncmp(url, "https://", 8) == 0 ? "https to the upstream is not supported"
                                                    : "unknown scheme");
    p = url + 7;
    slash = strchr(p, '/');
    if (p[0] == '[') {
        host_end = strchr(p, ']');
        if (host_end == NULL || (slash != NULL && host_end > slash))
            return bad(err, url, "an IPv6 address needs its closing ']'");
        host_len = (size_t)(host_end - p - 1);
        memcpy(host, p + 1, host_len < sizeof(host) ? host_len : 0);
        host_end++;
    } else {
        host_end = p + strcspn(p, ":/");
        host_len = (size_t)(host_end - p);
        if (host_len < sizeof(host))
            memcpy(host, p, host_len);
    }
    if (host_len == 0 || host_len >= sizeof(host))
        return bad(err, url, "the host is missing or too long");
    host[host_len] = '\0';
    if (*host_end != ':')
        return bad(err, url, "the port is missing");
    {
        char *end;
        long v = strtol(host_end + 1, &end, 10);

        if (end == host_end + 1 || (*end != '\0' && *end != '/') || v < 1 || v > 65535)
            return bad(err, url, "the port must be a number from 1 to 65535");
        snprintf(port, sizeof(port), "%ld", v);
        slash = end;
    }
    if (*slash == '/') {
        size_t n = strlen(slash);

        if (strpbrk(slash, "?# \t\r\n") != NULL)
            return bad(err, url, "the prefix must be a plain path");
        while (n > 0 && slash[n - 1] == '/')
            n--;
        if (n >= sizeof(out->prefix))
            return bad(err, url, "the prefix is too long");
        memcpy(out->prefix, slash, n);
        out->prefix[n] = '\0';
        out->prefix_len = n;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "upstream '%s': cannot resolve '%s': %s", url,
                            host, gai_strerror(rc));
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->ss_len = res->ai_addrlen;
    freeaddrinfo(res);
    if (strchr(host, ':') != NULL) {
        snprintf(out->host_header, sizeof(out->host_header), "[%s]:%s", host, port);
    } else {
        snprintf(out->host_header, sizeof(out->host_header), "%s:%s", host, port);
    }
    snprintf(out->shown, sizeof(out->shown), "%.300s%.90s", out->host_header, out->prefix);
    return 0;
}
