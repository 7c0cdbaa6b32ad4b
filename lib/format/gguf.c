/*
 * gguf.c - GGUF reader (mmap + full validation of the header, the
 * key/value pairs and the tensor infos).  See gguf.h for the layout.
 *
 * The parser is a fuzz target: every read is preceded by a check that the
 * bytes are there, every count is checked against the bytes that could
 * hold it before an array is allocated for it, and every size is computed
 * with overflow checks.
 */
#define _GNU_SOURCE
#include "format/gguf.h"
#include "format/mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- ggml types ------------------------------------------------------------ */

/* ggml_type_traits: elements per block, bytes per block.  Numbers without
 * a name (4, 5, 31-33, 36-38) are types ggml removed. */
static const struct {
    const char *name;
    int64_t block;
    size_t bytes;
} ggml_types[] = {
    [0] = {"F32", 1, 4},        [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},     [6] = {"Q5_0", 32, 22},     [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},     [9] = {"Q8_1", 32, 40},     [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},  [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},  [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74}, [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},  [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},        [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},       [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},  [30] = {"BF16", 1, 2},      [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},  [39] = {"MXFP4", 32, 17},   [40] = {"NVFP4", 64, 36},
    [41] = {"Q1_0", 128, 18},
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

const char *lmi_gguf_type_name(uint32_t type)
{
    return type < N_GGML_TYPES ? ggml_types[type].name : NULL;
}

bool lmi_gguf_type_size(uint32_t type, int64_t *block, size_t *bytes)
{
    if (type >= N_GGML_TYPES || !ggml_types[type].name)
        return false;
    if (block)
        *block = ggml_types[type].block;
    if (bytes)
        *bytes = ggml_types[type].bytes;
    return true;
}

/* ---- value types ----------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size; /* 0: variable */
} vtypes[] = {
    [LMI_GGUF_U8] = {"u8", 1},     [LMI_GGUF_I8] = {"i8", 1},         [LMI_GGUF_U16] = {"u16", 2},
    [LMI_GGUF_I16] = {"i16", 2},   [LMI_GGUF_U32] = {"u32", 4},       [LMI_GGUF_I32] = {"i32", 4},
    [LMI_GGUF_F32] = {"f32", 4},   [LMI_GGUF_BOOL] = {"bool", 1},     [LMI_GGUF_STRING] = {"string", 0},
    [LMI_GGUF_ARRAY] = {"array", 0}, [LMI_GGUF_U64] = {"u64", 8},     [LMI_GGUF_I64] = {"i64", 8},
    [LMI_GGUF_F64] = {"f64", 8},
};
#define N_VTYPES (sizeof vtypes / sizeof vtypes[0])

const char *lmi_gguf_vtype_name(uint32_t vtype)
{
    return vtype < N_VTYPES ? vtypes[vtype].name : "?";
}

bool lmi_gguf_magic(const uint8_t *buf, size_t size)
{
    return buf && size >= 4 && memcmp(buf, "GGUF", 4) == 0;
}

bool lmi_gguf_probe(const char *path)
{
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".gguf") == 0)
        return true;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    uint8_t head[4];
    ssize_t got = read(fd, head, sizeof head);
    close(fd);
    return got == 4 && lmi_gguf_magic(head, 4);
}

