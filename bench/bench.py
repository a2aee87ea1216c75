#!/usr/bin/python3
"""The body of `make bench` (bench/run.sh): themed side by side with its peers.

Everything in the report is measured in this one run, on this machine, and
compared as ratios. Throughput is passages per CPU-second of the process
(user + system time from wait4), which on a shared machine is far steadier
than wall time; wall times are shown beside it. Offline tools run pinned to
one core (taskset -c 0). Start-up is measured separately (the same command on
an empty input) and subtracted, so rates are steady state.

  /usr/bin/python3 bench/bench.py [--quick] [--build build] [--shared ../shared]

Writes bench/results/latest.md (and latest.json); exits non-zero only if a
step failed to run, never because of a speed.
"""
import argparse
import datetime
import json
import re
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THUC_CLASSES = ["finance", "realty", "stocks", "education", "science", "society", "politics",
                "sports", "game", "entertainment"]
THEMES = ["organization", "talent", "industry", "governance", "culture", "ecology"]
TOKOPTS = '{"traditional_to_simplified":true}'
RATE_PACE_US = 50  # open-loop pacer resolution (bench/loadgen.c --pace-us)
# The generator's niceness for the "yielding" latency readings: at nice 10 it
# gets the CPUs only when the daemon's threads do not want them, as a client on
# CPUs of its own would not compete with the daemon (bench/NOTES.md).
YIELD_NICE = 10


