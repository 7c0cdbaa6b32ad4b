/*
 * cpu/backend.c - the CPU backend: one forward pass over a chunk of tokens
 * for the whole model (lmi_forward), on host weights in their stored type.
 *
 * Activations are token-major [T][features] so that every projection is
 * one row-major GEMM against the [out][in] weight (CblasTrans); T == 1
 * (decode) uses GEMV.  Weights stay in their stored type (F32 / F16 /
 * BF16): the shared kernels (cpu/ops.c: linear, RMSNorm, conv, embedding)
 * widen 16-bit weights on the fly.  The residual stream stays fp32 across layers and
 * out_proj accumulates straight into it (beta = 1).
 *
 * Threads: the scan (by channel blocks) and the conv (by tokens) run on
 * model->n_threads threads (cpu/parallel.c: OpenMP when the BLAS shares
 * libgomp's pool, else threads of our own) when a chunk is large enough;
 * the GEMMs use the BLAS library's own threads.  Decode steps run our
 * part on one thread: a thread start per layer costs more than the work.
 *
 * Mamba-2 runs in cpu/mamba2.c (lmi_cpu_m2_forward) on the same session
 * state arrays and transposed conv weights; its scratch hangs off the
 * session (cs->m2).
 */
#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu/mamba2.h"
#include "cpu/ops.h"
#include "cpu/parallel.h"
#include "cpu/vmath.h"

/* Per model: conv weights transposed to [layer][K + 1][conv_dim] (row K
 * the bias) so the conv loop runs along channels (lmi_conv_prepare). */
typedef struct cpu_model {
    float *conv_wT;
    bool has16;        /* some matrix is F16 / BF16: sessions need the tile scratch */
} cpu_model;

/* Per session: the recurrent state and scratch for `cap` tokens. */
typedef struct cpu_session {
    float *conv;       /* [n_layer][conv_dim][K-1], oldest column first */
    float *ssm;        /* [n_layer][E][N] */
    int64_t cap;       /* tokens the scratch below holds */
    float *res;        /* [cap][d] residual stream */
    float *hn;         /* [cap][d] normalised */
    float *xz;         /* [cap][2E] in_proj output, x | z */
    float *u;          /* [cap][E] conv + SiLU output */
    float *xdbl;       /* [cap][R+2N] x_proj output, dt_low | B | C */
    float *dt;         /* [cap][E] dt_proj output / Δ */
    float *y;          /* [cap][E] scan output */
    float *score;      /* [cap] DeciMamba token scores */
    int64_t *idx;      /* [cap] DeciMamba kept indices */
    int64_t *sel;      /* [cap] lmi_deci_select scratch */
    float *head;       /* [K-1][conv_dim] conv state transposed */
    float *tile;       /* lmi_ops_tile_floats: 16-bit weight rows widened for a GEMM;
                        * NULL when every matrix is F32 */
    lmi_cpu_m2_scratch *m2; /* Mamba-2 scratch (cpu/mamba2.c); the M1 scratch is unused */
} cpu_session;

static int cpu_threads(const lm_model *m)
{
    return m->n_threads > 0 ? m->n_threads : 1;
}

/* ---- kernels ----------------------------------------------------------- */

/* Δ = F.softplus(dt + dt_bias), in place over [T][E]. */
LMI_CPU_CLONES
static void softplus_rows(float *dt, const float *bias, int64_t T, int64_t E)
{
    for (int64_t t = 0; t < T; t++) {
        float *r = dt + t * E;
        LMI_SIMD
        for (int64_t e = 0; e < E; e++) r[e] = lmi_softplusf(r[e] + (bias ? bias[e] : 0.0f));
    }
}

/* ---- scratch ------------------------------------------------------------ */

static void scratch_free(cpu_session *cs)
{
    lmi_free(cs->res);
    lmi_free(cs->hn);
    lmi_free(cs->xz);
    lmi_free(cs->u);
    lmi_free(cs->xdbl);
    lmi_free(cs->dt);
    lmi_free(cs->y);
    lmi_free(cs->score);
    lmi_free(cs->idx);
    lmi_free(cs->sel);
    cs->res = cs->hn = cs->xz = cs->u = cs->xdbl = cs->dt = cs->y = cs->score = NULL;
    cs->idx = cs->sel = NULL;
    cs->cap = 0;
}

