/*
 * cpu/scan.c - Mamba-1 selective scan with the LongMamba token filter and
 * MambaExtend's Δ scale (after the filter).
 *
 * Work split: channels are independent, so threads take blocks of
 * SCAN_W channels and each block runs the whole sequence.  Inside a block
 * the SIMD lanes are the channels: per token, B[t] and C[t] are broadcast
 * and the state lives transposed as h[n][lane] in a local array, so every
 * exp(Δ·A) of the block is one vector op and no horizontal sum is needed.
 * State dimensions above SCAN_NMAX take a plain per-channel path.
 * Blocks are handed out dynamically (cpu/parallel.c): they are equal
 * work, but threads are not equally fast when the machine has other work.
 * Each channel is computed the same way whatever thread runs it, so
 * results do not depend on the thread count.
 */
#include "internal.h"

#include "cpu/parallel.h"
#include "cpu/vmath.h"

#define SCAN_W 16       /* channels per block (one AVX-512 vector) */
#define SCAN_NMAX 128   /* largest N held in the block's local arrays */

/* One block of `w` channels starting at e0 (w == SCAN_W when `full`).
 * Inlined into the two clones below with `full` constant. */
LMI_INLINE void scan_block(const lmi_scan_m1 *a, int64_t e0, int w, const int full)
{
    const int64_t L = a->L, E = a->E, N = a->N;
    float hl[SCAN_NMAX][SCAN_W];
    float al[SCAN_NMAX][SCAN_W];
    float dtb[SCAN_W], dsk[SCAN_W], tau[SCAN_W], glob[SCAN_W];

    for (int j = 0; j < SCAN_W; j++) {
        int in = full || j < w;
        int64_t e = e0 + (in ? j : 0);
        dtb[j] = in && a->dt_bias ? a->dt_bias[e] : 0.0f;
        dsk[j] = in && a->D ? a->D[e] : 0.0f;
        glob[j] = in && a->global && a->global[e] ? 1.0f : 0.0f;
        tau[j] = glob[j] != 0.0f ? a->tau[e] : 0.0f;
    }
    for (int64_t n = 0; n < N; n++)
        for (int j = 0; j < SCAN_W; j++) {
            int in = full || j < w;
            hl[n][j] = in ? a->h[(e0 + j) * N + n] : 0.0f;
            al[n][j] = in ? a->A[(e0 + j) * N + n] : 0.0f;
        }
    const int filt = a->global != NULL;
    const float ds = a->d_scale > 0.0f ? a->d_scale : 1.0f;

    for (int64_t t = 0; t < L; t++) {
        float d[SCAN_W], uu[SCAN_W], du[SCAN_W], acc[SCAN_W];
        const float *dr = a->delta + t * E + e0;
        const float *ur = a->u + t * E + e0;
        for (int j = 0; j < SCAN_W; j++) {
            int in = full || j < w;
            d[j] = in ? dr[j] : 0.0f;
            uu[j] = in ? ur[j] : 0.0f;
        }
        if (a->dt_softplus) {
            /* delta = F.softplus(delta + delta_bias) */
LMI_SIMD
            for (int j = 0; j < SCAN_W; j++) d[j] = lmi_softplusf(d[j] + dtb[j]);
        }
        if (filt) {
            /* LongMamba: delta[:, global] *= (delta > tau)  (strict; NaN drops) */
LMI_SIMD
            for (int j = 0; j < SCAN_W; j++)
                d[j] = (glob[j] != 0.0f && !(d[j] > tau[j])) ? 0.0f : d[j];
        }
        if (ds != 1.0f) {
            /* MambaExtend: the kept Δ scaled, after the mask */
LMI_SIMD
            for (int j = 0; j < SCAN_W; j++) d[j] *= ds;
        }
        for (int j = 0; j < SCAN_W; j++) {
            du[j] = d[j] * uu[j];
            acc[j] = 0.0f;
        }
        const float *Bt = a->B + t * a->ldbc;
        const float *Ct = a->C + t * a->ldbc;
        for (int64_t n = 0; n < N; n++) {
            const float b = Bt[n], c = Ct[n];
            /* h = exp(delta * A) * h + delta * B * u;  y += h * C */
LMI_SIMD
            for (int j = 0; j < SCAN_W; j++) {
                float hn = lmi_expf_nonpos(d[j] * al[n][j]) * hl[n][j] + du[j] * b;
                hl[n][j] = hn;
                acc[j] += hn * c;
            }
        }
        /* y = (y + u * D) * F.silu(z) */
        float *yr = a->y + t * E + e0;
        if (a->z) {
            const float *zr = a->z + t * a->ldz + e0;
            float zz[SCAN_W];
            for (int j = 0; j < SCAN_W; j++) zz[j] = (full || j < w) ? zr[j] : 0.0f;
LMI_SIMD
            for (int j = 0; j < SCAN_W; j++) acc[j] = (acc[j] + dsk[j] * uu[j]) * lmi_siluf(zz[j]);
        } else {
            for (int j = 0; j < SCAN_W; j++) acc[j] = acc[j] + dsk[j] * uu[j];
        }
        for (int j = 0; j < SCAN_W; j++)
            if (full || j < w) yr[j] = acc[j];
    }

    for (int64_t n = 0; n < N; n++)
        for (int j = 0; j < SCAN_W; j++)
            if (full || j < w) a->h[(e0 + j) * N + n] = hl[n][j];
}

