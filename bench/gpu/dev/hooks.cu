/*
 * hooks.cu - benchmark and test hooks into a CUDA session (dev.h).
 */
#include "common.cuh"
#include "dev.h"

extern "C" int lmc_dev_replay_ms(struct lm_session *s, int iters, float *ms)
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

extern "C" int lmc_dev_fused_decode(struct lm_session *s, int on)
{
    if (!s || !s->bk) return -1;
    if (on < 0 || on > 2) return -1;
    static_cast<lmc_session *>(s->bk)->decode_mode = on;
    return 0;
}
