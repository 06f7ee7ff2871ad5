#!/usr/bin/env python3
"""Re-checks atrest's format 2 vectors (testdata/vectors-v2/log-*, meta-*,
block-*, map-* and witness-*, the generation reports of
testdata/remote/report-* and the version 2 unlock requests of
testdata/remote/request-v2-*) without any atrest code: segment header, record frames,
AAD, chain hash and record bodies (§16.12); the superblock, its MAC, page
references and sealed metadata pages (§16.4, §16.5); the content key
schedule and sealed blocks (§16.2, §16.9); and block maps, inline in object
records or in trees of map pages, walked from the superblock through the
object table (§16.6, §16.7, §16.9); and the local witness file (§16.17.5). All rebuilt here from the byte tables of
docs/format.md on top of the `cryptography` package (OpenSSL), like
check_vectors.py does for format 1.

    pip install cryptography
    python3 tests/differential/check_vectors_v2.py [VECTORS_DIR] [-v]

VECTORS_DIR defaults to $ATREST_VECTORS_V2_DIR, then to testdata/vectors-v2/
of this checkout. Exits non-zero if any vector fails, and ends with a line
`N passed, M failed`.
"""

import base64
import hashlib
import hmac
import json
import os
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_vectors import ALGORITHMS, Failure, _self_test_hchacha20, aead_open, hkdf  # noqa: E402

LOG_KEY = b"atrest v2 log key"
META_PAGE_KEY = b"atrest v2 metadata page key"
SUPERBLOCK_MAC = b"atrest v2 superblock mac"
DOMAIN_META_PAGE = b"atrest meta page v2"
DOMAIN_SUPERBLOCK = b"atrest superblock v2"
PAGE_SIZE = 4096
DOMAIN_LOG_RECORD = b"atrest log record v2"
DOMAIN_LOG_CHAIN = b"atrest log chain v2"
SEGMENT_MAGIC = b"ATRESTLG"
RECORD_MAGIC = b"ATLR"
SEGMENT_HEADER_LEN = 80
RECORD_HEADER_LEN = 24
MAX_BODY = 131072
MAX_PAYLOAD = 1048576
HEAD_LEN = 112
ENTRY_LEN = {1: 32, 2: 48}
OVERHEAD = {1: 12 + 16, 2: 24 + 16}


class Torn(Exception):
    """The record at this position ends the durable prefix."""


class Body:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise Failure("corrupt")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]


def need(cond):
    if not cond:
        raise Failure("corrupt")


def payload_len_of_body(kind, plain, alg):
    """Parses a body by the §16.12 table; returns the payload length it
    requires. Raises Failure("corrupt") for anything out of range."""
    e = ENTRY_LEN[alg]
    b = Body(plain)
    b.u64()  # time
    payload = 0
    if kind == 1:  # META
        need(1 <= b.u8() <= 12)
        h = b.u8()
        need(1 <= h <= 4)
        b.take(HEAD_LEN * h)
        n = b.u8()
        need(n <= 4)
        for _ in range(n):
            need(b.u8() in (1, 2))
            b.take(8 + 8 + 1)
            ln = b.u8()
            need(ln >= 1)
            b.take(ln)
        b.take(b.u32())
    elif kind == 2:  # WRITE
        b.take(HEAD_LEN + 8)
        c = b.u32()
        need(1 <= c <= 256)
        mode = b.u8()
        need(mode in (1, 2))
        b.take(8 + c * e)
        payload = c * 4096 if mode == 2 else 0
    elif kind == 3:  # TRUNCATE
        b.take(HEAD_LEN + 8)
        tail = b.u8()
        need(tail in (0, 1, 2))
        if tail:
            b.take(e)
        payload = 4096 if tail == 2 else 0
    elif kind == 4:
        b.take(16)
    elif kind == 5:
        b.take(8)
    elif kind == 6:  # MOUNT
        need(b.u8() in (1, 2, 3))
        b.take(b.u8())
        b.take(b.u8())
    elif kind == 7:
        b.take(40)
    elif kind == 8:
        b.take(40)
    elif kind == 9:  # WITNESSED
        b.take(48)
        w = b.u8()
        need(w in (1, 2))
        key = b.take(32)
        need(w == 1 or key == bytes(32))
    elif kind == 10:
        b.take(48 + 16)
    elif kind == 11:
        need(1 <= b.u8() <= 4)
        b.take(48)
    elif kind == 12:
        need(1 <= b.u8() <= 5)
        b.take(16)
    else:
        raise Failure("corrupt")
    need(b.pos == len(plain))
    return payload


