/*
 * bench_e2e.c - end to end through the public API (longmamba.h), on the
 * random bf16 checkpoints that bench_hf.py --write saved with transformers
 * (DIR/<shape>), i.e. the very files transformers is timed on.
 *
 *   bench_e2e --dir DIR [--shapes mamba-130m,...] [--quick] [--rows FILE]
 *             [--backend cuda|cpu] [--lengths 2048,16384,65536]
 *             [--prompt 128] [--new 256] [--sessions 16]
 *   bench_e2e --decode-only --dir DIR --shapes mamba-130m   (for a profiler:
 *             a 128-token prompt, then 20 decode steps)
 *   bench_e2e --prefill-batch-only --dir DIR   (only the batched-prefill rows)
 *
 * Rows, per shape:
 *   logits:   max |logit| difference from transformers in float32 on the
 *             same checkpoint, all positions of the 32-token prompt in
 *             DIR/<shape>.ref (beside it: transformers' own bf16 vs float32);
 *   prefill:  tokens/s of one lm_session_prefill of L tokens, logits of the
 *             last position only, in a session whose chunk_size is L (one
 *             chunk); and, where L is larger than the session default chunk
 *             (CUDA 16384, longmamba.h), in a default session; median of 3
 *             after a warm-up, the session reset between runs (not timed);
 *   prefill of many prompts: 8 x 2k, 64 x 512 and 8 prompts of 256..3840
 *             tokens (16k in all; not with --quick): one
 *             lm_session_prefill_batch call vs lm_session_prefill on each
 *             session in turn; tok/s = all prompt tokens / wall time, logits
 *             of each prompt's last token; median of 3 after a warm-up
 *             (LM_BENCH_PREFILL_BATCH=0 skips them);
 *   LongMamba overhead at 16k: calibration of one 2k window (lm_calibrate),
 *             theta = exp(median log-decay) so that about half the channels
 *             (Mamba-2: heads) of every layer are global, default bucket
 *             thresholds; one-call prefill in LongMamba mode vs vanilla,
 *             medians of 5 interleaved runs;
 *   decode batch 1: the table's way: prefill of a 128-token prompt, greedy
 *             argmax of its logits on the host = new token 1, then 255
 *             lm_session_decode calls, each followed by the host argmax, =
 *             tokens 2..256 (as generate(max_new_tokens=256) does); tokens/s
 *             = 256 / wall time of all of it, prompt included; per step =
 *             median of the 255 (decode + argmax) times;
 *   decode batch 16: 16 sessions on one model, each prefilling its own
 *             128-token prompt, then 255 lm_session_decode_batch steps with
 *             the host argmax of every row; tokens/s = 16 * 256 / wall time,
 *             prompts included; per step = median batched step;
 *   16 sessions on 16 threads: the batch-1 protocol on 16 host threads at
 *             once (lm_session_decode each); tokens/s = 16 * 256 / (last end
 *             - first start); per step = median over all threads' steps.
 * A warm-up run of the protocol (8 new tokens) precedes each decode
 * measurement.  A shape whose model the backend does not support prints
 * n/a rows and the program goes on.  Exit status 1 if any row failed
 * otherwise.
 */
#include <longmamba.h>

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REF_MAGIC "LMRF"
/* lm_session_params.chunk_size 0 = "CPU 512, CUDA 16384" (longmamba.h) */
#define DEFAULT_CHUNK_CUDA 16384
#define DEFAULT_CHUNK_CPU 512
#define MAX_SESSIONS 64 /* host threads in the threaded decode */
#define MAX_BATCH 256   /* sessions in one batched step */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmpd(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    if (n == 0) return NAN;
    qsort(v, n, sizeof *v, cmpd);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Greedy pick: the first index of the largest logit.  Two passes (the
 * maximum over 8 independent lanes, which the compiler vectorises, then
 * the first index holding it): ~8x faster than the one-pass loop, whose
 * compare chain took 1.3 ms for 16 rows of 50,280 logits. */
static int32_t argmax(const float *x, int64_t n)
{
    float m[8];
    for (int k = 0; k < 8; k++) m[k] = -INFINITY;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) m[k] = x[i + k] > m[k] ? x[i + k] : m[k];
    float best = -INFINITY;
    for (int k = 0; k < 8; k++) best = m[k] > best ? m[k] : best;
    for (; i < n; i++) best = x[i] > best ? x[i] : best;
    for (int64_t j = 0; j < n; j++)
        if (x[j] == best) return (int32_t)j;
    return 0; /* all NaN or -inf */
}

/* Deterministic pseudo-random token ids in [0, vocab). */
static void fill_tokens(int32_t *t, int64_t n, int64_t vocab, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = (int32_t)((s >> 33) % (uint64_t)vocab);
    }
}

/* ---- rows ------------------------------------------------------------------ */

static FILE *g_rows;
static int g_failed;

/* value NAN = no number (the note says why). */
static void row(const char *shape, const char *key, const char *label, double value, const char *unit,
                const char *note)
{
    char shown[64] = "";
    if (!isnan(value)) snprintf(shown, sizeof shown, fabs(value) >= 1000 ? "%.0f %s" : "%.4g %s", value, unit);
    printf("ours %-12s %-44s %18s  %s\n", shape, label, shown, note ? note : "");
    if (g_rows) {
        char v[32] = "";
        if (!isnan(value)) snprintf(v, sizeof v, "%.6g", value);
        fprintf(g_rows, "ours\t%s\t%s\t%s\t%s\t%s\t%s\n", shape, key, label, v, unit, note ? note : "");
        fflush(g_rows);
    }
}

