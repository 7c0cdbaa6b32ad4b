/*
 * deci.cu - DeciMamba token scores and gather, and Δ export for the
 * calibration sink.
 *
 * Score (LONGMAMBA.md §5): ||Δ[:, t]||_2 over the d_inner channels, Δ post
 * softplus.  The selection itself (top K among the first L - R, then the
 * last R) runs on the host through lmi_deci_select so that every backend
 * picks the same tokens; only L floats cross the bus.
 */
#include "common.cuh"
#include "kernels.h"

namespace {

__global__ void delta_kernel(const float *dt, int64_t lddt, int64_t L, int64_t E, const float *b,
                             float *delta)
{
    const int64_t n = L * E;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / E, e = i - t * E;
        delta[i] = lmc_softplus(dt[t * lddt + e] + (b ? b[e] : 0.f));
    }
}

__global__ void __launch_bounds__(256) scores_kernel(const float *dt, int64_t lddt, int64_t E,
                                                     const float *b, float *scores)
{
    __shared__ float red[8];
    const float *row = dt + (int64_t)blockIdx.x * lddt;
    float ss = 0.f;
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
        const float d = lmc_softplus(row[e] + (b ? b[e] : 0.f));
        ss += d * d;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.f;
        for (int i = 0; i < 8; i++) s += red[i];
        scores[blockIdx.x] = sqrtf(s);
    }
}

__global__ void gather_kernel(const uint16_t *src, int64_t src_stride, uint16_t *dst,
                              int64_t dst_stride, int64_t n16, const int32_t *idx)
{
    const uint16_t *s = src + (int64_t)idx[blockIdx.x] * src_stride;
    uint16_t *d = dst + (int64_t)blockIdx.x * dst_stride;
    for (int64_t i = threadIdx.x; i < n16; i += blockDim.x) d[i] = s[i];
}

} // namespace

extern "C" cudaError_t lmc_delta(const float *dt, int64_t lddt, int64_t L, int64_t E, const float *b,
                                 float *delta, cudaStream_t st)
{
    if (L < 1 || E < 1) return cudaSuccess;
    int64_t g = (L * E + 255) / 256;
    if (g > 65535) g = 65535;
    delta_kernel<<<(unsigned)g, 256, 0, st>>>(dt, lddt, L, E, b, delta);
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_deci_scores(const float *dt, int64_t lddt, int64_t L, int64_t E,
                                       const float *b, float *scores, cudaStream_t st)
{
    if (L < 1) return cudaSuccess;
    scores_kernel<<<(unsigned)L, 256, 0, st>>>(dt, lddt, E, b, scores);
    return cudaGetLastError();
}

extern "C" cudaError_t lmc_gather_rows(const void *src, int64_t src_stride, void *dst,
                                       int64_t dst_stride, int64_t row_bytes, const int32_t *idx,
                                       int64_t n, cudaStream_t st)
{
    if (n < 1) return cudaSuccess;
    if ((row_bytes | src_stride | dst_stride) & 1) return cudaErrorInvalidValue;
    gather_kernel<<<(unsigned)n, 256, 0, st>>>(static_cast<const uint16_t *>(src), src_stride / 2,
                                                static_cast<uint16_t *>(dst), dst_stride / 2,
                                                row_bytes / 2, idx);
    return cudaGetLastError();
}
