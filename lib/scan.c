/*
 * scan.c - the public filtered selective scan (lm_scan_filtered): argument
 * validation around the CPU kernel lmi_cpu_scan_m1 (lib/cpu/scan.c), which
 * implements the LongMamba filter inside the recurrence (LONGMAMBA.md §4).
 */
#include "internal.h"

#include <math.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

void lm_scan_args_init(lm_scan_args *args)
{
    if (!args)
        return;
    memset(args, 0, sizeof *args);
    args->struct_size = (uint32_t)sizeof *args;
}

/* Size of the first published version of lm_scan_args (all current fields). */
#define LMI_SCAN_ARGS_V1 (offsetof(lm_scan_args, n_threads) + sizeof(int32_t))

/* a*b elements of `elem` bytes each fit in size_t and int64_t. */
static bool fits(int64_t a, int64_t b, size_t elem)
{
    uint64_t lim = (uint64_t)(SIZE_MAX / elem);
    if (lim > (uint64_t)INT64_MAX)
        lim = (uint64_t)INT64_MAX;
    return (uint64_t)a <= lim / (uint64_t)b;
}

/*
 * Validation, in order (first failure wins):
 *   struct_size < the v1 size               LM_ERR_INVALID_ARGUMENT
 *   length, channels, state_size <= 0       LM_ERR_INVALID_ARGUMENT
 *   any [a][b] array too large to address   LM_ERR_INVALID_ARGUMENT
 *   u, delta, A, B, C or y NULL             LM_ERR_INVALID_ARGUMENT
 *   delta_is_dt not 0 or 1                  LM_ERR_INVALID_ARGUMENT
 *   global_mask without thresholds          LM_ERR_INVALID_ARGUMENT
 *   n_threads < 0                           LM_ERR_INVALID_ARGUMENT
 *   a NaN threshold (mask given)            LM_ERR_NUMERIC
 * Thresholds of +-inf are allowed (+inf drops every token of a global
 * channel, -inf keeps all).  Inputs are not scanned for NaN: the scan is
 * IEEE arithmetic and propagates them, as PyTorch would.
 */
lm_status lm_scan_filtered(const lm_scan_args *args, char *err, size_t err_cap)
{
    lmi_err e = {{0}};
    lm_status st = LM_OK;
    if (!args) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "scan: args is NULL");
        goto out;
    }
    if (args->struct_size < LMI_SCAN_ARGS_V1) {
        st = lmi_fail(
            &e, LM_ERR_INVALID_ARGUMENT,
            "scan: struct_size %u is smaller than lm_scan_args (%zu); use lm_scan_args_init",
            (unsigned)args->struct_size, (size_t)LMI_SCAN_ARGS_V1);
        goto out;
    }
    /* Read only the fields the caller's struct has (newer fields default). */
    lm_scan_args a;
    memset(&a, 0, sizeof a);
    memcpy(&a, args, args->struct_size < sizeof a ? args->struct_size : sizeof a);

    if (a.length <= 0 || a.channels <= 0 || a.state_size <= 0) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT,
                      "scan: length (%lld), channels (%lld) and state_size (%lld) must be > 0",
                      (long long)a.length, (long long)a.channels, (long long)a.state_size);
        goto out;
    }
    if (!fits(a.length, a.channels, sizeof(float)) ||
        !fits(a.length, a.state_size, sizeof(float)) ||
        !fits(a.channels, a.state_size, sizeof(float))) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT,
                      "scan: sizes overflow (length %lld, channels %lld, state_size %lld)",
                      (long long)a.length, (long long)a.channels, (long long)a.state_size);
        goto out;
    }
    const char *missing = !a.u       ? "u"
                          : !a.delta ? "delta"
                          : !a.A     ? "A"
                          : !a.B     ? "B"
                          : !a.C     ? "C"
                          : !a.y     ? "y"
                                     : NULL;
    if (missing) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "scan: required array '%s' is NULL", missing);
        goto out;
    }
    if (a.delta_is_dt != 0 && a.delta_is_dt != 1) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "scan: delta_is_dt must be 0 or 1, got %d",
                      (int)a.delta_is_dt);
        goto out;
    }
    if (a.global_mask && !a.thresholds) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT,
                      "scan: global_mask is given but thresholds is NULL");
        goto out;
    }
    if (a.n_threads < 0) {
        st = lmi_fail(&e, LM_ERR_INVALID_ARGUMENT, "scan: n_threads must be >= 0, got %d",
                      (int)a.n_threads);
        goto out;
    }
    if (a.global_mask) {
        for (int64_t c = 0; c < a.channels; c++) {
            if (isnan(a.thresholds[c])) {
                st = lmi_fail(&e, LM_ERR_NUMERIC, "scan: thresholds[%lld] is NaN", (long long)c);
                goto out;
            }
        }
    }

    size_t hn = (size_t)a.channels * (size_t)a.state_size;
    float *h = lmi_alloc_raw(hn, sizeof(float));
    if (!h) {
        st = lmi_fail(&e, LM_ERR_NO_MEMORY, "scan: cannot allocate the %zu-float state", hn);
        goto out;
    }
    if (a.state_in)
        memcpy(h, a.state_in, hn * sizeof(float));
    else
        memset(h, 0, hn * sizeof(float));

    int n_threads = a.n_threads;
    if (n_threads == 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = nc > 0 ? (int)nc : 1;
    }
    lmi_scan_m1 k = {
        .L = a.length,
        .E = a.channels,
        .N = a.state_size,
        .u = a.u,
        .delta = a.delta,
        .dt_softplus = a.delta_is_dt == 1,
        .dt_bias = a.delta_is_dt ? a.dt_bias : NULL,
        .A = a.A,
        .B = a.B,
        .C = a.C,
        .ldbc = a.state_size,
        .D = a.D,
        .z = a.z,
        .ldz = a.channels,
        .global = a.global_mask,
        .tau = a.thresholds,
        .h = h,
        .y = a.y,
    };
    lmi_cpu_scan_m1(&k, n_threads);
    /* Copy out last: state_out may alias state_in, which was read above. */
    if (a.state_out)
        memcpy(a.state_out, h, hn * sizeof(float));
    lmi_free(h);
out:
    if (st == LM_OK)
        e.msg[0] = '\0';
    lmi_err_copy(&e, err, err_cap);
    return st;
}
