#!/usr/bin/env bash
# Measures the stand-in's single-upsert throughput: wrk sends create_or_update
# with a distinct email per request over kept-alive connections, against a fresh
# instance on a free port with both rate limits switched off.
#   bench/standin-throughput.sh            (DURATION=10s THREADS=2 CONNECTIONS=32)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
CTL=tests/fake_zendesk/ctl

command -v wrk >/dev/null || { echo "standin-throughput: wrk is not installed" >&2; exit 1; }
url=$("$CTL" start --port auto | tail -n 1)
port=${url##*:}
trap '"$CTL" stop --port "$port" >/dev/null' EXIT
curl -fsS -o /dev/null -X POST -d '{"rate_limit_per_minute":0,"per_user_limit":0}' "$url/__admin/config"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION -s bench/standin_wrk.lua $url"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s bench/standin_wrk.lua "$url"
stats=$(curl -fsS "$url/__admin/stats")
echo "stand-in stats: $stats"
