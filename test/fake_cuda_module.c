/* fake_cuda_module.c - a "CUDA module" of another interface version, for
 * test_cudamod: the loader must reject it after reading only the version
 * (the first field of lmi_cuda_module, whatever the rest looks like). */
#include <stdint.h>

struct fake_module {
    uint32_t version;
};

const struct fake_module *lmi_cuda_module_v1(void);

const struct fake_module *lmi_cuda_module_v1(void)
{
    static const struct fake_module mod = {999};
    return &mod;
}
