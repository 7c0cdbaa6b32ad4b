/*
 * calibration.c - LongMamba calibration (LONGMAMBA.md §2-3): vanilla
 * forwards over calibration windows, per-channel log-decay and per-bucket
 * token-filter thresholds, aggregation over windows, safetensors save/load,
 * and the global/local channel classification.
 */
#include "internal.h"
#include "format/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define LMI_CALIB_FORMAT  "longmamba-calibration"
#define LMI_CALIB_VERSION "1"

void lm_calib_params_init(lm_calib_params *params)
{
    if (!params)
        return;
    memset(params, 0, sizeof *params);
    params->struct_size = (uint32_t)sizeof *params;
    params->aggregation = LM_CALIB_AGG_MAX;
}

void lm_calibration_free(lm_calibration *calib)
{
    if (!calib)
        return;
    lmi_free(calib->buckets);
    lmi_free(calib->log_decay);
    lmi_free(calib->thr);
    lmi_free(calib->a_log_scales);
    lmi_free(calib);
}

/* A calibration with its arrays allocated (zeroed); NULL on failure. */
static lm_calibration *calib_new(int64_t n_layer, int64_t n_channels, int64_t n_buckets)
{
    lm_calibration *c = lmi_alloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->n_layer = n_layer;
    c->n_channels = n_channels;
    c->n_buckets = n_buckets;
    size_t lc = (size_t)n_layer * (size_t)n_channels;
    c->buckets = lmi_alloc((size_t)n_buckets, sizeof(int64_t));
    c->log_decay = lmi_alloc(lc, sizeof(double));
    c->thr = lc <= SIZE_MAX / (size_t)n_buckets ? lmi_alloc(lc * (size_t)n_buckets, sizeof(float))
                                                : NULL;
    if (!c->buckets || !c->log_decay || !c->thr) {
        lm_calibration_free(c);
        return NULL;
    }
    return c;
}

static const char *arch_name(lm_arch a)
{
    return a == LM_ARCH_MAMBA1         ? "mamba1"
           : a == LM_ARCH_MAMBA2       ? "mamba2"
           : a == LM_ARCH_FALCON_MAMBA ? "falcon_mamba"
                                       : "unknown";
}

static const char *agg_name(lm_calib_agg a)
{
    return a == LM_CALIB_AGG_MAX ? "max" : a == LM_CALIB_AGG_MEAN ? "mean" : "unknown";
}

/* ---- calibration run ---------------------------------------------------- */

typedef struct calib_run {
    const lm_model *model;
    const int64_t *buckets;
    int64_t n_buckets;
    double clamp;
    lm_calib_agg agg;
    int64_t window; /* index of the window being processed */
    int64_t window_len;
    int64_t n_threads;
    double *scratch;       /* [n_threads][2 * max_len + n_buckets] */
    size_t scratch_stride; /* doubles per thread */
    uint8_t *seen;         /* [n_layer] layers reported in this window */
    /* accumulators over windows */
    double *log_decay; /* [n_layer][C]: max, or running logsumexp for mean */
    double *thr;       /* [n_layer][n_buckets][C]: max, or running sum for mean */
    const float *a_log_scales; /* [n_layer] Modulation (as the forward uses them), or NULL */
} calib_run;

static double log_add_exp(double a, double b)
{
    if (a == -INFINITY)
        return b;
    if (b == -INFINITY)
        return a;
    double m = a > b ? a : b;
    return m + log1p(exp(-fabs(a - b)));
}

