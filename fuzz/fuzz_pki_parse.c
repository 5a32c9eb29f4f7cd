/* libFuzzer target for the PKI layer's own parsers: the CA inventory
 * (index.txt lines), SANs, common names, serials, PEM labels, index times.
 * The CA object is made once; every input is parsed through each parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mtls/pki.h"
#include "pki/pki_internal.h"

static mtls_ca *ca;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    mtls_ca_opts opts = {.cn = "Fuzz CA", .days = 1, .key_type = MTLS_KEY_EC, .bits = 0};

    (void)argc;
    (void)argv;
    if (mtls_ca_generate("/nonexistent/fuzz", &opts, &ca, NULL) != 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), *copy;
    GENERAL_NAMES *gens = NULL;
    char out[84], label[64];
    time_t t;
    int code;
    size_t n;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    copy = strdup(text);
    if (copy != NULL) {
        if (mtls__ca_index_parse(ca, copy, "fuzz.index", NULL) == 0)
            (void)mtls_ca_records(ca, &n);
        free(copy);
    }
    (void)mtls_san_add(&gens, text, NULL);
    GENERAL_NAMES_free(gens);
    (void)mtls_cn_check(text, NULL);
    (void)mtls_serial_normalize(text, out, sizeof(out), NULL);
    (void)mtls_pem_label(text, label, sizeof(label));
    (void)mtls_index_time(text, &t);
    (void)mtls_crl_reason_parse(text, &code, NULL);
    free(text);
    return 0;
}
