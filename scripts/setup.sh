#!/usr/bin/env bash
# Installs the system packages Kartu's tests need, when they are missing: what the build
# needs (scripts/setup-build.sh, all `make run` installs) and what `make test` adds. Safe
# to run again; does nothing when everything is there. Needs root (or sudo) only when
# something must be installed.
#
# postgresql: the tests' second backend; pcscd + vsmartcard-vpcd: the PC/SC daemon and
# virtual-card driver of the card tests; util-linux: unshare, which gives those tests a
# private /run; fonts-dejavu-core: the text of make bench's latency plot; chromium: the
# headless browser the citizens' pages are tested in; age: the tool a city opens
# `kartu backup` archives with (and the backup test checks they open); systemd, adduser,
# curl, jq and strace: scripts/deb-test.sh, the Debian package's test (systemd-analyze, the
# package's user, the payment over HTTP, the server's system calls).
set -euo pipefail
"$(dirname "$0")/setup-build.sh" postgresql-common postgresql pcscd vsmartcard-vpcd util-linux \
  fonts-dejavu-core chromium age systemd adduser curl jq strace

# promtool, Prometheus' own checker of the alert rules (deploy/prometheus/): only the binary,
# taken out of Debian's prometheus package, so that no Prometheus server is installed and
# started on a test machine.
if ! command -v promtool >/dev/null; then
  echo "setup: installing promtool (from Debian's prometheus package)" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  tmp=$(mktemp -d) && chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -qq prometheus >/dev/null)
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  $sudo install -m 0755 "$tmp/root/usr/bin/promtool" /usr/local/bin/promtool
fi
