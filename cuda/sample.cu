/*
 * sample.cu - the next token of each row of logits, on the device, by the
 * rule of lib/sample.c (lm_session_decode_sample):
 *   greedy (temperature <= 0 or top_k == 1): argmax, ties to the lowest id;
 *   else candidates in order (logit descending, ties: lower id first),
 *   cut to the top_k first, weights w = exp((l - l_max) / T) in double,
 *   cut to the shortest prefix whose w reaches top_p * sum, then the first
 *   candidate whose cumulative w exceeds u * sum(kept), with
 *   u = (splitmix64(seed ^ position * 0x9E3779B97F4A7C15) >> 11) * 2^-53.
 *
 * One block per row.  Every "first prefix of the order" question is a
 * radix select over a 64-bit key that sorts like the order (high word:
 * the logit's bits made monotone; low word: ~id), eight 8-bit digits from
 * the top, with a histogram of counts or of weights per digit: no sort,
 * eight passes over the row per question.  Sums are in double; their
 * order differs from the CPU's, so a draw that falls within rounding of a
 * boundary may pick the neighbour (greedy never differs).
 */
#include "common.cuh"
#include "kernels.h"

namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ uint64_t sample_key(float l, int64_t i)
{
    uint32_t b = __float_as_uint(l == 0.f ? 0.f : l); /* -0 ties with +0, as on the host */
    b = (b & 0x80000000u) ? ~b : (b | 0x80000000u); /* monotone in l */
    return ((uint64_t)b << 32) | (uint64_t)(0xFFFFFFFFu - (uint32_t)i);
}

__device__ __forceinline__ uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

struct row_ctx {
    const float *l;
    int64_t V;
    double lmax, t;
    uint64_t floor;        /* candidates have key >= floor */
};

__device__ __forceinline__ double weight(const row_ctx &r, int64_t i)
{
    return exp(((double)r.l[i] - r.lmax) / r.t);
}

/* Block sum of a double (all threads get it). */
__device__ double block_sum(double v, double *red)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    double s = 0.0;
    for (int w = 0; w < kThreads / 32; w++) s += red[w];
    __syncthreads();
    return s;
}

/* The key K among candidates (key >= r.floor) such that the mass of the
 * candidates with key > K is <= target < (that mass + mass(K)) when
 * strict, or < target <= ... when !strict; mass = count (by_count) or
 * weight.  Falls back to the lowest candidate when rounding leaves the
 * target beyond the total. */
__device__ uint64_t radix_select(const row_ctx &r, double target, bool by_count, bool strict, double *bins)
{
    uint64_t prefix = 0;
    double above = 0.0; /* mass of candidates with key above the current range */
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += kThreads) bins[b] = 0.0;
        __syncthreads();
        const uint64_t hi_mask = shift == 56 ? 0 : (~0ull << (shift + 8));
        for (int64_t i = threadIdx.x; i < r.V; i += kThreads) {
            const uint64_t k = sample_key(r.l[i], i);
            if (k < r.floor || (k & hi_mask) != prefix) continue;
            atomicAdd(&bins[(k >> shift) & 0xFF], by_count ? 1.0 : weight(r, i));
        }
        __syncthreads();
        int pick = -1, lowest = -1;
        double acc = above;
        for (int d = 255; d >= 0; d--) {
            if (bins[d] == 0.0) continue;
            lowest = d;
            const double next = acc + bins[d];
            if (strict ? next > target : next >= target) {
                pick = d;
                break;
            }
            acc = next;
        }
        if (pick < 0) { /* rounding: take the last candidate of the range */
            pick = lowest < 0 ? 0 : lowest;
            acc = above;
            for (int d = 255; d > pick; d--) acc += bins[d];
        }
        above = acc;
        prefix |= (uint64_t)pick << shift;
        __syncthreads();
    }
    return prefix;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(const float *logits, int64_t ld, int64_t V,
                                                          const lmc_sample_param *params, int32_t *next)
{
    __shared__ double bins[256];
    __shared__ double red[kThreads / 32];
    __shared__ float s_max[kThreads / 32];
    __shared__ int64_t s_arg[kThreads / 32];
    const int64_t row = blockIdx.x;
    const float *l = logits + row * ld;
    const lmc_sample_param p = params[row];

    /* argmax (ties: lowest id) and the non-finite check */
    float best = -INFINITY;
    int64_t arg = -1;
    int bad = 0;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
        const float v = l[i];
        if (!isfinite(v)) bad = 1;
        else if (arg < 0 || v > best) {
            best = v;
            arg = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xFFFFFFFFu, best, o);
        const int64_t oa = __shfl_xor_sync(0xFFFFFFFFu, arg, o);
        if (oa >= 0 && (arg < 0 || ob > best || (ob == best && oa < arg))) {
            best = ob;
            arg = oa;
        }
    }
    if ((threadIdx.x & 31) == 0) {
        s_max[threadIdx.x >> 5] = best;
        s_arg[threadIdx.x >> 5] = arg;
    }
    if (__syncthreads_or(bad)) { /* a non-finite logit: no token (the caller reports it) */
        if (threadIdx.x == 0) next[row] = -1;
        return;
    }
    best = s_max[0];
    arg = s_arg[0];
    for (int w = 1; w < kThreads / 32; w++)
        if (s_arg[w] >= 0 && (arg < 0 || s_max[w] > best || (s_max[w] == best && s_arg[w] < arg))) {
            best = s_max[w];
            arg = s_arg[w];
        }
    if (p.temperature <= 0.f || p.top_k == 1 || V == 1) {
        if (threadIdx.x == 0) next[row] = (int32_t)arg;
        return;
    }

    row_ctx r{l, V, (double)best, (double)p.temperature, 0};
    if (p.top_k > 0 && p.top_k < V) /* the k-th key: k - 1 candidates above it */
        r.floor = radix_select(r, (double)(p.top_k - 1), true, true, bins);
    double mass = 0.0;
    for (int64_t i = threadIdx.x; i < V; i += kThreads)
        if (sample_key(l[i], i) >= r.floor) mass += weight(r, i);
    mass = block_sum(mass, red);
    if (p.top_p > 0.f && p.top_p < 1.f) {
        r.floor = radix_select(r, (double)p.top_p * mass, false, false, bins);
        mass = 0.0;
        for (int64_t i = threadIdx.x; i < V; i += kThreads)
            if (sample_key(l[i], i) >= r.floor) mass += weight(r, i);
        mass = block_sum(mass, red);
    }
    const uint64_t bits = splitmix64(p.seed ^ ((uint64_t)p.position * 0x9E3779B97F4A7C15ull));
    const double u = (double)(bits >> 11) * 0x1p-53;
    const uint64_t key = radix_select(r, u * mass, false, true, bins);
    if (threadIdx.x == 0) next[row] = (int32_t)(0xFFFFFFFFu - (uint32_t)(key & 0xFFFFFFFFu));
}

} // namespace

extern "C" cudaError_t lmc_sample_rows(const float *logits, int64_t ld, int64_t V, int64_t n,
                                       const lmc_sample_param *params, int32_t *next, cudaStream_t st)
{
    if (n <= 0) return cudaSuccess;
    sample_kernel<<<(unsigned)n, kThreads, 0, st>>>(logits, ld, V, params, next);
    return cudaGetLastError();
}
