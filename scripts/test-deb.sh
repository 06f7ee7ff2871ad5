#!/usr/bin/env bash
# Builds the Debian package from the release binary, installs it on this
# machine, checks what it installed, and purges it. Needs root; a stage of
# scripts/test-all.sh. Fails if atrest is already installed as a package.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf -- '--- %s\n' "$*"; }

if dpkg-query -W -f='${Status}' atrest 2>/dev/null | grep -q installed; then
    echo "the atrest package is already installed here; remove it (dpkg -P atrest) before testing the package" >&2
    exit 1
fi
deb=$(bash scripts/build-deb.sh)
step "built $deb ($(du -h "$deb" | cut -f1))"

step "lintian"
# Debian's package checker; errors fail the build, and the few tags that
# do not apply are overridden in the package with a reason each
# (docs/decisions/0013-debian-package.md).
if ! command -v lintian >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null
fi
lintian --fail-on error --info --display-level '>=warning' "$deb"
purged=0
cleanup() { [ "$purged" = 1 ] || dpkg -P atrest >/dev/null 2>&1 || true; }
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
installed=$(dpkg -L atrest)
step "installed"
[ "$(command -v atrest)" = /usr/bin/atrest ] || { echo "atrest is not /usr/bin/atrest on PATH" >&2; exit 1; }
/usr/bin/atrest --version

step "man pages"
for page in atrest atrest-mount atrest-doctor atrest-keyd-serve; do
    MANPAGER=cat MANWIDTH=80 man "$page" 2>/dev/null | grep -q . || { echo "man $page shows nothing" >&2; exit 1; }
done
MANPAGER=cat man atrest-mount 2>/dev/null | grep -q -- '--passphrase-file' || { echo "man atrest-mount lacks --passphrase-file" >&2; exit 1; }

step "bash completion"
# The completion the package installed, loaded the way bash-completion does;
# completing `atrest mo` must offer `mount`.
words=$(bash -c '
    source /usr/share/bash-completion/completions/atrest
    COMP_WORDS=(atrest mo); COMP_CWORD=1; COMP_LINE="atrest mo"; COMP_POINT=${#COMP_LINE}
    _atrest atrest mo atrest
    printf "%s\n" "${COMPREPLY[@]}"')
grep -qx mount <<<"$words" || { echo "bash completion of 'atrest mo' gave: $words" >&2; exit 1; }
for f in /usr/share/zsh/vendor-completions/_atrest /usr/share/fish/vendor_completions.d/atrest.fish \
         /usr/lib/systemd/system/atrest-unlock@.service /usr/lib/systemd/system/atrest-keyd.service; do
    [ -s "$f" ] || { echo "$f missing" >&2; exit 1; }
done
grep -q '^ExecStart=/usr/bin/atrest' /usr/lib/systemd/system/atrest-keyd.service \
    || { echo "atrest-keyd.service does not run /usr/bin/atrest" >&2; exit 1; }
[ ! -e /var/lib/dpkg/info/atrest.postinst ] || { echo "the package has a postinst" >&2; exit 1; }

step "atrest doctor"
set +e
/usr/bin/atrest doctor >/dev/null
code=$?
set -e
[ "$code" -le 2 ] || { echo "atrest doctor exited $code (0, 1 or 2 expected)" >&2; exit 1; }

step "the demo from the installed binary"
/usr/bin/atrest demo >/dev/null

step "purge"
dpkg -P atrest >/dev/null
purged=1
# Every path the package installed is gone, except directories another
# package owns too (/usr/bin, /usr/share/man/man1, ...).
left=""
while read -r path; do
    [ -n "$path" ] && [ "$path" != /. ] || continue
    if [ -d "$path" ] && [ ! -L "$path" ]; then
        dpkg -S "$path" >/dev/null 2>&1 || left+="$path"$'\n'
    elif [ -e "$path" ] || [ -L "$path" ]; then
        left+="$path"$'\n'
    fi
done <<<"$installed"
if [ -n "$left" ]; then
    echo "dpkg -P atrest left these behind:" >&2
    printf '%s' "$left" >&2
    exit 1
fi
step "purged: nothing of the package is left"
