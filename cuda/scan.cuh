/*
 * scan.cuh - the Mamba-1 selective scan kernels (scan.cu) as templates, so that
 * the development variants (bench/gpu/dev/) can instantiate them; the module
 * instantiates only the configurations lmc_scan uses.
*/
#ifndef LMC_SCAN_CUH
#define LMC_SCAN_CUH

#include "common.cuh"
#include "kernels.h"

#include <stdint.h>

#include <type_traits>

namespace {

constexpr int kThreads = 128;

struct ScanP {
    int64_t L, E, N, nc;
    int chunk;
    const void *u; int64_t ldu, u_bs;
    const float *dt; int64_t lddt, dt_bs;
    const float *dt_bias;
    int dt_softplus;
    const float *A2;
    const float *B, *C; int64_t ldbc, bc_bs;
    const float *D;
    const void *z; int64_t ldz, z_bs;
    const uint8_t *flag;
    const float *tau;
    void *y; int64_t ldy, y_bs;
    float *h;
    float *cs, *ch;
    float dsc, asc;                 /* MambaExtend's Δ scale, Modulation's A scale (1: none) */
    /* varlen (chunk_kernel<..., VL = true>, carry_varlen_kernel): ns
     * sequences packed back to back, sequence s the tokens [cu[s], cu[s+1])
     * in the chunks [cuc[s], cuc[s+1]), its state hp[s] + hoff */
    int64_t ns;
    const int64_t *cu, *cuc;
    float *const *hp;
    size_t hoff;
};

/* Modulation on A2 = A log2(e): A' = -(-A)^s (accurate log2f/exp2f, once
 * per thread and state, outside the token loop). */
__device__ __forceinline__ float modulate_a2(float a2, float s)
{
    return s == 1.f ? a2 : -exp2f(s * log2f(-a2 * 0.69314718055994531f)) * LMC_LOG2E;
}

/* ---- v3: the default kernel ---------------------------------------------
 * Same mapping and phases as v2 (chunk_kernel_v2 above), fewer instructions
 * per (token, channel, state): v2 ran at ~0.45 issued instructions per
 * scheduler cycle and, from its time, ~11 instructions per element and
 * pass.  Changes: 32-bit row offsets and no bounds checks in the token loop
 * (tail apart); per group of 4 tokens the scalars first (softplus, filter,
 * silu from ex2/lg2/rcp instead of the libm routines: independent chains),
 * then the state updates; the first NP states' exp(Δ A) optionally on the
 * FMA pipe (exp2_poly) to share the work between the SFU (16/clk/SM) and
 * the FMA pipe (128/clk/SM).  SASS of the loop: ~100 (phase 1) and ~150
 * (phase 3) instructions per token and thread; ncu (E 1536, L 16k): SFU
 * pipe ~60% and issue slots ~56% busy in both phases, 18 warps/SM. */

/* 2^x for x <= 0 on the FMA pipe: x = k + f, |f| <= 1/2, a degree-6 fit of
 * 2^f (max rel. error 1e-7, like ex2.approx's 2 ulp), scaled by adding k
 * to the exponent field.  2^0 == 1 exactly (filtered channels keep their
 * state bit for bit); x < -126 gives about 1e-38 instead of 0. */
__device__ __forceinline__ float exp2_poly(float x)
{
    const float magic = 12582912.f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float t = x + magic;
    const float f = x - (t - magic);
    const float tc = fmaxf(t, magic - 126.f);
    float p = 1.5356125368271023e-4f;
    p = fmaf(p, f, 1.3398814480751753e-3f);
    p = fmaf(p, f, 9.618427604436874e-3f);
    p = fmaf(p, f, 5.5503327399492264e-2f);
    p = fmaf(p, f, 2.4022647738456726e-1f);
    p = fmaf(p, f, 6.931471824645996e-1f);
    p = fmaf(p, f, 1.f);
    /* the low bits of tc hold k (two's complement): k << 23 adds k to the exponent */
    return __int_as_float(__float_as_int(p) + (__float_as_int(tc) << 23));
}

__device__ __forceinline__ float lg2_approx(float x)
{
    float r;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

__device__ __forceinline__ float rcp_approx(float x)
{
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

/* softplus(v) = log1p(e^v): a series below e^v = 1/8 (rel. error < 4e-7),
 * lg2.approx of 1 + e^v above (abs. error 2^-22 over a result >= 0.17
 * bits), v itself above 20.  Branch free: neighbouring channels differ. */
__device__ __forceinline__ float softplus_fast(float v)
{
    const float e = lmc_exp2(v * LMC_LOG2E);
    float s = -1.f / 6.f;
    s = fmaf(s, e, 0.2f);
    s = fmaf(s, e, -0.25f);
    s = fmaf(s, e, 1.f / 3.f);
    s = fmaf(s, e, -0.5f);
    s = fmaf(s, e, 1.f);
    s *= e;
    const float l = lg2_approx(1.f + e) * 0.69314718055994531f;
    return v > 20.f ? v : (e < 0.125f ? s : l);
}

__device__ __forceinline__ float silu_fast(float v)
{
    return v * rcp_approx(1.f + lmc_exp2(-v * LMC_LOG2E));
}

template <int NS, int NP>
__device__ __forceinline__ float decay(float x, int n)
{
    return n < NP ? exp2_poly(x) : lmc_exp2(x);
}

/* FINAL = false: phase 1 (chunk end state from zero, Δ sum); true: phase 3.
 * NP: states whose decay uses exp2_poly; MB: min. resident blocks/SM.
 * VL: packed sequences (ScanP.ns): blockIdx.y is a chunk of all of them,
 * the block finds its sequence, start and state; VL = false compiles to
 * the single-sequence kernel as it was (the VL lines fold away). */
template <typename T, int NS, bool FINAL, int NP, int MB, bool VL = false>
__global__ void __launch_bounds__(kThreads, MB) chunk_kernel(ScanP p)
{
    extern __shared__ float4 smem4[];
    float *sB = reinterpret_cast<float *>(smem4);
    float *sC = sB + (size_t)p.chunk * NS;

    const int64_t e = (int64_t)blockIdx.x * kThreads + threadIdx.x;
    const int64_t c = blockIdx.y;
    const int64_t b = blockIdx.z;
    int64_t t0 = c * p.chunk;
    int nt = (int)min((int64_t)p.chunk, p.L - t0);
    bool single = p.nc == 1;
    int64_t sq = 0; /* VL: this chunk's sequence */
    if (VL) {
        sq = lmc_seq_of(p.cuc, p.ns, c);
        const int64_t c0 = p.cuc[sq];
        t0 = p.cu[sq] + (c - c0) * p.chunk;
        nt = (int)min((int64_t)p.chunk, p.cu[sq + 1] - t0);
        single = p.cuc[sq + 1] - c0 == 1;
        /* a one-chunk sequence runs phase 3 alone, on its state in place
         * (uniform over the block: before any barrier) */
        if (!FINAL && single) return;
    }

    /* Stage B (and C) rows of the chunk, zero padded to NS. */
    {
        const float *Bg = p.B + b * p.bc_bs + t0 * p.ldbc;
        const float *Cg = p.C + b * p.bc_bs + t0 * p.ldbc;
        const int N = (int)p.N;
        for (int i = threadIdx.x; i < nt * NS; i += kThreads) {
            const int t = i / NS, n = i % NS;
            sB[i] = n < N ? Bg[(int64_t)t * p.ldbc + n] : 0.f;
            if (FINAL) sC[i] = n < N ? Cg[(int64_t)t * p.ldbc + n] : 0.f;
        }
    }
    __syncthreads();
    if (e >= p.E) return;

    float A2[NS], h[NS];
#pragma unroll
    for (int n = 0; n < NS; n++) A2[n] = n < p.N ? modulate_a2(p.A2[e * p.N + n], p.asc) : 0.f;
    const float dsc = p.dsc;

    float *hstate = VL ? p.hp[sq] + p.hoff + e * p.N : p.h + (b * p.E + e) * p.N;
    if (FINAL) {
        if (single) {
#pragma unroll
            for (int n = 0; n < NS; n++) h[n] = n < p.N ? hstate[n] : 0.f;
        } else {
            const float *src = p.ch + ((b * p.nc + c) * p.N) * p.E + e;
#pragma unroll
            for (int n = 0; n < NS; n++) h[n] = n < p.N ? src[(int64_t)n * p.E] : 0.f;
        }
    } else {
#pragma unroll
        for (int n = 0; n < NS; n++) h[n] = 0.f;
    }

    const float dtb = p.dt_bias ? p.dt_bias[e] : 0.f;
    const bool soft = p.dt_softplus != 0;
    const bool filt = p.flag && p.flag[e];
    const float tau = filt ? p.tau[e] : 0.f;
    const float Dv = p.D ? p.D[e] : 0.f;
    const bool gate = p.z != nullptr;

    const T *ug = static_cast<const T *>(p.u) + b * p.u_bs + t0 * p.ldu + e;
    const float *dg = p.dt + b * p.dt_bs + t0 * p.lddt + e;
    const T *zg = gate ? static_cast<const T *>(p.z) + b * p.z_bs + t0 * p.ldz + e : nullptr;
    T *yg = FINAL ? static_cast<T *>(p.y) + b * p.y_bs + t0 * p.ldy + e : nullptr;
    /* 32-bit row offsets inside a chunk (lmc_scan checks ld * chunk < 2^31):
     * fewer registers than 64-bit strides */
    const int ldu = (int)p.ldu, lddt = (int)p.lddt, ldz = (int)p.ldz, ldy = (int)p.ldy;

    float dsum = 0.f;
    /* A group of GN tokens: first the per-token scalars of all of them
     * (softplus, filter, silu: independent chains the scheduler can
     * interleave), then the state updates token by token.  dr: raw dt,
     * ur: u, zr: z; ts: first token (row in sB/sC). */
    auto group = [&](auto gn, const float *dr, const float *ur, const float *zr, int ts) {
        constexpr int GN = decltype(gn)::value;
        float dd[GN], du[GN], ys[GN], gz[GN];
#pragma unroll
        for (int j = 0; j < GN; j++) {
            float d = dr[j];
            const float sp = softplus_fast(d + dtb);
            d = soft ? sp : d;
            d = (filt && !(d > tau)) ? 0.f : d;
            d *= dsc; /* MambaExtend, after the mask (1: exact no-op) */
            dd[j] = d;
            du[j] = d * ur[j];
            if (!FINAL) dsum += d;
            if (FINAL) {
                ys[j] = Dv * ur[j];
                gz[j] = gate ? silu_fast(zr[j]) : 1.f;
            }
        }
#pragma unroll
        for (int j = 0; j < GN; j++) {
            const float d = dd[j];
            const float4 *b4 = reinterpret_cast<const float4 *>(sB + (ts + j) * NS);
            const float4 *c4 = reinterpret_cast<const float4 *>(sC + (ts + j) * NS);
            float acc0 = 0.f, acc1 = 0.f, acc2 = 0.f, acc3 = 0.f;
#pragma unroll
            for (int q = 0; q < NS / 4; q++) {
                const float4 bb = b4[q];
                h[4 * q + 0] = fmaf(decay<NS, NP>(d * A2[4 * q + 0], 4 * q + 0), h[4 * q + 0], du[j] * bb.x);
                h[4 * q + 1] = fmaf(decay<NS, NP>(d * A2[4 * q + 1], 4 * q + 1), h[4 * q + 1], du[j] * bb.y);
                h[4 * q + 2] = fmaf(decay<NS, NP>(d * A2[4 * q + 2], 4 * q + 2), h[4 * q + 2], du[j] * bb.z);
                h[4 * q + 3] = fmaf(decay<NS, NP>(d * A2[4 * q + 3], 4 * q + 3), h[4 * q + 3], du[j] * bb.w);
                if (FINAL) {
                    const float4 cc = c4[q];
                    acc0 = fmaf(h[4 * q + 0], cc.x, acc0);
                    acc1 = fmaf(h[4 * q + 1], cc.y, acc1);
                    acc2 = fmaf(h[4 * q + 2], cc.z, acc2);
                    acc3 = fmaf(h[4 * q + 3], cc.w, acc3);
                }
            }
            if (FINAL) {
                const float yv = ((acc0 + acc1) + (acc2 + acc3) + ys[j]) * gz[j];
                yg[(ts + j) * ldy] = lmc_from_f32<T>(yv);
            }
        }
    };

    /* Whole groups of G tokens, the next group's loads issued before the
     * current group's math; then the tail one token at a time. */
    constexpr int G = 4;
    const int nfull = nt - nt % G;
    float dv[G], uv[G], zv[G];
    auto load = [&](int t, float *d_, float *u_, float *z_) {
#pragma unroll
        for (int j = 0; j < G; j++) {
            d_[j] = dg[(t + j) * lddt];
            u_[j] = lmc_to_f32(ug[(t + j) * ldu]);
            if (FINAL) z_[j] = gate ? lmc_to_f32(zg[(t + j) * ldz]) : 0.f;
        }
    };
    if (nfull > 0) load(0, dv, uv, zv);
    for (int t = 0; t < nfull; t += G) {
        float dn[G], un[G], zn[G];
        if (t + G < nfull) load(t + G, dn, un, zn);
        group(std::integral_constant<int, G>(), dv, uv, zv, t);
#pragma unroll
        for (int j = 0; j < G; j++) {
            dv[j] = dn[j];
            uv[j] = un[j];
            zv[j] = zn[j];
        }
    }
    for (int t = nfull; t < nt; t++) {
        const float d = dg[t * lddt];
        const float uf = lmc_to_f32(ug[t * ldu]);
        const float zf = (FINAL && gate) ? lmc_to_f32(zg[t * ldz]) : 0.f;
        group(std::integral_constant<int, 1>(), &d, &uf, &zf, t);
    }

    if (FINAL) {
        if (single) {
#pragma unroll
            for (int n = 0; n < NS; n++)
                if (n < p.N) hstate[n] = h[n];
        }
    } else {
        p.cs[(b * p.nc + c) * p.E + e] = dsum;
        float *dst = p.ch + ((b * p.nc + c) * p.N) * p.E + e;
#pragma unroll
        for (int n = 0; n < NS; n++)
            if (n < p.N) dst[(int64_t)n * p.E] = h[n];
    }
}

/* Phase 2 of one state element over nc chunks: hc[c] (stride hstride)
 * holds chunk c's end state from zero and receives its start state, s[c]
 * (stride E) its Δ sum; returns the final state from h. */
__device__ __forceinline__ float carry_walk(float h, float a2, const float *s, float *hc, int64_t nc, int64_t E,
                                           int64_t hstride)
{
    int64_t c = 0;
    /* 16 chunks at a time: their loads and decays are independent of h, so
     * one memory round trip serves 16 steps of the dependent chain (4 at a
     * time took ~33 us per 130m layer at 16k, latency-bound). */
    constexpr int CB = 16;
    for (; c + CB <= nc; c += CB) {
        float av[CB], hv[CB];
#pragma unroll
        for (int j = 0; j < CB; j++) {
            av[j] = s[(c + j) * E];
            hv[j] = hc[(c + j) * hstride];
        }
#pragma unroll
        for (int j = 0; j < CB; j++) av[j] = lmc_exp2(a2 * av[j]);
#pragma unroll
        for (int j = 0; j < CB; j++) {
            hc[(c + j) * hstride] = h;
            h = fmaf(av[j], h, hv[j]);
        }
    }
    for (; c < nc; c++) {
        const float sv = s[c * E], hv = hc[c * hstride];
        hc[c * hstride] = h;
        h = lmc_exp2(a2 * sv) * h + hv;
    }
    return h;
}

/* Phase 2: thread per (n, e) of one batch row (e fastest: coalesced). */
__global__ void carry_kernel(ScanP p)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t b = blockIdx.y;
    if (i >= p.E * p.N) return;
    const int64_t n = i / p.E, e = i - n * p.E;
    float *hs = p.h + (b * p.E + e) * p.N + n;
    *hs = carry_walk(*hs, modulate_a2(p.A2[e * p.N + n], p.asc), p.cs + b * p.nc * p.E + e,
                     p.ch + (b * p.nc * p.N + n) * p.E + e, p.nc, p.E, p.N * p.E);
}

/* Phase 2, varlen: thread per (n, e) of sequence blockIdx.y; a one-chunk
 * sequence has nothing to carry (phase 3 updates its state in place). */
__global__ void carry_varlen_kernel(ScanP p)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t sq = blockIdx.y;
    const int64_t c0 = p.cuc[sq], nc = p.cuc[sq + 1] - c0;
    if (i >= p.E * p.N || nc <= 1) return;
    const int64_t n = i / p.E, e = i - n * p.E;
    float *hs = p.hp[sq] + p.hoff + e * p.N + n;
    *hs = carry_walk(*hs, modulate_a2(p.A2[e * p.N + n], p.asc), p.cs + c0 * p.E + e,
                     p.ch + (c0 * p.N + n) * p.E + e, nc, p.E, p.N * p.E);
}

int pick_ns(int64_t N)
{
    if (N <= 4) return 4;
    if (N <= 8) return 8;
    if (N <= 16) return 16;
    if (N <= 32) return 32;
    return 64;
}

/* Largest chunk whose staged B and C fit in 48 KB of shared memory
 * (N <= 16: 256 tokens, 32 KB). */
int max_chunk(int ns) { return ns <= 16 ? 256 : (48 * 1024) / (8 * ns); }

/* VL: p.nc chunks of p.ns packed sequences (batch 1); phases 1 and 2 run
 * when some sequence has more than one chunk. */
template <typename T, int NS, int NP1, int NP3, int MB1, int MB3, bool VL = false>
cudaError_t run(const ScanP &p, int64_t batch, cudaStream_t st)
{
    const dim3 grid((unsigned)((p.E + kThreads - 1) / kThreads), (unsigned)p.nc, (unsigned)batch);
    const size_t sm1 = (size_t)p.chunk * NS * sizeof(float);
    if (VL ? p.nc > p.ns : p.nc > 1) {
        chunk_kernel<T, NS, false, NP1, MB1, VL><<<grid, kThreads, sm1, st>>>(p);
        cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) return err;
        const int64_t work = p.E * p.N;
        const dim3 g2((unsigned)((work + 255) / 256), (unsigned)(VL ? p.ns : batch));
        if (VL)
            carry_varlen_kernel<<<g2, 256, 0, st>>>(p);
        else
            carry_kernel<<<g2, 256, 0, st>>>(p);
        err = cudaGetLastError();
        if (err != cudaSuccess) return err;
    }
    chunk_kernel<T, NS, true, NP3, MB3, VL><<<grid, kThreads, 2 * sm1, st>>>(p);
    return cudaGetLastError();
}

