#!/usr/bin/env bash
# Backups side by side: `atrest backup` vs restic (Debian) and rustic (when
# installed: `cargo install rustic-rs`), in one run on the shared corpus
# (../shared/anchors/make-corpus.sh): initial backup, a 1%-changed second
# backup (`make-corpus.sh mutate`), a full restore (checked with diff -r),
# repository size and peak RSS of each step. Page cache dropped before each
# timed step; each timed command ends with `sync`.
#
# S3 rows (issue 11: "one row against the local S3 server"): atrest, and
# restic 0.14 (its s3 backend, path-style on an IP endpoint), each into its
# own prefix of one bucket on moto's S3 server, which the script starts on
# 127.0.0.1:$MOTO_PORT and stops at the end. Credentials and endpoint go
# through the environment both tools document (AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL for atrest; restic
# takes the endpoint in its repository URL). moto keeps every object in its
# own memory (about the repository's size; its RSS is not in the table) and
# answers from one Python process: these rows measure atrest against restic
# over HTTP to a slow local server, not what a real S3 store would give.
#
#   bench/backup.sh [WORK_DIR]      (default /var/tmp/atrest-bench-backup)
#
# Env: ATREST (default target/release/atrest, built if missing), CORPUS_DIR
# (a fresh `make-corpus.sh build` output to use, and mutate, instead of
# building one in WORK_DIR), MOTO (moto_server for the S3 rows, default
# /opt/moto/bin/moto_server; S3=0 leaves the S3 rows out), MOTO_PORT (a free
# port if unset), MAX_LOAD
# (0.5: each tool's first step waits for the 1-minute load average below
# it; the loads are recorded), KEEP=1 keeps WORK_DIR. Prints a table and
# writes bench/results/backup-<date>.txt.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-/var/tmp/atrest-bench-backup}
CORPUS_SH=${CORPUS_SH:-$REPO_ROOT/../shared/anchors/make-corpus.sh}
ATREST=${ATREST:-$REPO_ROOT/target/release/atrest}
MAX_LOAD=${MAX_LOAD:-0.5}
OUT=$REPO_ROOT/bench/results/backup-$(date +%F-%H%M).txt
log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $CORPUS_SH ]] || die "corpus script $CORPUS_SH not found"
command -v restic >/dev/null || { log "installing restic"; apt-get install -y -qq restic >/dev/null; }
[[ -x $ATREST ]] || (cd "$REPO_ROOT" && cargo build --release -q -p atrest) || die "build failed"
HAVE_RUSTIC=0; command -v rustic >/dev/null && HAVE_RUSTIC=1

HAVE_S3=${S3:-1}
MOTO=${MOTO:-/opt/moto/bin/moto_server}
((HAVE_S3 == 0)) || [[ -x $MOTO ]] ||
    die "no moto_server at $MOTO for the S3 rows: python3 -m venv /opt/moto && /opt/moto/bin/pip install 'moto[server]' (or S3=0)"

