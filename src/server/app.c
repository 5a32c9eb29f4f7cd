/*
 * mtls/app.h: an mtls_server with handlers of its own, configured by
 * option names, plus the worker's loop and timers for handlers that answer
 * later. A thin layer: the server, routes and workers are src/server's.
 */
#include "mtls/app.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <llhttp.h>
#include <uv.h>

#include "http/http_internal.h"
#include "mtls/server.h"
#include "server_internal.h"

/* An owned list of strings. */
struct strlist {
    char **v;
    size_t n;
};

struct app_route {
    char *path;
    int exact;
    uint64_t methods;
    struct mtls__api_route api;
    struct strlist allow;
};

struct mtls_app {
    mtls_server_opts opts;
    struct strlist strings; /* copies the options point to */
    struct strlist crls;
    struct strlist allow;
    struct app_route **routes; /* pointers stay put as the array grows */
    size_t n_routes;
    mtls_route_opts *route_opts;
    mtls_server *srv;
    pthread_t runner;
    pid_t runner_pid; /* the process that called mtls_app_run() */
    atomic_int running;
};

const char *mtls_version(void)
{
    return MTLS_VERSION_STRING;
}

int mtls_version_number(void)
{
    return MTLS_VERSION_NUMBER;
}

static int strlist_add(struct strlist *l, const char *s, const char **out)
{
    char **grown = realloc(l->v, (l->n + 1) * sizeof(*l->v));

    if (grown == NULL)
        return MTLS_E_NOMEM;
    l->v = grown;
    l->v[l->n] = strdup(s);
    if (l->v[l->n] == NULL)
        return MTLS_E_NOMEM;
    if (out != NULL)
        *out = l->v[l->n];
    l->n++;
    return 0;
}