LMI_CPU_CLONES
static void scan_block_full(const lmi_scan_m1 *a, int64_t e0)
{
    scan_block(a, e0, SCAN_W, 1);
}

LMI_CPU_CLONES
static void scan_block_tail(const lmi_scan_m1 *a, int64_t e0, int w)
{
    scan_block(a, e0, w, 0);
}

/* Channel e alone, state in place: for N > SCAN_NMAX. */
LMI_CPU_CLONES
static void scan_channel(const lmi_scan_m1 *a, int64_t e)
{
    const int64_t L = a->L, E = a->E, N = a->N;
    float *h = a->h + e * N;
    const float *A = a->A + e * N;
    const float ds = a->d_scale > 0.0f ? a->d_scale : 1.0f;
    for (int64_t t = 0; t < L; t++) {
        float d = a->delta[t * E + e];
        if (a->dt_softplus) d = lmi_softplusf(d + (a->dt_bias ? a->dt_bias[e] : 0.0f));
        if (a->global && a->global[e] && !(d > a->tau[e])) d = 0.0f;
        d *= ds;
        const float u = a->u[t * E + e];
        const float du = d * u;
        const float *Bt = a->B + t * a->ldbc;
        const float *Ct = a->C + t * a->ldbc;
        float acc = 0.0f;
LMI_SIMD_SUM(acc)
        for (int64_t n = 0; n < N; n++) {
            float hn = lmi_expf_nonpos(d * A[n]) * h[n] + du * Bt[n];
            h[n] = hn;
            acc += hn * Ct[n];
        }
        float y = acc + (a->D ? a->D[e] : 0.0f) * u;
        if (a->z) y *= lmi_siluf(a->z[t * a->ldz + e]);
        a->y[t * E + e] = y;
    }
}

/* Pieces of blocks (or of channels when N > SCAN_NMAX). */
static void scan_blocks(void *ctx, int64_t begin, int64_t end)
{
    const lmi_scan_m1 *a = ctx;
    for (int64_t b = begin; b < end; b++) {
        int64_t e0 = b * SCAN_W;
        if (e0 + SCAN_W <= a->E)
            scan_block_full(a, e0);
        else
            scan_block_tail(a, e0, (int)(a->E - e0));
    }
}

static void scan_channels(void *ctx, int64_t begin, int64_t end)
{
    for (int64_t e = begin; e < end; e++) scan_channel(ctx, e);
}

void lmi_cpu_scan_m1(const lmi_scan_m1 *a, int n_threads)
{
    if (!a || a->L <= 0 || a->E <= 0) return;
    const int64_t E = a->E;
    /* Below ~256k exponentials (a decode step of a 130m model is 25k) a
     * thread start costs more than it saves. */
    const int nt = a->L * E * (a->N > 0 ? a->N : 1) < 262144 ? 1 : n_threads;
    if (a->N > SCAN_NMAX)
        lmi_cpu_parallel_for(nt, E, 2, scan_channels, (void *)a);
    else
        lmi_cpu_parallel_for(nt, (E + SCAN_W - 1) / SCAN_W, 2, scan_blocks, (void *)a);
}
