/*
 * mamba1.cu - the Mamba-1 layer sequences (lmc_mamba1); the plumbing
 * around them is session.cu's.  A forward pass is, per layer:
 *
 *   hn  = RMSNorm(res)                       norm.cu
 *   xz  = hn W_in^T (+ b_in)                 cuBLAS
 *   u   = SiLU(conv1d(x) + b_conv)           conv.cu (state carried)
 *   dbc = u W_x^T                            cuBLAS  [dt_low | B | C]
 *   dt  = dt_low W_dt^T                      cuBLAS  (fp32)
 *   [Δ sink; DeciMamba: score, select on the host, gather]
 *   y   = scan(u, dt, ...)                   scan.cu (bias + softplus, filter, Δ scale,
 *                                            Modulation's A', D, gate fused)
 *   res = res + y W_out^T (+ b_out)          cuBLAS, beta = 1 (the residual add)
 *
 * then the final norm and the head for the last n_out rows only.  The
 * one-token step is the fused decode.cu sequence; the batched step runs the
 * products as GEMMs with n = sessions and batch.cu's step kernels; a
 * batched prefill (varlen) the same sequence over packed prompts, with
 * the varlen conv and scan.
 */
#include "common.cuh"
#include "gemm.cuh"
#include "kernels.h"

#include <string.h>

namespace {

lm_status check(const struct lm_model *m, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    if (d->bcdt_rms_eps > 0.0)
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "cuda backend: Falcon-Mamba (RMS normalisation of dt, B and C) is not "
                        "supported yet; use the cpu backend");
    if (d->d_state < 1 || d->d_state > LMC_SCAN_MAX_N)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: d_state %lld not in [1, %d]",
                        (long long)d->d_state, LMC_SCAN_MAX_N);
    if (d->d_conv < 2 || d->d_conv > 8)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: d_conv %lld not in [2, 8]",
                        (long long)d->d_conv);
    if (d->d_model < 1 || d->d_inner < 1 || d->dt_rank < 1 || d->n_layer < 1 || d->vocab < 1)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: bad model dimensions");
    if (!m->embed.data || !m->norm_f.data || !m->layers)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: model has no weights");
    return LM_OK;
}

struct dims1 {
    size_t d, E, R2N, ts;
};

dims1 dims_of(const struct lm_model *m)
{
    const lmi_dims *d = &m->dims;
    return dims1{(size_t)d->d_model, (size_t)d->d_inner, (size_t)(d->dt_rank + 2 * d->d_state),
                 lmc_dtype_size(lmc_model_dt(m))};
}

size_t main_bufs(const struct lm_model *m, lmc_session *S, size_t cap, lmc_buf *r)
{
    const dims1 b = dims_of(m);
    const lmc_buf rows[] = {{(void **)&S->tok, cap * 4},          {(void **)&S->res, cap * b.d * 4},
                            {&S->hn, cap * b.d * b.ts},          {&S->x, cap * 2 * b.E * b.ts},
                            {&S->u, cap * b.E * b.ts},           {(void **)&S->dbc, cap * b.R2N * 4},
                            {(void **)&S->dt, cap * b.E * 4},    {&S->y, cap * b.E * b.ts},
                            {(void **)&S->scores, cap * 4},      {(void **)&S->idx, cap * 4}};
    memcpy(r, rows, sizeof rows);
    return sizeof rows / sizeof rows[0];
}

size_t deci_bufs(const struct lm_model *m, lmc_session *S, size_t L, lmc_buf *r)
{
    const dims1 b = dims_of(m);
    const lmc_buf rows[] = {{(void **)&S->res2, L * b.d * 4}, {&S->x2, L * 2 * b.E * b.ts}, {&S->u2, L * b.E * b.ts},
                            {(void **)&S->dbc2, L * b.R2N * 4}, {(void **)&S->dt2, L * b.E * 4}};
    memcpy(r, rows, sizeof rows);
    return sizeof rows / sizeof rows[0];
}

