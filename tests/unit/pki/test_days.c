/* Day counts as a person reads them: mtls_days_left() and mtls_expiry_words(). */
#include <criterion/criterion.h>
#include <time.h>

#include "mtls/pki.h"

#define DAY 86400L

Test(days, rounded_to_the_nearest_day_with_the_sign_of_expired)
{
    time_t now = 1800000000;

    /* A fresh 365-day certificate, some minutes old, has 365 days left. */
    cr_assert_eq(mtls_days_left(now + 365 * DAY - MTLS_SKEW_SECONDS, now), 365);
    cr_assert_eq(mtls_days_left(now + 365 * DAY - 1, now), 365);
    cr_assert_eq(mtls_days_left(now + 364 * DAY + DAY / 2 + 1, now), 365);
    cr_assert_eq(mtls_days_left(now + 364 * DAY + DAY / 2 - 1, now), 364);
    cr_assert_eq(mtls_days_left(now + 30 * DAY, now), 30);
    /* Never 0 on either side: the sign alone tells valid from expired. */
    cr_assert_eq(mtls_days_left(now + 60, now), 1);
    cr_assert_eq(mtls_days_left(now, now), 0);
    cr_assert_eq(mtls_days_left(now - 1, now), -1);
    cr_assert_eq(mtls_days_left(now - 3 * DAY + 100, now), -3);
    cr_assert_eq(mtls_days_left(now - 3 * DAY - DAY / 2 - 1, now), -4);
}

Test(days, words)
{
    time_t now = 1800000000;
    char buf[64];

    cr_assert_str_eq(mtls_expiry_words(now + 365 * DAY - MTLS_SKEW_SECONDS, now, buf, sizeof(buf)),
                     "expires in 365 days");
    cr_assert_str_eq(mtls_expiry_words(now + DAY + 3600, now, buf, sizeof(buf)),
                     "expires in 1 day");
    cr_assert_str_eq(mtls_expiry_words(now + 2 * DAY - 3600, now, buf, sizeof(buf)),
                     "expires in 2 days");
    cr_assert_str_eq(mtls_expiry_words(now + 3600, now, buf, sizeof(buf)),
                     "expires in less than a day");
    cr_assert_str_eq(mtls_expiry_words(now - 3600, now, buf, sizeof(buf)),
                     "expired less than a day ago");
    cr_assert_str_eq(mtls_expiry_words(now - 10 * DAY + 60, now, buf, sizeof(buf)),
                     "expired 10 days ago");
}
