#!/usr/bin/env bash
# The Debian package's test (CI runs it after `make deb`; needs root): install the package
# on this machine, check the binary has no PC/SC, the unit (systemd-analyze verify and its
# security exposure), the kartu user and /var/lib/kartu; then, as kartu, `kartu init`, serve
# with the unit's ExecStart and /etc/kartu/kartu.env, pay once over HTTP with curl, check
# the receipt and `kartu audit verify`, stop with SIGTERM, remove (the state stays),
# install again (it verifies), remove and purge (the state and the user go). systemd need
# not be PID 1 (a container).
# Usage: scripts/deb-test.sh [target/deb/kartu_<version>_<arch>.deb] (default: the one
# `make deb` wrote). It builds nothing. DEB_TEST_KEEP=1 leaves the package installed.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "deb-test: FAILED: $*" >&2
  exit 1
}
step() {
  echo "deb-test: $*"
}

[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i, a system user)"
for tool in dpkg dpkg-deb curl jq readelf setpriv systemd-analyze ldd; do
  command -v "$tool" >/dev/null || fail "$tool is missing"
done
arch=$(dpkg --print-architecture)
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
deb=${1:-target/deb/kartu_${version}_${arch}.deb}
[ -f "$deb" ] || fail "$deb does not exist: run make deb first"
# This machine's own Kartu is never touched: the test installs, serves and purges its own.
if dpkg-query -W -f '${Status}' kartu 2>/dev/null | grep -qv 'not-installed'; then
  fail "a kartu package is already on this machine (dpkg -s kartu); the test would replace it"
fi
[ ! -e /var/lib/kartu ] || fail "/var/lib/kartu exists: the test would purge it"
! getent passwd kartu >/dev/null || fail "a kartu user exists already"

unit=/lib/systemd/system/kartu.service
data=/var/lib/kartu
env_file=/etc/kartu/kartu.env
work=$(mktemp -d /tmp/kartu-deb-test.XXXXXX)
server_pid=""   # kartu serve
launcher_pid="" # what started it here: the same process, or strace
# The kartu serve process at or under `pid` (strace runs it as a grandchild), if any.
server_of() {
  local pid=$1 _
  for _ in 1 2 3 4; do
    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/bin/kartu ]; then
      echo "$pid"
      return 0
    fi
    pid=$(ps -o pid= --ppid "$pid" | head -n 1 | tr -d ' ')
    [ -n "$pid" ] || return 0
  done
}
cleanup() {
  local rc=$?
  if [ -n "$launcher_pid" ]; then
    server_pid=${server_pid:-$(server_of "$launcher_pid")}
    if [ -n "$server_pid" ]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
    kill -KILL "$launcher_pid" 2>/dev/null || true
    wait "$launcher_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$work/serve.log" ]; then
    echo "deb-test: the server's log:" >&2
    tail -n 40 "$work/serve.log" >&2
  fi
  if [ "${DEB_TEST_KEEP:-0}" != 1 ] && dpkg-query -W -f '${Status}' kartu 2>/dev/null | grep -qv 'not-installed'; then
    dpkg -P kartu >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# A command as the package's user, the way the unit runs it: no privileges to gain, no
# capabilities, umask 0077, in /.
kartu_user=(env "HOME=$data" USER=kartu LOGNAME=kartu
  setpriv --reuid=kartu --regid=kartu --init-groups --no-new-privs --inh-caps=-all --bounding-set=-all --)
as_kartu() {
  (cd / && umask 077 && exec "${kartu_user[@]}" "$@")
}

# The system calls of a set and the sets it names, one a line.
syscall_set() {
  local name
  systemd-analyze syscall-filter "$1" | tail -n +2 | sed -n 's/^ \+\([@a-z0-9_-]\+\).*/\1/p' |
    while read -r name; do
      case $name in @*) syscall_set "$name" ;; *) echo "$name" ;; esac
    done
}

