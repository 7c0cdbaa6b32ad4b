/* test_longmamba_scan.c - the public filtered scan (lm_scan_filtered)
 * against a double-precision reference, state chaining and argument
 * checks. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "format/safetensors.h"
#include "suite.h"
#include "testutil.h"

/* One sequence for the whole file (each test starts from it: CK_FORK). */
static tu_rng rng = {0x9e3779b97f4a7c15ull};

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

static void scan_case_make(scan_case *c, int64_t L, int64_t E, int64_t N)
{
    c->L = L;
    c->E = E;
    c->N = N;
    c->u = tu_rng_floats(&rng, L * E, -1, 1);
    c->delta = tu_rng_floats(&rng, L * E, 0.001, 1.5);
    c->A = tu_rng_floats(&rng, E * N, -3, -0.05);
    c->B = tu_rng_floats(&rng, L * N, -1, 1);
    c->C = tu_rng_floats(&rng, L * N, -1, 1);
    c->D = tu_rng_floats(&rng, E, -1, 1);
    c->z = tu_rng_floats(&rng, L * E, -2, 2);
    c->dt_bias = tu_rng_floats(&rng, E, -1, 1);
    c->thr = tu_rng_floats(&rng, E, 0.2, 1.0);
    c->s_in = tu_rng_floats(&rng, E * N, -1, 1);
    c->s_out = tu_rng_floats(&rng, E * N, 0, 0);
    c->y = tu_rng_floats(&rng, L * E, 0, 0);
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

/* ---- suite ------------------------------------------------------------------ */

int main(void)
{
    Suite *s = suite_create("longmamba_scan");
    add_tcase(s, "scan", 0,
              (const TTest *[]){scan_filtered_matches_reference, scan_state_chaining_and_alias,
                                scan_rejects_bad_arguments, NULL});
    return run_suite(s);
}
