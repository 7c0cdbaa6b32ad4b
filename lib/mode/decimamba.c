/*
 * mode/decimamba.c - DeciMamba (LONGMAMBA.md §5): in chosen layers, keep
 * only the tokens with the largest ||Δ_t||_2 (layer s of the list keeps
 * l_base * beta^s, at least min_len) plus the last `protect` tokens, for
 * every later layer.  The selection is global over the prompt, so a prompt
 * reaches the backend in one forward; decode steps run vanilla.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#define LMI_DECI_L_BASE  2000
#define LMI_DECI_BETA    1.0
#define LMI_DECI_MIN_LEN 20
#define LMI_DECI_PROTECT 1

typedef struct decimamba_state {
    double *budget;          /* [n_layer]: l_base * beta^s, or < 0 where the layer keeps all */
    uint8_t *layers;         /* [n_layer]: budget >= 0 */
    int64_t min_len, protect;
    lmi_token_hook hook;
} decimamba_state;

void lm_decimamba_params_init(lm_decimamba_params *params)
{
    if (!params) return;
    memset(params, 0, sizeof *params);
    params->struct_size = (uint32_t)sizeof *params;
    params->l_base = LMI_DECI_L_BASE;
    params->beta = LMI_DECI_BETA;
    params->min_len = LMI_DECI_MIN_LEN;
    params->protect = LMI_DECI_PROTECT;
}

static void decimamba_free(void *state)
{
    decimamba_state *st = state;
    if (!st) return;
    lmi_free(st->budget);
    lmi_free(st->layers);
    lmi_free(st);
}

/* K + R tokens out of L, or L when the layer would keep them all. */
static int64_t decimamba_keeps(const void *ctx, int64_t layer, int64_t L)
{
    const decimamba_state *st = ctx;
    const int64_t R = st->protect;
    if (st->budget[layer] < 0.0 || L <= R) return L;
    const int64_t K = lmi_deci_keep_count(L, R, st->budget[layer], st->min_len);
    return (K < 0 || K + R >= L) ? L : K + R;
}

static lm_status decimamba_select(const void *ctx, int64_t layer, const float *scores, int64_t L,
                                  int64_t *idx, int64_t *scratch, lmi_err *e)
{
    const decimamba_state *st = ctx;
    const int64_t n = decimamba_keeps(ctx, layer, L);
    if (n >= L) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "decimamba: layer %lld keeps every token",
                                (long long)layer);
    return lmi_deci_select(scores, L, st->protect, n - st->protect, idx, scratch, e);
}

lm_status lm_session_set_decimamba(lm_session *s, const lm_decimamba_params *params)
{
    if (!s)
        return LM_ERR_INVALID_ARGUMENT;
    lmi_err *e = &s->err;
    lm_decimamba_params p;
    lm_decimamba_params_init(&p);
    if (params && !lmi_copy_params(&p, sizeof p, params, params->struct_size,
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

    decimamba_state *st = lmi_alloc(1, sizeof *st);
    if (st) {
        st->budget = lmi_alloc((size_t)nl, sizeof(double));
        st->layers = lmi_alloc((size_t)nl, 1);
    }
    if (!st || !st->budget || !st->layers) {
        decimamba_free(st);
        return lmi_fail(e, LM_ERR_NO_MEMORY, "set_decimamba: out of memory");
    }
    for (int64_t l = 0; l < nl; l++) st->budget[l] = -1.0;
    /* layer s of the list keeps l_base * beta^s tokens */
    for (size_t i = 0; i < n_layers; i++) {
        st->budget[layers[i]] = (double)l_base * pow(beta, (double)i);
        st->layers[layers[i]] = 1;
    }
    st->min_len = min_len;
    st->protect = protect;
    st->hook = (lmi_token_hook){
        .layers = st->layers,
        .keeps_last = protect,
        .ctx = st,
        .keeps = decimamba_keeps,
        .select = decimamba_select,
    };
    lmi_mode_install(s, &lmi_mode_decimamba, st);
    return LM_OK;
}

static lm_status decimamba_prepare(lm_session *s, void *state, lmi_call call, int64_t prompt_len,
                                   lmi_forward *f)
{
    (void)prompt_len;
    decimamba_state *st = state;
    if (!st || !st->budget)
        return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT, "decimamba mode has no layer budget");
    if (call == LMI_CALL_PREFILL) f->tokens_hook = &st->hook;
    return LM_OK;
}

const lmi_mode_ops lmi_mode_decimamba = {
    .mode = LM_MODE_DECIMAMBA,
    .name = "decimamba",
    .prepare = decimamba_prepare,
    .single_chunk = true,
    .free = decimamba_free,
};
