/*
 * test_sample.c - sampling the next token: lmi_sample_row against the
 * header's rule written out here a second time (a full sort, sums in that
 * order), its distribution against exact probabilities (chi-square), the
 * edge cases of the rule; lm_session_decode_sample on the m1/m2 fixtures
 * against lm_session_decode_batch, determinism by (seed, position), the
 * argument checks, NaN logits, and the dispatch to a backend's
 * sample_batch.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "suite.h"
#include "testmodel.h"

#define FIX LM_TEST_DATA "/fixtures/"

/* ---- the rule, a second time ------------------------------------------------ */

static const float *g_order_l; /* qsort has no context argument */

static int cmp_order(const void *pa, const void *pb)
{
    const int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    const float la = g_order_l[a], lb = g_order_l[b];
    if (la != lb) return la > lb ? -1 : 1;
    return a < b ? -1 : 1;
}

/* ids[0..V): every id by logit descending, ties lower id first. */
static void ref_order(const float *l, int64_t V, int64_t *ids)
{
    for (int64_t i = 0; i < V; i++) ids[i] = i;
    g_order_l = l;
    qsort(ids, (size_t)V, sizeof *ids, cmp_order);
}

typedef struct rule {
    double T;
    int64_t k;
    double p;
} rule;

/* The weights of the candidates in order, their count, and the count kept
 * by top_p moved by `shift` (to build the off-by-one alternatives). */
static int64_t ref_weights(const float *l, const int64_t *ids, int64_t V, rule r, int64_t shift,
                           double *w)
{
    const int64_t n = r.k > 0 && r.k < V ? r.k : V;
    double W = 0.0;
    for (int64_t i = 0; i < n; i++) W += w[i] = exp(((double)l[ids[i]] - (double)l[ids[0]]) / r.T);
    int64_t kept = n;
    if (r.p > 0.0 && r.p < 1.0) {
        double cum = 0.0;
        for (kept = 0; kept < n && cum < r.p * W;) cum += w[kept++];
    }
    kept += shift;
    return kept < 1 ? 1 : kept > V ? V : kept;
}

/* u of (seed, position): the rule's splitmix64 is one step of testutil's
 * generator from the state x. */
static double ref_uniform(uint64_t seed, int64_t pos)
{
    tu_rng g = {seed ^ ((uint64_t)pos * 0x9E3779B97F4A7C15ull)};
    return tu_rng_unif(&g);
}

static int32_t ref_pick(const float *l, const int64_t *ids, int64_t V, rule r, uint64_t seed,
                        int64_t pos, double *w)
{
    if (!(r.T > 0.0)) return (int32_t)ids[0];
    const int64_t kept = ref_weights(l, ids, V, r, 0, w);
    double Wk = 0.0, cum = 0.0;
    for (int64_t i = 0; i < kept; i++) Wk += w[i];
    const double target = ref_uniform(seed, pos) * Wk;
    int64_t last = 0;
    for (int64_t i = 0; i < kept; i++) {
        cum += w[i];
        if (w[i] > 0.0) last = i;
        if (cum > target) return (int32_t)ids[i];
    }
    return (int32_t)ids[last];
}

/* Exact probabilities q[id] of the rule (with top_p's count moved by shift). */
static void ref_probs(const float *l, int64_t V, rule r, int64_t shift, double *q)
{
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)V);
    double *w = malloc(sizeof(double) * (size_t)V);
    ref_order(l, V, ids);
    const int64_t kept = ref_weights(l, ids, V, r, shift, w);
    if (kept > (r.k > 0 && r.k < V ? r.k : V)) /* the shifted prefix reaches past the candidates */
        for (int64_t i = r.k; i < kept; i++)
            w[i] = exp(((double)l[ids[i]] - (double)l[ids[0]]) / r.T);
    double Wk = 0.0;
    for (int64_t i = 0; i < kept; i++) Wk += w[i];
    for (int64_t i = 0; i < V; i++) q[i] = 0.0;
    for (int64_t i = 0; i < kept; i++) q[ids[i]] = w[i] / Wk;
    free(ids);
    free(w);
}

static lmi_sampler sampler(double T, int32_t k, double p, uint64_t seed)
{
    lmi_sampler s = {(float)T, k, (float)p, seed, 0};
    return s;
}

static int32_t sample(const float *l, int64_t V, const lmi_sampler *sp, int64_t pos)
{
    int64_t *scratch = malloc(sizeof(int64_t) * (size_t)V);
    int32_t out = -1;
    lmi_err e = {{0}};
    ck_assert_msg(lmi_sample_row(l, V, sp, pos, &out, scratch, &e) == LM_OK, "%s", e.msg);
    free(scratch);
    ck_assert(out >= 0 && out < V);
    return out;
}

/* ---- the row sampler -------------------------------------------------------- */

