#!/usr/bin/env bash
# `make screenshots`: the citizens' and the public's pages in a phone-sized viewport
# (412 x 915, Pixel-class), taken with headless chromium from a real `kartu serve` on a
# throwaway SQLite installation with the demo city, into docs/screenshots/:
#   card.png (the card page after a genuine tap), receipt.png (a receipt, verified in the
#   browser), transparency.png (the city's books), audit.png (for auditors), and the same
#   in English for the card and the books.
# Usage: scripts/screenshots.sh [path to the kartu binary] (default target/release/kartu).
set -euo pipefail
cd "$(dirname "$0")/.."

kartu=${1:-target/release/kartu}
out=docs/screenshots
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

command -v chromium >/dev/null || { echo "screenshots: chromium is missing (scripts/setup.sh installs it)" >&2; exit 1; }
mkdir -p "$out" "$work/data"
(umask 077 && "$kartu" init --data-dir "$work/data" > "$work/operator.token")
"$kartu" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --demo-city "$work/operator.token" > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q "The city's books" "$work/serve.log" 2>/dev/null && break
  sleep 0.2
done
grep -q "The city's books" "$work/serve.log" || { cat "$work/serve.log" >&2; echo "screenshots: the demo city did not start" >&2; exit 1; }

# The payment the demo city prints (a genuine tap), then the card page's own tap.
pay=$(grep -m1 -A1 "curl -s -X POST" "$work/serve.log" | tr -d '\\\n' | sed 's/^ *//')
receipt=$(eval "$pay" | python3 -c 'import json, sys; print(json.load(sys.stdin)["receipt_url"])')
card=$(grep -A1 "card's own page" "$work/serve.log" | tail -n 1 | tr -d ' ')
sleep 2 # the next checkpoint covers the payment

shot() { # name, url, language
  chromium --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
    --user-data-dir="$work/profile-$1" --accept-lang="$3" --window-size=412,915 \
    --virtual-time-budget=10000 --screenshot="$out/$1.png" "$2" 2>/dev/null
  echo "screenshots: $out/$1.png"
}
shot card "$card" id
shot receipt "$base$receipt" id
shot receipt-en "$base$receipt" en
shot transparency "$base/transparency" id
shot transparency-en "$base/transparency" en
shot audit "$base/audit" en
