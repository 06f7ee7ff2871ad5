#!/usr/bin/env bash
# Side-by-side benchmark: the atrest key authority (`atrest keyd serve`) vs
# Tang (Debian `tang`, served through socat as its own tests do), on
# 127.0.0.1, in one run.
#
# Rows (each the median over REPS repetitions):
#   releases/s, p50, p99 at concurrency 1, 16, 64
#       keyd: `keyd_load unlock` (crates/keyd/examples/keyd_load.rs): requests
#       signed BEFORE the clock starts (each with its own nonce, round robin
#       over HOSTS enrolled hosts), fired over HTTPS; the server still
#       verifies every signature, spends every nonce, makes the audit entry
#       durable (always on) and computes the answer; every answer must be
#       200 "granted" and SAMPLE of them are unblinded to the host's key.
#       Two modes: keep-alive (what a busy fleet behind a few proxies would
#       see) and a new TLS connection per request (what a booting host does,
#       and how Tang is driven).
#       Tang: the same generator in raw mode POSTs a real blinded /rec/{kid}
#       body (built with jose exactly as clevis-decrypt-tang does), a new
#       connection per request (tangd is one process per connection).
#   10,000 hosts at once: every enrolled host sends one unlock, all started
#       together, each on its own new TLS connection; time until the last
#       answer (target ≤ 5 s).
#   unlock end to end, one at a time (N=E2E_N, median):
#       atrest: `atrest unlock VAULT --mount DIR` through keyd (remote keyslot;
#       process start to mounted; the unmount after it is not timed);
#       `keyd_load once` (process start to unblinded key, no vault, no mount);
#       Tang: `clevis decrypt` of a tang-pinned JWE.
#   keyd memory: VmRSS right after enrolling HOSTS hosts, VmRSS and VmHWM at
#       the end of the run (after the bursts).
# Also: keyd CPU time per release (utime+stime of the keyd process over a
# phase / releases), the generator's own CPU time (it shares the 2 cores),
# and the kernel's listen-queue overflows during the bursts.
# Ratio column: atrest / tang (so > 1 is better for req/s, < 1 for ms).
#
# Needs: tang (/usr/libexec/tangd), socat, jose, clevis, curl, python3, and
# /dev/fuse (root) for the `atrest unlock --mount` row. Installs nothing:
#   apt-get install -y tang socat jose clevis
# Builds `atrest` and the `keyd_load` example in release mode (set
# NO_BUILD=1 to use what is in target/release, or ATREST=/path/atrest and
# KEYD_LOAD=/path/keyd_load to run other builds).
#
# Env: REPS (default 3), HOSTS (default 10000), REQUESTS (per keep-alive
#      phase, default 20000), DURATION (cap per phase in s, default 10),
#      TANG_REQUESTS (default 2000), E2E_N (default 50), SAMPLE (default 200),
#      LOAD_THREADS (generator worker threads, default 2), QUICK=1 (1 rep,
#      2,000 hosts, smaller counts), KEEP_WORK=1, RESULTS_DIR (default
#      bench/results), BENCH_DIR (default /var/tmp).
# Writes RESULTS_DIR/keyd-<date>[-quick].txt (markdown) and prints it.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    REPS=${REPS:-1} HOSTS=${HOSTS:-2000} REQUESTS=${REQUESTS:-5000} DURATION=${DURATION:-5}
    TANG_REQUESTS=${TANG_REQUESTS:-500} E2E_N=${E2E_N:-15}
else
    REPS=${REPS:-3} HOSTS=${HOSTS:-10000} REQUESTS=${REQUESTS:-20000} DURATION=${DURATION:-10}
    TANG_REQUESTS=${TANG_REQUESTS:-2000} E2E_N=${E2E_N:-50}
fi
SAMPLE=${SAMPLE:-200}
LOAD_THREADS=${LOAD_THREADS:-2}
RESULTS_DIR=${RESULTS_DIR:-$REPO_ROOT/bench/results}
CONCURRENCY=(1 16 64)

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

