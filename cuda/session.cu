/*
 * session.cu - the CUDA backend behind lmi_backend_vt, for both
 * architectures: the module entry, weight upload, sessions (stream, cuBLAS,
 * state, scratch), CUDA graphs, DeciMamba and Δ-sink glue, the forward
 * pass and the batched decode step.  What differs per architecture (the
 * layer sequence, buffer sets, the batched step) sits in mamba1.cu and
 * mamba2.cu behind lmc_arch.
 *
 * Weights are uploaded once per model into one device allocation and shared
 * read-only by the model's sessions.  Each session owns a stream, a cuBLAS
 * handle with a fixed workspace, its recurrent state (fp32) and scratch
 * grown to the largest chunk it has seen.  The one-token step and full
 * prefill chunks are captured in CUDA graphs and replayed; the batched
 * decode step (lm_session_decode_batch) too, per batch size.
 */
#include "common.cuh"
#include "gemm.cuh"
#include "kernels.h"

#include <math.h>
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
        device_status,
    };
    return &mod;
}

namespace {

const size_t kBlasWorkspace = 32u << 20;

/* The pipeline row of the layers' mixer kind; NULL when the layers mix
 * kinds or no row has theirs. */
const lmc_arch *arch_of(const struct lm_model *m)
{
    static const lmc_arch *const rows[] = {&lmc_mamba1, &lmc_mamba2};
    if (!m->layers || m->dims.n_layer < 1) return nullptr;
    const lmi_mixer_kind k = m->layers[0].kind;
    for (int64_t l = 1; l < m->dims.n_layer; l++)
        if (m->layers[l].kind != k) return nullptr;
    for (const lmc_arch *a : rows)
        if (a->mixer == k) return a;
    return nullptr;
}

/* Channels through conv1d, LongMamba channels, state floats per layer. */
size_t conv_dim(const lmi_dims *d) { return (size_t)(d->arch == LM_ARCH_MAMBA2 ? d->conv_dim : d->d_inner); }
size_t n_chan(const lmi_dims *d) { return (size_t)(d->arch == LM_ARCH_MAMBA2 ? d->n_heads : d->d_inner); }
size_t conv_floats(const lmi_dims *d) { return (size_t)d->n_layer * conv_dim(d) * (size_t)(d->d_conv - 1); }
size_t ssm_floats(const lmi_dims *d) { return (size_t)d->n_layer * (size_t)d->d_inner * (size_t)d->d_state; }

/* ---- model upload ------------------------------------------------------ */

enum { W_F32 = 0, W_MAT = 1, W_A2 = 2 }; /* fp32 copy, the matrix dtype, fp32 A * log2(e) */

/* One row of the weight table: the device pointer to fill, the host source,
 * its elements, how to store it, whether the model needs it. */
typedef struct wrow {
    const void **dst;
    const lmi_weight *src; /* in its stored type; src->data NULL: absent */
    size_t n;
    int kind;
    bool required;
    size_t off;            /* in the blob (filled by the uploader) */
} wrow;

#define LMC_MAX_WROWS(nl) (3 + 13 * (size_t)(nl))

/* The table of every weight of the model: the only place that reads the
 * host weight pointers (lm_model, lmi_layer).  Returns the row count. */
size_t weight_table(const struct lm_model *m, lmc_model *M, wrow *t)
{
    const lmi_dims *d = &m->dims;
    const bool m2 = arch_of(m) == &lmc_mamba2;
    const size_t V = (size_t)d->vocab, D = (size_t)d->d_model, E = (size_t)d->d_inner;
    const size_t N = (size_t)d->d_state, K = (size_t)d->d_conv, R = (size_t)d->dt_rank;
    const size_t H = (size_t)d->n_heads, CD = conv_dim(d);
    const size_t in_rows = m2 ? 2 * E + 2 * (size_t)d->n_groups * N + H : 2 * E;
    size_t n = 0;
#define ROW(dstp, srcp, count, kd, req) (t[n++] = wrow{(const void **)(dstp), (srcp), (count), (kd), (req), 0})
    ROW(&M->embed, &m->embed, V * D, W_MAT, true);
    if (m->lm_head.data && m->lm_head.data != m->embed.data) ROW(&M->lm_head, &m->lm_head, V * D, W_MAT, true);
    ROW(&M->norm_f, &m->norm_f, D, W_F32, true);
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmi_layer *L = &m->layers[l];
        lmc_layer *G = &M->layers[l];
        ROW(&G->norm_w, &L->norm_w, D, W_F32, true);
        ROW(&G->in_w, &L->mamba.in_w, in_rows * D, W_MAT, true);
        ROW(&G->in_b, &L->mamba.in_b, in_rows, W_F32, false);
        ROW(&G->conv_w, &L->mamba.conv_w, CD * K, W_F32, true);
        ROW(&G->conv_b, &L->mamba.conv_b, CD, W_F32, false);
        if (!m2) {
            ROW(&G->x_w, &L->mamba.x_w, (R + 2 * N) * E, W_MAT, true);
            ROW(&G->dt_w, &L->mamba.dt_w, E * R, W_F32, true);
        }
        ROW(&G->dt_b, &L->mamba.dt_b, m2 ? H : E, W_F32, m2);
        ROW(&G->A, &L->mamba.A, m2 ? H : E * N, m2 ? W_F32 : W_A2, true);
        ROW(&G->D, &L->mamba.D, m2 ? H : E, W_F32, m2);
        if (m2) ROW(&G->gnorm_w, &L->mamba.gnorm_w, E, W_F32, true);
        ROW(&G->out_w, &L->mamba.out_w, D * E, W_MAT, true);
        ROW(&G->out_b, &L->mamba.out_b, D, W_F32, false);
    }
#undef ROW
    return n;
}

void model_release(lmc_model *M)
{
    if (!M) return;
    if (M->blob) cudaFree(M->blob);
    lmi_free(M->layers);
    lmi_free(M);
}

/* Copies the table's rows into M->blob: fp32 rows widened from the stored
 * type on the host (lmc_upload_f32), bf16 matrices converted on the device
 * through an fp32 staging buffer of at most 16 Mi floats. */
