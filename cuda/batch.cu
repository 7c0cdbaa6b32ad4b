/*
 * batch.cu - the element-wise kernels of the batched decode step
 * (lm_session_decode_batch; session.cu runs the step): one launch per layer
 * covers every session, each session's recurrent state reached through a
 * device table of state pointers, so no state is copied in or out.
 *
 * PyTorch (transformers' slow path, decode branch), per session:
 *   conv_state = torch.roll(conv_state, shifts=-1, dims=-1); conv_state[:, :, -1] = hidden_states[:, :, 0]
 *   hidden_states = self.act(torch.sum(conv_state * self.conv1d.weight[:, 0, :], dim=-1) + self.conv1d.bias)
 *   ssm_state = discrete_A[:, :, 0, :] * ssm_state + deltaB_u[:, :, 0, :]
 *   y = torch.matmul(ssm_state, C[:, 0, :].unsqueeze(-1)) + D * hidden_states;  y = y * act(gate)
 */
#include "common.cuh"
#include "kernels.h"

namespace {

template <typename T>
__global__ void bat_conv_kernel(const float *x, int64_t ldx, int64_t C, int K, float *const *conv_ptr,
                                size_t layer_off, const float *w, const float *b, T *u, float *uf)
{
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t s = blockIdx.y;
    if (e >= C) return;
    const float xv = x[s * ldx + e];
    float *cs = conv_ptr[s] + layer_off + e * (K - 1);
    const float *we = w + e * K;
    float acc = b ? b[e] : 0.f;
    for (int k = 0; k < K - 1; k++) acc += we[k] * cs[k];
    acc += we[K - 1] * xv;
    for (int k = 0; k < K - 2; k++) cs[k] = cs[k + 1];
    cs[K - 2] = xv;
    const float v = lmc_silu(acc);
    if (u) u[s * C + e] = lmc_from_f32<T>(v);
    uf[s * C + e] = v;
}

template <typename T>
__global__ void bat_scan_kernel(const float *uf, const float *dt, const float *dbc, int64_t R2N, int64_t R,
                                int64_t E, int N, const float *dt_b, const float *A2, const float *D,
                                const float *xz, float *const *ssm_ptr, size_t layer_off, T *y)
{
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t s = blockIdx.y;
    if (e >= E) return;
    const float d = lmc_softplus(dt[s * E + e] + dt_b[e]);
    const float uu = uf[s * E + e];
    const float *Bv = dbc + s * R2N + R, *Cv = Bv + N;
    float *h = ssm_ptr[s] + layer_off + e * (int64_t)N;
    const float *a = A2 + e * (int64_t)N;
    const float du = d * uu;
    float acc = 0.f;
    for (int n = 0; n < N; n++) {
        const float hn = lmc_exp2(d * a[n]) * h[n] + du * Bv[n];
        h[n] = hn;
        acc += hn * Cv[n];
    }
    const float z = xz[s * 2 * E + E + e];
    y[s * E + e] = lmc_from_f32<T>((acc + D[e] * uu) * lmc_silu(z));
}

/* Each session's state array (through the pointer table) to / from its
 * row of backup. */
__global__ void bat_state_copy_kernel(float *const *ptr, int64_t floats, float *backup, int restore)
{
    const int64_t s = blockIdx.y;
    float *st = ptr[s], *bk = backup + s * floats;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < floats; i += (int64_t)gridDim.x * blockDim.x) {
        if (restore) st[i] = bk[i];
        else bk[i] = st[i];
    }
}

} // namespace

extern "C" cudaError_t lmc_state_copy_batch(float *const *ptr, int64_t floats, float *backup, int64_t n, int restore,
                                            cudaStream_t st)
{
    if (n <= 0 || floats <= 0) return cudaSuccess;
    const int64_t blocks = (floats + 255) / 256;
    const dim3 grid((unsigned)(blocks < 256 ? blocks : 256), (unsigned)n);
    bat_state_copy_kernel<<<grid, 256, 0, st>>>(ptr, floats, backup, restore);
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_conv_step_batch(int dtype, const float *x, int64_t ldx, int64_t n, int64_t C, int K,
                                           float *const *conv_ptr, size_t layer_off, const float *w, const float *b,
                                           void *u, float *uf, cudaStream_t st)
{
    const dim3 grid(lmc_blocks(C, 128), (unsigned)n);
    if (dtype == LMC_BF16)
        bat_conv_kernel<lmc_bf16><<<grid, 128, 0, st>>>(x, ldx, C, K, conv_ptr, layer_off, w, b,
                                                         static_cast<lmc_bf16 *>(u), uf);
    else
        bat_conv_kernel<float><<<grid, 128, 0, st>>>(x, ldx, C, K, conv_ptr, layer_off, w, b,
                                                      static_cast<float *>(u), uf);
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_scan_step_batch(int dtype, const float *uf, const float *dt, const float *dbc,
                                           int64_t R2N, int64_t R, int64_t n, int64_t E, int N, const float *dt_b,
                                           const float *A2, const float *D, const float *xz, float *const *ssm_ptr,
                                           size_t layer_off, void *y, cudaStream_t st)
{
    const dim3 grid(lmc_blocks(E, 128), (unsigned)n);
    if (dtype == LMC_BF16)
        bat_scan_kernel<lmc_bf16><<<grid, 128, 0, st>>>(uf, dt, dbc, R2N, R, E, N, dt_b, A2, D, xz, ssm_ptr,
                                                         layer_off, static_cast<lmc_bf16 *>(y));
    else
        bat_scan_kernel<float><<<grid, 128, 0, st>>>(uf, dt, dbc, R2N, R, E, N, dt_b, A2, D, xz, ssm_ptr,
                                                      layer_off, static_cast<float *>(y));
    return cudaGetLastError();
}