def frame_at(data, pos, overhead):
    """The record header at `pos`, or Torn if short/badly framed."""
    h = data[pos:pos + RECORD_HEADER_LEN]
    if len(h) < 4 or len(h) < RECORD_HEADER_LEN and h[:4] == RECORD_MAGIC:
        raise Torn("short record header")
    if h[:4] != RECORD_MAGIC:
        raise Torn("bad record magic")
    if len(h) < RECORD_HEADER_LEN:
        raise Torn("short record header")
    sealed_len, payload_len, seq, kind = struct.unpack(">IIQB", h[4:21])
    if not (overhead <= sealed_len <= MAX_BODY) or payload_len % 4096 or payload_len > MAX_PAYLOAD:
        raise Torn("lengths out of range")
    if not 1 <= kind <= 12 or h[21:24] != b"\0\0\0":
        raise Torn("kind or reserved bytes")
    return sealed_len, payload_len, seq, kind


def sync_frame_after(data, pos, seq, overhead):
    """Whether a well-framed SYNC (kind 4) record header with a sequence
    number above `seq` starts at or after `pos`: the proof that record
    `seq` was acknowledged before it, so its failure is not a torn tail
    (§16.12)."""
    q = data.find(RECORD_MAGIC, pos)
    while q != -1:
        try:
            _, _, s, kind = frame_at(data, q, overhead)
            if kind == 4 and s > seq:
                return True
        except Torn:
            pass
        q = data.find(RECORD_MAGIC, q + 1)
    return False


def replay(v, data):
    alg = ALGORITHMS[v["algorithm"]]
    master = bytes.fromhex(v["master_key"])
    vault_id = bytes.fromhex(v["vault_id"])
    key = hkdf(master, vault_id, LOG_KEY)
    overhead = OVERHEAD[alg]
    need(len(data) >= SEGMENT_HEADER_LEN)
    need(data[:8] == SEGMENT_MAGIC)
    need(struct.unpack(">H", data[8:10])[0] == 2 and data[10:16] == bytes(6))
    need(data[16:32] == vault_id)
    need(struct.unpack(">Q", data[32:40])[0] == v["segment"])
    chain = bytes.fromhex(v["start"]["chain"])
    next_seq = v["start"]["next_seq"]
    pos = v["start"]["offset"]
    if pos == SEGMENT_HEADER_LEN:
        need(struct.unpack(">Q", data[40:48])[0] == next_seq and data[48:80] == chain)
    assert chain == hashlib.sha256(DOMAIN_LOG_CHAIN + vault_id).digest() or next_seq != 1
    records = []
    while pos < len(data):
        try:
            sl, pl, seq, kind = frame_at(data, pos, overhead)
            end = pos + RECORD_HEADER_LEN + sl + pl
            if end > len(data):
                raise Torn("short record")
            if seq != next_seq and not (kind == 10 and seq > next_seq):
                raise Torn("unexpected sequence number")
            aad = DOMAIN_LOG_RECORD + vault_id + struct.pack(">QBI", seq, kind, pl) + chain
            assert len(aad) == 81
            try:
                plain = aead_open(alg, key, aad, data[pos + RECORD_HEADER_LEN:pos + RECORD_HEADER_LEN + sl])
            except Failure:
                raise Torn("auth") from None
        except Torn:
            if sync_frame_after(data, pos, next_seq, overhead):
                # Acknowledged: changed, dropped or reordered, whatever
                # the failure.
                raise Failure("auth-failure", pos) from None
            return records, (pos, next_seq, chain, True)
        if payload_len_of_body(kind, plain, alg) != pl:
            raise Failure("corrupt", pos)
        records.append({"seq": seq, "kind": kind, "offset": pos,
                        "time": struct.unpack(">Q", plain[:8])[0], "body": plain.hex(), "payload_len": pl})
        chain = hashlib.sha256(DOMAIN_LOG_CHAIN + chain + data[pos:end]).digest()
        next_seq = seq + 1
        pos = end
    return records, (pos, next_seq, chain, False)


