#!/usr/bin/env bash
# Short fuzzing run of every cargo-fuzz target in this directory.
#
#   fuzz/run-short.sh                 # every target, 20 s each
#   FUZZ_SECONDS=300 fuzz/run-short.sh fuzz_names fuzz_config
#
# Builds all targets (installing cargo-fuzz first if it is missing), runs
# each (FUZZ_JOBS at a time) for FUZZ_SECONDS seconds (default 20) starting from the checked-in
# seeds in fuzz/corpus-seed/<target>/ plus whatever earlier runs left in
# fuzz/corpus/<target>/ (git-ignored, where new inputs go), and ends with
# the line `N passed, M failed`. Exits non-zero if any target crashed,
# timed out, ran out of memory, or the build failed. A crashing input is
# saved under fuzz/artifacts/<target>/ (git-ignored), and the log of each
# run under fuzz/artifacts/logs/; replay a crash with
#   cargo fuzz run -s none --fuzz-dir fuzz <target> fuzz/artifacts/<target>/<file>
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 20)
#   FUZZ_JOBS       targets fuzzed at once (default: the number of CPUs)
#   FUZZ_SANITIZER  cargo-fuzz sanitizer (default none: the stable toolchain
#                   has no -Zsanitizer; `address` sets RUSTC_BOOTSTRAP=1)
# Build output goes to fuzz/target (git-ignored), apart from the main
# workspace's target/.
set -uo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$FUZZ_DIR")"
SECONDS_EACH="${FUZZ_SECONDS:-20}"
SANITIZER="${FUZZ_SANITIZER:-none}"
TARGET_DIR="$FUZZ_DIR/target"
LOG_DIR="$FUZZ_DIR/artifacts/logs"

if ! [[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || [ "$SECONDS_EACH" -lt 1 ]; then
    echo "FUZZ_SECONDS must be a positive integer, not '$SECONDS_EACH'" >&2
    exit 2
fi

cd "$ROOT" || exit 2
started=$(date +%s)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    if ! cargo install cargo-fuzz --locked; then
        echo "could not install cargo-fuzz" >&2
        echo "0 passed, 1 failed"
        exit 1
    fi
fi
if [ "$SANITIZER" != none ]; then
    # Sanitizers need -Z flags; allow them on the stable toolchain.
    export RUSTC_BOOTSTRAP=1
fi

common=(--fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR")

echo "== building fuzz targets (sanitizer: $SANITIZER)"
if ! cargo fuzz build "${common[@]}"; then
    echo "build of the fuzz targets failed" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
built=$(date +%s)

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir "$FUZZ_DIR")
fi
if [ ${#targets[@]} -eq 0 ]; then
    echo "no fuzz targets found" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

# Run the binaries just built rather than `cargo fuzz run`, which would
# rebuild each target first: every target then runs the same build, even
# if the sources change while this script runs.
host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="$TARGET_DIR/$host/release"

mkdir -p "$LOG_DIR"
# Targets run FUZZ_JOBS at a time (default: the number of CPUs), each on
# one core for its FUZZ_SECONDS, so the stage's wall time is about
# targets x seconds / jobs. Each run's outcome goes to a status file and is
# reported in the targets' order once all have finished.
JOBS="${FUZZ_JOBS:-$(nproc)}"
if ! [[ "$JOBS" =~ ^[0-9]+$ ]] || [ "$JOBS" -lt 1 ]; then
    echo "FUZZ_JOBS must be a positive integer, not '$JOBS'" >&2
    exit 2
fi
# Each target once, in the order given.
mapfile -t targets < <(printf '%s\n' "${targets[@]}" | awk '!seen[$0]++')
status_dir=$(mktemp -d)
# Interrupted: stop the fuzzers still running, then clean up.
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$status_dir"' EXIT

run_one() {
    local target=$1 corpus="$FUZZ_DIR/corpus/$1" artifacts="$FUZZ_DIR/artifacts/$1"
    local log="$LOG_DIR/$1.log" dirs rc
    mkdir -p "$corpus" "$artifacts"
    dirs=("$corpus")
    if [ -d "$FUZZ_DIR/corpus-seed/$target" ]; then
        dirs+=("$FUZZ_DIR/corpus-seed/$target")
    fi
    if [ ! -x "$bin_dir/$target" ]; then
        echo "no binary $bin_dir/$target" >"$log"
        echo 127 >"$status_dir/$target"
        return
    fi
    # The outer timeout only catches a run that libFuzzer itself fails to
    # stop (a hang outside an input); -timeout catches slow inputs.
    timeout --kill-after=10 $((SECONDS_EACH + 300)) \
        "$bin_dir/$target" -artifact_prefix="$artifacts/" \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 "${dirs[@]}" >"$log" 2>&1
    rc=$?
    echo "$rc" >"$status_dir/$target"
}

echo "== ${#targets[@]} targets, ${SECONDS_EACH}s each, $JOBS at a time"
running=0
for target in "${targets[@]}"; do
    if [ "$running" -ge "$JOBS" ]; then
        wait -n
        running=$((running - 1))
    fi
    run_one "$target" &
    running=$((running + 1))
done
wait

passed=0
failed=0
failed_names=()
for target in "${targets[@]}"; do
    corpus="$FUZZ_DIR/corpus/$target"
    log="$LOG_DIR/$target.log"
    rc=$(cat "$status_dir/$target" 2>/dev/null || echo 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n1)
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "== $target: ok: ${execs:-?} inputs (${speed:-?}/s), ${cov:-cov: ?}, corpus $(find "$corpus" -type f | wc -l) files"
    else
        failed=$((failed + 1))
        failed_names+=("$target")
        echo "== $target: FAILED (exit $rc); log: $log"
        # The panic message and the first frames of its stack, then where
        # libFuzzer saved the input.
        grep -m1 -A30 -E "panicked at|ERROR: libFuzzer|no binary" "$log" | sed 's/^/   | /'
        grep -E "Test unit written to" "$log" | sed 's/^/   | /'
        artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n1)
        if [ -n "$artifact" ]; then
            echo "   | replay: cargo fuzz run -s $SANITIZER --fuzz-dir fuzz $target ${artifact#"$ROOT"/}"
            echo "   |   (cargo fuzz fmt --fuzz-dir fuzz $target <file> prints a structured input)"
        fi
    fi
done

finished=$(date +%s)
echo "== build $((built - started))s, fuzzing $((finished - built))s, total $((finished - started))s"
if [ $failed -gt 0 ]; then
    echo "failed targets: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
