/*
 * bench_cpu.c - CPU backend throughput on a random model of the mamba-130m
 * shape (d 768, 24 layers, E 1536, N 16, R 48, K 4, V 50280), fp32,
 * built in memory.  Prints a table; not a test.
 *
 *   bench_cpu [n_threads] [decode_steps]
 *
 * Prefill: one lm_session_prefill call per prompt length, last logits
 * only, from zero state; best of 5 after a warm-up (the best run is the
 * one least disturbed by other work on the machine).  Decode: 128-token
 * prompt, then decode_steps (default 64) single-token steps with logits,
 * timed together (prompt excluded).
 *
 *   bench_cpu [n_threads] [decode_steps] formats
 *
 * only the decode table by weight format: the same random model as F32,
 * as F16 (every matrix and the embedding rounded to binary16, as a stored
 * F16 checkpoint) and as Q8_0 quantised from that F16 (lm_model_params
 * weights = LM_WEIGHTS_Q8_0: in_proj, x_proj, out_proj; the tied
 * embedding/head and dt_proj stay F16), at 1 and 2 threads (our threads
 * and OpenBLAS's); best of 3 runs of decode_steps steps.  It also runs
 * after the main table when no third argument is given.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "testmodel.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, lm_status st, const lm_session *s)
{
    fprintf(stderr, "bench_cpu: %s: %s (%s)\n", what, lm_status_str(st),
            s ? lm_session_last_error(s) : "");
    exit(1);
}

/* Bytes of host weights one decode step reads (matrices and head; the
 * embedding row and the vectors are noise). */
static double step_bytes(const lm_model *m)
{
    double b = (double)m->lm_head.rows * (double)lmi_weight_row_bytes(&m->lm_head);
    for (int64_t l = 0; l < m->dims.n_layer; l++) {
        const lmi_mamba_weights *w = &m->layers[l].mamba;
        const lmi_weight *mats[4] = {&w->in_w, &w->x_w, &w->dt_w, &w->out_w};
        for (int k = 0; k < 4; k++) b += (double)mats[k]->rows * (double)lmi_weight_row_bytes(mats[k]);
    }
    return b;
}

static void set_threads(lm_model *m, int t)
{
    m->n_threads = t;
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(t);
#endif
}

/* Decode tokens/s of the mamba-130m shape by weight format, 1 and 2 threads. */
static void decode_by_format(tm_config c, long steps, const int32_t *tok)
{
    static const struct {
        const char *name;
        lmi_wtype wtype;
        lm_weight_format weights;
    } fmts[3] = {{"F32", LMI_W_F32, LM_WEIGHTS_AS_STORED},
                 {"F16", LMI_W_F16, LM_WEIGHTS_AS_STORED},
                 {"Q8_0 (from F16)", LMI_W_F16, LM_WEIGHTS_Q8_0}};
    const int64_t V = c.vocab;
    float *logits = malloc(sizeof(float) * (size_t)V);
    printf("\ndecode by weight format (128-token prompt, then %ld steps with logits; best of 3)\n\n",
           steps);
    printf("| %-16s | threads | MB read / token | ms / token | tokens/s |\n", "weights");
    printf("|------------------|--------:|----------------:|-----------:|---------:|\n");
    for (int f = 0; f < 3; f++) {
        char err[256];
        c.wtype = fmts[f].wtype;
        c.weights = fmts[f].weights;
        lm_model *m = tm_model_build(&c, err, sizeof err);
        if (!m) {
            fprintf(stderr, "bench_cpu: %s\n", err);
            exit(1);
        }
        for (int t = 1; t <= 2; t++) {
            set_threads(m, t);
            lm_session *s = NULL;
            lm_status st = lm_session_create(m, NULL, &s, err, sizeof err);
            if (st != LM_OK) die(err, st, NULL);
            double best = 1e30;
            for (int rep = 0; rep < 3; rep++) {
                lm_session_reset(s);
                st = lm_session_prefill(s, tok, 128, 1, logits, (size_t)V);
                if (st != LM_OK) die("prefill", st, s);
                const double a = now();
                for (long i = 0; i < steps; i++) {
                    st = lm_session_decode(s, tok[128 + i % 1024], logits, (size_t)V);
                    if (st != LM_OK) die("decode", st, s);
                }
                const double b = now();
                if (b - a < best) best = b - a;
            }
            printf("| %-16s | %7d | %15.1f | %10.2f | %8.1f |\n", fmts[f].name, t,
                   step_bytes(m) / 1e6, 1e3 * best / (double)steps, (double)steps / best);
            fflush(stdout);
            lm_session_free(s);
        }
        tm_model_free(m);
    }
    free(logits);
}

