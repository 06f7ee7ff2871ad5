#!/usr/bin/env bash
# Load-independent counts of what starting `atrest` costs: instructions
# (valgrind's callgrind, exact) and minor page faults (/usr/bin/time, median
# of 3), for two builds side by side (A = before a change, B = after it).
# Counts, not times: valid on a busy machine.
#
#   bench/cli-start-counts.sh A_ATREST B_ATREST
#
# Per build:
#   `atrest --version` and `atrest status --help`;
#   `atrest unlock VAULT --mount DIR --key-file KEY` of a format 1 FUSE
#     vault opened by a key file (no key authority, no Argon2: the start,
#     the unlock and the hand-over to the mount process), the CLI process
#     alone (the mount process it starts outlives it and is not counted);
#   the mount process's start: `atrest mount VAULT DIR --master-key-stdin
#     --threads 4 --cache-seconds 1`, as the CLI starts it, with an empty
#     stdin: it parses, checks the vault, the mount point and /dev/fuse,
#     and stops where it would read the key.
# Needs root and /dev/fuse. Raw callgrind files in OUT_DIR (default
# /tmp/cli-start-counts-XXXX).
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
A=$(realpath "$1") B=$(realpath "$2")
OUT=${OUT_DIR:-$(mktemp -d /tmp/cli-start-counts-XXXX)}
mkdir -p "$OUT"
[[ $(id -u) == 0 && -c /dev/fuse ]] || { echo "run as root with /dev/fuse" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 2; }

work=$(mktemp -d /tmp/cli-start-counts-run-XXXX)
cleanup() {
    for m in "$work"/*/mnt; do
        mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" || umount -l "$m"; }
    done
    rm -rf "$work"
}
trap cleanup EXIT
export ATREST_STATE_DIR=$work/state ATREST_RUN_DIR=$work/run

# Total instructions (Ir) of a callgrind output file.
callgrind_ir() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }

# instructions FILE CMD...: callgrind's total for one run of CMD (its exit
# status ignored: the mount process's start ends in an error by design).
instructions() {
    local file=$1
    shift
    valgrind --tool=callgrind --callgrind-out-file="$file" "$@" \
        </dev/null >/dev/null 2>"$file.err" || true
    callgrind_ir "$file"
}

# faults CMD...: minor page faults of one run of CMD.
faults() {
    /usr/bin/time -f %R -o "$work/time" "$@" </dev/null >/dev/null 2>&1 || true
    tail -n 1 "$work/time"
}

# after_mount ATREST MNT: waits for the mount, then unmounts it (`atrest
# unmount` waits for the mount process to finish).
after_mount() {
    local i
    for i in $(seq 100); do mountpoint -q "$2" && break; sleep 0.05; done
    mountpoint -q "$2" || { echo "no mount at $2 (see $OUT/*.err)" >&2; exit 1; }
    "$1" unmount "$2" >/dev/null 2>&1
}

declare -A R
side() { # side ATREST LABEL
    local atrest=$1 label=$2 d=$work/$2 f i
    mkdir -p "$d/mnt"
    head -c 32 /dev/urandom >"$d/key"
    "$atrest" init "$d/vault" --key-file "$d/key" --no-recovery-key >/dev/null 2>&1
    local unlock=("$atrest" unlock "$d/vault" --mount "$d/mnt" --key-file "$d/key")
    local child=("$atrest" mount "$d/vault" "$d/mnt" --master-key-stdin --threads 4 --cache-seconds 1)

    R[$label.version.ir]=$(instructions "$OUT/$label.version.callgrind" "$atrest" --version)
    R[$label.help.ir]=$(instructions "$OUT/$label.status-help.callgrind" "$atrest" status --help)
    R[$label.unlock.ir]=$(instructions "$OUT/$label.unlock.callgrind" "${unlock[@]}")
    after_mount "$atrest" "$d/mnt"
    R[$label.child.ir]=$(instructions "$OUT/$label.child.callgrind" "${child[@]}")

    local v=() h=() u=() c=()
    for i in 1 2 3; do
        v+=("$(faults "$atrest" --version)")
        h+=("$(faults "$atrest" status --help)")
        u+=("$(faults "${unlock[@]}")")
        after_mount "$atrest" "$d/mnt"
        c+=("$(faults "${child[@]}")")
    done
    median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
    R[$label.version.pf]=$(median "${v[@]}")
    R[$label.help.pf]=$(median "${h[@]}")
    R[$label.unlock.pf]=$(median "${u[@]}")
    R[$label.child.pf]=$(median "${c[@]}")
}

side "$A" A
side "$B" B

row() { # row TITLE KEY
    local a=${R[A.$2]} b=${R[B.$2]}
    printf '| %s | %s | %s | %+d |\n' "$1" "$a" "$b" $((b - a))
}
echo "| item | A | B | B-A |"
echo "|---|---:|---:|---:|"
row '`atrest --version`: instructions' version.ir
row '`atrest status --help`: instructions' help.ir
row '`atrest unlock --mount --key-file`, the CLI process: instructions' unlock.ir
row 'the mount process, up to reading the key: instructions' child.ir
row '`atrest --version`: page faults' version.pf
row '`atrest status --help`: page faults' help.pf
row '`atrest unlock --mount --key-file`, the CLI process: page faults' unlock.pf
row 'the mount process, up to reading the key: page faults' child.pf
echo "raw output: $OUT"
