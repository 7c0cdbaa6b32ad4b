#!/usr/bin/env bash
# gpu_check.sh - on a machine with an NVIDIA GPU: build the CUDA backend,
# run the GPU tests (test/gpu), the same tests under compute-sanitizer
# (memcheck and racecheck), and the benchmarks (bench/gpu, plus transformers
# side by side); print a short table last.  Logs go to $OUT (default
# ./gpu-check-out) as summary.txt and logs.tar.gz.
#
#   scripts/gpu_check.sh [--quick] [--quick-bench] [--no-tests] [--no-sanitize] [--no-bench] [--no-hf]
#                        [--no-scan] [--shapes a,b,...]
#                        [--no-peer]
#                        [--profile-decode]   (ncu: time of each kernel of a 130m decode step)
#                        [--profile-scan]     (ncu: occupancy and stall reasons of the scan kernels)
#   scripts/gpu_check.sh --make-deps   (on a Debian 12 host with the -dev packages: fill .gpudeps/)
#
# End-to-end benchmark: bench/gpu/bench_hf.py --write saves random bf16
# checkpoints of the shapes (default mamba-130m, mamba-1.4b, mamba2-130m,
# mamba2-1.3b; --quick: the two 130m ones) with transformers to $CKPT
# (default /tmp/lm-bench-ckpt), times transformers on them (not with
# --no-hf), then bench_e2e times ours on the same files; the summary gets
# one table with both sides per row (bench/gpu/bench_table.py).
# With --no-tests --no-sanitize only the benchmarks are built.
# The test programs and benchmarks link the development code of the CUDA
# backend (bench/gpu/dev: the previous scan kernel, input fills, session
# hooks); the module must not ship it (checked after the build).
#
# The peer, mamba_ssm: when .peer/ holds the source packages of mamba_ssm
# 2.3.2.post1 and causal-conv1d 1.7.0 (bench/gpu/fetch_mamba_ssm.sh fetches
# them; name .peer in the device tool's carry), bench/gpu/build_mamba_ssm.sh
# builds them here (sm_90, forward only; in the background, beside our
# build; kept in $PEER_BUILD, default /tmp/lm-mamba-ssm, and reused on a warm
# machine), and every benchmark table gets a mamba_ssm column measured in
# this run on the same checkpoints (bench/gpu/bench_mamba_ssm.py), plus its
# scan kernel beside ours.  --no-peer skips it; without .peer/ the table
# says so.
# Environment: SAN_TOOLS (default "memcheck racecheck"), SAN_TESTS (the
# test programs run under them, default all: e.g. "kernels batch"),
# E2E_ARGS / PEER_ARGS (more arguments for bench_e2e / bench_mamba_ssm.py,
# e.g. "--lengths 16384"), KEEP_BUILD=1
# (reuse an existing $BUILD: a second call on a warm machine), HF_TIMEOUT,
# HF_BUDGET (below).
#
# Build dependencies missing on the machine (Check, a CBLAS, utf8proc,
# pcre2, pkg-config) are taken from .gpudeps/ when present (copies of the
# Debian 12 packages: see the comment at the end of this file).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 1  # meson setup below configures the current folder
OUT=${OUT:-$REPO/gpu-check-out}
BUILD=${BUILD:-/tmp/lm-gpu-build}
CKPT=${CKPT:-/tmp/lm-bench-ckpt}
HF_TIMEOUT=${HF_TIMEOUT:-900}  # whole transformers timing run, seconds
HF_BUDGET=${HF_BUDGET:-60}     # one transformers measurement: longer ones are skipped or shortened
QUICK=0 QBENCH=0 TESTS=1 SAN=1 BENCH=1 HF=1 SCAN=1 PEER=1 PROF=0 PROFS=0 MAKEDEPS=0 SHAPES=""
want_shapes=0
for a in "$@"; do
    if [ $want_shapes = 1 ]; then SHAPES=$a; want_shapes=0; continue; fi
    case $a in
    --quick) QUICK=1 QBENCH=1 ;;
    --quick-bench) QBENCH=1 ;;
    --no-tests) TESTS=0 ;;
    --no-sanitize) SAN=0 ;;
    --no-bench) BENCH=0 ;;
    --no-hf) HF=0 ;;
    --no-scan) SCAN=0 ;;
    --no-peer) PEER=0 ;;
    --shapes) want_shapes=1 ;;
    --shapes=*) SHAPES=${a#--shapes=} ;;
    --profile-decode) PROF=1 ;;
    --profile-scan) PROFS=1 ;;
    --make-deps) MAKEDEPS=1 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
    esac
