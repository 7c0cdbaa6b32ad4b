/*
 * weight.c - weights in their stored type (lmi_weight, internal.h):
 * row conversion to fp32 (F16C where the CPU has it), the Q8_0 block
 * format (quantiser and dequantiser), and the one converter through
 * which other code (the CUDA upload) reads host weights.  Built into the
 * library and into the CUDA module.
 */
#include "internal.h"
#include "cpu/vmath.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LMI_HAVE_F16C_PATH 1

__attribute__((target("avx,f16c"))) static void f16_row_f16c(const uint16_t *src, float *dst,
                                                               int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) dst[i] = lmi_f16_to_f32(src[i]);
}

#endif

void lmi_f16_row_to_f32(const uint16_t *src, float *dst, int64_t n)
{
#ifdef LMI_HAVE_F16C_PATH
    if (lmi_cpu_f16c()) {
        f16_row_f16c(src, dst, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) dst[i] = lmi_f16_to_f32(src[i]);
}

void lmi_bf16_row_to_f32(const uint16_t *src, float *dst, int64_t n)
{
    /* bf16 is the top half of an fp32: a shift (vectorises) */
    uint32_t *d = (uint32_t *)(void *)dst;
    for (int64_t i = 0; i < n; i++) d[i] = (uint32_t)src[i] << 16;
}

/* Round to nearest integer, ties to even, whatever the caller's floating
 * point environment (rint would follow fesetround).  |v| < 2^31. */
static double round_even(double v)
{
    double f = floor(v);
    const double frac = v - f; /* exact */
    if (frac > 0.5 || (frac == 0.5 && ((int64_t)f & 1))) f += 1.0;
    return f;
}

/* binary16 bits of a >= 0 (finite or +inf), round to nearest even; a
 * result beyond 65504 is +inf, or 65504 when saturate.  From a double, so
 * a quotient computed in double rounds as the exact quotient would (a
 * tie is exact in double; anything else is farther from one than double
 * rounding can move it). */
static uint16_t f16_bits_of(double a, bool saturate)
{
    if (a >= 65520.0) return saturate ? 0x7BFFu : 0x7C00u; /* 65504 + half an ulp */
    if (a < 0x1p-14) return (uint16_t)round_even(a * 0x1p24); /* subnormal; 1024 = min normal */
    uint64_t bits;
    memcpy(&bits, &a, 8);
    int E = (int)((bits >> 52) & 0x7FF) - 1023; /* a in [2^E, 2^(E+1)), E in [-14, 15] */
    const uint64_t sb = (uint64_t)(1023 + 10 - E) << 52;
    double scale;
    memcpy(&scale, &sb, 8);
    double m = round_even(a * scale); /* exact scaling; in [1024, 2048] */
    if (m == 2048.0) {
        m = 1024.0;
        E++;
    }
    if (E > 15) return saturate ? 0x7BFFu : 0x7C00u;
    return (uint16_t)(((uint32_t)(E + 15) << 10) | ((uint32_t)m - 1024u));
}

uint16_t lmi_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((u >> 13) & 0x3FFu));
    return (uint16_t)(sign | f16_bits_of(fabs((double)f), false));
}

/* ---- Q8_0 ------------------------------------------------------------------ */

LMI_CPU_CLONES
void lmi_q8_0_row_to_f32(const void *blocks, float *dst, int64_t n_blocks)
{
    const uint8_t *p = blocks;
    for (int64_t b = 0; b < n_blocks; b++, p += LMI_Q8_0_BLOCK_BYTES, dst += LMI_Q8_0_BLOCK) {
        const float d = lmi_f16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
        const int8_t *q = (const int8_t *)(p + 2);
        for (int j = 0; j < LMI_Q8_0_BLOCK; j++) dst[j] = d * (float)q[j];
    }
}

/* One block: 32 fp32 values -> 34 bytes (the rule: internal.h).  The
 * quotient is taken in double, so that its rounding to an integer is that
 * of the exact quotient: a tie is exact in double, and a non-tie lies
 * farther from k + 1/2 than double's rounding error.  Adding and removing
 * 1.5 * 2^52 rounds it to nearest even (the default rounding mode, which
 * the library's math assumes throughout) in a loop that vectorises. */
LMI_CPU_CLONES
static void quantize_block(const float *w, uint8_t *out)
{
    float amax = 0.0f;
    for (int j = 0; j < LMI_Q8_0_BLOCK; j++) {
        const float a = fabsf(w[j]);
        amax = a > amax ? a : amax; /* no NaN here (checked before) */
    }
    const uint16_t dh = f16_bits_of((double)amax / 127.0, true);
    out[0] = (uint8_t)(dh & 0xFF);
    out[1] = (uint8_t)(dh >> 8);
    const double d = (double)lmi_f16_to_f32(dh);
    int8_t *q = (int8_t *)(out + 2);
    if (d == 0.0) {
        memset(q, 0, LMI_Q8_0_BLOCK);
        return;
    }
    for (int j = 0; j < LMI_Q8_0_BLOCK; j++) {
        double v = (double)w[j] / d;
        v = v > 127.0 ? 127.0 : v < -127.0 ? -127.0 : v;
        q[j] = (int8_t)(int32_t)((v + 0x1.8p52) - 0x1.8p52);
    }
}

