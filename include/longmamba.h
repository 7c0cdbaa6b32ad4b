/*
 * longmamba.h - the one public header of libongmamba.
 *
 * Run Mamba language models, and extend their context without training
 * through LongMamba (global-channel token filtering) or DeciMamba.
 *
 *   lm_model *model = NULL;
 *   char err[256];
 *   if (lm_model_load("mamba-130m-hf", NULL, &model, err, sizeof err) != LM_OK) {
 *       fprintf(stderr, "load: %s\n", err);
 *       return 1;
 *   }
 *   lm_model_info info = {.struct_size = sizeof info};
 *   lm_model_get_info(model, &info);
 *   float *logits = malloc(sizeof(float) * (size_t)info.vocab_size);
 *   lm_session *s = NULL;
 *   lm_session_create(model, NULL, &s, err, sizeof err);
 *   int32_t prompt[] = {510, 4320, 273};
 *   lm_session_prefill(s, prompt, 3, 1, logits, (size_t)info.vocab_size);
 *   int32_t next = argmax(logits);                 // or lm_session_decode_sample
 *   lm_session_decode(s, next, logits, (size_t)info.vocab_size);
 *   lm_session_free(s);
 *   lm_model_free(model);
 *
 * Thread model
 *   An lm_model is immutable after lm_model_load and may be shared by any
 *   number of threads and sessions at once.  An lm_session is used by one
 *   thread at a time (different sessions may run concurrently).  An
 *   lm_calibration is immutable and shareable like a model.
 *
 * Ownership
 *   Handles are created by lm_*_create / lm_*_load and released by the
 *   matching lm_*_free, which accepts NULL.  A session must be freed before
 *   its model; a calibration given to a session must outlive the session.
 *   Memory crosses the boundary only as caller-owned buffers with explicit
 *   lengths (counted in elements of the pointed-to type unless a name says
 *   bytes).  The library never keeps a pointer to a caller buffer after a
 *   call returns.
 *
 * Errors
 *   Every fallible call returns an lm_status.  Session calls record a
 *   message readable with lm_session_last_error().  Calls without a session
 *   take an optional (err, err_cap) buffer that receives the message (NUL
 *   terminated, truncated to err_cap).  On any error a session keeps the
 *   state it had before the call.  The library never aborts, exits or
 *   prints.
 *
 * Parameter structs
 *   Passed by pointer; the first field is struct_size; fill them with the
 *   matching *_init() function (or zero them and set struct_size): zero
 *   means default.  New fields are only ever appended.  Passing NULL means
 *   all defaults.
 */
#ifndef LONGMAMBA_H
#define LONGMAMBA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LM_API __declspec(dllimport)
#elif defined(LM_BUILDING_LIBRARY)
#define LM_API __attribute__((visibility("default")))
#else
#define LM_API
#endif

/* ---- version ----------------------------------------------------------- */

#define LM_VERSION_MAJOR 0
#define LM_VERSION_MINOR 2
#define LM_VERSION_PATCH 0
#define LM_VERSION_NUMBER (LM_VERSION_MAJOR * 10000 + LM_VERSION_MINOR * 100 + LM_VERSION_PATCH)

/* LM_VERSION_NUMBER of the library actually loaded. */
LM_API int32_t lm_version(void);
/* "MAJOR.MINOR.PATCH" of the library actually loaded (static string). */
LM_API const char *lm_version_string(void);

/* ---- status ------------------------------------------------------------ */

/* Values are pinned: never renumbered, only appended. */
typedef enum lm_status {
    LM_OK = 0,
    LM_ERR_INVALID_ARGUMENT = 1,   /* NULL pointer, bad size, bad parameter value */
    LM_ERR_NO_MEMORY = 2,          /* host or device allocation failed */
    LM_ERR_IO = 3,                 /* file cannot be opened, read, mapped or written */
    LM_ERR_FORMAT = 4,             /* malformed file: safetensors, JSON, state blob */
    LM_ERR_UNSUPPORTED = 5,        /* well-formed but not supported (dtype, architecture) */
    LM_ERR_SHAPE = 6,              /* tensor shape disagrees with the configuration */
    LM_ERR_MISSING = 7,            /* a required tensor, file or config field is absent */
    LM_ERR_BUFFER_TOO_SMALL = 8,   /* caller buffer smaller than required */
    LM_ERR_OUT_OF_RANGE = 9,       /* token id >= vocab, layer index out of range */
    LM_ERR_BACKEND = 10,           /* CUDA / cuBLAS failure (message has the CUDA text) */
    LM_ERR_BACKEND_UNAVAILABLE = 11, /* backend not compiled in or no device present */
    LM_ERR_MISMATCH = 12,          /* calibration or state belongs to another model */
    LM_ERR_ABORTED = 13,           /* the progress callback asked to stop */
    LM_ERR_NUMERIC = 14            /* NaN/Inf where finite values are required */
} lm_status;

/* Short static description of a status ("invalid argument", ...). */
LM_API const char *lm_status_str(lm_status status);

/* ---- enums ------------------------------------------------------------- */

typedef enum lm_backend {
    LM_BACKEND_AUTO = 0,  /* CUDA when compiled in and a device is present, else CPU */
    LM_BACKEND_CPU = 1,
    LM_BACKEND_CUDA = 2
} lm_backend;

typedef enum lm_arch {
    LM_ARCH_MAMBA1 = 1,
    LM_ARCH_MAMBA2 = 2,
    LM_ARCH_FALCON_MAMBA = 3 /* (0.3) Mamba-1 layers that RMS-normalise Δ, B and C */
} lm_arch;

/* Element types.  Model weights are F32, F16 or BF16; the rest (0.3) occur
 * in safetensors files read with lm_tensor_file_*. */
