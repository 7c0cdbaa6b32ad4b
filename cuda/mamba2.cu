/*
 * mamba2.cu - the CUDA backend for Mamba-2 models (lmi_cuda_m2_backend),
 * the GPU twin of lib/cpu/mamba2.c (docs MAMBA.md §2).
 *
 * Weights are uploaded once per model (matrices bf16 for 16-bit
 * checkpoints, fp32 for F32 ones; norms, conv, dt_bias, A, D fp32).  Per
 * layer of a forward pass over L tokens:
 *
 *   hn  = RMSNorm(res)                           norm.cu
 *   zx  = hn W_in^T (+ b)   fp32 [L][2E+2GN+H]   cuBLAS  (z | xBC | dt)
 *   u   = SiLU(conv1d(xBC) + b)  fp32 [L][CD]    conv.cu (state carried)
 *   dl  = clamp(softplus(dt + dt_bias))  [L][H]  delta_kernel
 *   [Δ sink; DeciMamba: score, host selection, gather]
 *   y   = SSD(x, dl, A, B, C) + D x   fp32       ssd_* (LongMamba filter fused)
 *   yn  = RMSNorm_g(y * silu(z)) per group       gated_norm_kernel
 *   res = res + yn W_out^T (+ b)                 cuBLAS, beta = 1
 *
 * The SSD scan runs in chunks of kQ tokens, in three kernels: the state
 * each chunk contributes from zero (ssd_state_kernel), the sequential carry
 * of the states across chunks starting from the session's state
 * (ssd_carry_kernel, which also leaves the final state), and the outputs
 * from the chunk's start state plus the masked intra-chunk products
 * (ssd_out_kernel).  The cumulative decay inside a chunk is summed in
 * double so that exp(cs_t - cs_s) keeps fp32 accuracy for long chunks of
 * strong decay.  One-token steps use a direct recurrence kernel, the
 * whole step replayed from a CUDA graph.
 */
#include "common.cuh"
#include "gemm.cuh"
#include "kernels.h"

#include <math.h>
#include <string.h>

namespace {

const size_t kAlign = 256;
const size_t kBlasWorkspace = 32u << 20;
constexpr int kQ = 64;   /* SSD chunk length */
constexpr int kTP = 64;  /* head_dim tile of the SSD kernels */
constexpr int kTN = 64;  /* state tile of ssd_state_kernel */
constexpr int kNT = 32;  /* state slice of ssd_out_kernel */
constexpr int kQP = kQ + 4; /* k-major rows, padded: conflict-free transposing stores, float4-aligned */
static_assert(kQ == kTP && kQ == kTN && kQ == 64, "the SSD kernels tile 64 x 64 with 256 threads");
static_assert(kQ * kTP <= 2 * kNT * kQP, "ssd_out_kernel's x tile reuses the C^T / S^T slices");
static_assert(kNT == 32, "load_kmajor covers 32 k in groups of 8");

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

/* ---- kernels ------------------------------------------------------------ */

/* dl[t][h] = clamp(softplus(dt[t][h] + b[h])) (the CPU's order of operations). */
__global__ void delta_kernel(const float *__restrict__ zx, int64_t ld, int64_t off, int64_t L, int H,
                             const float *__restrict__ b, int clamp, float lo, float hi, float *__restrict__ dl)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= L * H) return;
    const int64_t t = i / H;
    const int h = (int)(i - t * H);
    float v = lmc_softplus(zx[t * ld + off + h] + b[h]);
    if (clamp) v = fminf(fmaxf(v, lo), hi);
    dl[i] = v;
}

/* Δ of head h at chunk-local token s after the LongMamba filter (0 past Tc). */
__device__ __forceinline__ float filtered_delta(const float *dl, int64_t t0, int s, int Tc, int H, int h,
                                                bool filt, float tau)
{
    float d = s < Tc ? dl[(t0 + s) * H + h] : 0.f;
    /* a filtered head keeps the token iff Δ > τ; otherwise no decay, no input */
    if (filt && !(d > tau)) d = 0.f;
    return d;
}

/* The SSD matrix products run on the CUDA cores in fp32 with both
 * operands k-major in shared memory: out[r][c] += sum_k a[k][r] b[k][c].
 * Thread (ty, tx) of 256 owns rows ty*4.. and columns tx*4.. of a 64 x 64
 * tile and reads float4s: per k a warp issues 3 shared-memory wavefronts
 * (one broadcast, two for 16 distinct float4s) for 512 FMAs, so the FMA
 * pipe, not shared memory, is the limit. */
__device__ __forceinline__ void mma_step(const float *a_k, const float *b_k, int ty, int tx, float acc[4][4])
{
    const float4 a = *reinterpret_cast<const float4 *>(a_k + ty * 4);
    const float4 b = *reinterpret_cast<const float4 *>(b_k + tx * 4);
    const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += av[i] * bv[j];
}

/* dst[k][r] = base[r * ld + k] for r < rows, k < cols (else 0), kNT x 64:
 * a transposing load.  A warp reads 4 rows x 8 consecutive k (4 sectors
 * per load) and, with rows of kQP = 68 floats, stores to 32 distinct banks. */
__device__ __forceinline__ void load_kmajor(float (*dst)[kQP], const float *base, int64_t ld, int rows, int cols)
{
#pragma unroll
    for (int it = 0; it < kNT * kQ / 256; it++) {
        const int e = it * 256 + (int)threadIdx.x;
        const int r = (e / 8) % kQ, k = (e / (8 * kQ)) * 8 + e % 8;
        dst[k][r] = (r < rows && k < cols) ? base[(int64_t)r * ld + k] : 0.f;
    }
}

/* Per (chunk, head): cs[s] = sum_{r<=s} Δ_r A (double), Δ filtered. */
static_assert(kQ == 64, "chunk_decay scans 64 tokens with one warp");
__device__ __forceinline__ void chunk_decay(const float *dl, int64_t t0, int Tc, int H, int h, const uint8_t *flag,
                                            const float *tau, float Ah, float *dlt, double *cs)
{
    const bool filt = flag && flag[h];
    const float th = filt ? tau[h] : 0.f;
    if (threadIdx.x < kQ) dlt[threadIdx.x] = filtered_delta(dl, t0, (int)threadIdx.x, Tc, H, h, filt, th);
    __syncthreads();
    if (threadIdx.x < 32) { /* warp scan over token pairs */
        const int l = (int)threadIdx.x;
        const double a0 = (double)(dlt[2 * l] * Ah), a1 = (double)(dlt[2 * l + 1] * Ah);
        double v = a0 + a1;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const double n = __shfl_up_sync(0xffffffffu, v, o);
            if (l >= o) v += n;
        }
        double ex = __shfl_up_sync(0xffffffffu, v, 1);
        if (l == 0) ex = 0.0;
        cs[2 * l] = ex + a0;
        cs[2 * l + 1] = (ex + a0) + a1;
    }
    __syncthreads();
}

/* Per (chunk, head, tile of [P][N]): the chunk's own contribution to the
 * state, S[p][n] = sum_s exp(cs_end - cs_s) Δ_s x_s[p] B_s[n], and the
 * chunk's total log-decay cs_end. */
