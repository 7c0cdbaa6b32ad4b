/* testmodel.c - random in-memory Mamba-1 models (see testmodel.h). */
#include "testmodel.h"
#include "model_load.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The model with the helper's bookkeeping behind it (model first, so an
 * lm_model pointer converts back): every array it malloc'd. */
typedef struct tm_owned {
    lm_model model;
    void **extra;
    size_t n_extra, cap_extra;
} tm_owned;

tm_config tm_config_small(void)
{
    tm_config c = {
        .d_model = 40,
        .d_inner = 80,
        .d_state = 8,
        .dt_rank = 3,
        .d_conv = 3,
        .n_layer = 2,
        .vocab = 37,
        .bias = true,
        .conv_bias = true,
        .tied = false,
        .seed = 1234,
        .n_threads = 2,
    };
    return c;
}

static float *tm_arr(tm_owned *o, size_t n)
{
    if (o->n_extra == o->cap_extra) {
        size_t cap = o->cap_extra ? 2 * o->cap_extra : 64;
        void **p = realloc(o->extra, cap * sizeof *p);
        if (!p)
            return NULL;
        o->extra = p;
        o->cap_extra = cap;
    }
    float *a = malloc((n ? n : 1) * sizeof(float));
    if (a)
        o->extra[o->n_extra++] = a;
    return a;
}

static float *fill(tm_owned *o, size_t n, tu_rng *rng, double scale, double offset)
{
    float *a = tm_arr(o, n);
    if (a)
        for (size_t i = 0; i < n; i++)
            a[i] = (float)(offset + scale * tu_rng_sym(rng));
    return a;
}

void tm_model_free(lm_model *m)
{
    if (!m)
        return;
    if (m->vt && m->vt->model_free)
        m->vt->model_free(m);
    tm_owned *o = (tm_owned *)m;
    for (size_t i = 0; i < o->n_extra; i++)
        free(o->extra[i]);
    /* what lmi_model_set_weights made */
    for (size_t i = 0; i < m->n_owned; i++)
        lmi_free(m->owned[i]);
    lmi_free(m->owned);
    free(o->extra);
    free(m->layers);
    free(o);
}

/* w (fp32 draws) -> binary16 in an array of o's. */
static bool to_f16(tm_owned *o, lmi_weight *w)
{
    if (!w->data || w->type != LMI_W_F32)
        return true;
    const size_t n = (size_t)lmi_weight_numel(w);
    uint16_t *h = (uint16_t *)tm_arr(o, (n + 1) / 2);
    if (!h)
        return false;
    for (size_t i = 0; i < n; i++)
        h[i] = lmi_f32_to_f16(((const float *)w->data)[i]);
    w->data = h;
    w->type = LMI_W_F16;
    return true;
}

