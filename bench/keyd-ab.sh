#!/usr/bin/env bash
# Interleaved A/B run of bench/keyd.sh: two builds of `atrest` (A = before a
# change, B = after it) driven by ONE load generator, alternating A, B, A, B,
# ... so that slow drifts of a shared machine (other tenants, thermal, page
# cache) fall on both sides alike. Each run starts only once the 1-minute load
# average is below MAX_LOAD (default 0.5; the wait and the load are recorded).
#
#   bench/keyd-ab.sh A_ATREST B_ATREST KEYD_LOAD [PAIRS]
#
# A_ATREST, B_ATREST: release `atrest` binaries (e.g. build the old commit in
#   a worktree: git worktree add /tmp/old REV && cd /tmp/old &&
#   cargo build --release -p atrest).
# KEYD_LOAD: one release `keyd_load` example (the same generator for both).
# PAIRS: number of A/B pairs (default 3). Each run is keyd.sh with REPS=1.
#
# Writes RESULTS_DIR (default bench/results/keyd-ab-<date>-<time>/) with
# a1.txt, b1.txt, ... (each a full keyd.sh report) and summary.md (median of
# each row for A and for B, B/A, and the B/A ratio of every pair in order), and
# prints the summary. Env passed through to keyd.sh: HOSTS, REQUESTS, DURATION,
# TANG_REQUESTS, E2E_N, SAMPLE, LOAD_THREADS. MAX_LOAD, LOAD_WAIT (s, default
# 1800: give up waiting for an idle machine after this long).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -ge 3 ]] || { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
A=$(realpath "$1") B=$(realpath "$2") LOADGEN=$(realpath "$3") PAIRS=${4:-3}
for f in "$A" "$B" "$LOADGEN"; do [[ -x $f ]] || { echo "error: $f is not an executable" >&2; exit 2; }; done
MAX_LOAD=${MAX_LOAD:-0.5} LOAD_WAIT=${LOAD_WAIT:-1800}
OUT_DIR=${RESULTS_DIR:-$REPO_ROOT/bench/results/keyd-ab-$(date +%F-%H%M)}
mkdir -p "$OUT_DIR"

log() { echo "[$(date +%T)] $*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }
wait_idle() {
    local waited=0
    until awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l < m) }'; do
        ((waited < LOAD_WAIT)) || { log "error: load average still $(load1) after ${LOAD_WAIT}s"; exit 1; }
        sleep 10
        waited=$((waited + 10))
    done
    echo "$waited"
}

{
    echo "A: $A (sha256 $(sha256sum "$A" | cut -c1-12), $("$A" --version))"
    echo "B: $B (sha256 $(sha256sum "$B" | cut -c1-12), $("$B" --version))"
    echo "generator: $LOADGEN (sha256 $(sha256sum "$LOADGEN" | cut -c1-12))"
} >"$OUT_DIR/binaries.txt"

for ((i = 1; i <= PAIRS; i++)); do
    for side in a b; do
        bin=$A
        [[ $side == b ]] && bin=$B
        waited=$(wait_idle)
        log "run $side$i: load average $(cut -d' ' -f1-3 /proc/loadavg) (waited ${waited}s for < $MAX_LOAD)"
        echo "$side$i start $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) waited ${waited}s" >>"$OUT_DIR/loads.txt"
        tmp=$(mktemp -d)
        NO_BUILD=1 REPS=1 ATREST=$bin KEYD_LOAD=$LOADGEN RESULTS_DIR=$tmp \
            bash "$REPO_ROOT/bench/keyd.sh" >/dev/null 2>"$OUT_DIR/$side$i.log" ||
            log "run $side$i reported a failure (see $OUT_DIR/$side$i.log)"
        mv "$tmp"/keyd-*.txt "$OUT_DIR/$side$i.txt"
        rmdir "$tmp"
    done
done

python3 - "$OUT_DIR" "$PAIRS" >"$OUT_DIR/summary.md" <<'PY'
import re, statistics, sys
from pathlib import Path

out, pairs = Path(sys.argv[1]), int(sys.argv[2])
ROWS = [  # key in "All values per repetition", label, higher is better
    ("ka.rps.c1", "releases/s, keep-alive, c=1", True),
    ("ka.rps.c16", "releases/s, keep-alive, c=16", True),
    ("ka.rps.c64", "releases/s, keep-alive, c=64", True),
    ("ka.p99.c64", "p99 ms, keep-alive, c=64", False),
    ("new.rps.c1", "releases/s, new connection, c=1", True),
    ("new.rps.c16", "releases/s, new connection, c=16", True),
    ("new.rps.c64", "releases/s, new connection, c=64", True),
    ("burst", "10,000 hosts at once, s", False),
    ("e2e.atrest", "atrest unlock --mount, ms", False),
    ("ka.cpu.c16", "keyd CPU µs/release, keep-alive c=16", False),
    ("ka.cpu.c64", "keyd CPU µs/release, keep-alive c=64", False),
]

def values(path):
    vals = {}
    for line in path.read_text().splitlines():
        m = re.match(r"- ([\w.]+): ([^/]+) /", line)
        if m:
            try:
                vals[m.group(1)] = float(m.group(2).split(",")[0])
            except ValueError:
                pass
    return vals

runs = {s: [values(out / f"{s}{i}.txt") for i in range(1, pairs + 1)] for s in "ab"}
print(f"# keyd A/B, {pairs} interleaved pairs (REPS=1 each)\n")
print((out / "binaries.txt").read_text().replace("\n", "  \n"))
print("Start of each run:\n")
print("".join(f"    {l}\n" for l in (out / "loads.txt").read_text().splitlines()))
print("| row | A median | B median | B/A | B/A per pair | B better or within 10%? |")
print("|---|---:|---:|---:|---|---|")
for key, label, higher in ROWS:
    a = [r[key] for r in runs["a"] if key in r]
    b = [r[key] for r in runs["b"] if key in r]
    if not a or not b:
        print(f"| {label} | – | – | – | – | – |")
        continue
    ma, mb = statistics.median(a), statistics.median(b)
    per = [f"{rb[key] / ra[key]:.2f}" for ra, rb in zip(runs["a"], runs["b"]) if key in ra and key in rb and ra[key]]
    ok = (mb >= 0.9 * ma) if higher else (mb <= 1.1 * ma)
    print(f"| {label} | {ma:,.1f} | {mb:,.1f} | {mb / ma:.2f} | {' '.join(per)} | {'yes' if ok else '**no**'} |")
PY
cat "$OUT_DIR/summary.md"
log "results in $OUT_DIR"