/* Per channel: the window's statistics, folded into the accumulators. */
static void calib_channel(calib_run *r, int64_t layer, const float *delta, int64_t T, int64_t C,
                          int64_t c, double *scratch)
{
    const lmi_dims *d = &r->model->dims;
    const lmi_layer *ly = &r->model->layers[layer];
    const float *A_row = NULL;
    int64_t N = 0;
    double A_head = 0.0;
    lmi_mixer_find(ly->kind)->channel_A(d, ly, c, &A_row, &N, &A_head);
    float *thr_w = (float *)(scratch + 2 * T); /* n_buckets floats fit in n_buckets doubles */
    if (r->a_log_scales) {
        /* the decay of the modulated model: A' (N floats after thr_w) */
        const double sl = r->a_log_scales[layer];
        float *Am = (float *)(scratch + 2 * T + r->n_buckets);
        for (int64_t n = 0; n < N; n++) Am[n] = lmi_modulate_A(A_row[n], sl);
        if (N > 0) A_row = Am;
        A_head = (double)lmi_modulate_A((float)A_head, sl);
    }
    double ld = 0.0;
    lmi_channel_stats(delta + c, T, C, r->clamp, A_row, N, A_head, r->buckets, r->n_buckets,
                      scratch, &ld, thr_w);

    size_t lc = (size_t)layer * (size_t)C + (size_t)c;
    double *tacc = r->thr + (size_t)layer * (size_t)r->n_buckets * (size_t)C + (size_t)c;
    if (r->window == 0) {
        r->log_decay[lc] = ld;
        for (int64_t b = 0; b < r->n_buckets; b++)
            tacc[(size_t)b * (size_t)C] = thr_w[b];
    } else if (r->agg == LM_CALIB_AGG_MAX) {
        if (ld > r->log_decay[lc])
            r->log_decay[lc] = ld;
        for (int64_t b = 0; b < r->n_buckets; b++) {
            double *p = &tacc[(size_t)b * (size_t)C];
            if (thr_w[b] > *p)
                *p = thr_w[b];
        }
    } else {
        r->log_decay[lc] = log_add_exp(r->log_decay[lc], ld);
        for (int64_t b = 0; b < r->n_buckets; b++)
            tacc[(size_t)b * (size_t)C] += thr_w[b];
    }
}

/* lmi_delta_sink: one layer's post-softplus Δ [T][C] of the current window. */
static lm_status calib_sink(void *ctx, int64_t layer, const float *delta, int64_t n_tokens,
                            int64_t n_channels, lmi_err *e)
{
    calib_run *r = ctx;
    const lmi_dims *d = &r->model->dims;
    if (layer < 0 || layer >= d->n_layer || n_channels != d->n_channels ||
        n_tokens != r->window_len)
        return lmi_fail(e, LM_ERR_BACKEND,
                        "calibration: backend reported Δ of layer %lld as [%lld][%lld], expected "
                        "[%lld][%lld] of one of %lld layers",
                        (long long)layer, (long long)n_tokens, (long long)n_channels,
                        (long long)r->window_len, (long long)d->n_channels, (long long)d->n_layer);
    if (r->seen[layer])
        return lmi_fail(e, LM_ERR_BACKEND, "calibration: Δ of layer %lld reported twice",
                        (long long)layer);
    r->seen[layer] = 1;
    size_t n = (size_t)n_tokens * (size_t)n_channels;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(delta[i]) || delta[i] < 0.0f)
            return lmi_fail(e, LM_ERR_NUMERIC,
                            "calibration window %lld, layer %lld: Δ[%zu][%zu] = %g is not a "
                            "finite non-negative number",
                            (long long)r->window, (long long)layer, i / (size_t)n_channels,
                            i % (size_t)n_channels, (double)delta[i]);
    }
    int64_t C = n_channels;
#ifdef _OPENMP
#pragma omp parallel for num_threads((int)r->n_threads) schedule(dynamic, 8)
#endif
    for (int64_t c = 0; c < C; c++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        calib_channel(r, layer, delta, n_tokens, C, c,
                      r->scratch + (size_t)tid * r->scratch_stride);
    }
    return LM_OK;
}

static void calib_run_free(calib_run *r)
{
    lmi_free(r->scratch);
    lmi_free(r->seen);
    lmi_free(r->log_decay);
    lmi_free(r->thr);
}

/* Validates buckets: n >= 1 entries, each > 0, strictly ascending. */
static lm_status check_buckets(const int64_t *b, int64_t n, lmi_err *e)
{
    if (n < 1)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "bucket list is empty");
    for (int64_t i = 0; i < n; i++) {
        if (b[i] <= 0)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "bucket %lld is %lld; buckets must be > 0",
                            (long long)i, (long long)b[i]);
        if (i > 0 && b[i] <= b[i - 1])
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                            "buckets must be strictly ascending (bucket %lld = %lld after %lld)",
                            (long long)i, (long long)b[i], (long long)b[i - 1]);
    }
    return LM_OK;
}

