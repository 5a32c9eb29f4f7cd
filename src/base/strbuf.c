/* A growing byte string (mtls_strbuf): header blocks and lines built in pieces. */
#include <stdlib.h>
#include <string.h>

#include "mtls/base.h"

void mtls_strbuf_add(mtls_strbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *grown;

        while (cap < b->len + n + 1)
            cap *= 2;
        grown = realloc(b->p, cap);
        if (grown == NULL) {
            b->failed = 1;
            return;
        }
        b->p = grown;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void mtls_strbuf_str(mtls_strbuf *b, const char *s)
{
    mtls_strbuf_add(b, s, strlen(s));
}

void mtls_strbuf_release(mtls_strbuf *b)
{
    if (b == NULL)
        return;
    free(b->p);
    memset(b, 0, sizeof(*b));
}
