"""themed --nats: the JetStream consumer (docs/scaling.md).

Every test starts its own `nats-server -js` on a free loopback port with a
temp store dir and stops it at the end. Articles go in with `themectl
publish`, results come back with `themectl collect` (so both are tested too).
Without nats-server the tests say so and pass (scripts/deps.sh installs it).
"""
import atexit
import base64
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import KEEP, THEMECTL, THEMED as THEMED_BIN, Daemon, check, error_code, wait

NATS_SERVER = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)

STREAM, SUBJECT, DURABLE, RESULTS = "ARTICLES", "articles.in", "themed", "articles.results"
DEAD = RESULTS + ".dead"

TEXTS = ["发展集体经济，壮大村级产业。", "抓队伍建设 选优配强乡村骨干力量",
         "开展人居环境整治，建设美丽乡村。", "健全自治、法治、德治相结合的乡村治理体系。",
         "推进移风易俗，树立文明乡风。"]


def _skip():
    if NATS_SERVER:
        return False
    print("SKIP: nats-server not found (scripts/deps.sh installs it); NATS tests not run")
    return True


@contextlib.contextmanager
def scratch():
    """A temp dir for articles and collected results, removed afterwards."""
    d = tempfile.mkdtemp(prefix="themed-it-natsdata-")
    try:
        yield d
    finally:
        if not KEEP:
            shutil.rmtree(d, ignore_errors=True)


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Nats:
    """One nats-server -js on loopback; restart() keeps its port and store."""

    def __init__(self, port=None, extra=()):
        self.extra = list(extra)  # more nats-server flags (--user, --pass)
        self.dir = tempfile.mkdtemp(prefix="themed-it-nats-")
        self.store = os.path.join(self.dir, "store")
        self.port = port or _free_port()
        self.url = "nats://127.0.0.1:%d" % self.port
        self.proc = None
        self.logs = []

    def start(self):
        log = os.path.join(self.dir, "nats-%d.log" % len(self.logs))
        self.logs.append(log)
        self.logf = open(log, "wb")
        self.proc = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                                      "-sd", self.store] + self.extra, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait(15)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nats-server exited:\n" + self.log())
            if "Server is ready" in self.log():
                return self
            time.sleep(0.05)
        raise AssertionError("nats-server not ready:\n" + self.log())

    def log(self):
        with open(self.logs[-1], "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=wait(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)


def nats_args(nats, ack_wait="2s", *extra):
    return ("--nats", nats.url, "--nats-stream", STREAM, "--nats-subject", SUBJECT,
            "--nats-durable", DURABLE, "--nats-results", RESULTS, "--nats-ack-wait", ack_wait) + extra


def write_articles(path, n, prefix="a"):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = TEXTS[i % 5] + "\n" + TEXTS[(i * 7 + 1) % 5]
            f.write(json.dumps({"id": "%s%d" % (prefix, i), "text": text}, ensure_ascii=False) + "\n")


_ENV = None


def tool_env():
    """The environment for themectl. Under ASan, one leak is not ours:
    libnats 3.4 can lose the last publish-ack reply when the JetStream
    context is destroyed right after js_PublishAsyncComplete (a 25-line
    program using libnats alone shows it), so it is suppressed for the CLI,
    by its full stack (the daemon gets no such suppression)."""
    global _ENV
    if _ENV is None:
        supp = os.path.join(tempfile.gettempdir(), "themed-it-nats-lsan-%d.supp" % os.getpid())
        base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lsan.supp")
        with open(supp, "w") as f:
            if os.path.exists(base):
                with open(base) as b:
                    f.write(b.read())
            f.write("\nleak:natsConn_processMsg\n")
        atexit.register(os.unlink, supp)
        _ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:fast_unwind_on_malloc=0",
                    LSAN_OPTIONS="suppressions=%s:print_suppressions=0" % supp)
    return _ENV


def publish(nats, path, stream=STREAM, subject=SUBJECT):
    """themectl publish of path's lines (None: nothing, only the stream is made)."""
    r = subprocess.run([THEMECTL, "publish", "--nats", nats.url, "--stream", stream, "--subject", subject]
                       + ([path] if path else []), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=wait(60), env=tool_env())
    check(r.returncode == 0, "themectl publish failed:\n" + r.stdout.decode("utf-8", "replace"))
    return r.stdout.decode()


