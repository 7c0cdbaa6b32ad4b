/*
 * common.cuh - shared pieces of the CUDA backend: error plumbing (the only
 * CUDA / cuBLAS / status check macros), element types, the device model and
 * session structs both architectures use, and the per-architecture
 * interface (lmc_arch) that session.cu drives.
 *
 * Storage: weights of BF16/F16 checkpoints are kept as bf16 on the device
 * (matrices only; A, D, biases, norms, conv weights and dt_proj stay fp32),
 * F32 checkpoints in fp32.  Activations that feed a matrix product (the
 * normed hidden state, in_proj's output x|z, the conv output u, the scan
 * output y) are stored in the weights' type; the residual stream, x_proj's
 * output (dt_low|B|C), dt, the recurrent state and the logits are fp32.
 */
#ifndef LMC_COMMON_CUH
#define LMC_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "internal.h"
#include "kernels.h"
}

typedef __nv_bfloat16 lmc_bf16;

/* ---- errors ------------------------------------------------------------ */

/* Maps a CUDA error to a status: out of memory is LM_ERR_NO_MEMORY, the rest
 * LM_ERR_BACKEND, with the CUDA error text and what was being done. */
lm_status lmc_cuda_fail(lmi_err *e, cudaError_t err, const char *what);
lm_status lmc_cublas_fail(lmi_err *e, cublasStatus_t st, const char *what);

#define LMC_CUDA(call, e, what)                                                \
    do {                                                                       \
        cudaError_t lmc_err_ = (call);                                         \
        if (lmc_err_ != cudaSuccess) return lmc_cuda_fail((e), lmc_err_, (what)); \
    } while (0)

#define LMC_CUBLAS(call, e, what)                                              \
    do {                                                                       \
        cublasStatus_t lmc_st_ = (call);                                       \
        if (lmc_st_ != CUBLAS_STATUS_SUCCESS)                                  \
            return lmc_cublas_fail((e), lmc_st_, (what));                      \
    } while (0)


/* ---- element types ----------------------------------------------------- */

/* Activation / weight storage type of a model. */
typedef enum lmc_dtype { LMC_F32 = 0, LMC_BF16 = 1 } lmc_dtype;

static inline size_t lmc_dtype_size(lmc_dtype t) { return t == LMC_BF16 ? 2 : 4; }

/* Host weight elements [first, first + n) -> device fp32 at dst: F32 straight
 * from host memory, 16-bit widened on the host by lmi_weight_convert. */
static inline cudaError_t lmc_upload_f32(void *dst, const lmi_weight *w, size_t first, size_t n)
{
    if (w->type == LMI_W_F32)
        return cudaMemcpy(dst, (const float *)w->data + first, n * sizeof(float), cudaMemcpyHostToDevice);
    const size_t cap = (size_t)1 << 20;
    float *buf = (float *)lmi_alloc_raw(n < cap ? n : cap, sizeof(float));
    if (!buf) return cudaErrorMemoryAllocation;
    cudaError_t ce = cudaSuccess;
    for (size_t o = 0; o < n && ce == cudaSuccess; o += cap) {
        const size_t m = n - o < cap ? n - o : cap;
        lmi_weight_convert(w, (int64_t)(first + o), (int64_t)m, LM_DTYPE_F32, buf);
        ce = cudaMemcpy((char *)dst + o * sizeof(float), buf, m * sizeof(float), cudaMemcpyHostToDevice);
    }
    lmi_free(buf);
    return ce;
}