__global__ void __launch_bounds__(256) ssd_state_kernel(const float *__restrict__ u, int64_t ldu,
                                                        const float *__restrict__ dl, int64_t T, int H, int P,
                                                        int N, int G, int E, const float *__restrict__ A,
                                                        const uint8_t *__restrict__ flag,
                                                        const float *__restrict__ tau, float *__restrict__ cst,
                                                        float *__restrict__ cdec)
{
    __shared__ double cs[kQ];
    __shared__ float dlt[kQ], w[kQ];
    __shared__ __align__(16) float xs[kQ][kTP];
    __shared__ __align__(16) float bs[kQ][kTN];
    const int c = blockIdx.x, h = blockIdx.y;
    const int ntn = (N + kTN - 1) / kTN;
    const int p0 = (int)(blockIdx.z / ntn) * kTP, n0 = (int)(blockIdx.z % ntn) * kTN;
    const int64_t t0 = (int64_t)c * kQ;
    const int Tc = (int)min((int64_t)kQ, T - t0);
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int g = h / (H / G);
    chunk_decay(dl, t0, Tc, H, h, flag, tau, A[h], dlt, cs);
    if (tid < kQ) w[tid] = tid < Tc ? expf((float)(cs[Tc - 1] - cs[tid])) * dlt[tid] : 0.f;
    if (tid == 0 && blockIdx.z == 0) cdec[(int64_t)c * H + h] = (float)cs[Tc - 1];
    __syncthreads();
    for (int i = tid; i < kQ * kTP; i += 256) {
        const int s = i / kTP, p = i % kTP;
        xs[s][p] = (s < Tc && p0 + p < P) ? u[(t0 + s) * ldu + (int64_t)h * P + p0 + p] * w[s] : 0.f;
    }
    for (int i = tid; i < kQ * kTN; i += 256) {
        const int s = i / kTN, n = i % kTN;
        bs[s][n] = (s < Tc && n0 + n < N) ? u[(t0 + s) * ldu + E + (int64_t)g * N + n0 + n] : 0.f;
    }
    __syncthreads();
    float acc[4][4] = {};
    for (int s = 0; s < Tc; s++) mma_step(xs[s], bs[s], ty, tx, acc);
    float *dst = cst + ((int64_t)c * H + h) * P * N;
    const bool vec = N % 4 == 0 && n0 + tx * 4 + 3 < N; /* 16-byte aligned whole float4 */
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int p = p0 + ty * 4 + i;
        if (p >= P) continue;
        float *row = dst + (int64_t)p * N + n0 + tx * 4;
        if (vec) {
            *reinterpret_cast<float4 *>(row) = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
            continue;
        }
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (n0 + tx * 4 + j < N) row[j] = acc[i][j];
    }
}

/* Per (chunk, group): cbT[s][t] = C_t . B_s, shared by the group's heads. */
__global__ void __launch_bounds__(256, 3) ssd_cb_kernel(const float *__restrict__ u, int64_t ldu, int64_t T, int N,
                                                     int G, int E, float *__restrict__ cbT)
{
    __shared__ __align__(16) float CsT[kNT][kQP];
    __shared__ __align__(16) float BsT[kNT][kQP];
    const int c = blockIdx.x, g = blockIdx.y;
    const int64_t t0 = (int64_t)c * kQ;
    const int Tc = (int)min((int64_t)kQ, T - t0);
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const float *rowB = u + t0 * ldu + E + (int64_t)g * N;
    const float *rowC = u + t0 * ldu + E + (int64_t)G * N + (int64_t)g * N;
    float acc[4][4] = {}; /* rows s = ty*4 + i, columns t = tx*4 + j */
    for (int nb = 0; nb < N; nb += kNT) {
        __syncthreads();
        load_kmajor(BsT, rowB + nb, ldu, Tc, N - nb);
        load_kmajor(CsT, rowC + nb, ldu, Tc, N - nb);
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < kNT; k++) mma_step(BsT[k], CsT[k], ty, tx, acc);
    }
    float *dst = cbT + ((int64_t)c * G + g) * kQ * kQ;
#pragma unroll
    for (int i = 0; i < 4; i++)
        *reinterpret_cast<float4 *>(dst + (ty * 4 + i) * kQ + tx * 4) =
            make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
}

/* Per state element: walks the chunks in order, replacing each chunk's
 * contribution by the state at the chunk's start, and leaves the final
 * state in h. */
__global__ void ssd_carry_kernel(float *__restrict__ cst, const float *__restrict__ cdec, int64_t nch, int H,
                                 int64_t PN, float *__restrict__ hs)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t HPN = (int64_t)H * PN;
    if (i >= HPN) return;
    const int h = (int)(i / PN);
    float s = hs[i];
    float next = cst[i];
    for (int64_t c = 0; c < nch; c++) {
        const float loc = next;
        if (c + 1 < nch) next = cst[(c + 1) * HPN + i]; /* prefetch: independent of s */
        cst[c * HPN + i] = s;
        s = expf(cdec[c * H + h]) * s + loc;
    }
    hs[i] = s;
}

/* Per (chunk, head, tile of head_dim): y_t = exp(cs_t) C_t . S_in
 *   + sum_{s<=t} exp(cs_t - cs_s) Δ_s (C_t . B_s) x_s + D x_t. */
__global__ void __launch_bounds__(256, 3) ssd_out_kernel(const float *__restrict__ u, int64_t ldu,
                                                      const float *__restrict__ dl, int64_t T, int H, int P, int N,
                                                      int G, int E, const float *__restrict__ A,
                                                      const float *__restrict__ Dv, const uint8_t *__restrict__ flag,
                                                      const float *__restrict__ tau, const float *__restrict__ cst,
                                                      const float *__restrict__ cbT, float *__restrict__ y, int64_t ldy)
{
    __shared__ double cs[kQ];
    __shared__ float dlt[kQ];
    __shared__ __align__(16) float MT[kQ][kQ];
    /* first C^T and S^T slices, then x */
    __shared__ __align__(16) float pool[2 * kNT * kQP];
    float(*CsT)[kQP] = reinterpret_cast<float(*)[kQP]>(pool);
    float(*SsT)[kQP] = reinterpret_cast<float(*)[kQP]>(pool + kNT * kQP);
    float(*xs)[kTP] = reinterpret_cast<float(*)[kTP]>(pool);
    const int c = blockIdx.x, h = blockIdx.y, p0 = blockIdx.z * kTP;
    const int64_t t0 = (int64_t)c * kQ;
    const int Tc = (int)min((int64_t)kQ, T - t0);
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int g = h / (H / G);
    chunk_decay(dl, t0, Tc, H, h, flag, tau, A[h], dlt, cs);
    /* MT[s][t]: the decayed, Δ-weighted C_t . B_s of the intra-chunk term */
    const float *cb = cbT + ((int64_t)c * G + g) * kQ * kQ;
    for (int i = tid; i < kQ * kQ; i += 256) {
        const int s = i / kQ, t = i % kQ;
        MT[s][t] = s <= t ? cb[i] * expf((float)(cs[t] - cs[s])) * dlt[s] : 0.f;
    }
    const float *Sin = cst + ((int64_t)c * H + h) * P * N + (int64_t)p0 * N;
    const float *rowC = u + t0 * ldu + E + (int64_t)G * N + (int64_t)g * N;
    float acc[4][4] = {}; /* rows t = ty*4 + i, columns p = p0 + tx*4 + j */
    for (int nb = 0; nb < N; nb += kNT) {
        __syncthreads();
        load_kmajor(CsT, rowC + nb, ldu, Tc, N - nb);
        load_kmajor(SsT, Sin + nb, N, P - p0, N - nb);
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < kNT; k++) mma_step(CsT[k], SsT[k], ty, tx, acc);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float et = expf((float)cs[ty * 4 + i]);
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] *= et;
    }
    __syncthreads(); /* pool: S^T and C^T reads done */
    for (int i = tid; i < kQ * kTP; i += 256) {
        const int s = i / kTP, p = i % kTP;
        xs[s][p] = (s < Tc && p0 + p < P) ? u[(t0 + s) * ldu + (int64_t)h * P + p0 + p] : 0.f;
    }
    __syncthreads();
    const int smax = min(ty * 4 + 3, Tc - 1);
    for (int s = 0; s <= smax; s++) mma_step(MT[s], xs[s], ty, tx, acc);
    const float Dh = Dv[h];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int t = ty * 4 + i;
        if (t >= Tc) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int p = p0 + tx * 4 + j;
            if (p < P) y[(t0 + t) * ldy + (int64_t)h * P + p] = acc[i][j] + Dh * xs[t][tx * 4 + j];
        }
    }
}

