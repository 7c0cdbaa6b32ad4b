/*
 * test_gpu_mamba2.c - the CUDA Mamba-2 backend (lmi_cuda_backend):
 *   - every m2-* fixture against its float64 transformers logits (prefill
 *     of the whole row, then token by token);
 *   - random checkpoints written to /tmp and loaded through lm_model_load
 *     on both backends: CUDA vs CPU at several lengths (odd head counts,
 *     head_dim > 64, n_groups > 1, state sizes off the kernels' tiles,
 *     d_conv 3 and 4, time_step_limit), decode after prefill, chunked =
 *     one-shot, state round trips, TF32, bf16 storage, LongMamba (from a
 *     calibration, some heads global) and DeciMamba through the public
 *     session API, calibration (the Δ sink) on both backends, one long
 *     prompt;
 *   - --bench: prefill / decode timings of a mamba2-130m-shaped model with
 *     random bf16 weights.
 * --quick keeps the lengths short (for compute-sanitizer); --profile runs
 * only one 16k prefill of the bench model (for ncu).  Exit 0 / 1 / 77.
 *
 * Tolerances: fp32 storage and GEMMs within 1e-5 of max|logit| (both
 * backends in fp32, only the summation orders differ); states within 1e-4
 * of max|state|.  bf16 storage rounds the GEMM inputs to bf16 on the GPU
 * (the CPU computes in fp32 from the same bf16 weights): 1e-2.  TF32: 2e-3.
 */
#include "gpu_ref.h"

#include <cuda_runtime_api.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "format/safetensors.h"

#ifndef LM_TEST_DATA
#error "LM_TEST_DATA must be defined"
#endif


static bool g_quick = false;

/* ---- random Mamba-2 checkpoints ---------------------------------------- */

typedef struct m2spec {
    const char *name;
    int64_t d, expand, H, P, G, N, K, n_layer, V;
    bool bias, conv_bias, tied, bf16;
    double lo, hi;   /* time_step_limit; hi < 0: +inf */
    uint64_t seed;
} m2spec;

/* odd sizes: 6 heads of 15, 3 groups, N 72, K 3, biases, a Δ clamp */
static const m2spec SPEC_X = {"x", 45, 2, 6, 15, 3, 72, 3, 3, 97, true, false, false, false, 0.002, 0.6, 11};
/* head_dim 80 > 64 and N 130 > 128 (second tiles), 2 groups, K 4, tied */
static const m2spec SPEC_Y = {"y", 40, 4, 2, 80, 2, 130, 4, 2, 70, false, true, true, false, 0, -1, 12};
/* bf16 storage */
static const m2spec SPEC_Z = {"z", 48, 2, 4, 24, 2, 40, 4, 2, 90, true, true, false, true, 0, -1, 13};
/* small, for the long prompt */
static const m2spec SPEC_W = {"w", 32, 2, 4, 16, 2, 24, 4, 2, 64, false, true, false, false, 0, -1, 14};

typedef struct tensor_out {
    char name[128];
    int64_t shape[3];
    int ndim;
    float *data;
} tensor_out;

static float *rand_array(tu_rng *r, size_t n, double scale, double offset)
{
    float *a = malloc(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) a[i] = (float)(offset + scale * tu_rng_sym(r));
    return a;
}

static int add_t(tensor_out *t, int nt, const char *name, float *data, int ndim, int64_t a, int64_t b, int64_t c)
{
    snprintf(t[nt].name, sizeof t[nt].name, "%s", name);
    t[nt].data = data;
    t[nt].ndim = ndim;
    t[nt].shape[0] = a;
    t[nt].shape[1] = b;
    t[nt].shape[2] = c;
    return nt + 1;
}

