#!/usr/bin/env bash
# shellcheck disable=SC2317,SC2016
# .ci/fresh.sh - the fresh-machine test: the README's two commands on a Debian
# 12 that has nothing installed by hand, then the test command once more on
# this machine with a bare virtualenv's python3 first on PATH.
#
#   1. debootstrap a minimal Debian 12 root (minbase) from the mirror apt uses
#      here (read from /etc/apt/sources.list.d/*.sources, sources.list), with
#      the same apt sources (main), DNS and Acquire settings;
#   2. a clean clone of the repository's committed HEAD (git clone --no-local,
#      never the working tree) at /root/repo in the root;
#   3. in the root (chroot, as root, env -i: HOME=/root, a standard PATH,
#      LANG=C.UTF-8, TERM=dumb; no CUDA), from /root/repo, the README's
#      commands marked `<!-- readme-command: main -->` and
#      `<!-- readme-command: test -->` exactly as written, each timed;
#   4. on this machine, the test command again in another clean clone, with
#      `python3 -m venv --without-pip` (bare: `import numpy` must fail) first
#      on PATH: the first python3 on PATH is not Debian's /usr/bin/python3;
#   5. a summary: time and PASS/FAIL of each phase.
# The test command's output must not report a skipped check (a line starting
# with skip/SKIP, a meson SKIP result, a non-zero "Skipped:" count): a skip
# is a failure for this project.
#
# Usage (as root; needs network to the mirror; about 10-15 minutes on 2 cores):
#   bash .ci/fresh.sh
# Environment:
#   REPO=DIR        repository to test (default: the one holding this script);
#                   only its committed HEAD is tested
#   FRESH_DIR=DIR   work folder (default: REPO-of-this-script/.fresh, git-
#                   ignored); holds root/, host/ and logs/ (kept)
#   KEEP_ROOT=1     keep the root and the host clone afterwards
#   MIRROR=URL      debootstrap mirror (default: apt's mirror for SUITE here)
#   SUITE=NAME      default bookworm
#   TAIL_LINES=N    log lines shown when a step fails (default 40)
#   SKIP_HOST=1     debugging only: skip phase 4 (the exit status is then 3,
#                   never 0)
# Exit status: 0 every phase passed; 1 a phase failed; 2 usage/setup error;
# 3 what ran passed but a phase was skipped on request.
#
# Mounts (proc, sysfs, a private /dev with its own devpts) live in a private
# mount namespace (unshare) and are unmounted by a trap on exit, failure or
# Ctrl-C; the host's /dev is never bind-mounted when mknod works, and
# nothing is removed while a mount remains under it.
set -euo pipefail

self=$(readlink -f "$0")
self_repo=$(cd "$(dirname "$self")/.." && pwd -P)
std_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { printf '\n==== %s\n' "$*"; }
note() { printf 'fresh: %s\n' "$*"; }
warn() { printf 'fresh: WARNING: %s\n' "$*" >&2; }
die() {
    printf 'fresh: ERROR: %s\n' "$*" >&2
    exit 2
}
fmt_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
# try CMD...: run CMD in a subshell with errexit really on (bash ignores -e in
# anything left of || or in an if), leave its status in try_rc, return 0
try() {
    set +e
    (
        set -e
        "$@"
    )
    try_rc=$?
    set -e
}

# ---- mount and process safety (used by both the outer script and the chroot runner)

mounts_under() { # DIR: mount points at or below DIR, deepest first
    awk -v d="$1" '{ m = $5; gsub(/\\040/, " ", m); if (m == d || index(m, d "/") == 1) print m }' \
        /proc/self/mountinfo | sort -r
}

unmount_under() { # DIR: unmount everything at or below DIR; fails if something stays
    local m list try
    for try in 1 2 3; do
        list=$(mounts_under "$1")
        [ -n "$list" ] || return 0
        while IFS= read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done <<<"$list"
        [ "$try" -lt 3 ] && sleep 1
    done
    [ -z "$(mounts_under "$1")" ]
}

pids_in_root() { # DIR: processes whose root directory is DIR (started by us in the chroot)
    local p r
    for p in /proc/[0-9]*; do
        r=$(readlink "$p/root" 2>/dev/null) || continue
        [ "$r" = "$1" ] && echo "${p#/proc/}"
    done
    return 0
}

