/*
 * test_mamba2.c - Mamba-2 on the CPU backend against the m2-* fixtures
 * (scripts/make_fixtures_m2.py: float64 references from transformers'
 * torch path for n_groups = 1, from a NumPy forward of MAMBA.md §2 for
 * n_groups > 1), plus decode/chunking/state consistency, LongMamba
 * calibration and filtering per head, and DeciMamba.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/safetensors.h"
#include "internal.h"
#include "suite.h"

#define FIX LM_TEST_DATA "/fixtures/"

static const char *const fixtures[] = {"m2-tiny-f32", "m2-odd-f32", "m2-bf16", "m2-groups-f32"};
#define N_FIX (sizeof fixtures / sizeof fixtures[0])

static lm_model *load(const char *name, int32_t threads)
{
    char path[512];
    snprintf(path, sizeof path, FIX "%s", name);
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CPU;
    mp.n_threads = threads;
    lm_model *m = NULL;
    char err[512];
    lm_status st = lm_model_load(path, &mp, &m, err, sizeof err);
    ck_assert_msg(st == LM_OK, "%s: %s", name, err);
    ck_assert_int_eq(m->dims.arch, LM_ARCH_MAMBA2);
    return m;
}

static lm_session *session(const lm_model *m, int64_t chunk)
{
    lm_session_params p;
    lm_session_params_init(&p);
    p.chunk_size = chunk;
    lm_session *s = NULL;
    char err[256];
    ck_assert_msg(lm_session_create(m, &p, &s, err, sizeof err) == LM_OK, "%s", err);
    return s;
}

/* Deterministic token ids in [0, V). */
static void tokens(int32_t *t, int64_t n, int64_t V, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 12345u;
    for (int64_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        t[i] = (int32_t)(x % (uint32_t)V);
    }
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

/* ---- against the float64 references ------------------------------------- */

START_TEST(fixtures_match_reference)
{
    for (size_t k = 0; k < N_FIX; k++) {
        lm_model *m = load(fixtures[k], 2);
        char refp[512];
        snprintf(refp, sizeof refp, FIX "%s/reference.safetensors", fixtures[k]);
        lmi_st_file rf;
        lmi_err e = {{0}};
        ck_assert_msg(lmi_st_open(refp, &rf, &e) == LM_OK, "%s", e.msg);
        const lmi_st_tensor *ids = lmi_st_find(&rf, "input_ids");
        const lmi_st_tensor *lg = lmi_st_find(&rf, "logits_f64");
        ck_assert(ids && lg && ids->dtype == LMI_ST_I32 && lg->dtype == LMI_ST_F64);
        const int64_t B = ids->shape[0], L = ids->shape[1], V = lg->shape[2];
        ck_assert_int_eq(V, m->dims.vocab);
        lm_session *s = session(m, 0);
        float *out = malloc(sizeof(float) * (size_t)(L * V));
        int32_t *row = malloc(sizeof(int32_t) * (size_t)L);
        double worst_abs = 0.0, max_logit = 0.0;
        for (int64_t b = 0; b < B; b++) {
            memcpy(row, ids->data + (size_t)(b * L) * 4, (size_t)L * 4);
            ck_assert_int_eq(lm_session_reset(s), LM_OK);
            ck_assert_int_eq(lm_session_prefill(s, row, (size_t)L, (size_t)L, out, (size_t)(L * V)),
                             LM_OK);
            for (int64_t i = 0; i < L * V; i++) {
                double r;
                memcpy(&r, lg->data + (size_t)(b * L * V + i) * 8, 8);
                worst_abs = fmax(worst_abs, fabs((double)out[i] - r));
                max_logit = fmax(max_logit, fabs(r));
            }
        }
        printf("%-14s %s rows %lld x %lld  max abs err %.3g  rel %.3g (max |logit| %.3g)\n",
               fixtures[k], m->dtype == LM_DTYPE_BF16 ? "bf16" : "f32 ", (long long)B,
               (long long)L, worst_abs, worst_abs / max_logit, max_logit);
        /* Every reference is a float64 run of the STORED weights (bf16
         * values included), so bf16 storage changes the weights, not the
         * arithmetic: the same 1e-5 relative bound holds for m2-bf16. */
        ck_assert_msg(worst_abs <= 1e-5 * max_logit, "%s: abs err %.3g, max |logit| %.3g",
                      fixtures[k], worst_abs, max_logit);
        free(out);
        free(row);
        lm_session_free(s);
        lmi_st_close(&rf);
        lm_model_free(m);
    }
}
END_TEST

/* ---- session consistency ------------------------------------------------ */

START_TEST(decode_equals_prefill)
{
    for (size_t k = 0; k < N_FIX; k++) {
        lm_model *m = load(fixtures[k], 2);
        const int64_t V = m->dims.vocab, T = 29;
        int32_t t[29];
        tokens(t, T, V, 7 + (uint32_t)k);
        float *a = malloc(sizeof(float) * (size_t)(T * V));
        float *b = malloc(sizeof(float) * (size_t)(T * V));
        lm_session *s = session(m, 0);
        ck_assert_int_eq(lm_session_prefill(s, t, (size_t)T, (size_t)T, a, (size_t)(T * V)), LM_OK);
        ck_assert_int_eq(lm_session_reset(s), LM_OK);
        for (int64_t i = 0; i < T; i++)
            ck_assert_int_eq(lm_session_decode(s, t[i], b + i * V, (size_t)V), LM_OK);
        ck_assert_int_eq(lm_session_position(s), T);
        const double d = max_diff(a, b, (size_t)(T * V)), sc = max_abs(a, (size_t)(T * V));
        /* same scan per token; only GEMM vs GEMV rounding differs */
        ck_assert_msg(d <= 2e-6 * sc, "%s: decode vs prefill %.3g (scale %.3g)", fixtures[k], d,
                      sc);
        free(a);
        free(b);
        lm_session_free(s);
        lm_model_free(m);
    }
}
END_TEST

/* lm_session_decode_batch on Mamba-2 sessions: each row is the session's
 * own decode (GEMMs over the batch vs GEMVs: the same sums in another
 * order), on every fixture (groups, biases, time_step_limit). */
START_TEST(decode_batch_equals_decode)
{
    for (size_t k = 0; k < N_FIX; k++) {
        lm_model *m = load(fixtures[k], 1);
        const int64_t V = m->dims.vocab;
        lm_session *bat[3], *one[3];
        int32_t p[20], t[3];
        for (int i = 0; i < 3; i++) {
            bat[i] = session(m, 0);
            one[i] = session(m, 0);
            tokens(p, 20, V, 40 + (uint32_t)i);
            ck_assert_int_eq(lm_session_prefill(bat[i], p, (size_t)(5 + 6 * i), 0, NULL, 0), LM_OK);
            ck_assert_int_eq(lm_session_prefill(one[i], p, (size_t)(5 + 6 * i), 0, NULL, 0), LM_OK);
        }
        float *lb = malloc(sizeof(float) * (size_t)(3 * V)), *l1 = malloc(sizeof(float) * (size_t)V);
        for (int step = 0; step < 4; step++) {
            tokens(t, 3, V, 90 + (uint32_t)step);
            /* every other step without logits: the states still advance */
            float *out = step == 1 ? NULL : lb;
            ck_assert_int_eq(lm_session_decode_batch(bat, 3, t, out, out ? (size_t)(3 * V) : 0), LM_OK);
            for (int i = 0; i < 3; i++) {
                ck_assert_int_eq(lm_session_decode(one[i], t[i], l1, (size_t)V), LM_OK);
                if (!out) continue;
                const double dd = max_diff(lb + i * V, l1, (size_t)V), sc = max_abs(l1, (size_t)V);
                ck_assert_msg(dd <= 2e-6 * sc, "%s step %d session %d: batch vs own decode %.3g (scale %.3g)",
                              fixtures[k], step, i, dd, sc);
            }
        }
        ck_assert_int_eq(lm_session_position(bat[2]), 17 + 4);
        for (int i = 0; i < 3; i++) {
            lm_session_free(bat[i]);
            lm_session_free(one[i]);
        }
        free(lb);
        free(l1);
        lm_model_free(m);
    }
}
END_TEST

START_TEST(chunked_equals_unchunked)
{
    for (size_t k = 0; k < N_FIX; k++) {
        lm_model *m = load(fixtures[k], 3);
        const int64_t V = m->dims.vocab, T = 37;
        int32_t t[37];
        tokens(t, T, V, 99 + (uint32_t)k);
        float *a = malloc(sizeof(float) * (size_t)(T * V));
        float *b = malloc(sizeof(float) * (size_t)(T * V));
        lm_session *s1 = session(m, 0), *s2 = session(m, 5);
        ck_assert_int_eq(lm_session_prefill(s1, t, (size_t)T, (size_t)T, a, (size_t)(T * V)), LM_OK);
        /* in two calls, each in chunks of 5 (K-1 = 2 or 3 conv columns carried) */
        ck_assert_int_eq(lm_session_prefill(s2, t, 11, 11, b, (size_t)(11 * V)), LM_OK);
        ck_assert_int_eq(lm_session_prefill(s2, t + 11, (size_t)(T - 11), (size_t)(T - 11),
                                            b + 11 * V, (size_t)((T - 11) * V)),
                         LM_OK);
        const double d = max_diff(a, b, (size_t)(T * V)), sc = max_abs(a, (size_t)(T * V));
        ck_assert_msg(d <= 2e-6 * sc, "%s: chunked vs one-shot %.3g", fixtures[k], d);
        free(a);
        free(b);
        lm_session_free(s1);
        lm_session_free(s2);
        lm_model_free(m);
    }
}
END_TEST

/* Heads run in parallel above a size threshold: results must not depend
 * on the thread count (each head is one sequential recurrence). */
START_TEST(threads_do_not_change_results)
{
    lm_model *m1 = load("m2-tiny-f32", 1), *m4 = load("m2-tiny-f32", 4);
    const int64_t V = m1->dims.vocab, T = 300;
    int32_t *t = malloc(sizeof(int32_t) * (size_t)T);
    tokens(t, T, V, 8);
    float *a = malloc(sizeof(float) * (size_t)(T * V));
    float *b = malloc(sizeof(float) * (size_t)(T * V));
    lm_session *s1 = session(m1, 0), *s4 = session(m4, 0);
    ck_assert_int_eq(lm_session_prefill(s1, t, (size_t)T, (size_t)T, a, (size_t)(T * V)), LM_OK);
    ck_assert_int_eq(lm_session_prefill(s4, t, (size_t)T, (size_t)T, b, (size_t)(T * V)), LM_OK);
    ck_assert(memcmp(a, b, sizeof(float) * (size_t)(T * V)) == 0);
    free(t);
    free(a);
    free(b);
    lm_session_free(s1);
    lm_session_free(s4);
    lm_model_free(m1);
    lm_model_free(m4);
}
END_TEST

START_TEST(state_round_trip)
{
    lm_model *m = load("m2-groups-f32", 2);
    const lmi_dims *d = &m->dims;
    /* ssm state is [n_layer][H][P][N] */
    ck_assert_uint_eq(lmi_state_floats(m, LMI_STATE_SSM),
                      (size_t)(d->n_layer * d->n_heads * d->head_dim * d->d_state));
    ck_assert_uint_eq(lmi_state_floats(m, LMI_STATE_CONV),
                      (size_t)(d->n_layer * (d->d_inner + 2 * d->n_groups * d->d_state) *
                               (d->d_conv - 1)));
    const int64_t V = d->vocab;
    int32_t t[30];
    tokens(t, 30, V, 5);
    lm_session *s = session(m, 0);
    ck_assert_int_eq(lm_session_prefill(s, t, 20, 0, NULL, 0), LM_OK);
    size_t sz = 0, w = 0;
    ck_assert_int_eq(lm_session_state_size(s, &sz), LM_OK);
    void *blob = malloc(sz);
    ck_assert_int_eq(lm_session_state_save(s, blob, sz, &w), LM_OK);
    ck_assert_uint_eq(w, sz);
    float *a = malloc(sizeof(float) * (size_t)(10 * V));
    float *b = malloc(sizeof(float) * (size_t)(10 * V));
    ck_assert_int_eq(lm_session_prefill(s, t + 20, 10, 10, a, (size_t)(10 * V)), LM_OK);
    lm_session *s2 = session(m, 0);
    ck_assert_int_eq(lm_session_state_load(s2, blob, sz), LM_OK);
    ck_assert_int_eq(lm_session_prefill(s2, t + 20, 10, 10, b, (size_t)(10 * V)), LM_OK);
    ck_assert(memcmp(a, b, sizeof(float) * (size_t)(10 * V)) == 0);
    /* and the state is not trivially zero: a fresh session differs */
    lm_session *s3 = session(m, 0);
    ck_assert_int_eq(lm_session_prefill(s3, t + 20, 10, 10, b, (size_t)(10 * V)), LM_OK);
    ck_assert(max_diff(a, b, (size_t)(10 * V)) > 1e-3);
    free(blob);
    free(a);
    free(b);
    lm_session_free(s);
    lm_session_free(s2);
    lm_session_free(s3);
    lm_model_free(m);
}
END_TEST

/* ---- Δ through the sink: clamp, layout ------------------------------------ */

typedef struct delta_cap {
    int64_t T, H, n_layer;
    double *delta; /* [n_layer][T][H] */
    int calls;
} delta_cap;

static lm_status cap_sink(void *ctx, int64_t layer, const float *delta, int64_t n_tokens,
                          int64_t n_channels, lmi_err *e)
{
    (void)e;
    delta_cap *c = ctx;
    ck_assert_int_eq(n_tokens, c->T);
    ck_assert_int_eq(n_channels, c->H);
    ck_assert(layer >= 0 && layer < c->n_layer);
    for (int64_t i = 0; i < n_tokens * n_channels; i++)
        c->delta[layer * c->T * c->H + i] = delta[i];
    c->calls++;
    return LM_OK;
}

START_TEST(sink_gets_clamped_delta_per_head)
{
    lm_model *m = load("m2-odd-f32", 1); /* time_step_limit [0.005, 0.06] */
    const lmi_dims *d = &m->dims;
    ck_assert(d->dt_limit_lo == 0.005 && d->dt_limit_hi == 0.06);
    const int64_t T = 25, H = d->n_heads;
    int32_t t[25];
    tokens(t, T, d->vocab, 3);
    delta_cap c = {.T = T, .H = H, .n_layer = d->n_layer};
    c.delta = malloc(sizeof(double) * (size_t)(d->n_layer * T * H));
    lm_session *s = session(m, 0);
    lmi_forward f = {.tokens = t, .n_tokens = T, .sink = cap_sink, .sink_ctx = &c};
    lmi_err e = {{0}};
    ck_assert_int_eq(m->vt->forward(s, &f, &e), LM_OK);
    ck_assert_int_eq(c.calls, d->n_layer);
    int at_lo = 0, at_hi = 0;
    for (int64_t i = 0; i < d->n_layer * T * H; i++) {
        ck_assert(c.delta[i] >= 0.005f && c.delta[i] <= 0.06f);
        at_lo += c.delta[i] == (double)0.005f;
        at_hi += c.delta[i] == (double)0.06f;
    }
    ck_assert(at_lo > 0 && at_hi > 0); /* both bounds are active in this fixture */
    free(c.delta);
    lm_session_free(s);
    lm_model_free(m);
}
END_TEST

/* ---- LongMamba ------------------------------------------------------------ */

START_TEST(longmamba_calibrate_and_filter)
{
    lm_model *m = load("m2-tiny-f32", 2);
    const lmi_dims *d = &m->dims;
    const int64_t V = d->vocab, H = d->n_heads, Lc = 16;
    int32_t w0[16], w1[16];
    tokens(w0, Lc, V, 11);
    tokens(w1, Lc, V, 12);
    const int32_t *wins[2] = {w0, w1};
    const size_t lens[2] = {16, 16};
    const int64_t buckets[3] = {8, 32, 64};
    lm_calib_params cp;
    lm_calib_params_init(&cp);
    cp.buckets = buckets;
    cp.n_buckets = 3;
    lm_calibration *cal = NULL;
    char err[512];
    ck_assert_msg(lm_calibrate(m, wins, lens, 2, &cp, &cal, err, sizeof err) == LM_OK, "%s", err);
    lm_calibration_info ci = {.struct_size = sizeof ci};
    ck_assert_int_eq(lm_calibration_get_info(cal, &ci), LM_OK);
    ck_assert_int_eq(ci.arch, LM_ARCH_MAMBA2);
    ck_assert_int_eq(ci.n_channels, H);

    /* log_decay per head = max over windows of A_h * sum_t Δ[t][h] */
    delta_cap c = {.T = Lc, .H = H, .n_layer = d->n_layer};
    c.delta = malloc(sizeof(double) * (size_t)(d->n_layer * Lc * H));
    double *want = malloc(sizeof(double) * (size_t)(d->n_layer * H));
    for (int wi = 0; wi < 2; wi++) {
        lm_session *s = session(m, 0);
        lmi_forward f = {.tokens = wins[wi], .n_tokens = Lc, .sink = cap_sink, .sink_ctx = &c};
        lmi_err e = {{0}};
        ck_assert_int_eq(m->vt->forward(s, &f, &e), LM_OK);
        for (int64_t l = 0; l < d->n_layer; l++)
            for (int64_t h = 0; h < H; h++) {
                double sum = 0;
                for (int64_t t = 0; t < Lc; t++) sum += c.delta[(l * Lc + t) * H + h];
                double v = (double)lmi_weight_f32(&m->layers[l].mamba.A)[h] * sum;
                want[l * H + h] = wi == 0 ? v : fmax(want[l * H + h], v);
            }
        lm_session_free(s);
    }
    double *ld = malloc(sizeof(double) * (size_t)H);
    float *thr = malloc(sizeof(float) * (size_t)H);
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t l = 0; l < d->n_layer; l++) {
        ck_assert_int_eq(lm_calibration_get_log_decay(cal, l, ld, (size_t)H), LM_OK);
        for (int64_t h = 0; h < H; h++) {
            ck_assert_msg(fabs(ld[h] - want[l * H + h]) <= 1e-9 * fabs(want[l * H + h]) + 1e-12,
                          "layer %lld head %lld: %g vs %g", (long long)l, (long long)h, ld[h],
                          want[l * H + h]);
            ck_assert(ld[h] < 0);
            lo = fmin(lo, ld[h]);
            hi = fmax(hi, ld[h]);
        }
        /* bucket 8 <= 16: no filtering; bucket 32 > 16: positive thresholds */
        ck_assert_int_eq(lm_calibration_get_thresholds(cal, l, 0, thr, (size_t)H), LM_OK);
        for (int64_t h = 0; h < H; h++) ck_assert(thr[h] == 0.0f);
        ck_assert_int_eq(lm_calibration_get_thresholds(cal, l, 1, thr, (size_t)H), LM_OK);
        for (int64_t h = 0; h < H; h++) ck_assert(thr[h] > 0.0f);
    }
    ck_assert(lo < hi);

    /* theta in the middle of the decays: some heads global, some local */
    const double theta = exp(0.5 * (lo + hi));
    uint8_t *mask = malloc((size_t)(d->n_layer * H));
    int64_t counts[8];
    ck_assert_int_eq(lm_classify_channels(cal, theta, mask, (size_t)(d->n_layer * H), counts, 8,
                                          err, sizeof err),
                     LM_OK);
    int64_t n_global = 0;
    for (int64_t l = 0; l < d->n_layer; l++) n_global += counts[l];
    ck_assert(n_global > 0 && n_global < d->n_layer * H);

    lm_longmamba_params lp;
    lm_longmamba_params_init(&lp);
    lp.theta = theta; /* trigger defaults to 1.5 x 16 = 24 tokens */
    enum { T = 48 };
    int32_t t[T];
    tokens(t, T, V, 77);
    float *van = malloc(sizeof(float) * (size_t)(T * V));
    float *lm = malloc(sizeof(float) * (size_t)(T * V));
    lm_session *sv = session(m, 0), *sl = session(m, 0);
    ck_assert_int_eq(lm_session_set_longmamba(sl, cal, &lp), LM_OK);
    /* below the trigger: identical to vanilla */
    ck_assert_int_eq(lm_session_prefill(sv, t, 20, 20, van, (size_t)(20 * V)), LM_OK);
    ck_assert_int_eq(lm_session_prefill(sl, t, 20, 20, lm, (size_t)(20 * V)), LM_OK);
    ck_assert(memcmp(van, lm, sizeof(float) * (size_t)(20 * V)) == 0);
    /* above it: filtering changes the logits, from the first position on
     * (global heads drop tokens from the start) */
    ck_assert_int_eq(lm_session_reset(sv), LM_OK);
    ck_assert_int_eq(lm_session_reset(sl), LM_OK);
    ck_assert_int_eq(lm_session_prefill(sv, t, T, T, van, (size_t)(T * V)), LM_OK);
    ck_assert_int_eq(lm_session_prefill(sl, t, T, T, lm, (size_t)(T * V)), LM_OK);
    const double dd = max_diff(van, lm, (size_t)(T * V));
    printf("longmamba: %lld of %lld heads global, max logit change %.3g\n", (long long)n_global,
           (long long)(d->n_layer * H), dd);
    ck_assert(dd > 1e-4);
    for (size_t i = 0; i < (size_t)(T * V); i++) ck_assert(isfinite(lm[i]));

    /* the filter equals zeroing Δ of dropped tokens in global heads: a
     * chunked LongMamba prefill with the length hint gives the same logits */
    lm_session *sc = session(m, 7);
    ck_assert_int_eq(lm_session_set_longmamba(sc, cal, &lp), LM_OK);
    ck_assert_int_eq(lm_session_set_length_hint(sc, T), LM_OK);
    float *lc = malloc(sizeof(float) * (size_t)(T * V));
    ck_assert_int_eq(lm_session_prefill(sc, t, 30, 30, lc, (size_t)(30 * V)), LM_OK);
    ck_assert_int_eq(lm_session_prefill(sc, t + 30, T - 30, T - 30, lc + 30 * V,
                                        (size_t)((T - 30) * V)),
                     LM_OK);
    ck_assert(max_diff(lm, lc, (size_t)(T * V)) <= 2e-6 * max_abs(lm, (size_t)(T * V)));

    free(lc);
    lm_session_free(sc);
    free(van);
    free(lm);
    free(mask);
    free(ld);
    free(thr);
    free(want);
    free(c.delta);
    lm_session_free(sv);
    lm_session_free(sl);
    lm_calibration_free(cal);
    lm_model_free(m);
}
END_TEST