lm_status lmi_weight_quantize_q8_0(const lmi_weight *w, void *dst, const char *name, lmi_err *e)
{
    if (w->type == LMI_W_Q8_0 || w->cols % LMI_Q8_0_BLOCK != 0)
        return lmi_fail(e, LM_ERR_SHAPE, "tensor %s: cannot quantise to Q8_0 (%lld columns)",
                        name, (long long)w->cols);
    /* rows are whole blocks: walk the tensor as one run of blocks */
    const int64_t n = lmi_weight_numel(w);
    float buf[1024];
    uint8_t *out = dst;
    for (int64_t o = 0; o < n; o += 1024) {
        const int64_t m = n - o < 1024 ? n - o : 1024; /* a multiple of 32 */
        lmi_weight_convert(w, o, m, LM_DTYPE_F32, buf);
        for (int64_t i = 0; i < m; i++)
            if (!isfinite(buf[i]))
                return lmi_fail(e, LM_ERR_NUMERIC,
                                "tensor %s has a non-finite value (%g) at index %lld: cannot "
                                "quantise it to Q8_0",
                                name, (double)buf[i], (long long)(o + i));
        for (int64_t b = 0; b < m; b += LMI_Q8_0_BLOCK, out += LMI_Q8_0_BLOCK_BYTES)
            quantize_block(buf + b, out);
    }
    return LM_OK;
}

/* ---- the converter ----------------------------------------------------------- */

/* fp32 -> bf16, round to nearest even; NaN stays a (quiet) NaN. */
static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Q8_0 elements [first, first + n) (flat) through whole blocks. */
static void convert_q8_0(const lmi_weight *w, int64_t first, int64_t n, lm_dtype to, void *dst)
{
    const uint8_t *base = w->data;
    float buf[LMI_Q8_0_BLOCK];
    int64_t done = 0;
    while (done < n) {
        const int64_t i = first + done;
        const int64_t off = i % LMI_Q8_0_BLOCK;
        const int64_t m = LMI_Q8_0_BLOCK - off < n - done ? LMI_Q8_0_BLOCK - off : n - done;
        lmi_q8_0_row_to_f32(base + (i / LMI_Q8_0_BLOCK) * LMI_Q8_0_BLOCK_BYTES, buf, 1);
        if (to == LM_DTYPE_BF16) {
            for (int64_t k = 0; k < m; k++) {
                const uint16_t b = f32_to_bf16(buf[off + k]);
                memcpy((char *)dst + 2 * (done + k), &b, 2);
            }
        } else {
            memcpy((char *)dst + 4 * done, buf + off, (size_t)m * 4);
        }
        done += m;
    }
}

void lmi_weight_convert(const lmi_weight *w, int64_t first, int64_t n, lm_dtype to, void *dst)
{
    if (n <= 0) return;
    if (w->type == LMI_W_Q8_0) {
        convert_q8_0(w, first, n, to, dst);
        return;
    }
    const size_t es = lmi_wtype_size(w->type);
    const char *src = (const char *)w->data + (size_t)first * es;
    if (to == LM_DTYPE_BF16) {
        if (w->type == LMI_W_BF16) {
            memcpy(dst, src, (size_t)n * 2);
            return;
        }
        lmi_weight row = {src, w->type, 1, n};
        for (int64_t i = 0; i < n; i++) {
            const uint16_t b = f32_to_bf16(lmi_weight_at(&row, i));
            memcpy((char *)dst + 2 * i, &b, 2);
        }
        return;
    }
    /* fp32: dst may be unaligned, so convert through a small buffer */
    float buf[1024];
    for (int64_t o = 0; o < n; o += 1024) {
        const int64_t m = n - o < 1024 ? n - o : 1024;
        const void *s = src + (size_t)o * es;
        switch (w->type) {
        case LMI_W_F16: {
            uint16_t h[1024];
            memcpy(h, s, (size_t)m * 2);
            lmi_f16_row_to_f32(h, buf, m);
            break;
        }
        case LMI_W_BF16: {
            uint16_t h[1024];
            memcpy(h, s, (size_t)m * 2);
            lmi_bf16_row_to_f32(h, buf, m);
            break;
        }
        default: memcpy(buf, s, (size_t)m * 4); break;
        }
        memcpy((char *)dst + (size_t)o * 4, buf, (size_t)m * 4);
    }
}
