#!/bin/sh
# run.sh CC BUILD_ROOT SRC_DIR SANITIZE [MODEL_DIR]
# Builds consumer.c with nothing but `pkg-config --cflags --libs longmamba`
# against the build tree (meson-uninstalled/longmamba-uninstalled.pc) and
# runs it.  CC may be several words (a compiler launcher).
set -eu
cc=$1
build=$2
src=$3
sanitize=$4
model=${5:-}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

PKG_CONFIG_PATH="$build/meson-uninstalled"
export PKG_CONFIG_PATH
if [ ! -f "$PKG_CONFIG_PATH/longmamba-uninstalled.pc" ]; then
    echo "FAIL: no $PKG_CONFIG_PATH/longmamba-uninstalled.pc"
    exit 1
fi
# pkg-config prefers longmamba-uninstalled.pc when asked for longmamba.
flags=$(pkg-config --cflags --libs longmamba)
echo "pkg-config --cflags --libs longmamba: $flags"

# An instrumented library needs the sanitizer runtime in the program too.
san=""
if [ "$sanitize" != "none" ] && [ -n "$sanitize" ]; then
    san="-fsanitize=$sanitize"
fi

# shellcheck disable=SC2086  # word splitting of cc and flags is intended
$cc -std=c11 -Wall -Wextra -Werror -pedantic $san -o "$tmp/consumer" "$src/consumer.c" $flags -lm

LD_LIBRARY_PATH="$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
if [ -n "$model" ] && [ -d "$model" ]; then
    "$tmp/consumer" "$model"
else
    [ -n "$model" ] && echo "note: no fixture at $model; model load not exercised"
    "$tmp/consumer"
fi
