/*
 * decode.cu - the fused one-token step (batch 1), four kernels per layer:
 *
 *   D1  dec_gemv<NORM>: RMSNorm(res) in shared memory, then in_proj rows
 *       (W_in h + b) -> xz (fp32)
 *   D2  dec_gemv<CONV>: conv1d + bias + SiLU of every channel from the
 *       carried state and x (recomputed by each block, no state write),
 *       then x_proj rows -> dbc = [dt_low | B | C]
 *   D3  dec_scan_step: per channel: conv again (u), conv-state shift,
 *       dt_proj + bias + softplus, the 16-state update, D skip, z gate -> y
 *   D4  dec_gemv<PLAIN, ACC>: res += W_out y + b   (the residual add)
 *
 * and the head: dec_gemv<NORM> with norm_f and lm_head -> logits.  Each
 * matrix-vector kernel streams its bf16 (or fp32) weight rows once with
 * 16-byte loads, one warp per row, the vector in shared memory in fp32;
 * the grid is capped at a few blocks per SM and strides over the rows, so
 * the prologue (norm or conv of the whole vector) is paid a bounded
 * number of times.  The whole step is captured in a CUDA graph by the
 * backend.
 *
 * PyTorch (transformers' slow path, decode branch):
 *   conv_state = torch.roll(conv_state, shifts=-1, dims=-1); conv_state[:, :, -1] = hidden_states[:, :, 0]
 *   hidden_states = torch.sum(conv_state * self.conv1d.weight[:, 0, :], dim=-1) + self.conv1d.bias
 *   hidden_states = self.act(hidden_states)
 *   ssm_state = discrete_A[:, :, 0, :] * ssm_state + deltaB_u[:, :, 0, :]
 */
#include "common.cuh"
#include "kernels.h"

namespace {

enum { PRO_PLAIN = 0, PRO_NORM = 1, PRO_CONV = 2 };

struct GemvP {
    const float *src;       /* PLAIN/NORM: the vector [n_in]; CONV: x (first n_in of xz) */
    int64_t n_in;
    const float *norm_w;    /* NORM */
    float eps;
    const float *cstate;    /* CONV: [n_in][K-1] */
    const float *cw;        /* CONV: [n_in][K] */
    const float *cb;        /* CONV: [n_in] or NULL */
    int K;
    const void *W;          /* [rows][n_in] */
    int64_t rows;
    const float *bias;      /* [rows] or NULL */
    float *out;             /* [rows] */
};

constexpr int kWarps = 8;

/* Programmatic dependent launch (sm_90): a kernel launched with
 * cudaLaunchAttributeProgrammaticStreamSerialization may start while the
 * previous one finishes; it must wait before reading what that kernel
 * wrote.  Without the attribute both are no-ops. */
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Partial dot(W row, xs) of one warp: part `part` of KS equal slices of
 * the row (in 16-byte chunks when vec). */
template <typename T>
__device__ __forceinline__ float row_dot(const T *w, const float *xs, int64_t n, int lane, bool vec, int part,
                                         int KS);

template <>
__device__ __forceinline__ float row_dot<lmc_bf16>(const lmc_bf16 *w, const float *xs, int64_t n, int lane,
                                                   bool vec, int part, int KS)
{
    float acc = 0.f;
    if (vec) {
        const uint4 *w4 = reinterpret_cast<const uint4 *>(w);
        const int64_t n8 = n / 8, lo = n8 * part / KS, hi = n8 * (part + 1) / KS;
#pragma unroll 4
        for (int64_t i = lo + lane; i < hi; i += 32) {
            const uint4 q = __ldg(w4 + i);
            const float4 xa = *reinterpret_cast<const float4 *>(xs + 8 * i);
            const float4 xb = *reinterpret_cast<const float4 *>(xs + 8 * i + 4);
            const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&q);
            const float2 f0 = __bfloat1622float2(h[0]), f1 = __bfloat1622float2(h[1]);
            const float2 f2 = __bfloat1622float2(h[2]), f3 = __bfloat1622float2(h[3]);
            acc += f0.x * xa.x + f0.y * xa.y + f1.x * xa.z + f1.y * xa.w;
            acc += f2.x * xb.x + f2.y * xb.y + f3.x * xb.z + f3.y * xb.w;
        }
    } else {
        const int64_t lo = n * part / KS, hi = n * (part + 1) / KS;
        for (int64_t i = lo + lane; i < hi; i += 32) acc += __bfloat162float(w[i]) * xs[i];
    }
    return acc;
}

