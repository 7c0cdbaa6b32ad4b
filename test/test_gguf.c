/* test_gguf.c - GGUF files (lib/format/gguf.c, the GGUF path of
 * lib/model_load.c, lib/tokenizer/gguf.c) against the committed GGUF
 * fixtures (test/data/fixtures/gguf/, written by
 * scripts/make_fixture_gguf.py from the safetensors fixtures): the same
 * dims, parameters and logits as the safetensors directory, the same
 * token ids as tokenizer.json; and every class of broken file, built here
 * by re-serializing a fixture with one thing changed. */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/gguf.h"
#include "format/safetensors.h"
#include "internal.h"
#include "model_load.h"
#include "suite.h"
#include "testutil.h"
#include "tokenizer/tok.h"

static void fixture(char *buf, size_t cap, const char *name)
{
    tu_fixture_dir(buf, cap, name);
}

static void gguf_fixture(char *buf, size_t cap, const char *file)
{
    snprintf(buf, cap, "%s/fixtures/gguf/%s", LM_TEST_DATA, file);
}

static lm_model *load_cpu(const char *path)
{
    lm_model_params p;
    lm_model_params_init(&p);
    p.backend = LM_BACKEND_CPU;
    p.n_threads = 1;
    lm_model *m = NULL;
    char err[512] = "";
    lm_status st = lm_model_load(path, &p, &m, err, sizeof err);
    ck_assert_msg(st == LM_OK, "%s: %s", path, err);
    return m;
}

static lm_status try_load(const char *path, char *err, size_t cap)
{
    lm_model_params p;
    lm_model_params_init(&p);
    p.backend = LM_BACKEND_CPU;
    p.n_threads = 1;
    lm_model *m = NULL;
    lm_status st = lm_model_load(path, &p, &m, err, cap);
    if (st == LM_OK)
        lm_model_free(m);
    else
        ck_assert_ptr_null(m);
    return st;
}

static lm_model_info info_of(const lm_model *m)
{
    lm_model_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(lm_model_get_info(m, &info), LM_OK);
    return info;
}

/* ---- a GGUF builder: a fixture's contents, changed, re-serialized ---------- */

typedef struct gb_kv {
    char key[128];
    uint32_t type;
    uint8_t *raw;
    size_t raw_size;
} gb_kv;

typedef struct gb_t {
    char name[128];
    uint32_t ndim;
    uint64_t ne[8];
    uint32_t type;
    uint8_t *data;
    size_t nbytes;
    int64_t offset; /* -1: the next aligned place */
} gb_t;

typedef struct gb {
    uint32_t version;
    uint64_t alignment; /* layout; general.alignment is an ordinary key */
    gb_kv kv[64];
    size_t n_kv;
    gb_t t[128];
    size_t n_t;
} gb;

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(c);
    if (n)
        memcpy(c, p, n);
    return c;
}

static void gb_from(gb *b, const char *file)
{
    char path[512];
    gguf_fixture(path, sizeof path, file);
    memset(b, 0, sizeof *b);
    lmi_gguf_file f;
    lmi_err e = {{0}};
    ck_assert_msg(lmi_gguf_open(path, &f, &e) == LM_OK, "%s", e.msg);
    b->version = f.version;
    b->alignment = f.alignment;
    ck_assert_uint_le(f.n_kv, 64);
    ck_assert_uint_le(f.n_tensors, 128);
    for (size_t k = 0; k < f.n_kv; k++) {
        gb_kv *kv = &b->kv[b->n_kv++];
        snprintf(kv->key, sizeof kv->key, "%s", f.kv[k].key);
        kv->type = f.kv[k].type;
        kv->raw = dup_bytes(f.kv[k].raw, f.kv[k].raw_size);
        kv->raw_size = f.kv[k].raw_size;
    }
    for (size_t k = 0; k < f.n_tensors; k++) {
        const lmi_gguf_tensor *s = &f.tensors[k];
        gb_t *t = &b->t[b->n_t++];
        snprintf(t->name, sizeof t->name, "%s", s->name);
        t->ndim = (uint32_t)s->ndim;
        for (int d = 0; d < s->ndim; d++)
            t->ne[d] = (uint64_t)s->ne[d];
        t->type = s->type;
        t->data = dup_bytes(s->data, s->nbytes);
        t->nbytes = s->nbytes;
        t->offset = -1;
    }
    lmi_gguf_close(&f);
}

static void gb_free(gb *b)
{
    for (size_t k = 0; k < b->n_kv; k++)
        free(b->kv[k].raw);
    for (size_t k = 0; k < b->n_t; k++)
        free(b->t[k].data);
    memset(b, 0, sizeof *b);
}

static gb_kv *gb_kv_find(gb *b, const char *key)
{
    for (size_t k = 0; k < b->n_kv; k++)
        if (strcmp(b->kv[k].key, key) == 0)
            return &b->kv[k];
    return NULL;
}

/* Sets key to the encoded value raw (added when absent). */
static void gb_set(gb *b, const char *key, uint32_t type, const void *raw, size_t n)
{
    gb_kv *kv = gb_kv_find(b, key);
    if (!kv) {
        ck_assert_uint_lt(b->n_kv, 64);
        kv = &b->kv[b->n_kv++];
        snprintf(kv->key, sizeof kv->key, "%s", key);
    } else {
        free(kv->raw);
    }
    kv->type = type;
    kv->raw = dup_bytes(raw, n);
    kv->raw_size = n;
}

static void gb_set_u32(gb *b, const char *key, uint32_t v)
{
    gb_set(b, key, LMI_GGUF_U32, &v, 4);
}

static void gb_set_str(gb *b, const char *key, const char *s)
{
    uint8_t buf[256];
    uint64_t n = strlen(s);
    memcpy(buf, &n, 8);
    memcpy(buf + 8, s, n);
    gb_set(b, key, LMI_GGUF_STRING, buf, 8 + n);
}

static void gb_del(gb *b, const char *key)
{
    gb_kv *kv = gb_kv_find(b, key);
    ck_assert_ptr_nonnull(kv);
    free(kv->raw);
    *kv = b->kv[--b->n_kv];
}

static gb_t *gb_t_find(gb *b, const char *name)
{
    for (size_t k = 0; k < b->n_t; k++)
        if (strcmp(b->t[k].name, name) == 0)
            return &b->t[k];
    ck_abort_msg("no tensor %s", name);
    return NULL;
}

static void gb_t_del(gb *b, const char *name)
{
    gb_t *t = gb_t_find(b, name);
    free(t->data);
    /* keep the order: tensors are laid out in it */
    size_t k = (size_t)(t - b->t);
    memmove(&b->t[k], &b->t[k + 1], (b->n_t - k - 1) * sizeof *t);
    b->n_t--;
}

/* Replaces a tensor's type and data (zero bytes of the given size). */
static void gb_t_retype(gb_t *t, uint32_t type, size_t nbytes)
{
    free(t->data);
    t->type = type;
    t->data = calloc(nbytes ? nbytes : 1, 1);
    t->nbytes = nbytes;
}

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
} wbuf;

static void put(wbuf *w, const void *p, size_t n)
{
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->p = realloc(w->p, w->cap);
        ck_assert_ptr_nonnull(w->p);
    }
    memcpy(w->p + w->n, p, n);
    w->n += n;
}

static void put_u32(wbuf *w, uint32_t v)
{
    put(w, &v, 4);
}

static void put_u64(wbuf *w, uint64_t v)
{
    put(w, &v, 8);
}

static void pad_to(wbuf *w, uint64_t a)
{
    static const uint8_t z[256];
    while (w->n % a)
        put(w, z, 1);
}

/* The file image (malloc'd) of b. */
static uint8_t *gb_image(gb *b, size_t *size)
{
    wbuf w = {0};
    put(&w, "GGUF", 4);
    put_u32(&w, b->version);
    put_u64(&w, b->n_t);
    put_u64(&w, b->n_kv);
    for (size_t k = 0; k < b->n_kv; k++) {
        put_u64(&w, strlen(b->kv[k].key));
        put(&w, b->kv[k].key, strlen(b->kv[k].key));
        put_u32(&w, b->kv[k].type);
        put(&w, b->kv[k].raw, b->kv[k].raw_size);
    }
    uint64_t next = 0, end = 0;
    uint64_t *off = calloc(b->n_t + 1, sizeof *off);
    for (size_t k = 0; k < b->n_t; k++) {
        gb_t *t = &b->t[k];
        if (t->offset >= 0) {
            off[k] = (uint64_t)t->offset;
        } else {
            off[k] = (next + b->alignment - 1) / b->alignment * b->alignment;
            next = off[k] + t->nbytes;
        }
        if (off[k] + t->nbytes > end && off[k] < (1ull << 32))
            end = off[k] + t->nbytes;
        put_u64(&w, strlen(t->name));
        put(&w, t->name, strlen(t->name));
        put_u32(&w, t->ndim);
        for (uint32_t d = 0; d < t->ndim; d++)
            put_u64(&w, t->ne[d]);
        put_u32(&w, t->type);
        put_u64(&w, off[k]);
    }
    pad_to(&w, b->alignment);
    const size_t base = w.n;
    uint8_t *zeros = calloc(end + 1, 1);
    put(&w, zeros, end);
    free(zeros);
    for (size_t k = 0; k < b->n_t; k++)
        if (off[k] + b->t[k].nbytes <= end && b->t[k].nbytes)
            memcpy(w.p + base + off[k], b->t[k].data, b->t[k].nbytes);
    pad_to(&w, b->alignment);
    free(off);
    *size = w.n;
    return w.p;
}