/* ---- the cursor ---------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t size, pos;
    lmi_err *e;
} rd;

static size_t left(const rd *r)
{
    return r->size - r->pos;
}

static lm_status truncated(rd *r, const char *what, uint64_t need)
{
    return lmi_fail(r->e, LM_ERR_FORMAT,
                    "truncated file: %s at byte %zu needs %llu bytes, %zu remain", what, r->pos,
                    (unsigned long long)need, left(r));
}

static lm_status rd_u32(rd *r, uint32_t *v, const char *what)
{
    if (left(r) < 4)
        return truncated(r, what, 4);
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return LM_OK;
}

static lm_status rd_u64(rd *r, uint64_t *v, const char *what)
{
    if (left(r) < 8)
        return truncated(r, what, 8);
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return LM_OK;
}

/* u64 length + bytes. */
static lm_status rd_str(rd *r, lmi_gguf_str *s, const char *what)
{
    uint64_t n = 0;
    lm_status st = rd_u64(r, &n, what);
    if (st != LM_OK)
        return st;
    if (n > left(r)) {
        r->pos -= 8; /* report where the string starts */
        return lmi_fail(r->e, LM_ERR_FORMAT,
                        "truncated file: %s at byte %zu is %llu bytes long, %zu remain", what,
                        r->pos, (unsigned long long)n, left(r) - 8);
    }
    s->p = (const char *)r->p + r->pos;
    s->len = (size_t)n;
    r->pos += (size_t)n;
    return LM_OK;
}

static char *dup_str(lmi_gguf_str s)
{
    char *c = lmi_alloc(s.len + 1, 1);
    if (c && s.len)
        memcpy(c, s.p, s.len);
    return c;
}

/* ---- key/value pairs -------------------------------------------------------------- */

/* One value of scalar type t (the checks a BOOL needs), or a string. */
static lm_status skip_value(rd *r, lmi_gguf_vtype t, const char *key)
{
    if (t == LMI_GGUF_STRING) {
        lmi_gguf_str s = {NULL, 0};
        return rd_str(r, &s, key);
    }
    size_t n = vtypes[t].size;
    if (left(r) < n)
        return truncated(r, key, n);
    if (t == LMI_GGUF_BOOL && r->p[r->pos] > 1)
        return lmi_fail(r->e, LM_ERR_FORMAT, "key %.200s: bool value %u is neither 0 nor 1", key,
                        r->p[r->pos]);
    r->pos += n;
    return LM_OK;
}

/* The name of a key or tensor ("key #k", "tensor info #k"): a string, not
 * empty, without NUL bytes, shorter than max bytes when max > 0; copied
 * into *out. */
static lm_status rd_name(rd *r, const char *what, size_t k, size_t max, char **out)
{
    char where[64];
    snprintf(where, sizeof where, "%s #%zu", what, k);
    lmi_gguf_str name = {NULL, 0};
    lm_status st = rd_str(r, &name, where);
    if (st != LM_OK)
        return st;
    if (name.len == 0)
        return lmi_fail(r->e, LM_ERR_FORMAT, "%s has an empty name", where);
    if (max > 0 && name.len >= max)
        return lmi_fail(r->e, LM_ERR_FORMAT, "%s: name of %zu bytes (%.40s...) is longer than %zu",
                        where, name.len, name.p, max - 1);
    if (memchr(name.p, '\0', name.len))
        return lmi_fail(r->e, LM_ERR_FORMAT, "%s: name contains a NUL byte", where);
    *out = dup_str(name);
    return *out ? LM_OK : lmi_fail(r->e, LM_ERR_NO_MEMORY, "out of memory");
}

