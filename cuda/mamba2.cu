/*
 * mamba2.cu - the Mamba-2 layer sequences (lmc_mamba2), the GPU twin of
 * lib/cpu/mamba2.c (docs MAMBA.md §2); the plumbing around them is
 * session.cu's, the kernels ssd.cu's.  Per layer of a forward pass over L
 * tokens:
 *
 *   hn  = RMSNorm(res)                           norm.cu
 *   zx  = hn W_in^T (+ b)   fp32 [L][2E+2GN+H]   cuBLAS  (z | xBC | dt)
 *   u   = SiLU(conv1d(xBC) + b)  fp32 [L][CD]    conv.cu (state carried)
 *   dl  = clamp(softplus(dt + dt_bias))  [L][H]  lmc_ssd_delta
 *   [Δ sink; DeciMamba: score, host selection, gather]
 *   [MambaExtend: dl = filter(dl) * s; Modulation: A' per head]   ssd.cu, norm.cu
 *   y   = SSD(x, dl, A, B, C) + D x   fp32       lmc_ssd_scan / lmc_ssd_step (LongMamba filter fused)
 *   yn  = RMSNorm_g(y * silu(z)) per group       lmc_gated_norm
 *   res = res + yn W_out^T (+ b)                 cuBLAS, beta = 1
 *
 * One-token steps run the same sequence with the direct recurrence; the
 * batched step (lm_session_decode_batch) runs the products as GEMMs with
 * n = sessions and one conv step, Δ, recurrence and gated norm launch per
 * layer for all sessions, each reaching its state through the batch's
 * pointer tables.  A batched prefill (varlen) runs the prefill sequence
 * over packed prompts with the varlen conv and SSD.
 */
#include "common.cuh"
#include "gemm.cuh"
#include "kernels.h"

#include <math.h>
#include <string.h>

namespace {

int64_t in_rows(const lmi_dims *d) { return 2 * d->d_inner + 2 * d->n_groups * d->d_state + d->n_heads; }

lm_status check(const struct lm_model *m, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    if (d->d_model <= 0 || d->d_inner <= 0 || d->d_state <= 0 || d->n_layer <= 0 || d->vocab <= 0 ||
        d->n_heads <= 0 || d->head_dim <= 0 || d->n_groups <= 0 || d->n_heads * d->head_dim != d->d_inner ||
        d->n_heads % d->n_groups != 0 || d->d_inner % d->n_groups != 0 ||
        d->conv_dim != d->d_inner + 2 * d->n_groups * d->d_state || d->n_channels != d->n_heads)
        return lmi_fail(e, LM_ERR_SHAPE, "cuda backend: invalid Mamba-2 dimensions");
    if (d->d_conv < 2 || d->d_conv > 8)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: d_conv %lld not in [2, 8]", (long long)d->d_conv);
    if (d->n_heads > 65535 || d->head_dim > 65535 * LMC_SSD_CHUNK || d->d_state > INT32_MAX / 2 ||
        in_rows(d) > INT32_MAX / 2 || d->vocab > INT32_MAX / 2)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: Mamba-2 dimensions too large");
    if (!m->embed.data || !m->norm_f.data || !m->lm_head.data || !m->layers)
        return lmi_fail(e, LM_ERR_MISSING, "cuda backend: model weights missing");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmi_layer *L = &m->layers[l];
        if (!L->norm_w.data || !L->mamba.in_w.data || !L->mamba.conv_w.data || !L->mamba.dt_b.data || !L->mamba.A.data || !L->mamba.D.data ||
            !L->mamba.gnorm_w.data || !L->mamba.out_w.data)
            return lmi_fail(e, LM_ERR_MISSING, "cuda backend: Mamba-2 layer %lld weights missing", (long long)l);
    }
    return LM_OK;
}

struct dims2 {
    size_t D, E, H, CD, ld, ts;
};

