#!/usr/bin/env python3
"""Checks that the vector checkers can fail: writes a copy of
testdata/vectors/ plus mutants of every vector (each field of a success
vector changed in turn; each failure vector relabelled `success` and as
every other failure of its kind), runs both checkers on that directory, and
reports any mutant a checker let through, or any original it refused.

    python3 tests/differential/mutate_vectors.py            # both checkers
    python3 tests/differential/mutate_vectors.py --python   # Python only

The Rust checker runs as `cargo test -p atrest-vault --test vectors` with
ATREST_VECTORS_DIR set. Exits non-zero on any surviving mutant.
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VECTORS = ROOT / "testdata" / "vectors"

FAILURES = {
    "content-block": ["auth-failure", "truncated"],
    "name": ["auth-failure", "parse-error", "invalid-name"],
    "keyslot": ["wrong-key", "tampered", "unknown-version", "parse-error"],
    "file-header": ["unknown-version", "parse-error"],
    "dir-id": ["unknown-version", "parse-error"],
    "recovery-key": ["checksum-error", "length-error", "character-error"],
    "key-schedule": [],
    "symlink": ["auth-failure", "parse-error"],
    "xattr": ["auth-failure", "parse-error", "not-ours"],
    "root-attr": ["auth-failure", "parse-error", "unknown-version"],
    "aead": ["auth-failure"],
    "aes-siv": ["auth-failure"],
}

# Fields whose change cannot show, by design.
SURVIVORS = [
    # A hole reads as zeros whatever the key, file and block number.
    (re.compile(r"^content-block-.*-hole-(full|partial)$"), {"content_key", "file_id", "block"}),
    # The primary copy is already unusable; the backup answers.
    (re.compile(r"^keyslot-(damaged-primary|garbage-primary|version-3-primary-only)$"), {"config"}),
]

HEX = re.compile(r"^(?:[0-9a-f]{2})*$")


def parse(text):
    lines = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        lines.append((key, value[1:] if value.startswith(" ") else value))
    return lines


def render(lines):
    return "".join(f"{k}: {v}\n" for k, v in lines)


def mutate_value(key, value):
    if key in ("block",) or key.startswith("argon2_") and value.isdigit():
        return str(int(value) + 1)
    if key == "algorithm":
        return "xchacha20-poly1305" if value == "aes-256-gcm" else "aes-256-gcm"
    if HEX.match(value) and key not in ("passphrase", "text", "recovery_key", "encrypted", "entry", "stored", "stored_name", "link"):
        if not value:
            return "00"
        b = bytearray(bytes.fromhex(value))
        b[len(b) // 2] ^= 0x01
        return b.hex()
    if key in ("text", "recovery_key"):
        i = next(i for i, c in enumerate(value) if c.isalnum())
        return value[:i] + ("2" if value[i] != "2" else "3") + value[i + 1:]
    if key in ("encrypted", "entry", "stored", "stored_name", "link"):
        i = len(value) - 10
        return value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1:]
    return value + "x"


def survivor_allowed(name, field):
    return any(p.match(name) and field in fields for p, fields in SURVIVORS)


def build(out):
    mutants = []
    for path in sorted(VECTORS.iterdir()):
        text = path.read_text(encoding="utf-8")
        (out / path.name).write_text(text, encoding="utf-8")
        lines = parse(text)
        fields = dict(lines)
        kind, expect = fields["kind"], fields["expect"]
        if expect == "success":
            for i, (key, value) in enumerate(lines):
                if key in ("kind", "expect", "comment") or survivor_allowed(path.name, key):
                    continue
                changed = list(lines)
                changed[i] = (key, mutate_value(key, value))
                name = f"{path.name}~{key}"
                (out / name).write_text(render(changed), encoding="utf-8")
                mutants.append(name)
        else:
            for other in ["success"] + [f for f in FAILURES[kind] if f != expect]:
                changed = [(k, other if k == "expect" else v) for k, v in lines]
                name = f"{path.name}~expect-{other}"
                (out / name).write_text(render(changed), encoding="utf-8")
                mutants.append(name)
    return mutants


def failed_names(output):
    names = set()
    for line in output.splitlines():
        m = re.match(r"^(?:FAIL )?([A-Za-z0-9._~-]+): ", line)
        if m:
            names.add(m.group(1))
    return names


def main(argv):
    with tempfile.TemporaryDirectory(prefix="atrest-mutants-") as tmp:
        out = Path(tmp)
        mutants = build(out)
        originals = [p.name for p in VECTORS.iterdir()]
        runs = [("python", [sys.executable, str(HERE / "check_vectors.py"), str(out)])]
        if "--python" not in argv:
            runs.append(("rust", ["cargo", "test", "-q", "-p", "atrest-vault", "--test", "vectors"]))
        bad = 0
        for label, cmd in runs:
            env = dict(os.environ, ATREST_VECTORS_DIR=str(out))
            r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            failed = failed_names(r.stdout + r.stderr)
            survived = [m for m in mutants if m not in failed]
            refused = [o for o in originals if o in failed]
            for m in survived:
                print(f"{label}: mutant survived: {m}")
            for o in refused:
                print(f"{label}: original failed: {o}")
            if r.returncode == 0:
                print(f"{label}: the checker passed a directory full of mutants")
                bad += 1
            print(f"{label}: {len(mutants) - len(survived)} of {len(mutants)} mutants caught, {len(refused)} originals refused")
            bad += len(survived) + len(refused)
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
