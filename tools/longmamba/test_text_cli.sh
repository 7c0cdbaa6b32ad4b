#!/usr/bin/env bash
# test_text_cli.sh LONGMAMBA FIXTURES_DIR [TEXT_FILE]
# Text input through a model's tokenizer.json for `longmamba ppl`, `passkey`
# and `calibrate` (tools/longmamba/cmd_eval.c, cmd_longmamba.c, cli_util.c), on the
# m1-tok fixture (scripts/make_fixture_tok.py: a random Mamba-1 model with a
# byte-level BPE tokenizer.json).  The model is random, so the numbers are
# checked against the tool itself: the ids a --text file is read as are
# exactly those `longmamba tokenize` gives (same count, same perplexity as
# --tokens of those ids, same calibration), runs repeat exactly, thread
# counts agree, the outputs parse; a bad tokenizer.json is refused clearly.
set -u
cli=$1
fixtures=$2
src=${3:-$0}
fx=$fixtures/m1-tok
. "$(dirname "$0")/test_lib.sh"

# same DESCRIPTION A B: two strings are equal
same() {
    if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: '$2' != '$3'"; fi
}

if [ ! -f "$fx/tokenizer.json" ] || [ ! -f "$fx/model.safetensors" ]; then
    echo "FAIL: $fx is missing (scripts/make_fixture_tok.py writes it)"
    exit 1
fi

# ---- the document: its ids by `longmamba tokenize` ------------------------------
# (the special token is kept out: one test adds it on purpose)
head -c 12000 "$src" | sed 's/<|endoftext|>/<eot>/g' >"$tmp/doc.txt"
expect 0 "tokenize the document" -- "$cli" tokenize "$fx" --file "$tmp/doc.txt"
cp "$tmp/out" "$tmp/doc.ids"
expect 0 "tokenize --count" -- "$cli" tokenize "$fx" --file "$tmp/doc.txt" --count
n=$(cat "$tmp/out")
same "--count is the number of ids" "$n" "$(wc -w <"$tmp/doc.ids" | tr -d ' ')"
bytes=$(wc -c <"$tmp/doc.txt" | tr -d ' ')
if [ "$n" -gt 1000 ] && [ "$n" -lt "$bytes" ]; then
    ok "the merges apply: $n tokens for $bytes bytes"
else
    bad "token count $n for $bytes bytes"
fi
W=$((n - 1))
# The fixture is a valid Hugging Face tokenizer: `tokenizers` gave the same
# ids for this document (hf-ids.txt, written by scripts/make_fixture_tok.py
# --hf-ids data/moby-dick-ch1-19.txt).
if [ "$(basename "$src")" = moby-dick-ch1-19.txt ]; then
    check "the ids are those of Hugging Face tokenizers (hf-ids.txt)" \
        cmp -s <(tr -s ' \n' '\n\n' <"$tmp/doc.ids" | sed '/^$/d') \
               <(tr -s ' \n' '\n\n' <"$fx/hf-ids.txt" | sed '/^$/d')
else
    bad "hf-ids.txt was made from data/moby-dick-ch1-19.txt, not $src"
fi

# ---- ppl: one window over the whole document, every prediction scored ------------
run_ppl() { # run_ppl NAME INPUT_OPTION FILE THREADS
    expect 0 "ppl $1" -- "$cli" ppl "$fx" "$2" "$3" --ctx "$W" --windows 1 --score-last "$W" \
        --backend cpu --threads "$4" --json
    cp "$tmp/out" "$tmp/ppl-$1.json"
}
run_ppl text1 --text "$tmp/doc.txt" 1
run_ppl text1b --text "$tmp/doc.txt" 1
run_ppl text2 --text "$tmp/doc.txt" 2
run_ppl ids --tokens "$tmp/doc.ids" 1
pycheck "ppl reads the text as tokenize's $n ids and scores all $W predictions" \
    "$tmp/ppl-text1.json" "$n" <<'EOF'
import json, math, sys
r = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
assert r["documents"][0]["tokens"] == n, (r["documents"], n)
assert r["score_last"] == n - 1 and r["vocab_size"] == 288, r
(row,) = r["results"]
assert row["ctx"] == n - 1 and row["windows"] == 1, row
assert [w["start"] for w in row["window_nll"]] == [0]
p = row["ppl"]
assert p is not None and math.isfinite(p) and p > 1.0, p
assert abs(math.log(p) - row["nll"]) < 1e-6 * row["nll"], row
print(p)
EOF
pycheck "ppl: two runs, 1 and 2 threads, --text and --tokens of tokenize's ids agree" \
    "$tmp/ppl-text1.json" "$tmp/ppl-text1b.json" "$tmp/ppl-text2.json" "$tmp/ppl-ids.json" <<'EOF'
import json, sys
rs = [json.load(open(p)) for p in sys.argv[1:]]
def key(r):
    row = r["results"][0]
    return row["ppl"], row["nll"], [(w["start"], w["nll"]) for w in row["window_nll"]]
want = key(rs[0])
for p, r in zip(sys.argv[2:], rs[1:]):
    assert key(r) == want, (p, key(r)[:2], want[:2])
