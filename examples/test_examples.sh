#!/usr/bin/env bash
# test_examples.sh CALIBRATE_SPLIT BATCH_DECODE STATE_FORK MODEL_DIR TEXT
# Runs each example on the bundled byte-level model and checks its exit
# status and the lines it must print; prints "passed N, failed M".
set -u
calib=$1 batch=$2 fork=$3 model=$4 text=$5
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 failn=0
# expect CODE DESCRIPTION PATTERN -- command...: exit CODE and PATTERN in stdout
expect() {
    local want=$1 what=$2 pat=$3
    shift 4
    "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    if [ "$got" -eq "$want" ] && { [ -z "$pat" ] || grep -q -- "$pat" "$tmp/out"; }; then
        pass=$((pass + 1)); echo "ok: $what"
    else
        failn=$((failn + 1)); echo "FAIL: $what: exit $got (want $want), pattern '$pat'"
        sed 's/^/    | /' "$tmp/out" "$tmp/err" | tail -n 20
    fi
}
expect 0 "calibrate_split prints every layer" "^layer 7: [0-9]* of 1024 channels global$" -- "$calib" "$model" "$text" 256
grep -q "^total: [0-9]* global, [0-9]* local$" "$tmp/out" && pass=$((pass + 1)) || { failn=$((failn + 1)); echo "FAIL: calibrate_split total line"; }
printf '1 2 3 4 5 6 7 8' >"$tmp/short.ids"
expect 1 "calibrate_split refuses a file shorter than a window" "" -- "$calib" "$model" "$tmp/short.ids" 64
expect 2 "calibrate_split usage" "" -- "$calib" "$model"
expect 0 "batch_decode: batched = single" "^batched and single decode agree$" -- "$batch" "$model" 6 "The sea" "Call me Ishmael" "Whale"
grep -c "^session [0-2]:\( [0-9]\+\)\{6\}$" "$tmp/out" | grep -q '^3$' && pass=$((pass + 1)) || { failn=$((failn + 1)); echo "FAIL: batch_decode prints 3 sessions of 6 ids"; }
expect 2 "batch_decode usage" "" -- "$batch" "$model" 0 "x"
expect 0 "state_fork: a branch = the same text from scratch" "branch A matches" -- "$fork" "$model" "Call me Ishmael. " "Some years ago" "It is a way"
grep -q "^branch B:\( [0-9]\+\)\{8\}$" "$tmp/out" && pass=$((pass + 1)) || { failn=$((failn + 1)); echo "FAIL: state_fork branch B line"; }
expect 1 "state_fork on a missing model" "" -- "$fork" "$tmp/none" "a" "b" "c"
echo "passed $pass, failed $failn"
[ "$failn" -eq 0 ]
