/*
 * arch/mamba.h - loading helpers shared by the Mamba-1 and Mamba-2 mixers
 * (lib/arch/mamba.c).
 */
#ifndef LMI_ARCH_MAMBA_H
#define LMI_ARCH_MAMBA_H

#include "arch/arch.h"

/* in_proj [in_rows][d], conv1d [conv_dim][1][K], out_proj [d][E], each
 * with the bias the config (or layer 0 of the checkpoint) says it has. */
lm_status lmi_mamba_load_io(lmi_loader *ld, const lmi_cfg *c, const char *prefix,
                            int64_t in_rows, lmi_mamba_weights *w);
/* The dt bias (named dt_name), A = -exp(A_log) of shape_a and D [n_d]:
 * fp32, checked finite, hashed into the fingerprint in that order:
 * A_log, D, dt bias. */
lm_status lmi_mamba_load_decay(lmi_loader *ld, const char *prefix, const char *dt_name,
                               int ndim_a, const int64_t *shape_a, int64_t n_d,
                               lmi_mamba_weights *w);
/* GGUF (llama.cpp names under prefix "blk.N."): ssm_in [in_rows][d],
 * ssm_conv1d [conv_dim][K] (squeezed), ssm_out [d][E], each with the bias
 * layer 0 says it has. */
lm_status lmi_mamba_gguf_io(lmi_loader *ld, const lmi_cfg *c, const char *prefix,
                            int64_t in_rows, lmi_mamba_weights *w);
/* GGUF ssm_dt.bias [n_dt], ssm_a (A itself, = -exp(A_log): checked finite
 * and <= 0) and ssm_d, in the given shapes: fp32, hashed into the
 * fingerprint in the order A, D, dt bias. */
lm_status lmi_mamba_gguf_decay(lmi_loader *ld, const char *prefix, int ndim_a,
                               const int64_t *shape_a, int ndim_d, const int64_t *shape_d,
                               int64_t n_dt, lmi_mamba_weights *w);
/* in_proj, x_proj (Mamba-1) and out_proj: lmi_mixer_ops.linears. */
size_t lmi_mamba_linears(lmi_layer *L, lmi_weight **w, const char **names);
/* conv window [conv_dim][K-1] and SSM state [E][N], fixed size. */
size_t lmi_mamba_state_floats(const lmi_dims *d, lmi_state_part part, int64_t pos);

#endif
