/*
 * probe_report.h - turning an mtls_probe_result into what a person reads:
 * the findings, one diagnosis sentence (which side refused what, and the
 * flag that fixes it) and an exit code. Shared by `mtls probe` and
 * `mtls demo`.
 */
#ifndef MTLS_CLI_PROBE_REPORT_H
#define MTLS_CLI_PROBE_REPORT_H

#include <stdio.h>

#include "mtls/client.h"

/* Exit codes of `mtls probe` beyond cli.h's 0/1/2. */
enum {
    PROBE_EXIT_WE_REFUSED = 3,   /* we refused the server's certificate (or its TLS) */
    PROBE_EXIT_THEY_REFUSED = 4, /* the server refused us: an alert, a close, a 401/403 */
    PROBE_EXIT_NETWORK = 5,      /* DNS, connection refused, timeout, reset, not TLS */
};

/** Which of the exit codes above (or 0/1) result stands for. */
int probe_exit_code(const mtls_probe_result *res);

/** A few words for the exit code: "ok", "we refused the server", ... */
const char *probe_verdict(const mtls_probe_result *res);

/**
 * One plain sentence: what happened, which side refused what, and the flag
 * that would fix it. opts is what the probe ran with (for the hints).
 * Writes into buf (always NUL-terminated) and returns buf.
 */
char *probe_diagnose(const mtls_probe_result *res, const mtls_probe_opts *opts, char *buf,
                     size_t size);

/** Prints the findings (connection, TLS, chain, verification, client
 * certificate, HTTP answer) as aligned text to f. */
void probe_print_findings(FILE *f, const mtls_probe_result *res, const mtls_probe_opts *opts);

/**
 * What the server wrote (a reason phrase, a body), as one printable line:
 * control bytes, line breaks too, as \xHH, at most max bytes of text then
 * "...". A hostile server must not reach the terminal raw. Returns buf.
 */
char *probe_one_line(const char *text, size_t max, char *buf, size_t size);

#endif