static lm_status parse_kv(rd *r, size_t k, lmi_gguf_kv *kv)
{
    lm_status st = rd_name(r, "key", k, 0, &kv->key);
    if (st != LM_OK)
        return st;
    const char *key = kv->key;
    uint32_t t = 0;
    if ((st = rd_u32(r, &t, key)) != LM_OK)
        return st;
    if (t >= N_VTYPES)
        return lmi_fail(r->e, LM_ERR_FORMAT, "key %.200s has unknown value type %u", key, t);
    kv->type = (lmi_gguf_vtype)t;
    kv->raw = r->p + r->pos;
    const size_t start = r->pos;
    if (t != LMI_GGUF_ARRAY) {
        kv->val = r->p + r->pos;
        st = skip_value(r, kv->type, key);
    } else {
        uint32_t et = 0;
        uint64_t n = 0;
        if ((st = rd_u32(r, &et, key)) != LM_OK || (st = rd_u64(r, &n, key)) != LM_OK)
            return st;
        if (et == LMI_GGUF_ARRAY)
            return lmi_fail(r->e, LM_ERR_UNSUPPORTED, "key %.200s: arrays of arrays are not supported",
                            key);
        if (et >= N_VTYPES)
            return lmi_fail(r->e, LM_ERR_FORMAT, "key %.200s: array of unknown value type %u", key,
                            et);
        kv->arr_type = (lmi_gguf_vtype)et;
        kv->arr_n = n;
        kv->val = r->p + r->pos;
        /* The count must fit in what remains before anything is walked:
         * a string takes at least its 8-byte length. */
        size_t es = et == LMI_GGUF_STRING ? 8 : vtypes[et].size;
        if (n > left(r) / es)
            return lmi_fail(r->e, LM_ERR_FORMAT,
                            "key %.200s: array of %llu %s values does not fit in the %zu bytes left "
                            "(truncated file?)",
                            key, (unsigned long long)n, vtypes[et].name, left(r));
        if (et == LMI_GGUF_STRING || et == LMI_GGUF_BOOL) {
            for (uint64_t i = 0; i < n && st == LM_OK; i++)
                st = skip_value(r, kv->arr_type, key);
        } else {
            r->pos += (size_t)n * es;
        }
    }
    kv->raw_size = r->pos - start;
    return st;
}

/* ---- tensor infos ------------------------------------------------------------------ */

static lm_status parse_tensor(rd *r, size_t k, lmi_gguf_tensor *t)
{
    lm_status st = rd_name(r, "tensor info", k, LMI_GGUF_MAX_NAME, &t->name);
    if (st != LM_OK)
        return st;
    uint32_t nd = 0;
    if ((st = rd_u32(r, &nd, t->name)) != LM_OK)
        return st;
    if (nd > LMI_GGUF_MAX_DIMS)
        return lmi_fail(r->e, LM_ERR_FORMAT, "tensor %s has %u dimensions (at most %d)", t->name, nd,
                        LMI_GGUF_MAX_DIMS);
    t->ndim = (int)nd;
    for (int d = 0; d < LMI_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t v = 0;
        if ((st = rd_u64(r, &v, t->name)) != LM_OK)
            return st;
        if (v > INT64_MAX)
            return lmi_fail(r->e, LM_ERR_FORMAT, "tensor %s: extent %d is negative (%lld)", t->name,
                            d, (long long)(int64_t)v);
        t->ne[d] = (int64_t)v;
    }
    uint32_t type = 0;
    if ((st = rd_u32(r, &type, t->name)) != LM_OK || (st = rd_u64(r, &t->offset, t->name)) != LM_OK)
        return st;
    t->type = type;
    int64_t block = 0;
    size_t bbytes = 0;
    if (!lmi_gguf_type_size(type, &block, &bbytes))
        return lmi_fail(r->e, LM_ERR_FORMAT, "tensor %s has unknown ggml type %u", t->name, type);
    if (t->ne[0] % block != 0)
        return lmi_fail(r->e, LM_ERR_FORMAT,
                        "tensor %s: a row of %lld elements is not a whole number of %s blocks of %lld",
                        t->name, (long long)t->ne[0], ggml_types[type].name, (long long)block);
    /* bytes = ne0 / block * block_bytes * ne1 * ne2 * ne3, overflow-checked
     * (a zero extent makes it 0 whatever the others are). */
    uint64_t nb = (uint64_t)(t->ne[0] / block);
    bool over = nb != 0 && bbytes > UINT64_MAX / nb, zero = nb == 0;
    nb *= bbytes;
    for (int d = 1; d < LMI_GGUF_MAX_DIMS; d++) {
        uint64_t v = (uint64_t)t->ne[d];
        if (v != 0 && nb > UINT64_MAX / v)
            over = true;
        zero |= v == 0;
        nb *= v;
    }
    if (zero)
        nb = 0, over = false;
    if (over || nb > SIZE_MAX)
        return lmi_fail(r->e, LM_ERR_FORMAT, "tensor %s: extents [%lld,%lld,%lld,%lld] are too large",
                        t->name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                        (long long)t->ne[3]);
    t->nbytes = (size_t)nb;
    return LM_OK;
}

