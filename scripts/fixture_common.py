"""Shared parts of the fixture generators scripts/make_fixtures.py (Mamba-1)
and scripts/make_fixtures_m2.py (Mamba-2).

Both write random transformers checkpoints and float64 reference logits
under test/data/fixtures/; what they have in common lives here:

  * make_config      the config object and its field dict from BASE + spec
  * perturb          seeded noise on every parameter that has a special init
  * Float64Exact     runs transformers' torch path in float64 throughout
                     (its float32 casts made dtype-preserving for float64)
  * hf_logits        logits of a saved checkpoint, loaded in float64
  * softplus, silu, rmsnorm   float64 NumPy pieces of the checking forwards
  * random_ids       reference input ids (first id 0, last id V - 1)
  * drop_generation_config, save_reference, parse_args
                     file handling around one fixture

Imported by the two scripts (which run with scripts/ on sys.path); needs
torch, transformers, numpy and safetensors like them.
"""

import argparse
import operator
import os

import numpy as np
import torch
from safetensors.numpy import save_file as np_save_file


# ---------------------------------------------------------------- building

def make_config(config_cls, base, spec):
    """config_cls(**fields) and fields = base updated with spec["config"]."""
    fields = dict(base)
    fields.update(spec["config"])
    return config_cls(**fields), fields


@torch.no_grad()
def perturb(model, gen, dt_bias="dt_proj.bias", gated_norm=False):
    """Moves every parameter that has a special init away from it (seeded).

    dt_bias: the mixer attribute holding the Δ bias ("dt_proj.bias" in
    Mamba-1, "dt_bias" in Mamba-2); gated_norm: the mixer has a gated
    RMSNorm (mixer.norm, Mamba-2).  The draws are made in a fixed order, so
    a fixture's weights depend only on its seed."""
    def noise(t, scale):
        return torch.randn(t.shape, generator=gen, dtype=torch.float32) * scale

    get_dt_bias = operator.attrgetter(dt_bias)
    bb = model.backbone
    for layer in bb.layers:
        mx = layer.mixer
        mx.A_log.add_(noise(mx.A_log, 0.3))
        mx.D.copy_(1.0 + noise(mx.D, 0.5))
        b = get_dt_bias(mx)
        b.add_(noise(b, 0.5))
        if mx.conv1d.bias is not None:
            mx.conv1d.bias.copy_(noise(mx.conv1d.bias, 0.2))
        if mx.in_proj.bias is not None:
            mx.in_proj.bias.copy_(noise(mx.in_proj.bias, 0.1))
        if mx.out_proj.bias is not None:
            mx.out_proj.bias.copy_(noise(mx.out_proj.bias, 0.1))
        if gated_norm:
            mx.norm.weight.copy_(1.0 + noise(mx.norm.weight, 0.2))
        layer.norm.weight.copy_(1.0 + noise(layer.norm.weight, 0.2))
    bb.norm_f.weight.copy_(1.0 + noise(bb.norm_f.weight, 0.2))
    if not model.config.tie_word_embeddings:
        model.lm_head.weight.copy_(noise(model.lm_head.weight, 0.1))


# ------------------------------------------------------ float64 reference

def rmsnorm_in_input_dtype(mod, hs):
    """RMSNorm.forward computed in the input's dtype (transformers' casts
    to float32)."""
    var = hs.pow(2).mean(-1, keepdim=True)
    return mod.weight * (hs * torch.rsqrt(var + mod.variance_epsilon))


class Float64Exact:
    """Makes transformers' Mamba torch path keep float64 tensors in float64:
    Tensor.float is the identity on float64, each (class, forward) of
    norm_forwards replaces that norm class's forward, and every block's
    residual_in_fp32 is turned off.  Restores everything on exit."""

    def __init__(self, model, norm_forwards):
        self.model = model
        self.norm_forwards = list(norm_forwards)

    def __enter__(self):
        self.orig_float = torch.Tensor.float
        orig_float = self.orig_float

        def float_keep_f64(t, *a, **k):
            if t.dtype == torch.float64:
                return t
            return orig_float(t, *a, **k)

        torch.Tensor.float = float_keep_f64
        self.orig_norms = [(cls, cls.forward) for cls, _ in self.norm_forwards]
        for cls, forward in self.norm_forwards:
            cls.forward = forward
        self.saved_res = [blk.residual_in_fp32 for blk in self.model.backbone.layers]
        for blk in self.model.backbone.layers:
            blk.residual_in_fp32 = False
        return self

    def __exit__(self, *exc):
        torch.Tensor.float = self.orig_float
        for cls, forward in self.orig_norms:
            cls.forward = forward
        for blk, r in zip(self.model.backbone.layers, self.saved_res):
            blk.residual_in_fp32 = r
        return False


@torch.no_grad()
def hf_logits(model_cls, norm_forwards, model_dir, ids, exact):
    """Logits [B, L, V] (float64 NumPy) of the checkpoint in model_dir loaded
    with dtype float64; exact: inside Float64Exact(model, norm_forwards)."""
    model = model_cls.from_pretrained(model_dir, dtype=torch.float64)
    model.eval()
    assert model.dtype == torch.float64
    x = torch.from_numpy(ids.astype(np.int64))
    if exact:
        with Float64Exact(model, norm_forwards):
            out = model(input_ids=x, use_cache=False).logits
        assert out.dtype == torch.float64
    else:
        out = model(input_ids=x, use_cache=False).logits
    return out.double().numpy()


# ------------------------------------- independent NumPy forward (checking)

def softplus(v):
    # torch.nn.functional.softplus(v, beta=1, threshold=20)
    return np.where(v > 20.0, v, np.log1p(np.exp(np.minimum(v, 20.0))))


def silu(v):
    return v / (1.0 + np.exp(-v))


def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


# ------------------------------------------------------------------ files

def random_ids(seed, vocab, batch, length):
    """int32 [batch, length] ids in [0, vocab) from torch's generator
    (seed); the first is 0 and the last vocab - 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g).numpy()
    ids = ids.astype(np.int32)
    ids[0, 0] = 0
    ids[-1, -1] = vocab - 1
    return ids


def drop_generation_config(model_dir):
    """save_pretrained's generation_config.json is not part of what the
    library reads."""
    p = os.path.join(model_dir, "generation_config.json")
    if os.path.exists(p):
        os.remove(p)


def save_reference(final, ids, logits, meta):
    """final/reference.safetensors (input_ids, logits_f64, metadata), every
    file of final made 0644 (save_file creates 0600 files); returns the
    directory's size in bytes."""
    np_save_file({"input_ids": np.ascontiguousarray(ids),
                  "logits_f64": np.ascontiguousarray(logits.astype(np.float64))},
                 os.path.join(final, "reference.safetensors"), metadata=meta)
    for f in os.listdir(final):
        os.chmod(os.path.join(final, f), 0o644)
    return sum(os.path.getsize(os.path.join(final, f)) for f in os.listdir(final))


def parse_args(doc):
    """--out (default test/data/fixtures), created; torch deterministic and
    single-threaded."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "test", "data", "fixtures"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    return args
