#!/usr/bin/env bash
# Throughput of `atrest migrate` (docs/format.md §16.19): a format 1 vault
# holding SIZE_MB MiB in large files plus FILES small files (4 KiB each, in
# directories of 100), migrated to format 2 in place, REPS times (a fresh
# copy of the same vault each time, page cache dropped before each run).
# Prints MB/s of data and files/s, each the median, and writes them to
# RESULTS_DIR/<date>-migrate.txt. Plan expectation (format-2.md stage 6):
# ~400 MB/s and ~1,000 files/s on the reference machine. Not measured yet:
# run it on an idle machine.
#
# Env: ATREST (default target/release/atrest), SIZE_MB (default 1024),
#      FILES (default 10000), REPS (default 3), BENCH_DIR (default
#      /var/tmp), RESULTS_DIR (default bench/results). Needs root (FUSE).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ATREST=${ATREST:-$REPO_ROOT/target/release/atrest}
SIZE_MB=${SIZE_MB:-1024}
FILES=${FILES:-10000}
REPS=${REPS:-3}
RESULTS_DIR=${RESULTS_DIR:-$REPO_ROOT/bench/results}
log() { echo "[$(date +%T)] $*" >&2; }

[[ $(id -u) == 0 ]] || { log "run as root (FUSE mounts, drop_caches)"; exit 1; }
[[ -x $ATREST ]] || { log "build first: cargo build --release -p atrest"; exit 1; }
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/atrest-migrate-bench.XXXXXX")
trap 'umount -l "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
printf 'bench passphrase\n' > "$work/pass"
mkdir "$work/mnt"

log "making a format 1 vault: $SIZE_MB MiB in 16 files, $FILES files of 4 KiB"
"$ATREST" init "$work/template" --passphrase-file "$work/pass" --no-recovery-key > /dev/null
"$ATREST" mount "$work/template" "$work/mnt" --passphrase-file "$work/pass"
for i in $(seq 16); do
    head -c $((SIZE_MB * 1024 * 1024 / 16)) /dev/urandom > "$work/mnt/big-$i"
done
python3 - "$work/mnt" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
block = os.urandom(4096)
for i in range(n):
    d = os.path.join(root, "small", "d%d" % (i // 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%d" % i), "wb") as f:
        f.write(block)
PY
"$ATREST" unmount "$work/mnt"
objects=$((16 + FILES + FILES / 100 + 1))

rates=()
for rep in $(seq "$REPS"); do
    rm -rf "$work/vault"
    cp -a "$work/template" "$work/vault"
    sync
    echo 3 > /proc/sys/vm/drop_caches
    start=$(date +%s.%N)
    "$ATREST" migrate "$work/vault" --passphrase-file "$work/pass" > /dev/null
    sync
    end=$(date +%s.%N)
    secs=$(echo "$end - $start" | bc -l)
    mbs=$(echo "$SIZE_MB / $secs" | bc -l)
    fps=$(echo "$objects / $secs" | bc -l)
    log "run $rep: $(printf '%.2f' "$secs") s, $(printf '%.0f' "$mbs") MB/s, $(printf '%.0f' "$fps") files/s"
    rates+=("$(printf '%.1f %.1f %.3f' "$mbs" "$fps" "$secs")")
done
median() { sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }
mb=$(printf '%s\n' "${rates[@]}" | awk '{print $1}' | median)
fps=$(printf '%s\n' "${rates[@]}" | awk '{print $2}' | median)
mkdir -p "$RESULTS_DIR"
out="$RESULTS_DIR/$(date +%F-%H%M)-migrate.txt"
{
    echo "atrest migrate: $SIZE_MB MiB in 16 files + $FILES files of 4 KiB ($objects objects), $REPS runs"
    echo "data: $mb MB/s (median), objects: $fps files/s (median; the whole run over all objects)"
    echo "kernel $(uname -r), $(nproc) cores"
} | tee "$out"