end_processes_in_root() { # DIR: TERM, then KILL, each process left in the chroot, by pid
    local pids
    pids=$(pids_in_root "$1" | tr '\n' ' ')
    [ -n "${pids// /}" ] || return 0
    warn "ending processes left in the root: $pids"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    sleep 2
    pids=$(pids_in_root "$1" | tr '\n' ' ')
    # shellcheck disable=SC2086
    [ -z "${pids// /}" ] || kill -KILL $pids 2>/dev/null || true
}

remove_tree() { # DIR: rm -rf, but never through a mount
    local d=$1
    [ -e "$d" ] || return 0
    case $d in
    "" | / | /tmp | /root | /home | /work | "$self_repo" | "${REPO:-/}") die "refusing to remove '$d'" ;;
    esac
    end_processes_in_root "$d"
    if ! unmount_under "$d"; then
        warn "mounts remain under $d, NOT removing it:"
        mounts_under "$d" >&2
        return 1
    fi
    rm -rf --one-file-system -- "$d"
}

# ---- phase 3 runner: `fresh.sh __inroot ROOT COMMAND`, run in a private mount
# namespace; mounts what the chroot needs, runs COMMAND from /root/repo with
# a clean environment, unmounts on any exit.
inroot() {
    local n
    in_root=$1 # globals: the EXIT trap runs after this function has returned
    local cmd=$2 root=$1
    inroot_cleanup() {
        local rc=$?
        set +e
        trap '' PIPE INT # the reader of our output may be gone: unmount anyway
        end_processes_in_root "$in_root"
        unmount_under "$in_root" || { warn "could not unmount:"; mounts_under "$in_root" >&2; }
        exit "$rc"
    }
    trap inroot_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    [ -z "$(mounts_under "$root")" ] || die "$root already has mounts"
    mount -t proc fresh-proc "$root/proc"
    mount -t sysfs -o ro,nosuid,nodev,noexec fresh-sys "$root/sys"
    # a private /dev: device nodes made here, its own devpts instance
    mount -t tmpfs -o mode=0755,nosuid,size=16m fresh-dev "$root/dev"
    for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
        # shellcheck disable=SC2086
        set -- $n
        if ! mknod -m 0666 "$root/dev/$1" c "$2" "$3" 2>/dev/null; then
            # mknod not allowed here: bind this one node (a mount point cannot be removed)
            : >"$root/dev/$1"
            mount --bind "/dev/$1" "$root/dev/$1"
        fi
    done
    mkdir -m 0755 "$root/dev/pts"
    mkdir -m 1777 "$root/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 fresh-devpts "$root/dev/pts"
    mount -t tmpfs -o mode=1777,nosuid,nodev fresh-shm "$root/dev/shm"
    ln -s pts/ptmx "$root/dev/ptmx"
    ln -s /proc/self/fd "$root/dev/fd"
    ln -s /proc/self/fd/0 "$root/dev/stdin"
    ln -s /proc/self/fd/1 "$root/dev/stdout"
    ln -s /proc/self/fd/2 "$root/dev/stderr"
    chroot "$root" /usr/bin/env -i HOME=/root PATH="$std_path" LANG=C.UTF-8 TERM=dumb \
        /bin/bash -c "cd /root/repo || exit 1
$cmd"
}

if [ "${1:-}" = __inroot ]; then
    shift
    inroot "$@"
    exit $?
fi

