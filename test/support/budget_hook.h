/*
 * budget_hook.h - a token hook for backend tests: per-layer DeciMamba
 * budgets (negative = the layer keeps all), built on the library's policy
 * functions (lmi_deci_keep_count / lmi_deci_select, tested on their own),
 * so a backend can be checked against a reference forward without going
 * through a session's mode.
 */
#ifndef TU_BUDGET_HOOK_H
#define TU_BUDGET_HOOK_H

#include "internal.h"

typedef struct tu_budget_hook {
    const double *budget;  /* [n_layer] */
    int64_t min_len, protect;
    uint8_t layers[64];
    lmi_token_hook hook;
} tu_budget_hook;

static inline int64_t tu_budget_keeps(const void *ctx, int64_t layer, int64_t L)
{
    const tu_budget_hook *b = (const tu_budget_hook *)ctx;
    if (b->budget[layer] < 0.0 || L <= b->protect) return L;
    const int64_t K = lmi_deci_keep_count(L, b->protect, b->budget[layer], b->min_len);
    return (K < 0 || K + b->protect >= L) ? L : K + b->protect;
}

static inline lm_status tu_budget_select(const void *ctx, int64_t layer, const float *scores,
                                         int64_t L, int64_t *idx, int64_t *scratch, lmi_err *e)
{
    const tu_budget_hook *b = (const tu_budget_hook *)ctx;
    const int64_t n = tu_budget_keeps(ctx, layer, L);
    return lmi_deci_select(scores, L, b->protect, n - b->protect, idx, scratch, e);
}

/* Fills b (n_layer <= 64) and returns its hook; budget must outlive it. */
static inline const lmi_token_hook *tu_budget_hook_init(tu_budget_hook *b, const double *budget,
                                                        int64_t n_layer, int64_t min_len,
                                                        int64_t protect)
{
    b->budget = budget;
    b->min_len = min_len;
    b->protect = protect;
    for (int64_t l = 0; l < 64; l++) b->layers[l] = l < n_layer && budget[l] >= 0.0;
    b->hook.layers = b->layers;
    b->hook.keeps_last = protect;
    b->hook.ctx = b;
    b->hook.keeps = tu_budget_keeps;
    b->hook.select = tu_budget_select;
    return &b->hook;
}

#endif
