"""themectl as a client of the real daemon: health/stats/model/reload,
classify --socket against the offline classify, stream (order, resume,
errors, reconnect), and the one-line failures."""
import json
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from harness import (ROOT, THEMECTL, Daemon, check, model_b_dir, model_dir, plugin_dir, wait)

SUMMARY = re.compile(r"^stream: (\d+) articles?, (\d+) passages?, (\d+) errors?, [0-9.]+ s \(\d+ articles/s\)$")


def ctl(*args, stdin=None, env=None, timeout=None):
    """Runs themectl; returns (exit code, stdout text, stderr text)."""
    e = dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir())
    e.pop("THEMED_SOCKET", None)
    if env:
        e.update(env)
    r = subprocess.run([THEMECTL] + list(args), input=stdin.encode() if isinstance(stdin, str) else stdin,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, timeout=timeout or wait(120))
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def _passages():
    out = []
    for name in ("classify-corpus.jsonl", "labelled-train.jsonl"):
        with open(os.path.join(ROOT, "tests", "fixtures", name), encoding="utf-8") as f:
            out += [json.loads(l)["text"] for l in f if l.strip()]
    return out


def make_articles(n, seed=7):
    """n synthetic articles: 1..8 fixture passages each, ids art-0000..."""
    rng = random.Random(seed)
    pool = _passages()
    return [{"id": "art-%04d" % i, "text": "\n".join(rng.choice(pool) for _ in range(rng.randint(1, 8)))}
            for i in range(n)]


def write_jsonl(path, objs):
    with open(path, "w", encoding="utf-8") as f:
        for o in objs:
            f.write(json.dumps(o, ensure_ascii=False) + "\n")


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def one_error_line(err):
    lines = err.splitlines()
    check(len(lines) == 1 and lines[0].startswith("themectl: "), "want one error line, got %r" % err)
    return lines[0]


# ------------------------------------------------------------ one-shot commands

def test_client_health_stats_model():
    with Daemon() as d:
        rc, out, err = ctl("health", "--socket", d.sock)
        check(rc == 0 and err == "", (rc, err))
        h = json.loads(out)
        check(h["status"] == "ok" and "@" in h["model"], h)
        ctl("classify", "--socket", d.sock, stdin="发展集体经济，壮大村级产业。")
        rc, out, err = ctl("stats", "--socket", d.sock)
        check(rc == 0, err)
        st = json.loads(out)["stats"]
        check(st["requests"] >= 2 and st["passages"] >= 1, st)
        # printed as the daemon sent it: whole seconds, not 5.0561600000000002
        check(re.search(r'"uptime_s": ?\d+[,}]', out) and type(st["uptime_s"]) is int, out)
        rc, out, err = ctl("model", "--socket", d.sock, "--pretty")
        check(rc == 0 and out.startswith("{\n"), out)
        m = json.loads(out)["model"]
        check("%s@%s" % (m["name"], m["version"]) == h["model"], (m, h))
        # $THEMED_SOCKET is the default endpoint
        rc, out, _ = ctl("health", env={"THEMED_SOCKET": d.sock})
        check(rc == 0 and json.loads(out)["status"] == "ok", out)


def test_client_reload_and_refusal():
    # the refused bundle is made in /tmp, outside the models directory
    with Daemon("--allow-any-model-path") as d:
        with open(os.path.join(model_b_dir(), "manifest.json")) as f:
            mb = json.load(f)
        label_b = "%s@%s" % (mb["name"], mb["version"])
        rc, out, err = ctl("reload", "--socket", d.sock, "--path", model_b_dir())
        check(rc == 0, err)
        r = json.loads(out)
        check(r["reloaded"] is True and r["model"] == label_b, r)
        check(json.loads(ctl("health", "--socket", d.sock)[1])["model"] == label_b)
        # a refused bundle: exit 1, the daemon's reason on one line, the model keeps serving
        bad = tempfile.mkdtemp(prefix="themed-it-bad-")
        rc, out, err = ctl("reload", "--socket", d.sock, "--path", bad)
        line = one_error_line(err)
        check(rc == 1 and out == "", (rc, out))
        check(line.startswith("themectl: reload failed: ") and bad in line and "reload_failed" in line, line)
        check(json.loads(ctl("health", "--socket", d.sock)[1])["model"] == label_b)
        os.rmdir(bad)


def test_client_reload_token_over_tcp():
    with Daemon("--admin-token", "s3cret-token", tcp=True) as d:
        addr = "127.0.0.1:%d" % d.port
        rc, _, err = ctl("reload", "--connect", addr)
        check(rc == 1 and "unauthorized" in one_error_line(err), err)
        tok = os.path.join(d.dir, "token")
        with open(tok, "w") as f:
            f.write("s3cret-token\n")
        rc, out, err = ctl("reload", "--connect", addr, "--token-file", tok)
        check(rc == 0 and json.loads(out)["reloaded"] is True, (rc, out, err))
        rc, out, _ = ctl("health", "--connect", addr)
        check(rc == 0 and json.loads(out)["status"] == "ok", out)