def js_api(nats, subject, body=None):
    """One JetStream API request ($JS.API.<subject>) over a bare NATS
    connection (what the nats CLI would do): the reply, parsed."""
    payload = json.dumps(body).encode() if body is not None else b""
    inbox = b"_INBOX.themed-it.%d" % os.getpid()
    with socket.create_connection(("127.0.0.1", nats.port), timeout=wait(10)) as s:
        f = s.makefile("rb")
        f.readline()  # INFO
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB %s 1\r\nPUB $JS.API.%s %s %d\r\n%s\r\n'
                  % (inbox, subject.encode(), inbox, len(payload), payload))
        while True:
            line = f.readline()
            check(line, "connection closed before the reply to %s" % subject)
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise AssertionError("%s: %r" % (subject, line))
            elif line.startswith(b"MSG "):
                n = int(line.split()[-1])
                return json.loads(f.read(n + 2)[:n])


def add_stream(nats, name, *subjects):
    r = js_api(nats, "STREAM.CREATE." + name, {"name": name, "subjects": list(subjects), "storage": "file",
                                                  "num_replicas": 1})
    check("error" not in r, r)


def delete_stream(nats, name):
    r = js_api(nats, "STREAM.DELETE." + name)
    check(r.get("success"), r)


def dead_letter_headers(nats, stream, seq):
    """The headers of message seq of stream, as a dict."""
    r = js_api(nats, "STREAM.MSG.GET." + stream, {"seq": seq})
    check("message" in r, r)
    raw = base64.b64decode(r["message"].get("hdrs", "")).decode()
    return dict(l.split(": ", 1) for l in raw.split("\r\n")[1:] if ": " in l)


def results_unpublishable(nats, d):
    """Once the daemon consumes, its results stream goes away: every result
    publish is then refused (no stream answers)."""
    wait_for(lambda: "nats: consuming" in d.log(), 15, "the daemon to consume")
    delete_stream(nats, STREAM + "_RESULTS")


def errors_total(d):
    st, _, text = d.request("GET", "/metrics")
    check(st == 200, text)
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r'^themed_errors_total\{code="(\w+)"\} (\d+)$', text, re.M)}


def publish_articles(nats, tmp, n, prefix="a"):
    """n articles (write_articles) published on the articles subject."""
    path = os.path.join(tmp, "%s-articles.jsonl" % prefix)
    write_articles(path, n, prefix)
    publish(nats, path)


def collect(nats, subject, count, tmp, timeout=45):
    """Runs themectl collect; returns (parsed lines, summary dict, stderr)."""
    out, summ = os.path.join(tmp, "collected.jsonl"), os.path.join(tmp, "summary.json")
    r = subprocess.run([THEMECTL, "collect", "--nats", nats.url, "--subject", subject, "--count", str(count),
                        "--timeout", "%ds" % wait(timeout), "--out", out, "--summary", summ],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=wait(timeout) + 30,
                       env=tool_env())
    text = r.stdout.decode("utf-8", "replace")
    check(r.returncode == 0, "themectl collect failed (%d):\n%s" % (r.returncode, text))
    with open(out, encoding="utf-8") as f:
        lines = [json.loads(l) for l in f if l.strip()]
    with open(summ) as f:
        summary = json.load(f)
    return lines, summary, text


def metrics(d):
    st, _, text = d.request("GET", "/metrics")
    check(st == 200, text)
    out = {}
    for m in re.finditer(r'^themed_nats_(\w+?)(?:\{result="(\w+)"\})? (\d+)$', text, re.M):
        out[m.group(2) or m.group(1)] = int(m.group(3))
    return out


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + wait(timeout)
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def wait_ok(d, n, timeout, what):
    """Waits for the daemon's ok counter to reach n; the failure shows the counters."""
    try:
        return wait_for(lambda: metrics(d)["ok"] >= n, timeout, what)
    except AssertionError as e:
        raise AssertionError("%s: %r" % (e, metrics(d)))


def check_all_results(lines, n, prefix="a"):
    ids = [o.get("id") for o in lines]
    want = set("%s%d" % (prefix, i) for i in range(n))
    missing = want - set(ids)
    check(not missing, "%d articles without a result, e.g. %s" % (len(missing), sorted(missing)[:5]))
    for o in lines:
        check("passages" in o and o["summary"]["passages"] == 2 and "@" in o["model"], o)


