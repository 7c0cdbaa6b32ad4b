/* test_longmamba_modes.c - LongMamba mode in sessions: validation and
 * prepare on a fake model, then on the m1-odd-f32 fixture against the
 * float64 reference forward (filtering, trigger, zero thresholds, decode
 * after a filtered prefill, chunked prefill, lm_session_set_mode). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "format/safetensors.h"
#include "longmamba_fixture.h"
#include "suite.h"
#include "testutil.h"

/* ---- modes on a fake session (no backend needed) -------------------------- */

START_TEST(longmamba_mode_validation_and_prepare)
{
    lm_calibration *c = hand_calibration();
    lm_model m;
    fake_model(&m, c);
    lm_session s;
    memset(&s, 0, sizeof s);
    s.model = &m;

    lm_longmamba_params p;
    lm_longmamba_params_init(&p);
    ck_assert_uint_eq(p.struct_size, sizeof p);
    p.theta = exp(-3.0); /* global: layer 0 {1,0,0}, layer 1 {1,1,0} */
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_OK);
    ck_assert_int_eq(s.mode->mode, LM_MODE_LONGMAMBA);
    /* the trigger is round(1.5 * 100) = 150 (below) */

    lmi_forward f = {0};
    /* shorter than the trigger: no filters */
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 149, &f), LM_OK);
    ck_assert_ptr_null(f.filters);
    /* 150 tokens: nearest bucket 100 (all-zero thresholds) */
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 150, &f), LM_OK);
    ck_assert_ptr_nonnull(f.filters);
    for (int l = 0; l < 2; l++)
        for (int ch = 0; ch < 3; ch++)
            ck_assert_float_eq(f.filters[l].tau[ch], 0.0f);
    /* 250 tokens: bucket 300 (ties go down: 200 -> 100) */
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 200, &f), LM_OK);
    ck_assert_float_eq(f.filters[1].tau[1], 0.0f);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 250, &f), LM_OK);
    ck_assert_float_eq_tol(f.filters[0].tau[0], 0.1f, 1e-7f);
    ck_assert_float_eq_tol(f.filters[1].tau[1], 0.5f, 1e-7f);
    ck_assert_int_eq(f.filters[0].global[0], 1);
    ck_assert_int_eq(f.filters[0].global[1], 0);
    ck_assert_int_eq(f.filters[1].global[1], 1);
    ck_assert_int_eq(f.filters[1].global[2], 0);
    ck_assert_ptr_null(f.tokens_hook);

    /* scale b and an explicit trigger */
    p.threshold_scale = 2.0;
    p.trigger_length = 10;
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_OK);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 10, &f), LM_OK);
    ck_assert_ptr_nonnull(f.filters);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 100000, &f), LM_OK);
    ck_assert_float_eq_tol(f.filters[1].tau[0], 0.8f, 1e-7f);
    /* b = 0 (default 1) */
    p.threshold_scale = 0;
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_OK);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 100000, &f), LM_OK);
    ck_assert_float_eq_tol(f.filters[1].tau[0], 0.4f, 1e-7f);
    /* a layer without global channels gets no filter: theta above all decays */
    p.theta = 0.5; /* log -0.69: only layer 0 ch 0 (-0.01) and layer 1 ch 1 (-1e-7) */
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_OK);
    p.theta = exp(-1e-3); /* only layer 1 ch 1 (-1e-7) */
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_OK);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 100000, &f), LM_OK);
    ck_assert_ptr_null(f.filters[0].global);
    ck_assert_ptr_nonnull(f.filters[1].global);
    /* default theta for Mamba-1 is 1e-3 (log -6.9): {1,1,0},{1,1,0} */
    lm_longmamba_params_init(&p);
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, NULL), LM_OK);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 100000, &f), LM_OK);
    ck_assert_int_eq(f.filters[0].global[1], 1);
    ck_assert_int_eq(f.filters[0].global[2], 0);

    /* bad parameters keep the mode and record a message */
    const double bad_theta[] = {-1e-3, NAN, INFINITY};
    for (int i = 0; i < 3; i++) {
        lm_longmamba_params_init(&p);
        p.theta = bad_theta[i];
        s.err.msg[0] = '\0';
        ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_ERR_OUT_OF_RANGE);
        ck_assert_ptr_nonnull(strstr(s.err.msg, "theta"));
        ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 100000, &f), LM_OK);
        ck_assert_int_eq(f.filters[0].global[1], 1);
        ck_assert_int_eq(f.filters[0].global[2], 0);
    }
    const double bad_b[] = {-0.5, NAN, INFINITY};
    for (int i = 0; i < 3; i++) {
        lm_longmamba_params_init(&p);
        p.threshold_scale = bad_b[i];
        ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_ERR_OUT_OF_RANGE);
        ck_assert_ptr_nonnull(strstr(s.err.msg, "threshold_scale"));
    }
    lm_longmamba_params_init(&p);
    p.trigger_length = -1;
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_ERR_OUT_OF_RANGE);
    p.trigger_length = 0;
    p.struct_size = 4;
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_set_longmamba(&s, NULL, NULL), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_set_longmamba(NULL, c, NULL), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(s.mode->mode, LM_MODE_LONGMAMBA);

    /* a calibration of another model */
    lm_model other = m;
    other.fingerprint ^= 0x10;
    s.model = &other;
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, NULL), LM_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(s.err.msg, "another model"));
    other = m;
    other.dims.n_layer = 3;
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, NULL), LM_ERR_MISMATCH);
    s.model = &m;

    ck_assert_int_eq(lm_session_set_vanilla(&s), LM_OK);
    ck_assert_int_eq(s.mode->mode, LM_MODE_VANILLA);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 100000, &f), LM_OK);
    ck_assert_ptr_null(f.filters);
    ck_assert(!lmi_modes_single_chunk(&s));
    lmi_modes_free(&s);
    lm_calibration_free(c);
}
END_TEST

