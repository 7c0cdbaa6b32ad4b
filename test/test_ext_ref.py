#!/usr/bin/env python3
"""Compare the library's MambaExtend and Mamba Modulation modes (alone and
with LongMamba) on the CPU with the independent float64 NumPy reference
(test/reference/ext_ref.py), on the transformers fixtures.

    test_ext_ref.py DRIVER FIXTURES [--seed N]

DRIVER is the built test/extref_driver; FIXTURES test/data/fixtures.
Per fixture the reference is first checked against the fixture's own
float64 logits (transformers), then each case runs through the public API
(a prefill returning every position's logits, then decode steps) and is
compared with the reference:

  prefill    max|C - ref| <= 1e-5 * max|ref| (fp32 against float64)
  decode     the same, the reference decoding plainly from its prefilled
             state (METHODS.md §8); the library must also be far (> 100x
             the tolerance) from a reference that keeps the scales at decode
  changed    the mode's prefill logits differ from vanilla by > 100x the
             tolerance
  LongMamba  the reference takes the calibration's log-decays and
             thresholds from the library (the calibration has its own
             reference test) and checks the log-decays themselves against
             its own Δ (with A' for a modulated calibration) to 1e-6
             relative; no filter decision may be within 1e-6 (relative, ~8
             fp32 ulps) of its threshold (a closer one could be decided by
             rounding), and the filter
             must both keep and drop tokens
  errors     bad scales and a calibration of the wrong kind give the
             documented statuses
  SPSA       lm_scales_calibrate (a few iterations, both modes): s0 equals
             the reference's draws exactly, the final scales within 1e-7
             (the reference runs the same iterations in float64: the step
             a_k g moves with the fp32 error of f(s+) - f(s-), ~1e-6 / c_k,
             times a_k = 1e-3), both losses within 1e-5 of the reference's
             cross-entropy, two runs bit-identical
Exits non-zero on any failure; the last line is "N passed, M failed".
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np  # required: a missing numpy is a test failure, not a skip

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
import ext_ref as ref  # noqa: E402
import longmamba_ref as lref  # noqa: E402

LM_OK, LM_ERR_INVALID_ARGUMENT, LM_ERR_OUT_OF_RANGE, LM_ERR_MISMATCH = 0, 1, 9, 12
VANILLA, EXTEND, MODULATION = 0, 3, 4
TOL = 1e-5
FIXTURES = ["m1-tiny-f32", "m1-odd-f32", "m1-bf16", "fm-odd-f32", "m2-tiny-f32", "m2-odd-f32",
            "m2-groups-f32", "m2-bf16"]


class Tally:
    def __init__(self):
        self.passed = self.failed = 0
        self.worst = {}

    def check(self, ok, name, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL %s%s" % (name, (": " + detail) if detail else ""))
        return ok

    def err(self, kind, e):
        """Largest e of a kind; a kind starting with '-' keeps the smallest."""
        if kind.startswith("-"):
            self.worst[kind] = min(self.worst.get(kind, np.inf), e)
        else:
            self.worst[kind] = max(self.worst.get(kind, 0.0), e)


T = Tally()


def rel_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def write_case(parts, c, nl):
    i64 = lambda *v: parts.append(np.array(v, dtype="<i8").tobytes())  # noqa: E731
    f64 = lambda *v: parts.append(np.array(v, dtype="<f8").tobytes())  # noqa: E731
    i64(c["mode"], c.get("chunk", 0), len(c["scales"]))
    f64(*c["scales"])
    lm = c.get("lm")
    i64(1 if lm else 0)
    if lm:
        f64(lm.get("theta", 0.0), lm.get("b", 1.0))
        i64(lm.get("trigger", 1), len(lm["buckets"]), *lm["buckets"])
        i64(len(lm["windows"]), len(lm["windows"][0]))
        parts.append(np.asarray(lm["windows"], dtype="<i4").tobytes())
        i64(1 if lm.get("modulated") else 0)
    i64(len(c["ids"]))
    parts.append(np.asarray(c["ids"], dtype="<i4").tobytes())
    i64(len(c["dec"]))
    parts.append(np.asarray(c["dec"], dtype="<i4").tobytes())


def run_driver(driver, fixdir, cases, m):
    parts = [np.array([len(cases)], dtype="<i8").tobytes()]
    for c in cases:
        write_case(parts, c, m.nl)
    with tempfile.TemporaryDirectory() as tmp:
        pin, pout = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.bin")
        open(pin, "wb").write(b"".join(parts))
        proc = subprocess.run([driver, fixdir, pin, pout], capture_output=True, timeout=600)
        out = open(pout, "rb").read() if os.path.exists(pout) else b""
    if proc.returncode != 0:
        T.check(False, "driver on %s" % fixdir, proc.stderr.decode("utf-8", "replace")[-300:])
        return None
    res, o = [], 0

    def take(dtype, n):
        nonlocal o
        dt = np.dtype(dtype)
        a = np.frombuffer(out, dtype=dt, count=n, offset=o)
        o += dt.itemsize * n
        return a.copy()

    for c in cases:
        st = int(take("<i8", 1)[0])
        msg = take("u1", int(take("<i8", 1)[0])).tobytes().decode("utf-8", "replace")
        r = {"status": st, "msg": msg}
        if st == LM_OK:
            L, nd = len(c["ids"]), len(c["dec"])
            r["logits"] = take("<f4", (L + nd) * m.V).reshape(L + nd, m.V)
            if c.get("lm"):
                nb = len(c["lm"]["buckets"])
                r["theta"] = float(take("<f8", 1)[0])
                r["log_decay"] = take("<f8", m.nl * m.C).reshape(m.nl, m.C)
                r["thr"] = take("<f4", m.nl * nb * m.C).reshape(m.nl, nb, m.C)
        res.append(r)
    return res


def check_lm(name, m, c, r):
    """The LongMamba hooks the reference runs with, after checking the
    calibration's log-decays against its own Δ."""
    lm = c["lm"]
    a_scale = c["scales"] if lm.get("modulated") else None
    lds = []
    for w in lm["windows"]:
        _, _, deltas = m.run(w, a_log_scale=a_scale, want_delta=True)
        lds.append(ref.log_decay(m, deltas, a_scale))
    ld = np.max(lds, axis=0)   # the calibration's default aggregation (max)
    e = float((np.abs(r["log_decay"] - ld) / np.maximum(np.abs(ld), 1.0)).max())
    T.err("log-decay (relative)", e)
    T.check(e <= 1e-6, "%s: calibration log-decays%s vs reference" %
            (name, " under A'" if a_scale else ""), "err %.2e" % e)
    glob = lref.classify(r["log_decay"], r["theta"])
    k = lref.bucket_index(lm["buckets"], len(c["ids"]))
    tau = (np.float32(lm.get("b", 1.0)) * r["thr"][:, k, :]).astype(np.float32).astype(np.float64)
    return glob, tau


