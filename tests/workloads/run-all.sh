#!/usr/bin/env bash
# Runs every workload script of this directory in sequence and prints
# `workloads: N passed, M failed`; exits non-zero if any failed.
#
# Env: ATREST (binary; default target/release/atrest under the repo root) and
#      everything the individual scripts take; WORKLOADS (space-separated
#      subset, e.g. "fio leak"; default: fio stress-ng postgres leak pjdfstest pjdfstest-format2).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/../.." && pwd)
export ATREST=${ATREST:-$REPO_ROOT/target/release/atrest}
[[ $ATREST == /* ]] || ATREST=$PWD/$ATREST

read -r -a WL <<<"${WORKLOADS:-fio stress-ng postgres leak pjdfstest pjdfstest-format2}"
PASSED=0
FAILED=0
RESULTS=()
for w in "${WL[@]}"; do
    echo "=== workload $w ==="
    t0=$SECONDS
    rc=0
    "$HERE/$w.sh" || rc=$?
    dt=$((SECONDS - t0))
    if ((rc == 0)); then
        PASSED=$((PASSED + 1)); RESULTS+=("$w: passed (${dt} s)")
    else
        FAILED=$((FAILED + 1)); RESULTS+=("$w: FAILED, exit $rc (${dt} s)")
    fi
    echo
done
printf '%s\n' "${RESULTS[@]}"
echo "workloads: $PASSED passed, $FAILED failed"
((FAILED == 0))
