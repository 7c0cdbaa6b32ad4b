/*
 * test_gpu_model.c - the CUDA backend (lmi_cuda_backend, driven through
 * its vtable) against a float64 reference forward on random Mamba-1
 * models: vanilla prefill in one or many chunks, decode steps (the CUDA
 * graph path), LongMamba filters, DeciMamba decimation, the Δ sink, state
 * read/write/reset, several sessions on one model, bf16 storage, TF32,
 * out-of-memory handling, prompts up to 100k tokens; and against the CPU
 * backend when it is built.  Exit status 0 / 1 / 77 (no GPU).
 */
#include "budget_hook.h"
#include "gpu_ref.h"
#include "dev.h"
#include "kernels.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const model_spec SPEC_A = {68, 136, 16, 5, 4, 3, 100, true, true, false, LM_DTYPE_F32, 1};
static const model_spec SPEC_B = {32, 64, 16, 2, 4, 2, 96, false, true, true, LM_DTYPE_F32, 2};
static const model_spec SPEC_C = {40, 80, 8, 3, 3, 3, 75, true, false, false, LM_DTYPE_F32, 3};
static const model_spec SPEC_D = {64, 128, 16, 4, 4, 2, 128, false, true, true, LM_DTYPE_BF16, 4};
static const model_spec SPEC_E = {256, 512, 16, 16, 4, 2, 1000, false, true, false, LM_DTYPE_F32, 5};
/* bf16 with rows not a multiple of 8 elements (scalar paths of decode.cu) */
static const model_spec SPEC_F = {36, 76, 16, 3, 4, 2, 90, true, true, false, LM_DTYPE_BF16, 6};
/* d_inner >= 1024: decode.cu splits x_proj and out_proj rows over 4 warps */
static const model_spec SPEC_G = {64, 1024, 16, 4, 4, 2, 70, true, true, false, LM_DTYPE_F32, 7};
static const model_spec SPEC_H = {96, 1200, 16, 6, 4, 2, 80, false, true, true, LM_DTYPE_BF16, 8};

static bool g_have_deci = true;  /* lmi_deci_select implemented (policy.c) */
static bool g_have_cpu = false;  /* CPU backend implemented */

static struct lm_model *load_model(const model_spec *sp, lm_backend be)
{
    struct lm_model *m = model_random(sp, be);
    lmi_err e = {{0}};
    if (m->vt->model_init) {
        lm_status st = m->vt->model_init(m, &e);
        if (st != LM_OK) {
            printf("FAIL model_init (%s): %s\n", m->vt->name, e.msg);
            exit(1);
        }
    }
    return m;
}

static void unload_model(struct lm_model *m)
{
    if (m->vt->model_free) m->vt->model_free(m);
    model_destroy(m);
}

typedef struct run_opts {
    const lmi_filter *filters;
    const double *deci;
    int64_t min_len, protect;
    bool tf32;
    lmi_delta_sink sink;
    void *sink_ctx;
} run_opts;

static lm_status fwd(struct lm_session *s, const int32_t *tok, int64_t L, int64_t n_out, float *logits,
                     const run_opts *o, lmi_err *e)
{
    lmi_forward f;
    tu_budget_hook bh;
    memset(&f, 0, sizeof f);
    f.tokens = tok;
    f.n_tokens = L;
    f.n_out = n_out;
    f.logits = n_out ? logits : NULL;
    if (o) {
        f.filters = o->filters;
        if (o->deci) f.tokens_hook = tu_budget_hook_init(&bh, o->deci, s->model->dims.n_layer, o->min_len, o->protect);
        f.allow_tf32 = o->tf32;
        f.sink = o->sink;
        f.sink_ctx = o->sink_ctx;
    }
    return s->model->vt->forward(s, &f, e);
}

/* Prefill in chunks of `chunk`, collecting the logits of the last n_out
 * positions (n_out <= L). */
