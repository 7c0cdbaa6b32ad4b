#!/usr/bin/env bash
# test_eval_cli.sh LONGMAMBA FIXTURES_DIR [BUNDLED_MODEL_DIR [TEXT_FILE]]
# `longmamba ppl` and `longmamba passkey`: option errors, the perplexity
# against one computed from the transformers float64 logits of a fixture,
# window placement, mode equivalences that must hold (LongMamba below its
# trigger and DeciMamba below L_base are vanilla) and the ones that must
# not (filtering / decimation change the numbers), and pass-key retrieval
# by the bundled byte-level model at a length it was trained on.
set -u
cli=$1
fixtures=$2
bundled=${3:-}
text=${4:-}
fx=$fixtures/m1-bf16
. "$(dirname "$0")/test_lib.sh"

# ---- inputs: the fixture's reference rows as token files, random tokens -------
"$py" - "$fx/reference.safetensors" "$tmp" <<'EOF' || bad "write the fixture's rows as token files"
import json, struct, sys
import numpy as np
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
def get(k, dt):
    o = h[k]["data_offsets"]
    return np.frombuffer(b[8 + n + o[0]:8 + n + o[1]], dtype=dt).reshape(h[k]["shape"])
ids = get("input_ids", np.int32)
lg = get("logits_f64", np.float64)
for r in range(ids.shape[0]):
    open(f"{sys.argv[2]}/row{r}.txt", "w").write(" ".join(map(str, ids[r])))
np.save(f"{sys.argv[2]}/ids.npy", ids)
np.save(f"{sys.argv[2]}/logits.npy", lg)
EOF
awk 'BEGIN { srand(7); for (i = 0; i < 3000; i++) printf "%d ", int(rand() * 128); print "" }' \
    >"$tmp/rand.txt"
head -c 20 "$tmp/rand.txt" | awk '{ print $1, $2, $3 }' >"$tmp/short.txt"

# ---- usage errors ------------------------------------------------------------
expect 0 "ppl --help" -- "$cli" ppl --help
expect 0 "passkey --help" -- "$cli" passkey --help
expect 2 "ppl without arguments" -- "$cli" ppl
expect 2 "ppl without --ctx" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt"
grep_err "ctx" "missing --ctx is named"
expect 2 "ppl without a document" -- "$cli" ppl "$fx" --ctx 32
expect 2 "ppl with a bad mode" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" --ctx 32 --mode fast
grep_err "mode" "bad mode is named"
expect 2 "ppl with a repeated mode" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" --ctx 32 \
    --mode vanilla,vanilla
expect 2 "longmamba mode without --calib" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" \
    --ctx 32 --mode longmamba
grep_err "calib" "missing calibration is named"
expect 2 "ppl with an unknown option" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" --ctx 32 --bogus
grep_err "unknown option '--bogus'" "unknown option is named"
expect 2 "ppl with a bad context list" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" --ctx 32,,64
expect 2 "ppl with a zero context" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" --ctx 0
expect 2 "--windows list not matching --ctx" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" \
    --ctx 32,64 --windows 1,2,3
expect 2 "--score-last longer than the context" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" \
    --ctx 32 --score-last 33
expect 2 "--theta 0" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" --ctx 32 --theta 0
expect 2 "--threads without value" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" --ctx 32 --threads
expect 1 "--text for a model without tokenizer or bytes" -- "$cli" ppl "$fx" --text "$0" \
    --ctx 32 --score-last 8
grep_err "tokenizer.json" "the refusal says why"
expect 1 "a document shorter than the context" -- "$cli" ppl "$fx" --tokens "$tmp/short.txt" \
    --ctx 32 --score-last 8
expect 1 "a token outside the vocabulary" -- "$cli" ppl "$fx" --tokens <(echo "1 2 128") \
    --ctx 2 --score-last 1
expect 1 "a missing calibration file" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" --ctx 32 \
    --score-last 8 --mode longmamba --calib "$tmp/none.safetensors"
expect 2 "passkey without --lengths" -- "$cli" passkey "$fx"
expect 2 "passkey depth above 1" -- "$cli" passkey "$fx" --lengths 64 --depths 0,1.5
expect 2 "passkey zero trials" -- "$cli" passkey "$fx" --lengths 64 --trials 0
expect 1 "passkey on a model that cannot read text" -- "$cli" passkey "$fx" --lengths 256
grep_err "tokenizer.json" "the passkey refusal says why"

# ---- perplexity against the float64 reference -------------------------------
# Row r of the fixture: one window of W = L-1 inputs per document, the last
# M = 10 predictions scored; ppl = exp(mean of the two rows' losses).
expect 0 "ppl on two documents, vanilla and decimamba" -- "$cli" ppl "$fx" \
    --tokens "$tmp/row0.txt" --tokens "$tmp/row1.txt" --ctx 39 --windows 1 --score-last 10 \
    --mode vanilla,decimamba --json
