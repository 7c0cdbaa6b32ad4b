/*
 * tensor_file.c - lm_tensor_file_*: the public face of the safetensors
 * reader (format/safetensors.c), so programs that need reference tensors
 * do not carry a second, less careful reader.
 */
#include "internal.h"
#include "format/safetensors.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct lm_tensor_file {
    lmi_st_file st;
};

/* lm_dtype numbers the safetensors dtypes in lmi_st_dtype's order. */
_Static_assert((int)LM_DTYPE_F64 == (int)LMI_ST_F64 && (int)LM_DTYPE_BOOL == (int)LMI_ST_BOOL &&
                   (int)LM_DTYPE_BF16 == (int)LMI_ST_BF16 && (int)LM_DTYPE_I32 == (int)LMI_ST_I32,
               "lm_dtype and lmi_st_dtype disagree");

const char *lm_dtype_name(lm_dtype dtype)
{
    static const char *const names[] = {"f32", "f16", "bf16", "f64", "i64",
                                        "i32", "i16", "i8",   "u8",  "bool"};
    return (unsigned)dtype < sizeof names / sizeof names[0] ? names[dtype] : "unknown";
}

/* Copies e to (err, cap), cleared on success, and returns st. */
static lm_status finish(lm_status st, lmi_err *e, char *err, size_t err_cap)
{
    if (st == LM_OK)
        e->msg[0] = '\0';
    lmi_err_copy(e, err, err_cap);
    return st;
}

lm_status lm_tensor_file_open(const char *path, lm_tensor_file **out, char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    if (out)
        *out = NULL;
    if (!path || !out)
        return finish(lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "tensor_file_open: NULL argument"), &e,
                      err, err_cap);
    lm_tensor_file *f = calloc(1, sizeof *f);
    if (!f)
        return finish(lmi_fail(&e, LM_ERR_NO_MEMORY, "tensor_file_open: out of memory"), &e, err,
                      err_cap);
    lm_status st = lmi_st_open(path, &f->st, &e);
    if (st != LM_OK) {
        free(f);
        return finish(st, &e, err, err_cap);
    }
    *out = f;
    return finish(LM_OK, &e, err, err_cap);
}

void lm_tensor_file_free(lm_tensor_file *file)
{
    if (!file)
        return;
    lmi_st_close(&file->st);
    free(file);
}

size_t lm_tensor_file_count(const lm_tensor_file *file)
{
    return file ? file->st.n_tensors : 0;
}

const char *lm_tensor_file_name(const lm_tensor_file *file, size_t index)
{
    return file && index < file->st.n_tensors ? file->st.tensors[index].name : NULL;
}

/* The tensor `name` of file, or NULL after a message in e. */
static const lmi_st_tensor *find(const lm_tensor_file *file, const char *name, const char *fn,
                                 lm_status *st, lmi_err *e)
{
    if (!file || !name) {
        *st = lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "%s: NULL argument", fn);
        return NULL;
    }
    const lmi_st_tensor *t = lmi_st_find(&file->st, name);
    if (!t)
        *st = lmi_fail(e, LM_ERR_MISSING, "%s: no tensor named '%.200s'", fn, name);
    return t;
}

/* Writes info->field only when the caller's struct has it. */
#define SET_FIELD(info, field, value)                                                              \
    do {                                                                                           \
        if ((info)->struct_size >= offsetof(lm_tensor_info, field) + sizeof((info)->field))        \
            (info)->field = (value);                                                               \
    } while (0)

static int64_t n_elements(const lmi_st_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->shape[d]; /* validated: prod(shape) * size == nbytes, no overflow */
    return n;
}

lm_status lm_tensor_file_get_info(const lm_tensor_file *file, const char *name,
                                  lm_tensor_info *info, char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = LM_OK;
    if (!info || info->struct_size < offsetof(lm_tensor_info, dtype) + sizeof(info->dtype))
        return finish(lmi_fail(&e, LM_ERR_INVALID_ARGUMENT,
                               "tensor_file_get_info: info is NULL or its struct_size is not set"),
                      &e, err, err_cap);
    const lmi_st_tensor *t = find(file, name, "tensor_file_get_info", &st, &e);
    if (!t)
        return finish(st, &e, err, err_cap);
    SET_FIELD(info, dtype, (lm_dtype)t->dtype);
    SET_FIELD(info, ndim, (int32_t)t->ndim);
    if (info->struct_size >= offsetof(lm_tensor_info, shape) + sizeof info->shape)
        for (int d = 0; d < LM_TENSOR_MAX_DIMS; d++)
            info->shape[d] = d < t->ndim ? t->shape[d] : 0;
    SET_FIELD(info, n_elements, n_elements(t));
    return finish(LM_OK, &e, err, err_cap);
}

typedef lm_status (*convert_fn)(const lmi_st_tensor *t, void *out, lmi_err *e);

/* The shared body of the three readers: find, check the room, convert. */
static lm_status read_as(const lm_tensor_file *file, const char *name, void *out, size_t cap,
                         const char *fn, convert_fn convert, char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = LM_OK;
    const lmi_st_tensor *t = find(file, name, fn, &st, &e);
    if (!t)
        return finish(st, &e, err, err_cap);
    const int64_t n = n_elements(t);
    if (!out && cap)
        return finish(
            lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "%s: out is NULL with cap %zu", fn, cap), &e, err,
            err_cap);
    if ((uint64_t)n > cap)
        return finish(lmi_fail(&e, LM_ERR_BUFFER_TOO_SMALL,
                               "%s: tensor %.200s has %lld elements, the buffer %zu", fn, name,
                               (long long)n, cap),
                      &e, err, err_cap);
    return finish(convert(t, out, &e), &e, err, err_cap);
}

/* The converters with a void * out, for read_as. */
static lm_status conv_f64(const lmi_st_tensor *t, void *out, lmi_err *e)
{
    return lmi_st_to_f64(t, out, e);
}

static lm_status conv_f32(const lmi_st_tensor *t, void *out, lmi_err *e)
{
    return lmi_st_to_f32(t, out, e);
}

static lm_status conv_i32(const lmi_st_tensor *t, void *out, lmi_err *e)
{
    return lmi_st_to_i32(t, out, e);
}

lm_status lm_tensor_file_read_f64(const lm_tensor_file *file, const char *name, double *out,
                                  size_t cap, char *err, size_t err_cap)
{
    return read_as(file, name, out, cap, "tensor_file_read_f64", conv_f64, err, err_cap);
}

lm_status lm_tensor_file_read_f32(const lm_tensor_file *file, const char *name, float *out,
                                  size_t cap, char *err, size_t err_cap)
{
    return read_as(file, name, out, cap, "tensor_file_read_f32", conv_f32, err, err_cap);
}

lm_status lm_tensor_file_read_i32(const lm_tensor_file *file, const char *name, int32_t *out,
                                  size_t cap, char *err, size_t err_cap)
{
    return read_as(file, name, out, cap, "tensor_file_read_i32", conv_i32, err, err_cap);
}
