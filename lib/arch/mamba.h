/*
 * arch/mamba.h - loading helpers shared by the Mamba-1 and Mamba-2 mixers
 * (lib/arch/mamba.c).
 */
#ifndef LMI_ARCH_MAMBA_H
#define LMI_ARCH_MAMBA_H

#include "arch/arch.h"

/* How a tensor of a Mamba mixer (MT) is read and checked, beyond its shape. */
typedef enum lmi_mamba_role {
    LMI_MT_WEIGHT,    /* required, in its stored type (F32, F16, BF16) */
    LMI_MT_LINEAR,    /* required, a linear layer's matrix: any stored type,
                         block types (GGUF Q8_0) included */
    LMI_MT_BIAS,      /* present iff use_bias (lmi_take_bias) */
    LMI_MT_CONV_BIAS, /* present iff use_conv_bias */
    LMI_MT_DT_BIAS,   /* fp32 */
    LMI_MT_A,         /* fp32 A = -exp(A_log): HF stores A_log, GGUF A itself */
    LMI_MT_D,         /* fp32, finite */
} lmi_mamba_role;

/* One tensor of a Mamba mixer under both namings; the names follow the
 * layer's prefix ("backbone.layers.N.mixer." or GGUF's "blk.N.").  A shape
 * is row major (PyTorch order: lmi_take reverses GGUF's extents), its
 * extents >= 1 (the config's checks) and 0 past its last one.  GGUF
 * (llama.cpp's convert_hf_to_gguf.py) reshapes a few tensors without
 * moving a byte: gguf_shape says how ({0}: as shape). */
typedef struct lmi_mamba_tensor {
    lmi_weight *w;
    lmi_mamba_role role;
    const char *hf;
    int64_t shape[3];
    const char *gguf;
    int64_t gguf_shape[3];
} lmi_mamba_tensor;

/* Reads a Mamba mixer's tensors by the naming of ld's file: in_proj
 * [n_in][d], conv1d and out_proj with the biases the config (or layer 0)
 * says they have, then the mixer's own rows in order.  A, D and the dt
 * bias are fp32, checked, and hashed into the fingerprint in the order A,
 * D, dt bias (model_load.h); each own table has one row of each. */
lm_status lmi_mamba_load(lmi_loader *ld, const lmi_cfg *c, const char *prefix, int64_t n_in,
                         const lmi_mamba_tensor *own, size_t n_own, lmi_mamba_weights *w);
/* in_proj, x_proj (Mamba-1) and out_proj: lmi_mixer_ops.linears. */
size_t lmi_mamba_linears(lmi_layer *L, lmi_weight **w, const char **names);
/* conv window [conv_dim][K-1] and SSM state [E][N], fixed size. */
size_t lmi_mamba_state_floats(const lmi_dims *d, lmi_state_part part, int64_t pos);

/* Mamba-1's Hugging Face config keys (state_size, intermediate_size or
 * expand, time_step_rank), derived dimensions and layer pattern
 * (lib/arch/mamba1.c), shared with the rows of its variants
 * (lib/arch/falcon_mamba.c). */
lm_status lmi_m1_parse_hf(lmi_cfg *c, const lmi_json *j, lmi_err *e);
lm_status lmi_m1_finish(lmi_cfg *c, lmi_err *e);
lmi_mixer_kind lmi_m1_mixer_of(const lmi_dims *d, int64_t i);

/* lmi_mixer_ops.weights of both Mamba mixers. */
size_t lmi_mamba_weights_list(const lmi_layer *L, const lmi_weight **w, const char **names,
                              bool *linear);

#endif
