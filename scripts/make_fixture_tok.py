#!/usr/bin/env python3
"""Write test/data/fixtures/m1-tok/: a tiny random Mamba-1 model that has a
tokenizer.json, for the command-line tests that feed text through a
model's tokenizer (`longmamba ppl/passkey/calibrate --text`).

    tokenizer.json     GPT-2 / GPT-NeoX style byte-level BPE: the 256 byte
                       tokens (ids 0..255, id b = byte b in GPT-2's
                       bytes_to_unicode alphabet), the results of the MERGES
                       below (ids 256..), then "<|endoftext|>" (special)
    config.json        transformers MambaConfig fields the library reads
    model.safetensors  float32 weights, random (seeded), HF tensor names;
                       the vocabulary is the tokenizer's padded to a
                       multiple of 8, so the last rows are padding

No reference logits: the tests compare the tool with itself (text input
against the same ids given as --tokens, two runs, thread counts).  Needs
only Python 3 and NumPy; the safetensors file is written by hand (8-byte
little-endian header length, JSON header, raw data).  Deterministic: the
same bytes on every run.

Usage:  python3 scripts/make_fixture_tok.py [--out test/data/fixtures/m1-tok]
        python3 scripts/make_fixture_tok.py --hf-ids TEXT_FILE
                 also writes hf-ids.txt: the ids Hugging Face `tokenizers`
                 (pip) gives for TEXT_FILE's first 12,000 bytes with
                 "<|endoftext|>" written "<eot>" -- the document that
                 tools/longmamba/test_text_cli.sh compares `longmamba tokenize`
                 with (TEXT_FILE: data/moby-dick-ch1-19.txt)
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

SEED = 20261124 + 7000
GENERATOR = "scripts/make_fixture_tok.py"

# Merges in rank order, GPT-2 notation (Ġ is the space byte).  Each result
# becomes the next id; both halves are byte tokens or earlier results.
MERGES = [
    "Ġ t", "h e", "Ġ a", "i n", "Ġt he", "e r", "o n", "Ġ s", "r e", "a n",
    "Ġ w", "Ġ o", "e d", "Ġ b", "i s", "a t", "e n", "o u", "Ġ h", "n d",
    "Ġ m", "Ġ c", "Ġ f", "Ġ i", "in g", "Ġa nd", "Ġo f", "Ġt o", "l l", "Ġ I",
]
SPECIAL = "<|endoftext|>"

# Model shape: d_model, d_inner, d_state, dt_rank, d_conv, layers.
D, E, N, R, K, LAYERS = 16, 32, 4, 1, 4, 2


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def make_tokenizer():
    alphabet = bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    for m in MERGES:
        a, b = m.split(" ")
        assert a in vocab and b in vocab, m
        assert a + b not in vocab, m
        vocab[a + b] = len(vocab)
    special_id = len(vocab)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": special_id, "content": SPECIAL, "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": True}],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": byte_level,
        "post_processor": dict(byte_level, trim_offsets=False),
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": MERGES},
    }
    return tok, special_id + 1


def make_weights(vocab_size, rng):
    t = {}

    def normal(name, shape, scale, mean=0.0):
        t[name] = (mean + scale * rng.standard_normal(shape)).astype(np.float32)

    normal("backbone.embeddings.weight", (vocab_size, D), 0.3)
    for i in range(LAYERS):
        p = "backbone.layers.%d." % i
        normal(p + "norm.weight", (D,), 0.1, 1.0)
        normal(p + "mixer.in_proj.weight", (2 * E, D), 0.25)
        normal(p + "mixer.conv1d.weight", (E, 1, K), 0.3)
        normal(p + "mixer.conv1d.bias", (E,), 0.1)
        normal(p + "mixer.x_proj.weight", (R + 2 * N, E), 0.2)
        normal(p + "mixer.dt_proj.weight", (E, R), 0.3)
        normal(p + "mixer.dt_proj.bias", (E,), 0.5, -3.0)
        # A = -exp(A_log): decays from fast to very slow, so that the
        # calibration finds both local and global channels
        t[p + "mixer.A_log"] = rng.uniform(-4.0, 2.0, (E, N)).astype(np.float32)
        normal(p + "mixer.D", (E,), 0.3, 1.0)
        normal(p + "mixer.out_proj.weight", (D, E), 0.2)
    normal("backbone.norm_f.weight", (D,), 0.1, 1.0)
    return t


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blob = b""
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        data = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + blob)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "test", "data", "fixtures",
                                                  "m1-tok"))
    ap.add_argument("--hf-ids", metavar="TEXT_FILE")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    tok, n_ids = make_tokenizer()
    vocab_size = n_ids + (-n_ids) % 8
    assert vocab_size > n_ids  # some padding rows
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
        f.write("\n")

    cfg = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "hidden_size": D,
           "intermediate_size": E, "state_size": N, "time_step_rank": R, "conv_kernel": K,
           "expand": E // D, "num_hidden_layers": LAYERS, "vocab_size": vocab_size,
           "layer_norm_epsilon": 1e-5, "use_bias": False, "use_conv_bias": True,
           "residual_in_fp32": True, "tie_word_embeddings": True}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1, sort_keys=True)
        f.write("\n")

    rng = np.random.default_rng(SEED)
    meta = {"generator": GENERATOR, "seed": str(SEED), "format": "pt"}
    write_safetensors(os.path.join(args.out, "model.safetensors"),
                      make_weights(vocab_size, rng), meta)

    if args.hf_ids:
        from tokenizers import Tokenizer
        t = Tokenizer.from_file(os.path.join(args.out, "tokenizer.json"))
        doc = open(args.hf_ids, "rb").read()[:12000].replace(b"<|endoftext|>", b"<eot>")
        ids = t.encode(doc.decode("utf-8", "replace")).ids
        with open(os.path.join(args.out, "hf-ids.txt"), "w") as f:
            f.write(" ".join(map(str, ids)) + "\n")

    size = 0
    for fn in sorted(os.listdir(args.out)):
        p = os.path.join(args.out, fn)
        os.chmod(p, 0o644)
        size += os.path.getsize(p)
        print("%-20s %7d bytes" % (fn, os.path.getsize(p)))
    print("tokenizer ids %d, model vocabulary %d, total %d bytes" % (n_ids, vocab_size, size))
    assert size < 200 * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