/* The draw is the rule's formula. */
START_TEST(uniform_is_the_formula)
{
    const uint64_t seeds[] = {0, 1, 42, 0x8000000000000000ull, UINT64_MAX};
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
        for (int64_t p = 0; p < 1000; p += 7) {
            const double u = lmi_sample_uniform(seeds[i], p);
            ck_assert(u >= 0.0 && u < 1.0);
            ck_assert(u == ref_uniform(seeds[i], p));
        }
    ck_assert(lmi_sample_uniform(0, INT64_MAX) == ref_uniform(0, INT64_MAX));
}
END_TEST

/* Rows of 1000 logits on a grid of 1/8 (many ties): every token equals the
 * rule's, for temperatures, top_k (none, 1, small, large, >= V) and top_p
 * (off, small, large) together: selection, the growing sorted prefix and
 * the tie order all meet the full sort. */
START_TEST(row_equals_rule)
{
    enum { V = 1000, POS = 150 };
    tu_rng g = {77};
    float l[V];
    for (int i = 0; i < V; i++) l[i] = (float)(tu_rng_int(&g, -64, 64) / 8.0);
    int64_t ids[V];
    double w[V];
    ref_order(l, V, ids);
    const double Ts[] = {0.05, 0.3, 1.0, 3.0};
    const int32_t ks[] = {0, 1, 7, 100, 999, 1000, 5000};
    const double ps[] = {0.0, 0.3, 0.9, 0.999, 1.0};
    long n = 0;
    for (size_t a = 0; a < sizeof Ts / sizeof *Ts; a++)
        for (size_t b = 0; b < sizeof ks / sizeof *ks; b++)
            for (size_t c = 0; c < sizeof ps / sizeof *ps; c++) {
                const rule r = {(double)(float)Ts[a], ks[b], (double)(float)ps[c]};
                const lmi_sampler sp = sampler(Ts[a], ks[b], ps[c], 1000 + n);
                for (int64_t pos = 1; pos <= POS; pos++, n++) {
                    const int32_t want = ref_pick(l, ids, V, r, sp.seed, pos, w);
                    const int32_t got = sample(l, V, &sp, pos);
                    ck_assert_msg(got == want, "T %g k %d p %g position %lld: %d, rule %d", Ts[a],
                                  (int)ks[b], ps[c], (long long)pos, got, want);
                }
            }
}
END_TEST

/* Pearson's statistic of counts against q; a count where q is 0 is +inf. */
static double chi2(const long *count, const double *q, int V, long N)
{
    double x = 0.0;
    for (int i = 0; i < V; i++) {
        const double e = q[i] * (double)N;
        if (e == 0.0) {
            if (count[i]) return INFINITY;
            continue;
        }
        x += ((double)count[i] - e) * ((double)count[i] - e) / e;
    }
    return x;
}

/* 200,000 draws from a 6-token row: the frequencies against the exact
 * probabilities.  At most 5 degrees of freedom: P(chi2_5 > 40) < 2e-7, so
 * a correct sampler passes; the same counts against the distribution with
 * the truncation one token shorter or longer give thousands. */
START_TEST(distribution_matches)
{
    enum { V = 6 };
    const long N = 200000;
    const double bound = 40.0;
    const float l[V] = {1.0f, 2.5f, -0.5f, 2.0f, 0.25f, 1.5f};
    const rule rules[] = {{1.0, 0, 1.0}, {0.7, 4, 1.0}, {1.3, 0, 0.8},
                          {1.0, 5, 0.6}, {2.0, 3, 0.9}, {0.5, 0, 0.95}};
    for (size_t c = 0; c < sizeof rules / sizeof *rules; c++) {
        const lmi_sampler sp = sampler(rules[c].T, (int32_t)rules[c].k, rules[c].p, 11 + c);
        const rule r = {(double)sp.temperature, sp.top_k, (double)sp.top_p};
        long count[V] = {0};
        for (long pos = 1; pos <= N; pos++) count[sample(l, V, &sp, pos)]++;
        double q[V];
        ref_probs(l, V, r, 0, q);
        const double x = chi2(count, q, V, N);
        ck_assert_msg(x < bound, "rule %zu: chi2 %.2f >= %.0f", c, x, bound);
        /* off by one in the truncation (top_k, or top_p when it cuts) */
        const bool truncated = r.k > 0 || (r.p > 0.0 && r.p < 1.0);
        for (int shift = -1; shift <= 1 && truncated; shift += 2) {
            rule alt = r;
            if (r.k > 0 && !(r.p > 0.0 && r.p < 1.0)) {
                alt.k = r.k + shift;
                ref_probs(l, V, alt, 0, q);
            } else {
                ref_probs(l, V, r, shift, q);
            }
            const double y = chi2(count, q, V, N);
            ck_assert_msg(y > 1000.0, "rule %zu shift %d: the alternative fits too (chi2 %.2f)",
                          c, shift, y);
        }
    }
}
END_TEST

/* Draws of positions 1..n from l into count (ids < V). */
static void draw(const float *l, int V, const lmi_sampler *sp, long n, long *count)
{
    for (int i = 0; i < V; i++) count[i] = 0;
    for (long pos = 1; pos <= n; pos++) count[sample(l, V, sp, pos)]++;
}

