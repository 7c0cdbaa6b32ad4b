/*
 * test_stress.c - many threads on one shared model (the thread model of
 * include/longmamba.h: a model, a calibration and a tokenizer are shared,
 * a session belongs to one thread at a time).
 *
 * Each of 8 threads runs its own deterministic script on the committed
 * m1-odd-f32 fixture: prefills of varied lengths (several chunks), decode
 * steps, batched steps with a second session of its own, resets, state
 * save / load, length hints, and mode switches between
 * vanilla, LongMamba (one calibration computed up front, shared by all
 * threads) and DeciMamba, plus a calibration of its own.  Everything a
 * script observes (statuses, positions, logits, state blobs, calibration
 * statistics) goes into a transcript.  The same scripts are first run one
 * after another on one thread; the concurrent transcripts must be bitwise
 * identical to those.  .ci/tsan.sh runs this file under ThreadSanitizer.
 *
 * LM_STRESS_ROUNDS (default 2) repeats the concurrent run.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "suite.h"
#include "testutil.h"

#define N_THREADS 8
#define N_OPS 48
#define MAX_PROMPT 300

static lm_model *g_model;
static lm_calibration *g_calib;
static int64_t g_vocab;

/* ---- transcripts ------------------------------------------------------------ */

typedef struct transcript {
    unsigned char *buf;
    size_t n, cap;
    int failed_op; /* first op whose status was unexpected, or -1 */
} transcript;

static void tr_put(transcript *t, const void *p, size_t n)
{
    if (t->n + n > t->cap) {
        size_t cap = t->cap ? t->cap : 1 << 16;
        while (cap < t->n + n) cap *= 2;
        unsigned char *b = realloc(t->buf, cap);
        if (!b) abort();
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->n, p, n);
    t->n += n;
}

static void tr_i64(transcript *t, int64_t v) { tr_put(t, &v, sizeof v); }

/* ---- the scripts ------------------------------------------------------------ */

typedef struct job {
    int id;
    transcript tr;
} job;

/* Records st; a status other than `want` marks the transcript as failed
 * (the comparison then reports it). */
static void expect(job *j, int op, lm_status st, lm_status want)
{
    tr_i64(&j->tr, st);
    if (st != want && j->tr.failed_op < 0) j->tr.failed_op = op;
}

