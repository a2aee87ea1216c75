#!/bin/sh
# Throughput of themed --nats with 1 and with 2 daemons on one durable consumer.
#
#   bench/nats_scale.sh [ARTICLES] [RUNS]        (defaults: 50000 articles, 3 runs)
#
# For each setting, a fresh nats-server -js (loopback, temp store) gets ARTICLES
# articles (the 8 fixture articles of tests/fixtures/classify-corpus.jsonl,
# 4-5 passages each, cycled with unique ids) through `themectl publish`. Then
# the daemons start; the clock runs from their start until their
# themed_nats_messages_total{result="ok"} add up to ARTICLES (polled every
# 20 ms over their sockets). Afterwards, untimed, `themectl collect` checks
# that every article has its result and reports duplicates. Printed: articles
# per second (median of RUNS) and how the articles split between the daemons.
#
# Environment: BUILD (default build), THEMED_MODEL (a bundle; default
# models/rural-themes, else one trained from tests/fixtures), WORKERS (worker
# threads per daemon, a list; default "1 <online CPUs>"), INFLIGHT
# (--nats-max-inflight, default 64), NATS_SERVER (default nats-server).
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
N=${1:-50000}
RUNS=${2:-3}
INFLIGHT=${INFLIGHT:-64}
NATS_SERVER=${NATS_SERVER:-nats-server}
THEMED="$ROOT/$BUILD/themed"
THEMECTL="$ROOT/$BUILD/themectl"
export THEMED_PLUGIN_DIR="${THEMED_PLUGIN_DIR:-$ROOT/$BUILD/plugins}"
command -v "$NATS_SERVER" >/dev/null || { echo "nats_scale: $NATS_SERVER not found (scripts/deps.sh installs it)" >&2; exit 1; }
[ -x "$THEMED" ] && [ -x "$THEMECTL" ] || { echo "nats_scale: build first (make)" >&2; exit 1; }

TMP=$(mktemp -d /tmp/themed-natsbench.XXXXXX)
NATS_PID=
DAEMONS=
cleanup() {
  for p in $DAEMONS; do kill "$p" 2>/dev/null || true; done
  [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

MODEL=${THEMED_MODEL:-}
if [ -z "$MODEL" ]; then
  if [ -f models/rural-themes/manifest.json ]; then MODEL=models/rural-themes; else
    MODEL="$TMP/model"
    "$THEMECTL" train --data tests/fixtures/labelled-train.jsonl --out "$MODEL" --quiet --folds 1 --c 1 \
      --name rural-themes
  fi
fi

python3 - "$N" "$TMP/articles.jsonl" <<'EOF'
import json, sys
n, out = int(sys.argv[1]), sys.argv[2]
docs = {}
for line in open("tests/fixtures/classify-corpus.jsonl", encoding="utf-8"):
    o = json.loads(line)
    docs.setdefault(o["doc"], []).append(o["text"])
texts = ["\n".join(v) for v in docs.values()]
with open(out, "w", encoding="utf-8") as f:
    for i in range(n):
        f.write(json.dumps({"id": "b%d" % i, "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")
EOF

# Waits until the daemons' ok counters reach $N; prints the seconds since $1
# and the per-daemon counts. Sockets: $TMP/d1.sock ...
cat >"$TMP/wait_ok.py" <<'EOF'
import re, socket, sys, time
t0, n, socks = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def ok(path):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        d = b""
        while True:
            x = s.recv(65536)
            if not x:
                break
            d += x
        s.close()
        m = re.search(rb'themed_nats_messages_total\{result="ok"\} (\d+)', d)
        return int(m.group(1)) if m else 0
    except OSError:
        return 0
deadline = time.time() + 600
while time.time() < deadline:
    c = [ok(p) for p in socks]
    if sum(c) >= n:
        print("%.3f %s" % (time.time() - t0, "/".join(str(x) for x in c)))
        sys.exit(0)
    time.sleep(0.02)
sys.exit("nats_scale: the daemons did not finish within 600 s")
EOF

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# One run: $1 daemons with $2 workers each; appends "<articles/s> <split>" to
# $TMP/rows (not in a subshell: the EXIT trap must see the pids).
run_once() {
  nd=$1 w=$2
  port=$(free_port)
  rm -rf "$TMP/store"
  "$NATS_SERVER" -js -a 127.0.0.1 -p "$port" -sd "$TMP/store" >"$TMP/nats.log" 2>&1 &
  NATS_PID=$!
  url="nats://127.0.0.1:$port"
  i=0
  until "$THEMECTL" publish --nats "$url" --stream BENCH --subject bench.in --quiet </dev/null 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 50 ] || { echo "nats_scale: nats-server did not start" >&2; cat "$TMP/nats.log" >&2; exit 1; }
    sleep 0.1
  done
  "$THEMECTL" publish --nats "$url" --stream BENCH --subject bench.in --quiet "$TMP/articles.jsonl"
  t0=$(python3 -c 'import time; print(time.time())')
  DAEMONS= socks=
  k=1
  while [ $k -le "$nd" ]; do
    "$THEMED" --model "$MODEL" --listen "unix:$TMP/d$k.sock" --workers "$w" --log-level warn \
      --nats "$url" --nats-stream BENCH --nats-subject bench.in --nats-durable bench \
      --nats-results bench.results --nats-max-inflight "$INFLIGHT" 2>>"$TMP/daemons.log" &
    DAEMONS="$DAEMONS $!"
    socks="$socks $TMP/d$k.sock"
    k=$((k + 1))
  done
  # shellcheck disable=SC2086
  res=$(python3 "$TMP/wait_ok.py" "$t0" "$N" $socks)
  "$THEMECTL" collect --nats "$url" --subject bench.results --count "$N" --timeout 120 --quiet \
    --out /dev/null --summary "$TMP/summary.json"
  for p in $DAEMONS; do kill "$p"; done
  for p in $DAEMONS; do wait "$p" || true; done
  DAEMONS=
  kill "$NATS_PID"; wait "$NATS_PID" 2>/dev/null || true
  NATS_PID=
  python3 -c '
import json, sys
secs, split = sys.argv[1].split()
s = json.load(open(sys.argv[3]))
assert s["distinct"] >= int(sys.argv[2]), s
print("%.0f %s(dup=%d)" % (int(sys.argv[2]) / float(secs), split, s["duplicates"]))' "$res" "$N" "$TMP/summary.json" \
    >>"$TMP/rows"
}

CPUS=$(getconf _NPROCESSORS_ONLN)
echo "nats_scale: $N articles, $RUNS runs each, max in flight $INFLIGHT, $CPUS CPUs," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg), $("$NATS_SERVER" --version), model $MODEL"
for w in ${WORKERS:-1 $CPUS}; do
  for nd in 1 2; do
    : >"$TMP/rows"
    r=1
    while [ $r -le "$RUNS" ]; do
      run_once "$nd" "$w"
      r=$((r + 1))
    done
    python3 -c '
import sys
rows = [l.split() for l in open(sys.argv[3]) if l.strip()]
rates = sorted(float(r[0]) for r in rows)
print("daemons=%s workers/daemon=%s: %.0f articles/s (median of %d: %s; split %s)" % (
    sys.argv[1], sys.argv[2], rates[len(rates) // 2], len(rows), " ".join("%.0f" % x for x in rates),
    " ".join(r[1] for r in rows)))' "$nd" "$w" "$TMP/rows"
  done
done
