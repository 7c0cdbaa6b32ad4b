/*
 * cpu/parallel.c - the parallel loop of the CPU kernels.
 *
 * Why not always "#pragma omp parallel for": the GEMMs run on the BLAS
 * library's threads, and with a pthreads OpenBLAS (Debian's default) that
 * is a second pool.  After every OpenMP region libgomp's idle workers
 * spin for milliseconds (default wait policy), taking cores from the
 * GEMM that follows: on 2 cores that halved the prefill rate of a 130m
 * model (500 vs 990 tokens/s with OMP_WAIT_POLICY=passive).  So:
 *   - OpenBLAS built with OpenMP (openblas_get_parallel() == 2): one pool;
 *     our loops use OpenMP too, and the spinning workers are the ones the
 *     next GEMM wants.
 *   - otherwise: short-lived threads of our own, which exit when the loop
 *     is done (a thread start costs ~20 us, against ~5 ms of work per
 *     loop in a prefill chunk; decode steps run on one thread anyway).
 * No global state either way: nothing is configured, only queried.
 */
#include "cpu/parallel.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>

#define LMI_PAR_MAX_THREADS 256

typedef struct par_job {
    lmi_range_fn fn;
    void *ctx;
    int64_t n, grain;
    atomic_int_fast64_t next;
} par_job;

static void *par_worker(void *arg)
{
    par_job *j = arg;
    for (;;) {
        int64_t b = atomic_fetch_add(&j->next, j->grain);
        if (b >= j->n) break;
        j->fn(j->ctx, b, b + j->grain < j->n ? b + j->grain : j->n);
    }
    return NULL;
}

#ifdef _OPENMP
static int blas_uses_openmp(void)
{
#ifdef OPENBLAS_VERSION
    return openblas_get_parallel() == 2;
#else
    return 0;
#endif
}
#endif

void lmi_cpu_parallel_for(int n_threads, int64_t n, int64_t grain, lmi_range_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    const int64_t pieces = (n + grain - 1) / grain;
    int nt = n_threads < 1 ? 1 : n_threads;
    if (nt > LMI_PAR_MAX_THREADS) nt = LMI_PAR_MAX_THREADS;
    if ((int64_t)nt > pieces) nt = (int)pieces;
    if (nt == 1) {
        fn(ctx, 0, n);
        return;
    }
#ifdef _OPENMP
    if (blas_uses_openmp()) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int64_t p = 0; p < pieces; p++)
            fn(ctx, p * grain, (p + 1) * grain < n ? (p + 1) * grain : n);
        return;
    }
#endif
    par_job job = {.fn = fn, .ctx = ctx, .n = n, .grain = grain};
    atomic_init(&job.next, 0);
    pthread_t th[LMI_PAR_MAX_THREADS];
    pthread_attr_t attr;
    int have_attr = pthread_attr_init(&attr) == 0;
    /* The kernels need ~40 KB of stack; do not reserve 8 MB per thread. */
    if (have_attr) pthread_attr_setstacksize(&attr, (size_t)1 << 20);
    int started = 0;
    for (int k = 1; k < nt; k++) {
        if (pthread_create(&th[started], have_attr ? &attr : NULL, par_worker, &job) != 0) break;
        started++;
    }
    if (have_attr) pthread_attr_destroy(&attr);
    par_worker(&job);
    for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
}
