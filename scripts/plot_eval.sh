#!/usr/bin/env bash
# scripts/plot_eval.sh EVAL.json [OUT.png]
#
# The plot of a `longmamba eval --json` run: one panel per task, accuracy
# against prompt length for every mode, pooled over the needle depths, with
# the 95% Wilson interval of the pooled counts as error bars.  Needs jq and
# gnuplot (Debian/Ubuntu: apt-get install jq gnuplot-nox).
#
# OUT.png defaults to EVAL.png.  The .dat files it plots (one per task and
# mode: length, accuracy, wilson_lo, wilson_hi, correct, n) go to a scratch
# directory, or to $PLOT_DATA when set (kept).
set -euo pipefail

json=${1:?usage: plot_eval.sh EVAL.json [OUT.png]}
png=${2:-${json%.json}.png}
here=$(cd "$(dirname "$0")" && pwd)
command -v jq >/dev/null || { echo "plot_eval: needs jq (apt-get install jq)" >&2; exit 1; }
if [ -n "${PLOT_DATA:-}" ]; then
    dir=$PLOT_DATA
    mkdir -p "$dir"
else
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
fi

# Pooled over depths: the sums of correct and n, then the interval of those.
pooled='
def wilson($k; $n):
  1.959963984540054 as $z | ($z * $z) as $z2 | ($k / $n) as $p
  | (($p + $z2 / (2 * $n)) / (1 + $z2 / $n)) as $c
  | ($z * (($p * (1 - $p) / $n + $z2 / (4 * $n * $n)) | sqrt) / (1 + $z2 / $n)) as $h
  | [(if $k == 0 then 0 else $c - $h end), (if $k == $n then 1 else $c + $h end)];
.results | map(select(.task == $t and .mode == $m)) | group_by(.length)[]
| (map(.correct) | add) as $k | (map(.n) | add) as $n | wilson($k; $n) as $w
| "\(.[0].length) \($k / $n) \($w[0]) \($w[1]) \($k) \($n)"'

tasks=$(jq -r '[.results[].task] | reduce .[] as $x ([]; if index([$x]) then . else . + [$x] end) | join(" ")' "$json")
modes=$(jq -r '[.results[].mode] | reduce .[] as $x ([]; if index([$x]) then . else . + [$x] end) | join(" ")' "$json")
for t in $tasks; do
    for m in $modes; do
        jq -r --arg t "$t" --arg m "$m" "$pooled" "$json" >"$dir/${t}__$m.dat"
    done
done
title=$(jq -r '"\(.model | sub(".*/"; "")), \(.results[0].n) prompts per cell, pooled over depths, \(.backend)"' "$json")
if ! command -v gnuplot >/dev/null; then
    echo "plot_eval: gnuplot not found: no plot (apt-get install gnuplot-nox); data in $dir" >&2
    exit 1
fi
gnuplot -e "dir='$dir'; outfile='$png'; tasks='$tasks'; modes='$modes'; title='$title'" \
    "$here/plot_eval.gp"
echo "plot_eval: $png" >&2
