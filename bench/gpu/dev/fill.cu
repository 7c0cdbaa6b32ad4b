/*
 * fill.cu - random benchmark inputs on the device (bench/gpu, test/gpu only).
 */
#include "common.cuh"
#include "dev.h"

namespace {

template <typename T>
__global__ void fill_uniform_kernel(T *dst, size_t n, float scale, float offset, uint64_t seed)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        const float u = (float)(z >> 40) * (1.f / 16777216.f) * 2.f - 1.f;
        dst[i] = lmc_from_f32<T>(offset + scale * u);
    }
}

unsigned grid_for(size_t n)
{
    size_t g = (n + 255) / 256;
    return (unsigned)(g > 65535 ? 65535 : (g ? g : 1));
}

} // namespace

extern "C" cudaError_t lmc_dev_fill_uniform(int dtype, void *dst, size_t n, float scale, float offset,
                                        uint64_t seed, cudaStream_t st)
{
    if (n == 0) return cudaSuccess;
    if (dtype == LMC_BF16)
        fill_uniform_kernel<lmc_bf16><<<grid_for(n), 256, 0, st>>>(static_cast<lmc_bf16 *>(dst), n, scale,
                                                                   offset, seed);
    else
        fill_uniform_kernel<float><<<grid_for(n), 256, 0, st>>>(static_cast<float *>(dst), n, scale, offset,
                                                                seed);
    return cudaGetLastError();
}
