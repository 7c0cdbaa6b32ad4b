#!/usr/bin/env bash
# fuzz/run.sh - build the libFuzzer targets with clang
# (-fsanitize=fuzzer,address,undefined) and run each for a bounded time.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
#
# Environment: FUZZ_BUILD (build dir, default build-fuzz), FUZZ_JOBS (targets
# run at once, default nproc), CC (default clang, then clang-14).
# Each target starts from its committed seeds (fuzz/corpus/NAME) plus the
# regression inputs (fuzz/regressions/NAME) and grows a scratch corpus in
# the build dir; the committed corpus is never written.  Any crash, leak,
# sanitizer report, timeout or out-of-memory fails the script; the
# reproducer is left as $FUZZ_BUILD/artifacts/NAME-crash-... - to keep it
# as a regression test, copy it into fuzz/regressions/NAME/ (the Meson test
# fuzz-replay-NAME replays that directory).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
secs=${1:-60}
shift || true
all=(json safetensors config calibration tokenizer_load tokenizer_encode gguf)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
build=${FUZZ_BUILD:-$root/build-fuzz}
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}

cc=${CC:-}
if [ -z "$cc" ]; then
    for c in clang clang-14; do command -v "$c" >/dev/null 2>&1 && cc=$c && break; done
fi
if [ -z "$cc" ]; then
    echo "fuzz/run.sh: clang not found (apt-get install clang libclang-rt-14-dev)" >&2
    exit 1
fi

mkdir -p "$build/obj" "$build/artifacts" "$build/logs"
pcs=$(pkg-config --cflags openblas libutf8proc libpcre2-8) || exit 1
pls=$(pkg-config --libs openblas libutf8proc libpcre2-8) || exit 1
read -ra pc <<<"$pcs"
read -ra libs <<<"$pls"
# shellcheck disable=SC2054  # (the commas belong to -fsanitize=)
cflags=(-std=gnu11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined
        -fno-sanitize-recover=undefined -Wall -Wno-unknown-pragmas
        -I"$root/include" -I"$root/lib" "${pc[@]}" -DLM_TEST_DATA="\"$root/test/data\"")

# ---- build: the library once (instrumented for coverage), then each target
echo "== building fuzz targets with $cc in $build"
t0=$(date +%s)
objs=()
pids=()
srcs=$(cd "$root" && ls lib/*.c lib/format/*.c lib/tokenizer/*.c lib/cpu/*.c lib/arch/*.c lib/mode/*.c)
for s in $srcs; do
    o="$build/obj/$(echo "$s" | tr '/' '_').o"
    objs+=("$o")
    if [ ! -f "$o" ] || [ "$root/$s" -nt "$o" ] || [ -n "$(find "$root/lib" "$root/include" -name '*.h' -newer "$o" | head -n 1)" ]; then
        "$cc" "${cflags[@]}" -fsanitize=fuzzer-no-link -c "$root/$s" -o "$o" &
        pids+=($!)
        if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}" || exit 1; pids=("${pids[@]:1}"); fi
    fi
done
for p in "${pids[@]}"; do wait "$p" || exit 1; done
for t in "${targets[@]}"; do
    "$cc" "${cflags[@]}" -fsanitize=fuzzer "$here/fuzz_$t.c" "${objs[@]}" "${libs[@]}" -lm -lpthread \
        -o "$build/fuzz_$t" || exit 1
done
echo "== built in $(($(date +%s) - t0)) s"

# ---- run ------------------------------------------------------------------------
run_one() {  # run_one NAME
    local t=$1 work="$build/corpus/$1" log="$build/logs/$1.log"
    local extra=()
    [ -f "$here/dict/$t.dict" ] && extra+=(-dict="$here/dict/$t.dict")
    mkdir -p "$work"
    local seeds=("$here/corpus/$t")
    [ -d "$here/regressions/$t" ] && seeds+=("$here/regressions/$t")
    # New inputs go to the first (scratch) directory; the seeds are read only.
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$build/fuzz_$t" "$work" "${seeds[@]}" \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" "${extra[@]}" >"$log" 2>&1
}

echo "== fuzzing ${targets[*]}: $secs s each, $jobs at a time"
declare -A status
running=()
names=()
for t in "${targets[@]}"; do
    run_one "$t" &
    running+=($!)
    names+=("$t")
    if [ ${#running[@]} -ge "$jobs" ]; then
        wait "${running[0]}"; status[${names[0]}]=$?
        running=("${running[@]:1}"); names=("${names[@]:1}")
    fi
done
for i in "${!running[@]}"; do wait "${running[$i]}"; status[${names[$i]}]=$?; done

# ---- report ----------------------------------------------------------------------
fail=0
printf '%-18s %8s %10s %8s %8s %s\n' target status execs exec/s cov result
for t in "${targets[@]}"; do
    log="$build/logs/$t.log"
    execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log")
    eps=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | awk '{print $2}')
    res=ok
    if [ "${status[$t]}" != 0 ]; then
        res="FAILED (see $log; reproducer in $build/artifacts/)"
        fail=1
    fi
    printf '%-18s %8s %10s %8s %8s %s\n' "$t" "${status[$t]}" "${execs:-?}" "${eps:-?}" "${cov:-?}" "$res"
done
if [ "$fail" != 0 ]; then
    for t in "${targets[@]}"; do
        [ "${status[$t]}" != 0 ] && { echo "---- $t: last lines of its log"; tail -n 40 "$build/logs/$t.log"; }
    done
    exit 1
fi
exit 0
