#!/usr/bin/env bash
# Starts a private PostgreSQL cluster for the tests (issue 10) and prints its
# URL. Runs initdb/pg_ctl from Debian's postgresql package directly (no
# pg_ctlcluster), listening on 127.0.0.1 only, as a non-root user: as root it
# runs them as `nobody` (PostgreSQL refuses to run as root).
#
#   url=$(bash scripts/test-postgres.sh start DIR)   # DIR: an empty directory
#   bash scripts/test-postgres.sh stop DIR
#
# `start` on a DIR whose cluster was stopped starts it again (no initdb), on
# the same ATREST_TEST_POSTGRES_PORT: what a test restarting the server does.
set -euo pipefail
action="${1:?usage: test-postgres.sh start|stop DIR}"
dir="${2:?usage: test-postgres.sh start|stop DIR}"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "no PostgreSQL server found under /usr/lib/postgresql: apt-get install postgresql" >&2
    exit 1
fi
as_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u nobody -- "$@"
    else
        "$@"
    fi
}
case "$action" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown nobody "$dir"
    port="${ATREST_TEST_POSTGRES_PORT:-55432}"
    if [ ! -d "$dir/data" ]; then
        as_user "$bin/initdb" -D "$dir/data" -U atrest --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start >/dev/null ||
        { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://atrest@127.0.0.1:$port/postgres"
    ;;
stop)
    as_user "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
*)
    echo "usage: test-postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
