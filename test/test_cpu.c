/* test_cpu.c - CPU kernels and the CPU forward against float64 references:
 * vectorised exp/log1p/softplus/SiLU, the filtered selective scan, and the
 * whole-model forward (vanilla, LongMamba filters, Δ sink, DeciMamba). */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget_hook.h"
#include "cpu/ops.h"
#include "cpu/vmath.h"
#include "internal.h"
#include "testmodel.h"
#include "suite.h"

/* ---- helpers ------------------------------------------------------------ */

/* Distance in units of the float spacing at the reference (ulp). */
static double ulp_err(float got, double ref)
{
    float r = (float)ref;
    double spacing = (double)nextafterf(fabsf(r), INFINITY) - (double)fabsf(r);
    if (fabs(ref) < (double)FLT_MIN) spacing = (double)FLT_MIN * FLT_EPSILON;
    return fabs((double)got - ref) / spacing;
}

/* ||a - b|| / ||b|| */
static double rel_err_fd(const float *a, const double *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double dd = (double)a[i] - b[i];
        num += dd * dd;
        den += b[i] * b[i];
    }
    return sqrt(num) / (den > 0.0 ? sqrt(den) : 1.0);
}

static double rel_err_ff(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double dd = (double)a[i] - (double)b[i];
        num += dd * dd;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num) / (den > 0.0 ? sqrt(den) : 1.0);
}

static void fill_uniform(float *a, size_t n, tu_rng *rng, double scale, double offset)
{
    for (size_t i = 0; i < n; i++) a[i] = (float)(offset + scale * tu_rng_sym(rng));
}

/* ---- vectorised math ----------------------------------------------------- */

START_TEST(expf_within_2ulp)
{
    /* Every 37th float in the normal-result range, plus the ends. */
    double worst = 0.0;
    float worst_x = 0.0f;
    long n = 0;
    const float lo = -87.33f, hi = 88.72f;
    for (int sign = 0; sign < 2; sign++) {
        uint32_t start = lmi_f32_bits(sign ? -lo : hi), end = 0;
        for (uint32_t b = end; b <= start; b += 37) {
            float x = lmi_f32_from_bits(b | (sign ? 0x80000000u : 0u));
            double err = ulp_err(lmi_expf(x), exp((double)x));
            if (err > worst) {
                worst = err;
                worst_x = x;
            }
            n++;
        }
    }
    ck_assert_msg(worst <= 2.0, "expf: %.3f ulp at %.9g (%ld points)", worst, (double)worst_x, n);
    /* the one-scale form the scan uses for exp(Δ·A) */
    worst = 0.0;
    for (uint32_t b = 0; b <= lmi_f32_bits(87.33f); b += 37)
        for (int sign = 0; sign < 2; sign++) {
            float x = lmi_f32_from_bits(b | (sign ? 0x80000000u : 0u));
            double err = ulp_err(lmi_expf_nonpos(x), exp((double)x));
            if (err > worst) {
                worst = err;
                worst_x = x;
            }
        }
    ck_assert_msg(worst <= 2.0, "expf_nonpos: %.3f ulp at %.9g", worst, (double)worst_x);
    ck_assert(isnan(lmi_expf_nonpos(NAN)));
    ck_assert(lmi_expf_nonpos(-1000.0f) == 0.0f);
    ck_assert(lmi_expf_nonpos(-INFINITY) == 0.0f);
    ck_assert(isinf(lmi_expf_nonpos(90.0f)));
    ck_assert(n > 10000000);
    ck_assert(isnan(lmi_expf(NAN)));
    ck_assert(lmi_expf(-INFINITY) == 0.0f);
    ck_assert(isinf(lmi_expf(INFINITY)) && lmi_expf(INFINITY) > 0);
    ck_assert(isinf(lmi_expf(89.0f)));
    ck_assert(lmi_expf(-100.0f) == 0.0f);
    ck_assert(lmi_expf(0.0f) == 1.0f);
    /* the k = 128 corner just below overflow */
    ck_assert(ulp_err(lmi_expf(88.7f), exp((double)88.7f)) <= 2.0);
}
END_TEST