static size_t numel(const tensor_out *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

/* Writes config.json + model.safetensors of a random model into dir. */
static bool write_model(const char *dir, const m2spec *sp)
{
    mkdir(dir, 0755);
    tu_rng r = {sp->seed * 0x9E3779B97F4A7C15ull + 7};
    const int64_t d = sp->d, E = sp->expand * sp->d, H = sp->H, P = sp->P, G = sp->G, N = sp->N, K = sp->K;
    if (H * P != E) {
        printf("bad spec %s\n", sp->name);
        return false;
    }
    const int64_t CD = E + 2 * G * N, ld = 2 * E + 2 * G * N + H, V = sp->V;
    tensor_out *t = calloc((size_t)(3 + 11 * sp->n_layer), sizeof *t);
    int nt = 0;
    char nm[128];
    nt = add_t(t, nt, "backbone.embeddings.weight", rand_array(&r, (size_t)(V * d), 1.0, 0), 2, V, d, 0);
    for (int64_t l = 0; l < sp->n_layer; l++) {
#define NM(s) (snprintf(nm, sizeof nm, "backbone.layers.%lld.%s", (long long)l, s), nm)
        nt = add_t(t, nt, NM("norm.weight"), rand_array(&r, (size_t)d, 0.2, 1), 1, d, 0, 0);
        nt = add_t(t, nt, NM("mixer.in_proj.weight"), rand_array(&r, (size_t)(ld * d), 1.0 / sqrt((double)d), 0), 2,
                   ld, d, 0);
        if (sp->bias) nt = add_t(t, nt, NM("mixer.in_proj.bias"), rand_array(&r, (size_t)ld, 0.1, 0), 1, ld, 0, 0);
        nt = add_t(t, nt, NM("mixer.conv1d.weight"), rand_array(&r, (size_t)(CD * K), 1.5 / sqrt((double)K), 0), 3,
                   CD, 1, K);
        if (sp->conv_bias) nt = add_t(t, nt, NM("mixer.conv1d.bias"), rand_array(&r, (size_t)CD, 0.2, 0), 1, CD, 0, 0);
        float *dtb = malloc((size_t)H * sizeof(float)), *alog = malloc((size_t)H * sizeof(float));
        for (int64_t h = 0; h < H; h++) {
            const double dt0 = exp(log(1e-3) + tu_rng_unif(&r) * (log(0.1) - log(1e-3)));
            dtb[h] = (float)log(expm1(dt0));
            alog[h] = (float)log(1.0 + 15.0 * tu_rng_unif(&r));
        }
        nt = add_t(t, nt, NM("mixer.dt_bias"), dtb, 1, H, 0, 0);
        nt = add_t(t, nt, NM("mixer.A_log"), alog, 1, H, 0, 0);
        nt = add_t(t, nt, NM("mixer.D"), rand_array(&r, (size_t)H, 0.5, 1), 1, H, 0, 0);
        nt = add_t(t, nt, NM("mixer.norm.weight"), rand_array(&r, (size_t)E, 0.2, 1), 1, E, 0, 0);
        nt = add_t(t, nt, NM("mixer.out_proj.weight"), rand_array(&r, (size_t)(d * E), 1.0 / sqrt((double)E), 0), 2, d,
                   E, 0);
        if (sp->bias) nt = add_t(t, nt, NM("mixer.out_proj.bias"), rand_array(&r, (size_t)d, 0.1, 0), 1, d, 0, 0);
#undef NM
    }
    nt = add_t(t, nt, "backbone.norm_f.weight", rand_array(&r, (size_t)d, 0.2, 1), 1, d, 0, 0);
    if (!sp->tied) nt = add_t(t, nt, "lm_head.weight", rand_array(&r, (size_t)(V * d), 1.0 / sqrt((double)d), 0), 2, V, d, 0);

    /* safetensors: u64 header length, JSON header (padded to 8), data */
    const size_t es = sp->bf16 ? 2 : 4;
    size_t cap = 256 + (size_t)nt * 200, len = 0, off = 0;
    char *hdr = malloc(cap);
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < nt; i++) {
        const size_t bytes = numel(&t[i]) * es;
        len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name,
                                sp->bf16 ? "BF16" : "F32");
        for (int k = 0; k < t[i].ndim; k++)
            len += (size_t)snprintf(hdr + len, cap - len, "%s%lld", k ? "," : "", (long long)t[i].shape[k]);
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + bytes);
        off += bytes;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    bool ok = f != NULL;
    if (ok) {
        const uint64_t hl = len;
        ok = fwrite(&hl, 8, 1, f) == 1 && fwrite(hdr, 1, len, f) == len;
        for (int i = 0; ok && i < nt; i++) {
            const size_t n = numel(&t[i]);
            if (sp->bf16) {
                uint16_t *b = malloc(n * 2 + 2);
                for (size_t k = 0; k < n; k++) b[k] = bf16_bits(t[i].data[k]);
                ok = fwrite(b, 2, n, f) == n;
                free(b);
            } else {
                ok = fwrite(t[i].data, 4, n, f) == n;
            }
        }
        ok = fclose(f) == 0 && ok;
    }
    free(hdr);
    for (int i = 0; i < nt; i++) free(t[i].data);
    free(t);
    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "w");
    if (!f) return false;
    char hi[64];
    if (sp->hi < 0)
        snprintf(hi, sizeof hi, "{\"__float__\": \"Infinity\"}");
    else
        snprintf(hi, sizeof hi, "%.17g", sp->hi);
    fprintf(f,
            "{\"architectures\": [\"Mamba2ForCausalLM\"], \"model_type\": \"mamba2\", \"hidden_size\": %lld,\n"
            " \"num_hidden_layers\": %lld, \"vocab_size\": %lld, \"layer_norm_epsilon\": 1e-05,\n"
            " \"tie_word_embeddings\": %s, \"use_bias\": %s, \"use_conv_bias\": %s, \"conv_kernel\": %lld,\n"
            " \"state_size\": %lld, \"num_heads\": %lld, \"head_dim\": %lld, \"n_groups\": %lld, \"chunk_size\": 16,\n"
            " \"expand\": %lld, \"time_step_limit\": [%.17g, %s], \"dtype\": \"%s\", \"residual_in_fp32\": true}\n",
            (long long)d, (long long)sp->n_layer, (long long)V, sp->tied ? "true" : "false",
            sp->bias ? "true" : "false", sp->conv_bias ? "true" : "false", (long long)K, (long long)N, (long long)H,
            (long long)P, (long long)G, (long long)sp->expand, sp->lo, hi, sp->bf16 ? "bfloat16" : "float32");
    return fclose(f) == 0 && ok;
}

