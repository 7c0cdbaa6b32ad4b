/*
 * cpu/mamba2.c - the Mamba-2 mixer on the CPU (docs MAMBA.md §2).
 *
 * in_proj to [z | xBC | dt], depthwise causal conv + SiLU over the
 * E + 2GN xBC channels, Δ = clamp(softplus(dt + dt_bias)), the SSM
 * recurrence per head (state [P][N], scalar A per head, B and C of the
 * head's group), the D skip, the SiLU(z) gate and the gated RMSNorm per
 * group of E/G channels (mamba_ssm, norm_before_gate = false), then
 * out_proj into the fp32 residual stream.
 *
 * The scan is the sequential recurrence (the chunked SSD form of
 * transformers / mamba_ssm is the same function): on the CPU it does the
 * least work, runs in place on the carried state, and makes chunked and
 * token-by-token runs bit-identical per head.  Heads run in parallel.
 *
 * LongMamba acts per head (a head is one channel): a filtered head with
 * !(Δ > τ) gets Δ = 0 for that token, in the scan loop; MambaExtend then
 * scales Δ there, Modulation swaps the heads' A for A'.  The token hook
 * scores a token by the L2 norm of Δ over the heads.
 */
#include "cpu/mixer.h"

#include <math.h>
#include <string.h>

#include "cpu/ops.h"
#include "cpu/parallel.h"
#include "cpu/vmath.h"

typedef struct m2_scratch {
    lmi_cpu_scratch base; /* the block the buffers below are carved from */
    float *zx;      /* [cap][2E+2GN+H] in_proj output z | xBC | dt */
    float *u;       /* [cap][conv_dim] conv + SiLU output x | B | C */
    float *dl;      /* [cap][H] Δ */
    float *y;       /* [cap][E] scan output, then gated-normed in place */
    float *score;   /* [cap] token-hook scores */
    int64_t *idx;   /* [cap] kept indices */
    int64_t *sel;   /* [cap] selection scratch */
    float *head;    /* [K-1][conv_dim] conv state transposed */
    float *Amod;    /* [H] Modulation's A' of the current layer */
} m2_scratch;

static int64_t in_rows(const lmi_dims *d)
{
    return 2 * d->d_inner + 2 * d->n_groups * d->d_state + d->n_heads;
}

static lm_status m2_init_layer(const lm_model *m, const lmi_layer *L, int64_t index, void **data,
                               bool *has16, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    if (d->d_model <= 0 || d->d_inner <= 0 || d->d_state <= 0 || d->d_conv <= 0 ||
        d->n_heads <= 0 || d->head_dim <= 0 || d->n_groups <= 0 ||
        d->n_heads * d->head_dim != d->d_inner || d->n_heads % d->n_groups != 0 ||
        d->d_inner % d->n_groups != 0 || d->conv_dim != d->d_inner + 2 * d->n_groups * d->d_state ||
        d->n_channels != d->n_heads)
        return lmi_fail(e, LM_ERR_SHAPE, "cpu: invalid Mamba-2 dimensions");
    lm_status st = lmi_cpu_mamba_check(d, in_rows(d), e);
    if (st != LM_OK) return st;
    const lmi_mamba_weights *w = &L->mamba;
    if (!L->norm_w.data || !w->in_w.data || !w->conv_w.data || !lmi_weight_f32(&w->dt_b) ||
        !lmi_weight_f32(&w->A) || !lmi_weight_f32(&w->D) || !w->gnorm_w.data || !w->out_w.data)
        return lmi_fail(e, LM_ERR_MISSING, "cpu: Mamba-2 layer %lld weights missing",
                        (long long)index);
    return lmi_cpu_mamba_init(d, L, data, has16, e);
}

