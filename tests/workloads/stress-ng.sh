#!/usr/bin/env bash
# stress-ng file system stressors on an atrest mount, each with --verify.
#
# Creates a vault in a temporary directory, mounts it, runs each file system
# and I/O stressor of stress-ng that makes sense on a FUSE mount for a few
# seconds (--verify --metrics-brief, 2 instances each, in its own directory
# of the mount), then several of them at once, unmounts and runs `atrest fsck`.
#
# A stressor passes if stress-ng exits 0 and printed no "fail:" line (some
# stressors report verification failures without a non-zero exit). stress-ng
# skips a stressor itself when the file system lacks the feature (FIEMAP,
# inode flags ioctls, ...): that is reported as SKIP and is not a failure.
#
# If a stressor fails on the mount, it is run again in a plain directory on
# the backing file system; if it fails there too, the cause is not atrest's
# (reported as SKIP with stress-ng's message). Seen with stress-ng 0.15.06 on
# kernel 6.18: io-uring fails with IORING_OP_STATX ENOENT on ext4 as well;
# fiemap skips itself (FUSE has no FS_IOC_FIEMAP); chattr and inode-flags get
# EOPNOTSUPP for the inode flag ioctls (lsattr too) and count that as a pass.
#
# Not run, because they do not exercise the file system under test:
#   bind-mount, binderfs, procfs, getdent (walk /proc, /dev, /sys, not
#   --temp-path), dup, eventfd, ioprio (no file system involved), rawdev
#   (needs a block device), verity (fs-verity does not exist on FUSE).
#
# Env: ATREST (binary; default target/release/atrest under the repo root),
#      SNG_SECONDS (seconds per stressor, default 2), WORKLOAD_TMPDIR
#      (parent of the temp dir; default /var/tmp), KEEP_WORK=1.
set -euo pipefail

NAME=stress-ng
# shellcheck source=tests/workloads/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_pkgs stress-ng fuse3

workload_start

"$ATREST" init "$VAULT" --passphrase-file "$PASS_FILE" --no-recovery-key \
    --argon2-memory 8 --argon2-iterations 1 >/dev/null
do_mount

SECS=${SNG_SECONDS:-2}
# a small tree for the fstat stressor to stat
mkdir -p "$MNT/fstat-tree"
cp -r /usr/include/linux "$MNT/fstat-tree/"

# stressor name (with an optional @variant for the label), then its extra
# options (sizes kept small so each run is short)
STRESSORS=(
    "access"
    "aio"
    "aiol"
    "chattr"
    "chdir"
    "chmod"
    "chown"
    "copy-file --copy-file-bytes 128M"
    "dentry"
    "dir"
    "dirdeep --dirdeep-inodes 2000"
    "dirmany"
    "dnotify"
    "fallocate --fallocate-bytes 16M"
    "fanotify"
    "fcntl"
    "fiemap"
    "file-ioctl"
    "filename"
    "flock"
    "fpunch"
    "fsize"
    "fstat --fstat-dir $MNT/fstat-tree"
    "handle"
    "hdd --hdd-bytes 32M"
    "hdd@rnd --hdd-bytes 32M --hdd-opts wr-rnd,rd-rnd"
    "hdd@direct --hdd-bytes 32M --hdd-opts direct,wr-seq,rd-seq"
    "inode-flags"
    "inotify"
    "io"
    "io-uring"
    "iomix --iomix-bytes 32M"
    "lease"
    "link"
    "locka"
    "lockf"
    "lockofd"
    "mknod"
    "mmap --mmap-file --mmap-bytes 16M"
    "open"
    "readahead --readahead-bytes 32M"
    "rename"
    "revio --revio-bytes 32M"
    "seek --seek-size 32M"
    "symlink"
    "sync-file --sync-file-bytes 16M"
    "touch"
    "utime"
    "xattr"
)

