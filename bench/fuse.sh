#!/usr/bin/env bash
# Side-by-side benchmark: atrest vs gocryptfs, with plain ext4 (the backing
# file system itself) as a reference column, all on the same disk.
#
# Rows (each the median over REPS repetitions):
#   sequential write  dd if=/dev/zero bs=1M count=SIZE conv=fsync         MB/s
#   sequential read   cold cache (sync; drop_caches), dd of=/dev/null      MB/s
#   create 10k files  10,000 files of 4 KiB (python), then sync            s
#   untar             ~12,000 entries (/usr/include + /usr/lib/python3), then sync  s
#   ls -lR cold/warm  cold: after drop_caches; warm: right after           s
#   rm -rf            the untarred tree (warm, right after ls), then sync   s
#   random 4k read    fio randread bs=4k O_DIRECT, 256 MiB file, time based  IOPS
#   pgbench -i -s 10  PostgreSQL data directory inside each                s
#   pgbench TPS       -c 4 -j 2 -T PGBENCH_SECONDS                         TPS
# Ratio column: atrest/gocryptfs for throughput, gocryptfs/atrest for times,
# so > 1 always means atrest is faster. Peak RSS (VmHWM) and CPU time of both
# daemons are read from /proc just before unmounting.
#
# Both file systems stay mounted for the whole run (so the peak RSS covers
# every row), with allow_other (needed for the postgres user; gocryptfs
# then switches credentials per request) unless ALLOW_OTHER=0: the
# root-only configuration, without the pgbench rows (PostgreSQL does not
# run as root). Otherwise atrest runs with its default mount options plus
# ATREST_MOUNT_ARGS and gocryptfs with its defaults. Users run both
# configurations, and a ratio taken in one says nothing of the other.
#
# Env: ATREST (binary; default target/release/atrest under the repo root)
#      ATREST_MOUNT_ARGS (extra `atrest mount` args, e.g. "--threads 8")
#      ATREST_FORMAT (1, default; 2: the atrest column is a format 2 vault,
#      experimental, made by the hidden `init --format 2`; not yet measured,
#      and not interleaved with a format 1 column: run the script once per
#      format on an idle machine)
#      ALLOW_OTHER (1, default, or 0: see above),
#      REPS (default 3), QUICK=1 (256 MiB instead of 1 GiB, 1 rep, pgbench
#      10 s, fio 10 s), BENCH_DIR (parent dir on the disk to test; default
#      /var/tmp), RESULTS_DIR (default bench/results), PG_BIN.
# Writes a markdown report to RESULTS_DIR/<date>-fuse[-quick].md and prints it.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ATREST=${ATREST:-$REPO_ROOT/target/release/atrest}
[[ $ATREST == /* ]] || ATREST=$PWD/$ATREST
read -r -a EXTRA_MOUNT_ARGS <<<"${ATREST_MOUNT_ARGS:-}"
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    SIZE_MB=256 REPS=${REPS:-1} PG_SECONDS=${PG_SECONDS:-10} FIO_SECONDS=${FIO_SECONDS:-10}
else
    SIZE_MB=1024 REPS=${REPS:-3} PG_SECONDS=${PG_SECONDS:-30} FIO_SECONDS=${FIO_SECONDS:-20}
fi
RESULTS_DIR=${RESULTS_DIR:-$REPO_ROOT/bench/results}
TARGETS=(ext4 atrest gocryptfs)

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

[[ $(id -u) == 0 ]] || die "run as root (drop_caches, allow_other, runuser postgres)"
[[ -x $ATREST ]] || die "atrest binary not found at $ATREST (cargo build --release -p atrest)"
need_pkgs fio postgresql postgresql-contrib gocryptfs fuse3 python3
if [[ -z ${PG_BIN:-} ]]; then
    if [[ -x /usr/lib/postgresql/15/bin/postgres ]]; then
        PG_BIN=/usr/lib/postgresql/15/bin
    else
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    fi
fi

BASE=$(mktemp -d "${BENCH_DIR:-/var/tmp}/atrest-bench.XXXXXX")
chmod 755 "$BASE" # postgres must reach its data directories
FSTYPE=$(df --output=fstype "$BASE" | tail -n1)
[[ $FSTYPE != tmpfs ]] || die "$BASE is on tmpfs; set BENCH_DIR to a directory on a disk"
# a private copy: the shared target dir may be rebuilt while this runs
cp "$ATREST" "$BASE/atrest"
ATREST_SHA=$(sha256sum "$ATREST" | cut -c1-12)
ATREST_MTIME=$(date -r "$ATREST" '+%F %T')
ATREST=$BASE/atrest
PASS_FILE=$BASE/passphrase
printf 'bench passphrase %s\n' "$RANDOM$RANDOM" >"$PASS_FILE"
chmod 600 "$PASS_FILE"
ATREST_VAULT=$BASE/atrest-vault
GC_CIPHER=$BASE/gocryptfs-cipher
declare -A DIR=([ext4]=$BASE/ext4 [atrest]=$BASE/atrest-mnt [gocryptfs]=$BASE/gocryptfs-mnt)
mkdir -p "${DIR[@]}" "$GC_CIPHER" "$BASE/values"

force_unmount() {
    local mnt=$1 dev
    grep -qF " $mnt " /proc/self/mountinfo || return 0
    if [[ $mnt == "${DIR[atrest]}" ]]; then
        timeout 120 "$ATREST" unmount "$mnt" && return 0
    else
        timeout 120 fusermount3 -u "$mnt" && return 0
    fi
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
    pg_stop_all
    force_unmount "${DIR[atrest]}"
    force_unmount "${DIR[gocryptfs]}"
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

# --- the tree to untar, built once and kept on /dev/shm -----------------------
TAR=/dev/shm/atrest-bench-tree.tar
if [[ ! -s $TAR ]]; then
    log "building $TAR from /usr/include and /usr/lib/python3"
    tar -C / -cf "$TAR.tmp" usr/include usr/lib/python3 2>/dev/null || true
    mv "$TAR.tmp" "$TAR"
fi
TAR_ENTRIES=$(tar -tf "$TAR" | wc -l)
TAR_MB=$(($(stat -c %s "$TAR") >> 20))

# --- mounts -------------------------------------------------------------------
log "creating and mounting the atrest vault and the gocryptfs dir in $BASE ($FSTYPE)"
ATREST_FORMAT=${ATREST_FORMAT:-1}
ALLOW_OTHER=${ALLOW_OTHER:-1}
[[ $ALLOW_OTHER == 0 || $ALLOW_OTHER == 1 ]] || die "ALLOW_OTHER must be 0 or 1"
ATREST_OPTS=() GC_OPTS=()
if [[ $ALLOW_OTHER == 1 ]]; then ATREST_OPTS=(-o allow_other) GC_OPTS=(-allow_other); fi
[[ $ATREST_FORMAT == 1 || $ATREST_FORMAT == 2 ]] || die "ATREST_FORMAT must be 1 or 2"
"$ATREST" init "$ATREST_VAULT" --passphrase-file "$PASS_FILE" --no-recovery-key \
    --format "$ATREST_FORMAT" >/dev/null 2>&1
"$ATREST" mount "$ATREST_VAULT" "${DIR[atrest]}" --passphrase-file "$PASS_FILE" "${ATREST_OPTS[@]}" \
    --log-file "$BASE/atrest.log" "${EXTRA_MOUNT_ARGS[@]}" >/dev/null
ATREST_PID=$(find_pid mount "$ATREST_VAULT" "${DIR[atrest]}") || die "atrest mount process not found"
# `atrest init` makes the vault root 0700 and the mount root mirrors it; the
# postgres user must be able to traverse it
chmod 711 "${DIR[atrest]}"
gocryptfs -q -init -passfile "$PASS_FILE" "$GC_CIPHER" >/dev/null
gocryptfs -q "${GC_OPTS[@]}" -passfile "$PASS_FILE" "$GC_CIPHER" "${DIR[gocryptfs]}"
GC_PID=$(find_pid "$GC_CIPHER" "${DIR[gocryptfs]}") || die "gocryptfs process not found"
for t in atrest gocryptfs; do mountpoint -q "${DIR[$t]}" || die "${DIR[$t]} is not mounted"; done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- measurement helpers ------------------------------------------------------
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
        log "  $row $t: $v"
    else
        record "$row" "$t" FAIL
        log "  $row $t: FAILED: $(tail -n 3 "$BASE/err.$row.$t" | tr '\n' ' ')"
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

# --- run ----------------------------------------------------------------------
ROWS=(seqwrite seqread create untar ls_cold ls_warm rm randread pginit pgtps)
declare -A LABEL=(
    [seqwrite]="sequential write ${SIZE_MB} MiB, conv=fsync"
    [seqread]="sequential read ${SIZE_MB} MiB, cold cache"
    [create]="create 10,000 × 4 KiB files + sync"
    [untar]="untar $TAR_ENTRIES entries ($TAR_MB MiB) + sync"
    [ls_cold]="ls -lR, cold cache"
    [ls_warm]="ls -lR, warm"
    [rm]="rm -rf tree + sync"
    [randread]="random 4 KiB reads, O_DIRECT, 256 MiB, ${FIO_SECONDS} s"
    [pginit]="pgbench -i -s 10"
    [pgtps]="pgbench -c 4 -j 2 -T $PG_SECONDS"
)
declare -A UNIT=([seqwrite]=MB/s [seqread]=MB/s [create]=s [untar]=s [ls_cold]=s [ls_warm]=s
    [rm]=s [randread]=IOPS [pginit]=s [pgtps]=TPS)
T0=$SECONDS
LOADS=()
for ((rep = 1; rep <= REPS; rep++)); do
    # rotate the order of the targets from one repetition to the next
    order=("${TARGETS[@]:$(((rep - 1) % 3))}" "${TARGETS[@]:0:$(((rep - 1) % 3))}")
    log "repetition $rep/$REPS (order: ${order[*]}; load average $(cut -d' ' -f1-3 /proc/loadavg))"
    LOADS+=("$(cut -d' ' -f1 /proc/loadavg)")
    for row in seqwrite seqread create untar ls_cold ls_warm rm randread; do
        for t in "${order[@]}"; do measure "$row" "$t" "b_$row" "${DIR[$t]}"; done
    done
    for t in "${order[@]}"; do
        if [[ $ALLOW_OTHER == 0 ]]; then
            record pginit "$t" SKIP
            record pgtps "$t" SKIP
            continue
        fi
        if v=$(b_pgbench "${DIR[$t]}" "$t" 2>"$BASE/err.pg.$t"); then
            record pginit "$t" "${v% *}"
            record pgtps "$t" "${v#* }"
            log "  pgbench $t: init ${v% *} s, ${v#* } TPS"
        else
            record pginit "$t" FAIL
            record pgtps "$t" FAIL
            log "  pgbench $t: FAILED: $(tail -n 3 "$BASE/err.pg.$t" | tr '\n' ' ')"
            pg_stop_all
        fi
    done
done
RUNTIME=$((SECONDS - T0))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# peak RSS and CPU time of both daemons, just before unmounting
hwm() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
cpu() { # utime + stime of the whole process, seconds
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.1f", ($12 + $13) / hz }' "/proc/$1/stat"
}
HWM_ATREST=$(hwm "$ATREST_PID") CPU_ATREST=$(cpu "$ATREST_PID")
HWM_GC=$(hwm "$GC_PID") CPU_GC=$(cpu "$GC_PID")
ATREST_ALIVE=yes
kill -0 "$ATREST_PID" 2>/dev/null || ATREST_ALIVE="NO (mount process died)"
force_unmount "${DIR[atrest]}"
force_unmount "${DIR[gocryptfs]}"
FSCK=$("$ATREST" fsck "$ATREST_VAULT" --passphrase-file "$PASS_FILE" 2>&1) && FSCK="clean: $FSCK" ||
    FSCK="NOT CLEAN (exit $?): $FSCK"

# --- report -------------------------------------------------------------------
median() { # of the numbers in a file; FAIL if any run failed
    [[ -s $1 ]] || { echo "n/a"; return; }
    grep -q FAIL "$1" && { echo FAIL; return; }
    grep -q SKIP "$1" && { echo "not run"; return; }
    sort -g "$1" | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
fmt() { # fmt UNIT VALUE
    case $2 in FAIL | n/a | "not run") echo "$2"; return ;; esac
    case $1 in s) printf '%.2f' "$2" ;; MB/s) printf '%.0f' "$2" ;; *) printf '%.0f' "$2" ;; esac
}
ratio() { # ratio UNIT ATREST GOCRYPTFS: > 1 means atrest is faster
    [[ $2 =~ ^[0-9.]+$ && $3 =~ ^[0-9.]+$ ]] || { echo "–"; return; }
    case $1 in
        s) awk -v a="$2" -v g="$3" 'BEGIN { printf (a > 0) ? "%.2f" : "–", g / a }' ;;
        *) awk -v a="$2" -v g="$3" 'BEGIN { printf (g > 0) ? "%.2f" : "–", a / g }' ;;
    esac
}
GIT_REV=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO_ROOT" diff --quiet HEAD -- crates 2>/dev/null || GIT_REV="$GIT_REV (crates/ modified)"
STAMP=$(date +%F)
mkdir -p "$RESULTS_DIR"
SUFFIX=
[[ $QUICK != 1 ]] || SUFFIX=-quick
[[ $ATREST_FORMAT == 1 ]] || SUFFIX=$SUFFIX-format2
[[ $ALLOW_OTHER == 1 ]] || SUFFIX=$SUFFIX-root-only
OUT=$RESULTS_DIR/$STAMP-fuse$SUFFIX.md
[[ ! -e $OUT ]] || OUT=${OUT%.md}-$(date +%H%M%S).md
{
    echo "# atrest vs gocryptfs — $(date '+%F %T %Z')$([[ $QUICK != 1 ]] || echo " (QUICK)")"
    echo
    echo "- atrest: $("$ATREST" --version 2>/dev/null), git $GIT_REV, binary sha256 $ATREST_SHA… built $ATREST_MTIME, vault format $ATREST_FORMAT, mount args:" \
        "\`${ATREST_OPTS[*]}${ATREST_MOUNT_ARGS:+ $ATREST_MOUNT_ARGS}\` (defaults otherwise)"
    echo "- gocryptfs: $(gocryptfs -version 2>/dev/null | head -n1), mount args: \`${GC_OPTS[*]}\`$([[ $ALLOW_OTHER == 1 ]] || echo " (root-only configuration: no allow_other on either, no pgbench rows)")"
    echo "- ext4 column: a plain directory on the same file system (reference)"
    echo "- disk: $BASE ($FSTYPE, $(df -h --output=source "$BASE" | tail -n1)); kernel $(uname -r);" \
        "$(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)); $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM"
    echo "- PostgreSQL $("$PG_BIN/postgres" --version | awk '{ print $3 }'), default config, initdb -N"
    echo "- repetitions: $REPS (medians), run time $((RUNTIME / 60)) min $((RUNTIME % 60)) s;" \
        "load average (1 min) at each repetition's start: ${LOADS[*]}, at the end $LOAD_END" \
        "(the machine is shared: compare the per-repetition values below)"
    echo
    echo "| row | ext4 | atrest | gocryptfs | unit | atrest vs gocryptfs (>1: atrest faster) |"
    echo "|---|---:|---:|---:|---|---:|"
    for row in "${ROWS[@]}"; do
        u=${UNIT[$row]}
        e=$(median "$BASE/values/$row.ext4")
        a=$(median "$BASE/values/$row.atrest")
        g=$(median "$BASE/values/$row.gocryptfs")
        echo "| ${LABEL[$row]} | $(fmt "$u" "$e") | $(fmt "$u" "$a") | $(fmt "$u" "$g") | $u | $(ratio "$u" "$a" "$g") |"
    done
    echo "| daemon peak RSS (VmHWM) | – | $HWM_ATREST | $HWM_GC | MiB | $(awk -v a="$HWM_ATREST" -v g="$HWM_GC" 'BEGIN { printf "%.2f", g / a }') (gocryptfs/atrest) |"
    echo "| daemon CPU time (user+sys, whole run) | – | $CPU_ATREST | $CPU_GC | s | $(awk -v a="$CPU_ATREST" -v g="$CPU_GC" 'BEGIN { printf (a > 0) ? "%.2f" : "–", g / a }') (gocryptfs/atrest) |"
    echo
    echo "atrest mount process alive at the end: $ATREST_ALIVE; atrest fsck after the run: $FSCK"
    echo
    echo "All values per repetition (ext4 / atrest / gocryptfs):"
    echo
    for row in "${ROWS[@]}"; do
        printf -- '- %s: %s / %s / %s\n' "$row" \
            "$(paste -sd, "$BASE/values/$row.ext4" 2>/dev/null)" \
            "$(paste -sd, "$BASE/values/$row.atrest" 2>/dev/null)" \
            "$(paste -sd, "$BASE/values/$row.gocryptfs" 2>/dev/null)"
    done
} >"$OUT"
cat "$OUT"
log "report written to $OUT"
grep -q FAIL "$OUT" && exit 1
[[ $ATREST_ALIVE == yes && $FSCK == clean* ]]
