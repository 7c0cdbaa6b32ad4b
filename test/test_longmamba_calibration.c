/* test_longmamba_calibration.c - calibration files (save, load, malformed
 * input), classification of channels by theta, and lm_calibrate on the
 * m1-odd-f32 fixture against the direct statistics. */
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

/* ---- calibration files ------------------------------------------------------ */

START_TEST(calibration_round_trip)
{
    lm_calibration *c = hand_calibration();
    char path[512], err[512];
    tu_tmp_path(path, sizeof path, "calib_rt.safetensors");
    ck_assert_int_eq(lm_calibration_save(c, path, err, sizeof err), LM_OK);
    lm_model m;
    fake_model(&m, c);
    lm_calibration *d = NULL;
    ck_assert_int_eq(lm_calibration_load(path, &m, &d, err, sizeof err), LM_OK);
    ck_assert_ptr_nonnull(d);
    lm_calibration_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(lm_calibration_get_info(d, &info), LM_OK);
    ck_assert_int_eq(info.arch, LM_ARCH_MAMBA1);
    ck_assert_int_eq(info.n_layer, 2);
    ck_assert_int_eq(info.n_channels, 3);
    ck_assert_int_eq(info.calib_length, 100);
    ck_assert_int_eq(info.n_windows, 4);
    ck_assert_int_eq(info.n_buckets, 2);
    ck_assert_double_eq(info.clamp, 0.15);
    ck_assert_int_eq(info.aggregation, LM_CALIB_AGG_MEAN);
    ck_assert_uint_eq(info.fingerprint, 0xfedcba9876543210ull);
    int64_t b[2];
    ck_assert_int_eq(lm_calibration_get_buckets(d, b, 1), LM_ERR_BUFFER_TOO_SMALL);
    ck_assert_int_eq(lm_calibration_get_buckets(d, b, 2), LM_OK);
    ck_assert_int_eq(b[0], 100);
    ck_assert_int_eq(b[1], 300);
    for (int l = 0; l < 2; l++) {
        double ld[3];
        ck_assert_int_eq(lm_calibration_get_log_decay(d, l, ld, 3), LM_OK);
        for (int ch = 0; ch < 3; ch++)
            ck_assert_double_eq(ld[ch], c->log_decay[l * 3 + ch]);
        for (int bk = 0; bk < 2; bk++) {
            float t[3];
            ck_assert_int_eq(lm_calibration_get_thresholds(d, l, bk, t, 3), LM_OK);
            for (int ch = 0; ch < 3; ch++)
                ck_assert_float_eq(t[ch], c->thr[(l * 2 + bk) * 3 + ch]);
        }
    }
    double ld[3];
    float t[3];
    ck_assert_int_eq(lm_calibration_get_log_decay(d, 2, ld, 3), LM_ERR_OUT_OF_RANGE);
    ck_assert_int_eq(lm_calibration_get_log_decay(d, 0, ld, 2), LM_ERR_BUFFER_TOO_SMALL);
    ck_assert_int_eq(lm_calibration_get_thresholds(d, 0, 2, t, 3), LM_ERR_OUT_OF_RANGE);
    ck_assert_int_eq(lm_calibration_get_thresholds(d, -1, 0, t, 3), LM_ERR_OUT_OF_RANGE);
    /* a short info struct: fields past struct_size are not written */
    lm_calibration_info small;
    memset(&small, 0x5a, sizeof small);
    small.struct_size = (uint32_t)(offsetof(lm_calibration_info, n_layer) + sizeof(int64_t));
    ck_assert_int_eq(lm_calibration_get_info(d, &small), LM_OK);
    ck_assert_int_eq(small.n_layer, 2);
    ck_assert_uint_eq(small.fingerprint, 0x5a5a5a5a5a5a5a5aull);
    /* without a model: no identity check */
    lm_calibration *e2 = NULL;
    ck_assert_int_eq(lm_calibration_load(path, NULL, &e2, err, sizeof err), LM_OK);
    lm_calibration_free(e2);
    lm_calibration_free(d);
    lm_calibration_free(c);
    lm_calibration_free(NULL);
    unlink(path);
}
END_TEST

