#!/usr/bin/env bash
# .ci/tsan.sh - the ThreadSanitizer leg: builds the library and the stress
# test (test/test_stress.c: 8 threads, one shared model, calibration and
# tokenizer) with -Db_sanitize=thread and runs it; any data race fails.
# OpenMP is disabled because libgomp is not TSan-instrumented (its barriers
# would be reported as races); OpenBLAS runs single-threaded for the same
# reason.  The library's own threading (sessions on one model) is what is
# checked.  LMI_NO_CLONES: the CPU kernels' target_clones ifunc resolvers
# run during relocation, before the TSan runtime is up, and crash when
# instrumented.
#
#   .ci/tsan.sh [BUILD_DIR]        (default build-tsan)
set -euo pipefail
cd "$(dirname "$0")/.."
b=${1:-build-tsan}
opts=(--buildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false -Dopenmp=disabled
      -Dcuda=disabled -Dexamples=false -Dc_args=-DLMI_NO_CLONES)
# (meson 1.0 ignores -Dc_args on "setup --reconfigure": configure an existing dir)
if [ -f "$b/build.ninja" ]; then meson configure "$b" "${opts[@]}" >/dev/null
else meson setup "$b" "${opts[@]}" >/dev/null; fi
ninja -C "$b" test/test_stress
# halt_on_error: the first race fails the run; exitcode 66 tells it apart.
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 history_size=4"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
# No fork per test: the report goes straight to this script's output.
CK_FORK=no LM_STRESS_ROUNDS=${LM_STRESS_ROUNDS:-2} "$b/test/test_stress"
