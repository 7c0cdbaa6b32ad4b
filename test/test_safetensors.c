/* test_safetensors.c - the safetensors reader and writer: round trip,
 * dtype conversion, and every class of bad input. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/safetensors.h"
#include "suite.h"

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lm_st_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

/* A file image: 8-byte length, the header text, data_size zero bytes. */
static uint8_t *image(const char *header, size_t data_size, size_t *size)
{
    size_t hl = strlen(header);
    *size = 8 + hl + data_size;
    uint8_t *b = calloc(1, *size);
    for (int k = 0; k < 8; k++)
        b[k] = (uint8_t)((uint64_t)hl >> (8 * k));
    memcpy(b + 8, header, hl);
    return b;
}

static lm_status parse_image(const char *header, size_t data_size, lmi_err *e)
{
    size_t size;
    uint8_t *b = image(header, data_size, &size);
    lmi_st_file f;
    lm_status st = lmi_st_parse(b, size, &f, e);
    if (st == LM_OK)
        lmi_st_close(&f);
    free(b);
    return st;
}

/* ---- round trip ---------------------------------------------------------- */

START_TEST(round_trip)
{
    make_tmpdir();
    char path[300];
    snprintf(path, sizeof path, "%s/t.safetensors", tmpdir);

    float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    uint16_t f16[4] = {0x3c00, 0xc000, 0x0001, 0x7c00};
    uint16_t bf16[4] = {0x3f80, 0x4000, 0xbf80, 0x0000};
    double f64[3] = {0.1, -1e300, 3.0};
    int64_t i64[2] = {-5, 1LL << 40};
    uint8_t u8[5] = {1, 2, 3, 4, 5};
    float scalar = 42.0f;
    int64_t s23[2] = {2, 3}, s4[1] = {4}, s22[2] = {2, 2}, s3[1] = {3}, s2[1] = {2}, s5[1] = {5},
            s03[2] = {0, 3};
    /* Listed smallest-element first so the writer must reorder the data. */
    lmi_st_out outs[] = {
        {"bytes", LMI_ST_U8, 1, s5, u8},
        {"half", LMI_ST_F16, 1, s4, f16},
        {"w\"eird\\name\n\xc3\xa9", LMI_ST_F32, 2, s23, f32},
        {"brain", LMI_ST_BF16, 2, s22, bf16},
        {"dbl", LMI_ST_F64, 1, s3, f64},
        {"ints", LMI_ST_I64, 1, s2, i64},
        {"scalar", LMI_ST_F32, 0, NULL, &scalar},
        {"empty", LMI_ST_F32, 2, s03, NULL},
    };
    size_t nt = sizeof outs / sizeof outs[0];
    const char *mk[] = {"format", "note"};
    const char *mv[] = {"pt", "quote \" backslash \\ newline \n tab \t"};
    lmi_err e = {{0}};
    ck_assert_msg(lmi_st_write(path, outs, nt, mk, mv, 2, &e) == LM_OK, "%s", e.msg);

    /* Header length is a multiple of 8 so the data buffer starts aligned. */
    FILE *fp = fopen(path, "rb");
    uint8_t lb[8];
    ck_assert_uint_eq(fread(lb, 1, 8, fp), 8);
    fclose(fp);
    uint64_t hl = 0;
    for (int k = 7; k >= 0; k--)
        hl = (hl << 8) | lb[k];
    ck_assert_uint_eq(hl % 8, 0);

    lmi_st_file f;
    ck_assert_msg(lmi_st_open(path, &f, &e) == LM_OK, "%s", e.msg);
    ck_assert_uint_eq(f.n_tensors, nt);
    for (size_t k = 0; k < nt; k++) {
        const lmi_st_tensor *t = lmi_st_find(&f, outs[k].name);
        ck_assert_msg(t != NULL, "missing %s", outs[k].name);
        ck_assert_str_eq(t->name, outs[k].name);
        ck_assert_int_eq(t->dtype, outs[k].dtype);
        ck_assert_int_eq(t->ndim, outs[k].ndim);
        size_t nel = 1;
        for (int d = 0; d < t->ndim; d++) {
            ck_assert_int_eq(t->shape[d], outs[k].shape[d]);
            nel *= (size_t)outs[k].shape[d];
        }
        size_t es = lmi_st_dtype_size(t->dtype);
        ck_assert_uint_eq(t->nbytes, nel * es);
        if (nel)
            ck_assert_int_eq(memcmp(t->data, outs[k].data, t->nbytes), 0);
        /* Every tensor sits at an address aligned to its element size. */
        ck_assert_uint_eq((uintptr_t)t->data % es, 0);
        ck_assert(t->data >= (const uint8_t *)f.map.addr);
        ck_assert(t->data + t->nbytes <= (const uint8_t *)f.map.addr + f.map.size);
    }
    ck_assert_ptr_null(lmi_st_find(&f, "nope"));
    ck_assert_ptr_null(lmi_st_find(&f, "w\"eird"));
    ck_assert_str_eq(lmi_st_meta(&f, "format"), "pt");
    ck_assert_str_eq(lmi_st_meta(&f, "note"), mv[1]);
    ck_assert_ptr_null(lmi_st_meta(&f, "other"));

    /* The data buffer has no gaps (the reference reader insists on it). */
    ck_assert_uint_eq(f.map.size, 8 + hl + sizeof f32 + sizeof f16 + sizeof bf16 + sizeof f64 +
                                      sizeof i64 + sizeof u8 + sizeof scalar);

    float conv[6];
    ck_assert_int_eq(lmi_st_to_f32(lmi_st_find(&f, "brain"), conv, &e), LM_OK);
    ck_assert(conv[0] == 1.0f && conv[1] == 2.0f && conv[2] == -1.0f && conv[3] == 0.0f);
    ck_assert_int_eq(lmi_st_to_f32(lmi_st_find(&f, "dbl"), conv, &e), LM_OK);
    ck_assert(conv[0] == (float)0.1 && isinf(conv[1]) && conv[1] < 0 && conv[2] == 3.0f);
    ck_assert_int_eq(lmi_st_to_f32(lmi_st_find(&f, "ints"), conv, &e), LM_ERR_UNSUPPORTED);
    lmi_st_close(&f);
    lmi_st_close(&f); /* idempotent on a closed file */

    /* No temp file is left next to the output. */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) -eq 1", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
    remove_tmpdir();
}
END_TEST

