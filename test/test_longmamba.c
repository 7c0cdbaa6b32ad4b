/* test_longmamba.c - LongMamba / DeciMamba policy, the filtered scan,
 * calibration files, channel classification and session modes. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "format/safetensors.h"

/* ---- helpers ------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unif(void)
{
    return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0);
}

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/lm_test_%ld_%s", LM_TEST_BUILD_DIR, (long)getpid(), name);
}

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

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Straightforward reference: materialises the stretched array. */
static void naive_stats(const float *delta, int64_t L, double sc, const float *A, int64_t N,
                        double A_head, const int64_t *buckets, int64_t nb, double *ld, float *thr)
{
    double *d = malloc(sizeof(double) * (size_t)L), *s = malloc(sizeof(double) * (size_t)L);
    for (int64_t t = 0; t < L; t++)
        d[t] = s[t] = delta[t];
    qsort(s, (size_t)L, sizeof(double), cmp_desc);
    if (sc > 0) {
        int64_t r = (int64_t)floor((double)L * sc);
        if (r < 1)
            r = 1;
        double cap = s[r];
        for (int64_t t = 0; t < L; t++) {
            d[t] = fmin(d[t], cap);
            s[t] = fmin(s[t], cap);
        }
    }
    double target = 0;
    for (int64_t t = 0; t < L; t++)
        target += d[t];
    if (N > 0) {
        long double acc = 0; /* direct product of means, in logs, long double */
        for (int64_t t = 0; t < L; t++) {
            long double m = 0;
            for (int64_t n = 0; n < N; n++)
                m += expl((long double)d[t] * A[n]);
            acc += logl(m / N);
        }
        *ld = (double)acc;
    } else {
        *ld = A_head * target;
    }
    for (int64_t b = 0; b < nb; b++) {
        int64_t S = buckets[b];
        thr[b] = 0;
        if (S <= L)
            continue;
        double *m = malloc(sizeof(double) * (size_t)S);
        for (int64_t j = 0; j < S; j++) {
            double x = ((double)j + 0.5) * (double)L / (double)S - 0.5;
            if (x < 0)
                x = 0;
            int64_t i0 = (int64_t)floor(x);
            if (i0 > L - 1)
                i0 = L - 1;
            int64_t i1 = i0 + 1 < L ? i0 + 1 : L - 1;
            double w = x - (double)i0;
            m[j] = (1 - w) * s[i0] + w * s[i1];
        }
        double cum = 0;
        for (int64_t j = 0; j < S; j++) {
            cum += m[j];
            if (cum > target) {
                int64_t k = j + 1 < S - 1 ? j + 1 : S - 1;
                thr[b] = (float)m[k];
                break;
            }
        }
        free(m);
    }
    free(d);
    free(s);
}

START_TEST(stats_match_naive_reference)
{
    const int64_t buckets[] = {50, 100, 101, 150, 400, 1000, 5000};
    for (int trial = 0; trial < 40; trial++) {
        int64_t L = 2 + (int64_t)(rng_unif() * 200);
        int64_t N = trial % 4 == 3 ? 0 : 1 + (int64_t)(rng_unif() * 16);
        double sc = trial % 3 == 0 ? 0.0 : 0.2 * rng_unif();
        float *delta = malloc(sizeof(float) * (size_t)L);
        float A[16];
        for (int64_t t = 0; t < L; t++) {
            /* softplus-like positive values with repeats */
            delta[t] = trial % 5 == 0 ? (float)(1 + rng_next() % 4)
                                      : (float)(0.01 + 3 * rng_unif() * rng_unif());
        }
        for (int n = 0; n < 16; n++)
            A[n] = -(float)(0.05 + 4 * rng_unif());
        double A_head = -(0.1 + rng_unif());
        double *scratch = malloc(sizeof(double) * 2 * (size_t)L);
        double ld, ld_ref;
        float thr[7], thr_ref[7];
        lmi_channel_stats(delta, L, 1, sc, N ? A : NULL, N, A_head, buckets, 7, scratch, &ld, thr);
        naive_stats(delta, L, sc, A, N, A_head, buckets, 7, &ld_ref, thr_ref);
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
        naive_stats(delta, L, 0.0, NULL, 0, -1.0, bk, 3, &ld_ref, thr_ref);
        for (int b = 0; b < 3; b++)
            ck_assert_float_eq(thr[b], thr_ref[b]);
        free(delta);
        free(scratch);
    }
}
END_TEST

/* ---- DeciMamba ------------------------------------------------------------ */

START_TEST(deci_keep_count_examples)
{
    /* K = int(max(min(L - R, budget), min_len)), at most L - R */
    ck_assert_int_eq(lmi_deci_keep_count(100, 1, 50.0, 20), 50);
    ck_assert_int_eq(lmi_deci_keep_count(100, 1, 50.7, 20), 50);   /* int() truncates */
    ck_assert_int_eq(lmi_deci_keep_count(100, 1, 10.0, 20), 20);   /* min_len wins */
    ck_assert_int_eq(lmi_deci_keep_count(100, 1, 1000.0, 20), 99); /* nothing dropped */
    ck_assert_int_eq(lmi_deci_keep_count(100, 1, 99.0, 20), 99);
    ck_assert_int_eq(lmi_deci_keep_count(10, 1, 5.0, 20), 9); /* min_len > L - R */
    ck_assert_int_eq(lmi_deci_keep_count(100, 4, 2000.0 * 0.25, 20), 96);
    ck_assert_int_eq(lmi_deci_keep_count(1000, 4, 2000.0 * 0.125, 20), 250);
    ck_assert_int_eq(lmi_deci_keep_count(1, 1, 5.0, 20), 0);
    ck_assert_int_eq(lmi_deci_keep_count(5, 1, 0.0, 0), 0);
}
END_TEST

