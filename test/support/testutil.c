/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

uint64_t tu_rng_next(tu_rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double tu_rng_unif(tu_rng *r)
{
    return (double)(tu_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

int64_t tu_rng_int(tu_rng *r, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(tu_rng_next(r) % (uint64_t)(hi - lo + 1));
}

double tu_rng_sym(tu_rng *r)
{
    return 2.0 * tu_rng_unif(r) - 1.0;
}

double tu_rng_normal(tu_rng *r)
{
    double u1 = tu_rng_unif(r), u2 = tu_rng_unif(r);
    if (u1 < 1e-300)
        u1 = 1e-300; /* log(0) */
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

float *tu_rng_floats(tu_rng *r, size_t n, double lo, double hi)
{
    float *a = malloc(sizeof(float) * (n ? n : 1));
    if (a)
        for (size_t i = 0; i < n; i++)
            a[i] = (float)(lo + (hi - lo) * tu_rng_unif(r));
    return a;
}

int32_t *tu_rng_tokens(tu_rng *r, size_t n, int64_t vocab)
{
    int32_t *t = malloc(sizeof(int32_t) * (n ? n : 1));
    if (t)
        for (size_t i = 0; i < n; i++)
            t[i] = (int32_t)(tu_rng_next(r) % (uint64_t)vocab);
    return t;
}

int32_t *tu_tokens(uint64_t seed, size_t n, int64_t vocab)
{
    tu_rng r = {seed};
    return tu_rng_tokens(&r, n, vocab);
}

double tu_max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}

double tu_max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

double tu_max_rel_err(const float *a, const double *b, size_t n)
{
    double mx = 0, ref = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        mx = fmax(mx, fabs((double)a[i] - b[i]));
        ref = fmax(ref, fabs(b[i]));
    }
    return ref > 0 ? mx / ref : mx;
}

double tu_max_rel_err_f(const float *a, const float *b, size_t n)
{
    double mx = 0, ref = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i]))
            return INFINITY;
        mx = fmax(mx, fabs((double)a[i] - (double)b[i]));
        ref = fmax(ref, fabs((double)b[i]));
    }
    return ref > 0 ? mx / ref : mx;
}
