/*
 * sample.c - the next-token sampler: its parameters (lm_sampling_params,
 * lm_session_set_sampling) and one host row sampled by the header's rule
 * ("sampling the next token"), lmi_sample_row, which any backend may call
 * on host rows.  A device backend implements the same rule in its
 * sample_batch.
 *
 * The candidates are ordered only as far as the rule reads them: top_k by
 * selection (expected O(V)) and then a sort of the k kept; otherwise a
 * sorted prefix grown by selection, doubling, until the cumulative weight
 * passes its target.  A peaked row costs O(V) (the maximum, the sum W and
 * a short prefix); a flat one at worst what a full sort costs.
 *
 * Sums: W adds the candidates in scratch order (id order, or selection
 * order under top_k), the cumulative sums add in the rule's order.  Where
 * W and the cumulative differ by rounding, step 5's fallback (the last
 * candidate with w > 0) applies.
 */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ---- parameters ---------------------------------------------------------- */

void lm_sampling_params_init(lm_sampling_params *p)
{
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = (uint32_t)sizeof *p;
    p->top_p = 1.0f;
}

static lm_status check_params(const lm_sampling_params *p, lmi_err *e)
{
    if (!isfinite(p->temperature))
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                        "set_sampling: temperature %g must be finite (<= 0: greedy)",
                        (double)p->temperature);
    if (p->top_k < 0)
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE, "set_sampling: top_k %d must be >= 0 (0 = all)",
                        (int)p->top_k);
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return lmi_fail(e, LM_ERR_OUT_OF_RANGE,
                        "set_sampling: top_p %g must be in [0, 1] (0 or 1 = off)",
                        (double)p->top_p);
    const uint32_t unknown = p->flags & ~(uint32_t)LM_SAMPLE_RETURN_LOGITS;
    if (unknown)
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT,
                        "set_sampling: flags 0x%x has unknown bits 0x%x", (unsigned)p->flags,
                        (unsigned)unknown);
    return LM_OK;
}

lm_status lm_session_set_sampling(lm_session *s, const lm_sampling_params *params)
{
    if (!s) return LM_ERR_INVALID_ARGUMENT;
    lm_sampling_params p;
    lm_sampling_params_init(&p);
    /* Every field exists since 0.3, the struct's first release. */
    if (params && !lmi_copy_params(&p, sizeof p, params, params->struct_size,
                                   offsetof(lm_sampling_params, flags) + sizeof(uint32_t)))
        return lmi_fail(&s->err, LM_ERR_INVALID_ARGUMENT,
                        "set_sampling: params->struct_size %u too small; use "
                        "lm_sampling_params_init",
                        (unsigned)params->struct_size);
    lm_status st = check_params(&p, &s->err);
    if (st != LM_OK) return st;
    s->sampler = (lmi_sampler){p.temperature, p.top_k, p.top_p, p.seed, p.flags};
    return LM_OK;
}

/* ---- the draw ------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x)
{
    uint64_t z = x + 0x9E3779B97F4A7C15u;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

double lmi_sample_uniform(uint64_t seed, int64_t position)
{
    const uint64_t h = splitmix64(seed ^ ((uint64_t)position * 0x9E3779B97F4A7C15u));
    return (double)(h >> 11) * 0x1p-53;
}

/* ---- ordering candidates ----------------------------------------------------- */

/* a comes before b: higher logit first, ties lower id first.  A strict
 * total order for finite logits, so selection and sorting are exact. */
static inline bool before(const float *l, int64_t a, int64_t b)
{
    return l[a] > l[b] || (l[a] == l[b] && a < b);
}

static inline void swap_ids(int64_t *ids, int64_t i, int64_t j)
{
    const int64_t t = ids[i];
    ids[i] = ids[j];
    ids[j] = t;
}

/* Partitions ids[lo, hi) (at least 2) around the median of its first,
 * middle and last entries; returns the pivot's index, with every entry
 * before it coming before it in order and every entry after it after. */
static int64_t partition(const float *l, int64_t *ids, int64_t lo, int64_t hi)
{
    const int64_t mid = lo + (hi - lo) / 2, last = hi - 1;
    if (before(l, ids[mid], ids[lo])) swap_ids(ids, mid, lo);
    if (before(l, ids[last], ids[lo])) swap_ids(ids, last, lo);
    if (before(l, ids[last], ids[mid])) swap_ids(ids, last, mid);
    swap_ids(ids, mid, last); /* the median is the pivot, parked at the end */
    const int64_t pivot = ids[last];
    int64_t store = lo;
    for (int64_t i = lo; i < last; i++)
        if (before(l, ids[i], pivot)) swap_ids(ids, i, store++);
    swap_ids(ids, store, last);
    return store;
}

/* Moves the first m - lo (in order) of ids[lo, hi) to ids[lo, m), unsorted;
 * lo < m < hi. */
static void select_first(const float *l, int64_t *ids, int64_t lo, int64_t hi, int64_t m)
{
    while (hi - lo > 1) {
        const int64_t p = partition(l, ids, lo, hi);
        if (p == m || p + 1 == m) return;
        if (p > m)
            hi = p;
        else
            lo = p + 1;
    }
}

