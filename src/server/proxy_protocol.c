/*
 * The PROXY protocol v2 header (HAProxy's doc/proxy-protocol.txt, section
 * 2.2), read before the TLS handshake when `mtls serve --proxy-protocol` is
 * on. The header is 16 fixed bytes (a 12-byte signature, version and
 * command, address family and transport, the length of the rest), then the
 * addresses and optional TLVs.
 *
 * The reader takes exactly the header's bytes from the socket (first the
 * fixed part, then as many as its length field says), so what follows is
 * left in the kernel for OpenSSL to read. It may arrive in any number of
 * pieces; a hostile peer is bounded by MTLS__PROXY_HEADER_MAX and by the
 * handshake timeout the worker runs from the accept.
 *
 * What is accepted: version 2 only; the LOCAL command (a balancer's health
 * check: the connection's own address stands, whatever follows); the PROXY
 * command with TCP over IPv4 or IPv6 (the source address and port become
 * the connection's peer); the PROXY command with another valid family or
 * transport (UNSPEC, UDP, AF_UNIX) falls back to the connection's own
 * address, as the specification allows. TLVs are checked for form (each
 * fits in the header) and otherwise ignored: none of them (the balancer's
 * view of TLS, a CRC32C) says anything this server trusts more than its own
 * handshake.
 */
#include "proxy_protocol.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

enum { CMD_LOCAL = 0, CMD_PROXY = 1 };
enum { FAM_UNSPEC = 0, FAM_INET = 1, FAM_INET6 = 2, FAM_UNIX = 3 };
enum { TRANSPORT_UNSPEC = 0, TRANSPORT_STREAM = 1, TRANSPORT_DGRAM = 2 };

static size_t be16(const uint8_t *p)
{
    return (size_t)p[0] << 8 | p[1];
}

/* "16 03 01 02 00": the first bytes, for a sentence about what came instead. */
static void first_bytes(const uint8_t *buf, size_t have, char *out, size_t size)
{
    size_t o = 0;

    out[0] = '\0';
    for (size_t i = 0; i < have && i < 8 && o + 4 <= size; i++)
        o += (size_t)snprintf(out + o, size - o, i == 0 ? "%02x" : " %02x", buf[i]);
}

/* The signature differs at byte at: says what the connection looks like instead. */
static void not_a_header(const uint8_t *buf, size_t have, size_t at, char *why, size_t size)
{
    static const char v1[] = "PROXY ";
    char hex[32];
    size_t v1_len = have < sizeof(v1) - 1 ? have : sizeof(v1) - 1;

    first_bytes(buf, have, hex, sizeof(hex));
    if (at > 0)
        snprintf(why, size,
                 "the PROXY protocol v2 signature is wrong at byte %zu (first bytes: %s)", at + 1,
                 hex);
    else if (memcmp(buf, v1, v1_len) == 0)
        snprintf(why, size,
                 "it starts like a PROXY protocol v1 (text) header; only v2 is accepted "
                 "(HAProxy: send-proxy-v2)");
    else if (buf[0] == 0x16)
        snprintf(why, size,
                 "it starts with a TLS handshake, not a PROXY protocol v2 header (a client "
                 "connecting directly, not through the balancer?)");
    else
        snprintf(why, size, "it does not start with a PROXY protocol v2 header (first bytes: %s)",
                 hex);
}

long mtls__proxy_need(const uint8_t *buf, size_t have, char *why, size_t size)
{
    size_t sig = have < sizeof(signature) ? have : sizeof(signature);
    size_t body;

    for (size_t i = 0; i < sig; i++) {
        if (buf[i] != signature[i]) {
            not_a_header(buf, have, i, why, size);
            return -1;
        }
    }
    if (have > 12 && buf[12] >> 4 != 2) {
        snprintf(why, size, "PROXY protocol version %u; only version 2 is accepted",
                 (unsigned)(buf[12] >> 4));
        return -1;
    }
    if (have > 12 && (buf[12] & 0x0F) > CMD_PROXY) {
        snprintf(why, size, "unknown PROXY protocol command %u (0 LOCAL and 1 PROXY exist)",
                 (unsigned)(buf[12] & 0x0F));
        return -1;
    }
    /* The family is ignored with LOCAL (the specification says so). */
    if (have > 13 && (buf[12] & 0x0F) == CMD_PROXY &&
        (buf[13] >> 4 > FAM_UNIX || (buf[13] & 0x0F) > TRANSPORT_DGRAM)) {
        snprintf(why, size, "unknown PROXY protocol address family and transport 0x%02x",
                 (unsigned)buf[13]);
        return -1;
    }
    if (have < MTLS__PROXY_FIXED)
        return (long)(MTLS__PROXY_FIXED - have);
    body = be16(buf + 14);
    if (body > MTLS__PROXY_BODY_MAX) {
        snprintf(why, size,
                 "PROXY protocol header of %zu bytes after its first 16; at most %d are accepted",
                 body, MTLS__PROXY_BODY_MAX);
        return -1;
    }
    if (have >= MTLS__PROXY_FIXED + body)
        return 0;
    return (long)(MTLS__PROXY_FIXED + body - have);
}

