/*
 * dev.h - development code of the CUDA backend, compiled into the GPU
 * benchmarks and tests only (bench/gpu/dev/), never into the module:
 * kernel variants kept for comparison, input fills and session hooks.
 */
#ifndef LMC_DEV_H
#define LMC_DEV_H

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The Mamba-1 scan with a code variant (scan_prev.cu; N = 9..16 only,
 * otherwise and for variant 0 lmc_scan): 1 the default kernel with every
 * decay on the SFU, 9 the previous kernel (v2). */
cudaError_t lmc_dev_scan(const lmc_scan_args *a, int variant, cudaStream_t st);

/* dst[i] = offset + scale * U(-1, 1) from a counter hash of (seed, i):
 * random benchmark inputs without a host round trip (fill.cu). */
cudaError_t lmc_dev_fill_uniform(int dtype, void *dst, size_t n, float scale, float offset, uint64_t seed,
                                 cudaStream_t st);

/* Session hooks (hooks.cu).  1-token forwards of this CUDA session (Mamba-1)
 * use the fused step with programmatic dependent launch (on = 2, the
 * default), the fused step with plain launches (on = 1), or the prefill
 * kernels (on = 0).  Returns 0, or -1 for a session without CUDA state. */
struct lm_session;
int lmc_dev_fused_decode(struct lm_session *s, int on);
/* Replays the session's captured one-token graph `iters` times back to
 * back (advancing the state) and stores the mean GPU time per replay in
 * *ms.  Returns 0, or -1 when no graph is captured. */
int lmc_dev_replay_ms(struct lm_session *s, int iters, float *ms);

#ifdef __cplusplus
}
#endif

#endif
