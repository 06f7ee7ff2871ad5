#!/usr/bin/env python3
"""Checks every vector in testdata/grant/ from docs/format.md (§15.3, §15.3.2
and §15.4) alone: a whole `200 granted` answer of grant version 1 or 2, read
and checked as a host does, must give the vector's `expect` (`success`,
`refused`, or `alarm` for signed proof of a rolled-back or forked log).
hashlib, the `cryptography` package and check_audit.py's RFC 9162
functions; no atrest code. Exit status 0 if every vector holds, 1 otherwise."""

import base64
import binascii
import hashlib
import json
import os
import re
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from check_audit import Fail, b64, leaf, lp, tree_head_bytes, verify_consistency, verify_inclusion, walk

DIR = os.environ.get(
    "ATREST_GRANT_VECTORS_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "grant"),
)

MAX_PATH_HASHES = 65


class Refused(Exception):
    """The host refuses the answer; no alarm."""


class Alarm(Exception):
    """Signed proof that the log was rolled back or forked."""


def unb64(text, n=None):
    """Unpadded base64url with one spelling; n bytes if given."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise Refused("not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Refused("not base64url")
    if b64(raw) != text or (n is not None and len(raw) != n):
        raise Refused("not the one spelling, or the wrong length")
    return raw


def path_list(hashes):
    if not isinstance(hashes, list):
        raise Refused("path is not a list")
    return [unb64(h, 32) for h in hashes]


def path_string(text):
    raw = unb64(text)
    if len(raw) % 32 or len(raw) > 32 * MAX_PATH_HASHES:
        raise Refused("a path of whole 32-byte hashes")
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def members_with_text(text):
    """A JSON object's members, each value with its exact text."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text, 0).end()
    assert text[pos] == "{"
    pos = ws.match(text, pos + 1).end()
    out = {}
    while text[pos] != "}":
        key, pos = decoder.raw_decode(text, pos)
        pos = ws.match(text, pos).end()
        assert text[pos] == ":"
        pos = ws.match(text, pos + 1).end()
        value, end = decoder.raw_decode(text, pos)
        out[key] = (value, text[pos:end])
        pos = ws.match(text, end).end()
        if text[pos] == ",":
            pos = ws.match(text, pos + 1).end()
    return out


def exact_keys(obj, required, optional=()):
    if not isinstance(obj, dict):
        raise Refused("not an object")
    keys = set(obj)
    if not set(required) <= keys or not keys <= set(required) | set(optional):
        raise Refused(f"fields {sorted(keys)}")


def entry_hash(e):
    subject = b"\x00" if e["subject"] is None else b"\x01" + e["subject"].encode()
    data = (
        lp(b"atrest audit entry v1")
        + b"\x01"
        + lp(struct.pack(">Q", e["seq"]))
        + lp(struct.pack(">Q", e["timestamp_ms"]))
        + lp(e["kind"].encode())
        + lp(e["actor"].encode())
        + lp(subject)
        + lp(e["details"].encode())
        + lp(e["prev_hash"])
    )
    return hashlib.sha256(data).digest()


ENTRY_FIELDS = ["seq", "timestamp_ms", "kind", "actor", "subject", "details", "prev_hash"]
HEAD_FIELDS = ["tree_size", "root_hash", "timestamp_ms", "signature"]


def read_head(h):
    exact_keys(h, HEAD_FIELDS)
    return {
        "tree_size": h["tree_size"],
        "root_hash": unb64(h["root_hash"], 32),
        "timestamp_ms": h["timestamp_ms"],
        "signature": unb64(h["signature"], 64),
    }


def read_v1(audit):
    """§15.3: the entry's JSON text in a string, proofs as objects."""
    exact_keys(audit, ["entry", "tree_head", "inclusion"], ["consistency"])
    members = members_with_text(audit["entry"])
    exact_keys(members, ENTRY_FIELDS + ["hash"])
    e = {k: members[k][0] for k in ENTRY_FIELDS}
    e["details"] = members["details"][1]
    e["prev_hash"] = unb64(e["prev_hash"], 32)
    e["hash"] = entry_hash(e)
    if unb64(members["hash"][0], 32) != e["hash"]:
        raise Refused("the entry does not match its own hash")
    inc = audit["inclusion"]
    exact_keys(inc, ["leaf_index", "tree_size", "path"])
    proof = {
        "entry": e,
        "head": read_head(audit["tree_head"]),
        "inclusion": (inc["leaf_index"], inc["tree_size"], path_list(inc["path"])),
        "consistency": None,
    }
    if "consistency" in audit:
        c = audit["consistency"]
        exact_keys(c, ["old_size", "new_size", "path"])
        proof["consistency"] = (c["old_size"], c["new_size"], path_list(c["path"]))
    return proof


