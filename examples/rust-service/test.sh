#!/usr/bin/env bash
# End-to-end test of the Rust example against a real `atrest keyd` on
# 127.0.0.1 and a real PostgreSQL (run by scripts/test-all.sh):
#
#   ATREST=target/release/atrest ATREST_TEST_POSTGRES=postgres://... \
#       bash examples/rust-service/test.sh
#
# ATREST_TEST_POSTGRES comes from `bash scripts/test-postgres.sh start DIR`;
# without it the test fails, it does not skip. The service is built with
# cargo (CARGO_TARGET_DIR is honoured).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ATREST="$(realpath "${ATREST:?set ATREST to the atrest binary, e.g. target/release/atrest}")"

fail() { echo "rust-service test: FAIL: $*" >&2; exit 1; }
[ -n "${ATREST_TEST_POSTGRES:-}" ] ||
    fail "set ATREST_TEST_POSTGRES to a PostgreSQL URL (bash scripts/test-postgres.sh start DIR prints one)"
export DATABASE_URL="$ATREST_TEST_POSTGRES"

(cd "$here/../.." && cargo build --quiet -p atrest-example-service) || fail "cannot build the service"
service="$(cd "$here/../.." && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug/atrest-example-service"

# shellcheck source=../keyd-for-tests.sh
source "$here/../keyd-for-tests.sh"
start_keyd_with_app billing --scope 'company:*' --field 'example_customers.*' --create-scopes

echo "rust-service: customers sealed in PostgreSQL, found by blind index"
out="$("$service")" || fail "the service's checks failed"
acme="$(sed -n 's/^company \(acme-[^ ]*\) \(.*\)$/\1 \2/p' <<<"$out")"
globex="$(sed -n 's/^company \(globex-[^ ]*\) \(.*\)$/\1 \2/p' <<<"$out")"
[ -n "$acme" ] && [ -n "$globex" ] || fail "the service said: $out"

echo "rust-service: shredding one company"
"$ATREST" scope shred "company:${globex%% *}" --yes >/dev/null
# shellcheck disable=SC2086 # "COMPANY ID"
"$service" shredded $globex >/dev/null || fail "globex's customer still decrypts"
# shellcheck disable=SC2086
if "$service" shredded $acme >/dev/null 2>&1; then fail "the shred reached another company"; fi

tail="$("$ATREST" keyd audit tail -n 1000 --json)"
for word in '"decrypted"' authentication_failed scope_shredded 'app:billing' example_customers.name; do
    grep -qF -- "$word" <<<"$tail" || fail "the audit log lacks $word"
done
grep -qF intact <<<"$("$ATREST" keyd audit verify)" || fail "the audit log does not verify"
echo "rust-service: all passed"