/* One filter decision masks the whole head: a global head whose τ is +inf
 * drops every token, so all P x N entries of its state stay exactly zero in
 * every layer, while the unfiltered heads' states move. */
START_TEST(filter_masks_whole_head)
{
    lm_model *m = load("m2-groups-f32", 1);
    const lmi_dims *d = &m->dims;
    const int64_t H = d->n_heads, T = 12, V = d->vocab;
    int32_t t[12];
    tokens(t, T, V, 21);
    uint8_t *glob = malloc((size_t)H);
    float *tau = malloc(sizeof(float) * (size_t)H);
    lmi_filter *fl = malloc(sizeof(lmi_filter) * (size_t)d->n_layer);
    for (int64_t h = 0; h < H; h++) {
        glob[h] = h == 3;
        tau[h] = INFINITY;
    }
    for (int64_t l = 0; l < d->n_layer; l++) fl[l] = (lmi_filter){.global = glob, .tau = tau};
    float *a = malloc(sizeof(float) * (size_t)(T * V));
    lm_session *s = session(m, 0);
    lmi_forward f = {.tokens = t, .n_tokens = T, .n_out = T, .logits = a, .filters = fl};
    lmi_err e = {{0}};
    ck_assert_int_eq(m->vt->forward(s, &f, &e), LM_OK);
    /* head 3's state stayed zero in every layer; the others did not */
    const size_t per = (size_t)(H * d->head_dim * d->d_state);
    float *ssm = malloc(sizeof(float) * lmi_state_floats(m, LMI_STATE_SSM));
    ck_assert_int_eq(m->vt->state_read(s, (float *const[]){NULL, ssm}, &e), LM_OK);
    const size_t hs = (size_t)(d->head_dim * d->d_state);
    for (int64_t l = 0; l < d->n_layer; l++)
        for (int64_t h = 0; h < H; h++) {
            double mx = 0;
            for (size_t i = 0; i < hs; i++) mx = fmax(mx, fabs(ssm[(size_t)l * per + (size_t)h * hs + i]));
            if (h == 3)
                ck_assert(mx == 0.0);
            else
                ck_assert(mx > 0.0);
        }
    free(ssm);
    free(a);
    free(fl);
    free(glob);
    free(tau);
    lm_session_free(s);
    lm_model_free(m);
}
END_TEST

