/*
 * kernels.h - C entry points of the CUDA kernels (device pointers, one
 * stream).  The pipelines (mamba1.cu, mamba2.cu) string them together; the GPU tests
 * and benchmarks call them one at a time.  Each returns the launch's
 * cudaError_t (cudaSuccess or a configuration error); execution errors
 * surface at the next synchronisation.
 *
 * dtype arguments: 0 = fp32, 1 = bf16 (lmc_dtype) for the tensors marked T.
 * Layouts are token major, row strides (ld*) in elements.
 */
#ifndef LMC_KERNELS_H
#define LMC_KERNELS_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- selective scan (scan.cu) ------------------------------------------ */

/* Mamba-1 selective scan over `batch` independent sequences of L tokens:
 *   d = dt_softplus ? softplus(dt + dt_bias) : dt
 *   if flag && flag[e] && !(d > tau[e])  d = 0          (LongMamba filter)
 *   h[e][n] = exp(d*A[e][n]) h[e][n] + d B[t][n] u[t][e]
 *   y[t][e] = (sum_n h[e][n] C[t][n] + D[e] u[t][e]) * (z ? silu(z[t][e]) : 1)
 * A is given as A2 = A * log2(e).  h ([batch][E][N] fp32) holds the initial
 * state and receives the final one.  Parallel along the sequence: chunks of
 * `chunk` tokens are scanned from zero, their end states combined in a
 * short sequential pass, then rescanned from the true start states. */
typedef struct lmc_scan_args {
    int64_t batch, L, E, N;
    int dtype;                      /* of u, z, y */
    const void *u;   int64_t ldu, u_bs;        /* [L][ldu] T, batch stride */
    const float *dt; int64_t lddt, dt_bs;
    const float *dt_bias;           /* [E] or NULL */
    int dt_softplus;
    const float *A2;                /* [E][N] */
    const float *B;  const float *C; int64_t ldbc, bc_bs;
    const float *D;                 /* [E] or NULL */
    const void *z;   int64_t ldz, z_bs;        /* or NULL */
    const uint8_t *flag;            /* [E] or NULL: no filter */
    const float *tau;               /* [E] */
    void *y;         int64_t ldy, y_bs;
    float *h;                       /* [batch][E][N] in/out */
    float *chunk_s, *chunk_h;       /* scratch, lmc_scan_scratch_floats() floats in all */
    int chunk;                      /* tokens per chunk; 0 = choose */
    int n_sm;                       /* multiprocessors (chunk choice); 0 = 132 */
    float d_scale;                  /* MambaExtend: d *= d_scale after the filter; 0 = 1 */
    float a_scale;                  /* Modulation: A -> -(-A)^a_scale; 0 = 1 */
    /* Varlen (n_seq > 0; batch 1, L = the tokens in all, h unused):
     * n_seq sequences packed back to back in u, dt, B, C, z, y, sequence s
     * the tokens [cu_seq[s], cu_seq[s+1]) cut into chunks of `chunk`
     * (> 0, required) that never cross sequences: its chunks are
     * [cu_chunk[s], cu_chunk[s+1]) of n_chunks in all (both tables
     * [n_seq + 1] on the device, 64-bit); its state h_ptr[s] + h_off
     * (device table) in/out.  Scratch: lmc_scan_scratch_* for batch 1 and
     * L = n_chunks * chunk.  n_seq and n_chunks at most 65535. */
    int64_t n_seq;
    const int64_t *cu_seq;
    const int64_t *cu_chunk;
    int64_t n_chunks;
    float *const *h_ptr;
    size_t h_off;
} lmc_scan_args;

/* Largest N the scan supports. */
#define LMC_SCAN_MAX_N 64

/* Chunk length the scan will use for these sizes (chunk 0 = choose). */
int lmc_scan_chunk(int64_t batch, int64_t L, int64_t E, int64_t N, int chunk, int n_sm);
/* Scratch floats for chunk_s + chunk_h (chunk_h starts at chunk_s + the
 * returned value of lmc_scan_scratch_s()). */
size_t lmc_scan_scratch_floats(int64_t batch, int64_t L, int64_t E, int64_t N, int chunk, int n_sm);
size_t lmc_scan_scratch_s(int64_t batch, int64_t L, int64_t E, int64_t N, int chunk, int n_sm);
cudaError_t lmc_scan(const lmc_scan_args *a, cudaStream_t st);

/* ---- causal depthwise conv1d (conv.cu) --------------------------------- */

/* u[t][e] = silu(b[e] + sum_k w[e][k] x[t-(K-1)+k][e]), positions < 0 taken
 * from state [E][K-1] (oldest first).  x: T [L][ldx], u: T [L][E].
 * 2 <= K <= 8. */