START_TEST(log1p_softplus_silu_accuracy)
{
    double wl = 0, ws = 0, wz = 0;
    for (float w = 0.0f; w <= 1.0f; w += 1.0f / 65536.0f + w * 1e-4f) {
        double err = ulp_err(lmi_log1pf_01(w), log1p((double)w));
        if (err > wl) wl = err;
    }
    ck_assert_msg(wl <= 2.0, "log1p: %.3f ulp", wl);
    ck_assert(lmi_log1pf_01(0.0f) == 0.0f);
    ck_assert(lmi_log1pf_01(1e-30f) == 1e-30f);
    for (float v = -80.0f; v <= 40.0f; v += 1.0f / 1024.0f) {
        double ref = v > 20.0f ? (double)v : log1p(exp((double)v));
        double err = ulp_err(lmi_softplusf(v), ref);
        if (err > ws) ws = err;
        double zr = (double)v / (1.0 + exp(-(double)v));
        err = ulp_err(lmi_siluf(v), zr);
        if (err > wz) wz = err;
    }
    ck_assert_msg(ws <= 3.0, "softplus: %.3f ulp", ws);
    ck_assert_msg(wz <= 4.0, "silu: %.3f ulp", wz);
    ck_assert(lmi_softplusf(25.0f) == 25.0f); /* threshold: identity above 20 */
    ck_assert(isnan(lmi_softplusf(NAN)));
}
END_TEST

/* ---- the scan ------------------------------------------------------------ */

typedef struct scan_case {
    int64_t L, E, N;
    bool softplus, filter, z, D, state_in;
    int threads;
} scan_case;

/* Float64 scan of the lmi_scan_m1 contract. */
static void ref_scan(const lmi_scan_m1 *a, const float *h0, double *y, double *h, int64_t *n_filtered,
                     int64_t *n_kept)
{
    const int64_t L = a->L, E = a->E, N = a->N;
    for (int64_t i = 0; i < E * N; i++) h[i] = h0[i];
    *n_filtered = *n_kept = 0;
    for (int64_t t = 0; t < L; t++)
        for (int64_t e = 0; e < E; e++) {
            double d = a->delta[t * E + e];
            if (a->dt_softplus) {
                double v = d + (a->dt_bias ? a->dt_bias[e] : 0.0);
                d = v > 20.0 ? v : log1p(exp(v));
            }
            if (a->global && a->global[e]) {
                if (!(d > (double)a->tau[e])) {
                    d = 0.0;
                    (*n_filtered)++;
                } else {
                    (*n_kept)++;
                }
            }
            double u = a->u[t * E + e], acc = 0.0;
            for (int64_t n = 0; n < N; n++) {
                double *hh = &h[e * N + n];
                *hh = exp(d * (double)a->A[e * N + n]) * *hh + d * (double)a->B[t * a->ldbc + n] * u;
                acc += *hh * (double)a->C[t * a->ldbc + n];
            }
            double out = acc + (a->D ? (double)a->D[e] * u : 0.0);
            if (a->z) {
                double z = a->z[t * a->ldz + e];
                out *= z / (1.0 + exp(-z));
            }
            y[t * E + e] = out;
        }
}

