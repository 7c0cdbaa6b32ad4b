/* test_load.c - lm_model_load on checkpoints this test writes itself (a
 * tiny random Mamba-1 and Mamba-2 in several dtypes, namings and
 * shardings), every failure class, lm_model_get_info, and the reference
 * fixtures written by transformers (test/data/fixtures) when present. */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/safetensors.h"
#include "internal.h"
#include "model_load.h"
#include "suite.h"

/* Tiny Mamba-1: d 8, E 16, N 4, R 2, K 3, 2 layers, V 11.
 * Tiny Mamba-2: d 8, E 16, H 4, P 4, G 2, N 4, K 3, 2 layers, V 11. */
enum { D_ = 8, E_ = 16, N_ = 4, R_ = 2, K_ = 3, NL_ = 2, V_ = 11, H_ = 4, P_ = 4, G_ = 2 };

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lm_load_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static void write_text(const char *name, const char *fmt, ...)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
}

static void remove_file(const char *name)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    ck_assert_int_eq(unlink(path), 0);
}

/* ---- checkpoint generator ------------------------------------------------- */

typedef struct tens {
    char name[96];
    int ndim;
    int64_t shape[3];
    size_t n;
    float *v;
} tens;

typedef struct ckpt {
    tens t[64];
    size_t n;
} ckpt;

