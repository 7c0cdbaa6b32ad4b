/* gpu_ref.c - see gpu_ref.h. */
#include "gpu_ref.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

int g_failures = 0;
int g_checks = 0;

void check(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    g_checks++;
    if (!ok) g_failures++;
}

uint16_t bf16_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float bf16_round(float x)
{
    uint32_t u = (uint32_t)bf16_bits(x) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

bool fixture_ref_open(fixture_ref *fx, const char *name)
{
    char path[1100];
    lmi_err e = {{0}};
    memset(fx, 0, sizeof *fx);
    tu_fixture_dir(fx->dir, sizeof fx->dir, name);
    snprintf(path, sizeof path, "%s/reference.safetensors", fx->dir);
    if (lmi_st_open(path, &fx->file, &e) != LM_OK) {
        check(false, "%s: %s", name, e.msg);
        return false;
    }
    fx->ids = lmi_st_find(&fx->file, "input_ids");
    fx->logits = lmi_st_find(&fx->file, "logits_f64");
    if (!fx->ids || !fx->logits || fx->ids->dtype != LMI_ST_I32 || fx->logits->dtype != LMI_ST_F64 ||
        fx->ids->ndim != 2 || fx->logits->ndim != 3) {
        check(false, "%s: reference.safetensors lacks input_ids/logits_f64", name);
        lmi_st_close(&fx->file);
        return false;
    }
    fx->B = fx->ids->shape[0];
    fx->L = fx->ids->shape[1];
    fx->V = fx->logits->shape[2];
    return true;
}

void fixture_ref_row(const fixture_ref *fx, int64_t b, int32_t *tok, double *logits)
{
    const size_t L = (size_t)fx->L, LV = (size_t)(fx->L * fx->V);
    memcpy(tok, fx->ids->data + (size_t)b * L * 4, L * 4);
    memcpy(logits, fx->logits->data + (size_t)b * LV * 8, LV * 8);
}

void fixture_ref_close(fixture_ref *fx) { lmi_st_close(&fx->file); }

/* ---- models ------------------------------------------------------------- */

typedef struct owned {
    float *p[64];
    int n;
} owned;

static float *arr(struct lm_model *m, size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    if (m->n_owned == m->cap_owned) {
        m->cap_owned = m->cap_owned ? 2 * m->cap_owned : 64;
        m->owned = realloc(m->owned, m->cap_owned * sizeof(void *));
    }
    m->owned[m->n_owned++] = p;
    return p;
}

static void fill(tu_rng *r, float *p, size_t n, double scale, double offset, bool bf)
{
    for (size_t i = 0; i < n; i++) {
        float v = (float)(offset + scale * tu_rng_sym(r));
        p[i] = bf ? bf16_round(v) : v;
    }
}

/* Embedding, head, final norm and the layer array of a random model. */
static void random_outer(struct lm_model *m, tu_rng *r, int64_t V, int64_t D, int64_t n_layer, bool tied, bool bf)
{
    m->n_threads = 4;
    float *emb = arr(m, (size_t)(V * D));
    fill(r, emb, (size_t)(V * D), 1.0, 0, bf);
    m->embed = lmi_weight_of_f32(emb, V, D);
    if (tied) {
        m->lm_head = lmi_weight_of_f32(emb, V, D);
    } else {
        float *h = arr(m, (size_t)(V * D));
        fill(r, h, (size_t)(V * D), 0.3, 0, bf);
        m->lm_head = lmi_weight_of_f32(h, V, D);
    }
    float *nf = arr(m, (size_t)D);
    fill(r, nf, (size_t)D, 0.2, 1.0, bf);
    m->norm_f = lmi_weight_of_f32(nf, 1, D);
    m->layers = calloc((size_t)n_layer, sizeof(lmi_layer));
}

struct lm_model *model_random(const model_spec *sp, lm_backend backend)
{
    struct lm_model *m = calloc(1, sizeof *m);
    tu_rng r = {sp->seed * 0x2545F4914F6CDD1Dull + 17};
    const bool bf = sp->dtype != LM_DTYPE_F32;
    lmi_dims *d = &m->dims;
    d->arch = LM_ARCH_MAMBA1;
    d->d_model = sp->d;
    d->d_inner = sp->E;
    d->d_state = sp->N;
    d->dt_rank = sp->R;
    d->d_conv = sp->K;
    d->n_layer = sp->n_layer;
    d->vocab = sp->V;
    d->conv_dim = sp->E;
    d->n_channels = sp->E;
    d->eps = 1e-5;
    d->use_bias = sp->use_bias;
    d->use_conv_bias = sp->conv_bias;
    d->tied = sp->tied;
    m->dtype = sp->dtype;
    m->backend = backend;
#ifdef LM_HAVE_CUDA
    m->vt = backend == LM_BACKEND_CUDA ? &lmi_cuda_backend : &lmi_cpu_backend;
#else
    m->vt = &lmi_cpu_backend;
#endif
    const int64_t D = sp->d, E = sp->E, N = sp->N, R = sp->R, K = sp->K, V = sp->V;
    random_outer(m, &r, V, D, sp->n_layer, sp->tied, bf);
    for (int64_t l = 0; l < sp->n_layer; l++) {
        lmi_layer *L = &m->layers[l];
        float *p;
        L->kind = LMI_MIXER_MAMBA1;
        p = arr(m, (size_t)D); fill(&r, p, (size_t)D, 0.2, 1.0, bf); L->norm_w = lmi_weight_of_f32(p, 1, D);
        p = arr(m, (size_t)(2 * E * D)); fill(&r, p, (size_t)(2 * E * D), 1.7 / sqrt((double)D), 0, bf); L->mamba.in_w = lmi_weight_of_f32(p, 2 * E, D);
        if (sp->use_bias) { p = arr(m, (size_t)(2 * E)); fill(&r, p, (size_t)(2 * E), 0.1, 0, bf); L->mamba.in_b = lmi_weight_of_f32(p, 1, 2 * E); }
        p = arr(m, (size_t)(E * K)); fill(&r, p, (size_t)(E * K), 1.0 / sqrt((double)K), 0, bf); L->mamba.conv_w = lmi_weight_of_f32(p, E, K);
        if (sp->conv_bias) { p = arr(m, (size_t)E); fill(&r, p, (size_t)E, 0.2, 0, bf); L->mamba.conv_b = lmi_weight_of_f32(p, 1, E); }
        p = arr(m, (size_t)((R + 2 * N) * E)); fill(&r, p, (size_t)((R + 2 * N) * E), 1.7 / sqrt((double)E), 0, bf); L->mamba.x_w = lmi_weight_of_f32(p, R + 2 * N, E);
        p = arr(m, (size_t)(E * R)); fill(&r, p, (size_t)(E * R), 1.0 / sqrt((double)R), 0, bf); L->mamba.dt_w = lmi_weight_of_f32(p, E, R);
        p = arr(m, (size_t)E);
        for (int64_t e = 0; e < E; e++) {
            /* dt = exp(U[log 1e-3, log 1e-1]); bias = softplus^-1(dt) */
            const double dt = exp(log(1e-3) + tu_rng_unif(&r) * (log(1e-1) - log(1e-3)));
            float b = (float)(dt + log(-expm1(-dt)));
            p[e] = bf ? bf16_round(b) : b;
        }
        L->mamba.dt_b = lmi_weight_of_f32(p, 1, E);
        p = arr(m, (size_t)(E * N));
        for (int64_t e = 0; e < E; e++)
            for (int64_t n = 0; n < N; n++) {
                float alog = (float)(log((double)(n + 1)) + 0.3 * tu_rng_normal(&r));
                if (bf) alog = bf16_round(alog);
                p[e * N + n] = -expf(alog);
            }
        L->mamba.A = lmi_weight_of_f32(p, E, N);
        p = arr(m, (size_t)E); fill(&r, p, (size_t)E, 0.5, 1.0, bf); L->mamba.D = lmi_weight_of_f32(p, 1, E);
        p = arr(m, (size_t)(D * E)); fill(&r, p, (size_t)(D * E), 1.0 / sqrt((double)E), 0, bf); L->mamba.out_w = lmi_weight_of_f32(p, D, E);
        if (sp->use_bias) { p = arr(m, (size_t)D); fill(&r, p, (size_t)D, 0.1, 0, bf); L->mamba.out_b = lmi_weight_of_f32(p, 1, D); }
    }
    m->n_params = 0;
    return m;
}

struct lm_model *model_random_m2(const m2_model_spec *sp, lm_backend backend)
{
    struct lm_model *m = calloc(1, sizeof *m);
    tu_rng r = {sp->seed * 0x2545F4914F6CDD1Dull + 29};
    const bool bf = sp->dtype != LM_DTYPE_F32;
    const int64_t D = sp->d, H = sp->H, P = sp->P, G = sp->G, N = sp->N, K = sp->K, V = sp->V;
    const int64_t E = H * P, CD = E + 2 * G * N, ld = 2 * E + 2 * G * N + H;
    lmi_dims *d = &m->dims;
    d->arch = LM_ARCH_MAMBA2;
    d->d_model = D;
    d->d_inner = E;
    d->d_state = N;
    d->d_conv = K;
    d->n_layer = sp->n_layer;
    d->vocab = V;
    d->n_heads = H;
    d->head_dim = P;
    d->n_groups = G;
    d->conv_dim = CD;
    d->n_channels = H;
    d->eps = 1e-5;
    d->use_bias = sp->use_bias;
    d->use_conv_bias = sp->conv_bias;
    d->tied = sp->tied;
    d->dt_limit_lo = 0.0;
    d->dt_limit_hi = INFINITY;
    d->ssd_chunk = 256;
    m->dtype = sp->dtype;
    m->backend = backend;
#ifdef LM_HAVE_CUDA
    m->vt = backend == LM_BACKEND_CUDA ? &lmi_cuda_backend : &lmi_cpu_backend;
#else
    m->vt = &lmi_cpu_backend;
#endif
    random_outer(m, &r, V, D, sp->n_layer, sp->tied, bf);
    for (int64_t l = 0; l < sp->n_layer; l++) {
        lmi_layer *L = &m->layers[l];
        float *p;
        L->kind = LMI_MIXER_MAMBA2;
        p = arr(m, (size_t)D); fill(&r, p, (size_t)D, 0.2, 1.0, bf); L->norm_w = lmi_weight_of_f32(p, 1, D);
        p = arr(m, (size_t)(ld * D)); fill(&r, p, (size_t)(ld * D), 1.7 / sqrt((double)D), 0, bf); L->mamba.in_w = lmi_weight_of_f32(p, ld, D);
        if (sp->use_bias) { p = arr(m, (size_t)ld); fill(&r, p, (size_t)ld, 0.1, 0, bf); L->mamba.in_b = lmi_weight_of_f32(p, 1, ld); }
        p = arr(m, (size_t)(CD * K)); fill(&r, p, (size_t)(CD * K), 1.0 / sqrt((double)K), 0, bf); L->mamba.conv_w = lmi_weight_of_f32(p, CD, K);
        if (sp->conv_bias) { p = arr(m, (size_t)CD); fill(&r, p, (size_t)CD, 0.2, 0, bf); L->mamba.conv_b = lmi_weight_of_f32(p, 1, CD); }
        p = arr(m, (size_t)H);
        for (int64_t h = 0; h < H; h++) {
            const double dt = exp(log(1e-3) + tu_rng_unif(&r) * (log(1e-1) - log(1e-3)));
            p[h] = (float)(dt + log(-expm1(-dt)));
        }
        L->mamba.dt_b = lmi_weight_of_f32(p, 1, H);
        p = arr(m, (size_t)H);
        for (int64_t h = 0; h < H; h++) p[h] = -(float)(1.0 + 15.0 * tu_rng_unif(&r));
        L->mamba.A = lmi_weight_of_f32(p, 1, H);
        p = arr(m, (size_t)H); fill(&r, p, (size_t)H, 0.5, 1.0, false); L->mamba.D = lmi_weight_of_f32(p, 1, H);
        p = arr(m, (size_t)E); fill(&r, p, (size_t)E, 0.2, 1.0, bf); L->mamba.gnorm_w = lmi_weight_of_f32(p, 1, E);
        p = arr(m, (size_t)(D * E)); fill(&r, p, (size_t)(D * E), 1.0 / sqrt((double)E), 0, bf); L->mamba.out_w = lmi_weight_of_f32(p, D, E);
        if (sp->use_bias) { p = arr(m, (size_t)D); fill(&r, p, (size_t)D, 0.1, 0, bf); L->mamba.out_b = lmi_weight_of_f32(p, 1, D); }
    }
    return m;
}

void ref_ssd(int64_t L, int H, int P, int N, int G, const float *u, int64_t ldu, const float *dl, const float *A,
             const float *D, const uint8_t *flag, const float *tau, double *h, double *y)
{
    const int64_t E = (int64_t)H * P;
    for (int64_t t = 0; t < L; t++) {
        const float *ut = u + t * ldu;
        for (int hh = 0; hh < H; hh++) {
            const int g = hh / (H / G);
            double d = dl[t * H + hh];
            if (flag && flag[hh] && !(d > tau[hh])) d = 0.0;
            const double dA = exp(d * A[hh]);
            const float *B = ut + E + (int64_t)g * N, *C = ut + E + (int64_t)G * N + (int64_t)g * N;
            for (int p = 0; p < P; p++) {
                const double x = ut[(int64_t)hh * P + p];
                double *row = h + ((int64_t)hh * P + p) * N, acc = 0.0;
                for (int n = 0; n < N; n++) {
                    row[n] = row[n] * dA + d * x * B[n];
                    acc += row[n] * C[n];
                }
                y[t * E + (int64_t)hh * P + p] = acc + D[hh] * x;
            }
        }
    }
}

void model_destroy(struct lm_model *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m);
}