static void run_scan_case(const scan_case *c, uint64_t seed)
{
    const int64_t L = c->L, E = c->E, N = c->N, ldbc = 2 * N + 5, ldz = E + 3;
    tu_rng rng = {seed};
    float *u = malloc(sizeof(float) * (size_t)(L * E));
    float *dl = malloc(sizeof(float) * (size_t)(L * E));
    float *bc = malloc(sizeof(float) * (size_t)(L * ldbc));
    float *z = malloc(sizeof(float) * (size_t)(L * ldz));
    float *A = malloc(sizeof(float) * (size_t)(E * N));
    float *D = malloc(sizeof(float) * (size_t)E);
    float *dtb = malloc(sizeof(float) * (size_t)E);
    float *tau = malloc(sizeof(float) * (size_t)E);
    uint8_t *glob = malloc((size_t)E);
    float *h = malloc(sizeof(float) * (size_t)(E * N));
    float *h0 = malloc(sizeof(float) * (size_t)(E * N));
    float *y = malloc(sizeof(float) * (size_t)(L * E));
    double *yr = malloc(sizeof(double) * (size_t)(L * E));
    double *hr = malloc(sizeof(double) * (size_t)(E * N));
    ck_assert(u && dl && bc && z && A && D && dtb && tau && glob && h && h0 && y && yr && hr);
    fill_uniform(u, (size_t)(L * E), &rng, 1.5, 0.0);
    if (c->softplus)
        fill_uniform(dl, (size_t)(L * E), &rng, 3.0, -1.0); /* raw dt */
    else
        for (int64_t i = 0; i < L * E; i++) dl[i] = (float)(0.3 * (tu_rng_sym(&rng) + 1.0));
    fill_uniform(bc, (size_t)(L * ldbc), &rng, 1.0, 0.0);
    fill_uniform(z, (size_t)(L * ldz), &rng, 3.0, 0.0);
    for (int64_t i = 0; i < E * N; i++) A[i] = -expf((float)(log((double)(i % N + 1)) + 0.3 * tu_rng_sym(&rng)));
    fill_uniform(D, (size_t)E, &rng, 0.5, 1.0);
    fill_uniform(dtb, (size_t)E, &rng, 1.0, -2.0);
    for (int64_t e = 0; e < E; e++) {
        glob[e] = (uint8_t)(e % 3 != 1);
        tau[e] = c->softplus ? (float)(0.15 + 0.1 * tu_rng_sym(&rng)) : (float)(0.3 + 0.1 * tu_rng_sym(&rng));
    }
    /* one channel with tau exactly equal to a Δ value: strict '>' filters it */
    if (!c->softplus && c->filter) tau[0] = dl[0];
    if (c->state_in)
        fill_uniform(h0, (size_t)(E * N), &rng, 2.0, 0.0);
    else
        memset(h0, 0, sizeof(float) * (size_t)(E * N));
    memcpy(h, h0, sizeof(float) * (size_t)(E * N));
    lmi_scan_m1 a = {
        .L = L, .E = E, .N = N, .u = u, .delta = dl, .dt_softplus = c->softplus,
        .dt_bias = c->softplus ? dtb : NULL, .A = A, .B = bc, .C = bc + N + 2, .ldbc = ldbc,
        .D = c->D ? D : NULL, .z = c->z ? z + 1 : NULL, .ldz = ldz,
        .global = c->filter ? glob : NULL, .tau = c->filter ? tau : NULL, .h = h, .y = y,
    };
    int64_t nf, nk;
    ref_scan(&a, h0, yr, hr, &nf, &nk);
    lmi_cpu_scan_m1(&a, c->threads);
    double ey = rel_err_fd(y, yr, (size_t)(L * E));
    double eh = rel_err_fd(h, hr, (size_t)(E * N));
    ck_assert_msg(ey <= 1e-5 && eh <= 1e-5,
                  "scan L=%lld E=%lld N=%lld sp=%d filt=%d z=%d D=%d h0=%d thr=%d: y %.3g h %.3g",
                  (long long)L, (long long)E, (long long)N, c->softplus, c->filter, c->z, c->D,
                  c->state_in, c->threads, ey, eh);
    if (c->filter && L > 4) {
        /* the thresholds must cut somewhere in the middle, else the case tests nothing */
        ck_assert_msg(nf > 0 && nk > 0, "filter case filtered %lld kept %lld", (long long)nf,
                      (long long)nk);
    }
    if (!c->softplus && c->filter) ck_assert(!(dl[0] > tau[0]));
    free(u); free(dl); free(bc); free(z); free(A); free(D); free(dtb); free(tau); free(glob);
    free(h); free(h0); free(y); free(yr); free(hr);
}

START_TEST(scan_matches_double)
{
    const int64_t Es[] = {37, 48, 80, 5};
    const int64_t Ns[] = {8, 16, 1, 130};
    const int64_t Ls[] = {29, 1, 64};
    int k = 0;
    for (int ie = 0; ie < 4; ie++)
        for (int in = 0; in < 4; in++)
            for (int il = 0; il < 3; il++)
                for (int v = 0; v < 4; v++) {
                    scan_case c = {
                        .L = Ls[il], .E = Es[ie], .N = Ns[in],
                        .softplus = (v & 1) != 0, .filter = (v & 2) != 0 || il == 0,
                        .z = v != 3, .D = v != 2, .state_in = (v & 1) == 0,
                        .threads = 1 + (k % 3),
                    };
                    run_scan_case(&c, 1000 + (uint64_t)k++);
                }
    /* large enough for the threaded path (small scans run on one thread) */
    scan_case big = {.L = 700, .E = 100, .N = 16, .softplus = true, .filter = true, .z = true,
                     .D = true, .state_in = true, .threads = 3};
    run_scan_case(&big, 7);
    big.threads = 2;
    big.N = 8;
    big.softplus = false;
    run_scan_case(&big, 8);
}
END_TEST

