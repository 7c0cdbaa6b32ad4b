/*
 * arch/mamba.c - the tensors both Mamba mixers share: in_proj, conv1d and
 * out_proj (each with its optional bias), and the A / D / dt-bias trio
 * that enters the model fingerprint; in Hugging Face and in GGUF form.
 */
#include "arch/arch.h"
#include "arch/mamba.h"

#include <stdio.h>

#define TN(buf, fmt, ...) (snprintf((buf), sizeof(buf), (fmt), __VA_ARGS__), (buf))

lm_status lmi_mamba_load_io(lmi_loader *ld, const lmi_cfg *c, const char *prefix,
                            int64_t in_rows, lmi_mamba_weights *w)
{
    const lmi_dims *d = &c->d;
    const int64_t D = d->d_model, E = d->d_inner, K = d->d_conv;
    const int req = LMI_TAKE_REQUIRED;
    char n[192];
    lm_status st;
    int64_t s_in[2] = {in_rows, D};
    if ((st = lmi_take(ld, TN(n, "%sin_proj.weight", prefix), 2, s_in, req, &w->in_w, NULL)))
        return st;
    if ((st = lmi_take_bias(ld, TN(n, "%sin_proj.bias", prefix), c->use_bias == 1, "use_bias",
                            in_rows, &w->in_b)))
        return st;
    int64_t s_conv[3] = {d->conv_dim, 1, K};
    if ((st = lmi_take(ld, TN(n, "%sconv1d.weight", prefix), 3, s_conv, req, &w->conv_w, NULL)))
        return st;
    if ((st = lmi_take_bias(ld, TN(n, "%sconv1d.bias", prefix), c->use_conv_bias == 1,
                            "use_conv_bias", d->conv_dim, &w->conv_b)))
        return st;
    int64_t s_out[2] = {D, E};
    if ((st = lmi_take(ld, TN(n, "%sout_proj.weight", prefix), 2, s_out, req, &w->out_w, NULL)))
        return st;
    return lmi_take_bias(ld, TN(n, "%sout_proj.bias", prefix), c->use_bias == 1, "use_bias", D,
                         &w->out_b);
}

lm_status lmi_mamba_load_decay(lmi_loader *ld, const char *prefix, const char *dt_name,
                               int ndim_a, const int64_t *shape_a, int64_t n_d,
                               lmi_mamba_weights *w)
{
    const int req = LMI_TAKE_REQUIRED;
    lmi_stored rA, rD, rdt;
    char n[192];
    lm_status st;
    int64_t s_n[1] = {n_d};
    if ((st = lmi_take(ld, TN(n, "%s%s", prefix, dt_name), 1, s_n, req | LMI_TAKE_F32, &w->dt_b,
                       &rdt)))
        return st;
    if ((st = lmi_take(ld, TN(n, "%sA_log", prefix), ndim_a, shape_a,
                       req | LMI_TAKE_COPY | LMI_TAKE_F32, &w->A, &rA)))
        return st;
    if ((st = lmi_make_A((float *)(uintptr_t)w->A.data, (size_t)lmi_weight_numel(&w->A), n, ld->e)))
        return st;
    if ((st = lmi_take(ld, TN(n, "%sD", prefix), 1, s_n, req | LMI_TAKE_F32, &w->D, &rD)))
        return st;
    if ((st = lmi_check_finite(lmi_weight_f32(&w->D), (size_t)n_d, n, ld->e)))
        return st;
    /* fingerprint: A_log, D, dt bias (model_load.h) */
    lmi_loader_hash(ld, &rA);
    lmi_loader_hash(ld, &rD);
    lmi_loader_hash(ld, &rdt);
    return LM_OK;
}

/* ---- GGUF (llama.cpp's convert_hf_to_gguf.py layouts) ------------------------ */

