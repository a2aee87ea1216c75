"""Both protocols on one listener, the read-only operations, startup options."""
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile

from harness import (ROOT, THEMED, Daemon, check, error_code, model_dir, parse_http_responses,
                     plugin_dir, raw_http, wait)

DOC = "抓队伍建设 选优配强乡村骨干力量\n发展集体经济，壮大村级产业，带动村民增收。\n开展人居环境整治，建设美丽乡村。"


def _label(d):
    return d.call({"op": "health"})["model"]


def test_health_both_protocols_and_curl_shape():
    with Daemon(tcp=True) as d:
        st, hdr, body = d.request("GET", "/v1/health")
        check(st == 200 and body["status"] == "ok", body)
        label = body["model"]
        check("@" in label, label)
        check(hdr["content-type"] == "application/json", hdr)
        r = d.call({"op": "health", "id": 1})
        check(r == {"id": 1, "status": "ok", "model": label}, r)
        # the same over TCP, both protocols
        check(d.request("GET", "/v1/health", tcp=True)[2]["model"] == label)
        check(d.call({"op": "health", "id": "x"}, tcp=True)["id"] == "x")
        st, _, body = d.request("GET", "/v1/ready")
        check(st == 200 and body["status"] == "ready", body)
        # unix socket mode 0660
        check(stat.S_IMODE(os.stat(d.sock).st_mode) == 0o660, oct(os.stat(d.sock).st_mode))
        check("listening on unix:" + d.sock in d.log())
        check("listening on tcp:127.0.0.1:%d" % d.port in d.log())


def test_classify_jsonl_and_http_agree():
    with Daemon() as d:
        r1 = d.call({"op": "classify", "id": "a1", "text": DOC})
        st, _, r2 = d.request("POST", "/v1/classify", {"id": "a1", "text": DOC})
        check(st == 200, r2)
        check(r1 == r2, (r1, r2))
        check(r1["id"] == "a1" and r1["summary"]["passages"] == 3, r1)
        check(len(r1["passages"]) == 3 and r1["passages"][0]["heading"] is True, r1)
        # "op" may be omitted; ids of any scalar type are echoed; none -> no key
        r = d.call({"id": 42, "passages": ["发展集体经济", "开展人居环境整治"]})
        check(r["id"] == 42 and r["summary"]["passages"] == 2, r)
        r = d.call({"text": "发展集体经济"})
        check("id" not in r and "passages" in r, r)
        r = d.call({"id": None, "text": "发展集体经济"})
        check("id" in r and r["id"] is None, r)
        # options
        r = d.call({"text": DOC, "threshold": 0.0, "include_text": True})
        check(all(p["themes"] for p in r["passages"]), r)
        check(all("text" in p for p in r["passages"]), r)
        r = d.call({"text": DOC, "threshold": 0.0, "top_k": 1})
        check(all(len(p["themes"]) == 1 for p in r["passages"]), r)
        r = d.call({"text": DOC, "threshold": 1.0})
        check(all(p["themes"] == [] for p in r["passages"]), r)


def test_http_batch():
    with Daemon() as d:
        docs = [{"id": i, "text": DOC} for i in range(5)]
        docs.append({"id": "p", "passages": ["发展集体经济"], "threshold": 0.0})
        st, _, body = d.request("POST", "/v1/classify", {"documents": docs, "include_text": True})
        check(st == 200, body)
        res = body["results"]
        check([r["id"] for r in res] == [0, 1, 2, 3, 4, "p"], res)
        check(all("text" in p for r in res for p in r["passages"]), "batch options apply to each")
        single = d.call({"id": 0, "text": DOC, "include_text": True})
        check(res[0] == single, (res[0], single))
        st, _, body = d.request("POST", "/v1/classify", {"documents": []})
        check(st == 200 and body == {"results": []}, body)


