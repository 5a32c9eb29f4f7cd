/*
 * The request and response of mtls/app.h: a thin layer over
 * mtls_http_request (the request is the same object; the response holds
 * what a handler sets before it answers). No TLS, no sockets.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_internal.h"
#include "mtls/app.h"
#include "mtls/http.h"

struct mtls_response {
    mtls_http_request *req;
    int status;
    char *content_type;  /* NULL: the default of the call */
    mtls_strbuf headers; /* "Name: value\r\n" lines */
    int in_handler;      /* the handler call is on the stack: it frees res */
    int finished;
    void (*abort_fn)(void *ctx);
    void *abort_ctx;
    void (*writable_fn)(void *ctx);
    void *writable_ctx;
    void (*data_fn)(void *ctx, const char *data, size_t len);
    void (*end_fn)(void *ctx);
    void *body_ctx;
};

static const char TEXT[] = "text/plain; charset=utf-8";
static const char JSON[] = "application/json; charset=utf-8";

static void res_free(mtls_response *res)
{
    free(res->content_type);
    mtls_strbuf_release(&res->headers);
    free(res);
}

/* The request forgets res: no callback reaches it any more. */
static void res_detach(mtls_response *res)
{
    mtls_http_request *req = res->req;

    req->on_body = NULL;
    req->on_body_end = NULL;
    req->on_writable = NULL;
    req->on_abort = NULL;
    req->handler_ctx = NULL;
}

/* The response is complete: res goes now, or when the handler returns. */
static void res_finish(mtls_response *res)
{
    res->finished = 1;
    if (!res->in_handler)
        res_free(res);
}

static int api_body(void *ctx, const char *data, size_t len)
{
    mtls_response *res = ctx;

    if (res->data_fn != NULL)
        res->data_fn(res->body_ctx, data, len);
    return MTLS_HTTP_BODY_MORE;
}

static void api_body_end(void *ctx)
{
    mtls_response *res = ctx;

    if (res->end_fn != NULL)
        res->end_fn(res->body_ctx);
}

static void api_writable(void *ctx)
{
    mtls_response *res = ctx;

    if (res->writable_fn != NULL)
        res->writable_fn(res->writable_ctx);
}

static void api_abort(void *ctx)
{
    mtls_response *res = ctx;

    res_detach(res);
    if (res->abort_fn != NULL)
        res->abort_fn(res->abort_ctx);
    res->finished = 1;
    if (!res->in_handler)
        res_free(res);
}

int mtls__api_dispatch(void *ctx, mtls_http_request *req)
{
    const struct mtls__api_route *route = ctx;
    mtls_response *res = calloc(1, sizeof(*res));
    int rc;

    if (res == NULL)
        return MTLS_E_NOMEM;
    res->req = req;
    res->status = 200;
    res->in_handler = 1;
    req->handler_ctx = res;
    req->on_writable = api_writable;
    req->on_abort = api_abort;
    rc = route->fn(req, res, route->ctx);
    res->in_handler = 0;
    if (res->finished) {
        res_free(res);
        return 0;
    }
    if (rc < 0) {
        res_detach(res);
        res_free(res);
        return rc;
    }
    return 0;
}

/* ---- requests ------------------------------------------------------------- */

const char *mtls_request_method(const mtls_request *req)
{
    return req->method_name;
}

const char *mtls_request_path(const mtls_request *req, size_t *len)
{
    *len = req->path_len;
    return req->target;
}

const char *mtls_request_query(const mtls_request *req, size_t *len)
{
    *len = 0;
    if (req->path_len >= req->target_len || req->target[req->path_len] != '?')
        return NULL;
    *len = req->target_len - req->path_len - 1;
    return req->target + req->path_len + 1;
}

const char *mtls_request_param(const mtls_request *req, const char *name, size_t *len)
{
    const char *value = NULL;

    *len = 0;
    if (req->route_path == NULL || name == NULL ||
        !mtls__http_params_match(req->route_path, strlen(req->route_path), req->target,
                                 req->path_len, name, &value, len))
        return NULL;
    return value;
}

const char *mtls_request_header(const mtls_request *req, const char *name, size_t *len)
{
    size_t n = strlen(name);

    *len = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        const mtls_http_header *h = &req->headers[i];

        if (h->name_len == n && strncasecmp(h->name, name, n) == 0) {
            *len = h->value_len;
            return h->value;
        }
    }
    return NULL;
}

size_t mtls_request_header_count(const mtls_request *req)
{
    return req->n_headers;
}

int mtls_request_header_at(const mtls_request *req, size_t i, const char **name, size_t *name_len,
                           const char **value, size_t *value_len)
{
    if (i >= req->n_headers)
        return MTLS_E_INVALID;
    *name = req->headers[i].name;
    *name_len = req->headers[i].name_len;
    *value = req->headers[i].value;
    *value_len = req->headers[i].value_len;
    return 0;
}