def test_nats_two_daemons_10k():
    if _skip():
        return
    n = 10000
    with scratch() as tmp, Nats() as nats:
        publish_articles(nats, tmp, n)
        with Daemon(*nats_args(nats, "10s"), "--workers", "1") as a, \
                Daemon(*nats_args(nats, "10s"), "--workers", "1") as b:
            # Socket clients are served at the same time.
            r = a.call({"id": "sock", "text": TEXTS[0]})
            check(r["id"] == "sock" and r["summary"]["passages"] == 1, r)
            t0 = time.monotonic()
            lines, summary, text = collect(nats, RESULTS, n, tmp)
            dt = time.monotonic() - t0
            check_all_results(lines, n)
            # A result is visible a moment before its article is acked and counted.
            wait_for(lambda: metrics(a)["ok"] + metrics(b)["ok"] >= n, 10, "every article counted")
            ma, mb = metrics(a), metrics(b)
            print("    two daemons: %d articles in %.2fs (%.0f/s); split %d / %d; %d duplicates; %s"
                  % (n, dt, n / dt, ma["ok"], mb["ok"], summary["duplicates"], text.strip().splitlines()[-1]))
            check(ma["ok"] + mb["ok"] >= n and ma["ok"] > 0 and mb["ok"] > 0, (ma, mb))
            check(ma["dead"] == mb["dead"] == 0 and ma["connected"] == 1, (ma, mb))
            check(sorted(summary["instances"].values()) == sorted([ma["ok"], mb["ok"]]), summary)
            st, _, ready = a.request("GET", "/v1/ready")
            check(st == 200 and ready.get("nats") == "connected", ready)
            stats = a.call({"op": "stats"})["stats"]
            check(stats["nats"]["messages"]["ok"] == ma["ok"] and stats["nats"]["connected"], stats)
            check(stats["passages"] >= 2 * ma["ok"], stats)  # NATS articles count as passages too


def test_nats_daemon_killed_midway_other_finishes():
    if _skip():
        return
    n = 10000
    with scratch() as tmp, Nats() as nats:
        publish_articles(nats, tmp, n)
        # Small windows so that the stream takes a few seconds; ack wait 2s:
        # the killed daemon's unacked articles come back quickly.
        slow = ("--workers", "1", "--nats-max-inflight", "4")
        a = Daemon(*nats_args(nats, "2s", *slow))
        try:
            with Daemon(*nats_args(nats, "2s", *slow)) as b:
                # Half-way (both daemons' results together), A dies.
                killed_at = wait_for(lambda: (lambda ma: ma["ok"] > 0 and ma["ok"] + metrics(b)["ok"] >= n // 2
                                              and ma)(metrics(a)), 30, "half of the stream")
                a.kill(signal.SIGKILL)
                a.proc.wait()
                at_kill = killed_at["ok"] + metrics(b)["ok"]
                check(at_kill < n * 0.9, "the stream was nearly done before the kill (%d); test not meaningful"
                      % at_kill)
                lines, summary, text = collect(nats, RESULTS, n, tmp)
                check_all_results(lines, n)
                by_a = summary["instances"].get("%s/%d" % (socket.gethostname(), a.proc.pid), 0)
                wait_for(lambda: metrics(b)["ok"] >= n - by_a, 10, "B to count its articles")
                mb = metrics(b)
                print("    killed A after %d of its articles (%d done in all); B did %d; %d duplicates; %s"
                      % (killed_at["ok"], at_kill, mb["ok"], summary["duplicates"], text.strip().splitlines()[-1]))
                # A's results in the stream (it went on a little after the
                # snapshot above) and B's cover everything.
                check(by_a >= killed_at["ok"] and mb["ok"] >= n - by_a, (killed_at, by_a, mb, summary))
        finally:
            a.close()


