#!/usr/bin/env bash
# test_tokenizer_cli.sh LONGMAMBA TOKENIZER_DATA_DIR
# `longmamba tokenize` / `detokenize` (tools/longmamba/cmd_tokenizer.c): exit
# codes, --text / --file / stdin / model-directory inputs, byte-exact round
# trips.  The ids themselves are test_tokenizer's business.
set -u
cli=$1
data=$2
. "$(dirname "$0")/test_lib.sh"
same() { [ "$1" = "$2" ]; }

xz -dc "$data/gpt-neox-20b.json.xz" >"$tmp/tokenizer.json" || { echo "FAIL: xz"; exit 1; }
mkdir "$tmp/model" && cp "$tmp/tokenizer.json" "$tmp/model/"
tj=$tmp/tokenizer.json

expect 2 "tokenize without arguments" -- "$cli" tokenize
expect 2 "tokenize with an unknown option" -- "$cli" tokenize "$tj" --bogus
expect 2 "tokenize with --text and --file" -- "$cli" tokenize "$tj" --text a --file b
expect 0 "tokenize --help" -- "$cli" tokenize --help
expect 1 "tokenize with a missing tokenizer" -- "$cli" tokenize "$tmp/none.json" --text a
check "missing tokenizer message" grep -q "cannot open" "$tmp/err"
expect 1 "tokenize a missing file" -- "$cli" tokenize "$tj" --file "$tmp/none.txt"

# The special token splits the text; "  " is an added token; " world" one id.
expect 0 "tokenize --text" -- "$cli" tokenize "$tj" --text "Hello world<|endoftext|>  x"
read -r -a ids <"$tmp/out"
check "five ids: ${ids[*]}" same "${#ids[@]}" 5
expect 0 "model directory" -- "$cli" tokenize "$tmp/model" --text "Hello world<|endoftext|>  x"
check "directory gives the same ids" same "$(cat "$tmp/out")" "${ids[*]}"
expect 0 "detokenize arguments" -- "$cli" detokenize "$tj" "${ids[@]}"
check "round trip" same "$(cat "$tmp/out")" "Hello world<|endoftext|>  x"

# stdin, --file and a whole text file through a pipe, byte for byte.
printf 'Line one\n\tcaf\xc3\xa9 \xe2\x80\x94 12345 \xf0\x9f\x98\x80\n\n  spaced   out  \n' >"$tmp/text.txt"
expect 0 "tokenize stdin" -- sh -c "\"$cli\" tokenize \"$tj\" <\"$tmp/text.txt\" >\"$tmp/ids1\""
expect 0 "tokenize --file" -- "$cli" tokenize "$tj" --file "$tmp/text.txt"
check "stdin and --file agree" cmp -s "$tmp/out" "$tmp/ids1"
expect 0 "detokenize stdin" -- sh -c "\"$cli\" detokenize \"$tj\" <\"$tmp/ids1\" >\"$tmp/back.txt\""
check "file round trip" cmp -s "$tmp/back.txt" "$tmp/text.txt"
expect 0 "tokenize --count" -- "$cli" tokenize "$tj" --count --file "$tmp/text.txt"
check "--count" same "$(cat "$tmp/out")" "$(wc -w <"$tmp/ids1")"
expect 0 "comma separated stdin" -- sh -c "echo '12092, 1533' | \"$cli\" detokenize \"$tj\""
check "comma separated ids" same "$(cat "$tmp/out")" "$("$cli" detokenize "$tj" 12092 1533)"

# Invalid UTF-8 is replaced by U+FFFD before encoding.
printf 'a\xffb' | "$cli" tokenize "$tj" >"$tmp/ids_bad"
printf 'a\xef\xbf\xbdb' | "$cli" tokenize "$tj" >"$tmp/ids_fffd"
check "invalid UTF-8 as U+FFFD" cmp -s "$tmp/ids_bad" "$tmp/ids_fffd"

expect 1 "detokenize an id out of range" -- "$cli" detokenize "$tj" 12092 99999
check "out of range message" grep -q "ids\[1\]" "$tmp/err"
expect 1 "detokenize a negative id" -- "$cli" detokenize "$tj" -1
expect 2 "detokenize a malformed id" -- "$cli" detokenize "$tj" 12x
expect 1 "detokenize malformed stdin" -- sh -c "echo '1 2 x3' | \"$cli\" detokenize \"$tj\""
expect 2 "detokenize without arguments" -- "$cli" detokenize

finish
