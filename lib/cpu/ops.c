/*
 * cpu/ops.c - the CPU kernels shared by Mamba-1 (cpu/backend.c) and
 * Mamba-2 (cpu/mamba2.c): linear over weights in their stored type,
 * RMSNorm, the causal conv and the embedding gather (cpu/ops.h).
 *
 * 16-bit weights stay 16-bit in memory.  A decode step (one token) reads
 * them straight into fp32 FMAs (AVX2 + F16C where the CPU has them, else
 * portable code); a chunk of tokens widens a tile of weight rows into
 * fp32 scratch and hands it to OpenBLAS, so the GEMM's cost per weight
 * element (2 T flops) dwarfs the conversion (one widening).  Widening
 * f16 / bf16 to fp32 is exact, so the math is that of an fp32 copy of the
 * stored values; only the summation order of the 16-bit GEMV differs from
 * OpenBLAS's.
 *
 * Q8_0 blocks (LMI_W_Q8_0) go the same two ways: the decode GEMV reads the
 * int8 blocks (1.06 bytes per weight) and sums d * dot(q, x) per block in
 * fp32, the activations staying fp32; a chunk widens tiles to the exact
 * fp32 values d * q for OpenBLAS.  AVX-512 VNNI has nothing to offer here:
 * its dot products need int8 activations.
 */
#include "cpu/ops.h"
#include "cpu/mixer.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu/parallel.h"
#include "cpu/vmath.h"

/* Tile scratch: 256 Ki floats (1 MiB), at least one weight row. */
#define TILE_FLOATS ((int64_t)1 << 18)

size_t lmi_ops_tile_floats(const lmi_dims *d)
{
    int64_t n = TILE_FLOATS;
    const int64_t in[3] = {d->d_model, d->d_inner, d->dt_rank};
    for (int k = 0; k < 3; k++)
        if (in[k] > n) n = in[k];
    return (size_t)n;
}

/* ---- 16-bit GEMV --------------------------------------------------------- */

typedef struct gemv_job {
    const lmi_weight *W;
    const float *x;
    float *y;
    float beta;
} gemv_job;

static void store(float *y, float v, float beta)
{
    *y = beta != 0.0f ? *y + v : v;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_GEMV 1

#define GEMV_TARGET __attribute__((target("avx2,fma,f16c")))

GEMV_TARGET static inline __m256 load8(const uint16_t *p, bool bf16)
{
    const __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
    if (bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

GEMV_TARGET static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

GEMV_TARGET static void gemv_rows_avx2(void *ctx, int64_t begin, int64_t end)
{
    const gemv_job *j = ctx;
    const int64_t n = j->W->cols;
    const bool bf16 = j->W->type == LMI_W_BF16;
    const uint16_t *base = j->W->data;
    const float *x = j->x;
    for (int64_t o = begin; o < end; o++) {
        const uint16_t *w = base + o * n;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t i = 0;
        for (; i + 32 <= n; i += 32) {
            a0 = _mm256_fmadd_ps(load8(w + i, bf16), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(load8(w + i + 8, bf16), _mm256_loadu_ps(x + i + 8), a1);
            a2 = _mm256_fmadd_ps(load8(w + i + 16, bf16), _mm256_loadu_ps(x + i + 16), a2);
            a3 = _mm256_fmadd_ps(load8(w + i + 24, bf16), _mm256_loadu_ps(x + i + 24), a3);
        }
        for (; i + 8 <= n; i += 8)
            a0 = _mm256_fmadd_ps(load8(w + i, bf16), _mm256_loadu_ps(x + i), a0);
        float acc = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; i < n; i++) acc += (bf16 ? lmi_bf16_to_f32(w[i]) : lmi_f16_to_f32(w[i])) * x[i];
        store(j->y + o, acc, j->beta);
    }
}

#endif

/* Portable: widen 256 elements at a time, fp32 dot. */
LMI_CPU_CLONES
static void gemv_rows_generic(void *ctx, int64_t begin, int64_t end)
{
    const gemv_job *j = ctx;
    const int64_t n = j->W->cols;
    float buf[256];
    for (int64_t o = begin; o < end; o++) {
        float acc = 0.0f;
        for (int64_t i0 = 0; i0 < n; i0 += 256) {
            const int64_t m = n - i0 < 256 ? n - i0 : 256;
            lmi_weight_convert(j->W, o * n + i0, m, LM_DTYPE_F32, buf);
            const float *x = j->x + i0;
            LMI_SIMD_SUM(acc)
            for (int64_t i = 0; i < m; i++) acc += buf[i] * x[i];
        }
        store(j->y + o, acc, j->beta);
    }
}

static void gemv16(const lmi_weight *W, const float *x, float *y, float beta, int nt)
{
    gemv_job j = {.W = W, .x = x, .y = y, .beta = beta};
    lmi_range_fn fn = gemv_rows_generic;
#ifdef HAVE_AVX2_GEMV
    if (lmi_cpu_avx2_fma_f16c()) fn = gemv_rows_avx2;
#endif
    /* threads pay off from ~1 M weights (a thread start is ~20 us) */
    const int threads = W->rows * W->cols >= ((int64_t)1 << 20) ? nt : 1;
    lmi_cpu_parallel_for(threads, W->rows, 64, fn, &j);
}

/* ---- Q8_0 GEMV ------------------------------------------------------------ */

static inline float q8_scale(const uint8_t *blk)
{
    return lmi_f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8)));
}

