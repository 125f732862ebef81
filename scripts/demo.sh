#!/usr/bin/env bash
# make demo: starts the Zendesk stand-in, syncs examples/users.csv into it with zendesk-sync,
# prints the summary and where the report is, and stops the stand-in (also on failure or ^C).
# Exits 0 when the sync ran to the end, even though a few rows of the example are invalid on
# purpose; exits non-zero when the sync itself failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/build/demo
CTL=$ROOT/tests/fake_zendesk/ctl

[ -f "$ROOT/build/lua5.4/zendesk/core.so" ] || { echo "demo: build first (make build)" >&2; exit 2; }
mkdir -p "$OUT"
rm -f "$OUT/report.csv" "$OUT/users.csv.journal"

url=$("$CTL" start --port auto | tail -n 1)
port=${url##*:}
trap '"$CTL" stop --port "$port" >/dev/null 2>&1 || true' EXIT
# slow jobs a little (50 ms per phase) so that the progress display has something to show
curl -fsS -X POST "$url/__admin/config" -H 'Content-Type: application/json' \
  -d '{"job_delay_ms": 50, "rate_limit_per_minute": 0, "per_user_limit": 0}' >/dev/null
echo "demo: Zendesk stand-in at $url"

export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/lua5.4/?.so;;"
export ZENDESK_URL=$url ZENDESK_EMAIL=admin@example.com ZENDESK_API_TOKEN=stand-in-token

set +e
lua5.4 "$ROOT/bin/zendesk-sync" --report "$OUT/report.csv" --journal "$OUT/users.csv.journal" \
  --batch-size 50 --max-jobs 4 "$ROOT/examples/users.csv"
rc=$?
set -e

case $rc in
0) echo "demo: every row of examples/users.csv is in the stand-in." ;;
1) echo "demo: sync complete. The rows listed above did not go through: examples/users.csv holds a few" \
        "invalid rows on purpose (bad emails, roles, ids, missing names) to show how they are reported." ;;
*) echo "demo: the sync failed (exit $rc)" >&2; exit 1 ;;
esac
[ -s "$OUT/report.csv" ] || { echo "demo: no report was written" >&2; exit 1; }
echo "demo: per-row report: ${OUT#"$ROOT"/}/report.csv ($(($(wc -l <"$OUT/report.csv") - 1)) rows)"
echo "demo: journal:        ${OUT#"$ROOT"/}/users.csv.journal"
