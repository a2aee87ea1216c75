"""Graceful stop and systemd socket activation."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from harness import THEMED, Daemon, check, error_code, model_dir, parse_http_responses, wait


def test_sigterm_drains_in_flight_requests():
    with Daemon("--drain-timeout", str(wait(10)), tcp=True) as d:
        conns = [d.jsonl(tcp=i % 2 == 1) for i in range(8)]
        text = "\n".join(["发展集体经济，壮大村级产业。", "抓队伍建设 选优配强乡村骨干力量"] * 10)
        for k, c in enumerate(conns):
            c.send(b"".join((json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n").encode()
                            for i in range(25)))
        # Over 16 KiB, so a worker loop hands them to the threadpool: they are
        # still being classified when the stop reaches the loop, and their
        # answers (written during the drain) say Connection: close. (Small
        # ones may be answered, keep-alive, before the loop sees the stop.)
        big = "\n".join(["发展集体经济，壮大村级产业。", "抓队伍建设 选优配强乡村骨干力量"] * 150)
        body = json.dumps({"id": "h", "text": big}).encode()
        hs = d.connect()
        hs.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body) * 5)
        d.kill(signal.SIGTERM)
        for c in conns:
            got = [c.recv_line() for _ in range(25)]
            check(all(g is not None and "passages" in g for g in got), [g and g.get("error") for g in got])
            check([g["id"] for g in got] == list(range(25)))
            check(c.recv_line() is None, "closed after the drain")
            c.close()
        data = b""
        while True:
            x = hs.recv(65536)
            if not x:
                break
            data += x
        hs.close()
        resp = parse_http_responses(data)
        check(len(resp) == 5 and all(r[0] == 200 for r in resp), [r[0] for r in resp])
        check(resp[-1][1].get("connection") == "close", resp[-1][1])
        rc = d.proc.wait(timeout=wait(15))
        check(rc == 0, "exit code %s" % rc)
        d.wait_note("STOPPING=1", 5)
        log = d.log()
        for step in ("SIGTERM received", "stopping: closing listeners", "draining", "drained", "stopped"):
            check(step in log, "log lacks %r:\n%s" % (step, log))
        check(not os.path.exists(d.sock), "socket file removed")


def test_drain_timeout_bounds_the_stop():
    # A client that never reads keeps its responses unsent; the drain timeout
    # still ends the stop, with exit code 0.
    with Daemon("--drain-timeout", "1", "--max-output-bytes", "4096") as d:
        c = d.connect()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # ~31 KB per answer, ~1.9 MB in all: far more than the socket buffers take,
        # however the daemon batches its writes
        line = (json.dumps({"text": "发展集体经济\n" * 200, "include_text": True}, ensure_ascii=False) + "\n").encode()
        # The daemon stops reading a client that does not read its answers
        # (--max-output-bytes): the writer blocks until the daemon closes.
        c.settimeout(None)

        def send():
            try:
                c.sendall(line * 60)
            except OSError:
                pass  # closed by the drain timeout

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        for _ in range(100):  # the daemon has answered some, unsent
            st = d.call({"op": "stats"})["stats"]
            if st["requests_by_op"].get("classify", 0) >= 2:
                break
            time.sleep(0.05)
        check(st["requests_by_op"].get("classify", 0) >= 2, st)
        d.kill(signal.SIGINT)
        rc = d.proc.wait(timeout=wait(10))
        check(rc == 0, rc)
        check("drain timeout" in d.log(), d.log())
        sender.join(wait(10))
        check(not sender.is_alive(), "the writer is still blocked after the daemon stopped")
        c.close()


def test_new_requests_during_drain_get_shutting_down():
    with Daemon("--drain-timeout", "5") as d:
        slow = d.jsonl()
        slow.send({"id": "keep", "text": "发展集体经济\n" * 900})
        # not yet answered when the stop begins: the connection stays to get it
        d.kill(signal.SIGTERM)
        d.wait_note("STOPPING=1", 5)
        r = slow.recv_line()
        check(r["id"] == "keep" and "passages" in r, r)
        try:
            slow.send({"id": "late", "text": "x"})
            r = slow.recv_line()
            check(r is None or error_code(r) == "shutting_down", r)
        except (BrokenPipeError, ConnectionResetError):
            pass
        slow.close()
        check(d.proc.wait(timeout=wait(10)) == 0)


# The wrapper does what systemd does between fork and exec: the sockets go to
# fds 3.., LISTEN_FDS counts them, LISTEN_PID names the process that execs.
_ACTIVATE = """
import os, sys
fds = [int(x) for x in sys.argv[1].split(",")]
for i, fd in enumerate(fds):
    os.dup2(fd, 3 + i)
for fd in fds:
    if fd >= 3 + len(fds):
        os.close(fd)
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_PID"] = str(os.getpid())
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _activated(fds, *args):
    return Daemon(*args, listen=False, pass_fds=tuple(fds),
                  pre_cmd=[sys.executable, "-c", _ACTIVATE, ",".join(map(str, fds))])


def test_socket_activation_unix_and_tcp():
    import tempfile
    tmp = tempfile.mkdtemp(prefix="themed-act-")
    path = os.path.join(tmp, "act.sock")
    us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    us.bind(path)
    us.listen(16)
    ts = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ts.bind(("127.0.0.1", 0))
    ts.listen(16)
    port = ts.getsockname()[1]
    fds = [us.fileno() + 100, ts.fileno() + 100]
    os.dup2(us.fileno(), fds[0])
    os.dup2(ts.fileno(), fds[1])
    try:
        with _activated(fds) as d:
            log = d.log()
            check("socket-activated" in log and "unix:" + path in log, log)
            check("tcp:127.0.0.1:%d" % port in log, log)
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.settimeout(wait(10))
            c.connect(path)
            c.sendall(b'{"op":"health","id":1}\n')
            check(b'"status":"ok"' in c.recv(4096))
            c.close()
            c = socket.create_connection(("127.0.0.1", port), timeout=wait(10))
            c.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            check(c.recv(4096).startswith(b"HTTP/1.1 200 "))
            c.close()
            check(d.stop() == 0)
            check(os.path.exists(path), "an inherited socket's file belongs to systemd: not removed")
        # without --listen and without sockets: a clear error
        r = subprocess.run([THEMED, "--model", model_dir()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=dict(os.environ, LISTEN_FDS="1", LISTEN_PID="1"))
        check(r.returncode == 1 and b"--listen" in r.stdout, r.stdout)
    finally:
        for fd in fds:
            os.close(fd)
        us.close()
        ts.close()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


def test_watchdog_pings():
    # WATCHDOG_USEC as systemd sets it for WatchdogSec=: pings every half interval.
    with Daemon(env={"WATCHDOG_USEC": "200000"}) as d:
        d.wait_note("WATCHDOG=1", wait(5))
        d.wait_note("WATCHDOG=1", wait(5))
        check("watchdog: pinging every 100ms" in d.log(), d.log())
