# Shared by the workload scripts: counters and the summary line, package
# installation, a vault in a temporary directory with a private copy of the
# binary, mount/unmount (with a forced fallback for a hung mount), fsck, and
# the EXIT trap that always unmounts, cleans up and prints the summary last.
#
# A script sets NAME, sources this file, calls need_pkgs and then
# workload_start; it may define cleanup_hook (run first in the EXIT trap).
# shellcheck shell=bash

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ATREST=${ATREST:-$REPO_ROOT/target/release/atrest}
[[ $ATREST == /* ]] || ATREST=$PWD/$ATREST

PASSED=0
FAILED=0
FAILED_NAMES=()
pass() { PASSED=$((PASSED + 1)); echo "PASS: $1"; }
fail() { FAILED=$((FAILED + 1)); FAILED_NAMES+=("$1"); echo "FAIL: $1${2:+ ($2)}"; }
# The summary is printed by the EXIT trap, as the very last line, whatever
# ended the script; an unexpected exit (set -e) counts as a failure.
summary() {
    ((FAILED == 0)) || echo "failed: ${FAILED_NAMES[*]}"
    echo "workload $NAME: $PASSED passed, $FAILED failed"
}
ERR_LINE=
trap 'ERR_LINE=${ERR_LINE:-$LINENO}' ERR

need_pkgs() { # need_pkgs DEB... : install what is missing (CI is a fresh Debian)
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

if [[ ! -x $ATREST ]]; then
    echo "atrest binary not found at $ATREST (cargo build --release -p atrest, or set ATREST)"
    fail "setup"; summary; exit 1 # (before the EXIT trap is set)
fi

cleanup_hook() { :; }

workload_start() {
    WORK=$(mktemp -d "${WORKLOAD_TMPDIR:-/var/tmp}/atrest-wl-$NAME.XXXXXX")
    VAULT=$WORK/vault
    MNT=$WORK/mnt
    PASS_FILE=$WORK/passphrase
    LOG=$WORK/mount.log
    mkdir -p "$MNT"
    # a private copy: the shared target dir may be rebuilt while this runs
    cp "$ATREST" "$WORK/atrest"
    ATREST=$WORK/atrest
    printf 'workload %s passphrase %s\n' "$NAME" "$RANDOM$RANDOM" >"$PASS_FILE"
    chmod 600 "$PASS_FILE"

    # Unmount with atrest; if that hangs or fails, abort the FUSE connection (read
    # from mountinfo, which does not touch the hung file system) and detach.
    force_unmount() {
        local mnt=$1 dev
        grep -qF " $mnt " /proc/self/mountinfo || return 0
        timeout 60 "$ATREST" unmount "$mnt" && return 0
        echo "atrest unmount $mnt failed or hung; aborting the FUSE connection" >&2
        dev=$(awk -v m="$mnt" '$5 == m { print $3 }' /proc/self/mountinfo | head -n1)
        [[ -n $dev && -e /sys/fs/fuse/connections/${dev#*:}/abort ]] &&
            echo 1 >"/sys/fs/fuse/connections/${dev#*:}/abort" || true
        umount -l "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
    }
    cleanup() {
        local rc=$?
        set +e
        trap - ERR
        if ((rc != 0 && FAILED == 0)); then
            fail "aborted" "exit $rc${ERR_LINE:+ after a failed command at line $ERR_LINE}"
        fi
        cleanup_hook "$rc"
        force_unmount "$MNT"
        if ((rc != 0 || FAILED != 0)) && [[ -s $LOG ]]; then
            # "Failed to send FUSE reply: ENOENT" is the kernel refusing a reply to
            # a request that was interrupted (signals); it is noise here.
            echo "--- last lines of the mount log ($LOG), without reply-to-interrupted noise ---"
            grep -v 'Failed to send FUSE reply: No such file' "$LOG" | tail -n 30
        fi
        if ((rc != 0 || FAILED != 0)) && [[ ${KEEP_WORK:-0} == 1 ]]; then
            echo "keeping $WORK"
        else
            rm -rf "$WORK"
        fi
        summary
        ((FAILED == 0)) && exit 0
        exit 1
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    # The pid of the mount process serving $VAULT at $MNT (argv holds both paths).
    mount_pid() {
        local p args
        for p in /proc/[0-9]*; do
            args=$(tr '\0' '\n' 2>/dev/null <"$p/cmdline") || continue
            grep -qxF mount <<<"$args" && grep -qxF "$VAULT" <<<"$args" &&
                grep -qxF "$MNT" <<<"$args" && { echo "${p#/proc/}"; return 0; }
        done
        return 1
    }
    do_mount() {
        "$ATREST" mount "$VAULT" "$MNT" --passphrase-file "$PASS_FILE" --log-file "$LOG" "$@"
        mountpoint -q "$MNT"
        MOUNT_PID=$(mount_pid)
    }
    # The mount must still be there and its process alive (catches daemon crashes).
    check_alive() {
        if kill -0 "$MOUNT_PID" 2>/dev/null && mountpoint -q "$MNT"; then
            pass "$1: mount process alive"
        else
            fail "$1: mount process alive" "pid $MOUNT_PID gone or mount lost"
            exit 1
        fi
    }
    run_fsck() {
        local out
        if out=$("$ATREST" fsck "$VAULT" --passphrase-file "$PASS_FILE" 2>&1); then
            pass "fsck: $out"
        else
            fail "fsck" "exit $?: $out"
        fi
    }
}
