/*
 * backend.cu - the CUDA backend behind lmi_backend_vt (Mamba-1).
 *
 * Weights are uploaded once per model (model_init) into one device
 * allocation and shared read-only by the model's sessions.  Each session
 * owns a stream, a cuBLAS handle with a fixed workspace, its recurrent
 * state (fp32) and scratch grown to the largest chunk it has seen.  A
 * forward pass is, per layer:
 *
 *   hn  = RMSNorm(res)                       norm.cu
 *   xz  = hn W_in^T (+ b_in)                 cuBLAS
 *   u   = SiLU(conv1d(x) + b_conv)           conv.cu (state carried)
 *   dbc = u W_x^T                            cuBLAS  [dt_low | B | C]
 *   dt  = dt_low W_dt^T                      cuBLAS  (fp32)
 *   [DeciMamba: score, select on the host (lmi_deci_select), gather]
 *   y   = scan(u, dt, ...)                   scan.cu (bias + softplus, filter, D, gate fused)
 *   res = res + y W_out^T (+ b_out)          cuBLAS, beta = 1 (the residual add)
 *
 * then the final norm and the head for the last n_out rows only.  A
 * one-token step is captured once in a CUDA graph and replayed.
 */
#include "common.cuh"
#include "gemm.cuh"
#include "kernels.h"

#include <string.h>

/* ---- errors ------------------------------------------------------------ */

lm_status lmc_cuda_fail(lmi_err *e, cudaError_t err, const char *what)
{
    (void)cudaGetLastError(); /* clear a non-sticky error so the handle stays usable */
    const lm_status st = err == cudaErrorMemoryAllocation ? LM_ERR_NO_MEMORY : LM_ERR_BACKEND;
    return lmi_fail(e, st, "cuda: %s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
}

lm_status lmc_cublas_fail(lmi_err *e, cublasStatus_t st, const char *what)
{
    (void)cudaGetLastError();
    const lm_status s = st == CUBLAS_STATUS_ALLOC_FAILED ? LM_ERR_NO_MEMORY : LM_ERR_BACKEND;
    return lmi_fail(e, s, "cublas: %s: %s", what, cublasGetStatusString(st));
}

/* Why CUDA is (not) usable here, in words a user can act on.  cudart
 * loads the driver (libcuda.so.1) itself and reports a missing one as
 * cudaErrorInsufficientDriver with driver version 0. */
static lm_status device_status(int32_t *n_devices, lmi_err *e)
{
    if (!n_devices)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "CUDA module: device_status: NULL argument");
    *n_devices = 0;
    int n = 0;
    const cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess)
        (void)cudaGetLastError();
    int drv = 0, rt = 0;
    (void)cudaDriverGetVersion(&drv);
    (void)cudaRuntimeGetVersion(&rt);
    if (rc == cudaErrorInsufficientDriver && drv == 0)
        return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE,
                        "CUDA backend: no CUDA driver (libcuda.so.1 not found or not loadable; "
                        "the module needs a driver for CUDA %d.%d or newer)",
                        rt / 1000, rt % 1000 / 10);
    if (rc == cudaErrorInsufficientDriver)
        return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE,
                        "CUDA backend: the CUDA driver is too old (it supports CUDA %d.%d, the "
                        "module needs %d.%d)", drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
    if (rc == cudaErrorNoDevice || (rc == cudaSuccess && n <= 0))
        return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE,
                        "CUDA backend: no CUDA device (driver for CUDA %d.%d present)", drv / 1000,
                        drv % 1000 / 10);
    if (rc != cudaSuccess)
        return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE, "CUDA backend: no usable device: %s (%s)",
                        cudaGetErrorString(rc), cudaGetErrorName(rc));
    *n_devices = n;
    return LM_OK;
}

/* The module's one exported symbol (lib/internal.h: lmi_cuda_module).
 * Default visibility although everything else is hidden; the GPU test
 * programs, which link these objects statically, export it from the
 * executable so that lm_model_load finds this copy instead of loading a
 * second cudart with the module. */
extern "C" __attribute__((visibility("default"))) const lmi_cuda_module *lmi_cuda_module_v1(void)
{
    static const lmi_cuda_module mod = {
        LMI_CUDA_MODULE_VERSION,
        (uint32_t)sizeof(struct lm_model),
        (uint32_t)sizeof(struct lm_session),
        (uint32_t)sizeof(lmi_forward),
        &lmi_cuda_backend,
        &lmi_cuda_m2_backend,
        device_status,
    };
    return &mod;
}