static lm_status m2_reserve(void **scratch, const lmi_dims *d, int64_t T, lmi_err *e)
{
    if (!*scratch && !(*scratch = lmi_alloc(1, sizeof(m2_scratch))))
        return lmi_fail(e, LM_ERR_NO_MEMORY, "cpu: no memory for the Mamba-2 scratch");
    m2_scratch *sc = *scratch;
    if (sc->base.cap >= T) return LM_OK;
    const size_t n = (size_t)T, f = sizeof(float);
    const lmi_carve rows[] = {
        {(void **)&sc->zx, n * (size_t)in_rows(d) * f},
        {(void **)&sc->u, n * (size_t)d->conv_dim * f},
        {(void **)&sc->dl, n * (size_t)d->n_heads * f},
        {(void **)&sc->y, n * (size_t)d->d_inner * f},
        {(void **)&sc->score, n * f},
        {(void **)&sc->idx, n * sizeof(int64_t)},
        {(void **)&sc->sel, n * sizeof(int64_t)},
        {(void **)&sc->head, (size_t)((d->d_conv - 1) * d->conv_dim) * f},
        {(void **)&sc->Amod, (size_t)d->n_heads * f},
    };
    return lmi_cpu_scratch_carve(&sc->base, rows, sizeof rows / sizeof rows[0], T, e);
}

/* ---- kernels ----------------------------------------------------------- */

typedef struct scan_job {
    int64_t T, H, P, N, G, E, ldu;
    const float *u;        /* [T][ldu]: x [E] | B [G*N] | C [G*N] */
    const float *dl;       /* [T][H] Δ */
    const float *A, *D;    /* [H] */
    const uint8_t *global; /* [H] or NULL */
    const float *tau;      /* [H] */
    float *S;              /* [H][P][N] */
    float *y;              /* [T][E] */
    float d_scale;         /* MambaExtend: Δ *= d_scale after the filter; 0: none */
} scan_job;

/* Per head h, token t (mamba2_selective_state_update, one token at a time):
 *   dA = torch.exp(dt * A);  state = state * dA + dt * B * x
 *   y = state @ C + D * x */
LMI_CPU_CLONES
static void scan_heads(void *ctx, int64_t begin, int64_t end)
{
    const scan_job *j = ctx;
    const int64_t P = j->P, N = j->N, hpg = j->H / j->G;
    for (int64_t h = begin; h < end; h++) {
        const int64_t g = h / hpg;
        const float A = j->A[h], Dh = j->D[h];
        const bool filt = j->global && j->global[h];
        const float tau = filt ? j->tau[h] : 0.0f;
        const float ds = j->d_scale > 0.0f ? j->d_scale : 1.0f;
        float *S = j->S + h * P * N;
        for (int64_t t = 0; t < j->T; t++) {
            float d = j->dl[t * j->H + h];
            /* LongMamba: a filtered head keeps the token iff Δ > τ; then
             * MambaExtend's scale */
            if (filt && !(d > tau)) d = 0.0f;
            d *= ds;
            const float dA = expf(d * A);
            const float *ur = j->u + t * j->ldu;
            const float *x = ur + h * P;
            const float *B = ur + j->E + g * N;
            const float *C = ur + j->E + j->G * N + g * N;
            float *yr = j->y + t * j->E + h * P;
            for (int64_t p = 0; p < P; p++) {
                const float xd = d * x[p];
                float *row = S + p * N;
                float acc = 0.0f;
                LMI_SIMD_SUM(acc)
                for (int64_t n = 0; n < N; n++) {
                    row[n] = row[n] * dA + xd * B[n];
                    acc += row[n] * C[n];
                }
                yr[p] = acc + Dh * x[p];
            }
        }
    }
}

/* MambaRMSNormGated(norm_before_gate=False): per group of gs channels
 *   y = y * silu(z);  y = y * rsqrt(mean(y^2) + eps) * w */
