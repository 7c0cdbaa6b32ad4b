/*
 * test_gpu_ext.c - MambaExtend and Mamba Modulation (alone and with
 * LongMamba) on the CUDA backend against the CPU backend, through the
 * public API, on the Mamba-1 and Mamba-2 fixtures (the CPU is checked
 * against the float64 reference by test/test_ext_ref.py):
 *   - a 1000-token prompt in one forward (several scan / SSD chunks) and in
 *     chunks of 256 (the captured chunk graph, whose key must follow the
 *     scales: the scales change between two prompts of one session);
 *   - the last logits and 3 decode steps within TOL_F32 (BF16: TOL_BF16);
 *   - the prefill differs from vanilla; decode is plain (the prefilled state
 *     in a vanilla session decodes to the same logits);
 *   - a one-token prefill is scaled (not the fused decode step);
 *   - a calibration under Modulation scales agrees between the backends.
 * Exit 0 pass, 1 fail, 77 no device.  --cpu runs both sides on the CPU
 * (a check of the test itself on a machine without a GPU).
 */
#include "gpu_ref.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef LM_TEST_DATA
#error "LM_TEST_DATA must be defined"
#endif

static lm_backend g_gpu = LM_BACKEND_CUDA; /* --cpu: both sides on the CPU (checks the test itself) */

static lm_model *load(const char *name, lm_backend be)
{
    char dir[1024], err[512] = "";
    snprintf(dir, sizeof dir, "%s/fixtures/%s", LM_TEST_DATA, name);
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = be;
    lm_model *m = NULL;
    if (lm_model_load(dir, &mp, &m, err, sizeof err) != LM_OK) check(false, "%s: load: %s", name, err);
    return m;
}

typedef struct ext_case {
    lm_mode mode;                 /* LM_MODE_VANILLA, _MAMBAEXTEND or _MODULATION */
    const double *scales;
    size_t n;
    const lm_calibration *calib;  /* LongMamba, or NULL */
    double theta;
} ext_case;

static lm_status set_mode(lm_session *s, const ext_case *c)
{
    lm_longmamba_params lp;
    lm_longmamba_params_init(&lp);
    lp.theta = c->theta;
    lp.threshold_scale = 1.0 + 1.0 / 1024.0; /* τ off the windows' own Δ values */
    lp.trigger_length = 1;
    if (c->mode == LM_MODE_MAMBAEXTEND) {
        lm_mambaextend_params p;
        lm_mambaextend_params_init(&p);
        p.scales = c->scales;
        p.n_scales = c->n;
        p.longmamba = c->calib;
        p.longmamba_params = &lp;
        return lm_session_set_mambaextend(s, &p);
    }
    if (c->mode == LM_MODE_MODULATION) {
        lm_modulation_params p;
        lm_modulation_params_init(&p);
        p.scales = c->scales;
        p.n_scales = c->n;
        p.longmamba = c->calib;
        p.longmamba_params = &lp;
        return lm_session_set_modulation(s, &p);
    }
    return lm_session_set_vanilla(s);
}

