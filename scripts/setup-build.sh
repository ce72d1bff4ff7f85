#!/usr/bin/env bash
# What building Kartu and `make run` need, installed when missing: a C compiler and linker
# (build-essential), pkg-config, libpq-dev (diesel's PostgreSQL driver) and libpcsclite-dev
# (the card reader's PC/SC library); SQLite is compiled in. Then the Rust toolchain is
# checked against the workspace's rust-version. Packages given as arguments are installed
# too (`scripts/setup.sh` gives what the tests need). Safe to run again; needs root (or
# sudo) only when something must be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential pkg-config libpq-dev libpcsclite-dev "$@")
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

command -v cargo >/dev/null || { echo "setup: cargo is not installed: install Rust with https://rustup.rs" >&2; exit 1; }
need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]; then
  echo "setup: Kartu needs Rust $need or newer and this machine has $have: run \`rustup update stable\`" >&2
  exit 1
fi