static void gated_norm(float *y, const float *z, int64_t ldz, const lmi_weight *w, int64_t T,
                       int64_t E, int64_t G, double eps)
{
    const int64_t gs = E / G;
    for (int64_t t = 0; t < T; t++) {
        float *yr = y + t * E;
        const float *zr = z + t * ldz;
        for (int64_t i = 0; i < E; i++) yr[i] *= lmi_siluf(zr[i]);
        for (int64_t g = 0; g < G; g++) lmi_rmsnorm_row(yr + g * gs, w, g * gs, yr + g * gs, gs, eps);
    }
}

/* dt = torch.clamp(F.softplus(dt + dt_bias), *time_step_limit) for T rows
 * of in_proj output (dt starts at column E + conv_dim, row stride ld). */
static void delta_rows(const lmi_dims *d, const float *zx, int64_t ld, int64_t T, const float *dt_b,
                       float *dl)
{
    const int64_t H = d->n_heads, off = d->d_inner + d->conv_dim;
    const float lo = (float)d->dt_limit_lo, hi = (float)d->dt_limit_hi;
    const bool clamp = d->dt_limit_lo > 0.0 || isfinite(d->dt_limit_hi);
    for (int64_t t = 0; t < T; t++) {
        const float *r = zx + t * ld + off;
        float *o = dl + t * H;
        for (int64_t h = 0; h < H; h++) {
            float v = lmi_softplusf(r[h] + dt_b[h]);
            if (clamp) v = fminf(fmaxf(v, lo), hi);
            o[h] = v;
        }
    }
}

/* The token hook in one layer: scores ||Δ[t, :]||_2 over the heads and
 * keeps the chosen rows of what later steps read (xBC, Δ, z, residual). */
static lm_status m2_select(const lmi_cpu_layer *c, m2_scratch *sc, const lmi_forward *f,
                           int64_t *T, lmi_err *e)
{
    const lmi_dims *d = &c->m->dims;
    const int64_t L = *T, H = d->n_heads, dm = d->d_model, E = d->d_inner;
    const int64_t CD = d->conv_dim, ld = in_rows(d);
    int64_t n = 0;
    lm_status st = lmi_token_plan(f->tokens_hook, c->index, sc->dl, L, H, sc->score, sc->idx,
                                  sc->sel, &n, e);
    if (st != LM_OK || n == 0) return st;
    const lmi_gather_rows rows[] = {
        {sc->u, CD, CD}, {sc->dl, H, H}, {sc->zx, ld, E}, {c->res, dm, dm},
    };
    st = lmi_gather(rows, sizeof rows / sizeof rows[0], sc->idx, n, L, e);
    if (st == LM_OK) *T = n;
    return st;
}

