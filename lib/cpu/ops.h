/*
 * cpu/ops.h - the CPU kernels both architectures share (cpu/backend.c for
 * Mamba-1, cpu/mamba2.c for Mamba-2): the linear layer over weights in
 * their stored type, RMSNorm, the depthwise causal conv + SiLU and the
 * embedding gather.  Compute and accumulation are fp32 (RMSNorm
 * statistics in double); 16-bit weights are widened exactly on the fly.
 */
#ifndef LMI_CPU_OPS_H
#define LMI_CPU_OPS_H

#include "internal.h"

/* Floats of the per-session weight-tile scratch lmi_linear needs for
 * 16-bit or Q8_0 weights over several tokens (models of dims d). */
size_t lmi_ops_tile_floats(const lmi_dims *d);

/* Y[T][out] = beta * Y + X[T][in] @ W[out][in]^T (+ b), beta 0 or 1
 * (0: Y is not read).  F32 weights: OpenBLAS GEMV (T == 1) / GEMM.
 * F16 / BF16: T == 1 a direct GEMV reading the 16-bit rows; else tiles
 * of rows widened into `tile` (lmi_ops_tile_floats) and OpenBLAS GEMM.
 * Q8_0: T == 1 a GEMV over the int8 blocks (fp32 sums of d * dot(q, x));
 * else tiles widened to d * q, as for 16 bits.
 * nt: threads for those GEMVs and the tile conversion. */
void lmi_linear(const float *X, int64_t ldx, int64_t T, const lmi_weight *W, const lmi_weight *b,
                float *Y, int64_t ldy, float beta, float *tile, int nt);

/* The Q8_0 GEMV of lmi_linear (T == 1) with a chosen instruction set, so
 * that tests reach every kernel: y[o] = beta * y[o] + sum over blocks of
 * d * dot(q, x), in fp32.  LMI_ISA_AUTO: the best this CPU runs (what
 * lmi_linear uses).  false, touching nothing, when the CPU or the build
 * lacks the set. */
typedef enum lmi_isa {
    LMI_ISA_AUTO = 0,
    LMI_ISA_PORTABLE = 1,  /* plain C (compiler-vectorised clones) */
    LMI_ISA_AVX2 = 2,      /* AVX2 + FMA + F16C */
    LMI_ISA_AVX512 = 3,    /* AVX-512F */
} lmi_isa;
bool lmi_gemv_q8_0(const lmi_weight *W, const float *x, float *y, float beta, int nt, lmi_isa isa);

/* out[n] = w[w_off + i] * (x[i] / sqrt(mean(x^2) + eps)); the mean, the
 * eps and the square root in double, one rounding to fp32 (the float64
 * references' math).  out may be x. */
void lmi_rmsnorm_row(const float *x, const lmi_weight *w, int64_t w_off, float *out, int64_t n,
                     double eps);
/* T rows of d. */
void lmi_rmsnorm(const float *x, const lmi_weight *w, float *out, int64_t T, int64_t d, double eps);
/* x[i] / sqrt(mean(x^2) + eps) in place over n floats, no weight (the sum
 * of squares in double as lmi_rmsnorm_row): transformers' rms_forward. */
void lmi_rms_unit_row(float *x, int64_t n, double eps);

/* Conv weights as the conv reads them: wT [K + 1][C] fp32, rows k < K the
 * taps (wT[k][c] = w[c][k]), row K the bias (zeros when absent). */
void lmi_conv_prepare(const lmi_weight *w, const lmi_weight *b, float *wT, int64_t C, int64_t K);

/* u = F.silu(conv1d([state | x])[..., :T]) over C channels for T tokens
 * (x rows at stride ldx), then state[c][j] (oldest first) = the last K-1
 * inputs.  head: scratch of (K-1) * C floats. */
void lmi_conv_chunk(float *head, float *state, const float *x, int64_t ldx, int64_t T,
                    const float *wT, float *u, int64_t C, int64_t K, int nt);

/* res[t] = embedding row tokens[t], widened to fp32 (d = E->cols). */
void lmi_embed(const lmi_weight *E, const int32_t *tokens, int64_t T, float *res);

/* The token hook of one layer of L tokens (lmi_token_hook): when it keeps
 * fewer than L, score[t] = ||delta[t, 0..n_ch)||_2 (rows of n_ch) and
 * idx[0..n) = the kept tokens, ascending (sel is scratch).  *n_keep = n,
 * or 0 when the layer keeps every token. */
lm_status lmi_token_plan(const lmi_token_hook *h, int64_t layer, const float *delta, int64_t L,
                         int64_t n_ch, float *score, int64_t *idx, int64_t *sel, int64_t *n_keep,
                         lmi_err *e);

/* Row gathers after a token selection: for each array, row idx[i] moves
 * to row i (width floats of rows ld apart).  idx is ascending with
 * idx[i] >= i, so the in-place forward copy never reads a row it has
 * already overwritten; anything else is refused. */
typedef struct lmi_gather_rows {
    float *base;
    int64_t ld, width;
} lmi_gather_rows;

lm_status lmi_gather(const lmi_gather_rows *rows, size_t n_rows, const int64_t *idx, int64_t n,
                     int64_t L, lmi_err *e);

#endif