done
if [ $MAKEDEPS = 1 ]; then
    # Copies of Debian 12's check, subunit, netlib BLAS (with CBLAS),
    # utf8proc, pcre2 and pkgconf, with relocatable .pc files, for a GPU
    # machine that lacks them (name .gpudeps in the device tool's carry).
    D=$REPO/.gpudeps
    A=/usr/lib/x86_64-linux-gnu
    rm -rf "$D" && mkdir -p "$D/include" "$D/lib" "$D/pkgconfig" "$D/bin" || exit 1
    cp /usr/include/check.h /usr/include/check_stdint.h /usr/include/utf8proc.h /usr/include/pcre2.h "$D/include/" &&
    cp /usr/include/x86_64-linux-gnu/cblas-netlib.h "$D/include/cblas.h" &&
    cp /usr/include/x86_64-linux-gnu/cblas_mangling.h /usr/include/x86_64-linux-gnu/cblas_f77.h "$D/include/" &&
    cp $A/libcheck_pic.a $A/libsubunit.a "$D/lib/" &&
    cp $A/blas/libblas.so.3 "$D/lib/libblas.so.3" && cp "$D/lib/libblas.so.3" "$D/lib/libblas.so" &&
    cp $A/libutf8proc.so.2 "$D/lib/" && cp "$D/lib/libutf8proc.so.2" "$D/lib/libutf8proc.so" &&
    cp $A/libpcre2-8.so.0 "$D/lib/" && cp "$D/lib/libpcre2-8.so.0" "$D/lib/libpcre2-8.so" &&
    cp /lib/x86_64-linux-gnu/libpkgconf.so.3 "$D/lib/" && cp /usr/bin/pkgconf "$D/bin/pkgconf.bin" || exit 1
    printf '%s\n' '#!/bin/sh' 'd=$(dirname "$(readlink -f "$0")")' \
        'LD_LIBRARY_PATH="$d/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$d/pkgconf.bin" "$@"' >"$D/bin/pkg-config"
    chmod +x "$D/bin/pkg-config"
    pc() { # name version libs cflags description
        printf 'prefix=${pcfiledir}/..\nlibdir=${prefix}/lib\nincludedir=${prefix}/include\nName: %s\nDescription: %s (carried)\nVersion: %s\n%sLibs: %s\nCflags: %s\n' \
            "$1" "$5" "$2" "${6:-}" "$3" "$4" >"$D/pkgconfig/$1.pc"
    }
    pc check 0.15.2 '-L${libdir} -lcheck_pic -lrt -lm' '-I${includedir} -pthread' 'Check' 'Requires: libsubunit
'
    pc libsubunit 1.4.0 '-L${libdir} -lsubunit' '-I${includedir}' 'subunit'
    pc blas 3.11.0 '-L${libdir} -Wl,-rpath,${libdir} -lblas' '-I${includedir}' 'netlib BLAS with CBLAS'
    pc libutf8proc 2.6.0 '-L${libdir} -Wl,-rpath,${libdir} -lutf8proc' '-I${includedir} -DUTF8PROC_EXPORTS' 'utf8proc'
    pc libpcre2-8 10.42 '-L${libdir} -Wl,-rpath,${libdir} -lpcre2-8' '-I${includedir}' 'PCRE2 8-bit'
    du -sh "$D"
    exit 0
fi

mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
# Detailed logs go to $OUT/logs and end up in $OUT/logs.tar.gz (the device
# tool returns at most 8 files), also when the run is stopped.
LOGS=$OUT/logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
pack() { [ -d "$LOGS" ] && tar czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"; }
trap pack EXIT
trap 'echo "stopped"; exit 124' TERM INT
row() { printf '%-44s %s\n' "$1" "$2" | tee -a "$SUMMARY" >/dev/null; }
t_start=$(date +%s)

# ---- environment -----------------------------------------------------------
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
    nvcc --version 2>&1 | tail -2
    echo "meson $(meson --version 2>&1)  ninja $(ninja --version 2>&1)"
    echo "pkg-config: $(command -v pkg-config || echo none)"
    python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1
    command -v compute-sanitizer || echo "compute-sanitizer: none"
} >"$LOGS/env.txt" 2>&1
cat "$LOGS/env.txt"

