#!/usr/bin/env python3
"""Soak test: the real daemon, many connections, a million requests.

  python3 tests/soak/soak.py [--requests 1000000] [--conns 32] [--http 4]
                             [--depth 32] [--workers N] [--tcp] [--model DIR]
  make soak SOAKFLAGS="--requests 200000"

32 connections (4 of them HTTP keep-alive, the rest JSON Lines) each keep
--depth short classify requests in flight (the passages of
tests/fixtures/classify-corpus.jsonl). The load loop is tests/soak/soakclient.c,
built here with cc: the Python client is too slow for a million requests.
Every answer is checked (in order, no error, a result). The daemon's VmRSS is
sampled all along; its growth between the first and the last 10% of the
requests must stay under 5%. Prints a summary, then "N passed, N failed"
(answers that were right / wrong, plus one failure per broken invariant).
Exit status 0 iff none failed.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402

RSS_GROWTH_MAX = 5.0  # percent, first 10% of the requests -> last 10%


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def build_client():
    src = os.path.join(HERE, "soakclient.c")
    out = os.path.join(harness.BUILD, "soak", "soakclient")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run([os.environ.get("CC", "cc"), "-std=c17", "-Wall", "-Wextra", "-Werror", "-O2", "-pthread",
                        "-o", out, src], check=True)
    return out


def write_texts(path):
    src = os.path.join(harness.ROOT, "tests", "fixtures", "classify-corpus.jsonl")
    n = 0
    with open(src, encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        for line in f:
            if line.strip():
                out.write(json.dumps(json.loads(line)["text"], ensure_ascii=False) + "\n")
                n += 1
    return n


def default_model(tmp):
    m = os.environ.get("THEMED_TEST_MODEL")
    if m:
        return m
    m = os.path.join(harness.ROOT, "models", "rural-themes")
    if os.path.isfile(os.path.join(m, "manifest.json")):
        return m
    return harness.train_model(os.path.join(tmp, "model"), name="rural-themes")


def window_max(samples, lo, hi):
    """Largest RSS sampled while progress was within [lo, hi]; else the
    sample nearest to that window."""
    inside = [r for p, r in samples if lo <= p <= hi]
    if inside:
        return max(inside)
    mid = (lo + hi) / 2
    return min(samples, key=lambda s: abs(s[0] - mid))[1]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=1000000)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--http", type=int, default=4, help="how many of the connections speak HTTP")
    ap.add_argument("--depth", type=int, default=32, help="requests in flight per connection")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tcp", action="store_true", help="connect over TCP instead of the unix socket")
    ap.add_argument("--model", help="bundle to serve (default: models/rural-themes)")
    args = ap.parse_args(argv)

    for exe in (harness.THEMED,):
        if not os.access(exe, os.X_OK):
            print("soak: %s not built" % exe)
            print("0 passed, 1 failed")
            return 1
    tmp = tempfile.mkdtemp(prefix="themed-soak-")
    failures = []
    ok = bad = 0
    try:
        client = build_client()
        texts = os.path.join(tmp, "texts.jsonl")
        ntexts = write_texts(texts)
        model = args.model or default_model(tmp)
        d = harness.Daemon("--workers", str(args.workers), "--idle-timeout", "1h",
                           model=model, tcp=args.tcp)
        try:
            pid = d.proc.pid
            target = ["--tcp", "127.0.0.1:%d" % d.port] if args.tcp else ["--unix", d.sock]
            cmd = [client] + target + ["--texts", texts, "--requests", str(args.requests), "--conns",
                                       str(args.conns), "--http", str(args.http), "--depth", str(args.depth)]
            print("soak: %d requests, %d connections (%d HTTP, %d JSON Lines) over %s, %d in flight each, "
                  "%d workers, %d texts, model %s" % (args.requests, args.conns, min(args.http, args.conns),
                                                      max(args.conns - args.http, 0),
                                                      "TCP" if args.tcp else "a unix socket", args.depth,
                                                      args.workers, ntexts, model), flush=True)
            progress = [0]
            samples = [(0, rss_kb(pid))]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    try:
                        samples.append((progress[0], rss_kb(pid)))
                    except OSError:
                        return
                    stop.wait(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.monotonic()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            last_print = 0
            summary = ""
            for line in p.stdout:
                if line.startswith("progress "):
                    progress[0] = int(line.split()[1])
                    if progress[0] - last_print >= max(args.requests // 10, 1):
                        last_print = progress[0]
                        print("soak: %8d done, %6.1fs, RSS %d KiB" % (progress[0], time.monotonic() - t0,
                                                                     samples[-1][1]), flush=True)
                elif line.startswith("done "):
                    summary = line.strip()
            rc = p.wait()
            secs = time.monotonic() - t0
            samples.append((progress[0], rss_kb(pid)))
            stop.set()
            sampler.join()
            fields = dict(kv.split("=") for kv in summary.split()[1:]) if summary else {}
            ok = int(fields.get("ok", 0))
            bad = args.requests - ok
            if rc != 0:
                failures.append("soakclient exited with %d (%s)" % (rc, summary or "no summary"))
            client_secs = float(fields.get("seconds", secs))

            n = args.requests
            first = window_max(samples, 0, n // 10)
            last = window_max(samples, n - n // 10, n)
            growth = 100.0 * (last - first) / first if first else 0.0
            stats = d.call({"op": "stats"})["stats"]
            errors = {k: v for k, v in stats["errors"].items() if v}
            print("soak: %d answered right, %d wrong or missing, in %.1fs: %.0f requests/s"
                  % (ok, bad, client_secs, ok / client_secs if client_secs else 0))
            print("soak: daemon RSS %d KiB in the first 10%%, %d KiB in the last 10%% (%+.2f%%); peak %d KiB, "
                  "%d samples" % (first, last, growth, max(r for _, r in samples), len(samples)))
            print("soak: daemon stats: %d requests, errors %s, %d connections in total"
                  % (stats["requests"], errors or "none", stats["connections_total"]))
            if growth >= RSS_GROWTH_MAX:
                failures.append("RSS grew %.2f%% (limit %.0f%%)" % (growth, RSS_GROWTH_MAX))
            if errors:
                failures.append("the daemon counted errors: %r" % errors)
            if stats["requests"] < n:
                failures.append("the daemon counted %d requests, sent %d" % (stats["requests"], n))
        finally:
            try:
                d.close()  # a clean stop, exit 0, no sanitizer/valgrind report
            except AssertionError as e:
                failures.append(str(e)[:2000])
    except Exception as e:  # noqa: BLE001
        failures.append("soak: %r" % e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("FAIL " + f)
    print("%d passed, %d failed" % (ok, bad + len(failures)))
    return 0 if not failures and bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