typedef enum lm_dtype {
    LM_DTYPE_F32 = 0,
    LM_DTYPE_F16 = 1,
    LM_DTYPE_BF16 = 2,
    LM_DTYPE_F64 = 3,
    LM_DTYPE_I64 = 4,
    LM_DTYPE_I32 = 5,
    LM_DTYPE_I16 = 6,
    LM_DTYPE_I8 = 7,
    LM_DTYPE_U8 = 8,
    LM_DTYPE_BOOL = 9
} lm_dtype;

/* Static lower-case name: "f32", "bf16", "i64", ... ("unknown" otherwise). (0.3) */
LM_API const char *lm_dtype_name(lm_dtype dtype);

typedef enum lm_log_level {
    LM_LOG_ERROR = 0,
    LM_LOG_WARN = 1,
    LM_LOG_INFO = 2,
    LM_LOG_DEBUG = 3
} lm_log_level;

/* Called from the thread running the call that logs.  msg has no newline. */
typedef void (*lm_log_fn)(void *user, lm_log_level level, const char *msg);

/* Progress of a long call: done out of total units (tokens).  Return
 * nonzero to stop: the call then returns LM_ERR_ABORTED and the session
 * keeps the state it had before the call. */
typedef int (*lm_progress_fn)(void *user, int64_t done, int64_t total);

/* 1 if the backend is compiled in and usable on this machine, else 0.
 * LM_BACKEND_AUTO always reports 1.  (The reason: lm_backend_status.) */
LM_API int32_t lm_backend_available(lm_backend backend);
/* Whether the backend is usable, and why not: LM_OK, or
 * LM_ERR_BACKEND_UNAVAILABLE with the reason in err (CUDA: module
 * libongmamba-cuda.so not found or not loadable, with the loader's message;
 * no CUDA driver or one too old; no device).  LM_BACKEND_AUTO always
 * returns LM_OK and err names the backend it would pick ("auto: cpu
 * (reason)").  Asking about CUDA or AUTO loads the CUDA module for the
 * check (README: "CUDA backend").  err (may be NULL) receives at most cap
 * bytes including the NUL.  LM_ERR_INVALID_ARGUMENT for an unknown
 * backend.  Added after 0.2.0 (map node LONGMAMBA_0.3). */
LM_API lm_status lm_backend_status(lm_backend backend, char *err, size_t cap);
/* Static name: "auto", "cpu", "cuda". */
LM_API const char *lm_backend_name(lm_backend backend);

/* ---- model ------------------------------------------------------------- */

typedef struct lm_model lm_model;

/* How the model holds its weights in memory (lm_model_params.weights). */
typedef enum lm_weight_format {
    /* Every tensor in its stored type (F32, F16, BF16), read in place. */
    LM_WEIGHTS_AS_STORED = 0,
    /* The matrices of the linear layers (in_proj, x_proj, out_proj, and
     * lm_head unless tied to the embedding) quantised at load to 8-bit
     * blocks in GGML's Q8_0 layout: per 32 inputs a binary16 scale
     * d = max|w| / 127 and 32 int8 q = round_to_nearest_even(w / d),
     * |q| <= 127 (README: "8-bit weights").  The embedding, dt_proj and
     * every vector stay as stored; so does a matrix whose input size is
     * not a multiple of 32.  Activations stay fp32.  A CUDA model gets
     * these values widened (no memory saved there).  Added after 0.2.0. */
    LM_WEIGHTS_Q8_0 = 1
} lm_weight_format;

typedef struct lm_model_params {
    uint32_t struct_size;
    lm_backend backend;      /* default AUTO */
    int32_t n_threads;       /* CPU threads; 0 = number of online cores.  Bounds the
                                threads the library starts itself in each call (its
                                parallel loops, the scans, calibration's OpenMP loop):
                                with 1, a call starts none.  Not the BLAS library's:
                                OpenBLAS runs the fp32 GEMMs/GEMVs (prefill chunks,
                                F32 weights) on its own pool, whose size is
                                process-wide (OPENBLAS_NUM_THREADS, or
                                openblas_set_num_threads(), which the library never
                                calls: it would change every BLAS user in the process
                                and race with other models' calls); its default is
                                every core, even for n_threads 1.  For n threads in
                                all, set both (README: "Threads and ownership"). */
    int32_t device;          /* CUDA device ordinal; default 0 */
    lm_log_fn log_fn;        /* NULL = no logging */
    void *log_user;
    lm_log_level log_level;  /* most verbose level delivered; default ERROR */
    lm_weight_format weights; /* default LM_WEIGHTS_AS_STORED (added after 0.2.0) */
} lm_model_params;

LM_API void lm_model_params_init(lm_model_params *params);

/* Loads a model directory (config.json + model.safetensors, or shards with
 * model.safetensors.index.json) in Hugging Face or mamba_ssm naming, or a
 * GGUF file (a regular file named *.gguf or starting with the GGUF magic)
 * as llama.cpp's convert_hf_to_gguf.py writes Mamba-1 / Mamba-2 models,
 * with F32, F16 or BF16 tensors, and Q8_0 for the matrices of linear
 * layers (embedding, in_proj, x_proj, dt_proj, out_proj, output), used in
 * place as LM_WTYPE_Q8_0 with no requantisation (0.3).  A Q8_0 norm, conv,
 * A, D or bias, and other ggml types, are LM_ERR_UNSUPPORTED naming the
 * tensor and its type.
 * params may be NULL.  On failure *out is NULL and err holds the reason. */
LM_API lm_status lm_model_load(const char *dir, const lm_model_params *params,
                               lm_model **out, char *err, size_t err_cap);
LM_API void lm_model_free(lm_model *model);