lm_status upload(lmc_model *M, wrow *t, size_t n, lmi_err *e)
{
    size_t total = 0, biggest = 0;
    for (size_t i = 0; i < n; i++) {
        if (!t[i].src->data) {
            if (t[i].required) return lmi_fail(e, LM_ERR_MISSING, "cuda backend: missing weight tensor");
            continue;
        }
        const bool conv = t[i].kind == W_MAT && M->dt == LMC_BF16;
        t[i].off = total;
        total += lmc_align(t[i].n * (conv ? 2 : 4));
        if (conv && t[i].n > biggest) biggest = t[i].n;
    }
    M->blob_bytes = total;
    cudaError_t ce = cudaMalloc(&M->blob, total);
    if (ce != cudaSuccess) {
        M->blob = nullptr;
        return lmc_cuda_fail(e, ce, "uploading weights (cudaMalloc)");
    }
    const size_t stage_n = biggest < (16u << 20) ? biggest : (16u << 20);
    float *stage = nullptr;
    if (stage_n && (ce = cudaMalloc(&stage, stage_n * sizeof(float))) != cudaSuccess)
        return lmc_cuda_fail(e, ce, "uploading weights (staging buffer)");
    for (size_t i = 0; i < n && ce == cudaSuccess; i++) {
        const wrow *r = &t[i];
        if (!r->src->data) continue;
        char *dst = static_cast<char *>(M->blob) + r->off;
        *r->dst = dst;
        if (r->kind == W_MAT && M->dt == LMC_BF16) {
            for (size_t o = 0; o < r->n && ce == cudaSuccess; o += stage_n) {
                const size_t k = r->n - o < stage_n ? r->n - o : stage_n;
                ce = lmc_upload_f32(stage, r->src, o, k);
                if (ce == cudaSuccess) ce = lmc_convert(LMC_BF16, stage, dst + o * 2, k, 0);
                if (ce == cudaSuccess) ce = cudaStreamSynchronize(0);
            }
            continue;
        }
        ce = lmc_upload_f32(dst, r->src, 0, r->n);
        if (ce == cudaSuccess && r->kind == W_A2) ce = lmc_scale((float *)dst, r->n, LMC_LOG2E, 0);
        if (ce == cudaSuccess) ce = cudaStreamSynchronize(0);
    }
    if (stage) cudaFree(stage);
    if (ce != cudaSuccess) return lmc_cuda_fail(e, ce, "uploading weights");
    return LM_OK;
}

lm_status model_init(struct lm_model *m, lmi_err *e)
{
    const lmc_arch *A = arch_of(m);
    if (!A)
        return lmi_fail(e, LM_ERR_UNSUPPORTED,
                        "cuda backend: no pipeline for these layers (mixed mixer kinds, or a kind without one)");
    LMC_TRY(A->check(m, e));
    LMC_CK(cudaSetDevice(m->device), "cudaSetDevice");
    lmc_model *M = (lmc_model *)lmi_alloc(1, sizeof *M);
    if (!M) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    M->device = m->device;
    M->dt = lmc_model_dt(m);
    M->arch = A;
    if (cudaDeviceGetAttribute(&M->sm_count, cudaDevAttrMultiProcessorCount, m->device) != cudaSuccess)
        M->sm_count = 132;
    M->layers = (lmc_layer *)lmi_alloc((size_t)m->dims.n_layer, sizeof(lmc_layer));
    wrow *t = (wrow *)lmi_alloc(LMC_MAX_WROWS(m->dims.n_layer), sizeof(wrow));
    lm_status st = M->layers && t ? LM_OK : lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    if (st == LM_OK) st = upload(M, t, weight_table(m, M, t), e);
    lmi_free(t);
    if (st != LM_OK) {
        model_release(M);
        return st;
    }
    if (!M->lm_head) M->lm_head = M->embed; /* tied */
    m->bk = M;
    return LM_OK;
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

void batch_release(lmc_batch *Bt)
{
    if (!Bt) return;
    if (Bt->graph.exec) cudaGraphExecDestroy(Bt->graph.exec);
    free_dev(Bt->blob);
    free_dev(Bt->sblob);
    if (Bt->host) cudaFreeHost(Bt->host);
    if (Bt->shost) cudaFreeHost(Bt->shost);
    (void)cudaGetLastError();
    lmi_free(Bt);
}

void session_release(lmc_session *S)
{
    if (!S) return;
    cudaSetDevice(S->device);
    if (S->stream) cudaStreamSynchronize(S->stream);
    for (int i = 0; i < 2; i++)
        if (S->graphs[i].exec) cudaGraphExecDestroy(S->graphs[i].exec);
    batch_release(S->batch);
    if (S->blas) cublasDestroy(S->blas);
    if (S->stream) cudaStreamDestroy(S->stream);
    void *dev[] = {S->blas_ws, S->conv_state, S->ssm_state, S->scratch, S->deci,
                   S->chunk,   S->delta,      S->out,       S->flt_blob, S->vl};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) free_dev(dev[i]);
    if (S->tok_pinned) cudaFreeHost(S->tok_pinned);
    lmi_free(S->h_buf);
    lmi_free(S->h_idx);
    lmi_free(S->h_scratch);
    lmi_free(S->h_idx32);
    lmi_free(S->vl_host);
    (void)cudaGetLastError();
    lmi_free(S);
}

lm_status session_init(struct lm_session *s, lmi_err *e)
{
    const struct lm_model *m = s->model;
    const lmc_model *M = static_cast<const lmc_model *>(m->bk);
    if (!M) return lmi_fail(e, LM_ERR_BACKEND, "cuda backend: model weights not uploaded");
    const lmi_dims *d = &m->dims;
    LMC_CK(cudaSetDevice(M->device), "cudaSetDevice");
    lmc_session *S = (lmc_session *)lmi_alloc(1, sizeof *S);
    if (!S) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    S->device = M->device;
    S->decode_mode = 2;
    lm_status st = LM_OK;
    cudaError_t ce;
    cublasStatus_t bs;
    const size_t LC = (size_t)d->n_layer * n_chan(d);
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
    TRY(cudaMalloc(&S->conv_state, conv_floats(d) * sizeof(float) + 4), "recurrent state");
    TRY(cudaMalloc(&S->ssm_state, ssm_floats(d) * sizeof(float)), "recurrent state");
    TRY(cudaMemsetAsync(S->conv_state, 0, conv_floats(d) * sizeof(float), S->stream), "state reset");
    TRY(cudaMemsetAsync(S->ssm_state, 0, ssm_floats(d) * sizeof(float), S->stream), "state reset");
    TRY(cudaMalloc(&S->flt_blob, lmc_align(LC) + lmc_align(LC * sizeof(float)) + LC * sizeof(float)),
        "filter arrays");
    S->flt_flag = static_cast<uint8_t *>(S->flt_blob);
    S->flt_tau = reinterpret_cast<float *>(static_cast<char *>(S->flt_blob) + lmc_align(LC));
    S->mod_A = reinterpret_cast<float *>(static_cast<char *>(S->flt_blob) + lmc_align(LC) +
                                         lmc_align(LC * sizeof(float)));
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
    cudaMemsetAsync(S->conv_state, 0, conv_floats(d) * sizeof(float), S->stream);
    cudaMemsetAsync(S->ssm_state, 0, ssm_floats(d) * sizeof(float), S->stream);
    cudaStreamSynchronize(S->stream);
}

