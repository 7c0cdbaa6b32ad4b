/* test_session.c - sessions on the CPU backend: prefill/decode agreement,
 * chunking, state blobs (round trip, fork, corruption, other models),
 * concurrency, argument checks, abort, length hint, and the transformers
 * fixtures when the loader can read them. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/safetensors.h"
#include "internal.h"
#include "longmamba_fixture.h"
#include "testmodel.h"
#include "suite.h"

static lm_model *g_model; /* built once per test (fork mode) */

static lm_model *build(const tm_config *c)
{
    char err[256];
    lm_model *m = tm_model_build(c, err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    return m;
}

static void setup(void)
{
    tm_config c = tm_config_small();
    c.n_layer = 3;
    g_model = build(&c);
}

static void teardown(void)
{
    tm_model_free(g_model);
    g_model = NULL;
}

static void random_tokens(int32_t *t, int64_t n, int64_t V, uint64_t seed)
{
    tu_rng rng = {seed * 7919 + 1};
    for (int64_t i = 0; i < n; i++) t[i] = (int32_t)(((tu_rng_sym(&rng) + 1.0) * 0.5) * (double)V) % (int32_t)V;
}

static double rel_err(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num) / (den > 0.0 ? sqrt(den) : 1.0);
}

/* The state as a blob (malloc'd). */
static unsigned char *save_state(lm_session *s, size_t *n)
{
    ck_assert_int_eq(lm_session_state_size(s, n), LM_OK);
    unsigned char *b = malloc(*n);
    size_t w = 0;
    ck_assert_int_eq(lm_session_state_save(s, b, *n, &w), LM_OK);
    ck_assert_uint_eq(w, *n);
    return b;
}

/* ---- agreement ---------------------------------------------------------- */

