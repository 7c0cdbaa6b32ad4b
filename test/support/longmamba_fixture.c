/* longmamba_fixture.c - see longmamba_fixture.h. */
#include "longmamba_fixture.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Straightforward reference: materialises the stretched array. */
void naive_channel_stats(const float *delta, int64_t L, double sc, const float *A, int64_t N,
                         double A_head, const int64_t *buckets, int64_t nb, double *ld, float *thr)
{
    double *d = malloc(sizeof(double) * (size_t)L), *s = malloc(sizeof(double) * (size_t)L);
    for (int64_t t = 0; t < L; t++)
        d[t] = s[t] = delta[t];
    qsort(s, (size_t)L, sizeof(double), cmp_desc);
    if (sc > 0) {
        int64_t r = (int64_t)floor((double)L * sc);
        if (r < 1)
            r = 1;
        double cap = s[r];
        for (int64_t t = 0; t < L; t++) {
            d[t] = fmin(d[t], cap);
            s[t] = fmin(s[t], cap);
        }
    }
    double target = 0;
    for (int64_t t = 0; t < L; t++)
        target += d[t];
    if (N > 0) {
        long double acc = 0; /* direct product of means, in logs, long double */
        for (int64_t t = 0; t < L; t++) {
            long double m = 0;
            for (int64_t n = 0; n < N; n++)
                m += expl((long double)d[t] * A[n]);
            acc += logl(m / N);
        }
        *ld = (double)acc;
    } else {
        *ld = A_head * target;
    }
    for (int64_t b = 0; b < nb; b++) {
        int64_t S = buckets[b];
        thr[b] = 0;
        if (S <= L)
            continue;
        double *m = malloc(sizeof(double) * (size_t)S);
        for (int64_t j = 0; j < S; j++) {
            double x = ((double)j + 0.5) * (double)L / (double)S - 0.5;
            if (x < 0)
                x = 0;
            int64_t i0 = (int64_t)floor(x);
            if (i0 > L - 1)
                i0 = L - 1;
            int64_t i1 = i0 + 1 < L ? i0 + 1 : L - 1;
            double w = x - (double)i0;
            m[j] = (1 - w) * s[i0] + w * s[i1];
        }
        double cum = 0;
        for (int64_t j = 0; j < S; j++) {
            cum += m[j];
            if (cum > target) {
                int64_t k = j + 1 < S - 1 ? j + 1 : S - 1;
                thr[b] = (float)m[k];
                break;
            }
        }
        free(m);
    }
    free(d);
    free(s);
}

/* A small calibration built by hand: 2 layers, 3 channels, 2 buckets. */
lm_calibration *hand_calibration(void)
{
    lm_calibration *c = lmi_alloc(1, sizeof *c);
    c->arch = LM_ARCH_MAMBA1;
    c->n_layer = 2;
    c->n_channels = 3;
    c->calib_length = 100;
    c->n_windows = 4;
    c->clamp = 0.15;
    c->agg = LM_CALIB_AGG_MEAN;
    c->fingerprint = 0xfedcba9876543210ull;
    c->n_buckets = 2;
    c->buckets = lmi_alloc(2, sizeof(int64_t));
    c->buckets[0] = 100;
    c->buckets[1] = 300;
    c->log_decay = lmi_alloc(6, sizeof(double));
    const double ld[6] = {-0.01, -5.0, -80.0, -2.5, -1e-7, -700.0};
    memcpy(c->log_decay, ld, sizeof ld);
    c->thr = lmi_alloc(12, sizeof(float));
    /* layer 0: bucket 100 all zero, bucket 300 = .1 .2 .3; layer 1: 0s, .4 .5 .6 */
    const float thr[12] = {0, 0, 0, 0.1f, 0.2f, 0.3f, 0, 0, 0, 0.4f, 0.5f, 0.6f};
    memcpy(c->thr, thr, sizeof thr);
    return c;
}

/* A fake model: only what calibrations and modes look at. */
void fake_model(lm_model *m, const lm_calibration *c)
{
    memset(m, 0, sizeof *m);
    m->dims.arch = c->arch;
    m->dims.n_layer = c->n_layer;
    m->dims.n_channels = c->n_channels;
    m->dims.d_inner = c->n_channels;
    m->fingerprint = c->fingerprint;
}

#define FIXTURE LM_TEST_DATA "/fixtures/m1-odd-f32"

lm_model *load_fixture(void)
{
    return load_fixture_at(FIXTURE);
}

