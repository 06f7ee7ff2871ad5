#!/usr/bin/env bash
# Backups side by side: `atrest backup` vs restic (Debian) and rustic (when
# installed: `cargo install rustic-rs`), in one run on the shared corpus
# (../shared/anchors/make-corpus.sh): initial backup, a 1%-changed second
# backup (`make-corpus.sh mutate`), a full restore (checked with diff -r),
# repository size and peak RSS of each step. Page cache dropped before each
# timed step; each timed command ends with `sync`.
#
#   bench/backup.sh [WORK_DIR]      (default /var/tmp/atrest-bench-backup)
#
# Env: ATREST (default target/release/atrest, built if missing), CORPUS_DIR
# (a fresh `make-corpus.sh build` output to use, and mutate, instead of
# building one in WORK_DIR), MAX_LOAD
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

rm -rf "$WORK"; mkdir -p "$WORK"
[[ ${KEEP:-0} == 1 ]] || trap 'rm -rf "$WORK"' EXIT
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

# --- per tool: init + commands -------------------------------------------------
PASS=$WORK/pass; echo "bench passphrase" >"$PASS"
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$WORK/restic-repo
"$ATREST" init "$WORK/vault" --passphrase-file "$PASS" --no-recovery-key >/dev/null
A=(--repo "$WORK/atrest-repo" --vault "$WORK/vault" --passphrase-file "$PASS")
"$ATREST" backup init "${A[@]}" >/dev/null
restic init -q
if ((HAVE_RUSTIC)); then rustic -r "$WORK/rustic-repo" --password bench init >/dev/null 2>&1; fi
tools=(atrest restic); ((HAVE_RUSTIC)) && tools+=(rustic)
backup_cmd() {
    case $1 in
    atrest) echo "$ATREST backup run $CORPUS ${A[*]}" ;;
    restic) echo "restic backup -q $CORPUS" ;;
    rustic) echo "rustic -r $WORK/rustic-repo --password bench backup $CORPUS" ;;
    esac
}
restore_cmd() { # restore_cmd TOOL TARGET
    case $1 in
    atrest) echo "$ATREST backup restore latest $2 ${A[*]}" ;;
    restic) echo "restic restore latest -q --target $2" ;;
    rustic) echo "rustic -r $WORK/rustic-repo --password bench restore latest $2" ;;
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
size() { du -sm "$1" | cut -f1; }
{
    echo "# backup benchmark $(date -Is), corpus $(du -sm "$CORPUS" | cut -f1) MiB"
    echo "atrest: $ATREST ($(sha256sum "$ATREST" | cut -c1-12)); $(restic version | head -1)"
    printf '%b' "$LOADS"
    echo
    echo "| tool | backup1 s | backup2 s | restore s | repo MiB | RSS b1 / b2 / restore MiB | backup1 vs restic |"
    echo "|---|---:|---:|---:|---:|---|---:|"
    for t in "${tools[@]}"; do
        repo=$WORK/$t-repo
        echo "| $t | ${SECS[$t.backup1]} | ${SECS[$t.backup2]} | ${SECS[$t.restore]} | $(size "$repo") |" \
            "${RSS[$t.backup1]} / ${RSS[$t.backup2]} / ${RSS[$t.restore]} |" \
            "$(awk -v a="${SECS[$t.backup1]}" -v b="${SECS[restic.backup1]}" 'BEGIN { printf "%.2f", a / b }') |"
    done
} | tee "$OUT"
log "written to $OUT"
