#!/usr/bin/env bash
# fio workload on an atrest mount, with data verification.
#
# Creates a vault in a temporary directory, mounts it, runs several fio job
# sets with verify=crc32c/md5 and do_verify=1 (sequential and random, several
# jobs on one shared file and on many files, unaligned writes that make jobs
# share 4 KiB content blocks, readers racing writers, O_DIRECT, mmap), remounts
# and re-verifies everything that was written with --verify_only, unmounts and
# runs `atrest fsck`.
#
# Env: ATREST (binary; default target/release/atrest under the repo root),
#      WORKLOAD_TMPDIR (parent of the temp dir; default /var/tmp),
#      KEEP_WORK=1 (keep the temp dir on failure).
set -euo pipefail

NAME=fio
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
need_pkgs fio fuse3

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

"$ATREST" init "$VAULT" --passphrase-file "$PASS_FILE" --no-recovery-key \
    --argon2-memory 8 --argon2-iterations 1 >/dev/null
do_mount

# ---------------------------------------------------------------------------
# Job sets. Each is a fio job file; fio exits non-zero on a verify failure or
# an I/O error (e.g. EIO from a failed block authentication).
JOBS=$WORK/jobs
mkdir -p "$JOBS"
cat >"$JOBS/seq-many-files.fio" <<'FIO'
; 4 jobs x 4 files x 8 MiB, sequential write then sequential read-back verify.
[global]
directory=${MNT}/seq
ioengine=psync
bs=1M
size=32M
nrfiles=4
numjobs=4
verify=crc32c
do_verify=1
verify_fatal=1
[seq-many-files]
rw=write
FIO
cat >"$JOBS/rand-many-files.fio" <<'FIO'
; 4 jobs x 4 files x 4 MiB, random 4 KiB writes, md5 verify.
[global]
directory=${MNT}/rand
ioengine=psync
bs=4k
size=16M
nrfiles=4
numjobs=4
verify=md5
do_verify=1
verify_fatal=1
[rand-many-files]
rw=randwrite
FIO
cat >"$JOBS/seq-shared-file.fio" <<'FIO'
; 4 jobs write disjoint 16 MiB regions of ONE file at once, 64 KiB blocks.
[global]
filename=${MNT}/seq-shared
ioengine=psync
bs=64k
size=16M
offset_increment=16M
numjobs=4
verify=crc32c
do_verify=1
verify_fatal=1
[seq-shared-file]
rw=write
FIO
cat >"$JOBS/rand-shared-file.fio" <<'FIO'
; 4 jobs, random 4 KiB writes into disjoint regions of ONE file.
[global]
filename=${MNT}/rand-shared
ioengine=psync
bs=4k
size=16M
offset_increment=16M
numjobs=4
verify=md5
do_verify=1
verify_fatal=1
[rand-shared-file]
rw=randwrite
FIO
cat >"$JOBS/rand-shared-unaligned.fio" <<'FIO'
; 4 jobs, random writes of 512 B..24 KiB (512-byte aligned) into regions
; of ONE file that are 1000 bytes apart, so neighbouring jobs write the same
; 4 KiB content block concurrently (read-modify-write races).
[global]
filename=${MNT}/unaligned-shared
ioengine=psync
bsrange=512-24k
size=8M
offset_increment=8389608
numjobs=4
verify=crc32c
do_verify=1
verify_fatal=1
[rand-shared-unaligned]
rw=randwrite
FIO
cat >"$JOBS/randrw-backlog.fio" <<'FIO'
; mixed random read/write with verification interleaved with the writes.
[global]
directory=${MNT}/randrw
ioengine=psync
bs=4k
size=16M
numjobs=4
verify=crc32c
verify_backlog=512
do_verify=1
verify_fatal=1
[randrw-backlog]
rw=randrw
rwmixread=50
FIO
cat >"$JOBS/race-readers-writers.fio" <<'FIO'
; 2 writers rewrite ONE 16 MiB file with unaligned blocks while 2 readers read
; it at random for the same time: readers must never get EIO or short reads.
[global]
filename=${MNT}/race
ioengine=psync
size=16M
[writer]
rw=randwrite
bsrange=1k-12k
numjobs=2
offset_increment=8M
size=8M
time_based=1
runtime=8
[reader]
rw=randread
bsrange=1k-16k
blockalign=1
numjobs=2
time_based=1
runtime=8
FIO
cat >"$JOBS/direct-libaio.fio" <<'FIO'
; O_DIRECT with libaio, queue depth 8.
[global]
directory=${MNT}/direct
ioengine=libaio
iodepth=8
direct=1
bs=16k
size=16M
numjobs=2
verify=md5
do_verify=1
verify_fatal=1
[direct-libaio]
rw=randwrite
FIO
cat >"$JOBS/mmap.fio" <<'FIO'
; shared writable mmap: data goes through the page cache and writeback.
[global]
directory=${MNT}/mmap
ioengine=mmap
bs=4k
size=16M
numjobs=2
verify=crc32c
do_verify=1
verify_fatal=1
[mmap]
rw=randwrite
FIO

export MNT
mkdir -p "$MNT"/{seq,rand,randrw,direct,mmap}
# layout for the race job: readers need the whole file to exist
dd if=/dev/urandom of="$MNT/race" bs=1M count=16 status=none

run_fio() { # run_fio JOBNAME [extra fio args] ; log in $WORK/fio-JOBNAME.log
    local job=$1 t0 rc=0
    shift
    t0=$SECONDS
    # run in $WORK: fio drops files (verify state) into its working directory
    (cd "$WORK" && timeout 300 fio --verify_state_save=0 --output="$WORK/fio-$job$*.log" \
        "$@" "$JOBS/$job.fio") || rc=$?
    local desc="fio $job${*:+ $*} ($((SECONDS - t0)) s)"
    if ((rc == 0)) && ! grep -qE 'err= *[1-9]|verify: bad|bad magic|crc32c: verify failed|md5: verify failed' "$WORK/fio-$job$*.log"; then
        pass "$desc"
    else
        fail "$desc" "exit $rc; see below"
        grep -E 'err=|verify|fio:|bad' "$WORK/fio-$job$*.log" | head -n 20 || true
    fi
}

for job in seq-many-files rand-many-files seq-shared-file rand-shared-file \
    rand-shared-unaligned randrw-backlog race-readers-writers direct-libaio mmap; do
    run_fio "$job"
done
# race: the file must still read back completely after the race
if size=$(cat "$MNT/race" | wc -c) && ((size == 16 << 20)); then
    pass "race file reads back whole"
else
    fail "race file reads back whole"
fi
check_alive "after write phase"

# Remount (and drop the page cache) and verify what the write jobs left on
# disk, without writing anything.
force_unmount "$MNT"
sync; echo 3 >/proc/sys/vm/drop_caches
do_mount
for job in seq-many-files rand-many-files seq-shared-file rand-shared-file \
    rand-shared-unaligned direct-libaio mmap; do
    run_fio "$job" --verify_only
done
check_alive "after verify-only phase"

force_unmount "$MNT"
run_fsck
((FAILED == 0)) # the EXIT trap prints the summary