/* A row for a failed call: "n/a" for LM_ERR_UNSUPPORTED (the backend does
 * not run this yet), a failure otherwise. */
static void row_fail(const char *shape, const char *key, const char *label, const char *unit, lm_status st,
                     const char *msg)
{
    char note[512];
    if (st == LM_ERR_UNSUPPORTED) {
        snprintf(note, sizeof note, "n/a (unsupported: %.400s)", msg);
    } else {
        snprintf(note, sizeof note, "FAILED: %s: %.400s", lm_status_str(st), msg);
        g_failed = 1;
    }
    row(shape, key, label, NAN, unit, note);
}

static void len_name(char *buf, size_t cap, int64_t L)
{
    if (L % 1024 == 0) snprintf(buf, cap, "%lldk", (long long)(L / 1024));
    else snprintf(buf, cap, "%lld", (long long)L);
}

/* ---- prefill ---------------------------------------------------------------- */

typedef struct bench_ctx {
    const char *shape;
    lm_model *model;
    lm_model_info info;
    lm_backend backend;
    float *logits; /* vocab floats */
} bench_ctx;

static lm_status new_session(const bench_ctx *b, int64_t chunk, lm_session **s, char *err, size_t cap)
{
    lm_session_params p;
    lm_session_params_init(&p);
    p.chunk_size = chunk;
    return lm_session_create(b->model, &p, s, err, cap);
}

/* Median seconds of `reps` prefills of L tokens after one warm-up (session
 * reset between runs, not timed).  Returns < 0 on failure (message in err). */
static double time_prefill(const bench_ctx *b, lm_session *s, const int32_t *tok, int64_t L, int reps,
                           lm_status *st, char *err, size_t cap)
{
    double t[16];
    const size_t V = (size_t)b->info.vocab_size;
    for (int r = -1; r < reps; r++) {
        *st = lm_session_reset(s);
        if (*st == LM_OK) {
            const double t0 = now();
            *st = lm_session_prefill(s, tok, (size_t)L, 1, b->logits, V);
            if (r >= 0) t[r] = now() - t0;
        }
        if (*st != LM_OK) {
            snprintf(err, cap, "%s", lm_session_last_error(s));
            return -1;
        }
    }
    return median(t, (size_t)reps);
}

static void bench_prefill(const bench_ctx *b, const int32_t *tok, const int64_t *lengths, int n_len)
{
    const int64_t def = b->backend == LM_BACKEND_CPU ? DEFAULT_CHUNK_CPU : DEFAULT_CHUNK_CUDA;
    char err[512];
    for (int i = 0; i < n_len; i++) {
        const int64_t L = lengths[i];
        char ln[32], key[64], label[96], note[160];
        len_name(ln, sizeof ln, L);
        for (int variant = 0; variant < 2; variant++) {
            if (variant == 1 && L <= def) continue; /* same as the one-call row */
            if (variant == 0) {
                snprintf(key, sizeof key, "prefill_%s", ln);
                snprintf(label, sizeof label, "prefill %s, one call", ln);
            } else {
                snprintf(key, sizeof key, "prefill_%s_default", ln);
                snprintf(label, sizeof label, "prefill %s, session default chunks (%lld)", ln, (long long)def);
            }
            lm_session *s = NULL;
            lm_status st = new_session(b, variant == 0 ? L : 0, &s, err, sizeof err);
            double t = -1;
            if (st == LM_OK) t = time_prefill(b, s, tok, L, 3, &st, err, sizeof err);
            lm_session_free(s);
            if (t < 0) {
                row_fail(b->shape, key, label, "tok/s", st, err);
                continue;
            }
            snprintf(note, sizeof note, "%.2f ms, median of 3", t * 1e3);
            row(b->shape, key, label, (double)L / t, "tok/s", note);
        }
    }
}

/* ---- prefill of many prompts -------------------------------------------------- */

/* The prompt sets of the batched-prefill rows: equal lengths (as the issue
 * asks), and 8 lengths from 256 to 3840 tokens (16k in all), where a
 * padded batch computes 8 x 3840. */
typedef struct pb_case {
    const char *tag, *what;
    int n;
    int64_t len;        /* every prompt, or 0: */
    const int64_t *lens; /* [n] */
} pb_case;

static const int64_t pb_mixed[8] = {256, 768, 1280, 1792, 2304, 2816, 3328, 3840};
static const pb_case pb_cases[] = {
    {"8x2k", "8 x 2k", 8, 2048, NULL},
    {"64x512", "64 x 512", 64, 512, NULL},
    {"8xmixed", "8 x 256..3840 (16k)", 8, 0, pb_mixed},
};

/* n prompts: one lm_session_prefill_batch call, and lm_session_prefill on
 * each session in turn; tok/s = the prompts' tokens / wall time, logits of
 * each prompt's last token; median of 3 after a warm-up, the sessions
 * reset between runs (not timed).  Session i's chunk is its prompt
 * (no 16k-token scratch each), sessions[0]'s all the tokens: the batch
 * runs as one piece. */
