/*
 * cpu/mamba1.c - the Mamba-1 mixer on the CPU (MAMBA.md §1): in_proj to
 * x | z, causal conv + SiLU, x_proj to dt_low | B | C (Falcon-Mamba:
 * each normalised by its RMS, lmi_dims.bcdt_rms_eps), dt_proj, the
 * selective scan with the D skip and the SiLU(z) gate (lmi_cpu_scan_m1,
 * which also applies the LongMamba filter and MambaExtend's scale where Δ
 * is read; Modulation's A' computed per layer), out_proj into the
 * residual stream.
 *
 * Activations are token-major [T][features] so that every projection is
 * one row-major GEMM against the [out][in] weight; T == 1 uses GEMV.
 */
#include "cpu/mixer.h"

#include <math.h>
#include <string.h>

#include "cpu/ops.h"
#include "cpu/vmath.h"

typedef struct m1_scratch {
    lmi_cpu_scratch base; /* the block the buffers below are carved from */
    float *xz;         /* [cap][2E] in_proj output, x | z */
    float *u;          /* [cap][E] conv + SiLU output */
    float *xdbl;       /* [cap][R+2N] x_proj output, dt_low | B | C */
    float *dt;         /* [cap][E] dt_proj output / Δ */
    float *y;          /* [cap][E] scan output */
    float *score;      /* [cap] token-hook scores */
    int64_t *idx;      /* [cap] kept indices */
    int64_t *sel;      /* [cap] selection scratch */
    float *head;       /* [K-1][E] conv state transposed */
    float *Amod;       /* [E][N] Modulation's A' of the current layer */
} m1_scratch;

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

/* Falcon-Mamba (d->bcdt_rms_eps > 0): dt_low, B and C of each x_proj row
 * [T][R+2N] normalised in place, each by its own RMS (transformers'
 * rms_forward on time_step, B and C, before dt_proj and the scan). */
static void bcdt_rms_rows(float *xdbl, int64_t T, const lmi_dims *d)
{
    const int64_t R = d->dt_rank, N = d->d_state, nx = R + 2 * N;
    for (int64_t t = 0; t < T; t++) {
        float *r = xdbl + t * nx;
        lmi_rms_unit_row(r, R, d->bcdt_rms_eps);
        lmi_rms_unit_row(r + R, N, d->bcdt_rms_eps);
        lmi_rms_unit_row(r + R + N, N, d->bcdt_rms_eps);
    }
}

static lm_status m1_init_layer(const lm_model *m, const lmi_layer *L, int64_t index, void **data,
                               bool *has16, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    if (d->d_model <= 0 || d->d_inner <= 0 || d->d_state < 0 || d->dt_rank <= 0 ||
        d->d_conv <= 0 || d->conv_dim != d->d_inner)
        return lmi_fail(e, LM_ERR_SHAPE, "cpu: invalid Mamba-1 dimensions");
    lm_status st = lmi_cpu_mamba_check(d, 2 * d->d_inner, e);
    if (st != LM_OK) return st;
    const lmi_mamba_weights *w = &L->mamba;
    if (!L->norm_w.data || !w->in_w.data || !w->conv_w.data || !w->x_w.data || !w->dt_w.data ||
        !lmi_weight_f32(&w->dt_b) || !lmi_weight_f32(&w->A) || !lmi_weight_f32(&w->D) ||
        !w->out_w.data)
        return lmi_fail(e, LM_ERR_MISSING, "cpu: layer %lld weights missing", (long long)index);
    return lmi_cpu_mamba_init(d, L, data, has16, e);
}

