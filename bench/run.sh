#!/usr/bin/env bash
# bench/run.sh (make bench): measures lua-zendesk against the raw-libcurl limit and its peers on
# this machine, in one run, against a stand-in of its own, and writes BENCHMARKS.md.
#   bench/run.sh                  full run (about 10 minutes)
#   BENCH_QUICK=1 bench/run.sh    smoke run: small N, one run each, no 1,000,000-row sync
# Knobs: BENCH_N (sequential upserts per client and run), BENCH_RUNS, BENCH_CG_N (callgrind),
# BENCH_BULK_ROWS, BENCH_BIG_ROWS (0 skips), BENCH_SIGNUPS, BENCH_OUT (BENCHMARKS.md's path).
# Work files go to build/bench/ (git-ignored): npm packages, generated CSVs, callgrind outputs,
# logs, results.txt (every raw number this run measured).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
  N=${BENCH_N:-200}; RUNS=${BENCH_RUNS:-1}; CG_N=${BENCH_CG_N:-50}; N_CLI=${BENCH_N_CLI:-20}
  BULK_ROWS=${BENCH_BULK_ROWS:-2000}; BIG_ROWS=${BENCH_BIG_ROWS:-0}; SIGNUPS=${BENCH_SIGNUPS:-200}
else
  N=${BENCH_N:-2000}; RUNS=${BENCH_RUNS:-5}; CG_N=${BENCH_CG_N:-500}; N_CLI=${BENCH_N_CLI:-300}
  BULK_ROWS=${BENCH_BULK_ROWS:-100000}; BIG_ROWS=${BENCH_BIG_ROWS:-1000000}; SIGNUPS=${BENCH_SIGNUPS:-1000}
fi
CONCURRENCY=${BENCH_CONCURRENCY:-50}
OUT_MD=${BENCH_OUT:-BENCHMARKS.md}
W=build/bench
RES=$W/results.txt
LOG=$W/logs
NODE_ZENDESK=node-zendesk@6.0.1
# the stand-in's user store must hold the 1,000,000-row sync (about 2.5 KB a user)
STANDIN_DICT=${BENCH_STANDIN_DICT:-3072m}

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ---- what the run needs -------------------------------------------------------------------------
# Debian packages (installed when missing, as `make deps` does); node and npm come from Debian's
# nodejs/npm unless a node with its npm is already there (NodeSource ships npm inside nodejs).
BENCH_DEBS="gcc make pkg-config curl libcurl4-openssl-dev lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev
  lua-cjson lua-argparse lua5.1 lua-curl python3 python3-requests valgrind wrk time nginx
  libnginx-mod-http-lua procps lua-dbi-sqlite3 libsqlite3-dev"
# shellcheck disable=SC2086
./scripts/deps.sh $BENCH_DEBS
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  ./scripts/deps.sh nodejs npm
fi

mkdir -p "$W" "$LOG" "$W/data" "$W/cg"
: >"$RES"
record() { echo "$*" >>"$RES"; }

say "building the module (Lua 5.4 and LuaJIT) and the raw libcurl program"
make -s build >/dev/null
make -s build LUA=luajit >/dev/null
gcc -O2 -Wall -Wextra -o "$W/raw_libcurl" bench/raw_libcurl.c -lcurl

if [ ! -f "$W/node/node_modules/node-zendesk/package.json" ] ||
   ! grep -q '"version": "6.0.1"' "$W/node/node_modules/node-zendesk/package.json"; then
  say "installing $NODE_ZENDESK into $W/node"
  npm install --silent --no-audit --no-fund --prefix "$W/node" "$NODE_ZENDESK" >"$LOG/npm.log" 2>&1 ||
    { cat "$LOG/npm.log" >&2; die "npm install $NODE_ZENDESK failed"; }
fi
export NODE_PATH=$ROOT/$W/node/node_modules

export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
LUA54_CPATH="$ROOT/build/lua5.4/?.so;;"
JIT_CPATH="$ROOT/build/luajit/?.so;;"
export LUA_CPATH=$LUA54_CPATH

