/*
 * safetensors.h - reader (mmap, full header validation) and writer.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON, then the
 * data buffer.  Validation (MAMBA.md §3): N sane, every entry's byte length
 * equals prod(shape) * sizeof(dtype), offsets inside the data buffer, no
 * two tensors overlapping, names unique, only known dtypes.
 */
#ifndef LMI_SAFETENSORS_H
#define LMI_SAFETENSORS_H

#include "internal.h"

typedef enum lmi_st_dtype {
    LMI_ST_F32 = 0,
    LMI_ST_F16,
    LMI_ST_BF16,
    LMI_ST_F64,
    LMI_ST_I64,
    LMI_ST_I32,
    LMI_ST_I16,
    LMI_ST_I8,
    LMI_ST_U8,
    LMI_ST_BOOL
} lmi_st_dtype;

#define LMI_ST_MAX_DIMS 8

typedef struct lmi_st_tensor {
    char *name;
    lmi_st_dtype dtype;
    int ndim;
    int64_t shape[LMI_ST_MAX_DIMS];
    const uint8_t *data; /* inside the mapping; not necessarily aligned */
    size_t nbytes;
} lmi_st_tensor;

typedef struct lmi_st_file {
    lmi_mapping map; /* whole file (addr NULL when parsed from a caller buffer) */
    lmi_st_tensor *tensors;
    size_t n_tensors;
    char **meta_keys; /* __metadata__ string map */
    char **meta_values;
    size_t n_meta;
    size_t *by_name; /* tensor indices sorted by name (lmi_st_find) */
} lmi_st_file;

size_t lmi_st_dtype_size(lmi_st_dtype dt);
const char *lmi_st_dtype_name(lmi_st_dtype dt);

/* Tensors keep the header's order.  Gaps between tensors are accepted
 * (the reference reader rejects them); overlaps are not.  Zero-sized
 * tensors may sit anywhere in the buffer. */

/* mmap + validate.  path is used in messages.  On failure f is left
 * zeroed (nothing to close). */
lm_status lmi_st_open(const char *path, lmi_st_file *f, lmi_err *e);
/* Validate a file image already in memory (the fuzz target's entry).  The
 * tensors point into buf, which must outlive f. */
lm_status lmi_st_parse(const uint8_t *buf, size_t size, lmi_st_file *f, lmi_err *e);
const lmi_st_tensor *lmi_st_find(const lmi_st_file *f, const char *name);
const char *lmi_st_meta(const lmi_st_file *f, const char *key);
/* Frees everything, unmaps unless the mapping was moved out (map.addr = NULL). */
void lmi_st_close(lmi_st_file *f);

/* Converts n elements of an F32/F16/BF16/F64 tensor to fp32. */
lm_status lmi_st_to_f32(const lmi_st_tensor *t, float *out, lmi_err *e);
/* F64/F32/F16/BF16 to double; LM_ERR_UNSUPPORTED for other dtypes. */
lm_status lmi_st_to_f64(const lmi_st_tensor *t, double *out, lmi_err *e);
/* I64/I32/I16/I8/U8 to int32 (an I64 outside int32: LM_ERR_OUT_OF_RANGE,
 * out partly written); LM_ERR_UNSUPPORTED for other dtypes. */
lm_status lmi_st_to_i32(const lmi_st_tensor *t, int32_t *out, lmi_err *e);

typedef struct lmi_st_out {
    const char *name;
    lmi_st_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data; /* prod(shape) elements, little-endian host order */
} lmi_st_out;

/* Writes a safetensors file atomically (temp file + rename); meta is
 * n_meta key/value string pairs (may be 0).  The header is padded with
 * spaces to a multiple of 8 bytes and tensor data is laid out without
 * gaps in order of decreasing element size, so every tensor is aligned to
 * its element size in the file (and in a mapping of it).  Assumes a
 * little-endian host, like the rest of the library. */
lm_status lmi_st_write(const char *path, const lmi_st_out *tensors, size_t n_tensors,
                       const char *const *meta_keys, const char *const *meta_values, size_t n_meta,
                       lmi_err *e);

#endif