def check(v, data):
    try:
        records, (offset, next_seq, chain, torn) = replay(v, data)
    except Failure as f:
        want = v["expect"]
        if f.args[0] != want:
            raise AssertionError(f"{f.args[0]} where {want} was expected") from None
        if f.args[1:] != (v["error_offset"],):
            raise AssertionError(f"failure at {f.args[1:]} where {v['error_offset']} expected") from None
        return
    if v["expect"] != "success":
        raise AssertionError(f"success where {v['expect']} was expected")
    if records != v["records"]:
        raise AssertionError(f"records differ: {records} vs {v['records']}")
    want = v["end"]
    got = {"offset": offset, "next_seq": next_seq, "chain": chain.hex(), "torn": torn}
    if got != want:
        raise AssertionError(f"end {got} where {want} was expected")


def check_meta(v, data):
    """A metadata file: the chosen superblock (layout, MAC, fields) and
    every listed page (reference hash, AEAD under its page number, kind and
    owner, header, items); the same page under another number fails."""
    alg = ALGORITHMS[v["algorithm"]]
    master = bytes.fromhex(v["master_key"])
    vault_id = bytes.fromhex(v["vault_id"])

    def page(n):
        b = data[n * PAGE_SIZE:(n + 1) * PAGE_SIZE]
        assert len(b) == PAGE_SIZE, f"page {n} past the end"
        return b

    want = v["superblock"]
    index = want["page"]
    sb = page(index)
    assert sb[:8] == b"ATRESTSB", "superblock magic"
    assert struct.unpack(">H", sb[8:10])[0] == 2, "superblock version"
    assert sb[10] == alg, "content algorithm"
    assert struct.unpack(">I", sb[12:16])[0] == PAGE_SIZE and sb[16:32] == vault_id
    recent, acked = sb[282], sb[283]
    mac_at = 284 + 48 * (recent + acked)
    mac_key = hkdf(master, vault_id, SUPERBLOCK_MAC)
    mac = hmac.new(mac_key, DOMAIN_SUPERBLOCK + sb[:mac_at], hashlib.sha256).digest()
    assert hmac.compare_digest(mac, sb[mac_at:mac_at + 32]), "superblock MAC"
    assert not any(sb[mac_at + 32:]), "bytes after the MAC"
    k, seq = struct.unpack(">QQ", sb[32:48])
    assert k % 2 == index, "checkpoint k is written to page k mod 2"
    assert sb[284:332] == sb[32:80], "the first recent generation is this one"

    def ref(at):
        return {"page": struct.unpack(">Q", sb[at:at + 8])[0], "hash": sb[at + 8:at + 40].hex()}

    got = {
        "page": index, "state": sb[11], "checkpoint": k, "sequence": seq, "chain": sb[48:80].hex(),
        "replay_segment": struct.unpack(">Q", sb[80:88])[0],
        "replay_offset": struct.unpack(">Q", sb[88:96])[0],
        "config_generation": struct.unpack(">Q", sb[96:104])[0], "config_hash": sb[104:136].hex(),
        "object_table": ref(136), "object_table_depth": sb[176],
        "bitmap": ref(177), "bitmap_depth": sb[217],
        "page_count": struct.unpack(">Q", sb[218:226])[0],
        "next_object_id": struct.unpack(">Q", sb[226:234])[0],
        "recent": recent - 1, "acknowledged": acked,
    }
    assert got == want, f"superblock {got} where {want} was expected"
    for root in ("object_table", "bitmap"):
        r = got[root]
        assert hashlib.sha256(page(r["page"])).hexdigest() == r["hash"], f"{root} root hash"
    key = hkdf(master, vault_id, META_PAGE_KEY)
    body_len = PAGE_SIZE - OVERHEAD[alg]
    for p in v["pages"]:
        n = p["page"]
        sealed = page(n)
        assert hashlib.sha256(sealed).hexdigest() == p["hash"], f"page {n} hash"

        def aad(number):
            return DOMAIN_META_PAGE + vault_id + struct.pack(">QBQ", number, p["kind"], p["owner"])

        assert len(aad(n)) == 52
        try:
            body = aead_open(alg, key, aad(n), sealed)
        except Failure:
            raise AssertionError(f"page {n} does not open") from None
        assert len(body) == body_len
        header = (body[0], body[1], struct.unpack(">H", body[2:4])[0], body[4:8],
                  struct.unpack(">Q", body[8:16])[0])
        assert header == (p["kind"], p["level"], p["count"], bytes(4), p["owner"]), f"page {n} header"
        assert body[16:].hex() == p["items"], f"page {n} items"
        if p["kind"] == KIND_XATTR:
            check_xattr_items(body[16:], p["count"], n)
        try:
            aead_open(alg, key, aad(n + 1), sealed)
        except Failure:
            pass
        else:
            raise AssertionError(f"page {n} opens as page {n + 1}")


