#!/usr/bin/env bash
# Work of the mount process per unit of I/O, format 1 against format 2:
# CPU time (user + system, all threads) and system calls, per MiB streamed,
# per 1,000 random 4 KiB reads, per 1,000 small files created and per
# 1,000 entries untarred, and the mount's peak RSS. Unlike
# the throughput rows of bench/fuse.sh these counts mean something on a
# busy machine: they measure work done, not time waited.
#
#   bench/fuse-f2-profile.sh            # both formats, 256 MiB streams
#   FORMATS=2 SIZE_MB=64 bench/fuse-f2-profile.sh
#   PERF_RECORD=1 ...                   # also perf record -g, top symbols
#
# Workloads, each on a fresh mount's file system (one vault per format):
#   seqwrite  dd if=/dev/zero bs=1M count=SIZE_MB conv=fsync
#   seqread   the same file read with dd bs=1M after evicting it from the
#             page cache (posix_fadvise DONTNEED on the file through the
#             mount and on every file of the backing directory; no global
#             drop_caches, so other work on the machine is left alone)
#   randread  fio randread 4 KiB O_DIRECT psync, RAND_IOS reads of a
#             64 MiB file
#   create    CREATE_FILES files of 4 KiB (python), then sync
#   untar     bench/fuse.sh's tree (/usr/include and /usr/lib/python3, kept
#             in /dev/shm) extracted with tar, then sync
#   overwrite the seqwrite file written again in place (conv=notrunc,fsync):
#             format 2 journals every block (§16.14), the row that shows
#             what journaled blocks cost in CPU and memory
#   fsyncs    FSYNCS writes of 8 KiB, each followed by fdatasync, over a
#             16 MiB file written and synced before (PostgreSQL's WAL:
#             on format 2 every block journaled, every fsync a log flush)
# Each workload runs twice: once with perf stat on the mount process (CPU),
# once under strace -c -f (system calls; strace slows it, so its CPU is not
# used). Beside the CPU, the requests issued to block devices during the
# workload are counted (block:block_rq_issue on all CPUs, flushes
# included: other work on the machine adds to it, so compare rows run
# back to back, not absolute figures).
# Env: ATREST (binary; default target/release/atrest),
# FORMATS ("1 2"), SIZE_MB (256), RAND_IOS (20000), CREATE_FILES (2000),
# FSYNCS (2048),
# WORKLOADS ("seqwrite seqread randread create untar overwrite fsyncs"),
# BENCH_DIR (/var/tmp), PERF_RECORD (0), OUT (report path; default
# bench/results/<date>-fuse-f2-profile.md). Peak RSS is the mount
# process's VmHWM after all its workloads.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ATREST=${ATREST:-$REPO_ROOT/target/release/atrest}
[[ $ATREST == /* ]] || ATREST=$PWD/$ATREST
FORMATS=${FORMATS:-"1 2"}
SIZE_MB=${SIZE_MB:-256}
RAND_IOS=${RAND_IOS:-20000}
CREATE_FILES=${CREATE_FILES:-2000}
FSYNCS=${FSYNCS:-2048}
PERF_RECORD=${PERF_RECORD:-0}
OUT=${OUT:-$REPO_ROOT/bench/results/$(date -u +%F)-fuse-f2-profile.md}

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (perf and strace attach to the mount process)"
[[ -x $ATREST ]] || die "atrest binary not found at $ATREST (cargo build --release -p atrest)"
for tool in perf strace fio python3 dd tar; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install linux-perf strace fio python3)"
done

BASE=$(mktemp -d "${BENCH_DIR:-/var/tmp}/atrest-f2prof.XXXXXX")
cp "$ATREST" "$BASE/atrest"
ATREST_SHA=$(sha256sum "$ATREST" | cut -c1-12)
ATREST=$BASE/atrest
PASS=$BASE/passphrase
printf 'profile passphrase %s\n' "$RANDOM$RANDOM" >"$PASS"
chmod 600 "$PASS"
MNT=$BASE/mnt
mkdir -p "$MNT"
cleanup() {
    set +e
    mountpoint -q "$MNT" && timeout 120 "$ATREST" unmount "$MNT"
    rm -rf "$BASE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The mount process: the one whose argv holds `mount` and the mount point.
mount_pid() {
    local p
    for p in /proc/[0-9]*; do
        tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF "$MNT" || continue
        tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF mount || continue
        echo "${p#/proc/}"
        return 0
    done
    return 1
}

# Evicts a file's cached pages (through the mount, or in the backing dir).
evict() {
    python3 - "$@" <<'PY'
import os, sys
for root in sys.argv[1:]:
    paths = [root] if os.path.isfile(root) else [
        os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
PY
}

w_seqwrite() { dd if=/dev/zero of="$MNT/seq.bin" bs=1M count="$SIZE_MB" conv=fsync status=none; }
w_overwrite() { dd if=/dev/zero of="$MNT/seq.bin" bs=1M count="$SIZE_MB" conv=notrunc,fsync status=none; }
w_untar() {
    mkdir "$MNT/tree.$1"
    tar -C "$MNT/tree.$1" -xf "$TAR"
    sync
}
w_seqread() { dd if="$MNT/seq.bin" of=/dev/null bs=1M status=none; }
w_fsyncs() {
    fio --name=fsyncs --filename="$MNT/wal.bin" --size=16M --rw=write --bs=8k \
        --number_ios="$FSYNCS" --fdatasync=1 --ioengine=psync --output=/dev/null
}
w_randread() {
    fio --name=randread --filename="$MNT/rand.bin" --size=64M --rw=randread --bs=4k \
        --direct=1 --ioengine=psync --number_ios="$RAND_IOS" --output=/dev/null
}
w_create() {
    python3 - "$MNT/many.$1" "$CREATE_FILES" <<'PY'
import os, sys
d, n, block = sys.argv[1], int(sys.argv[2]), b"x" * 4096
os.mkdir(d)
for i in range(n):
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(block)
os.sync()
PY
}
# before each run of a workload: what it needs in place
prepare() {
    case $1 in
    seqwrite) rm -f "$MNT/seq.bin" ;;
    seqread) evict "$MNT/seq.bin" "$VAULT" ;;
    randread)
        [[ -f $MNT/rand.bin ]] || fio --name=layout --filename="$MNT/rand.bin" --size=64M \
            --rw=write --bs=1M --end_fsync=1 --output=/dev/null
        evict "$MNT/rand.bin" "$VAULT"
        ;;
    overwrite) [[ -f $MNT/seq.bin ]] || w_seqwrite ;;
    fsyncs)
        [[ -f $MNT/wal.bin ]] ||
            dd if=/dev/zero of="$MNT/wal.bin" bs=1M count=16 conv=fsync status=none
        ;;
    create | untar) ;;
    esac
}
# units of work of one run: MiB, or thousands of reads or files
units() {
    case $1 in
    seqwrite | seqread | overwrite) echo "$SIZE_MB" ;;
    untar) awk -v n="$TAR_ENTRIES" 'BEGIN { print n / 1000 }' ;;
    randread) awk -v n="$RAND_IOS" 'BEGIN { print n / 1000 }' ;;
    fsyncs) awk -v n="$FSYNCS" 'BEGIN { print n / 1000 }' ;;
    create) awk -v n="$CREATE_FILES" 'BEGIN { print n / 1000 }' ;;
    esac
}
declare -A UNIT=([seqwrite]=MiB [seqread]=MiB [randread]="1k reads" [create]="1k files"
    [untar]="1k entries" [overwrite]=MiB [fsyncs]="1k fsyncs")
read -r -a WORKLOADS <<<"${WORKLOADS:-seqwrite seqread randread create untar overwrite fsyncs}"

# The tree bench/fuse.sh untars, built once and kept on /dev/shm.
TAR=/dev/shm/atrest-bench-tree.tar
if [[ " ${WORKLOADS[*]} " == *" untar "* ]]; then
    if [[ ! -s $TAR ]]; then
        log "building $TAR from /usr/include and /usr/lib/python3"
        tar -C / -cf "$TAR.tmp" usr/include usr/lib/python3 2>/dev/null || true
        mv "$TAR.tmp" "$TAR"
    fi
    TAR_ENTRIES=$(tar -tf "$TAR" | wc -l)
fi

ROWS=()
TOPS=()
HWM=()
for format in $FORMATS; do
    VAULT=$BASE/vault$format
    log "format $format: init and mount"
    "$ATREST" init "$VAULT" --passphrase-file "$PASS" --no-recovery-key --format "$format" \
        >/dev/null 2>&1
    "$ATREST" mount "$VAULT" "$MNT" --passphrase-file "$PASS" --log-file "$BASE/mount$format.log" \
        >/dev/null
    PID=$(mount_pid) || die "mount process not found"
    for w in "${WORKLOADS[@]}"; do
        u=$(units "$w")
        # CPU: perf stat's task-clock over the workload, all threads.
        prepare "$w"
        perf stat -x, -e task-clock,context-switches -p "$PID" -o "$BASE/stat.$format.$w" &
        STAT=$!
        perf stat -x, -a -e block:block_rq_issue -o "$BASE/block.$format.$w" &
        BLOCK=$!
        sleep 0.5
        "w_$w" cpu
        kill -INT "$STAT" "$BLOCK"
        wait "$STAT" "$BLOCK" || true
        cpu_ms=$(awk -F, '$3 == "task-clock" { print $1 }' "$BASE/stat.$format.$w")
        cs=$(awk -F, '$3 == "context-switches" { print $1 }' "$BASE/stat.$format.$w")
        requests=$(awk -F, '$3 ~ /block_rq_issue/ { print $1 }' "$BASE/block.$format.$w")
        # System calls: strace -c over a second run.
        prepare "$w"
        strace -c -U calls,name -f -q -p "$PID" -o "$BASE/strace.$format.$w" &
        TRACE=$!
        sleep 0.5
        "w_$w" trace
        kill -INT "$TRACE"
        wait "$TRACE" || true
        calls=$(awk '$2 == "total" { print $1 }' "$BASE/strace.$format.$w")
        top=$(awk 'NR > 2 && $2 != "total" && $1 ~ /^[0-9]+$/ { print $1, $2 }' \
            "$BASE/strace.$format.$w" | sort -rn | head -n 4 |
            awk -v u="$u" '{ printf "%s%s %.0f", (NR > 1 ? ", " : ""), $2, $1 / u }')
        ROWS+=("$(printf '| %s | %s | %s | %.1f | %.0f | %.1f | %.0f | %s |' "$w" "$format" \
            "${UNIT[$w]}" "$(awk -v c="$cpu_ms" -v u="$u" 'BEGIN { print c / u }')" \
            "$(awk -v c="$cs" -v u="$u" 'BEGIN { print c / u }')" \
            "$(awk -v c="${requests:-0}" -v u="$u" 'BEGIN { print c / u }')" \
            "$(awk -v c="$calls" -v u="$u" 'BEGIN { print c / u }')" "$top")")
        log "  $w: ${ROWS[-1]}"
        if [[ $PERF_RECORD == 1 ]]; then
            prepare "$w"
            perf record -g -p "$PID" -o "$BASE/perf.$format.$w" 2>/dev/null &
            REC=$!
            sleep 0.5
            "w_$w" perf
            kill -INT "$REC"
            wait "$REC" || true
            TOPS+=("### $w, format $format" '' '```'
                "$( (perf report -i "$BASE/perf.$format.$w" --no-children --sort symbol --stdio 2>&1 ||
                    true) | grep -E '^ +[0-9]' | head -n 25 || true)" '```' '')
        fi
    done
    HWM+=("format $format: $(awk '/^VmHWM:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$PID/status")")
    timeout 120 "$ATREST" unmount "$MNT"
done

{
    echo "# Mount process work per unit of I/O — $(date -u '+%F %T') UTC"
    echo
    echo "- atrest $("$ATREST" --version 2>/dev/null | head -n1), binary sha256 $ATREST_SHA…"
    echo "- $(nproc) CPUs, kernel $(uname -r), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- CPU: perf stat task-clock of the mount process (all threads); system calls: strace -c -f"
    echo "  over a second run of the same workload. Work counts, not throughput: valid on a busy machine."
    echo "- block requests: block:block_rq_issue on all CPUs during the CPU run, flushes included (other work adds to it)."
    echo
    echo "| workload | format | per | CPU ms | context switches | block requests | system calls | top calls |"
    echo "|---|---|---|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Peak RSS of the mount process (VmHWM) after its workloads: $(IFS=';'; echo "${HWM[*]}" | sed 's/;/; /g')"
    echo
    ((${#TOPS[@]})) && printf '%s\n' "${TOPS[@]}"
} >"$OUT"
cat "$OUT"