size_t batch_bufs(const struct lm_model *m, lmc_batch *B, size_t cap, lmc_buf *r)
{
    const dims1 b = dims_of(m);
    const size_t V = (size_t)m->dims.vocab;
    const lmc_buf rows[] = {{(void **)&B->tok, cap * 4},           {(void **)&B->conv_ptr, cap * sizeof(float *)},
                            {(void **)&B->ssm_ptr, cap * sizeof(float *)}, {(void **)&B->res, cap * b.d * 4},
                            {&B->hn, cap * b.d * b.ts},             {(void **)&B->x, cap * 2 * b.E * 4},
                            {&B->u, cap * b.E * b.ts},              {(void **)&B->uf, cap * b.E * 4},
                            {(void **)&B->dbc, cap * b.R2N * 4},    {(void **)&B->dt, cap * b.E * 4},
                            {&B->y, cap * b.E * b.ts},              {(void **)&B->logits, cap * V * 4}};
    memcpy(r, rows, sizeof rows);
    return sizeof rows / sizeof rows[0];
}

/* Scan scratch for L tokens: chunk sums, then chunk states. */
size_t scan_bytes(const struct lm_model *m, int64_t L)
{
    const int nsm = static_cast<const lmc_model *>(m->bk)->sm_count;
    return lmc_scan_scratch_floats(1, L, m->dims.d_inner, m->dims.d_state, 0, nsm) * sizeof(float);
}

/* DeciMamba scores from dt (the gather pairs' last). */
cudaError_t score(lmc_fwd *c, int64_t l, int64_t L, const lmc_gather *g)
{
    const int64_t E = c->s->model->dims.d_inner;
    return lmc_deci_scores(static_cast<const float *>(*g[4].cur), E, L, E, c->M->layers[l].dt_b, c->S->scores,
                           c->S->stream);
}