/* ---- the whole file ---------------------------------------------------------------- */

typedef struct ix_ref {
    const char *name;
    size_t ix;
} ix_ref;

typedef struct range_ref {
    uint64_t begin, end;
    size_t ix;
} range_ref;

static int cmp_ix_ref(const void *a, const void *b)
{
    return strcmp(((const ix_ref *)a)->name, ((const ix_ref *)b)->name);
}

static int cmp_range_ref(const void *a, const void *b)
{
    const range_ref *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Sorted index by name; duplicate names are an error. */
static lm_status index_names(size_t n, const char *(*name_of)(const lmi_gguf_file *, size_t),
                             const lmi_gguf_file *f, size_t *out, const char *what, lmi_err *e)
{
    if (n == 0)
        return LM_OK;
    ix_ref *ix = lmi_alloc(n, sizeof *ix);
    if (!ix)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
    for (size_t k = 0; k < n; k++)
        ix[k] = (ix_ref){name_of(f, k), k};
    qsort(ix, n, sizeof *ix, cmp_ix_ref);
    lm_status st = LM_OK;
    for (size_t k = 0; k < n; k++) {
        if (k > 0 && strcmp(ix[k - 1].name, ix[k].name) == 0) {
            st = lmi_fail(e, LM_ERR_FORMAT, "duplicate %s %.200s", what, ix[k].name);
            break;
        }
        out[k] = ix[k].ix;
    }
    lmi_free(ix);
    return st;
}

static const char *kv_name(const lmi_gguf_file *f, size_t k)
{
    return f->kv[k].key;
}

static const char *tensor_name(const lmi_gguf_file *f, size_t k)
{
    return f->tensors[k].name;
}

static lm_status parse_header(rd *r, lmi_gguf_file *f)
{
    lmi_err *e = r->e;
    if (!lmi_gguf_magic(r->p, r->size))
        return lmi_fail(e, LM_ERR_FORMAT, "bad magic: not a GGUF file");
    r->pos = 4;
    uint32_t version = 0;
    uint64_t n_tensors = 0, n_kv = 0;
    lm_status st = rd_u32(r, &version, "the version");
    if (st != LM_OK)
        return st;
    /* A big-endian file has its version byte-swapped (0x03000000). */
    if ((version & 0xFFFFu) == 0 && version != 0)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "big-endian GGUF (version %u) is not supported",
                        __builtin_bswap32(version));
    if (version == 1)
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "GGUF version 1 is not supported (versions 2 and 3 are): convert again");
    if (version < 1 || version > 3)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "GGUF version %u is not supported (2 and 3 are)",
                        version);
    f->version = version;
    if ((st = rd_u64(r, &n_tensors, "the tensor count")) != LM_OK ||
        (st = rd_u64(r, &n_kv, "the key/value count")) != LM_OK)
        return st;

    /* A pair needs at least 14 bytes (key length, one key byte, type, a
     * one-byte value), a tensor info 25 (name length, one name byte, dims
     * count, type, offset): counts are bounded before anything is
     * allocated for them. */
    if (n_kv > left(r) / 13)
        return lmi_fail(e, LM_ERR_FORMAT,
                        "%llu key/value pairs cannot fit in the %zu bytes left (truncated file?)",
                        (unsigned long long)n_kv, left(r));
    if (n_tensors > left(r) / 25)
        return lmi_fail(e, LM_ERR_FORMAT,
                        "%llu tensor infos cannot fit in the %zu bytes left (truncated file?)",
                        (unsigned long long)n_tensors, left(r));
    if (n_kv) {
        f->kv = lmi_alloc((size_t)n_kv, sizeof *f->kv);
        f->kv_by_key = lmi_alloc((size_t)n_kv, sizeof *f->kv_by_key);
        if (!f->kv || !f->kv_by_key)
            return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory (%llu keys)",
                            (unsigned long long)n_kv);
    }
    for (size_t k = 0; k < (size_t)n_kv; k++) {
        f->n_kv = k + 1; /* the key copy is freed by close even on failure */
        if ((st = parse_kv(r, k, &f->kv[k])) != LM_OK)
            return st;
    }
    if ((st = index_names(f->n_kv, kv_name, f, f->kv_by_key, "key", e)) != LM_OK)
        return st;

    f->alignment = LMI_GGUF_DEFAULT_ALIGNMENT;
    const lmi_gguf_kv *al = lmi_gguf_find_kv(f, "general.alignment");
    if (al) {
        uint32_t a = 0;
        if (al->type != LMI_GGUF_U32)
            return lmi_fail(e, LM_ERR_FORMAT, "general.alignment has type %s, expected u32",
                            lmi_gguf_vtype_name(al->type));
        memcpy(&a, al->val, 4);
        if (a == 0 || (a & (a - 1)) != 0)
            return lmi_fail(e, LM_ERR_FORMAT, "bad alignment: general.alignment %u is not a power of two",
                            a);
        f->alignment = a;
    }

    if (n_tensors) {
        f->tensors = lmi_alloc((size_t)n_tensors, sizeof *f->tensors);
        f->by_name = lmi_alloc((size_t)n_tensors, sizeof *f->by_name);
        if (!f->tensors || !f->by_name)
            return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory (%llu tensors)",
                            (unsigned long long)n_tensors);
    }
    for (size_t k = 0; k < (size_t)n_tensors; k++) {
        f->n_tensors = k + 1;
        if ((st = parse_tensor(r, k, &f->tensors[k])) != LM_OK)
            return st;
    }
    if ((st = index_names(f->n_tensors, tensor_name, f, f->by_name, "tensor name", e)) != LM_OK)
        return st;

    /* The data section starts at the next multiple of the alignment. */
    const uint64_t a = f->alignment;
    uint64_t start = ((uint64_t)r->pos + a - 1) / a * a;
    if (f->n_tensors == 0) {
        f->data_offset = start <= r->size ? (size_t)start : r->size;
        return LM_OK;
    }
    if (start > r->size)
        return lmi_fail(e, LM_ERR_FORMAT,
                        "truncated file: the data section would start at byte %llu, past the end "
                        "(%zu bytes)",
                        (unsigned long long)start, r->size);
    f->data_offset = (size_t)start;
    const size_t data_size = r->size - f->data_offset;
    range_ref *rr = lmi_alloc(f->n_tensors, sizeof *rr);
    if (!rr)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
    for (size_t k = 0; k < f->n_tensors && st == LM_OK; k++) {
        lmi_gguf_tensor *t = &f->tensors[k];
        if (t->offset % a != 0)
            st = lmi_fail(e, LM_ERR_FORMAT,
                          "tensor %s: misaligned data: offset %llu is not a multiple of the "
                          "alignment %llu",
                          t->name, (unsigned long long)t->offset, (unsigned long long)a);
        else if (t->offset > data_size || t->nbytes > data_size - t->offset)
            st = lmi_fail(e, LM_ERR_FORMAT,
                          "tensor %s: data [%llu, +%zu) lies past the end of the file (the data "
                          "section has %zu bytes; truncated file?)",
                          t->name, (unsigned long long)t->offset, t->nbytes, data_size);
        else
            t->data = r->p + f->data_offset + (size_t)t->offset;
        rr[k] = (range_ref){t->offset, t->offset + t->nbytes, k};
    }
    /* No two non-empty byte ranges intersect (gaps are accepted). */
    if (st == LM_OK) {
        qsort(rr, f->n_tensors, sizeof *rr, cmp_range_ref);
        uint64_t max_end = 0;
        size_t max_ix = 0;
        for (size_t k = 0; k < f->n_tensors && st == LM_OK; k++) {
            if (rr[k].begin == rr[k].end)
                continue;
            if (rr[k].begin < max_end)
                st = lmi_fail(e, LM_ERR_FORMAT, "tensors %s and %s overlap in the data section",
                              f->tensors[max_ix].name, f->tensors[rr[k].ix].name);
            max_end = rr[k].end;
            max_ix = rr[k].ix;
        }
    }
    lmi_free(rr);
    return st;
}