__device__ __forceinline__ float lmc_to_f32(float v) { return v; }
__device__ __forceinline__ float lmc_to_f32(lmc_bf16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T lmc_from_f32(float v);
template <> __device__ __forceinline__ float lmc_from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ lmc_bf16 lmc_from_f32<lmc_bf16>(float v)
{
    return __float2bfloat16_rn(v);
}

/* softplus(v) = v > 20 ? v : log1p(exp(v)), fp32 (MAMBA.md §4.1). */
__device__ __forceinline__ float lmc_softplus(float v) { return v > 20.f ? v : log1pf(expf(v)); }
__device__ __forceinline__ float lmc_silu(float v) { return v / (1.f + expf(-v)); }

/* 2^x on the special-function unit (ex2.approx.ftz: ~2 ulp, 2^0 == 1 exactly,
 * large negative x flushes to 0). */
__device__ __forceinline__ float lmc_exp2(float x)
{
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

#define LMC_LOG2E 1.4426950408889634f

/* Packed sequences (varlen kernels): the s with cu[s] <= i < cu[s + 1],
 * cu ascending with n + 1 entries and cu[0] <= i < cu[n]; a binary search
 * (log2 n loads, once per thread or block).  Empty sequences are skipped. */
__device__ __forceinline__ int64_t lmc_seq_of(const int64_t *cu, int64_t n, int64_t i)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if (cu[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* ---- per-model device data --------------------------------------------- */

/* Device weights of one layer, both architectures (NULL where absent). */
typedef struct lmc_layer {
    const float *norm_w;   /* [d] */
    const void *in_w;      /* M1 [2E][d], M2 [2E+2GN+H][d] T */
    const float *in_b;     /* or NULL */
    const float *conv_w;   /* [conv_dim][K] */
    const float *conv_b;   /* [conv_dim] or NULL */
    const void *x_w;       /* M1 [R+2N][E] T */
    const float *dt_w;     /* M1 [E][R] fp32 */
    const float *dt_b;     /* M1 [E], M2 [H] */
    const float *A;        /* M1 [E][N] as A * log2(e); M2 [H] as A */
    const float *D;        /* M1 [E], M2 [H] */
    const float *gnorm_w;  /* M2 [E] */
    const void *out_w;     /* [d][E] T */
    const float *out_b;    /* [d] or NULL */
} lmc_layer;

typedef struct lmc_arch lmc_arch;

typedef struct lmc_model {
    int device;
    lmc_dtype dt;          /* storage of matrices and matrix-product inputs */
    void *blob;            /* one device allocation holding every weight */
    size_t blob_bytes;
    const void *embed;     /* [V][d] T */
    const void *lm_head;   /* [V][d] T; == embed when tied */
    const float *norm_f;   /* [d] */
    lmc_layer *layers;     /* host array [n_layer] of device pointers */
    int sm_count;
    const lmc_arch *arch;  /* the per-architecture pipelines (mamba1.cu, mamba2.cu) */
} lmc_model;

/* ---- per-session device data ------------------------------------------- */

/* A captured CUDA graph and what it was captured for. */
typedef struct lmc_graph_key {
    int64_t L, n_out;      /* tokens (batched decode: sessions), logits rows */
    bool tf32;
    int mode;              /* decode mode it was captured with */
    uint64_t filt;         /* which layers carry a LongMamba filter, and the scale hooks */
} lmc_graph_key;

typedef struct lmc_graph {
    cudaGraphExec_t exec;
    bool valid;            /* cleared when a buffer it uses moves */
    lmc_graph_key key;
} lmc_graph;

/* Buffers and graph of the batched decode step, owned by the session that
 * comes first in an lm_session_decode_batch call (session.cu). */
typedef struct lmc_batch {
    int64_t cap;           /* sessions the buffers hold */
    void *blob;            /* one device allocation for everything below */
    size_t blob_bytes;
    int32_t *tok;          /* [cap] */
    float **conv_ptr;      /* [cap] each session's conv_state */
    float **ssm_ptr;       /* [cap] each session's ssm_state */
    float *res;            /* [cap][d] residual stream */
    void *hn;              /* [cap][d] T normed hidden (also the final norm's output) */
    float *x;              /* M1 xz [cap][2E], M2 zx [cap][2E+2GN+H] */
    void *u;               /* M1 [cap][E] T conv output for x_proj; M2 [cap][CD] fp32 */
    float *uf;             /* M1 [cap][E] conv output for the scan */
    float *dbc;            /* M1 [cap][R+2N] */
    float *dt;             /* M1 [cap][E] dt_proj output; M2 [cap][H] Δ */
    void *y;               /* M1 [cap][E] T; M2 [cap][E] fp32 */
    void *yn;              /* M2 [cap][E] T gated-norm output */
    float *logits;         /* [cap][V] */
    void *host;            /* pinned staging: tokens [cap] int32, then 2 x cap pointers */
    lmc_graph graph;
    /* lm_session_decode_sample (allocated on its first use): device
     * params [cap], next [cap] and the state backup [cap][conv + ssm];
     * pinned params and next. */
    void *sblob;
    lmc_sample_param *params;
    int32_t *next;
    float *backup;
    void *shost;
} lmc_batch;

typedef struct lmc_session {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws;         /* cuBLAS workspace (fixed so graphs may capture GEMMs) */
    size_t blas_ws_bytes;

    float *conv_state;     /* [n_layer][conv_dim][K-1] */
    float *ssm_state;      /* [n_layer][E][N] (M2: [H][P][N] per layer) */

    /* Activations for cap tokens, carved from one allocation (grown on
     * demand); each architecture uses its own subset (mamba1.cu, mamba2.cu). */
    int64_t cap;
    void *scratch;
    size_t scratch_bytes;
    int32_t *tok;          /* [cap] */
    float *res;            /* [cap][d] residual stream */
    void *hn;              /* [cap][d] T normed hidden */
    void *x;               /* M1 xz [cap][2E] T; M2 zx [cap][2E+2GN+H] fp32 */
    void *u;               /* M1 [cap][E] T; M2 [cap][CD] fp32 */
    float *dbc;            /* M1 [cap][R+2N] */
    float *dt;             /* M1 [cap][E] dt_proj output; M2 [cap][H] Δ */
    void *y;               /* M1 [cap][E] T; M2 [cap][E] fp32 */
    void *yn;              /* M2 [cap][E] T */
    float *scores;         /* [cap] DeciMamba scores */
    int32_t *idx;          /* [cap] DeciMamba indices */

    /* DeciMamba gather targets (one allocation). */
    void *deci;
    size_t deci_bytes;
    float *res2;
    void *x2, *u2;
    float *dbc2, *dt2;

    void *chunk;           /* scan scratch (one allocation) */
    size_t chunk_bytes;
    float *delta;          /* [cap][n_channels] Δ for the sink */
    size_t delta_bytes;
    void *out;             /* hf [n_out][d] T, logits [n_out][V] */
    size_t out_bytes;
    void *hf;
    float *logits;

    uint8_t *flt_flag;     /* [n_layer][n_channels] LongMamba global flags */
    float *flt_tau;        /* [n_layer][n_channels] thresholds */
    float *mod_A;          /* M2 [n_layer][H]: Modulation's A' of the forward */
    void *flt_blob;

    /* Host staging (pageable, grown on demand). */
    float *h_buf;
    size_t h_buf_bytes;
    int64_t *h_idx;
    int64_t *h_scratch;
    int32_t *h_idx32;
    size_t h_idx_cap;

    /* CUDA graphs: slot 0 the one-token step, slot 1 a full prefill chunk
     * (n_tokens == the session's chunk size).  Captured on first use, again
     * when the key differs or the buffers moved. */
    lmc_graph graphs[2];
    int decode_mode;       /* M1: 2 fused + PDL (default), 1 fused, 0 prefill kernels (bench/gpu/dev hook) */
    bool pdl_broken;       /* capture with PDL failed once: plain launches from then on */
    int32_t *tok_pinned;   /* pinned host token for the graph's input */
    lmc_batch *batch;      /* batched decode, or NULL */
    /* Batched prefill (session.cu, grown on demand): the device tables,
     * last rows and logits of its sequences; their host staging. */
    void *vl;
    size_t vl_bytes;
    void *vl_host;
    size_t vl_host_bytes;
} lmc_session;

/* ---- the forward pass and the per-architecture part ---------------------- */

typedef struct lmc_fwd {
    struct lm_session *s;
    lmc_session *S;
    const lmc_model *M;
    const lmi_forward *f;
    bool capture;          /* inside graph capture: no host synchronisation */
    bool fused;            /* one-token step through arch->step */
    bool pdl;              /* ... with programmatic dependent launch */
} lmc_fwd;

/* The packed sequences of a batched prefill (lmi_backend_vt.prefill_batch)
 * as the pipelines' varlen entry reads them: device tables session.cu
 * builds; the tokens are in S->tok. */
typedef struct lmc_seqs {
    int64_t n, T;            /* sequences; tokens in all */
    const int64_t *cu;       /* [n + 1] first token of each sequence, then T */
    const int64_t *cu_chunk; /* [n + 1] first scan chunk of each sequence, then n_chunks */
    const int64_t *chunk_t0; /* [n_chunks + 1] first token of each scan chunk, then T */
    int64_t n_chunks;
    int chunk;               /* scan chunk length (arch->varlen_chunk) */
    float *const *conv_ptr;  /* [n] each sequence's session state */
    float *const *ssm_ptr;
    void *scan;              /* scan scratch (arch->varlen_scan_bytes) */
} lmc_seqs;

/* A device buffer carved from a shared allocation: where its pointer goes
 * and its size. */
typedef struct lmc_buf {
    void **dst;
    size_t bytes;
} lmc_buf;

/* A pair of activation buffers for DeciMamba: *cur is gathered into the
 * other one of (a, b), whose row stride is lda or ldb (bytes); row bytes
 * are copied.  *ld (optional) receives the new stride in elements of 4 bytes. */
typedef struct lmc_gather {
    void **cur;
    void *a, *b;
    int64_t lda, ldb, row;
    int64_t *ld;
} lmc_gather;

/* The CUDA pipeline of a model whose layers all have one mixer kind: a
 * row per kind (mamba1.cu, mamba2.cu), fused across the layers.  Mixed
 * layer kinds (hybrids) are refused at model init until they have one. */
struct lmc_arch {
    lmi_mixer_kind mixer;
    lm_status (*check)(const struct lm_model *m, lmi_err *e);
    /* Rows (at most 16) of the activation buffers for cap tokens, of the
     * DeciMamba gather targets for L tokens, of the batched step for cap
     * sessions; the scan scratch bytes for L tokens. */
    size_t (*main_bufs)(const struct lm_model *m, lmc_session *S, size_t cap, lmc_buf *rows);
    size_t (*deci_bufs)(const struct lm_model *m, lmc_session *S, size_t L, lmc_buf *rows);
    size_t (*batch_bufs)(const struct lm_model *m, lmc_batch *B, size_t cap, lmc_buf *rows);
    size_t (*scan_bytes)(const struct lm_model *m, int64_t L);
    /* The whole model over L tokens already in S->tok; logits of the last
     * n_out rows end in S->logits. */
    lm_status (*pipeline)(lmc_fwd *c, int64_t L, lmi_err *e);
    /* The fused one-token step, or NULL (pipeline with L = 1). */
    lm_status (*step)(lmc_fwd *c, lmi_err *e);
    /* One decode step for n sessions whose inputs are in S->batch. */
    lm_status (*batch)(const struct lm_model *m, lmc_session *S, int64_t n, bool logits, bool tf32, lmi_err *e);
    /* Packed sequences (a batched prefill): the scan chunk length for T
     * tokens in all, the scan scratch bytes for n_chunks of them, and the
     * whole model over the sequences of q on S's buffers (main_bufs for T
     * tokens), each from and into its own session's state; the residual
     * stream is left in S->res (the head is session.cu's). */
    int (*varlen_chunk)(const struct lm_model *m, int64_t T);
    size_t (*varlen_scan_bytes)(const struct lm_model *m, int64_t n_chunks, int chunk);
    lm_status (*varlen)(const struct lm_model *m, lmc_session *S, const lmc_seqs *q, bool tf32, lmi_err *e);
};

extern const lmc_arch lmc_mamba1;
extern const lmc_arch lmc_mamba2;

/* ---- shared helpers (session.cu) ---------------------------------------- */

#define LMC_ALIGN 256
static inline size_t lmc_align(size_t n) { return (n + LMC_ALIGN - 1) / LMC_ALIGN * LMC_ALIGN; }
static inline unsigned lmc_blocks(int64_t n, int per) { return (unsigned)((n + per - 1) / per); }
static inline lmc_dtype lmc_model_dt(const struct lm_model *m)
{
    return m->dtype == LM_DTYPE_F32 ? LMC_F32 : LMC_BF16;
}

/* Launch checks inside functions with an `lmi_err *e`: a CUDA call, a
 * status-returning call. */
#define LMC_CK(call, what) LMC_CUDA(call, e, what)
#define LMC_TRY(call)                                                          \
    do {                                                                       \
        lm_status lmc_ls_ = (call);                                            \
        if (lmc_ls_ != LM_OK) return lmc_ls_;                                  \
    } while (0)

/* Passes Δ of layer l ([L][n] on the device) to the forward's sink. */
lm_status lmc_sink(lmc_fwd *c, int64_t l, const float *delta, int64_t L, int64_t n, lmi_err *e);
/* DeciMamba at layer l: when the layer decimates, score() leaves the
 * scores of the *L rows in S->scores (from the pairs' current buffers), the host selects (lmi_deci_select)
 * and the rows of every pair are gathered; *L shrinks. */
lm_status lmc_decimate(lmc_fwd *c, int64_t l, int64_t *L, lmc_gather *g, size_t ng,
                       cudaError_t (*score)(lmc_fwd *c, int64_t l, int64_t L, const lmc_gather *g), lmi_err *e);
/* The layer's tail, res += y W_out^T (+ b_out), over rows tokens (y T). */
lm_status lmc_out_proj(lmc_session *S, lmc_dtype T, const lmc_layer *G, int64_t D, int64_t E, const void *y,
                       int64_t rows, float *res, bool tf32, lmi_err *e);
/* The head over rows tokens: hn = RMSNorm_f(res) (T), logits = hn W_head^T. */
lm_status lmc_head(lmc_session *S, const lmc_model *M, const lmi_dims *d, const float *res, int64_t rows, void *hn,
                   float *logits, bool tf32, lmi_err *e);
/* The backend vtable functions shared by both architectures. */
lm_status lmc_forward_batch(struct lm_session *const *s, size_t n, const int32_t *tokens, float *logits,
                            bool allow_tf32, lmi_err *e);
lm_status lmc_prefill_batch(struct lm_session *owner, const lmi_seq *seq, size_t n, bool allow_tf32, lmi_err *e);

#endif /* LMC_COMMON_CUH */
