#!/usr/bin/env bash
# test_cli.sh LONGMAMBA EMBED_MINIMAL FIXTURES_DIR [BUNDLED_MODEL_DIR]
# Exit codes and messages of the command-line tool, its safetensors reader
# on broken files, `check`/`info`/`generate` on every committed fixture
# that has a reference.safetensors, and a pass-key retrieval by the bundled
# trained model.
set -u
cli=$1
embed=$2
fixtures=$3
bundled=${4:-}
. "$(dirname "$0")/test_lib.sh"

# ---- usage and exit codes --------------------------------------------------
expect 2 "no arguments" -- "$cli"
expect 0 "--help" -- "$cli" --help
grep_out "usage: longmamba" "--help prints usage"
expect 2 "unknown command" -- "$cli" frobnicate
grep_out "unknown command 'frobnicate'" "unknown command is named"
expect 0 "version" -- "$cli" version
grep_out "^longmamba [0-9]*\.[0-9]*\.[0-9]*" "version line"
expect 2 "version with an argument" -- "$cli" version extra
expect 2 "info without a directory" -- "$cli" info
expect 2 "info with an unknown option" -- "$cli" info somewhere --bogus
grep_out "unknown option '--bogus'" "unknown option is named"
expect 2 "info with two directories" -- "$cli" info a b
expect 2 "bad --backend" -- "$cli" info somewhere --backend tpu
expect 2 "bad --threads" -- "$cli" info somewhere --threads 1x
expect 2 "--threads without value" -- "$cli" info somewhere --threads
expect 2 "bad --weights" -- "$cli" info somewhere --weights q4_0
grep_out "stored or q8_0" "--weights names its values"
expect 2 "check with one argument" -- "$cli" check somewhere
expect 2 "check with negative --tol" -- "$cli" check a b --tol -1
expect 2 "check with NaN --tol" -- "$cli" check a b --tol nan
expect 2 "check with zero --chunk" -- "$cli" check a b --chunk 0
expect 2 "generate without a prompt" -- "$cli" generate somewhere
expect 2 "generate with two prompts" -- "$cli" generate somewhere --prompt a --prompt-ids 1
expect 2 "generate with bad ids" -- "$cli" generate somewhere --prompt-ids "1 x 2"
expect 2 "generate with negative -n" -- "$cli" generate somewhere --prompt a -n -3
expect 2 "generate with --top-p 0" -- "$cli" generate somewhere --prompt a --top-p 0
expect 2 "generate --theta without --longmamba" -- "$cli" generate somewhere --prompt a --theta 0.001
expect 2 "generate with an empty prompt" -- "$cli" generate somewhere --prompt ""
expect 1 "info on a missing directory" -- "$cli" info "$tmp/no-such-model"
grep_out "cannot load model" "load failure message"
expect 1 "check with a missing reference" -- "$cli" check "$tmp/no-such-model" "$tmp/none.safetensors"
grep_out "cannot open" "missing reference message"