lm_status pipeline(lmc_fwd *c, int64_t L, lmi_err *e)
{
    const struct lm_model *m = c->s->model;
    const lmi_dims *d = &m->dims;
    lmc_session *S = c->S;
    const lmc_model *M = c->M;
    const lmi_forward *f = c->f;
    const lmc_dtype T = M->dt;
    const dims1 b = dims_of(m);
    const int64_t D = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    const int64_t R2N = R + 2 * N;
    const bool tf32 = f->allow_tf32;
    cudaStream_t st = S->stream;
    float *res = S->res, *dbc = S->dbc, *dt = S->dt;
    void *xz = S->x, *u = S->u;
    const int64_t row_x = (int64_t)(2 * b.E * b.ts), row_u = (int64_t)(b.E * b.ts);
    lmc_gather g[] = {{(void **)&res, S->res, S->res2, D * 4, D * 4, D * 4, nullptr},
                      {&xz, S->x, S->x2, row_x, row_x, row_x, nullptr},
                      {&u, S->u, S->u2, row_u, row_u, row_u, nullptr},
                      {(void **)&dbc, S->dbc, S->dbc2, R2N * 4, R2N * 4, R2N * 4, nullptr},
                      {(void **)&dt, S->dt, S->dt2, E * 4, E * 4, E * 4, nullptr}};
    lm_status ls = LM_OK;

    LMC_CK(lmc_embed(T, M->embed, D, S->tok, L, res, st), "embedding");
    for (int64_t l = 0; l < d->n_layer && ls == LM_OK; l++) {
        const lmc_layer *G = &M->layers[l];
        float *conv_state = S->conv_state + l * E * (K - 1);
        float *ssm_state = S->ssm_state + l * E * N;
        LMC_CK(lmc_rmsnorm(T, res, L, D, G->norm_w, (float)d->eps, S->hn, st), "rmsnorm");
        if (G->in_b) LMC_CK(lmc_fill_rows(T, xz, 2 * E, L, 2 * E, G->in_b, st), "in_proj bias");
        LMC_TRY(lmc_linear(S->blas, T, G->in_w, 2 * E, D, S->hn, D, L, xz, T, 2 * E, G->in_b ? 1.f : 0.f, tf32, e));
        LMC_CK(lmc_conv(T, xz, 2 * E, L, E, (int)K, G->conv_w, G->conv_b, conv_state, u, st), "conv1d");
        LMC_CK(lmc_conv_state_update(T, xz, 2 * E, L, E, (int)K, conv_state, st), "conv1d state");
        LMC_TRY(lmc_linear(S->blas, T, G->x_w, R2N, E, u, E, L, dbc, LMC_F32, R2N, 0.f, tf32, e));
        /* dt_proj: fp32 operands.  A bf16 model runs it on TF32 tensor cores
         * (inputs rounded to 2^-11, finer than the bf16 activations around
         * it; otherwise an fp32 SGEMM of 2 E R L flops on the CUDA cores);
         * an fp32 model only when the session allows TF32. */
        LMC_TRY(lmc_linear(S->blas, LMC_F32, G->dt_w, E, R, dbc, R2N, L, dt, LMC_F32, E, 0.f,
                           tf32 || T == LMC_BF16, e));
        if (f->sink && !c->capture) {
            LMC_CK(lmc_delta(dt, E, L, E, G->dt_b, S->delta, st), "delta export");
            ls = lmc_sink(c, l, S->delta, L, E, e);
            if (ls != LM_OK) break;
        }
        if (f->tokens_hook && !c->capture) {
            ls = lmc_decimate(c, l, &L, g, sizeof g / sizeof g[0], score, e);
            if (ls != LM_OK) break;
        }
        lmc_scan_args a;
        memset(&a, 0, sizeof a);
        a.batch = 1; a.L = L; a.E = E; a.N = N; a.dtype = T;
        a.u = u; a.ldu = E;
        a.dt = dt; a.lddt = E;
        a.dt_bias = G->dt_b; a.dt_softplus = 1;
        a.A2 = G->A;
        a.B = dbc + R; a.C = dbc + R + N; a.ldbc = R2N;
        a.D = G->D;
        a.z = static_cast<char *>(xz) + (size_t)E * b.ts; a.ldz = 2 * E;
        if (f->filters && f->filters[l].global) {
            a.flag = S->flt_flag + l * E;
            a.tau = S->flt_tau + l * E;
        }
        a.y = S->y; a.ldy = E;
        a.h = ssm_state;
        a.chunk_s = static_cast<float *>(S->chunk);
        /* chunk_h after the chunk sums for the pass's token count (ensure()) */
        a.chunk_h = a.chunk_s + lmc_scan_scratch_s(1, f->n_tokens, E, N, 0, M->sm_count);
        a.n_sm = M->sm_count;
        /* MambaExtend and Modulation: scalars of the scan (prefill only) */
        a.d_scale = f->delta_scale ? f->delta_scale[l] : 0.f;
        a.a_scale = f->a_log_scale ? f->a_log_scale[l] : 0.f;
        LMC_CK(lmc_scan(&a, st), "selective scan");
        ls = lmc_out_proj(S, T, G, D, E, S->y, L, res, tf32, e);
    }
    if (ls != LM_OK || f->n_out == 0) return ls;
    if (f->n_out > L)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "%lld logits asked for, %lld positions left",
                        (long long)f->n_out, (long long)L);
    return lmc_head(S, M, d, res + (L - f->n_out) * D, f->n_out, S->hf, S->logits, tf32, e);
}

/* The fused one-token step (decode.cu): 4 kernels per layer.  Vectors are
 * fp32: xz in S->x (room for cap >= 64 rows of T), y in S->dt. */
lm_status step(lmc_fwd *c, lmi_err *e)
{
    const lmi_dims *d = &c->s->model->dims;
    lmc_session *S = c->S;
    const lmc_model *M = c->M;
    const lmc_dtype T = M->dt;
    const int64_t D = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    const int64_t R2N = R + 2 * N;
    const int nsm = M->sm_count;
    const int pdl = c->pdl ? 1 : 0;
    cudaStream_t st = S->stream;
    float *res = S->res, *xz = static_cast<float *>(S->x), *dbc = S->dbc, *y = S->dt;
    LMC_CK(lmc_embed(T, M->embed, D, S->tok, 1, res, st), "embedding");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmc_layer *G = &M->layers[l];
        float *cs = S->conv_state + l * E * (K - 1);
        LMC_CK(lmc_dec_norm_gemv(T, res, D, G->norm_w, (float)d->eps, G->in_w, 2 * E, G->in_b, xz, nsm, pdl, st),
               "decode: norm + in_proj");
        LMC_CK(lmc_dec_conv_gemv(T, xz, E, cs, G->conv_w, G->conv_b, (int)K, G->x_w, R2N, dbc, nsm, pdl, st),
               "decode: conv + x_proj");
        LMC_CK(lmc_dec_scan_step(xz, E, N, R, (int)K, cs, G->conv_w, G->conv_b, dbc, G->dt_w, G->dt_b, G->A, G->D,
                                 S->ssm_state + l * E * N, y, pdl, st),
               "decode: scan step");
        LMC_CK(lmc_dec_gemv_add(T, y, E, G->out_w, D, G->out_b, res, nsm, pdl, st), "decode: out_proj");
    }
    if (c->f->n_out > 0)
        LMC_CK(lmc_dec_norm_gemv(T, res, D, M->norm_f, (float)d->eps, M->lm_head, d->vocab, NULL, S->logits, nsm,
                                 pdl, st),
               "decode: head");
    return LM_OK;
}

