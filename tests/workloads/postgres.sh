#!/usr/bin/env bash
# PostgreSQL 15 with its data directory inside an atrest vault.
#
# Creates a vault in a temporary directory, mounts it with -o allow_other,
# creates the data directory through the mount (owned by postgres), runs
# initdb (with data checksums) as postgres, starts the server on a unix
# socket in a private directory, runs `pgbench -i -s 10` and
# `pgbench -c 4 -j 2 -T 30`, checks pgbench's balance invariants and
# `pg_amcheck --heapallindexed`, stops the server, checks every page checksum
# offline (pg_checksums), remounts with a cold page cache and checks again,
# unmounts and runs `atrest fsck`.
#
# Env: ATREST (binary; default target/release/atrest under the repo root),
#      PG_BIN (default: the newest /usr/lib/postgresql/*/bin, 15 preferred),
#      PGBENCH_SECONDS (default 30), PGBENCH_SCALE (default 10),
#      WORKLOAD_TMPDIR (parent of the temp dir; default /var/tmp), KEEP_WORK=1.
set -euo pipefail

NAME=postgres
# shellcheck source=tests/workloads/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Stop the server before the vault is unmounted; show its log on failure.
cleanup_hook() {
    local rc=$1
    if [[ -n ${PGDATA:-} && -f $PGDATA/postmaster.pid ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1
    fi
    if ((rc != 0 || FAILED != 0)) && [[ -s ${PGLOG:-} ]]; then
        echo "--- last lines of the server log ($PGLOG) ---"; tail -n 20 "$PGLOG"
    fi
}
need_pkgs postgresql postgresql-contrib fuse3
if [[ -z ${PG_BIN:-} ]]; then
    if [[ -x /usr/lib/postgresql/15/bin/postgres ]]; then
        PG_BIN=/usr/lib/postgresql/15/bin
    else
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    fi
fi
PGDATA=
PGLOG=

workload_start
chmod 755 "$WORK"

"$ATREST" init "$VAULT" --passphrase-file "$PASS_FILE" --no-recovery-key \
    --argon2-memory 8 --argon2-iterations 1 >/dev/null
do_mount -o allow_other

SECS=${PGBENCH_SECONDS:-30}
SCALE=${PGBENCH_SCALE:-10}
PGDATA=$MNT/pgdata
SOCK=$WORK/sock
PGLOG=$WORK/postgres.log
PORT=5432 # only names the socket file in the private $SOCK
mkdir -p "$SOCK"
chown postgres:postgres "$SOCK"
touch "$PGLOG"
chown postgres:postgres "$PGLOG"
# `atrest init` creates the vault root with mode 0700 and the mount's root
# shows the backing root's mode, so postgres could not even reach its data
# directory: let others traverse (not list) the root, through the mount.
chmod 711 "$MNT"
# through the mount: the data directory must belong to postgres, mode 0700
mkdir "$PGDATA"
chown postgres:postgres "$PGDATA"
chmod 700 "$PGDATA"

as_pg() { runuser -u postgres -- "$@"; }
psql_q() { as_pg "$PG_BIN/psql" -h "$SOCK" -p "$PORT" -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }
# step DESCRIPTION command... : run, PASS/FAIL with timing, output in $STEP_LOG;
# the exit status is left in STEP_RC (step itself always succeeds)
step() {
    local desc=$1 rc=0 t0=$SECONDS
    shift
    STEP_LOG=$WORK/step-$((PASSED + FAILED)).log
    "$@" >"$STEP_LOG" 2>&1 || rc=$?
    STEP_RC=$rc
    if ((rc == 0)); then
        pass "$desc ($((SECONDS - t0)) s)"
    else
        fail "$desc ($((SECONDS - t0)) s)" "exit $rc"
        tail -n 20 "$STEP_LOG" | sed 's/^/      /'
    fi
}
pg_start() {
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 120 \
        -o "-k $SOCK -p $PORT -c listen_addresses=''" start
}
pg_stop() { as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 120 stop; }

# pgbench's bookkeeping: every transaction adds the same delta to one account,
# teller and branch and logs it in history, so the four sums must agree.
check_invariants() {
    local out
    out=$(psql_q -d bench -c "SELECT (SELECT sum(abalance) FROM pgbench_accounts),
        (SELECT sum(tbalance) FROM pgbench_tellers), (SELECT sum(bbalance) FROM pgbench_branches),
        (SELECT coalesce(sum(delta), 0) FROM pgbench_history), (SELECT count(*) FROM pgbench_accounts)")
    echo "sums accounts|tellers|branches|history|#accounts: $out"
    IFS='|' read -r a t b h n <<<"$out"
    [[ $a == "$t" && $t == "$b" && $b == "$h" && $n == $((SCALE * 100000)) ]]
}
amcheck() {
    # exit status 2 means corruption was found, 1 an error; besides the
    # NOTICEs of --install-missing, any output is a problem report
    local out rc=0
    out=$(as_pg "$PG_BIN/pg_amcheck" -h "$SOCK" -p "$PORT" --all --heapallindexed \
        --rootdescend --install-missing 2>&1) || rc=$?
    echo "$out"
    out=$(grep -vE '^NOTICE:  extension "amcheck" already exists' <<<"$out" || true)
    [[ $rc == 0 && -z $out ]]
}
# read every row of every table (data checksums are verified on each read)
dump_all() { as_pg "$PG_BIN/pg_dumpall" -h "$SOCK" -p "$PORT" >/dev/null; }

step "initdb --data-checksums (as postgres, data dir in the vault)" \
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust --data-checksums --no-instructions
step "server start" pg_start
((STEP_RC == 0)) || exit 1
step "createdb bench" as_pg "$PG_BIN/createdb" -h "$SOCK" -p "$PORT" bench
step "pgbench -i -s $SCALE" as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -i -s "$SCALE" -q bench
step "pgbench -c 4 -j 2 -T $SECS" as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -c 4 -j 2 -T "$SECS" bench
grep -E '^(number of transactions actually processed|number of failed|tps)' "$STEP_LOG" |
    sed 's/^/      /' || true
step "pgbench balance invariants" check_invariants
step "pg_amcheck --all --heapallindexed --rootdescend" amcheck
step "pg_dumpall (reads every row, checksums verified)" dump_all
step "server stop (fast, clean)" pg_stop
step "pg_checksums --check (offline, every page)" as_pg "$PG_BIN/pg_checksums" --check -D "$PGDATA"
check_alive "after first server run"

# Remount with a cold page cache: the same data must come back from the vault.
force_unmount "$MNT"
sync
echo 3 >/proc/sys/vm/drop_caches
do_mount -o allow_other
log_lines=$(wc -l <"$PGLOG")
step "server start after remount" pg_start
((STEP_RC == 0)) || exit 1
if tail -n +$((log_lines + 1)) "$PGLOG" | grep -q 'database system was shut down at' &&
    ! tail -n +$((log_lines + 1)) "$PGLOG" | grep -qE 'redo starts|was interrupted'; then
    pass "restart after clean shutdown needed no recovery"
else
    fail "restart after clean shutdown needed no recovery"
fi
step "pgbench balance invariants after remount" check_invariants
step "pg_amcheck after remount" amcheck
# -n: no vacuum, hence no truncation of pgbench_history, so the sums still agree
step "short pgbench after remount (-n -T 5)" as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PORT" -n -c 4 -j 2 -T 5 bench
step "pgbench balance invariants after second run" check_invariants
step "server stop after remount" pg_stop
check_alive "after second server run"

force_unmount "$MNT"
run_fsck
((FAILED == 0)) # the EXIT trap prints the summary
