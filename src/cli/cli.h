/*
 * cli.h - what the subcommands of the mtls tool share: the option parser,
 * output helpers, exit codes, and the list of commands.
 *
 * Only src/cli prints to a terminal; the library returns errors as values.
 */
#ifndef MTLS_CLI_H
#define MTLS_CLI_H

#include <stdio.h>

#include "mtls/base.h"

/* Exit codes shared by every command (documented in `mtls --help`). */
enum {
    EXIT_OK = 0,
    EXIT_FAIL = 1,  /* the operation failed */
    EXIT_USAGE = 2, /* bad flags or arguments, or bad configuration */
};

/* ---- options --------------------------------------------------------- */

enum cli_opt_kind {
    CLI_FLAG,   /* --name            sets int *dest to 1 */
    CLI_STRING, /* --name VALUE      sets const char **dest (last one wins) */
    CLI_LIST,   /* --name VALUE...   appends to struct cli_list *dest (repeatable) */
    CLI_INT,    /* --name N          sets long *dest, checked against [min, max] */
    CLI_CHOICE, /* --name WORD       dest is a struct cli_choices: sets *value from the list */
};

/** One accepted word of a CLI_CHOICE option and the value it stands for. */
struct cli_choice {
    const char *name;
    int value;
};

/** The destination of a CLI_CHOICE option: the words, and where the value goes. */
struct cli_choices {
    const struct cli_choice *list; /* ends with a NULL name */
    int *value;
};

/** The values of a repeatable option, borrowed from argv. */
struct cli_list {
    const char **items;
    size_t n;
};

/** One option of a command: its name, argument, help text and destination. */
struct cli_opt {
    const char *name; /* long name without the dashes: "days" */
    char short_name;  /* 'v' for -v, or 0 */
    enum cli_opt_kind kind;
    void *dest;
    const char *arg;  /* placeholder in help: "N", "FILE"; NULL for flags */
    const char *help; /* one line; say the default here */
    long min, max;    /* CLI_INT only */
};

/** What a command is and accepts; its help is generated from this. */
struct cli_spec {
    const char *name;           /* "cert sign" */
    const char *usage;          /* "--csr FILE --ca PREFIX ..." after the name */
    const char *summary;        /* one line */
    const char *description;    /* paragraphs, may be NULL */
    const struct cli_opt *opts; /* terminated by an entry with name NULL */
    int min_args, max_args;     /* positional arguments (max -1: unlimited) */
    const char *exit_codes;     /* extra lines for the exit-code section, or NULL */
};

/** Positional arguments left after parsing (borrowed from argv). */
struct cli_args {
    char **v;
    int n;
};

enum { CLI_PARSED = 0, CLI_DONE_HELP = 1, CLI_DONE_USAGE = 2 };

/**
 * Parses argv (argv[0] is the command's last word) against spec.
 * Returns CLI_PARSED; CLI_DONE_HELP after printing help on stdout (the
 * command then exits 0); or CLI_DONE_USAGE after printing one line on stderr
 * and "try 'mtls NAME --help'" (the command then exits 2).
 * Frees nothing; call cli_args_release() and cli_list_release() after use.
 */
int cli_parse(const struct cli_spec *spec, int argc, char **argv, struct cli_args *args);

/** Frees the arrays made by cli_parse (not the strings). */
void cli_args_release(struct cli_args *args);
void cli_list_release(struct cli_list *list);

/** Prints spec's help to f. */
void cli_help(const struct cli_spec *spec, FILE *f);

/** Prints the "  N  text" lines of spec's exit codes (the end of its help) to f. */
void cli_exit_codes(const struct cli_spec *spec, FILE *f);

/**
 * Set (by src/cli/docs.c): cli_parse() given --help stores the spec here
 * instead of printing it, so that the man pages and completions come from
 * the same tables as --help.
 */
extern const struct cli_spec **cli_spec_capture;

/** Prints "mtls NAME: message" and the help hint on stderr; returns EXIT_USAGE. */
int cli_usage_error(const struct cli_spec *spec, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- output ---------------------------------------------------------- */

/** Prints "error: <err->msg>" on stderr; returns EXIT_FAIL. */
int cli_fail(const mtls_err *err);

/** Prints "error: <formatted>" on stderr; returns EXIT_FAIL. */
int cli_failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** Prints "warning: <formatted>" on stderr. */
void cli_warnf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** 1 when f is a terminal and NO_COLOR is not set. */
int cli_color(FILE *f);

/** ANSI colour codes, or "" when colour is off for f. */
const char *cli_green(FILE *f);
const char *cli_red(FILE *f);
const char *cli_yellow(FILE *f);
const char *cli_bold(FILE *f);
const char *cli_reset(FILE *f);

/**
 * Flushes stdout and turns a write error (full disk, closed pipe) into
 * EXIT_FAIL, as git does before exiting. Returns code otherwise.
 */
int cli_finish(int code);

/* ---- commands -------------------------------------------------------- */

typedef int (*cli_cmd_fn)(int argc, char **argv);

/** One row of the command table in main.c. */
struct cli_command {
    const char *name; /* "init", "ca create" */
    cli_cmd_fn fn;
    const char *summary; /* one line, for `mtls --help` */
};

/**
 * The hidden commands of src/cli/docs.c: `mtls __man DIR` writes mtls.1 and
 * one page per command; `mtls __completion bash|zsh` prints a completion
 * script. Both read every command's option table.
 */
int cli_docs_man(const struct cli_command *cmds, size_t n, int argc, char **argv);
int cli_docs_completion(const struct cli_command *cmds, size_t n, int argc, char **argv);

/* Each command lives in src/cli/cmd_<name>.c. */
int cmd_version(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_ca_create(int argc, char **argv);
int cmd_ca_list(int argc, char **argv);
int cmd_ca_revoke(int argc, char **argv);
int cmd_crl_create(int argc, char **argv);
int cmd_crl_show(int argc, char **argv);
int cmd_key_create(int argc, char **argv);
int cmd_csr_create(int argc, char **argv);
int cmd_cert_sign(int argc, char **argv);
int cmd_cert_issue(int argc, char **argv);
int cmd_cert_show(int argc, char **argv);
int cmd_cert_verify(int argc, char **argv);
int cmd_cert_p12(int argc, char **argv);
int cmd_cert_lint(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