START_TEST(mamba2_default_theta)
{
    lm_calibration *c = hand_calibration();
    c->arch = LM_ARCH_MAMBA2;
    lm_model m;
    fake_model(&m, c);
    lm_session s;
    memset(&s, 0, sizeof s);
    s.model = &m;
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, NULL), LM_OK);
    ck_assert_double_eq(lm_longmamba_default_theta(LM_ARCH_MAMBA2), 5e-2);
    /* log 0.05 = -3.0: {1,0,0},{1,1,0} */
    const uint8_t want[6] = {1, 0, 0, 1, 1, 0};
    lmi_forward f = {0};
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 100000, &f), LM_OK);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(f.filters[i / 3].global[i % 3], want[i]);
    lmi_modes_free(&s);
    lm_calibration_free(c);
}
END_TEST

/* ---- session level: a real model (fixture m1-odd-f32) -------------------- */

static void longmamba_filtering_matches_reference_on(const char *dir)
{
    lm_model *m = load_fixture_at(dir);
    int64_t V = m->dims.vocab, E = m->dims.d_inner, nl = m->dims.n_layer;
    int32_t *toks = tu_tokens(42, 300, V);
    double *ref = malloc(sizeof(double) * (size_t)V), *ref_van = malloc(sizeof(double) * (size_t)V);

    /* A calibration made by hand from the prompt's own float64 Δ: for each
     * channel the threshold sits in the middle of a wide gap of its sorted
     * Δ (so fp32 noise cannot flip a decision), keeping 10-70% of the
     * tokens; channels without such a gap, and every 4th channel, are
     * local.  The library must then reproduce the float64 forward with
     * exactly those tokens zeroed. */
    ref_mode md = {.choose = 1};
    md.global_out = calloc((size_t)(nl * E), 1);
    md.tau_out = calloc((size_t)(nl * E), sizeof(float));
    ref_forward(m, toks, 300, &md, ref);
    ck_assert_msg(md.min_gap > 1e-4, "gap %g", md.min_gap);
    lm_calibration *c = lmi_alloc(1, sizeof *c);
    c->arch = m->dims.arch;
    c->n_layer = nl;
    c->n_channels = E;
    c->calib_length = 64;
    c->n_windows = 1;
    c->fingerprint = m->fingerprint;
    c->n_buckets = 2;
    c->buckets = lmi_alloc(2, sizeof(int64_t));
    c->buckets[0] = 64;
    c->buckets[1] = 256;
    c->log_decay = lmi_alloc((size_t)(nl * E), sizeof(double));
    c->thr = lmi_alloc((size_t)(nl * 2 * E), sizeof(float));
    int64_t n_global = 0;
    for (int64_t l = 0; l < nl; l++)
        for (int64_t e = 0; e < E; e++) {
            bool g = md.global_out[l * E + e];
            n_global += g;
            c->log_decay[l * E + e] = g ? -1.0 : -100.0;
            c->thr[(l * 2 + 1) * E + e] = md.tau_out[l * E + e];
        }
    ck_assert_int_gt(n_global, nl * E / 4); /* a real mix of global and local */
    ck_assert_int_lt(n_global, nl * E);

    lm_session *s = new_session(m, 512);
    float *van = prefill_last(s, toks, 300);
    lm_longmamba_params p;
    lm_longmamba_params_init(&p);
    p.theta = exp(-10.0);
    ck_assert_int_eq(lm_session_set_longmamba(s, c, &p), LM_OK);
    /* the trigger is 1.5 x 64 = 96 tokens */
    lmi_forward pf = {0};
    ck_assert_int_eq(lmi_modes_prepare(s, LMI_CALL_PREFILL, 95, &pf), LM_OK);
    ck_assert_ptr_null(pf.filters);
    ck_assert_int_eq(lmi_modes_prepare(s, LMI_CALL_PREFILL, 96, &pf), LM_OK);
    ck_assert_ptr_nonnull(pf.filters);
    float *lm = prefill_last(s, toks, 300); /* bucket 256, τ = the chosen thresholds */

    ref_mode none = {0};
    ref_forward(m, toks, 300, &none, ref_van);
    check_vs_ref(van, ref_van, V, "vanilla");
    check_vs_ref(lm, ref, V, "longmamba");
    /* filtering changes the output, far beyond the fp32 tolerance */
    ck_assert_msg(tu_max_abs_diff(van, lm, V) > 5e-4 * tu_max_abs(van, V),
                  "filtering did not change the logits (%g)", tu_max_abs_diff(van, lm, V));
    ck_assert(diff_vs_ref(van, ref, V) > 100 * diff_vs_ref(lm, ref, V));

    /* b = 2 doubles every τ: keeps fewer tokens, another result */
    p.threshold_scale = 2.0;
    ck_assert_int_eq(lm_session_set_longmamba(s, c, &p), LM_OK);
    float *lm2 = prefill_last(s, toks, 300);
    ck_assert(tu_max_abs_diff(lm2, lm, V) > 1e-3 * tu_max_abs(lm, V));

    /* with a real calibration (4 x 64 tokens, θ 1e-3) filtering is active
     * and changes the logits too */
    lm_calibration *rc = calibrate_fixture(m, mode_buckets, 4, LM_CALIB_AGG_MAX, 0.0, 4, 64);
    p.threshold_scale = 1.0;
    p.theta = 1e-3;
    ck_assert_int_eq(lm_session_set_longmamba(s, rc, &p), LM_OK);
    int64_t ng = 0;
    ck_assert_int_eq(lmi_modes_prepare(s, LMI_CALL_PREFILL, 300, &pf), LM_OK);
    for (int64_t l = 0; l < nl; l++)
        for (int64_t i = 0; i < E && pf.filters[l].global; i++)
            ng += pf.filters[l].global[i];
    ck_assert_int_gt(ng, 0);
    float *lmr = prefill_last(s, toks, 300);
    ck_assert(tu_max_abs_diff(van, lmr, V) > 1e-3 * tu_max_abs(van, V));

    free(van);
    free(lm);
    free(lm2);
    free(lmr);
    free(ref);
    free(ref_van);
    free(toks);
    free(md.global_out);
    free(md.tau_out);
    lm_session_free(s);
    lm_calibration_free(c);
    lm_calibration_free(rc);
    lm_model_free(m);
}