/* State copy between the host arrays and the session (to_dev: write). */
/* Part p of the state on the device and its size (floats). */
float *state_part(lmc_session *S, const lmi_dims *d, int p, size_t *n)
{
    *n = p == LMI_STATE_CONV ? conv_floats(d) : ssm_floats(d);
    return p == LMI_STATE_CONV ? S->conv_state : S->ssm_state;
}

lm_status state_copy(struct lm_session *s, float *const host[LMI_STATE_PARTS], bool to_dev, lmi_err *e)
{
    lmc_session *S = static_cast<lmc_session *>(s->bk);
    if (!S) return lmi_fail(e, LM_ERR_BACKEND, "cuda backend: session not initialised");
    const lmi_dims *d = &s->model->dims;
    const char *what = to_dev ? "state write" : "state read";
    const cudaMemcpyKind k = to_dev ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
    LMC_CK(cudaSetDevice(S->device), "cudaSetDevice");
    for (int p = 0; p < LMI_STATE_PARTS; p++) {
        if (!host[p]) continue;
        size_t n = 0;
        float *dev = state_part(S, d, p, &n);
        LMC_CK(cudaMemcpyAsync(to_dev ? (void *)dev : host[p], to_dev ? host[p] : dev, n * sizeof(float), k,
                               S->stream), what);
    }
    LMC_CK(cudaStreamSynchronize(S->stream), what);
    return LM_OK;
}

lm_status state_read(struct lm_session *s, float *const part[LMI_STATE_PARTS], lmi_err *e)
{
    return state_copy(s, part, false, e);
}

/* The host arrays are only read on this path (host to device). */
lm_status state_write(struct lm_session *s, const float *const part[LMI_STATE_PARTS], lmi_err *e)
{
    float *const host[LMI_STATE_PARTS] = {const_cast<float *>(part[0]), const_cast<float *>(part[1])};
    return state_copy(s, host, true, e);
}

/* ---- scratch ----------------------------------------------------------- */

/* Grows a device buffer to at least `need` bytes (contents not kept); the
 * session's graphs are invalidated when it moves.  On failure the buffer is
 * left empty, so a later call simply tries again. */
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

size_t total_of(const lmc_buf *rows, size_t n)
{
    size_t t = 0;
    for (size_t i = 0; i < n; i++) t += lmc_align(rows[i].bytes);
    return t;
}

/* Sets each row's pointer to consecutive aligned pieces of base. */
void carve(void *base, const lmc_buf *rows, size_t n)
{
    char *p = static_cast<char *>(base);
    for (size_t i = 0; i < n; i++) {
        *rows[i].dst = p;
        p += lmc_align(rows[i].bytes);
    }
}

/* Grows *blob to hold the rows and carves them from it. */
lm_status grow_carved(void **blob, size_t *have, const lmc_buf *rows, size_t n, lmc_session *S, lmi_err *e,
                      const char *what)
{
    LMC_TRY(grow(blob, have, total_of(rows, n), S, e, what));
    carve(*blob, rows, n);
    return LM_OK;
}

/* The activation buffers (main_bufs) for L tokens. */
lm_status ensure_main(const struct lm_model *m, lmc_session *S, int64_t L, lmi_err *e)
{
    if (L <= S->cap && S->scratch) return LM_OK;
    const lmc_arch *A = static_cast<const lmc_model *>(m->bk)->arch;
    lmc_buf rows[16];
    const size_t cap = (size_t)((L + 63) / 64 * 64);
    S->cap = 0;
    LMC_TRY(grow_carved(&S->scratch, &S->scratch_bytes, rows, A->main_bufs(m, S, cap, rows), S, e,
                        "activation buffers (cudaMalloc)"));
    S->cap = (int64_t)cap;
    return LM_OK;
}

/* Every buffer the forward pass f needs (before the state is touched: out
 * of memory leaves the session as it was). */
lm_status ensure(lmc_fwd *c, lmi_err *e)
{
    const struct lm_model *m = c->s->model;
    const lmi_dims *d = &m->dims;
    const lmc_arch *A = c->M->arch;
    lmc_session *S = c->S;
    const lmi_forward *f = c->f;
    const int64_t L = f->n_tokens;
    const size_t ts = lmc_dtype_size(c->M->dt);
    lmc_buf rows[16];
    LMC_TRY(ensure_main(m, S, L, e));
    const size_t scan = A->scan_bytes(m, L);
    if (scan) LMC_TRY(grow(&S->chunk, &S->chunk_bytes, scan, S, e, "scan scratch (cudaMalloc)"));
    if (f->tokens_hook)
        LMC_TRY(grow_carved(&S->deci, &S->deci_bytes, rows, A->deci_bufs(m, S, (size_t)L, rows), S, e,
                            "DeciMamba buffers (cudaMalloc)"));
    if (f->sink) {
        void *p = S->delta;
        LMC_TRY(grow(&p, &S->delta_bytes, (size_t)L * n_chan(d) * 4, S, e, "delta buffer (cudaMalloc)"));
        S->delta = (float *)p;
    }
    if (f->n_out > 0) {
        const lmc_buf out[] = {{&S->hf, (size_t)f->n_out * (size_t)d->d_model * ts},
                               {(void **)&S->logits, (size_t)f->n_out * (size_t)d->vocab * 4}};
        LMC_TRY(grow_carved(&S->out, &S->out_bytes, out, 2, S, e, "logits (cudaMalloc)"));
    }
    if (f->sink || f->tokens_hook)
        LMC_TRY(grow_host((void **)&S->h_buf, &S->h_buf_bytes, (size_t)L * n_chan(d) * 4, e));
    if (f->tokens_hook && (size_t)L > S->h_idx_cap) {
        lmi_free(S->h_idx);
        lmi_free(S->h_scratch);
        lmi_free(S->h_idx32);
        S->h_idx = (int64_t *)lmi_alloc_raw((size_t)L, sizeof(int64_t));
        S->h_scratch = (int64_t *)lmi_alloc_raw((size_t)L, sizeof(int64_t));
        S->h_idx32 = (int32_t *)lmi_alloc_raw((size_t)L, sizeof(int32_t));
        S->h_idx_cap = (S->h_idx && S->h_scratch && S->h_idx32) ? (size_t)L : 0;
        if (!S->h_idx_cap) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    }
    return LM_OK;
}

/* ---- CUDA graphs ------------------------------------------------------- */

bool same_key(const lmc_graph_key *a, const lmc_graph_key *b)
{
    return a->L == b->L && a->n_out == b->n_out && a->tf32 == b->tf32 && a->mode == b->mode && a->filt == b->filt;
}

