#!/usr/bin/python3
"""Serving A/B: two or more themed binaries, side by side, in interleaved rounds.

  bench/serve_ab.py --requests FILE [--rounds 3] [--duration 3] [--workers 2]
                    NAME=THEMED [NAME=THEMED ...] -- CASE [CASE ...]

  CASE: closed:CONNS          closed loop, CONNS connections, 8 deep
        rate:RPS[:PACE_US[:NICE]]
                              open loop on 64 connections (build/bench/loadgen --rate);
                              NICE runs the generator under `nice -n NICE` (10: it yields
                              the CPUs to the daemon, as a client on CPUs of its own would)

Each round starts every daemon in turn (--workers 2, unix socket) and runs every
case against it with build/bench/loadgen; while a case's measured window runs,
`perf stat -p` counts the daemon's syscalls, context switches and CPU time, so
the costs are per answered request and do not depend on the wall clock (the
machine is shared: latencies are only comparable within one round). Prints
each run, then the medians over the rounds as a markdown table.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVENTS = [("raw_syscalls:sys_enter", "syscalls"), ("syscalls:sys_enter_write", "write"),
          ("syscalls:sys_enter_writev", "writev"), ("syscalls:sys_enter_read", "read"),
          ("syscalls:sys_enter_futex", "futex"), ("syscalls:sys_enter_epoll_wait", "epoll_wait"),
          ("context-switches", "ctx_sw"), ("task-clock", "cpu_us")]


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        p = f.read().rsplit(")", 1)[1].split()
    return (int(p[11]) + int(p[12])) / os.sysconf("SC_CLK_TCK")


def run_case(a, sock, dpid, case):
    kind, *p = case.split(":")
    cmd = [os.path.join(ROOT, a.build, "bench/loadgen"), "--unix", sock, "--requests", a.requests,
           "--duration", str(a.duration), "--warmup", "1", "--label", case]
    if kind == "closed":
        cmd += ["--conns", p[0]]
    else:
        cmd += ["--conns", "64", "--rate", p[0]] + (["--pace-us", p[1]] if len(p) > 1 and p[1] else [])
        if len(p) > 2 and p[2]:
            cmd = ["nice", "-n", p[2]] + cmd
    c0 = cpu_s(dpid)
    lg = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    counts = {}
    if shutil.which("perf"):
        time.sleep(1.0)  # the warm-up
        ps = subprocess.run(["perf", "stat", "-x,", "-p", str(dpid)] +
                            sum([["-e", e] for e, _ in EVENTS], []) +
                            ["--", "sleep", str(a.duration - 0.2)], capture_output=True, text=True)
        names = dict(EVENTS)
        for line in ps.stderr.splitlines():
            f = line.split(",")
            if len(f) > 3 and f[2] in names:
                try:
                    counts[names[f[2]]] = float(f[0])
                except ValueError:
                    pass
    o = json.loads(lg.communicate()[0])
    c1 = cpu_s(dpid)
    n = max(o["rps"] * (a.duration - 0.2), 1)
    o["per_req"] = {k: v / n for k, v in counts.items()}
    if "cpu_us" in counts:
        o["per_req"]["cpu_us"] = counts["cpu_us"] * 1e3 / n  # task-clock is in ms
    # as bench.py: passages per daemon CPU-second, warm-up and drain included
    o["pps_per_cpu"] = o["pps"] * o["seconds"] / max(c1 - c0, 1e-6)
    return o


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--build", default="build")
    ap.add_argument("rest", nargs="+")
    a = ap.parse_args()
    if "--" not in sys.argv:
        ap.error("give NAME=THEMED ... -- CASE ...")
    k = a.rest.index("--") if "--" in a.rest else len([x for x in a.rest if "=" in x])
    bins = [x.split("=", 1) for x in a.rest[:k] if "=" in x]
    cases = [x for x in a.rest[k:] if x != "--"]
    work = os.path.join(ROOT, a.build, "bench-work")
    os.makedirs(work, exist_ok=True)
    res = {}
    for rnd in range(a.rounds):
        for name, binary in bins:
            sock = f"{work}/ab-{name}.sock"
            if os.path.exists(sock):
                os.unlink(sock)
            d = subprocess.Popen([binary, "--model", os.path.join(ROOT, "models/rural-themes"),
                                  "--plugins", os.path.join(ROOT, a.build, "plugins"), "--listen",
                                  f"unix:{sock}", "--workers", str(a.workers), "--log-level", "warn"],
                                 stderr=open(f"{work}/ab-{name}.log", "w"))
            try:
                while not os.path.exists(sock):
                    if d.poll() is not None:
                        raise SystemExit(f"{binary} exited {d.returncode}")
                    time.sleep(0.02)
                time.sleep(0.3)
                for case in cases:
                    o = run_case(a, sock, d.pid, case)
                    res.setdefault((case, name), []).append(o)
                    pr = o["per_req"]
                    print(f"round {rnd} {name:8} {case:14} served {o['rps']:8.0f}/s "
                          f"per-CPU-s {o['pps_per_cpu']:7.0f} p50 {o['p50_us']:8.0f} p99 {o['p99_us']:8.0f} "
                          f"p99.9 {o['p999_us']:8.0f} us | per request: cpu {pr.get('cpu_us', 0):.1f} us, "
                          f"syscalls {pr.get('syscalls', 0):.2f}, ctx-sw {pr.get('ctx_sw', 0):.2f} | "
                          f"loadgen lag p99 {o.get('send_lag_p99_us', 0):.0f} us, "
                          f"loadavg {open('/proc/loadavg').read().split()[0]}", flush=True)
            finally:
                d.terminate()
                d.wait()
    print(f"\nmedians over {a.rounds} rounds:\n")
    print("| case | daemon | served/s | passages per daemon CPU-s | p50 µs | p99 µs | p99.9 µs | "
          "CPU µs/req | syscalls/req | write+writev/req | futex/req | ctx switches/req |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (case, name), L in res.items():
        def m(f):
            return statistics.median(f(o) for o in L)
        pr = lambda k: m(lambda o: o["per_req"].get(k, 0))  # noqa: E731
        print(f"| {case} | {name} | {m(lambda o: o['rps']):,.0f} | {m(lambda o: o['pps_per_cpu']):,.0f} | "
              f"{m(lambda o: o['p50_us']):,.0f} | {m(lambda o: o['p99_us']):,.0f} | "
              f"{m(lambda o: o['p999_us']):,.0f} | {pr('cpu_us'):.1f} | {pr('syscalls'):.2f} | "
              f"{pr('write') + pr('writev'):.2f} | {pr('futex'):.2f} | {pr('ctx_sw'):.2f} |")


if __name__ == "__main__":
    main()
