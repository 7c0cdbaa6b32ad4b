/*
 * test_gpu_module.c - the CUDA backend as an outside program reaches it:
 * through the public library only, so libongmamba.so opens the module
 * libongmamba-cuda.so with dlopen (the other GPU programs link the CUDA
 * objects statically and never load the module).
 *
 *   - lm_backend_status(CUDA) is LM_OK and AUTO picks CUDA;
 *   - the module is mapped while a CUDA model lives, and a model loaded after
 *     the last one was freed (module closed, opened again) still works;
 *   - a Mamba-1 and a Mamba-2 CUDA model at once;
 *   - every CUDA prefill agrees with the CPU backend on the same fixture
 *     within 1e-5 of max|logit| (fp32 fixtures: both sides fp32 GEMMs).
 *
 * Exit 0 pass, 1 fail, 77 no CUDA device.
 */
#include <longmamba.h>

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef LM_TEST_DATA
#error "LM_TEST_DATA must be defined"
#endif

#define TOL 1e-5
#define PROMPT 200

static int g_checks, g_failures;

static bool check(bool ok, const char *fmt, ...)
{
    g_checks++;
    if (!ok) {
        g_failures++;
        va_list ap;
        va_start(ap, fmt);
        printf("FAIL ");
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
    }
    return ok;
}

static bool module_mapped(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    bool found = false;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "libongmamba-cuda")) found = true;
    if (f) fclose(f);
    return found;
}

static lm_model *load(const char *fixture, lm_backend backend)
{
    char dir[1024], err[512] = "";
    snprintf(dir, sizeof dir, "%s/fixtures/%s", LM_TEST_DATA, fixture);
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = backend;
    lm_model *m = NULL;
    lm_status st = lm_model_load(dir, &mp, &m, err, sizeof err);
    check(st == LM_OK, "%s on %s: %s", fixture, lm_backend_name(backend), err);
    return st == LM_OK ? m : NULL;
}

/* The logits of every position of a fixed pseudo-random prompt. */
static float *prefill_all(lm_model *m, int64_t *vocab)
{
    lm_model_info info;
    info.struct_size = sizeof info;
    if (lm_model_get_info(m, &info) != LM_OK) return NULL;
    *vocab = info.vocab_size;
    int32_t tok[PROMPT];
    uint64_t x = 12345;
    for (int i = 0; i < PROMPT; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((x >> 33) % (uint64_t)info.vocab_size);
    }
    lm_session *s = NULL;
    float *lg = malloc(sizeof *lg * PROMPT * (size_t)info.vocab_size);
    if (!lg || lm_session_create(m, NULL, &s, NULL, 0) != LM_OK ||
        lm_session_prefill(s, tok, PROMPT, PROMPT, lg, (size_t)PROMPT * info.vocab_size) != LM_OK) {
        check(false, "prefill: %s", s ? lm_session_last_error(s) : "no session");
        free(lg);
        lg = NULL;
    }
    lm_session_free(s);
    return lg;
}

/* CUDA model m against a CPU model of the same fixture. */
static void compare_with_cpu(lm_model *m, const char *fixture)
{
    lm_model *c = load(fixture, LM_BACKEND_CPU);
    int64_t V = 0, Vc = 0;
    float *a = m ? prefill_all(m, &V) : NULL, *b = c ? prefill_all(c, &Vc) : NULL;
    if (a && b && check(V == Vc, "%s: vocab %lld vs %lld", fixture, (long long)V, (long long)Vc)) {
        double scale = 0, diff = 0;
        for (size_t i = 0; i < (size_t)PROMPT * V; i++) {
            scale = fmax(scale, fabs(b[i]));
            diff = fmax(diff, fabs((double)a[i] - b[i]));
        }
        printf("%s: CUDA vs CPU, %d positions: max|diff| / max|logit| = %.2e\n", fixture, PROMPT,
               diff / scale);
        check(diff <= TOL * scale, "%s: CUDA vs CPU %.2e > %.0e", fixture, diff / scale, TOL);
    }
    free(a);
    free(b);
    lm_model_free(c);
}

int main(void)
{
    char why[512] = "";
    if (lm_backend_status(LM_BACKEND_CUDA, why, sizeof why) != LM_OK) {
        printf("SKIP: CUDA unavailable: %s\n", why);
        return 77;
    }
    check(lm_backend_status(LM_BACKEND_AUTO, why, sizeof why) == LM_OK && strstr(why, "cuda"),
          "AUTO should pick cuda: %s", why);

    /* Load, use and free twice: the second load opens the module again. */
    for (int round = 0; round < 2; round++) {
        lm_model *m = load("m1-tiny-f32", LM_BACKEND_CUDA);
        check(module_mapped(), "round %d: libongmamba-cuda is not mapped while a CUDA model lives",
              round);
        compare_with_cpu(m, "m1-tiny-f32");
        lm_model_free(m);
    }

    /* Two architectures at once, freed in load order. */
    lm_model *m1 = load("m1-odd-f32", LM_BACKEND_CUDA), *m2 = load("m2-tiny-f32", LM_BACKEND_CUDA);
    compare_with_cpu(m1, "m1-odd-f32");
    compare_with_cpu(m2, "m2-tiny-f32");
    lm_model_free(m1);
    compare_with_cpu(m2, "m2-tiny-f32"); /* still fine with the other model gone */
    lm_model_free(m2);

    printf("%d of %d checks failed\n", g_failures, g_checks);
    return g_failures ? 1 : 0;
}
