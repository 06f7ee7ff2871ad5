#!/usr/bin/env bash
# Soak of `atrest migrate` under kill -9 (docs/plans/format-2.md stage 6):
# the e2e test `migrate::kill_9_at_random_moments_loses_nothing` at full
# size, 100 rounds on a generated format 1 vault of ~20,000 objects (400
# directories of 48 entries of every kind, batches of 100 objects); CI
# runs the same test at 20 rounds of ~500. Each round: migrate killed at a random moment, migrate
# again to the end, the manifest equal to the format 1 vault's, no format 1
# file left, fsck clean every fourth round. Takes hours; not run in CI.
#
# Env: ROUNDS (default 100), DIRS (default 400). Needs root and /dev/fuse.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
ATREST_MIGRATE_SOAK_ROUNDS=${ROUNDS:-100} ATREST_MIGRATE_SOAK_DIRS=${DIRS:-400} \
    cargo test --release -p atrest --test e2e -- --exact \
    migrate::kill_9_at_random_moments_loses_nothing --nocapture
