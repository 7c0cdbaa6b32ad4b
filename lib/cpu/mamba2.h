/*
 * cpu/mamba2.h - the CPU backend's Mamba-2 forward (cpu/mamba2.c), called
 * by cpu/backend.c, which owns the session state and the transposed conv
 * weights and dispatches on the architecture.
 */
#ifndef LMI_CPU_MAMBA2_H
#define LMI_CPU_MAMBA2_H

#include "internal.h"

/* Scratch of one session for `cap` tokens. */
typedef struct lmi_cpu_m2_scratch lmi_cpu_m2_scratch;

/* Checks the Mamba-2 dimensions and that every weight the forward reads
 * is present. */
lm_status lmi_cpu_m2_check(const lm_model *m, lmi_err *e);

/* Makes *sc hold T tokens (allocating or growing it); contents not kept. */
lm_status lmi_cpu_m2_reserve(lmi_cpu_m2_scratch **sc, const lmi_dims *d, int64_t T, lmi_err *e);
void lmi_cpu_m2_free(lmi_cpu_m2_scratch *sc);

/* One forward pass over f's tokens, continuing from and updating
 * conv [n_layer][conv_dim][K-1] (oldest first) and ssm [n_layer][H][P][N].
 * conv_wT: [n_layer][K + 1][conv_dim] (lmi_conv_prepare); tile: the
 * lmi_linear scratch (lmi_ops_tile_floats).  Everything that can fail is checked
 * before the state changes. */
lm_status lmi_cpu_m2_forward(const lm_model *m, lmi_cpu_m2_scratch **sc, float *conv,
                             float *ssm, const float *conv_wT, float *tile, const lmi_forward *f,
                             int n_threads, lmi_err *e);

/* One vanilla decode step for n sessions: tokens [n], each session's
 * state conv[i] / ssm[i] (layouts as above), logits [n][vocab] or NULL.
 * The weights are read once for the batch. */
lm_status lmi_cpu_m2_forward_batch(const lm_model *m, lmi_cpu_m2_scratch **sc,
                                   float *const *conv, float *const *ssm, const float *conv_wT,
                                   float *tile, const int32_t *tokens, int64_t n, float *logits,
                                   int n_threads, lmi_err *e);

#endif
