"""Worker loops (the default) against one loop with a threadpool (--worker-loops=false).

Every other suite runs the default; these check what is particular to each way
of serving: connections spread over the loops, shared state (model, metrics,
reloads) seen alike from all of them, large requests off a loop, and the old
single-loop path still whole.
"""
import json
import os
import re
import signal
import subprocess
import threading

from harness import (THEMECTL, THEMED, Daemon, check, error_code, model_b_dir, model_dir, plugin_dir,
                     wait)

TEXT = "发展集体经济，壮大村级产业。\n抓队伍建设 选优配强乡村骨干力量\n开展人居环境整治，建设美丽乡村。"


def _offline(text):
    """What themectl classify says offline for one document (the reference)."""
    env = dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir())
    out = subprocess.run([THEMECTL, "classify", "--model", model_dir(), "--jsonl", "-"],
                         input=(json.dumps({"id": "x", "text": text}, ensure_ascii=False) + "\n").encode(),
                         stdout=subprocess.PIPE, env=env, timeout=wait(60), check=True).stdout
    return json.loads(out.decode().splitlines()[0])


def test_connections_spread_over_worker_loops_and_stats_add_up():
    with Daemon("--workers", "2", "--log-level", "debug") as d:
        conns = [d.jsonl() for _ in range(6)]
        for k, c in enumerate(conns):
            c.send(b"".join((json.dumps({"id": i, "text": TEXT}, ensure_ascii=False) + "\n").encode()
                            for i in range(10)))
        for c in conns:
            got = [c.recv_line() for _ in range(10)]
            check([g["id"] for g in got] == list(range(10)), got)
            check(all(g["summary"]["passages"] == 3 for g in got), got)
        log = d.log()
        served = re.findall(r"conn (\d+): served by worker loop (\d)", log)
        loops = {lp for _, lp in served}
        check(loops == {"1", "2"}, "connections not spread over both loops:\n" + log)
        # the fewest-connections rule: 6 connections, 3 and 3
        check(sorted([lp for _, lp in served].count(x) for x in loops) == [3, 3], served)
        # one loop answers for all: requests and passages of every connection
        st = conns[0].call({"op": "stats"})["stats"]
        check(st["requests_by_op"]["classify"] == 60, st)
        check(st["passages"] == 180, st)
        check(st["connections"] == 6, st)
        check(st["worker_loop_connections"] == [3, 3], st)
        _, _, text = d.request("GET", "/metrics")  # a 7th connection, on the first loop
        check('themed_worker_loop_connections{loop="1"} 4' in text and
              'themed_worker_loop_connections{loop="2"} 3' in text, text[-600:])
        for c in conns:
            c.close()


def test_reload_asked_on_a_worker_loop_is_answered_in_order():
    with Daemon("--workers", "2", "--allow-any-model-path") as d:
        a, b = d.jsonl(), d.jsonl()  # one on each loop
        before = a.call({"op": "model"})["model"]["label"]
        # pipelined around the reload: every answer in its place
        a.send(b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in (
            {"id": 1, "text": TEXT}, {"op": "reload", "id": "r", "path": model_b_dir()}, {"id": 2, "text": TEXT})))
        got = [a.recv_line() for _ in range(3)]
        check([g.get("id") for g in got] == [1, "r", 2], got)
        check(got[1].get("reloaded") is True, got[1])
        after = got[1]["model"]
        check(after != before, (before, after))
        # the other loop sees the new model at once
        check(b.call({"op": "model"})["model"]["label"] == after)
        check(b.call({"id": 3, "text": TEXT})["model"] == after)
        check(b.call({"op": "stats"})["stats"]["reloads"]["ok"] == 1)
        a.close()
        b.close()


def test_large_document_beside_small_ones_on_one_loop():
    # Over 16 KiB a worker loop hands the request to the threadpool; the answer
    # still comes in order, equal to the offline one.
    big = "\n".join([TEXT] * 150)  # ~25 KiB of JSON
    want = _offline(big)
    with Daemon("--workers", "1") as d:
        c = d.jsonl()
        reqs = [{"id": 0, "text": TEXT}, {"id": 1, "text": big}, {"id": 2, "text": TEXT}]
        c.send(b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in reqs))
        got = [c.recv_line() for _ in range(3)]
        check([g["id"] for g in got] == [0, 1, 2], got)
        check(got[1]["summary"]["passages"] == 450, got[1]["summary"])
        check(got[1]["passages"] == want["passages"], "large document differs from offline")
        c.close()