static void run_script(job *j)
{
    const int64_t V = g_vocab;
    tu_rng rng = {0x5eed0000u + (uint64_t)j->id};
    int32_t *tok = malloc(sizeof(int32_t) * MAX_PROMPT);
    float *logits = malloc(sizeof(float) * (size_t)(2 * V));
    size_t state_n = 0;
    unsigned char *saved = NULL, *blob = NULL;
    int have_saved = 0;
    int64_t hint_end = 0; /* the session's length hint, mirrored */
    j->tr.failed_op = -1;

    lm_session_params sp;
    lm_session_params_init(&sp);
    sp.chunk_size = 16 + 16 * (j->id % 4); /* 16..64: most prefills span chunks */
    lm_session *s = NULL, *s2 = NULL;
    lm_status st = lm_session_create(g_model, &sp, &s, NULL, 0);
    expect(j, -1, st, LM_OK);
    if (st != LM_OK) goto out;
    st = lm_session_create(g_model, &sp, &s2, NULL, 0);
    expect(j, -1, st, LM_OK);
    lm_session_state_size(s, &state_n);
    saved = malloc(state_n);
    blob = malloc(state_n);
    int deci = 0;

    /* A calibration of this thread's own, concurrently with the others. */
    {
        int32_t w[48];
        for (int i = 0; i < 48; i++) w[i] = (int32_t)tu_rng_int(&rng, 0, V - 1);
        const int32_t *wins[1] = {w};
        size_t lens[1] = {48};
        const int64_t buckets[2] = {64, 256};
        lm_calib_params cp;
        lm_calib_params_init(&cp);
        cp.buckets = buckets;
        cp.n_buckets = 2;
        lm_calibration *c = NULL;
        st = lm_calibrate(g_model, wins, lens, 1, &cp, &c, NULL, 0);
        expect(j, -2, st, LM_OK);
        if (st == LM_OK) {
            double ld[256];
            for (int64_t l = 0; l < g_model->dims.n_layer; l++) {
                lm_calibration_get_log_decay(c, l, ld, 256);
                tr_put(&j->tr, ld, sizeof(double) * (size_t)g_model->dims.n_channels);
            }
            lm_calibration_free(c);
        }
    }

    for (int op = 0; op < N_OPS; op++) {
        int64_t kind = tu_rng_int(&rng, 0, 99);
        tr_i64(&j->tr, kind);
        if (kind < 35) { /* prefill */
            int64_t n = tu_rng_int(&rng, 1, MAX_PROMPT);
            for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)tu_rng_int(&rng, 0, V - 1);
            int64_t nl = deci ? tu_rng_int(&rng, 0, 1) : tu_rng_int(&rng, 0, n < 2 ? n : 2);
            if (hint_end > 0 && lm_session_position(s) + n > hint_end) {
                /* The prompt would overrun the hint (an error): drop the hint. */
                expect(j, op, lm_session_set_length_hint(s, 0), LM_OK);
                hint_end = 0;
            }
            st = lm_session_prefill(s, tok, (size_t)n, (size_t)nl, logits, (size_t)(2 * V));
            expect(j, op, st, LM_OK);
            if (lm_session_position(s) >= hint_end) hint_end = 0;
            tr_put(&j->tr, logits, sizeof(float) * (size_t)(nl * V));
        } else if (kind < 52 && s2) { /* a batched step of s and this thread's second session */
            lm_session *pair[2] = {s, s2};
            int32_t bt[2] = {(int32_t)tu_rng_int(&rng, 0, V - 1), (int32_t)tu_rng_int(&rng, 0, V - 1)};
            st = lm_session_decode_batch(pair, 2, bt, logits, (size_t)(2 * V));
            expect(j, op, st, LM_OK);
            tr_put(&j->tr, logits, sizeof(float) * (size_t)(2 * V));
        } else if (kind < 60) { /* a few decode steps */
            int64_t k = tu_rng_int(&rng, 1, 4);
            for (int64_t i = 0; i < k; i++) {
                st = lm_session_decode(s, (int32_t)tu_rng_int(&rng, 0, V - 1), logits, (size_t)V);
                expect(j, op, st, LM_OK);
                tr_put(&j->tr, logits, sizeof(float) * (size_t)V);
            }
        } else if (kind < 66) { /* reset */
            expect(j, op, lm_session_reset(s), LM_OK);
            hint_end = 0;
        } else if (kind < 74) { /* save */
            size_t w = 0;
            st = lm_session_state_save(s, saved, state_n, &w);
            expect(j, op, st, LM_OK);
            have_saved = st == LM_OK;
            tr_put(&j->tr, saved, state_n);
        } else if (kind < 80) { /* load the last save */
            if (have_saved) {
                expect(j, op, lm_session_state_load(s, saved, state_n), LM_OK);
                hint_end = 0;
                size_t w = 0;
                expect(j, op, lm_session_state_save(s, blob, state_n, &w), LM_OK);
                expect(j, op, memcmp(blob, saved, state_n) == 0 ? LM_OK : LM_ERR_MISMATCH, LM_OK);
            }
        } else if (kind < 86) { /* LongMamba with the shared calibration */
            lm_longmamba_params lp;
            lm_longmamba_params_init(&lp);
            lp.trigger_length = tu_rng_int(&rng, 16, 200);
            lp.threshold_scale = 0.5 + 0.25 * (double)tu_rng_int(&rng, 0, 4);
            expect(j, op, lm_session_set_longmamba(s, g_calib, &lp), LM_OK);
            deci = 0;
        } else if (kind < 91) { /* DeciMamba */
            lm_decimamba_params dp;
            lm_decimamba_params_init(&dp);
            dp.l_base = tu_rng_int(&rng, 8, 64);
            dp.min_len = 4;
            dp.protect = 2;
            expect(j, op, lm_session_set_decimamba(s, &dp), LM_OK);
            deci = 1;
        } else if (kind < 96) { /* vanilla */
            expect(j, op, lm_session_set_vanilla(s), LM_OK);
            deci = 0;
        } else { /* length hint for the next prefill */
            int64_t h = tu_rng_int(&rng, MAX_PROMPT, 4 * MAX_PROMPT);
            expect(j, op, lm_session_set_length_hint(s, h), LM_OK);
            hint_end = lm_session_position(s) + h;
        }
        tr_i64(&j->tr, lm_session_position(s));
    }
    size_t w = 0;
    expect(j, N_OPS, lm_session_state_save(s, blob, state_n, &w), LM_OK);
    tr_put(&j->tr, blob, state_n);
