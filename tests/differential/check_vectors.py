#!/usr/bin/env python3
"""Re-checks atrest's known-answer vectors (testdata/vectors/) without any
atrest code: the format is rebuilt here from its description on top of the
`cryptography` package (OpenSSL), so a bug in the Rust crates (aes-siv,
chacha20poly1305, aws-lc, argon2) or in how atrest calls them shows up as a
mismatch.

    pip install cryptography          # 44 or newer (Argon2id)
    python3 tests/differential/check_vectors.py [VECTORS_DIR] [-v]

VECTORS_DIR defaults to $ATREST_VECTORS_DIR, then to testdata/vectors/ of
this checkout. Exits non-zero if any vector fails, and ends with a line
`N passed, M failed`.

XChaCha20-Poly1305 is HChaCha20 (written out below, checked against the
draft-irtf-cfrg-xchacha test vector) followed by OpenSSL's
ChaCha20-Poly1305.
"""

import base64
import hashlib
import hmac
import itertools
import os
import re
import struct
import sys
from pathlib import Path

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV, ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError as e:  # pragma: no cover
    sys.exit(f"check_vectors.py needs the `cryptography` package, 44 or newer (pip install cryptography): {e}")

# --------------------------------------------------------------- the format

KEYSLOT_WRAP = b"atrest v1 keyslot wrap"
CONFIG_MAC = b"atrest v1 config mac"
CONTENT_KEY = b"atrest v1 content key"
FILE_KEY = b"atrest v1 file key"
NAME_KEY = b"atrest v1 name key"
METADATA_KEY = b"atrest v1 metadata key"
DOMAIN_KEYSLOT = b"atrest keyslot v1"
DOMAIN_FILE_NAME = b"atrest name v1"
DOMAIN_XATTR_NAME = b"atrest xattr name v1"
DOMAIN_XATTR_VALUE = b"atrest xattr value v1"
DOMAIN_ROOT_ATTR = b"atrest root attributes v1"
DOMAIN_SYMLINK = b"atrest symlink v1"
SHARE_MAC = b"atrest v1 share mac"
THRESHOLD_SHARE_KEY = b"atrest v1 threshold share"
DOMAIN_THRESHOLD_SHARE = b"atrest threshold share v1"
DOMAIN_THRESHOLD_MEMBER = b"atrest threshold member v1"

MAGIC = b"ATRESTVC"
BLOCK_SIZE = 4096
LONG_PREFIX = "atrest.long."
MAX_BACKING_NAME = 255
LONG_LINK_PREFIX = "atrest.symlink.v1."
MAX_BACKING_LINK = 4095
XATTR_PREFIX = "user.atrest."
RECOVERY_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RECOVERY_CHECKSUM_DOMAIN = b"atrest recovery key checksum v1"

ALGORITHMS = {"aes-256-gcm": 1, "xchacha20-poly1305": 2}
NONCE_LEN = {1: 12, 2: 24}
TAG_LEN = 16


class Failure(Exception):
    """An expected kind of failure: str(self) is its class."""


def hkdf(ikm, salt, info, length=32):
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


# ---------------------------------------------------------- XChaCha20-Poly1305

_M = 0xFFFFFFFF


def _rotl(v, c):
    return ((v << c) & _M) | (v >> (32 - c))


def hchacha20(key, nonce16):
    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    s += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))

    def qr(a, b, c, d):
        s[a] = (s[a] + s[b]) & _M; s[d] = _rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & _M; s[b] = _rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & _M; s[d] = _rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & _M; s[b] = _rotl(s[b] ^ s[c], 7)

    for _ in range(10):
        qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
        qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def _self_test_hchacha20():
    # draft-irtf-cfrg-xchacha-03, section 2.2.1.
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    want = "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
    got = hchacha20(key, nonce).hex()
    if got != want:
        sys.exit(f"HChaCha20 self-test failed: {got}")


def aead_open(alg, key, aad, sealed):
    """`nonce ‖ ciphertext ‖ tag`, as atrest's BlockCipher stores it."""
    n = NONCE_LEN[alg]
    if len(sealed) < n + TAG_LEN:
        raise Failure("auth-failure")
    nonce, body = sealed[:n], sealed[n:]
    try:
        if alg == 1:
            return AESGCM(key).decrypt(nonce, body, aad)
        sub = hchacha20(key, nonce[:16])
        return ChaCha20Poly1305(sub).decrypt(b"\0" * 4 + nonce[16:], body, aad)
    except InvalidTag:
        raise Failure("auth-failure") from None