static void save(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* Parses b's image: the status, the message in e. */
static lm_status gb_parse(gb *b, lmi_err *e)
{
    size_t n = 0;
    uint8_t *img = gb_image(b, &n);
    lmi_gguf_file f;
    memset(e, 0, sizeof *e);
    lm_status st = lmi_gguf_parse(img, n, &f, e);
    if (st == LM_OK)
        lmi_gguf_close(&f);
    else
        ck_assert_msg(e->msg[0] != '\0', "failure without a message");
    free(img);
    return st;
}

/* Writes b to a scratch .gguf and loads it with lm_model_load. */
static lm_status gb_load(gb *b, char *err, size_t cap)
{
    char path[512];
    tu_tmp_path(path, sizeof path, "case.gguf");
    size_t n = 0;
    uint8_t *img = gb_image(b, &n);
    save(path, img, n);
    free(img);
    lm_status st = try_load(path, err, cap);
    if (st != LM_OK)
        ck_assert_msg(err[0] != '\0', "failure without a message");
    unlink(path);
    return st;
}

static lm_status gb_tokenizer(gb *b, char *err, size_t cap)
{
    char path[512];
    tu_tmp_path(path, sizeof path, "tok.gguf");
    size_t n = 0;
    uint8_t *img = gb_image(b, &n);
    save(path, img, n);
    free(img);
    lm_tokenizer *t = NULL;
    lm_status st = lm_tokenizer_load(path, &t, err, cap);
    lm_tokenizer_free(t);
    unlink(path);
    return st;
}

#define EXPECT(st_expr, want, needle, msg)                                                         \
    do {                                                                                           \
        lm_status got_ = (st_expr);                                                                \
        ck_assert_msg(got_ == (want), "%s: status %d (%s), expected %d; message: %s", #st_expr,   \
                      (int)got_, lm_status_str(got_), (int)(want), (msg));                         \
        ck_assert_msg(strstr((msg), (needle)) != NULL, "%s: message \"%s\" lacks \"%s\"",          \
                      #st_expr, (msg), (needle));                                                  \
    } while (0)

/* ---- the GGUF model is the safetensors model --------------------------------- */

typedef struct pair {
    const char *gguf;     /* in fixtures/gguf */
    const char *dir;      /* in fixtures */
} pair;

/* Every F32 and BF16 pair: same weights bit for bit, same code paths (A
 * = -exp(A_log) is computed the same way: the script rounds the float64
 * exponential once, which is what glibc's expf gives on these values). */
static const pair pairs[] = {
    {"m1-tiny-f32.gguf", "m1-tiny-f32"}, {"m1-odd-f32.gguf", "m1-odd-f32"},
    {"m1-bf16.gguf", "m1-bf16"},         {"m2-tiny-f32.gguf", "m2-tiny-f32"},
    {"m2-groups-f32.gguf", "m2-groups-f32"}, {"m2-bf16.gguf", "m2-bf16"},
    {"m1-tok.gguf", "m1-tok"},
    /* Falcon-Mamba (ssm.dt_b_c_rms): its one epsilon is the fixture's
     * mixer_rms_eps too, so the two loads are the same model */
    {"fm-eq-f32.gguf", "fm-eq-f32"},
};

/* Token rows: the reference's input_ids where the fixture has them, else
 * seeded ids. */
static int32_t *rows_of(const char *dir, int64_t vocab, int64_t *B, int64_t *L)
{
    char refp[600];
    snprintf(refp, sizeof refp, "%s/reference.safetensors", dir);
    lmi_st_file rf;
    lmi_err e = {{0}};
    if (lmi_st_open(refp, &rf, &e) != LM_OK) {
        *B = 2;
        *L = 20;
        int32_t *ids = tu_tokens(77, 40, vocab);
        ck_assert_ptr_nonnull(ids);
        return ids;
    }
    const lmi_st_tensor *ids = lmi_st_find(&rf, "input_ids");
    ck_assert(ids && ids->dtype == LMI_ST_I32 && ids->ndim == 2);
    *B = ids->shape[0];
    *L = ids->shape[1];
    int32_t *out = malloc(ids->nbytes);
    memcpy(out, ids->data, ids->nbytes);
    lmi_st_close(&rf);
    return out;
}

/* All-position logits of each row (prefill), then the same row token by
 * token (decode), for one model: [B][2][L][V]. */
static float *run(lm_model *m, const int32_t *ids, int64_t B, int64_t L)
{
    const int64_t V = info_of(m).vocab_size;
    float *out = malloc(sizeof(float) * (size_t)(B * 2 * L * V));
    ck_assert_ptr_nonnull(out);
    for (int64_t b = 0; b < B; b++) {
        lm_session *s = NULL;
        char err[256];
        ck_assert_int_eq(lm_session_create(m, NULL, &s, err, sizeof err), LM_OK);
        float *pf = out + (size_t)(b * 2 * L * V), *dc = pf + L * V;
        ck_assert_int_eq(lm_session_prefill(s, ids + b * L, (size_t)L, (size_t)L, pf, (size_t)(L * V)),
                         LM_OK);
        ck_assert_int_eq(lm_session_reset(s), LM_OK);
        for (int64_t t = 0; t < L; t++)
            ck_assert_int_eq(lm_session_decode(s, ids[b * L + t], dc + t * V, (size_t)V), LM_OK);
        lm_session_free(s);
    }
    return out;
}

START_TEST(matches_safetensors)
{
    const pair *pr = &pairs[_i];
    char gp[512], dp[512];
    gguf_fixture(gp, sizeof gp, pr->gguf);
    fixture(dp, sizeof dp, pr->dir);
    lm_model *mg = load_cpu(gp), *ms = load_cpu(dp);
    lm_model_info ig = info_of(mg), is = info_of(ms);
    ck_assert_int_eq(ig.arch, is.arch);
    ck_assert_int_eq(ig.dtype, is.dtype);
    ck_assert_int_eq(ig.d_model, is.d_model);
    ck_assert_int_eq(ig.d_inner, is.d_inner);
    ck_assert_int_eq(ig.d_state, is.d_state);
    ck_assert_int_eq(ig.d_conv, is.d_conv);
    ck_assert_int_eq(ig.dt_rank, is.dt_rank);
    ck_assert_int_eq(ig.n_layer, is.n_layer);
    ck_assert_int_eq(ig.vocab_size, is.vocab_size);
    ck_assert_int_eq(ig.n_heads, is.n_heads);
    ck_assert_int_eq(ig.head_dim, is.head_dim);
    ck_assert_int_eq(ig.n_groups, is.n_groups);
    ck_assert_int_eq(ig.n_channels, is.n_channels);
    ck_assert_int_eq(ig.tied_embeddings, is.tied_embeddings);
    ck_assert_int_eq(ig.n_params, is.n_params);
    ck_assert_uint_ne(ig.fingerprint, 0);
    ck_assert_int_eq(mg->dims.use_bias, ms->dims.use_bias);
    ck_assert_int_eq(mg->dims.use_conv_bias, ms->dims.use_conv_bias);
    ck_assert(mg->dims.eps == ms->dims.eps); /* the F32 key read back as the config's decimal */

    int64_t B = 0, L = 0;
    int32_t *ids = rows_of(dp, is.vocab_size, &B, &L);
    float *lg = run(mg, ids, B, L), *ls = run(ms, ids, B, L);
    const size_t n = (size_t)(B * 2 * L * is.vocab_size);
    size_t n_diff = 0;
    for (size_t k = 0; k < n; k++)
        n_diff += memcmp(&lg[k], &ls[k], 4) != 0;
    ck_assert_msg(n_diff == 0, "%s: %zu of %zu logits differ from %s (max abs diff %g)", pr->gguf,
                  n_diff, n, pr->dir, tu_max_abs_diff(lg, ls, n));
    free(lg);
    free(ls);
    free(ids);
    lm_model_free(mg);
    lm_model_free(ms);
}
END_TEST

/* F16 matrices (m1-tiny-f32 rounded by the converter): F16 weights used
 * in place, logits within 16-bit rounding of the F32 model's. */
START_TEST(f16_file)
{
    char gp[512], dp[512];
    gguf_fixture(gp, sizeof gp, "m1-tiny-f16.gguf");
    fixture(dp, sizeof dp, "m1-tiny-f32");
    lm_model *mg = NULL;
    lmi_err e = {{0}};
    ck_assert_msg(lmi_model_read(gp, &mg, &e) == LM_OK, "%s", e.msg);
    ck_assert_int_eq(mg->dtype, LM_DTYPE_F16);
    const lmi_mamba_weights *w = &mg->layers[0].mamba;
    ck_assert_int_eq(w->in_w.type, LMI_W_F16);
    ck_assert_int_eq(w->x_w.type, LMI_W_F16);
    ck_assert_int_eq(w->out_w.type, LMI_W_F16);
    ck_assert_int_eq(w->conv_w.type, LMI_W_F32); /* the converter keeps conv1d F32 */
    ck_assert_int_eq(mg->layers[0].norm_w.type, LMI_W_F32);
    /* in place: the weights point into the one mapping the model keeps */
    ck_assert_uint_eq(mg->n_maps, 1);
    const uint8_t *lo = mg->maps[0].addr, *hi = lo + mg->maps[0].size;
    ck_assert((const uint8_t *)w->in_w.data >= lo && (const uint8_t *)w->in_w.data < hi);
    ck_assert((const uint8_t *)mg->embed.data >= lo && (const uint8_t *)mg->embed.data < hi);
    ck_assert_ptr_eq(mg->lm_head.data, mg->embed.data);
    lm_model_free(mg);

    lm_model *a = load_cpu(gp), *b = load_cpu(dp);
    int64_t B = 0, L = 0;
    int32_t *ids = rows_of(dp, 96, &B, &L);
    float *la = run(a, ids, B, L), *lb = run(b, ids, B, L);
    const size_t n = (size_t)(B * 2 * L * 96);
    const double d = tu_max_abs_diff(la, lb, n), mx = tu_max_abs(lb, n);
    ck_assert_msg(d > 0 && d < 1e-2 * mx, "F16 vs F32 logits: max abs diff %g (max %g)", d, mx);
    free(la);
    free(lb);
    free(ids);
    lm_model_free(a);
    lm_model_free(b);
}
END_TEST

/* What the loader reads, checked field by field on m1-odd-f32 (untied,
 * biases, no conv bias, odd sizes) and m2-groups-f32. */
START_TEST(layouts)
{
    char gp[512], dp[512];
    lmi_err e = {{0}};
    const char *names[2][2] = {{"m1-odd-f32.gguf", "m1-odd-f32"}, {"m2-groups-f32.gguf", "m2-groups-f32"}};
    for (int k = 0; k < 2; k++) {
        gguf_fixture(gp, sizeof gp, names[k][0]);
        fixture(dp, sizeof dp, names[k][1]);
        lm_model *g = NULL, *s = NULL;
        ck_assert_msg(lmi_model_read(gp, &g, &e) == LM_OK, "%s", e.msg);
        ck_assert_msg(lmi_model_read(dp, &s, &e) == LM_OK, "%s", e.msg);
        ck_assert_int_eq(g->dims.tied, s->dims.tied);
        if (!g->dims.tied)
            ck_assert_ptr_ne(g->lm_head.data, g->embed.data);
        for (int64_t l = 0; l < g->dims.n_layer; l++) {
            const lmi_mamba_weights *a = &g->layers[l].mamba, *b = &s->layers[l].mamba;
            const lmi_weight *wa[] = {&a->in_w, &a->in_b, &a->conv_w, &a->conv_b, &a->x_w, &a->dt_w,
                                      &a->dt_b, &a->A, &a->D, &a->gnorm_w, &a->out_w, &a->out_b};
            const lmi_weight *wb[] = {&b->in_w, &b->in_b, &b->conv_w, &b->conv_b, &b->x_w, &b->dt_w,
                                      &b->dt_b, &b->A, &b->D, &b->gnorm_w, &b->out_w, &b->out_b};
            for (size_t j = 0; j < sizeof wa / sizeof wa[0]; j++) {
                ck_assert_msg((wa[j]->data == NULL) == (wb[j]->data == NULL), "layer %lld field %zu",
                              (long long)l, j);
                if (!wa[j]->data)
                    continue;
                ck_assert_msg(wa[j]->rows == wb[j]->rows && wa[j]->cols == wb[j]->cols,
                              "layer %lld field %zu: [%lld][%lld] vs [%lld][%lld]", (long long)l, j,
                              (long long)wa[j]->rows, (long long)wa[j]->cols,
                              (long long)wb[j]->rows, (long long)wb[j]->cols);
                for (int64_t i = 0; i < lmi_weight_numel(wa[j]); i++) {
                    float x = lmi_weight_at(wa[j], i), y = lmi_weight_at(wb[j], i);
                    ck_assert_msg(memcmp(&x, &y, 4) == 0, "layer %lld field %zu index %lld: %a vs %a",
                                  (long long)l, j, (long long)i, (double)x, (double)y);
                }
            }
        }
        lm_model_free(g);
        lm_model_free(s);
    }
}
END_TEST

/* ---- tokenizer ---------------------------------------------------------------- */

static lm_tokenizer *tok_load(const char *path)
{
    lm_tokenizer *t = NULL;
    char err[512] = "";
    lm_status st = lm_tokenizer_load(path, &t, err, sizeof err);
    ck_assert_msg(st == LM_OK, "%s: %s", path, err);
    return t;
}

static size_t encode(const lm_tokenizer *t, const char *text, size_t n, int32_t *ids, size_t cap)
{
    size_t got = 0;
    char err[256];
    lm_status st = lm_tokenizer_encode(t, text, n, ids, cap, &got, err, sizeof err);
    ck_assert_msg(st == LM_OK, "%s", err);
    return got;
}

START_TEST(tokenizer_matches_json)
{
    char gp[512], dp[512];
    gguf_fixture(gp, sizeof gp, "m1-tok.gguf");
    fixture(dp, sizeof dp, "m1-tok");
    lm_tokenizer *tg = tok_load(gp), *tj = tok_load(dp);
    ck_assert_int_eq(lm_tokenizer_vocab_size(tg), lm_tokenizer_vocab_size(tj));
    static const char *const texts[] = {
        "Hello, world!  The whale, the whale!",
        "<|endoftext|>the end<|endoftext|><|endoftext|>",
        "naïve café, e\xcc\x81t\xc3\xa9 (decomposed and composed), 1234567 and 3.14",
        "  leading and trailing spaces   \n\n\ttabs\r\n",
        "bad UTF-8: \xff\xfe\xc3 and \xe2\x82 cut",
        "I said: I'll, you're, they've, he's; it'd -- and\xe2\x80\x94" "dashes",
        "",
    };
    static int32_t a[8192], b[8192];
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        size_t n = strlen(texts[k]);
        size_t na = encode(tg, texts[k], n, a, 4096), nb = encode(tj, texts[k], n, b, 4096);
        ck_assert_msg(na == nb && memcmp(a, b, na * 4) == 0, "text %zu: GGUF and tokenizer.json ids differ",
                      k);
    }
    /* random text: ASCII words, multi-byte characters, the special token */
    tu_rng r = {2026};
    static const char *const pieces[] = {"the", " whale", " ", "  ", "\n", "é", "\xe2\x82\xac", "ing",
                                         "<|endoftext|>", "1", "42", "!", "'s", "Ġ", "\xf0\x9f\x90\xb3"};
    char text[4096];
    size_t len = 0;
    while (len < sizeof text - 16) {
        const char *p = pieces[tu_rng_int(&r, 0, sizeof pieces / sizeof pieces[0] - 1)];
        memcpy(text + len, p, strlen(p));
        len += strlen(p);
    }
    size_t na = encode(tg, text, len, a, 8192), nb = encode(tj, text, len, b, 8192);
    ck_assert(na > 100 && na == nb && memcmp(a, b, na * 4) == 0);
    /* every id decodes to the same bytes */
    for (int32_t id = 0; id < lm_tokenizer_vocab_size(tj); id++) {
        char x[64], y[64];
        size_t nx = 0, ny = 0;
        lm_status sx = lm_tokenizer_decode(tg, &id, 1, x, sizeof x, &nx, NULL, 0);
        lm_status sy = lm_tokenizer_decode(tj, &id, 1, y, sizeof y, &ny, NULL, 0);
        ck_assert_int_eq(sx, sy);
        ck_assert_msg(nx == ny && memcmp(x, y, nx) == 0, "id %d decodes differently", (int)id);
    }
    /* the padding id of the token list ([PAD287], UNUSED) is no token */
    int32_t pad = 287;
    size_t nx = 0;
    char x[64];
    ck_assert_int_eq(lm_tokenizer_decode(tg, &pad, 1, x, sizeof x, &nx, NULL, 0), LM_ERR_OUT_OF_RANGE);
    lm_tokenizer_free(tg);
    lm_tokenizer_free(tj);
}
END_TEST

START_TEST(tokenizer_errors)
{
    char err[512];
    /* no tokenizer in the file */
    char gp[512];
    gguf_fixture(gp, sizeof gp, "m1-tiny-f32.gguf");
    lm_tokenizer *t = NULL;
    EXPECT(lm_tokenizer_load(gp, &t, err, sizeof err), LM_ERR_MISSING, "no tokenizer", err);
    ck_assert_ptr_null(t);

    gb b;
    gb_from(&b, "m1-tok.gguf");
    ck_assert_int_eq(gb_tokenizer(&b, err, sizeof err), LM_OK);
    gb_set_str(&b, "tokenizer.ggml.model", "llama");
    EXPECT(gb_tokenizer(&b, err, sizeof err), LM_ERR_UNSUPPORTED, "\"llama\" is not supported", err);
    gb_set_str(&b, "tokenizer.ggml.model", "gpt2");
    gb_set_str(&b, "tokenizer.ggml.pre", "default");
    EXPECT(gb_tokenizer(&b, err, sizeof err), LM_ERR_UNSUPPORTED, "pre-tokenizer \"default\"", err);
    gb_del(&b, "tokenizer.ggml.pre");
    EXPECT(gb_tokenizer(&b, err, sizeof err), LM_ERR_UNSUPPORTED, "tokenizer.ggml.pre is missing", err);
    gb_free(&b);

    /* "gpt-2": GPT-2's tokenizer has no normalizer, so no NFC */
    gb_from(&b, "m1-tok.gguf");
    gb_set_str(&b, "tokenizer.ggml.pre", "gpt-2");
    char path[512];
    tu_tmp_path(path, sizeof path, "gpt2.gguf");
    size_t n = 0;
    uint8_t *img = gb_image(&b, &n);
    save(path, img, n);
    free(img);
    lm_tokenizer *tg = tok_load(path);
    char dp[512];
    fixture(dp, sizeof dp, "m1-tok");
    lm_tokenizer *tj = tok_load(dp);
    const char *dec = "e\xcc\x81"; /* e + combining acute: NFC makes it U+00E9 */
    int32_t a[16], c[16];
    size_t na = encode(tg, dec, strlen(dec), a, 16), nc = encode(tj, dec, strlen(dec), c, 16);
    ck_assert_int_eq(na, 3); /* the three bytes as they are */
    ck_assert_int_eq(nc, 2); /* c3 a9 */
    lm_tokenizer_free(tg);
    lm_tokenizer_free(tj);
    unlink(path);
    gb_free(&b);

    gb_from(&b, "m1-tok.gguf");
    gb_del(&b, "tokenizer.ggml.merges");
    EXPECT(gb_tokenizer(&b, err, sizeof err), LM_ERR_MISSING, "merges is missing", err);
    gb_free(&b);

    /* a merge of unknown tokens */
    gb_from(&b, "m1-tok.gguf");
    {
        uint8_t raw[64];
        uint32_t et = LMI_GGUF_STRING;
        uint64_t cnt = 1, len = 3;
        memcpy(raw, &et, 4);
        memcpy(raw + 4, &cnt, 8);
        memcpy(raw + 12, &len, 8);
        memcpy(raw + 20, "q \x01", 3);
        gb_set(&b, "tokenizer.ggml.merges", LMI_GGUF_ARRAY, raw, 23);
        EXPECT(gb_tokenizer(&b, err, sizeof err), LM_ERR_FORMAT, "not in vocab", err);
        memcpy(raw + 20, "abc", 3);
        gb_set(&b, "tokenizer.ggml.merges", LMI_GGUF_ARRAY, raw, 23);
        EXPECT(gb_tokenizer(&b, err, sizeof err), LM_ERR_FORMAT, "is not \"a b\"", err);
    }
    gb_free(&b);

    /* token types: one short, an unknown type */
    gb_from(&b, "m1-tok.gguf");
    {
        gb_kv *kv = gb_kv_find(&b, "tokenizer.ggml.token_type");
        ck_assert_ptr_nonnull(kv);
        uint64_t cnt;
        memcpy(&cnt, kv->raw + 4, 8);
        cnt--;
        memcpy(kv->raw + 4, &cnt, 8);
        kv->raw_size -= 4;
        EXPECT(gb_tokenizer(&b, err, sizeof err), LM_ERR_FORMAT, "entries for", err);
        cnt++;
        memcpy(kv->raw + 4, &cnt, 8);
        kv->raw_size += 4;
        int32_t bad = 9;
        memcpy(kv->raw + 12 + 4 * 10, &bad, 4);
        EXPECT(gb_tokenizer(&b, err, sizeof err), LM_ERR_FORMAT, "token 10 has unknown type 9", err);
    }
    gb_free(&b);

    /* special ids outside the list; tokens of the wrong type; a repeated token */
    gb_from(&b, "m1-tok.gguf");
    gb_set_u32(&b, "tokenizer.ggml.eos_token_id", 288);
    EXPECT(gb_tokenizer(&b, err, sizeof err), LM_ERR_FORMAT, "eos_token_id = 288", err);
    gb_free(&b);
    gb_from(&b, "m1-tok.gguf");
    {
        gb_kv *kv = gb_kv_find(&b, "tokenizer.ggml.tokens");
        /* ids 0 and 1 are "\x..." byte tokens of one character each
         * (2 bytes of UTF-8): make id 1 a copy of id 0 */
        uint64_t l0, l1;
        memcpy(&l0, kv->raw + 12, 8);
        memcpy(&l1, kv->raw + 12 + 8 + l0, 8);
        ck_assert_uint_eq(l0, l1);
        memcpy(kv->raw + 12 + 8 + l0 + 8, kv->raw + 20, l0);
        EXPECT(gb_tokenizer(&b, err, sizeof err), LM_ERR_FORMAT, "repeats", err);
        uint8_t raw[20];
        uint32_t et = LMI_GGUF_I32;
        uint64_t cnt = 1;
        int32_t v = 5;
        memcpy(raw, &et, 4);
        memcpy(raw + 4, &cnt, 8);
        memcpy(raw + 12, &v, 4);
        gb_set(&b, "tokenizer.ggml.tokens", LMI_GGUF_ARRAY, raw, 16);
        EXPECT(gb_tokenizer(&b, err, sizeof err), LM_ERR_FORMAT, "expected an array of string", err);
    }
    gb_free(&b);
}
END_TEST

/* ---- the reader on broken files --------------------------------------------------- */

START_TEST(reader_header_errors)
{
    lmi_err e;
    gb b;
    gb_from(&b, "m1-tiny-f32.gguf");
    ck_assert_int_eq(gb_parse(&b, &e), LM_OK);
    b.version = 2; /* v2 has v3's layout */
    ck_assert_int_eq(gb_parse(&b, &e), LM_OK);
    b.version = 1;
    EXPECT(gb_parse(&b, &e), LM_ERR_UNSUPPORTED, "version 1", e.msg);
    b.version = 4;
    EXPECT(gb_parse(&b, &e), LM_ERR_UNSUPPORTED, "version 4", e.msg);
    b.version = 0x03000000;
    EXPECT(gb_parse(&b, &e), LM_ERR_UNSUPPORTED, "big-endian", e.msg);
    b.version = 3;

    size_t n = 0;
    uint8_t *img = gb_image(&b, &n);
    lmi_gguf_file f;
    img[0] = 'X';
    EXPECT(lmi_gguf_parse(img, n, &f, &e), LM_ERR_FORMAT, "bad magic", e.msg);
    img[0] = 'G';
    EXPECT(lmi_gguf_parse(img, 3, &f, &e), LM_ERR_FORMAT, "bad magic", e.msg);
    EXPECT(lmi_gguf_parse(img, 10, &f, &e), LM_ERR_FORMAT, "truncated", e.msg);
    /* huge counts are refused before anything is allocated for them */
    uint64_t huge = 1ull << 62, keep;
    memcpy(&keep, img + 8, 8);
    memcpy(img + 8, &huge, 8);
    EXPECT(lmi_gguf_parse(img, n, &f, &e), LM_ERR_FORMAT, "tensor infos cannot fit", e.msg);
    memcpy(img + 8, &keep, 8);
    memcpy(&keep, img + 16, 8);
    memcpy(img + 16, &huge, 8);
    EXPECT(lmi_gguf_parse(img, n, &f, &e), LM_ERR_FORMAT, "key/value pairs cannot fit", e.msg);
    memcpy(img + 16, &keep, 8);
    /* the first key's length */
    memcpy(img + 24, &huge, 8);
    EXPECT(lmi_gguf_parse(img, n, &f, &e), LM_ERR_FORMAT, "truncated file: key #0", e.msg);
    free(img);
    ck_assert_int_eq(lmi_gguf_parse(NULL, 0, &f, &e), LM_ERR_FORMAT);
    ck_assert_int_eq(lmi_gguf_parse(NULL, 5, &f, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lmi_gguf_parse((const uint8_t *)"GGUF\3", 5, NULL, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lmi_gguf_open(NULL, &f, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lmi_gguf_open("/nonexistent/x.gguf", &f, &e), LM_ERR_MISSING);
    gb_free(&b);
}
END_TEST

START_TEST(reader_kv_errors)
{
    lmi_err e;
    gb b;
    gb_from(&b, "m1-tiny-f32.gguf");
    uint8_t raw[64];
    uint32_t u;
    uint64_t cnt;

    gb_set(&b, "x.unknown", 13, raw, 0);
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "key x.unknown has unknown value type 13", e.msg);
    gb_del(&b, "x.unknown");

    u = LMI_GGUF_ARRAY;
    cnt = 1;
    memcpy(raw, &u, 4);
    memcpy(raw + 4, &cnt, 8);
    gb_set(&b, "x.nested", LMI_GGUF_ARRAY, raw, 12);
    EXPECT(gb_parse(&b, &e), LM_ERR_UNSUPPORTED, "arrays of arrays", e.msg);
    u = 99;
    memcpy(raw, &u, 4);
    gb_set(&b, "x.nested", LMI_GGUF_ARRAY, raw, 12);
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "array of unknown value type 99", e.msg);
    u = LMI_GGUF_I32;
    cnt = 1ull << 61;
    memcpy(raw, &u, 4);
    memcpy(raw + 4, &cnt, 8);
    gb_set(&b, "x.nested", LMI_GGUF_ARRAY, raw, 12);
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "does not fit", e.msg);
    u = LMI_GGUF_STRING;
    cnt = 2;
    uint64_t l = 1ull << 50;
    memcpy(raw, &u, 4);
    memcpy(raw + 4, &cnt, 8);
    memcpy(raw + 12, &l, 8);
    gb_set(&b, "x.nested", LMI_GGUF_ARRAY, raw, 20);
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "truncated", e.msg);
    gb_del(&b, "x.nested");

    uint8_t two = 2;
    gb_set(&b, "x.bool", LMI_GGUF_BOOL, &two, 1);
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "bool value 2", e.msg);
    gb_del(&b, "x.bool");

    /* a key twice */
    gb_set_u32(&b, "x.dup", 1);
    b.kv[b.n_kv] = b.kv[b.n_kv - 1];
    b.kv[b.n_kv].raw = dup_bytes(b.kv[b.n_kv - 1].raw, 4);
    b.n_kv++;
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "duplicate key x.dup", e.msg);
    gb_del(&b, "x.dup");
    gb_del(&b, "x.dup");

    /* an empty key, a key with a NUL byte */
    gb_set_u32(&b, "", 1);
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "has an empty name", e.msg);
    gb_del(&b, "");

    /* alignment: not a power of two, zero, of the wrong type */
    gb_set_u32(&b, "general.alignment", 3);
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "bad alignment", e.msg);
    gb_set_u32(&b, "general.alignment", 0);
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "bad alignment", e.msg);
    uint8_t a8 = 32;
    gb_set(&b, "general.alignment", LMI_GGUF_U8, &a8, 1);
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "general.alignment has type u8", e.msg);
    gb_del(&b, "general.alignment");
    ck_assert_int_eq(gb_parse(&b, &e), LM_OK);
    gb_free(&b);
}
END_TEST