START_TEST(empty_file_round_trip)
{
    make_tmpdir();
    char path[300];
    snprintf(path, sizeof path, "%s/e.safetensors", tmpdir);
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_st_write(path, NULL, 0, NULL, NULL, 0, &e), LM_OK);
    lmi_st_file f;
    ck_assert_msg(lmi_st_open(path, &f, &e) == LM_OK, "%s", e.msg);
    ck_assert_uint_eq(f.n_tensors, 0);
    ck_assert_ptr_null(lmi_st_find(&f, "x"));
    lmi_st_close(&f);
    remove_tmpdir();
}
END_TEST

START_TEST(write_errors)
{
    make_tmpdir();
    char path[300];
    snprintf(path, sizeof path, "%s/w.safetensors", tmpdir);
    float v[2] = {1, 2};
    int64_t s2[1] = {2}, sneg[1] = {-1};
    lmi_err e = {{0}};
    lmi_st_out dup[] = {{"a", LMI_ST_F32, 1, s2, v}, {"a", LMI_ST_F32, 1, s2, v}};
    ck_assert_int_eq(lmi_st_write(path, dup, 2, NULL, NULL, 0, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(e.msg, "duplicate"));
    lmi_st_out neg[] = {{"a", LMI_ST_F32, 1, sneg, v}};
    ck_assert_int_eq(lmi_st_write(path, neg, 1, NULL, NULL, 0, &e), LM_ERR_INVALID_ARGUMENT);
    lmi_st_out meta[] = {{"__metadata__", LMI_ST_F32, 1, s2, v}};
    ck_assert_int_eq(lmi_st_write(path, meta, 1, NULL, NULL, 0, &e), LM_ERR_INVALID_ARGUMENT);
    lmi_st_out nodata[] = {{"a", LMI_ST_F32, 1, s2, NULL}};
    ck_assert_int_eq(lmi_st_write(path, nodata, 1, NULL, NULL, 0, &e), LM_ERR_INVALID_ARGUMENT);
    lmi_st_out ok[] = {{"a", LMI_ST_F32, 1, s2, v}};
    ck_assert_int_eq(lmi_st_write(NULL, ok, 1, NULL, NULL, 0, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lmi_st_write(path, ok, 1, NULL, NULL, 1, &e), LM_ERR_INVALID_ARGUMENT);
    /* Nothing was written by any failed call. */
    ck_assert_int_ne(access(path, F_OK), 0);
    char bad[400];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.safetensors", tmpdir);
    ck_assert_int_eq(lmi_st_write(bad, ok, 1, NULL, NULL, 0, &e), LM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(e.msg, bad));
    remove_tmpdir();
}
END_TEST

/* ---- conversions --------------------------------------------------------- */

/* Reference binary16 decoding written from the definition. */
static double half_ref(uint16_t h)
{
    int sign = h >> 15, ex = (h >> 10) & 31, mant = h & 1023;
    double v;
    if (ex == 0)
        v = ldexp(mant, -24);
    else if (ex == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexp(1024 + mant, ex - 25);
    return sign ? -v : v;
}

START_TEST(f16_every_value)
{
    /* All 65536 bit patterns, read from an unaligned address. */
    uint8_t *raw = malloc(65536 * 2 + 1);
    for (uint32_t k = 0; k < 65536; k++) {
        raw[1 + 2 * k] = (uint8_t)(k & 0xff);
        raw[2 + 2 * k] = (uint8_t)(k >> 8);
    }
    lmi_st_tensor t = {.name = "h",
                       .dtype = LMI_ST_F16,
                       .ndim = 1,
                       .shape = {65536},
                       .data = raw + 1,
                       .nbytes = 65536 * 2};
    float *out = malloc(65536 * sizeof(float));
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_st_to_f32(&t, out, &e), LM_OK);
    for (uint32_t k = 0; k < 65536; k++) {
        double r = half_ref((uint16_t)k);
        if (isnan(r)) {
            ck_assert_msg(isnan(out[k]), "0x%04x", k);
        } else {
            ck_assert_msg((double)out[k] == r, "0x%04x: %.9g vs %.9g", k, out[k], r);
            ck_assert_int_eq(signbit(out[k]) != 0, (k >> 15) != 0); /* -0 stays -0 */
        }
    }
    free(out);
    free(raw);
}
END_TEST

START_TEST(bf16_and_f32_unaligned)
{
    uint8_t raw[1 + 4 * 4];
    float src[4] = {1.0f, -3.5f, 1e-40f, INFINITY};
    memcpy(raw + 1, src, sizeof src);
    lmi_st_tensor t = {
        .name = "f", .dtype = LMI_ST_F32, .ndim = 1, .shape = {4}, .data = raw + 1, .nbytes = 16};
    float out[8];
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_st_to_f32(&t, out, &e), LM_OK);
    ck_assert_int_eq(memcmp(out, src, sizeof src), 0);

    /* bf16 is the top half of the fp32 bits: check against that. */
    uint8_t rb[1 + 2 * 5];
    uint16_t b[5] = {0x3f80, 0x0001, 0x7f80, 0xff80, 0x7fc0};
    memcpy(rb + 1, b, sizeof b);
    lmi_st_tensor tb = {
        .name = "b", .dtype = LMI_ST_BF16, .ndim = 1, .shape = {5}, .data = rb + 1, .nbytes = 10};
    ck_assert_int_eq(lmi_st_to_f32(&tb, out, &e), LM_OK);
    for (int k = 0; k < 5; k++) {
        uint32_t bits;
        memcpy(&bits, &out[k], 4);
        ck_assert_uint_eq(bits, (uint32_t)b[k] << 16);
    }

    /* f64: rounding at the edge of the float range. */
    double d[5] = {0x1.fffffefffffffp127, 0x1.ffffffp127, -1e39, NAN, 5e-46};
    uint8_t rd[1 + sizeof d];
    memcpy(rd + 1, d, sizeof d);
    lmi_st_tensor td = {.name = "d",
                        .dtype = LMI_ST_F64,
                        .ndim = 1,
                        .shape = {5},
                        .data = rd + 1,
                        .nbytes = sizeof d};
    ck_assert_int_eq(lmi_st_to_f32(&td, out, &e), LM_OK);
    ck_assert(out[0] == 0x1.fffffep127f);
    ck_assert(isinf(out[1]) && out[1] > 0);
    ck_assert(isinf(out[2]) && out[2] < 0);
    ck_assert(isnan(out[3]));
    ck_assert(out[4] == 0.0f);
}
END_TEST

/* ---- bad inputs ---------------------------------------------------------- */

START_TEST(too_short_and_bad_lengths)
{
    lmi_err e = {{0}};
    lmi_st_file f;
    uint8_t tiny[4] = {0};
    ck_assert_int_eq(lmi_st_parse(tiny, 4, &f, &e), LM_ERR_FORMAT);
    ck_assert_int_eq(lmi_st_parse(NULL, 0, &f, &e), LM_ERR_FORMAT);
    ck_assert_int_eq(lmi_st_parse(NULL, 10, &f, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lmi_st_parse(tiny, 4, NULL, &e), LM_ERR_INVALID_ARGUMENT);

    /* Header length promises more bytes than the file has (truncated). */
    size_t size;
    uint8_t *b = image("{}", 0, &size);
    b[0] = 200;
    ck_assert_int_eq(lmi_st_parse(b, size, &f, &e), LM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(e.msg, "truncated"));
    /* Absurd header lengths. */
    b[0] = 0;
    b[7] = 0x80;
    ck_assert_int_eq(lmi_st_parse(b, size, &f, &e), LM_ERR_FORMAT);
    memset(b, 0xff, 8);
    ck_assert_int_eq(lmi_st_parse(b, size, &f, &e), LM_ERR_FORMAT);
    free(b);
    /* 200 MB header length in a file that is that long: still refused. */
    b = image("{}", 0, &size);
    uint64_t big = 200ull * 1000 * 1000;
    for (int k = 0; k < 8; k++)
        b[k] = (uint8_t)(big >> (8 * k));
    ck_assert_int_eq(lmi_st_parse(b, (size_t)big + 8, &f, &e), LM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(e.msg, "100 MB"));
    /* Header length below 2. */
    b[0] = 1;
    memset(b + 1, 0, 7);
    ck_assert_int_eq(lmi_st_parse(b, size, &f, &e), LM_ERR_FORMAT);
    free(b);
}
END_TEST

typedef struct bad_case {
    const char *header;
    size_t data_size;
    lm_status want;
    const char *msg_part; /* must appear in the message */
} bad_case;

static const bad_case bad_cases[] = {
    /* non-object headers and malformed JSON */
    {"[]", 0, LM_ERR_FORMAT, "not a JSON object"},
    {"\"x\"", 0, LM_ERR_FORMAT, "not a JSON object"},
    {"{\"a\":", 0, LM_ERR_FORMAT, "header"},
    {"{} x", 0, LM_ERR_FORMAT, "trailing"},
    /* offsets out of the file */
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, LM_ERR_FORMAT,
     "outside"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 8, LM_ERR_FORMAT,
     "outside"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551612,0]}}", 8,
     LM_ERR_FORMAT, "data_offsets"},
    /* overlapping offsets */
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, LM_ERR_FORMAT, "overlap"},
    {"{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
     16, LM_ERR_FORMAT, "overlap"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     8, LM_ERR_FORMAT, "overlap"},
    /* unknown / unsupported dtypes */
    {"{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, LM_ERR_UNSUPPORTED,
     "F8_E4M3"},
    {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, LM_ERR_UNSUPPORTED,
     "Q4"},
    {"{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, LM_ERR_UNSUPPORTED,
     "f32"},
    /* size mismatch */
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, LM_ERR_FORMAT,
     "needs 12"},
    {"{\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 8, LM_ERR_FORMAT,
     "needs 8"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,0]}}", 8, LM_ERR_FORMAT,
     "needs 4"},
    /* duplicate names */
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, LM_ERR_FORMAT, "duplicate"},
    /* malformed entries */
    {"{\"a\":[1]}", 0, LM_ERR_FORMAT, "not an object"},
    {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, LM_ERR_FORMAT, "dtype"},
    {"{\"a\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, LM_ERR_FORMAT, "dtype"},
    {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, LM_ERR_FORMAT, "shape"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, LM_ERR_FORMAT, "shape"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, LM_ERR_FORMAT,
     "shape"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, LM_ERR_FORMAT,
     "shape"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, LM_ERR_FORMAT,
     "shape"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, LM_ERR_FORMAT, "data_offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, LM_ERR_FORMAT,
     "data_offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 8, LM_ERR_FORMAT,
     "reversed"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8, LM_ERR_FORMAT,
     "data_offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
     LM_ERR_UNSUPPORTED, "dimensions"},
    {"{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
     LM_ERR_FORMAT, "too large"},
    {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,0]}}", 0,
     LM_ERR_FORMAT, "too large"},
    {"{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, LM_ERR_FORMAT,
     "NUL"},
    /* metadata */
    {"{\"__metadata__\":{\"k\":1}}", 0, LM_ERR_FORMAT, "not a string"},
    {"{\"__metadata__\":[\"k\"]}", 0, LM_ERR_FORMAT, "__metadata__"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, LM_ERR_FORMAT, "duplicate"},
};