# ----------------------------------------------------------- content blocks

def open_block(alg, content_key, file_id, n, sealed):
    overhead = NONCE_LEN[alg] + TAG_LEN
    if len(sealed) <= overhead:
        raise Failure("truncated")
    if not any(sealed):
        return bytes(len(sealed) - overhead)  # a hole
    file_key = hkdf(content_key, file_id, FILE_KEY)
    return aead_open(alg, file_key, file_id + struct.pack(">Q", n), sealed)


# -------------------------------------------------------------------- names

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode_strict(s):
    if not _B64URL.match(s) or len(s) % 4 == 1:
        raise Failure("parse-error")
    data = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    if b64url(data) != s:  # unused low bits set: a second spelling
        raise Failure("parse-error")
    return data


def name_key(master, vault_id):
    return hkdf(master, vault_id, NAME_KEY, 64)


def encrypt_name(nkey, dir_id, name):
    full = b64url(AESSIV(nkey).encrypt(name, [DOMAIN_FILE_NAME, dir_id]))
    if len(full) <= MAX_BACKING_NAME:
        return full, full
    return LONG_PREFIX + b64url(hashlib.sha256(full.encode()).digest()), full


def decrypt_name(nkey, dir_id, encrypted):
    sealed = b64url_decode_strict(encrypted)
    try:
        name = AESSIV(nkey).decrypt(sealed, [DOMAIN_FILE_NAME, dir_id])
    except InvalidTag:
        raise Failure("auth-failure") from None
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        raise Failure("invalid-name")
    return name


def decrypt_long_entry(nkey, dir_id, entry, side_file):
    if b64url(hashlib.sha256(side_file.encode()).digest()) != entry[len(LONG_PREFIX):]:
        raise Failure("parse-error")
    return decrypt_name(nkey, dir_id, side_file)


# ------------------------------------------------------------ recovery keys

def parse_recovery_key(text):
    values = []
    for c in text:
        if c == "-" or c.isspace():
            continue
        if "a" <= c <= "z":
            c = c.upper()
        c = {"I": "1", "L": "1", "O": "0"}.get(c, c)
        if c not in RECOVERY_ALPHABET:
            raise Failure("character-error")
        values.append(RECOVERY_ALPHABET.index(c))
    if len(values) != 55:
        raise Failure("length-error")
    n = 0
    for v in values:
        n = (n << 5) | v
    padding = n & 0b111  # 275 bits = 34 bytes + 3 padding bits
    raw = (n >> 3).to_bytes(34, "big")
    key, checksum = raw[:32], raw[32:]
    if padding or hashlib.sha256(RECOVERY_CHECKSUM_DOMAIN + key).digest()[:2] != checksum:
        raise Failure("checksum-error")
    return key


# ------------------------------------------------------------------ config

class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise Failure("parse-error")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def done(self):
        return self.pos == len(self.data)