static lm_model *load(const char *dir, lm_backend be)
{
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = be;
    lm_model *m = NULL;
    char err[512] = "";
    if (lm_model_load(dir, &mp, &m, err, sizeof err) != LM_OK) {
        printf("FAIL lm_model_load(%s, %s): %s\n", dir, lm_backend_name(be), err);
        return NULL;
    }
    return m;
}

static lm_status fwd(struct lm_session *s, const int32_t *tok, int64_t L, int64_t n_out, float *logits, bool tf32,
                     lmi_err *e)
{
    lmi_forward f;
    memset(&f, 0, sizeof f);
    f.tokens = tok;
    f.n_tokens = L;
    f.n_out = n_out;
    f.logits = n_out ? logits : NULL;
    f.allow_tf32 = tf32;
    return s->model->vt->forward(s, &f, e);
}

typedef struct stbuf {
    float *conv, *ssm;
    size_t nc, ns;
} stbuf;

static stbuf state_of(struct lm_session *s)
{
    const lmi_dims *d = &s->model->dims;
    stbuf b;
    b.nc = (size_t)(d->n_layer * d->conv_dim * (d->d_conv - 1));
    b.ns = (size_t)(d->n_layer * d->d_inner * d->d_state);
    b.conv = malloc(b.nc * sizeof(float) + 4);
    b.ssm = malloc(b.ns * sizeof(float));
    lmi_err e = {{0}};
    if (s->model->vt->state_read(s, (float *const[]){b.conv, b.ssm}, &e) != LM_OK) {
        printf("state_read: %s\n", e.msg);
        for (size_t i = 0; i < b.ns; i++) b.ssm[i] = NAN;
    }
    return b;
}

static void stbuf_free(stbuf *b)
{
    free(b->conv);
    free(b->ssm);
}

static double state_diff(struct lm_session *a, struct lm_session *b)
{
    stbuf x = state_of(a), y = state_of(b);
    double e1 = tu_max_rel_err_f(x.ssm, y.ssm, x.ns), e2 = tu_max_rel_err_f(x.conv, y.conv, x.nc);
    stbuf_free(&x);
    stbuf_free(&y);
    return e1 > e2 ? e1 : e2;
}

/* ---- fixtures ------------------------------------------------------------ */

static void run_fixture(const char *name)
{
    fixture_ref fx;
    if (!fixture_ref_open(&fx, name)) return;
    lm_model *m = load(fx.dir, LM_BACKEND_CUDA);
    if (!m) {
        check(false, "%s: load", name);
        fixture_ref_close(&fx);
        return;
    }
    lmi_err e = {{0}};
    const int64_t B = fx.B, L = fx.L, V = fx.V;
    const double tol = m->dtype != LM_DTYPE_F32 ? TOL_BF16 : TOL_F32;
    check(m->vt == &lmi_cuda_backend && V == m->dims.vocab, "%s: on the CUDA Mamba-2 backend", name);
    int32_t *tok = malloc((size_t)L * sizeof(int32_t));
    double *ref = malloc((size_t)(L * V) * sizeof(double));
    float *got = malloc((size_t)(L * V) * sizeof(float));
    for (int64_t b = 0; b < B; b++) {
        fixture_ref_row(&fx, b, tok, ref);
        struct lm_session *s = session_new(m, &e);
        for (size_t i = 0; i < (size_t)(L * V); i++) got[i] = NAN;
        lm_status st = s ? fwd(s, tok, L, L, got, false, &e) : LM_ERR_BACKEND;
        const double e1 = st == LM_OK ? tu_max_rel_err(got, ref, (size_t)(L * V)) : INFINITY;
        check(e1 <= tol, "%s row %lld: prefill %lld tokens, err %.2e of max|logit| (tol %.0e) %s", name, (long long)b,
              (long long)L, e1, tol, st == LM_OK ? "" : e.msg);
        if (s) m->vt->session_reset(s);
        double e2 = s ? 0 : INFINITY;
        for (int64_t t = 0; s && t < L; t++)
            if (fwd(s, tok + t, 1, 1, got + t * V, false, &e) != LM_OK) {
                e2 = INFINITY;
                break;
            }
        if (isfinite(e2)) e2 = tu_max_rel_err(got, ref, (size_t)(L * V));
        check(e2 <= tol, "%s row %lld: %lld decode steps, err %.2e (tol %.0e)", name, (long long)b, (long long)L, e2,
              tol);
        session_delete(s);
    }
    free(tok);
    free(ref);
    free(got);
    fixture_ref_close(&fx);
    lm_model_free(m);
}

static void fixtures(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/fixtures", LM_TEST_DATA);
    DIR *dd = opendir(path);
    if (!dd) {
        check(false, "no fixtures at %s", path);
        return;
    }
    struct dirent *de;
    int n = 0;
    while ((de = readdir(dd)))
        if (strncmp(de->d_name, "m2-", 3) == 0) {
            run_fixture(de->d_name);
            n++;
        }
    closedir(dd);
    check(n >= 4, "%d m2-* fixtures found", n);
}