/* Makes the scratch hold T tokens; contents are not kept. */
static lm_status scratch_reserve(cpu_session *cs, const lmi_dims *dm, int64_t T, lmi_err *e)
{
    if (T <= cs->cap) return LM_OK;
    scratch_free(cs);
    const size_t n = (size_t)T;
    const size_t d = (size_t)dm->d_model, E = (size_t)dm->d_inner;
    const size_t xdbl = (size_t)(dm->dt_rank + 2 * dm->d_state);
    cs->res = lmi_alloc_raw(n, d * sizeof(float));
    cs->hn = lmi_alloc_raw(n, d * sizeof(float));
    cs->xz = lmi_alloc_raw(n, 2 * E * sizeof(float));
    cs->u = lmi_alloc_raw(n, E * sizeof(float));
    cs->xdbl = lmi_alloc_raw(n, xdbl * sizeof(float));
    cs->dt = lmi_alloc_raw(n, E * sizeof(float));
    cs->y = lmi_alloc_raw(n, E * sizeof(float));
    cs->score = lmi_alloc_raw(n, sizeof(float));
    cs->idx = lmi_alloc_raw(n, sizeof(int64_t));
    cs->sel = lmi_alloc_raw(n, sizeof(int64_t));
    if (!cs->res || !cs->hn || !cs->xz || !cs->u || !cs->xdbl || !cs->dt || !cs->y ||
        !cs->score || !cs->idx || !cs->sel) {
        scratch_free(cs);
        return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the scratch of %lld tokens",
                        (long long)T);
    }
    cs->cap = T;
    return LM_OK;
}

/* ---- model ------------------------------------------------------------- */

static void cpu_model_free(lm_model *m)
{
    if (!m || !m->bk) return;
    cpu_model *cm = m->bk;
    lmi_free(cm->conv_wT);
    lmi_free(cm);
    m->bk = NULL;
}

static lm_status cpu_model_init(lm_model *m, lmi_err *e)
{
    if (!m) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: model is NULL");
    const lmi_dims *d = &m->dims;
    lm_status cst = LM_OK;
    if (d->arch == LM_ARCH_MAMBA2)
        cst = lmi_cpu_m2_check(m, e);
    else if (d->arch != LM_ARCH_MAMBA1)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cpu backend: architecture %d is not supported",
                        (int)d->arch);
    if (cst != LM_OK) return cst;
    if (d->arch == LM_ARCH_MAMBA1 &&
        (d->d_model <= 0 || d->d_inner <= 0 || d->d_state < 0 || d->dt_rank <= 0 ||
         d->d_conv <= 0 || d->n_layer <= 0 || d->vocab <= 0 || d->conv_dim != d->d_inner))
        return lmi_fail(e, LM_ERR_SHAPE, "cpu: invalid Mamba-1 dimensions");
    if (d->d_conv > 64)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cpu: d_conv %lld > 64 is not supported",
                        (long long)d->d_conv);
    /* BLAS takes int sizes. */
    const int64_t big = d->vocab > 2 * d->d_inner ? d->vocab : 2 * d->d_inner;
    if (big > INT32_MAX / 2 || d->d_model > INT32_MAX / 2)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cpu: dimensions too large for BLAS");
    if (!m->embed.data || !m->norm_f.data || !m->lm_head.data || !m->layers)
        return lmi_fail(e, LM_ERR_MISSING, "cpu: model weights missing");
    for (int64_t l = 0; l < d->n_layer && d->arch == LM_ARCH_MAMBA1; l++) {
        const lmi_layer *L = &m->layers[l];
        if (!L->norm_w.data || !L->in_w.data || !L->conv_w.data || !L->x_w.data ||
            !L->dt_w.data || !lmi_weight_f32(&L->dt_b) || !lmi_weight_f32(&L->A) ||
            !lmi_weight_f32(&L->D) || !L->out_w.data)
            return lmi_fail(e, LM_ERR_MISSING, "cpu: layer %lld weights missing", (long long)l);
    }
    cpu_model_free(m);
    cpu_model *cm = lmi_alloc(1, sizeof *cm);
    if (!cm) return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory");
    const size_t per = (size_t)((d->d_conv + 1) * d->conv_dim);
    cm->conv_wT = lmi_alloc_raw((size_t)d->n_layer, per * sizeof(float));
    if (!cm->conv_wT) {
        lmi_free(cm);
        return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for conv weights");
    }
    cm->has16 = m->embed.type != LMI_W_F32 || m->lm_head.type != LMI_W_F32;
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmi_layer *L = &m->layers[l];
        const lmi_weight *mats[5] = {&L->in_w, &L->x_w, &L->dt_w, &L->out_w, &L->in_b};
        for (int k = 0; k < 5; k++) cm->has16 |= mats[k]->data && mats[k]->type != LMI_W_F32;
    }
    for (int64_t l = 0; l < d->n_layer; l++)
        lmi_conv_prepare(&m->layers[l].conv_w, &m->layers[l].conv_b,
                         cm->conv_wT + (size_t)l * per, d->conv_dim, d->d_conv);
    m->bk = cm;
    return LM_OK;
}

