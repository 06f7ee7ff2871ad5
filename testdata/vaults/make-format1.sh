#!/usr/bin/env bash
# Makes the format 1 fixtures (docs/format.md §16.21, "testdata/vaults/"):
# format1-small (every kind of entry a format 1 vault holds, no xattrs: the
# full round trip of `atrest migrate`) and format1-xattrs (the same with
# user xattrs, which `atrest migrate` refuses until format 2 has xattrs).
# Each is made through a real mount of the atrest built from this tree,
# then archived with tar (owners, modes, nanosecond times, hard links,
# device nodes, FIFOs, holes, xattrs: what git cannot keep), beside its
# passphrase and the `manifest` of what the mount shows (manifest.py).
#
# Run as root from the repository: bash testdata/vaults/make-format1.sh
# (ATREST=path/to/atrest to choose the binary). The fixtures are kept
# forever: regenerate only on purpose, never because a test fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
atrest=${ATREST:-$here/../../target/debug/atrest}
[ "$(id -u)" = 0 ] || { echo "make-format1.sh: run as root (owners, device nodes)" >&2; exit 1; }
[ -x "$atrest" ] || { echo "make-format1.sh: build atrest first (cargo build -p atrest)" >&2; exit 1; }

populate() {
    local m=$1
    # Times are set last, deepest first, so nothing touches them after.
    mkdir -p "$m/docs/deep/er" "$m/srv/empty-dir"
    printf 'hello, format 1\n' > "$m/docs/hello.txt"
    : > "$m/empty"
    head -c 4096 /dev/urandom > "$m/docs/one-block"
    head -c 4097 /dev/urandom > "$m/docs/one-block-and-a-byte"
    head -c 100000 /dev/urandom > "$m/srv/hundred-k"
    # Holes: a hole between data, a file that is nothing but a hole, a
    # file ending in a hole.
    truncate -s 1048576 "$m/srv/sparse"
    printf 'in the middle' | dd of="$m/srv/sparse" bs=1 seek=500000 conv=notrunc status=none
    truncate -s 20000 "$m/srv/all-hole"
    printf 'head' > "$m/srv/tail-hole"
    truncate -s 70000 "$m/srv/tail-hole"
    # Names: long (hashed, §7.2), the longest, UTF-8 and odd bytes.
    local long255 long200
    long200=$(printf 'n%.0s' $(seq 200))
    long255=$(printf 'd%.0s' $(seq 255))
    printf 'a long name\n' > "$m/docs/$long200"
    mkdir "$m/$long255"
    printf 'inside\n' > "$m/$long255/file"
    printf 'ü\n' > "$m/docs/späce and ünïcode"
    printf 'tab\n' > "$m/docs/$(printf 'tab\there')"
    # Hard links: three names in three directories.
    ln "$m/docs/hello.txt" "$m/docs/deep/hello-link"
    ln "$m/docs/hello.txt" "$m/srv/hello-link-2"
    # Symlinks: short, to a directory, dangling, long (side file, §8).
    ln -s hello.txt "$m/docs/link"
    ln -s ../srv "$m/docs/dir-link"
    ln -s /nowhere/at/all "$m/srv/dangling"
    ln -s "$(printf 'x/%.0s' $(seq 1750))target" "$m/docs/long-link"
    ln -P "$m/docs/link" "$m/srv/link-hard-linked"
    # Special files.
    mkfifo "$m/srv/fifo"
    mknod "$m/srv/null" c 1 3
    mknod "$m/srv/loop" b 7 0
    # Modes and owners.
    chmod 4755 "$m/srv/hundred-k"
    chmod 2750 "$m/docs/deep"
    chmod 1777 "$m/srv/empty-dir"
    chmod 0600 "$m/docs/one-block"
    chmod 0640 "$m/srv/fifo"
    chown 1234:5678 "$m/docs/hello.txt" "$m/srv/null" "$m/docs/deep/er"
    chown -h 4321:8765 "$m/docs/link"
    chown 0:100 "$m/srv"
    local t=1600000000
    find "$m" -mindepth 1 -depth -print0 | while IFS= read -r -d '' p; do
        t=$((t + 7))
        touch -h -d "@$t.123456789" "$p"
    done
}

make() {
    local name=$1 xattrs=$2
    local work
    work=$(mktemp -d)
    trap 'umount -l "$work/mnt" 2>/dev/null || true; rm -rf "$work"' RETURN
    mkdir -p "$here/$name" "$work/mnt"
    printf 'format 1 fixture passphrase\n' > "$here/$name/passphrase"
    "$atrest" init "$work/vault" --passphrase-file "$here/$name/passphrase" \
        --no-recovery-key --argon2-memory 8 --argon2-iterations 1 > /dev/null
    "$atrest" mount "$work/vault" "$work/mnt" --passphrase-file "$here/$name/passphrase"
    populate "$work/mnt"
    if [ "$xattrs" = yes ]; then
        python3 - "$work/mnt" <<'PY'
import os, sys
m = sys.argv[1]
os.setxattr(m + "/docs/hello.txt", "user.comment", b"a format 1 xattr")
os.setxattr(m + "/srv", "user.mime", b"inode/directory")
# setxattr changes ctime only: mtimes stay as populate set them.
PY
    fi
    python3 "$here/manifest.py" "$work/mnt" > "$here/$name/manifest"
    "$atrest" unmount "$work/mnt"
    tar --create --format=posix --xattrs --xattrs-include='*' --numeric-owner --sparse \
        --pax-option=delete=atime,delete=ctime --sort=name \
        -f "$here/$name/vault.tar" -C "$work" vault
    echo "wrote $here/$name (vault.tar, passphrase, manifest)"
}

make format1-small no
make format1-xattrs yes