static void bench_prefill_batch(const bench_ctx *b, const pb_case *c)
{
    const int64_t V = b->info.vocab_size;
    const int n = c->n;
    char key[2][64], label[2][128], note[256], err[512] = "";
    snprintf(key[0], sizeof key[0], "prefill_batch_%s", c->tag);
    snprintf(label[0], sizeof label[0], "prefill %s, batched", c->what);
    snprintf(key[1], sizeof key[1], "prefill_seq_%s", c->tag);
    snprintf(label[1], sizeof label[1], "prefill %s, one at a time", c->what);
    lm_session **ss = calloc((size_t)n, sizeof *ss);
    int32_t **tok = calloc((size_t)n, sizeof *tok);
    size_t *nt = calloc((size_t)n, sizeof *nt);
    float *lg = malloc(sizeof(float) * (size_t)n * (size_t)V);
    lm_status st = ss && tok && nt && lg ? LM_OK : LM_ERR_NO_MEMORY;
    int64_t total = 0;
    for (int i = 0; i < n && st == LM_OK; i++) {
        nt[i] = (size_t)(c->len ? c->len : c->lens[i]);
        total += (int64_t)nt[i];
        if (!(tok[i] = malloc(sizeof(int32_t) * nt[i]))) st = LM_ERR_NO_MEMORY;
        else fill_tokens(tok[i], (int64_t)nt[i], V, 2000u + (uint64_t)i);
    }
    for (int i = 0; i < n && st == LM_OK; i++)
        st = new_session(b, i == 0 ? total : (int64_t)nt[i], &ss[i], err, sizeof err);
    double t[2][3];
    for (int r = -1; r < 3 && st == LM_OK; r++) {
        for (int way = 0; way < 2 && st == LM_OK; way++) {
            for (int i = 0; i < n && st == LM_OK; i++) st = lm_session_reset(ss[i]);
            const double t0 = now();
            if (way == 0) {
                st = lm_session_prefill_batch(ss, (size_t)n, (const int32_t *const *)tok, nt, lg,
                                              (size_t)n * (size_t)V);
                if (st != LM_OK) snprintf(err, sizeof err, "%s", lm_session_last_error(ss[0]));
            } else {
                for (int i = 0; i < n && st == LM_OK; i++) {
                    st = lm_session_prefill(ss[i], tok[i], nt[i], 1, lg + (size_t)i * (size_t)V, (size_t)V);
                    if (st != LM_OK) snprintf(err, sizeof err, "session %d: %s", i, lm_session_last_error(ss[i]));
                }
            }
            if (r >= 0) t[way][r] = now() - t0;
        }
    }
    for (int i = 0; ss && i < n; i++) lm_session_free(ss[i]);
    if (st != LM_OK) {
        row_fail(b->shape, key[0], label[0], "tok/s", st, err);
        row_fail(b->shape, key[1], label[1], "tok/s", st, err);
    } else {
        const double tb = median(t[0], 3), ts = median(t[1], 3);
        snprintf(note, sizeof note, "%.2f ms, median of 3; %lld tokens; %.2fx one at a time", tb * 1e3,
                 (long long)total, ts / tb);
        row(b->shape, key[0], label[0], (double)total / tb, "tok/s", note);
        snprintf(note, sizeof note, "%.2f ms, median of 3; lm_session_prefill per session", ts * 1e3);
        row(b->shape, key[1], label[1], (double)total / ts, "tok/s", note);
    }
    for (int i = 0; tok && i < n; i++) free(tok[i]);
    free(ss);
    free(tok);
    free(nt);
    free(lg);
}

/* ---- LongMamba overhead ----------------------------------------------------- */

