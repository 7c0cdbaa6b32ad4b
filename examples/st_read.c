/* st_read.c - see st_read.h.  Format: u64 little-endian header length N,
 * N bytes of JSON {"name": {"dtype", "shape", "data_offsets"}, ...,
 * "__metadata__": {...}}, then the data section. */
#include "st_read.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER (100u << 20) /* the format's own limit is 100 MB */
#define ST_MAX_DEPTH  64

/* ---- errors -------------------------------------------------------------- */

static int st_fail(char *err, size_t cap, const char *fmt, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ---- a minimal JSON cursor ---------------------------------------------- */

typedef struct jcur {
    const char *p, *end, *begin;
    char *err;
    size_t err_cap;
    int depth;
} jcur;

static void j_ws(jcur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int j_expect(jcur *c, char ch)
{
    j_ws(c);
    if (c->p >= c->end || *c->p != ch)
        return st_fail(c->err, c->err_cap, "header JSON: expected '%c' at byte %ld", ch,
                       (long)(c->p - c->begin));
    c->p++;
    return 0;
}

static int j_peek(jcur *c, char ch)
{
    j_ws(c);
    return c->p < c->end && *c->p == ch;
}

static void utf8_put(char *out, size_t *n, unsigned cp)
{
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (char)(0xC0 | (cp >> 6));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*n)++] = (char)(0xE0 | (cp >> 12));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

/* Parses a string; if out is not NULL stores a malloc'd copy. */
static int j_string(jcur *c, char **out)
{
    if (j_expect(c, '"'))
        return -1;
    const char *start = c->p;
    /* Decoded text is never longer than the escaped text (\uXXXX: 6 -> <= 3). */
    while (c->p < c->end && *c->p != '"') {
        if (*c->p == '\\' && c->end - c->p < 2) {
            c->p = c->end;
            break;
        }
        c->p += *c->p == '\\' ? 2 : 1;
    }
    if (c->p >= c->end)
        return st_fail(c->err, c->err_cap, "header JSON: unterminated string");
    const char *stop = c->p;
    c->p++; /* closing quote */
    if (!out)
        return 0;
    char *s = malloc((size_t)(stop - start) + 1);
    if (!s)
        return st_fail(c->err, c->err_cap, "out of memory");
    size_t n = 0;
    for (const char *q = start; q < stop; q++) {
        if (*q != '\\') {
            s[n++] = *q;
            continue;
        }
        q++;
        switch (*q) {
        case '"': s[n++] = '"'; break;
        case '\\': s[n++] = '\\'; break;
        case '/': s[n++] = '/'; break;
        case 'b': s[n++] = '\b'; break;
        case 'f': s[n++] = '\f'; break;
        case 'n': s[n++] = '\n'; break;
        case 'r': s[n++] = '\r'; break;
        case 't': s[n++] = '\t'; break;
        case 'u': {
            unsigned cp = 0;
            if (stop - q < 5) {
                free(s);
                return st_fail(c->err, c->err_cap, "header JSON: bad \\u escape");
            }
            for (int k = 1; k <= 4; k++) {
                char h = q[k];
                cp <<= 4;
                if (h >= '0' && h <= '9')
                    cp |= (unsigned)(h - '0');
                else if (h >= 'a' && h <= 'f')
                    cp |= (unsigned)(h - 'a' + 10);
                else if (h >= 'A' && h <= 'F')
                    cp |= (unsigned)(h - 'A' + 10);
                else {
                    free(s);
                    return st_fail(c->err, c->err_cap, "header JSON: bad \\u escape");
                }
            }
            q += 4;
            utf8_put(s, &n, cp);
            break;
        }
        default: free(s); return st_fail(c->err, c->err_cap, "header JSON: bad escape");
        }
    }
    s[n] = '\0';
    *out = s;
    return 0;
}

/* A non-negative integer that fits in int64. */
static int j_uint(jcur *c, uint64_t *out)
{
    j_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
        return st_fail(c->err, c->err_cap, "header JSON: expected a non-negative integer");
    uint64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        unsigned d = (unsigned)(*c->p - '0');
        if (v > (UINT64_C(0x7FFFFFFFFFFFFFFF) - d) / 10)
            return st_fail(c->err, c->err_cap, "header JSON: integer too large");
        v = v * 10 + d;
        c->p++;
    }
    if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))
        return st_fail(c->err, c->err_cap, "header JSON: expected an integer");
    *out = v;
    return 0;
}

