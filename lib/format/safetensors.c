/*
 * safetensors.c - reader (mmap + full header validation) and writer.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON, data.
 * The reader trusts nothing in the header: every offset, size and name is
 * checked before a tensor is handed out (the parser is a fuzz target).
 */
#define _GNU_SOURCE
#include "format/safetensors.h"
#include "format/json.h"
#include "format/mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define LMI_ST_MAX_HEADER (100u * 1000u * 1000u) /* the reference reader's limit */

/* ---- dtypes -------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [LMI_ST_F32] = {"F32", 4},   [LMI_ST_F16] = {"F16", 2}, [LMI_ST_BF16] = {"BF16", 2},
    [LMI_ST_F64] = {"F64", 8},   [LMI_ST_I64] = {"I64", 8}, [LMI_ST_I32] = {"I32", 4},
    [LMI_ST_I16] = {"I16", 2},   [LMI_ST_I8] = {"I8", 1},   [LMI_ST_U8] = {"U8", 1},
    [LMI_ST_BOOL] = {"BOOL", 1},
};
#define ST_N_DTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

size_t lmi_st_dtype_size(lmi_st_dtype dt)
{
    return (unsigned)dt < ST_N_DTYPES ? st_dtypes[dt].size : 0;
}

const char *lmi_st_dtype_name(lmi_st_dtype dt)
{
    return (unsigned)dt < ST_N_DTYPES ? st_dtypes[dt].name : "?";
}

static bool dtype_from_name(const char *s, size_t len, lmi_st_dtype *out)
{
    for (size_t k = 0; k < ST_N_DTYPES; k++) {
        if (strlen(st_dtypes[k].name) == len && memcmp(st_dtypes[k].name, s, len) == 0) {
            *out = (lmi_st_dtype)k;
            return true;
        }
    }
    return false;
}

/* ---- reader -------------------------------------------------------------- */

typedef struct name_ix {
    const char *name;
    size_t ix;
} name_ix;

typedef struct range_ix {
    uint64_t begin, end;
    size_t ix;
} range_ix;

static int cmp_name_ix(const void *a, const void *b)
{
    return strcmp(((const name_ix *)a)->name, ((const name_ix *)b)->name);
}

static int cmp_range_ix(const void *a, const void *b)
{
    const range_ix *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* A non-negative JSON integer, or false. */
static bool json_u64(const lmi_json *j, uint64_t *out)
{
    if (!j || j->type != LMI_JSON_NUMBER || !j->is_integer || j->integer < 0)
        return false;
    *out = (uint64_t)j->integer;
    return true;
}

/* Validates one header entry and fills t (name not set). */
static lm_status parse_entry(const char *name, const lmi_json *v, size_t data_size,
                             lmi_st_tensor *t, uint64_t *begin_out, lmi_err *e)
{
    if (v->type != LMI_JSON_OBJECT)
        return lmi_fail(e, LM_ERR_FORMAT, "tensor %.200s: header entry is not an object", name);
    const lmi_json *dt = lmi_json_get(v, "dtype");
    const lmi_json *sh = lmi_json_get(v, "shape");
    const lmi_json *off = lmi_json_get(v, "data_offsets");
    if (!dt || dt->type != LMI_JSON_STRING)
        return lmi_fail(e, LM_ERR_FORMAT, "tensor %.200s: \"dtype\" missing or not a string", name);
    if (!sh || sh->type != LMI_JSON_ARRAY)
        return lmi_fail(e, LM_ERR_FORMAT, "tensor %.200s: \"shape\" missing or not an array", name);
    if (!off || off->type != LMI_JSON_ARRAY || off->len != 2)
        return lmi_fail(e, LM_ERR_FORMAT,
                        "tensor %.200s: \"data_offsets\" missing or not an array of two integers",
                        name);
    if (!dtype_from_name(dt->str, dt->len, &t->dtype))
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "tensor %.200s has unsupported dtype %.32s", name,
                        dt->str);
    if (sh->len > LMI_ST_MAX_DIMS)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "tensor %.200s has %zu dimensions (at most %d)",
                        name, sh->len, LMI_ST_MAX_DIMS);
    t->ndim = (int)sh->len;
    /* Element count, overflow-checked against both uint64 and size_t. */
    uint64_t nelem = 1;
    bool overflow = false;
    for (size_t k = 0; k < sh->len; k++) {
        uint64_t d;
        if (!json_u64(&sh->items[k], &d))
            return lmi_fail(e, LM_ERR_FORMAT,
                            "tensor %.200s: shape entries must be non-negative integers", name);
        t->shape[k] = (int64_t)d;
        if (d != 0 && nelem > UINT64_MAX / d)
            overflow = true;
        nelem *= d;
    }
    /* A zero dimension makes the product 0 whatever the others are; an
     * overflow before it would still be detected above, which is fine: no
     * real tensor has such a shape. */
    uint64_t es = lmi_st_dtype_size(t->dtype);
    if (overflow || nelem > UINT64_MAX / es || nelem * es > SIZE_MAX)
        return lmi_fail(e, LM_ERR_FORMAT, "tensor %.200s: shape is too large", name);
    uint64_t nbytes = nelem * es;
    uint64_t b, en;
    if (!json_u64(&off->items[0], &b) || !json_u64(&off->items[1], &en))
        return lmi_fail(e, LM_ERR_FORMAT,
                        "tensor %.200s: data_offsets must be non-negative integers", name);
    if (b > en)
        return lmi_fail(e, LM_ERR_FORMAT, "tensor %.200s: data_offsets [%llu,%llu] are reversed",
                        name, (unsigned long long)b, (unsigned long long)en);
    if (en > data_size)
        return lmi_fail(e, LM_ERR_FORMAT,
                        "tensor %.200s: data_offsets [%llu,%llu] lie outside the data buffer "
                        "(%zu bytes)",
                        name, (unsigned long long)b, (unsigned long long)en, data_size);
    if (en - b != nbytes)
        return lmi_fail(e, LM_ERR_FORMAT,
                        "tensor %.200s: data_offsets span %llu bytes but %s with this shape "
                        "needs %llu",
                        name, (unsigned long long)(en - b), lmi_st_dtype_name(t->dtype),
                        (unsigned long long)nbytes);
    t->nbytes = (size_t)nbytes;
    *begin_out = b;
    return LM_OK;
}