lm_model *load_fixture_at(const char *dir)
{
    lm_model_params mp;
    lm_model_params_init(&mp);
    mp.backend = LM_BACKEND_CPU;
    mp.n_threads = 2;
    lm_model *m = NULL;
    char err[512];
    lm_status st = lm_model_load(dir, &mp, &m, err, sizeof err);
    ck_assert_msg(st == LM_OK, "load %s: %s", dir, err);
    return m;
}

lm_session *new_session(const lm_model *m, int64_t chunk)
{
    lm_session_params sp;
    lm_session_params_init(&sp);
    sp.chunk_size = chunk;
    lm_session *s = NULL;
    char err[512];
    ck_assert_msg(lm_session_create(m, &sp, &s, err, sizeof err) == LM_OK, "session: %s", err);
    return s;
}

/* Logits of the last position after a prefill of `toks` from zero state. */
float *prefill_last(lm_session *s, const int32_t *toks, int64_t n)
{
    int64_t V = s->model->dims.vocab;
    float *lg = malloc(sizeof(float) * (size_t)V);
    ck_assert_int_eq(lm_session_reset(s), LM_OK);
    lm_status st = lm_session_prefill(s, toks, (size_t)n, 1, lg, (size_t)V);
    ck_assert_msg(st == LM_OK, "prefill: %s", lm_session_last_error(s));
    return lg;
}

/* Calibration windows: n windows of len random tokens. */
lm_calibration *calibrate_fixture(const lm_model *m, const int64_t *buckets, size_t nb,
                                  lm_calib_agg agg, double clamp, int n, int64_t len)
{
    const int32_t *win[8];
    size_t lens[8];
    int32_t *buf[8];
    for (int i = 0; i < n; i++) {
        buf[i] = tu_tokens(1000 + (uint64_t)i, len, m->dims.vocab);
        win[i] = buf[i];
        lens[i] = (size_t)len;
    }
    lm_calib_params cp;
    lm_calib_params_init(&cp);
    cp.buckets = buckets;
    cp.n_buckets = nb;
    cp.aggregation = agg;
    cp.clamp = clamp;
    lm_calibration *c = NULL;
    char err[512];
    lm_status st = lm_calibrate(m, win, lens, (size_t)n, &cp, &c, err, sizeof err);
    ck_assert_msg(st == LM_OK, "calibrate: %s", err);
    for (int i = 0; i < n; i++)
        free(buf[i]);
    return c;
}

static double softplus_d(double v)
{
    return v > 20 ? v : log1p(exp(v));
}
static double silu_d(double v)
{
    return v / (1 + exp(-v));
}

/* Logits (V doubles) of the last position of `toks` from zero state,
 * MAMBA.md §1 in double, with the LONGMAMBA.md §4-5 modifications. */
