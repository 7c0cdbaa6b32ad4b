/* gemm.cu - cuBLAS wrappers (see gemm.cuh). */
#include "gemm.cuh"

#include <limits.h>

lm_status lmc_linear(cublasHandle_t h, lmc_dtype wt, const void *W, int64_t out, int64_t in,
                     const void *X, int64_t ldx, int64_t L, void *Y, lmc_dtype yt, int64_t ldy,
                     float beta, bool tf32, lmi_err *e)
{
    if (L == 0 || out == 0) return LM_OK;
    if (out > INT_MAX || in > INT_MAX || L > INT_MAX || ldx > INT_MAX || ldy > INT_MAX)
        return lmi_fail(e, LM_ERR_UNSUPPORTED, "cuda: matrix product %lldx%lldx%lld too large",
                        (long long)out, (long long)L, (long long)in);
    const float alpha = 1.f;
    const cudaDataType at = wt == LMC_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cudaDataType ct = yt == LMC_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t comp =
        (wt == LMC_F32 && tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    LMC_CUBLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, (int)L, (int)in, &alpha, W, at,
                            (int)in, X, at, (int)ldx, &beta, Y, ct, (int)ldy, comp,
                            CUBLAS_GEMM_DEFAULT),
               e, "cublasGemmEx");
    return LM_OK;
}
