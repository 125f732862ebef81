#!/usr/bin/env bash
# bench/state_delta.sh [N]: the state store's nightly case (issue 16). N generated rows (default
# 200,000) into a stand-in of its own (job_delay_ms 0, no rate limits): a first full run with
# --state, then 1% of rows changed and 0.5% removed with --leavers suspend, against the full
# re-send without a state. Prints requests counted at the stand-in, jobs, wall, client CPU and
# peak RSS of each, and the dry run's read+compare rate and RSS, and the state's bytes per row.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CTL=$ROOT/tests/fake_zendesk/ctl
N=${1:-200000}
[ -x /usr/bin/time ] || { echo "state_delta: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/state_delta.XXXXXX")
port=
cleanup() {
  [ -z "$port" ] || "$CTL" stop --port "$port" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
url=$("$CTL" start --port auto --state-size "$(( N * 3 / 1000 + 512 ))m" | tail -n 1)
port=${url##*:}
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/lua5.4/?.so;;"
export ZENDESK_URL=$url ZENDESK_EMAIL=admin@example.com ZENDESK_API_TOKEN=stand-in-token
curl -fsS -X POST "$url/__admin/config" -H 'Content-Type: application/json' \
  -d '{"job_delay_ms": 0, "rate_limit_per_minute": 0, "per_user_limit": 0}' >/dev/null

lua5.4 "$ROOT/bench/gen_users.lua" "$N" csv >"$WORK/users.csv"
# night 2: every 100th row changed (its name), every 200th row (offset 50) removed
awk -F, 'NR == 1 { print; next } { r = NR - 1 } r % 200 == 50 { next } r % 100 == 0 { $1 = $1 " Jr" } { print }' OFS=, \
  "$WORK/users.csv" >"$WORK/night2.csv"
changed=$(( N / 100 )); removed=$(( (N + 150) / 200 ))

zstat() { curl -fsS "$url/__admin/stats" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
row() {  # label, then the command
  local label=$1; shift
  local r0 j0 rc
  r0=$(zstat requests); j0=$(zstat jobs)
  set +e
  /usr/bin/time -v -o "$WORK/time.txt" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt"
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then echo "state_delta: $label exited $rc" >&2; cat "$WORK/out.txt" "$WORK/err.txt" >&2; exit 1; fi
  local wall cpu rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt" |
    awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')
  cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u + s}' "$WORK/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  printf '| %s | %d | %d | %.2f | %s | %d |\n' "$label" $(( $(zstat requests) - r0 )) $(( $(zstat jobs) - j0 )) \
    "$wall" "$cpu" $(( rss / 1024 ))
}
S="$WORK/users.state"
echo "rows $N, changed $changed, removed $removed"
echo "| run | requests at the stand-in | jobs | wall s | client CPU s | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|"
row "first run, --state (everyone created)" lua5.4 bin/zendesk-sync -q --state "$S" --journal "$WORK/j1" "$WORK/users.csv"
row "night 2: 1% changed, 0.5% removed, --state --leavers suspend" lua5.4 bin/zendesk-sync -q --state "$S" \
  --leavers suspend --journal "$WORK/j2" "$WORK/night2.csv"
row "night 2 as a full re-send (no state)" lua5.4 bin/zendesk-sync -q --journal "$WORK/j3" "$WORK/night2.csv"
if [ -f "$ROOT/build/bench/node/node_modules/node-zendesk/package.json" ]; then   # bench/run.sh installs it
  row "night 2 with node-zendesk (can only re-send)" env NODE_PATH="$ROOT/build/bench/node/node_modules" \
    node bench/peer_node_bulk.js "$url" "$WORK/night2.csv"
fi
row "dry run without a state (reading and validation only)" lua5.4 bin/zendesk-sync -q --dry-run "$WORK/night2.csv"
row "dry run against the state (read + compare only)" lua5.4 bin/zendesk-sync -q --dry-run --state "$S" "$WORK/night2.csv"
grep -h "state" "$WORK/out.txt" | sed 's/^/  /'
bytes=$(( $(stat -c %s "$S") + $(stat -c %s "$S-wal" 2>/dev/null || echo 0) ))
echo "state file: $bytes bytes, $(( bytes / N )) bytes per row"