START_TEST(longmamba_filtering_matches_reference)
{
    longmamba_filtering_matches_reference_on(FIXTURE);
}
END_TEST

/* The same on Falcon-Mamba (Δ after its dt/B/C normalisation is what the
 * hook sees; the reference forward applies the normalisation). */
START_TEST(longmamba_filtering_falcon)
{
    longmamba_filtering_matches_reference_on(LM_TEST_DATA "/fixtures/fm-odd-f32");
}
END_TEST

START_TEST(longmamba_below_trigger_is_vanilla)
{
    lm_model *m = load_fixture();
    int64_t V = m->dims.vocab;
    lm_calibration *c = calibrate_fixture(m, mode_buckets, 4, LM_CALIB_AGG_MAX, 0.0, 4, 64);
    int32_t *toks = tu_tokens(43, 300, V);
    lm_session *s = new_session(m, 512);
    float *van = prefill_last(s, toks, 95);
    float *van300 = prefill_last(s, toks, 300);
    ck_assert_int_eq(lm_session_set_longmamba(s, c, NULL), LM_OK);
    float *lm = prefill_last(s, toks, 95); /* 95 < trigger 96 */
    ck_assert_int_eq(memcmp(van, lm, sizeof(float) * (size_t)V), 0);
    /* an explicit trigger above the prompt: also vanilla */
    lm_longmamba_params p;
    lm_longmamba_params_init(&p);
    p.trigger_length = 301;
    ck_assert_int_eq(lm_session_set_longmamba(s, c, &p), LM_OK);
    float *lm300 = prefill_last(s, toks, 300);
    ck_assert_int_eq(memcmp(van300, lm300, sizeof(float) * (size_t)V), 0);
    /* and at the trigger it filters */
    p.trigger_length = 300;
    ck_assert_int_eq(lm_session_set_longmamba(s, c, &p), LM_OK);
    float *lm300b = prefill_last(s, toks, 300);
    ck_assert(tu_max_abs_diff(van300, lm300b, V) > 1e-3 * tu_max_abs(van300, V));
    free(van);
    free(van300);
    free(lm);
    free(lm300);
    free(lm300b);
    free(toks);
    lm_session_free(s);
    lm_calibration_free(c);
    lm_model_free(m);
}
END_TEST

