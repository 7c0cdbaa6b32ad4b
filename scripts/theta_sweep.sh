#!/usr/bin/env bash
# scripts/theta_sweep.sh [OUT_DIR]
#
# How theta_tuned in scripts/experiment.sh was chosen: LongMamba's global-
# channel threshold theta (and DeciMamba's L_base) tried on HELD-OUT TRAINING
# text only, i.e. the last 2% of every file of ../shared/data/text/train,
# which training never read (scripts/train/data.py) and which is not one of
# the eval books.  Pass keys at 4x and 8x the training context (seed 777,
# 2 trials x 5 depths) and end-aligned perplexity at 1x, 8x and 32x.
# About 12 minutes on 2 cores.  Environment as for scripts/experiment.sh.
# Writes OUT_DIR (default docs/experiment/theta_sweep): one JSON per run and
# summary.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cli=${LONGMAMBA:-$root/build/tools/longmamba/longmamba}
model=${MODEL:-$root/models/byte-mamba-2k}
shared=${SHARED:-$root/../shared}
calib=${CALIB:-$model/calibration.safetensors}
threads=${THREADS:-0}
out=${1:-$root/docs/experiment/theta_sweep}
[ -f "$calib" ] || { echo "theta_sweep: no $calib (run scripts/experiment.sh first)" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# held-out split: the bytes after int(0.98 * size) of every training file
: >"$tmp/heldout.txt"
for f in "$shared"/data/text/train/*.txt.xz; do
    xz -dc "$f" >"$tmp/one.txt"
    n=$(stat -c %s "$tmp/one.txt")
    tail -c +$((n * 98 / 100 + 1)) "$tmp/one.txt" >>"$tmp/heldout.txt"
done
held=$tmp/heldout.txt
clean='(if (.filler | type) == "string" then .filler |= sub(".*/"; "") else . end)
       | (if .documents then .documents |= map(.path |= sub(".*/"; "")) else . end)
       | .calibration |= (if . then sub(".*/models/"; "models/") else . end)
       | .model |= sub(".*/models/"; "models/")'
run() { # NAME COMMAND ARGS...
    local name=$1
    shift
    echo "[$(date +%H:%M:%S)] $name" >&2
    "$cli" "$@" --threads "$threads" --json 2>/dev/null | jq "$clean" >"$out/$name.json"
}
pk=(passkey "$model" --trials 2 --seed 777 --filler "$held")
lm=(--mode longmamba --calib "$calib")

run pk8k_vanilla "${pk[@]}" --lengths 8192 --mode vanilla
for th in 1e-3 1e-6 1e-12 1e-20 1e-30; do
    run pk8k_theta$th "${pk[@]}" --lengths 8192 "${lm[@]}" --theta $th
done
ppl=(ppl "$model" --text "$held" --ctx 2048,16384,65536 --windows 2 --align-end)
run ppl_vanilla "${ppl[@]}" --mode vanilla
for th in 1e-12 1e-20 1e-30; do
    run ppl_theta$th "${ppl[@]}" "${lm[@]}" --theta $th
done
run pk16k_vanilla "${pk[@]}" --lengths 16384 --mode vanilla
for th in 1e-12 1e-20 1e-30; do
    run pk16k_theta$th "${pk[@]}" --lengths 16384 "${lm[@]}" --theta $th
done
for lb in 1000 4000 8000; do
    run pk8k_deci_lbase$lb "${pk[@]}" --lengths 8192 --mode decimamba --deci-lbase $lb
done

{
    echo "Pass-key accuracy on held-out training text (seed 777, 2 trials x depths 0..1):"
    echo
    echo "| run | length | accuracy by depth 0, .25, .5, .75, 1 | mean |"
    echo "|---|---:|---|---:|"
    for f in "$out"/pk*.json; do
        jq -r --arg n "$(basename "$f" .json)" \
            '"| \($n) | \(.lengths[0]) | \(.results[0].accuracy[0] | map(tostring) | join(" ")) | \(.results[0].mean) |"' "$f"
    done
    echo
    echo "Perplexity per byte on held-out training text, end-aligned (2 windows):"
    echo
    echo "| run | 1x (2,048) | 8x (16,384) | 32x (65,536) |"
    echo "|---|---:|---:|---:|"
    for f in "$out"/ppl*.json; do
        jq -r --arg n "$(basename "$f" .json)" \
            '"| \($n) | " + (.results | map(.ppl * 1000 | round / 1000 | tostring) | join(" | ")) + " |"' "$f"
    done
    echo
    echo "Global channels (of 8,192) by theta:"
    echo
    for th in 1e-3 1e-6 1e-12 1e-20 1e-30; do
        echo "- theta $th: $("$cli" channels "$model" "$calib" --theta $th | tail -1)"
    done
} >"$out/summary.md"
cat "$out/summary.md"