DEPS=$REPO/.gpudeps
if [ -d "$DEPS" ]; then
    command -v pkg-config >/dev/null || export PATH=$DEPS/bin:$PATH
    export PKG_CONFIG_PATH=$DEPS/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    export LD_LIBRARY_PATH=$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
BLAS=openblas
pkg-config --exists openblas 2>/dev/null || BLAS=cblas
TESTS_OPT=true
pkg-config --exists check 2>/dev/null || { TESTS_OPT=false; echo "no Check: GPU tests not built"; }

# ---- the peer (mamba_ssm), built in the background beside ours ---------------
PEER_BUILD=${PEER_BUILD:-/tmp/lm-mamba-ssm}
peer_pid=""
if [ $BENCH = 1 ] && [ $PEER = 1 ] && ls "$REPO"/.peer/mamba_ssm-*.tar.gz >/dev/null 2>&1; then
    echo "== mamba_ssm: building from .peer/ in the background -> $PEER_BUILD =="
    bash "$REPO/bench/gpu/build_mamba_ssm.sh" "$REPO/.peer" "$PEER_BUILD" >"$LOGS/peer_build.log" 2>&1 &
    peer_pid=$!
elif [ $BENCH = 1 ] && [ $PEER = 1 ]; then
    echo "no .peer/ (bench/gpu/fetch_mamba_ssm.sh): benchmarks without mamba_ssm"
fi

# ---- build -----------------------------------------------------------------
# only the benchmarks when no test runs (saves most of the build)
TARGETS=""
[ $TESTS = 0 ] && [ $SAN = 0 ] && TARGETS="bench/gpu/bench_e2e bench/gpu/bench_scan lib/libongmamba-cuda.so"  # the module: bench_e2e loads it at run time
echo "== build ($BLAS, tests=$TESTS_OPT${TARGETS:+, targets: $TARGETS}) =="
# KEEP_BUILD=1: reuse an existing $BUILD (a second call on a warm machine)
if [ "${KEEP_BUILD:-0}" = 1 ] && [ -f "$BUILD/build.ninja" ]; then
    SETUP=true
else
    rm -rf "$BUILD"
    SETUP=false
fi
if ! { $SETUP || meson setup "$BUILD" -Dcuda=enabled -Dblas=$BLAS -Dtests=$TESTS_OPT -Dexamples=false \
        -Dbuildtype=release >"$LOGS/build.log" 2>&1; } ||
   ! ninja -C "$BUILD" $TARGETS >>"$LOGS/build.log" 2>&1; then
    tail -40 "$LOGS/build.log"
    row "build" "FAILED (build.log)"
    cat "$SUMMARY"
    exit 1
fi
grep -iE "warning" "$LOGS/build.log" | grep -iE "cuda/|test/gpu|bench/gpu" >"$LOGS/build_warnings.txt"
if [ -f "$BUILD/lib/libongmamba-cuda.so" ]; then
    dev_syms=$(nm -C "$BUILD/lib/libongmamba-cuda.so" 2>/dev/null | grep -cE 'chunk_kernel_v2|fill_uniform|lmc_dev_')
    row "module without development code" "$([ "$dev_syms" = 0 ] && echo ok || echo "FAILED ($dev_syms symbols)")"
fi
row "build" "ok ($(wc -l <"$LOGS/build_warnings.txt") warnings in cuda/, test/gpu, bench/gpu; $(( $(date +%s) - t_start )) s)"
# The CUDA backend is the module $BUILD/lib/libongmamba-cuda.so, loaded by
# libongmamba.so (which links no CUDA library) on first use: check that it
# loads and sees the GPU (lm_backend_status), through the public library.
if [ -z "$TARGETS" ]; then
    cuda_needed=$(readelf -d "$BUILD/lib/libongmamba.so" 2>/dev/null | grep -ciE 'NEEDED.*(cudart|cublas)')
    ms=$(python3 - "$BUILD/lib/libongmamba.so" 2>&1 <<'PY'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1]); buf = ctypes.create_string_buffer(512)
st = lib.lm_backend_status(2, buf, 512)  # LM_BACKEND_CUDA
print("ok" if st == 0 else "FAIL (status %d: %s)" % (st, buf.value.decode()))
PY
)
    [ "$cuda_needed" = 0 ] || ms="FAIL: libongmamba.so links $cuda_needed CUDA libraries; $ms"
    row "CUDA module (lm_backend_status)" "$ms"
fi
G=$BUILD/test/gpu
Q=""
[ $QUICK = 1 ] && Q="--quick"
QB=""
[ $QBENCH = 1 ] && QB="--quick"