/* ---- CUDA vs CPU on random checkpoints ----------------------------------- */

typedef struct pair {
    lm_model *cpu, *gpu;
    const m2spec *sp;
    char dir[256];
} pair;

static bool pair_open(pair *p, const m2spec *sp)
{
    p->sp = sp;
    snprintf(p->dir, sizeof p->dir, "/tmp/lm_m2_test_%d_%s", (int)getpid(), sp->name);
    if (!write_model(p->dir, sp)) {
        check(false, "%s: writing %s", sp->name, p->dir);
        return false;
    }
    p->cpu = load(p->dir, LM_BACKEND_CPU);
    p->gpu = load(p->dir, LM_BACKEND_CUDA);
    check(p->cpu && p->gpu && p->gpu->vt == &lmi_cuda_backend, "%s: loaded on CPU and CUDA", sp->name);
    return p->cpu && p->gpu;
}

static void pair_close(pair *p)
{
    if (p->cpu) lm_model_free(p->cpu);
    if (p->gpu) lm_model_free(p->gpu);
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", p->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", p->dir);
    unlink(path);
    rmdir(p->dir);
}

/* Prefill L tokens on both, compare the last n_out logits and the states,
 * then 3 decode steps. */
static void parity_len(pair *p, int64_t L, double tol, bool tf32)
{
    const int64_t V = p->gpu->dims.vocab, n_out = L < 4 ? L : 4;
    tu_rng r = {(uint64_t)L * 7919 + p->sp->seed};
    int32_t *tok = tu_rng_tokens(&r, L + 3, V);
    float *a = malloc((size_t)(n_out * V) * sizeof(float)), *b = malloc((size_t)(n_out * V) * sizeof(float));
    lmi_err e1 = {{0}}, e2 = {{0}};
    struct lm_session *sc = session_new(p->cpu, &e1), *sg = session_new(p->gpu, &e2);
    lm_status s1 = sc ? fwd(sc, tok, L, n_out, a, false, &e1) : LM_ERR_BACKEND;
    lm_status s2 = sg ? fwd(sg, tok, L, n_out, b, tf32, &e2) : LM_ERR_BACKEND;
    double err = (s1 == LM_OK && s2 == LM_OK) ? tu_max_rel_err_f(b, a, (size_t)(n_out * V)) : INFINITY;
    check(err <= tol, "%s: L %lld%s prefill, CUDA vs CPU logits err %.2e (tol %.0e) %s%s", p->sp->name, (long long)L,
          tf32 ? " TF32" : "", err, tol, e1.msg, e2.msg);
    if (s1 == LM_OK && s2 == LM_OK) {
        const double es = state_diff(sg, sc);
        const double ts = tol > TOL_F32 ? tol * 10 : TOL_STATE;
        check(es <= ts, "%s: L %lld state err %.2e (tol %.0e)", p->sp->name, (long long)L, es, ts);
        double worst = 0;
        for (int k = 0; k < 3; k++) {
            s1 = fwd(sc, tok + L + k, 1, 1, a, false, &e1);
            s2 = fwd(sg, tok + L + k, 1, 1, b, tf32, &e2);
            const double ek = (s1 == LM_OK && s2 == LM_OK) ? tu_max_rel_err_f(b, a, (size_t)V) : INFINITY;
            if (ek > worst || isnan(ek)) worst = ek;
        }
        check(worst <= tol, "%s: L %lld then 3 decode steps, err %.2e", p->sp->name, (long long)L, worst);
    }
    session_delete(sc);
    session_delete(sg);
    free(tok);
    free(a);
    free(b);
}