/* One step for n sessions: weights read once (GEMMs with n = sessions), the
 * conv and scan steps reach each session's state through S->batch's
 * pointer tables.  Numerics follow the fused batch-1 step: in_proj's output
 * is fp32, u feeds x_proj in the weights' type and the scan in fp32. */
lm_status batch(const struct lm_model *m, lmc_session *S, int64_t n, bool logits, bool tf32, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    const lmc_model *M = static_cast<const lmc_model *>(m->bk);
    lmc_batch *Bt = S->batch;
    const lmc_dtype T = M->dt;
    const int64_t D = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    const int64_t R2N = R + 2 * N;
    cudaStream_t st = S->stream;
    LMC_CK(lmc_embed(T, M->embed, D, Bt->tok, n, Bt->res, st), "batched decode: embedding");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmc_layer *G = &M->layers[l];
        LMC_CK(lmc_rmsnorm(T, Bt->res, n, D, G->norm_w, (float)d->eps, Bt->hn, st), "batched decode: rmsnorm");
        if (G->in_b)
            LMC_CK(lmc_fill_rows(LMC_F32, Bt->x, 2 * E, n, 2 * E, G->in_b, st), "batched decode: in_proj bias");
        LMC_TRY(lmc_linear(S->blas, T, G->in_w, 2 * E, D, Bt->hn, D, n, Bt->x, LMC_F32, 2 * E, G->in_b ? 1.f : 0.f,
                           tf32, e));
        LMC_CK(lmc_conv_step_batch(T, Bt->x, 2 * E, n, E, (int)K, Bt->conv_ptr, (size_t)(l * E * (K - 1)),
                                   G->conv_w, G->conv_b, Bt->u, Bt->uf, st),
               "batched decode: conv step");
        LMC_TRY(lmc_linear(S->blas, T, G->x_w, R2N, E, Bt->u, E, n, Bt->dbc, LMC_F32, R2N, 0.f, tf32, e));
        LMC_TRY(lmc_linear(S->blas, LMC_F32, G->dt_w, E, R, Bt->dbc, R2N, n, Bt->dt, LMC_F32, E, 0.f,
                           tf32 && T == LMC_F32, e));
        LMC_CK(lmc_scan_step_batch(T, Bt->uf, Bt->dt, Bt->dbc, R2N, R, n, E, (int)N, G->dt_b, G->A, G->D, Bt->x,
                                   Bt->ssm_ptr, (size_t)(l * E * N), Bt->y, st),
               "batched decode: scan step");
        LMC_TRY(lmc_out_proj(S, T, G, D, E, Bt->y, n, Bt->res, tf32, e));
    }
    return logits ? lmc_head(S, M, d, Bt->res, n, Bt->hn, Bt->logits, tf32, e) : LM_OK;
}

/* Packed sequences: the scan's chunk for T tokens in all (as one
 * sequence of T would get) and its scratch for n_chunks of them. */
int varlen_chunk(const struct lm_model *m, int64_t T)
{
    const int nsm = static_cast<const lmc_model *>(m->bk)->sm_count;
    return lmc_scan_chunk(1, T, m->dims.d_inner, m->dims.d_state, 0, nsm);
}

size_t varlen_scan_bytes(const struct lm_model *m, int64_t n_chunks, int chunk)
{
    const int nsm = static_cast<const lmc_model *>(m->bk)->sm_count;
    return lmc_scan_scratch_floats(1, n_chunks * chunk, m->dims.d_inner, m->dims.d_state, chunk, nsm) *
           sizeof(float);
}