/* Makes G hold the graph of rec(ctx) on stream st for key k, capturing it
 * when it is missing or was captured for another key.  Returns cudaSuccess
 * when G is ready; otherwise nothing ran (the capture was not possible,
 * e.g. invalidated by another thread's implicit synchronisation, or the
 * graph did not instantiate) and the caller runs rec directly. */
template <typename F>
cudaError_t graph_ready(lmc_graph *G, const lmc_graph_key *k, cudaStream_t st, F rec)
{
    if (G->valid && same_key(&G->key, k)) return cudaSuccess;
    if (G->exec) cudaGraphExecDestroy(G->exec);
    G->exec = nullptr;
    G->valid = false;
    cudaError_t ce = cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
    if (ce != cudaSuccess) {
        (void)cudaGetLastError();
        return ce;
    }
    lmi_err scratch;
    const lm_status ls = rec(&scratch);
    cudaGraph_t g = nullptr;
    ce = cudaStreamEndCapture(st, &g);
    if (ls == LM_OK && ce == cudaSuccess) {
        ce = cudaGraphInstantiate(&G->exec, g, 0);
        if (ce != cudaSuccess) G->exec = nullptr;
    }
    if (g) cudaGraphDestroy(g);
    if (ls != LM_OK && ce == cudaSuccess) ce = cudaErrorStreamCaptureInvalidated;
    (void)cudaGetLastError();
    if (ce != cudaSuccess) return ce;
    G->valid = true;
    G->key = *k;
    return cudaSuccess;
}

/* ---- the forward pass -------------------------------------------------- */

/* Copies the chunk's tokens (all, or the one through pinned memory) and the
 * LongMamba filters to their fixed device buffers. */
lm_status upload_inputs(lmc_fwd *c, lmi_err *e)
{
    const struct lm_model *m = c->s->model;
    lmc_session *S = c->S;
    const lmi_forward *f = c->f;
    const int64_t C = (int64_t)n_chan(&m->dims);
    if (f->n_tokens == 1) {
        *S->tok_pinned = f->tokens[0];
        LMC_CK(cudaMemcpyAsync(S->tok, S->tok_pinned, sizeof(int32_t), cudaMemcpyHostToDevice, S->stream),
               "token upload");
    } else {
        LMC_CK(cudaMemcpyAsync(S->tok, f->tokens, (size_t)f->n_tokens * sizeof(int32_t), cudaMemcpyHostToDevice,
                               S->stream), "token upload");
    }
    for (int64_t l = 0; f->filters && l < m->dims.n_layer; l++) {
        const lmi_filter *F = &f->filters[l];
        if (!F->global) continue;
        LMC_CK(cudaMemcpyAsync(S->flt_flag + l * C, F->global, (size_t)C, cudaMemcpyHostToDevice, S->stream),
               "filter upload");
        LMC_CK(cudaMemcpyAsync(S->flt_tau + l * C, F->tau, (size_t)C * sizeof(float), cudaMemcpyHostToDevice,
                               S->stream), "filter upload");
    }
    return LM_OK;
}

/* Which layers carry a LongMamba filter, and the scale hooks' values
 * (kernel arguments baked into a graph); 0: none. */
uint64_t filter_key(const struct lm_model *m, const lmi_forward *f)
{
    uint64_t h = 0;
    for (int64_t l = 0; l < m->dims.n_layer; l++) {
        if (f->filters && f->filters[l].global) h = (h ^ (uint64_t)(l + 1)) * 0x100000001B3ull;
        const float sc[2] = {f->delta_scale ? f->delta_scale[l] : 0.f, f->a_log_scale ? f->a_log_scale[l] : 0.f};
        for (int k = 0; k < 2; k++) {
            uint32_t bits;
            memcpy(&bits, &sc[k], 4);
            if (bits) h = (h ^ ((uint64_t)bits << 16 ^ (uint64_t)(2 * l + k + 1))) * 0x100000001B3ull;
        }
    }
    return h;
}


bool any_filter(const struct lm_model *m, const lmi_forward *f)
{
    for (int64_t l = 0; f->filters && l < m->dims.n_layer; l++)
        if (f->filters[l].global) return true;
    return false;
}

/* A prefill hook that the fused one-token step does not apply. */
bool has_hooks(const struct lm_model *m, const lmi_forward *f)
{
    return any_filter(m, f) || f->delta_scale || f->a_log_scale;
}

lm_status run_direct(lmc_fwd *c, lmi_err *e)
{
    return (c->f->n_tokens == 1 && c->fused) ? c->M->arch->step(c, e) : c->M->arch->pipeline(c, c->f->n_tokens, e);
}

/* Runs the chunk through graph slot `slot` (0: one token, 1: a prefill
 * chunk), capturing it first when needed; *fallback: not captured. */
lm_status run_graph(lmc_fwd *c, int slot, bool *fallback, lmi_err *e)
{
    lmc_session *S = c->S;
    const lmi_forward *f = c->f;
    const lmc_graph_key k = {f->n_tokens, f->n_out, f->allow_tf32,
                             f->n_tokens == 1 && c->fused ? (c->pdl ? 2 : 1) : 0, filter_key(c->s->model, f)};
    lmc_fwd cc = *c;
    cc.capture = true;
    cudaError_t ce = graph_ready(&S->graphs[slot], &k, S->stream, [&](lmi_err *ec) { return run_direct(&cc, ec); });
    if (ce != cudaSuccess && k.mode == 2 && !S->pdl_broken) {
        /* PDL edges not capturable here: plain launches from now on */
        S->pdl_broken = true;
        lmc_fwd c2 = *c;
        c2.pdl = false;
        return run_graph(&c2, slot, fallback, e);
    }
    if (ce != cudaSuccess) {
        *fallback = true;
        return LM_OK;
    }
    LMC_TRY(upload_inputs(c, e));
    LMC_CK(cudaGraphLaunch(S->graphs[slot].exec, S->stream), "graph launch");
    return LM_OK;
}

/* The forward pass without the logits download and the final sync: the
 * logits of the last n_out rows stay in S->logits. */