template <>
__device__ __forceinline__ float row_dot<float>(const float *w, const float *xs, int64_t n, int lane, bool vec,
                                                int part, int KS)
{
    float acc = 0.f;
    if (vec) {
        const float4 *w4 = reinterpret_cast<const float4 *>(w);
        const int64_t n4 = n / 4, lo = n4 * part / KS, hi = n4 * (part + 1) / KS;
#pragma unroll 4
        for (int64_t i = lo + lane; i < hi; i += 32) {
            const float4 q = __ldg(w4 + i);
            const float4 x = *reinterpret_cast<const float4 *>(xs + 4 * i);
            acc += q.x * x.x + q.y * x.y + q.z * x.z + q.w * x.w;
        }
    } else {
        const int64_t lo = n * part / KS, hi = n * (part + 1) / KS;
        for (int64_t i = lo + lane; i < hi; i += 32) acc += w[i] * xs[i];
    }
    return acc;
}

struct StepP {
    const float *xz;        /* [2E] x | z */
    int64_t E, N, R;
    int K;
    float *cstate;          /* [E][K-1] */
    const float *cw, *cb;
    const float *dbc;       /* [R + 2N] */
    const float *dt_w;      /* [E][R] */
    const float *dt_b;
    const float *A2;        /* [E][N] */
    const float *D;
    float *h;               /* [E][N] */
    float *y;               /* [E] */
};

/* KS warps share a row (split along the row) when rows are few and long. */
template <typename T, int PRO, bool ACC, int KS>
__global__ void __launch_bounds__(kWarps * 32) dec_gemv(GemvP p)
{
    constexpr int RPB = kWarps / KS; /* rows per block and iteration */
    extern __shared__ float4 xs4[];
    float *xs = reinterpret_cast<float *>(xs4);
    __shared__ float red[kWarps];
    __shared__ float part_sum[kWarps];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int nt = blockDim.x;
    const float *__restrict__ src = p.src;
    float scale = 1.f;
    {
        /* The weights do not depend on the previous kernel: pull this
         * warp's first row (its slice of it) towards L2 before waiting. */
        const int64_t r0 = (int64_t)blockIdx.x * RPB + warp / KS;
        if (r0 < p.rows) {
            const int64_t bytes = p.n_in * (int64_t)sizeof(T);
            const int part = warp % KS;
            const char *row = static_cast<const char *>(p.W) + r0 * bytes;
            for (int64_t off = bytes * part / KS + (int64_t)lane * 128; off < bytes * (part + 1) / KS;
                 off += 32 * 128)
                prefetch_l2(row + off);
        }
    }
    pdl_wait();
    pdl_trigger();
    /* Prologues issue their loads before using them (unrolled strides), so
     * each costs about one memory round trip. */
    if (PRO == PRO_NORM) {
        /* xs = x * w; the 1/rms factor is applied to each dot product. */
        const float *__restrict__ nw = p.norm_w;
        float ss = 0.f;
        if ((p.n_in & 3) == 0) {
            const float4 *s4 = reinterpret_cast<const float4 *>(src);
            const float4 *w4 = reinterpret_cast<const float4 *>(nw);
#pragma unroll 4
            for (int64_t i = tid; i < p.n_in / 4; i += nt) {
                const float4 v = s4[i], w = __ldg(w4 + i);
                ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
                xs4[i] = make_float4(v.x * w.x, v.y * w.y, v.z * w.z, v.w * w.w);
            }
        } else {
#pragma unroll 4
            for (int64_t i = tid; i < p.n_in; i += nt) {
                const float v = src[i];
                ss += v * v;
                xs[i] = v * __ldg(nw + i);
            }
        }
        ss = warp_sum(ss);
        if (lane == 0) red[warp] = ss;
        __syncthreads();
        float tot = 0.f;
#pragma unroll
        for (int i = 0; i < kWarps; i++) tot += red[i];
        scale = 1.f / sqrtf(tot / (float)p.n_in + p.eps);
    } else if (PRO == PRO_CONV) {
        const int K = p.K;
        const float *__restrict__ cw = p.cw;
        const float *__restrict__ cs = p.cstate;
        if (K == 4) {
            /* the usual d_conv: one 16-byte load of the taps per channel */
#pragma unroll 4
            for (int64_t e = tid; e < p.n_in; e += nt) {
                const float4 w = __ldg(reinterpret_cast<const float4 *>(cw) + e);
                const float *s = cs + e * 3;
                const float acc = (p.cb ? __ldg(p.cb + e) : 0.f) + w.x * s[0] + w.y * s[1] + w.z * s[2] +
                                  w.w * src[e];
                xs[e] = lmc_silu(acc);
            }
        } else {
#pragma unroll 4
            for (int64_t e = tid; e < p.n_in; e += nt) {
                float acc = p.cb ? __ldg(p.cb + e) : 0.f;
                const float *w = cw + e * K;
                const float *s = cs + e * (K - 1);
                for (int k = 0; k < K - 1; k++) acc += __ldg(w + k) * s[k];
                acc += __ldg(w + K - 1) * src[e];
                xs[e] = lmc_silu(acc);
            }
        }
    } else {
        if ((p.n_in & 3) == 0) {
#pragma unroll 4
            for (int64_t i = tid; i < p.n_in / 4; i += nt) xs4[i] = reinterpret_cast<const float4 *>(src)[i];
        } else {
#pragma unroll 4
            for (int64_t i = tid; i < p.n_in; i += nt) xs[i] = src[i];
        }
    }
    __syncthreads();
    const T *W = static_cast<const T *>(p.W);
    const bool vec = (p.n_in % (16 / (int)sizeof(T))) == 0;
    /* rb is uniform across the block, so the barriers below are too */
    for (int64_t rb = (int64_t)blockIdx.x * RPB; rb < p.rows; rb += (int64_t)gridDim.x * RPB) {
        const int64_t r = rb + warp / KS;
        const int part = warp % KS;
        float acc = r < p.rows ? warp_sum(row_dot<T>(W + r * p.n_in, xs, p.n_in, lane, vec, part, KS)) : 0.f;
        if (KS > 1) {
            __syncthreads(); /* part_sum of the previous iteration consumed */
            if (lane == 0) part_sum[warp] = acc;
            __syncthreads();
            if (part != 0) continue;
            acc = 0.f;
#pragma unroll
            for (int k = 0; k < KS; k++) acc += part_sum[warp + k];
        }
        if (lane == 0 && r < p.rows) {
            acc *= scale;
            if (p.bias) acc += p.bias[r];
            p.out[r] = ACC ? p.out[r] + acc : acc;
        }
    }
}

