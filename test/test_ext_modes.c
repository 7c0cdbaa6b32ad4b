/* test_ext_modes.c - MambaExtend and Mamba Modulation sessions: parameter
 * validation and hooks on a fake model, then on fixtures (CPU): scales of
 * 1 are vanilla bit for bit, a one-token prefill is scaled, decode steps
 * are plain, reset keeps the mode, and calibrations made under Modulation
 * scales (save, load, matching).  The numbers themselves are checked
 * against the float64 reference by test_ext_ref.py. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "longmamba_fixture.h"
#include "suite.h"
#include "testutil.h"

/* ---- validation and hooks on a fake session ------------------------------ */

START_TEST(ext_validation_and_prepare)
{
    lm_calibration *c = hand_calibration();
    lm_model m;
    fake_model(&m, c);
    lm_session s;
    memset(&s, 0, sizeof s);
    s.model = &m;
    double sc[2] = {1.5, 0.25};

    lm_mambaextend_params p;
    lm_mambaextend_params_init(&p);
    ck_assert_uint_eq(p.struct_size, sizeof p);
    ck_assert_ptr_null(p.scales);
    lm_modulation_params q;
    lm_modulation_params_init(&q);
    ck_assert_uint_eq(q.struct_size, sizeof q);

    ck_assert_int_eq(lm_session_set_mambaextend(NULL, &p), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_set_modulation(NULL, &q), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_set_mambaextend(&s, NULL), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(s.err.msg, "scales are needed"));
    ck_assert_int_eq(lm_session_set_modulation(&s, &q), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(s.err.msg, "scales is NULL"));
    p.scales = sc;
    p.n_scales = 3;
    ck_assert_int_eq(lm_session_set_mambaextend(&s, &p), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(s.err.msg, "3 scales given, the model has 2 layers"));
    p.n_scales = 2;
    p.struct_size = 8;
    ck_assert_int_eq(lm_session_set_mambaextend(&s, &p), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(s.err.msg, "struct_size"));
    p.struct_size = sizeof p;

    /* non-positive, non-finite, or not finite as a float: layer named */
    const double bad[] = {0.0, -1.0, NAN, INFINITY, -INFINITY, 1e300, 1e-300};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sc[1] = bad[i];
        s.err.msg[0] = '\0';
        ck_assert_int_eq(lm_session_set_mambaextend(&s, &p), LM_ERR_OUT_OF_RANGE);
        ck_assert_ptr_nonnull(strstr(s.err.msg, "layer 1"));
        q.scales = sc;
        q.n_scales = 2;
        ck_assert_int_eq(lm_session_set_modulation(&s, &q), LM_ERR_OUT_OF_RANGE);
        ck_assert_ptr_nonnull(strstr(s.err.msg, "set_modulation: scale of layer 1"));
    }
    /* errors installed no mode (a fake session starts without one) */
    ck_assert_ptr_null(s.mode);
    sc[1] = 0.25;

    /* MambaExtend alone: the Δ scales at prefill, nothing at decode */
    ck_assert_int_eq(lm_session_set_mambaextend(&s, &p), LM_OK);
    ck_assert_int_eq(s.mode->mode, LM_MODE_MAMBAEXTEND);
    ck_assert_ptr_eq(lmi_mode_find(LM_MODE_MAMBAEXTEND), s.mode);
    sc[0] = 9.0; /* copied: later changes do not reach the session */
    lmi_forward f = {0};
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 100000, &f), LM_OK);
    ck_assert_ptr_nonnull(f.delta_scale);
    ck_assert_float_eq(f.delta_scale[0], 1.5f);
    ck_assert_float_eq(f.delta_scale[1], 0.25f);
    ck_assert_ptr_null(f.a_log_scale);
    ck_assert_ptr_null(f.filters);
    ck_assert_ptr_null(f.tokens_hook);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_DECODE, 100000, &f), LM_OK);
    ck_assert_ptr_null(f.delta_scale);
    ck_assert(!lmi_modes_single_chunk(&s));
    sc[0] = 1.5;

    /* with LongMamba: its filters too (trigger 150) */
    p.longmamba = c;
    ck_assert_int_eq(lm_session_set_mambaextend(&s, &p), LM_OK);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 149, &f), LM_OK);
    ck_assert_ptr_nonnull(f.delta_scale);
    ck_assert_ptr_null(f.filters);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 250, &f), LM_OK);
    ck_assert_ptr_nonnull(f.filters);
    ck_assert_float_eq_tol(f.filters[1].tau[1], 0.5f, 1e-7f);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_DECODE, 250, &f), LM_OK);
    ck_assert_ptr_null(f.filters);
    ck_assert_ptr_null(f.delta_scale);
    /* LongMamba's own parameters are checked, the mode kept */
    lm_longmamba_params lp;
    lm_longmamba_params_init(&lp);
    lp.theta = -1;
    p.longmamba_params = &lp;
    ck_assert_int_eq(lm_session_set_mambaextend(&s, &p), LM_ERR_OUT_OF_RANGE);
    ck_assert_ptr_nonnull(strstr(s.err.msg, "set_mambaextend: theta"));
    ck_assert_int_eq(s.mode->mode, LM_MODE_MAMBAEXTEND);
    p.longmamba_params = NULL;

    /* Modulation: the A scales; a LongMamba calibration must be made under them */
    q.longmamba = c;
    ck_assert_int_eq(lm_session_set_modulation(&s, &q), LM_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(s.err.msg, "without Modulation"));
    ck_assert_int_eq(s.mode->mode, LM_MODE_MAMBAEXTEND);
    c->a_log_scales = lmi_alloc(2, sizeof(double));
    c->a_log_scales[0] = 1.5;
    c->a_log_scales[1] = 0.5;
    ck_assert_int_eq(lm_session_set_modulation(&s, &q), LM_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(s.err.msg, "other Modulation scales"));
    c->a_log_scales[1] = 0.25;
    ck_assert_int_eq(lm_session_set_modulation(&s, &q), LM_OK);
    ck_assert_int_eq(s.mode->mode, LM_MODE_MODULATION);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 250, &f), LM_OK);
    ck_assert_ptr_nonnull(f.a_log_scale);
    ck_assert_float_eq(f.a_log_scale[1], 0.25f);
    ck_assert_ptr_null(f.delta_scale);
    ck_assert_ptr_nonnull(f.filters);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_DECODE, 250, &f), LM_OK);
    ck_assert_ptr_null(f.a_log_scale);
    ck_assert_ptr_null(f.filters);
    /* ... and the other modes refuse a modulated calibration */
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, NULL), LM_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(s.err.msg, "set_longmamba: the calibration was made under Mamba "
                                            "Modulation"));
    ck_assert_int_eq(lm_session_set_mambaextend(&s, &p), LM_ERR_MISMATCH);
    ck_assert_int_eq(s.mode->mode, LM_MODE_MODULATION);
    /* a calibration of another model */
    lm_model other = m;
    other.fingerprint ^= 1;
    s.model = &other;
    ck_assert_int_eq(lm_session_set_modulation(&s, &q), LM_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(s.err.msg, "another model"));
    s.model = &m;

    ck_assert_int_eq(lm_session_set_vanilla(&s), LM_OK);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 250, &f), LM_OK);
    ck_assert_ptr_null(f.a_log_scale);
    ck_assert_ptr_null(f.delta_scale);
    lmi_modes_free(&s);
    lm_calibration_free(c);
}
END_TEST

