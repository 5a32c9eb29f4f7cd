/* mtls: the command table and dispatch. Each command parses its own flags. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include "cli.h"

#ifndef MTLS_VERSION
#define MTLS_VERSION "0.1.0"
#endif

/*
 * Every command, in the order `mtls --help` lists them. Two-word names are
 * subcommands of a group ("ca create"); `mtls ca` alone lists its group.
 */
static const struct cli_command commands[] = {
    {"init", cmd_init, "make the tutorial's PKI: two CAs, a client and a server certificate"},
    {"ca create", cmd_ca_create,
     "make a certificate authority (PREFIX.crt, PREFIX.key, inventory)"},
    {"ca list", cmd_ca_list, "list what a CA issued, with expiry and revocation"},
    {"ca revoke", cmd_ca_revoke, "mark a certificate revoked in its CA's inventory"},
    {"crl create", cmd_crl_create, "publish a CRL of a CA's revoked certificates"},
    {"crl show", cmd_crl_show, "show a CRL: issuer, updates, revoked serials (or --json)"},
    {"key create", cmd_key_create, "make a private key (EC P-256, RSA or Ed25519)"},
    {"csr create", cmd_csr_create, "make a certificate signing request for a key"},
    {"cert sign", cmd_cert_sign, "sign a CSR with a CA as a client or server certificate"},
    {"cert issue", cmd_cert_issue, "make a key and a certificate from a CA in one step"},
    {"cert show", cmd_cert_show, "show a certificate or CSR in plain words (or --json)"},
    {"cert verify", cmd_cert_verify,
     "check a certificate against a CA, purpose, host name and CRLs"},
    {"cert p12", cmd_cert_p12,
     "bundle certificate, key and chain as PKCS#12 (browsers, OS stores)"},
    {"cert lint", cmd_cert_lint,
     "find what clients refuse or is unsafe in certificates (v1, no SAN)"},
    {"serve", cmd_serve, "serve HTTPS with client certificates required (the article's server)"},
    {"bench", cmd_bench, "load an HTTPS server with mTLS clients; measure its CPU"},
    {"demo", cmd_demo, "run the mTLS tutorial end to end: PKI, server, the three curl checks"},
    {"doctor", cmd_doctor,
     "check a whole setup in one look: keys, chains, names, CRLs, modes, port"},
    {"probe", cmd_probe, "connect to an mTLS endpoint and say what failed and why (curl -v+)"},
    {"version", cmd_version, "print the version of mtls and of OpenSSL"},
};

static const size_t n_commands = sizeof(commands) / sizeof(commands[0]);

static const struct cli_opt version_opts[] = {
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const struct cli_spec version_spec = {
    .name = "version",
    .usage = "",
    .summary = "print the version of mtls and of OpenSSL",
    .description = "Prints the version of mtls, the OpenSSL it was built with and the one it runs "
                   "with.",
    .opts = version_opts,
    .min_args = 0,
    .max_args = 0,
    .exit_codes = NULL,
};

int cmd_version(int argc, char **argv)
{
    struct cli_args args = {0};
    int rc = cli_parse(&version_spec, argc, argv, &args);

    cli_args_release(&args);
    if (rc != CLI_PARSED)
        return rc == CLI_DONE_HELP ? EXIT_OK : EXIT_USAGE;
    printf("mtls %s (built with %s, running %s)\n", MTLS_VERSION, OPENSSL_VERSION_TEXT,
           OpenSSL_version(OPENSSL_VERSION));
    return EXIT_OK;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mtls COMMAND [OPTIONS]\n\n"
               "Mutual TLS from the first CA to a production server.\n\n"
               "commands:\n");
    for (size_t i = 0; i < n_commands; i++)
        fprintf(f, "  %-14s  %s\n", commands[i].name, commands[i].summary);
    fprintf(f,
            "\nRun 'mtls COMMAND --help' or 'mtls help COMMAND' for the options of one command.\n\n"
            "exit codes:\n"
            "  0  success\n"
            "  1  the operation failed (the message says why)\n"
            "  2  usage error, or a configuration the server cannot start with\n"
            "  some commands add their own codes: see their --help\n");
}