/* Chunked prefill = one-shot, and state round trips. */
static void chunks_and_state(pair *p)
{
    const int64_t L = g_quick ? 300 : 1000, V = p->gpu->dims.vocab;
    tu_rng r = {99 + p->sp->seed};
    int32_t *tok = tu_rng_tokens(&r, L + 4, V);
    float *a = malloc((size_t)V * sizeof(float)), *b = malloc((size_t)V * sizeof(float));
    float *c = malloc((size_t)V * sizeof(float));
    lmi_err e = {{0}};
    struct lm_session *s1 = session_new(p->gpu, &e), *s2 = session_new(p->gpu, &e);
    lm_status st = fwd(s1, tok, L, 1, a, false, &e);
    static const int64_t sizes[] = {1, 6, 57, 64, 65, 128, 3, 100};
    int64_t pos = 0;
    for (int i = 0; st == LM_OK && pos < L; i++) {
        int64_t n = sizes[i % 8];
        if (n > L - pos) n = L - pos;
        st = fwd(s2, tok + pos, n, pos + n == L ? 1 : 0, b, false, &e);
        pos += n;
    }
    double err = st == LM_OK ? tu_max_rel_err_f(b, a, (size_t)V) : INFINITY;
    check(err <= TOL_F32, "%s: chunked prefill of %lld = one-shot, logits err %.2e %s", p->sp->name, (long long)L,
          err, e.msg);
    err = state_diff(s2, s1);
    check(err <= TOL_STATE, "%s: chunked prefill state err %.2e", p->sp->name, err);

    /* round trip: s1's state into a fresh session, both continue */
    stbuf x = state_of(s1);
    struct lm_session *s3 = session_new(p->gpu, &e);
    st = p->gpu->vt->state_write(s3, (const float *const[]){x.conv, x.ssm}, &e);
    double worst = st == LM_OK ? 0 : INFINITY;
    for (int k = 0; st == LM_OK && k < 4; k++) {
        st = fwd(s1, tok + L + k, 1, 1, a, false, &e);
        if (st == LM_OK) st = fwd(s3, tok + L + k, 1, 1, b, false, &e);
        const double ek = st == LM_OK ? tu_max_rel_err_f(b, a, (size_t)V) : INFINITY;
        if (ek > worst) worst = ek;
    }
    check(worst == 0, "%s: CUDA state read -> write -> 4 decode steps identical (err %.2e) %s", p->sp->name, worst,
          e.msg);
    stbuf_free(&x);

    /* CPU state into a CUDA session */
    struct lm_session *sc = session_new(p->cpu, &e);
    st = fwd(sc, tok, L, 0, NULL, false, &e);
    x = state_of(sc);
    p->gpu->vt->session_reset(s3);
    if (st == LM_OK) st = p->gpu->vt->state_write(s3, (const float *const[]){x.conv, x.ssm}, &e);
    worst = st == LM_OK ? 0 : INFINITY;
    for (int k = 0; st == LM_OK && k < 4; k++) {
        st = fwd(sc, tok + L + k, 1, 1, c, false, &e);
        if (st == LM_OK) st = fwd(s3, tok + L + k, 1, 1, b, false, &e);
        const double ek = st == LM_OK ? tu_max_rel_err_f(b, c, (size_t)V) : INFINITY;
        if (ek > worst) worst = ek;
    }
    check(worst <= TOL_F32, "%s: CPU state -> CUDA session, 4 decode steps err %.2e", p->sp->name, worst);
    stbuf_free(&x);
    /* reset = zero state: a reset session matches a fresh one */
    p->gpu->vt->session_reset(s3);
    struct lm_session *s4 = session_new(p->gpu, &e);
    st = fwd(s3, tok, 70, 1, a, false, &e);
    if (st == LM_OK) st = fwd(s4, tok, 70, 1, b, false, &e);
    err = st == LM_OK ? tu_max_rel_err_f(b, a, (size_t)V) : INFINITY;
    check(err == 0, "%s: reset session = fresh session (err %.2e)", p->sp->name, err);
    session_delete(s1);
    session_delete(s2);
    session_delete(s3);
    session_delete(s4);
    session_delete(sc);
    free(tok);
    free(a);
    free(b);
    free(c);
}

/* ---- public API: calibration, LongMamba, DeciMamba ------------------------ */

static lm_status api_prefill(const lm_model *m, lm_session **out, const int32_t *tok, int64_t L, int64_t n_logits,
                             float *logits, const lm_calibration *cal, double theta, const lm_decimamba_params *dp,
                             const int32_t *dec, int n_dec, float *dec_logits)
{
    char err[512] = "";
    lm_session *s = NULL;
    lm_status st = lm_session_create(m, NULL, &s, err, sizeof err);
    if (st != LM_OK) {
        printf("lm_session_create: %s\n", err);
        return st;
    }
    if (cal) {
        lm_longmamba_params lp;
        lm_longmamba_params_init(&lp);
        lp.theta = theta;
        /* Thresholds are Δ values of the calibration windows, and layer 0's Δ
         * depends on the current token only: the prompt repeats them exactly,
         * and an exact tie Δ == τ resolves by the last bit of Δ, which the
         * backends need not share.  A scale of 1 + 2^-10 keeps τ off every
         * repeated value (it still filters). */
        lp.threshold_scale = 1.0 + 1.0 / 1024.0;
        st = lm_session_set_longmamba(s, cal, &lp);
    } else if (dp) {
        st = lm_session_set_decimamba(s, dp);
    }
    const int64_t V = m->dims.vocab;
    if (st == LM_OK) st = lm_session_prefill(s, tok, (size_t)L, (size_t)n_logits, logits, (size_t)(n_logits * V));
    for (int k = 0; st == LM_OK && k < n_dec; k++) st = lm_session_decode(s, dec[k], dec_logits + k * V, (size_t)V);
    if (st != LM_OK) printf("public API (%s): %s\n", lm_backend_name(m->backend), lm_session_last_error(s));
    *out = s;
    return st;
}