/* One token: per head h and row p (one warp), the recurrence of
 * mamba2_selective_state_update: S = S exp(Δ A) + Δ x B; y = S . C + D x. */
__global__ void __launch_bounds__(256) ssd_step_kernel(const float *__restrict__ u, const float *__restrict__ dl,
                                                       int H, int P, int N, int G, int E,
                                                       const float *__restrict__ A, const float *__restrict__ Dv,
                                                       const uint8_t *__restrict__ flag,
                                                       const float *__restrict__ tau, float *__restrict__ hs,
                                                       float *__restrict__ y)
{
    const int h = blockIdx.x;
    const int p = blockIdx.y * 8 + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (p >= P) return;
    const int g = h / (H / G);
    float d = dl[h];
    if (flag && flag[h] && !(d > tau[h])) d = 0.f;
    const float dA = expf(d * A[h]);
    const float x = u[(int64_t)h * P + p];
    const float xd = d * x;
    const float *B = u + E + (int64_t)g * N, *C = u + E + (int64_t)G * N + (int64_t)g * N;
    float *row = hs + ((int64_t)h * P + p) * N;
    float acc = 0.f;
    for (int n = lane; n < N; n += 32) {
        const float s = row[n] * dA + xd * B[n];
        row[n] = s;
        acc += s * C[n];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) y[(int64_t)h * P + p] = acc + Dv[h] * x;
}

template <typename T> __device__ __forceinline__ void store_as(T *p, float v) { *p = lmc_from_f32<T>(v); }

__device__ float block_sum(float v, float *red)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads(); /* red may still be read from a previous call */
    if (lane == 0) red[w] = v;
    __syncthreads();
    float s = 0.f;
    const int nw = (int)(blockDim.x + 31) / 32;
    for (int i = 0; i < nw; i++) s += red[i];
    return s;
}

/* MambaRMSNormGated (norm_before_gate = False) per (token, group):
 * v = y silu(z); out = v / sqrt(mean(v^2) + eps) * w. */
template <typename T>
__global__ void __launch_bounds__(256) gated_norm_kernel(const float *__restrict__ y, int64_t E, int64_t gs,
                                                         const float *__restrict__ z, int64_t ldz,
                                                         const float *__restrict__ w, float eps,
                                                         T *__restrict__ out)
{
    __shared__ float red[32];
    constexpr int kHold = 8; /* groups up to 8 x blockDim channels stay in registers */
    const int64_t t = blockIdx.x, g0 = (int64_t)blockIdx.y * gs;
    const float *yr = y + t * E + g0, *zr = z + t * ldz + g0;
    const bool held = gs <= (int64_t)kHold * blockDim.x;
    float v[kHold];
    float ss = 0.f;
    if (held) {
#pragma unroll
        for (int k = 0; k < kHold; k++) {
            const int64_t i = threadIdx.x + (int64_t)k * blockDim.x;
            v[k] = i < gs ? yr[i] * lmc_silu(zr[i]) : 0.f;
            ss += v[k] * v[k];
        }
    } else {
        for (int64_t i = threadIdx.x; i < gs; i += blockDim.x) {
            const float a = yr[i] * lmc_silu(zr[i]);
            ss += a * a;
        }
    }
    ss = block_sum(ss, red);
    const float inv = 1.f / sqrtf(ss / (float)gs + eps);
    T *o = out + t * E + g0;
    if (held) {
#pragma unroll
        for (int k = 0; k < kHold; k++) {
            const int64_t i = threadIdx.x + (int64_t)k * blockDim.x;
            if (i < gs) store_as(o + i, w[g0 + i] * (v[k] * inv));
        }
    } else {
        for (int64_t i = threadIdx.x; i < gs; i += blockDim.x) {
            const float a = yr[i] * lmc_silu(zr[i]);
            store_as(o + i, w[g0 + i] * (a * inv));
        }
    }
}

/* DeciMamba score: ||Δ[t, :]||_2 over the heads (double, like the CPU). */
__global__ void deci_score_kernel(const float *__restrict__ dl, int64_t L, int H, float *__restrict__ sc)
{
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= L) return;
    double ss = 0.0;
    for (int h = 0; h < H; h++) {
        const double v = dl[t * H + h];
        ss += v * v;
    }
    sc[t] = (float)sqrt(ss);
}

unsigned blocks_for(int64_t n, int per) { return (unsigned)((n + per - 1) / per); }

/* ---- per-model data ----------------------------------------------------- */

typedef struct m2_layer {
    const float *norm_w;
    const void *in_w;      /* [ld][d] T */
    const float *in_b;
    const float *conv_w;   /* [CD][K] */
    const float *conv_b;
    const float *dt_b, *A, *D;   /* [H] */
    const float *gnorm_w;  /* [E] */
    const void *out_w;     /* [d][E] T */
    const float *out_b;
} m2_layer;

typedef struct m2_model {
    int device;
    lmc_dtype dt;
    void *blob;
    const void *embed, *lm_head;
    const float *norm_f;
    m2_layer *layers;
} m2_model;

lmc_dtype model_dt(const struct lm_model *m) { return m->dtype == LM_DTYPE_F32 ? LMC_F32 : LMC_BF16; }

int64_t in_rows(const lmi_dims *d) { return 2 * d->d_inner + 2 * d->n_groups * d->d_state + d->n_heads; }

typedef struct upload {
    const void **dst;      /* where the device pointer goes */
    const lmi_weight *src;
    size_t n;
    bool mat;              /* stored in the model's matrix dtype */
    size_t off;
} upload;

