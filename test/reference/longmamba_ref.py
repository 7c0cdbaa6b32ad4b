"""Independent float64 NumPy reference of LongMamba and DeciMamba.

Written from docs/LONGMAMBA.md only (not from the library's C code), to
check lib/ against.  Every function takes and returns NumPy arrays; inputs
that the C side receives as float32 should be given as float32 arrays (they
are widened to float64 exactly).  Choices the spec leaves open are marked
"DECISION" and are the contract the C side is tested against.

    clamp_delta            §3  optional Δ clamp with sc
    log_decay_m1/_m2       §2  per-window log of cumulative decay
    thresholds             §3  per-bucket token-filter thresholds thr[S]
    channel_stats          §2-3 both of the above, as lmi_channel_stats does
    aggregate_log_decay    §3  max / mean over calibration windows
    aggregate_thresholds   §3
    classify               §2  global iff log_decay > log(theta)
    bucket_index           §4  nearest bucket, ties to the smaller
    scan_filtered          §4  Mamba-1 selective scan with per-channel filter
    deci_scores            §5  ‖Δ[:, t]‖₂
    deci_keep_count        §5
    deci_select            §5
"""

import math

import numpy as np


# ------------------------------------------------------------------ §3 clamp

def clamp_rank(L, sc):
    """0-based rank in the descending order whose value caps Δ.

    DECISION: LONGMAMBA.md says "the value at rank max(1, floor(L_cal·sc))";
    we read the rank as a 0-based index into the descending sort, so
    rank 1 is the SECOND largest value (the largest single value is always
    clamped when sc > 0).  floor(L·sc) is computed in double.  The index is
    clamped to L-1 (only matters for L == 1, where the clamp is a no-op).
    Returns None when sc == 0 (clamp off).
    """
    if sc == 0.0:
        return None
    r = max(1, int(math.floor(float(L) * float(sc))))
    return min(r, L - 1)


def clamp_delta(delta, sc):
    """Δ ← min(Δ, sorted_desc[clamp_rank(L, sc)]); float64 copy."""
    d = np.array(delta, dtype=np.float64).reshape(-1)
    r = clamp_rank(d.size, sc)
    if r is None:
        return d
    cap = np.sort(d)[::-1][r]
    return np.minimum(d, cap)


# ------------------------------------------------------------- §2 decay

def _logmeanexp_rows(x):
    """log(mean_n exp(x[t, n])) per row, stable (logsumexp - log N): finite
    even when every exp underflows double."""
    m = x.max(axis=1, keepdims=True)
    return m[:, 0] + np.log(np.exp(x - m).sum(axis=1)) - math.log(x.shape[1])


def log_decay_m1(delta, A_row):
    """Mamba-1 channel: Σ_t log(mean_n exp(Δ_t · A_n)); Δ already clamped."""
    d = np.asarray(delta, dtype=np.float64).reshape(-1)
    a = np.asarray(A_row, dtype=np.float64).reshape(-1)
    if d.size == 0:
        return 0.0
    return math.fsum(_logmeanexp_rows(d[:, None] * a[None, :]).tolist())


def log_decay_m2(delta, A_head):
    """Mamba-2 head: A · Σ_t Δ_t (the log of exp(A·ΣΔ))."""
    d = np.asarray(delta, dtype=np.float64).reshape(-1)
    return float(A_head) * math.fsum(d.tolist())


# --------------------------------------------------------- §3 thresholds

def stretch_linear(sorted_desc, S):
    """torch.nn.functional.interpolate(x[None, None], size=S, mode='linear',
    align_corners=False) in float64: sample x_j = max(0, scale·(j+0.5) − 0.5)
    with scale = L/S (torch computes the scale first), linear between
    floor(x_j) and floor(x_j)+1, the upper index clamped to L−1:
        m[j] = (1 − λ)·s[i0] + λ·s[i1]     (torch's form of the blend)
    """
    s = np.asarray(sorted_desc, dtype=np.float64)
    L = s.size
    scale = float(L) / float(S)
    x = np.maximum(0.0, scale * (np.arange(S, dtype=np.float64) + 0.5) - 0.5)
    i0 = np.minimum(np.floor(x).astype(np.int64), L - 1)
    i1 = np.minimum(i0 + 1, L - 1)
    lam = np.clip(x - i0, 0.0, 1.0)
    return (1.0 - lam) * s[i0] + lam * s[i1]


def _first_above(c, level):
    """First index i with c[i] > level, or None."""
    idx = np.flatnonzero(c > level)
    return int(idx[0]) if idx.size else None