dims2 dims_of(const struct lm_model *m)
{
    const lmi_dims *d = &m->dims;
    return dims2{(size_t)d->d_model, (size_t)d->d_inner, (size_t)d->n_heads, (size_t)d->conv_dim,
                 (size_t)in_rows(d), lmc_dtype_size(lmc_model_dt(m))};
}

size_t main_bufs(const struct lm_model *m, lmc_session *S, size_t cap, lmc_buf *r)
{
    const dims2 b = dims_of(m);
    const lmc_buf rows[] = {{(void **)&S->tok, cap * 4},       {(void **)&S->res, cap * b.D * 4},
                            {&S->hn, cap * b.D * b.ts},       {&S->x, cap * b.ld * 4},
                            {&S->u, cap * b.CD * 4},          {(void **)&S->dt, cap * b.H * 4},
                            {&S->y, cap * b.E * 4},           {&S->yn, cap * b.E * b.ts},
                            {(void **)&S->scores, cap * 4},   {(void **)&S->idx, cap * 4}};
    memcpy(r, rows, sizeof rows);
    return sizeof rows / sizeof rows[0];
}

/* Gather targets: residual, z only, u, Δ. */
size_t deci_bufs(const struct lm_model *m, lmc_session *S, size_t L, lmc_buf *r)
{
    const dims2 b = dims_of(m);
    const lmc_buf rows[] = {{(void **)&S->res2, L * b.D * 4}, {&S->x2, L * b.E * 4}, {&S->u2, L * b.CD * 4},
                            {(void **)&S->dt2, L * b.H * 4}};
    memcpy(r, rows, sizeof rows);
    return sizeof rows / sizeof rows[0];
}

size_t batch_bufs(const struct lm_model *m, lmc_batch *B, size_t cap, lmc_buf *r)
{
    const dims2 b = dims_of(m);
    const size_t V = (size_t)m->dims.vocab;
    const lmc_buf rows[] = {{(void **)&B->tok, cap * 4},      {(void **)&B->conv_ptr, cap * sizeof(float *)},
                            {(void **)&B->ssm_ptr, cap * sizeof(float *)}, {(void **)&B->res, cap * b.D * 4},
                            {&B->hn, cap * b.D * b.ts},       {(void **)&B->x, cap * b.ld * 4},
                            {&B->u, cap * b.CD * 4},          {(void **)&B->dt, cap * b.H * 4},
                            {&B->y, cap * b.E * 4},           {&B->yn, cap * b.E * b.ts},
                            {(void **)&B->logits, cap * V * 4}};
    memcpy(r, rows, sizeof rows);
    return sizeof rows / sizeof rows[0];
}

size_t scan_bytes(const struct lm_model *m, int64_t L)
{
    const lmi_dims *d = &m->dims;
    return L > 1 ? lmc_ssd_scratch_bytes(L, (int)d->n_heads, (int)d->head_dim, (int)d->d_state, (int)d->n_groups)
                 : 0;
}

/* DeciMamba scores from Δ (the gather pairs' last). */
cudaError_t score(lmc_fwd *c, int64_t, int64_t L, const lmc_gather *g)
{
    return lmc_deci_scores_heads(static_cast<const float *>(*g[3].cur), L, (int)c->s->model->dims.n_heads,
                                 c->S->scores, c->S->stream);
}

bool dt_clamped(const lmi_dims *d) { return d->dt_limit_lo > 0.0 || isfinite(d->dt_limit_hi); }

