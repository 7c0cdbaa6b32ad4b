/*
 * base.c - errors, allocation and logging: the helpers every part of the
 * library uses.  Self-contained (libc only) on purpose: the CUDA module
 * (libongmamba-cuda.so) compiles its own hidden copy of this file and of
 * policy.c instead of calling back into libongmamba.so, whose internal
 * symbols are hidden (docs in lib/cuda_module.c).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

const void *lmi_find_by_name(const void *items, size_t stride, size_t name_off,
                             const size_t *order, size_t n, const char *key)
{
    if (!items || !order || !key) return NULL;
    size_t lo = 0, hi = n;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const char *item = (const char *)items + order[mid] * stride;
        const char *name;
        memcpy(&name, item + name_off, sizeof name);
        const int c = strcmp(name, key);
        if (c == 0) return item;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}
