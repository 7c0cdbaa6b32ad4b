/* test_prefill_batch.c - lm_session_prefill_batch on the CPU backend:
 * every row and every later decode step equals the session's own
 * lm_session_prefill (a twin session fed the same history alone) on the
 * Mamba-1 and Mamba-2 fixtures; sessions at different positions, prompt
 * lengths 1..N, pieces that split prompts, no logits; sessions in
 * LongMamba / DeciMamba / MambaExtend / Modulation mode (their own path);
 * length hints, progress callbacks and abort; bad arguments leave every
 * session as it was. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "longmamba_fixture.h"
#include "suite.h"
#include "testutil.h"

/* Not bit-exact: the BLAS rounds a GEMM row differently with the number
 * of rows (and a one-row product is a GEMV), so rows differ from a
 * session's own prefill by a few fp32 ulps (measured <= 7e-7 of max|x|
 * with OpenBLAS). */
#define TOL 2e-6

/* The worst relative difference seen (printed at the end of each test). */
static double g_worst;

static lm_model *fixture(const char *name)
{
    char dir[1024];
    tu_fixture_dir(dir, sizeof dir, name);
    return load_fixture_at(dir);
}

/* The state blob (malloc'd) and its size. */
static unsigned char *blob_of(lm_session *s, size_t *n)
{
    ck_assert_int_eq(lm_session_state_size(s, n), LM_OK);
    unsigned char *b = malloc(*n);
    size_t w = 0;
    ck_assert_int_eq(lm_session_state_save(s, b, *n, &w), LM_OK);
    return b;
}

/* max |a - b| / max |b| of the two sessions' states (past the header). */
static double state_diff(lm_session *a, lm_session *b)
{
    size_t na, nb;
    unsigned char *x = blob_of(a, &na), *y = blob_of(b, &nb);
    ck_assert_uint_eq(na, nb);
    const size_t hdr = 72;
    ck_assert_msg(memcmp(x, y, hdr) == 0, "state headers differ (position?)");
    const double d = tu_max_rel_err_f((const float *)(x + hdr), (const float *)(y + hdr),
                                      (na - hdr) / sizeof(float));
    free(x);
    free(y);
    return d;
}

static void note(double d, double tol, const char *what)
{
    ck_assert_msg(d <= tol, "%s: max rel err %.3g (tol %.0e)", what, d, tol);
    if (d > g_worst) g_worst = d;
}

/* Sessions with histories of hist[i] tokens (each twin the same), then one
 * batched prefill of lens[i] tokens against a prefill per twin; then three
 * decode steps of each pair.  chunks[i]: session i's chunk size. */
static void compare(const char *name, const int64_t *hist, const int64_t *lens,
                    const int64_t *chunks, size_t n, bool logits)
{
    lm_model *m = fixture(name);
    const int64_t V = m->dims.vocab;
    lm_session **ss = calloc(n, sizeof *ss), **tw = calloc(n, sizeof *tw);
    int32_t **tok = calloc(n, sizeof *tok);
    size_t *nt = calloc(n, sizeof *nt);
    float *rows = malloc(sizeof(float) * n * (size_t)V), *one = malloc(sizeof(float) * (size_t)V);
    for (size_t i = 0; i < n; i++) {
        ss[i] = new_session(m, chunks[i]);
        tw[i] = new_session(m, chunks[i]);
        if (hist[i] > 0) {
            int32_t *h = tu_tokens(500 + i, (size_t)hist[i], V);
            ck_assert_int_eq(lm_session_prefill(ss[i], h, (size_t)hist[i], 0, NULL, 0), LM_OK);
            ck_assert_int_eq(lm_session_prefill(tw[i], h, (size_t)hist[i], 0, NULL, 0), LM_OK);
            free(h);
        }
        tok[i] = tu_tokens(900 + i, (size_t)lens[i], V);
        nt[i] = (size_t)lens[i];
    }
    for (size_t i = 0; i < n * (size_t)V; i++) rows[i] = -1e30f;
    ck_assert_msg(lm_session_prefill_batch(ss, n, (const int32_t *const *)tok, nt,
                                           logits ? rows : NULL, logits ? n * (size_t)V : 0) ==
                      LM_OK,
                  "%s: %s", name, lm_session_last_error(ss[0]));
    char what[160];
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(lm_session_position(ss[i]), hist[i] + lens[i]);
        ck_assert_int_eq(lm_session_prefill(tw[i], tok[i], nt[i], 1, one, (size_t)V), LM_OK);
        if (logits) {
            snprintf(what, sizeof what, "%s: row %zu (history %lld, %lld tokens)", name, i,
                     (long long)hist[i], (long long)lens[i]);
            note(tu_max_rel_err_f(rows + i * (size_t)V, one, (size_t)V), TOL, what);
        }
        snprintf(what, sizeof what, "%s: state %zu", name, i);
        note(state_diff(ss[i], tw[i]), TOL, what);
    }
    /* later decode steps agree too */
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < n; i++) {
            const int32_t t = (int32_t)((7 * i + 3 * (size_t)k + 1) % (size_t)V);
            ck_assert_int_eq(lm_session_decode(ss[i], t, rows, (size_t)V), LM_OK);
            ck_assert_int_eq(lm_session_decode(tw[i], t, one, (size_t)V), LM_OK);
            snprintf(what, sizeof what, "%s: decode step %d of session %zu", name, k, i);
            note(tu_max_rel_err_f(rows, one, (size_t)V), TOL, what);
        }
    for (size_t i = 0; i < n; i++) {
        lm_session_free(ss[i]);
        lm_session_free(tw[i]);
        free(tok[i]);
    }
    free(ss);
    free(tw);
    free(tok);
    free(nt);
    free(rows);
    free(one);
    lm_model_free(m);
}