START_TEST(calibration_fingerprint_mismatch)
{
    lm_calibration *c = hand_calibration();
    char path[512], err[512];
    tu_tmp_path(path, sizeof path, "calib_fp.safetensors");
    ck_assert_int_eq(lm_calibration_save(c, path, err, sizeof err), LM_OK);
    lm_model m;
    fake_model(&m, c);
    m.fingerprint ^= 1;
    lm_calibration *d = (lm_calibration *)1;
    ck_assert_int_eq(lm_calibration_load(path, &m, &d, err, sizeof err), LM_ERR_MISMATCH);
    ck_assert_ptr_null(d);
    ck_assert_ptr_nonnull(strstr(err, "another model"));
    ck_assert_ptr_nonnull(strstr(err, "fedcba9876543210"));
    /* same fingerprint, different shape */
    fake_model(&m, c);
    m.dims.n_channels = 4;
    ck_assert_int_eq(lm_calibration_load(path, &m, &d, err, sizeof err), LM_ERR_MISMATCH);
    fake_model(&m, c);
    m.dims.arch = LM_ARCH_MAMBA2;
    ck_assert_int_eq(lm_calibration_load(path, &m, &d, err, sizeof err), LM_ERR_MISMATCH);
    lm_calibration_free(c);
    unlink(path);
}
END_TEST

/* Writes a calibration-like file with the given pieces replaced. */
typedef struct bad_file {
    const char *drop_meta;           /* metadata key to leave out */
    const char *meta_key, *meta_val; /* metadata key to override */
    const char *drop_tensor;
    int thr_shape_bump; /* add 1 to thresholds' last dim */
    int buckets_f32;    /* buckets stored with the wrong dtype */
    int log_decay_1d;   /* log_decay with one dim */
    float thr_value;    /* written into thr[5] when nonzero */
    double ld_value;    /* written into log_decay[1] when nonzero */
    int64_t bucket1;    /* replaces buckets[1] when nonzero */
} bad_file;

static void write_bad(const char *path, const bad_file *bf)
{
    lm_calibration *c = hand_calibration();
    if (bf->thr_value != 0)
        c->thr[5] = bf->thr_value;
    if (bf->ld_value != 0)
        c->log_decay[1] = bf->ld_value;
    if (bf->bucket1 != 0)
        c->buckets[1] = bf->bucket1;
    float thr_big[2 * 2 * 4] = {0};
    float bf32[2] = {100, 300};
    int64_t sh_b[1] = {2}, sh_d[2] = {2, 3}, sh_d1[1] = {6},
            sh_t[3] = {2, 2, 3 + bf->thr_shape_bump};
    lmi_st_out t[3] = {
        {"buckets", bf->buckets_f32 ? LMI_ST_F32 : LMI_ST_I64, 1, sh_b,
         bf->buckets_f32 ? (const void *)bf32 : (const void *)c->buckets},
        {"log_decay", LMI_ST_F64, bf->log_decay_1d ? 1 : 2, bf->log_decay_1d ? sh_d1 : sh_d,
         c->log_decay},
        {"thresholds", LMI_ST_F32, 3, sh_t,
         bf->thr_shape_bump ? (const void *)thr_big : (const void *)c->thr},
    };
    lmi_st_out keep[3];
    size_t nt = 0;
    for (int i = 0; i < 3; i++)
        if (!bf->drop_tensor || strcmp(bf->drop_tensor, t[i].name) != 0)
            keep[nt++] = t[i];
    const char *keys[] = {"format",       "version",   "arch",  "fingerprint",
                          "calib_length", "n_windows", "clamp", "aggregation"};
    const char *vals[] = {
        "longmamba-calibration", "1", "mamba1", "fedcba9876543210", "100", "4", "0.15", "mean"};
    const char *k2[8], *v2[8];
    size_t nm = 0;
    for (int i = 0; i < 8; i++) {
        if (bf->drop_meta && strcmp(bf->drop_meta, keys[i]) == 0)
            continue;
        k2[nm] = keys[i];
        v2[nm] = bf->meta_key && strcmp(bf->meta_key, keys[i]) == 0 ? bf->meta_val : vals[i];
        nm++;
    }
    lmi_err e;
    ck_assert_int_eq(lmi_st_write(path, keep, nt, k2, v2, nm, &e), LM_OK);
    lm_calibration_free(c);
}

