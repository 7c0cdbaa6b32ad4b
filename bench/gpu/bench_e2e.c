/*
 * bench_e2e.c - end to end on random bf16 checkpoints of the mamba-130m
 * and mamba-1.4b shapes, through the CUDA backend's vtable (the layer the
 * public session API calls):
 *   prefill tokens/s at 2k, 16k, 64k (logits of the last position only),
 *     as one forward call, and in chunks of 512 (the session default);
 *   LongMamba prefill overhead at 16k (every layer filtered, ~half the
 *     channels global);
 *   decode tokens/s at batch 1 (one session; 256 steps after a 128-token
 *     prompt, logits copied to the host each step, wall clock);
 *   decode at "batch 16": 16 sessions on one model driven by 16 host
 *     threads at once (the API has batch 1 per session), total tokens/s.
 *
 *   bench_e2e [--quick] [--only 130m|1.4b]
 */
#include "gpu_ref.h"
#include "kernels.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, const lmi_err *e)
{
    fprintf(stderr, "%s: %s\n", what, e ? e->msg : "");
    exit(1);
}

static lm_status fwd(struct lm_session *s, const int32_t *tok, int64_t L, int64_t n_out, float *logits,
                     const lmi_filter *filters, lmi_err *e)
{
    lmi_forward f;
    memset(&f, 0, sizeof f);
    f.tokens = tok;
    f.n_tokens = L;
    f.n_out = n_out;
    f.logits = logits;
    f.filters = filters;
    return s->model->vt->forward(s, &f, e);
}

static int cmpd(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds of `reps` prefills of L tokens in chunks of `chunk`. */
static double time_prefill(struct lm_session *s, const int32_t *tok, int64_t L, int64_t chunk, int reps,
                           float *logits, const lmi_filter *filters)
{
    lmi_err e = {{0}};
    double t[8];
    s->chunk_size = chunk; /* full chunks run as a captured graph */
    for (int r = -1; r < reps; r++) {
        s->model->vt->session_reset(s);
        const double t0 = now();
        for (int64_t p = 0; p < L; p += chunk) {
            const int64_t n = L - p < chunk ? L - p : chunk;
            if (fwd(s, tok + p, n, p + n == L ? 1 : 0, logits, filters, &e) != LM_OK) die("prefill", &e);
        }
        const double dt = now() - t0;
        if (r >= 0) t[r] = dt;
    }
    qsort(t, (size_t)reps, sizeof(double), cmpd);
    return t[reps / 2];
}

typedef struct dec_job {
    struct lm_model *m;
    int64_t steps;
    double secs;
    int failed;
    char msg[LMI_ERR_CAP + 16];
} dec_job;

static void *decode_thread(void *p)
{
    dec_job *j = p;
    lmi_err e = {{0}};
    struct lm_session *s = session_new(j->m, &e);
    if (!s) {
        j->failed = 1;
        snprintf(j->msg, sizeof j->msg, "session: %s", e.msg);
        return NULL;
    }
    const int64_t V = j->m->dims.vocab;
    float *logits = malloc((size_t)V * 4);
    int32_t prompt[128];
    for (int i = 0; i < 128; i++) prompt[i] = (i * 7919) % 50000;
    if (fwd(s, prompt, 128, 1, logits, NULL, &e) != LM_OK) j->failed = 1;
    int32_t t = 1;
    for (int i = 0; i < 3 && !j->failed; i++) /* capture the graph, warm up */
        if (fwd(s, &t, 1, 1, logits, NULL, &e) != LM_OK) j->failed = 1;
    const double t0 = now();
    for (int64_t i = 0; i < j->steps && !j->failed; i++) {
        if (fwd(s, &t, 1, 1, logits, NULL, &e) != LM_OK) j->failed = 1;
        /* greedy: next token = argmax (keeps the host work of a real loop) */
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = (int32_t)v;
        t = best;
    }
    j->secs = now() - t0;
    if (j->failed) snprintf(j->msg, sizeof j->msg, "forward: %s", e.msg);
    free(logits);
    session_delete(s);
    return NULL;
}

static double decode_rate(struct lm_model *m, int n_sess, int64_t steps)
{
    pthread_t th[32];
    dec_job jobs[32];
    for (int i = 0; i < n_sess; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].m = m;
        jobs[i].steps = steps;
        pthread_create(&th[i], NULL, decode_thread, &jobs[i]);
    }
    double worst = 0;
    int failed = 0;
    for (int i = 0; i < n_sess; i++) {
        pthread_join(th[i], NULL);
        if (jobs[i].secs > worst) worst = jobs[i].secs;
        if (jobs[i].failed && !failed) fprintf(stderr, "decode thread %d: %s\n", i, jobs[i].msg);
        failed |= jobs[i].failed;
    }
    if (failed) return -1;
    return (double)n_sess * (double)steps / worst;
}

