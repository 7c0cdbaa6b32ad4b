# test_lib.sh - shared by the CLI test scripts (examples/test_*.sh), which
# source it: a scratch directory $tmp (removed on exit), pass/fail
# counters and the helpers below.  Each script ends with `finish`.
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

# pycheck DESCRIPTION SCRIPT ARGS...: a python3 assertion script (from
# stdin) over files; skipped when the script set have_py=0 (py_needs says
# what is missing)
pycheck() {
    local what=$1
    shift
    if [ "${have_py:-0}" -eq 0 ]; then
        echo "skip: $what (needs ${py_needs:-python3})"
        return
    fi
    if python3 - "$@" >"$tmp/py" 2>&1; then ok "$what"; else
        bad "$what"
        sed 's/^/    | /' "$tmp/py" | tail -n 20
    fi
}

# finish: the summary line; the exit status says whether all passed.
finish() {
    echo "passed $pass, failed $failn"
    [ "$failn" -eq 0 ]
}