/* Sorts ids[lo, hi) into order.  Recursing into the smaller side keeps the
 * stack O(log n); short ranges go by insertion. */
static void sort_ids(const float *l, int64_t *ids, int64_t lo, int64_t hi)
{
    while (hi - lo > 16) {
        const int64_t p = partition(l, ids, lo, hi);
        if (p - lo < hi - p) {
            sort_ids(l, ids, lo, p);
            lo = p + 1;
        } else {
            sort_ids(l, ids, p + 1, hi);
            hi = p;
        }
    }
    for (int64_t i = lo + 1; i < hi; i++)
        for (int64_t j = i; j > lo && before(l, ids[j], ids[j - 1]); j--) swap_ids(ids, j, j - 1);
}

/* ---- the walk over the candidates -------------------------------------------- */

typedef struct cands {
    const float *l;
    int64_t *ids;   /* the candidates ids[0, n) */
    int64_t n;
    int64_t sorted; /* ids[0, sorted) are the first `sorted` candidates, in order */
    double lmax, t;
} cands;

/* Orders the candidates up to index i, growing the sorted prefix by
 * selection from the rest, doubling (at least 64 at a time). */
static void order_upto(cands *c, int64_t i)
{
    while (i >= c->sorted) {
        const int64_t grow = c->sorted > 64 ? c->sorted : 64;
        const int64_t m = c->n - c->sorted > grow ? c->sorted + grow : c->n;
        if (m < c->n) select_first(c->l, c->ids, c->sorted, c->n, m);
        sort_ids(c->l, c->ids, c->sorted, m);
        c->sorted = m;
    }
}

/* Rule step 2; the division (not a product with 1/T) is the rule's. */
static inline double weight(const cands *c, int64_t id)
{
    return exp(((double)c->l[id] - c->lmax) / c->t);
}

/* Index of the first of the first n candidates whose cumulative weight
 * passes target (strict: >, else >=), with that cumulative in *cum.  The
 * first weight is 1 (the maximum), and weights only fall along the order,
 * so the walk ends at the first zero: then (rounding) the last w > 0. */
static int64_t walk(cands *c, int64_t n, double target, bool strict, double *cum)
{
    double s = 0.0;
    int64_t i = 0;
    for (; i < n; i++) {
        order_upto(c, i);
        const double w = weight(c, c->ids[i]);
        if (w == 0.0) break;
        s += w;
        if (strict ? s > target : s >= target) {
            *cum = s;
            return i;
        }
    }
    *cum = s;
    return i - 1;
}

/* ---- one row ------------------------------------------------------------------- */

/* Index of the row's maximum (ties: the lowest), or the first non-finite
 * logit's id as -1 - id.  NaN and +-inf fail |x| <= FLT_MAX: the check
 * stays out of the loop's branches. */
static int64_t row_argmax(const float *l, int64_t V)
{
    int64_t best = 0;
    float mx = l[0];
    bool finite = true;
    for (int64_t i = 0; i < V; i++) {
        const float x = l[i];
        finite &= fabsf(x) <= FLT_MAX;
        if (x > mx) {
            mx = x;
            best = i;
        }
    }
    if (finite) return best;
    int64_t i = 0;
    while (isfinite(l[i])) i++;
    return -1 - i;
}

lm_status lmi_sample_row(const float *l, int64_t V, const lmi_sampler *sp, int64_t position,
                         int32_t *out, int64_t *scratch, lmi_err *e)
{
    const bool greedy = !sp || !(sp->temperature > 0.0f);
    if (!l || !sp || !out || V < 1 || V > (int64_t)INT32_MAX + 1 || (!greedy && !scratch))
        return lmi_fail(e, LM_ERR_INVALID_ARGUMENT, "sample: invalid arguments");
    const int64_t best = row_argmax(l, V);
    if (best < 0) {
        const float bad = l[-1 - best];
        return lmi_fail(e, LM_ERR_NUMERIC, "the logit of token %lld is %s", (long long)(-1 - best),
                        isnan(bad) ? "NaN" : bad > 0 ? "+inf" : "-inf");
    }
    if (greedy) {
        *out = (int32_t)best;
        return LM_OK;
    }
    cands c = {l, scratch, V, 0, (double)l[best], (double)sp->temperature};
    for (int64_t i = 0; i < V; i++) scratch[i] = i;
    if (sp->top_k > 0 && sp->top_k < V) {
        select_first(l, scratch, 0, V, sp->top_k);
        c.n = sp->top_k;
    }
    double W = 0.0;
    for (int64_t i = 0; i < c.n; i++) W += weight(&c, scratch[i]);
    int64_t kept = c.n;
    double kept_w = W;
    if (sp->top_p > 0.0f && sp->top_p < 1.0f)
        kept = walk(&c, c.n, (double)sp->top_p * W, false, &kept_w) + 1;
    const double u = lmi_sample_uniform(sp->seed, position);
    double cum;
    *out = (int32_t)scratch[walk(&c, kept, u * kept_w, true, &cum)];
    return LM_OK;
}