START_TEST(calibration_malformed_files)
{
    const bad_file cases[] = {
        {.drop_meta = "format"},
        {.drop_meta = "fingerprint"},
        {.drop_meta = "aggregation"},
        {.meta_key = "format", .meta_val = "something-else"},
        {.meta_key = "version", .meta_val = "2"},
        {.meta_key = "arch", .meta_val = "mamba3"},
        {.meta_key = "fingerprint", .meta_val = "xyz"},
        {.meta_key = "fingerprint", .meta_val = "00112233445566778"},
        {.meta_key = "calib_length", .meta_val = "0"},
        {.meta_key = "calib_length", .meta_val = "12abc"},
        {.meta_key = "n_windows", .meta_val = "-3"},
        {.meta_key = "clamp", .meta_val = "0.5"},
        {.meta_key = "clamp", .meta_val = "nan"},
        {.meta_key = "aggregation", .meta_val = "median"},
        {.drop_tensor = "buckets"},
        {.drop_tensor = "log_decay"},
        {.drop_tensor = "thresholds"},
        {.thr_shape_bump = 1},
        {.buckets_f32 = 1},
        {.log_decay_1d = 1},
        {.thr_value = -0.25f},
        {.thr_value = NAN},
        {.thr_value = INFINITY},
        {.ld_value = NAN},
        {.ld_value = -INFINITY},
        {.bucket1 = 100}, /* not strictly ascending */
        {.bucket1 = 50},
    };
    char path[512], err[512];
    tu_tmp_path(path, sizeof path, "calib_bad.safetensors");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_bad(path, &cases[i]);
        lm_calibration *d = (lm_calibration *)1;
        err[0] = '\0';
        lm_status st = lm_calibration_load(path, NULL, &d, err, sizeof err);
        ck_assert_msg(st == LM_ERR_FORMAT, "case %zu: status %d (%s)", i, (int)st, err);
        ck_assert_ptr_null(d);
        ck_assert_msg(strstr(err, path) != NULL, "case %zu: message without the path: %s", i, err);
    }
    /* the unmodified writer output loads (the cases above are not vacuous) */
    bad_file ok = {0};
    write_bad(path, &ok);
    lm_calibration *d = NULL;
    ck_assert_int_eq(lm_calibration_load(path, NULL, &d, err, sizeof err), LM_OK);
    lm_calibration_free(d);
    unlink(path);
    /* not a file / not safetensors */
    lm_status st = lm_calibration_load("/nonexistent/x.safetensors", NULL, &d, err, sizeof err);
    ck_assert(st == LM_ERR_MISSING || st == LM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/x.safetensors"));
    ck_assert_int_eq(lm_calibration_load(NULL, NULL, &d, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_calibration_load(path, NULL, NULL, err, sizeof err),
                     LM_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(classify_channels_theta)
{
    lm_calibration *c = hand_calibration();
    /* log decay: layer 0 {-0.01, -5, -80}, layer 1 {-2.5, -1e-7, -700} */
    uint8_t mask[6];
    int64_t counts[2];
    char err[256];
    ck_assert_int_eq(lm_classify_channels(c, exp(-3.0), mask, 6, counts, 2, err, sizeof err),
                     LM_OK);
    const uint8_t want[6] = {1, 0, 0, 1, 1, 0};
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(mask[i], want[i]);
    ck_assert_int_eq(counts[0], 1);
    ck_assert_int_eq(counts[1], 2);
    /* theta = 1e-300 (log -690.8): everything but -700 is global */
    ck_assert_int_eq(lm_classify_channels(c, 1e-300, mask, 6, NULL, 0, err, sizeof err), LM_OK);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(mask[i], i != 5);
    /* strictness: theta = exp(-5) exactly: the -5 channel is not global */
    ck_assert_int_eq(lm_classify_channels(c, exp(-5.0), mask, 6, counts, 2, err, sizeof err),
                     LM_OK);
    ck_assert_int_eq(mask[1], log(exp(-5.0)) < -5.0);
    /* theta = 1: no channel */
    ck_assert_int_eq(lm_classify_channels(c, 1.0, mask, 6, counts, 2, err, sizeof err), LM_OK);
    ck_assert_int_eq(counts[0] + counts[1], 0);
    /* bad input */
    ck_assert_int_eq(lm_classify_channels(c, 0.0, mask, 6, NULL, 0, err, sizeof err),
                     LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_classify_channels(c, -1e-3, mask, 6, NULL, 0, err, sizeof err),
                     LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_classify_channels(c, NAN, mask, 6, NULL, 0, err, sizeof err),
                     LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_classify_channels(c, INFINITY, mask, 6, NULL, 0, err, sizeof err),
                     LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "theta"));
    ck_assert_int_eq(lm_classify_channels(c, 0.1, mask, 5, NULL, 0, err, sizeof err),
                     LM_ERR_BUFFER_TOO_SMALL);
    ck_assert_int_eq(lm_classify_channels(c, 0.1, mask, 6, counts, 1, err, sizeof err),
                     LM_ERR_BUFFER_TOO_SMALL);
    ck_assert_int_eq(lm_classify_channels(NULL, 0.1, mask, 6, NULL, 0, err, sizeof err),
                     LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_classify_channels(c, 0.1, NULL, 6, NULL, 0, err, sizeof err),
                     LM_ERR_INVALID_ARGUMENT);
    lm_calibration_free(c);
}
END_TEST

/* ---- lm_calibrate on a real model (fixture m1-odd-f32) ----------------- */

/* Δ capture through the backend's sink. */
typedef struct capture {
    int64_t n_layer, T, C;
    float *delta; /* [n_layer][T][C] */
} capture;

static lm_status capture_sink(void *ctx, int64_t layer, const float *delta, int64_t n_tokens,
                              int64_t n_channels, lmi_err *e)
{
    (void)e;
    capture *c = ctx;
    ck_assert_int_eq(n_tokens, c->T);
    ck_assert_int_eq(n_channels, c->C);
    memcpy(c->delta + (size_t)layer * (size_t)(c->T * c->C), delta,
           sizeof(float) * (size_t)(c->T * c->C));
    return LM_OK;
}

START_TEST(calibrate_matches_direct_statistics)
{
    lm_model *m = load_fixture();
    const lmi_dims *d = &m->dims;
    const int64_t buckets[] = {32, 64, 100, 128, 256, 1000};
    const int nw = 3;
    const int64_t T = 64;
    int64_t nl = d->n_layer, C = d->n_channels, N = d->d_state;
    /* Δ of every window, straight from the backend */
    float *deltas = malloc(sizeof(float) * (size_t)(nw * nl * T * C));
    lm_session *s = new_session(m, T);
    for (int w = 0; w < nw; w++) {
        int32_t *toks = tu_tokens(1000 + (uint64_t)w, T, d->vocab);
        capture cap = {nl, T, C, deltas + (size_t)w * (size_t)(nl * T * C)};
        lmi_forward f = {.tokens = toks, .n_tokens = T, .sink = capture_sink, .sink_ctx = &cap};
        lmi_err e;
        m->vt->session_reset(s);
        ck_assert_int_eq(m->vt->forward(s, &f, &e), LM_OK);
        free(toks);
    }
    lm_session_free(s);

    for (int variant = 0; variant < 2; variant++) {
        lm_calib_agg agg = variant ? LM_CALIB_AGG_MEAN : LM_CALIB_AGG_MAX;
        double clamp = variant ? 0.1 : 0.0;
        lm_calibration *c = calibrate_fixture(m, buckets, 6, agg, clamp, nw, T);
        ck_assert_int_eq(c->calib_length, T);
        ck_assert_int_eq(c->n_windows, nw);
        ck_assert_uint_eq(c->fingerprint, m->fingerprint);
        ck_assert_int_eq(c->agg, agg);
        float *col = malloc(sizeof(float) * (size_t)T);
        for (int64_t l = 0; l < nl; l++) {
            for (int64_t ch = 0; ch < C; ch++) {
                double ld_agg = variant ? 0 : -INFINITY;
                double thr_agg[6];
                for (int b = 0; b < 6; b++)
                    thr_agg[b] = variant ? 0 : -INFINITY;
                for (int w = 0; w < nw; w++) {
                    const float *dl = deltas + (size_t)((w * nl + l) * T * C);
                    for (int64_t t = 0; t < T; t++)
                        col[t] = dl[t * C + ch];
                    double ld;
                    float thr[6];
                    naive_channel_stats(col, T, clamp, lmi_weight_f32(&m->layers[l].mamba.A) + ch * N, N, 0, buckets, 6,
                                        &ld, thr);
                    if (variant) {
                        ld_agg += exp(ld) / nw; /* decays here are far from underflow */
                        for (int b = 0; b < 6; b++)
                            thr_agg[b] += (double)thr[b] / nw;
                    } else {
                        ld_agg = fmax(ld_agg, ld);
                        for (int b = 0; b < 6; b++)
                            thr_agg[b] = fmax(thr_agg[b], thr[b]);
                    }
                }
                if (variant)
                    ld_agg = log(ld_agg);
                double got = c->log_decay[l * C + ch];
                ck_assert_msg(fabs(got - ld_agg) <= 1e-9 * (1 + fabs(ld_agg)),
                              "layer %lld ch %lld log decay %.17g vs %.17g", (long long)l,
                              (long long)ch, got, ld_agg);
                for (int b = 0; b < 6; b++) {
                    float gt = c->thr[(l * 6 + b) * C + ch];
                    if (buckets[b] <= T)
                        ck_assert_float_eq(gt, 0.0f);
                    ck_assert_msg(fabs(gt - thr_agg[b]) <= 1e-6 * fabs(thr_agg[b]),
                                  "layer %lld ch %lld bucket %lld: %g vs %g", (long long)l,
                                  (long long)ch, (long long)buckets[b], (double)gt, thr_agg[b]);
                }
            }
        }
        /* thresholds above the calibration length are real (not all zero) */
        int64_t nz = 0;
        for (int64_t i = 0; i < nl * 6 * C; i++)
            nz += c->thr[i] > 0;
        ck_assert_int_gt(nz, nl * C);
        free(col);
        lm_calibration_free(c);
    }
    free(deltas);
    lm_model_free(m);
}
END_TEST

static int abort_after_two(void *user, int64_t done, int64_t total)
{
    int *calls = user;
    ck_assert_int_le(done, total);
    return ++*calls >= 2;
}

START_TEST(calibrate_rejects_bad_input)
{
    lm_model *m = load_fixture();
    int32_t *a = tu_tokens(7, 40, m->dims.vocab);
    int32_t *b = tu_tokens(8, 40, m->dims.vocab);
    const int32_t *win[2] = {a, b};
    size_t lens[2] = {40, 40};
    lm_calibration *c = (lm_calibration *)1;
    char err[512];
    lm_calib_params cp;
#define CAL_EXPECT(st_want, ...)                                                                   \
    do {                                                                                           \
        c = (lm_calibration *)1;                                                                   \
        lm_status st_ = lm_calibrate(__VA_ARGS__, &c, err, sizeof err);                            \
        ck_assert_msg(st_ == (st_want), "line %d: status %d (%s)", __LINE__, (int)st_, err);       \
        ck_assert_ptr_null(c);                                                                     \
        ck_assert_str_ne(err, "");                                                                 \
    } while (0)
    CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, NULL, win, lens, 2, NULL);
    CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, m, NULL, lens, 2, NULL);
    CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, m, win, NULL, 2, NULL);
    CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, m, win, lens, 0, NULL);
    size_t short_lens[2] = {40, 1};
    CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, m, win, short_lens, 2, NULL);
    b[17] = (int32_t)m->dims.vocab;
    CAL_EXPECT(LM_ERR_OUT_OF_RANGE, m, win, lens, 2, NULL);
    ck_assert_ptr_nonnull(strstr(err, "window 1 token 17"));
    b[17] = -1;
    CAL_EXPECT(LM_ERR_OUT_OF_RANGE, m, win, lens, 2, NULL);
    b[17] = 0;
    const int32_t *win_null[2] = {a, NULL};
    CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, m, win_null, lens, 2, NULL);

    const double bad_clamp[] = {-0.01, 0.21, NAN};
    for (int i = 0; i < 3; i++) {
        lm_calib_params_init(&cp);
        cp.clamp = bad_clamp[i];
        CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, m, win, lens, 2, &cp);
        ck_assert_ptr_nonnull(strstr(err, "clamp"));
    }
    lm_calib_params_init(&cp);
    cp.aggregation = (lm_calib_agg)7;
    CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, m, win, lens, 2, &cp);
    const int64_t desc[] = {200, 100}, zero[] = {0, 100}, dup[] = {100, 100};
    const int64_t *bad_b[] = {desc, zero, dup};
    for (int i = 0; i < 3; i++) {
        lm_calib_params_init(&cp);
        cp.buckets = bad_b[i];
        cp.n_buckets = 2;
        CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, m, win, lens, 2, &cp);
    }
    lm_calib_params_init(&cp);
    cp.buckets = desc;
    cp.n_buckets = 0;
    CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, m, win, lens, 2, &cp);
    lm_calib_params_init(&cp);
    cp.n_buckets = 3; /* buckets NULL */
    CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, m, win, lens, 2, &cp);
    lm_calib_params_init(&cp);
    cp.struct_size = 4;
    CAL_EXPECT(LM_ERR_INVALID_ARGUMENT, m, win, lens, 2, &cp);
    int calls = 0;
    lm_calib_params_init(&cp);
    cp.progress = abort_after_two;
    cp.progress_user = &calls;
    const int32_t *win3[3] = {a, b, a};
    size_t lens3[3] = {40, 40, 40};
    CAL_EXPECT(LM_ERR_ABORTED, m, win3, lens3, 3, &cp);
    ck_assert_int_eq(calls, 2);
