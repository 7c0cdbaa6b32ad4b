#!/usr/bin/env bash
# llama_side_by_side.sh - CPU side-by-side benchmark of libongmamba against
# llama.cpp (issue #18 item 5): the same random mamba-130m-shaped Mamba-1
# checkpoint, as the same GGUF files, same protocol, one run, interleaved.
#
#   bench/cpu/llama_side_by_side.sh [WORK_DIR]      (default .peer-cpu, git-ignored)
#
# Steps (each skipped when its output already exists):
#   1. llama.cpp: the copy vendored in the llama-cpp-python source package
#      (pip download --no-binary :all: llama-cpp-python==$LLAMA_PY_VERSION),
#      built CPU-only with cmake (GGML_NATIVE, OpenMP, Release) into
#      WORK_DIR/build: llama-bench (and llama-eval-callback for the logits
#      check).  Nothing of llama.cpp is committed to this repository.
#   2. ours: meson setup build-cpu (release, no CUDA), bench/bench_file.
#   3. checkpoint: bench/cpu/write_checkpoint.py (float32 safetensors, the
#      bench_hf.py mamba-130m config and seed), then llama.cpp's own
#      convert_hf_to_gguf.py --outtype f32, f16, q8_0 (its gguf-py installed
#      into $PY's environment).
#   4. ROUNDS (default 3) interleaved rounds; in each, per format: llama-bench
#      -m X.gguf -p 512,2048 -n 128 -t 1,2 -r 1 -o csv, then ours
#      (bench_file X.gguf -p 512,2048 -n 128 -t T -r 1) at T = 1 and 2 with
#      OPENBLAS_NUM_THREADS=T (n_threads does not bound OpenBLAS's pool:
#      README "Threads and ownership").  Ours also runs the F16 file with
#      --weights q8_0 (LM_WEIGHTS_Q8_0: quantised at load).
#   5. peak RSS (/usr/bin/time -v, maximum resident set size) of one
#      2048-token prefill run at 2 threads (llama-bench -p 2048 -n 0 -t 2
#      -r 1; bench_file -p 2048 -t 2 -r 1), per file.
#   6. the table (medians over the rounds, ratio ours / llama.cpp, RSS):
#      bench/cpu/side_by_side_table.py, printed and written to
#      WORK_DIR/table.md.
#
# Environment: PY (python with torch + transformers; default
# /tmp/venv-tf/bin/python), LLAMA_PY_VERSION (default 0.3.36), ROUNDS,
# JOBS (build parallelism, default 2).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
W=${1:-.peer-cpu}
mkdir -p "$W"
W=$(cd "$W" && pwd)
PY=${PY:-/tmp/venv-tf/bin/python}
VER=${LLAMA_PY_VERSION:-0.3.36}
ROUNDS=${ROUNDS:-3}
JOBS=${JOBS:-2}
log() { echo "[side-by-side $(date +%H:%M:%S)] $*" >&2; }

# 1. llama.cpp
SRC="$W/llama_cpp_python-$VER/vendor/llama.cpp"
if [ ! -d "$SRC" ]; then
  log "downloading llama-cpp-python==$VER (source)"
  pip download --no-deps --no-binary :all: "llama-cpp-python==$VER" -d "$W/dl"
  tar xzf "$W/dl/llama_cpp_python-$VER.tar.gz" -C "$W"
fi
LB="$W/build/bin/llama-bench"
EC="$W/build/bin/llama-eval-callback"
if [ ! -x "$LB" ]; then
  log "building llama.cpp (CPU) into $W/build"
  cmake -S "$SRC" -B "$W/build" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DGGML_OPENMP=ON \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF >"$W/configure.log"
  cmake --build "$W/build" -j"$JOBS" --target llama-bench llama-eval-callback >"$W/build.log"
fi

# 2. ours
[ -d build-cpu ] || meson setup build-cpu --buildtype=release -Dcuda=disabled -Dtests=false >/dev/null
ninja -C build-cpu bench/bench_file >/dev/null
BF="$ROOT/build-cpu/bench/bench_file"