/* ---- DeciMamba ------------------------------------------------------------ */

START_TEST(decimamba_runs)
{
    lm_model *m = load("m2-tiny-f32", 2);
    const int64_t V = m->dims.vocab, T = 40;
    int32_t t[40];
    tokens(t, T, V, 31);
    lm_decimamba_params dp;
    lm_decimamba_params_init(&dp);
    const int32_t layers[1] = {0};
    dp.layers = layers;
    dp.n_layers = 1;
    dp.l_base = 10;
    dp.min_len = 4;
    float a[256], b[256];
    ck_assert(V <= 256);
    lm_session *sv = session(m, 0), *sd = session(m, 0);
    ck_assert_int_eq(lm_session_set_decimamba(sd, &dp), LM_OK);
    ck_assert_int_eq(lm_session_prefill(sv, t, (size_t)T, 1, a, (size_t)V), LM_OK);
    ck_assert_int_eq(lm_session_prefill(sd, t, (size_t)T, 1, b, (size_t)V), LM_OK);
    for (int64_t i = 0; i < V; i++) ck_assert(isfinite(b[i]));
    ck_assert(max_diff(a, b, (size_t)V) > 1e-4); /* 11 of 40 tokens kept in layer 0 */
    /* decode continues from the decimated state */
    ck_assert_int_eq(lm_session_decode(sd, t[0], b, (size_t)V), LM_OK);
    for (int64_t i = 0; i < V; i++) ck_assert(isfinite(b[i]));
    /* a budget above the length keeps everything: identical to vanilla */
    lm_session *s2 = session(m, 0);
    dp.l_base = 1000;
    ck_assert_int_eq(lm_session_set_decimamba(s2, &dp), LM_OK);
    ck_assert_int_eq(lm_session_prefill(s2, t, (size_t)T, 1, b, (size_t)V), LM_OK);
    ck_assert(memcmp(a, b, sizeof(float) * (size_t)V) == 0);
    lm_session_free(sv);
    lm_session_free(sd);
    lm_session_free(s2);
    lm_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mamba2");
    add_tcase(s, "mamba2", 300,
              (const TTest *[]){fixtures_match_reference, decode_equals_prefill,
                                decode_batch_equals_decode, chunked_equals_unchunked,
                                threads_do_not_change_results, state_round_trip,
                                sink_gets_clamped_delta_per_head, longmamba_calibrate_and_filter,
                                filter_masks_whole_head, decimamba_runs, NULL});
    return run_suite(s);
}
