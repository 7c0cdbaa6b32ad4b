#!/usr/bin/env python3
"""transformers' MambaForCausalLM on the same random 130m-shape bf16 model
shape as bench_e2e, for a side-by-side row in scripts/gpu_check.sh.

Without mamba_ssm / causal_conv1d installed, transformers runs its torch
path (a Python loop over tokens): prefill is measured at 2k tokens only.
Decode rate = 32 new tokens / (generate(33 new) - generate(1 new)), greedy,
after a 128-token prompt, batch 1 and 16.
"""
import sys
import time

import torch
from transformers import MambaConfig, MambaForCausalLM


def timed(fn, reps=1):
    best = None
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best


def main():
    torch.manual_seed(0)
    cfg = MambaConfig(hidden_size=768, intermediate_size=1536, state_size=16, num_hidden_layers=24,
                      vocab_size=50280, time_step_rank=48, conv_kernel=4, use_bias=False,
                      use_conv_bias=True, tie_word_embeddings=True)
    model = MambaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name()}")
    rows = []
    with torch.no_grad():
        ids = torch.randint(0, 50277, (1, 2048), device="cuda")
        model(ids[:, :64], logits_to_keep=1)  # warm-up
        t = timed(lambda: model(ids, logits_to_keep=1))
        rows.append(("130m", "prefill 2k (HF torch path)", 2048 / t, "tok/s"))
        print(rows[-1], flush=True)
        for b in (1, 16):
            p = torch.randint(0, 50277, (b, 128), device="cuda")
            kw = dict(do_sample=False, pad_token_id=0)
            model.generate(p, max_new_tokens=2, min_new_tokens=2, **kw)  # warm-up
            t1 = timed(lambda: model.generate(p, max_new_tokens=1, min_new_tokens=1, **kw))
            t33 = timed(lambda: model.generate(p, max_new_tokens=33, min_new_tokens=33, **kw))
            rows.append(("130m", f"decode batch {b} (HF)", b * 32 / max(t33 - t1, 1e-9), "tok/s"))
            print(rows[-1], flush=True)
    for r in rows:
        print(f"HF {r[0]:<6} {r[1]:<28} {r[2]:12.0f} {r[3]:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
