#!/usr/bin/env python3
"""Write the small Falcon-Mamba reference checkpoints under test/data/fixtures/.

Each fixture is a random Falcon-Mamba model written by Hugging Face
transformers (FalconMambaConfig / FalconMambaForCausalLM / save_pretrained,
safetensors) plus a reference.safetensors exactly like the Mamba-1
fixtures of scripts/make_fixtures.py (input_ids int32 [B, L], logits_f64
float64 [B, L, V] of the saved checkpoint loaded back in float64, and the
same metadata).

Falcon-Mamba is Mamba-1 with dt_low, B and C each normalised by their root
mean square (no weight, config mixer_rms_eps) after x_proj.  transformers
computes those norms (FalconMambaWeightlessRMSNorm) with .float(), which
fixture_common.Float64Exact makes the identity on float64; its layer
RMSNorm (FalconMambaRMSNorm) casts with .to(torch.float32) and is replaced
while logits_f64 is computed, like MambaRMSNorm.  The two checks of
make_fixtures.py guard the result: the unpatched transformers run agrees to
~1e-5 of the logit scale, and the float64 NumPy forward of make_fixtures.py
(with its mixer_rms_eps step) to ~1e-11.

mixer_rms_eps is set to 1e-3 in the fixtures (transformers' default 1e-6)
so that an implementation that ignores or misplaces it is seen: B and C
have only a few entries, so their mean square is ~1e-2..1.

Usage:  python3 scripts/make_fixtures_falcon.py [--out test/data/fixtures]
Needs torch, transformers (with models/falcon_mamba), numpy, safetensors.
"""

import os
import shutil
import sys

import numpy as np
import torch
from transformers import FalconMambaConfig, FalconMambaForCausalLM
from transformers.models.falcon_mamba import modeling_falcon_mamba

import fixture_common as fc
import make_fixtures as m1

SEED = 20261207
GENERATOR = "scripts/make_fixtures_falcon.py"

BASE = dict(m1.BASE)
BASE.update(mixer_rms_eps=1e-3)

FIXTURES = [
    dict(name="fm-odd-f32",
         doc="odd shapes, tied head: d=36 E=72 N=6 R=3 K=3, 3 layers, V=83; no in/out bias, "
             "conv bias; mixer_rms_eps 1e-3",
         config=dict(vocab_size=83, hidden_size=36, state_size=6, time_step_rank=3,
                     conv_kernel=3, num_hidden_layers=3, tie_word_embeddings=True,
                     use_bias=False, use_conv_bias=True),
         dtype="float32", batch=2, length=21),
    dict(name="fm-bias-f32",
         doc="untied lm_head, use_bias=true (in_proj/out_proj bias), use_conv_bias=false; "
             "d=44 E=88 N=10 R=5 K=4, 2 layers, V=71; mixer_rms_eps 1e-3",
         config=dict(vocab_size=71, hidden_size=44, state_size=10, time_step_rank=5,
                     conv_kernel=4, num_hidden_layers=2, tie_word_embeddings=False,
                     use_bias=True, use_conv_bias=False),
         dtype="float32", batch=3, length=19),
    dict(name="fm-eq-f32",
         doc="mixer_rms_eps = layer_norm_epsilon = 1e-5: llama.cpp's GGUF form keeps one "
             "epsilon for both (fixtures/gguf/fm-eq-f32.gguf); d=32 E=64 N=4 R=2 K=4, "
             "2 layers, V=61, tied head, no biases",
         config=dict(vocab_size=61, hidden_size=32, state_size=4, time_step_rank=2,
                     conv_kernel=4, num_hidden_layers=2, tie_word_embeddings=True,
                     use_bias=False, use_conv_bias=False, mixer_rms_eps=1e-5,
                     layer_norm_epsilon=1e-5),
         dtype="float32", batch=2, length=17),
]

NORM_FORWARDS = [(modeling_falcon_mamba.FalconMambaRMSNorm, fc.rmsnorm_in_input_dtype)]


def hf_logits(model_dir, ids, exact):
    return fc.hf_logits(FalconMambaForCausalLM, NORM_FORWARDS, model_dir, ids, exact)


def make_one(spec, index, out_root):
    seed = SEED + 1000 * index
    torch.manual_seed(seed)
    config, fields = fc.make_config(FalconMambaConfig, BASE, spec)
    model = FalconMambaForCausalLM(config)
    model.eval()
    fc.perturb(model, torch.Generator().manual_seed(seed + 1), dt_bias="dt_proj.bias")
    assert model.config.use_bias == fields["use_bias"]
    assert model.config.use_conv_bias == fields["use_conv_bias"]

    final = os.path.join(out_root, spec["name"])
    if os.path.exists(final):
        shutil.rmtree(final)
    model.to(getattr(torch, spec["dtype"])).save_pretrained(final)
    fc.drop_generation_config(final)
    m1.check_saved_config(final, fields, False)

    ids = fc.random_ids(seed + 2, fields["vocab_size"], spec["batch"], spec["length"])
    logits, _, hp, scale, d_np, d_hf = m1.checked_logits(hf_logits, spec, final, model, fields, ids)
    # The normalisation matters: the forward without it is far away.
    hp_plain = dict(hp)
    hp_plain.pop("mixer_rms_eps")
    d_plain = float(np.abs(m1.numpy_forward(m1.load_dir_tensors(final), hp_plain, ids)
                           - logits).max())
    assert d_plain > 1e-2 * scale, (spec["name"], d_plain)

    meta = m1.reference_meta(GENERATOR, spec, seed, scale, d_hf, d_np)
    meta["max_abs_diff_without_bcdt_norm"] = repr(d_plain)
    size = fc.save_reference(final, ids, logits, meta)
    print("%-16s ids %s logits %s |max| %.3f  d(hf as-is) %.2e  d(numpy) %.2e  "
          "d(no norm) %.2e  %d bytes"
          % (spec["name"], ids.shape, logits.shape, scale, d_hf, d_np, d_plain, size))
    assert size < 200 * 1024, size
    return size


def main():
    args = fc.parse_args(__doc__)
    total = 0
    for i, spec in enumerate(FIXTURES):
        total += make_one(spec, i, args.out)
    print("total %d bytes in %s" % (total, os.path.normpath(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
