/*
 * Access-log lines (Apache/nginx "combined", or JSON) and the Date header.
 * Time strings are formatted once per second per thread, not per request.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <llhttp.h>

#include "http/http_conn.h"
#include "http_internal.h"
#include "mtls/http.h"

static _Thread_local time_t date_second = -1;
static _Thread_local char date_buf[40];
static _Thread_local time_t log_second = -1;
static _Thread_local char log_time_clf[40];
static _Thread_local char log_time_iso[32];

const char *mtls__http_date(void)
{
    time_t now = time(NULL);

    if (now != date_second) {
        struct tm tm;

        gmtime_r(&now, &tm);
        strftime(date_buf, sizeof(date_buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        date_second = now;
    }
    return date_buf;
}

static void log_times(void)
{
    time_t now = time(NULL);

    if (now != log_second) {
        struct tm tm;

        localtime_r(&now, &tm);
        strftime(log_time_clf, sizeof(log_time_clf), "%d/%b/%Y:%H:%M:%S %z", &tm);
        gmtime_r(&now, &tm);
        strftime(log_time_iso, sizeof(log_time_iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
        log_second = now;
    }
}

/*
 * The length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0 when s[0] starts none.
 */
static size_t utf8_len(const unsigned char *s, size_t len)
{
    unsigned char b0 = s[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;

    if (b0 >= 0xc2 && b0 <= 0xdf)
        n = 2;
    else if (b0 >= 0xe0 && b0 <= 0xef)
        n = 3, lo = b0 == 0xe0 ? 0xa0 : 0x80, hi = b0 == 0xed ? 0x9f : 0xbf;
    else if (b0 >= 0xf0 && b0 <= 0xf4)
        n = 4, lo = b0 == 0xf0 ? 0x90 : 0x80, hi = b0 == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return n;
}

size_t mtls_json_escape(char *buf, size_t size, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;

    if (size == 0)
        return 0;
    for (size_t i = 0; i < len;) {
        unsigned char ch = u[i];
        const char *from = (const char *)u + i;
        char tmp[7];
        size_t n = 1, in = 1;

        if (ch == '"' || ch == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)ch;
            from = tmp;
            n = 2;
        } else if (ch >= 0x80 && (in = utf8_len(u + i, len - i)) > 0) {
            n = in; /* well-formed UTF-8 goes through as it is */
        } else if (ch < 0x20 || ch >= 0x7f) {
            /* A control character, or a byte that is not UTF-8: its value as \u00XX. */
            memcpy(tmp, "\\u00", 4);
            tmp[4] = hex[ch >> 4];
            tmp[5] = hex[ch & 15];
            from = tmp;
            n = 6;
            in = 1;
        }
        if (o + n >= size)
            break;
        memcpy(buf + o, from, n);
        o += n;
        i += in;
    }
    buf[o] = '\0';
    return o;
}

/*
 * Escapes a value for a combined-log field as nginx does: '"', '\' and bytes
 * outside printable ASCII become \xHH. With no_space (the user field, which
 * log parsers split on blanks) ", " between name parts becomes "," and any
 * other space \x20. An empty value is "-".
 */
static size_t log_escape(char *buf, size_t size, const char *s, size_t len, int no_space)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    if (s == NULL || len == 0)
        s = "-", len = 1;
    for (size_t i = 0; i < len && o + 5 < size; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (no_space && ch == ' ' && i > 0 && s[i - 1] == ',')
            continue;
        if (ch == '"' || ch == '\\' || ch < 0x20 || ch >= 0x7f || (no_space && ch == ' ')) {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[ch >> 4];
            buf[o++] = hex[ch & 15];
        } else {
            buf[o++] = (char)ch;
        }
    }
    buf[o] = '\0';
    return o;
}

/* The target's bytes the line shows (c->url_at, when url_len > 0). */
static size_t kept_url_len(const mtls_http_conn *c)
{
    if (c->url_at == NULL)
        return 0;
    return c->url_len < MTLS_HTTP_URL_KEEP ? c->url_len : MTLS_HTTP_URL_KEEP;
}

/* A bounded line being built without printf (the access log runs per request). */
struct line {
    char *p, *end; /* end leaves room for the final NUL */
};

static void add(struct line *l, const char *s, size_t n)
{
    size_t room = (size_t)(l->end - l->p);

    if (n > room)
        n = room;
    memcpy(l->p, s, n);
    l->p += n;
}

#define ADD_LIT(l, lit) add((l), (lit), sizeof(lit) - 1)

static void add_u64(struct line *l, uint64_t v)
{
    char digits[20];

    /* Straight into the line when it has room for any number (the usual case). */
    if (l->end - l->p >= (ptrdiff_t)sizeof(digits))
        l->p += mtls__http_u64(l->p, v);
    else
        add(l, digits, mtls__http_u64(digits, v));
}

/* log_escape() straight into the line. */
static void add_escaped(struct line *l, const char *s, size_t len, int no_space)
{
    size_t room = (size_t)(l->end - l->p);

    l->p += log_escape(l->p, room + 1, s, len, no_space);
}

