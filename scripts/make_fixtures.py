#!/usr/bin/env python3
"""Write the small reference checkpoints under test/data/fixtures/.

Each fixture is a random Mamba-1 model written by Hugging Face transformers
(MambaConfig / MambaForCausalLM / save_pretrained, safetensors) plus a
reference.safetensors holding

    input_ids   int32   [B, L]     random ids (first id 0, last id V_in - 1)
    logits_f64  float64 [B, L, V]  logits of every position, float64

The logits come from the SAVED checkpoint loaded back with
from_pretrained(..., dtype=torch.float64), so what the storage dtype (bf16)
did to the weights is in the reference exactly.  transformers' torch path
is used (no mamba_ssm / kernels-hub code: on CPU the fallbacks run).

Why a patch is needed for a real float64 reference: transformers' Mamba
torch path rounds to float32 in several places even when the model is
float64 (RMSNorm computes in float32, residual_in_fp32 casts the residual
stream, A = -exp(A_log.float()), dt_proj.bias.float(), B.float(), u.float()
in the scan, and the final logits .float()).  While computing logits_f64
those casts are made dtype-preserving for float64 tensors (Tensor.float is
the identity on float64, RMSNorm runs in its input dtype, each block's
residual_in_fp32 attribute is turned off at run time - the saved config
keeps residual_in_fp32 = true).  Two checks guard the result and are
recorded in the metadata:
  * max_abs_diff_vs_hf_as_is: the unpatched transformers run (float32
    roundings included) must agree to ~1e-5 of the logit scale;
  * max_abs_diff_vs_numpy_f64: an independent float64 NumPy forward written
    from docs/MAMBA.md §1 must agree to ~1e-12 (proves no float32 rounding
    is left in logits_f64 and that transformers' semantics are the ones the
    library implements).

All config fields that matter are passed explicitly (use_bias in
particular: its default has changed between transformers versions and
real checkpoints set it to false), and config.json is checked after saving.

Random initialisation is perturbed with seeded noise so that A_log, D,
dt_proj.bias, conv1d.bias, the norm weights and the in/out biases are far
from their init values (an implementation that ignores one of them fails).

Usage:  python3 scripts/make_fixtures.py [--out test/data/fixtures]
Deterministic for a given torch version (CPU): tensors and metadata values
are identical run to run (the safetensors writer may order the JSON header
keys differently, so file hashes can change).  Runs in a few seconds.
"""

import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import MambaConfig, MambaForCausalLM
from transformers.models.mamba import modeling_mamba

import fixture_common as fc
from fixture_common import rmsnorm, silu, softplus

SEED = 20261124
GENERATOR = "scripts/make_fixtures.py"

# Every MambaConfig field the library reads, always given explicitly.
BASE = dict(
    vocab_size=96,
    hidden_size=32,
    state_size=16,
    num_hidden_layers=2,
    conv_kernel=4,
    expand=2,
    time_step_rank="auto",
    layer_norm_epsilon=1e-5,
    use_bias=False,
    use_conv_bias=True,
    residual_in_fp32=True,
    tie_word_embeddings=True,
    pad_token_id=0,
    bos_token_id=0,
    eos_token_id=0,
)

