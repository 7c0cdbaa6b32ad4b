#!/usr/bin/env python3
"""Compare the library's LongMamba / DeciMamba pieces with the independent
NumPy reference (test/reference/longmamba_ref.py).

    test_longmamba_ref.py DRIVER [LIBRARY] [--seed N]

DRIVER is the built test/lmref_driver; LIBRARY (optional) the built shared
library, checked for its exported symbols.  Cases are random (the seed is
printed; rerun with --seed N) plus fixed awkward ones.  Before anything is
compared with C, the reference itself is checked against small cases
computed by hand (see hand_checks).

Tolerances (and why):
  scan       |y_c − y_ref| <= 1e-5 · y_mag elementwise, y_mag = (Σ_n |h||C| +
             |D u|)·|silu z| from the float64 reference: float32 rounding
             error is proportional to the magnitudes summed, not to y (which
             may cancel).  Same for the final state with the recurrence run on
             absolute values.  Filter decisions are exact (see below).
  log decay  relative 1e-9 (C works in double from float inputs).
  thresholds exactly equal float32 values.  When a cumsum lies within
             1e-13 of the target (a crossing decided by summation order) both
             neighbouring k are accepted; cases built from multiples of 1/8
             with S = L·2^j are exact in double and test the strict '>'.
  masks, bucket indices, keep counts, selected indices: exactly equal.
Exits non-zero on any failure; the last line is "N passed, M failed".
"""

import argparse
import ctypes
import math
import os
import subprocess
import sys
import tempfile

import numpy as np  # required: a missing numpy is a test failure, not a skip

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
import longmamba_ref as ref  # noqa: E402

LM_OK = 0
LM_ERR_INVALID_ARGUMENT = 1
LM_ERR_BUFFER_TOO_SMALL = 8

# LongMamba's bucket list (LONGMAMBA.md §3), written out here in tokens of
# 1,000 as a test input (the library's own default list is not tested here).
PAPER_BUCKETS = [1000 * k for k in (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 30, 36,
                                    44, 54, 64, 80, 96, 120, 144, 168, 192)]


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, name, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL %s%s" % (name, (": " + detail) if detail else ""))
        return ok


T = Tally()


# ----------------------------------------------------------- binary I/O

class Writer:
    def __init__(self):
        self.parts = []

    def i64(self, *v):
        self.parts.append(np.array(v, dtype="<i8").tobytes())

    def f64(self, *v):
        self.parts.append(np.array(v, dtype="<f8").tobytes())

    def arr(self, a, dtype):
        self.parts.append(np.ascontiguousarray(np.asarray(a).reshape(-1), dtype=dtype).tobytes())

    def data(self):
        return b"".join(self.parts)


class Reader:
    def __init__(self, b):
        self.b = b
        self.o = 0

    def take(self, dtype, n):
        dt = np.dtype(dtype)
        if self.o + dt.itemsize * n > len(self.b):
            raise EOFError("driver output truncated")
        a = np.frombuffer(self.b, dtype=dt, count=n, offset=self.o)
        self.o += dt.itemsize * n
        return a.copy()

    def i64(self):
        return int(self.take("<i8", 1)[0])

    def f64(self):
        return float(self.take("<f8", 1)[0])

    def msg(self):
        n = self.i64()
        if n < 0 or self.o + n > len(self.b):
            raise EOFError("bad message length")
        s = self.b[self.o:self.o + n].decode("utf-8", "replace")
        self.o += n
        return s


def run_driver(driver, mode, cases, write_case, read_and_check):
    """Writes all cases, runs the driver once, checks each case's output."""
    w = Writer()
    w.i64(len(cases))
    for c in cases:
        write_case(w, c)
    with tempfile.TemporaryDirectory() as tmp:
        pin, pout = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.bin")
        with open(pin, "wb") as f:
            f.write(w.data())
        try:
            proc = subprocess.run([driver, mode, pin, pout], capture_output=True, timeout=600)
            rc, err = proc.returncode, proc.stderr.decode("utf-8", "replace").strip()
        except subprocess.TimeoutExpired:
            rc, err = "timeout", ""
        out = open(pout, "rb").read() if os.path.exists(pout) else b""
    r = Reader(out)
    done = 0
    try:
        for c in cases:
            read_and_check(r, c)
            done += 1
    except EOFError as e:
        for c in cases[done:]:
            T.check(False, "%s %s" % (mode, c["name"]),
                    "no result (driver rc=%s %s; %s)" % (rc, err[-200:], e))
        return
    T.check(rc == 0, "%s driver exit" % mode, "rc=%s %s" % (rc, err[-300:]))


# ---------------------------------------------------- hand-checked reference

def close(a, b, rel=1e-12):
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-300