struct lm_session *session_new(struct lm_model *m, lmi_err *e)
{
    struct lm_session *s = calloc(1, sizeof *s);
    s->model = m;
    s->chunk_size = 512;
    if (m->vt->session_init(s, e) != LM_OK) {
        free(s);
        return NULL;
    }
    return s;
}

void session_delete(struct lm_session *s)
{
    if (!s) return;
    s->model->vt->session_free(s);
    free(s);
}

/* ---- float64 reference --------------------------------------------------- */

ref_state *ref_state_new(const struct lm_model *m)
{
    ref_state *st = calloc(1, sizeof *st);
    st->n_layer = m->dims.n_layer;
    st->E = m->dims.d_inner;
    st->N = m->dims.d_state;
    st->K = m->dims.d_conv;
    st->conv = calloc((size_t)(st->n_layer * st->E * (st->K - 1)) + 1, sizeof(double));
    st->ssm = calloc((size_t)(st->n_layer * st->E * st->N), sizeof(double));
    return st;
}

void ref_state_free(ref_state *st)
{
    if (!st) return;
    free(st->conv);
    free(st->ssm);
    free(st);
}

static double softplus(double v) { return v > 20 ? v : log1p(exp(v)); }
static double silu(double v) { return v / (1 + exp(-v)); }

