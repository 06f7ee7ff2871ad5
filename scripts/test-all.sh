#!/usr/bin/env bash
# Runs every test atrest has, installing what they need first. Needs root
# (FUSE mounts, loop devices, a PostgreSQL server, apt-get).
#
#   bash scripts/test-all.sh            # everything (CI runs this)
#   SKIP_INSTALL=1 bash scripts/test-all.sh   # when the packages are there
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# keyd's approval page is driven in headless Chromium
# (crates/keyd/tests/web.rs): here a missing browser fails, never skips.
export ATREST_REQUIRE_BROWSER=1

# Each stage's heading carries the minutes since the start, so a slow stage
# shows in any CI log (the whole run has a 45-minute budget).
step() { printf '\n=== [%d:%02d] %s ===\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test-all.sh needs root: the tests mount FUSE file systems, loop devices and run PostgreSQL" >&2
    exit 1
fi

if [ -z "${SKIP_INSTALL:-}" ]; then
    step "installing test dependencies"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        fuse3 attr e2fsprogs util-linux psmisc procps cryptsetup-bin \
        fio stress-ng gocryptfs postgresql postgresql-contrib perl \
        chromium chromium-driver python3-selenium iproute2 \
        ansible-core cloud-init python3-venv curl \
        php-cli php-curl php-sqlite3 >/dev/null
    python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install -q cryptography
    # The independent backup checker reads keyed BLAKE3 and zstd.
    python3 -c 'import blake3, zstandard' 2>/dev/null || python3 -m pip install -q blake3 zstandard
    # An S3-compatible server for the backup tests (moto's, from PyPI).
    [ -x /opt/moto/bin/moto_server ] ||
        { python3 -m venv /opt/moto && /opt/moto/bin/pip install -q 'moto[server]'; }
fi
[ -e /dev/fuse ] || { echo "/dev/fuse is missing: load the fuse module (modprobe fuse)" >&2; exit 1; }
# What fuse3's udev rule does on an ordinary machine; containers and minimal
# VMs without udev leave it 0600, and the unprivileged-mount test needs it.
chmod 0666 /dev/fuse

step "a private PostgreSQL cluster for the tests"
# Issue 10 is tested against a real server: the audit log's PostgreSQL
# store (crates/audit/tests/audit/postgres.rs), the keyd authority suite on
# PostgreSQL and its replica tests (crates/keyd/src/authority/tests/), and
# two `keyd serve` replicas end to end (crates/cli/tests/e2e/keyd.rs). With
# ATREST_REQUIRE_POSTGRES=1 those tests fail, never skip, when it is missing.
pg_dir=$(mktemp -d /tmp/atrest-test-pg.XXXXXX)
chmod 0755 "$pg_dir"
ATREST_TEST_POSTGRES=$(bash scripts/test-postgres.sh start "$pg_dir/cluster")
export ATREST_TEST_POSTGRES ATREST_REQUIRE_POSTGRES=1
trap 'bash scripts/test-postgres.sh stop "$pg_dir/cluster" || true; rm -rf "$pg_dir"' EXIT

# Backups to S3 (crates/backup/tests/s3.rs, the e2e backup tests) start
# their own moto_server on 127.0.0.1; with ATREST_REQUIRE_S3=1 they fail,
# never skip, when it is missing.
export ATREST_TEST_MOTO=/opt/moto/bin/moto_server ATREST_REQUIRE_S3=1
[ -x "$ATREST_TEST_MOTO" ] || { echo "no $ATREST_TEST_MOTO: run without SKIP_INSTALL" >&2; exit 1; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "unit, vector and end-to-end tests (real FUSE mounts)"
cargo test --workspace --quiet

step "independent check of the known-answer vectors (Python cryptography)"
python3 tests/differential/check_vectors.py
python3 tests/differential/check_vectors_v2.py
python3 tests/differential/check_scoped.py
python3 tests/differential/check_backup.py
python3 tests/differential/check_audit.py
python3 tests/differential/check_grant.py
python3 tests/differential/check_luks.py

step "release build"
cargo build --release --quiet -p atrest

step "the release binary carries no test hooks"
# ATREST_BOOT_ID (a faked boot id) exists only in test builds (feature
# test-hooks of atrest-agent, enabled by the CLI's dev-dependency).
if grep -aq ATREST_BOOT_ID target/release/atrest; then
    echo "target/release/atrest honours ATREST_BOOT_ID: a test hook leaked into the release build" >&2
    exit 1
fi

step "real workloads on a mount: fio, stress-ng, PostgreSQL, leak check"
ATREST="$PWD/target/release/atrest" bash tests/workloads/run-all.sh

step "the PHP example against a real keyd: sign-up, log-in, blind index, window job, erasure"
ATREST="$PWD/target/release/atrest" bash examples/php-app/test.sh

step "the Rust example on PostgreSQL (sqlx): sealed columns, blind-index lookups, a shred"
ATREST="$PWD/target/release/atrest" bash examples/rust-service/test.sh

step "fuzzing the parsers (short run)"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash fuzz/run-short.sh

step "the README's demo"
./target/release/atrest demo >/dev/null

step "the Debian package: build, dpkg -i, man, completion, doctor, demo, dpkg -P"
bash scripts/test-deb.sh

step "fleet examples: cloud-init schema, the Ansible role (syntax, check mode, a real run in a namespace)"
python3 tests/deploy/check_deploy.py target/deb/atrest_*.deb

echo
echo "all test stages passed in $((SECONDS / 60)) min $((SECONDS % 60)) s"