def test_nats_server_restart_midstream():
    if _skip():
        return
    n = 10000
    with scratch() as tmp, Nats() as nats:
        publish_articles(nats, tmp, n)
        slow = ("--workers", "1", "--nats-max-inflight", "4")
        with Daemon(*nats_args(nats, "3s", *slow)) as d:
            wait_for(lambda: metrics(d)["ok"] >= n // 3, 30, "a third of the stream")
            nats.stop()
            wait_for(lambda: metrics(d)["connected"] == 0, 10, "nats_connected 0")
            done_before = metrics(d)["ok"]
            check(done_before < n * 0.9, "the stream was nearly done before the restart (%d)" % done_before)
            # NATS is down: the socket is still served, ready says so.
            st, _, ready = d.request("GET", "/v1/ready")
            check(st == 200 and ready["status"] == "ready" and ready["nats"] == "disconnected", ready)
            r = d.call({"id": "while-down", "text": TEXTS[1]})
            check(r["id"] == "while-down" and "passages" in r, r)
            time.sleep(0.5)
            nats.start()
            wait_for(lambda: metrics(d)["connected"] == 1, 15, "the reconnect")
            lines, summary, text = collect(nats, RESULTS, n, tmp)
            check_all_results(lines, n)
            m = metrics(d)
            print("    restarted nats-server after %d articles; then %d more; nak %d; %d duplicates; %s"
                  % (done_before, m["ok"] - done_before, m["nak"], summary["duplicates"],
                     text.strip().splitlines()[-1]))
            check(m["ok"] > done_before, m)
            st, _, ready = d.request("GET", "/v1/ready")
            check(ready["nats"] == "connected", ready)
            check("nats: disconnected" in d.log() and "nats: reconnected" in d.log(), d.log())


def test_nats_poison_messages_dead_letter():
    if _skip():
        return
    good = 50
    poison = [  # (raw line, expected error code, id or None)
        (b'{"id":"p1","text":', "invalid_json", None),
        (b'{"id":"p2","text":5}', "invalid_request", "p2"),
        (b'{"id":"p3","text":"\xff\xfe bad"}', "invalid_utf8", None),
        (b'[1,2,3]', "invalid_request", None),
        (json.dumps({"id": "p5", "passages": ["x"] * 20}).encode(), "too_many_passages", "p5"),
        (json.dumps({"id": "p6", "text": "长" * 500}, ensure_ascii=False).encode(), "too_large", None),
        (b'{"id":"p7","op":"health"}', "invalid_request", "p7"),
        (b'{"id":"p8"}', "invalid_request", "p8"),
        (b'{"id":"p9","text":"ok","top_k":-1}', "invalid_request", "p9"),
    ]
    with scratch() as tmp, Nats() as nats:
        path = os.path.join(tmp, "mixed.jsonl")
        with open(path, "wb") as f:
            for i in range(good):
                f.write(json.dumps({"id": "g%d" % i, "text": TEXTS[i % 5]}, ensure_ascii=False).encode() + b"\n")
                if i < len(poison):
                    f.write(poison[i][0] + b"\n")
        publish(nats, path)
        with Daemon(*nats_args(nats, "1s"), "--max-passages", "10", "--max-request-bytes", "1024") as d:
            lines, _, _ = collect(nats, RESULTS, good, tmp)
            check(sorted(o["id"] for o in lines) == sorted("g%d" % i for i in range(good)), lines[:3])
            dead, _, _ = collect(nats, DEAD, len(poison), os.path.join(tmp))
            check(len(dead) == len(poison), dead)
            by_payload = {}
            for o in dead:
                if "payload" in o:
                    by_payload[o["payload"].encode()] = o
                else:
                    by_payload[base64.b64decode(o["payload_base64"])] = o
            for raw, code, pid in poison:
                o = by_payload.get(raw)
                check(o is not None, "no dead letter for %r" % raw)
                check(error_code(o) == code and o["error"]["message"], (raw, o))
                check(o.get("id") == pid, (raw, o))
                check(o["stream"] == STREAM and o["subject"] == SUBJECT and o["seq"] > 0, o)
            # Acked, not redelivered: the counts stay put past the ack wait.
            wait_for(lambda: metrics(d)["ok"] + metrics(d)["dead"] >= good + len(poison), 10, "the counts")
            m = metrics(d)
            check(m["ok"] == good and m["dead"] == len(poison) and m["nak"] == 0, m)
            # Each dead letter counts once under its code, as a socket error would.
            want = {}
            for _, code, _ in poison:
                want[code] = want.get(code, 0) + 1
            errs = errors_total(d)
            check({c: v for c, v in errs.items() if v} == want, (errs, want))
            time.sleep(wait(1.5))
            check(metrics(d) == m and errors_total(d) == errs, (m, metrics(d), errs, errors_total(d)))


def test_nats_unpublishable_results_nak_with_backoff_then_recover():
    """No stream captures the results subject: every result publish is
    refused, so every article is nak'ed, with a growing delay (no storm) and
    never acked; once a stream for the results exists, they all go through."""
    if _skip():
        return
    n = 20
    with scratch() as tmp, Nats() as nats:
        publish(nats, None)
        t0 = time.monotonic()
        with Daemon(*nats_args(nats, "20s")) as d:
            results_unpublishable(nats, d)
            publish_articles(nats, tmp, n)
            wait_for(lambda: metrics(d)["nak"] >= n, 20, "every article nak'ed once")
            m = metrics(d)
            check(m["ok"] == 0 and m["dead"] == 0, m)
            time.sleep(wait(2.5))
            m = metrics(d)
            # delays 1 s, 2 s, 4 s...: in E seconds an article is delivered at
            # most 1 + log2(E + 1) times (+1 for timing); without the backoff
            # it would be hundreds. E from the start: slow under valgrind.
            e = time.monotonic() - t0
            bound = n * (2 + int(math.log2(e + 1)))
            check(m["nak"] <= bound and m["ok"] == 0, (m, "bound %d after %.1f s" % (bound, e)))
            check("not confirmed" in d.log(), d.log())
            publish(nats, None, "FIXED", RESULTS)
            lines, summary, _ = collect(nats, RESULTS, n, tmp, timeout=40)
            check_all_results(lines, n)
            # An article whose result landed while its publish was still
            # reported failed comes back after its nak delay (up to 8-16 s
            # here) and is acked then (the copy is dropped as a duplicate).
            wait_ok(d, n, 40, "every article acked")
            print("    %d articles: %d naks before the results had a stream, then all published"
                  % (n, metrics(d)["nak"]))


def test_nats_max_deliver_dead_letters_unclassified():
    """An article delivered more than --nats-max-deliver times without an
    outcome (here: its result cannot be published, so it is nak'ed each
    time) goes to the dead letters as it is, with its delivery count, and is
    acked: a poison article cannot cycle through the daemons forever."""
    if _skip():
        return
    n = 6
    with scratch() as tmp, Nats() as nats:
        publish(nats, None)
        publish(nats, None, "DLQ", "dlq.articles")
        with Daemon(*nats_args(nats, "20s"), "--nats-dead-letter", "dlq.articles", "--nats-max-deliver", "2") as d:
            results_unpublishable(nats, d)
            publish_articles(nats, tmp, n)
            dead, _, _ = collect(nats, "dlq.articles", n, tmp, timeout=30)
            check(sorted(json.loads(o["payload"])["id"] for o in dead) == sorted("a%d" % i for i in range(n)), dead)
            for o in dead:
                check(error_code(o) == "too_many_deliveries" and o["delivered"] == 3, o)
                check("nats_max_deliver 2" in o["error"]["message"], o)
                # Keyed by the article's id like every other dead letter.
                check(o.get("id") == json.loads(o["payload"])["id"], o)
            for seq in range(1, n + 1):
                h = dead_letter_headers(nats, "DLQ", seq)
                check(h.get("Themed-Error") == "too_many_deliveries" and re.fullmatch(r"a\d", h.get("Themed-Id", "")), h)
            wait_for(lambda: metrics(d)["dead"] >= n, 10, "the dead count")
            m = metrics(d)
            check(m["ok"] == 0 and m["dead"] == n and m["nak"] == 2 * n, m)
            check(errors_total(d)["too_many_deliveries"] == n, errors_total(d))
            check("not classified again" in d.log(), d.log())
            time.sleep(wait(1.5))  # acked: nothing comes back
            check(metrics(d) == m, (m, metrics(d)))
    # the option is checked like the others
    r = subprocess.run([THEMED_BIN, "--nats-max-deliver", "x", "--check"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=wait(30))
    check(r.returncode != 0 and b"nats_max_deliver" in r.stdout.replace(b"-", b"_"), r.stdout)


def test_nats_results_stream_name_clash_not_consuming():
    """<stream>_RESULTS exists (another daemon's, on articles.results) and no
    stream captures this daemon's results subjects: it cannot create its own
    under that name, so it does not consume (nothing would store a result)
    and says why; once a stream captures them, it consumes."""
    if _skip():
        return
    n = 20
    args = ("--nats-stream", STREAM, "--nats-subject", SUBJECT, "--nats-durable", "d2",
            "--nats-results", "r2.results", "--nats-dead-letter", "r2.dead", "--nats-ack-wait", "5s")
    with scratch() as tmp, Nats() as nats:
        publish_articles(nats, tmp, n)
        publish(nats, None, STREAM + "_RESULTS", RESULTS)
        with Daemon("--nats", nats.url, *args) as d:
            line = wait_for(lambda: [l for l in d.log().splitlines() if "not consuming yet" in l], 15,
                            "the refusal")[0]
            for word in ("ARTICLES_RESULTS", "r2.results", "r2.dead", "name clash"):
                check(word in line, line)
            time.sleep(wait(1))
            m = metrics(d)
            check(m["ok"] == m["dead"] == m["nak"] == m["inflight"] == 0, m)
            check("nats: consuming" not in d.log(), d.log())
            r = js_api(nats, "CONSUMER.INFO.%s.d2" % STREAM)
            check(r.get("error", {}).get("code") == 404, r)  # nothing was fetched for it
            add_stream(nats, "R2", "r2.results", "r2.dead")
            lines, _, _ = collect(nats, "r2.results", n, tmp, timeout=30)
            check_all_results(lines, n)
            check("nats: consuming" in d.log(), d.log())
            r = js_api(nats, "STREAM.INFO.%s_RESULTS" % STREAM)
            check(r["config"]["subjects"] == [RESULTS], r)  # left as it was


def test_nats_results_subjects_captured_separately():
    """The dead-letter subject is stored by a stream of its own, the results
    subject by none: themed creates <stream>_RESULTS for the results subject
    alone, and both kinds of message are stored."""
    if _skip():
        return
    n = 20
    args = ("--nats-stream", STREAM, "--nats-subject", SUBJECT, "--nats-durable", DURABLE,
            "--nats-results", "art2.results", "--nats-dead-letter", "art2.dead", "--nats-ack-wait", "5s")
    with scratch() as tmp, Nats() as nats:
        publish(nats, None, "DL", "art2.dead")
        path = os.path.join(tmp, "articles.jsonl")
        write_articles(path, n)
        with open(path, "a") as f:
            f.write('{"id":"bad","text":5}\n')
        publish(nats, path)
        with Daemon("--nats", nats.url, *args) as d:
            lines, _, _ = collect(nats, "art2.results", n, tmp, timeout=20)
            check_all_results(lines, n)
            dead, _, _ = collect(nats, "art2.dead", 1, tmp, timeout=20)
            check(len(dead) == 1 and dead[0]["id"] == "bad" and error_code(dead[0]) == "invalid_request", dead)
            wait_ok(d, n, 10, "every article acked")
            m = metrics(d)
            check(m["dead"] == 1 and m["nak"] == 0, m)
            check("created stream %s_RESULTS on art2.results" % STREAM in d.log(), d.log())
            check("captured by another stream" not in d.log(), d.log())
            r = js_api(nats, "STREAM.INFO.%s_RESULTS" % STREAM)
            check(r["config"]["subjects"] == ["art2.results"], r)


def test_nats_down_at_start_socket_served_then_consumes():
    if _skip():
        return
    nats = Nats()  # not started: nothing listens on its port yet
    try:
        with scratch() as tmp, Daemon(*nats_args(nats, "5s")) as d:
            st, _, ready = d.request("GET", "/v1/ready")
            check(st == 200 and ready["status"] == "ready" and ready["nats"] == "disconnected", ready)
            r = d.call({"id": 1, "text": TEXTS[2]})
            check(r["id"] == 1 and r["summary"]["passages"] == 1, r)
            check(metrics(d)["connected"] == 0, metrics(d))
            nats.start()
            wait_for(lambda: metrics(d)["connected"] == 1, 15, "the connection")
            publish_articles(nats, tmp, 200, prefix="late")
            lines, _, _ = collect(nats, RESULTS, 200, tmp)
            check_all_results(lines, 200, prefix="late")
            st, _, ready = d.request("GET", "/v1/ready")
            check(ready["nats"] == "connected", ready)
    finally:
        nats.__exit__()


def test_nats_password_with_at_sign_not_logged():
    """Credentials in --nats are logged as ***, up to the last '@' (libnats' own split): a
    password with an '@' in it once had its tail in the log."""
    if _skip():
        return
    with Nats(extra=["--user", "alice", "--pass", "s3cr@tPart"]) as nats:
        url = "nats://alice:s3cr@tPart@127.0.0.1:%d" % nats.port
        args = ("--nats", url) + nats_args(nats)[2:]
        with Daemon(*args) as d:
            wait_for(lambda: metrics(d)["connected"] == 1, 15, "the connection")
            log = d.log()
            check("nats: connected to nats://***@127.0.0.1:%d" % nats.port in log, log)
            check("tPart" not in log and "s3cr" not in log and "alice" not in log, log)


def test_nats_stop_while_busy_acks_nothing_unpublished():
    """SIGTERM mid-stream: the daemon stops cleanly (exit 0), and a second one
    finishes the stream: every article has a result."""
    if _skip():
        return
    n = 1500
    with scratch() as tmp, Nats() as nats:
        publish_articles(nats, tmp, n)
        a = Daemon(*nats_args(nats, "2s", "--workers", "1", "--nats-max-inflight", "4"))
        try:
            wait_for(lambda: metrics(a)["ok"] >= 100, 30, "daemon A to work")
            t0 = time.monotonic()
            check(a.stop() == 0, a.log())
            check(time.monotonic() - t0 < wait(5), "stop took %.1fs" % (time.monotonic() - t0))
        finally:
            a.close()
        with Daemon(*nats_args(nats, "2s")):
            lines, _, _ = collect(nats, RESULTS, n, tmp)
            check_all_results(lines, n)


def test_nats_config_errors():
    if _skip():
        return
    tmp = tempfile.mkdtemp(prefix="themed-it-natscfg-")
    try:
        def run(*args):
            d = Daemon(*args, start=False)
            r = subprocess.run(d.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=d.env,
                               timeout=wait(20))
            shutil.rmtree(d.dir, ignore_errors=True)
            return r.returncode, r.stdout.decode("utf-8", "replace")

        rc, out = run("--nats", "nats://127.0.0.1:1", "--check-config")
        check(rc == 1 and "--nats needs --nats-stream" in out, out)
        rc, out = run("--nats-stream", "S", "--check-config")
        check(rc == 1 and "need --nats URL" in out, out)
        rc, out = run("--nats", "nats://127.0.0.1:1", "--nats-stream", "a.b", "--nats-subject", "x",
                      "--nats-durable", "d", "--nats-results", "r", "--check-config")
        check(rc == 1 and "nats-stream" in out, out)
        rc, out = run("--nats", "nats://127.0.0.1:1", "--nats-stream", "S", "--nats-subject", "x",
                      "--nats-durable", "d", "--nats-results", "r.*", "--check-config")
        check(rc == 1 and "nats-results" in out, out)
        # A daemon that would consume its own results is refused.
        rc, out = run("--nats", "nats://127.0.0.1:1", "--nats-stream", "S", "--nats-subject", "themed.>",
                      "--nats-durable", "d", "--nats-results", "themed.results", "--check-config")
        check(rc == 1 and "also matches the results" in out, out)
        rc, out = run("--nats", "nats://127.0.0.1:1", "--nats-stream", "S", "--nats-subject", "in.*",
                      "--nats-durable", "d", "--nats-results", "out", "--nats-dead-letter", "in.dead",
                      "--check-config")
        check(rc == 1 and "also matches the results" in out, out)
        # The config file takes the same keys (flag name, '-' -> '_').
        cfg = os.path.join(tmp, "themed.json")
        with open(cfg, "w") as f:
            json.dump({"nats": "nats://127.0.0.1:1", "nats_stream": "S", "nats_subject": "in.>",
                       "nats_durable": "d", "nats_results": "out", "nats_max_inflight": 8,
                       "nats_ack_wait": "10s", "nats_dead_letter": "out.bad"}, f)
        rc, out = run("--config", cfg, "--check-config")
        check(rc == 0 and "config ok" in out, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
