#!/usr/bin/env bash
# The key authority on SQLite and on PostgreSQL, side by side in one run
# (issue 10): releases/s, p50 and p99 at concurrency 1, 16 and 64 over
# keep-alive HTTPS (`keyd_load unlock`, crates/keyd/examples/keyd_load.rs:
# requests signed before the clock starts, every answer a 200 grant, SAMPLE
# of them unblinded to the host's key) for
#   sqlite    one `keyd serve` on SQLite (the embedded default)
#   pg        one `keyd serve` on PostgreSQL (a private cluster started here,
#             scripts/test-postgres.sh, on this machine)
#   pg x2     two `keyd serve` replicas on that database, the generator's
#             workers spread over both (as hosts listing both replicas are;
#             at c=1 the one worker asks the first replica only)
# Targets (issue 10): pg ≥ 0.7x sqlite at c=64; p99 ≤ 10 ms at c=16. Tang is
# in bench/keyd.sh. Everything shares this machine's CPUs: the generator's
# and PostgreSQL's CPU time are in the report beside keyd's.
#
# Env: REPS (default 3), HOSTS (default 2000), REQUESTS (per phase, default
#      20000), DURATION (cap per phase, s, default 10), SAMPLE (default 100),
#      LOAD_THREADS (default 2), NO_BUILD=1, ATREST, KEYD_LOAD, RESULTS_DIR
#      (default bench/results). Run it on an idle machine: the 1-minute load
#      average at the start of each phase is recorded.
# Writes RESULTS_DIR/keyd-pg-<date>.txt (markdown) and prints it.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-3} HOSTS=${HOSTS:-2000} REQUESTS=${REQUESTS:-20000} DURATION=${DURATION:-10}
SAMPLE=${SAMPLE:-100} LOAD_THREADS=${LOAD_THREADS:-2}
RESULTS_DIR=${RESULTS_DIR:-$REPO_ROOT/bench/results}
log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -z ${NO_BUILD:-} ]]; then
    log "building atrest and keyd_load (release)"
    (cd "$REPO_ROOT" && cargo build --release -q -p atrest &&
        cargo build --release -q -p atrest-keyd --example keyd_load) || die "build failed"
fi
ATREST=$(realpath "${ATREST:-$REPO_ROOT/target/release/atrest}")
LOAD=$(realpath "${KEYD_LOAD:-$REPO_ROOT/target/release/examples/keyd_load}")
[[ -x $ATREST && -x $LOAD ]] || die "build atrest and keyd_load first (or unset NO_BUILD)"

