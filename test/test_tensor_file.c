/* test_tensor_file.c - the public safetensors reader (lm_tensor_file_*):
 * names, info, conversion, and every argument and file it must refuse. */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "longmamba.h"
#include "format/safetensors.h"

static char dir[] = "/tmp/lm_tf_XXXXXX";
static char path[300];

/* A file with f64 [2,3], f32 [4], bf16 [2], i64 [3] (one value past
 * int32 in "big"), i32 [2,2], u8 [3], an empty f32 [0]. */
static void setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(strcpy(dir, "/tmp/lm_tf_XXXXXX")));
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    static const double f64[] = {1.5, -2, 3, 4, 5, 6.25};
    static const float f32[] = {0.5f, 1, 2, 3};
    static const uint16_t bf16[] = {0x3f80, 0xc000}; /* 1.0, -2.0 */
    static const int64_t i64[] = {7, -8, 9}, big[] = {1, (int64_t)1 << 40};
    static const int32_t i32[] = {1, 2, 3, 4};
    static const uint8_t u8[] = {0, 200, 255};
    static const int64_t s23[] = {2, 3}, s4[] = {4}, s2[] = {2}, s3[] = {3}, s22[] = {2, 2},
                         s0[] = {0};
    const lmi_st_out t[] = {
        {"f64", LMI_ST_F64, 2, s23, f64},   {"f32", LMI_ST_F32, 1, s4, f32},
        {"bf16", LMI_ST_BF16, 1, s2, bf16}, {"i64", LMI_ST_I64, 1, s3, i64},
        {"big", LMI_ST_I64, 1, s2, big},    {"i32", LMI_ST_I32, 2, s22, i32},
        {"u8", LMI_ST_U8, 1, s3, u8},       {"empty", LMI_ST_F32, 1, s0, f32},
    };
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_st_write(path, t, sizeof t / sizeof t[0], NULL, NULL, 0, &e), LM_OK);
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static lm_tensor_file *open_ok(void)
{
    lm_tensor_file *f = NULL;
    char err[256];
    ck_assert_int_eq(lm_tensor_file_open(path, &f, err, sizeof err), LM_OK);
    ck_assert_str_eq(err, "");
    return f;
}

START_TEST(names_and_info)
{
    lm_tensor_file *f = open_ok();
    ck_assert_uint_eq(lm_tensor_file_count(f), 8);
    int seen = 0;
    for (size_t i = 0; i < 8; i++)
        seen += strcmp(lm_tensor_file_name(f, i), "i32") == 0;
    ck_assert_int_eq(seen, 1);
    ck_assert_ptr_null(lm_tensor_file_name(f, 8));
    ck_assert_ptr_null(lm_tensor_file_name(NULL, 0));
    ck_assert_uint_eq(lm_tensor_file_count(NULL), 0);

    lm_tensor_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(lm_tensor_file_get_info(f, "f64", &info, NULL, 0), LM_OK);
    ck_assert_int_eq(info.dtype, LM_DTYPE_F64);
    ck_assert_int_eq(info.ndim, 2);
    ck_assert_int_eq(info.shape[0], 2);
    ck_assert_int_eq(info.shape[1], 3);
    ck_assert_int_eq(info.shape[2], 0);
    ck_assert_int_eq(info.n_elements, 6);
    ck_assert_int_eq(lm_tensor_file_get_info(f, "empty", &info, NULL, 0), LM_OK);
    ck_assert_int_eq(info.n_elements, 0);
    ck_assert_str_eq(lm_dtype_name(LM_DTYPE_BF16), "bf16");
    ck_assert_str_eq(lm_dtype_name(LM_DTYPE_I64), "i64");
    ck_assert_str_eq(lm_dtype_name((lm_dtype)99), "unknown");

    /* A caller's older, shorter struct: fields past struct_size untouched. */
    lm_tensor_info small = {.struct_size = offsetof(lm_tensor_info, ndim), .ndim = -5};
    ck_assert_int_eq(lm_tensor_file_get_info(f, "i32", &small, NULL, 0), LM_OK);
    ck_assert_int_eq(small.dtype, LM_DTYPE_I32);
    ck_assert_int_eq(small.ndim, -5);
    lm_tensor_file_free(f);
}
END_TEST

