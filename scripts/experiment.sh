#!/usr/bin/env bash
# scripts/experiment.sh [OUT_DIR]
#
# The long-context experiment of docs/EXPERIMENT.md on the bundled byte-level
# model: perplexity of vanilla, DeciMamba and LongMamba at 1, 2, 4, 8, 16 and
# 32 times the training context (2,048 bytes) on two books the model never
# saw, and a pass-key grid (length x depth).  LongMamba runs twice: with the
# library's default theta (1e-3) and with theta = 1e-12, the value picked on
# held-out TRAINING text by scripts/theta_sweep.sh (never on these books).
# CPU only; 12-20 minutes on 2 cores (more when they are shared).
#
# Environment (all optional):
#   LONGMAMBA  the CLI            (default build/tools/longmamba/longmamba)
#   MODEL      model directory    (default models/byte-mamba-2k)
#   SHARED     shared data root   (default ../shared next to the checkout)
#   CALIB      calibration file   (default $MODEL/calibration.safetensors;
#              made from TRAINING text when absent, never from the eval books)
#   THREADS    CPU threads        (default 0 = all cores)
# Writes OUT_DIR (default docs/experiment): ppl.json, ppl_aligned.json,
# passkey.json, experiment.json (all + settings), tables.md, logs, .dat
# files; and docs/experiment.png.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cli=${LONGMAMBA:-$root/build/tools/longmamba/longmamba}
model=${MODEL:-$root/models/byte-mamba-2k}
shared=${SHARED:-$root/../shared}
calib=${CALIB:-$model/calibration.safetensors}
threads=${THREADS:-0}
out=${1:-$root/docs/experiment}
png=$root/docs/experiment.png

# --- the protocol (docs/EXPERIMENT.md); CTX, WINDOWS, PK_LENGTHS and
# PK_TRIALS override it for a quick smoke run only ---------------------------
train_ctx=2048
ctx=${CTX:-2048,4096,8192,16384,32768,65536}  # 1x .. 32x the training context
windows=${WINDOWS:-2,2,2,2,1,1}               # per book and context (CPU budget)
aligned_windows=1                             # per book, --align-end run
score_last=1000                               # bytes scored per window
modes=vanilla,decimamba,longmamba             # LongMamba with the default theta
theta_tuned=1e-12                             # from scripts/theta_sweep.sh
pk_lengths=${PK_LENGTHS:-2048,4096,8192,16384,32768}
pk_depths=0,0.25,0.5,0.75,1
pk_trials=${PK_TRIALS:-2}
pk_seed=1234
calib_window=2048                             # = training context
calib_count=32

[ -x "$cli" ] || { echo "experiment: no CLI at $cli (build first, or set LONGMAMBA)" >&2; exit 1; }
[ -f "$model/model.safetensors" ] || { echo "experiment: no model at $model" >&2; exit 1; }
for t in jq xz; do
    command -v $t >/dev/null || { echo "experiment: needs $t" >&2; exit 1; }
done
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
t_start=$(date +%s)
tuned=longmamba_theta$theta_tuned   # series name of the second LongMamba run

# --- eval books: decompressed to a temporary directory ----------------------
books=()
for b in austen-mansfield-park melville-moby-dick; do
    xz -dc "$shared/data/text/eval/$b.txt.xz" >"$tmp/$b.txt"
    books+=("$tmp/$b.txt")
done

# --- calibration: only from the training split of the training files --------
if [ ! -f "$calib" ]; then
    log "no $calib: calibrating on the training text (first 98% of each file)"
    : >"$tmp/train.txt"
    for f in "$shared"/data/text/train/*.txt.xz; do
        xz -dc "$f" >"$tmp/one.txt"
        n=$(stat -c %s "$tmp/one.txt")
        head -c $((n * 98 / 100)) "$tmp/one.txt" >>"$tmp/train.txt"   # the held-out 2% stays out
    done
    "$cli" calibrate "$model" --text "$tmp/train.txt" --window $calib_window --count $calib_count \
        --threads "$threads" -o "$calib" | tee "$out/calibrate.log"
fi
"$cli" channels "$model" "$calib" >"$out/channels.txt"
"$cli" channels "$model" "$calib" --theta $theta_tuned >"$out/channels_theta$theta_tuned.txt"

# Temporary paths out of the JSON: books as eval/NAME, model and calibration
# relative to the checkout.
clean='(if .documents then .documents |= map(.path |= sub(".*/"; "eval/")) else . end)
       | (if (.filler | type) == "string" then .filler |= sub(".*/"; "eval/") else . end)
       | .calibration |= (if . then sub(".*/models/"; "models/") else . end)
       | .model |= sub(".*/models/"; "models/")'
# merge A B: B's results renamed to the tuned series, appended to A's
merge='.[0] + {results: (.[0].results + (.[1].results | map(.mode = $t))),
              theta_tuned_params: .[1].params}'

# --- perplexity: windows placed as in LONGMAMBA.md §6 --------------------------
ppl_run() { # NAME EXTRA_ARGS...
    local name=$1
    shift
    log "ppl $name: contexts $ctx $*"
    "$cli" ppl "$model" --text "${books[0]}" --text "${books[1]}" --ctx $ctx \
        --score-last $score_last --calib "$calib" --threads "$threads" --verbose --json "$@" \
        >"$tmp/$name.a.json" 2>"$out/$name.log"
    "$cli" ppl "$model" --text "${books[0]}" --text "${books[1]}" --ctx $ctx \
        --score-last $score_last --calib "$calib" --threads "$threads" --verbose --json "$@" \
        --mode longmamba --theta $theta_tuned >"$tmp/$name.b.json" 2>>"$out/$name.log"
    jq -s --arg t "$tuned" "$merge" "$tmp/$name.a.json" "$tmp/$name.b.json" | jq "$clean" \
        >"$out/$name.json"
}
ppl_run ppl --windows $windows --mode $modes
# --- perplexity, end-aligned: every context scores the same bytes ------------
ppl_run ppl_aligned --windows $aligned_windows --align-end --mode $modes