namespace {

const size_t kAlign = 256;
const size_t kBlasWorkspace = 32u << 20;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

lmc_dtype model_dt(const struct lm_model *m) { return m->dtype == LM_DTYPE_F32 ? LMC_F32 : LMC_BF16; }

/* ---- model upload ------------------------------------------------------ */

enum { UP_F32 = 0, UP_CONV = 1, UP_A2 = 2 };

typedef struct upload {
    size_t off;
    const lmi_weight *src;
    size_t n;
    int kind;
} upload;

typedef struct planner {
    size_t total;
    upload *ups;
    size_t n_ups, cap_ups;
    bool oom;
} planner;

/* Reserves room for n elements (fp32, or the matrix dtype when conv) and
 * records where the host array goes.  Returns the offset. */
size_t plan_add(planner *pl, const lmi_weight *src, size_t n, int kind, lmc_dtype mt)
{
    const size_t off = pl->total;
    const size_t es = kind == UP_CONV ? lmc_dtype_size(mt) : 4;
    pl->total += align_up(n * es);
    if (pl->ups && pl->n_ups < pl->cap_ups) pl->ups[pl->n_ups++] = upload{off, src, n, kind};
    return off;
}

/* Two passes: sizes (M == NULL) and pointer assignment. */
void plan_model(const struct lm_model *m, lmc_model *M, planner *pl)
{
    const lmi_dims *d = &m->dims;
    const lmc_dtype mt = model_dt(m);
    const int mat = mt == LMC_BF16 ? UP_CONV : UP_F32;
    char *base = M ? static_cast<char *>(M->blob) : nullptr;
#define PTR(off) (base ? (void *)(base + (off)) : nullptr)
    const size_t V = (size_t)d->vocab, D = (size_t)d->d_model, E = (size_t)d->d_inner;
    const size_t N = (size_t)d->d_state, R = (size_t)d->dt_rank, K = (size_t)d->d_conv;
    size_t o = plan_add(pl, &m->embed, V * D, mat, mt);
    if (M) M->embed = PTR(o);
    if (m->lm_head.data && m->lm_head.data != m->embed.data) {
        o = plan_add(pl, &m->lm_head, V * D, mat, mt);
        if (M) M->lm_head = PTR(o);
    } else if (M) {
        M->lm_head = M->embed;
    }
    o = plan_add(pl, &m->norm_f, D, UP_F32, mt);
    if (M) M->norm_f = (const float *)PTR(o);
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmi_layer *L = &m->layers[l];
        lmc_layer *G = M ? &M->layers[l] : nullptr;
        o = plan_add(pl, &L->norm_w, D, UP_F32, mt);
        if (G) G->norm_w = (const float *)PTR(o);
        o = plan_add(pl, &L->in_w, 2 * E * D, mat, mt);
        if (G) G->in_w = PTR(o);
        if (L->in_b.data) {
            o = plan_add(pl, &L->in_b, 2 * E, UP_F32, mt);
            if (G) G->in_b = (const float *)PTR(o);
        }
        o = plan_add(pl, &L->conv_w, E * K, UP_F32, mt);
        if (G) G->conv_w = (const float *)PTR(o);
        if (L->conv_b.data) {
            o = plan_add(pl, &L->conv_b, E, UP_F32, mt);
            if (G) G->conv_b = (const float *)PTR(o);
        }
        o = plan_add(pl, &L->x_w, (R + 2 * N) * E, mat, mt);
        if (G) G->x_w = PTR(o);
        o = plan_add(pl, &L->dt_w, E * R, UP_F32, mt);
        if (G) G->dt_w = (const float *)PTR(o);
        if (L->dt_b.data) {
            o = plan_add(pl, &L->dt_b, E, UP_F32, mt);
            if (G) G->dt_b = (const float *)PTR(o);
        }
        o = plan_add(pl, &L->A, E * N, UP_A2, mt);
        if (G) G->A2 = (const float *)PTR(o);
        if (L->D.data) {
            o = plan_add(pl, &L->D, E, UP_F32, mt);
            if (G) G->D = (const float *)PTR(o);
        }
        o = plan_add(pl, &L->out_w, D * E, mat, mt);
        if (G) G->out_w = PTR(o);
        if (L->out_b.data) {
            o = plan_add(pl, &L->out_b, D, UP_F32, mt);
            if (G) G->out_b = (const float *)PTR(o);
        }
    }
#undef PTR
}

void model_release(lmc_model *M)
{
    if (!M) return;
    if (M->blob) cudaFree(M->blob);
    lmi_free(M->layers);
    lmi_free(M);
}

lm_status check_dims(const struct lm_model *m, lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    if (d->arch != LM_ARCH_MAMBA1)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: only Mamba-1 models are supported");
    if (d->d_state < 1 || d->d_state > LMC_SCAN_MAX_N)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: d_state %lld not in [1, %d]",
                        (long long)d->d_state, LMC_SCAN_MAX_N);
    if (d->d_conv < 2 || d->d_conv > 8)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: d_conv %lld not in [2, 8]",
                        (long long)d->d_conv);
    if (d->d_model < 1 || d->d_inner < 1 || d->dt_rank < 1 || d->n_layer < 1 || d->vocab < 1)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: bad model dimensions");
    if (!m->embed.data || !m->norm_f.data || !m->layers)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: model has no weights");
    return LM_OK;
}

lm_status model_init(struct lm_model *m, lmi_err *e)
{
    lm_status st = check_dims(m, e);
    if (st != LM_OK) return st;
    LMC_CUDA(cudaSetDevice(m->device), e, "cudaSetDevice");
    lmc_model *M = (lmc_model *)lmi_alloc(1, sizeof *M);
    if (!M) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    M->device = m->device;
    M->dt = model_dt(m);
    M->layers = (lmc_layer *)lmi_alloc((size_t)m->dims.n_layer, sizeof(lmc_layer));
    planner pl = {};
    plan_model(m, nullptr, &pl); /* size only */
    pl.cap_ups = 3 + 12 * (size_t)m->dims.n_layer;
    pl.ups = (upload *)lmi_alloc(pl.cap_ups, sizeof(upload));
    float *stage = nullptr;
    size_t stage_n = 0;
    if (!M->layers || !pl.ups) {
        st = lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
        goto fail;
    }
    {
        int dev_sm = 0;
        if (cudaDeviceGetAttribute(&dev_sm, cudaDevAttrMultiProcessorCount, m->device) != cudaSuccess)
            dev_sm = 132;
        M->sm_count = dev_sm;
        M->blob_bytes = pl.total;
        cudaError_t ce = cudaMalloc(&M->blob, M->blob_bytes);
        if (ce != cudaSuccess) {
            M->blob = nullptr;
            st = lmc_cuda_fail(e, ce, "uploading weights (cudaMalloc)");
            goto fail;
        }
        pl.total = 0;
        plan_model(m, M, &pl);
        /* fp32 staging for on-device conversion, at most 16 Mi floats. */
        size_t biggest = 0;
        for (size_t i = 0; i < pl.n_ups; i++)
            if (pl.ups[i].kind != UP_F32 && pl.ups[i].n > biggest) biggest = pl.ups[i].n;
        stage_n = biggest < (16u << 20) ? biggest : (16u << 20);
        if (stage_n) {
            ce = cudaMalloc(&stage, stage_n * sizeof(float));
            if (ce != cudaSuccess) {
                stage = nullptr;
                st = lmc_cuda_fail(e, ce, "uploading weights (staging buffer)");
                goto fail;
            }
        }
        for (size_t i = 0; i < pl.n_ups && st == LM_OK; i++) {
            const upload *u = &pl.ups[i];
            char *dst = static_cast<char *>(M->blob) + u->off;
            if (!u->src->data) {
                st = lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: missing weight tensor");
                break;
            }
            if (u->kind == UP_F32) {
                ce = lmc_upload_f32(dst, u->src, 0, u->n);
            } else if (u->kind == UP_A2) {
                ce = lmc_upload_f32(dst, u->src, 0, u->n);
                if (ce == cudaSuccess) ce = lmc_scale((float *)dst, u->n, LMC_LOG2E, 0);
            } else {
                ce = cudaSuccess;
                for (size_t off = 0; off < u->n && ce == cudaSuccess; off += stage_n) {
                    const size_t n = u->n - off < stage_n ? u->n - off : stage_n;
                    ce = lmc_upload_f32(stage, u->src, off, n);
                    if (ce == cudaSuccess) ce = lmc_convert(LMC_BF16, stage, dst + off * 2, n, 0);
                }
            }
            if (ce == cudaSuccess) ce = cudaStreamSynchronize(0);
            if (ce != cudaSuccess) st = lmc_cuda_fail(e, ce, "uploading weights");
        }
        if (st != LM_OK) goto fail;
    }
    if (stage) cudaFree(stage);
    lmi_free(pl.ups);
    m->bk = M;
    return LM_OK;
fail:
    if (stage) cudaFree(stage);
    lmi_free(pl.ups);
    model_release(M);
    return st;
}

