/* core.c - version, status strings, errors, allocation, logging. */
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
    switch (backend) {
    case LM_BACKEND_AUTO:
    case LM_BACKEND_CPU: return 1;
    case LM_BACKEND_CUDA:
#ifdef LM_HAVE_CUDA
        return lmi_cuda_device_present() ? 1 : 0;
#else
        return 0;
#endif
    }
    return 0;
}

lm_status lmi_fail(lmi_err *e, lm_status st, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

void lmi_err_copy(const lmi_err *e, char *err, size_t cap)
{
    if (!err || cap == 0) return;
    if (!e) {
        err[0] = '\0';
        return;
    }
    size_t n = strnlen(e->msg, sizeof e->msg);
    if (n >= cap) n = cap - 1;
    memcpy(err, e->msg, n);
    err[n] = '\0';
}

/* Every allocation passes here, so a fault-injection build can fail any one. */
void *lmi_alloc(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *lmi_alloc_raw(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) return NULL;
    size_t bytes = n * size;
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    return aligned_alloc(64, bytes);
}

void lmi_free(void *p) { free(p); }

void lmi_log(lm_log_fn fn, void *user, lm_log_level max_level, lm_log_level level,
             const char *fmt, ...)
{
    if (!fn || level > max_level) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fn(user, level, buf);
}
