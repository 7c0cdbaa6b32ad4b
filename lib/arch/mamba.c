/*
 * arch/mamba.c - reading a Mamba mixer's tensors from a table of rows, in
 * Hugging Face or GGUF names: the shared in_proj, conv1d and out_proj
 * (each with its optional bias), then the mixer's own rows, among them the
 * A / D / dt-bias trio that enters the model fingerprint.
 */
#include "arch/arch.h"
#include "arch/mamba.h"

#include <stdio.h>
#include <string.h>

/* GGUF's ssm_a holds A = -exp(A_log) already (the converter applies it):
 * finite and <= 0. */
static lm_status check_A(const lmi_weight *A, const char *name, lmi_err *e)
{
    const float *a = lmi_weight_f32(A);
    const size_t na = (size_t)lmi_weight_numel(A);
    lm_status st = lmi_check_finite(a, na, name, e);
    for (size_t k = 0; k < na && st == LM_OK; k++)
        if (a[k] > 0.0f)
            st = lmi_fail(e, LM_ERR_FORMAT,
                          "tensor %s has a positive value (%g) at index %zu: expected "
                          "A = -exp(A_log), as llama.cpp's converter stores it",
                          name, (double)a[k], k);
    return st;
}

/* Extents of a table shape: those before the first 0. */
static int shape_ndim(const int64_t shape[3])
{
    int n = 0;
    while (n < 3 && shape[n] > 0) n++;
    return n;
}

/* One row of a table, by the naming of ld's file; *raw: the stored tensor,
 * for the fingerprint. */
static lm_status take_tensor(lmi_loader *ld, const lmi_cfg *c, const char *prefix,
                             const lmi_mamba_tensor *t, lmi_stored *raw)
{
    const bool gguf = ld->gguf != NULL;
    const int64_t *s = gguf && t->gguf_shape[0] ? t->gguf_shape : t->shape;
    const int nd = shape_ndim(s);
    const int req = LMI_TAKE_REQUIRED, f32 = LMI_TAKE_REQUIRED | LMI_TAKE_F32;
    char n[192];
    snprintf(n, sizeof n, "%s%s", prefix, gguf ? t->gguf : t->hf);
    lm_status st = LM_OK;
    switch (t->role) {
    case LMI_MT_WEIGHT:
        st = lmi_take(ld, n, nd, s, req, t->w, raw);
        break;
    case LMI_MT_LINEAR:
        st = lmi_take(ld, n, nd, s, req | LMI_TAKE_LINEAR, t->w, raw);
        break;
    case LMI_MT_BIAS:
        st = lmi_take_bias(ld, n, c->use_bias == 1, "use_bias", s[0], t->w);
        break;
    case LMI_MT_CONV_BIAS:
        st = lmi_take_bias(ld, n, c->use_conv_bias == 1, "use_conv_bias", s[0], t->w);
        break;
    case LMI_MT_DT_BIAS:
        st = lmi_take(ld, n, nd, s, f32, t->w, raw);
        break;
    case LMI_MT_A: /* HF: A_log, made A in place on an owned copy */
        st = lmi_take(ld, n, nd, s, gguf ? f32 : f32 | LMI_TAKE_COPY, t->w, raw);
        if (st == LM_OK)
            st = gguf ? check_A(t->w, n, ld->e)
                      : lmi_make_A((float *)(uintptr_t)t->w->data,
                                   (size_t)lmi_weight_numel(t->w), n, ld->e);
        break;
    case LMI_MT_D:
        st = lmi_take(ld, n, nd, s, f32, t->w, raw);
        if (st == LM_OK)
            st = lmi_check_finite(lmi_weight_f32(t->w), (size_t)lmi_weight_numel(t->w), n, ld->e);
        break;
    }
    /* A vector GGUF stores as a matrix ([H][1], [G][E/G]) is read flat, as
     * its Hugging Face form (the backends read vectors flat). */
    if (st == LM_OK && gguf && shape_ndim(t->shape) == 1) lmi_weight_flatten(t->w);
    return st;
}

lm_status lmi_mamba_load(lmi_loader *ld, const lmi_cfg *c, const char *prefix, int64_t n_in,
                         const lmi_mamba_tensor *own, size_t n_own, lmi_mamba_weights *w)
{
    const lmi_dims *d = &c->d;
    const int64_t D = d->d_model, E = d->d_inner, C = d->conv_dim, K = d->d_conv;
    /* The tensors both mixers have, read first; GGUF squeezes conv1d
     * [C][1][K] to [C][K] (same bytes). */
    /* clang-format off */
    const lmi_mamba_tensor io[] = {
        /* weight, role, Hugging Face name and shape, GGUF name and shape ({0}: same) */
        {&w->in_w,   LMI_MT_LINEAR,    "in_proj.weight",  {n_in, D}, "ssm_in.weight",     {0}},
        {&w->in_b,   LMI_MT_BIAS,      "in_proj.bias",    {n_in},    "ssm_in.bias",       {0}},
        {&w->conv_w, LMI_MT_WEIGHT,    "conv1d.weight",   {C, 1, K}, "ssm_conv1d.weight", {C, K}},
        {&w->conv_b, LMI_MT_CONV_BIAS, "conv1d.bias",     {C},       "ssm_conv1d.bias",   {0}},
        {&w->out_w,  LMI_MT_LINEAR,    "out_proj.weight", {D, E},    "ssm_out.weight",    {0}},
        {&w->out_b,  LMI_MT_BIAS,      "out_proj.bias",   {D},       "ssm_out.bias",      {0}},
    };
    /* clang-format on */
    const size_t n_io = sizeof io / sizeof io[0];
    lmi_stored raw[LMI_MT_D + 1]; /* the last taken of each role */
    memset(raw, 0, sizeof raw);
    lm_status st = LM_OK;
    for (size_t k = 0; k < n_io + n_own && st == LM_OK; k++) {
        const lmi_mamba_tensor *t = k < n_io ? &io[k] : &own[k - n_io];
        st = take_tensor(ld, c, prefix, t, &raw[t->role]);
    }
    if (st != LM_OK) return st;
    /* fingerprint: A (A_log in HF form), D, dt bias (model_load.h) */
    lmi_loader_hash(ld, &raw[LMI_MT_A]);
    lmi_loader_hash(ld, &raw[LMI_MT_D]);
    lmi_loader_hash(ld, &raw[LMI_MT_DT_BIAS]);
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

size_t lmi_mamba_weights_list(const lmi_layer *L, const lmi_weight **w, const char **names,
                              bool *linear)
{
    const lmi_mamba_weights *m = &L->mamba;
    const struct {
        const lmi_weight *w;
        const char *name;
        bool linear;
    } all[] = {
        {&m->in_w, "in_proj", true},         {&m->in_b, "in_proj.bias", false},
        {&m->conv_w, "conv1d", false},       {&m->conv_b, "conv1d.bias", false},
        {&m->x_w, "x_proj", true},           {&m->dt_w, "dt_proj", true},
        {&m->dt_b, "dt_bias", false},        {&m->A, "A", false},
        {&m->D, "D", false},                 {&m->gnorm_w, "gated_norm", false},
        {&m->out_w, "out_proj", true},       {&m->out_b, "out_proj.bias", false},
    };
    _Static_assert(sizeof all / sizeof all[0] <= LMI_MAX_MIXER_WEIGHTS, "LMI_MAX_MIXER_WEIGHTS");
    size_t n = 0;
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        if (!all[k].w->data) continue;
        w[n] = all[k].w;
        names[n] = all[k].name;
        linear[n++] = all[k].linear;
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