static void modes(pair *p)
{
    const lmi_dims *d = &p->gpu->dims;
    const int64_t V = d->vocab, nl = d->n_layer, H = d->n_heads;
    const int64_t Wl = g_quick ? 128 : 256, L = g_quick ? 400 : 1000;
    tu_rng r = {4242 + p->sp->seed};
    int32_t *w0 = tu_rng_tokens(&r, Wl, V), *w1 = tu_rng_tokens(&r, Wl, V), *tok = tu_rng_tokens(&r, L + 2, V);
    const int32_t *wins[2] = {w0, w1};
    const size_t lens[2] = {(size_t)Wl, (size_t)Wl};
    const int64_t buckets[2] = {2 * Wl, 4 * Wl};
    lm_calib_params cp;
    lm_calib_params_init(&cp);
    cp.buckets = buckets;
    cp.n_buckets = 2;
    char err[512] = "";
    lm_calibration *cc = NULL, *cg = NULL;
    lm_status st1 = lm_calibrate(p->cpu, wins, lens, 2, &cp, &cc, err, sizeof err);
    if (st1 != LM_OK) printf("calibrate CPU: %s\n", err);
    lm_status st2 = lm_calibrate(p->gpu, wins, lens, 2, &cp, &cg, err, sizeof err);
    if (st2 != LM_OK) printf("calibrate CUDA: %s\n", err);
    check(st1 == LM_OK && st2 == LM_OK, "%s: calibration on both backends", p->sp->name);
    if (st1 != LM_OK || st2 != LM_OK) goto out;
    {
        /* the Δ sink: calibration statistics from both backends agree */
        double *ldc = malloc((size_t)(nl * H) * sizeof(double)), *ldg = malloc((size_t)(nl * H) * sizeof(double));
        float *tc = malloc((size_t)H * sizeof(float)), *tg = malloc((size_t)H * sizeof(float));
        double emax = 0, tmax = 0;
        for (int64_t l = 0; l < nl; l++) {
            lm_calibration_get_log_decay(cc, l, ldc + l * H, (size_t)H);
            lm_calibration_get_log_decay(cg, l, ldg + l * H, (size_t)H);
            for (int64_t b = 0; b < 2; b++) {
                lm_calibration_get_thresholds(cc, l, b, tc, (size_t)H);
                lm_calibration_get_thresholds(cg, l, b, tg, (size_t)H);
                const double et = tu_max_rel_err_f(tg, tc, (size_t)H);
                if (et > tmax) tmax = et;
            }
        }
        for (int64_t i = 0; i < nl * H; i++) {
            const double ee = fabs(ldc[i] - ldg[i]) / (fabs(ldc[i]) + 1e-30);
            if (ee > emax) emax = ee;
        }
        check(emax <= 1e-4 && tmax <= 1e-4, "%s: calibration CUDA vs CPU: log-decay err %.2e, thresholds err %.2e",
              p->sp->name, emax, tmax);
        /* theta between the log-decays: about half of the heads global */
        double *srt = malloc((size_t)(nl * H) * sizeof(double));
        memcpy(srt, ldc, (size_t)(nl * H) * sizeof(double));
        for (int64_t i = 1; i < nl * H; i++)
            for (int64_t j = i; j > 0 && srt[j - 1] > srt[j]; j--) {
                const double t = srt[j];
                srt[j] = srt[j - 1];
                srt[j - 1] = t;
            }
        const int64_t mid = nl * H / 2;
        const double theta = exp(0.5 * (srt[mid - 1] + srt[mid]));
        uint8_t *mask = malloc((size_t)(nl * H));
        lm_classify_channels(cc, theta, mask, (size_t)(nl * H), NULL, 0, err, sizeof err);
        int64_t n_glob = 0;
        for (int64_t i = 0; i < nl * H; i++) n_glob += mask[i];
        check(n_glob > 0 && n_glob < nl * H, "%s: LongMamba theta %.3g: %lld of %lld heads global", p->sp->name, theta,
              (long long)n_glob, (long long)(nl * H));

        const int64_t no = 4;
        float *la = malloc((size_t)((no + 2) * V) * sizeof(float)), *lb = malloc((size_t)((no + 2) * V) * sizeof(float));
        float *lv = malloc((size_t)((no + 2) * V) * sizeof(float));
        lm_session *sa = NULL, *sb = NULL, *sv = NULL;
        lm_status a = api_prefill(p->cpu, &sa, tok, L, no, la, cc, theta, NULL, tok + L, 2, la + no * V);
        lm_status b = api_prefill(p->gpu, &sb, tok, L, no, lb, cc, theta, NULL, tok + L, 2, lb + no * V);
        lm_status v = api_prefill(p->gpu, &sv, tok, L, no, lv, NULL, 0, NULL, tok + L, 2, lv + no * V);
        double el = (a == LM_OK && b == LM_OK) ? tu_max_rel_err_f(lb, la, (size_t)(no * V)) : INFINITY;
        double ed = (a == LM_OK && b == LM_OK) ? tu_max_rel_err_f(lb + no * V, la + no * V, (size_t)(2 * V)) : INFINITY;
        double ev = (b == LM_OK && v == LM_OK) ? tu_max_rel_err_f(lb, lv, (size_t)(no * V)) : 0;
        check(el <= TOL_F32 && ed <= TOL_F32,
              "%s: LongMamba prefill %lld (public API) CUDA vs CPU err %.2e, then 2 decode steps err %.2e", p->sp->name,
              (long long)L, el, ed);
        check(ev > 1e-3, "%s: LongMamba logits differ from vanilla (by %.2e of max|logit|)", p->sp->name, ev);
        lm_session_free(sa);
        lm_session_free(sb);
        lm_session_free(sv);

        /* DeciMamba: two decimating layers (the second gathers from the first's buffers) */
        lm_decimamba_params dp;
        lm_decimamba_params_init(&dp);
        const int32_t layers[2] = {0, (int32_t)(nl - 1)};
        dp.layers = layers;
        dp.n_layers = 2;
        dp.l_base = L * 2 / 5;
        dp.beta = 0.5;
        dp.protect = 2;
        a = api_prefill(p->cpu, &sa, tok, L, 2, la, NULL, 0, &dp, tok + L, 2, la + 2 * V);
        b = api_prefill(p->gpu, &sb, tok, L, 2, lb, NULL, 0, &dp, tok + L, 2, lb + 2 * V);
        el = (a == LM_OK && b == LM_OK) ? tu_max_rel_err_f(lb, la, (size_t)(2 * V)) : INFINITY;
        ed = (a == LM_OK && b == LM_OK) ? tu_max_rel_err_f(lb + 2 * V, la + 2 * V, (size_t)(2 * V)) : INFINITY;
        ev = (b == LM_OK) ? tu_max_rel_err_f(lb, lv + 2 * V, (size_t)(2 * V)) : 0;
        check(el <= TOL_F32 && ed <= TOL_F32,
              "%s: DeciMamba prefill %lld (public API) CUDA vs CPU err %.2e, then 2 decode steps err %.2e", p->sp->name,
              (long long)L, el, ed);
        check(ev > 1e-3, "%s: DeciMamba logits differ from vanilla (by %.2e)", p->sp->name, ev);
        lm_session_free(sa);
        lm_session_free(sb);
        free(la);
        free(lb);
        free(lv);
        free(mask);
        free(srt);
        free(ldc);
        free(ldg);
        free(tc);
        free(tg);
    }
out:
    lm_calibration_free(cc);
    lm_calibration_free(cg);
    free(w0);
    free(w1);
    free(tok);
}