# ---- tests -----------------------------------------------------------------
if [ $TESTS = 1 ] && [ -x "$G/test_gpu_kernels" ]; then
    for t in kernels model fixtures batch mamba2 sample prefill_batch ext module; do
        if [ ! -x "$G/test_gpu_$t" ]; then
            row "test_gpu_$t" "skip (not built)"
            continue
        fi
        echo "== test_gpu_$t =="
        t0=$(date +%s)
        "$G/test_gpu_$t" $Q >"$LOGS/test_$t.log" 2>&1
        rc=$?
        grep -E "^(FAIL|SKIP|note)" "$LOGS/test_$t.log" | head -20
        tail -1 "$LOGS/test_$t.log"
        # 77 (no device) is a failure here: this script runs on the GPU machine
        case $rc in 0) s=pass ;; 77) s="FAIL (rc 77: no CUDA device)" ;; *) s="FAIL (rc $rc)" ;; esac
        row "test_gpu_$t" "$s: $(tail -1 "$LOGS/test_$t.log") [$(( $(date +%s) - t0 )) s]"
    done
fi

# ---- compute-sanitizer -----------------------------------------------------
if [ $SAN = 1 ] && [ -x "$G/test_gpu_kernels" ] && command -v compute-sanitizer >/dev/null; then
    for tool in ${SAN_TOOLS:-memcheck racecheck}; do
        for t in ${SAN_TESTS:-kernels model fixtures batch mamba2 sample prefill_batch ext module}; do
            [ -x "$G/test_gpu_$t" ] || continue
            echo "== compute-sanitizer $tool test_gpu_$t --quick =="
            t0=$(date +%s)
            extra=""
            [ $tool = memcheck ] && extra="--leak-check full"
            # Known: racecheck reports 2 shared-memory hazards inside cuBLAS's
            # own kernel nvjet_sm90_tss_8x64_64x16_4x1_v_badd_TNN (fp32 GEMM,
            # beta = 1, m = n = 64, k = 1024: the "decode split rows" model's
            # out_proj); none in our kernels.  They are error-level, so
            # --racecheck-detect-level error does not hide them.  The machine
            # has Compute Sanitizer 2025.3.1; NVIDIA's release notes list
            # racecheck false positives fixed later for Hopper mbarrier and
            # warpgroup synchronisation (2025.4, 2026.1, 2026.3), which is
            # how Hopper GEMM kernels synchronise.  Excluding the kernel with
            # --kernel-name-exclude kns=nvjet made racecheck fail internally
            # ("failed to handle a hardware exception"); the documented way
            # to silence a known report is --save F --xml once, then
            # --suppressions F.  Until then the row below says when every
            # hazard is inside nvjet; read san_racecheck_model.log for where.
            compute-sanitizer --tool $tool $extra --report-api-errors no --error-exitcode 99 \
                "$G/test_gpu_$t" --quick >"$LOGS/san_${tool}_$t.log" 2>&1
            rc=$?
            summ=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY" "$LOGS/san_${tool}_$t.log" | tr '\n' ' ')
            tail -3 "$LOGS/san_${tool}_$t.log"
            case $rc in 0) s=clean ;; 99) s="ERRORS" ;; *) s="test rc $rc" ;; esac
            if [ $tool = racecheck ] && [ $rc = 99 ] && grep -q "^0 of .* checks failed" "$LOGS/san_${tool}_$t.log" &&
               ! grep -E "Race reported" "$LOGS/san_${tool}_$t.log" | grep -vq nvjet; then
                s="hazards only inside cuBLAS (nvjet) kernels"
            fi
            row "sanitizer $tool test_gpu_$t" "$s ${summ} [$(( $(date +%s) - t0 )) s]"
        done
    done
fi

