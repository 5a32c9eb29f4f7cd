/*
 * `mtls serve --config FILE`: a YAML mapping of the command's own long
 * options (libyaml's document API), applied where the command line said
 * nothing, so that one table (the command's cli_opt list) says what a file
 * may hold, how each value is checked, and what it means.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* Every string handed out, freed by cli_config_release(). */
static char **owned;
static size_t n_owned;

static void *keep(void *p)
{
    void **grown;

    if (p == NULL)
        return NULL;
    grown = realloc(owned, (n_owned + 1) * sizeof(*owned));
    if (grown == NULL) {
        free(p);
        return NULL;
    }
    owned = (char **)grown;
    owned[n_owned++] = p;
    return p;
}

void cli_config_release(void)
{
    for (size_t i = 0; i < n_owned; i++)
        free(owned[i]);
    free(owned);
    owned = NULL;
    n_owned = 0;
}

size_t cli_config_mark(void)
{
    return n_owned;
}

void cli_config_forget(size_t from, size_t to)
{
    if (to > n_owned)
        to = n_owned;
    if (from >= to)
        return;
    for (size_t i = from; i < to; i++)
        free(owned[i]);
    memmove(owned + from, owned + to, (n_owned - to) * sizeof(*owned));
    n_owned -= to - from;
}

struct loader {
    const char *path;
    cli_config_problem_fn problem;
    cli_config_check_fn check;
    void *ctx;
    int problems;
};

static void say(struct loader *l, const yaml_node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(struct loader *l, const yaml_node_t *at, const char *fmt, ...)
{
    char msg[900];
    int n = 0;
    va_list ap;

    if (at != NULL)
        n = snprintf(msg, sizeof(msg), "%s:%zu:%zu: ", l->path, at->start_mark.line + 1,
                     at->start_mark.column + 1);
    else
        n = snprintf(msg, sizeof(msg), "%s: ", l->path);
    if (n < 0 || (size_t)n >= sizeof(msg))
        n = 0;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    l->problems++;
    l->problem(l->ctx, msg);
}

/* The caller's check of a value (a rule, an URL), said with the node's line and column. */
static void check_value(struct loader *l, const yaml_node_t *at, const char *key, const char *value)
{
    char why[600];

    if (l->check == NULL || value == NULL)
        return;
    why[0] = '\0';
    if (l->check(l->ctx, key, value, why, sizeof(why)) != 0)
        say(l, at, "%s", why);
}

static const char *scalar(const yaml_node_t *node)
{
    return (const char *)node->data.scalar.value;
}

/* "verify_client" and "verify-client" name the option verify-client. */
static const struct cli_opt *find_opt(const struct cli_opt *opts, const char *key)
{
    for (const struct cli_opt *o = opts; o->name != NULL; o++) {
        size_t i;

        for (i = 0; o->name[i] != '\0' && key[i] != '\0'; i++)
            if (o->name[i] != key[i] && !(o->name[i] == '-' && key[i] == '_'))
                break;
        if (o->name[i] == '\0' && key[i] == '\0')
            return o;
    }
    return NULL;
}

static int in_list(const char *const *names, const char *name)
{
    for (; names != NULL && *names != NULL; names++)
        if (strcmp(*names, name) == 0)
            return 1;
    return 0;
}

/* Whether the command line already set o (it wins over the file). */
static int already_set(const struct cli_opt *o)
{
    switch (o->kind) {
    case CLI_FLAG:
        return *(int *)o->dest != 0;
    case CLI_STRING:
        return *(const char **)o->dest != NULL;
    case CLI_LIST:
        return ((struct cli_list *)o->dest)->n > 0;
    case CLI_INT:
        return *(long *)o->dest != 0;
    case CLI_CHOICE:
        return *((struct cli_choices *)o->dest)->value >= 0;
    }
    return 0;
}

static void set_list(struct loader *l, yaml_document_t *doc, const struct cli_opt *o,
                     yaml_node_t *value, const char *key)
{
    struct cli_list *list = o->dest;
    size_t n = 0;
    const char **items;

    /* The array belongs to the list (cli_list_release() frees it); the strings to us. */
    if (value->type == YAML_SCALAR_NODE) {
        items = calloc(1, sizeof(*items));
        if (items == NULL || (items[0] = keep(strdup(scalar(value)))) == NULL) {
            say(l, value, "out of memory");
            free(items);
            return;
        }
        check_value(l, value, o->name, items[0]);
        list->items = items;
        list->n = 1;
        return;
    }
    if (value->type != YAML_SEQUENCE_NODE) {
        say(l, value, "'%s' takes a list of values", key);
        return;
    }
    items = calloc((size_t)(value->data.sequence.items.top - value->data.sequence.items.start) + 1,
                   sizeof(*items));
    if (items == NULL) {
        say(l, value, "out of memory");
        return;
    }
    for (yaml_node_item_t *it = value->data.sequence.items.start;
         it < value->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(doc, *it);

        if (item == NULL || item->type != YAML_SCALAR_NODE) {
            say(l, item ? item : value, "each value of '%s' must be a plain value", key);
            free(items);
            return;
        }
        items[n] = keep(strdup(scalar(item)));
        if (items[n] == NULL) {
            say(l, item, "out of memory");
            free(items);
            return;
        }
        check_value(l, item, o->name, items[n]);
        n++;
    }
    list->items = items;
    list->n = n;
}

static void set_scalar(struct loader *l, const struct cli_opt *o, yaml_node_t *value,
                       const char *key)
{
    const char *v = scalar(value);

    switch (o->kind) {
    case CLI_FLAG:
        if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "on") == 0)
            *(int *)o->dest = 1;
        else if (!(strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "off") == 0))
            say(l, value, "'%s' must be true or false, not '%s'", key, v);
        return;
    case CLI_STRING:
        *(const char **)o->dest = keep(strdup(v));
        if (*(const char **)o->dest == NULL)
            say(l, value, "out of memory");
        check_value(l, value, o->name, *(const char **)o->dest);
        return;
    case CLI_INT: {
        char *end;
        long n;

        errno = 0;
        n = strtol(v, &end, 10);
        if (*v == '\0' || *end != '\0' || errno != 0 || n < o->min || n > o->max)
            say(l, value, "'%s' must be a whole number from %ld to %ld, not '%s'", key, o->min,
                o->max, v);
        else
            *(long *)o->dest = n;
        return;
    }
    case CLI_CHOICE: {
        const struct cli_choices *c = o->dest;
        char words[200] = "";

        for (const struct cli_choice *w = c->list; w->name != NULL; w++) {
            if (strcmp(w->name, v) == 0) {
                *c->value = w->value;
                return;
            }
            snprintf(words + strlen(words), sizeof(words) - strlen(words), "%s%s",
                     words[0] ? ", " : "", w->name);
        }
        say(l, value, "'%s' must be one of %s, not '%s'", key, words, v);
        return;
    }
    case CLI_LIST:
        return;
    }
}

