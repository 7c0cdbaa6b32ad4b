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

struct lmi_longmamba {
    const lm_calibration *calib;
    double theta, scale;
    int64_t trigger;
    uint8_t *global;         /* [n_layer][n_channels] from calib and theta */
    float *tau;              /* [n_layer][n_channels] thresholds of the chosen bucket */
    lmi_filter *filters;     /* [n_layer] */
};
typedef lmi_longmamba longmamba_state;

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

void lmi_longmamba_free(lmi_longmamba *st)
{
    if (!st) return;
    lmi_free(st->global);
    lmi_free(st->tau);
    lmi_free(st->filters);
    lmi_free(st);
}

/* Whether the calibration was made under the Modulation scales a (both
 * NULL: vanilla); the channel classification depends on A'. */
static bool same_modulation(const lm_calibration *c, const double *a, int64_t n)
{
    if (!c->a_log_scales || !a) return !c->a_log_scales && !a;
    return memcmp(c->a_log_scales, a, (size_t)n * sizeof(double)) == 0;
}

lm_status lmi_longmamba_new(lm_session *s, const char *who, const lm_calibration *calib,
                            const lm_longmamba_params *params, const double *a_log_scales,
                            lmi_longmamba **out)
{
    lmi_err *e = &s->err;
    *out = NULL;
    if (!calib) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "%s: calibration is NULL", who);
    lm_longmamba_params p;
    lm_longmamba_params_init(&p);
    if (params && !lmi_copy_params(&p, sizeof p, params, params->struct_size,
                                   offsetof(lm_longmamba_params, trigger_length) + sizeof(int64_t)))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "%s: longmamba params->struct_size %u too small; use "
                        "lm_longmamba_params_init",
                        who, (unsigned)params->struct_size);

    const lm_model *m = s->model;
    const lmi_dims *d = &m->dims;
    if (calib->arch != d->arch || calib->n_layer != d->n_layer ||
        calib->n_channels != d->n_channels || calib->fingerprint != m->fingerprint)
        return lmi_fail(e, LM_ERR_MISMATCH,
                        "%s: calibration belongs to another model (fingerprint "
                        "%016llx, %lld layers x %lld channels; model %016llx, %lld x %lld)",
                        who, (unsigned long long)calib->fingerprint, (long long)calib->n_layer,
                        (long long)calib->n_channels, (unsigned long long)m->fingerprint,
                        (long long)d->n_layer, (long long)d->n_channels);
    if (!same_modulation(calib, a_log_scales, d->n_layer))
        return lmi_fail(e, LM_ERR_MISMATCH,
                        !a_log_scales ? "%s: the calibration was made under Mamba Modulation "
                                        "scales; use it with lm_session_set_modulation"
                        : calib->a_log_scales
                            ? "%s: the calibration was made under other Modulation scales; "
                              "recalibrate with these (lm_calib_params.a_log_scales)"
                            : "%s: the calibration was made without Modulation; LongMamba's "
                              "channels depend on A', so calibrate with "
                              "lm_calib_params.a_log_scales set to these scales",
                        who);

    /* Out-of-range parameter values report LM_ERR_OUT_OF_RANGE (the value
     * is of the right kind but outside its domain); 0 means default. */
    double theta = p.theta;
    if (theta == 0.0) theta = lm_longmamba_default_theta(d->arch);
    if (!isfinite(theta) || !(theta > 0.0))
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                        "%s: theta %g must be finite and > 0 (0 = default)", who, p.theta);
    double b = p.threshold_scale;
    if (b == 0.0) b = 1.0;
    if (!isfinite(b) || b < 0.0)
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                        "%s: threshold_scale %g must be finite and >= 0 (0 = default)", who,
                        p.threshold_scale);
    if (p.trigger_length < 0)
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                        "%s: trigger_length %lld must be >= 0 (0 = 1.5 x calibration length)",
                        who, (long long)p.trigger_length);
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
        lmi_longmamba_free(st);
        lmi_free(counts);
        return lmi_fail(e, LM_ERR_NO_MEMORY, "%s: out of memory", who);
    }
    char cerr[LMI_ERR_CAP];
    lm_status rc =
        lm_classify_channels(calib, theta, st->global, nl * C, counts, nl, cerr, sizeof cerr);
    if (rc != LM_OK) {
        lmi_longmamba_free(st);
        lmi_free(counts);
        return lmi_fail(e, rc, "%s: %s", who, cerr);
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
    lmi_log(s->log_fn, s->log_user, s->model->log_level, LM_LOG_INFO,
            "%s: LongMamba theta %g, %lld of %lld channels global, trigger %lld tokens", who,
            theta, (long long)total, (long long)(nl * C), (long long)trigger);
    *out = st;
    return LM_OK;
}

lm_status lm_session_set_longmamba(lm_session *s, const lm_calibration *calib,
                                   const lm_longmamba_params *params)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    lmi_longmamba *st = NULL;
    lm_status rc = lmi_longmamba_new(s, "set_longmamba", calib, params, NULL, &st);
    if (rc != LM_OK) return rc;
    lmi_mode_install(s, &lmi_mode_longmamba, st);
    return LM_OK;
}

lm_status lmi_longmamba_prepare(lmi_longmamba *st, lmi_call call, int64_t prompt_len,
                                lmi_forward *f)
{
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

static lm_status longmamba_prepare(lm_session *s, void *state, lmi_call call, int64_t prompt_len,
                                   lmi_forward *f)
{
    longmamba_state *st = state;
    if (!st || !st->calib)
        return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT, "longmamba mode has no calibration");
    return lmi_longmamba_prepare(st, call, prompt_len, f);
}

static void longmamba_free(void *state)
{
    lmi_longmamba_free(state);
}

const lmi_mode_ops lmi_mode_longmamba = {
    .mode = LM_MODE_LONGMAMBA,
    .name = "longmamba",
    .prepare = longmamba_prepare,
    .single_chunk = false,
    .free = longmamba_free,
};