static void bench_longmamba(const bench_ctx *b, const int32_t *tok, int64_t L)
{
    char ln[32], key[64], label[96], note[256], err[512] = "";
    len_name(ln, sizeof ln, L);
    snprintf(key, sizeof key, "longmamba_%s", ln);
    snprintf(label, sizeof label, "LongMamba prefill overhead %s", ln);
    const int64_t nl = b->info.n_layer, nc = b->info.n_channels;
    const size_t calib_len = (size_t)(L / 4 < 2048 ? L / 4 : 2048);
    lm_calibration *cal = NULL;
    lm_session *sv = NULL, *sl = NULL;
    double *dec = malloc(sizeof(double) * (size_t)(nl * nc));
    uint8_t *mask = malloc((size_t)(nl * nc));
    lm_status st = LM_OK;

    const int32_t *win = tok; /* the calibration window: the prompt's first tokens */
    const double t0 = now();
    st = lm_calibrate(b->model, &win, &calib_len, 1, NULL, &cal, err, sizeof err);
    const double t_cal = now() - t0;
    for (int64_t l = 0; st == LM_OK && l < nl; l++)
        st = lm_calibration_get_log_decay(cal, l, dec + l * nc, (size_t)nc);
    if (st != LM_OK && !err[0]) snprintf(err, sizeof err, "reading the calibration's log-decay");
    double theta = 0;
    int64_t n_global = 0;
    if (st == LM_OK) {
        /* about half the channels global: theta at the median log-decay */
        double *sorted = malloc(sizeof(double) * (size_t)(nl * nc));
        memcpy(sorted, dec, sizeof(double) * (size_t)(nl * nc));
        theta = exp(median(sorted, (size_t)(nl * nc)));
        free(sorted);
        if (!(theta > 0) || !isfinite(theta)) theta = 1e-3;
        st = lm_classify_channels(cal, theta, mask, (size_t)(nl * nc), NULL, 0, err, sizeof err);
        for (int64_t i = 0; st == LM_OK && i < nl * nc; i++) n_global += mask[i];
    }
    if (st == LM_OK) st = new_session(b, L, &sv, err, sizeof err);
    if (st == LM_OK) st = new_session(b, L, &sl, err, sizeof err);
    if (st == LM_OK) {
        lm_longmamba_params lp;
        lm_longmamba_params_init(&lp);
        lp.theta = theta; /* trigger: default 1.5 x calibration length < L */
        st = lm_session_set_longmamba(sl, cal, &lp);
        if (st != LM_OK) snprintf(err, sizeof err, "%s", lm_session_last_error(sl));
    }
    double tv[5], tl[5];
    for (int r = 0; st == LM_OK && r < 5; r++) {
        /* interleaved; the first call of each also warms up */
        const double a = time_prefill(b, sv, tok, L, 1, &st, err, sizeof err);
        if (st != LM_OK) break;
        const double c = time_prefill(b, sl, tok, L, 1, &st, err, sizeof err);
        tv[r] = a;
        tl[r] = c;
    }
    if (st != LM_OK) {
        row_fail(b->shape, key, label, "%", st, err);
    } else {
        const double mv = median(tv, 5), ml = median(tl, 5);
        snprintf(note, sizeof note,
                 "%.2f ms vs %.2f ms vanilla; %lld of %lld channels global (theta %.3g), calibration %zu tokens "
                 "in %.2f s",
                 ml * 1e3, mv * 1e3, (long long)n_global, (long long)(nl * nc), theta, calib_len, t_cal);
        row(b->shape, key, label, 100.0 * (ml / mv - 1.0), "%", note);
    }
    lm_session_free(sv);
    lm_session_free(sl);
    lm_calibration_free(cal);
    free(dec);
    free(mask);
}

/* ---- decode ------------------------------------------------------------------ */

typedef struct dec_job {
    const bench_ctx *b;
    lm_session *s;
    int64_t prompt_len, n_new;
    uint64_t seed;
    pthread_barrier_t *barrier;
    double t_start, t_end;
    double *steps; /* n_new - 1 */
    lm_status st;
    char msg[512];
} dec_job;

/* The protocol: prefill prompt -> argmax = token 1; n_new - 1 decode steps. */
static lm_status run_protocol(dec_job *j, int64_t n_new, double *steps)
{
    const bench_ctx *b = j->b;
    const int64_t V = b->info.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)V);
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)j->prompt_len);
    if (!logits || !prompt) {
        free(logits);
        free(prompt);
        return LM_ERR_NO_MEMORY;
    }
    fill_tokens(prompt, j->prompt_len, V, j->seed);
    lm_status st = lm_session_prefill(j->s, prompt, (size_t)j->prompt_len, 1, logits, (size_t)V);
    int32_t t = argmax(logits, V);
    for (int64_t i = 1; st == LM_OK && i < n_new; i++) {
        const double ts = now();
        st = lm_session_decode(j->s, t, logits, (size_t)V);
        t = argmax(logits, V);
        if (steps) steps[i - 1] = now() - ts;
    }
    if (st != LM_OK) snprintf(j->msg, sizeof j->msg, "%s", lm_session_last_error(j->s));
    free(logits);
    free(prompt);
    return st;
}

static void *decode_thread(void *p)
{
    dec_job *j = p;
    /* warm-up (graph capture, buffers), then back to position 0 */
    j->st = run_protocol(j, 8, NULL);
    if (j->st == LM_OK) j->st = lm_session_reset(j->s);
    if (j->barrier) pthread_barrier_wait(j->barrier);
    if (j->st != LM_OK) return NULL;
    j->t_start = now();
    j->st = run_protocol(j, j->n_new, j->steps);
    j->t_end = now();
    return NULL;
}

