"""Helpers for the integration suites: start the real daemon in a temp dir,
wait for READY=1 on a NOTIFY_SOCKET the test binds (the path systemd's
Type=notify uses; never a sleep), and talk to it as a client.

Environment:
  BUILD                     build tree (default build): $BUILD/themed, $BUILD/themectl
  THEMED_TEST_MODEL         bundle to serve (default: models/rural-themes if present,
                            else one trained from tests/fixtures by run.py)
  THEMED_TEST_MODEL_B       a second bundle (another version), for reload tests
  THEMED_TEST_WRAPPER       command prefix for the daemon, e.g. "valgrind -q --error-exitcode=99"
  THEMED_TEST_TIMEOUT_SCALE multiply every wait (e.g. 10 under valgrind)
  THEMED_VALGRIND=1         shorthand: the wrapper is valgrind memcheck (errors and
                            definite leaks exit 99), the scale 10 unless set
  TD_TEST_KEEP=1            keep the temp dirs
"""
import http.client
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
THEMED = os.path.join(BUILD, "themed")
THEMECTL = os.path.join(BUILD, "themectl")
# THEMED_VALGRIND=1 (make valgrind-integration): the daemon runs under
# memcheck; any error or definite leak makes it exit 99, which close() reports
# with the log. tests/valgrind.supp says what is suppressed and why; 40 frames
# so that its stacks reach past the plugin's.
VALGRIND = os.environ.get("THEMED_VALGRIND") == "1"
VALGRIND_CMD = ("valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite -q "
                "--num-callers=40 --suppressions=" + shlex.quote(os.path.join(ROOT, "tests", "valgrind.supp")))
SCALE = float(os.environ.get("THEMED_TEST_TIMEOUT_SCALE", "10" if VALGRIND else "1"))
WRAPPER = shlex.split(os.environ.get("THEMED_TEST_WRAPPER", VALGRIND_CMD if VALGRIND else ""))
KEEP = os.environ.get("TD_TEST_KEEP") == "1"

# Lines that mean the daemon misbehaved, whatever the test asserted.
BAD_LOG = re.compile(r"AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:|ERROR SUMMARY: [1-9]|"
                     r"Invalid (read|write|free)|uninitialised|definitely lost: [1-9]|"
                     r"are definitely lost in loss record")


class TestFailure(AssertionError):
    pass


def check(cond, msg="check failed"):
    if not cond:
        raise TestFailure(msg)


_ASAN = None


