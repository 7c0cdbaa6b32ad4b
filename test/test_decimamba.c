/* test_decimamba.c - DeciMamba (LONGMAMBA.md §5): keep counts and token
 * selection, mode validation on a fake model, and a session on the
 * m1-odd-f32 fixture against the float64 reference forward. */
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
        int64_t L = 1 + (int64_t)(tu_rng_next(&rng) % 60);
        int64_t R = (int64_t)(tu_rng_next(&rng) % (uint64_t)(L + 1));
        int64_t n = L - R;
        int64_t K = n ? (int64_t)(tu_rng_next(&rng) % (uint64_t)(n + 1)) : 0;
        float *s = malloc(sizeof(float) * (size_t)L);
        for (int64_t t = 0; t < L; t++)
            s[t] = (float)(tu_rng_next(&rng) % 7); /* many ties */
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

/* ---- mode validation (fake model) ------------------------------------------ */

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
    ck_assert_int_eq(s.mode->mode, LM_MODE_DECIMAMBA);
    ck_assert(lmi_modes_single_chunk(&s));
    lmi_forward f = {0};
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 5, &f), LM_OK);
    ck_assert_ptr_null(f.filters);
    const lmi_token_hook *h = f.tokens_hook;
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(h->keeps_last, 1);
    /* layer 3 keeps 2000 + 1 of 5000; the others keep all, and min_len 20
     * holds under a small prompt */
    for (int l = 0; l < 6; l++) {
        ck_assert_int_eq(h->layers[l], l == 3);
        ck_assert_int_eq(lmi_token_hook_keeps(h, l, 5000), l == 3 ? 2001 : 5000);
    }
    ck_assert_int_eq(lmi_token_hook_keeps(h, 3, 2001), 2001);
    ck_assert_int_eq(lmi_token_hook_keeps(h, 3, 2002), 2001);
    /* decode steps run vanilla */
    lmi_forward fd = {0};
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_DECODE, 6, &fd), LM_OK);
    ck_assert_ptr_null(fd.tokens_hook);
    ck_assert_ptr_null(fd.filters);

    /* a list with beta: layer s keeps l_base * beta^s */
    const int32_t layers[] = {4, 1, 2};
    p.layers = layers;
    p.n_layers = 3;
    p.l_base = 1000;
    p.beta = 0.5;
    p.min_len = 7;
    p.protect = 3;
    ck_assert_int_eq(lm_session_set_decimamba(&s, &p), LM_OK);
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 5, &f), LM_OK);
    h = f.tokens_hook;
    ck_assert_int_eq(h->keeps_last, 3);
    ck_assert_int_eq(lmi_token_hook_keeps(h, 4, 5000), 1003);
    ck_assert_int_eq(lmi_token_hook_keeps(h, 1, 5000), 503);
    ck_assert_int_eq(lmi_token_hook_keeps(h, 2, 5000), 253);
    ck_assert_int_eq(lmi_token_hook_keeps(h, 0, 5000), 5000);
    /* min_len 7: 12 tokens keep max(min(9, 250), 7) + 3 = all */
    ck_assert_int_eq(lmi_token_hook_keeps(h, 2, 12), 12);

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
    ck_assert_int_eq(lmi_modes_prepare(&s, LMI_CALL_PREFILL, 5, &f), LM_OK);
    ck_assert_int_eq(lmi_token_hook_keeps(f.tokens_hook, 1, 5000), 503);
    ck_assert_int_eq(f.tokens_hook->keeps_last, 3);
    ck_assert_int_eq(lm_session_set_decimamba(NULL, &p), LM_ERR_INVALID_ARGUMENT);
    lmi_modes_free(&s);
}
END_TEST

/* ---- session level: a real model (fixture m1-odd-f32) -------------------- */

static void decimamba_matches_reference_on(const char *dir)
{
    lm_model *m = load_fixture_at(dir);
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
        toks = tu_tokens(seed, 120, V);
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
    ck_assert_msg(tu_max_abs_diff(keep_all, van, V) <= 1e-5 * tu_max_abs(van, V),
                  "no-drop decimamba differs");

    /* the middle layer keeps 40 of 119 (+1 protected) */
    p.l_base = 40;
    ck_assert_int_eq(lm_session_set_decimamba(s, &p), LM_OK);
    float *deci = prefill_last(s, toks, 120);
    check_vs_ref(deci, ref, V, "decimamba middle layer");
    ck_assert(tu_max_abs_diff(deci, van, V) > 1e-3 * tu_max_abs(van, V));

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

START_TEST(decimamba_matches_reference)
{
    decimamba_matches_reference_on(FIXTURE);
}
END_TEST

/* The same on Falcon-Mamba (Δ after its dt/B/C normalisation is what the
 * hook sees; the reference forward applies the normalisation). */
START_TEST(decimamba_falcon)
{
    decimamba_matches_reference_on(LM_TEST_DATA "/fixtures/fm-odd-f32");
}
END_TEST

/* ---- suite ------------------------------------------------------------------ */

int main(void)
{
    Suite *s = suite_create("decimamba");
    add_tcase(s, "policy", 0,
              (const TTest *[]){deci_keep_count_examples, deci_select_examples,
                                deci_select_matches_brute_force, NULL});
    add_tcase(s, "modes", 0, (const TTest *[]){decimamba_mode_validation, NULL});
    add_tcase(s, "session", 120, (const TTest *[]){decimamba_matches_reference, decimamba_falcon, NULL});
    return run_suite(s);
}