lm_status forward_async(struct lm_session *s, const lmi_forward *f, lmi_err *e)
{
    if (!s || !f || !s->bk)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: forward without a session");
    const struct lm_model *m = s->model;
    if (!f->tokens || f->n_tokens < 1 || f->n_out < 0 || f->n_out > f->n_tokens || (f->n_out > 0 && !f->logits))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: bad forward arguments");
    if (f->n_tokens > INT32_MAX)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: chunk of %lld tokens too long", (long long)f->n_tokens);
    for (int64_t l = 0; f->filters && l < m->dims.n_layer; l++)
        if (f->filters[l].global && !f->filters[l].tau)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "filter of layer %lld has no thresholds", (long long)l);
    lmc_fwd c;
    c.s = s;
    c.S = static_cast<lmc_session *>(s->bk);
    c.M = static_cast<const lmc_model *>(m->bk);
    c.f = f;
    c.capture = false;
    lmc_session *S = c.S;
    /* the fused step is plain decode: a one-token prefill with hooks runs the pipeline */
    c.fused = c.M->arch->step && S->decode_mode != 0 && !has_hooks(m, f);
    c.pdl = S->decode_mode == 2 && !S->pdl_broken;
    LMC_CK(cudaSetDevice(S->device), "cudaSetDevice");
    lm_status ls = ensure(&c, e);
    if (ls != LM_OK) return ls;
    /* Graphs for the one-token step and for full session-size chunks (the
     * shapes that repeat); DeciMamba (host selection) and the Δ sink (host
     * callback) need the direct path. */
    const bool step = f->n_tokens == 1 && f->n_out <= 1 && !f->sink && !has_hooks(m, f) && !f->tokens_hook;
    const bool chunk = f->n_tokens > 1 && f->n_tokens == s->chunk_size && !f->sink && !f->tokens_hook;
    bool direct = !step && !chunk;
    if (step || chunk) ls = run_graph(&c, step ? 0 : 1, &direct, e);
    if (ls == LM_OK && direct) {
        ls = upload_inputs(&c, e);
        if (ls == LM_OK) ls = run_direct(&c, e);
    }
    if (ls != LM_OK) {
        cudaStreamSynchronize(S->stream);
        (void)cudaGetLastError();
        return ls;
    }
    return LM_OK;
}

lm_status forward(struct lm_session *s, const lmi_forward *f, lmi_err *e)
{
    LMC_TRY(forward_async(s, f, e));
    const lmc_session *S = static_cast<const lmc_session *>(s->bk);
    if (f->n_out > 0)
        LMC_CK(cudaMemcpyAsync(f->logits, S->logits, (size_t)f->n_out * (size_t)s->model->dims.vocab * sizeof(float),
                               cudaMemcpyDeviceToHost, S->stream), "logits download");
    LMC_CK(cudaStreamSynchronize(S->stream), "forward");
    return LM_OK;
}

/* ---- batched decode ----------------------------------------------------- */

/* Pinned staging: tokens, then (16-byte aligned) the two pointer tables. */
size_t host_tok_bytes(size_t cap) { return (cap * 4 + 15) / 16 * 16; }

/* Buffers for n sessions; on failure the old ones stay (the sessions are
 * untouched either way). */
lm_status batch_ensure(lmc_session *S, const struct lm_model *m, int64_t n, lmi_err *e)
{
    if (S->batch && S->batch->cap >= n) return LM_OK;
    const lmc_model *M = static_cast<const lmc_model *>(m->bk);
    const size_t cap = (size_t)((n + 7) / 8 * 8);
    lmc_batch *Bt = (lmc_batch *)lmi_alloc(1, sizeof *Bt);
    if (!Bt) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    lmc_buf rows[16];
    const size_t nr = M->arch->batch_bufs(m, Bt, cap, rows);
    Bt->blob_bytes = total_of(rows, nr);
    cudaError_t ce = cudaMalloc(&Bt->blob, Bt->blob_bytes);
    if (ce != cudaSuccess) Bt->blob = nullptr;
    if (ce == cudaSuccess) {
        ce = cudaMallocHost(&Bt->host, host_tok_bytes(cap) + 2 * cap * sizeof(float *));
        if (ce != cudaSuccess) Bt->host = nullptr;
    }
    if (ce != cudaSuccess) {
        const lm_status st = lmc_cuda_fail(e, ce, "batched decode buffers");
        batch_release(Bt);
        return st;
    }
    carve(Bt->blob, rows, nr);
    Bt->cap = (int64_t)cap;
    batch_release(S->batch);
    S->batch = Bt;
    return LM_OK;
}

} // namespace

/* ---- shared glue for the pipelines ---------------------------------------- */

lm_status lmc_sink(lmc_fwd *c, int64_t l, const float *delta, int64_t L, int64_t n, lmi_err *e)
{
    lmc_session *S = c->S;
    const lmi_forward *f = c->f;
    LMC_CK(cudaMemcpyAsync(S->h_buf, delta, (size_t)(L * n) * sizeof(float), cudaMemcpyDeviceToHost, S->stream),
           "delta export");
    LMC_CK(cudaStreamSynchronize(S->stream), "delta export");
    return f->sink(f->sink_ctx, l, S->h_buf, L, n, e);
}

lm_status lmc_decimate(lmc_fwd *c, int64_t l, int64_t *L, lmc_gather *g, size_t ng,
                       cudaError_t (*score)(lmc_fwd *c, int64_t l, int64_t L, const lmc_gather *g), lmi_err *e)
{
    lmc_session *S = c->S;
    const lmi_forward *f = c->f;
    const int64_t Lc = *L, n = lmi_token_hook_keeps(f->tokens_hook, l, Lc);
    if (n >= Lc) return LM_OK;
    if (n < f->n_out)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "the token hook keeps %lld tokens, fewer than the %lld logits asked for",
                        (long long)n, (long long)f->n_out);
    cudaStream_t st = S->stream;
    LMC_CK(score(c, l, Lc, g), "DeciMamba scores");
    LMC_CK(cudaMemcpyAsync(S->h_buf, S->scores, (size_t)Lc * sizeof(float), cudaMemcpyDeviceToHost, st),
           "DeciMamba scores");
    LMC_CK(cudaStreamSynchronize(st), "DeciMamba scores");
    LMC_TRY(f->tokens_hook->select(f->tokens_hook->ctx, l, S->h_buf, Lc, S->h_idx, S->h_scratch, e));
    for (int64_t i = 0; i < n; i++) S->h_idx32[i] = (int32_t)S->h_idx[i];
    LMC_CK(cudaMemcpyAsync(S->idx, S->h_idx32, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, st),
           "DeciMamba indices");
    /* Gather into the other buffer of each pair: the first gather reads the
     * main buffers; on a second decimating layer the roles alternate. */
    for (size_t i = 0; i < ng; i++) {
        const bool from_a = *g[i].cur == g[i].a;
        void *dst = from_a ? g[i].b : g[i].a;
        const int64_t lds = from_a ? g[i].lda : g[i].ldb, ldd = from_a ? g[i].ldb : g[i].lda;
        LMC_CK(lmc_gather_rows(*g[i].cur, lds, dst, ldd, g[i].row, S->idx, n, st), "DeciMamba gather");
        *g[i].cur = dst;
        if (g[i].ld) *g[i].ld = ldd / 4;
    }
    *L = n;
    return LM_OK;
}

