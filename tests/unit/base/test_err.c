#include <criterion/criterion.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "mtls/base.h"

Test(err, set_returns_code_and_formats)
{
    mtls_err err;

    mtls_err_clear(&err);
    cr_assert_eq(mtls_err_set(&err, MTLS_E_INVALID, "bad value '%s'", "x"), MTLS_E_INVALID);
    cr_assert_eq(err.code, MTLS_E_INVALID);
    cr_assert_str_eq(err.msg, "bad value 'x'");
}

Test(err, null_err_is_allowed)
{
    cr_assert_eq(mtls_err_set(NULL, MTLS_E_IO, "ignored"), MTLS_E_IO);
}

Test(err, ssl_appends_reason_and_clears_queue)
{
    mtls_err err;

    /* Provoke a real OpenSSL error: fetching an algorithm that does not exist. */
    EVP_MD *md = EVP_MD_fetch(NULL, "NO-SUCH-DIGEST", NULL);
    cr_assert_null(md);
    mtls_err_ssl(&err, MTLS_E_CRYPTO, "EVP_MD_fetch() failed");
    cr_assert(strncmp(err.msg, "EVP_MD_fetch() failed: ", 23) == 0, "got '%s'", err.msg);
    cr_assert_gt(strlen(err.msg), 23);
    cr_assert_eq(ERR_peek_error(), 0);
}

Test(err, long_messages_are_truncated_not_overflowed)
{
    mtls_err err;
    char big[2048];

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    mtls_err_set(&err, MTLS_E_IO, "%s", big);
    cr_assert_eq(strlen(err.msg), MTLS_ERR_MSG_MAX - 1);
}