# ---- the stand-in ---------------------------------------------------------------------------------
CTL=tests/fake_zendesk/ctl
# a user store big enough for the largest sync (ctl's default 512m holds ~340,000 users)
URL=$("$CTL" start --port auto --state-size "$STANDIN_DICT" | tail -n 1)
PORT=${URL##*:}
NGINX_PREFIX=""
cleanup() {
  if [ -n "$NGINX_PREFIX" ] && [ -f "$NGINX_PREFIX/logs/nginx.pid" ]; then
    nginx -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf" -s stop 2>/dev/null || true
  fi
  "$CTL" stop --port "$PORT" >/dev/null 2>&1 || true
}
trap cleanup EXIT
standin_fresh() {
  curl -fsS -o /dev/null -X POST "$URL/__admin/reset"
  curl -fsS -o /dev/null -X POST -d '{"job_delay_ms":0,"rate_limit_per_minute":0,"per_user_limit":0}' \
    "$URL/__admin/config"
}
standin_fresh
say "stand-in at $URL"

# ---- the machine ----------------------------------------------------------------------------------
record "meta date $(date -u '+%Y-%m-%d %H:%M UTC')"
record "meta nproc $(nproc)"
record "meta cpu $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
record "meta kernel $(uname -sr)"
record "meta memory $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
record "meta libcurl $(curl-config --version | sed 's/libcurl //')"
record "meta lua $(lua5.4 -v 2>&1 | awk '{print $2}')"
record "meta luajit $(luajit -v | awk '{print $2}')"
record "meta lua51 $(lua5.1 -v 2>&1 | awk '{print $2}')"
record "meta node $(node --version)"
record "meta python $(python3 --version | awk '{print $2}')"
record "meta requests $(python3 -c 'import requests; print(requests.__version__)')"
record "meta luacurl $(dpkg-query -W -f='${Version}' lua-curl)"
record "meta cjson $(dpkg-query -W -f='${Version}' lua-cjson)"
record "meta curlcli $(curl --version | head -1 | awk '{print $2}')"
record "meta nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')"
record "meta wrk $(dpkg-query -W -f='${Version}' wrk)"
record "meta valgrind $(valgrind --version | sed 's/valgrind-//')"
record "meta load_start $(cut -d' ' -f1-3 /proc/loadavg)"
record "meta quick $QUICK"
record "meta n $N"
record "meta runs $RUNS"
record "meta n_cli $N_CLI"
record "meta cg_n $CG_N"
record "meta concurrency $CONCURRENCY"
record "meta signups $SIGNUPS"

# ---- single upserts -------------------------------------------------------------------------------
RUN_ID=$(date +%s)
single() {   # client run n: runs one client, records its requests per second
  local client=$1 run=$2 n=$3 prefix="b$RUN_ID-$1-$2" out
  case $client in
    raw) out=$("$W/raw_libcurl" "$URL" "$n" "$prefix") ;;
    lua54) out=$(lua5.4 bench/upsert_module.lua "$URL" "$n" "$prefix") ;;
    luajit) out=$(LUA_CPATH=$JIT_CPATH luajit bench/upsert_module.lua "$URL" "$n" "$prefix") ;;
    lua54f) out=$(lua5.4 bench/upsert_module.lua "$URL" "$n" "$prefix" id) ;;
    luajitf) out=$(LUA_CPATH=$JIT_CPATH luajit bench/upsert_module.lua "$URL" "$n" "$prefix" id) ;;
    luacurl) out=$(lua5.1 bench/peer_luacurl.lua "$URL" "$n" "$prefix") ;;
    python) out=$(python3 bench/peer_python.py "$URL" "$n" "$prefix") ;;
    node) out=$(node bench/peer_node_single.js "$URL" "$n" "$prefix") ;;
    curlcli) out=$(bench/peer_curl_cli.sh "$URL" "$n" "$prefix") ;;
  esac || die "$client run $run failed: $out"
  echo "$out" >>"$LOG/single.log"
  # "requests N seconds S rps R failed F"
  set -- $out
  record "single $client $run $6 $2 $4"
}
say "single upserts: $N sequential requests a client, $RUNS runs (curl CLI: $N_CLI)"
for run in $(seq "$RUNS"); do
  standin_fresh
  # interleaved, so a burst of load from elsewhere hits every client alike, and each round starts
  # with the next client, so none is always the first after the reset
  clients=(raw lua54 luajit lua54f luajitf luacurl python node curlcli)
  k=$(( (run - 1) % ${#clients[@]} ))
  for client in "${clients[@]:k}" "${clients[@]:0:k}"; do
    n=$N
    [ "$client" = curlcli ] && n=$N_CLI
    single "$client" "$run" "$n"
  done
  say "  run $run/$RUNS done"
done

# ---- instructions per upsert ----------------------------------------------------------------------
# callgrind counts the client process only (the stand-in is another process); N and 2N requests,
# so the difference over N leaves out startup and teardown.
cg() {   # client n
  local client=$1 n=$2 prefix="cg$RUN_ID-$1-$2" f="$W/cg/$1.$2.out" ir
  case $client in
    raw) valgrind --tool=callgrind --callgrind-out-file="$f" "$W/raw_libcurl" "$URL" "$n" "$prefix" \
           >>"$LOG/cg.log" 2>&1 ;;
    lua54) valgrind --tool=callgrind --callgrind-out-file="$f" lua5.4 bench/upsert_module.lua "$URL" "$n" "$prefix" \
             >>"$LOG/cg.log" 2>&1 ;;
    luajit) LUA_CPATH=$JIT_CPATH valgrind --tool=callgrind --callgrind-out-file="$f" \
              luajit bench/upsert_module.lua "$URL" "$n" "$prefix" >>"$LOG/cg.log" 2>&1 ;;
    lua54f) valgrind --tool=callgrind --callgrind-out-file="$f" lua5.4 bench/upsert_module.lua "$URL" "$n" "$prefix" id \
             >>"$LOG/cg.log" 2>&1 ;;
    luajitf) LUA_CPATH=$JIT_CPATH valgrind --tool=callgrind --callgrind-out-file="$f" \
              luajit bench/upsert_module.lua "$URL" "$n" "$prefix" id >>"$LOG/cg.log" 2>&1 ;;
  esac || die "callgrind $client $n failed (see $LOG/cg.log)"
  ir=$(awk '/^summary:/ {print $2}' "$f")
  record "cg $client $n $ir"
}
say "instructions per upsert (callgrind, $CG_N and $((2 * CG_N)) requests)"
standin_fresh
for client in raw lua54 luajit lua54f luajitf; do
  cg "$client" "$CG_N"
  cg "$client" $((2 * CG_N))
