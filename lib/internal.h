/*
 * internal.h - what the library's parts share: the model and session
 * structs, errors, and the backend boundary.  Internal symbols use the
 * lmi_ prefix so that no export pattern catches them.
 *
 * The backend boundary is "one forward pass over a chunk of tokens for the
 * whole model" (lmi_forward): everything that is policy - chunking, length
 * buckets, thresholds, global masks, DeciMamba keep counts and token
 * selection, calibration statistics - lives once in lib/ and reaches the
 * backend as plain data, so each backend is free to fuse inside and across
 * layers (the CUDA decode step keeps everything on the device).
 */
#ifndef LMI_INTERNAL_H
#define LMI_INTERNAL_H

#include "longmamba.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors ------------------------------------------------------------ */

#define LMI_ERR_CAP 512

typedef struct lmi_err {
    char msg[LMI_ERR_CAP];
} lmi_err;

/* Records a printf-style message in e (if not NULL) and returns st. */
lm_status lmi_fail(lmi_err *e, lm_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Copies e's message to a caller (err, cap) buffer; both may be NULL/0. */
void lmi_err_copy(const lmi_err *e, char *err, size_t cap);

/* ---- lookup by name ---------------------------------------------------- */

/* The item of items[] (each `stride` bytes, its name a char * at byte
 * name_off) whose name is key, found by binary search through order (n
 * indices sorted by name); NULL when none.  The readers' index lookups. */
const void *lmi_find_by_name(const void *items, size_t stride, size_t name_off,
                             const size_t *order, size_t n, const char *key);

/* ---- allocation -------------------------------------------------------- */

/* All library allocations go through these so that fault injection can
 * reach every site.  lmi_alloc returns NULL on overflow or failure. */
void *lmi_alloc(size_t n, size_t size);      /* calloc-like, zeroed */
void *lmi_alloc_raw(size_t n, size_t size);  /* malloc-like, 64-byte aligned */
void lmi_free(void *p);

/* ---- architecture ------------------------------------------------------ */

typedef struct lmi_dims {
    lm_arch arch;
    int64_t d_model;     /* d */
    int64_t d_inner;     /* E */
    int64_t d_state;     /* N */
    int64_t dt_rank;     /* R (Mamba-1) */
    int64_t d_conv;      /* K */
    int64_t n_layer;
    int64_t vocab;       /* rows of the embedding */
    int64_t n_heads;     /* H (Mamba-2) */
    int64_t head_dim;    /* P (Mamba-2) */
    int64_t n_groups;    /* G (Mamba-2) */
    int64_t conv_dim;    /* channels through conv1d: E (M1) or E + 2GN (M2) */
    int64_t n_channels;  /* LongMamba channels: E (M1) or H (M2) */
    double eps;          /* RMSNorm epsilon */
    bool use_bias;       /* in_proj / out_proj bias */
    bool use_conv_bias;
    bool tied;           /* lm_head is the embedding */
    double dt_limit_lo;  /* Mamba-2 time_step_limit (0, +inf by default) */
    double dt_limit_hi;
    int64_t ssd_chunk;   /* Mamba-2 chunk_size from config */
    double bcdt_rms_eps; /* Mamba-1: > 0 normalises dt_low, B and C (each its own
                          * RMS, no weight, this epsilon) after x_proj, as
                          * Falcon-Mamba does (mixer_rms_eps); 0: not */
} lmi_dims;

/* ---- weights ----------------------------------------------------------- */

/* Storage type of a weight tensor in host memory.  A row of a block type
 * is a whole number of blocks: use lmi_weight_row_bytes, not cols times
 * an element size. */
typedef enum lmi_wtype {
    LMI_W_F32 = 0,
    LMI_W_F16 = 1,
    LMI_W_BF16 = 2,
    /* GGML's Q8_0, byte for byte (so a GGUF Q8_0 tensor can be used in
     * place): a row of cols (a multiple of 32) is cols / 32 blocks of
     * { binary16 d, little endian; int8 q[32] } = 34 bytes, no padding;
     * element j of a block is d * q[j].  Made by lmi_weight_quantize_q8_0. */
    LMI_W_Q8_0 = 3,
} lmi_wtype;

#define LMI_Q8_0_BLOCK 32        /* elements per block */
#define LMI_Q8_0_BLOCK_BYTES 34  /* bytes per block: d, then q[32] */

/* One weight tensor as the model holds it: in its stored type, pointing
 * into the read-only mapping of the checkpoint when the data is aligned
 * for that type, else one copy (same type) owned by the model; or, when
 * the model was loaded with LM_WEIGHTS_Q8_0, a linear layer's matrix as
 * LMI_W_Q8_0 blocks owned by the model.  Matrices are [rows = out][cols =
 * in], row major; vectors have rows = 1; conv1d weights are [conv_dim][K].
 * data == NULL: absent (e.g. no bias). */
typedef struct lmi_weight {
    const void *data;
    lmi_wtype type;
    int64_t rows, cols;
} lmi_weight;

/* Bytes of one element of a per-element type (F32, F16, BF16); a block
 * type has no element size (0): see lmi_weight_row_bytes. */
static inline size_t lmi_wtype_size(lmi_wtype t)
{
    return t == LMI_W_F32 ? 4 : t == LMI_W_Q8_0 ? 0 : 2;
}

static inline int64_t lmi_weight_numel(const lmi_weight *w)
{
    return w->rows * w->cols;
}

static inline size_t lmi_weight_row_bytes(const lmi_weight *w)
{
    if (w->type == LMI_W_Q8_0)
        return (size_t)(w->cols / LMI_Q8_0_BLOCK) * LMI_Q8_0_BLOCK_BYTES;
    return (size_t)w->cols * lmi_wtype_size(w->type);
}

/* An fp32 weight over caller memory. */
static inline lmi_weight lmi_weight_of_f32(const float *p, int64_t rows, int64_t cols)
{
    lmi_weight w = {p, LMI_W_F32, rows, cols};
    return w;
}

/* The fp32 array of a weight stored as F32 (A, D, dt_b always are: the
 * loader keeps those small arrays as fp32 copies); NULL otherwise. */
static inline const float *lmi_weight_f32(const lmi_weight *w)
{
    return w->type == LMI_W_F32 ? (const float *)w->data : NULL;
}

/* IEEE binary16 / bfloat16 -> binary32, exact for every input
 * (subnormals, inf, NaN with its payload). */
static inline float lmi_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t ex = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    uint32_t bits;
    if (ex == 0) {
        if (mant == 0) {
            bits = sign;
        } else {
            /* value = mant * 2^-24: normalise so the implicit bit is set. */
            uint32_t fe = 113;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                fe--;
            }
            bits = sign | (fe << 23) | ((mant & 0x3FFu) << 13);
        }
    } else if (ex == 31) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else {
        bits = sign | ((ex + 112) << 23) | (mant << 13);
    }
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
}

