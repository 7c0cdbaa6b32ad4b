#!/usr/bin/env python3
"""Random bf16 checkpoints for bench_e2e, and transformers timed on them.

  bench_hf.py --write DIR [--bench] [--shapes a,b,...] [--quick] [--budget S] [--rows FILE]
  bench_hf.py --bench --dir DIR [...]          (time checkpoints written earlier)

--write: for each shape, builds MambaForCausalLM / Mamba2ForCausalLM from a
config of that shape (seeded random init, transformers' own initialisation),
casts it to bf16 and save_pretrained()s it (safetensors) to DIR/<shape>.
It also writes DIR/<shape>.ref, the reference for bench_e2e's logits row:
    "LMRF", int32 T, int32 V, int32 tokens[T],
    float32 logits[T][V]   transformers in float32 on the saved bf16 weights,
    float32 logits[T][V]   transformers in bf16 (the model as saved),
all little-endian, T = 32 random tokens.

--bench: times transformers on the same checkpoint, on the GPU:
  prefill at 2k, 16k, 64k tokens: one forward call, use_cache=False, logits
    of the last position only (logits_to_keep=1); 2k first, then each
    longer length only when the time extrapolated linearly from the last
    measured one stays under --budget seconds (else "skipped (est. N s)");
    CUDA out of memory is reported as such;
  decode at batch 1 and 16: generate() after a 128-token prompt, greedy,
    min_new_tokens = max_new_tokens = 256, wall time of the whole call
    (prompt included) -> tokens/s = batch * new / wall; per step = median
    time between consecutive logits-processor calls (one decode forward
    each, the sampler's bookkeeping included).  When 256 new tokens would
    take longer than --budget, fewer are generated and the row says so.
One warm-up before each measurement; torch.cuda.synchronize() around each
timing.  Without mamba_ssm / causal_conv1d transformers runs its torch
path: for Mamba-1 a Python loop over the tokens of every layer, for
Mamba-2 the chunked SSD in torch (memory ~ L * heads * chunk_size).

--rows FILE appends tab-separated rows (side, shape, key, label, value,
unit, note) that bench/gpu/bench_table.py joins with bench_e2e's.
"""
import argparse
import gc
import json
import math
import os
import struct
import sys
import time

import torch
import transformers
from transformers import LogitsProcessor, LogitsProcessorList

VOCAB = 50280
SEED = 20261124

# initializer_range 0.02 and out_proj scaled by 1/sqrt(n_layer) after init:
# with transformers' default 0.1 the random 24-layer models are chaotic, so
# bf16 rounding alone moves the logits by as much as their own size (measured
# on the H100: max |bf16 - f32| 13.4 for max |logit| 14.2 at the 130m shape)
# and a logits comparison means nothing; with these, 0.03-0.09 (CPU check).
# The scaling is done by hand, not with rescale_prenorm_residual=True: with
# that flag transformers 5.17's from_pretrained re-initialises every
# out_proj.weight instead of loading it.  Timing does not depend on values.
INIT = dict(initializer_range=0.02)
COMMON_M1 = dict(INIT, vocab_size=VOCAB, conv_kernel=4, expand=2, use_bias=False, use_conv_bias=True,
                 tie_word_embeddings=True, pad_token_id=0, bos_token_id=0, eos_token_id=0)
COMMON_M2 = dict(INIT, vocab_size=VOCAB, conv_kernel=4, expand=2, use_bias=False, use_conv_bias=True,
                 n_groups=1, chunk_size=256, residual_in_fp32=True, tie_word_embeddings=True,
                 time_step_limit=(0.0, float("inf")), pad_token_id=0, bos_token_id=0, eos_token_id=0)

# name -> (arch, config fields); the shapes of issues #4 and #6.
SHAPES = {
    "mamba-130m": (1, dict(COMMON_M1, hidden_size=768, state_size=16, num_hidden_layers=24,
                            time_step_rank=48)),
    "mamba-1.4b": (1, dict(COMMON_M1, hidden_size=2048, state_size=16, num_hidden_layers=48,
                            time_step_rank=128)),
    "mamba2-130m": (2, dict(COMMON_M2, hidden_size=768, num_hidden_layers=24, num_heads=24,
                             head_dim=64, state_size=128)),
    "mamba2-1.3b": (2, dict(COMMON_M2, hidden_size=2048, num_hidden_layers=48, num_heads=64,
                             head_dim=64, state_size=128)),
    # small shapes for a smoke test of the flow on a CPU
    "tiny-m1": (1, dict(COMMON_M1, vocab_size=512, hidden_size=64, state_size=8,
                         num_hidden_layers=2, time_step_rank=8)),
    "tiny-m2": (2, dict(COMMON_M2, vocab_size=512, hidden_size=64, num_hidden_layers=2,
                         num_heads=4, head_dim=32, state_size=16, chunk_size=32)),
}
REF_TOKENS = 32