# ---- benchmarks ------------------------------------------------------------
if [ $BENCH = 1 ]; then
    if [ $SCAN = 1 ]; then
        echo "== bench_scan =="
        "$BUILD/bench/gpu/bench_scan" $QB --csv "$LOGS/bench_scan.csv" 2>&1 | tee "$LOGS/bench_scan.txt"
        awk 'NF==9 && $1==1536 && $2==1 && $3==16384 {print "scan E=1536 B=1 L=16k filter " $4 ": " $6 " ms, " $7 " GB/s (" $8 " of copy)"}' \
            "$LOGS/bench_scan.txt" | while read -r l; do row "${l%%:*}" "${l#*: }"; done
        awk 'NF==9 && $1==5120 && $2==1 && $3==16384 && $4=="off" {print "scan E=5120 B=1 L=16k: " $6 " ms"}' \
            "$LOGS/bench_scan.txt" | while read -r l; do row "${l%%:*}" "${l#*: }"; done
    fi
    if [ -z "$SHAPES" ]; then
        SHAPES=mamba-130m,mamba-1.4b,mamba2-130m,mamba2-1.3b
        [ $QBENCH = 1 ] && SHAPES=mamba-130m,mamba2-130m
    fi
    HFQ=""
    [ $QBENCH = 1 ] && HFQ="--quick"
    rm -f "$LOGS/rows_hf.tsv" "$LOGS/rows_ours.tsv" "$LOGS/rows_peer.tsv"
    peer_path=""
    if [ -n "$peer_pid" ]; then
        t0=$(date +%s)
        if wait "$peer_pid"; then
            peer_path=$(tail -n 1 "$LOGS/peer_build.log")
            row "mamba_ssm build + check" "ok: $(grep -E 'vs float64' "$LOGS/peer_build.log" | tr '\n' ';') [waited $(( $(date +%s) - t0 )) s]"
        else
            tail -20 "$LOGS/peer_build.log"
            row "mamba_ssm build + check" "FAIL (peer_build.log)"
        fi
    fi
    if [ -n "$peer_path" ] && [ $SCAN = 1 ]; then
        PYTHONPATH="$peer_path" python3 "$REPO/bench/gpu/bench_mamba_ssm.py" --scan >"$LOGS/peer_scan.txt" 2>&1 ||
            row "mamba_ssm scan" "FAIL (peer_scan.txt)"
        grep '^scan ' "$LOGS/peer_scan.txt" | while read -r l; do row "${l%%:*}" "${l#*: }"; done
    fi
    echo "== checkpoints ($SHAPES) -> $CKPT =="
    t0=$(date +%s)
    # transformers writes the checkpoints both sides load, then is timed on
    # them in its own process (its GPU memory is free again before ours runs)
    PYTHONUNBUFFERED=1 python3 "$REPO/bench/gpu/bench_hf.py" --write "$CKPT" --shapes "$SHAPES" \
        --rows "$LOGS/rows_hf.tsv" >"$LOGS/bench_hf_write.txt" 2>&1
    rc=$?
    grep -vE "Loading weights|Writing model" "$LOGS/bench_hf_write.txt" | tail -12
    [ $rc = 0 ] || row "checkpoints (bench_hf.py --write)" "FAIL (exit status $rc)"
    row "checkpoints" "$SHAPES [$(( $(date +%s) - t0 )) s]"
    ck_rc=$rc
    if [ $HF = 1 ] && [ $rc = 0 ]; then
        echo "== transformers =="
        t0=$(date +%s)
        PYTHONUNBUFFERED=1 timeout "$HF_TIMEOUT" python3 "$REPO/bench/gpu/bench_hf.py" --bench --dir "$CKPT" \
            --shapes "$SHAPES" $HFQ --budget "$HF_BUDGET" --rows "$LOGS/rows_hf.tsv" >"$LOGS/bench_hf.txt" 2>&1
        rc=$?
        grep -E "^HF |transformers |mamba_ssm|Error|error" "$LOGS/bench_hf.txt" | tail -40
        case $rc in 0) ;; 124) row "transformers (bench_hf.py)" "stopped after ${HF_TIMEOUT} s (HF_TIMEOUT)" ;;
            *) row "transformers (bench_hf.py)" "FAIL (exit status $rc)" ;; esac
        row "transformers timed" "[$(( $(date +%s) - t0 )) s]"
    fi
    # ours first: a run stopped by its time limit keeps our rows
    echo "== bench_e2e =="
    t0=$(date +%s)
    "$BUILD/bench/gpu/bench_e2e" --dir "$CKPT" --shapes "$SHAPES" $QB ${E2E_ARGS:-} --rows "$LOGS/rows_ours.tsv" \
        >"$LOGS/bench_e2e.txt" 2>&1
    rc=$?
    cat "$LOGS/bench_e2e.txt"
    [ $rc = 0 ] || row "bench_e2e" "FAIL (exit status $rc)"
    row "bench_e2e" "[$(( $(date +%s) - t0 )) s]"
    if [ -n "$peer_path" ] && [ $ck_rc = 0 ]; then
        echo "== mamba_ssm =="
        t0=$(date +%s)
        PYTHONUNBUFFERED=1 PYTHONPATH="$peer_path" timeout "$HF_TIMEOUT" python3 "$REPO/bench/gpu/bench_mamba_ssm.py" \
            --dir "$CKPT" --shapes "$SHAPES" $HFQ ${PEER_ARGS:-} --rows "$LOGS/rows_peer.tsv" >"$LOGS/bench_peer.txt" 2>&1
        prc=$?
        grep -E "^mamba_ssm |Error|error" "$LOGS/bench_peer.txt" | tail -40
        [ $prc = 0 ] || row "mamba_ssm (bench_mamba_ssm.py)" "FAIL (exit status $prc, bench_peer.txt)"
        row "mamba_ssm timed" "[$(( $(date +%s) - t0 )) s]"
    fi
    python3 "$REPO/bench/gpu/bench_table.py" "$LOGS/rows_ours.tsv" "$LOGS/rows_peer.tsv" "$LOGS/rows_hf.tsv" --notes \
        >"$LOGS/bench_table.txt" 2>&1
    echo >>"$SUMMARY"
    echo "end to end, same checkpoints (notes: logs/bench_table.txt)" >>"$SUMMARY"
    sed '/^notes:/,$d' "$LOGS/bench_table.txt" >>"$SUMMARY"