START_TEST(scan_threads_do_not_change_results)
{
    const int64_t L = 300, E = 130, N = 16; /* above the one-thread cut-off; a tail block */
    tu_rng rng = {3};
    float *u = malloc(sizeof(float) * (size_t)(L * E)), *dl = malloc(sizeof(float) * (size_t)(L * E));
    float *bc = malloc(sizeof(float) * (size_t)(L * 2 * N)), *A = malloc(sizeof(float) * (size_t)(E * N));
    float *h[2], *y[2];
    fill_uniform(u, (size_t)(L * E), &rng, 1, 0);
    fill_uniform(dl, (size_t)(L * E), &rng, 2, -1);
    fill_uniform(bc, (size_t)(L * 2 * N), &rng, 1, 0);
    fill_uniform(A, (size_t)(E * N), &rng, 1, -2);
    for (int k = 0; k < 2; k++) {
        h[k] = calloc((size_t)(E * N), sizeof(float));
        y[k] = malloc(sizeof(float) * (size_t)(L * E));
        lmi_scan_m1 a = {.L = L, .E = E, .N = N, .u = u, .delta = dl, .dt_softplus = true,
                         .A = A, .B = bc, .C = bc + N, .ldbc = 2 * N, .z = u, .ldz = E,
                         .h = h[k], .y = y[k]};
        lmi_cpu_scan_m1(&a, k == 0 ? 1 : 3);
    }
    ck_assert(memcmp(y[0], y[1], sizeof(float) * (size_t)(L * E)) == 0);
    ck_assert(memcmp(h[0], h[1], sizeof(float) * (size_t)(E * N)) == 0);
    free(u); free(dl); free(bc); free(A);
    for (int k = 0; k < 2; k++) {
        free(h[k]);
        free(y[k]);
    }
}
END_TEST

START_TEST(scan_filtered_tokens_keep_state_and_output)
{
    /* A fully filtered channel: state unchanged (exp(0) = 1, no input),
     * output still C.h + D.u, gated. */
    const int64_t L = 5, E = 3, N = 4;
    float u[15], dl[15], bc[40], z[15], A[12], D[3] = {0.5f, -1.0f, 2.0f}, tau[3] = {10, 10, 10};
    uint8_t glob[3] = {1, 1, 1};
    float h[12], h0[12], y[15];
    tu_rng rng = {7};
    fill_uniform(u, 15, &rng, 1, 0);
    fill_uniform(bc, 40, &rng, 1, 0);
    fill_uniform(z, 15, &rng, 1, 0);
    fill_uniform(h0, 12, &rng, 1, 0);
    for (int i = 0; i < 15; i++) dl[i] = 0.5f;
    for (int i = 0; i < 12; i++) A[i] = -1.0f - (float)i;
    memcpy(h, h0, sizeof h);
    lmi_scan_m1 a = {.L = L, .E = E, .N = N, .u = u, .delta = dl, .A = A, .B = bc, .C = bc + N,
                     .ldbc = 2 * N, .D = D, .z = z, .ldz = E, .global = glob, .tau = tau,
                     .h = h, .y = y};
    lmi_cpu_scan_m1(&a, 2);
    ck_assert(memcmp(h, h0, sizeof h) == 0);
    for (int64_t t = 0; t < L; t++)
        for (int64_t e = 0; e < E; e++) {
            double acc = 0;
            for (int64_t n = 0; n < N; n++) acc += (double)h0[e * N + n] * bc[t * 2 * N + N + n];
            double zz = z[t * E + e];
            double want = (acc + D[e] * u[t * E + e]) * zz / (1 + exp(-zz));
            ck_assert(fabs(y[t * E + e] - want) <= 1e-5 * (1 + fabs(want)));
        }
}
END_TEST

/* ---- the whole forward ---------------------------------------------------- */

static lm_session *new_session(const lm_model *m, int64_t chunk)
{
    lm_session_params p;
    lm_session_params_init(&p);
    p.chunk_size = chunk;
    lm_session *s = NULL;
    char err[256];
    lm_status st = lm_session_create(m, &p, &s, err, sizeof err);
    ck_assert_msg(st == LM_OK, "session_create: %s", err);
    return s;
}

static void check_forward(const tm_config *cfg, int64_t T)
{
    char err[256];
    lm_model *m = tm_model_build(cfg, err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    const int64_t V = m->dims.vocab;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)T);
    tu_rng rng = {cfg->seed + 5};
    for (int64_t t = 0; t < T; t++) tok[t] = (int32_t)((tu_rng_sym(&rng) + 1.0) * 0.5 * (double)V) % (int32_t)V;
    tok[0] = 0;
    tok[T - 1] = (int32_t)V - 1;
    double *ref = malloc(sizeof(double) * (size_t)(T * V));
    float *out = malloc(sizeof(float) * (size_t)(T * V));
    ck_assert_int_eq(tm_reference_forward(m, tok, T, NULL, NULL, 0, 0, ref, NULL), T);
    lm_session *s = new_session(m, 0);
    ck_assert_int_eq(lm_session_prefill(s, tok, (size_t)T, (size_t)T, out, (size_t)(T * V)), LM_OK);
    double e = rel_err_fd(out, ref, (size_t)(T * V));
    ck_assert_msg(e <= 1e-5, "forward d=%lld E=%lld bias=%d tied=%d: rel err %.3g",
                  (long long)cfg->d_model, (long long)cfg->d_inner, cfg->bias, cfg->tied, e);
    /* the last position alone, and its logits carry signal (not all equal) */
    lm_session_reset(s);
    ck_assert_int_eq(lm_session_prefill(s, tok, (size_t)T, 1, out, (size_t)V), LM_OK);
    e = rel_err_fd(out, ref + (T - 1) * V, (size_t)V);
    ck_assert_msg(e <= 1e-5, "last-position logits: rel err %.3g", e);
    double mn = out[0], mx = out[0];
    for (int64_t v = 1; v < V; v++) {
        mn = fmin(mn, out[v]);
        mx = fmax(mx, out[v]);
    }
    ck_assert(mx - mn > 0.1);
    lm_session_free(s);
    tm_model_free(m);
    free(tok);
    free(ref);
    free(out);
}