void ref_forward(const lm_model *m, const int32_t *toks, int64_t L0, ref_mode *md, double *logits)
{
    const lmi_dims *d = &m->dims;
    int64_t dm = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    int64_t L = L0;
    double *res = calloc((size_t)(L * dm), sizeof(double));
    double *hn = calloc((size_t)dm, sizeof(double));
    double *x = calloc((size_t)(L * E), sizeof(double)),
           *z = calloc((size_t)(L * E), sizeof(double));
    double *u = calloc((size_t)(L * E), sizeof(double)),
           *dl = calloc((size_t)(L * E), sizeof(double));
    double *Bm = calloc((size_t)(L * N), sizeof(double)),
           *Cm = calloc((size_t)(L * N), sizeof(double));
    double *h = calloc((size_t)(E * N), sizeof(double)), *y = calloc((size_t)E, sizeof(double));
    double *score = calloc((size_t)L, sizeof(double));
    md->min_gap = INFINITY;
    for (int64_t t = 0; t < L; t++)
        for (int64_t i = 0; i < dm; i++)
            res[t * dm + i] = lmi_weight_at(&m->embed, toks[t] * dm + i);
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmi_layer *ly = &m->layers[l];
        for (int64_t t = 0; t < L; t++) {
            double ss = 0;
            for (int64_t i = 0; i < dm; i++)
                ss += res[t * dm + i] * res[t * dm + i];
            double inv = 1 / sqrt(ss / dm + d->eps);
            for (int64_t i = 0; i < dm; i++)
                hn[i] = res[t * dm + i] * inv * lmi_weight_at(&ly->norm_w, i);
            for (int64_t o = 0; o < 2 * E; o++) {
                double acc = ly->mamba.in_b.data ? lmi_weight_at(&ly->mamba.in_b, o) : 0;
                for (int64_t i = 0; i < dm; i++)
                    acc += (double)lmi_weight_at(&ly->mamba.in_w, o * dm + i) * hn[i];
                if (o < E)
                    x[t * E + o] = acc;
                else
                    z[t * E + o - E] = acc;
            }
        }
        /* conv sees the full sequence, then x_proj, dt_proj, softplus */
        for (int64_t t = 0; t < L; t++) {
            for (int64_t e = 0; e < E; e++) {
                double acc = ly->mamba.conv_b.data ? lmi_weight_at(&ly->mamba.conv_b, e) : 0;
                for (int64_t k = 0; k < K; k++) {
                    int64_t src = t - (K - 1) + k;
                    if (src >= 0)
                        acc += (double)lmi_weight_at(&ly->mamba.conv_w, e * K + k) * x[src * E + e];
                }
                u[t * E + e] = silu_d(acc);
            }
            double dtl[64];
            for (int64_t r = 0; r < R + 2 * N; r++) {
                double acc = 0;
                for (int64_t e = 0; e < E; e++)
                    acc += (double)lmi_weight_at(&ly->mamba.x_w, r * E + e) * u[t * E + e];
                if (r < R)
                    dtl[r] = acc;
                else if (r < R + N)
                    Bm[t * N + r - R] = acc;
                else
                    Cm[t * N + r - R - N] = acc;
            }
            if (d->bcdt_rms_eps > 0) { /* Falcon-Mamba: each of dt_low, B, C by its RMS */
                double *part[3] = {dtl, Bm + t * N, Cm + t * N};
                const int64_t len[3] = {R, N, N};
                for (int g = 0; g < 3; g++) {
                    double ss = 0;
                    for (int64_t k = 0; k < len[g]; k++)
                        ss += part[g][k] * part[g][k];
                    const double inv = 1 / sqrt(ss / (double)len[g] + d->bcdt_rms_eps);
                    for (int64_t k = 0; k < len[g]; k++)
                        part[g][k] *= inv;
                }
            }
            for (int64_t e = 0; e < E; e++) {
                double acc = lmi_weight_at(&ly->mamba.dt_b, e);
                for (int64_t r = 0; r < R; r++)
                    acc += (double)lmi_weight_at(&ly->mamba.dt_w, e * R + r) * dtl[r];
                dl[t * E + e] = softplus_d(acc);
            }
        }
        /* DeciMamba: keep the top-K ||Δ_t|| among the first L-R, plus the last R */
        if (md->budget && md->budget[l] >= 0 && L > md->protect) {
            int64_t Rp = md->protect, n = L - Rp;
            double k = fmax(fmin((double)n, md->budget[l]), (double)md->min_len);
            int64_t Kk = k >= (double)n ? n : (int64_t)k;
            if (Kk < n) {
                for (int64_t t = 0; t < L; t++) {
                    double ss = 0;
                    for (int64_t e = 0; e < E; e++)
                        ss += dl[t * E + e] * dl[t * E + e];
                    score[t] = sqrt(ss);
                }
                /* the selection is only ambiguous at the K-th / (K+1)-th boundary */
                double *sorted = malloc(sizeof(double) * (size_t)n);
                memcpy(sorted, score, sizeof(double) * (size_t)n);
                qsort(sorted, (size_t)n, sizeof(double), cmp_desc);
                if (Kk > 0)
                    md->min_gap = fmin(md->min_gap, (sorted[Kk - 1] - sorted[Kk]) / sorted[Kk - 1]);
                free(sorted);
                int64_t o = 0;
                for (int64_t t = 0; t < L; t++) {
                    int64_t better = 0;
                    for (int64_t v = 0; v < n && t < n; v++)
                        if (score[v] > score[t] || (score[v] == score[t] && v < t))
                            better++;
                    if (t >= n || better < Kk) {
                        /* gather row t into row o */
                        memmove(res + o * dm, res + t * dm, sizeof(double) * (size_t)dm);
                        memmove(u + o * E, u + t * E, sizeof(double) * (size_t)E);
                        memmove(z + o * E, z + t * E, sizeof(double) * (size_t)E);
                        memmove(dl + o * E, dl + t * E, sizeof(double) * (size_t)E);
                        memmove(Bm + o * N, Bm + t * N, sizeof(double) * (size_t)N);
                        memmove(Cm + o * N, Cm + t * N, sizeof(double) * (size_t)N);
                        o++;
                    }
                }
                ck_assert_int_eq(o, Kk + Rp);
                L = o;
            }
        }
        if (md->choose) {
            /* τ in the middle of the widest relative gap of the sorted Δ
             * between ranks 10% and 70%; no usable gap -> local channel */
            double *srt = malloc(sizeof(double) * (size_t)L);
            for (int64_t e = 0; e < E; e++) {
                for (int64_t t = 0; t < L; t++)
                    srt[t] = dl[t * E + e];
                qsort(srt, (size_t)L, sizeof(double), cmp_desc);
                double best = 0;
                int64_t bq = -1;
                for (int64_t q = L / 10; q < 7 * L / 10; q++) {
                    double gap = (srt[q] - srt[q + 1]) / srt[q];
                    if (gap > best) {
                        best = gap;
                        bq = q;
                    }
                }
                bool g = e % 4 != 0 && bq >= 0 && best > 1e-3;
                md->global_out[l * E + e] = g;
                md->tau_out[l * E + e] = g ? (float)(0.5 * (srt[bq] + srt[bq + 1])) : 0.0f;
            }
            free(srt);
        }
        /* LongMamba: if global and not (Δ > τ): Δ = 0 */
        if (md->global || md->choose) {
            const uint8_t *g = (md->choose ? md->global_out : md->global) + l * E;
            const float *tau = (md->choose ? md->tau_out : md->tau) + l * E;
            for (int64_t t = 0; t < L; t++)
                for (int64_t e = 0; e < E; e++) {
                    if (!g[e])
                        continue;
                    double v = dl[t * E + e];
                    if (tau[e] > 0)
                        md->min_gap = fmin(md->min_gap, fabs(v - tau[e]) / tau[e]);
                    if (!(v > tau[e]))
                        dl[t * E + e] = 0;
                }
        }
        memset(h, 0, sizeof(double) * (size_t)(E * N));
        for (int64_t t = 0; t < L; t++) {
            for (int64_t e = 0; e < E; e++) {
                double dv = dl[t * E + e], acc = 0;
                for (int64_t n = 0; n < N; n++) {
                    double *hh = &h[e * N + n];
                    *hh = exp(dv * lmi_weight_at(&ly->mamba.A, e * N + n)) * *hh + dv * Bm[t * N + n] * u[t * E + e];
                    acc += *hh * Cm[t * N + n];
                }
                y[e] = (acc + lmi_weight_at(&ly->mamba.D, e) * u[t * E + e]) * silu_d(z[t * E + e]);
            }
            for (int64_t o = 0; o < dm; o++) {
                double acc = ly->mamba.out_b.data ? lmi_weight_at(&ly->mamba.out_b, o) : 0;
                for (int64_t e = 0; e < E; e++)
                    acc += (double)lmi_weight_at(&ly->mamba.out_w, o * E + e) * y[e];
                res[t * dm + o] += acc;
            }
        }
    }
    const double *last = res + (L - 1) * dm;
    double ss = 0;
    for (int64_t i = 0; i < dm; i++)
        ss += last[i] * last[i];
    double inv = 1 / sqrt(ss / dm + d->eps);
    for (int64_t i = 0; i < dm; i++)
        hn[i] = last[i] * inv * lmi_weight_at(&m->norm_f, i);
    for (int64_t v = 0; v < d->vocab; v++) {
        double acc = 0;
        for (int64_t i = 0; i < dm; i++)
            acc += (double)lmi_weight_at(&m->lm_head, v * dm + i) * hn[i];
        logits[v] = acc;
    }
    free(res);
    free(hn);
    free(x);
    free(z);
    free(u);
    free(dl);
    free(Bm);
    free(Cm);
    free(h);
    free(y);
    free(score);
}

/* max |lib - ref| <= 1e-5 * max |ref| (fp32 against float64) */
void check_vs_ref(const float *lib, const double *ref, int64_t V, const char *what)
{
    double mx = 0, diff = 0;
    for (int64_t v = 0; v < V; v++) {
        mx = fmax(mx, fabs(ref[v]));
        diff = fmax(diff, fabs((double)lib[v] - ref[v]));
    }
    ck_assert_msg(diff <= 1e-5 * mx, "%s: max diff %g, max |logit| %g", what, diff, mx);
}

double diff_vs_ref(const float *lib, const double *ref, int64_t V)
{
    double diff = 0;
    for (int64_t v = 0; v < V; v++)
        diff = fmax(diff, fabs((double)lib[v] - ref[v]));
    return diff;
}

/* Shared fixture for the mode tests: calibration 4 x 64 tokens, buckets
 * {64, 128, 256, 512}: trigger 96, a 300-token prompt uses bucket 256. */
const int64_t mode_buckets[] = {64, 128, 256, 512};