fi

if [ $PROFS = 1 ] && command -v ncu >/dev/null; then
    echo "== ncu: scan kernels, E 1536, L 16k =="
    timeout 180 ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats \
        -k 'regex:chunk_kernel' --launch-skip 4 --launch-count 2 \
        "$BUILD/bench/gpu/bench_scan" --quick >"$LOGS/ncu_scan.txt" 2>&1
    grep -E "chunk_kernel|Duration|Achieved Occupancy|Theoretical Occupancy|Registers Per|Issued Warp|No Eligible|Stall|Compute \(SM\) Throughput|Memory Throughput" \
        "$LOGS/ncu_scan.txt" | sed 's/^/ncu scan /' | cut -c1-150 | head -40 | tee -a "$SUMMARY"
fi

if [ $PROF = 1 ] && command -v ncu >/dev/null; then
    echo "== ncu: kernels of one 130m decode step =="
    # the 20 steps come after the 128-token prefill; skip the first 10 steps
    [ -f "$CKPT/mamba-130m/config.json" ] ||
        python3 "$REPO/bench/gpu/bench_hf.py" --write "$CKPT" --shapes mamba-130m >"$LOGS/bench_hf_write_prof.txt" 2>&1
    timeout 240 ncu --clock-control none --graph-profiling node --metrics gpu__time_duration.sum --csv \
        -k 'regex:dec_|embed_kernel' --launch-skip 1000 --launch-count 98 \
        "$BUILD/bench/gpu/bench_e2e" --decode-only --dir "$CKPT" --shapes mamba-130m >"$LOGS/ncu_decode.csv" 2>&1
    python3 - "$LOGS/ncu_decode.csv" <<'PY' | tee -a "$SUMMARY"
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:
    print("ncu: no data"); sys.exit()
h = rows[0]; ki = h.index("Kernel Name"); vi = h.index("Metric Value"); ui = h.index("Metric Unit")
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows[1:]:
    v = float(r[vi].replace(",", "")); u = r[ui]
    v = v / 1000.0 if u in ("ns", "nsecond") else (v if u in ("us", "usecond") else v * 1000.0)
    name = r[ki].replace("<unnamed>::", "").replace("(GemvP)", "").replace("(StepP)", "")
    tot[name] += v; cnt[name] += 1
for k in sorted(tot, key=lambda k: -tot[k]):
    print(f"ncu decode 130m {k[:60]:<60} x{cnt[k]:<3} {tot[k]:8.1f} us")
print(f"ncu decode 130m total kernel time {sum(tot.values()):.1f} us over {sum(cnt.values())} kernels")
PY
fi

echo
echo "================ summary ($(( $(date +%s) - t_start )) s) ================"
cat "$SUMMARY"
! grep -qE "FAIL|ERRORS" "$SUMMARY"

# .gpudeps/ (ignored by git, carried to the GPU machine with `carry`): Debian 12
# copies of check.h, libcheck_pic.a, libsubunit.a, netlib libblas.so.3 (with
# CBLAS; header cblas-netlib.h as cblas.h), libutf8proc.so.2, libpcre2-8.so.0,
# their headers, pkgconf + libpkgconf.so.3 as bin/pkg-config, and .pc files
# whose prefix is ${pcfiledir}/..
