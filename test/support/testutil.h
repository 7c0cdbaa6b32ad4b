/*
 * testutil.h - what every test program shares (Check suites, test/gpu,
 * test/faultinject, bench/): one seeded RNG, error measures and the paths
 * of fixtures and scratch files.  Plain C, no Check, no library internals,
 * so the GPU programs and benchmarks can use it too.
 */
#ifndef LM_TEST_TESTUTIL_H
#define LM_TEST_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

/* ---- RNG: splitmix64 (a fixed, platform-independent sequence per seed) -- */

typedef struct tu_rng {
    uint64_t state;
} tu_rng;

uint64_t tu_rng_next(tu_rng *r);
double tu_rng_unif(tu_rng *r);                         /* [0, 1), 53 bits */
int64_t tu_rng_int(tu_rng *r, int64_t lo, int64_t hi); /* [lo, hi] */
double tu_rng_sym(tu_rng *r);                          /* [-1, 1) */
double tu_rng_normal(tu_rng *r);                       /* standard normal (Box-Muller) */
/* n floats uniform in [lo, hi) (malloc'd; NULL when out of memory). */
float *tu_rng_floats(tu_rng *r, size_t n, double lo, double hi);
/* n token ids uniform in [0, vocab) (malloc'd; NULL when out of memory). */
int32_t *tu_rng_tokens(tu_rng *r, size_t n, int64_t vocab);
/* The same from a fresh RNG seeded with `seed`: a prompt named by a number. */
int32_t *tu_tokens(uint64_t seed, size_t n, int64_t vocab);

/* ---- error measures ---------------------------------------------------- */

double tu_max_abs(const float *a, size_t n);
double tu_max_abs_diff(const float *a, const float *b, size_t n);
/* max |a - b| / max |b| over n elements (inf when a has a NaN). */
double tu_max_rel_err(const float *a, const double *b, size_t n);
double tu_max_rel_err_f(const float *a, const float *b, size_t n);

/* ---- paths (the build passes LM_TEST_DATA / LM_TEST_BUILD_DIR) ---------- */

#ifdef LM_TEST_DATA
/* test/data/fixtures/<name>: a committed checkpoint. */
static inline void tu_fixture_dir(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/fixtures/%s", LM_TEST_DATA, name);
}
#endif

#ifdef LM_TEST_BUILD_DIR
/* A scratch file of this process in the build tree (pid: suites run in
 * parallel). */
static inline void tu_tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/lm_test_%ld_%s", LM_TEST_BUILD_DIR, (long)getpid(), name);
}
#endif

#endif
