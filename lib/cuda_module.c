/*
 * cuda_module.c - finds and loads the CUDA backend module.
 *
 * The CUDA backend (the .cu files in cuda/) is built into its own shared module,
 * libongmamba-cuda.so, which links cudart and cuBLAS;
 * libongmamba.so links no CUDA library.  The module is opened with dlopen
 * only when the CUDA backend is asked for (backend CUDA, AUTO, or
 * lm_backend_status/lm_backend_available of those), so CPU programs and
 * machines without CUDA never map it.
 *
 * Search order (the first that applies wins):
 *   1. $LONGMAMBA_CUDA_MODULE, a path: only this file is tried (tests,
 *      relocated installs);
 *   2. the running program, if it exports lmi_cuda_module_v1 (the GPU test
 *      programs, which link the CUDA objects statically);
 *   3. libongmamba-cuda.so next to libongmamba.so (its directory comes from
 *      dladdr; in the build tree both are in build/lib);
 *   4. libongmamba-cuda.so through the dynamic loader's path (LD_LIBRARY_PATH,
 *      ld.so.cache, the default directories).
 * A file that exists but does not load (a broken file, a missing
 * libcublas) stops the search with the loader's message.  Before step 3
 * loads the module, the driver (libcuda.so.1) must be loadable: on a
 * machine without it the module is never mapped.
 *
 * No global state: every user holds its own dlopen reference (the loader
 * counts them), each CUDA model one until lm_model_free.
 *
 * Why the module does not call back into this library: libongmamba.so
 * exports only the lm_ API, so the module cannot resolve lmi_ symbols.
 * The few it needs (lib/base.c: errors, lmi_alloc*; lib/policy.c: DeciMamba
 * selection) are plain libc code and are compiled into the module as
 * hidden copies.  Allocation still goes through lmi_alloc -> calloc /
 * aligned_alloc, which the fault-injection shim (test/faultinject)
 * interposes process-wide.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Opens one candidate.  LM_OK: cl->handle set.  LM_ERR_MISSING: the file is
 * not there (search on).  Else the file exists but does not load. */
static lm_status open_file(const char *path, bool by_name, lmi_cuda_lib *cl, lmi_err *e)
{
    if (!by_name && access(path, F_OK) != 0) {
        char eb[128];
        int err = errno;
        return lmi_fail(e, LM_ERR_MISSING, "%s: %s", path, strerror_r(err, eb, sizeof eb));
    }
    /* RTLD_LOCAL: the module's symbols (its copies of lmi_ helpers) stay
     * private; RTLD_NOW: a missing libcublas fails here, not mid-run. */
    cl->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (cl->handle)
        return LM_OK;
    const char *why = dlerror();
    /* By name, the module itself not found reads "NAME: cannot open shared
     * object file"; a missing dependency (libcublas) names the dependency. */
    if (by_name && why && strncmp(why, path, strlen(path)) == 0 && why[strlen(path)] == ':' &&
        strstr(why, "No such file"))
        return lmi_fail(e, LM_ERR_MISSING, "%s", why);
    return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE, "CUDA backend: module %s cannot be loaded: %s",
                    path, why ? why : "unknown loader error");
}

/* Step 2: the program itself (a handle on the global scope). */
static bool open_program(lmi_cuda_lib *cl)
{
    void *h = dlopen(NULL, RTLD_NOW);
    if (h && dlsym(h, LMI_CUDA_MODULE_ENTRY)) {
        cl->handle = h;
        return true;
    }
    if (h)
        dlclose(h);
    (void)dlerror();
    return false;
}

/* Step 3: the directory of the binary that holds this code. */
static bool module_next_to_library(char *path, size_t cap)
{
    Dl_info info;
    if (!dladdr((void *)&lmi_cuda_open, &info) || !info.dli_fname)
        return false;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash)
        return false;
    int n = snprintf(path, cap, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname,
                     LMI_CUDA_MODULE_FILE);
    return n > 0 && (size_t)n < cap;
}

/* Without the driver, loading the module (cudart, cuBLAS: ~190 MB
 * resident) only to hear "no driver" would cost every AUTO program on a
 * CPU machine: look for libcuda.so.1 first.  (The override skips this
 * check, so a module can be tried on any machine.) */
static lm_status driver_present(lmi_err *e)
{
    void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (h) {
        dlclose(h);
        return LM_OK;
    }
    const char *why = dlerror();
    return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE, "CUDA backend: no CUDA driver (%s)",
                    why ? why : "libcuda.so.1 cannot be loaded");
}

