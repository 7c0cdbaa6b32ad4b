#!/usr/bin/env python3
"""Write the small Mamba-2 reference checkpoints test/data/fixtures/m2-*/.

Sibling of scripts/make_fixtures.py (Mamba-1); same layout: each fixture
is a random Mamba-2 model written by Hugging Face transformers
(Mamba2Config / Mamba2ForCausalLM / save_pretrained, safetensors) plus a
reference.safetensors holding

    input_ids   int32   [B, L]     random ids (first id 0, last id V - 1)
    logits_f64  float64 [B, L, V]  logits of every position, float64

Two references are computed for every fixture from the SAVED checkpoint
(so what bf16 storage did to the weights is in the reference exactly):

  * transformers' torch path in float64 (Mamba2ForCausalLM.from_pretrained
    (dir, dtype=torch.float64), no kernels: the chunked SSD path
    mamba2_chunk_scan with the config's small chunk_size, so several chunks
    and a padded last chunk are exercised).  That path rounds to float32 in
    places even for a float64 model: Mamba2RMSNorm and MambaRMSNormGated
    compute in float32 (.to(torch.float32)), residual_in_fp32 casts the
    residual stream, A = -exp(A_log.float()), hidden_states.float(),
    B.float(), C.float(), dt.float() in the scan, and the final logits
    .float().  While computing the reference those are made
    dtype-preserving for float64 tensors (Tensor.float is the identity on
    float64, both norms run in their input dtype, each block's
    residual_in_fp32 is turned off at run time; the saved config keeps
    residual_in_fp32 = true).

  * an independent float64 NumPy forward written from docs/MAMBA.md §2
    (sequential recurrence S_h = exp(Δ_h A_h) S_h + Δ_h x_h ⊗ B_g, gated
    RMSNorm per group of E/G channels as mamba_ssm, norm_before_gate
    false, Δ clamped to time_step_limit).

logits_f64 is transformers' float64 result for n_groups = 1 and the NumPy
result for n_groups > 1 (the docs say transformers' gated norm ignores the
groups; the installed version normalises per group, so both agree here -
the difference is recorded in the metadata either way).  Checks recorded in
the metadata: max_abs_diff_vs_numpy_f64 (must be ~1e-13: the two float64
forwards are the same function) and max_abs_diff_vs_hf_as_is (transformers
unpatched, its float32 roundings included).

Random init is perturbed with seeded noise: A_log (+N(0,0.3^2)), D
(1+N(0,0.5^2)), dt_bias (+N(0,0.5^2)), conv1d.bias (N(0,0.2^2)), in/out_proj
biases (N(0,0.1^2)), every norm weight including the gated norm
(1+N(0,0.2^2)), an untied lm_head (N(0,0.1^2)).

Usage:  python3 scripts/make_fixtures_m2.py [--out test/data/fixtures]
Deterministic for a given torch version (CPU).  Runs in a few seconds.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import load_file
from transformers import Mamba2Config, Mamba2ForCausalLM
from transformers.models.mamba2 import modeling_mamba2

import fixture_common as fc
from fixture_common import rmsnorm, silu, softplus

SEED = 20261124 + 500
GENERATOR = "scripts/make_fixtures_m2.py"

BASE = dict(
    vocab_size=96,
    hidden_size=32,
    expand=2,
    num_heads=8,
    head_dim=8,
    state_size=16,
    n_groups=1,
    num_hidden_layers=2,
    conv_kernel=4,
    chunk_size=8,
    layer_norm_epsilon=1e-5,
    use_bias=False,
    use_conv_bias=True,
    residual_in_fp32=True,
    tie_word_embeddings=True,
    time_step_limit=(0.0, float("inf")),
    pad_token_id=0,
    bos_token_id=0,
    eos_token_id=0,
)

FIXTURES = [
    dict(name="m2-tiny-f32",
         doc="n_groups 1, tied head, no in/out bias, conv bias; d=32 E=64 H=8 P=8 N=16 K=4, "
             "2 layers, V=96, chunk_size 8",
         config={}, dtype="float32", batch=2, length=24),
    dict(name="m2-odd-f32",
         doc="odd sizes, n_groups 1, UNTIED lm_head, use_bias true (in_proj/out_proj bias), "
             "no conv bias, time_step_limit [0.005, 0.06] (both bounds clamp some Δ); d=40 E=80 H=10 P=8 "
             "N=12 K=3, 3 layers, V=75, chunk_size 5",
         config=dict(vocab_size=75, hidden_size=40, num_heads=10, head_dim=8, state_size=12,
                     conv_kernel=3, num_hidden_layers=3, chunk_size=5, use_bias=True,
                     use_conv_bias=False, tie_word_embeddings=False,
                     time_step_limit=(0.005, 0.06)),
         dtype="float32", batch=3, length=17),
    dict(name="m2-bf16",
         doc="every tensor stored as BF16 (A_log, D, dt_bias included); n_groups 1, tied; "
             "d=32 E=64 H=4 P=16 N=8 K=4, 2 layers, V=128, chunk_size 16",
         config=dict(vocab_size=128, num_heads=4, head_dim=16, state_size=8, chunk_size=16),
         dtype="bfloat16", batch=2, length=40),
    dict(name="m2-groups-f32",
         doc="n_groups 4 (per-group gated RMSNorm over E/G = 16 channels; heads 2g, 2g+1 "
             "read group g's B and C); reference = the NumPy float64 forward; d=32 E=64 H=8 "
             "P=8 N=8 K=4, 2 layers, V=80, tied, chunk_size 8",
         config=dict(vocab_size=80, n_groups=4, state_size=8),
         dtype="float32", batch=2, length=21),
]


def make_config(spec):
    return fc.make_config(Mamba2Config, BASE, spec)


# ------------------------------------------------------ float64 reference

def gnorm_in_input_dtype(mod, hs, gate=None):
    """MambaRMSNormGated.forward in the input's dtype, per group."""
    if gate is not None:
        hs = hs * torch.nn.functional.silu(gate)
    *prefix, last = hs.shape
    g = hs.view(*prefix, last // mod.group_size, mod.group_size)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + mod.variance_epsilon)
    return mod.weight * g.view(*prefix, last)


# Float64Exact (fixture_common) runs both norms in their input dtype.
NORM_FORWARDS = [(modeling_mamba2.Mamba2RMSNorm, fc.rmsnorm_in_input_dtype),
                 (modeling_mamba2.MambaRMSNormGated, gnorm_in_input_dtype)]


def hf_logits(model_dir, ids, exact):
    return fc.hf_logits(Mamba2ForCausalLM, NORM_FORWARDS, model_dir, ids, exact)


# ------------------------------------- independent NumPy forward (MAMBA.md §2)

def numpy_forward(tensors, hp, ids):
    w = {k: v.double().numpy() for k, v in tensors.items()}
    K, N = hp["conv_kernel"], hp["state_size"]
    H, P, G = hp["num_heads"], hp["head_dim"], hp["n_groups"]
    E = H * P
    lo, hi = hp["time_step_limit"]
    eps = hp["layer_norm_epsilon"]
    emb = w["backbone.embeddings.weight"]
    res = emb[ids]
    Bsz, L, _ = res.shape
    for i in range(hp["num_hidden_layers"]):
        p = "backbone.layers.%d." % i
        h = rmsnorm(res, w[p + "norm.weight"], eps)
        zxbcdt = h @ w[p + "mixer.in_proj.weight"].T
        if p + "mixer.in_proj.bias" in w:
            zxbcdt = zxbcdt + w[p + "mixer.in_proj.bias"]
        z = zxbcdt[..., :E]
        xbc = zxbcdt[..., E:E + E + 2 * G * N]
        dt = zxbcdt[..., 2 * E + 2 * G * N:]
        assert dt.shape[-1] == H
        C_ = xbc.shape[-1]
        cw = w[p + "mixer.conv1d.weight"][:, 0, :]
        xpad = np.concatenate([np.zeros((Bsz, K - 1, C_)), xbc], axis=1)
        u = np.zeros_like(xbc)
        for k in range(K):
            u += cw[:, k] * xpad[:, k:k + L, :]
        if p + "mixer.conv1d.bias" in w:
            u += w[p + "mixer.conv1d.bias"]
        u = silu(u)
        x = u[..., :E].reshape(Bsz, L, H, P)
        Bm = u[..., E:E + G * N].reshape(Bsz, L, G, N)
        Cm = u[..., E + G * N:].reshape(Bsz, L, G, N)
        delta = np.clip(softplus(dt + w[p + "mixer.dt_bias"]), lo, hi)   # [B, L, H]
        A = -np.exp(w[p + "mixer.A_log"])                                # [H]
        D = w[p + "mixer.D"]
        S = np.zeros((Bsz, H, P, N))
        y = np.zeros((Bsz, L, H, P))
        grp = np.arange(H) // (H // G)
        for t in range(L):
            dl = delta[:, t, :, None, None]
            Bt = Bm[:, t, grp, None, :]          # [B, H, 1, N]
            Ct = Cm[:, t, grp, None, :]
            S = np.exp(dl * A[None, :, None, None]) * S + dl * x[:, t, :, :, None] * Bt
            y[:, t] = (S * Ct).sum(-1) + D[None, :, None] * x[:, t]
        y = y.reshape(Bsz, L, E) * silu(z)
        yg = y.reshape(Bsz, L, G, E // G)
        yg = yg / np.sqrt((yg * yg).mean(-1, keepdims=True) + eps)
        y = yg.reshape(Bsz, L, E) * w[p + "mixer.norm.weight"]
        out = y @ w[p + "mixer.out_proj.weight"].T
        if p + "mixer.out_proj.bias" in w:
            out = out + w[p + "mixer.out_proj.bias"]
        res = res + out
    hf = rmsnorm(res, w["backbone.norm_f.weight"], eps)
    head = w.get("lm_head.weight", emb)
    return hf @ head.T


# ------------------------------------------------------------------- main

def make_one(spec, index, out_root):
    seed = SEED + 1000 * index
    torch.manual_seed(seed)
    config, fields = make_config(spec)
    model = Mamba2ForCausalLM(config)
    model.eval()
    fc.perturb(model, torch.Generator().manual_seed(seed + 1), dt_bias="dt_bias",
               gated_norm=True)

    final = os.path.join(out_root, spec["name"])
    if os.path.exists(final):
        shutil.rmtree(final)
    model.to(getattr(torch, spec["dtype"])).save_pretrained(final)
    fc.drop_generation_config(final)
    with open(os.path.join(final, "config.json")) as f:
        saved = json.load(f)
    for k in ("hidden_size", "num_heads", "head_dim", "state_size", "n_groups", "expand",
              "conv_kernel", "chunk_size", "use_bias", "use_conv_bias", "tie_word_embeddings",
              "num_hidden_layers", "vocab_size"):
        assert saved[k] == fields[k], (spec["name"], k, saved[k], fields[k])
    tensors = load_file(os.path.join(final, "model.safetensors"))
    if spec["dtype"] == "bfloat16":
        assert tensors["backbone.layers.0.mixer.A_log"].dtype == torch.bfloat16

    v = fields["vocab_size"]
    ids = fc.random_ids(seed + 2, v, spec["batch"], spec["length"])

    hf = hf_logits(final, ids, exact=True)
    as_is = hf_logits(final, ids, exact=False)
    hp = dict(fields)
    ref_np = numpy_forward(tensors, hp, ids)
    logits = hf if fields["n_groups"] == 1 else ref_np
    scale = float(np.abs(logits).max())
    d_np = float(np.abs(ref_np - hf).max())
    d_hf = float(np.abs(as_is - logits).max())
    if fields["n_groups"] == 1:
        assert d_np <= 1e-11 * max(scale, 1.0), (spec["name"], d_np, scale)
    assert d_hf <= 1e-4 * max(scale, 1.0), (spec["name"], d_hf, scale)
    assert float(logits.std()) > 0.05, "degenerate logits"

    meta = {
        "fixture": spec["name"],
        "doc": spec["doc"],
        "generator": GENERATOR,
        "seed": str(seed),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "storage_dtype": spec["dtype"],
        "logits": ("all positions, float64, transformers torch path (chunked SSD) with its "
                   "float32 casts disabled for float64 tensors"
                   if fields["n_groups"] == 1 else
                   "all positions, float64, NumPy forward from docs/MAMBA.md §2 "
                   "(per-group gated RMSNorm)"),
        "max_abs_logit": repr(scale),
        "max_abs_diff_vs_hf_as_is": repr(d_hf),
        "max_abs_diff_numpy_vs_hf_f64": repr(d_np),
    }
    size = fc.save_reference(final, ids, logits, meta)
    print("%-14s ids %s |max| %.3f  d(hf as-is) %.2e  d(numpy vs hf f64) %.2e  %d bytes"
          % (spec["name"], ids.shape, scale, d_hf, d_np, size))
    return size


def main():
    args = fc.parse_args(__doc__)
    total = 0
    for i, spec in enumerate(FIXTURES):
        total += make_one(spec, i, args.out)
    print("total %d bytes" % total)
    assert total < 1024 * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