static lm_status calibrate(const lm_model *model, const int32_t *const *windows,
                           const size_t *lengths, size_t n_windows, const lm_calib_params *params,
                           lm_calibration **out, lmi_err *e)
{
    if (!out)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibrate: out is NULL");
    *out = NULL;
    if (!model)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibrate: model is NULL");
    if (!windows || !lengths)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibrate: windows or lengths is NULL");
    if (n_windows == 0)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibrate: no calibration windows");

    lm_calib_params p;
    lm_calib_params_init(&p);
    if (params) {
        if (params->struct_size < offsetof(lm_calib_params, progress_user) + sizeof(void *))
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                            "calibrate: params->struct_size %u too small; use lm_calib_params_init",
                            (unsigned)params->struct_size);
        memcpy(&p, params, params->struct_size < sizeof p ? params->struct_size : sizeof p);
    }
    if (p.aggregation != LM_CALIB_AGG_MAX && p.aggregation != LM_CALIB_AGG_MEAN)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibrate: unknown aggregation %d",
                        (int)p.aggregation);
    if (!(p.clamp >= 0.0 && p.clamp <= 0.2))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibrate: clamp %g is outside [0, 0.2]",
                        p.clamp);
    const int64_t *buckets = lmi_default_buckets;
    int64_t n_buckets = (int64_t)lmi_n_default_buckets;
    if (p.buckets) {
        if (p.n_buckets > (size_t)INT32_MAX)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibrate: %zu buckets is too many",
                            p.n_buckets);
        buckets = p.buckets;
        n_buckets = (int64_t)p.n_buckets;
    } else if (p.n_buckets != 0) {
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "calibrate: n_buckets is %zu but buckets is NULL", p.n_buckets);
    }
    lm_status st = check_buckets(buckets, n_buckets, e);
    if (st != LM_OK)
        return st;

    const lmi_dims *d = &model->dims;
    size_t max_len = 0, total = 0;
    for (size_t w = 0; w < n_windows; w++) {
        if (!windows[w])
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibrate: window %zu is NULL", w);
        if (lengths[w] < 2)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                            "calibrate: window %zu has %zu tokens; at least 2 are needed", w,
                            lengths[w]);
        if (lengths[w] > (size_t)INT32_MAX)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibrate: window %zu is too long (%zu)",
                            w, lengths[w]);
        for (size_t t = 0; t < lengths[w]; t++) {
            int32_t tok = windows[w][t];
            if (tok < 0 || (int64_t)tok >= d->vocab)
                return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                                "calibrate: window %zu token %zu is %d, outside [0, %lld)", w, t,
                                (int)tok, (long long)d->vocab);
        }
        if (lengths[w] > max_len)
            max_len = lengths[w];
        total += lengths[w];
    }
    if (!model->vt || !model->vt->forward || !model->vt->session_reset || !model->layers)
        return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE,
                        "calibrate: the model has no usable backend");

    float *a_scales = NULL; /* the forward's hook */
    if (p.a_log_scales || p.n_a_log_scales) {
        st = lmi_layer_scales(model, "calibrate: a_log_scales", p.a_log_scales, p.n_a_log_scales,
                              &a_scales, e);
        if (st != LM_OK)
            return st;
    }

    calib_run r = {0};
    r.model = model;
    r.buckets = buckets;
    r.n_buckets = n_buckets;
    r.clamp = p.clamp;
    r.agg = p.aggregation;
    r.a_log_scales = a_scales;
    r.n_threads = model->n_threads > 0 ? model->n_threads : 1;
#ifndef _OPENMP
    r.n_threads = 1;
