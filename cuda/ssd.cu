/*
 * ssd.cu - the Mamba-2 kernels (docs MAMBA.md §2): Δ, the SSD scan in
 * chunks, the one-token recurrence (also batched over sessions), the gated
 * RMSNorm and the DeciMamba score; C entry points in kernels.h.
 *
 * The SSD scan runs in chunks of kQ tokens, in four kernels: the state
 * each chunk contributes from zero (ssd_state_kernel), C.B of each chunk
 * (ssd_cb_kernel), the sequential carry of the states across chunks
 * starting from the session's state (ssd_carry_kernel, which also leaves
 * the final state), and the outputs from the chunk's start state plus the
 * masked intra-chunk products (ssd_out_kernel).  Packed sequences
 * (lmc_ssd_scan_varlen) run the same kernels over a table of chunk
 * starts (chunks never cross sequences; a NULL table is the single
 * sequence's uniform chunks) and carry per sequence.  The cumulative decay
 * inside a chunk is summed in double so that exp(cs_t - cs_s) keeps fp32
 * accuracy for long chunks of strong decay.
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
 * accuracy) are the next step.
 */
#include "common.cuh"
#include "kernels.h"

#include <math.h>

namespace {

constexpr int kQ = 64;   /* SSD chunk length */
constexpr int kTP = 64;  /* head_dim tile of the SSD kernels */
constexpr int kTN = 64;  /* state tile of ssd_state_kernel */
constexpr int kNT = 32;  /* state slice of ssd_out_kernel */
constexpr int kQP = kQ + 4; /* k-major rows, padded: conflict-free transposing stores, float4-aligned */
static_assert(kQ == kTP && kQ == kTN && kQ == 64, "the SSD kernels tile 64 x 64 with 256 threads");
static_assert(kQ * kTP <= 2 * kNT * kQP, "ssd_out_kernel's x tile reuses the C^T / S^T slices");
static_assert(kNT == 32, "load_kmajor covers 32 k in groups of 8");

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

__global__ void delta_scale_kernel(float *dl, int64_t L, int H, const uint8_t *flag, const float *tau, float s)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= L * H) return;
    const int h = (int)(i % H);
    const float d = dl[i];
    /* the mask on the unscaled Δ, then the scale (METHODS.md §6) */
    dl[i] = (flag && flag[h] && !(d > tau[h])) ? 0.f : d * s;
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

/* Tokens [t0, t0 + Tc) of chunk c: chunks of kQ over one sequence of T
 * tokens (ct0 NULL, the single-sequence case), or chunk c of packed
 * sequences from its table of starts ([n_chunks + 1]). */
