#!/bin/sh
# The systemd suite: installs the tree into a temporary DESTDIR and checks what a
# package would ship.
#   - files installed with the right modes, unit placeholders substituted, and the
#     unit's ExecStart naming installed paths;
#   - `systemd-analyze verify` on the installed units (inside a --root that holds the
#     DESTDIR plus the host's targets, so ExecStart= resolves to the installed binary),
#     with a negative control: a copy with a broken directive must be caught;
#   - `systemd-analyze security --offline` exposure <= 2.5 (when supported);
#   - the installed daemon started as the unit starts it: Type=notify READY=1 and
#     WATCHDOG=1 on a test NOTIFY_SOCKET, SIGHUP (ExecReload) keeps it serving, and
#     socket activation through systemd-socket-activate, with and without the unit's
#     own --listen for the same path.
# Last line: "N passed, N failed". Run from the top of the tree: tests/systemd/run.sh
# (BUILD=build by default; KEEP=1 keeps the temporary directory).
BUILD=${BUILD:-build}
MAKE=${MAKE:-make}
PREFIX=/usr
passed=0
failed=0
skipped=0

ok() { passed=$((passed + 1)); echo "ok - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && sed 's/^/    /' "$2"; return 0; }
skip() { skipped=$((skipped + 1)); echo "skip - $1"; }
check() { # check NAME CMD...: passes when CMD succeeds
  name=$1; shift
  if "$@" >"$T/out" 2>&1; then ok "$name"; else fail "$name" "$T/out"; fi
}

T=$(mktemp -d "${TMPDIR:-/tmp}/themed-systemd.XXXXXX") || exit 1
PIDS=""
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null; done
  for p in $PIDS; do wait "$p" 2>/dev/null; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT INT TERM

D=$T/dest
UNITDIR=$D$PREFIX/lib/systemd/system
BIN=$D$PREFIX/bin
PLUGDIR=$D$PREFIX/lib/themed/plugins
MODEL=$D$PREFIX/share/themed/models/rural-themes

# ---------------------------------------------------------------- install
if $MAKE --no-print-directory install DESTDIR="$D" PREFIX=$PREFIX BUILD="$BUILD" >"$T/install.log" 2>&1; then
  ok "make install DESTDIR=... PREFIX=$PREFIX"
else
  fail "make install DESTDIR=... PREFIX=$PREFIX" "$T/install.log"
  echo "$passed passed, $failed failed"
  exit 1
fi

mode_is() { # mode_is FILE MODE
  [ -e "$1" ] || { echo "missing: $1"; return 1; }
  m=$(stat -c %a "$1")
  [ "$m" = "$2" ] || { echo "$1: mode $m, expected $2"; return 1; }
}
modes() {
  rc=0
  mode_is "$BIN/themed" 755 || rc=1
  mode_is "$BIN/themectl" 755 || rc=1
  mode_is "$D$PREFIX/include/themed/plugin.h" 644 || rc=1
  mode_is "$UNITDIR/themed.service" 644 || rc=1
  mode_is "$UNITDIR/themed.socket" 644 || rc=1
  n=0
  for so in "$PLUGDIR"/*.so; do
    [ -e "$so" ] || break
    n=$((n + 1))
    mode_is "$so" 755 || rc=1
  done
  [ "$n" -gt 0 ] || { echo "no plugins in $PLUGDIR"; rc=1; }
  [ -f "$MODEL/manifest.json" ] || { echo "no model bundle at $MODEL"; rc=1; }
  # The bundle: directories 755, files 644 (read by the unprivileged daemon user).
  bad=$(find "$D$PREFIX/share/themed" \( -type d ! -perm 755 \) -o \( -type f ! -perm 644 \) 2>/dev/null)
  [ -z "$bad" ] || { echo "wrong modes:"; echo "$bad"; rc=1; }
  # Nothing installed writable by group or others, nothing setuid.
  bad=$(find "$D" \( -perm -0020 -o -perm -0002 -o -perm -4000 -o -perm -2000 \) ! -type l 2>/dev/null)
  [ -z "$bad" ] || { echo "group/world-writable or set-id:"; echo "$bad"; rc=1; }
  if [ -f systemd/themed.sysusers ]; then
    mode_is "$D$PREFIX/lib/sysusers.d/themed.conf" 644 || rc=1
  fi
  return $rc
}
check "installed files and modes" modes

# `make systemd-test` builds with the default PREFIX (/usr/local) and installs with
# PREFIX=/usr: the install must rebuild what has the plugin directory compiled in, or
# the installed themectl (and a themed without --plugins) looks under /usr/local.
compiled_paths() {
  rc=0
  for b in "$BIN/themed" "$BIN/themectl"; do
    grep -aq "$PREFIX/lib/themed/plugins" "$b" || { echo "$b: $PREFIX/lib/themed/plugins not compiled in"; rc=1; }
    if [ "$PREFIX" != /usr/local ] && grep -aq /usr/local/lib/themed/plugins "$b"; then
      echo "$b: still has /usr/local/lib/themed/plugins compiled in"; rc=1
    fi
  done
  # The installed themectl without --plugins: it classifies if the host has the plugins
  # at $PREFIX (a real install), else it must say it looked there.
  out=$(echo "发展集体经济，壮大村级产业。" | env -u THEMED_PLUGIN_DIR "$BIN/themectl" classify --model "$MODEL" 2>&1)
  st=$?
  echo "$out"
  if [ $st -ne 0 ]; then
    case $out in *"plugin $PREFIX/lib/themed/plugins/"*) ;; *) echo "themectl did not look in $PREFIX/lib/themed/plugins"; rc=1 ;; esac
  fi
  return $rc
}
check "make install PREFIX=$PREFIX after make: the binaries look for plugins in $PREFIX/lib/themed/plugins" compiled_paths

placeholders() {
  if grep -n '@[A-Z]*@' "$UNITDIR"/themed.*; then echo "unsubstituted placeholders"; return 1; fi
  exec_line=$(sed -n 's/^ExecStart=//p' "$UNITDIR/themed.service")
  echo "ExecStart=$exec_line"
  set -- $exec_line
  [ "$1" = "$PREFIX/bin/themed" ] || { echo "ExecStart binary is $1"; return 1; }
  model=$(echo "$exec_line" | sed -n 's/.*--model \([^ ]*\).*/\1/p')
  plugins=$(echo "$exec_line" | sed -n 's/.*--plugins \([^ ]*\).*/\1/p')
  [ -f "$D$model/manifest.json" ] || { echo "--model $model is not an installed bundle"; return 1; }
  [ -d "$D$plugins" ] || { echo "--plugins $plugins is not installed"; return 1; }
  grep -q '^ListenStream=/run/themed/themed.sock$' "$UNITDIR/themed.socket" || return 1
  grep -q 'unix:/run/themed/themed.sock' "$UNITDIR/themed.service" || return 1
}
check "unit placeholders substituted, ExecStart names installed paths" placeholders

# ---------------------------------------------------------------- verify
# A root for systemd-analyze: the DESTDIR (so ExecStart= must resolve to the installed
# binary) plus the host's targets and slices the units' default dependencies name, and
# kill(1) for ExecReload=.
R=$T/vroot
mkdir -p "$R"
cp -a "$D"/. "$R"/
mkdir -p "$R/usr/lib/systemd/system" "$R/bin"
for u in /lib/systemd/system/*.target /lib/systemd/system/*.slice /usr/lib/systemd/system/*.target; do
  [ -e "$u" ] && [ ! -e "$R/usr/lib/systemd/system/${u##*/}" ] && cp -P "$u" "$R/usr/lib/systemd/system/"