out:
    lm_session_free(s);
    lm_session_free(s2);
    free(saved);
    free(blob);
    free(tok);
    free(logits);
}

static void *thread_main(void *arg)
{
    run_script(arg);
    return NULL;
}

/* ---- fixtures ------------------------------------------------------------------ */

static void setup(void)
{
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CPU;
    mp.n_threads = 2;
    char err[512];
    lm_status st = lm_model_load(LM_TEST_DATA "/fixtures/m1-odd-f32", &mp, &g_model, err, sizeof err);
    ck_assert_msg(st == LM_OK, "load: %s", err);
    g_vocab = g_model->dims.vocab;

    /* One calibration for every thread's LongMamba mode. */
    int32_t w0[96], w1[64];
    tu_rng rng = {42};
    for (int i = 0; i < 96; i++) w0[i] = (int32_t)tu_rng_int(&rng, 0, g_vocab - 1);
    for (int i = 0; i < 64; i++) w1[i] = (int32_t)tu_rng_int(&rng, 0, g_vocab - 1);
    const int32_t *wins[2] = {w0, w1};
    const size_t lens[2] = {96, 64};
    const int64_t buckets[4] = {64, 128, 256, 512};
    lm_calib_params cp;
    lm_calib_params_init(&cp);
    cp.buckets = buckets;
    cp.n_buckets = 4;
    st = lm_calibrate(g_model, wins, lens, 2, &cp, &g_calib, err, sizeof err);
    ck_assert_msg(st == LM_OK, "calibrate: %s", err);
}

static void teardown(void)
{
    lm_calibration_free(g_calib);
    lm_model_free(g_model);
    g_calib = NULL;
    g_model = NULL;
}

/* ---- tests ------------------------------------------------------------------ */

static void check_same(const job *ref, const job *got, int round)
{
    ck_assert_msg(ref->tr.failed_op < 0, "script %d: op %d failed when run alone", ref->id,
                  ref->tr.failed_op);
    ck_assert_msg(got->tr.failed_op < 0, "script %d (round %d): op %d failed in a thread",
                  got->id, round, got->tr.failed_op);
    ck_assert_msg(got->tr.n == ref->tr.n, "script %d (round %d): transcript of %zu bytes, %zu alone",
                  got->id, round, got->tr.n, ref->tr.n);
    size_t at = 0;
    while (at < ref->tr.n && ref->tr.buf[at] == got->tr.buf[at]) at++;
    ck_assert_msg(at == ref->tr.n, "script %d (round %d): transcripts differ from byte %zu of %zu",
                  got->id, round, at, ref->tr.n);
}