BASE=$(mktemp -d /var/tmp/atrest-keyd-pg.XXXXXX)
chmod 0755 "$BASE"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bash "$REPO_ROOT/scripts/test-postgres.sh" stop "$BASE/pg" >/dev/null 2>&1 || true
    rm -rf "$BASE"
}
trap cleanup EXIT
mkdir "$BASE/values"
record() { echo "$3" >>"$BASE/values/$1.$2"; } # record CONFIG ROW VALUE
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
cpu_of() { awk '{ printf "%.3f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# serve DATA: starts `keyd serve`, prints its URL; its pid goes to $BASE/pid.<name>
serve() {
    local data=$1 name
    name=$(basename "$data")
    "$ATREST" keyd serve --data-dir "$data" >"$BASE/$name.out" 2>"$BASE/$name.err" &
    echo $! >"$BASE/pid.$name"
    for _ in $(seq 100); do grep -q '^listening on' "$BASE/$name.out" && break; sleep 0.1; done
    grep -q '^listening on' "$BASE/$name.out" || die "keyd serve ($name) did not start: $(cat "$BASE/$name.err")"
    sed -n 's/^listening on \([^ ]*\).*/\1/p' "$BASE/$name.out"
}
init() { # init DATA [--database URL]
    local data=$1
    shift
    "$ATREST" keyd init --data-dir "$data" --listen "127.0.0.1:$(free_port)" "$@" >"$BASE/init.out" 2>&1 ||
        die "keyd init failed: $(cat "$BASE/init.out")"
}
enroll() { # enroll URL DATA STATE
    "$LOAD" enroll --url "$1" --ca "$2/tls/ca.pem" --threads "$LOAD_THREADS" \
        --admin-token-file "$2/admin.token" --hosts "$HOSTS" --concurrency 64 --state "$3" >/dev/null ||
        die "enrollment at $1 failed"
}

# phases CONFIG URLS DATA STATE PIDS...: REPS rounds of c=1, 16, 64.
OFFSET=0
phases() {
    local config=$1 urls=$2 data=$3 state=$4 c rep line before after ok load pids
    shift 4
    pids=("$@")
    for ((rep = 1; rep <= REPS; rep++)); do
        for c in 1 16 64; do
            load=$(cut -d' ' -f1 /proc/loadavg)
            before=0
            for p in "${pids[@]}"; do before=$(awk -v a="$before" -v b="$(cpu_of "$p")" 'BEGIN { print a + b }'); done
            line=$("$LOAD" unlock --url "$urls" --ca "$data/tls/ca.pem" --threads "$LOAD_THREADS" \
                --state "$state" --concurrency "$c" --requests "$REQUESTS" --duration "$DURATION" \
                --sample "$SAMPLE" --keep-alive 1 --offset "$OFFSET" 2>>"$BASE/load.err" | grep '^RESULT') ||
                die "$config c=$c: generator failed: $(tail -n 2 "$BASE/load.err")"
            after=0
            for p in "${pids[@]}"; do after=$(awk -v a="$after" -v b="$(cpu_of "$p")" 'BEGIN { print a + b }'); done
            OFFSET=$((OFFSET + REQUESTS))
            [[ $(field errors "$line") == 0 ]] || die "$config c=$c: errors: $line"
            ok=$(field ok "$line")
            record "$config" "rps.c$c" "$(field per_s "$line")"
            record "$config" "p50.c$c" "$(field p50_ms "$line")"
            record "$config" "p99.c$c" "$(field p99_ms "$line")"
            record "$config" "cpu.c$c" "$(awk -v a="$before" -v b="$after" -v n="$ok" 'BEGIN { printf "%.0f", (b - a) * 1e6 / n }')"
            record "$config" "load.c$c" "$load"
            log "  $config c=$c rep $rep: $(field per_s "$line")/s p99 $(field p99_ms "$line") ms (load $load)"
        done
    done
}

load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

log "sqlite: one keyd on SQLite, $HOSTS hosts"
init "$BASE/sqlite"
SQLITE_URL=$(serve "$BASE/sqlite")
PIDS+=("$(cat "$BASE/pid.sqlite")")
enroll "$SQLITE_URL" "$BASE/sqlite" "$BASE/hosts.sqlite"
phases sqlite "$SQLITE_URL" "$BASE/sqlite" "$BASE/hosts.sqlite" "$(cat "$BASE/pid.sqlite")"
kill "$(cat "$BASE/pid.sqlite")"

log "pg: one keyd on PostgreSQL"
PG=$(ATREST_TEST_POSTGRES_PORT=$(free_port) bash "$REPO_ROOT/scripts/test-postgres.sh" start "$BASE/pg")
psql -q "$PG" -c 'CREATE DATABASE keyd_bench' || die "cannot create the database"
DB=${PG%/*}/keyd_bench
# The private cluster's processes: the postmaster and its children (the
# connection pools keep their backends for the whole phase).
pg_pids() { local pm; pm=$(head -n1 "$BASE/pg/data/postmaster.pid" 2>/dev/null) && echo "$pm $(pgrep -d ' ' -P "$pm")"; }
init "$BASE/a" --database "$DB"
A_URL=$(serve "$BASE/a")
PIDS+=("$(cat "$BASE/pid.a")")
enroll "$A_URL" "$BASE/a" "$BASE/hosts.pg"
# shellcheck disable=SC2046 # one pid per word
phases pg "$A_URL" "$BASE/a" "$BASE/hosts.pg" "$(cat "$BASE/pid.a")" $(pg_pids)

log "pg x2: a second replica on the same database"
mkdir -p "$BASE/b/tls"
cp "$BASE"/a/{audit.key,records.key,secrets.key,admin.token} "$BASE/b/"
cp "$BASE"/a/tls/* "$BASE/b/tls/"
python3 - "$BASE/a/keyd.json" "$BASE/b/keyd.json" "$(free_port)" <<'PY'
import json, sys
settings = json.load(open(sys.argv[1]))
settings["listen"] = "127.0.0.1:" + sys.argv[3]
json.dump(settings, open(sys.argv[2], "w"))
PY
B_URL=$(serve "$BASE/b")
PIDS+=("$(cat "$BASE/pid.b")")
# shellcheck disable=SC2046
phases "pg-x2" "$A_URL,$B_URL" "$BASE/a" "$BASE/hosts.pg" "$(cat "$BASE/pid.a")" "$(cat "$BASE/pid.b")" $(pg_pids)
"$ATREST" keyd audit verify --data-dir "$BASE/a" >"$BASE/verify" 2>&1 || die "audit verify: $(cat "$BASE/verify")"

mkdir -p "$RESULTS_DIR"
out="$RESULTS_DIR/keyd-pg-$(date +%F-%H%M).txt"
median() { sort -g "$1" | awk '{ a[NR] = $1 } END { printf "%.1f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
m() { median "$BASE/values/$1.$2"; }
{
    echo "# atrest keyd on SQLite and PostgreSQL — $(date -u '+%F %T') UTC"
    echo
    echo "- atrest: $("$ATREST" --version), git $(git -C "$REPO_ROOT" rev-parse --short HEAD); PostgreSQL $(psql -tAq "$PG" -c 'SHOW server_version')"
    echo "- $HOSTS hosts, $REPS repetitions (medians), each phase ≤ $REQUESTS requests or ${DURATION} s, keep-alive HTTPS, generator $LOAD_THREADS threads"
    echo "- load average at the start: $load_at_start; at each phase: in the values below"
    echo "- server CPU µs per release: keyd (both replicas for pg-x2) plus PostgreSQL's processes; \`audit verify\` after the run: $(head -c 100 "$BASE/verify" | tr '\n' ' ')"
    echo
    echo "| row | sqlite | pg | pg x2 | pg / sqlite | pg x2 / sqlite |"
    echo "|---|---:|---:|---:|---:|---:|"
    for c in 1 16 64; do
        for k in rps p50 p99 cpu; do
            s=$(m sqlite "$k.c$c") p=$(m pg "$k.c$c") p2=$(m pg-x2 "$k.c$c")
            label=$(case $k in rps) echo "releases/s";; p50) echo "p50 ms";; p99) echo "p99 ms";; cpu) echo "server CPU µs/release";; esac)
            echo "| $label, c=$c | $s | $p | $p2 | $(awk -v a="$p" -v b="$s" 'BEGIN { printf "%.2f", a / b }') | $(awk -v a="$p2" -v b="$s" 'BEGIN { printf "%.2f", a / b }') |"
        done
    done
    echo
    echo "Targets (issue 10): pg / sqlite releases/s at c=64 ≥ 0.70; p99 at c=16 ≤ 10 ms."
    echo
    echo "All values per repetition:"
    echo
    for f in "$BASE"/values/*; do echo "- $(basename "$f"): $(paste -sd, "$f")"; done
} >"$out"
cat "$out"
