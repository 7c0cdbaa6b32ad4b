/*
 * test_gpu_batch.c - the CUDA backend's batched decode step
 * (vt->forward_batch, behind lm_session_decode_batch) against the float64
 * reference forward on random Mamba-1 models: sessions at different
 * positions stepped together, batch sizes 1 to 40 (buffer growth, graph
 * re-capture), steps without logits, mixing with single-session decode,
 * fp32 and bf16 storage, odd sizes.  Mamba-2: every batch row against the
 * same session's own one-token decode (a twin session stepped alone), the
 * same batch-size sequence (growth, re-capture, a different first session,
 * single steps in between), fp32 and bf16.  Exit status 0 / 1 / 77 (no GPU).
 */
#include "gpu_ref.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const model_spec SPEC_F32 = {68, 136, 16, 5, 4, 3, 100, true, true, false, LM_DTYPE_F32, 11};
static const model_spec SPEC_ODD = {40, 80, 8, 3, 3, 3, 75, true, false, false, LM_DTYPE_F32, 12};
static const model_spec SPEC_BF16 = {64, 128, 16, 4, 4, 2, 128, false, true, true, LM_DTYPE_BF16, 13};
static const model_spec SPEC_BF16_ODD = {36, 76, 16, 3, 4, 2, 90, true, true, false, LM_DTYPE_BF16, 14};
static const model_spec SPEC_WIDE = {64, 1024, 16, 4, 4, 2, 70, true, true, false, LM_DTYPE_F32, 15};

/* Mamba-2: d, H, P, G, N, K, n_layer, V, bias, conv bias, tied, dtype, seed */
static const m2_model_spec M2_F32 = {48, 4, 16, 2, 24, 4, 2, 90, true, true, false, LM_DTYPE_F32, 21};
static const m2_model_spec M2_ODD = {45, 6, 15, 3, 72, 3, 3, 97, false, false, true, LM_DTYPE_F32, 22};
static const m2_model_spec M2_BF16 = {64, 4, 32, 1, 64, 4, 2, 128, true, true, false, LM_DTYPE_BF16, 23};

static struct lm_model *init_cuda(struct lm_model *m)
{
    lmi_err e = {{0}};
    if (m->vt->model_init(m, &e) != LM_OK) {
        printf("FAIL model_init: %s\n", e.msg);
        exit(1);
    }
    return m;
}

static struct lm_model *load_cuda(const model_spec *sp) { return init_cuda(model_random(sp, LM_BACKEND_CUDA)); }

static lm_status step1(struct lm_session *s, int32_t tok, float *logits, lmi_err *e)
{
    lmi_forward f;
    memset(&f, 0, sizeof f);
    f.tokens = &tok;
    f.n_tokens = 1;
    f.n_out = logits ? 1 : 0;
    f.logits = logits;
    return s->model->vt->forward(s, &f, e);
}

static double state_err(struct lm_session *s, const ref_state *rs)
{
    const lmi_dims *d = &s->model->dims;
    const size_t nc = (size_t)(d->n_layer * d->d_inner * (d->d_conv - 1));
    const size_t ns = (size_t)(d->n_layer * d->d_inner * d->d_state);
    float *c = malloc(nc * sizeof(float) + 4), *h = malloc(ns * sizeof(float));
    lmi_err e = {{0}};
    double err = INFINITY;
    if (s->model->vt->state_read(s, (float *const[]){c, h}, &e) == LM_OK) {
        const double ec = tu_max_rel_err(c, rs->conv, nc), eh = tu_max_rel_err(h, rs->ssm, ns);
        err = ec > eh ? ec : eh;
    }
    free(c);
    free(h);
    return err;
}

/* n sessions with prompts of different lengths, then `steps` batched
 * steps (every third one without logits), each row against its own
 * float64 reference. */