#ifdef HAVE_AVX2_GEMV
/* 8 int8 -> 8 fp32 */
GEMV_TARGET static inline __m256 q8_load8(const uint8_t *p)
{
    const __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)p);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

/* d of a block, broadcast (F16C) */
GEMV_TARGET static inline __m256 q8_d8(const uint8_t *blk)
{
    uint16_t h;
    memcpy(&h, blk, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

/* dot(q, x) of one block as 8 partial sums: one mul and three FMAs (the
 * blocks' chains are independent; only the d-scaled sums are chained) */
GEMV_TARGET static inline __m256 q8_dot_avx2(const uint8_t *blk, const float *x)
{
    const uint8_t *q = blk + 2;
    __m256 s = _mm256_mul_ps(q8_load8(q), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(q8_load8(q + 8), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(q8_load8(q + 16), _mm256_loadu_ps(x + 16), s);
    return _mm256_fmadd_ps(q8_load8(q + 24), _mm256_loadu_ps(x + 24), s);
}

GEMV_TARGET static void gemv_q8_rows_avx2(void *ctx, int64_t begin, int64_t end)
{
    const gemv_job *j = ctx;
    const int64_t nb = j->W->cols / LMI_Q8_0_BLOCK;
    const size_t rb = lmi_weight_row_bytes(j->W);
    const uint8_t *base = j->W->data;
    const float *x = j->x;
    for (int64_t o = begin; o < end; o++) {
        const uint8_t *r = base + (size_t)o * rb;
        /* two accumulators: the d-scaled FMA chain is the latency path */
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int64_t b = 0;
        for (; b + 2 <= nb; b += 2) {
            const uint8_t *k0 = r + b * LMI_Q8_0_BLOCK_BYTES;
            const uint8_t *k1 = k0 + LMI_Q8_0_BLOCK_BYTES;
            a0 = _mm256_fmadd_ps(q8_dot_avx2(k0, x + b * 32), q8_d8(k0), a0);
            a1 = _mm256_fmadd_ps(q8_dot_avx2(k1, x + b * 32 + 32), q8_d8(k1), a1);
        }
        if (b < nb) {
            const uint8_t *k0 = r + b * LMI_Q8_0_BLOCK_BYTES;
            a0 = _mm256_fmadd_ps(q8_dot_avx2(k0, x + b * 32), q8_d8(k0), a0);
        }
        store(j->y + o, hsum(_mm256_add_ps(a0, a1)), j->beta);
    }
}

#define GEMV512_TARGET __attribute__((target("avx512f,avx2,fma,f16c")))

/* 16 int8 -> 16 fp32 */
GEMV512_TARGET static inline __m512 q8_load16(const uint8_t *p)
{
    const __m128i b = _mm_loadu_si128((const __m128i *)(const void *)p);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}

GEMV512_TARGET static void gemv_q8_rows_avx512(void *ctx, int64_t begin, int64_t end)
{
    const gemv_job *j = ctx;
    const int64_t nb = j->W->cols / LMI_Q8_0_BLOCK;
    const size_t rb = lmi_weight_row_bytes(j->W);
    const uint8_t *base = j->W->data;
    const float *x = j->x;
    for (int64_t o = begin; o < end; o++) {
        const uint8_t *r = base + (size_t)o * rb;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *k = r + b * LMI_Q8_0_BLOCK_BYTES;
            const float *xb = x + b * 32;
            __m512 s = _mm512_mul_ps(q8_load16(k + 2), _mm512_loadu_ps(xb));
            s = _mm512_fmadd_ps(q8_load16(k + 18), _mm512_loadu_ps(xb + 16), s);
            uint16_t h;
            memcpy(&h, k, 2);
            const __m512 d = _mm512_cvtph_ps(_mm256_set1_epi16((short)h));
            if (b & 1)
                a1 = _mm512_fmadd_ps(s, d, a1);
            else
                a0 = _mm512_fmadd_ps(s, d, a0);
        }
        store(j->y + o, _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)), j->beta);
    }
}
#endif

/* Portable: per block dot(q, x) in fp32, times d. */
LMI_CPU_CLONES
static void gemv_q8_rows_generic(void *ctx, int64_t begin, int64_t end)
{
    const gemv_job *j = ctx;
    const int64_t nb = j->W->cols / LMI_Q8_0_BLOCK;
    const size_t rb = lmi_weight_row_bytes(j->W);
    const uint8_t *base = j->W->data;
    for (int64_t o = begin; o < end; o++) {
        const uint8_t *r = base + (size_t)o * rb;
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *k = r + b * LMI_Q8_0_BLOCK_BYTES;
            const int8_t *q = (const int8_t *)(k + 2);
            const float *xb = j->x + b * LMI_Q8_0_BLOCK;
            float s = 0.0f;
            LMI_SIMD_SUM(s)
            for (int i = 0; i < LMI_Q8_0_BLOCK; i++) s += (float)q[i] * xb[i];
            acc += q8_scale(k) * s;
        }
        store(j->y + o, acc, j->beta);
    }
}