def read_v2(p):
    """§15.3.2: entry fields without hash, paths as one base64url string,
    the inclusion's index and size and the consistency's new size implied."""
    exact_keys(p, ["entry", "tree_head", "inclusion"], ["consistency"])
    e = dict(p["entry"])
    exact_keys(e, ENTRY_FIELDS)
    if not isinstance(e["details"], str):
        raise Refused("details is not a string")
    e["prev_hash"] = unb64(e["prev_hash"], 32)
    e["hash"] = entry_hash(e)
    head = read_head(p["tree_head"])
    proof = {
        "entry": e,
        "head": head,
        "inclusion": (max(e["seq"] - 1, 0), head["tree_size"], path_string(p["inclusion"])),
        "consistency": None,
    }
    if "consistency" in p:
        c = p["consistency"]
        exact_keys(c, ["old_size", "path"])
        proof["consistency"] = (c["old_size"], head["tree_size"], path_string(c["path"]))
    return proof


def read_answer(answer):
    if answer.get("status") != "granted":
        raise Refused("not granted")
    version = answer.get("version", 1)
    if version == 1:
        if "proof" in answer or "audit" not in answer:
            raise Refused("version 1 carries its proof in `audit`")
        return read_v1(answer["audit"])
    if version == 2:
        if "audit" in answer or "proof" not in answer:
            raise Refused("version 2 carries its proof in `proof`")
        return read_v2(answer["proof"])
    raise Refused(f"grant version {version}")


def signed(key, head):
    try:
        key.verify(head["signature"], tree_head_bytes(head["tree_size"], head["root_hash"], head["timestamp_ms"]))
        return True
    except InvalidSignature:
        return False


def check(v):
    """Returns the host's conclusion about vector v's answer."""
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(v["audit_public_key"]))
    kept = read_head(json.loads(v["kept_head"])) if v["kept_head"] else None
    try:
        proof = read_answer(json.loads(v["answer"]))
        e, head = proof["entry"], proof["head"]
        # §15.4, a host: inclusion under the signed head...
        if not signed(key, head):
            raise Refused("bad signature")
        index, size, path = proof["inclusion"]
        if e["seq"] == 0 or index != e["seq"] - 1 or size != head["tree_size"]:
            raise Refused("wrong proof")
        try:
            verify_inclusion(leaf(e["hash"]), index, size, path, head["root_hash"])
        except Fail as f:
            raise Refused(str(f))
        # ...of this request's release...
        details = json.loads(e["details"])
        ours = (
            e["kind"] == "decision"
            and e["subject"] == v["host_id"]
            and details.get("outcome") == "released"
            and details.get("nonce") == b64(bytes.fromhex(v["nonce"]))
        )
        if not ours:
            raise Refused("not this request's release")
        # ...in a log that extends the one kept.
        if kept is not None:
            if head["tree_size"] < kept["tree_size"]:
                raise Alarm("rolled back")
            if proof["consistency"] is None:
                raise Refused("no consistency proof")
            old, new, cpath = proof["consistency"]
            if not signed(key, kept):
                raise Refused("kept head not signed")
            if old != kept["tree_size"] or new != head["tree_size"]:
                raise Refused("consistency proof of the wrong sizes")
            try:
                verify_consistency(old, new, kept["root_hash"], head["root_hash"], cpath)
            except Fail:
                raise Alarm("forked")
    except Refused:
        return "refused"
    except Alarm:
        return "alarm"
    assert e["hash"].hex() == v["entry_hash"], "entry hash"
    assert head["tree_size"] == int(v["tree_size"]), "tree size"
    return "success"


def main():
    return walk(DIR, check, "grant")


if __name__ == "__main__":
    sys.exit(main())
