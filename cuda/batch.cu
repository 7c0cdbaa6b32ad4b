/*
 * batch.cu - one decode step for n sessions of one Mamba-1 model at once
 * (lm_session_decode_batch).
 *
 * Decoding is bound by reading the weights: one session reads every weight
 * once per token.  Here the matrix products run as cuBLAS GEMMs with the
 * batch as their n dimension, so each weight is read once per step for the
 * whole batch.  The element-wise parts (the conv step, Δ/softplus and the
 * state update) reach each session's own recurrent state through a device
 * table of state pointers, so no state is copied in or out.  The step is
 * captured in a CUDA graph per batch size on the first session's stream;
 * tokens and the pointer table are copied into fixed device buffers before
 * each launch.
 *
 * Numerics follow the batch-1 fused step (decode.cu): in_proj's output x|z
 * is fp32, the conv output u feeds x_proj in the weights' type and the
 * scan in fp32; the recurrent state is fp32.
 *
 * PyTorch (transformers' slow path, decode branch), per session:
 *   conv_state = torch.roll(conv_state, shifts=-1, dims=-1); conv_state[:, :, -1] = hidden_states[:, :, 0]
 *   hidden_states = self.act(torch.sum(conv_state * self.conv1d.weight[:, 0, :], dim=-1) + self.conv1d.bias)
 *   ssm_state = discrete_A[:, :, 0, :] * ssm_state + deltaB_u[:, :, 0, :]
 *   y = torch.matmul(ssm_state, C[:, 0, :].unsqueeze(-1)) + D * hidden_states;  y = y * act(gate)
 */
#include "common.cuh"
#include "gemm.cuh"
#include "kernels.h"

#include <string.h>

struct lmc_batch {
    int64_t cap;            /* sessions the buffers hold */
    void *blob;             /* one device allocation for everything below */
    size_t blob_bytes;
    int32_t *tok;           /* [cap] */
    float **conv_ptr;       /* [cap] each session's conv_state */
    float **ssm_ptr;        /* [cap] each session's ssm_state */
    float *res;             /* [cap][d] residual stream */
    void *hn;               /* [cap][d] T normed hidden (also the final norm's output) */
    float *xz;              /* [cap][2E] in_proj output */
    void *u;                /* [cap][E] T conv output for x_proj */
    float *uf;              /* [cap][E] conv output for the scan */
    float *dbc;             /* [cap][R+2N] */
    float *dt;              /* [cap][E] dt_proj output (before bias + softplus) */
    void *y;                /* [cap][E] T */
    float *logits;          /* [cap][V] */
    void *host;             /* pinned staging: tokens [cap] int32, then 2 x cap pointers */
    cudaGraphExec_t exec;
    bool graph_valid, graph_tf32, graph_logits;
    int64_t graph_n;
};

