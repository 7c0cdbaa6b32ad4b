/*
 * policy.c - LongMamba and DeciMamba decisions, backend-free
 * (LONGMAMBA.md §2-5): length buckets, per-channel calibration statistics,
 * DeciMamba keep counts and token selection.
 *
 * Everything here is plain arithmetic on host arrays so that the CPU and
 * CUDA backends share one definition, and a NumPy reference can check it
 * function by function.
 */
#include "internal.h"

#include <math.h>

/* ---- length buckets ---------------------------------------------------- */

/* The authors' bucket list "1k 2k ... 192k", read as multiples of 1000
 * tokens (not 1024): their thresholds are keyed by these round numbers. */
const int64_t lmi_default_buckets[] = {
    1000,  2000,  3000,  4000,  5000,  6000,  7000,  8000,  10000,  12000,  14000,  16000,  20000,
    24000, 30000, 36000, 44000, 54000, 64000, 80000, 96000, 120000, 144000, 168000, 192000,
};
const size_t lmi_n_default_buckets = sizeof lmi_default_buckets / sizeof lmi_default_buckets[0];

/* Nearest bucket to S; a tie goes to the smaller bucket; below the first
 * the first, beyond the last the last.  buckets must be ascending.
 * Returns -1 only for an empty or NULL table. */
int64_t lmi_bucket_index(const int64_t *buckets, int64_t n_buckets, int64_t S)
{
    if (!buckets || n_buckets <= 0)
        return -1;
    /* first index with buckets[i] >= S (binary search) */
    int64_t lo = 0, hi = n_buckets;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (buckets[mid] < S)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == n_buckets)
        return n_buckets - 1;
    if (lo == 0)
        return 0;
    /* buckets[lo-1] < S <= buckets[lo]; distances as unsigned-safe int64 */
    int64_t below = S - buckets[lo - 1];
    int64_t above = buckets[lo] - S;
    return above < below ? lo : lo - 1;
}

/* ---- descending sort of doubles ---------------------------------------- */

/* Introsort (quicksort, heapsort past a depth limit, insertion sort for
 * short runs), descending, for finite values.  Replaces qsort: no
 * comparison callback and no allocation inside the calibration's parallel
 * loop, where sorting was the largest cost. */
static void sift_min(double *v, int64_t n, int64_t i)
{
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && v[c + 1] < v[c])
            c++;
        if (!(v[c] < v[i]))
            return;
        double t = v[i];
        v[i] = v[c];
        v[c] = t;
        i = c;
    }
}

static void heap_sort_desc(double *v, int64_t n)
{
    /* min-heap: repeatedly move the smallest to the end */
    for (int64_t i = n / 2 - 1; i >= 0; i--)
        sift_min(v, n, i);
    for (int64_t end = n - 1; end > 0; end--) {
        double t = v[0];
        v[0] = v[end];
        v[end] = t;
        sift_min(v, end, 0);
    }
}

static void intro_sort_desc(double *v, int64_t n, int depth)
{
    while (n > 24) {
        if (depth-- == 0) {
            heap_sort_desc(v, n);
            return;
        }
        /* median of three as pivot */
        double a = v[0], b = v[n / 2], c = v[n - 1];
        double piv = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
        int64_t i = 0, j = n - 1;
        for (;;) {
            while (v[i] > piv)
                i++;
            while (v[j] < piv)
                j--;
            if (i >= j)
                break;
            double t = v[i];
            v[i] = v[j];
            v[j] = t;
            i++;
            j--;
        }
        /* [0, j] >= piv >= [j+1, n): recurse on the smaller part */
        int64_t nl = j + 1;
        if (nl < n - nl) {
            intro_sort_desc(v, nl, depth);
            v += nl;
            n -= nl;
        } else {
            intro_sort_desc(v + nl, n - nl, depth);
            n = nl;
        }
    }
    for (int64_t i = 1; i < n; i++) {
        double x = v[i];
        int64_t k = i;
        while (k > 0 && v[k - 1] < x) {
            v[k] = v[k - 1];
            k--;
        }
        v[k] = x;
    }
}

