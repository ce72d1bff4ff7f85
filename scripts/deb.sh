#!/usr/bin/env bash
# `make deb`: the Debian package of the Kartu server, target/deb/kartu_<version>_<arch>.deb,
# from a release `kartu` built without the pcsc feature (`make deb` builds it first:
# cargo build --release -p kartu --no-default-features). No cargo-deb, no debhelper: the
# tree is staged in target/deb/root and packed with `dpkg-deb --build --root-owner-group`.
# The unit, the environment file, the maintainer scripts and the documents are in
# packaging/deb/. Usage: scripts/deb.sh [path to the kartu binary] (default
# target/release/kartu). Prints the package's path on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

fail() {
  echo "deb: $*" >&2
  exit 1
}

binary=${1:-target/release/kartu}
src=packaging/deb
out=target/deb
root=$out/root

for tool in dpkg-deb dpkg-shlibdeps strip gzip md5sum; do
  command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install dpkg-dev binutils)"
done
[ -x "$binary" ] || fail "$binary does not exist: run make deb (it builds it first)"
# The server package must not need PC/SC: a binary built with the default features links
# libpcsclite and has the reader commands.
if readelf -d "$binary" | grep -q 'libpcsclite'; then
  fail "$binary links libpcsclite: build it with cargo build --release -p kartu --no-default-features"
fi

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || fail "no version in [workspace.package] of Cargo.toml"
arch=$(dpkg --print-architecture)
deb=$out/kartu_${version}_${arch}.deb
# Reproducible dates: the commit's (or SOURCE_DATE_EPOCH).
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ -n "${DEBEMAIL:-}" ]; then
  maintainer="${DEBFULLNAME:-Kartu maintainers} <$DEBEMAIL>"
else
  maintainer=$(git log -1 --format='%an <%ae>' 2>/dev/null || echo "Kartu maintainers <kartu@localhost>")
fi

rm -rf "$root" "$deb"
mkdir -p "$root/DEBIAN"
install -D -m 0755 "$binary" "$root/usr/bin/kartu"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/kartu"
install -D -m 0644 "$src/kartu.service" "$root/lib/systemd/system/kartu.service"
install -D -m 0600 "$src/kartu.env" "$root/etc/kartu/kartu.env"
doc=$root/usr/share/doc/kartu
install -D -m 0644 "$src/copyright" "$doc/copyright"
install -m 0644 "$src/README.Debian" "$doc/README.Debian"
gzip -9n < docs/OPERATIONS.md > "$doc/OPERATIONS.md.gz"
{
  echo "kartu ($version) unstable; urgency=medium"
  echo
  echo "  * Kartu $version, built from commit $commit (the git history is the"
  echo "    changelog): the server without the pcsc feature, kartu.service, /etc/kartu."
  echo
  echo " -- $maintainer  $(LC_ALL=C date -u -R -d "@$epoch")"
} | gzip -9n > "$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz" "$doc/OPERATIONS.md.gz"

for script in postinst prerm postrm; do
  install -m 0755 "$src/$script" "$root/DEBIAN/$script"
done
echo /etc/kartu/kartu.env > "$root/DEBIAN/conffiles"

# The shared libraries the binary needs, as package dependencies (libc6, libgcc-s1, libpq5).
mkdir -p "$out/shlibs/debian"
printf 'Source: kartu\n\nPackage: kartu\nArchitecture: any\n' > "$out/shlibs/debian/control"
substvars=$( (cd "$out/shlibs" && dpkg-shlibdeps -O "../root/usr/bin/kartu") 2> "$out/shlibs/errors") ||
  { cat "$out/shlibs/errors" >&2; fail "dpkg-shlibdeps failed"; }
shlibs=$(sed -n 's/^shlibs:Depends=//p' <<<"$substvars")
[ -n "$shlibs" ] || fail "dpkg-shlibdeps found no dependencies of $binary"

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: kartu
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $shlibs, adduser, init-system-helpers (>= 1.54~)
Suggests: postgresql, age
Section: net
Priority: optional
Description: city smart card backend (server)
 Kartu is the backend of a city smart card: one contactless card per citizen pays
 at shops, hospitals and parking and opens public services, and every payment lands
 in a ledger nobody can edit, with a signed audit log anyone can verify.
 .
 This package holds the server build of the kartu command (no card readers, no
 PC/SC): kartu init, serve, migrate, operator, audit, ledger, backup and restore,
 and kartu.service, a hardened systemd unit that runs it as the kartu user on
 /var/lib/kartu.
EOF
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
  > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$epoch" {} +

SOURCE_DATE_EPOCH=$epoch dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
# shellcheck disable=SC2016 # dpkg-deb's format, not the shell's
echo "deb: $(dpkg-deb --show --showformat='${Package} ${Version} ${Architecture}' "$deb"), $(du -h "$deb" | cut -f1)"
echo "deb: Depends: $(dpkg-deb --field "$deb" Depends)"
echo "$deb"