static const char *const g_fixtures[] = {"m1-tiny-f32", "m1-odd-f32", "m1-bf16", "m2-tiny-f32",
                                         "m2-odd-f32", "m2-groups-f32"};
#define N_FIXTURES (sizeof g_fixtures / sizeof g_fixtures[0])

/* One piece: every prompt whole (default chunk 512). */
START_TEST(batch_equals_prefill)
{
    const int64_t hist[] = {0, 5, 0, 33, 1, 0, 12, 100};
    const int64_t lens[] = {1, 2, 7, 1, 40, 64, 3, 129};
    const int64_t chunks[] = {0, 0, 0, 0, 0, 0, 0, 0};
    compare(g_fixtures[_i], hist, lens, chunks, 8, true);
    printf("batch_equals_prefill %s: worst rel err %.3g\n", g_fixtures[_i], g_worst);
}
END_TEST

/* Small chunks: pieces of at most 16 tokens in all (the largest chunk
 * size), prompts split across pieces; no logits. */
START_TEST(batch_in_pieces)
{
    const int64_t hist[] = {3, 0, 20, 0, 9};
    const int64_t lens[] = {37, 1, 16, 5, 50};
    const int64_t chunks[] = {8, 16, 3, 8, 5};
    compare(g_fixtures[_i], hist, lens, chunks, 5, true);
    compare(g_fixtures[_i], hist, lens, chunks, 5, false);
    printf("batch_in_pieces %s: worst rel err %.3g\n", g_fixtures[_i], g_worst);
}
END_TEST

/* One session, and one-token prompts only. */
START_TEST(batch_small_cases)
{
    const int64_t h1[] = {4}, l1[] = {9}, c1[] = {0};
    compare(g_fixtures[_i], h1, l1, c1, 1, true);
    const int64_t h3[] = {0, 2, 7}, l3[] = {1, 1, 1}, c3[] = {0, 0, 0};
    compare(g_fixtures[_i], h3, l3, c3, 3, true);
    printf("batch_small_cases %s: worst rel err %.3g\n", g_fixtures[_i], g_worst);
}
END_TEST

/* ---- arguments ------------------------------------------------------------- */

typedef struct trio {
    lm_model *m, *other;
    lm_session *s[3];
    unsigned char *blob[3];
    size_t n[3];
    int64_t pos[3];
} trio;

static void trio_open(trio *t)
{
    t->m = fixture("m1-tiny-f32");
    t->other = fixture("m1-tiny-f32");
    for (int i = 0; i < 3; i++) {
        t->s[i] = new_session(t->m, 0);
        int32_t *h = tu_tokens(70 + (uint64_t)i, (size_t)(3 + i), t->m->dims.vocab);
        ck_assert_int_eq(lm_session_prefill(t->s[i], h, (size_t)(3 + i), 0, NULL, 0), LM_OK);
        free(h);
        t->blob[i] = blob_of(t->s[i], &t->n[i]);
        t->pos[i] = lm_session_position(t->s[i]);
    }
}

/* Every session exactly as trio_open left it. */
static void trio_unchanged(trio *t, const char *what)
{
    for (int i = 0; i < 3; i++) {
        size_t n;
        unsigned char *b = blob_of(t->s[i], &n);
        ck_assert_msg(n == t->n[i] && memcmp(b, t->blob[i], n) == 0 &&
                          lm_session_position(t->s[i]) == t->pos[i],
                      "%s: session %d changed", what, i);
        free(b);
    }
}