assert rs[2]["threads"] == 2 and rs[0]["threads"] == 1
print(want[0])
EOF

# Several windows and contexts: the table has one row per context.
expect 0 "ppl table over text, two contexts" -- "$cli" ppl "$fx" --text "$tmp/doc.txt" \
    --ctx 256,1024 --windows 3 --score-last 100 --backend cpu
if grep -Eq '^ +256 +3 +[0-9.]+$' "$tmp/out" && grep -Eq '^ +1024 +3 +[0-9.]+$' "$tmp/out"; then
    ok "ppl table rows"
else
    bad "ppl table layout"
    sed 's/^/    | /' "$tmp/out"
fi
expect 1 "ppl: a context longer than the text" -- "$cli" ppl "$fx" --text "$tmp/doc.txt" \
    --ctx "$n" --score-last 10 --backend cpu
grep_err "no document has the $((n + 1)) tokens" "the shortfall is counted in tokens"

# ---- calibrate / channels ------------------------------------------------------------
expect 0 "calibrate on text" -- "$cli" calibrate "$fx" --text "$tmp/doc.txt" --window 512 \
    --count 4 -o "$tmp/cal-text.safetensors" --backend cpu
if grep -q "^windows: *4 x 512 tokens from $tmp/doc.txt ($n tokens)$" "$tmp/out"; then
    ok "calibrate reads the text as $n tokens"
else
    bad "calibrate token count"
    sed 's/^/    | /' "$tmp/out"
fi
expect 0 "calibrate on tokenize's ids" -- "$cli" calibrate "$fx" --tokens "$tmp/doc.ids" \
    --window 512 --count 4 -o "$tmp/cal-ids.safetensors" --backend cpu
expect 0 "channels reads the text calibration back" -- "$cli" channels "$fx" \
    "$tmp/cal-text.safetensors"
tail -n +2 "$tmp/out" >"$tmp/ch-text.txt"
pycheck "channels: 4 windows x 512 tokens, 2 layers x 32 channels, counts add up" "$tmp/out" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
assert "(4 windows x 512 tokens, max, clamp 0)" in text.splitlines()[0], text
lines = text.splitlines()
rows = [l.split() for l in lines if re.match(r"^ +[0-9]+ +[0-9]+ +32 ", l)]
assert [r[0] for r in rows] == ["0", "1"], lines
total = re.search(r"^total: ([0-9]+) of 64 channels global", "\n".join(lines), re.M)
assert total and int(total.group(1)) == sum(int(r[1]) for r in rows), lines
print(total.group(0))
EOF
expect 0 "channels on the ids calibration" -- "$cli" channels "$fx" "$tmp/cal-ids.safetensors"
tail -n +2 "$tmp/out" >"$tmp/ch-ids.txt"
if cmp -s "$tmp/ch-text.txt" "$tmp/ch-ids.txt"; then
    ok "text and ids calibrations classify the same channels"
else
    bad "text and ids calibrations differ"
    diff "$tmp/ch-text.txt" "$tmp/ch-ids.txt" | sed 's/^/    | /' | head -n 20
fi
expect 0 "ppl in all three modes on text with the calibration" -- "$cli" ppl "$fx" \
    --text "$tmp/doc.txt" --ctx 600 --windows 2 --score-last 50 --backend cpu \
    --mode vanilla,longmamba,decimamba --calib "$tmp/cal-text.safetensors" --json
pycheck "every mode gives a finite perplexity" "$tmp/out" <<'EOF'
import json, math, sys
r = json.load(open(sys.argv[1]))
assert [x["mode"] for x in r["results"]] == ["vanilla", "longmamba", "decimamba"]
for x in r["results"]:
    assert x["windows"] == 2 and x["ppl"] is not None and math.isfinite(x["ppl"]), x
EOF

# ---- passkey -------------------------------------------------------------------------
pk() { # pk NAME extra options...
    local name=$1
    shift
    expect 0 "passkey $name" -- "$cli" passkey "$fx" --lengths 256,512 --depths 0,0.5,1 \
        --trials 2 --backend cpu "$@"
    cp "$tmp/out" "$tmp/pk-$name.out"
}
pk json --json
pk json2 --json --threads 2
pk table
pycheck "passkey JSON: a 2 x 3 grid of accuracies, 12 five-digit keys, decoded answers" \
    "$tmp/pk-json.out" "$tmp/pk-json2.out" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["command"] == "passkey" and r["lengths"] == [256, 512] and r["depths"] == [0, 0.5, 1]
(v,) = r["results"]
acc = v["accuracy"]
assert len(acc) == 2 and all(len(row) == 3 for row in acc), acc
assert all(a in (0, 0.5, 1) for row in acc for a in row), acc
assert 0 <= v["mean"] <= 1
ps = v["prompts"]
assert len(ps) == 12
for p in ps:
    assert len(p["key"]) == 5 and p["key"].isdigit(), p
    assert isinstance(p["answer"], str) and p["answer"], p
    assert p["correct"] == p["answer"].lstrip().startswith(p["key"]), p