class Bench:
    def __init__(self, a):
        self.a = a
        self.quick = a.quick
        self.build = os.path.join(ROOT, a.build)
        self.shared = os.path.abspath(os.path.join(ROOT, a.shared))
        self.work = os.path.join(self.build, "bench-work")
        self.themectl = os.path.join(self.build, "themectl")
        self.themed = os.path.join(self.build, "themed")
        self.plugins = os.path.join(self.build, "plugins")
        self.loadgen = os.path.join(self.build, "bench", "loadgen")
        self.floord = os.path.join(self.build, "bench", "floord")
        self.hotpath = os.path.join(self.build, "bench", "hotpath")
        self.reps = 1 if self.quick else 3
        self.failures = []
        self.r = {}          # results, also written as JSON
        self.t_start = time.time()

    # ---------------------------------------------------------------- helpers

    def log(self, msg):
        print(f"[bench {time.time() - self.t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def fail(self, step, err):
        self.failures.append(f"{step}: {err}")
        self.log(f"FAILED {step}: {err}")

    def run(self, cmd, out=None, inp=None, pin=True, check=True, env=None, capture=False):
        """Runs cmd; returns dict(wall, cpu, rc, stdout). CPU = user + sys of the child."""
        if pin and shutil.which("taskset"):
            cmd = ["taskset", "-c", "0"] + cmd
        stdout = subprocess.PIPE if capture else (open(out, "wb") if out else subprocess.DEVNULL)
        stdin = open(inp, "rb") if inp else subprocess.DEVNULL
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=stdout, stdin=stdin, stderr=subprocess.PIPE, env=env)
        data = b""
        if capture:
            data = p.stdout.read()
        err = p.stderr.read()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if out and not capture:
            stdout.close()
        if inp:
            stdin.close()
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[-6:])} exited {p.returncode}: "
                               f"{err.decode(errors='replace').strip()[-400:]}")
        return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rc": p.returncode,
                "stdout": data.decode(errors="replace"), "stderr": err.decode(errors="replace"),
                "maxrss_kb": ru.ru_maxrss}

    def step(self, name, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # a step that cannot run is reported, the rest goes on
            traceback.print_exc()
            self.fail(name, e)
            return None

    def write_jsonl(self, path, rows):
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    def replicate(self, src, dst, times):
        with open(src, "rb") as f:
            data = f.read()
        with open(dst, "wb") as f:
            for _ in range(times):
                f.write(data)

    # ------------------------------------------------------------------ data

    def prepare(self):
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        w = self.work
        thuc = [json.loads(l) for l in open(os.path.join(self.shared, "bench/thucnews/train.jsonl"),
                                             encoding="utf-8")]
        ntr, nte = (2000, 500) if self.quick else (8000, 2000)
        self.thuc_train, self.thuc_test = thuc[:ntr], thuc[8000:8000 + nte]
        self.write_jsonl(f"{w}/thuc_train.jsonl", self.thuc_train)
        self.write_jsonl(f"{w}/thuc_test.jsonl", self.thuc_test)
        self.write_jsonl(f"{w}/thuc_test_docs.jsonl",
                         [{"id": r["id"], "text": r["text"]} for r in self.thuc_test])
        self.n_thuc_rep = (20000 if self.quick else 100000) // len(self.thuc_test)
        self.n_thuc = self.n_thuc_rep * len(self.thuc_test)
        self.replicate(f"{w}/thuc_test_docs.jsonl", f"{w}/thuc_pred.jsonl", self.n_thuc_rep)
        # the same headlines as plain lines (themectl classify --lines)
        with open(f"{w}/thuc_test.txt", "w", encoding="utf-8") as f:
            for r in self.thuc_test:
                f.write(" ".join(r["text"].split()) + "\n")
        self.replicate(f"{w}/thuc_test.txt", f"{w}/thuc_pred.txt", self.n_thuc_rep)
        # fastText: characters as tokens
        def chars(t):
            return " ".join(ch for ch in t if not ch.isspace())
        with open(f"{w}/ft_thuc_train.txt", "w", encoding="utf-8") as f:
            for r in self.thuc_train:
                f.write(f"__label__{r['themes'][0]} {chars(r['text'])}\n")
        with open(f"{w}/ft_thuc_test.txt", "w", encoding="utf-8") as f:
            for r in self.thuc_test:
                f.write(f"__label__{r['themes'][0]} {chars(r['text'])}\n")
        with open(f"{w}/ft_thuc_pred1.txt", "w", encoding="utf-8") as f:
            for r in self.thuc_test:
                f.write(chars(r["text"]) + "\n")
        self.replicate(f"{w}/ft_thuc_pred1.txt", f"{w}/ft_thuc_pred.txt", self.n_thuc_rep)
        open(f"{w}/empty.txt", "w").close()
        open(f"{w}/empty.svm", "w").close()
        # the domain corpus: passages for the peers, articles (raw text) for themectl
        dev = [json.loads(l) for l in open(os.path.join(self.shared, "corpus/dev.jsonl"),
                                            encoding="utf-8")]
        self.dev = dev
        arts, order = {}, []
        for r in dev:
            if r["doc"] not in arts:
                arts[r["doc"]] = []
                order.append(r["doc"])
            arts[r["doc"]].append(r["text"])
        self.write_jsonl(f"{w}/dev_articles.jsonl",
                         [{"id": d, "text": "\n".join(arts[d])} for d in order])
        self.write_jsonl(f"{w}/dev_passages.jsonl", [{"id": r["id"], "text": r["text"]} for r in dev])
        self.n_dev_rep = (20000 if self.quick else 100000) // len(dev) + 1
        self.n_dev = self.n_dev_rep * len(dev)
        self.replicate(f"{w}/dev_articles.jsonl", f"{w}/dev_pred_articles.jsonl", self.n_dev_rep)
        # the same articles as plain text, separated by blank lines (--blocks)
        with open(f"{w}/dev_articles.txt", "w", encoding="utf-8") as f:
            for d in order:
                f.write("\n".join(arts[d]) + "\n\n")
        self.replicate(f"{w}/dev_articles.txt", f"{w}/dev_pred_articles.txt", self.n_dev_rep)
        self.replicate(f"{w}/dev_passages.jsonl", f"{w}/dev_pred_passages.jsonl", self.n_dev_rep)
        train = [json.loads(l) for l in open(os.path.join(self.shared, "corpus/train.jsonl"),
                                              encoding="utf-8")]
        with open(f"{w}/ft_dev_train.txt", "w", encoding="utf-8") as f:
            for r in train:
                labs = " ".join(f"__label__{t}" for t in r["themes"])
                f.write(f"{labs} {chars(r['text'])}\n")
        with open(f"{w}/ft_dev_pred1.txt", "w", encoding="utf-8") as f:
            for r in dev:
                f.write(chars(r["text"]) + "\n")
        self.replicate(f"{w}/ft_dev_pred1.txt", f"{w}/ft_dev_pred.txt", self.n_dev_rep)
        # serving requests: single passages, and documents of 1..1000 passages
        self.write_jsonl(f"{w}/req_single.jsonl",
                         [{"id": i, "text": r["text"]} for i, r in enumerate(dev)])
        texts = [r["text"] for r in train + dev]
        for size in (1, 10, 100, 1000):
            rows, k = [], 0
            for i in range(max(8, 4000 // size)):
                ps = [texts[(k + j) % len(texts)] for j in range(size)]
                k += size
                rows.append({"id": f"d{size}-{i}", "passages": ps})
            self.write_jsonl(f"{w}/req_doc{size}.jsonl", rows)
        self.log(f"data: thucnews {ntr} train / {nte} test x{self.n_thuc_rep}; "
                 f"dev {len(dev)} passages x{self.n_dev_rep}")

    # ----------------------------------------------------------- timing core

    def rate(self, name, cmd_n, cmd_0, n, **kw):
        """Steady-state rate of cmd_n over n inputs (start-up measured by cmd_0)."""
        res = {"n": n, "cpu": [], "wall": [], "cpu0": [], "wall0": []}
        for _ in range(self.reps):
            a = self.run(cmd_n(), **kw)
            b = self.run(cmd_0(), **kw)
            res["cpu"].append(a["cpu"])
            res["wall"].append(a["wall"])
            res["cpu0"].append(b["cpu"])
            res["wall0"].append(b["wall"])
        cpu, cpu0 = statistics.median(res["cpu"]), statistics.median(res["cpu0"])
        wall, wall0 = statistics.median(res["wall"]), statistics.median(res["wall0"])
        res["startup_cpu"], res["startup_wall"] = cpu0, wall0
        res["pps_cpu"] = n / max(cpu - cpu0, 1e-6)
        res["pps_wall"] = n / max(wall - wall0, 1e-6)
        self.log(f"{name}: {res['pps_cpu']:.0f} passages per CPU-s "
                 f"(start-up {cpu0 * 1e3:.0f} ms CPU)")
        return res

    # -------------------------------------------------------- offline: thuc

    def thuc_offline(self):
        w, T = self.work, self.themectl
        R = self.r.setdefault("thuc", {})
        model = f"{w}/thuc-model"
        # training, side by side with svm-train on the same vectors (below)
        t = self.run([T, "train", "--data", f"{w}/thuc_train.jsonl", "--out", model,
                      "--name", "thuc", "--multiclass", "--folds", "1", "--c", "0.5", "--solver", "dcd",
                      "--themes", ",".join(THUC_CLASSES), "--tokenizer", "bigram",
                      "--tokenizer-options", TOKOPTS, "--context-weight", "0",
                      "--plugins", self.plugins, "--threads", "1", "--quiet"], pin=True)
        R["train_themectl"] = {"cpu": t["cpu"], "wall": t["wall"]}
        self.log(f"themectl train (thucnews, 1 thread): {t['cpu']:.1f} s CPU")
        ev = self.run([T, "eval", "--model", model, "--plugins", self.plugins, "--data",
                       f"{w}/thuc_test.jsonl", "--json"], pin=False, capture=True)
        e = json.loads(ev["stdout"])
        R["themectl_acc"] = {"accuracy": e["accuracy"], "macro_f1": e["macro_f1"]}
        for f in ("train", "test"):
            self.run([T, "vectorize", "--model", model, "--plugins", self.plugins, "--data",
                      f"{w}/thuc_{f}.jsonl", "--out", f"{w}/thuc_{f}.svm"], pin=False)
        self.replicate(f"{w}/thuc_test.svm", f"{w}/thuc_pred.svm", self.n_thuc_rep)
        # themectl, from raw text
        R["themectl"] = self.classify_rate(
            "themectl classify (thucnews)", model,
            ["--jsonl"], "thuc_pred.jsonl", self.n_thuc)
        # the same headlines as plain lines in, a TSV row out (what fastText reads and writes)
        R["themectl_lines"] = self.classify_rate(
            "themectl classify --lines --format tsv (thucnews)", model,
            ["--lines", "--format", "tsv"], "thuc_pred.txt", self.n_thuc)
        # liblinear on the same vectors
        t = self.run(["liblinear-train", "-s", "2", "-c", "0.5", "-q", f"{w}/thuc_train.svm",
                      f"{w}/thuc_ll.model"])
        R["train_liblinear"] = {"cpu": t["cpu"], "wall": t["wall"]}
        R["liblinear"] = self.rate(
            "liblinear-predict (thucnews)",
            lambda: ["liblinear-predict", "-q", f"{w}/thuc_pred.svm", f"{w}/thuc_ll.model",
                     "/dev/null"],
            lambda: ["liblinear-predict", "-q", f"{w}/empty.svm", f"{w}/thuc_ll.model",
                     "/dev/null"], self.n_thuc)
        self.run(["liblinear-predict", "-q", f"{w}/thuc_test.svm", f"{w}/thuc_ll.model",
                  f"{w}/thuc_ll.pred"])
        R["liblinear_acc"] = self.acc_from_labels(f"{w}/thuc_test.svm", f"{w}/thuc_ll.pred")
        # svm-predict on the bundle's own model files (one binary SVM per class)
        self.svm_predict(R, model, THUC_CLASSES, f"{w}/thuc_test.jsonl", len(self.thuc_test))
        # svm-train on the same vectors (training comparison)
        t = self.run(["svm-train", "-t", "0", "-c", "0.5", "-q", f"{w}/thuc_train.svm",
                      f"{w}/thuc_libsvm.model"])
        R["train_svm"] = {"cpu": t["cpu"], "wall": t["wall"]}
        self.log(f"svm-train -t 0 (thucnews): {t['cpu']:.1f} s CPU")
        # fastText
        t = self.run(["fasttext", "supervised", "-input", f"{w}/ft_thuc_train.txt", "-output",
                      f"{w}/ft_thuc", "-bucket", "200000", "-dim", "50", "-wordNgrams", "2",
                      "-epoch", "25", "-lr", "0.5", "-thread", "1", "-verbose", "0", "-seed", "1"])
        R["train_fasttext"] = {"cpu": t["cpu"], "wall": t["wall"]}
        R["fasttext"] = self.rate(
            "fasttext predict (thucnews)",
            lambda: ["fasttext", "predict", f"{w}/ft_thuc.bin", f"{w}/ft_thuc_pred.txt"],
            lambda: ["fasttext", "predict", f"{w}/ft_thuc.bin", f"{w}/empty.txt"], self.n_thuc)
        out = self.run(["fasttext", "predict", f"{w}/ft_thuc.bin", f"{w}/ft_thuc_pred1.txt"],
                       capture=True)["stdout"].split("\n")
        gold = [r["themes"][0] for r in self.thuc_test]
        pred = [l.replace("__label__", "").strip() for l in out[:len(gold)]]
        R["fasttext_acc"] = self.multiclass_scores(gold, pred)
        # scikit-learn
        R["sklearn"] = self.sklearn("multiclass", f"{w}/thuc_train.jsonl", f"{w}/thuc_test.jsonl",
                                    f"{w}/thuc_pred.jsonl", self.n_thuc)
        # start-up in wall time, the way hyperfine measures it (empty input)
        self.step("hyperfine start-up", self.startup_hyperfine, R, [
            ("themectl classify", [T, "classify", "--jsonl", "--model", model, "--plugins",
                                   self.plugins, f"{w}/empty.txt"]),
            ("liblinear-predict", ["liblinear-predict", "-q", f"{w}/empty.svm", f"{w}/thuc_ll.model",
                                   "/dev/null"]),
            ("fasttext predict", ["fasttext", "predict", f"{w}/ft_thuc.bin", f"{w}/empty.txt"]),
            ("svm-predict (one model)", ["svm-predict", f"{w}/empty.svm",
                                         f"{model}/svm/{THUC_CLASSES[0]}.model", "/dev/null"])])

    def startup_hyperfine(self, R, cmds):
        if not shutil.which("hyperfine"):
            raise RuntimeError("hyperfine not installed")
        out = f"{self.work}/hyperfine.json"
        runs = "3" if self.quick else "10"
        args = ["hyperfine", "-N", "--warmup", "1", "--runs", runs, "--export-json", out]
        for name, cmd in cmds:
            args += ["--command-name", name, " ".join(cmd)]
        self.run(args, pin=True)
        res = json.load(open(out))["results"]
        R["startup_hf"] = [{"name": r["command"], "mean": r["mean"], "stddev": r["stddev"]}
                           for r in res]

    def classify_rate(self, name, model, mode, path, n):
        """Steady-state rate of themectl classify with `mode` args over
        work/path (n passages), its start-up from the same on an empty file."""
        def cmd(f):
            return [self.themectl, "classify"] + mode + ["--model", model, "--plugins", self.plugins,
                                                         f"{self.work}/{f}"]
        return self.rate(name, lambda: cmd(path), lambda: cmd("empty.txt"), n)

    def svm_predict(self, R, model, themes, test_jsonl, n):
        """svm-predict with the bundle's svm/<theme>.model on the bundle's own vectors."""
        w = self.work
        use = themes[:1] if self.quick else themes
        cpu = wall = cpu0 = 0.0
        for th in use:
            vec = f"{w}/svmp_{th}.svm"
            self.run([self.themectl, "vectorize", "--model", model, "--plugins", self.plugins,
                      "--data", test_jsonl, "--out", vec, "--theme", th], pin=False)
            a = self.run(["svm-predict", vec, f"{model}/svm/{th}.model", "/dev/null"])
            b = self.run(["svm-predict", f"{w}/empty.svm", f"{model}/svm/{th}.model", "/dev/null"],
                         check=False)
            cpu += a["cpu"]
            wall += a["wall"]
            cpu0 += b["cpu"]
        scale = len(themes) / len(use)
        per_pass = (cpu - cpu0) * scale / n
        R["svm_predict"] = {"n": n, "models_run": len(use), "models": len(themes),
                            "pps_cpu": 1 / max(per_pass, 1e-12), "startup_cpu": cpu0 * scale,
                            "pps_wall": n / max(wall * scale, 1e-6)}
        self.log(f"svm-predict: {R['svm_predict']['pps_cpu']:.0f} passages per CPU-s "
                 f"({len(use)} of {len(themes)} models run{', scaled' if scale != 1 else ''})")

    def acc_from_labels(self, svm_path, pred_path):
        gold = [l.split(" ", 1)[0].strip() for l in open(svm_path)]
        pred = [l.strip() for l in open(pred_path)]
        return self.multiclass_scores(gold, pred[:len(gold)])

    @staticmethod
    def multiclass_scores(gold, pred):
        acc = sum(g == p for g, p in zip(gold, pred)) / len(gold)
        f1s = []
        for c in sorted(set(gold)):
            tp = sum(g == c and p == c for g, p in zip(gold, pred))
            fp = sum(g != c and p == c for g, p in zip(gold, pred))
            fn = sum(g == c and p != c for g, p in zip(gold, pred))
            f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
        return {"accuracy": acc, "macro_f1": sum(f1s) / len(f1s)}

    @staticmethod
    def multilabel_scores(gold_sets, pred_sets, themes):
        tp = {t: 0 for t in themes}
        fp, fn = dict(tp), dict(tp)
        for g, p in zip(gold_sets, pred_sets):
            for t in themes:
                tp[t] += t in g and t in p
                fp[t] += t not in g and t in p
                fn[t] += t in g and t not in p
        T, F, N = sum(tp.values()), sum(fp.values()), sum(fn.values())
        per = [2 * tp[t] / max(2 * tp[t] + fp[t] + fn[t], 1) for t in themes]
        return {"micro_f1": 2 * T / max(2 * T + F + N, 1), "macro_f1": sum(per) / len(per)}

    def sklearn(self, mode, train, test, pred, n):
        cmd = ["/usr/bin/python3", os.path.join(ROOT, "bench/sk_peer.py"), "--mode", mode,
               "--train", train, "--test", test, "--predict", pred]
        if mode == "multilabel":
            cmd += ["--themes", ",".join(THEMES)]
        runs = []
        for _ in range(self.reps):
            o = json.loads(self.run(cmd, capture=True)["stdout"])
            runs.append(o)
        cpu = statistics.median(r["predict_cpu_s"] for r in runs)
        res = dict(runs[0])
        res["pps_cpu"] = n / max(cpu, 1e-6)
        self.log(f"scikit-learn ({mode}): {res['pps_cpu']:.0f} passages per CPU-s")
        return res

    # ------------------------------------------------------ offline: domain

    def dev_offline(self):
        w, T = self.work, self.themectl
        R = self.r.setdefault("dev", {})
        model = os.path.join(ROOT, "models/rural-themes")
        ev = self.run([T, "eval", "--model", model, "--plugins", self.plugins, "--data",
                       os.path.join(self.shared, "corpus/dev.jsonl"), "--json"], pin=False,
                      capture=True)
        e = json.loads(ev["stdout"])
        R["themectl_acc"] = {"micro_f1": e["micro_f1"], "macro_f1": e["macro_f1"]}
        R["themectl"] = self.classify_rate(
            "themectl classify (domain articles)", model,
            ["--jsonl"], "dev_pred_articles.jsonl", self.n_dev)
        # the same passages one per line, no article structure: what the daemon's
        # single-passage requests carry (the per-core comparison below)
        R["themectl_single"] = self.classify_rate(
            "themectl classify (domain, one passage per line)", model,
            ["--jsonl"], "dev_pred_passages.jsonl", self.n_dev)
        # the same articles, a TSV row per passage out: the same tags
        R["themectl_lines"] = self.classify_rate(
            "themectl classify --jsonl --format tsv (domain articles)", model,
            ["--jsonl", "--format", "tsv"], "dev_pred_articles.jsonl", self.n_dev)
        # the same articles as plain text (blank line between articles): no
        # JSON to parse, as fastText and liblinear read none
        R["themectl_blocks"] = self.classify_rate(
            "themectl classify --blocks --format tsv (domain articles)", model,
            ["--blocks", "--format", "tsv"], "dev_pred_articles.txt", self.n_dev)
        # the table says "same tags": check it (passage rows without the ids,
        # which are line numbers here and article ids in JSON Lines)
        tags = []
        for mode, f in ((["--jsonl"], "dev_articles.jsonl"), (["--blocks"], "dev_articles.txt")):
            out = self.run([T, "classify"] + mode + ["--format", "tsv", "--model", model, "--plugins",
                            self.plugins, f"{w}/{f}"], pin=False, capture=True)["stdout"]
            tags.append([l.split("\t", 1)[1] for l in out.splitlines()[1:]])
        if tags[0] != tags[1]:
            self.fail("offline domain", "themectl classify --blocks and --jsonl disagree on the "
                      "dev articles")
        train = os.path.join(self.shared, "corpus/train.jsonl")
        dev = os.path.join(self.shared, "corpus/dev.jsonl")
        # liblinear: one binary model per theme on the bundle's vectors
        gold = [set(r["themes"]) for r in self.dev]
        pred = [set() for _ in self.dev]
        cpu = wall = cpu0 = 0.0
        for th in THEMES:
            for name, src in (("train", train), ("dev", dev)):
                self.run([T, "vectorize", "--model", model, "--plugins", self.plugins, "--data",
                          src, "--out", f"{w}/dev_{name}_{th}.svm", "--theme", th], pin=False)
            self.run(["liblinear-train", "-s", "2", "-c", "0.5", "-q", f"{w}/dev_train_{th}.svm",
                      f"{w}/ll_{th}.model"])
            self.replicate(f"{w}/dev_dev_{th}.svm", f"{w}/dev_pred_{th}.svm", self.n_dev_rep)
            a = self.run(["liblinear-predict", "-q", f"{w}/dev_pred_{th}.svm", f"{w}/ll_{th}.model",
                          "/dev/null"])
            b = self.run(["liblinear-predict", "-q", f"{w}/empty.svm", f"{w}/ll_{th}.model",
                          "/dev/null"])
            cpu, wall, cpu0 = cpu + a["cpu"], wall + a["wall"], cpu0 + b["cpu"]
            self.run(["liblinear-predict", "-q", f"{w}/dev_dev_{th}.svm", f"{w}/ll_{th}.model",
                      f"{w}/ll_{th}.pred"])
            for i, l in enumerate(open(f"{w}/ll_{th}.pred")):
                if l.strip() == "1":
                    pred[i].add(th)
        R["liblinear"] = {"n": self.n_dev, "pps_cpu": self.n_dev / max(cpu - cpu0, 1e-6),
                          "pps_wall": self.n_dev / max(wall, 1e-6), "startup_cpu": cpu0}
        R["liblinear_acc"] = self.multilabel_scores(gold, pred, THEMES)
        self.log(f"liblinear-predict x6 (domain): {R['liblinear']['pps_cpu']:.0f} passages per CPU-s")
        self.svm_predict(R, model, THEMES, dev, len(self.dev))
        # fastText, multi-label (one-vs-all loss)
        self.run(["fasttext", "supervised", "-input", f"{w}/ft_dev_train.txt", "-output",
                  f"{w}/ft_dev", "-bucket", "200000", "-dim", "50", "-wordNgrams", "2", "-epoch",
                  "25", "-lr", "0.5", "-loss", "ova", "-thread", "1", "-verbose", "0", "-seed", "1"])
        R["fasttext"] = self.rate(
            "fasttext predict (domain)",
            lambda: ["fasttext", "predict", f"{w}/ft_dev.bin", f"{w}/ft_dev_pred.txt", "-1", "0.5"],
            lambda: ["fasttext", "predict", f"{w}/ft_dev.bin", f"{w}/empty.txt", "-1", "0.5"],
            self.n_dev)
        out = self.run(["fasttext", "predict", f"{w}/ft_dev.bin", f"{w}/ft_dev_pred1.txt", "-1",
                        "0.5"], capture=True)["stdout"].split("\n")
        fpred = [set(x.replace("__label__", "") for x in l.split()) for l in out[:len(gold)]]
        R["fasttext_acc"] = self.multilabel_scores(gold, fpred, THEMES)
        R["sklearn"] = self.sklearn("multilabel", train, dev, f"{w}/dev_pred_passages.jsonl",
                                    self.n_dev)

    # ---------------------------------------------------------------- serving

    @staticmethod
    def loops_pinned(pid):
        """Whether every worker loop thread of daemon pid runs on one CPU only."""
        cpus = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().startswith("themed-loop-"):
                    cpus.append(os.sched_getaffinity(int(tid)))
        return bool(cpus) and all(len(c) == 1 for c in cpus)

    def start_daemon(self, workers, tag, extra=()):
        sock = f"{self.work}/themed-{tag}.sock"
        if os.path.exists(sock):
            os.unlink(sock)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        t0 = time.perf_counter()
        p = subprocess.Popen([self.themed, "--model", os.path.join(ROOT, "models/rural-themes"),
                              "--plugins", self.plugins, "--listen", f"unix:{sock}", "--listen",
                              f"tcp:127.0.0.1:{port}", "--workers", str(workers),
                              "--log-level", "warn", *extra],
                             stdout=subprocess.DEVNULL, stderr=open(f"{self.work}/themed-{tag}.log", "w"))
        self.wait_up(p, "themed", f"{self.work}/themed-{tag}.log", t0, 30,
                     lambda: json.loads(self.ask(sock, {"op": "ready"})).get("status") == "ready")
        return {"proc": p, "sock": sock, "tcp": f"127.0.0.1:{port}",
                "ready_s": time.perf_counter() - t0}

    @staticmethod
    def wait_up(p, name, log, t0, timeout, probe):
        """Polls probe() (an OSError counts as not yet) until it is true; raises
        if process p exits first or timeout seconds pass from t0."""
        while True:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited {p.returncode} (see {log})")
            try:
                if probe():
                    return
            except OSError:
                pass
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{name} did not become ready in {timeout} s")
            time.sleep(0.005)

    def start_floor(self, loops):
        """bench/floord: themed's serving shape answering every line with a
        canned answer, no parsing or classification: the latency floor the
        machine and the generator give any server at a rate."""
        sock = f"{self.work}/floord.sock"
        if os.path.exists(sock):
            os.unlink(sock)
        p = subprocess.Popen([self.floord, "--unix", sock, "--loops", str(loops)],
                             stdout=subprocess.DEVNULL, stderr=open(f"{self.work}/floord.log", "w"))

        def listening():
            with socket.socket(socket.AF_UNIX) as c:
                c.connect(sock)
            return True

        self.wait_up(p, "floord", f"{self.work}/floord.log", time.perf_counter(), 10, listening)
        return {"proc": p, "sock": sock}

    @staticmethod
    def ask(sock, obj, timeout=30):
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(timeout)
        c.connect(sock)
        c.sendall((json.dumps(obj) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            d = c.recv(65536)
            if not d:
                break
            buf += d
        c.close()
        return buf.decode()

    @staticmethod
    def proc_cpu(pid):
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def proc_status(pid, key):
        for l in open(f"/proc/{pid}/status"):
            if l.startswith(key + ":"):
                return int(l.split()[1])
        return 0

    def load(self, d, label, reqfile, transport="unix", proto="jsonl", conns=8, depth=0, rate=0,
             duration=None, warmup=None, pace_us=0, nice=0):
        duration = duration or (1.5 if self.quick else 3)
        warmup = warmup if warmup is not None else (0.5 if self.quick else 1)
        cmd = [self.loadgen, "--unix" if transport == "unix" else "--tcp",
               d["sock"] if transport == "unix" else d["tcp"], "--proto", proto, "--requests",
               reqfile, "--conns", str(conns), "--duration", str(duration), "--warmup",
               str(warmup), "--label", label]
        if depth:
            cmd += ["--depth", str(depth)]
        if rate:
            cmd += ["--rate", str(rate)]
            if pace_us:
                cmd += ["--pace-us", str(pace_us)]
        if nice:
            cmd = ["nice", "-n", str(nice)] + cmd
        c0 = self.proc_cpu(d["proc"].pid)
        r = self.run(cmd, pin=False, capture=True, check=False)
        c1 = self.proc_cpu(d["proc"].pid)
        try:
            o = json.loads(r["stdout"])
        except ValueError:
            raise RuntimeError(f"loadgen {label}: {r['stderr'].strip()[-300:]}")
        if r["rc"] or o.get("failed") or o.get("errors"):
            raise RuntimeError(f"loadgen {label}: {o.get('error', '')} errors={o.get('errors')}")
        # the daemon's CPU over the whole run (warm-up and drain included):
        # per passage, over every response it produced
        o["daemon_cpu_s"] = c1 - c0
        o["daemon_rss_kb"] = self.proc_status(d["proc"].pid, "VmRSS")
        o["daemon_cpu_per_passage_us"] = (c1 - c0) / max(o["passages"], 1) * 1e6 * (
            (duration) / (duration + warmup))
        o["pps_per_daemon_cpu"] = o["pps"] * o["seconds"] / max((c1 - c0) * duration /
                                                                 (duration + warmup), 1e-6)
        self.log(f"load {label}: {o['pps']:.0f} passages/s, p99 {o['p99_us']:.0f} us")
        return o

    def rate_half(self, label, reqfile, rate, variants):
        """Single-passage requests at `rate` (half a saturation), open loop, 64
        connections: three runs of 4 s (one of 3 s with --quick) for each
        variant, a (daemon, the generator's niceness) pair, interleaved so that
        each sees the machine in the same moods. The tail of one short run on a
        shared machine is mostly whether it caught a stall of a few
        milliseconds; the three are reported, and the run with the median p99
        stands for them. Returns one result per variant."""
        runs = [[] for _ in variants]
        for k in range(1 if self.quick else 3):
            for v, (d, n) in enumerate(variants):
                runs[v].append(self.load(d, f"{label}-v{v}-{k}", reqfile, "unix", "jsonl", 64, 0,
                                         rate, 3 if self.quick else 4, None, RATE_PACE_US, n))
        out = []
        for (d, n), rs in zip(variants, runs):
            rs = sorted(rs, key=lambda o: o["p99_us"])
            o = dict(rs[len(rs) // 2])
            o["p99_runs_us"] = [x["p99_us"] for x in rs]
            o["nice"] = n
            out.append(o)
        return out

    def open_loop_saturation(self, d, reqfile):
        """The highest rate of single-passage requests the daemon keeps up with
        in an open loop (64 connections): the offered rate rises by a quarter
        per step from 10,000/s until fewer than 95% of the offered requests
        are answered within the window, or half of them wait over 10 ms (a
        queue that grows); then three bisection steps between the last rate
        kept up with and the first one not narrow it to 1/32 of that interval.
        The saturation is the served rate of the highest step kept up with.
        (A step past saturation still "serves" all it was offered: its
        answers come during the 3 s the generator waits after the window,
        behind a growing queue; so its served rate is not a throughput.)"""
        steps, rate = [], 10000

        def run(rate):
            o = self.load(d, f"sweep-{rate}", reqfile, "unix", "jsonl", 64, 0, rate,
                          1.5 if self.quick else 2, 0.5, RATE_PACE_US)
            keeps_up = o["rps"] >= 0.95 * o["offered_rps"] and o["p50_us"] < 10000
            steps.append({"offered_rps": o["offered_rps"], "rps": o["rps"], "p50_us": o["p50_us"],
                          "p99_us": o["p99_us"], "unanswered": o.get("unanswered", 0),
                          "keeps_up": keeps_up})
            return keeps_up

        good, bad = 0, None
        while rate <= 1000000:
            if not run(rate):
                bad = rate
                break
            good, rate = rate, int(rate * 1.25)
        if bad and good:
            for _ in range(3):
                mid = (good + bad) // 2
                if run(mid):
                    good = mid
                else:
                    bad = mid
        kept = [x["rps"] for x in steps if x["keeps_up"]]
        best = max(kept) if kept else max(x["rps"] for x in steps)
        return {"saturation": best, "steps": steps}

    def serving(self):
        w = self.work
        S = self.r.setdefault("serving", {})
        d = self.start_daemon(2, "w2")
        try:
            S["ready_s"] = d["ready_s"]
            S["rss_idle_kb"] = self.proc_status(d["proc"].pid, "VmRSS")
            m = json.loads(self.ask(d["sock"], {"op": "model"}))
            S["load_ms"] = m["model"]["load_ms"]
            single = f"{w}/req_single.jsonl"
            matrix = []
            conns_list = [1, 8, 64] if self.quick else [1, 2, 8, 64, 256]
            for transport in ("unix", "tcp"):
                for proto in ("jsonl", "http"):
                    for c in conns_list:
                        o = self.step(f"load {transport}/{proto}/{c}", self.load, d,
                                      f"{transport}/{proto}/{c}", single, transport, proto, c)
                        if o:
                            matrix.append(o)
            S["matrix"] = matrix
            sizes = []
            for size in (1, 10, 100, 1000):
                o = self.step(f"load doc{size}", self.load, d, f"doc{size}",
                              f"{w}/req_doc{size}.jsonl", "unix", "jsonl",
                              8 if size < 1000 else 4, 2 if size >= 100 else 0)
                if o:
                    o["size"] = size
                    sizes.append(o)
            S["sizes"] = sizes
            # single-passage latency at half the saturating load (open loop), on
            # 64 connections; each request is timed from its own intended send
            # time, the pacer wakes at most every RATE_PACE_US (its CPU shares
            # the daemon's cores). Two saturations: the open loop's own (the
            # same traffic: single requests arriving independently, found by
            # raising the offered rate until the daemon falls behind), and the
            # closed loop's (64 connections x 8 pipelined, which batches).
            # Each rate is measured three ways, interleaved: the default daemon
            # (with --workers 2 on 2 CPUs, cpu_affinity "match" pins its worker
            # loops one per CPU) with the generator at its priority, competing
            # for the 2 CPUs; the same with the generator yielding them
            # (YIELD_NICE); and a daemon whose loops are not pinned (below).
            sweep = self.step("open-loop saturation", self.open_loop_saturation, d, single)
            sat = [o["pps"] for o in matrix if o["transport"] == "unix" and
                   o["proto"] == "jsonl" and o["conns"] == 64]
            halves = [("rate_half", "rate-half", sat[0] if sat else 0)]
            if sweep:
                S["open_sweep"] = sweep["steps"]
                halves.insert(0, ("rate_half_open", "rate-half-open", sweep["saturation"]))
            S["pinned"] = self.loops_pinned(d["proc"].pid)
            # and a daemon with its worker loops free (--cpu-affinity none), started
            # beside it and idle between its runs
            dp = self.step("start unpinned daemon", self.start_daemon, 2, "w2free",
                           ("--cpu-affinity", "none"))
            df = self.step("start floord", self.start_floor, 2)
            try:
                for key, label, s in halves:
                    if not s:
                        continue
                    variants = [("", d, 0), ("_yield", d, YIELD_NICE)]
                    if dp:
                        variants.append(("_unpinned", dp, 0))
                    if df:
                        variants.append(("_floor", df, 0))
                    rs = self.step(label, self.rate_half, label, single, round(s / 2),
                                   [(dd, n) for _, dd, n in variants])
                    for (suffix, _, _), o in zip(variants, rs or []):
                        o["saturation_pps"] = s
                        S[key + suffix] = o
            finally:
                for x in (dp, df):
                    if x:
                        x["proc"].terminate()
                        x["proc"].wait()
            S["rss_hwm_kb"] = self.proc_status(d["proc"].pid, "VmHWM")
            S["rss_serving_max_kb"] = max([o["daemon_rss_kb"] for o in matrix + sizes] or [0])
            # without the 1,000-passage documents, whose in-flight requests (64
            # connections x 8 pipelined x ~300 KB) are most of that maximum
            S["rss_serving_max_small_kb"] = max(
                [o["daemon_rss_kb"] for o in matrix] +
                [o["daemon_rss_kb"] for o in sizes if o.get("size", 0) < 1000] or [0])
            # reloads, while idle
            rl = []
            for _ in range(self.reps):
                t0 = time.perf_counter()
                resp = json.loads(self.ask(d["sock"], {"op": "reload"}))
                if not resp.get("reloaded"):
                    raise RuntimeError(f"reload: {resp}")
                rl.append(time.perf_counter() - t0)
            S["reload_s"] = statistics.median(rl)
            S["reload_load_ms"] = json.loads(self.ask(d["sock"], {"op": "model"}))["model"]["load_ms"]
            S["rss_hwm_after_reload_kb"] = self.proc_status(d["proc"].pid, "VmHWM")
            S["rss_after_reload_kb"] = self.proc_status(d["proc"].pid, "VmRSS")
        finally:
            d["proc"].terminate()
            d["proc"].wait()
        # workers: 1 vs 2, the same load (documents of 10 passages)
        W = {}
        for n in (1, 2):
            d = self.start_daemon(n, f"w{n}x")
            try:
                W[n] = self.load(d, f"workers{n}", f"{w}/req_doc10.jsonl", "unix", "jsonl", 64)
                if n == 1:
                    # One worker loop: on 2 CPUs the daemon and the generator each have one,
                    # so this reading shows the daemon's tail without the contention.
                    sw1 = self.step("open-loop saturation, 1 worker", self.open_loop_saturation,
                                    d, f"{w}/req_single.jsonl")
                    rs = sw1 and self.step("rate-half-w1", self.rate_half, "rate-half-w1",
                                           f"{w}/req_single.jsonl", round(sw1["saturation"] / 2),
                                           [(d, 0)])
                    if rs:
                        rs[0]["saturation_pps"] = sw1["saturation"]
                        S["rate_half_open_w1"] = rs[0]
            finally:
                d["proc"].terminate()
                d["proc"].wait()
        S["workers"] = W
        # model load CPU (the daemon reports wall time, which a busy machine inflates)
        lc = [self.run([self.hotpath, "--model", os.path.join(ROOT, "models/rural-themes"),
                        "--plugins", self.plugins, "--load-only"])
              for _ in range(self.reps)]
        S["load_cpu_s"] = statistics.median(x["cpu"] for x in lc)
        S["load_wall_s"] = statistics.median(x["wall"] for x in lc)
        # the load itself, as the daemon loads (hotpath prints its CPU: every
        # thread's, from getrusage around td_model_load_flags)
        own = [re.search(r"load ([0-9.]+) ms wall, ([0-9.]+) ms CPU", x["stderr"]) for x in lc]
        if all(own):
            S["load_own_cpu_s"] = statistics.median(float(m.group(2)) / 1e3 for m in own)
            S["load_own_wall_s"] = statistics.median(float(m.group(1)) / 1e3 for m in own)

    # ---------------------------------------------------------------- training

    def training(self):
        R = self.r.setdefault("train", {})
        if self.quick:
            R["skipped"] = "quick run"
            return
        out = f"{self.work}/model-cv"
        t = self.run([self.themectl, "train", "--data", os.path.join(self.shared, "corpus/train.jsonl"),
                      "--out", out, "--name", "rural-themes", "--plugins", self.plugins,
                      "--themes", ",".join(THEMES), "--tokenizer", "bigram", "--tokenizer-options",
                      TOKOPTS, "--context-weight", "0.5", "--neighbor-weight", "0.3", "--folds", "5",
                      "--seed", "1", "--quiet"],
                     pin=False)
        R["make_model"] = {"cpu": t["cpu"], "wall": t["wall"]}
        self.log(f"make model equivalent: {t['wall']:.1f} s wall, {t['cpu']:.1f} s CPU")

    # ----------------------------------------------------------------- report

    def machine(self):
        model = "?"
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                model = l.split(":", 1)[1].strip()
                break
        try:
            commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True).stdout.strip()
            commit += " (+ uncommitted changes)" if dirty else ""
        except OSError:
            commit = "?"
        return {"nproc": os.cpu_count(), "cpu": model, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "kernel": platform.release(), "loadavg": open("/proc/loadavg").read().split()[:3],
                "commit": commit, "quick": self.quick}

    def report(self):
        R = self.r
        M = R["machine"]
        L = []
        add = L.append
        add("# themed benchmark" + (" (quick run)" if self.quick else ""))
        add("")
        add(f"Machine: {M['nproc']} CPUs, {M['cpu']}, Linux {M['kernel']}; {M['date']}; "
            f"commit {M['commit']}; load average at start {' '.join(M['loadavg'])}, "
            f"at end {' '.join(R.get('loadavg_end', []))}.")
        add("")
        add("Figures are from this one run, side by side. Throughput is passages per CPU-second "
            "(user + system time of the process, one core: `taskset -c 0`), start-up subtracted "
            "(the same command on an empty input); wall-clock rates are in latest.json. On a busy "
            "machine wall time measures the neighbours as much as the program.")
        add("")

        def fmt(x, d=0):
            return "—" if x is None else (f"{x:,.{d}f}" if isinstance(x, (int, float)) else str(x))

        def offline_table(title, D, what, acc_keys):
            if not D:
                return
            add(f"## Offline: {title}")
            add("")
            bkey = self.offline_base(D)
            base = D.get(bkey, {}).get("pps_cpu")
            add(f"| system | input, what the figure includes | passages/CPU-s | themectl ({what['base']}) is × faster | "
                + " | ".join(acc_keys) + " |")
            add("|---|---|---:|---:|" + "---:|" * len(acc_keys))
            rows = [("themectl classify --jsonl", what["themectl"], "themectl", "themectl_acc"),
                    (what["lines_name"], what["themectl_lines"], "themectl_lines", "themectl_acc")]
            if what.get("themectl_blocks"):
                rows.append(("themectl classify --blocks --format tsv", what["themectl_blocks"],
                             "themectl_blocks", "themectl_acc"))
            rows += [
                    ("liblinear-predict (-s 2)", what["liblinear"], "liblinear", "liblinear_acc"),
                    ("fasttext predict", what["fasttext"], "fasttext", "fasttext_acc"),
                    ("scikit-learn (char 1-2 tf-idf + LinearSVC)", what["sklearn"], "sklearn", "sklearn"),
                    ("svm-predict (the bundle's own libsvm files)", what["svm"], "svm_predict", None)]
            for name, desc, key, acck in rows:
                x = D.get(key)
                if not x:
                    add(f"| {name} | {desc} | FAILED | | " + " | ".join("" for _ in acc_keys) + " |")
                    continue
                p = x.get("pps_cpu")
                ratio = "1.0" if key == bkey else (f"{base / p:,.2f}" if base and p else "—")
                if acck:
                    a = D.get(acck, {})
                    accs = [fmt(a.get(k), 3) for k in acc_keys]
                else:
                    accs = ["= themectl (same hyperplanes)" for _ in acc_keys]
                add(f"| {name} | {desc} | {fmt(p)} | {ratio} | " + " | ".join(accs) + " |")
            add("")
            su = []
            for key, name in (("themectl", "themectl"), ("liblinear", "liblinear-predict"),
                              ("fasttext", "fasttext"), ("svm_predict", "svm-predict")):
                x = D.get(key)
                if x and x.get("startup_cpu") is not None:
                    su.append(f"{name} {x['startup_cpu'] * 1e3:,.0f} ms")
            add("Start-up (CPU, the same command on an empty input; not in the rates above): "
                + ", ".join(su) + ".")
            if D.get("startup_hf"):
                add("Start-up, wall (hyperfine, empty input, one core): " + ", ".join(
                    f"{x['name']} {x['mean'] * 1e3:,.0f} ± {x['stddev'] * 1e3:,.0f} ms"
                    for x in D["startup_hf"]) + ".")
            add("")

        th = R.get("thuc", {})
        n_thuc = self.n_thuc if hasattr(self, "n_thuc") else 0
        offline_table(
            f"THUCNews headlines (train {len(getattr(self, 'thuc_train', []))}, predict "
            f"{len(getattr(self, 'thuc_test', []))} replicated to {n_thuc:,})", th,
            {"base": "--lines --format tsv", "lines_name": "themectl classify --lines --format tsv",
             "themectl": "raw text (JSON Lines), tokenizing, features, 10 SVMs, JSON out",
             "themectl_lines": "raw text, a headline per line; tokenizing, features, 10 SVMs, "
                               "a TSV row out (tags + 10 scores); same tags as --jsonl",
             "liblinear": "pre-made vectors (themectl vectorize), one 10-class model",
             "fasttext": "pre-split text (characters as tokens), label out",
             "sklearn": "raw text: transform + decision_function, in process",
             "svm": "pre-made vectors; " + (f"{th['svm_predict']['models_run']} of "
                                             f"{th['svm_predict']['models']} models run, "
                                             "scaled to all" if th.get("svm_predict") and
                                             th["svm_predict"]["models_run"] != th["svm_predict"]["models"]
                                             else "every class's model run, times summed")},
            ["accuracy", "macro_f1"])
        dv = R.get("dev", {})
        offline_table(
            f"domain corpus (model trained on train.jsonl; dev.jsonl, {len(getattr(self, 'dev', []))} "
            f"passages, replicated to {getattr(self, 'n_dev', 0):,})", dv,
            {"base": "--blocks --format tsv" if dv.get("themectl_blocks") else "--jsonl --format tsv",
             "lines_name": "themectl classify --jsonl --format tsv",
             "themectl": "raw article text (JSON Lines): splitting, headings, context, 6 SVMs, JSON out",
             "themectl_lines": "the same articles; a TSV row per passage out (tags + 6 scores); "
                               "same tags as --jsonl",
             "themectl_blocks": "the same articles as plain text, a blank line between articles "
                                "(no JSON to parse); a TSV row per passage out; same tags",
             "liblinear": "pre-made vectors, 6 binary models: 6 runs, times summed",
             "fasttext": "pre-split text, one-vs-all loss, labels with p >= 0.5",
             "sklearn": "raw passages: transform + 6 decision_functions, in process",
             "svm": "pre-made vectors; " + ("one model run, scaled to 6"
                                             if self.quick else "all 6 models run, times summed")},
            ["micro_f1", "macro_f1"])
        if dv.get("themectl_single"):
            add(f"themectl on the same dev passages one per line (no article structure): "
                f"{fmt(dv['themectl_single']['pps_cpu'])} passages/CPU-s.")
            add("")
        tr = R.get("thuc", {})
        if tr.get("train_themectl") or R.get("train", {}).get("make_model"):
            add("## Training")
            add("")
            add("| run | CPU s | wall s |")
            add("|---|---:|---:|")
            for key, name in (("train_themectl", "themectl train --multiclass --folds 1 --c 0.5 --solver dcd "
                                                 "--threads 1 (THUCNews, one-vs-rest, 10 linear SVMs, "
                                                 "dual coordinate descent; tokenizing included)"),
                              ("train_svm", "svm-train -t 0 -c 0.5, same vectors (one-vs-one, 45 SVMs)"),
                              ("train_liblinear", "liblinear-train -s 2 -c 0.5, same vectors"),
                              ("train_fasttext", "fasttext supervised, 25 epochs, 1 thread")):
                if tr.get(key):
                    add(f"| {name} | {tr[key]['cpu']:.1f} | {tr[key]['wall']:.1f} |")
            mm = R.get("train", {}).get("make_model")
            if mm:
                add(f"| `make model` (5-fold CV grid, 6 C x 6 themes, both cores) | {mm['cpu']:.1f} | "
                    f"{mm['wall']:.1f} |")
            add("")
        S = R.get("serving")
        if S:
            add("## Serving (themed --workers 2, single-passage requests unless noted)")
            add("")
            add("Load generator: bench/loadgen.c (libuv), on the same 2 CPUs as the daemon. JSON "
                "Lines requests pipelined 8 deep per connection; HTTP keep-alive, one request in "
                "flight per connection. \"per daemon CPU-s\": passages divided by the daemon's own "
                "CPU time (from /proc) over the run.")
            add("")
            add("| transport | protocol | conns | passages/s | per daemon CPU-s | p50 µs | p99 µs | p99.9 µs |")
            add("|---|---|---:|---:|---:|---:|---:|---:|")
            for o in S.get("matrix", []):
                add(f"| {o['transport']} | {o['proto']} | {o['conns']} | {fmt(o['pps'])} | "
                    f"{fmt(o['pps_per_daemon_cpu'])} | {fmt(o['p50_us'])} | {fmt(o['p99_us'])} | "
                    f"{fmt(o['p999_us'])} |")
            add("")
            if S.get("sizes"):
                add("Cost against document size (unix socket, JSON Lines, passages given as an array):")
                add("")
                add("| passages per document | passages/s | documents/s | daemon CPU µs per passage | p50 µs | p99 µs |")
                add("|---:|---:|---:|---:|---:|---:|")
                for o in S["sizes"]:
                    add(f"| {o['size']} | {fmt(o['pps'])} | {fmt(o['rps'])} | "
                        f"{fmt(o['daemon_cpu_per_passage_us'], 1)} | {fmt(o['p50_us'])} | "
                        f"{fmt(o['p99_us'])} |")
                add("")
            W = S.get("workers", {})
            if W.get(1) and W.get(2):
                add(f"Workers (documents of 10 passages, unix, JSON Lines, 64 connections): "
                    f"--workers 1 {fmt(W[1]['pps'])} passages/s, --workers 2 {fmt(W[2]['pps'])} "
                    f"passages/s: x{W[2]['pps'] / W[1]['pps']:.2f}.")
                add("")
            sw = S.get("open_sweep")
            if sw:
                add("Open-loop saturation (single-passage requests, unix, JSON Lines, 64 connections; "
                    "the offered rate rises by a quarter per step until the daemon falls behind, then "
                    "three bisection steps; the saturation is the highest rate kept up with, ≥ 95% "
                    "answered within the window and p50 < 10 ms): "
                    + ", ".join(f"{fmt(x['offered_rps'])}/s offered → {fmt(x['rps'])} served "
                                f"(p50 {fmt(x['p50_us'])} µs, p99 {fmt(x['p99_us'])} µs"
                                f"{'' if x.get('keeps_up', True) else ', falls behind'})"
                                for x in sw) + ".")
                add("")
            for key, what in (("rate_half_open", "open loop"),
                              ("rate_half_open_yield", "open loop"),
                              ("rate_half_open_unpinned", "open loop; this daemon with --cpu-affinity none"),
                              ("rate_half_open_w1", "open loop, --workers 1"),
                              ("rate_half", "closed loop, 8 pipelined per connection"),
                              ("rate_half_yield", "closed loop, 8 pipelined per connection"),
                              ("rate_half_unpinned", "closed loop, 8 pipelined per connection; "
                                                     "this daemon with --cpu-affinity none"),
                              ("rate_half_open_floor", "open loop; the rate given to bench/floord, "
                                                       "canned answers, no classification"),
                              ("rate_half_floor", "closed loop, 8 pipelined per connection; the rate "
                                                  "given to bench/floord, canned answers, no "
                                                  "classification")):
                rh = S.get(key)
                if not rh:
                    continue
                who = (f"the generator at nice {rh['nice']}, yielding the CPUs to the daemon"
                       if rh.get("nice") else "the generator at the daemon's priority")
                add(f"Open loop at half the saturating load, {who} ({fmt(rh['saturation_pps'])} "
                    f"passages/s saturate unix JSON Lines, 64 connections, {what}): "
                    f"{fmt(rh.get('offered_rps', rh['rate']))} requests/s offered on 64 connections "
                    f"(paced by a timerfd, {fmt(rh.get('pace_us', 0))} µs resolution), "
                    f"{fmt(rh['rps'])} served, {fmt(rh.get('unanswered', 0))} unanswered; latency from "
                    f"each request's intended send time, the run with the median p99 of "
                    f"{len(rh.get('p99_runs_us', [0]))} (p99s "
                    f"{', '.join(fmt(x) + ' µs' for x in rh.get('p99_runs_us', [rh['p99_us']]))}): "
                    f"p50 {fmt(rh['p50_us'])} µs, p99 "
                    f"{fmt(rh['p99_us'])} µs, p99.9 {fmt(rh['p999_us'])} µs (the load generator "
                    f"itself sent p99 {fmt(rh.get('send_lag_p99_us', 0))} µs late; "
                    f"{rh['loadgen_cpu_s']:.2f} CPU-s of it over the run).")
                add("")
            add("## Memory and start-up")
            add("")
            add(f"- Daemon ready {S.get('ready_s', 0) * 1e3:,.0f} ms after exec; model load "
                f"{fmt(S.get('load_ms'))} ms as the daemon reports it (wall); the same load alone "
                f"(`bench/hotpath --load-only`, one core): "
                + (f"{S['load_own_cpu_s'] * 1e3:,.0f} ms CPU, {S['load_own_wall_s'] * 1e3:,.0f} ms wall "
                   f"for the load; " if S.get("load_own_cpu_s") is not None else "")
                + f"{S.get('load_cpu_s', 0) * 1e3:,.0f} ms CPU, {S.get('load_wall_s', 0) * 1e3:,.0f} ms "
                f"wall for the whole process (exec, dynamic linking and exit included).")
            add(f"- Reload ({{\"op\":\"reload\"}} round trip): {S.get('reload_s', 0) * 1e3:,.0f} ms; "
                f"the reloaded model's load {fmt(S.get('reload_load_ms'))} ms.")
            add(f"- RSS: {S.get('rss_idle_kb', 0) / 1024:.1f} MiB idle after start; at most "
                f"{S.get('rss_serving_max_kb', 0) / 1024:.1f} MiB during the load runs (sampled after "
                f"each); {S.get('rss_after_reload_kb', 0) / 1024:.1f} MiB after {self.reps} reloads. "
                f"Peak (VmHWM): {S.get('rss_hwm_kb', 0) / 1024:.1f} MiB over start-up and the load "
                f"runs, {S.get('rss_hwm_after_reload_kb', 0) / 1024:.1f} MiB once a reload has held the "
                f"old and the new model at once.")
            add("")
        add("## Targets")
        add("")
        for line in self.targets():
            add(f"- {line}")
        add("")
        if self.failures:
            add("## Failures")
            add("")
            for f in self.failures:
                add(f"- {f}")
            add("")
        add(f"Run time {time.time() - self.t_start:.0f} s.")
        return "\n".join(L) + "\n"

    @staticmethod
    def offline_base(D):
        """The themectl row the peers are compared with: TSV out (the same
        tags as JSON; fastText and liblinear print labels, not JSON), from
        plain text where there is a plain-text row (they read no JSON)."""
        for k in ("themectl_blocks", "themectl_lines"):
            if D.get(k):
                return k
        return "themectl"

    def targets(self):
        out = []
        R = self.r

        def fmt0(x):
            return f"{x:,.0f}"

        def verdict(ok):
            return "met" if ok else "NOT met"
        for ds, name in (("thuc", "THUCNews"), ("dev", "domain")):
            D = R.get(ds, {})
            t = D.get(self.offline_base(D), {}).get("pps_cpu")
            s = D.get("svm_predict", {}).get("pps_cpu")
            ll = D.get("liblinear", {}).get("pps_cpu")
            ft = D.get("fasttext", {}).get("pps_cpu")
            if t and s:
                out.append(f"{name}: themectl ≥ 100× svm-predict: {t / s:,.0f}× — {verdict(t / s >= 100)}")
            if t and ll and ft:
                best = max(ll, ft)
                out.append(f"{name}: themectl ≥ 1.5× the faster of liblinear-predict and fasttext: "
                           f"{t / best:.2f}× — {verdict(t / best >= 1.5)}")
        S = R.get("serving", {})
        off = R.get("dev", {}).get("themectl_single", {}).get("pps_cpu")
        uni = [o for o in S.get("matrix", []) if o["transport"] == "unix" and o["proto"] == "jsonl"]
        if off and uni:
            best = max(uni, key=lambda o: o["pps_per_daemon_cpu"])
            f = best["pps_per_daemon_cpu"] / off
            out.append(f"daemon over the unix socket ≥ 80% of offline throughput per core: "
                       f"{f * 100:.0f}% ({best['pps_per_daemon_cpu']:,.0f} vs {off:,.0f} passages per "
                       f"CPU-s, single passages, {best['conns']} connections) — {verdict(f >= 0.8)}")
        W = S.get("workers", {})
        if W.get(1) and W.get(2):
            f = W[2]["pps"] / W[1]["pps"]
            out.append(f"2 workers ≥ 1.6× one worker: {f:.2f}× — {verdict(f >= 1.6)}")
        def runs(o):
            r = o.get("p99_runs_us")
            return f" (median of {', '.join(f'{x / 1000:.2f}' for x in r)})" if r and len(r) > 1 else ""
        pin = {True: "worker loops pinned one per CPU", False: "worker loops not pinned"}
        for suffix, who in (("", f"the default daemon ({pin.get(S.get('pinned'), 'pinning not read')}), "
                                 "the generator at its priority, both on the same 2 CPUs"),
                            ("_unpinned", "the same, the worker loops not pinned (--cpu-affinity none)"),
                            ("_yield", f"the generator at nice {YIELD_NICE}, yielding the CPUs to "
                                       "the daemon as a client on CPUs of its own would")):
            parts = []
            for key, what in (("rate_half_open", "the open-loop saturation"),
                              ("rate_half", "the pipelined closed-loop saturation"),
                              ("rate_half_open_w1", "the open-loop saturation of --workers 1")):
                o = S.get(key + suffix)
                if o:
                    parts.append(f"{o['p99_us'] / 1000:.2f} ms{runs(o)} at half {what} "
                                 f"({fmt0(o['rate'])}/s) — {verdict(o['p99_us'] <= 1000)}")
            if parts:
                out.append(f"single-passage p99 ≤ 1 ms at half the saturating load, {who}: "
                           + "; ".join(parts))
        floor = [(S.get(k + "_floor"), S.get(k), what) for k, what in
                 (("rate_half_open", "the open-loop saturation"),
                  ("rate_half", "the pipelined closed-loop saturation"))]
        floor = [f"{f['p99_us'] / 1000:.2f} ms{runs(f)} at half {what} ({fmt0(f['rate'])}/s; the "
                 f"default daemon's p99 {t['p99_us'] / f['p99_us']:.1f}× that)"
                 for f, t, what in floor if f and t and f["p99_us"] > 0]
        if floor:
            out.append("for scale, not a target: p99 of bench/floord (the daemon's serving shape, "
                       "canned answers, no parsing or classification) at the same rates, interleaved: "
                       + "; ".join(floor))
        if S.get("rss_serving_max_kb"):
            mib = S["rss_serving_max_kb"] / 1024
            small = S.get("rss_serving_max_small_kb", 0) / 1024
            hwm = S.get("rss_hwm_kb", 0) / 1024
            out.append(f"RSS ≤ 64 MiB serving the default model: {small:.1f} MiB at most over the "
                       f"connection matrix and documents of up to 100 passages — {verdict(small <= 64)}; "
                       f"{mib:.1f} MiB with 1,000-passage documents (512 of them in flight) — "
                       f"{verdict(mib <= 64)} (VmHWM {hwm:.1f} MiB)")
        if S.get("load_ms") is not None:
            own = S.get("load_own_cpu_s")
            out.append(f"model load ≤ 100 ms: {S['load_ms']:.0f} ms wall as the daemon reports it — "
                       f"{verdict(S['load_ms'] <= 100)}; "
                       + (f"{own * 1e3:.0f} ms CPU for the load alone on one core — "
                          f"{verdict(own <= 0.1)}; " if own is not None else "")
                       + f"{S.get('load_cpu_s', 0) * 1e3:.0f} ms CPU for a whole load-only process")
        tr = R.get("thuc", {})
        if tr.get("train_themectl") and tr.get("train_svm"):
            a, b = tr["train_themectl"]["cpu"], tr["train_svm"]["cpu"]
            out.append(f"themectl train --multiclass (final fit) no slower than svm-train -t 0: "
                       f"{a:.1f} s vs {b:.1f} s CPU — {verdict(a <= b)}")
        mm = R.get("train", {}).get("make_model")
        if mm:
            out.append(f"`make model` ≤ 60 s on 2 cores: {mm['wall']:.1f} s wall — {verdict(mm['wall'] <= 60)}")
        return out

    def main(self):
        self.r["machine"] = self.machine()
        for path in (self.themectl, self.themed, self.loadgen, self.hotpath, self.floord):
            if not os.access(path, os.X_OK):
                raise SystemExit(f"bench: {path} missing (make bench builds it)")
        self.step("prepare", self.prepare)
        only = set(self.a.only.split(",")) if self.a.only else None
        for name, label, fn in (("thuc", "offline thucnews", self.thuc_offline),
                                ("domain", "offline domain", self.dev_offline),
                                ("serving", "serving", self.serving),
                                ("training", "training", self.training)):
            if not self.failures and (only is None or name in only):
                self.step(label, fn)
        self.r["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        os.makedirs(os.path.dirname(self.a.out), exist_ok=True)
        text = self.report()
        with open(self.a.out, "w", encoding="utf-8") as f:
            f.write(text)
        with open(os.path.splitext(self.a.out)[0] + ".json", "w") as f:
            json.dump(self.r, f, indent=1, default=str)
        sys.stdout.write(text)
        self.log(f"wrote {self.a.out}")
        return 1 if self.failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"))
    ap.add_argument("--shared", default=os.environ.get("SHARED", "../shared"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/latest.md"))
    ap.add_argument("--only", default=None,
                    help="comma-separated parts to run: thuc,domain,serving,training (default: all); "
                         "use with --out elsewhere, latest.md is the whole run")
    a = ap.parse_args()
    if a.only and not set(a.only.split(",")) <= {"thuc", "domain", "serving", "training"}:
        ap.error(f"--only: unknown part in {a.only!r} (thuc, domain, serving, training)")
    sys.exit(Bench(a).main())


if __name__ == "__main__":
    main()