static uint32_t fnv32(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

typedef enum { V_RAND, V_ONE, V_ALOG } vkind;

/* Values exactly representable in F16 and BF16 (at most 7 significant
 * bits, magnitudes >= 2^-7), seeded by the name so that a tensor has the
 * same values whatever else the checkpoint holds. */
static void add(ckpt *c, const char *name, int ndim, int64_t s0, int64_t s1, int64_t s2, vkind kind)
{
    ck_assert_uint_lt(c->n, 64);
    tens *t = &c->t[c->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = s0;
    t->shape[1] = s1;
    t->shape[2] = s2;
    t->n = 1;
    for (int k = 0; k < ndim; k++)
        t->n *= (size_t)t->shape[k];
    t->v = malloc(t->n * sizeof(float));
    uint32_t st = fnv32(name);
    for (size_t k = 0; k < t->n; k++) {
        st = st * 1664525u + 1013904223u;
        int r = (int)((st >> 16) % 127) - 63; /* -63 .. 63 */
        switch (kind) {
        case V_RAND: t->v[k] = (float)r / 128.0f; break;
        case V_ONE: t->v[k] = 1.0f + (float)r / 128.0f; break;
        case V_ALOG: {
            /* A_log[e][n] ~ log(n + 1): S4D-real initialisation */
            int64_t n = t->ndim == 2 ? (int64_t)(k % (size_t)t->shape[1]) : (int64_t)k;
            t->v[k] = roundf(logf((float)n + 1.0f) * 32.0f) / 32.0f + (float)(r % 4) / 64.0f;
            break;
        }
        }
    }
}

static tens *find(ckpt *c, const char *name)
{
    for (size_t k = 0; k < c->n; k++)
        if (strcmp(c->t[k].name, name) == 0)
            return &c->t[k];
    return NULL;
}

static void drop(ckpt *c, const char *name)
{
    tens *t = find(c, name);
    ck_assert_ptr_nonnull(t);
    free(t->v);
    *t = c->t[--c->n];
}

static void free_ckpt(ckpt *c)
{
    for (size_t k = 0; k < c->n; k++)
        free(c->t[k].v);
    c->n = 0;
}

typedef struct gen {
    lm_arch arch;
    bool ssm_naming; /* backbone.embedding.weight */
    bool bias;       /* in_proj / out_proj bias */
    bool conv_bias;
    bool lm_head;
    int64_t R;
} gen;

static void build(ckpt *c, const gen *g)
{
    char n[96];
    c->n = 0;
    add(c, g->ssm_naming ? "backbone.embedding.weight" : "backbone.embeddings.weight", 2, V_, D_, 0,
        V_RAND);
    add(c, "backbone.norm_f.weight", 1, D_, 0, 0, V_ONE);
    if (g->lm_head)
        add(c, "lm_head.weight", 2, V_, D_, 0, V_RAND);
    bool m2 = g->arch == LM_ARCH_MAMBA2;
    int64_t in_rows = m2 ? 2 * E_ + 2 * G_ * N_ + H_ : 2 * E_;
    int64_t conv_dim = m2 ? E_ + 2 * G_ * N_ : E_;
    for (int i = 0; i < NL_; i++) {
#define L(suffix) (snprintf(n, sizeof n, "backbone.layers.%d.%s", i, suffix), n)
        add(c, L("norm.weight"), 1, D_, 0, 0, V_ONE);
        add(c, L("mixer.in_proj.weight"), 2, in_rows, D_, 0, V_RAND);
        if (g->bias)
            add(c, L("mixer.in_proj.bias"), 1, in_rows, 0, 0, V_RAND);
        add(c, L("mixer.conv1d.weight"), 3, conv_dim, 1, K_, V_RAND);
        if (g->conv_bias)
            add(c, L("mixer.conv1d.bias"), 1, conv_dim, 0, 0, V_RAND);
        if (!m2) {
            add(c, L("mixer.x_proj.weight"), 2, g->R + 2 * N_, E_, 0, V_RAND);
            add(c, L("mixer.dt_proj.weight"), 2, E_, g->R, 0, V_RAND);
            add(c, L("mixer.dt_proj.bias"), 1, E_, 0, 0, V_RAND);
            add(c, L("mixer.A_log"), 2, E_, N_, 0, V_ALOG);
            add(c, L("mixer.D"), 1, E_, 0, 0, V_ONE);
        } else {
            add(c, L("mixer.dt_bias"), 1, H_, 0, 0, V_RAND);
            add(c, L("mixer.A_log"), 1, H_, 0, 0, V_ALOG);
            add(c, L("mixer.D"), 1, H_, 0, 0, V_ONE);
            add(c, L("mixer.norm.weight"), 1, E_, 0, 0, V_ONE);
        }
        add(c, L("mixer.out_proj.weight"), 2, D_, E_, 0, V_RAND);
        if (g->bias)
            add(c, L("mixer.out_proj.bias"), 1, D_, 0, 0, V_RAND);
#undef L
    }
}

static uint16_t to_f16(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
    if (isnan(f))
        return sign | 0x7e00;
    if (isinf(f))
        return sign | 0x7c00;
    if (f == 0)
        return sign;
    int ex = (int)((b >> 23) & 0xff) - 127 + 15; /* values here are normal halves */
    return (uint16_t)(sign | (uint16_t)(ex << 10) | (uint16_t)((b >> 13) & 0x3ff));
}

/* The tensor's values stored as dt (F32, F16 or BF16); exact for the
 * generator's values. */
static void *encode(const tens *t, lmi_st_dtype dt)
{
    if (dt == LMI_ST_F32) {
        void *p = malloc(t->n * 4);
        memcpy(p, t->v, t->n * 4);
        return p;
    }
    uint16_t *h = malloc(t->n * 2);
    for (size_t k = 0; k < t->n; k++) {
        uint32_t b;
        memcpy(&b, &t->v[k], 4);
        h[k] = dt == LMI_ST_BF16 ? (uint16_t)(b >> 16) : to_f16(t->v[k]);
    }
    return h;
}

/* Writes the checkpoint as model.safetensors (n_shards <= 1) or as
 * n_shards files plus model.safetensors.index.json.  The embedding may
 * get its own dtype (mixed checkpoints). */
static void write_ckpt(const ckpt *c, lmi_st_dtype dt, lmi_st_dtype embed_dt, int n_shards)
{
    int shards = n_shards < 1 ? 1 : n_shards;
    lmi_err e = {{0}};
    char path[400], idx[8192];
    size_t io = 0;
    io += (size_t)snprintf(idx + io, sizeof idx - io,
                           "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    bool first = true;
    for (int s = 0; s < shards; s++) {
        lmi_st_out outs[64];
        void *bufs[64];
        size_t no = 0;
        char fname[64];
        if (n_shards <= 1)
            snprintf(fname, sizeof fname, "model.safetensors");
        else
            snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, shards);
        for (size_t k = 0; k < c->n; k++) {
            if ((int)(k % (size_t)shards) != s)
                continue;
            const tens *t = &c->t[k];
            bool emb = strstr(t->name, "embedding") != NULL;
            lmi_st_dtype d = emb ? embed_dt : dt;
            bufs[no] = encode(t, d);
            outs[no] = (lmi_st_out){t->name, d, t->ndim, t->shape, bufs[no]};
            no++;
            io += (size_t)snprintf(idx + io, sizeof idx - io, "%s\"%s\": \"%s\"", first ? "" : ", ",
                                   t->name, fname);
            first = false;
        }
        snprintf(path, sizeof path, "%s/%s", tmpdir, fname);
        const char *mk[] = {"format"}, *mv[] = {"pt"};
        ck_assert_msg(lmi_st_write(path, outs, no, mk, mv, 1, &e) == LM_OK, "%s", e.msg);
        for (size_t k = 0; k < no; k++)
            free(bufs[k]);
    }
    snprintf(idx + io, sizeof idx - io, "}}");
    if (n_shards > 1)
        write_text("model.safetensors.index.json", "%s", idx);
}

static void write_hf_config(lm_arch arch, const char *extra)
{
    if (arch == LM_ARCH_MAMBA2) {
        write_text("config.json",
                   "{%s\"architectures\": [\"Mamba2ForCausalLM\"], \"model_type\": \"mamba2\","
                   " \"hidden_size\": %d, \"num_hidden_layers\": %d, \"vocab_size\": %d,"
                   " \"state_size\": %d, \"num_heads\": %d, \"head_dim\": %d, \"n_groups\": %d,"
                   " \"expand\": 2, \"conv_kernel\": %d, \"chunk_size\": 64,"
                   " \"time_step_limit\": [0.0, {\"__float__\": \"Infinity\"}],"
                   " \"layer_norm_epsilon\": 1e-05, \"tie_word_embeddings\": true}",
                   extra ? extra : "", D_, NL_, V_, N_, H_, P_, G_, K_);
        return;
    }
    write_text("config.json",
               "{%s\"architectures\": [\"MambaForCausalLM\"], \"model_type\": \"mamba\","
               " \"hidden_size\": %d, \"intermediate_size\": %d, \"state_size\": %d,"
               " \"conv_kernel\": %d, \"time_step_rank\": %d, \"num_hidden_layers\": %d,"
               " \"vocab_size\": %d, \"layer_norm_epsilon\": 1e-05, \"residual_in_fp32\": true,"
               " \"hidden_act\": \"silu\", \"expand\": 2}",
               extra ? extra : "", D_, E_, N_, K_, R_, NL_, V_);
}

static const gen M1 = {LM_ARCH_MAMBA1, false, false, true, false, R_};

/* Standard Mamba-1 checkpoint in dtype dt, HF config with `extra` fields. */
static void standard(ckpt *c, lmi_st_dtype dt, const char *extra)
{
    build(c, &M1);
    write_ckpt(c, dt, dt, 1);
    write_hf_config(LM_ARCH_MAMBA1, extra ? extra
                                          : "\"use_bias\": false, \"use_conv_bias\": true,"
                                            " \"tie_word_embeddings\": true, ");
}

/* ---- checks ---------------------------------------------------------------- */

static lm_model *load_ok(void)
{
    lm_model *m = NULL;
    char err[512] = "unset";
    lm_model_params p;
    lm_model_params_init(&p);
    p.backend = LM_BACKEND_CPU;
    lm_status st = lm_model_load(tmpdir, &p, &m, err, sizeof err);
    ck_assert_msg(st == LM_OK, "load failed (%d): %s", st, err);
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(err, "");
    return m;
}

static lm_status load_err(char *err, size_t cap)
{
    lm_model *m = (lm_model *)1;
    lm_status st = lm_model_load(tmpdir, NULL, &m, err, cap);
    ck_assert_ptr_null(m);
    return st;
}

/* Values compare after exact widening, so a 16-bit weight kept in its
 * stored type equals the (16-bit representable) source value. */
static void same(const lmi_weight *got, const tens *t)
{
    ck_assert_msg(got->data != NULL, "%s not loaded", t->name);
    ck_assert_int_eq(lmi_weight_numel(got), (int64_t)t->n);
    for (size_t k = 0; k < t->n; k++)
        ck_assert_msg(lmi_weight_at(got, (int64_t)k) == t->v[k], "%s[%zu]: %g vs %g", t->name, k,
                      lmi_weight_at(got, (int64_t)k), t->v[k]);
}

/* Every weight the model holds equals the source values exactly. */
static void check_weights(const lm_model *m, ckpt *c)
{
    tens *emb = find(c, "backbone.embeddings.weight");
    if (!emb)
        emb = find(c, "backbone.embedding.weight");
    same(&m->embed, emb);
    same(&m->norm_f, find(c, "backbone.norm_f.weight"));
    char n[96];
    for (int i = 0; i < NL_; i++) {
        const lmi_layer *L = &m->layers[i];
#define T(suffix) (snprintf(n, sizeof n, "backbone.layers.%d.%s", i, suffix), find(c, n))
        same(&L->norm_w, T("norm.weight"));
        same(&L->mamba.in_w, T("mixer.in_proj.weight"));
        same(&L->mamba.conv_w, T("mixer.conv1d.weight"));
        same(&L->mamba.out_w, T("mixer.out_proj.weight"));
        if (T("mixer.in_proj.bias")) {
            same(&L->mamba.in_b, T("mixer.in_proj.bias"));
            same(&L->mamba.out_b, T("mixer.out_proj.bias"));
        } else {
            ck_assert_ptr_null(L->mamba.in_b.data);
            ck_assert_ptr_null(L->mamba.out_b.data);
        }
        if (T("mixer.conv1d.bias"))
            same(&L->mamba.conv_b, T("mixer.conv1d.bias"));
        else
            ck_assert_ptr_null(L->mamba.conv_b.data);
        same(&L->mamba.D, T("mixer.D"));
        if (m->dims.arch == LM_ARCH_MAMBA1) {
            same(&L->mamba.x_w, T("mixer.x_proj.weight"));
            same(&L->mamba.dt_w, T("mixer.dt_proj.weight"));
            same(&L->mamba.dt_b, T("mixer.dt_proj.bias"));
        } else {
            same(&L->mamba.dt_b, T("mixer.dt_bias"));
            same(&L->mamba.gnorm_w, T("mixer.norm.weight"));
        }
        const tens *al = T("mixer.A_log");
        for (size_t k = 0; k < al->n; k++) {
            // A = -torch.exp(self.A_log.float())
            ck_assert_msg(lmi_weight_at(&L->mamba.A, k) == -expf(al->v[k]), "A[%zu]", k);
            ck_assert(lmi_weight_at(&L->mamba.A, k) < 0);
        }
#undef T
    }
}

static int64_t expected_params(ckpt *c, bool tied)
{
    int64_t s = 0;
    for (size_t k = 0; k < c->n; k++)
        if (!(tied && strcmp(c->t[k].name, "lm_head.weight") == 0))
            s += (int64_t)c->t[k].n;
    return s;
}

static bool in_maps(const lm_model *m, const void *p)
{
    for (size_t k = 0; k < m->n_maps; k++) {
        const uint8_t *a = m->maps[k].addr;
        if ((const uint8_t *)p >= a && (const uint8_t *)p < a + m->maps[k].size)
            return true;
    }
    return false;
}

/* ---- loading that works ---------------------------------------------------- */

static void load_dtype(lmi_st_dtype dt, lm_dtype want)
{
    make_tmpdir();
    ckpt c;
    standard(&c, dt, NULL);
    lm_model *m = load_ok();
    lm_model_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(lm_model_get_info(m, &info), LM_OK);
    ck_assert_int_eq(info.arch, LM_ARCH_MAMBA1);
    ck_assert_int_eq(info.dtype, want);
    ck_assert_int_eq(info.backend, LM_BACKEND_CPU);
    ck_assert_int_eq(info.d_model, D_);
    ck_assert_int_eq(info.d_inner, E_);
    ck_assert_int_eq(info.d_state, N_);
    ck_assert_int_eq(info.d_conv, K_);
    ck_assert_int_eq(info.dt_rank, R_);
    ck_assert_int_eq(info.n_layer, NL_);
    ck_assert_int_eq(info.vocab_size, V_);
    ck_assert_int_eq(info.n_heads, 0);
    ck_assert_int_eq(info.n_channels, E_);
    ck_assert_int_eq(info.tied_embeddings, 1);
    ck_assert_int_eq(info.n_params, expected_params(&c, true));
    ck_assert_int_eq(info.n_threads, (int32_t)sysconf(_SC_NPROCESSORS_ONLN));
    ck_assert_uint_ne(info.fingerprint, 0);
    ck_assert_ptr_eq(m->lm_head.data, m->embed.data);
    ck_assert(m->dims.use_conv_bias && !m->dims.use_bias);
    ck_assert_double_eq_tol(m->dims.eps, 1e-5, 1e-12);
    check_weights(m, &c);
    /* Aligned tensors are used in place in their stored type; A is always
     * an owned fp32 copy, and so are D and dt_bias when stored 16-bit. */
    const lmi_wtype wt = dt == LMI_ST_F32 ? LMI_W_F32 : dt == LMI_ST_F16 ? LMI_W_F16 : LMI_W_BF16;
    ck_assert_uint_eq(m->n_maps, 1);
    ck_assert(in_maps(m, m->embed.data));
    ck_assert(in_maps(m, m->layers[1].mamba.in_w.data));
    ck_assert(in_maps(m, m->layers[1].norm_w.data));
    ck_assert_int_eq(m->embed.type, wt);
    ck_assert_int_eq(m->layers[1].mamba.in_w.type, wt);
    ck_assert_int_eq(m->layers[1].mamba.x_w.type, wt);
    ck_assert_int_eq(m->layers[1].mamba.in_w.rows, 2 * E_);
    ck_assert_int_eq(m->layers[1].mamba.in_w.cols, D_);
    ck_assert(!in_maps(m, m->layers[0].mamba.A.data));
    ck_assert_int_eq(m->layers[0].mamba.A.type, LMI_W_F32);
    ck_assert_int_eq(m->layers[0].mamba.D.type, LMI_W_F32);
    ck_assert_int_eq(m->layers[0].mamba.dt_b.type, LMI_W_F32);
    ck_assert(in_maps(m, m->layers[0].mamba.D.data) == (dt == LMI_ST_F32));
    lm_model_free(m);
    free_ckpt(&c);
    remove_tmpdir();
}

START_TEST(loads_f32)
{
    load_dtype(LMI_ST_F32, LM_DTYPE_F32);
}
END_TEST
START_TEST(loads_f16)
{
    load_dtype(LMI_ST_F16, LM_DTYPE_F16);
}
END_TEST
START_TEST(loads_bf16)
{
    load_dtype(LMI_ST_BF16, LM_DTYPE_BF16);
}
END_TEST

START_TEST(loads_mixed_dtypes)
{
    make_tmpdir();
    ckpt c;
    build(&c, &M1);
    write_ckpt(&c, LMI_ST_F32, LMI_ST_BF16, 1); /* BF16 embedding, F32 rest */
    write_hf_config(LM_ARCH_MAMBA1, NULL);
    lm_model *m = load_ok();
    ck_assert_int_eq(m->dtype, LM_DTYPE_BF16); /* the embedding's */
    check_weights(m, &c);
    ck_assert_uint_eq(m->n_maps, 1);
    ck_assert(in_maps(m, m->embed.data)); /* BF16, kept as stored */
    ck_assert_int_eq(m->embed.type, LMI_W_BF16);
    ck_assert(in_maps(m, m->norm_f.data));
    ck_assert_int_eq(m->norm_f.type, LMI_W_F32);
    lm_model_free(m);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(sharded_matches_single_file)
{
    make_tmpdir();
    ckpt c;
    standard(&c, LMI_ST_F32, NULL);
    lm_model *single = load_ok();
    uint64_t fp = single->fingerprint;
    int64_t np = single->n_params;
    lm_model_free(single);
    remove_file("model.safetensors");

    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 3);
    lm_model *m = load_ok();
    check_weights(m, &c);
    ck_assert_uint_eq(m->fingerprint, fp); /* same stored bytes, same fingerprint */
    ck_assert_int_eq(m->n_params, np);
    ck_assert_uint_eq(m->n_maps, 3);

    /* A different weight changes the fingerprint. */
    lm_model_free(m);
    find(&c, "backbone.layers.1.mixer.D")->v[3] += 0.5f;
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 3);
    m = load_ok();
    ck_assert_uint_ne(m->fingerprint, fp);
    lm_model_free(m);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(unaligned_f32_is_copied)
{
    /* A hand-made file whose F32 tensors start at odd offsets (a one-byte
     * gap at the start of the data buffer). */
    make_tmpdir();
    ckpt c;
    build(&c, &M1);
    write_hf_config(LM_ARCH_MAMBA1, NULL);
    char *hdr = malloc(65536);
    size_t ho = 0, off = 1;
    ho += (size_t)sprintf(hdr + ho, "{");
    for (size_t k = 0; k < c.n; k++) {
        const tens *t = &c.t[k];
        ho += (size_t)sprintf(hdr + ho, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", k ? "," : "",
                              t->name);
        for (int d = 0; d < t->ndim; d++)
            ho += (size_t)sprintf(hdr + ho, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        ho += (size_t)sprintf(hdr + ho, "],\"data_offsets\":[%zu,%zu]}", off, off + t->n * 4);
        off += t->n * 4;
    }
    ho += (size_t)sprintf(hdr + ho, "}");
    while (ho % 8)
        hdr[ho++] = ' ';
    char path[400];
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    FILE *f = fopen(path, "wb");
    uint8_t lb[8];
    for (int k = 0; k < 8; k++)
        lb[k] = (uint8_t)((uint64_t)ho >> (8 * k));
    fwrite(lb, 1, 8, f);
    fwrite(hdr, 1, ho, f);
    fputc(0, f);
    for (size_t k = 0; k < c.n; k++)
        fwrite(c.t[k].v, 4, c.t[k].n, f);
    fclose(f);
    free(hdr);
    lm_model *m = load_ok();
    check_weights(m, &c);
    ck_assert_uint_eq(m->n_maps, 0);
    ck_assert_uint_eq((uintptr_t)m->embed.data % 4, 0);
    lm_model_free(m);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(mamba_ssm_naming)
{
    make_tmpdir();
    ckpt c;
    gen g = M1;
    g.ssm_naming = true;
    build(&c, &g);
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 1);
    /* vocab 9 padded to a multiple of 11 = 11 rows; dt_rank given. */
    write_text("config.json",
               "{\"d_model\": %d, \"d_intermediate\": 0, \"n_layer\": %d, \"vocab_size\": 9,"
               " \"ssm_cfg\": {\"layer\": \"Mamba1\", \"d_state\": %d, \"d_conv\": %d,"
               " \"expand\": 2, \"dt_rank\": %d}, \"attn_layer_idx\": [], \"rms_norm\": true,"
               " \"residual_in_fp32\": true, \"fused_add_norm\": true,"
               " \"pad_vocab_size_multiple\": 11, \"tie_embeddings\": true}",
               D_, NL_, N_, K_, R_);
    lm_model *m = load_ok();
    check_weights(m, &c);
    ck_assert_int_eq(m->dims.vocab, V_);
    ck_assert(m->dims.tied && !m->dims.use_bias && m->dims.use_conv_bias);
    ck_assert_ptr_eq(m->lm_head.data, m->embed.data);
    lm_model_free(m);

    /* Padding that disagrees with the embedding rows is a shape error. */
    write_text(
        "config.json",
        "{\"d_model\": %d, \"n_layer\": %d, \"vocab_size\": 9, \"pad_vocab_size_multiple\": 8,"
        " \"ssm_cfg\": {\"d_state\": %d, \"d_conv\": %d, \"dt_rank\": %d}}",
        D_, NL_, N_, K_, R_);
    char err[512];
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_SHAPE);
    ck_assert_msg(strstr(err, "tensor backbone.embedding.weight has shape [11,8], expected [16,8]"),
                  "%s", err);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(time_step_rank_auto)
{
    /* ceil(8 / 16) = 1 */
    make_tmpdir();
    ckpt c;
    gen g = M1;
    g.R = 1;
    build(&c, &g);
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 1);
    write_text("config.json",
               "{\"model_type\": \"mamba\", \"hidden_size\": %d, \"state_size\": %d,"
               " \"conv_kernel\": %d, \"time_step_rank\": \"auto\", \"num_hidden_layers\": %d,"
               " \"use_bias\": false}",
               D_, N_, K_, NL_); /* intermediate_size from expand (default 2) */
    lm_model *m = load_ok();
    ck_assert_int_eq(m->dims.dt_rank, 1);
    ck_assert_int_eq(m->dims.d_inner, E_);
    ck_assert_int_eq(m->dims.vocab, V_); /* no vocab_size: the embedding's rows */
    check_weights(m, &c);
    lm_model_free(m);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(lm_head_and_tying)
{
    make_tmpdir();
    ckpt c;
    gen g = M1;
    g.lm_head = true;
    build(&c, &g);
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 1);
    /* Untied with a stored head: a separate matrix, counted in n_params. */
    write_hf_config(LM_ARCH_MAMBA1, "\"use_bias\": false, \"tie_word_embeddings\": false, ");
    lm_model *m = load_ok();
    ck_assert_ptr_ne(m->lm_head.data, m->embed.data);
    same(&m->lm_head, find(&c, "lm_head.weight"));
    ck_assert(!m->dims.tied);
    ck_assert_int_eq(m->n_params, expected_params(&c, false));
    lm_model_info info = {.struct_size = sizeof info};
    lm_model_get_info(m, &info);
    ck_assert_int_eq(info.tied_embeddings, 0);
    lm_model_free(m);
    /* Tied (the default): the stored head is ignored, as transformers does. */
    write_hf_config(LM_ARCH_MAMBA1, "\"use_bias\": false, ");
    m = load_ok();
    ck_assert_ptr_eq(m->lm_head.data, m->embed.data);
    ck_assert_int_eq(m->n_params, expected_params(&c, true));
    lm_model_free(m);
    /* Untied but no head stored: tied after all. */
    free_ckpt(&c);
    build(&c, &M1);
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 1);
    write_hf_config(LM_ARCH_MAMBA1, "\"use_bias\": false, \"tie_word_embeddings\": false, ");
    m = load_ok();
    ck_assert_ptr_eq(m->lm_head.data, m->embed.data);
    ck_assert(m->dims.tied);
    lm_model_free(m);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(biases)
{
    make_tmpdir();
    ckpt c;
    gen g = M1;
    g.bias = true;
    g.conv_bias = false;
    build(&c, &g);
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 1);
    write_hf_config(LM_ARCH_MAMBA1, "\"use_bias\": true, \"use_conv_bias\": false, ");
    lm_model *m = load_ok();
    ck_assert(m->dims.use_bias && !m->dims.use_conv_bias);
    check_weights(m, &c);
    lm_model_free(m);
    /* Flags absent: follow the checkpoint. */
    write_hf_config(LM_ARCH_MAMBA1, "");
    m = load_ok();
    ck_assert(m->dims.use_bias && !m->dims.use_conv_bias);
    check_weights(m, &c);
    lm_model_free(m);
    /* Config says no bias but the file has one. */
    char err[512];
    write_hf_config(LM_ARCH_MAMBA1, "\"use_bias\": false, \"use_conv_bias\": false, ");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_SHAPE);
    ck_assert_msg(strstr(err, "backbone.layers.0.mixer.in_proj.bias"), "%s", err);
    /* Config says conv bias but the file has none. */
    write_hf_config(LM_ARCH_MAMBA1, "\"use_bias\": true, \"use_conv_bias\": true, ");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_MISSING);
    ck_assert_msg(strstr(err, "tensor backbone.layers.0.mixer.conv1d.bias is missing"), "%s", err);
    /* One layer lacks its out_proj bias. */
    drop(&c, "backbone.layers.1.mixer.out_proj.bias");
    remove_file("model.safetensors");
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 1);
    write_hf_config(LM_ARCH_MAMBA1, "");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_MISSING);
    ck_assert_msg(strstr(err, "backbone.layers.1.mixer.out_proj.bias"), "%s", err);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(mamba2_loads)
{
    make_tmpdir();
    ckpt c;
    gen g = {LM_ARCH_MAMBA2, false, false, true, false, 0};
    build(&c, &g);
    write_ckpt(&c, LMI_ST_BF16, LMI_ST_BF16, 1);
    write_hf_config(LM_ARCH_MAMBA2, "");
    /* The weights and dims, independent of what the backends support. */
    lm_model *m = NULL;
    lmi_err e = {{0}};
    ck_assert_msg(lmi_model_read(tmpdir, &m, &e) == LM_OK, "%s", e.msg);
    const lmi_dims *d = &m->dims;
    ck_assert_int_eq(d->arch, LM_ARCH_MAMBA2);
    ck_assert_int_eq(d->n_heads, H_);
    ck_assert_int_eq(d->head_dim, P_);
    ck_assert_int_eq(d->n_groups, G_);
    ck_assert_int_eq(d->d_inner, E_);
    ck_assert_int_eq(d->conv_dim, E_ + 2 * G_ * N_);
    ck_assert_int_eq(d->n_channels, H_);
    ck_assert_int_eq(d->ssd_chunk, 64);
    ck_assert_int_eq(d->dt_rank, 0);
    ck_assert(d->dt_limit_lo == 0.0 && isinf(d->dt_limit_hi));
    ck_assert_int_eq(m->n_params, expected_params(&c, true));
    check_weights(m, &c);
    ck_assert_ptr_null(m->vt);
    lm_model_free(m);

    /* mamba_ssm form of the same model (ngroups given; heads from headdim). */
    write_text("config.json",
               "{\"d_model\": %d, \"n_layer\": %d, \"vocab_size\": %d, \"ssm_cfg\": {\"layer\":"
               " \"Mamba2\", \"d_state\": %d, \"d_conv\": %d, \"headdim\": %d, \"ngroups\": %d},"
               " \"pad_vocab_size_multiple\": 1}",
               D_, NL_, V_, N_, K_, P_, G_);
    ck_assert_msg(lmi_model_read(tmpdir, &m, &e) == LM_OK, "%s", e.msg);
    ck_assert_int_eq(m->dims.n_heads, H_);
    ck_assert_int_eq(m->dims.ssd_chunk, 256);
    check_weights(m, &c);
    lm_model_free(m);

    /* Heads that do not tile d_inner. */
    write_hf_config(LM_ARCH_MAMBA2, "\"num_heads\": 3, ");
    ck_assert_int_eq(lmi_model_read(tmpdir, &m, &e), LM_ERR_FORMAT);
    ck_assert_ptr_null(m);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

/* ---- failures ------------------------------------------------------------- */

START_TEST(missing_tensor)
{
    make_tmpdir();
    ckpt c;
    build(&c, &M1);
    drop(&c, "backbone.layers.1.mixer.A_log");
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 1);
    write_hf_config(LM_ARCH_MAMBA1, NULL);
    char err[512];
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_MISSING);
    ck_assert_msg(strstr(err, "tensor backbone.layers.1.mixer.A_log is missing"), "%s", err);
    free_ckpt(&c);
    /* No embedding under either name. */
    build(&c, &M1);
    drop(&c, "backbone.embeddings.weight");
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 1);
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_MISSING);
    ck_assert_msg(strstr(err, "backbone.embeddings.weight"), "%s", err);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(shape_disagrees_with_config)
{
    make_tmpdir();
    ckpt c;
    standard(&c, LMI_ST_F32, NULL);
    char err[512];
    /* The file has N = 4; the config claims 5. */
    write_hf_config(LM_ARCH_MAMBA1, "\"state_size\": 5, ");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_SHAPE);
    ck_assert_msg(
        strstr(err,
               "tensor backbone.layers.0.mixer.x_proj.weight has shape [10,16], expected [12,16]"),
        "%s", err);
    /* Only layer 1's A_log is wrong. */
    write_hf_config(LM_ARCH_MAMBA1, NULL);
    tens *t = find(&c, "backbone.layers.1.mixer.A_log");
    t->shape[1] = 5;
    t->n = (size_t)(E_ * 5);
    t->v = realloc(t->v, t->n * sizeof(float));
    for (size_t k = 0; k < t->n; k++)
        t->v[k] = 0.5f;
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 1);
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_SHAPE);
    ck_assert_msg(
        strstr(err, "tensor backbone.layers.1.mixer.A_log has shape [16,5], expected [16,4]"), "%s",
        err);
    /* Config vocab_size disagreeing with the embedding rows. */
    t->shape[1] = 4;
    t->n = (size_t)(E_ * 4);
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 1);
    write_text("config.json",
               "{\"model_type\": \"mamba\", \"hidden_size\": 8, \"state_size\": 4,"
               " \"conv_kernel\": 3, \"time_step_rank\": 2, \"num_hidden_layers\": 2,"
               " \"vocab_size\": 12}");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_SHAPE);
    ck_assert_msg(strstr(err, "backbone.embeddings.weight has shape [11,8], expected [12,8]"), "%s",
                  err);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(bad_configs)
{
    make_tmpdir();
    ckpt c;
    standard(&c, LMI_ST_F32, NULL);
    char err[512];
    static const struct {
        const char *text;
        lm_status want;
        const char *part;
    } cases[] = {
        {"{\"model_type\": \"mamba\", \"hidden_size\": 8,", LM_ERR_FORMAT, "config.json: JSON"},
        {"[1, 2]", LM_ERR_FORMAT, "not a JSON object"},
        {"", LM_ERR_FORMAT, "config.json"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 8}", LM_ERR_UNSUPPORTED, "\"llama\""},
        {"{\"model_type\": \"falcon\"}", LM_ERR_UNSUPPORTED, "falcon_mamba"},
        /* Falcon-Mamba: mixer_rms_eps is required, a number in (0, 1) */
        {"{\"model_type\": \"falcon_mamba\", \"hidden_size\": 8, \"num_hidden_layers\": 2}",
         LM_ERR_MISSING, "mixer_rms_eps"},
        {"{\"architectures\": [\"FalconMambaForCausalLM\"], \"hidden_size\": 8,"
         " \"num_hidden_layers\": 2, \"mixer_rms_eps\": null}",
         LM_ERR_MISSING, "mixer_rms_eps"},
        {"{\"model_type\": \"falcon_mamba\", \"hidden_size\": 8, \"num_hidden_layers\": 2,"
         " \"mixer_rms_eps\": 0}",
         LM_ERR_FORMAT, "mixer_rms_eps"},
        {"{\"model_type\": \"falcon_mamba\", \"hidden_size\": 8, \"num_hidden_layers\": 2,"
         " \"mixer_rms_eps\": -1e-6}",
         LM_ERR_FORMAT, "mixer_rms_eps"},
        {"{\"model_type\": \"falcon_mamba\", \"hidden_size\": 8, \"num_hidden_layers\": 2,"
         " \"mixer_rms_eps\": 1.5}",
         LM_ERR_FORMAT, "mixer_rms_eps"},
        {"{\"model_type\": \"falcon_mamba\", \"hidden_size\": 8, \"num_hidden_layers\": 2,"
         " \"mixer_rms_eps\": \"1e-6\"}",
         LM_ERR_FORMAT, "mixer_rms_eps"},
        {"{\"architectures\": [\"GPT2LMHeadModel\"]}", LM_ERR_UNSUPPORTED, "architectures"},
        {"{\"foo\": 1}", LM_ERR_UNSUPPORTED, "Mamba"},
        {"{\"model_type\": 3}", LM_ERR_FORMAT, "model_type"},
        {"{\"model_type\": \"mamba\", \"num_hidden_layers\": 2}", LM_ERR_MISSING, "hidden_size"},
        {"{\"model_type\": \"mamba\", \"hidden_size\": \"8\", \"num_hidden_layers\": 2}",
         LM_ERR_FORMAT, "hidden_size"},
        {"{\"model_type\": \"mamba\", \"hidden_size\": 8.5, \"num_hidden_layers\": 2}",
         LM_ERR_FORMAT, "hidden_size"},
        {"{\"model_type\": \"mamba\", \"hidden_size\": -8, \"num_hidden_layers\": 2}",
         LM_ERR_UNSUPPORTED, "hidden_size"},
        {"{\"model_type\": \"mamba\", \"hidden_size\": 8, \"num_hidden_layers\": 2,"
         " \"use_bias\": \"no\"}",
         LM_ERR_FORMAT, "use_bias"},
        {"{\"model_type\": \"mamba\", \"hidden_size\": 8, \"num_hidden_layers\": 2,"
         " \"layer_norm_epsilon\": 0}",
         LM_ERR_FORMAT, "epsilon"},
        {"{\"model_type\": \"mamba\", \"hidden_size\": 8, \"num_hidden_layers\": 2,"
         " \"hidden_act\": \"gelu\"}",
         LM_ERR_UNSUPPORTED, "hidden_act"},
        {"{\"d_model\": 8, \"n_layer\": 2, \"rms_norm\": false}", LM_ERR_UNSUPPORTED, "rms_norm"},
        {"{\"d_model\": 8, \"n_layer\": 2, \"d_intermediate\": 32}", LM_ERR_UNSUPPORTED,
         "d_intermediate"},
        {"{\"d_model\": 8, \"n_layer\": 2, \"attn_layer_idx\": [1]}", LM_ERR_UNSUPPORTED,
         "attn_layer_idx"},
        {"{\"d_model\": 8, \"n_layer\": 2, \"ssm_cfg\": {\"layer\": \"Mamba3\"}}",
         LM_ERR_UNSUPPORTED, "ssm_cfg"},
        {"{\"model_type\": \"mamba2\", \"hidden_size\": 8, \"num_hidden_layers\": 2,"
         " \"time_step_limit\": [0.0]}",
         LM_ERR_FORMAT, "time_step_limit"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        write_text("config.json", "%s", cases[k].text);
        lm_status st = load_err(err, sizeof err);
        ck_assert_msg(st == cases[k].want, "case %zu: status %d, want %d: %s", k, st, cases[k].want,
                      err);
        ck_assert_msg(strstr(err, cases[k].part), "case %zu: message '%s'", k, err);
    }
    /* Missing config.json. */
    remove_file("config.json");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_MISSING);
    ck_assert_msg(strstr(err, "config.json"), "%s", err);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(missing_and_bad_model_files)
{
    make_tmpdir();
    ckpt c;
    standard(&c, LMI_ST_F32, NULL);
    char err[512];
    remove_file("model.safetensors");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_MISSING);
    ck_assert_msg(strstr(err, "model.safetensors"), "%s", err);
    write_text("pytorch_model.bin", "not really");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_MISSING);
    ck_assert_msg(strstr(err, "pytorch_model.bin"), "%s", err);
    /* Corrupt single file. */
    write_text("model.safetensors", "garbage!");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_FORMAT);
    ck_assert_msg(strstr(err, "model.safetensors"), "%s", err);
    remove_file("model.safetensors");
    /* Sharded: index naming a shard that does not exist. */
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 2);
    remove_file("model-00002-of-00002.safetensors");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_MISSING);
    ck_assert_msg(strstr(err, "model-00002-of-00002.safetensors"), "%s", err);
    /* Index listing a tensor in the wrong shard. */
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 2);
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"backbone.norm_f.weight\": \"model-00002-of-00002.safetensors\","
               " \"backbone.embeddings.weight\": \"model-00002-of-00002.safetensors\"}}");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_MISSING);
    ck_assert_msg(strstr(err, "backbone.embeddings.weight"), "%s", err);
    /* Index without weight_map, or with a path escaping the directory. */
    write_text("model.safetensors.index.json", "{\"metadata\": {}}");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_FORMAT);
    ck_assert_msg(strstr(err, "weight_map"), "%s", err);
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"backbone.norm_f.weight\": \"../x.safetensors\"}}");
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_FORMAT);
    ck_assert_msg(strstr(err, "shard"), "%s", err);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(non_finite_weights)
{
    make_tmpdir();
    ckpt c;
    build(&c, &M1);
    find(&c, "backbone.layers.1.mixer.A_log")->v[5] = NAN;
    write_ckpt(&c, LMI_ST_BF16, LMI_ST_BF16, 1);
    write_hf_config(LM_ARCH_MAMBA1, NULL);
    char err[512];
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_NUMERIC);
    ck_assert_msg(strstr(err, "backbone.layers.1.mixer.A_log"), "%s", err);
    free_ckpt(&c);
    build(&c, &M1);
    find(&c, "backbone.layers.0.mixer.D")->v[0] = INFINITY;
    write_ckpt(&c, LMI_ST_F16, LMI_ST_F16, 1);
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_NUMERIC);
    ck_assert_msg(strstr(err, "backbone.layers.0.mixer.D"), "%s", err);
    free_ckpt(&c);
    /* exp(100) overflows fp32: A would be -inf. */
    build(&c, &M1);
    find(&c, "backbone.layers.0.mixer.A_log")->v[2] = 100.0f;
    write_ckpt(&c, LMI_ST_F32, LMI_ST_F32, 1);
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_NUMERIC);
    ck_assert_msg(strstr(err, "backbone.layers.0.mixer.A_log"), "%s", err);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(unsupported_dtype)
{
    make_tmpdir();
    ckpt c;
    build(&c, &M1);
    write_hf_config(LM_ARCH_MAMBA1, NULL);
    /* One tensor stored as F64. */
    lmi_st_out outs[64];
    void *bufs[64];
    for (size_t k = 0; k < c.n; k++) {
        tens *t = &c.t[k];
        bool f64 = strcmp(t->name, "backbone.layers.0.mixer.D") == 0;
        if (f64) {
            double *dv = malloc(t->n * sizeof(double));
            for (size_t j = 0; j < t->n; j++)
                dv[j] = t->v[j];
            bufs[k] = dv;
        } else {
            bufs[k] = encode(t, LMI_ST_F32);
        }
        outs[k] = (lmi_st_out){t->name, f64 ? LMI_ST_F64 : LMI_ST_F32, t->ndim, t->shape, bufs[k]};
    }
    char path[400];
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_st_write(path, outs, c.n, NULL, NULL, 0, &e), LM_OK);
    for (size_t k = 0; k < c.n; k++)
        free(bufs[k]);
    char err[512];
    ck_assert_int_eq(load_err(err, sizeof err), LM_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(err, "backbone.layers.0.mixer.D") && strstr(err, "F64"), "%s", err);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(arguments_and_params)
{
    make_tmpdir();
    ckpt c;
    standard(&c, LMI_ST_F32, NULL);
    lm_model *m = (lm_model *)1;
    char err[512];
    ck_assert_int_eq(lm_model_load(NULL, NULL, &m, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(lm_model_load(tmpdir, NULL, NULL, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_model_load(NULL, NULL, NULL, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    /* A tiny error buffer is truncated, never overrun. */
    char small[8];
    memset(small, 'x', sizeof small);
    ck_assert_int_eq(lm_model_load(NULL, NULL, &m, small, 5), LM_ERR_INVALID_ARGUMENT);
    ck_assert_uint_eq(strlen(small), 4);
    ck_assert_int_eq(small[5], 'x');

    lm_model_params p;
    lm_model_params_init(&p);
    ck_assert_uint_eq(p.struct_size, sizeof p);
    ck_assert_int_eq(p.backend, LM_BACKEND_AUTO);
    ck_assert_int_eq(p.n_threads, 0);
    ck_assert_int_eq(p.device, 0);
    ck_assert_int_eq(p.log_level, LM_LOG_ERROR);
    ck_assert_ptr_null(p.log_fn);
    lm_model_params_init(NULL);

    lm_model_params bad = p;
    bad.struct_size = 0;
    ck_assert_int_eq(lm_model_load(tmpdir, &bad, &m, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    bad = p;
    bad.n_threads = -1;
    ck_assert_int_eq(lm_model_load(tmpdir, &bad, &m, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    bad = p;
    bad.backend = (lm_backend)7;
    ck_assert_int_eq(lm_model_load(tmpdir, &bad, &m, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    bad = p;
    bad.device = -2;
    ck_assert_int_eq(lm_model_load(tmpdir, &bad, &m, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    if (!lm_backend_available(LM_BACKEND_CUDA)) {
        bad = p;
        bad.backend = LM_BACKEND_CUDA;
        ck_assert_int_eq(lm_model_load(tmpdir, &bad, &m, err, sizeof err),
                         LM_ERR_BACKEND_UNAVAILABLE);
        ck_assert_ptr_null(m);
        ck_assert_msg(strstr(err, "CUDA"), "%s", err);
    }

    /* An older caller's shorter params struct: fields past it default. */
    lm_model_params old = p;
    old.struct_size = (uint32_t)offsetof(lm_model_params, n_threads);
    old.n_threads = -5; /* not read */
    old.backend = LM_BACKEND_CPU;
    ck_assert_int_eq(lm_model_load(tmpdir, &old, &m, err, sizeof err), LM_OK);
    ck_assert_int_eq(m->n_threads, (int32_t)sysconf(_SC_NPROCESSORS_ONLN));
    lm_model_free(m);

    p.n_threads = 3;
    p.backend = LM_BACKEND_CPU;
    ck_assert_int_eq(lm_model_load(tmpdir, &p, &m, err, sizeof err), LM_OK);
    lm_model_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(lm_model_get_info(m, &info), LM_OK);
    ck_assert_int_eq(info.n_threads, 3);
    ck_assert_int_eq(info.backend, LM_BACKEND_CPU);

    /* get_info: NULLs, struct_size too small, and a short struct. */
    ck_assert_int_eq(lm_model_get_info(NULL, &info), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_model_get_info(m, NULL), LM_ERR_INVALID_ARGUMENT);
    lm_model_info z;
    memset(&z, 0, sizeof z);
    ck_assert_int_eq(lm_model_get_info(m, &z), LM_ERR_INVALID_ARGUMENT);
    z.struct_size = (uint32_t)offsetof(lm_model_info, arch) + 2;
    ck_assert_int_eq(lm_model_get_info(m, &z), LM_ERR_INVALID_ARGUMENT);
    memset(&z, 0xAB, sizeof z);
    z.struct_size = (uint32_t)offsetof(lm_model_info, dtype) + sizeof z.dtype;
    ck_assert_int_eq(lm_model_get_info(m, &z), LM_OK);
    ck_assert_int_eq(z.arch, LM_ARCH_MAMBA1);
    ck_assert_int_eq(z.dtype, LM_DTYPE_F32);
    const uint8_t *tail = (const uint8_t *)&z + z.struct_size;
    for (size_t k = 0; k < sizeof z - z.struct_size; k++)
        ck_assert_uint_eq(tail[k], 0xAB);
    lm_model_free(m);

    lm_model_free(NULL);

    /* Directory problems. */
    char path[400];
    snprintf(path, sizeof path, "%s/nonexistent", tmpdir);
    ck_assert_int_eq(lm_model_load(path, NULL, &m, err, sizeof err), LM_ERR_MISSING);
    ck_assert_msg(strstr(err, path), "%s", err);
    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    ck_assert_int_eq(lm_model_load(path, NULL, &m, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

typedef struct logbuf {
    int n_info, n_error;
    char last[1024];
} logbuf;

static void log_cb(void *user, lm_log_level level, const char *msg)
{
    logbuf *b = user;
    if (level == LM_LOG_INFO)
        b->n_info++;
    if (level == LM_LOG_ERROR)
        b->n_error++;
    snprintf(b->last, sizeof b->last, "%s", msg);
}

START_TEST(logging)
{
    make_tmpdir();
    ckpt c;
    standard(&c, LMI_ST_F32, NULL);
    logbuf lb = {0};
    lm_model_params p;
    lm_model_params_init(&p);
    p.backend = LM_BACKEND_CPU;
    p.log_fn = log_cb;
    p.log_user = &lb;
    p.log_level = LM_LOG_INFO;
    lm_model *m = NULL;
    ck_assert_int_eq(lm_model_load(tmpdir, &p, &m, NULL, 0), LM_OK);
    ck_assert_int_ge(lb.n_info, 1);
    ck_assert_msg(strstr(lb.last, "Mamba-1"), "%s", lb.last);
    lm_model_free(m);
    /* Errors reach the callback; ERROR level filters INFO out. */
    lb = (logbuf){0};
    p.log_level = LM_LOG_ERROR;
    remove_file("model.safetensors");
    ck_assert_int_eq(lm_model_load(tmpdir, &p, &m, NULL, 0), LM_ERR_MISSING);
    ck_assert_int_eq(lb.n_info, 0);
    ck_assert_int_eq(lb.n_error, 1);
    ck_assert_msg(strstr(lb.last, "model.safetensors"), "%s", lb.last);
    free_ckpt(&c);
    remove_tmpdir();
}
END_TEST

/* ---- fixtures written by transformers ---------------------------------------- */

typedef struct fixture_facts {
    const char *name;
    int64_t d, E, N, R, K, layers, V;
    int tied;
    lm_dtype dtype;
} fixture_facts;

/* From test/data/fixtures/README.md. */
static const fixture_facts facts[] = {
    {"m1-tiny-f32", 32, 64, 16, 2, 4, 2, 96, 1, LM_DTYPE_F32},
    {"m1-odd-f32", 40, 80, 8, 3, 3, 3, 75, 0, LM_DTYPE_F32},
    {"m1-bias-f32", 56, 112, 16, 4, 4, 2, 120, 1, LM_DTYPE_F32},
    {"m1-bf16", 32, 64, 16, 2, 4, 2, 128, 1, LM_DTYPE_BF16},
    {"m1-sharded-f32", 48, 96, 16, 3, 4, 3, 100, 1, LM_DTYPE_F32},
    {"m1-mambassm-f32", 32, 64, 16, 2, 4, 2, 104, 1, LM_DTYPE_F32},
    {"fm-odd-f32", 36, 72, 6, 3, 3, 3, 83, 1, LM_DTYPE_F32},
    {"fm-bias-f32", 44, 88, 10, 5, 4, 2, 71, 0, LM_DTYPE_F32},
    {"fm-eq-f32", 32, 64, 4, 2, 4, 2, 61, 1, LM_DTYPE_F32},
};

START_TEST(fixtures_load)
{
    char root[512];
    snprintf(root, sizeof root, "%s/fixtures", LM_TEST_DATA);
    DIR *dp = opendir(root);
    if (!dp)
        return; /* fixtures not generated in this checkout */
    int n_loaded = 0;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char dir[1024], cfgp[1100];
        snprintf(dir, sizeof dir, "%s/%s", root, de->d_name);
        snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
        if (access(cfgp, F_OK) != 0)
            continue;
        lm_model *m = NULL;
        char err[512];
        lm_model_params p;
        lm_model_params_init(&p);
        p.backend = LM_BACKEND_CPU;
        lm_status st = lm_model_load(dir, &p, &m, err, sizeof err);
        ck_assert_msg(st == LM_OK, "fixture %s: %s", de->d_name, err);
        lm_model_info info = {.struct_size = sizeof info};
        ck_assert_int_eq(lm_model_get_info(m, &info), LM_OK);
        for (size_t k = 0; k < sizeof facts / sizeof facts[0]; k++) {
            const fixture_facts *f = &facts[k];
            if (strcmp(f->name, de->d_name) != 0)
                continue;
            ck_assert_int_eq(info.d_model, f->d);
            ck_assert_int_eq(info.d_inner, f->E);
            ck_assert_int_eq(info.d_state, f->N);
            ck_assert_int_eq(info.dt_rank, f->R);
            ck_assert_int_eq(info.d_conv, f->K);
            ck_assert_int_eq(info.n_layer, f->layers);
            ck_assert_int_eq(info.vocab_size, f->V);
            ck_assert_int_eq(info.tied_embeddings, f->tied);
            ck_assert_int_eq(info.dtype, f->dtype);
        }
        /* The reference logits have one column per embedding row. */
        char refp[1100];
        snprintf(refp, sizeof refp, "%s/reference.safetensors", dir);
        lmi_st_file rf;
        lmi_err e = {{0}};
        if (lmi_st_open(refp, &rf, &e) == LM_OK) {
            const lmi_st_tensor *lg = lmi_st_find(&rf, "logits_f64");
            ck_assert_ptr_nonnull(lg);
            ck_assert_int_eq(lg->shape[lg->ndim - 1], info.vocab_size);
            lmi_st_close(&rf);
        }
        lm_model_free(m);
        n_loaded++;
    }
    closedir(dp);
    ck_assert_int_gt(n_loaded, 0);
}
END_TEST

/* A plain float64 forward pass written from docs MAMBA.md §1, run on the
 * weights exactly as the loader hands them to the backends: if the loader
 * mixed up a role, a layout, the A sign, the tying or a bias, the logits
 * would not match the ones transformers computed. */
static double silu(double v)
{
    return v / (1.0 + exp(-v));
}

static void ref_forward(const lm_model *m, const int32_t *ids, int64_t L, double *logits)
{
    const lmi_dims *d = &m->dims;
    const int64_t D = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    double *res = calloc((size_t)D, sizeof(double)), *h = calloc((size_t)D, sizeof(double));
    double *xz = calloc((size_t)(2 * E), sizeof(double)), *u = calloc((size_t)E, sizeof(double));
    double *xdbl = calloc((size_t)(R + 2 * N), sizeof(double));
    double *y = calloc((size_t)E, sizeof(double));
    double *conv = calloc((size_t)(d->n_layer * K * E), sizeof(double)); /* [layer][K][E] */
    double *ssm = calloc((size_t)(d->n_layer * E * N), sizeof(double));
    for (int64_t t = 0; t < L; t++) {
        for (int64_t i = 0; i < D; i++)
            res[i] = lmi_weight_at(&m->embed, (int64_t)ids[t] * D + i);
        for (int64_t l = 0; l < d->n_layer; l++) {
            const lmi_layer *W = &m->layers[l];
            double ms = 0;
            for (int64_t i = 0; i < D; i++)
                ms += res[i] * res[i];
            double inv = 1.0 / sqrt(ms / (double)D + d->eps);
            for (int64_t i = 0; i < D; i++)
                h[i] = res[i] * inv * lmi_weight_at(&W->norm_w, i);
            for (int64_t r = 0; r < 2 * E; r++) {
                double acc = W->mamba.in_b.data ? lmi_weight_at(&W->mamba.in_b, r) : 0.0;
                for (int64_t i = 0; i < D; i++)
                    acc += (double)lmi_weight_at(&W->mamba.in_w, r * D + i) * h[i];
                xz[r] = acc;
            }
            double *cs = conv + l * K * E;
            memmove(cs, cs + E, sizeof(double) * (size_t)((K - 1) * E));
            for (int64_t e = 0; e < E; e++)
                cs[(K - 1) * E + e] = xz[e];
            for (int64_t e = 0; e < E; e++) {
                double acc = W->mamba.conv_b.data ? lmi_weight_at(&W->mamba.conv_b, e) : 0.0;
                for (int64_t k = 0; k < K; k++)
                    acc += (double)lmi_weight_at(&W->mamba.conv_w, e * K + k) * cs[k * E + e];
                u[e] = silu(acc);
            }
            for (int64_t r = 0; r < R + 2 * N; r++) {
                double acc = 0;
                for (int64_t e = 0; e < E; e++)
                    acc += (double)lmi_weight_at(&W->mamba.x_w, r * E + e) * u[e];
                xdbl[r] = acc;
            }
            if (d->bcdt_rms_eps > 0) /* Falcon-Mamba: rms_forward of dt_low, B, C */
                for (int64_t g = 0; g < 3; g++) {
                    const int64_t o = g == 0 ? 0 : R + (g - 1) * N, n = g == 0 ? R : N;
                    double ss = 0;
                    for (int64_t k = 0; k < n; k++)
                        ss += xdbl[o + k] * xdbl[o + k];
                    const double rinv = 1.0 / sqrt(ss / (double)n + d->bcdt_rms_eps);
                    for (int64_t k = 0; k < n; k++)
                        xdbl[o + k] *= rinv;
                }
            double *hs = ssm + l * E * N;
            for (int64_t e = 0; e < E; e++) {
                double v = lmi_weight_at(&W->mamba.dt_b, e);
                for (int64_t r = 0; r < R; r++)
                    v += (double)lmi_weight_at(&W->mamba.dt_w, e * R + r) * xdbl[r];
                double delta = v > 20 ? v : log1p(exp(v));
                double acc = 0;
                for (int64_t n = 0; n < N; n++) {
                    hs[e * N + n] =
                        exp(delta * lmi_weight_at(&W->mamba.A, e * N + n)) * hs[e * N + n] + delta * xdbl[R + n] * u[e];
                    acc += hs[e * N + n] * xdbl[R + N + n];
                }
                y[e] = (acc + lmi_weight_at(&W->mamba.D, e) * u[e]) * silu(xz[E + e]);
            }
            for (int64_t i = 0; i < D; i++) {
                double acc = W->mamba.out_b.data ? lmi_weight_at(&W->mamba.out_b, i) : 0.0;
                for (int64_t e = 0; e < E; e++)
                    acc += (double)lmi_weight_at(&W->mamba.out_w, i * E + e) * y[e];
                res[i] += acc;
            }
        }
        double ms = 0;
        for (int64_t i = 0; i < D; i++)
            ms += res[i] * res[i];
        double inv = 1.0 / sqrt(ms / (double)D + d->eps);
        for (int64_t i = 0; i < D; i++)
            h[i] = res[i] * inv * lmi_weight_at(&m->norm_f, i);
        for (int64_t v = 0; v < d->vocab; v++) {
            double acc = 0;
            for (int64_t i = 0; i < D; i++)
                acc += (double)lmi_weight_at(&m->lm_head, v * D + i) * h[i];
            logits[t * d->vocab + v] = acc;
        }
    }
    free(res), free(h), free(xz), free(u), free(xdbl), free(y), free(conv), free(ssm);
}

START_TEST(fixtures_forward_matches_transformers)
{
    char root[512];
    snprintf(root, sizeof root, "%s/fixtures", LM_TEST_DATA);
    DIR *dp = opendir(root);
    if (!dp)
        return;
    int n_checked = 0;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char dir[1024], refp[1100];
        snprintf(dir, sizeof dir, "%s/%s", root, de->d_name);
        snprintf(refp, sizeof refp, "%s/reference.safetensors", dir);
        lmi_st_file rf;
        lmi_err e = {{0}};
        if (lmi_st_open(refp, &rf, &e) != LM_OK)
            continue;
        lm_model *m = NULL;
        ck_assert_msg(lmi_model_read(dir, &m, &e) == LM_OK, "%s: %s", de->d_name, e.msg);
        if (m->dims.arch != LM_ARCH_MAMBA1) {
            lm_model_free(m);
            lmi_st_close(&rf);
            continue;
        }
        const lmi_st_tensor *ids = lmi_st_find(&rf, "input_ids");
        const lmi_st_tensor *lg = lmi_st_find(&rf, "logits_f64");
        ck_assert(ids && lg && ids->dtype == LMI_ST_I32 && lg->dtype == LMI_ST_F64);
        int64_t B = ids->shape[0], L = ids->shape[1], V = lg->shape[2];
        ck_assert_int_eq(V, m->dims.vocab);
        double *got = malloc(sizeof(double) * (size_t)(L * V));
        double max_err = 0, max_ref = 0;
        for (int64_t b = 0; b < B; b++) {
            int32_t *row = malloc(sizeof(int32_t) * (size_t)L);
            memcpy(row, ids->data + (size_t)(b * L) * 4, sizeof(int32_t) * (size_t)L);
            ref_forward(m, row, L, got);
            for (int64_t k = 0; k < L * V; k++) {
                double want;
                memcpy(&want, lg->data + (size_t)(b * L * V + k) * 8, 8);
                max_err = fmax(max_err, fabs(got[k] - want));
                max_ref = fmax(max_ref, fabs(want));
            }
            free(row);
        }
        /* Weights are exact; only A = -exp(A_log) is rounded to fp32, which
         * moves these logits by about 1e-10. */
        ck_assert_msg(max_err <= 1e-7 * max_ref, "%s: max abs err %g (max |logit| %g)", de->d_name,
                      max_err, max_ref);
        free(got);
        lm_model_free(m);
        lmi_st_close(&rf);
        n_checked++;
    }
    closedir(dp);
    ck_assert_int_gt(n_checked, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("load");
    add_tcase(s, "load", 120,
              (const TTest *[]){loads_f32,
                                loads_f16,
                                loads_bf16,
                                loads_mixed_dtypes,
                                sharded_matches_single_file,
                                unaligned_f32_is_copied,
                                mamba_ssm_naming,
                                time_step_rank_auto,
                                lm_head_and_tying,
                                biases,
                                mamba2_loads,
                                missing_tensor,
                                shape_disagrees_with_config,
                                bad_configs,
                                missing_and_bad_model_files,
                                non_finite_weights,
                                unsupported_dtype,
                                arguments_and_params,
                                logging,
                                fixtures_load,
                                fixtures_forward_matches_transformers,
                                NULL});
    return run_suite(s);
}