rm -rf "$WORK"; mkdir -p "$WORK"
MOTO_PID=
cleanup() {
    if [[ -n $MOTO_PID ]]; then kill "$MOTO_PID" 2>/dev/null; wait "$MOTO_PID" 2>/dev/null || true; fi
    [[ ${KEEP:-0} == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT
if [[ -n ${CORPUS_DIR:-} ]]; then
    # A corpus built beforehand (make-corpus.sh build DIR); it is mutated.
    CORPUS=$CORPUS_DIR
else
    CORPUS=$WORK/corpus
    log "building the corpus"
    bash "$CORPUS_SH" build "$CORPUS" >/dev/null
fi

wait_idle() {
    until awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v m="$MAX_LOAD" 'BEGIN { exit !(l < m) }'; do sleep 10; done
}
# timed NAME CMD...: drop caches, run, sync; records seconds and peak RSS (KiB).
declare -A SECS RSS
timed() {
    local name=$1; shift
    sync; echo 3 >/proc/sys/vm/drop_caches
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" ||
        die "$name failed: $(tail -3 "$WORK/$name.err")"
    local t0; t0=$(date +%s.%N); sync; local t1; t1=$(date +%s.%N)
    read -r secs rss <"$WORK/time"
    SECS[$name]=$(awk -v a="$secs" -v b="$t0" -v c="$t1" 'BEGIN { printf "%.2f", a + (c - b) }')
    RSS[$name]=$((rss / 1024))
    log "  $name: ${SECS[$name]} s, peak RSS ${RSS[$name]} MiB"
}

if ((HAVE_S3)); then
    MOTO_PORT=${MOTO_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    S3_URL=http://127.0.0.1:$MOTO_PORT
    "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
    MOTO_PID=$!
    for _ in $(seq 300); do curl -s -o /dev/null "$S3_URL" && break; sleep 0.1; done
    curl -sf -X PUT "$S3_URL/bench" >/dev/null || die "moto_server on $S3_URL did not start: $(tail -3 "$WORK/moto.log")"
    export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_ENDPOINT_URL=$S3_URL
fi
# s3_size PREFIX: MiB of the objects under bench/PREFIX (moto takes unsigned requests).
s3_size() {
    python3 - "$S3_URL" "$1" <<'PY'
import sys, urllib.parse, urllib.request, xml.etree.ElementTree as ET
url, prefix = sys.argv[1], sys.argv[2]
ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
total, token = 0, None
while True:
    q = {"list-type": "2", "prefix": prefix + "/"}
    if token:
        q["continuation-token"] = token
    root = ET.parse(urllib.request.urlopen(f"{url}/bench?{urllib.parse.urlencode(q)}")).getroot()
    total += sum(int(e.text) for e in root.iter(ns + "Size"))
    token = root.findtext(ns + "NextContinuationToken")
    if not token:
        break
print(-(-total // (1 << 20)))
PY
}

# --- per tool: init + commands -------------------------------------------------
PASS=$WORK/pass; echo "bench passphrase" >"$PASS"
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$WORK/restic-repo
"$ATREST" init "$WORK/vault" --passphrase-file "$PASS" --no-recovery-key >/dev/null
A=(--repo "$WORK/atrest-repo" --vault "$WORK/vault" --passphrase-file "$PASS")
"$ATREST" backup init "${A[@]}" >/dev/null
restic init -q
if ((HAVE_RUSTIC)); then rustic -r "$WORK/rustic-repo" --password bench init >/dev/null 2>&1; fi
tools=(atrest restic); ((HAVE_RUSTIC)) && tools+=(rustic)
if ((HAVE_S3)); then
    AS3=(--repo s3://bench/atrest --vault "$WORK/vault" --passphrase-file "$PASS")
    RS3=(-r "s3:$S3_URL/bench/restic")
    "$ATREST" backup init "${AS3[@]}" >/dev/null
    restic "${RS3[@]}" init -q
    tools+=(atrest-s3 restic-s3)
fi
backup_cmd() {
    case $1 in
    atrest) echo "$ATREST backup run $CORPUS ${A[*]}" ;;
    restic) echo "restic backup -q $CORPUS" ;;
    rustic) echo "rustic -r $WORK/rustic-repo --password bench backup $CORPUS" ;;
    atrest-s3) echo "$ATREST backup run $CORPUS ${AS3[*]}" ;;
    restic-s3) echo "restic ${RS3[*]} backup -q $CORPUS" ;;
    esac
}
restore_cmd() { # restore_cmd TOOL TARGET
    case $1 in
    atrest) echo "$ATREST backup restore latest $2 ${A[*]}" ;;
    restic) echo "restic restore latest -q --target $2" ;;
    rustic) echo "rustic -r $WORK/rustic-repo --password bench restore latest $2" ;;
    atrest-s3) echo "$ATREST backup restore latest $2 ${AS3[*]}" ;;
    restic-s3) echo "restic ${RS3[*]} restore latest -q --target $2" ;;
    esac
}

LOADS=""
for t in "${tools[@]}"; do
    wait_idle; LOADS+="$t backup1 start: $(cut -d' ' -f1-3 /proc/loadavg)\n"
    # shellcheck disable=SC2046
    timed "$t.backup1" $(backup_cmd "$t")
done
bash "$CORPUS_SH" mutate "$CORPUS" >/dev/null
for t in "${tools[@]}"; do
    wait_idle; LOADS+="$t backup2 start: $(cut -d' ' -f1-3 /proc/loadavg)\n"
    # shellcheck disable=SC2046
    timed "$t.backup2" $(backup_cmd "$t")
done
for t in "${tools[@]}"; do
    rm -rf "$WORK/restore"; mkdir -p "$WORK/restore"
    wait_idle; LOADS+="$t restore start: $(cut -d' ' -f1-3 /proc/loadavg)\n"
    # shellcheck disable=SC2046
    timed "$t.restore" $(restore_cmd "$t" "$WORK/restore")
    diff -rq --no-dereference "$CORPUS" "$WORK/restore$CORPUS" >/dev/null ||
        die "$t: the restored tree differs from the corpus"
done
size() { # size TOOL
    case $1 in
    *-s3) s3_size "${1%-s3}" ;;
    *) du -sm "$WORK/$1-repo" | cut -f1 ;;
    esac
}
{
    echo "# backup benchmark $(date -Is), corpus $(du -sm "$CORPUS" | cut -f1) MiB"
    echo "atrest: $ATREST ($(sha256sum "$ATREST" | cut -c1-12)); $(restic version | head -1)"
    printf '%b' "$LOADS"
    echo
    echo "| tool | backup1 s | backup2 s | restore s | repo MiB | RSS b1 / b2 / restore MiB | backup1 vs restic (S3 rows: restic-s3) |"
    echo "|---|---:|---:|---:|---:|---|---:|"
    for t in "${tools[@]}"; do
        # S3 rows against restic on S3.
        ref=restic; [[ $t == *-s3 ]] && ref=restic-s3
        echo "| $t | ${SECS[$t.backup1]} | ${SECS[$t.backup2]} | ${SECS[$t.restore]} | $(size "$t") |" \
            "${RSS[$t.backup1]} / ${RSS[$t.backup2]} / ${RSS[$t.restore]} |" \
            "$(awk -v a="${SECS[$t.backup1]}" -v b="${SECS[$ref.backup1]}" 'BEGIN { printf "%.2f", a / b }') |"
    done
} | tee "$OUT"
log "written to $OUT"