START_TEST(forward_matches_double)
{
    tm_config c = tm_config_small();
    check_forward(&c, 23); /* biases, untied */
    c.bias = false;
    c.tied = true;
    c.seed = 99;
    check_forward(&c, 23);
    c.conv_bias = false;
    c.bias = true;
    c.n_layer = 3;
    c.seed = 5;
    check_forward(&c, 1);
    c.d_inner = 84; /* not a multiple of the scan block */
    c.d_state = 16;
    c.d_conv = 4;
    c.n_threads = 3;
    c.seed = 6;
    check_forward(&c, 41);
    c.d_conv = 1; /* no conv state at all */
    c.dt_rank = 1;
    c.d_state = 1;
    c.seed = 8;
    check_forward(&c, 9);
    c.d_conv = 2;
    c.seed = 9;
    check_forward(&c, 9);
}
END_TEST

/* Δ sink: collects every layer's Δ. */
typedef struct sink_ctx {
    float *delta; /* [n_layer][T][E] */
    int64_t T, E, n_layer;
    int calls;
} sink_ctx;

static lm_status sink_fn(void *ctx, int64_t layer, const float *delta, int64_t n_tokens,
                         int64_t n_channels, lmi_err *e)
{
    sink_ctx *c = ctx;
    (void)e;
    ck_assert_int_eq(n_tokens, c->T);
    ck_assert_int_eq(n_channels, c->E);
    ck_assert(layer >= 0 && layer < c->n_layer);
    memcpy(c->delta + layer * c->T * c->E, delta, sizeof(float) * (size_t)(n_tokens * n_channels));
    c->calls++;
    return LM_OK;
}