/* ---- session ------------------------------------------------------------ */

static void cpu_session_free(lm_session *s)
{
    if (!s || !s->bk) return;
    cpu_session *cs = s->bk;
    scratch_free(cs);
    lmi_cpu_m2_free(cs->m2);
    lmi_free(cs->conv);
    lmi_free(cs->ssm);
    lmi_free(cs->head);
    lmi_free(cs->tile);
    lmi_free(cs);
    s->bk = NULL;
}

static lm_status cpu_session_init(lm_session *s, lmi_err *e)
{
    const lm_model *m = s->model;
    const lmi_dims *d = &m->dims;
    if ((d->arch != LM_ARCH_MAMBA1 && d->arch != LM_ARCH_MAMBA2) || !m->bk)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cpu backend: model is not initialised");
    cpu_session *cs = lmi_alloc(1, sizeof *cs);
    if (!cs) return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the session");
    s->bk = cs;
    cs->conv = lmi_alloc(lmi_conv_state_floats(d), sizeof(float));
    cs->ssm = lmi_alloc(lmi_ssm_state_floats(d), sizeof(float));
    cs->head = lmi_alloc_raw((size_t)((d->d_conv - 1) * d->conv_dim) + 1, sizeof(float));
    const cpu_model *cm = m->bk;
    if (cm->has16) cs->tile = lmi_alloc_raw(lmi_ops_tile_floats(d), sizeof(float));
    lm_status st = LM_OK;
    if (!cs->conv || !cs->ssm || !cs->head || (cm->has16 && !cs->tile))
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the session state");
    else if (d->arch == LM_ARCH_MAMBA2)
        st = lmi_cpu_m2_reserve(&cs->m2, d, s->chunk_size > 0 ? s->chunk_size : 1, e);
    else
        st = scratch_reserve(cs, d, s->chunk_size > 0 ? s->chunk_size : 1, e);
    if (st != LM_OK) cpu_session_free(s);
    return st;
}

static void cpu_session_reset(lm_session *s)
{
    if (!s || !s->bk) return;
    cpu_session *cs = s->bk;
    const lmi_dims *d = &s->model->dims;
    memset(cs->conv, 0, lmi_conv_state_floats(d) * sizeof(float));
    memset(cs->ssm, 0, lmi_ssm_state_floats(d) * sizeof(float));
}

static lm_status cpu_state_read(lm_session *s, float *conv, float *ssm, lmi_err *e)
{
    if (!s || !s->bk) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: no session state");
    cpu_session *cs = s->bk;
    const lmi_dims *d = &s->model->dims;
    if (conv) memcpy(conv, cs->conv, lmi_conv_state_floats(d) * sizeof(float));
    if (ssm) memcpy(ssm, cs->ssm, lmi_ssm_state_floats(d) * sizeof(float));
    return LM_OK;
}