int main(int argc, char **argv)
{
    long nt = argc > 1 ? atol(argv[1]) : sysconf(_SC_NPROCESSORS_ONLN);
    long steps = argc > 2 ? atol(argv[2]) : 64;
    const bool formats_only = argc > 3 && strcmp(argv[3], "formats") == 0;
    if (nt < 1) nt = 1;
    if (steps < 1) steps = 64;
    tm_config c = {
        .d_model = 768, .d_inner = 1536, .d_state = 16, .dt_rank = 48, .d_conv = 4,
        .n_layer = 24, .vocab = 50280, .bias = false, .conv_bias = true, .tied = true,
        .seed = 1, .n_threads = (int32_t)nt,
    };
    char err[256];
    if (formats_only) {
        int32_t *ft = malloc(sizeof(int32_t) * 2048);
        tu_rng fr = {99};
        for (int i = 0; i < 2048; i++) ft[i] = (int32_t)(((tu_rng_sym(&fr) + 1.0) * 0.5) * 50277.0);
        decode_by_format(c, steps, ft);
        free(ft);
        return 0;
    }
    double t0 = now();
    lm_model *m = tm_model_build(&c, err, sizeof err);
    if (!m) {
        fprintf(stderr, "bench_cpu: %s\n", err);
        return 1;
    }
    const int64_t V = c.vocab;
    printf("libongmamba CPU backend, mamba-130m shape (d 768, 24 layers, E 1536, N 16, R 48, K 4, "
           "V 50280), fp32 random weights, tied head (built in %.1f s)\n", now() - t0);
#ifdef OPENBLAS_VERSION
    printf("threads: %ld OpenMP (model n_threads), OpenBLAS %d (its own pool);%s\n", nt,
           openblas_get_num_threads(), OPENBLAS_VERSION);
#else
    printf("threads: %ld OpenMP (model n_threads), BLAS threads its own\n", nt);
#endif
    const char *wp = getenv("OMP_WAIT_POLICY"), *ob = getenv("OPENBLAS_NUM_THREADS");
    printf("online cores: %ld, OMP_WAIT_POLICY=%s, OPENBLAS_NUM_THREADS=%s\n\n",
           sysconf(_SC_NPROCESSORS_ONLN), wp ? wp : "(unset)", ob ? ob : "(unset)");

    const int64_t lens[] = {128, 512, 2048};
    int32_t *tok = malloc(sizeof(int32_t) * 2048);
    float *logits = malloc(sizeof(float) * (size_t)V);
    tu_rng rng = {99};
    for (int i = 0; i < 2048; i++) tok[i] = (int32_t)(((tu_rng_sym(&rng) + 1.0) * 0.5) * 50277.0);
    lm_session *s = NULL;
    lm_status st = lm_session_create(m, NULL, &s, err, sizeof err);
    if (st != LM_OK) die(err, st, NULL);

    printf("| %-34s | tokens | time (ms) | tokens/s |\n", "work");
    printf("|------------------------------------|-------:|----------:|---------:|\n");
    st = lm_session_prefill(s, tok, 128, 1, logits, (size_t)V); /* warm-up */
    if (st != LM_OK) die("prefill", st, s);
    for (int i = 0; i < 3; i++) {
        double best = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            lm_session_reset(s);
            double a = now();
            st = lm_session_prefill(s, tok, (size_t)lens[i], 1, logits, (size_t)V);
            double b = now();
            if (st != LM_OK) die("prefill", st, s);
            if (b - a < best) best = b - a;
        }
        printf("| %-34s | %6lld | %9.1f | %8.1f |\n", "prefill (chunk 512, last logits)", (long long)lens[i],
               1e3 * best, (double)lens[i] / best);
    }
    lm_session_reset(s);
    st = lm_session_prefill(s, tok, 128, 1, logits, (size_t)V);
    if (st != LM_OK) die("prefill", st, s);
    double a = now();
    for (long i = 0; i < steps; i++) {
        st = lm_session_decode(s, tok[128 + i % 1024], logits, (size_t)V);
        if (st != LM_OK) die("decode", st, s);
    }
    double b = now();
    printf("| %-34s | %6ld | %9.1f | %8.1f |\n", "decode (after 128-token prompt)", steps, 1e3 * (b - a),
           (double)steps / (b - a));

    /* Batched decode: 16 sessions stepped together (lm_session_decode_batch),
     * each after its own 128-token prompt; tokens/s counts all sessions. */
    {
        enum { NB = 16 };
        lm_session *bs[NB];
        for (int i = 0; i < NB; i++) {
            st = lm_session_create(m, NULL, &bs[i], NULL, 0);
            if (st != LM_OK) die("session", st, NULL);
            st = lm_session_prefill(bs[i], tok + i, 128, 0, NULL, 0);
            if (st != LM_OK) die("prefill", st, bs[i]);
        }
        float *lb = malloc(sizeof(float) * (size_t)(NB * V));
        int32_t bt[NB];
        const long bsteps = steps / 4 > 4 ? steps / 4 : 4;
        a = now();
        for (long i = 0; i < bsteps; i++) {
            for (int j = 0; j < NB; j++) bt[j] = tok[(128 + i * NB + j) % 1024];
            st = lm_session_decode_batch(bs, NB, bt, lb, (size_t)(NB * V));
            if (st != LM_OK) die("decode_batch", st, bs[0]);
        }
        b = now();
        printf("| %-34s | %6ld | %9.1f | %8.1f |\n", "decode batch 16 (decode_batch)", bsteps * NB, 1e3 * (b - a),
               (double)(bsteps * NB) / (b - a));
        for (int i = 0; i < NB; i++) lm_session_free(bs[i]);
        free(lb);
    }

    /* The scan kernel alone: E 1536, N 16, L 4096, softplus and z gate fused. */
    {
        const int64_t L = 4096, E = 1536, N = 16;
        float *u = malloc(sizeof(float) * (size_t)(L * E)), *dt = malloc(sizeof(float) * (size_t)(L * E));
        float *z = malloc(sizeof(float) * (size_t)(L * E)), *y = malloc(sizeof(float) * (size_t)(L * E));
        float *bc = malloc(sizeof(float) * (size_t)(L * 2 * N)), *h = calloc((size_t)(E * N), sizeof(float));
        tu_rng r2 = {5};
        for (int64_t i = 0; i < L * E; i++) {
            u[i] = (float)tu_rng_sym(&r2);
            dt[i] = (float)(2.0 * tu_rng_sym(&r2) - 3.0);
            z[i] = (float)tu_rng_sym(&r2);
        }
        for (int64_t i = 0; i < L * 2 * N; i++) bc[i] = (float)tu_rng_sym(&r2);
        const lmi_layer *ly = &m->layers[0];
        lmi_scan_m1 sa = {.L = L, .E = E, .N = N, .u = u, .delta = dt, .dt_softplus = true,
                          .dt_bias = lmi_weight_f32(&ly->mamba.dt_b), .A = lmi_weight_f32(&ly->mamba.A), .B = bc, .C = bc + N, .ldbc = 2 * N,
                          .D = lmi_weight_f32(&ly->mamba.D), .z = z, .ldz = E, .h = h, .y = y};
        double best = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            double a0 = now();
            lmi_cpu_scan_m1(&sa, (int)nt);
            double b0 = now();
            if (b0 - a0 < best) best = b0 - a0;
        }
        printf("| %-34s | %6lld | %9.1f | %8.0f |\n", "scan kernel alone (E 1536, N 16)", (long long)L,
               1e3 * best, (double)L / best);
        printf("\nscan: %.2f G exp/s, %.1f GB/s of u, dt, z, B, C, y\n",
               (double)(L * E * N) / best * 1e-9,
               (double)L * (double)(4 * E + 2 * N) * 4.0 / best * 1e-9);
        free(u); free(dt); free(z); free(y); free(bc); free(h);
    }
    lm_session_free(s);
    tm_model_free(m);
    decode_by_format(c, steps, tok);
    free(tok);
    free(logits);
    return 0;
}