#endif
    size_t C = (size_t)d->n_channels, nl = (size_t)d->n_layer;
    r.scratch_stride = 2 * max_len + (size_t)n_buckets + (size_t)d->d_state;
    r.scratch = lmi_alloc_raw((size_t)r.n_threads * r.scratch_stride, sizeof(double));
    r.seen = lmi_alloc(nl, 1);
    r.log_decay = lmi_alloc(nl * C, sizeof(double));
    r.thr = lmi_alloc(nl * C * (size_t)n_buckets, sizeof(double));
    lm_calibration *cal = calib_new(d->n_layer, d->n_channels, n_buckets);
    lm_session *s = NULL;
    if (cal && a_scales) {
        cal->a_log_scales = lmi_alloc(nl, sizeof(double));
        if (cal->a_log_scales)
            memcpy(cal->a_log_scales, p.a_log_scales, nl * sizeof(double));
    }
    if (!r.scratch || !r.seen || !r.log_decay || !r.thr || !cal ||
        (a_scales && !cal->a_log_scales)) {
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "calibrate: out of memory for the statistics");
        goto fail;
    }

    /* One chunk per window, so every window is one forward whose sink sees
     * the whole window's Δ. */
    lm_session_params sp;
    lm_session_params_init(&sp);
    sp.chunk_size = (int64_t)max_len;
    char serr[LMI_ERR_CAP];
    st = lm_session_create(model, &sp, &s, serr, sizeof serr);
    if (st != LM_OK) {
        lmi_fail(e, st, "calibrate: %s", serr);
        goto fail;
    }

    size_t done = 0;
    for (size_t w = 0; w < n_windows; w++) {
        model->vt->session_reset(s);
        s->pos = 0;
        memset(r.seen, 0, nl);
        r.window = (int64_t)w;
        r.window_len = (int64_t)lengths[w];
        lmi_forward f = {
            .tokens = windows[w],
            .n_tokens = (int64_t)lengths[w],
            .n_out = 0,
            .logits = NULL,
            .sink = calib_sink,
            .sink_ctx = &r,
            .a_log_scale = a_scales,
        };
        st = model->vt->forward(s, &f, e);
        if (st != LM_OK)
            goto fail;
        for (size_t l = 0; l < nl; l++) {
            if (!r.seen[l]) {
                st = lmi_fail(e, LM_ERR_BACKEND,
                              "calibration: the backend did not report Δ of layer %zu", l);
                goto fail;
            }
        }
        done += lengths[w];
        if (p.progress && p.progress(p.progress_user, (int64_t)done, (int64_t)total)) {
            st = lmi_fail(e, LM_ERR_ABORTED,
                          "calibrate: stopped by the progress callback after "
                          "%zu of %zu windows",
                          w + 1, n_windows);
            goto fail;
        }
    }

    /* Final aggregation into the calibration. */
    double logW = log((double)n_windows);
    for (size_t i = 0; i < nl * C; i++)
        cal->log_decay[i] = r.agg == LM_CALIB_AGG_MEAN ? r.log_decay[i] - logW : r.log_decay[i];
    for (size_t i = 0; i < nl * C * (size_t)n_buckets; i++)
        cal->thr[i] = (float)(r.agg == LM_CALIB_AGG_MEAN ? r.thr[i] / (double)n_windows : r.thr[i]);
    memcpy(cal->buckets, buckets, (size_t)n_buckets * sizeof(int64_t));
    cal->arch = d->arch;
    cal->calib_length = (int64_t)max_len;
    cal->n_windows = (int64_t)n_windows;
    cal->clamp = p.clamp;
    cal->agg = p.aggregation;
    cal->fingerprint = model->fingerprint;
    lm_session_free(s);
    calib_run_free(&r);
    lmi_free(a_scales);
    *out = cal;
    return LM_OK;

fail:
    lm_session_free(s);
    calib_run_free(&r);
    lmi_free(a_scales);
    lm_calibration_free(cal);
    return st;
}

lm_status lm_calibrate(const lm_model *model, const int32_t *const *windows, const size_t *lengths,
                       size_t n_windows, const lm_calib_params *params, lm_calibration **out,
                       char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = calibrate(model, windows, lengths, n_windows, params, out, &e);
    if (st == LM_OK)
        e.msg[0] = '\0';
    lmi_err_copy(&e, err, err_cap);
    return st;
}

/* ---- save / load -------------------------------------------------------- */