static lm_status cpu_state_write(lm_session *s, const float *conv, const float *ssm, lmi_err *e)
{
    if (!s || !s->bk) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: no session state");
    cpu_session *cs = s->bk;
    const lmi_dims *d = &s->model->dims;
    if (conv) memcpy(cs->conv, conv, lmi_conv_state_floats(d) * sizeof(float));
    if (ssm) memcpy(cs->ssm, ssm, lmi_ssm_state_floats(d) * sizeof(float));
    return LM_OK;
}

/* ---- forward ------------------------------------------------------------ */

/* DeciMamba in one layer: scores ||Δ[t,:]||_2, keeps K + R tokens and
 * gathers the rows every later step reads.  *T shrinks to the kept count. */
static lm_status deci_layer(cpu_session *cs, const lmi_dims *d, const lmi_forward *f, int64_t layer,
                            int64_t *T, lmi_err *e)
{
    const int64_t L = *T, E = d->d_inner, dm = d->d_model;
    int64_t n = 0;
    lm_status st = lmi_token_plan(f->tokens_hook, layer, cs->dt, L, E, cs->score, cs->idx, cs->sel, &n, e);
    if (st != LM_OK || n == 0) return st;
    const int64_t nx = d->dt_rank + 2 * d->d_state;
    /* idx is ascending with idx[i] >= i, so an in-place forward gather
     * never reads a row it has already overwritten. */
    for (int64_t i = 0; i < n; i++) {
        const int64_t src = cs->idx[i];
        if (src < i || src >= L)
            return lmi_fail(e, LM_ERR_BACKEND, "cpu: DeciMamba selection is not ascending");
        if (src == i) continue;
        memcpy(cs->u + i * E, cs->u + src * E, (size_t)E * sizeof(float));
        memcpy(cs->dt + i * E, cs->dt + src * E, (size_t)E * sizeof(float));
        memcpy(cs->xdbl + i * nx, cs->xdbl + src * nx, (size_t)nx * sizeof(float));
        memcpy(cs->xz + i * 2 * E + E, cs->xz + src * 2 * E + E, (size_t)E * sizeof(float));
        memcpy(cs->res + i * dm, cs->res + src * dm, (size_t)dm * sizeof(float));
    }
    *T = n;
    return LM_OK;
}