typedef struct lm_model_info {
    uint32_t struct_size;    /* set by the caller; fields past it are not written */
    lm_arch arch;
    lm_dtype dtype;          /* storage dtype of the checkpoint's weights (its embedding's;
                                F32 for a Q8_0 embedding: lm_model_weight_info has each
                                tensor's type) */
    lm_backend backend;      /* backend the model runs on (never AUTO) */
    int64_t d_model;
    int64_t d_inner;
    int64_t d_state;
    int64_t d_conv;
    int64_t dt_rank;         /* Mamba-1 */
    int64_t n_layer;
    int64_t vocab_size;      /* rows of the embedding (padded vocabulary) */
    int64_t n_heads;         /* Mamba-2: heads; Mamba-1: 0 */
    int64_t head_dim;        /* Mamba-2 */
    int64_t n_groups;        /* Mamba-2 */
    int64_t n_channels;      /* LongMamba channels per layer: d_inner (M1) or n_heads (M2) */
    int64_t n_params;        /* parameters, counting a tied head once */
    int32_t tied_embeddings; /* 1 if lm_head is the embedding */
    int32_t n_threads;
    uint64_t fingerprint;    /* identifies the weights; calibrations record it */
    lm_weight_format weights; /* as loaded (lm_model_params.weights); added after 0.2.0 */
} lm_model_info;

LM_API lm_status lm_model_get_info(const lm_model *model, lm_model_info *info);

/* ---- the weights as the model holds them (0.3) ------------------------- */

/* Host storage type of one weight tensor. */
typedef enum lm_weight_type {
    LM_WTYPE_F32 = 0,
    LM_WTYPE_F16 = 1,
    LM_WTYPE_BF16 = 2,
    LM_WTYPE_Q8_0 = 3    /* GGML's Q8_0: per 32 values a binary16 scale and 32 int8 (34 bytes) */
} lm_weight_type;

/* Static name: "F32", "F16", "BF16", "Q8_0" ("unknown" otherwise).  (0.3) */
LM_API const char *lm_weight_type_name(lm_weight_type type);

typedef struct lm_weight_info {
    uint32_t struct_size;    /* set by the caller; fields past it are not written */
    const char *name;        /* static: "embedding", "norm_f", "lm_head"; in a layer "norm",
                                "in_proj", "in_proj.bias", "conv1d", "conv1d.bias", "x_proj",
                                "dt_proj", "dt_bias", "A", "D", "gated_norm", "out_proj",
                                "out_proj.bias" */
    int64_t layer;           /* the layer, or -1 for embedding, norm_f, lm_head */
    lm_weight_type type;     /* as held in host memory (after lm_model_params.weights) */
    int32_t linear;          /* 1: a linear layer's matrix (may be Q8_0) */
    int64_t rows, cols;      /* matrices [out][in]; vectors 1 x n; conv1d [channels][K];
                                A of Mamba-1 [d_inner][d_state] */
    uint64_t bytes;          /* host bytes of its data */
    int32_t mapped;          /* 1: read in place from the model file's read-only mapping
                                (pages shared with the page cache); 0: memory the model
                                allocated (converted, quantised, unaligned or derived) */
    int32_t shared;          /* 1: the same data as an earlier entry (lm_head tied to the
                                embedding): not to be counted twice */
} lm_weight_info;

/* Number of weight tensors the model holds (the entries of
 * lm_model_weight_info): embedding, norm_f, lm_head (listed even when
 * tied), then per layer its norm and its mixer's tensors that are present.
 * LM_ERR_INVALID_ARGUMENT for a NULL argument.  (0.3) */
LM_API lm_status lm_model_weight_count(const lm_model *model, size_t *count, char *err,
                                       size_t err_cap);
/* Entry `index` (< lm_model_weight_count) in the order above: what the
 * host holds (a CUDA model's device copies are not described).
 * LM_ERR_INVALID_ARGUMENT for NULL or a struct_size below the 0.3 struct's
 * first two fields, LM_ERR_OUT_OF_RANGE for an index past the list.  (0.3) */
LM_API lm_status lm_model_weight_info(const lm_model *model, size_t index, lm_weight_info *info,
                                      char *err, size_t err_cap);

/* ---- calibration (LongMamba step 1 and 2 statistics) ------------------- */

typedef struct lm_calibration lm_calibration;

typedef enum lm_calib_agg {
    LM_CALIB_AGG_MAX = 0,    /* elementwise max over windows (authors' default) */
    LM_CALIB_AGG_MEAN = 1    /* elementwise arithmetic mean over windows */
} lm_calib_agg;

typedef struct lm_calib_params {
    uint32_t struct_size;
    lm_calib_agg aggregation;  /* default MAX */
    double clamp;              /* sc in [0, 0.2]: clamp Δ to its top-sc value; 0 = off */
    const int64_t *buckets;    /* ascending prompt lengths; NULL = LongMamba's list (1k..192k) */
    size_t n_buckets;
    lm_progress_fn progress;   /* per window */
    void *progress_user;
    /* Mamba Modulation scales (one per layer, finite, > 0) or NULL: the
     * windows run modulated (A' = -exp(s_l A_log) in every layer) and the
     * log-decays use A', so that the calibration classifies LongMamba's
     * channels of the modulated model (lm_modulation_params.longmamba
     * needs one made with the same scales; lm_session_set_longmamba and
     * MambaExtend refuse it).  Saved with the calibration.  (0.3) */
    const double *a_log_scales;
    size_t n_a_log_scales;
} lm_calib_params;

LM_API void lm_calib_params_init(lm_calib_params *params);

/* Runs vanilla prefills over n_windows token windows (window i has
 * lengths[i] tokens) and computes per layer and channel the cumulative
 * log-decay and the per-bucket token-filter thresholds. */
LM_API lm_status lm_calibrate(const lm_model *model, const int32_t *const *windows,
                              const size_t *lengths, size_t n_windows,
                              const lm_calib_params *params, lm_calibration **out,
                              char *err, size_t err_cap);
