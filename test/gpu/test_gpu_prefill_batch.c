/*
 * test_gpu_prefill_batch.c - lm_session_prefill_batch on the CUDA backend
 * (vt->prefill_batch: the prompts packed into one pass, the varlen conv
 * and scan kernels) against the CPU backend's own lm_session_prefill of
 * each prompt, and against the CUDA backend's: the last-token logits of
 * every prompt, every session's state afterwards, then three decode steps
 * of each session.  Sessions start at different positions.
 *   - every transformers fixture CUDA loads (Mamba-1, Mamba-2; fp32, bf16),
 *     8 prompts of 1 to 100 tokens, one of them in DeciMamba mode (its own
 *     path inside the batch; compared with its CUDA twin only);
 *   - random models (Mamba-1 and Mamba-2, bf16 and fp32): 8 prompts of
 *     {1, 7, 512, 2048, 100, 1, 33, 1000} tokens, in one piece (default
 *     chunk) and in pieces of 1024 tokens (prompts split across pieces).
 * Tolerances relative to max|logit|: fp32 TOL_F32 (1e-5), bf16 TOL_BF16
 * (activations stored in bf16 on the device, fp32 on the CPU).  Exit
 * 0 / 1 / 77 (no GPU).
 */
#include "gpu_ref.h"

#include <cuda_runtime_api.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef LM_TEST_DATA
#error "LM_TEST_DATA must be defined"
#endif

#define NS 8

static lm_session *session(lm_model *m, int64_t chunk)
{
    lm_session_params sp;
    lm_session_params_init(&sp);
    sp.chunk_size = chunk;
    lm_session *s = NULL;
    char err[512];
    if (lm_session_create(m, &sp, &s, err, sizeof err) != LM_OK) {
        printf("FAIL session: %s\n", err);
        exit(1);
    }
    return s;
}

/* The two sessions' states: max |a - b| / max |b|, conv and ssm parts. */
static double state_err(lm_session *a, lm_session *b)
{
    size_t na = 0, nb = 0;
    lm_session_state_size(a, &na);
    lm_session_state_size(b, &nb);
    unsigned char *x = malloc(na), *y = malloc(nb);
    size_t w;
    double err = INFINITY;
    if (na == nb && lm_session_state_save(a, x, na, &w) == LM_OK && lm_session_state_save(b, y, nb, &w) == LM_OK &&
        memcmp(x + 64, y + 64, 8) == 0) /* same position */
        err = tu_max_rel_err_f((const float *)(x + 72), (const float *)(y + 72), (na - 72) / sizeof(float));
    free(x);
    free(y);
    return err;
}

typedef struct errs {
    double vs_cpu, vs_cuda, state_cpu, state_cuda, decode;
} errs;

/* NS CUDA sessions (cm) batched; twins on the CPU model (pm) and on CUDA,
 * each prefilled alone.  hist[i] tokens of history first.  deci: session
 * 2 of all three sets in DeciMamba mode. */