static inline float lmi_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
}

/* Element i (flat index) of any weight, widened to fp32 exactly.  For
 * reference code and tests; kernels convert whole rows. */
static inline float lmi_weight_at(const lmi_weight *w, int64_t i)
{
    uint16_t h;
    switch (w->type) {
    case LMI_W_Q8_0: {
        /* rows are whole blocks, so flat element i is in flat block i / 32 */
        const uint8_t *b = (const uint8_t *)w->data + (i / LMI_Q8_0_BLOCK) * LMI_Q8_0_BLOCK_BYTES;
        h = (uint16_t)(b[0] | (b[1] << 8));
        return lmi_f16_to_f32(h) * (float)(int8_t)b[2 + i % LMI_Q8_0_BLOCK];
    }
    case LMI_W_F16:
        __builtin_memcpy(&h, (const uint16_t *)w->data + i, 2);
        return lmi_f16_to_f32(h);
    case LMI_W_BF16:
        __builtin_memcpy(&h, (const uint16_t *)w->data + i, 2);
        return lmi_bf16_to_f32(h);
    default:
        return ((const float *)w->data)[i];
    }
}

/* Elements [first, first + n) of w (flat, row major) into dst as `to`
 * (LM_DTYPE_F32: exact widening; LM_DTYPE_BF16: round to nearest even,
 * a copy when stored as BF16).  dst needs no alignment.  The one way
 * other code (the CUDA upload) reads host weights. */
void lmi_weight_convert(const lmi_weight *w, int64_t first, int64_t n, lm_dtype to, void *dst);

/* fp32 -> binary16, round to nearest even (overflow to inf, NaN stays a
 * quiet NaN); exact inverse of lmi_f16_to_f32 on its image. */
uint16_t lmi_f32_to_f16(float f);