/* One-token scan step: 16 lanes per channel (8 channels per 128-thread
 * block), so that the dt_proj row, the states, A and the conv taps are
 * read coalesced and in parallel; reductions by shuffles within the 16. */
__device__ __forceinline__ float sum16(float v)
{
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, 16);
    return v;
}

__global__ void __launch_bounds__(128) dec_scan_step(StepP p)
{
    pdl_wait();
    pdl_trigger();
    const int l = threadIdx.x & 15;
    const int64_t e = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 4);
    const bool ok = e < p.E;
    const int K = p.K;
    /* out-of-range groups (last block) load nothing and store nothing,
     * but take part in the shuffles */
    const int64_t ec = ok ? e : 0;
    /* conv taps: lane k < K holds w[k] * input[k] */
    float *s = p.cstate + ec * (K - 1);
    const float x = ok ? p.xz[ec] : 0.f, z = ok ? p.xz[p.E + ec] : 0.f;
    float sv = 0.f, tap = 0.f;
    if (ok && l < K - 1) sv = s[l];
    if (ok && l < K) tap = __ldg(p.cw + ec * K + l) * (l < K - 1 ? sv : x);
    /* dt_proj partial dot: lanes stride over the R inputs */
    float dt = 0.f;
    const float *wd = p.dt_w + ec * p.R;
    if (ok)
        for (int64_t r = l; r < p.R; r += 16) dt += __ldg(wd + r) * p.dbc[r];
    /* states: lane l holds n = l, l + 16, ... */
    const float *B = p.dbc + p.R, *C = B + p.N;
    float hv[4], a2[4], bv[4], cv[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int64_t n = l + 16 * j;
        const bool in = ok && n < p.N;
        hv[j] = in ? p.h[ec * p.N + n] : 0.f;
        a2[j] = in ? __ldg(p.A2 + ec * p.N + n) : 0.f;
        bv[j] = in ? B[n] : 0.f;
        cv[j] = in ? C[n] : 0.f;
    }
    const float conv = sum16(tap) + ((ok && p.cb) ? __ldg(p.cb + ec) : 0.f);
    const float u = lmc_silu(conv);
    dt = sum16(dt);
    const float d = lmc_softplus(dt + ((ok && p.dt_b) ? __ldg(p.dt_b + ec) : 0.f));
    const float du = d * u;
    /* shift the conv state: new[k] = old[k+1], new[K-2] = x */
    const float nxt = __shfl_down_sync(0xffffffffu, sv, 1, 16);
    __syncwarp();
    if (ok && l < K - 1) s[l] = (l < K - 2) ? nxt : x;
    float yp = 0.f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int64_t n = l + 16 * j;
        if (n < p.N) {
            const float h = lmc_exp2(d * a2[j]) * hv[j] + du * bv[j];
            if (ok) p.h[ec * p.N + n] = h;
            yp += h * cv[j];
        }
    }
    yp = sum16(yp);
    if (ok && l == 0) {
        const float yv = yp + (p.D ? __ldg(p.D + ec) : 0.f) * u;
        p.y[ec] = yv * lmc_silu(z);
    }
}