/* Saves as safetensors with metadata (fingerprint, lengths, clamp, aggregation). */
LM_API lm_status lm_calibration_save(const lm_calibration *calib, const char *path,
                                     char *err, size_t err_cap);
/* Loads a calibration file.  If model is not NULL the file must belong to it
 * (LM_ERR_MISMATCH otherwise). */
LM_API lm_status lm_calibration_load(const char *path, const lm_model *model,
                                     lm_calibration **out, char *err, size_t err_cap);
LM_API void lm_calibration_free(lm_calibration *calib);

typedef struct lm_calibration_info {
    uint32_t struct_size;
    lm_arch arch;
    int64_t n_layer;
    int64_t n_channels;        /* per layer */
    int64_t calib_length;      /* longest calibration window, tokens */
    int64_t n_windows;
    int64_t n_buckets;
    double clamp;
    lm_calib_agg aggregation;
    uint64_t fingerprint;      /* of the model it was computed on */
} lm_calibration_info;

LM_API lm_status lm_calibration_get_info(const lm_calibration *calib, lm_calibration_info *info);
/* Bucket lengths, n_buckets entries. */
LM_API lm_status lm_calibration_get_buckets(const lm_calibration *calib, int64_t *out, size_t cap);
/* Natural log of each channel's cumulative decay over the calibration
 * length, layer `layer`: n_channels doubles. */
LM_API lm_status lm_calibration_get_log_decay(const lm_calibration *calib, int64_t layer,
                                              double *out, size_t cap);
/* Thresholds thr[bucket][c] of layer `layer` (unscaled), n_channels floats. */
LM_API lm_status lm_calibration_get_thresholds(const lm_calibration *calib, int64_t layer,
                                               int64_t bucket, float *out, size_t cap);

/* Step 1: channel c of layer l is global iff log_decay[l][c] > log(theta).
 * mask receives n_layer * n_channels bytes (1 global, 0 local), layer
 * major; counts (may be NULL) receives n_layer global-channel counts.
 * theta must be finite and > 0. */
LM_API lm_status lm_classify_channels(const lm_calibration *calib, double theta,
                                      uint8_t *mask, size_t mask_cap,
                                      int64_t *counts, size_t counts_cap,
                                      char *err, size_t err_cap);

/* ---- the filtered selective scan, on its own --------------------------- */

/* Mamba-1 selective scan of one sequence, token-major layout:
 *   u, delta/dt, z, y : [length][channels]
 *   B, C              : [length][state_size]
 *   A                 : [channels][state_size]  (A = -exp(A_log))
 *   D, dt_bias, thresholds : [channels];  global_mask : [channels] bytes
 *   state_in, state_out    : [channels][state_size]
 * For each token t and channel e:
 *   d   = delta_is_dt ? softplus(dt[t][e] + dt_bias[e]) : delta[t][e]
 *   if global_mask && global_mask[e] && !(d > thresholds[e])  d = 0
 *   h[e][n] = exp(d*A[e][n]) * h[e][n] + d * B[t][n] * u[t][e]
 *   y[t][e] = (sum_n h[e][n]*C[t][n] + D[e]*u[t][e]) * (z ? silu(z[t][e]) : 1)
 * Optional inputs (NULL allowed): z, D, dt_bias, global_mask (no filtering),
 * thresholds (required when global_mask is given), state_in (zeros),
 * state_out.  state_in and state_out may alias. */
typedef struct lm_scan_args {
    uint32_t struct_size;
    int64_t length;
    int64_t channels;
    int64_t state_size;
    const float *u;
    const float *delta;        /* post-softplus Δ, or raw dt when delta_is_dt */
    int32_t delta_is_dt;       /* 1: apply softplus(dt + dt_bias) inside the scan */
    const float *dt_bias;
    const float *A;
    const float *B;
    const float *C;
    const float *D;
    const float *z;
    const float *thresholds;
    const uint8_t *global_mask;
    const float *state_in;
    float *state_out;
    float *y;
    int32_t n_threads;         /* 0 = all cores */
} lm_scan_args;

LM_API void lm_scan_args_init(lm_scan_args *args);
LM_API lm_status lm_scan_filtered(const lm_scan_args *args, char *err, size_t err_cap);

/* ---- sessions ---------------------------------------------------------- */

typedef struct lm_session lm_session;

typedef enum lm_mode {
    LM_MODE_VANILLA = 0,
    LM_MODE_LONGMAMBA = 1,
    LM_MODE_DECIMAMBA = 2,
    LM_MODE_MAMBAEXTEND = 3,   /* (0.3) lm_session_set_mambaextend */
    LM_MODE_MODULATION = 4     /* (0.3) lm_session_set_modulation */
} lm_mode;

enum {
    LM_SESSION_ALLOW_TF32 = 1u << 0  /* CUDA, fp32 models: TF32 tensor-core GEMMs */
};

typedef struct lm_session_params {
    uint32_t struct_size;
    int64_t chunk_size;      /* prefill tokens per chunk; 0 = default (CPU 512, CUDA 16384) */
    uint32_t flags;          /* LM_SESSION_* */
    lm_log_fn log_fn;        /* NULL = the model's */
    void *log_user;
    lm_progress_fn progress; /* prefill progress, per chunk */
    void *progress_user;
} lm_session_params;

LM_API void lm_session_params_init(lm_session_params *params);

/* A new session in vanilla mode with zero state.  params may be NULL. */
LM_API lm_status lm_session_create(const lm_model *model, const lm_session_params *params,
                                   lm_session **out, char *err, size_t err_cap);
LM_API void lm_session_free(lm_session *session);
/* Message of the last failed call on this session ("" if none). */
LM_API const char *lm_session_last_error(const lm_session *session);