START_TEST(deci_select_examples)
{
    /* candidates 0..4 (R = 1 protects token 5) */
    const float sc[] = {5, 1, 5, 3, 9, 2};
    int64_t idx[6], scratch[6];
    ck_assert_int_eq(lmi_deci_select(sc, 6, 1, 3, idx, scratch, NULL), LM_OK);
    ck_assert_int_eq(idx[0], 0); /* 9, 5, 5 -> tokens 4, 0, 2 in order */
    ck_assert_int_eq(idx[1], 2);
    ck_assert_int_eq(idx[2], 4);
    ck_assert_int_eq(idx[3], 5);
    /* K = 2: 9 (token 4), then a tie 5 / 5: the earlier token 0 wins */
    ck_assert_int_eq(lmi_deci_select(sc, 6, 1, 2, idx, scratch, NULL), LM_OK);
    ck_assert_int_eq(idx[0], 0);
    ck_assert_int_eq(idx[1], 4);
    ck_assert_int_eq(idx[2], 5);
    /* K = 0: only the protected tail; R = 2 */
    ck_assert_int_eq(lmi_deci_select(sc, 6, 2, 0, idx, scratch, NULL), LM_OK);
    ck_assert_int_eq(idx[0], 4);
    ck_assert_int_eq(idx[1], 5);
    /* K = L - R: everything */
    ck_assert_int_eq(lmi_deci_select(sc, 6, 1, 5, idx, scratch, NULL), LM_OK);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(idx[i], i);
    /* NaN ranks below every number */
    const float withnan[] = {NAN, 0.5f, -1.0f, 0.0f};
    ck_assert_int_eq(lmi_deci_select(withnan, 4, 1, 2, idx, scratch, NULL), LM_OK);
    ck_assert_int_eq(idx[0], 1);
    ck_assert_int_eq(idx[1], 2);
    ck_assert_int_eq(idx[2], 3);
    /* bad arguments */
    lmi_err e;
    ck_assert_int_eq(lmi_deci_select(sc, 6, 1, 6, idx, scratch, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lmi_deci_select(sc, 6, 7, 0, idx, scratch, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lmi_deci_select(sc, 6, 1, -1, idx, scratch, &e), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lmi_deci_select(NULL, 6, 1, 1, idx, scratch, &e), LM_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(deci_select_matches_brute_force)
{
    for (int trial = 0; trial < 200; trial++) {
        int64_t L = 1 + (int64_t)(rng_next() % 60);
        int64_t R = (int64_t)(rng_next() % (uint64_t)(L + 1));
        int64_t n = L - R;
        int64_t K = n ? (int64_t)(rng_next() % (uint64_t)(n + 1)) : 0;
        float *s = malloc(sizeof(float) * (size_t)L);
        for (int64_t t = 0; t < L; t++)
            s[t] = (float)(rng_next() % 7); /* many ties */
        int64_t *idx = malloc(sizeof(int64_t) * (size_t)(L + 1));
        int64_t *scr = malloc(sizeof(int64_t) * (size_t)(L + 1));
        ck_assert_int_eq(lmi_deci_select(s, L, R, K, idx, scr, NULL), LM_OK);
        /* brute force: token t is kept iff fewer than K candidates beat it */
        int64_t o = 0;
        for (int64_t t = 0; t < n; t++) {
            int64_t better = 0;
            for (int64_t u = 0; u < n; u++)
                if (s[u] > s[t] || (s[u] == s[t] && u < t))
                    better++;
            if (better < K)
                ck_assert_int_eq(idx[o++], t);
        }
        ck_assert_int_eq(o, K);
        for (int64_t t = n; t < L; t++)
            ck_assert_int_eq(idx[o++], t);
        free(s);
        free(idx);
        free(scr);
    }
}
END_TEST

/* ---- the public filtered scan --------------------------------------------- */

/* Double-precision reference of lm_scan_filtered's documented semantics. */
static void ref_scan(const lm_scan_args *a, double *y, double *h)
{
    int64_t L = a->length, E = a->channels, N = a->state_size;
    for (int64_t i = 0; i < E * N; i++)
        h[i] = a->state_in ? a->state_in[i] : 0.0;
    for (int64_t t = 0; t < L; t++) {
        for (int64_t e = 0; e < E; e++) {
            double d = a->delta[t * E + e];
            if (a->delta_is_dt) {
                double v = d + (a->dt_bias ? a->dt_bias[e] : 0.0);
                d = v > 20.0 ? v : log1p(exp(v));
            }
            if (a->global_mask && a->global_mask[e] && !(d > a->thresholds[e]))
                d = 0;
            double u = a->u[t * E + e], acc = 0;
            for (int64_t n = 0; n < N; n++) {
                double *hn = &h[e * N + n];
                *hn = exp(d * a->A[e * N + n]) * *hn + d * a->B[t * N + n] * u;
                acc += *hn * a->C[t * N + n];
            }
            acc += (a->D ? a->D[e] : 0.0) * u;
            if (a->z) {
                double z = a->z[t * E + e];
                acc *= z / (1.0 + exp(-z));
            }
            y[t * E + e] = acc;
        }
    }
}

typedef struct scan_case {
    int64_t L, E, N;
    float *u, *delta, *A, *B, *C, *D, *z, *dt_bias, *thr, *s_in, *s_out, *y;
    uint8_t *mask;
} scan_case;

static float *randf(int64_t n, double lo, double hi)
{
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(lo + (hi - lo) * rng_unif());
    return p;
}

static void scan_case_make(scan_case *c, int64_t L, int64_t E, int64_t N)
{
    c->L = L;
    c->E = E;
    c->N = N;
    c->u = randf(L * E, -1, 1);
    c->delta = randf(L * E, 0.001, 1.5);
    c->A = randf(E * N, -3, -0.05);
    c->B = randf(L * N, -1, 1);
    c->C = randf(L * N, -1, 1);
    c->D = randf(E, -1, 1);
    c->z = randf(L * E, -2, 2);
    c->dt_bias = randf(E, -1, 1);
    c->thr = randf(E, 0.2, 1.0);
    c->s_in = randf(E * N, -1, 1);
    c->s_out = randf(E * N, 0, 0);
    c->y = randf(L * E, 0, 0);
    c->mask = malloc((size_t)E);
    for (int64_t e = 0; e < E; e++)
        c->mask[e] = (uint8_t)(e % 3 != 0);
}

static void scan_case_free(scan_case *c)
{
    float *ps[] = {c->u, c->delta,   c->A,   c->B,    c->C,     c->D,
                   c->z, c->dt_bias, c->thr, c->s_in, c->s_out, c->y};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        free(ps[i]);
    free(c->mask);
}

static void scan_args_of(const scan_case *c, lm_scan_args *a)
{
    lm_scan_args_init(a);
    a->length = c->L;
    a->channels = c->E;
    a->state_size = c->N;
    a->u = c->u;
    a->delta = c->delta;
    a->A = c->A;
    a->B = c->B;
    a->C = c->C;
    a->D = c->D;
    a->z = c->z;
    a->thresholds = c->thr;
    a->global_mask = c->mask;
    a->state_in = c->s_in;
    a->state_out = c->s_out;
    a->y = c->y;
    a->n_threads = 2;
}

static void check_scan_vs_ref(const lm_scan_args *a, const float *y, const float *h_out)
{
    size_t ny = (size_t)(a->length * a->channels), nh = (size_t)(a->channels * a->state_size);
    double *yr = malloc(sizeof(double) * ny), *hr = malloc(sizeof(double) * nh);
    ref_scan(a, yr, hr);
    double num = 0, den = 0;
    for (size_t i = 0; i < ny; i++) {
        num += (y[i] - yr[i]) * (y[i] - yr[i]);
        den += yr[i] * yr[i];
    }
    ck_assert_msg(sqrt(num) <= 1e-5 * sqrt(den) + 1e-7, "y rel err %g", sqrt(num / (den + 1e-300)));
    if (h_out) {
        num = den = 0;
        for (size_t i = 0; i < nh; i++) {
            num += (h_out[i] - hr[i]) * (h_out[i] - hr[i]);
            den += hr[i] * hr[i];
        }
        ck_assert_msg(sqrt(num) <= 1e-5 * sqrt(den) + 1e-7, "h rel err %g",
                      sqrt(num / (den + 1e-300)));
    }
    free(yr);
    free(hr);
}

START_TEST(scan_filtered_matches_reference)
{
    scan_case c;
    scan_case_make(&c, 37, 13, 5);
    lm_scan_args a;
    scan_args_of(&c, &a);
    char err[256];
    /* a Δ exactly at its channel's threshold is dropped (strict >) */
    c.mask[1] = 1;
    c.thr[1] = c.delta[5 * c.E + 1];
    /* filtered, post-softplus Δ, state in and out */
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_OK);
    check_scan_vs_ref(&a, c.y, c.s_out);
    /* filtering really removed tokens: count filtered (channel, token) pairs */
    int64_t dropped = 0;
    for (int64_t t = 0; t < c.L; t++)
        for (int64_t e = 0; e < c.E; e++)
            dropped += c.mask[e] && !(c.delta[t * c.E + e] > c.thr[e]);
    ck_assert_int_gt(dropped, 0);
    /* the same with raw dt + bias inside the scan */
    a.delta_is_dt = 1;
    a.dt_bias = c.dt_bias;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_OK);
    check_scan_vs_ref(&a, c.y, c.s_out);
    /* no mask, no z, no D, zero initial state, no state out */
    a.global_mask = NULL;
    a.thresholds = NULL;
    a.z = NULL;
    a.D = NULL;
    a.state_in = NULL;
    a.state_out = NULL;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_OK);
    check_scan_vs_ref(&a, c.y, NULL);
    scan_case_free(&c);
}
END_TEST

START_TEST(scan_state_chaining_and_alias)
{
    /* Scanning [0, L) at once equals [0, k) then [k, L) with the state
     * carried through an aliased state_in == state_out buffer. */
    scan_case c;
    scan_case_make(&c, 40, 9, 4);
    lm_scan_args a;
    scan_args_of(&c, &a);
    ck_assert_int_eq(lm_scan_filtered(&a, NULL, 0), LM_OK);
    float *y_full = malloc(sizeof(float) * 40 * 9);
    memcpy(y_full, c.y, sizeof(float) * 40 * 9);
    float h_full[36];
    memcpy(h_full, c.s_out, sizeof h_full);

    float h[36];
    memcpy(h, c.s_in, sizeof h);
    float *y2 = malloc(sizeof(float) * 40 * 9);
    int64_t k = 17;
    lm_scan_args b = a;
    b.length = k;
    b.state_in = h;
    b.state_out = h;
    b.y = y2;
    ck_assert_int_eq(lm_scan_filtered(&b, NULL, 0), LM_OK);
    b.length = 40 - k;
    b.u = c.u + k * 9;
    b.delta = c.delta + k * 9;
    b.z = c.z + k * 9;
    b.B = c.B + k * 4;
    b.C = c.C + k * 4;
    b.y = y2 + k * 9;
    ck_assert_int_eq(lm_scan_filtered(&b, NULL, 0), LM_OK);
    for (int i = 0; i < 40 * 9; i++)
        ck_assert_float_eq_tol(y2[i], y_full[i], 1e-5f * (1 + fabsf(y_full[i])));
    for (int i = 0; i < 36; i++)
        ck_assert_float_eq_tol(h[i], h_full[i], 1e-5f * (1 + fabsf(h_full[i])));
    free(y_full);
    free(y2);
    scan_case_free(&c);
}
END_TEST

START_TEST(scan_rejects_bad_arguments)
{
    scan_case c;
    scan_case_make(&c, 5, 3, 2);
    lm_scan_args a;
    char err[256];
    ck_assert_int_eq(lm_scan_filtered(NULL, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_str_ne(err, "");

    scan_args_of(&c, &a);
    a.struct_size = 8;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "struct_size"));

    scan_args_of(&c, &a);
    a.length = 0;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    scan_args_of(&c, &a);
    a.channels = -1;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    scan_args_of(&c, &a);
    a.state_size = 0;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    scan_args_of(&c, &a);
    a.length = INT64_MAX / 2;
    a.channels = 1 << 20;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "overflow"));

    const char *names[] = {"u", "delta", "A", "B", "C", "y"};
    for (int i = 0; i < 6; i++) {
        scan_args_of(&c, &a);
        const float **fields[] = {&a.u, &a.delta, &a.A, &a.B, &a.C};
        if (i < 5)
            *fields[i] = NULL;
        else
            a.y = NULL;
        ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
        char want[32];
        snprintf(want, sizeof want, "'%s'", names[i]);
        ck_assert_ptr_nonnull(strstr(err, want));
    }
    scan_args_of(&c, &a);
    a.thresholds = NULL;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "thresholds"));
    scan_args_of(&c, &a);
    a.delta_is_dt = 2;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    scan_args_of(&c, &a);
    a.n_threads = -1;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    scan_args_of(&c, &a);
    c.thr[1] = NAN;
    float before = c.y[0];
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_ERR_NUMERIC);
    ck_assert_float_eq(c.y[0], before); /* nothing written on error */
    /* success clears the message */
    c.thr[1] = 0.5f;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_OK);
    ck_assert_str_eq(err, "");
    scan_case_free(&c);
}
END_TEST

