#!/usr/bin/env bash
# System calls of `atrest keyd serve` per release: strace -f -c on keyd over
# 4 s of keep-alive unlocks at concurrency CONC (default 1) from one
# keyd_load, 500 hosts. Counts only (strace slows every call): use it to see
# what a change adds per release (fsyncs, futex wake-ups of sqlx's worker
# threads, preads), not what it costs.
#
#   bench/keyd-syscalls.sh ATREST KEYD_LOAD LABEL [CONC]
set -euo pipefail
atrest=$1 load=$2 label=$3 conc=${4:-1}
b=$(mktemp -d /tmp/keyd-syscalls-XXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$atrest" keyd init --data-dir "$b/d" --listen "127.0.0.1:$port" >/dev/null 2>&1
"$atrest" keyd serve --data-dir "$b/d" >"$b/serve.out" 2>"$b/serve.err" &
serve=$!
for _ in $(seq 100); do grep -q '^listening on' "$b/serve.out" 2>/dev/null && break; sleep 0.1; done
pid=$serve
common=(--url "https://127.0.0.1:$port" --ca "$b/d/tls/ca.pem" --threads 1)
"$load" enroll "${common[@]}" --admin-token-file "$b/d/admin.token" --hosts 500 --concurrency 16 --state "$b/hosts" >/dev/null
"$load" unlock "${common[@]}" --state "$b/hosts" --concurrency "$conc" --requests 1000 --duration 2 --sample 200 --keep-alive 1 --offset 0 >/dev/null 2>&1
strace -f -c -e trace=fsync,fdatasync,pwrite64,pread64,futex,write,read,sendto,recvfrom,epoll_wait,sched_yield -p "$pid" -o "$b/strace.txt" &
st=$!
sleep 0.5
"$load" unlock "${common[@]}" --state "$b/hosts" --concurrency "$conc" --requests 3000 --duration 4 --sample 200 --keep-alive 1 --offset 1000 >"$b/out" 2>&1 || true
kill -INT $st; wait $st 2>/dev/null || true
ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' "$b/out")
echo "== $label c=$conc ok=$ok"
grep RESULT "$b/out"
awk -v n="$ok" 'NR>2 && $NF!="total" && NF>=5 { calls=$4; name=$NF; printf "%-14s %8d calls  %.2f/release\n", name, calls, calls/n } $NF=="total"{print}' "$b/strace.txt"
kill $serve; wait $serve 2>/dev/null || true
rm -rf "$b"
