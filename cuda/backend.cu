/* backend.cu - OWNER: CUDA helper. Placeholder until it lands. */
#include <cuda_runtime.h>
extern "C" {
#include "internal.h"
}
extern "C" int lmi_cuda_device_present(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n > 0;
}
extern "C" const lmi_backend_vt lmi_cuda_backend = {"cuda"};
