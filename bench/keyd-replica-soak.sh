#!/usr/bin/env bash
# Soak for issue 10: the end-to-end test that SIGKILLs one of two `keyd
# serve` replicas on one PostgreSQL under load, with ROUNDS kills (default
# 100; CI runs 4) instead of a few, on a private PostgreSQL cluster started
# here (scripts/test-postgres.sh). Not a benchmark: it passes or fails.
#
#   bash bench/keyd-replica-soak.sh            # ROUNDS=100
#   ROUNDS=500 bash bench/keyd-replica-soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-100}
dir=$(mktemp -d /tmp/atrest-soak-pg.XXXXXX)
chmod 0755 "$dir"
ATREST_TEST_POSTGRES=$(bash scripts/test-postgres.sh start "$dir/cluster")
trap 'bash scripts/test-postgres.sh stop "$dir/cluster" || true; rm -rf "$dir"' EXIT
export ATREST_TEST_POSTGRES ATREST_REQUIRE_POSTGRES=1 KEYD_KILL_ROUNDS=$ROUNDS
started=$SECONDS
cargo test --quiet -p atrest --test e2e -- --exact \
    keyd::killing_either_of_two_replicas_under_load_loses_nothing_acknowledged
echo "soak: $ROUNDS kills of either replica under load, nothing lost ($((SECONDS - started)) s)"
