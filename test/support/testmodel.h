/*
 * testmodel.h - random Mamba-1 models built in memory for tests and
 * benchmarks (no files, no loader): fill an lm_model by hand, run the
 * backend's model_init.  Free with tm_model_free (not lm_model_free).
 */
#ifndef LM_TEST_TESTMODEL_H
#define LM_TEST_TESTMODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"
#include "testutil.h" /* tu_rng for the weights */

typedef struct tm_config {
    int64_t d_model, d_inner, d_state, dt_rank, d_conv, n_layer, vocab;
    bool bias; /* in_proj / out_proj biases */
    bool conv_bias;
    bool tied;     /* lm_head is the embedding */
    uint64_t seed; /* weights and fingerprint */
    int32_t n_threads;
    /* Storage of the matrices and the embedding: LMI_W_F32 (default) or
     * LMI_W_F16 (the fp32 draws rounded to binary16, as a stored F16
     * checkpoint would hold them). */
    lmi_wtype wtype;
    /* Then lmi_model_set_weights, as lm_model_load with this format. */
    lm_weight_format weights;
} tm_config;

/* The odd sizes the CPU tests use: d 40, E 80, N 8, R 3, K 3, 2 layers,
 * vocab 37, biases on, untied. */
tm_config tm_config_small(void);

/* NULL on failure (message in err). */
lm_model *tm_model_build(const tm_config *cfg, char *err, size_t err_cap);
void tm_model_free(lm_model *m);

/* Float64 forward from zero state, straight from MAMBA.md §1, over
 * tokens[0..T).  logits receives [T'][vocab] for every position that is
 * left (T' = T unless DeciMamba drops tokens); returns T', or -1 when out of
 * memory.  Optional: filters [n_layer] (LongMamba, on post-softplus Δ),
 * deci_budget [n_layer] (negative = no decimation in that layer) with
 * deci_min_len / deci_protect, delta_out [n_layer][T][E] (Δ before any
 * decimation of that layer, and before filtering). */
int64_t tm_reference_forward(const lm_model *m, const int32_t *tokens, int64_t T,
                             const lmi_filter *filters, const double *deci_budget,
                             int64_t deci_min_len, int64_t deci_protect, double *logits,
                             double *delta_out);

#endif