missing=()
[[ -x /usr/libexec/tangd && -x /usr/libexec/tangd-keygen ]] || missing+=(tang)
for t in socat jose clevis curl python3; do command -v "$t" >/dev/null || missing+=("$t"); done
((${#missing[@]} == 0)) ||
    die "missing: ${missing[*]}. Install with: apt-get install -y tang socat jose clevis curl python3"
[[ $(id -u) == 0 && -c /dev/fuse ]] || die "run as root with /dev/fuse (the atrest unlock --mount row mounts a FUSE vault)"

if [[ ${NO_BUILD:-0} != 1 ]]; then
    log "building atrest and keyd_load (release)"
    (cd "$REPO_ROOT" && cargo build --release -q -p atrest &&
        cargo build --release -q -p atrest-keyd --example keyd_load) || die "build failed"
fi
ATREST_BIN=${ATREST:-$REPO_ROOT/target/release/atrest}
LOAD_BIN=${KEYD_LOAD:-$REPO_ROOT/target/release/examples/keyd_load}
for b in "$ATREST_BIN" "$LOAD_BIN"; do [[ -x $b ]] || die "$b missing"; done

BASE=$(mktemp -d "${BENCH_DIR:-/var/tmp}/atrest-keyd-bench.XXXXXX")
# private copies: the shared target dir may be rebuilt while this runs
cp "$ATREST_BIN" "$BASE/atrest"
cp "$LOAD_BIN" "$BASE/keyd_load"
ATREST=$BASE/atrest LOAD=$BASE/keyd_load
ATREST_SHA=$(sha256sum "$ATREST" | cut -c1-12)
KEYD_PID= TANG_PID=
mkdir -p "$BASE/values"

cleanup() {
    set +e
    mountpoint -q "$BASE/mnt" 2>/dev/null && "$ATREST" unmount "$BASE/mnt" >/dev/null 2>&1
    [[ -n $TANG_PID ]] && kill "$TANG_PID" 2>/dev/null
    if [[ -n $KEYD_PID ]]; then
        kill "$KEYD_PID" 2>/dev/null
        wait "$KEYD_PID" 2>/dev/null
    fi
    if [[ ${KEEP_WORK:-0} == 1 ]]; then log "keeping $BASE"; else rm -rf "$BASE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ns() { date +%s%N; }
record() { echo "$3" >>"$BASE/values/$1.$2"; } # record ROW SIDE VALUE
cpu_of() { # utime+stime of PID in seconds
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz }' "/proc/$1/stat"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; } # field NAME RESULT-LINE
listen_drops() { nstat -az TcpExtListenDrops 2>/dev/null | awk '/ListenDrops/ { print $2 }' || echo 0; }
mib() { awk -v k="$(awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status")" 'BEGIN { printf "%.1f", k / 1024 }'; }

# --- keyd ---------------------------------------------------------------------
KEYD_PORT=$(free_port)
KEYD_URL=https://127.0.0.1:$KEYD_PORT
DATA=$BASE/keyd
"$ATREST" keyd init --data-dir "$DATA" --listen "127.0.0.1:$KEYD_PORT" >"$BASE/init.out" 2>&1 ||
    die "keyd init failed: $(cat "$BASE/init.out")"
FINGERPRINT=$("$ATREST" keyd fingerprint --data-dir "$DATA")
# 10,000 simultaneous connections: one descriptor each in keyd and the generator
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$ATREST" keyd serve --data-dir "$DATA" >"$BASE/serve.out" 2>"$BASE/serve.err" &
KEYD_PID=$!
for _ in $(seq 100); do grep -q '^listening on' "$BASE/serve.out" && break; sleep 0.1; done
grep -q '^listening on' "$BASE/serve.out" || die "keyd serve did not start: $(cat "$BASE/serve.err")"
log "keyd: $(head -n1 "$BASE/serve.out"), pid $KEYD_PID"
COMMON=(--url "$KEYD_URL" --ca "$DATA/tls/ca.pem" --threads "$LOAD_THREADS")

log "enrolling $HOSTS hosts (a token each from the admin API, then POST /v1/enroll)"
ENROLL=$("$LOAD" enroll "${COMMON[@]}" --admin-token-file "$DATA/admin.token" --hosts "$HOSTS" \
    --concurrency 64 --state "$BASE/hosts") || die "enrollment failed"
log "  $ENROLL"
sleep 1
RSS_ENROLLED=$(mib VmRSS "$KEYD_PID")
log "  keyd VmRSS with $HOSTS hosts enrolled: $RSS_ENROLLED MiB"

# --- a vault enrolled with keyd, for `atrest unlock --mount` -------------------
export ATREST_STATE_DIR=$BASE/host-state ATREST_BOOT_ID=6f1b9c6e-4a0e-4d3c-9a55-0f6e0a4b2f10
"$ATREST" init "$BASE/vault" --key-file "$BASE/boot.key" --no-recovery-key >/dev/null 2>&1
TOKEN=$("$ATREST" keyd token create --data-dir "$DATA" --group bench --expires 1h 2>/dev/null)
"$ATREST" enroll "$BASE/vault" --authority "$KEYD_URL" --token "$TOKEN" \
    --ca-fingerprint "$FINGERPRINT" --key-file "$BASE/boot.key" --host-name e2e-host >/dev/null 2>&1 ||
    die "atrest enroll failed"
mkdir -p "$BASE/mnt"
echo "atrest keyd bench $RANDOM" >"$BASE/canary"

# --- tang -----------------------------------------------------------------------
TANG_PORT=$(free_port)
TANG_URL=http://127.0.0.1:$TANG_PORT
mkdir "$BASE/tang-db"
/usr/libexec/tangd-keygen "$BASE/tang-db" 2>/dev/null
socat "TCP-LISTEN:$TANG_PORT,reuseaddr,fork,bind=127.0.0.1,backlog=512" \
    EXEC:"/usr/libexec/tangd $BASE/tang-db" 2>"$BASE/tang.err" &
TANG_PID=$!
for _ in $(seq 50); do curl -sf "$TANG_URL/adv" >/dev/null && break; sleep 0.1; done
THP=$(tang-show-keys "$TANG_PORT" | head -n1)
echo -n "atrest bench secret" >"$BASE/pt"
clevis encrypt tang "{\"url\":\"$TANG_URL\",\"thp\":\"$THP\"}" <"$BASE/pt" >"$BASE/ct.jwe" ||
    die "clevis encrypt failed"
[[ $(clevis decrypt <"$BASE/ct.jwe") == "atrest bench secret" ]] || die "clevis decrypt gave the wrong secret"
# the blinded /rec body, as clevis-decrypt-tang builds it
jhd=$(jose b64 dec -i- <<<"$(cut -d. -f1 "$BASE/ct.jwe")")
clt=$(jose fmt -j- -Og epk -Oo- <<<"$jhd")
KID=$(jose fmt -j- -Og kid -Su- <<<"$jhd")
crv=$(jose fmt -j- -Og crv -Su- <<<"$clt")
eph=$(jose jwk gen -i "{\"alg\":\"ECMR\",\"crv\":\"$crv\"}")
jose jwk exc -i '{"alg":"ECMR"}' -l- -r- <<<"$clt$eph" >"$BASE/xfr.json"
curl -sf -X POST -H 'Content-Type: application/jwk+json' --data-binary @"$BASE/xfr.json" \
    "$TANG_URL/rec/$KID" | jose fmt -j- -Og kty -q EC -EUU >/dev/null ||
    die "tang did not answer the blinded /rec request"
log "tang: $TANG_URL (socat pid $TANG_PID), /rec/$KID on $crv"

# --- phases -----------------------------------------------------------------------
run_load() { # run_load OUTFILE ARGS...: the generator, its CPU time appended as cpu=
    local out=$1 t
    shift
    TIMEFORMAT='%U %S'
    { time "$LOAD" "$@" >"$out.stdout" 2>"$out.stderr"; } 2>"$out.time" || return 1
    t=$(awk '{ printf "%.3f", $1 + $2 }' "$out.time")
    sed "s/\$/ client_cpu=$t/" "$out.stdout" >"$out"
}
keyd_phase() { # keyd_phase ROWPREFIX KEEPALIVE C REQUESTS
    local row=$1 ka=$2 c=$3 n=$4 before after line ok
    before=$(cpu_of "$KEYD_PID")
    if ! run_load "$BASE/out" unlock "${COMMON[@]}" --state "$BASE/hosts" --concurrency "$c" \
        --requests "$n" --duration "$DURATION" --sample "$SAMPLE" --keep-alive "$ka" --offset "$OFFSET"; then
        log "  $row c=$c: generator FAILED: $(tail -n 2 "$BASE/out.stderr")"
        record "$row.rps.c$c" keyd FAIL
        return
    fi
    after=$(cpu_of "$KEYD_PID")
    OFFSET=$((OFFSET + n))
    line=$(grep '^RESULT' "$BASE/out")
    echo "$line" >>"$BASE/results.log"
    ok=$(field ok "$line")
    if [[ $(field errors "$line") != 0 ]]; then
        log "  $row c=$c: $(field errors "$line") ERRORS: $line"
        record "$row.rps.c$c" keyd FAIL
        return
    fi
    record "$row.rps.c$c" keyd "$(field per_s "$line")"
    record "$row.p50.c$c" keyd "$(field p50_ms "$line")"
    record "$row.p99.c$c" keyd "$(field p99_ms "$line")"
    record "$row.cpu.c$c" keyd "$(awk -v a="$before" -v b="$after" -v n="$ok" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')"
    record "$row.ccpu.c$c" keyd "$(awk -v t="$(field client_cpu "$line")" -v n="$ok" 'BEGIN { printf "%.1f", t * 1e6 / n }')"
    log "  keyd $row c=$c: $(field per_s "$line")/s p50 $(field p50_ms "$line") ms p99 $(field p99_ms "$line") ms" \
        "(n=$ok, verified $(field verified "$line"), keyd CPU $(awk -v a="$before" -v b="$after" -v n="$ok" 'BEGIN { printf "%.0f", (b - a) * 1e6 / n }') µs/release)"
}
tang_phase() { # tang_phase C
    local c=$1 line
    if ! run_load "$BASE/out" raw --raw-url "$TANG_URL/rec/$KID" --raw-body "$BASE/xfr.json" \
        --content-type application/jwk+json --concurrency "$c" --requests "$TANG_REQUESTS" \
        --duration "$DURATION" --threads "$LOAD_THREADS"; then
        log "  tang c=$c: generator FAILED: $(tail -n 2 "$BASE/out.stderr")"
        record "ka.rps.c$c" tang FAIL
        return
    fi
    line=$(grep '^RESULT' "$BASE/out")
    echo "$line" >>"$BASE/results.log"
    if [[ $(field errors "$line") != 0 ]]; then
        log "  tang c=$c: $(field errors "$line") errors of $(field n "$line"): $(field first_error "$line")"
        record "ka.rps.c$c" tang "FAIL($(field errors "$line")/$(field n "$line"))"
        return
    fi
    for row in ka new; do
        record "$row.rps.c$c" tang "$(field per_s "$line")"
        record "$row.p50.c$c" tang "$(field p50_ms "$line")"
        record "$row.p99.c$c" tang "$(field p99_ms "$line")"
    done
    log "  tang c=$c: $(field per_s "$line")/s p50 $(field p50_ms "$line") ms p99 $(field p99_ms "$line") ms (n=$(field n "$line"))"
}
burst_phase() {
    local before after d0 d1 line
    before=$(cpu_of "$KEYD_PID")
    d0=$(listen_drops)
    if ! run_load "$BASE/out" burst "${COMMON[@]}" --state "$BASE/hosts" --sample "$SAMPLE"; then
        log "  burst: generator FAILED: $(tail -n 2 "$BASE/out.stderr")"
        record burst keyd FAIL
        return
    fi
    after=$(cpu_of "$KEYD_PID")
    d1=$(listen_drops)
    line=$(grep '^RESULT' "$BASE/out")
    echo "$line listen_drops=$((d1 - d0))" >>"$BASE/results.log"
    if [[ $(field errors "$line") != 0 ]]; then
        log "  burst: $(field errors "$line") ERRORS: $line"
        record burst keyd FAIL
        return
    fi
    record burst keyd "$(field secs "$line")"
    record burst.p50 keyd "$(field p50_ms "$line")"
    record burst.drops keyd "$((d1 - d0))"
    record burst.cpu keyd "$(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.2f", b - a }')"
    record burst.ccpu keyd "$(field client_cpu "$line")"
    log "  burst of $HOSTS hosts: all served in $(field secs "$line") s (p50 $(field p50_ms "$line") ms," \
        "keyd CPU $(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.2f", b - a }') s," \
        "generator CPU $(field client_cpu "$line") s, listen-queue drops $((d1 - d0)))"
}
median_ms_of() { sort -g "$1" | awk '{ a[NR] = $1 } END { printf "%.1f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
e2e_phase() {
    local i s e f
    # atrest unlock --mount through keyd; the unmount is not timed
    f=$BASE/e2e.atrest
    : >"$f"
    for ((i = 0; i < E2E_N; i++)); do
        s=$(now_ns)
        "$ATREST" unlock "$BASE/vault" --mount "$BASE/mnt" >/dev/null 2>>"$BASE/e2e.err" || {
            record e2e.atrest keyd FAIL
            log "  atrest unlock FAILED: $(tail -n 2 "$BASE/e2e.err")"
            return
        }
        e=$(now_ns)
        echo $(((e - s) / 1000)) | awk '{ printf "%.3f\n", $1 / 1000 }' >>"$f"
        [[ $i != 0 ]] || cp "$BASE/canary" "$BASE/mnt/canary"
        cmp -s "$BASE/canary" "$BASE/mnt/canary" || { record e2e.atrest keyd FAIL; log "  vault content wrong"; return; }
        "$ATREST" unmount "$BASE/mnt" >/dev/null 2>&1
    done
    record e2e.atrest keyd "$(median_ms_of "$f")"
    f=$BASE/e2e.once
    : >"$f"
    for ((i = 0; i < E2E_N; i++)); do
        s=$(now_ns)
        "$LOAD" once --url "$KEYD_URL" --ca "$DATA/tls/ca.pem" --state "$BASE/hosts" --hosts 1 >/dev/null 2>>"$BASE/e2e.err" ||
            { record e2e.once keyd FAIL; return; }
        e=$(now_ns)
        echo $(((e - s) / 1000)) | awk '{ printf "%.3f\n", $1 / 1000 }' >>"$f"
    done
    record e2e.once keyd "$(median_ms_of "$f")"
    f=$BASE/e2e.clevis
    : >"$f"
    for ((i = 0; i < E2E_N; i++)); do
        s=$(now_ns)
        clevis decrypt <"$BASE/ct.jwe" >/dev/null 2>>"$BASE/e2e.err" || { record e2e.clevis tang FAIL; return; }
        e=$(now_ns)
        echo $(((e - s) / 1000)) | awk '{ printf "%.3f\n", $1 / 1000 }' >>"$f"
    done
    record e2e.clevis tang "$(median_ms_of "$f")"
    log "  unlock one at a time (median of $E2E_N): atrest unlock --mount $(tail -n1 "$BASE/values/e2e.atrest.keyd") ms," \
        "keyd_load once $(tail -n1 "$BASE/values/e2e.once.keyd") ms, clevis decrypt $(tail -n1 "$BASE/values/e2e.clevis.tang") ms"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
OTHERS_START=$(pgrep -c -x 'cargo|rustc' || true)
T0=$SECONDS
LOADS=()
OFFSET=0
for ((rep = 1; rep <= REPS; rep++)); do
    log "repetition $rep/$REPS (load average $(cut -d' ' -f1-3 /proc/loadavg); cargo/rustc processes of others: $(pgrep -c -x 'cargo|rustc' || true))"
    LOADS+=("$(cut -d' ' -f1 /proc/loadavg)")
    for c in "${CONCURRENCY[@]}"; do keyd_phase ka 1 "$c" "$REQUESTS"; done
    for c in "${CONCURRENCY[@]}"; do keyd_phase new 0 "$c" $((REQUESTS / 4)); done
    burst_phase
    for c in "${CONCURRENCY[@]}"; do tang_phase "$c"; done
    e2e_phase
done
RUNTIME=$((SECONDS - T0))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
RSS_END=$(mib VmRSS "$KEYD_PID")
HWM_END=$(mib VmHWM "$KEYD_PID")
KEYD_ALIVE=yes
kill -0 "$KEYD_PID" 2>/dev/null || KEYD_ALIVE="NO (keyd died)"
kill "$KEYD_PID"
wait "$KEYD_PID" 2>/dev/null || true
KEYD_PID=
VERIFY=$("$ATREST" keyd audit verify --data-dir "$DATA" 2>&1) && VERIFY="passes: $(tail -n1 <<<"$VERIFY")" ||
    VERIFY="FAILS (exit $?): $(tail -n2 <<<"$VERIFY")"

# --- report -----------------------------------------------------------------------
median() { # of the numbers in a file; FAIL if any run failed
    [[ -s $1 ]] || { echo "n/a"; return; }
    grep -q FAIL "$1" && { echo FAIL; return; }
    sort -g "$1" | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
num() { [[ $1 =~ ^[0-9.]+$ ]]; }
fmt() { # fmt UNIT VALUE
    num "$2" || { echo "$2"; return; }
    case $1 in /s) printf '%.0f' "$2" ;; ms) printf '%.2f' "$2" ;; *) printf '%.1f' "$2" ;; esac
}
ratio() { num "$1" && num "$2" && awk -v a="$1" -v t="$2" 'BEGIN { printf (t > 0) ? "%.2f" : "–", a / t }' || echo "–"; }
verdict() { # verdict VALUE OP TARGET
    num "$1" || { echo "–"; return; }
    awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN { ok = (op == "<=") ? v <= t : v >= t; print ok ? "met" : "**missed**" }'
}
row() { # row LABEL UNIT ATREST TANG TARGET-TEXT VERDICT
    echo "| $1 | $(fmt "$2" "$3") | $(fmt "$2" "$4") | $2 | $(ratio "$3" "$4") | $5 | $6 |"
}
vals() { paste -sd, "$BASE/values/$1" 2>/dev/null || echo "–"; }
GIT_REV=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO_ROOT" diff --quiet HEAD -- crates 2>/dev/null || GIT_REV="$GIT_REV (crates/ modified in the work tree)"
mkdir -p "$RESULTS_DIR"
SUFFIX=
[[ $QUICK != 1 ]] || SUFFIX=-quick
OUT=$RESULTS_DIR/keyd-$(date +%F)$SUFFIX.txt
[[ ! -e $OUT ]] || OUT=${OUT%.txt}-$(date +%H%M%S).txt
m() { median "$BASE/values/$1"; }
{
    echo "# atrest keyd vs Tang — $(date '+%F %T %Z')${SUFFIX:+ (QUICK)}"
    echo
    echo "- atrest: $("$ATREST" --version 2>/dev/null), git $GIT_REV, binary sha256 $ATREST_SHA…; keyd on $KEYD_URL" \
        "(HTTPS, rustls, its own CA; durable audit log, SQLite WAL synchronous=FULL); $HOSTS hosts enrolled" \
        "(${ENROLL#RESULT kind=enroll })"
    echo "- tang: $(dpkg-query -W -f='${Version}' tang 2>/dev/null) through socat (fork + exec per connection, backlog 512)," \
        "plain HTTP; clevis $(dpkg-query -W -f='${Version}' clevis 2>/dev/null), jose $(dpkg-query -W -f='${Version}' jose 2>/dev/null)"
    echo "- generator: keyd_load (crates/keyd/examples), $LOAD_THREADS worker threads, on the same machine (it shares the CPUs);" \
        "keep-alive phases $REQUESTS requests, new-connection phases $((REQUESTS / 4)), Tang $TANG_REQUESTS, each capped at $DURATION s;" \
        "$SAMPLE answers per phase unblinded and checked against the host's key"
    echo "- machine: kernel $(uname -r), $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM"
    echo "- repetitions: $REPS (medians), run time $((RUNTIME / 60)) min $((RUNTIME % 60)) s; load average at the start $LOAD_START" \
        "(cargo/rustc processes of others: $OTHERS_START), at each repetition ${LOADS[*]}, at the end $LOAD_END"
    echo
    echo "| row | atrest keyd | tang | unit | atrest/tang | target | |"
    echo "|---|---:|---:|---|---:|---|---|"
    for c in "${CONCURRENCY[@]}"; do
        tgt= v=
        if [[ $c == 64 ]]; then tgt="≥ 5,000/s" v=$(verdict "$(m ka.rps.c64.keyd)" '>=' 5000); fi
        row "releases/s, c=$c, keep-alive (tang: new connection)" /s "$(m ka.rps.c$c.keyd)" "$(m ka.rps.c$c.tang)" "$tgt" "$v"
        row "  p50, c=$c" ms "$(m ka.p50.c$c.keyd)" "$(m ka.p50.c$c.tang)" "" ""
        tgt= v=
        if [[ $c == 64 ]]; then tgt="≤ 10 ms" v=$(verdict "$(m ka.p99.c64.keyd)" '<=' 10); fi
        row "  p99, c=$c" ms "$(m ka.p99.c$c.keyd)" "$(m ka.p99.c$c.tang)" "$tgt" "$v"
    done
    for c in "${CONCURRENCY[@]}"; do
        row "releases/s, c=$c, new TLS connection per request" /s "$(m new.rps.c$c.keyd)" "$(m new.rps.c$c.tang)" "" ""
        row "  p50, c=$c" ms "$(m new.p50.c$c.keyd)" "$(m new.p50.c$c.tang)" "" ""
        row "  p99, c=$c" ms "$(m new.p99.c$c.keyd)" "$(m new.p99.c$c.tang)" "" ""
    done
    row "$HOSTS hosts at once, new connection each: last answer after" s "$(m burst.keyd)" "" "≤ 5 s" "$(verdict "$(m burst.keyd)" '<=' 5)"
    row "unlock one at a time: atrest unlock --mount vs clevis decrypt (median of $E2E_N)" ms \
        "$(m e2e.atrest.keyd)" "$(m e2e.clevis.tang)" "≤ 50 ms" "$(verdict "$(m e2e.atrest.keyd)" '<=' 50)"
    row "  keyd_load once (process start to unblinded key, no mount) vs clevis decrypt" ms \
        "$(m e2e.once.keyd)" "$(m e2e.clevis.tang)" "" ""
    row "keyd VmRSS, $HOSTS hosts enrolled (before load)" MiB "$RSS_ENROLLED" "" "≤ 200 MiB" "$(verdict "$RSS_ENROLLED" '<=' 200)"
    row "keyd VmRSS / VmHWM at the end (after the bursts)" MiB "$RSS_END / $HWM_END" "" "≤ 200 MiB" "$(verdict "$HWM_END" '<=' 200)"
    echo
    echo "keyd alive at the end: $KEYD_ALIVE; \`atrest keyd audit verify\` after the run: $VERIFY"
    echo
    echo "Where the CPU goes (medians; the generator runs on the same 2 CPUs):"
    echo
    echo "| phase | keyd CPU µs/release | generator CPU µs/request |"
    echo "|---|---:|---:|"
    for c in "${CONCURRENCY[@]}"; do
        echo "| keep-alive c=$c | $(m ka.cpu.c$c.keyd) | $(m ka.ccpu.c$c.keyd) |"
    done
    for c in "${CONCURRENCY[@]}"; do
        echo "| new connection c=$c | $(m new.cpu.c$c.keyd) | $(m new.ccpu.c$c.keyd) |"
    done
    echo "| $HOSTS at once (whole burst, s) | $(m burst.cpu.keyd) s | $(m burst.ccpu.keyd) s |"
    echo
    echo "Burst: median p50 $(m burst.p50.keyd) ms; kernel listen-queue drops (TcpExtListenDrops) per burst: $(vals burst.drops.keyd)"
    echo
    echo "All values per repetition (keyd / tang):"
    echo
    for f in "$BASE"/values/*.keyd; do
        k=$(basename "$f" .keyd)
        printf -- '- %s: %s / %s\n' "$k" "$(vals "$k.keyd")" "$(vals "$k.tang")"
    done
    for f in "$BASE"/values/*.tang; do
        k=$(basename "$f" .tang)
        [[ -e $BASE/values/$k.keyd ]] || printf -- '- %s: – / %s\n' "$k" "$(vals "$k.tang")"
    done
    echo
    echo "Raw generator lines:"
    echo
    sed 's/^/    /' "$BASE/results.log"
} >"$OUT"
cat "$OUT"
log "report written to $OUT"
! grep -qs FAIL "$BASE"/values/*.keyd && [[ $KEYD_ALIVE == yes && $VERIFY == passes* ]]