START_TEST(reader_tensor_errors)
{
    lmi_err e;
    gb b;
    gb_from(&b, "m1-tiny-f32.gguf");
    gb_t *t = gb_t_find(&b, "blk.0.ssm_d");

    t->type = 4; /* Q4_2, removed from ggml */
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "blk.0.ssm_d has unknown ggml type 4", e.msg);
    t->type = 1000;
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "unknown ggml type 1000", e.msg);
    t->type = 12; /* Q4_K: 256 per block, and ne[0] is 64 */
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "not a whole number of Q4_K blocks", e.msg);
    t->type = LMI_GGML_F32;

    t->ndim = 5;
    t->ne[1] = t->ne[2] = t->ne[3] = t->ne[4] = 1;
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "5 dimensions", e.msg);
    t->ndim = 1;
    uint64_t ne0 = t->ne[0];
    t->ne[0] = UINT64_MAX;
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "is negative", e.msg);
    t->ndim = 3;
    t->ne[0] = t->ne[1] = t->ne[2] = 1ull << 30;
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "too large", e.msg);
    t->ndim = 1;
    t->ne[0] = ne0;

    t->offset = 1ll << 40;
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "past the end of the file", e.msg);
    t->offset = 4;
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "misaligned data", e.msg);
    t->offset = 0; /* where token_embd.weight is */
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "overlap", e.msg);
    t->offset = -1;

    snprintf(t->name, sizeof t->name, "blk.0.ssm_a");
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "duplicate tensor name blk.0.ssm_a", e.msg);
    t->name[0] = '\0';
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "empty name", e.msg);
    memset(t->name, 'x', 64);
    t->name[64] = '\0';
    EXPECT(gb_parse(&b, &e), LM_ERR_FORMAT, "longer than 63", e.msg);
    t->name[63] = '\0'; /* 63 bytes is the longest name */
    ck_assert_int_eq(gb_parse(&b, &e), LM_OK);
    snprintf(t->name, sizeof t->name, "blk.0.ssm_d");
    ck_assert_int_eq(gb_parse(&b, &e), LM_OK);

    /* a tensor of 0 elements may sit anywhere */
    gb_t *z = &b.t[b.n_t++];
    memset(z, 0, sizeof *z);
    snprintf(z->name, sizeof z->name, "empty");
    z->ndim = 2;
    z->ne[0] = 0;
    z->ne[1] = 7;
    z->data = malloc(1);
    z->offset = 0;
    ck_assert_int_eq(gb_parse(&b, &e), LM_OK);
    gb_free(&b);
}
END_TEST