/* A row-major [rows][cols] weight (any per-element type, cols a multiple
 * of 32) -> Q8_0 blocks at dst (rows * lmi_weight_row_bytes of the result).
 * Per block of 32 inputs w[j] (widened exactly to fp32):
 *   d = max_j |w[j]| / 127, computed in double and rounded once to
 *       binary16 (round to nearest even; a block of zeros gets d = +0;
 *       a d above the largest finite binary16 saturates to 65504);
 *   q[j] = round_to_nearest_even(w[j] / d) with the quotient in double,
 *       clamped to [-127, 127] (d rounded down can put |w| / d just above
 *       127); q[j] = 0 wherever d = 0 (zero blocks and blocks whose
 *       max |w| / 127 is below half the smallest binary16 subnormal).
 * -128 is never produced.  LM_ERR_NUMERIC (naming `name` and the element)
 * for a NaN or infinite weight; LM_ERR_SHAPE when cols is not a multiple
 * of 32. */
lm_status lmi_weight_quantize_q8_0(const lmi_weight *w, void *dst, const char *name, lmi_err *e);

/* n binary16 / bfloat16 values -> fp32 (F16C where the CPU has it). */
void lmi_f16_row_to_f32(const uint16_t *src, float *dst, int64_t n);
void lmi_bf16_row_to_f32(const uint16_t *src, float *dst, int64_t n);
/* n_blocks Q8_0 blocks -> 32 * n_blocks fp32 values d * q[j] (exact: an
 * 11-bit d times an 8-bit q fits fp32's 24 bits). */
void lmi_q8_0_row_to_f32(const void *blocks, float *dst, int64_t n_blocks);

/* ---- layers and mixers ---------------------------------------------------
 * A model is a list of layers: x += mixer(RMSNorm(x)).  Each layer has a
 * mixer kind with its own weights (a member of lmi_layer's union), its own
 * per-session state and, in each backend, its own entry points.  Next
 * kinds (hybrids): attention with a growing KV cache, MLP. */

typedef enum lmi_mixer_kind {
    LMI_MIXER_MAMBA1 = 1,
    LMI_MIXER_MAMBA2 = 2,
} lmi_mixer_kind;

/* Mamba mixer weights in their stored type (lmi_weight).  A is derived
 * (-exp(A_log)) and, like D and dt_b, always an fp32 array (F32 in
 * place, else an fp32 copy the model owns): the scans read them as fp32
 * and they are small.  M1 / M2: only in that generation. */
typedef struct lmi_mamba_weights {
    lmi_weight in_w;     /* M1 [2E][d]; M2 [2E+2GN+H][d] */
    lmi_weight in_b;     /* or absent */
    lmi_weight conv_w;   /* [conv_dim][K] */
    lmi_weight conv_b;   /* [conv_dim] or absent */
    lmi_weight x_w;      /* M1 [R+2N][E] */
    lmi_weight dt_w;     /* M1 [E][R] */
    lmi_weight dt_b;     /* fp32: M1 [E]; M2 dt_bias [H] */
    lmi_weight A;        /* fp32 -exp(A_log): M1 [E][N]; M2 [H] */
    lmi_weight D;        /* fp32: M1 [E]; M2 [H] */
    lmi_weight gnorm_w;  /* M2 gated RMSNorm weight [E] */
    lmi_weight out_w;    /* [d][E] */
    lmi_weight out_b;    /* or absent */
} lmi_mamba_weights;

typedef struct lmi_layer {
    lmi_mixer_kind kind;
    lmi_weight norm_w;   /* RMSNorm before the mixer [d] */
    union {
        lmi_mamba_weights mamba;   /* LMI_MIXER_MAMBA1, LMI_MIXER_MAMBA2 */
    };
} lmi_layer;

/* Parts of a layer's per-session state, fp32; the state blob holds every
 * layer's CONV part, then every layer's SSM part. */
typedef enum lmi_state_part {
    LMI_STATE_CONV = 0,  /* Mamba: conv window [conv_dim][K-1], oldest column first */
    LMI_STATE_SSM = 1,   /* Mamba: [E][N] (Mamba-2: [H*P][N]) */
    LMI_STATE_PARTS = 2,
} lmi_state_part;

struct lmi_loader;
struct lmi_cfg;

