#!/usr/bin/env python3
"""Validates the fleet examples: deploy/cloud-init/enroll.yaml with
`cloud-init schema`, and the Ansible role with --syntax-check and a
--check run against localhost. Usage: check_deploy.py DEB (a built package;
the check run reads it). Needs Debian's cloud-init and ansible-core."""
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
run("cloud-init", "schema", "--config-file", "deploy/cloud-init/enroll.yaml")
play = ["ansible-playbook", "-i", "localhost,", "-c", "local", "deploy/ansible/site.yml"]
run(*play, "--syntax-check")
run(*play, "--check", "-e", f"atrest_deb={Path(deb).resolve()}",
    "-e", "atrest_authority=https://keys.invalid:7443",
    "-e", "atrest_ca_fingerprint=SHA256:" + "00" * 32, "-e", "atrest_token=T")
print("check_deploy: cloud-init schema valid; ansible syntax and check mode pass")
