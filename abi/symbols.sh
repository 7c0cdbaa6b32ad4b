#!/usr/bin/env bash
# abi/symbols.sh LIB MAP HEADER - the exported-symbol gate (a Meson test).
#
# Three lists must be equal:
#   - the dynamic symbols LIB defines (nm -D --defined-only, version node
#     and version suffixes removed),
#   - the global: names of the version script MAP (lib/longmamba.map),
#   - the functions HEADER (include/longmamba.h) declares with LM_API.
# A symbol exported by accident, one missing from the map, or a declared
# function that does not reach the library fails the test with the diff.
set -euo pipefail
lib=$1 map=$2 header=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# nm: "ADDR TYPE NAME[@@VERSION]"; type A is the version node itself.
nm -D --defined-only "$lib" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' | sort -u >"$tmp/lib"
# map: the names between "global:" and "local:", one per line with ";".
awk '/global:/ {g = 1; next} /local:/ {g = 0} g && /^[[:space:]]*[A-Za-z_][A-Za-z0-9_]*;/ {
        gsub(/[[:space:];]/, ""); print }' "$map" | sort -u >"$tmp/map"
# header: "LM_API <type> name(" possibly with the name on the same line.
grep -v "^#" "$header" | grep -o "LM_API[^(]*(" | sed -E 's/.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*\($/\1/' |
    sort -u >"$tmp/header"

status=0
check() {  # check NAME_A FILE_A NAME_B FILE_B
    if ! diff -u --label "$1" --label "$3" "$2" "$4" >"$tmp/diff"; then
        echo "symbols differ between $1 (-) and $3 (+):"
        cat "$tmp/diff"
        status=1
    fi
}
check "map" "$tmp/map" "library exports" "$tmp/lib"
check "map" "$tmp/map" "header LM_API functions" "$tmp/header"
n=$(wc -l <"$tmp/map")
if [ "$n" -lt 10 ]; then
    echo "only $n symbols read from $map: the parser is broken"
    status=1
fi
if [ "$status" = 0 ]; then
    echo "ok: $n exported symbols, identical in the map, the library and the header"
fi
exit "$status"