def hand_checks():
    """The reference against numbers derived by hand (in the comments)."""
    H = "hand"
    # clamp: Δ = [5,1,4,2,3], sc = 0.2 -> rank max(1, floor(5·0.2)) = 1
    # -> sorted_desc[1] = 4 -> [4,1,4,2,3]; sc = 0.1 -> floor(0.5) = 0 -> rank 1 too.
    d = np.array([5, 1, 4, 2, 3], np.float32)
    T.check(list(ref.clamp_delta(d, 0.2)) == [4, 1, 4, 2, 3], H + " clamp sc=0.2")
    T.check(list(ref.clamp_delta(d, 0.1)) == [4, 1, 4, 2, 3], H + " clamp sc=0.1")
    T.check(list(ref.clamp_delta(d, 0.0)) == [5, 1, 4, 2, 3], H + " clamp off")
    # L = 20, sc = 0.2 -> rank 4 -> the 5th largest of 20..1 = 16.
    T.check(ref.clamp_delta(np.arange(1, 21), 0.2).max() == 16, H + " clamp rank 4")
    T.check(list(ref.clamp_delta([7.0], 0.2)) == [7.0], H + " clamp L=1")

    # Mamba-1 log decay, Δ = [1, 2], A = [-1, -2]:
    # log((e^-1 + e^-2)/2) + log((e^-2 + e^-4)/2)
    # = log(0.2516073622) + log(0.0768254611) = -1.3798855 - 2.5662190 = -3.9461045
    want = math.log((math.exp(-1) + math.exp(-2)) / 2) + math.log((math.exp(-2) + math.exp(-4)) / 2)
    got = ref.log_decay_m1([1.0, 2.0], [-1.0, -2.0])
    T.check(close(got, want) and abs(got + 3.9461045) < 1e-6, H + " log decay m1", repr(got))
    # Underflow: Δ = 1000, A = [-1, -2]: log((e^-1000 + e^-2000)/2) = -1000 - ln 2
    # (every exp underflows double; the value is still finite).
    got = ref.log_decay_m1([1000.0], [-1.0, -2.0])
    T.check(close(got, -1000.0 - math.log(2.0)), H + " log decay underflow", repr(got))
    # Δ = 0 everywhere: decay 1, log 0 exactly.
    T.check(ref.log_decay_m1([0.0, 0.0], [-1.0, -3.0]) == 0.0, H + " log decay zero")
    # Mamba-2: A = -2, Δ = [0.5, 0.25, 0.25] -> -2 · 1 = -2
    T.check(ref.log_decay_m2([0.5, 0.25, 0.25], -2.0) == -2.0, H + " log decay m2")

    # Thresholds, Δ = [3,1,2] (L = 3), S = 6: sorted [3,2,1], target 6,
    # scale 0.5, x_j = max(0, 0.5(j+0.5) - 0.5) = 0, .25, .75, 1.25, 1.75, 2.25
    # m = 3, 2.75, 2.25, 1.75, 1.25, 1;  cumsum 3, 5.75, 8 -> i = 2, k = 3 -> 1.75
    T.check(np.allclose(ref.stretch_linear([3, 2, 1], 6), [3, 2.75, 2.25, 1.75, 1.25, 1]),
            H + " stretch x2")
    T.check(ref.threshold_one([3, 1, 2], 6)[0] == 1.75, H + " thr S=6")
    # S = 4: scale 0.75, x = 0, .625, 1.375, 2.125 -> m = 3, 2.375, 1.625, 1
    # cumsum 3, 5.375, 7 -> i = 2, k = 3 -> 1
    T.check(np.allclose(ref.stretch_linear([3, 2, 1], 4), [3, 2.375, 1.625, 1]), H + " stretch 4/3")
    T.check(ref.threshold_one([3, 1, 2], 4)[0] == 1.0, H + " thr S=4")
    # S <= L: no filtering.
    T.check(ref.threshold_one([3, 1, 2], 3)[0] == 0.0, H + " thr S=L")
    T.check(ref.threshold_one([3, 1, 2], 2)[0] == 0.0, H + " thr S<L")
    # Strict '>' and the '+1': Δ = [4,0,0,0], S = 8: x = 0, .25, .75, 1.25, ...
    # m = 4, 3, 1, 0, 0, 0, 0, 0; cumsum 4, 7: 4 > 4 is false -> i = 1, k = 2 -> 1
    # (a '>=' would give m[1] = 3; forgetting the +1 would give 3 as well).
    T.check(ref.threshold_one([4, 0, 0, 0], 8, exact=True)[0] == 1.0, H + " thr strict")
    # k clamp: Δ = [1,1], S = 3: m = 1,1,1; cumsum 1,2,3 > 2 first at i = 2
    # -> k = 3 -> clamped to 2 -> 1.
    T.check(ref.threshold_one([1, 1], 3, exact=True)[0] == 1.0, H + " thr k clamp")
    # Clamp then threshold: Δ = [4,0,0,0], sc = 0.25 -> rank 1 -> cap 0 -> all 0
    # -> target 0, no crossing -> m[S-1] = 0; log decay 0.
    ld, thr, _ = ref.channel_stats([4, 0, 0, 0], 0.25, [8], A_row=[-1.0])
    T.check(ld == 0.0 and thr[0] == 0.0, H + " stats clamp to zero")

    # Aggregation: decays 0.2 and 0.4 -> mean 0.3, max 0.4; thr 1, 2 -> mean 1.5.
    lds = np.log([[0.2], [0.4]])
    T.check(close(ref.aggregate_log_decay(lds, "mean")[0], math.log(0.3)), H + " agg mean")
    T.check(ref.aggregate_log_decay(lds, "max")[0] == math.log(0.4), H + " agg max")
    T.check(ref.aggregate_thresholds([[1.0], [2.0]], "mean")[0] == 1.5, H + " agg thr mean")
    T.check(ref.aggregate_thresholds([[1.0], [2.0]], "max")[0] == 2.0, H + " agg thr max")

    # Classification at θ = 0.1 (log = -2.302585): -2 global, -2.5 local,
    # exactly log θ local (strict).
    m = ref.classify([-2.0, -2.5, math.log(0.1)], 0.1)
    T.check(list(m) == [1, 0, 0], H + " classify")

    # Buckets [1000, 2000, 4000]: 1500 tie -> 0; 1501 -> 1; 3000 tie -> 1;
    # 3001 -> 2; beyond -> 2; below -> 0.
    b = [1000, 2000, 4000]
    got = [ref.bucket_index(b, s) for s in (1500, 1501, 3000, 3001, 10 ** 6, 1, 2000)]
    T.check(got == [0, 1, 1, 2, 2, 0, 1], H + " bucket", repr(got))

    # Scan, E = N = 1, A = -1, B = C = 1, D = 0.5, u = [1,2,3]:
    # filter thr = 1, Δ = [2, 0.5, 1]: kept, dropped, dropped (1 > 1 false).
    # h = 2, 2, 2; y = h + 0.5u = 2.5, 3, 3.5.
    one = np.ones((3, 1), np.float32)
    u = np.array([[1], [2], [3]], np.float32)
    dl = np.array([[2], [0.5], [1]], np.float32)
    y, h, _, _, kept = ref.scan_filtered(u, dl, [[-1.0]], one, one, D=[0.5],
                                         global_mask=[1], thresholds=[1.0])
    T.check(np.allclose(y[:, 0], [2.5, 3, 3.5], rtol=0, atol=1e-15) and h[0, 0] == 2.0
            and list(kept[:, 0]) == [True, False, False], H + " scan filter", repr(y[:, 0]))
    # Same with state_in h0 = 1: h1 = e^-2 + 2 = 2.1353353, kept thereafter;
    # y = 2.6353353, 3.1353353, 3.6353353.
    y, h, _, _, _ = ref.scan_filtered(u, dl, [[-1.0]], one, one, D=[0.5], global_mask=[1],
                                      thresholds=[1.0], state_in=[[1.0]])
    e2 = math.exp(-2) + 2
    T.check(np.allclose(y[:, 0], [e2 + 0.5, e2 + 1, e2 + 1.5], rtol=0, atol=1e-15),
            H + " scan state_in")
    # No filter (local channel): t1 h = 2, t2 h = e^-0.5·2 + 0.5·2 = 2.2130613,
    # t3 h = e^-1·2.2130613 + 1·3 = 3.8141398; z = 0 gates to 0.
    y, h, _, _, _ = ref.scan_filtered(u, dl, [[-1.0]], one, one, D=[0.5], global_mask=[0],
                                      thresholds=[1.0])
    h2 = math.exp(-0.5) * 2 + 1.0
    h3 = math.exp(-1.0) * h2 + 3.0
    T.check(close(h[0, 0], h3) and abs(h3 - 3.8141398) < 1e-6, H + " scan local", repr(h))
    y, _, _, _, _ = ref.scan_filtered(u, dl, [[-1.0]], one, one, D=[0.5],
                                      z=np.zeros((3, 1), np.float32))
    T.check(np.all(y == 0.0), H + " scan gate z=0")
    # dt mode: softplus(ln(e-1) + 0) = ln(1 + e - 1) = 1
    T.check(close(ref.scan_delta([[math.log(math.e - 1)]], True, [0.0])[0, 0], 1.0),
            H + " softplus")
    T.check(ref.softplus(25.0) == 25.0, H + " softplus threshold")

    # DeciMamba keep counts: (10,1,4,2) -> 4; (10,1,100,2) -> 9 (nothing
    # dropped); (10,1,2.9,0) -> int(2.9) = 2; (10,3,1,20) -> 20 clamped to 7;
    # (4,4,5,3) -> 0.
    got = [ref.deci_keep_count(*a) for a in ((10, 1, 4, 2), (10, 1, 100, 2), (10, 1, 2.9, 0),
                                             (10, 3, 1, 20), (4, 4, 5, 3))]
    T.check(got == [4, 9, 2, 7, 0], H + " deci K", repr(got))
    # Selection: scores [1,5,3,5,2,0.5], L = 6, R = 1: candidates 0..4;
    # K = 2 -> {1,3} (both 5) + [5]; K = 3 -> {1,3,2} -> [1,2,3,5].
    s = [1, 5, 3, 5, 2, 0.5]
    T.check(list(ref.deci_select(s, 6, 1, 2)) == [1, 3, 5], H + " deci select K=2")
    T.check(list(ref.deci_select(s, 6, 1, 3)) == [1, 2, 3, 5], H + " deci select K=3")
    # Ties: all equal, K = 2 of 3 candidates -> the earlier ones [0, 1] + [3].
    T.check(list(ref.deci_select([2, 2, 2, 2], 4, 1, 2)) == [0, 1, 3], H + " deci ties")
    # Scores: ‖[3,4]‖ = 5, ‖[0,0]‖ = 0.
    T.check(list(ref.deci_scores([[3, 4], [0, 0]])) == [5.0, 0.0], H + " deci scores")