START_TEST(bad_headers)
{
    for (size_t k = 0; k < sizeof bad_cases / sizeof bad_cases[0]; k++) {
        lmi_err e = {{0}};
        lm_status st = parse_image(bad_cases[k].header, bad_cases[k].data_size, &e);
        ck_assert_msg(st == bad_cases[k].want, "case %zu: status %d, want %d (%s)", k, st,
                      bad_cases[k].want, e.msg);
        ck_assert_msg(strstr(e.msg, bad_cases[k].msg_part) != NULL, "case %zu: message '%s'", k,
                      e.msg);
    }
}
END_TEST

START_TEST(accepted_oddities)
{
    /* Gaps, trailing bytes, zero-sized tensors anywhere, padding spaces,
     * unknown extra fields and an empty metadata map are all fine. */
    const char *ok[] = {
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}      ",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[4,4]}}",
        "{\"a\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2],\"extra\":1},"
        "\"__metadata__\":{}}",
    };
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
        lmi_err e = {{0}};
        ck_assert_msg(parse_image(ok[k], 16, &e) == LM_OK, "case %zu: %s", k, e.msg);
    }
}
END_TEST

START_TEST(open_errors_name_the_path)
{
    make_tmpdir();
    lmi_err e = {{0}};
    lmi_st_file f;
    char path[300];
    snprintf(path, sizeof path, "%s/missing.safetensors", tmpdir);
    ck_assert_int_eq(lmi_st_open(path, &f, &e), LM_ERR_MISSING);
    ck_assert_ptr_nonnull(strstr(e.msg, path));
    ck_assert_int_eq(lmi_st_open(tmpdir, &f, &e), LM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(e.msg, tmpdir));
    /* Empty file. */
    FILE *fp = fopen(path, "wb");
    fclose(fp);
    ck_assert_int_eq(lmi_st_open(path, &f, &e), LM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(e.msg, path));
    /* Valid length, broken entry: the parse message carries the path too. */
    size_t size;
    uint8_t *b =
        image("{\"t\":{\"dtype\":\"F32\",\"shape\":[9],\"data_offsets\":[0,4]}}", 4, &size);
    fp = fopen(path, "wb");
    ck_assert_uint_eq(fwrite(b, 1, size, fp), size);
    fclose(fp);
    free(b);
    ck_assert_int_eq(lmi_st_open(path, &f, &e), LM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(e.msg, path));
    ck_assert_ptr_nonnull(strstr(e.msg, "tensor t"));
    ck_assert_int_eq(lmi_st_open(NULL, &f, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lmi_st_open(path, NULL, &e), LM_ERR_INVALID_ARGUMENT);
    remove_tmpdir();
}
END_TEST

START_TEST(random_mutations_never_crash)
{
    /* Mutate a valid image; whatever parses must describe tensors inside
     * the buffer.  Under ASan/valgrind this also proves no stray reads. */
    const char *hdr = "{\"__metadata__\":{\"k\":\"v\"},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]}}";
    size_t size;
    uint8_t *base = image(hdr, 24, &size);
    uint8_t *buf = malloc(size);
    unsigned seed = 777;
    int accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, base, size);
        size_t len = size;
        int edits = 1 + (int)(rand_r(&seed) % 3);
        for (int k = 0; k < edits; k++) {
            size_t pos = (size_t)rand_r(&seed) % len;
            switch (rand_r(&seed) % 4) {
            case 0: buf[pos] = (uint8_t)rand_r(&seed); break;
            case 1: buf[pos] = (uint8_t) "0123456789[]{},\":"[rand_r(&seed) % 17]; break;
            case 2: buf[pos] ^= (uint8_t)(1u << (rand_r(&seed) % 8)); break;
            default: len = pos + 1; break;
            }
        }
        /* Copy to an exact-size heap block so over-reads are caught. */
        uint8_t *exact = malloc(len);
        memcpy(exact, buf, len);
        lmi_st_file f;
        lmi_err e = {{0}};
        lm_status st = lmi_st_parse(exact, len, &f, &e);
        if (st == LM_OK) {
            accepted++;
            for (size_t t = 0; t < f.n_tensors; t++) {
                ck_assert(f.tensors[t].data >= exact);
                ck_assert(f.tensors[t].data + f.tensors[t].nbytes <= exact + len);
            }
            lmi_st_close(&f);
        } else {
            ck_assert(st == LM_ERR_FORMAT || st == LM_ERR_UNSUPPORTED);
        }
        free(exact);
    }
    ck_assert_int_gt(accepted, 0); /* some mutations (in data bytes) stay valid */
    free(buf);
    free(base);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("safetensors");
    add_tcase(s, "safetensors", 120,
              (const TTest *[]){round_trip, empty_file_round_trip, write_errors, f16_every_value,
                                bf16_and_f32_unaligned, too_short_and_bad_lengths, bad_headers,
                                accepted_oddities, open_errors_name_the_path,
                                random_mutations_never_crash, NULL});
    return run_suite(s);
}