lm_status lmi_mamba_gguf_io(lmi_loader *ld, const lmi_cfg *c, const char *prefix,
                            int64_t in_rows, lmi_mamba_weights *w)
{
    const lmi_dims *d = &c->d;
    const int64_t D = d->d_model, E = d->d_inner, K = d->d_conv;
    const int req = LMI_TAKE_REQUIRED;
    char n[192];
    lm_status st;
    int64_t s_in[2] = {in_rows, D};
    if ((st = lmi_take(ld, TN(n, "%sssm_in.weight", prefix), 2, s_in, req, &w->in_w, NULL)))
        return st;
    if ((st = lmi_take_bias(ld, TN(n, "%sssm_in.bias", prefix), c->use_bias == 1, "use_bias",
                            in_rows, &w->in_b)))
        return st;
    /* the converter squeezes conv1d [C][1][K] to [C][K]: same bytes */
    int64_t s_conv[2] = {d->conv_dim, K};
    if ((st = lmi_take(ld, TN(n, "%sssm_conv1d.weight", prefix), 2, s_conv, req, &w->conv_w,
                       NULL)))
        return st;
    if ((st = lmi_take_bias(ld, TN(n, "%sssm_conv1d.bias", prefix), c->use_conv_bias == 1,
                            "use_conv_bias", d->conv_dim, &w->conv_b)))
        return st;
    int64_t s_out[2] = {D, E};
    if ((st = lmi_take(ld, TN(n, "%sssm_out.weight", prefix), 2, s_out, req, &w->out_w, NULL)))
        return st;
    return lmi_take_bias(ld, TN(n, "%sssm_out.bias", prefix), c->use_bias == 1, "use_bias", D,
                         &w->out_b);
}

lm_status lmi_mamba_gguf_decay(lmi_loader *ld, const char *prefix, int ndim_a,
                               const int64_t *shape_a, int ndim_d, const int64_t *shape_d,
                               int64_t n_dt, lmi_mamba_weights *w)
{
    const int req = LMI_TAKE_REQUIRED;
    lmi_stored rA, rD, rdt;
    char n[192];
    lm_status st;
    if ((st = lmi_take(ld, TN(n, "%sssm_dt.bias", prefix), 1, &n_dt, req | LMI_TAKE_F32, &w->dt_b,
                       &rdt)))
        return st;
    /* ssm_a holds A = -exp(A_log) already (the converter applies it) */
    if ((st = lmi_take(ld, TN(n, "%sssm_a", prefix), ndim_a, shape_a, req | LMI_TAKE_F32, &w->A,
                       &rA)))
        return st;
    const float *a = lmi_weight_f32(&w->A);
    const size_t na = (size_t)lmi_weight_numel(&w->A);
    if ((st = lmi_check_finite(a, na, n, ld->e)))
        return st;
    for (size_t k = 0; k < na; k++)
        if (a[k] > 0.0f)
            return lmi_fail(ld->e, LM_ERR_FORMAT,
                            "tensor %s has a positive value (%g) at index %zu: expected "
                            "A = -exp(A_log), as llama.cpp's converter stores it",
                            n, (double)a[k], k);
    if ((st = lmi_take(ld, TN(n, "%sssm_d", prefix), ndim_d, shape_d, req | LMI_TAKE_F32, &w->D,
                       &rD)))
        return st;
    if ((st = lmi_check_finite(lmi_weight_f32(&w->D), (size_t)lmi_weight_numel(&w->D), n, ld->e)))
        return st;
    /* fingerprint: A, D, dt bias (model_load.h) */
    lmi_loader_hash(ld, &rA);
    lmi_loader_hash(ld, &rD);
    lmi_loader_hash(ld, &rdt);
    return LM_OK;
}

size_t lmi_mamba_linears(lmi_layer *L, lmi_weight **w, const char **names)
{
    /* dt_proj stays as stored: it is ~3% of the layer's matrices ([E][R],
     * R = d/16), so 8 bits would save little, and its output is Δ, which
     * goes through softplus into exp(Δ·A), the decay of every state, where
     * an error compounds along the sequence.  (On the bundled model
     * quantising it too cost under 0.01% of perplexity: README, "8-bit
     * weights"; the rule is for models where that is not so.) */
    lmi_mamba_weights *m = &L->mamba;
    lmi_weight *const all[3] = {&m->in_w, &m->x_w, &m->out_w};
    static const char *const nm[3] = {"in_proj", "x_proj", "out_proj"};
    size_t n = 0;
    for (size_t k = 0; k < 3; k++) {
        if (!all[k]->data) continue; /* Mamba-2 has no x_proj */
        w[n] = all[k];
        names[n++] = nm[k];
    }
    return n;
}

size_t lmi_mamba_state_floats(const lmi_dims *d, lmi_state_part part, int64_t pos)
{
    (void)pos; /* fixed size */
    if (part == LMI_STATE_CONV)
        return d->d_conv > 1 ? (size_t)d->conv_dim * (size_t)(d->d_conv - 1) : 0;
    if (part == LMI_STATE_SSM) return (size_t)d->d_inner * (size_t)d->d_state;
    return 0;
}