# ---------------------------------------------------------------- stats

def stats_cases(rng):
    cases = []

    def add(name, delta, sc, buckets, N, A_row=None, A_head=0.0, stride=1, exact=False):
        delta = np.asarray(delta, np.float32)
        L = delta.size
        if N:
            A_row = np.asarray(A_row, np.float32)
            ld, thr, alts = ref.channel_stats(delta, sc, buckets, A_row=A_row, exact=exact)
        else:
            ld, thr, alts = ref.channel_stats(delta, sc, buckets, A_head=A_head, exact=exact)
        cases.append(dict(name=name, delta=delta, L=L, stride=stride, N=N, A_row=A_row,
                          A_head=A_head, sc=sc, buckets=[int(b) for b in buckets],
                          ld=ld, thr=thr, alts=alts))

    def rand_delta(L):
        return np.exp(rng.normal(math.log(0.02), 1.2, L)).clip(1e-5, 5.0)

    def rand_A(N):
        return -np.exp(np.log(np.arange(1, N + 1)) + rng.normal(0, 0.3, N))

    for L in (1, 2, 7, 100, 2000):
        extra = sorted({max(1, L - 1), L, L + 1, 2 * L, 3 * L + 7})
        bl = sorted(set(PAPER_BUCKETS + extra))
        for N in (1, 16, 0):
            for sc in (0.0, 0.1, 0.15, 0.2):
                stride = int(rng.choice([1, 3, 5]))
                add("random L=%d N=%d sc=%g stride=%d" % (L, N, sc, stride), rand_delta(L), sc,
                    bl, N, rand_A(N) if N else None, -float(np.exp(rng.normal(0, 1))), stride)
    # Very long bucket: 192k and 196608 with L = 2000.
    add("long S", rand_delta(2000), 0.1, [192000, 196608], 16, rand_A(16))
    # All-equal Δ (k lands at S-1 for S = L+1: clamp).
    for L in (1, 5, 64):
        add("all-equal L=%d" % L, np.full(L, 0.05), 0.0, [L, L + 1, 2 * L, 10 * L], 16, rand_A(16))
        add("all-equal sc L=%d" % L, np.full(L, 0.125), 0.2, [L + 1, 4 * L], 1, [-1.0])
    # All zero: log decay 0, thresholds 0.
    add("all-zero", np.zeros(50), 0.1, [100, 1000], 16, rand_A(16))
    add("all-zero m2", np.zeros(50), 0.0, [100], 0, A_head=-1.5)
    # Ties, exact arithmetic: multiples of 1/8 with S = L·2^j (interpolation
    # weights are multiples of 1/8, sums exact) -> the strict '>' decides.
    for L in (4, 16, 33, 200):
        for sc in (0.0, 0.1, 0.2):
            d = rng.integers(0, 7, L) / 8.0
            add("ties exact L=%d sc=%g" % (L, sc), d, sc, [2 * L, 4 * L, 8 * L], 4,
                [-0.5, -1.0, -2.0, -4.0], exact=True)
            add("ties L=%d sc=%g" % (L, sc), d, sc, [L + 3, 3 * L, 5 * L + 1], 4,
                [-0.5, -1.0, -2.0, -4.0])
    # A crossing at cumsum == target exactly: Δ = [4,0,0,0], S = 8 -> thr 1.
    add("strict crossing", [4, 0, 0, 0], 0.0, [8, 16], 1, [-1.0], exact=True)
    # Underflow: Δ·A <= -1000 for every n (exp underflows double).
    add("underflow", np.full(10, 50.0), 0.0, [20], 4, [-20.0, -30.0, -40.0, -50.0])
    # A few exact zeros among the values.
    d = rand_delta(300)
    d[rng.integers(0, 300, 40)] = 0.0
    add("zeros mixed", d, 0.1, [301, 600, 4000], 16, rand_A(16))
    return cases