# What kartu serve did in `trace` (strace -f, from its execve on) would pass the unit:
# SystemCallFilter=@system-service minus @privileged @resources, MemoryDenyWriteExecute,
# RestrictAddressFamilies, ProcSubset=pid.
check_syscalls() {
  local trace=$1 served=$work/served.trace
  sed -n '\|execve("/usr/bin/kartu"|,$p' "$trace" | sed -E 's/^[0-9]+ +//' > "$served"
  [ -s "$served" ] || fail "strace saw no execve of /usr/bin/kartu"
  grep -oE '^[a-z0-9_]+\(' "$served" | tr -d '(' | sort -u > "$work/used"
  syscall_set @system-service | sort -u > "$work/allowed"
  { syscall_set @privileged; syscall_set @resources; } | sort -u > "$work/denied"
  if [ ! -s "$work/allowed" ] || [ ! -s "$work/denied" ]; then fail "systemd-analyze syscall-filter listed nothing"; fi
  local outside inside
  outside=$(comm -23 "$work/used" "$work/allowed" | paste -sd ' ')
  inside=$(comm -12 "$work/used" "$work/denied" | paste -sd ' ')
  [ -z "$outside" ] || fail "kartu serve calls $outside outside @system-service"
  [ -z "$inside" ] || fail "kartu serve calls $inside of @privileged or @resources"
  # MemoryDenyWriteExecute refuses memory both writable and executable, and mprotect to
  # executable; mapping a library's code (PROT_READ|PROT_EXEC) stays allowed.
  if grep -E '^(mmap|mprotect|pkey_mprotect)\(' "$served" | grep 'PROT_EXEC' | grep -q 'PROT_WRITE' ||
    grep -E '^(mprotect|pkey_mprotect)\(' "$served" | grep -q 'PROT_EXEC'; then
    fail "kartu serve makes memory writable and executable (MemoryDenyWriteExecute)"
  fi
  if grep -oE '^socket\(AF_[A-Z0-9]+' "$served" | grep -vqE 'AF_(UNIX|INET|INET6)$'; then
    fail "kartu serve opens a socket outside AF_UNIX AF_INET AF_INET6"
  fi
  if grep -oE '^openat\([^"]*"/proc/[^"]*' "$served" | grep -vqE '"/proc/(self|thread-self)/'; then
    fail "kartu serve reads /proc beyond its own process (ProcSubset=pid)"
  fi
  step "strace: kartu serve made $(wc -l < "$work/used") kinds of system call, all in the unit's filter"
}

step "package $deb ($(du -h "$deb" | cut -f1))"
contents=$(dpkg-deb --contents "$deb")
for path in ./usr/bin/kartu ./lib/systemd/system/kartu.service ./etc/kartu/kartu.env \
  ./usr/share/doc/kartu/copyright ./usr/share/doc/kartu/changelog.gz; do
  grep -q " $path\$" <<<"$contents" || fail "the package has no $path"
done
grep -q '^-rw------- root/root .* ./etc/kartu/kartu.env$' <<<"$contents" || fail "kartu.env is not root's, 0600"
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = /etc/kartu/kartu.env ] ||
  fail "conffiles does not list /etc/kartu/kartu.env alone"

step "dpkg -i"
dpkg -i "$deb" > "$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "dpkg -i"; }
[ -x /usr/bin/kartu ] || fail "/usr/bin/kartu is not installed"

step "no PC/SC in /usr/bin/kartu"
if ldd /usr/bin/kartu | grep -i pcsc; then fail "/usr/bin/kartu links libpcsclite"; fi
help=$(/usr/bin/kartu --help)
for cmd in serve init migrate operator audit ledger backup restore card; do
  grep -qE "^  $cmd( |$)" <<<"$help" || fail "kartu --help has no $cmd"
done
for cmd in terminal demo; do
  if grep -qE "^  $cmd( |$)" <<<"$help"; then fail "kartu --help still offers $cmd"; fi
done
card_help=$(/usr/bin/kartu card --help)
grep -q inspect-tap <<<"$card_help" || fail "kartu card has no inspect-tap"
if grep -qE 'personalize|  sim' <<<"$card_help"; then fail "kartu card still offers personalize or sim"; fi
if readelf -S /usr/bin/kartu | grep -qE '\.symtab|\.debug_info'; then fail "/usr/bin/kartu is not stripped"; fi

step "systemd-analyze verify $unit"
verify_out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$verify_out" >&2; fail "systemd-analyze verify"; }
[ -z "$verify_out" ] || { echo "$verify_out" >&2; fail "systemd-analyze verify warns"; }
if security=$(systemd-analyze security --offline=true "$unit" 2>&1); then
  exposure=$(sed -n 's/.*Overall exposure level for kartu.service: \([0-9.]*\).*/\1/p' <<<"$security")
  [ -n "$exposure" ] || { echo "$security" >&2; fail "no exposure level in systemd-analyze security"; }
  step "systemd-analyze security: exposure $exposure (of 10; below 3.0 required)"
  awk -v e="$exposure" 'BEGIN { exit !(e < 3.0) }' || { echo "$security" >&2; fail "exposure $exposure is not below 3.0"; }