/* out[L][n_out] = x[L][ldx] (first n_in) . W[n_out][n_in]^T (+ b) */
static void matmul(const double *x, int64_t ldx, int64_t L, const float *W, int64_t n_in,
                   int64_t n_out, const float *b, double *out)
{
    for (int64_t t = 0; t < L; t++)
        for (int64_t o = 0; o < n_out; o++) {
            double acc = b ? b[o] : 0;
            const float *w = W + o * n_in;
            const double *xr = x + t * ldx;
            for (int64_t i = 0; i < n_in; i++) acc += xr[i] * w[i];
            out[t * n_out + o] = acc;
        }
}

static void rmsnorm(const double *x, int64_t L, int64_t D, const float *w, double eps, double *out)
{
    for (int64_t t = 0; t < L; t++) {
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += x[t * D + i] * x[t * D + i];
        const double r = 1.0 / sqrt(ss / (double)D + eps);
        for (int64_t i = 0; i < D; i++) out[t * D + i] = x[t * D + i] * r * w[i];
    }
}

static const double *g_scores;
static int cmp_desc(const void *a, const void *b)
{
    const int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (g_scores[i] > g_scores[j]) return -1;
    if (g_scores[i] < g_scores[j]) return 1;
    return i < j ? -1 : i > j;
}
static int cmp_i64(const void *a, const void *b)
{
    const int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    return i < j ? -1 : i > j;
}

