#!/bin/sh
# Runs the libFuzzer targets built by `make fuzz-build` (build/fuzz/<target>).
#
#   tests/fuzz/run.sh campaign SECONDS TARGET...   make fuzz
#   tests/fuzz/run.sh ci SECONDS TARGET...         make fuzz-ci (make test)
#
# campaign: each target SECONDS on its working corpus build/fuzz/corpus/<t>
#   (kept between runs, seeded from tests/fuzz/corpus/<t>); findings go to
#   build/fuzz/findings/<t>/.
# ci: first replays every input in tests/fuzz/regressions/<t>/ (each once),
#   then fuzzes SECONDS from the seeds on a throwaway corpus.
# A target passes when it ran its time without a finding (a crash, a
# sanitizer report, a FUZZ_CHECK, a timeout or running out of memory).
# Last line: "N passed, N failed". Run from the top of the tree.
set -u
MODE=${1:?usage: run.sh campaign|ci SECONDS TARGET...}
SECS=${2:?seconds}
shift 2
FB=${FUZZ_BUILD:-build/fuzz}
export THEMED_PLUGIN_DIR="$FB/plugins"
export THEMED_FUZZ_BUNDLE="tests/fuzz/corpus/fuzz_bundle/tiny.bundle"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

passed=0
failed=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/themed-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

# Longest input per target: enough for a few requests or a small bundle.
max_len() {
  case "$1" in
  fuzz_bundle) echo 65536 ;;
  fuzz_jsonl | fuzz_http | fuzz_loops) echo 16384 ;;
  fuzz_split) echo 8192 ;;
  *) echo 4096 ;;
  esac
}

# Seed directories and dictionaries: a target's own, but fuzz_loops (the
# same connections, served by worker loops) takes fuzz_jsonl's and
# fuzz_http's, both dictionaries joined into one.
seeds_of() {
  case "$1" in
  fuzz_loops) echo "tests/fuzz/corpus/fuzz_jsonl tests/fuzz/corpus/fuzz_http" ;;
  *) echo "tests/fuzz/corpus/$1" ;;
  esac
}
dict_of() {
  case "$1" in
  fuzz_loops)
    cat tests/fuzz/fuzz_jsonl.dict tests/fuzz/fuzz_http.dict >"$tmp/$1.dict" && echo "$tmp/$1.dict"
    ;;
  *) [ -f "tests/fuzz/$1.dict" ] && echo "tests/fuzz/$1.dict" ;;
  esac
}

stat_of() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }

for t in "$@"; do
  bin="$FB/$t"
  if [ ! -x "$bin" ]; then
    echo "FAIL $t: $bin not built (make fuzz-build)"
    failed=$((failed + 1))
    continue
  fi
  log="$tmp/$t.log"
  findings="$FB/findings/$t"
  mkdir -p "$findings"
  dict=$(dict_of "$t")
  [ -n "$dict" ] && dict="-dict=$dict"
  ok=1
  why=""
  regress=0
  if [ "$MODE" = ci ] && [ -d "tests/fuzz/regressions/$t" ]; then
    files=$(find "tests/fuzz/regressions/$t" -type f ! -name '*.md' | sort)
    if [ -n "$files" ]; then
      regress=$(echo "$files" | wc -l)
      # shellcheck disable=SC2086
      if ! "$bin" -runs=1 -timeout=30 -rss_limit_mb=4096 -malloc_limit_mb=10240 $files >"$tmp/$t.regress.log" 2>&1; then
        ok=0
        why="a regression input fails again"
        tail -n 40 "$tmp/$t.regress.log"
      fi
    fi
  fi
  if [ "$MODE" = campaign ]; then
    corpus="$FB/corpus/$t"
  else
    corpus="$tmp/corpus-$t"
  fi
  mkdir -p "$corpus"
  extra=""
  [ -d "tests/fuzz/regressions/$t" ] && extra="tests/fuzz/regressions/$t"
  t0=$(date +%s)
  if [ "$ok" = 1 ]; then
    # shellcheck disable=SC2086
    # -malloc_limit_mb: the largest bundle within the documented limits
    # (2^24 buckets x 64 themes) asks for 8 GiB of collapsed weights in one
    # calloc that is mostly never touched; -rss_limit_mb bounds real use.
    "$bin" -max_total_time="$SECS" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=4096 \
      -malloc_limit_mb=10240 -print_final_stats=1 -artifact_prefix="$findings/" $dict \
      "$corpus" $(seeds_of "$t") $extra >"$log" 2>&1
    rc=$?
    if [ "$rc" -ne 0 ]; then
      ok=0
      why=$(grep -m1 -E "ERROR: libFuzzer|ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error|FUZZ_CHECK" "$log")
      [ -n "$why" ] || why="exit status $rc"
      tail -n 60 "$log"
    elif ! grep -q "^Done [0-9]* runs" "$log"; then
      ok=0
      why="did not finish its run"
    fi
  fi
  t1=$(date +%s)
  execs=$(stat_of number_of_executed_units "$log" 2>/dev/null)
  eps=$(stat_of average_exec_per_sec "$log" 2>/dev/null)
  units=$(ls "$corpus" 2>/dev/null | wc -l)
  cov=$(grep -o "cov: [0-9]*" "$log" 2>/dev/null | tail -n 1)
  if [ "$ok" = 1 ]; then
    passed=$((passed + 1))
    printf 'ok   %-16s %4ss %10s execs %7s/s  %s  corpus %s  regressions %s\n' "$t" $((t1 - t0)) \
      "${execs:-?}" "${eps:-?}" "${cov:-cov: ?}" "$units" "$regress"
  else
    failed=$((failed + 1))
    art=$(ls -t "$findings" 2>/dev/null | head -n 1)
    printf 'FAIL %-16s %4ss %10s execs: %s%s\n' "$t" $((t1 - t0)) "${execs:-?}" "$why" \
      "${art:+ (input: $findings/$art)}"
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