void model_free(struct lm_model *m)
{
    if (!m || !m->bk) return;
    lmc_model *M = static_cast<lmc_model *>(m->bk);
    cudaSetDevice(M->device);
    model_release(M);
    m->bk = nullptr;
}

/* ---- session ----------------------------------------------------------- */

void free_dev(void *p)
{
    if (p) cudaFree(p);
}

void session_release(lmc_session *S)
{
    if (!S) return;
    cudaSetDevice(S->device);
    if (S->stream) cudaStreamSynchronize(S->stream);
    for (int i = 0; i < 2; i++)
        if (S->graphs[i].exec) cudaGraphExecDestroy(S->graphs[i].exec);
    lmc_batch_free(S->batch);
    if (S->blas) cublasDestroy(S->blas);
    if (S->stream) cudaStreamDestroy(S->stream);
    free_dev(S->blas_ws);
    free_dev(S->conv_state);
    free_dev(S->ssm_state);
    free_dev(S->scratch);
    free_dev(S->chunk_s);
    free_dev(S->logits);
    free_dev(S->hf);
    free_dev(S->res2);
    free_dev(S->delta);
    free_dev(S->flt_blob);
    if (S->tok_pinned) cudaFreeHost(S->tok_pinned);
    lmi_free(S->h_buf);
    lmi_free(S->h_idx);
    lmi_free(S->h_scratch);
    lmi_free(S->h_idx32);
    (void)cudaGetLastError();
    lmi_free(S);
}

