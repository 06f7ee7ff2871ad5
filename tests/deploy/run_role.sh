#!/usr/bin/env bash
# Runs the Ansible role of deploy/ansible for real (not in check mode)
# against a throw-away copy of this machine, with a real key authority:
#
# - a private mount and network namespace (unshare): nothing mounted here
#   is seen outside, and the only network is that namespace's loopback;
# - a chroot whose root is an overlay of / with its upper layer on tmpfs,
#   so the package, the vault, /etc/atrest and the enabled units land in
#   memory and vanish with the namespace;
# - `atrest keyd serve` (the package's own binary) on 127.0.0.1:7443 in
#   that namespace, and a one-time token from it.
#
# Then it checks what the role did: the package installed, the vault made
# and enrolled with only the remote keyslot left, the throw-away key file
# shredded, the vault listed in /etc/atrest/vaults, atrest-unlock@data and
# atrest-reboot-planned enabled; that the vault unlocks through the
# authority alone and `atrest doctor` finds its authority reachable; and
# that a second run changes nothing.
#
#   bash tests/deploy/run_role.sh DEB        (root; util-linux, ansible-core)
set -euo pipefail

if [ "${1:-}" != --inside ]; then
    [ "$(id -u)" = 0 ] || { echo "run_role.sh needs root (namespaces, mounts, chroot)" >&2; exit 1; }
    [ -n "${1:-}" ] || { echo "usage: run_role.sh DEB" >&2; exit 2; }
    deb=$(realpath "$1")
    work=$(mktemp -d /tmp/atrest-role.XXXXXX)
    # Removed once the namespace, and with it every mount on $work, is gone.
    trap 'rm -rf "$work"' EXIT
    unshare --mount --net --fork bash "$0" --inside "$work" "$deb"
    exit
fi

work=$2
deb=$3
repo=$(cd "$(dirname "$0")/../.." && pwd)
step() { printf -- '--- %s\n' "$*"; }
fail() { echo "run_role.sh: $*" >&2; exit 1; }

mount --make-rprivate /
ip link set lo up
mount -t tmpfs -o mode=0700 tmpfs "$work"
mkdir "$work"/{upper,work,root,keyd,pkg}
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
root="$work/root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
cp "$deb" "$root/tmp/atrest.deb"
cp -r "$repo/deploy" "$root/tmp/deploy"
# SYSTEMD_OFFLINE=1: systemctl edits unit symlinks and skips what needs a
# running systemd (daemon-reload), as in an image build.
in_root() {
    chroot "$root" env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        SYSTEMD_OFFLINE=1 "$@"
}
step "a throw-away root (overlay of / on tmpfs) in its own mount and network namespace"

# The authority, from the package's own binary, outside the chroot.
dpkg-deb -x "$deb" "$work/pkg"
atrest="$work/pkg/usr/bin/atrest"
fingerprint=$("$atrest" keyd init --data-dir "$work/keyd" --listen 127.0.0.1:7443)
"$atrest" keyd serve --data-dir "$work/keyd" >"$work/keyd.out" 2>"$work/keyd.err" &
keyd=$!
trap 'kill "$keyd" 2>/dev/null || true' EXIT
# Ready once it printed its address (it does so after binding).
until grep -q '^listening on' "$work/keyd.out"; do
    kill -0 "$keyd" 2>/dev/null || fail "keyd serve exited: $(cat "$work/keyd.err")"
    sleep 0.1
done
token=$(ATREST_KEYD_DIR="$work/keyd" "$atrest" keyd token create --group web)
step "key authority on https://127.0.0.1:7443 ($fingerprint)"

play() {
    # This machine's PID 1 is not systemd, so Ansible would skip the unit
    # task; the chroot has systemd's files, and `systemctl enable` works
    # offline there (it only makes the symlinks), so the task runs.
    in_root ansible-playbook -i localhost, -c local /tmp/deploy/ansible/site.yml \
        -e atrest_deb=/tmp/atrest.deb \
        -e atrest_authority=https://127.0.0.1:7443 \
        -e "atrest_ca_fingerprint=$fingerprint" \
        -e "atrest_token=$token" \
        -e ansible_service_mgr=systemd
}
first=$(play) || { echo "$first" >&2; fail "the role failed"; }
grep -A2 '^PLAY RECAP' <<<"$first"
step "the role ran"

in_root dpkg-query -W -f='${Status}\n' atrest | grep -qx 'install ok installed' \
    || fail "the package is not installed"
slots=$(in_root atrest keyslot list /srv/data.enc --json)
python3 - "$slots" <<'PY' || fail "the vault's keyslots are not one remote slot: $slots"
import json, sys
text = sys.argv[1].strip()
slots = json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines()]
assert [s["kind"] for s in slots] == ["remote"], slots
PY
[ ! -e "$root/run/atrest/init.key" ] || fail "the throw-away key file was left in /run/atrest"
grep -qx /srv/data.enc "$root/etc/atrest/vaults" || fail "/srv/data.enc is not in /etc/atrest/vaults"
for unit in atrest-unlock@data.service atrest-reboot-planned.service; do
    [ "$(in_root systemctl is-enabled "$unit")" = enabled ] || fail "$unit is not enabled"
done
step "package installed; vault enrolled (one remote keyslot); key file shredded; listed; units enabled"

mkdir -p "$root/srv/data"
in_root atrest unlock /srv/data.enc --mount /srv/data \
    || fail "the vault does not unlock through the authority"
echo kept >"$root/srv/data/note"
in_root atrest unmount /srv/data
[ ! -e "$root/srv/data/note" ] || fail "the note is visible without the mount"
set +e
in_root atrest doctor --json --vault /srv/data.enc >"$work/doctor.json"
set -e
if grep -q '"remote-keyslot-' "$work/doctor.json"; then
    fail "doctor: $(grep '"remote-keyslot-' "$work/doctor.json")"
fi
step "the vault unlocks through the authority alone; doctor finds the authority reachable"

second=$(play) || { echo "$second" >&2; fail "the second run failed"; }
grep -A2 '^PLAY RECAP' <<<"$second"
grep -Eq 'localhost +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0' <<<"$second" \
    || fail "the second run changed something"
step "a second run changes nothing"
