/*
 * arch/mamba2.c - Mamba-2 (transformers Mamba2ForCausalLM, mamba_ssm
 * Mamba2): its config keys, derived dimensions, and its mixer's tensors.
 */
#include "arch/arch.h"
#include "arch/mamba.h"

#include <math.h>

static lm_status m2_parse_hf(lmi_cfg *c, const lmi_json *j, lmi_err *e)
{
    lmi_dims *d = &c->d;
    lm_status st;
    int rms = 1;
    if ((st = lmi_cfg_bool(c, j, "rms_norm", 1, &rms, e))) return st;
    if (!rms)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "%s: rms_norm=false is not supported", c->path);
    if ((st = lmi_cfg_int(c, j, "state_size", 128, 1, 4096, &d->d_state, e))) return st;
    if ((st = lmi_cfg_int(c, j, "num_heads", 128, 1, 1 << 16, &d->n_heads, e))) return st;
    if ((st = lmi_cfg_int(c, j, "head_dim", 64, 1, 1 << 16, &d->head_dim, e))) return st;
    if ((st = lmi_cfg_int(c, j, "n_groups", 8, 1, 1 << 16, &d->n_groups, e))) return st;
    if ((st = lmi_cfg_int(c, j, "chunk_size", 256, 1, 1 << 20, &d->ssd_chunk, e))) return st;
    if ((st = lmi_cfg_expand(c, j, "expand", d->d_model, &d->d_inner, e))) return st;
    return lmi_cfg_time_limit(c, j, "time_step_limit", e);
}

static lm_status m2_parse_ssm(lmi_cfg *c, const lmi_json *s, lmi_err *e)
{
    lmi_dims *d = &c->d;
    lm_status st;
    if ((st = lmi_cfg_int(c, s, "d_state", 128, 1, 4096, &d->d_state, e))) return st;
    if ((st = lmi_cfg_int(c, s, "headdim", 64, 1, 1 << 16, &d->head_dim, e))) return st;
    if ((st = lmi_cfg_int(c, s, "ngroups", 1, 1, 1 << 16, &d->n_groups, e))) return st;
    if ((st = lmi_cfg_int(c, s, "chunk_size", 256, 1, 1 << 20, &d->ssd_chunk, e))) return st;
    int dhd = 0, rmsn = 1, nbg = 0;
    if ((st = lmi_cfg_bool(c, s, "D_has_hdim", 0, &dhd, e))) return st;
    if ((st = lmi_cfg_bool(c, s, "rmsnorm", 1, &rmsn, e))) return st;
    if ((st = lmi_cfg_bool(c, s, "norm_before_gate", 0, &nbg, e))) return st;
    if (dhd || !rmsn || nbg)
        return lmi_fail(
            e, LM_ERR_UNSUPPORTED,
            "%s: Mamba-2 variant (D_has_hdim / rmsnorm=false / norm_before_gate) is not "
            "supported",
            c->path);
    if (d->d_inner % d->head_dim != 0)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: d_inner %lld is not a multiple of headdim %lld",
                        c->path, (long long)d->d_inner, (long long)d->head_dim);
    d->n_heads = d->d_inner / d->head_dim;
    return lmi_cfg_time_limit(c, s, "dt_limit", e);
}

static lm_status m2_finish(lmi_cfg *c, lmi_err *e)
{
    lmi_dims *d = &c->d;
    if (d->n_heads * d->head_dim != d->d_inner)
        return lmi_fail(
            e, LM_ERR_FORMAT,
            "%s: num_heads %lld x head_dim %lld != d_inner %lld (expand x hidden_size)", c->path,
            (long long)d->n_heads, (long long)d->head_dim, (long long)d->d_inner);
    if (d->n_heads % d->n_groups != 0)
        return lmi_fail(e, LM_ERR_FORMAT, "%s: num_heads %lld is not a multiple of n_groups %lld",
                        c->path, (long long)d->n_heads, (long long)d->n_groups);
    d->dt_rank = 0;
    d->conv_dim = d->d_inner + 2 * d->n_groups * d->d_state;
    d->n_channels = d->n_heads;
    return LM_OK;
}

static lmi_mixer_kind m2_mixer_of(const lmi_dims *d, int64_t i)
{
    (void)d;
    (void)i;
    return LMI_MIXER_MAMBA2;
}