typedef struct lm_longmamba_params {
    uint32_t struct_size;
    double theta;            /* global iff decay > theta; 0 = default (Mamba-1 1e-3, Mamba-2 5e-2) */
    double threshold_scale;  /* b: tau = b * thr; 0 = default 1.0; negative is an error */
    int64_t trigger_length;  /* filter prefills of >= this many tokens; 0 = 1.5 x calib length */
} lm_longmamba_params;

LM_API void lm_longmamba_params_init(lm_longmamba_params *params);
/* The theta that 0 stands for on an architecture; 0.0 for an unknown one. (0.3) */
LM_API double lm_longmamba_default_theta(lm_arch arch);

typedef struct lm_decimamba_params {
    uint32_t struct_size;
    const int32_t *layers;   /* decimating layers, in order; NULL = the middle layer */
    size_t n_layers;
    int64_t l_base;          /* default 2000 */
    double beta;             /* default 1.0; layer s in the list keeps l_base * beta^s */
    int64_t min_len;         /* default 20 */
    int64_t protect;         /* last tokens always kept (R); 0 = default 1 */
} lm_decimamba_params;

LM_API void lm_decimamba_params_init(lm_decimamba_params *params);

/* MambaExtend (0.3): at prefill, layer l's Δ = s_l * softplus(...) (for
 * Mamba-2 after the time_step_limit clamp).  With a LongMamba calibration
 * its filter runs too, deciding on the unscaled Δ; the kept Δ is scaled. */
typedef struct lm_mambaextend_params {
    uint32_t struct_size;
    const double *scales;    /* s_l, one per layer (n_scales == n_layer), finite and > 0 */
    size_t n_scales;
    const lm_calibration *longmamba; /* NULL: no LongMamba; else borrowed like
                                        lm_session_set_longmamba's (a vanilla calibration) */
    const lm_longmamba_params *longmamba_params; /* NULL: LongMamba's defaults */
} lm_mambaextend_params;

/* Mamba Modulation (0.3): at prefill, layer l runs with A' = -exp(s_l *
 * A_log) = -|A|^s_l (every entry of Mamba-1's A, every head of Mamba-2).
 * With LongMamba, the calibration must have been made with
 * lm_calib_params.a_log_scales equal to these scales (its channel
 * classification uses A'), else LM_ERR_MISMATCH. */
typedef struct lm_modulation_params {
    uint32_t struct_size;
    const double *scales;    /* s_l, one per layer (n_scales == n_layer), finite and > 0 */
    size_t n_scales;
    const lm_calibration *longmamba; /* NULL: no LongMamba; else borrowed */
    const lm_longmamba_params *longmamba_params; /* NULL: LongMamba's defaults */
} lm_modulation_params;

/* (0.3) */
LM_API void lm_mambaextend_params_init(lm_mambaextend_params *params);
LM_API void lm_modulation_params_init(lm_modulation_params *params);

/* Mode selection; takes effect from the next prefill.  Decode steps are
 * always vanilla (every mode's prefill-only change is a METHODS.md choice).
 * The calibration is borrowed and must match the model. */
LM_API lm_status lm_session_set_vanilla(lm_session *session);
LM_API lm_status lm_session_set_longmamba(lm_session *session, const lm_calibration *calib,
                                          const lm_longmamba_params *params);
LM_API lm_status lm_session_set_decimamba(lm_session *session, const lm_decimamba_params *params);
/* (0.3) params are required (the scales).  A NULL scales or n_scales other
 * than n_layer: LM_ERR_INVALID_ARGUMENT; a scale that is not finite and > 0
 * (also as a float): LM_ERR_OUT_OF_RANGE naming the layer; a calibration of
 * another model, or made under other Modulation scales: LM_ERR_MISMATCH.
 * On an error the session keeps its mode.  The scales are copied. */
LM_API lm_status lm_session_set_mambaextend(lm_session *session,
                                            const lm_mambaextend_params *params);
LM_API lm_status lm_session_set_modulation(lm_session *session, const lm_modulation_params *params);

/* ---- MambaExtend / Modulation scales by SPSA (0.3) ----------------------
 * lm_scales_calibrate finds per-layer scales for LM_MODE_MAMBAEXTEND or
 * LM_MODE_MODULATION by zeroth-order SPSA (forward passes only), with the
 * schedule of MambaExtend's Pile calibration:
 *   s0_l ~ U[0.75, 1);  for k = 0 .. K-1:
 *     c_k = 0.1 / (1 + k)^0.1,  a_k = 1e-3 cos(k pi / 198),
 *     delta_l = +-1 (Rademacher),  s+- = max(s +- c_k delta, 0.01),
 *     g = (f(s+) - f(s-)) / (2 c_k) * delta,  s = max(s - a_k g, 0.01)
 * f(s) is the mean next-token cross-entropy (nats) over the windows (every
 * position of every window scored, each window one prompt from zero state)
 * with the mode on at scales s.  The draws come from x = seed, then per
 * draw x += 0x9E3779B97F4A7C15 and z = splitmix64's mix of x (the sampling
 * rule's step 4): first one uniform (z >> 11) * 2^-53 per layer for s0,
 * then per iteration one draw per layer, delta_l = +1 when z's top bit is
 * set.  The same model, backend, windows and seed give bit-identical
 * scales.  Windows are text held out from any evaluation, at the target
 * length (the longest window is recorded as such). */
typedef struct lm_scales lm_scales;

typedef struct lm_spsa_params {
    uint32_t struct_size;
    int32_t iterations;      /* K; 0 = 50 (MambaExtend) / 30 (Modulation); < 0 is an error */
    uint64_t seed;           /* s0 and the Rademacher draws; default 0 */
    lm_progress_fn progress; /* after each iteration (done, total = K); nonzero stops */
    void *progress_user;
    /* MambaExtend only: calibrate with LongMamba's filter on (METHODS.md §6),
     * as lm_mambaextend_params.longmamba; Modulation with it is
     * LM_ERR_UNSUPPORTED (its calibration depends on the scales). */
    const lm_calibration *longmamba;
    const lm_longmamba_params *longmamba_params;
} lm_spsa_params;