/* The kernels' parameters from the public argument struct; false when the
 * arguments are invalid. */
inline bool scan_params(const lmc_scan_args *a, ScanP &p)
{
    if (!a || a->L < 1 || a->E < 1 || a->N < 1 || a->N > LMC_SCAN_MAX_N || a->batch < 1 ||
        !a->u || !a->dt || !a->A2 || !a->B || !a->C || !a->y || (!a->h && a->n_seq < 1) ||
        (a->flag && !a->tau))
        return false;
    p.L = a->L; p.E = a->E; p.N = a->N;
    p.chunk = lmc_scan_chunk(a->batch, a->L, a->E, a->N, a->chunk, a->n_sm);
    p.nc = (a->L + p.chunk - 1) / p.chunk;
    p.u = a->u; p.ldu = a->ldu; p.u_bs = a->u_bs;
    p.dt = a->dt; p.lddt = a->lddt; p.dt_bs = a->dt_bs;
    p.dt_bias = a->dt_bias; p.dt_softplus = a->dt_softplus;
    p.A2 = a->A2;
    p.B = a->B; p.C = a->C; p.ldbc = a->ldbc; p.bc_bs = a->bc_bs;
    p.D = a->D;
    p.z = a->z; p.ldz = a->ldz; p.z_bs = a->z_bs;
    p.flag = a->flag; p.tau = a->tau;
    p.y = a->y; p.ldy = a->ldy; p.y_bs = a->y_bs;
    p.h = a->h;
    p.cs = a->chunk_s;
    p.ch = a->chunk_h;
    p.dsc = a->d_scale > 0.f ? a->d_scale : 1.f;
    p.asc = a->a_scale > 0.f ? a->a_scale : 1.f;
    p.ns = a->n_seq;
    p.cu = a->cu_seq;
    p.cuc = a->cu_chunk;
    p.hp = a->h_ptr;
    p.hoff = a->h_off;
    if (p.ns > 0) {
        /* varlen: the caller's chunk length and chunk table */
        if (a->batch != 1 || a->chunk < 1 || a->chunk > max_chunk(pick_ns(a->N)) || !p.cu || !p.cuc ||
            !p.hp || a->n_chunks < p.ns || a->n_chunks > 65535 || p.ns > 65535)
            return false;
        p.chunk = a->chunk;
        p.nc = a->n_chunks;
        if (p.nc > p.ns && (!p.cs || !p.ch)) return false;
    } else if (p.nc > 1 && (!p.cs || !p.ch)) {
        return false;
    }
    /* the kernels index rows inside a chunk with 32-bit offsets */
    const int64_t lmax = (int64_t)INT32_MAX / p.chunk;
    if (a->ldu > lmax || a->lddt > lmax || a->ldz > lmax || a->ldy > lmax) return false;
    return true;
}

} // namespace

#endif
