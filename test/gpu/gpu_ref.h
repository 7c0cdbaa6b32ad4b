/*
 * gpu_ref.h - support for the GPU test programs (no Check): random Mamba-1
 * models built in memory, sessions driven through the backend vtable, and
 * a float64 reference forward written from MAMBA.md §1 / LONGMAMBA.md §4-5.
 */
#ifndef GPU_REF_H
#define GPU_REF_H

#include "format/safetensors.h"
#include "internal.h"
#include "testutil.h" /* tu_rng, tu_max_rel_err */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* ---- tolerances ---------------------------------------------------------- */

/* Logits against the float64 reference, relative to max|logit|.  fp32
 * storage, fp32 GEMMs: within 1e-5 (fixture README; measured <= 7e-7 on an
 * H100).  bf16 storage rounds the GEMM inputs (hidden, x|z, u, y) to bf16
 * (8 bits of mantissa) at every layer: measured <= 2.7e-3 (state <= 1.1e-2
 * after decimation).  TF32 GEMMs (10-bit mantissa inputs): measured
 * 3.2e-4.  TOL_STATE: recurrent state after a chunked fp32 prefill. */
#define TOL_F32 1e-5
#define TOL_STATE 1e-4
#define TOL_BF16 1e-2
#define TOL_TF32 2e-3

/* ---- small utilities ---------------------------------------------------- */

float bf16_round(float x);           /* round to nearest even bf16, as float */
uint16_t bf16_bits(float x);

/* Counts failures; tests print one line per check. */
extern int g_failures;
extern int g_checks;
void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The transformers fixtures in dir: the subdirectories with a
 * reference.safetensors (m1-tok, a CLI fixture, has none), sorted, at most
 * cap, each malloc'd.  Returns how many, or -1 when dir cannot be read. */
int gpu_fixture_names(const char *dir, char **names, int cap);


/* ---- committed fixtures (test/data/fixtures/<name>) ---------------------- */

/* The transformers reference of a checkpoint: reference.safetensors with
 * input_ids [B][L] (i32) and logits_f64 [B][L][V]. */
typedef struct fixture_ref {
    char dir[1024]; /* the checkpoint's directory */
    lmi_st_file file;
    const lmi_st_tensor *ids, *logits;
    int64_t B, L, V;
} fixture_ref;

/* false after a failed check naming the fixture (missing or malformed). */
bool fixture_ref_open(fixture_ref *fx, const char *name);
/* Row b: tokens [L] and reference logits [L][V]. */
void fixture_ref_row(const fixture_ref *fx, int64_t b, int32_t *tok, double *logits);
void fixture_ref_close(fixture_ref *fx);

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

/* A random Mamba-2 model (E = H P, conv_dim E + 2 G N, no Δ clamp), on the
 * CUDA Mamba-2 vtable or the CPU one; model_init NOT called. */
typedef struct m2_model_spec {
    int64_t d, H, P, G, N, K, n_layer, V;
    bool use_bias, conv_bias, tied;
    lm_dtype dtype;
    uint64_t seed;
} m2_model_spec;
struct lm_model *model_random_m2(const m2_model_spec *sp, lm_backend backend);

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
/* Mamba-2 SSD recurrence over L tokens in double: u [L][ldu] holds x [E] |
 * B [G][N] | C [G][N]; dl [L][H]; a filtered head (flag[h]) keeps token t
 * iff dl > tau[h]; h [H][P][N] in/out; y [L][E]. */
void ref_ssd(int64_t L, int H, int P, int N, int G, const float *u, int64_t ldu, const float *dl, const float *A,
             const float *D, const uint8_t *flag, const float *tau, double *h, double *y);
void ref_scan(int64_t L, int64_t E, int64_t N, const float *u, const float *dt, const float *dt_bias,
              bool softplus, const float *A, const float *B, const float *C, int64_t ldbc,
              const float *D, const float *z, const uint8_t *flag, const float *tau, double *h,
              double *y);

#endif
