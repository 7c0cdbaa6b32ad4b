#!/usr/bin/env python3
"""Write test/data/fixtures/gguf/: GGUF files of the committed safetensors
fixtures, in the names, layouts and metadata llama.cpp's
convert_hf_to_gguf.py (MambaModel, Mamba2Model) gives them, and the seed
corpus of the GGUF fuzz target (fuzz/corpus/gguf/).

The files are written with the `gguf` package's GGUFWriter (llama.cpp's
gguf-py, not ours); the conversion itself is redone here with NumPy only,
following the converter:

  - names: backbone.embeddings -> token_embd, backbone.norm_f ->
    output_norm, lm_head -> output (dropped when equal to the embedding:
    the tied fixtures have none), backbone.layers.N.norm ->
    blk.N.attn_norm, mixer.in_proj -> blk.N.ssm_in, conv1d -> ssm_conv1d,
    x_proj -> ssm_x, dt_proj -> ssm_dt (Mamba-2's dt_bias is renamed
    dt_proj.bias first), A_log -> ssm_a, D -> ssm_d, norm -> ssm_norm,
    out_proj -> ssm_out (.weight / .bias kept)
  - A_log -> A = -exp(A_log) (here in float64, rounded once to float32:
    the correctly rounded value; torch.exp in float32 may differ by an ulp)
  - conv1d weight [C, 1, K] squeezed to [C, K]; Mamba-2: A and D reshaped
    to [H, 1], the gated-norm weight to [n_groups, d_inner / n_groups]
  - BF16 / F16 sources become float32 first; then the output type
    (--outtype f32 / f16 / bf16, or q8_0 for m1-tiny-q8_0.gguf: see
    Converter.out_type): 1-D tensors, *_norm.weight, ssm_conv1d
    and every tensor whose name does not end in ".weight" stay F32, the
    other matrices take the output type
  - metadata: general.architecture, general.name, <arch>.context_length
    2^20, embedding_length, feed_forward_length 0, attention.head_count 0,
    block_count, ssm.conv_kernel / inner_size / state_size /
    time_step_rank (Mamba-2: the number of heads), ssm.group_count
    (Mamba-2), ssm.dt_b_c_rms (Mamba-1: false; true for Falcon-Mamba, whose
    fm-eq-f32 fixture has mixer_rms_eps equal to the layer norm epsilon),
    attention.layer_norm_rms_epsilon, general.file_type,
    general.quantization_version
  - tokenizer (m1-tok only, _set_vocab_gpt2): tokenizer.ggml.model "gpt2",
    pre "mpt" (the converter's name for the GPT-NeoX-20b tokenizer family,
    which this one imitates: NFC, no prefix space), the token list padded
    to the model's vocabulary with "[PAD<id>]" (type UNUSED), token types
    (NORMAL, CONTROL for special added tokens), merges; bos/eos/unk ids set
    to <|endoftext|> as GPT-NeoX's tokenizer_config.json has them

Usage:  /tmp/gguf-venv/bin/python scripts/make_fixture_gguf.py
        (python3 -m venv /tmp/gguf-venv && /tmp/gguf-venv/bin/pip install
         gguf numpy; written with gguf 0.19.0, numpy 2.4.6)

Deterministic: the same bytes on every run.  The tests read the committed
files and never need the gguf package.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make_fixture_gguf.py: needs the gguf package (pip install gguf)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "test", "data", "fixtures")

T = gguf.GGMLQuantizationType


def read_safetensors(path):
    """name -> float32 array (BF16 / F16 widened exactly), by hand: NumPy
    has no bfloat16."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    data = raw[8 + hlen:]
    out, dtypes = {}, {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        buf = data[b:en]
        if e["dtype"] == "F32":
            a = np.frombuffer(buf, dtype="<f4").astype(np.float32)
        elif e["dtype"] == "F16":
            a = np.frombuffer(buf, dtype="<f2").astype(np.float32)
        elif e["dtype"] == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: {name} has dtype {e['dtype']}")
        out[name] = a.reshape(e["shape"])
        dtypes[name] = e["dtype"]
    return out, dtypes


def bf16_bits(a):
    """float32 -> bfloat16 bits, round to nearest even (gguf.quants'
    rule); exact for values that came from BF16."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def neg_exp(a_log):
    return (-np.exp(a_log.astype(np.float64))).astype(np.float32)


class Converter:
    def __init__(self, fixture, arch, outtype):
        self.dir = os.path.join(FIXTURES, fixture)
        with open(os.path.join(self.dir, "config.json")) as f:
            self.cfg = json.load(f)
        self.arch = arch
        self.outtype = outtype
        self.tensors, self.src_dtypes = read_safetensors(os.path.join(self.dir, "model.safetensors"))

    # -- tensors ---------------------------------------------------------
    def out_type(self, gguf_name, hf_name, data):
        if data.ndim <= 1 or gguf_name.endswith("_norm.weight"):
            return T.F32
        if ".ssm_conv1d." in gguf_name or not hf_name.endswith(".weight"):
            return T.F32
        if self.outtype == "q8_0":
            # The matrices LM_WEIGHTS_Q8_0 quantises (in_proj, x_proj,
            # out_proj, an untied output) when their rows are whole blocks;
            # the rest F32, so the file and the safetensors fixture loaded
            # with LM_WEIGHTS_Q8_0 differ only in how each quantiser rounds.
            # (llama.cpp's converter would quantise token_embd as well and
            # write dt_proj, whose rows of 2 are no whole block, as F16.)
            linear = (".ssm_in.", ".ssm_x.", ".ssm_out.")
            if (any(k in gguf_name for k in linear) or gguf_name == "output.weight") \
                    and data.ndim == 2 and data.shape[1] % 32 == 0:
                return T.Q8_0
            return T.F32
        return {"f32": T.F32, "f16": T.F16, "bf16": T.BF16}[self.outtype]

    def map_name(self, name):
        if name in ("backbone.embeddings.weight", "backbone.embedding.weight"):
            return "token_embd.weight"
        if name == "backbone.norm_f.weight":
            return "output_norm.weight"
        if name == "lm_head.weight":
            return "output.weight"
        parts = name.split(".")
        assert parts[0] == "backbone" and parts[1] == "layers", name
        bid = int(parts[2])
        if parts[3] == "norm":
            return f"blk.{bid}.attn_norm.{parts[4]}"
        assert parts[3] == "mixer", name
        mod, rest = parts[4], parts[5:]
        base = {"in_proj": "ssm_in", "conv1d": "ssm_conv1d", "x_proj": "ssm_x", "dt_proj": "ssm_dt",
                "A_log": "ssm_a", "D": "ssm_d", "norm": "ssm_norm", "out_proj": "ssm_out"}[mod]
        return ".".join([f"blk.{bid}.{base}"] + rest)

    def converted(self):
        """(gguf name, hf name, float32 array) in the checkpoint's order."""
        out = []
        emb = None
        for name, data in self.tensors.items():
            if self.arch == "mamba2" and name.endswith(".dt_bias"):
                name = name[: -len(".dt_bias")] + ".dt_proj.bias"
            new = self.map_name(name)
            if name.endswith(".A_log"):
                data = neg_exp(data)
            if ".ssm_conv1d.weight" in new:
                data = data.squeeze()
            if self.arch == "mamba2":
                if new.endswith(".ssm_a") or new.endswith(".ssm_d"):
                    data = data.reshape(data.shape + (1,))
                elif new.endswith(".ssm_norm.weight"):
                    g = self.n_group
                    data = data.reshape(g, data.shape[0] // g)
            if new == "token_embd.weight":
                emb = data
            if new == "output.weight" and emb is not None and np.array_equal(emb, data):
                continue
            out.append((new, name, data))
        return out

    # -- metadata --------------------------------------------------------
    def hparams(self, w):
        c = self.cfg
        d_model = c["hidden_size"]
        d_conv = c.get("conv_kernel", 4)
        eps = c.get("layer_norm_epsilon", 1e-5)
        w.add_context_length(2 ** 20)
        w.add_embedding_length(d_model)
        w.add_feed_forward_length(0)
        w.add_head_count(0)
        w.add_block_count(c["num_hidden_layers"])
        w.add_ssm_conv_kernel(d_conv)
        if self.arch == "mamba":
            d_inner = c.get("intermediate_size") or 2 * d_model
            d_state = c.get("state_size", 16)
            dt_rank = c.get("time_step_rank")
            if dt_rank in (None, "auto"):
                dt_rank = -(d_model // -16)
            assert d_inner == 2 * d_model
            w.add_ssm_inner_size(d_inner)
            w.add_ssm_state_size(d_state)
            w.add_ssm_time_step_rank(dt_rank)
            w.add_layer_norm_rms_eps(eps)
            # Falcon-Mamba (FalconMambaModel in the converter): RMSNorm of
            # dt, B and C, which llama.cpp computes with the layer norm
            # epsilon: only a config with mixer_rms_eps equal to it has an
            # exact GGUF form.
            falcon = c.get("model_type") == "falcon_mamba"
            assert not falcon or c["mixer_rms_eps"] == eps, (c["mixer_rms_eps"], eps)
            w.add_ssm_dt_b_c_rms(falcon)
        else:
            d_inner = c.get("intermediate_size") or 2 * d_model
            head_dim = c.get("head_dim", 64)
            assert d_inner == 2 * d_model and d_inner % head_dim == 0
            w.add_ssm_inner_size(d_inner)
            w.add_ssm_state_size(c.get("state_size", 128))
            w.add_ssm_time_step_rank(d_inner // head_dim)
            w.add_ssm_group_count(self.n_group)
            w.add_layer_norm_rms_eps(eps)

    @property
    def n_group(self):
        return self.cfg.get("n_groups", 1)

    def vocab_size(self):
        v = self.cfg["vocab_size"]
        pad = self.cfg.get("pad_vocab_size_multiple", 8 if self.arch == "mamba" else 16)
        return -(v // -pad) * pad

    def tokenizer(self, w):
        """_set_vocab_gpt2 / get_vocab_base on this directory's tokenizer.json."""
        with open(os.path.join(self.dir, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        vocab = dict(tj["model"]["vocab"])
        added = {a["content"]: a for a in tj.get("added_tokens", [])}
        for a in added.values():
            vocab.setdefault(a["content"], a["id"])
        reverse = {i: t for t, i in vocab.items()}
        n = self.vocab_size()
        assert max(reverse) < n
        tokens, types = [], []
        for i in range(n):
            if i not in reverse:
                tokens.append(f"[PAD{i}]")
                types.append(gguf.TokenType.UNUSED)
            elif reverse[i] in added:
                tokens.append(reverse[i])
                a = added[reverse[i]]
                special = a.get("special") or (reverse[i].startswith("<|") and reverse[i].endswith("|>"))
                types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
            else:
                tokens.append(reverse[i])
                types.append(gguf.TokenType.NORMAL)
        merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("mpt")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        eot = vocab["<|endoftext|>"]
        w.add_bos_token_id(eot)
        w.add_eos_token_id(eot)
        w.add_unk_token_id(eot)

    def write(self, path, name):
        w = gguf.GGUFWriter(path, self.arch)
        w.add_name(name)
        self.hparams(w)
        ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[self.outtype]
        w.add_file_type(ftype)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if os.path.exists(os.path.join(self.dir, "tokenizer.json")):
            self.tokenizer(w)
        for new, hf, data in self.converted():
            t = self.out_type(new, hf, data)
            if t == T.F32:
                w.add_tensor(new, np.ascontiguousarray(data, dtype=np.float32))
            elif t == T.Q8_0:
                # gguf-py's own quantiser (ggml's quantize_row_q8_0_ref, bit
                # for bit): d = max|w| / 127 in float32 stored as float16,
                # q = round-half-away(w * (1 / d)) with the float32 d.
                q = gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), T.Q8_0)
                w.add_tensor(new, q, raw_dtype=T.Q8_0)  # byte shape: [rows][cols / 32 * 34]
            elif t == T.F16:
                w.add_tensor(new, data.astype(np.float16))  # round to nearest even
            else:
                w.add_tensor(new, bf16_bits(data), raw_shape=data.shape, raw_dtype=T.BF16)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


# (fixture, architecture, output type, file)
FILES = [
    ("m1-tiny-f32", "mamba", "f32", "m1-tiny-f32.gguf"),
    ("m1-odd-f32", "mamba", "f32", "m1-odd-f32.gguf"),
    ("m1-bf16", "mamba", "bf16", "m1-bf16.gguf"),
    ("m1-tiny-f32", "mamba", "f16", "m1-tiny-f16.gguf"),
    ("m1-tiny-f32", "mamba", "q8_0", "m1-tiny-q8_0.gguf"),
    ("m2-tiny-f32", "mamba2", "f32", "m2-tiny-f32.gguf"),
    ("m2-groups-f32", "mamba2", "f32", "m2-groups-f32.gguf"),
    ("m2-bf16", "mamba2", "bf16", "m2-bf16.gguf"),
    ("m1-tok", "mamba", "f32", "m1-tok.gguf"),
    ("fm-eq-f32", "mamba", "f32", "fm-eq-f32.gguf"),
]


# ---- fuzz seeds: tiny random models and a file of every value type -------

def tiny_model(path, arch, tokenizer, q8=False):
    """q8: d_model 32 and the embedding, ssm_in, ssm_x and ssm_out as Q8_0
    (gguf-py's quantiser), the one seed with a block type."""
    rng = np.random.default_rng(20261207 + (arch == "mamba2") + 2 * q8)
    r = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.5  # noqa: E731
    d, e, n, k, v = (32, 32, 2, 2, 8) if q8 else (4, 8, 2, 2, 8)
    q8_names = ("token_embd.weight", "blk.0.ssm_in.weight", "blk.0.ssm_x.weight",
                "blk.0.ssm_out.weight") if q8 else ()
    w = gguf.GGUFWriter(path, arch)
    add = w.add_tensor

    def add_tensor(name, data):
        if name in q8_names:
            add(name, gguf.quants.quantize(data.astype(np.float32), T.Q8_0), raw_dtype=T.Q8_0)
        else:
            add(name, data)
    w.add_tensor = add_tensor
    w.add_embedding_length(d)
    w.add_block_count(1)
    w.add_ssm_conv_kernel(k)
    w.add_ssm_inner_size(e)
    w.add_ssm_state_size(n)
    w.add_layer_norm_rms_eps(1e-5)
    if arch == "mamba":
        w.add_ssm_time_step_rank(1)
        in_rows, conv = 2 * e, e
    else:
        h, g = 2, 1
        w.add_ssm_time_step_rank(h)
        w.add_ssm_group_count(g)
        in_rows, conv = 2 * e + 2 * g * n + h, e + 2 * g * n
    if tokenizer:
        toks = ["a", "b", "c", "Ġ", "ab", "Ġa", "<|endoftext|>", "[PAD7]"]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(toks)
        w.add_token_types([1, 1, 1, 1, 1, 1, 3, 5])
        w.add_token_merges(["a b", "Ġ a"])
        w.add_eos_token_id(6)
    w.add_tensor("token_embd.weight", r(v, d))
    w.add_tensor("output_norm.weight", 1 + r(d))
    w.add_tensor("blk.0.attn_norm.weight", 1 + r(d))
    w.add_tensor("blk.0.ssm_in.weight", r(in_rows, d))
    w.add_tensor("blk.0.ssm_conv1d.weight", r(conv, k))
    w.add_tensor("blk.0.ssm_conv1d.bias", r(conv))
    if arch == "mamba":
        w.add_tensor("blk.0.ssm_x.weight", r(1 + 2 * n, e))
        w.add_tensor("blk.0.ssm_dt.weight", r(e, 1))
        w.add_tensor("blk.0.ssm_dt.bias", r(e))
        w.add_tensor("blk.0.ssm_a", -np.exp(r(e, n)))
        w.add_tensor("blk.0.ssm_d", r(e))
    else:
        w.add_tensor("blk.0.ssm_dt.bias", r(h))
        w.add_tensor("blk.0.ssm_a", -np.exp(r(h, 1)))
        w.add_tensor("blk.0.ssm_d", r(h, 1))
        w.add_tensor("blk.0.ssm_norm.weight", 1 + r(g, e // g))
    w.add_tensor("blk.0.ssm_out.weight", r(d, e).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def all_types(path):
    w = gguf.GGUFWriter(path, "mamba")
    V = gguf.GGUFValueType
    w.add_key_value("t.u8", 200, V.UINT8)
    w.add_key_value("t.i8", -5, V.INT8)
    w.add_key_value("t.u16", 60000, V.UINT16)
    w.add_key_value("t.i16", -300, V.INT16)
    w.add_key_value("t.u32", 4000000000, V.UINT32)
    w.add_key_value("t.i32", -70000, V.INT32)
    w.add_key_value("t.f32", 0.5, V.FLOAT32)
    w.add_key_value("t.bool", True, V.BOOL)
    w.add_key_value("t.str", "h\xe9llo", V.STRING)
    w.add_key_value("t.u64", 2 ** 40, V.UINT64)
    w.add_key_value("t.i64", -(2 ** 40), V.INT64)
    w.add_key_value("t.f64", 1e-300, V.FLOAT64)
    w.add_key_value("t.arr_i32", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("t.arr_str", ["x", "", "yz"], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("t.arr_bool", [True, False], V.ARRAY, sub_type=V.BOOL)
    w.add_custom_alignment(64)
    w.add_tensor("x", np.arange(4, dtype=np.float32))
    w.add_tensor("y", np.zeros((0, 3), dtype=np.float32))
    w.add_tensor("z", np.array([1, 2], dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(FIXTURES, "gguf"))
    ap.add_argument("--seeds", default=os.path.join(ROOT, "fuzz", "corpus", "gguf"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.seeds, exist_ok=True)
    for fixture, arch, outtype, fname in FILES:
        path = os.path.join(a.out, fname)
        Converter(fixture, arch, outtype).write(path, fixture)
        print(f"{path}: {os.path.getsize(path)} bytes")
    for fname, fn in [("tiny-m1.gguf", lambda p: tiny_model(p, "mamba", True)),
                      ("tiny-m2.gguf", lambda p: tiny_model(p, "mamba2", False)),
                      ("tiny-m1-q8_0.gguf", lambda p: tiny_model(p, "mamba", False, q8=True)),
                      ("all-types.gguf", all_types)]:
        path = os.path.join(a.seeds, fname)
        fn(path)
        print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