# ---- broken reference files: exit 1 with a message, never a crash ----------
"$py" - "$tmp" <<'EOF'
import json, struct, sys, os
d = sys.argv[1]
def st(name, header, data=b"", hlen=None, raw=None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(h) if hlen is None else hlen
    with open(os.path.join(d, name), "wb") as f:
        f.write(raw if raw is not None else struct.pack("<Q", n) + h + data)
ids = {"dtype": "I32", "shape": [1, 2], "data_offsets": [0, 8]}
lg = {"dtype": "F64", "shape": [1, 2, 3], "data_offsets": [8, 56]}
good_data = struct.pack("<2i", 1, 2) + struct.pack("<6d", *range(6))
st("empty.st", b"", raw=b"")
st("short.st", b"", raw=b"\x01\x02\x03")
st("hugelen.st", b"{}", hlen=1 << 62)
st("pastend.st", b"{}", hlen=100)
st("notjson.st", b"this is not json")
st("unterminated.st", b'{"input_ids": {"dtype": "I32')
st("trailing.st", b'{} xyz')
st("deep.st", b'{"__metadata__": ' + b"[" * 500 + b"]" * 500 + b"}")
st("offsets.st", {"input_ids": {"dtype": "I32", "shape": [1, 2], "data_offsets": [0, 800]}}, b"\0" * 8)
st("reversed.st", {"input_ids": {"dtype": "I32", "shape": [1, 2], "data_offsets": [8, 0]}}, b"\0" * 8)
st("sizemismatch.st", {"input_ids": {"dtype": "I32", "shape": [1, 3], "data_offsets": [0, 8]}}, b"\0" * 8)
st("negshape.st", {"input_ids": {"dtype": "I32", "shape": [-1, 2], "data_offsets": [0, 8]}}, b"\0" * 8)
st("bigshape.st", {"input_ids": {"dtype": "I32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 8]}}, b"\0" * 8)
st("baddtype.st", {"input_ids": {"dtype": "Q7", "shape": [1, 2], "data_offsets": [0, 8]}}, b"\0" * 8)
st("dup.st", b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}', b"\0")
st("missing.st", {"input_ids": ids}, good_data)
st("wrongdtype.st", {"input_ids": ids, "logits_f64": dict(lg, dtype="F32", data_offsets=[8, 32])}, good_data[:32])
st("wrongshape.st", {"input_ids": ids, "logits_f64": dict(lg, shape=[2, 1, 3])}, good_data)
st("negid.st", {"input_ids": ids, "logits_f64": lg}, struct.pack("<2i", -5, 2) + good_data[8:])
EOF
for f in empty short hugelen pastend notjson unterminated trailing deep offsets reversed sizemismatch \
         negshape bigshape baddtype dup missing wrongdtype wrongshape negid; do
    expect 1 "broken reference $f" -- "$cli" check "$tmp/no-such-model" "$tmp/$f.st"
    grep_out "reference" "broken reference $f is reported"
done

# Mutations of a valid file (byte flips, truncations, header-length edits):
# every one must give exit 1 with a message; a crash exits >= 128.
"$py" - "$tmp" <<'EOF'
import json, os, random, struct, sys
d = sys.argv[1]
rnd = random.Random(11)
hdr = json.dumps({"__metadata__": {"k": "v"},
                  "input_ids": {"dtype": "I32", "shape": [1, 2], "data_offsets": [0, 8]},
                  "logits_f64": {"dtype": "F64", "shape": [1, 2, 3], "data_offsets": [8, 56]}}).encode()
good = struct.pack("<Q", len(hdr)) + hdr + struct.pack("<2i", 1, 2) + struct.pack("<6d", *range(6))
for i in range(150):
    b = bytearray(good)
    kind = i % 3
    if kind == 0:
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
    elif kind == 1:
        b = b[:rnd.randrange(len(b))]
    else:
        b[rnd.randrange(8)] = rnd.randrange(256)
    open(os.path.join(d, "mut%03d.st" % i), "wb").write(bytes(b))
EOF
mut_bad=0
for f in "$tmp"/mut*.st; do
    "$cli" check "$tmp/no-such-model" "$f" >"$tmp/out" 2>&1
    rc=$?
    if [ "$rc" -ne 1 ] || [ ! -s "$tmp/out" ]; then
        mut_bad=$((mut_bad + 1))
        echo "    mutated file $(basename "$f"): exit $rc"
        tail -n 5 "$tmp/out" | sed 's/^/    | /'
    fi
done
if [ "$mut_bad" -eq 0 ]; then ok "150 mutated reference files rejected cleanly"; else bad "$mut_bad mutated files"; fi

# ---- committed fixtures ------------------------------------------------------
n_fix=0
for dir in "$fixtures"/*/; do
    dir=${dir%/}
    [ -f "$dir/reference.safetensors" ] || continue
    n_fix=$((n_fix + 1))
    name=$(basename "$dir")
    expect 0 "info $name" -- "$cli" info "$dir" --backend cpu
    grep_out "^fingerprint:  [0-9a-f]\{16\}$" "info $name prints a fingerprint"
    tol_args=()
    [ -f "$dir/check_tol" ] && tol_args=(--tol "$(cat "$dir/check_tol")")
    expect 0 "check $name" -- "$cli" check "$dir" "$dir/reference.safetensors" --backend cpu "${tol_args[@]}"
    if tail -n 1 "$tmp/out" | grep -q '^max_rel_err=[0-9]\.[0-9]\{3\}e[-+][0-9]*$'; then
        ok "check $name ends with max_rel_err ($(tail -n 1 "$tmp/out"))"
    else
        bad "check $name: last line is not max_rel_err=..."
        tail -n 5 "$tmp/out" | sed 's/^/    | /'
    fi
    # A tolerance nobody meets must fail: the comparison is real.
    expect 1 "check $name with --tol 1e-300" -- "$cli" check "$dir" "$dir/reference.safetensors" --backend cpu --tol 1e-300
    grep_out "^max_rel_err=" "check $name with --tol 1e-300 ran the comparison"
    # Chunked prefill agrees with the reference too.
    expect 0 "check $name --chunk 3" -- "$cli" check "$dir" "$dir/reference.safetensors" --backend cpu --chunk 3 "${tol_args[@]}"

    expect 0 "generate $name (ids)" -- "$cli" generate "$dir" --backend cpu --prompt-ids "1 2 3" -n 8 --seed 7
    if head -n 1 "$tmp/out" | grep -q '^1 2 3 |\( [0-9]\+\)\{8\}$'; then
        ok "generate $name prints 8 ids"
        cp "$tmp/out" "$tmp/gen1"
        expect 0 "generate $name again" -- "$cli" generate "$dir" --backend cpu --prompt-ids "1 2 3" -n 8 --seed 7
        if cmp -s <(head -n 1 "$tmp/gen1") <(head -n 1 "$tmp/out"); then ok "same seed, same tokens"; else bad "same seed gave different tokens"; fi
    else
        bad "generate $name output"; head -n 2 "$tmp/out" | sed 's/^/    | /'
    fi
    expect 1 "generate $name with an id past the vocabulary" -- "$cli" generate "$dir" --backend cpu --prompt-ids "1 2 999999" -n 2
    grep_out "outside the model's vocabulary" "out-of-vocabulary prompt id is named"
    expect 0 "generate $name greedy" -- "$cli" generate "$dir" --backend cpu --prompt-ids "1,2,3" -n 4 --temp 0

    # bytes '0'..'3' are ids 48..51, inside every fixture's vocabulary
    expect 0 "embed_minimal $name" -- "$embed" "$dir" "0123"
    if grep -q '^\([0-9]\+ \)\{15\}[0-9]\+$' "$tmp/out"; then ok "embed_minimal prints 16 ids"; else bad "embed_minimal output"; fi
    if [ "$name" = m1-tiny-f32 ]; then
        # 8-bit linear layers: near the reference, but not equal to it.
        # Storage of each weight group: F32 in place from the file, then the
        # linear layers as Q8_0 blocks the model allocated (in_proj: 2
        # layers x 128 rows x 1 block of 34 bytes), the rest still mapped.
        expect 0 "info $name (weight storage)" -- "$cli" info "$dir" --backend cpu
        grep_out "^  in_proj  *x2  *F32 mapped  *32768 bytes$" "info: in_proj F32, mapped, 32768 bytes"
        grep_out "^  embedding  *x1  *F32 mapped  *12288 bytes$" "info: embedding F32, mapped"
        grep_out "^  lm_head  *tied" "info: the tied head is not counted twice"
        grep_out "^  A  *x2  *F32 allocated  *8192 bytes$" "info: A is derived (allocated)"
        grep_out "^weights total:  92032 bytes (83840 mapped from the file, 8192 allocated)$" "info: F32 totals"
        expect 0 "info $name --weights q8_0" -- "$cli" info "$dir" --backend cpu --weights q8_0
        grep_out "^weights:      q8_0" "info names the Q8_0 format"
        grep_out "^  in_proj  *x2  *Q8_0 allocated  *8704 bytes$" "info: in_proj Q8_0, allocated, 8704 bytes"
        grep_out "^  x_proj  *x2  *Q8_0 allocated  *4624 bytes$" "info: x_proj Q8_0"
        grep_out "^  dt_proj  *x2  *F32 mapped  *1024 bytes$" "info: dt_proj stays F32"
        grep_out "^weights total:  43152 bytes (17280 mapped from the file, 25872 allocated)$" "info: Q8_0 totals"
        expect 0 "info $name --weights q8_0 --tensors" -- "$cli" info "$dir" --backend cpu --weights q8_0 --tensors
        grep_out "^  layer 1   out_proj  *Q8_0 allocated  *32 x 64  *2176 bytes$" "info --tensors lists layer 1's out_proj"
        grep_out "^  model     lm_head  *(the embedding's data)$" "info --tensors: tied head"
        expect 0 "check $name --weights q8_0 --tol 1e-2" -- "$cli" check "$dir" "$dir/reference.safetensors" --backend cpu --weights q8_0 --tol 1e-2
        expect 1 "check $name --weights q8_0 --tol 1e-5" -- "$cli" check "$dir" "$dir/reference.safetensors" --backend cpu --weights q8_0 --tol 1e-5
        expect 1 "generate text on a model without tokenizer" -- "$cli" generate "$dir" --prompt hi
        grep_out "use --prompt-ids" "no-tokenizer message"
        expect 1 "--bytes on a 96-row vocabulary" -- "$cli" generate "$dir" --prompt hi --bytes
        grep_out "at least 256" "--bytes vocabulary message"
        # LongMamba and DeciMamba sessions through generate.
        "$py" -c "import random; r = random.Random(1); print(' '.join(str(r.randrange(75)) for _ in range(800)))" >"$tmp/toks.txt"
        expect 0 "calibrate $name" -- "$cli" calibrate "$dir" --backend cpu --tokens "$tmp/toks.txt" -o "$tmp/calib.st" --window 200 --count 2
        long_ids=$(cut -d' ' -f1-400 "$tmp/toks.txt")
        expect 0 "generate --longmamba" -- "$cli" generate "$dir" --backend cpu --prompt-ids "$long_ids" -n 4 --longmamba "$tmp/calib.st" --theta 0.01 --scale 1.5
        expect 0 "generate --decimamba" -- "$cli" generate "$dir" --backend cpu --prompt-ids "$long_ids" -n 4 --decimamba
        expect 1 "generate --longmamba with a missing file" -- "$cli" generate "$dir" --backend cpu --prompt-ids "1 2" --longmamba "$tmp/none.st"
        grep_out "cannot load calibration" "missing calibration message"
        expect 1 "generate --longmamba with another model's calibration" -- "$cli" generate "$fixtures/m1-bias-f32" --backend cpu --prompt-ids "1 2" --longmamba "$tmp/calib.st"
        grep_out "cannot load calibration" "foreign calibration is refused"
    fi
done
echo "fixtures checked: $n_fix"

# ---- GGUF files of the fixtures (test/data/fixtures/gguf) --------------------
# Each holds the weights of the fixture of the same name (m1-tiny-f16: of
# m1-tiny-f32, rounded to F16), so `check` against that fixture's reference
# passes with the default tolerance.
n_gguf=0
for f in "$fixtures"/gguf/*.gguf; do
    [ -f "$f" ] || continue
    n_gguf=$((n_gguf + 1))
    name=$(basename "$f" .gguf)
    expect 0 "info $name.gguf" -- "$cli" info "$f" --backend cpu
    grep_out "^format:       GGUF$" "info $name.gguf says GGUF"
    grep_out "^fingerprint:  [0-9a-f]\{16\}$" "info $name.gguf prints a fingerprint"
    ref="$fixtures/$name/reference.safetensors"
    if [ -f "$ref" ]; then
        expect 0 "check $name.gguf against its fixture's reference" -- "$cli" check "$f" "$ref" --backend cpu
    fi
done
if [ -f "$fixtures/gguf/m1-tiny-f16.gguf" ]; then
    expect 0 "check m1-tiny-f16.gguf (F16 weights) at a 16-bit tolerance" -- "$cli" check "$fixtures/gguf/m1-tiny-f16.gguf" "$fixtures/m1-tiny-f32/reference.safetensors" --backend cpu --tol 1e-2
fi
if [ -f "$fixtures/gguf/m1-tiny-q8_0.gguf" ]; then
    # Q8_0 linear layers quantised by gguf-py, used in place: near the
    # fp32 reference, not equal to it.
    q8g="$fixtures/gguf/m1-tiny-q8_0.gguf"
    expect 0 "info m1-tiny-q8_0.gguf" -- "$cli" info "$q8g" --backend cpu
    grep_out "^  in_proj  *x2  *Q8_0 mapped  *8704 bytes$" "info: GGUF Q8_0 in_proj mapped from the file"
    grep_out "^weights total:  43152 bytes (43152 mapped from the file, 0 allocated)$" "info: a Q8_0 GGUF allocates no weight"
    expect 0 "check m1-tiny-q8_0.gguf --tol 1e-2" -- "$cli" check "$q8g" "$fixtures/m1-tiny-f32/reference.safetensors" --backend cpu --tol 1e-2
    expect 1 "check m1-tiny-q8_0.gguf --tol 1e-5" -- "$cli" check "$q8g" "$fixtures/m1-tiny-f32/reference.safetensors" --backend cpu --tol 1e-5
fi
if [ -f "$fixtures/gguf/m1-tok.gguf" ]; then
    expect 0 "info m1-tok.gguf" -- "$cli" info "$fixtures/gguf/m1-tok.gguf" --backend cpu
    grep_out "^tokenizer:    GGUF" "m1-tok.gguf reads text through its own tokenizer"
    txt='The whale, the whale! <|endoftext|> 1234 naïve'
    expect 0 "tokenize with tokenizer.json" -- "$cli" tokenize "$fixtures/m1-tok" --text "$txt"
    cp "$tmp/out" "$tmp/tok_json"
    expect 0 "tokenize with the GGUF tokenizer" -- "$cli" tokenize "$fixtures/gguf/m1-tok.gguf" --text "$txt"
    if cmp -s "$tmp/tok_json" "$tmp/out"; then ok "GGUF and tokenizer.json give the same ids"; else bad "GGUF and tokenizer.json ids differ"; fi
    expect 0 "generate from text on m1-tok.gguf" -- "$cli" generate "$fixtures/gguf/m1-tok.gguf" --backend cpu --prompt "The whale" -n 4 --seed 3
fi
expect 1 "generate text on a GGUF file without a tokenizer" -- "$cli" generate "$fixtures/gguf/m1-tiny-f32.gguf" --prompt hi
printf 'GGUF\003\000\000\000' >"$tmp/short.gguf"
expect 1 "info on a truncated GGUF file" -- "$cli" info "$tmp/short.gguf"
grep_out "truncated" "truncated GGUF message"
printf 'GGUX\003\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >"$tmp/magic.gguf"
expect 1 "info on a file with a bad magic" -- "$cli" info "$tmp/magic.gguf"
grep_out "bad magic" "bad magic message"
echo "GGUF files checked: $n_gguf"

# ---- a byte-level model: text in, bytes streamed out --------------------------
# Random weights (stdlib only), vocabulary 264 = 256 bytes + 8 padding rows,
# marked "byte_level" in config.json.
# make_model DIR VOCAB BYTE_LEVEL(0|1)
make_model() {
"$py" - "$@" <<'EOF2'
import json, os, random, struct, sys
d, V, byte_level = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
os.makedirs(d, exist_ok=True)
rnd = random.Random(5)
D, E, N, R, K = 16, 32, 4, 1, 4
t = {}
def w(name, shape, f):
    n = 1
    for x in shape: n *= x
    t[name] = (shape, [f() for _ in range(n)])
g = lambda s: (lambda: rnd.gauss(0, s))
w("backbone.embeddings.weight", [V, D], g(1.0))
w("backbone.norm_f.weight", [D], lambda: 1.0)
p = "backbone.layers.0."
w(p + "norm.weight", [D], lambda: 1.0)
w(p + "mixer.in_proj.weight", [2 * E, D], g(0.2))
w(p + "mixer.conv1d.weight", [E, 1, K], g(0.3))
w(p + "mixer.conv1d.bias", [E], g(0.1))
w(p + "mixer.x_proj.weight", [R + 2 * N, E], g(0.2))
w(p + "mixer.dt_proj.weight", [E, R], g(0.2))
w(p + "mixer.dt_proj.bias", [E], lambda: -3.0)
w(p + "mixer.A_log", [E, N], lambda: rnd.uniform(0.0, 2.5))
w(p + "mixer.D", [E], lambda: 1.0)
w(p + "mixer.out_proj.weight", [D, E], g(0.2))
hdr, blob = {}, b""
for name, (shape, vals) in t.items():
    data = struct.pack("<%df" % len(vals), *vals)
    hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
    blob += data
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(d, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + blob)
cfg = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "hidden_size": D,
       "intermediate_size": E, "state_size": N, "time_step_rank": R, "conv_kernel": K,
       "num_hidden_layers": 1, "vocab_size": V, "layer_norm_epsilon": 1e-5, "use_bias": False,
       "use_conv_bias": True, "residual_in_fp32": True, "tie_word_embeddings": True}
if byte_level:
    cfg["byte_level"] = True
with open(os.path.join(d, "config.json"), "w") as f:
    json.dump(cfg, f, indent=1)
EOF2
}
make_model "$tmp/bytes" 264 1
expect 0 "info on the byte-level model" -- "$cli" info "$tmp/bytes" --backend cpu
grep_out "^tokenizer:    bytes$" "config.json byte_level is detected"
if "$cli" generate "$tmp/bytes" --backend cpu --prompt "Hello, " -n 40 --seed 3 --top-k 50 \
        >"$tmp/gen.bin" 2>"$tmp/gen.err"; then
    # stdout: the prompt, 40 bytes, a newline
    if [ "$(head -c 7 "$tmp/gen.bin")" = "Hello, " ] && [ "$(wc -c <"$tmp/gen.bin")" -eq 48 ]; then
        ok "byte-level generate streams 40 bytes after the prompt"
    else
        bad "byte-level generate output ($(wc -c <"$tmp/gen.bin") bytes)"
    fi
    grep -q "tok/s" "$tmp/gen.err" && ok "generate reports speed on stderr" || bad "no speed line on stderr"
else
    bad "byte-level generate failed"
    sed 's/^/    | /' "$tmp/gen.err" | tail -n 5
fi
# Ids mode on the same model, hot sampling without nucleus cut.
expect 0 "byte-level model, ids mode, temp 2" -- "$cli" generate "$tmp/bytes" --backend cpu --prompt-ids "72 101" -n 64 --temp 2 --top-p 1

# ---- a model with a tokenizer.json: text in, decoded text streamed out -------
tokjson="$fixtures/../tokenizer/tiny-a.json"   # byte-level BPE, ids < 605
if [ -f "$tokjson" ]; then
    make_model "$tmp/bpe" 608 0
    cp "$tokjson" "$tmp/bpe/tokenizer.json"
    expect 0 "info on the BPE model" -- "$cli" info "$tmp/bpe" --backend cpu
    grep_out "^tokenizer:    tokenizer.json$" "tokenizer.json is detected"
    expect 0 "generate with a tokenizer" -- "$cli" generate "$tmp/bpe" --backend cpu --prompt "Hello world" -n 12 --seed 9
    if head -c 11 "$tmp/out" | grep -q "^Hello world$"; then ok "tokenizer generate echoes the prompt"; else bad "tokenizer generate output"; fi
    printf 'The quick brown fox' >"$tmp/prompt.txt"
    expect 0 "generate --prompt-file" -- "$cli" generate "$tmp/bpe" --backend cpu --prompt-file "$tmp/prompt.txt" -n 4 --temp 0
    if head -c 19 "$tmp/out" | grep -q "^The quick brown fox$"; then ok "prompt file is echoed"; else bad "prompt-file output"; fi
fi

# ---- the bundled trained model: pass-key retrieval inside its 2k context -----
# The model card reports 100% at 2,048 bytes; greedy decoding must print the
# key that the needle planted ~1.3k bytes before the question.
if [ -n "$bundled" ] && [ -f "$bundled/model.safetensors" ]; then
    "$py" - "$tmp/passkey.txt" <<'EOF3'
import sys
g = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
f = g * 20
needle = " The pass key is 68413. Remember it. 68413 is the pass key. "
open(sys.argv[1], "w").write(f[:600] + needle + f[600:1800] + "\nWhat is the pass key? The pass key is")
EOF3
    expect 0 "bundled model: pass-key prompt" -- "$cli" generate "$bundled" --backend cpu --prompt-file "$tmp/passkey.txt" -n 6 --temp 0
    if head -n 32 "$tmp/out" | grep -q "^What is the pass key? The pass key is 68413"; then
        ok "bundled model retrieves the pass key"
    else
        bad "bundled model did not retrieve the pass key"
        grep "^What is the pass key" "$tmp/out" | sed 's/^/    | /'
    fi
fi

finish