static int j_skip_value(jcur *c);

static int j_skip_container(jcur *c, char open, char close)
{
    if (++c->depth > ST_MAX_DEPTH)
        return st_fail(c->err, c->err_cap, "header JSON: nested too deeply");
    if (j_expect(c, open))
        return -1;
    if (j_peek(c, close)) {
        c->p++;
        c->depth--;
        return 0;
    }
    for (;;) {
        if (open == '{') {
            if (j_string(c, NULL) || j_expect(c, ':'))
                return -1;
        }
        if (j_skip_value(c))
            return -1;
        if (j_peek(c, ',')) {
            c->p++;
            continue;
        }
        if (j_expect(c, close))
            return -1;
        c->depth--;
        return 0;
    }
}

static int j_skip_value(jcur *c)
{
    j_ws(c);
    if (c->p >= c->end)
        return st_fail(c->err, c->err_cap, "header JSON: unexpected end");
    char ch = *c->p;
    if (ch == '{')
        return j_skip_container(c, '{', '}');
    if (ch == '[')
        return j_skip_container(c, '[', ']');
    if (ch == '"')
        return j_string(c, NULL);
    /* number, true, false, null: a run of literal characters */
    const char *start = c->p;
    while (c->p < c->end && strchr("0123456789+-.eEtruefalsn", *c->p))
        c->p++;
    if (c->p == start)
        return st_fail(c->err, c->err_cap, "header JSON: unexpected character 0x%02x",
                       (unsigned char)ch);
    return 0;
}

/* ---- tensors -------------------------------------------------------------- */

static size_t dtype_size(const char *dt)
{
    static const struct {
        const char *name;
        size_t size;
    } tab[] = {
        {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},  {"I16", 2},
        {"I8", 1},  {"U8", 1},  {"U16", 2}, {"U32", 4},  {"U64", 8}, {"BOOL", 1},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(dt, tab[i].name) == 0)
            return tab[i].size;
    return 0;
}

static int parse_tensor(jcur *c, st_tensor *t, uint64_t data_size)
{
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    if (j_expect(c, '{'))
        return -1;
    if (j_peek(c, '}'))
        return st_fail(c->err, c->err_cap, "tensor %s: empty description", t->name);
    for (;;) {
        char *key = NULL;
        if (j_string(c, &key) || j_expect(c, ':')) {
            free(key);
            return -1;
        }
        int rc = 0;
        if (strcmp(key, "dtype") == 0) {
            char *dt = NULL;
            rc = j_string(c, &dt);
            if (!rc) {
                if (strlen(dt) >= sizeof t->dtype || !(t->elem_size = dtype_size(dt)))
                    rc = st_fail(c->err, c->err_cap, "tensor %s: unknown dtype \"%.16s\"", t->name,
                                 dt);
                else
                    strcpy(t->dtype, dt);
            }
            free(dt);
            have_dtype = 1;
        } else if (strcmp(key, "shape") == 0) {
            rc = j_expect(c, '[');
            t->ndim = 0;
            if (!rc && j_peek(c, ']')) {
                c->p++;
            } else {
                while (!rc) {
                    uint64_t v;
                    if (t->ndim >= ST_MAX_DIMS) {
                        rc = st_fail(c->err, c->err_cap, "tensor %s: more than %d dimensions",
                                     t->name, ST_MAX_DIMS);
                        break;
                    }
                    rc = j_uint(c, &v);
                    if (rc)
                        break;
                    t->shape[t->ndim++] = (int64_t)v;
                    if (j_peek(c, ',')) {
                        c->p++;
                        continue;
                    }
                    rc = j_expect(c, ']');
                    break;
                }
            }
            have_shape = 1;
        } else if (strcmp(key, "data_offsets") == 0) {
            rc = j_expect(c, '[') || j_uint(c, &t->begin) || j_expect(c, ',') ||
                 j_uint(c, &t->end) || j_expect(c, ']');
            have_offsets = 1;
        } else {
            rc = j_skip_value(c);
        }
        free(key);
        if (rc)
            return -1;
        if (j_peek(c, ',')) {
            c->p++;
            continue;
        }
        if (j_expect(c, '}'))
            return -1;
        break;
    }
    if (!have_dtype || !have_shape || !have_offsets)
        return st_fail(c->err, c->err_cap, "tensor %s: needs dtype, shape and data_offsets",
                       t->name);
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t d = (uint64_t)t->shape[i];
        if (d && n > UINT64_MAX / d / 8)
            return st_fail(c->err, c->err_cap, "tensor %s: shape too large", t->name);
        n *= d;
    }
    t->n_elems = n;
    if (t->begin > t->end || t->end > data_size)
        return st_fail(c->err, c->err_cap,
                       "tensor %s: data_offsets [%llu, %llu] outside the %llu-byte data section",
                       t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)data_size);
    if (t->end - t->begin != n * t->elem_size)
        return st_fail(c->err, c->err_cap, "tensor %s: %llu bytes for %llu elements of %s", t->name,
                       (unsigned long long)(t->end - t->begin), (unsigned long long)n, t->dtype);
    return 0;
}