done

# ---- bulk -----------------------------------------------------------------------------------------
csv_for() {   # rows -> path of a generated CSV (kept between runs: the generator is deterministic)
  local f="$W/data/users-$1.csv"
  if [ ! -s "$f" ]; then
    lua5.4 bench/gen_users.lua "$1" csv >"$f.tmp" && mv "$f.tmp" "$f"
  fi
  echo "$f"
}
timev() {   # file key -> value of one /usr/bin/time -v line
  awk -F': ' -v k="$2" '$1 ~ k {print $2}' "$1" | tail -n 1
}
cpu_of() {   # file -> user + system CPU seconds of a /usr/bin/time -v report
  awk -F': ' '$1 ~ /User time \(seconds\)|System time \(seconds\)/ { s += $2 } END { print s }' "$1"
}
secs() {   # h:mm:ss or m:ss.cc -> seconds
  awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }' <<<"$1"
}
sync_run() {   # rows tag: zendesk-sync over a fresh stand-in; records elapsed and peak RSS
  local rows=$1 tag=$2 csv tv
  csv=$(csv_for "$rows")
  tv="$LOG/time-$tag.txt"
  rm -f "$W/data/$tag.journal"
  standin_fresh
  ZENDESK_URL=$URL ZENDESK_EMAIL=admin@example.com ZENDESK_API_TOKEN=stand-in-token \
    /usr/bin/time -v -o "$tv" lua5.4 bin/zendesk-sync -q --journal "$W/data/$tag.journal" "$csv" \
    >"$LOG/$tag.out" 2>&1 || die "zendesk-sync $rows rows failed (see $LOG/$tag.out)"
  local wall rss created cpu
  wall=$(secs "$(timev "$tv" 'Elapsed \\(wall clock\\) time')")
  rss=$(timev "$tv" 'Maximum resident set size')
  cpu=$(cpu_of "$tv")
  created=$(curl -fsS "$URL/__admin/stats" | sed 's/.*"users":\([0-9]*\).*/\1/')
  record "sync $tag $rows $wall $rss $created $cpu"
}
say "bulk: $BULK_ROWS users through zendesk-sync, then node-zendesk"
sync_run "$BULK_ROWS" "sync-$BULK_ROWS"
standin_fresh
csv=$(csv_for "$BULK_ROWS")
/usr/bin/time -v -o "$LOG/time-node-bulk.txt" node bench/peer_node_bulk.js "$URL" "$csv" \
  >"$LOG/node-bulk.out" 2>&1 || die "peer_node_bulk failed (see $LOG/node-bulk.out)"