FIXTURES = [
    dict(name="m1-tiny-f32",
         doc="tied head, no in/out bias, conv bias; d=32 E=64 N=16 R=2 K=4, 2 layers, V=96",
         config={}, dtype="float32", batch=2, length=24),
    dict(name="m1-odd-f32",
         doc="odd shapes: d=40 E=80 N=8 R=3 K=3, 3 layers, V=75; untied lm_head, "
             "use_bias=true (in_proj/out_proj bias), use_conv_bias=false",
         config=dict(vocab_size=75, hidden_size=40, state_size=8, time_step_rank=3,
                     conv_kernel=3, num_hidden_layers=3, tie_word_embeddings=False,
                     use_bias=True, use_conv_bias=False),
         dtype="float32", batch=3, length=17),
    dict(name="m1-bias-f32",
         doc='use_bias=true and conv bias, tied; time_step_rank written as "auto" in '
             "config.json (d=56 -> R=ceil(56/16)=4); E=112 N=16 K=4, 2 layers, V=120",
         config=dict(vocab_size=120, hidden_size=56, use_bias=True, use_conv_bias=True),
         keep_auto_rank=True, dtype="float32", batch=2, length=31),
    dict(name="m1-bf16",
         doc="weights stored as BF16 (every tensor); d=32 E=64 N=16 R=2 K=4, 2 layers, V=128, tied",
         config=dict(vocab_size=128), dtype="bfloat16", batch=2, length=40),
    dict(name="m1-sharded-f32",
         doc="saved with max_shard_size=24KB: several model-0000k-of-0000n.safetensors shards "
             "+ model.safetensors.index.json; d=48 E=96 N=16 R=3 K=4, 3 layers, V=100, tied",
         config=dict(vocab_size=100, hidden_size=48, num_hidden_layers=3),
         shard="24KB", dtype="float32", batch=2, length=19),
    dict(name="m1-mambassm-f32",
         doc="mamba_ssm naming (DERIVED: a transformers checkpoint with its tensors renamed, "
             "backbone.embeddings.weight -> backbone.embedding.weight, tied lm_head omitted; "
             "config.json in mamba_ssm form: d_model/n_layer/vocab_size/ssm_cfg/"
             "pad_vocab_size_multiple). vocab_size 100 padded to 104 rows (multiple of 8); "
             "d=32 E=64 N=16 R=2 K=4, 2 layers",
         config=dict(vocab_size=104), mamba_ssm=dict(vocab_size=100, pad_vocab_size_multiple=8),
         dtype="float32", batch=2, length=29),
]


# ---------------------------------------------------------------- building

def make_config(spec):
    return fc.make_config(MambaConfig, BASE, spec)


def check_saved_config(path, fields, keep_auto_rank):
    with open(os.path.join(path, "config.json")) as f:
        saved = json.load(f)
    for k, v in fields.items():
        if k == "time_step_rank":
            want = "auto" if keep_auto_rank else (
                math.ceil(fields["hidden_size"] / 16) if v == "auto" else v)
            assert saved[k] == want, (path, k, saved[k], want)
        else:
            assert k in saved and saved[k] == v, (path, k, saved.get(k), v)
    assert saved["intermediate_size"] == fields["expand"] * fields["hidden_size"]


# ------------------------------------------------------ float64 reference

# Float64Exact (fixture_common) runs MambaRMSNorm in its input dtype.
NORM_FORWARDS = [(modeling_mamba.MambaRMSNorm, fc.rmsnorm_in_input_dtype)]


def hf_logits(model_dir, ids, exact):
    return fc.hf_logits(MambaForCausalLM, NORM_FORWARDS, model_dir, ids, exact)


# ------------------------------------- independent NumPy forward (checking)

def rms_unit(v, eps):
    """Falcon-Mamba's weightless RMS normalisation over the last axis."""
    return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps)