START_TEST(decode_equals_prefill)
{
    const int64_t T = 40, V = g_model->dims.vocab;
    int32_t tok[40];
    random_tokens(tok, T, V, 1);
    float *full = malloc(sizeof(float) * (size_t)(T * V));
    float *step = malloc(sizeof(float) * (size_t)V);
    lm_session *a = new_session(g_model, 0), *b = new_session(g_model, 0);
    ck_assert_int_eq(lm_session_prefill(a, tok, (size_t)T, (size_t)T, full, (size_t)(T * V)), LM_OK);
    ck_assert_int_eq(lm_session_prefill(b, tok, 1, 1, step, (size_t)V), LM_OK);
    double worst = rel_err(step, full, (size_t)V);
    for (int64_t t = 1; t < T; t++) {
        ck_assert_int_eq(lm_session_decode(b, tok[t], step, (size_t)V), LM_OK);
        double e = rel_err(step, full + t * V, (size_t)V);
        if (e > worst) worst = e;
    }
    ck_assert_msg(worst <= 1e-5, "decode vs prefill: rel err %.3g", worst);
    ck_assert_int_eq(lm_session_position(b), T);
    ck_assert_int_eq(lm_session_position(a), T);
    /* decode without logits advances too */
    ck_assert_int_eq(lm_session_decode(b, 3, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_position(b), T + 1);
    lm_session_free(a);
    lm_session_free(b);
    free(full);
    free(step);
}
END_TEST

START_TEST(chunked_equals_unchunked)
{
    const int64_t T = 100, V = g_model->dims.vocab;
    int32_t tok[100];
    random_tokens(tok, T, V, 2);
    float *ref = malloc(sizeof(float) * (size_t)(T * V));
    float *out = malloc(sizeof(float) * (size_t)(T * V));
    lm_session *s0 = new_session(g_model, 0);
    ck_assert_int_eq(lm_session_prefill(s0, tok, (size_t)T, (size_t)T, ref, (size_t)(T * V)), LM_OK);
    size_t n0;
    unsigned char *st0 = save_state(s0, &n0);
    const int64_t chunks[] = {1, 7, 64, 100, 3000};
    for (int i = 0; i < 5; i++) {
        lm_session *s = new_session(g_model, chunks[i]);
        ck_assert_int_eq(lm_session_prefill(s, tok, (size_t)T, (size_t)T, out, (size_t)(T * V)), LM_OK);
        double e = rel_err(out, ref, (size_t)(T * V));
        ck_assert_msg(e <= 1e-5, "chunk %lld: rel err %.3g", (long long)chunks[i], e);
        size_t n1;
        unsigned char *st1 = save_state(s, &n1);
        ck_assert_uint_eq(n0, n1);
        const size_t hdr = 72;
        e = rel_err((const float *)(st1 + hdr), (const float *)(st0 + hdr), (n1 - hdr) / sizeof(float));
        ck_assert_msg(e <= 1e-5, "chunk %lld: state rel err %.3g", (long long)chunks[i], e);
        free(st1);
        /* a logits window spanning a chunk boundary lands at the right offsets */
        lm_session_reset(s);
        ck_assert_int_eq(lm_session_prefill(s, tok, (size_t)T, 9, out, (size_t)(9 * V)), LM_OK);
        e = rel_err(out, ref + (T - 9) * V, (size_t)(9 * V));
        ck_assert_msg(e <= 1e-5, "chunk %lld, 9 logits: rel err %.3g", (long long)chunks[i], e);
        lm_session_free(s);
    }
    /* a prompt split over several calls equals one call */
    lm_session *s = new_session(g_model, 8);
    ck_assert_int_eq(lm_session_prefill(s, tok, 33, 0, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_prefill(s, tok + 33, (size_t)(T - 33), 1, out, (size_t)V), LM_OK);
    ck_assert(rel_err(out, ref + (T - 1) * V, (size_t)V) <= 1e-5);
    lm_session_free(s);
    lm_session_free(s0);
    free(st0);
    free(ref);
    free(out);
}
END_TEST

/* ---- state ---------------------------------------------------------------- */

START_TEST(state_round_trip)
{
    const int64_t V = g_model->dims.vocab;
    int32_t tok[30];
    random_tokens(tok, 30, V, 3);
    lm_session *a = new_session(g_model, 0), *b = new_session(g_model, 0);
    ck_assert_int_eq(lm_session_prefill(a, tok, 30, 0, NULL, 0), LM_OK);
    size_t n;
    unsigned char *blob = save_state(a, &n);
    ck_assert_uint_eq(n, 72 + sizeof(float) * (lmi_state_floats(g_model, LMI_STATE_CONV) +
                                               lmi_state_floats(g_model, LMI_STATE_SSM)));
    ck_assert_int_eq(lm_session_state_load(b, blob, n), LM_OK);
    ck_assert_int_eq(lm_session_position(b), 30);
    size_t n2;
    unsigned char *blob2 = save_state(b, &n2);
    ck_assert_uint_eq(n, n2);
    ck_assert(memcmp(blob, blob2, n) == 0);
    float *la = malloc(sizeof(float) * (size_t)V), *lb = malloc(sizeof(float) * (size_t)V);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(lm_session_decode(a, tok[i], la, (size_t)V), LM_OK);
        ck_assert_int_eq(lm_session_decode(b, tok[i], lb, (size_t)V), LM_OK);
        ck_assert(memcmp(la, lb, sizeof(float) * (size_t)V) == 0);
    }
    /* the state is not all zeros, and reset makes it so */
    int nonzero = 0;
    for (size_t i = 72; i < n; i++) nonzero |= blob[i];
    ck_assert(nonzero);
    ck_assert_int_eq(lm_session_reset(b), LM_OK);
    ck_assert_int_eq(lm_session_position(b), 0);
    free(blob2);
    blob2 = save_state(b, &n2);
    for (size_t i = 72; i < n2; i++) ck_assert_int_eq(blob2[i], 0);
    free(blob);
    free(blob2);
    free(la);
    free(lb);
    lm_session_free(a);
    lm_session_free(b);
}
END_TEST

START_TEST(fork_conversation)
{
    const int64_t V = g_model->dims.vocab;
    int32_t all[2][32];
    random_tokens(all[0], 32, V, 4);
    memcpy(all[1], all[0], sizeof all[0]);
    random_tokens(all[1] + 20, 12, V, 5); /* same 20-token prefix, different tails */
    lm_session *s = new_session(g_model, 0);
    ck_assert_int_eq(lm_session_prefill(s, all[0], 20, 0, NULL, 0), LM_OK);
    size_t n;
    unsigned char *fork = save_state(s, &n);
    float *got = malloc(sizeof(float) * (size_t)(12 * V)), *want = malloc(sizeof(float) * (size_t)(32 * V));
    for (int br = 0; br < 2; br++) {
        ck_assert_int_eq(lm_session_state_load(s, fork, n), LM_OK);
        ck_assert_int_eq(lm_session_prefill(s, all[br] + 20, 12, 12, got, (size_t)(12 * V)), LM_OK);
        lm_session *f = new_session(g_model, 0);
        ck_assert_int_eq(lm_session_prefill(f, all[br], 32, 32, want, (size_t)(32 * V)), LM_OK);
        double e = rel_err(got, want + 20 * V, (size_t)(12 * V));
        ck_assert_msg(e <= 1e-5, "branch %d: rel err %.3g", br, e);
        lm_session_free(f);
    }
    free(fork);
    free(got);
    free(want);
    lm_session_free(s);
}
END_TEST

/* ---- threads -------------------------------------------------------------- */

typedef struct job {
    const lm_model *m;
    const int32_t *tok;
    int64_t T;
    float *out; /* [T + 5][V] */
    lm_status st;
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    const int64_t V = j->m->dims.vocab;
    lm_session *s = NULL;
    j->st = lm_session_create(j->m, NULL, &s, NULL, 0);
    if (j->st != LM_OK) return NULL;
    j->st = lm_session_prefill(s, j->tok, (size_t)j->T, (size_t)j->T, j->out, (size_t)(j->T * V));
    for (int i = 0; i < 5 && j->st == LM_OK; i++)
        j->st = lm_session_decode(s, j->tok[i], j->out + (j->T + i) * V, (size_t)V);
    lm_session_free(s);
    return NULL;
}

START_TEST(concurrent_sessions_agree)
{
    const int64_t T = 600, V = g_model->dims.vocab; /* two chunks */
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)T);
    random_tokens(tok, T, V, 6);
    const size_t n = (size_t)((T + 5) * V);
    job ref = {.m = g_model, .tok = tok, .T = T, .out = malloc(sizeof(float) * n)};
    run_job(&ref);
    ck_assert_int_eq(ref.st, LM_OK);
    job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = ref;
        jobs[i].out = malloc(sizeof(float) * n);
        jobs[i].st = LM_ERR_BACKEND;
        ck_assert_int_eq(pthread_create(&th[i], NULL, run_job, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(jobs[i].st, LM_OK);
        ck_assert_msg(memcmp(jobs[i].out, ref.out, sizeof(float) * n) == 0,
                      "thread %d differs: rel err %.3g", i, rel_err(jobs[i].out, ref.out, n));
        free(jobs[i].out);
    }
    free(ref.out);
    free(tok);
}
END_TEST