/* Every prefix of a file is rejected up to the end of its last tensor's
 * data (the padding after it may go), with a message, and never read
 * past. */
START_TEST(truncated_everywhere)
{
    char gp[512];
    gguf_fixture(gp, sizeof gp, "m1-tok.gguf");
    FILE *fp = fopen(gp, "rb");
    ck_assert_ptr_nonnull(fp);
    fseek(fp, 0, SEEK_END);
    size_t size = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *full = malloc(size);
    ck_assert_uint_eq(fread(full, 1, size, fp), size);
    fclose(fp);
    lmi_gguf_file f;
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_gguf_parse(full, size, &f, &e), LM_OK);
    size_t end = 0;
    for (size_t k = 0; k < f.n_tensors; k++) {
        size_t te = (size_t)(f.tensors[k].data - full) + f.tensors[k].nbytes;
        if (te > end) end = te;
    }
    const size_t header = f.data_offset;
    lmi_gguf_close(&f);
    size_t n_checked = 0;
    for (size_t len = 0; len < size; len += len < header + 64 ? 1 : 97) {
        /* a private copy of exactly len bytes: ASan sees any read past it */
        uint8_t *cut = malloc(len ? len : 1);
        memcpy(cut, full, len);
        memset(&e, 0, sizeof e);
        lm_status st = lmi_gguf_parse(cut, len, &f, &e);
        if (len < end) {
            ck_assert_msg(st == LM_ERR_FORMAT, "prefix of %zu bytes: status %d", len, (int)st);
            ck_assert(e.msg[0] != '\0');
        } else if (st == LM_OK) {
            lmi_gguf_close(&f);
        }
        free(cut);
        n_checked++;
    }
    ck_assert_uint_gt(n_checked, header);
    /* and through lm_model_load, from files */
    char path[512], err[512];
    tu_tmp_path(path, sizeof path, "cut.gguf");
    const size_t cuts[] = {0, 3, 4, 8, 23, 24, 100, header - 1, header, end - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        save(path, full, cuts[k]);
        lm_status st = try_load(path, err, sizeof err);
        ck_assert_msg(st == LM_ERR_FORMAT, "cut at %zu: %d %s", cuts[k], (int)st, err);
        lm_tokenizer *t = NULL;
        ck_assert_int_eq(lm_tokenizer_load(path, &t, err, sizeof err), LM_ERR_FORMAT);
    }
    unlink(path);
    free(full);
}
END_TEST