def run_fixture(driver, fixdir, rng):
    fx = os.path.basename(fixdir)
    m = ref.load_model(fixdir)
    fref = ref.read_safetensors(os.path.join(fixdir, "reference.safetensors"))
    ids0 = [int(v) for v in fref["input_ids"][0]]
    dec = [int(v) for v in fref["input_ids"][-1][:4]]
    van, _, _ = m.run(ids0)
    e = rel_err(van, fref["logits_f64"][0])
    T.check(e <= 1e-12, "%s: reference = transformers float64 logits" % fx, "err %.2e" % e)

    nl = m.nl
    # Δ of these random models is small (dt_bias from transformers' init):
    # scales far from 1 make the change clear of the fp32 noise
    s_ext = list(rng.uniform(3.0, 8.0, nl))
    s_mod = list(rng.uniform(0.2, 0.5, nl))
    W = 16
    wins = [[int(v) for v in rng.integers(0, m.V, W)] for _ in range(2)]
    # b = 1 + 2^-10 keeps τ off the windows' own Δ values, which a prompt
    # may repeat exactly (Mamba-2's layer 0 Δ depends on the token alone)
    lm = {"buckets": [2 * W, 4 * W], "windows": wins, "trigger": 1, "b": 1.0 + 2.0 ** -10}
    cases = [
        {"name": "vanilla", "mode": VANILLA, "scales": []},
        {"name": "MambaExtend", "mode": EXTEND, "scales": s_ext},
        {"name": "MambaExtend chunk 5", "mode": EXTEND, "scales": s_ext, "chunk": 5},
        {"name": "Modulation", "mode": MODULATION, "scales": s_mod},
        {"name": "Modulation chunk 7", "mode": MODULATION, "scales": s_mod, "chunk": 7},
        {"name": "MambaExtend + LongMamba", "mode": EXTEND, "scales": s_ext, "lm": dict(lm)},
        {"name": "Modulation + LongMamba", "mode": MODULATION, "scales": s_mod,
         "lm": dict(lm, modulated=True), "chunk": 5},
        # errors
        {"name": "Modulation + vanilla calibration", "mode": MODULATION, "scales": s_mod,
         "lm": dict(lm), "expect": LM_ERR_MISMATCH},
        {"name": "MambaExtend + modulated calibration", "mode": EXTEND, "scales": s_mod,
         "lm": dict(lm, modulated=True), "expect": LM_ERR_MISMATCH},
        {"name": "MambaExtend one scale short", "mode": EXTEND, "scales": s_ext[:-1],
         "expect": LM_ERR_INVALID_ARGUMENT},
        {"name": "Modulation zero scale", "mode": MODULATION, "scales": [0.0] + s_mod[1:],
         "expect": LM_ERR_OUT_OF_RANGE},
        {"name": "MambaExtend NaN scale", "mode": EXTEND, "scales": s_ext[:-1] + [float("nan")],
         "expect": LM_ERR_OUT_OF_RANGE},
    ]
    for c in cases:
        c["ids"], c["dec"] = ids0, dec
    res = run_driver(driver, fixdir, cases, m)
    if res is None:
        return
    for c, r in zip(cases, res):
        name = "%s: %s" % (fx, c["name"])
        want = c.get("expect", LM_OK)
        if not T.check(r["status"] == want, name + " status",
                       "got %d (%s), want %d" % (r["status"], r["msg"], want)):
            continue
        if want != LM_OK:
            T.check(len(r["msg"]) > 0, name + " has a message")
            continue
        hooks = {}
        if c["mode"] == EXTEND:
            hooks["delta_scale"] = c["scales"]
        elif c["mode"] == MODULATION:
            hooks["a_log_scale"] = c["scales"]
        if c.get("lm"):
            glob, tau = check_lm(name, m, c, r)
            hooks["global_mask"], hooks["tau"] = glob, tau
            # every decision away from its threshold, some kept and some dropped
            # Δ of layer l depends on the filtered layers before it: take it
            # from the hooked run itself
            _, _, d = m.run(c["ids"], **hooks, want_delta=True)
            margin, kept, dropped = np.inf, 0, 0
            for l in range(nl):
                g = glob[l].astype(bool)
                if not g.any():
                    continue
                dl, tl = d[l][:, g], tau[l][g][None, :]
                margin = min(margin, float((np.abs(dl - tl) / np.maximum(tl, 1e-30)).min()))
                kept += int((dl > tl).sum())
                dropped += int((dl <= tl).sum())
            T.err("-filter decision margin (relative)", margin)
            T.check(margin > 1e-6, name + ": no filter decision within 1e-6 of its threshold",
                    "margin %.2e" % margin)
            T.check(kept > 0 and dropped > 0, name + ": the filter keeps and drops tokens",
                    "kept %d dropped %d" % (kept, dropped))
        L = len(c["ids"])
        want_pre, st, _ = m.run(c["ids"], **hooks)
        want_dec, _, _ = m.run(c["dec"], state=st)
        ep = rel_err(r["logits"][:L], want_pre)
        ed = rel_err(r["logits"][L:], want_dec)
        T.err("prefill logits", ep)
        T.err("decode logits", ed)
        T.check(ep <= TOL, name + ": prefill logits vs reference", "err %.2e" % ep)
        T.check(ed <= TOL, name + ": plain decode after the prefill vs reference",
                "err %.2e" % ed)
        if c["mode"] != VANILLA:
            ev = rel_err(want_pre, van)
            T.err("-prefill change from vanilla", ev)
            T.check(ev > 100 * TOL, name + ": prefill differs from vanilla", "by %.2e" % ev)
            scaled = {k: v for k, v in hooks.items() if k in ("delta_scale", "a_log_scale")}
            alt, _, _ = m.run(c["dec"], state=st, **scaled)
            ea = rel_err(r["logits"][L:], alt)
            T.err("-decode distance from a scaled decode", ea)
            T.check(ea > 100 * TOL, name + ": decode does not keep the scales",
                    "%.2e from a scaled decode" % ea)


