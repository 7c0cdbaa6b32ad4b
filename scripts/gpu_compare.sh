#!/usr/bin/env bash
# scripts/gpu_compare.sh BEFORE_DIR [SHAPES] - the same benchmarks built from
# an earlier tree and from this one, in one run on the GPU machine:
# bench_scan and bench_e2e of each on the same checkpoints (written once by
# transformers, bench/gpu/bench_hf.py), in the order before, after, after,
# before (drift of the machine shows as a difference between a side's two
# rounds), then one table per round with a "before" column and the ratio
# (bench/gpu/bench_table.py; > 1: this tree is faster).
#
#   here:  git archive REV | tar -x -C .scratch/before   (carry .scratch/before, .gpudeps)
#   there: scripts/gpu_compare.sh .scratch/before [mamba-130m,mamba2-130m,...]
#
# Each tree is built by its own scripts/gpu_check.sh (--no-tests
# --no-sanitize --no-bench: the benchmark programs only).  Output in $OUT
# (default ./gpu-compare-out): compare.txt (tables), scan.txt, logs.
# ROUNDS=1: only before, after (one table).  E2E_ARGS: more arguments for
# both sides' bench_e2e (e.g. "--lengths 16384" for a shorter round).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=$(cd "${1:?usage: gpu_compare.sh BEFORE_DIR [SHAPES]}" && pwd)
SHAPES=${2:-mamba-130m,mamba-1.4b,mamba2-130m,mamba2-1.3b}
OUT=${OUT:-$REPO/gpu-compare-out}
CKPT=${CKPT:-/tmp/lm-bench-ckpt}
mkdir -p "$OUT"
if [ -d "$REPO/.gpudeps" ]; then
    [ -d "$BEFORE/.gpudeps" ] || cp -r "$REPO/.gpudeps" "$BEFORE/"
    export LD_LIBRARY_PATH=$REPO/.gpudeps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

for side in before after; do
    tree=$REPO
    [ $side = before ] && tree=$BEFORE
    # from the tree's own root: its gpu_check.sh configures the current folder
    (cd "$tree" && OUT=$OUT/build-$side BUILD=/tmp/lm-cmp-$side bash scripts/gpu_check.sh --no-tests \
        --no-sanitize --no-bench) >"$OUT/build-$side.log" 2>&1 || { tail -20 "$OUT/build-$side.log"; exit 1; }
    echo "built $side ($tree)"
done
# Preflight: each build's library must see the GPU (the CUDA module, for
# this tree, is loaded at run time from beside the library).
for side in before after; do
    lib=$(ls /tmp/lm-cmp-$side/lib/lib*ongmamba.so | head -n 1)
    python3 - "$lib" <<'PY' || exit 1
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
ok = lib.lm_backend_available(2)
why = ctypes.create_string_buffer(512)
if hasattr(lib, "lm_backend_status"):
    lib.lm_backend_status(2, why, 512)
print(f"{sys.argv[1]}: CUDA available {ok} {why.value.decode()}")
sys.exit(0 if ok else 1)
PY
done
PYTHONUNBUFFERED=1 python3 "$REPO/bench/gpu/bench_hf.py" --write "$CKPT" --shapes "$SHAPES" \
    >"$OUT/checkpoints.log" 2>&1 || { tail -20 "$OUT/checkpoints.log"; exit 1; }

round() {  # round SIDE N: bench_scan and bench_e2e of one build
    local b=/tmp/lm-cmp-$1
    echo "== $1, round $2 =="
    "$b/bench/gpu/bench_scan" >"$OUT/scan-$1-$2.txt" 2>&1
    awk -v s="$1 $2" 'NF==9 && $2==1 && $3==16384 && ($1==1536 || $1==5120) {print s ": scan E=" $1 " B=1 L=16k filter " $4 ": " $6 " ms"}' \
        "$OUT/scan-$1-$2.txt"
    "$b/bench/gpu/bench_e2e" --dir "$CKPT" --shapes "$SHAPES" ${E2E_ARGS:-} --rows "$OUT/rows-$1-$2.raw" \
        >"$OUT/e2e-$1-$2.txt" 2>&1 || echo "bench_e2e ($1, round $2) failed: $OUT/e2e-$1-$2.txt"
}
ROUNDS=${ROUNDS:-2}
export LM_BENCH_SAMPLED=0 # rows that only this tree has (decode_sample) are not compared
{ round before 1; round after 1; [ "$ROUNDS" = 1 ] || { round after 2; round before 2; }; } | tee "$OUT/scan.txt"

for n in $(seq 1 "$ROUNDS"); do
    sed 's/^ours\t/before\t/' "$OUT/rows-before-$n.raw" >"$OUT/rows-before-$n.tsv"
    echo
    echo "round $n: this tree (ours) beside the earlier one (before); ratio > 1: this tree is faster"
    python3 "$REPO/bench/gpu/bench_table.py" "$OUT/rows-after-$n.raw" "$OUT/rows-before-$n.tsv"
done | tee "$OUT/compare.txt"