lm_status check_dims(const struct lm_model *m, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    if (d->arch != LM_ARCH_MAMBA2)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend (Mamba-2): not a Mamba-2 model");
    if (d->d_model <= 0 || d->d_inner <= 0 || d->d_state <= 0 || d->n_layer <= 0 || d->vocab <= 0 ||
        d->n_heads <= 0 || d->head_dim <= 0 || d->n_groups <= 0 || d->n_heads * d->head_dim != d->d_inner ||
        d->n_heads % d->n_groups != 0 || d->d_inner % d->n_groups != 0 ||
        d->conv_dim != d->d_inner + 2 * d->n_groups * d->d_state || d->n_channels != d->n_heads)
        return lmi_fail(e, LM_ERR_SHAPE, "cuda backend: invalid Mamba-2 dimensions");
    if (d->d_conv < 2 || d->d_conv > 8)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: d_conv %lld not in [2, 8]", (long long)d->d_conv);
    if (d->n_heads > 65535 || d->head_dim > 65535 * kTP || d->d_state > INT32_MAX / 2 ||
        in_rows(d) > INT32_MAX / 2 || d->vocab > INT32_MAX / 2)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: Mamba-2 dimensions too large");
    if (!m->embed.data || !m->norm_f.data || !m->lm_head.data || !m->layers)
        return lmi_fail(e, LM_ERR_MISSING, "cuda backend: model weights missing");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmi_layer *L = &m->layers[l];
        if (!L->norm_w.data || !L->in_w.data || !L->conv_w.data || !L->dt_b.data || !L->A.data || !L->D.data ||
            !L->gnorm_w.data || !L->out_w.data)
            return lmi_fail(e, LM_ERR_MISSING, "cuda backend: Mamba-2 layer %lld weights missing", (long long)l);
    }
    return LM_OK;
}

void model_release(m2_model *M)
{
    if (!M) return;
    if (M->blob) cudaFree(M->blob);
    lmi_free(M->layers);
    lmi_free(M);
}

lm_status model_init(struct lm_model *m, lmi_err *e)
{
    lm_status st = check_dims(m, e);
    if (st != LM_OK) return st;
    LMC_CUDA(cudaSetDevice(m->device), e, "cudaSetDevice");
    const lmi_dims *d = &m->dims;
    m2_model *M = (m2_model *)lmi_alloc(1, sizeof *M);
    if (!M) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    M->device = m->device;
    M->dt = model_dt(m);
    const size_t nl = (size_t)d->n_layer;
    M->layers = (m2_layer *)lmi_alloc(nl, sizeof(m2_layer));
    upload *ups = (upload *)lmi_alloc(3 + 11 * nl, sizeof(upload));
    float *stage = nullptr;
    size_t nu = 0, total = 0, biggest = 0, stage_n = 0;
    cudaError_t ce = cudaSuccess;
    if (!M->layers || !ups) {
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
        goto fail;
    }
    {
        const size_t V = (size_t)d->vocab, D = (size_t)d->d_model, E = (size_t)d->d_inner;
        const size_t H = (size_t)d->n_heads, CD = (size_t)d->conv_dim, K = (size_t)d->d_conv;
        const size_t ld = (size_t)in_rows(d);
        const size_t ms = lmc_dtype_size(M->dt);
#define ADD(dstp, srcp, count, is_mat)                                                         \
    do {                                                                                       \
        if ((srcp)->data) {                                                                    \
            ups[nu] = upload{(const void **)(dstp), (srcp), (count), (is_mat), total};         \
            total += align_up((count) * ((is_mat) ? ms : 4));                                  \
            nu++;                                                                              \
        }                                                                                      \
    } while (0)
        ADD(&M->embed, &m->embed, V * D, true);
        if (m->lm_head.data != m->embed.data) ADD(&M->lm_head, &m->lm_head, V * D, true);
        ADD(&M->norm_f, &m->norm_f, D, false);
        for (size_t l = 0; l < nl; l++) {
            const lmi_layer *L = &m->layers[l];
            m2_layer *G = &M->layers[l];
            ADD(&G->norm_w, &L->norm_w, D, false);
            ADD(&G->in_w, &L->in_w, ld * D, true);
            ADD(&G->in_b, &L->in_b, ld, false);
            ADD(&G->conv_w, &L->conv_w, CD * K, false);
            ADD(&G->conv_b, &L->conv_b, CD, false);
            ADD(&G->dt_b, &L->dt_b, H, false);
            ADD(&G->A, &L->A, H, false);
            ADD(&G->D, &L->D, H, false);
            ADD(&G->gnorm_w, &L->gnorm_w, E, false);
            ADD(&G->out_w, &L->out_w, D * E, true);
            ADD(&G->out_b, &L->out_b, D, false);
        }
#undef ADD
        ce = cudaMalloc(&M->blob, total);
        if (ce != cudaSuccess) {
            M->blob = nullptr;
            st = lmc_cuda_fail(e, ce, "uploading weights (cudaMalloc)");
            goto fail;
        }
        for (size_t i = 0; i < nu; i++) {
            *ups[i].dst = static_cast<char *>(M->blob) + ups[i].off;
            if (ups[i].mat && M->dt == LMC_BF16 && ups[i].n > biggest) biggest = ups[i].n;
        }
        if (m->lm_head.data == m->embed.data) M->lm_head = M->embed;
        /* fp32 staging for the on-device bf16 conversion, at most 16 Mi floats */
        stage_n = biggest < (16u << 20) ? biggest : (16u << 20);
        if (stage_n) {
            ce = cudaMalloc(&stage, stage_n * sizeof(float));
            if (ce != cudaSuccess) {
                stage = nullptr;
                st = lmc_cuda_fail(e, ce, "uploading weights (staging buffer)");
                goto fail;
            }
        }
        for (size_t i = 0; i < nu && ce == cudaSuccess; i++) {
            const upload *up = &ups[i];
            char *dst = static_cast<char *>(M->blob) + up->off;
            if (!(up->mat && M->dt == LMC_BF16)) {
                ce = lmc_upload_f32(dst, up->src, 0, up->n);
            } else {
                for (size_t o = 0; o < up->n && ce == cudaSuccess; o += stage_n) {
                    const size_t n = up->n - o < stage_n ? up->n - o : stage_n;
                    ce = lmc_upload_f32(stage, up->src, o, n);
                    if (ce == cudaSuccess) ce = lmc_convert(LMC_BF16, stage, dst + o * 2, n, 0);
                    if (ce == cudaSuccess) ce = cudaStreamSynchronize(0);
                }
            }
        }
        if (ce == cudaSuccess) ce = cudaDeviceSynchronize();
        if (ce != cudaSuccess) {
            st = lmc_cuda_fail(e, ce, "uploading weights");
            goto fail;
        }
    }
    if (stage) cudaFree(stage);
    lmi_free(ups);
    m->bk = M;
    return LM_OK;
fail:
    if (stage) cudaFree(stage);
    lmi_free(ups);
    model_release(M);
    return st;
}

void model_free(struct lm_model *m)
{
    if (!m || !m->bk) return;
    m2_model *M = static_cast<m2_model *>(m->bk);
    cudaSetDevice(M->device);
    model_release(M);
    m->bk = nullptr;
}

/* ---- per-session data --------------------------------------------------- */

