#!/usr/bin/env python3
"""Independent check of the `atrest` LUKS2 token vectors in testdata/luks/,
from docs/format.md §19 alone (HKDF-SHA256 and HMAC-SHA256 from the
`cryptography` package; no atrest code). The remote and threshold
parameters are opaque bytes here: the vault vectors check their encoding.
Exit 0 when every vector gives its expected outcome."""

import base64
import hashlib
import hmac
import json
import re
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ROOT = Path(__file__).resolve().parents[2]
B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


class Failure(Exception):
    pass


def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def b64(s, max_len):
    if not isinstance(s, str) or not B64URL.match(s) or len(s) % 4 == 1 or len(s) > max_len * 4 // 3 + 3:
        raise Failure("parse-error")
    data = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != s or len(data) > max_len:
        raise Failure("parse-error")
    return data


def parse(token):
    if token.get("type") != "atrest":
        raise Failure("not-atrest")
    if token.get("atrest_version") != 1:
        raise Failure("parse-error")
    slots = token.get("keyslots")
    if not isinstance(slots, list) or len(slots) != 1 or not isinstance(slots[0], str):
        raise Failure("parse-error")
    if not re.fullmatch(r"0|[1-9][0-9]*", slots[0]):
        raise Failure("parse-error")
    keyslot = int(slots[0])
    binding_id = b64(token.get("binding_id"), 16)
    if len(binding_id) != 16:
        raise Failure("parse-error")
    kinds = [k for k in ("remote", "threshold") if k in token]
    if len(kinds) != 1:
        raise Failure("parse-error")
    kind = 1 if kinds[0] == "remote" else 2
    params = b64(token[kinds[0]], 8192)
    mac = b64(token.get("mac"), 32)
    if len(mac) != 32:
        raise Failure("parse-error")
    return keyslot, binding_id, kind, params, mac


def check(fields):
    token = json.loads(fields["token"])
    secret = bytes.fromhex(fields["secret"])
    keyslot, binding_id, kind, params, mac = parse(token)
    uuid = fields["uuid"].encode()
    msg = (b"atrest luks token v1" + struct.pack(">H", 1) + binding_id + struct.pack(">I", keyslot)
           + bytes([len(uuid)]) + uuid + bytes([kind]) + params)
    key = hkdf(secret, binding_id, b"atrest v1 luks token mac")
    if not hmac.compare_digest(hmac.new(key, msg, hashlib.sha256).digest(), mac):
        raise Failure("tampered")
    return hkdf(secret, binding_id, b"atrest v1 luks passphrase")


def main():
    failed = 0
    files = sorted(p for p in (ROOT / "testdata/luks").iterdir() if p.name != "README.md")
    for path in files:
        fields = dict(line.split(": ", 1) for line in path.read_text().splitlines() if ": " in line)
        expect = fields["expect"]
        try:
            passphrase = check(fields)
            got = "success"
            if passphrase.hex() != fields.get("passphrase"):
                got = "wrong-passphrase"
        except Failure as e:
            got = str(e)
        if got != expect:
            failed += 1
            print(f"FAIL {path.name}: expected {expect}, got {got}")
    print(f"check_luks: {len(files) - failed} of {len(files)} vectors as expected")
    if len(files) < 10:
        print("check_luks: fewer than 10 vectors")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
