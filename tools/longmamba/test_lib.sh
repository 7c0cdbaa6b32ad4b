# test_lib.sh - shared by the CLI test scripts (tools/longmamba/test_*.sh), which
# source it: a scratch directory $tmp (removed on exit), pass/fail
# counters and the helpers below.  Each script ends with `finish`.
# The tests' Python: the interpreter chosen at set-up (meson passes it as
# LM_PYTHON), never whichever python3 comes first on PATH.
py=${LM_PYTHON:-}
if [ -z "$py" ] || ! "$py" -c 'import json, numpy' 2>/dev/null; then
    echo "FAIL: LM_PYTHON='$py' is not a python3 with numpy (run through 'meson test', set up by 'bash scripts/setup.sh test')"
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
failn=0

ok() { pass=$((pass + 1)); echo "ok: $1"; }
bad() { failn=$((failn + 1)); echo "FAIL: $1"; }

# check DESCRIPTION command...: ok when the command succeeds
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

# expect CODE DESCRIPTION -- command...: the command's exit status is CODE
# (stdout in $tmp/out, stderr in $tmp/err; both shown on a failure)
expect() {
    local want=$1 what=$2
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then
        ok "$what (exit $got)"
    else
        bad "$what: exit $got, expected $want"
        cat "$tmp/out" "$tmp/err" | sed 's/^/    | /' | tail -n 20
    fi
}

# grep_out PATTERN DESCRIPTION: the last expect's output (stdout or stderr) matches
grep_out() {
    if cat "$tmp/out" "$tmp/err" | grep -q -- "$1"; then ok "$2"; else
        bad "$2: no '$1' in the output"
        cat "$tmp/out" "$tmp/err" | sed 's/^/    | /' | tail -n 20
    fi
}

# grep_err PATTERN DESCRIPTION: the last expect's stderr matches
grep_err() {
    if grep -q -- "$1" "$tmp/err"; then ok "$2"; else
        bad "$2: no '$1' on stderr"
        sed 's/^/    | /' "$tmp/err" | tail -n 20
    fi
}

# pycheck DESCRIPTION SCRIPT ARGS...: a Python assertion script (from
# stdin) over files
pycheck() {
    local what=$1
    shift
    if "$py" - "$@" >"$tmp/py" 2>&1; then ok "$what"; else
        bad "$what"
        sed 's/^/    | /' "$tmp/py" | tail -n 20
    fi
}

# finish: the summary line; the exit status says whether all passed.
finish() {
    echo "passed $pass, failed $failn"
    [ "$failn" -eq 0 ]
}