# ---- the fresh-machine test (one function: bash has read all of it before it runs,
# so editing this file during a run cannot derail the run) ------------------------------
main() {
    case ${1:-} in
    -h | --help)
        sed -n '3,/^set -euo/p' "$self" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    "") ;;
    *) die "no arguments expected (options are environment variables; see --help)" ;;
    esac

    # ---- settings --------------------------------------------------------------------
    [ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and mount need it)"
    REPO=$(cd "${REPO:-$self_repo}" && pwd -P) || die "REPO: no such directory"
    SUITE=${SUITE:-bookworm}
    KEEP_ROOT=${KEEP_ROOT:-0}
    SKIP_HOST=${SKIP_HOST:-0}
    TAIL_LINES=${TAIL_LINES:-40}
    if [ -n "${FRESH_DIR:-}" ]; then
        work=$FRESH_DIR
    elif [ -e "$self_repo/.git" ]; then
        work=$self_repo/.fresh # git-ignored
    else
        die "$self_repo is not a git work tree: set FRESH_DIR"
    fi
    mkdir -p "$work"
    work=$(cd "$work" && pwd -P)
    case $work in *[[:space:]]*) die "FRESH_DIR must not contain spaces: '$work'" ;; esac
    [ "$work" != / ] || die "FRESH_DIR=/ ?"
    root=$work/root
    src=$work/src
    hostdir=$work/host
    logs=$work/logs

    exec 9>"$work/.lock"
    flock -n 9 || die "another fresh.sh run is using $work"

    if unshare --mount --propagation private true 2>/dev/null; then
        ns=(unshare --mount --propagation private --)
    else
        ns=()
        warn "unshare --mount not available: mounts are made in this namespace (the trap still unmounts them)"
    fi

    # ---- cleanup (every exit) ---------------------------------------------------------
    cleanup() {
        local rc=$?
        set +e
        trap - INT TERM HUP
        if [ -e "$root" ]; then
            end_processes_in_root "$root"
            unmount_under "$root" || { warn "mounts remain under $root:"; mounts_under "$root" >&2; }
        fi
        if [ "$KEEP_ROOT" = 1 ]; then
            [ -e "$root" ] && note "kept the root: $root (chroot $root /bin/bash)"
            [ -e "$hostdir" ] && note "kept the host clone: $hostdir/repo"
        else
            remove_tree "$root" || warn "root left at $root"
            remove_tree "$hostdir" || warn "host clone left at $hostdir"
            remove_tree "$src" || warn "clone left at $src"
        fi
        exit "$rc"
    }
    trap cleanup EXIT
    trap 'echo; warn "interrupted"; exit 130' INT
    trap 'warn "terminated"; exit 143' TERM
    trap 'exit 129' HUP

    # ---- host tools ---------------------------------------------------------------------
    missing=()
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v git >/dev/null 2>&1 || missing+=(git)
    if [ ${#missing[@]} -gt 0 ]; then
        # both are in scripts/setup.sh's "ci" set; only these two are needed here
        note "installing ${missing[*]} on this machine"
        command -v apt-get >/dev/null 2>&1 || die "no apt-get: install ${missing[*]} first"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    for t in chroot mount umount flock python3; do
        command -v "$t" >/dev/null 2>&1 || die "'$t' not found on this machine"
    done

    # ---- apt sources of this machine: "URI SUITE" lines, type deb -----------------------------
    apt_sources() {
        local f
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            awk '
                function flush(  n, m, i, j, U, S) {
                    if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no") {
                        n = split(uris, U, /[ \t]+/); m = split(suites, S, /[ \t]+/)
                        for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
                            if (U[i] != "" && S[j] != "") { sub(/\/+$/, "", U[i]); print U[i], S[j] }
                    }
                    types = uris = suites = enabled = cur = ""
                }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                /^[A-Za-z][A-Za-z0-9-]*:/ {
                    key = tolower($0); sub(/:.*/, "", key)
                    val = $0; sub(/^[^:]*:[ \t]*/, "", val); cur = key
                    if (key == "types") types = val
                    else if (key == "uris") uris = val
                    else if (key == "suites") suites = val
                    else if (key == "enabled") enabled = tolower(val)
                    next
                }
                /^[ \t]/ { if (cur == "uris") uris = uris " " $0; else if (cur == "suites") suites = suites " " $0 }
                END { flush() }' "$f"
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            sed 's/#.*//' "$f" | awk '$1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                u = $i; sub(/\/+$/, "", u); if (u != "" && $(i + 1) != "") print u, $(i + 1) }'
        done
    }
    # keep this suite and its companions (SUITE-updates, SUITE-security, ...)
    sources=$(apt_sources | awk -v s="$SUITE" '($2 == s || index($2, s "-") == 1) && !seen[$0]++')
    if [ -z "$sources" ]; then
        warn "no apt source for $SUITE on this machine: using deb.debian.org"
        sources=$(printf '%s\n' "http://deb.debian.org/debian $SUITE" "http://deb.debian.org/debian $SUITE-updates" \
            "http://deb.debian.org/debian-security $SUITE-security")
    fi
    MIRROR=${MIRROR:-$(awk -v s="$SUITE" '$2 == s { print $1; exit }' <<<"$sources")}
    MIRROR=${MIRROR:-http://deb.debian.org/debian}

    mkdir -p "$logs"
    rm -f "$logs"/*.log
    t_start=$(date +%s)
    git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1 || die "$REPO is not a git repository"
    # one clean clone of the committed HEAD, now: every later clone is made from
    # it, so a commit made in REPO during the run changes nothing
    remove_tree "$src" || die "cannot remove the old clone $src"
    git clone --no-local --quiet "$REPO" "$src" || die "cannot clone $REPO"
    commit=$(git -C "$src" rev-parse HEAD)
    say "fresh-machine test of $REPO at $(git -C "$src" log -1 --format='%h %s' HEAD)"
    [ -z "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ] ||
        warn "$REPO has uncommitted changes: they are NOT tested (only the committed HEAD is)"
    note "work folder: $work (logs in $logs)"
    note "mirror: $MIRROR ($SUITE); apt sources for the root:"
    printf '%s\n' "$sources" | sed 's/^/    /'

    declare -gA result secs
    phases=(debootstrap root-main root-test host-test)
    for p in "${phases[@]}"; do result[$p]="NOT RUN"; secs[$p]=0; done
    declare -gA label=([debootstrap]="debootstrap ($SUITE, minbase)")

    fail_tail() { # LOG
        printf -- '---- last %s lines of %s\n' "$TAIL_LINES" "$1"
        tail -n "$TAIL_LINES" "$1" || true
        printf -- '----\n'
    }

    skip_report() { # LOG: lines of a test log that report a skipped check
        grep -nE '^[[:space:]]*(skip|SKIP)|^[[:space:]]*[0-9]+/[0-9]+[[:space:]].*[[:space:]]SKIP([[:space:]]|$)|^Skipped:[[:space:]]*[1-9]' "$1" || true
    }

    check_test_log() { # LOG: 0 if the test output reports no skip; prints what it found
        local log=$1 skips n
        n=$(grep -cE '^[0-9]+%: Checks: [0-9]+' "$log" || true)
        note "Check summaries in the output: $n"
        grep -E '^(Ok|Fail|Skipped|Timeout|Expected Fail|Unexpected Pass):' "$log" | sed 's/^/    meson /' || true
        skips=$(skip_report "$log")
        if [ -n "$skips" ]; then
            printf 'fresh: FAIL: the test output reports skipped checks (a skip is a failure here):\n'
            printf '%s\n' "$skips" | sed 's/^/    /'
            return 1
        fi
        return 0
    }

    clean_clone() { # DEST: a clone of $src (the committed HEAD), checked
        git clone --no-local --quiet "$src" "$1"
        git -C "$1" remote set-url origin "$REPO"
        if [ "$(git -C "$1" rev-parse HEAD)" != "$commit" ] || [ -n "$(git -C "$1" status --porcelain --ignored)" ]; then
            echo "fresh: the clone at $1 is not a clean checkout of $commit"
            return 1
        fi
        echo "fresh: clean clone of $commit at $1"
    }

    readme_command() { # README NAME: the first non-empty line after <!-- readme-command: NAME -->
        local readme=$1 name=$2 count
        count=$(grep -cxE "[[:space:]]*<!-- readme-command: $name -->[[:space:]]*" "$readme" || true)
        [ "$count" -ge 1 ] || die "README.md has no '<!-- readme-command: $name -->' marker"
        [ "$count" -eq 1 ] || die "README.md has $count '<!-- readme-command: $name -->' markers (want one)"
        awk -v name="$name" '
            { sub(/\r$/, "") }
            want {
                if ($0 ~ /^[ \t]*$/) next
                if (substr($0, 1, 4) != "    ") {
                    printf "fresh: ERROR: README.md line %d, after the %s marker, is not a 4-space indented code line: %s\n", NR, name, $0 > "/dev/stderr"
                    bad = 1; exit
                }
                line = substr($0, 5); sub(/[ \t]+$/, "", line); print line; got = 1; exit
            }
            { l = $0; gsub(/^[ \t]+|[ \t]+$/, "", l); if (l == "<!-- readme-command: " name " -->") want = 1 }
            END { if (bad) exit 3; if (!got) { printf "fresh: ERROR: nothing after the README %s marker\n", name > "/dev/stderr"; exit 2 } }' "$readme" ||
            exit 2
    }

    # ---- the README's commands, from a clean clone's README (first: fail fast) ------------------
    [ -f "$src/README.md" ] || die "no README.md in $REPO at $commit"
    cmd_main=$(readme_command "$src/README.md" main)
    cmd_test=$(readme_command "$src/README.md" test)
    label[root-main]="root: $cmd_main"
    label[root-test]="root: $cmd_test"
    label[host-test]="host, bare venv python3 first: $cmd_test"
    note "README main command: $cmd_main"
    note "README test command: $cmd_test"

    # ---- 1. the root -----------------------------------------------------------------------
    if [ -e "$root" ]; then
        note "removing a root left by an earlier run"
        remove_tree "$root" || die "cannot remove the old root $root"
    fi
    remove_tree "$hostdir" || die "cannot remove the old host clone $hostdir"

    say "1. debootstrap --variant=minbase $SUITE $root $MIRROR (log: $logs/debootstrap.log)"
    t0=$(date +%s)
    ok=1
    if ! "${ns[@]}" debootstrap --variant=minbase --include=ca-certificates --components=main \
        "$SUITE" "$root" "$MIRROR" >"$logs/debootstrap.log" 2>&1; then
        ok=0
        printf 'fresh: FAIL: debootstrap failed\n'
        fail_tail "$logs/debootstrap.log"
    fi
    configure_root() {
        # the same apt sources as this machine (main), DNS, and the Acquire settings apt uses here
        rm -f "$root/etc/apt/sources.list"
        awk '{ if (!($1 in s)) { u[++n] = $1; s[$1] = $2 } else s[$1] = s[$1] " " $2 }
             END { for (i = 1; i <= n; i++) {
                     printf "Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n", u[i], s[u[i]]
                     printf "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n" } }' \
            <<<"$sources" >"$root/etc/apt/sources.list.d/debian.sources"
        [ -f "$root/usr/share/keyrings/debian-archive-keyring.gpg" ] ||
            sed -i '/^Signed-By:/d' "$root/etc/apt/sources.list.d/debian.sources"
        rm -f "$root/etc/resolv.conf"
        cat /etc/resolv.conf >"$root/etc/resolv.conf"
        apt-config dump 2>/dev/null | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy|ForceIPv4|ForceIPv6) ' \
            >"$root/etc/apt/apt.conf.d/99fresh-from-host" || true
        # no service starts in a chroot
        printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
        chmod 0755 "$root/usr/sbin/policy-rc.d"
        echo "root: apt sources:"
        cat "$root/etc/apt/sources.list.d/debian.sources"
        echo "root: apt settings from this machine:"
        cat "$root/etc/apt/apt.conf.d/99fresh-from-host"
        # proof of a fresh root: none of the project's tools is there yet
        local t
        for t in meson ninja gcc cc python3 nvcc; do
            if chroot "$root" /usr/bin/env -i PATH="$std_path" /bin/sh -c "command -v $t" >/dev/null 2>&1; then
                echo "fresh: the new root already has '$t': not a fresh root"
                return 1
            fi
        done
        echo "root: $(chroot "$root" dpkg-query -W -f='.\n' | wc -l) Debian packages, $(du -sh --one-file-system "$root" | cut -f1)"
    }
    if [ $ok = 1 ]; then
        try configure_root >>"$logs/debootstrap.log" 2>&1
        if [ "$try_rc" -ne 0 ]; then
            ok=0
            printf 'fresh: FAIL: configuring the root failed\n'
            fail_tail "$logs/debootstrap.log"
        fi
    fi
    if [ $ok = 1 ]; then
        try clean_clone "$root/root/repo" >>"$logs/debootstrap.log" 2>&1
        if [ "$try_rc" -ne 0 ]; then
            ok=0
            printf 'fresh: FAIL: git clone into the root failed\n'
            fail_tail "$logs/debootstrap.log"
        fi
    fi
    secs[debootstrap]=$(($(date +%s) - t0))
    if [ $ok = 1 ]; then
        result[debootstrap]=PASS
        grep '^root: [0-9]* Debian packages' "$logs/debootstrap.log" || true
        note "clean clone of $commit at /root/repo in the root"
        note "debootstrap and setup of the root: PASS in $(fmt_time "${secs[debootstrap]}")"
    else
        result[debootstrap]=FAIL
    fi

    run_in_root() { # PHASE COMMAND
        local phase=$1 cmd=$2 log=$logs/$1.log rc=0 t0
        say "${label[$phase]}   (in the root, from /root/repo; log: $log)"
        t0=$(date +%s)
        "${ns[@]}" bash "$self" __inroot "$root" "$cmd" 2>&1 9>&- | tee "$log" || rc=$?
        secs[$phase]=$(($(date +%s) - t0))
        if [ -n "$(mounts_under "$root")" ]; then
            warn "mounts remain under $root after the command; unmounting"
            unmount_under "$root" || die "cannot unmount under $root"
        fi
        if [ $rc -ne 0 ]; then
            printf 'fresh: FAIL: `%s` exited with status %d in the root\n' "$cmd" "$rc"
            result[$phase]=FAIL
        else
            result[$phase]=PASS
        fi
    }

    # ---- 3. the README's commands in the root ----------------------------------------------------
    if [ "${result[debootstrap]}" = PASS ]; then
        run_in_root root-main "$cmd_main"
        run_in_root root-test "$cmd_test"
        check_test_log "$logs/root-test.log" || result[root-test]=FAIL
        note "root-main: ${result[root-main]} in $(fmt_time "${secs[root-main]}"); root-test: ${result[root-test]} in $(fmt_time "${secs[root-test]}")"
    fi

    # ---- 4. the test command on this machine, a bare venv's python3 first on PATH -------------------
    if [ "$SKIP_HOST" = 1 ]; then
        result[host-test]=SKIPPED
        warn "SKIP_HOST=1: the host phase is skipped (debugging only)"
    else
        say "${label[host-test]}   (in $hostdir/repo; log: $logs/host-test.log)"
        t0=$(date +%s)
        prepare_host() {
            mkdir -p "$hostdir"
            clean_clone "$hostdir/repo"
            local py
            py=$(command -v python3)
            echo "fresh: python3 on PATH: $py ($("$py" -c 'import sys; print(sys.version.split()[0], sys.executable)'))"
            "$py" -m venv --without-pip "$hostdir/venv"
            # the venv must be bare: NumPy is not importable from its python3
            if env -u PYTHONPATH -u PYTHONHOME "$hostdir/venv/bin/python3" -c 'import numpy' >/dev/null 2>&1; then
                echo "fresh: FAIL: $hostdir/venv/bin/python3 can import numpy: the venv is not bare"
                return 1
            fi
            echo "fresh: $hostdir/venv/bin/python3 cannot import numpy (a bare venv; first on PATH for the run)"
        }
        try prepare_host >"$logs/host-test.log" 2>&1
        rc=$try_rc
        cat "$logs/host-test.log"
        if [ $rc -eq 0 ]; then
            (
                cd "$hostdir/repo" || exit 1
                export VIRTUAL_ENV=$hostdir/venv PATH=$hostdir/venv/bin:$PATH
                unset PYTHONPATH PYTHONHOME LM_PYTHON
                [ "$(command -v python3)" = "$hostdir/venv/bin/python3" ] || {
                    echo "fresh: FAIL: python3 on PATH is $(command -v python3), not the venv's"
                    exit 1
                }
                exec bash -c "$cmd_test"
            ) 2>&1 9>&- | tee -a "$logs/host-test.log" || rc=$?
            [ $rc -eq 0 ] || printf 'fresh: FAIL: `%s` exited with status %d on the host\n' "$cmd_test" "$rc"
        else
            printf 'fresh: FAIL: preparing the host run failed\n'
        fi
        secs[host-test]=$(($(date +%s) - t0))
        if [ $rc -eq 0 ] && check_test_log "$logs/host-test.log"; then
            result[host-test]=PASS
        else
            result[host-test]=FAIL
        fi
    fi

    # ---- 5. summary ----------------------------------------------------------------------------
    total=$(($(date +%s) - t_start))
    status=0
    for p in "${phases[@]}"; do
        case ${result[$p]} in
        PASS) ;;
        SKIPPED) [ $status -ne 0 ] || status=3 ;;
        *) status=1 ;;
        esac
    done
    overall=PASS
    [ $status -eq 0 ] || overall=FAIL
    [ $status -ne 3 ] || overall="INCOMPLETE (skipped on request)"
    {
        printf '\n==== fresh.sh summary: %s at %s\n' "$REPO" "${commit:0:12}"
        for p in "${phases[@]}"; do
            printf '  %-64s %8s  %s\n' "${label[$p]:-$p}" "$(fmt_time "${secs[$p]}")" "${result[$p]}"
        done
        printf '  %-64s %8s  %s\n' "total" "$(fmt_time "$total")" "$overall"
        printf '  logs: %s\n' "$logs"
    } | tee "$logs/summary.txt"
    exit $status
}

main "$@"