static int parse_header(st_file *f, const char *hdr, size_t len, char *err, size_t cap)
{
    jcur c = {hdr, hdr + len, hdr, err, cap, 0};
    uint64_t data_size = f->size - f->data_off;
    int n_cap = 0;
    if (j_expect(&c, '{'))
        return -1;
    if (j_peek(&c, '}')) {
        c.p++;
        return 0;
    }
    for (;;) {
        char *name = NULL;
        if (j_string(&c, &name) || j_expect(&c, ':')) {
            free(name);
            return -1;
        }
        if (strcmp(name, "__metadata__") == 0) {
            free(name);
            if (j_skip_value(&c))
                return -1;
        } else {
            if (st_find(f, name)) {
                st_fail(err, cap, "tensor %s appears twice", name);
                free(name);
                return -1;
            }
            if (f->n_tensors == n_cap) {
                int nc = n_cap ? n_cap * 2 : 16;
                st_tensor *nt = realloc(f->tensors, (size_t)nc * sizeof *nt);
                if (!nt) {
                    free(name);
                    return st_fail(err, cap, "out of memory");
                }
                f->tensors = nt;
                n_cap = nc;
            }
            st_tensor *t = &f->tensors[f->n_tensors++];
            memset(t, 0, sizeof *t);
            t->name = name;
            if (parse_tensor(&c, t, data_size))
                return -1;
        }
        if (j_peek(&c, ',')) {
            c.p++;
            continue;
        }
        if (j_expect(&c, '}'))
            return -1;
        break;
    }
    j_ws(&c);
    if (c.p != c.end)
        return st_fail(err, cap, "header JSON: trailing bytes after the object");
    return 0;
}

/* ---- public --------------------------------------------------------------- */

void st_close(st_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

int st_open(const char *path, st_file *f, char *err, size_t err_cap)
{
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return st_fail(err, err_cap, "cannot open %s: %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0) {
        fclose(fp);
        return st_fail(err, err_cap, "cannot seek %s: %s", path, strerror(errno));
    }
    long sz = ftell(fp);
    if (sz < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return st_fail(err, err_cap, "cannot size %s (not a regular file?)", path);
    }
    if (sz < 8) {
        fclose(fp);
        return st_fail(err, err_cap, "%s: %ld bytes, too short for safetensors", path, sz);
    }
    f->size = (size_t)sz;
    f->buf = malloc(f->size);
    if (!f->buf) {
        fclose(fp);
        return st_fail(err, err_cap, "%s: cannot allocate %zu bytes", path, f->size);
    }
    size_t got = fread(f->buf, 1, f->size, fp);
    fclose(fp);
    if (got != f->size) {
        st_close(f);
        return st_fail(err, err_cap, "%s: short read", path);
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | f->buf[i];
    if (hlen > ST_MAX_HEADER || hlen > f->size - 8) {
        st_close(f);
        return st_fail(err, err_cap, "%s: header length %llu does not fit the %zu-byte file", path,
                       (unsigned long long)hlen, f->size);
    }
    f->data_off = 8 + (size_t)hlen;
    char msg[256] = "";
    if (parse_header(f, (const char *)f->buf + 8, (size_t)hlen, msg, sizeof msg)) {
        st_close(f);
        return st_fail(err, err_cap, "%s: %s", path, msg);
    }
    return 0;
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

void *st_copy_data(const st_file *f, const st_tensor *t)
{
    size_t n = (size_t)(t->end - t->begin);
    void *p = malloc(n ? n : 1); /* malloc's alignment suits every dtype */
    if (p && n)
        memcpy(p, f->buf + f->data_off + t->begin, n);
    return p;
}
