/*
 * The client stream of the HTTP fuzz targets (fuzz_http_request.c,
 * fuzz_h2.c): the first three bytes of an input seed a small random
 * generator, the fourth holds the target's flags, and the rest is what the
 * client sends, delivered in reads of random sizes (sometimes nothing yet,
 * sometimes a whole buffer) with writes that sometimes block.
 */
#ifndef MTLS_FUZZ_IO_H
#define MTLS_FUZZ_IO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mtls/http.h"

struct fuzz_io {
    const uint8_t *data;
    size_t len, off;
    uint32_t rng;
};

/* The next random number (15 bits) of io's generator. */
static inline uint32_t fuzz_io_next(struct fuzz_io *io)
{
    io->rng = io->rng * 1103515245u + 12345u;
    return io->rng >> 16;
}

/* Sets io up from a fuzz input of at least 4 bytes (see above). */
static inline void fuzz_io_init(struct fuzz_io *io, const uint8_t *data, size_t size)
{
    io->rng = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16;
    io->data = data + 4;
    io->len = size - 4;
    io->off = 0;
}

/*
 * A read into buf (len bytes of room): MTLS_IO_EOF at the end of the
 * stream, MTLS_IO_WANT_READ one time in eight, else 1 to max_chunk bytes
 * or, one time in four, as many as fit.
 */
static inline long fuzz_io_read(struct fuzz_io *io, char *buf, size_t len, size_t max_chunk)
{
    size_t n;

    if (io->off >= io->len)
        return MTLS_IO_EOF;
    if (fuzz_io_next(io) % 8 == 0)
        return MTLS_IO_WANT_READ;
    n = 1 + fuzz_io_next(io) % max_chunk;
    if (fuzz_io_next(io) % 4 == 0)
        n = len;
    if (n > len)
        n = len;
    if (n > io->len - io->off)
        n = io->len - io->off;
    memcpy(buf, io->data + io->off, n);
    io->off += n;
    return (long)n;
}

/* 1 when this write is to block (MTLS_IO_WANT_WRITE), one time in five. */
static inline int fuzz_io_write_blocks(struct fuzz_io *io)
{
    return fuzz_io_next(io) % 5 == 0;
}

#endif