def threshold_one(delta_clamped, S, exact=False):
    """thr for one bucket S, as (value, alternatives).

    value: float64 threshold per LONGMAMBA.md §3 (0 when S <= L):
        target = Σ Δ;  m = stretch(sorted_desc(Δ), S);
        i = first index with cumsum(m)[i] > target (strict);
        k = min(i + 1, S − 1);  thr = m[k].
    DECISION: when no index crosses (only possible when the target is not
    reached, e.g. all Δ = 0) k = S − 1 (as if the crossing were past the
    end, then clamped).
    alternatives: the set of float32 values acceptable from an
    implementation that sums in a different order.  When a cumsum lies
    within 1e-13·target of the target (a crossing decided by rounding),
    both neighbouring k are accepted.  exact=True (inputs whose arithmetic
    is exact in double, e.g. multiples of 1/8 and S = 2L) disables this so
    that the strict '>' itself is tested.
    """
    d = np.asarray(delta_clamped, dtype=np.float64).reshape(-1)
    L = d.size
    if S <= L:
        return 0.0, {np.float32(0.0)}
    target = math.fsum(d.tolist())
    m = stretch_linear(np.sort(d)[::-1], S)
    c = np.cumsum(m)  # sequential, as a C loop would do

    def thr_at(i):
        k = S - 1 if i is None else min(i + 1, S - 1)
        return float(m[k])

    value = thr_at(_first_above(c, target))
    alts = {np.float32(value)}
    if not exact:
        tol = 1e-13 * abs(target)
        lo, hi = _first_above(c, target - tol), _first_above(c, target + tol)
        cand = set()
        if lo is not None:
            last = hi if hi is not None else S - 1
            cand.update(range(lo, last + 1))
        if hi is None:
            cand.add(None)
        alts.update(np.float32(thr_at(i)) for i in cand)
    return value, alts


def thresholds(delta_clamped, buckets, exact=False):
    """Per-bucket thresholds: (float32 array, list of acceptable sets)."""
    vals, alts = [], []
    for S in buckets:
        v, a = threshold_one(delta_clamped, int(S), exact)
        vals.append(np.float32(v))
        alts.append(a)
    return np.array(vals, dtype=np.float32), alts


def channel_stats(delta, sc, buckets, A_row=None, A_head=None, exact=False):
    """What lmi_channel_stats computes for one channel and one window:
    clamp with sc, then (log_decay, thr[float32 per bucket], alternatives).
    Mamba-1 when A_row is given (N > 0), Mamba-2 otherwise (A_head)."""
    d = clamp_delta(delta, sc)
    if A_row is not None and np.asarray(A_row).size > 0:
        ld = log_decay_m1(d, A_row)
    else:
        ld = log_decay_m2(d, A_head)
    thr, alts = thresholds(d, buckets, exact)
    return ld, thr, alts


# -------------------------------------------------- §3 window aggregation

def aggregate_log_decay(log_decays, how):
    """log_decays: [W, ...] per-window log decays.  'max': elementwise max.
    'mean': log of the arithmetic mean of the DECAY values (not of the
    logs), computed stably as logsumexp_w(log_decay) − log W."""
    x = np.asarray(log_decays, dtype=np.float64)
    if how == "max":
        return x.max(axis=0)
    if how == "mean":
        m = x.max(axis=0)
        safe = np.where(np.isfinite(m), m, 0.0)
        return safe + np.log(np.exp(x - safe).sum(axis=0)) - math.log(x.shape[0])
    raise ValueError(how)


def aggregate_thresholds(thr, how):
    """thr: [W, ...] per-window thresholds.  'max' or arithmetic 'mean',
    in float64 (round to float32 once, at the end)."""
    x = np.asarray(thr, dtype=np.float64)
    if how == "max":
        return x.max(axis=0)
    if how == "mean":
        return x.mean(axis=0)
    raise ValueError(how)


# ------------------------------------------------------ §2 classification

def classify(log_decay, theta):
    """global iff log_decay > log(theta) (strict); theta finite and > 0.
    math.log is the C library's log, so log(theta) matches the C side bit
    for bit."""
    theta = float(theta)
    if not (math.isfinite(theta) and theta > 0.0):
        raise ValueError("theta must be finite and > 0")
    return (np.asarray(log_decay, dtype=np.float64) > math.log(theta)).astype(np.uint8)


# ----------------------------------------------------------- §4 bucket

def bucket_index(buckets, S):
    """Index of the bucket nearest to S; ties go to the smaller bucket;
    beyond the last bucket, the last (below the first, the first)."""
    b = [int(v) for v in buckets]
    if S >= b[-1]:
        return len(b) - 1
    best = 0
    for i in range(1, len(b)):
        if abs(S - b[i]) < abs(S - b[best]):  # strict: ties keep the smaller
            best = i
    return best