def run_spsa(driver, fixdir, rng):
    fx = os.path.basename(fixdir)
    m = ref.load_model(fixdir)
    W, nw, K = 24, 2, 4
    wins = [[int(v) for v in rng.integers(0, m.V, W)] for _ in range(nw)]
    for mode, code in (("mambaextend", EXTEND), ("modulation", MODULATION)):
        seed = int(rng.integers(0, 2 ** 62))
        parts = [np.array([code, K, seed, nw, W], dtype="<i8").tobytes(),
                 np.asarray(wins, dtype="<i4").tobytes()]
        with tempfile.TemporaryDirectory() as tmp:
            pin, pout = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.bin")
            open(pin, "wb").write(b"".join(parts))
            proc = subprocess.run([driver, "--spsa", fixdir, pin, pout], capture_output=True,
                                  timeout=600)
            out = open(pout, "rb").read() if os.path.exists(pout) else b""
        name = "%s: SPSA %s" % (fx, mode)
        if not T.check(proc.returncode == 0 and len(out) >= 8, name + " driver",
                       proc.stderr.decode("utf-8", "replace")[-300:]):
            continue
        st = int(np.frombuffer(out, "<i8", 1, 0)[0])
        n = int(np.frombuffer(out, "<i8", 1, 8)[0])
        o = 16 + n
        if not T.check(st == LM_OK, name + " status", out[16:o].decode("utf-8", "replace")):
            continue
        nl = m.nl
        s0 = np.frombuffer(out, "<f8", nl, o)
        s1 = np.frombuffer(out, "<f8", nl, o + 8 * nl)
        l0, l1 = np.frombuffer(out, "<f8", 2, o + 16 * nl)
        iters, same = np.frombuffer(out, "<i8", 2, o + 16 * nl + 16)
        r0, r1, f0, f1 = ref.spsa(m, mode, wins, K, seed)
        T.check(iters == K and same == 1, name + ": two runs with one seed are bit-identical",
                "iterations %d, same %d" % (iters, same))
        T.check(np.array_equal(s0, r0), name + ": s0 = the documented draws",
                "%s vs %s" % (s0, r0))
        es = float(np.abs(s1 - r1).max())
        T.err("SPSA final scales (absolute)", es)
        T.check(es <= 1e-7, name + ": final scales vs reference", "err %.2e" % es)
        T.check(float(np.abs(s1 - s0).max()) > 10 * max(es, 1e-9), name + ": the scales moved",
                "by %.2e" % float(np.abs(s1 - s0).max()))
        el = max(abs(l0 - f0), abs(l1 - f1))
        T.err("SPSA losses (absolute, nats)", el)
        T.check(el <= 1e-5, name + ": losses vs reference cross-entropy",
                "err %.2e (%.6f %.6f vs %.6f %.6f)" % (el, l0, l1, f0, f1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("driver")
    ap.add_argument("fixtures")
    ap.add_argument("--seed", type=int, default=20261217)
    a = ap.parse_args()
    print("seed %d" % a.seed)
    rng = np.random.default_rng(a.seed)
    for fx in FIXTURES:
        run_fixture(a.driver, os.path.join(a.fixtures, fx), rng)
    for fx in ("m1-odd-f32", "m2-odd-f32"):
        run_spsa(a.driver, os.path.join(a.fixtures, fx), rng)
    for k, v in sorted(T.worst.items()):
        print("%s %s: %.2e" % ("min" if k.startswith("-") else "max", k.lstrip("-"), v))
    print("%d passed, %d failed" % (T.passed, T.failed))
    return 1 if T.failed else 0


if __name__ == "__main__":
    sys.exit(main())