lm_status session_init(struct lm_session *s, lmi_err *e)
{
    const struct lm_model *m = s->model;
    const lmc_model *M = static_cast<const lmc_model *>(m->bk);
    if (!M) return lmi_fail(e, LM_ERR_BACKEND, "cuda backend: model weights not uploaded");
    const lmi_dims *d = &m->dims;
    LMC_CUDA(cudaSetDevice(M->device), e, "cudaSetDevice");
    lmc_session *S = (lmc_session *)lmi_alloc(1, sizeof *S);
    if (!S) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    S->device = M->device;
    S->decode_mode = 2;
    lm_status st = LM_OK;
    cudaError_t ce;
    cublasStatus_t bs;
    const size_t E = (size_t)d->d_inner, L = (size_t)d->n_layer;
    const size_t conv_n = L * E * (size_t)(d->d_conv - 1), ssm_n = L * E * (size_t)d->d_state;
#define TRY(call, what)                                                        \
    do {                                                                       \
        ce = (call);                                                           \
        if (ce != cudaSuccess) {                                               \
            st = lmc_cuda_fail(e, ce, what);                                   \
            goto fail;                                                         \
        }                                                                      \
    } while (0)
    TRY(cudaStreamCreateWithFlags(&S->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    bs = cublasCreate(&S->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        S->blas = nullptr;
        st = lmc_cublas_fail(e, bs, "cublasCreate");
        goto fail;
    }
    TRY(cudaMalloc(&S->blas_ws, kBlasWorkspace), "cuBLAS workspace");
    S->blas_ws_bytes = kBlasWorkspace;
    bs = cublasSetStream(S->blas, S->stream);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetWorkspace(S->blas, S->blas_ws, S->blas_ws_bytes);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        st = lmc_cublas_fail(e, bs, "cublasSetStream/Workspace");
        goto fail;
    }
    TRY(cudaMalloc(&S->conv_state, conv_n * sizeof(float) + 1), "recurrent state");
    TRY(cudaMalloc(&S->ssm_state, ssm_n * sizeof(float)), "recurrent state");
    TRY(cudaMemsetAsync(S->conv_state, 0, conv_n * sizeof(float), S->stream), "state reset");
    TRY(cudaMemsetAsync(S->ssm_state, 0, ssm_n * sizeof(float), S->stream), "state reset");
    TRY(cudaMalloc(&S->flt_blob, align_up(L * E) + L * E * sizeof(float)), "filter arrays");
    S->flt_flag = static_cast<uint8_t *>(S->flt_blob);
    S->flt_tau = reinterpret_cast<float *>(static_cast<char *>(S->flt_blob) + align_up(L * E));
    TRY(cudaMallocHost(&S->tok_pinned, sizeof(int32_t)), "pinned token buffer");
    TRY(cudaStreamSynchronize(S->stream), "session init");
#undef TRY
    s->bk = S;
    return LM_OK;
fail:
    session_release(S);
    return st;
}

void session_free(struct lm_session *s)
{
    if (!s || !s->bk) return;
    session_release(static_cast<lmc_session *>(s->bk));
    s->bk = nullptr;
}

void session_reset(struct lm_session *s)
{
    if (!s || !s->bk) return;
    lmc_session *S = static_cast<lmc_session *>(s->bk);
    const lmi_dims *d = &s->model->dims;
    cudaSetDevice(S->device);
    const size_t E = (size_t)d->d_inner, L = (size_t)d->n_layer;
    cudaMemsetAsync(S->conv_state, 0, L * E * (size_t)(d->d_conv - 1) * sizeof(float), S->stream);
    cudaMemsetAsync(S->ssm_state, 0, L * E * (size_t)d->d_state * sizeof(float), S->stream);
    cudaStreamSynchronize(S->stream);
}

lm_status state_read(struct lm_session *s, float *conv, float *ssm, lmi_err *e)
{
    lmc_session *S = static_cast<lmc_session *>(s->bk);
    if (!S) return lmi_fail(e, LM_ERR_BACKEND, "cuda backend: session not initialised");
    const lmi_dims *d = &s->model->dims;
    const size_t E = (size_t)d->d_inner, L = (size_t)d->n_layer;
    LMC_CUDA(cudaSetDevice(S->device), e, "cudaSetDevice");
    if (conv)
        LMC_CUDA(cudaMemcpyAsync(conv, S->conv_state, L * E * (size_t)(d->d_conv - 1) * sizeof(float),
                                 cudaMemcpyDeviceToHost, S->stream), e, "state read");
    if (ssm)
        LMC_CUDA(cudaMemcpyAsync(ssm, S->ssm_state, L * E * (size_t)d->d_state * sizeof(float),
                                 cudaMemcpyDeviceToHost, S->stream), e, "state read");
    LMC_CUDA(cudaStreamSynchronize(S->stream), e, "state read");
    return LM_OK;
}

lm_status state_write(struct lm_session *s, const float *conv, const float *ssm, lmi_err *e)
{
    lmc_session *S = static_cast<lmc_session *>(s->bk);
    if (!S) return lmi_fail(e, LM_ERR_BACKEND, "cuda backend: session not initialised");
    const lmi_dims *d = &s->model->dims;
    const size_t E = (size_t)d->d_inner, L = (size_t)d->n_layer;
    LMC_CUDA(cudaSetDevice(S->device), e, "cudaSetDevice");
    if (conv)
        LMC_CUDA(cudaMemcpyAsync(S->conv_state, conv, L * E * (size_t)(d->d_conv - 1) * sizeof(float),
                                 cudaMemcpyHostToDevice, S->stream), e, "state write");
    if (ssm)
        LMC_CUDA(cudaMemcpyAsync(S->ssm_state, ssm, L * E * (size_t)d->d_state * sizeof(float),
                                 cudaMemcpyHostToDevice, S->stream), e, "state write");
    LMC_CUDA(cudaStreamSynchronize(S->stream), e, "state write");
    return LM_OK;
}

/* ---- scratch ----------------------------------------------------------- */

/* Grows a device buffer to at least `need` bytes (contents not kept).  On
 * failure the buffer is left empty, so a later call simply tries again. */
lm_status grow(void **p, size_t *have, size_t need, lmc_session *S, lmi_err *e, const char *what)
{
    if (need <= *have && *p) return LM_OK;
    S->graphs[0].valid = S->graphs[1].valid = false;
    if (*p) {
        cudaStreamSynchronize(S->stream);
        cudaFree(*p);
    }
    *p = nullptr;
    *have = 0;
    cudaError_t ce = cudaMalloc(p, need);
    if (ce != cudaSuccess) {
        *p = nullptr;
        return lmc_cuda_fail(e, ce, what);
    }
    *have = need;
    return LM_OK;
}

lm_status grow_host(void **p, size_t *have, size_t need, lmi_err *e)
{
    if (need <= *have && *p) return LM_OK;
    lmi_free(*p);
    *p = lmi_alloc_raw(need, 1);
    *have = *p ? need : 0;
    if (!*p) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    return LM_OK;
}

typedef struct bufsizes {
    size_t d, E, R2N, ts;
} bufsizes;

bufsizes sizes_of(const struct lm_model *m)
{
    const lmi_dims *d = &m->dims;
    bufsizes b;
    b.d = (size_t)d->d_model;
    b.E = (size_t)d->d_inner;
    b.R2N = (size_t)(d->dt_rank + 2 * d->d_state);
    b.ts = lmc_dtype_size(model_dt(m));
    return b;
}

/* Main per-token buffers for cap tokens, carved from one allocation. */
lm_status ensure_main(lmc_session *S, const struct lm_model *m, int64_t L, lmi_err *e)
{
    if (L <= S->cap && S->scratch) return LM_OK;
    const bufsizes b = sizes_of(m);
    const size_t cap = (size_t)((L + 63) / 64 * 64);
    const size_t sz[] = {cap * 4, cap * b.d * 4, cap * b.d * b.ts, cap * 2 * b.E * b.ts,
                         cap * b.E * b.ts, cap * b.R2N * 4, cap * b.E * 4, cap * b.E * b.ts,
                         cap * 4, cap * 4};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) total += align_up(sz[i]);
    size_t have = S->scratch_bytes;
    S->cap = 0;
    lm_status st = grow(&S->scratch, &have, total, S, e, "activation buffers (cudaMalloc)");
    S->scratch_bytes = have;
    if (st != LM_OK) return st;
    char *p = static_cast<char *>(S->scratch);
    void *ptr[10];
    for (size_t i = 0; i < 10; i++) {
        ptr[i] = p;
        p += align_up(sz[i]);
    }
    S->tok = (int32_t *)ptr[0];
    S->res = (float *)ptr[1];
    S->hn = ptr[2];
    S->xz = ptr[3];
    S->u = ptr[4];
    S->dbc = (float *)ptr[5];
    S->dt = (float *)ptr[6];
    S->y = ptr[7];
    S->scores = (float *)ptr[8];
    S->idx = (int32_t *)ptr[9];
    S->cap = (int64_t)cap;
    return LM_OK;
}