lm_status pipeline(lmc_fwd *c, int64_t L, lmi_err *e)
{
    const struct lm_model *m = c->s->model;
    const lmc_model *M = c->M;
    lmc_session *S = c->S;
    const lmi_forward *f = c->f;
    const lmi_dims *d = &m->dims;
    const lmc_dtype T = M->dt;
    const int64_t D = d->d_model, E = d->d_inner, H = d->n_heads, CD = d->conv_dim, K = d->d_conv;
    const int64_t ld = in_rows(d), G = d->n_groups, N = d->d_state, P = d->head_dim;
    const bool tf32 = f->allow_tf32;
    cudaStream_t st = S->stream;
    float *res = S->res, *zx = static_cast<float *>(S->x), *u = static_cast<float *>(S->u), *dl = S->dt;
    float *z = zx, *ub = u, *dlb = dl;
    int64_t ldz = ld;
    lmc_gather g[] = {{(void **)&res, S->res, S->res2, D * 4, D * 4, D * 4, nullptr},
                      {(void **)&z, zx, S->x2, ld * 4, E * 4, E * 4, &ldz},
                      {(void **)&ub, u, S->u2, CD * 4, CD * 4, CD * 4, nullptr},
                      {(void **)&dlb, dl, S->dt2, H * 4, H * 4, H * 4, nullptr}};

    LMC_CK(lmc_embed(T, M->embed, D, S->tok, L, res, st), "embedding");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmc_layer *Ly = &M->layers[l];
        float *conv_state = S->conv_state + l * CD * (K - 1);
        float *ssm_state = S->ssm_state + l * E * N;
        /* after a decimation the layer runs on the gathered residual; zx/u/dl are rebuilt */
        z = zx;
        ldz = ld;
        ub = u;
        dlb = dl;
        LMC_CK(lmc_rmsnorm(T, res, L, D, Ly->norm_w, (float)d->eps, S->hn, st), "rmsnorm");
        if (Ly->in_b) LMC_CK(lmc_fill_rows(LMC_F32, zx, ld, L, ld, Ly->in_b, st), "in_proj bias");
        LMC_TRY(lmc_linear(S->blas, T, Ly->in_w, ld, D, S->hn, D, L, zx, LMC_F32, ld, Ly->in_b ? 1.f : 0.f, tf32, e));
        LMC_CK(lmc_conv(LMC_F32, zx + E, ld, L, CD, (int)K, Ly->conv_w, Ly->conv_b, conv_state, u, st), "conv1d");
        LMC_CK(lmc_conv_state_update(LMC_F32, zx + E, ld, L, CD, (int)K, conv_state, st), "conv1d state");
        LMC_CK(lmc_ssd_delta(zx, ld, E + CD, L, (int)H, Ly->dt_b, dt_clamped(d) ? 1 : 0, (float)d->dt_limit_lo,
                             (float)d->dt_limit_hi, dl, st),
               "delta");
        if (f->sink && !c->capture) LMC_TRY(lmc_sink(c, l, dl, L, H, e));
        if (f->tokens_hook && !c->capture) LMC_TRY(lmc_decimate(c, l, &L, g, sizeof g / sizeof g[0], score, e));
        const bool filt = f->filters && f->filters[l].global;
        const uint8_t *flag = filt ? S->flt_flag + l * H : nullptr;
        const float *tau = filt ? S->flt_tau + l * H : nullptr;
        const float *A = Ly->A;
        if (f->delta_scale && f->delta_scale[l] != 1.f) {
            /* MambaExtend: mask on the unscaled Δ, then scale; the SSD runs unfiltered */
            LMC_CK(lmc_ssd_delta_scale(dlb, L, (int)H, flag, tau, f->delta_scale[l], st), "delta scale");
            flag = nullptr;
            tau = nullptr;
        }
        if (f->a_log_scale && f->a_log_scale[l] != 1.f) {
            /* Modulation: the heads' A' */
            float *Am = S->mod_A + l * H;
            LMC_CK(lmc_modulate(Ly->A, (size_t)H, f->a_log_scale[l], Am, st), "modulation");
            A = Am;
        }
        float *y = static_cast<float *>(S->y);
        if (L == 1) {
            LMC_CK(lmc_ssd_step(ub, CD, dlb, H, 1, (int)H, (int)P, (int)N, (int)G, (int)E, A, Ly->D, flag, tau,
                                ssm_state, nullptr, 0, y, E, st),
                   "SSD step");
        } else {
            lmc_ssd_args a = {L, (int)H, (int)P, (int)N, (int)G, (int)E, ub, CD, dlb, A, Ly->D,
                              flag, tau, ssm_state, y, E, S->chunk};
            LMC_CK(lmc_ssd_scan(&a, st), "SSD scan");
        }
        LMC_CK(lmc_gated_norm(T, y, L, E, (int)G, z, ldz, Ly->gnorm_w, (float)d->eps, S->yn, st), "gated norm");
        LMC_TRY(lmc_out_proj(S, T, Ly, D, E, S->yn, L, res, tf32, e));
    }
    if (f->n_out == 0) return LM_OK;
    if (f->n_out > L)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda: %lld logits asked for but only %lld positions remain",
                        (long long)f->n_out, (long long)L);
    return lmc_head(S, M, d, res + (L - f->n_out) * D, f->n_out, S->hf, S->logits, tf32, e);
}

