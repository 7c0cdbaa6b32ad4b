/*
 * bench_scan.c - the selective-scan kernel alone (lmc_scan), vanilla and
 * LongMamba-filtered, bf16 activations (the bf16 model path: u, z, y bf16;
 * dt, B, C fp32), softplus + D + z gate fused, N = 16.
 *
 * Prints per configuration: median time over repeats (CUDA events), the
 * bytes the kernel must move at least (u, dt, z, y once, B and C once per
 * token), achieved bytes/s against a measured device-to-device copy, and
 * exponentials/s counting E*N*L*batch (the two-pass scan evaluates each
 * twice: the "issued" column).  Inputs are random; buffers rotate so that
 * small sizes are not served from L2.
 *
 *   bench_scan [--quick] [--csv FILE]
 */
#include "dev.h"
#include "kernels.h"
#include "testutil.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                  \
    do {                                                                       \
        cudaError_t e_ = (x);                                                  \
        if (e_ != cudaSuccess) {                                               \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x,         \
                    cudaGetErrorString(e_));                                   \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static tu_rng g_rng = {12345};
static float frand(void) { return (float)tu_rng_sym(&g_rng); } /* [-1, 1) */

static uint64_t g_seed = 1;
static void dev_random(void *dst, size_t n, int bf, float scale, float off)
{
    CK(lmc_dev_fill_uniform(bf, dst, n, scale, off, g_seed++ * 0x632BE59BD9B4E019ull, 0));
    CK(cudaDeviceSynchronize());
}

static int cmpf(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static double copy_bandwidth(void)
{
    const size_t n = (size_t)1 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float t[10];
    for (int i = 0; i < 12; i++) {
        CK(cudaEventRecord(e0, 0));
        CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        if (i >= 2) CK(cudaEventElapsedTime(&t[i - 2], e0, e1));
    }
    qsort(t, 10, sizeof(float), cmpf);
    cudaFree(a);
    cudaFree(b);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return 2.0 * (double)n / (t[5] * 1e-3);
}

typedef struct set {
    void *u, *dt, *z, *bc, *y, *h;
} set;

int main(int argc, char **argv)
{
    int quick = 0;
    FILE *csv = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv = fopen(argv[++i], "w");
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("no CUDA device\n");
        return 77;
    }
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const double bw = copy_bandwidth();
    printf("device: %s, %d SMs; device-to-device copy %.0f GB/s (read + write)\n", prop.name,
           prop.multiProcessorCount, bw / 1e9);
    if (csv) fprintf(csv, "E,N,batch,L,filter,chunk,ms,min_bytes,GBps,frac_copy,Gexp_s\n");
    const int64_t Es[] = {1536, 5120};
    const int64_t Bs[] = {1, 8};
    const int64_t Ls[] = {2048, 4096, 16384, 65536, 131072};
    const int64_t N = 16, ldbc = 2 * N;
    printf("%6s %3s %6s %7s %6s %9s %9s %8s %6s %9s\n", "E", "B", "L", "filter", "chunk", "", "ms", "GB/s",
           "%copy", "Gexp/s");
    for (size_t ie = 0; ie < 2; ie++)
        for (size_t ib = 0; ib < 2; ib++)
            for (size_t il = 0; il < sizeof Ls / sizeof Ls[0]; il++) {
                const int64_t E = Es[ie], B = Bs[ib], L = Ls[il];
                if (quick && !(B == 1 && (L == 16384 || L == 65536))) continue;
                const size_t LE = (size_t)(B * L * E);
                const size_t one = LE * (2 + 4 + 2 + 2) + (size_t)(B * L * ldbc) * 4;
                if (one > (size_t)40 << 30) continue; /* keep under ~40 GB */
                int nsets = (int)((400u << 20) / one) + 1;
                if (nsets > 4) nsets = 4;
                set s[4];
                for (int k = 0; k < nsets; k++) {
                    CK(cudaMalloc(&s[k].u, LE * 2));
                    CK(cudaMalloc(&s[k].dt, LE * 4));
                    CK(cudaMalloc(&s[k].z, LE * 2));
                    CK(cudaMalloc(&s[k].y, LE * 2));
                    CK(cudaMalloc(&s[k].bc, (size_t)(B * L * ldbc) * 4));
                    CK(cudaMalloc(&s[k].h, (size_t)(B * E * N) * 4));
                    dev_random(s[k].u, LE, 1, 1.f, 0.f);
                    dev_random(s[k].dt, LE, 0, 1.f, 0.f);
                    dev_random(s[k].z, LE, 1, 2.f, 0.f);
                    dev_random(s[k].bc, (size_t)(B * L * ldbc), 0, 1.f, 0.f);
                    CK(cudaMemset(s[k].h, 0, (size_t)(B * E * N) * 4));
                }
                float *A2, *dtb, *D, *tau;
                uint8_t *flag;
                CK(cudaMalloc((void **)&A2, (size_t)(E * N) * 4));
                CK(cudaMalloc((void **)&dtb, (size_t)E * 4));
                CK(cudaMalloc((void **)&D, (size_t)E * 4));
                CK(cudaMalloc((void **)&tau, (size_t)E * 4));
                CK(cudaMalloc((void **)&flag, (size_t)E));
                dev_random(A2, (size_t)(E * N), 0, 1.f, -2.f);
                dev_random(dtb, (size_t)E, 0, 1.f, -3.f);
                dev_random(D, (size_t)E, 0, 0.5f, 1.f);
                /* ~half the channels global, each keeping about half its tokens */
                {
                    uint8_t *hf = malloc((size_t)E);
                    float *ht = malloc((size_t)E * 4);
                    for (int64_t e = 0; e < E; e++) {
                        hf[e] = frand() > 0.f;
                        ht[e] = 0.05f;
                    }
                    CK(cudaMemcpy(flag, hf, (size_t)E, cudaMemcpyHostToDevice));
                    CK(cudaMemcpy(tau, ht, (size_t)E * 4, cudaMemcpyHostToDevice));
                    free(hf);
                    free(ht);
                }
                size_t nscr = 0;
                for (int c = 0; c <= 256; c = c ? 2 * c : 32) {
                    const size_t k = lmc_scan_scratch_floats(B, L, E, N, c, prop.multiProcessorCount);
                    if (k > nscr) nscr = k;
                }
                float *scr = NULL;
                CK(cudaMalloc((void **)&scr, nscr * 4 + 4));
                /* B = 1, L = 16k: also sweep chunk lengths and code variants
                 * (dev/scan_prev.cu: 0 default; 1 all decays on the SFU; 9 v2,
                 * the previous kernel) */
                const int sweep[] = {0, 64, 128, 256, 0, 0};
                const int svar[] = {0, 0, 0, 0, 1, 9};
                static const char *const vname[] = {"", "sfu-only", "", "", "", "", "", "", "", "v2"};
                const int n_sweep = (B == 1 && L == 16384) || getenv("BENCH_SCAN_SWEEP_ALL") ? 6 : 1;
                for (int sw = 0; sw < n_sweep; sw++)
                for (int filt = 0; filt < 2; filt++) {
                    if (sw > 0 && filt) continue;
                    const int chunk = lmc_scan_chunk(B, L, E, N, sweep[sw], prop.multiProcessorCount);
                    lmc_scan_args a;
                    memset(&a, 0, sizeof a);
                    a.batch = B; a.L = L; a.E = E; a.N = N; a.dtype = 1;
                    a.ldu = E; a.u_bs = L * E; a.lddt = E; a.dt_bs = L * E;
                    a.dt_bias = dtb; a.dt_softplus = 1; a.A2 = A2;
                    a.ldbc = ldbc; a.bc_bs = L * ldbc; a.D = D;
                    a.ldz = E; a.z_bs = L * E; a.ldy = E; a.y_bs = L * E;
                    a.flag = filt ? flag : NULL; a.tau = tau;
                    a.chunk = sweep[sw];
                    a.chunk_s = scr; a.chunk_h = scr + lmc_scan_scratch_s(B, L, E, N, sweep[sw], prop.multiProcessorCount);
                    a.n_sm = prop.multiProcessorCount;
                    cudaEvent_t e0, e1;
                    CK(cudaEventCreate(&e0));
                    CK(cudaEventCreate(&e1));
                    float t[64];
                    int reps = 0;
                    float total = 0;
                    for (int it = 0; it < 66 && (it < 5 || total < 300.f); it++) {
                        const set *c = &s[it % nsets];
                        a.u = c->u; a.dt = c->dt; a.z = c->z; a.y = c->y; a.h = c->h;
                        a.B = (const float *)c->bc; a.C = (const float *)c->bc + N;
                        CK(cudaEventRecord(e0, 0));
                        CK(lmc_dev_scan(&a, svar[sw], 0));
                        CK(cudaEventRecord(e1, 0));
                        CK(cudaEventSynchronize(e1));
                        float ms;
                        CK(cudaEventElapsedTime(&ms, e0, e1));
                        if (it >= 2 && reps < 64) {
                            t[reps++] = ms;
                            total += ms;
                        }
                    }
                    qsort(t, (size_t)reps, sizeof(float), cmpf);
                    const double ms = t[reps / 2];
                    const double bytes = (double)LE * (2 + 4 + 2 + 2) + (double)(B * L * 2 * N) * 4;
                    const double gbs = bytes / (ms * 1e-3) / 1e9;
                    const double gexp = (double)LE * (double)N / (ms * 1e-3) / 1e9;
                    printf("%6lld %3lld %6lld %7s %6d %9s %9.3f %8.0f %5.0f%% %9.0f\n", (long long)E, (long long)B,
                           (long long)L, filt ? "on" : "off", chunk, sw ? (svar[sw] ? vname[svar[sw]] : "sweep") : "",
                           ms, gbs, 100.0 * gbs * 1e9 / bw, gexp);
                    if (csv)
                        fprintf(csv, "%lld,%lld,%lld,%lld,%d,%d,%.4f,%.0f,%.1f,%.3f,%.1f\n", (long long)E, (long long)N,
                                (long long)B, (long long)L, filt, chunk, ms, bytes, gbs, gbs * 1e9 / bw, gexp);
                    cudaEventDestroy(e0);
                    cudaEventDestroy(e1);
                }
                for (int k = 0; k < nsets; k++) {
                    cudaFree(s[k].u); cudaFree(s[k].dt); cudaFree(s[k].z); cudaFree(s[k].y);
                    cudaFree(s[k].bc); cudaFree(s[k].h);
                }
                cudaFree(A2); cudaFree(dtb); cudaFree(D); cudaFree(tau); cudaFree(flag); cudaFree(scr);
                fflush(stdout);
            }
    printf("(Gexp/s counts E*N*L*batch exponentials; the two-pass scan issues twice that)\n");
    if (csv) fclose(csv);
    return 0;
}
