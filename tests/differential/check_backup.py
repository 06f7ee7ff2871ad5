#!/usr/bin/env python3
"""Reads atrest's backup repositories of format 1 (testdata/backup-v1/)
and format 2 (testdata/backup-v2/) without any atrest code, from
docs/format.md §18 alone: for format 2, unwraps the master key from its
key-file and vault keyslots and checks their MACs (§18.6); derives the
keys, opens the config, every index file, pack trailer, blob, tree and
snapshot, checks every name and blob id (keyed BLAKE3), rebuilds each file
from its blobs and compares kinds, modes, mtimes, contents and symlink
targets with vectors.json. Then flips one byte of a pack and expects a
failure.

    pip install cryptography blake3 zstandard
    python3 tests/differential/check_backup.py [VECTORS_DIR...]

With no directory, both testdata/backup-v1 and testdata/backup-v2.

Ends with `N passed, M failed`; exits non-zero on any failure.
"""

import base64
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path

import blake3
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_vectors import Failure, aead_open, hkdf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
AES_GCM = 1


def canonical(domain, version, *fields):
    out = struct.pack(">I", len(domain)) + domain + bytes([version])
    for f in fields:
        out += struct.pack(">I", len(f)) + f
    return out


def unwrap_slot(path, rid, slot_id, kind, secret):
    """The master key from keyslot object keys/<id> of a key-file (3),
    remote (4) or vault (6) slot, its MAC checked under the key it gave
    (§18.6), and the slot's parameters."""
    data = (path / "keys" / f"{slot_id:02x}").read_bytes()
    if data[:4] != b"ATRK" or data[4] != 1 or data[5:21] != rid:
        raise Failure("keyslot header")
    record, tag = data[21:-32], data[-32:]
    if record[0] != slot_id or record[1] != kind:
        raise Failure("keyslot id or kind")
    (plen,) = struct.unpack(">H", record[2:4])
    params = record[4:4 + plen]
    tlen = record[4 + plen]
    (wlen,) = struct.unpack(">H", record[5 + plen + tlen:7 + plen + tlen])
    wrapped = record[7 + plen + tlen:]
    if wlen != 60 or len(wrapped) != 60:
        raise Failure("wrapped key length")
    kek = hkdf(secret, rid, b"atrest v1 backup keyslot wrap" + bytes([kind]))
    aad = b"atrest backup keyslot v1" + rid + bytes([slot_id, kind]) + params
    master = aead_open(AES_GCM, kek, aad, wrapped)
    mac_key = hkdf(master, rid, b"atrest v1 backup keyslot mac")
    if not hmac.compare_digest(hmac.new(mac_key, data[:-32], hashlib.sha256).digest(), tag):
        raise Failure("keyslot MAC")
    return master, params


class Repo:
    def __init__(self, path, master):
        self.path = path
        config = (path / "config").read_bytes()
        if config[:4] != b"ATRB" or config[4] not in (1, 2):
            raise Failure("config header")
        self.version = config[4]
        header = 37 if self.version == 1 else 21
        self.rid = config[5:21]
        self.bound = config[21:37] if self.version == 1 else None
        self.id_key = hkdf(master, self.rid, b"atrest v1 backup id key")
        self.object_key = hkdf(master, self.rid, b"atrest v1 backup object key")
        plain = aead_open(AES_GCM, self.object_key, self.file_aad("config", b""), config[header:])
        if plain[:header] != config[:header]:
            raise Failure("config header copy")
        self.config = json.loads(plain[header:])
        self.index = {}
        for f in sorted((path / "index").iterdir()):
            self.read_index(f)
        self.salts = {}

    def keyed(self, data):
        return blake3.blake3(data, key=self.id_key).digest()

    def file_aad(self, what, extra):
        return canonical(b"atrest backup file v1", 1, self.rid, what.encode(), extra)

    def read_index(self, f):
        sealed = f.read_bytes()
        if self.keyed(sealed).hex() != f.name:
            raise Failure(f"index {f.name}: name")
        plain = aead_open(AES_GCM, self.object_key, self.file_aad("index", b""), sealed)
        if len(plain) % 82:
            raise Failure("index length")
        for i in range(0, len(plain), 82):
            e = plain[i:i + 82]
            blob, pack, kind = e[:32], e[32:64], e[64]
            offset, sealed_len, raw_len = struct.unpack(">QII", e[65:81])
            self.index[blob] = (pack, kind, offset, sealed_len, raw_len, e[81])

    def pack_path(self, pack):
        h = pack.hex()
        return self.path / "data" / h[:2] / h

    def pack_key(self, pack):
        data = self.pack_path(pack).read_bytes()
        if data[:4] != b"ATRP" or data[4] != 1:
            raise Failure("pack header")
        return hkdf(self.object_key, data[8:40], b"atrest v1 backup pack key"), data

    def blob(self, blob_id):
        pack, kind, offset, sealed_len, raw_len, compressed = self.index[blob_id]
        key, data = self.pack_key(pack)
        aad = canonical(b"atrest backup blob v1", 1, self.rid, bytes([kind]), blob_id, bytes([compressed]))
        body = aead_open(AES_GCM, key, aad, data[offset:offset + sealed_len])
        plain = zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_len) if compressed else body
        if len(plain) != raw_len or self.keyed(plain) != blob_id:
            raise Failure(f"blob {blob_id.hex()}: content does not match its id")
        return plain

    def check_packs(self):
        """Every pack: its name, trailer and each blob it lists."""
        n = 0
        for d in sorted((self.path / "data").iterdir()):
            for f in sorted(d.iterdir()):
                data = f.read_bytes()
                if self.keyed(data).hex() != f.name:
                    raise Failure(f"pack {f.name}: name")
                key = hkdf(self.object_key, data[8:40], b"atrest v1 backup pack key")
                (tlen,) = struct.unpack(">I", data[-4:])
                trailer = aead_open(AES_GCM, key, self.file_aad("pack trailer", data[:40]),
                                    data[len(data) - 4 - tlen:-4])
                for i in range(0, len(trailer), 50):
                    e = trailer[i:i + 50]
                    if self.index.get(e[1:33], (None,))[0] != bytes.fromhex(f.name):
                        raise Failure("trailer entry not in the index")
                    self.blob(e[1:33])
                    n += 1
        return n


