#!/usr/bin/env bash
# .ci/hardening.sh - the reliability legs (docs/RELIABILITY.md), called by
# .ci/run after the main legs; each builds in its own directory:
#   1. fuzzing      fuzz/run.sh: seven libFuzzer targets, FUZZ_SECONDS each
#                   (default 30), two at a time; any crash fails
#   2. ABI          abi/check.sh: abidiff against abi/libongmamba.abi
#   3. TSan         .ci/tsan.sh: the 8-thread stress test under ThreadSanitizer
#   4. allocation   test/faultinject: every allocation of load, session,
#      failures     prefill, decode, modes, calibration files, tokenizer and
#                   scan fails once; then a sample of them under valgrind
# Build directories: ${HARDENING_PREFIX:-build}-{fuzz,abi,tsan,faultinject}.
# Every leg runs even if an earlier one failed; the exit status is non-zero
# if any failed.  Budget: about 5 minutes on 2 cores (fuzzing 3 of them).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
started=$(date +%s)
jobs=$(nproc 2>/dev/null || echo 2)
prefix=${HARDENING_PREFIX:-build}
say() { printf '\n==== hardening: %s (%ds)\n' "$*" "$(($(date +%s) - started))"; }

# ---- tools this script needs beyond the main build's (one list: scripts/setup.sh) --
bash scripts/setup.sh deps ci || exit 1

passed=()
failed=()
leg() {  # leg NAME command...
    local name=$1
    shift
    say "$name"
    local t0
    t0=$(date +%s)
    if "$@"; then
        echo "---- $name: ok ($(($(date +%s) - t0)) s)"
        passed+=("$name")
    else
        echo "---- $name: FAILED ($(($(date +%s) - t0)) s)"
        failed+=("$name")
    fi
}

# ---- 1. fuzzing --------------------------------------------------------------------
fuzz() { FUZZ_BUILD="$PWD/$prefix-fuzz" FUZZ_JOBS=$jobs fuzz/run.sh "${FUZZ_SECONDS:-30}"; }
leg "fuzzing (${FUZZ_SECONDS:-30} s per target)" fuzz

# ---- 2. ABI --------------------------------------------------------------------------
abi() { ABI_BUILD="$PWD/$prefix-abi" abi/check.sh; }
leg "ABI (abidiff against abi/libongmamba.abi)" abi

# ---- 3. ThreadSanitizer ----------------------------------------------------------------
leg "ThreadSanitizer stress" .ci/tsan.sh "$prefix-tsan"

# ---- 4. allocation failures --------------------------------------------------------------
fi_build() {
    local b=$prefix-faultinject
    if [ -f "$b/build.ninja" ]; then
        meson configure "$b" --buildtype=debugoptimized -Dcuda=disabled -Dexamples=false >/dev/null
    else
        meson setup "$b" --buildtype=debugoptimized -Dcuda=disabled -Dexamples=false >/dev/null
    fi && ninja -C "$b" test/faultinject/faultinject_driver test/faultinject/libfaultinject.so
}
fi_run() {
    LD_PRELOAD="$PWD/$prefix-faultinject/test/faultinject/libfaultinject.so" \
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$prefix-faultinject/test/faultinject/faultinject_driver"
}
fi_valgrind() {
    # Every 8th allocation of load + session and of the tokenizer, under
    # memcheck: invalid accesses and uninitialised reads on the error paths.
    # (nouserintercepts: the shim's malloc is called, and forwards to
    # valgrind's.  Valgrind has no AVX-512: OpenBLAS stays on AVX2.)
    LD_PRELOAD="$PWD/$prefix-faultinject/test/faultinject/libfaultinject.so" LMFI_STRIDE=8 \
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell \
        valgrind -q --soname-synonyms=somalloc=nouserintercepts --error-exitcode=99 \
        --leak-check=full --errors-for-leak-kinds=definite \
        "$prefix-faultinject/test/faultinject/faultinject_driver" model-tiny tokenizer scan
}
if leg "allocation-failure build" fi_build; then
    leg "allocation failures (every site)" fi_run
    leg "allocation failures under valgrind (every 8th)" fi_valgrind
fi

say "summary"
echo "passed: ${passed[*]:-none}"
[ "${#failed[@]}" -gt 0 ] && printf 'FAILED: %s\n' "${failed[@]}"
echo "hardening: ${#passed[@]} legs passed, ${#failed[@]} legs failed in $(($(date +%s) - started)) s"
[ "${#failed[@]}" -eq 0 ]