START_TEST(read_converts)
{
    lm_tensor_file *f = open_ok();
    double d[6];
    ck_assert_int_eq(lm_tensor_file_read_f64(f, "f64", d, 6, NULL, 0), LM_OK);
    ck_assert(d[0] == 1.5 && d[5] == 6.25);
    ck_assert_int_eq(lm_tensor_file_read_f64(f, "bf16", d, 6, NULL, 0), LM_OK);
    ck_assert(d[0] == 1.0 && d[1] == -2.0);
    float x[6];
    ck_assert_int_eq(lm_tensor_file_read_f32(f, "f64", x, 6, NULL, 0), LM_OK);
    ck_assert(x[1] == -2.0f);
    ck_assert_int_eq(lm_tensor_file_read_f32(f, "f32", x, 4, NULL, 0), LM_OK);
    ck_assert(x[0] == 0.5f && x[3] == 3.0f);
    int32_t v[4];
    ck_assert_int_eq(lm_tensor_file_read_i32(f, "i64", v, 4, NULL, 0), LM_OK);
    ck_assert(v[0] == 7 && v[1] == -8 && v[2] == 9);
    ck_assert_int_eq(lm_tensor_file_read_i32(f, "i32", v, 4, NULL, 0), LM_OK);
    ck_assert_int_eq(v[3], 4);
    ck_assert_int_eq(lm_tensor_file_read_i32(f, "u8", v, 4, NULL, 0), LM_OK);
    ck_assert(v[1] == 200 && v[2] == 255);
    ck_assert_int_eq(lm_tensor_file_read_f32(f, "empty", NULL, 0, NULL, 0), LM_OK);
    lm_tensor_file_free(f);
}
END_TEST

START_TEST(bad_arguments)
{
    lm_tensor_file *f = open_ok();
    char err[256];
    double d[6];
    int32_t v[4];
    lm_tensor_info info = {.struct_size = sizeof info};
    /* wrong dtype, both ways */
    ck_assert_int_eq(lm_tensor_file_read_f64(f, "i32", d, 6, err, sizeof err), LM_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err, "i32"));
    ck_assert_int_eq(lm_tensor_file_read_i32(f, "f32", v, 4, err, sizeof err), LM_ERR_UNSUPPORTED);
    ck_assert_int_eq(lm_tensor_file_read_f32(f, "u8", (float *)d, 6, NULL, 0), LM_ERR_UNSUPPORTED);
    /* short buffer: nothing written */
    d[0] = 42;
    ck_assert_int_eq(lm_tensor_file_read_f64(f, "f64", d, 5, err, sizeof err),
                     LM_ERR_BUFFER_TOO_SMALL);
    ck_assert(d[0] == 42);
    ck_assert_int_eq(lm_tensor_file_read_f64(f, "f64", NULL, 6, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    /* missing tensor */
    ck_assert_int_eq(lm_tensor_file_read_i32(f, "nope", v, 4, err, sizeof err), LM_ERR_MISSING);
    ck_assert_ptr_nonnull(strstr(err, "nope"));
    ck_assert_int_eq(lm_tensor_file_get_info(f, "nope", &info, NULL, 0), LM_ERR_MISSING);
    /* value past int32 */
    ck_assert_int_eq(lm_tensor_file_read_i32(f, "big", v, 4, err, sizeof err), LM_ERR_OUT_OF_RANGE);
    /* NULLs and an unset struct_size */
    ck_assert_int_eq(lm_tensor_file_read_f64(NULL, "f64", d, 6, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_tensor_file_read_f64(f, NULL, d, 6, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_tensor_file_get_info(f, "f64", NULL, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    lm_tensor_info unset = {0};
    ck_assert_int_eq(lm_tensor_file_get_info(f, "f64", &unset, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    lm_tensor_file *g = (lm_tensor_file *)1;
    ck_assert_int_eq(lm_tensor_file_open(NULL, &g, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(lm_tensor_file_open(path, NULL, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    lm_tensor_file_free(NULL);
    lm_tensor_file_free(f);
}
END_TEST

START_TEST(bad_files)
{
    lm_tensor_file *f = (lm_tensor_file *)1;
    char err[256], other[320];
    snprintf(other, sizeof other, "%s/none.safetensors", dir);
    ck_assert_int_eq(lm_tensor_file_open(other, &f, err, sizeof err), LM_ERR_MISSING);
    ck_assert_ptr_null(f);
    ck_assert_ptr_nonnull(strstr(err, "none.safetensors"));
    /* Every truncation of a valid file is refused, never read past. */
    FILE *in = fopen(path, "rb");
    ck_assert_ptr_nonnull(in);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, in);
    fclose(in);
    ck_assert_uint_gt(n, 16);
    snprintf(other, sizeof other, "%s/cut.safetensors", dir);
    for (size_t cut = 0; cut < n; cut += 7) {
        FILE *out = fopen(other, "wb");
        ck_assert_uint_eq(fwrite(buf, 1, cut, out), cut);
        fclose(out);
        lm_status st = lm_tensor_file_open(other, &f, err, sizeof err);
        ck_assert_msg(st == LM_ERR_FORMAT, "cut at %zu: status %d", cut, (int)st);
        ck_assert_ptr_null(f);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tensor_file");
    TCase *tc = tcase_create("tensor_file");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, names_and_info);
    tcase_add_test(tc, read_converts);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, bad_files);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