def b64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def walk(repo, tree_id, prefix, out):
    tree = json.loads(repo.blob(bytes.fromhex(tree_id)))
    for node in tree["nodes"]:
        path = prefix + [b64(node["name"]).decode()]
        out["/".join(path)] = node
        if node["kind"] == "dir":
            walk(repo, node["subtree"], path, out)


def main():
    bases = [Path(a) for a in sys.argv[1:]] or [ROOT / "testdata/backup-v1", ROOT / "testdata/backup-v2"]
    passed = failed = 0
    for base in bases:
        p, f = check(base)
        passed, failed = passed + p, failed + f
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


def check(base):
    v = json.loads((base / "vectors.json").read_text())
    passed = failed = 0

    def case(name, fn):
        nonlocal passed, failed
        try:
            fn()
            passed += 1
        except Exception as e:  # noqa: BLE001 -- report and go on
            failed += 1
            print(f"FAIL {base.name} {name}: {type(e).__name__}: {e}")

    master = bytes.fromhex(v["master_key"])
    repo = Repo(base / "repo", master)

    def config():
        if repo.config["chunk_avg"] != v["chunk"]["avg"]:
            raise Failure("config values")
        if repo.version == 1 and repo.bound.hex() != v["bound_vault"]:
            raise Failure("bound vault")

    def keyslots():
        if repo.version == 1:
            if (base / "repo" / "keys").exists():
                raise Failure("format 1 has no keyslots")
            return
        by_file, _ = unwrap_slot(base / "repo", repo.rid, v["key_file_slot"], 3, bytes.fromhex(v["key_file"]))
        by_vault, params = unwrap_slot(base / "repo", repo.rid, v["vault_slot"], 6,
                                       bytes.fromhex(v["vault_backup_key"]))
        if by_file != master or by_vault != master or params.hex() != v["bound_vault"]:
            raise Failure("a keyslot gave another key")
        # A remote slot (kind 4): its secret is the exchange key the
        # authority's answer unblinds to; its parameters (§4.3.1) start
        # with their version and the authority's URL.
        by_authority, remote = unwrap_slot(base / "repo", repo.rid, v["remote_slot"], 4,
                                           bytes.fromhex(v["remote_exchange_key"]))
        if by_authority != master:
            raise Failure("the remote keyslot gave another key")
        url = b"https://keys.example:7443"
        if remote[0] != 1 or remote[1] != len(url) or remote[2:2 + len(url)] != url:
            raise Failure("remote keyslot parameters")
        try:
            unwrap_slot(base / "repo", repo.rid, v["key_file_slot"], 3, bytes(32))
        except Failure:
            return
        raise Failure("a wrong key file opened a keyslot")

    def packs():
        if repo.check_packs() != len(repo.index):
            raise Failure("not every indexed blob is in a pack")

    def snapshot():
        f = base / "repo" / "snapshots" / v["snapshot"]
        sealed = f.read_bytes()
        if repo.keyed(sealed).hex() != f.name:
            raise Failure("snapshot name")
        snap = json.loads(aead_open(AES_GCM, repo.object_key, repo.file_aad("snapshot", b""), sealed))
        nodes = {}
        walk(repo, snap["tree"], [], nodes)
        for e in v["entries"]:
            node = nodes[v["root"] + "/" + e["path"]]
            if node["kind"] != e["kind"] or node["mode"] != e["mode"]:
                raise Failure(f"{e['path']}: kind or mode")
            if (node["mtime_sec"], node["mtime_nsec"]) != (e["mtime_sec"], e["mtime_nsec"]):
                raise Failure(f"{e['path']}: mtime")
            if e["kind"] == "file":
                data = b"".join(repo.blob(bytes.fromhex(c)) for c in node.get("content", []))
                if hashlib.sha256(data).hexdigest() != e["sha256"]:
                    raise Failure(f"{e['path']}: content")
            if e["kind"] == "symlink" and b64(node["target"]).decode() != e["target"]:
                raise Failure(f"{e['path']}: target")

    def tamper():
        pack = next(next((base / "repo" / "data").iterdir()).iterdir())
        data = bytearray(pack.read_bytes())
        data[50] ^= 1
        key = hkdf(repo.object_key, bytes(data[8:40]), b"atrest v1 backup pack key")
        for blob_id, (p, kind, offset, sealed_len, _, compressed) in repo.index.items():
            if p.hex() == pack.name and offset <= 50 < offset + sealed_len:
                aad = canonical(b"atrest backup blob v1", 1, repo.rid, bytes([kind]), blob_id, bytes([compressed]))
                try:
                    aead_open(AES_GCM, key, aad, bytes(data[offset:offset + sealed_len]))
                except Failure:
                    return
                raise Failure("a flipped byte opened")
        raise Failure("no blob at offset 50")

    for name, fn in [("config", config), ("keyslots", keyslots), ("packs", packs), ("snapshot", snapshot),
                     ("tamper", tamper)]:
        case(name, fn)
    return passed, failed


if __name__ == "__main__":
    sys.exit(main())