START_TEST(threads_match_serial)
{
    job ref[N_THREADS];
    memset(ref, 0, sizeof ref);
    for (int i = 0; i < N_THREADS; i++) {
        ref[i].id = i;
        run_script(&ref[i]);
        /* The script does observe something: logits and state, not only statuses. */
        ck_assert_uint_gt(ref[i].tr.n, 10000);
    }
    const char *r = getenv("LM_STRESS_ROUNDS");
    int rounds = r && atoi(r) > 0 ? atoi(r) : 2;
    for (int round = 0; round < rounds; round++) {
        job jobs[N_THREADS];
        pthread_t th[N_THREADS];
        memset(jobs, 0, sizeof jobs);
        for (int i = 0; i < N_THREADS; i++) {
            jobs[i].id = i;
            ck_assert_int_eq(pthread_create(&th[i], NULL, thread_main, &jobs[i]), 0);
        }
        for (int i = 0; i < N_THREADS; i++) ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        for (int i = 0; i < N_THREADS; i++) {
            check_same(&ref[i], &jobs[i], round);
            free(jobs[i].tr.buf);
        }
    }
    for (int i = 0; i < N_THREADS; i++) free(ref[i].tr.buf);
}
END_TEST

/* The scripts differ from one another (so the threads do not merely
 * repeat one computation). */
START_TEST(scripts_differ)
{
    job a = {.id = 0}, b = {.id = 1};
    run_script(&a);
    run_script(&b);
    ck_assert(a.tr.n != b.tr.n || memcmp(a.tr.buf, b.tr.buf, a.tr.n) != 0);
    free(a.tr.buf);
    free(b.tr.buf);
}
END_TEST

/* A shared tokenizer encoding and decoding in many threads at once. */
typedef struct tok_job {
    const lm_tokenizer *tok;
    int id;
    int32_t ids[4096];
    size_t n_ids;
    char text[8192];
    size_t n_text;
    lm_status st;
} tok_job;

static void tok_run(tok_job *j)
{
    char text[2048];
    size_t n = 0;
    for (int k = 0; k < 40; k++)
        n += (size_t)snprintf(text + n, sizeof text - n, "caf\xc3\xa9 %d <|sp|>x na\xc3\xafve, ", j->id * 100 + k);
    j->st = lm_tokenizer_encode(j->tok, text, n, j->ids, 4096, &j->n_ids, NULL, 0);
    if (j->st == LM_OK)
        j->st = lm_tokenizer_decode(j->tok, j->ids, j->n_ids, j->text, sizeof j->text, &j->n_text,
                                    NULL, 0);
}

static void *tok_thread(void *arg)
{
    for (int rep = 0; rep < 5; rep++) tok_run(arg);
    return NULL;
}

START_TEST(shared_tokenizer)
{
    lm_tokenizer *tok = NULL;
    char err[512];
    ck_assert_msg(lm_tokenizer_load(LM_TEST_DATA "/tokenizer/tiny-a.json", &tok, err, sizeof err) ==
                      LM_OK,
                  "%s", err);
    static tok_job ref[N_THREADS], jobs[N_THREADS];
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        ref[i] = (tok_job){.tok = tok, .id = i};
        tok_run(&ref[i]);
        ck_assert_int_eq(ref[i].st, LM_OK);
        ck_assert_uint_gt(ref[i].n_ids, 100);
        jobs[i] = (tok_job){.tok = tok, .id = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, tok_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(jobs[i].st, LM_OK);
        ck_assert_uint_eq(jobs[i].n_ids, ref[i].n_ids);
        ck_assert(memcmp(jobs[i].ids, ref[i].ids, sizeof(int32_t) * ref[i].n_ids) == 0);
        ck_assert_uint_eq(jobs[i].n_text, ref[i].n_text);
        ck_assert(memcmp(jobs[i].text, ref[i].text, ref[i].n_text) == 0);
    }
    lm_tokenizer_free(tok);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stress");
    TCase *tc =
        add_tcase(s, "threads", 600,
                  (const TTest *[]){threads_match_serial, scripts_differ, shared_tokenizer, NULL});
    tcase_add_checked_fixture(tc, setup, teardown);
    return run_suite(s);
}
