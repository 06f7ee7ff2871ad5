#!/usr/bin/env bash
# What one release costs the database (issue 10, decision 0012): every
# statement and round trip keyd sends to PostgreSQL per release, counted by
# pg_stat_statements, the transactions committed per release (the
# database's xact_commit), and the context switches per release of keyd's
# threads and of PostgreSQL's processes (the kernel's per-thread counts in
# /proc/PID/task/*/status, voluntary and not: what `perf stat -e
# context-switches` counts, without perf's attaching). Counts, not timings: they do not depend on how
# busy the machine is, except through the group commits' batch sizes (more
# concurrent releases share one audit batch and one batch of holds), so
# each concurrency is reported on its own; c=1 is the cost of a lone
# release (batches of one). Context switches depend more on the machine
# (an idle core parks its thread, so a wake-up is a switch): compare runs
# of one machine and one build type only.
#
#   bash bench/keyd-pg-statements.sh            # builds release binaries first
#   NO_BUILD=1 ATREST=... KEYD_LOAD=... bash bench/keyd-pg-statements.sh
#
# Env: HOSTS (default 200), REQUESTS (per concurrency, default 2000),
#      CONCURRENCY (default "1 16 64"), LOAD_THREADS (default 2), NO_BUILD=1,
#      ATREST, KEYD_LOAD (debug builds count the same).
# One keyd on a private cluster started here (scripts/test-postgres.sh, with
# pg_stat_statements preloaded). Prints a markdown table per concurrency.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOSTS=${HOSTS:-200} REQUESTS=${REQUESTS:-2000} CONCURRENCY=${CONCURRENCY:-"1 16 64"}
LOAD_THREADS=${LOAD_THREADS:-2}
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
command -v psql >/dev/null || die "psql not found: apt-get install postgresql-client"