static lm_status forward_m1(lm_session *s, const lmi_forward *f, lmi_err *e)
{
    const lm_model *m = s->model;
    const lmi_dims *d = &m->dims;
    cpu_session *cs = s->bk;
    const cpu_model *cm = m->bk;
    const int nt = cpu_threads(m);
    const int64_t dm = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    const int64_t nx = R + 2 * N;

    /* Everything that can fail before the state changes. */
    lm_status st = scratch_reserve(cs, d, f->n_tokens, e);
    if (st != LM_OK) return st;

    int64_t T = f->n_tokens;
    /* hidden_states = self.embeddings(input_ids) */
    lmi_embed(&m->embed, f->tokens, T, cs->res);

    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmi_layer *ly = &m->layers[l];
        float *conv_state = cs->conv + l * E * (K - 1);
        float *h = cs->ssm + l * E * N;
        const bool deci = f->tokens_hook && f->tokens_hook->layers[l];
        const bool explicit_delta = deci || f->sink;

        /* hidden_states = self.norm(hidden_states) */
        lmi_rmsnorm(cs->res, &ly->norm_w, cs->hn, T, dm, d->eps);
        /* xz = self.in_proj(hidden_states) */
        lmi_linear(cs->hn, dm, T, &ly->in_w, &ly->in_b, cs->xz, 2 * E, 0.0f, cs->tile, nt);
        /* x = F.silu(self.conv1d(x)[..., :L]), conv_state = x[..., -(K-1):] */
        lmi_conv_chunk(cs->head, conv_state, cs->xz, 2 * E, T, cm->conv_wT + l * (K + 1) * E, cs->u, E, K, nt);
        /* x_dbl = self.x_proj(x);  dt, B, C = split(x_dbl, [R, N, N]) */
        lmi_linear(cs->u, E, T, &ly->x_w, NULL, cs->xdbl, nx, 0.0f, cs->tile, nt);
        /* dt = self.dt_proj.weight @ dt  (bias and softplus below or in the scan) */
        lmi_linear(cs->xdbl, nx, T, &ly->dt_w, NULL, cs->dt, E, 0.0f, cs->tile, nt);
        if (explicit_delta) {
            softplus_rows(cs->dt, lmi_weight_f32(&ly->dt_b), T, E);
            if (f->sink) {
                st = f->sink(f->sink_ctx, l, cs->dt, T, E, e);
                if (st != LM_OK) return st;
            }
            if (deci) {
                st = deci_layer(cs, d, f, l, &T, e);
                if (st != LM_OK) return st;
            }
        }
        const lmi_filter *flt = f->filters ? &f->filters[l] : NULL;
        lmi_scan_m1 sa = {
            .L = T, .E = E, .N = N,
            .u = cs->u,
            .delta = cs->dt,
            .dt_softplus = !explicit_delta,
            .dt_bias = lmi_weight_f32(&ly->dt_b),
            .A = lmi_weight_f32(&ly->A),
            .B = cs->xdbl + R,
            .C = cs->xdbl + R + N,
            .ldbc = nx,
            .D = lmi_weight_f32(&ly->D),
            .z = cs->xz + E,
            .ldz = 2 * E,
            .global = flt && flt->global ? flt->global : NULL,
            .tau = flt && flt->global ? flt->tau : NULL,
            .h = h,
            .y = cs->y,
        };
        lmi_cpu_scan_m1(&sa, nt);
        /* hidden_states = residual + self.out_proj(y) */
        lmi_linear(cs->y, E, T, &ly->out_w, &ly->out_b, cs->res, dm, 1.0f, cs->tile, nt);
    }

    if (f->n_out > 0) {
        if (f->n_out > T)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                            "cpu: %lld logits asked for but only %lld positions remain",
                            (long long)f->n_out, (long long)T);
        /* logits = self.lm_head(self.norm_f(hidden_states[:, -n_out:])) */
        lmi_rmsnorm(cs->res + (T - f->n_out) * dm, &m->norm_f, cs->hn, f->n_out, dm, d->eps);
        lmi_linear(cs->hn, dm, f->n_out, &m->lm_head, NULL, f->logits, d->vocab, 0.0f, cs->tile, nt);
    }
    return LM_OK;
}

static lm_status cpu_forward(lm_session *s, const lmi_forward *f, lmi_err *e)
{
    if (!s || !s->bk || !f || !f->tokens || f->n_tokens < 1 || f->n_out < 0 ||
        f->n_out > f->n_tokens || (f->n_out > 0 && !f->logits))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: invalid forward arguments");
    if (f->filters)
        for (int64_t l = 0; l < s->model->dims.n_layer; l++)
            if (f->filters[l].global && !f->filters[l].tau)
                return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                                "cpu: layer %lld has a global mask but no thresholds",
                                (long long)l);
    switch (s->model->dims.arch) {
    case LM_ARCH_MAMBA1: return forward_m1(s, f, e);
    case LM_ARCH_MAMBA2: {
        cpu_session *cs = s->bk;
        const cpu_model *cm = s->model->bk;
        if (!cs->m2 || !cm)
            return lmi_fail(e, LM_ERR_UNSUPPORTED,
                            "cpu backend: session was not initialised for Mamba-2");
        return lmi_cpu_m2_forward(s->model, &cs->m2, cs->conv, cs->ssm, cm->conv_wT, cs->tile, f,
                                  cpu_threads(s->model), e);
    }
    }
    return lmi_fail(e, LM_ERR_UNSUPPORTED, "cpu backend: unknown architecture %d",
                    (int)s->model->dims.arch);
}

/* One decode step for n sessions: the projections run as GEMMs over the n
 * tokens (each weight read once for the batch), the conv and scan steps on
 * each session's own state (Mamba-2: cpu/mamba2.c).  Scratch is
 * sessions[0]'s. */
