#!/usr/bin/env bash
# test_suite_cli.sh LONGMAMBA FIXTURES_DIR BUNDLED_MODEL_DIR TEXT_FILE SCRIPTS_DIR
# `longmamba eval` (cmd_eval.c): option errors; --task ppl is `longmamba ppl`;
# --dump-prompts is deterministic for a seed and lays the prompts out as
# documented (length, needle depth, filler); a small run on the bundled
# byte-level model and on the m1-tok fixture (BPE) with every mode: the JSON
# structure, the Wilson intervals, the same prompts in every mode, the pass
# key equal to `longmamba passkey`; scripts/plot_eval.sh on that JSON.
set -u
cli=$1
fixtures=$2
bundled=$3
text=$4
scripts=$5
fx=$fixtures/m1-bf16
tok=$fixtures/m1-tok
. "$(dirname "$0")/test_lib.sh"
awk 'BEGIN { srand(7); for (i = 0; i < 3000; i++) printf "%d ", int(rand() * 128); print "" }' \
    >"$tmp/rand.txt"

# ---- usage ----------------------------------------------------------------------
expect 0 "eval --help" -- "$cli" eval --help
grep_out "niah_multiquery" "--help lists the tasks"
grep_out "decimamba" "--help lists the modes"
grep_out "first_word" "--help names the scoring rules"
expect 2 "eval without arguments" -- "$cli" eval
expect 2 "eval without --lengths" -- "$cli" eval "$bundled"
grep_err "lengths" "missing --lengths is named"
expect 2 "an unknown task" -- "$cli" eval "$bundled" --lengths 700 --task niah_nothing
grep_err "\-\-task" "the bad task's option is named"
expect 2 "a task twice" -- "$cli" eval "$bundled" --lengths 700 --task vt,vt
expect 2 "ppl with another task" -- "$cli" eval "$bundled" --lengths 700 --task vt,ppl
grep_err "runs alone" "ppl mixed with tasks is refused"
expect 2 "a depth above 1" -- "$cli" eval "$bundled" --lengths 700 --depths 0,1.5
expect 2 "zero trials" -- "$cli" eval "$bundled" --lengths 700 --trials 0
expect 2 "longmamba mode without --calib" -- "$cli" eval "$bundled" --lengths 700 \
    --mode vanilla,longmamba
expect 1 "a model that cannot read text" -- "$cli" eval "$fx" --lengths 700
grep_err "tokenizer.json" "the refusal says why"
expect 1 "a length too short for the task" -- "$cli" eval "$bundled" --lengths 200 \
    --task niah_number --depths 0.5
grep_err "shorter than" "the short length is named"
expect 1 "a missing filler" -- "$cli" eval "$bundled" --lengths 700 --filler "$tmp/none.txt"

# ---- --task ppl: the ppl command ----------------------------------------------------
ppl_args=(--tokens "$tmp/rand.txt" --ctx 39,64 --windows 2 --score-last 10 --mode vanilla,decimamba --json)
expect 0 "ppl" -- "$cli" ppl "$fx" "${ppl_args[@]}"
cp "$tmp/out" "$tmp/ppl.json"
expect 0 "eval --task ppl" -- "$cli" eval "$fx" --task ppl "${ppl_args[@]}"
cp "$tmp/out" "$tmp/eval_ppl.json"
expect 0 "eval --task=ppl" -- "$cli" eval "$fx" "${ppl_args[@]}" --task=ppl
cp "$tmp/out" "$tmp/eval_ppl2.json"
pycheck "eval --task ppl gives ppl's output" "$tmp/ppl.json" "$tmp/eval_ppl.json" \
    "$tmp/eval_ppl2.json" <<'EOF'
import json, sys
def strip(p):
    d = json.load(open(p))
    d.pop("seconds")
    for r in d["results"]:
        r.pop("seconds")
    return d
a, b, c = (strip(p) for p in sys.argv[1:])
assert a["command"] == "ppl" and a == b == c, (a, b)
EOF

