#!/usr/bin/env bash
# abi/check.sh - the ABI gate: compares libongmamba.so against the
# committed baseline abi/libongmamba.abi (abidw of a -g build, exported
# interfaces of the public header only) with abidiff and the suppressions
# in abi/suppressions.abignore.
#
#   abi/check.sh              build build-abi (debugoptimized, CPU only) and check it
#   abi/check.sh LIB          check an existing -g build of the library
#   abi/check.sh --update     rewrite the baseline from a fresh build-abi
#                             (only with a SONAME bump or a reviewed,
#                             compatible addition: docs/ABI.md)
#
# Verdict (abidiff's exit status is a bitmask: 1 error, 2 usage, 4 ABI
# change, 8 incompatible change):
#   - bits 1, 2 or 8                       fail
#   - bit 4 with removed or changed functions or variables   fail
#     (a type change that the suppressions do not allow, e.g. a member
#     inserted into the middle of a struct, shows up as changed functions)
#   - bit 4 with additions only (new functions)             pass, with a
#     note to refresh the baseline
# Needs abigail-tools (abidw, abidiff).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
baseline=$here/libongmamba.abi
suppr=$here/suppressions.abignore
abidw_opts=(--headers-dir "${ABI_HEADERS:-$root/include}" --drop-private-types --exported-interfaces-only
            --no-elf-needed --no-corpus-path --no-comp-dir-path --no-show-locs
            --type-id-style hash)

for tool in abidw abidiff; do
    command -v "$tool" >/dev/null 2>&1 ||
        { echo "abi/check.sh: $tool not found (apt-get install abigail-tools)" >&2; exit 1; }
done

build_lib() {
    local b=${ABI_BUILD:-$root/build-abi}
    local re=()
    [ -f "$b/build.ninja" ] && re=(--reconfigure)
    mkdir -p "$b"
    if ! (cd "$root" && meson setup "$b" "${re[@]}" --buildtype=debugoptimized -Dcuda=disabled \
            -Dtests=false -Dexamples=false >"$b/abi-build.log" 2>&1 &&
          ninja -C "$b" >>"$b/abi-build.log" 2>&1); then
        tail -n 30 "$b/abi-build.log" >&2
        return 1
    fi
    lib=$b/lib/libongmamba.so
}

update=0
lib=
case "${1:-}" in
--update) update=1 ;;
"") ;;
*) lib=$1 ;;
esac
if [ -z "$lib" ]; then build_lib || { echo "abi/check.sh: build failed" >&2; exit 1; }; fi

if [ "$update" = 1 ]; then
    abidw "${abidw_opts[@]}" --out-file "$baseline" "$lib" || exit 1
    echo "baseline written: $baseline ($(grep -c '<elf-symbol ' "$baseline") symbols)"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Compare abixml with abixml so both sides went through the same options.
abidw "${abidw_opts[@]}" --out-file "$tmp/current.abi" "$lib" || exit 1
abidiff --suppressions "$suppr" --no-added-syms "$baseline" "$tmp/current.abi" >"$tmp/report"
rc=$?
# Additions are reported separately (abidiff without --no-added-syms).
abidiff --suppressions "$suppr" "$baseline" "$tmp/current.abi" >"$tmp/full" || true

summary() {  # summary KIND (Functions|Variables): "removed changed added"
    sed -nE "s/^$1 changes summary: ([0-9]+) Removed, ([0-9]+) Changed( \([0-9]+ filtered out\))?, ([0-9]+) Added.*/\1 \2 \4/p" "$tmp/full" | head -n 1
}
read -r fr fc fa <<<"$(summary Functions)"
read -r vr vc va <<<"$(summary Variables)"
fr=${fr:-0} fc=${fc:-0} fa=${fa:-0} vr=${vr:-0} vc=${vc:-0} va=${va:-0}

verdict=ok
if (( rc & 3 )); then
    verdict="abidiff failed (exit $rc)"
elif (( rc & 8 )); then
    verdict="INCOMPATIBLE change (abidiff exit $rc)"
elif (( fr + fc + vr + vc > 0 )); then
    verdict="ABI change: $fr removed, $fc changed functions; $vr removed, $vc changed variables"
fi
if [ "$verdict" != ok ]; then
    cat "$tmp/full"
    echo "abi/check.sh: FAILED: $verdict"
    echo "  (an intended break needs a SONAME bump and abi/check.sh --update: docs/ABI.md)"
    exit 1
fi
if (( fa + va > 0 )); then
    cat "$tmp/full"
    echo "abi/check.sh: ok, compatible additions ($fa functions, $va variables):"
    echo "  refresh the baseline with abi/check.sh --update when they are released"
else
    echo "abi/check.sh: ok, no ABI change against $(basename "$baseline")" \
         "($(grep -c '<elf-symbol ' "$baseline") symbols)"
fi
exit 0