static errs run(lm_model *cm, lm_model *pm, const int64_t *hist, const int64_t *lens, int64_t chunk, bool deci,
                const char *name)
{
    const int64_t V = cm->dims.vocab;
    lm_session *ss[NS], *cpu[NS], *cu1[NS];
    int32_t *tok[NS];
    size_t nt[NS];
    float *rows = malloc(sizeof(float) * NS * (size_t)V), *a = malloc(sizeof(float) * (size_t)V);
    float *b = malloc(sizeof(float) * (size_t)V);
    errs r = {0, 0, 0, 0, 0};
    bool ok = true;
    for (int i = 0; i < NS; i++) {
        ss[i] = session(cm, chunk);
        cu1[i] = session(cm, chunk);
        cpu[i] = session(pm, 0);
        if (deci && i == 2) {
            lm_decimamba_params dp;
            lm_decimamba_params_init(&dp);
            dp.l_base = 20;
            dp.min_len = 4;
            ok = ok && lm_session_set_decimamba(ss[i], &dp) == LM_OK &&
                 lm_session_set_decimamba(cu1[i], &dp) == LM_OK && lm_session_set_decimamba(cpu[i], &dp) == LM_OK;
        }
        if (hist[i] > 0) {
            int32_t *h = tu_tokens(300 + (uint64_t)i, (size_t)hist[i], V);
            ok = ok && lm_session_prefill(ss[i], h, (size_t)hist[i], 0, NULL, 0) == LM_OK &&
                 lm_session_prefill(cu1[i], h, (size_t)hist[i], 0, NULL, 0) == LM_OK &&
                 lm_session_prefill(cpu[i], h, (size_t)hist[i], 0, NULL, 0) == LM_OK;
            free(h);
        }
        tok[i] = tu_tokens(700 + (uint64_t)i, (size_t)lens[i], V);
        nt[i] = (size_t)lens[i];
    }
    if (!ok) check(false, "%s: sessions with history: %s", name, lm_session_last_error(ss[0]));
    for (size_t i = 0; i < NS * (size_t)V; i++) rows[i] = NAN;
    lm_status st = ok ? lm_session_prefill_batch(ss, NS, (const int32_t *const *)tok, nt, rows, NS * (size_t)V)
                      : LM_ERR_BACKEND;
    if (ok && st != LM_OK) check(false, "%s: prefill_batch: %s", name, lm_session_last_error(ss[0]));
    ok = ok && st == LM_OK;
    for (int i = 0; ok && i < NS; i++) {
        ok = lm_session_position(ss[i]) == hist[i] + lens[i] &&
             lm_session_prefill(cpu[i], tok[i], nt[i], 1, a, (size_t)V) == LM_OK &&
             lm_session_prefill(cu1[i], tok[i], nt[i], 1, b, (size_t)V) == LM_OK;
        if (!ok) {
            check(false, "%s: session %d: position or a twin's prefill", name, i);
            break;
        }
        r.vs_cuda = fmax(r.vs_cuda, tu_max_rel_err_f(rows + (size_t)i * (size_t)V, b, (size_t)V));
        r.state_cuda = fmax(r.state_cuda, state_err(ss[i], cu1[i]));
        /* DeciMamba picks tokens by scores that differ in the last bits
         * between the backends: a near tie may pick another token, so its
         * session is compared with its CUDA twin only (the same path) */
        if (deci && i == 2) continue;
        r.vs_cpu = fmax(r.vs_cpu, tu_max_rel_err_f(rows + (size_t)i * (size_t)V, a, (size_t)V));
        r.state_cpu = fmax(r.state_cpu, state_err(ss[i], cpu[i]));
    }
    for (int k = 0; ok && k < 3; k++)
        for (int i = 0; ok && i < NS; i++) {
            if (deci && i == 2) continue;
            const int32_t t = (int32_t)((11 * i + 5 * k + 2) % V);
            ok = lm_session_decode(ss[i], t, rows, (size_t)V) == LM_OK &&
                 lm_session_decode(cpu[i], t, a, (size_t)V) == LM_OK;
            if (ok) r.decode = fmax(r.decode, tu_max_rel_err_f(rows, a, (size_t)V));
            else check(false, "%s: decode after the batch", name);
        }
    if (!ok) r.vs_cpu = INFINITY;
    for (int i = 0; i < NS; i++) {
        lm_session_free(ss[i]);
        lm_session_free(cu1[i]);
        lm_session_free(cpu[i]);
        free(tok[i]);
    }
    free(rows);
    free(a);
    free(b);
    return r;
}

static void report(const char *name, const char *what, errs r, double tol, double tol_state)
{
    check(r.vs_cpu <= tol && r.vs_cuda <= tol && r.decode <= tol,
          "%s %s: last-token logits vs CPU %.2e, vs CUDA alone %.2e; 3 decode steps after vs CPU %.2e (tol %.0e)",
          name, what, r.vs_cpu, r.vs_cuda, r.decode, tol);
    check(r.state_cpu <= tol_state && r.state_cuda <= tol_state,
          "%s %s: states vs CPU %.2e, vs CUDA alone %.2e (tol %.0e)", name, what, r.state_cpu, r.state_cuda,
          tol_state);
}

/* ---- fixtures ---------------------------------------------------------------- */

static void run_fixture(const char *name, int *skipped)
{
    char dir[1024], err[512] = "";
    tu_fixture_dir(dir, sizeof dir, name);
    lm_model *cm = NULL, *pm = NULL;
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CUDA;
    lm_status st = lm_model_load(dir, &mp, &cm, err, sizeof err);
    if (st == LM_ERR_UNSUPPORTED) {
        printf("SKIP %s: %s\n", name, err);
        (*skipped)++;
        return;
    }
    mp.backend = LM_BACKEND_CPU;
    if (st == LM_OK) st = lm_model_load(dir, &mp, &pm, err, sizeof err);
    if (st != LM_OK) {
        check(false, "%s: load: %s", name, err);
        lm_model_free(cm);
        return;
    }
    const bool bf = cm->dtype != LM_DTYPE_F32;
    const int64_t hist[NS] = {0, 5, 30, 33, 1, 0, 12, 64};
    const int64_t lens[NS] = {1, 7, 40, 2, 64, 100, 3, 17};
    report(name, "8 prompts 1..100, one DeciMamba", run(cm, pm, hist, lens, 0, true, name), bf ? TOL_BF16 : TOL_F32,
           bf ? 2 * TOL_BF16 : TOL_STATE);
    lm_model_free(cm);
    lm_model_free(pm);
}