def test_client_unreachable_one_line():
    missing = "/nonexistent-themed-dir/themed.sock"
    rc, out, err = ctl("health", "--socket", missing)
    check(rc == 1 and out == "", (rc, out))
    check(one_error_line(err) == "themectl: cannot connect to unix:%s: No such file or directory" % missing, err)
    # a closed TCP port
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rc, out, err = ctl("stats", "--connect", "127.0.0.1:%d" % port)
    check(rc == 1 and one_error_line(err) ==
          "themectl: cannot connect to tcp:127.0.0.1:%d: Connection refused" % port, err)
    # stream: one line too, and an earlier output is not truncated
    tmp = tempfile.mkdtemp(prefix="themed-it-ctl-")
    out_path = os.path.join(tmp, "out.jsonl")
    with open(out_path, "w") as f:
        f.write('{"id":"keep"}\n')
    rc, _, err = ctl("stream", "--socket", missing, "--out", out_path, stdin='{"id":1,"text":"x"}\n')
    check(rc == 1 and "cannot connect to unix:" + missing in one_error_line(err), err)
    check(read_lines(out_path) == ['{"id":"keep"}'], "output kept")
    rc, _, err = ctl("classify", "--socket", missing, stdin="x")
    check(rc == 1 and "cannot connect" in one_error_line(err), err)


