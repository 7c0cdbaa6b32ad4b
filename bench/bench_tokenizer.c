/* bench_tokenizer.c - tokenizer throughput, one thread.
 *
 *   bench_tokenizer TOKENIZER.json TEXT [REPS]
 *
 * Loads the tokenizer (timed), then encodes the whole TEXT file REPS times
 * (default 5) and decodes the ids as often; prints the best time of each
 * as MB/s of text.  Times are CPU time of the thread (the calls run on one
 * thread), so other load on the machine does not distort them.  bench/bench_tokenizer_hf.py runs it beside Hugging
 * Face `tokenizers` on the same file. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "longmamba.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len == cap) buf = realloc(buf, cap *= 2);
        size_t got = fread(buf + len, 1, cap - len, f);
        if (got == 0) break;
        len += got;
    }
    fclose(f);
    *n = len;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s TOKENIZER.json TEXT [REPS]\n", argv[0]);
        return 2;
    }
    int reps = argc == 4 ? atoi(argv[3]) : 5;
    if (reps < 1) reps = 1;
    size_t n;
    char *text = read_all(argv[2], &n);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 1;
    }
    char err[512];
    lm_tokenizer *t;
    double t0 = now_s();
    lm_status st = lm_tokenizer_load(argv[1], &t, err, sizeof err);
    double load_s = now_s() - t0;
    if (st != LM_OK) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    size_t n_ids = 0;
    lm_tokenizer_encode(t, text, n, NULL, 0, &n_ids, NULL, 0);
    int32_t *ids = malloc((n_ids ? n_ids : 1) * sizeof *ids);
    char *back = malloc(n + 1);
    double best_enc = 1e30, best_dec = 1e30;
    size_t n_back = 0;
    for (int r = 0; r < reps; r++) {
        size_t got;
        t0 = now_s();
        st = lm_tokenizer_encode(t, text, n, ids, n_ids, &got, err, sizeof err);
        double dt = now_s() - t0;
        if (st != LM_OK) {
            fprintf(stderr, "encode: %s\n", err);
            return 1;
        }
        if (dt < best_enc) best_enc = dt;
        t0 = now_s();
        st = lm_tokenizer_decode(t, ids, n_ids, back, n, &n_back, err, sizeof err);
        dt = now_s() - t0;
        if (st != LM_OK && st != LM_ERR_BUFFER_TOO_SMALL) {
            fprintf(stderr, "decode: %s\n", err);
            return 1;
        }
        if (dt < best_dec) best_dec = dt;
    }
    double mb = (double)n / 1e6;
    printf("libongmamba  load %.3f s  text %.2f MB  %zu tokens (%.2f bytes/token)\n", load_s, mb, n_ids,
           (double)n / (double)(n_ids ? n_ids : 1));
    printf("libongmamba  encode %.3f s = %.2f MB/s = %.2f Mtok/s   decode %.4f s = %.1f MB/s%s\n",
           best_enc, mb / best_enc, (double)n_ids / 1e6 / best_enc, best_dec, mb / best_dec,
           n_back == n && memcmp(back, text, n) == 0 ? "  (round trip exact)" : "  (round trip differs)");
    free(back);
    free(ids);
    free(text);
    lm_tokenizer_free(t);
    return 0;
}