def parse_config(data):
    if len(data) > 64 * 1024:
        raise Failure("parse-error")
    r = Reader(data)
    if r.take(8) != MAGIC:
        raise Failure("parse-error")
    if r.u16() != 1:
        raise Failure("unknown-version")
    body = r.take(r.u32())
    mac = r.take(32)
    if not r.done():
        raise Failure("parse-error")
    b = Reader(body)
    cfg = {"raw": data, "signed": data[:14 + len(body)], "mac": mac}
    cfg["vault_id"] = b.take(16)
    b.take(8)  # created, seconds since 1970
    b.take(8)  # generation
    if b.u8() not in (1, 2):
        raise Failure("parse-error")
    if b.u32() != BLOCK_SIZE or b.u8() != 1 or b.u16() != 0:  # block size, backend FUSE, flags
        raise Failure("parse-error")
    count = b.u8()
    if not 1 <= count <= 32:
        raise Failure("parse-error")
    slots, ids = [], set()
    for _ in range(count):
        sid, kind = b.u8(), b.u8()
        params = b.take(b.u16())
        if kind == 1:
            if len(params) != 28:
                raise Failure("parse-error")
            memory, passes, lanes = struct.unpack(">III", params[:12])
            if not (8 * 1024 <= memory <= 4 * 1024 * 1024 and 1 <= passes <= 64 and 1 <= lanes <= 16):
                raise Failure("parse-error")
        elif kind in (2, 3):
            if params:
                raise Failure("parse-error")
        elif kind in (4, 5):
            parse_remote_params(kind, params)
        else:
            raise Failure("parse-error")
        label = b.take(b.u8())
        if len(label) > 64:
            raise Failure("parse-error")
        try:
            label.decode("utf-8")
        except UnicodeDecodeError:
            raise Failure("parse-error") from None
        wrapped_len = b.u16()
        if wrapped_len != 32 + 28:
            raise Failure("parse-error")
        wrapped = b.take(wrapped_len)
        if sid in ids:
            raise Failure("parse-error")
        ids.add(sid)
        slots.append({"id": sid, "kind": kind, "params": params, "wrapped": wrapped})
    if not b.done():
        raise Failure("parse-error")
    cfg["slots"] = slots
    return cfg


# ------------------------------------------------- remote and threshold slots