/* What the library knows of a mixer kind, backend-free (lib/arch/). */
typedef struct lmi_mixer_ops {
    lmi_mixer_kind kind;
    const char *name;
    /* Reads the mixer's tensors (names: prefix + "in_proj.weight", ...);
     * from a GGUF file in llama.cpp's names and layouts (prefix "blk.N.":
     * "ssm_in.weight", ...). */
    lm_status (*load)(struct lmi_loader *ld, const struct lmi_cfg *c, const char *prefix,
                      lmi_layer *L);
    bool gguf; /* load knows the GGUF names; false: no GGUF form */
    /* Floats of one layer's state part at position pos (fixed-size for
     * Mamba mixers; a KV cache grows with pos). */
    size_t (*state_floats)(const lmi_dims *d, lmi_state_part part, int64_t pos);
    /* What LongMamba's calibration reads of channel c: a row of A with N
     * entries (Mamba-1), or N = 0 and the channel's scalar A (Mamba-2:
     * a head).  NULL: the kind has no LongMamba channels. */
    void (*channel_A)(const lmi_dims *d, const lmi_layer *L, int64_t c, const float **A_row,
                      int64_t *N, double *A_head);
    /* The layer's linear-layer matrices that a load-time weight format
     * (LM_WEIGHTS_Q8_0) may replace: writes at most LMI_MAX_LINEARS
     * pointers into L (and short names for messages), returns how many. */
    size_t (*linears)(lmi_layer *L, lmi_weight **w, const char **names);
    /* Every weight of the layer's mixer that is present (data != NULL), in
     * a fixed order: at most LMI_MAX_MIXER_WEIGHTS entries, with a static
     * short name ("in_proj", "conv1d.bias", ...) and whether the backends
     * read it through lmi_linear (so a block type such as Q8_0 may hold
     * it); returns how many (lm_model_weight_info). */
    size_t (*weights)(const lmi_layer *L, const lmi_weight **w, const char **names, bool *linear);
} lmi_mixer_ops;

#define LMI_MAX_LINEARS 8
#define LMI_MAX_MIXER_WEIGHTS 16

extern const lmi_mixer_ops lmi_mixer_mamba1;   /* lib/arch/mamba1.c */
extern const lmi_mixer_ops lmi_mixer_mamba2;   /* lib/arch/mamba2.c */

/* The ops of a mixer kind, or NULL. */
const lmi_mixer_ops *lmi_mixer_find(lmi_mixer_kind kind);

typedef struct lmi_backend_vt lmi_backend_vt;

typedef struct lmi_mapping {
    void *addr;
    size_t size;
} lmi_mapping;

struct lm_model {
    lmi_dims dims;
    lm_dtype dtype;          /* storage dtype (of the largest tensors) */
    lm_weight_format weights; /* as loaded: LM_WEIGHTS_Q8_0 quantised the linears */
    int64_t n_params;
    uint64_t fingerprint;
    lmi_weight embed;        /* [V][d] */
    lmi_weight norm_f;       /* [d] */
    lmi_weight lm_head;      /* [V][d]; the embedding (same data) when tied */
    lmi_layer *layers;       /* [n_layer] */

    lmi_mapping *maps;       /* mmapped safetensors / GGUF files */
    size_t n_maps;
    void **owned;            /* converted or quantised tensors and A arrays (NULL: freed) */
    size_t n_owned, cap_owned;

    lm_backend backend;      /* CPU or CUDA, never AUTO */
    const lmi_backend_vt *vt;
    void *bk;                /* backend's per-model data (device weights) */
    void *cuda_module;       /* CUDA: this model's dlopen reference to the module */
    int32_t n_threads;
    int32_t device;
    lm_log_fn log_fn;
    void *log_user;
    lm_log_level log_level;
};

