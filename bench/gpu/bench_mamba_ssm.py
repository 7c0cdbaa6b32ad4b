#!/usr/bin/env python3
"""The peer, mamba_ssm, timed on the checkpoints bench_hf.py --write made
(the same files bench_e2e times), for bench/gpu/bench_table.py.

  bench_mamba_ssm.py --dir DIR [--shapes a,b,...] [--quick] [--batches 1,16,64] [--rows FILE]
                     [--prefill-batch-only]
  bench_mamba_ssm.py --scan     (selective_scan_fn alone: "scan E=.. B=.. L=..: T ms" lines)

mamba_ssm (built by bench/gpu/build_mamba_ssm.sh, on PYTHONPATH) loads each
transformers-written bf16 checkpoint into its own MambaLMHeadModel: the
config is mapped field by field, the tensors keep their names but for
backbone.embeddings -> backbone.embedding (lm_head is tied).  Rows:
  logits     max |logit - transformers f32| on DIR/<shape>.ref's 32 tokens
             (the same row bench_e2e prints for ours);
  prefill    model(ids, num_last_tokens=1) at 2k, 16k, 64k tokens, bf16,
             median of up to 3 calls after a warm-up;
  prefill of many prompts (bench_e2e's rows prefill_batch_* / prefill_seq_*):
             8 x 2k, 64 x 512, 8 prompts of 256..3840 tokens (16k in all;
             not with --quick): one padded batch model(ids [B, L_max],
             num_last_tokens=1), every prompt right-padded to the longest
             (mamba_ssm takes no mask: timing only, the padded rows' last
             logits are not their prompts'), and the prompts one at a time
             (model(ids [1, L_i])); tok/s = the prompts' tokens / wall time,
             median of 3 after a warm-up;
  decode     generate(input_ids, max_length=128+256, cg=True, top_k=1) at
             each batch size: wall time of the call, prompt included, after
             one warm-up call of the same shape (which captures the CUDA
             graph); per step = (wall(128+256) - wall(128+1)) / 255.
--scan times mamba_ssm's selective scan kernel alone at the sizes
bench/gpu/bench_scan prints, in its own native layout: u, Δ, B, C, z and y
bf16, A, D and the Δ bias fp32, softplus, D skip and z gate fused (ours
reads Δ, B, C in fp32, more bytes); median of 20 calls timed with CUDA
events after 3 warm-ups, inputs rotated over 3 buffer sets.
Rows are tab-separated (side "mamba_ssm", shape, key, label, value, unit,
note), keys as bench_e2e's.
Status 2026-12-07: written, the source patch checked on the sdists here; not
yet run on a GPU (no device time left): gpu_check.sh uses it only when .peer/
is carried.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
from safetensors.torch import load_file
from mamba_ssm.models.config_mamba import MambaConfig
from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

SEED = 20261124
PROMPT = 128


def sync():
    torch.cuda.synchronize()


def timed(fn):
    sync()
    t0 = time.perf_counter()
    r = fn()
    sync()
    return time.perf_counter() - t0, r


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


class Rows:
    def __init__(self, path):
        self.path = path

    def add(self, shape, key, label, value, unit, note=""):
        v = "" if value is None else f"{value:.6g}"
        shown = "" if value is None else (f"{value:,.0f} {unit}" if abs(value) >= 1000 else f"{value:.4g} {unit}")
        print(f"mamba_ssm {shape:<12} {label:<44} {shown:>18}  {note}", flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write("\t".join(["mamba_ssm", shape, key, label, v, unit, note]) + "\n")


def to_mamba_ssm(hf):
    """transformers MambaConfig / Mamba2Config (config.json) -> mamba_ssm MambaConfig."""
    if hf["model_type"] == "mamba":
        ssm = dict(layer="Mamba1", d_state=hf["state_size"], d_conv=hf["conv_kernel"], expand=hf["expand"],
                   dt_rank=hf["time_step_rank"], conv_bias=hf["use_conv_bias"], bias=hf["use_bias"])
    elif hf["model_type"] == "mamba2":
        assert hf.get("n_groups", 1) >= 1
        ssm = dict(layer="Mamba2", d_state=hf["state_size"], d_conv=hf["conv_kernel"], expand=hf["expand"],
                   headdim=hf["head_dim"], ngroups=hf["n_groups"], chunk_size=hf["chunk_size"],
                   conv_bias=hf["use_conv_bias"], bias=hf["use_bias"])
    else:
        raise ValueError(f"model_type {hf['model_type']}")
    assert hf.get("tie_word_embeddings", True), "untied heads are not mapped"
    return MambaConfig(d_model=hf["hidden_size"], d_intermediate=0, n_layer=hf["num_hidden_layers"],
                       vocab_size=hf["vocab_size"], ssm_cfg=ssm, rms_norm=True,
                       residual_in_fp32=hf.get("residual_in_fp32", True), fused_add_norm=True,
                       pad_vocab_size_multiple=1, tie_embeddings=True)


@torch.no_grad()
def load(path):
    hf = json.load(open(os.path.join(path, "config.json")))
    model = MambaLMHeadModel(to_mamba_ssm(hf), device="cuda", dtype=torch.bfloat16).eval()
    sd = {k.replace("backbone.embeddings.", "backbone.embedding."): v
          for k, v in load_file(os.path.join(path, "model.safetensors")).items()}
    sd.pop("lm_head.weight", None)  # tied to the embedding
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"{path}: missing {missing[:4]}, unexpected {unexpected[:4]}")
    # every tensor as saved (no re-initialisation on the way)
    have = model.state_dict()
    bad = [k for k, v in sd.items() if not torch.equal(have[k].cpu(), v)]
    if bad:
        raise RuntimeError(f"{path}: {len(bad)} tensors differ from the file, e.g. {bad[:3]}")
    return model, hf["vocab_size"]


def read_ref(path):
    with open(path, "rb") as f:
        b = f.read()
    assert b[:4] == b"LMRF"
    T, V = struct.unpack("<ii", b[4:12])
    ids = torch.frombuffer(bytearray(b[12:12 + 4 * T]), dtype=torch.int32).long()
    lg32 = torch.frombuffer(bytearray(b[12 + 4 * T:12 + 4 * T + 4 * T * V]), dtype=torch.float32).view(T, V)
    return ids, lg32


# bench_e2e's prompt sets (pb_cases): tag, label, lengths
PREFILL_BATCHES = [("8x2k", "8 x 2k", [2048] * 8), ("64x512", "64 x 512", [512] * 64),
                   ("8xmixed", "8 x 256..3840 (16k)", [256, 768, 1280, 1792, 2304, 2816, 3328, 3840])]


@torch.no_grad()
def bench_prefill_batch(name, model, V, rows, g, quick):
    for tag, what, lens in PREFILL_BATCHES:
        if quick and tag == "8xmixed":
            continue
        B, Lmax, total = len(lens), max(lens), sum(lens)
        x = torch.randint(0, V, (B, Lmax), generator=g).cuda()
        padded = lambda: model(x, num_last_tokens=1)
        one_by_one = lambda: [model(x[i:i + 1, :lens[i]], num_last_tokens=1) for i in range(B)]
        try:
            padded()  # warm-up
            one_by_one()
            tb = median([timed(padded)[0] for _ in range(3)])
            ts = median([timed(one_by_one)[0] for _ in range(3)])
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            for key, label in ((f"prefill_batch_{tag}", f"prefill {what}, batched"),
                               (f"prefill_seq_{tag}", f"prefill {what}, one at a time")):
                rows.add(name, key, label, None, "tok/s", "CUDA out of memory")
            continue
        rows.add(name, f"prefill_batch_{tag}", f"prefill {what}, batched", total / tb, "tok/s",
                 f"{tb * 1e3:.2f} ms, median of 3; model(ids [{B}, {Lmax}], num_last_tokens=1), padded to the "
                 f"longest: {B * Lmax} tokens run for {total}; {ts / tb:.2f}x one at a time")
        rows.add(name, f"prefill_seq_{tag}", f"prefill {what}, one at a time", total / ts, "tok/s",
                 f"{ts * 1e3:.2f} ms, median of 3; model(ids [1, L_i], num_last_tokens=1) per prompt")
        del x
        torch.cuda.empty_cache()


@torch.no_grad()
def bench_shape(name, path, rows, lengths, batches, new_tokens, quick=False, pb_only=False):
    model, V = load(path)
    if pb_only:
        bench_prefill_batch(name, model, V, rows, torch.Generator().manual_seed(SEED + 3), quick)
        del model
        torch.cuda.empty_cache()
        return
    ids, lg32 = read_ref(path + ".ref")
    lg = model(ids[None].cuda()).logits[0, :, :V].float().cpu()
    rows.add(name, "logits", "max |logit - transformers f32| (32 tok)", float((lg - lg32).abs().max()), "",
             f"mamba_ssm bf16 on the saved weights; max |logit| {float(lg32.abs().max()):.4g}")

    g = torch.Generator().manual_seed(SEED + 2)
    x = torch.randint(0, V, (1, max(lengths)), generator=g).cuda()
    model(x[:, :256], num_last_tokens=1)  # warm-up
    for L in lengths:
        ln = f"{L // 1024}k" if L % 1024 == 0 else str(L)
        try:
            reps = [timed(lambda: model(x[:, :L], num_last_tokens=1))[0]]
            while sum(reps) < 2.0 and len(reps) < 3:
                reps.append(timed(lambda: model(x[:, :L], num_last_tokens=1))[0])
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            rows.add(name, f"prefill_{ln}", f"prefill {ln}, one call", None, "tok/s", "CUDA out of memory")
            continue
        t = median(reps)
        rows.add(name, f"prefill_{ln}", f"prefill {ln}, one call", L / t, "tok/s",
                 f"{t * 1e3:.2f} ms, median of {len(reps)}; model(ids, num_last_tokens=1)")
    torch.cuda.empty_cache()
    bench_prefill_batch(name, model, V, rows, torch.Generator().manual_seed(SEED + 3), quick)

    for b in batches:
        p = torch.randint(0, V, (b, PROMPT), generator=g).cuda()
        gen = lambda n: model.generate(p, max_length=PROMPT + n, cg=True, top_k=1)
        label = f"decode batch {b}, {PROMPT}+{new_tokens}, wall"
        try:
            gen(new_tokens)  # warm-up: captures the graph for this batch size
            t_full, out = timed(lambda: gen(new_tokens))
            t_one, _ = timed(lambda: gen(1))
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            rows.add(name, f"decode_b{b}", label, None, "tok/s", "CUDA out of memory")
            continue
        assert out.shape == (b, PROMPT + new_tokens), out.shape
        step = (t_full - t_one) / (new_tokens - 1)
        rows.add(name, f"decode_b{b}", label, b * new_tokens / t_full, "tok/s",
                 f"{t_full:.3f} s; generate(cg=True, top_k=1), prompt included")
        rows.add(name, f"decode_b{b}_step", f"decode batch {b}, per step (median)", step * 1e3, "ms",
                 f"= {b / step:,.0f} tok/s; (wall(+{new_tokens}) - wall(+1)) / {new_tokens - 1}")
        del model._decoding_cache  # one graph cache per batch size: free the last one
        torch.cuda.empty_cache()
    del model
    torch.cuda.empty_cache()


@torch.no_grad()
def bench_scan(sizes):
    for E, Bt, L in sizes:
        N = 16
        g = torch.Generator(device="cuda").manual_seed(SEED)
        sets = []
        for _ in range(3):
            r = lambda *shape: torch.randn(*shape, generator=g, device="cuda")
            sets.append(dict(u=r(Bt, E, L).bfloat16(), delta=(r(Bt, E, L) * 0.5).bfloat16(),
                             A=-torch.rand(E, N, generator=g, device="cuda") - 0.1,
                             B=r(Bt, 1, N, L).bfloat16(), C=r(Bt, 1, N, L).bfloat16(), D=r(E),
                             z=r(Bt, E, L).bfloat16(), delta_bias=r(E) * 0.1))
        run = lambda i: selective_scan_fn(**sets[i % 3], delta_softplus=True)
        for i in range(3):
            run(i)
        ms = []
        for i in range(20):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            run(i)
            b.record()
            b.synchronize()
            ms.append(a.elapsed_time(b))
        Lk = f"{L // 1024}k"
        print(f"scan E={E} B={Bt} L={Lk} mamba_ssm: {median(ms):.3f} ms", flush=True)
        del sets
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", help="checkpoints written by bench_hf.py --write")
    ap.add_argument("--scan", action="store_true", help="time selective_scan_fn alone")
    ap.add_argument("--shapes", default="mamba-130m,mamba-1.4b,mamba2-130m,mamba2-1.3b")
    ap.add_argument("--quick", action="store_true", help="prefill 2k only, 32 new tokens")
    ap.add_argument("--lengths", default="2048,16384,65536")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--rows", help="append tab-separated rows to this file")
    ap.add_argument("--prefill-batch-only", action="store_true", help="only the rows of many prompts at once")
    a = ap.parse_args()
    import mamba_ssm
    print(f"mamba_ssm {mamba_ssm.__version__} from {os.path.dirname(mamba_ssm.__file__)}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name()}", flush=True)
    if a.scan:
        bench_scan([(1536, 1, 16384), (1536, 1, 65536), (1536, 8, 16384), (5120, 1, 16384)])
        return 0
    if not a.dir:
        ap.error("give --dir DIR (or --scan)")
    lengths = [2048] if a.quick else [int(v) for v in a.lengths.split(",")]
    new_tokens = 32 if a.quick else a.new_tokens
    rows = Rows(a.rows)
    for s in [v for v in a.shapes.split(",") if v]:
        t0 = time.perf_counter()
        bench_shape(s, os.path.join(a.dir, s), rows, lengths, [int(v) for v in a.batches.split(",")], new_tokens,
                    a.quick, a.prefill_batch_only)
        print(f"{s}: mamba_ssm timed in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