cudaError_t lmc_conv(int dtype, const void *x, int64_t ldx, int64_t L, int64_t E, int K,
                     const float *w, const float *b, const float *state, void *u,
                     cudaStream_t st);
/* state <- the last K-1 columns of [state | x] (run after lmc_conv). */
cudaError_t lmc_conv_state_update(int dtype, const void *x, int64_t ldx, int64_t L, int64_t E,
                                  int K, float *state, cudaStream_t st);
/* Varlen: n >= 1 sequences packed back to back in x and u, sequence s the
 * rows [cu[s], cu[s+1]) (cu: n + 1 64-bit offsets on the device, cu[0] =
 * 0, cu[n] = L), its state state_ptr[s] + layer_off (device table) for
 * the positions before its first row.  lmc_conv's formula per sequence. */
cudaError_t lmc_conv_varlen(int dtype, const void *x, int64_t ldx, int64_t L, const int64_t *cu,
                            int64_t n, int64_t E, int K, const float *w, const float *b,
                            float *const *state_ptr, size_t layer_off, void *u, cudaStream_t st);
/* Each sequence's state <- the last K-1 columns of [its state | its rows
 * of x] (run after lmc_conv_varlen). */
cudaError_t lmc_conv_state_update_varlen(int dtype, const void *x, int64_t ldx, const int64_t *cu,
                                         int64_t n, int64_t E, int K, float *const *state_ptr,
                                         size_t layer_off, cudaStream_t st);

/* ---- norms, embedding, small element-wise kernels (norm.cu) ------------ */

/* out[r][i] = x[r][i] / sqrt(mean_i x[r][i]^2 + eps) * w[i]; out is T. */
cudaError_t lmc_rmsnorm(int dtype, const float *x, int64_t rows, int64_t d, const float *w,
                        float eps, void *out, cudaStream_t st);
/* out[t][:] = (float) emb[tok[t]][:], emb T [V][d]. */
cudaError_t lmc_embed(int dtype, const void *emb, int64_t d, const int32_t *tok, int64_t L,
                      float *out, cudaStream_t st);
/* x[r][i] = b[i] for every row (x is T with row stride ld). */
cudaError_t lmc_fill_rows(int dtype, void *x, int64_t ld, int64_t rows, int64_t n, const float *b,
                          cudaStream_t st);
/* x[r][i] += b[i] (fp32). */
cudaError_t lmc_add_rows(float *x, int64_t rows, int64_t n, const float *b, cudaStream_t st);
/* dst[i] = bf16(src[i]) or a copy (dtype 0); in place allowed for dtype 0 only. */
cudaError_t lmc_convert(int dtype, const float *src, void *dst, size_t n, cudaStream_t st);
/* x[i] *= s. */
cudaError_t lmc_scale(float *x, size_t n, float s, cudaStream_t st);
/* Mamba Modulation: out[i] = -(-A[i])^s = -exp(s A_log) for A = -exp(A_log). */
cudaError_t lmc_modulate(const float *A, size_t n, float s, float *out, cudaStream_t st);

/* ---- DeciMamba and Δ export (deci.cu) ---------------------------------- */

/* delta[t][e] = softplus(dt[t][e] + b[e]), [L][E] dense. */
cudaError_t lmc_delta(const float *dt, int64_t lddt, int64_t L, int64_t E, const float *b,
                      float *delta, cudaStream_t st);
/* scores[t] = || softplus(dt[t][:] + b) ||_2 over the E channels. */
cudaError_t lmc_deci_scores(const float *dt, int64_t lddt, int64_t L, int64_t E, const float *b,
                            float *scores, cudaStream_t st);
/* dst row i = src row idx[i] for i < n; rows of row_bytes (even) bytes,
 * strides in bytes. */
cudaError_t lmc_gather_rows(const void *src, int64_t src_stride, void *dst, int64_t dst_stride,
                            int64_t row_bytes, const int32_t *idx, int64_t n, cudaStream_t st);

/* ---- fused one-token step (decode.cu), batch 1, fp32 vectors ----------- */
/* pdl = 1: launched with programmatic dependent launch (the kernel starts
 * while the previous one drains, prefetches its weights, then waits). */

/* out[r] = W[r] . (x / rms(x) * norm_w) + bias[r]   (W T [rows][n_in]) */
cudaError_t lmc_dec_norm_gemv(int dtype, const float *x, int64_t n_in, const float *norm_w, float eps,
                              const void *W, int64_t rows, const float *bias, float *out, int n_sm,
                              int pdl, cudaStream_t st);
/* out[r] = W[r] . u, u[e] = silu(b[e] + sum_k<K-1 w[e][k] state[e][k] + w[e][K-1] x[e]) */
cudaError_t lmc_dec_conv_gemv(int dtype, const float *x, int64_t E, const float *conv_state,
                              const float *conv_w, const float *conv_b, int K, const void *W,
                              int64_t rows, float *out, int n_sm, int pdl, cudaStream_t st);