static lm_status calib_save(const lm_calibration *c, const char *path, lmi_err *e)
{
    if (!c || !path)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibration_save: NULL argument");
    int64_t sh_b[1] = {c->n_buckets};
    int64_t sh_d[2] = {c->n_layer, c->n_channels};
    int64_t sh_t[3] = {c->n_layer, c->n_buckets, c->n_channels};
    int64_t sh_a[1] = {c->n_layer};
    lmi_st_out t[4] = {
        {.name = "buckets", .dtype = LMI_ST_I64, .ndim = 1, .shape = sh_b, .data = c->buckets},
        {.name = "log_decay", .dtype = LMI_ST_F64, .ndim = 2, .shape = sh_d, .data = c->log_decay},
        {.name = "thresholds", .dtype = LMI_ST_F32, .ndim = 3, .shape = sh_t, .data = c->thr},
        /* only in a calibration of a modulated model */
        {.name = "a_log_scales", .dtype = LMI_ST_F64, .ndim = 1, .shape = sh_a,
         .data = c->a_log_scales},
    };
    char fp[32], len[32], nw[32], clamp[40];
    snprintf(fp, sizeof fp, "%016" PRIx64, c->fingerprint);
    snprintf(len, sizeof len, "%lld", (long long)c->calib_length);
    snprintf(nw, sizeof nw, "%lld", (long long)c->n_windows);
    snprintf(clamp, sizeof clamp, "%.17g", c->clamp);
    const char *keys[] = {"format",       "version",   "arch",  "fingerprint",
                          "calib_length", "n_windows", "clamp", "aggregation"};
    const char *vals[] = {
        LMI_CALIB_FORMAT, LMI_CALIB_VERSION, arch_name(c->arch), fp, len, nw, clamp,
        agg_name(c->agg)};
    return lmi_st_write(path, t, c->a_log_scales ? 4 : 3, keys, vals, sizeof keys / sizeof keys[0],
                        e);
}

lm_status lm_calibration_save(const lm_calibration *calib, const char *path, char *err,
                              size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = calib_save(calib, path, &e);
    if (st == LM_OK)
        e.msg[0] = '\0';
    lmi_err_copy(&e, err, err_cap);
    return st;
}

/* Whole-string integer parse; false on junk, overflow or a value < min. */
static bool parse_i64(const char *s, int64_t min, int64_t *out)
{
    if (!s || !*s)
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s || v < min)
        return false;
    *out = v;
    return true;
}

static lm_status meta_get(const lmi_st_file *f, const char *path, const char *key, const char **out,
                          lmi_err *e)
{
    *out = lmi_st_meta(f, key);
    if (!*out)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: calibration metadata '%s' is missing", path, key);
    return LM_OK;
}

static lm_status tensor_get(const lmi_st_file *f, const char *path, const char *name,
                            lmi_st_dtype dt, int ndim, const lmi_st_tensor **out, lmi_err *e)
{
    const lmi_st_tensor *t = lmi_st_find(f, name);
    if (!t)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: calibration tensor '%s' is missing", path, name);
    if (t->dtype != dt)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected %s", path, name,
                        lmi_st_dtype_name(t->dtype), lmi_st_dtype_name(dt));
    if (t->ndim != ndim)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: tensor '%s' has %d dims, expected %d", path, name,
                        t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] < 1)
            return lmi_fail(e, LM_ERR_FORMAT, "%s: tensor '%s' has an empty dimension %d", path,
                            name, i);
    *out = t;
    return LM_OK;
}