typedef struct lm_scales_info {
    uint32_t struct_size;    /* set by the caller; fields past it are not written */
    lm_mode mode;            /* LM_MODE_MAMBAEXTEND or LM_MODE_MODULATION */
    lm_arch arch;
    int64_t n_layer;
    int64_t target_length;   /* longest calibration window, tokens */
    int64_t n_windows;
    int32_t iterations;
    uint64_t seed;
    double loss_initial;     /* f(s0) */
    double loss_final;       /* f at the returned scales */
    int32_t with_longmamba;  /* 1: calibrated with LongMamba's filter on */
    uint64_t fingerprint;    /* of the model */
} lm_scales_info;

/* (0.3) */
LM_API void lm_spsa_params_init(lm_spsa_params *params);
/* Runs SPSA (above) with an internal session of model.  Bad arguments:
 * LM_ERR_INVALID_ARGUMENT (mode, windows, a window of < 2 tokens),
 * LM_ERR_OUT_OF_RANGE (a token id, iterations < 0); the progress callback's
 * stop: LM_ERR_ABORTED.  On failure *out is NULL. */
LM_API lm_status lm_scales_calibrate(const lm_model *model, lm_mode mode,
                                     const int32_t *const *windows, const size_t *lengths,
                                     size_t n_windows, const lm_spsa_params *params,
                                     lm_scales **out, char *err, size_t err_cap);
/* Saves as safetensors: the scales and s0, with the model fingerprint, the
 * mode, the target length and the SPSA settings and losses as metadata. */
LM_API lm_status lm_scales_save(const lm_scales *scales, const char *path, char *err,
                                size_t err_cap);
/* Loads a scales file; with a model it must belong to that model
 * (LM_ERR_MISMATCH otherwise); a malformed file is LM_ERR_FORMAT. */
LM_API lm_status lm_scales_load(const char *path, const lm_model *model, lm_scales **out,
                                char *err, size_t err_cap);
LM_API void lm_scales_free(lm_scales *scales);
LM_API lm_status lm_scales_get_info(const lm_scales *scales, lm_scales_info *info);
/* The scales (for lm_*_params.scales) and/or s0, n_layer doubles each;
 * either pointer may be NULL (not both). */
LM_API lm_status lm_scales_get(const lm_scales *scales, double *out, double *initial,
                               size_t cap);

/* Total prompt length the next prefill calls will add up to (tokens after
 * the current position).  LongMamba picks its length bucket from it when a
 * prompt is fed in several prefill calls.  0 clears it: each prefill call's
 * own length (plus the tokens already in the session) decides. */
LM_API lm_status lm_session_set_length_hint(lm_session *session, int64_t total_tokens);

/* Feeds n_tokens tokens.  Logits of the last n_logits positions (0 = none,
 * n_tokens = all) are written to logits as [n_logits][vocab_size] floats;
 * logits_cap counts floats.  Prompts of any length run in chunks whose
 * memory does not grow with the prompt.  In DeciMamba mode n_logits must
 * not exceed the protected token count. */
LM_API lm_status lm_session_prefill(lm_session *session, const int32_t *tokens, size_t n_tokens,
                                    size_t n_logits, float *logits, size_t logits_cap);
/* One token; logits (vocab_size floats) may be NULL. */
LM_API lm_status lm_session_decode(lm_session *session, int32_t token, float *logits,
                                   size_t logits_cap);
/* One decode step for n sessions of the same model at once: sessions[i]
 * consumes tokens[i], and logits (NULL, or room for n x vocab_size floats;
 * logits_cap counts floats) receives row i for sessions[i].  The result is
 * that of n lm_session_decode calls (up to rounding), but a backend may
 * read the weights once for the whole batch (the CPU and CUDA backends
 * do, for Mamba-1 and Mamba-2).  The
 * sessions must be distinct and not in use by another thread while the
 * call runs; their modes do not matter (decode steps are vanilla).  n == 0
 * does nothing.  Errors are recorded in sessions[0]'s last error; an
 * argument error changes no session.  If the backend fails, no position
 * advances and the sessions' states are unspecified: reset them or load a
 * saved state. */
LM_API lm_status lm_session_decode_batch(lm_session *const *sessions, size_t n,
                                         const int32_t *tokens, float *logits,
                                         size_t logits_cap);
/* Prefill of n prompts at once: sessions[i] (distinct, one model, each at
 * its own position) consumes tokens[i][0..n_tokens[i]), as
 * lm_session_prefill(sessions[i], tokens[i], n_tokens[i], 1, ...) would;
 * logits (NULL, or room for n x vocab_size floats; logits_cap counts
 * floats) receives row i = the logits of sessions[i]'s last token.  The
 * prompts run together, packed back to back without padding: a backend
 * runs the matrix products over all of their tokens at once (the CPU and
 * CUDA backends do), in pieces of at most C tokens in all, C the largest
 * chunk_size among those sessions (a prompt may span pieces; sessions[0]
 * holds the scratch).  Results equal n lm_session_prefill calls up to
 * rounding.
 * A session whose mode acts on this prompt (LongMamba above its trigger
 * length, DeciMamba, MambaExtend, Modulation) runs alone through
 * lm_session_prefill's path; length hints and progress callbacks work per
 * session as there.  Each prompt is
 * checked as by lm_session_prefill (empty, token ids, length hint): the
 * message names the session ("sessions[i]: ...").  n == 0 does nothing.
 * Errors are recorded in sessions[0]'s last error.  On any error,
 * including an abort from a progress callback, every session keeps the
 * state and position it had before the call.  (0.3) */
