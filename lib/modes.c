/*
 * modes.c - session modes (LONGMAMBA.md §4-5): vanilla, LongMamba
 * (per-channel token filtering in global channels) and DeciMamba (token
 * decimation in chosen layers).  Turns a mode and a prompt length into the
 * plain data the backend's forward reads (lmi_forward filters / deci_*).
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#define LMI_THETA_M1     1e-3 /* LONGMAMBA.md §7: 1e-30 made 41-64% global and hurt */
#define LMI_THETA_M2     5e-2 /* the authors' Mamba-2 default */
#define LMI_DECI_L_BASE  2000
#define LMI_DECI_BETA    1.0
#define LMI_DECI_MIN_LEN 20
#define LMI_DECI_PROTECT 1

void lm_longmamba_params_init(lm_longmamba_params *params)
{
    if (!params)
        return;
    /* theta's default depends on the architecture: left 0 (= default) and
     * resolved by lm_session_set_longmamba. */
    memset(params, 0, sizeof *params);
    params->struct_size = (uint32_t)sizeof *params;
    params->threshold_scale = 1.0;
}

double lm_longmamba_default_theta(lm_arch arch)
{
    switch (arch) {
    case LM_ARCH_MAMBA1: return LMI_THETA_M1;
    case LM_ARCH_MAMBA2: return LMI_THETA_M2;
    }
    return 0.0;
}

void lm_decimamba_params_init(lm_decimamba_params *params)
{
    if (!params)
        return;
    memset(params, 0, sizeof *params);
    params->struct_size = (uint32_t)sizeof *params;
    params->l_base = LMI_DECI_L_BASE;
    params->beta = LMI_DECI_BETA;
    params->min_len = LMI_DECI_MIN_LEN;
    params->protect = LMI_DECI_PROTECT;
}

void lmi_modes_free(lm_session *s)
{
    if (!s)
        return;
    lmi_free(s->global);
    lmi_free(s->tau);
    lmi_free(s->filters);
    lmi_free(s->deci_budget);
    s->global = NULL;
    s->tau = NULL;
    s->filters = NULL;
    s->deci_budget = NULL;
    s->calib = NULL;
}

lm_status lm_session_set_vanilla(lm_session *s)
{
    if (!s)
        return LM_ERR_INVALID_ARGUMENT;
    lmi_modes_free(s);
    s->mode = LM_MODE_VANILLA;
    return LM_OK;
}

/* Copies a caller params struct of any published size over the defaults. */
static bool copy_params(void *dst, size_t dst_size, const void *src, uint32_t src_size,
                        size_t min_size)
{
    if (src_size < min_size)
        return false;
    memcpy(dst, src, src_size < dst_size ? src_size : dst_size);
    return true;
}

