#!/usr/bin/env bash
# Builds the C core with AddressSanitizer and UndefinedBehaviorSanitizer into
# build/asan/zendesk/core.so (the Makefile's flags plus the sanitizers) and runs the Lua 5.4 spec
# suite against it, with the ASan runtime preloaded into lua5.4 and leak checking on.
#   scripts/asan.sh [busted args...]     e.g. scripts/asan.sh tests/unit/core_json_spec.lua
# Ends with busted's summary line; exits non-zero on a failed spec or any sanitizer report.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT=build/asan
CC=${CC:-gcc}
mkdir -p "$OUT/zendesk" build/test-logs
LOG=${ASAN_LOG:-build/test-logs/asan.log}
started=$(date +%s)

# the Makefile's ZD_CFLAGS (-std=c99 -fPIC -fvisibility=hidden, warnings as errors), -O1 for usable traces
WARN="-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter"
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
PKG_CFLAGS=$(pkg-config --cflags lua5.4 libcurl)
PKG_LIBS=$(pkg-config --libs libcurl)
objs=()
for src in $(make -s print-srcs); do
    obj="$OUT/$(basename "${src%.c}").o"
    # shellcheck disable=SC2086
    $CC -O1 -g $SAN -std=c99 -fPIC -fvisibility=hidden $WARN $PKG_CFLAGS -c -o "$obj" "$src" || exit 1
    objs+=("$obj")
done
# shellcheck disable=SC2086
$CC -shared $SAN -o "$OUT/zendesk/core.so" "${objs[@]}" $PKG_LIBS || exit 1
# the state store's SQLite binding (issue 16): its own module, sanitized too
# shellcheck disable=SC2086
$CC -O1 -g $SAN -std=c99 -fPIC -fvisibility=hidden $WARN $PKG_CFLAGS -shared -o "$OUT/zendesk/sqlite.so" src/sqlite.c \
    -lsqlite3 || exit 1

# The runtime must come first in lua5.4 (which is not instrumented). A second preloaded object
# takes LD_PRELOAD out of the environment again, so that nginx, curl and the shells the specs
# start run without the sanitizer (their own exit-time allocations are not ours to report).
if [ "${CC##*/}" = clang ] || [[ "$CC" == clang* ]]; then
    RUNTIME=$($CC -print-file-name=libclang_rt.asan-x86_64.so)
else
    RUNTIME=$($CC -print-file-name=libasan.so)
fi
[ -f "$RUNTIME" ] || { echo "asan: no ASan runtime for $CC ($RUNTIME)" >&2; exit 1; }
cat >"$OUT/unpreload.c" <<'C'
#include <stdlib.h>
__attribute__((constructor)) static void unpreload(void) { unsetenv("LD_PRELOAD"); }
C
$CC -shared -fPIC -o "$OUT/unpreload.so" "$OUT/unpreload.c" || exit 1

# Is the sanitized core the one the specs load, and does the runtime catch anything at all?
check=$(LD_PRELOAD="$RUNTIME $ROOT/$OUT/unpreload.so" ASAN_OPTIONS=detect_leaks=0 \
    lua5.4 -e "package.cpath='$OUT/?.so;'..package.cpath
      print(package.searchpath('zendesk.core', package.cpath), os.getenv('LD_PRELOAD'))
      require 'zendesk.core'" 2>&1)
case "$check" in
"$OUT/zendesk/core.so	nil") ;;
*) echo "asan: the sanitized core does not load as expected: $check" >&2; exit 1 ;;
esac

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:print_suppressions=0:log_path=$ROOT/$OUT/report"
export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$ROOT/$OUT/report"
rm -f "$OUT"/report.*

LD_PRELOAD="$RUNTIME $ROOT/$OUT/unpreload.so" lua5.4 "$(command -v busted)" --cpath="$OUT/?.so" -o utfTerminal "$@" \
    >"$LOG" 2>&1
rc=$?
summary=$(grep -aE '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$LOG" | tail -n 1)
reports=$(find "$OUT" -maxdepth 1 -name 'report.*' | wc -l)
elapsed=$(( $(date +%s) - started ))
tail -n 40 "$LOG" | grep -aEv '^[[:space:]]*$' | tail -n 25
echo "asan: ${summary:-no busted summary}"
if [ "$reports" -gt 0 ]; then
    echo "asan: $reports sanitizer report(s):"
    for f in "$OUT"/report.*; do echo "--- $f"; head -n 40 "$f"; done
fi
echo "asan: exit $rc, $reports sanitizer report(s), ${elapsed} s (log: $LOG)"
[ "$rc" -eq 0 ] && [ "$reports" -eq 0 ]