template <typename P>
cudaError_t launch(void (*k)(P), dim3 grid, dim3 block, size_t smem, cudaStream_t st, bool pdl, const P &p)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, k, p);
}

template <typename T, int PRO, bool ACC, int KS>
cudaError_t launch_gemv_ks(const GemvP &p, int n_sm, bool pdl, cudaStream_t st)
{
    const size_t smem = (size_t)p.n_in * sizeof(float);
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(dec_gemv<T, PRO, ACC, KS>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    constexpr int RPB = kWarps / KS;
    int64_t grid = (p.rows + RPB - 1) / RPB;
    const int64_t cap = (int64_t)(n_sm > 0 ? n_sm : 132) * 8;
    if (grid > cap) grid = cap;
    return launch(dec_gemv<T, PRO, ACC, KS>, dim3((unsigned)grid), dim3(kWarps * 32), smem, st, pdl, p);
}

/* Few long rows (x_proj, out_proj): 4 warps per row, 4x the blocks. */
template <typename T, int PRO, bool ACC>
cudaError_t launch_gemv(const GemvP &p, int n_sm, bool pdl, cudaStream_t st)
{
    const int64_t sms = n_sm > 0 ? n_sm : 132;
    if (p.rows < 2 * sms * kWarps && p.n_in >= 1024) return launch_gemv_ks<T, PRO, ACC, 4>(p, n_sm, pdl, st);
    return launch_gemv_ks<T, PRO, ACC, 1>(p, n_sm, pdl, st);
}

} // namespace

extern "C" cudaError_t lmc_dec_norm_gemv(int dtype, const float *x, int64_t n_in, const float *norm_w, float eps,
                                         const void *W, int64_t rows, const float *bias, float *out, int n_sm,
                                         int pdl, cudaStream_t st)
{
    GemvP p = {};
    p.src = x; p.n_in = n_in; p.norm_w = norm_w; p.eps = eps;
    p.W = W; p.rows = rows; p.bias = bias; p.out = out;
    return dtype == LMC_BF16 ? launch_gemv<lmc_bf16, PRO_NORM, false>(p, n_sm, pdl != 0, st)
                             : launch_gemv<float, PRO_NORM, false>(p, n_sm, pdl != 0, st);
}

extern "C" cudaError_t lmc_dec_conv_gemv(int dtype, const float *x, int64_t E, const float *conv_state,
                                         const float *conv_w, const float *conv_b, int K, const void *W,
                                         int64_t rows, float *out, int n_sm, int pdl, cudaStream_t st)
{
    if (K < 2) return cudaErrorInvalidValue;
    GemvP p = {};
    p.src = x; p.n_in = E; p.cstate = conv_state; p.cw = conv_w; p.cb = conv_b; p.K = K;
    p.W = W; p.rows = rows; p.out = out;
    return dtype == LMC_BF16 ? launch_gemv<lmc_bf16, PRO_CONV, false>(p, n_sm, pdl != 0, st)
                             : launch_gemv<float, PRO_CONV, false>(p, n_sm, pdl != 0, st);
}

extern "C" cudaError_t lmc_dec_gemv_add(int dtype, const float *x, int64_t n_in, const void *W, int64_t rows,
                                        const float *bias, float *out, int n_sm, int pdl, cudaStream_t st)
{
    GemvP p = {};
    p.src = x; p.n_in = n_in; p.W = W; p.rows = rows; p.bias = bias; p.out = out;
    return dtype == LMC_BF16 ? launch_gemv<lmc_bf16, PRO_PLAIN, true>(p, n_sm, pdl != 0, st)
                             : launch_gemv<float, PRO_PLAIN, true>(p, n_sm, pdl != 0, st);
}

extern "C" cudaError_t lmc_dec_scan_step(const float *xz, int64_t E, int64_t N, int64_t R, int K, float *conv_state,
                                         const float *conv_w, const float *conv_b, const float *dbc,
                                         const float *dt_w, const float *dt_b, const float *A2, const float *D,
                                         float *h, float *y, int pdl, cudaStream_t st)
{
    if (K < 2) return cudaErrorInvalidValue;
    StepP p;
    p.xz = xz; p.E = E; p.N = N; p.R = R; p.K = K;
    p.cstate = conv_state; p.cw = conv_w; p.cb = conv_b;
    p.dbc = dbc; p.dt_w = dt_w; p.dt_b = dt_b; p.A2 = A2; p.D = D; p.h = h; p.y = y;
    if (N > 64) return cudaErrorInvalidValue;
    return launch(dec_scan_step, dim3((unsigned)((E + 7) / 8)), dim3(128), 0, st, pdl != 0, p);
}
