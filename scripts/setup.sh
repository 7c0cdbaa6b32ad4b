#!/usr/bin/env bash
# scripts/setup.sh - the one list of what this project needs from Debian 12,
# and the README's two commands, each complete from a fresh clone:
#
#   bash scripts/setup.sh main   install what the main job needs, build ./build,
#                                run the main job (scripts/main_job.sh)
#   bash scripts/setup.sh test   install what the tests need, build ./build,
#                                run the whole suite (meson test -v; further
#                                arguments go to meson test)
#
# and, for CI and scripts:
#
#   bash scripts/setup.sh deps SET...   install the packages of SET (build,
#                                       test, ci) and nothing else
#   bash scripts/setup.sh list SET...   print those packages, install nothing
#   bash scripts/setup.sh python        print the interpreter the tests use
#
# Every test that runs Python runs ONE interpreter, chosen here on purpose:
# Debian's /usr/bin/python3, whose modules (numpy, pytest) come from the
# same apt lists as everything else.  Never the first `python3` on PATH: on
# this project's machines that is a pyenv interpreter that cannot see
# Debian's python3-numpy.  The build records the choice (meson option
# `python`); override with LM_PYTHON=/path/to/python3 (it must have numpy).
#
# Installs with apt-get as root, or through sudo.  Without apt-get, or
# without root and sudo, it prints the exact packages to install and stops.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

# ---- the dependency list (the only one) -----------------------------------------
# build: the library (OpenBLAS; utf8proc and PCRE2 for the tokenizer), the
#        longmamba tool and the main job
pkgs_build=(meson ninja-build pkg-config gcc libc6-dev libopenblas-dev libutf8proc-dev libpcre2-dev)
# test:  Check (its check.pc links libsubunit), the tests' Python with NumPy
#        (the independent LongMamba reference, the CLI tests' file checks),
#        xz (compressed test data), nm (the exported-symbols test), jq and
#        gnuplot (scripts/plot_eval.sh, checked by the suite_cli test)
pkgs_test=(check libsubunit-dev python3 python3-numpy xz-utils binutils jq gnuplot-nox)
# ci:    the rest of .ci/run: valgrind; the bindings (C++, Python with pip,
#        setuptools and pytest, Rust, Go); hardening (.ci/hardening.sh:
#        clang + libFuzzer runtime, abidiff); the fresh-machine check
#        (.ci/fresh.sh: debootstrap, git, a bare virtualenv)
pkgs_ci=(valgrind g++ python3-pip python3-setuptools python3-pytest python3-venv cargo golang-go
         clang libclang-rt-14-dev abigail-tools debootstrap git ca-certificates)

test_python=${LM_PYTHON:-/usr/bin/python3}

packages_of() {  # packages_of SET... : the packages of each named set
    local s
    for s in "$@"; do
        case $s in
        build) printf '%s\n' "${pkgs_build[@]}" ;;
        test) printf '%s\n' "${pkgs_build[@]}" "${pkgs_test[@]}" ;;
        ci) printf '%s\n' "${pkgs_build[@]}" "${pkgs_test[@]}" "${pkgs_ci[@]}" ;;
        *) echo "setup.sh: unknown package set '$s' (build, test, ci)" >&2; return 2 ;;
        esac
    done | sort -u
}

install_sets() {  # install_sets SET... : apt-get install what is missing
    local all missing=() p sudo=""
    all=$(packages_of "$@") || return 2
    if command -v dpkg-query >/dev/null 2>&1; then
        for p in $all; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
        done
    else
        read -r -a missing <<<"$(echo $all)"
    fi
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "setup: Debian packages present ($*)"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else sudo="none"; fi
    fi
    if ! command -v apt-get >/dev/null 2>&1 || [ "$sudo" = none ]; then
        echo "setup: cannot install packages here (needs apt-get, and root or sudo)." >&2
        echo "setup: install these Debian 12 packages, then run this again:" >&2
        echo "  apt-get install -y --no-install-recommends ${missing[*]}" >&2
        return 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

configure() {  # configure BUILDDIR [meson options...]: set up, or reconfigure, with the tests' Python
    local b=$1
    shift
    if [ -f "$b/build.ninja" ]; then
        meson configure "$b" -Dpython="$test_python" "$@"
    else
        meson setup "$b" -Dpython="$test_python" "$@"
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
main)
    install_sets build
    cd "$root"
    configure build -Dtests=false
    ninja -C build
    exec bash scripts/main_job.sh
    ;;
test)
    install_sets test
    cd "$root"
    configure build -Dtests=true
    ninja -C build
    exec meson test -C build -v "$@"
    ;;
deps)
    [ $# -gt 0 ] || { echo "usage: setup.sh deps SET..." >&2; exit 2; }
    install_sets "$@"
    ;;
list)
    [ $# -gt 0 ] || { echo "usage: setup.sh list SET..." >&2; exit 2; }
    packages_of "$@" | tr '\n' ' '
    echo
    ;;
python)
    echo "$test_python"
    ;;
*)
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