done
[ -x /bin/kill ] && cp "$(readlink -f /bin/kill)" "$R/bin/kill"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  skip "systemd-analyze not installed: verify and security checks"
else
  verify() { # verify ROOT: exit status 0 and not a word of warning
    out=$(systemd-analyze verify --root="$1" themed.service themed.socket 2>&1)
    rc=$?
    [ -n "$out" ] && echo "$out"
    [ $rc -eq 0 ] && [ -z "$out" ]
  }
  check "systemd-analyze verify themed.service themed.socket (no errors, no warnings)" verify "$R"

  # Negative control: the same check must reject a unit with a broken directive, else the
  # check above proves nothing (verify itself exits 0 on unknown keys and bad values).
  R2=$T/vroot-broken
  cp -a "$R" "$R2"
  sed -i 's/^ProtectSystem=strict/ProtectSystem=stricter/' "$R2/usr/lib/systemd/system/themed.service"
  if verify "$R2" >"$T/out" 2>&1; then
    fail "verify rejects a broken directive (ProtectSystem=stricter)" "$T/out"
  elif grep -q 'stricter' "$T/out"; then
    ok "verify rejects a broken directive (ProtectSystem=stricter)"
  else
    fail "verify rejects a broken directive, naming it" "$T/out"
  fi
  R3=$T/vroot-nobin
  cp -a "$R" "$R3"
  rm -f "$R3$PREFIX/bin/themed"
  if verify "$R3" >"$T/out" 2>&1; then
    fail "verify rejects a unit whose ExecStart binary is not installed" "$T/out"
  else
    ok "verify rejects a unit whose ExecStart binary is not installed"
  fi

  if systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
    systemd-analyze security --offline=yes --root="$R" themed.service >"$T/sec" 2>&1
    score=$(sed -n 's/.*Overall exposure level for themed.service: \([0-9.]*\).*/\1/p' "$T/sec")
    echo "    exposure: ${score:-?}"
    # --threshold is the exposure x 10: 25 = 2.5.
    if [ -n "$score" ] && systemd-analyze security --offline=yes --threshold=25 --root="$R" themed.service >/dev/null 2>&1; then
      ok "systemd-analyze security --offline: exposure $score <= 2.5"
    else
      fail "systemd-analyze security --offline: exposure ${score:-?} <= 2.5" "$T/sec"
    fi
  else
    skip "systemd-analyze security --offline not supported by this systemd"
  fi