static void strlist_release(struct strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

int mtls_app_new(mtls_app **out, mtls_err *err)
{
    mtls_app *app = calloc(1, sizeof(*app));

    *out = NULL;
    if (app == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    mtls_server_opts_init(&app->opts);
    *out = app;
    return 0;
}

/* The string options: name, and where in opts its value goes. */
static const char **string_option(mtls_app *app, const char *name)
{
    mtls_server_opts *o = &app->opts;

    if (strcmp(name, "listen") == 0)
        return &o->listen;
    if (strcmp(name, "cert") == 0)
        return &o->tls.cert_file;
    if (strcmp(name, "key") == 0)
        return &o->tls.key_file;
    if (strcmp(name, "key-password") == 0)
        return &o->tls.key_password;
    if (strcmp(name, "client-ca") == 0)
        return &o->tls.client_ca_file;
    if (strcmp(name, "access-log") == 0)
        return &o->access_log;
    if (strcmp(name, "system-log") == 0)
        return &o->system_log;
    if (strcmp(name, "upstream") == 0)
        return &o->upstream;
    return NULL;
}

static int choice(const char *value, const char *a, const char *b, int *out)
{
    if (strcmp(value, a) == 0)
        *out = 0;
    else if (strcmp(value, b) == 0)
        *out = 1;
    else
        return MTLS_E_INVALID;
    return 0;
}

int mtls_app_set(mtls_app *app, const char *name, const char *value, mtls_err *err)
{
    const char **slot;
    int which = 0, rc = 0;

    if (name == NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "option name missing");
    slot = string_option(app, name);
    if (slot != NULL && value == NULL &&
        (strcmp(name, "access-log") == 0 || strcmp(name, "system-log") == 0 ||
         strcmp(name, "key-password") == 0 || strcmp(name, "upstream") == 0)) {
        *slot = NULL;
        return 0;
    }
    if (value == NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "option '%s' needs a value", name);
    if (slot != NULL)
        rc = strlist_add(&app->strings, value, slot);
    else if (strcmp(name, "crl") == 0)
        rc = strlist_add(&app->crls, value, NULL);
    else if (strcmp(name, "allow") == 0)
        rc = strlist_add(&app->allow, value, NULL);
    else if (strcmp(name, "verify-client") == 0) {
        if (choice(value, "require", "optional", &which) != 0)
            return mtls_err_set(err, MTLS_E_INVALID, "verify-client '%s': use require or optional",
                                value);
        app->opts.tls.verify = which ? MTLS_VERIFY_OPTIONAL : MTLS_VERIFY_REQUIRE;
    } else if (strcmp(name, "log-format") == 0) {
        if (choice(value, "text", "json", &which) != 0)
            return mtls_err_set(err, MTLS_E_INVALID, "log-format '%s': use text or json", value);
        app->opts.log_format = which ? MTLS_LOG_JSON : MTLS_LOG_TEXT;
    } else if (strcmp(name, "worker-model") == 0) {
        if (choice(value, "process", "thread", &which) != 0)
            return mtls_err_set(err, MTLS_E_INVALID, "worker-model '%s': use process or thread",
                                value);
        app->opts.model = which ? MTLS_WORKERS_THREAD : MTLS_WORKERS_PROCESS;
    } else if (strcmp(name, "workers") == 0) {
        char *end;
        unsigned long n;

        errno = 0;
        n = strtoul(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || n > 1024 || value[0] == '-')
            return mtls_err_set(err, MTLS_E_INVALID, "workers '%s': a number up to 1024", value);
        app->opts.workers = (unsigned)n;
    } else {
        return mtls_err_set(err, MTLS_E_INVALID, "unknown option '%s'", name);
    }
    if (rc != 0)
        return mtls_err_set(err, rc, "out of memory");
    return 0;
}

/* "GET" (with HEAD), "POST", ...; NULL or "*": every method (0). */
static int parse_method(const char *method, uint64_t *bits)
{
    static const struct {
        const char *name;
        int id;
    } methods[] = {
        {"GET", HTTP_GET},         {"HEAD", HTTP_HEAD},     {"POST", HTTP_POST},
        {"PUT", HTTP_PUT},         {"DELETE", HTTP_DELETE}, {"PATCH", HTTP_PATCH},
        {"OPTIONS", HTTP_OPTIONS},
    };

    *bits = 0;
    if (method == NULL || strcmp(method, "*") == 0)
        return 0;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (strcmp(method, methods[i].name) == 0) {
            *bits = MTLS_METHOD(methods[i].id);
            if (methods[i].id == HTTP_GET)
                *bits |= MTLS_METHOD(HTTP_HEAD);
            return 0;
        }
    }
    return MTLS_E_INVALID;
}

int mtls_app_route(mtls_app *app, const char *method, const char *path, mtls_handler_fn handler,
                   void *ctx, mtls_err *err)
{
    struct app_route **grown, *r;
    uint64_t bits;
    size_t len;

    if (path == NULL || path[0] != '/' || handler == NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "route '%s': a path starts with '/'",
                            path ? path : "");
    if (parse_method(method, &bits) != 0)
        return mtls_err_set(err, MTLS_E_INVALID, "route '%s': unknown method '%s'", path, method);
    if (app->srv != NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "route '%s': the server has started", path);
    grown = realloc(app->routes, (app->n_routes + 1) * sizeof(*app->routes));
    if (grown == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    app->routes = grown;
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->path = strdup(path)) == NULL) {
        free(r);
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    }
    len = strlen(r->path);
    r->exact = 1;
    if (len >= 2 && strcmp(r->path + len - 2, "/*") == 0) {
        r->path[len > 2 ? len - 2 : 1] = '\0'; /* a lone slash-star is "/" */
        r->exact = 0;
    }
    r->methods = bits;
    r->api.fn = handler;
    r->api.ctx = ctx;
    app->routes[app->n_routes] = r;
    return (int)app->n_routes++;
}

int mtls_app_route_allow(mtls_app *app, int route, const char *rule, mtls_err *err)
{
    if (route < 0 || (size_t)route >= app->n_routes || rule == NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "no route %d", route);
    if (strlist_add(&app->routes[route]->allow, rule, NULL) != 0)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    return 0;
}