def make(name):
    arch, fields = SHAPES[name]
    if arch == 1:
        return transformers.MambaConfig(**fields), transformers.MambaForCausalLM
    return transformers.Mamba2Config(**fields), transformers.Mamba2ForCausalLM


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Rows:
    def __init__(self, path):
        self.path = path

    def add(self, shape, key, label, value, unit, note=""):
        v = "" if value is None else f"{value:.6g}"
        shown = "" if value is None else (f"{value:,.0f} {unit}" if abs(value) >= 1000 else f"{value:.4g} {unit}")
        print(f"HF {shape:<12} {label:<44} {shown:>18}  {note}", flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write("\t".join(["hf", shape, key, label, v, unit, note]) + "\n")


@torch.no_grad()
def write_checkpoint(name, out_dir, dev, rows):
    cfg, cls = make(name)
    torch.manual_seed(SEED)
    with torch.device(dev):
        model = cls(cfg)
    for layer in model.backbone.layers:
        layer.mixer.out_proj.weight.div_(math.sqrt(cfg.num_hidden_layers))
    model = model.to(torch.bfloat16).eval()
    path = os.path.join(out_dir, name)
    model.save_pretrained(path, safe_serialization=True)
    # Some transformers versions write an infinite time_step_limit as a bare
    # Infinity (not JSON); the loader reads transformers 5's {"__float__": ...}.
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        saved = json.load(f)
    lim = saved.get("time_step_limit")
    if isinstance(lim, list) and any(isinstance(x, float) and math.isinf(x) for x in lim):
        saved["time_step_limit"] = [{"__float__": "Infinity"} if isinstance(x, float) and math.isinf(x) else x
                                    for x in lim]
        with open(cfg_path, "w") as f:
            json.dump(saved, f, indent=2)
    # reference logits on a short prompt: bf16 as saved, and float32 on the
    # same (bf16-valued) weights
    g = torch.Generator().manual_seed(SEED + 1)
    V = cfg.vocab_size
    ids = torch.randint(0, V, (1, REF_TOKENS), generator=g)
    lg16 = model(ids.to(dev), use_cache=False).logits[0].float().cpu()
    del model
    free()
    m32 = load(cls, path, cfg, torch.float32, dev)
    lg32 = m32(ids.to(dev), use_cache=False).logits[0].float().cpu()
    del m32
    free()
    with open(path + ".ref", "wb") as f:
        f.write(b"LMRF" + struct.pack("<ii", REF_TOKENS, V))
        f.write(ids[0].to(torch.int32).numpy().astype("<i4").tobytes())
        f.write(lg32.numpy().astype("<f4").tobytes())
        f.write(lg16.numpy().astype("<f4").tobytes())
    print(f"wrote {path} and {path}.ref", flush=True)
    rows.add(name, "logits", f"max |logit - transformers f32| ({REF_TOKENS} tok)",
             float((lg16 - lg32).abs().max()), "",
             f"transformers bf16 vs itself in float32 on the same weights; max |logit| {float(lg32.abs().max()):.4g}")
    return path


@torch.no_grad()
def load(cls, path, cfg, dtype, dev):
    """from_pretrained, checked against the file: every tensor saved must
    come back unchanged (some versions re-initialise weights on load)."""
    from safetensors.torch import load_file
    model = cls.from_pretrained(path, config=cfg, dtype=dtype).to(dev).eval()
    saved = load_file(os.path.join(path, "model.safetensors"))
    have = model.state_dict()
    bad = [k for k, v in saved.items()
           if k not in have or not torch.equal(have[k].cpu(), v.to(dtype))]
    if bad:
        raise RuntimeError(f"{path}: transformers did not load {len(bad)} tensors as saved, e.g. {bad[:3]}")
    return model


def timed(fn):
    sync()
    t0 = time.perf_counter()
    r = fn()
    sync()
    return time.perf_counter() - t0, r


class StepClock(LogitsProcessor):
    """Host time at each generation step (one decode forward apart)."""

    def __init__(self):
        self.t = []

    def __call__(self, input_ids, scores):
        sync()
        self.t.append(time.perf_counter())
        return scores


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


@torch.no_grad()
def bench_shape(name, path, rows, lengths, new_tokens, budget, dev):
    cfg, cls = make(name)
    model = load(cls, path, cfg, torch.bfloat16, dev)
    V = cfg.vocab_size
    g = torch.Generator().manual_seed(SEED + 2)

    # ---- prefill: one call, last logits only
    ids = torch.randint(0, V, (1, max(lengths)), generator=g).to(dev)
    model(ids[:, :256], use_cache=False, logits_to_keep=1)  # warm-up
    prev = None  # (length, seconds) of the last measured length
    for L in lengths:
        ln = f"{L // 1024}k" if L % 1024 == 0 else str(L)
        key, label = f"prefill_{ln}", f"prefill {ln}, one call"
        if prev is not None:
            if math.isinf(prev[1]):
                rows.add(name, key, label, None, "tok/s", "skipped (a shorter length ran out of memory)")
                continue
            est = prev[1] * L / prev[0]
            if est > budget:
                rows.add(name, key, label, None, "tok/s", f"skipped (est. {est:.0f} s)")
                continue
        try:
            t, _ = timed(lambda: model(ids[:, :L], use_cache=False, logits_to_keep=1))
            reps = [t]
            while sum(reps) < 2.0 and len(reps) < 3:  # repeat only the fast ones
                reps.append(timed(lambda: model(ids[:, :L], use_cache=False, logits_to_keep=1))[0])
            t = median(reps)
        except torch.OutOfMemoryError:
            free()
            rows.add(name, key, label, None, "tok/s", "CUDA out of memory")
            prev = (L, float("inf"))
            continue
        free()
        prev = (L, t)
        rows.add(name, key, label, L / t, "tok/s", f"{t:.3f} s, median of {len(reps)}")

    # ---- decode: generate after a 128-token prompt, greedy
    for b in (1, 16):
        p = torch.randint(0, V, (b, 128), generator=g).to(dev)
        mask = torch.ones_like(p)

        def gen(n, clock=None):
            return model.generate(p, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=0,
                                  logits_processor=LogitsProcessorList([clock] if clock else []))

        try:
            gen(4)  # warm-up
            probe = StepClock()
            t_probe, _ = timed(lambda: gen(8, probe))
            per = median([b_ - a for a, b_ in zip(probe.t, probe.t[1:])])
            n = new_tokens
            note = ""
            if t_probe + per * (n - 8) > budget:
                n = min(new_tokens, max(16, int((budget - t_probe) / per) + 8))
                note = (f"{n} new tokens instead of {new_tokens} ({new_tokens} would take "
                        f"~{t_probe + per * (new_tokens - 8):.0f} s); ")
            clock = StepClock()
            t, out = timed(lambda: gen(n, clock))
            assert out.shape == (b, 128 + n), out.shape
            step = median([b_ - a for a, b_ in zip(clock.t, clock.t[1:])])
        except torch.OutOfMemoryError:
            free()
            rows.add(name, f"decode_b{b}", f"decode batch {b}, 128+{new_tokens}, wall", None, "tok/s",
                     "CUDA out of memory")
            continue
        rows.add(name, f"decode_b{b}", f"decode batch {b}, 128+{new_tokens}, wall", b * n / t, "tok/s",
                 note + f"{t:.2f} s for 128 + {n} tokens x {b}, generate(), one batch")
        rows.add(name, f"decode_b{b}_step", f"decode batch {b}, per step (median)", step * 1e3, "ms",
                 f"= {b / step:,.0f} tok/s")
    del model
    free()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", metavar="DIR", help="write the random checkpoints (and .ref files) to DIR")
    ap.add_argument("--dir", help="checkpoint directory for --bench without --write")
    ap.add_argument("--bench", action="store_true", help="time transformers on the checkpoints")
    ap.add_argument("--shapes", default="mamba-130m,mamba-1.4b,mamba2-130m,mamba2-1.3b")
    ap.add_argument("--quick", action="store_true", help="prefill 2k only, 32 new tokens")
    ap.add_argument("--lengths", default="2048,16384,65536")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds one measurement may take")
    ap.add_argument("--rows", help="append tab-separated rows to this file")
    a = ap.parse_args()
    out_dir = a.write or a.dir
    if not out_dir or not (a.write or a.bench):
        ap.error("give --write DIR and/or --bench --dir DIR")
    shapes = [s for s in a.shapes.split(",") if s]
    for s in shapes:
        if s not in SHAPES:
            ap.error(f"unknown shape {s} (known: {', '.join(SHAPES)})")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    lengths = [2048] if a.quick else [int(x) for x in a.lengths.split(",")]
    new_tokens = 32 if a.quick else a.new_tokens
    rows = Rows(a.rows)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'}", flush=True)
    try:
        import mamba_ssm  # noqa: F401
        print("note: mamba_ssm is importable: transformers may use its kernels", flush=True)
    except Exception:
        print("mamba_ssm not installed: transformers runs its torch path", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    for s in shapes:
        path = os.path.join(out_dir, s)
        t0 = time.perf_counter()
        if a.write:
            write_checkpoint(s, out_dir, dev, rows)
            print(f"{s}: written in {time.perf_counter() - t0:.1f} s", flush=True)
        if a.bench:
            t0 = time.perf_counter()
            bench_shape(s, path, rows, lengths, new_tokens, a.budget, dev)
            print(f"{s}: transformers timed in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