def numpy_forward(tensors, hp, ids):
    """Mamba-1 forward in float64 from docs/MAMBA.md §1.  tensors: HF names.
    hp["mixer_rms_eps"] (Falcon-Mamba, make_fixtures_falcon.py): dt_low, B
    and C each normalised by their RMS after x_proj."""
    w = {k: v.double().numpy() for k, v in tensors.items()}
    K, N, R = hp["conv_kernel"], hp["state_size"], hp["time_step_rank"]
    eps = hp["layer_norm_epsilon"]
    emb = w["backbone.embeddings.weight"]
    res = emb[ids]                                        # [B, L, d]
    Bsz, L, _ = res.shape
    for i in range(hp["num_hidden_layers"]):
        p = "backbone.layers.%d." % i
        h = rmsnorm(res, w[p + "norm.weight"], eps)
        xz = h @ w[p + "mixer.in_proj.weight"].T
        if p + "mixer.in_proj.bias" in w:
            xz = xz + w[p + "mixer.in_proj.bias"]
        E = xz.shape[-1] // 2
        xs, z = xz[..., :E], xz[..., E:]
        cw = w[p + "mixer.conv1d.weight"][:, 0, :]       # [E, K]
        xpad = np.concatenate([np.zeros((Bsz, K - 1, E)), xs], axis=1)
        u = np.zeros_like(xs)
        for k in range(K):                                # tap K-1 = current token
            u += cw[:, k] * xpad[:, k:k + L, :]
        if p + "mixer.conv1d.bias" in w:
            u += w[p + "mixer.conv1d.bias"]
        u = silu(u)
        dbc = u @ w[p + "mixer.x_proj.weight"].T
        dt_low, Bm, Cm = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:R + 2 * N]
        if hp.get("mixer_rms_eps"):
            e2 = hp["mixer_rms_eps"]
            dt_low, Bm, Cm = rms_unit(dt_low, e2), rms_unit(Bm, e2), rms_unit(Cm, e2)
        delta = softplus(dt_low @ w[p + "mixer.dt_proj.weight"].T + w[p + "mixer.dt_proj.bias"])
        A = -np.exp(w[p + "mixer.A_log"])                 # [E, N]
        D = w[p + "mixer.D"]
        st = np.zeros((Bsz, E, N))
        y = np.zeros_like(u)
        for t in range(L):
            dt = delta[:, t, :, None]
            st = np.exp(dt * A) * st + dt * Bm[:, t, None, :] * u[:, t, :, None]
            y[:, t] = (st * Cm[:, t, None, :]).sum(-1) + D * u[:, t]
        y = y * silu(z)
        out = y @ w[p + "mixer.out_proj.weight"].T
        if p + "mixer.out_proj.bias" in w:
            out = out + w[p + "mixer.out_proj.bias"]
        res = res + out
    hf = rmsnorm(res, w["backbone.norm_f.weight"], eps)
    head = w.get("lm_head.weight", emb)
    return hf @ head.T


