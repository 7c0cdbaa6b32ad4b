#!/usr/bin/env bash
# scripts/main_job.sh - the README's main job: the bundled byte-level model
# (trained at 2,048 bytes) reads a bundled excerpt of Moby-Dick, which it
# never saw, on the CPU, in vanilla mode and with LongMamba (theta 1e-12,
# chosen on held-out training text: docs/EXPERIMENT.md).  It prints
#   1. perplexity per byte at the training length (1x) and at 8x on the same
#      bytes: the last 1,000 bytes of 3 windows (--align-end: the 1x
#      windows end where the 8x ones do);
#   2. pass-key retrieval at 8x (16,384-byte prompts, the needle at 4
#      depths, Moby-Dick as the haystack).
# About a minute on 2 cores.
#
#   scripts/main_job.sh            # builds ./build first if it has no CLI
#   LONGMAMBA=path/to/longmamba scripts/main_job.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cli=${LONGMAMBA:-$root/build/tools/longmamba/longmamba}
model=$root/models/byte-mamba-2k
calib=$model/calibration.safetensors
text=$root/data/moby-dick-ch1-19.txt

if [ ! -x "$cli" ]; then
    echo "main_job: building the CLI in $root/build" >&2
    [ -d "$root/build" ] || meson setup "$root/build" "$root" >/dev/null
    ninja -C "$root/build" >/dev/null
fi
if [ ! -f "$calib" ]; then
    echo "main_job: no LongMamba calibration at $calib" >&2
    echo "  make one from training text (never the evaluated book), e.g.:" >&2
    echo "  $cli calibrate $model --text TRAINING.txt --window 2048 -o $calib" >&2
    exit 1
fi

theta=1e-12
echo "model:   $model (byte-level Mamba-1, 13.7M parameters, trained at 2,048 bytes)"
echo "text:    $text ($(wc -c <"$text") bytes, not in the training data)"
echo "modes:   vanilla, and LongMamba with theta $theta ($calib)"
echo
echo "== 1. perplexity per byte on the same 3,000 bytes, read with 2,048 or 16,384 bytes of context =="
"$cli" ppl "$model" --text "$text" --ctx 2048,16384 --windows 3 --align-end --mode vanilla,longmamba \
    --calib "$calib" --theta $theta
echo
echo "== 2. pass key in a 16,384-byte prompt (8x the training length) =="
echo "the needle sits at depth 0 (start) .. 0.75; 1.00 = retrieved"
"$cli" passkey "$model" --lengths 16384 --depths 0,0.25,0.5,0.75 --trials 1 --filler "$text" \
    --mode vanilla,longmamba --calib "$calib" --theta $theta
