/* A table-driven option parser: each command describes its options once,
 * and both parsing and --help come from that description. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const struct cli_spec **cli_spec_capture;

void cli_args_release(struct cli_args *args)
{
    free(args->v);
    args->v = NULL;
    args->n = 0;
}

void cli_list_release(struct cli_list *list)
{
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

int cli_usage_error(const struct cli_spec *spec, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "mtls %s: ", spec->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\ntry 'mtls %s --help'\n", spec->name);
    return EXIT_USAGE;
}

static const struct cli_opt *find_long(const struct cli_spec *spec, const char *name, size_t len)
{
    for (const struct cli_opt *o = spec->opts; o != NULL && o->name != NULL; o++) {
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    }
    return NULL;
}

static const struct cli_opt *find_short(const struct cli_spec *spec, char c)
{
    for (const struct cli_opt *o = spec->opts; o != NULL && o->name != NULL; o++) {
        if (o->short_name == c)
            return o;
    }
    return NULL;
}

static int list_push(struct cli_list *list, const char *value)
{
    const char **grown = realloc(list->items, (list->n + 1) * sizeof(*grown));

    if (grown == NULL)
        return -1;
    list->items = grown;
    list->items[list->n++] = value;
    return 0;
}

/* "require or optional", "a, b or c": the words a CLI_CHOICE option takes. */
static const char *choice_words(const struct cli_choice *list, char *buf, size_t size)
{
    size_t n = 0, used = 0;

    while (list[n].name != NULL)
        n++;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < size; i++) {
        const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
        int w = snprintf(buf + used, size - used, "%s%s", sep, list[i].name);

        if (w < 0)
            break;
        used += (size_t)w;
    }
    return buf;
}

static int set_choice(const struct cli_spec *spec, const struct cli_opt *o, const char *value)
{
    const struct cli_choices *choices = o->dest;
    char words[128];

    for (const struct cli_choice *ch = choices->list; ch->name != NULL; ch++) {
        if (strcmp(ch->name, value) == 0) {
            *choices->value = ch->value;
            return 0;
        }
    }
    return cli_usage_error(spec, "--%s must be %s, not '%s'", o->name,
                           choice_words(choices->list, words, sizeof(words)), value);
}

static int set_value(const struct cli_spec *spec, const struct cli_opt *o, const char *value)
{
    char *end;
    long n;

    switch (o->kind) {
    case CLI_FLAG:
        *(int *)o->dest = 1;
        return 0;
    case CLI_STRING:
        *(const char **)o->dest = value;
        return 0;
    case CLI_LIST:
        if (list_push((struct cli_list *)o->dest, value) != 0)
            return cli_usage_error(spec, "out of memory");
        return 0;
    case CLI_INT:
        errno = 0;
        n = strtol(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0')
            return cli_usage_error(spec, "--%s needs a whole number, not '%s'", o->name, value);
        if (n < o->min || n > o->max)
            return cli_usage_error(spec, "--%s must be between %ld and %ld, not %ld", o->name,
                                   o->min, o->max, n);
        *(long *)o->dest = n;
        return 0;
    case CLI_CHOICE:
        return set_choice(spec, o, value);
    }
    return cli_usage_error(spec, "internal error: bad option kind");
}

int cli_parse(const struct cli_spec *spec, int argc, char **argv, struct cli_args *args)
{
    int only_args = 0;

    args->v = calloc((size_t)argc + 1, sizeof(char *));
    args->n = 0;
    if (args->v == NULL)
        return cli_usage_error(spec, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const struct cli_opt *o = NULL;
        const char *value = NULL;

        if (only_args || a[0] != '-' || a[1] == '\0') {
            args->v[args->n++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (cli_spec_capture != NULL)
                *cli_spec_capture = spec; /* src/cli/docs.c reads the table instead */
            else
                cli_help(spec, stdout);
            return CLI_DONE_HELP;
        }
        if (a[1] == '-') {
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);

            o = find_long(spec, a + 2, len);
            if (o == NULL)
                return cli_usage_error(spec, "unknown option '%.*s'", (int)len + 2, a);
            if (eq != NULL) {
                if (o->kind == CLI_FLAG)
                    return cli_usage_error(spec, "--%s takes no value", o->name);
                value = eq + 1;
            }
        } else {
            if (a[2] != '\0')
                return cli_usage_error(spec, "unknown option '%s'", a);
            o = find_short(spec, a[1]);
            if (o == NULL)
                return cli_usage_error(spec, "unknown option '%s'", a);
        }
        if (o->kind != CLI_FLAG && value == NULL) {
            if (i + 1 >= argc)
                return cli_usage_error(spec, "--%s needs a value (%s)", o->name,
                                       o->arg ? o->arg : "VALUE");
            value = argv[++i];
        }
        if (set_value(spec, o, value) != 0)
            return CLI_DONE_USAGE;
    }
    if (args->n < spec->min_args)
        return cli_usage_error(spec, "missing argument: %s", spec->usage);
    if (spec->max_args >= 0 && args->n > spec->max_args)
        return cli_usage_error(spec, "unexpected argument '%s'", args->v[spec->max_args]);
    return CLI_PARSED;
}

/*
 * Prints the entries of a command's exit-code text whose code lies in
 * [lo, hi]. An entry is a line "  N  text" and the indented lines after it,
 * so that codes come out in numeric order around the shared usage line.
 */
static void print_exit_codes(FILE *f, const char *text, int lo, int hi)
{
    int code = -1;

    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) + 1 : strlen(line);
        char *num_end;
        long n = strtol(line, &num_end, 10);

        /* A new entry starts with its code; continuation lines keep the last one. */
        if (num_end != line && num_end[0] == ' ')
            code = (int)n;
        if (code >= lo && code <= hi)
            fprintf(f, "%.*s", (int)len, line);
        line += len;
    }
}

void cli_help(const struct cli_spec *spec, FILE *f)
{
    fprintf(f, "usage: mtls %s %s\n\n%s\n", spec->name, spec->usage ? spec->usage : "",
            spec->summary);
    if (spec->description != NULL)
        fprintf(f, "\n%s\n", spec->description);
    fprintf(f, "\noptions:\n");
    for (const struct cli_opt *o = spec->opts; o != NULL && o->name != NULL; o++) {
        char left[64];

        if (o->short_name)
            snprintf(left, sizeof(left), "-%c, --%s%s%s", o->short_name, o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        else
            snprintf(left, sizeof(left), "    --%s%s%s", o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        if (strlen(left) > 26)
            fprintf(f, "  %s\n  %-26s  %s\n", left, "", o->help);
        else
            fprintf(f, "  %-26s  %s\n", left, o->help);
    }
    fprintf(f, "  %-26s  %s\n", "-h, --help", "show this help and exit");
    fprintf(f, "\nexit codes:\n");
    cli_exit_codes(spec, f);
}

void cli_exit_codes(const struct cli_spec *spec, FILE *f)
{
    fprintf(f, "  0  success\n");
    if (spec->exit_codes != NULL) {
        print_exit_codes(f, spec->exit_codes, 0, 1);
    } else {
        fprintf(f, "  1  the operation failed (the message says why)\n");
    }
    fprintf(f, "  2  usage error: unknown option, missing or bad value\n");
    if (spec->exit_codes != NULL)
        print_exit_codes(f, spec->exit_codes, 2, 255);
}
