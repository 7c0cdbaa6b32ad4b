/*
 * test_gpu_sample.c - sampling on the device (cuda/sample.cu, behind
 * lm_session_decode_sample):
 *   1. lmc_sample_rows against the host rule (lmi_sample_row, lib/sample.c)
 *      on random rows: greedy, temperature alone, top-k, top-p and both,
 *      ties, a 50,280-id vocabulary and a 6-id one, many positions: every
 *      token equal (the two sum in different orders, so a draw within
 *      rounding of a boundary could differ: counted, and none is expected
 *      in these draws), and -1 for a row with a NaN or an infinity;
 *   2. lm_session_decode_sample on fixtures (Mamba-1 and Mamba-2) on the
 *      CUDA and the CPU backend: the same greedy tokens step after step
 *      for a batch of sessions at different positions; logits rows
 *      returned only for the sessions that ask, within 1e-4 of the CPU's;
 *      the same seed gives the same sampled tokens on a twin session.
 * Exit status 0 / 1 / 77 (no GPU).
 */
#include "gpu_ref.h"
#include "kernels.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int g_fail = 0;

#define CHECK(cond, ...)                     \
    do {                                     \
        if (!(cond)) {                       \
            printf("FAIL: " __VA_ARGS__);    \
            printf("\n");                    \
            g_fail = 1;                      \
        }                                    \
    } while (0)

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float rng_normal(uint64_t *s)
{
    const double u1 = ((double)(rng_next(s) >> 11) + 0.5) * 0x1p-53, u2 = (double)(rng_next(s) >> 11) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Part 1: rows x settings x positions through the kernel and the host rule. */
static void kernel_vs_host(int64_t V, int64_t rows, double scale, int ties)
{
    const lmi_sampler settings[] = {
        {0.f, 0, 1.f, 1, 0},     {1.f, 0, 1.f, 2, 0},    {0.7f, 50, 1.f, 3, 0}, {1.3f, 0, 0.9f, 4, 0},
        {1.f, 40, 0.5f, 5, 0},   {2.f, 1, 1.f, 6, 0},    {0.05f, 0, 0.95f, 7, 0}, {50.f, 3, 1.f, 8, 0},
    };
    const int ns = (int)(sizeof settings / sizeof settings[0]);
    const int64_t n = rows * ns;
    float *h = malloc(sizeof(float) * (size_t)(n * V));
    lmc_sample_param *hp = malloc(sizeof *hp * (size_t)n);
    int32_t *got = malloc(sizeof(int32_t) * (size_t)n);
    int64_t *scratch = malloc(sizeof(int64_t) * (size_t)V);
    uint64_t s = 77 + (uint64_t)V;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < V; i++) {
            float v = (float)(scale * rng_normal(&s));
            if (ties) v = roundf(v); /* many equal logits */
            for (int k = 0; k < ns; k++) h[(r * ns + k) * V + i] = v;
        }
    for (int64_t r = 0; r < rows; r++)
        for (int k = 0; k < ns; k++) {
            const lmi_sampler *sp = &settings[k];
            hp[r * ns + k] = (lmc_sample_param){sp->temperature, sp->top_k, sp->top_p, sp->seed + (uint64_t)r,
                                                1000 + r * 7 + k};
        }
    float *dl;
    lmc_sample_param *dp;
    int32_t *dn;
    cudaMalloc((void **)&dl, sizeof(float) * (size_t)(n * V));
    cudaMalloc((void **)&dp, sizeof *dp * (size_t)n);
    cudaMalloc((void **)&dn, sizeof(int32_t) * (size_t)n);
    cudaMemcpy(dl, h, sizeof(float) * (size_t)(n * V), cudaMemcpyHostToDevice);
    cudaMemcpy(dp, hp, sizeof *dp * (size_t)n, cudaMemcpyHostToDevice);
    cudaError_t ce = lmc_sample_rows(dl, V, V, n, dp, dn, 0);
    if (ce == cudaSuccess) ce = cudaMemcpy(got, dn, sizeof(int32_t) * (size_t)n, cudaMemcpyDeviceToHost);
    CHECK(ce == cudaSuccess, "lmc_sample_rows: %s", cudaGetErrorString(ce));
    int64_t diff = 0;
    for (int64_t r = 0; r < rows && ce == cudaSuccess; r++)
        for (int k = 0; k < ns; k++) {
            const int64_t i = r * ns + k;
            lmi_sampler sp = settings[k];
            sp.seed += (uint64_t)r;
            int32_t want = -2;
            lmi_err e = {{0}};
            CHECK(lmi_sample_row(h + i * V, V, &sp, hp[i].position, &want, scratch, &e) == LM_OK, "host: %s", e.msg);
            if (got[i] != want) {
                diff++;
                if (diff <= 5)
                    printf("  V %lld row %lld setting %d: device %d host %d\n", (long long)V, (long long)r, k,
                           (int)got[i], (int)want);
            }
        }
    printf("kernel vs host: V %lld, %lld rows x %d settings%s: %lld differ\n", (long long)V, (long long)rows, ns,
           ties ? " (ties)" : "", (long long)diff);
    CHECK(diff == 0, "device and host samplers differ on %lld of %lld draws", (long long)diff, (long long)n);

    /* a NaN and an infinity: no token */
    h[3] = NAN;
    h[V + 5] = INFINITY;
    cudaMemcpy(dl, h, sizeof(float) * (size_t)(2 * V), cudaMemcpyHostToDevice);
    ce = lmc_sample_rows(dl, V, V, 2, dp, dn, 0);
    if (ce == cudaSuccess) ce = cudaMemcpy(got, dn, 2 * sizeof(int32_t), cudaMemcpyDeviceToHost);
    CHECK(ce == cudaSuccess && got[0] == -1 && got[1] == -1, "non-finite rows: %d %d", (int)got[0], (int)got[1]);
    cudaFree(dl);
    cudaFree(dp);
    cudaFree(dn);
    free(h);
    free(hp);
    free(got);
    free(scratch);
}

