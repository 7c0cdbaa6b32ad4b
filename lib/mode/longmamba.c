/*
 * mode/longmamba.c - LongMamba (LONGMAMBA.md §2-4): in the global channels
 * chosen from the calibration and θ, a channel accumulates token t only
 * when Δ_t exceeds the threshold of the prompt's length bucket.  Prompts
 * shorter than the trigger length run vanilla; decode steps always do.
 */
#include "internal.h"
#include "arch/arch.h"

#include <math.h>
#include <string.h>

typedef struct longmamba_state {
    const lm_calibration *calib;
    double theta, scale;
    int64_t trigger;
    uint8_t *global;         /* [n_layer][n_channels] from calib and theta */
    float *tau;              /* [n_layer][n_channels] thresholds of the chosen bucket */
    lmi_filter *filters;     /* [n_layer] */
} longmamba_state;

void lm_longmamba_params_init(lm_longmamba_params *params)
{
    if (!params) return;
    /* theta's default depends on the architecture: left 0 (= default) and
     * resolved by lm_session_set_longmamba. */
    memset(params, 0, sizeof *params);
    params->struct_size = (uint32_t)sizeof *params;
    params->threshold_scale = 1.0;
}

/* The default θ is a field of the architecture's row (lib/arch/). */
double lm_longmamba_default_theta(lm_arch arch)
{
    const lmi_arch *a = lmi_arch_find(arch);
    return a ? a->default_theta : 0.0;
}

static void longmamba_free(void *state)
{
    longmamba_state *st = state;
    if (!st) return;
    lmi_free(st->global);
    lmi_free(st->tau);
    lmi_free(st->filters);
    lmi_free(st);
}

lm_status lm_session_set_longmamba(lm_session *s, const lm_calibration *calib,
                                   const lm_longmamba_params *params)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    lmi_err *e = &s->err;
    if (!calib) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "set_longmamba: calibration is NULL");
    lm_longmamba_params p;
    lm_longmamba_params_init(&p);
    if (params && !lmi_copy_params(&p, sizeof p, params, params->struct_size,
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
    if (theta == 0.0) theta = lm_longmamba_default_theta(d->arch);
    if (!isfinite(theta) || !(theta > 0.0))
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                        "set_longmamba: theta %g must be finite and > 0 (0 = default)", p.theta);
    double b = p.threshold_scale;
    if (b == 0.0) b = 1.0;
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
    if (trigger == 0) trigger = (int64_t)llround(1.5 * (double)calib->calib_length);

    const size_t nl = (size_t)d->n_layer, C = (size_t)d->n_channels;
    longmamba_state *st = lmi_alloc(1, sizeof *st);
    int64_t *counts = lmi_alloc(nl, sizeof(int64_t));
    if (st) {
        st->global = lmi_alloc(nl * C, 1);
        st->tau = lmi_alloc(nl * C, sizeof(float));
        st->filters = lmi_alloc(nl, sizeof(lmi_filter));
    }
    if (!st || !counts || !st->global || !st->tau || !st->filters) {
        longmamba_free(st);
        lmi_free(counts);
        return lmi_fail(e, LM_ERR_NO_MEMORY, "set_longmamba: out of memory");
    }
    char cerr[LMI_ERR_CAP];
    lm_status rc =
        lm_classify_channels(calib, theta, st->global, nl * C, counts, nl, cerr, sizeof cerr);
    if (rc != LM_OK) {
        longmamba_free(st);
        lmi_free(counts);
        return lmi_fail(e, rc, "set_longmamba: %s", cerr);
    }
    int64_t total = 0;
    for (size_t l = 0; l < nl; l++) {
        /* a layer without global channels needs no filter at all */
        st->filters[l].global = counts[l] > 0 ? st->global + l * C : NULL;
        st->filters[l].tau = st->tau + l * C;
        total += counts[l];
    }
    lmi_free(counts);
    st->calib = calib;
    st->theta = theta;
    st->scale = b;
    st->trigger = trigger;
    lmi_mode_install(s, &lmi_mode_longmamba, st);
    lmi_log(s->log_fn, s->log_user, s->model->log_level, LM_LOG_INFO,
            "longmamba: theta %g, %lld of %lld channels global, trigger %lld tokens", theta,
            (long long)total, (long long)(nl * C), (long long)trigger);
    return LM_OK;
}

static lm_status longmamba_prepare(lm_session *s, void *state, lmi_call call, int64_t prompt_len,
                                   lmi_forward *f)
{
    longmamba_state *st = state;
    if (!st || !st->calib)
        return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT, "longmamba mode has no calibration");
    /* Filtering only for prompts of at least the trigger length; the
     * bucket comes from the whole prompt, never from one chunk. */
    if (call != LMI_CALL_PREFILL || prompt_len < st->trigger) return LM_OK;
    const lm_calibration *c = st->calib;
    const int64_t bucket = lmi_bucket_index(c->buckets, c->n_buckets, prompt_len);
    const size_t C = (size_t)c->n_channels;
    for (int64_t l = 0; l < c->n_layer; l++) {
        /* tau[c] = b * thr[bucket][c] */
        const float *thr = c->thr + ((size_t)l * (size_t)c->n_buckets + (size_t)bucket) * C;
        float *tau = st->tau + (size_t)l * C;
        for (size_t ch = 0; ch < C; ch++) tau[ch] = (float)(st->scale * (double)thr[ch]);
    }
    f->filters = st->filters;
    return LM_OK;
}

const lmi_mode_ops lmi_mode_longmamba = {
    .mode = LM_MODE_LONGMAMBA,
    .name = "longmamba",
    .prepare = longmamba_prepare,
    .single_chunk = false,
    .free = longmamba_free,
};