static lm_status cpu_forward_batch(lm_session *const *ss, size_t n_sessions,
                                   const int32_t *tokens, float *logits, bool allow_tf32,
                                   lmi_err *e)
{
    (void)allow_tf32;
    if (!ss || n_sessions == 0 || !tokens || !ss[0] || !ss[0]->bk)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cpu: invalid batch arguments");
    const lm_model *m = ss[0]->model;
    const lmi_dims *d = &m->dims;
    const int64_t n = (int64_t)n_sessions;
    cpu_session *c0 = ss[0]->bk;
    const cpu_model *cm = m->bk;
    if (d->arch == LM_ARCH_MAMBA2) {
        if (!c0->m2 || !cm)
            return lmi_fail(e, LM_ERR_UNSUPPORTED, "cpu backend: session was not initialised for Mamba-2");
        float **st_ptr = lmi_alloc((size_t)n, 2 * sizeof(float *));
        if (!st_ptr) return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the batch");
        for (int64_t i = 0; i < n; i++) {
            cpu_session *ci = ss[i]->bk;
            st_ptr[i] = ci->conv;
            st_ptr[n + i] = ci->ssm;
        }
        lm_status st = lmi_cpu_m2_forward_batch(m, &c0->m2, st_ptr, st_ptr + n, cm->conv_wT,
                                                c0->tile, tokens, n, logits, cpu_threads(m), e);
        lmi_free(st_ptr);
        return st;
    }
    const int64_t dm = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    const int64_t nx = R + 2 * N;
    lm_status st = scratch_reserve(c0, d, n, e);
    if (st != LM_OK) return st;
    lmi_embed(&m->embed, tokens, n, c0->res);
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmi_layer *ly = &m->layers[l];
        lmi_rmsnorm(c0->res, &ly->norm_w, c0->hn, n, dm, d->eps);
        lmi_linear(c0->hn, dm, n, &ly->in_w, &ly->in_b, c0->xz, 2 * E, 0.0f, c0->tile, cpu_threads(m));
        for (int64_t i = 0; i < n; i++) {
            cpu_session *ci = ss[i]->bk;
            lmi_conv_chunk(ci->head, ci->conv + l * E * (K - 1), c0->xz + i * 2 * E, 2 * E, 1, cm->conv_wT + l * (K + 1) * E, c0->u + i * E, E, K, 1);
        }
        lmi_linear(c0->u, E, n, &ly->x_w, NULL, c0->xdbl, nx, 0.0f, c0->tile, cpu_threads(m));
        lmi_linear(c0->xdbl, nx, n, &ly->dt_w, NULL, c0->dt, E, 0.0f, c0->tile, cpu_threads(m));
        for (int64_t i = 0; i < n; i++) {
            cpu_session *ci = ss[i]->bk;
            lmi_scan_m1 sa = {
                .L = 1, .E = E, .N = N,
                .u = c0->u + i * E,
                .delta = c0->dt + i * E,
                .dt_softplus = true,
                .dt_bias = lmi_weight_f32(&ly->dt_b),
                .A = lmi_weight_f32(&ly->A),
                .B = c0->xdbl + i * nx + R,
                .C = c0->xdbl + i * nx + R + N,
                .ldbc = nx,
                .D = lmi_weight_f32(&ly->D),
                .z = c0->xz + i * 2 * E + E,
                .ldz = 2 * E,
                .h = ci->ssm + l * E * N,
                .y = c0->y + i * E,
            };
            lmi_cpu_scan_m1(&sa, 1);
        }
        lmi_linear(c0->y, E, n, &ly->out_w, &ly->out_b, c0->res, dm, 1.0f, c0->tile, cpu_threads(m));
    }
    if (logits) {
        lmi_rmsnorm(c0->res, &m->norm_f, c0->hn, n, dm, d->eps);
        lmi_linear(c0->hn, dm, n, &m->lm_head, NULL, logits, d->vocab, 0.0f, c0->tile, cpu_threads(m));
    }
    return LM_OK;
}

const lmi_backend_vt lmi_cpu_backend = {
    .name = "cpu",
    .model_init = cpu_model_init,
    .model_free = cpu_model_free,
    .session_init = cpu_session_init,
    .session_free = cpu_session_free,
    .session_reset = cpu_session_reset,
    .forward = cpu_forward,
    .state_read = cpu_state_read,
    .state_write = cpu_state_write,
    .forward_batch = cpu_forward_batch,
};
