/*
 * bench_prefill_batch.c - the CPU backend's batched prefill
 * (lm_session_prefill_batch) against lm_session_prefill on each session in
 * turn, on a random model of the mamba-130m shape (d 768, E 1536, N 16,
 * R 48, K 4, V 50280, tied; fp32, built in memory; n_layer 24 unless given).
 * Prints a table; not a test.
 *
 *   bench_prefill_batch [n_threads] [n_layer]
 *
 * Per row: n prompts of L tokens, logits of each prompt's last token, the
 * sessions at the default chunk (512); tok/s = n L / wall time, best of 3
 * after a warm-up (the best run is the one least disturbed by other work
 * on the machine).  The batch packs the prompts into GEMMs of up to 512
 * rows; one at a time, each prompt's products have L rows (a GEMV for
 * L = 1), and the head runs once per prompt instead of once per batch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "testmodel.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, const lm_session *s)
{
    fprintf(stderr, "bench_prefill_batch: %s: %s\n", what, s ? lm_session_last_error(s) : "");
    exit(1);
}

int main(int argc, char **argv)
{
    const int nt = argc > 1 ? atoi(argv[1]) : 2;
    const int nl = argc > 2 ? atoi(argv[2]) : 24;
    tm_config c = {
        .d_model = 768, .d_inner = 1536, .d_state = 16, .dt_rank = 48, .d_conv = 4,
        .n_layer = nl > 0 ? nl : 24, .vocab = 50280, .bias = false, .conv_bias = true, .tied = true,
        .seed = 1, .n_threads = nt > 0 ? nt : 2,
    };
    char err[256];
    lm_model *m = tm_model_build(&c, err, sizeof err);
    if (!m) {
        fprintf(stderr, "bench_prefill_batch: %s\n", err);
        return 1;
    }
    const int64_t V = c.vocab;
    printf("libongmamba CPU backend, batched prefill; mamba-130m shape with %lld layers, fp32 random "
           "weights; %d threads (and the BLAS's own pool)\n\n",
           (long long)c.n_layer, (int)c.n_threads);
    printf("%-14s %14s %16s %8s\n", "prompts", "batched tok/s", "one-by-one tok/s", "speedup");
    const struct {
        int n;
        int64_t L;
    } rows[] = {{64, 1}, {64, 8}, {32, 32}, {16, 128}, {8, 512}};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        const int n = rows[r].n;
        const int64_t L = rows[r].L;
        lm_session **ss = calloc((size_t)n, sizeof *ss);
        int32_t **tok = calloc((size_t)n, sizeof *tok);
        size_t *nts = calloc((size_t)n, sizeof *nts);
        float *lg = malloc(sizeof(float) * (size_t)n * (size_t)V);
        for (int i = 0; i < n; i++) {
            if (lm_session_create(m, NULL, &ss[i], err, sizeof err) != LM_OK) die(err, NULL);
            tok[i] = tu_tokens(100 + (uint64_t)i, (size_t)L, V);
            nts[i] = (size_t)L;
        }
        double best[2] = {1e30, 1e30};
        for (int rep = -1; rep < 3; rep++)
            for (int way = 0; way < 2; way++) {
                for (int i = 0; i < n; i++) lm_session_reset(ss[i]);
                const double t0 = now();
                if (way == 0) {
                    if (lm_session_prefill_batch(ss, (size_t)n, (const int32_t *const *)tok, nts, lg,
                                                 (size_t)n * (size_t)V) != LM_OK)
                        die("prefill_batch", ss[0]);
                } else {
                    for (int i = 0; i < n; i++)
                        if (lm_session_prefill(ss[i], tok[i], nts[i], 1, lg + (size_t)i * (size_t)V,
                                               (size_t)V) != LM_OK)
                            die("prefill", ss[i]);
                }
                const double t = now() - t0;
                if (rep >= 0 && t < best[way]) best[way] = t;
            }
        char name[32];
        snprintf(name, sizeof name, "%d x %lld", n, (long long)L);
        const double tokens = (double)n * (double)L;
        printf("%-14s %14.0f %16.0f %7.2fx\n", name, tokens / best[0], tokens / best[1], best[1] / best[0]);
        fflush(stdout);
        for (int i = 0; i < n; i++) {
            lm_session_free(ss[i]);
            free(tok[i]);
        }
        free(ss);
        free(tok);
        free(nts);
        free(lg);
    }
    tm_model_free(m);
    return 0;
}
