/* test_longmamba_policy.c - LongMamba's channel classification pieces
 * (LONGMAMBA.md §3-4): length buckets, per-channel decay statistics and
 * thresholds, against hand examples and a naive reference. */
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

/* One sequence for the whole file (each test starts from it: CK_FORK). */
static tu_rng rng = {0x9e3779b97f4a7c15ull};

/* ---- buckets ------------------------------------------------------------- */

START_TEST(default_buckets_are_the_papers_list)
{
    ck_assert_uint_eq(lmi_n_default_buckets, 25);
    ck_assert_int_eq(lmi_default_buckets[0], 1000);
    ck_assert_int_eq(lmi_default_buckets[8], 10000);
    ck_assert_int_eq(lmi_default_buckets[24], 192000);
    for (size_t i = 1; i < lmi_n_default_buckets; i++)
        ck_assert_int_gt(lmi_default_buckets[i], lmi_default_buckets[i - 1]);
}
END_TEST

START_TEST(bucket_nearest_ties_and_beyond)
{
    const int64_t b[] = {1000, 2000, 4000};
    ck_assert_int_eq(lmi_bucket_index(b, 3, 1), 0); /* below the first */
    ck_assert_int_eq(lmi_bucket_index(b, 3, 1000), 0);
    ck_assert_int_eq(lmi_bucket_index(b, 3, 1499), 0);
    ck_assert_int_eq(lmi_bucket_index(b, 3, 1500), 0); /* tie: the smaller */
    ck_assert_int_eq(lmi_bucket_index(b, 3, 1501), 1);
    ck_assert_int_eq(lmi_bucket_index(b, 3, 2000), 1);
    ck_assert_int_eq(lmi_bucket_index(b, 3, 3000), 1); /* tie: the smaller */
    ck_assert_int_eq(lmi_bucket_index(b, 3, 3001), 2);
    ck_assert_int_eq(lmi_bucket_index(b, 3, 4000), 2);
    ck_assert_int_eq(lmi_bucket_index(b, 3, 1000000), 2); /* beyond the last */
    ck_assert_int_eq(lmi_bucket_index(b, 1, 5000), 0);
    ck_assert_int_eq(lmi_bucket_index(b, 0, 5000), -1);
    ck_assert_int_eq(lmi_bucket_index(NULL, 3, 5000), -1);
    /* default list: 9000 is between 8000 and 10000, a tie */
    ck_assert_int_eq(lmi_default_buckets[lmi_bucket_index(lmi_default_buckets, 25, 9000)], 8000);
    ck_assert_int_eq(lmi_default_buckets[lmi_bucket_index(lmi_default_buckets, 25, 9001)], 10000);
}
END_TEST

/* ---- channel statistics --------------------------------------------------- */

/*
 * Worked example, computed by hand.  Δ = [1, 4, 2, 3] (L = 4), no clamp.
 * target = 10, sorted = [4, 3, 2, 1].
 * Bucket S = 8: scale L/S = 0.5, x_j = 0.5 j - 0.25 (clamped at 0):
 *   j : 0     1     2     3     4     5     6     7
 *   x : 0     0.25  0.75  1.25  1.75  2.25  2.75  3.25
 *   m : 4     3.75  3.25  2.75  2.25  1.75  1.25  1
 *   cumsum: 4, 7.75, 11 > 10 at i = 2  ->  k = 3  ->  thr = m[3] = 2.75
 * Bucket S = 5: scale 0.8, x_j = 0.8 j - 0.1:
 *   m : 4 (x=0), 3.3 (x=0.7), 2.5 (x=1.5), 1.7 (x=2.3), 1 (x=3.1 -> i0=i1=3)
 *   cumsum: 4, 7.3, 9.8, 11.5 > 10 at i = 3  ->  k = 4  ->  thr = 1
 * Buckets S <= 4: no filtering, thr = 0.
 */