static lm_model *load(const char *dir, lm_backend b)
{
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = b;
    lm_model *m = NULL;
    char err[512];
    if (lm_model_load(dir, &mp, &m, err, sizeof err) != LM_OK) {
        printf("FAIL load %s: %s\n", dir, err);
        exit(1);
    }
    return m;
}

/* Part 2: n sessions at different positions on both backends. */
static void backends_agree(const char *fixture)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/fixtures/%s", LM_TEST_DATA, fixture);
    lm_model *mc = load(dir, LM_BACKEND_CUDA), *mh = load(dir, LM_BACKEND_CPU);
    lm_model_info info;
    info.struct_size = sizeof info;
    lm_model_get_info(mh, &info);
    const int64_t V = info.vocab_size;
    enum { NS = 5, STEPS = 12 };
    lm_session *sc[NS], *sh[NS], *twin = NULL;
    int32_t tok[NS], nc[NS], nh[NS];
    float *lc = calloc((size_t)(NS * V), sizeof(float)), *lh = calloc((size_t)(NS * V), sizeof(float));
    int32_t prompt[40];
    for (int i = 0; i < 40; i++) prompt[i] = (int32_t)((i * 37 + 11) % V);
    for (int i = 0; i < NS; i++) {
        CHECK(lm_session_create(mc, NULL, &sc[i], NULL, 0) == LM_OK, "session");
        CHECK(lm_session_create(mh, NULL, &sh[i], NULL, 0) == LM_OK, "session");
        CHECK(lm_session_prefill(sc[i], prompt, (size_t)(5 + 7 * i), 0, NULL, 0) == LM_OK, "prefill");
        CHECK(lm_session_prefill(sh[i], prompt, (size_t)(5 + 7 * i), 0, NULL, 0) == LM_OK, "prefill");
        lm_sampling_params sp;
        lm_sampling_params_init(&sp);
        sp.flags = (i % 2) ? LM_SAMPLE_RETURN_LOGITS : 0;
        lm_session_set_sampling(sc[i], &sp);
        lm_session_set_sampling(sh[i], &sp);
        tok[i] = prompt[5 + 7 * i];
    }
    int same = 1;
    double lerr = 0.0;
    for (int t = 0; t < STEPS; t++) {
        memset(lc, 0, sizeof(float) * (size_t)(NS * V));
        CHECK(lm_session_decode_sample(sc, NS, tok, nc, lc, (size_t)(NS * V)) == LM_OK, "cuda decode_sample: %s",
              lm_session_last_error(sc[0]));
        CHECK(lm_session_decode_sample(sh, NS, tok, nh, lh, (size_t)(NS * V)) == LM_OK, "cpu decode_sample");
        for (int i = 0; i < NS; i++) {
            same = same && nc[i] == nh[i];
            if (i % 2) { /* relative to the row's largest |logit| */
                double dmax = 0.0, rmax = 0.0;
                for (int64_t v = 0; v < V; v++) {
                    dmax = fmax(dmax, fabs((double)lc[i * V + v] - lh[i * V + v]));
                    rmax = fmax(rmax, fabs((double)lh[i * V + v]));
                }
                if (dmax / rmax > lerr) lerr = dmax / rmax;
            } else {
                for (int64_t v = 0; v < V; v++) CHECK(lc[i * V + v] == 0.f, "row %d was written", i);
            }
            tok[i] = nh[i];
        }
    }
    printf("%s: greedy tokens %s over %d steps x %d sessions; logits rows max |diff| / max |logit| %.2e\n", fixture,
           same ? "equal" : "DIFFER", STEPS, NS, lerr);
    CHECK(same, "%s: greedy tokens differ between CUDA and CPU", fixture);
    CHECK(lerr < 1e-4, "%s: logits rows differ by %.3g", fixture, lerr);

    /* temperature sampling: a twin with the same seed draws the same tokens */
    lm_sampling_params sp;
    lm_sampling_params_init(&sp);
    sp.temperature = 1.0f;
    sp.top_p = 0.9f;
    sp.seed = 99;
    CHECK(lm_session_create(mc, NULL, &twin, NULL, 0) == LM_OK, "twin");
    size_t bytes = 0;
    lm_session_state_size(sc[0], &bytes);
    void *blob = malloc(bytes);
    lm_session_state_save(sc[0], blob, bytes, NULL);
    lm_session_state_load(twin, blob, bytes);
    lm_session_set_sampling(sc[0], &sp);
    lm_session_set_sampling(twin, &sp);
    int32_t a = tok[0], b = tok[0], na, nb;
    int same_t = 1;
    for (int t = 0; t < 8; t++) {
        CHECK(lm_session_decode_sample(&sc[0], 1, &a, &na, NULL, 0) == LM_OK, "sampled");
        CHECK(lm_session_decode_sample(&twin, 1, &b, &nb, NULL, 0) == LM_OK, "sampled");
        same_t = same_t && na == nb;
        a = na;
        b = nb;
    }
    CHECK(same_t, "%s: same seed, different tokens", fixture);
    free(blob);
    lm_session_free(twin);
    for (int i = 0; i < NS; i++) {
        lm_session_free(sc[i]);
        lm_session_free(sh[i]);
    }
    free(lc);
    free(lh);
    lm_model_free(mc);
    lm_model_free(mh);
}

int main(int argc, char **argv)
{
    const int quick = argc > 1 && strcmp(argv[1], "--quick") == 0; /* under compute-sanitizer */
    int nd = 0;
    if (cudaGetDeviceCount(&nd) != cudaSuccess || nd == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    kernel_vs_host(50280, quick ? 2 : 24, 3.0, 0);
    kernel_vs_host(6, quick ? 20 : 400, 1.0, 0);
    kernel_vs_host(1000, quick ? 4 : 40, 1.5, 1);
    backends_agree("m1-tiny-f32");
    backends_agree("m2-tiny-f32");
    printf(g_fail ? "test_gpu_sample: FAILED\n" : "test_gpu_sample: all passed\n");
    return g_fail;
}