static lm_status m1_reserve(void **scratch, const lmi_dims *d, int64_t T, lmi_err *e)
{
    if (!*scratch && !(*scratch = lmi_alloc(1, sizeof(m1_scratch))))
        return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the Mamba-1 scratch");
    m1_scratch *sc = *scratch;
    if (sc->base.cap >= T) return LM_OK;
    const size_t n = (size_t)T, E = (size_t)d->d_inner, f = sizeof(float);
    const lmi_carve rows[] = {
        {(void **)&sc->xz, n * 2 * E * f},
        {(void **)&sc->u, n * E * f},
        {(void **)&sc->xdbl, n * (size_t)(d->dt_rank + 2 * d->d_state) * f},
        {(void **)&sc->dt, n * E * f},
        {(void **)&sc->y, n * E * f},
        {(void **)&sc->score, n * f},
        {(void **)&sc->idx, n * sizeof(int64_t)},
        {(void **)&sc->sel, n * sizeof(int64_t)},
        {(void **)&sc->head, (size_t)((d->d_conv - 1) * d->conv_dim) * f},
        {(void **)&sc->Amod, E * (size_t)d->d_state * f},
    };
    return lmi_cpu_scratch_carve(&sc->base, rows, sizeof rows / sizeof rows[0], T, e);
}

/* The A the scan reads in layer l: A itself, or Modulation's A' in Amod. */
static const float *layer_A(const lmi_forward *f, int64_t l, const float *A, int64_t n, float *Amod)
{
    if (!f->a_log_scale || f->a_log_scale[l] == 1.0f) return A;
    const double s = f->a_log_scale[l];
    for (int64_t i = 0; i < n; i++) Amod[i] = lmi_modulate_A(A[i], s);
    return Amod;
}

/* The token hook in one layer: scores ||Δ[t,:]||_2, keeps the chosen rows
 * of everything later steps read.  *T shrinks to the kept count. */
static lm_status m1_select(const lmi_cpu_layer *c, m1_scratch *sc, const lmi_forward *f,
                           int64_t *T, lmi_err *e)
{
    const lmi_dims *d = &c->m->dims;
    const int64_t L = *T, E = d->d_inner, dm = d->d_model;
    int64_t n = 0;
    lm_status st = lmi_token_plan(f->tokens_hook, c->index, sc->dt, L, E, sc->score, sc->idx,
                                  sc->sel, &n, e);
    if (st != LM_OK || n == 0) return st;
    const int64_t nx = d->dt_rank + 2 * d->d_state;
    const lmi_gather_rows rows[] = {
        {sc->u, E, E}, {sc->dt, E, E}, {sc->xdbl, nx, nx}, {sc->xz + E, 2 * E, E}, {c->res, dm, dm},
    };
    st = lmi_gather(rows, sizeof rows / sizeof rows[0], sc->idx, n, L, e);
    if (st == LM_OK) *T = n;
    return st;
}

static lm_status m1_forward(const lmi_cpu_layer *c, void *scratch, const lmi_forward *f,
                            float *const state[LMI_STATE_PARTS], int64_t *Tp, lmi_err *e)
{
    const lmi_dims *d = &c->m->dims;
    const lmi_mamba_weights *w = &c->w->mamba;
    m1_scratch *sc = scratch;
    const int nt = c->nt;
    const int64_t dm = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    const int64_t nx = R + 2 * N, l = c->index;
    int64_t T = *Tp;
    const bool select = f->tokens_hook && f->tokens_hook->layers[l];
    const bool explicit_delta = select || f->sink;

    /* xz = self.in_proj(hidden_states) */
    lmi_linear(c->hn, dm, T, &w->in_w, &w->in_b, sc->xz, 2 * E, 0.0f, c->tile, nt);
    /* x = F.silu(self.conv1d(x)[..., :L]), conv_state = x[..., -(K-1):] */
    lmi_conv_chunk(sc->head, state[LMI_STATE_CONV], sc->xz, 2 * E, T, c->data, sc->u, E, K, nt);
    /* x_dbl = self.x_proj(x);  dt, B, C = split(x_dbl, [R, N, N]) */
    lmi_linear(sc->u, E, T, &w->x_w, NULL, sc->xdbl, nx, 0.0f, c->tile, nt);
    if (d->bcdt_rms_eps > 0.0) bcdt_rms_rows(sc->xdbl, T, d);
    /* dt = self.dt_proj.weight @ dt  (bias and softplus below or in the scan) */
    lmi_linear(sc->xdbl, nx, T, &w->dt_w, NULL, sc->dt, E, 0.0f, c->tile, nt);
    if (explicit_delta) {
        softplus_rows(sc->dt, lmi_weight_f32(&w->dt_b), T, E);
        lm_status st = f->sink ? f->sink(f->sink_ctx, l, sc->dt, T, E, e) : LM_OK;
        if (st == LM_OK && select) st = m1_select(c, sc, f, &T, e);
        if (st != LM_OK) return st;
    }
    const lmi_filter *flt = f->filters ? &f->filters[l] : NULL;
    lmi_scan_m1 sa = {
        .L = T, .E = E, .N = N,
        .u = sc->u,
        .delta = sc->dt,
        .dt_softplus = !explicit_delta,
        .dt_bias = lmi_weight_f32(&w->dt_b),
        .A = layer_A(f, l, lmi_weight_f32(&w->A), E * N, sc->Amod),
        .B = sc->xdbl + R,
        .C = sc->xdbl + R + N,
        .ldbc = nx,
        .D = lmi_weight_f32(&w->D),
        .z = sc->xz + E,
        .ldz = 2 * E,
        .global = flt && flt->global ? flt->global : NULL,
        .tau = flt && flt->global ? flt->tau : NULL,
        .h = state[LMI_STATE_SSM],
        .y = sc->y,
        .d_scale = f->delta_scale ? f->delta_scale[l] : 0.0f,
    };
    lmi_cpu_scan_m1(&sa, nt);
    /* hidden_states = residual + self.out_proj(y) */
    lmi_linear(sc->y, E, T, &w->out_w, &w->out_b, c->res, dm, 1.0f, c->tile, nt);
    *Tp = T;
    return LM_OK;
}

