#!/usr/bin/env python3
"""Writes the random mamba-130m-shaped Mamba-1 checkpoint (transformers
MambaForCausalLM, safetensors) in float32 for bench/cpu/llama_side_by_side.sh.

  write_checkpoint.py OUT_DIR

Same config, seed and initialisation as bench/gpu/bench_hf.py --write
(initializer_range 0.02, out_proj divided by sqrt(n_layer)), but saved in
float32 instead of bfloat16, so that llama.cpp's convert_hf_to_gguf.py can
write F32, F16 and Q8_0 GGUF files from it without a bf16 detour.  No
tokenizer files: the converter then writes its built-in GPT-NeoX vocabulary.
Needs torch and transformers.
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gpu"))
import bench_hf  # noqa: E402


@torch.no_grad()
def main():
    out = sys.argv[1]
    cfg, cls = bench_hf.make("mamba-130m")
    torch.manual_seed(bench_hf.SEED)
    model = cls(cfg)
    for layer in model.backbone.layers:
        layer.mixer.out_proj.weight.div_(math.sqrt(cfg.num_hidden_layers))
    model = model.to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)
    print(f"wrote {out} ({sum(p.numel() for p in model.parameters()):,} parameters, float32)")


if __name__ == "__main__":
    main()
