/*
 * modes.c - the table of session modes and what every mode shares.  Each
 * mode is one file in lib/mode/ (its params, its setter, its prepare);
 * this file only finds, installs and dispatches them.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

const lmi_mode_ops lmi_mode_vanilla = {
    .mode = LM_MODE_VANILLA,
    .name = "vanilla",
};

/* One row per public lm_mode value. */
static const lmi_mode_ops *const mode_table[] = {
    &lmi_mode_vanilla,
    &lmi_mode_longmamba,
    &lmi_mode_decimamba,
    &lmi_mode_mambaextend,
    &lmi_mode_modulation,
};

const lmi_mode_ops *lmi_mode_find(lm_mode mode)
{
    for (size_t i = 0; i < sizeof mode_table / sizeof mode_table[0]; i++)
        if (mode_table[i]->mode == mode) return mode_table[i];
    return NULL;
}

void lmi_modes_free(lm_session *s)
{
    if (!s) return;
    if (s->mode && s->mode->free) s->mode->free(s->mode_state);
    s->mode = &lmi_mode_vanilla;
    s->mode_state = NULL;
}

void lmi_mode_install(lm_session *s, const lmi_mode_ops *ops, void *state)
{
    lmi_modes_free(s);
    s->mode = ops;
    s->mode_state = state;
}

lm_status lm_session_set_vanilla(lm_session *s)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    lmi_modes_free(s);
    return LM_OK;
}

bool lmi_copy_params(void *dst, size_t dst_size, const void *src, uint32_t src_size,
                     size_t min_size)
{
    if (src_size < min_size) return false;
    memcpy(dst, src, src_size < dst_size ? src_size : dst_size);
    return true;
}

lm_status lmi_layer_scales(const lm_model *m, const char *who, const double *scales, size_t n,
                           float **out, lmi_err *e)
{
    *out = NULL;
    const int64_t nl = m->dims.n_layer;
    if (!scales)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "%s: scales is NULL (one per layer needed)", who);
    if (n != (size_t)nl)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "%s: %zu scales given, the model has %lld layers",
                        who, n, (long long)nl);
    for (size_t l = 0; l < n; l++) {
        /* the scan multiplies in fp32: the value must stay finite there too */
        if (!isfinite(scales[l]) || !(scales[l] > 0.0) || !isfinite((float)scales[l]) ||
            !((float)scales[l] > 0.0f))
            return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                            "%s: scale of layer %zu is %g; scales must be finite and > 0", who, l,
                            scales[l]);
    }
    float *v = lmi_alloc(n, sizeof(float));
    if (!v) return lmi_fail(e, LM_ERR_NO_MEMORY, "%s: out of memory", who);
    for (size_t l = 0; l < n; l++) v[l] = (float)scales[l];
    *out = v;
    return LM_OK;
}

lm_status lmi_modes_prepare(lm_session *s, lmi_call call, int64_t prompt_len, lmi_forward *f)
{
    f->filters = NULL;
    f->tokens_hook = NULL;
    f->delta_scale = NULL;
    f->a_log_scale = NULL;
    if (!s->mode || !s->mode->prepare) return LM_OK;
    return s->mode->prepare(s, s->mode_state, call, prompt_len, f);
}

bool lmi_modes_single_chunk(const lm_session *s)
{
    return s && s->mode && s->mode->single_chunk;
}