START_TEST(longmamba_zero_thresholds_is_vanilla)
{
    lm_model *m = load_fixture();
    int64_t V = m->dims.vocab;
    /* every bucket <= the calibration length: all thresholds 0 */
    const int64_t low[] = {32, 64};
    lm_calibration *c = calibrate_fixture(m, low, 2, LM_CALIB_AGG_MAX, 0.0, 2, 64);
    for (int64_t i = 0; i < c->n_layer * 2 * c->n_channels; i++)
        ck_assert_float_eq(c->thr[i], 0.0f);
    int32_t *toks = tu_tokens(44, 300, V);
    lm_session *s = new_session(m, 512);
    float *van = prefill_last(s, toks, 300);
    lm_longmamba_params p;
    lm_longmamba_params_init(&p);
    p.theta = 1e-30; /* most channels global */
    ck_assert_int_eq(lm_session_set_longmamba(s, c, &p), LM_OK);
    lmi_forward f = {0};
    ck_assert_int_eq(lmi_modes_prepare(s, LMI_CALL_PREFILL, 300, &f), LM_OK);
    ck_assert_ptr_nonnull(f.filters); /* the filter runs, with τ = 0 */
    float *lm = prefill_last(s, toks, 300);
    ck_assert_int_eq(memcmp(van, lm, sizeof(float) * (size_t)V), 0);
    free(van);
    free(lm);
    free(toks);
    lm_session_free(s);
    lm_calibration_free(c);
    lm_model_free(m);
}
END_TEST

START_TEST(decode_after_filtered_prefill_is_vanilla)
{
    lm_model *m = load_fixture();
    int64_t V = m->dims.vocab;
    lm_calibration *c = calibrate_fixture(m, mode_buckets, 4, LM_CALIB_AGG_MAX, 0.0, 4, 64);
    int32_t *toks = tu_tokens(45, 306, V);
    lm_session *a = new_session(m, 512), *b = new_session(m, 512);
    ck_assert_int_eq(lm_session_set_longmamba(a, c, NULL), LM_OK);
    float *pre = prefill_last(a, toks, 300);
    size_t sz = 0, w = 0;
    ck_assert_int_eq(lm_session_state_size(a, &sz), LM_OK);
    void *blob = malloc(sz);
    ck_assert_int_eq(lm_session_state_save(a, blob, sz, &w), LM_OK);
    ck_assert_int_eq(lm_session_state_load(b, blob, sz), LM_OK); /* b stays vanilla */
    float *la = malloc(sizeof(float) * (size_t)V), *lb = malloc(sizeof(float) * (size_t)V);
    for (int i = 300; i < 306; i++) {
        ck_assert_int_eq(lm_session_decode(a, toks[i], la, (size_t)V), LM_OK);
        ck_assert_int_eq(lm_session_decode(b, toks[i], lb, (size_t)V), LM_OK);
        ck_assert_int_eq(memcmp(la, lb, sizeof(float) * (size_t)V), 0);
    }
    free(pre);
    free(blob);
    free(la);
    free(lb);
    free(toks);
    lm_session_free(a);
    lm_session_free(b);
    lm_calibration_free(c);
    lm_model_free(m);
}
END_TEST

