/*
 * findings_out.h - how `mtls cert lint` and `mtls doctor` print findings
 * (text or JSON) and turn them into an exit code.
 */
#ifndef MTLS_CLI_FINDINGS_OUT_H
#define MTLS_CLI_FINDINGS_OUT_H

#include <cjson/cJSON.h>

#include "cli.h"
#include "mtls/lint.h"

/* Warnings but no errors: the exit code of `cert lint` and `doctor`. */
#define EXIT_WARNINGS 3

/* The exit-code lines of both commands' --help (cli_spec.exit_codes), around
 * the command's own line for code 2 (lines go in numeric order). */
#define FINDINGS_EXIT_ERRORS "  1  at least one error was found\n"
#define FINDINGS_EXIT_WARNINGS "  3  warnings, but no error (notes alone exit 0)\n"

/** 1 when there is an error, EXIT_WARNINGS for warnings alone, else 0. */
int findings_exit_code(const mtls_findings *list);

/**
 * Prints the findings for a person on stdout, grouped by file and
 * certificate, each with what to do, then one summary line ending in what
 * (e.g. "in 6 certificates"). Returns findings_exit_code().
 */
int findings_print(const mtls_findings *list, const char *what);

/**
 * Adds "findings" (severity, code, file, subject, message, fix), "errors",
 * "warnings", "info" and "exit_code" to root (consumed: deleted here),
 * prints it on stdout. Returns findings_exit_code(), or EXIT_FAIL when out
 * of memory.
 */
int findings_print_json(const mtls_findings *list, cJSON *root);

#endif