bool lmi_gemv_q8_0(const lmi_weight *W, const float *x, float *y, float beta, int nt, lmi_isa isa)
{
    gemv_job j = {.W = W, .x = x, .y = y, .beta = beta};
    lmi_range_fn fn = NULL;
#ifdef HAVE_AVX2_GEMV
    const bool has512 = lmi_cpu_avx512f(), has2 = lmi_cpu_avx2_fma_f16c();
    if ((isa == LMI_ISA_AUTO || isa == LMI_ISA_AVX512) && has512)
        fn = gemv_q8_rows_avx512;
    else if ((isa == LMI_ISA_AUTO && has2) || (isa == LMI_ISA_AVX2 && has2))
        fn = gemv_q8_rows_avx2;
#endif
    if (isa == LMI_ISA_AUTO || isa == LMI_ISA_PORTABLE) {
        if (!fn) fn = gemv_q8_rows_generic;
    }
    if (!fn) return false;
    /* as gemv16: threads from ~1 M weights */
    const int threads = W->rows * W->cols >= ((int64_t)1 << 20) ? nt : 1;
    lmi_cpu_parallel_for(threads, W->rows, 64, fn, &j);
    return true;
}

/* ---- GEMM by tiles (16-bit and Q8_0) ------------------------------------- */

typedef struct widen_job {
    const lmi_weight *W;
    int64_t row0;
    float *dst;
} widen_job;

