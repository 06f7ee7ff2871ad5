#!/usr/bin/env bash
# Side-by-side benchmark of kernel fscrypt set up by atrest against the same
# thing set up by the Debian `fscrypt` tool, with a plain directory and an
# atrest FUSE vault as references, all on ONE loop-mounted ext4 image
# (mkfs.ext4 -O encrypt; the loop device uses direct I/O, so the image's
# blocks are not cached twice and drop_caches gives a truly cold cache).
#
# Columns (targets), all directories on the same ext4:
#   plain           a plain directory
#   atrest-fscrypt  `atrest init --backend fscrypt DIR` (kernel fscrypt v2)
#   fscrypt tool    `fscrypt encrypt DIR --source=raw_key` (kernel fscrypt v2)
#   atrest FUSE     `atrest init VAULT` + `atrest mount`, VAULT on the image
#
# Rows (each the median over REPS repetitions) are those of bench/fuse.sh:
#   sequential write  dd if=/dev/zero bs=1M count=SIZE conv=fsync         MB/s
#   sequential read   cold cache (sync; drop_caches), dd of=/dev/null      MB/s
#   create 10k files  10,000 files of 4 KiB (python), then sync            s
#   untar             ~12,000 entries (/usr/include + /usr/lib/python3), then sync  s
#   ls -lR cold/warm  cold: after drop_caches; warm: right after           s
#   rm -rf            the untarred tree (warm, right after ls), then sync   s
#   random 4k read    fio randread bs=4k O_DIRECT, 256 MiB file, time based  IOPS
#   pgbench -i -s 10  PostgreSQL data directory inside each                s
#   pgbench TPS       -c 4 -j 2 -T PGBENCH_SECONDS                         TPS
# Ratio columns are speed ratios (> 1: atrest-fscrypt is faster):
#   vs fscrypt tool (target >= 0.95 on every row) and
#   vs plain        (target: within 1.2x, i.e. >= 0.83, on the metadata rows:
#                    create, untar, ls -lR cold/warm, rm -rf).
# After the rows the script checks atrest-fscrypt end to end (lock hides the
# names and contents, unlock brings back the same bytes) and runs `atrest fsck`
# on the FUSE vault.
#
# Env: ATREST (binary; default target/release/atrest under the repo root)
#      ATREST_MOUNT_ARGS (extra `atrest mount` args for the FUSE column)
#      REPS (default 3), QUICK=1 (256 MiB instead of 1 GiB, 1 rep, pgbench
#      10 s, fio 10 s), SIZE_MB, PG_SECONDS, FIO_SECONDS (override either mode),
#      BENCH_DIR (where the sparse image goes; default /var/tmp),
#      IMAGE_GB (default 8), RESULTS_DIR (default bench/results), PG_BIN,
#      KEEP_WORK=1 (keep the work dir; the image is still unmounted).
# Writes a markdown report to RESULTS_DIR/<date>-fscrypt[-quick].md and prints it.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ATREST=${ATREST:-$REPO_ROOT/target/release/atrest}
[[ $ATREST == /* ]] || ATREST=$PWD/$ATREST
read -r -a EXTRA_MOUNT_ARGS <<<"${ATREST_MOUNT_ARGS:-}"
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    SIZE_MB=${SIZE_MB:-256} REPS=${REPS:-1} PG_SECONDS=${PG_SECONDS:-10} FIO_SECONDS=${FIO_SECONDS:-10}
else
    SIZE_MB=${SIZE_MB:-1024} REPS=${REPS:-3} PG_SECONDS=${PG_SECONDS:-30} FIO_SECONDS=${FIO_SECONDS:-20}
fi
IMAGE_GB=${IMAGE_GB:-8}
RESULTS_DIR=${RESULTS_DIR:-$REPO_ROOT/bench/results}
TARGETS=(plain afs tool fuse)
declare -A TNAME=([plain]="plain" [afs]="atrest-fscrypt" [tool]="fscrypt tool" [fuse]="atrest FUSE")

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

[[ $(id -u) == 0 ]] || die "run as root (losetup, mount, drop_caches, fscrypt, runuser postgres)"
[[ -x $ATREST ]] || die "atrest binary not found at $ATREST (cargo build --release -p atrest)"
"$ATREST" unlock --help >/dev/null 2>&1 || die "$ATREST has no fscrypt backend (rebuild: cargo build --release -p atrest)"
need_pkgs fscrypt e2fsprogs fio postgresql postgresql-contrib fuse3 python3 util-linux mount
if [[ -z ${PG_BIN:-} ]]; then
    if [[ -x /usr/lib/postgresql/15/bin/postgres ]]; then
        PG_BIN=/usr/lib/postgresql/15/bin
    else
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    fi
fi

BASE=$(mktemp -d "${BENCH_DIR:-/var/tmp}/atrest-fscrypt-bench.XXXXXX")
chmod 755 "$BASE" # postgres must reach its data directories
HOST_FSTYPE=$(df --output=fstype "$BASE" | tail -n1)
[[ $HOST_FSTYPE != tmpfs ]] || die "$BASE is on tmpfs; set BENCH_DIR to a directory on a disk"
# a private copy: the shared target dir may be rebuilt while this runs
cp "$ATREST" "$BASE/atrest"
ATREST_SHA=$(sha256sum "$ATREST" | cut -c1-12)
ATREST_MTIME=$(date -r "$ATREST" '+%F %T')
ATREST=$BASE/atrest
# the tree at the start (the binary may be older: see its build time)
GIT_REV=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO_ROOT" diff --quiet HEAD -- crates 2>/dev/null || GIT_REV="$GIT_REV (crates/ modified)"
PASS_FILE=$BASE/passphrase
printf 'bench passphrase %s\n' "$RANDOM$RANDOM" >"$PASS_FILE"
RAW_KEY=$BASE/fscrypt-tool.key
head -c 32 /dev/urandom >"$RAW_KEY"
chmod 600 "$PASS_FILE" "$RAW_KEY"
IMG=$BASE/ext4.img
MNT=$BASE/mnt
FUSE_VAULT=$MNT/fuse-vault
declare -A DIR=([plain]=$MNT/plain [afs]=$MNT/atrest-fscrypt [tool]=$MNT/fscrypt-tool
    [fuse]=$BASE/fuse-mnt)
mkdir -p "$MNT" "${DIR[fuse]}" "$BASE/values"
LOOP=
CREATED_CONF=0

force_unmount_fuse() {
    local mnt=${DIR[fuse]} dev
    grep -qF " $mnt " /proc/self/mountinfo || return 0
    timeout 120 "$ATREST" unmount "$mnt" && return 0
    log "unmount of $mnt failed or hung; aborting the FUSE connection"
    dev=$(awk -v m="$mnt" '$5 == m { print $3 }' /proc/self/mountinfo | head -n1)
    [[ -n $dev && -e /sys/fs/fuse/connections/${dev#*:}/abort ]] &&
        echo 1 >"/sys/fs/fuse/connections/${dev#*:}/abort" || true
    umount -l "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
}
pg_stop_all() {
    local t
    for t in "${TARGETS[@]}"; do
        [[ -f ${DIR[$t]}/pgdata/postmaster.pid ]] &&
            runuser -u postgres -- "$PG_BIN/pg_ctl" -D "${DIR[$t]}/pgdata" -m immediate -w stop \
                >/dev/null 2>&1 || true
    done
}
cleanup() {
    set +e
    cd /
    pg_stop_all
    force_unmount_fuse
    if grep -qF " $MNT " /proc/self/mountinfo; then
        [[ -f $MNT/.atrest-fscrypt.atrest/atrest.conf ]] &&
            timeout 60 "$ATREST" lock "${DIR[afs]}" >/dev/null 2>&1
        [[ -d $MNT/.fscrypt ]] && timeout 60 fscrypt lock "${DIR[tool]}" --quiet >/dev/null 2>&1
        sync
        umount "$MNT" 2>/dev/null || { sleep 2; umount "$MNT"; } ||
            { log "umount $MNT failed; detaching lazily"; umount -l "$MNT"; }
    fi
    [[ -n $LOOP ]] && losetup -d "$LOOP"
    ((CREATED_CONF)) && rm -f /etc/fscrypt.conf
    if [[ ${KEEP_WORK:-0} == 1 ]]; then log "keeping $BASE"; else rm -rf "$BASE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pid of the process whose argv contains all of the given strings
find_pid() {
    local p args s ok
    for p in /proc/[0-9]*; do
        args=$(tr '\0' '\n' 2>/dev/null <"$p/cmdline") || continue
        ok=1
        for s in "$@"; do grep -qxF -- "$s" <<<"$args" || { ok=0; break; }; done
        ((ok)) && { echo "${p#/proc/}"; return 0; }
    done
    return 1
}

# --- the tree to untar, built once and kept on /dev/shm (shared with fuse.sh) -
TAR=/dev/shm/atrest-bench-tree.tar
if [[ ! -s $TAR ]]; then
    log "building $TAR from /usr/include and /usr/lib/python3"
    tar -C / -cf "$TAR.tmp.$$" usr/include usr/lib/python3 2>/dev/null || true
    mv "$TAR.tmp.$$" "$TAR"
fi
TAR_ENTRIES=$(tar -tf "$TAR" | wc -l)
TAR_MB=$(($(stat -c %s "$TAR") >> 20))

# --- the image and the four targets ---------------------------------------------
log "creating a ${IMAGE_GB} GiB sparse ext4 image (-O encrypt) in $BASE ($HOST_FSTYPE)"
truncate -s "${IMAGE_GB}G" "$IMG"
# no lazy inode table / journal init: the ext4lazyinit thread would write in
# the background during the first rows
mkfs.ext4 -q -F -O encrypt -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
if LOOP=$(losetup --direct-io=on -f --show "$IMG" 2>/dev/null); then :; else
    LOOP=$(losetup -f --show "$IMG")
fi
LOOP_DIO=$(cat "/sys/block/${LOOP#/dev/}/loop/dio" 2>/dev/null || echo "?")
[[ $LOOP_DIO == 1 ]] && LOOP_DIO=on || LOOP_DIO="off ($LOOP_DIO; the host page cache also holds the image)"
mount "$LOOP" "$MNT"
chmod 755 "$MNT"
MOUNT_OPTS=$(awk -v m="$MNT" '$2 == m { print $4 }' /proc/mounts | tail -n1)
mkdir "${DIR[plain]}" "${DIR[afs]}" "${DIR[tool]}"

log "atrest-fscrypt: atrest init --backend fscrypt ${DIR[afs]}"
"$ATREST" init --backend fscrypt "${DIR[afs]}" --passphrase-file "$PASS_FILE" --no-recovery-key \
    >"$BASE/init-afs.log" 2>&1 || die "atrest init --backend fscrypt failed: $(cat "$BASE/init-afs.log")"
# lock and unlock once, as a user would after a reboot
"$ATREST" lock "${DIR[afs]}" >/dev/null 2>&1 || die "atrest lock failed right after init"
"$ATREST" unlock "${DIR[afs]}" --passphrase-file "$PASS_FILE" >/dev/null 2>&1 || die "atrest unlock failed"
AFS_STATUS=$("$ATREST" status "${DIR[afs]}" 2>&1) || die "atrest status failed: $AFS_STATUS"
grep -q '^key: *unlocked' <<<"$AFS_STATUS" || die "atrest status does not say unlocked: $AFS_STATUS"
AFS_POLICY=$(sed -n 's/^policy: *//p' <<<"$AFS_STATUS")
AFS_DRIVER=$(sed -n 's/^driver: *//p' <<<"$AFS_STATUS")
AFS_WARNING=$(grep '^warning:' <<<"$AFS_STATUS" || echo "(no warning line)")
log "atrest status: $AFS_WARNING"

log "fscrypt tool: fscrypt setup, fscrypt encrypt ${DIR[tool]} --source=raw_key"
if [[ ! -e /etc/fscrypt.conf ]]; then
    fscrypt setup --force --quiet </dev/null >/dev/null || die "fscrypt setup (global) failed"
    CREATED_CONF=1
fi
grep -q '"policy_version": "2"' /etc/fscrypt.conf ||
    die "/etc/fscrypt.conf does not select policy_version 2 (v1 keys would be per user; postgres could not read them)"
fscrypt setup "$MNT" --force --quiet </dev/null >/dev/null || die "fscrypt setup $MNT failed"
fscrypt encrypt "${DIR[tool]}" --source=raw_key --key="$RAW_KEY" --name=bench --quiet </dev/null ||
    die "fscrypt encrypt failed"
TOOL_STATUS=$(fscrypt status "${DIR[tool]}" 2>&1) || die "fscrypt status failed: $TOOL_STATUS"
grep -q '^Unlocked: *Yes' <<<"$TOOL_STATUS" || die "fscrypt tool dir is not unlocked: $TOOL_STATUS"
TOOL_POLICY=$(sed -n 's/^Options: *//p' <<<"$TOOL_STATUS" | sed 's/ *$//')

log "atrest FUSE: vault $FUSE_VAULT on the image, mounted at ${DIR[fuse]}"
"$ATREST" init "$FUSE_VAULT" --passphrase-file "$PASS_FILE" --no-recovery-key >/dev/null 2>&1 ||
    die "atrest init (FUSE) failed"
"$ATREST" mount "$FUSE_VAULT" "${DIR[fuse]}" --passphrase-file "$PASS_FILE" -o allow_other \
    --log-file "$BASE/atrest-fuse.log" "${EXTRA_MOUNT_ARGS[@]}" >/dev/null
FUSE_PID=$(find_pid mount "$FUSE_VAULT" "${DIR[fuse]}") || die "atrest mount process not found"
mountpoint -q "${DIR[fuse]}" || die "${DIR[fuse]} is not mounted"
# the postgres user must be able to traverse every target
chmod 711 "${DIR[@]}"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
OTHERS_START=$(pgrep -fc 'bench/fuse\.sh|cargo|rustc|libfuzzer|fuzz_' || true)

# --- measurement helpers (the approach of bench/fuse.sh) ------------------------
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.4f", b - a }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
record() { echo "$3" >>"$BASE/values/$1.$2"; } # record ROW TARGET VALUE
# measure ROW TARGET FUNCTION ARGS...: FUNCTION prints the value; a failure is
# recorded as such and shown in the table (never silently dropped)
measure() {
    local row=$1 t=$2 v
    shift 2
    if v=$("$@" 2>"$BASE/err.$row.$t"); then
        record "$row" "$t" "$v"
        log "  $row ${TNAME[$t]}: $v"
    else
        record "$row" "$t" FAIL
        log "  $row ${TNAME[$t]}: FAILED: $(tail -n 3 "$BASE/err.$row.$t" | tr '\n' ' ')"
    fi
}

b_seqwrite() {
    local d=$1 s
    drop_caches
    s=$(now)
    dd if=/dev/zero of="$d/seq.bin" bs=1M count="$SIZE_MB" conv=fsync status=none || return 1
    awk -v mb="$SIZE_MB" -v t="$(elapsed "$s")" 'BEGIN { printf "%.1f", mb * 1.048576 / t }'
}
b_seqread() {
    local d=$1 s
    drop_caches
    s=$(now)
    dd if="$d/seq.bin" of=/dev/null bs=1M status=none || return 1
    awk -v mb="$SIZE_MB" -v t="$(elapsed "$s")" 'BEGIN { printf "%.1f", mb * 1.048576 / t }'
    rm -f "$d/seq.bin"
}
b_create() {
    local d=$1 s
    mkdir "$d/many"
    drop_caches
    s=$(now)
    python3 - "$d/many" <<'PY'
import os, sys
d, block = sys.argv[1], b"x" * 4096
for i in range(10000):
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(block)
os.sync()
PY
    (($? == 0)) || return 1
    elapsed "$s"
    rm -rf "$d/many"
}
b_untar() {
    local d=$1 s
    mkdir "$d/tree"
    drop_caches
    s=$(now)
    tar -C "$d/tree" -xf "$TAR" || return 1
    sync
    elapsed "$s"
}
b_ls_cold() {
    local d=$1 s
    drop_caches
    s=$(now)
    ls -lR "$d/tree" >/dev/null || return 1
    elapsed "$s"
}
b_ls_warm() {
    local d=$1 s
    ls -lR "$d/tree" >/dev/null # make sure it is warm even if the cold row failed
    s=$(now)
    ls -lR "$d/tree" >/dev/null || return 1
    elapsed "$s"
}
b_rm() { # right after the warm ls -lR, as one would
    local d=$1 s
    sync
    s=$(now)
    rm -rf "$d/tree" || return 1
    sync
    elapsed "$s"
}
b_randread() {
    local d=$1 out
    fio --name=layout --filename="$d/rand.bin" --size=256M --rw=write --bs=1M \
        --end_fsync=1 --output=/dev/null || return 1
    drop_caches
    out=$(fio --name=randread --filename="$d/rand.bin" --size=256M --rw=randread --bs=4k \
        --direct=1 --ioengine=psync --time_based --runtime="$FIO_SECONDS" \
        --output-format=json) || return 1
    rm -f "$d/rand.bin"
    python3 -c 'import json, sys; print("%.0f" % json.load(sys.stdin)["jobs"][0]["read"]["iops"])' <<<"$out"
}
pg() { runuser -u postgres -- "$@"; }
b_pgbench() { # prints "INIT_SECONDS TPS"
    local d=$1 t=$2 pgdata=$1/pgdata sock=$BASE/sock-$2 s init tps
    mkdir -p "$sock"
    touch "$BASE/pg-$t.log"
    chown postgres:postgres "$sock" "$BASE/pg-$t.log"
    mkdir "$pgdata"
    chown postgres:postgres "$pgdata"
    chmod 700 "$pgdata"
    pg "$PG_BIN/initdb" -D "$pgdata" -U postgres -A trust -N >/dev/null || return 1
    pg "$PG_BIN/pg_ctl" -D "$pgdata" -l "$BASE/pg-$t.log" -w -t 120 \
        -o "-k $sock -c listen_addresses=''" start >/dev/null || return 1
    pg "$PG_BIN/createdb" -h "$sock" bench || return 1
    s=$(now)
    pg "$PG_BIN/pgbench" -h "$sock" -i -s 10 -q bench >/dev/null 2>&1 || return 1
    init=$(elapsed "$s")
    tps=$(pg "$PG_BIN/pgbench" -h "$sock" -c 4 -j 2 -T "$PG_SECONDS" bench 2>&1 |
        sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
    pg "$PG_BIN/pg_ctl" -D "$pgdata" -m fast -w -t 120 stop >/dev/null || return 1
    rm -rf "$pgdata" || return 1
    [[ -n $tps ]] || return 1
    echo "$init $tps"
}

# --- run ------------------------------------------------------------------------
ROWS=(seqwrite seqread create untar ls_cold ls_warm rm randread pginit pgtps)
METADATA_ROWS=" create untar ls_cold ls_warm rm "
declare -A LABEL=(
    [seqwrite]="sequential write ${SIZE_MB} MiB, conv=fsync"
    [seqread]="sequential read ${SIZE_MB} MiB, cold cache"
    [create]="create 10,000 × 4 KiB files + sync"
    [untar]="untar $TAR_ENTRIES entries ($TAR_MB MiB) + sync"
    [ls_cold]="ls -lR, cold cache"
    [ls_warm]="ls -lR, warm"
    [rm]="rm -rf tree + sync"
    [randread]="random 4 KiB reads, O_DIRECT¹, 256 MiB, ${FIO_SECONDS} s"
    [pginit]="pgbench -i -s 10"
    [pgtps]="pgbench -c 4 -j 2 -T $PG_SECONDS"
)
declare -A UNIT=([seqwrite]=MB/s [seqread]=MB/s [create]=s [untar]=s [ls_cold]=s [ls_warm]=s
    [rm]=s [randread]=IOPS [pginit]=s [pgtps]=TPS)
T0=$SECONDS
for ((rep = 1; rep <= REPS; rep++)); do
    # rotate the order of the targets from one repetition to the next
    k=$(((rep - 1) % ${#TARGETS[@]}))
    order=("${TARGETS[@]:k}" "${TARGETS[@]:0:k}")
    log "repetition $rep/$REPS (order: $(for t in "${order[@]}"; do printf '%s, ' "${TNAME[$t]}"; done))"
    for row in seqwrite seqread create untar ls_cold ls_warm rm randread; do
        for t in "${order[@]}"; do measure "$row" "$t" "b_$row" "${DIR[$t]}"; done
    done
    for t in "${order[@]}"; do
        if v=$(b_pgbench "${DIR[$t]}" "$t" 2>"$BASE/err.pg.$t"); then
            record pginit "$t" "${v% *}"
            record pgtps "$t" "${v#* }"
            log "  pgbench ${TNAME[$t]}: init ${v% *} s, ${v#* } TPS"
        else
            record pginit "$t" FAIL
            record pgtps "$t" FAIL
            log "  pgbench ${TNAME[$t]}: FAILED: $(tail -n 3 "$BASE/err.pg.$t" | tr '\n' ' ')"
            pg_stop_all
        fi
    done
done
RUNTIME=$((SECONDS - T0))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- end-to-end checks ------------------------------------------------------------
log "checking atrest-fscrypt: lock hides, unlock restores"
CHECK=ok
check_fail() { CHECK="FAILED: $*"; log "  check failed: $*"; }
head -c 8M /dev/urandom >"$BASE/check.bin"
WANT=$(sha256sum <"$BASE/check.bin" | cut -d' ' -f1)
mkdir -p "${DIR[afs]}/check/sub"
cp "$BASE/check.bin" "${DIR[afs]}/check/sub/data.bin"
sync
if ! out=$("$ATREST" lock "${DIR[afs]}" 2>&1); then
    check_fail "atrest lock: $out"
elif ! grep -q '^key: *locked' <<<"$("$ATREST" status "${DIR[afs]}" 2>&1)"; then
    check_fail "atrest status does not say locked after atrest lock"
elif [[ -e ${DIR[afs]}/check ]]; then
    check_fail "plaintext name still visible after atrest lock"
elif ! out=$("$ATREST" unlock "${DIR[afs]}" --passphrase-file "$PASS_FILE" 2>&1); then
    check_fail "atrest unlock: $out"
elif [[ $(sha256sum <"${DIR[afs]}/check/sub/data.bin" 2>&1 | cut -d' ' -f1) != "$WANT" ]]; then
    check_fail "contents differ after lock + unlock"
fi
rm -rf "${DIR[afs]}/check"
# wrong passphrase must be refused
printf 'not the passphrase\n' >"$BASE/wrong"
if "$ATREST" lock "${DIR[afs]}" >/dev/null 2>&1; then
    if "$ATREST" unlock "${DIR[afs]}" --passphrase-file "$BASE/wrong" >/dev/null 2>&1; then
        check_fail "atrest unlock accepted a wrong passphrase"
    fi
    "$ATREST" unlock "${DIR[afs]}" --passphrase-file "$PASS_FILE" >/dev/null 2>&1 ||
        check_fail "atrest unlock failed after a wrong-passphrase attempt"
else
    check_fail "second atrest lock failed"
fi
log "  $CHECK"

FUSE_HWM=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$FUSE_PID/status" 2>/dev/null || echo "?")
FUSE_ALIVE=yes
kill -0 "$FUSE_PID" 2>/dev/null || FUSE_ALIVE="NO (mount process died)"
force_unmount_fuse
FSCK=$("$ATREST" fsck "$FUSE_VAULT" --passphrase-file "$PASS_FILE" 2>&1) && FSCK="clean: $FSCK" ||
    FSCK="NOT CLEAN (exit $?): $FSCK"

# --- report -----------------------------------------------------------------------
median() { # of the numbers in a file; FAIL if any run failed
    [[ -s $1 ]] || { echo "n/a"; return; }
    grep -q FAIL "$1" && { echo FAIL; return; }
    sort -g "$1" | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
fmt() { # fmt UNIT VALUE
    case $2 in FAIL | n/a) echo "$2"; return ;; esac
    case $1 in
        s) awk -v v="$2" 'BEGIN { printf (v < 1) ? "%.3f" : "%.2f", v }' ;;
        MB/s) awk -v v="$2" 'BEGIN { printf (v < 100) ? "%.1f" : "%.0f", v }' ;;
        *) printf '%.0f' "$2" ;;
    esac
}
speed() { # speed UNIT A B: how much faster A is than B (> 1: A faster)
    [[ $2 =~ ^[0-9.]+$ && $3 =~ ^[0-9.]+$ ]] || { echo "–"; return; }
    case $1 in
        s) awk -v a="$2" -v b="$3" 'BEGIN { printf (a > 0) ? "%.2f" : "–", b / a }' ;;
        *) awk -v a="$2" -v b="$3" 'BEGIN { printf (b > 0) ? "%.2f" : "–", a / b }' ;;
    esac
}
mark() { # mark RATIO MIN
    [[ $1 =~ ^[0-9.]+$ ]] || { echo "$1"; return; }
    awk -v r="$1" -v m="$2" 'BEGIN { printf "%s %s", r, (r >= m) ? "✓" : "✗" }'
}
STAMP=$(date +%F)
mkdir -p "$RESULTS_DIR"
SUFFIX=
[[ $QUICK == 1 ]] && SUFFIX=-quick
OUT=$RESULTS_DIR/$STAMP-fscrypt$SUFFIX.md
[[ ! -e $OUT ]] || OUT=${OUT%.md}-$(date +%H%M%S).md
MISSES=()
{
    echo "# atrest-fscrypt vs the fscrypt tool vs plain ext4 vs atrest FUSE — $(date '+%F %T %Z')${SUFFIX:+ (QUICK)}"
    echo
    echo "- atrest: $("$ATREST" --version 2>/dev/null), git $GIT_REV at the start, binary sha256 $ATREST_SHA… built $ATREST_MTIME"
    echo "- atrest-fscrypt: \`atrest init --backend fscrypt\` (then lock + unlock); policy $AFS_POLICY; driver $AFS_DRIVER"
    echo "- fscrypt tool: $(fscrypt --version 2>/dev/null), \`fscrypt encrypt --source=raw_key\`; policy $TOOL_POLICY"
    echo "- atrest FUSE: vault on the same image, mount args \`-o allow_other${ATREST_MOUNT_ARGS:+ $ATREST_MOUNT_ARGS}\`;" \
        "peak RSS ${FUSE_HWM} MiB; alive at the end: $FUSE_ALIVE"
    echo "- \`atrest status\` $AFS_WARNING"
    echo "- disk: ${IMAGE_GB} GiB sparse image on $(df --output=source "$BASE" | tail -n1) ($HOST_FSTYPE), $LOOP with direct I/O $LOOP_DIO," \
        "ext4 (mkfs.ext4 -O encrypt) mounted $MOUNT_OPTS; kernel $(uname -r);" \
        "$(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)); $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM"
    echo "- PostgreSQL $("$PG_BIN/postgres" --version | awk '{ print $3 }'), default config, initdb -N"
    echo "- repetitions: $REPS (medians; target order rotated per repetition), run time $((RUNTIME / 60)) min $((RUNTIME % 60)) s;" \
        "load average at start $LOAD_START, at end $LOAD_END; other build/bench/fuzz processes at start: $OTHERS_START"
    echo
    echo "Ratios are speed ratios, > 1: atrest-fscrypt faster. Targets: vs fscrypt tool ≥ 0.95 on every row;" \
        "vs plain ≥ 0.83 (within 1.2x) on the metadata rows (✓/✗ marks only where a target applies)."
    echo
    echo "| row | plain | atrest-fscrypt | fscrypt tool | atrest FUSE | unit | atrest-fscrypt vs fscrypt tool | atrest-fscrypt vs plain |"
    echo "|---|---:|---:|---:|---:|---|---:|---:|"
    for row in "${ROWS[@]}"; do
        u=${UNIT[$row]}
        p=$(median "$BASE/values/$row.plain")
        a=$(median "$BASE/values/$row.afs")
        o=$(median "$BASE/values/$row.tool")
        f=$(median "$BASE/values/$row.fuse")
        rt=$(mark "$(speed "$u" "$a" "$o")" 0.95)
        rp=$(speed "$u" "$a" "$p")
        [[ $METADATA_ROWS == *" $row "* ]] && rp=$(mark "$rp" 0.8333)
        [[ $rt == *✗* ]] && MISSES+=("$row vs tool")
        [[ $rp == *✗* ]] && MISSES+=("$row vs plain")
        echo "| ${LABEL[$row]} | $(fmt "$u" "$p") | $(fmt "$u" "$a") | $(fmt "$u" "$o") | $(fmt "$u" "$f") | $u | $rt | $rp |"
    done
    echo
    echo "¹ ext4 serves O_DIRECT on an encrypted file (without inlinecrypt) as buffered I/O, so for atrest-fscrypt" \
        "and the fscrypt tool this row reads through the page cache, which fills during the run; plain ext4 reads the device directly."
    echo
    echo "Targets missed: ${MISSES[*]:-none}"
    echo
    echo "atrest-fscrypt check (lock hides names, unlock restores 8 MiB byte for byte, wrong passphrase refused): $CHECK"
    echo
    echo "atrest fsck of the FUSE vault after the run: $FSCK"
    echo
    echo "All values per repetition (plain / atrest-fscrypt / fscrypt tool / atrest FUSE):"
    echo
    for row in "${ROWS[@]}"; do
        printf -- '- %s: %s / %s / %s / %s\n' "$row" \
            "$(paste -sd, "$BASE/values/$row.plain" 2>/dev/null)" \
            "$(paste -sd, "$BASE/values/$row.afs" 2>/dev/null)" \
            "$(paste -sd, "$BASE/values/$row.tool" 2>/dev/null)" \
            "$(paste -sd, "$BASE/values/$row.fuse" 2>/dev/null)"
    done
} >"$OUT"
cat "$OUT"
log "report written to $OUT"
grep -q FAIL "$OUT" && exit 1
[[ $CHECK == ok && $FUSE_ALIVE == yes && $FSCK == clean* ]]
