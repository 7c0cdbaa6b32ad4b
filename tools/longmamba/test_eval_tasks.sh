#!/usr/bin/env bash
# test_eval_tasks.sh TEST_EVAL_TASKS FILLER.txt TOKENIZER.json.xz
# Runs the eval_tasks unit test (test_eval_tasks.c) with raw bytes and with
# the GPT-NeoX tokenizer, decompressed to a scratch directory.
set -u
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
xz -dc "$3" >"$tmp/tokenizer.json" || { echo "FAIL: xz -dc $3"; exit 1; }
"$1" "$2" "$tmp/tokenizer.json"