/* ---- calibration files ------------------------------------------------------ */

/* A small calibration built by hand: 2 layers, 3 channels, 2 buckets. */
static lm_calibration *hand_calib(void)
{
    lm_calibration *c = lmi_alloc(1, sizeof *c);
    c->arch = LM_ARCH_MAMBA1;
    c->n_layer = 2;
    c->n_channels = 3;
    c->calib_length = 100;
    c->n_windows = 4;
    c->clamp = 0.15;
    c->agg = LM_CALIB_AGG_MEAN;
    c->fingerprint = 0xfedcba9876543210ull;
    c->n_buckets = 2;
    c->buckets = lmi_alloc(2, sizeof(int64_t));
    c->buckets[0] = 100;
    c->buckets[1] = 300;
    c->log_decay = lmi_alloc(6, sizeof(double));
    const double ld[6] = {-0.01, -5.0, -80.0, -2.5, -1e-7, -700.0};
    memcpy(c->log_decay, ld, sizeof ld);
    c->thr = lmi_alloc(12, sizeof(float));
    /* layer 0: bucket 100 all zero, bucket 300 = .1 .2 .3; layer 1: 0s, .4 .5 .6 */
    const float thr[12] = {0, 0, 0, 0.1f, 0.2f, 0.3f, 0, 0, 0, 0.4f, 0.5f, 0.6f};
    memcpy(c->thr, thr, sizeof thr);
    return c;
}

