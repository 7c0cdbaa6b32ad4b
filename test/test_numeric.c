/*
 * test_numeric.c - NaN and infinity in inputs and weights: what is
 * detected and what propagates (docs/RELIABILITY.md states the policy).
 *
 * Detected (cheap, once per call or per load):
 *   - NaN thresholds of the public scan when a global mask is given
 *     (LM_ERR_NUMERIC; also in test_longmamba_scan.c);
 *   - non-finite A_log / D and A_log that overflows exp at load time
 *     (LM_ERR_NUMERIC; test_load.c non_finite_weights).
 * Propagating, as the IEEE arithmetic of PyTorch's reference does, and
 * confined to what depends on the bad value:
 *   - the public scan: a NaN in u reaches only its channel, from its token
 *     on, and that channel's state; a NaN in B reaches every channel from
 *     its token on; a NaN or infinite Δ in a filtered global channel fails
 *     "Δ > τ" only when NaN (dropped, like any Δ <= τ);
 *   - a session: a NaN in an embedding row makes the logits NaN from the
 *     first position holding that token on (and, the head being tied, that
 *     token's own logit everywhere); earlier positions, other sessions and
 *     the same session after a reset are untouched.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/safetensors.h"
#include "internal.h"
#include "suite.h"
#include "testutil.h"

/* ---- the public scan ----------------------------------------------------------- */

enum { L = 12, E = 20, N = 6 }; /* 20 channels: a full SIMD block and a tail */

typedef struct scan_case {
    float u[L * E], delta[L * E], A[E * N], B[L * N], C[L * N], D[E], z[L * E];
    float thr[E];
    uint8_t mask[E];
    float h0[E * N];
    float y[L * E], h[E * N];
} scan_case;

static void fill(scan_case *c)
{
    tu_rng r = {7};
#define RND() ((float)tu_rng_unif(&r))
    for (int i = 0; i < L * E; i++) {
        c->u[i] = RND() - 0.5f;
        c->delta[i] = 0.01f + 0.2f * RND();
        c->z[i] = RND() - 0.3f;
    }
    for (int i = 0; i < E * N; i++) {
        c->A[i] = -0.1f - 2.0f * RND();
        c->h0[i] = RND() - 0.5f;
    }
    for (int i = 0; i < L * N; i++) {
        c->B[i] = RND() - 0.5f;
        c->C[i] = RND() - 0.5f;
    }
    for (int e = 0; e < E; e++) {
        c->D[e] = RND();
        c->thr[e] = 0.1f;
        c->mask[e] = (uint8_t)(e % 3 == 0);
    }
#undef RND
}

static void run(scan_case *c, int filtered)
{
    lm_scan_args a;
    lm_scan_args_init(&a);
    a.length = L;
    a.channels = E;
    a.state_size = N;
    a.u = c->u;
    a.delta = c->delta;
    a.A = c->A;
    a.B = c->B;
    a.C = c->C;
    a.D = c->D;
    a.z = c->z;
    a.state_in = c->h0;
    a.state_out = c->h;
    a.y = c->y;
    a.n_threads = 1;
    if (filtered) {
        a.global_mask = c->mask;
        a.thresholds = c->thr;
    }
    char err[256];
    ck_assert_msg(lm_scan_filtered(&a, err, sizeof err) == LM_OK, "%s", err);
}