static lm_status parse_metadata(lmi_st_file *f, lmi_json *md, lmi_err *e)
{
    if (md->type != LMI_JSON_OBJECT)
        return lmi_fail(e, LM_ERR_FORMAT, "__metadata__ is not an object");
    if (md->len == 0)
        return LM_OK;
    f->meta_keys = lmi_alloc(md->len, sizeof *f->meta_keys);
    f->meta_values = lmi_alloc(md->len, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
    for (size_t k = 0; k < md->len; k++) {
        lmi_json *v = &md->items[k];
        if (v->type != LMI_JSON_STRING)
            return lmi_fail(e, LM_ERR_FORMAT, "__metadata__ value of %.200s is not a string",
                            md->keys[k]);
        if (strlen(md->keys[k]) != md->key_lens[k] || strlen(v->str) != v->len)
            return lmi_fail(e, LM_ERR_FORMAT, "__metadata__ entry contains a NUL byte");
        /* Take the strings out of the DOM instead of copying them. */
        f->meta_keys[k] = md->keys[k];
        md->keys[k] = NULL;
        f->meta_values[k] = v->str;
        v->str = NULL;
        v->type = LMI_JSON_NULL;
        f->n_meta++;
    }
    return LM_OK;
}

static lm_status parse_header(const uint8_t *buf, size_t size, lmi_st_file *f, lmi_json **root_out,
                              range_ix **ranges_out, name_ix **names_out, lmi_err *e)
{
    if (size < 8)
        return lmi_fail(e, LM_ERR_FORMAT, "file is %zu bytes, too short for a safetensors header",
                        size);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--)
        hlen = (hlen << 8) | buf[k];
    if (hlen < 2)
        return lmi_fail(e, LM_ERR_FORMAT, "header length %llu is too small",
                        (unsigned long long)hlen);
    if (hlen > LMI_ST_MAX_HEADER)
        return lmi_fail(e, LM_ERR_FORMAT, "header length %llu exceeds the 100 MB limit",
                        (unsigned long long)hlen);
    if (hlen > size - 8)
        return lmi_fail(e, LM_ERR_FORMAT,
                        "header length %llu exceeds the %zu bytes after it (truncated file?)",
                        (unsigned long long)hlen, size - 8);
    const uint8_t *data = buf + 8 + hlen;
    size_t data_size = size - 8 - (size_t)hlen;

    lmi_err je = {{0}};
    lm_status st = lmi_json_parse((const char *)buf + 8, (size_t)hlen, root_out, &je);
    if (st != LM_OK)
        return lmi_fail(e, st, "header: %s", je.msg);
    lmi_json *root = *root_out;
    if (root->type != LMI_JSON_OBJECT)
        return lmi_fail(e, LM_ERR_FORMAT, "header is not a JSON object");

    size_t n_meta_entries = 0;
    for (size_t k = 0; k < root->len; k++)
        if (strcmp(root->keys[k], "__metadata__") == 0)
            n_meta_entries++;
    if (n_meta_entries > 1)
        return lmi_fail(e, LM_ERR_FORMAT, "duplicate __metadata__ entry");
    size_t nt = root->len - n_meta_entries;

    f->tensors = lmi_alloc(nt, sizeof *f->tensors);
    f->by_name = lmi_alloc(nt, sizeof *f->by_name);
    range_ix *ranges = *ranges_out = lmi_alloc(nt, sizeof *ranges);
    name_ix *names = *names_out = lmi_alloc(nt, sizeof *names);
    if (!f->tensors || !f->by_name || !ranges || !names)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");

    for (size_t k = 0; k < root->len; k++) {
        const char *name = root->keys[k];
        if (strcmp(name, "__metadata__") == 0) {
            st = parse_metadata(f, &root->items[k], e);
            if (st != LM_OK)
                return st;
            continue;
        }
        if (strlen(name) != root->key_lens[k])
            return lmi_fail(e, LM_ERR_FORMAT, "a tensor name contains a NUL byte");
        lmi_st_tensor *t = &f->tensors[f->n_tensors];
        uint64_t begin = 0;
        st = parse_entry(name, &root->items[k], data_size, t, &begin, e);
        if (st != LM_OK)
            return st;
        t->data = data + begin;
        t->name = root->keys[k]; /* moved out of the DOM */
        root->keys[k] = NULL;
        ranges[f->n_tensors] = (range_ix){begin, begin + t->nbytes, f->n_tensors};
        names[f->n_tensors] = (name_ix){t->name, f->n_tensors};
        f->n_tensors++;
    }

    /* Unique names (and the sorted index lmi_st_find searches). */
    if (nt > 1)
        qsort(names, nt, sizeof *names, cmp_name_ix);
    for (size_t k = 0; k < nt; k++) {
        if (k > 0 && strcmp(names[k - 1].name, names[k].name) == 0)
            return lmi_fail(e, LM_ERR_FORMAT, "duplicate tensor name %.200s", names[k].name);
        f->by_name[k] = names[k].ix;
    }
    /* No two non-empty byte ranges intersect. */
    if (nt > 1)
        qsort(ranges, nt, sizeof *ranges, cmp_range_ix);
    uint64_t max_end = 0;
    size_t max_ix = 0;
    for (size_t k = 0; k < nt; k++) {
        if (ranges[k].begin == ranges[k].end)
            continue;
        if (ranges[k].begin < max_end)
            return lmi_fail(e, LM_ERR_FORMAT,
                            "tensors %.200s and %.200s overlap in the data buffer",
                            f->tensors[max_ix].name, f->tensors[ranges[k].ix].name);
        max_end = ranges[k].end;
        max_ix = ranges[k].ix;
    }
    return LM_OK;
}