LM_API lm_status lm_session_prefill_batch(lm_session *const *sessions, size_t n,
                                          const int32_t *const *tokens, const size_t *n_tokens,
                                          float *logits, size_t logits_cap);
/* Back to zero state and position 0; the mode and the sampler are kept, the
 * length hint cleared. */
LM_API lm_status lm_session_reset(lm_session *session);
/* Tokens consumed since creation or the last reset. */
LM_API int64_t lm_session_position(const lm_session *session);

/* Recurrent state as an opaque, versioned byte blob tied to the model's
 * fingerprint: fork or resume a conversation. */
LM_API lm_status lm_session_state_size(const lm_session *session, size_t *bytes);
LM_API lm_status lm_session_state_save(lm_session *session, void *buf, size_t buf_bytes,
                                       size_t *written);
LM_API lm_status lm_session_state_load(lm_session *session, const void *buf, size_t buf_bytes);

/* ---- sampling the next token (0.3) --------------------------------------
 * lm_session_decode_sample picks each session's next token from the step's
 * logits row l[0..V) by one rule, the same on every backend:
 *
 *   greedy (temperature <= 0): the argmax of l, ties to the lowest id.
 *   Otherwise, with T = temperature:
 *   1. candidates: every id, or the top_k highest logits when
 *      0 < top_k < V; ordered by logit descending, ties lower id first
 *      (the same order picks the top_k);
 *   2. w_i = exp((l_i - l_max) / T) in double, l_max the row's maximum;
 *   3. if 0 < top_p < 1: keep the shortest prefix of the candidates whose
 *      cumulative w reaches (>=) top_p * W, W the sum of the candidates' w
 *      (at least one candidate is kept);
 *   4. u = (splitmix64(seed ^ (p * 0x9E3779B97F4A7C15)) >> 11) * 0x1p-53,
 *      in [0, 1), with p the session's position after the step
 *      (lm_session_position before the call, plus 1) and, in uint64_t
 *      arithmetic (mod 2^64),
 *        splitmix64(x): z = x + 0x9E3779B97F4A7C15;
 *                       z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
 *                       z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
 *                       return z ^ (z >> 31);
 *   5. the token: the first kept candidate whose cumulative w exceeds (>)
 *      u * (the sum of the kept w); if rounding leaves none, the last kept
 *      candidate with w > 0.
 *
 * Sums are in double, in an order a backend chooses, so backends may
 * disagree on a draw within rounding distance of a boundary.  The token
 * depends only on the row, the parameters and (seed, p): a session
 * restored from a state blob, or a fork of one, draws the same tokens. */

enum {
    LM_SAMPLE_RETURN_LOGITS = 1u << 0  /* lm_session_decode_sample returns this session's row */
};

typedef struct lm_sampling_params {
    uint32_t struct_size;   /* sizeof, set by lm_sampling_params_init */
    float temperature;      /* <= 0: greedy (argmax; ties: the lowest id).  Default 0 */
    int32_t top_k;          /* keep the k highest logits; 0 (or >= vocab) = all.  Default 0 */
    float top_p;            /* nucleus: keep the smallest prefix (by descending probability)
                               whose mass >= top_p; 0 or 1 = off.  Default 1 */
    uint64_t seed;          /* the draw at position p is a function of (seed, p) only.  Default 0 */
    uint32_t flags;         /* LM_SAMPLE_*.  Default 0 */
} lm_sampling_params;

/* Defaults: greedy, no truncation, seed 0, no flags.  (0.3) */
LM_API void lm_sampling_params_init(lm_sampling_params *params);
/* The session's sampler for lm_session_decode_sample; params NULL: the
 * defaults (greedy).  Kept across lm_session_reset and state loads.  On an
 * error the sampler is unchanged: struct_size below the size of the 0.3
 * struct or unknown flag bits give LM_ERR_INVALID_ARGUMENT; a NaN or
 * infinite temperature, top_k < 0, top_p NaN or outside [0, 1] give
 * LM_ERR_OUT_OF_RANGE; the message names the field.  (0.3) */
LM_API lm_status lm_session_set_sampling(lm_session *session, const lm_sampling_params *params);
/* One decode step for n distinct sessions of one model: sessions[i]
 * consumes tokens[i] and next[i] receives the token drawn, by the rule
 * above, from the step's logits with sessions[i]'s sampler.  logits
 * ([n][vocab_size] floats, logits_cap counts floats) is needed (non-NULL,
 * logits_cap >= n x vocab_size) only when some session has
 * LM_SAMPLE_RETURN_LOGITS, and only those sessions' rows are written.
 * Sessions, tokens and n are checked as by lm_session_decode_batch (n == 0
 * does nothing), errors are recorded in sessions[0]'s last error.  A NaN
 * or infinite logit in any row gives LM_ERR_NUMERIC naming the session
 * ("sessions[i]: ...").  On any error no session moves: positions and
 * states are those before the call (on the host path each state is copied
 * before the step and put back on failure; only a backend that also fails
 * to put it back leaves the states unspecified, as lm_session_decode_batch
 * does); next and logits may have been written.  (0.3) */
LM_API lm_status lm_session_decode_sample(lm_session *const *sessions, size_t n,
                                          const int32_t *tokens, int32_t *next, float *logits,
                                          size_t logits_cap);

/* ---- tokenizer (Hugging Face tokenizer.json, byte-level BPE) ---------- */

typedef struct lm_tokenizer lm_tokenizer;

