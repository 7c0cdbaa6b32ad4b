#!/usr/bin/env bash
# bindings/run_tests.sh BUILDDIR [cpp|python|rust|go ...]
#
# Builds and runs the binding test suites (default: all four) against the
# library of a Meson build tree, found the way an outside user would:
#   PKG_CONFIG_PATH=BUILDDIR/meson-uninstalled   (C++, Rust, Go)
#   LD_LIBRARY_PATH=BUILDDIR/lib                 (running anything)
#   LONGMAMBA_LIBRARY=BUILDDIR/lib/libongmamba.so (Python)
# Build outputs go to BUILDDIR/bindings-work; the source tree is not written.
# Needs: g++, pkg-config; the tests' Python (PYTHON, else the interpreter
# BUILDDIR/test-python.txt names) with pip, setuptools and pytest (NumPy
# optional: both array paths are tested either way); cargo/rustc >= 1.63
# (offline: no crates); go >= 1.19 with cgo.  Every suite runs even if an
# earlier one failed; the exit status is non-zero if any failed.
set -uo pipefail

if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 BUILDDIR [cpp|python|rust|go ...]" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
shift
suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(cpp python rust go)

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
data="$repo/test/data"
fixture="$data/fixtures/m1-tiny-f32"
work="$build/bindings-work"
mkdir -p "$work"

lib="$build/lib/libongmamba.so"
if [ ! -e "$lib" ] || [ ! -f "$build/meson-uninstalled/longmamba-uninstalled.pc" ]; then
    echo "FAIL: $build has no lib/libongmamba.so or meson-uninstalled/longmamba-uninstalled.pc (build it first)" >&2
    exit 1
fi
export PKG_CONFIG_PATH="$build/meson-uninstalled${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LONGMAMBA_LIBRARY="$lib"
export LONGMAMBA_TEST_DATA="$data"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

started=$(date +%s)
say() { printf '\n==== bindings: %s (%ds)\n' "$*" "$(($(date +%s) - started))"; }

# ---- C++ -----------------------------------------------------------------------
suite_cpp() {
    local cxx=${CXX:-g++} flags
    flags=$(pkg-config --cflags --libs longmamba) || return 1
    # The public header, unchanged, under every C++ standard -pedantic.
    for std in c++11 c++14 c++17 c++20; do
        printf '#include <longmamba.h>\nint main() { lm_model_params p; lm_model_params_init(&p); return p.struct_size == sizeof p ? 0 : 1; }\n' |
            $cxx -x c++ -std=$std -Wall -Wextra -pedantic -Werror -o "$work/cpp-header-$std" - $flags || return 1
        "$work/cpp-header-$std" || { echo "struct_size mismatch under $std"; return 1; }
        echo "header: $std ok"
    done
    # shellcheck disable=SC2086
    $cxx -std=c++17 -Wall -Wextra -pedantic -Werror -o "$work/cpp-example" "$here/cpp/example.cpp" $flags || return 1
    # shellcheck disable=SC2086
    $cxx -std=c++17 -Wall -Wextra -pedantic -Werror -o "$work/cpp-test" "$here/cpp/test.cpp" $flags || return 1
    "$work/cpp-test" "$data" || return 1
    "$work/cpp-example" "$fixture" || return 1
}

# ---- Python --------------------------------------------------------------------
suite_python() {
    # The tests' Python recorded by the build (never the first python3 on PATH).
    local py=${PYTHON:-$(cat "$build/test-python.txt" 2>/dev/null)}
    [ -n "$py" ] || { echo "no Python for the tests: set PYTHON, or configure $build with tests (it writes test-python.txt)"; return 1; }
    "$py" -c 'import pytest' 2>/dev/null ||
        { echo "pytest is not installed for $py: run 'bash scripts/setup.sh deps ci' (Debian: apt-get install python3-pytest)"; return 1; }
    # pip builds in the source directory: install from a copy.
    rm -rf "$work/py-src" "$work/py-site"
    cp -r "$here/python" "$work/py-src" || return 1
    # Build offline with the installed setuptools when it can make wheels on
    # its own (>= 70.1, or with `wheel`); otherwise pip fetches a build backend.
    local iso=()
    "$py" - 2>/dev/null <<'PY' && iso=(--no-build-isolation)
import setuptools
v = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
if v < (70, 1):
    import wheel  # noqa: F401
PY
    "$py" -m pip install -q --disable-pip-version-check --no-deps "${iso[@]}" \
        --target "$work/py-site" "$work/py-src" || return 1
    # The tests import the installed package, not the source tree.
    (cd "$work/py-src" &&
        PYTHONPATH="$work/py-site" PYTHONDONTWRITEBYTECODE=1 "$py" -c \
            'import longmamba, sys; print("longmamba from", longmamba.__file__, "numpy:", longmamba.numpy_enabled())' &&
        PYTHONPATH="$work/py-site" PYTHONDONTWRITEBYTECODE=1 "$py" -m pytest -q -p no:cacheprovider tests)
}

# ---- Rust ----------------------------------------------------------------------
suite_rust() {
    local cargo
    cargo=$(command -v cargo || ls /root/.cargo/bin/cargo "$HOME/.cargo/bin/cargo" 2>/dev/null | head -n 1)
    [ -n "$cargo" ] || { echo "cargo not found"; return 1; }
    export CARGO_NET_OFFLINE=true CARGO_TARGET_DIR="$work/rust-target"
    PATH="$(dirname "$cargo"):$PATH"
    (cd "$here/rust" &&
        cargo --version &&
        cargo test --offline --locked &&
        cargo run -q --offline --locked --example example -- "$fixture")
}

# ---- Go ------------------------------------------------------------------------
suite_go() {
    local gobin
    gobin=$(command -v go || ls /usr/lib/go-1.*/bin/go 2>/dev/null | tail -n 1)
    [ -n "$gobin" ] || { echo "go not found (apt-get install golang-go)"; return 1; }
    export GOFLAGS=-mod=mod GOPROXY=off GOCACHE="$work/go-cache" GOPATH="$work/gopath" CGO_ENABLED=1
    (cd "$here/go" &&
        "$gobin" version &&
        "$gobin" vet ./... &&
        "$gobin" test -count=1 -v ./... &&
        "$gobin" run ./example "$fixture")
}

failed=()
for s in "${suites[@]}"; do
    case $s in
    cpp | python | rust | go) ;;
    *) echo "unknown suite $s (cpp, python, rust, go)" >&2; exit 2 ;;
    esac
    say "$s"
    if "suite_$s"; then
        echo "---- bindings $s: ok"
    else
        echo "---- bindings $s: FAILED"
        failed+=("$s")
    fi
done

say "done"
if [ ${#failed[@]} -gt 0 ]; then
    echo "bindings: FAILED: ${failed[*]}"
    exit 1
fi
echo "bindings: all passed (${suites[*]})"
