/* core.c - version, status and backend names, backend availability.
 * (Errors, allocation and logging: base.c.) */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int32_t lm_version(void) { return LM_VERSION_NUMBER; }

const char *lm_version_string(void)
{
#define LMI_STR2(x) #x
#define LMI_STR(x) LMI_STR2(x)
    return LMI_STR(LM_VERSION_MAJOR) "." LMI_STR(LM_VERSION_MINOR) "." LMI_STR(LM_VERSION_PATCH);
}

const char *lm_status_str(lm_status status)
{
    switch (status) {
    case LM_OK: return "ok";
    case LM_ERR_INVALID_ARGUMENT: return "invalid argument";
    case LM_ERR_NO_MEMORY: return "out of memory";
    case LM_ERR_IO: return "i/o error";
    case LM_ERR_FORMAT: return "malformed file";
    case LM_ERR_UNSUPPORTED: return "unsupported";
    case LM_ERR_SHAPE: return "shape mismatch";
    case LM_ERR_MISSING: return "missing";
    case LM_ERR_BUFFER_TOO_SMALL: return "buffer too small";
    case LM_ERR_OUT_OF_RANGE: return "out of range";
    case LM_ERR_BACKEND: return "backend error";
    case LM_ERR_BACKEND_UNAVAILABLE: return "backend unavailable";
    case LM_ERR_MISMATCH: return "mismatch";
    case LM_ERR_ABORTED: return "aborted";
    case LM_ERR_NUMERIC: return "non-finite value";
    }
    return "unknown status";
}

const char *lm_backend_name(lm_backend backend)
{
    switch (backend) {
    case LM_BACKEND_AUTO: return "auto";
    case LM_BACKEND_CPU: return "cpu";
    case LM_BACKEND_CUDA: return "cuda";
    }
    return "unknown";
}

int32_t lm_backend_available(lm_backend backend)
{
    return lm_backend_status(backend, NULL, 0) == LM_OK ? 1 : 0;
}

lm_status lm_backend_status(lm_backend backend, char *err, size_t cap)
{
    lmi_err e = {{0}};
    lm_status st = LM_OK;
    switch (backend) {
    case LM_BACKEND_CPU: break;
    case LM_BACKEND_CUDA:
    case LM_BACKEND_AUTO: {
        /* Probe: load the module, ask for a device, unload (the loader
         * keeps it mapped while a CUDA model holds its own reference). */
        lmi_cuda_lib cl;
        st = lmi_cuda_open(&cl, &e);
        if (st == LM_OK)
            lmi_cuda_close(&cl);
        if (backend == LM_BACKEND_AUTO) {
            /* AUTO is always usable: say which backend it would pick. */
            char why[LMI_ERR_CAP];
            snprintf(why, sizeof why, "%s", e.msg);
            if (st == LM_OK)
                lmi_fail(&e, LM_OK, "auto: cuda");
            else
                lmi_fail(&e, LM_OK, "auto: cpu (%s)", why);
            st = LM_OK;
        }
        break;
    }
    default:
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "lm_backend_status: unknown backend %d",
                      (int)backend);
    }
    lmi_err_copy(&e, err, cap);
    return st;
}

