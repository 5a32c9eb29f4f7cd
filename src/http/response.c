/* An incremental HTTP/1.x response parser on llhttp (HTTP_RESPONSE mode):
 * see include/mtls/http_response.h.
 *
 * llhttp hands out spans of the caller's bytes, and a span may be cut at any
 * byte when the input comes in pieces; so the reason and every header name
 * and value are appended to one buffer as they come, and the header array
 * is made of pointers into it once the head is complete (the buffer no
 * longer grows then). The parser pauses itself at the end of a response, so
 * that the caller learns where the next one starts.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "grow.h"
#include "mtls/http_response.h"

#define DEFAULT_MAX_HEAD (64u * 1024u)
#define DEFAULT_MAX_HEADERS 100u

static mtls_http_response *response_of(llhttp_t *p)
{
    return (mtls_http_response *)p->data;
}

static int fail(mtls_http_response *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records why parsing stops (the first reason wins) and tells llhttp to stop. */
static int fail(mtls_http_response *r, int code, const char *fmt, ...)
{
    va_list ap;

    if (r->failed == 0) {
        r->failed = code;
        va_start(ap, fmt);
        vsnprintf(r->error, sizeof(r->error), fmt, ap);
        va_end(ap);
    }
    return HPE_USER;
}

/* Appends len bytes (and nothing else) to the head buffer, within max_head. */
static int head_append(mtls_http_response *r, const char *at, size_t len)
{
    if (r->buf_len + len + 1 > r->opts.max_head)
        return fail(r, MTLS_E_INVALID, "the response head is larger than %zu bytes",
                    r->opts.max_head);
    if (mtls__http_grow(&r->buf, &r->buf_cap, r->buf_len + len + 1, 1024, r->opts.max_head) != 0)
        return fail(r, MTLS_E_NOMEM, "out of memory");
    memcpy(r->buf + r->buf_len, at, len);
    r->buf_len += len;
    return 0;
}

static int head_terminate(mtls_http_response *r)
{
    int rc = head_append(r, "", 0);

    if (rc == 0)
        r->buf[r->buf_len++] = '\0';
    return rc;
}

/* Forgets the head read so far (after an interim 1xx response). */
static void head_clear(mtls_http_response *r)
{
    r->buf_len = 0;
    r->n_spans = 0;
    r->reason_off = 0;
    r->in_field = r->in_value = 0;
}

static int on_message_begin(llhttp_t *p)
{
    head_clear(response_of(p));
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    return head_append(response_of(p), at, len);
}

static int on_status_complete(llhttp_t *p)
{
    return head_terminate(response_of(p));
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    mtls_http_response *r = response_of(p);

    if (r->head_done)
        return 0; /* a trailer after a chunked body: not kept */
    if (!r->in_field) {
        if (r->buf_len == 0 && head_terminate(r) != 0) /* an empty reason */
            return HPE_USER;
        if (r->n_spans >= r->opts.max_headers)
            return fail(r, MTLS_E_INVALID, "the response has more than %u header lines",
                        r->opts.max_headers);
        r->in_field = 1;
        r->field_off = r->buf_len;
    }
    return head_append(r, at, len);
}

