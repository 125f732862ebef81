#!/usr/bin/env bash
# bench/sync_memory.sh [N ...]: peak resident memory of zendesk-sync syncing N generated rows
# (default 100,000 and 1,000,000) into a stand-in of its own (job_delay_ms 0, no rate limits),
# with the journal and a CSV report on, as a user would run it. The sync streams, so the peak
# must not grow with N: the script fails when the largest run needs more than 1.5 times the
# smallest. Needs /usr/bin/time (Debian package "time").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CTL=$ROOT/tests/fake_zendesk/ctl
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100000 1000000)

[ -x /usr/bin/time ] || { echo "sync_memory: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }
[ -f "$ROOT/build/lua5.4/zendesk/core.so" ] || { echo "sync_memory: build first (make build)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sync_memory.XXXXXX")
port=
cleanup() {
  [ -z "$port" ] || "$CTL" stop --port "$port" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The stand-in keeps its users in shared memory, about 1.5 KB a user: size it for the largest run.
max_n=0
for n in "${SIZES[@]}"; do [ "$n" -le "$max_n" ] || max_n=$n; done
dict_mb=$(( max_n * 2 / 1000 + 512 ))
url=$("$CTL" start --port auto --state-size "${dict_mb}m" | tail -n 1)
port=${url##*:}

export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/lua5.4/?.so;;"
export ZENDESK_URL=$url ZENDESK_EMAIL=admin@example.com ZENDESK_API_TOKEN=stand-in-token

printf '%10s %14s %10s %12s  %s\n' rows "peak RSS KiB" "wall s" "rows/s" "outcome"
first_rss=
last_rss=
for n in "${SIZES[@]}"; do
  curl -fsS -X POST "$url/__admin/reset" >/dev/null
  curl -fsS -X POST "$url/__admin/config" -H 'Content-Type: application/json' \
    -d '{"job_delay_ms": 0, "rate_limit_per_minute": 0, "per_user_limit": 0}' >/dev/null
  lua5.4 "$ROOT/bench/gen_users.lua" "$n" csv >"$WORK/users.csv"
  rm -f "$WORK/users.journal" "$WORK/report.csv"
  set +e
  /usr/bin/time -v -o "$WORK/time.txt" lua5.4 "$ROOT/bin/zendesk-sync" -q --journal "$WORK/users.journal" \
    --report "$WORK/report.csv" "$WORK/users.csv" >"$WORK/out.txt" 2>"$WORK/err.txt"
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "sync_memory: zendesk-sync exited $rc for $n rows:" >&2
    cat "$WORK/out.txt" "$WORK/err.txt" >&2
    exit 1
  fi
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt" |
    awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')
  rate=$(awk -v n="$n" -v w="$wall" 'BEGIN { printf "%.0f", (w > 0 ? n / w : 0) }')
  outcome=$(head -n 1 "$WORK/out.txt" | sed 's/^zendesk-sync: //; s/^[^:]*: //')
  printf '%10d %14d %10.1f %12d  %s\n' "$n" "$rss" "$wall" "$rate" "$outcome"
  [ -n "$first_rss" ] || first_rss=$rss
  last_rss=$rss
done

if [ "$last_rss" -gt $((first_rss * 3 / 2)) ]; then
  echo "sync_memory: peak RSS grows with the input ($first_rss KiB -> $last_rss KiB)" >&2
  exit 1
fi
echo "sync_memory: flat (${first_rss} KiB -> ${last_rss} KiB)"
