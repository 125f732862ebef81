#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for SECONDS, then prints per target the number of
# executions and of findings (crash, leak, timeout, oom files).
#   fuzz/run.sh SECONDS [TARGET...]    targets: headers json_decode json_encode response
#   FUZZ_JOBS=2 fuzz/run.sh 600        two targets at a time (one per core)
#   FUZZ_OUT=DIR FUZZ_CORPUS=DIR ...    builds, logs and corpora elsewhere (two runs at once)
# Needs clang with libFuzzer (Debian clang + libclang-rt-14-dev), liblua5.4-dev, lua-cjson,
# libcurl4-openssl-dev. Built into fuzz/out/, corpora grow in fuzz/corpus-run/ (both git-ignored),
# seeded from fuzz/seeds/<target>/ and from tests/recorded/ (fuzz/make-seeds.sh).
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
SECONDS_EACH=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
TARGETS=${*:-headers json_decode json_encode response}
JOBS=${FUZZ_JOBS:-1}
CC=${FUZZ_CC:-clang}
OUT=${FUZZ_OUT:-$ROOT/fuzz/out}
RUNS=${FUZZ_CORPUS:-$ROOT/fuzz/corpus-run}
mkdir -p "$OUT" "$RUNS"

PKG=$(pkg-config --cflags lua5.4 libcurl)
LIBS=$(pkg-config --libs lua5.4 libcurl)
FLAGS="-g -O1 -std=c99 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Wall -Wextra -Wno-unused-parameter"

# sources compiled into each target with the harness (response: every file of the core)
declare -A SRC=(
    [headers]="src/headers.c"
    [json_decode]="src/json.c src/buf.c"
    [json_encode]="src/json.c src/buf.c"
    [response]="src/buf.c src/headers.c src/json.c src/transport.c src/email.c src/scrub.c src/response.c
                src/oauth.c src/options.c src/files.c src/client.c src/lzendesk.c"
)

build() {
    local t=$1
    # shellcheck disable=SC2086
    $CC $FLAGS -Isrc $PKG -o "$OUT/${t}_fuzz" "fuzz/${t}_fuzz.c" ${SRC[$t]} $LIBS -lm
}

for t in $TARGETS; do
    [ -n "${SRC[$t]:-}" ] || { echo "unknown target $t" >&2; exit 2; }
    build "$t" || { echo "== $t: build failed" >&2; exit 1; }
done

"$ROOT/fuzz/make-seeds.sh" "$RUNS" >/dev/null || { echo "make-seeds.sh failed" >&2; exit 1; }

run_one() {
    local t=$1
    local log="$OUT/$t.log" art="$OUT/artifacts/$t/"
    mkdir -p "$RUNS/$t" "$art"
    local seeds=()
    [ -d "fuzz/seeds/$t" ] && seeds+=("fuzz/seeds/$t")
    # -rss_limit_mb: one Lua state lives for the whole run; -max_len keeps inputs to what an
    # answer's headers or body can plausibly be while staying fast
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
        "$OUT/${t}_fuzz" -max_total_time="$SECONDS_EACH" -print_final_stats=1 -max_len=8192 \
        -timeout=10 -rss_limit_mb=4096 -artifact_prefix="$art" "$RUNS/$t" "${seeds[@]}" >"$log" 2>&1
    echo $? >"$OUT/$t.rc"
}

running=0
for t in $TARGETS; do
    rm -f "$OUT/artifacts/$t/"* 2>/dev/null
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

total_findings=0
printf '%-12s %14s %10s %9s  %s\n' target executions exec/s findings "corpus"
for t in $TARGETS; do
    log="$OUT/$t.log"
    execs=$(grep -a 'stat::number_of_executed_units' "$log" | tail -n 1 | awk '{print $2}')
    [ -n "$execs" ] || execs=$(grep -aoE '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | tr -dc 0-9)
    speed=$(grep -a 'stat::average_exec_per_sec' "$log" | tail -n 1 | awk '{print $2}')
    findings=$(find "$OUT/artifacts/$t" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    corpus=$(find "$RUNS/$t" -type f | wc -l)
    total_findings=$((total_findings + findings))
    printf '%-12s %14s %10s %9s  %s files\n' "$t" "${execs:-?}" "${speed:-?}" "$findings" "$corpus"
    if [ "$findings" -gt 0 ]; then
        find "$OUT/artifacts/$t" -type f | sed 's/^/    /'
        grep -aE 'runtime error|secret|decoded as|stayed a float|retry_after =|raised|not NUL|control byte|does not decode|came back|ERROR: AddressSanitizer|ERROR: LeakSanitizer' "$log" | head -n 5 | sed 's/^/    /'
    fi
done
echo "findings: $total_findings"
[ "$total_findings" -eq 0 ]