static lm_status find_module(lmi_cuda_lib *cl, char *path, size_t cap, lmi_err *e)
{
    /* secure_getenv: a set-id program does not take a library path from
     * its caller's environment. */
    const char *env = secure_getenv(LMI_CUDA_MODULE_ENV);
    if (env && env[0]) {
        snprintf(path, cap, "%s", env);
        lm_status st = open_file(path, false, cl, e);
        if (st == LM_ERR_MISSING)
            return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE,
                            "CUDA backend: module not found: %s=%s does not exist",
                            LMI_CUDA_MODULE_ENV, env);
        return st;
    }
    if (open_program(cl)) {
        snprintf(path, cap, "(the program itself)");
        return LM_OK;
    }
    char tried[LMI_ERR_CAP / 2] = "";
    if (module_next_to_library(path, cap)) {
        lm_status st = access(path, F_OK) == 0 ? driver_present(e) : LM_OK;
        if (st != LM_OK)
            return st;
        st = open_file(path, false, cl, e);
        if (st != LM_ERR_MISSING)
            return st;
        /* the tail of a long path names the directory best */
        size_t n = strlen(path), keep = sizeof tried - 3;
        const char *tail = n > keep ? path + (n - keep) : path;
        size_t m = strlen(tail);
        memcpy(tried, tail, m);
        memcpy(tried + m, ", ", 3);
    }
    snprintf(path, cap, "%s", LMI_CUDA_MODULE_FILE);
    lm_status st = open_file(path, true, cl, e);
    if (st != LM_ERR_MISSING)
        return st;
#ifdef LM_HAVE_CUDA
    const char *hint = "";
#else
    const char *hint = "; this build has no CUDA backend (-Dcuda=disabled)";
#endif
    return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE,
                    "CUDA backend: module not found (tried %s%s on the loader path%s)", tried,
                    LMI_CUDA_MODULE_FILE, hint);
}

/* Rejects a module built from other sources before touching its table. */
static lm_status check_module(const lmi_cuda_module *mod, const char *path, lmi_err *e)
{
    if (!mod)
        return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE, "CUDA backend: module %s: %s returned NULL",
                        path, LMI_CUDA_MODULE_ENTRY);
    if (mod->version != LMI_CUDA_MODULE_VERSION)
        return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE,
                        "CUDA backend: module %s has interface version %u, this library needs %u "
                        "(install the module of the same build as libongmamba.so)",
                        path, mod->version, LMI_CUDA_MODULE_VERSION);
    if (mod->model_size != sizeof(struct lm_model) || mod->session_size != sizeof(struct lm_session) ||
        mod->forward_size != sizeof(lmi_forward))
        return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE,
                        "CUDA backend: module %s was built from other sources than this library "
                        "(internal struct sizes differ)", path);
    if (!mod->vt || !mod->device_status)
        return lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE, "CUDA backend: module %s: incomplete table",
                        path);
    return LM_OK;
}

lm_status lmi_cuda_open(lmi_cuda_lib *cl, lmi_err *e)
{
    if (!cl)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "lmi_cuda_open: NULL argument");
    memset(cl, 0, sizeof *cl);
    char path[4096];
    lm_status st = find_module(cl, path, sizeof path, e);
    if (st != LM_OK)
        return st;
    /* dlsym returns void *; POSIX guarantees the conversion to a function
     * pointer works (memcpy keeps -Wpedantic quiet). */
    void *sym = dlsym(cl->handle, LMI_CUDA_MODULE_ENTRY);
    lmi_cuda_entry_fn entry = NULL;
    if (sym)
        memcpy(&entry, &sym, sizeof entry);
    if (!entry)
        st = lmi_fail(e, LM_ERR_BACKEND_UNAVAILABLE,
                      "CUDA backend: %s is not a libongmamba CUDA module (no symbol %s)", path,
                      LMI_CUDA_MODULE_ENTRY);
    if (st == LM_OK) {
        cl->mod = entry();
        st = check_module(cl->mod, path, e);
    }
    if (st == LM_OK)
        st = cl->mod->device_status(&cl->n_devices, e);
    if (st != LM_OK)
        lmi_cuda_close(cl);
    return st;
}

void lmi_cuda_close(lmi_cuda_lib *cl)
{
    if (!cl)
        return;
    if (cl->handle)
        dlclose(cl->handle);
    memset(cl, 0, sizeof *cl);
}
