#!/usr/bin/env bash
# bench/state_compare.sh [N ...]: reading and comparing N rows against a state of N people
# (zendesk-sync --dry-run --state: no network), default 100,000 and 1,000,000. Prints rows/s
# (wall, whole process), peak RSS and the state file's bytes per row; fails when the peak RSS of
# the largest run is over 32 MiB. The state is filled by bench/state_fill.lua (as a first run
# leaves it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100000 1000000)
[ -x /usr/bin/time ] || { echo "state_compare: /usr/bin/time is missing" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/state_compare.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/lua5.4/?.so;;"
echo "| rows | read+compare rows/s | peak RSS MiB | state bytes/row |"
echo "|---:|---:|---:|---:|"
rss=0
for n in "${SIZES[@]}"; do
  lua5.4 bench/gen_users.lua "$n" csv >"$WORK/u.csv"
  lua5.4 bench/state_fill.lua "$WORK/u.csv" "$WORK/s.state" >/dev/null
  /usr/bin/time -v -o "$WORK/time.txt" lua5.4 bin/zendesk-sync -q --dry-run --state "$WORK/s.state" \
    "$WORK/u.csv" >"$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; exit 1; }
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt" |
    awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  bytes=$(stat -c %s "$WORK/s.state")
  printf '| %d | %.0f | %.1f | %d |\n' "$n" "$(awk -v n="$n" -v w="$wall" 'BEGIN { print (w > 0 ? n / w : 0) }')" \
    "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')" $(( bytes / n ))
  grep "state" "$WORK/out.txt" | sed 's/^/  /' >&2
done
[ "$rss" -le $((32 * 1024)) ] || { echo "state_compare: peak RSS ${rss} KiB is over 32 MiB" >&2; exit 1; }