# ---- prompts: deterministic, laid out as documented ------------------------------
grass="The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
dump=(--lengths 1500,2500 --depths 0,0.3,1 --trials 2)
expect 0 "dump the prompts" -- "$cli" eval "$bundled" "${dump[@]}" --dump-prompts "$tmp/p1.jsonl"
expect 0 "dump them again" -- "$cli" eval "$bundled" "${dump[@]}" --dump-prompts "$tmp/p2.jsonl"
expect 0 "dump with another seed" -- "$cli" eval "$bundled" "${dump[@]}" --seed 99 \
    --dump-prompts "$tmp/p3.jsonl"
check "the same seed gives the same prompts" cmp -s "$tmp/p1.jsonl" "$tmp/p2.jsonl"
pycheck "bytes: lengths, needles at their depths, filler, another seed" "$tmp/p1.jsonl" \
    "$tmp/p3.jsonl" "$grass" <<'EOF'
import json, math, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
other = [json.loads(l) for l in open(sys.argv[2])]
grass = sys.argv[3]
assert len(rows) == len(other) == (8 * 3 + 2) * 2 * 2, len(rows)  # depth tasks x 3 depths
# what the answer needs, and where; the needle sentences as written
needle_re = re.compile(r" One of the special magic \w+ for [a-z-]+ is: [\w-]+\. | VAR [A-Z]{5} = (?:VAR [A-Z]{5}|\d+)\. | The pass key is \d+\. Remember it\. \d+ is the pass key\. ")
def target_of(task, needle, expected):
    if task == "passkey":
        return 0
    if task == "vt":
        name = needle.split()[1]
        return expected.index(name) if name in expected else None
    v = needle.split("is: ")[1][:-2]
    return expected.index(v) if v in expected else None
n_checked = 0
for r, o in zip(rows, other):
    ids, text, L, d = r["ids"], r["text"], r["length"], r["depth"]
    assert bytes(ids).decode("latin-1") == text, "bytes are the ids"
    assert ids != o["ids"] and r["expected"] != o["expected"], "another seed"
    if r["task"] in ("cwe", "fwe"):
        assert L - 64 < len(ids) <= L and d is None, (r["task"], len(ids), L, d)
        continue
    assert len(ids) == L, (r["task"], len(ids), L)
    head = 0 if r["task"] == "passkey" else text.index("\n") + 1
    while text[head] == "\n":
        head += 1
    q = text.rindex("\n")
    body = text[head:q]
    needles = [(m.start(), m.group()) for m in needle_re.finditer(body)]
    room = len(body) - sum(len(n) for _, n in needles)
    filler, at, want = "", 0, {}
    n_t = len(r["expected"]) if r["task"] != "passkey" else 1
    for pos, n in needles:
        filler += body[at:pos]
        at = pos + len(n)
        i = target_of(r["task"], n, r["expected"])
        if i is not None:
            want[i] = len(filler)
    filler += body[at:]
    assert len(filler) == room
    assert filler in grass * (room // len(grass) + 2), "the filler is a slice of the text"
    assert sorted(want) == list(range(n_t)), (r["task"], want, r["expected"])
    for i, got in want.items():
        depth = d + (1 - d) * i / n_t
        assert got == math.floor(depth * room + 0.5), (r["task"], i, got, depth * room)
    n_checked += 1
print(n_checked, "prompts checked")
EOF

# ---- the bundled model: a small grid, two modes --------------------------------------
if [ -f "$bundled/model.safetensors" ]; then
    run=(--lengths 700 --depths 0.5 --trials 1 --task niah_number,vt,fwe,passkey)
    expect 0 "bundled model: eval, vanilla and decimamba" -- "$cli" eval "$bundled" "${run[@]}" \
        --mode vanilla,decimamba --threads 2 --json
    cp "$tmp/out" "$tmp/small.json"
    expect 0 "bundled model: passkey, the same grid" -- "$cli" passkey "$bundled" --lengths 700 \
        --depths 0.5 --trials 1 --mode vanilla,decimamba --threads 2 --json
    cp "$tmp/out" "$tmp/pk.json"
    pycheck "bundled model: the JSON of eval" "$tmp/small.json" "$tmp/pk.json" <<'EOF'
import json, math, sys
res = json.load(open(sys.argv[1]))
pk = json.load(open(sys.argv[2]))
assert res["command"] == "eval" and res["vocab_size"] == 256 and res["backend"] == "cpu"
cells = res["results"]
assert [(c["task"], c["mode"]) for c in cells] == [
    (t, m) for t in ("niah_number", "vt", "fwe", "passkey") for m in ("vanilla", "decimamba")]
z = 1.959963984540054
for c in cells:
    assert set(c) >= {"task", "mode", "length", "depth", "n", "correct", "accuracy", "wilson_lo",
                      "wilson_hi", "recall", "settings", "prompts"}, c.keys()
    assert c["length"] == 700 and c["n"] == 1 and len(c["prompts"]) == 1
    assert c["depth"] == (None if c["task"] == "fwe" else 0.5)
    k, n = c["correct"], c["n"]
    assert c["accuracy"] == k / n and k == sum(p["correct"] for p in c["prompts"])
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)
    assert abs(c["wilson_lo"] - lo) < 1e-9 and abs(c["wilson_hi"] - hi) < 1e-9, c
    s = c["settings"]
    assert s["seed"] == 1234 and s["trials"] == 1 and s["filler"] is None
    assert s["scoring"] == {"niah_number": "first_word", "passkey": "passkey"}.get(c["task"], "all")
    assert "deci_lbase" in s["params"] and s["backend"] == "cpu"
    pr = c["prompts"][0]
    assert pr["hits"] <= len(pr["expected"]) and pr["correct"] == (pr["hits"] == len(pr["expected"]))