lm_status lmc_out_proj(lmc_session *S, lmc_dtype T, const lmc_layer *G, int64_t D, int64_t E, const void *y,
                       int64_t rows, float *res, bool tf32, lmi_err *e)
{
    if (G->out_b) LMC_CK(lmc_add_rows(res, rows, D, G->out_b, S->stream), "out_proj bias");
    return lmc_linear(S->blas, T, G->out_w, D, E, y, E, rows, res, LMC_F32, D, 1.f, tf32, e);
}

lm_status lmc_head(lmc_session *S, const lmc_model *M, const lmi_dims *d, const float *res, int64_t rows, void *hn,
                   float *logits, bool tf32, lmi_err *e)
{
    const int64_t D = d->d_model;
    LMC_CK(lmc_rmsnorm(M->dt, res, rows, D, M->norm_f, (float)d->eps, hn, S->stream), "final norm");
    return lmc_linear(S->blas, M->dt, M->lm_head, d->vocab, D, hn, D, rows, logits, LMC_F32, d->vocab, 0.f, tf32, e);
}

/* Stages the batch's inputs (tokens, state tables), runs `before` (e.g.
 * the state backup), then the step for n sessions through the batch's
 * graph; logits stay on the device (Bt->logits) when want_logits.  Does
 * not synchronise. */
template <typename Before>
lm_status run_batch(struct lm_session *const *ss, int64_t n, const int32_t *tokens, bool tf32, bool want_logits,
                    Before before, lmi_err *e)
{
    const struct lm_model *m = ss[0]->model;
    if (n > (int64_t)INT32_MAX)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: batch of %lld sessions too large", (long long)n);
    lmc_session *S = static_cast<lmc_session *>(ss[0]->bk);
    const lmc_arch *A = static_cast<const lmc_model *>(m->bk)->arch;
    LMC_CK(cudaSetDevice(S->device), "cudaSetDevice");
    LMC_TRY(batch_ensure(S, m, n, e));
    lmc_batch *Bt = S->batch;
    /* Inputs: tokens and the state tables, staged in pinned memory. */
    int32_t *htok = static_cast<int32_t *>(Bt->host);
    float **hptr = reinterpret_cast<float **>(static_cast<char *>(Bt->host) + host_tok_bytes((size_t)Bt->cap));
    for (int64_t i = 0; i < n; i++) {
        const lmc_session *Si = static_cast<const lmc_session *>(ss[i]->bk);
        if (!Si || Si->device != S->device || ss[i]->model != m)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: session %lld has no state on this device",
                            (long long)i);
        htok[i] = tokens[i];
        hptr[i] = Si->conv_state;
        hptr[n + i] = Si->ssm_state;
    }
    cudaStream_t st = S->stream;
    LMC_CK(cudaMemcpyAsync(Bt->tok, htok, (size_t)n * 4, cudaMemcpyHostToDevice, st), "batched decode: inputs");
    LMC_CK(cudaMemcpyAsync(Bt->conv_ptr, hptr, (size_t)n * sizeof(float *), cudaMemcpyHostToDevice, st),
           "batched decode: inputs");
    LMC_CK(cudaMemcpyAsync(Bt->ssm_ptr, hptr + n, (size_t)n * sizeof(float *), cudaMemcpyHostToDevice, st),
           "batched decode: inputs");
    LMC_CK(before(), "batched decode: before the step");
    const lmc_graph_key k = {n, want_logits ? n : 0, tf32, 0, 0};
    if (graph_ready(&Bt->graph, &k, st, [&](lmi_err *ec) { return A->batch(m, S, n, want_logits, tf32, ec); }) ==
        cudaSuccess) {
        const cudaError_t ce = cudaGraphLaunch(Bt->graph.exec, st);
        if (ce != cudaSuccess) return lmc_cuda_fail(e, ce, "batched decode: graph launch");
        return LM_OK;
    }
    return A->batch(m, S, n, want_logits, tf32, e);
}

lm_status lmc_forward_batch(struct lm_session *const *ss, size_t n_sessions, const int32_t *tokens, float *logits,
                            bool tf32, lmi_err *e)
{
    if (!ss || n_sessions == 0 || !tokens || !ss[0] || !ss[0]->bk)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: batched decode without sessions");
    const struct lm_model *m = ss[0]->model;
    const int64_t n = (int64_t)n_sessions;
    lmc_session *S = static_cast<lmc_session *>(ss[0]->bk);
    const bool want = logits != nullptr;
    lm_status ls = run_batch(ss, n, tokens, tf32, want, []() { return cudaSuccess; }, e);
    cudaStream_t st = S->stream;
    if (ls == LM_OK && want) {
        const cudaError_t ce = cudaMemcpyAsync(logits, S->batch->logits,
                                               (size_t)n * (size_t)m->dims.vocab * sizeof(float),
                                               cudaMemcpyDeviceToHost, st);
        if (ce != cudaSuccess) ls = lmc_cuda_fail(e, ce, "batched decode: logits download");
    }
    const cudaError_t ce = cudaStreamSynchronize(st);
    if (ls == LM_OK && ce != cudaSuccess) ls = lmc_cuda_fail(e, ce, "batched decode");
    if (ls != LM_OK) (void)cudaGetLastError();
    return ls;
}

/* The sampling buffers of the batch (its cap), on first use. */
lm_status sample_ensure(lmc_batch *Bt, const lmi_dims *d, lmi_err *e)
{
    if (Bt->sblob) return LM_OK;
    const size_t cap = (size_t)Bt->cap, per = conv_floats(d) + ssm_floats(d);
    const lmc_buf rows[] = {{(void **)&Bt->params, cap * sizeof(lmc_sample_param)},
                            {(void **)&Bt->next, cap * sizeof(int32_t)},
                            {(void **)&Bt->backup, cap * per * sizeof(float)}};
    void *blob = nullptr, *host = nullptr;
    cudaError_t ce = cudaMalloc(&blob, total_of(rows, 3));
    if (ce == cudaSuccess) ce = cudaMallocHost(&host, cap * (sizeof(lmc_sample_param) + sizeof(int32_t)));
    if (ce != cudaSuccess) {
        if (blob) cudaFree(blob);
        (void)cudaGetLastError();
        return lmc_cuda_fail(e, ce, "sampling buffers");
    }
    carve(blob, rows, 3);
    Bt->sblob = blob;
    Bt->shost = host;
    return LM_OK;
}