lm_status lmi_gguf_parse(const uint8_t *buf, size_t size, lmi_gguf_file *f, lmi_err *e)
{
    if (!f)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "gguf: NULL file");
    memset(f, 0, sizeof *f);
    if (!buf && size)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "gguf: NULL buffer");
    rd r = {buf, size, 0, e};
    lm_status st = parse_header(&r, f);
    if (st != LM_OK)
        lmi_gguf_close(f);
    return st;
}

lm_status lmi_gguf_open(const char *path, lmi_gguf_file *f, lmi_err *e)
{
    if (!f)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "gguf: NULL file");
    memset(f, 0, sizeof *f);
    if (!path)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "gguf: NULL path");
    lmi_mapping m;
    lm_status st = lmi_map_file(path, &m, e);
    if (st != LM_OK)
        return st;
    if (m.size < 24) {
        const bool magic = lmi_gguf_magic(m.addr, m.size);
        const size_t n = m.size;
        lmi_unmap_file(&m);
        if (!magic)
            return lmi_fail(e, LM_ERR_FORMAT, "%s: bad magic: not a GGUF file", path);
        return lmi_fail(e, LM_ERR_FORMAT, "%s: truncated file: %lld bytes, a GGUF header needs 24",
                        path, (long long)n);
    }
    lmi_err pe = {{0}};
    st = lmi_gguf_parse(m.addr, m.size, f, &pe);
    if (st != LM_OK) {
        lmi_unmap_file(&m);
        return lmi_fail(e, st, "%s: %s", path, pe.msg);
    }
    f->map = m;
    return LM_OK;
}