/* ---- timings ---------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* mamba2-130m shape, random bf16 weights, in memory (layers share their
 * matrices: the timings do not depend on the values). */
static void bench(bool profile_only)
{
    struct lm_model *m = calloc(1, sizeof *m);
    lmi_dims *d = &m->dims;
    d->arch = LM_ARCH_MAMBA2;
    d->d_model = 768;
    d->d_inner = 1536;
    d->d_state = 128;
    d->d_conv = 4;
    d->n_layer = 24;
    d->vocab = 50280;
    d->n_heads = 24;
    d->head_dim = 64;
    d->n_groups = 1;
    d->conv_dim = 1536 + 2 * 128;
    d->n_channels = 24;
    d->eps = 1e-5;
    d->use_conv_bias = true;
    d->tied = true;
    d->dt_limit_lo = 0;
    d->dt_limit_hi = INFINITY;
    d->ssd_chunk = 256;
    m->dtype = LM_DTYPE_BF16;
    m->backend = LM_BACKEND_CUDA;
    m->vt = &lmi_cuda_backend;
    const int64_t D = 768, E = 1536, CD = d->conv_dim, ld = 2 * E + 256 + 24, H = 24;
    tu_rng r = {777};
    float *emb = rand_array(&r, (size_t)(d->vocab * D), 1.0, 0);
    float *ones = rand_array(&r, (size_t)(ld > 4 * D ? ld : 4 * D), 0.2, 1);
    float *in_w = rand_array(&r, (size_t)(ld * D), 1.0 / sqrt((double)D), 0);
    float *out_w = rand_array(&r, (size_t)(D * E), 1.0 / sqrt((double)E), 0);
    float *conv_w = rand_array(&r, (size_t)(CD * 4), 0.75, 0);
    float *conv_b = rand_array(&r, (size_t)CD, 0.2, 0);
    float *dtb = malloc((size_t)H * sizeof(float)), *A = malloc((size_t)H * sizeof(float));
    for (int64_t h = 0; h < H; h++) {
        dtb[h] = (float)log(expm1(exp(log(1e-3) + tu_rng_unif(&r) * (log(0.1) - log(1e-3)))));
        A[h] = (float)-(1.0 + 15.0 * tu_rng_unif(&r));
    }
    m->embed = lmi_weight_of_f32(emb, d->vocab, D);
    m->lm_head = m->embed;
    m->norm_f = lmi_weight_of_f32(ones, 1, D);
    m->layers = calloc((size_t)d->n_layer, sizeof(lmi_layer));
    for (int64_t l = 0; l < d->n_layer; l++) {
        lmi_layer *Ly = &m->layers[l];
        Ly->kind = LMI_MIXER_MAMBA2;
        Ly->norm_w = lmi_weight_of_f32(ones, 1, D);
        Ly->mamba.in_w = lmi_weight_of_f32(in_w, ld, D);
        Ly->mamba.conv_w = lmi_weight_of_f32(conv_w, CD, 4);
        Ly->mamba.conv_b = lmi_weight_of_f32(conv_b, 1, CD);
        Ly->mamba.dt_b = lmi_weight_of_f32(dtb, 1, H);
        Ly->mamba.A = lmi_weight_of_f32(A, 1, H);
        Ly->mamba.D = lmi_weight_of_f32(ones, 1, H);
        Ly->mamba.gnorm_w = lmi_weight_of_f32(ones, 1, E);
        Ly->mamba.out_w = lmi_weight_of_f32(out_w, D, E);
    }
    lmi_err e = {{0}};
    lm_status st = m->vt->model_init(m, &e);
    struct lm_session *s = st == LM_OK ? session_new(m, &e) : NULL;
    if (!s) {
        printf("bench: %s\n", e.msg);
        check(false, "bench model");
    } else if (profile_only) {
        /* one 16k prefill, for a profiler's per-kernel times */
        int32_t *tok = tu_rng_tokens(&r, 16384, d->vocab);
        float *lg = malloc((size_t)d->vocab * sizeof(float));
        st = fwd(s, tok, 16384, 1, lg, false, &e);
        check(st == LM_OK, "profiled prefill of 16384 tokens %s", e.msg);
        free(tok);
        free(lg);
        session_delete(s);
    } else {
        printf("\nmamba2-130m shape (d 768, 24 layers, E 1536, 24 heads x 64, N 128, G 1, K 4, V 50280), bf16 "
               "random weights, batch 1, one H100:\n");
        printf("| what | tokens | ms | tokens/s |\n|---|---|---|---|\n");
        const int64_t lens[2] = {2048, 16384};
        int32_t *tok = tu_rng_tokens(&r, 16384, d->vocab);
        float *lg = malloc((size_t)d->vocab * sizeof(float));
        for (int i = 0; i < 2 && st == LM_OK; i++) {
            st = fwd(s, tok, lens[i], 1, lg, false, &e); /* warm-up (allocations, cuBLAS heuristics) */
            double best = 1e30;
            for (int k = 0; k < 3 && st == LM_OK; k++) {
                m->vt->session_reset(s);
                const double t0 = now_s();
                st = fwd(s, tok, lens[i], 1, lg, false, &e);
                const double t = now_s() - t0;
                if (t < best) best = t;
            }
            if (st == LM_OK)
                printf("| prefill (one forward, last logits) | %lld | %.2f | %.0f |\n", (long long)lens[i], best * 1e3,
                       (double)lens[i] / best);
        }
        if (st == LM_OK) {
            m->vt->session_reset(s);
            st = fwd(s, tok, 16, 1, lg, false, &e);
            for (int k = 0; k < 5 && st == LM_OK; k++) st = fwd(s, tok + k, 1, 1, lg, false, &e);
            const int steps = 100;
            const double t0 = now_s();
            for (int k = 0; k < steps && st == LM_OK; k++) st = fwd(s, tok + k, 1, 1, lg, false, &e);
            const double t = (now_s() - t0) / steps;
            if (st == LM_OK) printf("| decode step (host logits each step) | 1 | %.3f | %.0f |\n", t * 1e3, 1.0 / t);
        }
        check(st == LM_OK, "bench ran %s", st == LM_OK ? "" : e.msg);
        free(tok);
        free(lg);
        session_delete(s);
    }
    if (m->bk) m->vt->model_free(m);
    free(emb);
    free(ones);
    free(in_w);
    free(out_w);
    free(conv_w);
    free(conv_b);
    free(dtb);
    free(A);
    free(m->layers);
    free(m);
}