START_TEST(modulate_A_formula)
{
    /* A' = -exp(s A_log) = -(-A)^s; A itself for s = 1 */
    ck_assert_float_eq(lmi_modulate_A(-3.0f, 1.0), -3.0f);
    ck_assert_float_eq_tol(lmi_modulate_A(-4.0f, 0.5), -2.0f, 1e-7f);
    ck_assert_float_eq_tol(lmi_modulate_A(-2.0f, 3.0), -8.0f, 1e-6f);
    ck_assert_float_eq_tol(lmi_modulate_A(-0.25f, 2.0), -0.0625f, 1e-9f);
    ck_assert_float_eq(lmi_modulate_A(0.0f, 0.5), 0.0f);
}
END_TEST

/* ---- on fixtures (CPU) ------------------------------------------------------ */

static const char *const FIXTURES[] = {LM_TEST_DATA "/fixtures/m1-odd-f32",
                                       LM_TEST_DATA "/fixtures/fm-odd-f32",
                                       LM_TEST_DATA "/fixtures/m2-odd-f32"};

static lm_status set_mode(lm_session *s, lm_mode mode, const double *sc, size_t n,
                          const lm_calibration *c)
{
    if (mode == LM_MODE_MAMBAEXTEND) {
        lm_mambaextend_params p;
        lm_mambaextend_params_init(&p);
        p.scales = sc;
        p.n_scales = n;
        p.longmamba = c;
        return lm_session_set_mambaextend(s, &p);
    }
    lm_modulation_params q;
    lm_modulation_params_init(&q);
    q.scales = sc;
    q.n_scales = n;
    q.longmamba = c;
    return lm_session_set_modulation(s, &q);
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

START_TEST(ext_on_fixtures)
{
    const lm_mode modes[2] = {LM_MODE_MAMBAEXTEND, LM_MODE_MODULATION};
    for (size_t fi = 0; fi < sizeof FIXTURES / sizeof FIXTURES[0]; fi++) {
        lm_model *m = load_fixture_at(FIXTURES[fi]);
        const int64_t V = m->dims.vocab, nl = m->dims.n_layer, L = 40;
        tu_rng r = {77 + fi};
        int32_t *tok = tu_rng_tokens(&r, L + 3, V);
        double ones[8], sc[8];
        for (int64_t l = 0; l < nl; l++) {
            ones[l] = 1.0;
            sc[l] = 0.3 + 0.4 * (double)l; /* below and above 1 */
        }
        lm_session *van = new_session(m, 16);
        float *lv = prefill_last(van, tok, L);
        for (int k = 0; k < 2; k++) {
            /* scales of 1: vanilla, bit for bit (chunked like van) */
            lm_session *s = new_session(m, 16);
            ck_assert_int_eq(set_mode(s, modes[k], ones, (size_t)nl, NULL), LM_OK);
            float *l1 = prefill_last(s, tok, L);
            ck_assert_mem_eq(l1, lv, (size_t)V * sizeof(float));
            free(l1);

            /* real scales change the prefill */
            ck_assert_int_eq(set_mode(s, modes[k], sc, (size_t)nl, NULL), LM_OK);
            ck_assert_int_eq(lm_session_reset(s), LM_OK);
            ck_assert_int_eq(s->mode->mode, modes[k]); /* reset keeps the mode */
            float *ls = prefill_last(s, tok, L);
            ck_assert_msg(max_diff(ls, lv, (size_t)V) > 1e-4, "%s mode %d: prefill unchanged",
                          FIXTURES[fi], (int)modes[k]);

            /* one-token prefill is scaled too */
            lm_session *s1 = new_session(m, 16);
            ck_assert_int_eq(set_mode(s1, modes[k], sc, (size_t)nl, NULL), LM_OK);
            lm_session *v1 = new_session(m, 16);
            float *a = prefill_last(s1, tok, 1), *b = prefill_last(v1, tok, 1);
            if (modes[k] == LM_MODE_MAMBAEXTEND) /* from zero state A does not act yet */
                ck_assert_msg(max_diff(a, b, (size_t)V) > 1e-6, "%s: one-token prefill unscaled",
                              FIXTURES[fi]);
            free(a);
            free(b);

            /* decode is plain: the prefilled state in a vanilla session
             * decodes to the same logits */
            size_t bytes = 0;
            ck_assert_int_eq(lm_session_state_size(s, &bytes), LM_OK);
            void *blob = malloc(bytes);
            size_t wrote = 0;
            ck_assert_int_eq(lm_session_state_save(s, blob, bytes, &wrote), LM_OK);
            ck_assert_int_eq(lm_session_state_load(v1, blob, wrote), LM_OK);
            float *da = malloc(sizeof(float) * (size_t)V), *db = malloc(sizeof(float) * (size_t)V);
            for (int t = 0; t < 3; t++) {
                ck_assert_int_eq(lm_session_decode(s, tok[L + t], da, (size_t)V), LM_OK);
                ck_assert_int_eq(lm_session_decode(v1, tok[L + t], db, (size_t)V), LM_OK);
                ck_assert_mem_eq(da, db, (size_t)V * sizeof(float));
            }
            free(da);
            free(db);
            free(blob);
            free(ls);
            lm_session_free(s1);
            lm_session_free(v1);
            lm_session_free(s);
        }
        free(lv);
        free(tok);
        lm_session_free(van);
        lm_model_free(m);
    }
}
END_TEST

START_TEST(modulated_calibration)
{
    for (size_t fi = 0; fi < sizeof FIXTURES / sizeof FIXTURES[0]; fi++) {
        lm_model *m = load_fixture_at(FIXTURES[fi]);
        const int64_t V = m->dims.vocab, nl = m->dims.n_layer, C = m->dims.n_channels;
        tu_rng r = {5 + fi};
        int32_t *w0 = tu_rng_tokens(&r, 32, V), *w1 = tu_rng_tokens(&r, 32, V);
        const int32_t *wins[2] = {w0, w1};
        const size_t lens[2] = {32, 32};
        const int64_t buckets[2] = {64, 128};
        double sc[8], sc2[8];
        for (int64_t l = 0; l < nl; l++) sc[l] = sc2[l] = 0.5 + 0.25 * (double)l;
        sc2[0] = 0.75;
        lm_calib_params cp;
        lm_calib_params_init(&cp);
        cp.buckets = buckets;
        cp.n_buckets = 2;
        char err[512];
        lm_calibration *cv = NULL, *cm = NULL, *bad = NULL;
        ck_assert_int_eq(lm_calibrate(m, wins, lens, 2, &cp, &cv, err, sizeof err), LM_OK);
        /* bad scales: a specific status, no calibration */
        cp.a_log_scales = sc;
        cp.n_a_log_scales = (size_t)nl + 1;
        ck_assert_int_eq(lm_calibrate(m, wins, lens, 2, &cp, &bad, err, sizeof err),
                         LM_ERR_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(err, "a_log_scales"));
        ck_assert_ptr_null(bad);
        cp.n_a_log_scales = 0;
        ck_assert_int_eq(lm_calibrate(m, wins, lens, 2, &cp, &bad, err, sizeof err),
                         LM_ERR_INVALID_ARGUMENT);
        cp.n_a_log_scales = (size_t)nl;
        sc[0] = -0.5;
        ck_assert_int_eq(lm_calibrate(m, wins, lens, 2, &cp, &bad, err, sizeof err),
                         LM_ERR_OUT_OF_RANGE);
        sc[0] = 0.5;
        ck_assert_int_eq(lm_calibrate(m, wins, lens, 2, &cp, &cm, err, sizeof err), LM_OK);
        /* its decays differ from the vanilla calibration's (A' and the modulated Δ) */
        double *a = malloc(sizeof(double) * (size_t)C), *b = malloc(sizeof(double) * (size_t)C);
        double dmax = 0;
        for (int64_t l = 0; l < nl; l++) {
            lm_calibration_get_log_decay(cv, l, a, (size_t)C);
            lm_calibration_get_log_decay(cm, l, b, (size_t)C);
            for (int64_t ch = 0; ch < C; ch++)
                dmax = fmax(dmax, fabs(a[ch] - b[ch]) / fmax(fabs(a[ch]), 1e-30));
        }
        ck_assert_msg(dmax > 0.1, "%s: log-decays under A' differ by %g", FIXTURES[fi], dmax);

        /* saved and loaded with its scales */
        char path[256];
        snprintf(path, sizeof path, "/tmp/lm_ext_calib_%d_%zu.safetensors", (int)getpid(), fi);
        ck_assert_int_eq(lm_calibration_save(cm, path, err, sizeof err), LM_OK);
        lm_calibration *cl = NULL;
        ck_assert_int_eq(lm_calibration_load(path, m, &cl, err, sizeof err), LM_OK);
        unlink(path);
        ck_assert_ptr_nonnull(cl->a_log_scales);
        ck_assert_mem_eq(cl->a_log_scales, sc, (size_t)nl * sizeof(double));

        lm_session *s = new_session(m, 0);
        ck_assert_int_eq(set_mode(s, LM_MODE_MODULATION, sc, (size_t)nl, cl), LM_OK);
        ck_assert_int_eq(set_mode(s, LM_MODE_MODULATION, sc2, (size_t)nl, cl), LM_ERR_MISMATCH);
        ck_assert_int_eq(set_mode(s, LM_MODE_MODULATION, sc, (size_t)nl, cv), LM_ERR_MISMATCH);
        ck_assert_int_eq(set_mode(s, LM_MODE_MAMBAEXTEND, sc, (size_t)nl, cl), LM_ERR_MISMATCH);
        ck_assert_int_eq(lm_session_set_longmamba(s, cl, NULL), LM_ERR_MISMATCH);
        ck_assert_int_eq(set_mode(s, LM_MODE_MAMBAEXTEND, sc, (size_t)nl, cv), LM_OK);
        /* a calibration file for another model */
        lm_model *other = load_fixture_at(FIXTURES[(fi + 1) % 3]);
        ck_assert_int_eq(lm_calibration_save(cm, path, err, sizeof err), LM_OK);
        ck_assert_int_eq(lm_calibration_load(path, other, &bad, err, sizeof err), LM_ERR_MISMATCH);
        unlink(path);
        lm_model_free(other);
        lm_session_free(s);
        lm_calibration_free(cl);
        lm_calibration_free(cv);
        lm_calibration_free(cm);
        free(a);
        free(b);
        free(w0);
        free(w1);
        lm_model_free(m);
    }
}
END_TEST

static int stop_at_2(void *user, int64_t done, int64_t total)
{
    (void)total;
    *(int64_t *)user = done;
    return done >= 2;
}

START_TEST(spsa_scales)
{
    lm_model *m = load_fixture_at(FIXTURES[0]);
    const int64_t V = m->dims.vocab, nl = m->dims.n_layer;
    tu_rng r = {99};
    int32_t *w0 = tu_rng_tokens(&r, 20, V), *w1 = tu_rng_tokens(&r, 20, V);
    const int32_t *wins[2] = {w0, w1};
    size_t lens[2] = {20, 20};
    lm_spsa_params sp;
    lm_spsa_params_init(&sp);
    ck_assert_uint_eq(sp.struct_size, sizeof sp);
    sp.iterations = 2;
    sp.seed = 7;
    char err[512];
    lm_scales *a = NULL, *b = NULL;

    /* bad arguments: a specific status and message, nothing returned */
    ck_assert_int_eq(lm_scales_calibrate(m, LM_MODE_LONGMAMBA, wins, lens, 2, &sp, &a, err, sizeof err),
                     LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "mode"));
    ck_assert_int_eq(lm_scales_calibrate(m, LM_MODE_MAMBAEXTEND, wins, lens, 0, &sp, &a, err, sizeof err),
                     LM_ERR_INVALID_ARGUMENT);
    lens[1] = 1;
    ck_assert_int_eq(lm_scales_calibrate(m, LM_MODE_MAMBAEXTEND, wins, lens, 2, &sp, &a, err, sizeof err),
                     LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "window 1"));
    lens[1] = 20;
    w1[3] = (int32_t)V;
    ck_assert_int_eq(lm_scales_calibrate(m, LM_MODE_MAMBAEXTEND, wins, lens, 2, &sp, &a, err, sizeof err),
                     LM_ERR_OUT_OF_RANGE);
    w1[3] = 0;
    sp.iterations = -1;
    ck_assert_int_eq(lm_scales_calibrate(m, LM_MODE_MODULATION, wins, lens, 2, &sp, &a, err, sizeof err),
                     LM_ERR_OUT_OF_RANGE);
    sp.iterations = 2;
    lm_calibration *cal = calibrate_fixture(m, mode_buckets, 4, LM_CALIB_AGG_MAX, 0.0, 2, 32);
    sp.longmamba = cal;
    ck_assert_int_eq(lm_scales_calibrate(m, LM_MODE_MODULATION, wins, lens, 2, &sp, &a, err, sizeof err),
                     LM_ERR_UNSUPPORTED);
    ck_assert_ptr_null(a);
    /* MambaExtend with LongMamba's filter on */
    ck_assert_int_eq(lm_scales_calibrate(m, LM_MODE_MAMBAEXTEND, wins, lens, 2, &sp, &a, err, sizeof err),
                     LM_OK);
    lm_scales_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(lm_scales_get_info(a, &info), LM_OK);
    ck_assert_int_eq(info.with_longmamba, 1);
    lm_scales_free(a);
    a = NULL;
    sp.longmamba = NULL;
    /* the progress callback stops it */
    int64_t seen = 0;
    sp.progress = stop_at_2;
    sp.progress_user = &seen;
    sp.iterations = 5;
    ck_assert_int_eq(lm_scales_calibrate(m, LM_MODE_MAMBAEXTEND, wins, lens, 2, &sp, &a, err, sizeof err),
                     LM_ERR_ABORTED);
    ck_assert_int_eq(seen, 2);
    ck_assert_ptr_null(a);
    sp.progress = NULL;
    sp.iterations = 2;

    /* one seed: bit-identical scales; another seed: other ones */
    ck_assert_int_eq(lm_scales_calibrate(m, LM_MODE_MODULATION, wins, lens, 2, &sp, &a, err, sizeof err),
                     LM_OK);
    ck_assert_int_eq(lm_scales_calibrate(m, LM_MODE_MODULATION, wins, lens, 2, &sp, &b, err, sizeof err),
                     LM_OK);
    double sa[8], sb[8], ia[8];
    ck_assert_int_eq(lm_scales_get(a, sa, ia, (size_t)nl), LM_OK);
    ck_assert_int_eq(lm_scales_get(b, sb, NULL, (size_t)nl), LM_OK);
    ck_assert_mem_eq(sa, sb, (size_t)nl * sizeof(double));
    ck_assert_int_eq(lm_scales_get(a, sa, NULL, (size_t)nl - 1), LM_ERR_BUFFER_TOO_SMALL);
    ck_assert_int_eq(lm_scales_get(a, NULL, NULL, (size_t)nl), LM_ERR_INVALID_ARGUMENT);
    for (int64_t l = 0; l < nl; l++) ck_assert(ia[l] >= 0.75 && ia[l] < 1.0);
    lm_scales_free(b);
    sp.seed = 8;
    ck_assert_int_eq(lm_scales_calibrate(m, LM_MODE_MODULATION, wins, lens, 2, &sp, &b, err, sizeof err),
                     LM_OK);
    ck_assert_int_eq(lm_scales_get(b, sb, NULL, (size_t)nl), LM_OK);
    ck_assert(memcmp(sa, sb, (size_t)nl * sizeof(double)) != 0);
    lm_scales_free(b);
    b = NULL;

    /* the recorded losses are the mode's cross-entropy at those scales */
    ck_assert_int_eq(lm_scales_get_info(a, &info), LM_OK);
    ck_assert_int_eq(info.mode, LM_MODE_MODULATION);
    ck_assert_int_eq(info.n_layer, nl);
    ck_assert_int_eq(info.target_length, 20);
    ck_assert_int_eq(info.n_windows, 2);
    ck_assert_int_eq(info.iterations, 2);
    ck_assert_uint_eq(info.seed, 7);
    ck_assert_uint_eq(info.fingerprint, m->fingerprint);
    ck_assert(isfinite(info.loss_initial) && isfinite(info.loss_final));
    {
        lm_session *s = new_session(m, 0);
        ck_assert_int_eq(set_mode(s, LM_MODE_MODULATION, sa, (size_t)nl, NULL), LM_OK);
        float *lg = malloc(sizeof(float) * (size_t)(20 * V));
        double sum = 0;
        for (int w = 0; w < 2; w++) {
            ck_assert_int_eq(lm_session_reset(s), LM_OK);
            ck_assert_int_eq(lm_session_prefill(s, wins[w], 19, 19, lg, (size_t)(20 * V)), LM_OK);
            for (int t = 0; t < 19; t++) {
                double mx = -INFINITY, z = 0;
                for (int64_t v = 0; v < V; v++) mx = fmax(mx, lg[t * V + v]);
                for (int64_t v = 0; v < V; v++) z += exp(lg[t * V + v] - mx);
                sum += mx + log(z) - lg[t * V + wins[w][t + 1]];
            }
        }
        ck_assert_double_eq_tol(sum / 38.0, info.loss_final, 1e-9);
        free(lg);
        lm_session_free(s);
    }

    /* saved and loaded; a file for another model or a malformed one is refused */
    char path[256];
    snprintf(path, sizeof path, "/tmp/lm_ext_scales_%d.safetensors", (int)getpid());
    ck_assert_int_eq(lm_scales_save(a, path, err, sizeof err), LM_OK);
    ck_assert_int_eq(lm_scales_load(path, m, &b, err, sizeof err), LM_OK);
    lm_scales_info ib = {.struct_size = sizeof ib};
    lm_scales_get_info(b, &ib);
    ck_assert_mem_eq(&ib, &info, sizeof info);
    ck_assert_int_eq(lm_scales_get(b, sb, NULL, (size_t)nl), LM_OK);
    ck_assert_mem_eq(sa, sb, (size_t)nl * sizeof(double));
    lm_scales_free(b);
    b = NULL;
    lm_model *other = load_fixture_at(FIXTURES[2]);
    ck_assert_int_eq(lm_scales_load(path, other, &b, err, sizeof err), LM_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(err, "another model"));
    ck_assert_ptr_null(b);
    lm_model_free(other);
    ck_assert_int_eq(lm_calibration_save(cal, path, err, sizeof err), LM_OK);
    ck_assert_int_eq(lm_scales_load(path, m, &b, err, sizeof err), LM_ERR_FORMAT);
    unlink(path);
    ck_assert_int_eq(lm_scales_load(path, m, &b, err, sizeof err), LM_ERR_MISSING);
    ck_assert_int_eq(lm_scales_save(NULL, path, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    lm_scales_free(a);
    lm_calibration_free(cal);
    free(w0);
    free(w1);
    lm_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ext_modes");
    add_tcase(s, "modes", 0, (const TTest *[]){ext_validation_and_prepare, modulate_A_formula, NULL});
    add_tcase(s, "fixtures", 300,
              (const TTest *[]){ext_on_fixtures, modulated_calibration, spsa_scales, NULL});
    return run_suite(s);
}