/* Both state parts of every session to the backup or back. */
cudaError_t backup_states(lmc_batch *Bt, const lmi_dims *d, int64_t n, bool restore, cudaStream_t st)
{
    const size_t nc = conv_floats(d), ns = ssm_floats(d);
    cudaError_t ce = lmc_state_copy_batch(Bt->conv_ptr, (int64_t)nc, Bt->backup, n, restore, st);
    if (ce == cudaSuccess)
        ce = lmc_state_copy_batch(Bt->ssm_ptr, (int64_t)ns, Bt->backup + (size_t)n * nc, n, restore, st);
    return ce;
}

/* One session's state parts to / from row 0 of the backup. */
cudaError_t backup_one(lmc_session *S, lmc_batch *Bt, const lmi_dims *d, bool restore)
{
    const size_t nc = conv_floats(d), ns = ssm_floats(d);
    const cudaMemcpyKind k = cudaMemcpyDeviceToDevice;
    cudaError_t ce = restore ? cudaMemcpyAsync(S->conv_state, Bt->backup, nc * 4, k, S->stream)
                             : cudaMemcpyAsync(Bt->backup, S->conv_state, nc * 4, k, S->stream);
    if (ce == cudaSuccess)
        ce = restore ? cudaMemcpyAsync(S->ssm_state, Bt->backup + nc, ns * 4, k, S->stream)
                     : cudaMemcpyAsync(Bt->backup + nc, S->ssm_state, ns * 4, k, S->stream);
    return ce;
}

/* lm_session_decode_sample on the device: the step (one session: its own
 * fused step graph; more: the batched step graph), then lmc_sample_rows
 * over the logits left on the device; only the ids and the rows asked for
 * come back.  The states are backed up first (one read and write of
 * each), so a non-finite logit undoes the step. */
lm_status lmc_sample_batch(struct lm_session *const *ss, size_t n_sessions, const int32_t *tokens, int32_t *next,
                           float *logits, const uint8_t *want, lmi_err *e)
{
    if (!ss || n_sessions == 0 || !tokens || !next || !ss[0] || !ss[0]->bk)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: sampled step without sessions");
    const struct lm_model *m = ss[0]->model;
    const lmi_dims *d = &m->dims;
    const int64_t n = (int64_t)n_sessions, V = d->vocab;
    lmc_session *S = static_cast<lmc_session *>(ss[0]->bk);
    cudaStream_t st = S->stream;
    LMC_CK(cudaSetDevice(S->device), "cudaSetDevice");
    LMC_TRY(batch_ensure(S, m, n, e));
    lmc_batch *Bt = S->batch;
    LMC_TRY(sample_ensure(Bt, d, e));
    lmc_sample_param *hp = static_cast<lmc_sample_param *>(Bt->shost);
    int32_t *hnext = reinterpret_cast<int32_t *>(hp + Bt->cap);
    bool tf32 = true;
    for (int64_t i = 0; i < n; i++) {
        const lmi_sampler *sp = &ss[i]->sampler;
        hp[i] = lmc_sample_param{sp->temperature, sp->top_k, sp->top_p, sp->seed, ss[i]->pos + 1};
        tf32 = tf32 && (ss[i]->flags & LM_SESSION_ALLOW_TF32) != 0;
    }
    LMC_CK(cudaMemcpyAsync(Bt->params, hp, (size_t)n * sizeof *hp, cudaMemcpyHostToDevice, st), "sampling params");
    lm_status ls;
    const float *dev_logits;
    if (n == 1) {
        LMC_CK(backup_one(S, Bt, d, false), "sampled step: state backup");
        lmi_forward f;
        memset(&f, 0, sizeof f);
        f.tokens = tokens;
        f.n_tokens = 1;
        f.n_out = 1;
        f.logits = reinterpret_cast<float *>(hnext); /* only marks them wanted: forward_async leaves them in S->logits */
        f.allow_tf32 = tf32;
        ls = forward_async(ss[0], &f, e);
        dev_logits = S->logits;
    } else {
        ls = run_batch(ss, n, tokens, tf32, true, [&]() { return backup_states(Bt, d, n, false, st); }, e);
        dev_logits = Bt->logits;
    }
    if (ls != LM_OK) {
        cudaStreamSynchronize(st);
        (void)cudaGetLastError();
        return ls;
    }
    cudaError_t ce = lmc_sample_rows(dev_logits, V, V, n, Bt->params, Bt->next, st);
    if (ce == cudaSuccess) ce = cudaMemcpyAsync(hnext, Bt->next, (size_t)n * sizeof(int32_t), cudaMemcpyDeviceToHost, st);
    for (int64_t i = 0; ce == cudaSuccess && logits && i < n; i++)
        if (want[i])
            ce = cudaMemcpyAsync(logits + (size_t)i * (size_t)V, dev_logits + (size_t)i * (size_t)V,
                                 (size_t)V * sizeof(float), cudaMemcpyDeviceToHost, st);
    if (ce == cudaSuccess) ce = cudaStreamSynchronize(st);
    if (ce != cudaSuccess) {
        (void)cudaGetLastError();
        return lmc_cuda_fail(e, ce, "sampled step");
    }
    for (int64_t i = 0; i < n; i++) {
        if (hnext[i] >= 0 && hnext[i] < V) continue;
        ce = n == 1 ? backup_one(S, Bt, d, true) : backup_states(Bt, d, n, true, st);
        if (ce == cudaSuccess) ce = cudaStreamSynchronize(st);
        if (ce != cudaSuccess) return lmc_cuda_fail(e, ce, "sampled step: restoring the states");
        return lmi_fail(e, LM_ERR_NUMERIC, "sessions[%lld]: a logit is not finite (NaN or infinite)", (long long)i);
    }
    memcpy(next, hnext, (size_t)n * sizeof(int32_t));
    return LM_OK;
}

/* ---- batched prefill ----------------------------------------------------- */

namespace {

/* The tables of the packed sequences, in this order in one device block
 * and in its host staging (same offsets: one copy), then the device-only
 * rows: the last rows gathered, their normed form, their logits. */
size_t prefill_rows(lmc_buf *r, int64_t n, int64_t nch, int64_t rows, const lmi_dims *d, size_t ts, int64_t **cu,
                    int64_t **cuc, int64_t **ct0, float ***conv_ptr, float ***ssm_ptr, int32_t **last,
                    float **res_last, void **hl, float **logits)
{
    const size_t D = (size_t)d->d_model, V = (size_t)d->vocab, k = (size_t)rows;
    const lmc_buf b[] = {{(void **)cu, (size_t)(n + 1) * 8},     {(void **)cuc, (size_t)(n + 1) * 8},
                         {(void **)ct0, (size_t)(nch + 1) * 8},  {(void **)conv_ptr, (size_t)n * sizeof(float *)},
                         {(void **)ssm_ptr, (size_t)n * sizeof(float *)}, {(void **)last, k * 4 + 4},
                         {(void **)res_last, k * D * 4 + 4},     {hl, k * D * ts + 4},
                         {(void **)logits, k * V * 4 + 4}};
    memcpy(r, b, sizeof b);
    return sizeof b / sizeof b[0];
}

} // namespace