KIND_XATTR = 7
XATTR_INLINE_MAX = 1024


def check_xattr_items(items, count, n):
    """An xattr page's items (§16.10): `next` reference, then `count`
    items sorted by name, each `n ‖ v ‖ form ‖ name ‖ value or blob
    reference`, a value inline exactly when it is at most 1,024 bytes; zero
    after the last item."""
    assert count >= 1, f"xattr page {n} without items"
    pos, last = 40, None
    for _ in range(count):
        name_len = items[pos]
        value_len = struct.unpack(">I", items[pos + 1:pos + 5])[0]
        form = items[pos + 5]
        name = items[pos + 6:pos + 6 + name_len]
        assert 1 <= name_len <= 255 and name.startswith(b"user.") and len(name) > 5, f"xattr page {n} name"
        assert b"\0" not in name and (last is None or last < name), f"xattr page {n} name order"
        assert value_len <= 65536, f"xattr page {n} value length"
        pos += 6 + name_len
        if form == 0:
            assert value_len <= XATTR_INLINE_MAX, f"xattr page {n}: a long value inline"
            pos += value_len
        else:
            assert form == 1 and value_len > XATTR_INLINE_MAX, f"xattr page {n}: value form"
            assert struct.unpack(">Q", items[pos:pos + 8])[0] >= 2, f"xattr page {n}: blob reference"
            pos += 40
        last = name
    assert not any(items[pos:]), f"xattr page {n}: bytes after the last item"


CONTENT_KEY_V2 = b"atrest v2 content key"
FILE_KEY_V2 = b"atrest v2 file key"
BLOCK = 4096
OBJECTS_PER_LEAF = 15
FANOUT = 101
KIND_OBJECT_LEAF, KIND_OBJECT_INDEX, KIND_MAP_LEAF, KIND_MAP_INDEX = 1, 2, 5, 6


def entries_per_leaf(alg):
    """Block map entries per leaf page: (4,096 − o − 16) // e."""
    return (PAGE_SIZE - OVERHEAD[alg] - 16) // ENTRY_LEN[alg]


def open_block(alg, master, vault_id, file_id, n, entry, ciphertext):
    """§16.9: the block's nonce and tag from its map entry around its
    4,096 data file bytes, opened under K_file2 with AAD file_id ‖ n."""
    e, o = ENTRY_LEN[alg], OVERHEAD[alg]
    nonce_len = o - 16
    assert len(entry) == e and len(ciphertext) == BLOCK
    assert entry[o] == 1 and not any(entry[o + 1:]), "a sealed entry: state 1, then zeros"
    content_key = hkdf(master, vault_id, CONTENT_KEY_V2)
    file_key = hkdf(content_key, file_id, FILE_KEY_V2)
    aad = file_id + struct.pack(">Q", n)
    return aead_open(alg, file_key, aad, entry[:nonce_len] + ciphertext + entry[nonce_len:o])


def check_block(v):
    alg = ALGORITHMS[v["algorithm"]]
    master, vault_id = bytes.fromhex(v["master_key"]), bytes.fromhex(v["vault_id"])
    file_id = bytes.fromhex(v["file_id"])
    content_key = hkdf(master, vault_id, CONTENT_KEY_V2)
    assert content_key.hex() == v["content_key"], "K_content2"
    assert hkdf(content_key, file_id, FILE_KEY_V2).hex() == v["file_key"], "K_file2"
    assert (file_id + struct.pack(">Q", v["block"])).hex() == v["aad"], "AAD"
    try:
        plain = open_block(alg, master, vault_id, file_id, v["block"],
                           bytes.fromhex(v["entry"]), bytes.fromhex(v["ciphertext"]))
    except Failure as e:
        assert v["expect"] == "auth-failure", f"{e} where {v['expect']} was expected"
        return
    assert v["expect"] == "success", "opened where it must fail"
    assert plain.hex() == v["plaintext"], "plaintext"