cp "$tmp/out" "$tmp/ref.json"
pycheck "ppl equals exp(mean CE) from the transformers float64 logits (rel 1e-5)" \
    "$tmp/ref.json" "$tmp" <<'EOF'
import json, sys
import numpy as np
res = json.load(open(sys.argv[1]))
ids = np.load(sys.argv[2] + "/ids.npy")
lg = np.load(sys.argv[2] + "/logits.npy")
W, M = 39, 10
losses = []
for r in range(2):
    l = lg[r]
    mx = l.max(1, keepdims=True)
    lse = np.log(np.exp(l - mx).sum(1)) + mx[:, 0]
    ce = lse[:-1] - l[np.arange(ids.shape[1] - 1), ids[r, 1:]]
    losses.append(ce[W - M:W].mean())
want = float(np.exp(np.mean(losses)))
assert res["score_last"] == 10 and len(res["documents"]) == 2
for row in res["results"]:
    # DeciMamba keeps everything here: L - R = 29 <= L_base 2000
    assert row["windows"] == 2, row
    got = row["ppl"]
    assert abs(got - want) <= 1e-5 * want, (row["mode"], got, want)
    for w, l in zip(row["window_nll"], losses):
        assert abs(w["nll"] - l) <= 1e-5 * abs(l), (w, l)
print("ppl", want)
EOF

# ---- window placement: stride max((len - W - 1) / N, 10), at most N -----------
expect 0 "ppl window placement" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" \
    --tokens <(head -c 300 "$tmp/rand.txt" | awk '{ for (i = 1; i < NF; i++) printf "%s ", $i }') \
    --ctx 39,2000 --windows 10,3 --score-last 5 --json