static void trio_close(trio *t)
{
    for (int i = 0; i < 3; i++) {
        lm_session_free(t->s[i]);
        free(t->blob[i]);
    }
    lm_model_free(t->m);
    lm_model_free(t->other);
}

static void expect(trio *t, lm_status got, lm_status want, const char *msg_part, const char *what)
{
    ck_assert_msg(got == want, "%s: status %d (%s), want %d", what, (int)got,
                  lm_session_last_error(t->s[0]), (int)want);
    if (msg_part)
        ck_assert_msg(strstr(lm_session_last_error(t->s[0]), msg_part) != NULL,
                      "%s: message \"%s\" lacks \"%s\"", what, lm_session_last_error(t->s[0]),
                      msg_part);
    trio_unchanged(t, what);
}

START_TEST(batch_arguments)
{
    trio t;
    trio_open(&t);
    const int64_t V = t.m->dims.vocab;
    int32_t good[4] = {1, 2, 3, 4}, bad[4] = {1, 2, (int32_t)V, 4}, neg[1] = {-1};
    const int32_t *tk[3] = {good, good, good};
    size_t nt[3] = {4, 2, 1};
    float *lg = malloc(sizeof(float) * 3 * (size_t)V);
    lm_session *all[3] = {t.s[0], t.s[1], t.s[2]};

    expect(&t, lm_session_prefill_batch(NULL, 3, tk, nt, lg, 3 * (size_t)V),
           LM_ERR_INVALID_ARGUMENT, NULL, "sessions NULL");
    expect(&t, lm_session_prefill_batch(all, 0, NULL, NULL, NULL, 0), LM_OK, NULL, "n = 0");
    lm_session *first_null[3] = {NULL, t.s[1], t.s[2]};
    expect(&t, lm_session_prefill_batch(first_null, 3, tk, nt, lg, 3 * (size_t)V),
           LM_ERR_INVALID_ARGUMENT, NULL, "sessions[0] NULL");
    lm_session *mid_null[3] = {t.s[0], NULL, t.s[2]};
    expect(&t, lm_session_prefill_batch(mid_null, 3, tk, nt, lg, 3 * (size_t)V),
           LM_ERR_INVALID_ARGUMENT, "sessions[1] is NULL", "sessions[1] NULL");
    lm_session *dup[3] = {t.s[0], t.s[1], t.s[0]};
    expect(&t, lm_session_prefill_batch(dup, 3, tk, nt, lg, 3 * (size_t)V),
           LM_ERR_INVALID_ARGUMENT, "appears twice", "duplicate session");
    lm_session *stranger = new_session(t.other, 0);
    lm_session *mixed[3] = {t.s[0], t.s[1], stranger};
    expect(&t, lm_session_prefill_batch(mixed, 3, tk, nt, lg, 3 * (size_t)V),
           LM_ERR_INVALID_ARGUMENT, "another model", "different models");
    lm_session_free(stranger);
    expect(&t, lm_session_prefill_batch(all, 3, NULL, nt, lg, 3 * (size_t)V),
           LM_ERR_INVALID_ARGUMENT, "tokens is NULL", "tokens NULL");
    expect(&t, lm_session_prefill_batch(all, 3, tk, NULL, lg, 3 * (size_t)V),
           LM_ERR_INVALID_ARGUMENT, "n_tokens is NULL", "n_tokens NULL");
    const int32_t *tk_null[3] = {good, NULL, good};
    expect(&t, lm_session_prefill_batch(all, 3, tk_null, nt, lg, 3 * (size_t)V),
           LM_ERR_INVALID_ARGUMENT, "sessions[1]: tokens is NULL", "tokens[1] NULL");
    size_t nt_empty[3] = {4, 2, 0};
    expect(&t, lm_session_prefill_batch(all, 3, tk, nt_empty, lg, 3 * (size_t)V),
           LM_ERR_INVALID_ARGUMENT, "sessions[2]: empty prompt", "empty prompt");
    const int32_t *tk_bad[3] = {bad, good, good};
    expect(&t, lm_session_prefill_batch(all, 3, tk_bad, nt, lg, 3 * (size_t)V),
           LM_ERR_OUT_OF_RANGE, "sessions[0]: token 2 has id", "token id = vocab");
    const int32_t *tk_neg[3] = {good, good, neg};
    expect(&t, lm_session_prefill_batch(all, 3, tk_neg, nt, lg, 3 * (size_t)V),
           LM_ERR_OUT_OF_RANGE, "sessions[2]: token 0 has id -1", "negative token id");
    expect(&t, lm_session_prefill_batch(all, 3, tk, nt, lg, 3 * (size_t)V - 1),
           LM_ERR_BUFFER_TOO_SMALL, "logits buffer", "logits too small");
    /* a length hint the prompt passes */
    ck_assert_int_eq(lm_session_set_length_hint(t.s[2], 0), LM_OK);
    ck_assert_int_eq(lm_session_set_length_hint(t.s[1], 1), LM_OK);
    expect(&t, lm_session_prefill_batch(all, 3, tk, nt, lg, 3 * (size_t)V),
           LM_ERR_INVALID_ARGUMENT, "sessions[1]: length hint", "length hint too small");
    ck_assert_int_eq(lm_session_set_length_hint(t.s[1], 0), LM_OK);
    /* logits NULL is fine, and the same call then succeeds */
    ck_assert_int_eq(lm_session_prefill_batch(all, 3, tk, nt, NULL, 0), LM_OK);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(lm_session_position(t.s[i]), t.pos[i] + (int64_t)nt[i]);
    free(lg);
    trio_close(&t);
}
END_TEST