static lm_status prefill_chunked(struct lm_session *s, const int32_t *tok, int64_t L, int64_t chunk,
                                 int64_t n_out, float *logits, const run_opts *o, lmi_err *e)
{
    const int64_t V = s->model->dims.vocab;
    s->chunk_size = chunk; /* full chunks take the backend's prefill-graph path */
    for (int64_t p = 0; p < L; p += chunk) {
        const int64_t n = L - p < chunk ? L - p : chunk;
        const int64_t first_out = L - n_out; /* positions >= first_out are wanted */
        int64_t k = p + n - first_out;
        if (k < 0) k = 0;
        if (k > n) k = n;
        float *dst = logits + (p + n - k - first_out) * V;
        lm_status st = fwd(s, tok + p, n, k, dst, o, e);
        if (st != LM_OK) return st;
    }
    return LM_OK;
}

static double state_err(struct lm_session *s, const ref_state *rs)
{
    const lmi_dims *d = &s->model->dims;
    const size_t nc = (size_t)(d->n_layer * d->d_inner * (d->d_conv - 1));
    const size_t ns = (size_t)(d->n_layer * d->d_inner * d->d_state);
    float *c = malloc(nc * sizeof(float) + 4), *h = malloc(ns * sizeof(float));
    lmi_err e = {{0}};
    if (s->model->vt->state_read(s, (float *const[]){c, h}, &e) != LM_OK) {
        printf("state_read: %s\n", e.msg);
        free(c);
        free(h);
        return INFINITY;
    }
    const double ec = tu_max_rel_err(c, rs->conv, nc), eh = tu_max_rel_err(h, rs->ssm, ns);
    free(c);
    free(h);
    return ec > eh ? ec : eh;
}

/* ---- LongMamba thresholds chosen from the reference Δ -------------------- */

typedef struct filt_ctx {
    int64_t n_layer, E;
    uint8_t *global;  /* [n_layer][E] */
    float *tau;       /* [n_layer][E] */
    lmi_filter *filters;
    tu_rng r;
    double **delta;   /* optional copies of Δ per layer (sink test) */
    int64_t *delta_L;
} filt_ctx;