/* DeciMamba gather targets (res2, xz2, u2, dbc2, dt2) for cap tokens. */
lm_status ensure_deci(lmc_session *S, const struct lm_model *m, int64_t L, lmi_err *e)
{
    size_t *have = &S->deci_bytes;
    const bufsizes b = sizes_of(m);
    const size_t cap = (size_t)L;
    const size_t sz[] = {cap * b.d * 4, cap * 2 * b.E * b.ts, cap * b.E * b.ts, cap * b.R2N * 4,
                         cap * b.E * 4};
    size_t total = 0;
    for (size_t i = 0; i < 5; i++) total += align_up(sz[i]);
    void *blob = S->res2;
    lm_status st = grow(&blob, have, total, S, e, "DeciMamba buffers (cudaMalloc)");
    S->res2 = (float *)blob;
    if (st != LM_OK) return st;
    char *p = static_cast<char *>(blob);
    S->res2 = (float *)p; p += align_up(sz[0]);
    S->xz2 = p; p += align_up(sz[1]);
    S->u2 = p; p += align_up(sz[2]);
    S->dbc2 = (float *)p; p += align_up(sz[3]);
    S->dt2 = (float *)p;
    return LM_OK;
}

/* ---- the forward pass -------------------------------------------------- */

typedef struct fwd_ctx {
    struct lm_session *s;
    lmc_session *S;
    const lmc_model *M;
    const lmi_forward *f;
    bool capture;          /* inside graph capture: no host synchronisation */
    bool fused;            /* one-token step through decode.cu */
    bool pdl;              /* ... with programmatic dependent launch */
} fwd_ctx;

#define CK(call, what)                                                         \
    do {                                                                       \
        cudaError_t ce_ = (call);                                              \
        if (ce_ != cudaSuccess) return lmc_cuda_fail(e, ce_, (what));          \
    } while (0)

/* Scan scratch for L tokens (stored in S->chunk_s, one allocation). */
lm_status ensure_scan(lmc_session *S, const struct lm_model *m, int64_t L, lmi_err *e)
{
    size_t *have = &S->scan_bytes;
    const lmi_dims *d = &m->dims;
    const int nsm = static_cast<const lmc_model *>(m->bk)->sm_count;
    const size_t n = lmc_scan_scratch_floats(1, L, d->d_inner, d->d_state, 0, nsm);
    if (n == 0) return LM_OK;
    void *p = S->chunk_s;
    lm_status st = grow(&p, have, n * sizeof(float), S, e, "scan scratch (cudaMalloc)");
    S->chunk_s = (float *)p;
    if (st != LM_OK) return st;
    S->chunk_h = S->chunk_s + lmc_scan_scratch_s(1, L, d->d_inner, d->d_state, 0, nsm);
    return LM_OK;
}

/* DeciMamba at layer l: score, select on the host, gather; *L shrinks. */
lm_status decimate(fwd_ctx *c, int64_t l, int64_t *L, float **res, void **xz, void **u, float **dbc,
                   float **dt, lmi_err *e)
{
    const struct lm_model *m = c->s->model;
    lmc_session *S = c->S;
    const lmi_forward *f = c->f;
    const double budget = f->deci_budget[l];
    const int64_t Lc = *L, R = f->deci_protect;
    if (budget < 0 || Lc - R <= 0) return LM_OK;
    const int64_t K = lmi_deci_keep_count(Lc, R, budget, f->deci_min_len);
    if (K >= Lc - R) return LM_OK;
    if (K + R < f->n_out)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "DeciMamba keeps %lld tokens, fewer than the %lld logits asked for",
                        (long long)(K + R), (long long)f->n_out);
    const bufsizes b = sizes_of(m);
    const lmc_layer *G = &c->M->layers[l];
    lm_status st;
    /* Host staging. */
    size_t hb = S->h_buf_floats * sizeof(float);
    st = grow_host((void **)&S->h_buf, &hb, (size_t)Lc * sizeof(float), e);
    S->h_buf_floats = hb / sizeof(float);
    if (st != LM_OK) return st;
    if ((size_t)Lc > S->h_idx_cap) {
        lmi_free(S->h_idx);
        lmi_free(S->h_scratch);
        lmi_free(S->h_idx32);
        S->h_idx = (int64_t *)lmi_alloc_raw((size_t)Lc, sizeof(int64_t));
        S->h_scratch = (int64_t *)lmi_alloc_raw((size_t)Lc, sizeof(int64_t));
        S->h_idx32 = (int32_t *)lmi_alloc_raw((size_t)Lc, sizeof(int32_t));
        S->h_idx_cap = (S->h_idx && S->h_scratch && S->h_idx32) ? (size_t)Lc : 0;
        if (!S->h_idx_cap) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    }
    CK(lmc_deci_scores(*dt, (int64_t)b.E, Lc, (int64_t)b.E, G->dt_b, S->scores, S->stream), "DeciMamba scores");
    CK(cudaMemcpyAsync(S->h_buf, S->scores, (size_t)Lc * sizeof(float), cudaMemcpyDeviceToHost, S->stream),
       "DeciMamba scores");
    CK(cudaStreamSynchronize(S->stream), "DeciMamba scores");
    st = lmi_deci_select(S->h_buf, Lc, R, K, S->h_idx, S->h_scratch, e);
    if (st != LM_OK) return st;
    const int64_t n = K + R;
    for (int64_t i = 0; i < n; i++) S->h_idx32[i] = (int32_t)S->h_idx[i];
    CK(cudaMemcpyAsync(S->idx, S->h_idx32, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, S->stream),
       "DeciMamba indices");
    /* Gather into the "2" buffers, then swap.  The first gather reads the
     * main buffers; on a second decimating layer the roles alternate. */
    float *res2 = (*res == S->res) ? S->res2 : S->res;
    void *xz2 = (*xz == S->xz) ? S->xz2 : S->xz;
    void *u2 = (*u == S->u) ? S->u2 : S->u;
    float *dbc2 = (*dbc == S->dbc) ? S->dbc2 : S->dbc;
    float *dt2 = (*dt == S->dt) ? S->dt2 : S->dt;
    CK(lmc_gather_rows(*res, (int64_t)(b.d * 4), res2, (int64_t)(b.d * 4), (int64_t)(b.d * 4), S->idx, n, S->stream), "gather");
    CK(lmc_gather_rows(*xz, (int64_t)(2 * b.E * b.ts), xz2, (int64_t)(2 * b.E * b.ts), (int64_t)(2 * b.E * b.ts), S->idx, n, S->stream), "gather");
    CK(lmc_gather_rows(*u, (int64_t)(b.E * b.ts), u2, (int64_t)(b.E * b.ts), (int64_t)(b.E * b.ts), S->idx, n, S->stream), "gather");
    CK(lmc_gather_rows(*dbc, (int64_t)(b.R2N * 4), dbc2, (int64_t)(b.R2N * 4), (int64_t)(b.R2N * 4), S->idx, n, S->stream), "gather");
    CK(lmc_gather_rows(*dt, (int64_t)(b.E * 4), dt2, (int64_t)(b.E * 4), (int64_t)(b.E * 4), S->idx, n, S->stream), "gather");
    *res = res2;
    *xz = xz2;
    *u = u2;
    *dbc = dbc2;
    *dt = dt2;
    *L = n;
    return LM_OK;
}

