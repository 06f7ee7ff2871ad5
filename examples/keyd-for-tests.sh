# Sourced by the examples' test.sh: a real `atrest keyd` ($ATREST) on
# 127.0.0.1 in "$work/keyd", and an app for the example.
#
#   start_keyd_with_app NAME [atrest app add OPTIONS...]
#
# exports ATREST_KEYD_DIR (for `atrest scope`/`atrest app`), ATREST_URL,
# ATREST_APP_TOKEN and ATREST_CA. Sourcing it makes the temporary directory
# $work, removed with keyd stopped on exit; the caller defines fail().
keyd_pid=""
work="$(mktemp -d)"
cleanup() {
    stop_keyd
    rm -rf "$work"
}
trap cleanup EXIT

start_keyd_with_app() {
    local name="$1"
    shift
    export ATREST_KEYD_DIR="$work/keyd"
    "$ATREST" keyd init --data-dir "$ATREST_KEYD_DIR" --listen 127.0.0.1:0 >"$work/init.out" 2>&1 ||
        { cat "$work/init.out" >&2; fail "keyd init failed"; }
    "$ATREST" keyd serve --data-dir "$ATREST_KEYD_DIR" >"$work/serve.out" 2>"$work/serve.err" &
    keyd_pid=$!
    for _ in $(seq 300); do
        grep -q '^listening on ' "$work/serve.out" && break
        kill -0 "$keyd_pid" 2>/dev/null || { cat "$work/serve.err" >&2; fail "keyd serve exited"; }
        sleep 0.1
    done
    ATREST_URL="$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$work/serve.out")"
    [ -n "$ATREST_URL" ] || fail "keyd did not say where it listens: $(cat "$work/serve.out")"
    # The admin commands find keyd through keyd.json; port 0 was resolved only now.
    python3 - "$ATREST_KEYD_DIR/keyd.json" "$ATREST_URL" <<'PY'
import json, sys
path, url = sys.argv[1], sys.argv[2]
with open(path) as f:
    settings = json.load(f)
settings["listen"] = url.removeprefix("https://")
with open(path, "w") as f:
    json.dump(settings, f)
PY
    local added
    added="$("$ATREST" app add "$name" "$@" --json)" || fail "atrest app add $name failed"
    ATREST_APP_TOKEN="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["token"])' "$added")"
    export ATREST_URL ATREST_APP_TOKEN ATREST_CA="$ATREST_KEYD_DIR/tls/ca.pem"
}

stop_keyd() {
    if [ -n "$keyd_pid" ]; then
        kill "$keyd_pid" 2>/dev/null || true
        wait "$keyd_pid" 2>/dev/null || true
    fi
}