static int on_header_field_complete(llhttp_t *p)
{
    mtls_http_response *r = response_of(p);

    if (r->head_done)
        return 0;
    r->in_field = 0;
    if (head_terminate(r) != 0)
        return HPE_USER;
    r->in_value = 1;
    r->value_off = r->buf_len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    mtls_http_response *r = response_of(p);

    if (r->head_done)
        return 0;
    return head_append(r, at, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    mtls_http_response *r = response_of(p);
    size_t end;

    if (r->head_done || !r->in_value)
        return 0;
    r->in_value = 0;
    end = r->buf_len;
    /* llhttp skips the blanks before a value; those after it are not part of it. */
    while (end > r->value_off && (r->buf[end - 1] == ' ' || r->buf[end - 1] == '\t'))
        end--;
    r->buf_len = end;
    if (head_terminate(r) != 0)
        return HPE_USER;
    if (r->n_spans == r->spans_cap) {
        size_t cap = r->spans_cap ? 2 * r->spans_cap : 16;
        size_t(*grown)[4] = realloc(r->spans, cap * sizeof(*grown));

        if (grown == NULL)
            return fail(r, MTLS_E_NOMEM, "out of memory");
        r->spans = grown;
        r->spans_cap = cap;
    }
    r->spans[r->n_spans][0] = r->field_off;
    r->spans[r->n_spans][1] = r->value_off - 1 - r->field_off;
    r->spans[r->n_spans][2] = r->value_off;
    r->spans[r->n_spans][3] = end - r->value_off;
    r->n_spans++;
    return 0;
}

static int is_interim(int status)
{
    /* 101 Switching Protocols is final: the connection speaks something else after it. */
    return status >= 100 && status < 200 && status != 101;
}

/* Makes the header array once the head is complete (the buffer is final then). */
static int publish_headers(mtls_http_response *r)
{
    if (r->buf_len == 0 && head_terminate(r) != 0) /* no reason, no header */
        return HPE_USER;
    if (r->n_spans > r->headers_cap) {
        mtls_http_header *grown = realloc(r->headers, r->n_spans * sizeof(*grown));

        if (grown == NULL)
            return fail(r, MTLS_E_NOMEM, "out of memory");
        r->headers = grown;
        r->headers_cap = r->n_spans;
    }
    for (size_t i = 0; i < r->n_spans; i++) {
        r->headers[i].name = r->buf + r->spans[i][0];
        r->headers[i].name_len = r->spans[i][1];
        r->headers[i].value = r->buf + r->spans[i][2];
        r->headers[i].value_len = r->spans[i][3];
    }
    r->n_headers = r->n_spans;
    r->reason = r->buf + r->reason_off;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    mtls_http_response *r = response_of(p);
    int status = llhttp_get_status_code(p);
    int no_body = r->opts.head_request || status < 200 || status == 204 || status == 304;

    if (is_interim(status))
        return 0; /* 100 Continue and the like: the real answer follows */
    r->status = status;
    r->http_major = llhttp_get_http_major(p);
    r->http_minor = llhttp_get_http_minor(p);
    if (no_body)
        r->framing = MTLS_HTTP_FRAMING_NONE;
    else if (p->flags & F_CHUNKED)
        r->framing = MTLS_HTTP_FRAMING_CHUNKED;
    else if (p->flags & F_CONTENT_LENGTH)
        r->framing = MTLS_HTTP_FRAMING_LENGTH;
    else
        r->framing = MTLS_HTTP_FRAMING_CLOSE;
    r->content_length = r->framing == MTLS_HTTP_FRAMING_LENGTH ? p->content_length : 0;
    if (publish_headers(r) != 0)
        return HPE_USER;
    r->head_done = 1;
    if (r->opts.on_head != NULL && r->opts.on_head(r->opts.arg, r) != 0)
        return fail(r, MTLS_E_INVALID, "the response was refused after its head");
    /* 1: llhttp reads no body, as for the answer to a HEAD request. */
    return r->opts.head_request ? 1 : 0;
}

/* Keeps up to keep_body bytes of the body, NUL-terminated. */
static int keep_body(mtls_http_response *r, const char *at, size_t len)
{
    size_t room = r->opts.keep_body - r->body_len;
    size_t n = len < room ? len : room;

    if (n < len)
        r->body_truncated = 1;
    if (n == 0)
        return 0;
    if (mtls__http_grow(&r->body, &r->body_cap, r->body_len + n + 1, 4096, r->opts.keep_body + 1) !=
        0)
        return fail(r, MTLS_E_NOMEM, "out of memory");
    memcpy(r->body + r->body_len, at, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    mtls_http_response *r = response_of(p);

    r->body_bytes += len;
    if (r->opts.keep_body > 0 && keep_body(r, at, len) != 0)
        return HPE_USER;
    if (r->opts.on_body != NULL && r->opts.on_body(r->opts.arg, at, len) != 0)
        return fail(r, MTLS_E_INVALID, "the response body was refused");
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    mtls_http_response *r = response_of(p);

    if (!r->head_done && is_interim(llhttp_get_status_code(p))) {
        head_clear(r);
        return 0;
    }
    r->done = 1;
    r->keep_alive = llhttp_should_keep_alive(p) && r->status != 101;
    if (r->body == NULL && r->opts.keep_body > 0) {
        /* An empty body is "" rather than NULL for callers that keep one. */
        r->body = calloc(1, 1);
        if (r->body == NULL)
            return fail(r, MTLS_E_NOMEM, "out of memory");
        r->body_cap = 1;
    }
    return HPE_PAUSED; /* what follows belongs to the next response */
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_status_complete = on_status_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void mtls_http_response_init(mtls_http_response *r, const mtls_http_response_opts *opts)
{
    memset(r, 0, sizeof(*r));
    if (opts != NULL)
        r->opts = *opts;
    if (r->opts.max_head == 0)
        r->opts.max_head = DEFAULT_MAX_HEAD;
    if (r->opts.max_headers == 0)
        r->opts.max_headers = DEFAULT_MAX_HEADERS;
    llhttp_init(&r->parser, HTTP_RESPONSE, &settings);
    r->parser.data = r;
}

void mtls_http_response_reset(mtls_http_response *r)
{
    mtls_http_response kept = *r;

    /* Everything but the options and the buffers starts over. */
    mtls_http_response_init(r, &kept.opts);
    r->buf = kept.buf;
    r->buf_cap = kept.buf_cap;
    r->spans = kept.spans;
    r->spans_cap = kept.spans_cap;
    r->headers = kept.headers;
    r->headers_cap = kept.headers_cap;
    r->body = kept.body;
    r->body_cap = kept.body_cap;
    r->body_len = 0;
    if (r->body != NULL)
        r->body[0] = '\0';
}

void mtls_http_response_release(mtls_http_response *r)
{
    if (r == NULL)
        return;
    free(r->buf);
    free(r->spans);
    free(r->headers);
    free(r->body);
    r->buf = NULL;
    r->spans = NULL;
    r->headers = NULL;
    r->body = NULL;
    r->buf_cap = r->spans_cap = r->headers_cap = r->body_cap = 0;
    r->n_headers = r->n_spans = r->buf_len = r->body_len = 0;
}

/* The error of a stopped parser: ours, or llhttp's reason. */
static int parse_failed(mtls_http_response *r, llhttp_errno_t e)
{
    if (r->failed == 0) {
        const char *reason = llhttp_get_error_reason(&r->parser);

        r->failed = MTLS_E_INVALID;
        snprintf(r->error, sizeof(r->error), "the answer is not valid HTTP/1.1: %s",
                 reason != NULL && reason[0] != '\0' ? reason : llhttp_errno_name(e));
    }
    return r->failed;
}

int mtls_http_response_feed(mtls_http_response *r, const char *data, size_t len, size_t *used)
{
    llhttp_errno_t e;
    size_t n = 0;
    int rc;

    if (r->failed != 0) {
        rc = r->failed;
        goto out;
    }
    if (r->done) {
        rc = MTLS_HTTP_RESPONSE_DONE;
        goto out;
    }
    if (len == 0) {
        rc = MTLS_HTTP_RESPONSE_MORE;
        goto out;
    }
    r->started = 1;
    e = llhttp_execute(&r->parser, data, len);
    if (e == HPE_OK) {
        n = len;
        rc = MTLS_HTTP_RESPONSE_MORE;
    } else if ((e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) && r->done) {
        const char *pos = llhttp_get_error_pos(&r->parser);

        n = pos != NULL && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
        rc = MTLS_HTTP_RESPONSE_DONE;
    } else {
        rc = parse_failed(r, e);
    }
out:
    if (used != NULL)
        *used = n;
    return rc;
}

int mtls_http_response_eof(mtls_http_response *r)
{
    llhttp_errno_t e;

    if (r->failed != 0)
        return r->failed;
    if (r->done)
        return MTLS_HTTP_RESPONSE_DONE;
    e = llhttp_finish(&r->parser);
    if (r->done)
        return MTLS_HTTP_RESPONSE_DONE;
    if (r->failed != 0)
        return r->failed;
    (void)e;
    r->failed = MTLS_E_INVALID;
    if (!r->started)
        snprintf(r->error, sizeof(r->error), "the server closed the connection without an answer");
    else if (!r->head_done)
        snprintf(r->error, sizeof(r->error),
                 "the server closed the connection in the middle of the response head");
    else
        snprintf(r->error, sizeof(r->error),
                 "the server closed the connection before the end of the body (%llu bytes read)",
                 (unsigned long long)r->body_bytes);
    return r->failed;
}

const char *mtls_http_response_header(const mtls_http_response *r, const char *name)
{
    if (!r->head_done)
        return NULL;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    }
    return NULL;
}