/* Logs through the model's (or session's) callback, if any. */
void lmi_log(lm_log_fn fn, void *user, lm_log_level max_level, lm_log_level level,
             const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---- calibration ------------------------------------------------------- */

struct lm_calibration {
    lm_arch arch;
    int64_t n_layer;
    int64_t n_channels;
    int64_t calib_length;
    int64_t n_windows;
    double clamp;
    lm_calib_agg agg;
    uint64_t fingerprint;
    int64_t n_buckets;
    int64_t *buckets;      /* [n_buckets] */
    double *log_decay;     /* [n_layer][n_channels] */
    float *thr;            /* [n_layer][n_buckets][n_channels] */
    double *a_log_scales;  /* [n_layer]: made under Mamba Modulation with these
                            * scales (Δ of the modulated model, decay with A');
                            * NULL: vanilla */
};

/* ---- the backend boundary ---------------------------------------------- */

/* LongMamba filter of one layer: channel c is filtered iff global[c];
 * a filtered channel keeps token t iff delta > tau[c] (strict). */
typedef struct lmi_filter {
    const uint8_t *global;   /* [n_channels], or NULL: no filtering in this layer */
    const float *tau;        /* [n_channels] */
} lmi_filter;

/* Receives post-softplus Δ of one layer for the chunk, row major
 * [n_tokens][n_channels] (Mamba-2: per head), host memory valid during
 * the call.  Used by calibration. */
typedef lm_status (*lmi_delta_sink)(void *ctx, int64_t layer, const float *delta,
                                    int64_t n_tokens, int64_t n_channels, lmi_err *e);

/* Token hook of a mode (DeciMamba's token selection is the first user):
 * in the layers it marks, the backend computes Δ explicitly, asks how many
 * tokens the layer keeps from the chunk's L, and when that is fewer than
 * L, scores every token by ||Δ_t||_2 over the channels (Mamba-2: heads),
 * asks for the kept indices and gathers those rows for every later step
 * of the model.  The backend owns the buffers; the mode owns the rule. */
typedef struct lmi_token_hook {
    const uint8_t *layers;     /* [n_layer]: 1 where the hook runs */
    int64_t keeps_last;        /* the last keeps_last tokens are always kept */
    const void *ctx;
    /* Tokens kept out of L (L: all, nothing is scored). */
    int64_t (*keeps)(const void *ctx, int64_t layer, int64_t L);
    /* Writes keeps(layer, L) indices, ascending, from scores [L];
     * scratch holds L entries. */
    lm_status (*select)(const void *ctx, int64_t layer, const float *scores, int64_t L,
                        int64_t *idx, int64_t *scratch, lmi_err *e);
} lmi_token_hook;

/* Tokens the hook keeps in `layer` out of L, or L where it does not run. */
static inline int64_t lmi_token_hook_keeps(const lmi_token_hook *h, int64_t layer, int64_t L)
{
    if (!h || !h->layers[layer]) return L;
    const int64_t k = h->keeps(h->ctx, layer, L);
    return k < L ? k : L;
}

/* One forward pass over a chunk of tokens, continuing from the session's
 * state and leaving the state after the chunk's last token.  The mode's
 * hooks (filters, tokens) are plain data and callbacks filled by
 * lmi_modes_prepare: backends never look at the mode itself. */
typedef struct lmi_forward {
    const int32_t *tokens;     /* validated < vocab */
    int64_t n_tokens;          /* >= 1 */
    int64_t n_out;             /* logits of the last n_out positions (after token selection) */
    float *logits;             /* [n_out][vocab] host, or NULL when n_out == 0 */
    const lmi_filter *filters; /* Δ hook: [n_layer] or NULL (vanilla) */
    const lmi_token_hook *tokens_hook; /* token hook, or NULL */
    lmi_delta_sink sink;       /* or NULL */
    void *sink_ctx;
    bool allow_tf32;
    /* Scale hooks, [n_layer] each or NULL (all 1): s_l multiplies Δ after
     * the softplus (Mamba-2: after the time_step_limit clamp) and after the
     * Δ hook's mask, where the scan reads it (MambaExtend); the sink and the
     * token hook see the unscaled Δ.  a_log_scale makes the scan use
     * A' = -exp(s_l * A_log) = -(-A)^s_l (Mamba Modulation). */
    const float *delta_scale;
    const float *a_log_scale;
} lmi_forward;

/* A' = -exp(s * A_log) from A = -exp(A_log), in double; A itself for s = 1. */
static inline float lmi_modulate_A(float A, double s)
{
    return s == 1.0 ? A : (float)-__builtin_exp(s * __builtin_log(-(double)A));
}

/* One sequence of a batched prefill piece (lmi_backend_vt.prefill_batch). */
typedef struct lmi_seq {
    struct lm_session *s;      /* continues from its state */
    const int32_t *tokens;     /* validated < vocab */
    int64_t n_tokens;          /* >= 1 */
    float *logits;             /* [vocab] host: the row of the last token, or NULL */
} lmi_seq;

struct lmi_backend_vt {
    const char *name;
    lm_status (*model_init)(struct lm_model *m, lmi_err *e);   /* upload weights */
    void (*model_free)(struct lm_model *m);
    lm_status (*session_init)(struct lm_session *s, lmi_err *e);
    void (*session_free)(struct lm_session *s);
    void (*session_reset)(struct lm_session *s);               /* zero the state */
    lm_status (*forward)(struct lm_session *s, const lmi_forward *f, lmi_err *e);
    /* State copy out/in, part by part (lmi_state_part; NULL: skip that
     * part): part p of every layer in turn, lmi_state_floats(m, p) floats. */
    lm_status (*state_read)(struct lm_session *s, float *const part[LMI_STATE_PARTS], lmi_err *e);
    lm_status (*state_write)(struct lm_session *s, const float *const part[LMI_STATE_PARTS],
                             lmi_err *e);
    /* One vanilla decode step for n >= 1 distinct sessions of this model,
     * reading the weights once for all of them; tokens [n] validated,
     * logits [n][vocab] host or NULL.  Optional: NULL makes
     * lm_session_decode_batch (and decode_sample's host path) call forward
     * once per session. */
    lm_status (*forward_batch)(struct lm_session *const *s, size_t n, const int32_t *tokens,
                               float *logits, bool allow_tf32, lmi_err *e);
    /* Optional: lm_session_decode_sample's step sampled where the logits
     * are (a device), by the header's rule with each session's sampler at
     * position pos + 1.  tokens [n] validated; next [n]; logits [n][vocab]
     * host, row i written iff want_logits[i] (NULL when none is).  On error
     * each state must be the one before the call (check before committing,
     * or put it back); positions are the caller's.  NULL: session code runs
     * the step into host rows and samples them with lmi_sample_row. */
    lm_status (*sample_batch)(struct lm_session *const *s, size_t n, const int32_t *tokens,
                              int32_t *next, float *logits, const uint8_t *want_logits,
                              lmi_err *e);
    /* Optional: a piece of lm_session_prefill_batch, n >= 1 sequences of
     * distinct sessions of this model without mode hooks, their tokens
     * packed into one pass (the projections over all of them at once),
     * each continuing from and leaving its own session's state.  owner
     * (one of the call's sessions, maybe not among seq) lends its scratch
     * and stream.  On error the states are unspecified: the caller puts
     * back its snapshot; positions are the caller's.  NULL: session code
     * runs forward per session. */
    lm_status (*prefill_batch)(struct lm_session *owner, const lmi_seq *seq, size_t n,
                               bool allow_tf32, lmi_err *e);
};

extern const lmi_backend_vt lmi_cpu_backend;

/* ---- the CUDA module (libongmamba-cuda.so) ------------------------------ */

/* The CUDA backend lives in a module that the library dlopens on first
 * use (lib/cuda_module.c), so that CPU programs never map cudart/cuBLAS.
 * The module exports exactly one symbol, LMI_CUDA_MODULE_ENTRY, returning
 * this table.  The module reads lm_model / lm_session / lmi_forward
 * directly, so LMI_CUDA_MODULE_VERSION must be bumped whenever this table,
 * the vtable or those structs change; the loader also compares their
 * sizes as a cheap guard against a module from another build. */
#define LMI_CUDA_MODULE_VERSION 7u /* 4: decode_sample in the vtable; 5: LMI_W_Q8_0 weights;
                                    * 6: scale hooks in lmi_forward;
                                    * 7: prefill_batch in the vtable */
#define LMI_CUDA_MODULE_ENTRY "lmi_cuda_module_v1"
#define LMI_CUDA_MODULE_FILE "libongmamba-cuda.so"
#define LMI_CUDA_MODULE_ENV "LONGMAMBA_CUDA_MODULE"

typedef struct lmi_cuda_module {
    uint32_t version;                  /* LMI_CUDA_MODULE_VERSION; first, always */
    uint32_t model_size, session_size, forward_size;  /* sizeof of the shared structs */
    const lmi_backend_vt *vt;          /* every architecture (the pipeline follows the mixers) */
    /* LM_OK and *n_devices > 0 when the CUDA runtime sees a device; else
     * LM_ERR_BACKEND_UNAVAILABLE naming the reason (no driver, driver
     * older than the runtime, no device). */
    lm_status (*device_status)(int32_t *n_devices, lmi_err *e);
} lmi_cuda_module;

typedef const lmi_cuda_module *(*lmi_cuda_entry_fn)(void);

/* An open reference to the module: each CUDA model holds its own (the
 * loader counts references; no global handle). */
typedef struct lmi_cuda_lib {
    void *handle;                      /* from dlopen */
    const lmi_cuda_module *mod;
    int32_t n_devices;
} lmi_cuda_lib;

/* Finds and loads the module, checks its interface and asks for a device;
 * on failure nothing stays open and e says why (LM_ERR_BACKEND_UNAVAILABLE). */
lm_status lmi_cuda_open(lmi_cuda_lib *cl, lmi_err *e);
void lmi_cuda_close(lmi_cuda_lib *cl);

/* Inside the module (cuda/), and in the GPU test programs that link the
 * CUDA objects statically. */
extern const lmi_backend_vt lmi_cuda_backend;

/* ---- sampling (lib/sample.c) ------------------------------------------- */

/* A session's sampler: lm_sampling_params as lm_session_set_sampling
 * checked them (all zero: greedy).  The rule is the header's. */
typedef struct lmi_sampler {
    float temperature;       /* <= 0: greedy */
    int32_t top_k;           /* 0 or >= vocab: every id */
    float top_p;             /* in (0, 1): nucleus; 0 or 1: off */
    uint64_t seed;
    uint32_t flags;          /* LM_SAMPLE_* */
} lmi_sampler;

/* The draw u in [0, 1) of (seed, position): rule step 4. */
double lmi_sample_uniform(uint64_t seed, int64_t position);

/* Samples one host row of vocab logits with sp at `position` (the
 * session's position after the step) into *out.  scratch: vocab entries,
 * unused (may be NULL) when greedy.  A NaN or infinite logit is
 * LM_ERR_NUMERIC naming its id; nothing else fails for valid arguments. */
lm_status lmi_sample_row(const float *logits, int64_t vocab, const lmi_sampler *sp,
                         int64_t position, int32_t *out, int64_t *scratch, lmi_err *e);

/* ---- sessions ---------------------------------------------------------- */

struct lm_session {
    const struct lm_model *model;
    int64_t chunk_size;
    uint32_t flags;
    lm_log_fn log_fn;
    void *log_user;
    lm_progress_fn progress;
    void *progress_user;

    int64_t pos;             /* tokens consumed since reset */
    int64_t length_hint;     /* 0 = none; else prompt end position (pos at set + total) */

    const struct lmi_mode_ops *mode; /* the session's mode (lib/modes.c) */
    void *mode_state;        /* the mode's own data, freed by mode->free */

    void *bk;                /* backend's per-session data (state, scratch, stream) */
    float *backup[LMI_STATE_PARTS]; /* state snapshot taken before a multi-chunk call */
    lmi_sampler sampler;     /* lm_session_set_sampling; zero: greedy */
    /* lm_session_decode_sample's host buffers, grown on demand; a batch
     * uses sessions[0]'s. */
    float *sample_rows;      /* [sample_cap][vocab] logits of the step */
    size_t sample_cap;
    int64_t *sample_ids;     /* [vocab] the sampler's scratch */
    lmi_err err;
};

/* Floats of a state part over all layers (at the session's position),
 * and where layer l's part starts in that array. */
size_t lmi_state_floats(const struct lm_model *m, lmi_state_part part);
size_t lmi_state_offset(const struct lm_model *m, int64_t layer, lmi_state_part part);

/* ---- modes (lib/modes.c, lib/mode/) -------------------------------------
 * A mode is one file in lib/mode/ implementing lmi_mode_ops, plus one row
 * in lib/modes.c's table.  Its public setter parses the caller's params,
 * builds its state and installs it with lmi_mode_install.  Per forward,
 * prepare turns the state and the call into hooks of lmi_forward (a Δ
 * filter per layer, a token hook); the backends see only those hooks, so
 * a new mode that is expressible through them touches no backend. */

typedef enum lmi_call {
    LMI_CALL_PREFILL = 0,      /* a prompt (any number of chunks) */
    LMI_CALL_DECODE = 1,       /* one generated token */
} lmi_call;

typedef struct lmi_mode_ops {
    lm_mode mode;
    const char *name;
    /* Fills f's hooks for a call; for a prefill, prompt_len is the length
     * the session reaches at the prompt's end (the length hint when set).
     * NULL: no hooks (vanilla). */
    lm_status (*prepare)(lm_session *s, void *state, lmi_call call, int64_t prompt_len,
                         lmi_forward *f);
    /* True when a prompt must reach the backend in one forward (a token
     * selection that is global over the prompt). */
    bool single_chunk;
    void (*free)(void *state);
} lmi_mode_ops;

extern const lmi_mode_ops lmi_mode_vanilla;   /* lib/modes.c */
extern const lmi_mode_ops lmi_mode_longmamba; /* lib/mode/longmamba.c */
extern const lmi_mode_ops lmi_mode_decimamba; /* lib/mode/decimamba.c */
extern const lmi_mode_ops lmi_mode_mambaextend; /* lib/mode/mambaextend.c */
extern const lmi_mode_ops lmi_mode_modulation;  /* lib/mode/modulation.c */

/* The row of a public mode value, or NULL. */
const lmi_mode_ops *lmi_mode_find(lm_mode mode);
/* Replaces the session's mode (freeing the old state) by ops with state. */
void lmi_mode_install(lm_session *s, const lmi_mode_ops *ops, void *state);
/* Fills f's hooks from the session's mode; vanilla leaves them NULL. */
lm_status lmi_modes_prepare(lm_session *s, lmi_call call, int64_t prompt_len, lmi_forward *f);
/* True when the session's mode needs each prefill call in one chunk. */
bool lmi_modes_single_chunk(const lm_session *s);
/* Frees the mode's state and returns the session to vanilla. */
void lmi_modes_free(lm_session *s);
/* Copies a caller params struct of any published size (at least
 * min_size) over dst (already holding the defaults). */
bool lmi_copy_params(void *dst, size_t dst_size, const void *src, uint32_t src_size,
                     size_t min_size);
/* Checks a caller's per-layer scales (n == n_layer, each finite and > 0;
 * LM_ERR_INVALID_ARGUMENT / LM_ERR_OUT_OF_RANGE naming `who` and the
 * layer) and returns them as floats in *out (lmi_free). */
lm_status lmi_layer_scales(const lm_model *m, const char *who, const double *scales, size_t n,
                           float **out, lmi_err *e);

/* LongMamba's part of a mode, for modes that compose with it (mode/longmamba.c). */
typedef struct lmi_longmamba lmi_longmamba;
/* Checks calib and params against the session's model as
 * lm_session_set_longmamba does (messages start with who).  a_log_scales
 * ([n_layer] or NULL) are the Modulation scales the calibration must have
 * been made under (lm_calib_params.a_log_scales), so that its channel
 * classification used A'. */
lm_status lmi_longmamba_new(lm_session *s, const char *who, const lm_calibration *calib,
                            const lm_longmamba_params *params, const double *a_log_scales,
                            lmi_longmamba **out);
/* Fills f->filters for a prefill of prompt_len tokens (none below the trigger). */
lm_status lmi_longmamba_prepare(lmi_longmamba *st, lmi_call call, int64_t prompt_len,
                                lmi_forward *f);
void lmi_longmamba_free(lmi_longmamba *st);

/* ---- LongMamba / DeciMamba policy (lib/policy.c) ----------------------- */

/* Default bucket list (tokens), LONGMAMBA.md §3. */
extern const int64_t lmi_default_buckets[];
extern const size_t lmi_n_default_buckets;

/* Index of the bucket nearest to S (ties to the smaller; beyond the last,
 * the last). */
int64_t lmi_bucket_index(const int64_t *buckets, int64_t n_buckets, int64_t S);

/* Per-window statistics of one channel (LONGMAMBA.md §2-3).  delta holds
 * the channel's L post-softplus values at stride `stride`.  First clamps
 * with sc (0 = off), then:
 *   *log_decay = Mamba-1: sum_t log(mean_n exp(delta_t * A_row[n])), N > 0
 *                Mamba-2: A_head * sum_t delta_t                    (N == 0)
 *   thr_out[j] = the threshold for buckets[j] (0 for buckets <= L).
 * All in double precision; scratch holds 2*L doubles. */
void lmi_channel_stats(const float *delta, int64_t L, int64_t stride, double sc,
                       const float *A_row, int64_t N, double A_head,
                       const int64_t *buckets, int64_t n_buckets, double *scratch,
                       double *log_decay, float *thr_out);

/* DeciMamba: K = int(max(min(L - R, budget), min_len)), at most L - R. */
int64_t lmi_deci_keep_count(int64_t L, int64_t R, double budget, int64_t min_len);
/* Indices (ascending) of the K top-scoring tokens among the first L - R,
 * then the last R tokens.  idx receives K + R entries; scratch L entries. */
lm_status lmi_deci_select(const float *scores, int64_t L, int64_t R, int64_t K, int64_t *idx,
                          int64_t *scratch, lmi_err *e);

/* ---- CPU kernels shared with the public scan (lib/cpu/) ---------------- */

typedef struct lmi_scan_m1 {
    int64_t L, E, N;
    const float *u;          /* [L][E] */
    const float *delta;      /* [L][E]: Δ, or raw dt when dt_softplus */
    bool dt_softplus;        /* Δ = softplus(delta + dt_bias) */
    const float *dt_bias;    /* [E] or NULL */
    const float *A;          /* [E][N] */
    const float *B;          /* [L] rows of ldbc floats, first N used */
    const float *C;          /* [L] rows of ldbc floats */
    int64_t ldbc;
    const float *D;          /* [E] or NULL */
    const float *z;          /* [L] rows of ldz floats, or NULL */
    int64_t ldz;
    const uint8_t *global;   /* [E] or NULL */
    const float *tau;        /* [E] */
    float *h;                /* [E][N] state, in/out */
    float *y;                /* [L][E] */
    float d_scale;           /* Δ *= d_scale after the filter (MambaExtend); 0: none */
} lmi_scan_m1;

/* Runs on n_threads threads (OpenMP when available). */
void lmi_cpu_scan_m1(const lmi_scan_m1 *a, int n_threads);

#endif /* LMI_INTERNAL_H */
