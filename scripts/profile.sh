#!/usr/bin/env bash
# Flame graphs of the write path (`make profile`): each part of `make bench` that issue 15
# measures runs under `perf record -g` over the whole machine (the kartu server, the load
# generator and the PostgreSQL backends share the two cores, and who takes them is the
# question), and becomes bench-report/flame-<part>.svg with a text summary
# bench-report/profile-<part>.txt (the top processes and functions by samples).
#
# Needs root or perf_event_paranoid <= -1 (system-wide sampling), the release binaries
# (the Makefile builds them) and PostgreSQL (run through scripts/with-postgres.sh).
# Installs perf (Debian's linux-perf) and inferno (cargo install) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-report}
SECONDS_PER_PART=${PROFILE_SECONDS:-5}
mkdir -p "$OUT"

if ! command -v perf >/dev/null; then
	echo "profile: installing linux-perf" >&2
	apt-get install -y -qq linux-perf >/dev/null
fi
if ! command -v inferno-flamegraph >/dev/null; then
	echo "profile: installing inferno (flame graphs)" >&2
	cargo install inferno --locked --quiet
fi
export PATH="$HOME/.cargo/bin:$PATH"

# One part: perf over the machine while kartu-bench runs it.
# part NAME -- kartu-bench arguments...
part() {
	local name=$1
	shift
	local data="$OUT/perf-$name.data"
	echo "profile: $name" >&2
	perf record -q -a -g -F 499 -o "$data" -- ./target/release/kartu-bench --out "$OUT/profile-run" "$@" \
		>"$OUT/profile-$name.bench.txt" 2>&1 || {
		echo "profile: $name failed; see $OUT/profile-$name.bench.txt" >&2
		return 1
	}
	perf script -i "$data" 2>/dev/null | inferno-collapse-perf >"$OUT/profile-$name.folded"
	inferno-flamegraph --title "kartu $name" <"$OUT/profile-$name.folded" >"$OUT/flame-$name.svg"
	perf report -i "$data" --no-children --sort comm -g none 2>/dev/null | grep -v -e '^#' -e '^$' >"$OUT/by-comm.tmp"
	perf report -i "$data" --no-children --sort comm,sym -g none 2>/dev/null | grep -v -e '^#' -e '^$' >"$OUT/by-sym.tmp"
	{
		echo "# $name: samples by thread (swapper is idle time)"
		sed -n 1,15p "$OUT/by-comm.tmp"
		echo
		echo "# $name: samples by thread and function (top 40)"
		sed -n 1,40p "$OUT/by-sym.tmp"
	} >"$OUT/profile-$name.txt"
	rm -f "$OUT/by-comm.tmp" "$OUT/by-sym.tmp"
	rm -f "$data"
}

part ledger-sqlite --only ledger --backend sqlite --seconds "$SECONDS_PER_PART" --skip-single
part ledger-postgres --only ledger --backend postgres --seconds "$SECONDS_PER_PART" --skip-single
part http-sqlite --only http --backend sqlite --http-seconds "$SECONDS_PER_PART" --sweep-seconds 0
part http-postgres --only http --backend postgres --http-seconds "$SECONDS_PER_PART" --sweep-seconds 0
echo "profile: flame graphs in $OUT/flame-*.svg, summaries in $OUT/profile-*.txt" >&2