static void widen_rows(void *ctx, int64_t begin, int64_t end)
{
    const widen_job *j = ctx;
    const int64_t n = j->W->cols;
    const void *src =
        (const char *)j->W->data + (size_t)(j->row0 + begin) * lmi_weight_row_bytes(j->W);
    float *dst = j->dst + begin * n;
    switch (j->W->type) {
    case LMI_W_BF16: lmi_bf16_row_to_f32(src, dst, (end - begin) * n); break;
    case LMI_W_Q8_0: lmi_q8_0_row_to_f32(src, dst, (end - begin) * (n / LMI_Q8_0_BLOCK)); break;
    default: lmi_f16_row_to_f32(src, dst, (end - begin) * n); break;
    }
}

static void gemm_tiles(const float *X, int64_t ldx, int64_t T, const lmi_weight *W, float *Y,
                   int64_t ldy, float beta, float *tile, int nt)
{
    const int64_t n_out = W->rows, n_in = W->cols;
    int64_t rt = TILE_FLOATS / n_in;
    if (rt > 16) rt -= rt % 16;
    if (rt < 1) rt = 1;
    for (int64_t o0 = 0; o0 < n_out; o0 += rt) {
        const int64_t r = n_out - o0 < rt ? n_out - o0 : rt;
        widen_job j = {.W = W, .row0 = o0, .dst = tile};
        lmi_cpu_parallel_for(r * n_in >= 65536 ? nt : 1, r, 16, widen_rows, &j);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)r, (int)n_in, 1.0f, X,
                    (int)ldx, tile, (int)n_in, beta, Y + o0, (int)ldy);
    }
}

/* ---- linear ---------------------------------------------------------------- */

void lmi_linear(const float *X, int64_t ldx, int64_t T, const lmi_weight *W, const lmi_weight *b,
                float *Y, int64_t ldy, float beta, float *tile, int nt)
{
    const int64_t n_out = W->rows, n_in = W->cols;
    const float *w32 = lmi_weight_f32(W);
    if (w32 && T == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n_out, (int)n_in, 1.0f, w32, (int)n_in, X,
                    1, beta, Y, 1);
    else if (w32)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)n_out, (int)n_in, 1.0f,
                    X, (int)ldx, w32, (int)n_in, beta, Y, (int)ldy);
    else if (T == 1 && W->type == LMI_W_Q8_0)
        (void)lmi_gemv_q8_0(W, X, Y, beta, nt, LMI_ISA_AUTO);
    else if (T == 1)
        gemv16(W, X, Y, beta, nt);
    else
        gemm_tiles(X, ldx, T, W, Y, ldy, beta, tile, nt);
    if (b && b->data) {
        const float *b32 = lmi_weight_f32(b);
        for (int64_t t = 0; t < T; t++) {
            float *yr = Y + t * ldy;
            if (b32)
                for (int64_t o = 0; o < n_out; o++) yr[o] += b32[o];
            else
                for (int64_t o = 0; o < n_out; o++) yr[o] += lmi_weight_at(b, o);
        }
    }
}

/* ---- RMSNorm --------------------------------------------------------------- */

LMI_CPU_CLONES
static double sum_squares(const float *x, int64_t n)
{
    double ss = 0.0;
    LMI_SIMD_SUM(ss)
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    return ss;
}

void lmi_rmsnorm_row(const float *x, const lmi_weight *w, int64_t w_off, float *out, int64_t n,
                     double eps)
{
    /* variance = hs.pow(2).mean(-1); hs * torch.rsqrt(variance + eps) * w,
     * as the float64 references compute it (scripts/make_fixtures*.py) */
    const float inv = (float)(1.0 / sqrt(sum_squares(x, n) / (double)n + eps));
    const float *w32 = lmi_weight_f32(w);
    if (w32) {
        for (int64_t i = 0; i < n; i++) out[i] = w32[w_off + i] * (x[i] * inv);
        return;
    }
    float wb[256];
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        const int64_t m = n - i0 < 256 ? n - i0 : 256;
        lmi_weight_convert(w, w_off + i0, m, LM_DTYPE_F32, wb);
        for (int64_t i = 0; i < m; i++) out[i0 + i] = wb[i] * (x[i0 + i] * inv);
    }
}