static int same(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

START_TEST(nan_in_u_stays_in_its_channel)
{
    static scan_case clean, bad;
    const int t0 = 4, e0 = 7; /* e0 is a local channel */
    for (int filtered = 0; filtered < 2; filtered++) {
        fill(&clean);
        run(&clean, filtered);
        fill(&bad);
        bad.u[t0 * E + e0] = NAN;
        run(&bad, filtered);
        for (int t = 0; t < L; t++)
            for (int e = 0; e < E; e++) {
                float g = bad.y[t * E + e], w = clean.y[t * E + e];
                if (e == e0 && t >= t0)
                    ck_assert_msg(isnan(g), "y[%d][%d] = %g", t, e, (double)g);
                else
                    ck_assert_msg(same(g, w), "y[%d][%d] = %g, clean %g", t, e, (double)g, (double)w);
            }
        for (int e = 0; e < E; e++)
            for (int n = 0; n < N; n++) {
                float g = bad.h[e * N + n];
                if (e == e0)
                    ck_assert(isnan(g));
                else
                    ck_assert(same(g, clean.h[e * N + n]));
            }
    }
}
END_TEST

START_TEST(nan_in_B_reaches_every_channel_from_its_token)
{
    static scan_case clean, bad;
    fill(&clean);
    run(&clean, 0);
    fill(&bad);
    const int t0 = 6;
    bad.B[t0 * N + 2] = NAN;
    run(&bad, 0);
    for (int t = 0; t < L; t++)
        for (int e = 0; e < E; e++) {
            if (t < t0)
                ck_assert(same(bad.y[t * E + e], clean.y[t * E + e]));
            else
                ck_assert_msg(isnan(bad.y[t * E + e]), "y[%d][%d]", t, e);
        }
}
END_TEST

START_TEST(nan_delta_in_a_global_channel_is_dropped)
{
    static scan_case drop, bad;
    const int t0 = 5, eg = 9, el = 10; /* eg global (9 % 3 == 0), el local */
    fill(&bad);
    ck_assert(bad.mask[eg] && !bad.mask[el]);
    bad.delta[t0 * E + eg] = NAN;
    run(&bad, 1);
    /* The same as a Δ below the threshold, which the filter zeroes. */
    fill(&drop);
    drop.delta[t0 * E + eg] = 0.05f;
    run(&drop, 1);
    ck_assert(memcmp(bad.y, drop.y, sizeof bad.y) == 0);
    ck_assert(memcmp(bad.h, drop.h, sizeof bad.h) == 0);
    /* In a local channel it propagates. */
    fill(&bad);
    bad.delta[t0 * E + el] = NAN;
    run(&bad, 1);
    for (int t = t0; t < L; t++) ck_assert(isnan(bad.y[t * E + el]));
    /* +inf in a global channel passes the filter (inf > tau) and the state
     * becomes non-finite from there. */
    fill(&bad);
    bad.delta[t0 * E + eg] = INFINITY;
    run(&bad, 1);
    ck_assert(!isfinite(bad.y[t0 * E + eg]) || !isfinite(bad.h[eg * N]));
}
END_TEST

START_TEST(infinite_thresholds)
{
    static scan_case c, ref;
    /* -inf keeps every token: the unfiltered scan, bitwise. */
    fill(&c);
    for (int e = 0; e < E; e++) c.thr[e] = -INFINITY;
    run(&c, 1);
    fill(&ref);
    run(&ref, 0);
    ck_assert(memcmp(c.y, ref.y, sizeof c.y) == 0);
    ck_assert(memcmp(c.h, ref.h, sizeof c.h) == 0);
    /* +inf drops every token of a global channel: its state stays h0 and
     * y = (C.h0 + D u) silu(z), computed here in double. */
    fill(&c);
    for (int e = 0; e < E; e++) c.thr[e] = INFINITY;
    run(&c, 1);
    for (int e = 0; e < E; e++) {
        if (!c.mask[e]) {
            ck_assert(same(c.y[e], ref.y[e]));
            continue;
        }
        for (int n = 0; n < N; n++) ck_assert(same(c.h[e * N + n], c.h0[e * N + n]));
        for (int t = 0; t < L; t++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++) acc += (double)c.h0[e * N + n] * (double)c.C[t * N + n];
            double zz = c.z[t * E + e];
            double want = (acc + (double)c.D[e] * (double)c.u[t * E + e]) * (zz / (1.0 + exp(-zz)));
            ck_assert_msg(fabs(c.y[t * E + e] - want) <= 1e-5 * (1.0 + fabs(want)),
                          "y[%d][%d] = %.9g, want %.9g", t, e, (double)c.y[t * E + e], want);
        }
    }
}
END_TEST

START_TEST(nan_threshold_is_rejected)
{
    static scan_case c;
    fill(&c);
    c.thr[3] = NAN;
    lm_scan_args a;
    lm_scan_args_init(&a);
    a.length = L, a.channels = E, a.state_size = N;
    a.u = c.u, a.delta = c.delta, a.A = c.A, a.B = c.B, a.C = c.C, a.y = c.y;
    a.global_mask = c.mask;
    a.thresholds = c.thr;
    char err[256];
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_ERR_NUMERIC);
    ck_assert_msg(strstr(err, "thresholds[3]") != NULL, "%s", err);
    /* Without a mask the thresholds are not read. */
    a.global_mask = NULL;
    ck_assert_int_eq(lm_scan_filtered(&a, err, sizeof err), LM_OK);
}
END_TEST

/* ---- a session on weights with a NaN ---------------------------------------------- */

static char tmpdir[256];