lm_status lmi_st_parse(const uint8_t *buf, size_t size, lmi_st_file *f, lmi_err *e)
{
    if (!f)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "safetensors: NULL file");
    memset(f, 0, sizeof *f);
    if (!buf && size)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "safetensors: NULL buffer");
    lmi_json *root = NULL;
    range_ix *ranges = NULL;
    name_ix *names = NULL;
    lm_status st = parse_header(buf, size, f, &root, &ranges, &names, e);
    lmi_json_free(root);
    lmi_free(ranges);
    lmi_free(names);
    if (st != LM_OK)
        lmi_st_close(f);
    return st;
}

lm_status lmi_st_open(const char *path, lmi_st_file *f, lmi_err *e)
{
    if (!f)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "safetensors: NULL file");
    memset(f, 0, sizeof *f);
    if (!path)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "safetensors: NULL path");
    lmi_mapping m;
    lm_status st = lmi_map_file(path, &m, e);
    if (st != LM_OK)
        return st;
    if (m.size < 8) {
        lmi_unmap_file(&m);
        return lmi_fail(e, LM_ERR_FORMAT, "%s: file is %lld bytes, too short for safetensors", path,
                        (long long)m.size);
    }
    lmi_err pe = {{0}};
    st = lmi_st_parse(m.addr, m.size, f, &pe);
    if (st != LM_OK) {
        lmi_unmap_file(&m);
        return lmi_fail(e, st, "%s: %s", path, pe.msg);
    }
    f->map = m;
    return LM_OK;
}