static void run_batch(const char *name, const model_spec *sp, int n, int steps, double tol)
{
    struct lm_model *m = load_cuda(sp);
    const int64_t V = m->dims.vocab;
    tu_rng r = {1000 + (uint64_t)n};
    lmi_err e = {{0}};
    struct lm_session **ss = calloc((size_t)n, sizeof *ss);
    ref_state **rs = calloc((size_t)n, sizeof *rs);
    int32_t *tok = malloc((size_t)n * sizeof(int32_t)), prompt[64];
    float *lg = malloc((size_t)n * (size_t)V * sizeof(float));
    double *ref = malloc((size_t)V * sizeof(double));
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        ss[i] = session_new(m, &e);
        rs[i] = ref_state_new(m);
        const int64_t L = 1 + (i * 13) % 60;
        for (int64_t t = 0; t < L; t++) prompt[t] = (int32_t)(tu_rng_unif(&r) * (double)V);
        lmi_forward f;
        memset(&f, 0, sizeof f);
        f.tokens = prompt;
        f.n_tokens = L;
        ok = ss[i] && m->vt->forward(ss[i], &f, &e) == LM_OK;
        ref_forward(m, rs[i], prompt, L, NULL, 0, NULL);
    }
    double worst = 0.0;
    for (int s = 0; s < steps && ok; s++) {
        const bool want = s % 3 != 2;
        for (int i = 0; i < n; i++) tok[i] = (int32_t)(tu_rng_unif(&r) * (double)V);
        const lm_status st = m->vt->forward_batch(ss, (size_t)n, tok, want ? lg : NULL, false, &e);
        if (st != LM_OK) {
            check(false, "%s: forward_batch failed: %s", name, e.msg);
            ok = false;
            break;
        }
        for (int i = 0; i < n; i++) {
            ref_forward(m, rs[i], &tok[i], 1, NULL, want ? 1 : 0, want ? ref : NULL);
            if (!want) continue;
            const double err = tu_max_rel_err(lg + (size_t)i * (size_t)V, ref, (size_t)V);
            if (err > worst) worst = err;
        }
    }
    if (ok) {
        check(worst <= tol, "%s: %d sessions, %d steps: max logit err %.2e (tol %.0e)", name, n, steps, worst, tol);
        double sw = 0.0;
        for (int i = 0; i < n; i++) {
            const double se = state_err(ss[i], rs[i]);
            if (se > sw) sw = se;
        }
        check(sw <= 2 * tol, "%s: %d sessions: states after the steps, max err %.2e (tol %.0e)", name, n, sw, 2 * tol);
    }
    for (int i = 0; i < n; i++) {
        if (ss[i]) session_delete(ss[i]);
        if (rs[i]) ref_state_free(rs[i]);
    }
    free(ss); free(rs); free(tok); free(lg); free(ref);
    m->vt->model_free(m);
    model_destroy(m);
}

/* One set of sessions through batch sizes 3, 16, 40, 3 (growth, graph
 * re-capture), a different first session, and single-session decode steps
 * in between: every row stays on its reference. */
