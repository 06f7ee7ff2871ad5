#!/usr/bin/env bash
# POSIX conformance: the vendored pjdfstest suite (tests/conformance/
# pjdfstest, 238 files, ~8,800 checks: chmod, chown, link, mkdir, mkfifo,
# mknod, open, rename, rmdir, symlink, truncate, unlink, utimensat, with
# other users' permissions) on a mounted vault (allow_other, as a service
# would mount it) and, at the same time, on a fresh ext4 file system on a
# loop device: the host's own behaviour. Compared file by file: a test file
# that passes on ext4 and fails on the vault fails this workload; one that
# fails on both is reported (a difference of the host, not of atrest).
# Then unmount and `atrest fsck`.
#
# Env: ATREST, WORKLOAD_TMPDIR, KEEP_WORK=1 (as the other workloads);
#      PJD_FORMAT (vault format to test: 1, the default, or 2);
#      PJD_TESTS (space-separated subset of test directories, e.g. "rename
#      chmod"; default: all).
set -euo pipefail

NAME=pjdfstest
# shellcheck source=tests/workloads/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_pkgs fuse3 e2fsprogs perl gcc libc6-dev

SUITE=$REPO_ROOT/tests/conformance/pjdfstest
EXT4_IMG=
EXT4_MNT=
cleanup_hook() {
    if [[ -n $EXT4_MNT ]] && grep -qF " $EXT4_MNT " /proc/self/mountinfo; then
        umount "$EXT4_MNT" || umount -l "$EXT4_MNT" || true
    fi
}

workload_start

# The suite runs from a private copy: it expects its binary beside tests/.
cp -r "$SUITE" "$WORK/pjd"
cc -O2 -D_GNU_SOURCE -I"$WORK/pjd" -o "$WORK/pjd/pjdfstest" "$WORK/pjd/pjdfstest.c"
pass "pjdfstest builds"

format_args=()
[[ ${PJD_FORMAT:-1} == 2 ]] && format_args=(--format 2)
"$ATREST" init "$VAULT" --passphrase-file "$PASS_FILE" --no-recovery-key \
    --argon2-memory 8 --argon2-iterations 1 "${format_args[@]}" >/dev/null
do_mount -o allow_other,suid,dev
# ext4's root is 0755 after mkfs; a vault's mount root starts 0700 (its
# owner only) and is opened up through the mount, as an operator would.
chmod 0755 "$MNT"

EXT4_IMG=$WORK/ext4.img
EXT4_MNT=$WORK/ext4
mkdir -p "$EXT4_MNT"
truncate -s 1G "$EXT4_IMG"
mkfs.ext4 -q -F "$EXT4_IMG"
mount -o loop "$EXT4_IMG" "$EXT4_MNT"

# run_suite DIR OUT: one line per test file, "<file> ok" or "<file> FAIL".
run_suite() {
    local dir=$1 out=$2 t
    : >"$out"
    for t in "${FILES[@]}"; do
        if (cd "$dir" && timeout 300 prove -Q "$WORK/pjd/tests/$t" >"$out.$$.log" 2>&1); then
            echo "$t ok" >>"$out"
        else
            echo "$t FAIL" >>"$out"
            { echo "--- $t"; cat "$out.$$.log"; } >>"$out.failures"
        fi
    done
    rm -f "$out.$$.log"
}

mapfile -t FILES < <(cd "$WORK/pjd/tests" && find ${PJD_TESTS:-.} -name '*.t' | sed 's|^\./||' | sort)
echo "running ${#FILES[@]} test files on the vault (format ${PJD_FORMAT:-1}) and on ext4"
t0=$SECONDS
run_suite "$EXT4_MNT" "$WORK/ext4.results" &
ext4_pid=$!
run_suite "$MNT" "$WORK/vault.results"
wait "$ext4_pid"
echo "both runs took $((SECONDS - t0)) s"

vault_ok=$(grep -c ' ok$' "$WORK/vault.results" || true)
ext4_ok=$(grep -c ' ok$' "$WORK/ext4.results" || true)
echo "test files passing: vault $vault_ok / ${#FILES[@]}, ext4 $ext4_ok / ${#FILES[@]}"
worse=$(join <(sort "$WORK/ext4.results") <(sort "$WORK/vault.results") | awk '$2 == "ok" && $3 != "ok" { print $1 }')
both=$(join <(sort "$WORK/ext4.results") <(sort "$WORK/vault.results") | awk '$2 != "ok" && $3 != "ok" { print $1 }')
[[ -z $both ]] || echo "failing on ext4 too (the host's behaviour): $both"
if [[ -z $worse ]]; then
    pass "every pjdfstest file that passes on ext4 passes on the vault"
else
    for t in $worse; do
        fail "pjdfstest $t" "passes on ext4, fails on the vault"
    done
    [[ -f $WORK/vault.results.failures ]] && cat "$WORK/vault.results.failures"
fi
[[ $(wc -l <"$WORK/vault.results") -eq ${#FILES[@]} ]] || fail "every test file ran"

check_alive "pjdfstest"
force_unmount "$MNT"
run_fsck