BASE=$(mktemp -d /var/tmp/atrest-keyd-statements.XXXXXX)
chmod 0755 "$BASE"
PID=
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null || true
    wait 2>/dev/null || true
    bash "$REPO_ROOT/scripts/test-postgres.sh" stop "$BASE/pg" >/dev/null 2>&1 || true
    rm -rf "$BASE"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The cluster, restarted once with pg_stat_statements loaded (BEGIN and
# COMMIT are counted too: track_utility is on by default).
export ATREST_TEST_POSTGRES_PORT=${ATREST_TEST_POSTGRES_PORT:-$(free_port)}
PG=$(bash "$REPO_ROOT/scripts/test-postgres.sh" start "$BASE/pg")
psql -qX "$PG" -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" >/dev/null
bash "$REPO_ROOT/scripts/test-postgres.sh" stop "$BASE/pg"
bash "$REPO_ROOT/scripts/test-postgres.sh" start "$BASE/pg" >/dev/null
psql -qX "$PG" -c 'CREATE DATABASE keyd_count' >/dev/null
DB=${PG%/*}/keyd_count
q() { psql -qXtA "$DB" -c "$1"; }
q 'CREATE EXTENSION pg_stat_statements' >/dev/null

"$ATREST" keyd init --data-dir "$BASE/keyd" --listen "127.0.0.1:$(free_port)" --database "$DB" \
    >"$BASE/init.out" 2>&1 || die "keyd init failed: $(cat "$BASE/init.out")"
"$ATREST" keyd serve --data-dir "$BASE/keyd" >"$BASE/serve.out" 2>"$BASE/serve.err" &
PID=$!
for _ in $(seq 100); do grep -q '^listening on' "$BASE/serve.out" && break; sleep 0.1; done
URL=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$BASE/serve.out")
[[ -n $URL ]] || die "keyd serve did not start: $(cat "$BASE/serve.err")"
"$LOAD" enroll --url "$URL" --ca "$BASE/keyd/tls/ca.pem" --threads "$LOAD_THREADS" \
    --admin-token-file "$BASE/keyd/admin.token" --hosts "$HOSTS" --concurrency 16 \
    --state "$BASE/hosts" >/dev/null || die "enrollment failed"
unlock() { # unlock C OFFSET: prints the RESULT line
    "$LOAD" unlock --url "$URL" --ca "$BASE/keyd/tls/ca.pem" --threads "$LOAD_THREADS" \
        --state "$BASE/hosts" --concurrency "$1" --requests "$REQUESTS" --sample 10 \
        --keep-alive 1 --offset "$2" 2>>"$BASE/load.err" | grep '^RESULT'
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
# Every host once (as in bench/keyd-pg.sh, hosts are known to the process),
# at the highest concurrency, so that the pools have opened their
# connections (switches are counted for the processes there before a run).
max_c=$(tr ' ' '\n' <<<"$CONCURRENCY" | sort -n | tail -n 1)
unlock "$max_c" 0 >/dev/null || die "warm-up failed: $(tail -n 2 "$BASE/load.err")"
postmaster=$(head -n 1 "$BASE/pg/data/postmaster.pid")
switches() { # switches PID...: context switches of their threads so far
    for pid in "$@"; do
        cat /proc/"$pid"/task/*/status 2>/dev/null || true
    done | awk '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { print s + 0 }'
}
# PostgreSQL's processes: the postmaster and its children (the pools'
# backends stay for the whole run; one that exits takes its count along).
pg_pids() { echo "$postmaster" $(pgrep -P "$postmaster"); }

# xact_commit is flushed by each backend at most once a second, and by an
# idle one after ten: read it once that long has passed. keyd's background
# work (every 250 ms: policies, expired held requests, old nonces and
# sessions; each statement its own transaction) goes on meanwhile; its
# statements are counted by pg_stat_statements over the same window and
# taken off.
commits() {
    sleep 11
    q "SELECT xact_commit FROM pg_stat_database WHERE datname = 'keyd_count'"
}
statements() { # the statements since the last reset: "calls|query" rows
    q "SELECT calls || '|' || regexp_replace(left(query, 110), '\s+', ' ', 'g')
       FROM pg_stat_statements
       WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'keyd_count')
         AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_database%'
       ORDER BY calls DESC"
}
background='keep_until <|keyd_web_sessions WHERE expires_at <=|keyd_login_|FROM keyd_policies|keyd_held_requests WHERE state'
offset=$REQUESTS
echo "# Statements per release, one keyd on PostgreSQL — $(date -u '+%F %T') UTC"
echo
echo "- atrest: $("$ATREST" --version), git $(git -C "$REPO_ROOT" rev-parse --short HEAD); $HOSTS hosts, $REQUESTS releases per concurrency"
echo "- keyd's own background work (every 250 ms) is listed apart and not counted per release"
for c in $CONCURRENCY; do
    before=$(commits)
    q 'SELECT pg_stat_statements_reset()' >/dev/null
    pids=$(pg_pids)
    keyd_before=$(switches "$PID") pg_before=$(switches $pids)
    line=$(unlock "$c" "$offset") || die "c=$c: generator failed: $(tail -n 2 "$BASE/load.err")"
    switches_keyd=$(($(switches "$PID") - keyd_before)) switches_pg=$(($(switches $pids) - pg_before))
    offset=$((offset + REQUESTS))
    [[ $(field errors "$line") == 0 ]] || die "c=$c: errors: $line"
    ok=$(field ok "$line")
    statements >"$BASE/run"
    after=$(commits)
    statements >"$BASE/window"
    grep -Ev "$background" "$BASE/run" >"$BASE/release" || true
    echo
    echo "## c=$c ($ok releases)"
    echo
    echo "| per release | statement |"
    echo "|---:|---|"
    awk -F'|' -v n="$ok" '{ q = $0; sub(/^[^|]*\|/, "", q); printf "| %.3f | `%s` |\n", $1 / n, q }' "$BASE/release"
    echo
    echo "Background during the run (not per release): $(grep -E "$background" "$BASE/run" | awk -F'|' '{ s += $1 } END { print s + 0 }') statements"
    echo
    awk -F'|' -v n="$ok" '{ s += $1 } END { printf "- round trips (statements) per release: %.2f\n", s / n }' "$BASE/release"
    bg=$(grep -E "$background" "$BASE/window" | awk -F'|' '{ s += $1 } END { print s + 0 }')
    echo "- commits per release: $(awk -v a="$before" -v b="$after" -v g="$bg" -v n="$ok" 'BEGIN { printf "%.2f", (b - a - g) / n }') (xact_commit, less the background statements' own)"
    awk -v k="$switches_keyd" -v p="$switches_pg" -v n="$ok" 'BEGIN {
        printf "- context switches per release: keyd %.2f, PostgreSQL %.2f (voluntary and involuntary, background work included)\n", k / n, p / n }'
done