static void bench_decode(const bench_ctx *b, int n_sess, int64_t prompt_len, int64_t n_new)
{
    char key[64], label[96], skey[64], slabel[96], note[256], err[512] = "";
    snprintf(key, sizeof key, n_sess == 1 ? "decode_b%d" : "decode_b%d_threads", n_sess);
    snprintf(skey, sizeof skey, n_sess == 1 ? "decode_b%d_step" : "decode_b%d_threads_step", n_sess);
    if (n_sess == 1) {
        snprintf(label, sizeof label, "decode batch 1, %lld+%lld, wall", (long long)prompt_len, (long long)n_new);
        snprintf(slabel, sizeof slabel, "decode batch 1, per step (median)");
    } else {
        snprintf(label, sizeof label, "%d sessions on %d threads, %lld+%lld, wall", n_sess, n_sess,
                 (long long)prompt_len, (long long)n_new);
        snprintf(slabel, sizeof slabel, "%d sessions on %d threads, per step (median)", n_sess, n_sess);
    }
    dec_job jobs[MAX_SESSIONS];
    pthread_t th[MAX_SESSIONS];
    double *steps = malloc(sizeof(double) * (size_t)n_sess * (size_t)(n_new - 1));
    memset(jobs, 0, sizeof jobs);
    lm_status st = LM_OK;
    for (int i = 0; i < n_sess && st == LM_OK; i++) {
        jobs[i].b = b;
        jobs[i].prompt_len = prompt_len;
        jobs[i].n_new = n_new;
        jobs[i].seed = 1000u + (uint64_t)i;
        jobs[i].steps = steps + (size_t)i * (size_t)(n_new - 1);
        st = new_session(b, 0, &jobs[i].s, err, sizeof err);
    }
    if (st == LM_OK && n_sess == 1) {
        decode_thread(&jobs[0]);
    } else if (st == LM_OK) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, (unsigned)n_sess);
        for (int i = 0; i < n_sess; i++) {
            jobs[i].barrier = &bar;
            pthread_create(&th[i], NULL, decode_thread, &jobs[i]);
        }
        for (int i = 0; i < n_sess; i++) pthread_join(th[i], NULL);
        pthread_barrier_destroy(&bar);
    }
    double t0 = INFINITY, t1 = 0;
    for (int i = 0; st == LM_OK && i < n_sess; i++) {
        if (jobs[i].st != LM_OK) {
            st = jobs[i].st;
            snprintf(err, sizeof err, "session %d: %s", i, jobs[i].msg);
            break;
        }
        if (jobs[i].t_start < t0) t0 = jobs[i].t_start;
        if (jobs[i].t_end > t1) t1 = jobs[i].t_end;
    }
    for (int i = 0; i < n_sess; i++) lm_session_free(jobs[i].s); /* NULL where never made */
    if (st != LM_OK) {
        row_fail(b->shape, key, label, "tok/s", st, err);
    } else {
        const double wall = t1 - t0;
        const double med = median(steps, (size_t)n_sess * (size_t)(n_new - 1));
        if (n_sess == 1)
            snprintf(note, sizeof note, "%.1f ms for prompt + %lld new tokens, host argmax", wall * 1e3,
                     (long long)n_new);
        else
            snprintf(note, sizeof note, "%.1f ms; %d sessions on %d host threads, lm_session_decode each",
                     wall * 1e3, n_sess, n_sess);
        row(b->shape, key, label, (double)n_sess * (double)n_new / wall, "tok/s", note);
        snprintf(note, sizeof note, "= %.0f tok/s; lm_session_decode + host argmax", (double)n_sess / med);
        row(b->shape, skey, slabel, med * 1e3, "ms", note);
    }
    free(steps);
}

/* Decode at batch n the table's way through lm_session_decode_batch: each
 * session prefills its own 128-token prompt (argmax = new token 1), then
 * n_new - 1 batched steps, each followed by the host argmax of every row;
 * tokens/s = n * n_new / wall time of all of it, prompts included. */
static lm_status batch_protocol(const bench_ctx *b, lm_session **ss, int n, int64_t prompt_len, int64_t n_new,
                                double *steps, double *calls, float *lg, int32_t *prompt, bool sample, char *err,
                                size_t cap)
{
    const int64_t V = b->info.vocab_size;
    int32_t tok[MAX_BATCH], next[MAX_BATCH];
    lm_status st = LM_OK;
    for (int i = 0; i < n && st == LM_OK; i++) {
        fill_tokens(prompt, prompt_len, V, 1000u + (uint64_t)i);
        st = lm_session_prefill(ss[i], prompt, (size_t)prompt_len, 1, lg, (size_t)V);
        tok[i] = argmax(lg, V);
        if (st != LM_OK) snprintf(err, cap, "prefill: %s", lm_session_last_error(ss[i]));
    }
    for (int64_t k = 1; st == LM_OK && k < n_new; k++) {
        const double ts = now();
        st = sample ? lm_session_decode_sample(ss, (size_t)n, tok, next, NULL, 0)
                    : lm_session_decode_batch(ss, (size_t)n, tok, lg, (size_t)n * (size_t)V);
        const double tc = now();
        for (int i = 0; st == LM_OK && i < n; i++) tok[i] = sample ? next[i] : argmax(lg + (size_t)i * (size_t)V, V);
        if (steps) steps[k - 1] = now() - ts;
        if (calls) calls[k - 1] = tc - ts;
        if (st != LM_OK)
            snprintf(err, cap, "%s: %s", sample ? "decode_sample" : "decode_batch", lm_session_last_error(ss[0]));
    }
    return st;
}

/* sample: lm_session_decode_sample (greedy on the device, ids back: keys
 * decode_b<n>_sampled); else lm_session_decode_batch + host argmax. */
