#!/usr/bin/env bash
# Load-independent counts of the key authority's per-release work and of a
# host's `atrest unlock --mount`, for two builds side by side (A = before a
# change, B = after it). Counts, not times: valid on a busy machine.
#
#   bench/keyd-counts.sh A_ATREST B_ATREST KEYD_LOAD [N]
#
# Per build (each with its own keyd):
#   keyd: `atrest keyd serve` started by `perf stat` (counting enabled only
#     during the measured phase, through perf's control fifo), 200 hosts
#     enrolled, 500 releases of warm-up, then N (default 3000) releases at
#     c=1 over one keep-alive connection from KEYD_LOAD: context switches,
#     page faults and task-clock per release (software events: this VM has
#     no hardware counters, so instructions come from CALLGRIND=1), and
#     keyd's system calls per release (strace -f -c over a second phase of
#     N/3 releases).
#   CALLGRIND=1: also keyd under valgrind's callgrind (collection switched
#     on for 300 releases only): instructions per release, exact, and the
#     annotated profile (OUT_DIR/LABEL.keyd.callgrind.txt).
#   host: a vault enrolled with that keyd (ATREST_STATE_DIR and
#     ATREST_RUN_DIR private to the run), three warm-up unlocks, then one
#     `atrest unlock VAULT --mount DIR` under `strace -f` (every process:
#     the CLI and the mount process it starts, up to "ready") and one under
#     `valgrind --tool=callgrind` (the CLI process alone: instructions, and
#     OUT_DIR/LABEL.host.callgrind.txt). Prints the system calls of each
#     process by name (fsync, fdatasync, connect, rename, openat, write,
#     ...), the files opened for writing, and the time between the first
#     and last system call of each process (strace inflates it: compare
#     A with B only).
#   startup: page faults of `atrest --version` (executing the binary).
#
# Writes OUT_DIR (default /tmp/keyd-counts-XXXX) with each side's raw
# strace and perf output, and prints a summary.
set -euo pipefail
[[ $# -ge 3 ]] || { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
A=$(realpath "$1") B=$(realpath "$2") LOAD=$(realpath "$3") N=${4:-3000}
OUT=${OUT_DIR:-$(mktemp -d /tmp/keyd-counts-XXXX)}
mkdir -p "$OUT"
[[ $(id -u) == 0 && -c /dev/fuse ]] || { echo "run as root with /dev/fuse" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
perf_value() { awk -F, -v e="$2" '$3 ~ e { print $1; exit }' "$1"; }
# Total instructions (Ir) of a callgrind output file.
callgrind_ir() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }

side() { # side ATREST LABEL
    local atrest=$1 label=$2 b port url perf ok
    b=$(mktemp -d /tmp/keyd-counts-run-XXXX)
    port=$(free_port)
    url=https://127.0.0.1:$port
    "$atrest" keyd init --data-dir "$b/d" --listen "127.0.0.1:$port" >/dev/null 2>&1
    mkfifo "$b/ctl" "$b/ack"
    perf stat -x, -e context-switches,page-faults,task-clock -D -1 \
        --control "fifo:$b/ctl,$b/ack" -o "$OUT/$label.keyd.perf" -- \
        "$atrest" keyd serve --data-dir "$b/d" >"$b/serve.out" 2>"$b/serve.err" &
    perf=$!
    for _ in $(seq 100); do grep -q '^listening on' "$b/serve.out" 2>/dev/null && break; sleep 0.1; done
    local common=(--url "$url" --ca "$b/d/tls/ca.pem" --threads 1)
    "$LOAD" enroll "${common[@]}" --admin-token-file "$b/d/admin.token" --hosts 200 --concurrency 16 \
        --state "$b/hosts" >/dev/null
    "$LOAD" unlock "${common[@]}" --state "$b/hosts" --concurrency 1 --requests 500 --duration 30 \
        --sample 10 --keep-alive 1 --offset 0 >/dev/null 2>&1
    echo enable >"$b/ctl"
    head -c 4 "$b/ack" >/dev/null
    "$LOAD" unlock "${common[@]}" --state "$b/hosts" --concurrency 1 --requests "$N" --duration 300 \
        --sample 10 --keep-alive 1 --offset 500 >"$OUT/$label.load" 2>&1 || true
    echo disable >"$b/ctl"
    head -c 4 "$b/ack" >/dev/null
    ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' "$OUT/$label.load")
    local keyd_pid
    keyd_pid=$(pgrep -P "$perf" | head -1)
    strace -f -c -o "$OUT/$label.keyd.strace" -p "$keyd_pid" &
    local kst=$!
    sleep 0.5
    "$LOAD" unlock "${common[@]}" --state "$b/hosts" --concurrency 1 --requests $((N / 3)) --duration 300 \
        --sample 10 --keep-alive 1 --offset $((500 + N)) >"$OUT/$label.load-strace" 2>&1 || true
    kill -INT "$kst"
    wait "$kst" 2>/dev/null || true
    local sok
    sok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' "$OUT/$label.load-strace")

    # --- the host -------------------------------------------------------
    export ATREST_STATE_DIR=$b/host-state ATREST_RUN_DIR=$b/run
    local fp token
    fp=$("$atrest" keyd fingerprint --data-dir "$b/d")
    "$atrest" init "$b/vault" --key-file "$b/boot.key" --no-recovery-key >/dev/null 2>&1
    token=$("$atrest" keyd token create --data-dir "$b/d" --group bench --expires 1h 2>/dev/null)
    "$atrest" enroll "$b/vault" --authority "$url" --token "$token" --ca-fingerprint "$fp" \
        --key-file "$b/boot.key" --host-name counts-host >/dev/null 2>&1
    mkdir -p "$b/mnt"
    for _ in 1 2 3; do
        "$atrest" unlock "$b/vault" --mount "$b/mnt" >/dev/null 2>>"$OUT/$label.host.err"
        "$atrest" unmount "$b/mnt" >/dev/null 2>&1
    done
    strace -f -tt -T -y -o "$OUT/$label.host.strace" "$atrest" unlock "$b/vault" --mount "$b/mnt" \
        >/dev/null 2>>"$OUT/$label.host.err" &
    local st=$!
    for _ in $(seq 200); do mountpoint -q "$b/mnt" && break; sleep 0.05; done
    sleep 0.5
    "$atrest" unmount "$b/mnt" >/dev/null 2>&1 || true
    wait "$st" || true
    perf stat -x, --no-inherit -e page-faults,task-clock \
        -o "$OUT/$label.host.perf" "$atrest" unlock "$b/vault" --mount "$b/mnt" >/dev/null 2>&1
    "$atrest" unmount "$b/mnt" >/dev/null 2>&1 || true
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$label.host.callgrind" \
        "$atrest" unlock "$b/vault" --mount "$b/mnt" >/dev/null 2>"$OUT/$label.host.valgrind.err" || true
    "$atrest" unmount "$b/mnt" >/dev/null 2>&1 || true
    callgrind_annotate --inclusive=yes "$OUT/$label.host.callgrind" 2>/dev/null | head -80 \
        >"$OUT/$label.host.callgrind.txt" || true
    perf stat -x, -e page-faults -o "$OUT/$label.version.perf" "$atrest" --version >/dev/null
    find "$b/host-state" "$b/run" -type f | sed "s|$b/||" | sort >"$OUT/$label.host.files"
    unset ATREST_STATE_DIR ATREST_RUN_DIR

    cg_ok=0
    if [[ ${CALLGRIND:-0} == 1 ]]; then
        # A second keyd on a copy of the data directory, under callgrind.
        kill -INT "$keyd_pid" 2>/dev/null || true
        wait "$perf" 2>/dev/null || true
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$label.keyd.callgrind" \
            "$atrest" keyd serve --data-dir "$b/d" >"$b/serve2.out" 2>"$b/serve2.err" &
        perf=$!
        for _ in $(seq 600); do grep -q '^listening on' "$b/serve2.out" 2>/dev/null && break; sleep 0.1; done
        "$LOAD" unlock "${common[@]}" --state "$b/hosts" --concurrency 1 --requests 50 --duration 300 \
            --sample 5 --keep-alive 1 --offset $((1000 + 2 * N)) >/dev/null 2>&1 || true
        callgrind_control -i on "$perf" >/dev/null
        "$LOAD" unlock "${common[@]}" --state "$b/hosts" --concurrency 1 --requests 300 --duration 600 \
            --sample 5 --keep-alive 1 --offset $((1100 + 2 * N)) >"$OUT/$label.load-callgrind" 2>&1 || true
        callgrind_control -i off "$perf" >/dev/null
        callgrind_control -d "$perf" >/dev/null
        cg_ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' "$OUT/$label.load-callgrind")
    fi


    if [[ ${CALLGRIND:-0} == 1 ]]; then
        kill -INT "$perf" 2>/dev/null || true
    else
        kill -INT "$keyd_pid" 2>/dev/null || true
    fi
    wait "$perf" 2>/dev/null || true
    if [[ ${CALLGRIND:-0} == 1 ]]; then
        # The dump taken while collecting (-d) holds the 300 releases: the
        # file with the most instructions.
        local f best=0
        for f in "$OUT/$label.keyd.callgrind"*; do
            [[ $f == *.txt || $f == *.dump ]] && continue
            local ir
            ir=$(callgrind_ir "$f")
            if [[ -n $ir ]] && ((ir > best)); then best=$ir; cp "$f" "$OUT/$label.keyd.callgrind.dump"; fi
        done
        callgrind_annotate --inclusive=yes "$OUT/$label.keyd.callgrind.dump" 2>/dev/null | head -120 \
            >"$OUT/$label.keyd.callgrind.txt" || true
    fi
    rm -rf "$b"

    local cs pf tc
    cs=$(perf_value "$OUT/$label.keyd.perf" 'context-switches')
    pf=$(perf_value "$OUT/$label.keyd.perf" 'page-faults')
    tc=$(perf_value "$OUT/$label.keyd.perf" 'task-clock')
    echo "== $label: $atrest"
    grep RESULT "$OUT/$label.load" || true
    awk -v n="$ok" -v cs="$cs" -v pf="$pf" -v tc="$tc" 'BEGIN {
        printf "keyd per release (n=%d): context switches %.2f, page faults %.2f, task-clock %.1f us (load-dependent)\n",
            n, cs / n, pf / n, tc * 1000 / n }'
    echo "keyd system calls per release (strace -f -c, n=$sok):"
    awk -v n="$sok" 'NR > 2 && $NF != "total" && NF >= 5 && $1 !~ /^-/ { printf "  %-16s %8.2f\n", $NF, $4 / n }' \
        "$OUT/$label.keyd.strace"
    if [[ ${CALLGRIND:-0} == 1 ]]; then
        echo "keyd instructions per release (callgrind, n=$cg_ok): $(awk -v t="$(callgrind_ir "$OUT/$label.keyd.callgrind.dump")" -v n="$cg_ok" 'BEGIN { printf "%.0f", t / n }')"
    fi
    echo "host unlock --mount, CLI process alone (callgrind): instructions $(callgrind_ir "$OUT/$label.host.callgrind")," \
        "page faults (perf) $(perf_value "$OUT/$label.host.perf" 'page-faults')"
    echo "atrest --version: page faults $(perf_value "$OUT/$label.version.perf" 'page-faults')"
    echo "host process spans (first to last system call, strace):"
    awk '{ split($2, t, ":"); s = t[1] * 3600 + t[2] * 60 + t[3]; if (!($1 in a)) a[$1] = s; z[$1] = s }
         END { for (p in a) printf "  pid %s: %.1f ms\n", p, (z[p] - a[p]) * 1000 }' "$OUT/$label.host.strace" | sort
    echo "host system calls by process (strace -f, up to the unmount):"
    awk '{ pid = $1; call = $3; sub(/\(.*/, "", call); if (call ~ /^[a-z_0-9]+$/) n[pid " " call]++ }
         END { for (k in n) print k, n[k] }' "$OUT/$label.host.strace" |
        sort -k1,1n -k3,3nr | awk '{ if ($1 != last) { printf "\n  pid %s:", $1; last = $1 } printf " %s=%s", $2, $3 } END { print "" }'
    echo "host files opened for writing:"
    grep -E 'openat\(.*O_(WRONLY|RDWR)' "$OUT/$label.host.strace" | grep -v ENOENT |
        sed -E 's/.*openat\([^"]*"([^"]*)".*/  \1/' | sort | uniq -c || true
    echo "host state files: $(tr '\n' ' ' <"$OUT/$label.host.files")"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
side "$A" A
side "$B" B
echo "raw output in $OUT"