/* The whole model over L0 tokens already in S->tok; logits of the last
 * n_out rows end in S->logits. */
lm_status pipeline(fwd_ctx *c, int64_t L0, lmi_err *e)
{
    const struct lm_model *m = c->s->model;
    const lmi_dims *d = &m->dims;
    lmc_session *S = c->S;
    const lmc_model *M = c->M;
    const lmi_forward *f = c->f;
    const lmc_dtype T = M->dt;
    const bufsizes b = sizes_of(m);
    const int64_t D = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    const int64_t R2N = R + 2 * N;
    const bool tf32 = f->allow_tf32;
    cudaStream_t st = S->stream;
    int64_t L = L0;
    float *res = S->res, *dbc = S->dbc, *dt = S->dt;
    void *xz = S->xz, *u = S->u;
    lm_status ls;

    CK(lmc_embed(T, M->embed, D, S->tok, L, res, st), "embedding");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmc_layer *G = &M->layers[l];
        float *conv_state = S->conv_state + l * E * (K - 1);
        float *ssm_state = S->ssm_state + l * E * N;
        CK(lmc_rmsnorm(T, res, L, D, G->norm_w, (float)d->eps, S->hn, st), "rmsnorm");
        if (G->in_b) CK(lmc_fill_rows(T, xz, 2 * E, L, 2 * E, G->in_b, st), "in_proj bias");
        ls = lmc_linear(S->blas, T, G->in_w, 2 * E, D, S->hn, D, L, xz, T, 2 * E, G->in_b ? 1.f : 0.f, tf32, e);
        if (ls != LM_OK) return ls;
        CK(lmc_conv(T, xz, 2 * E, L, E, (int)K, G->conv_w, G->conv_b, conv_state, u, st), "conv1d");
        CK(lmc_conv_state_update(T, xz, 2 * E, L, E, (int)K, conv_state, st), "conv1d state");
        ls = lmc_linear(S->blas, T, G->x_w, R2N, E, u, E, L, dbc, LMC_F32, R2N, 0.f, tf32, e);
        if (ls != LM_OK) return ls;
        /* dt_proj: fp32 operands.  A bf16 model runs it on TF32 tensor cores
         * (inputs rounded to 2^-11, finer than the bf16 activations around
         * it; otherwise an fp32 SGEMM of 2 E R L flops on the CUDA cores);
         * an fp32 model only when the session allows TF32. */
        ls = lmc_linear(S->blas, LMC_F32, G->dt_w, E, R, dbc, R2N, L, dt, LMC_F32, E, 0.f,
                        tf32 || T == LMC_BF16, e);
        if (ls != LM_OK) return ls;
        if (f->sink && !c->capture) {
            CK(lmc_delta(dt, E, L, E, G->dt_b, S->delta, st), "delta export");
            CK(cudaMemcpyAsync(S->h_buf, S->delta, (size_t)(L * E) * sizeof(float), cudaMemcpyDeviceToHost, st),
               "delta export");
            CK(cudaStreamSynchronize(st), "delta export");
            ls = f->sink(f->sink_ctx, l, S->h_buf, L, E, e);
            if (ls != LM_OK) return ls;
        }
        if (f->deci_budget && !c->capture) {
            ls = decimate(c, l, &L, &res, &xz, &u, &dbc, &dt, e);
            if (ls != LM_OK) return ls;
        }
        lmc_scan_args a;
        memset(&a, 0, sizeof a);
        a.batch = 1; a.L = L; a.E = E; a.N = N; a.dtype = T;
        a.u = u; a.ldu = E;
        a.dt = dt; a.lddt = E;
        a.dt_bias = G->dt_b; a.dt_softplus = 1;
        a.A2 = G->A2;
        a.B = dbc + R; a.C = dbc + R + N; a.ldbc = R2N;
        a.D = G->D;
        a.z = static_cast<char *>(xz) + (size_t)E * b.ts; a.ldz = 2 * E;
        if (f->filters && f->filters[l].global) {
            a.flag = S->flt_flag + l * E;
            a.tau = S->flt_tau + l * E;
        }
        a.y = S->y; a.ldy = E;
        a.h = ssm_state;
        a.chunk_s = S->chunk_s; a.chunk_h = S->chunk_h;
        a.n_sm = M->sm_count;
        CK(lmc_scan(&a, st), "selective scan");
        if (G->out_b) CK(lmc_add_rows(res, L, D, G->out_b, st), "out_proj bias");
        ls = lmc_linear(S->blas, T, G->out_w, D, E, S->y, E, L, res, LMC_F32, D, 1.f, tf32, e);
        if (ls != LM_OK) return ls;
    }
    if (f->n_out > 0) {
        if (f->n_out > L)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "%lld logits asked for, %lld positions left",
                            (long long)f->n_out, (long long)L);
        CK(lmc_rmsnorm(T, res + (L - f->n_out) * D, f->n_out, D, M->norm_f, (float)d->eps, S->hf, st),
           "final norm");
        ls = lmc_linear(S->blas, T, M->lm_head, d->vocab, D, S->hf, D, f->n_out, S->logits, LMC_F32,
                        d->vocab, 0.f, tf32, e);
        if (ls != LM_OK) return ls;
    }
    return LM_OK;
}

/* The fused one-token step (decode.cu): 4 kernels per layer.  Vectors are
 * fp32: xz in S->xz (room for cap >= 64 rows of T), y in S->dt. */
