/* test_core.c - version, status strings, backend queries. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "suite.h"

START_TEST(version_matches_header)
{
    ck_assert_int_eq(lm_version(), LM_VERSION_NUMBER);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", LM_VERSION_MAJOR, LM_VERSION_MINOR, LM_VERSION_PATCH);
    ck_assert_str_eq(lm_version_string(), want);
}
END_TEST

START_TEST(status_strings_are_distinct)
{
    for (int a = LM_OK; a <= LM_ERR_NUMERIC; a++) {
        ck_assert_ptr_nonnull(lm_status_str((lm_status)a));
        ck_assert_str_ne(lm_status_str((lm_status)a), "unknown status");
        for (int b = a + 1; b <= LM_ERR_NUMERIC; b++)
            ck_assert_str_ne(lm_status_str((lm_status)a), lm_status_str((lm_status)b));
    }
    ck_assert_str_eq(lm_status_str((lm_status)999), "unknown status");
}
END_TEST

START_TEST(status_values_are_pinned)
{
    /* The ABI promises these numbers. */
    ck_assert_int_eq(LM_ERR_INVALID_ARGUMENT, 1);
    ck_assert_int_eq(LM_ERR_NO_MEMORY, 2);
    ck_assert_int_eq(LM_ERR_BUFFER_TOO_SMALL, 8);
    ck_assert_int_eq(LM_ERR_NUMERIC, 14);
}
END_TEST

START_TEST(backends)
{
    ck_assert_int_eq(lm_backend_available(LM_BACKEND_CPU), 1);
    ck_assert_int_eq(lm_backend_available(LM_BACKEND_AUTO), 1);
    ck_assert_str_eq(lm_backend_name(LM_BACKEND_CUDA), "cuda");
#ifndef LM_HAVE_CUDA
    ck_assert_int_eq(lm_backend_available(LM_BACKEND_CUDA), 0);
#endif
}
END_TEST

START_TEST(error_copy_truncates)
{
    lmi_err e;
    ck_assert_int_eq(lmi_fail(&e, LM_ERR_SHAPE, "tensor %s has %d dims", "x", 3), LM_ERR_SHAPE);
    char buf[8];
    lmi_err_copy(&e, buf, sizeof buf);
    ck_assert_str_eq(buf, "tensor ");
    lmi_err_copy(&e, NULL, 0); /* must not crash */
}
END_TEST

START_TEST(alloc_overflow_is_null)
{
    ck_assert_ptr_null(lmi_alloc(SIZE_MAX / 2, 4));
    ck_assert_ptr_null(lmi_alloc_raw(SIZE_MAX / 2, 4));
    void *p = lmi_alloc_raw(3, 4);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    lmi_free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("core");
    add_tcase(s, "core", 0,
              (const TTest *[]){version_matches_header, status_strings_are_distinct,
                                status_values_are_pinned, backends, error_copy_truncates,
                                alloc_overflow_is_null, NULL});
    return run_suite(s);
}