int main(int argc, char **argv)
{
    bool do_bench = false, profile = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) g_quick = true;
        if (!strcmp(argv[i], "--bench")) do_bench = true;
        if (!strcmp(argv[i], "--profile")) profile = true; /* only the 16k prefill of the bench model */
    }
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    if (profile) {
        bench(true);
        return g_failures ? 1 : 0;
    }
    fixtures();

    pair px = {0}, py = {0}, pz = {0}, pw = {0};
    if (pair_open(&px, &SPEC_X)) {
        const int64_t lens[] = {1, 7, 63, 64, 65, 1000};
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
            if (!g_quick || lens[i] <= 300) parity_len(&px, lens[i], TOL_F32, false);
        parity_len(&px, g_quick ? 200 : 1000, TOL_TF32, true);
        chunks_and_state(&px);
        modes(&px);
    }
    pair_close(&px);
    if (pair_open(&py, &SPEC_Y)) {
        const int64_t lens[] = {1, 7, 63, 64, 65, 1000};
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
            if (!g_quick || lens[i] <= 300) parity_len(&py, lens[i], TOL_F32, false);
        chunks_and_state(&py);
    }
    pair_close(&py);
    if (pair_open(&pz, &SPEC_Z)) {
        parity_len(&pz, 1, TOL_BF16, false);
        parity_len(&pz, g_quick ? 130 : 1000, TOL_BF16, false);
    }
    pair_close(&pz);
    if (pair_open(&pw, &SPEC_W)) {
        const int64_t L = g_quick ? 3000 : 100000;
        const double t0 = now_s();
        parity_len(&pw, L, TOL_F32, false);
        printf("(long prompt of %lld tokens on both backends: %.1f s)\n", (long long)L, now_s() - t0);
    }
    pair_close(&pw);
    if (do_bench) bench(false);
    printf("%d of %d checks failed\n", g_failures, g_checks);
    return g_failures ? 1 : 0;
}