void lmi_rms_unit_row(float *x, int64_t n, double eps)
{
    const float inv = (float)(1.0 / sqrt(sum_squares(x, n) / (double)n + eps));
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

/* Single-threaded on purpose: it is ~0.1% of a layer. */
void lmi_rmsnorm(const float *x, const lmi_weight *w, float *out, int64_t T, int64_t d, double eps)
{
    for (int64_t t = 0; t < T; t++) lmi_rmsnorm_row(x + t * d, w, 0, out + t * d, d, eps);
}

/* ---- causal conv ------------------------------------------------------------ */

void lmi_conv_prepare(const lmi_weight *w, const lmi_weight *b, float *wT, int64_t C, int64_t K)
{
    for (int64_t c = 0; c < C; c++)
        for (int64_t k = 0; k < K; k++) wT[k * C + c] = lmi_weight_at(w, c * K + k);
    for (int64_t c = 0; c < C; c++) wT[K * C + c] = b && b->data ? lmi_weight_at(b, c) : 0.0f;
}

/* One token, channels [0, C): taps rows[0..K-1] (rows[K-1] is the current
 * token, the others the K-1 preceding inputs). */
LMI_CPU_CLONES
static void conv_token(const float *const *rows, const float *wT, float *out, int64_t C, int64_t K)
{
    const float *bias = wT + K * C;
    for (int64_t c = 0; c < C; c++) out[c] = bias[c];
    for (int64_t k = 0; k < K; k++) {
        const float *xr = rows[k];
        const float *wk = wT + k * C;
        LMI_SIMD
        for (int64_t c = 0; c < C; c++) out[c] += wk[c] * xr[c];
    }
    LMI_SIMD
    for (int64_t c = 0; c < C; c++) out[c] = lmi_siluf(out[c]);
}

typedef struct conv_job {
    const float *x, *head, *wT;
    float *u;
    int64_t ldx, C, K;
} conv_job;

static void conv_tokens(void *ctx, int64_t begin, int64_t end)
{
    const conv_job *j = ctx;
    const int64_t Km1 = j->K - 1;
    for (int64_t t = begin; t < end; t++) {
        const float *rows[64]; /* K <= 64 (cpu model_init) */
        for (int64_t k = 0; k < j->K; k++) {
            const int64_t src = t - Km1 + k;
            rows[k] = src >= 0 ? j->x + src * j->ldx : j->head + (Km1 + src) * j->C;
        }
        conv_token(rows, j->wT, j->u + t * j->C, j->C, j->K);
    }
}

void lmi_conv_chunk(float *head, float *state, const float *x, int64_t ldx, int64_t T,
                    const float *wT, float *u, int64_t C, int64_t K, int nt)
{
    const int64_t Km1 = K - 1;
    /* head[j][c] = state[c][j]: input at position j - (K-1) */
    for (int64_t c = 0; c < C; c++)
        for (int64_t j = 0; j < Km1; j++) head[j * C + c] = state[c * Km1 + j];
    conv_job job = {.x = x, .head = head, .wT = wT, .u = u, .ldx = ldx, .C = C, .K = K};
    lmi_cpu_parallel_for(T * C * K >= 262144 ? nt : 1, T, 16, conv_tokens, &job);
    /* conv_state = x_ext[..., -(K-1):] */
    for (int64_t j = 0; j < Km1; j++) {
        const int64_t src = T - Km1 + j;
        const float *r = src >= 0 ? x + src * ldx : head + (Km1 + src) * C;
        for (int64_t c = 0; c < C; c++) state[c * Km1 + j] = r[c];
    }
}

/* ---- embedding ----------------------------------------------------------------- */

void lmi_embed(const lmi_weight *E, const int32_t *tokens, int64_t T, float *res)
{
    const int64_t d = E->cols;
    for (int64_t t = 0; t < T; t++)
        lmi_weight_convert(E, (int64_t)tokens[t] * d, d, LM_DTYPE_F32, res + t * d);
}

/* ---- token hook ------------------------------------------------------------------ */

lm_status lmi_token_plan(const lmi_token_hook *h, int64_t layer, const float *delta, int64_t L,
                         int64_t n_ch, float *score, int64_t *idx, int64_t *sel, int64_t *n_keep,
                         lmi_err *e)
{
    *n_keep = 0;
    const int64_t n = lmi_token_hook_keeps(h, layer, L);
    if (n >= L) return LM_OK;
    for (int64_t t = 0; t < L; t++) {
        const float *r = delta + t * n_ch;
        double ss = 0.0;
        for (int64_t c = 0; c < n_ch; c++) ss += (double)r[c] * (double)r[c];
        score[t] = (float)sqrt(ss);
    }
    lm_status st = h->select(h->ctx, layer, score, L, idx, sel, e);
    if (st == LM_OK) *n_keep = n;
    return st;
}

lm_status lmi_gather(const lmi_gather_rows *rows, size_t n_rows, const int64_t *idx, int64_t n,
                     int64_t L, lmi_err *e)
{
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < i || idx[i] >= L || (i > 0 && idx[i] <= idx[i - 1]))
            return lmi_fail(e, LM_ERR_BACKEND, "cpu: the token selection is not ascending");
    for (int64_t i = 0; i < n; i++) {
        const int64_t src = idx[i];
        if (src == i) continue;
        for (size_t k = 0; k < n_rows; k++)
            memcpy(rows[k].base + i * rows[k].ld, rows[k].base + src * rows[k].ld,
                   (size_t)rows[k].width * sizeof(float));
    }
    return LM_OK;
}

