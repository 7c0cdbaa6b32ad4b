/*
 * cpu/mixer.h - the CPU backend's mixer interface.  cpu/backend.c owns
 * the model loop (embedding, per layer RMSNorm -> mixer -> residual, final
 * norm and lm_head), the session state arrays and the residual stream;
 * each mixer kind (cpu/mamba1.c, cpu/mamba2.c) owns its per-layer model
 * data, its scratch and its prefill/decode entry points.
 */
#ifndef LMI_CPU_MIXER_H
#define LMI_CPU_MIXER_H

#include "internal.h"

/* What a mixer's entry points get for one layer. */
typedef struct lmi_cpu_layer {
    const lm_model *m;
    const lmi_layer *w;        /* the layer's weights */
    int64_t index;             /* layer number (hooks, sink) */
    const void *data;          /* the mixer's per-layer model data (init_layer) */
    const float *hn;           /* [T][d] the normalised input */
    float *res;                /* [T][d] residual stream: the mixer adds its output */
    float *tile;               /* lmi_linear scratch (lmi_ops_tile_floats) or NULL */
    int nt;                    /* threads */
} lmi_cpu_layer;

typedef struct lmi_cpu_mixer {
    lmi_mixer_kind kind;
    /* At model init: checks dims and weights of layer L, builds its model
     * data (*data, freed with lmi_free) and says whether any of its
     * matrices is not F32 (16-bit or Q8_0: sessions then need the tile
     * scratch). */
    lm_status (*init_layer)(const lm_model *m, const lmi_layer *L, int64_t index, void **data,
                            bool *has16, lmi_err *e);
    /* Scratch of this kind for T tokens: grows *scratch (the old one stays
     * until the new one exists); contents are not kept. */
    lm_status (*reserve)(void **scratch, const lmi_dims *d, int64_t T, lmi_err *e);
    void (*release)(void *scratch);
    /* T tokens of one session (a prefill chunk or a decode step) with f's
     * hooks, continuing from and updating the layer's state parts.  A
     * token hook may shrink *T: the mixer then gathers the kept rows of
     * c->res too.  Reserve has run for T. */
    lm_status (*forward)(const lmi_cpu_layer *c, void *scratch, const lmi_forward *f,
                         float *const state[LMI_STATE_PARTS], int64_t *T, lmi_err *e);
    /* n sequences packed back to back, without hooks: sequence i is rows
     * [off[i], off[i+1]) of c->hn / c->res (at least one) and continues
     * from its state parts state[i][part].  The projections run over all
     * off[n] rows at once, conv and scan per sequence; reserve has run for
     * off[n].  A batched decode step is n sequences of one token. */
    lm_status (*forward_seqs)(const lmi_cpu_layer *c, void *scratch, const int64_t *off, int64_t n,
                              float *const (*state)[LMI_STATE_PARTS], lmi_err *e);
} lmi_cpu_mixer;

extern const lmi_cpu_mixer lmi_cpu_mixer_mamba1; /* cpu/mamba1.c */
extern const lmi_cpu_mixer lmi_cpu_mixer_mamba2; /* cpu/mamba2.c */

/* A mixer's scratch starts with this header: its buffers are carved from
 * one block, so growing is one allocation and release is generic. */
typedef struct lmi_cpu_scratch {
    void *block;
    int64_t cap;               /* tokens the buffers hold */
} lmi_cpu_scratch;

typedef struct lmi_carve {
    void **dst;                /* receives a pointer into the block */
    size_t bytes;
} lmi_carve;

/* Replaces sc's block by one holding every row (64-byte aligned) for T
 * tokens; on failure sc is unchanged (still usable for what fits). */
lm_status lmi_cpu_scratch_carve(lmi_cpu_scratch *sc, const lmi_carve *rows, size_t n, int64_t T,
                                lmi_err *e);
/* Frees a scratch that starts with lmi_cpu_scratch (NULL is fine). */
void lmi_cpu_scratch_release(void *scratch);

/* Checks shared by the Mamba mixers: d_conv range and BLAS int sizes for
 * an in_proj of in_rows. */
lm_status lmi_cpu_mamba_check(const lmi_dims *d, int64_t in_rows, lmi_err *e);
/* The Mamba conv weights of L transposed for lmi_conv_chunk, and the
 * has16 test over a Mamba layer's matrices. */
lm_status lmi_cpu_mamba_init(const lmi_dims *d, const lmi_layer *L, void **data, bool *has16,
                             lmi_err *e);

#endif