# --- pass key -------------------------------------------------------------------
log "passkey: lengths $pk_lengths, depths $pk_depths, $pk_trials trials"
pk_args=(--lengths $pk_lengths --depths $pk_depths --trials $pk_trials --seed $pk_seed
         --filler "${books[0]}" --calib "$calib" --threads "$threads" --json)
"$cli" passkey "$model" "${pk_args[@]}" --mode $modes >"$tmp/pk.a.json" 2>"$out/passkey.log"
"$cli" passkey "$model" "${pk_args[@]}" --mode longmamba --theta $theta_tuned \
    >"$tmp/pk.b.json" 2>>"$out/passkey.log"
jq -s --arg t "$tuned" "$merge" "$tmp/pk.a.json" "$tmp/pk.b.json" | jq "$clean" >"$out/passkey.json"
log "passkey done"

# --- one JSON, markdown tables, plot --------------------------------------------
t_end=$(date +%s)
jq -n --slurpfile p "$out/ppl.json" --slurpfile a "$out/ppl_aligned.json" \
    --slurpfile k "$out/passkey.json" \
    --arg host "$(uname -srm), $(nproc) cores" --arg ver "$("$cli" version | head -1)" \
    --argjson secs $((t_end - t_start)) --argjson train_ctx $train_ctx \
    --arg tuned "$tuned" --argjson theta_tuned $theta_tuned \
    '{training_context: $train_ctx, machine: $host, cli: $ver, wall_seconds: $secs,
      series: {vanilla: "vanilla", decimamba: "DeciMamba (defaults)",
               longmamba: "LongMamba, default theta 1e-3",
               ($tuned): "LongMamba, theta \($theta_tuned) (picked on held-out training text)"},
      ppl: $p[0], ppl_aligned: $a[0], passkey: $k[0]}' >"$out/experiment.json"

order="[\"vanilla\",\"decimamba\",\"longmamba\",\"$tuned\"]"
ppl_table() {
    jq -r --argjson t $train_ctx --argjson order "$order" '
      (.results | map(.mode) | unique) as $m0
      | ($order | map(select(. as $x | $m0 | index($x)))) as $modes
      | "| context (bytes) | x train | windows | " + ($modes | join(" | ")) + " |",
        "|---:|---:|---:|" + ($modes | map("---:") | join("|")) + "|",
        ( .results | group_by(.ctx)[] as $g
          | "| \($g[0].ctx) | \($g[0].ctx / $t) | \($g[0].windows) | "
            + ($modes | map(. as $mm | $g[] | select(.mode == $mm) | .ppl * 1000 | round / 1000 | tostring) | join(" | "))
            + " |")' "$1"
}
{
    echo "Perplexity per byte (exp of the mean loss on the last $score_last bytes of each window),"
    echo "windows per book: $windows (LONGMAMBA.md §6 placement):"
    echo
    ppl_table "$out/ppl.json"
    echo
    echo "The same, end-aligned (--align-end, $aligned_windows window per book): every row scores the same bytes:"
    echo
    ppl_table "$out/ppl_aligned.json"
    echo
    echo "Pass-key accuracy ($pk_trials trials per cell, filler: Mansfield Park), rows = prompt length, columns = needle depth:"
    jq -r '
      .depths as $d | .lengths as $l
      | .results[] as $r
      | "", "**\($r.mode)** (mean \($r.mean * 1000 | round / 1000))", "",
        "| length | " + ($d | map(tostring) | join(" | ")) + " | mean |",
        "|---:|" + ($d | map("---:") | join("|")) + "|---:|",
        ( range(0; $l | length) as $i
          | "| \($l[$i]) | " + ($r.accuracy[$i] | map(tostring) | join(" | "))
            + " | \(($r.accuracy[$i] | add) / ($r.accuracy[$i] | length) * 1000 | round / 1000) |")' \
        "$out/passkey.json"
} >"$out/tables.md"

# data files for gnuplot: ctx/train, ppl per series; length/train, mean accuracy
for m in vanilla decimamba longmamba "$tuned"; do
    f=${m/$tuned/longmamba_tuned}
    for p in ppl ppl_aligned; do
        jq -r --arg m "$m" --argjson t $train_ctx \
            '.results[] | select(.mode == $m) | "\(.ctx / $t) \(.ppl)"' "$out/$p.json" \
            >"$out/${p}_$f.dat"
    done
    jq -r --arg m "$m" --argjson t $train_ctx \
        '.lengths as $l | .results[] | select(.mode == $m) | .accuracy | to_entries[]
         | "\($l[.key] / $t) \((.value | add) / (.value | length))"' "$out/passkey.json" \
        >"$out/passkey_$f.dat"
done
if command -v gnuplot >/dev/null; then
    gnuplot -e "dir='$out'; outfile='$png'; tuned='$theta_tuned'" "$root/scripts/plot_experiment.gp"
    log "plot: $png"
else
    log "gnuplot not found: no plot (apt-get install gnuplot-nox)"
fi
log "done in $((t_end - t_start)) s; results in $out"
cat "$out/tables.md"
