#!/bin/sh
# Runs each unit-test binary (cmocka) with the environment the tests expect,
# and prints one machine-readable closing line: "N passed, N failed".
BUILD=${BUILD:-build}
SHARED=${SHARED:-../shared}
export THEMED_PLUGIN_DIR="$BUILD/plugins"
export THEMED_TEST_PLUGIN_DIR="$BUILD/tests/plugins"
export THEMED_EXAMPLE_PLUGIN_DIR="$BUILD/examples"
export THEMED_SHARED="$SHARED"
export THEMED_BUILD="$BUILD"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
passed=0
failed=0
for t in "$@"; do
  echo "== $t"
  if "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $t"; fi
done
echo "unit ($BUILD): $passed passed, $failed failed"
[ "$failed" -eq 0 ]
