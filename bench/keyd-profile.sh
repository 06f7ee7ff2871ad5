#!/usr/bin/env bash
# Where keyd's CPU per release goes, item by item, for two builds side by
# side: each build's `atrest keyd serve` runs under `perf record` (started by
# perf, so the samples survive keyd marking itself non-dumpable; recording is
# enabled only during the measured phase through perf's control fifo), 2,000
# hosts enrolled, a warm-up, then 8 s of keep-alive unlocks at c=16 from one
# `keyd_load`. Prints keyd's CPU µs per release split by category (Ed25519
# and ristretto255, TLS, SHA-256, SQLite, JSON, audit/Merkle, keyd logic,
# allocation, HTTP/tokio, kernel) for A and B and the difference.
#
#   bench/keyd-profile.sh A_ATREST B_ATREST KEYD_LOAD [OUT_DIR]
#
# Needs perf (Debian linux-perf). Proportions are robust to a busy machine;
# the absolute µs are not: quote them only from an idle run.
set -euo pipefail
[[ $# -ge 3 ]] || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
A=$(realpath "$1") B=$(realpath "$2") LOAD=$(realpath "$3")
OUT=${4:-$(mktemp -d /tmp/keyd-profile-XXXX)}
mkdir -p "$OUT"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz }' "/proc/$1/stat"; }

profile() { # profile ATREST LABEL → prints keyd µs/release
    local atrest=$1 label=$2 b port pid perf before after ok
    b=$(mktemp -d /tmp/keyd-prof-XXXX)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$atrest" keyd init --data-dir "$b/d" --listen "127.0.0.1:$port" >/dev/null 2>&1
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    mkfifo "$b/ctl" "$b/ack"
    perf record -q -e cpu-clock -F 1999 -g -D -1 --control "fifo:$b/ctl,$b/ack" -o "$OUT/$label.data" -- \
        "$atrest" keyd serve --data-dir "$b/d" >"$b/serve.out" 2>"$b/serve.err" &
    perf=$!
    for _ in $(seq 100); do grep -q '^listening on' "$b/serve.out" 2>/dev/null && break; sleep 0.1; done
    pid=$(pgrep -f "^$atrest keyd serve --data-dir $b/d" | head -1)
    local common=(--url "https://127.0.0.1:$port" --ca "$b/d/tls/ca.pem" --threads 1)
    "$LOAD" enroll "${common[@]}" --admin-token-file "$b/d/admin.token" --hosts 2000 --concurrency 64 --state "$b/hosts" >/dev/null
    "$LOAD" unlock "${common[@]}" --state "$b/hosts" --concurrency 16 --requests 3000 --duration 3 --sample 200 \
        --keep-alive 1 --offset 0 >/dev/null 2>&1
    before=$(cpu "$pid")
    echo enable >"$b/ctl"; head -c 4 "$b/ack" >/dev/null
    "$LOAD" unlock "${common[@]}" --state "$b/hosts" --concurrency 16 --requests 200000 --duration 8 --sample 200 \
        --keep-alive 1 --offset 3000 >"$b/out" 2>&1 || true
    echo disable >"$b/ctl"; head -c 4 "$b/ack" >/dev/null
    after=$(cpu "$pid")
    ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' "$b/out")
    grep RESULT "$b/out" >"$OUT/$label.result"
    kill "$pid"; wait "$perf" 2>/dev/null || true
    rm -rf "$b"
    awk -v a="$before" -v b="$after" -v n="$ok" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }'
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
ca=$(profile "$A" A) cb=$(profile "$B" B)
echo "A: $A ($ca µs/release; $(cat "$OUT/A.result"))"
echo "B: $B ($cb µs/release; $(cat "$OUT/B.result"))"
cd "$OUT" && python3 "$HERE/keyd-profile-agg.py" "$ca" "$cb"