def check_map(v, meta):
    """Walks from the superblock to each listed file's record and its map:
    the record's size, INLINE flag and form, every sealed entry (each
    opening its data file block), every other block a hole."""
    alg = ALGORITHMS[v["algorithm"]]
    master, vault_id = bytes.fromhex(v["master_key"]), bytes.fromhex(v["vault_id"])
    page_key = hkdf(master, vault_id, META_PAGE_KEY)
    e, o = ENTRY_LEN[alg], OVERHEAD[alg]

    def page_bytes(n):
        b = meta[n * PAGE_SIZE:(n + 1) * PAGE_SIZE]
        assert len(b) == PAGE_SIZE, f"page {n} past the end"
        return b

    def read(reference, kind, owner, level):
        n, digest = struct.unpack(">Q", reference[:8])[0], reference[8:40]
        sealed = page_bytes(n)
        assert hashlib.sha256(sealed).digest() == digest, f"page {n} hash"
        aad = DOMAIN_META_PAGE + vault_id + struct.pack(">QBQ", n, kind, owner)
        try:
            body = aead_open(alg, page_key, aad, sealed)
        except Failure:
            raise AssertionError(f"page {n} does not open") from None
        assert (body[0], body[1], body[4:8], struct.unpack(">Q", body[8:16])[0]) == (kind, level, bytes(4), owner)
        return struct.unpack(">H", body[2:4])[0], body[16:]

    def null(reference):
        return not any(reference)

    sb = page_bytes(v["superblock_page"])
    assert sb[:8] == b"ATRESTSB"
    recent, acked = sb[282], sb[283]
    mac_at = 284 + 48 * (recent + acked)
    mac_key = hkdf(master, vault_id, SUPERBLOCK_MAC)
    mac = hmac.new(mac_key, DOMAIN_SUPERBLOCK + sb[:mac_at], hashlib.sha256).digest()
    assert hmac.compare_digest(mac, sb[mac_at:mac_at + 32]), "superblock MAC"

    def item(root, depth, key, per_leaf, leaf_kind, index_kind, owner, item_len):
        """Item `key` of a radix tree (§16.7, §16.9); None inside a null subtree."""
        span = per_leaf * FANOUT ** depth
        if key >= span or null(root):
            return None
        reference, level = root, depth
        while level > 0:
            child = per_leaf * FANOUT ** (level - 1)
            count, items = read(reference, index_kind, owner, level)
            assert count == FANOUT
            slot, key = divmod(key, child)
            reference = items[slot * 40:(slot + 1) * 40]
            if null(reference):
                return None
            level -= 1
        count, items = read(reference, leaf_kind, owner, 0)
        assert count == per_leaf
        assert not any(items[per_leaf * item_len:]), "bytes after the items"
        return items[key * item_len:(key + 1) * item_len]

    for f in v["files"]:
        record = item(sb[136:176], sb[176], f["id"], OBJECTS_PER_LEAF, KIND_OBJECT_LEAF,
                      KIND_OBJECT_INDEX, 0, 256)
        assert record is not None, f"object {f['id']} not in the object table"
        assert struct.unpack(">Q", record[:8])[0] == f["id"] and record[8] == 1, "a regular file"
        size = struct.unpack(">Q", record[24:32])[0]
        assert size == f["size"], "size"
        assert record[96:112].hex() == f["file_id"], "file id"
        blocks = -(-size // BLOCK)
        inline = bool(record[9] & 1)
        assert inline == f["inline"] == (blocks <= 96 // e), "INLINE flag and form"
        content = record[112:208]
        if inline:
            assert not any(content[blocks * e:]), "zeros after the inline entries"
            entries = {n: content[n * e:(n + 1) * e] for n in range(blocks)}

            def entry(n):
                return entries[n]
        else:
            root, depth = content[:40], content[40]
            assert not any(content[41:]), "zeros after the map root"
            assert depth == f["depth"] and struct.unpack(">Q", root[:8])[0] == f["root"]["page"]
            assert root[8:40].hex() == f["root"]["hash"], "map root hash"

            def entry(n):
                found = item(root, depth, n, entries_per_leaf(alg), KIND_MAP_LEAF,
                             KIND_MAP_INDEX, f["id"], e)
                return found if found is not None else bytes(e)
        sealed = {s["block"]: s for s in f["sealed"]}
        checks = set(sealed) | {0, blocks - 1} | set(range(0, blocks, 97))
        for n in sorted(x for x in checks if 0 <= x < blocks):
            got = entry(n)
            if n not in sealed:
                assert not any(got), f"block {n} is a hole"
                continue
            assert got.hex() == sealed[n]["entry"], f"entry of block {n}"
            try:
                open_block(alg, master, vault_id, bytes.fromhex(f["file_id"]), n, got,
                           bytes.fromhex(sealed[n]["ciphertext"]))
            except Failure:
                raise AssertionError(f"block {n} does not open with its entry") from None


def _b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _lp(data):
    return struct.pack(">I", len(data)) + data


REASONS = {"mount": 1, "periodic": 2, "heartbeat": 3, "unmount": 4, "lock": 5, "repair": 6,
           "migrate": 7, "rollback_accepted": 8}
STATES = {"clean": 1, "open": 2}


def _lineage(generations):
    """n × (k ‖ S ‖ h), n from 1 to 64."""
    if not 1 <= len(generations) <= 64:
        raise AssertionError("lineage of 1 to 64 generations")
    return b"".join(struct.pack(">QQ", g["checkpoint"], g["seq"]) + _b64url(g["chain"])
                    for g in generations)


def request_signed_bytes(r):
    """An unlock request of version 2 (§3.2's fields, version byte 2, then
    §16.17.2's claim and lineage), rebuilt from the JSON wire form."""
    c = r["generation"]
    claim = (struct.pack(">QQ", c["checkpoint"], c["seq"]) + _b64url(c["chain"])
             + struct.pack(">Q", c["config_generation"]))
    return (_lp(b"atrest unlock request v1") + b"\x02" + _lp(r["host_id"].encode())
            + _lp(_b64url(r["vault_id"])) + _lp(bytes([r["keyslot"]]))
            + _lp(_b64url(r["key_id"])) + _lp(_b64url(r["blinded"])) + _lp(_b64url(r["nonce"]))
            + _lp(struct.pack(">Q", r["timestamp"])) + _lp(r["boot_id"].encode())
            + _lp(claim) + _lp(_lineage(c["lineage"])))


def report_signed_bytes(r):
    """§16.17.1's byte table, rebuilt from the JSON wire form."""
    lineage = _lineage(r["lineage"])
    return (_lp(b"atrest generation report v1") + b"\x01" + _lp(r["host_id"].encode())
            + _lp(_b64url(r["vault_id"])) + _lp(struct.pack(">Q", r["checkpoint"]))
            + _lp(struct.pack(">Q", r["seq"])) + _lp(_b64url(r["chain"]))
            + _lp(struct.pack(">Q", r["config_generation"]))
            + _lp(bytes([REASONS[r["reason"]]])) + _lp(bytes([STATES[r["state"]]]))
            + _lp(lineage) + _lp(r["boot_id"].encode()) + _lp(_b64url(r["nonce"]))
            + _lp(struct.pack(">Q", r["timestamp"])))


def check_report(fields):
    """A generation-report vector of testdata/remote/ (`name: value` lines):
    the signed bytes rebuilt from the wire form, and the Ed25519 signature
    checked over them (RFC 8032; `cryptography` verifies strictly enough
    for these vectors, whose failures are changed fields)."""
    check_signed(fields, "signed_report", "report", report_signed_bytes)


def check_request_v2(fields):
    """An unlock-request vector of version 2 (`request-v2-*`), as
    `check_report`. A claim dropped after signing is read as version 1,
    whose bytes were not what was signed."""
    def signed_bytes(r):
        return request_signed_bytes(r) if "generation" in r else None
    check_signed(fields, "signed_request", "request", signed_bytes)


def check_signed(fields, field, inner, signed_bytes):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    try:
        signed = json.loads(fields[field])
        message = signed_bytes(signed[inner])
    except (KeyError, ValueError, AssertionError):
        got = "parse-error"
    else:
        if message is None:
            got = "bad-signature"
        elif message.hex() != fields["signed_bytes"]:
            raise AssertionError("signed bytes differ from the byte table")
        else:
            try:
                Ed25519PublicKey.from_public_bytes(bytes.fromhex(fields["public_key"])).verify(
                    _b64url(signed["signature"]), message)
                got = "success"
            except InvalidSignature:
                got = "bad-signature"
    if got != fields["expect"]:
        raise AssertionError(f"checked as {got}, expected {fields['expect']}")


WITNESS_MAC = b"atrest v2 witness mac"
DOMAIN_LOCAL_WITNESS = b"atrest local witness v1"


def check_witness(v):
    """The local witness file (§16.17.5): 122 bytes, the last 32 an
    HMAC-SHA256 under K_witness = HKDF(VMK, vault_id, "atrest v2 witness
    mac") of the domain tag and the 90 bytes before it."""
    master, vault_id = bytes.fromhex(v["master_key"]), bytes.fromhex(v["vault_id"])
    data = bytes.fromhex(v["file"])
    if len(data) != 122 or data[:8] != b"ATRESTWT":
        raise AssertionError("not a 122-byte witness file")
    version = struct.unpack(">H", data[8:10])[0]
    if version != 1:
        got = "version"
    else:
        key = hkdf(master, vault_id, WITNESS_MAC)
        mac = hmac.new(key, DOMAIN_LOCAL_WITNESS + data[:90], hashlib.sha256).digest()
        if not hmac.compare_digest(mac, data[90:]):
            got = "mac"
        elif data[10:26] != vault_id:
            got = "other-vault"
        else:
            got = "ok"
            k, s = struct.unpack(">QQ", data[26:42])
            chain = data[42:74]
            config, time_ms = struct.unpack(">QQ", data[74:90])
            fields = (k, s, chain.hex(), config, time_ms)
            if fields != (v["checkpoint"], v["sequence"], v["chain"], v["config_generation"],
                          v["time_ms"]):
                raise AssertionError(f"fields {fields}")
    if got != v["expect"]:
        raise AssertionError(f"read as {got}, expected {v['expect']}")


def main():
    args = [a for a in sys.argv[1:] if a != "-v"]
    verbose = "-v" in sys.argv[1:]
    default = Path(__file__).resolve().parents[2] / "testdata" / "vectors-v2"
    root = Path(args[0] if args else os.environ.get("ATREST_VECTORS_V2_DIR", default))
    _self_test_hchacha20()
    passed = failed = 0
    for path in sorted([*root.glob("log-*.json"), *root.glob("meta-*.json"),
                        *root.glob("block-*.json"), *root.glob("map-*.json"),
                        *root.glob("witness-*.json")]):
        v = json.loads(path.read_text())
        try:
            if v.get("kind") == "log-segment":
                check(v, path.with_suffix(".bin").read_bytes())
            elif v.get("kind") == "meta-file":
                check_meta(v, path.with_suffix(".bin").read_bytes())
            elif v.get("kind") == "block":
                check_block(v)
            elif v.get("kind") == "block-map":
                check_map(v, path.with_suffix(".bin").read_bytes())
            elif v.get("kind") == "local-witness":
                check_witness(v)
            else:
                raise AssertionError(f"unknown kind {v.get('kind')}")
            passed += 1
            if verbose:
                print(f"ok    {path.name}")
        except AssertionError as e:
            failed += 1
            print(f"FAIL  {path.name}: {e}")
    remote = Path(__file__).resolve().parents[2] / "testdata" / "remote"
    for path in sorted([*remote.glob("report-*"), *remote.glob("request-v2-*")]):
        fields = dict(line.split(": ", 1) for line in path.read_text().splitlines() if ": " in line)
        try:
            if fields.get("kind") == "generation-report":
                check_report(fields)
            elif fields.get("kind") == "unlock-request":
                check_request_v2(fields)
            else:
                raise AssertionError(f"unknown kind {fields.get('kind')}")
            passed += 1
            if verbose:
                print(f"ok    remote/{path.name}")
        except AssertionError as e:
            failed += 1
            print(f"FAIL  remote/{path.name}: {e}")
    if passed == 0:
        failed += 1
        print(f"no vectors in {root}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