fi

if [ -f systemd/themed.sysusers ] && command -v systemd-sysusers >/dev/null 2>&1; then
  sysusers() {
    mkdir -p "$T/sysroot/etc"
    : >"$T/sysroot/etc/passwd"
    : >"$T/sysroot/etc/group"
    out=$(systemd-sysusers --root="$T/sysroot" "$D$PREFIX/lib/sysusers.d/themed.conf" 2>&1)
    echo "$out"
    grep -q '^themed:' "$T/sysroot/etc/passwd" && grep -q '^themed:' "$T/sysroot/etc/group"
  }
  check "sysusers.d file creates user and group themed" sysusers
fi

# ---------------------------------------------------------------- the daemon as the unit runs it
# NOTIFY_SOCKET listener: prints every datagram on its own line (READY=1, WATCHDOG=1, ...).
cat >"$T/notify.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
out = open(sys.argv[2], "a", buffering=1)
while True:
    for line in s.recv(4096).decode(errors="replace").split("\n"):
        if line: out.write(line + "\n")
EOF
wait_for() { # wait_for SECONDS CMD...: polls CMD every 0.1 s
  t=$(($1 * 10)); shift
  while [ $t -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; t=$((t - 1)); done
  return 1
}
CTL=$BIN/themectl
if ! command -v python3 >/dev/null 2>&1; then
  skip "python3 missing: daemon start checks"
elif [ ! -f "$MODEL/manifest.json" ]; then
  skip "no installed model bundle: daemon start checks"
else
  python3 "$T/notify.py" "$T/notify.sock" "$T/notify.log" &
  PIDS="$PIDS $!"
  wait_for 5 test -S "$T/notify.sock"
  SOCK=$T/run/themed.sock
  mkdir -p "$T/run"
  NOTIFY_SOCKET=$T/notify.sock WATCHDOG_USEC=1000000 \
    "$BIN/themed" --model "$MODEL" --plugins "$PLUGDIR" --listen "unix:$SOCK" >"$T/themed.log" 2>&1 &
  TPID=$!
  PIDS="$PIDS $TPID"
  check "Type=notify: READY=1 on NOTIFY_SOCKET" wait_for 20 grep -q '^READY=1' "$T/notify.log"
  check "watchdog: WATCHDOG=1 within WatchdogSec/2 when WATCHDOG_USEC is set" wait_for 3 grep -q '^WATCHDOG=1' "$T/notify.log"
  sockmode() { [ "$(stat -c %a "$SOCK")" = 660 ] || { stat -c '%a %n' "$SOCK"; return 1; }; }
  check "the daemon's socket is 0660" sockmode
  check "themectl health over the installed daemon's socket" "$CTL" health --socket "$SOCK"
  kill -HUP "$TPID" 2>/dev/null
  sleep 0.5
  alive_healthy() { kill -0 "$TPID" && "$CTL" health --socket "$SOCK"; }
  check "ExecReload (SIGHUP): still running and healthy" alive_healthy
  kill -TERM "$TPID" 2>/dev/null
  stopped() { wait "$TPID"; rc=$?; [ $rc -eq 0 ] || { echo "exit status $rc"; cat "$T/themed.log"; return 1; }; }
  check "SIGTERM: clean exit 0" stopped

  if command -v systemd-socket-activate >/dev/null 2>&1; then
    # Socket activation as themed.socket does it: systemd owns the socket, the daemon gets
    # it as fd 3 (LISTEN_FDS=1) when the first client connects.
    activated() { # activated NAME DESCRIPTION [listen]
      S=$T/act-$1.sock
      if [ "${3:-}" = listen ]; then set -- "$1" "$2" --listen "unix:$S"; else set -- "$1" "$2"; fi
      name=$1 desc=$2
      shift 2
      systemd-socket-activate -l "$S" "$BIN/themed" --model "$MODEL" --plugins "$PLUGDIR" "$@" \
        >"$T/act-$name.log" 2>&1 &
      APID=$!
      PIDS="$PIDS $APID"
      wait_for 5 test -S "$S"
      if "$CTL" health --socket "$S" --timeout 20 >"$T/out" 2>&1; then
        ok "socket activation ($desc): health through the inherited socket"
      else
        cat "$T/act-$name.log" >>"$T/out"
        fail "socket activation ($desc): health through the inherited socket" "$T/out"
      fi
      kill -TERM "$APID" 2>/dev/null
      wait "$APID" 2>/dev/null
    }
    activated plain "no --listen"
    # Both units enabled: the service's ExecStart still says --listen for the path systemd
    # already listens on; the daemon must serve the inherited socket, not fail to bind.
    activated both "the unit's --listen names the same path" listen
  else
    skip "systemd-socket-activate missing: socket activation checks"
  fi
fi

[ $skipped -gt 0 ] && echo "($skipped skipped)"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
