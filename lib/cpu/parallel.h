/*
 * cpu/parallel.h - the CPU backend's parallel loop.
 */
#ifndef LMI_CPU_PARALLEL_H
#define LMI_CPU_PARALLEL_H

#include <stdint.h>

/* Work on items [begin, end). */
typedef void (*lmi_range_fn)(void *ctx, int64_t begin, int64_t end);

/* Calls fn over [0, n) in pieces of `grain` items, handed out dynamically
 * to up to n_threads threads (the caller's thread among them).  Returns
 * when all pieces are done.  Each piece must not depend on which thread
 * runs it, so results do not depend on the thread count.  Never fails:
 * if threads cannot be started, the caller runs the rest. */
void lmi_cpu_parallel_for(int n_threads, int64_t n, int64_t grain, lmi_range_fn fn, void *ctx);

#endif
