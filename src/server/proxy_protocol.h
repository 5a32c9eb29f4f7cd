/*
 * The PROXY protocol, version 2 (HAProxy's doc/proxy-protocol.txt): the
 * binary header a TCP balancer (HAProxy's send-proxy-v2, cloud load
 * balancers) sends before the client's first byte, naming the client's
 * address. Internal to src/server: `mtls serve --proxy-protocol` reads it
 * before the TLS handshake.
 *
 * Version 1 (a text line) is not accepted: it is recognised only to say so.
 */
#ifndef MTLS_SERVER_PROXY_PROTOCOL_H
#define MTLS_SERVER_PROXY_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/** The fixed part: 12-byte signature, version and command, family, length. */
#define MTLS__PROXY_FIXED 16

/** The most bytes after the fixed part we accept (addresses and TLVs). */
#define MTLS__PROXY_BODY_MAX 1024

/** A whole header is never longer than this. */
#define MTLS__PROXY_HEADER_MAX (MTLS__PROXY_FIXED + MTLS__PROXY_BODY_MAX)

/** What a whole, valid header says. */
struct mtls__proxy_header {
    /*
     * 1: the connection's own address stands (a LOCAL command, as in
     * health checks; or a PROXY command for a family or transport without
     * a TCP address, which the specification lets a receiver treat so).
     */
    int local;
    struct sockaddr_storage source; /* the client's address and port, when !local */
    size_t len;                     /* bytes of the whole header */
};

/**
 * How many bytes more the header that starts buf[0..have) needs to be whole:
 * > 0: that many (read no more than that: the TLS handshake follows it);
 * 0: it is whole (have is its length): call mtls__proxy_parse();
 * -1: it cannot be a valid header; why (size bytes) says what it is instead.
 * Refuses as early as it can: a TLS ClientHello at its first byte.
 */
long mtls__proxy_need(const uint8_t *buf, size_t have, char *why, size_t size);

/**
 * Parses a whole header of len bytes (mtls__proxy_need() returned 0) into
 * *hdr. Returns 0, or -1 with why saying what is wrong with it.
 */
int mtls__proxy_parse(const uint8_t *buf, size_t len, struct mtls__proxy_header *hdr, char *why,
                      size_t size);

/** A header being read from a socket, a piece at a time. */
struct mtls__proxy_reader {
    size_t have;
    uint8_t buf[MTLS__PROXY_HEADER_MAX];
};

enum {
    MTLS__PROXY_DONE = 0,    /* *hdr is filled; the socket is at the header's end */
    MTLS__PROXY_AGAIN = 1,   /* the socket has nothing more now: wait until it is readable */
    MTLS__PROXY_INVALID = 2, /* not a valid v2 header (why says what) */
    MTLS__PROXY_CLOSED = 3,  /* the peer closed or reset the connection first (why says when) */
};

/**
 * Reads from the non-blocking socket fd, never past the header's last byte,
 * until the header is whole (then parses it into *hdr) or the socket has
 * nothing more. Returns one of MTLS__PROXY_*; why is set for INVALID and
 * CLOSED.
 */
int mtls__proxy_read(struct mtls__proxy_reader *r, int fd, struct mtls__proxy_header *hdr,
                     char *why, size_t size);

#endif
