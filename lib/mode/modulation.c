/*
 * mode/modulation.c - Mamba Modulation (METHODS.md §2): per layer a scale
 * s_l on the spectrum, A' = -exp(s_l * A_log) = -|A|^s_l (Mamba-1 every
 * entry of A, Mamba-2 every head), at prefill only; decode steps run
 * vanilla.  Optionally with LongMamba (§6): its channel classification
 * depends on A', so the calibration must have been made under the same
 * scales (lm_calib_params.a_log_scales).
 */
#include "internal.h"

#include <string.h>

typedef struct modulation_state {
    float *scales;           /* [n_layer] */
    lmi_longmamba *lm;       /* or NULL */
} modulation_state;

void lm_modulation_params_init(lm_modulation_params *params)
{
    if (!params) return;
    memset(params, 0, sizeof *params);
    params->struct_size = (uint32_t)sizeof *params;
}

static void modulation_free(void *state)
{
    modulation_state *st = state;
    if (!st) return;
    lmi_free(st->scales);
    lmi_longmamba_free(st->lm);
    lmi_free(st);
}

lm_status lm_session_set_modulation(lm_session *s, const lm_modulation_params *params)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    lmi_err *e = &s->err;
    if (!params)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "set_modulation: params is NULL (the per-layer scales are needed)");
    lm_modulation_params p;
    lm_modulation_params_init(&p);
    if (!lmi_copy_params(&p, sizeof p, params, params->struct_size,
                         offsetof(lm_modulation_params, longmamba_params) + sizeof(void *)))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "set_modulation: params->struct_size %u too small; use "
                        "lm_modulation_params_init",
                        (unsigned)params->struct_size);
    modulation_state *st = lmi_alloc(1, sizeof *st);
    if (!st) return lmi_fail(e, LM_ERR_NO_MEMORY, "set_modulation: out of memory");
    lm_status rc = lmi_layer_scales(s->model, "set_modulation", p.scales, p.n_scales, &st->scales, e);
    if (rc == LM_OK && p.longmamba)
        rc = lmi_longmamba_new(s, "set_modulation", p.longmamba, p.longmamba_params, p.scales,
                               &st->lm);
    if (rc != LM_OK) {
        modulation_free(st);
        return rc;
    }
    lmi_mode_install(s, &lmi_mode_modulation, st);
    return LM_OK;
}

static lm_status modulation_prepare(lm_session *s, void *state, lmi_call call, int64_t prompt_len,
                                    lmi_forward *f)
{
    modulation_state *st = state;
    if (!st || !st->scales)
        return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT, "modulation mode has no scales");
    if (call != LMI_CALL_PREFILL) return LM_OK;
    f->a_log_scale = st->scales;
    return st->lm ? lmi_longmamba_prepare(st->lm, call, prompt_len, f) : LM_OK;
}

const lmi_mode_ops lmi_mode_modulation = {
    .mode = LM_MODE_MODULATION,
    .name = "modulation",
    .prepare = modulation_prepare,
    .single_chunk = false,
    .free = modulation_free,
};