static int cmp_dbl(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* theta between the two middle log-decays: about half of the channels global. */
static double mid_theta(const lm_calibration *c, int64_t nl, int64_t C)
{
    double *ld = malloc(sizeof(double) * (size_t)(nl * C));
    for (int64_t l = 0; l < nl; l++) lm_calibration_get_log_decay(c, l, ld + l * C, (size_t)C);
    qsort(ld, (size_t)(nl * C), sizeof(double), cmp_dbl);
    const int64_t mid = nl * C / 2;
    const double t = exp(0.5 * (ld[mid - 1] + ld[mid]));
    free(ld);
    return t;
}

/* A state blob (lm_session_state_save). */
typedef struct blob {
    void *p;
    size_t n;
} blob;

/* Prefill L tokens in case c (chunk 0: the backend's default), the last 4
 * logits into out[0..4V), then 3 decode steps into out[4V..7V).  keep: the
 * session is returned for more work; st: the state after the prefill. */
static lm_status run(lm_model *m, const ext_case *c, int64_t chunk, const int32_t *tok, int64_t L, float *out,
                     lm_session **keep, blob *st_out)
{
    const int64_t V = m->dims.vocab;
    lm_session_params sp;
    lm_session_params_init(&sp);
    sp.chunk_size = chunk;
    lm_session *s = NULL;
    char err[512] = "";
    lm_status st = lm_session_create(m, &sp, &s, err, sizeof err);
    if (st == LM_OK) st = set_mode(s, c);
    if (st == LM_OK) st = lm_session_prefill(s, tok, (size_t)L, 4, out, (size_t)(4 * V));
    if (st == LM_OK && st_out) {
        st = lm_session_state_size(s, &st_out->n);
        st_out->p = st == LM_OK ? malloc(st_out->n) : NULL;
        if (st == LM_OK) st = lm_session_state_save(s, st_out->p, st_out->n, &st_out->n);
    }
    for (int k = 0; st == LM_OK && k < 3; k++) st = lm_session_decode(s, tok[L + k], out + (4 + k) * V, (size_t)V);
    if (st != LM_OK) printf("%s: %s\n", lm_backend_name(m->backend), s ? lm_session_last_error(s) : err);
    if (keep && st == LM_OK)
        *keep = s;
    else
        lm_session_free(s);
    return st;
}

/* The state st in a fresh vanilla session of m: 3 decode steps, against got. */
static double plain_decode_diff(lm_model *m, const blob *st, const int32_t *tok, const float *got)
{
    const int64_t V = m->dims.vocab;
    lm_session *v = NULL;
    char err[256];
    if (!st->p || lm_session_create(m, NULL, &v, err, sizeof err) != LM_OK) return INFINITY;
    float *lg = malloc(sizeof(float) * (size_t)(3 * V));
    double worst = INFINITY;
    if (lm_session_state_load(v, st->p, st->n) == LM_OK) {
        worst = 0;
        for (int k = 0; k < 3 && isfinite(worst); k++)
            if (lm_session_decode(v, tok[k], lg + k * V, (size_t)V) != LM_OK) worst = INFINITY;
        if (isfinite(worst)) worst = tu_max_rel_err_f(lg, got, (size_t)(3 * V));
    }
    free(lg);
    lm_session_free(v);
    return worst;
}

static void fixture(const char *name)
{
    lm_model *mc = load(name, LM_BACKEND_CPU), *mg = load(name, g_gpu);
    if (!mc || !mg) goto out;
    {
        const int64_t V = mc->dims.vocab, nl = mc->dims.n_layer, C = mc->dims.n_channels, L = 1000;
        const double tol = mc->dtype == LM_DTYPE_F32 ? TOL_F32 : TOL_BF16;
        tu_rng r = {4243 + (uint64_t)V};
        int32_t *tok = tu_rng_tokens(&r, L + 3, V), *w0 = tu_rng_tokens(&r, 128, V), *w1 = tu_rng_tokens(&r, 128, V);
        const int32_t *wins[2] = {w0, w1};
        const size_t lens[2] = {128, 128};
        const int64_t buckets[2] = {512, 1024};
        double s_ext[8], s_mod[8], s_ext2[8];
        for (int64_t l = 0; l < nl; l++) {
            s_ext[l] = 3.0 + 1.5 * (double)l;
            s_ext2[l] = 0.5 + 0.25 * (double)l;
            s_mod[l] = 0.3 + 0.1 * (double)l;
        }
        float *a = malloc(sizeof(float) * (size_t)(7 * V)), *b = malloc(sizeof(float) * (size_t)(7 * V));
        float *v = malloc(sizeof(float) * (size_t)(7 * V));
        const ext_case vanilla = {LM_MODE_VANILLA, NULL, 0, NULL, 0};
        check(run(mg, &vanilla, 0, tok, L, v, NULL, NULL) == LM_OK, "%s: vanilla prefill on CUDA", name);

        /* calibrations: vanilla (for MambaExtend) and under the Modulation scales */
        lm_calib_params cp;
        lm_calib_params_init(&cp);
        cp.buckets = buckets;
        cp.n_buckets = 2;
        char err[512] = "";
        lm_calibration *cv = NULL, *cmc = NULL, *cmg = NULL;
        lm_status s1 = lm_calibrate(mc, wins, lens, 2, &cp, &cv, err, sizeof err);
        cp.a_log_scales = s_mod;
        cp.n_a_log_scales = (size_t)nl;
        lm_status s2 = lm_calibrate(mc, wins, lens, 2, &cp, &cmc, err, sizeof err);
        lm_status s3 = lm_calibrate(mg, wins, lens, 2, &cp, &cmg, err, sizeof err);
        check(s1 == LM_OK && s2 == LM_OK && s3 == LM_OK, "%s: calibrations (vanilla, modulated CPU and CUDA) %s",
              name, err);
        double theta_v = 0, theta_m = 0;
        if (s1 == LM_OK && s2 == LM_OK && s3 == LM_OK) {
            double *lc = malloc(sizeof(double) * (size_t)C), *lg = malloc(sizeof(double) * (size_t)C);
            double emax = 0;
            for (int64_t l = 0; l < nl; l++) {
                lm_calibration_get_log_decay(cmc, l, lc, (size_t)C);
                lm_calibration_get_log_decay(cmg, l, lg, (size_t)C);
                for (int64_t c = 0; c < C; c++) emax = fmax(emax, fabs(lc[c] - lg[c]) / fmax(fabs(lc[c]), 1e-30));
            }
            check(emax <= (tol > TOL_F32 ? 1e-2 : 1e-4), "%s: modulated calibration CUDA vs CPU: log-decay err %.2e",
                  name, emax);
            theta_v = mid_theta(cv, nl, C);
            theta_m = mid_theta(cmc, nl, C);
            free(lc);
            free(lg);
        }
        /* LongMamba with bf16 activations (CUDA) against fp32 ones (CPU) would
         * flip filter decisions near the thresholds: fp32 models only */
        const bool with_lm = tol == TOL_F32 && theta_v > 0 && theta_m > 0;
        const ext_case cases[] = {
            {LM_MODE_MAMBAEXTEND, s_ext, (size_t)nl, NULL, 0},
            {LM_MODE_MODULATION, s_mod, (size_t)nl, NULL, 0},
            {LM_MODE_MAMBAEXTEND, s_ext, (size_t)nl, cv, theta_v},
            {LM_MODE_MODULATION, s_mod, (size_t)nl, cmc, theta_m},
        };
        const char *names[] = {"MambaExtend", "Modulation", "MambaExtend + LongMamba", "Modulation + LongMamba"};
        for (int i = 0; i < 4; i++) {
            if (i >= 2 && !with_lm) continue;
            const int64_t chunks[2] = {0, 256};
            for (int k = 0; k < 2; k++) {
                lm_session *sg = NULL;
                blob st = {NULL, 0};
                lm_status x = run(mc, &cases[i], chunks[k], tok, L, a, NULL, NULL);
                lm_status y = run(mg, &cases[i], chunks[k], tok, L, b, &sg, &st);
                const double ep = (x == LM_OK && y == LM_OK) ? tu_max_rel_err_f(b, a, (size_t)(4 * V)) : INFINITY;
                const double ed =
                    (x == LM_OK && y == LM_OK) ? tu_max_rel_err_f(b + 4 * V, a + 4 * V, (size_t)(3 * V)) : INFINITY;
                check(ep <= tol && ed <= tol, "%s: %s, chunk %lld: CUDA vs CPU prefill err %.2e, decode err %.2e", name,
                      names[i], (long long)chunks[k], ep, ed);
                const double ev = y == LM_OK ? tu_max_rel_err_f(b, v, (size_t)(4 * V)) : 0;
                check(ev > 1e-3, "%s: %s changes the prefill (by %.2e of max|logit|)", name, names[i], ev);
                if (sg) {
                    /* decode is plain: the state decodes as in a vanilla session */
                    const double eq = plain_decode_diff(mg, &st, tok + L, b + 4 * V);
                    check(eq <= tol, "%s: %s: decode = vanilla decode of the prefilled state (err %.2e)", name,
                          names[i], eq);
                    if (k == 1 && i == 0) {
                        /* other scales on the same session: the chunk graph follows */
                        const ext_case c2 = {LM_MODE_MAMBAEXTEND, s_ext2, (size_t)nl, NULL, 0};
                        lm_status z = set_mode(sg, &c2);
                        if (z == LM_OK) z = lm_session_reset(sg);
                        if (z == LM_OK) z = lm_session_prefill(sg, tok, (size_t)L, 4, b, (size_t)(4 * V));
                        x = run(mc, &c2, 256, tok, L, a, NULL, NULL);
                        const double e2 = (x == LM_OK && z == LM_OK) ? tu_max_rel_err_f(b, a, (size_t)(4 * V)) : INFINITY;
                        check(e2 <= tol, "%s: new MambaExtend scales on a session with a chunk graph: err %.2e", name,
                              e2);
                    }
                    lm_session_free(sg);
                }
                free(st.p);
            }
        }
        /* SPSA scales: deterministic on CUDA, and the CPU's within rounding */
        for (int k = 0; k < 2 && tol == TOL_F32; k++) {
            const lm_mode md = k ? LM_MODE_MODULATION : LM_MODE_MAMBAEXTEND;
            lm_spsa_params sp;
            lm_spsa_params_init(&sp);
            sp.iterations = 2;
            sp.seed = 3;
            lm_scales *xc = NULL, *g1 = NULL, *g2 = NULL;
            lm_status q1 = lm_scales_calibrate(mc, md, wins, lens, 2, &sp, &xc, err, sizeof err);
            lm_status q2 = lm_scales_calibrate(mg, md, wins, lens, 2, &sp, &g1, err, sizeof err);
            lm_status q3 = lm_scales_calibrate(mg, md, wins, lens, 2, &sp, &g2, err, sizeof err);
            check(q1 == LM_OK && q2 == LM_OK && q3 == LM_OK, "%s: SPSA %s on both backends %s", name, names[k], err);
            if (q1 == LM_OK && q2 == LM_OK && q3 == LM_OK) {
                double sc[8], sg[8], sg2[8];
                lm_scales_info ic = {.struct_size = sizeof ic}, ig = {.struct_size = sizeof ig};
                lm_scales_get(xc, sc, NULL, 8);
                lm_scales_get(g1, sg, NULL, 8);
                lm_scales_get(g2, sg2, NULL, 8);
                lm_scales_get_info(xc, &ic);
                lm_scales_get_info(g1, &ig);
                double es = 0;
                for (int64_t l = 0; l < nl; l++) es = fmax(es, fabs(sc[l] - sg[l]));
                check(!memcmp(sg, sg2, sizeof(double) * (size_t)nl), "%s: SPSA %s: one seed, bit-identical on CUDA",
                      name, names[k]);
                const double el = fmax(fabs(ic.loss_initial - ig.loss_initial), fabs(ic.loss_final - ig.loss_final));
                check(es <= 1e-6 && el <= 1e-5 * ic.loss_initial,
                      "%s: SPSA %s CUDA vs CPU: scales err %.2e, losses err %.2e", name, names[k], es, el);
            }
            lm_scales_free(xc);
            lm_scales_free(g1);
            lm_scales_free(g2);
        }
        /* a one-token prefill is MambaExtend's, not the fused decode step */
        {
            lm_session *sc = NULL, *sg = NULL;
            char e1[256];
            const ext_case *c = &cases[0];
            lm_status x = lm_session_create(mc, NULL, &sc, e1, sizeof e1);
            if (x == LM_OK) x = set_mode(sc, c);
            if (x == LM_OK) x = lm_session_prefill(sc, tok, 1, 1, a, (size_t)V);
            lm_status y = lm_session_create(mg, NULL, &sg, e1, sizeof e1);
            if (y == LM_OK) y = set_mode(sg, c);
            if (y == LM_OK) y = lm_session_prefill(sg, tok, 1, 1, b, (size_t)V);
            const double e = (x == LM_OK && y == LM_OK) ? tu_max_rel_err_f(b, a, (size_t)V) : INFINITY;
            check(e <= tol, "%s: one-token MambaExtend prefill CUDA vs CPU err %.2e", name, e);
            lm_session_free(sc);
            lm_session_free(sg);
        }
        lm_calibration_free(cv);
        lm_calibration_free(cmc);
        lm_calibration_free(cmg);
        free(a);
        free(b);
        free(v);
        free(tok);
        free(w0);
        free(w1);
    }
out:
    lm_model_free(mc);
    lm_model_free(mg);
}

int main(int argc, char **argv)
{
    int n = 0;
    if (argc > 1 && !strcmp(argv[1], "--cpu"))
        g_gpu = LM_BACKEND_CPU;
    else if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    /* Falcon-Mamba runs on the CPU only */
    const char *fixtures[] = {"m1-odd-f32", "m1-tiny-f32", "m1-bf16", "m2-odd-f32", "m2-groups-f32", "m2-bf16"};
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) fixture(fixtures[i]);
    printf("%d of %d checks failed\n", g_failures, g_checks);
    return g_failures ? 1 : 0;
}