def write_stats(w, c):
    L, stride = c["L"], c["stride"]
    buf = np.full((L - 1) * stride + 1, np.nan, np.float32)  # gaps are NaN: strides must be honoured
    buf[::stride] = c["delta"]
    w.i64(L, stride, c["N"], len(c["buckets"]))
    w.f64(c["sc"], c["A_head"])
    w.arr(buf, "<f4")
    if c["N"]:
        w.arr(c["A_row"], "<f4")
    w.arr(c["buckets"], "<i8")


def check_stats(r, c):
    ld = r.f64()
    thr = r.take("<f4", len(c["buckets"]))
    name = "stats " + c["name"]
    rel = abs(ld - c["ld"]) / max(abs(c["ld"]), 1e-300) if ld != c["ld"] else 0.0
    T.check(ld == c["ld"] or (math.isfinite(ld) and rel <= 1e-9), name + " log_decay",
            "C %r ref %r (rel %.2e)" % (ld, c["ld"], rel))
    bad = [(S, float(t), float(want)) for S, t, want, alts in
           zip(c["buckets"], thr, c["thr"], c["alts"]) if np.float32(t) not in alts]
    T.check(not bad, name + " thresholds",
            "%d of %d differ, first (S, C, ref) %r" % (len(bad), len(thr), bad[:3]))


