/*
 * gemm.cuh - the model's matrix products through cuBLAS.
 *
 * Row-major Y[L][out] = beta * Y + X[L][in] W[out][in]^T is, column major,
 * Y^T = W^T X^T: cuBLAS gets (op_T, op_N, m = out, n = L, k = in).
 * bf16 operands run on the tensor cores with fp32 accumulation; fp32
 * operands in fp32, or TF32 when allowed.
 */
#ifndef LMC_GEMM_CUH
#define LMC_GEMM_CUH

#include "common.cuh"

/* Y (fp32 or wt, row stride ldy) = beta * Y + X W^T.  X has W's dtype. */
lm_status lmc_linear(cublasHandle_t h, lmc_dtype wt, const void *W, int64_t out, int64_t in,
                     const void *X, int64_t ldx, int64_t L, void *Y, lmc_dtype yt, int64_t ldy,
                     float beta, bool tf32, lmi_err *e);

#endif