# ------------------------------------------------------ §4 filtered scan

def softplus(v):
    """softplus with torch's threshold 20, float64."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(v > 20.0, v, np.log1p(np.exp(np.minimum(v, 20.0))))


def silu(v):
    v = np.asarray(v, dtype=np.float64)
    return v / (1.0 + np.exp(-v))


def scan_delta(delta, delta_is_dt=False, dt_bias=None):
    """Post-softplus Δ [L, E] in float64 (before filtering)."""
    d = np.asarray(delta, dtype=np.float64)
    if delta_is_dt:
        b = 0.0 if dt_bias is None else np.asarray(dt_bias, dtype=np.float64)[None, :]
        return softplus(d + b)
    return d.copy()


def scan_filtered(u, delta, A, B, C, D=None, z=None, dt_bias=None, delta_is_dt=False,
                  global_mask=None, thresholds=None, state_in=None):
    """Mamba-1 selective scan with the LongMamba filter, float64.

    Layout (token-major, as lm_scan_filtered): u, delta, z: [L, E];
    B, C: [L, N]; A: [E, N]; D, dt_bias, thresholds, global_mask: [E];
    state_in: [E, N].  For every token t and channel e:
        d = softplus(dt + dt_bias) if delta_is_dt else Δ
        if global[e] and not (d > thr[e]):  d = 0        (strict >)
        h = exp(d·A[e]) ⊙ h + d · B[t] · u[t, e]
        y[t, e] = (Σ_n h·C[t] + D[e]·u[t, e]) · silu(z[t, e])
    A filtered token keeps the state (exp(0) = 1, no write) and still
    produces its output.  Returns (y, h_final, y_mag, h_mag, kept) where
    y_mag = (Σ_n |h|·|C| + |D·u|)·|silu z| and h_mag (the same recurrence on
    absolute values) are the magnitudes a float32 implementation's rounding
    error is proportional to, and kept [L, E] is the filter decision.
    """
    u = np.asarray(u, dtype=np.float64)
    L, E = u.shape
    A = np.asarray(A, dtype=np.float64)
    N = A.shape[1]
    B = np.asarray(B, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    d = scan_delta(delta, delta_is_dt, dt_bias)
    kept = np.ones((L, E), dtype=bool)
    if global_mask is not None:
        g = np.asarray(global_mask).astype(bool)[None, :]
        thr = np.asarray(thresholds, dtype=np.float64)[None, :]
        kept = ~(g & ~(d > thr))
        d = np.where(kept, d, 0.0)
    Dv = np.zeros(E) if D is None else np.asarray(D, dtype=np.float64)
    gate = np.ones((L, E)) if z is None else silu(z)
    h = np.zeros((E, N)) if state_in is None else np.array(state_in, dtype=np.float64)
    hm = np.abs(h)
    y = np.empty((L, E))
    ym = np.empty((L, E))
    for t in range(L):
        dA = np.exp(d[t][:, None] * A)
        dBu = d[t][:, None] * B[t][None, :] * u[t][:, None]
        h = dA * h + dBu
        hm = dA * hm + np.abs(dBu)
        y[t] = ((h * C[t][None, :]).sum(axis=1) + Dv * u[t]) * gate[t]
        ym[t] = ((hm * np.abs(C[t])[None, :]).sum(axis=1) + np.abs(Dv * u[t])) * np.abs(gate[t])
    return y, h, ym, hm, kept


# ------------------------------------------------------------ §5 DeciMamba

def deci_scores(delta):
    """Per-token score ‖Δ[t, :]‖₂ over all channels; delta [L, E]."""
    d = np.asarray(delta, dtype=np.float64)
    return np.sqrt((d * d).sum(axis=1))


def deci_keep_count(L, R, budget, min_len):
    """K = int(max(min(L − R, budget), min_len)), then at most L − R (and
    not below 0).  int() truncates toward zero like a C cast."""
    K = int(max(min(float(L - R), float(budget)), float(min_len)))
    return max(0, min(K, L - R))


def deci_select(scores, L, R, K):
    """Ascending indices of the K top-scoring tokens among the first L − R,
    then the last R tokens.  If L − R <= K nothing is dropped.
    DECISION (tie-breaking): order by score descending, equal scores by
    index ascending (stable: the earlier token wins)."""
    s = [float(v) for v in np.asarray(scores).reshape(-1)[:L - R]]
    n = L - R
    if K >= n:
        chosen = list(range(n))
    else:
        order = sorted(range(n), key=lambda i: (-s[i], i))
        chosen = sorted(order[:K])
    return np.array(chosen + list(range(n, L)), dtype=np.int64)