void lmi_gguf_close(lmi_gguf_file *f)
{
    if (!f)
        return;
    for (size_t k = 0; k < f->n_kv; k++)
        lmi_free(f->kv[k].key);
    for (size_t k = 0; k < f->n_tensors; k++)
        lmi_free(f->tensors[k].name);
    lmi_free(f->kv);
    lmi_free(f->kv_by_key);
    lmi_free(f->tensors);
    lmi_free(f->by_name);
    if (f->map.addr)
        munmap(f->map.addr, f->map.size);
    memset(f, 0, sizeof *f);
}

/* ---- lookups ------------------------------------------------------------------------ */

const lmi_gguf_kv *lmi_gguf_find_kv(const lmi_gguf_file *f, const char *key)
{
    if (!f) return NULL;
    return lmi_find_by_name(f->kv, sizeof *f->kv, offsetof(lmi_gguf_kv, key), f->kv_by_key, f->n_kv,
                            key);
}

const lmi_gguf_tensor *lmi_gguf_find_tensor(const lmi_gguf_file *f, const char *name)
{
    if (!f) return NULL;
    return lmi_find_by_name(f->tensors, sizeof *f->tensors, offsetof(lmi_gguf_tensor, name),
                            f->by_name, f->n_tensors, name);
}

static lm_status find_typed(const lmi_gguf_file *f, const char *key, const void *dst,
                            const lmi_gguf_kv **out, lmi_err *e)
{
    if (!f || !key || !dst)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "gguf: NULL argument");
    *out = lmi_gguf_find_kv(f, key);
    if (!*out)
        return lmi_fail(e, LM_ERR_MISSING, "metadata key %.200s is missing", key);
    return LM_OK;
}

static lm_status wrong_type(const lmi_gguf_kv *kv, const char *want, lmi_err *e)
{
    if (kv->type == LMI_GGUF_ARRAY)
        return lmi_fail(e, LM_ERR_FORMAT, "metadata key %.200s is an array of %s, expected %s",
                        kv->key, lmi_gguf_vtype_name(kv->arr_type), want);
    return lmi_fail(e, LM_ERR_FORMAT, "metadata key %.200s has type %s, expected %s", kv->key,
                    lmi_gguf_vtype_name(kv->type), want);
}