static void test_mixing(const model_spec *sp, double tol)
{
    enum { NS = 40 };
    struct lm_model *m = load_cuda(sp);
    const int64_t V = m->dims.vocab;
    tu_rng r = {77};
    lmi_err e = {{0}};
    struct lm_session *ss[NS];
    ref_state *rs[NS];
    for (int i = 0; i < NS; i++) {
        ss[i] = session_new(m, &e);
        rs[i] = ref_state_new(m);
    }
    float *lg = malloc((size_t)NS * (size_t)V * sizeof(float));
    double *ref = malloc((size_t)V * sizeof(double));
    int32_t tok[NS];
    const int sizes[] = {3, 16, 40, 3, 1, 16};
    const int first[] = {0, 0, 0, 5, 9, 20};
    double worst = 0.0;
    bool ok = true;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0] && ok; k++) {
        const int n = sizes[k], f0 = first[k];
        struct lm_session *bat[NS];
        for (int j = 0; j < n; j++) bat[j] = ss[(f0 + j) % NS];
        for (int rep = 0; rep < 2 && ok; rep++) {
            for (int j = 0; j < n; j++) tok[j] = (int32_t)(tu_rng_unif(&r) * (double)V);
            if (m->vt->forward_batch(bat, (size_t)n, tok, lg, false, &e) != LM_OK) {
                check(false, "mixing: forward_batch(n=%d) failed: %s", n, e.msg);
                ok = false;
                break;
            }
            for (int j = 0; j < n; j++) {
                ref_forward(m, rs[(f0 + j) % NS], &tok[j], 1, NULL, 1, ref);
                const double err = tu_max_rel_err(lg + (size_t)j * (size_t)V, ref, (size_t)V);
                if (err > worst) worst = err;
            }
        }
        /* a single-session step on one of them (its own graph) */
        const int i = (f0 + 1) % NS;
        const int32_t t1 = (int32_t)(tu_rng_unif(&r) * (double)V);
        if (ok && step1(ss[i], t1, lg, &e) != LM_OK) {
            check(false, "mixing: single step failed: %s", e.msg);
            ok = false;
        }
        if (ok) {
            ref_forward(m, rs[i], &t1, 1, NULL, 1, ref);
            const double err = tu_max_rel_err(lg, ref, (size_t)V);
            if (err > worst) worst = err;
        }
    }
    if (ok) check(worst <= tol, "mixing batch sizes 3/16/40/3/1/16 and single steps: max err %.2e (tol %.0e)", worst, tol);
    for (int i = 0; i < NS; i++) {
        session_delete(ss[i]);
        ref_state_free(rs[i]);
    }
    free(lg);
    free(ref);
    m->vt->model_free(m);
    model_destroy(m);
}

/* Mamba-2: NS sessions and their twins with the same prompts; the sessions
 * step in batches of changing size (growth, re-capture, another first
 * session; every third step without logits), each twin alone through the
 * one-token forward; rows and finally the states must agree. */
static void run_m2(const char *name, const m2_model_spec *sp, double tol, bool quick)
{
    enum { NS = 40 };
    struct lm_model *m = init_cuda(model_random_m2(sp, LM_BACKEND_CUDA));
    const int64_t V = m->dims.vocab;
    tu_rng r = {500 + sp->seed};
    lmi_err e = {{0}};
    struct lm_session *ss[NS], *tw[NS];
    int32_t tok[NS], prompt[64];
    float *lg = malloc((size_t)NS * (size_t)V * sizeof(float)), *one = malloc((size_t)V * sizeof(float));
    bool ok = true;
    for (int i = 0; i < NS; i++) {
        ss[i] = session_new(m, &e);
        tw[i] = session_new(m, &e);
        ok = ok && ss[i] && tw[i];
        const int64_t L = 1 + (i * 13) % 60;
        for (int64_t t = 0; t < L; t++) prompt[t] = (int32_t)(tu_rng_unif(&r) * (double)V);
        lmi_forward f;
        memset(&f, 0, sizeof f);
        f.tokens = prompt;
        f.n_tokens = L;
        ok = ok && m->vt->forward(ss[i], &f, &e) == LM_OK && m->vt->forward(tw[i], &f, &e) == LM_OK;
    }
    if (!ok) check(false, "%s: sessions / prompts failed: %s", name, e.msg);
    const int sizes[] = {1, 5, 16, 40, 3, 16};
    const int first[] = {0, 0, 0, 0, 5, 20};
    double worst = 0.0;
    int step = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0] && ok; k++) {
        const int n = sizes[k], f0 = first[k];
        if (quick && n > 16) continue;
        struct lm_session *bat[NS];
        for (int j = 0; j < n; j++) bat[j] = ss[(f0 + j) % NS];
        for (int rep = 0; rep < 3 && ok; rep++, step++) {
            const bool want = step % 3 != 2;
            for (int j = 0; j < n; j++) tok[j] = (int32_t)(tu_rng_unif(&r) * (double)V);
            if (m->vt->forward_batch(bat, (size_t)n, tok, want ? lg : NULL, false, &e) != LM_OK) {
                check(false, "%s: forward_batch(n=%d) failed: %s", name, n, e.msg);
                ok = false;
                break;
            }
            for (int j = 0; j < n && ok; j++) {
                ok = step1(tw[(f0 + j) % NS], tok[j], want ? one : NULL, &e) == LM_OK;
                if (!ok) check(false, "%s: twin step failed: %s", name, e.msg);
                const double err = want ? tu_max_rel_err_f(lg + (size_t)j * (size_t)V, one, (size_t)V) : 0.0;
                if (err > worst) worst = err;
            }
        }
        /* a single-session step on one of them and its twin (their own graphs) */
        const int i = (f0 + 1) % NS;
        const int32_t t1 = (int32_t)(tu_rng_unif(&r) * (double)V);
        if (ok && (step1(ss[i], t1, lg, &e) != LM_OK || step1(tw[i], t1, one, &e) != LM_OK)) {
            check(false, "%s: single step failed: %s", name, e.msg);
            ok = false;
        }
        if (ok) worst = fmax(worst, tu_max_rel_err_f(lg, one, (size_t)V));
    }
    if (ok) {
        check(worst <= tol, "%s: batch sizes 1/5/16/%s3/16 and single steps = each session's own decode: max err %.2e (tol %.0e)",
              name, quick ? "" : "40/", worst, tol);
        const lmi_dims *d = &m->dims;
        const size_t nc = (size_t)(d->n_layer * d->conv_dim * (d->d_conv - 1));
        const size_t nh = (size_t)(d->n_layer * d->d_inner * d->d_state);
        float *c1 = malloc(nc * 4 + 4), *c2 = malloc(nc * 4 + 4), *h1 = malloc(nh * 4), *h2 = malloc(nh * 4);
        double sw = 0.0;
        for (int i = 0; i < NS && ok; i++) {
            ok = m->vt->state_read(ss[i], (float *const[]){c1, h1}, &e) == LM_OK && m->vt->state_read(tw[i], (float *const[]){c2, h2}, &e) == LM_OK;
            if (ok) sw = fmax(sw, fmax(tu_max_rel_err_f(c1, c2, nc), tu_max_rel_err_f(h1, h2, nh)));
        }
        check(ok && sw <= 2 * tol, "%s: states after the steps = the twins', max err %.2e (tol %.0e)", name, sw,
              2 * tol);
        free(c1); free(c2); free(h1); free(h2);
    }
    for (int i = 0; i < NS; i++) {
        if (ss[i]) session_delete(ss[i]);
        if (tw[i]) session_delete(tw[i]);
    }
    free(lg);
    free(one);
    m->vt->model_free(m);
    model_destroy(m);
}