/* The hint is honoured and cleared once reached, as by lm_session_prefill. */
START_TEST(batch_length_hint)
{
    trio t;
    trio_open(&t);
    int32_t tk4[4] = {1, 2, 3, 4};
    const int32_t *tk[3] = {tk4, tk4, tk4};
    size_t nt[3] = {4, 2, 3};
    ck_assert_int_eq(lm_session_set_length_hint(t.s[0], 4), LM_OK);
    ck_assert_int_eq(lm_session_set_length_hint(t.s[1], 10), LM_OK);
    ck_assert_int_eq(lm_session_prefill_batch(t.s, 3, tk, nt, NULL, 0), LM_OK);
    ck_assert_int_eq(t.s[0]->length_hint, 0);                  /* reached: cleared */
    ck_assert_int_eq(t.s[1]->length_hint, t.pos[1] + 10);      /* not yet */
    trio_close(&t);
}
END_TEST

/* Progress per session; an abort from any of them puts every session back. */
typedef struct prog {
    int calls;
    int stop_at; /* return nonzero on this call (0: never) */
    int64_t last_done, last_total;
} prog;

static int on_progress(void *user, int64_t done, int64_t total)
{
    prog *p = user;
    p->calls++;
    p->last_done = done;
    p->last_total = total;
    return p->stop_at && p->calls == p->stop_at;
}

START_TEST(batch_progress_and_abort)
{
    lm_model *m = fixture("m2-tiny-f32");
    const int64_t V = m->dims.vocab;
    prog pg[2] = {{0}};
    lm_session *s[2];
    for (int i = 0; i < 2; i++) {
        lm_session_params sp;
        lm_session_params_init(&sp);
        sp.chunk_size = 10;
        sp.progress = on_progress;
        sp.progress_user = &pg[i];
        char err[256];
        ck_assert_int_eq(lm_session_create(m, &sp, &s[i], err, sizeof err), LM_OK);
    }
    int32_t *a = tu_tokens(1, 25, V), *b = tu_tokens(2, 4, V);
    const int32_t *tk[2] = {a, b};
    size_t nt[2] = {25, 4};
    /* pieces of 10 tokens: session 0's 10, 10, then its last 5 beside session 1's 4 */
    ck_assert_int_eq(lm_session_prefill_batch(s, 2, tk, nt, NULL, 0), LM_OK);
    ck_assert_int_eq(pg[0].calls, 3);
    ck_assert_int_eq(pg[0].last_done, 25);
    ck_assert_int_eq(pg[0].last_total, 25);
    ck_assert_int_eq(pg[1].calls, 1);
    ck_assert_int_eq(pg[1].last_done, 4);
    size_t n0, n1;
    unsigned char *b0 = blob_of(s[0], &n0), *b1 = blob_of(s[1], &n1);
    pg[0] = (prog){0, 2, 0, 0};
    pg[1] = (prog){0};
    ck_assert_int_eq(lm_session_prefill_batch(s, 2, tk, nt, NULL, 0), LM_ERR_ABORTED);
    ck_assert_msg(strstr(lm_session_last_error(s[0]), "sessions[0]: prefill aborted"), "%s",
                  lm_session_last_error(s[0]));
    size_t m0, m1;
    unsigned char *c0 = blob_of(s[0], &m0), *c1 = blob_of(s[1], &m1);
    ck_assert(n0 == m0 && memcmp(b0, c0, n0) == 0 && n1 == m1 && memcmp(b1, c1, n1) == 0);
    ck_assert_int_eq(lm_session_position(s[0]), 25);
    ck_assert_int_eq(lm_session_position(s[1]), 4);
    free(b0); free(b1); free(c0); free(c1); free(a); free(b);
    lm_session_free(s[0]);
    lm_session_free(s[1]);
    lm_model_free(m);
}
END_TEST