def load_dir_tensors(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for fn in files:
        out.update(load_file(os.path.join(d, fn)))
    return out


# ----------------------------------------------------- mamba_ssm conversion

def to_mamba_ssm(src, dst, fields, ms):
    """Renames a transformers checkpoint into mamba_ssm naming."""
    tensors = load_dir_tensors(src)
    renamed = {}
    for k, v in tensors.items():
        if k == "backbone.embeddings.weight":
            k = "backbone.embedding.weight"
        renamed[k] = v.contiguous()
    assert "lm_head.weight" not in renamed  # tied: mamba_ssm ties by default
    padded = ms["vocab_size"] + (-ms["vocab_size"]) % ms["pad_vocab_size_multiple"]
    assert padded == fields["vocab_size"]
    os.makedirs(dst, exist_ok=True)
    save_file(renamed, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    rank = fields["time_step_rank"]
    cfg = {
        "d_model": fields["hidden_size"],
        "d_intermediate": 0,
        "n_layer": fields["num_hidden_layers"],
        "vocab_size": ms["vocab_size"],
        "ssm_cfg": {
            "layer": "Mamba1",
            "d_state": fields["state_size"],
            "d_conv": fields["conv_kernel"],
            "expand": fields["expand"],
            "dt_rank": rank,
            "conv_bias": fields["use_conv_bias"],
            "bias": fields["use_bias"],
        },
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": ms["pad_vocab_size_multiple"],
        "tie_embeddings": True,
    }
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    return renamed


# ------------------------------------------------------------------- main

def checked_logits(logits_of, spec, hf_dir, model, fields, ids):
    """transformers' float64 logits of ids (logits_of: the script's
    hf_logits), checked against its as-is path and against numpy_forward.
    Returns logits, the numpy logits, the numpy forward's parameters, max
    |logit| and the two differences."""
    logits = logits_of(hf_dir, ids, exact=True)
    as_is = logits_of(hf_dir, ids, exact=False)
    hp = dict(fields)
    hp["time_step_rank"] = model.config.time_step_rank
    ref_np = numpy_forward(load_dir_tensors(hf_dir), hp, ids)
    scale = float(np.abs(logits).max())
    d_np = float(np.abs(ref_np - logits).max())
    d_hf = float(np.abs(as_is - logits).max())
    assert d_np <= 1e-11 * max(scale, 1.0), (spec["name"], d_np, scale)
    assert d_hf <= 1e-4 * max(scale, 1.0), (spec["name"], d_hf, scale)
    assert float(logits.std()) > 0.05, "degenerate logits"
    return logits, ref_np, hp, scale, d_np, d_hf


def reference_meta(generator, spec, seed, scale, d_hf, d_np):
    """reference.safetensors metadata of a fixture."""
    return {
        "fixture": spec["name"],
        "generator": generator,
        "seed": str(seed),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "storage_dtype": spec["dtype"],
        "logits": "all positions, float64, transformers torch path with its float32 casts "
                  "disabled for float64 tensors (see generator docstring)",
        "max_abs_logit": repr(scale),
        "max_abs_diff_vs_hf_as_is": repr(d_hf),
        "max_abs_diff_vs_numpy_f64": repr(d_np),
    }


def make_one(spec, index, out_root, tmp_root):
    seed = SEED + 1000 * index
    torch.manual_seed(seed)
    config, fields = make_config(spec)
    model = MambaForCausalLM(config)
    model.eval()
    fc.perturb(model, torch.Generator().manual_seed(seed + 1), dt_bias="dt_proj.bias")
    assert model.config.use_bias == fields["use_bias"]
    assert model.config.use_conv_bias == fields["use_conv_bias"]

    final = os.path.join(out_root, spec["name"])
    if os.path.exists(final):
        shutil.rmtree(final)
    hf_dir = os.path.join(tmp_root, spec["name"]) if "mamba_ssm" in spec else final
    dtype = getattr(torch, spec["dtype"])
    kw = {"max_shard_size": spec["shard"]} if spec.get("shard") else {}
    model.to(dtype).save_pretrained(hf_dir, **kw)
    fc.drop_generation_config(hf_dir)
    if spec.get("keep_auto_rank"):
        p = os.path.join(hf_dir, "config.json")
        with open(p) as f:
            c = json.load(f)
        c["time_step_rank"] = "auto"
        with open(p, "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
            f.write("\n")
    check_saved_config(hf_dir, fields, spec.get("keep_auto_rank", False))
    if spec.get("shard"):
        shards = [f for f in os.listdir(hf_dir) if f.startswith("model-")]
        assert len(shards) >= 3 and os.path.exists(
            os.path.join(hf_dir, "model.safetensors.index.json")), shards

    # Input ids: in range of the real (unpadded) vocabulary.
    v_in = spec["mamba_ssm"]["vocab_size"] if "mamba_ssm" in spec else fields["vocab_size"]
    ids = fc.random_ids(seed + 2, v_in, spec["batch"], spec["length"])

    logits, ref_np, hp, scale, d_np, d_hf = checked_logits(hf_logits, spec, hf_dir, model, fields, ids)

    if "mamba_ssm" in spec:
        renamed = to_mamba_ssm(hf_dir, final, fields, spec["mamba_ssm"])
        back = {("backbone.embeddings.weight" if k == "backbone.embedding.weight" else k): v
                for k, v in renamed.items()}
        assert float(np.abs(numpy_forward(back, hp, ids) - ref_np).max()) == 0.0

    meta = reference_meta(GENERATOR, spec, seed, scale, d_hf, d_np)
    size = fc.save_reference(final, ids, logits, meta)
    print("%-16s ids %s logits %s |max| %.3f  d(hf as-is) %.2e  d(numpy) %.2e  %d bytes"
          % (spec["name"], ids.shape, logits.shape, scale, d_hf, d_np, size))
    return size


def main():
    args = fc.parse_args(__doc__)
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(FIXTURES):
            total += make_one(spec, i, args.out, tmp)
    print("total %d bytes in %s" % (total, os.path.normpath(args.out)))
    assert total < 5 * 1024 * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
