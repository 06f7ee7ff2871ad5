#!/usr/bin/env python3
"""Validates the fleet examples: deploy/cloud-init/{enroll,scratch}.yaml with
`cloud-init schema`, and the Ansible role with --syntax-check, a --check
run against localhost, and a real run against a throw-away copy of this
machine with a real key authority (tests/deploy/run_role.sh: an overlay
chroot in its own mount and network namespace). Usage: check_deploy.py DEB
(a built package). Needs root, Debian's cloud-init and ansible-core."""
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[2]


def run(*cmd):
    print("+", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=root)
    if r.returncode != 0:
        sys.exit(f"check_deploy: failed ({r.returncode}): {' '.join(cmd)}")


deb = sys.argv[1] if len(sys.argv) > 1 else sys.exit("usage: check_deploy.py DEB")
for example in ("enroll.yaml", "scratch.yaml"):
    run("cloud-init", "schema", "--config-file", f"deploy/cloud-init/{example}")
play = ["ansible-playbook", "-i", "localhost,", "-c", "local", "deploy/ansible/site.yml"]
run(*play, "--syntax-check")
run(*play, "--check", "-e", f"atrest_deb={Path(deb).resolve()}",
    "-e", "atrest_authority=https://keys.invalid:7443",
    "-e", "atrest_ca_fingerprint=SHA256:" + "00" * 32, "-e", "atrest_token=T")
run("bash", "tests/deploy/run_role.sh", str(Path(deb).resolve()))
print("check_deploy: cloud-init schema valid; ansible syntax, check mode and a real run pass")