P25519 = 2**255 - 19
EDWARDS_D = (-121665 * pow(121666, P25519 - 2, P25519)) % P25519
SQRT_M1 = pow(2, (P25519 - 1) // 4, P25519)


def _is_negative(x):
    return (x % P25519) & 1


def _sqrt_ratio_m1(u, v):
    p = P25519
    v3 = v * v * v % p
    v7 = v3 * v3 * v % p
    r = u * v3 * pow(u * v7, (p - 5) // 8, p) % p
    check = v * r * r % p
    correct = check == u % p
    flipped = check == (-u) % p
    flipped_i = check == (-u * SQRT_M1) % p
    if flipped or flipped_i:
        r = SQRT_M1 * r % p
    if _is_negative(r):
        r = (-r) % p
    return correct or flipped, r


def ristretto_point_valid(b):
    """RFC 9496 §4.3.1 decoding, and not the identity (atrest refuses it)."""
    p = P25519
    s = int.from_bytes(b, "little")
    if s >= p or _is_negative(s) or s == 0:
        return False
    ss = s * s % p
    u1, u2 = (1 - ss) % p, (1 + ss) % p
    u2_sqr = u2 * u2 % p
    v = (-(EDWARDS_D * u1 * u1) - u2_sqr) % p
    was_square, invsqrt = _sqrt_ratio_m1(1, v * u2_sqr % p)
    den_x = invsqrt * u2 % p
    den_y = invsqrt * den_x * v % p
    x = 2 * s * den_x % p
    if _is_negative(x):
        x = (-x) % p
    y = u1 * den_y % p
    return was_square and not _is_negative(x * y) and y != 0


HOST_ID_CHARS = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-")
SHARE_LEN = 1 + 16 + 1 + 1 + 1 + 32 + 32
SEALED_SHARE_LEN = 12 + SHARE_LEN + 16


def parse_url(r):
    url = r.take(r.u8())
    try:
        url.decode("utf-8")
    except UnicodeDecodeError:
        raise Failure("parse-error") from None
    if not url or any(c < 0x20 or c == 0x7F for c in url):
        raise Failure("parse-error")
    return url


def parse_authority(r):
    url = parse_url(r)
    r.take(32)  # CA certificate fingerprint
    host = r.take(r.u8())
    if not 1 <= len(host) <= 128 or not set(host) <= HOST_ID_CHARS:
        raise Failure("parse-error")
    r.take(32)  # audit public key
    return url


def parse_binding(r):
    binding = r.take(64)
    if not (ristretto_point_valid(binding[:32]) and ristretto_point_valid(binding[32:])):
        raise Failure("parse-error")


MAX_REPLICAS = 8


def parse_remote_params(kind, params):
    """Kind 4: 1 ‖ authority ‖ binding, or 2 ‖ authority ‖ R ‖ R × URL ‖
    binding (1 <= R <= 8 distinct replica URLs, none the authority's).
    Kind 5: 1 ‖ k ‖ n ‖ n × (authority ‖ binding ‖ sealed share). Returns
    the sealed shares."""
    r = Reader(params)
    version = r.u8()
    if version != 1 and not (kind == 4 and version == 2):
        raise Failure("parse-error")
    sealed = []
    if kind == 4:
        urls = [parse_authority(r)]
        if version == 2:
            count = r.u8()
            if not 1 <= count <= MAX_REPLICAS:
                raise Failure("parse-error")
            for _ in range(count):
                url = parse_url(r)
                if url in urls:
                    raise Failure("parse-error")
                urls.append(url)
        parse_binding(r)
    else:
        k, n = r.u8(), r.u8()
        if not 2 <= k <= n <= 16:
            raise Failure("parse-error")
        for _ in range(n):
            parse_authority(r)
            parse_binding(r)
            sealed.append(r.take(SEALED_SHARE_LEN))
    if not r.done():
        raise Failure("parse-error")
    return sealed


def lp(x):
    return struct.pack(">I", len(x)) + x


def gf_mul(a, b):
    """GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1."""
    out = 0
    while b:
        if b & 1:
            out ^= a
        a = (a << 1) ^ (0x11B if a & 0x80 else 0)
        b >>= 1
    return out


def gf_inv(a):
    out = 1
    for _ in range(254):
        out = gf_mul(out, a)
    return out


def shamir_at_zero(points):
    """Lagrange interpolation at x = 0 of byte-wise polynomials."""
    secret = bytearray(32)
    for i, (xi, yi) in enumerate(points):
        basis = 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                basis = gf_mul(basis, gf_mul(xj, gf_inv(xj ^ xi)))
        for n in range(32):
            secret[n] ^= gf_mul(yi[n], basis)
    return bytes(secret)


def share_tag_ok(secret, share):
    split_id, header, value, tag = share[1:17], share[17:20], share[20:52], share[52:]
    mac_key = hkdf(secret, split_id, SHARE_MAC)
    msg = lp(DOMAIN_THRESHOLD_SHARE) + b"\x01" + lp(split_id) + lp(header) + lp(value)
    return hmac.compare_digest(hmac.new(mac_key, msg, hashlib.sha256).digest(), tag)


def threshold_secret(slot, vault_id, member_keys):
    """Opens the members' shares and combines k of them, as
    ThresholdSlot::open_share and atrest_remote::combine; None if too few."""
    params = slot["params"]
    k, n = params[1], params[2]
    sealed = parse_remote_params(5, params)
    shares = []
    for index, key in member_keys:
        if not 1 <= index <= n:
            continue
        share_key = hkdf(key, vault_id, THRESHOLD_SHARE_KEY + bytes([index]))
        ad = DOMAIN_THRESHOLD_MEMBER + vault_id + bytes([slot["id"], index])
        try:
            share = aead_open(1, share_key, ad, sealed[index - 1])
        except Failure:
            continue
        if len(share) != SHARE_LEN or share[0] != 1 or tuple(share[17:20]) != (k, n, index):
            continue
        if all(s[19] != index for s in shares):
            shares.append(share)
    if len(shares) < k or len({s[1:17] for s in shares}) != 1:
        return None
    for subset in itertools.combinations(shares, k):
        secret = shamir_at_zero([(s[19], s[20:52]) for s in subset])
        if all(share_tag_ok(secret, s) for s in subset):
            return secret if all(share_tag_ok(secret, s) for s in shares) else None
    return None


def slot_secret(slot, unlocker, vault_id):
    kind, value = unlocker
    if kind != slot["kind"]:
        return None
    if kind == 5:
        return threshold_secret(slot, vault_id, value)
    if kind == 1:
        memory, passes, lanes = struct.unpack(">III", slot["params"][:12])
        salt = slot["params"][12:]
        return Argon2id(salt=salt, length=32, iterations=passes, lanes=lanes, memory_cost=memory).derive(value)
    return value


def unlock(primary_bytes, backup_bytes, unlocker):
    """Returns (vault id, master key) or raises Failure, as LockedVault::open + unlock."""
    parsed = []
    for data in (primary_bytes, backup_bytes):
        try:
            parsed.append(parse_config(data))
        except Failure as e:
            parsed.append(e)
    if all(isinstance(p, Failure) for p in parsed):
        raise parsed[0]  # the primary's error names the problem
    for p in parsed:
        # A copy from a newer format (an interrupted upgrade) is never
        # "repaired" back from the other copy.
        if isinstance(p, Failure) and str(p) == "unknown-version":
            raise p
    candidates = []
    for p in parsed:
        if not isinstance(p, Failure) and all(p["raw"] != c["raw"] for c in candidates):
            candidates.append(p)
    tampered = False
    for cfg in candidates:
        vault_id = cfg["vault_id"]
        for slot in cfg["slots"]:
            secret = slot_secret(slot, unlocker, vault_id)
            if secret is None:
                continue
            kek = hkdf(secret, vault_id, KEYSLOT_WRAP + bytes([slot["kind"]]))
            ad = DOMAIN_KEYSLOT + vault_id + bytes([slot["id"], slot["kind"]]) + slot["params"]
            try:
                master = aead_open(1, kek, ad, slot["wrapped"])
            except Failure:
                continue
            mac_key = hkdf(master, vault_id, CONFIG_MAC)
            if not hmac.compare_digest(hmac.new(mac_key, cfg["signed"], hashlib.sha256).digest(), cfg["mac"]):
                tampered = True
                continue
            return vault_id, master
    raise Failure("tampered" if tampered else "wrong-key")


# ------------------------------------------------------------------ vectors

def parse_vector(text):
    fields = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"not `name: value`: {line!r}")
        if key in fields:
            raise ValueError(f"`{key}` given twice")
        fields[key] = value[1:] if value.startswith(" ") else value
    return fields


class V:
    def __init__(self, fields):
        self.f = fields

    def __getitem__(self, key):
        return self.f[key]

    def get(self, key):
        return self.f.get(key)

    def hex(self, key):
        return bytes.fromhex(self.f[key])

    def opt_hex(self, key):
        return bytes.fromhex(self.f[key]) if key in self.f else None


def _show(x):
    text = x.hex() if isinstance(x, bytes) else repr(x)
    return text if len(text) <= 72 else text[:69] + "..."


def expect_equal(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {_show(got)}, want {_show(want)}")


def check_content_block(v):
    alg = ALGORITHMS[v["algorithm"]]
    content_key, file_id = v.hex("content_key"), v.hex("file_id")
    if v.get("file_key") is not None:
        expect_equal("file key", hkdf(content_key, file_id, FILE_KEY), v.hex("file_key"))
    plain = open_block(alg, content_key, file_id, int(v["block"]), v.hex("sealed"))
    expect_equal("plaintext", plain, v.hex("plaintext"))


def check_name(v):
    master, vault_id, dir_id = v.hex("master_key"), v.hex("vault_id"), v.hex("dir_id")
    nkey = name_key(master, vault_id)
    if v.get("name_key") is not None:
        expect_equal("name key", nkey, v.hex("name_key"))
    encrypted, entry = v["encrypted"], v.get("entry")
    if v["expect"] != "success":
        if entry is not None and entry.startswith(LONG_PREFIX):
            decrypt_long_entry(nkey, dir_id, entry, encrypted)
        else:
            decrypt_name(nkey, dir_id, encrypted)
        return
    name = v.hex("name")
    expect_equal("encryption", encrypt_name(nkey, dir_id, name), (entry, encrypted))
    expect_equal("decryption", decrypt_name(nkey, dir_id, encrypted), name)
    if entry.startswith(LONG_PREFIX):
        expect_equal("long entry", decrypt_long_entry(nkey, dir_id, entry, encrypted), name)
    elif not _B64URL.match(entry) or "." in entry or len(entry) > MAX_BACKING_NAME:
        raise AssertionError(f"short entry {entry!r} is not a plain base64url name")


def metadata_key(v):
    return hkdf(v.hex("master_key"), v.hex("vault_id"), METADATA_KEY)


def check_symlink(v):
    alg = ALGORITHMS[v["algorithm"]]
    stored, link = v["stored"], v.get("link")
    if link is not None:
        digest = link[len(LONG_LINK_PREFIX):]
        if not link.startswith(LONG_LINK_PREFIX) or len(digest) != 43 or not _B64URL.match(digest):
            raise AssertionError(f"{link!r} is not a long-link name")
        if b64url(hashlib.sha256(stored.encode()).digest()) != digest:
            raise Failure("parse-error")
    elif len(stored) > MAX_BACKING_LINK:
        raise AssertionError("stored target too long for a symlink, and no side file")
    target = aead_open(alg, metadata_key(v), DOMAIN_SYMLINK, b64url_decode_strict(stored))
    if v["expect"] == "success" and (link is not None) != (len(stored) > MAX_BACKING_LINK):
        raise AssertionError("side file used for a target that fits, or the other way round")
    expect_equal("target", target, v.hex("target"))


def check_xattr(v):
    alg = ALGORITHMS[v["algorithm"]]
    nkey = name_key(v.hex("master_key"), v.hex("vault_id"))
    stored_name = v["stored_name"]
    if not stored_name.startswith(XATTR_PREFIX):
        raise Failure("not-ours")
    sealed_name = b64url_decode_strict(stored_name[len(XATTR_PREFIX):])
    try:
        name = AESSIV(nkey).decrypt(sealed_name, [DOMAIN_XATTR_NAME])
    except InvalidTag:
        raise Failure("auth-failure") from None
    value = aead_open(alg, metadata_key(v), DOMAIN_XATTR_VALUE + stored_name.encode(), v.hex("sealed_value"))
    expect_equal("name", name, v.hex("name"))
    expect_equal("stored name", XATTR_PREFIX + b64url(AESSIV(nkey).encrypt(name, [DOMAIN_XATTR_NAME])), stored_name)
    expect_equal("value", value, v.hex("value"))


def check_root_attr(v):
    """docs/format.md §10.1: version u16 BE, then the sealed mode, uid, gid."""
    alg = ALGORITHMS[v["algorithm"]]
    stored = v.hex("record")
    if len(stored) < 2:
        raise Failure("parse-error")
    version = struct.unpack(">H", stored[:2])[0]
    if version != 1:
        raise Failure("unknown-version")
    body = aead_open(alg, metadata_key(v), DOMAIN_ROOT_ATTR + stored[:2], stored[2:])
    if len(body) != 12:
        raise Failure("parse-error")
    mode, uid, gid = struct.unpack(">III", body)
    if mode & ~0o7777:
        raise Failure("parse-error")
    expect_equal("mode", mode, int(v["mode"], 8))
    expect_equal("uid", uid, int(v["uid"]))
    expect_equal("gid", gid, int(v["gid"]))


def check_header(v):
    data = v.hex("data")
    if len(data) != 18:
        raise Failure("parse-error")
    if struct.unpack(">H", data[:2])[0] != 1:
        raise Failure("unknown-version")
    expect_equal("id", data[2:], v.hex("file_id" if v["kind"] == "file-header" else "dir_id"))


def check_recovery_key(v):
    expect_equal("key", parse_recovery_key(v["text"]), v.hex("key"))


def check_key_schedule(v):
    master, vault_id, file_id = v.hex("master_key"), v.hex("vault_id"), v.hex("file_id")
    content = hkdf(master, vault_id, CONTENT_KEY)
    expect_equal("content_key", content, v.hex("content_key"))
    expect_equal("file_key", hkdf(content, file_id, FILE_KEY), v.hex("file_key"))
    expect_equal("name_key", name_key(master, vault_id), v.hex("name_key"))
    expect_equal("metadata_key", hkdf(master, vault_id, METADATA_KEY), v.hex("metadata_key"))
    expect_equal("config_mac_key", hkdf(master, vault_id, CONFIG_MAC), v.hex("config_mac_key"))
    secret = v.hex("slot_secret")
    expect_equal("kek_recovery_key", hkdf(secret, vault_id, KEYSLOT_WRAP + b"\x02"), v.hex("kek_recovery_key"))
    expect_equal("kek_key_file", hkdf(secret, vault_id, KEYSLOT_WRAP + b"\x03"), v.hex("kek_key_file"))
    argon = Argon2id(
        salt=v.hex("argon2_salt"), length=32, iterations=int(v["argon2_iterations"]),
        lanes=int(v["argon2_parallelism"]), memory_cost=int(v["argon2_memory_kib"]),
    ).derive(v["passphrase"].encode())
    expect_equal("argon2_output", argon, v.hex("argon2_output"))
    expect_equal("kek_passphrase", hkdf(argon, vault_id, KEYSLOT_WRAP + b"\x01"), v.hex("kek_passphrase"))


def check_keyslot(v):
    config = v.hex("config")
    backup = v.opt_hex("config_bak")
    if v.get("passphrase") is not None:
        unlocker = (1, v["passphrase"].encode())
    elif v.get("passphrase_hex") is not None:
        unlocker = (1, v.hex("passphrase_hex"))
    elif v.get("recovery_key") is not None:
        unlocker = (2, parse_recovery_key(v["recovery_key"]))
    elif v.get("remote_key") is not None:
        unlocker = (4, v.hex("remote_key"))
    elif v.get("member_keys") is not None:
        members = []
        for item in v["member_keys"].split(","):
            index, key = item.split(":")
            members.append((int(index), bytes.fromhex(key)))
        unlocker = (5, members)
    else:
        unlocker = (3, v.hex("key_file"))
    vault_id, master = unlock(config, backup if backup is not None else config, unlocker)
    expect_equal("vault id", vault_id, v.hex("vault_id"))
    expect_equal("master key", master, v.hex("master_key"))


def check_aead(v):
    plain = aead_open(ALGORITHMS[v["algorithm"]], v.hex("key"), v.hex("aad"), v.hex("sealed"))
    expect_equal("plaintext", plain, v.hex("plaintext"))


def check_aes_siv(v):
    siv = AESSIV(v.hex("key"))
    ad, ct = [v.hex("ad")], v.hex("ciphertext")
    if v["expect"] == "success":
        expect_equal("encryption", siv.encrypt(v.hex("plaintext"), ad), ct)
    try:
        plain = siv.decrypt(ct, ad)
    except InvalidTag:
        raise Failure("auth-failure") from None
    expect_equal("plaintext", plain, v.hex("plaintext"))


CHECKS = {
    "content-block": check_content_block,
    "name": check_name,
    "keyslot": check_keyslot,
    "file-header": check_header,
    "dir-id": check_header,
    "recovery-key": check_recovery_key,
    "key-schedule": check_key_schedule,
    "symlink": check_symlink,
    "xattr": check_xattr,
    "root-attr": check_root_attr,
    "aead": check_aead,
    "aes-siv": check_aes_siv,
}


def run_one(path):
    """Returns (kind, None) if the vector holds, else (kind, why not)."""
    try:
        v = V(parse_vector(path.read_text(encoding="utf-8")))
        kind, expect = v["kind"], v["expect"]
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        return "?", f"unreadable: {e!r}"
    check = CHECKS.get(kind)
    if check is None:
        return kind, f"unknown kind {kind!r}"
    try:
        check(v)
    except Failure as e:
        return kind, None if str(e) == expect else f"expected {expect}, got {e}"
    except AssertionError as e:
        if expect == "success":
            return kind, f"expected success, but {e}"
        return kind, f"expected {expect}, but it went through with a wrong answer ({e})"
    except (KeyError, ValueError) as e:
        return kind, f"malformed vector: {e!r}"
    except Exception as e:  # noqa: BLE001 - report, keep checking the rest
        return kind, f"checker error: {e!r}"
    return kind, None if expect == "success" else f"expected {expect}, but it succeeded"


def main(argv):
    verbose = "-v" in argv
    args = [a for a in argv if a != "-v"]
    default = Path(__file__).resolve().parents[2] / "testdata" / "vectors"
    directory = Path(args[0]) if args else Path(os.environ.get("ATREST_VECTORS_DIR") or default)
    _self_test_hchacha20()
    paths = sorted(p for p in directory.iterdir() if p.is_file())
    passed = failed = 0
    kinds = {}
    for path in paths:
        kind, problem = run_one(path)
        if problem is None:
            passed += 1
            kinds[kind] = kinds.get(kind, 0) + 1
            if verbose:
                print(f"ok   {path.name}")
        else:
            failed += 1
            print(f"FAIL {path.name}: {problem}")
    if not paths:
        print(f"no vectors in {directory}")
        failed += 1
    for kind in sorted(kinds):
        print(f"{kind:>14}: {kinds[kind]} vectors hold")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