/* A fake model: only what calibrations and modes look at. */
static void fake_model(lm_model *m, const lm_calibration *c)
{
    memset(m, 0, sizeof *m);
    m->dims.arch = c->arch;
    m->dims.n_layer = c->n_layer;
    m->dims.n_channels = c->n_channels;
    m->dims.d_inner = c->n_channels;
    m->fingerprint = c->fingerprint;
}

START_TEST(calibration_round_trip)
{
    lm_calibration *c = hand_calib();
    char path[512], err[512];
    tmp_path(path, sizeof path, "calib_rt.safetensors");
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
    lm_calibration *c = hand_calib();
    char path[512], err[512];
    tmp_path(path, sizeof path, "calib_fp.safetensors");
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
    lm_calibration *c = hand_calib();
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
    tmp_path(path, sizeof path, "calib_bad.safetensors");
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
    lm_calibration *c = hand_calib();
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

/* ---- modes on a fake session (no backend needed) -------------------------- */

START_TEST(longmamba_mode_validation_and_prepare)
{
    lm_calibration *c = hand_calib();
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
    ck_assert_int_eq(s.mode, LM_MODE_LONGMAMBA);
    ck_assert_int_eq(s.trigger, 150); /* round(1.5 * 100) */

    lmi_forward f = {0};
    /* shorter than the trigger: no filters */
    ck_assert_int_eq(lmi_modes_prepare(&s, 149, &f), LM_OK);
    ck_assert_ptr_null(f.filters);
    /* 150 tokens: nearest bucket 100 (all-zero thresholds) */
    ck_assert_int_eq(lmi_modes_prepare(&s, 150, &f), LM_OK);
    ck_assert_ptr_nonnull(f.filters);
    for (int l = 0; l < 2; l++)
        for (int ch = 0; ch < 3; ch++)
            ck_assert_float_eq(f.filters[l].tau[ch], 0.0f);
    /* 250 tokens: bucket 300 (ties go down: 200 -> 100) */
    ck_assert_int_eq(lmi_modes_prepare(&s, 200, &f), LM_OK);
    ck_assert_float_eq(f.filters[1].tau[1], 0.0f);
    ck_assert_int_eq(lmi_modes_prepare(&s, 250, &f), LM_OK);
    ck_assert_float_eq_tol(f.filters[0].tau[0], 0.1f, 1e-7f);
    ck_assert_float_eq_tol(f.filters[1].tau[1], 0.5f, 1e-7f);
    ck_assert_int_eq(f.filters[0].global[0], 1);
    ck_assert_int_eq(f.filters[0].global[1], 0);
    ck_assert_int_eq(f.filters[1].global[1], 1);
    ck_assert_int_eq(f.filters[1].global[2], 0);
    ck_assert_ptr_null(f.deci_budget);

    /* scale b and an explicit trigger */
    p.threshold_scale = 2.0;
    p.trigger_length = 10;
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_OK);
    ck_assert_int_eq(lmi_modes_prepare(&s, 10, &f), LM_OK);
    ck_assert_ptr_nonnull(f.filters);
    ck_assert_int_eq(lmi_modes_prepare(&s, 100000, &f), LM_OK);
    ck_assert_float_eq_tol(f.filters[1].tau[0], 0.8f, 1e-7f);
    /* b = 0 (default 1) */
    p.threshold_scale = 0;
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_OK);
    ck_assert_int_eq(lmi_modes_prepare(&s, 100000, &f), LM_OK);
    ck_assert_float_eq_tol(f.filters[1].tau[0], 0.4f, 1e-7f);
    /* a layer without global channels gets no filter: theta above all decays */
    p.theta = 0.5; /* log -0.69: only layer 0 ch 0 (-0.01) and layer 1 ch 1 (-1e-7) */
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_OK);
    p.theta = exp(-1e-3); /* only layer 1 ch 1 (-1e-7) */
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_OK);
    ck_assert_int_eq(lmi_modes_prepare(&s, 100000, &f), LM_OK);
    ck_assert_ptr_null(f.filters[0].global);
    ck_assert_ptr_nonnull(f.filters[1].global);
    /* default theta for Mamba-1 is 1e-3 (log -6.9): {1,1,0},{1,1,0} */
    lm_longmamba_params_init(&p);
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, NULL), LM_OK);
    ck_assert_double_eq(s.theta, 1e-3);
    ck_assert_int_eq(s.global[1], 1);
    ck_assert_int_eq(s.global[2], 0);

    /* bad parameters keep the mode and record a message */
    const double bad_theta[] = {-1e-3, NAN, INFINITY};
    for (int i = 0; i < 3; i++) {
        lm_longmamba_params_init(&p);
        p.theta = bad_theta[i];
        s.err.msg[0] = '\0';
        ck_assert_int_eq(lm_session_set_longmamba(&s, c, &p), LM_ERR_OUT_OF_RANGE);
        ck_assert_ptr_nonnull(strstr(s.err.msg, "theta"));
        ck_assert_double_eq(s.theta, 1e-3);
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
    ck_assert_int_eq(s.mode, LM_MODE_LONGMAMBA);

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
    ck_assert_int_eq(s.mode, LM_MODE_VANILLA);
    ck_assert_int_eq(lmi_modes_prepare(&s, 100000, &f), LM_OK);
    ck_assert_ptr_null(f.filters);
    ck_assert(!lmi_modes_single_chunk(&s));
    lmi_modes_free(&s);
    lm_calibration_free(c);
}
END_TEST

START_TEST(mamba2_default_theta)
{
    lm_calibration *c = hand_calib();
    c->arch = LM_ARCH_MAMBA2;
    lm_model m;
    fake_model(&m, c);
    lm_session s;
    memset(&s, 0, sizeof s);
    s.model = &m;
    ck_assert_int_eq(lm_session_set_longmamba(&s, c, NULL), LM_OK);
    ck_assert_double_eq(s.theta, 5e-2);
    /* log 0.05 = -3.0: {1,0,0},{1,1,0} */
    const uint8_t want[6] = {1, 0, 0, 1, 1, 0};
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(s.global[i], want[i]);
    lmi_modes_free(&s);
    lm_calibration_free(c);
}
END_TEST