const lmi_st_tensor *lmi_st_find(const lmi_st_file *f, const char *name)
{
    if (!f) return NULL;
    return lmi_find_by_name(f->tensors, sizeof *f->tensors, offsetof(lmi_st_tensor, name), f->by_name,
                            f->n_tensors, name);
}

const char *lmi_st_meta(const lmi_st_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (size_t k = 0; k < f->n_meta; k++)
        if (strcmp(f->meta_keys[k], key) == 0)
            return f->meta_values[k];
    return NULL;
}

void lmi_st_close(lmi_st_file *f)
{
    if (!f)
        return;
    if (f->tensors)
        for (size_t k = 0; k < f->n_tensors; k++)
            lmi_free(f->tensors[k].name);
    lmi_free(f->tensors);
    lmi_free(f->by_name);
    for (size_t k = 0; k < f->n_meta; k++) {
        lmi_free(f->meta_keys[k]);
        lmi_free(f->meta_values[k]);
    }
    lmi_free(f->meta_keys);
    lmi_free(f->meta_values);
    if (f->map.addr)
        munmap(f->map.addr, f->map.size);
    memset(f, 0, sizeof *f);
}

/* ---- conversion ------------------------------------------------------------ */

/* IEEE binary16 -> binary32 (lmi_f16_to_f32, internal.h). */
static float half_to_float(uint16_t h)
{
    return lmi_f16_to_f32(h);
}

lm_status lmi_st_to_f32(const lmi_st_tensor *t, float *out, lmi_err *e)
{
    if (!t || (!out && t->nbytes))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "NULL argument");
    size_t es = lmi_st_dtype_size(t->dtype);
    if (es == 0)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "bad dtype");
    size_t n = t->nbytes / es;
    const uint8_t *p = t->data; /* may be unaligned: read through memcpy */
    switch (t->dtype) {
    case LMI_ST_F32:
        if (n)
            memcpy(out, p, n * 4);
        return LM_OK;
    case LMI_ST_F16:
        for (size_t k = 0; k < n; k++) {
            uint16_t h;
            memcpy(&h, p + 2 * k, 2);
            out[k] = half_to_float(h);
        }
        return LM_OK;
    case LMI_ST_BF16:
        for (size_t k = 0; k < n; k++) {
            uint16_t h;
            memcpy(&h, p + 2 * k, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[k], &bits, 4);
        }
        return LM_OK;
    case LMI_ST_F64:
        for (size_t k = 0; k < n; k++) {
            double d;
            memcpy(&d, p + 8 * k, 8);
            /* Out-of-range conversion is undefined in C: give the IEEE
             * round-to-nearest result (inf from FLT_MAX + half an ulp). */
            const double lim = 0x1.ffffffp127;
            if (d >= lim)
                out[k] = INFINITY;
            else if (d <= -lim)
                out[k] = -INFINITY;
            else
                out[k] = (float)d;
        }
        return LM_OK;
    default:
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "tensor %.200s: cannot convert %s to F32",
                        t->name ? t->name : "?", lmi_st_dtype_name(t->dtype));
    }
}

/* Element k of a float tensor as a double (F64 exactly, the rest widened). */
static double float_elem(const lmi_st_tensor *t, size_t k)
{
    const uint8_t *p = t->data;
    uint16_t h;
    float f;
    double d;
    switch (t->dtype) {
    case LMI_ST_F64: memcpy(&d, p + 8 * k, 8); return d;
    case LMI_ST_F32: memcpy(&f, p + 4 * k, 4); return f;
    case LMI_ST_F16: memcpy(&h, p + 2 * k, 2); return half_to_float(h);
    default: /* BF16 */
        memcpy(&h, p + 2 * k, 2);
        uint32_t bits = (uint32_t)h << 16;
        memcpy(&f, &bits, 4);
        return f;
    }
}

lm_status lmi_st_to_f64(const lmi_st_tensor *t, double *out, lmi_err *e)
{
    if (!t || (!out && t->nbytes))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "NULL argument");
    if (t->dtype != LMI_ST_F64 && t->dtype != LMI_ST_F32 && t->dtype != LMI_ST_F16 &&
        t->dtype != LMI_ST_BF16)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "tensor %.200s: cannot convert %s to F64",
                        t->name ? t->name : "?", lmi_st_dtype_name(t->dtype));
    size_t n = t->nbytes / lmi_st_dtype_size(t->dtype);
    for (size_t k = 0; k < n; k++)
        out[k] = float_elem(t, k);
    return LM_OK;
}