static void gather(double **buf, int64_t width, const int64_t *idx, int64_t n)
{
    double *o = malloc((size_t)(n * width) * sizeof(double));
    for (int64_t i = 0; i < n; i++) memcpy(o + i * width, *buf + idx[i] * width, (size_t)width * sizeof(double));
    free(*buf);
    *buf = o;
}

int64_t ref_forward(const struct lm_model *m, ref_state *st, const int32_t *tok, int64_t L,
                    const ref_opts *o, int64_t n_out, double *logits)
{
    const lmi_dims *dm = &m->dims;
    const int64_t D = dm->d_model, E = dm->d_inner, N = dm->d_state, R = dm->dt_rank, K = dm->d_conv;
    const int64_t V = dm->vocab, R2N = R + 2 * N;
    double *res = malloc((size_t)(L * D) * sizeof(double));
    for (int64_t t = 0; t < L; t++)
        for (int64_t i = 0; i < D; i++) res[t * D + i] = lmi_weight_at(&m->embed, (int64_t)tok[t] * D + i);
    for (int64_t l = 0; l < dm->n_layer; l++) {
        const lmi_layer *W = &m->layers[l];
        double *hn = malloc((size_t)(L * D) * sizeof(double));
        double *xz = malloc((size_t)(L * 2 * E) * sizeof(double));
        double *u = malloc((size_t)(L * E) * sizeof(double));
        double *dbc = malloc((size_t)(L * R2N) * sizeof(double));
        double *delta = malloc((size_t)(L * E) * sizeof(double));
        rmsnorm(res, L, D, lmi_weight_f32(&W->norm_w), dm->eps, hn);
        /* xz = in_proj(hn) */
        matmul(hn, D, L, lmi_weight_f32(&W->mamba.in_w), D, 2 * E, lmi_weight_f32(&W->mamba.in_b), xz);
        /* u = silu(conv1d(x) + b), left padding from the state */
        double *cs = st->conv + l * E * (K - 1);
        for (int64_t t = 0; t < L; t++)
            for (int64_t e = 0; e < E; e++) {
                double acc = W->mamba.conv_b.data ? lmi_weight_at(&W->mamba.conv_b, e) : 0;
                for (int64_t k = 0; k < K; k++) {
                    const int64_t pos = t - (K - 1) + k;
                    const double x = pos >= 0 ? xz[pos * 2 * E + e] : cs[e * (K - 1) + (K - 1) + pos];
                    acc += lmi_weight_at(&W->mamba.conv_w, e * K + k) * x;
                }
                u[t * E + e] = silu(acc);
            }
        for (int64_t e = 0; e < E; e++) {
            double nv[16];
            for (int64_t j = 0; j < K - 1; j++) {
                const int64_t pos = L - (K - 1) + j;
                nv[j] = pos >= 0 ? xz[pos * 2 * E + e] : cs[e * (K - 1) + j + L];
            }
            for (int64_t j = 0; j < K - 1; j++) cs[e * (K - 1) + j] = nv[j];
        }
        /* dbc = x_proj(u); delta = softplus(dt_proj(dt_low) + b) */
        matmul(u, E, L, lmi_weight_f32(&W->mamba.x_w), E, R2N, NULL, dbc);
        matmul(dbc, R2N, L, lmi_weight_f32(&W->mamba.dt_w), R, E, NULL, delta);
        for (int64_t t = 0; t < L; t++)
            for (int64_t e = 0; e < E; e++) delta[t * E + e] = softplus(delta[t * E + e] + lmi_weight_at(&W->mamba.dt_b, e));
        if (o && o->hook) o->hook(o->hook_ctx, l, delta, L, E);
        /* DeciMamba */
        if (o && o->deci_budget && o->deci_budget[l] >= 0) {
            const int64_t Rp = o->deci_protect;
            if (L - Rp > 0) {
                double kk = fmin((double)(L - Rp), o->deci_budget[l]);
                kk = fmax(kk, (double)o->deci_min_len);
                int64_t Kk = (int64_t)kk;
                if (Kk > L - Rp) Kk = L - Rp;
                if (Kk < L - Rp) {
                    double *sc = malloc((size_t)L * sizeof(double));
                    int64_t *ord = malloc((size_t)L * sizeof(int64_t));
                    for (int64_t t = 0; t < L; t++) {
                        double ss = 0;
                        for (int64_t e = 0; e < E; e++) ss += delta[t * E + e] * delta[t * E + e];
                        sc[t] = sqrt(ss);
                    }
                    for (int64_t t = 0; t < L - Rp; t++) ord[t] = t;
                    g_scores = sc;
                    qsort(ord, (size_t)(L - Rp), sizeof(int64_t), cmp_desc);
                    if (o->deci_gap && Kk > 0) {
                        const double g = (sc[ord[Kk - 1]] - sc[ord[Kk]]) / sc[ord[Kk - 1]];
                        if (g < *o->deci_gap) *o->deci_gap = g;
                    }
                    qsort(ord, (size_t)Kk, sizeof(int64_t), cmp_i64);
                    for (int64_t i = 0; i < Rp; i++) ord[Kk + i] = L - Rp + i;
                    const int64_t n = Kk + Rp;
                    gather(&res, D, ord, n);
                    gather(&xz, 2 * E, ord, n);
                    gather(&u, E, ord, n);
                    gather(&dbc, R2N, ord, n);
                    gather(&delta, E, ord, n);
                    L = n;
                    free(sc);
                    free(ord);
                }
            }
        }
        /* LongMamba filter, then the scan */
        const lmi_filter *F = (o && o->filters) ? &o->filters[l] : NULL;
        double *h = st->ssm + l * E * N;
        for (int64_t t = 0; t < L; t++) {
            const double *Bt = dbc + t * R2N + R, *Ct = Bt + N;
            double *yrow = hn; /* reuse: y goes into a fresh array below */
            (void)yrow;
            for (int64_t e = 0; e < E; e++) {
                double dl = delta[t * E + e];
                if (F && F->global && F->global[e] && !(dl > (double)F->tau[e])) dl = 0;
                const double uu = u[t * E + e];
                double acc = 0;
                for (int64_t n = 0; n < N; n++) {
                    double *hh = &h[e * N + n];
                    *hh = exp(dl * lmi_weight_at(&W->mamba.A, e * N + n)) * *hh + dl * Bt[n] * uu;
                    acc += *hh * Ct[n];
                }
                acc += lmi_weight_at(&W->mamba.D, e) * uu;
                acc *= silu(xz[t * 2 * E + E + e]);
                delta[t * E + e] = acc; /* y overwrites delta (no longer needed) */
            }
        }
        /* res += out_proj(y) */
        double *mo = malloc((size_t)(L * D) * sizeof(double));
        matmul(delta, E, L, lmi_weight_f32(&W->mamba.out_w), E, D, lmi_weight_f32(&W->mamba.out_b), mo);
        for (int64_t i = 0; i < L * D; i++) res[i] += mo[i];
        free(mo);
        free(hn);
        free(xz);
        free(u);
        free(dbc);
        free(delta);
    }
    if (n_out > L) {
        free(res);
        return -1;
    }
    if (n_out > 0) {
        double *hf = malloc((size_t)(n_out * D) * sizeof(double));
        rmsnorm(res + (L - n_out) * D, n_out, D, lmi_weight_f32(&m->norm_f), dm->eps, hf);
        matmul(hf, D, n_out, lmi_weight_f32(&m->lm_head), D, V, NULL, logits);
        free(hf);
    }
    free(res);
    return L;
}