# the same prompts in both modes
by = {}
for c in cells:
    by.setdefault(c["task"], []).append(c["prompts"][0]["expected"])
assert all(a == b for a, b in by.values()), by
assert len(by["vt"][0]) == 5 and len(by["fwe"][0]) == 3
# the pass key: `longmamba passkey`'s prompts, answers and verdicts; right at 700 bytes
mine = [c["prompts"][0] for c in cells if c["task"] == "passkey"]
theirs = [r["prompts"][0] for r in pk["results"]]
for a, b in zip(mine, theirs):
    assert a["expected"] == [b["key"]] and a["answer"] == b["answer"] and a["correct"] == b["correct"]
    assert a["correct"], a
print("ok")
EOF

    # ---- the plot script (jq and gnuplot are test dependencies: scripts/setup.sh) ----
    if PLOT_DATA=$tmp/plot "$scripts/plot_eval.sh" "$tmp/small.json" "$tmp/small.png" \
        >"$tmp/out" 2>"$tmp/err"; then
        ok "plot_eval.sh"
        check "a PNG" bash -c "head -c 8 '$tmp/small.png' | od -c | grep -q 'P   N   G'"
    else
        bad "plot_eval.sh failed (needs jq and gnuplot-nox: scripts/setup.sh installs them)"
        sed 's/^/    | /' "$tmp/err"
    fi
    pycheck "plot data: pooled accuracy and interval per task and mode" "$tmp/small.json" \
        "$tmp/plot" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))
for c in res["results"]:
    rows = [l.split() for l in open(f"{sys.argv[2]}/{c['task']}__{c['mode']}.dat")]
    assert len(rows) == 1, rows
    length, acc, lo, hi, k, n = map(float, rows[0])
    assert (length, acc, k, n) == (700, c["accuracy"], c["correct"], c["n"])
    assert abs(lo - c["wilson_lo"]) < 1e-9 and abs(hi - c["wilson_hi"]) < 1e-9
EOF
else
    bad "bundled model checks: no model at '$bundled' (meson passes models/byte-mamba-2k)"
fi

# ---- a BPE model (fixture m1-tok): every task, every mode ---------------------------
expect 0 "calibrate m1-tok" -- "$cli" calibrate "$tok" --tokens "$tmp/rand.txt" --window 16 \
    --count 8 -o "$tmp/cal.safetensors"
expect 0 "m1-tok: eval, every task and mode" -- "$cli" eval "$tok" --lengths 1200,2400 \
    --depths 0,1 --trials 2 --filler "$text" --mode vanilla,longmamba,decimamba \
    --calib "$tmp/cal.safetensors" --json
