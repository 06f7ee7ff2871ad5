#!/usr/bin/env bash
# Builds atrest_<version>_<arch>.deb from the release binary with dpkg-deb
# (docs/decisions/0013-debian-package.md): the binary, man pages and
# bash/zsh/fish completions generated from the clap definitions
# (`atrest generate-files`), the systemd units of deploy/systemd, and an
# empty /etc/atrest. No maintainer scripts: installing enables nothing.
#
#   bash scripts/build-deb.sh [OUT_DIR]     # default: target/deb
# Uses target/release/atrest if it is there (ATREST_BIN overrides), else
# builds it.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
out="${1:-$target/deb}"
bin="${ATREST_BIN:-$target/release/atrest}"
if [ ! -x "$bin" ]; then
    cargo build --release --quiet -p atrest
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
[ -n "$version" ] || { echo "no version in Cargo.toml's [workspace.package]" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
gen="$root/gen"
"$bin" generate-files "$gen" >/dev/null
pkg="$root/pkg"
install -D -m 0755 "$bin" "$pkg/usr/bin/atrest"
strip --strip-unneeded "$pkg/usr/bin/atrest" 2>/dev/null || true
install -d -m 0755 "$pkg/usr/share/man/man1"
for page in "$gen"/man/man1/*.1; do
    gzip -9n -c "$page" > "$pkg/usr/share/man/man1/$(basename "$page").gz"
done
install -D -m 0644 "$gen/completions/atrest.bash" "$pkg/usr/share/bash-completion/completions/atrest"
install -D -m 0644 "$gen/completions/_atrest" "$pkg/usr/share/zsh/vendor-completions/_atrest"
install -D -m 0644 "$gen/completions/atrest.fish" "$pkg/usr/share/fish/vendor_completions.d/atrest.fish"
# The units name /usr/local/bin (a hand install); the package's binary is in /usr/bin.
install -d -m 0755 "$pkg/usr/lib/systemd/system"
for unit in deploy/systemd/*.service; do
    sed -e 's|/usr/local/bin/atrest|/usr/bin/atrest|g' -e 's|/usr/local/share/doc/atrest|/usr/share/doc/atrest|g' \
        "$unit" > "$pkg/usr/lib/systemd/system/$(basename "$unit")"
    chmod 0644 "$pkg/usr/lib/systemd/system/$(basename "$unit")"
done
# Drop-ins are examples for services the operator runs, not installed as live config.
install -d -m 0755 "$pkg/usr/share/doc/atrest/examples"
cp -r deploy/systemd/postgresql.service.d "$pkg/usr/share/doc/atrest/examples/"
cp -r deploy/cloud-init "$pkg/usr/share/doc/atrest/examples/"
install -m 0644 README.md docs/operations.md "$pkg/usr/share/doc/atrest/"
cat > "$pkg/usr/share/doc/atrest/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: atrest

Files: *
License: Apache-2.0
 On Debian systems, the full text is in /usr/share/common-licenses/Apache-2.0.
COPY
# The default config location (/etc/atrest/vaults, key files): empty; what
# the operator puts there stays when the package is purged.
install -d -m 0755 "$pkg/etc/atrest"
size=$(du -sk "$pkg" | cut -f1)
install -d "$pkg/DEBIAN"
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: atrest
Version: $version
Architecture: $arch
Maintainer: atrest developers <atrest@example.invalid>
Installed-Size: $size
Depends: libc6
Recommends: fuse3
Section: admin
Priority: optional
Homepage: https://example.invalid/atrest
Description: keeps a Linux server's data encrypted at rest
 Vaults (FUSE or kernel fscrypt) whose contents, names and extended
 attributes are encrypted on disk, with passphrase, recovery-key, key-file
 and key-authority keyslots; a key authority (atrest keyd) that unlocks
 enrolled servers at boot; atrest doctor, which lists what still lies in
 the clear around the vaults.
CONTROL
mkdir -p "$out"
deb="$out/atrest_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
