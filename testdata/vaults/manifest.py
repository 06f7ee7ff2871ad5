#!/usr/bin/env python3
"""Prints the plaintext manifest of a mounted vault (or any directory).

One line per entry, sorted by path bytes, fields separated by tabs:

    PATH  TYPE  mode=0oNNNN uid=N gid=N nlink=N [mtime=S.NNNNNNNNN]
          [size=N sha256=HEX] [target=ESCAPED] [rdev=MAJ:MIN]
          [link=PATH] [xattr:NAME=HEX ...]

TYPE is dir, file, symlink, fifo, socket, char or block. `link=` names the
first path (in this order) of a hard-linked entry. Times: mtime only (a
read changes atime, and no tool can set ctime); the root's line has only
mode and owner (its link count and times are the backing directory's in
format 1, which holds the vault's control files). Only user.* xattrs are listed. Paths and
targets escape bytes outside printable ASCII, and backslash, as \\xHH.

Used by testdata/vaults/make-format1.sh (the fixtures' `manifest` files)
and the e2e tests of `atrest migrate`, so the two cannot disagree.
"""

import errno
import hashlib
import os
import stat
import sys

TYPES = [
    (stat.S_ISDIR, "dir"),
    (stat.S_ISREG, "file"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "char"),
    (stat.S_ISBLK, "block"),
]


def escape(raw: bytes) -> str:
    return "".join(
        chr(b) if 0x20 <= b < 0x7F and b != 0x5C else "\\x%02x" % b for b in raw
    )


def walk(root: bytes, rel: bytes, out: list):
    path = os.path.join(root, rel) if rel else root
    out.append((rel, os.lstat(path)))
    if stat.S_ISDIR(out[-1][1].st_mode):
        for name in sorted(os.listdir(path)):
            walk(root, os.path.join(rel, name) if rel else name, out)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: manifest.py DIR")
    root = os.fsencode(sys.argv[1])
    entries = []
    walk(root, b"", entries)
    entries.sort(key=lambda e: e[0])
    first_of_inode = {}
    for rel, st in entries:
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            first_of_inode.setdefault(st.st_ino, rel)
    for rel, st in entries:
        path = os.path.join(root, rel) if rel else root
        kind = next(name for test, name in TYPES if test(st.st_mode))
        fields = [
            "/" + escape(rel),
            kind,
            "mode=0o%04o" % stat.S_IMODE(st.st_mode),
            "uid=%d" % st.st_uid,
            "gid=%d" % st.st_gid,
        ]
        if rel:
            fields.append("nlink=%d" % st.st_nlink)
            fields.append("mtime=%d.%09d" % divmod(st.st_mtime_ns, 10**9))
        if kind == "file":
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            fields += ["size=%d" % st.st_size, "sha256=" + digest.hexdigest()]
        if kind == "symlink":
            fields.append("target=" + escape(os.readlink(path)))
        if kind in ("char", "block"):
            fields.append("rdev=%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
        if st.st_ino in first_of_inode and not stat.S_ISDIR(st.st_mode):
            fields.append("link=/" + escape(first_of_inode[st.st_ino]))
        if kind != "symlink":
            try:
                names = os.listxattr(path, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                names = []
            for name in sorted(names):
                if name.startswith("user."):
                    value = os.getxattr(path, name, follow_symlinks=False)
                    fields.append("xattr:%s=%s" % (name, value.hex()))
        print("\t".join(fields))


if __name__ == "__main__":
    main()
