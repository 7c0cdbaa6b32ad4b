/*
 * longmamba_fixture.h - what the LongMamba / DeciMamba suites share
 * (test_longmamba_*.c, test_decimamba.c): a hand-made calibration and a
 * fake model for it, the m1-odd-f32 fixture with sessions and calibrations
 * on it, the naive channel statistics and a float64 reference forward with
 * LongMamba filtering and DeciMamba.  Failures are Check assertions.
 */
#ifndef LM_TEST_LONGMAMBA_FIXTURE_H
#define LM_TEST_LONGMAMBA_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* Straightforward reference of lmi_channel_stats: materialises the
 * stretched array (log decay into *ld, a threshold per bucket into thr). */
void naive_channel_stats(const float *delta, int64_t L, double sc, const float *A, int64_t N,
                         double A_head, const int64_t *buckets, int64_t nb, double *ld, float *thr);

/* A small calibration built by hand: 2 layers, 3 channels, 2 buckets. */
lm_calibration *hand_calibration(void);
/* A fake model: only what calibrations and modes look at. */
void fake_model(lm_model *m, const lm_calibration *c);

/* ---- the m1-odd-f32 fixture (CPU backend) ---------------------------------- */

#define FIXTURE LM_TEST_DATA "/fixtures/m1-odd-f32"

lm_model *load_fixture(void);
/* Another fixture directory (e.g. the Falcon-Mamba fm-odd-f32). */
lm_model *load_fixture_at(const char *dir);
lm_session *new_session(const lm_model *m, int64_t chunk);
/* Logits of the last position after a prefill of `toks` from zero state
 * (malloc'd [vocab]). */
float *prefill_last(lm_session *s, const int32_t *toks, int64_t n);
/* Calibration windows: n (<= 8) windows of len random tokens. */
lm_calibration *calibrate_fixture(const lm_model *m, const int64_t *buckets, size_t nb,
                                  lm_calib_agg agg, double clamp, int n, int64_t len);

/* Shared fixture for the mode tests: calibration 4 x 64 tokens, buckets
 * {64, 128, 256, 512}: trigger 96, a 300-token prompt uses bucket 256. */
extern const int64_t mode_buckets[4];

typedef struct ref_mode {
    const uint8_t *global; /* [n_layer][E] or NULL */
    const float *tau;      /* [n_layer][E] */
    int choose;            /* pick global/tau per layer from the Δ seen (into *_out) */
    uint8_t *global_out;   /* [n_layer][E] */
    float *tau_out;        /* [n_layer][E] */
    const double *budget;  /* [n_layer], < 0 = none; or NULL */
    int64_t min_len, protect;
    double min_gap; /* out: smallest relative |Δ - τ| / τ or top-K score gap seen */
} ref_mode;

/* Logits (V doubles) of the last position of `toks` from zero state,
 * MAMBA.md §1 in double (Falcon-Mamba's dt/B/C norm when the model has
 * it), with the LONGMAMBA.md §4-5 modifications. */
void ref_forward(const lm_model *m, const int32_t *toks, int64_t L0, ref_mode *md, double *logits);
/* max |lib - ref| <= 1e-5 * max |ref| (fp32 against float64) */
void check_vs_ref(const float *lib, const double *ref, int64_t V, const char *what);
double diff_vs_ref(const float *lib, const double *ref, int64_t V);

#endif