typedef struct m2_session {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws;
    float *conv_state;     /* [n_layer][CD][K-1] */
    float *ssm_state;      /* [n_layer][H][P][N] */
    uint8_t *flt_flag;     /* [n_layer][H] */
    float *flt_tau;        /* [n_layer][H] */
    void *flt_blob;

    int64_t cap;           /* tokens the main buffers hold */
    void *scratch;
    size_t scratch_bytes;
    int32_t *tok;
    float *res;            /* [cap][d] */
    void *hn;              /* [cap][d] T */
    float *zx;             /* [cap][ld] */
    float *u;              /* [cap][CD] */
    float *dl;             /* [cap][H] */
    float *y;              /* [cap][E] */
    void *yn;              /* [cap][E] T */
    float *scores;         /* [cap] */
    int32_t *idx;          /* [cap] */

    void *deci;            /* gather targets res2, zx2 (z only), u2, dl2 */
    size_t deci_bytes;
    float *res2, *zx2, *u2, *dl2;

    float *chunk;          /* SSD chunk states [nch][H][P][N] then decays [nch][H] */
    size_t chunk_bytes;

    void *out;             /* hf [n_out][d] T, logits [n_out][V] */
    size_t out_bytes;
    void *hf;
    float *logits;

    cudaGraphExec_t step_exec; /* the one-token step, captured on first use */
    bool step_valid;       /* cleared when a buffer it uses moves (grow) */
    int64_t step_n_out;
    bool step_tf32;

    float *h_buf;          /* host staging */
    size_t h_buf_bytes;
    int64_t *h_idx, *h_scratch;
    int32_t *h_idx32;
    size_t h_idx_cap;
} m2_session;

void free_dev(void *p)
{
    if (p) cudaFree(p);
}

void session_release(m2_session *S)
{
    if (!S) return;
    cudaSetDevice(S->device);
    if (S->stream) cudaStreamSynchronize(S->stream);
    if (S->step_exec) cudaGraphExecDestroy(S->step_exec);
    if (S->blas) cublasDestroy(S->blas);
    if (S->stream) cudaStreamDestroy(S->stream);
    free_dev(S->blas_ws);
    free_dev(S->conv_state);
    free_dev(S->ssm_state);
    free_dev(S->flt_blob);
    free_dev(S->scratch);
    free_dev(S->deci);
    free_dev(S->chunk);
    free_dev(S->out);
    lmi_free(S->h_buf);
    lmi_free(S->h_idx);
    lmi_free(S->h_scratch);
    lmi_free(S->h_idx32);
    (void)cudaGetLastError();
    lmi_free(S);
}

size_t conv_floats(const lmi_dims *d) { return (size_t)(d->n_layer * d->conv_dim * (d->d_conv - 1)); }
size_t ssm_floats(const lmi_dims *d) { return (size_t)(d->n_layer * d->d_inner * d->d_state); }