lm_status pipeline_decode(fwd_ctx *c, lmi_err *e)
{
    const struct lm_model *m = c->s->model;
    const lmi_dims *d = &m->dims;
    lmc_session *S = c->S;
    const lmc_model *M = c->M;
    const lmc_dtype T = M->dt;
    const int64_t D = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    const int64_t R2N = R + 2 * N;
    const int nsm = M->sm_count;
    const int pdl = c->pdl ? 1 : 0;
    cudaStream_t st = S->stream;
    float *res = S->res, *xz = static_cast<float *>(S->xz), *dbc = S->dbc, *y = S->dt;
    CK(lmc_embed(T, M->embed, D, S->tok, 1, res, st), "embedding");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmc_layer *G = &M->layers[l];
        float *cs = S->conv_state + l * E * (K - 1);
        CK(lmc_dec_norm_gemv(T, res, D, G->norm_w, (float)d->eps, G->in_w, 2 * E, G->in_b, xz, nsm, pdl, st),
           "decode: norm + in_proj");
        CK(lmc_dec_conv_gemv(T, xz, E, cs, G->conv_w, G->conv_b, (int)K, G->x_w, R2N, dbc, nsm, pdl, st),
           "decode: conv + x_proj");
        CK(lmc_dec_scan_step(xz, E, N, R, (int)K, cs, G->conv_w, G->conv_b, dbc, G->dt_w, G->dt_b, G->A2,
                             G->D, S->ssm_state + l * E * N, y, pdl, st),
           "decode: scan step");
        CK(lmc_dec_gemv_add(T, y, E, G->out_w, D, G->out_b, res, nsm, pdl, st), "decode: out_proj");
    }
    if (c->f->n_out > 0)
        CK(lmc_dec_norm_gemv(T, res, D, M->norm_f, (float)d->eps, M->lm_head, d->vocab, NULL, S->logits, nsm, pdl, st),
           "decode: head");
    return LM_OK;
}

lm_status ensure_all(fwd_ctx *c, int64_t L, lmi_err *e)
{
    const struct lm_model *m = c->s->model;
    lmc_session *S = c->S;
    const lmi_forward *f = c->f;
    const bufsizes b = sizes_of(m);
    lm_status st = ensure_main(S, m, L, e);
    if (st == LM_OK) st = ensure_scan(S, m, L, e);
    if (st == LM_OK && f->deci_budget) st = ensure_deci(S, m, L, e);
    if (st == LM_OK && f->sink) {
        void *p = S->delta;
        st = grow(&p, &S->delta_bytes, (size_t)L * b.E * 4, S, e, "delta buffer (cudaMalloc)");
        S->delta = (float *)p;
        if (st == LM_OK) {
            size_t hb = S->h_buf_floats * sizeof(float);
            st = grow_host((void **)&S->h_buf, &hb, (size_t)L * b.E * 4, e);
            S->h_buf_floats = hb / sizeof(float);
        }
    }
    if (st == LM_OK && f->n_out > 0) {
        void *p = S->logits;
        st = grow(&p, &S->logits_bytes, (size_t)f->n_out * (size_t)m->dims.vocab * 4, S, e,
                  "logits (cudaMalloc)");
        S->logits = (float *)p;
        if (st == LM_OK) {
            p = S->hf;
            st = grow(&p, &S->hf_bytes, (size_t)f->n_out * b.d * b.ts, S, e, "logits (cudaMalloc)");
            S->hf = p;
        }
    }
    return st;
}

/* Copies the chunk's tokens and the LongMamba filters to the device. */
lm_status upload_inputs(fwd_ctx *c, bool tokens, lmi_err *e)
{
    const struct lm_model *m = c->s->model;
    lmc_session *S = c->S;
    const lmi_forward *f = c->f;
    const int64_t E = m->dims.d_inner;
    if (tokens)
        CK(cudaMemcpyAsync(S->tok, f->tokens, (size_t)f->n_tokens * sizeof(int32_t),
                           cudaMemcpyHostToDevice, S->stream), "token upload");
    if (f->filters) {
        for (int64_t l = 0; l < m->dims.n_layer; l++) {
            const lmi_filter *F = &f->filters[l];
            if (!F->global) continue;
            if (!F->tau) return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "filter of layer %lld has no thresholds", (long long)l);
            CK(cudaMemcpyAsync(S->flt_flag + l * E, F->global, (size_t)E, cudaMemcpyHostToDevice, S->stream),
               "filter upload");
            CK(cudaMemcpyAsync(S->flt_tau + l * E, F->tau, (size_t)E * sizeof(float), cudaMemcpyHostToDevice,
                               S->stream), "filter upload");
        }
    }
    return LM_OK;
}

bool any_filter(const struct lm_model *m, const lmi_forward *f)
{
    if (!f->filters) return false;
    for (int64_t l = 0; l < m->dims.n_layer; l++)
        if (f->filters[l].global) return true;
    return false;
}

uint64_t filter_key(const struct lm_model *m, const lmi_forward *f)
{
    uint64_t h = 0;
    if (f->filters)
        for (int64_t l = 0; l < m->dims.n_layer; l++)
            if (f->filters[l].global) h = (h ^ (uint64_t)(l + 1)) * 0x100000001B3ull;
    return h;
}

/* Runs the chunk through graph slot `slot` (0: one token, 1: a prefill
 * chunk), capturing it first when needed.  Inputs (tokens, filters) are
 * copied to their fixed device buffers before the launch. */
