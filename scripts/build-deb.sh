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
# As dh_strip does (lintian: binary-has-unneeded-section).
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$pkg/usr/bin/atrest" 2>/dev/null || true
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
Copyright: 2026 atrest developers
License: Apache-2.0
 On Debian systems, the full text is in /usr/share/common-licenses/Apache-2.0.
COPY
# A native package's changelog (Debian policy 12.7): one entry for the
# version built, dated by the last commit so that rebuilding the same
# commit gives the same file; the project's history is its git log.
stamp="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
cat > "$root/changelog" <<CHANGES
atrest ($version) unstable; urgency=medium

  * Built from the atrest source tree by scripts/build-deb.sh; the
    project's history is its git log.

 -- atrest developers <atrest@example.invalid>  $(LC_ALL=C date -R -u -d "@$stamp")
CHANGES
gzip -9n -c "$root/changelog" > "$pkg/usr/share/doc/atrest/changelog.gz"
chmod 0644 "$pkg/usr/share/doc/atrest/changelog.gz"
# What lintian reports that does not apply, each with its reason
# (docs/decisions/0013-debian-package.md).
install -D -m 0644 /dev/stdin "$pkg/usr/share/lintian/overrides/atrest" <<'OVERRIDES'
# The units order vault unlocking before the services that use the data
# and rely on systemd's sandboxing and credentials; there is no SysV
# equivalent to ship.
atrest: package-supports-alternative-init-but-no-init.d-script [usr/lib/systemd/system/*]
# The Rust code calls no fortifiable libc function; the C libraries built
# into the binary (aws-lc, SQLite) are compiled by cargo's cc without
# _FORTIFY_SOURCE (a known gap, decision 0013).
atrest: hardening-no-fortify-functions [usr/bin/atrest]
# "ment" is a fragment in a dependency's string table, not a word we print.
atrest: spelling-error-in-binary ment meant [usr/bin/atrest]
OVERRIDES
# The default config location (/etc/atrest/vaults, key files): empty; what
# the operator puts there stays when the package is purged.
install -d -m 0755 "$pkg/etc/atrest"
size=$(du -sk "$pkg" | cut -f1)
install -d "$pkg/DEBIAN"
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
    > "$pkg/DEBIAN/md5sums"
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: atrest
Version: $version
Architecture: $arch
Maintainer: atrest developers <atrest@example.invalid>
Installed-Size: $size
Depends: libc6
Recommends: fuse3
Suggests: cryptsetup-bin
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
