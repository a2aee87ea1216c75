"""Hot reload: under load, refused bundles, SIGHUP, serialization, auth."""
import os
import shutil
import signal
import subprocess
import tempfile
import threading

from harness import ROOT, THEMECTL, Daemon, check, error_code, model_b_dir, model_dir, plugin_dir


def _labels():
    import json
    out = []
    for d in (model_dir(), model_b_dir()):
        with open(os.path.join(d, "manifest.json")) as f:
            m = json.load(f)
        out.append("%s@%s" % (m["name"], m["version"]))
    return out


def test_reload_under_load_zero_failures():
    label_a, label_b = _labels()
    # bundle B is trained into a temp dir, outside A's models directory
    with Daemon("--allow-any-model-path", tcp=True) as d:
        stop = threading.Event()
        stats = {"ok": 0, "fail": [], "labels": set()}

        def hammer(tcp):
            try:
                with d.jsonl(tcp) as c:
                    i = 0
                    while not stop.is_set():
                        r = c.call({"id": i, "text": "发展集体经济，壮大村级产业。\n抓队伍建设"})
                        if "error" in r or r.get("id") != i:
                            stats["fail"].append(r)
                        else:
                            stats["ok"] += 1
                            stats["labels"].add(r["model"])
                        i += 1
            except Exception as e:  # noqa: BLE001
                stats["fail"].append(repr(e))

        def hammer_http():
            try:
                with d.http() as h:
                    while not stop.is_set():
                        st, _, r = h.request("POST", "/v1/classify", {"text": "开展人居环境整治"})
                        if st != 200:
                            stats["fail"].append(r)
                        else:
                            stats["ok"] += 1
            except Exception as e:  # noqa: BLE001
                stats["fail"].append(repr(e))

        threads = [threading.Thread(target=hammer, args=(False,)), threading.Thread(target=hammer, args=(True,)),
                   threading.Thread(target=hammer_http)]
        for t in threads:
            t.start()
        with d.jsonl() as admin:
            for i in range(20):
                path = model_b_dir() if i % 2 == 0 else model_dir()
                r = admin.call({"op": "reload", "id": i, "path": path})
                check(r == {"id": i, "reloaded": True, "model": label_b if i % 2 == 0 else label_a}, r)
                h = admin.call({"op": "health"})
                check(h["model"] == r["model"], (h, r))
        stop.set()
        for t in threads:
            t.join()
        check(not stats["fail"], stats["fail"][:5])
        check(stats["ok"] > 20, stats["ok"])
        m = d.request("GET", "/metrics")[2]
        check('themed_reloads_total{result="ok"} 20' in m, m)


def _train_into(out, version, c):
    cmd = [THEMECTL, "train", "--data", os.path.join(ROOT, "tests", "fixtures", "labelled-train.jsonl"),
           "--out", out, "--name", "retrained", "--version", version, "--quiet", "--folds", "1", "--c", c]
    r = subprocess.run(cmd, env=dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir()),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check(r.returncode == 0, r.stdout.decode("utf-8", "replace"))