cp "$tmp/out" "$tmp/tok.json"
expect 0 "m1-tok: the prompts" -- "$cli" eval "$tok" --lengths 1200,2400 --depths 0,1 --trials 2 \
    --filler "$text" --dump-prompts "$tmp/tok.jsonl"
pycheck "m1-tok: tokens, cells, the same prompts in every mode" "$tmp/tok.json" \
    "$tmp/tok.jsonl" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))
rows = [json.loads(l) for l in open(sys.argv[2])]
cells = res["results"]
assert res["vocab_size"] == 288 and res["calibration"]
# 8 tasks x 2 depths + cwe, fwe (no depth), x 3 modes x 2 lengths
assert len(cells) == (8 * 2 + 2) * 3 * 2, len(cells)
exp = {}
for c in cells:
    key = (c["task"], c["length"], c["depth"])
    exp.setdefault(key, []).append([p["expected"] for p in c["prompts"]])
    assert c["n"] == 2 and 0 <= c["wilson_lo"] <= c["accuracy"] <= c["wilson_hi"] <= 1
    assert c["settings"]["filler"] and c["settings"]["params"]["theta"] > 0
assert all(len(v) == 3 and v[0] == v[1] == v[2] for v in exp.values())
# the dumped prompts are those that ran: L tokens of the model's vocabulary
for r in rows:
    assert all(0 <= i < 288 for i in r["ids"])
    assert len(r["ids"]) == r["length"] or (r["task"] in ("cwe", "fwe") and len(r["ids"]) <= r["length"])
    assert r["expected"] == exp[(r["task"], r["length"], r["depth"])][0][r["trial"]]
    for v in r["expected"]:
        assert v in r["text"], (r["task"], v)
print(len(rows), "prompts")
EOF

# the table (a random model: no pass key right)
expect 0 "m1-tok: the table" -- "$cli" eval "$tok" --lengths 600 --depths 0.5 --trials 1 \
    --task passkey,vt --mode vanilla
grep_out "passkey, vanilla (passkey): accuracy \[95% Wilson\] by length" "table header"
grep_out "^ *600  0.00 \[0.00,0.79\]$" "table row: 0 of 1 with its interval"
grep_out "vt, vanilla (all): accuracy \[95% Wilson\] recall" "recall for the 'all' rule"

# no --mode: every mode that can run (longmamba with a calibration)
expect 0 "m1-tok: default modes" -- "$cli" eval "$tok" --lengths 600 --depths 0.5 --trials 1 \
    --task passkey --json
cp "$tmp/out" "$tmp/def.json"
expect 0 "m1-tok: default modes with --calib" -- "$cli" eval "$tok" --lengths 600 --depths 0.5 \
    --trials 1 --task passkey --calib "$tmp/cal.safetensors" --json
cp "$tmp/out" "$tmp/def_cal.json"
expect 0 "m1-tok: default modes with --calib and --ext-scales" -- "$cli" eval "$tok" \
    --lengths 600 --depths 0.5 --trials 2 --task passkey,niah_number --calib "$tmp/cal.safetensors" \
    --ext-scales 1,1 --json
cp "$tmp/out" "$tmp/def_all.json"
pycheck "default modes: every mode whose inputs are given" "$tmp/def.json" "$tmp/def_cal.json" \
    "$tmp/def_all.json" <<'EOF'
import json, sys
modes = lambda p: [c["mode"] for c in json.load(open(p))["results"]]
assert modes(sys.argv[1]) == ["vanilla", "decimamba"], modes(sys.argv[1])
assert modes(sys.argv[2]) == ["vanilla", "longmamba", "decimamba"], modes(sys.argv[2])
cells = json.load(open(sys.argv[3]))["results"]
five = ["vanilla", "longmamba", "decimamba", "mambaextend", "modulation"]
assert modes(sys.argv[3]) == five * 2, modes(sys.argv[3])
# scales of 1 change nothing: the same answers as vanilla
for task in ("passkey", "niah_number"):
    by = {c["mode"]: [p["answer"] for p in c["prompts"]] for c in cells if c["task"] == task}
    assert by["mambaextend"] == by["vanilla"] == by["modulation"], by
    assert cells[0]["settings"]["params"]["ext_scales"] == [1, 1]
EOF

finish