/* One step for n sessions: the products as GEMMs with n = sessions (weights
 * read once), then per layer one launch each of the conv step, Δ, the
 * recurrence and the gated norm over all sessions; states through the
 * pointer tables.  Same numerics as a session's own one-token step. */
lm_status batch(const struct lm_model *m, lmc_session *S, int64_t n, bool logits, bool tf32, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    const lmc_model *M = static_cast<const lmc_model *>(m->bk);
    lmc_batch *Bt = S->batch;
    const lmc_dtype T = M->dt;
    const int64_t D = d->d_model, E = d->d_inner, H = d->n_heads, CD = d->conv_dim, K = d->d_conv;
    const int64_t ld = in_rows(d), G = d->n_groups, N = d->d_state, P = d->head_dim;
    cudaStream_t st = S->stream;
    float *u = static_cast<float *>(Bt->u), *y = static_cast<float *>(Bt->y);
    LMC_CK(lmc_embed(T, M->embed, D, Bt->tok, n, Bt->res, st), "batched decode: embedding");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmc_layer *Ly = &M->layers[l];
        LMC_CK(lmc_rmsnorm(T, Bt->res, n, D, Ly->norm_w, (float)d->eps, Bt->hn, st), "batched decode: rmsnorm");
        if (Ly->in_b) LMC_CK(lmc_fill_rows(LMC_F32, Bt->x, ld, n, ld, Ly->in_b, st), "batched decode: in_proj bias");
        LMC_TRY(lmc_linear(S->blas, T, Ly->in_w, ld, D, Bt->hn, D, n, Bt->x, LMC_F32, ld, Ly->in_b ? 1.f : 0.f, tf32,
                           e));
        LMC_CK(lmc_conv_step_batch(LMC_F32, Bt->x + E, ld, n, CD, (int)K, Bt->conv_ptr, (size_t)(l * CD * (K - 1)),
                                   Ly->conv_w, Ly->conv_b, nullptr, u, st),
               "batched decode: conv step");
        LMC_CK(lmc_ssd_delta(Bt->x, ld, E + CD, n, (int)H, Ly->dt_b, dt_clamped(d) ? 1 : 0, (float)d->dt_limit_lo,
                             (float)d->dt_limit_hi, Bt->dt, st),
               "batched decode: delta");
        LMC_CK(lmc_ssd_step(u, CD, Bt->dt, H, n, (int)H, (int)P, (int)N, (int)G, (int)E, Ly->A, Ly->D, nullptr,
                            nullptr, nullptr, Bt->ssm_ptr, (size_t)(l * E * N), y, E, st),
               "batched decode: SSD step");
        LMC_CK(lmc_gated_norm(T, y, n, E, (int)G, Bt->x, ld, Ly->gnorm_w, (float)d->eps, Bt->yn, st),
               "batched decode: gated norm");
        LMC_TRY(lmc_out_proj(S, T, Ly, D, E, Bt->yn, n, Bt->res, tf32, e));
    }
    return logits ? lmc_head(S, M, d, Bt->res, n, Bt->hn, Bt->logits, tf32, e) : LM_OK;
}

/* Packed sequences: SSD chunks of LMC_SSD_CHUNK tokens and their scratch. */
int varlen_chunk(const struct lm_model *, int64_t) { return LMC_SSD_CHUNK; }