def test_reload_racing_retrain_in_place():
    """themectl train --out into the very bundle the daemon serves, again and
    again, while path-less reloads run back to back: every reload succeeds
    and serves one whole version. The versions differ in their SVM files and
    thresholds (C 1 and 8), so an answer is compared with that version's
    own answer: a manifest of one with the weights of the other would score
    differently."""
    tmp = tempfile.mkdtemp(prefix="themed-retrain-")
    try:
        served = os.path.join(tmp, "models", "bundle")
        os.makedirs(os.path.dirname(served))
        versions = {"1.0.0": "1", "2.0.0": "8"}
        _train_into(served, "1.0.0", "1")
        text = {"text": "发展集体经济，壮大村级产业。\n开展人居环境整治，建设美丽乡村。"}
        with Daemon(model=served) as d:
            ref = {}
            with d.jsonl() as c:
                for v in ("2.0.0", "1.0.0"):  # each version's answer, the bundle on its own
                    _train_into(served, v, versions[v])
                    r = c.call({"op": "reload"})
                    check(r.get("model") == "retrained@" + v, r)
                    ref[r["model"]] = c.call(text)["passages"]
                check(ref["retrained@1.0.0"] != ref["retrained@2.0.0"], ref)

                done = threading.Event()
                errors = []

                def retrain():
                    try:
                        for i in range(6):
                            v = "2.0.0" if i % 2 == 0 else "1.0.0"
                            _train_into(served, v, versions[v])
                    except Exception as e:  # noqa: BLE001
                        errors.append(repr(e))
                    finally:
                        done.set()

                t = threading.Thread(target=retrain)
                t.start()
                seen = {}
                while not done.is_set():
                    r = c.call({"op": "reload"})
                    if r.get("reloaded") is not True or r.get("model") not in ref:
                        errors.append(r)
                        continue
                    got = c.call(text)
                    if got.get("model") != r["model"] or got.get("passages") != ref[r["model"]]:
                        errors.append(("mixed", r["model"], got))
                    seen[r["model"]] = seen.get(r["model"], 0) + 1
                t.join()
                check(not errors, errors[:3])
                check(len(seen) == 2, seen)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_bad_bundle_refused_old_keeps_serving():
    label_a, _ = _labels()
    # the bad bundles live in the daemon's temp dir, outside the models directory
    with Daemon("--allow-any-model-path") as d:
        bad = os.path.join(d.dir, "bad-bundle")
        shutil.copytree(model_dir(), bad)
        svm = os.path.join(bad, "svm")
        for f in os.listdir(svm):  # corrupt every libsvm file
            with open(os.path.join(svm, f), "w") as fh:
                fh.write("svm_type c_svc\nkernel_type linear\nnr_class 2\ngarbage\n")
        r = d.call({"op": "reload", "id": "r", "path": bad})
        check(error_code(r) == "reload_failed" and r["id"] == "r", r)
        check(r["error"]["message"], "the reason is given")
        r = d.call({"id": 1, "text": "发展集体经济"})
        check(r["model"] == label_a and "passages" in r, r)
        # over HTTP: 500 reload_failed with the reason; a missing manifest
        st, _, body = d.request("POST", "/v1/reload", {"path": os.path.join(d.dir, "nothing-here")})
        check(st == 500 and error_code(body) == "reload_failed" and "nothing-here" in body["error"]["message"], body)
        check(d.request("GET", "/v1/health")[2]["model"] == label_a)
        # wrong type for path
        st, _, body = d.request("POST", "/v1/reload", {"path": 5})
        check(st == 400 and error_code(body) == "invalid_request", body)
        check("reload of %s failed" % bad in d.log(), d.log())
        # a good reload over HTTP without a body reloads the current bundle
        st, _, body = d.request("POST", "/v1/reload")
        check(st == 200 and body == {"reloaded": True, "model": label_a}, body)
        s = d.call({"op": "stats"})["stats"]
        check(s["reloads"] == {"ok": 1, "failed": 2}, s)


def test_sighup_reload_and_notify():
    label_a, _ = _labels()
    with Daemon() as d:
        d.kill(signal.SIGHUP)
        note = d.wait_note("RELOADING=1", 10)
        check("MONOTONIC_USEC=" in note, note)
        note = d.wait_note("READY=1", 10)
        check("STATUS=serving " + label_a in note, note)
        check("SIGHUP" in d.log() and "reload: now serving" in d.log(), d.log())
        check(d.call({"text": "发展集体经济"})["model"] == label_a)


def test_concurrent_reloads_are_serialized():
    label_a, label_b = _labels()
    with Daemon("--allow-any-model-path") as d:  # B is outside A's models directory
        clients = [d.jsonl() for _ in range(6)]
        for i, c in enumerate(clients):
            c.send({"op": "reload", "id": i, "path": model_b_dir() if i % 2 else model_dir()})
        res = [c.recv_line() for c in clients]
        for c in clients:
            c.close()
        check(all(r.get("reloaded") is True for r in res), res)
        check(d.log().count("reload: loading") == 6, d.log())
        # a reload never overlaps another: each "loading" is followed by its result
        lines = [l for l in d.log().splitlines() if "reload: loading" in l or "reload: now serving" in l]
        check(all(("loading" in a) != ("loading" in b) for a, b in zip(lines, lines[1:])), lines)
        check(d.call({"op": "health"})["model"] in (label_a, label_b))


def test_admin_token_over_tcp():
    with Daemon("--admin-token", "s3cret", tcp=True) as d:
        r = d.call({"op": "reload"}, tcp=True)
        check(error_code(r) == "unauthorized", r)
        r = d.call({"op": "reload", "token": "wrong"}, tcp=True)
        check(error_code(r) == "unauthorized", r)
        r = d.call({"op": "reload", "token": "s3cret"}, tcp=True)
        check(r.get("reloaded") is True, r)
        st, _, body = d.request("POST", "/v1/reload", tcp=True)
        check(st == 401 and error_code(body) == "unauthorized", body)
        st, _, body = d.request("POST", "/v1/reload", headers={"Authorization": "Bearer s3cret"}, tcp=True)
        check(st == 200 and body["reloaded"] is True, body)
        # the unix socket is guarded by its file mode instead
        check(d.call({"op": "reload"}).get("reloaded") is True)
        check(d.call({"op": "health"}, tcp=True)["status"] == "ok")
