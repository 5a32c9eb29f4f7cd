/* src/base/strbuf.c: a growing string. */
#include <criterion/criterion.h>
#include <string.h>

#include "mtls/base.h"

Test(strbuf, grows_and_stays_terminated)
{
    mtls_strbuf b = {0};

    for (int i = 0; i < 1000; i++)
        mtls_strbuf_str(&b, "abc");
    mtls_strbuf_add(&b, "xyz", 1);
    cr_assert_eq(b.len, 3001);
    cr_assert_eq(strlen(b.p), 3001);
    cr_assert_eq(b.p[3000], 'x');
    cr_assert_not(b.failed);
    mtls_strbuf_release(&b);
    cr_assert_null(b.p);
    mtls_strbuf_release(NULL);
}