# 3. checkpoint and GGUF files
M="$W/models"
mkdir -p "$M"
[ -f "$M/mamba-130m-f32/model.safetensors" ] || "$PY" bench/cpu/write_checkpoint.py "$M/mamba-130m-f32"
"$PY" -c "import gguf" 2>/dev/null || "$PY" -m pip install -q "$SRC/gguf-py"
for t in f32 f16 q8_0; do
  [ -f "$M/mamba-130m-$t.gguf" ] || "$PY" "$SRC/convert_hf_to_gguf.py" "$M/mamba-130m-f32" \
    --outtype "$t" --outfile "$M/mamba-130m-$t.gguf" >"$M/convert-$t.log" 2>&1
done

# 4. interleaved rounds
R="$W/results"
rm -rf "$R"
mkdir -p "$R"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
  echo "cores: $(nproc)"
  echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16|avx_vnni|f16c|fma|amx_tile)$' | tr '\n' ' ')"
  echo "llama-cpp-python: $VER"
  echo "llama.cpp: ggml-org/llama.cpp@$(sed -n "/^## \[$VER\]/,/^## /s/.*update llama.cpp to ggml-org\/llama.cpp@\([0-9a-f]*\).*/\1/p" "$W/llama_cpp_python-$VER/CHANGELOG.md" | head -1) (llama-cpp-python $VER CHANGELOG; build-info: $(grep -o 'LLAMA_COMMIT = "[^"]*"' "$W/build/common/build-info.cpp" 2>/dev/null | head -1))"
  echo "ours: $(git rev-parse --short HEAD) $(git describe --always --dirty 2>/dev/null)"
  echo "load_before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$R/meta.txt"
cat "$R/meta.txt" >&2

# peak RSS (step 5, run first so that a cut-short run still has it), 2048-token prefill at 2 threads
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | sed -n 's/.*Maximum resident set size (kbytes): //p'; }
for t in f32 f16 q8_0; do
  f="$M/mamba-130m-$t.gguf"
  echo "llama,$t,$(rss "$LB" -m "$f" -p 2048 -n 0 -t 2 -r 1)" >>"$R/rss.csv"
  echo "ours,$t,$(OPENBLAS_NUM_THREADS=2 rss "$BF" "$f" -t 2 -p 2048 -r 1)" >>"$R/rss.csv"
done
echo "ours,q8_0-from-f16,$(OPENBLAS_NUM_THREADS=2 rss "$BF" "$M/mamba-130m-f16.gguf" -t 2 -p 2048 -r 1 --weights q8_0)" >>"$R/rss.csv"

# logits check (run before the rounds too): ours vs llama.cpp on the F32 GGUF, short prompt
if [ -x "$EC" ]; then
  python3 bench/cpu/logits_check.py "$EC" "$BF" "$M/mamba-130m-f32.gguf" "$R" > "$R/logits.txt"; cat "$R/logits.txt" >&2
fi

( while true; do echo "$(date +%s) $(cut -d' ' -f1 /proc/loadavg)" >>"$R/load.txt"; sleep 5; done ) &
LOADPID=$!
trap 'kill $LOADPID 2>/dev/null || true' EXIT

ours() { # label file threads [extra args]
  local label=$1 file=$2 t=$3; shift 3
  OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t "$BF" "$file" -t "$t" -p 512,2048 -n 128 -r 1 "$@" 2>/dev/null |
    tail -n +2 | sed "s/^/$label,$r,/" >>"$R/ours.csv"
}
for r in $(seq 1 "$ROUNDS"); do
  for t in f32 f16 q8_0; do
    f="$M/mamba-130m-$t.gguf"
    log "round $r: llama.cpp $t"
    "$LB" -m "$f" -p 512,2048 -n 128 -t 1,2 -r 1 -o csv 2>/dev/null | sed "1s/^/label,round,/;2,\$s/^/$t,$r,/" >"$R/llama-$t-$r.csv"
    log "round $r: ours $t"
    for th in 1 2; do ours "$t" "$f" "$th"; done
    if [ "$t" = f16 ]; then
      log "round $r: ours f16 --weights q8_0"
      for th in 1 2; do ours "q8_0-from-f16" "$f" "$th" --weights q8_0; done
    fi
  done
done

echo "load_after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$R/meta.txt"
kill $LOADPID 2>/dev/null || true


# 6. table
python3 bench/cpu/side_by_side_table.py "$R" | tee "$W/table.md"

cat "$R/logits.txt" 2>/dev/null | tee -a "$W/table.md"