lm_status lm_session_set_longmamba(lm_session *s, const lm_calibration *calib,
                                   const lm_longmamba_params *params)
{
    if (!s)
        return LM_ERR_INVALID_ARGUMENT;
    lmi_err *e = &s->err;
    if (!calib)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "set_longmamba: calibration is NULL");
    lm_longmamba_params p;
    lm_longmamba_params_init(&p);
    if (params && !copy_params(&p, sizeof p, params, params->struct_size,
                               offsetof(lm_longmamba_params, trigger_length) + sizeof(int64_t)))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "set_longmamba: params->struct_size %u too small; use "
                        "lm_longmamba_params_init",
                        (unsigned)params->struct_size);

    const lm_model *m = s->model;
    const lmi_dims *d = &m->dims;
    if (calib->arch != d->arch || calib->n_layer != d->n_layer ||
        calib->n_channels != d->n_channels || calib->fingerprint != m->fingerprint)
        return lmi_fail(e, LM_ERR_MISMATCH,
                        "set_longmamba: calibration belongs to another model (fingerprint "
                        "%016llx, %lld layers x %lld channels; model %016llx, %lld x %lld)",
                        (unsigned long long)calib->fingerprint, (long long)calib->n_layer,
                        (long long)calib->n_channels, (unsigned long long)m->fingerprint,
                        (long long)d->n_layer, (long long)d->n_channels);

    /* Out-of-range parameter values report LM_ERR_OUT_OF_RANGE (the value
     * is of the right kind but outside its domain); 0 means default. */
    double theta = p.theta;
    if (theta == 0.0)
        theta = lm_longmamba_default_theta(d->arch);
    if (!isfinite(theta) || !(theta > 0.0))
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                        "set_longmamba: theta %g must be finite and > 0 (0 = default)", p.theta);
    double b = p.threshold_scale;
    if (b == 0.0)
        b = 1.0;
    if (!isfinite(b) || b < 0.0)
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                        "set_longmamba: threshold_scale %g must be finite and >= 0 (0 = default)",
                        p.threshold_scale);
    if (p.trigger_length < 0)
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                        "set_longmamba: trigger_length %lld must be >= 0 (0 = 1.5 x calibration "
                        "length)",
                        (long long)p.trigger_length);
    int64_t trigger = p.trigger_length;
    if (trigger == 0)
        trigger = (int64_t)llround(1.5 * (double)calib->calib_length);

    size_t nl = (size_t)d->n_layer, C = (size_t)d->n_channels;
    uint8_t *global = lmi_alloc(nl * C, 1);
    float *tau = lmi_alloc(nl * C, sizeof(float));
    lmi_filter *filters = lmi_alloc(nl, sizeof(lmi_filter));
    int64_t *counts = lmi_alloc(nl, sizeof(int64_t));
    if (!global || !tau || !filters || !counts) {
        lmi_free(global);
        lmi_free(tau);
        lmi_free(filters);
        lmi_free(counts);
        return lmi_fail(e, LM_ERR_NO_MEMORY, "set_longmamba: out of memory");
    }
    char cerr[LMI_ERR_CAP];
    lm_status st =
        lm_classify_channels(calib, theta, global, nl * C, counts, nl, cerr, sizeof cerr);
    if (st != LM_OK) {
        lmi_free(global);
        lmi_free(tau);
        lmi_free(filters);
        lmi_free(counts);
        return lmi_fail(e, st, "set_longmamba: %s", cerr);
    }
    int64_t total = 0;
    for (size_t l = 0; l < nl; l++) {
        /* a layer without global channels needs no filter at all */
        filters[l].global = counts[l] > 0 ? global + l * C : NULL;
        filters[l].tau = tau + l * C;
        total += counts[l];
    }
    lmi_free(counts);

    lmi_modes_free(s);
    s->mode = LM_MODE_LONGMAMBA;
    s->calib = calib;
    s->theta = theta;
    s->scale = b;
    s->trigger = trigger;
    s->global = global;
    s->tau = tau;
    s->filters = filters;
    lmi_log(s->log_fn, s->log_user, s->model->log_level, LM_LOG_INFO,
            "longmamba: theta %g, %lld of %lld channels global, trigger %lld tokens", theta,
            (long long)total, (long long)(nl * C), (long long)trigger);
    return LM_OK;
}