/* Lists the subcommands of group (e.g. "ca"), or returns 0 if there are none. */
static int list_group(const char *group, FILE *f)
{
    size_t len = strlen(group);
    int found = 0;

    for (size_t i = 0; i < n_commands; i++) {
        const char *name = commands[i].name;

        if (strncmp(name, group, len) == 0 && name[len] == ' ') {
            if (!found)
                fprintf(f, "usage: mtls %s SUBCOMMAND [OPTIONS]\n\nsubcommands:\n", group);
            fprintf(f, "  %-14s  %s\n", name, commands[i].summary);
            found = 1;
        }
    }
    if (found)
        fprintf(f, "\nRun 'mtls %s SUBCOMMAND --help' for its options.\n", group);
    return found;
}

static const struct cli_command *find_command(const char *first, const char *second)
{
    char two[64];

    if (second != NULL && second[0] != '-') {
        snprintf(two, sizeof(two), "%s %s", first, second);
        for (size_t i = 0; i < n_commands; i++) {
            if (strcmp(commands[i].name, two) == 0)
                return &commands[i];
        }
    }
    for (size_t i = 0; i < n_commands; i++) {
        if (strcmp(commands[i].name, first) == 0)
            return &commands[i];
    }
    return NULL;
}

static int is_help(const char *arg)
{
    return arg != NULL && (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0);
}

/*
 * Runs the command named by argv[1] (and argv[2] for a group) with the
 * rest of argv, or lists a group. An unknown name is a usage error.
 */
static int dispatch(int argc, char **argv)
{
    const char *second = argc > 2 ? argv[2] : NULL;
    const struct cli_command *cmd = find_command(argv[1], second);

    if (cmd == NULL) {
        if (second == NULL || second[0] == '-') {
            FILE *f = is_help(second) && argc == 3 ? stdout : stderr;

            if (list_group(argv[1], f)) {
                if (f == stdout)
                    return cli_finish(EXIT_OK);
                if (second != NULL)
                    fprintf(stderr, "\nmtls %s: unknown option '%s'\ntry 'mtls %s --help'\n",
                            argv[1], second, argv[1]);
                return EXIT_USAGE;
            }
        }
        if (second != NULL && list_group(argv[1], stderr) != 0) {
            fprintf(stderr, "\nmtls: '%s %s' is not a command\ntry 'mtls %s --help'\n", argv[1],
                    second, argv[1]);
            return EXIT_USAGE;
        }
        fprintf(stderr, "mtls: '%s' is not a command\ntry 'mtls --help'\n", argv[1]);
        return EXIT_USAGE;
    }
    /* The command sees argv starting at its last word. */
    if (strchr(cmd->name, ' ') != NULL)
        return cli_finish(cmd->fn(argc - 2, argv + 2));
    return cli_finish(cmd->fn(argc - 1, argv + 1));
}

/* `mtls help [COMMAND [SUBCOMMAND]]`: the same text as `mtls COMMAND --help`. */
static int help(int argc, char **argv)
{
    char *args[4];

    if (argc < 3) {
        usage(stdout);
        return cli_finish(EXIT_OK);
    }
    if (argc > 4 || argv[2][0] == '-' || (argc == 4 && argv[3][0] == '-')) {
        fprintf(stderr, "usage: mtls help [COMMAND [SUBCOMMAND]]\ntry 'mtls --help'\n");
        return EXIT_USAGE;
    }
    args[0] = argv[0];
    args[1] = argv[2];
    args[2] = argc == 4 ? argv[3] : (char *)"--help";
    args[3] = argc == 4 ? (char *)"--help" : NULL;
    return dispatch(argc, args);
}

int main(int argc, char **argv)
{
    /* A closed pipe must be a write error we report, not a silent death. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "help") == 0)
        return help(argc, argv);
    /* Hidden: the build makes the man pages and completions with these. */
    if (strcmp(argv[1], "__man") == 0)
        return cli_finish(cli_docs_man(commands, n_commands, argc - 1, argv + 1));
    if (strcmp(argv[1], "__completion") == 0)
        return cli_finish(cli_docs_completion(commands, n_commands, argc - 1, argv + 1));
    if (is_help(argv[1]) && argc == 2) {
        usage(stdout);
        return cli_finish(EXIT_OK);
    }
    if (strcmp(argv[1], "--version") == 0 && argc == 2)
        return cli_finish(cmd_version(argc - 1, argv + 1));
    if (argv[1][0] == '-') {
        fprintf(stderr, "mtls: unknown option '%s'\ntry 'mtls --help'\n", argv[1]);
        return EXIT_USAGE;
    }
    return dispatch(argc, argv);
}