START_TEST(decimamba_mode_validation)
{
    lm_model m;
    memset(&m, 0, sizeof m);
    m.dims.arch = LM_ARCH_MAMBA1;
    m.dims.n_layer = 6;
    m.dims.n_channels = 8;
    lm_session s;
    memset(&s, 0, sizeof s);
    s.model = &m;

    lm_decimamba_params p;
    lm_decimamba_params_init(&p);
    ck_assert_int_eq(p.l_base, 2000);
    ck_assert_double_eq(p.beta, 1.0);
    ck_assert_int_eq(p.min_len, 20);
    ck_assert_int_eq(p.protect, 1);
    /* defaults: the middle layer n_layer / 2 = 3 */
    ck_assert_int_eq(lm_session_set_decimamba(&s, NULL), LM_OK);
    ck_assert_int_eq(s.mode, LM_MODE_DECIMAMBA);
    ck_assert(lmi_modes_single_chunk(&s));
    for (int l = 0; l < 6; l++)
        ck_assert_double_eq(s.deci_budget[l], l == 3 ? 2000.0 : -1.0);
    ck_assert_int_eq(s.deci_min_len, 20);
    ck_assert_int_eq(s.deci_protect, 1);
    lmi_forward f = {0};
    ck_assert_int_eq(lmi_modes_prepare(&s, 5, &f), LM_OK);
    ck_assert_ptr_eq(f.deci_budget, s.deci_budget);
    ck_assert_int_eq(f.deci_min_len, 20);
    ck_assert_int_eq(f.deci_protect, 1);
    ck_assert_ptr_null(f.filters);

    /* a list with beta: layer s keeps l_base * beta^s */
    const int32_t layers[] = {4, 1, 2};
    p.layers = layers;
    p.n_layers = 3;
    p.l_base = 1000;
    p.beta = 0.5;
    p.min_len = 7;
    p.protect = 3;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &p), LM_OK);
    ck_assert_double_eq(s.deci_budget[4], 1000.0);
    ck_assert_double_eq(s.deci_budget[1], 500.0);
    ck_assert_double_eq(s.deci_budget[2], 250.0);
    ck_assert_double_eq(s.deci_budget[0], -1.0);
    ck_assert_int_eq(s.deci_min_len, 7);
    ck_assert_int_eq(s.deci_protect, 3);

    /* errors leave the previous configuration alone */
    const int32_t out_of_range[] = {1, 6};
    const int32_t negative[] = {-1};
    const int32_t dup[] = {2, 2};
    lm_decimamba_params q = p;
    q.layers = out_of_range;
    q.n_layers = 2;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &q), LM_ERR_OUT_OF_RANGE);
    ck_assert_ptr_nonnull(strstr(s.err.msg, "layer 6"));
    q.layers = negative;
    q.n_layers = 1;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &q), LM_ERR_OUT_OF_RANGE);
    q.layers = dup;
    q.n_layers = 2;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &q), LM_ERR_INVALID_ARGUMENT);
    q = p;
    q.n_layers = 0;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &q), LM_ERR_INVALID_ARGUMENT);
    q = p;
    q.l_base = -5;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &q), LM_ERR_OUT_OF_RANGE);
    q = p;
    q.beta = -0.5;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &q), LM_ERR_OUT_OF_RANGE);
    q.beta = NAN;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &q), LM_ERR_OUT_OF_RANGE);
    q = p;
    q.min_len = -1;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &q), LM_ERR_OUT_OF_RANGE);
    q = p;
    q.protect = -2;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &q), LM_ERR_OUT_OF_RANGE);
    q = p;
    q.struct_size = 3;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &q), LM_ERR_INVALID_ARGUMENT);
    ck_assert_double_eq(s.deci_budget[1], 500.0);
    ck_assert_int_eq(s.deci_protect, 3);
    ck_assert_int_eq(lm_session_set_decimamba(NULL, &p), LM_ERR_INVALID_ARGUMENT);
    lmi_modes_free(&s);
}
END_TEST

/* ---- session level: a real model (fixture m1-odd-f32) -------------------- */

#define FIXTURE LM_TEST_DATA "/fixtures/m1-odd-f32"

static lm_model *load_fixture(void)
{
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CPU;
    mp.n_threads = 2;
    lm_model *m = NULL;
    char err[512];
    lm_status st = lm_model_load(FIXTURE, &mp, &m, err, sizeof err);
    ck_assert_msg(st == LM_OK, "load %s: %s", FIXTURE, err);
    return m;
}

static int32_t *rand_tokens(uint64_t seed, int64_t n, int64_t vocab)
{
    uint64_t save = rng_state;
    rng_state = seed;
    int32_t *t = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        t[i] = (int32_t)(rng_next() % (uint64_t)vocab);
    rng_state = save;
    return t;
}

static lm_session *new_session(const lm_model *m, int64_t chunk)
{
    lm_session_params sp;
    lm_session_params_init(&sp);
    sp.chunk_size = chunk;
    lm_session *s = NULL;
    char err[512];
    ck_assert_msg(lm_session_create(m, &sp, &s, err, sizeof err) == LM_OK, "session: %s", err);
    return s;
}

/* Logits of the last position after a prefill of `toks` from zero state. */
static float *prefill_last(lm_session *s, const int32_t *toks, int64_t n)
{
    int64_t V = s->model->dims.vocab;
    float *lg = malloc(sizeof(float) * (size_t)V);
    ck_assert_int_eq(lm_session_reset(s), LM_OK);
    lm_status st = lm_session_prefill(s, toks, (size_t)n, 1, lg, (size_t)V);
    ck_assert_msg(st == LM_OK, "prefill: %s", lm_session_last_error(s));
    return lg;
}

static double max_abs_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

static double max_abs(const float *a, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}

/* Calibration windows: n windows of len random tokens. */
static lm_calibration *calibrate_fixture(const lm_model *m, const int64_t *buckets, size_t nb,
                                         lm_calib_agg agg, double clamp, int n, int64_t len)
{
    const int32_t *win[8];
    size_t lens[8];
    int32_t *buf[8];
    for (int i = 0; i < n; i++) {
        buf[i] = rand_tokens(1000 + (uint64_t)i, len, m->dims.vocab);
        win[i] = buf[i];
        lens[i] = (size_t)len;
    }
    lm_calib_params cp;
    lm_calib_params_init(&cp);
    cp.buckets = buckets;
    cp.n_buckets = nb;
    cp.aggregation = agg;
    cp.clamp = clamp;
    lm_calibration *c = NULL;
    char err[512];
    lm_status st = lm_calibrate(m, win, lens, (size_t)n, &cp, &c, err, sizeof err);
    ck_assert_msg(st == LM_OK, "calibrate: %s", err);
    for (int i = 0; i < n; i++)
        free(buf[i]);
    return c;
}

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
        int32_t *toks = rand_tokens(1000 + (uint64_t)w, T, d->vocab);
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
                    naive_stats(col, T, clamp, m->layers[l].A + ch * N, N, 0, buckets, 6, &ld, thr);
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
    int32_t *a = rand_tokens(7, 40, m->dims.vocab);
    int32_t *b = rand_tokens(8, 40, m->dims.vocab);
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
    tmp_path(path, sizeof path, "calib_model.safetensors");
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

/* ---- a float64 reference forward with LongMamba filtering and DeciMamba -- */

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

static double softplus_d(double v)
{
    return v > 20 ? v : log1p(exp(v));
}
static double silu_d(double v)
{
    return v / (1 + exp(-v));
}

/* Logits (V doubles) of the last position of `toks` from zero state,
 * MAMBA.md §1 in double, with the LONGMAMBA.md §4-5 modifications. */