/* After in_proj [2E+2GN+H][d], conv1d and out_proj (lmi_mamba_load).
 * GGUF adds a unit extent to A and D ([H][1]) and groups the norm
 * ([G][E/G]): the same bytes as the flat vectors. */
static lm_status m2_load(lmi_loader *ld, const lmi_cfg *c, const char *prefix, lmi_layer *L)
{
    const lmi_dims *d = &c->d;
    const int64_t E = d->d_inner, H = d->n_heads, G = d->n_groups;
    lmi_mamba_weights *w = &L->mamba;
    /* clang-format off */
    const lmi_mamba_tensor own[] = {
        /* weight, role, Hugging Face name and shape, GGUF name and shape ({0}: same) */
        {&w->dt_b,    LMI_MT_DT_BIAS, "dt_bias",     {H}, "ssm_dt.bias",     {0}},
        {&w->A,       LMI_MT_A,       "A_log",       {H}, "ssm_a",           {H, 1}},
        {&w->D,       LMI_MT_D,       "D",           {H}, "ssm_d",           {H, 1}},
        {&w->gnorm_w, LMI_MT_WEIGHT,  "norm.weight", {E}, "ssm_norm.weight", {G, E / G}},
    };
    /* clang-format on */
    return lmi_mamba_load(ld, c, prefix, 2 * E + 2 * G * d->d_state + H, own,
                          sizeof own / sizeof own[0], w);
}

/* GGUF metadata (convert_hf_to_gguf.py Mamba2Model): the heads are
 * mamba2.ssm.time_step_rank (d_inner / head_dim), the groups
 * mamba2.ssm.group_count.  GGUF has no chunk size (an execution detail
 * here) nor time_step_limit (llama.cpp clamps nothing): (0, +inf). */
static lm_status m2_gguf_dims(lmi_cfg *c, const lmi_gguf_file *g, const char *arch, lmi_err *e)
{
    lmi_dims *d = &c->d;
    lm_status st;
    if ((st = lmi_gguf_cfg_int(c, g, arch, "ssm.time_step_rank", -1, 1, 1 << 16, &d->n_heads, e)))
        return st;
    if ((st = lmi_gguf_cfg_int(c, g, arch, "ssm.group_count", -1, 1, 1 << 16, &d->n_groups, e)))
        return st;
    if (d->d_inner % d->n_heads != 0)
        return lmi_fail(e, LM_ERR_FORMAT,
                        "%s: %s.ssm.inner_size %lld is not a multiple of the %lld heads "
                        "(%s.ssm.time_step_rank)",
                        c->path, arch, (long long)d->d_inner, (long long)d->n_heads, arch);
    d->head_dim = d->d_inner / d->n_heads;
    d->ssd_chunk = 256;
    d->dt_limit_lo = 0.0;
    d->dt_limit_hi = INFINITY;
    return LM_OK;
}

/* A channel is a head with one scalar A. */
static void m2_channel_A(const lmi_dims *d, const lmi_layer *L, int64_t c, const float **A_row,
                         int64_t *N, double *A_head)
{
    (void)d;
    *A_row = NULL;
    *N = 0;
    *A_head = (double)lmi_weight_f32(&L->mamba.A)[c];
}

const lmi_mixer_ops lmi_mixer_mamba2 = {
    .kind = LMI_MIXER_MAMBA2,
    .name = "Mamba-2",
    .load = m2_load,
    .gguf = true,
    .state_floats = lmi_mamba_state_floats,
    .linears = lmi_mamba_linears,
    .weights = lmi_mamba_weights_list,
    .channel_A = m2_channel_A,
};

const lmi_arch lmi_arch_mamba2 = {
    .arch = LM_ARCH_MAMBA2,
    .name = "Mamba-2",
    .model_type = "mamba2",
    .hf_classes = {"Mamba2ForCausalLM", "Mamba2Model", NULL},
    .ssm_layer = "Mamba2",
    .ssm_layer_default = false,
    .hf_tied_default = false,
    .default_theta = 5e-2, /* the authors' Mamba-2 default (METHODS.md §7) */
    .parse_hf = m2_parse_hf,
    .parse_ssm = m2_parse_ssm,
    .finish = m2_finish,
    .mixer_of = m2_mixer_of,
    .gguf_arch = "mamba2",
    .gguf_dims = m2_gguf_dims,
};
