#!/usr/bin/env bash
# Runs a command with a PostgreSQL server for the tests, exported as KARTU_TEST_POSTGRES_URL.
#
# 1. KARTU_TEST_POSTGRES_URL already set and reachable: use it.
# 2. A server on 127.0.0.1:5432 (trust auth, user postgres): use it; if the machine has a
#    Debian cluster that is down, start it.
# 3. Otherwise start a throwaway cluster (initdb with trust auth in a temporary folder, on a
#    free port) for the duration of the command, and remove it afterwards.
# The tests never skip PostgreSQL: if none can be had, this script fails.
set -euo pipefail

reachable() { pg_isready -q -d "$1" 2>/dev/null; }

# KARTU_TEST_THROWAWAY_POSTGRES=1 skips steps 1 and 2 (to test step 3).
throwaway_only=${KARTU_TEST_THROWAWAY_POSTGRES:-0}
if [ "$throwaway_only" != 1 ] && [ -n "${KARTU_TEST_POSTGRES_URL:-}" ] && reachable "$KARTU_TEST_POSTGRES_URL"; then
  exec "$@"
fi
default_url="postgres://postgres@127.0.0.1:5432/postgres"
if [ "$throwaway_only" != 1 ] && ! reachable "$default_url" && [ -d /etc/postgresql ] && [ "$(id -u)" -eq 0 ]; then
  for v in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$v" main start >/dev/null 2>&1 || true
  done
  for _ in $(seq 1 30); do reachable "$default_url" && break; sleep 0.5; done
fi
if [ "$throwaway_only" != 1 ] && reachable "$default_url"; then
  export KARTU_TEST_POSTGRES_URL="$default_url"
  exec "$@"
fi

echo "with-postgres: no PostgreSQL running; starting a throwaway cluster" >&2
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bindir" ] && [ -x "$bindir/initdb" ] || { echo "with-postgres: initdb not found; run scripts/setup.sh" >&2; exit 1; }
tmp=$(mktemp -d /tmp/kartu-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_owner() {
  # initdb and postgres refuse to run as root: run them as the postgres user then.
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" -eq 0 ] && chown postgres "$tmp"
as_owner "$bindir/initdb" -D "$tmp/data" -A trust -U postgres >/dev/null
as_owner "$bindir/pg_ctl" -D "$tmp/data" -o "-p $port -k $tmp -c listen_addresses=127.0.0.1 -c fsync=on" -l "$tmp/log" -w start >/dev/null
cleanup() { as_owner "$bindir/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
export KARTU_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
"$@"