lm_status session_init(struct lm_session *s, lmi_err *e)
{
    const struct lm_model *m = s->model;
    const m2_model *M = static_cast<const m2_model *>(m->bk);
    if (!M) return lmi_fail(e, LM_ERR_BACKEND, "cuda backend: model weights not uploaded");
    const lmi_dims *d = &m->dims;
    LMC_CUDA(cudaSetDevice(M->device), e, "cudaSetDevice");
    m2_session *S = (m2_session *)lmi_alloc(1, sizeof *S);
    if (!S) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    S->device = M->device;
    lm_status st = LM_OK;
    cudaError_t ce;
    cublasStatus_t bs;
    const size_t LH = (size_t)(d->n_layer * d->n_heads);
#define TRY(call, what)                                                        \
    do {                                                                       \
        ce = (call);                                                           \
        if (ce != cudaSuccess) {                                               \
            st = lmc_cuda_fail(e, ce, what);                                   \
            goto fail;                                                         \
        }                                                                      \
    } while (0)
    TRY(cudaStreamCreateWithFlags(&S->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    bs = cublasCreate(&S->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        S->blas = nullptr;
        st = lmc_cublas_fail(e, bs, "cublasCreate");
        goto fail;
    }
    TRY(cudaMalloc(&S->blas_ws, kBlasWorkspace), "cuBLAS workspace");
    bs = cublasSetStream(S->blas, S->stream);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetWorkspace(S->blas, S->blas_ws, kBlasWorkspace);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        st = lmc_cublas_fail(e, bs, "cublasSetStream/Workspace");
        goto fail;
    }
    TRY(cudaMalloc(&S->conv_state, conv_floats(d) * sizeof(float) + 4), "recurrent state");
    TRY(cudaMalloc(&S->ssm_state, ssm_floats(d) * sizeof(float)), "recurrent state");
    TRY(cudaMemsetAsync(S->conv_state, 0, conv_floats(d) * sizeof(float), S->stream), "state reset");
    TRY(cudaMemsetAsync(S->ssm_state, 0, ssm_floats(d) * sizeof(float), S->stream), "state reset");
    TRY(cudaMalloc(&S->flt_blob, align_up(LH) + LH * sizeof(float)), "filter arrays");
    S->flt_flag = static_cast<uint8_t *>(S->flt_blob);
    S->flt_tau = reinterpret_cast<float *>(static_cast<char *>(S->flt_blob) + align_up(LH));
    TRY(cudaStreamSynchronize(S->stream), "session init");
#undef TRY
    s->bk = S;
    return LM_OK;
fail:
    session_release(S);
    return st;
}

void session_free(struct lm_session *s)
{
    if (!s || !s->bk) return;
    session_release(static_cast<m2_session *>(s->bk));
    s->bk = nullptr;
}

void session_reset(struct lm_session *s)
{
    if (!s || !s->bk) return;
    m2_session *S = static_cast<m2_session *>(s->bk);
    const lmi_dims *d = &s->model->dims;
    cudaSetDevice(S->device);
    cudaMemsetAsync(S->conv_state, 0, conv_floats(d) * sizeof(float), S->stream);
    cudaMemsetAsync(S->ssm_state, 0, ssm_floats(d) * sizeof(float), S->stream);
    cudaStreamSynchronize(S->stream);
}

lm_status state_read(struct lm_session *s, float *conv, float *ssm, lmi_err *e)
{
    m2_session *S = static_cast<m2_session *>(s->bk);
    if (!S) return lmi_fail(e, LM_ERR_BACKEND, "cuda backend: session not initialised");
    const lmi_dims *d = &s->model->dims;
    LMC_CUDA(cudaSetDevice(S->device), e, "cudaSetDevice");
    if (conv)
        LMC_CUDA(cudaMemcpyAsync(conv, S->conv_state, conv_floats(d) * sizeof(float), cudaMemcpyDeviceToHost,
                                 S->stream), e, "state read");
    if (ssm)
        LMC_CUDA(cudaMemcpyAsync(ssm, S->ssm_state, ssm_floats(d) * sizeof(float), cudaMemcpyDeviceToHost,
                                 S->stream), e, "state read");
    LMC_CUDA(cudaStreamSynchronize(S->stream), e, "state read");
    return LM_OK;
}

lm_status state_write(struct lm_session *s, const float *conv, const float *ssm, lmi_err *e)
{
    m2_session *S = static_cast<m2_session *>(s->bk);
    if (!S) return lmi_fail(e, LM_ERR_BACKEND, "cuda backend: session not initialised");
    const lmi_dims *d = &s->model->dims;
    LMC_CUDA(cudaSetDevice(S->device), e, "cudaSetDevice");
    if (conv)
        LMC_CUDA(cudaMemcpyAsync(S->conv_state, conv, conv_floats(d) * sizeof(float), cudaMemcpyHostToDevice,
                                 S->stream), e, "state write");
    if (ssm)
        LMC_CUDA(cudaMemcpyAsync(S->ssm_state, ssm, ssm_floats(d) * sizeof(float), cudaMemcpyHostToDevice,
                                 S->stream), e, "state write");
    LMC_CUDA(cudaStreamSynchronize(S->stream), e, "state write");
    return LM_OK;
}

/* ---- scratch ------------------------------------------------------------ */

/* Grows a device buffer to at least `need` bytes (contents not kept); on
 * failure the buffer is left empty so that a later call tries again. */
lm_status grow(void **p, size_t *have, size_t need, m2_session *S, lmi_err *e, const char *what)
{
    if (need <= *have && *p) return LM_OK;
    S->step_valid = false;
    if (*p) {
        cudaStreamSynchronize(S->stream);
        cudaFree(*p);
    }
    *p = nullptr;
    *have = 0;
    cudaError_t ce = cudaMalloc(p, need);
    if (ce != cudaSuccess) {
        *p = nullptr;
        return lmc_cuda_fail(e, ce, what);
    }
    *have = need;
    return LM_OK;
}

lm_status grow_host(void **p, size_t *have, size_t need, lmi_err *e)
{
    if (need <= *have && *p) return LM_OK;
    lmi_free(*p);
    *p = lmi_alloc_raw(need, 1);
    *have = *p ? need : 0;
    if (!*p) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    return LM_OK;
}

/* Carves consecutive aligned pieces of sizes sz[0..n) from base. */
void carve(void *base, const size_t *sz, size_t n, void **out)
{
    char *p = static_cast<char *>(base);
    for (size_t i = 0; i < n; i++) {
        out[i] = p;
        p += align_up(sz[i]);
    }
}

size_t total_of(const size_t *sz, size_t n)
{
    size_t t = 0;
    for (size_t i = 0; i < n; i++) t += align_up(sz[i]);
    return t;
}

lm_status ensure(m2_session *S, const struct lm_model *m, const lmi_forward *f, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    const size_t ts = lmc_dtype_size(model_dt(m));
    const size_t D = (size_t)d->d_model, E = (size_t)d->d_inner, H = (size_t)d->n_heads;
    const size_t CD = (size_t)d->conv_dim, ld = (size_t)in_rows(d);
    const int64_t L = f->n_tokens;
    lm_status st;
    if (L > S->cap || !S->scratch) {
        const size_t cap = (size_t)((L + 63) / 64 * 64);
        const size_t sz[] = {cap * 4, cap * D * 4, cap * D * ts, cap * ld * 4, cap * CD * 4,
                             cap * H * 4, cap * E * 4, cap * E * ts, cap * 4, cap * 4};
        const size_t n = sizeof sz / sizeof sz[0];
        S->cap = 0;
        st = grow(&S->scratch, &S->scratch_bytes, total_of(sz, n), S, e, "activation buffers (cudaMalloc)");
        if (st != LM_OK) return st;
        void *p[n];
        carve(S->scratch, sz, n, p);
        S->tok = (int32_t *)p[0];
        S->res = (float *)p[1];
        S->hn = p[2];
        S->zx = (float *)p[3];
        S->u = (float *)p[4];
        S->dl = (float *)p[5];
        S->y = (float *)p[6];
        S->yn = p[7];
        S->scores = (float *)p[8];
        S->idx = (int32_t *)p[9];
        S->cap = (int64_t)cap;
    }
    if (L > 1) {
        const size_t nch = (size_t)((L + kQ - 1) / kQ);
        const size_t need = align_up(nch * H * (size_t)d->head_dim * (size_t)d->d_state * 4) + align_up(nch * H * 4) +
                            nch * (size_t)d->n_groups * kQ * kQ * 4;
        st = grow((void **)&S->chunk, &S->chunk_bytes, need, S, e, "SSD chunk states (cudaMalloc)");
        if (st != LM_OK) return st;
    }
    if (f->deci_budget) {
        const size_t cap = (size_t)L;
        const size_t sz[] = {cap * D * 4, cap * E * 4, cap * CD * 4, cap * H * 4};
        st = grow(&S->deci, &S->deci_bytes, total_of(sz, 4), S, e, "DeciMamba buffers (cudaMalloc)");
        if (st != LM_OK) return st;
        void *p[4];
        carve(S->deci, sz, 4, p);
        S->res2 = (float *)p[0];
        S->zx2 = (float *)p[1];
        S->u2 = (float *)p[2];
        S->dl2 = (float *)p[3];
    }
    if (f->n_out > 0) {
        const size_t sz[] = {(size_t)f->n_out * D * ts, (size_t)f->n_out * (size_t)d->vocab * 4};
        st = grow(&S->out, &S->out_bytes, total_of(sz, 2), S, e, "logits (cudaMalloc)");
        if (st != LM_OK) return st;
        void *p[2];
        carve(S->out, sz, 2, p);
        S->hf = p[0];
        S->logits = (float *)p[1];
    }
    if (f->sink || f->deci_budget) {
        st = grow_host((void **)&S->h_buf, &S->h_buf_bytes, (size_t)L * H * 4, e);
        if (st != LM_OK) return st;
    }
    if (f->deci_budget && (size_t)L > S->h_idx_cap) {
        lmi_free(S->h_idx);
        lmi_free(S->h_scratch);
        lmi_free(S->h_idx32);
        S->h_idx = (int64_t *)lmi_alloc_raw((size_t)L, sizeof(int64_t));
        S->h_scratch = (int64_t *)lmi_alloc_raw((size_t)L, sizeof(int64_t));
        S->h_idx32 = (int32_t *)lmi_alloc_raw((size_t)L, sizeof(int32_t));
        S->h_idx_cap = (S->h_idx && S->h_scratch && S->h_idx32) ? (size_t)L : 0;
        if (!S->h_idx_cap) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    }
    return LM_OK;
}

/* ---- forward ------------------------------------------------------------ */

#define CK(call, what)                                                         \
    do {                                                                       \
        cudaError_t ce_ = (call);                                              \
        if (ce_ != cudaSuccess) return lmc_cuda_fail(e, ce_, (what));          \
    } while (0)

typedef struct bufs {
    float *res, *z, *u, *dl;
    int64_t ldz;
} bufs;

/* DeciMamba at layer l: score, select on the host, gather what the rest
 * of the layer and the next layers read (u, Δ, z, residual); *L shrinks. */
lm_status decimate(m2_session *S, const struct lm_model *m, const lmi_forward *f, int64_t l, int64_t *L, bufs *b,
                   lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    const double budget = f->deci_budget[l];
    const int64_t Lc = *L, R = f->deci_protect > 0 ? f->deci_protect : 0;
    if (budget < 0 || Lc <= R) return LM_OK;
    const int64_t K = lmi_deci_keep_count(Lc, R, budget, f->deci_min_len);
    if (K < 0 || K + R >= Lc) return LM_OK;
    const int H = (int)d->n_heads;
    cudaStream_t st = S->stream;
    deci_score_kernel<<<blocks_for(Lc, 256), 256, 0, st>>>(b->dl, Lc, H, S->scores);
    LMC_LAUNCHED(e, "DeciMamba scores");
    CK(cudaMemcpyAsync(S->h_buf, S->scores, (size_t)Lc * sizeof(float), cudaMemcpyDeviceToHost, st),
       "DeciMamba scores");
    CK(cudaStreamSynchronize(st), "DeciMamba scores");
    lm_status ls = lmi_deci_select(S->h_buf, Lc, R, K, S->h_idx, S->h_scratch, e);
    if (ls != LM_OK) return ls;
    const int64_t n = K + R;
    for (int64_t i = 0; i < n; i++) S->h_idx32[i] = (int32_t)S->h_idx[i];
    CK(cudaMemcpyAsync(S->idx, S->h_idx32, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, st),
       "DeciMamba indices");
    /* gather into the other buffer of each pair (they alternate on a second decimating layer) */
    const int64_t dm = d->d_model, E = d->d_inner, CD = d->conv_dim;
    float *res2 = b->res == S->res ? S->res2 : S->res;
    float *z2 = b->z == S->zx2 ? S->zx : S->zx2;
    float *u2 = b->u == S->u ? S->u2 : S->u;
    float *dl2 = b->dl == S->dl ? S->dl2 : S->dl;
    const int64_t ldz2 = z2 == S->zx ? in_rows(d) : E;
    CK(lmc_gather_rows(b->res, dm * 4, res2, dm * 4, dm * 4, S->idx, n, st), "DeciMamba gather");
    CK(lmc_gather_rows(b->z, b->ldz * 4, z2, ldz2 * 4, E * 4, S->idx, n, st), "DeciMamba gather");
    CK(lmc_gather_rows(b->u, CD * 4, u2, CD * 4, CD * 4, S->idx, n, st), "DeciMamba gather");
    CK(lmc_gather_rows(b->dl, (int64_t)H * 4, dl2, (int64_t)H * 4, (int64_t)H * 4, S->idx, n, st),
       "DeciMamba gather");
    b->res = res2;
    b->z = z2;
    b->ldz = ldz2;
    b->u = u2;
    b->dl = dl2;
    *L = n;
    return LM_OK;
}

/* SSD scan of one layer over L tokens, state h [H][P][N] in/out.
 *
 * Work per layer and token (Q = kQ = 64): state pass H·P·N FMA, outputs
 * H·P·N (C · S_in) + H·Q·P/2 (masked intra-chunk) FMA, C·B G·Q·N FMA; chunk
 * states 4·H·P·N bytes per chunk written, read and rewritten by the carry,
 * read by the output pass.  mamba2-130m shape at 16k tokens (H 24, P 64,
 * N 128, G 1): 7.3 GFMA and ~0.8 GB per layer; measured on an H100 (ncu):
 * state 389 us, C·B 36 us, carry 179 us (at the HBM bound of its 0.4 GB),
 * output 521 us.  The two matrix passes run at 8 TFMA/s of the 30 on CUDA
 * cores: each block loads, synchronises, then computes, with no overlap
 * inside the block (3-5 blocks per SM); tensor cores (3xTF32 for fp32
 * accuracy) are the next step. */
lm_status ssd(m2_session *S, const lmi_dims *d, const m2_layer *G, const float *u, const float *dl, int64_t L,
              const uint8_t *flag, const float *tau, float *h, lmi_err *e)
{
    const int H = (int)d->n_heads, P = (int)d->head_dim, N = (int)d->d_state, Gn = (int)d->n_groups;
    const int E = (int)d->d_inner;
    const int64_t CD = d->conv_dim;
    cudaStream_t st = S->stream;
    if (L == 1) {
        const dim3 grid((unsigned)H, blocks_for(P, 8));
        ssd_step_kernel<<<grid, 256, 0, st>>>(u, dl, H, P, N, Gn, E, G->A, G->D, flag, tau, h, S->y);
        LMC_LAUNCHED(e, "SSD step");
        return LM_OK;
    }
    const int64_t nch = (L + kQ - 1) / kQ;
    const int64_t PN = (int64_t)P * N;
    float *cst = S->chunk;
    char *base = reinterpret_cast<char *>(S->chunk);
    const size_t cst_bytes = align_up((size_t)(nch * H * PN) * 4);
    float *cdec = reinterpret_cast<float *>(base + cst_bytes);
    float *cbT = reinterpret_cast<float *>(base + cst_bytes + align_up((size_t)(nch * H) * 4));
    const unsigned tp = blocks_for(P, kTP), tn = blocks_for(N, kTN);
    ssd_state_kernel<<<dim3((unsigned)nch, (unsigned)H, tp * tn), 256, 0, st>>>(u, CD, dl, L, H, P, N, Gn, E, G->A,
                                                                              flag, tau, cst, cdec);
    LMC_LAUNCHED(e, "SSD chunk states");
    ssd_cb_kernel<<<dim3((unsigned)nch, (unsigned)Gn), 256, 0, st>>>(u, CD, L, N, Gn, E, cbT);
    LMC_LAUNCHED(e, "SSD C.B");
    ssd_carry_kernel<<<blocks_for((int64_t)H * PN, 256), 256, 0, st>>>(cst, cdec, nch, H, PN, h);
    LMC_LAUNCHED(e, "SSD state carry");
    ssd_out_kernel<<<dim3((unsigned)nch, (unsigned)H, tp), 256, 0, st>>>(u, CD, dl, L, H, P, N, Gn, E, G->A, G->D,
                                                                        flag, tau, cst, cbT, S->y, E);
    LMC_LAUNCHED(e, "SSD output");
    return LM_OK;
}

lm_status pipeline(m2_session *S, const struct lm_model *m, const lmi_forward *f, lmi_err *e)
{
    const m2_model *M = static_cast<const m2_model *>(m->bk);
    const lmi_dims *d = &m->dims;
    const lmc_dtype T = M->dt;
    const int64_t D = d->d_model, E = d->d_inner, H = d->n_heads, CD = d->conv_dim, K = d->d_conv;
    const int64_t ld = in_rows(d), G = d->n_groups;
    const bool tf32 = f->allow_tf32;
    const bool clamp = d->dt_limit_lo > 0.0 || isfinite(d->dt_limit_hi);
    cudaStream_t st = S->stream;
    int64_t L = f->n_tokens;
    lm_status ls;
    bufs b = {S->res, S->zx, S->u, S->dl, ld};

    CK(lmc_embed(T, M->embed, D, S->tok, L, S->res, st), "embedding");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const m2_layer *Ly = &M->layers[l];
        float *conv_state = S->conv_state + l * CD * (K - 1);
        float *ssm_state = S->ssm_state + l * E * d->d_state;
        /* after a decimation the layer runs on the gathered residual; zx/u/dl are rebuilt */
        b.z = S->zx;
        b.ldz = ld;
        b.u = S->u;
        b.dl = S->dl;
        CK(lmc_rmsnorm(T, b.res, L, D, Ly->norm_w, (float)d->eps, S->hn, st), "rmsnorm");
        if (Ly->in_b) CK(lmc_fill_rows(LMC_F32, S->zx, ld, L, ld, Ly->in_b, st), "in_proj bias");
        ls = lmc_linear(S->blas, T, Ly->in_w, ld, D, S->hn, D, L, S->zx, LMC_F32, ld, Ly->in_b ? 1.f : 0.f, tf32, e);
        if (ls != LM_OK) return ls;
        CK(lmc_conv(LMC_F32, S->zx + E, ld, L, CD, (int)K, Ly->conv_w, Ly->conv_b, conv_state, S->u, st), "conv1d");
        CK(lmc_conv_state_update(LMC_F32, S->zx + E, ld, L, CD, (int)K, conv_state, st), "conv1d state");
        delta_kernel<<<blocks_for(L * H, 256), 256, 0, st>>>(S->zx, ld, E + CD, L, (int)H, Ly->dt_b, clamp ? 1 : 0,
                                                            (float)d->dt_limit_lo, (float)d->dt_limit_hi, S->dl);
        LMC_LAUNCHED(e, "delta");
        if (f->sink) {
            CK(cudaMemcpyAsync(S->h_buf, S->dl, (size_t)(L * H) * sizeof(float), cudaMemcpyDeviceToHost, st),
               "delta export");
            CK(cudaStreamSynchronize(st), "delta export");
            ls = f->sink(f->sink_ctx, l, S->h_buf, L, H, e);
            if (ls != LM_OK) return ls;
        }
        if (f->deci_budget) {
            ls = decimate(S, m, f, l, &L, &b, e);
            if (ls != LM_OK) return ls;
        }
        const lmi_filter *flt = f->filters ? &f->filters[l] : nullptr;
        const bool filt = flt && flt->global;
        ls = ssd(S, d, Ly, b.u, b.dl, L, filt ? S->flt_flag + l * H : nullptr, filt ? S->flt_tau + l * H : nullptr,
                 ssm_state, e);
        if (ls != LM_OK) return ls;
        const dim3 gg((unsigned)L, (unsigned)G);
        if (T == LMC_BF16)
            gated_norm_kernel<lmc_bf16><<<gg, 256, 0, st>>>(S->y, E, E / G, b.z, b.ldz, Ly->gnorm_w, (float)d->eps,
                                                            static_cast<lmc_bf16 *>(S->yn));
        else
            gated_norm_kernel<float><<<gg, 256, 0, st>>>(S->y, E, E / G, b.z, b.ldz, Ly->gnorm_w, (float)d->eps,
                                                         static_cast<float *>(S->yn));
        LMC_LAUNCHED(e, "gated norm");
        if (Ly->out_b) CK(lmc_add_rows(b.res, L, D, Ly->out_b, st), "out_proj bias");
        ls = lmc_linear(S->blas, T, Ly->out_w, D, E, S->yn, E, L, b.res, LMC_F32, D, 1.f, tf32, e);
        if (ls != LM_OK) return ls;
    }
    if (f->n_out > 0) {
        if (f->n_out > L)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda: %lld logits asked for but only %lld positions remain",
                            (long long)f->n_out, (long long)L);
        CK(lmc_rmsnorm(T, b.res + (L - f->n_out) * D, f->n_out, D, M->norm_f, (float)d->eps, S->hf, st),
           "final norm");
        ls = lmc_linear(S->blas, T, M->lm_head, d->vocab, D, S->hf, D, f->n_out, S->logits, LMC_F32, d->vocab, 0.f,
                        tf32, e);
        if (ls != LM_OK) return ls;
    }
    return LM_OK;
}