START_TEST(threshold_hand_example)
{
    const float delta[] = {1, 4, 2, 3};
    const int64_t buckets[] = {2, 4, 5, 8};
    double scratch[8], ld = 0;
    float thr[4] = {-1, -1, -1, -1};
    lmi_channel_stats(delta, 4, 1, 0.0, NULL, 0, -0.5, buckets, 4, scratch, &ld, thr);
    ck_assert_float_eq(thr[0], 0.0f);
    ck_assert_float_eq(thr[1], 0.0f);
    ck_assert_float_eq_tol(thr[2], 1.0f, 1e-6f);
    ck_assert_float_eq_tol(thr[3], 2.75f, 1e-6f);
    /* Mamba-2 decay: A_head * sum Δ = -0.5 * 10 */
    ck_assert_double_eq_tol(ld, -5.0, 1e-12);
}
END_TEST

START_TEST(threshold_k_clamped_and_zero_channel)
{
    /* Δ = [1, 1], target 2, S = 3: m = [1, 1, 1], cumsum 1, 2, 3 > 2 at
     * i = 2, k = 3 is past the end and is clamped to 2: thr = 1. */
    const float ones[] = {1, 1};
    const int64_t b3[] = {3};
    double scratch[4], ld;
    float thr = -1;
    lmi_channel_stats(ones, 2, 1, 0.0, NULL, 0, -1.0, b3, 1, scratch, &ld, &thr);
    ck_assert_float_eq_tol(thr, 1.0f, 1e-7f);
    /* An all-zero channel never crosses its (zero) budget: thr = 0. */
    const float zeros[] = {0, 0, 0};
    const int64_t b10[] = {10};
    double scratch6[6];
    thr = -1;
    lmi_channel_stats(zeros, 3, 1, 0.0, NULL, 0, -1.0, b10, 1, scratch6, &ld, &thr);
    ck_assert_float_eq(thr, 0.0f);
    ck_assert_double_eq(ld, 0.0);
}
END_TEST

START_TEST(log_decay_mamba1_and_stability)
{
    /* decay = prod_t mean_n exp(Δ_t A_n), A = [-1, -2] */
    const float delta[] = {0.5f, 0.25f, 2.0f};
    const float A[] = {-1.0f, -2.0f};
    double scratch[6], ld = 0;
    lmi_channel_stats(delta, 3, 1, 0.0, A, 2, 0.0, NULL, 0, scratch, &ld, NULL);
    double want = 0;
    for (int t = 0; t < 3; t++)
        want += log(0.5 * (exp(-delta[t]) + exp(-2.0 * delta[t])));
    ck_assert_double_eq_tol(ld, want, 1e-12);

    /* exp(-1000) underflows double; the log must still be exact:
     * log((e^-1000 + e^-2000) / 2) = -1000 - log 2 + log1p(e^-1000). */
    const float big[] = {1000.0f, 1000.0f};
    lmi_channel_stats(big, 2, 1, 0.0, A, 2, 0.0, NULL, 0, scratch, &ld, NULL);
    ck_assert(isfinite(ld));
    ck_assert_double_eq_tol(ld, 2.0 * (-1000.0 - log(2.0)), 1e-9);
}
END_TEST

START_TEST(clamp_and_stride)
{
    /* Δ = 1..10 shuffled, stored in column 1 of a [10][3] matrix. */
    const float vals[10] = {3, 10, 1, 7, 9, 2, 8, 4, 6, 5};
    float mat[30];
    for (int t = 0; t < 10; t++) {
        mat[t * 3 + 0] = 100.0f;
        mat[t * 3 + 1] = vals[t];
        mat[t * 3 + 2] = -100.0f;
    }
    double scratch[20], ld;
    /* sc = 0.2: rank floor(10 * 0.2) = 2 of [10, 9, 8, ...] = 8; 10 and 9
     * become 8: sum 55 - 2 - 1 = 52. */
    lmi_channel_stats(mat + 1, 10, 3, 0.2, NULL, 0, -1.0, NULL, 0, scratch, &ld, NULL);
    ck_assert_double_eq_tol(ld, -52.0, 1e-12);
    /* sc = 0.05: floor(0.5) = 0 -> rank max(1, 0) = 1, value 9: 55 - 1 = 54 */
    lmi_channel_stats(mat + 1, 10, 3, 0.05, NULL, 0, -1.0, NULL, 0, scratch, &ld, NULL);
    ck_assert_double_eq_tol(ld, -54.0, 1e-12);
    /* sc = 0: off */
    lmi_channel_stats(mat + 1, 10, 3, 0.0, NULL, 0, -1.0, NULL, 0, scratch, &ld, NULL);
    ck_assert_double_eq_tol(ld, -55.0, 1e-12);
}
END_TEST

