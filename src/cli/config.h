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
 * Reads the YAML mapping in path and sets every option of opts that the
 * command line left unset (flags override the file). Keys are the long
 * option names, with '_' or '-'; values are scalars, or sequences for
 * repeatable options; flags take true or false. Options named in skip (a
 * NULL-terminated list) are refused in a file. Unknown keys and bad values
 * are problems naming the line and column; every one is passed to problem.
 * routes (NULL: the key is refused) receives the `routes:` list: each a
 * mapping of path, exact, handler, upstream, identity_headers, allow.
 * Returns the number of problems (0: all set). The values stay valid until
 * cli_config_release().
 */
int cli_config_load(const char *path, const struct cli_opt *opts, const char *const *skip,
                    struct cli_config_routes *routes, cli_config_problem_fn problem, void *ctx);

/** Frees the values the last cli_config_load() set. */
void cli_config_release(void);

#endif
