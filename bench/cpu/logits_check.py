#!/usr/bin/env python3
"""Logits of ours against llama.cpp on the same GGUF file, for a short prompt.

  logits_check.py LLAMA_EVAL_CALLBACK BENCH_FILE MODEL.gguf WORK_DIR [PROMPT]

llama.cpp's llama-eval-callback prints the prompt's token ids and every graph
tensor, abbreviated to its first and last 3 values per row plus the sum
(common/debug.cpp); its "result_output" tensor is the logits of the last
position.  bench_file --logits feeds the same token ids to our library and
writes every position's logits.  Compared: the 6 printed values (llama.cpp
prints them with 4 decimals) and the sum over the vocabulary.
"""
import os
import re
import subprocess
import sys


def main():
    ec, bf, model, work = sys.argv[1:5]
    prompt = sys.argv[5] if len(sys.argv) > 5 else "The quick brown fox jumps over the lazy dog because"
    out = subprocess.run([ec, "-m", model, "-p", prompt, "-t", "2"],
                         capture_output=True, text=True)
    text = out.stdout + out.stderr
    with open(os.path.join(work, "eval-callback.log"), "w") as f:
        f.write(text)
    lines = text.splitlines()
    toks = []
    for i, line in enumerate(lines):
        if "number of input tokens" in line:
            n = int(line.split("=")[1])
            toks = [int(x.split()[-1]) for x in lines[i + 1:i + 1 + n]]
            break
    if not toks:
        print("logits check: no token ids in llama-eval-callback's output (see eval-callback.log)")
        return 1
    # last "result_output" block
    start = max(i for i, line in enumerate(lines) if re.search(r"\bresult_output\b", line))
    vals, total = [], None
    for line in lines[start + 1:]:
        if "sum =" in line:
            total = float(line.split("=")[1])
            break
        vals += [float(v) for v in re.findall(r"-?\d+\.\d+", line)]
    tok_path = os.path.join(work, "logits-tokens.txt")
    with open(tok_path, "w") as f:
        f.write(" ".join(map(str, toks)) + "\n")
    ours_path = os.path.join(work, "logits-ours.txt")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2")
    subprocess.run([bf, model, "-t", "2", "--logits", tok_path, ours_path], check=True, env=env,
                   capture_output=True)
    with open(ours_path) as f:
        last = [float(x) for x in f.read().splitlines()[-1].split()]
    ours6 = last[:3] + last[-3:]
    diffs = [abs(a - b) for a, b in zip(vals[-6:], ours6)]
    print(f"logits check ({os.path.basename(model)}, {len(toks)} tokens {toks}, last position):")
    print(f"  llama.cpp first/last 3: {' '.join(f'{v:.4f}' for v in vals[-6:])}  sum {total:.4f}")
    print(f"  ours      first/last 3: {' '.join(f'{v:.4f}' for v in ours6)}  sum {sum(last):.4f}")
    print(f"  max |diff| of the 6 values {max(diffs):.2e} (llama.cpp prints 4 decimals); "
          f"max |logit| ours {max(abs(v) for v in last):.3f}; vocab ours {len(last)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