SKIPPED=()
FAIL_RE=' fail: | error: |finished prematurely'
sng() { # sng LOG DIR stress-ng-args... : run stress-ng, return non-zero on failure
    local log=$1 dir=$2 rc=0
    shift 2
    mkdir -p "$dir"
    timeout -k 10 $((SECS * 5 + 120)) \
        stress-ng "$@" --verify --metrics-brief --temp-path "$dir" >"$log" 2>&1 || rc=$?
    ((rc == 0)) && ! grep -qE "$FAIL_RE" "$log" && return 0
    ((rc != 0)) || rc=2
    return "$rc"
}
failure_lines() {
    grep -E "$FAIL_RE" "$1" | sed 's/^stress-ng: //; s/\[[0-9]*\] //g' | sort | uniq -c |
        sort -rn | head -n 5 | sed 's/^/      /' || true
}
# run_sng LABEL stress-ng-args... : run in a directory of the mount; if it
# fails, run it again in a plain directory next to the vault (the backing file
# system): a stressor that fails there as well fails for a reason that is not
# atrest's (stress-ng or kernel), and is reported as SKIP with its message.
run_sng() {
    local label=$1 rc=0 t0=$SECONDS
    shift
    local safe=${label//[^A-Za-z0-9_.@-]/_}
    local dir=$MNT/sng-$safe log=$WORK/sng-$safe.log
    sng "$log" "$dir" "$@" || rc=$?
    local desc="stress-ng $label ($((SECONDS - t0)) s)"
    if ((rc == 0)); then
        if grep -qiE 'skipping stress|not supported|not implemented' "$log"; then
            SKIPPED+=("$label")
            echo "SKIP: $desc: $(grep -iE 'skipping stress|not supported|not implemented' "$log" |
                head -n1 | sed 's/^stress-ng: [a-z]*: *\[[0-9]*\] //')"
        fi
        pass "$desc"
    elif ((rc == 3 || rc == 4)); then # no resource / ENOSYS: stress-ng skipped it
        SKIPPED+=("$label")
        echo "SKIP: $desc: stress-ng exit $rc (resource unavailable / not implemented)"
        pass "$desc"
    elif ! sng "$log.baseline" "$WORK/baseline-$safe" "$@"; then
        SKIPPED+=("$label")
        echo "SKIP: $desc: fails the same way on the backing file system, not an atrest problem:"
        failure_lines "$log.baseline"
        pass "$desc"
    else
        fail "$label" "exit $rc, passes on the backing file system"
        failure_lines "$log"
    fi
    rm -rf "$WORK/baseline-$safe"
    # the stressor's directory must be listable and removable afterwards
    if ! ls -la "$dir" >/dev/null || ! rm -rf "$dir"; then
        fail "$label: cleanup of $dir"
    fi
}

for entry in "${STRESSORS[@]}"; do
    read -r -a args <<<"$entry"
    label=${args[0]}
    run_sng "$label" "--${label%%@*}" 2 "${args[@]:1}" -t "${SECS}s"
done
check_alive "after single stressors"

# Several stressors at once on the same mount (concurrency across operations).
run_sng "mixed(hdd,seek,rename,dir,link,symlink,xattr,dentry,utime,chmod)" \
    --hdd 2 --hdd-bytes 32M --seek 2 --seek-size 32M --rename 2 --dir 2 --link 2 \
    --symlink 2 --xattr 2 --dentry 2 --utime 1 --chmod 1 -t "$((SECS * 5))s"
check_alive "after mixed stressors"

# Nothing may be left over apart from the fstat tree.
if leftover=$(find "$MNT" -mindepth 1 -maxdepth 1 ! -name fstat-tree) && [[ -z $leftover ]]; then
    pass "mount root clean after stressors"
else
    fail "mount root clean after stressors" "left: $leftover"
fi
if diff -r /usr/include/linux "$MNT/fstat-tree/linux" >/dev/null; then
    pass "fstat tree unchanged"
else
    fail "fstat tree unchanged"
fi

force_unmount "$MNT"
run_fsck
((${#SKIPPED[@]} == 0)) || echo "skipped (see SKIP lines for why): ${SKIPPED[*]}"
((FAILED == 0)) # the EXIT trap prints the summary
