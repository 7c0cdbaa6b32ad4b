/*
 * common.cuh - shared pieces of the CUDA backend: error plumbing, element
 * types, the per-model and per-session device structs.
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

/* After a kernel launch: the launch's own error (bad configuration). */
#define LMC_LAUNCHED(e, what) LMC_CUDA(cudaGetLastError(), e, what)

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

/* ---- per-model device data --------------------------------------------- */

typedef struct lmc_layer {
    const float *norm_w;   /* [d] */
    const void *in_w;      /* [2E][d] T */
    const float *in_b;     /* [2E] or NULL */
    const float *conv_w;   /* [E][K] */
    const float *conv_b;   /* [E] or NULL */
    const void *x_w;       /* [R+2N][E] T */
    const float *dt_w;     /* [E][R] fp32 */
    const float *dt_b;     /* [E] */
    const float *A2;       /* [E][N] A * log2(e) */
    const float *D;        /* [E] */
    const void *out_w;     /* [d][E] T */
    const float *out_b;    /* [d] or NULL */
} lmc_layer;

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
} lmc_model;

/* ---- per-session device data ------------------------------------------- */

/* Buffers and graph of the batched decode step (batch.cu), owned by the
 * session that comes first in an lm_session_decode_batch call. */
typedef struct lmc_batch lmc_batch;
void lmc_batch_free(lmc_batch *b);
/* vt->forward_batch of the CUDA backend (batch.cu). */
lm_status lmc_forward_batch(struct lm_session *const *s, size_t n, const int32_t *tokens, float *logits,
                            bool allow_tf32, lmi_err *e);

typedef struct lmc_session {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws;         /* cuBLAS workspace (fixed so graphs may capture GEMMs) */
    size_t blas_ws_bytes;

    float *conv_state;     /* [n_layer][E][K-1] */
    float *ssm_state;      /* [n_layer][E][N] */

    /* Scratch sized for cap tokens (grown on demand). */
    int64_t cap;
    void *scratch;         /* one allocation */
    size_t scratch_bytes;
    int32_t *tok;          /* [cap] */
    float *res, *res2;     /* [cap][d] residual stream (res2: DeciMamba gather target) */
    void *hn;              /* [cap][d] T normed hidden */
    void *xz, *xz2;        /* [cap][2E] T */
    void *u, *u2;          /* [cap][E] T */
    float *dbc, *dbc2;     /* [cap][R+2N] */
    float *dt, *dt2;       /* [cap][E] */
    void *y;               /* [cap][E] T */
    float *chunk_s;        /* scan chunk sums [nchunk][E] */
    float *chunk_h;        /* scan chunk states [nchunk][N][E] */
    float *scores;         /* [cap] DeciMamba scores, also Δ staging for the sink */
    int32_t *idx;          /* [cap] DeciMamba indices */
    float *delta;          /* [cap][E] post-softplus Δ for the sink */
    void *hf;              /* [cap][d] T final-normed rows for the head */
    float *logits;         /* [out_cap][V] */
    int64_t out_cap;
    /* Bytes held by the separately grown buffers. */
    size_t scan_bytes, deci_bytes, delta_bytes, logits_bytes, hf_bytes;

    uint8_t *flt_flag;     /* [n_layer][E] LongMamba global flags */
    float *flt_tau;        /* [n_layer][E] thresholds */
    void *flt_blob;

    /* Host staging (pageable, grown on demand). */
    float *h_buf;
    size_t h_buf_floats;
    int64_t *h_idx;
    int64_t *h_scratch;
    int32_t *h_idx32;
    size_t h_idx_cap;

    /* CUDA graphs: slot 0 the one-token step, slot 1 a full prefill chunk
     * (n_tokens == the session's chunk size).  Captured on first use, again
     * when the key differs or the buffers moved (grow() clears valid). */
    struct lmc_graph {
        cudaGraphExec_t exec;
        bool valid;
        int64_t L, n_out;
        bool tf32;
        int mode;          /* decode mode it was captured with */
        uint64_t filt;     /* which layers carry a LongMamba filter */
    } graphs[2];
    int decode_mode;       /* 2 fused + PDL (default), 1 fused, 0 prefill kernels (test/bench switch) */
    bool pdl_broken;       /* capture with PDL failed once: plain launches from then on */
    int32_t *tok_pinned;   /* pinned host token for the graph's input */
    lmc_batch *batch;      /* batched decode (batch.cu), or NULL */
} lmc_session;

#endif /* LMC_COMMON_CUH */
