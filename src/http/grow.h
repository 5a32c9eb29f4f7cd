/* The one buffer-growing helper of src/http (requests, responses, HTTP/2). */
#ifndef MTLS_HTTP_GROW_H
#define MTLS_HTTP_GROW_H

#include <stddef.h>

/**
 * Makes *buf (capacity *cap) hold at least need bytes: doubling from first,
 * never beyond max (need <= max; SIZE_MAX: no bound). Returns 0, or -1 when
 * out of memory (*buf and *cap unchanged).
 */
int mtls__http_grow(char **buf, size_t *cap, size_t need, size_t first, size_t max);

#endif