/* A piece of lm_session_prefill_batch: the sequences' tokens packed into
 * the owner's activation buffers, the tables of offsets, chunks and state
 * pointers uploaded once, the pipeline's varlen sequence over all of them
 * (each weight read once), then the head over the last rows asked for.
 * No graph: the shapes change from call to call. */
lm_status lmc_prefill_batch(struct lm_session *owner, const lmi_seq *seq, size_t n_seq, bool tf32, lmi_err *e)
{
    if (!owner || !owner->bk || !seq || n_seq == 0)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: batched prefill without sequences");
    const struct lm_model *m = owner->model;
    const lmi_dims *d = &m->dims;
    const lmc_model *M = static_cast<const lmc_model *>(m->bk);
    const lmc_arch *A = M->arch;
    lmc_session *S = static_cast<lmc_session *>(owner->bk);
    const int64_t n = (int64_t)n_seq, V = d->vocab;
    if (n > 65535)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: %lld prompts in one batch (at most 65535)",
                        (long long)n);
    int64_t T = 0, rows = 0;
    for (int64_t i = 0; i < n; i++) {
        const lmc_session *Si = seq[i].s ? static_cast<const lmc_session *>(seq[i].s->bk) : nullptr;
        if (!Si || seq[i].s->model != m || Si->device != S->device || !seq[i].tokens || seq[i].n_tokens < 1)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: sequence %lld has no state on this device",
                            (long long)i);
        if (seq[i].n_tokens > INT32_MAX - T)
            return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: batched prefill of more than %d tokens",
                            INT32_MAX);
        T += seq[i].n_tokens;
        rows += seq[i].logits != nullptr;
    }
    const int chunk = A->varlen_chunk(m, T);
    int64_t nch = 0;
    for (int64_t i = 0; i < n; i++) nch += (seq[i].n_tokens + chunk - 1) / chunk;
    LMC_CK(cudaSetDevice(S->device), "cudaSetDevice");
    /* every buffer first: out of memory changes no state */
    LMC_TRY(ensure_main(m, S, T, e));
    const size_t scan = A->varlen_scan_bytes(m, nch, chunk);
    if (scan) LMC_TRY(grow(&S->chunk, &S->chunk_bytes, scan, S, e, "scan scratch (cudaMalloc)"));
    int64_t *cu, *cuc, *ct0, *hcu, *hcuc, *hct0;
    float **cptr, **sptr, **hcptr, **hsptr, *res_last, *logits, *hres_last, *hlogits;
    int32_t *last, *hlast;
    void *hl, *hhl;
    lmc_buf r[12];
    const size_t ts = lmc_dtype_size(M->dt);
    const size_t nr = prefill_rows(r, n, nch, rows, d, ts, &cu, &cuc, &ct0, &cptr, &sptr, &last, &res_last, &hl,
                                   &logits);
    LMC_TRY(grow_carved(&S->vl, &S->vl_bytes, r, nr, S, e, "batched prefill buffers (cudaMalloc)"));
    const size_t tables = total_of(r, 6); /* cu .. last */
    const size_t tok_off = lmc_align(tables);
    LMC_TRY(grow_host(&S->vl_host, &S->vl_host_bytes, tok_off + (size_t)T * 4, e));
    prefill_rows(r, n, nch, rows, d, ts, &hcu, &hcuc, &hct0, &hcptr, &hsptr, &hlast, &hres_last, &hhl, &hlogits);
    carve(S->vl_host, r, 6);
    int32_t *htok = reinterpret_cast<int32_t *>(static_cast<char *>(S->vl_host) + tok_off);
    /* offsets of tokens and of chunks (a chunk never crosses two sequences) */
    hcu[0] = hcuc[0] = 0;
    int64_t k = 0, j = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t len = seq[i].n_tokens;
        for (int64_t t = 0; t < len; t += chunk) hct0[k++] = hcu[i] + t;
        memcpy(htok + hcu[i], seq[i].tokens, (size_t)len * sizeof(int32_t));
        hcu[i + 1] = hcu[i] + len;
        hcuc[i + 1] = k;
        const lmc_session *Si = static_cast<const lmc_session *>(seq[i].s->bk);
        hcptr[i] = Si->conv_state;
        hsptr[i] = Si->ssm_state;
        if (seq[i].logits) hlast[j++] = (int32_t)(hcu[i + 1] - 1);
    }
    hct0[nch] = T;
    cudaStream_t st = S->stream;
    /* pageable sources: each copy returns once its bytes are staged */
    LMC_CK(cudaMemcpyAsync(S->tok, htok, (size_t)T * 4, cudaMemcpyHostToDevice, st), "batched prefill: tokens");
    LMC_CK(cudaMemcpyAsync(cu, hcu, tables, cudaMemcpyHostToDevice, st), "batched prefill: tables");
    const lmc_seqs q = {n, T, cu, cuc, ct0, nch, chunk, cptr, sptr, S->chunk};
    lm_status ls = A->varlen(m, S, &q, tf32, e);
    if (ls == LM_OK && rows > 0) {
        const int64_t rb = d->d_model * 4;
        cudaError_t ce = lmc_gather_rows(S->res, rb, res_last, rb, rb, last, rows, st);
        ls = ce == cudaSuccess ? lmc_head(S, M, d, res_last, rows, hl, logits, tf32, e)
                               : lmc_cuda_fail(e, ce, "batched prefill: last rows");
        for (int64_t i = 0, r2 = 0; ls == LM_OK && i < n; i++) {
            if (!seq[i].logits) continue;
            ce = cudaMemcpyAsync(seq[i].logits, logits + r2++ * V, (size_t)V * sizeof(float), cudaMemcpyDeviceToHost,
                                 st);
            if (ce != cudaSuccess) ls = lmc_cuda_fail(e, ce, "batched prefill: logits download");
        }
    }
    const cudaError_t ce = cudaStreamSynchronize(st);
    if (ls == LM_OK && ce != cudaSuccess) ls = lmc_cuda_fail(e, ce, "batched prefill");
    if (ls != LM_OK) (void)cudaGetLastError();
    return ls;
}

/* One table for every model: model->bk->arch picks the pipeline. */
extern "C" const lmi_backend_vt lmi_cuda_backend = {"cuda", model_init, model_free, session_init, session_free,
                                                    session_reset, forward, state_read, state_write,
                                                    lmc_forward_batch, lmc_sample_batch, lmc_prefill_batch};