/* The pipeline's layer sequence over the packed sequences of q (vanilla:
 * no hooks): the products over all q->T rows, conv and scan in their
 * varlen forms, each sequence on its own session's state. */
lm_status varlen(const struct lm_model *m, lmc_session *S, const lmc_seqs *q, bool tf32, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    const lmc_model *M = static_cast<const lmc_model *>(m->bk);
    const lmc_dtype T = M->dt;
    const dims1 b = dims_of(m);
    const int64_t D = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    const int64_t R2N = R + 2 * N, L = q->T;
    cudaStream_t st = S->stream;
    LMC_CK(lmc_embed(T, M->embed, D, S->tok, L, S->res, st), "batched prefill: embedding");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmc_layer *G = &M->layers[l];
        const size_t conv_off = (size_t)(l * E * (K - 1)), ssm_off = (size_t)(l * E * N);
        LMC_CK(lmc_rmsnorm(T, S->res, L, D, G->norm_w, (float)d->eps, S->hn, st), "batched prefill: rmsnorm");
        if (G->in_b) LMC_CK(lmc_fill_rows(T, S->x, 2 * E, L, 2 * E, G->in_b, st), "batched prefill: in_proj bias");
        LMC_TRY(lmc_linear(S->blas, T, G->in_w, 2 * E, D, S->hn, D, L, S->x, T, 2 * E, G->in_b ? 1.f : 0.f, tf32, e));
        LMC_CK(lmc_conv_varlen(T, S->x, 2 * E, L, q->cu, q->n, E, (int)K, G->conv_w, G->conv_b, q->conv_ptr, conv_off,
                               S->u, st),
               "batched prefill: conv1d");
        LMC_CK(lmc_conv_state_update_varlen(T, S->x, 2 * E, q->cu, q->n, E, (int)K, q->conv_ptr, conv_off, st),
               "batched prefill: conv1d state");
        LMC_TRY(lmc_linear(S->blas, T, G->x_w, R2N, E, S->u, E, L, S->dbc, LMC_F32, R2N, 0.f, tf32, e));
        /* dt_proj as in pipeline(): TF32 for a bf16 model */
        LMC_TRY(lmc_linear(S->blas, LMC_F32, G->dt_w, E, R, S->dbc, R2N, L, S->dt, LMC_F32, E, 0.f,
                           tf32 || T == LMC_BF16, e));
        lmc_scan_args a;
        memset(&a, 0, sizeof a);
        a.batch = 1; a.L = L; a.E = E; a.N = N; a.dtype = T;
        a.u = S->u; a.ldu = E;
        a.dt = S->dt; a.lddt = E;
        a.dt_bias = G->dt_b; a.dt_softplus = 1;
        a.A2 = G->A;
        a.B = S->dbc + R; a.C = S->dbc + R + N; a.ldbc = R2N;
        a.D = G->D;
        a.z = static_cast<char *>(S->x) + (size_t)E * b.ts; a.ldz = 2 * E;
        a.y = S->y; a.ldy = E;
        a.chunk_s = static_cast<float *>(q->scan);
        a.chunk_h = a.chunk_s + lmc_scan_scratch_s(1, q->n_chunks * q->chunk, E, N, q->chunk, M->sm_count);
        a.chunk = q->chunk;
        a.n_sm = M->sm_count;
        a.n_seq = q->n; a.cu_seq = q->cu; a.cu_chunk = q->cu_chunk; a.n_chunks = q->n_chunks;
        a.h_ptr = q->ssm_ptr; a.h_off = ssm_off;
        LMC_CK(lmc_scan(&a, st), "batched prefill: selective scan");
        LMC_TRY(lmc_out_proj(S, T, G, D, E, S->y, L, S->res, tf32, e));
    }
    return LM_OK;
}

} // namespace

extern const lmc_arch lmc_mamba1 = {LMI_MIXER_MAMBA1, check,    main_bufs, deci_bufs,    batch_bufs,
                                    scan_bytes,     pipeline, step,      batch,        varlen_chunk,
                                    varlen_scan_bytes, varlen};