lm_status run_graph(fwd_ctx *c, int slot, bool *fallback, lmi_err *e)
{
    lmc_session *S = c->S;
    const lmi_forward *f = c->f;
    const int64_t L = f->n_tokens;
    const uint64_t fk = filter_key(c->s->model, f);
    lmc_session::lmc_graph *G = &S->graphs[slot];
    const int mode = L == 1 ? (c->fused ? (c->pdl ? 2 : 1) : 0) : 0;
    if (!G->valid || G->L != L || G->n_out != f->n_out || G->tf32 != f->allow_tf32 || G->mode != mode ||
        G->filt != fk) {
        if (G->exec) {
            cudaGraphExecDestroy(G->exec);
            G->exec = nullptr;
        }
        G->valid = false;
        cudaGraph_t g = nullptr;
        if (cudaStreamBeginCapture(S->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
            (void)cudaGetLastError();
            *fallback = true;
            return LM_OK;
        }
        fwd_ctx cc = *c;
        cc.capture = true;
        lm_status ls = (L == 1 && c->fused) ? pipeline_decode(&cc, e) : pipeline(&cc, L, e);
        cudaError_t ce = cudaStreamEndCapture(S->stream, &g);
        if (ls == LM_OK && ce == cudaSuccess) {
            ce = cudaGraphInstantiate(&G->exec, g, 0);
            if (ce != cudaSuccess) G->exec = nullptr;
        }
        if (g) cudaGraphDestroy(g);
        if (ls == LM_OK && ce != cudaSuccess && mode == 2 && !S->pdl_broken) {
            /* PDL edges not capturable here: plain launches from now on */
            (void)cudaGetLastError();
            S->pdl_broken = true;
            fwd_ctx c2 = *c;
            c2.pdl = false;
            return run_graph(&c2, slot, fallback, e);
        }
        if (ls != LM_OK || ce != cudaSuccess) {
            /* A capture can be invalidated by another thread's implicit
             * synchronisation; nothing ran, so run this chunk directly. */
            (void)cudaGetLastError();
            *fallback = true;
            return LM_OK;
        }
        G->valid = true;
        G->L = L;
        G->n_out = f->n_out;
        G->tf32 = f->allow_tf32;
        G->mode = mode;
        G->filt = fk;
    }
    if (L == 1) {
        *S->tok_pinned = f->tokens[0];
        CK(cudaMemcpyAsync(S->tok, S->tok_pinned, sizeof(int32_t), cudaMemcpyHostToDevice, S->stream),
           "token upload");
        if (f->filters) {
            lm_status ls = upload_inputs(c, false, e);
            if (ls != LM_OK) return ls;
        }
    } else {
        lm_status ls = upload_inputs(c, true, e);
        if (ls != LM_OK) return ls;
    }
    CK(cudaGraphLaunch(G->exec, S->stream), "graph launch");
    return LM_OK;
}

lm_status forward(struct lm_session *s, const lmi_forward *f, lmi_err *e)
{
    if (!s || !f || !s->bk)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: forward without a session");
    const struct lm_model *m = s->model;
    if (!f->tokens || f->n_tokens < 1 || f->n_out < 0 || f->n_out > f->n_tokens ||
        (f->n_out > 0 && !f->logits))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: bad forward arguments");
    if (f->n_tokens > INT32_MAX)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: chunk of %lld tokens too long",
                        (long long)f->n_tokens);
    fwd_ctx c;
    c.s = s;
    c.S = static_cast<lmc_session *>(s->bk);
    c.M = static_cast<const lmc_model *>(m->bk);
    c.f = f;
    c.capture = false;
    lmc_session *S = c.S;
    c.fused = S->decode_mode != 0;
    c.pdl = S->decode_mode == 2 && !S->pdl_broken;
    LMC_CUDA(cudaSetDevice(S->device), e, "cudaSetDevice");
    /* Allocate before touching the state: an out-of-memory failure leaves
     * the session as it was. */
    lm_status ls = ensure_all(&c, f->n_tokens, e);
    if (ls != LM_OK) return ls;
    /* Graphs for the one-token step and for full session-size chunks (the
     * shapes that repeat); DeciMamba (host selection) and the Δ sink (host
     * callback) need the direct path. */
    const bool step = f->n_tokens == 1 && f->n_out <= 1 && !f->sink && !any_filter(m, f) &&
                      (!f->deci_budget || f->deci_protect >= 1);
    const bool chunk = f->n_tokens > 1 && f->n_tokens == s->chunk_size && !f->sink && !f->deci_budget;
    bool direct = !step && !chunk;
    if (step || chunk) ls = run_graph(&c, step ? 0 : 1, &direct, e);
    if (ls == LM_OK && direct) {
        ls = upload_inputs(&c, true, e);
        if (ls == LM_OK) ls = (step && c.fused) ? pipeline_decode(&c, e) : pipeline(&c, f->n_tokens, e);
    }
    if (ls != LM_OK) {
        cudaStreamSynchronize(S->stream);
        (void)cudaGetLastError();
        return ls;
    }
    if (f->n_out > 0)
        CK(cudaMemcpyAsync(f->logits, S->logits, (size_t)f->n_out * (size_t)m->dims.vocab * sizeof(float),
                           cudaMemcpyDeviceToHost, S->stream), "logits download");
    CK(cudaStreamSynchronize(S->stream), "forward");
    return LM_OK;
}

} // namespace

extern "C" int lmc_session_replay_ms(struct lm_session *s, int iters, float *ms)
{
    if (!s || !s->bk || iters < 1 || !ms) return -1;
    lmc_session *S = static_cast<lmc_session *>(s->bk);
    if (!S->graphs[0].valid || cudaSetDevice(S->device) != cudaSuccess) return -1;
    cudaEvent_t a = nullptr, b = nullptr;
    int rc = -1;
    if (cudaEventCreate(&a) == cudaSuccess && cudaEventCreate(&b) == cudaSuccess &&
        cudaEventRecord(a, S->stream) == cudaSuccess) {
        bool ok = true;
        for (int i = 0; i < iters && ok; i++) ok = cudaGraphLaunch(S->graphs[0].exec, S->stream) == cudaSuccess;
        if (ok && cudaEventRecord(b, S->stream) == cudaSuccess && cudaEventSynchronize(b) == cudaSuccess &&
            cudaEventElapsedTime(ms, a, b) == cudaSuccess) {
            *ms /= (float)iters;
            rc = 0;
        }
    }
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    (void)cudaGetLastError();
    return rc;
}

extern "C" int lmc_session_fused_decode(struct lm_session *s, int on)
{
    if (!s || !s->bk) return -1;
    if (on < 0 || on > 2) return -1;
    static_cast<lmc_session *>(s->bk)->decode_mode = on;
    return 0;
}

extern "C" const lmi_backend_vt lmi_cuda_backend = {
    "cuda",
    model_init,
    model_free,
    session_init,
    session_free,
    session_reset,
    forward,
    state_read,
    state_write,
    lmc_forward_batch,
};
