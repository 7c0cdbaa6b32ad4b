/*
 * cpu/vmath.h - vectorisable single-precision exp, log1p, softplus and
 * SiLU for the CPU kernels.
 *
 * libm's expf/log1pf are calls, which stop GCC from vectorising the loops
 * that hold them; these are branch-free (selects only) and inline, so a
 * loop over channels or states becomes SIMD code.  No -ffast-math: every
 * operation is plain IEEE fp32, and the accuracy is tested against double
 * precision in test/test_cpu.c (exp within 2 ulp over the normal range).
 */
#ifndef LMI_CPU_VMATH_H
#define LMI_CPU_VMATH_H

#include <stdint.h>
#include <string.h>

#define LMI_INLINE static inline __attribute__((always_inline))

/* Kernels carry clones for AVX2+FMA and AVX-512 next to the baseline
 * build, picked at load time (GNU ifunc); elsewhere the baseline only.
 * Not under ThreadSanitizer: its instrumented ifunc resolvers run before
 * the runtime is up and crash at relocation.  -DLMI_NO_CLONES opts out. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && \
    defined(__linux__) && !defined(LMI_NO_CLONES) && !defined(__SANITIZE_THREAD__)
#define LMI_CPU_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define LMI_CPU_CLONES
#endif

/* Whether this CPU (and OS) runs AVX with F16C, and with AVX2 + FMA too.
 * __builtin_cpu_supports also checks that the OS saves the YMM state and
 * reads the compiler runtime's own record, so asking is cheap and the
 * library keeps no state of its own.  clang's builtin does not know
 * "f16c": there the bit is read from CPUID (leaf 1, ECX bit 29). */
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
static inline int lmi_cpu_f16c(void)
{
    __builtin_cpu_init();
#if defined(__clang__)
    unsigned a, b, c, d;
    return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
#else
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
#endif
}
static inline int lmi_cpu_avx2_fma_f16c(void)
{
    return lmi_cpu_f16c() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
/* AVX-512F too (the runtime's check includes the OS saving ZMM state). */
static inline int lmi_cpu_avx512f(void)
{
    return lmi_cpu_avx2_fma_f16c() && __builtin_cpu_supports("avx512f");
}
#endif

/* "#pragma omp simd" only where OpenMP is on (no unknown-pragma noise). */
#ifdef _OPENMP
#define LMI_PRAGMA_(x) _Pragma(#x)
#define LMI_SIMD _Pragma("omp simd")
#define LMI_SIMD_SUM(v) LMI_PRAGMA_(omp simd reduction(+ : v))
#else
#define LMI_SIMD
#define LMI_SIMD_SUM(v)
#endif

LMI_INLINE float lmi_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

LMI_INLINE uint32_t lmi_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* e^r for |r| <= ln2/2: degree-7 Taylor polynomial (truncation < 1e-8
 * relative), Horner form. */
LMI_INLINE float lmi_exp_poly(float r)
{
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    return p * r + 1.0f;
}

/* x = k*ln2 + r with k = round(x / ln2) (the shifter trick) and ln2 split
 * in hi + lo (Cody-Waite; k*ln2_hi is exact for |k| < 512). */
#define LMI_EXP_REDUCE(x, k, r)                                              \
    do {                                                                     \
        const float shifter_ = 0x1.8p23f; /* adding it rounds to integer */  \
        float kf_ = (x) * 0x1.715476p+0f + shifter_;                         \
        (k) = (int32_t)(lmi_f32_bits(kf_) - lmi_f32_bits(shifter_));         \
        kf_ -= shifter_;                                                     \
        (r) = (x) - kf_ * 0x1.62e400p-1f;                                    \
        (r) = (r) - kf_ * 0x1.7f7d1cp-20f;                                   \
    } while (0)

/* e^x.  Results below FLT_MIN (x < -87.3365) flush to +0, x > 88.7228
 * gives +inf, NaN stays NaN (it flows through the polynomial).  Out-of-
 * range lanes compute garbage that the two final selects replace, which
 * keeps the body free of clamps (they vectorise badly under IEEE rules).
 * 2^k is applied in two halves so that k = 128 (x in [88.38, 88.72]) and
 * k = -126 both stay in the normal range. */
LMI_INLINE float lmi_expf(float x)
{
    int32_t k;
    float r;
    LMI_EXP_REDUCE(x, k, r);
    float p = lmi_exp_poly(r);
    int32_t k1 = k >> 1, k2 = k - k1;
    float res = p * lmi_f32_from_bits((uint32_t)(k1 + 127) << 23) *
                lmi_f32_from_bits((uint32_t)(k2 + 127) << 23);
    res = x < -87.336548f ? 0.0f : res;
    return x > 88.722839f ? __builtin_inff() : res;
}

/* e^x with one scale, for the decay exp(Δ·A) (Δ >= 0, A < 0, so x <= 0):
 * exact as lmi_expf for x <= 88.37 (k <= 127); above, +inf (a little
 * early: the true overflow is at 88.72).  x < -87.3365 flushes to +0, NaN
 * stays NaN. */
LMI_INLINE float lmi_expf_nonpos(float x)
{
    int32_t k;
    float r;
    LMI_EXP_REDUCE(x, k, r);
    float res = lmi_exp_poly(r) * lmi_f32_from_bits((uint32_t)(k + 127) << 23);
    res = x < -87.336548f ? 0.0f : res;
    return x > 88.37f ? __builtin_inff() : res;
}

/* log(1 + w) for w in [0, 1] (the range softplus needs), fdlibm's scheme:
 * 1 + w = 2^k (1 + f) with 1 + f in [0.707, 1.414]; for k = 0, f = w
 * exactly; for k = 1, f = (1 + w)/2 - 1 and c = (w - (m - 1)) / m puts
 * back the rounding of m = 1 + w.  With s = f / (2 + f):
 *   log(1 + f) = 2 atanh(s) = f - hfsq + s (hfsq + R),  hfsq = f^2 / 2,
 *   R = 2 s^2/3 + 2 s^4/5 + 2 s^6/7 + 2 s^8/9  (|s| < 0.172, rest < 1e-9). */
LMI_INLINE float lmi_log1pf_01(float w)
{
    float m = 1.0f + w;
    int32_t big = m > 1.41421356f;
    float f = big ? m * 0.5f - 1.0f : w;
    float c = big ? (w - (m - 1.0f)) / m : 0.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float R = 2.0f / 9.0f;
    R = R * z + 2.0f / 7.0f;
    R = R * z + 2.0f / 5.0f;
    R = R * z + 2.0f / 3.0f;
    R = R * z;
    float hfsq = 0.5f * f * f;
    float kln2_hi = big ? 0x1.62e400p-1f : 0.0f;
    float kln2_lo = big ? 0x1.7f7d1cp-20f : 0.0f;
    return kln2_hi - ((hfsq - (s * (hfsq + R) + (kln2_lo + c))) - f);
}

/* F.softplus(v) with threshold 20: v > 20 ? v : log1p(exp(v)),
 * evaluated as max(v, 0) + log1p(exp(-|v|)) so that exp never overflows. */
LMI_INLINE float lmi_softplusf(float v)
{
    float av = v < 0.0f ? -v : v;
    float pos = v > 0.0f ? v : 0.0f;
    float sp = pos + lmi_log1pf_01(lmi_expf(-av));
    return v > 20.0f ? v : sp;
}

/* F.silu(z) = z * sigmoid(z) */
LMI_INLINE float lmi_siluf(float z)
{
    return z / (1.0f + lmi_expf(-z));
}

#endif /* LMI_CPU_VMATH_H */
