/*
 * arch/mamba1.c - Mamba-1 (transformers MambaForCausalLM, mamba_ssm
 * Mamba1): its config keys, derived dimensions, and its mixer's tensors.
 */
#include "arch/arch.h"
#include "arch/mamba.h"

#include <math.h>
#include <stdio.h>

lm_status lmi_m1_parse_hf(lmi_cfg *c, const lmi_json *j, lmi_err *e)
{
    lmi_dims *d = &c->d;
    lm_status st;
    if ((st = lmi_cfg_int(c, j, "state_size", 16, 1, 4096, &d->d_state, e))) return st;
    if (lmi_json_get(j, "intermediate_size")) {
        if ((st = lmi_cfg_int(c, j, "intermediate_size", -1, 1, 1 << 22, &d->d_inner, e)))
            return st;
    } else if ((st = lmi_cfg_expand(c, j, "expand", d->d_model, &d->d_inner, e))) {
        return st;
    }
    return lmi_cfg_dt_rank(c, j, "time_step_rank", d->d_model, &d->dt_rank, e);
}

static lm_status m1_parse_ssm(lmi_cfg *c, const lmi_json *s, lmi_err *e)
{
    lmi_dims *d = &c->d;
    lm_status st;
    if ((st = lmi_cfg_int(c, s, "d_state", 16, 1, 4096, &d->d_state, e))) return st;
    return lmi_cfg_dt_rank(c, s, "dt_rank", d->d_model, &d->dt_rank, e);
}

lm_status lmi_m1_finish(lmi_cfg *c, lmi_err *e)
{
    (void)e;
    lmi_dims *d = &c->d;
    d->conv_dim = d->d_inner;
    d->n_channels = d->d_inner;
    d->n_heads = d->head_dim = d->n_groups = 0;
    d->ssd_chunk = 0;
    d->dt_limit_lo = 0.0;
    d->dt_limit_hi = INFINITY;
    return LM_OK;
}

lmi_mixer_kind lmi_m1_mixer_of(const lmi_dims *d, int64_t i)
{
    (void)d;
    (void)i;
    return LMI_MIXER_MAMBA1;
}

/* After in_proj [2E][d], conv1d and out_proj (lmi_mamba_load). */
static lm_status m1_load(lmi_loader *ld, const lmi_cfg *c, const char *prefix, lmi_layer *L)
{
    const lmi_dims *d = &c->d;
    const int64_t E = d->d_inner, N = d->d_state, R = d->dt_rank;
    lmi_mamba_weights *w = &L->mamba;
    /* clang-format off */
    const lmi_mamba_tensor own[] = {
        /* weight, role, Hugging Face name and shape, GGUF name and shape ({0}: same) */
        {&w->x_w,  LMI_MT_LINEAR,  "x_proj.weight",  {R + 2 * N, E}, "ssm_x.weight",  {0}},
        {&w->dt_w, LMI_MT_LINEAR,  "dt_proj.weight", {E, R},         "ssm_dt.weight", {0}},
        {&w->dt_b, LMI_MT_DT_BIAS, "dt_proj.bias",   {E},            "ssm_dt.bias",   {0}},
        {&w->A,    LMI_MT_A,       "A_log",          {E, N},         "ssm_a",         {0}},
        {&w->D,    LMI_MT_D,       "D",              {E},            "ssm_d",         {0}},
    };
    /* clang-format on */
    return lmi_mamba_load(ld, c, prefix, 2 * E, own, sizeof own / sizeof own[0], w);
}

/* GGUF metadata (convert_hf_to_gguf.py MambaModel): mamba.ssm.time_step_rank;
 * mamba.ssm.dt_b_c_rms true is Falcon-Mamba (RMSNorm on dt, B, C). */
static lm_status m1_gguf_dims(lmi_cfg *c, const lmi_gguf_file *g, const char *arch, lmi_err *e)
{
    lmi_dims *d = &c->d;
    lm_status st;
    if ((st = lmi_gguf_cfg_int(c, g, arch, "ssm.time_step_rank", -1, 1, 1 << 20, &d->dt_rank, e)))
        return st;
    char key[96];
    snprintf(key, sizeof key, "%s.ssm.dt_b_c_rms", arch);
    bool rms = false;
    lmi_err ge = {{0}};
    if (lmi_gguf_find_kv(g, key) && (st = lmi_gguf_get_bool(g, key, &rms, &ge)))
        return lmi_fail(e, st, "%s: %s", c->path, ge.msg);
    if (rms) {
        /* Falcon-Mamba.  llama.cpp normalises dt, B and C with the layer
         * norm epsilon (the file has no other), so that is what we use:
         * it equals transformers' mixer_rms_eps only when the checkpoint
         * had them equal. */
        d->arch = LM_ARCH_FALCON_MAMBA;
        d->bcdt_rms_eps = d->eps;
    }
    return LM_OK;
}

/* Channel c's decay rates: row c of A [E][N]. */
static void m1_channel_A(const lmi_dims *d, const lmi_layer *L, int64_t c, const float **A_row,
                         int64_t *N, double *A_head)
{
    *A_row = lmi_weight_f32(&L->mamba.A) + (size_t)c * (size_t)d->d_state;
    *N = d->d_state;
    *A_head = 0.0;
}

const lmi_mixer_ops lmi_mixer_mamba1 = {
    .kind = LMI_MIXER_MAMBA1,
    .name = "Mamba-1",
    .load = m1_load,
    .gguf = true,
    .state_floats = lmi_mamba_state_floats,
    .linears = lmi_mamba_linears,
    .weights = lmi_mamba_weights_list,
    .channel_A = m1_channel_A,
};

const lmi_arch lmi_arch_mamba1 = {
    .arch = LM_ARCH_MAMBA1,
    .name = "Mamba-1",
    .model_type = "mamba",
    .hf_classes = {"MambaForCausalLM", "MambaModel", NULL},
    .ssm_layer = "Mamba1",
    .ssm_layer_default = true,
    .hf_tied_default = true,
    .default_theta = 1e-3, /* LONGMAMBA.md §7: the authors' 1e-30 made 41-64% global and hurt */
    .parse_hf = lmi_m1_parse_hf,
    .parse_ssm = m1_parse_ssm,
    .finish = lmi_m1_finish,
    .mixer_of = lmi_m1_mixer_of,
    .gguf_arch = "mamba",
    .gguf_dims = m1_gguf_dims,
};
