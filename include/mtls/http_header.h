/*
 * mtls/http_header.h - one HTTP header line, shared by the request side
 * (mtls/http.h) and the response parser (mtls/http_response.h).
 */
#ifndef MTLS_HTTP_HEADER_H
#define MTLS_HTTP_HEADER_H

#include <stddef.h>

/**
 * One header line. The response parser's are NUL-terminated copies it owns;
 * a request's (mtls/http.h) are spans into the read buffer.
 */
typedef struct mtls_http_header {
    const char *name; /* as sent ("Content-Type") */
    size_t name_len;
    const char *value; /* without the surrounding blanks */
    size_t value_len;
} mtls_http_header;

#endif