int mtls_app_start(mtls_app *app, mtls_err *err)
{
    mtls_server_opts *o = &app->opts;

    if (app->srv != NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "the server has started already");
    free(app->route_opts);
    app->route_opts = calloc(app->n_routes + 1, sizeof(*app->route_opts));
    if (app->route_opts == NULL)
        return mtls_err_set(err, MTLS_E_NOMEM, "out of memory");
    for (size_t i = 0; i < app->n_routes; i++) {
        const struct app_route *r = app->routes[i];
        mtls_route_opts *ro = &app->route_opts[i];

        ro->path = r->path;
        ro->exact = r->exact;
        ro->fn = mtls__api_dispatch;
        ro->fn_ctx = (void *)&r->api;
        ro->methods = r->methods;
        if (r->allow.n > 0) {
            ro->allow = (const char *const *)r->allow.v;
            ro->n_allow = r->allow.n;
        }
    }
    o->routes = app->route_opts;
    o->n_routes = app->n_routes;
    o->tls.crl_files = (const char *const *)app->crls.v;
    o->tls.n_crl_files = app->crls.n;
    o->allow = (const char *const *)app->allow.v;
    o->n_allow = app->allow.n;
    return mtls_server_new(o, &app->srv, err);
}

int mtls_app_port(const mtls_app *app)
{
    return app->srv != NULL ? mtls_server_port(app->srv) : 0;
}

int mtls_app_run(mtls_app *app, mtls_err *err)
{
    struct sigaction sa;
    int rc;

    if (app->srv == NULL)
        return mtls_err_set(err, MTLS_E_INVALID, "the server is not started (mtls_app_start)");
    /* A client that goes away mid-write must not kill the program. */
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    app->runner = pthread_self();
    app->runner_pid = getpid();
    atomic_store(&app->running, 1);
    rc = mtls_server_run(app->srv, err);
    atomic_store(&app->running, 0);
    return rc;
}

/* The running mtls_app_run() takes sig: from its own process, on its thread;
   from a worker process (a handler), by the main process's pid. */
static int signal_runner(mtls_app *app, int sig)
{
    if (!atomic_load(&app->running))
        return MTLS_E_INVALID;
    if (getpid() != app->runner_pid)
        return kill(app->runner_pid, sig) == 0 ? 0 : MTLS_E_INVALID;
    return pthread_kill(app->runner, sig) == 0 ? 0 : MTLS_E_INVALID;
}

int mtls_app_stop(mtls_app *app)
{
    return signal_runner(app, SIGTERM);
}

int mtls_app_reload(mtls_app *app)
{
    return signal_runner(app, SIGHUP);
}

void mtls_app_free(mtls_app *app)
{
    if (app == NULL)
        return;
    mtls_server_free(app->srv);
    for (size_t i = 0; i < app->n_routes; i++) {
        free(app->routes[i]->path);
        strlist_release(&app->routes[i]->allow);
        free(app->routes[i]);
    }
    free(app->routes);
    free(app->route_opts);
    strlist_release(&app->strings);
    strlist_release(&app->crls);
    strlist_release(&app->allow);
    free(app);
}

/* ---- the worker's loop and timers ---------------------------------------- */

static _Thread_local uv_loop_t *current_loop;

void mtls__worker_loop_set(uv_loop_t *loop)
{
    current_loop = loop;
}

void *mtls_worker_loop(void)
{
    return current_loop;
}

struct mtls_timer {
    uv_timer_t handle;
    void (*fn)(void *ctx);
    void *ctx;
    int fired;
};

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void timer_fired(uv_timer_t *h)
{
    mtls_timer *t = h->data;

    t->fired = 1;
    t->fn(t->ctx);
    uv_close((uv_handle_t *)h, timer_closed);
}

mtls_timer *mtls_timer_start(uint64_t ms, void (*fn)(void *ctx), void *ctx)
{
    mtls_timer *t;

    if (current_loop == NULL || fn == NULL || (t = calloc(1, sizeof(*t))) == NULL)
        return NULL;
    if (uv_timer_init(current_loop, &t->handle) != 0) {
        free(t);
        return NULL;
    }
    t->handle.data = t;
    t->fn = fn;
    t->ctx = ctx;
    if (uv_timer_start(&t->handle, timer_fired, ms, 0) != 0) {
        uv_close((uv_handle_t *)&t->handle, timer_closed);
        return NULL;
    }
    return t;
}

void mtls_timer_cancel(mtls_timer *t)
{
    if (t == NULL || t->fired || uv_is_closing((uv_handle_t *)&t->handle))
        return;
    uv_timer_stop(&t->handle);
    uv_close((uv_handle_t *)&t->handle, timer_closed);
}