namespace {

const size_t kAlignB = 256;
size_t alignb(size_t n) { return (n + kAlignB - 1) / kAlignB * kAlignB; }
/* Pinned staging: tokens, then (16-byte aligned) the two pointer tables. */
size_t host_tok_bytes(size_t cap) { return (cap * 4 + 15) / 16 * 16; }

template <typename T>
__global__ void bat_conv_kernel(const float *xz, int64_t E, int K, float *const *conv_ptr, size_t layer_off,
                                const float *w, const float *b, T *u, float *uf)
{
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t s = blockIdx.y;
    if (e >= E) return;
    const float x = xz[s * 2 * E + e];
    float *cs = conv_ptr[s] + layer_off + e * (K - 1);
    const float *we = w + e * K;
    float acc = b ? b[e] : 0.f;
    for (int k = 0; k < K - 1; k++) acc += we[k] * cs[k];
    acc += we[K - 1] * x;
    for (int k = 0; k < K - 2; k++) cs[k] = cs[k + 1];
    cs[K - 2] = x;
    const float v = lmc_silu(acc);
    u[s * E + e] = lmc_from_f32<T>(v);
    uf[s * E + e] = v;
}

template <typename T>
__global__ void bat_scan_kernel(const float *uf, const float *dt, const float *dbc, int64_t R2N, int64_t R,
                                int64_t E, int N, const float *dt_b, const float *A2, const float *D,
                                const float *xz, float *const *ssm_ptr, size_t layer_off, T *y)
{
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t s = blockIdx.y;
    if (e >= E) return;
    const float d = lmc_softplus(dt[s * E + e] + dt_b[e]);
    const float uu = uf[s * E + e];
    const float *Bv = dbc + s * R2N + R, *Cv = Bv + N;
    float *h = ssm_ptr[s] + layer_off + e * (int64_t)N;
    const float *a = A2 + e * (int64_t)N;
    const float du = d * uu;
    float acc = 0.f;
    for (int n = 0; n < N; n++) {
        const float hn = lmc_exp2(d * a[n]) * h[n] + du * Bv[n];
        h[n] = hn;
        acc += hn * Cv[n];
    }
    const float z = xz[s * 2 * E + E + e];
    y[s * E + e] = lmc_from_f32<T>((acc + D[e] * uu) * lmc_silu(z));
}

#define CKB(call, what)                                                        \
    do {                                                                       \
        cudaError_t ce_ = (call);                                              \
        if (ce_ != cudaSuccess) return lmc_cuda_fail(e, ce_, (what));          \
    } while (0)

void batch_release(lmc_batch *Bt)
{
    if (!Bt) return;
    if (Bt->exec) cudaGraphExecDestroy(Bt->exec);
    if (Bt->blob) cudaFree(Bt->blob);
    if (Bt->host) cudaFreeHost(Bt->host);
    (void)cudaGetLastError();
    lmi_free(Bt);
}

/* Buffers for n sessions; on failure the old ones stay (the sessions are
 * untouched either way). */
lm_status batch_ensure(lmc_session *S, const struct lm_model *m, int64_t n, lmi_err *e)
{
    if (S->batch && S->batch->cap >= n) return LM_OK;
    const lmi_dims *d = &m->dims;
    const lmc_model *M = static_cast<const lmc_model *>(m->bk);
    const size_t ts = lmc_dtype_size(M->dt);
    const size_t cap = (size_t)((n + 7) / 8 * 8);
    const size_t D = (size_t)d->d_model, E = (size_t)d->d_inner, R2N = (size_t)(d->dt_rank + 2 * d->d_state);
    const size_t V = (size_t)d->vocab;
    const size_t sz[] = {cap * 4, cap * sizeof(float *), cap * sizeof(float *), cap * D * 4, cap * D * ts,
                         cap * 2 * E * 4, cap * E * ts, cap * E * 4, cap * R2N * 4, cap * E * 4,
                         cap * E * ts, cap * V * 4};
    const size_t nb = sizeof sz / sizeof sz[0];
    size_t total = 0;
    for (size_t i = 0; i < nb; i++) total += alignb(sz[i]);
    lmc_batch *Bt = (lmc_batch *)lmi_alloc(1, sizeof *Bt);
    if (!Bt) return lmi_fail(e, LM_ERR_NO_MEMORY, "cuda backend: out of host memory");
    cudaError_t ce = cudaMalloc(&Bt->blob, total);
    if (ce != cudaSuccess) Bt->blob = nullptr;
    if (ce == cudaSuccess) {
        ce = cudaMallocHost(&Bt->host, host_tok_bytes(cap) + 2 * cap * sizeof(float *));
        if (ce != cudaSuccess) Bt->host = nullptr;
    }
    if (ce != cudaSuccess) {
        (void)cudaGetLastError();
        const lm_status st = lmc_cuda_fail(e, ce, "batched decode buffers");
        batch_release(Bt);
        return st;
    }
    Bt->blob_bytes = total;
    char *p = static_cast<char *>(Bt->blob);
    void *ptr[sizeof sz / sizeof sz[0]];
    for (size_t i = 0; i < nb; i++) {
        ptr[i] = p;
        p += alignb(sz[i]);
    }
    Bt->tok = (int32_t *)ptr[0];
    Bt->conv_ptr = (float **)ptr[1];
    Bt->ssm_ptr = (float **)ptr[2];
    Bt->res = (float *)ptr[3];
    Bt->hn = ptr[4];
    Bt->xz = (float *)ptr[5];
    Bt->u = ptr[6];
    Bt->uf = (float *)ptr[7];
    Bt->dbc = (float *)ptr[8];
    Bt->dt = (float *)ptr[9];
    Bt->y = ptr[10];
    Bt->logits = (float *)ptr[11];
    Bt->cap = (int64_t)cap;
    batch_release(S->batch);
    S->batch = Bt;
    return LM_OK;
}

/* The whole step for n sessions whose inputs are already in Bt. */
lm_status batch_pipeline(const struct lm_model *m, lmc_session *S, int64_t n, bool want_logits, bool tf32,
                         lmi_err *e)
{
    const lmi_dims *d = &m->dims;
    const lmc_model *M = static_cast<const lmc_model *>(m->bk);
    lmc_batch *Bt = S->batch;
    const lmc_dtype T = M->dt;
    const int64_t D = d->d_model, E = d->d_inner, N = d->d_state, R = d->dt_rank, K = d->d_conv;
    const int64_t R2N = R + 2 * N;
    cudaStream_t st = S->stream;
    const dim3 grid((unsigned)((E + 127) / 128), (unsigned)n), block(128);
    lm_status ls;
    CKB(lmc_embed(T, M->embed, D, Bt->tok, n, Bt->res, st), "batched decode: embedding");
    for (int64_t l = 0; l < d->n_layer; l++) {
        const lmc_layer *G = &M->layers[l];
        CKB(lmc_rmsnorm(T, Bt->res, n, D, G->norm_w, (float)d->eps, Bt->hn, st), "batched decode: rmsnorm");
        if (G->in_b) CKB(lmc_fill_rows(LMC_F32, Bt->xz, 2 * E, n, 2 * E, G->in_b, st), "batched decode: in_proj bias");
        ls = lmc_linear(S->blas, T, G->in_w, 2 * E, D, Bt->hn, D, n, Bt->xz, LMC_F32, 2 * E, G->in_b ? 1.f : 0.f,
                        tf32, e);
        if (ls != LM_OK) return ls;
        const size_t conv_off = (size_t)(l * E * (K - 1)), ssm_off = (size_t)(l * E * N);
        if (T == LMC_BF16)
            bat_conv_kernel<lmc_bf16><<<grid, block, 0, st>>>(Bt->xz, E, (int)K, Bt->conv_ptr, conv_off, G->conv_w,
                                                               G->conv_b, (lmc_bf16 *)Bt->u, Bt->uf);
        else
            bat_conv_kernel<float><<<grid, block, 0, st>>>(Bt->xz, E, (int)K, Bt->conv_ptr, conv_off, G->conv_w,
                                                            G->conv_b, (float *)Bt->u, Bt->uf);
        CKB(cudaGetLastError(), "batched decode: conv step");
        ls = lmc_linear(S->blas, T, G->x_w, R2N, E, Bt->u, E, n, Bt->dbc, LMC_F32, R2N, 0.f, tf32, e);
        if (ls != LM_OK) return ls;
        ls = lmc_linear(S->blas, LMC_F32, G->dt_w, E, R, Bt->dbc, R2N, n, Bt->dt, LMC_F32, E, 0.f,
                        tf32 && T == LMC_F32, e);
        if (ls != LM_OK) return ls;
        if (T == LMC_BF16)
            bat_scan_kernel<lmc_bf16><<<grid, block, 0, st>>>(Bt->uf, Bt->dt, Bt->dbc, R2N, R, E, (int)N, G->dt_b,
                                                               G->A2, G->D, Bt->xz, Bt->ssm_ptr, ssm_off,
                                                               (lmc_bf16 *)Bt->y);
        else
            bat_scan_kernel<float><<<grid, block, 0, st>>>(Bt->uf, Bt->dt, Bt->dbc, R2N, R, E, (int)N, G->dt_b,
                                                            G->A2, G->D, Bt->xz, Bt->ssm_ptr, ssm_off,
                                                            (float *)Bt->y);
        CKB(cudaGetLastError(), "batched decode: scan step");
        if (G->out_b) CKB(lmc_add_rows(Bt->res, n, D, G->out_b, st), "batched decode: out_proj bias");
        ls = lmc_linear(S->blas, T, G->out_w, D, E, Bt->y, E, n, Bt->res, LMC_F32, D, 1.f, tf32, e);
        if (ls != LM_OK) return ls;
    }
    if (want_logits) {
        CKB(lmc_rmsnorm(T, Bt->res, n, D, M->norm_f, (float)d->eps, Bt->hn, st), "batched decode: final norm");
        ls = lmc_linear(S->blas, T, M->lm_head, d->vocab, D, Bt->hn, D, n, Bt->logits, LMC_F32, d->vocab, 0.f,
                        tf32, e);
        if (ls != LM_OK) return ls;
    }
    return LM_OK;
}

/* Captures the step for n sessions; false when capturing is not possible
 * here (then the caller runs it directly). */
bool batch_capture(const struct lm_model *m, lmc_session *S, int64_t n, bool want_logits, bool tf32, lmi_err *e)
{
    lmc_batch *Bt = S->batch;
    if (Bt->exec) {
        cudaGraphExecDestroy(Bt->exec);
        Bt->exec = nullptr;
    }
    Bt->graph_valid = false;
    if (cudaStreamBeginCapture(S->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    lmi_err scratch;
    const lm_status ls = batch_pipeline(m, S, n, want_logits, tf32, &scratch);
    cudaGraph_t g = nullptr;
    cudaError_t ce = cudaStreamEndCapture(S->stream, &g);
    if (ls == LM_OK && ce == cudaSuccess) {
        ce = cudaGraphInstantiate(&Bt->exec, g, 0);
        if (ce != cudaSuccess) Bt->exec = nullptr;
    }
    if (g) cudaGraphDestroy(g);
    (void)e;
    if (ls != LM_OK || ce != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    Bt->graph_valid = true;
    Bt->graph_n = n;
    Bt->graph_tf32 = tf32;
    Bt->graph_logits = want_logits;
    return true;
}

} // namespace

void lmc_batch_free(lmc_batch *b) { batch_release(b); }

lm_status lmc_forward_batch(struct lm_session *const *ss, size_t n_sessions, const int32_t *tokens, float *logits,
                            bool tf32, lmi_err *e)
{
    if (!ss || n_sessions == 0 || !tokens || !ss[0] || !ss[0]->bk)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: batched decode without sessions");
    const struct lm_model *m = ss[0]->model;
    if (m->dims.arch != LM_ARCH_MAMBA1)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: batched decode runs Mamba-1 models only");
    if (n_sessions > (size_t)INT32_MAX)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda backend: batch of %zu sessions too large", n_sessions);
    const int64_t n = (int64_t)n_sessions;
    lmc_session *S = static_cast<lmc_session *>(ss[0]->bk);
    LMC_CUDA(cudaSetDevice(S->device), e, "cudaSetDevice");
    lm_status ls = batch_ensure(S, m, n, e);
    if (ls != LM_OK) return ls;
    lmc_batch *Bt = S->batch;
    /* Inputs: tokens and the state tables, staged in pinned memory. */
    int32_t *htok = static_cast<int32_t *>(Bt->host);
    float **hptr = reinterpret_cast<float **>(static_cast<char *>(Bt->host) + host_tok_bytes((size_t)Bt->cap));
    for (int64_t i = 0; i < n; i++) {
        const lmc_session *Si = static_cast<const lmc_session *>(ss[i]->bk);
        if (!Si || Si->device != S->device)
            return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "cuda backend: session %lld has no state on this device",
                            (long long)i);
        htok[i] = tokens[i];
        hptr[i] = Si->conv_state;
        hptr[n + i] = Si->ssm_state;
    }
    cudaStream_t st = S->stream;
    LMC_CUDA(cudaMemcpyAsync(Bt->tok, htok, (size_t)n * 4, cudaMemcpyHostToDevice, st), e, "batched decode: inputs");
    LMC_CUDA(cudaMemcpyAsync(Bt->conv_ptr, hptr, (size_t)n * sizeof(float *), cudaMemcpyHostToDevice, st), e,
             "batched decode: inputs");
    LMC_CUDA(cudaMemcpyAsync(Bt->ssm_ptr, hptr + n, (size_t)n * sizeof(float *), cudaMemcpyHostToDevice, st), e,
             "batched decode: inputs");
    const bool want_logits = logits != nullptr;
    bool graph = Bt->graph_valid && Bt->graph_n == n && Bt->graph_tf32 == tf32 && Bt->graph_logits == want_logits;
    if (!graph) graph = batch_capture(m, S, n, want_logits, tf32, e);
    if (graph) {
        const cudaError_t ce = cudaGraphLaunch(Bt->exec, st);
        if (ce != cudaSuccess) ls = lmc_cuda_fail(e, ce, "batched decode: graph launch");
    } else {
        ls = batch_pipeline(m, S, n, want_logits, tf32, e);
    }
    if (ls == LM_OK && want_logits) {
        const cudaError_t ce = cudaMemcpyAsync(logits, Bt->logits, (size_t)n * (size_t)m->dims.vocab * sizeof(float),
                                               cudaMemcpyDeviceToHost, st);
        if (ce != cudaSuccess) ls = lmc_cuda_fail(e, ce, "batched decode: logits download");
    }
    const cudaError_t ce = cudaStreamSynchronize(st);
    if (ls == LM_OK && ce != cudaSuccess) ls = lmc_cuda_fail(e, ce, "batched decode");
    if (ls != LM_OK) (void)cudaGetLastError();
    return ls;
}