lm_status lmi_gguf_get_uint(const lmi_gguf_file *f, const char *key, uint64_t *out, lmi_err *e)
{
    const lmi_gguf_kv *kv;
    lm_status st = find_typed(f, key, out, &kv, e);
    if (st != LM_OK)
        return st;
    const uint8_t *p = kv->val;
    int64_t s = 0;
    uint64_t u = 0;
    bool is_signed = true;
    switch (kv->type) {
    case LMI_GGUF_U8: u = p[0], is_signed = false; break;
    case LMI_GGUF_I8: s = (int8_t)p[0]; break;
    case LMI_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); u = v; is_signed = false; break; }
    case LMI_GGUF_I16: { int16_t v; memcpy(&v, p, 2); s = v; break; }
    case LMI_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); u = v; is_signed = false; break; }
    case LMI_GGUF_I32: { int32_t v; memcpy(&v, p, 4); s = v; break; }
    case LMI_GGUF_U64: memcpy(&u, p, 8); is_signed = false; break;
    case LMI_GGUF_I64: memcpy(&s, p, 8); break;
    default: return wrong_type(kv, "an integer", e);
    }
    if (is_signed) {
        if (s < 0)
            return lmi_fail(e, LM_ERR_FORMAT, "metadata key %.200s is negative (%lld)", key,
                            (long long)s);
        u = (uint64_t)s;
    }
    *out = u;
    return LM_OK;
}

lm_status lmi_gguf_get_float(const lmi_gguf_file *f, const char *key, double *out, lmi_err *e)
{
    const lmi_gguf_kv *kv;
    lm_status st = find_typed(f, key, out, &kv, e);
    if (st != LM_OK)
        return st;
    if (kv->type == LMI_GGUF_F32) {
        float v;
        memcpy(&v, kv->val, 4);
        *out = v;
    } else if (kv->type == LMI_GGUF_F64) {
        memcpy(out, kv->val, 8);
    } else {
        return wrong_type(kv, "a float", e);
    }
    return LM_OK;
}

lm_status lmi_gguf_get_bool(const lmi_gguf_file *f, const char *key, bool *out, lmi_err *e)
{
    const lmi_gguf_kv *kv;
    lm_status st = find_typed(f, key, out, &kv, e);
    if (st != LM_OK)
        return st;
    if (kv->type != LMI_GGUF_BOOL)
        return wrong_type(kv, "bool", e);
    *out = kv->val[0] != 0;
    return LM_OK;
}

lm_status lmi_gguf_get_str(const lmi_gguf_file *f, const char *key, lmi_gguf_str *out, lmi_err *e)
{
    const lmi_gguf_kv *kv;
    lm_status st = find_typed(f, key, out, &kv, e);
    if (st != LM_OK)
        return st;
    if (kv->type != LMI_GGUF_STRING)
        return wrong_type(kv, "string", e);
    const uint8_t *p = kv->val;
    *out = lmi_gguf_next_str(&p);
    return LM_OK;
}

lm_status lmi_gguf_get_arr(const lmi_gguf_file *f, const char *key, lmi_gguf_vtype elem,
                           uint64_t *n, const uint8_t **first, lmi_err *e)
{
    const lmi_gguf_kv *kv;
    lm_status st = find_typed(f, key, n && first ? (const void *)n : NULL, &kv, e);
    if (st != LM_OK)
        return st;
    if (kv->type != LMI_GGUF_ARRAY || kv->arr_type != elem) {
        char want[48];
        snprintf(want, sizeof want, "an array of %s", lmi_gguf_vtype_name(elem));
        return wrong_type(kv, want, e);
    }
    *n = kv->arr_n;
    *first = kv->val;
    return LM_OK;
}
