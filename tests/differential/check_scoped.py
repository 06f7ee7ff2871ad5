#!/usr/bin/env python3
"""Re-checks atrest-scoped's known-answer vectors
(testdata/vectors-scoped/vectors.json) without any atrest code: field
envelopes, blind indexes, encrypted streams, scope and group key wraps are
rebuilt here from docs/format.md §17 on top of the `cryptography` package
(OpenSSL), so a bug shared by the Rust code and its own tests still shows.

    pip install cryptography
    python3 tests/differential/check_scoped.py [VECTORS_FILE] [-v]

Exits non-zero if any vector fails, and ends with `N passed, M failed`.
"""

import base64
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_vectors import Failure, aead_open, hkdf  # noqa: E402

AES_GCM = 1
ROOT = Path(__file__).resolve().parents[2]


def canonical(domain, version, *fields):
    out = struct.pack(">I", len(domain)) + domain + bytes([version])
    for f in fields:
        out += struct.pack(">I", len(f)) + f
    return out


def b64(text, prefix):
    if not text.startswith(prefix):
        raise Failure("malformed")
    body = text[len(prefix):]
    if not set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
        raise Failure("malformed")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def root_key(scope, version, secret, share):
    salt = canonical(b"atrest scope session v1", 1, scope, struct.pack(">I", version),
                     bytes([share is not None]))
    return hkdf(secret + (share or b""), salt, b"atrest v1 scope session")


def open_field(v):
    scope = v["scope"].encode()
    share = bytes.fromhex(v["client_share"]) if v["client_share"] else None
    root = root_key(scope, v["key_version"], bytes.fromhex(v["scope_secret"]), share)
    key = hkdf(root, scope, b"atrest v1 scope field key")
    data = b64(v["envelope"], "atrf:")
    header, sealed = data[:6], data[6:]
    if header[0] != 1 or header[1] != AES_GCM:
        raise Failure("version")
    if struct.unpack(">I", header[2:6])[0] != v["key_version"]:
        raise Failure("key version")
    aad = canonical(b"atrest scoped field v1", 1, scope, v["table"].encode(), v["column"].encode(),
                    v["row"].encode(), header)
    return aead_open(AES_GCM, key, aad, sealed), key, aad, sealed


def check_field(v):
    plain, key, aad, sealed = open_field(v)
    if plain != bytes.fromhex(v["plaintext"]):
        raise Failure("wrong plaintext")
    # Moved to another row: must fail.
    moved = aad.replace(struct.pack(">I", len(v["row"])) + v["row"].encode(), struct.pack(">I", 5) + b"other")
    try:
        aead_open(AES_GCM, key, moved, sealed)
    except Failure:
        return
    raise Failure("a moved envelope opened")


# Unicode's White_Space property (what Rust's char::is_whitespace uses);
# Python's str.split() also splits at U+001C..U+001F, so it is not used.
WHITE_SPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                  "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def _words(s):
    out, word = [], ""
    for c in s:
        if c in WHITE_SPACE:
            if word:
                out.append(word)
            word = ""
        else:
            word += c
    return out + ([word] if word else [])


def _trim(s):
    a, b = 0, len(s)
    while a < b and s[a] in WHITE_SPACE:
        a += 1
    while b > a and s[b - 1] in WHITE_SPACE:
        b -= 1
    return s[a:b]


NORMALIZE = {
    "trim": _trim,
    "lowercase": lambda s: s.lower(),
    "collapse-whitespace": lambda s: " ".join(_words(s)),
    "remove-whitespace": lambda s: "".join(c for c in s if c not in WHITE_SPACE),
    "digits-only": lambda s: "".join(c for c in s if c in "0123456789"),
}
# The ids that enter the index key (docs/format.md §17.4), mapped here, not
# read from the vectors.
NORMALIZE_IDS = {"trim": 1, "lowercase": 2, "collapse-whitespace": 3, "remove-whitespace": 4, "digits-only": 5}


def check_index(v):
    scope = v["scope"].encode()
    root = root_key(scope, v["key_version"], bytes.fromhex(v["scope_secret"]), None)
    bits = v["bits"]
    salt = canonical(b"atrest blind index definition v1", 1, scope, struct.pack(">I", v["key_version"]),
                     v["table"].encode(), v["name"].encode(), struct.pack(">H", bits),
                     bytes(NORMALIZE_IDS[n] for n in v["normalize"]), *[c.encode() for c in v["columns"]])
    key = hkdf(root, salt, b"atrest v1 blind index key")
    values = []
    for value in v["values"]:
        for step in v["normalize"]:
            value = NORMALIZE[step](value)
        values.append(value.encode())
    tag = hmac.new(key, canonical(b"atrest blind index v1", 1, *values), hashlib.sha256).digest()
    n = (bits + 7) // 8
    out = bytearray(tag[:n])
    spare = n * 8 - bits
    if spare:
        out[-1] &= (0xFF << spare) & 0xFF
    if out.hex() != v["index"]:
        raise Failure(f"index {out.hex()} != {v['index']}")


