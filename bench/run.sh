#!/bin/sh
# make bench: themed side by side with its peers, one table, one run.
#
#   make bench                  full run (~10-15 minutes on 2 cores)
#   make bench BENCH_QUICK=1    smaller inputs, one repetition (~2 minutes)
#
# The Makefile has already built the release tree ($BUILD, default build:
# -O2, no sanitizers) and build/bench/{loadgen,hotpath}. This installs the
# peers from Debian if any is missing (fastText, LIBLINEAR and LIBSVM tools,
# scikit-learn, hyperfine), then runs bench/bench.py, which writes
# bench/results/latest.md (and latest.json) and prints the table. It exits
# non-zero only if something failed to run, never because of a speed.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SHARED=${SHARED:-../shared}
export BUILD SHARED
scripts/deps.sh fasttext liblinear-tools libsvm-tools python3-sklearn hyperfine
if [ ! -f "$SHARED/bench/thucnews/train.jsonl" ] || [ ! -f "$SHARED/corpus/dev.jsonl" ]; then
  echo "bench: $SHARED/bench/thucnews and $SHARED/corpus are needed (read-only data)" >&2
  exit 1
fi
QUICK=
case "${BENCH_QUICK:-}" in ""|0) ;; *) QUICK=--quick ;; esac
# scikit-learn is Debian's: /usr/bin/python3, whatever python3 is first on PATH.
exec /usr/bin/python3 bench/bench.py --build "$BUILD" --shared "$SHARED" $QUICK