/* out[r] += W[r] . x + bias[r] */
cudaError_t lmc_dec_gemv_add(int dtype, const float *x, int64_t n_in, const void *W, int64_t rows,
                             const float *bias, float *out, int n_sm, int pdl, cudaStream_t st);
/* Per channel: u from the conv state and x = xz[e] (state shifted in
 * place), Δ = softplus(dt_w[e] . dbc[0:R] + dt_b[e]), h update with
 * B = dbc[R:R+N], y[e] = (h . C + D u) silu(xz[E + e]). */
cudaError_t lmc_dec_scan_step(const float *xz, int64_t E, int64_t N, int64_t R, int K, float *conv_state,
                              const float *conv_w, const float *conv_b, const float *dbc,
                              const float *dt_w, const float *dt_b, const float *A2, const float *D,
                              float *h, float *y, int pdl, cudaStream_t st);


/* ---- batched one-token step (batch.cu): n sessions, one launch --------- */
/* Each session s reaches its state through a device table: state_ptr[s] +
 * layer_off (floats). */

/* Per session s and channel c < C: xv = x[s][c] (row stride ldx, fp32),
 * v = silu(b[c] + sum_k<K-1 w[c][k] st[c][k] + w[c][K-1] xv), the state
 * [C][K-1] shifted in place; uf[s][c] = v (fp32 [n][C]) and, when u is not
 * NULL, u[s][c] = v (T [n][C]). */
cudaError_t lmc_conv_step_batch(int dtype, const float *x, int64_t ldx, int64_t n, int64_t C, int K,
                                float *const *conv_ptr, size_t layer_off, const float *w, const float *b, void *u,
                                float *uf, cudaStream_t st);
/* Mamba-1 scan step per session s and channel e: Δ = softplus(dt[s][e] +
 * dt_b[e]), h[e][n] = exp2(Δ A2[e][n]) h + Δ u B[n], y[s][e] = (h . C + D u)
 * silu(z), B/C from dbc[s] (row R2N, at R), z = xz[s][E + e]; y T [n][E]. */
cudaError_t lmc_scan_step_batch(int dtype, const float *uf, const float *dt, const float *dbc, int64_t R2N,
                                int64_t R, int64_t n, int64_t E, int N, const float *dt_b, const float *A2,
                                const float *D, const float *xz, float *const *ssm_ptr, size_t layer_off, void *y,
                                cudaStream_t st);

/* ---- Mamba-2 (ssd.cu), fp32 activations --------------------------------- */
/* Shapes: H heads of P channels (E = H P), G groups of N states, the conv
 * output u [L][ldu] holds x [E] | B [G][N] | C [G][N] per token; Δ dl
 * [L][H] dense; the state h [H][P][N]. */

#define LMC_SSD_CHUNK 64

/* MambaExtend on Mamba-2, in place over dl [L][H]: the LongMamba filter
 * (flag may be NULL), then the scale: dl = (flag[h] && !(dl > tau[h])) ? 0
 * : dl * s.  The SSD kernels then run without the filter. */
cudaError_t lmc_ssd_delta_scale(float *dl, int64_t L, int H, const uint8_t *flag, const float *tau, float s,
                                cudaStream_t st);
/* dl[t][h] = softplus(zx[t][off + h] + b[h]), clamped to [lo, hi] when clamp. */
cudaError_t lmc_ssd_delta(const float *zx, int64_t ld, int64_t off, int64_t L, int H, const float *b, int clamp,
                          float lo, float hi, float *dl, cudaStream_t st);
/* Bytes of scratch for lmc_ssd_scan over L tokens. */
size_t lmc_ssd_scratch_bytes(int64_t L, int H, int P, int N, int G);
/* The four chunk kernels (nch = ceil(L / LMC_SSD_CHUNK) chunks).  A filtered
 * head (flag[h]) keeps token t iff Δ > tau[h].
 * chunk states: cst[c][h][p][n] = sum_s exp(cs_end - cs_s) Δ_s x_s[p] B_s[n]
 *   from zero, cdec[c][h] = cs_end (cs: cumulative Δ A inside the chunk). */
cudaError_t lmc_ssd_chunk_states(const float *u, int64_t ldu, const float *dl, int64_t L, int H, int P, int N,
                                 int G, int E, const float *A, const uint8_t *flag, const float *tau, float *cst,
                                 float *cdec, cudaStream_t st);
/* cbT[c][g][s][t] = C_t . B_s inside chunk c (64 x 64 per chunk and group). */
cudaError_t lmc_ssd_cb(const float *u, int64_t ldu, int64_t L, int N, int G, int E, float *cbT, cudaStream_t st);
/* Per state element: cst[c] <- the state at chunk c's start (from h), h <-
 * the final state. */