def check_stream(v):
    scope = v["scope"].encode()
    root = root_key(scope, v["key_version"], bytes.fromhex(v["scope_secret"]), None)
    data = bytes.fromhex(v["stream"])
    header, body = data[:44], data[44:]
    if header[:4] != b"ATRS" or header[4] != 1 or header[5] != AES_GCM or header[11] != 0:
        raise Failure("header")
    if struct.unpack(">I", header[6:10])[0] != v["key_version"]:
        raise Failure("key version")
    if not 12 <= header[10] <= 24:
        raise Failure("chunk size")
    chunk = 1 << header[10]
    key = hkdf(root, header[12:44], b"atrest v1 stream key")
    prefix = canonical(b"atrest scoped stream v1", 1, scope, v["table"].encode(), v["object"].encode(), header)
    sealed_chunk = chunk + 28
    pieces = [body[i:i + sealed_chunk] for i in range(0, len(body), sealed_chunk)] or [b""]
    out = b""
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        aad = prefix + struct.pack(">I", 8) + struct.pack(">Q", i) + struct.pack(">I", 1) + bytes([last])
        plain = aead_open(AES_GCM, key, aad, piece)
        if not last and len(plain) != chunk:
            raise Failure("short inner chunk")
        out += plain
    if out != bytes((i * 31) % 256 for i in range(v["plaintext_len"])):
        raise Failure("wrong plaintext")
    # Cut at the last chunk boundary (when there are two or more): refused.
    if len(pieces) > 1:
        aad = prefix + struct.pack(">I", 8) + struct.pack(">Q", len(pieces) - 2) + struct.pack(">I", 1) + b"\x01"
        try:
            aead_open(AES_GCM, key, aad, pieces[-2])
        except Failure:
            return
        raise Failure("a cut stream opened")


def check_wrap(v):
    scope = v["scope"].encode()
    records = hkdf(bytes.fromhex(v["master_key"]), b"", b"atrest v1 records key")
    kek = hkdf(records, scope, b"atrest v1 scope wrap")
    data = b64(v["wrapped"], "atrw:")
    if len(data) != 67 or data[0] != 1 or data[1] != AES_GCM:
        raise Failure("header")
    if struct.unpack(">I", data[2:6])[0] != v["key_version"] or bool(data[6] & 1) != v["client_share_flag"]:
        raise Failure("header fields")
    aad = canonical(b"atrest scope key wrap v1", 1, scope, data[:7])
    if aead_open(AES_GCM, kek, aad, data[7:]) != bytes.fromhex(v["scope_secret"]):
        raise Failure("wrong secret")


def check_group(v):
    member = v["member"].encode()
    group = v["group"].encode()
    root = root_key(member, v["member_key_version"], bytes.fromhex(v["member_secret"]),
                    bytes.fromhex(v["member_client_share"]))
    kek = hkdf(root, group, b"atrest v1 group wrap")
    data = b64(v["wrapped"], "atrw:")
    if struct.unpack(">I", data[2:6])[0] != v["group_key_version"]:
        raise Failure("group key version")
    aad = canonical(b"atrest group key wrap v1", 1, group, member, struct.pack(">I", v["member_key_version"]),
                    data[:7])
    if aead_open(AES_GCM, kek, aad, data[7:]) != bytes.fromhex(v["group_secret"]):
        raise Failure("wrong group secret")


def main():
    args = [a for a in sys.argv[1:] if a != "-v"]
    verbose = "-v" in sys.argv
    path = Path(args[0]) if args else ROOT / "testdata/vectors-scoped/vectors.json"
    doc = json.loads(path.read_text())
    if doc.get("version") != 1:
        print(f"unknown vectors version {doc.get('version')}")
        return 1
    passed = failed = 0
    for kind, check in [("fields", check_field), ("indexes", check_index), ("streams", check_stream),
                        ("wraps", check_wrap), ("groups", check_group)]:
        for i, v in enumerate(doc[kind]):
            try:
                check(v)
                passed += 1
                if verbose:
                    print(f"ok   {kind}[{i}]")
            except Exception as e:  # noqa: BLE001 -- report every failure, keep going
                failed += 1
                print(f"FAIL {kind}[{i}]: {type(e).__name__}: {e}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
