#!/bin/sh
# Installs the Debian packages themed needs to build, run and test, if any are
# missing. Non-interactive; called by `make test` and `make run`, so a fresh
# Debian 12 machine needs nothing else. Extra packages: scripts/deps.sh pkg...
set -eu

PKGS="build-essential pkg-config libuv1-dev libjansson-dev libsvm-dev libicu-dev
libcmocka-dev libhttp-parser-dev libsystemd-dev libnats-dev nats-server python3 curl systemd
clang libclang-rt-14-dev $*"

missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "deps: missing packages:$missing (run as root or install them)" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
