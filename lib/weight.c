/*
 * weight.c - weights in their stored type (lmi_weight, internal.h):
 * row conversion to fp32 (F16C where the CPU has it) and the one
 * converter through which other code (the CUDA upload) reads host
 * weights.  Built into the library and into the CUDA module.
 */
#include "internal.h"
#include "cpu/vmath.h"

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

/* fp32 -> bf16, round to nearest even; NaN stays a (quiet) NaN. */
static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

void lmi_weight_convert(const lmi_weight *w, int64_t first, int64_t n, lm_dtype to, void *dst)
{
    if (n <= 0) return;
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
