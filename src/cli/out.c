/* Terminal output: errors on stderr, colour only on a terminal. */
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"

int cli_fail(const mtls_err *err)
{
    fprintf(stderr, "error: %s\n", err->msg[0] ? err->msg : "unknown failure");
    return EXIT_FAIL;
}

int cli_failf(const char *fmt, ...)
{
    va_list ap;

    fputs("error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_FAIL;
}

void cli_warnf(const char *fmt, ...)
{
    va_list ap;

    fputs("warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_color(FILE *f)
{
    const char *no = getenv("NO_COLOR");

    if (no != NULL && no[0] != '\0')
        return 0;
    return isatty(fileno(f));
}

static const char *code_if(FILE *f, const char *code)
{
    return cli_color(f) ? code : "";
}

const char *cli_green(FILE *f)
{
    return code_if(f, "\033[32m");
}

const char *cli_red(FILE *f)
{
    return code_if(f, "\033[31m");
}

const char *cli_yellow(FILE *f)
{
    return code_if(f, "\033[33m");
}

const char *cli_bold(FILE *f)
{
    return code_if(f, "\033[1m");
}

const char *cli_reset(FILE *f)
{
    return code_if(f, "\033[0m");
}

int cli_finish(int code)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "error: cannot write the output\n");
        return EXIT_FAIL;
    }
    return code;
}