/* The TLVs of body[0..len): each must fit. */
static int check_tlvs(const uint8_t *tlv, size_t len, char *why, size_t size)
{
    size_t off = 0;

    while (off < len) {
        size_t value;

        if (len - off < 3) {
            snprintf(why, size, "PROXY protocol header ends with %zu stray byte(s) after its TLVs",
                     len - off);
            return -1;
        }
        value = be16(tlv + off + 1);
        if (value > len - off - 3) {
            snprintf(why, size,
                     "PROXY protocol TLV of type 0x%02x says %zu bytes, but the header has %zu "
                     "left",
                     (unsigned)tlv[off], value, len - off - 3);
            return -1;
        }
        off += 3 + value;
    }
    return 0;
}

int mtls__proxy_parse(const uint8_t *buf, size_t len, struct mtls__proxy_header *hdr, char *why,
                      size_t size)
{
    static const char *const family_name[] = {"unspecified", "IPv4", "IPv6", "AF_UNIX"};
    static const size_t block[] = {0, 12, 36, 216}; /* addresses (and ports) per family */
    const uint8_t *body = buf + MTLS__PROXY_FIXED;
    unsigned family, transport;
    size_t body_len;

    long need = mtls__proxy_need(buf, len, why, size);

    memset(hdr, 0, sizeof(*hdr));
    if (need < 0)
        return -1;
    if (need > 0 || len != MTLS__PROXY_FIXED + be16(buf + 14)) {
        snprintf(why, size, "PROXY protocol header of %zu bytes is %s", len,
                 need > 0 ? "cut short" : "followed by more bytes than its length says");
        return -1;
    }
    body_len = len - MTLS__PROXY_FIXED;
    hdr->len = len;
    hdr->local = 1;
    if ((buf[12] & 0x0F) == CMD_LOCAL)
        return 0;
    family = buf[13] >> 4;
    transport = buf[13] & 0x0F;
    /* Without a family or a transport, nothing says where the addresses end. */
    if (family == FAM_UNSPEC || transport == TRANSPORT_UNSPEC)
        return 0;
    if (body_len < block[family]) {
        snprintf(why, size,
                 "PROXY protocol header too short for its %s addresses: %zu bytes, %zu needed",
                 family_name[family], body_len, block[family]);
        return -1;
    }
    if (check_tlvs(body + block[family], body_len - block[family], why, size) != 0)
        return -1;
    if (transport != TRANSPORT_STREAM)
        return 0;
    if (family == FAM_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&hdr->source;

        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, body, 4);
        memcpy(&in->sin_port, body + 8, 2); /* both in network order */
        hdr->local = 0;
    } else if (family == FAM_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&hdr->source;

        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, body, 16);
        memcpy(&in6->sin6_port, body + 32, 2);
        hdr->local = 0;
    }
    return 0;
}

int mtls__proxy_read(struct mtls__proxy_reader *r, int fd, struct mtls__proxy_header *hdr,
                     char *why, size_t size)
{
    for (;;) {
        long need = mtls__proxy_need(r->buf, r->have, why, size);
        ssize_t n;

        if (need < 0)
            return MTLS__PROXY_INVALID;
        if (need == 0)
            return mtls__proxy_parse(r->buf, r->have, hdr, why, size) == 0 ? MTLS__PROXY_DONE
                                                                           : MTLS__PROXY_INVALID;
        n = recv(fd, r->buf + r->have, (size_t)need, 0);
        if (n > 0) {
            r->have += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return MTLS__PROXY_AGAIN;
        if (n == 0 && r->have == 0)
            snprintf(why, size, "the connection was closed before a PROXY protocol header");
        else if (n == 0)
            snprintf(why, size,
                     "the connection was closed after %zu bytes of a PROXY protocol "
                     "header",
                     r->have);
        else
            snprintf(why, size, "cannot read the PROXY protocol header: %s", strerror(errno));
        return MTLS__PROXY_CLOSED;
    }
}
