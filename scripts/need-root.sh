#!/usr/bin/env bash
# `make test` runs every test, and some of them need root. Run as another user, this says
# which and why, and stops, instead of letting them fail deep inside a test.
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then
  exit 0
fi
cat >&2 <<'MSG'
make test needs root (run it with sudo, or in a container as root). These tests do what
only root may:
  - crates/reader/tests/e2e.rs, crates/kartu/tests/card_e2e.rs (and `kartu demo`): start a
    private pcscd with the vpcd driver and virtual cards in their own mount and PID
    namespaces (unshare), so the machine's card readers are never touched;
  - crates/kartu/tests/crash.rs, disk_full_sqlite and disk_full_postgres: mount a small
    tmpfs in a private mount namespace and fill it, to see `507 storage_full` and the
    recovery.
Everything else (cargo test -p kartu-ledger, -p kartu-api, ...) runs as any user, with
scripts/with-postgres.sh in front for the PostgreSQL trials.
MSG
exit 1