# "rows R seconds S users_per_s U created C ..."
set -- $(grep '^rows ' "$LOG/node-bulk.out")
record "nodebulk $2 $4 $(timev "$LOG/time-node-bulk.txt" 'Maximum resident set size') $8 $(cpu_of "$LOG/time-node-bulk.txt")"

if [ "$BIG_ROWS" -gt 0 ]; then
  say "memory: $BIG_ROWS rows through zendesk-sync"
  sync_run "$BIG_ROWS" "sync-$BIG_ROWS"
fi

# ---- nginx ----------------------------------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
cpu_ticks() {   # master pid -> CPU clock ticks (user + system) of it and its workers, threads included
  local t=0 p f
  for p in $1 $(pgrep -P "$1"); do
    f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    # shellcheck disable=SC2086
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
STANDIN_MASTER=$(cat "tests/fake_zendesk/run/$PORT/nginx.pid")
wrk_run() {   # mode url run: SIGNUPS sign-ups at CONCURRENCY, recorded with the servers' CPU time
  local mode=$1 url=$2 run=$3 out e0 s0 e1 s1
  e0=$(cpu_ticks "$EXAMPLE_MASTER"); s0=$(cpu_ticks "$STANDIN_MASTER")
  out=$(BENCH_MODE=${mode%_cold} BENCH_TOTAL=$SIGNUPS BENCH_RUN="$RUN_ID$mode$run" \
        BENCH_THREADS=2 wrk -t2 -c"$CONCURRENCY" -d120s -s bench/signup_wrk.lua "$url" 2>&1) || die "wrk $mode failed: $out"
  echo "$out" >>"$LOG/wrk.log"
  # "requests N seconds S rps R p50_ms A p99_ms B non2xx C socket_errors D"
  set -- $(grep '^requests ' <<<"$out")
  e1=$(cpu_ticks "$EXAMPLE_MASTER"); s1=$(cpu_ticks "$STANDIN_MASTER")
  record "nginx $mode $run $6 $8 ${10} $2 ${12} ${14} $((e1 - e0)) $((s1 - s0)) $(getconf CLK_TCK)"
}
if [ -f examples/nginx.conf ] && [ -f examples/nginx/zendesk_app.lua ]; then
  say "nginx: $SIGNUPS sign-ups at concurrency $CONCURRENCY through examples/nginx.conf, and straight"
  NGINX_PREFIX=$ROOT/$W/nginx
  NPORT=$(free_port)
  rm -rf "$NGINX_PREFIX"
  mkdir -p "$NGINX_PREFIX/logs"
  ln -s "$ROOT/examples" "$NGINX_PREFIX/examples"
  # the example as shipped, on a port of its own, loading this checkout's Lua and LuaJIT module
  {
    # as root the workers would be nobody, who cannot read the checkout
    [ "$(id -u)" = 0 ] && echo "user root;"
    sed -e "s/listen 127\.0\.0\.1:8080\([ ;]\)/listen 127.0.0.1:$NPORT\1/" \
        -e "s#\$prefix/lua/#$ROOT/lua/#g" -e "s#\$prefix/build/#$ROOT/build/#g" examples/nginx.conf
  } >"$NGINX_PREFIX/nginx.conf"
  grep -q "listen 127.0.0.1:$NPORT" "$NGINX_PREFIX/nginx.conf" || die "examples/nginx.conf: no listen 127.0.0.1:8080 to move"
  ZENDESK_URL=$URL ZENDESK_EMAIL=admin@example.com ZENDESK_API_TOKEN=stand-in-token \
    nginx -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf" >"$LOG/nginx.out" 2>&1 ||
    { cat "$LOG/nginx.out" "$NGINX_PREFIX/logs/error.log" >&2 2>/dev/null; die "nginx did not start"; }
  for _ in $(seq 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$NPORT/health" 2>/dev/null && break
    sleep 0.2
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$NPORT/health" || die "nginx on $NPORT does not answer /health"
  EXAMPLE_MASTER=$(cat "$NGINX_PREFIX/logs/nginx.pid")
  # the first sign-ups after start pay for the thread pool's Lua VMs and their clients:
  # recorded apart, then the timed runs
  standin_fresh
  wrk_run signup_cold "http://127.0.0.1:$NPORT" 0
  for run in $(seq "$RUNS"); do
    standin_fresh
    wrk_run signup "http://127.0.0.1:$NPORT" "$run"
    standin_fresh
    wrk_run direct "$URL" "$run"
  done
  nginx -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf" -s stop 2>/dev/null || true
  NGINX_PREFIX=""
else
  say "nginx: examples/nginx.conf or examples/nginx/zendesk_app.lua is missing; skipped"
  record "nginx_missing"
fi

record "meta load_end $(cut -d' ' -f1-3 /proc/loadavg)"
say "writing $OUT_MD"
lua5.4 bench/report.lua "$RES" >"$OUT_MD.tmp"
# ---- the state store (issue 16): its own section, appended ------------------------------------
STATE_ROWS=${BENCH_STATE_ROWS:-$([ "$QUICK" = 1 ] && echo 5000 || echo 200000)}
say "state store: binding, journal cost, nightly delta at $STATE_ROWS rows, read+compare"
{
  echo
  echo "## State store: delta sync and leavers (issue 16, generated by bench/run.sh)"
  echo
  echo "Binding (bench/state_binding.lua, 100,000 keys):"
  echo
  LUA_CPATH="$ROOT/build/lua5.4/?.so;;" lua5.4 bench/state_binding.lua 100000 "$W"
  LUA_CPATH="$ROOT/build/luajit/?.so;;" luajit bench/state_binding.lua 100000 "$W" | tail -n +3
  echo
  echo "Journal cost (bench/state_journal_cost.lua):"
  echo
  LUA_PATH="$ROOT/lua/?.lua;;" LUA_CPATH="$ROOT/build/lua5.4/?.so;;" lua5.4 bench/state_journal_cost.lua 300 "$W"
  echo
  echo "Nightly run (bench/state_delta.sh $STATE_ROWS):"
  echo
  bench/state_delta.sh "$STATE_ROWS" 2>&1
  echo
  echo "Reading and comparing against the state (bench/state_compare.sh):"
  echo
  if [ "$QUICK" = 1 ]; then bench/state_compare.sh 20000 2>&1; else bench/state_compare.sh 100000 1000000 2>&1; fi
} >>"$OUT_MD.tmp" || die "the state store benches failed"
mv "$OUT_MD.tmp" "$OUT_MD"
say "done: $OUT_MD (raw numbers in $RES)"