static lm_status calib_load(const char *path, const lm_model *model, lm_calibration **out,
                            lmi_err *e)
{
    if (!out)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibration_load: out is NULL");
    *out = NULL;
    if (!path)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "calibration_load: path is NULL");
    lmi_st_file f;
    memset(&f, 0, sizeof f);
    lm_status st = lmi_st_open(path, &f, e);
    if (st != LM_OK)
        return st;
    lm_calibration *c = NULL;

    const char *fmt, *ver, *arch, *fp, *len, *nw, *clamp, *agg;
    if ((st = meta_get(&f, path, "format", &fmt, e)) ||
        (st = meta_get(&f, path, "version", &ver, e)) ||
        (st = meta_get(&f, path, "arch", &arch, e)) ||
        (st = meta_get(&f, path, "fingerprint", &fp, e)) ||
        (st = meta_get(&f, path, "calib_length", &len, e)) ||
        (st = meta_get(&f, path, "n_windows", &nw, e)) ||
        (st = meta_get(&f, path, "clamp", &clamp, e)) ||
        (st = meta_get(&f, path, "aggregation", &agg, e)))
        goto done;
    if (strcmp(fmt, LMI_CALIB_FORMAT) != 0) {
        st = lmi_fail(e, LM_ERR_FORMAT, "%s: format is '%s', not a " LMI_CALIB_FORMAT " file", path,
                      fmt);
        goto done;
    }
    if (strcmp(ver, LMI_CALIB_VERSION) != 0) {
        st = lmi_fail(e, LM_ERR_FORMAT,
                      "%s: calibration version '%s' is not supported (want " LMI_CALIB_VERSION ")",
                      path, ver);
        goto done;
    }
    lm_arch a;
    if (strcmp(arch, "mamba1") == 0)
        a = LM_ARCH_MAMBA1;
    else if (strcmp(arch, "mamba2") == 0)
        a = LM_ARCH_MAMBA2;
    else if (strcmp(arch, "falcon_mamba") == 0)
        a = LM_ARCH_FALCON_MAMBA;
    else {
        st = lmi_fail(e, LM_ERR_FORMAT, "%s: unknown arch '%s'", path, arch);
        goto done;
    }
    uint64_t fpv = 0;
    {
        size_t n = strlen(fp);
        bool ok = n >= 1 && n <= 16;
        for (size_t i = 0; ok && i < n; i++) {
            char ch = fp[i];
            int v = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (v < 0)
                ok = false;
            fpv = fpv << 4 | (uint64_t)(v < 0 ? 0 : v);
        }
        if (!ok) {
            st =
                lmi_fail(e, LM_ERR_FORMAT, "%s: fingerprint '%s' is not 1-16 hex digits", path, fp);
            goto done;
        }
    }
    int64_t lenv, nwv;
    if (!parse_i64(len, 1, &lenv)) {
        st = lmi_fail(e, LM_ERR_FORMAT, "%s: calib_length '%s' is not a positive integer", path,
                      len);
        goto done;
    }
    if (!parse_i64(nw, 1, &nwv)) {
        st = lmi_fail(e, LM_ERR_FORMAT, "%s: n_windows '%s' is not a positive integer", path, nw);
        goto done;
    }
    char *end = NULL;
    double clampv = strtod(clamp, &end);
    if (end == clamp || *end || !(clampv >= 0.0 && clampv <= 0.2)) {
        st = lmi_fail(e, LM_ERR_FORMAT, "%s: clamp '%s' is not a number in [0, 0.2]", path, clamp);
        goto done;
    }
    lm_calib_agg aggv;
    if (strcmp(agg, "max") == 0)
        aggv = LM_CALIB_AGG_MAX;
    else if (strcmp(agg, "mean") == 0)
        aggv = LM_CALIB_AGG_MEAN;
    else {
        st = lmi_fail(e, LM_ERR_FORMAT, "%s: unknown aggregation '%s'", path, agg);
        goto done;
    }

    const lmi_st_tensor *tb, *td, *tt;
    if ((st = tensor_get(&f, path, "buckets", LMI_ST_I64, 1, &tb, e)) ||
        (st = tensor_get(&f, path, "log_decay", LMI_ST_F64, 2, &td, e)) ||
        (st = tensor_get(&f, path, "thresholds", LMI_ST_F32, 3, &tt, e)))
        goto done;
    int64_t nb = tb->shape[0], nl = td->shape[0], C = td->shape[1];
    if (tt->shape[0] != nl || tt->shape[1] != nb || tt->shape[2] != C) {
        st = lmi_fail(e, LM_ERR_FORMAT,
                      "%s: thresholds have shape [%lld, %lld, %lld], expected [%lld, %lld, %lld] "
                      "(n_layer, n_buckets, channels)",
                      path, (long long)tt->shape[0], (long long)tt->shape[1],
                      (long long)tt->shape[2], (long long)nl, (long long)nb, (long long)C);
        goto done;
    }
    c = calib_new(nl, C, nb);
    if (!c) {
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "%s: out of memory", path);
        goto done;
    }
    /* The data may be unaligned inside the file: copy, then check. */
    memcpy(c->buckets, tb->data, (size_t)nb * sizeof(int64_t));
    memcpy(c->log_decay, td->data, (size_t)nl * (size_t)C * sizeof(double));
    memcpy(c->thr, tt->data, (size_t)nl * (size_t)nb * (size_t)C * sizeof(float));
    lmi_err be;
    if (check_buckets(c->buckets, nb, &be) != LM_OK) {
        st = lmi_fail(e, LM_ERR_FORMAT, "%s: %s", path, be.msg);
        goto done;
    }
    for (size_t i = 0; i < (size_t)nl * (size_t)C; i++) {
        if (!isfinite(c->log_decay[i])) {
            st = lmi_fail(e, LM_ERR_FORMAT, "%s: log_decay of layer %zu channel %zu is %g", path,
                          i / (size_t)C, i % (size_t)C, c->log_decay[i]);
            goto done;
        }
    }
    for (size_t i = 0; i < (size_t)nl * (size_t)nb * (size_t)C; i++) {
        float v = c->thr[i];
        if (!isfinite(v) || v < 0.0f) {
            size_t per_layer = (size_t)nb * (size_t)C;
            st = lmi_fail(e, LM_ERR_FORMAT,
                          "%s: threshold of layer %zu bucket %zu channel %zu is %g; thresholds "
                          "must be finite and >= 0",
                          path, i / per_layer, i % per_layer / (size_t)C, i % (size_t)C, (double)v);
            goto done;
        }
    }
    if (lmi_st_find(&f, "a_log_scales")) {
        const lmi_st_tensor *ta;
        if ((st = tensor_get(&f, path, "a_log_scales", LMI_ST_F64, 1, &ta, e)))
            goto done;
        if (ta->shape[0] != nl) {
            st = lmi_fail(e, LM_ERR_FORMAT, "%s: a_log_scales has %lld entries for %lld layers",
                          path, (long long)ta->shape[0], (long long)nl);
            goto done;
        }
        c->a_log_scales = lmi_alloc((size_t)nl, sizeof(double));
        if (!c->a_log_scales) {
            st = lmi_fail(e, LM_ERR_NO_MEMORY, "%s: out of memory", path);
            goto done;
        }
        memcpy(c->a_log_scales, ta->data, (size_t)nl * sizeof(double));
        for (int64_t l = 0; l < nl; l++) {
            if (!isfinite(c->a_log_scales[l]) || !(c->a_log_scales[l] > 0.0)) {
                st = lmi_fail(e, LM_ERR_FORMAT, "%s: a_log_scales[%lld] is %g", path, (long long)l,
                              c->a_log_scales[l]);
                goto done;
            }
        }
    }
    c->arch = a;
    c->fingerprint = fpv;
    c->calib_length = lenv;
    c->n_windows = nwv;
    c->clamp = clampv;
    c->agg = aggv;

    if (model) {
        const lmi_dims *d = &model->dims;
        if (fpv != model->fingerprint || a != d->arch || nl != d->n_layer || C != d->n_channels) {
            st = lmi_fail(e, LM_ERR_MISMATCH,
                          "%s: calibration belongs to another model (fingerprint %016" PRIx64
                          ", %s, %lld layers x %lld channels; model %016" PRIx64
                          ", %s, %lld layers x %lld channels)",
                          path, fpv, arch_name(a), (long long)nl, (long long)C, model->fingerprint,
                          arch_name(d->arch), (long long)d->n_layer, (long long)d->n_channels);
            goto done;
        }
    }
    *out = c;
    c = NULL;