size_t varlen_scan_bytes(const struct lm_model *m, int64_t n_chunks, int chunk)
{
    const lmi_dims *d = &m->dims;
    return lmc_ssd_scratch_bytes(n_chunks * chunk, (int)d->n_heads, (int)d->head_dim, (int)d->d_state,
                                 (int)d->n_groups);
}

/* The pipeline's layer sequence over the packed sequences of q (vanilla:
 * no hooks), conv and SSD in their varlen forms, each sequence on its own
 * session's state; every sequence (one token too) takes the chunked SSD. */
lm_status varlen(const struct lm_model *m, lmc_session *S, const lmc_seqs *q, bool tf32, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    const lmc_model *M = static_cast<const lmc_model *>(m->bk);
    const lmc_dtype T = M->dt;
    const int64_t D = d->d_model, E = d->d_inner, H = d->n_heads, CD = d->conv_dim, K = d->d_conv;
    const int64_t ld = in_rows(d), G = d->n_groups, N = d->d_state, P = d->head_dim, L = q->T;
    cudaStream_t st = S->stream;
    float *zx = static_cast<float *>(S->x), *u = static_cast<float *>(S->u), *y = static_cast<float *>(S->y);
    LMC_CK(lmc_embed(T, M->embed, D, S->tok, L, S->res, st), "batched prefill: embedding");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmc_layer *Ly = &M->layers[l];
        const size_t conv_off = (size_t)(l * CD * (K - 1));
        LMC_CK(lmc_rmsnorm(T, S->res, L, D, Ly->norm_w, (float)d->eps, S->hn, st), "batched prefill: rmsnorm");
        if (Ly->in_b) LMC_CK(lmc_fill_rows(LMC_F32, zx, ld, L, ld, Ly->in_b, st), "batched prefill: in_proj bias");
        LMC_TRY(lmc_linear(S->blas, T, Ly->in_w, ld, D, S->hn, D, L, zx, LMC_F32, ld, Ly->in_b ? 1.f : 0.f, tf32, e));
        LMC_CK(lmc_conv_varlen(LMC_F32, zx + E, ld, L, q->cu, q->n, CD, (int)K, Ly->conv_w, Ly->conv_b, q->conv_ptr,
                               conv_off, u, st),
               "batched prefill: conv1d");
        LMC_CK(lmc_conv_state_update_varlen(LMC_F32, zx + E, ld, q->cu, q->n, CD, (int)K, q->conv_ptr, conv_off, st),
               "batched prefill: conv1d state");
        LMC_CK(lmc_ssd_delta(zx, ld, E + CD, L, (int)H, Ly->dt_b, dt_clamped(d) ? 1 : 0, (float)d->dt_limit_lo,
                             (float)d->dt_limit_hi, S->dt, st),
               "batched prefill: delta");
        const lmc_ssd_args a = {L,  (int)H, (int)P, (int)N, (int)G, (int)E, u,  CD, S->dt, Ly->A, Ly->D,
                                nullptr, nullptr, nullptr, y, E, q->scan};
        const lmc_ssd_seqs v = {q->n, q->n_chunks, q->chunk_t0, q->cu_chunk, q->ssm_ptr, (size_t)(l * E * N)};
        LMC_CK(lmc_ssd_scan_varlen(&a, &v, st), "batched prefill: SSD scan");
        LMC_CK(lmc_gated_norm(T, y, L, E, (int)G, zx, ld, Ly->gnorm_w, (float)d->eps, S->yn, st),
               "batched prefill: gated norm");
        LMC_TRY(lmc_out_proj(S, T, Ly, D, E, S->yn, L, S->res, tf32, e));
    }
    return LM_OK;
}

} // namespace

extern const lmc_arch lmc_mamba2 = {LMI_MIXER_MAMBA2, check,    main_bufs, deci_bufs,    batch_bufs,
                                    scan_bytes,     pipeline, nullptr,   batch,        varlen_chunk,
                                    varlen_scan_bytes, varlen};