else
  step "systemd-analyze security --offline is not available here ($(systemd-analyze --version | head -n 1)); skipped"
fi
wants=/etc/systemd/system/multi-user.target.wants/kartu.service
[ -L "$wants" ] || fail "the unit is not enabled ($wants)"

step "the kartu user and $data"
IFS=: read -r _ _ _ _ _ home shell < <(getent passwd kartu)
[ "$home" = "$data" ] || fail "kartu's home is $home"
case $shell in */nologin | */false) ;; *) fail "kartu has a login shell ($shell)" ;; esac
getent group kartu >/dev/null || fail "no kartu group"
[ "$(stat -c '%a %U %G' "$data")" = "700 kartu kartu" ] || fail "$data is $(stat -c '%a %U %G' "$data")"
[ "$(stat -c '%a %U' "$env_file")" = "600 root" ] || fail "$env_file is $(stat -c '%a %U' "$env_file")"

step "kartu init as kartu"
chown kartu:kartu "$work"
chmod 0700 "$work"
as_kartu /usr/bin/kartu init --data-dir "$data" > "$work/operator.token" 2> "$work/init.err" ||
  { cat "$work/init.err" >&2; fail "kartu init"; }
token=$(head -n 1 "$work/operator.token")
[[ $token == kt_* ]] || fail "kartu init printed no kt_ token"
sed -n 's/^kartu: checkpoint verifier key: //p' "$work/init.err" > "$work/city.pub"
[ -s "$work/city.pub" ] || fail "kartu init printed no checkpoint verifier key"
chown kartu:kartu "$work"/*
for f in kartu.toml keys.toml nik.key kartu.db; do
  [ "$(stat -c '%a %U' "$data/$f")" = "600 kartu" ] || fail "$data/$f is $(stat -c '%a %U' "$data/$f")"
done

# The address, set as an administrator would: in the conffile. Port 0: a free one, which
# the server names ("serving on").
listen=127.0.0.1:0
echo "KARTU_LISTEN=$listen" >> "$env_file"

step "kartu serve (the unit's ExecStart, KARTU_LISTEN=$listen from $env_file), with the demo city"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[ "$exec_start" = "/usr/bin/kartu serve --data-dir /var/lib/kartu" ] || fail "unexpected ExecStart: $exec_start"
mapfile -t env_lines < <(grep -E '^[A-Z_]+=' "$env_file")
read -r -a exec_argv <<<"$exec_start"
# Under strace when there is one: the system calls it makes are checked against the unit's
# filter below, since systemd cannot run the unit here. Not through as_kartu (a function in
# the background is one more process).
tracer=()
if command -v strace >/dev/null && strace -f -qq -o /dev/null true 2>/dev/null; then
  tracer=(strace -f -qq -o "$work/syscalls.trace")
fi
(cd / && umask 077 && exec "${tracer[@]}" "${kartu_user[@]}" env "${env_lines[@]}" "${exec_argv[@]}" \
  --demo-city "$work/operator.token") > "$work/serve.log" 2>&1 &
launcher_pid=$!
ready=""
base=""
for _ in $(seq 1 150); do
  kill -0 "$launcher_pid" 2>/dev/null || fail "kartu serve exited"
  server_pid=${server_pid:-$(server_of "$launcher_pid")}
  base=${base:-$(sed -n 's|^kartu: serving on \(http://127\.0\.0\.1:[1-9][0-9]*\)$|\1|p' "$work/serve.log")}
  if [ -n "$server_pid" ] && [ -n "$base" ] && curl -fsS "$base/readyz" >/dev/null 2>&1 &&
    grep -q "The city's books" "$work/serve.log"; then
    ready=1
    break
  fi
  sleep 0.2
done
[ -n "$ready" ] || fail "kartu serve was not ready on 127.0.0.1 with its demo city within 30 s"
step "serving on $base"
[ "$(stat -c %U "/proc/$server_pid")" = kartu ] || fail "the server does not run as kartu"

step "pay once through the API"
pos=$(jq -r .grocery_pos "$data/demo-city.json")
[[ $pos == kt_* ]] || fail "no grocery terminal token in $data/demo-city.json"
# The first curl example is the payment (the next is a bus ride).
body=$(sed -n "s/^ *-H 'Content-Type: application\/json' -d '\(.*\)'\$/\1/p" "$work/serve.log" | awk "NR == 1")
jq -e '.tap.picc_data and .tap.cmac' <<<"$body" >/dev/null || fail "no tap in the demo city's curl example"
before=$(curl -fsS -H "Authorization: Bearer $token" "$base/v1/cards/$(jq -r '.cards[0].card_id' "$data/demo-city.json")" |
  jq -r .balance.amount)
pay() {
  curl -sS -o "$work/pay.json" -w '%{http_code}' -X POST "$base/v1/payments" -H "Authorization: Bearer $pos" \
    -H "Idempotency-Key: $1" -H 'Content-Type: application/json' -d "$body"
}
code=$(pay deb-test-1)
[[ $code == 20? ]] || { cat "$work/pay.json" >&2; fail "the payment answered HTTP $code"; }
seq=$(jq -r .entry_seq "$work/pay.json")
leaf_index=$(jq -r .leaf_index "$work/pay.json")
leaf_hash=$(jq -r .leaf_hash "$work/pay.json")
[[ $seq =~ ^[1-9][0-9]*$ ]] || { cat "$work/pay.json" >&2; fail "the payment has no entry sequence"; }
[ "$(jq -r .status "$work/pay.json")" = approved ] || fail "the payment is not approved"
[[ $leaf_hash =~ ^[0-9a-f]{64}$ ]] || fail "the payment has no leaf hash"
after=$(jq -r .balance.amount "$work/pay.json")
step "paid $(jq -r '.amount.amount + " " + .amount.currency' "$work/pay.json"): entry $seq, leaf $leaf_index, balance $before -> $after"
awk -v b="$before" -v a="$after" -v p="$(jq -r .amount.amount "$work/pay.json")" 'BEGIN { exit !(b - a == p) }' ||
  fail "the balance went from $before to $after"
# The card tool that needs no reader: the tap just paid with, checked with the server's keys.
tap=$(as_kartu /usr/bin/kartu card inspect-tap --keys "$data/keys.toml" --picc-data "$(jq -r .tap.picc_data <<<"$body")" \
  --cmac "$(jq -r .tap.cmac <<<"$body")") || fail "kartu card inspect-tap"
[ "$(jq -r '.mac_valid' <<<"$tap")" = true ] || fail "kartu card inspect-tap: $tap"
step "kartu card inspect-tap: $tap"
code=$(pay deb-test-2)
if [ "$code" != 409 ] || ! grep -q card_replay "$work/pay.json"; then
  cat "$work/pay.json" >&2
  fail "the same tap again answered $code, not 409 card_replay"
fi

step "the receipt, once a checkpoint covers it"
signed=""
for _ in $(seq 1 50); do
  # 404 no_checkpoint until the signer's first one.
  size=$( (curl -fsS "$base/v1/audit/checkpoints/latest" 2>/dev/null || true) | sed -n 2p)
  if [ "${size:-0}" -gt "$leaf_index" ]; then
    signed=1
    break
  fi
  sleep 0.2
done
[ -n "$signed" ] || fail "no checkpoint covers leaf $leaf_index within 10 s"
as_kartu /usr/bin/kartu audit receipt --url "$base" --seq "$seq" --leaf-hash "$leaf_hash" \
  --public-key "$work/city.pub" > "$work/receipt.out" 2>&1 || { cat "$work/receipt.out" >&2; fail "kartu audit receipt"; }
sed 's/^/  /' "$work/receipt.out"

step "SIGTERM"
kill -TERM "$server_pid"
stopped=""
for _ in $(seq 1 300); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    stopped=1
    break
  fi
  sleep 0.2
done
[ -n "$stopped" ] || fail "kartu serve did not stop within 60 s of SIGTERM"
rc=0
wait "$launcher_pid" || rc=$?
server_pid=""
launcher_pid=""
[ "$rc" -eq 0 ] || fail "kartu serve exited with $rc after SIGTERM"
grep -q "kartu: stopped" "$work/serve.log" || fail "kartu serve did not say it stopped"
if [ ${#tracer[@]} -gt 0 ]; then
  check_syscalls "$work/syscalls.trace"
else
  step "no strace here (or no ptrace): the system calls were not checked against the unit's filter"
fi

step "kartu audit verify and the trial balance, as kartu"
as_kartu /usr/bin/kartu audit verify --database-url "sqlite://$data/kartu.db" --public-key "$work/city.pub" \
  > "$work/verify.out" 2>&1 || { cat "$work/verify.out" >&2; fail "kartu audit verify"; }
grep '^OK:' "$work/verify.out" || fail "kartu audit verify did not say OK"
as_kartu /usr/bin/kartu ledger --database-url "sqlite://$data/kartu.db" trial-balance > "$work/trial.out" 2>&1 ||
  { cat "$work/trial.out" >&2; fail "the trial balance"; }
sed 's/^/  /' "$work/trial.out"
if command -v age-keygen >/dev/null; then
  step "kartu backup and restore, as kartu"
  as_kartu age-keygen -o "$work/backup.key" 2> /dev/null
  recipient=$(as_kartu age-keygen -y "$work/backup.key")
  as_kartu /usr/bin/kartu backup --data-dir "$data" --out "$work/backup.age" --recipient "$recipient" \
    > "$work/backup.out" 2>&1 || { cat "$work/backup.out" >&2; fail "kartu backup"; }
  as_kartu /usr/bin/kartu restore --in "$work/backup.age" --data-dir "$work/restored" --identity "$work/backup.key" \
    > "$work/restore.out" 2>&1 || { cat "$work/restore.out" >&2; fail "kartu restore"; }
  as_kartu /usr/bin/kartu audit verify --database-url "sqlite://$work/restored/kartu.db" --public-key "$work/city.pub" \
    > "$work/verify-restored.out" 2>&1 || { cat "$work/verify-restored.out" >&2; fail "audit verify of the restored copy"; }
  step "backup $(du -h "$work/backup.age" | cut -f1), restored and verified: $(grep '^OK:' "$work/verify-restored.out" | cut -d';' -f1)"
fi

step "dpkg -r: the state stays"
dpkg -r kartu > "$work/remove.log" 2>&1 || { cat "$work/remove.log" >&2; fail "dpkg -r"; }
[ ! -e /usr/bin/kartu ] || fail "/usr/bin/kartu is still there after dpkg -r"
[ ! -e "$unit" ] || fail "$unit is still there after dpkg -r"
for f in kartu.toml keys.toml nik.key kartu.db checkpoint.latest; do
  [ -f "$data/$f" ] || fail "dpkg -r deleted $data/$f"
done
[ "$(stat -c '%a %U' "$data")" = "700 kartu" ] || fail "$data changed on dpkg -r"
getent passwd kartu >/dev/null || fail "dpkg -r deleted the kartu user"
grep -q "^KARTU_LISTEN=$listen\$" "$env_file" || fail "dpkg -r did not keep the edited $env_file"
dpkg-query -W -f '${Status}' kartu | grep -q 'config-files' || fail "kartu is not in config-files state after dpkg -r"

step "dpkg -i again: the kept state is kartu's and verifies"
dpkg -i "$deb" > "$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "dpkg -i after dpkg -r"; }
[ "$(stat -c '%a %U' "$data" "$data/kartu.db" | tr '\n' ' ')" = "700 kartu 600 kartu " ] ||
  fail "the kept state changed owner or mode on reinstall"
as_kartu /usr/bin/kartu audit verify --database-url "sqlite://$data/kartu.db" --public-key "$work/city.pub" \
  > "$work/verify.out" 2>&1 || { cat "$work/verify.out" >&2; fail "kartu audit verify after reinstalling"; }
dpkg -r kartu > "$work/remove.log" 2>&1 || { cat "$work/remove.log" >&2; fail "dpkg -r (second)"; }

step "dpkg -P: the state and the user go"
dpkg -P kartu > "$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "dpkg -P"; }
grep -q 'deleting /var/lib/kartu' "$work/purge.log" || fail "the purge does not say it deletes /var/lib/kartu"
[ ! -e "$data" ] || fail "$data is still there after dpkg -P"
[ ! -e /etc/kartu ] || fail "/etc/kartu is still there after dpkg -P"
! getent passwd kartu >/dev/null || fail "the kartu user is still there after dpkg -P"
! getent group kartu >/dev/null || fail "the kartu group is still there after dpkg -P"
if [ -e "$wants" ] || [ -L "$wants" ]; then fail "$wants is still there after dpkg -P"; fi
[ ! -L /etc/systemd/system/kartu.service ] || fail "kartu.service is still masked after dpkg -P"
left=$(find /etc/systemd /var/lib/systemd -name 'kartu.service*' 2>/dev/null | paste -sd ' ')
[ -z "$left" ] || fail "dpkg -P left $left"
if dpkg-query -W -f '${Status}' kartu 2>/dev/null | grep -qv 'not-installed'; then
  fail "dpkg still knows kartu after dpkg -P"
fi

step "passed: installed, served as kartu, paid entry $seq, verified, removed, purged"