# ---------------------------------------------------------------- bucket

def bucket_cases(rng):
    cases = []
    lists = [PAPER_BUCKETS, [4096], [1000, 2000, 4000], [10, 11, 13, 100, 1000000]]
    for _ in range(3):
        lists.append(sorted(set(int(v) for v in rng.integers(1, 300000, int(rng.integers(2, 12))))))
    for b in lists:
        probes = {0, 1, b[0] - 1, b[-1], b[-1] + 1, 10 ** 9}
        for i in range(len(b)):
            probes.update({b[i], b[i] - 1, b[i] + 1})
            if i + 1 < len(b):
                lo, hi = b[i], b[i + 1]
                mid2 = lo + hi  # midpoint = mid2 / 2
                probes.update({mid2 // 2, (mid2 + 1) // 2, mid2 // 2 - 1, (mid2 + 1) // 2 + 1})
        probes.update(int(v) for v in rng.integers(0, b[-1] * 2 + 2, 20))
        for S in sorted(p for p in probes if p >= 0):
            cases.append(dict(name="n=%d S=%d" % (len(b), S), b=b, S=S,
                              want=ref.bucket_index(b, S)))
    return cases


def write_bucket(w, c):
    w.i64(len(c["b"]), c["S"])
    w.arr(c["b"], "<i8")


def check_bucket(r, c):
    got = r.i64()
    T.check(got == c["want"], "bucket " + c["name"], "C %d ref %d (buckets %s)"
            % (got, c["want"], c["b"] if len(c["b"]) < 8 else "paper"))


# ---------------------------------------------------------------- deci

def deci_cases(rng):
    cases = []

    def add(name, L, R, budget, min_len, scores, Ksel=None):
        K = ref.deci_keep_count(L, R, budget, min_len)
        Ksel = K if Ksel is None else Ksel
        scores = np.asarray(scores, np.float32)
        cases.append(dict(name=name, L=L, R=R, budget=float(budget), min_len=min_len,
                          scores=scores, Ksel=Ksel, K=K,
                          idx=ref.deci_select(scores, L, R, Ksel)))

    for L, R, budget, min_len in ((100, 1, 2000, 20), (5000, 1, 2000, 20), (5000, 1, 2000 * 0.5 ** 3, 20),
                                  (5000, 1, 2000 * 0.7 ** 3, 20), (5000, 7, 4000 * 0.5, 20),
                                  (300, 1, 10.5, 20), (300, 1, 10.5, 0), (30, 10, 5, 25),
                                  (1, 1, 2000, 20), (8, 8, 3, 2), (2001, 1, 2000, 20),
                                  (2000, 1, 2000, 20), (2002, 1, 2000, 20), (50, 0, 10, 3),
                                  (50, 2, -1.0, 5), (60, 1, 1e300, 20)):
        add("L=%d R=%d budget=%g min=%d" % (L, R, budget, min_len), L, R, budget, min_len,
            rng.random(L))
    # Ties in scores: few distinct values; earlier index wins.
    for L, R in ((40, 1), (200, 3), (1000, 1)):
        s = rng.integers(0, 4, L).astype(np.float32)
        for Ksel in (0, 1, (L - R) // 3, L - R - 1, L - R):
            add("ties L=%d R=%d K=%d" % (L, R, Ksel), L, R, 0, 0, s, Ksel)
    s = np.ones(64, np.float32)
    add("all-equal K=10", 64, 1, 10, 0, s)
    # Scores from real-looking Δ norms.
    d = np.exp(rng.normal(-4, 1, (500, 24)))
    add("delta norms", 500, 1, 120, 20, ref.deci_scores(d))
    return cases


def write_deci(w, c):
    w.i64(c["L"], c["R"], c["min_len"], c["Ksel"])
    w.f64(c["budget"])
    w.arr(c["scores"], "<f4")


def check_deci(r, c):
    K = r.i64()
    st = r.i64()
    msg = r.msg()
    idx = r.take("<i8", c["Ksel"] + c["R"])
    name = "deci " + c["name"]
    T.check(K == c["K"], name + " keep count", "C %d ref %d" % (K, c["K"]))
    ok = st == LM_OK and np.array_equal(idx, c["idx"])
    if st != LM_OK:
        detail = "status %d %s" % (st, msg)
    else:
        diff = np.flatnonzero(idx != c["idx"])
        detail = "first mismatch at %s: C %s ref %s" % (
            diff[:1], idx[diff[:3]], c["idx"][diff[:3]]) if diff.size else ""
    T.check(ok, name + " select", detail)


# ---------------------------------------------------------------- classify

def classify_cases(rng):
    cases = []

    def add(name, ld, theta, mask_cap=None, counts_cap=None, want_counts=1, status=LM_OK):
        ld = np.asarray(ld, np.float64)
        nl, nc = ld.shape
        n = nl * nc
        c = dict(name=name, ld=ld, theta=theta, nl=nl, nc=nc,
                 mask_cap=n if mask_cap is None else mask_cap,
                 counts_cap=nl if counts_cap is None else counts_cap,
                 want_counts=want_counts, status=status)
        if status == LM_OK:
            c["mask"] = ref.classify(ld.reshape(-1), theta)
            c["counts"] = c["mask"].reshape(nl, nc).sum(axis=1).astype(np.int64)
        cases.append(c)

    base = -np.exp(rng.normal(2.0, 2.5, (3, 40)))  # log decays ~ -0.05 .. -1000
    for theta in (1e-300, 1e-40, 1e-30, 1e-3, 5e-2, 0.5, 0.999999, 1.0, 2.0):
        add("theta=%g" % theta, base, theta)
    # θ equal to some channels' decay: log_decay == log(θ) exactly -> local,
    # one ulp above -> global, one below -> local.
    for theta in (1e-300, 1e-3, 5e-2, 0.999999):
        lt = math.log(theta)
        ld = base.copy()
        ld[0, :3] = lt
        ld[1, 5] = np.nextafter(lt, np.inf)
        ld[2, 7] = np.nextafter(lt, -np.inf)
        add("theta=%g equal" % theta, ld, theta)
    ld = base.copy()
    ld[1, :] = -np.inf  # zero decay (underflowed): always local
    ld[2, :] = 0.0      # no decay at all: global unless θ >= 1
    add("inf and zero", ld, 1e-3)
    add("one layer one channel", [[-1.0]], 0.5)
    add("counts NULL", base, 1e-3, want_counts=0, counts_cap=0)
    for theta in (0.0, -1.0, math.inf, math.nan, -math.inf):
        add("invalid theta=%g" % theta, base, theta, status=LM_ERR_INVALID_ARGUMENT)
    add("mask_cap short", base, 1e-3, mask_cap=base.size - 1, status=LM_ERR_BUFFER_TOO_SMALL)
    add("counts_cap short", base, 1e-3, counts_cap=base.shape[0] - 1,
        status=LM_ERR_BUFFER_TOO_SMALL)
    return cases


def write_classify(w, c):
    w.i64(c["nl"], c["nc"], c["mask_cap"], c["counts_cap"], c["want_counts"])
    w.f64(c["theta"])
    w.arr(c["ld"], "<f8")


def check_classify(r, c):
    st = r.i64()
    msg = r.msg()
    mask = r.take("u1", c["nl"] * c["nc"])
    counts = r.take("<i8", c["nl"])
    name = "classify " + c["name"]
    if c["status"] != LM_OK:
        T.check(st == c["status"], name + " status", "C %d want %d (%s)" % (st, c["status"], msg))
        return
    T.check(st == LM_OK, name + " status", "C %d %s" % (st, msg))
    diff = np.flatnonzero(mask != c["mask"])
    T.check(diff.size == 0, name + " mask", "%d differ, first at %s: C %s ref %s" % (
        diff.size, diff[:3], mask[diff[:3]], c["mask"][diff[:3]]))
    if c["want_counts"]:
        T.check(np.array_equal(counts, c["counts"]), name + " counts",
                "C %s ref %s" % (counts, c["counts"]))


# ---------------------------------------------------------------- scan

F_Z, F_D, F_BIAS, F_MASK, F_SIN, F_SOUT, F_ALIAS = 1, 2, 4, 8, 16, 32, 64


def pick_dt_thresholds(rng, d64):
    """Thresholds for dt mode: between two Δ values, at least 1e-4 relative
    away from every Δ of the channel, so that a float32 softplus (which
    differs from the float64 one by ~1e-7 relative) decides identically."""
    L, E = d64.shape
    thr = np.empty(E, np.float32)
    for e in range(E):
        s = np.unique(d64[:, e])
        mids = [math.sqrt(a * b) for a, b in zip(s[:-1], s[1:]) if b > a * (1 + 4e-4)]
        thr[e] = np.float32(mids[int(rng.integers(0, len(mids)))] if mids else s[0] * 0.5)
    return thr


def scan_cases(rng):
    cases = []

    def make(name, L, E, N, flags, is_dt, n_threads=1, delta=None, thr_mode="random",
             dt_range=None):
        u = rng.normal(0, 1, (L, E)).astype(np.float32)
        if is_dt:
            lo, hi = dt_range or (-6.0, 1.0)
            delta_in = rng.uniform(lo, hi, (L, E)).astype(np.float32)
        elif delta is not None:
            delta_in = np.asarray(delta, np.float32).reshape(L, E)
        else:
            delta_in = np.exp(rng.normal(-3.5, 1.2, (L, E))).astype(np.float32)
        A = (-np.exp(np.log(np.arange(1, N + 1))[None, :] + rng.normal(0, 0.3, (E, N)))).astype(np.float32)
        B = rng.normal(0, 1, (L, N)).astype(np.float32)
        C = rng.normal(0, 1, (L, N)).astype(np.float32)
        c = dict(name=name, L=L, E=E, N=N, flags=flags, is_dt=int(is_dt), nt=n_threads,
                 u=u, delta=delta_in, A=A, B=B, C=C)
        c["D"] = rng.normal(1, 0.5, E).astype(np.float32) if flags & F_D else None
        c["z"] = rng.normal(0, 1.5, (L, E)).astype(np.float32) if flags & F_Z else None
        c["bias"] = rng.normal(-1, 1, E).astype(np.float32) if flags & F_BIAS else None
        c["s_in"] = rng.normal(0, 1, (E, N)).astype(np.float32) if flags & F_SIN else None
        c["mask"] = c["thr"] = None
        if flags & F_MASK:
            c["mask"] = (rng.random(E) < 0.6).astype(np.uint8)
            d64 = ref.scan_delta(delta_in, bool(is_dt), c["bias"])
            if is_dt:
                c["thr"] = pick_dt_thresholds(rng, d64)
            elif thr_mode == "equal":
                # thresholds equal to one of the channel's own Δ (strict '>')
                t0 = rng.integers(0, L, E)
                c["thr"] = delta_in[t0, np.arange(E)].astype(np.float32)
            elif thr_mode == "zero":
                c["thr"] = np.zeros(E, np.float32)
            else:
                q = rng.uniform(0.2, 0.95, E)
                c["thr"] = np.array([np.quantile(d64[:, e], q[e]) for e in range(E)], np.float32)
        y, h, ym, hm, kept = ref.scan_filtered(
            u, delta_in, A, B, C, D=c["D"], z=c["z"], dt_bias=c["bias"], delta_is_dt=bool(is_dt),
            global_mask=c["mask"], thresholds=c["thr"], state_in=c["s_in"])
        c.update(y=y, h=h, ym=ym, hm=hm, kept_frac=float(kept.mean()))
        cases.append(c)

    all_flags = F_Z | F_D | F_BIAS | F_MASK | F_SIN | F_SOUT
    for L in (1, 5, 64, 300, 2000):
        for E in (1, 3, 16):
            for N in (1, 16):
                if L == 2000 and E * N > 48:
                    continue
                for is_dt in (0, 1):
                    flags = int(rng.integers(0, 64)) | F_SOUT
                    if not is_dt:
                        flags &= ~F_BIAS
                    nt = int(rng.choice([1, 0, 3]))
                    make("random L=%d E=%d N=%d dt=%d flags=%d nt=%d" % (L, E, N, is_dt, flags, nt),
                         L, E, N, flags, is_dt, nt)
    make("all options dt", 200, 16, 16, all_flags, 1, 0)
    make("all options delta", 200, 16, 16, all_flags & ~F_BIAS, 0, 3)
    make("no filter, no options", 100, 8, 16, F_SOUT, 0, 1)
    make("thr equal to a delta", 150, 16, 16, F_MASK | F_D | F_Z | F_SOUT, 0, 1, thr_mode="equal")
    dz = np.exp(rng.normal(-3, 1, (100, 8))).astype(np.float32)
    dz[rng.random((100, 8)) < 0.3] = 0.0
    make("thr zero with zero deltas", 100, 8, 16, F_MASK | F_SOUT, 0, 1, delta=dz, thr_mode="zero")
    make("all-equal delta", 80, 6, 16, F_MASK | F_D | F_SOUT, 0, 1,
         delta=np.full((80, 6), 0.03125), thr_mode="equal")
    make("softplus > 20 branch", 50, 4, 16, F_BIAS | F_D | F_SOUT, 1, 1, dt_range=(15.0, 30.0))
    make("alias state", 120, 16, 16, F_ALIAS | F_SIN | F_MASK | F_D | F_Z, 0, 0)
    make("alias zero state", 60, 8, 4, F_ALIAS | F_MASK, 1, 1)
    make("state_in no state_out", 60, 8, 4, F_SIN | F_D, 0, 1)
    make("long filtered", 4000, 4, 16, all_flags, 1, 0)
    return cases


def write_scan(w, c):
    f = c["flags"]
    w.i64(c["L"], c["E"], c["N"], c["is_dt"], f, c["nt"])
    for k in ("u", "delta", "A", "B", "C"):
        w.arr(c[k], "<f4")
    if f & F_D:
        w.arr(c["D"], "<f4")
    if f & F_Z:
        w.arr(c["z"], "<f4")
    if f & F_BIAS:
        w.arr(c["bias"], "<f4")
    if f & F_MASK:
        w.arr(c["mask"], "u1")
        w.arr(c["thr"], "<f4")
    if f & F_SIN:
        w.arr(c["s_in"], "<f4")


def check_scan(r, c):
    st = r.i64()
    msg = r.msg()
    y = r.take("<f4", c["L"] * c["E"]).reshape(c["L"], c["E"]).astype(np.float64)
    h = r.take("<f4", c["E"] * c["N"]).reshape(c["E"], c["N"]).astype(np.float64)
    name = "scan " + c["name"]
    if not T.check(st == LM_OK, name + " status", "C %d %s" % (st, msg)):
        return
    err = np.abs(y - c["y"])
    ok = np.isfinite(y).all() and bool((err <= 1e-5 * c["ym"] + 1e-30).all())
    worst = float(np.nanmax(err / (c["ym"] + 1e-30))) if np.isfinite(y).all() else math.inf
    T.check(ok, name + " y", "worst err/mag %.3e (kept %.2f)" % (worst, c["kept_frac"]))
    if c["flags"] & (F_SOUT | F_ALIAS):
        err = np.abs(h - c["h"])
        ok = np.isfinite(h).all() and bool((err <= 1e-5 * c["hm"] + 1e-30).all())
        worst = float(np.nanmax(err / (c["hm"] + 1e-30))) if np.isfinite(h).all() else math.inf
        T.check(ok, name + " state_out", "worst err/mag %.3e" % worst)


# ---------------------------------------------------------------- library

def check_library(path):
    """The public entry points used here are exported; internal ones are not."""
    try:
        lib = ctypes.CDLL(os.path.abspath(path))
    except OSError as e:
        T.check(False, "library load", str(e))
        return
    for sym in ("lm_scan_filtered", "lm_scan_args_init", "lm_classify_channels"):
        T.check(hasattr(lib, sym), "library exports " + sym)
    for sym in ("lmi_channel_stats", "lmi_bucket_index", "lmi_deci_select"):
        T.check(not hasattr(lib, sym), "library hides " + sym)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("driver")
    ap.add_argument("library", nargs="?")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", choices=["hand", "stats", "bucket", "deci", "classify", "scan"])
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    print("seed: %d (rerun with --seed %d)" % (seed, seed))
    rng = np.random.default_rng(seed)

    if args.only in (None, "hand"):
        hand_checks()
        print("reference hand checks: %d passed, %d failed" % (T.passed, T.failed))
    suites = [("stats", stats_cases, write_stats, check_stats),
              ("bucket", bucket_cases, write_bucket, check_bucket),
              ("deci", deci_cases, write_deci, check_deci),
              ("classify", classify_cases, write_classify, check_classify),
              ("scan", scan_cases, write_scan, check_scan)]
    for mode, make, write, check in suites:
        if args.only not in (None, mode):
            continue
        before = (T.passed, T.failed)
        cases = make(rng)
        run_driver(args.driver, mode, cases, write, check)
        print("%s: %d cases, %d checks passed, %d failed" % (
            mode, len(cases), T.passed - before[0], T.failed - before[1]))
    if args.library and args.only is None:
        check_library(args.library)
    print("%d passed, %d failed" % (T.passed, T.failed))
    return 1 if T.failed else 0


if __name__ == "__main__":
    sys.exit(main())