/* ---- errors ----------------------------------------------------------------- */

/* lm_session_decode_batch: each row equals the session's own decode (the
 * batch runs its projections as GEMMs over the sessions, a single decode as
 * GEMVs: same sums in another order, so within 1e-5), positions advance,
 * sessions in different modes and at different positions mix. */
START_TEST(decode_batch_equals_decode)
{
    enum { NS = 5, T = 12 };
    const int64_t V = g_model->dims.vocab;
    lm_session *bat[NS], *one[NS];
    int32_t prompt[40];
    for (int i = 0; i < NS; i++) {
        bat[i] = new_session(g_model, 0);
        one[i] = new_session(g_model, 0);
        random_tokens(prompt, 40, V, 100 + (uint64_t)i);
        const size_t plen = (size_t)(3 + 7 * i); /* different positions */
        ck_assert_int_eq(lm_session_prefill(bat[i], prompt, plen, 0, NULL, 0), LM_OK);
        ck_assert_int_eq(lm_session_prefill(one[i], prompt, plen, 0, NULL, 0), LM_OK);
    }
    lm_decimamba_params dp;
    lm_decimamba_params_init(&dp);
    ck_assert_int_eq(lm_session_set_decimamba(bat[1], &dp), LM_OK); /* decode stays vanilla */
    float *lb = malloc(sizeof(float) * (size_t)(NS * V)), *l1 = malloc(sizeof(float) * (size_t)V);
    int32_t tok[NS];
    for (int t = 0; t < T; t++) {
        random_tokens(tok, NS, V, 500 + (uint64_t)t);
        ck_assert_int_eq(lm_session_decode_batch(bat, NS, tok, lb, (size_t)(NS * V)), LM_OK);
        for (int i = 0; i < NS; i++) {
            ck_assert_int_eq(lm_session_decode(one[i], tok[i], l1, (size_t)V), LM_OK);
            const double err = rel_err(lb + i * V, l1, (size_t)V);
            ck_assert_msg(err <= 1e-5, "step %d session %d: batch row vs its own decode: rel err %.3g",
                          t, i, err);
        }
    }
    for (int i = 0; i < NS; i++)
        ck_assert_int_eq(lm_session_position(bat[i]), lm_session_position(one[i]));
    /* without logits, and n == 0 */
    ck_assert_int_eq(lm_session_decode_batch(bat, NS, tok, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_position(bat[0]), 3 + T + 1);
    ck_assert_int_eq(lm_session_decode_batch(bat, 0, NULL, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_position(bat[0]), 3 + T + 1);
    for (int i = 0; i < NS; i++) {
        lm_session_free(bat[i]);
        lm_session_free(one[i]);
    }
    free(lb);
    free(l1);
}
END_TEST

/* Bad batches are refused with a message in sessions[0] and change no
 * session (positions and states). */
START_TEST(decode_batch_arguments)
{
    const int64_t V = g_model->dims.vocab;
    lm_session *a = new_session(g_model, 0), *b = new_session(g_model, 0);
    tm_config c = tm_config_small();
    lm_model *other = build(&c);
    lm_session *o = new_session(other, 0);
    int32_t tok[3] = {1, 2, 3};
    ck_assert_int_eq(lm_session_prefill(a, tok, 3, 0, NULL, 0), LM_OK);
    size_t nb = 0;
    unsigned char *before = save_state(a, &nb);
    float *lg = malloc(sizeof(float) * (size_t)(3 * V));
    lm_session *two[2] = {a, b}, *dup[2] = {a, a}, *mixed[2] = {a, o}, *null2[2] = {a, NULL};
    ck_assert_int_eq(lm_session_decode_batch(NULL, 2, tok, lg, (size_t)(2 * V)), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_decode_batch(two, 2, NULL, lg, (size_t)(2 * V)), LM_ERR_INVALID_ARGUMENT);
    ck_assert(strstr(lm_session_last_error(a), "tokens") != NULL);
    ck_assert_int_eq(lm_session_decode_batch(null2, 2, tok, lg, (size_t)(2 * V)), LM_ERR_INVALID_ARGUMENT);
    ck_assert(strstr(lm_session_last_error(a), "sessions[1]") != NULL);
    ck_assert_int_eq(lm_session_decode_batch(dup, 2, tok, lg, (size_t)(2 * V)), LM_ERR_INVALID_ARGUMENT);
    ck_assert(strstr(lm_session_last_error(a), "twice") != NULL);
    ck_assert_int_eq(lm_session_decode_batch(mixed, 2, tok, lg, (size_t)(2 * V)), LM_ERR_INVALID_ARGUMENT);
    ck_assert(strstr(lm_session_last_error(a), "another model") != NULL);
    int32_t bad[2] = {1, (int32_t)V};
    ck_assert_int_eq(lm_session_decode_batch(two, 2, bad, lg, (size_t)(2 * V)), LM_ERR_OUT_OF_RANGE);
    ck_assert(strstr(lm_session_last_error(a), "tokens[1]") != NULL);
    bad[1] = -1;
    ck_assert_int_eq(lm_session_decode_batch(two, 2, bad, lg, (size_t)(2 * V)), LM_ERR_OUT_OF_RANGE);
    ck_assert_int_eq(lm_session_decode_batch(two, 2, tok, lg, (size_t)(2 * V - 1)), LM_ERR_BUFFER_TOO_SMALL);
    ck_assert(strstr(lm_session_last_error(a), "logits") != NULL);
    /* nothing moved */
    ck_assert_int_eq(lm_session_position(a), 3);
    ck_assert_int_eq(lm_session_position(b), 0);
    size_t na = 0;
    unsigned char *after = save_state(a, &na);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(before, after, nb) == 0);
    /* and the sessions still work */
    ck_assert_int_eq(lm_session_decode_batch(two, 2, tok, lg, (size_t)(2 * V)), LM_OK);
    ck_assert_int_eq(lm_session_position(a), 4);
    ck_assert_int_eq(lm_session_position(b), 1);
    free(before);
    free(after);
    free(lg);
    lm_session_free(a);
    lm_session_free(b);
    lm_session_free(o);
    tm_model_free(other);
}
END_TEST

START_TEST(create_arguments)
{
    char err[256] = "x";
    lm_session *s = (lm_session *)1;
    ck_assert_int_eq(lm_session_create(NULL, NULL, &s, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(s);
    ck_assert(strstr(err, "model") != NULL);
    ck_assert_int_eq(lm_session_create(g_model, NULL, NULL, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    lm_session_params p;
    lm_session_params_init(&p);
    ck_assert_int_eq(p.chunk_size, 0); /* 0 = the backend's default */
    ck_assert_uint_eq(p.struct_size, sizeof p);
    p.chunk_size = -3;
    ck_assert_int_eq(lm_session_create(g_model, &p, &s, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    ck_assert(strstr(err, "chunk_size") != NULL);
    p.chunk_size = 0;
    p.struct_size = 0;
    ck_assert_int_eq(lm_session_create(g_model, &p, &s, err, sizeof err), LM_ERR_INVALID_ARGUMENT);
    /* an older, shorter struct: fields past it take their defaults */
    p.struct_size = (uint32_t)offsetof(lm_session_params, flags);
    p.chunk_size = 0;
    ck_assert_int_eq(lm_session_create(g_model, &p, &s, err, sizeof err), LM_OK);
    ck_assert_int_eq(s->chunk_size, 512);
    ck_assert_str_eq(lm_session_last_error(s), "");
    lm_session_free(s);
    lm_session_free(NULL);
    ck_assert_ptr_nonnull(lm_session_last_error(NULL));
    ck_assert_int_eq(lm_session_position(NULL), -1);
    ck_assert_int_eq(lm_session_reset(NULL), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_set_length_hint(NULL, 3), LM_ERR_INVALID_ARGUMENT);
    size_t n;
    ck_assert_int_eq(lm_session_state_size(NULL, &n), LM_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(prefill_and_decode_arguments)
{
    const int64_t V = g_model->dims.vocab;
    lm_session *s = new_session(g_model, 4);
    int32_t tok[10];
    random_tokens(tok, 10, V, 7);
    ck_assert_int_eq(lm_session_prefill(s, tok, 10, 0, NULL, 0), LM_OK);
    size_t n;
    unsigned char *before = save_state(s, &n);
    float *lg = malloc(sizeof(float) * (size_t)(10 * V));

    ck_assert_int_eq(lm_session_prefill(NULL, tok, 10, 0, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_prefill(s, NULL, 10, 0, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_prefill(s, tok, 0, 0, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    ck_assert(strstr(lm_session_last_error(s), "empty prompt") != NULL);
    int32_t bad[3] = {1, (int32_t)V, 2};
    ck_assert_int_eq(lm_session_prefill(s, bad, 3, 1, lg, (size_t)V), LM_ERR_OUT_OF_RANGE);
    char want[64];
    snprintf(want, sizeof want, "token 1 has id %d", (int)V);
    ck_assert_msg(strstr(lm_session_last_error(s), want) != NULL, "%s", lm_session_last_error(s));
    bad[1] = -5;
    ck_assert_int_eq(lm_session_prefill(s, bad, 3, 1, lg, (size_t)V), LM_ERR_OUT_OF_RANGE);
    ck_assert(strstr(lm_session_last_error(s), "id -5") != NULL);
    ck_assert_int_eq(lm_session_prefill(s, tok, 3, 4, lg, (size_t)(4 * V)), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_prefill(s, tok, 3, 1, NULL, (size_t)V), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_prefill(s, tok, 3, 2, lg, (size_t)(2 * V - 1)), LM_ERR_BUFFER_TOO_SMALL);
    snprintf(want, sizeof want, "%lld needed", (long long)(2 * V));
    ck_assert_msg(strstr(lm_session_last_error(s), want) != NULL, "%s", lm_session_last_error(s));
    ck_assert_int_eq(lm_session_decode(NULL, 1, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_decode(s, (int32_t)V, NULL, 0), LM_ERR_OUT_OF_RANGE);
    ck_assert_int_eq(lm_session_decode(s, -1, NULL, 0), LM_ERR_OUT_OF_RANGE);
    ck_assert_int_eq(lm_session_decode(s, 1, lg, (size_t)(V - 1)), LM_ERR_BUFFER_TOO_SMALL);

    /* none of that touched the session */
    ck_assert_int_eq(lm_session_position(s), 10);
    size_t n2;
    unsigned char *after = save_state(s, &n2);
    ck_assert(n == n2 && memcmp(before, after, n) == 0);
    free(before);
    free(after);
    free(lg);
    lm_session_free(s);
}
END_TEST

START_TEST(state_blob_errors)
{
    const int64_t V = g_model->dims.vocab;
    lm_session *s = new_session(g_model, 0);
    int32_t tok[12];
    random_tokens(tok, 12, V, 8);
    ck_assert_int_eq(lm_session_prefill(s, tok, 12, 0, NULL, 0), LM_OK);
    size_t n;
    unsigned char *blob = save_state(s, &n);
    unsigned char *bad = malloc(n + 8);

    size_t w = 1;
    ck_assert_int_eq(lm_session_state_save(s, bad, n - 1, &w), LM_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(w, n);
    char want[64];
    snprintf(want, sizeof want, "%zu needed", n);
    ck_assert(strstr(lm_session_last_error(s), want) != NULL);
    ck_assert_int_eq(lm_session_state_save(s, NULL, 0, &w), LM_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(w, n);

    lm_session *t = new_session(g_model, 0);
    ck_assert_int_eq(lm_session_state_load(t, NULL, n), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_state_load(t, blob, n - 1), LM_ERR_FORMAT);     /* truncated */
    ck_assert_int_eq(lm_session_state_load(t, blob, 10), LM_ERR_FORMAT);
    memcpy(bad, blob, n);
    memset(bad + n, 0, 8);
    ck_assert_int_eq(lm_session_state_load(t, bad, n + 8), LM_ERR_FORMAT);      /* trailing bytes */
    bad[0] = 'X';
    ck_assert_int_eq(lm_session_state_load(t, bad, n), LM_ERR_FORMAT);         /* magic */
    memcpy(bad, blob, n);
    bad[4] = 2;
    ck_assert_int_eq(lm_session_state_load(t, bad, n), LM_ERR_FORMAT);         /* version */
    memcpy(bad, blob, n);
    bad[48] ^= 1;                                                               /* d_inner */
    ck_assert_int_eq(lm_session_state_load(t, bad, n), LM_ERR_FORMAT);
    memcpy(bad, blob, n);
    bad[31] = 0x7f;                                                             /* huge n_layer */
    ck_assert_int_eq(lm_session_state_load(t, bad, n), LM_ERR_FORMAT);
    memcpy(bad, blob, n);
    bad[71] = 0x80;                                                             /* negative position */
    ck_assert_int_eq(lm_session_state_load(t, bad, n), LM_ERR_FORMAT);
    memcpy(bad, blob, n);
    bad[9] ^= 0x10;                                                             /* fingerprint */
    ck_assert_int_eq(lm_session_state_load(t, bad, n), LM_ERR_MISMATCH);
    ck_assert(strstr(lm_session_last_error(t), "another model") != NULL);

    /* a state from a model with other weights, same shapes */
    tm_config c = tm_config_small();
    c.n_layer = 3;
    c.seed = 4321;
    lm_model *other = build(&c);
    lm_session *o = new_session(other, 0);
    ck_assert_int_eq(lm_session_prefill(o, tok, 12, 0, NULL, 0), LM_OK);
    size_t no;
    unsigned char *ob = save_state(o, &no);
    ck_assert_uint_eq(no, n);
    ck_assert_int_eq(lm_session_state_load(t, ob, no), LM_ERR_MISMATCH);
    ck_assert(strstr(lm_session_last_error(t), "state belongs to another model") != NULL);
    free(ob);
    lm_session_free(o);
    tm_model_free(other);
    /* ... and from a model of another shape */
    c.n_layer = 2;
    other = build(&c);
    o = new_session(other, 0);
    ob = save_state(o, &no);
    ck_assert_int_eq(lm_session_state_load(t, ob, no), LM_ERR_MISMATCH);
    free(ob);
    lm_session_free(o);
    tm_model_free(other);

    /* the failed loads left t at zero state and position 0 */
    ck_assert_int_eq(lm_session_position(t), 0);
    size_t nt;
    unsigned char *tb = save_state(t, &nt);
    for (size_t i = 72; i < nt; i++) ck_assert_int_eq(tb[i], 0);
    free(tb);
    ck_assert_int_eq(lm_session_state_load(t, blob, n), LM_OK);
    ck_assert_int_eq(lm_session_position(t), 12);
    lm_session_free(t);
    free(bad);
    free(blob);
    lm_session_free(s);
}
END_TEST

/* ---- progress and abort ------------------------------------------------------ */

typedef struct progress_log {
    int calls;
    int abort_at; /* abort on this call (1-based), 0 = never */
    int64_t last_done, total;
} progress_log;

static int on_progress(void *user, int64_t done, int64_t total)
{
    progress_log *p = user;
    p->calls++;
    ck_assert(done > p->last_done && done <= total);
    p->last_done = done;
    p->total = total;
    return p->abort_at == p->calls;
}

START_TEST(abort_keeps_state)
{
    const int64_t V = g_model->dims.vocab;
    int32_t tok[50];
    random_tokens(tok, 50, V, 9);
    for (int abort_at = 1; abort_at <= 3; abort_at++) {
        progress_log pl = {.abort_at = 0};
        lm_session_params p;
        lm_session_params_init(&p);
        p.chunk_size = 16; /* the 40-token call runs in 3 chunks */
        p.progress = on_progress;
        p.progress_user = &pl;
        lm_session *s = NULL, *ctl = new_session(g_model, 16);
        ck_assert_int_eq(lm_session_create(g_model, &p, &s, NULL, 0), LM_OK);
        ck_assert_int_eq(lm_session_prefill(s, tok, 10, 0, NULL, 0), LM_OK);
        ck_assert_int_eq(lm_session_prefill(ctl, tok, 10, 0, NULL, 0), LM_OK);
        size_t n;
        unsigned char *before = save_state(s, &n);
        pl.calls = 0;
        pl.last_done = 0;
        pl.abort_at = abort_at;
        float *lg = malloc(sizeof(float) * (size_t)V), *lc = malloc(sizeof(float) * (size_t)V);
        ck_assert_int_eq(lm_session_prefill(s, tok + 10, 40, 1, lg, (size_t)V), LM_ERR_ABORTED);
        ck_assert_int_eq(pl.calls, abort_at);
        ck_assert(strstr(lm_session_last_error(s), "abort") != NULL);
        ck_assert_int_eq(lm_session_position(s), 10);
        size_t n2;
        unsigned char *after = save_state(s, &n2);
        ck_assert(memcmp(before, after, n) == 0);
        /* the continuation equals an un-aborted run */
        pl.abort_at = 0;
        pl.calls = 0;
        pl.last_done = 0;
        ck_assert_int_eq(lm_session_prefill(s, tok + 10, 40, 1, lg, (size_t)V), LM_OK);
        ck_assert_int_eq(pl.calls, 3);
        ck_assert_int_eq(pl.total, 40);
        ck_assert_int_eq(lm_session_prefill(ctl, tok + 10, 40, 1, lc, (size_t)V), LM_OK);
        ck_assert(memcmp(lg, lc, sizeof(float) * (size_t)V) == 0);
        free(before);
        free(after);
        free(lg);
        free(lc);
        lm_session_free(s);
        lm_session_free(ctl);
    }
}
END_TEST

START_TEST(length_hint)
{
    const int64_t V = g_model->dims.vocab;
    int32_t tok[20];
    random_tokens(tok, 20, V, 10);
    lm_session *s = new_session(g_model, 0);
    ck_assert_int_eq(lm_session_set_length_hint(s, -1), LM_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(lm_session_prefill(s, tok, 5, 0, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_set_length_hint(s, 10), LM_OK); /* prompt ends at 15 */
    ck_assert_int_eq(s->length_hint, 15);
    ck_assert_int_eq(lm_session_prefill(s, tok, 11, 0, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    ck_assert(strstr(lm_session_last_error(s), "length hint") != NULL);
    ck_assert(strstr(lm_session_last_error(s), "smaller than the prompt") != NULL);
    ck_assert_int_eq(lm_session_position(s), 5);
    ck_assert_int_eq(lm_session_prefill(s, tok, 6, 0, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_prefill(s, tok, 4, 0, NULL, 0), LM_OK);
    /* reached: the hint is used up and later prompts stand alone */
    ck_assert_int_eq(s->length_hint, 0);
    ck_assert_int_eq(lm_session_prefill(s, tok, 20, 0, NULL, 0), LM_OK);
    ck_assert_int_eq(lm_session_set_length_hint(s, 100), LM_OK);
    ck_assert_int_eq(lm_session_set_length_hint(s, 0), LM_OK); /* clears */
    ck_assert_int_eq(s->length_hint, 0);
    ck_assert_int_eq(lm_session_set_length_hint(s, 100), LM_OK);
    ck_assert_int_eq(lm_session_reset(s), LM_OK); /* reset clears too */
    ck_assert_int_eq(s->length_hint, 0);
    lm_session_free(s);
}
END_TEST

/* ---- DeciMamba through the session ------------------------------------------ */

START_TEST(decimamba_session_matches_double)
{
    const int64_t T = 60, V = g_model->dims.vocab, NL = g_model->dims.n_layer;
    int32_t tok[60];
    random_tokens(tok, T, V, 11);
    lm_session *s = new_session(g_model, 16); /* one chunk regardless: selection is global */
    const int32_t layers[1] = {1};
    lm_decimamba_params dp;
    lm_decimamba_params_init(&dp);
    dp.layers = layers;
    dp.n_layers = 1;
    dp.l_base = 10;
    dp.min_len = 3;
    dp.protect = 2;
    lm_status st = lm_session_set_decimamba(s, &dp);
    ck_assert_msg(st == LM_OK, "%s", lm_session_last_error(s));
    double budget[8];
    for (int64_t l = 0; l < NL; l++) budget[l] = l == 1 ? 10.0 : -1.0;
    double *ref = malloc(sizeof(double) * (size_t)(T * V));
    int64_t Tk = tm_reference_forward(g_model, tok, T, NULL, budget, 3, 2, ref, NULL);
    ck_assert_int_eq(Tk, 12);
    float *out = malloc(sizeof(float) * (size_t)(3 * V));
    ck_assert_int_eq(lm_session_prefill(s, tok, (size_t)T, 3, out, (size_t)(3 * V)),
                     LM_ERR_INVALID_ARGUMENT); /* more logits than protected tokens */
    ck_assert_int_eq(lm_session_position(s), 0);
    ck_assert_int_eq(lm_session_prefill(s, tok, (size_t)T, 2, out, (size_t)(2 * V)), LM_OK);
    float *o2 = malloc(sizeof(float) * (size_t)(2 * V));
    for (int64_t i = 0; i < 2 * V; i++) o2[i] = (float)ref[(Tk - 2) * V + i];
    double e = rel_err(out, o2, (size_t)(2 * V));
    ck_assert_msg(e <= 1e-5, "DeciMamba session logits: rel err %.3g", e);
    ck_assert_int_eq(lm_session_position(s), T);
    /* decode after a decimated prefill runs plain */
    ck_assert_int_eq(lm_session_decode(s, tok[0], out, (size_t)V), LM_OK);
    ck_assert_int_eq(lm_session_position(s), T + 1);
    free(ref);
    free(out);
    free(o2);
    lm_session_free(s);
}
END_TEST

/* ---- transformers fixtures ------------------------------------------------- */

START_TEST(fixtures_match_transformers)
{
    const char *root = LM_TEST_DATA "/fixtures";
    DIR *dir = opendir(root);
    ck_assert_msg(dir != NULL, "fixtures: cannot open %s", root);
    int n_checked = 0, n_f32 = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.') continue;
        char path[1024], refp[1100];
        snprintf(path, sizeof path, "%s/%s", root, de->d_name);
        snprintf(refp, sizeof refp, "%s/reference.safetensors", path);
        FILE *fp = fopen(refp, "rb");
        if (!fp) continue;
        fclose(fp);
        lm_model_params mp;
        lm_model_params_init(&mp);
        mp.backend = LM_BACKEND_CPU;
        mp.n_threads = 2;
        lm_model *m = NULL;
        char err[512];
        lm_status st = lm_model_load(path, &mp, &m, err, sizeof err);
        ck_assert_msg(st == LM_OK, "%s: load: %s", de->d_name, err);
        lmi_st_file rf;
        lmi_err e = {{0}};
        ck_assert_msg(lmi_st_open(refp, &rf, &e) == LM_OK, "%s", e.msg);
        const lmi_st_tensor *ids = lmi_st_find(&rf, "input_ids");
        const lmi_st_tensor *lg = lmi_st_find(&rf, "logits_f64");
        ck_assert(ids && lg && ids->dtype == LMI_ST_I32 && lg->dtype == LMI_ST_F64);
        const int64_t B = ids->shape[0], L = ids->shape[1], V = lg->shape[2];
        ck_assert_int_eq(V, m->dims.vocab);
        lm_session *s = new_session(m, 7); /* several chunks per row */
        float *out = malloc(sizeof(float) * (size_t)(L * V));
        int32_t *row = malloc(sizeof(int32_t) * (size_t)L);
        double worst = 0.0, worst_abs = 0.0, max_logit = 0.0;
        for (int64_t b = 0; b < B; b++) {
            memcpy(row, ids->data + (size_t)(b * L) * 4, (size_t)L * 4);
            ck_assert_int_eq(lm_session_reset(s), LM_OK);
            ck_assert_int_eq(lm_session_prefill(s, row, (size_t)L, (size_t)L, out, (size_t)(L * V)), LM_OK);
            double num = 0, den = 0;
            for (int64_t i = 0; i < L * V; i++) {
                double r;
                memcpy(&r, lg->data + (size_t)(b * L * V + i) * 8, 8);
                double dd = (double)out[i] - r;
                num += dd * dd;
                den += r * r;
                worst_abs = fmax(worst_abs, fabs(dd));
                max_logit = fmax(max_logit, fabs(r));
            }
            worst = fmax(worst, sqrt(num / den));
        }
        const bool bf16 = m->dtype == LM_DTYPE_BF16;
        printf("fixture %-18s %s  rows %lld x %lld  rel err %.3g  max abs err %.3g (max |logit| %.3g)\n",
               de->d_name, bf16 ? "bf16" : "f32 ", (long long)B, (long long)L, worst, worst_abs,
               max_logit);
        /* The references are float64 runs of the stored weights (bf16
         * values included), so an fp32 forward is held to 1e-5 for every
         * fixture; bf16 storage changes the weights, not the arithmetic. */
        ck_assert_msg(worst <= 1e-5, "%s: rel err %.3g", de->d_name, worst);
        ck_assert_msg(worst_abs <= 1e-5 * max_logit, "%s: abs err %.3g", de->d_name, worst_abs);
        n_checked++;
        n_f32 += !bf16;
        free(out);
        free(row);
        lm_session_free(s);
        lmi_st_close(&rf);
        lm_model_free(m);
    }
    closedir(dir);
    ck_assert_msg(n_checked > 0, "no fixture found under %s", root);
    ck_assert(n_f32 > 0);
}
END_TEST

/* Relative L2 error of n fp32 logits against n float64 ones stored
 * little endian at ref (a reference.safetensors row). */
static double rel_err_f64(const float *got, const uint8_t *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double r;
        memcpy(&r, ref + i * 8, 8);
        num += ((double)got[i] - r) * ((double)got[i] - r);
        den += r * r;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Falcon-Mamba (its dt/B/C normalisation in the chunk forward and in the
 * batched one-token step): one-shot, chunked, token-by-token decode and
 * batched decode all give the float64 reference's logits. */
START_TEST(falcon_decode_and_chunks_match_reference)
{
    const char *names[] = {"fm-odd-f32", "fm-bias-f32", "fm-eq-f32"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char path[512], refp[600];
        snprintf(path, sizeof path, "%s/fixtures/%s", LM_TEST_DATA, names[k]);
        snprintf(refp, sizeof refp, "%s/reference.safetensors", path);
        lm_model *m = load_fixture_at(path);
        ck_assert(m->dims.bcdt_rms_eps > 0);
        lm_model_info info;
        info.struct_size = sizeof info;
        ck_assert_int_eq(lm_model_get_info(m, &info), LM_OK);
        ck_assert_int_eq(info.arch, LM_ARCH_FALCON_MAMBA);
        lmi_st_file rf;
        lmi_err e = {{0}};
        ck_assert_msg(lmi_st_open(refp, &rf, &e) == LM_OK, "%s", e.msg);
        const lmi_st_tensor *ids = lmi_st_find(&rf, "input_ids");
        const lmi_st_tensor *lg = lmi_st_find(&rf, "logits_f64");
        ck_assert(ids && lg);
        const int64_t B = ids->shape[0], L = ids->shape[1], V = lg->shape[2];
        const uint8_t *ref = lg->data;
        float *out = malloc(sizeof(float) * (size_t)(L * V));
        float *rows = malloc(sizeof(float) * (size_t)(B * V));
        int32_t *row = malloc(sizeof(int32_t) * (size_t)L);
        double w_one = 0, w_chunk = 0, w_dec = 0, w_bat = 0;
        const int64_t chunks[] = {0, 1, 5};
        for (int64_t b = 0; b < B; b++) {
            memcpy(row, ids->data + (size_t)(b * L) * 4, (size_t)L * 4);
            const uint8_t *rb = ref + (size_t)(b * L * V) * 8;
            for (int c = 0; c < 3; c++) {
                lm_session *s = new_session(m, chunks[c]);
                ck_assert_int_eq(lm_session_prefill(s, row, (size_t)L, (size_t)L, out, (size_t)(L * V)), LM_OK);
                const double er = rel_err_f64(out, rb, (size_t)(L * V));
                if (c == 0) w_one = fmax(w_one, er);
                else w_chunk = fmax(w_chunk, er);
                lm_session_free(s);
            }
            lm_session *s = new_session(m, 0);
            ck_assert_int_eq(lm_session_prefill(s, row, 1, 1, out, (size_t)V), LM_OK);
            w_dec = fmax(w_dec, rel_err_f64(out, rb, (size_t)V));
            for (int64_t t = 1; t < L; t++) {
                ck_assert_int_eq(lm_session_decode(s, row[t], out, (size_t)V), LM_OK);
                w_dec = fmax(w_dec, rel_err_f64(out, rb + (size_t)(t * V) * 8, (size_t)V));
            }
            lm_session_free(s);
        }
        /* the batched step: every row of the reference at once */
        lm_session **ss = malloc(sizeof(lm_session *) * (size_t)B);
        int32_t *tok = malloc(sizeof(int32_t) * (size_t)B);
        for (int64_t b = 0; b < B; b++) {
            ss[b] = new_session(m, 0);
            tok[b] = ((const int32_t *)(const void *)ids->data)[b * L];
            ck_assert_int_eq(lm_session_prefill(ss[b], &tok[b], 1, 0, NULL, 0), LM_OK);
        }
        for (int64_t t = 1; t < L; t++) {
            for (int64_t b = 0; b < B; b++)
                memcpy(&tok[b], ids->data + (size_t)(b * L + t) * 4, 4);
            ck_assert_int_eq(lm_session_decode_batch(ss, (size_t)B, tok, rows, (size_t)(B * V)), LM_OK);
            for (int64_t b = 0; b < B; b++)
                w_bat = fmax(w_bat, rel_err_f64(rows + b * V, ref + (size_t)((b * L + t) * V) * 8,
                                                (size_t)V));
        }
        for (int64_t b = 0; b < B; b++) lm_session_free(ss[b]);
        printf("falcon %-12s rel err: one-shot %.3g, chunks 1/5 %.3g, decode %.3g, batched decode %.3g\n",
               names[k], w_one, w_chunk, w_dec, w_bat);
        ck_assert_msg(w_one <= 1e-5 && w_chunk <= 1e-5 && w_dec <= 1e-5 && w_bat <= 1e-5,
                      "%s: %.3g %.3g %.3g %.3g", names[k], w_one, w_chunk, w_dec, w_bat);
        free(ss);
        free(tok);
        free(out);
        free(rows);
        free(row);
        lmi_st_close(&rf);
        lm_model_free(m);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("session");
    TCase *tc = add_tcase(
        s, "session", 300,
        (const TTest *[]){decode_equals_prefill, chunked_equals_unchunked, state_round_trip,
                          fork_conversation, concurrent_sessions_agree, decode_batch_equals_decode,
                          decode_batch_arguments, create_arguments, prefill_and_decode_arguments,
                          state_blob_errors, abort_keeps_state, length_hint,
                          decimamba_session_matches_double, NULL});
    tcase_add_checked_fixture(tc, setup, teardown);
    add_tcase(s, "fixtures", 300,
              (const TTest *[]){fixtures_match_transformers, falcon_decode_and_chunks_match_reference,
                                NULL});
    return run_suite(s);
}
