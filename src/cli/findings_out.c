/* Findings for a person or a script: text grouped by file, or JSON; the
 * exit code by the worst severity. */
#include "findings_out.h"

#include <stdlib.h>
#include <string.h>

int findings_exit_code(const mtls_findings *list)
{
    if (mtls_findings_count(list, MTLS_SEV_ERROR) > 0)
        return EXIT_FAIL;
    if (mtls_findings_count(list, MTLS_SEV_WARNING) > 0)
        return EXIT_WARNINGS;
    return EXIT_OK;
}

static const char *severity_color(mtls_severity sev)
{
    return sev == MTLS_SEV_ERROR     ? cli_red(stdout)
           : sev == MTLS_SEV_WARNING ? cli_yellow(stdout)
                                     : "";
}

static const char *plural(size_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

int findings_print(const mtls_findings *list, const char *what)
{
    size_t errors = mtls_findings_count(list, MTLS_SEV_ERROR);
    size_t warnings = mtls_findings_count(list, MTLS_SEV_WARNING);
    size_t notes = mtls_findings_count(list, MTLS_SEV_INFO);

    for (size_t i = 0; i < list->n; i++) {
        const mtls_finding *f = &list->items[i];
        const mtls_finding *prev = i > 0 ? &list->items[i - 1] : NULL;

        if (prev == NULL || strcmp(prev->file, f->file) != 0 ||
            strcmp(prev->subject, f->subject) != 0)
            printf("%s%s%s%s%s%s\n", i > 0 ? "\n" : "", cli_bold(stdout),
                   f->file[0] ? f->file : "setup", f->subject[0] ? " (" : "", f->subject,
                   f->subject[0] ? ")" : "");
        printf("  %s%s%s [%s]: %s\n", severity_color(f->severity), mtls_severity_name(f->severity),
               cli_reset(stdout), f->code, f->message);
        if (f->fix[0] != '\0')
            printf("    fix: %s\n", f->fix);
    }
    if (list->n > 0)
        printf("\n");
    if (errors + warnings + notes == 0)
        printf("%sno problems found%s %s\n", cli_green(stdout), cli_reset(stdout), what);
    else
        printf("%zu %s, %zu %s, %zu %s %s\n", errors, plural(errors, "error", "errors"), warnings,
               plural(warnings, "warning", "warnings"), notes, plural(notes, "note", "notes"),
               what);
    return findings_exit_code(list);
}

static cJSON *finding_json(const mtls_finding *f)
{
    cJSON *o = cJSON_CreateObject();

    if (o == NULL ||
        cJSON_AddStringToObject(o, "severity", mtls_severity_name(f->severity)) == NULL ||
        cJSON_AddStringToObject(o, "code", f->code) == NULL ||
        cJSON_AddStringToObject(o, "file", f->file) == NULL ||
        cJSON_AddStringToObject(o, "subject", f->subject) == NULL ||
        cJSON_AddStringToObject(o, "message", f->message) == NULL ||
        cJSON_AddStringToObject(o, "fix", f->fix) == NULL) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

int findings_print_json(const mtls_findings *list, cJSON *root)
{
    cJSON *items = root != NULL ? cJSON_AddArrayToObject(root, "findings") : NULL;
    int code = findings_exit_code(list);
    char *text = NULL;

    for (size_t i = 0; items != NULL && i < list->n; i++) {
        cJSON *o = finding_json(&list->items[i]);

        if (o == NULL || !cJSON_AddItemToArray(items, o)) {
            cJSON_Delete(o);
            items = NULL;
        }
    }
    if (items == NULL ||
        cJSON_AddNumberToObject(root, "errors",
                                (double)mtls_findings_count(list, MTLS_SEV_ERROR)) == NULL ||
        cJSON_AddNumberToObject(root, "warnings",
                                (double)mtls_findings_count(list, MTLS_SEV_WARNING)) == NULL ||
        cJSON_AddNumberToObject(root, "info", (double)mtls_findings_count(list, MTLS_SEV_INFO)) ==
            NULL ||
        cJSON_AddNumberToObject(root, "exit_code", code) == NULL ||
        (text = cJSON_Print(root)) == NULL) {
        cJSON_Delete(root);
        return cli_failf("out of memory");
    }
    printf("%s\n", text);
    free(text);
    cJSON_Delete(root);
    return code;
}