static lm_status failing_sink(void *ctx, int64_t layer, const float *delta, int64_t n_tokens,
                              int64_t n_channels, lmi_err *e)
{
    (void)ctx; (void)layer; (void)delta; (void)n_tokens; (void)n_channels;
    return lmi_fail(e, LM_ERR_NUMERIC, "sink says no");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

START_TEST(forward_filters_and_sink_match_double)
{
    tm_config cfg = tm_config_small();
    cfg.n_layer = 3;
    char err[256];
    lm_model *m = tm_model_build(&cfg, err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    const int64_t T = 50, V = m->dims.vocab, E = m->dims.d_inner, NL = m->dims.n_layer;
    int32_t tok[50];
    tu_rng rng = {77};
    for (int64_t t = 0; t < T; t++) tok[t] = (int32_t)(((tu_rng_sym(&rng) + 1.0) * 0.5) * (double)V) % (int32_t)V;
    double *ref = malloc(sizeof(double) * (size_t)(T * V));
    double *dref = malloc(sizeof(double) * (size_t)(NL * T * E));
    float *out = malloc(sizeof(float) * (size_t)(T * V));
    float *out2 = malloc(sizeof(float) * (size_t)(T * V));
    sink_ctx sc = {.delta = malloc(sizeof(float) * (size_t)(NL * T * E)), .T = T, .E = E, .n_layer = NL};
    ck_assert(ref && dref && out && sc.delta);

    /* Δ from the sink vs the reference's Δ */
    ck_assert_int_eq(tm_reference_forward(m, tok, T, NULL, NULL, 0, 0, ref, dref), T);
    lm_session *s = new_session(m, 0);
    lmi_forward f = {.tokens = tok, .n_tokens = T, .n_out = T, .logits = out, .sink = sink_fn,
                     .sink_ctx = &sc};
    lmi_err e = {{0}};
    ck_assert_int_eq(m->vt->forward(s, &f, &e), LM_OK);
    ck_assert_int_eq(sc.calls, NL);
    double er = rel_err_fd(sc.delta, dref, (size_t)(NL * T * E));
    ck_assert_msg(er <= 1e-5, "sink delta rel err %.3g", er);
    er = rel_err_fd(out, ref, (size_t)(T * V));
    ck_assert_msg(er <= 1e-5, "logits with sink: rel err %.3g", er);

    /* a sink error stops the forward and is returned */
    m->vt->session_reset(s);
    f.sink = failing_sink;
    ck_assert_int_eq(m->vt->forward(s, &f, &e), LM_ERR_NUMERIC);
    ck_assert_str_eq(e.msg, "sink says no");

    /* LongMamba filters: per channel tau = a middle value of its Δ, every
     * other channel global, layer 1 unfiltered. */
    uint8_t *glob = calloc((size_t)(NL * E), 1);
    float *tau = calloc((size_t)(NL * E), sizeof(float));
    lmi_filter *flt = calloc((size_t)NL, sizeof *flt);
    for (int64_t l = 0; l < NL; l++) {
        if (l == 1) continue;
        flt[l].global = glob + l * E;
        flt[l].tau = tau + l * E;
        for (int64_t c = 0; c < E; c++) {
            /* halfway between the channel's two middle Δ values: no token
             * sits near the threshold, so float and double agree on it */
            double v[50];
            for (int64_t t = 0; t < T; t++) v[t] = dref[l * T * E + t * E + c];
            qsort(v, (size_t)T, sizeof v[0], cmp_double);
            glob[l * E + c] = (uint8_t)(c % 2 == 0);
            tau[l * E + c] = (float)(0.5 * (v[T / 2 - 1] + v[T / 2]));
        }
    }
    ck_assert_int_eq(tm_reference_forward(m, tok, T, flt, NULL, 0, 0, ref, NULL), T);
    m->vt->session_reset(s);
    lmi_forward g = {.tokens = tok, .n_tokens = T, .n_out = T, .logits = out2, .filters = flt};
    ck_assert_int_eq(m->vt->forward(s, &g, &e), LM_OK);
    er = rel_err_fd(out2, ref, (size_t)(T * V));
    ck_assert_msg(er <= 1e-5, "filtered logits: rel err %.3g", er);
    /* and the filter changed something */
    ck_assert(rel_err_ff(out2, out, (size_t)(T * V)) > 1e-3);
    /* the filter on the explicit-Δ path (with a sink) gives the same */
    m->vt->session_reset(s);
    sc.calls = 0;
    g.sink = sink_fn;
    g.sink_ctx = &sc;
    g.logits = out;
    ck_assert_int_eq(m->vt->forward(s, &g, &e), LM_OK);
    ck_assert(rel_err_ff(out, out2, (size_t)(T * V)) <= 1e-6);
    /* a global mask without thresholds is refused */
    flt[0].tau = NULL;
    ck_assert_int_eq(m->vt->forward(s, &g, &e), LM_ERR_INVALID_ARGUMENT);

    lm_session_free(s);
    tm_model_free(m);
    free(ref); free(dref); free(out); free(out2); free(sc.delta); free(glob); free(tau); free(flt);
}
END_TEST

START_TEST(forward_decimamba_matches_double)
{
    tm_config cfg = tm_config_small();
    cfg.n_layer = 3;
    cfg.seed = 31;
    char err[256];
    lm_model *m = tm_model_build(&cfg, err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    const int64_t T = 60, V = m->dims.vocab, R = 3;
    int32_t tok[60];
    tu_rng rng = {4242};
    for (int64_t t = 0; t < T; t++) tok[t] = (int32_t)(((tu_rng_sym(&rng) + 1.0) * 0.5) * (double)V) % (int32_t)V;
    /* layer 1 keeps 17 (+3 protected), layer 2 keeps max(min(., 9.7), 5) = 9 */
    const double budget[3] = {-1.0, 17.0, 9.7};
    double *ref = malloc(sizeof(double) * (size_t)(T * V));
    float *out = malloc(sizeof(float) * (size_t)(R * V));
    int64_t Tk = tm_reference_forward(m, tok, T, NULL, budget, 5, R, ref, NULL);
    ck_assert_int_eq(Tk, 9 + R);
    lm_session *s = new_session(m, 16); /* scratch must grow past the chunk size */
    tu_budget_hook bh;
    lmi_forward f = {.tokens = tok, .n_tokens = T, .n_out = R, .logits = out,
                     .tokens_hook = tu_budget_hook_init(&bh, budget, 3, 5, R)};
    lmi_err e = {{0}};
    ck_assert_int_eq(m->vt->forward(s, &f, &e), LM_OK);
    double er = rel_err_fd(out, ref + (Tk - R) * V, (size_t)(R * V));
    ck_assert_msg(er <= 1e-5, "DeciMamba logits: rel err %.3g", er);
    /* asking for more logits than positions remain is an error */
    m->vt->session_reset(s);
    float *big = malloc(sizeof(float) * (size_t)(T * V));
    f.n_out = Tk + 1;
    f.logits = big;
    ck_assert_int_eq(m->vt->forward(s, &f, &e), LM_ERR_INVALID_ARGUMENT);
    free(big);
    lm_session_free(s);
    tm_model_free(m);
    free(ref);
    free(out);
}
END_TEST

/* Mamba-2 runs in cpu/mamba2.c (tested in test_mamba2.c); here: the CPU
 * backend follows each layer's mixer kind, so layers marked Mamba-2 over
 * Mamba-1 dimensions are rejected by the Mamba-2 mixer's checks, and a
 * layer of a kind the backend has no mixer for is refused by name. */
START_TEST(mamba2_inconsistent_dims_rejected)
{
    tm_config cfg = tm_config_small();
    char err[256];
    lm_model *m = tm_model_build(&cfg, err, sizeof err);
    ck_assert(m != NULL);
    const size_t nl = (size_t)m->dims.n_layer;
    lmi_layer *layers = malloc(nl * sizeof *layers);
    memcpy(layers, m->layers, nl * sizeof *layers);
    lm_model m2 = *m;
    m2.bk = NULL;
    m2.layers = layers;
    layers[1].kind = LMI_MIXER_MAMBA2;
    lmi_err e = {{0}};
    ck_assert_int_eq(lmi_cpu_backend.model_init(&m2, &e), LM_ERR_SHAPE);
    ck_assert(strstr(e.msg, "Mamba-2") != NULL);
    ck_assert_ptr_null(m2.bk);
    layers[1].kind = (lmi_mixer_kind)77;
    ck_assert_int_eq(lmi_cpu_backend.model_init(&m2, &e), LM_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(e.msg, "layer 1") && strstr(e.msg, "77"), "%s", e.msg);
    ck_assert_ptr_null(m2.bk);
    free(layers);
    tm_model_free(m);
}
END_TEST

/* ---- weights in their stored type ------------------------------------ */

/* Every binary16 / bfloat16 value widens exactly, on the F16C path (when
 * the CPU has it) as in the scalar reference. */
START_TEST(weight_rows_widen_exactly)
{
    uint16_t *h = malloc(65536 * sizeof *h);
    float *f = malloc(65536 * sizeof *f);
    ck_assert(h && f);
    for (uint32_t k = 0; k < 65536; k++) h[k] = (uint16_t)k;
    lmi_f16_row_to_f32(h, f, 65536);
    for (uint32_t k = 0; k < 65536; k++) {
        const float want = lmi_f16_to_f32(h[k]);
        if (isnan(want))
            ck_assert_msg(isnan(f[k]), "f16 %04x", k);
        else
            ck_assert_msg(memcmp(&f[k], &want, 4) == 0, "f16 %04x: %a vs %a", k, f[k], want);
    }
    ck_assert(lmi_f16_to_f32(0x3C00) == 1.0f && lmi_f16_to_f32(0x0001) == 0x1p-24f &&
              lmi_f16_to_f32(0xFBFF) == -65504.0f);
    lmi_bf16_row_to_f32(h, f, 65536);
    for (uint32_t k = 0; k < 65536; k++) {
        uint32_t bits;
        memcpy(&bits, &f[k], 4);
        ck_assert_uint_eq(bits, k << 16);
    }
    /* the converter: flat ranges, to fp32 and to bf16 (round to nearest even) */
    const float src[5] = {1.0f, 1.00390625f /* 1 + 2^-8: tie, to even */, 1.01171875f, -2.5f, 0x1p-130f};
    lmi_weight w = lmi_weight_of_f32(src, 1, 5);
    uint16_t b[5];
    lmi_weight_convert(&w, 0, 5, LM_DTYPE_BF16, b);
    ck_assert_uint_eq(b[0], 0x3F80);
    ck_assert_uint_eq(b[1], 0x3F80);
    ck_assert_uint_eq(b[2], 0x3F82);
    ck_assert_uint_eq(b[3], 0xC020);
    lmi_weight wb = {h, LMI_W_BF16, 256, 256};
    float g[3];
    lmi_weight_convert(&wb, 0x3F80, 3, LM_DTYPE_F32, g);
    ck_assert(g[0] == 1.0f && g[1] == lmi_bf16_to_f32(0x3F81) && g[2] == lmi_bf16_to_f32(0x3F82));
    free(h);
    free(f);
}
END_TEST

static void to16(const float *src, uint16_t *dst, int64_t n, lmi_wtype t)
{
    /* values already representable: truncate (bf16) or via a half round trip */
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        if (t == LMI_W_BF16) {
            dst[i] = (uint16_t)(u >> 16);
        } else {
            /* |v| < 2: exponent fits; keep 10 mantissa bits */
            const uint32_t sign = (u >> 16) & 0x8000u;
            const int32_t ex = (int32_t)((u >> 23) & 0xFF) - 127 + 15;
            dst[i] = ex <= 0 ? (uint16_t)sign : (uint16_t)(sign | ((uint32_t)ex << 10) | ((u >> 13) & 0x3FFu));
        }
    }
}

/* lmi_linear over F16 / BF16 weights = lmi_linear over the widened fp32
 * weights, for the GEMV (1 token) and the tiled GEMM (several tokens,
 * several tiles), with bias and accumulation (beta 1). */
START_TEST(linear_16bit_matches_widened_f32)
{
    const int64_t shapes[3][2] = {{37, 45}, {300, 70}, {2100, 130}};
    tu_rng rng = {77};
    for (int ty = 0; ty < 2; ty++)
        for (int sh = 0; sh < 3; sh++) {
            const lmi_wtype t = ty ? LMI_W_BF16 : LMI_W_F16;
            const int64_t n_out = shapes[sh][0], n_in = shapes[sh][1], T = 5;
            float *w32 = malloc((size_t)(n_out * n_in) * sizeof(float));
            uint16_t *w16 = malloc((size_t)(n_out * n_in) * 2);
            float *b32 = malloc((size_t)n_out * sizeof(float));
            uint16_t *b16 = malloc((size_t)n_out * 2);
            float *X = malloc((size_t)(T * n_in) * sizeof(float));
            float *Y = malloc((size_t)(T * n_out) * sizeof(float));
            float *R = malloc((size_t)(T * n_out) * sizeof(float));
            lmi_dims dm = {.d_model = n_in};
            float *tile = malloc(lmi_ops_tile_floats(&dm) * sizeof(float));
            for (int64_t i = 0; i < n_out * n_in; i++) w32[i] = (float)tu_rng_sym(&rng);
            for (int64_t i = 0; i < n_out; i++) b32[i] = (float)tu_rng_sym(&rng);
            for (int64_t i = 0; i < T * n_in; i++) X[i] = (float)tu_rng_sym(&rng);
            to16(w32, w16, n_out * n_in, t);
            to16(b32, b16, n_out, t);
            lmi_weight W16 = {w16, t, n_out, n_in}, B16 = {b16, t, 1, n_out};
            /* the exact fp32 image of the 16-bit values */
            for (int64_t i = 0; i < n_out * n_in; i++) w32[i] = lmi_weight_at(&W16, i);
            for (int64_t i = 0; i < n_out; i++) b32[i] = lmi_weight_at(&B16, i);
            lmi_weight W32 = lmi_weight_of_f32(w32, n_out, n_in), B32 = lmi_weight_of_f32(b32, 1, n_out);
            for (int64_t Tk = 1; Tk <= T; Tk += T - 1)
                for (int beta = 0; beta < 2; beta++) {
                    for (int64_t i = 0; i < T * n_out; i++) Y[i] = R[i] = 0.25f;
                    lmi_linear(X, n_in, Tk, &W32, &B32, R, n_out, (float)beta, tile, 2);
                    lmi_linear(X, n_in, Tk, &W16, &B16, Y, n_out, (float)beta, tile, 2);
                    for (int64_t i = 0; i < Tk * n_out; i++)
                        ck_assert_msg(fabsf(Y[i] - R[i]) <= 1e-5f * (1.0f + sqrtf((float)n_in)),
                                      "type %d %lldx%lld T %lld beta %d [%lld]: %g vs %g", (int)t,
                                      (long long)n_out, (long long)n_in, (long long)Tk, beta,
                                      (long long)i, Y[i], R[i]);
                }
            free(w32);
            free(w16);
            free(b32);
            free(b16);
            free(X);
            free(Y);
            free(R);
            free(tile);
        }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cpu");
    add_tcase(s, "cpu", 300,
              (const TTest *[]){
                  expf_within_2ulp, log1p_softplus_silu_accuracy, scan_matches_double,
                  scan_threads_do_not_change_results, scan_filtered_tokens_keep_state_and_output,
                  forward_matches_double, forward_filters_and_sink_match_double,
                  forward_decimamba_matches_double, mamba2_inconsistent_dims_rejected,
                  weight_rows_widen_exactly, linear_16bit_matches_widened_f32, NULL});
    return run_suite(s);
}
