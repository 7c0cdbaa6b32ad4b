/*
 * mode/mambaextend.c - MambaExtend (METHODS.md §1, §8): per layer a scale
 * s_l on Δ after the softplus (Mamba-2: after the time_step_limit clamp),
 * at prefill only; decode steps run vanilla from the prefilled state.
 * Optionally with LongMamba (§6): its mask is decided on the unscaled Δ,
 * then the kept Δ is scaled.
 */
#include "internal.h"

#include <string.h>

typedef struct mambaextend_state {
    float *scales;           /* [n_layer] */
    lmi_longmamba *lm;       /* or NULL */
} mambaextend_state;

void lm_mambaextend_params_init(lm_mambaextend_params *params)
{
    if (!params) return;
    memset(params, 0, sizeof *params);
    params->struct_size = (uint32_t)sizeof *params;
}

static void mambaextend_free(void *state)
{
    mambaextend_state *st = state;
    if (!st) return;
    lmi_free(st->scales);
    lmi_longmamba_free(st->lm);
    lmi_free(st);
}

lm_status lm_session_set_mambaextend(lm_session *s, const lm_mambaextend_params *params)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    lmi_err *e = &s->err;
    if (!params)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "set_mambaextend: params is NULL (the per-layer scales are needed)");
    lm_mambaextend_params p;
    lm_mambaextend_params_init(&p);
    if (!lmi_copy_params(&p, sizeof p, params, params->struct_size,
                         offsetof(lm_mambaextend_params, longmamba_params) + sizeof(void *)))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "set_mambaextend: params->struct_size %u too small; use "
                        "lm_mambaextend_params_init",
                        (unsigned)params->struct_size);
    mambaextend_state *st = lmi_alloc(1, sizeof *st);
    if (!st) return lmi_fail(e, LM_ERR_NO_MEMORY, "set_mambaextend: out of memory");
    lm_status rc = lmi_layer_scales(s->model, "set_mambaextend", p.scales, p.n_scales, &st->scales, e);
    if (rc == LM_OK && p.longmamba)
        rc = lmi_longmamba_new(s, "set_mambaextend", p.longmamba, p.longmamba_params, NULL, &st->lm);
    if (rc != LM_OK) {
        mambaextend_free(st);
        return rc;
    }
    lmi_mode_install(s, &lmi_mode_mambaextend, st);
    return LM_OK;
}

static lm_status mambaextend_prepare(lm_session *s, void *state, lmi_call call, int64_t prompt_len,
                                     lmi_forward *f)
{
    mambaextend_state *st = state;
    if (!st || !st->scales)
        return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT, "mambaextend mode has no scales");
    if (call != LMI_CALL_PREFILL) return LM_OK;
    f->delta_scale = st->scales;
    return st->lm ? lmi_longmamba_prepare(st->lm, call, prompt_len, f) : LM_OK;
}

const lmi_mode_ops lmi_mode_mambaextend = {
    .mode = LM_MODE_MAMBAEXTEND,
    .name = "mambaextend",
    .prepare = mambaextend_prepare,
    .single_chunk = false,
    .free = mambaextend_free,
};