int main(int argc, char **argv)
{
    bool quick = false;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--quick")) quick = true;
    int nd = 0;
    if (cudaGetDeviceCount(&nd) != cudaSuccess || nd == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    if (!lmi_cuda_backend.forward_batch) {
        printf("FAIL: the CUDA backend has no forward_batch\n");
        return 1;
    }
    const int steps = quick ? 4 : 12;
    run_batch("fp32 biases", &SPEC_F32, 1, steps, TOL_F32);
    run_batch("fp32 biases", &SPEC_F32, 5, steps, TOL_F32);
    run_batch("fp32 odd sizes N8 K3", &SPEC_ODD, 7, steps, TOL_F32);
    run_batch("fp32 E1024", &SPEC_WIDE, 16, steps, TOL_F32);
    run_batch("bf16", &SPEC_BF16, 16, steps, TOL_BF16);
    run_batch("bf16 odd sizes", &SPEC_BF16_ODD, 9, steps, TOL_BF16);
    if (!quick) run_batch("fp32 biases, 64 sessions", &SPEC_F32, 64, 6, TOL_F32);
    test_mixing(&SPEC_F32, TOL_F32);
    if (!lmi_cuda_backend.forward_batch) {
        printf("FAIL: the CUDA Mamba-2 backend has no forward_batch\n");
        return 1;
    }
    run_m2("mamba2 fp32 biases", &M2_F32, TOL_F32, quick);
    run_m2("mamba2 fp32 odd sizes N72 K3 G3", &M2_ODD, TOL_F32, quick);
    run_m2("mamba2 bf16", &M2_BF16, TOL_BF16, quick);
    printf("%d of %d checks failed\n", g_failures, g_checks);
    return g_failures ? 1 : 0;
}