def test_pipelined_documents_past_a_loops_share_go_to_the_pool_in_order():
    # 30 documents of ~12 KiB written at once: a worker loop classifies 64 KiB
    # of one connection's requests per iteration itself, the rest go to the
    # threadpool; every answer comes back, in order, equal to the offline one.
    doc = "\n".join([TEXT] * 60)
    want = _offline(doc)
    with Daemon("--workers", "1") as d, d.jsonl() as c:
        c.send(b"".join((json.dumps({"id": i, "text": doc}, ensure_ascii=False) + "\n").encode()
                        for i in range(30)))
        got = [c.recv_line() for _ in range(30)]
        check([g["id"] for g in got] == list(range(30)), [g.get("id") for g in got])
        check(all(g["passages"] == want["passages"] for g in got), "a pooled answer differs")


def test_single_loop_with_threadpool_still_serves_reloads_and_drains():
    with Daemon("--worker-loops=false", "--workers", "2", "--allow-any-model-path",
                "--log-level", "debug") as d:
        check("on the threadpool" in d.log(), d.log())
        conns = [d.jsonl() for _ in range(4)]
        for c in conns:
            c.send(b"".join((json.dumps({"id": i, "text": TEXT}, ensure_ascii=False) + "\n").encode()
                            for i in range(50)))
        for c in conns:
            got = [c.recv_line() for _ in range(50)]
            check([g["id"] for g in got] == list(range(50)), got)
        check("served by worker loop" not in d.log(), "a worker loop in single-loop mode")
        r = conns[0].call({"op": "reload", "id": "r", "path": model_b_dir()})
        check(r.get("reloaded") is True, r)
        check(conns[1].call({"op": "stats"})["stats"]["requests_by_op"]["classify"] == 200)
        # requests written just before SIGTERM are still answered
        for c in conns:
            c.send(b"".join((json.dumps({"id": i, "text": TEXT}, ensure_ascii=False) + "\n").encode()
                            for i in range(20)))
        d.kill(signal.SIGTERM)
        for c in conns:
            got = [c.recv_line() for _ in range(20)]
            check(all(g is not None and "passages" in g for g in got), got)
            check(c.recv_line() is None, "closed after the drain")
            c.close()
        check(d.proc.wait(timeout=wait(15)) == 0)


def test_worker_loops_under_concurrent_clients_and_reloads():
    # Clients on both loops while reloads swap the model: every answer right,
    # none lost; the metrics agree with what the clients counted.
    with Daemon("--workers", "2", "--allow-any-model-path") as d:
        errors, counts = [], [0] * 4

        def client(k):
            try:
                with d.jsonl() as c:
                    for n in range(25):
                        c.send(b"".join((json.dumps({"id": i, "text": TEXT}, ensure_ascii=False)
                                         + "\n").encode() for i in range(8)))
                        got = [c.recv_line() for _ in range(8)]
                        if [g.get("id") for g in got] != list(range(8)) or any("passages" not in g for g in got):
                            errors.append(got)
                            return
                        counts[k] += 8
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        ts = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        with d.jsonl() as adm:
            for i in range(6):
                r = adm.call({"op": "reload", "id": i, "path": model_b_dir()})
                check(r.get("reloaded") is True or error_code(r) == "reload_failed", r)
        for t in ts:
            t.join(wait(60))
        check(not errors, errors[:2])
        check(sum(counts) == 800, counts)
        _, _, text = d.request("GET", "/metrics")
        total = sum(int(x) for x in re.findall(r'themed_requests_total\{[^}]*op="classify"[^}]*\} (\d+)', text))
        check(total == 800, text[:2000])