/* ---- modes -------------------------------------------------------------- */

/* LongMamba (a prompt above its trigger), DeciMamba, MambaExtend and
 * Modulation sessions run their own path inside the batch: bit-identical
 * to lm_session_prefill in the same mode; the vanilla sessions beside
 * them still agree. */
#define NM 6
static bool own_path(int i) { return i >= 1 && i <= 4; }

START_TEST(batch_with_modes)
{
    lm_model *m = load_fixture();
    const int64_t V = m->dims.vocab;
    lm_calibration *cal = calibrate_fixture(m, mode_buckets, 4, LM_CALIB_AGG_MAX, 0.0, 4, 64);
    lm_session *ss[NM], *tw[NM];
    for (int i = 0; i < NM; i++) {
        ss[i] = new_session(m, 64);
        tw[i] = new_session(m, 64);
    }
    double scales[8];
    for (int l = 0; l < 8; l++) scales[l] = 0.8 + 0.1 * l;
    lm_mambaextend_params xp;
    lm_mambaextend_params_init(&xp);
    xp.scales = scales;
    xp.n_scales = (size_t)m->dims.n_layer;
    lm_modulation_params mp;
    lm_modulation_params_init(&mp);
    mp.scales = scales;
    mp.n_scales = (size_t)m->dims.n_layer;
    lm_longmamba_params lp;
    lm_longmamba_params_init(&lp);
    lm_decimamba_params dp;
    lm_decimamba_params_init(&dp);
    dp.l_base = 50;
    dp.min_len = 5;
    for (int k = 0; k < 2; k++) {
        lm_session *const *x = k ? tw : ss;
        ck_assert_int_eq(lm_session_set_longmamba(x[1], cal, &lp), LM_OK);
        ck_assert_int_eq(lm_session_set_decimamba(x[2], &dp), LM_OK);
        ck_assert_int_eq(lm_session_set_mambaextend(x[3], &xp), LM_OK);
        ck_assert_int_eq(lm_session_set_modulation(x[4], &mp), LM_OK);
    }
    const int64_t lens[NM] = {20, 300, 200, 9, 30, 7};
    int32_t *tok[NM];
    size_t nt[NM];
    for (int i = 0; i < NM; i++) {
        tok[i] = tu_tokens(40 + (uint64_t)i, (size_t)lens[i], V);
        nt[i] = (size_t)lens[i];
    }
    float *rows = malloc(sizeof(float) * NM * (size_t)V), *one = malloc(sizeof(float) * (size_t)V);
    ck_assert_msg(lm_session_prefill_batch(ss, NM, (const int32_t *const *)tok, nt, rows,
                                           NM * (size_t)V) == LM_OK,
                  "%s", lm_session_last_error(ss[0]));
    for (int i = 0; i < NM; i++) {
        ck_assert_int_eq(lm_session_prefill(tw[i], tok[i], nt[i], 1, one, (size_t)V), LM_OK);
        const double d = tu_max_rel_err_f(rows + i * V, one, (size_t)V);
        if (own_path(i))
            ck_assert_msg(d == 0.0, "mode session %d: rel err %.3g (own path: exact)", i, d);
        else
            note(d, TOL, "vanilla beside modes");
        note(state_diff(ss[i], tw[i]), own_path(i) ? 0.0 : TOL, "state beside modes");
    }
    printf("batch_with_modes: vanilla rows and states beside the modes: worst rel err %.3g\n", g_worst);
    for (int i = 0; i < NM; i++) {
        lm_session_free(ss[i]);
        lm_session_free(tw[i]);
        free(tok[i]);
    }
    free(rows);
    free(one);
    lm_calibration_free(cal);
    lm_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("prefill_batch");
    TCase *tc = add_tcase(s, "fixtures", 120,
                          (const TTest *[]){NULL});
    tcase_add_loop_test(tc, batch_equals_prefill, 0, (int)N_FIXTURES);
    tcase_add_loop_test(tc, batch_in_pieces, 0, (int)N_FIXTURES);
    tcase_add_loop_test(tc, batch_small_cases, 0, (int)N_FIXTURES);
    add_tcase(s, "api", 120,
              (const TTest *[]){batch_arguments, batch_length_hint, batch_progress_and_abort,
                                batch_with_modes, NULL});
    return run_suite(s);
}
