#!/bin/bash
# The daemon's memory across reloads: VmRSS and VmHWM after start and after
# three {"op":"reload"} round trips, no load (bench/NOTES.md, Model memory).
#   bench/reload_rss.sh [BUILD_DIR]   (default build)
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}
S=$(mktemp -u /tmp/themed-rss-XXXXXX.sock)
"$B/themed" --model models/rural-themes --plugins "$B/plugins" --listen "unix:$S" --workers 2 \
  --log-level warn &
P=$!
trap 'kill $P 2>/dev/null; rm -f "$S"' EXIT
for _ in $(seq 200); do [ -S "$S" ] && break; sleep 0.05; done
sleep 0.3
mem() { awk '/VmRSS|VmHWM/ {printf "%s %s kB  ", $1, $2}' "/proc/$P/status"; echo; }
echo "after start:     $(mem)"
for _ in 1 2 3; do
  python3 -c 'import socket,sys; c=socket.socket(socket.AF_UNIX); c.connect(sys.argv[1]); c.sendall(b"{\"op\":\"reload\"}\n"); c.recv(4096)' "$S"
done
sleep 0.3
echo "after 3 reloads: $(mem)"
