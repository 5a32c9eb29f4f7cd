/* Errors as values: a code and a one-line message for a person. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "mtls/base.h"

void mtls_err_clear(mtls_err *err)
{
    if (err == NULL)
        return;
    err->code = 0;
    err->msg[0] = '\0';
}

__attribute__((format(printf, 3, 0))) static void err_vset(mtls_err *err, int code, const char *fmt,
                                                           va_list ap)
{
    err->code = code;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

static void err_append(mtls_err *err, const char *text)
{
    size_t used = strlen(err->msg);

    if (used + 2 < sizeof(err->msg))
        snprintf(err->msg + used, sizeof(err->msg) - used, ": %s", text);
}

int mtls_err_set(mtls_err *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return code;
    va_start(ap, fmt);
    err_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int mtls_err_ssl(mtls_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    unsigned long e;
    char reason[256];

    /* The most recent entry is the most specific one. */
    e = ERR_peek_last_error();
    ERR_clear_error();
    if (err == NULL)
        return code;
    va_start(ap, fmt);
    err_vset(err, code, fmt, ap);
    va_end(ap);
    if (e != 0) {
        const char *r = ERR_reason_error_string(e);

        if (r != NULL)
            snprintf(reason, sizeof(reason), "%s", r);
        else
            ERR_error_string_n(e, reason, sizeof(reason));
        err_append(err, reason);
    }
    return code;
}

int mtls_err_sys(mtls_err *err, int code, int errnum, const char *fmt, ...)
{
    va_list ap;
    char reason[128];

    if (err == NULL)
        return code;
    va_start(ap, fmt);
    err_vset(err, code, fmt, ap);
    va_end(ap);
    /* git style: "cannot read 'x': is a directory", not "Is a directory". */
    snprintf(reason, sizeof(reason), "%s", strerror(errnum));
    reason[0] = (char)tolower((unsigned char)reason[0]);
    err_append(err, reason);
    return code;
}

void mtls_cleanse(void *p, size_t len)
{
    if (p != NULL && len > 0)
        OPENSSL_cleanse(p, len);
}

void mtls_free_secret(void *p, size_t len)
{
    mtls_cleanse(p, len);
    free(p);
}