static void copy_file(const char *from, const char *to, unsigned char **data, size_t *size)
{
    FILE *f = fopen(from, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    if (to) {
        FILE *g = fopen(to, "wb");
        ck_assert_ptr_nonnull(g);
        ck_assert_uint_eq(fwrite(b, 1, (size_t)n, g), (size_t)n);
        fclose(g);
    }
    if (data) {
        *data = b;
        *size = (size_t)n;
    } else {
        free(b);
    }
}

/* m1-tiny-f32 with embedding row `row` set to NaN, in a temporary dir. */
static lm_model *load_with_nan_row(int row)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/lmnum.XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", tmpdir);
    copy_file(LM_TEST_DATA "/fixtures/m1-tiny-f32/config.json", p, NULL, NULL);
    unsigned char *buf;
    size_t size;
    copy_file(LM_TEST_DATA "/fixtures/m1-tiny-f32/model.safetensors", NULL, &buf, &size);
    lmi_st_file f;
    memset(&f, 0, sizeof f);
    lmi_err e;
    ck_assert_int_eq(lmi_st_parse(buf, size, &f, &e), LM_OK);
    const lmi_st_tensor *emb = lmi_st_find(&f, "backbone.embeddings.weight");
    ck_assert_ptr_nonnull(emb);
    ck_assert_int_eq(emb->dtype, LMI_ST_F32);
    const size_t d = (size_t)emb->shape[1];
    float nan = NAN;
    unsigned char *at = buf + (emb->data - buf) + (size_t)row * d * sizeof(float);
    for (size_t k = 0; k < d; k++) memcpy(at + k * sizeof(float), &nan, sizeof nan);
    lmi_st_close(&f);
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    FILE *g = fopen(p, "wb");
    ck_assert_uint_eq(fwrite(buf, 1, size, g), size);
    fclose(g);
    free(buf);

    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CPU;
    mp.n_threads = 1;
    lm_model *m = NULL;
    char err[512];
    ck_assert_msg(lm_model_load(tmpdir, &mp, &m, err, sizeof err) == LM_OK, "%s", err);
    return m;
}

static void remove_tmpdir(void)
{
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", tmpdir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    unlink(p);
    rmdir(tmpdir);
}

START_TEST(nan_embedding_row_propagates_forward_only)
{
    const int bad_tok = 5;
    lm_model *m = load_with_nan_row(bad_tok);
    lm_model *clean = NULL;
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CPU;
    mp.n_threads = 1;
    char err[512];
    ck_assert(lm_model_load(LM_TEST_DATA "/fixtures/m1-tiny-f32", &mp, &clean, err, sizeof err) ==
              LM_OK);
    const int64_t V = m->dims.vocab;
    enum { T = 40, T0 = 17 };
    int32_t tok[T];
    for (int i = 0; i < T; i++) {
        int v = 1 + (i * 7) % 90;
        tok[i] = v == bad_tok ? 6 : v;
    }
    tok[T0] = bad_tok;
    float *lg = malloc(sizeof(float) * T * (size_t)V), *ref = malloc(sizeof(float) * T * (size_t)V);
    lm_session *s = NULL, *r = NULL;
    ck_assert_int_eq(lm_session_create(m, NULL, &s, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_create(clean, NULL, &r, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_prefill(s, tok, T, T, lg, (size_t)(T * V)), LM_OK);
    ck_assert_int_eq(lm_session_prefill(r, tok, T, T, ref, (size_t)(T * V)), LM_OK);
    for (int t = 0; t < T; t++)
        for (int64_t v = 0; v < V; v++) {
            float g = lg[t * V + v];
            if (v == bad_tok) /* tied head: the token's own logit is NaN everywhere */
                ck_assert(isnan(g));
            else if (t < T0)
                ck_assert_msg(same(g, ref[t * V + v]), "position %d before the NaN token differs", t);
            else
                ck_assert_msg(isnan(g), "logit [%d][%lld] = %g after the NaN token", t,
                              (long long)v, (double)g);
        }
    /* After a reset the session is clean again for prompts without it. */
    ck_assert_int_eq(lm_session_reset(s), LM_OK);
    ck_assert_int_eq(lm_session_reset(r), LM_OK);
    ck_assert_int_eq(lm_session_prefill(s, tok, T0, 1, lg, (size_t)V), LM_OK);
    ck_assert_int_eq(lm_session_prefill(r, tok, T0, 1, ref, (size_t)V), LM_OK);
    for (int64_t v = 0; v < V; v++)
        ck_assert(v == bad_tok ? isnan(lg[v]) : same(lg[v], ref[v]));
    lm_session_free(s);
    lm_session_free(r);
    free(lg);
    free(ref);
    lm_model_free(m);
    lm_model_free(clean);
    remove_tmpdir();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("numeric");
    add_tcase(s, "scan", 0,
              (const TTest *[]){nan_in_u_stays_in_its_channel,
                                nan_in_B_reaches_every_channel_from_its_token,
                                nan_delta_in_a_global_channel_is_dropped, infinite_thresholds,
                                nan_threshold_is_rejected, NULL});
    add_tcase(s, "model", 0, (const TTest *[]){nan_embedding_row_propagates_forward_only, NULL});
    return run_suite(s);
}