def test_client_timeout_when_the_daemon_never_answers():
    tmp = tempfile.mkdtemp(prefix="themed-it-mute-")
    path = os.path.join(tmp, "mute.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    held = []
    t = threading.Thread(target=lambda: held.append(srv.accept()), daemon=True)
    t.start()
    t0 = time.monotonic()
    rc, _, err = ctl("health", "--socket", path, "--timeout", "0.5")
    took = time.monotonic() - t0
    check(rc == 1 and "no response from unix:%s within 0.5 s" % path in one_error_line(err), err)
    check(took < wait(5), took)
    srv.close()


# ------------------------------------------------------------ classify --socket

def test_classify_socket_matches_offline():
    tmp = tempfile.mkdtemp(prefix="themed-it-ctl-")
    arts = make_articles(6, seed=3)
    files = []
    for a in arts:
        p = os.path.join(tmp, a["id"] + ".txt")
        with open(p, "w", encoding="utf-8") as f:
            f.write(a["text"] + "\n")
        files.append(p)
    jsonl = os.path.join(tmp, "arts.jsonl")
    write_jsonl(jsonl, arts)
    offline = ["classify", "--model", model_dir(), "--plugins", plugin_dir()]
    with Daemon() as d:
        for opts in ([], ["--explain"], ["--text", "--top-k", "1"], ["--threshold", "0.35"]):
            rc1, off, err1 = ctl(*(offline + opts + files))
            rc2, on, err2 = ctl(*(["classify", "--socket", d.sock] + opts + files))
            check(rc1 == 0 and rc2 == 0, (err1, err2))
            check(len(off.splitlines()) == len(files), off)
            check(on == off, "classify --socket %s differs from offline:\n%s\n%s" % (opts, on[:400], off[:400]))
        # ids are the files' base names
        check([json.loads(l)["id"] for l in on.splitlines()] == [a["id"] + ".txt" for a in arts])
        # --jsonl (file and stdin), and a whole article on stdin
        rc, off, _ = ctl(*(offline + ["--jsonl", jsonl]))
        check(rc == 0 and ctl("classify", "--socket", d.sock, "--jsonl", jsonl)[1] == off)
        with open(jsonl, encoding="utf-8") as f:
            data = f.read()
        check(ctl("classify", "--socket", d.sock, "--jsonl", stdin=data)[1] == off)
        rc, off, _ = ctl(*offline, stdin=arts[0]["text"])
        rc2, on, _ = ctl("classify", "--socket", d.sock, stdin=arts[0]["text"])
        check(rc == 0 and rc2 == 0 and on == off and json.loads(on)["id"] == "stdin", (on, off))
        # an error response: the document named on stderr, exit 1, the others printed
        bad = os.path.join(tmp, "bad.txt")
        with open(bad, "wb") as f:
            f.write(b"\xff\xfe broken\n")
        rc, out, err = ctl("classify", "--socket", d.sock, files[0], bad, files[1])
        check(rc == 1 and len(out.splitlines()) == 2, (rc, out))
        check("bad.txt" in one_error_line(err) and "UTF-8" in err, err)


MIXED_JSONL = [
    '{"id":"a","text":"发展集体经济，壮大村级产业。"}',
    '{"id":"b","text":"加强生态保护，整治人居环境"}',
    '{"id":"c","text":"broken',                                  # not JSON
    '{"id":"d"}',                                                 # no text
    '{"id":{"x":1},"text":"抓队伍建设"}',                          # id not a scalar
    '{"id":7,"text":"开展人居环境整治"}',                          # a number id
    '',
    '{"text":"推进移风易俗"}',                                     # no id
    '{"id":"e","passages":["乡村振兴",3]}',                        # a passage not a string
    '[1,2]',                                                      # not an object
    '{"id":"f","passages":["乡村振兴","产业兴旺"],"threshold":7}',  # per-line options are not read
    '{"id":true,"text":"培育新型职业农民","passages":5}',           # text wins over passages
    '{"id":"g","text":"最后一行：壮大村集体经济"}',
]


def test_classify_jsonl_offline_matches_socket_with_bad_lines():
    """Offline classify --jsonl answers every line as --socket does: the same
    results on stdout, the same error lines on stderr (each failed line
    named, the lines after it still classified), the same exit status."""
    tmp = tempfile.mkdtemp(prefix="themed-it-ctl-")
    try:
        path = os.path.join(tmp, "mixed.jsonl")
        data = "\n".join(MIXED_JSONL) + "\r\n"
        with open(path, "w", encoding="utf-8") as f:
            f.write(data)
        offline = ["classify", "--model", model_dir(), "--plugins", plugin_dir()]
        good = ["a", "b", 7, None, "f", True, "g"]
        with Daemon() as d:
            for opts in ([], ["--text", "--top-k", "1"]):
                for args, stdin in (([path], None), ([], data)):
                    r_off = ctl(*(offline + opts + ["--jsonl"] + args), stdin=stdin)
                    r_on = ctl(*(["classify", "--socket", d.sock] + opts + ["--jsonl"] + args), stdin=stdin)
                    check(r_off == r_on, "offline and --socket differ (%s %s):\n%r\n%r" % (opts, args, r_off, r_on))
                    rc, out, err = r_off
                    check(rc == 1, (rc, err))
                    res = [json.loads(l) for l in out.splitlines()]
                    check([r.get("id") for r in res] == good and all("passages" in r for r in res), out[:300])
                    check("id" not in res[3], "a line without id gets a result without one: %r" % res[3])
                    name = path if args else "stdin"
                    want = ["themectl: classify: %s:3: " % name,
                            "themectl: classify: d: %s:4: expected a string \"text\"" % name,
                            'themectl: classify: {"x":1}: id: expected a JSON scalar (invalid_request)',
                            "themectl: classify: e: passages[1]: expected a string (invalid_request)",
                            "themectl: classify: %s:10: not a JSON object (invalid_json)" % name]
                    lines = err.splitlines()
                    check(len(lines) == len(want) and all(l.startswith(w) for l, w in zip(lines, want)), err)
            # whole files: one that fails does not stop the others
            files = []
            for i, t in enumerate((b"\xe5\x8f\x91\xe5\xb1\x95\n", b"\xff\xfe broken\n", "抓队伍建设".encode())):
                files.append(os.path.join(tmp, "doc%d.txt" % i))
                with open(files[-1], "wb") as f:
                    f.write(t)
            r_off = ctl(*(offline + files))
            r_on = ctl(*(["classify", "--socket", d.sock] + files))
            check(r_off == r_on and r_off[0] == 1 and len(r_off[1].splitlines()) == 2, (r_off, r_on))
            check(one_error_line(r_off[2]).startswith("themectl: classify: doc1.txt: ") and
                  "(invalid_utf8)" in r_off[2], r_off[2])
        # --lines (offline only): the line that fails is named, the rest classified
        rc, out, err = ctl(*(offline + ["--lines"]), stdin=b"ok\n\xff\nfine\n")
        check(rc == 1 and [json.loads(l)["id"] for l in out.splitlines()] == ["1", "3"], (rc, out))
        check("stdin line 2" in one_error_line(err), err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_classify_lines_and_tsv_agree_with_json():
    """--lines: one document per line, its line number as id; --format tsv
    carries the same tags and rounded scores as the JSON output."""
    offline = ["classify", "--model", model_dir(), "--plugins", plugin_dir()]
    pool = _passages()[:40]
    text = "\n".join(pool[:10]) + "\n\n  \n" + "\n".join(pool[10:]) + "\r\n"
    rc, js, err = ctl(*(offline + ["--lines"]), stdin=text)
    check(rc == 0, err)
    res = [json.loads(l) for l in js.splitlines()]
    ids = [str(i + 1) for i in range(10)] + [str(i + 13) for i in range(30)]
    check([r["id"] for r in res] == ids, "blank lines skipped, ids are line numbers: %r" % [r["id"] for r in res])
    # each line is classified as that line alone would be
    rc, one, _ = ctl(*offline, stdin=pool[3])
    check(rc == 0 and json.loads(one)["passages"] == res[3]["passages"], (one, res[3]))
    rc, tsv, err = ctl(*(offline + ["--lines", "--format", "tsv"]), stdin=text)
    check(rc == 0, err)
    rows = [l.split("\t") for l in tsv.splitlines()]
    themes = rows[0][3:]
    check(rows[0][:3] == ["id", "passage", "themes"] and len(themes) == 6, rows[0])
    want = []
    for r in res:
        for p in r["passages"]:
            tagged = [t["theme"] for t in p["themes"]]
            want.append((r["id"], str(p["index"]), ",".join(x for x in themes if x in tagged)))
    got = [tuple(x[:3]) for x in rows[1:]]
    check(got == want, "tsv tags equal the JSON tags:\n%r\n%r" % (got[:5], want[:5]))
    for x in rows[1:]:
        check(len(x) == 3 + len(themes) and all(re.fullmatch(r"[01]\.\d{4}", v) for v in x[3:]), x)
    # the JSON scores of tagged themes are the TSV columns
    i = 1
    for r in res:
        for p in r["passages"]:
            for t in p["themes"]:
                check(abs(float(rows[i][3 + themes.index(t["theme"])]) - t["score"]) < 1e-9, (rows[i], t))
            i += 1
    # ids with tabs stay in one column (--jsonl input, TSV output)
    rc, tsv, err = ctl(*(offline + ["--jsonl", "--format", "tsv"]),
                       stdin=json.dumps({"id": "a\tb\\c", "text": pool[0]}) + "\n")
    check(rc == 0 and tsv.splitlines()[1].split("\t")[0] == "a\\tb\\\\c", tsv)
    # what cannot be combined, and what is not UTF-8, fails with one line
    for bad in (["--format", "xml"], ["--format", "tsv", "--explain"], ["--lines", "--jsonl"]):
        rc, _, err = ctl(*(offline + bad), stdin="x\n")
        check(rc == 2 and one_error_line(err), (bad, rc, err))
    rc, out, err = ctl(*(offline + ["--lines"]), stdin=b"ok\n\xff\n")
    check(rc == 1 and "stdin line 2" in one_error_line(err) and "UTF-8" in err, err)
    rc, _, err = ctl("classify", "--socket", "/nonexistent.sock", "--lines", stdin="x\n")
    check(rc == 2 and "offline" in one_error_line(err), err)


def test_classify_blocks():
    """--blocks: plain-text articles separated by blank lines, each classified
    as that article alone (the same passages, headings and context), its id
    the line number of its first line."""
    offline = ["classify", "--model", model_dir(), "--plugins", plugin_dir()]
    pool = [p.strip() for p in _passages()[:12]]
    heads = ["一、抓队伍建设", "二、发展集体经济", "三、整治人居环境", "四、推进移风易俗"]
    texts = [heads[i] + "\n" + "\n".join(pool[3 * i:3 * i + 3]) for i in range(4)]
    check(all("\n\n" not in t and t.count("\n") >= 2 for t in texts), "fixture articles")
    # blank separators of any length, with spaces, CRLF inside one article
    data = "\n\n".join(texts[:2]) + "\n \t\n\n" + texts[2].replace("\n", "\r\n") + "\n\n" + texts[3]
    rc, out, err = ctl(*(offline + ["--blocks"]), stdin=data)
    check(rc == 0, err)
    res = [json.loads(l) for l in out.splitlines()]
    check(len(res) == 4, out)
    first = [1, texts[0].count("\n") + 3]
    first.append(first[1] + texts[1].count("\n") + 3)  # "\n \\t\n\n": two lines between
    first.append(first[2] + texts[2].count("\n") + 2)
    check([r["id"] for r in res] == [str(x) for x in first], [r["id"] for r in res])
    texts[2] = texts[2].replace("\n", "\r\n")  # as it was sent: offsets count the CRs
    for t, r in zip(texts, res):
        rc, one, _ = ctl(*offline, stdin=t)
        check(rc == 0 and json.loads(one)["passages"] == r["passages"], (one[:200], r))
    check(len(res[0]["passages"]) > 2, res[0])
    # TSV rows carry the same tags; an empty input is no document
    rc, tsv, err = ctl(*(offline + ["--blocks", "--format", "tsv"]), stdin=data)
    check(rc == 0 and len(tsv.splitlines()) == 1 + sum(len(r["passages"]) for r in res), err)
    rc, out, err = ctl(*(offline + ["--blocks"]), stdin="\n \n")
    check(rc == 0 and out == "", (out, err))
    rc, _, err = ctl(*(offline + ["--blocks", "--lines"]), stdin="x\n")
    check(rc == 2 and "exclude" in one_error_line(err), err)
    rc, _, err = ctl("classify", "--socket", "/nonexistent.sock", "--blocks", stdin="x\n")
    check(rc == 2 and "offline" in one_error_line(err), err)


def test_train_norm_option():
    """themectl train --norm: l2-tokens by default, l2 on request (the bundles
    before rural-themes 1.3.0), written to the manifest; both classify, and a
    bad value is a usage error."""
    tmp = tempfile.mkdtemp(prefix="td-norm-")
    try:
        base = ["train", "--data", os.path.join(ROOT, "tests", "fixtures", "labelled-train.jsonl"),
                "--quiet", "--folds", "1", "--c", "1"]
        pool = _passages()[:5]
        outs = {}
        for norm in (None, "l2", "l2-tokens"):
            out = os.path.join(tmp, norm or "default")
            rc, _, err = ctl(*(base + ["--out", out] + (["--norm", norm] if norm else [])))
            check(rc == 0, err)
            with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
                got = json.load(f)["features"]["norm"]
            check(got == (norm or "l2-tokens"), (norm, got))
            rc, res, err = ctl("classify", "--model", out, "--plugins", plugin_dir(), "--lines",
                               stdin="\n".join(pool) + "\n")
            check(rc == 0 and len(res.splitlines()) == 5, err)
            outs[norm] = [json.loads(l)["passages"] for l in res.splitlines()]
        check(outs[None] == outs["l2-tokens"], "the default is l2-tokens")
        rc, _, err = ctl(*(base + ["--out", os.path.join(tmp, "bad"), "--norm", "l1"]))
        check(rc == 2 and "--norm" in one_error_line(err), err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------ stream

def _stream_ok(rc, err, n, errors=0):
    check(rc == (3 if errors else 0), "exit %d: %s" % (rc, err))
    m = SUMMARY.match(err.splitlines()[-1])
    check(m, "summary line: %r" % err)
    check(int(m.group(1)) == n and int(m.group(3)) == errors, err)
    return int(m.group(2))


def test_stream_500_in_order_equals_offline():
    tmp = tempfile.mkdtemp(prefix="themed-it-stream-")
    arts = make_articles(500)
    inp = os.path.join(tmp, "in.jsonl")
    write_jsonl(inp, arts)
    out = os.path.join(tmp, "out.jsonl")
    with Daemon() as d:
        rc, _, err = ctl("stream", "--socket", d.sock, "--in", inp, "--out", out)
        npass = _stream_ok(rc, err, 500)
        lines = read_lines(out)
        res = [json.loads(l) for l in lines]
        check([r["id"] for r in res] == [a["id"] for a in arts], "every id, in input order")
        check(all("error" not in r for r in res))
        check(npass == sum(r["summary"]["passages"] for r in res), (npass, err))
        # the same lines as the offline classifier
        rc, off, _ = ctl("classify", "--model", model_dir(), "--plugins", plugin_dir(), "--jsonl", inp)
        check(rc == 0 and off.splitlines() == lines, "stream output equals offline classify --jsonl")
        # stdin -> stdout, one request at a time: the same bytes
        with open(inp, encoding="utf-8") as f:
            rc, so, err = ctl("stream", "--socket", d.sock, "--inflight", "1", stdin=f.read())
        _stream_ok(rc, err, 500)
        check(so.splitlines() == lines)


def test_stream_resume_after_truncation():
    tmp = tempfile.mkdtemp(prefix="themed-it-stream-")
    arts = make_articles(400, seed=11)
    inp = os.path.join(tmp, "in.jsonl")
    write_jsonl(inp, arts)
    out = os.path.join(tmp, "out.jsonl")
    with Daemon() as d:
        rc, _, err = ctl("stream", "--socket", d.sock, "--in", inp, "--out", out)
        _stream_ok(rc, err, 400)
        with open(out, "rb") as f:
            full = f.read()
        # cut half-way, in the middle of a line (an interrupted run)
        cut = len(full) // 2
        check(full[cut - 1:cut] != b"\n")
        with open(out, "wb") as f:
            f.write(full[:cut])
        kept = full[:cut].count(b"\n")
        rc, _, err = ctl("stream", "--socket", d.sock, "--in", inp, "--out", out, "--resume")
        _stream_ok(rc, err, 400 - kept)
        check("skipped %d articles" % kept in err, err)
        with open(out, "rb") as f:
            again = f.read()
        check(again == full, "resumed output equals the uninterrupted one")
        ids = [json.loads(l)["id"] for l in again.decode().splitlines()]
        check(len(ids) == len(set(ids)) == 400, "no duplicates")
        # nothing left to do
        rc, _, err = ctl("stream", "--socket", d.sock, "--in", inp, "--out", out, "--resume")
        _stream_ok(rc, err, 0)
        with open(out, "rb") as f:
            check(f.read() == full)
        rc, _, err = ctl("stream", "--socket", d.sock, "--resume")
        check(rc == 2 and "--out" in err, err)


def _resume_input(tmp):
    """Lines --resume cannot key by id: no id, repeated ids (with different
    texts), not JSON, not an object, a blank line between."""
    pool = _passages()
    lines = [json.dumps({"id": "a", "text": pool[0]}, ensure_ascii=False),
             json.dumps({"text": pool[1]}, ensure_ascii=False),
             "not json at all",
             json.dumps({"id": "a", "text": pool[2]}, ensure_ascii=False),
             "",
             json.dumps({"text": pool[3]}, ensure_ascii=False),
             "[1,2]",
             json.dumps({"id": 7, "text": pool[4]}, ensure_ascii=False),
             json.dumps({"id": "a", "text": pool[5]}, ensure_ascii=False),
             json.dumps({"text": pool[6]}, ensure_ascii=False)]
    inp = os.path.join(tmp, "in.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return inp, sum(1 for l in lines if l)


def test_stream_resume_idempotent_without_unique_ids():
    """--resume on a finished job appends nothing, whatever the ids (none,
    repeated, or a line that is not JSON)."""
    tmp = tempfile.mkdtemp(prefix="themed-it-stream-")
    inp, n = _resume_input(tmp)
    out = os.path.join(tmp, "out.jsonl")
    with Daemon() as d:
        rc, _, err = ctl("stream", "--socket", d.sock, "--in", inp, "--out", out, "--resume")
        _stream_ok(rc, err, n, errors=2)
        with open(out, "rb") as f:
            full = f.read()
        check(full.count(b"\n") == n, "one answer per input line: %r" % full)
        rc, plain, _ = ctl("stream", "--socket", d.sock, "--in", inp)
        check(plain.encode() == full, "--resume to a new file writes what a plain run writes")
        for _ in range(3):
            rc, _, err = ctl("stream", "--socket", d.sock, "--in", inp, "--out", out, "--resume")
            _stream_ok(rc, err, 0)
            check("skipped %d articles" % n in err, err)
            with open(out, "rb") as f:
                check(f.read() == full, "a rerun on a finished job appends nothing")


def test_stream_resume_interrupted_answers_each_line_once():
    """Cut after every possible line (and mid-line): the resumed output is
    the uninterrupted one, each input line answered once, in order; a line
    whose id repeats an earlier one is not taken as done."""
    tmp = tempfile.mkdtemp(prefix="themed-it-stream-")
    inp, n = _resume_input(tmp)
    out = os.path.join(tmp, "out.jsonl")
    with Daemon() as d:
        rc, _, err = ctl("stream", "--socket", d.sock, "--in", inp, "--out", out)
        _stream_ok(rc, err, n, errors=2)
        with open(out, "rb") as f:
            full = f.read()
        ends = [i + 1 for i, b in enumerate(full) if b == 0x0a]
        for k, end in enumerate([0] + ends[:-1]):
            for cut in (end, end + 5):  # after k lines; and a partial line k+1
                with open(out, "wb") as f:
                    f.write(full[:cut])
                rc, _, err = ctl("stream", "--socket", d.sock, "--in", inp, "--out", out, "--resume")
                _stream_ok(rc, err, n - k, errors=sum(1 for l in full.splitlines()[k:] if b'"error"' in l))
                with open(out, "rb") as f:
                    check(f.read() == full, "cut at byte %d: resumed output differs" % cut)


def test_stream_resume_transient_error_keeps_input_order():
    """A transient error line is answered again in its place: it and the
    lines after it are removed, so the output stays in input order."""
    tmp = tempfile.mkdtemp(prefix="themed-it-stream-")
    inp, n = _resume_input(tmp)
    out = os.path.join(tmp, "out.jsonl")
    with Daemon() as d:
        rc, _, err = ctl("stream", "--socket", d.sock, "--in", inp, "--out", out)
        with open(out, "rb") as f:
            full = f.read()
        lines = full.splitlines(keepends=True)
        lines[3] = b'{"id":"a","error":{"code":"shutting_down","message":"the daemon is shutting down"}}\n'
        with open(out, "wb") as f:
            f.write(b"".join(lines))
        rc, _, err = ctl("stream", "--socket", d.sock, "--in", inp, "--out", out, "--resume")
        _stream_ok(rc, err, n - 3, errors=1)
        check("line 4 of %s is a transient error (shutting_down): it and the %d lines after it removed"
              % (out, n - 4) in err, err)
        with open(out, "rb") as f:
            check(f.read() == full, "resumed output equals the uninterrupted one, in order")


def test_stream_resume_refuses_another_inputs_output():
    """--out made from other input lines is not extended: one error line,
    exit 1, the file as it was."""
    tmp = tempfile.mkdtemp(prefix="themed-it-stream-")
    inp, n = _resume_input(tmp)
    out = os.path.join(tmp, "out.jsonl")
    other = os.path.join(tmp, "other.jsonl")
    write_jsonl(other, [{"id": "x%d" % i, "text": "发展集体经济"} for i in range(3)])
    with Daemon() as d:
        rc, _, err = ctl("stream", "--socket", d.sock, "--in", other, "--out", out)
        _stream_ok(rc, err, 3)
        with open(out, "rb") as f:
            before = f.read()
        rc, _, err = ctl("stream", "--socket", d.sock, "--in", inp, "--out", out, "--resume")
        check(rc == 1 and 'has id "a" but line 1 of %s answers id "x0"' % out in one_error_line(err), (rc, err))
        # an input shorter than the output
        short = os.path.join(tmp, "short.jsonl")
        write_jsonl(short, [{"id": "x0", "text": "发展集体经济"}])
        rc, _, err = ctl("stream", "--socket", d.sock, "--in", short, "--out", out, "--resume")
        check(rc == 1 and "2 more lines than the input has lines" in err, (rc, err))
        with open(out, "rb") as f:
            check(f.read() == before, "output untouched")


def test_stream_error_lines_in_place():
    lines = ['{"id":"a","text":"发展集体经济，壮大村级产业。"}',
             'not json at all',
             '{"id":"b"}',
             '',
             '[1,2]',
             '{"id":7,"text":"开展人居环境整治"}',
             '{"id":"c","text":"抓队伍建设","threshold":5}']
    with Daemon() as d:
        rc, out, err = ctl("stream", "--socket", d.sock, stdin="\n".join(lines) + "\n")
        _stream_ok(rc, err, 6, errors=4)
        res = [json.loads(l) for l in out.splitlines()]
        check(len(res) == 6, out)
        check(res[0]["id"] == "a" and "passages" in res[0], res[0])
        check(res[1]["error"]["code"] == "invalid_json" and "stdin:2" in res[1]["error"]["message"], res[1])
        check(res[2]["id"] == "b" and res[2]["error"]["code"] == "invalid_request", res[2])
        check(res[3]["error"]["code"] == "invalid_json" and "stdin:5" in res[3]["error"]["message"], res[3])
        check(res[4]["id"] == 7 and "passages" in res[4], res[4])
        check(res[5]["id"] == "c" and res[5]["error"]["code"] == "invalid_request", res[5])


def test_stream_reconnects_and_resends():
    """An oversized line makes the daemon answer too_large and close (framing
    lost): the client reconnects, resends what was unanswered, and the output
    still has every id once, in order."""
    arts = make_articles(120, seed=5)
    arts[40] = {"id": "huge-1", "text": "乡村振兴，产业兴旺。" * 3000}
    arts[90] = {"id": "huge-2", "text": "生态宜居，乡风文明。" * 3000}
    with Daemon("--max-line-bytes", "16K") as d:
        stdin = "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in arts)
        rc, out, err = ctl("stream", "--socket", d.sock, "--inflight", "16", stdin=stdin)
        _stream_ok(rc, err, 120, errors=2)
        res = [json.loads(l) for l in out.splitlines()]
        check([r.get("id") for r in res] == [a["id"] for a in arts], "every id once, in order")
        for i in (40, 90):
            check(res[i]["error"]["code"] == "too_large", res[i])
        # Whether requests were still unanswered when the daemon closed depends on
        # timing (the oversized line may have been the last one in flight): a
        # reconnect is then silent. Each notice is matched by the summary's count.
        notices = err.count("reconnecting to resend")
        check(notices == 0 or "reconnected %d time" % notices in err, err)


class _FlakyServer:
    """A stand-in daemon that answers the first `answer_first` requests of its
    first connection, then closes it with the rest unanswered (a crash); later
    connections are answered in full unless `die_again`. Records every id it saw."""

    def __init__(self, answer_first, die_again=False):
        self.dir = tempfile.mkdtemp(prefix="themed-it-flaky-")
        self.path = os.path.join(self.dir, "flaky.sock")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(8)
        self.answer_first, self.die_again = answer_first, die_again
        self.seen, self.conns = [], 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns += 1
            limit = self.answer_first if self.conns == 1 or self.die_again else None
            f = c.makefile("rb")
            n = 0
            for line in f:
                req = json.loads(line)
                self.seen.append(req.get("id"))
                if limit is not None and n == limit:
                    break  # a crash: whatever was sent after this is never answered
                c.sendall((json.dumps({"id": req.get("id"), "model": "fake@1", "passages": [],
                                       "summary": {"passages": 0}}) + "\n").encode())
                n += 1
            f.close()
            c.close()

    def close(self):
        self.srv.close()


def test_stream_reconnect_resends_unanswered_at_least_once():
    ids = ["r%03d" % i for i in range(200)]
    stdin = "".join(json.dumps({"id": i, "text": "x"}) + "\n" for i in ids)
    fake = _FlakyServer(answer_first=50)
    try:
        rc, out, err = ctl("stream", "--socket", fake.path, "--inflight", "16", stdin=stdin)
        _stream_ok(rc, err, 200)
        check([json.loads(l)["id"] for l in out.splitlines()] == ids, "every id once, in order")
        check(err.count("reconnecting to resend") == 1 and "reconnected 1 time" in err, err)
        check(fake.conns == 2, fake.conns)
        # at-least-once: what the first connection swallowed went again
        twice = [i for i in ids if fake.seen.count(i) > 1]
        check(twice and twice[0] == "r050" and len(fake.seen) == 200 + len(twice), (twice, len(fake.seen)))
    finally:
        fake.close()
    # once: a second loss with nothing answered in between is fatal, with one line
    fake = _FlakyServer(answer_first=0, die_again=True)
    try:
        rc, out, err = ctl("stream", "--socket", fake.path, "--inflight", "4", stdin=stdin)
        check(rc == 1 and out == "", (rc, out))
        check(err.count("reconnecting to resend") == 1 and "lost: closed by the daemon; 4 requests unanswered" in err,
              err)
    finally:
        fake.close()


def test_classify_directory_says_why():
    """A directory given as an article (or as stdin) fails with the system's
    reason, not a bare "read error"."""
    tmp = tempfile.mkdtemp(prefix="themed-it-dir-")
    try:
        offline = ["classify", "--model", model_dir(), "--plugins", plugin_dir()]
        rc, out, err = ctl(*(offline + [tmp]))
        check(rc == 1 and out == "" and one_error_line(err) == "themectl: %s: Is a directory" % tmp, (rc, err))
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            r = subprocess.run([THEMECTL] + offline, stdin=fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir()), timeout=wait(60))
        finally:
            os.close(fd)
        err = r.stderr.decode()
        check(r.returncode == 1 and one_error_line(err) == "themectl: stdin: Is a directory", (r.returncode, err))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_help_lists_every_command_and_timeout_defaults():
    """`themectl --help` names every command themectl runs (each has its own
    --help), and the one-shot client commands say their --timeout default."""
    rc, main_help, _ = ctl("--help")
    check(rc == 0, main_help)
    words = set(re.findall(r"[a-z]+", main_help))
    for cmd in ("train", "classify", "eval", "vectorize", "health", "stats", "model", "reload",
                "stream", "publish", "collect"):
        check(cmd in words, "themectl --help does not list %s:\n%s" % (cmd, main_help))
        rc, out, err = ctl(cmd, "--help")
        check(rc == 0 and out, (cmd, rc, err))
    check(re.search(r"^  vectorize  \S.*libsvm", main_help, re.M), main_help)
    for cmd, secs in (("health", 10), ("stats", 10), ("model", 10), ("reload", 120)):
        out = ctl(cmd, "--help")[1]
        check(re.search(r"--timeout S .*\(default %d,\s+0 = never\)" % secs, out, re.S), (cmd, out))
    out = ctl("classify", "--socket", "/x.sock", "--help")[1]
    check(re.search(r"--timeout S .*\(default 120,", out, re.S), out)


def test_top_k_takes_one_range_everywhere():
    """top_k: the protocol, offline classify, classify --socket and stream all take [0, 1000000]
    (they once capped it at 1000000, 64 and 1000), and a value over the theme count is every theme."""
    doc = '{"id":"a","text":"发展集体经济，壮大村级产业。"}\n'
    with Daemon() as d:
        tmp = tempfile.mkdtemp(prefix="themed-it-topk-")
        try:
            path = os.path.join(tmp, "a.jsonl")
            with open(path, "w", encoding="utf-8") as f:
                f.write(doc)
            outs = []
            for k in ("100", "1000000"):
                rc, off, err = ctl("classify", "--model", model_dir(), "--jsonl", "--top-k", k, "--threshold", "0", path)
                check(rc == 0, err)
                rc, sock, err = ctl("classify", "--socket", d.sock, "--jsonl", "--top-k", k, "--threshold", "0", path)
                check(rc == 0, err)
                r = d.call({"id": "a", "text": "发展集体经济，壮大村级产业。", "top_k": int(k), "threshold": 0})
                check("error" not in r, r)
                check(json.loads(off) == json.loads(sock) == r, (off, sock, r))
                outs.append(r)
            ntheme = len(outs[0]["passages"][0]["themes"])
            check(ntheme >= 2, outs[0])  # threshold 0: every theme, none cut by top_k
            for args in (("classify", "--model", model_dir(), "--jsonl", path),
                         ("classify", "--socket", d.sock, "--jsonl", path),
                         ("stream", "--socket", d.sock, "--in", path)):
                rc, _, err = ctl(*args[:1], "--top-k", "1000001", *args[1:])
                check(rc == 2 and "[0,1000000]" in err, (args, rc, err))
            r = d.call({"id": "a", "text": "x", "top_k": 1000001})
            check(r["error"]["code"] == "invalid_request" and "[0,1000000]" in r["error"]["message"], r)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
