#include "grow.h"

#include <stdlib.h>

int mtls__http_grow(char **buf, size_t *cap, size_t need, size_t first, size_t max)
{
    size_t size = *cap ? *cap : first;
    char *grown;

    if (need <= *cap)
        return 0;
    while (size < need)
        size *= 2;
    if (size > max)
        size = max;
    grown = realloc(*buf, size);
    if (grown == NULL)
        return -1;
    *buf = grown;
    *cap = size;
    return 0;
}