cudaError_t lmc_ssd_carry(float *cst, const float *cdec, int64_t nch, int H, int64_t PN, float *h, cudaStream_t st);
/* y[t] = exp(cs_t) C_t . S_start + sum_{s<=t} exp(cs_t - cs_s) Δ_s (C_t . B_s) x_s + D x_t. */
cudaError_t lmc_ssd_out(const float *u, int64_t ldu, const float *dl, int64_t L, int H, int P, int N, int G, int E,
                        const float *A, const float *D, const uint8_t *flag, const float *tau, const float *cst,
                        const float *cbT, float *y, int64_t ldy, cudaStream_t st);

typedef struct lmc_ssd_args {
    int64_t L;
    int H, P, N, G, E;
    const float *u; int64_t ldu;
    const float *dl;
    const float *A, *D;             /* [H] */
    const uint8_t *flag;            /* [H] or NULL */
    const float *tau;
    float *h;                       /* [H][P][N] in/out */
    float *y; int64_t ldy;
    void *scratch;                  /* lmc_ssd_scratch_bytes() */
} lmc_ssd_args;
/* The whole chunked scan: the four kernels above. */
cudaError_t lmc_ssd_scan(const lmc_ssd_args *a, cudaStream_t st);
/* Varlen: n sequences packed back to back in u, dl, y (a->L = the tokens
 * in all, a->h unused), in n_chunks chunks of at most LMC_SSD_CHUNK tokens
 * that never cross sequences: chunk c holds the tokens [chunk_t0[c],
 * chunk_t0[c+1]) ([n_chunks + 1]), sequence s the chunks [cu_chunk[s],
 * cu_chunk[s+1]) ([n + 1]); its state h_ptr[s] + h_off in/out (all device
 * tables, 64-bit offsets).  Scratch: lmc_ssd_scratch_bytes(n_chunks *
 * LMC_SSD_CHUNK, ...).  The same four kernels, reading chunk_t0. */
typedef struct lmc_ssd_seqs {
    int64_t n, n_chunks;
    const int64_t *chunk_t0;
    const int64_t *cu_chunk;
    float *const *h_ptr;
    size_t h_off;
} lmc_ssd_seqs;
cudaError_t lmc_ssd_scan_varlen(const lmc_ssd_args *a, const lmc_ssd_seqs *v, cudaStream_t st);
/* One token for n sessions (grid z): S = S exp(Δ A) + Δ x B; y = S . C + D x.
 * Session s reads u + s ldu, dl + s ldd, writes y + s ldy; its state is h
 * (n = 1) or h_ptr[s] + h_off. */
cudaError_t lmc_ssd_step(const float *u, int64_t ldu, const float *dl, int64_t ldd, int64_t n, int H, int P, int N,
                         int G, int E, const float *A, const float *D, const uint8_t *flag, const float *tau,
                         float *h, float *const *h_ptr, size_t h_off, float *y, int64_t ldy, cudaStream_t st);
/* MambaRMSNormGated (norm_before_gate = False) per row and group of E / G:
 * v = y silu(z); out = v / sqrt(mean(v^2) + eps) * w; y fp32 [rows][E], z
 * [rows][ldz], out T [rows][E]. */
cudaError_t lmc_gated_norm(int dtype, const float *y, int64_t rows, int64_t E, int G, const float *z, int64_t ldz,
                           const float *w, float eps, void *out, cudaStream_t st);
/* scores[t] = ||dl[t][:]||_2 over the H heads (double accumulation). */
cudaError_t lmc_deci_scores_heads(const float *dl, int64_t L, int H, float *scores, cudaStream_t st);

/* Copies each of n sessions' state array ptr[s][0..floats) into row s of
 * backup ([n][floats]), or back when restore (lm_session_decode_sample
 * undoes a step whose logits were not finite). */
cudaError_t lmc_state_copy_batch(float *const *ptr, int64_t floats, float *backup, int64_t n, int restore,
                                 cudaStream_t st);

/* ---- sampling (sample.cu) --------------------------------------------- */

/* Per row: the sampler of lm_sampling_params and the position the draw
 * is keyed on (lib/sample.c states the rule). */
typedef struct lmc_sample_param {
    float temperature;              /* <= 0: greedy */
    int32_t top_k;                  /* 0: all */
    float top_p;                    /* 0 or 1: off */
    uint64_t seed;
    int64_t position;
} lmc_sample_param;

/* next[i] = the token sampled from row i of logits ([n] rows of V, row
 * stride ld, fp32), params [n] on the device; -1 where the row has a
 * non-finite value. */
cudaError_t lmc_sample_rows(const float *logits, int64_t ld, int64_t V, int64_t n,
                            const lmc_sample_param *params, int32_t *next, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif /* LMC_KERNELS_H */