lm_status lmi_st_to_i32(const lmi_st_tensor *t, int32_t *out, lmi_err *e)
{
    if (!t || (!out && t->nbytes))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "NULL argument");
    if (t->dtype != LMI_ST_I64 && t->dtype != LMI_ST_I32 && t->dtype != LMI_ST_I16 &&
        t->dtype != LMI_ST_I8 && t->dtype != LMI_ST_U8)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "tensor %.200s: cannot convert %s to I32",
                        t->name ? t->name : "?", lmi_st_dtype_name(t->dtype));
    const size_t n = t->nbytes / lmi_st_dtype_size(t->dtype);
    const uint8_t *p = t->data; /* may be unaligned: read through memcpy */
    for (size_t k = 0; k < n; k++) {
        int64_t v;
        int32_t i32;
        int16_t i16;
        switch (t->dtype) {
        case LMI_ST_I64: memcpy(&v, p + 8 * k, 8); break;
        case LMI_ST_I32:
            memcpy(&i32, p + 4 * k, 4);
            v = i32;
            break;
        case LMI_ST_I16:
            memcpy(&i16, p + 2 * k, 2);
            v = i16;
            break;
        case LMI_ST_I8: v = (int8_t)p[k]; break;
        default: v = p[k]; break; /* U8 */
        }
        if (v < INT32_MIN || v > INT32_MAX)
            return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                            "tensor %.200s: element %zu = %lld does not fit int32",
                            t->name ? t->name : "?", k, (long long)v);
        out[k] = (int32_t)v;
    }
    return LM_OK;
}

/* ---- writer ---------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = lmi_alloc_raw(cap, 1);
        if (!np) {
            b->oom = true;
            return;
        }
        if (b->len)
            memcpy(np, b->p, b->len);
        lmi_free(b->p);
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_fmt_u64(sbuf *b, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    sb_put(b, t, (size_t)n);
}

/* A JSON string literal: quote, backslash and control characters escaped. */
static void sb_json_str(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            char t[2] = {'\\', (char)*c};
            sb_put(b, t, 2);
        } else if (*c < 0x20) {
            char t[8];
            snprintf(t, sizeof t, "\\u%04x", *c);
            sb_put(b, t, 6);
        } else {
            sb_put(b, (const char *)c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static lm_status write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return LM_ERR_IO;
        }
        p += w;
        n -= (size_t)w;
    }
    return LM_OK;
}