static void ref_forward(const lm_model *m, const int32_t *toks, int64_t L0, ref_mode *md,
                        double *logits)
{
    const lmi_dims *d = &m->dims;
    int64_t dm = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    int64_t L = L0;
    double *res = calloc((size_t)(L * dm), sizeof(double));
    double *hn = calloc((size_t)dm, sizeof(double));
    double *x = calloc((size_t)(L * E), sizeof(double)),
           *z = calloc((size_t)(L * E), sizeof(double));
    double *u = calloc((size_t)(L * E), sizeof(double)),
           *dl = calloc((size_t)(L * E), sizeof(double));
    double *Bm = calloc((size_t)(L * N), sizeof(double)),
           *Cm = calloc((size_t)(L * N), sizeof(double));
    double *h = calloc((size_t)(E * N), sizeof(double)), *y = calloc((size_t)E, sizeof(double));
    double *score = calloc((size_t)L, sizeof(double));
    md->min_gap = INFINITY;
    for (int64_t t = 0; t < L; t++)
        for (int64_t i = 0; i < dm; i++)
            res[t * dm + i] = m->embed[toks[t] * dm + i];
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmi_layer *ly = &m->layers[l];
        for (int64_t t = 0; t < L; t++) {
            double ss = 0;
            for (int64_t i = 0; i < dm; i++)
                ss += res[t * dm + i] * res[t * dm + i];
            double inv = 1 / sqrt(ss / dm + d->eps);
            for (int64_t i = 0; i < dm; i++)
                hn[i] = res[t * dm + i] * inv * ly->norm_w[i];
            for (int64_t o = 0; o < 2 * E; o++) {
                double acc = ly->in_b ? ly->in_b[o] : 0;
                for (int64_t i = 0; i < dm; i++)
                    acc += (double)ly->in_w[o * dm + i] * hn[i];
                if (o < E)
                    x[t * E + o] = acc;
                else
                    z[t * E + o - E] = acc;
            }
        }
        /* conv sees the full sequence, then x_proj, dt_proj, softplus */
        for (int64_t t = 0; t < L; t++) {
            for (int64_t e = 0; e < E; e++) {
                double acc = ly->conv_b ? ly->conv_b[e] : 0;
                for (int64_t k = 0; k < K; k++) {
                    int64_t src = t - (K - 1) + k;
                    if (src >= 0)
                        acc += (double)ly->conv_w[e * K + k] * x[src * E + e];
                }
                u[t * E + e] = silu_d(acc);
            }
            double dtl[64];
            for (int64_t r = 0; r < R + 2 * N; r++) {
                double acc = 0;
                for (int64_t e = 0; e < E; e++)
                    acc += (double)ly->x_w[r * E + e] * u[t * E + e];
                if (r < R)
                    dtl[r] = acc;
                else if (r < R + N)
                    Bm[t * N + r - R] = acc;
                else
                    Cm[t * N + r - R - N] = acc;
            }
            for (int64_t e = 0; e < E; e++) {
                double acc = ly->dt_b[e];
                for (int64_t r = 0; r < R; r++)
                    acc += (double)ly->dt_w[e * R + r] * dtl[r];
                dl[t * E + e] = softplus_d(acc);
            }
        }
        /* DeciMamba: keep the top-K ||Δ_t|| among the first L-R, plus the last R */
        if (md->budget && md->budget[l] >= 0 && L > md->protect) {
            int64_t Rp = md->protect, n = L - Rp;
            double k = fmax(fmin((double)n, md->budget[l]), (double)md->min_len);
            int64_t Kk = k >= (double)n ? n : (int64_t)k;
            if (Kk < n) {
                for (int64_t t = 0; t < L; t++) {
                    double ss = 0;
                    for (int64_t e = 0; e < E; e++)
                        ss += dl[t * E + e] * dl[t * E + e];
                    score[t] = sqrt(ss);
                }
                /* the selection is only ambiguous at the K-th / (K+1)-th boundary */
                double *sorted = malloc(sizeof(double) * (size_t)n);
                memcpy(sorted, score, sizeof(double) * (size_t)n);
                qsort(sorted, (size_t)n, sizeof(double), cmp_desc);
                if (Kk > 0)
                    md->min_gap = fmin(md->min_gap, (sorted[Kk - 1] - sorted[Kk]) / sorted[Kk - 1]);
                free(sorted);
                int64_t o = 0;
                for (int64_t t = 0; t < L; t++) {
                    int64_t better = 0;
                    for (int64_t v = 0; v < n && t < n; v++)
                        if (score[v] > score[t] || (score[v] == score[t] && v < t))
                            better++;
                    if (t >= n || better < Kk) {
                        /* gather row t into row o */
                        memmove(res + o * dm, res + t * dm, sizeof(double) * (size_t)dm);
                        memmove(u + o * E, u + t * E, sizeof(double) * (size_t)E);
                        memmove(z + o * E, z + t * E, sizeof(double) * (size_t)E);
                        memmove(dl + o * E, dl + t * E, sizeof(double) * (size_t)E);
                        memmove(Bm + o * N, Bm + t * N, sizeof(double) * (size_t)N);
                        memmove(Cm + o * N, Cm + t * N, sizeof(double) * (size_t)N);
                        o++;
                    }
                }
                ck_assert_int_eq(o, Kk + Rp);
                L = o;
            }
        }
        if (md->choose) {
            /* τ in the middle of the widest relative gap of the sorted Δ
             * between ranks 10% and 70%; no usable gap -> local channel */
            double *srt = malloc(sizeof(double) * (size_t)L);
            for (int64_t e = 0; e < E; e++) {
                for (int64_t t = 0; t < L; t++)
                    srt[t] = dl[t * E + e];
                qsort(srt, (size_t)L, sizeof(double), cmp_desc);
                double best = 0;
                int64_t bq = -1;
                for (int64_t q = L / 10; q < 7 * L / 10; q++) {
                    double gap = (srt[q] - srt[q + 1]) / srt[q];
                    if (gap > best) {
                        best = gap;
                        bq = q;
                    }
                }
                bool g = e % 4 != 0 && bq >= 0 && best > 1e-3;
                md->global_out[l * E + e] = g;
                md->tau_out[l * E + e] = g ? (float)(0.5 * (srt[bq] + srt[bq + 1])) : 0.0f;
            }
            free(srt);
        }
        /* LongMamba: if global and not (Δ > τ): Δ = 0 */
        if (md->global || md->choose) {
            const uint8_t *g = (md->choose ? md->global_out : md->global) + l * E;
            const float *tau = (md->choose ? md->tau_out : md->tau) + l * E;
            for (int64_t t = 0; t < L; t++)
                for (int64_t e = 0; e < E; e++) {
                    if (!g[e])
                        continue;
                    double v = dl[t * E + e];
                    if (tau[e] > 0)
                        md->min_gap = fmin(md->min_gap, fabs(v - tau[e]) / tau[e]);
                    if (!(v > tau[e]))
                        dl[t * E + e] = 0;
                }
        }
        memset(h, 0, sizeof(double) * (size_t)(E * N));
        for (int64_t t = 0; t < L; t++) {
            for (int64_t e = 0; e < E; e++) {
                double dv = dl[t * E + e], acc = 0;
                for (int64_t n = 0; n < N; n++) {
                    double *hh = &h[e * N + n];
                    *hh = exp(dv * ly->A[e * N + n]) * *hh + dv * Bm[t * N + n] * u[t * E + e];
                    acc += *hh * Cm[t * N + n];
                }
                y[e] = (acc + ly->D[e] * u[t * E + e]) * silu_d(z[t * E + e]);
            }
            for (int64_t o = 0; o < dm; o++) {
                double acc = ly->out_b ? ly->out_b[o] : 0;
                for (int64_t e = 0; e < E; e++)
                    acc += (double)ly->out_w[o * E + e] * y[e];
                res[t * dm + o] += acc;
            }
        }
    }
    const double *last = res + (L - 1) * dm;
    double ss = 0;
    for (int64_t i = 0; i < dm; i++)
        ss += last[i] * last[i];
    double inv = 1 / sqrt(ss / dm + d->eps);
    for (int64_t i = 0; i < dm; i++)
        hn[i] = last[i] * inv * m->norm_f[i];
    for (int64_t v = 0; v < d->vocab; v++) {
        double acc = 0;
        for (int64_t i = 0; i < dm; i++)
            acc += (double)m->lm_head[v * dm + i] * hn[i];
        logits[v] = acc;
    }
    free(res);
    free(hn);
    free(x);
    free(z);
    free(u);
    free(dl);
    free(Bm);
    free(Cm);
    free(h);
    free(y);
    free(score);
}

