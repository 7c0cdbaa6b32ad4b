/*
 * scan_prev.cu - development variants of the Mamba-1 scan, for bench_scan and
 * test_gpu_kernels only (not in the module): the previous kernel (v2) and
 * the default kernel with every decay on the SFU.
*/
#include "scan.cuh"
#include "dev.h"

namespace {

/* FINAL = false: phase 1 (aggregate); true: phase 3 (outputs).
 * MB: minimum resident blocks per SM asked of the register allocator;
 * PF: load the next group of tokens while computing the current one. */
template <typename T, int NS, bool FINAL, int MB, bool PF>
__global__ void __launch_bounds__(kThreads, MB) chunk_kernel_v2(ScanP p)
{
    extern __shared__ float4 smem4[];
    float *sB = reinterpret_cast<float *>(smem4);
    float *sC = sB + (size_t)p.chunk * NS;

    const int64_t e = (int64_t)blockIdx.x * kThreads + threadIdx.x;
    const int64_t c = blockIdx.y;
    const int64_t b = blockIdx.z;
    const int64_t t0 = c * p.chunk;
    const int nt = (int)min((int64_t)p.chunk, p.L - t0);

    /* Stage B (and C) rows of the chunk, zero padded to NS. */
    const float *Bg = p.B + b * p.bc_bs + t0 * p.ldbc;
    const float *Cg = p.C + b * p.bc_bs + t0 * p.ldbc;
    for (int i = threadIdx.x; i < nt * NS; i += kThreads) {
        const int t = i / NS, n = i - (i / NS) * NS;
        sB[i] = n < p.N ? Bg[(int64_t)t * p.ldbc + n] : 0.f;
        if (FINAL) sC[i] = n < p.N ? Cg[(int64_t)t * p.ldbc + n] : 0.f;
    }
    __syncthreads();
    if (e >= p.E) return;

    float A2[NS], h[NS];
#pragma unroll
    for (int n = 0; n < NS; n++) A2[n] = n < p.N ? p.A2[e * p.N + n] : 0.f;

    const bool single = p.nc == 1;
    float *hstate = p.h + (b * p.E + e) * p.N;
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
    const bool filt = p.flag && p.flag[e];
    const float tau = filt ? p.tau[e] : 0.f;
    const float Dv = p.D ? p.D[e] : 0.f;

    const T *ug = static_cast<const T *>(p.u) + b * p.u_bs + t0 * p.ldu + e;
    const float *dg = p.dt + b * p.dt_bs + t0 * p.lddt + e;
    const T *zg = p.z ? static_cast<const T *>(p.z) + b * p.z_bs + t0 * p.ldz + e : nullptr;
    T *yg = FINAL ? static_cast<T *>(p.y) + b * p.y_bs + t0 * p.ldy + e : nullptr;

    float dsum = 0.f;
    /* Tokens in groups of G; the next group's loads are issued before the
     * current group's math (software pipelining of the global loads). */
    constexpr int G = 4;
    float dv[G], uv[G], zv[G];
    auto load = [&](int t, float *d_, float *u_, float *z_) {
#pragma unroll
        for (int j = 0; j < G; j++) {
            const bool ok = t + j < nt;
            d_[j] = ok ? dg[(int64_t)(t + j) * p.lddt] : 0.f;
            u_[j] = ok ? lmc_to_f32(ug[(int64_t)(t + j) * p.ldu]) : 0.f;
            if (FINAL) z_[j] = (ok && zg) ? lmc_to_f32(zg[(int64_t)(t + j) * p.ldz]) : 0.f;
        }
    };
    if (PF) load(0, dv, uv, zv);
    for (int t = 0; t < nt; t += G) {
        float dn[G], un[G], zn[G];
        if (PF) load(t + G, dn, un, zn);
        else load(t, dv, uv, zv);
#pragma unroll
        for (int j = 0; j < G; j++) {
            if (t + j >= nt) break;
            float d = dv[j];
            if (p.dt_softplus) d = lmc_softplus(d + dtb);
            if (filt && !(d > tau)) d = 0.f;
            const float du = d * uv[j];
            if (!FINAL) dsum += d;
            const float4 *b4 = reinterpret_cast<const float4 *>(sB + (t + j) * NS);
            /* four partial sums: no 16-long dependent chain per token */
            float acc0 = 0.f, acc1 = 0.f, acc2 = 0.f, acc3 = 0.f;
#pragma unroll
            for (int q = 0; q < NS / 4; q++) {
                const float4 bb = b4[q];
                h[4 * q + 0] = lmc_exp2(d * A2[4 * q + 0]) * h[4 * q + 0] + du * bb.x;
                h[4 * q + 1] = lmc_exp2(d * A2[4 * q + 1]) * h[4 * q + 1] + du * bb.y;
                h[4 * q + 2] = lmc_exp2(d * A2[4 * q + 2]) * h[4 * q + 2] + du * bb.z;
                h[4 * q + 3] = lmc_exp2(d * A2[4 * q + 3]) * h[4 * q + 3] + du * bb.w;
                if (FINAL) {
                    const float4 cc = reinterpret_cast<const float4 *>(sC + (t + j) * NS)[q];
                    acc0 += h[4 * q + 0] * cc.x;
                    acc1 += h[4 * q + 1] * cc.y;
                    acc2 += h[4 * q + 2] * cc.z;
                    acc3 += h[4 * q + 3] * cc.w;
                }
            }
            if (FINAL) {
                float yv = (acc0 + acc1) + (acc2 + acc3) + Dv * uv[j];
                if (zg) yv *= lmc_silu(zv[j]);
                yg[(int64_t)(t + j) * p.ldy] = lmc_from_f32<T>(yv);
            }
        }
        if (PF) {
#pragma unroll
            for (int j = 0; j < G; j++) {
                dv[j] = dn[j];
                uv[j] = un[j];
                zv[j] = zn[j];
            }
        }
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

template <typename T, int NS, int MB, bool PF>
cudaError_t run_v2(const ScanP &p, int64_t batch, cudaStream_t st)
{
    const dim3 grid((unsigned)((p.E + kThreads - 1) / kThreads), (unsigned)p.nc, (unsigned)batch);
    const size_t sm1 = (size_t)p.chunk * NS * sizeof(float);
    if (p.nc > 1) {
        chunk_kernel_v2<T, NS, false, MB, PF><<<grid, kThreads, sm1, st>>>(p);
        cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) return err;
        const int64_t work = p.E * p.N;
        const dim3 g2((unsigned)((work + 255) / 256), (unsigned)batch);
        carry_kernel<<<g2, 256, 0, st>>>(p);
        err = cudaGetLastError();
        if (err != cudaSuccess) return err;
    }
    chunk_kernel_v2<T, NS, true, MB, PF><<<grid, kThreads, 2 * sm1, st>>>(p);
    return cudaGetLastError();
}

/* variant (N = 9..16 only; bench_scan compares them): 0 default: 2 of the
 * 16 decays of phase 1 on the FMA pipe, phase 3 all on the SFU, registers
 * capped for 6 blocks/SM (80); 1 all decays on the SFU; 9 the previous
 * kernel (v2).  Measured on the H100 (E 1536, L 16k, chunk 256): 0.376 ms
 * (variant 0), 0.378 (1), 0.583 (v2); 4 of 16 in phase 1, 1 or 2 of 16 in
 * phase 3, caps of 7 or 8 blocks/SM and two chunks per thread (more
 * instruction-level parallelism, 0.44-0.58 ms) were all slower. */
template <typename T>
cudaError_t run_variant(const ScanP &p, int64_t batch, int variant, cudaStream_t st)
{
    if (variant == 1) return run<T, 16, 0, 0, 6, 6>(p, batch, st);
    return run_v2<T, 16, 6, true>(p, batch, st);
}

} // namespace

extern "C" cudaError_t lmc_dev_scan(const lmc_scan_args *a, int variant, cudaStream_t st)
{
    ScanP p;
    if (variant == 0 || a->n_seq > 0 || !scan_params(a, p) || pick_ns(p.N) != 16) return lmc_scan(a, st);
    return a->dtype == LMC_BF16 ? run_variant<lmc_bf16>(p, a->batch, variant, st)
                                : run_variant<float>(p, a->batch, variant, st);
}
