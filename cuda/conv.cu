/*
 * conv.cu - causal depthwise conv1d + bias + SiLU (prefill and decode step)
 * and the conv-state update.
 *
 * PyTorch (transformers' slow path):
 *   hidden_states = self.act(self.conv1d(hidden_states)[..., :seq_len])
 * with the carried state as the left padding (decode:
 *   conv_state = torch.roll(conv_state, shifts=-1, dims=-1); conv_state[:, :, -1] = x
 *   hidden_states = torch.sum(conv_state * self.conv1d.weight[:, 0, :], dim=-1) + bias).
 *
 * Mapping: threadIdx.x = channel (coalesced rows), each thread walks a run
 * of kRun tokens with a register window of the K-1 previous inputs.
 */
#include "common.cuh"
#include "kernels.h"

#include <stdint.h>

namespace {

constexpr int kRun = 16;

template <typename T, int K>
__global__ void __launch_bounds__(256) conv_kernel(const T *x, int64_t ldx, int64_t L, int64_t E,
                                                   const float *w, const float *bias,
                                                   const float *state, T *u)
{
    const int64_t e = (int64_t)blockIdx.x * 32 + threadIdx.x;
    const int64_t t0 = ((int64_t)blockIdx.y * blockDim.y + threadIdx.y) * kRun;
    if (e >= E || t0 >= L) return;
    float wk[K], win[K];
#pragma unroll
    for (int k = 0; k < K; k++) wk[k] = w[e * K + k];
    const float b = bias ? bias[e] : 0.f;
    /* win[k] holds the input at position t - (K-1) + k for the token t about to be produced. */
#pragma unroll
    for (int k = 0; k < K - 1; k++) {
        const int64_t pos = t0 - (K - 1) + k;
        win[k] = pos >= 0 ? lmc_to_f32(x[pos * ldx + e]) : state[e * (K - 1) + (K - 1) + pos];
    }
    const int64_t t1 = min(t0 + kRun, L);
    for (int64_t t = t0; t < t1; t++) {
        win[K - 1] = lmc_to_f32(x[t * ldx + e]);
        float acc = b;
#pragma unroll
        for (int k = 0; k < K; k++) acc += wk[k] * win[k];
        u[t * E + e] = lmc_from_f32<T>(lmc_silu(acc));
#pragma unroll
        for (int k = 0; k < K - 1; k++) win[k] = win[k + 1];
    }
}

/* V = 4 channels per thread (one 8- or 16-byte access per row), tokens
 * in groups of 4 whose loads go out together.  Needs E, ldx multiples of
 * V and x, u aligned to V elements (checked by the caller). */
template <typename T> struct vec_of;
template <> struct vec_of<float> { static constexpr int V = 4; typedef uint4 raw; };
template <> struct vec_of<lmc_bf16> { static constexpr int V = 4; typedef uint2 raw; };

template <typename T, int V>
__device__ __forceinline__ void load_vec(const T *p, float *f)
{
    typedef typename vec_of<T>::raw R;
    const R r = *reinterpret_cast<const R *>(p);
    const T *h = reinterpret_cast<const T *>(&r);
#pragma unroll
    for (int v = 0; v < V; v++) f[v] = lmc_to_f32(h[v]);
}

template <typename T, int V>
__device__ __forceinline__ void store_vec(T *p, const float *f)
{
    typedef typename vec_of<T>::raw R;
    R r;
    T *h = reinterpret_cast<T *>(&r);
#pragma unroll
    for (int v = 0; v < V; v++) h[v] = lmc_from_f32<T>(f[v]);
    *reinterpret_cast<R *>(p) = r;
}

/* Channels e0 .. e0 + V - 1: their K taps and biases (0 without bias). */
template <int K, int V>
__device__ __forceinline__ void load_taps(const float *w, const float *bias, int64_t e0, float (&wk)[K][V],
                                          float (&b)[V])
{
#pragma unroll
    for (int v = 0; v < V; v++) {
#pragma unroll
        for (int k = 0; k < K; k++) wk[k][v] = w[(e0 + v) * K + k];
        b[v] = bias ? bias[e0 + v] : 0.f;
    }
}

template <typename T, int K>
__global__ void __launch_bounds__(256, 3) conv_vec_kernel(const T *x, int64_t ldx, int64_t L, int64_t E,
                                                       const float *w, const float *bias,
                                                       const float *state, T *u)
{
    constexpr int V = vec_of<T>::V;
    const int64_t e0 = ((int64_t)blockIdx.x * 32 + threadIdx.x) * V;
    const int64_t t0 = ((int64_t)blockIdx.y * blockDim.y + threadIdx.y) * kRun;
    if (e0 >= E || t0 >= L) return;
    float wk[K][V], win[K][V], b[V];
    load_taps<K, V>(w, bias, e0, wk, b);
#pragma unroll
    for (int k = 0; k < K - 1; k++) {
        const int64_t pos = t0 - (K - 1) + k;
        if (pos >= 0) {
            load_vec<T, V>(x + pos * ldx + e0, win[k]);
        } else {
#pragma unroll
            for (int v = 0; v < V; v++) win[k][v] = state[(e0 + v) * (K - 1) + (K - 1) + pos];
        }
    }
    const int nt = (int)min((int64_t)kRun, L - t0);
    const T *xp = x + t0 * ldx + e0;
    T *up = u + t0 * E + e0;
    constexpr int G = 4;
    for (int t = 0; t < nt; t += G) {
        float in[G][V];
#pragma unroll
        for (int j = 0; j < G; j++)
            if (t + j < nt) load_vec<T, V>(xp + (int64_t)(t + j) * ldx, in[j]);
#pragma unroll
        for (int j = 0; j < G; j++) {
            if (t + j >= nt) break;
            float o[V];
#pragma unroll
            for (int v = 0; v < V; v++) {
                win[K - 1][v] = in[j][v];
                float acc = b[v];
#pragma unroll
                for (int k = 0; k < K; k++) acc += wk[k][v] * win[k][v];
                o[v] = lmc_silu(acc);
#pragma unroll
                for (int k = 0; k < K - 1; k++) win[k][v] = win[k + 1][v];
            }
            store_vec<T, V>(up + (int64_t)(t + j) * E, o);
        }
    }
}

/* Varlen: x and u hold n sequences back to back (sequence s: rows
 * [cu[s], cu[s+1])), each with its own state (sptr[s] + soff).  Same
 * mapping as the kernels above (a run of kRun tokens per thread, V
 * channels: 1, or 4 with vector accesses); a run that crosses into the
 * next sequence restarts its window from that sequence's state. */
template <typename T, int V>
__device__ __forceinline__ void load_v(const T *p, float *f)
{
    if constexpr (V == 1) f[0] = lmc_to_f32(*p);
    else load_vec<T, V>(p, f);
}

template <typename T, int V>
__device__ __forceinline__ void store_v(T *p, const float *f)
{
    if constexpr (V == 1) *p = lmc_from_f32<T>(f[0]);
    else store_vec<T, V>(p, f);
}

template <typename T, int K, int V>
__global__ void __launch_bounds__(256) conv_varlen_kernel(const T *x, int64_t ldx, int64_t L, const int64_t *cu,
                                                          int64_t n, int64_t E, const float *w, const float *bias,
                                                          float *const *sptr, size_t soff, T *u)
{
    const int64_t e0 = ((int64_t)blockIdx.x * 32 + threadIdx.x) * V;
    const int64_t t0 = ((int64_t)blockIdx.y * blockDim.y + threadIdx.y) * kRun;
    if (e0 >= E || t0 >= L) return;
    float wk[K][V], win[K][V], b[V];
    load_taps<K, V>(w, bias, e0, wk, b);
    int64_t s = lmc_seq_of(cu, n, t0);
    int64_t beg = cu[s], end = cu[s + 1];
    const float *st = sptr[s] + soff;
    /* win[k]: the input at position t - (K-1) + k for the token t about to be produced */
#pragma unroll
    for (int k = 0; k < K - 1; k++) {
        const int64_t pos = t0 - (K - 1) + k;
        if (pos >= beg) {
            load_v<T, V>(x + pos * ldx + e0, win[k]);
        } else {
#pragma unroll
            for (int v = 0; v < V; v++) win[k][v] = st[(e0 + v) * (K - 1) + (K - 1) + (pos - beg)];
        }
    }
    const int64_t t1 = min(t0 + kRun, L);
    for (int64_t t = t0; t < t1; t++) {
        while (t == end) { /* the next sequence: its window is its state */
            s++;
            beg = end;
            end = cu[s + 1];
            st = sptr[s] + soff;
#pragma unroll
            for (int k = 0; k < K - 1; k++)
#pragma unroll
                for (int v = 0; v < V; v++) win[k][v] = st[(e0 + v) * (K - 1) + k];
        }
        load_v<T, V>(x + t * ldx + e0, win[K - 1]);
        float o[V];
#pragma unroll
        for (int v = 0; v < V; v++) {
            float acc = b[v];
#pragma unroll
            for (int k = 0; k < K; k++) acc += wk[k][v] * win[k][v];
            o[v] = lmc_silu(acc);
#pragma unroll
            for (int k = 0; k < K - 1; k++) win[k][v] = win[k + 1][v];
        }
        store_v<T, V>(u + t * E + e0, o);
    }
}

/* Varlen state update: thread per (sequence, channel). */
template <typename T>
__global__ void state_varlen_kernel(const T *x, int64_t ldx, const int64_t *cu, int64_t n, int64_t E, int K,
                                    float *const *sptr, size_t soff)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * E) return;
    const int64_t sq = i / E, e = i - sq * E;
    const int64_t beg = cu[sq], len = cu[sq + 1] - beg;
    float *s = sptr[sq] + soff + e * (K - 1);
    float nv[8];
    for (int j = 0; j < K - 1; j++) {
        const int64_t pos = len - (K - 1) + j;
        nv[j] = pos >= 0 ? lmc_to_f32(x[(beg + pos) * ldx + e]) : s[j + len];
    }
    for (int j = 0; j < K - 1; j++) s[j] = nv[j];
}