/* A scalar, or a list of scalars joined with ',' (identity_headers: [plain, xfcc]). */
static const char *joined(struct loader *l, yaml_document_t *doc, yaml_node_t *v, const char *key)
{
    size_t len = 1;
    char *out;

    if (v->type == YAML_SCALAR_NODE)
        return keep(strdup(scalar(v)));
    if (v->type != YAML_SEQUENCE_NODE) {
        say(l, v, "'%s' takes a value or a list", key);
        return NULL;
    }
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        yaml_node_t *item = yaml_document_get_node(doc, *it);

        if (item == NULL || item->type != YAML_SCALAR_NODE) {
            say(l, item ? item : v, "each value of '%s' must be a plain value", key);
            return NULL;
        }
        len += strlen(scalar(item)) + 1;
    }
    out = keep(calloc(1, len));
    for (yaml_node_item_t *it = v->data.sequence.items.start;
         out != NULL && it < v->data.sequence.items.top; it++) {
        if (out[0] != '\0')
            strcat(out, ",");
        strcat(out, scalar(yaml_document_get_node(doc, *it)));
    }
    return out;
}

/* One route: a mapping of path, exact, handler, upstream, identity_headers, allow. */
static void load_route(struct loader *l, yaml_document_t *doc, yaml_node_t *node,
                       mtls_route_opts *r)
{
    memset(r, 0, sizeof(*r));
    if (node->type != YAML_MAPPING_NODE) {
        say(l, node, "a route is a mapping (path, upstream or handler, allow, identity_headers)");
        return;
    }
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(doc, pair->value);
        const char *key = k && k->type == YAML_SCALAR_NODE ? scalar(k) : "";

        if (v == NULL)
            continue;
        if (strcmp(key, "allow") == 0) {
            struct cli_list list = {0};
            struct cli_opt o = {"allow", 0, CLI_LIST, &list, NULL, NULL, 0, 0};

            set_list(l, doc, &o, v, key);
            r->allow = list.items ? keep((void *)list.items) : NULL;
            r->n_allow = list.n;
            if (r->allow == NULL) {
                static const char *const none[] = {NULL};

                r->allow = none; /* "allow: []": any verified client here */
            }
            continue;
        }
        if (strcmp(key, "identity_headers") == 0 || strcmp(key, "identity-headers") == 0) {
            r->identity_headers = joined(l, doc, v, key);
            check_value(l, v, "identity-headers", r->identity_headers);
            continue;
        }
        if (v->type != YAML_SCALAR_NODE) {
            say(l, v, "'%s' takes one value", key);
            continue;
        }
        if (strcmp(key, "path") == 0)
            r->path = keep(strdup(scalar(v)));
        else if (strcmp(key, "handler") == 0) {
            r->handler = keep(strdup(scalar(v)));
            check_value(l, v, "handler", r->handler);
        } else if (strcmp(key, "upstream") == 0) {
            r->upstream = keep(strdup(scalar(v)));
            check_value(l, v, "upstream", r->upstream);
        } else if (strcmp(key, "exact") == 0) {
            struct cli_opt o = {"exact", 0, CLI_FLAG, &r->exact, NULL, NULL, 0, 0};

            set_scalar(l, &o, v, key);
        } else
            say(l, k,
                "unknown route key '%s' (path, exact, handler, upstream, identity_headers, "
                "allow)",
                key);
    }
    if (r->path == NULL)
        say(l, node, "a route needs a path");
}