/* Random bytes over the header of m1-tok.gguf (key/values, the token
 * list, tensor infos): whatever the reader accepts loads or fails with a
 * status and a message, never a crash. */
START_TEST(mutations)
{
    char gp[512];
    gguf_fixture(gp, sizeof gp, "m1-tok.gguf");
    FILE *fp = fopen(gp, "rb");
    ck_assert_ptr_nonnull(fp);
    fseek(fp, 0, SEEK_END);
    size_t size = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *full = malloc(size), *mut = malloc(size);
    ck_assert_uint_eq(fread(full, 1, size, fp), size);
    fclose(fp);
    lmi_gguf_file f;
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_gguf_parse(full, size, &f, &e), LM_OK);
    const size_t header = f.data_offset;
    lmi_gguf_close(&f);
    tu_rng r = {99};
    int n_ok = 0;
    for (int it = 0; it < 1500; it++) {
        memcpy(mut, full, size);
        int n_flips = (int)tu_rng_int(&r, 1, 4);
        for (int k = 0; k < n_flips; k++) {
            size_t at = (size_t)tu_rng_int(&r, 0, (int64_t)header - 1);
            static const uint8_t vals[] = {0x00, 0xff, 0x01, 0x7f, 0x80, 0x20, 0x40};
            mut[at] = tu_rng_int(&r, 0, 1) ? (uint8_t)tu_rng_next(&r)
                                            : vals[tu_rng_int(&r, 0, sizeof vals - 1)];
        }
        memset(&e, 0, sizeof e);
        lm_status st = lmi_gguf_parse(mut, size, &f, &e);
        if (st != LM_OK) {
            ck_assert(e.msg[0] != '\0');
            continue;
        }
        n_ok++;
        lm_model *m = NULL;
        st = lmi_model_from_gguf(&f, "mutated.gguf", &m, &e);
        if (st == LM_OK)
            lm_model_free(m);
        else
            ck_assert(m == NULL && e.msg[0] != '\0');
        lm_tokenizer *t = NULL;
        st = lmi_tok_from_gguf(&f, &t, &e);
        if (st == LM_OK) {
            int32_t ids[256];
            size_t n = 0;
            st = lm_tokenizer_encode(t, "the whale <|endoftext|> 12", 26, ids, 256, &n, NULL, 0);
            ck_assert(st == LM_OK || st == LM_ERR_BUFFER_TOO_SMALL);
            lm_tokenizer_free(t);
        } else {
            ck_assert(t == NULL && e.msg[0] != '\0');
        }
        lmi_gguf_close(&f);
    }
    ck_assert_int_gt(n_ok, 0);
    free(full);
    free(mut);
}
END_TEST

/* ---- the model loader on files that parse but do not describe a model ------------ */

