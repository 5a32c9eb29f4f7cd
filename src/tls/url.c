/* https URLs taken apart, for every client of mtls (probe, bench, demo). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mtls/client.h"

static int url_parse(const char *p, const char *text, mtls_url *url, mtls_err *err);

/* 1 when the authority of p (after the scheme) carries "user[:password]@". */
static int has_userinfo(const char *p)
{
    size_t authority = strcspn(p, "/?#");
    const char *at = memchr(p, '@', authority);

    return at != NULL;
}

int mtls_url_parse(const char *text, mtls_url *url, mtls_err *err)
{
    char *copy = NULL;
    int rc;

    /* A fragment (#...) is the browser's, never sent to a server. */
    copy = strndup(text, strcspn(text, "#"));
    if (copy == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    rc = url_parse(copy, text, url, err);
    free(copy);
    return rc;
}

/* Parses p (text without its fragment; text is what messages quote). */
static int url_parse(const char *p, const char *text, mtls_url *url, mtls_err *err)
{
    const char *host, *host_end, *rest;
    size_t host_len;

    memset(url, 0, sizeof(*url));
    if (strncasecmp(p, "http://", 7) == 0)
        return mtls_err_set(err, MTLS_E_INVALID,
                            "'%s' is plain http: mtls speaks TLS only, use https://", text);
    if (strncasecmp(p, "https://", 8) == 0)
        p += 8;
    else if (strstr(p, "://") != NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "'%s' is not an https:// URL", text);
    /* Never quoted: the part before '@' may be a password. */
    if (has_userinfo(p))
        return mtls_err_set(err, MTLS_E_INVALID,
                            "the URL carries a user name or password before '@': mutual TLS "
                            "identifies you by --cert; leave them out of the URL");
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (host_end == NULL)
            return mtls_err_set(err, MTLS_E_INVALID, "'%s' has an unclosed '[' in its host", text);
        rest = host_end + 1;
    } else {
        host = p;
        host_end = host + strcspn(host, ":/?#");
        rest = host_end;
    }
    host_len = (size_t)(host_end - host);
    if (host_len == 0 || host_len >= sizeof(url->host))
        return mtls_err_set(err, MTLS_E_INVALID, "'%s' has %s host", text,
                            host_len == 0 ? "no" : "too long a");
    memcpy(url->host, host, host_len);
    url->host[host_len] = '\0';
    url->port = 443;
    if (*rest == ':') {
        char *end;
        long port;

        errno = 0;
        port = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || errno != 0 || port < 1 || port > 65535 ||
            (*end != '\0' && *end != '/' && *end != '?'))
            return mtls_err_set(err, MTLS_E_INVALID,
                                "'%s' has a bad port: it must be a number from 1 to 65535", text);
        url->port = (int)port;
        rest = end;
    } else if (*rest != '\0' && *rest != '/' && *rest != '?') {
        return mtls_err_set(err, MTLS_E_INVALID, "'%s' is not a URL I can read", text);
    }
    if (*rest == '\0') {
        snprintf(url->path, sizeof(url->path), "/");
    } else {
        for (const char *c = rest; *c != '\0'; c++) {
            if ((unsigned char)*c <= ' ' || *c == 0x7f)
                return mtls_err_set(err, MTLS_E_INVALID,
                                    "'%s' has a space or control character in its path", text);
        }
        if (snprintf(url->path, sizeof(url->path), "%s%s", *rest == '/' ? "" : "/", rest) >=
            (int)sizeof(url->path))
            return mtls_err_set(err, MTLS_E_INVALID, "'%s' has too long a path", text);
    }
    return 0;
}