lm_model *tm_model_build(const tm_config *c, char *err, size_t err_cap)
{
    tm_owned *o = calloc(1, sizeof *o);
    if (!o) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    lm_model *m = &o->model;
    const int64_t d = c->d_model, E = c->d_inner, N = c->d_state, R = c->dt_rank, K = c->d_conv;
    lmi_dims *dm = &m->dims;
    dm->arch = LM_ARCH_MAMBA1;
    dm->d_model = d;
    dm->d_inner = E;
    dm->d_state = N;
    dm->dt_rank = R;
    dm->d_conv = K;
    dm->n_layer = c->n_layer;
    dm->vocab = c->vocab;
    dm->conv_dim = E;
    dm->n_channels = E;
    dm->eps = 1e-5;
    dm->use_bias = c->bias;
    dm->use_conv_bias = c->conv_bias;
    dm->tied = c->tied;
    m->dtype = LM_DTYPE_F32;
    m->fingerprint = 0x9e3779b97f4a7c15ULL ^ (c->seed * 0xbf58476d1ce4e5b9ULL) ^
                     (uint64_t)(d * 1000003 + E * 101 + N);
    m->backend = LM_BACKEND_CPU;
    m->vt = &lmi_cpu_backend;
    m->n_threads = c->n_threads > 0 ? c->n_threads : 1;

    tu_rng rng = {c->seed * 2654435761ULL + 88172645463325252ULL};
    bool ok = true;
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    ok = ok && m->layers;
    float *embed = fill(o, (size_t)(c->vocab * d), &rng, 1.0, 0.0);
    const float *norm_f = fill(o, (size_t)d, &rng, 0.2, 1.0);
    const float *head = c->tied ? embed : fill(o, (size_t)(c->vocab * d), &rng, 0.5, 0.0);
    m->embed = lmi_weight_of_f32(embed, c->vocab, d);
    m->norm_f = lmi_weight_of_f32(norm_f, 1, d);
    m->lm_head = lmi_weight_of_f32(head, c->vocab, d);
    ok = ok && embed && norm_f && head;
    for (int64_t l = 0; ok && l < c->n_layer; l++) {
        lmi_layer *L = &m->layers[l];
        L->kind = LMI_MIXER_MAMBA1;
        const float *norm_w = fill(o, (size_t)d, &rng, 0.2, 1.0);
        const float *in_w = fill(o, (size_t)(2 * E * d), &rng, 1.7 / sqrt((double)d), 0.0);
        const float *in_b = c->bias ? fill(o, (size_t)(2 * E), &rng, 0.1, 0.0) : NULL;
        const float *conv_w = fill(o, (size_t)(E * K), &rng, 0.6, 0.0);
        const float *conv_b = c->conv_bias ? fill(o, (size_t)E, &rng, 0.2, 0.0) : NULL;
        const float *x_w = fill(o, (size_t)((R + 2 * N) * E), &rng, 1.7 / sqrt((double)E), 0.0);
        const float *dt_w = fill(o, (size_t)(E * R), &rng, 1.0 / sqrt((double)R), 0.0);
        /* dt_proj.bias as Mamba initialises it: inverse softplus of
         * dt ~ logUniform(1e-3, 1e-1) */
        float *dtb = tm_arr(o, (size_t)E);
        float *A = tm_arr(o, (size_t)(E * N));
        float *D = fill(o, (size_t)E, &rng, 0.5, 1.0);
        ok = norm_w && in_w && (!c->bias || in_b) && conv_w && (!c->conv_bias || conv_b) && x_w &&
             dt_w && dtb && A && D;
        if (!ok)
            break;
        for (int64_t e = 0; e < E; e++) {
            double u01 = 0.5 * (tu_rng_sym(&rng) + 1.0);
            double dt = exp(u01 * (log(0.1) - log(1e-3)) + log(1e-3));
            dtb[e] = (float)(dt + log(-expm1(-dt)));
            for (int64_t n = 0; n < N; n++) {
                /* A_log = log(arange(1, N+1)) (S4D-real), jittered;
                 * A = -torch.exp(A_log.float()) */
                float A_log = (float)(log((double)(n + 1)) + 0.3 * tu_rng_sym(&rng));
                A[e * N + n] = -expf(A_log);
            }
        }
        L->norm_w = lmi_weight_of_f32(norm_w, 1, d);
        L->mamba.in_w = lmi_weight_of_f32(in_w, 2 * E, d);
        L->mamba.in_b = lmi_weight_of_f32(in_b, 1, 2 * E);
        L->mamba.conv_w = lmi_weight_of_f32(conv_w, E, K);
        L->mamba.conv_b = lmi_weight_of_f32(conv_b, 1, E);
        L->mamba.x_w = lmi_weight_of_f32(x_w, R + 2 * N, E);
        L->mamba.dt_w = lmi_weight_of_f32(dt_w, E, R);
        L->mamba.dt_b = lmi_weight_of_f32(dtb, 1, E);
        L->mamba.A = lmi_weight_of_f32(A, E, N);
        L->mamba.D = lmi_weight_of_f32(D, 1, E);
        const float *out_w = fill(o, (size_t)(d * E), &rng, 1.0 / sqrt((double)E), 0.0);
        const float *out_b = c->bias ? fill(o, (size_t)d, &rng, 0.1, 0.0) : NULL;
        L->mamba.out_w = lmi_weight_of_f32(out_w, d, E);
        L->mamba.out_b = lmi_weight_of_f32(out_b, 1, d);
        ok = out_w && (!c->bias || out_b);
    }
    if (!ok) {
        snprintf(err, err_cap, "out of memory");
        m->vt = NULL;
        tm_model_free(m);
        return NULL;
    }
    if (c->wtype == LMI_W_F16) {
        const bool tied_head = m->lm_head.data == m->embed.data;
        ok = to_f16(o, &m->embed);
        if (tied_head)
            m->lm_head = m->embed;
        else
            ok = ok && to_f16(o, &m->lm_head);
        for (int64_t l = 0; ok && l < c->n_layer; l++) {
            lmi_mamba_weights *w = &m->layers[l].mamba;
            ok = to_f16(o, &w->in_w) && to_f16(o, &w->x_w) && to_f16(o, &w->dt_w) &&
                 to_f16(o, &w->out_w);
        }
        m->dtype = LM_DTYPE_F16;
    }
    if (!ok) {
        snprintf(err, err_cap, "out of memory");
        m->vt = NULL;
        tm_model_free(m);
        return NULL;
    }
    m->n_params = 0;
    lmi_err e = {{0}};
    lm_status st = lmi_model_set_weights(m, c->weights, &e);
    if (st != LM_OK) {
        snprintf(err, err_cap, "set_weights: %s", e.msg);
        m->vt = NULL;
        tm_model_free(m);
        return NULL;
    }
    st = m->vt->model_init(m, &e);
    if (st != LM_OK) {
        snprintf(err, err_cap, "model_init: %s", e.msg);
        tm_model_free(m);
        return NULL;
    }
    return m;
}

