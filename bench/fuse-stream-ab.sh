#!/usr/bin/env bash
# The streaming rows of bench/fuse.sh, format 2 against format 1,
# interleaved: one format 1 vault, one format 2 vault and a plain directory
# on the same disk stay mounted, and each of ROUNDS rounds writes SIZE_MB
# (dd conv=fsync) then reads it back with a cold cache (sync; drop_caches)
# on each of the three, in an order that rotates every round. On this
# machine the backing disk's own cold read moves 4x between minutes
# (bench/fuse.sh's ext4 column: 546 to 2,309 MB/s within one run), so two
# separate runs cannot settle the 1.15x gate of docs/plans/format-2.md for
# these rows; per-round ratios taken seconds apart can. With UNTAR=1
# (the default) each round also untars bench/fuse.sh's tree (kept on
# /dev/shm) on each of the three, then sync, in the same rotating order,
# and removes it again (untimed): bench/fuse.sh's untar row, interleaved.
#
# Env: ATREST (binary; default target/release/atrest), ROUNDS (default 7),
#      SIZE_MB (default 1024), ALLOW_OTHER (1 default, or 0), UNTAR (1
#      default, or 0), BENCH_DIR (default /var/tmp), RESULTS_DIR (default
#      bench/results).
# Writes RESULTS_DIR/<date>-fuse-stream-ab.md and prints it. Run it on an
# idle machine: the 1-minute load average at the start is recorded.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ATREST=${ATREST:-$REPO_ROOT/target/release/atrest}
ROUNDS=${ROUNDS:-7} SIZE_MB=${SIZE_MB:-1024} ALLOW_OTHER=${ALLOW_OTHER:-1} UNTAR=${UNTAR:-1}
RESULTS_DIR=${RESULTS_DIR:-$REPO_ROOT/bench/results}
die() { echo "bench/fuse-stream-ab.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (drop_caches)"
[[ -x $ATREST ]] || die "no atrest binary at $ATREST (cargo build --release -p atrest, or set ATREST)"

# The tree bench/fuse.sh untars, built once and kept on /dev/shm.
TAR=/dev/shm/atrest-bench-tree.tar
if [[ $UNTAR == 1 && ! -s $TAR ]]; then
    tar -C / -cf "$TAR.tmp" usr/include usr/lib/python3 2>/dev/null || true
    mv "$TAR.tmp" "$TAR"
fi

BASE=$(mktemp -d "${BENCH_DIR:-/var/tmp}/atrest-stream-ab.XXXXXX")
PASS_FILE=$BASE/passphrase
printf 'bench passphrase %s\n' "$RANDOM$RANDOM" >"$PASS_FILE"
chmod 600 "$PASS_FILE"
OPTS=()
[[ $ALLOW_OTHER == 0 ]] || OPTS=(-o allow_other)
declare -A DIR=([plain]=$BASE/plain [f1]=$BASE/mnt1 [f2]=$BASE/mnt2)
cleanup() {
    for f in 1 2; do
        if mountpoint -q "$BASE/mnt$f"; then
            "$ATREST" unmount "$BASE/mnt$f" || fusermount3 -uz "$BASE/mnt$f" || true
        fi
    done
    rm -rf "$BASE"
}
trap cleanup EXIT
mkdir -p "${DIR[plain]}" "${DIR[f1]}" "${DIR[f2]}"
for f in 1 2; do
    "$ATREST" init "$BASE/vault$f" --passphrase-file "$PASS_FILE" --no-recovery-key --format "$f" >/dev/null 2>&1 ||
        die "atrest init --format $f failed"
    "$ATREST" mount "$BASE/vault$f" "$BASE/mnt$f" --passphrase-file "$PASS_FILE" "${OPTS[@]}" \
        --log-file "$BASE/atrest$f.log" >/dev/null || die "atrest mount of the format $f vault failed"
    mountpoint -q "$BASE/mnt$f" || die "$BASE/mnt$f is not mounted"
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

now() { date +%s.%N; }
mbps() { awk -v mb="$SIZE_MB" -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", mb * 1.048576 / (e - s) }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
write_one() {
    local s
    rm -f "$1/seq.bin"
    drop_caches
    s=$(now)
    dd if=/dev/zero of="$1/seq.bin" bs=1M count="$SIZE_MB" conv=fsync status=none
    mbps "$s"
}
read_one() {
    local s
    drop_caches
    s=$(now)
    dd if="$1/seq.bin" of=/dev/null bs=1M status=none
    mbps "$s"
}
# seconds to untar the tree and sync (as bench/fuse.sh's b_untar)
untar_one() {
    local s
    rm -rf "$1/tree"
    mkdir "$1/tree"
    drop_caches
    s=$(now)
    tar -C "$1/tree" -xf "$TAR"
    sync
    awk -v s="$s" -v e="$(now)" 'BEGIN { printf "%.2f", e - s }'
    rm -rf "$1/tree"
}

ORDER=(plain f1 f2)
declare -A W R U
for ((r = 0; r < ROUNDS; r++)); do
    order=("${ORDER[@]:r%3}" "${ORDER[@]:0:r%3}")
    for t in "${order[@]}"; do W[$t.$r]=$(write_one "${DIR[$t]}"); done
    for t in "${order[@]}"; do R[$t.$r]=$(read_one "${DIR[$t]}"); done
    if [[ $UNTAR == 1 ]]; then
        for t in "${order[@]}"; do U[$t.$r]=$(untar_one "${DIR[$t]}"); done
    fi
    echo "round $((r + 1))/$ROUNDS (${order[*]}): write $(for t in plain f1 f2; do printf '%s=%s ' $t "${W[$t.$r]}"; done)read $(for t in plain f1 f2; do printf '%s=%s ' $t "${R[$t.$r]}"; done)$([[ $UNTAR == 1 ]] && echo "untar s: $(for t in plain f1 f2; do printf '%s=%s ' $t "${U[$t.$r]}"; done)")" >&2
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# per-round time ratio format 2 / format 1 = (format 1 MB/s) / (format 2 MB/s),
# or (format 2 s) / (format 1 s) for the untar row
ratios() {
    local -n a=$1
    local r
    for ((r = 0; r < ROUNDS; r++)); do
        if [[ $1 == U ]]; then
            awk -v x="${a[f1.$r]}" -v y="${a[f2.$r]}" 'BEGIN { printf "%.2f\n", y / x }'
        else
            awk -v x="${a[f1.$r]}" -v y="${a[f2.$r]}" 'BEGIN { printf "%.2f\n", x / y }'
        fi
    done
}
row() {
    local -n v=$2
    local t r
    printf '| %s |' "$1"
    for t in plain f1 f2; do
        printf ' %s |' "$(for ((r = 0; r < ROUNDS; r++)); do echo "${v[$t.$r]}"; done | median)"
    done
    printf ' %s | %s |\n' "$(ratios "$2" | median)" "$(ratios "$2" | tr '\n' ' ')"
}

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/$(date +%F-%H%M)-fuse-stream-ab.md
{
    echo "# Streaming rows, format 2 vs format 1, interleaved — $(date '+%F %T %Z')"
    echo
    echo "- atrest: $("$ATREST" --version), binary sha256 $(sha256sum "$ATREST" | cut -c1-12)…"
    echo "- $ROUNDS rounds of ${SIZE_MB} MiB, dd bs=1M (write conv=fsync; read after drop_caches), order rotating; $([[ $ALLOW_OTHER == 1 ]] && echo "allow_other" || echo "root-only (no allow_other)")"
    echo "- backing: $(df -T "$BASE" | awk 'NR == 2 { print $2 }') on $(df "$BASE" | awk 'NR == 2 { print $1 }'); 1-minute load average at the start: $LOAD_START; $(nproc) CPUs"
    echo
    echo "| row (MB/s, or s for untar; medians) | plain dir | format 1 | format 2 | format 2 / format 1 time, median of rounds | per round |"
    echo "|---|---:|---:|---:|---:|---|"
    row "sequential write ${SIZE_MB} MiB, conv=fsync" W
    row "sequential read ${SIZE_MB} MiB, cold cache" R
    [[ $UNTAR != 1 ]] || row "untar $(tar -tf "$TAR" | wc -l) entries + sync (s)" U
} | tee "$OUT"
echo "report written to $OUT" >&2
