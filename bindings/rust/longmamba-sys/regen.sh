#!/bin/sh
# Regenerates src/bindings.rs from include/longmamba.h with the bindgen CLI
# (Debian: apt-get install bindgen).  Run after a header change; commit the
# result.  The layout tests it emits run under `cargo test`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bindgen "$here/../../../include/longmamba.h" \
    --allowlist-function 'lm_.*' --allowlist-type 'lm_.*' --allowlist-var 'LM_.*' \
    --size_t-is-usize --no-prepend-enum-name \
    -o "$here/src/bindings.rs"