static size_t text_line(const mtls_http_conn *c, int status, int parsed, char *buf, size_t size)
{
    const mtls_http_peer *peer = c->peer;
    const char *user = peer != NULL ? peer->user : NULL;
    const char *addr = peer != NULL && peer->addr != NULL ? peer->addr : "-";
    struct line l = {buf, buf + size - 1};

    add(&l, addr, strlen(addr));
    ADD_LIT(&l, " - ");
    add_escaped(&l, user, user ? strlen(user) : 0, 1);
    ADD_LIT(&l, " [");
    add(&l, log_time_clf, strlen(log_time_clf));
    ADD_LIT(&l, "] \"");
    if (c->url_len > 0) {
        const char *method = llhttp_method_name((llhttp_method_t)c->parser.method);

        add(&l, method, strlen(method));
        ADD_LIT(&l, " ");
        add_escaped(&l, c->url_at ? c->url_at : "", kept_url_len(c), 0);
        if (c->url_len > MTLS_HTTP_URL_KEEP)
            ADD_LIT(&l, "...");
        if (parsed || c->parser.http_major > 0) {
            ADD_LIT(&l, " HTTP/");
            add_u64(&l, c->parser.http_major);
            ADD_LIT(&l, ".");
            add_u64(&l, c->parser.http_minor);
        }
    } else {
        ADD_LIT(&l, "-");
    }
    ADD_LIT(&l, "\" ");
    add_u64(&l, (uint64_t)status);
    ADD_LIT(&l, " ");
    if (c->bytes_out > 0)
        add_u64(&l, c->bytes_out);
    else
        ADD_LIT(&l, "-");
    ADD_LIT(&l, " \"");
    add_escaped(&l, c->referer, c->referer_len, 0);
    ADD_LIT(&l, "\" \"");
    add_escaped(&l, c->user_agent, c->user_agent_len, 0);
    ADD_LIT(&l, "\"");
    if (c->proxied) {
        /* After the combined fields, as nginx users add $upstream_status $upstream_response_time.
         */
        uint64_t ms = c->upstream_ms % 1000;
        char frac[3] = {(char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10)};

        ADD_LIT(&l, " upstream=");
        if (c->upstream_status > 0)
            add_u64(&l, (uint64_t)c->upstream_status);
        else
            ADD_LIT(&l, "-");
        ADD_LIT(&l, " upstream_time=");
        add_u64(&l, c->upstream_ms / 1000);
        ADD_LIT(&l, ".");
        add(&l, frac, 3);
    }
    ADD_LIT(&l, "\n");
    if (l.p >= l.end)
        return 0; /* cut short: no half line in the log */
    *l.p = '\0';
    return (size_t)(l.p - buf);
}

/* Appends "name":"escaped" or "name":null. */
static size_t json_field(char *buf, size_t size, size_t o, const char *name, const char *s,
                         size_t len)
{
    int n;

    if (o >= size)
        return o;
    if (s == NULL) {
        n = snprintf(buf + o, size - o, ",\"%s\":null", name);
    } else {
        char esc[MTLS_HTTP_URL_KEEP * 6 + 8];

        mtls_json_escape(esc, sizeof(esc), s, len);
        n = snprintf(buf + o, size - o, ",\"%s\":\"%s\"", name, esc);
    }
    return n < 0 ? size : o + (size_t)n;
}

static size_t json_line(const mtls_http_conn *c, int status, int parsed, char *buf, size_t size)
{
    const mtls_http_peer *peer = c->peer;
    const char *method =
        c->url_len > 0 || parsed ? llhttp_method_name((llhttp_method_t)c->parser.method) : NULL;
    char proto[16];
    size_t o;
    int n;

    snprintf(proto, sizeof(proto), "HTTP/%d.%d", c->parser.http_major, c->parser.http_minor);
    n = snprintf(buf, size, "{\"time\":\"%s\"", log_time_iso);
    if (n < 0 || (size_t)n >= size)
        return 0;
    o = (size_t)n;
    o = json_field(buf, size, o, "remote_addr", peer ? peer->addr : NULL,
                   peer && peer->addr ? strlen(peer->addr) : 0);
    o = json_field(buf, size, o, "client", peer ? peer->user : NULL,
                   peer && peer->user ? strlen(peer->user) : 0);
    o = json_field(buf, size, o, "client_serial", peer ? peer->serial : NULL,
                   peer && peer->serial ? strlen(peer->serial) : 0);
    o = json_field(buf, size, o, "method", method, method ? strlen(method) : 0);
    o = json_field(buf, size, o, "path", c->url_len > 0 ? c->url_at : NULL, kept_url_len(c));
    o = json_field(buf, size, o, "protocol", c->parser.http_major > 0 ? proto : NULL,
                   strlen(proto));
    if (o >= size)
        return 0;
    n = snprintf(buf + o, size - o, ",\"status\":%d,\"bytes\":%llu", status,
                 (unsigned long long)c->bytes_out);
    o = n < 0 ? size : o + (size_t)n;
    o = json_field(buf, size, o, "referer", c->referer_len ? c->referer : NULL, c->referer_len);
    o = json_field(buf, size, o, "user_agent", c->user_agent_len ? c->user_agent : NULL,
                   c->user_agent_len);
    if (c->proxied && o < size) {
        n = c->upstream_status > 0
                ? snprintf(buf + o, size - o, ",\"upstream_status\":%d,\"upstream_ms\":%llu",
                           c->upstream_status, (unsigned long long)c->upstream_ms)
                : snprintf(buf + o, size - o, ",\"upstream_status\":null,\"upstream_ms\":%llu",
                           (unsigned long long)c->upstream_ms);
        o = n < 0 ? size : o + (size_t)n;
    }
    if (o + 3 > size)
        return 0;
    buf[o++] = '}';
    buf[o++] = '\n';
    buf[o] = '\0';
    return o;
}

size_t mtls__http_log_line(const mtls_http_conn *c, int status, int parsed, char *buf, size_t size)
{
    log_times();
    if (c->cfg->log_format == MTLS_LOG_JSON)
        return json_line(c, status, parsed, buf, size);
    return text_line(c, status, parsed, buf, size);
}