def test_model_stats_metrics():
    with Daemon() as d:
        d.call({"text": DOC})
        d.request("POST", "/v1/classify", {"text": DOC})
        d.call({"op": "nope"})
        st, _, m = d.request("GET", "/v1/model")
        check(st == 200, m)
        m = m["model"]
        for k in ("name", "version", "label", "themes", "tokenizer", "loaded_at", "load_ms", "path"):
            check(k in m, "model lacks %s: %r" % (k, m))
        check(m["label"] == m["name"] + "@" + m["version"], m)
        check(os.path.samefile(m["path"], model_dir()), m)
        r = d.call({"op": "model", "id": 3})
        check(r["id"] == 3 and r["model"]["label"] == m["label"], r)
        s = d.call({"op": "stats"})["stats"]
        check(s["passages"] == 6 and s["errors"].get("unknown_op") == 1, s)
        check(s["connections"] >= 1 and s["requests"] >= 4, s)
        # whole seconds: a real went out as 5.05616 (and 1.23457e+06 after 11.6 days)
        check(type(s["uptime_s"]) is int and s["uptime_s"] >= 0, s)
        st, hdr, text = d.request("GET", "/metrics")
        check(st == 200 and hdr["content-type"].startswith("text/plain; version=0.0.4"), hdr)
        for needle in ('themed_requests_total{proto="jsonl",op="classify"} 1',
                       'themed_requests_total{proto="http",op="classify"} 1',
                       "themed_passages_total 6", 'themed_errors_total{code="unknown_op"} 1',
                       'themed_request_duration_seconds_bucket{le="0.0005"}',
                       'themed_request_duration_seconds_bucket{le="5"}',
                       'themed_request_duration_seconds_bucket{le="+Inf"}',
                       'themed_model_info{name="%s",version="%s"} 1' % (m["name"], m["version"]),
                       "themed_model_load_seconds ", "themed_model_loaded_timestamp_seconds ",
                       'themed_theme_passages_total{theme="other"}', "themed_connections ",
                       "themed_connections_total ", 'themed_reloads_total{result="ok"} 0'):
            check(needle in text, "metrics lack %r:\n%s" % (needle, text))
        total = sum(int(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                    if l.startswith("themed_theme_passages_total{"))
        check(total >= 6, "every passage counts under a theme or other")


def test_keepalive_and_pipelined_http():
    with Daemon() as d:
        with d.http() as h:
            for _ in range(3):
                st, hdr, _ = h.request("GET", "/v1/health")
                check(st == 200 and hdr.get("connection") == "keep-alive", hdr)
        body = json.dumps({"id": "c", "text": DOC}).encode()
        req = (b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
               b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") % (len(body), body)
        s = d.connect()
        resp = parse_http_responses(raw_http(s, req))
        s.close()
        check([r[0] for r in resp] == [200, 200, 404, 200], resp)
        check(json.loads(resp[1][2])["id"] == "c")
        check(resp[3][1].get("connection") == "close", resp[3][1])
        # chunked body
        chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        s = d.connect()
        resp = parse_http_responses(raw_http(s, b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n"
                                             b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks))
        s.close()
        check(resp and resp[0][0] == 200 and json.loads(resp[0][2])["id"] == "c", resp)


def test_unrecognized_first_byte():
    with Daemon() as d:
        s = d.connect()
        out = raw_http(s, b"\x00\x01garbage\n")
        s.close()
        r = json.loads(out.split(b"\n")[0])
        check(error_code(r) == "invalid_request", r)
        check(d.call({"op": "health"})["status"] == "ok")


def test_cli_help_version_check_config():
    r = subprocess.run([THEMED, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check(r.returncode == 0 and b"--max-request-bytes" in r.stdout and b"--listen" in r.stdout, r.stdout)
    r = subprocess.run([THEMED, "--version"], stdout=subprocess.PIPE)
    check(r.returncode == 0 and r.stdout.startswith(b"themed "), r.stdout)
    env = dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir())
    r = subprocess.run([THEMED, "--model", model_dir(), "--listen", "unix:x.sock", "--workers", "1",
                        "--check-config"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    check(r.returncode == 0 and b"config ok" in r.stdout and b", 1 worker, 1 listener\n" in r.stdout,
          r.stdout)
    r = subprocess.run([THEMED, "--model", model_dir(), "--listen", "unix:x.sock", "--listen",
                        "tcp:127.0.0.1:0", "--workers", "2", "--check-config"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env)
    check(r.returncode == 0 and b", 2 workers, 2 listeners\n" in r.stdout, r.stdout)
    # no --listen: fine under socket activation, and the check says that is what it assumes
    r = subprocess.run([THEMED, "--model", model_dir(), "--check-config"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env)
    check(r.returncode == 0 and b"0 listeners (the sockets must come from systemd" in r.stdout, r.stdout)
    r = subprocess.run([THEMED, "--model", "/nonexistent-bundle", "--listen", "unix:x.sock",
                        "--check-config"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    check(r.returncode == 1 and b"config ok" not in r.stdout, r.stdout)
    r = subprocess.run([THEMED, "--model", model_dir()], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env)
    check(r.returncode != 0 and b"--listen" in r.stdout, r.stdout)
    r = subprocess.run([THEMED, "--model", model_dir(), "--listen", "udp:1"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env)
    check(r.returncode != 0 and b"udp:1" in r.stdout, r.stdout)
    r = subprocess.run([THEMED, "--bogus"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check(r.returncode == 2, r.stdout)


def test_check_config_catches_what_start_would_fail_on():
    """--check-config fails where the daemon would fail at start: a unix
    socket in a directory that does not exist (or is not a directory), a TCP
    host that does not resolve. The message names the directory or host."""
    env = dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir())

    def run(*listen):
        args = [THEMED, "--model", model_dir(), "--check-config"]
        for l in listen:
            args += ["--listen", l]
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=wait(30))
        return r.returncode, r.stdout.decode("utf-8", "replace")

    rc, out = run("unix:/nonexistdir/x.sock")
    check(rc == 1 and "config ok" not in out and
          "listen unix:/nonexistdir/x.sock: directory /nonexistdir does not exist" in out, out)
    rc, out = run("unix:x.sock", "unix:%s/x.sock" % os.path.join(ROOT, "Makefile"))
    check(rc == 1 and "config ok" not in out and "Makefile is not a directory" in out, out)
    rc, out = run("tcp:no-such-host.invalid:7300")
    check(rc == 1 and "config ok" not in out and "listen tcp:no-such-host.invalid:7300: " in out, out)
    rc, out = run("tcp:localhost:7300", "unix:x.sock")
    check(rc == 0 and "config ok" in out, out)


def test_log_lines_count_in_the_singular():
    """One worker: the startup lines say "1 worker", not "1 workers"."""
    with Daemon("--workers", "1") as d:
        log = d.log()
        check("), 1 worker\n" in log and "1 worker loop, " in log and
              " with 1 worker on its own event loop" in log, log)
    with Daemon("--workers", "1", "--worker-loops=false") as d:
        check(" with 1 worker on the threadpool" in d.log(), d.log())


def test_config_file_and_flag_override():
    with Daemon(start=False) as d:
        cfg = os.path.join(d.dir, "themed.json")
        with open(cfg, "w") as f:
            json.dump({"model": model_dir(), "listen": ["unix:" + d.sock], "max_passages": 2,
                       "max_request_bytes": "64K", "idle_timeout": "30s", "log_level": "debug"}, f)
        # only --config: the file's limit applies
        d.cmd = d.cmd[:d.cmd.index(d.model) - 1] + ["--config", cfg]
        d.start()
        r = d.call({"passages": ["a", "b", "c"]})
        check(error_code(r) == "too_many_passages", r)
        check(" debug " in d.log(), "log_level from the file")
        d.stop()
        # a flag overrides the file
        d.cmd += ["--max-passages", "3", "--log-level", "info"]
        d.start()
        r = d.call({"passages": ["a", "b", "c"]})
        check("passages" in r and r["summary"]["passages"] == 3, r)
        d.stop()
        with open(cfg, "w") as f:
            json.dump({"model": model_dir(), "listen": "unix:" + d.sock, "no_such_key": 1}, f)
        r = subprocess.run([THEMED, "--config", cfg, "--check-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=d.env)
        check(r.returncode == 1 and b"no_such_key" in r.stdout, r.stdout)


def test_config_file_errors_say_what_is_wrong():
    """A config file that cannot be read says so in words (not jansson's
    "path:-1:-1: unable to open"), a directory is called one, and a value of
    the wrong type names the type expected and the type found."""
    tmp = tempfile.mkdtemp(prefix="themed-cfg-")
    try:
        def run(cfg):
            r = subprocess.run([THEMED, "--config", cfg, "--check-config"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir()))
            return r.returncode, r.stdout.decode("utf-8", "replace").strip()

        missing = os.path.join(tmp, "nonexist.json")
        rc, out = run(missing)
        check(rc == 1 and out == "themed: cannot read config file %s: No such file or directory" % missing,
              (rc, out))
        rc, out = run(tmp)
        check(rc == 1 and out == "themed: cannot read config file %s: it is a directory" % tmp, (rc, out))
        cfg = os.path.join(tmp, "themed.json")
        for body, want in (({"model": 5}, "model: expected a string, got an integer"),
                           ({"model": model_dir(), "listen": ["unix:x.sock", True]},
                            "listen[1]: expected a string, got a boolean"),
                           ({"model": model_dir(), "workers": [2]}, "workers: expected an integer, got an array"),
                           ({"model": model_dir(), "worker_loops": None},
                            "worker_loops: expected true or false, got null"),
                           ({"model": model_dir(), "log_level": 1.5},
                            "log_level: expected a string (error, warn, info or debug), got a number")):
            with open(cfg, "w") as f:
                json.dump(body, f)
            rc, out = run(cfg)
            check(rc == 1 and out == "themed: %s: %s" % (cfg, want), (body, rc, out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_journal_log_format():
    with Daemon("--log-journal") as d:
        lines = [l for l in d.log().splitlines() if l]
        check(lines and all(l.startswith("<") for l in lines), lines)
        check(any(l.startswith("<6>listening on unix:") for l in lines), lines)
    with Daemon() as d:
        check(any(" info listening on unix:" in l and l[4] == "-" and "Z info" in l
                  for l in d.log().splitlines()), d.log())


def test_stale_socket_removed_live_socket_kept():
    with Daemon(start=False) as d:
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(d.sock)
        stale.close()  # the file stays, nobody listens
        d.start()
        check("removing stale socket" in d.log(), d.log())
        check(d.call({"op": "health"})["status"] == "ok")
        # a second daemon on the same path refuses to steal it
        r = subprocess.run([THEMED, "--model", d.model, "--listen", "unix:" + d.sock],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=d.env,
                           timeout=wait(20))
        check(r.returncode == 1 and b"another process is listening" in r.stdout, r.stdout)
        check(d.call({"op": "health"})["status"] == "ok")
        check(d.stop() == 0)
        check(not os.path.exists(d.sock), "socket removed at exit")


def test_ipv6_listen():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        print("  skipped: no IPv6 loopback")
        return
    with Daemon("--listen", "tcp:[::1]:0") as d:
        import re
        m = re.search(r"listening on tcp:\[::1\]:(\d+)", d.log())
        check(m, d.log())
        c = socket.create_connection(("::1", int(m.group(1))), timeout=wait(10))
        c.sendall(b'{"op":"health"}\n')
        check(b'"status":"ok"' in c.recv(4096))
        c.close()


def test_curl_unix_socket():
    import shutil
    curl = shutil.which("curl")
    if not curl:
        print("  skipped: no curl")
        return
    with Daemon() as d:
        r = subprocess.run([curl, "-sS", "--unix-socket", d.sock, "http://x/v1/health"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=wait(20))
        check(r.returncode == 0 and json.loads(r.stdout)["status"] == "ok", r.stdout)
        # a body over 1 MiB makes curl send Expect: 100-continue
        big = json.dumps({"id": "big", "passages": ["发展集体经济"] * 10, "pad": "x" * (1 << 20)})
        r = subprocess.run([curl, "-sS", "--unix-socket", d.sock, "http://x/v1/classify", "--data-binary", "@-"],
                           input=big.encode(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=wait(20))
        check(r.returncode == 0 and json.loads(r.stdout)["id"] == "big", r.stdout[:300])


def _listen_fails(path, pre=(), env=None):
    """Starts themed on unix:path, which must fail: (exit code, output)."""
    env = dict(env or os.environ, THEMED_PLUGIN_DIR=plugin_dir())
    r = subprocess.run(list(pre) + [THEMED, "--model", model_dir(), "--listen", "unix:" + path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=wait(20))
    return r.returncode, r.stdout.decode("utf-8", "replace")


def test_unix_listen_in_missing_directory_says_so():
    """uv_pipe_bind reports ENOENT as EACCES: a socket in a directory that does
    not exist must not read "permission denied" (not even as root)."""
    import tempfile
    tmp = tempfile.mkdtemp(prefix="themed-it-listen-")
    try:
        missing = os.path.join(tmp, "nodir")
        rc, out = _listen_fails(os.path.join(missing, "x.sock"))
        check(rc != 0 and ("directory %s does not exist" % missing) in out and "permission denied" not in out,
              (rc, out))
        # the parent is a file
        f = os.path.join(tmp, "file")
        open(f, "w").close()
        rc, out = _listen_fails(os.path.join(f, "x.sock"))
        check(rc != 0 and ("%s is not a directory" % f) in out and "permission denied" not in out, (rc, out))
        # a directory we may not write to is still "permission denied"
        ro = os.path.join(tmp, "ro")
        os.mkdir(ro, 0o555)
        pre = ()
        if os.geteuid() == 0:  # root writes anywhere: run as nobody
            if not shutil.which("setpriv"):
                print("  skipped the permission case: root, and no setpriv")
                return
            os.chmod(tmp, 0o755)
            pre = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
        rc, out = _listen_fails(os.path.join(ro, "x.sock"), pre)
        check(rc != 0 and "listen unix:%s: permission denied" % os.path.join(ro, "x.sock") in out, (rc, out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_help_shows_boolean_flags_with_joined_value():
    """A boolean flag's value must be joined by '=' (getopt optional_argument),
    so --help shows --flag[=BOOL], and a spaced value gets a hint."""
    r = subprocess.run([THEMED, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = r.stdout.decode()
    for flag in ("--worker-loops", "--log-journal", "--allow-any-model-path", "--allow-remote"):
        check((flag + "[=BOOL]") in out, (flag, out))
        check(not re.search(re.escape(flag) + r"\s{2}", out), (flag, "shown without [=BOOL]", out))
    # every flag the help shows with [=BOOL] is one that takes it joined
    env = dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir())
    for flag in re.findall(r"(--[a-z-]+)\[=BOOL\]", out):
        r = subprocess.run([THEMED, "--model", model_dir(), "--listen", "unix:x.sock",
                            flag + "=false", "--check-config"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=env)
        check(r.returncode == 0 and b"config ok" in r.stdout, (flag, r.stdout))
    r = subprocess.run([THEMED, "--model", model_dir(), "--worker-loops", "false", "--listen",
                        "unix:x.sock", "--check-config"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env)
    check(r.returncode != 0 and b"--worker-loops=false" in r.stdout, r.stdout)
    # the documentation shows them the same way
    with open(os.path.join(ROOT, "docs", "operations.md"), encoding="utf-8") as f:
        doc = f.read()
    for flag in re.findall(r"(--[a-z-]+)\[=BOOL\]", out):
        check("`%s[=BOOL]`" % flag in doc, (flag, "docs/operations.md"))