START_TEST(model_errors)
{
    char err[512];
    gb b;

    /* types other than F32 / F16 / BF16 / Q8_0 (Q8_0: q8_0_errors) */
    gb_from(&b, "m1-tiny-f32.gguf");
    gb_t *t = gb_t_find(&b, "blk.0.ssm_in.weight"); /* ne [32, 128] */
    gb_t_retype(t, 2 /* Q4_0: blocks of 32, 18 bytes */, 128 * 18);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_UNSUPPORTED,
           "tensor blk.0.ssm_in.weight has type Q4_0 (ggml type 2); supported: F32, F16, BF16, "
           "and Q8_0 for the matrices of linear layers",
           err);
    gb_free(&b);
    gb_from(&b, "m1-tiny-f32.gguf");
    t = gb_t_find(&b, "token_embd.weight");
    t->ne[0] = 256; /* Q4_K needs whole blocks of 256 */
    gb_t_retype(t, 12, 96 * 144);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_UNSUPPORTED,
           "tensor token_embd.weight has type Q4_K (ggml type 12)", err);
    t->ne[0] = 32;
    gb_t_retype(t, 28 /* F64 */, 96 * 32 * 8);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_UNSUPPORTED, "has type F64", err);
    gb_free(&b);

    gb_from(&b, "m1-tiny-f32.gguf");
    ck_assert_int_eq(gb_load(&b, err, sizeof err), LM_OK);
    gb_set_str(&b, "general.architecture", "llama");
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_UNSUPPORTED, "\"llama\" is not supported", err);
    gb_del(&b, "general.architecture");
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_MISSING, "general.architecture", err);
    gb_set_u32(&b, "general.architecture", 1);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_FORMAT, "expected string", err);
    gb_set_str(&b, "general.architecture", "mamba");
    gb_del(&b, "mamba.block_count");
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_MISSING, "mamba.block_count", err);
    gb_set_u32(&b, "mamba.block_count", 3);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_MISSING, "blk.2.attn_norm.weight is missing", err);
    gb_set_u32(&b, "mamba.block_count", 5000);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_UNSUPPORTED, "outside", err);
    gb_set_u32(&b, "mamba.block_count", 2);
    gb_set_str(&b, "mamba.ssm.state_size", "16");
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_FORMAT, "expected an integer", err);
    gb_set_u32(&b, "mamba.ssm.state_size", 8);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_SHAPE, "blk.0.ssm_x.weight has shape", err);
    gb_set_u32(&b, "mamba.ssm.state_size", 16);
    gb_del(&b, "mamba.attention.layer_norm_rms_epsilon");
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_MISSING, "layer_norm_rms_epsilon", err);
    float eps = 2.0f;
    gb_set(&b, "mamba.attention.layer_norm_rms_epsilon", LMI_GGUF_F32, &eps, 4);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_FORMAT, "not in (0, 1)", err);
    eps = 1e-5f;
    gb_set(&b, "mamba.attention.layer_norm_rms_epsilon", LMI_GGUF_F32, &eps, 4);
    gb_set_u32(&b, "mamba.ssm.dt_b_c_rms", 1);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_FORMAT, "mamba.ssm.dt_b_c_rms", err);
    uint8_t yes = 1; /* Falcon-Mamba: fixtures/gguf/fm-eq-f32.gguf runs it */
    gb_set(&b, "mamba.ssm.dt_b_c_rms", LMI_GGUF_BOOL, &yes, 1);
    ck_assert_int_eq(gb_load(&b, err, sizeof err), LM_OK);
    yes = 0;
    gb_set(&b, "mamba.ssm.dt_b_c_rms", LMI_GGUF_BOOL, &yes, 1);
    ck_assert_int_eq(gb_load(&b, err, sizeof err), LM_OK);

    /* the token list sets the vocabulary: the embedding must agree */
    {
        uint8_t raw[12 + 97 * 9];
        uint32_t et = LMI_GGUF_STRING;
        uint64_t cnt = 97;
        memcpy(raw, &et, 4);
        memcpy(raw + 4, &cnt, 8);
        for (int i = 0; i < 97; i++) {
            uint64_t one = 1;
            memcpy(raw + 12 + 9 * i, &one, 8);
            raw[12 + 9 * i + 8] = (uint8_t)('!' + i);
        }
        gb_set(&b, "tokenizer.ggml.tokens", LMI_GGUF_ARRAY, raw, sizeof raw);
        EXPECT(gb_load(&b, err, sizeof err), LM_ERR_SHAPE, "token_embd.weight has shape [96,32], expected [97,32]",
               err);
        cnt = 96;
        memcpy(raw + 4, &cnt, 8);
        gb_set(&b, "tokenizer.ggml.tokens", LMI_GGUF_ARRAY, raw, sizeof raw - 9);
        ck_assert_int_eq(gb_load(&b, err, sizeof err), LM_OK);
        gb_del(&b, "tokenizer.ggml.tokens");
    }

    /* tensors: missing, misshapen, A not negative, a bias only in layer 1 */
    gb_t_del(&b, "blk.1.ssm_x.weight");
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_MISSING, "tensor blk.1.ssm_x.weight is missing from lm_test_",
           err);
    gb_free(&b);
    gb_from(&b, "m1-tiny-f32.gguf");
    t = gb_t_find(&b, "blk.0.ssm_conv1d.weight");
    uint64_t k0 = t->ne[0];
    t->ne[0] = t->ne[1];
    t->ne[1] = k0;
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_SHAPE, "blk.0.ssm_conv1d.weight has shape [4,64], expected [64,4]",
           err);
    t->ne[1] = t->ne[0];
    t->ne[0] = k0;
    t = gb_t_find(&b, "blk.1.ssm_a");
    float pos = 0.5f;
    memcpy(t->data + 4 * 7, &pos, 4);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_FORMAT, "blk.1.ssm_a has a positive value", err);
    float inf = INFINITY;
    memcpy(t->data + 4 * 7, &inf, 4);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_NUMERIC, "non-finite", err);
    gb_free(&b);
    gb_from(&b, "m1-odd-f32.gguf"); /* in/out biases in every layer */
    gb_t_del(&b, "blk.0.ssm_in.bias");
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_SHAPE, "blk.0.ssm_out.bias is present but layer 0 has no ssm_in.bias",
           err);
    gb_free(&b);

    /* Mamba-2: its own keys */
    gb_from(&b, "m2-groups-f32.gguf");
    ck_assert_int_eq(gb_load(&b, err, sizeof err), LM_OK);
    gb_del(&b, "mamba2.ssm.group_count");
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_MISSING, "mamba2.ssm.group_count", err);
    gb_set_u32(&b, "mamba2.ssm.group_count", 3);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_FORMAT, "not a multiple of n_groups", err);
    gb_set_u32(&b, "mamba2.ssm.group_count", 4);
    gb_set_u32(&b, "mamba2.ssm.time_step_rank", 7);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_FORMAT, "not a multiple of the 7 heads", err);
    gb_set_u32(&b, "mamba2.ssm.time_step_rank", 8);
    t = gb_t_find(&b, "blk.0.ssm_norm.weight"); /* [16][4]: groups of 16 */
    t->ne[0] = 64;
    t->ne[1] = 1;
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_SHAPE, "blk.0.ssm_norm.weight has shape [1,64], expected [4,16]",
           err);
    gb_free(&b);

    /* a regular file that is neither a directory nor GGUF */
    char path[512];
    tu_tmp_path(path, sizeof path, "plain.bin");
    save(path, (const uint8_t *)"hello", 5);
    EXPECT(try_load(path, err, sizeof err), LM_ERR_INVALID_ARGUMENT, "neither a model directory nor a GGUF file",
           err);
    /* but a GGUF under any name is read as one */
    gb_from(&b, "m1-tiny-f32.gguf");
    size_t n = 0;
    uint8_t *img = gb_image(&b, &n);
    save(path, img, n);
    free(img);
    ck_assert_int_eq(try_load(path, err, sizeof err), LM_OK);
    unlink(path);
    gb_free(&b);
}
END_TEST

/* Alignment 2: the F32 tensors land at addresses = 2 mod 4, so the loader
 * copies them; the logits do not change. */
START_TEST(unaligned_data_is_copied)
{
    gb b;
    gb_from(&b, "m1-tiny-f32.gguf");
    gb_set_u32(&b, "general.alignment", 2);
    b.alignment = 2;
    /* a 2-byte tensor first shifts the others by 2 (mod 4) unless the
     * data section starts at 2 mod 4; pick the one of 2 or 4 bytes that
     * leaves them misaligned */
    memmove(&b.t[1], &b.t[0], b.n_t * sizeof b.t[0]);
    b.n_t++;
    gb_t *pad = &b.t[0];
    memset(pad, 0, sizeof *pad);
    snprintf(pad->name, sizeof pad->name, "pad");
    pad->ndim = 1;
    pad->type = 24; /* I8 */
    pad->offset = -1;
    char path[512];
    tu_tmp_path(path, sizeof path, "unaligned.gguf");
    bool done = false;
    for (size_t pn = 2; pn <= 4 && !done; pn += 2) {
        free(pad->data);
        pad->data = calloc(pn, 1);
        pad->nbytes = pn;
        pad->ne[0] = pn;
        size_t n = 0;
        uint8_t *img = gb_image(&b, &n);
        lmi_gguf_file f;
        lmi_err e = {{0}};
        ck_assert_int_eq(lmi_gguf_parse(img, n, &f, &e), LM_OK);
        const lmi_gguf_tensor *emb = lmi_gguf_find_tensor(&f, "token_embd.weight");
        done = (size_t)(emb->data - img) % 4 != 0;
        lmi_gguf_close(&f);
        if (done)
            save(path, img, n);
        free(img);
    }
    ck_assert(done);
    lm_model *m = NULL;
    lmi_err e = {{0}};
    ck_assert_msg(lmi_model_read(path, &m, &e) == LM_OK, "%s", e.msg);
    ck_assert_uint_eq(m->n_maps, 0); /* every F32 weight was copied */
    ck_assert_uint_eq((uintptr_t)m->embed.data % 4, 0);
    lm_model_free(m);

    char gp[512];
    gguf_fixture(gp, sizeof gp, "m1-tiny-f32.gguf");
    lm_model *a = load_cpu(path), *c = load_cpu(gp);
    ck_assert_uint_eq(info_of(a).fingerprint, info_of(c).fingerprint);
    ck_assert_int_eq(info_of(a).n_params, info_of(c).n_params);
    int32_t *ids = tu_tokens(5, 30, 96);
    float *la = run(a, ids, 1, 30), *lc = run(c, ids, 1, 30);
    ck_assert(memcmp(la, lc, sizeof(float) * 2 * 30 * 96) == 0);
    free(la);
    free(lc);
    free(ids);
    lm_model_free(a);
    lm_model_free(c);
    unlink(path);
    gb_free(&b);
}
END_TEST

/* ---- Q8_0 tensors ------------------------------------------------------------ */

static lm_model *load_cpu_weights(const char *path, lm_weight_format f)
{
    lm_model_params p;
    lm_model_params_init(&p);
    p.backend = LM_BACKEND_CPU;
    p.n_threads = 1;
    p.weights = f;
    lm_model *m = NULL;
    char err[512] = "";
    ck_assert_msg(lm_model_load(path, &p, &m, err, sizeof err) == LM_OK, "%s: %s", path, err);
    return m;
}

/* The entry of lm_model_weight_info for (layer, name). */
static lm_weight_info weight_named(const lm_model *m, int64_t layer, const char *name)
{
    size_t n = 0;
    char err[256];
    ck_assert_int_eq(lm_model_weight_count(m, &n, err, sizeof err), LM_OK);
    for (size_t k = 0; k < n; k++) {
        lm_weight_info w = {.struct_size = sizeof w};
        ck_assert_int_eq(lm_model_weight_info(m, k, &w, err, sizeof err), LM_OK);
        if (w.layer == layer && strcmp(w.name, name) == 0)
            return w;
    }
    ck_abort_msg("no weight %s in layer %lld", name, (long long)layer);
    return (lm_weight_info){0};
}

/* m1-tiny-q8_0.gguf: m1-tiny-f32's in_proj, x_proj and out_proj quantised
 * by gguf-py (ggml's reference rounding), the rest F32.  Its Q8_0 tensors
 * are used in place (no requantisation).  Against the safetensors fixture
 * loaded with LM_WEIGHTS_Q8_0 the blocks are not byte-identical: ggml
 * computes q = roundf(w * (1 / d32)) with the float32 d32 = max|w| / 127
 * (before d is rounded to binary16), rounding halves away from zero; ours
 * q = round_half_even(w / d16) with the binary16 d16 stored in the block.
 * The scales agree (both round max|w| / 127 once to binary16 here), and
 * q differs by at most 1 where w / d lies near a half-integer, so the
 * logits differ by far less than either differs from fp32. */