/* The one-token step through a CUDA graph (launch overhead dominates a
 * step otherwise).  *done = false: not captured (the capture failed, e.g.
 * invalidated by another thread), the caller runs the kernels directly. */
lm_status run_step_graph(m2_session *S, const struct lm_model *m, const lmi_forward *f, bool *done, lmi_err *e)
{
    *done = false;
    if (!S->step_valid || S->step_n_out != f->n_out || S->step_tf32 != f->allow_tf32) {
        if (S->step_exec) cudaGraphExecDestroy(S->step_exec);
        S->step_exec = nullptr;
        S->step_valid = false;
        if (cudaStreamBeginCapture(S->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
            (void)cudaGetLastError();
            return LM_OK;
        }
        lmi_err ec = {{0}};
        const lm_status ls = pipeline(S, m, f, &ec);
        cudaGraph_t g = nullptr;
        cudaError_t ce = cudaStreamEndCapture(S->stream, &g);
        if (ls == LM_OK && ce == cudaSuccess) {
            ce = cudaGraphInstantiate(&S->step_exec, g, 0);
            if (ce != cudaSuccess) S->step_exec = nullptr;
        }
        if (g) cudaGraphDestroy(g);
        if (ls != LM_OK || ce != cudaSuccess) {
            (void)cudaGetLastError();
            return LM_OK;
        }
        S->step_valid = true;
        S->step_n_out = f->n_out;
        S->step_tf32 = f->allow_tf32;
    }
    CK(cudaGraphLaunch(S->step_exec, S->stream), "graph launch");
    *done = true;
    return LM_OK;
}

lm_status forward(struct lm_session *s, const lmi_forward *f, lmi_err *e)
{
    if (!s || !f || !s->bk)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: forward without a session");
    const struct lm_model *m = s->model;
    if (!f->tokens || f->n_tokens < 1 || f->n_out < 0 || f->n_out > f->n_tokens || (f->n_out > 0 && !f->logits))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: bad forward arguments");
    if (f->n_tokens > INT32_MAX)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: chunk of %lld tokens too long", (long long)f->n_tokens);
    m2_session *S = static_cast<m2_session *>(s->bk);
    const int64_t H = m->dims.n_heads;
    LMC_CUDA(cudaSetDevice(S->device), e, "cudaSetDevice");
    if (f->filters)
        for (int64_t l = 0; l < m->dims.n_layer; l++)
            if (f->filters[l].global && !f->filters[l].tau)
                return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "filter of layer %lld has no thresholds", (long long)l);
    /* Allocate before touching the state: out of memory leaves the session as it was. */
    lm_status ls = ensure(S, m, f, e);
    if (ls != LM_OK) return ls;
    cudaStream_t st = S->stream;
    CK(cudaMemcpyAsync(S->tok, f->tokens, (size_t)f->n_tokens * sizeof(int32_t), cudaMemcpyHostToDevice, st),
       "token upload");
    if (f->filters)
        for (int64_t l = 0; l < m->dims.n_layer; l++) {
            const lmi_filter *F = &f->filters[l];
            if (!F->global) continue;
            CK(cudaMemcpyAsync(S->flt_flag + l * H, F->global, (size_t)H, cudaMemcpyHostToDevice, st), "filter upload");
            CK(cudaMemcpyAsync(S->flt_tau + l * H, F->tau, (size_t)H * sizeof(float), cudaMemcpyHostToDevice, st),
               "filter upload");
        }
    bool filtered = false;
    if (f->filters)
        for (int64_t l = 0; l < m->dims.n_layer; l++) filtered = filtered || f->filters[l].global != nullptr;
    bool done = false;
    if (f->n_tokens == 1 && !f->sink && !f->deci_budget && !filtered) ls = run_step_graph(S, m, f, &done, e);
    if (ls == LM_OK && !done) ls = pipeline(S, m, f, e);
    if (ls != LM_OK) {
        cudaStreamSynchronize(st);
        (void)cudaGetLastError();
        return ls;
    }
    if (f->n_out > 0)
        CK(cudaMemcpyAsync(f->logits, S->logits, (size_t)f->n_out * (size_t)m->dims.vocab * sizeof(float),
                           cudaMemcpyDeviceToHost, st), "logits download");
    CK(cudaStreamSynchronize(st), "forward");
    return LM_OK;
}

} // namespace

extern "C" const lmi_backend_vt lmi_cuda_m2_backend = {
    "cuda",
    model_init,
    model_free,
    session_init,
    session_free,
    session_reset,
    forward,
    state_read,
    state_write,
    nullptr, /* forward_batch: lm_session_decode_batch steps Mamba-2 sessions one by one */
};