lm_status lmi_st_write(const char *path, const lmi_st_out *tensors, size_t n_tensors,
                       const char *const *meta_keys, const char *const *meta_values, size_t n_meta,
                       lmi_err *e)
{
    if (!path || (n_tensors && !tensors) || (n_meta && (!meta_keys || !meta_values)))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "safetensors write: NULL argument");
    uint64_t *sizes = lmi_alloc(n_tensors, sizeof *sizes);
    uint64_t *offs = lmi_alloc(n_tensors, sizeof *offs);
    name_ix *names = lmi_alloc(n_tensors, sizeof *names);
    sbuf hb = {0};
    char *tmp = NULL;
    int fd = -1;
    lm_status st = LM_OK;
    if (!sizes || !offs || !names) {
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    for (size_t k = 0; k < n_tensors; k++) {
        const lmi_st_out *t = &tensors[k];
        size_t es = lmi_st_dtype_size(t->dtype);
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0 || es == 0 ||
            t->ndim < 0 || t->ndim > LMI_ST_MAX_DIMS || (t->ndim && !t->shape)) {
            st = lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "safetensors write: bad tensor #%zu (%.200s)",
                          k, t->name ? t->name : "NULL");
            goto done;
        }
        uint64_t nel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 || (t->shape[d] && nel > UINT64_MAX / (uint64_t)t->shape[d])) {
                st = lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "safetensors write: bad shape for %.200s",
                              t->name);
                goto done;
            }
            nel *= (uint64_t)t->shape[d];
        }
        if (nel > SIZE_MAX / es || (nel && !t->data)) {
            st = lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "safetensors write: bad data for %.200s",
                          t->name);
            goto done;
        }
        sizes[k] = nel * es;
        names[k] = (name_ix){t->name, k};
    }
    if (n_tensors > 1)
        qsort(names, n_tensors, sizeof *names, cmp_name_ix);
    for (size_t k = 1; k < n_tensors; k++) {
        if (strcmp(names[k - 1].name, names[k].name) == 0) {
            st = lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "safetensors write: duplicate name %.200s",
                          names[k].name);
            goto done;
        }
    }
    for (size_t k = 0; k < n_meta; k++) {
        if (!meta_keys[k] || !meta_values[k]) {
            st = lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "safetensors write: NULL metadata");
            goto done;
        }
    }
    /* Largest elements first, no gaps: each tensor stays aligned to its
     * element size because the data buffer starts 8-aligned. */
    uint64_t pos = 0;
    for (size_t es = 8; es >= 1; es /= 2)
        for (size_t k = 0; k < n_tensors; k++)
            if (lmi_st_dtype_size(tensors[k].dtype) == es) {
                offs[k] = pos;
                pos += sizes[k];
            }

    sb_str(&hb, "{");
    bool first = true;
    if (n_meta) {
        sb_str(&hb, "\"__metadata__\":{");
        for (size_t k = 0; k < n_meta; k++) {
            if (k)
                sb_str(&hb, ",");
            sb_json_str(&hb, meta_keys[k]);
            sb_str(&hb, ":");
            sb_json_str(&hb, meta_values[k]);
        }
        sb_str(&hb, "}");
        first = false;
    }
    for (size_t k = 0; k < n_tensors; k++) {
        const lmi_st_out *t = &tensors[k];
        if (!first)
            sb_str(&hb, ",");
        first = false;
        sb_json_str(&hb, t->name);
        sb_str(&hb, ":{\"dtype\":\"");
        sb_str(&hb, lmi_st_dtype_name(t->dtype));
        sb_str(&hb, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d)
                sb_str(&hb, ",");
            sb_fmt_u64(&hb, (uint64_t)t->shape[d]);
        }
        sb_str(&hb, "],\"data_offsets\":[");
        sb_fmt_u64(&hb, offs[k]);
        sb_str(&hb, ",");
        sb_fmt_u64(&hb, offs[k] + sizes[k]);
        sb_str(&hb, "]}");
    }
    sb_str(&hb, "}");
    while (!hb.oom && hb.len % 8)
        sb_str(&hb, " ");
    if (hb.oom) {
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    if (hb.len > LMI_ST_MAX_HEADER) {
        st = lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "safetensors write: header over 100 MB");
        goto done;
    }

    size_t plen = strlen(path);
    tmp = lmi_alloc(plen + 16, 1);
    if (!tmp) {
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp-XXXXXX", 12);
    fd = mkstemp(tmp);
    char eb[128];
    if (fd < 0) {
        st =
            lmi_fail(e, LM_ERR_IO, "%s: cannot create: %s", path, strerror_r(errno, eb, sizeof eb));
        lmi_free(tmp);
        tmp = NULL;
        goto done;
    }
    (void)fchmod(fd, 0644); /* mkstemp creates 0600; a saved file is ordinary data */
    uint8_t lenbuf[8];
    for (int k = 0; k < 8; k++)
        lenbuf[k] = (uint8_t)((uint64_t)hb.len >> (8 * k));
    st = write_all(fd, lenbuf, 8);
    if (st == LM_OK)
        st = write_all(fd, hb.p, hb.len);
    for (size_t es = 8; es >= 1 && st == LM_OK; es /= 2)
        for (size_t k = 0; k < n_tensors && st == LM_OK; k++)
            if (lmi_st_dtype_size(tensors[k].dtype) == es && sizes[k])
                st = write_all(fd, tensors[k].data, (size_t)sizes[k]);
    if (st == LM_OK && fsync(fd) != 0)
        st = LM_ERR_IO;
    if (st != LM_OK) {
        st = lmi_fail(e, LM_ERR_IO, "%s: write failed: %s", path, strerror_r(errno, eb, sizeof eb));
        goto done;
    }
    if (close(fd) != 0) {
        fd = -1;
        st = lmi_fail(e, LM_ERR_IO, "%s: close failed: %s", path, strerror_r(errno, eb, sizeof eb));
        goto done;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        st = lmi_fail(e, LM_ERR_IO, "%s: cannot rename into place: %s", path,
                      strerror_r(errno, eb, sizeof eb));
        goto done;
    }
    lmi_free(tmp);
    tmp = NULL;

done:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        lmi_free(tmp);
    }
    lmi_free(hb.p);
    lmi_free(sizes);
    lmi_free(offs);
    lmi_free(names);
    return st;
}