def _loop_threads(pid):
    """{thread name: CPUs it may run on} for the daemon's worker loop threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            name = f.read().strip()
        if name.startswith("themed-loop-"):
            out[name] = os.sched_getaffinity(int(tid))
    return out


def test_cpu_affinity_pins_each_worker_loop_and_bad_lists_are_refused():
    allowed = sorted(os.sched_getaffinity(0))
    # auto: loop i on the i-th allowed CPU, round robin; the other threads stay free
    with Daemon("--workers", "3", "--cpu-affinity", "auto") as d:
        loops = _loop_threads(d.proc.pid)
        check(sorted(loops) == ["themed-loop-1", "themed-loop-2", "themed-loop-3"], loops)
        for i in range(3):
            check(loops[f"themed-loop-{i + 1}"] == {allowed[i % len(allowed)]}, (loops, allowed))
        check(os.sched_getaffinity(d.proc.pid) == set(allowed), "the main thread was pinned")
        check(d.jsonl().call({"id": 1, "text": TEXT})["summary"]["passages"] == 3)
        check("worker loop 1: on CPU %d" % allowed[0] in d.log(), d.log())
    # an explicit list: both loops on the one CPU named
    with Daemon("--workers", "2", "--cpu-affinity", str(allowed[-1])) as d:
        check(set(map(frozenset, _loop_threads(d.proc.pid).values())) == {frozenset([allowed[-1]])})
    # none: nothing is pinned, and the threads are still named
    with Daemon("--workers", str(len(allowed)), "--cpu-affinity", "none") as d:
        loops = _loop_threads(d.proc.pid)
        check(len(loops) == len(allowed) and all(v == set(allowed) for v in loops.values()), loops)
        check(_loops_line(len(allowed), "not pinned") in d.log(), d.log())
    env = dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir())
    for spec, says in ((str(max(allowed) + 1), b"is not one this process may run on"),
                       ("1-0", b"expected match, auto, none or a CPU list"),
                       ("0,", b"expected match, auto, none or a CPU list"),
                       ("any", b"expected match, auto, none or a CPU list")):
        r = subprocess.run([THEMED, "--model", model_dir(), "--listen", "unix:x.sock", "--cpu-affinity", spec,
                            "--check-config"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                           timeout=wait(30))
        check(r.returncode != 0 and says in r.stdout, (spec, r.stdout))
    r = subprocess.run([THEMED, "--model", model_dir(), "--listen", "unix:x.sock", "--cpu-affinity", "auto",
                        "--worker-loops=false", "--check-config"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env, timeout=wait(30))
    check(r.returncode != 0 and b"needs worker_loops" in r.stdout, r.stdout)


def _loops_line(n, how):
    """The startup line counting the worker loops (singular for one: on a
    1-CPU machine the default is one loop)."""
    if n == 1:
        return "1 worker loop, " + how.replace("each ", "")
    return "%d worker loops, %s" % (n, how)


def test_by_default_one_worker_per_allowed_cpu_and_loops_pinned_only_one_per_cpu():
    allowed = sorted(os.sched_getaffinity(0))
    # the default (match): as many loops as CPUs, so each loop gets one
    with Daemon() as d:
        check(d.call({"op": "stats"})["stats"]["workers"] == len(allowed))
        loops = _loop_threads(d.proc.pid)
        check(sorted(loops.values(), key=min) == [{c} for c in allowed], (loops, allowed))
        check(os.sched_getaffinity(d.proc.pid) == set(allowed), "the main thread was pinned")
        check(_loops_line(len(allowed), "each pinned to a CPU") in d.log(), d.log())
    # one loop more than CPUs: pinning would stack two on one CPU, so none is
    with Daemon("--workers", str(len(allowed) + 1)) as d:
        loops = _loop_threads(d.proc.pid)
        check(len(loops) == len(allowed) + 1 and all(v == set(allowed) for v in loops.values()), loops)
        check(_loops_line(len(allowed) + 1, "not pinned") in d.log(), d.log())
        check(d.jsonl().call({"id": 1, "text": TEXT})["summary"]["passages"] == 3)
    # the default worker count follows the CPUs the daemon may use, not those online
    env = dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir())
    r = subprocess.run(["taskset", "-c", str(allowed[0]), THEMED, "--model", model_dir(), "--listen",
                        "unix:x.sock", "--check-config"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env, timeout=wait(30))
    check(r.returncode == 0 and b" 1 worker," in r.stdout, r.stdout)
    # and the single-loop mode ignores the default instead of refusing it
    with Daemon("--worker-loops=false") as d:
        check(not _loop_threads(d.proc.pid), "worker loops with --worker-loops=false")
        check(d.jsonl().call({"id": 1, "text": TEXT})["summary"]["passages"] == 3)