def asan_build():
    """True when THEMED is an AddressSanitizer build (BUILD=build/asan): its
    quarantine keeps freed memory, so VmRSS says little about leaks there
    (LeakSanitizer checks them at exit instead), and LD_PRELOAD cannot be
    used (the ASan runtime must come first)."""
    global _ASAN
    if _ASAN is None:
        r = subprocess.run(["ldd", THEMED], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        _ASAN = b"libasan" in r.stdout
    return _ASAN


_TSAN = None


def rss_is_shadowed():
    """True for a sanitizer build whose shadow memory and allocator make VmRSS
    say little about the daemon's own memory: AddressSanitizer (quarantine,
    shadow) or ThreadSanitizer (BUILD=build/tsan: 4x shadow of every page
    touched)."""
    global _TSAN
    if _TSAN is None:
        r = subprocess.run(["ldd", THEMED], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        _TSAN = b"libtsan" in r.stdout
    return asan_build() or _TSAN


def model_dir():
    return os.environ["THEMED_TEST_MODEL"]


def model_b_dir():
    return os.environ["THEMED_TEST_MODEL_B"]


def plugin_dir():
    return os.environ.get("THEMED_PLUGIN_DIR", os.path.join(BUILD, "plugins"))


def wait(seconds):
    """A timeout, scaled for slow runs (valgrind)."""
    return seconds * SCALE


class Daemon:
    """One themed process in its own temp dir.

    args: extra flags. unix: listen on <dir>/themed.sock. tcp: also listen on
    tcp:127.0.0.1:0 (self.port tells which port). listen=False: no --listen
    (socket activation tests build their own command via `cmd`).
    """

    def __init__(self, *args, unix=True, tcp=False, model=None, env=None, start=True,
                 pre_cmd=None, pass_fds=(), listen=True, ready=True):
        self.dir = tempfile.mkdtemp(prefix="themed-it-")
        self.sock = os.path.join(self.dir, "themed.sock")
        self.model = model or model_dir()
        self.log_path = os.path.join(self.dir, "stderr.log")
        self.port = None
        self.notes = []
        self.notes_cv = threading.Condition()
        self.proc = None
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_path = os.path.join(self.dir, "notify.sock")
        self.notify.bind(self.notify_path)
        # sd_notify blocks when the receiver's queue is full, as systemd's
        # would be if it stopped reading: drain it all the time, like systemd.
        self.notify_thread = threading.Thread(target=self._read_notes, daemon=True)
        self.notify_thread.start()
        cmd = [THEMED, "--model", self.model]
        if listen and unix:
            cmd += ["--listen", "unix:" + self.sock]
        if listen and tcp:
            cmd += ["--listen", "tcp:127.0.0.1:0"]
        cmd += list(args)
        self.cmd = (pre_cmd or []) + WRAPPER + cmd
        self.env = dict(os.environ)
        self.env.update({"NOTIFY_SOCKET": self.notify_path, "THEMED_PLUGIN_DIR": plugin_dir()})
        self.env.pop("LISTEN_FDS", None)
        self.env.pop("LISTEN_PID", None)
        self.env.pop("JOURNAL_STREAM", None)
        self.env.pop("WATCHDOG_USEC", None)
        # For a sanitizer build (BUILD=build/asan): the same settings as tests/run-unit.sh.
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.env.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0"
                            % os.path.join(ROOT, "tests", "lsan.supp"))
        self.env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if env:
            self.env.update(env)
        self.pass_fds = pass_fds
        if start:
            self.start(ready=ready)

    # -- process ---------------------------------------------------------
    def start(self, ready=True):
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf, env=self.env, pass_fds=self.pass_fds,
                                     cwd=ROOT)
        if ready:
            self.wait_note("READY=1", wait(20))
            m = re.search(r"listening on tcp:(\S+):(\d+)", self.log())
            if m:
                self.port = int(m.group(2))

    def _read_notes(self):
        while True:
            try:
                r, _, _ = select.select([self.notify], [], [], 0.5)
                if r:
                    msg = self.notify.recv(4096).decode()
                    with self.notes_cv:
                        self.notes.append(msg)
                        self.notes_cv.notify_all()
            except (OSError, ValueError):
                return

    def wait_note(self, key, timeout):
        """Waits for a notify datagram holding `key` (e.g. READY=1); the
        datagrams before it are consumed."""
        deadline = time.monotonic() + timeout
        with self.notes_cv:
            while True:
                while self.notes:
                    n = self.notes.pop(0)
                    if key in n.split("\n"):
                        return n
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TestFailure("no %s from the daemon within %.1fs; log:\n%s" % (key, timeout, self.log()))
                if self.proc.poll() is not None:
                    raise TestFailure("daemon exited with %s before %s; log:\n%s"
                                      % (self.proc.returncode, key, self.log()))
                self.notes_cv.wait(min(left, 0.25))

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Stops the daemon; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout or wait(15))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise TestFailure("daemon did not stop within the timeout; log:\n" + self.log())

    def close(self):
        rc = 0
        if self.proc and self.proc.poll() is None:
            rc = self.stop()  # a clean stop exits 0 (a leak report under ASan would not)
        self.notify.close()
        if self.proc:
            self.logf.close()
        log = self.log()
        bad = BAD_LOG.search(log)
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)
        if bad:
            raise TestFailure("daemon log reports a memory error: " + bad.group(0) + "\n" + log)
        if rc != 0:
            raise TestFailure("daemon exited with %s on SIGTERM%s" % (
                rc, "; log:\n" + log[-20000:] if VALGRIND else ""))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- clients ---------------------------------------------------------
    def connect(self, tcp=False, timeout=None):
        if tcp:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout or wait(10))
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout or wait(10))
            s.connect(self.sock)
        return s

    def jsonl(self, tcp=False):
        return JsonlClient(self.connect(tcp))

    def http(self, tcp=False):
        return HttpClient(self, tcp)

    def request(self, method, path, body=None, headers=None, tcp=False):
        """One HTTP request on a fresh connection: (status, headers, parsed JSON or text)."""
        with self.http(tcp) as h:
            return h.request(method, path, body, headers)

    def call(self, obj, tcp=False):
        """One JSON Lines request on a fresh connection."""
        with self.jsonl(tcp) as c:
            return c.call(obj)


class JsonlClient:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, obj):
        data = obj if isinstance(obj, bytes) else (json.dumps(obj, ensure_ascii=False) + "\n").encode()
        self.sock.sendall(data)

    def recv_line(self):
        """Next response line as parsed JSON, or None at EOF."""
        while b"\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                return None
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, obj):
        self.send(obj)
        r = self.recv_line()
        check(r is not None, "connection closed before the response to %r" % (obj,))
        return r

    def eof(self):
        """True when the server has closed (remaining bytes are ignored)."""
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class HttpClient:
    """A keep-alive HTTP/1.1 connection (http.client)."""

    def __init__(self, daemon, tcp=False):
        if tcp:
            self.conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=wait(10))
        else:
            self.conn = _UnixHTTPConnection(daemon.sock, wait(10))

    def request(self, method, path, body=None, headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body, ensure_ascii=False).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type", "")
        out = json.loads(data) if ctype.startswith("application/json") else data.decode()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), out

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def raw_http(sock, data):
    """Sends raw bytes; returns every byte until the server closes (or timeout)."""
    sock.sendall(data)
    out = b""
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                break
            out += d
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def parse_http_responses(data):
    """Splits concatenated HTTP responses: [(status, headers, body bytes)]."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


def error_code(resp):
    return resp.get("error", {}).get("code") if isinstance(resp, dict) else None


def train_model(out, version="1.0.0", name=None):
    """Trains a small bundle from tests/fixtures (about a second)."""
    cmd = [THEMECTL, "train", "--data", os.path.join(ROOT, "tests", "fixtures", "labelled-train.jsonl"),
           "--out", out, "--version", version, "--quiet", "--folds", "1", "--c", "1"]
    if name:
        cmd += ["--name", name]
    env = dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir())
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise RuntimeError("themectl train failed:\n" + r.stdout.decode("utf-8", "replace"))
    return out