done:
    lm_calibration_free(c);
    lmi_st_close(&f);
    return st;
}

lm_status lm_calibration_load(const char *path, const lm_model *model, lm_calibration **out,
                              char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = calib_load(path, model, out, &e);
    if (st == LM_OK)
        e.msg[0] = '\0';
    lmi_err_copy(&e, err, err_cap);
    return st;
}

/* ---- getters ------------------------------------------------------------ */

/* Writes info->field only when the caller's struct has it. */
#define SET_FIELD(info, field, value)                                                              \
    do {                                                                                           \
        if ((info)->struct_size >= offsetof(lm_calibration_info, field) + sizeof((info)->field))   \
            (info)->field = (value);                                                               \
    } while (0)

lm_status lm_calibration_get_info(const lm_calibration *calib, lm_calibration_info *info)
{
    if (!calib || !info)
        return LM_ERR_INVALID_ARGUMENT;
    if (info->struct_size < offsetof(lm_calibration_info, arch) + sizeof(info->arch))
        return LM_ERR_INVALID_ARGUMENT;
    SET_FIELD(info, arch, calib->arch);
    SET_FIELD(info, n_layer, calib->n_layer);
    SET_FIELD(info, n_channels, calib->n_channels);
    SET_FIELD(info, calib_length, calib->calib_length);
    SET_FIELD(info, n_windows, calib->n_windows);
    SET_FIELD(info, n_buckets, calib->n_buckets);
    SET_FIELD(info, clamp, calib->clamp);
    SET_FIELD(info, aggregation, calib->agg);
    SET_FIELD(info, fingerprint, calib->fingerprint);
    return LM_OK;
}

