/*
 * gpu_ref.h - support for the GPU test programs (no Check): random Mamba-1
 * models built in memory, sessions driven through the backend vtable, and
 * a float64 reference forward written from MAMBA.md §1 / LONGMAMBA.md §4-5.
 */
#ifndef GPU_REF_H
#define GPU_REF_H

#include "internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* ---- small utilities ---------------------------------------------------- */

typedef struct rng {
    uint64_t s;
} rng;

double rng_uniform(rng *r);          /* [0, 1) */
double rng_sym(rng *r);              /* [-1, 1) */
double rng_normal(rng *r);
float bf16_round(float x);           /* round to nearest even bf16, as float */
uint16_t bf16_bits(float x);

/* Counts failures; tests print one line per check. */
extern int g_failures;
extern int g_checks;
void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* max |a - b| / max(|b|) over n elements (inf when a has NaN). */
double max_rel_err(const float *a, const double *b, size_t n);
double max_rel_err_f(const float *a, const float *b, size_t n);

/* ---- models ------------------------------------------------------------- */

typedef struct model_spec {
    int64_t d, E, N, R, K, n_layer, V;
    bool use_bias, conv_bias, tied;
    lm_dtype dtype;   /* BF16: weights rounded to bf16 */
    uint64_t seed;
} model_spec;

/* A model with fp32 host weights; vt/backend/device set for `backend`.
 * model_init is NOT called. */
struct lm_model *model_random(const model_spec *sp, lm_backend backend);
void model_destroy(struct lm_model *m);  /* frees host arrays (after vt->model_free) */

/* Session driven through the vtable (calloc'd, chunk_size 512). */
struct lm_session *session_new(struct lm_model *m, lmi_err *e);
void session_delete(struct lm_session *s);

/* ---- float64 reference --------------------------------------------------- */

typedef struct ref_state {
    int64_t n_layer, E, N, K;
    double *conv;   /* [n_layer][E][K-1] */
    double *ssm;    /* [n_layer][E][N] */
} ref_state;

ref_state *ref_state_new(const struct lm_model *m);
void ref_state_free(ref_state *st);

/* Called at each layer with the post-softplus Δ [L][E] (double) before the
 * filter; may fill tau/global of that layer (to keep thresholds away from
 * every Δ), may set *deci_budget.  ctx is opaque. */
typedef void (*ref_layer_hook)(void *ctx, int64_t layer, const double *delta, int64_t L, int64_t E);

typedef struct ref_opts {
    const lmi_filter *filters;     /* [n_layer] or NULL */
    const double *deci_budget;     /* [n_layer] or NULL */
    int64_t deci_min_len, deci_protect;
    ref_layer_hook hook;
    void *hook_ctx;
    /* DeciMamba: smallest relative gap between the K-th and (K+1)-th
     * scores seen (so a test can avoid near ties); written if not NULL. */
    double *deci_gap;
} ref_opts;

/* Runs L tokens from state st (updated); writes logits of the last n_out
 * positions [n_out][V].  Returns the number of positions left (after
 * decimation), or -1 on error. */
int64_t ref_forward(const struct lm_model *m, ref_state *st, const int32_t *tok, int64_t L,
                    const ref_opts *o, int64_t n_out, double *logits);

/* Reference selective scan (fp64) with lm_scan-like arguments, for kernel
 * tests: token major, h [E][N] in/out. */
void ref_scan(int64_t L, int64_t E, int64_t N, const float *u, const float *dt, const float *dt_bias,
              bool softplus, const float *A, const float *B, const float *C, int64_t ldbc,
              const float *D, const float *z, const uint8_t *flag, const float *tau, double *h,
              double *y);

#endif