/* Loads tokenizer.json from a file path or from a model directory that
 * contains one.  Immutable and shareable across threads once loaded.
 * Ids are those of Hugging Face `tokenizers` (Tokenizer.encode(text).ids)
 * for what it supports: a BPE model (merges as "a b" or ["a", "b"]),
 * normalizer NFC or none, ByteLevel pre-tokenizer and decoder, ByteLevel
 * or no post-processor, added tokens without single_word/lstrip/rstrip.
 * Other components or options that would change the ids give
 * LM_ERR_UNSUPPORTED; malformed files LM_ERR_FORMAT (duplicate ids, merges
 * of unknown tokens), absent model/vocab/merges LM_ERR_MISSING, a
 * directory without tokenizer.json LM_ERR_MISSING, unreadable files
 * LM_ERR_IO.
 * path may also be a GGUF file (named *.gguf or starting with the GGUF
 * magic): its tokenizer.ggml.* metadata as llama.cpp's converter writes
 * it for a "gpt2" (byte-level BPE) model with pre-tokenizer "gpt-2" or
 * "mpt" (GPT-NeoX's, with NFC); the ids are those of the tokenizer.json it
 * was converted from.  No tokenizer in the file: LM_ERR_MISSING; another
 * tokenizer model or pre-tokenizer: LM_ERR_UNSUPPORTED. */
LM_API lm_status lm_tokenizer_load(const char *path, lm_tokenizer **out, char *err, size_t err_cap);
LM_API void lm_tokenizer_free(lm_tokenizer *tok);
/* Number of ids (vocabulary plus added tokens, i.e. max id + 1). */
LM_API int64_t lm_tokenizer_vocab_size(const lm_tokenizer *tok);
/* Encodes text[0..text_len) (UTF-8).  *n_ids receives the number of ids;
 * if cap is too small nothing is written past cap and the call returns
 * LM_ERR_BUFFER_TOO_SMALL with *n_ids the size needed (ids may be NULL
 * with cap 0 for a size query).  Invalid UTF-8 is not an error: each
 * maximal invalid subpart becomes U+FFFD first (as Python's
 * bytes.decode("utf-8", "replace") would hand the text to `tokenizers`).
 * Special tokens in the text are matched (added tokens split the text
 * before anything else).  Time is linear in text_len for text in words;
 * one word of n bytes costs O(n log n). */
LM_API lm_status lm_tokenizer_encode(const lm_tokenizer *tok, const char *text, size_t text_len,
                                     int32_t *ids, size_t cap, size_t *n_ids,
                                     char *err, size_t err_cap);
/* Decodes ids to bytes (not NUL terminated); same size protocol.  The
 * bytes of ids are concatenated as they are: a sequence cut inside a
 * character gives incomplete UTF-8 (`tokenizers` would show U+FFFD there),
 * which the following ids complete.  Special tokens decode to their text.
 * An id < 0, >= vocab size or without a token is LM_ERR_OUT_OF_RANGE. */
LM_API lm_status lm_tokenizer_decode(const lm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                     char *text, size_t cap, size_t *n_bytes,
                                     char *err, size_t err_cap);

/* ---- safetensors files (0.3) -------------------------------------------- */

/* Read access to the tensors of any safetensors file (reference logits,
 * calibrations, checkpoints) with the library's validating reader: the
 * header is checked entirely (sizes, offsets, overlaps, dtypes) before
 * lm_tensor_file_open returns, so a truncated or hostile file is
 * LM_ERR_FORMAT, never a crash.  The file is mapped, not copied.  A handle
 * is immutable and shareable across threads like a model. */

typedef struct lm_tensor_file lm_tensor_file;

#define LM_TENSOR_MAX_DIMS 8

typedef struct lm_tensor_info {
    uint32_t struct_size;    /* set by the caller; fields past it are not written */
    lm_dtype dtype;
    int32_t ndim;
    int64_t shape[LM_TENSOR_MAX_DIMS]; /* ndim entries used, the rest 0 */
    int64_t n_elements;      /* product of the shape (1 for a scalar) */
} lm_tensor_info;

/* Opens and validates path.  A missing file is LM_ERR_MISSING, an
 * unreadable one LM_ERR_IO, a malformed one LM_ERR_FORMAT.  On failure
 * *out is NULL and err holds the reason. */
LM_API lm_status lm_tensor_file_open(const char *path, lm_tensor_file **out, char *err,
                                     size_t err_cap);
LM_API void lm_tensor_file_free(lm_tensor_file *file);
/* Number of tensors (0 for NULL). */
LM_API size_t lm_tensor_file_count(const lm_tensor_file *file);
/* Name of tensor `index` in the header's order (valid while the file is
 * open); NULL when file is NULL or index >= count. */
LM_API const char *lm_tensor_file_name(const lm_tensor_file *file, size_t index);
/* Dtype and shape of the tensor `name`: LM_ERR_MISSING if there is none. */
LM_API lm_status lm_tensor_file_get_info(const lm_tensor_file *file, const char *name,
                                         lm_tensor_info *info, char *err, size_t err_cap);
/* Copies all n_elements of tensor `name` to out (cap counts elements),
 * converted: _f64 and _f32 take F64, F32, F16 and BF16 tensors; _i32 takes
 * I64, I32, I16, I8 and U8 tensors, and an I64 value outside int32 is
 * LM_ERR_OUT_OF_RANGE.  Another dtype is LM_ERR_UNSUPPORTED, a missing
 * tensor LM_ERR_MISSING, cap < n_elements LM_ERR_BUFFER_TOO_SMALL (nothing
 * written).  out may be NULL with cap 0 for an empty tensor. */
LM_API lm_status lm_tensor_file_read_f64(const lm_tensor_file *file, const char *name,
                                         double *out, size_t cap, char *err, size_t err_cap);
LM_API lm_status lm_tensor_file_read_f32(const lm_tensor_file *file, const char *name,
                                         float *out, size_t cap, char *err, size_t err_cap);
LM_API lm_status lm_tensor_file_read_i32(const lm_tensor_file *file, const char *name,
                                         int32_t *out, size_t cap, char *err, size_t err_cap);

#ifdef __cplusplus
}
#endif

#endif /* LONGMAMBA_H */