static void fixtures(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/fixtures", LM_TEST_DATA);
    char *names[256];
    const int nn = gpu_fixture_names(path, names, 256);
    if (nn < 0) {
        check(false, "no fixtures at %s", path);
        return;
    }
    int skipped = 0;
    for (int i = 0; i < nn; i++) {
        run_fixture(names[i], &skipped);
        free(names[i]);
    }
    printf("note: %d fixtures skipped (unsupported on CUDA)\n", skipped);
}

/* ---- random models -------------------------------------------------------------- */

static lm_model *init(lm_model *m)
{
    lmi_err e = {{0}};
    if (m->vt->model_init(m, &e) != LM_OK) {
        printf("FAIL model_init: %s\n", e.msg);
        exit(1);
    }
    return m;
}

static void random_pair(const char *name, lm_model *cm, lm_model *pm, bool quick)
{
    const bool bf = cm->dtype != LM_DTYPE_F32;
    const int64_t hist[NS] = {0, 3, 0, 100, 0, 1, 0, 20};
    const int64_t lens[NS] = {1, 7, 512, 2048, 100, 1, 33, 1000};
    const int64_t qlens[NS] = {1, 7, 64, 200, 100, 1, 33, 70};
    const double tol = bf ? TOL_BF16 : TOL_F32, tol_state = bf ? 2 * TOL_BF16 : TOL_STATE;
    report(name, "8 prompts {1..2048}, one piece", run(cm, pm, hist, quick ? qlens : lens, 0, false, name), tol,
           tol_state);
    report(name, "8 prompts {1..2048}, pieces of 1024 (prompts split)",
           run(cm, pm, hist, quick ? qlens : lens, quick ? 64 : 1024, false, name), tol, tol_state);
    cm->vt->model_free(cm);
    pm->vt->model_free(pm);
    model_destroy(cm);
    model_destroy(pm);
}

int main(int argc, char **argv)
{
    const bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0; /* under compute-sanitizer */
    int nd = 0;
    if (cudaGetDeviceCount(&nd) != cudaSuccess || nd == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    if (!lmi_cuda_backend.prefill_batch) {
        printf("FAIL: the CUDA backend has no prefill_batch\n");
        return 1;
    }
    fixtures();
    /* Mamba-1: d, E, N, R, K, n_layer, V, bias, conv bias, tied, dtype, seed */
    const model_spec m1_bf16 = {256, 512, 16, 16, 4, 2, 1000, false, true, true, LM_DTYPE_BF16, 41};
    const model_spec m1_f32 = {68, 136, 16, 5, 4, 2, 300, true, true, false, LM_DTYPE_F32, 42};
    random_pair("mamba1 bf16", init(model_random(&m1_bf16, LM_BACKEND_CUDA)),
                init(model_random(&m1_bf16, LM_BACKEND_CPU)), quick);
    random_pair("mamba1 fp32", init(model_random(&m1_f32, LM_BACKEND_CUDA)),
                init(model_random(&m1_f32, LM_BACKEND_CPU)), quick);
    /* Mamba-2: d, H, P, G, N, K, n_layer, V, bias, conv bias, tied, dtype, seed */
    const m2_model_spec m2_bf16 = {128, 8, 32, 1, 64, 4, 2, 1000, false, true, true, LM_DTYPE_BF16, 43};
    const m2_model_spec m2_f32 = {48, 4, 16, 2, 24, 4, 2, 300, true, true, false, LM_DTYPE_F32, 44};
    random_pair("mamba2 bf16", init(model_random_m2(&m2_bf16, LM_BACKEND_CUDA)),
                init(model_random_m2(&m2_bf16, LM_BACKEND_CPU)), quick);
    random_pair("mamba2 fp32", init(model_random_m2(&m2_f32, LM_BACKEND_CUDA)),
                init(model_random_m2(&m2_f32, LM_BACKEND_CPU)), quick);
    printf("%d of %d checks failed\n", g_failures, g_checks);
    return g_failures ? 1 : 0;
}
