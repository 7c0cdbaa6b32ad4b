#!/usr/bin/env python3
"""Joins the rows of bench_e2e (--rows), bench_mamba_ssm.py and
bench_hf.py (--rows) into one table: per shape and measurement, ours beside
mamba_ssm and transformers on the same checkpoint, and the ratios where both
are numbers (ours / peer for throughput, peer / ours for times: > 1 means
ours is faster).

  bench_table.py ROWS_FILE... [--notes]

Rows are tab-separated: side (ours|mamba_ssm|hf, or any other name, e.g.
"before" for rows of an earlier build: each side is a column), shape, key, label, value (empty
when there is no number), unit, note.  A cell without a number shows its
note (n/a, skipped, out of memory).  --notes prints every note after the
table (how each number was measured).
"""
import sys

ORDER = ["logits", "prefill", "longmamba", "decode_b1", "decode_b1_step", "decode_b"]


def key_rank(key):
    for i, p in enumerate(ORDER):
        if key == p or key.startswith(p + "_") or (p == "decode_b" and key.startswith(p)):
            return i
    return len(ORDER)


def length_of(key):
    # prefill_2k, prefill_64k_default -> (2048, default?)
    parts = key.split("_")
    if parts[0] in ("prefill", "longmamba") and len(parts) > 1:
        n = parts[1]
        v = int(n[:-1]) * 1024 if n.endswith("k") and n[:-1].isdigit() else (int(n) if n.isdigit() else 0)
        return (v, len(parts) > 2)
    if key.startswith("decode_b"):
        b = key[len("decode_b"):].split("_")[0]
        return (int(b) if b.isdigit() else 0, key.endswith("_step"))
    return (0, False)


def cell(r, width):
    if r is None:
        return "-"
    val, unit, note = r["value"], r["unit"], r["note"]
    if val == "":
        return note[:width]
    v = float(val)
    if unit == "tok/s":
        return f"{v:,.0f} tok/s"
    if unit == "%":
        return f"{v:+.1f} %"
    if unit == "ms":
        return f"{v:.3f} ms"
    return f"{v:.4g}"


def ratio(o, p):
    """ours vs a peer: > 1 means ours is faster (tok/s: ours / peer; ms: peer / ours)."""
    if not (o and p and o["value"] and p["value"] and float(o["value"]) and float(p["value"])):
        return ""
    if o["unit"] == "tok/s":
        return f"{float(o['value']) / float(p['value']):.2f}x"
    if o["unit"] == "ms":
        return f"{float(p['value']) / float(o['value']):.2f}x"
    return ""


def main(argv):
    notes = "--notes" in argv
    files = [a for a in argv if a != "--notes"]
    rows = {}   # (shape, key) -> {side: row}
    order = []  # shapes in first-seen order
    labels = {}
    for path in files:
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            f = line.split("\t")
            if len(f) < 7:
                continue
            side, shape, key, label, value, unit, note = f[:7]
            if shape not in order:
                order.append(shape)
            rows.setdefault((shape, key), {})[side] = dict(value=value, unit=unit, note=note)
            if side == "ours" or (shape, key) not in labels:
                labels[(shape, key)] = label
    if not rows:
        print("(no benchmark rows)")
        return 0
    # The peers pick the next token on the device, as our "sampled" rows
    # do: they stand beside those rows too.
    for (shape, key), r in list(rows.items()):
        if "_sampled" not in key:
            continue
        plain = rows.get((shape, key.replace("_sampled", "")), {})
        for peer in ("mamba_ssm", "hf"):
            if peer in plain and peer not in r:
                r[peer] = plain[peer]
    W = 26
    # every side but ours is a column: the peers first, then any other
    # (e.g. "before": the same benchmark built from an earlier commit)
    sides = []
    for r in rows.values():
        sides += [k for k in r if k != "ours" and k not in sides]
    peers = [p for p in ("mamba_ssm", "hf") if p in sides] + [p for p in sides if p not in ("mamba_ssm", "hf")]
    names = {"mamba_ssm": "mamba_ssm", "hf": "transformers"}
    names.update({p: p for p in peers if p not in names})
    print(f"{'shape':<12} {'measurement':<46} {'ours':>{W}}"
          + "".join(f" {names[p]:>{W}}" for p in peers)
          + "".join(f"  {'vs ' + names[p]:>16}" for p in peers))
    for shape in order:
        keys = sorted((k for (s, k) in rows if s == shape), key=lambda k: (key_rank(k), length_of(k)))
        for k in keys:
            r = rows[(shape, k)]
            o = r.get("ours")
            line = f"{shape:<12} {labels[(shape, k)][:46]:<46} {cell(o, W):>{W}}"
            line += "".join(f" {cell(r.get(p), W):>{W}}" for p in peers)
            line += "".join(f"  {ratio(o, r.get(p)):>16}" for p in peers)
            print(line.rstrip())
    if notes:
        print("\nnotes:")
        for shape in order:
            for (s, k), r in rows.items():
                if s != shape:
                    continue
                for side in ["ours"] + peers:
                    if side in r and r[side]["note"]:
                        print(f"  {shape} {k} [{side}]: {r[side]['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