int64_t mtls_request_content_length(const mtls_request *req)
{
    return req->content_length;
}

const char *mtls_request_remote_addr(const mtls_request *req)
{
    return req->peer != NULL && req->peer->addr != NULL ? req->peer->addr : "";
}

int mtls_request_read_body(mtls_request *req,
                           void (*on_data)(void *ctx, const char *data, size_t len),
                           void (*on_end)(void *ctx), void *ctx)
{
    mtls_response *res = req->handler_ctx;

    if (res == NULL || req->on_abort != api_abort || res->finished)
        return MTLS_E_INVALID;
    req->on_body = api_body;
    req->on_body_end = api_body_end;
    res->data_fn = on_data;
    res->end_fn = on_end;
    res->body_ctx = ctx;
    return 0;
}

const mtls_identity *mtls_request_identity(const mtls_request *req)
{
    const mtls_http_peer *peer = req->peer;

    if (peer == NULL || peer->identity == NULL || peer->denied != NULL)
        return NULL;
    return peer->identity(peer->conn_ctx);
}

/* ---- responses ------------------------------------------------------------ */

int mtls_response_set_status(mtls_response *res, int status)
{
    if (res->finished || status < 100 || status > 999)
        return MTLS_E_INVALID;
    res->status = status;
    return 0;
}

static int has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

int mtls_response_set_header(mtls_response *res, const char *name, const char *value)
{
    if (res->finished || name == NULL || value == NULL || name[0] == '\0' || has_crlf(name) ||
        has_crlf(value) || strchr(name, ':') != NULL || strcasecmp(name, "Content-Length") == 0 ||
        strcasecmp(name, "Transfer-Encoding") == 0 || strcasecmp(name, "Connection") == 0)
        return MTLS_E_INVALID;
    if (strcasecmp(name, "Content-Type") == 0) {
        char *copy = strdup(value);

        if (copy == NULL)
            return MTLS_E_NOMEM;
        free(res->content_type);
        res->content_type = copy;
        return 0;
    }
    mtls_strbuf_str(&res->headers, name);
    mtls_strbuf_add(&res->headers, ": ", 2);
    mtls_strbuf_str(&res->headers, value);
    mtls_strbuf_add(&res->headers, "\r\n", 2);
    return res->headers.failed ? MTLS_E_NOMEM : 0;
}

static int respond(mtls_response *res, const char *default_type, const void *body, size_t len)
{
    mtls_http_request *req = res->req;
    const char *type = res->content_type ? res->content_type : default_type;
    int rc;

    if (res->finished || res->headers.failed)
        return MTLS_E_INVALID;
    res_detach(res);
    rc = mtls_http_respond(req, res->status, type, body, len,
                           res->headers.len > 0 ? res->headers.p : NULL);
    res_finish(res);
    return rc;
}

int mtls_response_send(mtls_response *res, const void *body, size_t len)
{
    return respond(res, TEXT, body, len);
}

int mtls_response_send_json(mtls_response *res, int status, const char *json)
{
    if (mtls_response_set_status(res, status) != 0)
        return MTLS_E_INVALID;
    return respond(res, JSON, json, strlen(json));
}

int mtls_response_start(mtls_response *res, int64_t length)
{
    mtls_strbuf fields = {0};
    int rc;

    if (res->finished || length < -1)
        return MTLS_E_INVALID;
    mtls_strbuf_str(&fields, "Content-Type: ");
    mtls_strbuf_str(&fields, res->content_type ? res->content_type : TEXT);
    mtls_strbuf_add(&fields, "\r\n", 2);
    if (res->headers.len > 0)
        mtls_strbuf_add(&fields, res->headers.p, res->headers.len);
    if (fields.failed) {
        mtls_strbuf_release(&fields);
        return MTLS_E_NOMEM;
    }
    rc = mtls_http_stream_start(res->req, res->status, NULL, fields.p, fields.len,
                                length < 0 ? MTLS_HTTP_LEN_UNKNOWN : length);
    mtls_strbuf_release(&fields);
    return rc;
}

int mtls_response_write(mtls_response *res, const void *data, size_t len)
{
    if (res->finished)
        return MTLS_E_INVALID;
    return mtls_http_stream_write(res->req, data, len);
}

int mtls_response_end(mtls_response *res)
{
    mtls_http_request *req = res->req;

    if (res->finished)
        return MTLS_E_INVALID;
    res_detach(res);
    mtls_http_stream_end(req);
    res_finish(res);
    return 0;
}

void mtls_response_on_abort(mtls_response *res, void (*fn)(void *ctx), void *ctx)
{
    res->abort_fn = fn;
    res->abort_ctx = ctx;
}

void mtls_response_on_writable(mtls_response *res, void (*fn)(void *ctx), void *ctx)
{
    res->writable_fn = fn;
    res->writable_ctx = ctx;
}

mtls_request *mtls_response_request(mtls_response *res)
{
    return res->req;
}