static lm_status m2_forward(const lmi_cpu_layer *c, void *scratch, const lmi_forward *f,
                            float *const state[LMI_STATE_PARTS], int64_t *Tp, lmi_err *e)
{
    const lmi_dims *d = &c->m->dims;
    const lmi_mamba_weights *w = &c->w->mamba;
    m2_scratch *sc = scratch;
    const int nt = c->nt;
    const int64_t dm = d->d_model, E = d->d_inner, N = d->d_state, K = d->d_conv;
    const int64_t H = d->n_heads, P = d->head_dim, G = d->n_groups, CD = d->conv_dim;
    const int64_t ld = in_rows(d), l = c->index;
    int64_t T = *Tp;

    /* gate, xBC, dt = self.in_proj(hidden_states).split([E, conv_dim, H]) */
    lmi_linear(c->hn, dm, T, &w->in_w, &w->in_b, sc->zx, ld, 0.0f, c->tile, nt);
    /* xBC = act(conv1d(xBC)) */
    lmi_conv_chunk(sc->head, state[LMI_STATE_CONV], sc->zx + E, ld, T, c->data, sc->u, CD, K, nt);
    delta_rows(d, sc->zx, ld, T, lmi_weight_f32(&w->dt_b), sc->dl);
    lm_status st = f->sink ? f->sink(f->sink_ctx, l, sc->dl, T, H, e) : LM_OK;
    if (st == LM_OK && f->tokens_hook && f->tokens_hook->layers[l]) st = m2_select(c, sc, f, &T, e);
    if (st != LM_OK) return st;
    const lmi_filter *flt = f->filters ? &f->filters[l] : NULL;
    const float *A = lmi_weight_f32(&w->A);
    if (f->a_log_scale && f->a_log_scale[l] != 1.0f) {
        /* Modulation: A' = -exp(s A_log) per head */
        for (int64_t h = 0; h < H; h++) sc->Amod[h] = lmi_modulate_A(A[h], f->a_log_scale[l]);
        A = sc->Amod;
    }
    scan_job sj = {
        .T = T, .H = H, .P = P, .N = N, .G = G, .E = E, .ldu = CD,
        .u = sc->u, .dl = sc->dl, .A = A, .D = lmi_weight_f32(&w->D),
        .global = flt && flt->global ? flt->global : NULL,
        .tau = flt && flt->global ? flt->tau : NULL,
        .S = state[LMI_STATE_SSM], .y = sc->y,
        .d_scale = f->delta_scale ? f->delta_scale[l] : 0.0f,
    };
    lmi_cpu_parallel_for(T * E * N >= 65536 ? nt : 1, H, 1, scan_heads, &sj);
    /* scan_output = self.norm(scan_output, gate) */
    gated_norm(sc->y, sc->zx, ld, &w->gnorm_w, T, E, G, d->eps);
    /* hidden_states = residual + self.out_proj(scan_output) */
    lmi_linear(sc->y, E, T, &w->out_w, &w->out_b, c->res, dm, 1.0f, c->tile, nt);
    *Tp = T;
    return LM_OK;
}

static lm_status m2_forward_seqs(const lmi_cpu_layer *c, void *scratch, const int64_t *off,
                                int64_t n, float *const (*state)[LMI_STATE_PARTS], lmi_err *e)
{
    (void)e;
    const lmi_dims *d = &c->m->dims;
    const lmi_mamba_weights *w = &c->w->mamba;
    m2_scratch *sc = scratch;
    const int nt = c->nt;
    const int64_t dm = d->d_model, E = d->d_inner, N = d->d_state, K = d->d_conv;
    const int64_t H = d->n_heads, P = d->head_dim, G = d->n_groups, CD = d->conv_dim;
    const int64_t ld = in_rows(d), T = off[n];
    lmi_linear(c->hn, dm, T, &w->in_w, &w->in_b, sc->zx, ld, 0.0f, c->tile, nt);
    delta_rows(d, sc->zx, ld, T, lmi_weight_f32(&w->dt_b), sc->dl);
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = off[i], L = off[i + 1] - t;
        lmi_conv_chunk(sc->head, state[i][LMI_STATE_CONV], sc->zx + t * ld + E, ld, L, c->data,
                       sc->u + t * CD, CD, K, nt);
        scan_job sj = {
            .T = L, .H = H, .P = P, .N = N, .G = G, .E = E, .ldu = CD,
            .u = sc->u + t * CD, .dl = sc->dl + t * H,
            .A = lmi_weight_f32(&w->A), .D = lmi_weight_f32(&w->D),
            .S = state[i][LMI_STATE_SSM], .y = sc->y + t * E,
        };
        /* a decode step (one token) stays on this thread */
        lmi_cpu_parallel_for(L > 1 && L * E * N >= 65536 ? nt : 1, H, 1, scan_heads, &sj);
    }
    gated_norm(sc->y, sc->zx, ld, &w->gnorm_w, T, E, G, d->eps);
    lmi_linear(sc->y, E, T, &w->out_w, &w->out_b, c->res, dm, 1.0f, c->tile, nt);
    return LM_OK;
}

const lmi_cpu_mixer lmi_cpu_mixer_mamba2 = {
    .kind = LMI_MIXER_MAMBA2,
    .init_layer = m2_init_layer,
    .reserve = m2_reserve,
    .release = lmi_cpu_scratch_release,
    .forward = m2_forward,
    .forward_seqs = m2_forward_seqs,
};