START_TEST(stats_match_naive_reference)
{
    const int64_t buckets[] = {50, 100, 101, 150, 400, 1000, 5000};
    for (int trial = 0; trial < 40; trial++) {
        int64_t L = 2 + (int64_t)(tu_rng_unif(&rng) * 200);
        int64_t N = trial % 4 == 3 ? 0 : 1 + (int64_t)(tu_rng_unif(&rng) * 16);
        double sc = trial % 3 == 0 ? 0.0 : 0.2 * tu_rng_unif(&rng);
        float *delta = malloc(sizeof(float) * (size_t)L);
        float A[16];
        for (int64_t t = 0; t < L; t++) {
            /* softplus-like positive values with repeats */
            delta[t] = trial % 5 == 0 ? (float)(1 + tu_rng_next(&rng) % 4)
                                      : (float)(0.01 + 3 * tu_rng_unif(&rng) * tu_rng_unif(&rng));
        }
        for (int n = 0; n < 16; n++)
            A[n] = -(float)(0.05 + 4 * tu_rng_unif(&rng));
        double A_head = -(0.1 + tu_rng_unif(&rng));
        double *scratch = malloc(sizeof(double) * 2 * (size_t)L);
        double ld, ld_ref;
        float thr[7], thr_ref[7];
        lmi_channel_stats(delta, L, 1, sc, N ? A : NULL, N, A_head, buckets, 7, scratch, &ld, thr);
        naive_channel_stats(delta, L, sc, A, N, A_head, buckets, 7, &ld_ref, thr_ref);
        ck_assert_double_eq_tol(ld, ld_ref, 1e-10 * (1 + fabs(ld_ref)));
        for (int b = 0; b < 7; b++)
            ck_assert_float_eq(thr[b], thr_ref[b]);
        free(delta);
        free(scratch);
    }
    /* long windows in orders that trouble quicksorts: ascending,
     * descending, all equal, two values, organ pipe */
    for (int kind = 0; kind < 5; kind++) {
        int64_t L = 3001;
        float *delta = malloc(sizeof(float) * (size_t)L);
        for (int64_t t = 0; t < L; t++) {
            double v = kind == 0   ? (double)t
                       : kind == 1 ? (double)(L - t)
                       : kind == 2 ? 7.0
                       : kind == 3 ? (double)(t % 2)
                                   : (double)(t < L / 2 ? t : L - t);
            delta[t] = (float)(0.001 * (v + 1));
        }
        const int64_t bk[] = {4000, 20000, 192000};
        double *scratch = malloc(sizeof(double) * 2 * (size_t)L), ld, ld_ref;
        float thr[3], thr_ref[3];
        lmi_channel_stats(delta, L, 1, 0.0, NULL, 0, -1.0, bk, 3, scratch, &ld, thr);
        naive_channel_stats(delta, L, 0.0, NULL, 0, -1.0, bk, 3, &ld_ref, thr_ref);
        for (int b = 0; b < 3; b++)
            ck_assert_float_eq(thr[b], thr_ref[b]);
        free(delta);
        free(scratch);
    }
}
END_TEST

/* ---- suite ------------------------------------------------------------------ */

int main(void)
{
    Suite *s = suite_create("longmamba_policy");
    add_tcase(s, "policy", 0,
              (const TTest *[]){default_buckets_are_the_papers_list, bucket_nearest_ties_and_beyond,
                                threshold_hand_example, threshold_k_clamped_and_zero_channel,
                                log_decay_mamba1_and_stability, clamp_and_stride,
                                stats_match_naive_reference, NULL});
    return run_suite(s);
}
