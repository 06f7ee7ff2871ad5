#!/usr/bin/env python3
"""Checks every vector in testdata/audit/ and testdata/keyd/ from
docs/format.md ("Audit log: Merkle tree and signed tree heads"; "Key
authority: host secrets at rest") alone: hashlib for SHA-256, the
`cryptography` package for Ed25519, HKDF-SHA256 and AES-256-GCM, no atrest
code. Exit status 0 if every vector gives its `expect`, 1 otherwise."""

import base64
import hashlib
import json
import os
import struct
import sys

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

DIR = os.environ.get(
    "ATREST_AUDIT_VECTORS_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "audit"),
)
KEYD_DIR = os.environ.get(
    "ATREST_KEYD_VECTORS_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "keyd"),
)


class Fail(Exception):
    """A verification failure of a named class."""


def sha256(b):
    return hashlib.sha256(b).digest()


def leaf(data):
    return sha256(b"\x00" + data)


def node(left, right):
    return sha256(b"\x01" + left + right)


def mth(leaves):
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


def b64(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def verify_inclusion(leaf_hash, index, size, path, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        raise Fail("index-out-of-range")
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            raise Fail("wrong-length")
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Fail("wrong-length")
    if r != root:
        raise Fail("root-mismatch")


def verify_consistency(first, second, old_root, new_root, path):
    """RFC 9162 section 2.1.4.2, with the edge cases of docs/format.md."""
    if first == 0:
        raise Fail("empty-tree")
    if first > second:
        raise Fail("sizes-out-of-order")
    if first == second:
        if path:
            raise Fail("wrong-length")
        if old_root != new_root:
            raise Fail("root-mismatch")
        return
    if not path:
        raise Fail("wrong-length")
    path = list(path)
    if first & (first - 1) == 0:
        path.insert(0, old_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise Fail("wrong-length")
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Fail("wrong-length")
    if fr != old_root or sr != new_root:
        raise Fail("root-mismatch")


def lp(b):
    return struct.pack(">I", len(b)) + b


def tree_head_bytes(size, root, timestamp):
    return (
        lp(b"atrest audit tree head v1")
        + b"\x01"
        + lp(struct.pack(">Q", size))
        + lp(root)
        + lp(struct.pack(">Q", timestamp))
    )


def hexlist(text):
    return [bytes.fromhex(h) for h in text.split(",")] if text else []


def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def epoch_bytes(e):
    return struct.pack(">I", e)


def check_keyd(v):
    """testdata/keyd/: the secrets key's and the records key's ratchet step,
    wrapped host secrets and wrapped scope bucket keys (decisions 0018,
    0020)."""
    kind, e, key = v["kind"], int(v["epoch"]), bytes.fromhex(v["key"])
    use = b"records" if kind.startswith("records-") or kind == "bucket-key" else b"secrets"
    wrap_key = hkdf(key, epoch_bytes(e), b"atrest v1 keyd " + use + b" wrap")
    if kind in ("secrets-ratchet", "records-ratchet"):
        assert wrap_key == bytes.fromhex(v["wrap_key"]), "wrap key"
        assert hkdf(key, epoch_bytes(e), b"atrest v1 keyd " + use + b" check") == bytes.fromhex(
            v["check"]
        ), "check value"
        nxt = hkdf(key, epoch_bytes(e + 1), b"atrest v1 keyd " + use + b" ratchet")
        assert nxt == bytes.fromhex(v["next_key"]), "next key"
        return "success"
    if kind == "records-origin":
        assert e == 0, "the origin is epoch 0"
        k0 = hkdf(bytes.fromhex(v["master"]), b"", b"atrest v1 keyd records origin")
        assert k0 == key, "K_0 of the bare records key"
        return "success"
    if kind == "host-secret":
        domain = b"atrest keyd host secret v1"
        bound = lp(v["host_id"].encode()) + lp(bytes.fromhex(v["key_id"]))
        expected = "secret"
    elif kind == "bucket-key":
        domain = b"atrest keyd scope bucket v1"
        bound = lp(bytes([int(v["bucket"])]))
        expected = "bucket_key"
    else:
        raise AssertionError(f"unknown kind {kind}")
    wrapped = bytes.fromhex(v["wrapped"])
    if len(wrapped) != 65:
        raise Fail("length")
    if wrapped[0] != 1:
        raise Fail("unknown-version")
    header, nonce, sealed = wrapped[:5], wrapped[5:17], wrapped[17:]
    if struct.unpack(">I", header[1:5])[0] != e:
        raise Fail("epoch-mismatch")
    aad = lp(domain) + b"\x01" + bound + lp(header)
    try:
        secret = AESGCM(wrap_key).decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise Fail("auth-failure")
    assert secret == bytes.fromhex(v[expected]), expected
    return "success"


def check(v):
    """Returns the outcome class ('success' or a failure) of vector v."""
    kind = v["kind"]
    if kind == "merkle-leaf":
        assert leaf(bytes.fromhex(v["input"])) == bytes.fromhex(v["leaf_hash"])
    elif kind == "merkle-node":
        got = node(bytes.fromhex(v["left"]), bytes.fromhex(v["right"]))
        assert got == bytes.fromhex(v["node_hash"])
    elif kind == "merkle-root":
        leaves = [leaf(x) for x in hexlist(v["leaf_inputs"])]
        assert mth(leaves) == bytes.fromhex(v["root"])
    elif kind == "inclusion":
        path = hexlist(v["path"])
        index, size = int(v["leaf_index"]), int(v["tree_size"])
        want = {"leaf_index": index, "tree_size": size, "path": [b64(p) for p in path]}
        assert json.loads(v["json"]) == want, "json form"
        verify_inclusion(
            leaf(bytes.fromhex(v["leaf_input"])), index, size, path, bytes.fromhex(v["root"])
        )
    elif kind == "consistency":
        path = hexlist(v["path"])
        old, new = int(v["old_size"]), int(v["new_size"])
        want = {"old_size": old, "new_size": new, "path": [b64(p) for p in path]}
        assert json.loads(v["json"]) == want, "json form"
        verify_consistency(
            old, new, bytes.fromhex(v["old_root"]), bytes.fromhex(v["new_root"]), path
        )
    elif kind == "tree-head":
        seed = bytes.fromhex(v["seed"])
        public = bytes.fromhex(v["public_key"])
        derived = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        assert derived == public, "public key is not the seed's"
        size, ts = int(v["tree_size"]), int(v["timestamp_ms"])
        root, sig = bytes.fromhex(v["root_hash"]), bytes.fromhex(v["signature"])
        signed = tree_head_bytes(size, root, ts)
        assert signed == bytes.fromhex(v["signed_bytes"]), "signed bytes"
        want = {"tree_size": size, "root_hash": b64(root), "timestamp_ms": ts, "signature": b64(sig)}
        assert json.loads(v["json"]) == want, "json form"
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(sig, signed)
        except InvalidSignature:
            raise Fail("bad-signature")
    else:
        raise AssertionError(f"unknown kind {kind}")
    return "success"


def walk(directory, check, what):
    """Runs check(vector) over every vector file in directory (README.md
    skipped; `name: value` lines) and compares its outcome class with the
    vector's `expect`. Returns the exit status: 0 if every vector holds."""
    bad = 0
    names = sorted(n for n in os.listdir(directory) if n != "README.md")
    for name in names:
        with open(os.path.join(directory, name)) as f:
            v = {}
            for line in f.read().splitlines():
                if not line.strip() or line.startswith("#"):
                    continue
                key, _, value = line.partition(": ")
                assert key not in v, f"{name}: {key} twice"
                v[key.rstrip(":")] = value
        try:
            got = check(v)
        except Fail as e:
            got = str(e)
        except (AssertionError, KeyError, TypeError, ValueError) as e:
            got = f"mismatch ({e!r})"
        if got != v["expect"]:
            print(f"FAIL {name}: expected {v['expect']}, got {got}")
            bad += 1
    print(f"{len(names) - bad} of {len(names)} {what} vectors hold")
    return 1 if bad else 0


def main():
    bad = walk(DIR, check, "audit")
    return walk(KEYD_DIR, check_keyd, "keyd") or bad


if __name__ == "__main__":
    sys.exit(main())
