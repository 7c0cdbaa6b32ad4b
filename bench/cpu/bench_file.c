/*
 * bench_file.c - CPU throughput of a model file (GGUF or safetensors
 * directory) through the public API, with llama-bench's protocol, for the
 * side-by-side run of bench/cpu/llama_side_by_side.sh.  Not a test.
 *
 *   bench_file MODEL [-t THREADS] [-p N[,N...]] [-n N] [-r REPS]
 *                    [--weights stored|q8_0] [--logits TOKENS_FILE OUT_FILE]
 *
 * -p N: prefill of N pseudo-random tokens (fixed seed, as llama-bench
 *   draws random tokens) from a fresh session, one lm_session_prefill
 *   call, logits of the last position only (llama-bench's ppN).
 * -n N: N single-token lm_session_decode steps from a fresh session, each
 *   with logits (llama-bench's tgN starts from an empty context too).
 * Each test runs once untimed (llama-bench's warm-up) and then -r times
 * (default 1); prints one CSV line per test: test,threads,seconds,tokens_per_s
 * with the mean over the -r runs.
 * -t sets lm_model_params.n_threads only; OpenBLAS's pool is set by
 * OPENBLAS_NUM_THREADS in the environment (the script sets it).
 * --logits TOKENS OUT: prefill the whitespace-separated token ids of TOKENS
 *   and write the logits of every position as text (one row per line)
 *   to OUT; no timing.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "longmamba.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, lm_status st, const char *msg)
{
    fprintf(stderr, "bench_file: %s: %s (%s)\n", what, lm_status_str(st), msg ? msg : "");
    exit(1);
}

static lm_session *fresh(const lm_model *m)
{
    lm_session *s = NULL;
    char err[512] = "";
    lm_status st = lm_session_create(m, NULL, &s, err, sizeof err);
    if (st != LM_OK) die("session_create", st, err);
    return s;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static int32_t rand_tok(int32_t vocab)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (int32_t)(rng % (uint64_t)vocab);
}

static double run_prefill(const lm_model *m, int32_t vocab, long n, float *logits)
{
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n);
    for (long i = 0; i < n; i++) tok[i] = rand_tok(vocab);
    lm_session *s = fresh(m);
    double t0 = now();
    lm_status st = lm_session_prefill(s, tok, (size_t)n, 1, logits, (size_t)vocab);
    double t = now() - t0;
    if (st != LM_OK) die("prefill", st, lm_session_last_error(s));
    lm_session_free(s);
    free(tok);
    return t;
}

static double run_decode(const lm_model *m, int32_t vocab, long n, float *logits)
{
    lm_session *s = fresh(m);
    int32_t tok = rand_tok(vocab);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        lm_status st = lm_session_decode(s, tok, logits, (size_t)vocab);
        if (st != LM_OK) die("decode", st, lm_session_last_error(s));
        tok = rand_tok(vocab);
    }
    double t = now() - t0;
    lm_session_free(s);
    return t;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_file MODEL [-t T] [-p N[,N..]] [-n N] [-r R] "
                        "[--weights stored|q8_0] [--logits TOKENS OUT]\n");
        return 2;
    }
    const char *path = argv[1];
    int threads = 1, reps = 1;
    long n_gen = 0;
    const char *plist = NULL, *tok_file = NULL, *out_file = NULL;
    lm_weight_format wf = LM_WEIGHTS_AS_STORED;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) plist = argv[++i];
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) n_gen = atol(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--weights") && i + 1 < argc) {
            i++;
            if (!strcmp(argv[i], "q8_0")) wf = LM_WEIGHTS_Q8_0;
            else if (strcmp(argv[i], "stored")) { fprintf(stderr, "bad --weights\n"); return 2; }
        } else if (!strcmp(argv[i], "--logits") && i + 2 < argc) {
            tok_file = argv[++i];
            out_file = argv[++i];
        } else {
            fprintf(stderr, "bench_file: bad argument %s\n", argv[i]);
            return 2;
        }
    }

    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CPU;
    mp.n_threads = threads;
    mp.weights = wf;
    lm_model *m = NULL;
    char err[512] = "";
    double tl = now();
    lm_status st = lm_model_load(path, &mp, &m, err, sizeof err);
    if (st != LM_OK) die("load", st, err);
    tl = now() - tl;
    lm_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    st = lm_model_get_info(m, &info);
    if (st != LM_OK) die("get_info", st, "");
    const int32_t vocab = (int32_t)info.vocab_size;
    fprintf(stderr, "bench_file: %s loaded in %.3f s, vocab %d, threads %d, weights %s\n", path, tl,
            vocab, threads, wf == LM_WEIGHTS_Q8_0 ? "q8_0" : "stored");

    if (tok_file) {
        FILE *f = fopen(tok_file, "r");
        if (!f) { perror(tok_file); return 1; }
        int32_t tok[4096];
        size_t n = 0;
        while (n < 4096 && fscanf(f, "%d", &tok[n]) == 1) n++;
        fclose(f);
        float *lg = malloc(sizeof(float) * (size_t)vocab * n);
        lm_session *s = fresh(m);
        st = lm_session_prefill(s, tok, n, n, lg, (size_t)vocab * n);
        if (st != LM_OK) die("prefill", st, lm_session_last_error(s));
        FILE *o = fopen(out_file, "w");
        if (!o) { perror(out_file); return 1; }
        for (size_t i = 0; i < n; i++) {
            for (int32_t v = 0; v < vocab; v++) fprintf(o, v ? " %.6g" : "%.6g", lg[i * (size_t)vocab + v]);
            fputc('\n', o);
        }
        fclose(o);
        lm_session_free(s);
        free(lg);
        lm_model_free(m);
        return 0;
    }

    float *logits = malloc(sizeof(float) * (size_t)vocab);
    printf("test,threads,seconds,tokens_per_s\n");
    if (plist) {
        char *copy = strdup(plist), *save = NULL;
        for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
            long n = atol(p);
            if (n <= 0) continue;
            run_prefill(m, vocab, n, logits); /* warm-up */
            double tsum = 0;
            for (int r = 0; r < reps; r++) tsum += run_prefill(m, vocab, n, logits);
            double t = tsum / reps;
            printf("pp%ld,%d,%.6f,%.3f\n", n, threads, t, (double)n / t);
            fflush(stdout);
        }
        free(copy);
    }
    if (n_gen > 0) {
        run_decode(m, vocab, n_gen < 16 ? n_gen : 16, logits); /* warm-up */
        double tsum = 0;
        for (int r = 0; r < reps; r++) tsum += run_decode(m, vocab, n_gen, logits);
        double t = tsum / reps;
        printf("tg%ld,%d,%.6f,%.3f\n", n_gen, threads, t, (double)n_gen / t);
        fflush(stdout);
    }
    free(logits);
    lm_model_free(m);
    return 0;
}
