/*
 * gguf.h - validating reader of GGUF files (llama.cpp / ggml), versions 2
 * and 3, little-endian.
 *
 * Layout: "GGUF", u32 version, u64 tensor count, u64 key/value count, the
 * key/value pairs (key: u64 length + bytes; u32 value type; the value),
 * the tensor infos (name; u32 n_dims; n_dims u64 extents, fastest first;
 * u32 ggml type; u64 offset into the data section), padding to the
 * alignment (general.alignment, default 32), the data section.
 *
 * The reader trusts nothing: every count, length, extent and offset is
 * checked against the bytes that remain and for overflow before anything
 * is allocated or read, names and keys are unique and free of NUL bytes,
 * every tensor's type is a known ggml type, its data is aligned, lies in
 * the file and overlaps no other tensor.  Strings and arrays are not
 * copied: they point into the file image.
 */
#ifndef LMI_GGUF_H
#define LMI_GGUF_H

#include "internal.h"

#define LMI_GGUF_MAX_DIMS 4           /* GGML_MAX_DIMS */
#define LMI_GGUF_MAX_NAME 64          /* GGML_MAX_NAME: names are shorter */
#define LMI_GGUF_DEFAULT_ALIGNMENT 32

/* Value types (gguf_type). */
typedef enum lmi_gguf_vtype {
    LMI_GGUF_U8 = 0,
    LMI_GGUF_I8 = 1,
    LMI_GGUF_U16 = 2,
    LMI_GGUF_I16 = 3,
    LMI_GGUF_U32 = 4,
    LMI_GGUF_I32 = 5,
    LMI_GGUF_F32 = 6,
    LMI_GGUF_BOOL = 7,
    LMI_GGUF_STRING = 8,
    LMI_GGUF_ARRAY = 9,
    LMI_GGUF_U64 = 10,
    LMI_GGUF_I64 = 11,
    LMI_GGUF_F64 = 12,
} lmi_gguf_vtype;

/* The ggml tensor types this library names (ggml_type numbers; the gaps
 * are types ggml removed). */
enum {
    LMI_GGML_F32 = 0,
    LMI_GGML_F16 = 1,
    LMI_GGML_Q8_0 = 8,
    LMI_GGML_BF16 = 30,
};

/* A string in the file image: not NUL-terminated. */
typedef struct lmi_gguf_str {
    const char *p;
    size_t len;
} lmi_gguf_str;

typedef struct lmi_gguf_kv {
    char *key;                 /* NUL-terminated copy */
    lmi_gguf_vtype type;
    lmi_gguf_vtype arr_type;   /* element type when type is ARRAY */
    uint64_t arr_n;            /* element count when type is ARRAY */
    const uint8_t *val;        /* scalar bytes; string: its u64 length; array: first element */
    const uint8_t *raw;        /* the encoded value as in the file (after the type field) */
    size_t raw_size;
} lmi_gguf_kv;

typedef struct lmi_gguf_tensor {
    char *name;                /* NUL-terminated copy */
    uint32_t type;             /* ggml type */
    int ndim;                  /* 0 .. 4 */
    int64_t ne[LMI_GGUF_MAX_DIMS]; /* extents, fastest first (ne[0] is a row); 1 past ndim */
    uint64_t offset;           /* in the data section */
    const uint8_t *data;       /* in the file image (aligned to the alignment within it) */
    size_t nbytes;
} lmi_gguf_tensor;

typedef struct lmi_gguf_file {
    lmi_mapping map;           /* whole file (addr NULL when parsed from a caller buffer) */
    uint32_t version;
    uint64_t alignment;
    lmi_gguf_kv *kv;           /* file order */
    size_t n_kv;
    lmi_gguf_tensor *tensors;  /* file order */
    size_t n_tensors;
    size_t *kv_by_key;         /* indices sorted by key */
    size_t *by_name;           /* indices sorted by name */
    size_t data_offset;        /* start of the data section in the image */
} lmi_gguf_file;

/* "F32", "Q4_K", ...; NULL for a number ggml does not define. */
const char *lmi_gguf_type_name(uint32_t type);
/* Elements per block and bytes per block of a ggml type; false when the
 * type is not defined. */
bool lmi_gguf_type_size(uint32_t type, int64_t *block, size_t *bytes);
/* "u8", "string", "array", ...; "?" otherwise. */
const char *lmi_gguf_vtype_name(uint32_t vtype);

/* True when buf starts with the GGUF magic. */
bool lmi_gguf_magic(const uint8_t *buf, size_t size);
/* True when the regular file path is to be read as GGUF: its name ends in
 * .gguf, or it starts with the magic (lm_model_load, lm_tokenizer_load). */
bool lmi_gguf_probe(const char *path);

/* mmap + validate; path is used in messages.  On failure f is zeroed. */
lm_status lmi_gguf_open(const char *path, lmi_gguf_file *f, lmi_err *e);
/* Validate a file image already in memory (the fuzz target's entry); the
 * strings and tensors point into buf, which must outlive f. */
lm_status lmi_gguf_parse(const uint8_t *buf, size_t size, lmi_gguf_file *f, lmi_err *e);
/* Frees everything, unmaps unless the mapping was moved out (map.addr NULL). */
void lmi_gguf_close(lmi_gguf_file *f);

const lmi_gguf_kv *lmi_gguf_find_kv(const lmi_gguf_file *f, const char *key);
const lmi_gguf_tensor *lmi_gguf_find_tensor(const lmi_gguf_file *f, const char *name);

/* Typed reads of a key.  Absent: LM_ERR_MISSING (message names the key);
 * another type: LM_ERR_FORMAT.  get_uint accepts any integer type with a
 * non-negative value, get_float F32 or F64, get_bool BOOL. */
lm_status lmi_gguf_get_uint(const lmi_gguf_file *f, const char *key, uint64_t *out, lmi_err *e);
lm_status lmi_gguf_get_float(const lmi_gguf_file *f, const char *key, double *out, lmi_err *e);
lm_status lmi_gguf_get_bool(const lmi_gguf_file *f, const char *key, bool *out, lmi_err *e);
lm_status lmi_gguf_get_str(const lmi_gguf_file *f, const char *key, lmi_gguf_str *out,
                           lmi_err *e);
/* An array of elements of type `elem`: its count and first element. */
lm_status lmi_gguf_get_arr(const lmi_gguf_file *f, const char *key, lmi_gguf_vtype elem,
                           uint64_t *n, const uint8_t **first, lmi_err *e);

/* The string at *cur of a validated string array (or a string value);
 * advances *cur past it. */
static inline lmi_gguf_str lmi_gguf_next_str(const uint8_t **cur)
{
    uint64_t n;
    __builtin_memcpy(&n, *cur, 8);
    lmi_gguf_str s = {(const char *)*cur + 8, (size_t)n};
    *cur += 8 + n;
    return s;
}

#endif