__device__ __forceinline__ void chunk_span(const int64_t *ct0, int c, int64_t T, int64_t *t0, int *Tc)
{
    if (!ct0) {
        *t0 = (int64_t)c * kQ;
        *Tc = (int)min((int64_t)kQ, T - *t0);
    } else {
        *t0 = ct0[c];
        *Tc = (int)(ct0[c + 1] - *t0);
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
                                                        float *__restrict__ cdec, const int64_t *__restrict__ ct0)
{
    __shared__ double cs[kQ];
    __shared__ float dlt[kQ], w[kQ];
    __shared__ __align__(16) float xs[kQ][kTP];
    __shared__ __align__(16) float bs[kQ][kTN];
    const int c = blockIdx.x, h = blockIdx.y;
    const int ntn = (N + kTN - 1) / kTN;
    const int p0 = (int)(blockIdx.z / ntn) * kTP, n0 = (int)(blockIdx.z % ntn) * kTN;
    int64_t t0;
    int Tc;
    chunk_span(ct0, c, T, &t0, &Tc);
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
                                                     int G, int E, float *__restrict__ cbT,
                                                     const int64_t *__restrict__ ct0)
{
    __shared__ __align__(16) float CsT[kNT][kQP];
    __shared__ __align__(16) float BsT[kNT][kQP];
    const int c = blockIdx.x, g = blockIdx.y;
    int64_t t0;
    int Tc;
    chunk_span(ct0, c, T, &t0, &Tc);
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

/* The same for packed sequences: grid y is the sequence, whose chunks are
 * [cuc[s], cuc[s+1]) and whose state is hptr[s] + hoff. */
__global__ void ssd_carry_varlen_kernel(float *__restrict__ cst, const float *__restrict__ cdec,
                                        const int64_t *__restrict__ cuc, int H, int64_t PN, float *const *hptr,
                                        size_t hoff)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t HPN = (int64_t)H * PN;
    if (i >= HPN) return;
    const int64_t sq = blockIdx.y, c0 = cuc[sq], c1 = cuc[sq + 1];
    const int h = (int)(i / PN);
    float *hs = hptr[sq] + hoff + i;
    float s = *hs;
    float next = c0 < c1 ? cst[c0 * HPN + i] : 0.f;
    for (int64_t c = c0; c < c1; c++) {
        const float loc = next;
        if (c + 1 < c1) next = cst[(c + 1) * HPN + i]; /* prefetch: independent of s */
        cst[c * HPN + i] = s;
        s = expf(cdec[c * H + h]) * s + loc;
    }
    *hs = s;
}

/* Per (chunk, head, tile of head_dim): y_t = exp(cs_t) C_t . S_in
 *   + sum_{s<=t} exp(cs_t - cs_s) Δ_s (C_t . B_s) x_s + D x_t. */
__global__ void __launch_bounds__(256, 3) ssd_out_kernel(const float *__restrict__ u, int64_t ldu,
                                                      const float *__restrict__ dl, int64_t T, int H, int P, int N,
                                                      int G, int E, const float *__restrict__ A,
                                                      const float *__restrict__ Dv, const uint8_t *__restrict__ flag,
                                                      const float *__restrict__ tau, const float *__restrict__ cst,
                                                      const float *__restrict__ cbT, float *__restrict__ y, int64_t ldy,
                                                      const int64_t *__restrict__ ct0)
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
    int64_t t0;
    int Tc;
    chunk_span(ct0, c, T, &t0, &Tc);
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

/* One token (per session of a batch: grid z): per head h and row p (one warp), the recurrence of
 * mamba2_selective_state_update: S = S exp(Δ A) + Δ x B; y = S . C + D x. */
__global__ void __launch_bounds__(256) ssd_step_kernel(const float *__restrict__ u, int64_t ldu,
                                                       const float *__restrict__ dl, int64_t ldd, int H, int P,
                                                       int N, int G, int E, const float *__restrict__ A,
                                                       const float *__restrict__ Dv,
                                                       const uint8_t *__restrict__ flag,
                                                       const float *__restrict__ tau, float *hs,
                                                       float *const *hptr, size_t hoff, float *__restrict__ y,
                                                       int64_t ldy)
{
    const int h = blockIdx.x;
    const int p = blockIdx.y * 8 + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (p >= P) return;
    const int64_t sess = blockIdx.z; /* batched decode: one session per z */
    u += sess * ldu;
    dl += sess * ldd;
    y += sess * ldy;
    if (hptr) hs = hptr[sess] + hoff;
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

} // namespace

extern "C" cudaError_t lmc_ssd_delta(const float *zx, int64_t ld, int64_t off, int64_t L, int H, const float *b,
                                     int clamp, float lo, float hi, float *dl, cudaStream_t st)
{
    delta_kernel<<<lmc_blocks(L * H, 256), 256, 0, st>>>(zx, ld, off, L, H, b, clamp, lo, hi, dl);
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_ssd_delta_scale(float *dl, int64_t L, int H, const uint8_t *flag, const float *tau,
                                           float s, cudaStream_t st)
{
    delta_scale_kernel<<<lmc_blocks(L * H, 256), 256, 0, st>>>(dl, L, H, flag, tau, s);
    return cudaGetLastError();
}

extern "C" size_t lmc_ssd_scratch_bytes(int64_t L, int H, int P, int N, int G)
{
    const size_t nch = (size_t)((L + kQ - 1) / kQ);
    return lmc_align(nch * H * (size_t)P * N * 4) + lmc_align(nch * H * 4) + nch * (size_t)G * kQ * kQ * 4;
}

extern "C" cudaError_t lmc_ssd_chunk_states(const float *u, int64_t ldu, const float *dl, int64_t L, int H, int P,
                                            int N, int G, int E, const float *A, const uint8_t *flag,
                                            const float *tau, float *cst, float *cdec, cudaStream_t st)
{
    const int64_t nch = (L + kQ - 1) / kQ;
    const unsigned tp = lmc_blocks(P, kTP), tn = lmc_blocks(N, kTN);
    ssd_state_kernel<<<dim3((unsigned)nch, (unsigned)H, tp * tn), 256, 0, st>>>(u, ldu, dl, L, H, P, N, G, E, A,
                                                                              flag, tau, cst, cdec, nullptr);
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_ssd_cb(const float *u, int64_t ldu, int64_t L, int N, int G, int E, float *cbT,
                                  cudaStream_t st)
{
    const int64_t nch = (L + kQ - 1) / kQ;
    ssd_cb_kernel<<<dim3((unsigned)nch, (unsigned)G), 256, 0, st>>>(u, ldu, L, N, G, E, cbT, nullptr);
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_ssd_carry(float *cst, const float *cdec, int64_t nch, int H, int64_t PN, float *h,
                                     cudaStream_t st)
{
    ssd_carry_kernel<<<lmc_blocks((int64_t)H * PN, 256), 256, 0, st>>>(cst, cdec, nch, H, PN, h);
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_ssd_out(const float *u, int64_t ldu, const float *dl, int64_t L, int H, int P, int N,
                                   int G, int E, const float *A, const float *D, const uint8_t *flag,
                                   const float *tau, const float *cst, const float *cbT, float *y, int64_t ldy,
                                   cudaStream_t st)
{
    const int64_t nch = (L + kQ - 1) / kQ;
    ssd_out_kernel<<<dim3((unsigned)nch, (unsigned)H, lmc_blocks(P, kTP)), 256, 0, st>>>(
        u, ldu, dl, L, H, P, N, G, E, A, D, flag, tau, cst, cbT, y, ldy, nullptr);
    return cudaGetLastError();
}

/* The scratch of a scan over nch chunks: chunk states [nch][H][P N],
 * chunk decays [nch][H], then C·B (lmc_ssd_cb). */
static void carve_scratch(const lmc_ssd_args *a, int64_t nch, int64_t PN, float **cst, float **cdec, float **cbT)
{
    char *base = static_cast<char *>(a->scratch);
    const size_t cst_bytes = lmc_align((size_t)(nch * a->H * PN) * 4);
    *cst = reinterpret_cast<float *>(base);
    *cdec = reinterpret_cast<float *>(base + cst_bytes);
    *cbT = reinterpret_cast<float *>(base + cst_bytes + lmc_align((size_t)(nch * a->H) * 4));
}

extern "C" cudaError_t lmc_ssd_scan(const lmc_ssd_args *a, cudaStream_t st)
{
    const int64_t nch = (a->L + kQ - 1) / kQ;
    const int64_t PN = (int64_t)a->P * a->N;
    float *cst, *cdec, *cbT;
    carve_scratch(a, nch, PN, &cst, &cdec, &cbT);
    cudaError_t ce = lmc_ssd_chunk_states(a->u, a->ldu, a->dl, a->L, a->H, a->P, a->N, a->G, a->E, a->A, a->flag,
                                          a->tau, cst, cdec, st);
    if (ce == cudaSuccess) ce = lmc_ssd_cb(a->u, a->ldu, a->L, a->N, a->G, a->E, cbT, st);
    if (ce == cudaSuccess) ce = lmc_ssd_carry(cst, cdec, nch, a->H, PN, a->h, st);
    if (ce == cudaSuccess)
        ce = lmc_ssd_out(a->u, a->ldu, a->dl, a->L, a->H, a->P, a->N, a->G, a->E, a->A, a->D, a->flag, a->tau, cst,
                         cbT, a->y, a->ldy, st);
    return ce;
}

extern "C" cudaError_t lmc_ssd_scan_varlen(const lmc_ssd_args *a, const lmc_ssd_seqs *v, cudaStream_t st)
{
    if (!a || !v || v->n < 1 || v->n > 65535 || v->n_chunks < v->n || !v->chunk_t0 || !v->cu_chunk || !v->h_ptr)
        return cudaErrorInvalidValue;
    const int64_t nch = v->n_chunks;
    const int64_t PN = (int64_t)a->P * a->N;
    float *cst, *cdec, *cbT;
    carve_scratch(a, nch, PN, &cst, &cdec, &cbT);
    const unsigned tp = lmc_blocks(a->P, kTP), tn = lmc_blocks(a->N, kTN);
    ssd_state_kernel<<<dim3((unsigned)nch, (unsigned)a->H, tp * tn), 256, 0, st>>>(
        a->u, a->ldu, a->dl, a->L, a->H, a->P, a->N, a->G, a->E, a->A, a->flag, a->tau, cst, cdec, v->chunk_t0);
    cudaError_t ce = cudaGetLastError();
    if (ce != cudaSuccess) return ce;
    ssd_cb_kernel<<<dim3((unsigned)nch, (unsigned)a->G), 256, 0, st>>>(a->u, a->ldu, a->L, a->N, a->G, a->E, cbT,
                                                                       v->chunk_t0);
    if ((ce = cudaGetLastError()) != cudaSuccess) return ce;
    ssd_carry_varlen_kernel<<<dim3(lmc_blocks((int64_t)a->H * PN, 256), (unsigned)v->n), 256, 0, st>>>(
        cst, cdec, v->cu_chunk, a->H, PN, v->h_ptr, v->h_off);
    if ((ce = cudaGetLastError()) != cudaSuccess) return ce;
    ssd_out_kernel<<<dim3((unsigned)nch, (unsigned)a->H, lmc_blocks(a->P, kTP)), 256, 0, st>>>(
        a->u, a->ldu, a->dl, a->L, a->H, a->P, a->N, a->G, a->E, a->A, a->D, a->flag, a->tau, cst, cbT, a->y, a->ldy,
        v->chunk_t0);
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_ssd_step(const float *u, int64_t ldu, const float *dl, int64_t ldd, int64_t n, int H,
                                    int P, int N, int G, int E, const float *A, const float *D, const uint8_t *flag,
                                    const float *tau, float *h, float *const *h_ptr, size_t h_off, float *y,
                                    int64_t ldy, cudaStream_t st)
{
    const dim3 grid((unsigned)H, lmc_blocks(P, 8), (unsigned)n);
    ssd_step_kernel<<<grid, 256, 0, st>>>(u, ldu, dl, ldd, H, P, N, G, E, A, D, flag, tau, h, h_ptr, h_off, y, ldy);
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_gated_norm(int dtype, const float *y, int64_t rows, int64_t E, int G, const float *z,
                                      int64_t ldz, const float *w, float eps, void *out, cudaStream_t st)
{
    const dim3 gg((unsigned)rows, (unsigned)G);
    if (dtype == LMC_BF16)
        gated_norm_kernel<lmc_bf16><<<gg, 256, 0, st>>>(y, E, E / G, z, ldz, w, eps, static_cast<lmc_bf16 *>(out));
    else
        gated_norm_kernel<float><<<gg, 256, 0, st>>>(y, E, E / G, z, ldz, w, eps, static_cast<float *>(out));
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_deci_scores_heads(const float *dl, int64_t L, int H, float *scores, cudaStream_t st)
{
    deci_score_kernel<<<lmc_blocks(L, 256), 256, 0, st>>>(dl, L, H, scores);
    return cudaGetLastError();
}