static void bench_decode_batch(const bench_ctx *b, int n, int64_t prompt_len, int64_t n_new, bool sample)
{
    char key[64], label[96], skey[64], slabel[96], note[256], err[512] = "";
    const char *tag = sample ? "_sampled" : "";
    snprintf(key, sizeof key, "decode_b%d%s", n, tag);
    snprintf(skey, sizeof skey, "decode_b%d%s_step", n, tag);
    snprintf(label, sizeof label, "decode batch %d%s, %lld+%lld, wall", n, sample ? " sampled" : "",
             (long long)prompt_len, (long long)n_new);
    snprintf(slabel, sizeof slabel, "decode batch %d%s, per step (median)", n, sample ? " sampled" : "");
    const int64_t V = b->info.vocab_size;
    lm_session **ss = calloc((size_t)n, sizeof *ss);
    double *steps = malloc(sizeof(double) * (size_t)n_new), *calls = malloc(sizeof(double) * (size_t)n_new);
    float *lg = malloc(sizeof(float) * (size_t)n * (size_t)V);
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)prompt_len);
    lm_status st = ss && steps && calls && lg && prompt ? LM_OK : LM_ERR_NO_MEMORY;
    /* chunk = the prompt: many sessions need no 16k-token scratch each */
    for (int i = 0; i < n && st == LM_OK; i++) st = new_session(b, prompt_len, &ss[i], err, sizeof err);
    /* warm-up (graph capture, buffers), then every session back to 0 */
    if (st == LM_OK) st = batch_protocol(b, ss, n, prompt_len, 8, NULL, NULL, lg, prompt, sample, err, sizeof err);
    for (int i = 0; i < n && st == LM_OK; i++) st = lm_session_reset(ss[i]);
    double wall = 0.0;
    if (st == LM_OK) {
        const double t0 = now();
        st = batch_protocol(b, ss, n, prompt_len, n_new, steps, calls, lg, prompt, sample, err, sizeof err);
        wall = now() - t0;
    }
    for (int i = 0; ss && i < n; i++) lm_session_free(ss[i]);
    if (st != LM_OK) {
        row_fail(b->shape, key, label, "tok/s", st, err);
    } else {
        const double med = median(steps, (size_t)(n_new - 1));
        snprintf(note, sizeof note, "%.1f ms; %d prompts, then %s", wall * 1e3, n,
                 sample ? "lm_session_decode_sample (greedy on the device)" : "lm_session_decode_batch + host argmax");
        row(b->shape, key, label, (double)n * (double)n_new / wall, "tok/s", note);
        const double medc = median(calls, (size_t)(n_new - 1));
        snprintf(note, sizeof note, "= %.0f tok/s; the call alone: %.3f ms", (double)n / med, medc * 1e3);
        row(b->shape, skey, slabel, med * 1e3, "ms", note);
    }
    free(ss);
    free(steps);
    free(calls);
    free(lg);
    free(prompt);
}

/* ---- logits vs transformers --------------------------------------------------- */

static void bench_logits(const bench_ctx *b, const char *ref_path)
{
    const char *key = "logits", *label = "max |logit - transformers f32| (32 tok)";
    char err[512] = "", note[256];
    FILE *f = fopen(ref_path, "rb");
    char magic[4];
    int32_t hdr[2];
    if (!f || fread(magic, 1, 4, f) != 4 || memcmp(magic, REF_MAGIC, 4) || fread(hdr, 4, 2, f) != 2 ||
        hdr[0] < 1 || hdr[0] > 4096 || hdr[1] != b->info.vocab_size) {
        if (f) fclose(f);
        snprintf(note, sizeof note, "FAILED: cannot read %.200s (or its vocabulary differs)", ref_path);
        row(b->shape, key, label, NAN, "", note);
        g_failed = 1;
        return;
    }
    const size_t T = (size_t)hdr[0], V = (size_t)hdr[1];
    int32_t *tok = malloc(sizeof(int32_t) * T);
    float *r32 = malloc(sizeof(float) * T * V), *r16 = malloc(sizeof(float) * T * V);
    float *ours = malloc(sizeof(float) * T * V);
    const int ok = fread(tok, 4, T, f) == T && fread(r32, 4, T * V, f) == T * V && fread(r16, 4, T * V, f) == T * V;
    fclose(f);
    lm_session *s = NULL;
    lm_status st = ok ? new_session(b, 0, &s, err, sizeof err) : LM_ERR_FORMAT;
    if (!ok) snprintf(err, sizeof err, "%.200s is truncated", ref_path);
    if (st == LM_OK) {
        st = lm_session_prefill(s, tok, T, T, ours, T * V);
        if (st != LM_OK) snprintf(err, sizeof err, "%s", lm_session_last_error(s));
    }
    lm_session_free(s);
    if (st != LM_OK) {
        row_fail(b->shape, key, label, "", st, err);
    } else {
        double d_ours = 0, d_ours16 = 0, d_hf = 0, scale = 0;
        int finite = 1;
        for (size_t i = 0; i < T * V; i++) {
            if (!isfinite(ours[i])) finite = 0;
            d_ours = fmax(d_ours, fabs((double)ours[i] - r32[i]));
            d_hf = fmax(d_hf, fabs((double)r16[i] - r32[i]));
            d_ours16 = fmax(d_ours16, fabs((double)ours[i] - r16[i]));
            scale = fmax(scale, fabs((double)r32[i]));
        }
        snprintf(note, sizeof note,
                 "%sours vs transformers bf16: %.3g; transformers bf16 vs f32: %.3g; max |logit| %.3g; %zu positions",
                 finite ? "" : "NON-FINITE logits; ", d_ours16, d_hf, scale, T);
        if (!finite) g_failed = 1;
        row(b->shape, key, label, d_ours, "", note);
    }
    free(tok);
    free(r32);
    free(r16);
    free(ours);
}

/* ---- main ---------------------------------------------------------------------- */