/* ---- float64 reference ------------------------------------------------- */

static double ref_softplus(double v)
{
    return v > 20.0 ? v : log1p(exp(v));
}
static double ref_silu(double v)
{
    return v / (1.0 + exp(-v));
}

static void ref_rmsnorm(const double *x, const lmi_weight *w, double *out, int64_t d, double eps)
{
    double ss = 0.0;
    for (int64_t i = 0; i < d; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / (double)d + eps);
    for (int64_t i = 0; i < d; i++)
        out[i] = (double)lmi_weight_at(w, i) * (x[i] * inv);
}

/* y[o] = W[o][:] . x + b[o] */
static void ref_linear(const double *x, const lmi_weight *W, const lmi_weight *b, int64_t n_out, int64_t n_in,
                       double *y)
{
    for (int64_t o = 0; o < n_out; o++) {
        double acc = b && b->data ? (double)lmi_weight_at(b, o) : 0.0;
        for (int64_t i = 0; i < n_in; i++)
            acc += (double)lmi_weight_at(W, o * n_in + i) * x[i];
        y[o] = acc;
    }
}

int64_t tm_reference_forward(const lm_model *m, const int32_t *tokens, int64_t T,
                             const lmi_filter *filters, const double *deci_budget,
                             int64_t deci_min_len, int64_t deci_protect, double *logits,
                             double *delta_out)
{
    const lmi_dims *dm = &m->dims;
    const int64_t d = dm->d_model, E = dm->d_inner, N = dm->d_state, R = dm->dt_rank,
                  K = dm->d_conv, V = dm->vocab, nx = R + 2 * N;
    double *res = malloc((size_t)(T * d) * sizeof(double));
    double *hn = malloc((size_t)(T * d) * sizeof(double));
    double *xz = malloc((size_t)(T * 2 * E) * sizeof(double));
    double *u = malloc((size_t)(T * E) * sizeof(double));
    double *xd = malloc((size_t)(T * nx) * sizeof(double));
    double *dl = malloc((size_t)(T * E) * sizeof(double));
    double *y = malloc((size_t)(T * E) * sizeof(double));
    double *h = malloc((size_t)(E * N) * sizeof(double));
    double *o = malloc((size_t)d * sizeof(double));
    int64_t *idx = malloc((size_t)T * sizeof(int64_t));
    double *score = malloc((size_t)T * sizeof(double));
    int64_t Tc = -1;
    if (!res || !hn || !xz || !u || !xd || !dl || !y || !h || !o || !idx || !score)
        goto out;
    Tc = T;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < d; i++)
            res[t * d + i] = lmi_weight_at(&m->embed, (int64_t)tokens[t] * d + i);
    for (int64_t l = 0; l < dm->n_layer; l++) {
        const lmi_layer *L = &m->layers[l];
        for (int64_t t = 0; t < Tc; t++) {
            ref_rmsnorm(res + t * d, &L->norm_w, hn + t * d, d, dm->eps);
            ref_linear(hn + t * d, &L->mamba.in_w, &L->mamba.in_b, 2 * E, d, xz + t * 2 * E);
        }
        for (int64_t t = 0; t < Tc; t++)
            for (int64_t e = 0; e < E; e++) {
                double acc = L->mamba.conv_b.data ? (double)lmi_weight_at(&L->mamba.conv_b, e) : 0.0;
                for (int64_t k = 0; k < K; k++) {
                    int64_t src = t - (K - 1) + k;
                    if (src >= 0)
                        acc += (double)lmi_weight_at(&L->mamba.conv_w, e * K + k) * xz[src * 2 * E + e];
                }
                u[t * E + e] = ref_silu(acc);
            }
        for (int64_t t = 0; t < Tc; t++) {
            ref_linear(u + t * E, &L->mamba.x_w, NULL, nx, E, xd + t * nx);
            for (int64_t e = 0; e < E; e++) {
                double acc = (double)lmi_weight_at(&L->mamba.dt_b, e);
                for (int64_t r = 0; r < R; r++)
                    acc += (double)lmi_weight_at(&L->mamba.dt_w, e * R + r) * xd[t * nx + r];
                dl[t * E + e] = ref_softplus(acc);
            }
        }
        if (delta_out)
            memcpy(delta_out + l * T * E, dl, (size_t)(Tc * E) * sizeof(double));
        if (deci_budget && deci_budget[l] >= 0.0 && Tc > deci_protect) {
            int64_t avail = Tc - deci_protect;
            double kk = fmax(fmin((double)avail, deci_budget[l]), (double)deci_min_len);
            int64_t keep = kk >= (double)avail ? avail : (int64_t)kk;
            if (keep + deci_protect < Tc) {
                for (int64_t t = 0; t < avail; t++) {
                    double ss = 0.0;
                    for (int64_t e = 0; e < E; e++)
                        ss += dl[t * E + e] * dl[t * E + e];
                    score[t] = sqrt(ss);
                }
                /* keep[t] iff fewer than `keep` tokens beat it (score, then earlier) */
                int64_t n = 0;
                for (int64_t t = 0; t < avail; t++) {
                    int64_t better = 0;
                    for (int64_t q = 0; q < avail; q++)
                        if (score[q] > score[t] || (score[q] == score[t] && q < t))
                            better++;
                    if (better < keep)
                        idx[n++] = t;
                }
                for (int64_t t = avail; t < Tc; t++)
                    idx[n++] = t;
                for (int64_t i = 0; i < n; i++) {
                    int64_t s = idx[i];
                    memmove(u + i * E, u + s * E, (size_t)E * sizeof(double));
                    memmove(dl + i * E, dl + s * E, (size_t)E * sizeof(double));
                    memmove(xd + i * nx, xd + s * nx, (size_t)nx * sizeof(double));
                    memmove(xz + i * 2 * E, xz + s * 2 * E, (size_t)(2 * E) * sizeof(double));
                    memmove(res + i * d, res + s * d, (size_t)d * sizeof(double));
                }
                Tc = n;
            }
        }
        const lmi_filter *f = filters ? &filters[l] : NULL;
        memset(h, 0, (size_t)(E * N) * sizeof(double));
        for (int64_t t = 0; t < Tc; t++)
            for (int64_t e = 0; e < E; e++) {
                double dt = dl[t * E + e];
                if (f && f->global && f->global[e] && !(dt > (double)f->tau[e]))
                    dt = 0.0;
                double ue = u[t * E + e], acc = 0.0;
                for (int64_t n = 0; n < N; n++) {
                    double *hh = &h[e * N + n];
                    *hh = exp(dt * (double)lmi_weight_at(&L->mamba.A, e * N + n)) * *hh + dt * xd[t * nx + R + n] * ue;
                    acc += *hh * xd[t * nx + R + N + n];
                }
                y[t * E + e] = (acc + (double)lmi_weight_at(&L->mamba.D, e) * ue) * ref_silu(xz[t * 2 * E + E + e]);
            }
        for (int64_t t = 0; t < Tc; t++) {
            ref_linear(y + t * E, &L->mamba.out_w, &L->mamba.out_b, d, E, o);
            for (int64_t i = 0; i < d; i++)
                res[t * d + i] += o[i];
        }
    }
    for (int64_t t = 0; t < Tc; t++) {
        ref_rmsnorm(res + t * d, &m->norm_f, hn, d, dm->eps);
        ref_linear(hn, &m->lm_head, NULL, V, d, logits + t * V);
    }
out:
    free(res);
    free(hn);
    free(xz);
    free(u);
    free(xd);
    free(dl);
    free(y);
    free(h);
    free(o);
    free(idx);
    free(score);
    return Tc;
}
