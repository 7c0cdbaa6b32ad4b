#!/usr/bin/env python3
"""Markdown table of bench/cpu/llama_side_by_side.sh's results directory:
medians over the rounds of tokens/s, ours / llama.cpp, peak RSS, and the
issue #18 targets met or missed.

  side_by_side_table.py RESULTS_DIR
"""
import csv
import glob
import os
import statistics
import sys

FMTS = [("f32", "f32", "F32 GGUF"), ("f16", "f16", "F16 GGUF"), ("q8_0", "q8_0", "Q8_0 GGUF"),
        ("q8_0-from-f16", "q8_0", "Q8_0 at load (ours: F16 GGUF + LM_WEIGHTS_Q8_0; llama.cpp: Q8_0 GGUF)")]
TESTS = ["pp512", "pp2048", "tg128"]


def main():
    d = sys.argv[1]
    llama = {}  # (fmt, test, threads) -> [t/s per round]
    for path in sorted(glob.glob(os.path.join(d, "llama-*.csv"))):
        with open(path) as f:
            for row in csv.DictReader(f):
                n_p, n_g = int(row["n_prompt"]), int(row["n_gen"])
                test = f"tg{n_g}" if n_g else f"pp{n_p}"
                llama.setdefault((row["label"], test, int(row["n_threads"])), []).append(float(row["avg_ts"]))
    ours = {}
    p = os.path.join(d, "ours.csv")
    if os.path.exists(p):
        with open(p) as f:
            for label, _rnd, test, th, _sec, ts in csv.reader(f):
                ours.setdefault((label, test, int(th)), []).append(float(ts))
    rss = {}
    p = os.path.join(d, "rss.csv")
    if os.path.exists(p):
        with open(p) as f:
            for who, fmt, kb in csv.reader(f):
                rss[(who, fmt)] = int(kb) if kb.strip() else None

    with open(os.path.join(d, "meta.txt")) as f:
        meta = f.read().strip()
    loads = []
    p = os.path.join(d, "load.txt")
    if os.path.exists(p):
        with open(p) as f:
            loads = [float(line.split()[1]) for line in f if line.strip()]

    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    fmt = lambda x: "-" if x is None else f"{x:,.1f}"  # noqa: E731
    print("```")
    print(meta)
    if loads:
        print(f"load average (1 min) during the run, sampled every 5 s: min {min(loads):.2f}, "
              f"median {statistics.median(loads):.2f}, max {max(loads):.2f}")
    print("```")
    print()
    print("Tokens/s, median of the rounds (n = rounds found), ours / llama.cpp; 1 thread: ours with "
          "OPENBLAS_NUM_THREADS=1, llama-bench -t 1.")
    print()
    print("| weights | test | threads | llama.cpp t/s | ours t/s | ours / llama.cpp | n |")
    print("|---|---|--:|--:|--:|--:|--:|")
    ratios = {}
    for key, peer, name in FMTS:
        for test in TESTS:
            for th in (1, 2):
                a, b = llama.get((peer, test, th), []), ours.get((key, test, th), [])
                ma, mb = med(a), med(b)
                r = mb / ma if ma and mb else None
                ratios[(key, test, th)] = r
                print(f"| {name} | {test} | {th} | {fmt(ma)} | {fmt(mb)} | "
                      f"{'-' if r is None else f'{r:.2f}x'} | {min(len(a), len(b))} |")
    print()
    print("Peak RSS (MiB, /usr/bin/time -v maximum resident set size) of one 2048-token prefill "
          "at 2 threads (warm-up run included, as each tool does it):")
    print()
    print("| weights | llama.cpp | ours | ours / llama.cpp |")
    print("|---|--:|--:|--:|")
    rss_ratio = {}
    for key, peer, name in FMTS:
        a, b = rss.get(("llama", peer)), rss.get(("ours", key))
        r = b / a if a and b else None
        rss_ratio[key] = r
        print(f"| {name} | {fmt(a / 1024 if a else None)} | {fmt(b / 1024 if b else None)} | "
              f"{'-' if r is None else f'{r:.2f}x'} |")
    print()

    def verdict(keys, test_pred, goal):
        rs = [(k, t, th, ratios.get((k, t, th))) for k in keys for t in TESTS if test_pred(t) for th in (1, 2)]
        got = [r for *_, r in rs if r is not None]
        if not got:
            return "no data"
        ok = all(r >= goal for r in got) and len(got) == len(rs)
        return (f"{'MET' if ok else 'MISSED'} (min {min(got):.2f}x, max {max(got):.2f}x over "
                f"{len(got)} cells{'' if len(got) == len(rs) else f', {len(rs) - len(got)} missing'})")

    print("Issue #18 targets:")
    print()
    print(f"- decode at 16-bit >= 1.1x llama.cpp F16: {verdict(['f16'], lambda t: t.startswith('tg'), 1.1)}")
    print(f"- decode at 8-bit >= 1.3x llama.cpp Q8_0 (Q8_0 GGUF): "
          f"{verdict(['q8_0'], lambda t: t.startswith('tg'), 1.3)}")
    print(f"- decode at 8-bit >= 1.3x llama.cpp Q8_0 (F16 GGUF + LM_WEIGHTS_Q8_0): "
          f"{verdict(['q8_0-from-f16'], lambda t: t.startswith('tg'), 1.3)}")
    for key, _peer, name in FMTS:
        print(f"- prefill >= 2.5x llama.cpp, {name}: {verdict([key], lambda t: t.startswith('pp'), 2.5)}")
    for key, _peer, name in FMTS[1:]:
        r = rss_ratio.get(key)
        print(f"- peak RSS <= llama.cpp's, {name}: "
              f"{'no data' if r is None else ('MET' if r <= 1.0 else 'MISSED') + f' ({r:.2f}x)'}")


if __name__ == "__main__":
    main()