START_TEST(chunked_prefill_with_hint_equals_one_shot)
{
    lm_model *m = load_fixture();
    int64_t V = m->dims.vocab;
    lm_calibration *c = calibrate_fixture(m, mode_buckets, 4, LM_CALIB_AGG_MAX, 0.0, 4, 64);
    int32_t *toks = tu_tokens(46, 300, V);
    lm_session *one = new_session(m, 512), *ch = new_session(m, 64);
    ck_assert_int_eq(lm_session_set_longmamba(one, c, NULL), LM_OK);
    ck_assert_int_eq(lm_session_set_longmamba(ch, c, NULL), LM_OK);
    float *ref = prefill_last(one, toks, 300);
    float *lg = malloc(sizeof(float) * (size_t)V);

    /* 60 + 240 tokens in two calls (and 64-token chunks), hint 300 */
    ck_assert_int_eq(lm_session_reset(ch), LM_OK);
    ck_assert_int_eq(lm_session_set_length_hint(ch, 300), LM_OK);
    ck_assert_int_eq(lm_session_prefill(ch, toks, 60, 0, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_prefill(ch, toks + 60, 240, 1, lg, (size_t)V), LM_OK);
    ck_assert_msg(tu_max_abs_diff(lg, ref, V) <= 1e-5 * tu_max_abs(ref, V),
                  "chunked vs one-shot %g", tu_max_abs_diff(lg, ref, V));
    /* the same two calls without the hint pick their buckets from 60 (below
     * the trigger: no filtering) and 300: a different result */
    ck_assert_int_eq(lm_session_reset(ch), LM_OK);
    ck_assert_int_eq(lm_session_prefill(ch, toks, 60, 0, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_prefill(ch, toks + 60, 240, 1, lg, (size_t)V), LM_OK);
    ck_assert(tu_max_abs_diff(lg, ref, V) > 1e-3 * tu_max_abs(ref, V));

    /* a hint smaller than the prompt is an error and changes nothing */
    ck_assert_int_eq(lm_session_reset(ch), LM_OK);
    ck_assert_int_eq(lm_session_set_length_hint(ch, 100), LM_OK);
    ck_assert_int_eq(lm_session_prefill(ch, toks, 60, 0, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_prefill(ch, toks + 60, 41, 0, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(lm_session_last_error(ch), "hint"));
    ck_assert_int_eq(lm_session_position(ch), 60);
    free(ref);
    free(lg);
    free(toks);
    lm_session_free(one);
    lm_session_free(ch);
    lm_calibration_free(c);
    lm_model_free(m);
}
END_TEST

START_TEST(set_mode_on_real_session)
{
    lm_model *m = load_fixture();
    lm_calibration *c = calibrate_fixture(m, mode_buckets, 4, LM_CALIB_AGG_MAX, 0.0, 2, 64);
    lm_session *s = new_session(m, 64);
    /* a calibration of another fixture: mismatch, message on the session */
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CPU;
    lm_model *other = NULL;
    char err[512];
    ck_assert_int_eq(
        lm_model_load(LM_TEST_DATA "/fixtures/m1-tiny-f32", &mp, &other, err, sizeof err), LM_OK);
    lm_calibration *co = calibrate_fixture(other, mode_buckets, 4, LM_CALIB_AGG_MAX, 0.0, 2, 64);
    ck_assert_int_eq(lm_session_set_longmamba(s, co, NULL), LM_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(lm_session_last_error(s), "another model"));
    ck_assert_int_eq(s->mode->mode, LM_MODE_VANILLA);
    /* DeciMamba layer out of range */
    const int32_t bad[] = {(int32_t)m->dims.n_layer};
    lm_decimamba_params dp;
    lm_decimamba_params_init(&dp);
    dp.layers = bad;
    dp.n_layers = 1;
    ck_assert_int_eq(lm_session_set_decimamba(s, &dp), LM_ERR_OUT_OF_RANGE);
    ck_assert_ptr_nonnull(strstr(lm_session_last_error(s), "outside"));
    /* mode switches are cheap and idempotent */
    ck_assert_int_eq(lm_session_set_longmamba(s, c, NULL), LM_OK);
    ck_assert_int_eq(lm_session_set_decimamba(s, NULL), LM_OK);
    ck_assert_int_eq(lm_session_set_longmamba(s, c, NULL), LM_OK);
    ck_assert_int_eq(lm_session_set_vanilla(s), LM_OK);
    ck_assert_int_eq(lm_session_set_vanilla(s), LM_OK);
    lm_calibration_free(co);
    lm_model_free(other);
    lm_session_free(s);
    lm_calibration_free(c);
    lm_model_free(m);
}
END_TEST

/* ---- suite ------------------------------------------------------------------ */

int main(void)
{
    Suite *s = suite_create("longmamba_modes");
    add_tcase(s, "modes", 0,
              (const TTest *[]){longmamba_mode_validation_and_prepare, mamba2_default_theta, NULL});
    add_tcase(s, "session", 120,
              (const TTest *[]){
                  longmamba_filtering_matches_reference, longmamba_filtering_falcon,
                  longmamba_below_trigger_is_vanilla,
                  longmamba_zero_thresholds_is_vanilla, decode_after_filtered_prefill_is_vanilla,
                  chunked_prefill_with_hint_equals_one_shot, set_mode_on_real_session, NULL});
    return run_suite(s);
}
