/* The YAML configuration file of `mtls serve --config`: the same options as the flags. */
#ifndef MTLS_CLI_CONFIG_H
#define MTLS_CLI_CONFIG_H

#include "cli.h"
#include "mtls/server.h"

/** The routes of a configuration file (`routes:`), valid until cli_config_release(). */
struct cli_config_routes {
    mtls_route_opts *v;
    size_t n;
};

/** Receives one problem ("FILE:LINE:COLUMN: ..."), borrowed for the call. */
typedef void (*cli_config_problem_fn)(void *ctx, const char *msg);

/**
 * Checks one value of key (the long option's name, or a route's key:
 * "upstream", "allow", "identity-headers", "handler"); returns 0, or not 0
 * with why set (the problem is then said with the value's line and column).
 */
typedef int (*cli_config_check_fn)(void *ctx, const char *key, const char *value, char *why,
                                   size_t size);

/**
 * Reads the YAML mapping in path and sets every option of opts that the
 * command line left unset (flags override the file). Keys are the long
 * option names, with '_' or '-'; values are scalars, or sequences for
 * repeatable options; flags take true or false. Options named in skip (a
 * NULL-terminated list) are refused in a file. Unknown keys and bad values
 * are problems naming the line and column; every one is passed to problem.
 * routes (NULL: the key is refused) receives the `routes:` list: each a
 * mapping of path, exact, handler, upstream, identity_headers, allow.
 * check (may be NULL) checks each value; ctx goes to problem and check.
 * Returns the number of problems (0: all set). The values stay valid until
 * cli_config_release() or cli_config_forget().
 */
int cli_config_load(const char *path, const struct cli_opt *opts, const char *const *skip,
                    struct cli_config_routes *routes, cli_config_problem_fn problem,
                    cli_config_check_fn check, void *ctx);

/** Frees every value cli_config_load() set. */
void cli_config_release(void);

/** Where the values of the next cli_config_load() will begin (for a reload). */
size_t cli_config_mark(void);

/** Frees the values set between two marks: the older file's after a reload, or a refused one's. */
void cli_config_forget(size_t from, size_t to);

#endif