/* max |lib - ref| <= 1e-5 * max |ref| (fp32 against float64) */
static void check_vs_ref(const float *lib, const double *ref, int64_t V, const char *what)
{
    double mx = 0, diff = 0;
    for (int64_t v = 0; v < V; v++) {
        mx = fmax(mx, fabs(ref[v]));
        diff = fmax(diff, fabs((double)lib[v] - ref[v]));
    }
    ck_assert_msg(diff <= 1e-5 * mx, "%s: max diff %g, max |logit| %g", what, diff, mx);
}

static double diff_vs_ref(const float *lib, const double *ref, int64_t V)
{
    double diff = 0;
    for (int64_t v = 0; v < V; v++)
        diff = fmax(diff, fabs((double)lib[v] - ref[v]));
    return diff;
}

/* Shared fixture for the mode tests: calibration 4 x 64 tokens, buckets
 * {64, 128, 256, 512}: trigger 96, a 300-token prompt uses bucket 256. */
static const int64_t mode_buckets[] = {64, 128, 256, 512};

START_TEST(longmamba_filtering_matches_reference)
{
    lm_model *m = load_fixture();
    int64_t V = m->dims.vocab, E = m->dims.d_inner, nl = m->dims.n_layer;
    int32_t *toks = rand_tokens(42, 300, V);
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
    ck_assert_int_eq(s->trigger, 96);
    float *lm = prefill_last(s, toks, 300); /* bucket 256, τ = the chosen thresholds */

    ref_mode none = {0};
    ref_forward(m, toks, 300, &none, ref_van);
    check_vs_ref(van, ref_van, V, "vanilla");
    check_vs_ref(lm, ref, V, "longmamba");
    /* filtering changes the output, far beyond the fp32 tolerance */
    ck_assert_msg(max_abs_diff(van, lm, V) > 5e-4 * max_abs(van, V),
                  "filtering did not change the logits (%g)", max_abs_diff(van, lm, V));
    ck_assert(diff_vs_ref(van, ref, V) > 100 * diff_vs_ref(lm, ref, V));

    /* b = 2 doubles every τ: keeps fewer tokens, another result */
    p.threshold_scale = 2.0;
    ck_assert_int_eq(lm_session_set_longmamba(s, c, &p), LM_OK);
    float *lm2 = prefill_last(s, toks, 300);
    ck_assert(max_abs_diff(lm2, lm, V) > 1e-3 * max_abs(lm, V));

    /* with a real calibration (4 x 64 tokens, θ 1e-3) filtering is active
     * and changes the logits too */
    lm_calibration *rc = calibrate_fixture(m, mode_buckets, 4, LM_CALIB_AGG_MAX, 0.0, 4, 64);
    p.threshold_scale = 1.0;
    p.theta = 1e-3;
    ck_assert_int_eq(lm_session_set_longmamba(s, rc, &p), LM_OK);
    int64_t ng = 0;
    for (int64_t i = 0; i < nl * E; i++)
        ng += s->global[i];
    ck_assert_int_gt(ng, 0);
    float *lmr = prefill_last(s, toks, 300);
    ck_assert(max_abs_diff(van, lmr, V) > 1e-3 * max_abs(van, V));

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
END_TEST

START_TEST(longmamba_below_trigger_is_vanilla)
{
    lm_model *m = load_fixture();
    int64_t V = m->dims.vocab;
    lm_calibration *c = calibrate_fixture(m, mode_buckets, 4, LM_CALIB_AGG_MAX, 0.0, 4, 64);
    int32_t *toks = rand_tokens(43, 300, V);
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
    ck_assert(max_abs_diff(van300, lm300b, V) > 1e-3 * max_abs(van300, V));
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
    int32_t *toks = rand_tokens(44, 300, V);
    lm_session *s = new_session(m, 512);
    float *van = prefill_last(s, toks, 300);
    lm_longmamba_params p;
    lm_longmamba_params_init(&p);
    p.theta = 1e-30; /* most channels global */
    ck_assert_int_eq(lm_session_set_longmamba(s, c, &p), LM_OK);
    lmi_forward f = {0};
    ck_assert_int_eq(lmi_modes_prepare(s, 300, &f), LM_OK);
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
    int32_t *toks = rand_tokens(45, 306, V);
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
    int32_t *toks = rand_tokens(46, 300, V);
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
    ck_assert_msg(max_abs_diff(lg, ref, V) <= 1e-5 * max_abs(ref, V), "chunked vs one-shot %g",
                  max_abs_diff(lg, ref, V));
    /* the same two calls without the hint pick their buckets from 60 (below
     * the trigger: no filtering) and 300: a different result */
    ck_assert_int_eq(lm_session_reset(ch), LM_OK);
    ck_assert_int_eq(lm_session_prefill(ch, toks, 60, 0, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_prefill(ch, toks + 60, 240, 1, lg, (size_t)V), LM_OK);
    ck_assert(max_abs_diff(lg, ref, V) > 1e-3 * max_abs(ref, V));

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

START_TEST(decimamba_matches_reference)
{
    lm_model *m = load_fixture();
    int64_t V = m->dims.vocab, nl = m->dims.n_layer;
    double *ref = malloc(sizeof(double) * (size_t)V), *ref2 = malloc(sizeof(double) * (size_t)V);
    double *budget = malloc(sizeof(double) * (size_t)nl),
           *budget2 = malloc(sizeof(double) * (size_t)nl);
    for (int64_t l = 0; l < nl; l++) {
        budget[l] = l == nl / 2 ? 40.0 : -1.0; /* the middle layer keeps 40 */
        budget2[l] = -1.0;
    }
    budget2[0] = 50.0; /* layers {0, 2} with beta 0.5: 50, then 25 -> min_len 30 */
    budget2[2] = 25.0;
    ref_mode md = {.budget = budget, .min_len = 20, .protect = 1};
    ref_mode md2 = {.budget = budget2, .min_len = 30, .protect = 3};
    /* A prompt whose K-th and (K+1)-th scores are not within fp32 noise of
     * each other (there float64 and fp32 may select differently). */
    int32_t *toks = NULL;
    for (uint64_t seed = 47; seed < 67; seed++) {
        free(toks);
        toks = rand_tokens(seed, 120, V);
        ref_forward(m, toks, 120, &md, ref);
        ref_forward(m, toks, 120, &md2, ref2);
        if (md.min_gap > 1e-5 && md2.min_gap > 1e-5)
            break;
    }
    ck_assert_msg(md.min_gap > 1e-5 && md2.min_gap > 1e-5, "boundary gaps %g %g", md.min_gap,
                  md2.min_gap);
    lm_session *s = new_session(m, 32);
    float *van = prefill_last(s, toks, 120);

    /* budget above the prompt: nothing dropped, identical to vanilla */
    lm_decimamba_params p;
    lm_decimamba_params_init(&p);
    p.l_base = 500;
    ck_assert_int_eq(lm_session_set_decimamba(s, &p), LM_OK);
    float *keep_all = prefill_last(s, toks, 120);
    ck_assert_msg(max_abs_diff(keep_all, van, V) <= 1e-5 * max_abs(van, V),
                  "no-drop decimamba differs");

    /* the middle layer keeps 40 of 119 (+1 protected) */
    p.l_base = 40;
    ck_assert_int_eq(lm_session_set_decimamba(s, &p), LM_OK);
    float *deci = prefill_last(s, toks, 120);
    check_vs_ref(deci, ref, V, "decimamba middle layer");
    ck_assert(max_abs_diff(deci, van, V) > 1e-3 * max_abs(van, V));

    /* two layers with beta 0.5 (keeps 50 then 25 -> min_len 30), R = 3 */
    const int32_t layers[] = {0, 2};
    p.layers = layers;
    p.n_layers = 2;
    p.l_base = 50;
    p.beta = 0.5;
    p.min_len = 30;
    p.protect = 3;
    ck_assert_int_eq(lm_session_set_decimamba(s, &p), LM_OK);
    float *deci2 = prefill_last(s, toks, 120);
    check_vs_ref(deci2, ref2, V, "decimamba two layers");
    /* n_logits beyond the protected tokens is refused */
    float *lg3 = malloc(sizeof(float) * (size_t)(4 * V));
    ck_assert_int_eq(lm_session_reset(s), LM_OK);
    ck_assert_int_eq(lm_session_prefill(s, toks, 120, 3, lg3, (size_t)(4 * V)), LM_OK);
    ck_assert_int_eq(lm_session_prefill(s, toks, 120, 4, lg3, (size_t)(4 * V)),
                     LM_ERR_INVALID_ARGUMENT);
    /* decode steps after a decimated prefill are plain Mamba: compare with
     * a vanilla session loaded with the same state */
    lm_session *v = new_session(m, 32);
    size_t sz = 0;
    ck_assert_int_eq(lm_session_state_size(s, &sz), LM_OK);
    void *blob = malloc(sz);
    ck_assert_int_eq(lm_session_state_save(s, blob, sz, NULL), LM_OK);
    ck_assert_int_eq(lm_session_state_load(v, blob, sz), LM_OK);
    float *da = malloc(sizeof(float) * (size_t)V), *db = malloc(sizeof(float) * (size_t)V);
    ck_assert_int_eq(lm_session_decode(s, toks[5], da, (size_t)V), LM_OK);
    ck_assert_int_eq(lm_session_decode(v, toks[5], db, (size_t)V), LM_OK);
    ck_assert_int_eq(memcmp(da, db, sizeof(float) * (size_t)V), 0);
    free(blob);
    free(da);
    free(db);
    free(lg3);
    lm_session_free(v);
    free(van);
    free(keep_all);
    free(deci);
    free(deci2);
    free(ref);
    free(ref2);
    free(budget);
    free(budget2);
    free(toks);
    lm_session_free(s);
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
    ck_assert_int_eq(s->mode, LM_MODE_VANILLA);
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
    Suite *s = suite_create("longmamba");
    TCase *tp = tcase_create("policy");
    tcase_add_test(tp, default_buckets_are_the_papers_list);
    tcase_add_test(tp, bucket_nearest_ties_and_beyond);
    tcase_add_test(tp, threshold_hand_example);
    tcase_add_test(tp, threshold_k_clamped_and_zero_channel);
    tcase_add_test(tp, log_decay_mamba1_and_stability);
    tcase_add_test(tp, clamp_and_stride);
    tcase_add_test(tp, stats_match_naive_reference);
    tcase_add_test(tp, deci_keep_count_examples);
    tcase_add_test(tp, deci_select_examples);
    tcase_add_test(tp, deci_select_matches_brute_force);
    suite_add_tcase(s, tp);

    TCase *ts = tcase_create("scan");
    tcase_add_test(ts, scan_filtered_matches_reference);
    tcase_add_test(ts, scan_state_chaining_and_alias);
    tcase_add_test(ts, scan_rejects_bad_arguments);
    suite_add_tcase(s, ts);

    TCase *tc = tcase_create("calibration");
    tcase_add_test(tc, calibration_round_trip);
    tcase_add_test(tc, calibration_fingerprint_mismatch);
    tcase_add_test(tc, calibration_malformed_files);
    tcase_add_test(tc, classify_channels_theta);
    suite_add_tcase(s, tc);

    TCase *tm = tcase_create("modes");
    tcase_add_test(tm, longmamba_mode_validation_and_prepare);
    tcase_add_test(tm, mamba2_default_theta);
    tcase_add_test(tm, decimamba_mode_validation);
    suite_add_tcase(s, tm);

    TCase *tx = tcase_create("session");
    tcase_set_timeout(tx, 120);
    tcase_add_test(tx, calibrate_matches_direct_statistics);
    tcase_add_test(tx, calibrate_rejects_bad_input);
    tcase_add_test(tx, longmamba_filtering_matches_reference);
    tcase_add_test(tx, longmamba_below_trigger_is_vanilla);
    tcase_add_test(tx, longmamba_zero_thresholds_is_vanilla);
    tcase_add_test(tx, decode_after_filtered_prefill_is_vanilla);
    tcase_add_test(tx, chunked_prefill_with_hint_equals_one_shot);
    tcase_add_test(tx, decimamba_matches_reference);
    tcase_add_test(tx, set_mode_on_real_session);
    suite_add_tcase(s, tx);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