lm_status lmi_cpu_scratch_carve(lmi_cpu_scratch *sc, const lmi_carve *rows, size_t n, int64_t T,
                                lmi_err *e)
{
    size_t total = 0;
    for (size_t k = 0; k < n; k++) total += (rows[k].bytes + 63) / 64 * 64;
    char *block = lmi_alloc_raw(total ? total : 1, 1);
    if (!block)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the scratch of %lld tokens",
                        (long long)T);
    size_t off = 0;
    for (size_t k = 0; k < n; k++) {
        *rows[k].dst = block + off;
        off += (rows[k].bytes + 63) / 64 * 64;
    }
    lmi_free(sc->block);
    sc->block = block;
    sc->cap = T;
    return LM_OK;
}

void lmi_cpu_scratch_release(void *scratch)
{
    lmi_cpu_scratch *sc = scratch;
    if (!sc) return;
    lmi_free(sc->block);
    lmi_free(sc);
}

/* ---- Mamba mixers ------------------------------------------------------------------ */

lm_status lmi_cpu_mamba_check(const lmi_dims *d, int64_t in_rows, lmi_err *e)
{
    if (d->d_conv > 64)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cpu: d_conv %lld > 64 is not supported",
                        (long long)d->d_conv);
    /* BLAS takes int sizes. */
    const int64_t big = d->vocab > in_rows ? d->vocab : in_rows;
    if (big > INT32_MAX / 2 || d->d_model > INT32_MAX / 2)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cpu: dimensions too large for BLAS");
    return LM_OK;
}

lm_status lmi_cpu_mamba_init(const lmi_dims *d, const lmi_layer *L, void **data, bool *has16,
                             lmi_err *e)
{
    const lmi_mamba_weights *w = &L->mamba;
    const lmi_weight *mats[5] = {&w->in_w, &w->x_w, &w->dt_w, &w->out_w, &w->in_b};
    for (int k = 0; k < 5; k++) *has16 |= mats[k]->data && mats[k]->type != LMI_W_F32;
    float *wT = lmi_alloc_raw((size_t)((d->d_conv + 1) * d->conv_dim), sizeof(float));
    if (!wT) return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for conv weights");
    lmi_conv_prepare(&w->conv_w, &w->conv_b, wT, d->conv_dim, d->d_conv);
    *data = wT;
    return LM_OK;
}