void ref_scan(int64_t L, int64_t E, int64_t N, const float *u, const float *dt, const float *dt_bias,
              bool sp, const float *A, const float *B, const float *C, int64_t ldbc, const float *D,
              const float *z, const uint8_t *flag, const float *tau, double *h, double *y)
{
    for (int64_t t = 0; t < L; t++)
        for (int64_t e = 0; e < E; e++) {
            double d = dt[t * E + e];
            if (sp) d = softplus(d + (dt_bias ? dt_bias[e] : 0));
            if (flag && flag[e] && !(d > (double)tau[e])) d = 0;
            const double uu = u[t * E + e];
            double acc = 0;
            for (int64_t n = 0; n < N; n++) {
                double *hh = &h[e * N + n];
                *hh = exp(d * A[e * N + n]) * *hh + d * B[t * ldbc + n] * uu;
                acc += *hh * C[t * ldbc + n];
            }
            if (D) acc += D[e] * uu;
            if (z) acc *= silu(z[t * E + e]);
            y[t * E + e] = acc;
        }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int gpu_fixture_names(const char *dir, char **names, int cap)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < cap) {
        char ref[1400];
        snprintf(ref, sizeof ref, "%s/%s/reference.safetensors", dir, de->d_name);
        if (de->d_name[0] != '.' && access(ref, R_OK) == 0) names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(char *), cmp_str);
    return n;
}