int main(int argc, char **argv)
{
    int quick = 0, decode_only = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--decode-only")) decode_only = 1; /* for a profiler: 20 steps of 130m */
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("no CUDA device\n");
        return 77;
    }
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("device: %s\n", prop.name);
    const struct {
        const char *name;
        model_spec sp;
    } shapes[] = {
        {"130m", {768, 1536, 16, 48, 4, 24, 50280, false, true, true, LM_DTYPE_BF16, 11}},
        {"1.4b", {2048, 4096, 16, 128, 4, 48, 50280, false, true, true, LM_DTYPE_BF16, 12}},
    };
    const int64_t Ls[] = {2048, 16384, 65536};
    printf("%-6s %-28s %12s %12s\n", "model", "what", "value", "unit");
    for (int k = 0; k < 2; k++) {
        if (only && strcmp(only, shapes[k].name)) continue;
        double t0 = now();
        struct lm_model *m = model_random(&shapes[k].sp, LM_BACKEND_CUDA);
        const double t_gen = now() - t0;
        lmi_err e = {{0}};
        t0 = now();
        if (m->vt->model_init(m, &e) != LM_OK) die("model_init", &e);
        printf("%-6s %-28s %12.2f %12s   (host random init %.1f s)\n", shapes[k].name, "weight upload", now() - t0,
               "s", t_gen);
        struct lm_session *s = session_new(m, &e);
        if (!s) die("session", &e);
        const int64_t V = m->dims.vocab;
        if (decode_only) {
            float *lg = malloc((size_t)V * 4);
            int32_t p[128], t = 3;
            for (int i = 0; i < 128; i++) p[i] = i * 37;
            if (fwd(s, p, 128, 1, lg, NULL, &e) != LM_OK) die("prefill", &e);
            for (int i = 0; i < 20; i++)
                if (fwd(s, &t, 1, 1, lg, NULL, &e) != LM_OK) die("decode", &e);
            free(lg);
            session_delete(s);
            m->vt->model_free(m);
            model_destroy(m);
            break;
        }
        float *logits = malloc((size_t)V * 4);
        int32_t *tok = malloc((size_t)65536 * 4);
        for (int64_t i = 0; i < 65536; i++) tok[i] = (int32_t)((i * 2654435761u) % 50277);
        for (size_t il = 0; il < 3; il++) {
            const int64_t L = Ls[il];
            if (quick && L != 16384) continue;
            const double t1 = time_prefill(s, tok, L, L, 3, logits, NULL);
            char what[64];
            snprintf(what, sizeof what, "prefill %lldk, one call", (long long)(L / 1024));
            printf("%-6s %-28s %12.0f %12s\n", shapes[k].name, what, (double)L / t1, "tok/s");
            if (L >= 16384) {
                const double t2 = time_prefill(s, tok, L, 512, 3, logits, NULL);
                snprintf(what, sizeof what, "prefill %lldk, chunks of 512", (long long)(L / 1024));
                printf("%-6s %-28s %12.0f %12s\n", shapes[k].name, what, (double)L / t2, "tok/s");
            }
            if (L == 16384) {
                /* LongMamba: every layer filtered, ~half the channels global */
                const int64_t nl = m->dims.n_layer, E = m->dims.d_inner;
                uint8_t *g = malloc((size_t)(nl * E));
                float *tau = malloc((size_t)(nl * E) * 4);
                lmi_filter *F = malloc((size_t)nl * sizeof(lmi_filter));
                for (int64_t i = 0; i < nl * E; i++) {
                    g[i] = (uint8_t)((i * 2654435761u >> 7) & 1);
                    tau[i] = 0.02f;
                }
                for (int64_t l = 0; l < nl; l++) {
                    F[l].global = g + l * E;
                    F[l].tau = tau + l * E;
                }
                const double tv = time_prefill(s, tok, L, L, 5, logits, NULL);
                const double tf = time_prefill(s, tok, L, L, 5, logits, F);
                printf("%-6s %-28s %12.1f %12s   (%.2f ms vs %.2f ms)\n", shapes[k].name, "LongMamba overhead 16k",
                       100.0 * (tf / tv - 1.0), "%", tf * 1e3, tv * 1e3);
                free(g);
                free(tau);
                free(F);
            }
            fflush(stdout);
        }
        /* decode breakdown, one session: full step (logits to host), no
         * logits, GPU time of the graph replayed back to back; unfused path */
        {
            int32_t t = 1;
            fwd(s, tok, 128, 1, logits, NULL, &e);
            const char *names[3] = {"fused+pdl", "fused", "unfused"};
            for (int fu = 0; fu < 3; fu++) {
                lmc_session_fused_decode(s, 2 - fu);
                for (int no = 1; no >= 0; no--) {
                    for (int i = 0; i < 3; i++) fwd(s, &t, 1, no, logits, NULL, &e);
                    const int n = 128;
                    const double ts = now();
                    for (int i = 0; i < n; i++)
                        if (fwd(s, &t, 1, no, logits, NULL, &e) != LM_OK) die("decode", &e);
                    const double per = (now() - ts) / n;
                    float ms = -1;
                    lmc_session_replay_ms(s, 50, &ms);
                    char what[64];
                    snprintf(what, sizeof what, "decode step %s%s", names[fu], no ? "" : ", no logits");
                    printf("%-6s %-28s %12.1f %12s   (graph replay %.1f us; %.0f tok/s)\n", shapes[k].name, what,
                           per * 1e6, "us", ms * 1e3, 1.0 / per);
                }
            }
            lmc_session_fused_decode(s, 2);
        }
        session_delete(s);
        const double d1 = decode_rate(m, 1, quick ? 64 : 256);
        printf("%-6s %-28s %12.0f %12s\n", shapes[k].name, "decode batch 1", d1, "tok/s");
        const double d16 = decode_rate(m, 16, quick ? 32 : 128);
        printf("%-6s %-28s %12.0f %12s\n", shapes[k].name, "decode 16 sessions (threads)", d16, "tok/s");
        fflush(stdout);
        free(logits);
        free(tok);
        m->vt->model_free(m);
        model_destroy(m);
    }
    return 0;
}