/* The model could not be loaded: the rows it would have printed, as n/a. */
static void rows_na(const char *shape, const char *why, const int64_t *lengths, int n_len, int64_t def_chunk,
                    int n_sess, int64_t prompt_len, int64_t n_new)
{
    char ln[32], key[64], label[128];
    row(shape, "logits", "max |logit - transformers f32| (32 tok)", NAN, "", why);
    int64_t Llm = 0;
    for (int i = 0; i < n_len; i++) {
        len_name(ln, sizeof ln, lengths[i]);
        snprintf(key, sizeof key, "prefill_%s", ln);
        snprintf(label, sizeof label, "prefill %s, one call", ln);
        row(shape, key, label, NAN, "tok/s", why);
        if (lengths[i] > def_chunk) {
            snprintf(key, sizeof key, "prefill_%s_default", ln);
            snprintf(label, sizeof label, "prefill %s, session default chunks (%lld)", ln, (long long)def_chunk);
            row(shape, key, label, NAN, "tok/s", why);
        }
        if (lengths[i] <= 16384 && lengths[i] > Llm) Llm = lengths[i];
    }
    if (Llm > 0) {
        len_name(ln, sizeof ln, Llm);
        snprintf(key, sizeof key, "longmamba_%s", ln);
        snprintf(label, sizeof label, "LongMamba prefill overhead %s", ln);
        row(shape, key, label, NAN, "%", why);
    }
    for (size_t k = 0; k < sizeof pb_cases / sizeof pb_cases[0]; k++) {
        snprintf(key, sizeof key, "prefill_batch_%s", pb_cases[k].tag);
        snprintf(label, sizeof label, "prefill %s, batched", pb_cases[k].what);
        row(shape, key, label, NAN, "tok/s", why);
        snprintf(key, sizeof key, "prefill_seq_%s", pb_cases[k].tag);
        snprintf(label, sizeof label, "prefill %s, one at a time", pb_cases[k].what);
        row(shape, key, label, NAN, "tok/s", why);
    }
    for (int k = 0; k < 2; k++) {
        const int n = k == 0 ? 1 : n_sess;
        if (k == 1 && n_sess < 2) break;
        snprintf(key, sizeof key, "decode_b%d", n);
        snprintf(label, sizeof label, "decode batch %d, %lld+%lld, wall", n, (long long)prompt_len, (long long)n_new);
        row(shape, key, label, NAN, "tok/s", why);
        snprintf(key, sizeof key, "decode_b%d_step", n);
        snprintf(label, sizeof label, "decode batch %d, per step (median)", n);
        row(shape, key, label, NAN, "ms", why);
    }
}

