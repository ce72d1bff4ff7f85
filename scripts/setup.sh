#!/usr/bin/env bash
# Installs the system packages Kartu's tests need, when they are missing: first what the
# build needs (scripts/setup-build.sh, all `make run` installs), then what `make test`
# adds. Safe to run again; does nothing when everything is there. Needs root (or sudo)
# only when something must be installed.
set -euo pipefail
"$(dirname "$0")/setup-build.sh"

# pcscd + vsmartcard-vpcd: the PC/SC daemon and virtual-card driver of the card tests;
# util-linux: unshare, which gives those tests a private /run; fonts-dejavu-core: the text of
# make bench's latency plot; chromium: the headless browser the citizens' pages are tested in.
# age: the tool a city opens `kartu backup` archives with (and the backup test checks they open).
packages=(postgresql-common postgresql pcscd vsmartcard-vpcd util-linux fonts-dejavu-core chromium age)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
