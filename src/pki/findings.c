/* A list of findings (cert lint, doctor): severity, code, sentence, fix. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtls/lint.h"

const char *mtls_severity_name(mtls_severity sev)
{
    switch (sev) {
    case MTLS_SEV_ERROR:
        return "error";
    case MTLS_SEV_WARNING:
        return "warning";
    case MTLS_SEV_INFO:
        break;
    }
    return "info";
}

void mtls_findings_init(mtls_findings *list)
{
    memset(list, 0, sizeof(*list));
}

static void finding_release(mtls_finding *f)
{
    free(f->file);
    free(f->subject);
    free(f->message);
    free(f->fix);
}

void mtls_findings_release(mtls_findings *list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < list->n; i++)
        finding_release(&list->items[i]);
    free(list->items);
    mtls_findings_init(list);
}

static char *dup_or_empty(const char *s)
{
    return strdup(s != NULL ? s : "");
}

int mtls_findings_add(mtls_findings *list, mtls_severity sev, const char *code, const char *file,
                      const char *subject, const char *fix, const char *fmt, ...)
{
    mtls_finding f = {.severity = sev, .code = code};
    va_list ap;
    int len;

    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        mtls_finding *grown = realloc(list->items, cap * sizeof(*grown));

        if (grown == NULL)
            goto nomem;
        list->items = grown;
        list->cap = cap;
    }
    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0 || (f.message = malloc((size_t)len + 1)) == NULL)
        goto nomem;
    va_start(ap, fmt);
    vsnprintf(f.message, (size_t)len + 1, fmt, ap);
    va_end(ap);
    f.file = dup_or_empty(file);
    f.subject = dup_or_empty(subject);
    f.fix = dup_or_empty(fix);
    if (f.file == NULL || f.subject == NULL || f.fix == NULL)
        goto nomem;
    list->items[list->n++] = f;
    return 0;
nomem:
    finding_release(&f);
    list->nomem = 1;
    return MTLS_E_NOMEM;
}

size_t mtls_findings_count(const mtls_findings *list, mtls_severity sev)
{
    size_t n = 0;

    for (size_t i = 0; i < list->n; i++)
        n += list->items[i].severity == sev;
    return n;
}