static void sort_desc(double *v, int64_t n)
{
    int depth = 0;
    for (int64_t m = n; m > 1; m >>= 1)
        depth += 2;
    intro_sort_desc(v, n, depth);
}

/* ---- per-channel calibration statistics -------------------------------- */

/* m[j] of `sorted` (length L) stretched to length S, as
 * torch.nn.functional.interpolate(mode='linear', align_corners=False):
 *   x  = max(0, (j + 0.5) * L / S - 0.5)
 *   i0 = floor(x) (<= L-1), i1 = min(i0 + 1, L - 1), w = x - i0
 *   m  = (1 - w) * sorted[i0] + w * sorted[i1]                              */
static double stretched_at(const double *sorted, int64_t L, double scale, int64_t j)
{
    double x = ((double)j + 0.5) * scale - 0.5;
    if (x < 0.0)
        x = 0.0;
    int64_t i0 = (int64_t)x;
    if (i0 > L - 1)
        i0 = L - 1;
    int64_t i1 = i0 < L - 1 ? i0 + 1 : L - 1;
    double w = x - (double)i0;
    return (1.0 - w) * sorted[i0] + w * sorted[i1];
}

/* Threshold for one bucket S > L: the value m[k] at which the stretched,
 * descending Δ profile first accumulates more than `target`.  Generates m
 * on the fly: O(k) <= O(S) time, no S-sized memory.  If the cumulative sum
 * never exceeds target (only when target <= 0, i.e. an all-zero channel),
 * the threshold is 0: filter nothing. */
static float bucket_threshold(const double *sorted, int64_t L, int64_t S, double target)
{
    double scale = (double)L / (double)S;
    double cum = 0.0;
    for (int64_t j = 0; j < S; j++) {
        cum += stretched_at(sorted, L, scale, j);
        if (cum > target) {
            /* k = first crossing index + 1, clamped to S-1 */
            int64_t k = j + 1 < S - 1 ? j + 1 : S - 1;
            return (float)stretched_at(sorted, L, scale, k);
        }
    }
    return 0.0f;
}

void lmi_channel_stats(const float *delta, int64_t L, int64_t stride, double sc, const float *A_row,
                       int64_t N, double A_head, const int64_t *buckets, int64_t n_buckets,
                       double *scratch, double *log_decay, float *thr_out)
{
    double *d = scratch;          /* [L] Δ in token order (clamped) */
    double *sorted = scratch + L; /* [L] Δ descending */
    for (int64_t t = 0; t < L; t++)
        d[t] = sorted[t] = (double)delta[t * stride];
    /* sorted = delta.sort(descending=True) */
    sort_desc(sorted, L);

    /* Optional clamp: Δ <- min(Δ, sorted[max(1, floor(L*sc))]); the rank is
     * kept inside the window for tiny L.  min() keeps `sorted` descending. */
    if (sc > 0.0) {
        int64_t r = (int64_t)floor((double)L * sc);
        if (r < 1)
            r = 1;
        if (r > L - 1)
            r = L - 1;
        double cap = sorted[r];
        for (int64_t t = 0; t < L; t++) {
            if (d[t] > cap)
                d[t] = cap;
            if (sorted[t] > cap)
                sorted[t] = cap;
        }
    }

    /* target = Δ.sum() (token order, as the reference sums) */
    double target = 0.0;
    for (int64_t t = 0; t < L; t++)
        target += d[t];

    if (N > 0) {
        /* decay = prod_t mean_n exp(Δ_t A_n), as a sum of logs:
         * log mean_n exp(a_n) = logsumexp_n(a_n) - log N, stable for any Δ */
        double acc = 0.0, logN = log((double)N);
        for (int64_t t = 0; t < L; t++) {
            double m = -INFINITY;
            for (int64_t n = 0; n < N; n++) {
                double a = d[t] * (double)A_row[n];
                if (a > m)
                    m = a;
            }
            double s = 0.0;
            for (int64_t n = 0; n < N; n++)
                s += exp(d[t] * (double)A_row[n] - m);
            acc += m + log(s) - logN;
        }
        *log_decay = acc;
    } else {
        /* Mamba-2: decay = exp(A_head * sum_t Δ_t) */
        *log_decay = A_head * target;
    }

    for (int64_t b = 0; b < n_buckets; b++)
        thr_out[b] = buckets[b] > L ? bucket_threshold(sorted, L, buckets[b], target) : 0.0f;
}

