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
# shellcheck source=tests/workloads/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_pkgs fio fuse3

workload_start

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