/* top_p where the cumulative weight lands exactly on top_p * W (weights
 * 1 and 0 exactly: exp(-1003) underflows), ties, all-equal logits. */
START_TEST(top_p_boundaries_and_ties)
{
    enum { V = 6 };
    long count[V];
    const float four[V] = {3, 3, 3, 3, -1000, -1000};
    /* {top_p, tokens kept}: 0.5 * 4 = 2 is reached by the second */
    const struct {
        float p;
        int kept;
    } cases[] = {{0.5f, 2}, {0.75f, 3},  {0.25f, 1}, {0.2f, 1},
                 {0.26f, 2}, {0.999f, 4}, {1.0f, 4},  {0.0f, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        lmi_sampler sp = sampler(1.0, 0, cases[c].p, 5);
        draw(four, V, &sp, 4000, count);
        for (int i = 0; i < V; i++)
            ck_assert_msg((count[i] > 0) == (i < cases[c].kept),
                          "top_p %g: token %d drawn %ld times", (double)cases[c].p, i, count[i]);
    }
    /* ties: the maximum 5 at ids 1, 2, 4 */
    const float tied[V] = {1, 5, 5, 0, 5, 2};
    lmi_sampler greedy = sampler(0.0, 0, 1.0, 0);
    ck_assert_int_eq(sample(tied, V, &greedy, 1), 1);
    lmi_sampler k2 = sampler(1.0, 2, 1.0, 9);
    draw(tied, V, &k2, 4000, count);
    ck_assert(count[1] > 1800 && count[2] > 1800 && count[1] + count[2] == 4000);
    /* all equal: greedy takes id 0, top_k the lowest ids, otherwise uniform */
    const float flat[V] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    ck_assert_int_eq(sample(flat, V, &greedy, 3), 0);
    lmi_sampler k3 = sampler(1.0, 3, 1.0, 4);
    draw(flat, V, &k3, 3000, count);
    ck_assert(count[0] > 0 && count[1] > 0 && count[2] > 0);
    ck_assert(count[3] + count[4] + count[5] == 0);
    lmi_sampler all = sampler(0.8, 0, 1.0, 4);
    draw(flat, V, &all, 60000, count);
    const double q[V] = {1 / 6.0, 1 / 6.0, 1 / 6.0, 1 / 6.0, 1 / 6.0, 1 / 6.0};
    ck_assert_msg(chi2(count, q, V, 60000) < 40.0, "all equal: not uniform");
}
END_TEST

/* Temperatures at the ends of float: tiny ones keep only the maximum (its
 * ties share), huge ones make every candidate equal; extreme logits do
 * not overflow. */
START_TEST(extreme_temperatures)
{
    enum { V = 5 };
    long count[V];
    const float l[V] = {1.0f, 2.0f, nextafterf(2.0f, 0.0f), -3.0f, 2.0f};
    const double tiny[] = {1e-30, (double)FLT_TRUE_MIN};
    for (size_t i = 0; i < sizeof tiny / sizeof *tiny; i++) {
        lmi_sampler sp = sampler(tiny[i], 0, 1.0, 3);
        ck_assert(sp.temperature > 0.0f);
        draw(l, V, &sp, 2000, count);
        ck_assert_msg(count[1] > 800 && count[4] > 800 && count[1] + count[4] == 2000,
                      "T %g: %ld %ld", tiny[i], count[1], count[4]);
    }
    lmi_sampler hot = sampler(1e30, 0, 1.0, 3);
    draw(l, V, &hot, 50000, count);
    const double q[V] = {0.2, 0.2, 0.2, 0.2, 0.2};
    ck_assert_msg(chi2(count, q, V, 50000) < 40.0, "T 1e30 is not uniform");
    const float big[3] = {FLT_MAX, -FLT_MAX, FLT_MAX};
    lmi_sampler one = sampler(1.0, 0, 1.0, 8);
    draw(big, 3, &one, 1000, count);
    ck_assert(count[1] == 0 && count[0] > 300 && count[2] > 300);
    lmi_sampler huge = sampler(FLT_MAX, 0, 0.5, 8);
    draw(big, 3, &huge, 1000, count); /* w = exp(-2) for id 1: top_p 0.5 keeps 0 and 2 */
    ck_assert(count[1] == 0 && count[0] > 300 && count[2] > 300);
}
END_TEST

/* top_k = 1 is greedy at any temperature; a seed and a position fix the
 * token; other seeds give other tokens. */
START_TEST(seeds_and_top_k_one)
{
    enum { V = 6 };
    const float l[V] = {0.1f, 0.3f, 0.2f, 0.3f, 0.0f, 0.25f};
    const double Ts[] = {1e-6, 0.5, 1.0, 10.0, 1e30};
    for (size_t i = 0; i < sizeof Ts / sizeof *Ts; i++)
        for (int64_t pos = 1; pos < 200; pos++) {
            lmi_sampler sp = sampler(Ts[i], 1, (pos % 3) / 2.0, (uint64_t)pos * 31);
            ck_assert_int_eq(sample(l, V, &sp, pos), 1);
        }
    const float flat[V] = {0, 0, 0, 0, 0, 0};
    const uint64_t seeds[] = {0, 1, 2, 0x8000000000000000ull};
    int32_t tok[4][1000];
    for (int s = 0; s < 4; s++) {
        lmi_sampler sp = sampler(1.0, 0, 1.0, seeds[s]);
        for (int64_t pos = 0; pos < 1000; pos++) {
            tok[s][pos] = sample(flat, V, &sp, pos);
            ck_assert_int_eq(sample(flat, V, &sp, pos), tok[s][pos]);
        }
    }
    /* two seeds agree at a position with probability 1/6 */
    for (int a = 0; a < 4; a++)
        for (int b = a + 1; b < 4; b++) {
            int differ = 0;
            for (int pos = 0; pos < 1000; pos++) differ += tok[a][pos] != tok[b][pos];
            ck_assert_msg(differ > 700, "seeds %d and %d differ at only %d of 1000 positions", a,
                          b, differ);
        }
}
END_TEST

/* NaN and infinities are errors naming the token; greedy too. */
START_TEST(non_finite_rows)
{
    enum { V = 4 };
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    const char *names[3] = {"NaN", "+inf", "-inf"};
    int64_t scratch[V];
    for (int b = 0; b < 3; b++)
        for (int at = 0; at < V; at++)
            for (int g = 0; g < 2; g++) {
                float l[V] = {0.5f, 1.0f, -2.0f, 0.0f};
                l[at] = bad[b];
                lmi_sampler sp = sampler(g ? 0.0 : 1.0, 0, 1.0, 1);
                lmi_err e = {{0}};
                int32_t out = -7;
                ck_assert_int_eq(lmi_sample_row(l, V, &sp, 1, &out, scratch, &e), LM_ERR_NUMERIC);
                char want[64];
                snprintf(want, sizeof want, "token %d is %s", at, names[b]);
                ck_assert_msg(strstr(e.msg, want), "%s", e.msg);
                ck_assert_int_eq(out, -7);
            }
}
END_TEST

/* ---- lm_session_decode_sample ------------------------------------------------ */

static lm_model *load(const char *name)
{
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CPU;
    mp.n_threads = 1;
    lm_model *m = NULL;
    char err[512];
    ck_assert_msg(lm_model_load(name, &mp, &m, err, sizeof err) == LM_OK, "%s: %s", name, err);
    return m;
}

static lm_session *new_session(const lm_model *m)
{
    lm_session *s = NULL;
    char err[256];
    ck_assert_msg(lm_session_create(m, NULL, &s, err, sizeof err) == LM_OK, "%s", err);
    return s;
}

static void set_sampling(lm_session *s, double T, int32_t k, double p, uint64_t seed,
                         uint32_t flags)
{
    lm_sampling_params sp;
    lm_sampling_params_init(&sp);
    sp.temperature = (float)T;
    sp.top_k = k;
    sp.top_p = (float)p;
    sp.seed = seed;
    sp.flags = flags;
    ck_assert_msg(lm_session_set_sampling(s, &sp) == LM_OK, "%s", lm_session_last_error(s));
}

static void prefill(lm_session *s, int64_t V, size_t n, uint64_t seed)
{
    int32_t *t = tu_tokens(seed, n, V);
    ck_assert_int_eq(lm_session_prefill(s, t, n, 0, NULL, 0), LM_OK);
    free(t);
}

static unsigned char *save(lm_session *s, size_t *n)
{
    ck_assert_int_eq(lm_session_state_size(s, n), LM_OK);
    unsigned char *b = malloc(*n);
    ck_assert_int_eq(lm_session_state_save(s, b, *n, NULL), LM_OK);
    return b;
}

static int32_t argmax(const float *row, int64_t V)
{
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (row[i] > row[best]) best = i;
    return (int32_t)best;
}

/* Greedy decode_sample picks the argmax of the logits lm_session_decode_batch
 * computes, and returns those logits bit for bit (the same batched step),
 * on Mamba-1 and Mamba-2, for several batch sizes and steps. */
START_TEST(greedy_equals_decode_batch)
{
    const char *fixtures[] = {FIX "m1-tiny-f32", FIX "m2-tiny-f32"};
    const size_t sizes[] = {1, 2, 3, 5};
    enum { MAXN = 5, STEPS = 6 };
    for (size_t f = 0; f < 2; f++) {
        lm_model *m = load(fixtures[f]);
        const int64_t V = m->dims.vocab;
        float *la = malloc(sizeof(float) * MAXN * (size_t)V);
        float *lb = malloc(sizeof(float) * MAXN * (size_t)V);
        for (size_t z = 0; z < 4; z++) {
            const size_t n = sizes[z];
            lm_session *a[MAXN], *b[MAXN];
            int32_t tok[MAXN], next[MAXN];
            for (size_t i = 0; i < n; i++) {
                a[i] = new_session(m);
                b[i] = new_session(m);
                set_sampling(a[i], 0.0, 0, 1.0, 0, LM_SAMPLE_RETURN_LOGITS);
                prefill(a[i], V, 3 + 4 * i, 50 + i); /* different positions */
                prefill(b[i], V, 3 + 4 * i, 50 + i);
                tok[i] = (int32_t)((7 * i + 1) % (size_t)V);
            }
            for (int t = 0; t < STEPS; t++) {
                ck_assert_int_eq(lm_session_decode_sample(a, n, tok, next, la, n * (size_t)V),
                                 LM_OK);
                ck_assert_int_eq(lm_session_decode_batch(b, n, tok, lb, n * (size_t)V), LM_OK);
                ck_assert_msg(memcmp(la, lb, sizeof(float) * n * (size_t)V) == 0,
                              "%s n %zu step %d: logits differ from decode_batch", fixtures[f], n,
                              t);
                for (size_t i = 0; i < n; i++) {
                    ck_assert_int_eq(next[i], argmax(lb + i * (size_t)V, V));
                    ck_assert_int_eq(lm_session_position(a[i]), lm_session_position(b[i]));
                    tok[i] = next[i];
                }
            }
            for (size_t i = 0; i < n; i++) {
                lm_session_free(a[i]);
                lm_session_free(b[i]);
            }
        }
        free(la);
        free(lb);
        lm_model_free(m);
    }
}
END_TEST

/* In one batch: greedy, and top_k = 1 at temperatures from tiny to huge
 * with other seeds and top_p: the same token at every step. */
START_TEST(session_top_k_one_is_greedy)
{
    lm_model *m = load(FIX "m1-tiny-f32");
    const int64_t V = m->dims.vocab;
    enum { N = 5 };
    const double Ts[N] = {0.0, 1e-6, 1.0, 10.0, 1e30};
    lm_session *s[N];
    int32_t tok[N], next[N];
    for (int i = 0; i < N; i++) {
        s[i] = new_session(m);
        set_sampling(s[i], Ts[i], i ? 1 : 0, i == 2 ? 0.3 : 1.0, (uint64_t)i * 99, 0);
        prefill(s[i], V, 9, 4);
        tok[i] = 5;
    }
    for (int t = 0; t < 10; t++) {
        ck_assert_int_eq(lm_session_decode_sample(s, N, tok, next, NULL, 0), LM_OK);
        for (int i = 1; i < N; i++) ck_assert_int_eq(next[i], next[0]);
        memcpy(tok, next, sizeof tok);
    }
    for (int i = 0; i < N; i++) lm_session_free(s[i]);
    lm_model_free(m);
}
END_TEST

/* n tokens generated by s alone, each fed back. */
static void generate(lm_session *s, int32_t first, int n, int32_t *out)
{
    int32_t tok = first;
    for (int t = 0; t < n; t++) {
        ck_assert_int_eq(lm_session_decode_sample(&s, 1, &tok, &out[t], NULL, 0), LM_OK);
        tok = out[t];
    }
}

/* The same sampler on the same history draws the same tokens, also after
 * a state blob carried the history to another session; another seed
 * draws others (T = 100: nearly uniform over the vocabulary). */
START_TEST(session_determinism)
{
    lm_model *m = load(FIX "m1-tiny-f32");
    const int64_t V = m->dims.vocab;
    enum { T = 24 };
    lm_session *s1 = new_session(m), *s2 = new_session(m), *s3 = new_session(m);
    set_sampling(s1, 100.0, 0, 1.0, 42, 0);
    set_sampling(s2, 100.0, 0, 1.0, 42, 0);
    set_sampling(s3, 100.0, 0, 1.0, 43, 0);
    lm_session *all[3] = {s1, s2, s3};
    for (int i = 0; i < 3; i++) prefill(all[i], V, 11, 8);
    int32_t a[T], b[T], c[T];
    generate(s1, 3, T, a);
    generate(s2, 3, T, b);
    generate(s3, 3, T, c);
    int differ = 0;
    for (int t = 0; t < T; t++) {
        ck_assert_int_eq(a[t], b[t]);
        differ += a[t] != c[t];
    }
    ck_assert_msg(differ >= 16, "seeds 42 and 43 differ at only %d of %d steps", differ, T);
    /* a fork: the blob carries the position, the sampler stays the session's */
    size_t nb = 0;
    unsigned char *blob = save(s1, &nb);
    lm_session *fork = new_session(m);
    set_sampling(fork, 100.0, 0, 1.0, 42, 0);
    ck_assert_int_eq(lm_session_state_load(fork, blob, nb), LM_OK);
    generate(s1, 1, T, a);
    generate(fork, 1, T, b);
    ck_assert(memcmp(a, b, sizeof a) == 0);
    /* reset and state loads keep the sampler */
    const lmi_sampler before = s1->sampler;
    ck_assert_int_eq(lm_session_reset(s1), LM_OK);
    ck_assert_int_eq(lm_session_state_load(s1, blob, nb), LM_OK);
    ck_assert(before.temperature == s1->sampler.temperature && before.seed == s1->sampler.seed &&
              before.top_k == s1->sampler.top_k && before.top_p == s1->sampler.top_p &&
              before.flags == s1->sampler.flags);
    free(blob);
    lm_session_free(fork);
    for (int i = 0; i < 3; i++) lm_session_free(all[i]);
    lm_model_free(m);
}
END_TEST

/* Only the rows of sessions with LM_SAMPLE_RETURN_LOGITS are written. */
START_TEST(only_flagged_rows_written)
{
    lm_model *m = load(FIX "m2-tiny-f32");
    const size_t V = (size_t)m->dims.vocab;
    lm_session *s[3] = {new_session(m), new_session(m), new_session(m)};
    set_sampling(s[1], 0.9, 10, 0.9, 1, LM_SAMPLE_RETURN_LOGITS);
    set_sampling(s[2], 0.9, 0, 1.0, 2, 0);
    float *lg = malloc(sizeof(float) * 3 * V);
    for (size_t i = 0; i < 3 * V; i++) lg[i] = -7.0f;
    int32_t tok[3] = {1, 2, 3}, next[3];
    ck_assert_int_eq(lm_session_decode_sample(s, 3, tok, next, lg, 3 * V), LM_OK);
    for (size_t i = 0; i < V; i++) {
        ck_assert(lg[i] == -7.0f && lg[2 * V + i] == -7.0f);
        ck_assert(isfinite(lg[V + i]) && lg[V + i] != -7.0f);
    }
    /* nobody flagged: logits may be NULL */
    set_sampling(s[1], 0.9, 10, 0.9, 1, 0);
    ck_assert_int_eq(lm_session_decode_sample(s, 3, tok, next, NULL, 0), LM_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(lm_session_position(s[i]), 2);
        lm_session_free(s[i]);
    }
    free(lg);
    lm_model_free(m);
}
END_TEST

/* A two-session decode_sample. */
static lm_status ds2(lm_session **ss, const int32_t *t, int32_t *next, float *lg, size_t cap)
{
    return lm_session_decode_sample(ss, 2, t, next, lg, cap);
}

/* Each failing call, the status it gives, and a word its message has. */
#define EXPECT_FAIL(call, status, word)                                                       \
    do {                                                                                      \
        ck_assert_int_eq((call), (status));                                                   \
        ck_assert_msg(strstr(lm_session_last_error(a), (word)), "%s: message \"%s\"", #call, \
                      lm_session_last_error(a));                                              \
    } while (0)

/* Field by field: a struct's padding bytes are not its value. */
static bool same_sampler(const lmi_sampler *a, const lmi_sampler *b)
{
    return a->temperature == b->temperature && a->top_k == b->top_k && a->top_p == b->top_p &&
           a->seed == b->seed && a->flags == b->flags;
}

static void expect_sampler(lm_session *s, const lmi_sampler *want)
{
    ck_assert(same_sampler(&s->sampler, want));
}

START_TEST(set_sampling_errors)
{
    lm_model *m = load(FIX "m1-tiny-f32");
    lm_session *a = new_session(m);
    set_sampling(a, 0.5, 3, 0.5, 9, LM_SAMPLE_RETURN_LOGITS);
    const lmi_sampler kept = a->sampler;
    lm_sampling_params p;
    ck_assert_int_eq(lm_session_set_sampling(NULL, NULL), LM_ERR_INVALID_ARGUMENT);
    const struct {
        float T;
        int32_t k;
        float p;
        uint32_t flags, size;
        lm_status st;
        const char *word;
    } bad[] = {
        {NAN, 0, 1, 0, 0, LM_ERR_OUT_OF_RANGE, "temperature"},
        {INFINITY, 0, 1, 0, 0, LM_ERR_OUT_OF_RANGE, "temperature"},
        {-INFINITY, 0, 1, 0, 0, LM_ERR_OUT_OF_RANGE, "temperature"},
        {1, -1, 1, 0, 0, LM_ERR_OUT_OF_RANGE, "top_k"},
        {1, 0, 1.5f, 0, 0, LM_ERR_OUT_OF_RANGE, "top_p"},
        {1, 0, -0.1f, 0, 0, LM_ERR_OUT_OF_RANGE, "top_p"},
        {1, 0, NAN, 0, 0, LM_ERR_OUT_OF_RANGE, "top_p"},
        {1, 0, 1, 2, 0, LM_ERR_INVALID_ARGUMENT, "flags"},
        {1, 0, 1, 0x80000001u, 0, LM_ERR_INVALID_ARGUMENT, "flags"},
        {1, 0, 1, 0, 4, LM_ERR_INVALID_ARGUMENT, "struct_size"},
        {1, 0, 1, 0, (uint32_t)offsetof(lm_sampling_params, flags), LM_ERR_INVALID_ARGUMENT,
         "struct_size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        lm_sampling_params_init(&p);
        p.temperature = bad[i].T;
        p.top_k = bad[i].k;
        p.top_p = bad[i].p;
        p.flags = bad[i].flags;
        if (bad[i].size) p.struct_size = bad[i].size;
        EXPECT_FAIL(lm_session_set_sampling(a, &p), bad[i].st, bad[i].word);
        expect_sampler(a, &kept);
    }
    /* accepted: negative temperature (greedy), top_k past the vocabulary,
     * top_p 0 and 1, the 0.3 size exactly, zero-filled = defaults */
    lm_sampling_params_init(&p);
    ck_assert_uint_eq(p.struct_size, sizeof p);
    ck_assert(p.temperature == 0.0f && p.top_k == 0 && p.top_p == 1.0f && p.seed == 0 &&
              p.flags == 0);
    p.temperature = -1.0f;
    p.top_k = 1 << 30;
    p.top_p = 0.0f;
    p.struct_size = (uint32_t)(offsetof(lm_sampling_params, flags) + sizeof(uint32_t));
    ck_assert_int_eq(lm_session_set_sampling(a, &p), LM_OK);
    ck_assert_int_eq(lm_session_set_sampling(a, NULL), LM_OK);
    const lmi_sampler dflt = {0.0f, 0, 1.0f, 0, 0};
    expect_sampler(a, &dflt);
    lm_session_free(a);
    lm_model_free(m);
}
END_TEST

/* Bad calls give their status and message in sessions[0] and move no
 * session: positions and state blobs as before; NaN logits too (the
 * step ran: the states are put back). */
START_TEST(decode_sample_errors_change_nothing)
{
    lm_model *m = load(FIX "m1-tiny-f32");
    lm_model *other = load(FIX "m1-tiny-f32");
    const int64_t V = m->dims.vocab;
    lm_session *a = new_session(m), *b = new_session(m), *o = new_session(other);
    prefill(a, V, 5, 1);
    prefill(b, V, 8, 2);
    set_sampling(a, 0.8, 0, 1.0, 1, 0);
    set_sampling(b, 0.0, 0, 1.0, 0, LM_SAMPLE_RETURN_LOGITS);
    size_t na = 0, nb = 0, n2 = 0;
    unsigned char *a0 = save(a, &na), *b0 = save(b, &nb);
    float *lg = malloc(sizeof(float) * 2 * (size_t)V);
    int32_t tok[2] = {1, 2}, next[2];
    lm_session *two[2] = {a, b}, *dup[2] = {a, a}, *mixed[2] = {a, o}, *null2[2] = {a, NULL};
    const size_t cap = 2 * (size_t)V;
    ck_assert_int_eq(ds2(NULL, tok, next, lg, cap), LM_ERR_INVALID_ARGUMENT);
    EXPECT_FAIL(ds2(two, NULL, next, lg, cap), LM_ERR_INVALID_ARGUMENT, "tokens");
    EXPECT_FAIL(ds2(two, tok, NULL, lg, cap), LM_ERR_INVALID_ARGUMENT, "next");
    EXPECT_FAIL(ds2(null2, tok, next, lg, cap), LM_ERR_INVALID_ARGUMENT, "sessions[1]");
    EXPECT_FAIL(ds2(dup, tok, next, lg, cap), LM_ERR_INVALID_ARGUMENT, "twice");
    EXPECT_FAIL(ds2(mixed, tok, next, lg, cap), LM_ERR_INVALID_ARGUMENT, "another model");
    int32_t bad[2] = {1, (int32_t)V};
    EXPECT_FAIL(ds2(two, bad, next, lg, cap), LM_ERR_OUT_OF_RANGE, "tokens[1]");
    bad[1] = -1;
    EXPECT_FAIL(ds2(two, bad, next, lg, cap), LM_ERR_OUT_OF_RANGE, "tokens[1]");
    EXPECT_FAIL(ds2(two, tok, next, NULL, 0), LM_ERR_INVALID_ARGUMENT, "sessions[1]");
    EXPECT_FAIL(ds2(two, tok, next, lg, cap - 1), LM_ERR_BUFFER_TOO_SMALL, "logits");
    ck_assert_int_eq(lm_session_decode_sample(two, 0, NULL, NULL, NULL, 0), LM_OK);
    /* a NaN in b's state: every logit of its row is NaN */
    unsigned char *poisoned = malloc(nb);
    memcpy(poisoned, b0, nb);
    const float nan = NAN;
    memcpy(poisoned + nb - sizeof nan, &nan, sizeof nan);
    ck_assert_int_eq(lm_session_state_load(b, poisoned, nb), LM_OK);
    EXPECT_FAIL(ds2(two, tok, next, lg, cap), LM_ERR_NUMERIC, "sessions[1]");
    ck_assert(strstr(lm_session_last_error(a), "NaN"));
    lm_session *b_first[2] = {b, a};
    ck_assert_int_eq(ds2(b_first, tok, next, lg, cap), LM_ERR_NUMERIC);
    ck_assert(strstr(lm_session_last_error(b), "sessions[0]"));
    ck_assert_int_eq(lm_session_position(a), 5);
    ck_assert_int_eq(lm_session_position(b), 8);
    unsigned char *a1 = save(a, &n2);
    ck_assert(n2 == na && memcmp(a0, a1, na) == 0);
    free(a1);
    a1 = save(b, &n2);
    ck_assert(n2 == nb && memcmp(poisoned, a1, nb) == 0);
    free(a1);
    /* with b healthy again the same call works */
    ck_assert_int_eq(lm_session_state_load(b, b0, nb), LM_OK);
    ck_assert_int_eq(ds2(two, tok, next, lg, cap), LM_OK);
    ck_assert_int_eq(lm_session_position(a), 6);
    ck_assert_int_eq(lm_session_position(b), 9);
    ck_assert_int_eq(next[1], argmax(lg + V, V));
    free(poisoned);
    free(a0);
    free(b0);
    free(lg);
    lm_session_free(a);
    lm_session_free(b);
    lm_session_free(o);
    lm_model_free(m);
    lm_model_free(other);
}
END_TEST

/* ---- a backend's sample_batch ------------------------------------------------- */

static struct {
    size_t calls, n;
    uint8_t want[4];
    bool logits_null;
    lm_status result;
} g_fake;

/* Echoes each token as the next one; writes 1.0 in the wanted rows. */
static lm_status fake_sample_batch(lm_session *const *ss, size_t n, const int32_t *tokens,
                                   int32_t *next, float *logits, const uint8_t *want, lmi_err *e)
{
    g_fake.calls++;
    g_fake.n = n;
    g_fake.logits_null = logits == NULL;
    const size_t V = (size_t)ss[0]->model->dims.vocab;
    for (size_t i = 0; i < n; i++) {
        g_fake.want[i] = want[i];
        next[i] = tokens[i];
        for (size_t j = 0; want[i] && j < V; j++) logits[i * V + j] = 1.0f;
    }
    return g_fake.result == LM_OK ? LM_OK : lmi_fail(e, g_fake.result, "fake backend failed");
}

/* Session code hands the step to vt->sample_batch with the rows to
 * return, and advances the positions only when it succeeds. */
START_TEST(backend_sample_batch_dispatch)
{
    char err[256];
    tm_config c = tm_config_small();
    lm_model *m = tm_model_build(&c, err, sizeof err);
    ck_assert_msg(m, "%s", err);
    const lmi_backend_vt *cpu = m->vt;
    lmi_backend_vt vt = *cpu;
    vt.sample_batch = fake_sample_batch;
    m->vt = &vt;
    const size_t V = (size_t)m->dims.vocab;
    lm_session *s[3] = {new_session(m), new_session(m), new_session(m)};
    set_sampling(s[2], 0.0, 0, 1.0, 0, LM_SAMPLE_RETURN_LOGITS);
    float *lg = calloc(3 * V, sizeof(float));
    int32_t tok[3] = {4, 5, 6}, next[3] = {0};
    ck_assert_int_eq(lm_session_decode_sample(s, 3, tok, next, lg, 3 * V), LM_OK);
    ck_assert(g_fake.calls == 1 && g_fake.n == 3 && !g_fake.logits_null);
    ck_assert(!g_fake.want[0] && !g_fake.want[1] && g_fake.want[2]);
    ck_assert(next[0] == 4 && next[1] == 5 && next[2] == 6);
    ck_assert(lg[0] == 0.0f && lg[2 * V] == 1.0f);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(lm_session_position(s[i]), 1);
    /* nobody wants rows: logits reaches the backend as NULL */
    ck_assert_int_eq(lm_session_decode_sample(s, 2, tok, next, lg, 3 * V), LM_OK);
    ck_assert(g_fake.calls == 2 && g_fake.logits_null);
    g_fake.result = LM_ERR_BACKEND;
    ck_assert_int_eq(lm_session_decode_sample(s, 3, tok, next, lg, 3 * V), LM_ERR_BACKEND);
    ck_assert(strstr(lm_session_last_error(s[0]), "fake backend"));
    ck_assert_int_eq(lm_session_position(s[0]), 2);
    ck_assert_int_eq(lm_session_position(s[2]), 1);
    for (int i = 0; i < 3; i++) lm_session_free(s[i]);
    free(lg);
    m->vt = cpu;
    tm_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sample");
    add_tcase(s, "row", 120,
              (const TTest *[]){uniform_is_the_formula, row_equals_rule, distribution_matches,
                                top_p_boundaries_and_ties, extreme_temperatures,
                                seeds_and_top_k_one, non_finite_rows, NULL});
    add_tcase(s, "session", 120,
              (const TTest *[]){greedy_equals_decode_batch, session_top_k_one_is_greedy,
                                session_determinism, only_flagged_rows_written,
                                set_sampling_errors, decode_sample_errors_change_nothing,
                                backend_sample_batch_dispatch, NULL});
    return run_suite(s);
}