static int cmp_dbl(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Threshold in the widest gap among the middle half of the channel's Δ
 * values, so that the fp32 Δ on the GPU lands on the same side. */
static void filt_hook(void *ctx, int64_t l, const double *delta, int64_t L, int64_t E)
{
    filt_ctx *c = ctx;
    if (c->delta) {
        c->delta[l] = malloc((size_t)(L * E) * sizeof(double));
        memcpy(c->delta[l], delta, (size_t)(L * E) * sizeof(double));
        c->delta_L[l] = L;
    }
    if (!c->global) return;
    double *v = malloc((size_t)L * sizeof(double));
    for (int64_t e = 0; e < E; e++) {
        c->global[l * E + e] = tu_rng_unif(&c->r) < 0.5;
        for (int64_t t = 0; t < L; t++) v[t] = delta[t * E + e];
        qsort(v, (size_t)L, sizeof(double), cmp_dbl);
        int64_t lo = L / 4, hi = 3 * L / 4, best = lo;
        double g = -1;
        for (int64_t i = lo; i <= hi && i + 1 < L; i++)
            if (v[i + 1] - v[i] > g) { g = v[i + 1] - v[i]; best = i; }
        c->tau[l * E + e] = L > 1 ? (float)(0.5 * (v[best] + v[best + 1])) : (float)(0.5 * v[0]);
    }
    free(v);
}

static filt_ctx *filt_new(const struct lm_model *m, uint64_t seed, bool filters, bool keep_delta)
{
    filt_ctx *c = calloc(1, sizeof *c);
    c->n_layer = m->dims.n_layer;
    c->E = m->dims.d_inner;
    c->r.state = seed;
    if (filters) {
        c->global = calloc((size_t)(c->n_layer * c->E), 1);
        c->tau = calloc((size_t)(c->n_layer * c->E), sizeof(float));
        c->filters = calloc((size_t)c->n_layer, sizeof(lmi_filter));
        for (int64_t l = 0; l < c->n_layer; l++) {
            /* the last layer stays unfiltered: a NULL global must mean "off" */
            if (l == c->n_layer - 1 && c->n_layer > 1) continue;
            c->filters[l].global = c->global + l * c->E;
            c->filters[l].tau = c->tau + l * c->E;
        }
    }
    if (keep_delta) {
        c->delta = calloc((size_t)c->n_layer, sizeof(double *));
        c->delta_L = calloc((size_t)c->n_layer, sizeof(int64_t));
    }
    return c;
}

static void filt_free(filt_ctx *c)
{
    if (!c) return;
    if (c->delta)
        for (int64_t l = 0; l < c->n_layer; l++) free(c->delta[l]);
    free(c->delta);
    free(c->delta_L);
    free(c->global);
    free(c->tau);
    free(c->filters);
    free(c);
}

/* ---- the scenario runner ------------------------------------------------- */

typedef struct scenario {
    const char *name;
    const model_spec *spec;
    int64_t L, chunk, n_out, n_decode;
    bool filter;
    int deci;          /* 0 none, 1 middle layer, 2 layers 0 and last with beta 0.5 */
    bool tf32;
    double tol;
    bool unfused;      /* decode steps through the prefill kernels, not decode.cu */
} scenario;

/* Runs one scenario on backend model gm (CUDA or CPU); the reference
 * decides thresholds.  out_logits (optional) receives all compared logits
 * for a cross-backend comparison. */
static double run_scenario(const scenario *sc, struct lm_model *gm, uint64_t seed, float **out_logits,
                           size_t *out_n, bool quiet)
{
    const int64_t V = gm->dims.vocab, nl = gm->dims.n_layer;
    tu_rng r = {seed};
    int32_t *tok = tu_rng_tokens(&r, sc->L + sc->n_decode, V);
    filt_ctx *fc = filt_new(gm, seed + 1, sc->filter, false);
    double deci[16];
    for (int64_t l = 0; l < nl && l < 16; l++) deci[l] = -1;
    int64_t protect = 1, min_len = 4;
    if (sc->deci == 1) deci[nl / 2] = (double)sc->L / 3.0 + 0.5;
    if (sc->deci == 2) {
        deci[0] = (double)sc->L * 0.6;
        deci[nl - 1] = (double)sc->L * 0.6 * 0.5;
        protect = sc->n_out;
    }
    double gap = INFINITY;
    ref_opts ro = {sc->filter ? fc->filters : NULL, sc->deci ? deci : NULL, min_len, protect,
                   sc->filter ? filt_hook : NULL, fc, &gap};
    ref_state *rs = ref_state_new(gm);
    const int64_t n_cmp = sc->n_out + sc->n_decode;
    double *ref = malloc((size_t)(n_cmp * V) * sizeof(double));
    float *got = malloc((size_t)(n_cmp * V) * sizeof(float));
    for (size_t i = 0; i < (size_t)(n_cmp * V); i++) got[i] = NAN;
    const int64_t left = ref_forward(gm, rs, tok, sc->L, &ro, sc->n_out, ref);
    if (left < 0) {
        printf("FAIL %s: reference failed\n", sc->name);
        g_failures++;
        return INFINITY;
    }
    if (sc->deci && gap < 1e-4)
        printf("note %s: closest DeciMamba score gap %.1e (selection may differ)\n", sc->name, gap);
    lmi_err e = {{0}};
    struct lm_session *s = session_new(gm, &e);
    if (!s) {
        check(false, "%s: session_init: %s", sc->name, e.msg);
        return INFINITY;
    }
    if (sc->unfused && gm->backend == LM_BACKEND_CUDA) lmc_dev_fused_decode(s, 0);
    run_opts o = {sc->filter ? fc->filters : NULL, sc->deci ? deci : NULL, min_len, protect, sc->tf32, NULL, NULL};
    lm_status st;
    if (sc->deci)
        st = fwd(s, tok, sc->L, sc->n_out, got, &o, &e); /* DeciMamba: one chunk */
    else
        st = prefill_chunked(s, tok, sc->L, sc->chunk, sc->n_out, got, &o, &e);
    double err = INFINITY;
    if (st == LM_ERR_UNSUPPORTED && sc->deci) {
        printf("SKIP %s: %s\n", sc->name, e.msg);
        g_have_deci = false;
        goto done;
    }
    if (st != LM_OK) {
        check(false, "%s: prefill failed: %s", sc->name, e.msg);
        goto done;
    }
    /* decode steps (vanilla), 1 token each */
    run_opts od = {NULL, NULL, 0, 1, sc->tf32, NULL, NULL};
    for (int64_t i = 0; i < sc->n_decode; i++) {
        const int32_t t = tok[sc->L + i];
        ref_forward(gm, rs, &t, 1, NULL, 1, ref + (sc->n_out + i) * V);
        st = fwd(s, &t, 1, 1, got + (sc->n_out + i) * V, &od, &e);
        if (st != LM_OK) {
            check(false, "%s: decode step %lld failed: %s", sc->name, (long long)i, e.msg);
            goto done;
        }
    }
    err = tu_max_rel_err(got, ref, (size_t)(n_cmp * V));
    const double serr = state_err(s, rs);
    if (!quiet)
        check(err <= sc->tol && serr <= (sc->tol > 1e-4 ? 3 * sc->tol : 1e-4),
              "%s [%s]: L=%lld chunk=%lld: %lld prefill + %lld decode logits, max err %.2e of max|logit| (tol %.0e); state err %.2e",
              sc->name, gm->vt->name, (long long)sc->L, (long long)sc->chunk, (long long)sc->n_out,
              (long long)sc->n_decode, err, sc->tol, serr);
    if (out_logits) {
        *out_logits = got;
        *out_n = (size_t)(n_cmp * V);
        got = NULL;
    }
done:
    session_delete(s);
    free(got);
    free(ref);
    free(tok);
    ref_state_free(rs);
    filt_free(fc);
    return err;
}

/* ---- individual tests --------------------------------------------------- */

static lm_status sink_fn(void *ctx, int64_t layer, const float *delta, int64_t n_tokens, int64_t n_channels,
                         lmi_err *e)
{
    (void)e;
    filt_ctx *c = ctx;
    const double *ref = c->delta[layer];
    const double err = ref && c->delta_L[layer] == n_tokens
                           ? tu_max_rel_err(delta, ref, (size_t)(n_tokens * n_channels))
                           : INFINITY;
    check(err <= 2e-5, "delta sink layer %lld: %lld x %lld, err %.2e (tol 2e-5)", (long long)layer,
          (long long)n_tokens, (long long)n_channels, err);
    return LM_OK;
}

static void test_sink(struct lm_model *m)
{
    tu_rng r = {77};
    const int64_t L = 150;
    int32_t *tok = tu_rng_tokens(&r, L, m->dims.vocab);
    filt_ctx *fc = filt_new(m, 5, false, true);
    ref_opts ro = {NULL, NULL, 0, 0, filt_hook, fc, NULL};
    ref_state *rs = ref_state_new(m);
    ref_forward(m, rs, tok, L, &ro, 0, NULL);
    lmi_err e = {{0}};
    struct lm_session *s = session_new(m, &e);
    run_opts o = {NULL, NULL, 0, 1, false, sink_fn, fc};
    lm_status st = fwd(s, tok, L, 0, NULL, &o, &e);
    check(st == LM_OK, "delta sink forward: %s", st == LM_OK ? "ok" : e.msg);
    session_delete(s);
    ref_state_free(rs);
    filt_free(fc);
    free(tok);
}

/* Sessions are independent; reset and state write reproduce results. */
static void test_sessions(struct lm_model *m)
{
    const int64_t V = m->dims.vocab, L = 90;
    tu_rng r = {321};
    int32_t *t1 = tu_rng_tokens(&r, L, V), *t2 = tu_rng_tokens(&r, L, V);
    lmi_err e = {{0}};
    struct lm_session *a = session_new(m, &e), *b = session_new(m, &e), *c = session_new(m, &e);
    float *la = malloc((size_t)V * 4), *lb = malloc((size_t)V * 4), *lc = malloc((size_t)V * 4);
    float *la0 = malloc((size_t)V * 4);
    ref_state *ra = ref_state_new(m), *rb = ref_state_new(m);
    double *refa = malloc((size_t)V * 8), *refb = malloc((size_t)V * 8);
    /* interleave two sessions token by token after their prefills */
    fwd(a, t1, L - 10, 0, NULL, NULL, &e);
    fwd(b, t2, L - 10, 0, NULL, NULL, &e);
    ref_forward(m, ra, t1, L - 10, NULL, 0, NULL);
    ref_forward(m, rb, t2, L - 10, NULL, 0, NULL);
    double worst = 0;
    for (int64_t i = L - 10; i < L; i++) {
        fwd(a, t1 + i, 1, 1, la, NULL, &e);
        fwd(b, t2 + i, 1, 1, lb, NULL, &e);
        ref_forward(m, ra, t1 + i, 1, NULL, 1, refa);
        ref_forward(m, rb, t2 + i, 1, NULL, 1, refb);
        const double ea = tu_max_rel_err(la, refa, (size_t)V), eb = tu_max_rel_err(lb, refb, (size_t)V);
        if (ea > worst) worst = ea;
        if (eb > worst) worst = eb;
    }
    check(worst <= TOL_F32, "two interleaved sessions on one model: max err %.2e (tol %.0e)", worst, TOL_F32);
    memcpy(la0, la, (size_t)V * 4);
    /* reset and replay: same logits */
    m->vt->session_reset(a);
    fwd(a, t1, L - 1, 0, NULL, NULL, &e);
    fwd(a, t1 + L - 1, 1, 1, la, NULL, &e);
    check(tu_max_rel_err_f(la, la0, (size_t)V) <= 1e-6, "reset then replay reproduces the logits (err %.2e)",
          tu_max_rel_err_f(la, la0, (size_t)V));
    /* fork: copy b's state into c, step both with the same token */
    const size_t nc = (size_t)(m->dims.n_layer * m->dims.d_inner * (m->dims.d_conv - 1));
    const size_t ns = (size_t)(m->dims.n_layer * m->dims.d_inner * m->dims.d_state);
    float *cs = malloc(nc * 4 + 4), *hs = malloc(ns * 4);
    lm_status st = m->vt->state_read(b, (float *const[]){cs, hs}, &e);
    if (st == LM_OK) st = m->vt->state_write(c, (const float *const[]){cs, hs}, &e);
    const int32_t tk = 5;
    fwd(b, &tk, 1, 1, lb, NULL, &e);
    fwd(c, &tk, 1, 1, lc, NULL, &e);
    check(st == LM_OK && memcmp(lb, lc, (size_t)V * 4) == 0, "state read/write forks a session bit-exactly");
    session_delete(a);
    session_delete(b);
    session_delete(c);
    ref_state_free(ra);
    ref_state_free(rb);
    free(t1); free(t2); free(la); free(lb); free(lc); free(la0); free(refa); free(refb); free(cs); free(hs);
}

static void test_oom(void)
{
    /* (a) weights that cannot fit: model_init fails cleanly */
    static float dummy[16];
    struct lm_model *m = calloc(1, sizeof *m);
    const lmi_weight dw = lmi_weight_of_f32(dummy, 1, 1), none = {0};
    lmi_layer layer;
    memset(&layer, 0, sizeof layer);
    layer.kind = LMI_MIXER_MAMBA1;
    layer.norm_w = dw;
    layer.mamba = (lmi_mamba_weights){.in_w = dw, .in_b = none, .conv_w = dw, .conv_b = dw, .x_w = dw, .dt_w = dw,
                                      .dt_b = dw, .A = dw, .D = dw, .gnorm_w = none, .out_w = dw, .out_b = none};
    m->dims.arch = LM_ARCH_MAMBA1;
    m->dims.d_model = 1 << 16;
    m->dims.d_inner = 1 << 17;
    m->dims.d_state = 16;
    m->dims.dt_rank = 64;
    m->dims.d_conv = 4;
    m->dims.n_layer = 1;
    m->dims.vocab = 1 << 20;
    m->dims.eps = 1e-5;
    m->dtype = LM_DTYPE_F32;
    m->embed = m->lm_head = m->norm_f = lmi_weight_of_f32(dummy, 1, 1);
    m->layers = &layer;
    m->backend = LM_BACKEND_CUDA;
    m->vt = &lmi_cuda_backend;
    lmi_err e = {{0}};
    lm_status st = m->vt->model_init(m, &e);
    check(st == LM_ERR_NO_MEMORY && m->bk == NULL, "model_init of a 300 GB model: status %d (want %d): %s", st,
          LM_ERR_NO_MEMORY, e.msg);
    m->vt->model_free(m);
    free(m);

    /* (b) a chunk whose activations cannot fit: the session stays usable */
    struct lm_model *sm = load_model(&SPEC_A, LM_BACKEND_CUDA);
    struct lm_session *s = session_new(sm, &e);
    const int64_t V = sm->dims.vocab, L = 40;
    tu_rng r = {9};
    int32_t *tok = tu_rng_tokens(&r, L, V);
    float *l1 = malloc((size_t)V * 4), *l2 = malloc((size_t)V * 4);
    fwd(s, tok, L, 1, l1, NULL, &e);
    sm->vt->session_reset(s);
    const int64_t huge = 60000000; /* ~200 GB of activations */
    int32_t *big = calloc((size_t)huge, sizeof(int32_t));
    st = big ? fwd(s, big, huge, 0, NULL, NULL, &e) : LM_ERR_NO_MEMORY;
    check(st == LM_ERR_NO_MEMORY, "forward of %lld tokens: status %d (want %d): %s", (long long)huge, st,
          LM_ERR_NO_MEMORY, e.msg);
    free(big);
    st = fwd(s, tok, L, 1, l2, NULL, &e);
    check(st == LM_OK && tu_max_rel_err_f(l2, l1, (size_t)V) <= 1e-6,
          "after out-of-memory the session still runs and matches (err %.2e)", tu_max_rel_err_f(l2, l1, (size_t)V));
    session_delete(s);
    unload_model(sm);
    free(tok);
    free(l1);
    free(l2);
}

static void test_bad_args(struct lm_model *m)
{
    lmi_err e = {{0}};
    struct lm_session *s = session_new(m, &e);
    const int32_t tok[2] = {1, 2};
    lm_status st = fwd(s, tok, 0, 0, NULL, NULL, &e);
    check(st == LM_ERR_INVALID_ARGUMENT, "forward of 0 tokens is rejected (%d)", st);
    st = fwd(s, tok, 2, 3, NULL, NULL, &e);
    check(st == LM_ERR_INVALID_ARGUMENT, "n_out > n_tokens is rejected (%d)", st);
    session_delete(s);
}

int main(int argc, char **argv)
{
    bool quick = false, cpu_only = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = true;        /* under compute-sanitizer */
        if (!strcmp(argv[i], "--cpu-only")) cpu_only = true;  /* the harness on the CPU backend, no GPU */
    }
    int n = 0;
    if (!cpu_only && (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    const lm_backend main_be = cpu_only ? LM_BACKEND_CPU : LM_BACKEND_CUDA;
    g_have_cpu = lmi_cpu_backend.forward != NULL && lmi_cpu_backend.session_init != NULL;
    if (!g_have_cpu) printf("note: CPU backend not built yet: CUDA-vs-CPU parity skipped\n");

    const scenario sc[] = {
        /* name, spec, L, chunk, n_out, n_decode, filter, deci, tf32, tol, unfused */
        {"vanilla L=1", &SPEC_A, 1, 512, 1, 4, false, 0, false, TOL_F32, false},
        {"vanilla L=7", &SPEC_B, 7, 512, 7, 4, false, 0, false, TOL_F32, false},
        {"vanilla odd sizes", &SPEC_C, 300, 512, 300, 6, false, 0, false, TOL_F32, false},
        {"vanilla chunked 37", &SPEC_A, 300, 37, 64, 6, false, 0, false, TOL_F32, false},
        {"vanilla chunked 1", &SPEC_B, 40, 1, 40, 2, false, 0, false, TOL_F32, false},
        {"vanilla wide", &SPEC_E, 1500, 512, 8, 4, false, 0, false, TOL_F32, false},
        {"vanilla tf32", &SPEC_E, 700, 256, 4, 4, false, 0, true, TOL_TF32, false},
        {"vanilla bf16", &SPEC_D, 600, 512, 32, 6, false, 0, false, TOL_BF16, false},
        {"vanilla bf16 odd sizes", &SPEC_F, 333, 100, 20, 6, false, 0, false, TOL_BF16, false},
        {"decode split rows", &SPEC_G, 64, 512, 4, 8, false, 0, false, TOL_F32, false},
        {"decode split rows bf16", &SPEC_H, 64, 512, 4, 8, false, 0, false, TOL_BF16, false},
        {"unfused decode", &SPEC_A, 50, 512, 4, 8, false, 0, false, TOL_F32, true},
        {"unfused decode bf16", &SPEC_F, 50, 512, 4, 8, false, 0, false, TOL_BF16, true},
        {"longmamba", &SPEC_A, 800, 800, 16, 4, true, 0, false, TOL_F32, false},
        {"longmamba chunked", &SPEC_C, 900, 128, 16, 4, true, 0, false, TOL_F32, false},
        {"longmamba bf16", &SPEC_D, 700, 256, 16, 4, true, 0, false, TOL_BF16, false},
        {"decimamba middle layer", &SPEC_A, 600, 0, 1, 4, false, 1, false, TOL_F32, false},
        {"decimamba two layers", &SPEC_C, 500, 0, 3, 4, false, 2, false, TOL_F32, false},
        {"decimamba bf16", &SPEC_D, 400, 0, 1, 3, false, 1, false, TOL_BF16, false},
        {"long 100k chunked 8192", &SPEC_B, 100000, 8192, 4, 3, false, 0, false, TOL_F32, false},
        {"long 100k one chunk", &SPEC_B, 100000, 100000, 4, 3, false, 0, false, TOL_F32, false},
        {"long 100k longmamba", &SPEC_B, 100000, 4096, 4, 2, true, 0, false, TOL_F32, false},
    };
    const size_t n_sc = sizeof sc / sizeof sc[0];
    enum { NM = 8 };
    struct lm_model *models[NM] = {0};
    const model_spec *specs[NM] = {&SPEC_A, &SPEC_B, &SPEC_C, &SPEC_D, &SPEC_E, &SPEC_F, &SPEC_G, &SPEC_H};
    for (int i = 0; i < NM; i++) models[i] = load_model(specs[i], main_be);
    for (size_t i = 0; i < n_sc; i++) {
        if (quick && sc[i].L > 2000) continue;
        struct lm_model *gm = NULL;
        for (int k = 0; k < NM; k++)
            if (specs[k] == sc[i].spec) gm = models[k];
        float *g_logits = NULL;
        size_t g_n = 0;
        run_scenario(&sc[i], gm, 4000 + i, &g_logits, &g_n, false);
        if (g_have_cpu && !cpu_only && g_logits && sc[i].L <= 2000) {
            /* the same scenario on the CPU backend; compare the two backends */
            struct lm_model *cm = load_model(sc[i].spec, LM_BACKEND_CPU);
            float *c_logits = NULL;
            size_t c_n = 0;
            run_scenario(&sc[i], cm, 4000 + i, &c_logits, &c_n, true);
            if (c_logits && c_n == g_n) {
                const double err = tu_max_rel_err_f(g_logits, c_logits, g_n);
                const double tol = sc[i].spec->dtype == LM_DTYPE_F32 && !sc[i].tf32 ? 2 * TOL_F32 : sc[i].tol;
                check(err <= tol, "%s: CUDA vs CPU backend: max err %.2e (tol %.0e)", sc[i].name, err, tol);
            }
            free(c_logits);
            unload_model(cm);
        }
        free(g_logits);
    }
    test_sink(models[0]);
    test_sessions(models[1]);
    test_bad_args(models[1]);
    if (!quick && !cpu_only) test_oom();
    for (int i = 0; i < NM; i++) unload_model(models[i]);
    if (!g_have_deci) printf("note: DeciMamba scenarios skipped (lmi_deci_select not implemented)\n");
    printf("%d of %d checks failed\n", g_failures, g_checks);
    return g_failures ? 1 : 0;
}
