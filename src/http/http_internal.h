/* Internal helpers of src/http, shared between its files. */
#ifndef MTLS_HTTP_INTERNAL_H
#define MTLS_HTTP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mtls/http.h"

/** Writes v in decimal (at most 20 digits, no NUL) at out; returns the digit count. */
size_t mtls__http_u64(char *out, uint64_t v);

/** The IMF-fixdate of this second ("Thu, 26 Nov 2026 23:59:59 GMT"), cached per thread. */
const char *mtls__http_date(void);

/**
 * Formats the access-log line of c's current request (combined or JSON, as
 * c->cfg says) into buf, ending in '\n'. parsed is 0 when the request was
 * refused before it was complete. Returns the length, 0 when buf is too small.
 */
size_t mtls__http_log_line(const mtls_http_conn *c, int status, int parsed, char *buf, size_t size);

/** The built-in route table (/test and /whoami) for configs that name none. */
const mtls_http_routes *mtls__http_builtin_routes(void);

#endif