lm_status lm_calibration_get_buckets(const lm_calibration *calib, int64_t *out, size_t cap)
{
    if (!calib || !out)
        return LM_ERR_INVALID_ARGUMENT;
    if (cap < (size_t)calib->n_buckets)
        return LM_ERR_BUFFER_TOO_SMALL;
    memcpy(out, calib->buckets, (size_t)calib->n_buckets * sizeof(int64_t));
    return LM_OK;
}

lm_status lm_calibration_get_log_decay(const lm_calibration *calib, int64_t layer, double *out,
                                       size_t cap)
{
    if (!calib || !out)
        return LM_ERR_INVALID_ARGUMENT;
    if (layer < 0 || layer >= calib->n_layer)
        return LM_ERR_OUT_OF_RANGE;
    if (cap < (size_t)calib->n_channels)
        return LM_ERR_BUFFER_TOO_SMALL;
    memcpy(out, calib->log_decay + (size_t)layer * (size_t)calib->n_channels,
           (size_t)calib->n_channels * sizeof(double));
    return LM_OK;
}

lm_status lm_calibration_get_thresholds(const lm_calibration *calib, int64_t layer, int64_t bucket,
                                        float *out, size_t cap)
{
    if (!calib || !out)
        return LM_ERR_INVALID_ARGUMENT;
    if (layer < 0 || layer >= calib->n_layer || bucket < 0 || bucket >= calib->n_buckets)
        return LM_ERR_OUT_OF_RANGE;
    if (cap < (size_t)calib->n_channels)
        return LM_ERR_BUFFER_TOO_SMALL;
    size_t C = (size_t)calib->n_channels;
    memcpy(out, calib->thr + ((size_t)layer * (size_t)calib->n_buckets + (size_t)bucket) * C,
           C * sizeof(float));
    return LM_OK;
}

/* ---- step 1: global / local channels ------------------------------------ */

lm_status lm_classify_channels(const lm_calibration *calib, double theta, uint8_t *mask,
                               size_t mask_cap, int64_t *counts, size_t counts_cap, char *err,
                               size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = LM_OK;
    if (!calib || !mask) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "classify_channels: calib or mask is NULL");
    } else if (!isfinite(theta) || !(theta > 0.0)) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT,
                      "classify_channels: theta %g must be finite and > 0", theta);
    } else if (mask_cap < (size_t)calib->n_layer * (size_t)calib->n_channels) {
        st = lmi_fail(&e, LM_ERR_BUFFER_TOO_SMALL,
                      "classify_channels: mask holds %zu bytes, %lld needed", mask_cap,
                      (long long)(calib->n_layer * calib->n_channels));
    } else if (counts && counts_cap < (size_t)calib->n_layer) {
        st = lmi_fail(&e, LM_ERR_BUFFER_TOO_SMALL,
                      "classify_channels: counts holds %zu entries, %lld needed", counts_cap,
                      (long long)calib->n_layer);
    } else {
        /* global iff decay > theta, compared as logs (decay underflows) */
        double lt = log(theta);
        size_t C = (size_t)calib->n_channels;
        for (int64_t l = 0; l < calib->n_layer; l++) {
            int64_t n = 0;
            for (size_t c = 0; c < C; c++) {
                size_t i = (size_t)l * C + c;
                mask[i] = calib->log_decay[i] > lt ? 1 : 0;
                n += mask[i];
            }
            if (counts)
                counts[l] = n;
        }
    }
    lmi_err_copy(&e, err, err_cap);
    return st;
}
