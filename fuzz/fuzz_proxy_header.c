/*
 * libFuzzer target for the PROXY protocol v2 reader of src/server
 * (proxy_protocol.c): the bytes after a 4-byte seed are what a balancer (or
 * anyone) sends first, fed in pieces whose sizes come from the seed. The
 * reader must never ask for more than fits its buffer, and a header read in
 * pieces must give the same verdict and address as the same bytes parsed at
 * once.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/proxy_protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mtls__proxy_reader r;
    struct mtls__proxy_header pieces, whole;
    char why[256], why_whole[256];
    uint32_t rng;
    size_t off = 4;
    long need;

    if (size < 4)
        return 0;
    memcpy(&rng, data, 4);
    r.have = 0;
    for (;;) {
        size_t n;

        why[0] = '\0';
        need = mtls__proxy_need(r.buf, r.have, why, sizeof(why));
        if (need < 0) {
            if (why[0] == '\0')
                abort(); /* a refusal always says why */
            return 0;
        }
        if (need == 0)
            break;
        if ((size_t)need > sizeof(r.buf) - r.have)
            abort();
        rng = rng * 1103515245u + 12345u;
        n = 1 + (rng >> 16) % (size_t)need;
        if (n > size - off)
            n = size - off;
        if (n == 0)
            return 0; /* truncated: the worker waits, then times out */
        memcpy(r.buf + r.have, data + off, n);
        r.have += n;
        off += n;
    }
    /* Whole: the verdict must not depend on how the bytes came. */
    if (mtls__proxy_parse(r.buf, r.have, &pieces, why, sizeof(why)) !=
        mtls__proxy_parse(data + 4, r.have, &whole, why_whole, sizeof(why_whole)))
        abort();
    if (pieces.len != whole.len || pieces.local != whole.local ||
        memcmp(&pieces.source, &whole.source, sizeof(whole.source)) != 0)
        abort();
    if (pieces.len != 0 && (pieces.len != r.have || pieces.len > MTLS__PROXY_HEADER_MAX))
        abort();
    return 0;
}