cp "$tmp/out" "$tmp/win.json"
pycheck "window starts follow the protocol" "$tmp/win.json" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))
n0, n1 = (d["tokens"] for d in res["documents"])
assert n0 == 3000 and 60 < n1 < 110, (n0, n1)
def starts(n, W, N):
    if n < W + 1:
        return []
    span = n - W - 1
    stride = max(span // N, 10)
    return [s for s in range(0, span + 1, stride)][:N]
for row, (W, N) in zip(res["results"], [(39, 10), (2000, 3)]):
    got = [(w["doc"], w["start"]) for w in row["window_nll"]]
    want = [(0, s) for s in starts(n0, W, N)] + [(1, s) for s in starts(n1, W, N)]
    assert got == want, (W, got, want)
    assert row["windows"] == len(want)
# short document: span < 10 * N, so the 10-token minimum stride decides
assert len(starts(n1, 39, 10)) < 10
print("ok")
EOF

expect 0 "ppl --align-end" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" \
    --tokens <(head -c 300 "$tmp/rand.txt" | awk '{ for (i = 1; i < NF; i++) printf "%s ", $i }') \
    --ctx 39,2000,100 --windows 3 --score-last 5 --align-end --json
cp "$tmp/out" "$tmp/align.json"
pycheck "--align-end: every context scores the same tokens" "$tmp/align.json" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))
assert res["align_end"] is True
n0 = res["documents"][0]["tokens"]
span = n0 - 2000 - 1
ends = [s + 2000 for s in range(0, span + 1, max(span // 3, 10))][:3]
for row in res["results"]:
    W = row["ctx"]
    # the short document cannot hold the longest context: it is skipped
    assert [(w["doc"], w["start"]) for w in row["window_nll"]] == [(0, e - W) for e in ends], row
print("ok")
EOF
expect 2 "--align-end with a --windows list" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" \
    --ctx 39,64 --windows 1,2 --align-end

# ---- modes: equivalences and differences -----------------------------------
expect 0 "calibrate the fixture" -- "$cli" calibrate "$fx" --tokens "$tmp/rand.txt" --window 16 \
    --count 8 -o "$tmp/cal.safetensors"
expect 0 "three modes, nothing filtered or dropped" -- "$cli" ppl "$fx" \
    --tokens "$tmp/rand.txt" --ctx 39,64 --windows 3 --score-last 10 \
    --mode vanilla,longmamba,decimamba --calib "$tmp/cal.safetensors" --trigger 1000 --json
cp "$tmp/out" "$tmp/same.json"
expect 0 "three modes, filtering and decimation on" -- "$cli" ppl "$fx" \
    --tokens "$tmp/rand.txt" --ctx 39,64 --windows 3 --score-last 10 \
    --mode vanilla,longmamba,decimamba --calib "$tmp/cal.safetensors" --trigger 20 --theta 0.5 \
    --deci-lbase 8 --deci-min 4 --json
cp "$tmp/out" "$tmp/diff.json"
pycheck "LongMamba below its trigger and DeciMamba below L_base equal vanilla" \
    "$tmp/same.json" <<'EOF'
import json, sys
r = {(x["mode"], x["ctx"]): x["ppl"] for x in json.load(open(sys.argv[1]))["results"]}
for W in (39, 64):
    v = r[("vanilla", W)]
    assert r[("longmamba", W)] == v and r[("decimamba", W)] == v, (W, r)
    assert 1.0 < v < 1000.0, v
print(r)
EOF
pycheck "filtering and decimation change the perplexity; vanilla is unchanged" \
    "$tmp/diff.json" "$tmp/same.json" <<'EOF'
import json, sys
r = {(x["mode"], x["ctx"]): x["ppl"] for x in json.load(open(sys.argv[1]))["results"]}
s = {(x["mode"], x["ctx"]): x["ppl"] for x in json.load(open(sys.argv[2]))["results"]}
for W in (39, 64):
    assert r[("vanilla", W)] == s[("vanilla", W)]
    for m in ("longmamba", "decimamba"):
        assert abs(r[(m, W)] / r[("vanilla", W)] - 1) > 1e-6, (m, W, r)
print(r)
EOF
expect 0 "table output" -- "$cli" ppl "$fx" --tokens "$tmp/rand.txt" --ctx 39 --windows 2 \
    --score-last 10 --mode vanilla,decimamba
if grep -Eq '^ +39 +2 +[0-9.]+ +[0-9.]+$' "$tmp/out" && grep -q "vanilla.*decimamba" "$tmp/out"; then
    ok "table has a row per context and a column per mode"
else
    bad "table layout"
    sed 's/^/    | /' "$tmp/out"
fi
if grep -q $'\r' "$tmp/err"; then bad "no progress bar when stderr is not a terminal"; else
    ok "no progress bar when stderr is not a terminal"
fi

# ---- the bundled byte-level model: text input, pass key ----------------------
if [ -n "$bundled" ] && [ -f "$bundled/model.safetensors" ]; then
    doc=${text:-$0}
    expect 2 "byte model: default --score-last 1000 exceeds ctx 512" -- "$cli" ppl "$bundled" \
        --text "$doc" --ctx 512 --windows 1
    expect 0 "byte model: ppl of English text" -- "$cli" ppl "$bundled" --text "$doc" --ctx 1024 \
        --windows 2 --score-last 200 --json
    cp "$tmp/out" "$tmp/byte.json"
    pycheck "byte model: bytes are tokens, per-byte ppl of English text is low" "$tmp/byte.json" \
        "$doc" <<'EOF'
import json, os, sys
res = json.load(open(sys.argv[1]))
assert res["documents"][0]["tokens"] == os.path.getsize(sys.argv[2])
assert res["score_last"] == 200 and res["vocab_size"] == 256
p = res["results"][0]["ppl"]
assert 1.5 < p < 12.0, p   # a uniform guess would be 256
print(p)
EOF
    expect 0 "byte model: pass key at 1,024 bytes" -- "$cli" passkey "$bundled" --lengths 1024 \
        --depths 0,0.5,1 --trials 2 --mode vanilla,decimamba --json
    cp "$tmp/out" "$tmp/pk.json"
    pycheck "byte model retrieves every pass key at 1,024; modes see the same keys" \
        "$tmp/pk.json" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))
v, d = res["results"]
assert v["mode"] == "vanilla" and v["accuracy"] == [[1.0, 1.0, 1.0]], v["accuracy"]
assert v["mean"] == 1.0
keys = [p["key"] for p in v["prompts"]]
assert keys == [p["key"] for p in d["prompts"]] and len(set(keys)) == 6
for p in v["prompts"]:
    assert p["answer"].strip().startswith(p["key"]) and p["correct"]
print("ok")
EOF
    expect 0 "byte model: a different seed gives other keys" -- "$cli" passkey "$bundled" \
        --lengths 256 --depths 0.5 --trials 2 --seed 99 --json
    cp "$tmp/out" "$tmp/pk2.json"
    pycheck "seeded keys" "$tmp/pk.json" "$tmp/pk2.json" <<'EOF'
import json, sys
a = {p["key"] for p in json.load(open(sys.argv[1]))["results"][0]["prompts"]}
b = {p["key"] for p in json.load(open(sys.argv[2]))["results"][0]["prompts"]}
assert not (a & b), (a, b)
EOF
    expect 1 "byte model: pass key length shorter than needle + question" -- "$cli" passkey \
        "$bundled" --lengths 64
else
    bad "bundled model checks: no model at '$bundled' (meson passes models/byte-mamba-2k)"
fi

finish