template <typename T, int K>
void conv_varlen_launch(bool vec, const T *x, int64_t ldx, int64_t L, const int64_t *cu, int64_t n, int64_t E,
                        const float *w, const float *b, float *const *sptr, size_t soff, T *u, cudaStream_t st)
{
    const dim3 block(32, 8);
    const unsigned gy = (unsigned)((L + 8 * kRun - 1) / (8 * kRun));
    if (vec)
        conv_varlen_kernel<T, K, 4><<<dim3((unsigned)((E / 4 + 31) / 32), gy), block, 0, st>>>(x, ldx, L, cu, n, E, w,
                                                                                             b, sptr, soff, u);
    else
        conv_varlen_kernel<T, K, 1><<<dim3((unsigned)((E + 31) / 32), gy), block, 0, st>>>(x, ldx, L, cu, n, E, w, b,
                                                                                         sptr, soff, u);
}

template <typename T>
cudaError_t conv_varlen_t(const void *x, int64_t ldx, int64_t L, const int64_t *cu, int64_t n, int64_t E, int K,
                          const float *w, const float *b, float *const *sptr, size_t soff, void *u, cudaStream_t st)
{
    const T *xp = static_cast<const T *>(x);
    T *up = static_cast<T *>(u);
    /* as conv_t: vector accesses where aligned and K <= 4 */
    const bool vec = K <= 4 && E % 4 == 0 && ldx % 4 == 0 && ((uintptr_t)x % (4 * sizeof(T))) == 0 &&
                     ((uintptr_t)u % (4 * sizeof(T))) == 0;
    switch (K) {
    case 2: conv_varlen_launch<T, 2>(vec, xp, ldx, L, cu, n, E, w, b, sptr, soff, up, st); break;
    case 3: conv_varlen_launch<T, 3>(vec, xp, ldx, L, cu, n, E, w, b, sptr, soff, up, st); break;
    case 4: conv_varlen_launch<T, 4>(vec, xp, ldx, L, cu, n, E, w, b, sptr, soff, up, st); break;
    case 5: conv_varlen_launch<T, 5>(false, xp, ldx, L, cu, n, E, w, b, sptr, soff, up, st); break;
    case 6: conv_varlen_launch<T, 6>(false, xp, ldx, L, cu, n, E, w, b, sptr, soff, up, st); break;
    case 7: conv_varlen_launch<T, 7>(false, xp, ldx, L, cu, n, E, w, b, sptr, soff, up, st); break;
    case 8: conv_varlen_launch<T, 8>(false, xp, ldx, L, cu, n, E, w, b, sptr, soff, up, st); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

template <typename T>
__global__ void state_kernel(const T *x, int64_t ldx, int64_t L, int64_t E, int K, float *state)
{
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= E) return;
    float nv[8];
    float *s = state + e * (K - 1);
    /* New column j is the input at position L - (K-1) + j (old state when < 0).
     * All reads happen before any write of this thread's own row. */
    for (int j = 0; j < K - 1; j++) {
        const int64_t pos = L - (K - 1) + j;
        nv[j] = pos >= 0 ? lmc_to_f32(x[pos * ldx + e]) : s[j + L];
    }
    for (int j = 0; j < K - 1; j++) s[j] = nv[j];
}

template <typename T>
cudaError_t conv_t(const void *x, int64_t ldx, int64_t L, int64_t E, int K, const float *w,
                   const float *b, const float *state, void *u, cudaStream_t st)
{
    const dim3 block(32, 8);
    const T *xp = static_cast<const T *>(x);
    T *up = static_cast<T *>(u);
    constexpr int V = vec_of<T>::V;
    if (E % V == 0 && ldx % V == 0 && ((uintptr_t)x % (V * sizeof(T))) == 0 &&
        ((uintptr_t)u % (V * sizeof(T))) == 0) {
        const dim3 gv((unsigned)((E / V + 31) / 32), (unsigned)((L + 8 * kRun - 1) / (8 * kRun)));
        switch (K) {
        case 2: conv_vec_kernel<T, 2><<<gv, block, 0, st>>>(xp, ldx, L, E, w, b, state, up); break;
        case 3: conv_vec_kernel<T, 3><<<gv, block, 0, st>>>(xp, ldx, L, E, w, b, state, up); break;
        case 4: conv_vec_kernel<T, 4><<<gv, block, 0, st>>>(xp, ldx, L, E, w, b, state, up); break;
        default: goto scalar; /* larger windows: the register arrays grow with K * V */
        }
        return cudaGetLastError();
    }
scalar:
    const dim3 grid((unsigned)((E + 31) / 32), (unsigned)((L + 8 * kRun - 1) / (8 * kRun)));
    switch (K) {
    case 2: conv_kernel<T, 2><<<grid, block, 0, st>>>(xp, ldx, L, E, w, b, state, up); break;
    case 3: conv_kernel<T, 3><<<grid, block, 0, st>>>(xp, ldx, L, E, w, b, state, up); break;
    case 4: conv_kernel<T, 4><<<grid, block, 0, st>>>(xp, ldx, L, E, w, b, state, up); break;
    case 5: conv_kernel<T, 5><<<grid, block, 0, st>>>(xp, ldx, L, E, w, b, state, up); break;
    case 6: conv_kernel<T, 6><<<grid, block, 0, st>>>(xp, ldx, L, E, w, b, state, up); break;
    case 7: conv_kernel<T, 7><<<grid, block, 0, st>>>(xp, ldx, L, E, w, b, state, up); break;
    case 8: conv_kernel<T, 8><<<grid, block, 0, st>>>(xp, ldx, L, E, w, b, state, up); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

} // namespace

extern "C" cudaError_t lmc_conv(int dtype, const void *x, int64_t ldx, int64_t L, int64_t E, int K,
                                const float *w, const float *b, const float *state, void *u,
                                cudaStream_t st)
{
    if (L < 1 || E < 1 || K < 2 || K > 8) return cudaErrorInvalidValue;
    return dtype == LMC_BF16 ? conv_t<lmc_bf16>(x, ldx, L, E, K, w, b, state, u, st)
                             : conv_t<float>(x, ldx, L, E, K, w, b, state, u, st);
}

extern "C" cudaError_t lmc_conv_state_update(int dtype, const void *x, int64_t ldx, int64_t L,
                                             int64_t E, int K, float *state, cudaStream_t st)
{
    if (L < 1 || E < 1 || K < 2 || K > 8) return cudaErrorInvalidValue;
    const unsigned grid = (unsigned)((E + 127) / 128);
    if (dtype == LMC_BF16)
        state_kernel<lmc_bf16><<<grid, 128, 0, st>>>(static_cast<const lmc_bf16 *>(x), ldx, L, E, K, state);
    else
        state_kernel<float><<<grid, 128, 0, st>>>(static_cast<const float *>(x), ldx, L, E, K, state);
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_conv_varlen(int dtype, const void *x, int64_t ldx, int64_t L, const int64_t *cu, int64_t n,
                                       int64_t E, int K, const float *w, const float *b, float *const *state_ptr,
                                       size_t layer_off, void *u, cudaStream_t st)
{
    if (L < 1 || n < 1 || E < 1 || K < 2 || K > 8 || !cu || !state_ptr) return cudaErrorInvalidValue;
    return dtype == LMC_BF16 ? conv_varlen_t<lmc_bf16>(x, ldx, L, cu, n, E, K, w, b, state_ptr, layer_off, u, st)
                             : conv_varlen_t<float>(x, ldx, L, cu, n, E, K, w, b, state_ptr, layer_off, u, st);
}

extern "C" cudaError_t lmc_conv_state_update_varlen(int dtype, const void *x, int64_t ldx, const int64_t *cu,
                                                    int64_t n, int64_t E, int K, float *const *state_ptr,
                                                    size_t layer_off, cudaStream_t st)
{
    if (n < 1 || E < 1 || K < 2 || K > 8 || !cu || !state_ptr) return cudaErrorInvalidValue;
    const unsigned grid = lmc_blocks(n * E, 128);
    if (dtype == LMC_BF16)
        state_varlen_kernel<lmc_bf16><<<grid, 128, 0, st>>>(static_cast<const lmc_bf16 *>(x), ldx, cu, n, E, K,
                                                            state_ptr, layer_off);
    else
        state_varlen_kernel<float><<<grid, 128, 0, st>>>(static_cast<const float *>(x), ldx, cu, n, E, K, state_ptr,
                                                         layer_off);
    return cudaGetLastError();
}
