/*
 * The PROXY protocol v2 reader (src/server/proxy_protocol.c): valid headers
 * of every kind, each fed at every split point through a real socket (and
 * the bytes after the header left unread for TLS), and hostile ones: a
 * wrong signature at each byte, bad version, command, family and lengths,
 * truncated headers, TLVs that do not fit, v1 text and a ClientHello.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/proxy_protocol.h"

static const uint8_t SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* What a TLS client sends first: left in the socket after the header. */
static const uint8_t CLIENT_HELLO[] = {0x16, 0x03, 0x01, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o'};

struct hdr {
    uint8_t b[MTLS__PROXY_HEADER_MAX + 64];
    size_t len;
};

/* The fixed part: version/command byte, family/transport byte; the length is set by finish(). */
static void start(struct hdr *h, uint8_t ver_cmd, uint8_t fam)
{
    memcpy(h->b, SIG, 12);
    h->b[12] = ver_cmd;
    h->b[13] = fam;
    h->len = 16;
}

static void add(struct hdr *h, const void *p, size_t n)
{
    memcpy(h->b + h->len, p, n);
    h->len += n;
}

static void add_tlv(struct hdr *h, uint8_t type, const void *value, size_t n)
{
    uint8_t t[3] = {type, (uint8_t)(n >> 8), (uint8_t)n};

    add(h, t, 3);
    add(h, value, n);
}

static void finish(struct hdr *h)
{
    size_t body = h->len - 16;

    h->b[14] = (uint8_t)(body >> 8);
    h->b[15] = (uint8_t)body;
}

/* TCP over IPv4 from 192.0.2.7:51234 to 198.51.100.1:443. */
static void ipv4(struct hdr *h)
{
    uint8_t a[12] = {192, 0, 2, 7, 198, 51, 100, 1, 0xC8, 0x22, 0x01, 0xBB};

    start(h, 0x21, 0x11);
    add(h, a, sizeof(a));
    finish(h);
}

/* TCP over IPv6 from [2001:db8::7]:51234. */
static void ipv6(struct hdr *h)
{
    uint8_t a[36] = {0};

    inet_pton(AF_INET6, "2001:db8::7", a);
    inet_pton(AF_INET6, "2001:db8::1", a + 16);
    a[32] = 0xC8;
    a[33] = 0x22;
    a[35] = 0xBB;
    a[34] = 0x01;
    start(h, 0x21, 0x21);
    add(h, a, sizeof(a));
    finish(h);
}

static void ipv4_with_tlvs(struct hdr *h)
{
    uint8_t a[12] = {192, 0, 2, 7, 198, 51, 100, 1, 0xC8, 0x22, 0x01, 0xBB};
    /* PP2_TYPE_SSL: client flags, verify, then a sub-TLV (version "TLSv1.3"). */
    uint8_t ssl[5 + 3 + 7] = {0x01, 0, 0, 0, 0, 0x21, 0, 7, 'T', 'L', 'S', 'v', '1', '.', '3'};

    start(h, 0x21, 0x11);
    add(h, a, sizeof(a));
    add_tlv(h, 0x04, "", 0);             /* NOOP, empty */
    add_tlv(h, 0x05, "unique-id-1", 11); /* UNIQUE_ID */
    add_tlv(h, 0x20, ssl, sizeof(ssl));
    add_tlv(h, 0x02, "localhost", 9); /* AUTHORITY */
    finish(h);
}

static void local_cmd(struct hdr *h)
{
    start(h, 0x20, 0x00);
    finish(h);
}

static int parse(const struct hdr *h, struct mtls__proxy_header *out, char *why)
{
    return mtls__proxy_parse(h->b, h->len, out, why, 256);
}

static void check_source(const struct mtls__proxy_header *p, const char *addr, int port)
{
    char text[64];

    cr_assert_eq(p->local, 0);
    if (p->source.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&p->source;

        inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
        cr_assert_eq(ntohs(in->sin_port), port);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&p->source;

        cr_assert_eq(p->source.ss_family, AF_INET6);
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
        cr_assert_eq(ntohs(in6->sin6_port), port);
    }
    cr_assert_str_eq(text, addr);
}

Test(proxy_protocol, ipv4_and_ipv6)
{
    struct hdr h;
    struct mtls__proxy_header p;
    char why[256] = "";

    ipv4(&h);
    cr_assert_eq(mtls__proxy_need(h.b, h.len, why, sizeof(why)), 0);
    cr_assert_eq(parse(&h, &p, why), 0, "%s", why);
    cr_assert_eq(p.len, 28);
    check_source(&p, "192.0.2.7", 51234);

    ipv6(&h);
    cr_assert_eq(parse(&h, &p, why), 0, "%s", why);
    cr_assert_eq(p.len, 52);
    check_source(&p, "2001:db8::7", 51234);

    ipv4_with_tlvs(&h);
    cr_assert_eq(parse(&h, &p, why), 0, "%s", why);
    cr_assert_eq(p.len, h.len);
    check_source(&p, "192.0.2.7", 51234);
}

Test(proxy_protocol, local_and_fallbacks_keep_the_connection_address)
{
    struct hdr h;
    struct mtls__proxy_header p;
    char why[256] = "";
    uint8_t junk[216];

    memset(junk, 0xAB, sizeof(junk));
    local_cmd(&h);
    cr_assert_eq(parse(&h, &p, why), 0, "%s", why);
    cr_assert_eq(p.local, 1);
    cr_assert_eq(p.len, 16);

    /* LOCAL with an address block (must be skipped) and a family that is ignored. */
    start(&h, 0x20, 0xFF);
    add(&h, junk, 12);
    finish(&h);
    cr_assert_eq(parse(&h, &p, why), 0, "%s", why);
    cr_assert_eq(p.local, 1);
    cr_assert_eq(p.len, 28);

    /* PROXY with UNSPEC, UDP over IPv4, UNIX stream: valid, no TCP address to use. */
    start(&h, 0x21, 0x00);
    finish(&h);
    cr_assert_eq(parse(&h, &p, why), 0, "%s", why);
    cr_assert_eq(p.local, 1);
    start(&h, 0x21, 0x12);
    add(&h, junk, 12);
    finish(&h);
    cr_assert_eq(parse(&h, &p, why), 0, "%s", why);
    cr_assert_eq(p.local, 1);
    start(&h, 0x21, 0x31);
    add(&h, junk, 216);
    finish(&h);
    cr_assert_eq(parse(&h, &p, why), 0, "%s", why);
    cr_assert_eq(p.local, 1);
}

Test(proxy_protocol, need_counts_down_over_every_prefix)
{
    struct hdr h;
    char why[256] = "";

    ipv4_with_tlvs(&h);
    for (size_t k = 0; k < h.len; k++) {
        long want = k < 16 ? (long)(16 - k) : (long)(h.len - k);

        cr_assert_eq(mtls__proxy_need(h.b, k, why, sizeof(why)), want, "prefix %zu: %s", k, why);
    }
    cr_assert_eq(mtls__proxy_need(h.b, h.len, why, sizeof(why)), 0);
}

/* A non-blocking socket pair: [0] is read by the reader, [1] is the balancer. */
static void pair(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

static void send_all(int fd, const void *p, size_t n)
{
    cr_assert_eq(send(fd, p, n, 0), (ssize_t)n);
}

/* What is left to read on fd now. */
static size_t drain(int fd, uint8_t *out, size_t size)
{
    ssize_t n = recv(fd, out, size, 0);

    return n > 0 ? (size_t)n : 0;
}

/* The header split after k bytes, the rest sent with a ClientHello behind it. */
static void feed_split(const struct hdr *h, size_t k, const char *addr, int port)
{
    struct mtls__proxy_reader r = {0};
    struct mtls__proxy_header p;
    char why[256] = "";
    uint8_t rest[64];
    int sv[2];

    pair(sv);
    if (k > 0) {
        send_all(sv[1], h->b, k);
        cr_assert_eq(mtls__proxy_read(&r, sv[0], &p, why, sizeof(why)), MTLS__PROXY_AGAIN,
                     "split at %zu: %s", k, why);
        cr_assert_eq(r.have, k);
    }
    send_all(sv[1], h->b + k, h->len - k);
    send_all(sv[1], CLIENT_HELLO, sizeof(CLIENT_HELLO));
    cr_assert_eq(mtls__proxy_read(&r, sv[0], &p, why, sizeof(why)), MTLS__PROXY_DONE,
                 "split at %zu: %s", k, why);
    cr_assert_eq(p.len, h->len);
    if (addr != NULL)
        check_source(&p, addr, port);
    else
        cr_assert_eq(p.local, 1);
    /* Not one byte of the handshake was taken. */
    cr_assert_eq(drain(sv[0], rest, sizeof(rest)), sizeof(CLIENT_HELLO));
    cr_assert_eq(memcmp(rest, CLIENT_HELLO, sizeof(CLIENT_HELLO)), 0);
    close(sv[0]);
    close(sv[1]);
}

Test(proxy_protocol, every_split_point_through_a_socket)
{
    struct hdr h;

    ipv4(&h);
    for (size_t k = 0; k < h.len; k++)
        feed_split(&h, k, "192.0.2.7", 51234);
    ipv6(&h);
    for (size_t k = 0; k < h.len; k++)
        feed_split(&h, k, "2001:db8::7", 51234);
    ipv4_with_tlvs(&h);
    for (size_t k = 0; k < h.len; k++)
        feed_split(&h, k, "192.0.2.7", 51234);
    local_cmd(&h);
    for (size_t k = 0; k < h.len; k++)
        feed_split(&h, k, NULL, 0);
}

Test(proxy_protocol, one_byte_at_a_time)
{
    struct mtls__proxy_reader r = {0};
    struct mtls__proxy_header p;
    struct hdr h;
    char why[256] = "";
    int sv[2];

    ipv4_with_tlvs(&h);
    pair(sv);
    for (size_t i = 0; i < h.len; i++) {
        send_all(sv[1], h.b + i, 1);
        cr_assert_eq(mtls__proxy_read(&r, sv[0], &p, why, sizeof(why)),
                     i + 1 == h.len ? MTLS__PROXY_DONE : MTLS__PROXY_AGAIN, "byte %zu: %s", i, why);
    }
    check_source(&p, "192.0.2.7", 51234);
    close(sv[0]);
    close(sv[1]);
}

/* need() on b[0..len) refuses, and why contains text. */
static void refused_early(const uint8_t *b, size_t len, const char *text)
{
    char why[256] = "";

    cr_assert_eq(mtls__proxy_need(b, len, why, sizeof(why)), -1, "%zu bytes accepted", len);
    cr_assert(strstr(why, text) != NULL, "'%s' lacks '%s'", why, text);
}

Test(proxy_protocol, wrong_signature_at_every_byte)
{
    struct hdr h;

    ipv4(&h);
    for (size_t i = 0; i < 12; i++) {
        struct hdr bad = h;

        bad.b[i] ^= 0x40;
        /* Refused as soon as the wrong byte is in, before any later byte. */
        for (size_t have = i + 1; have <= bad.len; have++)
            refused_early(bad.b, have, i == 0 ? "does not start" : "signature is wrong");
    }
}

Test(proxy_protocol, what_came_instead)
{
    static const char v1[] = "PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\n";
    static const char http[] = "GET / HTTP/1.1\r\n";

    refused_early(CLIENT_HELLO, 1, "TLS handshake");
    refused_early(CLIENT_HELLO, sizeof(CLIENT_HELLO), "TLS handshake");
    refused_early((const uint8_t *)v1, 1, "v1 (text)");
    refused_early((const uint8_t *)v1, sizeof(v1) - 1, "only v2 is accepted");
    refused_early((const uint8_t *)http, sizeof(http) - 1, "first bytes: 47 45 54 20");
}

Test(proxy_protocol, bad_version_command_family)
{
    struct hdr h;
    char why[256];

    ipv4(&h);
    for (unsigned v = 0; v < 16; v++) {
        if (v == 2)
            continue;
        h.b[12] = (uint8_t)(v << 4 | 1);
        refused_early(h.b, 13, "only version 2");
    }
    for (unsigned c = 2; c < 16; c++) {
        h.b[12] = (uint8_t)(0x20 | c);
        refused_early(h.b, 13, "unknown PROXY protocol command");
    }
    h.b[12] = 0x21;
    for (unsigned f = 0; f < 256; f++) {
        h.b[13] = (uint8_t)f;
        if (f >> 4 <= 3 && (f & 0x0F) <= 2)
            cr_assert_geq(mtls__proxy_need(h.b, 14, why, sizeof(why)), 0, "0x%02x", f);
        else
            refused_early(h.b, 14, "address family and transport");
    }
}

Test(proxy_protocol, lengths)
{
    struct hdr h;
    struct mtls__proxy_header p;
    char why[256] = "";

    /* The most accepted: a NOOP TLV filling the body to MTLS__PROXY_BODY_MAX. */
    static const uint8_t padding[MTLS__PROXY_BODY_MAX];

    ipv4(&h);
    add_tlv(&h, 0x04, padding, MTLS__PROXY_BODY_MAX - 12 - 3);
    finish(&h);
    cr_assert_eq(h.len, MTLS__PROXY_HEADER_MAX);
    cr_assert_eq(parse(&h, &p, why), 0, "%s", why);
    /* One more byte is refused from the length field alone. */
    h.b[14] = (uint8_t)((MTLS__PROXY_BODY_MAX + 1) >> 8);
    h.b[15] = (uint8_t)(MTLS__PROXY_BODY_MAX + 1);
    refused_early(h.b, 16, "at most 1024");
    h.b[14] = h.b[15] = 0xFF;
    refused_early(h.b, 16, "65535 bytes");

    /* Too short for the addresses of the family. */
    start(&h, 0x21, 0x11);
    add(&h, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    finish(&h);
    cr_assert_eq(parse(&h, &p, why), -1);
    cr_assert(strstr(why, "IPv4 addresses: 8 bytes, 12 needed") != NULL, "%s", why);
    start(&h, 0x21, 0x21);
    add(&h, "\x01\x02\x03\x04\x05\x06\x07\x08\x01\x02\x03\x04", 12);
    finish(&h);
    cr_assert_eq(parse(&h, &p, why), -1);
    cr_assert(strstr(why, "IPv6 addresses: 12 bytes, 36 needed") != NULL, "%s", why);
    start(&h, 0x21, 0x31);
    finish(&h);
    cr_assert_eq(parse(&h, &p, why), -1);

    /* parse() wants exactly one whole header. */
    ipv4(&h);
    cr_assert_eq(mtls__proxy_parse(h.b, h.len - 1, &p, why, sizeof(why)), -1);
    cr_assert(strstr(why, "cut short") != NULL, "%s", why);
    cr_assert_eq(mtls__proxy_parse(h.b, 10, &p, why, sizeof(why)), -1);
    cr_assert_eq(mtls__proxy_parse(h.b, h.len + 1, &p, why, sizeof(why)), -1);
    cr_assert(strstr(why, "more bytes than its length says") != NULL, "%s", why);
}

Test(proxy_protocol, tlvs_that_do_not_fit)
{
    struct hdr h;
    struct mtls__proxy_header p;
    char why[256] = "";

    /* A TLV whose length runs past the header. */
    ipv4(&h);
    add(&h,
        "\x05\x00\x09"
        "abc",
        6);
    finish(&h);
    cr_assert_eq(parse(&h, &p, why), -1);
    cr_assert(strstr(why, "type 0x05 says 9 bytes, but the header has 3 left") != NULL, "%s", why);
    /* One or two stray bytes where a TLV should start. */
    for (size_t stray = 1; stray <= 2; stray++) {
        ipv4(&h);
        add_tlv(&h, 0x04, "xy", 2);
        add(&h, "\x04\x00", stray);
        finish(&h);
        cr_assert_eq(parse(&h, &p, why), -1);
        cr_assert(strstr(why, "stray byte") != NULL, "%s", why);
    }
    /* The maximal TLV length field. */
    ipv4(&h);
    add(&h, "\x20\xFF\xFF", 3);
    finish(&h);
    cr_assert_eq(parse(&h, &p, why), -1);
}

Test(proxy_protocol, closed_or_invalid_through_a_socket)
{
    struct mtls__proxy_reader r = {0};
    struct mtls__proxy_header p;
    struct hdr h;
    char why[256] = "";
    int sv[2];

    /* Closed before anything. */
    pair(sv);
    close(sv[1]);
    cr_assert_eq(mtls__proxy_read(&r, sv[0], &p, why, sizeof(why)), MTLS__PROXY_CLOSED);
    cr_assert(strstr(why, "closed before a PROXY protocol header") != NULL, "%s", why);
    close(sv[0]);

    /* Truncated: closed after part of a header. */
    ipv4(&h);
    for (size_t k = 1; k < h.len; k++) {
        struct mtls__proxy_reader rk = {0};
        char expect[80];

        pair(sv);
        send_all(sv[1], h.b, k);
        close(sv[1]);
        cr_assert_eq(mtls__proxy_read(&rk, sv[0], &p, why, sizeof(why)), MTLS__PROXY_CLOSED);
        snprintf(expect, sizeof(expect), "closed after %zu bytes", k);
        cr_assert(strstr(why, expect) != NULL, "%s", why);
        close(sv[0]);
    }

    /* A ClientHello: refused at once, without reading past what is needed. */
    memset(&r, 0, sizeof(r));
    pair(sv);
    send_all(sv[1], CLIENT_HELLO, sizeof(CLIENT_HELLO));
    cr_assert_eq(mtls__proxy_read(&r, sv[0], &p, why, sizeof(why)), MTLS__PROXY_INVALID);
    cr_assert(strstr(why, "TLS handshake") != NULL, "%s", why);
    close(sv[0]);
    close(sv[1]);
}