#undef CAL_EXPECT
    ck_assert_int_eq(lm_calibrate(m, win, lens, 2, NULL, NULL, err, sizeof err),
                     LM_ERR_INVALID_ARGUMENT);
    /* default buckets: the paper's list */
    ck_assert_int_eq(lm_calibrate(m, win, lens, 2, NULL, &c, err, sizeof err), LM_OK);
    ck_assert_int_eq(c->n_buckets, 25);
    ck_assert_int_eq(c->buckets[24], 192000);
    ck_assert_int_eq(c->agg, LM_CALIB_AGG_MAX);
    /* save -> load with the model round-trips bit for bit */
    char path[512];
    tu_tmp_path(path, sizeof path, "calib_model.safetensors");
    ck_assert_int_eq(lm_calibration_save(c, path, err, sizeof err), LM_OK);
    lm_calibration *c2 = NULL;
    ck_assert_int_eq(lm_calibration_load(path, m, &c2, err, sizeof err), LM_OK);
    ck_assert_int_eq(
        memcmp(c->log_decay, c2->log_decay, sizeof(double) * (size_t)(c->n_layer * c->n_channels)),
        0);
    ck_assert_int_eq(
        memcmp(c->thr, c2->thr, sizeof(float) * (size_t)(c->n_layer * c->n_channels * 25)), 0);
    lm_calibration_free(c2);
    unlink(path);
    lm_calibration_free(c);
    free(a);
    free(b);
    lm_model_free(m);
}
END_TEST

/* ---- suite ------------------------------------------------------------------ */

int main(void)
{
    Suite *s = suite_create("longmamba_calibration");
    add_tcase(s, "files", 0,
              (const TTest *[]){calibration_round_trip, calibration_fingerprint_mismatch,
                                calibration_malformed_files, classify_channels_theta, NULL});
    add_tcase(
        s, "session", 120,
        (const TTest *[]){calibrate_matches_direct_statistics, calibrate_rejects_bad_input, NULL});
    return run_suite(s);
}