START_TEST(q8_0_file)
{
    char gp[512], dp[512], refp[600];
    gguf_fixture(gp, sizeof gp, "m1-tiny-q8_0.gguf");
    fixture(dp, sizeof dp, "m1-tiny-f32");
    lm_model *mg = load_cpu(gp);
    lm_model *mq = load_cpu_weights(dp, LM_WEIGHTS_Q8_0);
    lm_model *mf = load_cpu(dp);

    /* in place: Q8_0, mapped from the file; the library's own: allocated */
    static const char *const lin[3] = {"in_proj", "x_proj", "out_proj"};
    size_t n_blocks = 0, n_d_diff = 0, n_q_diff = 0;
    for (int64_t l = 0; l < 2; l++)
        for (int k = 0; k < 3; k++) {
            lm_weight_info wg = weight_named(mg, l, lin[k]), wq = weight_named(mq, l, lin[k]);
            ck_assert_int_eq(wg.type, LM_WTYPE_Q8_0);
            ck_assert_int_eq(wg.mapped, 1);
            ck_assert_int_eq(wq.type, LM_WTYPE_Q8_0);
            ck_assert_int_eq(wq.mapped, 0);
            ck_assert_int_eq(wg.rows, wq.rows);
            ck_assert_int_eq(wg.cols, wq.cols);
            ck_assert_uint_eq(wg.bytes, (uint64_t)wg.rows * (uint64_t)wg.cols / 32 * 34);
            ck_assert_uint_eq(wg.bytes, wq.bytes);
            const lmi_mamba_weights *a = &mg->layers[l].mamba, *b = &mq->layers[l].mamba;
            const lmi_weight *pa = k == 0 ? &a->in_w : k == 1 ? &a->x_w : &a->out_w;
            const lmi_weight *pb = k == 0 ? &b->in_w : k == 1 ? &b->x_w : &b->out_w;
            ck_assert_int_eq(pa->type, LMI_W_Q8_0);
            const uint8_t *ba = pa->data, *bb = pb->data;
            for (uint64_t o = 0; o < wg.bytes; o += 34, n_blocks++) {
                n_d_diff += memcmp(ba + o, bb + o, 2) != 0;
                for (int j = 0; j < 32; j++) {
                    const int qa = (int8_t)ba[o + 2 + j], qb = (int8_t)bb[o + 2 + j];
                    ck_assert_msg(abs(qa - qb) <= 1, "q %d vs %d", qa, qb);
                    n_q_diff += qa != qb;
                }
            }
        }
    ck_assert_uint_eq(n_d_diff, 0);
    ck_assert_uint_lt(n_q_diff, n_blocks * 32 / 20); /* a few boundary cases, not a pattern */
    /* the F32 tensors are the fixture's, so the fingerprints agree with the F32 GGUF */
    char fp[512];
    gguf_fixture(fp, sizeof fp, "m1-tiny-f32.gguf");
    lm_model *mf32g = load_cpu(fp);
    ck_assert_uint_eq(info_of(mg).fingerprint, info_of(mf32g).fingerprint);
    ck_assert_int_eq(info_of(mg).n_params, info_of(mf).n_params);
    lm_model_free(mf32g);

    int64_t B = 0, L = 0;
    snprintf(refp, sizeof refp, "%s", dp);
    int32_t *ids = rows_of(refp, 96, &B, &L);
    float *lg = run(mg, ids, B, L), *lq = run(mq, ids, B, L), *lf = run(mf, ids, B, L);
    const size_t n = (size_t)(B * 2 * L * 96);
    const double d_gq = tu_max_abs_diff(lg, lq, n), d_gf = tu_max_abs_diff(lg, lf, n),
                 d_qf = tu_max_abs_diff(lq, lf, n);
    double scale = 0;
    for (size_t k = 0; k < n; k++) scale = fmax(scale, fabs((double)lf[k]));
    /* both 8-bit models are near fp32 (a relative 1e-2 of the logits'
     * range, the CLI test's tolerance for LM_WEIGHTS_Q8_0) but not equal to it */
    ck_assert_msg(d_gf < 1e-2 * scale && d_gf > 0, "GGUF Q8_0 vs fp32: %g (scale %g)", d_gf, scale);
    ck_assert_msg(d_qf < 1e-2 * scale && d_qf > 0, "LM_WEIGHTS_Q8_0 vs fp32: %g", d_qf);
    /* and nearer each other than either is to fp32: the two roundings
     * disagree on a few q only */
    ck_assert_msg(d_gq < 0.5 * fmin(d_gf, d_qf),
                  "GGUF Q8_0 vs LM_WEIGHTS_Q8_0: %g (vs fp32 %g, %g)", d_gq, d_gf, d_qf);
    free(lg);
    free(lq);
    free(lf);
    free(ids);
    lm_model_free(mg);
    lm_model_free(mq);
    lm_model_free(mf);
}
END_TEST

/* A Q8_0 embedding (llama.cpp quantises token_embd too), tied to the head:
 * used in place; the logits are those of an F32 file holding the same
 * values d * q (exact in fp32) up to the GEMV's summation order. */
START_TEST(q8_0_embedding)
{
    gb b, f;
    gb_from(&b, "m1-tiny-f32.gguf");
    gb_from(&f, "m1-tiny-f32.gguf");
    gb_t *t = gb_t_find(&b, "token_embd.weight"), *tf = gb_t_find(&f, "token_embd.weight");
    ck_assert(t->type == LMI_GGML_F32 && t->ne[0] == 32 && t->ne[1] == 96);
    float *w = malloc(96 * 32 * sizeof(float));
    memcpy(w, t->data, 96 * 32 * sizeof(float));
    const lmi_weight src = lmi_weight_of_f32(w, 96, 32);
    gb_t_retype(t, LMI_GGML_Q8_0, 96 * 34);
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_weight_quantize_q8_0(&src, t->data, "emb", &e), LM_OK);
    const lmi_weight q = {t->data, LMI_W_Q8_0, 96, 32};
    for (int64_t i = 0; i < 96 * 32; i++) ((float *)tf->data)[i] = lmi_weight_at(&q, i);

    char pq[512], pf[512];
    tu_tmp_path(pq, sizeof pq, "emb-q8.gguf");
    tu_tmp_path(pf, sizeof pf, "emb-f32.gguf");
    size_t n = 0;
    uint8_t *img = gb_image(&b, &n);
    save(pq, img, n);
    free(img);
    img = gb_image(&f, &n);
    save(pf, img, n);
    free(img);
    lm_model *mq = load_cpu(pq), *mf = load_cpu(pf);
    lm_weight_info we = weight_named(mq, -1, "embedding"), wh = weight_named(mq, -1, "lm_head");
    ck_assert_int_eq(we.type, LM_WTYPE_Q8_0);
    ck_assert_int_eq(we.mapped, 1);
    ck_assert_uint_eq(we.bytes, 96 * 34);
    ck_assert_int_eq(wh.type, LM_WTYPE_Q8_0);
    ck_assert_int_eq(wh.shared, 1);
    int32_t *ids = tu_tokens(9, 24, 96);
    float *lq = run(mq, ids, 1, 24), *lf = run(mf, ids, 1, 24);
    const double d = tu_max_abs_diff(lq, lf, 2 * 24 * 96);
    ck_assert_msg(d < 1e-4, "Q8_0 embedding vs its F32 values: %g", d);
    free(lq);
    free(lf);
    free(ids);
    free(w);
    lm_model_free(mq);
    lm_model_free(mf);
    unlink(pq);
    unlink(pf);
    gb_free(&b);
    gb_free(&f);
}
END_TEST

START_TEST(q8_0_errors)
{
    char err[512];
    gb b;
    /* Q8_0 where the library needs F32 / 16-bit: named, with its type */
    static const char *const not_linear[] = {"blk.0.attn_norm.weight", "output_norm.weight",
                                             "blk.1.ssm_d", "blk.0.ssm_dt.bias",
                                             "blk.0.ssm_conv1d.bias"};
    for (size_t k = 0; k < sizeof not_linear / sizeof not_linear[0]; k++) {
        gb_from(&b, "m1-tiny-f32.gguf");
        gb_t *t = gb_t_find(&b, not_linear[k]);
        ck_assert_msg(t->ndim == 1 && t->ne[0] % 32 == 0, "%s", not_linear[k]);
        gb_t_retype(t, LMI_GGML_Q8_0, (size_t)t->ne[0] / 32 * 34);
        char want[256];
        snprintf(want, sizeof want,
                 "tensor %s is stored as Q8_0, which only the matrices of linear layers may be",
                 not_linear[k]);
        EXPECT(gb_load(&b, err, sizeof err), LM_ERR_UNSUPPORTED, want, err);
        gb_free(&b);
    }
    /* a row length that is not a whole number of blocks (dt_proj: rows of 2) */
    gb_from(&b, "m1-tiny-f32.gguf");
    gb_t *t = gb_t_find(&b, "blk.0.ssm_dt.weight");
    ck_assert(t->ne[0] == 2 && t->ne[1] == 64);
    gb_t_retype(t, LMI_GGML_Q8_0, 64 * 34);
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_FORMAT,
           "tensor blk.0.ssm_dt.weight: a row of 2 elements is not a whole number of Q8_0 blocks",
           err);
    gb_free(&b);
    /* the bytes of the last tensor cut short: the file ends inside its Q8_0 data */
    gb_from(&b, "m1-tiny-q8_0.gguf");
    {   /* lay blk.1.ssm_out.weight out last */
        gb_t keep = *gb_t_find(&b, "blk.1.ssm_out.weight");
        const size_t k = (size_t)(gb_t_find(&b, "blk.1.ssm_out.weight") - b.t);
        memmove(&b.t[k], &b.t[k + 1], (b.n_t - k - 1) * sizeof keep);
        b.t[b.n_t - 1] = keep;
    }
    size_t n = 0;
    uint8_t *img = gb_image(&b, &n);
    lmi_gguf_file f;
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_gguf_parse(img, n, &f, &e), LM_OK);
    const lmi_gguf_tensor *last = &f.tensors[0];
    for (size_t k = 0; k < f.n_tensors; k++)
        if (f.tensors[k].offset > last->offset) last = &f.tensors[k];
    ck_assert_uint_eq(last->type, LMI_GGML_Q8_0);
    ck_assert_str_eq(last->name, "blk.1.ssm_out.weight");
    char name[128];
    snprintf(name, sizeof name, "%s", last->name);
    const size_t cut = (size_t)(last->data - img) + last->nbytes - 17;
    lmi_gguf_close(&f);
    char path[512];
    tu_tmp_path(path, sizeof path, "short-q8.gguf");
    save(path, img, cut);
    free(img);
    EXPECT(try_load(path, err, sizeof err), LM_ERR_FORMAT, name, err);
    unlink(path);
    gb_free(&b);
    /* a Q8_0 tensor whose shape does not match its place */
    gb_from(&b, "m1-tiny-q8_0.gguf");
    t = gb_t_find(&b, "blk.0.ssm_in.weight");
    ck_assert(t->type == LMI_GGML_Q8_0 && t->ne[0] == 32 && t->ne[1] == 128);
    t->ne[0] = 64;
    t->ne[1] = 64; /* same bytes, other shape */
    EXPECT(gb_load(&b, err, sizeof err), LM_ERR_SHAPE, "tensor blk.0.ssm_in.weight has shape", err);
    gb_free(&b);
}
END_TEST

