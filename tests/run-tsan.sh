#!/bin/sh
# The integration suites named in TSAN_TESTS (default: the ones that drive
# several loops and threads at once) against a ThreadSanitizer build of the
# daemon in build/tsan. A data race makes the daemon exit 66 (halt_on_error),
# which fails the test that was running; the harness also fails any test whose
# daemon log mentions ThreadSanitizer.
set -eu
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
TSAN_TESTS=${TSAN_TESTS:-"test_loops test_pipeline test_lifecycle"}

# Some kernels map memory where TSan cannot work (high ASLR entropy): then a
# clear skip, not a failure of the daemon.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '#include <pthread.h>\nstatic void *f(void *a) { return a; }\nint main(void) { pthread_t t; pthread_create(&t, 0, f, 0); return pthread_join(t, 0); }\n' >"$probe/p.c"
if ! cc -fsanitize=thread -o "$probe/p" "$probe/p.c" 2>"$probe/err" || ! "$probe/p" 2>>"$probe/err"; then
  echo "tsan: skipped: ThreadSanitizer does not run on this machine: $(head -c 300 "$probe/err")"
  echo "0 passed, 0 failed"
  exit 0
fi

$MAKE --no-print-directory BUILD=build/tsan SAN=thread integration-bins >/dev/null
BUILD=build/tsan TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1" \
  exec python3 tests/integration/run.py $TSAN_TESTS