static int parse_list(const char *s, int64_t *out, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        char *end;
        const long long v = strtoll(s, &end, 10);
        if (end == s || v < 1) return -1;
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_e2e --dir DIR [--shapes a,b] [--quick] [--rows FILE] [--backend cuda|cpu]\n"
            "                 [--lengths 2048,16384,65536] [--prompt 128] [--new 256] [--sessions 16]\n"
            "       bench_e2e --decode-only --dir DIR --shapes mamba-130m\n"
            "       bench_e2e --prefill-batch-only --dir DIR [--shapes a,b] [--rows FILE]\n");
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *shapes = "mamba-130m,mamba-1.4b,mamba2-130m,mamba2-1.3b", *rows_path = NULL;
    int quick = 0, decode_only = 0, n_sess = 16, lengths_given = 0, pb_only = 0;
    int64_t lengths[8] = {2048, 16384, 65536};
    int n_len = 3;
    int64_t prompt_len = 128, n_new = 256;
    lm_backend backend = LM_BACKEND_CUDA;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quick")) quick = 1;
        else if (!strcmp(a, "--decode-only")) decode_only = 1;
        else if (!strcmp(a, "--prefill-batch-only")) pb_only = 1;
        else if (!strcmp(a, "--dir") && v) dir = argv[++i];
        else if (!strcmp(a, "--shapes") && v) shapes = argv[++i];
        else if (!strcmp(a, "--only") && v) shapes = argv[++i];
        else if (!strcmp(a, "--rows") && v) rows_path = argv[++i];
        else if (!strcmp(a, "--backend") && v) {
            i++;
            if (!strcmp(v, "cpu")) backend = LM_BACKEND_CPU;
            else if (!strcmp(v, "cuda")) backend = LM_BACKEND_CUDA;
            else {
                usage();
                return 2;
            }
        } else if (!strcmp(a, "--lengths") && v) {
            n_len = parse_list(argv[++i], lengths, 8);
            lengths_given = 1;
            if (n_len < 1) {
                usage();
                return 2;
            }
        } else if (!strcmp(a, "--prompt") && v) prompt_len = atoll(argv[++i]);
        else if (!strcmp(a, "--new") && v) n_new = atoll(argv[++i]);
        else if (!strcmp(a, "--sessions") && v) n_sess = atoi(argv[++i]);
        else {
            usage();
            return 2;
        }
    }
    if (!dir || prompt_len < 1 || n_new < 2 || n_sess < 1 || n_sess > MAX_SESSIONS) {
        usage();
        return 2;
    }
    if (quick && !lengths_given) n_len = 2; /* 2k and 16k */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!lm_backend_available(backend)) {
        printf("backend %s not available (no device?)\n", lm_backend_name(backend));
        return 77;
    }
    if (rows_path && !(g_rows = fopen(rows_path, "a"))) {
        fprintf(stderr, "cannot open %s\n", rows_path);
        return 2;
    }
    printf("libongmamba %s, backend %s; prompt %lld + %lld new tokens; %d sessions\n", lm_version_string(),
           lm_backend_name(backend), (long long)prompt_len, (long long)n_new, n_sess);

    char list[512];
    snprintf(list, sizeof list, "%s", shapes);
    for (char *save = NULL, *shape = strtok_r(list, ",", &save); shape; shape = strtok_r(NULL, ",", &save)) {
        char path[4096], err[512] = "";
        snprintf(path, sizeof path, "%s/%s", dir, shape);
        lm_model_params mp;
        lm_model_params_init(&mp);
        mp.backend = backend;
        bench_ctx b;
        memset(&b, 0, sizeof b);
        b.shape = shape;
        b.backend = backend;
        const double t0 = now();
        lm_status st = lm_model_load(path, &mp, &b.model, err, sizeof err);
        if (st != LM_OK) {
            char why[700];
            if (st == LM_ERR_UNSUPPORTED)
                snprintf(why, sizeof why, "n/a (unsupported: %s)", err);
            else {
                snprintf(why, sizeof why, "FAILED to load %.200s: %s: %.300s", path, lm_status_str(st), err);
                g_failed = 1;
            }
            printf("ours %-12s %s\n", shape, why);
            if (!decode_only && !pb_only)
                rows_na(shape, why, lengths, n_len,
                        backend == LM_BACKEND_CPU ? DEFAULT_CHUNK_CPU : DEFAULT_CHUNK_CUDA, n_sess, prompt_len,
                        n_new);
            continue;
        }
        const double t_load = now() - t0;
        b.info.struct_size = sizeof b.info;
        lm_model_get_info(b.model, &b.info);
        printf("ours %-12s Mamba-%d, %lld parameters, d %lld, E %lld, N %lld, %lld layers, vocab %lld; "
               "loaded in %.2f s\n",
               shape, (int)b.info.arch, (long long)b.info.n_params, (long long)b.info.d_model,
               (long long)b.info.d_inner, (long long)b.info.d_state, (long long)b.info.n_layer,
               (long long)b.info.vocab_size, t_load);
        const int64_t V = b.info.vocab_size;
        b.logits = malloc(sizeof(float) * (size_t)V);
        int64_t max_len = prompt_len;
        for (int i = 0; i < n_len; i++)
            if (lengths[i] > max_len) max_len = lengths[i];
        int32_t *tok = malloc(sizeof(int32_t) * (size_t)max_len);
        fill_tokens(tok, max_len, V, 7);

        if (pb_only) {
            for (size_t k = 0; k < sizeof pb_cases / sizeof pb_cases[0]; k++) bench_prefill_batch(&b, &pb_cases[k]);
        } else if (decode_only) {
            lm_session *s = NULL;
            int32_t t = 3;
            st = new_session(&b, 0, &s, err, sizeof err);
            if (st == LM_OK) st = lm_session_prefill(s, tok, (size_t)prompt_len, 1, b.logits, (size_t)V);
            for (int i = 0; st == LM_OK && i < 20; i++) st = lm_session_decode(s, t, b.logits, (size_t)V);
            if (st != LM_OK) {
                fprintf(stderr, "decode-only: %s %s\n", lm_status_str(st), s ? lm_session_last_error(s) : err);
                g_failed = 1;
            }
            lm_session_free(s);
        } else {
            char ref[4200];
            snprintf(ref, sizeof ref, "%s.ref", path);
            bench_logits(&b, ref);
            bench_prefill(&b, tok, lengths, n_len);
            const char *pbe = getenv("LM_BENCH_PREFILL_BATCH"); /* "0": skip */
            for (size_t k = 0; !(pbe && !strcmp(pbe, "0")) && k < sizeof pb_cases / sizeof pb_cases[0]; k++)
                if (!quick || k != 2) bench_prefill_batch(&b, &pb_cases[k]);
            /* LongMamba at 16k, or at the longest length up to 16k */
            int64_t Llm = 0;
            for (int i = 0; i < n_len; i++)
                if (lengths[i] <= 16384 && lengths[i] > Llm) Llm = lengths[i];
            if (Llm > 0) bench_longmamba(&b, tok, Llm);
            bench_decode(&b, 1, prompt_len, n_new);
            if (n_sess > 1) {
                bench_decode_batch(&b, n_sess, prompt_len, n_new, false);
                bench_decode(&b, n_sess, prompt_len, n_new);
            }
            /* sampled on the device: batch 1, the session count, and the
             * larger batches of the decode-speed table */
            const int sampled[] = {1, n_sess, 64, 256};
            const char *ev = getenv("LM_BENCH_SAMPLED"); /* "0": skip (gpu_compare.sh) */
            for (size_t k = 0; !(ev && !strcmp(ev, "0")) && k < sizeof sampled / sizeof sampled[0]; k++)
                if (sampled[k] >= 1 && sampled[k] <= MAX_BATCH && (k < 2 || sampled[k] > n_sess) &&
                    (k != 1 || n_sess > 1))
                    bench_decode_batch(&b, sampled[k], prompt_len, n_new, true);
        }
        free(tok);
        free(b.logits);
        lm_model_free(b.model);
    }
    if (g_rows) fclose(g_rows);
    return g_failed ? 1 : 0;
}