static void load_routes(struct loader *l, yaml_document_t *doc, yaml_node_t *v,
                        struct cli_config_routes *routes)
{
    size_t n;

    if (v->type != YAML_SEQUENCE_NODE) {
        say(l, v, "'routes' is a list of routes");
        return;
    }
    n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    routes->v = keep(calloc(n + 1, sizeof(*routes->v)));
    if (routes->v == NULL) {
        say(l, v, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        load_route(l, doc, yaml_document_get_node(doc, v->data.sequence.items.start[i]),
                   &routes->v[i]);
    routes->n = n;
}

int cli_config_load(const char *path, const struct cli_opt *opts, const char *const *skip,
                    struct cli_config_routes *routes, cli_config_problem_fn problem,
                    cli_config_check_fn check, void *ctx)
{
    struct loader l = {path, problem, check, ctx, 0};
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_node_t *root;
    FILE *f = fopen(path, "rb");
    int loaded = 0;

    if (f == NULL) {
        say(&l, NULL, "cannot read: %s", strerror(errno));
        return l.problems;
    }
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        say(&l, NULL, "out of memory");
        return l.problems;
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        char msg[400];

        snprintf(msg, sizeof(msg), "%s:%zu:%zu: not YAML: %s", path, parser.problem_mark.line + 1,
                 parser.problem_mark.column + 1, parser.problem ? parser.problem : "parse error");
        l.problems++;
        problem(ctx, msg);
        goto out;
    }
    loaded = 1;
    root = yaml_document_get_root_node(&doc);
    if (root == NULL)
        goto out; /* an empty file sets nothing */
    if (root->type != YAML_MAPPING_NODE) {
        say(&l, root, "the file must be a mapping of option names to values");
        goto out;
    }
    for (yaml_node_pair_t *pair = root->data.mapping.pairs.start;
         pair < root->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(&doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(&doc, pair->value);
        const struct cli_opt *o;
        const char *key;

        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE) {
            say(&l, k, "keys must be option names");
            continue;
        }
        key = scalar(k);
        if (routes != NULL && strcmp(key, "routes") == 0) {
            load_routes(&l, &doc, v, routes);
            continue;
        }
        o = find_opt(opts, key);
        if (o == NULL || in_list(skip, o->name)) {
            say(&l, k, "unknown key '%s' (keys are the long options of 'mtls serve --help')", key);
            continue;
        }
        if (already_set(o))
            continue; /* the command line wins */
        if (o->kind == CLI_LIST) {
            set_list(&l, &doc, o, v, key);
        } else if (v->type == YAML_SEQUENCE_NODE && strcmp(o->name, "identity-headers") == 0) {
            /* identity_headers: [rfc9440, plain], as in a route */
            *(const char **)o->dest = joined(&l, &doc, v, key);
            check_value(&l, v, o->name, *(const char **)o->dest);
        } else if (v->type != YAML_SCALAR_NODE)
            say(&l, v, "'%s' takes one value", key);
        else
            set_scalar(&l, o, v, key);
    }
out:
    if (loaded)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return l.problems;
}
