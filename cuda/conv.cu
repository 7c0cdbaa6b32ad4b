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
    const dim3 grid((unsigned)((E + 31) / 32), (unsigned)((L + 8 * kRun - 1) / (8 * kRun)));
    const T *xp = static_cast<const T *>(x);
    T *up = static_cast<T *>(u);
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
