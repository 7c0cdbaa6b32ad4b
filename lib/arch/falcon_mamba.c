/*
 * arch/falcon_mamba.c - Falcon-Mamba (transformers FalconMambaForCausalLM,
 * model_type "falcon_mamba"): Mamba-1 layers whose mixer normalises
 * dt_low, B and C after x_proj, each by its own root mean square with no
 * weight and the config's mixer_rms_eps (transformers' rms_forward).  The
 * config keys, dimensions, tensors and layer pattern are Mamba-1's; the
 * row adds mixer_rms_eps (lmi_dims.bcdt_rms_eps, which the Mamba-1 mixers
 * of every backend read).
 */
#include "arch/arch.h"
#include "arch/mamba.h"

static lm_status fm_parse_hf(lmi_cfg *c, const lmi_json *j, lmi_err *e)
{
    lm_status st = lmi_m1_parse_hf(c, j, e);
    if (st != LM_OK)
        return st;
    /* transformers' FalconMambaConfig writes mixer_rms_eps (default 1e-6)
     * into every config.json: a config without it was not written by it. */
    const lmi_json *v = lmi_json_get(j, "mixer_rms_eps");
    if (!v || v->type == LMI_JSON_NULL)
        return lmi_fail(e, LM_ERR_MISSING,
                        "%s: Falcon-Mamba config has no \"mixer_rms_eps\" (the epsilon of the "
                        "RMS normalisation of dt, B and C)",
                        c->path);
    double eps = 0.0;
    if ((st = lmi_cfg_num(c, j, "mixer_rms_eps", 0.0, &eps, e)))
        return st;
    if (!(eps > 0.0 && eps < 1.0))
        return lmi_fail(e, LM_ERR_FORMAT, "%s: \"mixer_rms_eps\" %g is not in (0, 1)", c->path,
                        eps);
    c->d.bcdt_rms_eps = eps;
    return LM_OK;
}

static lm_status fm_finish(lmi_cfg *c, lmi_err *e)
{
    lm_status st = lmi_m1_finish(c, e);
    if (st == LM_OK && !(c->d.bcdt_rms_eps > 0.0))
        return lmi_fail(e, LM_ERR_FORMAT, "%s: Falcon-Mamba needs mixer_rms_eps > 0", c->path);
    return st;
}

const lmi_arch lmi_arch_falcon_mamba = {
    .arch = LM_ARCH_FALCON_MAMBA,
    .name = "Falcon-Mamba",
    .model_type = "falcon_mamba",
    .hf_classes = {"FalconMambaForCausalLM", "FalconMambaModel", NULL},
    .ssm_layer = NULL, /* no mamba_ssm form */
    .ssm_layer_default = false,
    .hf_tied_default = true, /* FalconMambaConfig.tie_word_embeddings */
    .default_theta = 1e-3,   /* as Mamba-1 (LONGMAMBA.md §7) */
    .parse_hf = fm_parse_hf,
    .parse_ssm = NULL,
    .finish = fm_finish,
    .mixer_of = lmi_m1_mixer_of,
    .gguf_arch = NULL, /* llama.cpp writes Falcon-Mamba as "mamba" with ssm.dt_b_c_rms:
                        * Mamba-1's gguf_dims turns such a file into this row */
    .gguf_dims = NULL,
};