/* lm_model_weight_count / lm_model_weight_info: arguments and versions. */
START_TEST(weight_info_api)
{
    char gp[512], err[256];
    gguf_fixture(gp, sizeof gp, "m1-odd-f32.gguf");
    lm_model *m = load_cpu(gp);
    size_t n = 99;
    EXPECT(lm_model_weight_count(NULL, &n, err, sizeof err),
           LM_ERR_INVALID_ARGUMENT, "model is NULL", err);
    ck_assert_uint_eq(n, 0);
    EXPECT(lm_model_weight_count(m, NULL, err, sizeof err),
           LM_ERR_INVALID_ARGUMENT, "count is NULL", err);
    ck_assert_int_eq(lm_model_weight_count(m, &n, NULL, 0), LM_OK);
    /* 3 + per layer: norm, in_proj, in_proj.bias, conv1d, x_proj, dt_proj,
     * dt_bias, A, D, out_proj, out_proj.bias (no conv bias) */
    ck_assert_uint_eq(n, 3 + (size_t)info_of(m).n_layer * 11);
    lm_weight_info w = {.struct_size = sizeof w};
    EXPECT(lm_model_weight_info(NULL, 0, &w, err, sizeof err),
           LM_ERR_INVALID_ARGUMENT, "model is NULL", err);
    EXPECT(lm_model_weight_info(m, 0, NULL, err, sizeof err),
           LM_ERR_INVALID_ARGUMENT, "info is NULL", err);
    EXPECT(lm_model_weight_info(m, n, &w, err, sizeof err),
           LM_ERR_OUT_OF_RANGE, "past the model's weights", err);
    w.struct_size = 4;
    EXPECT(lm_model_weight_info(m, 0, &w, err, sizeof err),
           LM_ERR_INVALID_ARGUMENT, "struct_size 4", err);
    /* a short struct: fields past it untouched */
    lm_weight_info s;
    memset(&s, 0xAB, sizeof s);
    s.struct_size = (uint32_t)(offsetof(lm_weight_info, layer) + sizeof s.layer);
    ck_assert_int_eq(lm_model_weight_info(m, 2, &s, err, sizeof err), LM_OK);
    ck_assert_str_eq(s.name, "lm_head");
    ck_assert_int_eq(s.layer, -1);
    ck_assert_uint_eq(s.bytes, 0xABABABABABABABABull);
    /* untied head: its own data, counted */
    lm_weight_info h = weight_named(m, -1, "lm_head");
    ck_assert_int_eq(h.shared, 0);
    ck_assert_int_eq(h.linear, 1);
    ck_assert_int_eq(h.type, LM_WTYPE_F32);
    ck_assert_uint_eq(h.bytes, (uint64_t)h.rows * (uint64_t)h.cols * 4);
    ck_assert_str_eq(lm_weight_type_name(LM_WTYPE_Q8_0), "Q8_0");
    ck_assert_str_eq(lm_weight_type_name(LM_WTYPE_BF16), "BF16");
    ck_assert_str_eq(lm_weight_type_name((lm_weight_type)77), "unknown");
    lm_model_free(m);
    /* the bytes add up to what the layers hold */
    gguf_fixture(gp, sizeof gp, "m1-bf16.gguf");
    m = load_cpu(gp);
    ck_assert_int_eq(lm_model_weight_count(m, &n, NULL, 0), LM_OK);
    uint64_t bf = 0;
    for (size_t k = 0; k < n; k++) {
        lm_weight_info x = {.struct_size = sizeof x};
        ck_assert_int_eq(lm_model_weight_info(m, k, &x, NULL, 0), LM_OK);
        if (x.linear && x.layer >= 0) {
            ck_assert_int_eq(x.type, LM_WTYPE_BF16);
            ck_assert_int_eq(x.mapped, 1);
            bf += x.bytes;
        }
    }
    const lmi_mamba_weights *l0 = &m->layers[0].mamba;
    const int64_t per_layer = lmi_weight_numel(&l0->in_w) + lmi_weight_numel(&l0->x_w) +
                              lmi_weight_numel(&l0->dt_w) + lmi_weight_numel(&l0->out_w);
    ck_assert_uint_eq(bf, 2 /* layers */ * 2 /* bytes */ * (uint64_t)per_layer);
    lm_model_free(m);
}
END_TEST

/* The reader's accessors on the seed with every value type. */
START_TEST(reader_values)
{
    char path[512];
    snprintf(path, sizeof path, "%s/../../fuzz/corpus/gguf/all-types.gguf", LM_TEST_DATA);
    lmi_gguf_file f;
    lmi_err e = {{0}};
    ck_assert_msg(lmi_gguf_open(path, &f, &e) == LM_OK, "%s", e.msg);
    ck_assert_uint_eq(f.alignment, 64);
    uint64_t u = 0;
    double d = 0;
    bool bo = false;
    lmi_gguf_str s;
    ck_assert_int_eq(lmi_gguf_get_uint(&f, "t.u8", &u, &e), LM_OK);
    ck_assert_uint_eq(u, 200);
    ck_assert_int_eq(lmi_gguf_get_uint(&f, "t.u16", &u, &e), LM_OK);
    ck_assert_uint_eq(u, 60000);
    ck_assert_int_eq(lmi_gguf_get_uint(&f, "t.u32", &u, &e), LM_OK);
    ck_assert_uint_eq(u, 4000000000u);
    ck_assert_int_eq(lmi_gguf_get_uint(&f, "t.u64", &u, &e), LM_OK);
    ck_assert_uint_eq(u, 1ull << 40);
    EXPECT(lmi_gguf_get_uint(&f, "t.i8", &u, &e), LM_ERR_FORMAT, "negative", e.msg);
    EXPECT(lmi_gguf_get_uint(&f, "t.i64", &u, &e), LM_ERR_FORMAT, "negative", e.msg);
    EXPECT(lmi_gguf_get_uint(&f, "t.f32", &u, &e), LM_ERR_FORMAT, "expected an integer", e.msg);
    EXPECT(lmi_gguf_get_uint(&f, "t.none", &u, &e), LM_ERR_MISSING, "t.none is missing", e.msg);
    ck_assert_int_eq(lmi_gguf_get_float(&f, "t.f32", &d, &e), LM_OK);
    ck_assert(d == 0.5);
    ck_assert_int_eq(lmi_gguf_get_float(&f, "t.f64", &d, &e), LM_OK);
    ck_assert(d == 1e-300);
    ck_assert_int_eq(lmi_gguf_get_bool(&f, "t.bool", &bo, &e), LM_OK);
    ck_assert(bo);
    ck_assert_int_eq(lmi_gguf_get_str(&f, "t.str", &s, &e), LM_OK);
    ck_assert(s.len == 6 && memcmp(s.p, "h\xc3\xa9llo", 6) == 0);
    uint64_t n = 0;
    const uint8_t *first = NULL;
    ck_assert_int_eq(lmi_gguf_get_arr(&f, "t.arr_str", LMI_GGUF_STRING, &n, &first, &e), LM_OK);
    ck_assert_uint_eq(n, 3);
    lmi_gguf_str x = lmi_gguf_next_str(&first), y = lmi_gguf_next_str(&first),
                 z = lmi_gguf_next_str(&first);
    ck_assert(x.len == 1 && y.len == 0 && z.len == 2 && memcmp(z.p, "yz", 2) == 0);
    EXPECT(lmi_gguf_get_arr(&f, "t.arr_i32", LMI_GGUF_STRING, &n, &first, &e), LM_ERR_FORMAT,
           "array of i32, expected an array of string", e.msg);
    ck_assert_int_eq(lmi_gguf_get_arr(&f, "t.arr_i32", LMI_GGUF_I32, &n, &first, &e), LM_OK);
    int32_t v[3];
    memcpy(v, first, 12);
    ck_assert(n == 3 && v[0] == 1 && v[1] == -2 && v[2] == 3);
    const lmi_gguf_tensor *t = lmi_gguf_find_tensor(&f, "x");
    ck_assert(t && t->type == LMI_GGML_F32 && t->ndim == 1 && t->ne[0] == 4 && t->nbytes == 16);
    ck_assert_uint_eq((size_t)(t->data - (const uint8_t *)f.map.addr) % 64, 0);
    t = lmi_gguf_find_tensor(&f, "y");
    ck_assert(t && t->ndim == 2 && t->ne[0] == 3 && t->ne[1] == 0 && t->nbytes == 0);
    ck_assert_ptr_null(lmi_gguf_find_tensor(&f, "w"));
    ck_assert_str_eq(lmi_gguf_type_name(LMI_GGML_Q8_0), "Q8_0");
    ck_assert_ptr_null(lmi_gguf_type_name(31));
    ck_assert_ptr_null(lmi_gguf_type_name(100000));
    lmi_gguf_close(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = add_tcase(s, "same_as_safetensors", 300, (const TTest *[]){NULL});
    tcase_add_loop_test(tc, matches_safetensors, 0, (int)(sizeof pairs / sizeof pairs[0]));
    add_tcase(s, "models", 300, (const TTest *[]){f16_file, layouts, unaligned_data_is_copied, NULL});
    add_tcase(s, "q8_0", 300,
              (const TTest *[]){q8_0_file, q8_0_embedding, q8_0_errors, weight_info_api, NULL});
    add_tcase(s, "tokenizer", 120, (const TTest *[]){tokenizer_matches_json, tokenizer_errors, NULL});
    add_tcase(s, "broken", 300,
              (const TTest *[]){reader_header_errors, reader_kv_errors, reader_tensor_errors,
                                reader_values, truncated_everywhere, mutations, model_errors, NULL});
    return run_suite(s);
}