# the same seed gives the same prompts and answers whatever the threads
r2 = json.load(open(sys.argv[2]))
assert r2["results"][0]["prompts"] == ps
print(acc)
EOF
pycheck "passkey table: a row per length" "$tmp/pk-table.out" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
assert "vanilla: accuracy by length" in t, t
for L in (256, 512):
    assert re.search(r"^ +%d( +[01]\.[05]0){3} +[01]\.[0-9]{3}$" % L, t, re.M), t
EOF
# The needle and the question go through the tokenizer: a prompt too short
# for both reports their length in tokens.  Digits are byte tokens here
# (no merge involves them), so any 5-digit key counts the same.
nd=$("$cli" tokenize "$fx" --count --text " The pass key is 12345. Remember it. 12345 is the pass key. ")
q=$("$cli" tokenize "$fx" --count --text "$(printf '\nWhat is the pass key? The pass key is')")
expect 1 "passkey shorter than needle + question" -- "$cli" passkey "$fx" --lengths 20 --backend cpu
grep_err "shorter than the needle and the question ($((nd + q)) tokens)" \
    "needle + question measured with the tokenizer ($nd + $q tokens)"

# ---- a tokenizer.json the model cannot use -----------------------------------------
mkdir "$tmp/bad"
cp "$fx/config.json" "$fx/model.safetensors" "$tmp/bad/"
badtok() { # badtok DESCRIPTION: every text command refuses $tmp/bad, exit 1
    local what=$1
    expect 1 "ppl --text, $what" -- "$cli" ppl "$tmp/bad" --text "$tmp/doc.txt" --ctx 64 \
        --score-last 8 --backend cpu
    grep_err "cannot load tokenizer: .*tokenizer.json" "ppl names the tokenizer ($what)"
    expect 1 "passkey, $what" -- "$cli" passkey "$tmp/bad" --lengths 256 --backend cpu
    grep_err "cannot load tokenizer: .*tokenizer.json" "passkey names the tokenizer ($what)"
    expect 1 "calibrate --text, $what" -- "$cli" calibrate "$tmp/bad" --text "$tmp/doc.txt" \
        --window 64 --count 2 -o "$tmp/bad.safetensors" --backend cpu
    grep_err "cannot load tokenizer: .*tokenizer.json" "calibrate names the tokenizer ($what)"
    if [ -e "$tmp/bad.safetensors" ]; then bad "no calibration written ($what)"; else
        ok "no calibration written ($what)"
    fi
    expect 1 "tokenize, $what" -- "$cli" tokenize "$tmp/bad" --text "the sea"
}
head -c 300 "$fx/tokenizer.json" >"$tmp/bad/tokenizer.json"
badtok "truncated JSON"
"$py" - "$fx/tokenizer.json" "$tmp/bad/tokenizer.json" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1], encoding="utf-8"))
t["model"]["merges"].append("Ġt zz")
json.dump(t, open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
EOF
badtok "a merge of a token not in the vocabulary"
grep_err "not in vocab" "the tokenizer error says what is wrong"
"$py" - "$fx/tokenizer.json" "$tmp/bad/tokenizer.json" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1], encoding="utf-8"))
t["model"]["type"] = "WordPiece"
json.dump(t, open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
EOF
badtok "an unsupported model type"
# Valid, but its special token's id is past the model's 288 rows.
"$py" - "$fx/tokenizer.json" "$tmp/bad/tokenizer.json" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1], encoding="utf-8"))
t["added_tokens"][0]["id"] = 400
json.dump(t, open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
EOF
{ cat "$tmp/doc.txt"; printf '<|endoftext|>'; } >"$tmp/doc-eot.txt"
expect 1 "ppl --text with an id outside the model's vocabulary" -- "$cli" ppl "$tmp/bad" \
    --text "$tmp/doc-eot.txt" --ctx 64 --score-last 8 --backend cpu
grep_err "id 400, outside the model's vocabulary (288)" "the stray id is named"
expect 1 "calibrate --text with an id outside the model's vocabulary" -- "$cli" calibrate \
    "$tmp/bad" --text "$tmp/doc-eot.txt" --window 64 --count 2 -o "$tmp/bad.safetensors" \
    --backend cpu
grep_err "id 400, outside the model's vocabulary (288)" "calibrate names the stray id"
expect 0 "the same model reads text without the stray token" -- "$cli" ppl "$tmp/bad" \
    --text "$tmp/doc.txt" --ctx 64 --score-last 8 --backend cpu
rm -f "$tmp/bad/tokenizer.json"
expect 0 "without tokenizer.json, --tokens still works" -- "$cli" ppl "$tmp/bad" \
    --tokens "$tmp/doc.ids" --ctx 64 --score-last 8 --backend cpu
expect 1 "without tokenizer.json, --text is refused" -- "$cli" ppl "$tmp/bad" \
    --text "$tmp/doc.txt" --ctx 64 --score-last 8 --backend cpu
grep_err "has no tokenizer.json and is not a byte-level model (vocabulary 288)" \
    "the refusal says why"

finish