static lm_status m1_forward_seqs(const lmi_cpu_layer *c, void *scratch, const int64_t *off,
                                int64_t n, float *const (*state)[LMI_STATE_PARTS], lmi_err *e)
{
    (void)e;
    const lmi_dims *d = &c->m->dims;
    const lmi_mamba_weights *w = &c->w->mamba;
    m1_scratch *sc = scratch;
    const int nt = c->nt;
    const int64_t dm = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    const int64_t nx = R + 2 * N, T = off[n];
    lmi_linear(c->hn, dm, T, &w->in_w, &w->in_b, sc->xz, 2 * E, 0.0f, c->tile, nt);
    for (int64_t i = 0; i < n; i++)
        lmi_conv_chunk(sc->head, state[i][LMI_STATE_CONV], sc->xz + off[i] * 2 * E, 2 * E,
                       off[i + 1] - off[i], c->data, sc->u + off[i] * E, E, K, nt);
    lmi_linear(sc->u, E, T, &w->x_w, NULL, sc->xdbl, nx, 0.0f, c->tile, nt);
    if (d->bcdt_rms_eps > 0.0) bcdt_rms_rows(sc->xdbl, T, d);
    lmi_linear(sc->xdbl, nx, T, &w->dt_w, NULL, sc->dt, E, 0.0f, c->tile, nt);
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = off[i];
        lmi_scan_m1 sa = {
            .L = off[i + 1] - t, .E = E, .N = N,
            .u = sc->u + t * E,
            .delta = sc->dt + t * E,
            .dt_softplus = true,
            .dt_bias = lmi_weight_f32(&w->dt_b),
            .A = lmi_weight_f32(&w->A),
            .B = sc->xdbl + t * nx + R,
            .C = sc->xdbl + t * nx + R + N,
            .ldbc = nx,
            .D = lmi_weight_f32(&w->D),
            .z = sc->xz + t * 2 * E + E,
            .ldz = 2 * E,
            .h = state[i][LMI_STATE_SSM],
            .y = sc->y + t * E,
        };
        lmi_cpu_scan_m1(&sa, nt); /* one thread for short sequences (its own rule) */
    }
    lmi_linear(sc->y, E, T, &w->out_w, &w->out_b, c->res, dm, 1.0f, c->tile, nt);
    return LM_OK;
}

const lmi_cpu_mixer lmi_cpu_mixer_mamba1 = {
    .kind = LMI_MIXER_MAMBA1,
    .init_layer = m1_init_layer,
    .reserve = m1_reserve,
    .release = lmi_cpu_scratch_release,
    .forward = m1_forward,
    .forward_seqs = m1_forward_seqs,
};