lm_status lm_session_set_decimamba(lm_session *s, const lm_decimamba_params *params)
{
    if (!s)
        return LM_ERR_INVALID_ARGUMENT;
    lmi_err *e = &s->err;
    lm_decimamba_params p;
    lm_decimamba_params_init(&p);
    if (params && !copy_params(&p, sizeof p, params, params->struct_size,
                               offsetof(lm_decimamba_params, protect) + sizeof(int64_t)))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "set_decimamba: params->struct_size %u too small; use "
                        "lm_decimamba_params_init",
                        (unsigned)params->struct_size);
    const lmi_dims *d = &s->model->dims;
    int64_t nl = d->n_layer;

    int32_t middle = (int32_t)(nl / 2);
    const int32_t *layers = p.layers;
    size_t n_layers = p.n_layers;
    if (!layers) {
        if (n_layers != 0)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                            "set_decimamba: n_layers is %zu but layers is NULL", n_layers);
        layers = &middle;
        n_layers = 1;
    }
    if (n_layers == 0)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "set_decimamba: the layer list is empty (NULL = the middle layer)");
    if (n_layers > (size_t)nl)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "set_decimamba: %zu layers listed but the model has %lld", n_layers,
                        (long long)nl);
    for (size_t i = 0; i < n_layers; i++) {
        if (layers[i] < 0 || (int64_t)layers[i] >= nl)
            return lmi_fail(e, LM_ERR_OUT_OF_RANGE, "set_decimamba: layer %d is outside [0, %lld)",
                            (int)layers[i], (long long)nl);
        for (size_t j = 0; j < i; j++)
            if (layers[j] == layers[i])
                return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                                "set_decimamba: layer %d is listed twice", (int)layers[i]);
    }
    int64_t l_base = p.l_base == 0 ? LMI_DECI_L_BASE : p.l_base;
    double beta = p.beta == 0.0 ? LMI_DECI_BETA : p.beta;
    int64_t min_len = p.min_len == 0 ? LMI_DECI_MIN_LEN : p.min_len;
    int64_t protect = p.protect == 0 ? LMI_DECI_PROTECT : p.protect;
    if (l_base < 0)
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE, "set_decimamba: l_base %lld must be > 0",
                        (long long)p.l_base);
    if (!isfinite(beta) || beta < 0.0)
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE, "set_decimamba: beta %g must be finite and > 0",
                        p.beta);
    if (min_len < 0)
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE, "set_decimamba: min_len %lld must be >= 0",
                        (long long)p.min_len);
    if (protect < 1)
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE, "set_decimamba: protect %lld must be >= 1",
                        (long long)p.protect);

    double *budget = lmi_alloc((size_t)nl, sizeof(double));
    if (!budget)
        return lmi_fail(e, LM_ERR_NO_MEMORY, "set_decimamba: out of memory");
    for (int64_t l = 0; l < nl; l++)
        budget[l] = -1.0;
    /* layer s of the list keeps l_base * beta^s tokens */
    for (size_t i = 0; i < n_layers; i++)
        budget[layers[i]] = (double)l_base * pow(beta, (double)i);

    lmi_modes_free(s);
    s->mode = LM_MODE_DECIMAMBA;
    s->deci_budget = budget;
    s->deci_min_len = min_len;
    s->deci_protect = protect;
    return LM_OK;
}

lm_status lmi_modes_prepare(lm_session *s, int64_t prompt_len, lmi_forward *f)
{
    f->filters = NULL;
    f->deci_budget = NULL;
    f->deci_min_len = 0;
    f->deci_protect = 0;
    if (s->mode == LM_MODE_LONGMAMBA) {
        const lm_calibration *c = s->calib;
        if (!c || !s->filters)
            return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT, "longmamba mode has no calibration");
        /* Filtering only for prompts of at least the trigger length; the
         * bucket comes from the whole prompt, never from one chunk. */
        if (prompt_len < s->trigger)
            return LM_OK;
        int64_t bucket = lmi_bucket_index(c->buckets, c->n_buckets, prompt_len);
        size_t C = (size_t)c->n_channels;
        for (int64_t l = 0; l < c->n_layer; l++) {
            /* tau[c] = b * thr[bucket][c] */
            const float *thr = c->thr + ((size_t)l * (size_t)c->n_buckets + (size_t)bucket) * C;
            float *tau = s->tau + (size_t)l * C;
            for (size_t ch = 0; ch < C; ch++)
                tau[ch] = (float)(s->scale * (double)thr[ch]);
        }
        f->filters = s->filters;
    } else if (s->mode == LM_MODE_DECIMAMBA) {
        if (!s->deci_budget)
            return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT, "decimamba mode has no layer budget");
        f->deci_budget = s->deci_budget;
        f->deci_min_len = s->deci_min_len;
        f->deci_protect = s->deci_protect;
    }
    return LM_OK;
}

bool lmi_modes_single_chunk(const lm_session *s)
{
    return s && s->mode == LM_MODE_DECIMAMBA;
}