/* ---- DeciMamba --------------------------------------------------------- */

int64_t lmi_deci_keep_count(int64_t L, int64_t R, double budget, int64_t min_len)
{
    int64_t avail = L - R;
    if (avail <= 0)
        return 0;
    /* K = int(max(min(L - R, budget), min_len)), at most L - R */
    double k = (double)avail;
    if (budget < k)
        k = budget; /* NaN budget leaves k = L - R: keep all */
    if ((double)min_len > k)
        k = (double)min_len;
    if (!(k > 0.0))
        return 0;
    if (k >= (double)avail)
        return avail;
    return (int64_t)k; /* truncation, as Python's int() */
}

/* Token order for the selection: a scores higher than b, or scores tie and
 * a comes first (stable: the earlier token wins).  NaN ranks below every
 * number so that the relation stays a strict total order. */
static bool deci_before(const float *scores, int64_t a, int64_t b)
{
    float sa = scores[a], sb = scores[b];
    bool na = isnan(sa), nb = isnan(sb);
    if (na != nb)
        return nb;
    if (!na && sa != sb)
        return sa > sb;
    return a < b;
}

/* Sift-down for a heap whose root is the element that comes LAST in the
 * selection order, so that heapsort leaves v[] in selection order. */
static void deci_sift(const float *scores, int64_t *v, int64_t n, int64_t i)
{
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && deci_before(scores, v[c], v[c + 1]))
            c++;
        if (!deci_before(scores, v[i], v[c]))
            return;
        int64_t t = v[i];
        v[i] = v[c];
        v[c] = t;
        i = c;
    }
}

lm_status lmi_deci_select(const float *scores, int64_t L, int64_t R, int64_t K, int64_t *idx,
                          int64_t *scratch, lmi_err *e)
{
    if (!scores || !idx || !scratch)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "deci_select: NULL argument");
    if (L < 1 || R < 0 || R > L)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "deci_select: need 1 <= L and 0 <= R <= L (L %lld, R %lld)", (long long)L,
                        (long long)R);
    int64_t n = L - R;
    if (K < 0 || K > n)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "deci_select: keep count %lld outside [0, %lld]", (long long)K,
                        (long long)n);
    int64_t out = 0;
    if (K == n) {
        for (int64_t t = 0; t < n; t++)
            idx[out++] = t;
    } else if (K > 0) {
        /* heapsort the candidates into selection order: O(n log n) */
        for (int64_t t = 0; t < n; t++)
            scratch[t] = t;
        for (int64_t i = n / 2 - 1; i >= 0; i--)
            deci_sift(scores, scratch, n, i);
        for (int64_t end = n - 1; end > 0; end--) {
            int64_t t = scratch[0];
            scratch[0] = scratch[end];
            scratch[end] = t;
            deci_sift(scores, scratch, end, 0);
        }
        /* scratch[K-1] is the K-th best; the K best are exactly the tokens
         * not after it in the order: emit them in original order. */
        int64_t pivot = scratch[K - 1];
        for (int64_t t = 0; t < n; t++)
            if (t == pivot || deci_before(scores, t, pivot))
                idx[out++] = t;
    }
    for (int64_t t = n; t < L; t++)
        idx[out++] = t;
    return LM_OK;
}
